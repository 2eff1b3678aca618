// A client's session: dispatch through the command table, authentication, MULTI/EXEC/WATCH,
// the exclusive section, and per-command statistics.

#include <chrono>
#include <exception>
#include <new>
#include <unordered_set>

#include "cluster/cluster.h"
#include "server/internal/analytics_pool.h"
#include "server/internal/cluster_node.h"
#include "server/internal/command.h"
#include "server/internal/sketch_cell.h"

namespace floe::server {

using internal::CommandContext;
using internal::CommandSpec;

namespace {
int64_t NowMs() { return static_cast<int64_t>(WallMicros() / 1000); }

// Lets a held lock go for a scope and takes it back however the scope ends: a command that
// threw in the exclusive section left the worker lock unlocked, and the caller's MutexLock then
// unlocked it again (undefined; ThreadSanitizer saw it under AnAllocationThatFails...).
class UnlockedWhile {
 public:
  explicit UnlockedWhile(Mutex* mu) FLOE_NO_THREAD_SAFETY_ANALYSIS : mu_(mu) { mu_->Unlock(); }
  ~UnlockedWhile() FLOE_NO_THREAD_SAFETY_ANALYSIS { mu_->Lock(); }
  UnlockedWhile(const UnlockedWhile&) = delete;
  UnlockedWhile& operator=(const UnlockedWhile&) = delete;

 private:
  Mutex* mu_;
};

std::string WrongArity(std::string_view name) {
  return "ERR wrong number of arguments for '" + std::string(name) + "' command";
}

bool ArityOk(const CommandSpec& spec, size_t argc) {
  const auto n = static_cast<int64_t>(argc);
  return spec.arity >= 0 ? n == spec.arity : n >= -spec.arity;
}

// Redis runs these at once inside MULTI; every other command is queued (Redis 7.0's
// processCommand), whatever its flags say.
bool RunsInsideMulti(const CommandSpec& spec) {
  return spec.handler == internal::CmdExec || spec.handler == internal::CmdDiscard ||
         spec.handler == internal::CmdMulti || spec.handler == internal::CmdWatch ||
         spec.handler == internal::CmdQuit || spec.handler == internal::CmdReset;
}

// The keys of a command by its table entry (Redis's first/last/step convention; a negative
// last key counts from the end).
template <typename F>
void ForEachKey(const CommandSpec& spec, const std::vector<std::string_view>& args, F&& fn) {
  if (spec.first_key <= 0 || spec.step <= 0) return;
  const auto argc = static_cast<int64_t>(args.size());
  const int64_t last = spec.last_key < 0 ? argc + spec.last_key : spec.last_key;
  for (int64_t i = spec.first_key; i <= last && i < argc; i += spec.step) {
    fn(args[static_cast<size_t>(i)]);
  }
}

std::string UnknownCommand(const std::vector<std::string_view>& args) {
  std::string msg = "ERR unknown command '" + std::string(args[0].substr(0, 128)) +
                    "', with args beginning with: ";
  for (size_t i = 1; i < args.size() && msg.size() < 256; i++) {
    msg += "'" + std::string(args[i].substr(0, 128 - std::min<size_t>(128, msg.size()))) + "' ";
  }
  return msg;
}
}  // namespace

Session::Session(Engine* engine, int worker, std::string addr, std::string laddr)
    : engine_(engine),
      worker_(worker),
      state_(engine->RegisterClient(std::move(addr), std::move(laddr))),
      authenticated_(!engine->requires_auth()) {}

Session::~Session() {
  // A5: the client left; its analytics task stops at its next chunk, and its reply is dropped
  // (the sink finds no connection). The task holds the client's state, so the flag lives.
  if (!analytics_.empty()) state_->kill_requested.store(true, std::memory_order_relaxed);
  AbandonHomeChanges();
  CloseRemoteSessions();
  ClearWatches();
  ClearQueued();
  engine_->UnregisterClient(state_->id);
}

void Session::ClearWatches() {
  for (const Watched& w : watched_) {
    if (w.version == 0) engine_->absent_watches().Unwatch(w.key);
  }
  watched_.clear();
  watch_broken_ = false;
}

void Session::DiscardTransaction() {
  in_multi_ = false;
  multi_dirty_ = false;
  ClearQueued();
  state_->multi.store(-1, std::memory_order_relaxed);
  ClearWatches();
  // Watches held at other nodes go too (rule C6), in order with this client's requests there.
  if (!watch_homes_.empty()) ForgetRemoteWatches();
  watch_slot_ = -1;
}

void Session::EndTransaction() {
  if (in_multi_) DiscardTransaction();
}

void Session::ClearQueued() {
  queued_.clear();
  engine_->ChargeClientBuffers(-queued_bytes_);
  queued_bytes_ = 0;
}

// ---- AbsentWatches ----

uint64_t AbsentWatches::Watch(std::string_view key) {
  MutexLock lock(&mu_);
  auto it = keys_.find(key);
  if (it == keys_.end()) {
    it = keys_.emplace(std::string(key), Entry{}).first;
    keys_watched_.store(keys_.size(), std::memory_order_relaxed);
  }
  it->second.watchers++;
  return it->second.touches;
}

void AbsentWatches::Unwatch(std::string_view key) {
  MutexLock lock(&mu_);
  auto it = keys_.find(key);
  if (it == keys_.end() || --it->second.watchers > 0) return;
  keys_.erase(it);
  keys_watched_.store(keys_.size(), std::memory_order_relaxed);
}

uint64_t AbsentWatches::Touches(std::string_view key) const {
  MutexLock lock(&mu_);
  auto it = keys_.find(key);
  return it == keys_.end() ? 0 : it->second.touches;
}

bool AbsentWatches::Watched(std::string_view key) const {
  MutexLock lock(&mu_);
  return keys_.find(key) != keys_.end();
}

void AbsentWatches::Touch(std::string_view key) {
  MutexLock lock(&mu_);
  auto it = keys_.find(key);
  if (it != keys_.end()) it->second.touches++;
}

uint64_t Session::id() const { return state_->id; }

void Session::set_protocol(int protocol) {
  protocol_ = protocol;
  state_->protocol.store(protocol, std::memory_order_relaxed);
}

bool Session::close_requested() const {
  return close_ || state_->kill_requested.load(std::memory_order_relaxed);
}

std::string Session::Run(std::initializer_list<std::string_view> args) {
  std::vector<std::string_view> v(args);
  std::string out;
  Execute(v, &out);
  return out;
}

std::string Session::Run(const std::vector<std::string>& args) {
  std::vector<std::string_view> v(args.begin(), args.end());
  std::string out;
  Execute(v, &out);
  return out;
}

bool Session::Execute(const std::vector<std::string_view>& args, std::string* out) {
  deferred_ = false;
  ExecuteLocked(args, out);
  if (!deferred_) return true;
  if (sink_) return false;
  // No sink: wait here, with no lock held (the reply may need another node's proxy worker,
  // and that one may wait for an exclusive section of this engine). A change that waited for
  // its keys may then wait for its backups (H3): FinishDeferred then arms wait_ again.
  for (;;) {
    bool held = false;
    std::string reply = FinishDeferred(tickets_, wait_.get(), &held);
    if (!held) {
      out->append(reply);
      break;
    }
  }
  deferred_ = false;
  return true;
}

void Session::ExecuteLocked(const std::vector<std::string_view>& args, std::string* out) {
  may_defer_ = false;  // left set if a command threw
  resp::ReplyWriter writer(out, protocol_);
  const int64_t now_ms = NowMs();  // the one wall-clock read per command
  MutexLock lock(&engine_->worker_lock(worker_));
  const size_t mark = out->size();
  const uint64_t tickets_before = tickets_;
  ClearCommitWaits();
  // Handlers have their own net (RunHandler); this one catches what dispatch itself may throw
  // (queueing a command inside MULTI can run out of memory), so no exception reaches the
  // connection's event loop.
  // Inside MULTI, a command that failed here ends the transaction as Redis's rejections do:
  // EXEC or DISCARD discards it (its client believes it ended; left open, the client's next
  // commands were queued into it), any other makes its EXEC abort.
  auto abort_transaction = [&] {
    if (!in_multi_ || args.empty()) return;
    const CommandSpec* spec = internal::FindCommand(args[0]);
    if (spec != nullptr &&
        (spec->handler == internal::CmdExec || spec->handler == internal::CmdDiscard)) {
      try {
        DiscardTransaction();  // ends the transaction before anything that may allocate
      } catch (...) {
      }
    } else {
      multi_dirty_ = true;
    }
  };
  try {
    Dispatch(args, writer, now_ms);
    // H2: a reply that depends on a change its backups lack leaves once they have it.
    HoldReply(out, mark);
  } catch (const std::bad_alloc&) {
    EndDeferralAfter(tickets_before);
    abort_transaction();
    out->resize(mark);
    engine_->CountInternalError();
    FLOE_LOG_ERROR("dispatching a command ran out of memory");
    writer.Error("OOM command not allowed when used memory > 'maxmemory'.");
  } catch (const std::exception& e) {
    EndDeferralAfter(tickets_before);
    abort_transaction();
    out->resize(mark);
    engine_->CountInternalError();
    FLOE_LOG_ERROR("dispatching a command failed with an internal error: {}", e.what());
    writer.Error(std::string("ERR internal error: ") + e.what());
  }
}

void Session::Dispatch(const std::vector<std::string_view>& args, resp::ReplyWriter& out,
                       int64_t now_ms) {
  if (args.empty()) return;
  state_->last_interaction_ms.store(now_ms, std::memory_order_relaxed);
  auto reject = [&](std::string_view error) {
    if (in_multi_) multi_dirty_ = true;
    Bump(engine_->stats(worker_).rejected_calls);
    const size_t mark = out.buffer()->size();
    out.Error(error);
    internal::CountErrorReply(engine_->stats(worker_),
                              std::string_view(*out.buffer()).substr(mark));
  };

  const CommandSpec* spec = internal::FindCommand(args[0]);
  if (spec == nullptr) return reject(UnknownCommand(args));
  if (!ArityOk(*spec, args.size())) {
    if (spec->handler == internal::CmdExec) {
      // Redis answers a malformed EXEC by discarding the transaction (in MULTI or not), so a
      // client cannot go on queueing into a transaction it believes ended.
      DiscardTransaction();
      Bump(engine_->stats(worker_).rejected_calls);
      Bump(engine_->stats(worker_).error_replies[3]);  // EXECABORT
      return out.Error(
          "EXECABORT Transaction discarded because of: wrong number of arguments "
          "for 'exec' command");
    }
    return reject(WrongArity(spec->name));
  }
  if (!spec->subcommands.empty() && (spec->handler == nullptr || args.size() > 1)) {
    if (args.size() < 2) return reject(WrongArity(spec->name));
    const CommandSpec* sub = internal::FindSubcommand(*spec, args[1]);
    if (sub == nullptr) {
      std::string upper(spec->name);
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      return reject("ERR unknown subcommand '" + std::string(args[1].substr(0, 128)) + "'. Try " +
                    upper + " HELP.");
    }
    if (!ArityOk(*sub, args.size())) return reject(WrongArity(sub->name));
    spec = sub;
  }
  state_->last_command.store(spec->name.data(), std::memory_order_relaxed);

  if (!authenticated_ && (spec->flags & internal::kNoAuth) == 0) {
    return reject("NOAUTH Authentication required.");
  }
  // A queued command holds its arguments until EXEC, so inside MULTI every command is refused
  // over the limit, as Redis does (queueing 2,000 SETs of 1 MB took 2 GB under maxmemory 100mb),
  // and what is queued is charged to used memory.
  const bool queues = in_multi_ && !RunsInsideMulti(*spec);
  // Frames analytics run on the pool; inside EXEC they would run with every I/O thread stopped,
  // past the pool's bounds and out of CLIENT KILL's reach, and they gain nothing from a
  // transaction (they read an immutable frame).
  if (queues && (spec->flags & internal::kNoMulti) != 0) {
    return reject("ERR " + std::string(spec->name) + " is not allowed in a transaction");
  }
  if (((spec->flags & internal::kDenyOom) != 0 || queues) && internal::OverMemoryLimit(*engine_)) {
    return reject("OOM command not allowed when used memory > 'maxmemory'.");
  }
  if (engine_->cluster() != nullptr) {
    if (proxy_ || queues) {
      // A proxy session runs what its client's node sent here, which holds only keys homed
      // here (a split command's part may span slots); a queued command is judged at EXEC, but
      // one whose own keys span slots is refused now (rules C1, C2).
      std::vector<std::string_view> keys;
      internal::CommandKeys(*spec, args, &keys);
      const internal::ClusterNode& node = *engine_->cluster();
      // A keyspace-wide command's piece (rule C2) reads or flushes this node's store: a node
      // that serves no key refuses it, so the whole command fails rather than answer in part
      // (docs/membership.md, "Routing from the agreed table").
      if (proxy_ && internal::KeyspaceWide(spec->handler) && !node.serving()) {
        return reject(node.DownError());
      }
      for (std::string_view k : keys) {
        const uint16_t slot = cluster::KeySlot(k);
        if (queues && slot != cluster::KeySlot(keys[0])) {
          return reject("CROSSSLOT Keys in request don't hash to the same slot");
        }
        if (proxy_ && (!node.serving() || node.Home(slot) != node.self())) {
          // A home still forming (its peers formed first) or catching up with the agreed
          // metadata says why, as it would to its own clients (rule C5, membership.md).
          if (!node.serving()) return reject(node.DownError());
          return reject("CLUSTERDOWN Hash slot " + std::to_string(slot) +
                        " is not served by this node");
        }
      }
    } else if (RouteCluster(spec, args, out, now_ms, reject)) {
      return;
    }
  }
  if (queues) {
    int64_t bytes = static_cast<int64_t>(sizeof(std::vector<std::string>));
    for (std::string_view a : args) {
      bytes += static_cast<int64_t>(sizeof(std::string) + (a.size() > 15 ? a.size() + 1 : 0));
    }
    queued_.emplace_back(args.begin(), args.end());
    queued_bytes_ += bytes;
    engine_->ChargeClientBuffers(bytes);
    state_->multi.store(static_cast<int>(queued_.size()), std::memory_order_relaxed);
    out.SimpleString("QUEUED");
    return;
  }
  may_defer_ = true;
  Call(spec, args, out, /*exclusive_held=*/false, now_ms);
  may_defer_ = false;
}

void Session::Call(const CommandSpec* spec, const std::vector<std::string_view>& args,
                   resp::ReplyWriter& out, bool exclusive_held,
                   int64_t now_ms) FLOE_NO_THREAD_SAFETY_ANALYSIS {
  WorkerStats& stats = engine_->stats(worker_);
  // An analytics command's finishing step counts from when the command began (A1).
  const uint64_t start = finishing_ != nullptr && finishing_->started_cycles != 0
                             ? finishing_->started_cycles
                             : CycleNow();
  CommandContext ctx{*engine_, *this, args, out, worker_, now_ms, spec};
  ctx.pinned = pinned_;
  const size_t reply_start = out.buffer()->size();
  // A write naming a key some session watches while absent: note whether it exists before,
  // and which value the store holds for it (an expired one too).
  struct AbsentBefore {
    std::string_view key;
    bool existed;
    uint64_t stored_version;  // 0: nothing stored
  };
  std::vector<AbsentBefore> watched_absent;
  if ((spec->flags & internal::kWrite) != 0 && !engine_->absent_watches().empty()) {
    ForEachKey(*spec, args, [&](std::string_view key) {
      if (engine_->absent_watches().Watched(key)) {
        store::ValuePtr v = engine_->store().Get(key);
        watched_absent.push_back(
            {key, internal::Live(v.get(), now_ms) != nullptr, v ? v->version() : 0});
      }
    });
  }
  // MGET of several keys reads them in the exclusive section: a snapshot every key belongs
  // to, as Redis's MGET is (MSET writes them in the section, so it never shows half an MSET).
  const bool exclusive = (spec->flags & internal::kExclusive) != 0 ||
                         (spec->handler == internal::CmdMGet && args.size() > 2);
  bool ran = true;
  if (exclusive && !exclusive_held) {
    // Our own worker lock is held by Execute; drop it so the section can take every lock in
    // index order (two threads running exclusive commands cannot deadlock), then take it back.
    UnlockedWhile unlocked(&engine_->worker_lock(worker_));
    Engine::ExclusiveSection section(engine_);
    ctx.now_ms = NowMs();
    ran = RunAtHome(ctx);
  } else {
    ran = RunAtHome(ctx);
  }
  if (!ran) return;  // deferred (rule C7): FinishDeferred calls again, and counts it then
  // Posted to the analytics pool: FinishDeferred calls again, and counts it then (A1).
  if (std::exchange(analytics_posted_, false)) return;
  // A write that made the key exist, removed it, or stored a value already past its expiry
  // (SET k v PXAT 1) touched it, as Redis's signalModifiedKey does. Removing a value that had
  // already expired is no change (Redis: a key expired when watched stays clean when deleted).
  for (const AbsentBefore& b : watched_absent) {
    store::ValuePtr v = engine_->store().Get(b.key);
    if (b.existed || internal::Live(v.get(), ctx.now_ms) ||
        (v && v->version() != b.stored_version)) {
      engine_->absent_watches().Touch(b.key);
    }
  }
  // The worker lock (or the exclusive section) is held: this worker's counters have one writer.
  const auto i = static_cast<size_t>(spec->index);
  Bump(stats.commands);
  Bump(stats.calls[i]);
  const uint64_t ticks = CycleNow() - start;
  Bump(stats.ticks[i], ticks);
  RecordLatency(stats, i, ticks);
  if (ctx.failed) {
    Bump(stats.failed[i]);
    internal::CountErrorReply(stats, std::string_view(*out.buffer()).substr(reply_start));
  }
  out.set_protocol(protocol_);  // HELLO may have switched it for the replies that follow
}

// The safety net at the command boundary. A handler reports a client's mistakes as error
// replies; an exception escaping it is a bug in Floe. It must not take the node (and every key
// in memory) down: the partial reply is dropped, the client gets an error, the event is logged
// with the command name (never the arguments: they may hold secrets) and counted in INFO
// (errors_internal), and the node keeps serving. Tests and fuzzers treat any count as a failure.
void Session::RunHandler(CommandContext& ctx) {
  std::string* buffer = ctx.out.buffer();
  const size_t mark = buffer->size();
  const std::string_view name = ctx.spec->name;
  const uint64_t tickets_before = tickets_;
  try {
    if (before_handler_) before_handler_(name);
    ctx.spec->handler(ctx);
    return;
  } catch (const std::bad_alloc&) {
    EndDeferralAfter(tickets_before);
    buffer->resize(mark);
    engine_->CountInternalError();
    FLOE_LOG_ERROR("command '{}' ran out of memory", name);
    ctx.Error("OOM command not allowed when used memory > 'maxmemory'.");
  } catch (const std::exception& e) {
    EndDeferralAfter(tickets_before);
    buffer->resize(mark);
    engine_->CountInternalError();
    FLOE_LOG_ERROR("command '{}' failed with an internal error: {}", name, e.what());
    ctx.Error(std::string("ERR internal error: ") + e.what());
  } catch (...) {
    EndDeferralAfter(tickets_before);
    buffer->resize(mark);
    engine_->CountInternalError();
    FLOE_LOG_ERROR("command '{}' failed with an unknown internal error", name);
    ctx.Error("ERR internal error");
  }
}

// ---------------------------------------------------------------------------------------------
namespace internal {

namespace {
// The error codes Redis puts first in an error reply, and so in a ClientError's text (and in a
// Status's: a cluster error travels as one); "CMS:" is the word RedisBloom's Count-Min errors
// open with; the last five are Redis Cluster's.
constexpr std::string_view kRedisErrorCodes[] = {
    "ERR",      "WRONGTYPE",   "OOM",       "EXECABORT", "NOAUTH", "WRONGPASS",  "NOPROTO",
    "NOSCRIPT", "BUSY",        "LOADING",   "READONLY",  "NOPERM", "INVALIDOBJ", "CMS:",
    "BUSYKEY",  "CLUSTERDOWN", "CROSSSLOT", "MOVED",     "ASK",    "TRYAGAIN",   "NOREPLICAS",
};

static_assert(std::size(kRedisErrorCodes) < WorkerStats::kErrorCodes);
static_assert(kRedisErrorCodes[3] == "EXECABORT");  // counted by index in Dispatch

bool StartsWithRedisCode(std::string_view text) {
  for (std::string_view code : kRedisErrorCodes) {
    if (text.size() > code.size() && text.starts_with(code) && text[code.size()] == ' ') {
      return true;
    }
  }
  return false;
}
}  // namespace

std::span<const std::string_view> RedisErrorCodes() { return kRedisErrorCodes; }

void CountErrorReply(WorkerStats& stats, std::string_view reply) {
  if (reply.empty() || reply[0] != '-') return;
  reply.remove_prefix(1);
  const std::string_view code = reply.substr(0, reply.find_first_of(" \r"));
  const auto codes = RedisErrorCodes();
  size_t i = 0;
  while (i < codes.size() && codes[i] != code) i++;
  Bump(stats.error_replies[i]);  // i == codes.size(): another code
}

std::string ErrorReplyText(const Status& status) {
  const std::string_view message = status.message();
  // A ClientError, or a status made with a Redis error text (the OOM error of a cell).
  if (StartsWithRedisCode(message)) return std::string(message);
  if (status.code() == StatusCode::kInternal) return "ERR internal error: " + std::string(message);
  return "ERR " + std::string(message);
}

MemoryReservation::~MemoryReservation() {
  if (bytes_ != 0) engine_->ReleaseMemory(bytes_);
}

void MemoryReservation::ReleaseSince(int64_t mark) {
  if (bytes_ > mark) {
    engine_->ReleaseMemory(bytes_ - mark);
    bytes_ = mark;
  }
}

int& CommandContext::protocol() { return session.protocol_; }
bool& CommandContext::authenticated() { return session.authenticated_; }
bool& CommandContext::close() { return session.close_; }

void CommandContext::ResetSession() {
  session.protocol_ = 2;
  session.state_->protocol.store(2, std::memory_order_relaxed);
  session.DiscardTransaction();
  session.authenticated_ = !engine.requires_auth();
  MutexLock lock(&session.state_->mu);
  session.state_->name.clear();
}

void CommandContext::RunQueued(const std::vector<std::string>& queued_args) {
  std::vector<std::string_view> views(queued_args.begin(), queued_args.end());
  const CommandSpec* cmd = FindCommand(views[0]);
  if (!cmd->subcommands.empty() && (cmd->handler == nullptr || views.size() > 1)) {
    cmd = FindSubcommand(*cmd, views[1]);
  }
  // Nothing a transaction runs defers its reply (frames analytics run inline: A3).
  const bool was = std::exchange(session.running_queued_, true);
  session.Call(cmd, views, out, /*exclusive_held=*/true, now_ms);
  session.running_queued_ = was;
}

void CmdMulti(CommandContext& ctx) {
  Session& s = ctx.session;
  if (s.in_multi_) return ctx.Error("ERR MULTI calls can not be nested");
  s.in_multi_ = true;
  s.multi_dirty_ = false;
  s.ClearQueued();
  s.state_->multi.store(0, std::memory_order_relaxed);
  ctx.out.Ok();
}

void CmdDiscard(CommandContext& ctx) {
  Session& s = ctx.session;
  if (!s.in_multi_) return ctx.Error("ERR DISCARD without MULTI");
  s.DiscardTransaction();
  ctx.out.Ok();
}

namespace {
// What a WATCH sees: the value's version (0 when the key is absent or expired) and its
// in-place change count (sketch_cell.h, rule 5).
std::pair<uint64_t, uint64_t> WatchState(CommandContext& ctx, std::string_view key) {
  store::ValuePtr v = ctx.store().Get(key);
  if (!v || v->IsExpired(ctx.now_ms)) return {0, 0};
  return {v->version(), ChangesOf(*v)};
}
}  // namespace

void CmdWatch(CommandContext& ctx) {
  Session& s = ctx.session;
  if (s.in_multi_) return ctx.Error("ERR WATCH inside MULTI is not allowed");
  // A set, not a scan of watched_ per key: WATCH of 200,000 keys took 20 s (quadratic) and
  // stalled every client of its I/O thread. The reserve keeps the views of watched_'s keys
  // valid (no reallocation moves a short string's bytes) while keys are added.
  s.watched_.reserve(s.watched_.size() + ctx.args.size() - 1);
  std::unordered_set<std::string_view> seen;
  seen.reserve(s.watched_.size() + ctx.args.size() - 1);
  for (const auto& w : s.watched_) seen.insert(w.key);
  for (size_t i = 1; i < ctx.args.size(); i++) {
    if (seen.insert(ctx.args[i]).second) {
      const auto [version, changes] = WatchState(ctx, ctx.args[i]);
      const uint64_t touches = version == 0 ? ctx.engine.absent_watches().Watch(ctx.args[i]) : 0;
      s.watched_.push_back({std::string(ctx.args[i]), version, changes, touches});
    }
  }
  ctx.out.Ok();
}

void CmdUnwatch(CommandContext& ctx) {
  ctx.session.ClearWatches();
  ctx.out.Ok();
}

// EXEC runs inside the exclusive section (the command is flagged exclusive), so the check of
// the watched versions and every queued command happen with no other command running.
void CmdExec(CommandContext& ctx) {
  Session& s = ctx.session;
  if (!s.in_multi_) return ctx.Error("ERR EXEC without MULTI");
  std::vector<std::vector<std::string>> queued = std::move(s.queued_);
  const bool dirty = s.multi_dirty_;
  bool touched = s.watch_broken_;
  for (const auto& w : s.watched_) {
    const auto now = WatchState(ctx, w.key);
    touched = touched || now != std::pair(w.version, w.changes) ||
              (w.version == 0 && ctx.engine.absent_watches().Touches(w.key) != w.touches);
  }
  s.DiscardTransaction();
  if (dirty) {
    return ctx.Error("EXECABORT Transaction discarded because of previous errors.");
  }
  if (touched) return ctx.out.NullArray();
  ctx.out.ArrayHeader(queued.size());
  for (const auto& args : queued) ctx.RunQueued(args);
}

}  // namespace internal
}  // namespace floe::server
