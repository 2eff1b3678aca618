// Epoch-based memory reclamation for the store (private to store/).
//
// How it works
// ------------
// A global epoch E counts up. A thread that reads shared pointers first announces the epoch it
// saw in its own record (Guard), and clears the record when done. Memory that has been unlinked
// from every shared structure is Retired with the epoch current at the time. E may advance from
// e to e+1 only when every announcing thread has announced e. So once E reaches r+2, no thread
// can still be inside a critical section that began at epoch r or earlier, and everything
// retired at r is unreachable and freed.
//
// Readers pay for one thread-local load and store per critical section. The store-load ordering
// a reader needs between announcing and then reading shared pointers is supplied asymmetrically:
// the reclaimer calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which runs a full barrier on
// every CPU running one of our threads, before it reads the announcements. Where membarrier is
// not available (old kernels, seccomp) readers fall back to a seq_cst fence. Under ThreadSanitizer,
// which does not model membarrier, every access is seq_cst.
//
// Thread rules: EpochDomain is thread-safe. A Guard belongs to the thread that made it; guards
// nest. A thread's unreclaimed retirements move to a shared orphan list when it exits.

#ifndef FLOE_STORE_INTERNAL_EPOCH_H_
#define FLOE_STORE_INTERNAL_EPOCH_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "base/base.h"

namespace floe::store::internal {

#if defined(__SANITIZE_THREAD__)
#define FLOE_EPOCH_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FLOE_EPOCH_TSAN 1
#endif
#endif

struct Retired {
  void* ptr;
  void (*deleter)(void*);
  uint64_t epoch;
  size_t bytes;
};

// One per thread that has ever entered a critical section; recycled when threads exit.
struct alignas(64) ThreadRecord {
  // 0: not in a critical section. Otherwise the epoch announced on entry.
  std::atomic<uint64_t> epoch{0};
  // Owned by a live thread. A record is claimed by CAS false->true, released on thread exit.
  std::atomic<bool> in_use{false};
  // Push-only list of all records; immutable once linked.
  ThreadRecord* next = nullptr;
};

class EpochDomain {
 public:
  static EpochDomain& Global();

  // Reclamation work is batched: every kRetireBatch retirements, or once kRetireBytes are
  // waiting, the retiring thread tries to advance the epoch and frees what is safe.
  static constexpr size_t kRetireBatch = 1024;
  static constexpr size_t kRetireBytes = 1 << 20;

  // Hands `ptr` to `deleter` once no critical section that might see it is still running.
  // `bytes` (a hint: what freeing it returns) makes large retirements reclaimed sooner.
  // REQUIRES: ptr is no longer reachable from any shared structure.
  void Retire(void* ptr, void (*deleter)(void*), size_t bytes = 0);

  // Tries to advance the epoch and frees this thread's and orphaned retirements that are safe.
  // Threads that retire rarely (an idle server) call it periodically so memory does not wait
  // for the next batch. Must not be called inside a critical section.
  void Poll();

  // Waits until everything retired before the call by any thread has been freed. For tests and
  // orderly shutdown; it spins while other threads stay inside critical sections.
  void Barrier();

  uint64_t TEST_epoch() const { return epoch_.load(std::memory_order_relaxed); }
  size_t TEST_pending() const;

  struct Local;  // per-thread state (epoch.cc)

  // The hot path, inlined into every store operation.
  void Enter(ThreadRecord* rec) {
    const uint64_t e = epoch_.load(std::memory_order_relaxed);
#ifdef FLOE_EPOCH_TSAN
    rec->epoch.store(e, std::memory_order_seq_cst);
#else
    // relaxed: the ordering against the loads that follow comes from the fence below (or, on
    // the asymmetric path, from the reclaimer's membarrier).
    rec->epoch.store(e, std::memory_order_relaxed);
    if (FLOE_PREDICT_TRUE(use_membarrier_)) {
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
#endif
  }
  void Exit(ThreadRecord* rec) {
    // release: every read made inside the critical section happens before the reclaimer's
    // acquire load that sees this 0, and so before any free that follows it.
    rec->epoch.store(0, std::memory_order_release);
  }

  ThreadRecord* AcquireRecord();
  void ReleaseRecord(ThreadRecord* rec, std::vector<Retired>* leftovers);

 private:
  EpochDomain();

  // Advances the epoch if every active thread has announced the current one; returns the epoch
  // after the attempt.
  uint64_t TryAdvance();
  void FreeExpired(std::vector<Retired>* list, uint64_t safe_before);
  void ReclaimOrphans(uint64_t safe_before);

  std::atomic<uint64_t> epoch_{1};
  bool use_membarrier_ = false;
  std::atomic<ThreadRecord*> records_{nullptr};
  mutable Mutex orphans_mu_;
  std::vector<Retired> orphans_ FLOE_GUARDED_BY(orphans_mu_);
};

// Per-thread record and nesting count. Constructed on a thread's first Guard.
struct EpochDomain::Local {
  ThreadRecord* rec = nullptr;
  uint32_t nesting = 0;
  uint32_t since_reclaim = 0;
  size_t pending_bytes = 0;
  std::vector<Retired> limbo;
  Local();
  ~Local();
};

EpochDomain::Local& LocalEpochState();

// RAII critical section. Cheap: no atomic read-modify-write, no fence on the common path.
class Guard {
 public:
  Guard() : local_(LocalEpochState()) {
    if (local_.nesting++ == 0) EpochDomain::Global().Enter(local_.rec);
  }
  ~Guard() {
    if (--local_.nesting == 0) EpochDomain::Global().Exit(local_.rec);
  }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

 private:
  EpochDomain::Local& local_;
};

}  // namespace floe::store::internal

#endif  // FLOE_STORE_INTERNAL_EPOCH_H_
