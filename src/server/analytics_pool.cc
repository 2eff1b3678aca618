// The analytics pool and the deferral of an analytics command's reply (internal/analytics_pool.h;
// docs/frame.md, "Analytics off the I/O thread").

#include "server/internal/analytics_pool.h"

#include <algorithm>
#include <cctype>
#include <exception>
#include <new>

#include "dkv/dkv.h"
#include "server/internal/command.h"

// tcmalloc's C interface, when the binary is linked with it (weak: null with another allocator).
extern "C" void MallocExtension_ReleaseFreeMemory() __attribute__((weak));

namespace floe::server::internal {

AnalyticsPool::AnalyticsPool(size_t threads, size_t max_queued)
    : threads_(threads != 0 ? threads : std::max(1u, std::thread::hardware_concurrency())),
      max_queued_(max_queued) {}

AnalyticsPool::~AnalyticsPool() { Shutdown(); }

bool AnalyticsPool::Post(std::function<void()> run, std::shared_ptr<std::atomic<bool>> cancel) {
  MutexLock lock(&mu_);
  if (stopping_ || queue_.size() >= max_queued_) return false;
  if (workers_.empty()) {
    running_.resize(threads_);
    workers_.reserve(threads_);
    // As many as the system gives (StartThread: a refused thread is not an exception that
    // ends the node); none, and the task is refused like a full queue.
    for (size_t i = 0; i < threads_; i++) {
      Result<std::thread> t = StartThread([this] { Work(); });
      if (!t.ok()) break;
      workers_.push_back(std::move(*t));
    }
    if (workers_.empty()) return false;
  }
  queue_.push_back({.run = std::move(run), .cancel = std::move(cancel)});
  wake_.notify_one();
  return true;
}

size_t AnalyticsPool::busy() const {
  MutexLock lock(&mu_);
  return queue_.size() + running_count_;
}

void AnalyticsPool::TEST_SetBeforeTask(std::function<void()> hook) {
  MutexLock lock(&mu_);
  before_task_ = std::move(hook);
}

void AnalyticsPool::RunBeforeTask() const {
  std::function<void()> hook;
  {
    MutexLock lock(&mu_);
    hook = before_task_;
  }
  if (hook) hook();
}

bool AnalyticsPool::ConsumeHandBackFailure() {
  // relaxed: a test's counter.
  int left = hand_back_failures_.load(std::memory_order_relaxed);
  while (left > 0) {
    if (hand_back_failures_.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

void AnalyticsPool::Work() {
  for (;;) {
    Item item;
    size_t slot = 0;
    {
      MutexLock lock(&mu_);
      while (!stopping_ && queue_.empty()) wake_.wait(mu_);
      if (stopping_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
      // This thread's slot in running_ while it runs: the first free one.
      slot = static_cast<size_t>(std::find(running_.begin(), running_.end(), nullptr) -
                                 running_.begin());
      running_[slot] = item.cancel;
      running_count_++;
    }
    // A task whose client left while it waited is not run; dropping it frees its frame now
    // (its reply would be dropped anyway).
    if (!item.cancel || !item.cancel->load(std::memory_order_relaxed)) {
      // RunAnalytics's closure catches what the work throws; what its own error path might
      // throw (an allocation) must not end the process from a pool thread.
      try {
        item.run();
      } catch (...) {
        FLOE_LOG_ERROR("an analytics task failed while reporting its error");
      }
    }
    item = {};  // the task's frame and memory go before the next one starts
    // A large task's freed pages go back to the system now, not kept by the allocator (A4).
    // relaxed: a hint; a note that comes a moment late is released after the next task, or by
    // the node's once-a-second release.
    if (large_tasks_.load(std::memory_order_relaxed) > 0 &&
        large_tasks_.exchange(0, std::memory_order_relaxed) > 0) {
      if (MallocExtension_ReleaseFreeMemory != nullptr) MallocExtension_ReleaseFreeMemory();
      allocator_releases_.fetch_add(1, std::memory_order_relaxed);
    }
    MutexLock lock(&mu_);
    running_[slot] = nullptr;
    running_count_--;
  }
}

void AnalyticsPool::Shutdown() {
  std::deque<Item> dropped;
  std::vector<std::thread> workers;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    for (const auto& c : running_) {
      if (c) c->store(true, std::memory_order_relaxed);
    }
    dropped.swap(queue_);
    workers.swap(workers_);
    wake_.notify_all();
  }
  for (const Item& item : dropped) {
    if (item.cancel) item.cancel->store(true, std::memory_order_relaxed);
  }
  dropped.clear();  // outside the lock: a task's closure frees a frame
  for (std::thread& t : workers) t.join();
}

namespace {

// The work inside the command boundary's net (Session::RunHandler): an exception is a bug in
// Floe, logged with the command's name and counted in errors_internal, and the client gets the
// same error reply as there (A6).
AnalyticsReply Guarded(Engine& engine, std::string_view name, const AnalyticsWork& work,
                       const std::atomic<bool>* cancel) {
  std::string error;
  try {
    engine.analytics().RunBeforeTask();
    return work(cancel);
  } catch (const std::bad_alloc&) {
    FLOE_LOG_ERROR("command '{}' ran out of memory", name);
    error = "OOM command not allowed when used memory > 'maxmemory'.";
  } catch (const std::exception& e) {
    FLOE_LOG_ERROR("command '{}' failed with an internal error: {}", name, e.what());
    error = std::string("ERR internal error: ") + e.what();
  } catch (...) {
    FLOE_LOG_ERROR("command '{}' failed with an unknown internal error", name);
    error = "ERR internal error";
  }
  engine.CountInternalError();
  return [error = std::move(error)](CommandContext& ctx) { ctx.Error(error); };
}

}  // namespace

// Kills the client as CLIENT KILL does: its kill flag set (what its session checks) and its
// connection's closer run. The closer posts to the client's thread; should that fail too, the
// flag stays set and the failure is logged.
void KillClient(ClientState& c) {
  c.kill_requested.store(true, std::memory_order_relaxed);
  try {
    std::function<void()> closer;
    {
      MutexLock lock(&c.mu);
      closer = c.closer;
    }
    if (closer) closer();
  } catch (const std::exception& e) {
    FLOE_LOG_ERROR("closing client id={} failed: {}", c.id, e.what());
  }
}

void RunAnalytics(CommandContext& ctx, AnalyticsWork work, AnalyticsWaits waits) {
  Session& s = ctx.session;
  const bool for_members = waits == AnalyticsWaits::kForMembers;
  if (for_members && s.running_queued_) {
    // D13: EXEC runs its commands at once, under its writes' stripe locks and the exclusive
    // section, so a wait for other members cannot be deferred out of them.
    std::string name(ctx.spec->name);
    for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return ctx.Error("ERR " + name +
                     " of a cluster frame is not allowed in a transaction (it waits for other "
                     "members)");
  }
  // A3: inline where the reply cannot wait: no sink (tests, tools; work that waits for other
  // members is deferred there too, D13), inside EXEC (the exclusive section is held), or a
  // command that is not a client's own (a change run once its keys' copies were invalidated,
  // rule C7: its keys are reserved, no stripe lock is held).
  if ((!s.sink_ && !for_members) || !s.may_defer_ || s.running_queued_) {
    if (for_members && dkv::Dkv::InApply()) {
      // Unreachable by the paths above (a client's own command defers); a wait here could
      // deadlock the node's loop (D13), so the command fails instead.
      ctx.engine.CountInternalError();
      FLOE_LOG_ERROR("command '{}' would wait for other members under the DKV's locks",
                     ctx.spec->name);
      return ctx.Error("ERR internal error: " + std::string(ctx.spec->name) +
                       " would wait for other members under the DKV's locks");
    }
    Guarded(ctx.engine, ctx.spec->name, work, &s.state_->kill_requested)(ctx);
    return;
  }
  // A7: one a connection. The connection runs nothing while one is pending (A2), so this
  // cannot happen; refused rather than run here if it ever did.
  if (!s.analytics_.empty()) return ctx.Error(kAnalyticsBusyError);
  auto task = std::make_shared<AnalyticsTask>(
      AnalyticsTask{.spec = ctx.spec,
                    .args = std::vector<std::string>(ctx.args.begin(), ctx.args.end()),
                    .started_cycles = CycleNow()});
  // The cancel flag is the client's kill flag: CLIENT KILL sets it, and so does the session's
  // end (~Session) and the pool's shutdown (A5, A8). The task holds the client's state.
  std::shared_ptr<ClientState> client = s.state_;
  std::shared_ptr<std::atomic<bool>> cancel(client, &client->kill_requested);
  std::function<void(std::string)> done = s.BeginDeferred();
  const uint64_t ticket = s.tickets_;
  s.analytics_.emplace(ticket, task);
  const bool posted = ctx.engine.analytics().Post(
      [task, work = std::move(work), cancel, client, &engine = ctx.engine, name = ctx.spec->name,
       done = std::move(done)]() mutable {
        task->reply = Guarded(engine, name, work, cancel.get());
        // A4: the work's frame and its working memory (its budget, released when the work
        // returned) go before the reply is delivered.
        work = nullptr;
        try {
          if (engine.analytics().ConsumeHandBackFailure()) throw std::bad_alloc();
          done(std::string());
        } catch (const std::exception& e) {
          // Out of memory posting it: the connection would wait for this reply until its client
          // left. It is closed instead, as CLIENT KILL closes it (A6), before anything else
          // that may allocate.
          KillClient(*client);
          engine.CountInternalError();
          FLOE_LOG_ERROR("handing back the reply of '{}' failed, closing its client: {}", name,
                         e.what());
        }
      },
      cancel);
  if (!posted) {
    // The ticket was never handed out: the command answers now, as if it had not deferred.
    s.analytics_.erase(ticket);
    s.deferred_ = false;
    s.tickets_--;
    return ctx.Error(kAnalyticsBusyError);
  }
  s.analytics_posted_ = true;
}

bool FinishAnalytics(CommandContext& ctx) {
  AnalyticsTask* task = std::exchange(ctx.session.finishing_, nullptr);
  if (task == nullptr) return false;
  if (task->reply) {
    task->reply(ctx);
  } else {
    ctx.Error("ERR internal error: an analytics task ended without a reply");
  }
  return true;
}

}  // namespace floe::server::internal
