#include "store/internal/epoch.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

namespace floe::store::internal {

namespace {

bool RegisterMembarrier() {
#ifdef FLOE_EPOCH_TSAN
  return false;
#else
  const long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (cmds < 0 || (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return false;
  return syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#endif
}

void HeavyBarrier(bool use_membarrier) {
  if (use_membarrier) {
    // Cannot fail once registered; if it somehow did, a full fence here would not be enough for
    // readers that skipped theirs, so treat failure as fatal rather than risk a use-after-free.
    FLOE_CHECK(syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0);
  } else {
#ifndef FLOE_EPOCH_TSAN
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
    // Under TSan every announcement and every read of one is seq_cst instead (epoch.h).
  }
}

}  // namespace

EpochDomain::EpochDomain() : use_membarrier_(RegisterMembarrier()) {}

ThreadRecord* EpochDomain::AcquireRecord() {
  // acquire: we read `next` of records linked by other threads.
  for (ThreadRecord* r = records_.load(std::memory_order_acquire); r != nullptr; r = r->next) {
    bool expected = false;
    // relaxed: a cheap look before the CAS; acquire on the CAS pairs with ReleaseRecord's
    // release, so the previous owner's last use of the record happens before ours.
    if (!r->in_use.load(std::memory_order_relaxed) &&
        r->in_use.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      return r;
    }
  }
  auto* rec = new ThreadRecord();
  // relaxed: rec is not shared yet; the release CAS below publishes it.
  rec->in_use.store(true, std::memory_order_relaxed);
  ThreadRecord* head = records_.load(std::memory_order_relaxed);  // relaxed: the CAS rechecks
  do {
    rec->next = head;
    // release: publishes rec (and rec->next) to readers of records_.
  } while (!records_.compare_exchange_weak(head, rec, std::memory_order_release,
                                           std::memory_order_relaxed));
  return rec;
}

void EpochDomain::ReleaseRecord(ThreadRecord* rec, std::vector<Retired>* leftovers) {
  Seal(leftovers, 0);  // idempotent for entries already sealed: a later stamp only delays them
  if (!leftovers->empty()) {
    MutexLock lock(&orphans_mu_);
    orphans_.insert(orphans_.end(), leftovers->begin(), leftovers->end());
    leftovers->clear();
  }
  // release: as Exit's; the thread's critical sections are over.
  rec->epoch.store(0, std::memory_order_release);
  // release: the next owner sees the record quiescent.
  rec->in_use.store(false, std::memory_order_release);
}

void EpochDomain::TEST_ReclaimerBarrier() { HeavyBarrier(use_membarrier_); }

uint64_t EpochDomain::TryAdvance() {
  // seq_cst, and before the barrier: step 2 of the essay in epoch.h needs this load to precede
  // B, so that every seal it reads past precedes B too.
  const uint64_t e = epoch_.load(std::memory_order_seq_cst);
  HeavyBarrier(use_membarrier_);
  for (ThreadRecord* r = records_.load(std::memory_order_acquire); r != nullptr; r = r->next) {
    // acquire: pairs with Exit's (and Enter's) release, so the reader's accesses happen before
    // our frees.
    const uint64_t announced = r->epoch.load(std::memory_order_acquire);
    if (announced != 0 && announced != e) return e;
  }
  uint64_t expected = e;
  // seq_cst: a read-modify-write, so it continues the release sequence of every seal before it
  // (step 1); on failure another thread advanced, and the load below returns its value.
  epoch_.compare_exchange_strong(expected, e + 1, std::memory_order_seq_cst);
  // seq_cst: callers free by this value; it is at least what our CAS (or a rival's) wrote.
  return epoch_.load(std::memory_order_seq_cst);
}

void EpochDomain::Seal(std::vector<Retired>* list, size_t from) {
  if (from >= list->size()) return;
    // X: orders the unlinking stores of everything in the batch before the stamp (step 2).
    // (TSan does not model standalone fences; it sees the seq_cst read-modify-write below.)
#ifndef FLOE_EPOCH_TSAN
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  // S: seq_cst read-modify-write; readers that load a later epoch synchronize with it (step 1).
  const uint64_t stamp = epoch_.fetch_add(0, std::memory_order_seq_cst);
  for (size_t i = from; i < list->size(); i++) (*list)[i].epoch = stamp;
}

size_t EpochDomain::FreeExpired(std::vector<Retired>* list, uint64_t safe_before) {
  // Retired objects were last touched long ago and are cold: fetch them all first, so the
  // deleters below overlap their cache misses instead of taking them one at a time.
  for (const Retired& r : *list) {
    if (r.epoch + 2 <= safe_before) __builtin_prefetch(r.ptr, 1);
  }
  size_t kept = 0;
  Local& local = LocalEpochState();
  // Deleters may retire more memory onto this very list (a value's decoded object): walk a
  // snapshot, and keep what was appended meanwhile.
  const size_t n = list->size();
  for (size_t i = 0; i < n; i++) {
    Retired r = (*list)[i];
    if (r.epoch + 2 <= safe_before) {
      if (list == &local.limbo) local.pending_bytes -= std::min(local.pending_bytes, r.bytes);
      r.deleter(r.ptr);
    } else {
      (*list)[kept++] = r;
    }
  }
  const size_t appended_at = kept;
  for (size_t i = n; i < list->size(); i++) (*list)[kept++] = (*list)[i];
  list->resize(kept);
  return appended_at;
}

void EpochDomain::ReclaimOrphans(uint64_t current) {
  std::vector<Retired> ready;
  {
    MutexLock lock(&orphans_mu_);
    if (orphans_.empty()) return;
    size_t kept = 0;
    for (Retired& r : orphans_) {
      if (r.epoch + 2 <= current) {
        ready.push_back(r);
      } else {
        orphans_[kept++] = r;
      }
    }
    orphans_.resize(kept);
  }
  // Deleters run outside the lock: they may retire more memory.
  for (Retired& r : ready) r.deleter(r.ptr);
}

void EpochDomain::ReclaimLocal(Local* local, int advances) {
  // A deleter that retires more memory must not start a reclamation inside this one: it would
  // compact the list FreeExpired is walking.
  if (local->reclaiming) return;
  local->reclaiming = true;
  local->since_reclaim = 0;
  local->reclaim_after_exit = false;
  Seal(&local->limbo, local->unsealed);
  local->unsealed = local->limbo.size();
  uint64_t now = 0;
  for (int i = 0; i < advances; i++) now = TryAdvance();
  local->unsealed = FreeExpired(&local->limbo, now);
  ReclaimOrphans(now);
  // Large retirements the epoch could not free yet (our own critical section, or another
  // thread's, holds it back): try again when ours ends, and otherwise not before another
  // kRetireBytes arrive, so a reader parked elsewhere does not make every retirement pay.
  if (local->pending_bytes >= kRetireBytes) {
    local->reclaim_after_exit = local->nesting > 0;
    local->reclaim_at_bytes = local->pending_bytes + kRetireBytes;
  } else {
    local->reclaim_at_bytes = kRetireBytes;
  }
  local->reclaiming = false;
}

void EpochDomain::Retire(void* ptr, void (*deleter)(void*), size_t bytes) {
  Local& local = LocalEpochState();
  // Never throws: callers retire what they already unpublished (a rebuilt table's old array,
  // a replaced value), and an exception there leaked it and left their accounting half done.
  // When the list is full, room comes first from a reservation, else from what the epoch lets
  // this thread free, else from one more try; only if all fail is `ptr` kept (leaked), never
  // freed under a reader.
  if (local.limbo.size() == local.limbo.capacity()) {
    try {
      local.limbo.reserve(std::max<size_t>(16, 2 * local.limbo.capacity()));
    } catch (const std::bad_alloc&) {
      try {
        ReclaimLocal(&local, local.nesting > 0 ? 1 : 2);
      } catch (...) {
      }
    }
  }
  // No stamp yet and no shared memory touched: the batch is sealed when it is reclaimed.
  try {
    local.limbo.push_back({ptr, deleter, 0, bytes});
  } catch (const std::bad_alloc&) {
    return;
  }
  local.pending_bytes += bytes;
  if (++local.since_reclaim < kRetireBatch && local.pending_bytes < local.reclaim_at_bytes) {
    return;
  }
  // Inside a critical section our own announcement allows one advance; outside, two free what
  // was just sealed when no one else holds the epoch back.
  ReclaimLocal(&local, local.nesting > 0 ? 1 : 2);
}

void EpochDomain::ReclaimAfterExit() {
  Local& local = LocalEpochState();
  ReclaimLocal(&local, 2);
}

void EpochDomain::Poll() {
  Local& local = LocalEpochState();
  FLOE_CHECK_MSG(local.nesting == 0, "Poll() inside a critical section cannot advance");
  if (local.limbo.empty() && TEST_pending() == 0) return;
  ReclaimLocal(&local, 1);
}

void EpochDomain::HandOff() {
  Local& local = LocalEpochState();
  FLOE_CHECK_MSG(local.nesting == 0, "HandOff() inside a critical section");
  if (local.limbo.empty() || local.reclaiming) return;
  // Sealed and handed over without an advance: an advance is the heavy barrier (membarrier,
  // an interrupt on every core running a thread of the process), and a handler thread goes
  // idle after nearly every request; doing it here cost a replicating cluster 7% of its CPU
  // (docs/perf.md, "Backups"). The I/O threads' Poll, ten times a second, frees the list.
  Seal(&local.limbo, local.unsealed);
  {
    MutexLock lock(&orphans_mu_);
    orphans_.insert(orphans_.end(), local.limbo.begin(), local.limbo.end());
  }
  local.limbo.clear();
  local.unsealed = 0;
  local.pending_bytes = 0;
  local.since_reclaim = 0;
  local.reclaim_at_bytes = kRetireBytes;
}

void EpochDomain::Barrier() {
  Local& local = LocalEpochState();
  FLOE_CHECK_MSG(local.nesting == 0, "Barrier() inside a critical section would deadlock");
  Seal(&local.limbo, local.unsealed);
  local.unsealed = local.limbo.size();
  // seq_cst: read after the seal above, so target covers every stamp given before the call.
  const uint64_t target = epoch_.load(std::memory_order_seq_cst) + 2;
  uint64_t now;
  while ((now = TryAdvance()) < target) std::this_thread::yield();
  const bool was_reclaiming = local.reclaiming;
  local.reclaiming = true;  // as in ReclaimLocal
  local.unsealed = FreeExpired(&local.limbo, now);
  ReclaimOrphans(now);
  local.reclaiming = was_reclaiming;
}

size_t EpochDomain::TEST_pending() const {
  MutexLock lock(&orphans_mu_);
  return orphans_.size();
}

EpochDomain::Local::Local() : rec(EpochDomain::Global().AcquireRecord()) {}

EpochDomain::Local::~Local() {
  EpochDomain::Global().ReleaseRecord(rec, &limbo);
  tls_local_epoch_state = nullptr;
}

EpochDomain::Local& InitLocalEpochState() {
  thread_local EpochDomain::Local local;
  tls_local_epoch_state = &local;
  return local;
}

}  // namespace floe::store::internal
