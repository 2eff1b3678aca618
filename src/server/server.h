// server: a Floe node that speaks the Redis protocol.
//
//   Config    the node's settings; Settings() is the table that defines them (name, range,
//             default, help) for the flags, the config file and CONFIG GET/SET
//   Engine    the node without sockets: the store, the command table, clients, statistics
//   Session   one client's state (protocol, auth, name, MULTI queue, WATCHed keys); runs
//             commands and writes replies. In-process tests drive a Session directly.
//   Server    listeners and I/O threads on Asio; `floe serve` is Server::Run
//
// Threads: the Engine is shared by every I/O thread and is thread-safe. A Session belongs to
// the thread that owns its connection. Commands run on that thread; a command flagged
// "exclusive" (EXEC, MSET, RENAME, FLUSHALL, ...) first stops the other I/O threads between
// commands (Engine::ExclusiveSection), which is how multi-key commands and transactions are
// atomic while single-key commands run in parallel on the lock-free store.

#ifndef FLOE_SERVER_SERVER_H_
#define FLOE_SERVER_SERVER_H_

#include <atomic>
#include <bit>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <initializer_list>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "base/base.h"
#include "job/job.h"
#include "resp/resp.h"
#include "store/store.h"

namespace asio {
class io_context;
}  // namespace asio

namespace floe::frame {
class Frame;
}  // namespace floe::frame

namespace floe::dkv {
class Dkv;
struct Fetch;
}  // namespace floe::dkv

namespace floe::server {

// Value type ids stored in the store.
enum class ValueType : uint16_t {
  kString = 1,
  kHll = 2,            // PostgreSQL hll storage bytes (HLL.*, PF*)
  kCountMin = 3,       // sketch::CountMin (CMS.INITBYDIM / INITBYPROB)
  kRangeCountMin = 4,  // sketch::RangeCountMin (CMS.INITRANGE)
  kBloom = 5,          // sketch::BloomFilter (BF.*)
  kFrame = 6,          // a frame::Frame (FRAME.*, docs/frame.md "Frames in the store")
};

// The version of Floe (`floe --version`, INFO's floe_version, the start-up log line).
inline constexpr char kFloeVersion[] = "0.1.0";
// FRAME.GROUPBY's limits (the command and the HTTP endpoint check the same). Its time grows with
// the aggregates and it runs on the calling I/O thread (docs/frame.md): 1,000 aggregates over 3M
// rows held a node for 18 s.
inline constexpr size_t kMaxGroupByKeys = 32;
inline constexpr size_t kMaxGroupByAggregates = 100;
inline constexpr char kGroupByLimitsError[] = "ERR at most 32 keys and 100 aggregates";
// The Redis version whose semantics Floe follows (INFO's redis_version, HELLO's version).
inline constexpr char kRedisVersion[] = "7.0.0";

// The node's settings. Their names, ranges and defaults are rows of the settings table
// (Settings(), config.cc); a default-constructed Config holds every row's default.
// Thread-compatible: the Engine guards its copy with a mutex.
struct Config {
  Config();

  std::string bind;         // bind: addresses to listen on (space separated)
  int port;                 // port
  int threads;              // io-threads (flag --threads): 0 = one per core but one (at least 1)
  int64_t busy_poll_us;     // busy-poll-us: -1 = auto (see its row)
  std::string requirepass;  // requirepass: empty = no AUTH needed (loopback only)
  int64_t maxclients;       // maxclients
  int64_t maxmemory;        // maxmemory: bytes, 0 = no limit
  std::string maxmemory_policy;  // maxmemory-policy: only noeviction for now
  int64_t timeout;               // timeout: close clients idle this many seconds; 0 = never
  int64_t proto_max_bulk_len;    // proto-max-bulk-len
  // client-output-buffer-limit (normal clients): hard bytes, soft bytes, soft seconds; 0 = none.
  // Seconds are at most INT32_MAX, so seconds * 1000 cannot overflow.
  int64_t output_hard_limit;
  int64_t output_soft_limit;
  int64_t output_soft_seconds;
  int hz;                   // hz: active expiry cycles per second, 1-500
  std::string loglevel;     // loglevel: debug, verbose, notice, warning, nothing
  std::string config_file;  // the file the settings came from, if any
  // The cluster (docs/cluster.md): empty `cluster` = a standalone node.
  std::string cluster;            // cluster: every member's host:port, comma separated
  std::string cluster_name;       // cluster-name
  int cluster_port;               // cluster-port
  int64_t cluster_node_timeout;   // cluster-node-timeout, ms
  std::string cluster_secret;     // cluster-secret
  std::string dir;                // dir: the data directory (a member's Raft log)
  std::string join;               // join: a member's host:port to join a running cluster through
  int64_t replicas;               // replicas: backups per slot of a new cluster (0-8)
  int64_t min_replicas_to_write;  // min-replicas-to-write: 0 = never refuse
  // The ownership lease, ms (docs/membership.md, O1). Not an option: every member must use the
  // same value, since the leader fails a member over by its own; tests set it alike on all.
  int64_t cluster_owner_lease = 1000;
  std::string import_dir;  // import-dir: what FRAME.IMPORT may read; empty: ImportDir()
  std::string export_dir;  // export-dir: where FRAME.EXPORT may write; empty: off
  // HTTP (src/http, docs/api.md): -1 = port + 1000 (off when that is not a port), 0 = off.
  int http_port;                 // http-port
  std::string http_bind;         // http-bind: addresses for HTTP; same protected-mode rule as bind
  int64_t http_idle_timeout;     // http-idle-timeout, ms: an idle keep-alive connection closes
  int64_t http_request_timeout;  // http-request-timeout, ms: a started request must be in (408)
};

// The directory FRAME.IMPORT reads and HTTP uploads land under: import-dir, or by default
// <dir>/import, a directory of its own (docs/frame.md, FRAME.IMPORT): any local program may
// connect to a passwordless loopback node, so the default must not be a directory that holds
// other files of whoever runs it (the working directory did: a home's .ssh/id_rsa read back
// through FRAME.HEAD).
std::string ImportDir(const Config& config);

// One row of the settings table: everything the `floe serve` flags, the config file, CONFIG
// GET/SET and `floe serve --help` know about a setting. Adding a setting is adding a row
// (and a Config field unless its value is fixed).
struct Setting {
  enum class Kind : uint8_t {
    kInteger,      // a decimal integer in [min, max], then clamped to [clamp_min, clamp_max]
    kMemory,       // bytes, with an optional unit (ParseMemory), in [min, max]
    kChoice,       // one of `choices`, case-insensitive; stored lowercase
    kText,         // any text
    kOutputLimit,  // "<class> <hard> <soft> <seconds>"..., Redis's client-output-buffer-limit
  };
  using Field =
      std::variant<std::monostate, int Config::*, int64_t Config::*, std::string Config::*>;

  std::string_view name;  // CONFIG and config-file name, lowercase
  Kind kind = Kind::kText;
  Field field;  // where Config keeps the value; none: the value is fixed (choices[0])
  std::string_view default_value;  // what a default-constructed Config holds
  int64_t min = 0, max = 0;        // kInteger, kMemory: values outside are refused
  int64_t clamp_min = INT64_MIN, clamp_max = INT64_MAX;  // kInteger: accepted, then clamped
  std::span<const std::string_view> choices = {};        // kChoice
  bool runtime = false;                                  // CONFIG SET may change it
  bool cli = true;                                       // `floe serve` has a flag for it
  std::string_view flag = {};                            // the flag's name when it is not --<name>
  std::string_view env = {};  // an environment variable the flag also reads
  std::string_view help;
};

// The settings table, sorted by name. Immutable (constexpr), so any thread may read it.
std::span<const Setting> Settings();
// Case-insensitive; nullptr if there is no such setting.
const Setting* FindSetting(std::string_view name);
// Parses `value` for `setting` and stores it in *config. InvalidArgument with Redis's text
// ("argument must be between 0 and 2147483647 inclusive", ...) when the value is refused;
// *config is unchanged then.
Status ApplySetting(const Setting& setting, std::string_view value, Config* config);
// The value as CONFIG GET shows it.
std::string SettingValue(const Setting& setting, const Config& config);

// Parses a memory amount the way Redis does: a plain number of bytes or one with a unit
// (b, k, kb, m, mb, g, gb; case-insensitive; k = 1000, kb = 1024). Never overflows.
Result<int64_t> ParseMemory(std::string_view text);
// The addresses of a `bind` value: space separated, empty parts dropped.
std::vector<std::string> BindAddresses(std::string_view bind);
// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopbackAddress(std::string_view address);
// Redis's log level names (debug, verbose, notice, warning, nothing) as spdlog levels.
Result<LogLevel> RedisLogLevel(std::string_view name);
// The start-up checks: every setting in its range, at least one bind address, and
// loopback-only without a password (protected mode).
Status ValidateConfig(const Config& config);
// Reads a Redis-style config file into *config: one `name value` per line (the settings'
// names), `#` comments, values may be quoted. Unknown names and bad values are errors naming
// the file and line; *config is unchanged then.
Status LoadConfigFile(const std::string& path, Config* config);

class Engine;
struct ClientState;

// The keys sessions WATCH while they are absent, and how often each was touched since. A
// watched key that was present is checked by its value's version; an absent one has no value
// to carry a version, so a write command naming it while it exists before or after the
// command counts a touch here (Redis marks such a key dirty too). Thread-safe.
class AbsentWatches {
 public:
  // Registers one more watcher of `key`; returns the key's touch count now.
  uint64_t Watch(std::string_view key);
  void Unwatch(std::string_view key);
  uint64_t Touches(std::string_view key) const;
  bool Watched(std::string_view key) const;
  void Touch(std::string_view key);
  // Cheap check on every write command.
  bool empty() const { return keys_watched_.load(std::memory_order_relaxed) == 0; }

 private:
  struct Entry {
    uint64_t watchers = 0;
    uint64_t touches = 0;
  };
  mutable Mutex mu_;
  std::map<std::string, Entry, std::less<>> keys_ FLOE_GUARDED_BY(mu_);
  std::atomic<size_t> keys_watched_{0};
};
namespace internal {
class ClusterNode;
class Replication;
struct ForwardQueues;
struct CommandContext;
struct CommandSpec;
struct AnalyticsTask;
class AnalyticsPool;
void CmdMulti(CommandContext&);
void CmdExec(CommandContext&);
void CmdDiscard(CommandContext&);
void CmdWatch(CommandContext&);
void CmdUnwatch(CommandContext&);
enum class AnalyticsWaits;
void RunAnalytics(CommandContext&,
                  std::function<std::function<void(CommandContext&)>(const std::atomic<bool>*)>,
                  AnalyticsWaits);
bool FinishAnalytics(CommandContext&);
// Held replies (docs/replication.md, wiring step 4): a change `n` of `slot` a reply waits for
// (H1: the command's own, or the last one a read may have seen), and how a hold ended.
struct CommitWait {
  uint16_t slot = 0;
  uint64_t n = 0;
};
enum class HoldEnd { kCommitted, kTimedOut, kAborted };
// The answer of a held reply whose hold could not begin (memory): the outcome is unknown.
inline constexpr char kHeldWriteLost[] =
    "-TIMEOUT out of memory while the change waited for its backups: it may or may not have been "
    "applied\r\n";
inline constexpr char kHeldReadLost[] =
    "-CLUSTERDOWN out of memory while the value read waited for its backups\r\n";
}  // namespace internal

// One client's connection state. Owned by one thread.
class Session {
 public:
  // `worker` is the index of the I/O thread that owns the session (0 in tests).
  Session(Engine* engine, int worker, std::string addr = "127.0.0.1:0",
          std::string laddr = "127.0.0.1:0");
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Runs one command and appends its reply to `out` (in the session's protocol version). In a
  // cluster a command may wait for another node (docs/cluster.md, rule C3): with a reply sink
  // set, Execute then returns false and the reply goes to the sink later, from another
  // thread; the caller runs nothing else on this session until it has. Without a sink,
  // Execute waits for the reply itself (tests, tools).
  //
  // With a sink the caller may go on running the commands that follow while replies are
  // outstanding; it must deliver replies in command order (the connection's reply slots). The
  // session keeps the order of execution that matters: a client's requests to one home run
  // there in order, and everything else runs here at once.
  bool Execute(const std::vector<std::string_view>& args, std::string* out);
  // `ticket` numbers the deferred commands of this session from 1; last_ticket() is the one of
  // the last command Execute deferred.
  using ReplySink = std::function<void(uint64_t ticket, std::string reply)>;
  void set_reply_sink(ReplySink sink) { sink_ = std::move(sink); }
  uint64_t last_ticket() const { return tickets_; }
  // The bytes of the commands the last deferred command sent to other nodes: their copies are
  // held until the homes answer (a transaction's whole batch, though EXEC is a few bytes).
  size_t last_deferred_bytes() const { return deferred_bytes_; }
  // A transaction sent to a home has connection commands that run here once it answers: the
  // caller runs nothing more on this session until FinishDeferred has run them (a CLIENT
  // SETNAME or HELLO in it applies to the commands after EXEC).
  // So does a change at this home waiting for the cached copies of its keys to be invalidated
  // (rule C7): what the client sends next must see it.
  // So does a frames analytics command running on the analytics pool (docs/frame.md, A2).
  bool local_part_pending() const {
    return !local_parts_.empty() || !home_changes_.empty() || !part_changes_.empty() ||
           !analytics_.empty();
  }
  // The caller hands every deferred reply through this, on the session's thread, before it
  // delivers it: a transaction's commands that run here are merged into its EXEC reply.
  // A change run here once its keys were reserved (rule C7), or an analytics command's last
  // step, may then wait for its slot's backups (docs/replication.md, H3): `held` is then set,
  // the reply is empty, and the sink brings the same ticket again with its reply.
  std::string FinishDeferred(uint64_t ticket, std::string reply, bool* held);
  // For tests only: called inside the command boundary before every handler runs, so a test
  // can make a handler throw and observe the safety net. Not a command: COMMAND lists nothing.
  void TEST_SetBeforeHandler(std::function<void(std::string_view command)> hook) {
    before_handler_ = std::move(hook);
  }
  // For tests: runs one command and returns the raw reply bytes.
  std::string Run(std::initializer_list<std::string_view> args);
  std::string Run(const std::vector<std::string>& args);

  int protocol() const { return protocol_; }
  // Cluster: a session a home runs for a client of another node (a proxy session). It runs
  // every command here, never forwards, and refuses keys this node is not home to.
  // It is authenticated: the client authenticated at its own node, and only members (with
  // the cluster secret off loopback) can open one.
  void set_proxy() {
    proxy_ = true;
    authenticated_ = true;
  }
  bool proxy() const { return proxy_; }
  // Cluster, rule C9: the client reads its replies from a connection, which calls
  // ReleaseForwards whenever its replies move on, with the bytes it holds unwritten (ready to
  // write or being written) and `held` (those and the ready replies waiting behind one still to
  // come). A home that stopped short at its answer budget is sent the rest only once the client
  // holds less than the budget (or, with nothing unwritten, if it owes the oldest reply).
  // `wake` (any thread) makes the connection call ReleaseForwards soon; it is called after every
  // answer from a home while one is held back.
  void set_forward_waker(std::function<void()> wake) { forward_waker_ = std::move(wake); }
  void ReleaseForwards(size_t unwritten, size_t held);
  // Between MULTI and its EXEC or DISCARD.
  bool in_multi() const { return in_multi_; }
  // Ends an open MULTI as DISCARD does, with no command run (the transaction is gone before
  // anything that may allocate): a proxy session whose request failed part way.
  void EndTransaction();
  // A proxy session's current request: from `node`, sent at its clock reading `sent_us`, after
  // it dropped its copies of the keys the request changes (docs/coherence.md, X4).
  void set_request_origin(uint32_t node, uint64_t sent_us) {
    origin_node_ = node;
    origin_sent_us_ = sent_us;
  }
  // A proxy session answers in its client's protocol, which the client's node sends.
  void set_protocol(int protocol);
  // Whether the session WATCHes keys (or lost them: BreakWatches).
  bool watching() const { return !watched_.empty() || watch_broken_; }
  // The client's WATCHes were held here and are lost (this node restarted or dropped the
  // proxy session): the next EXEC aborts as if a watched key had changed.
  void BreakWatches() { watch_broken_ = true; }
  bool authenticated() const { return authenticated_; }
  // QUIT, CLIENT KILL or a fatal limit asked for the connection to close after this reply.
  bool close_requested() const;
  uint64_t id() const;
  ClientState& state() { return *state_; }

 private:
  friend struct internal::CommandContext;
  // The transaction commands work on the MULTI queue and the watched keys.
  friend void internal::CmdMulti(internal::CommandContext&);
  friend void internal::CmdExec(internal::CommandContext&);
  friend void internal::CmdDiscard(internal::CommandContext&);
  friend void internal::CmdWatch(internal::CommandContext&);
  friend void internal::CmdUnwatch(internal::CommandContext&);
  // Frames analytics defer their replies to the analytics pool (analytics_pool.cc).
  friend void internal::RunAnalytics(
      internal::CommandContext&,
      std::function<std::function<void(internal::CommandContext&)>(const std::atomic<bool>*)>,
      internal::AnalyticsWaits);
  friend bool internal::FinishAnalytics(internal::CommandContext&);
  void ExecuteLocked(const std::vector<std::string_view>& args, std::string* out);
  void Dispatch(const std::vector<std::string_view>& args, resp::ReplyWriter& out, int64_t now_ms);
  // Runs a resolved command; takes the exclusive section if it needs one and none is held.
  void Call(const internal::CommandSpec* spec, const std::vector<std::string_view>& args,
            resp::ReplyWriter& out, bool exclusive_held, int64_t now_ms);
  // Runs the handler inside the safety net: an exception becomes an error reply.
  void RunHandler(internal::CommandContext& ctx);
  // In a cluster, runs a change to keys homed here only once no other node holds a cached
  // copy of them (rule C7, home_changes.cc): at once when none does; otherwise a top-level command
  // is deferred until their holders are invalidated, a split command's part is left to
  // SendParts (part_reservation_), and in a session without a sink the part waits here. False:
  // the command did not run now (it is counted when it runs).
  bool RunAtHome(internal::CommandContext& ctx);
  // The keys a write at home may change (a write's own; for EXEC, those of its queued writes),
  // and whether one of them names no key (FLUSHALL, FLUSHDB: it changes them all). With
  // `written` (capture, S1), only the keys it writes: a merge's sources are read, not written.
  void HomeKeys(const internal::CommandContext& ctx, std::vector<std::string_view>* keys, bool* all,
                bool written = false) const;
  // Runs a change at its home with its keys held (every path of RunAtHome, docs/replication.md
  // S2): where a slot it writes is replicated, its change is numbered before the handler runs
  // and each written key's state handed to the Sender after it. With no replicated slot the
  // cost is one branch.
  void RunHandlerAtHome(internal::CommandContext& ctx);
  void RunCaptured(internal::CommandContext& ctx);
  // S11: whether every slot the write changes has at least `min` in-sync backups here.
  bool EnoughBackups(const internal::CommandContext& ctx, int64_t min) const;
  void RefuseAtHome(internal::CommandContext& ctx, std::string_view why);
  // Held replies (held_replies.cc, docs/replication.md H1-H6). A read at home notes the slots
  // whose last change it may have seen and that have not committed (S9).
  void NoteReadWaits(const internal::CommandContext& ctx);
  // The reply a hold delivers: the bytes, or the error of how it ended, made in advance.
  struct HeldReply {
    std::function<void(std::string)> deliver;
    std::shared_ptr<ClientState> client;  // closed if the reply cannot be delivered
    std::string bytes, timed_out, aborted;
    void operator()(internal::HoldEnd end);
  };
  HeldReply MakeHeldReply(std::string bytes, bool write) const;
  std::string HeldReplyError(internal::HoldEnd end, bool write) const;
  // Takes the waits the command left that have not committed (false: none; the common case).
  bool TakeCommitWaits(std::vector<internal::CommitWait>* waits, bool* write);
  void ClearCommitWaits();
  // Hands the reply to the node's holds; when memory runs out, delivers the unknown-outcome
  // error at once instead.
  static void HoldOrFail(internal::Replication& r, std::vector<internal::CommitWait> waits,
                         HeldReply reply);
  // H2: the reply ExecuteLocked wrote after `mark` waits for the command's commit waits.
  void HoldReply(std::string* out, size_t mark);
  // H3: the deliverer of a deferred reply held again under the same ticket.
  std::function<void(std::string)> Redefer(uint64_t ticket);
  // H3: `out`, or nothing with `*held` set when the command FinishDeferred ran waits for its
  // backups (then delivered under `ticket` again).
  std::string HoldAgain(uint64_t ticket, std::string out, bool* held);
  // Forgets the watched keys (EXEC, DISCARD, UNWATCH, RESET, the end of the session).
  void ClearWatches();
  // Ends MULTI without running anything.
  void DiscardTransaction();
  // Empties queued_ and gives back its charge to used memory.
  void ClearQueued();

  // Cluster routing (routing.cc). True when the command was answered or sent to other nodes;
  // false when it runs here as on a standalone node.
  using Reject = std::function<void(std::string_view error)>;
  using Parts = std::vector<std::pair<uint32_t, std::vector<std::vector<std::string>>>>;
  bool RouteCluster(const internal::CommandSpec* spec, const std::vector<std::string_view>& args,
                    resp::ReplyWriter& out, int64_t now_ms, const Reject& reject);
  bool RouteExec(resp::ReplyWriter& out, const Reject& reject);
  // Runs the parts homed here, sends the others; the gathered reply goes to `out` when every
  // part ran here, else to the deferred reply.
  // `fetch`: the one remote part is a read that asks its home for a copy (rule C8).
  void SendParts(std::shared_ptr<void> gather, Parts parts, resp::ReplyWriter& out, int64_t now_ms,
                 std::shared_ptr<dkv::Fetch> fetch = nullptr);
  // Runs one command here, in RESP2 (or `protocol`), as a part of a split or fanned-out command.
  std::string RunPart(const std::vector<std::string>& part, int64_t now_ms, int protocol = 2);
  // Marks the current command's reply as coming later; returns where it must be delivered.
  std::function<void(std::string)> BeginDeferred();
  // A transaction sent to a home holds commands that run here once the home's EXEC has run.
  struct LocalPart {
    size_t total = 0;                                                   // queued commands in all
    std::vector<std::pair<size_t, std::vector<std::string>>> commands;  // position, command
    // Positions of the HELLO <version> also sent to the home, so that the commands after it
    // answer there in its protocol; the home's reply to it is dropped.
    std::vector<size_t> echoed;
  };
  internal::ForwardQueues& Queues();
  // UNWATCH, in order, at every home where this client WATCHes keys.
  void ForgetRemoteWatches();
  bool WatchingAt(uint32_t home) const;
  // The client left: its proxy sessions at the homes go, after its last request to each.
  void CloseRemoteSessions();

  Engine* engine_;
  int worker_;
  std::shared_ptr<ClientState> state_;
  int protocol_ = 2;
  bool authenticated_ = false;
  bool proxy_ = false;
  bool close_ = false;
  // MULTI/EXEC
  bool in_multi_ = false;
  bool multi_dirty_ = false;
  std::vector<std::vector<std::string>> queued_;
  int64_t queued_bytes_ = 0;  // charged to used memory (ChargeClientBuffers) while queued
  struct Watched {
    std::string key;
    uint64_t version;  // 0: absent (or expired) when watched
    uint64_t changes;  // in-place changes of a sketch value when watched
    uint64_t touches;  // AbsentWatches' count when watched absent
  };
  std::vector<Watched> watched_;
  bool watch_broken_ = false;  // BreakWatches
  std::function<void(std::string_view)> before_handler_;
  // Cluster state (routing.cc).
  ReplySink sink_;
  bool deferred_ = false;                      // the current command's reply comes later
  std::future<std::string> wait_;              // ... to Execute itself when there is no sink
  uint64_t tickets_ = 0;                       // deferred commands so far
  size_t deferred_bytes_ = 0;                  // last_deferred_bytes()
  std::map<uint64_t, LocalPart> local_parts_;  // by ticket
  // A change deferred until its keys' cached copies are invalidated (rule C7), by ticket.
  struct HomeReservation {
    Mutex mu;
    bool ready FLOE_GUARDED_BY(mu) = false;      // the keys are reserved for the change
    bool abandoned FLOE_GUARDED_BY(mu) = false;  // the session went first: release when ready
    bool all = false;                            // FLUSHALL, FLUSHDB: every key (Dkv::ReserveAll)
    std::vector<std::string> keys;               // sorted, distinct; for `all`, set when ready
    uint32_t writer = 0;                         // Dkv::Reserve's writer and sent_us
    uint64_t sent_us = 0;
    void Release(dkv::Dkv& d);
  };
  struct HomeChange {
    std::vector<std::string> args;
    std::shared_ptr<HomeReservation> reservation;
  };
  // A reserved change runs with home_cleared_ set (ClearedWhile, inside the worker lock) and
  // its keys released after (ReleasedAfter, outside it), however it ends: an exception that
  // skipped either left the session skipping rule C7, or the keys reserved for ever (M9).
  struct ClearedWhile {
    explicit ClearedWhile(bool* flag) : flag_(flag) { *flag_ = true; }
    ~ClearedWhile() { *flag_ = false; }
    ClearedWhile(const ClearedWhile&) = delete;
    ClearedWhile& operator=(const ClearedWhile&) = delete;
    bool* flag_;
  };
  struct ReleasedAfter {
    ReleasedAfter(Engine* engine, HomeReservation* r) : engine_(engine), r_(r) {}
    ~ReleasedAfter();
    ReleasedAfter(const ReleasedAfter&) = delete;
    ReleasedAfter& operator=(const ReleasedAfter&) = delete;
    Engine* engine_;
    HomeReservation* r_;
  };
  static void Reserve(dkv::Dkv& d, std::shared_ptr<HomeReservation> r, std::function<void()> ready);
  // The session ends with changes still waiting: their keys are released once reserved.
  void AbandonHomeChanges();
  // The same for the changes and local parts of tickets above `ticket`: a command that threw
  // after its deferral began answers its error at once, and what it left waiting never runs
  // (a reply that still comes for its ticket is an unknown one, and dropped).
  void AbandonChangesAfter(uint64_t ticket);
  // A command (ExecuteLocked's net) or a handler (RunHandler's) that threw after its deferral
  // began, `ticket` the last ticket before it: it answers at once (the net writes the error)
  // and what it left waiting is abandoned, or its connection would wait for ever.
  void EndDeferralAfter(uint64_t ticket) noexcept;
  std::map<uint64_t, HomeChange> home_changes_;
  // A split command's part homed here whose keys are being reserved, by an internal ticket
  // (kPartTicket set: no reply slot has it; the reply sink hands it back all the same).
  struct PartChange {
    std::shared_ptr<void> gather;
    size_t part = 0;
    std::vector<std::string> command;
    std::shared_ptr<HomeReservation> reservation;
  };
  static constexpr uint64_t kPartTicket = uint64_t{1} << 63;
  std::map<uint64_t, PartChange> part_changes_;
  uint64_t part_tickets_ = 0;
  std::shared_ptr<HomeReservation> part_reservation_;  // set by RunAtHome for SendParts
  bool may_defer_ = false;    // the command running is a client's own, not a part of one
  uint32_t origin_node_ = 0;  // set_request_origin
  uint64_t origin_sent_us_ = 0;
  bool running_parts_ = false;    // SendParts runs a local part (one that must wait is left to it)
  bool home_cleared_ = false;     // the running command's keys are reserved: run it as it is
  bool capturing_ = false;        // RunCaptured's scope is open: EXEC's commands are in it (S3)
  bool capture_flushed_ = false;  // a FLUSHALL or FLUSHDB ran in that scope (S2.1)
  // H1: the changes the running command's reply waits for, and whether one is its own write.
  std::vector<internal::CommitWait> commit_waits_;
  bool held_write_ = false;
  // A client's own command with a key homed elsewhere, run here from a cached copy (C8).
  const std::pair<std::string_view, store::ValuePtr>* pinned_ = nullptr;
  // Frames analytics on the analytics pool, by ticket (at most one: A7), and the one whose
  // reply FinishDeferred is writing (the handler's FinishAnalytics takes it).
  std::map<uint64_t, std::shared_ptr<internal::AnalyticsTask>> analytics_;
  internal::AnalyticsTask* finishing_ = nullptr;
  bool analytics_posted_ = false;  // the handler posted its task: Call counts it when finished
  bool running_queued_ = false;    // EXEC runs its queued commands: nothing defers (A3)
  std::function<void()> forward_waker_;              // rule C9; null: nothing is held back
  std::shared_ptr<internal::ForwardQueues> queues_;  // the requests to each home, in order
  std::vector<uint32_t> watch_homes_;                // nodes where this client WATCHes keys
  int watch_slot_ = -1;                              // the slot of the watched keys; -2: several
};

// Per-command latency (latency.cc): a log-linear histogram of nanoseconds, four buckets per
// power of two (each bucket within 25% of its values), like HdrHistogram with two bits of
// mantissa. INFO latencystats gives its percentiles, /metrics its buckets.
inline constexpr size_t kLatencyBuckets = 140;  // up to 2^36 ns (69 s); longer counts in the last
// The bucket of a duration, and the first duration of the bucket after it (exclusive bound).
// Inline: the first runs on every command, and /metrics (src/http) uses the second without
// the server's library.
inline size_t LatencyBucket(uint64_t ns) {
  if (ns < 4) return static_cast<size_t>(ns);
  const int e = 63 - std::countl_zero(ns);
  const size_t bucket = 4 * static_cast<size_t>(e - 1) + ((ns >> (e - 2)) & 3);
  return bucket < kLatencyBuckets ? bucket : kLatencyBuckets - 1;
}
inline uint64_t LatencyBucketEndNs(size_t bucket) {
  if (bucket < 4) return bucket + 1;
  const size_t e = bucket / 4 + 1;
  return (5 + bucket % 4) << (e - 2);
}
struct LatencyCounts {
  std::atomic<uint64_t> buckets[kLatencyBuckets] = {};
};

// Per-thread statistics; an I/O thread writes only its own, INFO sums them.
struct alignas(64) WorkerStats {
  WorkerStats() = default;
  ~WorkerStats();
  WorkerStats(const WorkerStats&) = delete;
  WorkerStats& operator=(const WorkerStats&) = delete;

  std::atomic<uint64_t> commands{0};
  std::atomic<uint64_t> keyspace_hits{0};
  std::atomic<uint64_t> keyspace_misses{0};
  std::atomic<uint64_t> expired_keys{0};
  std::atomic<uint64_t> net_input_bytes{0};
  std::atomic<uint64_t> net_output_bytes{0};
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> rejected_connections{0};
  std::atomic<uint64_t> rejected_calls{0};  // refused before running: unknown, arity, NOAUTH...
  // Error replies by their code word (index in internal::RedisErrorCodes(); the last counts
  // any other code), for INFO errorstats.
  static constexpr size_t kErrorCodes = 24;
  std::atomic<uint64_t> error_replies[kErrorCodes] = {};
  // Per command (index in the command table): calls, CycleNow ticks, failed calls.
  std::unique_ptr<std::atomic<uint64_t>[]> calls;
  std::unique_ptr<std::atomic<uint64_t>[]> ticks;
  std::unique_ptr<std::atomic<uint64_t>[]> failed;
  // Per command: its latency histogram, made by this worker at the command's first call here
  // (most commands are never called: their histograms take no memory); readers load it with
  // acquire. Deleted with the WorkerStats.
  std::unique_ptr<std::atomic<LatencyCounts*>[]> latency;
};

// Counts one call of command `index` that took `ticks` CycleNow ticks. Called by the worker
// that owns `stats`, under its worker lock (the histogram's only writer).
void RecordLatency(WorkerStats& stats, size_t index, uint64_t ticks);

// One command's latency, summed over the workers (CommandLatencies).
struct CommandLatency {
  std::string_view name;          // as INFO commandstats names it: "get", "config|get"
  uint64_t count = 0;             // calls counted (the sum of `buckets`)
  double sum_seconds = 0;         // their total time (commandstats' usec, in seconds)
  std::vector<uint64_t> buckets;  // kLatencyBuckets counts
};
// Every command called since the start (or CONFIG RESETSTAT), in the command table's order.
// Thread-safe; the counts of a command still running elsewhere may be a call behind.
std::vector<CommandLatency> CommandLatencies(Engine& engine);
// The `percentile` (0-100) of a command's latency in microseconds: the end of the bucket that
// holds it (Redis's latencystats reports its histogram's highest equivalent value likewise).
double LatencyPercentileUsec(const CommandLatency& latency, double percentile);
// CONFIG RESETSTAT: zeroes the statistics INFO stats, commandstats, errorstats and
// latencystats show. REQUIRES: an exclusive section (no worker counts meanwhile).
void ResetStats(Engine& engine);

// Adds to a counter that only one thread writes (a worker's, under its worker lock): a plain
// load and store, no locked read-modify-write. Readers (INFO) may see it a moment late.
inline void Bump(std::atomic<uint64_t>& counter, uint64_t n = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// What CLIENT LIST and CLIENT KILL see of a connection. Thread-safe: fields written by the
// owning thread are atomics or guarded by `mu`.
struct ClientState {
  uint64_t id = 0;
  std::string addr;
  std::string laddr;
  int64_t created_ms = 0;
  std::atomic<int64_t> last_interaction_ms{0};
  std::atomic<int> protocol{2};
  std::atomic<int> multi{-1};  // queued commands, -1 when not in MULTI
  std::atomic<const char*> last_command{"NULL"};
  std::atomic<bool> kill_requested{false};
  std::atomic<size_t> output_pending{0};  // bytes waiting to be written
  std::atomic<int> fd{-1};
  Mutex mu;
  std::string name FLOE_GUARDED_BY(mu);
  // Set by the connection: asks its owning thread to close it. Empty for in-process sessions.
  std::function<void()> closer FLOE_GUARDED_BY(mu);
};

class Engine {
 public:
  // `workers`: the number of I/O threads that will run sessions (at least 1).
  explicit Engine(Config config, int workers = 1);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  store::Store& store() { return store_; }
  // The I/O threads; one more worker runs the proxy sessions of a cluster (proxy_worker()).
  int workers() const { return static_cast<int>(worker_locks_.size()) - 1; }
  int proxy_worker() const { return workers(); }
  // 0 <= worker <= proxy_worker().
  WorkerStats& stats(int worker) { return *stats_[static_cast<size_t>(worker)]; }
  // The node's part in a cluster; null for a standalone node. Set by ClusterNode::Start before
  // its endpoint starts, cleared after it stopped (no RPC thread reads it then).
  internal::ClusterNode* cluster() const { return cluster_.load(std::memory_order_acquire); }
  void set_cluster(internal::ClusterNode* node) { cluster_.store(node, std::memory_order_release); }
  // The node's replica store and the Sender of its replicated slots (docs/replication.md,
  // "Wiring into the server"): made with the engine of a cluster member (a non-empty
  // config.cluster), null for a standalone node.
  internal::Replication* replication() const { return replication_.get(); }
  // The bytes of the replica store (other owners' keys backed up here) and of the changes this
  // member's backups have not acknowledged yet: part of used memory.
  int64_t ReplicaStoreBytes() const;

  // A copy of the current configuration (CONFIG SET may change it).
  Config config() const;
  // The port the listener bound (`--port 0` picks one): what INFO's tcp_port and everything
  // named by the node's port (the HTTP upload directory) show from then on.
  void SetBoundPort(int port);
  // The hot settings, readable without the config mutex.
  int64_t maxmemory() const { return maxmemory_.load(std::memory_order_relaxed); }
  int64_t maxclients() const { return maxclients_.load(std::memory_order_relaxed); }
  int64_t min_replicas_to_write() const { return min_replicas_.load(std::memory_order_relaxed); }
  int64_t proto_max_bulk_len() const { return proto_max_bulk_len_.load(std::memory_order_relaxed); }
  struct OutputLimits {
    int64_t hard, soft, soft_seconds;
  };
  OutputLimits output_limits() const {
    return {output_hard_.load(std::memory_order_relaxed),
            output_soft_.load(std::memory_order_relaxed),
            output_soft_seconds_.load(std::memory_order_relaxed)};
  }
  bool requires_auth() const { return requires_auth_.load(std::memory_order_relaxed); }
  bool CheckPassword(std::string_view password) const;
  // CONFIG SET: applies every (name, value) or none. On failure *failed names the parameter;
  // NotFound for an unknown name, otherwise the message says what is wrong with the value.
  Status SetConfig(const std::vector<std::pair<std::string_view, std::string_view>>& changes,
                   std::string* failed);

  // Memory used by the store, by client input buffers and by detached frames (frames dropped
  // while a reader holds them), refreshed at most once a millisecond.
  // In a cluster, cached copies count too and are trimmed first when over maxmemory; the trim
  // takes the DKV's locks, so only a caller holding none of them (nor a value's cell) passes
  // `may_trim_copies` (Dispatch's check). Any other (a handler inside a change at the home,
  // which holds its keys' DKV locks) counts the copies as gone and leaves the trim to the next.
  int64_t UsedMemory(bool may_trim_copies = false);
  // Client input buffers are charged to used memory as Redis charges query buffers: a
  // connection adds the bytes it allocates and subtracts them when it frees them.
  void ChargeClientBuffers(int64_t delta) {
    // relaxed: a statistic; UsedMemory may see it a moment late.
    client_buffers_.fetch_add(delta, std::memory_order_relaxed);
    // Seen by the next maxmemory check, not only after the next refresh: a pipeline can queue
    // many large commands within one millisecond.
    used_memory_.fetch_add(delta, std::memory_order_relaxed);
  }
  int64_t client_buffer_bytes() const { return client_buffers_.load(std::memory_order_relaxed); }

  // Memory promised to allocations that commands are about to make (CheckAllocation, in
  // server/internal/sketch_cell.h). Every maxmemory check counts it with used memory, so large
  // allocations checked at once on different threads cannot all pass against a figure that
  // holds none of them yet. TryReserveMemory adds `bytes` if used + reserved + bytes stays
  // within `limit`, and otherwise adds nothing and returns false; ReleaseMemory gives bytes back
  // once their allocation is charged to the store, or abandoned. Overflow-safe for any
  // 0 <= bytes <= limit.
  bool TryReserveMemory(int64_t bytes, int64_t used, int64_t limit);
  void ReleaseMemory(int64_t bytes) {
    reserved_memory_.fetch_sub(bytes, std::memory_order_acq_rel);
  }
  int64_t reserved_memory() const { return reserved_memory_.load(std::memory_order_acquire); }
  // Used memory measured now (store, client buffers, cached copies, detached frames, the chunk
  // store), trimming
  // nothing: what a
  // large allocation is checked against, where UsedMemory's figure may be a millisecond old.
  int64_t UsedMemoryNow() const;

  // Exceptions that escaped a command handler and became an error reply (the safety net at
  // the command boundary, session.cc). Tests and fuzzers treat any as a failure.
  uint64_t internal_errors() const { return internal_errors_.load(std::memory_order_relaxed); }
  void CountInternalError() { internal_errors_.fetch_add(1, std::memory_order_relaxed); }

  // Client registry.
  std::shared_ptr<ClientState> RegisterClient(std::string addr, std::string laddr);
  void UnregisterClient(uint64_t id);
  std::vector<std::shared_ptr<ClientState>> Clients() const;
  size_t ClientCount() const { return client_count_.load(std::memory_order_relaxed); }

  // The worker lock a session holds while it runs a command. An exclusive section takes them
  // all, in index order, so no command runs anywhere else meanwhile.
  Mutex& worker_lock(int worker) { return worker_locks_[static_cast<size_t>(worker)]; }
  class ExclusiveSection {
   public:
    explicit ExclusiveSection(Engine* engine);
    ~ExclusiveSection();
    ExclusiveSection(const ExclusiveSection&) = delete;
    ExclusiveSection& operator=(const ExclusiveSection&) = delete;

   private:
    Engine* engine_;
  };

  AbsentWatches& absent_watches() { return absent_watches_; }

  // Long-running work (FRAME.IMPORT), on threads of its own (src/job). Thread-safe.
  job::Registry& jobs() { return *jobs_; }
  // Frames analytics, off the I/O threads (internal/analytics_pool.h). Thread-safe.
  internal::AnalyticsPool& analytics() { return *analytics_; }
  // Pieces of streamed HTTP answers (a frame's CSV) whose rows are wide are made on threads of
  // their own (one a core, started with the first), off the I/O threads (docs/api.md, "Made
  // off the I/O thread"): runs `make` there. False, and `make` is dropped, when
  // kMaxQueuedPieces already wait or the pieces are stopped: the caller makes the piece itself.
  // Thread-safe.
  static constexpr size_t kMaxQueuedPieces = 64;
  bool PostPiece(std::function<void()> make);
  // Drops the pieces waiting and joins the thread; PostPiece fails afterwards. Server::Run calls
  // it after the front ends' Close, before the I/O threads' io_contexts go.
  void StopPieces();
  // The frames in the store and their bytes, for INFO's frames section: a frame value's cell
  // adds itself when made and takes itself away when it dies (relaxed atomics, statistics).
  // stored_charge is what those cells charge the store; live_charge is the charge of every
  // frame the store made that is still alive, held by a cell or only by a reader that outlived
  // it (internal/frame_value.h, rule 3). chunks and chunk_charge are the cluster chunk store's
  // entries and their charge, part of used memory (internal/chunk_store.h, rule 3).
  struct FrameTotals {
    std::atomic<int64_t> count{0}, compressed_bytes{0}, raw_bytes{0};
    std::atomic<int64_t> stored_charge{0}, live_charge{0};
    std::atomic<int64_t> chunks{0}, chunk_charge{0};
    // Frame ids (docs/frames_cluster.md, D2): the next one's low 44 bits, counted up from the
    // engine's start in ticks of kFrameIdTickUs wall microseconds since 1970 (2^44 ticks reach
    // the year 2112, so the low bits do not wrap; a later life starts above every id of an
    // earlier one unless that life made more than a frame a tick on average); the member id
    // goes above them.
    static constexpr uint64_t kFrameIdTickUs = 256;
    std::atomic<uint64_t> next_id{WallMicros() / kFrameIdTickUs};
    // The ids of the frames whose cells live here (a cell counts once however many values
    // share it), and of the imports under way here: what FRAME_IDS_LIVE answers (D10).
    Mutex ids_mu;
    std::unordered_map<uint64_t, int> live_ids FLOE_GUARDED_BY(ids_mu);
    std::unordered_map<uint64_t, int> importing_ids FLOE_GUARDED_BY(ids_mu);
  };
  // A new frame id: this member's id (0 on one node) in the top 20 bits (D2).
  uint64_t NewFrameId();
  const std::shared_ptr<FrameTotals>& frame_totals() { return frame_totals_; }
  // The chunk store's charge (internal/chunk_store.h, rule 3): part of used memory.
  int64_t ChunkStoreBytes() const {
    // relaxed: as DetachedFrameBytes.
    const int64_t c = frame_totals_->chunk_charge.load(std::memory_order_relaxed);
    return c > 0 ? c : 0;
  }
  // Bytes of frames dropped or replaced while a reader still holds them (live - stored): part
  // of used memory until the last reader lets go.
  int64_t DetachedFrameBytes() const {
    // relaxed: a figure read as the store's is, a moment late at worst.
    const int64_t d = frame_totals_->live_charge.load(std::memory_order_relaxed) -
                      frame_totals_->stored_charge.load(std::memory_order_relaxed);
    return d > 0 ? d : 0;
  }

  int64_t start_ms() const { return start_ms_; }
  // Active expiry cursor, owned by whichever thread runs the cycle (thread 0).
  uint64_t* expire_cursor() { return &expire_cursor_; }
  // One active-expiry cycle: removes expired keys for up to `budget_us`.
  void ActiveExpireCycle(int worker, uint64_t budget_us);

 private:
  void ApplyHotSettings(const Config& c);

  store::Store store_;
  mutable Mutex config_mu_;
  Config config_ FLOE_GUARDED_BY(config_mu_);
  std::atomic<int64_t> maxmemory_{0};
  std::atomic<int64_t> maxclients_{0};
  std::atomic<int64_t> min_replicas_{0};
  std::atomic<int64_t> proto_max_bulk_len_{0};
  std::atomic<bool> requires_auth_{false};
  std::atomic<int64_t> output_hard_{0}, output_soft_{0}, output_soft_seconds_{0};
  std::atomic<int64_t> used_memory_{0};
  std::atomic<int64_t> client_buffers_{0};
  std::atomic<int64_t> reserved_memory_{0};  // TryReserveMemory's promises not yet released
  std::atomic<uint64_t> internal_errors_{0};
  std::atomic<int64_t> used_memory_at_us_{0};
  std::atomic<bool> trim_copies_{false};  // copies are over the limit: the next may_trim trims

  AbsentWatches absent_watches_;

  std::deque<Mutex> worker_locks_;
  std::vector<std::unique_ptr<WorkerStats>> stats_;

  mutable Mutex clients_mu_;
  std::map<uint64_t, std::shared_ptr<ClientState>> clients_ FLOE_GUARDED_BY(clients_mu_);
  std::atomic<uint64_t> next_client_id_{1};
  std::atomic<size_t> client_count_{0};

  int64_t start_ms_;
  uint64_t expire_cursor_ = 0;
  std::atomic<internal::ClusterNode*> cluster_{nullptr};
  std::unique_ptr<internal::Replication> replication_;
  // Shared: frame values the store frees as it dies still count themselves out.
  std::shared_ptr<FrameTotals> frame_totals_ = std::make_shared<FrameTotals>();
  // Last, so destroyed first: running jobs are cancelled and joined while the store lives.
  std::unique_ptr<job::Registry> jobs_ = std::make_unique<job::Registry>();
  // After the jobs, so destroyed before them: analytics tasks are cancelled and joined while
  // the store and the engine live (docs/frame.md, A8).
  std::unique_ptr<internal::AnalyticsPool> analytics_;
  // After the analytics: a piece's closure reads the engine (PostPiece).
  std::unique_ptr<internal::AnalyticsPool> pieces_;
};

// Another protocol served on the node's I/O threads (HTTP, src/http). The server does not know
// which: it hands each front end the threads' io_contexts. Open is called by Run() on Run's
// thread once the io_contexts exist and before any runs (a failure ends Run with it); Close is
// called on Run's thread after every I/O thread has stopped, and must drop every connection and
// session (the Engine outlives it). Handlers then run on the I/O threads as RESP's do.
class FrontEnd {
 public:
  virtual ~FrontEnd() = default;
  virtual Status Open(Engine& engine, std::span<asio::io_context* const> io) = 0;
  virtual void Close() = 0;
};

// The listeners and I/O threads. Run() blocks until SIGINT/SIGTERM or Stop().
class Server {
 public:
  // Before Run(): also serve `front_end` on the I/O threads.
  void AddFrontEnd(std::unique_ptr<FrontEnd> front_end);
  explicit Server(Config config);
  ~Server();
  // Binds, then serves until stopped. Fails if a port cannot be bound.
  Status Run();
  // Thread-safe; Run() returns soon after.
  void Stop();
  Engine& engine();
  // The port actually bound (useful with port 0), valid once Run() has bound.
  int bound_port() const { return bound_port_.load(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<int> bound_port_{0};
};

// docs/commands.md, generated from the command table.
std::string CommandsMarkdown();

// The frame stored at `name`, pinned for as long as the caller holds it (a FRAME.DROP or a
// replace meanwhile changes nothing it reads): what the HTTP front end streams as CSV. The
// FRAME.* commands' errors: "ERR no such frame", WRONGTYPE, and the refusal in a cluster.
// Thread-safe.
Result<std::shared_ptr<const frame::Frame>> PinFrame(Engine& engine, std::string_view name);

}  // namespace floe::server

#endif  // FLOE_SERVER_SERVER_H_
