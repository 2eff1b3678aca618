// The command table: one declaration per command drives dispatch, arity checks, COMMAND
// (COUNT, INFO, DOCS, LIST), commandstats and docs/commands.md.

#include <algorithm>
#include <unordered_map>

#include "server/internal/command.h"

namespace floe::server::internal {

namespace {

constexpr uint32_t W = kWrite, R = kReadOnly, M = kDenyOom, F = kFast, A = kNoAuth,
                   N = kNoMulti, X = kExclusive, L = kLoading, S = kStale, B = kAllowBusy;

const CommandSpec kClientSubs[] = {
    {"client|getname", 2, N | L | S, 0, 0, 0, "connection", "2.6.9", "O(1)",
     "Returns the name of the connection.", "", CmdClientGetName, {}},
    {"client|help", 2, L | S, 0, 0, 0, "connection", "5.0.0", "O(1)",
     "Returns helpful text about the different subcommands.", "", CmdClientHelp, {}},
    {"client|id", 2, N | L | S, 0, 0, 0, "connection", "5.0.0", "O(1)",
     "Returns the unique client ID of the connection.", "", CmdClientId, {}},
    {"client|info", 2, N | L | S, 0, 0, 0, "connection", "6.2.0", "O(1)",
     "Returns information about the connection.", "", CmdClientInfo, {}},
    {"client|kill", -3, N | L | S, 0, 0, 0, "connection", "2.4.0",
     "O(N) where N is the number of client connections",
     "Terminates open connections.",
     "ip:port | [ID client-id] [ADDR ip:port] [LADDR ip:port] [SKIPME yes|no]", CmdClientKill, {}},
    {"client|list", -2, N | L | S, 0, 0, 0, "connection", "2.4.0",
     "O(N) where N is the number of client connections", "Lists open connections.",
     "[TYPE normal] [ID client-id [client-id ...]]", CmdClientList, {}},
    {"client|setname", 3, N | L | S, 0, 0, 0, "connection", "2.6.9", "O(1)",
     "Sets the connection name.", "connection-name", CmdClientSetName, {}},
};

const CommandSpec kConfigSubs[] = {
    {"config|get", -3, N | L | S, 0, 0, 0, "server", "2.0.0",
     "O(N) when N is the number of configuration parameters provided",
     "Returns the effective values of configuration parameters.", "parameter [parameter ...]",
     CmdConfigGet, {}},
    {"config|help", 2, L | S, 0, 0, 0, "server", "5.0.0", "O(1)",
     "Returns helpful text about the different subcommands.", "", CmdConfigHelp, {}},
    {"config|set", -4, N | L | S, 0, 0, 0, "server", "2.0.0",
     "O(N) when N is the number of configuration parameters provided",
     "Sets configuration parameters in-flight.", "parameter value [parameter value ...]",
     CmdConfigSet, {}},
};

const CommandSpec kCommandSubs[] = {
    {"command|count", 2, L | S, 0, 0, 0, "server", "2.8.13", "O(1)",
     "Returns a count of commands.", "", CmdCommandCount, {}},
    {"command|docs", -2, L | S, 0, 0, 0, "server", "7.0.0",
     "O(N) where N is the number of commands to look up",
     "Returns documentary information about one, multiple or all commands.",
     "[command-name [command-name ...]]", CmdCommandDocs, {}},
    {"command|help", 2, L | S, 0, 0, 0, "server", "5.0.0", "O(1)",
     "Returns helpful text about the different subcommands.", "", CmdCommandHelp, {}},
    {"command|info", -2, L | S, 0, 0, 0, "server", "2.8.13",
     "O(N) where N is the number of commands to look up",
     "Returns information about one, multiple or all commands.",
     "[command-name [command-name ...]]", CmdCommandInfo, {}},
    {"command|list", -2, L | S, 0, 0, 0, "server", "7.0.0",
     "O(N) where N is the total number of commands",
     "Returns a list of command names.", "[FILTERBY MODULE name | ACLCAT category | PATTERN pattern]",
     CmdCommandList, {}},
};

const CommandSpec kObjectSubs[] = {
    {"object|encoding", 3, R, 2, 2, 1, "generic", "2.2.3", "O(1)",
     "Returns the internal encoding of an object.", "key", CmdObjectEncoding, {}},
    {"object|help", 2, L | S, 0, 0, 0, "generic", "6.2.0", "O(1)",
     "Returns helpful text about the different subcommands.", "", CmdObjectHelp, {}},
};

const CommandSpec kTable[] = {
    {"append", 3, W | M | F, 1, 1, 1, "string", "2.0.0", "O(1)",
     "Appends a string to the value of a key. Creates the key if it doesn't exist.",
     "key value", CmdAppend, {}},
    {"auth", -2, N | A | L | S | F, 0, 0, 0, "connection", "1.0.0", "O(N) where N is the password length",
     "Authenticates the connection.", "[username] password", CmdAuth, {}},
    {"client", -2, 0, 0, 0, 0, "connection", "2.4.0", "Depends on subcommand.",
     "A container for client connection commands.", "", nullptr, kClientSubs},
    {"command", -1, L | S, 0, 0, 0, "server", "2.8.13", "O(N) where N is the total number of commands",
     "Returns detailed information about all commands.", "", CmdCommand, kCommandSubs},
    {"config", -2, 0, 0, 0, 0, "server", "2.0.0", "Depends on subcommand.",
     "A container for server configuration commands.", "", nullptr, kConfigSubs},
    {"dbsize", 1, R | F, 0, 0, 0, "server", "1.0.0", "O(1)",
     "Returns the number of keys in the database.", "", CmdDbSize, {}},
    {"decr", 2, W | M | F, 1, 1, 1, "string", "1.0.0", "O(1)",
     "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
     "key", CmdDecr, {}},
    {"decrby", 3, W | M | F, 1, 1, 1, "string", "1.0.0", "O(1)",
     "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.",
     "key decrement", CmdDecrBy, {}},
    {"del", -2, W, 1, -1, 1, "generic", "1.0.0", "O(N) where N is the number of keys that will be removed",
     "Deletes one or more keys.", "key [key ...]", CmdDel, {}},
    {"discard", 1, N | L | S | F | B, 0, 0, 0, "transactions", "2.0.0",
     "O(N), when N is the number of queued commands", "Discards a transaction.", "", CmdDiscard, {}},
    {"echo", 2, F, 0, 0, 0, "connection", "1.0.0", "O(1)", "Returns the given string.", "message",
     CmdEcho, {}},
    {"exec", 1, N | L | S | X | B, 0, 0, 0, "transactions", "1.2.0", "Depends on commands in the transaction",
     "Executes all commands in a transaction.", "", CmdExec, {}},
    {"exists", -2, R | F, 1, -1, 1, "generic", "1.0.0", "O(N) where N is the number of keys to check.",
     "Determines whether one or more keys exist.", "key [key ...]", CmdExists, {}},
    {"expire", -3, W | F, 1, 1, 1, "generic", "1.0.0", "O(1)",
     "Sets the expiration time of a key in seconds.", "key seconds [NX | XX | GT | LT]", CmdExpire, {}},
    {"expireat", -3, W | F, 1, 1, 1, "generic", "1.2.0", "O(1)",
     "Sets the expiration time of a key to a Unix timestamp.",
     "key unix-time-seconds [NX | XX | GT | LT]", CmdExpireAt, {}},
    {"expiretime", 2, R | F, 1, 1, 1, "generic", "7.0.0", "O(1)",
     "Returns the expiration time of a key as a Unix timestamp.", "key", CmdExpireTime, {}},
    {"flushall", -1, W | X, 0, 0, 0, "server", "1.0.0", "O(N) where N is the total number of keys",
     "Removes all keys from all databases.", "[ASYNC | SYNC]", CmdFlushDb, {}},
    {"flushdb", -1, W | X, 0, 0, 0, "server", "1.0.0", "O(N) where N is the number of keys",
     "Remove all keys from the current database.", "[ASYNC | SYNC]", CmdFlushDb, {}},
    {"get", 2, R | F, 1, 1, 1, "string", "1.0.0", "O(1)", "Returns the string value of a key.",
     "key", CmdGet, {}},
    {"getdel", 2, W | F, 1, 1, 1, "string", "6.2.0", "O(1)",
     "Returns the string value of a key after deleting the key.", "key", CmdGetDel, {}},
    {"getex", -2, W | F, 1, 1, 1, "string", "6.2.0", "O(1)",
     "Returns the string value of a key after setting its expiration time.",
     "key [EX seconds | PX milliseconds | EXAT unix-time-seconds | PXAT unix-time-milliseconds | PERSIST]",
     CmdGetEx, {}},
    {"getrange", 4, R, 1, 1, 1, "string", "2.4.0", "O(N) where N is the length of the returned string",
     "Returns a substring of the string stored at a key.", "key start end", CmdGetRange, {}},
    {"getset", 3, W | M | F, 1, 1, 1, "string", "1.0.0", "O(1)",
     "Returns the previous string value of a key after setting it to a new value.", "key value",
     CmdGetSet, {}},
    {"hello", -1, N | A | L | S | F, 0, 0, 0, "connection", "6.0.0", "O(1)",
     "Handshakes with the server.",
     "[protover [AUTH username password] [SETNAME clientname]]", CmdHello, {}},
    {"incr", 2, W | M | F, 1, 1, 1, "string", "1.0.0", "O(1)",
     "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
     "key", CmdIncr, {}},
    {"incrby", 3, W | M | F, 1, 1, 1, "string", "1.0.0", "O(1)",
     "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
     "key increment", CmdIncrBy, {}},
    {"incrbyfloat", 3, W | M | F, 1, 1, 1, "string", "2.6.0", "O(1)",
     "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
     "key increment", CmdIncrByFloat, {}},
    {"info", -1, L | S, 0, 0, 0, "server", "1.0.0", "O(1)",
     "Returns information and statistics about the server.", "[section [section ...]]", CmdInfo, {}},
    {"keys", 2, R, 0, 0, 0, "generic", "1.0.0", "O(N) with N being the number of keys in the database",
     "Returns all key names that match a pattern.", "pattern", CmdKeys, {}},
    {"mget", -2, R | F, 1, -1, 1, "string", "1.0.0", "O(N) where N is the number of keys to retrieve.",
     "Atomically returns the string values of one or more keys.", "key [key ...]", CmdMGet, {}},
    {"mset", -3, W | M | X, 1, -1, 2, "string", "1.0.1", "O(N) where N is the number of keys to set.",
     "Atomically creates or modifies the string values of one or more keys.",
     "key value [key value ...]", CmdMSet, {}},
    {"msetnx", -3, W | M | X, 1, -1, 2, "string", "1.0.1", "O(N) where N is the number of keys to set.",
     "Atomically modifies the string values of one or more keys only when all keys don't exist.",
     "key value [key value ...]", CmdMSetNx, {}},
    {"multi", 1, N | L | S | F | B, 0, 0, 0, "transactions", "1.2.0", "O(1)",
     "Starts a transaction.", "", CmdMulti, {}},
    {"object", -2, 0, 0, 0, 0, "generic", "2.2.3", "Depends on subcommand.",
     "A container for object introspection commands.", "", nullptr, kObjectSubs},
    {"persist", 2, W | F, 1, 1, 1, "generic", "2.2.0", "O(1)",
     "Removes the expiration time of a key.", "key", CmdPersist, {}},
    {"pexpire", -3, W | F, 1, 1, 1, "generic", "2.6.0", "O(1)",
     "Sets the expiration time of a key in milliseconds.", "key milliseconds [NX | XX | GT | LT]",
     CmdPExpire, {}},
    {"pexpireat", -3, W | F, 1, 1, 1, "generic", "2.6.0", "O(1)",
     "Sets the expiration time of a key to a Unix milliseconds timestamp.",
     "key unix-time-milliseconds [NX | XX | GT | LT]", CmdPExpireAt, {}},
    {"pexpiretime", 2, R | F, 1, 1, 1, "generic", "7.0.0", "O(1)",
     "Returns the expiration time of a key as a Unix milliseconds timestamp.", "key",
     CmdPExpireTime, {}},
    {"ping", -1, F, 0, 0, 0, "connection", "1.0.0", "O(1)", "Returns the server's liveliness response.",
     "[message]", CmdPing, {}},
    {"psetex", 4, W | M, 1, 1, 1, "string", "2.6.0", "O(1)",
     "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.",
     "key milliseconds value", CmdPSetEx, {}},
    {"pttl", 2, R | F, 1, 1, 1, "generic", "2.6.0", "O(1)",
     "Returns the expiration time in milliseconds of a key.", "key", CmdPTtl, {}},
    {"quit", -1, A | L | S | F | B, 0, 0, 0, "connection", "1.0.0", "O(1)", "Closes the connection.",
     "", CmdQuit, {}},
    {"randomkey", 1, R, 0, 0, 0, "generic", "1.0.0", "O(1)",
     "Returns a random key name from the database.", "", CmdRandomKey, {}},
    {"rename", 3, W | X, 1, 2, 1, "generic", "1.0.0", "O(1)", "Renames a key and overwrites the destination.",
     "key newkey", CmdRename, {}},
    {"renamenx", 3, W | F | X, 1, 2, 1, "generic", "1.0.0", "O(1)",
     "Renames a key only when the target key name doesn't exist.", "key newkey", CmdRenameNx, {}},
    {"reset", 1, N | A | L | S | F | B, 0, 0, 0, "connection", "6.2.0", "O(1)",
     "Resets the connection.", "", CmdReset, {}},
    {"scan", -2, R, 0, 0, 0, "generic", "2.8.0",
     "O(1) for every call. O(N) for a complete iteration.",
     "Iterates over the key names in the database.",
     "cursor [MATCH pattern] [COUNT count] [TYPE type]", CmdScan, {}},
    {"select", 2, L | S | F, 0, 0, 0, "connection", "1.0.0", "O(1)",
     "Changes the selected database (Floe has database 0 only).", "index", CmdSelect, {}},
    {"set", -3, W | M, 1, 1, 1, "string", "1.0.0", "O(1)",
     "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
     "key value [NX | XX] [GET] [EX seconds | PX milliseconds | EXAT unix-time-seconds | "
     "PXAT unix-time-milliseconds | KEEPTTL]",
     CmdSet, {}},
    {"setex", 4, W | M, 1, 1, 1, "string", "2.0.0", "O(1)",
     "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.",
     "key seconds value", CmdSetEx, {}},
    {"setnx", 3, W | M | F, 1, 1, 1, "string", "1.0.0", "O(1)",
     "Set the string value of a key only when the key doesn't exist.", "key value", CmdSetNx, {}},
    {"setrange", 4, W | M, 1, 1, 1, "string", "2.2.0", "O(1), not counting the time taken to copy the new string in place.",
     "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.",
     "key offset value", CmdSetRange, {}},
    {"strlen", 2, R | F, 1, 1, 1, "string", "2.2.0", "O(1)",
     "Returns the length of a string value.", "key", CmdStrLen, {}},
    {"time", 1, L | S | F, 0, 0, 0, "server", "2.6.0", "O(1)", "Returns the server time.", "", CmdTime, {}},
    {"touch", -2, R | F, 1, -1, 1, "generic", "3.2.1", "O(N) where N is the number of keys that will be touched.",
     "Returns the number of existing keys out of those specified.", "key [key ...]", CmdTouch, {}},
    {"ttl", 2, R | F, 1, 1, 1, "generic", "1.0.0", "O(1)",
     "Returns the expiration time in seconds of a key.", "key", CmdTtl, {}},
    {"type", 2, R | F, 1, 1, 1, "generic", "1.0.0", "O(1)",
     "Determines the type of value stored at a key.", "key", CmdType, {}},
    {"unlink", -2, W | F, 1, -1, 1, "generic", "4.0.0", "O(1) for each key removed.",
     "Deletes one or more keys.", "key [key ...]", CmdDel, {}},
    {"unwatch", 1, N | L | S | F | B, 0, 0, 0, "transactions", "2.2.0", "O(1)",
     "Forgets about watched keys of a transaction.", "", CmdUnwatch, {}},
    {"watch", -2, N | L | S | F | B, 1, -1, 1, "transactions", "2.2.0", "O(1) for every key.",
     "Monitors changes to keys to determine the execution of a transaction.", "key [key ...]",
     CmdWatch, {}},
};

struct Index {
  std::vector<const CommandSpec*> all;
  std::unordered_map<std::string, const CommandSpec*> by_name;
  Index() {
    // `index` is assigned through a const_cast because the specs are constant data whose only
    // mutable part is this start-up numbering.
    int next = 0;
    for (const CommandSpec& c : kTable) {
      const_cast<CommandSpec&>(c).index = next++;
      all.push_back(&c);
      by_name.emplace(std::string(c.name), &c);
      for (const CommandSpec& s : c.subcommands) {
        const_cast<CommandSpec&>(s).index = next++;
        all.push_back(&s);
      }
    }
  }
};

const Index& TheIndex() {
  static const Index* index = new Index();
  return *index;
}

}  // namespace

std::span<const CommandSpec> CommandTable() {
  (void)TheIndex();
  return kTable;
}

const std::vector<const CommandSpec*>& AllCommands() { return TheIndex().all; }

const CommandSpec* FindCommand(std::string_view name) {
  if (name.size() > 32) return nullptr;
  char lower[33];
  for (size_t i = 0; i < name.size(); i++) {
    const char c = name[i];
    lower[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  const auto& by_name = TheIndex().by_name;
  auto it = by_name.find(std::string(lower, name.size()));
  return it == by_name.end() ? nullptr : it->second;
}

const CommandSpec* FindSubcommand(const CommandSpec& parent, std::string_view name) {
  for (const CommandSpec& s : parent.subcommands) {
    const std::string_view sub = s.name.substr(s.name.find('|') + 1);
    if (EqualsIgnoreCase(sub, name)) return &s;
  }
  return nullptr;
}

}  // namespace floe::server::internal
