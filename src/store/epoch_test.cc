#include "store/internal/epoch.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace floe::store::internal {
namespace {

std::atomic<int> freed{0};
void CountFree(void* p) {
  delete static_cast<int*>(p);
  freed.fetch_add(1);
}

TEST(EpochTest, BarrierFreesEverythingRetiredBefore) {
  freed = 0;
  for (int i = 0; i < 10; i++) EpochDomain::Global().Retire(new int(i), CountFree, sizeof(int));
  EpochDomain::Global().Barrier();
  EXPECT_EQ(freed.load(), 10);
}

TEST(EpochTest, NothingIsFreedWhileAReaderIsInside) {
  freed = 0;
  std::atomic<bool> inside{false};
  std::atomic<bool> release{false};
  std::thread reader([&] {
    Guard g;
    inside = true;
    while (!release) std::this_thread::yield();
  });
  while (!inside) std::this_thread::yield();
  for (size_t i = 0; i < EpochDomain::kRetireBatch * 4; i++) {
    EpochDomain::Global().Retire(new int(1), CountFree, sizeof(int));
  }
  // The reader entered before these were retired, so none may be freed yet.
  EXPECT_EQ(freed.load(), 0);
  release = true;
  reader.join();
  EpochDomain::Global().Barrier();
  EXPECT_EQ(freed.load(), static_cast<int>(EpochDomain::kRetireBatch * 4));
}

TEST(EpochTest, GuardsNest) {
  freed = 0;
  {
    Guard a;
    { Guard b; }
    // Still inside `a`: retirements now must survive every attempt to advance.
    for (size_t i = 0; i < EpochDomain::kRetireBatch * 2; i++) {
      EpochDomain::Global().Retire(new int(3), CountFree, sizeof(int));
    }
    EXPECT_EQ(freed.load(), 0);
  }
  EpochDomain::Global().Barrier();
  EXPECT_EQ(freed.load(), static_cast<int>(EpochDomain::kRetireBatch * 2));
}

TEST(EpochTest, ExitedThreadsHandOverTheirRetirements) {
  freed = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([] {
      for (int i = 0; i < 5; i++) EpochDomain::Global().Retire(new int(i), CountFree, sizeof(int));
    });
  }
  for (auto& t : threads) t.join();
  EpochDomain::Global().Barrier();
  EXPECT_EQ(freed.load(), 20);
  EXPECT_EQ(EpochDomain::Global().TEST_pending(), 0u);
}

// A thread that stays alive but goes idle (an RPC handler between requests) hands its
// retirements over: another thread's Barrier frees them, and so does its Poll. Without HandOff
// they waited in the idle thread's own list for its next batch.
TEST(EpochTest, AnIdleThreadHandsOverItsRetirements) {
  EpochDomain::Global().Barrier();
  freed = 0;
  for (const bool poll : {false, true}) {
    const int before = freed.load();
    std::atomic<bool> handed{false}, done{false};
    std::thread idle([&] {
      for (int i = 0; i < 5; i++) EpochDomain::Global().Retire(new int(i), CountFree, sizeof(int));
      EpochDomain::Global().HandOff();
      handed = true;
      while (!done) std::this_thread::yield();  // alive, idle: never retires again
    });
    while (!handed) std::this_thread::yield();
    if (poll) {
      // Each Poll advances the epoch once at most: a few free them (bounded, so a miss fails).
      for (int i = 0; i < 10000 && freed.load() < before + 5; i++) {
        EpochDomain::Global().Poll();
        std::this_thread::yield();
      }
    } else {
      EpochDomain::Global().Barrier();
    }
    EXPECT_EQ(freed.load(), before + 5) << (poll ? "Poll" : "Barrier");
    done = true;
    idle.join();
  }
  // Nothing retired: nothing to do, and no lock taken.
  EpochDomain::Global().HandOff();
}

// Issue item 4: a large retirement made inside a critical section cannot be freed there (our
// own announcement holds the epoch back), so it is freed as soon as the outermost Guard ends
// instead of waiting for the next batch of 1,024.
TEST(EpochTest, ALargeRetirementIsFreedWhenTheOutermostGuardEnds) {
  EpochDomain::Global().Barrier();
  freed = 0;
  {
    Guard outer;
    {
      Guard inner;
      EpochDomain::Global().Retire(new int(5), CountFree, EpochDomain::kRetireBytes);
    }
    EXPECT_EQ(freed.load(), 0);  // still inside `outer`
  }
  EXPECT_EQ(freed.load(), 1);
}

// A deleter may retire more memory (a value's decoded object could hold another value). With
// a large size that retirement asks for a reclamation while one is already walking the list;
// it must wait for the next one instead of compacting the list under the walk.
std::atomic<int> chain_left{0};
void FreeAndRetireAnother(void* p) {
  delete static_cast<int*>(p);
  freed.fetch_add(1);
  if (chain_left.fetch_sub(1) > 0) {
    EpochDomain::Global().Retire(new int(0), FreeAndRetireAnother, EpochDomain::kRetireBytes);
  }
}

TEST(EpochTest, ADeleterMayRetireMoreMemory) {
  EpochDomain::Global().Barrier();
  freed = 0;
  chain_left = 20;
  for (int i = 0; i < 3; i++) {
    EpochDomain::Global().Retire(new int(0), FreeAndRetireAnother, EpochDomain::kRetireBytes);
  }
  for (int i = 0; i < 50 && freed.load() < 23; i++) EpochDomain::Global().Barrier();
  EXPECT_EQ(freed.load(), 23);
}

}  // namespace
}  // namespace floe::store::internal
