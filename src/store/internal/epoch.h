// Epoch-based memory reclamation for the store (private to store/).
//
// How it works
// ------------
// A global epoch E counts up. A thread that reads shared pointers first announces the epoch it
// saw in its own record (Enter), and clears the record when done (Exit). Memory that has been
// unlinked from every shared structure is Retired to a thread-local list; before any of it may
// be freed, the list is sealed: stamped with the value of E read after the unlinks. E may
// advance from e to e+1 only when every announcing thread has announced e. Once E reaches s+2,
// nothing stamped s can be reached by any critical section, and it is freed.
//
// Why that holds, step by step. A reader R enters (L: load E -> a; A: store a to its record;
// F: fence) and then loads a pointer P to an object O. O was unlinked by a store U, then the
// retiring thread sealed: X (seq_cst fence), then S (E.fetch_add(0), seq_cst) -> s. O is freed
// only after some TryAdvance T moved E from s+1 to s+2, doing: load E -> s+1, then B (seq_cst
// fence or membarrier), then read every record, then CAS. Suppose R still held O then.
//   1. If a >= s+1: R's load L read a write of E made after S. Every write of E is a
//      read-modify-write (seals and advances), so that write is in S's release sequence and L
//      (acquire) synchronizes with S. U happens before S, so before P: P cannot return O.
//   2. So a <= s, and T must have missed R's announcement. T's load of E read s+1, written
//      after S; S and that load are both seq_cst, and the load precedes B, so S -- and X before
//      it -- precede B in the single total order of seq_cst operations and fences. If R's F
//      preceded B, T reads A (or later): it would not advance. If B preceded F: X precedes F,
//      and U is before X while P is after F, so P sees U: it cannot return O.
// Hence no critical section that may hold O is running when it is freed. Exit's release store
// of 0, read by T's acquire load, orders R's last reads of O before the free.
//
// Readers pay for one thread-local load and store per critical section and no fence. Their F
// is supplied asymmetrically: B is membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which runs a
// full barrier on every CPU running one of our threads, so for each reader it acts as a seq_cst
// fence at some point of its program order: after A (then T reads A) or before it (then X,
// which precedes B, is visible to R's later loads, P among them). Step 2 holds with F at that
// point; step 1 needs no fence. Where membarrier is not available (old kernels, seccomp)
// readers execute F themselves, a seq_cst fence. Under ThreadSanitizer, which does not model
// membarrier or standalone fences, every announcement and every read of one is seq_cst.
//
// Sealing costs a fence and a read-modify-write of E's cache line, so it is done per batch --
// when the thread next tries to reclaim -- not per retirement, which touches no shared memory.
// A stamp read later than the retirement only delays the free.
//
// Thread rules: EpochDomain is thread-safe. A Guard belongs to the thread that made it; guards
// nest. A thread's unreclaimed retirements move, sealed, to a shared orphan list when it exits.

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
  uint64_t epoch;  // the seal's stamp; 0 until the entry is sealed
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
  // Inline, so the hot path pays a guard-byte check rather than a call. Never destroyed:
  // threads may exit (and hand over their limbo lists) during static destruction. What is left
  // is reachable from here, so it is not a leak.
  static EpochDomain& Global() {
    static EpochDomain* const domain = new EpochDomain();
    return *domain;
  }

  // Reclamation work is batched: every kRetireBatch retirements, or once kRetireBytes more are
  // waiting, the retiring thread seals its list, tries to advance the epoch and frees what is
  // safe. Inside a critical section its own announcement lets the epoch move only once, so what
  // it just retired cannot be freed yet; if kRetireBytes are still waiting, it tries again the
  // moment its outermost Guard ends, when nothing of its own holds the epoch back.
  static constexpr size_t kRetireBatch = 1024;
  static constexpr size_t kRetireBytes = 1 << 20;

  // Hands `ptr` to `deleter` once no critical section that might see it is still running.
  // `bytes` is what freeing it returns: large retirements are reclaimed at once.
  // REQUIRES: ptr is no longer reachable from any shared structure (the unlinking store is
  // sequenced before this call).
  void Retire(void* ptr, void (*deleter)(void*), size_t bytes);

  // Tries to advance the epoch and frees this thread's and orphaned retirements that are safe.
  // Threads that retire rarely (an idle server) call it periodically so memory does not wait
  // for the next batch. Must not be called inside a critical section.
  void Poll();

  // Hands this thread's retirements, sealed, to the shared list that every thread's Poll frees
  // from (as a thread that exits does); it does not advance the epoch (no heavy barrier). For
  // threads that go idle without polling (the RPC handler pools): what they retired would
  // otherwise wait for their next batch. Cheap when nothing is waiting. Must not be called
  // inside a critical section.
  void HandOff();

  // Waits until everything retired before the call by this thread, and everything handed over
  // to the shared list (by threads that exited or went idle: HandOff), has been freed. Another
  // thread's own list is not its to free. For tests and orderly shutdown; it spins while other
  // threads stay inside critical sections.
  void Barrier();

  // B of the essay, as TryAdvance runs it: what makes a reader's announcement (Enter, which has
  // no fence of its own when membarrier is in use) visible to the reads of records after it.
  void TEST_ReclaimerBarrier();

  // relaxed: a test's look at the counter orders nothing.
  uint64_t TEST_epoch() const { return epoch_.load(std::memory_order_relaxed); }
  size_t TEST_pending() const;

  struct Local;  // per-thread state (epoch.cc)

  // The hot path, inlined into every store operation. Step numbers refer to the essay above.
  void Enter(ThreadRecord* rec) {
    // acquire: step 1 -- if this reads an epoch written after a seal, the unlinks sealed there
    // happen before our reads. (Free on x86; a load-acquire on ARM.)
    const uint64_t e = epoch_.load(std::memory_order_acquire);
#ifdef FLOE_EPOCH_TSAN
    rec->epoch.store(e, std::memory_order_seq_cst);
#else
    // release: a reclaimer that reads this announcement also sees our earlier critical
    // sections finished. Its ordering against the loads that follow is step 2's fence F.
    rec->epoch.store(e, std::memory_order_release);
    if (FLOE_PREDICT_TRUE(use_membarrier_)) {
      // F is the reclaimer's membarrier; this only keeps the compiler from moving our loads
      // above the announcement.
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      std::atomic_thread_fence(std::memory_order_seq_cst);  // F
    }
#endif
  }
  void Exit(ThreadRecord* rec) {
    // release: every read made inside the critical section happens before the reclaimer's
    // acquire load that sees this 0, and so before any free that follows it.
    rec->epoch.store(0, std::memory_order_release);
  }
  // After the outermost Guard of a thread whose large retirements could not be freed inside it.
  void ReclaimAfterExit();

  ThreadRecord* AcquireRecord();
  void ReleaseRecord(ThreadRecord* rec, std::vector<Retired>* leftovers);

 private:
  EpochDomain();

  // Advances the epoch if every active thread has announced the current one; returns the epoch
  // after the attempt.
  uint64_t TryAdvance();
  // Stamps the unsealed tail of `list`, starting at *from, with the epoch (X and S in the essay).
  void Seal(std::vector<Retired>* list, size_t from);
  // Seals this thread's list, advances the epoch up to `advances` times and frees what is safe.
  void ReclaimLocal(Local* local, int advances);
  // Frees what was sealed before `safe_before` - 1; returns where the entries that deleters
  // retired meanwhile (unsealed) now begin.
  size_t FreeExpired(std::vector<Retired>* list, uint64_t safe_before);
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
  bool reclaim_after_exit = false;         // set by Retire inside a critical section
  bool reclaiming = false;                 // inside ReclaimLocal (deleters may retire)
  size_t pending_bytes = 0;                // bytes retired by this thread and not yet freed
  size_t reclaim_at_bytes = kRetireBytes;  // pending_bytes that trigger the next attempt
  size_t unsealed = 0;                     // limbo[unsealed..] have no stamp yet
  std::vector<Retired> limbo;
  Local();
  ~Local();
};

// This thread's state. The fast path reads a constant-initialized thread-local pointer, which
// needs no TLS wrapper call; the first use on a thread constructs the state (epoch.cc).
inline constinit thread_local EpochDomain::Local* tls_local_epoch_state = nullptr;
EpochDomain::Local& InitLocalEpochState();
inline EpochDomain::Local& LocalEpochState() {
  EpochDomain::Local* local = tls_local_epoch_state;
  if (FLOE_PREDICT_TRUE(local != nullptr)) return *local;
  return InitLocalEpochState();
}

// RAII critical section. Cheap: no atomic read-modify-write, no fence on the common path.
class Guard {
 public:
  Guard() : local_(LocalEpochState()) {
    if (local_.nesting++ == 0) EpochDomain::Global().Enter(local_.rec);
  }
  ~Guard() {
    if (--local_.nesting == 0) {
      EpochDomain::Global().Exit(local_.rec);
      if (FLOE_PREDICT_FALSE(local_.reclaim_after_exit)) EpochDomain::Global().ReclaimAfterExit();
    }
  }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

 private:
  EpochDomain::Local& local_;
};

}  // namespace floe::store::internal

#endif  // FLOE_STORE_INTERNAL_EPOCH_H_
