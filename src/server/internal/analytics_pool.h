// The analytics pool: frames analytics (FRAME.SUMMARY, QUANTILE, GROUPBY) run on threads of
// their own, not on the I/O thread of the client that sent them, whose other clients would
// wait meanwhile (docs/frame.md, "Analytics off the I/O thread", rules A1-A8).
//
// How a command goes: its handler, on the I/O thread under the worker lock, parses and checks
// its arguments and loads the frame (a shared_ptr), then hands RunAnalytics the work. With a
// reply sink, outside MULTI/EXEC, the work is posted here and the reply deferred
// (Session::BeginDeferred); the session reports it pending (local_part_pending), so the
// connection runs nothing more until it is delivered. The work returns a Reply, a closure that
// writes the reply; when the sink hands the ticket back on the session's thread,
// Session::FinishDeferred runs the command once more through Call, and the handler, seeing
// FinishAnalytics, writes that reply (and, for GROUPBY, stores the frame) under the worker lock.
// The command is counted then, once.
//
// Thread rules: AnalyticsPool is thread-safe. RunAnalytics and FinishAnalytics run on the
// session's thread, inside a handler.

#ifndef FLOE_SERVER_INTERNAL_ANALYTICS_POOL_H_
#define FLOE_SERVER_INTERNAL_ANALYTICS_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/base.h"

namespace floe::server {
struct ClientState;
}  // namespace floe::server

namespace floe::server::internal {

struct CommandContext;
struct CommandSpec;

// Rule A7: tasks waiting past this many are refused with kAnalyticsBusyError.
inline constexpr size_t kMaxQueuedAnalytics = 64;
inline constexpr char kAnalyticsBusyError[] =
    "BUSY too many analytics tasks are waiting; try again later";

class AnalyticsPool {
 public:
  // `threads`: 0 is one a core. Threads start with the first task (most engines, in tests and
  // tools, never run one).
  explicit AnalyticsPool(size_t threads = 0, size_t max_queued = kMaxQueuedAnalytics);
  ~AnalyticsPool();  // Shutdown()
  AnalyticsPool(const AnalyticsPool&) = delete;
  AnalyticsPool& operator=(const AnalyticsPool&) = delete;

  // Runs `run` on a pool thread. False, and `run` is dropped, when max_queued tasks already
  // wait or the pool is shut down. `cancel` is the task's cancel flag, set by Shutdown.
  bool Post(std::function<void()> run, std::shared_ptr<std::atomic<bool>> cancel);
  // Rule A8: sets the cancel flag of every task, drops the waiting ones (their replies never
  // come) and joins the threads. Posts fail afterwards.
  void Shutdown();
  size_t threads() const { return threads_; }
  // Tasks running or waiting now.
  size_t busy() const;
  // For tests: runs on the pool thread before each analytics task's work, inside its safety
  // net, so a test can hold a task or make it throw.
  void TEST_SetBeforeTask(std::function<void()> hook);
  void RunBeforeTask() const;
  // A4: a task whose working memory reached kLargeTaskBytes notes it (EngineBudget), and the
  // pool thread returns the allocator's free pages to the system when a task ends after that
  // (tcmalloc keeps them otherwise). allocator_releases() counts the returns.
  static constexpr uint64_t kLargeTaskBytes = uint64_t{16} << 20;
  void NoteLargeTask() { large_tasks_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t allocator_releases() const {
    return allocator_releases_.load(std::memory_order_relaxed);
  }
  // For tests: the next `n` hand-backs of a task's reply to its session fail as if out of
  // memory (std::bad_alloc), as base's internal::FailNextThreadStarts fails thread starts.
  void TEST_FailNextHandBacks(int n) { hand_back_failures_.store(n, std::memory_order_relaxed); }
  bool ConsumeHandBackFailure();

 private:
  struct Item {
    std::function<void()> run;
    std::shared_ptr<std::atomic<bool>> cancel;
  };
  void Work();

  const size_t threads_;
  const size_t max_queued_;
  mutable Mutex mu_;
  std::condition_variable_any wake_;
  std::deque<Item> queue_ FLOE_GUARDED_BY(mu_);
  // The cancel flags of the tasks running, by thread slot.
  std::vector<std::shared_ptr<std::atomic<bool>>> running_ FLOE_GUARDED_BY(mu_);
  size_t running_count_ FLOE_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> workers_ FLOE_GUARDED_BY(mu_);
  bool stopping_ FLOE_GUARDED_BY(mu_) = false;
  std::function<void()> before_task_ FLOE_GUARDED_BY(mu_);
  std::atomic<int> hand_back_failures_{0};
  std::atomic<uint64_t> large_tasks_{0};  // noted since the last release; relaxed: a hint
  std::atomic<uint64_t> allocator_releases_{0};
};

// Writes a task's reply; made on the pool thread, run on the session's thread.
using AnalyticsReply = std::function<void(CommandContext&)>;

// A deferred analytics command, held by its session (by ticket) until its reply is delivered.
struct AnalyticsTask {
  const CommandSpec* spec = nullptr;
  std::vector<std::string> args;  // run again through Session::Call to write the reply
  // When the command began (CycleNow): commandstats and the latency histogram time the whole
  // command, the pool's queue and work included, not only the step that writes its reply.
  uint64_t started_cycles = 0;
  // Set on the pool thread before the reply sink is called, read on the session's thread
  // after the sink's hand-off (which orders the two).
  AnalyticsReply reply;
};

// The work: the analytics, polling `cancel` before each chunk; returns the reply to write.
using AnalyticsWork = std::function<AnalyticsReply(const std::atomic<bool>* cancel)>;

// What a task's work may wait for (docs/frames_cluster.md, D13).
enum class AnalyticsWaits : int {
  kHere,        // this node's memory alone (a one-node frame)
  kForMembers,  // other members' answers (a cluster frame's map task, chunk fetch, header put)
};

// Rules A1-A7 for the command in `ctx`: the work goes to the pool and the reply is deferred,
// or (in MULTI/EXEC, in a session without a reply sink) the work runs here and replies now.
// An exception in the work becomes the command boundary's error reply (A6).
// Work that waits for other members (D13) is never run here inside Dkv::ApplyIfFree or with the
// session's worker lock held by its own command: it is deferred in a session without a reply
// sink too (Session::Execute waits for it with no lock held), and refused inside a transaction.
void RunAnalytics(CommandContext& ctx, AnalyticsWork work,
                  AnalyticsWaits waits = AnalyticsWaits::kHere);
// True when the handler runs to finish its task: the task's reply was written to ctx.
bool FinishAnalytics(CommandContext& ctx);

// Closes a client as CLIENT KILL does (its kill flag, then its connection's closer); a reply
// that cannot be delivered does this, or its connection would wait for it for ever.
void KillClient(ClientState& c);

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_ANALYTICS_POOL_H_
