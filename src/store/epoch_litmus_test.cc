// The store-buffering litmus test behind step 2 of the essay in internal/epoch.h: a reader
// announces itself (Enter) and then loads a pointer; a reclaimer unlinks the object, runs its
// barrier B and reads the announcement. At least one of them must see the other's store: the
// reclaimer sees the announcement (and keeps the object), or the reader sees the unlink (and
// never reaches the object). On x86 a plain store followed by a load may pass it in the store
// buffer, so without B -- a reader that skips its fence, a reclaimer with only a fence of its
// own -- both missed in 4 to 287 of 200,000 rounds (5 runs of 6) on this project's 2-core test
// host at a moderate load; with B (membarrier, or the reader's own fence where membarrier is
// missing) never. The pattern shows only while both threads run at once: on a host whose cores
// are taken by other work the rounds are few and the test loses its power (it still never
// passes a missing barrier off as a finding). Membarrier costs microseconds per round, so the
// rounds are bounded by time too.
//
// Not run under ThreadSanitizer, which models neither membarrier nor fences (epoch.h); there
// every announcement is seq_cst instead.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "store/internal/epoch.h"

namespace floe::store::internal {
namespace {

// Spins until `counter` reaches `at_least`, yielding now and then so that a descheduled peer on
// a busy host gets the core.
void AwaitAtLeast(const std::atomic<uint64_t>& counter, uint64_t at_least) {
  for (int spins = 0; counter.load(std::memory_order_acquire) < at_least; spins++) {
    if (spins % 1024 == 1023) std::this_thread::yield();
  }
}

// A short, varying delay, so the two sides' stores and loads overlap in every alignment.
void Jitter(uint32_t* seed) {
  *seed = *seed * 1103515245u + 12345u;
  for (uint32_t d = (*seed >> 16) % 64; d > 0; d--) {
    std::atomic_signal_fence(std::memory_order_seq_cst);  // keeps the loop
  }
}

TEST(EpochLitmusTest, TheReclaimerSeesTheAnnouncementOrTheReaderSeesTheUnlink) {
  EpochDomain& domain = EpochDomain::Global();
  ThreadRecord rec;  // the reader's; read directly by the reclaimer side below
  constexpr uint64_t kRounds = 200000;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  // The round whose object the reclaimer has unlinked, alone on its cache line as the record is.
  alignas(64) std::atomic<uint64_t> unlinked{0};
  alignas(64) std::atomic<uint64_t> go{0};
  std::atomic<uint64_t> reclaimer_done{0}, reader_done{0};
  std::atomic<bool> stop{false};
  std::vector<uint64_t> reader_saw(kRounds + 1, 0);
  uint64_t both_missed = 0, rounds = 0;

  std::thread reader([&] {
    uint32_t seed = 1;
    for (uint64_t i = 1; i <= kRounds; i++) {
      AwaitAtLeast(go, i);
      if (stop.load(std::memory_order_acquire)) return;
      // Each side starts the round with the line of the other's store in its cache, so its
      // load can be answered at once while its own store waits in the store buffer.
      (void)unlinked.load(std::memory_order_relaxed);
      Jitter(&seed);
      domain.Enter(&rec);
      // relaxed: the load the announcement must not be passed by (the pointer's load).
      reader_saw[i] = unlinked.load(std::memory_order_relaxed);
      AwaitAtLeast(reclaimer_done, i);  // stays inside until the reclaimer has looked
      domain.Exit(&rec);
      reader_done.store(i, std::memory_order_release);
    }
  });
  uint32_t seed = 7;
  for (uint64_t i = 1; i <= kRounds; i++) {
    if (std::chrono::steady_clock::now() > deadline) break;
    (void)rec.epoch.load(std::memory_order_relaxed);
    go.store(i, std::memory_order_release);
    Jitter(&seed);
    unlinked.store(i, std::memory_order_seq_cst);  // U: the unlink
    domain.TEST_ReclaimerBarrier();                // B
    // acquire: as TryAdvance reads records.
    const bool saw_reader = rec.epoch.load(std::memory_order_acquire) != 0;
    reclaimer_done.store(i, std::memory_order_release);
    AwaitAtLeast(reader_done, i);
    if (!saw_reader && reader_saw[i] < i) both_missed++;
    rounds = i;
  }
  stop.store(true, std::memory_order_release);
  go.store(kRounds + 1, std::memory_order_release);
  reader.join();
  EXPECT_EQ(both_missed, 0u) << "in " << rounds << " rounds";
  EXPECT_GE(rounds, 100u);  // the harness ran (a host too busy to run it fails, never passes)
}

}  // namespace
}  // namespace floe::store::internal
