// Fork/join on one node: a shared counter hands out indices to workers, the caller's thread
// being one of them, so a task over a few chunks starts few threads.

#include "mr/mr.h"

#include <algorithm>
#include <exception>
#include <mutex>
#include <new>
#include <thread>

namespace floe::mr {

size_t WorkerCount(const TaskOptions& options, size_t n) {
  const size_t threads =
      options.threads != 0 ? options.threads : std::thread::hardware_concurrency();
  return std::clamp<size_t>(threads, 1, std::max<size_t>(n, 1));
}

Status ForkJoin(size_t n, const TaskOptions& options, const std::function<void(size_t)>& fn) {
  if (n == 0) return Status::OK();
  const size_t threads = WorkerCount(options, n);
  std::atomic<size_t> next{0};
  std::atomic<bool> stopped{false};
  std::mutex failure_mu;
  Status failure;
  auto work = [&] {
    for (;;) {
      // relaxed: the flag is a request; the indices are handed out by the counter alone.
      if (stopped.load(std::memory_order_relaxed)) return;  // cancelled, or a worker failed
      if (options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed)) {
        stopped.store(true, std::memory_order_relaxed);
        return;
      }
      // relaxed: each index goes to one worker; the join below orders the results.
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) return;
      // An exception (an allocation that failed) stops the task with an error instead of ending
      // the process from a worker thread.
      try {
        if (options.stats != nullptr) {
          // relaxed: a statistic, read after the join.
          options.stats->chunks_mapped.fetch_add(1, std::memory_order_relaxed);
        }
        fn(i);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(failure_mu);
        if (failure.ok()) {
          failure = dynamic_cast<const std::bad_alloc*>(&e) != nullptr
                        ? Status::ResourceExhausted("out of memory")
                        : Status::Internal(std::string("internal error: ") + e.what());
        }
        stopped.store(true, std::memory_order_relaxed);
        return;
      }
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(threads - 1);
  for (size_t t = 1; t < threads; t++) {
    // Workers take chunks from a shared counter: a thread the system refuses leaves the work to
    // the others, the calling thread at the least.
    Result<std::thread> worker = StartThread(work);
    if (!worker.ok()) break;
    workers.push_back(std::move(*worker));
  }
  work();
  for (auto& w : workers) w.join();
  if (!failure.ok()) return failure;
  if (stopped.load(std::memory_order_relaxed)) return Status::Cancelled("task cancelled");
  return Status::OK();
}

}  // namespace floe::mr
