// job: long-running work (a CSV import, later a distributed task) kept in a registry with an id,
// a state, progress, an error and start/end times, run on threads of its own (never on an I/O
// thread) and cancellable. JOB.STATUS / JOB.CANCEL / JOB.LIST (src/server/cmd_job.cc) read it.
//
// Contracts
// ---------
// 1. Start returns at once with the job's id (ids increase from 1, never reused in a
//    registry's life; in a cluster each is its member's base plus that count, SetMember, so an
//    id names the member that runs it); the work runs on a thread the registry starts for it. At
//    most max_running jobs run at once: one more is refused (ResourceExhausted), never queued
//    without bound.
// 2. A job's state goes running -> done | failed | cancelled, once. Work that returns OK is done;
//    Cancelled after Cancel() (or any Cancelled status) is cancelled; any other status is failed
//    with that status's message as its error.
// 3. Cancel sets the job's cancel flag, which the work polls (Context::cancelled(), or the
//    atomic itself handed to a parser); it does not wait. Cancelling a finished job is
//    FailedPrecondition, an unknown id NotFound.
// 4. Finished jobs are kept for Status/List, at most max_kept of them: the oldest finished is
//    forgotten first. Running jobs are always kept.
// 5. The destructor cancels every running job and joins its thread: work must poll its flag.
//
// Thread rule: Registry is thread-safe. A Context belongs to its job's thread, but its progress
// setters are atomics the registry reads from any thread.

#ifndef FLOE_JOB_JOB_H_
#define FLOE_JOB_JOB_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/base.h"

namespace floe::job {

enum class State : uint8_t { kRunning, kDone, kFailed, kCancelled };
std::string_view StateName(State state);

// What the work sees of its job.
class Context {
 public:
  // The flag Cancel sets; poll it, or hand it to code that polls (parse::ParseControl::cancel).
  const std::atomic<bool>* cancel_flag() const { return &cancel_; }
  bool cancelled() const { return cancel_.load(std::memory_order_relaxed); }
  // The work stops itself through the same flag (an import out of memory stops its parser);
  // its state is still decided by the status it returns.
  void Cancel() { cancel_.store(true, std::memory_order_relaxed); }
  // Progress, any time (relaxed: statistics read by Status).
  void SetProgress(uint64_t rows, uint64_t bytes_done, uint64_t bytes_total) {
    rows_.store(rows, std::memory_order_relaxed);
    bytes_done_.store(bytes_done, std::memory_order_relaxed);
    bytes_total_.store(bytes_total, std::memory_order_relaxed);
  }
  // A line of text Status shows once the job is done (what it made: "frame t, 1000 rows").
  void SetResult(std::string text);

 private:
  friend class Registry;
  std::atomic<bool> cancel_{false};
  std::atomic<uint64_t> rows_{0}, bytes_done_{0}, bytes_total_{0};
  mutable Mutex mu_;
  std::string result_ FLOE_GUARDED_BY(mu_);
};

// A copy of a job's state at one moment.
struct Info {
  uint64_t id = 0;
  std::string kind;         // "import"
  std::string description;  // what it works on: "t <- /data/t.csv"
  State state = State::kRunning;
  uint64_t rows = 0;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  double percent = 0;    // bytes_done / bytes_total, 100 once done; 0 while the total is unknown
  std::string error;     // failed or cancelled: why
  std::string result;    // Context::SetResult
  int64_t start_ms = 0;  // Unix milliseconds
  int64_t end_ms = 0;    // 0 while running
};

struct Counters {
  uint64_t started = 0, done = 0, failed = 0, cancelled = 0, refused = 0;
  uint64_t running = 0;
};

struct RegistryOptions {
  uint32_t max_running = 4;  // concurrent jobs; one more is refused (default 4)
  uint32_t max_kept = 100;   // finished jobs kept for Status/List (default 100)
};

class Registry {
 public:
  explicit Registry(RegistryOptions options = {});
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  using Work = std::function<Status(Context&)>;
  // Starts `work` on a thread of its own; returns the job's id. ResourceExhausted when
  // max_running jobs run already.
  Result<uint64_t> Start(std::string kind, std::string description, Work work);
  // Ids from now on are member x 2^32 + n (n counting on from 1: docs/frames_cluster.md, D11);
  // member 0, the default, gives the one-node ids 1, 2, 3, ... REQUIRES: member < 2^20 (a
  // node id). Once n passes 2^32 - 1 under a member, Start refuses (ResourceExhausted).
  void SetMember(uint32_t member);
  // The member a job id names (0 for one node's ids).
  static uint32_t MemberOf(uint64_t id) { return static_cast<uint32_t>(id >> kMemberShift); }
  static constexpr int kMemberShift = 32;
  // NotFound for an id not (or no longer) kept.
  Result<Info> Get(uint64_t id) const;
  // Contract 3.
  Status Cancel(uint64_t id);
  // Every kept job, by id.
  std::vector<Info> List() const;
  Counters counters() const;
  // Blocks until the job is finished (tests). NotFound for an unknown id.
  Result<Info> TEST_Wait(uint64_t id);

 private:
  struct Job {
    uint64_t id = 0;
    std::string kind, description;
    Context ctx;
    std::atomic<State> state{State::kRunning};
    std::string error;  // written by the job's thread before state leaves kRunning
    int64_t start_ms = 0;
    std::atomic<int64_t> end_ms{0};
    std::thread thread;
  };
  static Info Snapshot(const Job& job);
  void Finish(Job* job, const Status& status);
  // Joins the threads of finished jobs and forgets the oldest beyond max_kept.
  void Trim() FLOE_REQUIRES(mu_);

  const RegistryOptions options_;
  mutable Mutex mu_;
  std::list<std::shared_ptr<Job>> jobs_ FLOE_GUARDED_BY(mu_);  // by id
  // Threads of forgotten jobs whose work has returned but that may not have exited yet.
  std::vector<std::thread> finished_threads_ FLOE_GUARDED_BY(mu_);
  uint64_t next_id_ FLOE_GUARDED_BY(mu_) = 1;
  uint64_t id_base_ FLOE_GUARDED_BY(mu_) = 0;  // SetMember
  Counters counters_ FLOE_GUARDED_BY(mu_);
  std::condition_variable_any finished_;
};

}  // namespace floe::job

#endif  // FLOE_JOB_JOB_H_
