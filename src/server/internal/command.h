// The command table and what a handler sees (private to server/).

#ifndef FLOE_SERVER_INTERNAL_COMMAND_H_
#define FLOE_SERVER_INTERNAL_COMMAND_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "resp/resp.h"
#include "server/server.h"
#include "store/store.h"

namespace floe::server::internal {

// Command flags (shown by COMMAND INFO under their Redis names).
enum CommandFlag : uint32_t {
  kWrite = 1 << 0,      // "write": may change the keyspace
  kReadOnly = 1 << 1,   // "readonly"
  kDenyOom = 1 << 2,    // "denyoom": refused when used memory exceeds maxmemory
  kFast = 1 << 3,       // "fast": O(1) or O(log n)
  kNoAuth = 1 << 4,     // "no_auth": allowed before AUTH
  kExclusive = 1 << 6,  // runs with every other I/O thread stopped (atomic across keys)
  kLoading = 1 << 7,    // "loading"
  kStale = 1 << 8,      // "stale"
  kAllowBusy = 1 << 9,  // "allow_busy"
  kNoMulti = 1 << 10,   // "no_multi": refused inside MULTI (frames analytics: run on the pool)
};

// Redis's reply for a command applied to a key of another type.
inline constexpr char kWrongType[] =
    "WRONGTYPE Operation against a key holding the wrong kind of value";

// ---- errors: Status to RESP text, in one place ----

// A client's mistake found inside a store callback, which can only return a Status: `text` is
// Redis's whole error text, its code word first ("ERR ...", "WRONGTYPE ...").
inline Status ClientError(std::string_view text) { return Status::InvalidArgument(text); }
// The RESP error text for a failed Status (session.cc): a message that opens with a Redis error
// code (a ClientError, a cell's OOM error) as it is; any other Status (a limit of the store, an
// internal failure) under Redis's generic "ERR " code.
std::string ErrorReplyText(const Status& status);
// The error code words Redis uses ("ERR", "WRONGTYPE", ...), for INFO errorstats.
std::span<const std::string_view> RedisErrorCodes();
// Counts an error reply ("-CODE text\r\n") in `stats` by its code word: the RedisErrorCodes()
// index, or one past them for another code.
void CountErrorReply(WorkerStats& stats, std::string_view reply);

// ---- DUMP payloads (cmd_dump.cc; docs/wire.md, "DUMP payload") ----

// A value's bytes (a string's, or a sketch's Serialize) and type, framed with the format's
// version and a CRC32C.
std::string DumpPayload(std::string body, uint16_t type);
// The type and body of a payload DumpPayload made; the ClientError "ERR DUMP payload version or
// checksum are wrong" for anything else.
Result<std::pair<uint16_t, std::string_view>> ParseDumpPayload(std::string_view payload);

// ---- expiry times ----

enum class ExpireUnit { kSeconds, kMilliseconds };
// `when` in `unit` after `base_ms` (0 for an absolute time), in Unix milliseconds. False when
// the result does not fit 64 bits.
inline bool ExpireToMs(int64_t when, ExpireUnit unit, int64_t base_ms, int64_t* out_ms) {
  if (unit == ExpireUnit::kSeconds) {
    if (when > INT64_MAX / 1000 || when < INT64_MIN / 1000) return false;
    when *= 1000;
  }
  if ((when > 0 && base_ms > INT64_MAX - when) || (when < 0 && base_ms < INT64_MIN - when)) {
    return false;
  }
  *out_ms = when + base_ms;
  return true;
}

struct CommandContext;
using Handler = void (*)(CommandContext& ctx);

// One row of the command table (command_table.cc), written with designated initializers; an
// omitted field keeps the default below.
struct CommandSpec {
  std::string_view name;  // lowercase; subcommands "client|list"
  int arity = 0;          // Redis convention: -n means at least n
  uint32_t flags = 0;     // CommandFlag bits
  // Where the keys are, as Redis's first/last/step: 0 = no keys; a negative last_key counts
  // from the end (-1 = the last argument). COMMAND INFO and COMMAND GETKEYS read them.
  int first_key = 0, last_key = 0, step = 0;
  std::string_view group;  // generic, string, connection, server, cluster, transactions, hll,
                           // cms, bf, frame
  std::string_view since;
  std::string_view complexity;
  std::string_view summary;
  std::string_view syntax;    // arguments after the name, for docs/commands.md
  Handler handler = nullptr;  // null for a container (CLIENT, CONFIG, OBJECT)
  std::span<const CommandSpec> subcommands = {};
  // Position in the flat numbering of every command and subcommand (commandstats arrays),
  // assigned at compile time by command_table.cc: 0 <= index < CommandRowCount().
  int index = -1;
};

// The top-level rows of the command table, sorted by name (checked at compile time).
std::span<const CommandSpec> Commands();
// The number of commands and subcommands together; every CommandSpec::index is below it.
int CommandRowCount();
// Every top-level command, sorted by name.
const std::vector<const CommandSpec*>& CommandTable();
// Every command, each followed by its subcommands (the order of docs/commands.md). Its size is
// CommandRowCount(); CommandSpec::index is a number for counters, not a position in this list.
const std::vector<const CommandSpec*>& AllCommands();
// Case-insensitive lookup; nullptr if unknown.
const CommandSpec* FindCommand(std::string_view name);
const CommandSpec* FindSubcommand(const CommandSpec& parent, std::string_view name);
// A command by its full name, "get" or "config|get" (case-insensitive); nullptr if unknown.
const CommandSpec* FindCommandByFullName(std::string_view name);
// The command or subcommand a full command line names, resolved as Redis's lookupCommand does
// ("config get x" is config|get, "get k" is get); nullptr if there is none.
const CommandSpec* ResolveCommand(std::span<const std::string_view> args);

// Bytes a command reserved against maxmemory (Engine::TryReserveMemory through
// CheckAllocation). Given back when it goes, or, for an attempt the command abandons and
// retries, by ReleaseSince. Not copyable: a copy would give the bytes back twice.
class MemoryReservation {
 public:
  MemoryReservation() = default;
  MemoryReservation(const MemoryReservation&) = delete;
  MemoryReservation& operator=(const MemoryReservation&) = delete;
  ~MemoryReservation();
  // Records `bytes` the engine has just reserved.
  void Add(Engine* engine, int64_t bytes) {
    engine_ = engine;
    bytes_ += bytes;
  }
  int64_t bytes() const { return bytes_; }
  // Gives back what was added since bytes() was `mark`.
  void ReleaseSince(int64_t mark);

 private:
  Engine* engine_ = nullptr;
  int64_t bytes_ = 0;
};

// Where a value built from a DUMP body goes: the engine's limits (proto-max-bulk-len,
// maxmemory), the memory account of the store it goes into, and the reservation its bytes are
// held in until they are charged.
struct ValueBuild {
  Engine& engine;
  const store::MemoryAccount& account;
  MemoryReservation& reserved;
};
// The body DUMP writes for `v` (a string's bytes, a sketch's Serialize, read under its cell's
// mutex); the ClientError "ERR DUMP does not support frames" for a frame.
Result<std::string> DumpBody(const store::Value& v);
// The value a DUMP body of `type` makes, with RESTORE's checks ("ERR Bad data format", sizes
// against proto-max-bulk-len, memory reserved before it is allocated). Also the replica store's
// install path (docs/replication.md, S6).
Result<store::ValuePtr> BuildValue(const ValueBuild& build, std::string_view key, uint16_t type,
                                   std::string_view body, int64_t expire_at_ms);

struct CommandContext {
  Engine& engine;
  Session& session;
  const std::vector<std::string_view>& args;
  resp::ReplyWriter& out;
  int worker;
  int64_t now_ms;
  const CommandSpec* spec;
  bool failed = false;  // set by Error(); feeds commandstats failed_calls
  // Set when the command runs from a cached copy of its one key (routing.cc, rule C8): Lookup
  // of that key gives this value (null: absent), and the store is not read.
  const std::pair<std::string_view, store::ValuePtr>* pinned = nullptr;
  // What this command has reserved against maxmemory (CheckAllocation), given back when the
  // command ends: by then its allocations are charged to the store, or were never made.
  MemoryReservation reserved;

  store::Store& store() { return engine.store(); }
  WorkerStats& stats() { return engine.stats(worker); }
  void Error(std::string_view text) {
    failed = true;
    out.Error(text);
  }
  void Error(const Status& status) { Error(ErrorReplyText(status)); }
  void WrongType() { Error(kWrongType); }
  void SyntaxError() { Error("ERR syntax error"); }
  void NotInteger() { Error("ERR value is not an integer or out of range"); }
  // Session internals that connection and transaction commands change (session.cc).
  int& protocol();
  bool& authenticated();
  bool& close();
  // RESET: back to RESP2, not in MULTI, nothing watched, no name; authenticated again only if
  // no password is required.
  void ResetSession();
  // Runs a queued command inside EXEC (the exclusive section is already held).
  void RunQueued(const std::vector<std::string>& args);
};

// ---- helpers shared by the handlers: text (strings.cc), globs (glob.cc), the keyspace
// (keys.cc), HELP replies (commands.cc) ----

// Redis's string2ll: strict, no spaces, no leading '+', no leading zeros. The same parser as
// base's ParseDecimalInt64, which it calls: the project has one integer parser.
bool ParseInt64(std::string_view s, int64_t* out);
// Redis's string2ld-like float parsing for INCRBYFLOAT: rejects spaces, empty, nan.
bool ParseLongDouble(std::string_view s, long double* out);
// Redis's string2d (RedisModule_StringToDouble, what RedisBloom parses rates with): the whole
// string, no leading space, no NaN, no overflow and no underflow to zero.
bool ParseRedisDouble(std::string_view s, double* out);
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
std::string ToLower(std::string_view s);
// Redis's stringmatchlen: *, ?, [...] with ranges and ^, backslash escapes.
bool GlobMatch(std::string_view pattern, std::string_view text, bool nocase = false);

// The current value of `key`, or null if absent or expired. An expired value met here is
// removed (if it is still the current one) and counted in expired_keys. Counts hits/misses
// when `count_stats`.
store::ValuePtr Lookup(CommandContext& ctx, std::string_view key, bool count_stats = true);
// Whether `v` is a value `Lookup` would return at `now_ms`.
inline const store::Value* Live(const store::Value* v, int64_t now_ms) {
  return v != nullptr && !v->IsExpired(now_ms) ? v : nullptr;
}
// Makes a string value, or reports why it cannot be made.
Result<store::ValuePtr> MakeString(std::string_view key, std::string_view payload,
                                   int64_t expire_at_ms = 0);
// The reply of every HELP subcommand: its lines as simple strings.
void ReplyHelp(CommandContext& ctx, std::span<const char* const> lines);
// OOM check for denyoom commands.
bool OverMemoryLimit(Engine& engine);
// Redis reads a SCAN cursor with strtoul: an optional sign (a negative cursor wraps around),
// decimal digits, nothing else; an empty string is 0.
bool ParseCursor(std::string_view s, uint64_t* out);

// ---- the cluster (routing.cc) ----

// Commands without keys that act on the whole keyspace: they ask every node (rule C2), or,
// inside a transaction sent to a home, act on that node.
bool KeyspaceWide(Handler h);
// Every key a command names: the table's key positions, and CMS.MERGE's sources.
void CommandKeys(const CommandSpec& spec, const std::vector<std::string_view>& args,
                 std::vector<std::string_view>* keys);
// The keys a write changes: CommandKeys less a merge's sources (PFMERGE, HLL.UNION,
// CMS.MERGE write their first key only). Capture (docs/replication.md S1) takes these.
void WrittenKeys(const CommandSpec& spec, const std::vector<std::string_view>& args,
                 std::vector<std::string_view>* keys);
// A key's TYPE and HLL.EXPORT replies, from its home.
struct TypedExport {
  const resp::Reply* type = nullptr;
  const resp::Reply* exported = nullptr;
};
// PFCOUNT of keys held by several nodes: the union's estimate, or PFCOUNT's error.
Result<int64_t> PfCountOfExports(const std::vector<TypedExport>& keys);
// INFO's cluster section, its "# Cluster" title included (cmd_cluster.cc).
void ClusterInfoSection(Engine& engine, std::string* out);
// INFO's frames section (frames and jobs), its "# Frames" title included (cmd_frame.cc).
void FramesInfoSection(Engine& engine, std::string* out);

// Handlers, one file per group.
#define FLOE_HANDLER(name) void name(CommandContext& ctx)
// connection
FLOE_HANDLER(CmdPing);
FLOE_HANDLER(CmdEcho);
FLOE_HANDLER(CmdHello);
FLOE_HANDLER(CmdAuth);
FLOE_HANDLER(CmdQuit);
FLOE_HANDLER(CmdReset);
FLOE_HANDLER(CmdSelect);
FLOE_HANDLER(CmdClientId);
FLOE_HANDLER(CmdClientGetName);
FLOE_HANDLER(CmdClientSetName);
FLOE_HANDLER(CmdClientList);
FLOE_HANDLER(CmdClientInfo);
FLOE_HANDLER(CmdClientKill);
FLOE_HANDLER(CmdClientHelp);
// server
FLOE_HANDLER(CmdInfo);
FLOE_HANDLER(CmdConfigGet);
FLOE_HANDLER(CmdConfigSet);
FLOE_HANDLER(CmdConfigHelp);
FLOE_HANDLER(CmdConfigResetStat);
FLOE_HANDLER(CmdDbSize);
FLOE_HANDLER(CmdFlushDb);
FLOE_HANDLER(CmdTime);
FLOE_HANDLER(CmdCommand);
FLOE_HANDLER(CmdCommandCount);
FLOE_HANDLER(CmdCommandInfo);
FLOE_HANDLER(CmdCommandDocs);
FLOE_HANDLER(CmdCommandGetKeys);
FLOE_HANDLER(CmdCommandList);
FLOE_HANDLER(CmdCommandHelp);
// cluster
FLOE_HANDLER(CmdClusterInfo);
FLOE_HANDLER(CmdClusterLeave);
FLOE_HANDLER(CmdClusterForget);
FLOE_HANDLER(CmdClusterMyId);
FLOE_HANDLER(CmdClusterNodes);
FLOE_HANDLER(CmdClusterSlots);
FLOE_HANDLER(CmdClusterShards);
FLOE_HANDLER(CmdClusterKeySlot);
FLOE_HANDLER(CmdClusterCountKeysInSlot);
FLOE_HANDLER(CmdClusterGetKeysInSlot);
FLOE_HANDLER(CmdClusterHelp);
// strings
FLOE_HANDLER(CmdGet);
FLOE_HANDLER(CmdSet);
FLOE_HANDLER(CmdSetNx);
FLOE_HANDLER(CmdSetEx);
FLOE_HANDLER(CmdPSetEx);
FLOE_HANDLER(CmdGetSet);
FLOE_HANDLER(CmdGetDel);
FLOE_HANDLER(CmdGetEx);
FLOE_HANDLER(CmdMGet);
FLOE_HANDLER(CmdMSet);
FLOE_HANDLER(CmdMSetNx);
FLOE_HANDLER(CmdIncr);
FLOE_HANDLER(CmdDecr);
FLOE_HANDLER(CmdIncrBy);
FLOE_HANDLER(CmdDecrBy);
FLOE_HANDLER(CmdIncrByFloat);
FLOE_HANDLER(CmdAppend);
FLOE_HANDLER(CmdStrLen);
FLOE_HANDLER(CmdGetRange);
FLOE_HANDLER(CmdSetRange);
// keyspace
FLOE_HANDLER(CmdDel);
FLOE_HANDLER(CmdExists);
FLOE_HANDLER(CmdType);
FLOE_HANDLER(CmdKeys);
FLOE_HANDLER(CmdScan);
FLOE_HANDLER(CmdRandomKey);
FLOE_HANDLER(CmdRename);
FLOE_HANDLER(CmdRenameNx);
FLOE_HANDLER(CmdExpire);
FLOE_HANDLER(CmdPExpire);
FLOE_HANDLER(CmdExpireAt);
FLOE_HANDLER(CmdPExpireAt);
FLOE_HANDLER(CmdTtl);
FLOE_HANDLER(CmdPTtl);
FLOE_HANDLER(CmdExpireTime);
FLOE_HANDLER(CmdPExpireTime);
FLOE_HANDLER(CmdPersist);
FLOE_HANDLER(CmdDump);
FLOE_HANDLER(CmdRestore);
FLOE_HANDLER(CmdTouch);
FLOE_HANDLER(CmdObjectEncoding);
FLOE_HANDLER(CmdObjectHelp);
// sketches
FLOE_HANDLER(CmdHllCreate);
FLOE_HANDLER(CmdHllAdd);
FLOE_HANDLER(CmdHllAddHash);
FLOE_HANDLER(CmdHllCount);
FLOE_HANDLER(CmdHllUnion);
FLOE_HANDLER(CmdHllExport);
FLOE_HANDLER(CmdHllImport);
FLOE_HANDLER(CmdHllInfo);
FLOE_HANDLER(CmdPfAdd);
FLOE_HANDLER(CmdPfCount);
FLOE_HANDLER(CmdPfMerge);
FLOE_HANDLER(CmdBfReserve);
FLOE_HANDLER(CmdBfAdd);
FLOE_HANDLER(CmdBfMAdd);
FLOE_HANDLER(CmdBfInsert);
FLOE_HANDLER(CmdBfExists);
FLOE_HANDLER(CmdBfMExists);
FLOE_HANDLER(CmdBfInfo);
FLOE_HANDLER(CmdBfCard);
FLOE_HANDLER(CmdCmsInitByDim);
FLOE_HANDLER(CmdCmsInitByProb);
FLOE_HANDLER(CmdCmsInitRange);
FLOE_HANDLER(CmdCmsIncrBy);
FLOE_HANDLER(CmdCmsQuery);
FLOE_HANDLER(CmdCmsInfo);
FLOE_HANDLER(CmdCmsMerge);
FLOE_HANDLER(CmdCmsRange);
FLOE_HANDLER(CmdCmsQuantile);
// frames and jobs
FLOE_HANDLER(CmdFrameImport);
FLOE_HANDLER(CmdFrameList);
FLOE_HANDLER(CmdFrameDrop);
FLOE_HANDLER(CmdFrameInfo);
FLOE_HANDLER(CmdFrameHead);
FLOE_HANDLER(CmdFrameSummary);
FLOE_HANDLER(CmdFrameQuantile);
FLOE_HANDLER(CmdFrameGroupBy);
FLOE_HANDLER(CmdFrameSelect);
FLOE_HANDLER(CmdFrameFilter);
FLOE_HANDLER(CmdFrameExport);
FLOE_HANDLER(CmdJobStatus);
FLOE_HANDLER(CmdJobCancel);
FLOE_HANDLER(CmdJobList);
// transactions
FLOE_HANDLER(CmdMulti);
FLOE_HANDLER(CmdExec);
FLOE_HANDLER(CmdDiscard);
FLOE_HANDLER(CmdWatch);
FLOE_HANDLER(CmdUnwatch);
#undef FLOE_HANDLER

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_COMMAND_H_
