// A client's session: dispatch through the command table, authentication, MULTI/EXEC/WATCH,
// the exclusive section, and per-command statistics.

#include <chrono>

#include "server/internal/command.h"
#include "server/internal/sketch_cell.h"

namespace floe::server {

using internal::CommandContext;
using internal::CommandSpec;

namespace {
int64_t NowMs() { return static_cast<int64_t>(WallMicros() / 1000); }

std::string WrongArity(std::string_view name) {
  return "ERR wrong number of arguments for '" + std::string(name) + "' command";
}

bool ArityOk(const CommandSpec& spec, size_t argc) {
  const auto n = static_cast<int64_t>(argc);
  return spec.arity >= 0 ? n == spec.arity : n >= -spec.arity;
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

Session::~Session() { engine_->UnregisterClient(state_->id); }

uint64_t Session::id() const { return state_->id; }

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

void Session::Execute(const std::vector<std::string_view>& args, std::string* out) {
  resp::ReplyWriter writer(out, protocol_);
  const int64_t now_ms = NowMs();  // the one wall-clock read per command
  MutexLock lock(&engine_->worker_lock(worker_));
  Dispatch(args, writer, now_ms);
}

void Session::Dispatch(const std::vector<std::string_view>& args, resp::ReplyWriter& out,
                       int64_t now_ms) {
  if (args.empty()) return;
  state_->last_interaction_ms.store(now_ms, std::memory_order_relaxed);
  auto reject = [&](std::string_view error) {
    if (in_multi_) multi_dirty_ = true;
    out.Error(error);
  };

  const CommandSpec* spec = internal::FindCommand(args[0]);
  if (spec == nullptr) return reject(UnknownCommand(args));
  if (!ArityOk(*spec, args.size())) return reject(WrongArity(spec->name));
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
  if ((spec->flags & internal::kDenyOom) != 0 && internal::OverMemoryLimit(*engine_)) {
    return reject("OOM command not allowed when used memory > 'maxmemory'.");
  }
  // QUIT closes the connection at once even inside MULTI, as in Redis (whose processCommand
  // exempts it from queueing the way it exempts RESET).
  if (in_multi_ && (spec->flags & internal::kNoMulti) == 0 && spec->handler != internal::CmdQuit) {
    queued_.emplace_back(args.begin(), args.end());
    state_->multi.store(static_cast<int>(queued_.size()), std::memory_order_relaxed);
    out.SimpleString("QUEUED");
    return;
  }
  Call(spec, args, out, /*exclusive_held=*/false, now_ms);
}

void Session::Call(const CommandSpec* spec, const std::vector<std::string_view>& args,
                   resp::ReplyWriter& out, bool exclusive_held,
                   int64_t now_ms) FLOE_NO_THREAD_SAFETY_ANALYSIS {
  WorkerStats& stats = engine_->stats(worker_);
  const uint64_t start = CycleNow();
  CommandContext ctx{*engine_, *this, args, out, worker_, now_ms, spec};
  if ((spec->flags & internal::kExclusive) != 0 && !exclusive_held) {
    // Our own worker lock is held by Execute; drop it so the section can take every lock in
    // index order (two threads running exclusive commands cannot deadlock), then take it back.
    engine_->worker_lock(worker_).Unlock();
    {
      Engine::ExclusiveSection section(engine_);
      ctx.now_ms = NowMs();
      spec->handler(ctx);
    }
    engine_->worker_lock(worker_).Lock();
  } else {
    spec->handler(ctx);
  }
  // The worker lock (or the exclusive section) is held: this worker's counters have one writer.
  const auto i = static_cast<size_t>(spec->index);
  Bump(stats.commands);
  Bump(stats.calls[i]);
  Bump(stats.ticks[i], CycleNow() - start);
  if (ctx.failed) Bump(stats.failed[i]);
  out.set_protocol(protocol_);  // HELLO may have switched it for the replies that follow
}

// ---------------------------------------------------------------------------------------------
namespace internal {

int& CommandContext::protocol() { return session.protocol_; }
bool& CommandContext::authenticated() { return session.authenticated_; }
bool& CommandContext::close() { return session.close_; }

void CommandContext::ResetSession() {
  session.protocol_ = 2;
  session.state_->protocol.store(2, std::memory_order_relaxed);
  session.in_multi_ = false;
  session.multi_dirty_ = false;
  session.queued_.clear();
  session.state_->multi.store(-1, std::memory_order_relaxed);
  session.watched_.clear();
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
  session.Call(cmd, views, out, /*exclusive_held=*/true, now_ms);
}

void CmdMulti(CommandContext& ctx) {
  Session& s = ctx.session;
  if (s.in_multi_) return ctx.Error("ERR MULTI calls can not be nested");
  s.in_multi_ = true;
  s.multi_dirty_ = false;
  s.queued_.clear();
  s.state_->multi.store(0, std::memory_order_relaxed);
  ctx.out.Ok();
}

void CmdDiscard(CommandContext& ctx) {
  Session& s = ctx.session;
  if (!s.in_multi_) return ctx.Error("ERR DISCARD without MULTI");
  s.in_multi_ = false;
  s.queued_.clear();
  s.watched_.clear();
  s.state_->multi.store(-1, std::memory_order_relaxed);
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
  for (size_t i = 1; i < ctx.args.size(); i++) {
    bool already = false;
    for (const auto& w : s.watched_) already = already || w.key == ctx.args[i];
    if (!already) {
      const auto [version, changes] = WatchState(ctx, ctx.args[i]);
      s.watched_.push_back({std::string(ctx.args[i]), version, changes});
    }
  }
  ctx.out.Ok();
}

void CmdUnwatch(CommandContext& ctx) {
  ctx.session.watched_.clear();
  ctx.out.Ok();
}

// EXEC runs inside the exclusive section (the command is flagged exclusive), so the check of
// the watched versions and every queued command happen with no other command running.
void CmdExec(CommandContext& ctx) {
  Session& s = ctx.session;
  if (!s.in_multi_) return ctx.Error("ERR EXEC without MULTI");
  std::vector<std::vector<std::string>> queued = std::move(s.queued_);
  const bool dirty = s.multi_dirty_;
  s.in_multi_ = false;
  s.multi_dirty_ = false;
  s.queued_.clear();
  s.state_->multi.store(-1, std::memory_order_relaxed);
  std::vector<Session::Watched> watched = std::move(s.watched_);
  s.watched_.clear();
  if (dirty) {
    return ctx.Error("EXECABORT Transaction discarded because of previous errors.");
  }
  for (const auto& w : watched) {
    if (WatchState(ctx, w.key) != std::pair(w.version, w.changes)) return ctx.out.NullArray();
  }
  ctx.out.ArrayHeader(queued.size());
  for (const auto& args : queued) ctx.RunQueued(args);
}

}  // namespace internal
}  // namespace floe::server
