// EngineBudget: a map/reduce task's working memory charged to maxmemory (private to server/).
// Moved here unchanged from cmd_frame_analytics.cc so that the derived-frame commands
// (cmd_frame_derive.cc) charge through the same mechanism.

#ifndef FLOE_SERVER_INTERNAL_ENGINE_BUDGET_H_
#define FLOE_SERVER_INTERNAL_ENGINE_BUDGET_H_

#include <atomic>
#include <cstdint>
#include <limits>

#include "mr/mr.h"
#include "server/internal/analytics_pool.h"
#include "server/internal/command.h"
#include "server/internal/sketch_cell.h"

namespace floe::server::internal {

// An analytics task's working memory charged to maxmemory as the task grows (sketch_cell.h,
// rule 8): reserved with the engine before it is allocated, refused with Redis's OOM error when
// used + reserved + bytes would pass maxmemory, given back as the task frees it, and whatever is
// left when the command ends. Without a maxmemory the bytes are still reserved, so that other
// commands' checks see them if one is set meanwhile. Thread-safe: the task's workers call it.
class EngineBudget : public mr::MemoryBudget {
 public:
  explicit EngineBudget(Engine& engine) : engine_(engine) {}
  EngineBudget(const EngineBudget&) = delete;
  EngineBudget& operator=(const EngineBudget&) = delete;
  ~EngineBudget() override {
    // relaxed: the task's workers were joined before the command ends.
    const int64_t left = held_.load(std::memory_order_relaxed);
    if (left > 0) engine_.ReleaseMemory(left);
  }
  Status Reserve(uint64_t bytes) override {
    const int64_t limit = engine_.maxmemory();
    const int64_t cap = limit > 0 ? limit : std::numeric_limits<int64_t>::max();
    if (bytes > static_cast<uint64_t>(cap)) return Status::ResourceExhausted(kOomError);
    const int64_t used = limit > 0 ? engine_.UsedMemoryNow() : 0;
    if (!engine_.TryReserveMemory(static_cast<int64_t>(bytes), used, cap)) {
      return Status::ResourceExhausted(kOomError);
    }
    // relaxed: a count only this budget's callers change; the engine's counter orders.
    const int64_t now = held_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed) +
                        static_cast<int64_t>(bytes);
    // A large task: the pool returns the allocator's free pages when it ends (once a budget).
    if (now >= static_cast<int64_t>(AnalyticsPool::kLargeTaskBytes) &&
        !large_.exchange(true, std::memory_order_relaxed)) {
      engine_.analytics().NoteLargeTask();
    }
    return Status::OK();
  }
  void Release(uint64_t bytes) override {
    held_.fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);  // as above
    engine_.ReleaseMemory(static_cast<int64_t>(bytes));
  }
  // What is reserved now (the task's workers joined, or on their thread).
  uint64_t held() const {
    const int64_t h = held_.load(std::memory_order_relaxed);  // as above
    return h > 0 ? static_cast<uint64_t>(h) : 0;
  }

 private:
  Engine& engine_;
  std::atomic<int64_t> held_{0};
  std::atomic<bool> large_{false};  // reached AnalyticsPool::kLargeTaskBytes (noted once)
};

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_ENGINE_BUDGET_H_
