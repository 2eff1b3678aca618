// A memory budget for tests of map/reduce tasks (mr_test, frame_derive_test): it records what a
// task holds and held at most, and refuses past a cap.

#ifndef FLOE_TESTING_BUDGET_H_
#define FLOE_TESTING_BUDGET_H_

#include <algorithm>
#include <cstdint>

#include "base/base.h"
#include "mr/mr.h"

namespace floe::testing {

class TestBudget : public mr::MemoryBudget {
 public:
  explicit TestBudget(uint64_t cap) : cap_(cap) {}
  Status Reserve(uint64_t bytes) override {
    MutexLock lock(&mu_);
    if (now_ + bytes > cap_) return Status::ResourceExhausted("over the test budget");
    now_ += bytes;
    peak_ = std::max(peak_, now_);
    return Status::OK();
  }
  void Release(uint64_t bytes) override {
    MutexLock lock(&mu_);
    now_ -= bytes;
  }
  uint64_t peak() {
    MutexLock lock(&mu_);
    return peak_;
  }
  uint64_t now() {  // held now
    MutexLock lock(&mu_);
    return now_;
  }

 private:
  Mutex mu_;
  const uint64_t cap_;
  uint64_t now_ = 0, peak_ = 0;
};

}  // namespace floe::testing

#endif  // FLOE_TESTING_BUDGET_H_
