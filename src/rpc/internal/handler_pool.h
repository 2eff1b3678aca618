// The handler threads of one RPC priority class (private to src/rpc: endpoint.cc). Thread-safe.

#ifndef FLOE_RPC_INTERNAL_HANDLER_POOL_H_
#define FLOE_RPC_INTERNAL_HANDLER_POOL_H_

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <deque>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "base/base.h"

namespace floe::rpc::internal {

// The priority class of the handler running on this thread; -1 elsewhere.
inline thread_local int tl_class = -1;

// A pool of threads for one priority class. An idle thread sleeps on a futex word rather than a
// condition_variable_any, whose internal mutex cost two more system calls per hand-off when the
// loop and the woken thread met on it. The futex is called directly: libstdc++'s
// atomic::wait first spins and calls sched_yield several times, and on a loaded 2-core host
// those yields were a quarter of a replicating cluster's CPU (docs/perf.md, "Backups").
class HandlerPool {
 public:
  HandlerPool(int priority, int threads, std::function<void()> on_idle)
      : on_idle_(std::move(on_idle)) {
    for (int i = 0; i < threads; i++) {
      threads_.emplace_back([this, priority] {
        tl_class = priority;
        bool worked = false;  // since on_idle_ last ran
        for (;;) {
          mu_.Lock();
          while (jobs_.empty() && !stop_) {
            if (worked && on_idle_) {
              // Out of work, before sleeping: once, outside the lock, then look again.
              worked = false;
              mu_.Unlock();
              on_idle_();
              mu_.Lock();
              continue;
            }
            sleepers_++;
            const uint32_t seen = wakes_.load(std::memory_order_acquire);
            mu_.Unlock();
            FutexWait(seen);
            mu_.Lock();
            sleepers_--;
          }
          if (jobs_.empty()) {
            mu_.Unlock();
            return;
          }
          std::function<void()> job = std::move(jobs_.front());
          jobs_.pop_front();
          mu_.Unlock();
          job();
          worked = true;
        }
      });
    }
  }
  ~HandlerPool() { Stop(); }
  // False once stopped: the job is not queued (a job queued before Stop runs before it returns).
  bool Add(std::function<void()> job) {
    bool wake;
    {
      MutexLock lock(&mu_);
      if (stop_) return false;
      jobs_.push_back(std::move(job));
      wake = sleepers_ > 0;
    }
    // Outside the lock, so the woken thread does not block on it at once.
    if (wake) {
      wakes_.fetch_add(1, std::memory_order_release);
      FutexWake(1);
    }
    return true;
  }
  void Stop() {
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    wakes_.fetch_add(1, std::memory_order_release);
    FutexWake(INT_MAX);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  // Sleeps while wakes_ still reads `seen` (returns at once if it changed; a spurious return
  // is harmless, the caller looks at the queue again).
  void FutexWait(uint32_t seen) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&wakes_), FUTEX_WAIT_PRIVATE, seen, nullptr,
            nullptr, 0);
  }
  void FutexWake(int count) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&wakes_), FUTEX_WAKE_PRIVATE, count, nullptr,
            nullptr, 0);
  }

  const std::function<void()> on_idle_;
  Mutex mu_;
  // Bumped to wake sleepers; a sleeper reads it under mu_ before it releases mu_, so a job
  // added after that changes it and the wait returns at once (no lost wake-up).
  std::atomic<uint32_t> wakes_{0};
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
                std::atomic<uint32_t>::is_always_lock_free);
  std::deque<std::function<void()>> jobs_ FLOE_GUARDED_BY(mu_);
  int sleepers_ FLOE_GUARDED_BY(mu_) = 0;
  bool stop_ FLOE_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace floe::rpc::internal

#endif  // FLOE_RPC_INTERNAL_HANDLER_POOL_H_
