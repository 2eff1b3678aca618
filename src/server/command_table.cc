// The command table: one row per command, declared once, in name order (checked when this file
// compiles). A row drives dispatch (arity, flags, handler), COMMAND INFO/DOCS/GETKEYS and
// docs/commands.md (`floe commands`); key positions follow Redis's first/last/step convention.
// Subcommands (CLIENT, CLUSTER, COMMAND, CONFIG, OBJECT) have tables of their own, named
// "parent|sub".
//
// CommandSpec::index numbers every row of every table once, here at compile time (the
// subcommand tables first, then the commands), so commandstats can count into flat arrays
// without the table being written at start-up.

#include <array>

#include "server/internal/command.h"

namespace floe::server::internal {

namespace {

// Rows `first`, `first` + 1, ... of the flat numbering.
template <size_t N>
consteval std::array<CommandSpec, N> Numbered(int first, std::array<CommandSpec, N> rows) {
  for (size_t i = 0; i < N; i++) rows[i].index = first + static_cast<int>(i);
  return rows;
}

// The number after the last row of `rows`.
template <size_t N>
consteval int After(const std::array<CommandSpec, N>& rows) {
  return rows.back().index + 1;
}

// Names strictly increasing (sorted, no duplicates), lowercase, and each subcommand named
// "parent|sub" after the command that holds it.
template <size_t N>
consteval bool WellFormed(const std::array<CommandSpec, N>& rows) {
  for (size_t i = 0; i < N; i++) {
    for (char c : rows[i].name) {
      if (c >= 'A' && c <= 'Z') return false;
    }
    if (i > 0 && !(rows[i - 1].name < rows[i].name)) return false;
    for (const CommandSpec& sub : rows[i].subcommands) {
      if (!sub.name.starts_with(rows[i].name) || sub.name.size() <= rows[i].name.size() ||
          sub.name[rows[i].name.size()] != '|') {
        return false;
      }
    }
  }
  return true;
}

// One row per command, laid out for reading (clang-format would put each field on a line).
// clang-format off
constexpr auto kClientSubs = Numbered(0, std::to_array<CommandSpec>({
    {.name = "client|getname", .arity = 2, .flags = kLoading | kStale,
     .group = "connection", .since = "2.6.9", .complexity = "O(1)",
     .summary = "Returns the name of the connection.", .handler = CmdClientGetName},
    {.name = "client|help", .arity = 2, .flags = kLoading | kStale, .group = "connection",
     .since = "5.0.0", .complexity = "O(1)",
     .summary = "Returns helpful text about the different subcommands.", .handler = CmdClientHelp},
    {.name = "client|id", .arity = 2, .flags = kLoading | kStale, .group = "connection",
     .since = "5.0.0", .complexity = "O(1)",
     .summary = "Returns the unique client ID of the connection.", .handler = CmdClientId},
    {.name = "client|info", .arity = 2, .flags = kLoading | kStale,
     .group = "connection", .since = "6.2.0", .complexity = "O(1)",
     .summary = "Returns information about the connection.", .handler = CmdClientInfo},
    {.name = "client|kill", .arity = -3, .flags = kLoading | kStale,
     .group = "connection", .since = "2.4.0",
     .complexity = "O(N) where N is the number of client connections",
     .summary = "Terminates open connections.",
     .syntax = "ip:port | [ID client-id] [ADDR ip:port] [LADDR ip:port] [SKIPME yes|no]",
     .handler = CmdClientKill},
    {.name = "client|list", .arity = -2, .flags = kLoading | kStale,
     .group = "connection", .since = "2.4.0",
     .complexity = "O(N) where N is the number of client connections",
     .summary = "Lists open connections.", .syntax = "[TYPE normal] [ID client-id [client-id ...]]",
     .handler = CmdClientList},
    {.name = "client|setname", .arity = 3, .flags = kLoading | kStale,
     .group = "connection", .since = "2.6.9", .complexity = "O(1)",
     .summary = "Sets the connection name.", .syntax = "connection-name",
     .handler = CmdClientSetName},
}));
static_assert(WellFormed(kClientSubs));

// Flags as Redis 7.0 has them. COUNTKEYSINSLOT and GETKEYSINSLOT scan the store: it keeps no
// index by slot.
constexpr auto kClusterSubs = Numbered(After(kClientSubs), std::to_array<CommandSpec>({
    {.name = "cluster|countkeysinslot", .arity = 3, .flags = kStale, .group = "cluster",
     .since = "3.0.0", .complexity = "O(N) where N is the number of keys held by the node",
     .summary = "Returns the number of keys in a hash slot (0 for a slot homed on another node).",
     .syntax = "slot", .handler = CmdClusterCountKeysInSlot},
    {.name = "cluster|forget", .arity = 3, .flags = kStale | kNoMulti, .group = "cluster",
     .since = "3.0.0", .complexity = "O(1)",
     .summary = "Removes a member that owns and backs up no slot from the cluster (its id, as "
                "INFO's member_<id>, or its node name).",
     .syntax = "node-id", .handler = CmdClusterForget},
    {.name = "cluster|getkeysinslot", .arity = 4, .flags = kStale, .group = "cluster",
     .since = "3.0.0", .complexity = "O(N) where N is the number of keys held by the node",
     .summary = "Returns up to count key names in a hash slot held by this node.",
     .syntax = "slot count", .handler = CmdClusterGetKeysInSlot},
    {.name = "cluster|help", .arity = 2, .flags = kLoading | kStale, .group = "cluster",
     .since = "5.0.0", .complexity = "O(1)",
     .summary = "Returns helpful text about the different subcommands.",
     .handler = CmdClusterHelp},
    {.name = "cluster|info", .arity = 2, .flags = kStale, .group = "cluster", .since = "3.0.0",
     .complexity = "O(1)", .summary = "Returns information about the state of a node.",
     .handler = CmdClusterInfo},
    {.name = "cluster|keyslot", .arity = 3, .flags = kStale, .group = "cluster",
     .since = "3.0.0", .complexity = "O(N) where N is the number of bytes in the key",
     .summary = "Returns the hash slot for a key.", .syntax = "key",
     .handler = CmdClusterKeySlot},
    {.name = "cluster|leave", .arity = 2, .flags = kStale | kNoMulti, .group = "cluster",
     .since = "3.0.0", .complexity = "O(1)",
     .summary = "Removes this member, which must own and back up no slot, from the cluster; the "
                "node then exits.",
     .handler = CmdClusterLeave},
    {.name = "cluster|myid", .arity = 2, .flags = kStale, .group = "cluster", .since = "3.0.0",
     .complexity = "O(1)", .summary = "Returns the ID of a node.", .handler = CmdClusterMyId},
    {.name = "cluster|nodes", .arity = 2, .flags = kStale, .group = "cluster",
     .since = "3.0.0", .complexity = "O(N) where N is the total number of Cluster nodes",
     .summary = "Returns the cluster configuration for a node.", .handler = CmdClusterNodes},
    {.name = "cluster|shards", .arity = 2, .flags = kStale, .group = "cluster",
     .since = "7.0.0", .complexity = "O(N) where N is the total number of cluster nodes",
     .summary = "Returns the mapping of cluster slots to shards.", .handler = CmdClusterShards},
    {.name = "cluster|slots", .arity = 2, .flags = kStale, .group = "cluster",
     .since = "3.0.0", .complexity = "O(N) where N is the total number of Cluster nodes",
     .summary = "Returns the mapping of cluster slots to nodes.", .handler = CmdClusterSlots},
}));
static_assert(WellFormed(kClusterSubs));

constexpr auto kCommandSubs = Numbered(After(kClusterSubs), std::to_array<CommandSpec>({
    {.name = "command|count", .arity = 2, .flags = kLoading | kStale, .group = "server",
     .since = "2.8.13", .complexity = "O(1)", .summary = "Returns a count of commands.",
     .handler = CmdCommandCount},
    {.name = "command|docs", .arity = -2, .flags = kLoading | kStale, .group = "server",
     .since = "7.0.0", .complexity = "O(N) where N is the number of commands to look up",
     .summary = "Returns documentary information about one, multiple or all commands.",
     .syntax = "[command-name [command-name ...]]", .handler = CmdCommandDocs},
    {.name = "command|getkeys", .arity = -4, .flags = kLoading | kStale, .group = "server",
     .since = "2.8.13", .complexity = "O(N) where N is the number of arguments to the command",
     .summary = "Extracts the key names from an arbitrary command.",
     .syntax = "command [arg [arg ...]]", .handler = CmdCommandGetKeys},
    {.name = "command|help", .arity = 2, .flags = kLoading | kStale, .group = "server",
     .since = "5.0.0", .complexity = "O(1)",
     .summary = "Returns helpful text about the different subcommands.", .handler = CmdCommandHelp},
    {.name = "command|info", .arity = -2, .flags = kLoading | kStale, .group = "server",
     .since = "2.8.13", .complexity = "O(N) where N is the number of commands to look up",
     .summary = "Returns information about one, multiple or all commands.",
     .syntax = "[command-name [command-name ...]]", .handler = CmdCommandInfo},
    {.name = "command|list", .arity = -2, .flags = kLoading | kStale, .group = "server",
     .since = "7.0.0", .complexity = "O(N) where N is the total number of commands",
     .summary = "Returns a list of command names.",
     .syntax = "[FILTERBY MODULE name | ACLCAT category | PATTERN pattern]",
     .handler = CmdCommandList},
}));
static_assert(WellFormed(kCommandSubs));

constexpr auto kConfigSubs = Numbered(After(kCommandSubs), std::to_array<CommandSpec>({
    {.name = "config|get", .arity = -3, .flags = kLoading | kStale, .group = "server",
     .since = "2.0.0",
     .complexity = "O(N) when N is the number of configuration parameters provided",
     .summary = "Returns the effective values of configuration parameters.",
     .syntax = "parameter [parameter ...]", .handler = CmdConfigGet},
    {.name = "config|help", .arity = 2, .flags = kLoading | kStale, .group = "server",
     .since = "5.0.0", .complexity = "O(1)",
     .summary = "Returns helpful text about the different subcommands.", .handler = CmdConfigHelp},
    {.name = "config|resetstat", .arity = 2, .flags = kExclusive | kLoading | kStale,
     .group = "server", .since = "2.0.0", .complexity = "O(1)",
     .summary = "Resets the server's statistics.", .handler = CmdConfigResetStat},
    {.name = "config|set", .arity = -4, .flags = kLoading | kStale, .group = "server",
     .since = "2.0.0",
     .complexity = "O(N) when N is the number of configuration parameters provided",
     .summary = "Sets configuration parameters in-flight.",
     .syntax = "parameter value [parameter value ...]", .handler = CmdConfigSet},
}));
static_assert(WellFormed(kConfigSubs));

constexpr auto kObjectSubs = Numbered(After(kConfigSubs), std::to_array<CommandSpec>({
    {.name = "object|encoding", .arity = 3, .flags = kReadOnly, .first_key = 2, .last_key = 2,
     .step = 1, .group = "generic", .since = "2.2.3", .complexity = "O(1)",
     .summary = "Returns the internal encoding of an object.", .syntax = "key",
     .handler = CmdObjectEncoding},
    {.name = "object|help", .arity = 2, .flags = kLoading | kStale, .group = "generic",
     .since = "6.2.0", .complexity = "O(1)",
     .summary = "Returns helpful text about the different subcommands.", .handler = CmdObjectHelp},
}));
static_assert(WellFormed(kObjectSubs));

constexpr auto kCommands = Numbered(After(kObjectSubs), std::to_array<CommandSpec>({
    {.name = "append", .arity = 3, .flags = kWrite | kDenyOom | kFast, .first_key = 1,
     .last_key = 1, .step = 1, .group = "string", .since = "2.0.0", .complexity = "O(1)",
     .summary = "Appends a string to the value of a key. Creates the key if it doesn't exist.",
     .syntax = "key value", .handler = CmdAppend},
    {.name = "auth", .arity = -2, .flags = kFast | kNoAuth | kLoading | kStale,
     .group = "connection", .since = "1.0.0", .complexity = "O(N) where N is the password length",
     .summary = "Authenticates the connection.", .syntax = "[username] password",
     .handler = CmdAuth},
    {.name = "bf.add", .arity = 3, .flags = kWrite | kDenyOom | kFast, .first_key = 1,
     .last_key = 1, .step = 1, .group = "bf", .since = "1.0.0",
     .complexity = "O(k), where k is the number of hash functions",
     .summary = "Adds an item to a Bloom filter, creating the filter with defaults (0.01, 100) "
                "if absent; 1 if it was new.",
     .syntax = "key item", .handler = CmdBfAdd},
    {.name = "bf.card", .arity = 2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "bf", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Returns the number of items added to a Bloom filter (0 if the key does not "
                "exist).",
     .syntax = "key", .handler = CmdBfCard},
    {.name = "bf.exists", .arity = 3, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "bf", .since = "1.0.0",
     .complexity = "O(k), where k is the number of hash functions",
     .summary = "Returns 1 if the item may be in the filter, 0 if it certainly is not (0 for a "
                "missing key).",
     .syntax = "key item", .handler = CmdBfExists},
    {.name = "bf.info", .arity = -2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "bf", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Returns the capacity, size, number of sub-filters, items added and expansion "
                "rate of a Bloom filter.",
     .syntax = "key [CAPACITY | SIZE | FILTERS | ITEMS | EXPANSION]", .handler = CmdBfInfo},
    {.name = "bf.insert", .arity = -4, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "bf", .since = "1.0.0",
     .complexity = "O(k * n), where k is the number of hash functions and n the number of items",
     .summary = "Adds items to a Bloom filter, creating it with the given parameters unless "
                "NOCREATE.",
     
     .syntax = "key [CAPACITY capacity] [ERROR error] [EXPANSION expansion] [NOCREATE] "
               "[NONSCALING] ITEMS item [item ...]",
     .handler = CmdBfInsert},
    {.name = "bf.madd", .arity = -3, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "bf", .since = "1.0.0",
     .complexity = "O(k * n), where k is the number of hash functions and n the number of items",
     .summary = "Adds items to a Bloom filter, creating it with defaults if absent; one 1/0 per "
                "item.",
     .syntax = "key item [item ...]", .handler = CmdBfMAdd},
    {.name = "bf.mexists", .arity = -3, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "bf", .since = "1.0.0",
     .complexity = "O(k * n), where k is the number of hash functions and n the number of items",
     .summary = "Returns, for each item, whether it may be in the filter.",
     .syntax = "key item [item ...]", .handler = CmdBfMExists},
    {.name = "bf.reserve", .arity = -4, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "bf", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Creates an empty Bloom filter for a target error rate and capacity; scalable "
                "unless NONSCALING.",
     .syntax = "key error_rate capacity [EXPANSION expansion] [NONSCALING]",
     .handler = CmdBfReserve},
    {.name = "client", .arity = -2, .group = "connection", .since = "2.4.0",
     .complexity = "Depends on subcommand.",
     .summary = "A container for client connection commands.", .subcommands = kClientSubs},
    {.name = "cluster", .arity = -2, .group = "cluster", .since = "3.0.0",
     .complexity = "Depends on subcommand.",
     .summary = "A container for Redis Cluster commands.", .subcommands = kClusterSubs},
    {.name = "cms.incrby", .arity = -4, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "cms", .since = "2.0.0",
     .complexity = "O(n) where n is the number of items",
     .summary = "Increases the count of one or more items by increment; replies with their new "
                "estimates.",
     .syntax = "key item increment [item increment ...]", .handler = CmdCmsIncrBy},
    {.name = "cms.info", .arity = 2, .flags = kReadOnly, .first_key = 1, .last_key = 1, .step = 1,
     .group = "cms", .since = "2.0.0", .complexity = "O(1)",
     .summary = "Returns width, depth and total count of the sketch (and bits for a range sketch).",
     .syntax = "key", .handler = CmdCmsInfo},
    {.name = "cms.initbydim", .arity = 4, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "cms", .since = "2.0.0", .complexity = "O(1)",
     .summary = "Initializes a Count-Min Sketch to dimensions specified by user.",
     .syntax = "key width depth", .handler = CmdCmsInitByDim},
    {.name = "cms.initbyprob", .arity = 4, .flags = kWrite | kDenyOom, .first_key = 1,
     .last_key = 1, .step = 1, .group = "cms", .since = "2.0.0", .complexity = "O(1)",
     .summary = "Initializes a Count-Min Sketch to accommodate requested tolerances (width = "
                "ceil(2/error), depth = ceil(log2(1/probability))).",
     .syntax = "key error probability", .handler = CmdCmsInitByProb},
    {.name = "cms.initrange", .arity = 5, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "cms", .since = "floe", .complexity = "O(1)",
     .summary = "Floe: creates a Count-Min sketch over integers in [0, 2^bits) that answers "
                "CMS.RANGE and CMS.QUANTILE (bits + 1 dyadic levels of width x depth each); "
                "items are integers.",
     .syntax = "key width depth bits", .handler = CmdCmsInitRange},
    {.name = "cms.merge", .arity = -4, .flags = kWrite | kDenyOom | kExclusive, .first_key = 1,
     .last_key = 1, .step = 1, .group = "cms", .since = "2.0.0",
     .complexity = "O(n) where n is the number of sketches",
     .summary = "Merges several sketches into one sketch (the destination must exist and is "
                "overwritten).",
     .syntax = "destination numKeys source [source ...] [WEIGHTS weight [weight ...]]",
     .handler = CmdCmsMerge},
    {.name = "cms.quantile", .arity = -3, .flags = kReadOnly, .first_key = 1, .last_key = 1,
     .step = 1, .group = "cms", .since = "floe", .complexity = "O(bits^2) per quantile",
     .summary = "Floe: for a CMS.INITRANGE sketch, the smallest value v with at least q of the "
                "counted mass in [0, v], for each q in [0, 1] (binary search over range counts); "
                "at most 100 q per call.",
     .syntax = "key q [q ...]", .handler = CmdCmsQuantile},
    {.name = "cms.query", .arity = -3, .flags = kReadOnly, .first_key = 1, .last_key = 1, .step = 1,
     .group = "cms", .since = "2.0.0", .complexity = "O(n) where n is the number of items",
     .summary = "Returns the count for one or more items in a sketch.",
     .syntax = "key item [item ...]", .handler = CmdCmsQuery},
    {.name = "cms.range", .arity = 4, .flags = kReadOnly, .first_key = 1, .last_key = 1, .step = 1,
     .group = "cms", .since = "floe", .complexity = "O(bits)",
     .summary = "Floe: for a CMS.INITRANGE sketch, the estimated count of values in [lo, hi] "
                "(never below the true count).",
     .syntax = "key lo hi", .handler = CmdCmsRange},
    {.name = "command", .arity = -1, .flags = kLoading | kStale, .group = "server",
     .since = "2.8.13", .complexity = "O(N) where N is the total number of commands",
     .summary = "Returns detailed information about all commands.", .handler = CmdCommand,
     .subcommands = kCommandSubs},
    {.name = "config", .arity = -2, .group = "server", .since = "2.0.0",
     .complexity = "Depends on subcommand.",
     .summary = "A container for server configuration commands.", .subcommands = kConfigSubs},
    {.name = "dbsize", .arity = 1, .flags = kReadOnly | kFast, .group = "server", .since = "1.0.0",
     .complexity = "O(1)", .summary = "Returns the number of keys in the database.",
     .handler = CmdDbSize},
    {.name = "decr", .arity = 2, .flags = kWrite | kDenyOom | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Decrements the integer value of a key by one. Uses 0 as initial value if the "
                "key doesn't exist.",
     .syntax = "key", .handler = CmdDecr},
    {.name = "decrby", .arity = 3, .flags = kWrite | kDenyOom | kFast, .first_key = 1,
     .last_key = 1, .step = 1, .group = "string", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Decrements a number from the integer value of a key. Uses 0 as initial value "
                "if the key doesn't exist.",
     .syntax = "key decrement", .handler = CmdDecrBy},
    {.name = "del", .arity = -2, .flags = kWrite, .first_key = 1, .last_key = -1, .step = 1,
     .group = "generic", .since = "1.0.0",
     .complexity = "O(N) where N is the number of keys that will be removed",
     .summary = "Deletes one or more keys.", .syntax = "key [key ...]", .handler = CmdDel},
    {.name = "discard", .arity = 1, .flags = kFast | kLoading | kStale | kAllowBusy,
     .group = "transactions", .since = "2.0.0",
     .complexity = "O(N), when N is the number of queued commands",
     .summary = "Discards a transaction.", .handler = CmdDiscard},
    {.name = "dump", .arity = 2, .flags = kReadOnly, .first_key = 1, .last_key = 1, .step = 1,
     .group = "generic", .since = "2.6.0",
     .complexity = "O(1) to access the key and additional O(N*M) to serialize it, where N is the "
                   "number of Redis objects composing the value and M their average size.",
     .summary = "Returns a serialized representation of the value stored at a key.",
     .syntax = "key", .handler = CmdDump},
    {.name = "echo", .arity = 2, .flags = kFast, .group = "connection", .since = "1.0.0",
     .complexity = "O(1)", .summary = "Returns the given string.", .syntax = "message",
     .handler = CmdEcho},
    {.name = "exec", .arity = 1, .flags = kExclusive | kLoading | kStale | kAllowBusy,
     .group = "transactions", .since = "1.2.0",
     .complexity = "Depends on commands in the transaction",
     .summary = "Executes all commands in a transaction.", .handler = CmdExec},
    {.name = "exists", .arity = -2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = -1,
     .step = 1, .group = "generic", .since = "1.0.0",
     .complexity = "O(N) where N is the number of keys to check.",
     .summary = "Determines whether one or more keys exist.", .syntax = "key [key ...]",
     .handler = CmdExists},
    {.name = "expire", .arity = -3, .flags = kWrite | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Sets the expiration time of a key in seconds.",
     .syntax = "key seconds [NX | XX | GT | LT]", .handler = CmdExpire},
    {.name = "expireat", .arity = -3, .flags = kWrite | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "1.2.0", .complexity = "O(1)",
     .summary = "Sets the expiration time of a key to a Unix timestamp.",
     .syntax = "key unix-time-seconds [NX | XX | GT | LT]", .handler = CmdExpireAt},
    {.name = "expiretime", .arity = 2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "7.0.0", .complexity = "O(1)",
     .summary = "Returns the expiration time of a key as a Unix timestamp.", .syntax = "key",
     .handler = CmdExpireTime},
    {.name = "flushall", .arity = -1, .flags = kWrite | kExclusive, .group = "server",
     .since = "1.0.0", .complexity = "O(N) where N is the total number of keys",
     .summary = "Removes all keys from all databases.", .syntax = "[ASYNC | SYNC]",
     .handler = CmdFlushDb},
    {.name = "flushdb", .arity = -1, .flags = kWrite | kExclusive, .group = "server",
     .since = "1.0.0", .complexity = "O(N) where N is the number of keys",
     .summary = "Remove all keys from the current database.", .syntax = "[ASYNC | SYNC]",
     .handler = CmdFlushDb},
    {.name = "frame.drop", .arity = 2, .flags = kWrite | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "frame", .since = "floe", .complexity = "O(1)",
     .summary = "Removes a frame. Replies 1 if it was removed, 0 if there was none.",
     .syntax = "key", .handler = CmdFrameDrop},
    {.name = "frame.export", .arity = -3, .flags = kReadOnly, .first_key = 1, .last_key = 1,
     .step = 1, .group = "frame", .since = "floe",
     .complexity = "O(1) to start; the job is O(N) for N cells",
     .summary = "Starts a job that writes a frame as CSV to a file under export-dir (a new file, "
                "or replacing one with REPLACE). Replies with the job id at once; JOB.STATUS "
                "follows it.",
     .syntax = "key path [REPLACE]", .handler = CmdFrameExport},
    {.name = "frame.filter", .arity = -6, .flags = kWrite | kDenyOom | kNoMulti, .first_key = 1,
     .last_key = 2, .step = 1, .group = "frame", .since = "floe",
     .complexity = "O(N) for N rows, on every core",
     .summary = "Stores the rows of a frame where every condition holds (=, !=, <, <=, >, >=, "
                "ISNA, NOTNA) as a new frame with all its columns. Replies with the number of "
                "rows kept; OOM when they do not fit under maxmemory.",
     .syntax = "source destination WHERE col op [value] [AND col op [value] ...] [REPLACE]",
     .handler = CmdFrameFilter},
    {.name = "frame.groupby", .arity = -7, .flags = kWrite | kDenyOom | kNoMulti, .first_key = 1,
     .last_key = 2, .step = 1, .group = "frame", .since = "floe",
     .complexity = "O(N) for N rows, on every core",
     .summary = "Groups a frame's rows by key columns and stores one row per group (the keys, "
                "then each aggregate of count, sum, mean, min, max, sd, distinct (estimated by a HyperLogLog per group)) as a new frame. Replies "
                "with the number of groups; OOM when its tables do not fit under maxmemory.",
     .syntax = "source destination KEYS col [col ...] AGG fn col [fn col ...] [REPLACE]",
     .handler = CmdFrameGroupBy},
    {.name = "frame.head", .arity = -2, .flags = kReadOnly, .first_key = 1, .last_key = 1,
     .step = 1, .group = "frame", .since = "floe", .complexity = "O(n) for n rows",
     .summary = "Returns the column names and the first n rows of a frame (default 10, at most "
                "1000), NA as nil. Refused when the reply would pass the lesser of "
                "proto-max-bulk-len and 64 MiB.",
     .syntax = "key [n]", .handler = CmdFrameHead},
    {.name = "frame.import", .arity = -3, .flags = kWrite | kDenyOom, .first_key = 1,
     .last_key = 1, .step = 1, .group = "frame", .since = "floe",
     .complexity = "O(1) to start; the job is O(N) for N bytes, on every core",
     .summary = "Starts a job that parses a CSV file (or a directory of them, gzip or not) into a "
                "frame. Replies with the job id at once; JOB.STATUS follows it.",
     .syntax = "key path [SEP char] [HEADER yes|no] [TYPES type,...] [NA string,...] [REPLACE]",
     .handler = CmdFrameImport},
    {.name = "frame.info", .arity = 2, .flags = kReadOnly, .first_key = 1, .last_key = 1,
     .step = 1, .group = "frame", .since = "floe",
     .complexity = "O(C) for C columns and their layouts",
     .summary = "Returns a frame's rows, columns, chunks, compressed and raw bytes, and per column "
                "its type, NA count, levels, bytes and chunk layouts.",
     .syntax = "key", .handler = CmdFrameInfo},
    {.name = "frame.list", .arity = 1, .flags = kReadOnly, .group = "frame", .since = "floe",
     .complexity = "O(N) with N being the number of keys",
     .summary = "Returns the names of the frames, sorted.", .handler = CmdFrameList},
    {.name = "frame.quantile", .arity = -4, .flags = kReadOnly | kNoMulti, .first_key = 1, .last_key = 1,
     .step = 1, .group = "frame", .since = "floe",
     .complexity = "O(N) per pass for N rows, a few passes per probability, on every core",
     .summary = "Returns exact quantiles of a numeric column (linear interpolation between the "
                "nearest ranks), nil when the column has no value.",
     .syntax = "key col p [p ...]", .handler = CmdFrameQuantile},
    {.name = "frame.select", .arity = -5, .flags = kWrite | kDenyOom, .first_key = 1,
     .last_key = 2, .step = 1, .group = "frame", .since = "floe",
     .complexity = "O(C) for C columns (the chunks are shared, not copied)",
     .summary = "Stores some columns of a frame (by name or 0-based index, each once) as a new "
                "frame sharing the source's chunks. Replies with the number of columns.",
     .syntax = "source destination COLS col [col ...] [REPLACE]", .handler = CmdFrameSelect},
    {.name = "frame.summary", .arity = -3, .flags = kReadOnly | kNoMulti, .first_key = 1, .last_key = 1,
     .step = 1, .group = "frame", .since = "floe", .complexity = "O(N) for N rows, on every core",
     .summary = "Returns a numeric column's count, NA count, min, max, mean, sd, estimated "
                "distinct count and histogram.",
     .syntax = "key col [BINS n]", .handler = CmdFrameSummary},
    {.name = "get", .arity = 2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Returns the string value of a key.", .syntax = "key", .handler = CmdGet},
    {.name = "getdel", .arity = 2, .flags = kWrite | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "6.2.0", .complexity = "O(1)",
     .summary = "Returns the string value of a key after deleting the key.", .syntax = "key",
     .handler = CmdGetDel},
    {.name = "getex", .arity = -2, .flags = kWrite | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "6.2.0", .complexity = "O(1)",
     .summary = "Returns the string value of a key after setting its expiration time.",
     .syntax = "key [EX seconds | PX milliseconds | EXAT unix-time-seconds | PXAT "
               "unix-time-milliseconds | PERSIST]",
     .handler = CmdGetEx},
    {.name = "getrange", .arity = 4, .flags = kReadOnly, .first_key = 1, .last_key = 1, .step = 1,
     .group = "string", .since = "2.4.0",
     .complexity = "O(N) where N is the length of the returned string",
     .summary = "Returns a substring of the string stored at a key.", .syntax = "key start end",
     .handler = CmdGetRange},
    {.name = "getset", .arity = 3, .flags = kWrite | kDenyOom | kFast, .first_key = 1,
     .last_key = 1, .step = 1, .group = "string", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Returns the previous string value of a key after setting it to a new value.",
     .syntax = "key value", .handler = CmdGetSet},
    {.name = "hello", .arity = -1, .flags = kFast | kNoAuth | kLoading | kStale,
     .group = "connection", .since = "6.0.0", .complexity = "O(1)",
     .summary = "Handshakes with the server.",
     .syntax = "[protover [AUTH username password] [SETNAME clientname]]", .handler = CmdHello},
    {.name = "hll.add", .arity = -3, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "hll", .since = "floe", .complexity = "O(N) for N elements",
     .summary = "Adds elements (text by default, or 64-bit integers hashed as PostgreSQL's "
                "hll_hash_bigint) to a PostgreSQL-compatible HyperLogLog, creating it with "
                "default parameters if absent. Replies with the number of elements that changed "
                "it.",
     .syntax = "key [INT | TEXT] element [element ...]", .handler = CmdHllAdd},
    {.name = "hll.addhash", .arity = -3, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "hll", .since = "floe", .complexity = "O(N) for N hashes",
     .summary = "Adds precomputed signed 64-bit hash values, as PostgreSQL's hll_add takes them.",
     .syntax = "key hash [hash ...]", .handler = CmdHllAddHash},
    {.name = "hll.count", .arity = -2, .flags = kReadOnly, .first_key = 1, .last_key = -1,
     .step = 1, .group = "hll", .since = "floe", .complexity = "O(M) for M registers in all keys",
     .summary = "Estimates the distinct count of the union of the keys, as a double like "
                "hll_cardinality; keys of different sizes are folded to the smallest.",
     .syntax = "key [key ...]", .handler = CmdHllCount},
    {.name = "hll.create", .arity = -2, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "hll", .since = "floe", .complexity = "O(1)",
     .summary = "Creates an empty HyperLogLog with PostgreSQL hll parameters (defaults 11, 5, "
                "-1, 1). EXPTHRESH is -1 (auto), 0 (never exact) or n in 1..18 (exact up to "
                "2^(n-1) elements).",
     .syntax = "key [LOG2M n] [REGWIDTH n] [EXPTHRESH n] [SPARSEON 0|1]", .handler = CmdHllCreate},
    {.name = "hll.export", .arity = 2, .flags = kReadOnly, .first_key = 1, .last_key = 1, .step = 1,
     .group = "hll", .since = "floe", .complexity = "O(M)",
     .summary = "Returns the HyperLogLog in PostgreSQL's text form: \\x followed by lowercase hex.",
     .syntax = "key", .handler = CmdHllExport},
    {.name = "hll.import", .arity = 3, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "hll", .since = "floe", .complexity = "O(M)",
     .summary = "Stores a HyperLogLog given in PostgreSQL's text form (\\x and hex), validating "
                "it.",
     .syntax = "key hex", .handler = CmdHllImport},
    {.name = "hll.info", .arity = 2, .flags = kReadOnly, .first_key = 1, .last_key = 1, .step = 1,
     .group = "hll", .since = "floe", .complexity = "O(M)",
     .summary = "Returns the parameters, representation, filled entries, size in bytes and "
                "estimate.",
     .syntax = "key", .handler = CmdHllInfo},
    {.name = "hll.union", .arity = -3, .flags = kWrite | kDenyOom | kExclusive, .first_key = 1,
     .last_key = -1, .step = 1, .group = "hll", .since = "floe",
     .complexity = "O(M) for M registers in all keys",
     .summary = "Stores the union of the source keys at destkey, folded to their smallest log2m "
                "and regwidth (destkey's own contents are replaced, not included).",
     .syntax = "destkey key [key ...]", .handler = CmdHllUnion},
    {.name = "incr", .arity = 2, .flags = kWrite | kDenyOom | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Increments the integer value of a key by one. Uses 0 as initial value if the "
                "key doesn't exist.",
     .syntax = "key", .handler = CmdIncr},
    {.name = "incrby", .arity = 3, .flags = kWrite | kDenyOom | kFast, .first_key = 1,
     .last_key = 1, .step = 1, .group = "string", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Increments the integer value of a key by a number. Uses 0 as initial value if "
                "the key doesn't exist.",
     .syntax = "key increment", .handler = CmdIncrBy},
    {.name = "incrbyfloat", .arity = 3, .flags = kWrite | kDenyOom | kFast, .first_key = 1,
     .last_key = 1, .step = 1, .group = "string", .since = "2.6.0", .complexity = "O(1)",
     .summary = "Increment the floating point value of a key by a number. Uses 0 as initial "
                "value if the key doesn't exist.",
     .syntax = "key increment", .handler = CmdIncrByFloat},
    {.name = "info", .arity = -1, .flags = kLoading | kStale, .group = "server", .since = "1.0.0",
     .complexity = "O(1)", .summary = "Returns information and statistics about the server.",
     .syntax = "[section [section ...]]", .handler = CmdInfo},
    {.name = "job.cancel", .arity = 2, .flags = kFast, .group = "frame", .since = "floe",
     .complexity = "O(J) for J kept jobs", .summary = "Asks a running job to stop.",
     .syntax = "id", .handler = CmdJobCancel},
    {.name = "job.list", .arity = 1, .flags = 0, .group = "frame", .since = "floe",
     .complexity = "O(J) for J kept jobs",
     .summary = "Lists the running and recently finished jobs: id, kind, state, percent, "
                "description.",
     .handler = CmdJobList},
    {.name = "job.status", .arity = 2, .flags = kFast, .group = "frame", .since = "floe",
     .complexity = "O(J) for J kept jobs",
     .summary = "Returns a job's state (running, done, failed, cancelled), progress, error, "
                "result and times.",
     .syntax = "id", .handler = CmdJobStatus},
    {.name = "keys", .arity = 2, .flags = kReadOnly, .group = "generic", .since = "1.0.0",
     .complexity = "O(N) with N being the number of keys in the database",
     .summary = "Returns all key names that match a pattern.", .syntax = "pattern",
     .handler = CmdKeys},
    {.name = "mget", .arity = -2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = -1,
     .step = 1, .group = "string", .since = "1.0.0",
     .complexity = "O(N) where N is the number of keys to retrieve.",
     .summary = "Atomically returns the string values of one or more keys.",
     .syntax = "key [key ...]", .handler = CmdMGet},
    {.name = "mset", .arity = -3, .flags = kWrite | kDenyOom | kExclusive, .first_key = 1,
     .last_key = -1, .step = 2, .group = "string", .since = "1.0.1",
     .complexity = "O(N) where N is the number of keys to set.",
     .summary = "Atomically creates or modifies the string values of one or more keys.",
     .syntax = "key value [key value ...]", .handler = CmdMSet},
    {.name = "msetnx", .arity = -3, .flags = kWrite | kDenyOom | kExclusive, .first_key = 1,
     .last_key = -1, .step = 2, .group = "string", .since = "1.0.1",
     .complexity = "O(N) where N is the number of keys to set.",
     .summary = "Atomically modifies the string values of one or more keys only when all keys "
                "don't exist.",
     .syntax = "key value [key value ...]", .handler = CmdMSetNx},
    {.name = "multi", .arity = 1, .flags = kFast | kLoading | kStale | kAllowBusy,
     .group = "transactions", .since = "1.2.0", .complexity = "O(1)",
     .summary = "Starts a transaction.", .handler = CmdMulti},
    {.name = "object", .arity = -2, .group = "generic", .since = "2.2.3",
     .complexity = "Depends on subcommand.",
     .summary = "A container for object introspection commands.", .subcommands = kObjectSubs},
    {.name = "persist", .arity = 2, .flags = kWrite | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "2.2.0", .complexity = "O(1)",
     .summary = "Removes the expiration time of a key.", .syntax = "key", .handler = CmdPersist},
    {.name = "pexpire", .arity = -3, .flags = kWrite | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "2.6.0", .complexity = "O(1)",
     .summary = "Sets the expiration time of a key in milliseconds.",
     .syntax = "key milliseconds [NX | XX | GT | LT]", .handler = CmdPExpire},
    {.name = "pexpireat", .arity = -3, .flags = kWrite | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "2.6.0", .complexity = "O(1)",
     .summary = "Sets the expiration time of a key to a Unix milliseconds timestamp.",
     .syntax = "key unix-time-milliseconds [NX | XX | GT | LT]", .handler = CmdPExpireAt},
    {.name = "pexpiretime", .arity = 2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "7.0.0", .complexity = "O(1)",
     .summary = "Returns the expiration time of a key as a Unix milliseconds timestamp.",
     .syntax = "key", .handler = CmdPExpireTime},
    {.name = "pfadd", .arity = -2, .flags = kWrite | kDenyOom | kFast, .first_key = 1,
     .last_key = 1, .step = 1, .group = "hyperloglog", .since = "2.8.9",
     .complexity = "O(1) to add every element.",
     .summary = "Adds elements to a HyperLogLog key. Creates the key if it doesn't exist.",
     .syntax = "key [element [element ...]]", .handler = CmdPfAdd},
    {.name = "pfcount", .arity = -2, .flags = kReadOnly, .first_key = 1, .last_key = -1, .step = 1,
     .group = "hyperloglog", .since = "2.8.9",
     .complexity = "O(1) with a single key, O(N) with N keys",
     .summary = "Returns the approximated cardinality of the set(s) observed by the HyperLogLog "
                "key(s).",
     .syntax = "key [key ...]", .handler = CmdPfCount},
    {.name = "pfmerge", .arity = -2, .flags = kWrite | kDenyOom | kExclusive, .first_key = 1,
     .last_key = -1, .step = 1, .group = "hyperloglog", .since = "2.8.9",
     .complexity = "O(N) to merge N HyperLogLogs",
     .summary = "Merges one or more HyperLogLog values into a single key.",
     .syntax = "destkey [sourcekey [sourcekey ...]]", .handler = CmdPfMerge},
    {.name = "ping", .arity = -1, .flags = kFast, .group = "connection", .since = "1.0.0",
     .complexity = "O(1)", .summary = "Returns the server's liveliness response.",
     .syntax = "[message]", .handler = CmdPing},
    {.name = "psetex", .arity = 4, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "2.6.0", .complexity = "O(1)",
     .summary = "Sets both string value and expiration time in milliseconds of a key. The key "
                "is created if it doesn't exist.",
     .syntax = "key milliseconds value", .handler = CmdPSetEx},
    {.name = "pttl", .arity = 2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "2.6.0", .complexity = "O(1)",
     .summary = "Returns the expiration time in milliseconds of a key.", .syntax = "key",
     .handler = CmdPTtl},
    {.name = "quit", .arity = -1, .flags = kFast | kNoAuth | kLoading | kStale | kAllowBusy,
     .group = "connection", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Closes the connection.", .handler = CmdQuit},
    {.name = "randomkey", .arity = 1, .flags = kReadOnly, .group = "generic", .since = "1.0.0",
     .complexity = "O(1)", .summary = "Returns a random key name from the database.",
     .handler = CmdRandomKey},
    {.name = "rename", .arity = 3, .flags = kWrite | kExclusive, .first_key = 1, .last_key = 2,
     .step = 1, .group = "generic", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Renames a key and overwrites the destination.", .syntax = "key newkey",
     .handler = CmdRename},
    {.name = "renamenx", .arity = 3, .flags = kWrite | kFast | kExclusive, .first_key = 1,
     .last_key = 2, .step = 1, .group = "generic", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Renames a key only when the target key name doesn't exist.",
     .syntax = "key newkey", .handler = CmdRenameNx},
    {.name = "reset", .arity = 1,
     .flags = kFast | kNoAuth | kLoading | kStale | kAllowBusy, .group = "connection",
     .since = "6.2.0", .complexity = "O(1)", .summary = "Resets the connection.",
     .handler = CmdReset},
    {.name = "restore", .arity = -4, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "2.6.0",
     .complexity = "O(1) to create the new key and additional O(N*M) to reconstruct the "
                   "serialized value, where N is the number of Redis objects composing the value "
                   "and M their average size.",
     .summary = "Creates a key from the serialized representation of a value.",
     .syntax = "key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]",
     .handler = CmdRestore},
    {.name = "scan", .arity = -2, .flags = kReadOnly, .group = "generic", .since = "2.8.0",
     .complexity = "O(1) for every call. O(N) for a complete iteration.",
     .summary = "Iterates over the key names in the database.",
     .syntax = "cursor [MATCH pattern] [COUNT count] [TYPE type]", .handler = CmdScan},
    {.name = "select", .arity = 2, .flags = kFast | kLoading | kStale, .group = "connection",
     .since = "1.0.0", .complexity = "O(1)",
     .summary = "Changes the selected database (Floe has database 0 only).", .syntax = "index",
     .handler = CmdSelect},
    {.name = "set", .arity = -3, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Sets the string value of a key, ignoring its type. The key is created if it "
                "doesn't exist.",
     
     .syntax = "key value [NX | XX] [GET] [EX seconds | PX milliseconds | EXAT "
               "unix-time-seconds | PXAT unix-time-milliseconds | KEEPTTL]",
     .handler = CmdSet},
    {.name = "setex", .arity = 4, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "2.0.0", .complexity = "O(1)",
     .summary = "Sets the string value and expiration time of a key. Creates the key if it "
                "doesn't exist.",
     .syntax = "key seconds value", .handler = CmdSetEx},
    {.name = "setnx", .arity = 3, .flags = kWrite | kDenyOom | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Set the string value of a key only when the key doesn't exist.",
     .syntax = "key value", .handler = CmdSetNx},
    {.name = "setrange", .arity = 4, .flags = kWrite | kDenyOom, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "2.2.0",
     .complexity = "O(1), not counting the time taken to copy the new string in place.",
     .summary = "Overwrites a part of a string value with another by an offset. Creates the key "
                "if it doesn't exist.",
     .syntax = "key offset value", .handler = CmdSetRange},
    {.name = "strlen", .arity = 2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "string", .since = "2.2.0", .complexity = "O(1)",
     .summary = "Returns the length of a string value.", .syntax = "key", .handler = CmdStrLen},
    {.name = "time", .arity = 1, .flags = kFast | kLoading | kStale, .group = "server",
     .since = "2.6.0", .complexity = "O(1)", .summary = "Returns the server time.",
     .handler = CmdTime},
    {.name = "touch", .arity = -2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = -1,
     .step = 1, .group = "generic", .since = "3.2.1",
     .complexity = "O(N) where N is the number of keys that will be touched.",
     .summary = "Returns the number of existing keys out of those specified.",
     .syntax = "key [key ...]", .handler = CmdTouch},
    {.name = "ttl", .arity = 2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Returns the expiration time in seconds of a key.", .syntax = "key",
     .handler = CmdTtl},
    {.name = "type", .arity = 2, .flags = kReadOnly | kFast, .first_key = 1, .last_key = 1,
     .step = 1, .group = "generic", .since = "1.0.0", .complexity = "O(1)",
     .summary = "Determines the type of value stored at a key.", .syntax = "key",
     .handler = CmdType},
    {.name = "unlink", .arity = -2, .flags = kWrite | kFast, .first_key = 1, .last_key = -1,
     .step = 1, .group = "generic", .since = "4.0.0", .complexity = "O(1) for each key removed.",
     .summary = "Deletes one or more keys.", .syntax = "key [key ...]", .handler = CmdDel},
    {.name = "unwatch", .arity = 1, .flags = kFast | kLoading | kStale | kAllowBusy,
     .group = "transactions", .since = "2.2.0", .complexity = "O(1)",
     .summary = "Forgets about watched keys of a transaction.", .handler = CmdUnwatch},
    {.name = "watch", .arity = -2, .flags = kFast | kLoading | kStale | kAllowBusy,
     .first_key = 1, .last_key = -1, .step = 1, .group = "transactions", .since = "2.2.0",
     .complexity = "O(1) for every key.",
     .summary = "Monitors changes to keys to determine the execution of a transaction.",
     .syntax = "key [key ...]", .handler = CmdWatch},
}));
// clang-format on
static_assert(WellFormed(kCommands));

}  // namespace

std::span<const CommandSpec> Commands() { return kCommands; }

int CommandRowCount() { return After(kCommands); }

}  // namespace floe::server::internal
