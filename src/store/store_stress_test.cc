// Writers, readers, removers, scanners and a resizer on one store at once. Keys carry
// generation numbers so that every reader can check it never sees time run backwards, and the
// final state can be checked against what each writer last did.
//
// Sized to finish in seconds in an optimized build and well inside the ctest timeout under
// ThreadSanitizer. FLOE_STRESS_SCALE (an integer, default 1) multiplies the work.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/store.h"
#include "testing/testing.h"

namespace floe::store {
namespace {

int Scale() {
  const char* s = std::getenv("FLOE_STRESS_SCALE");
  return s != nullptr && std::atoi(s) > 0 ? std::atoi(s) : 1;
}

ValuePtr V(const std::string& key, const std::string& payload) {
  Result<ValuePtr> v = Value::Make(key, 1, payload);
  FLOE_CHECK(v.ok());
  return std::move(v).value();
}

std::string WriterKey(int writer, int k) {
  return "w" + std::to_string(writer) + ":" + std::to_string(k);
}

TEST(StoreStressTest, MixedOperationsAcrossResizes) {
  const uint64_t seed = testing::Seed();
  SCOPED_TRACE("FLOE_TEST_SEED=" + std::to_string(seed));
  Store store;

  constexpr int kStable = 2000;  // never touched after setup; every full scan must see them
  constexpr int kWriters = 2;
  constexpr int kKeysPerWriter = 500;
  const int ops_per_writer = 150000 * Scale();

  for (int i = 0; i < kStable; i++) store.Put(V("stable:" + std::to_string(i), "s"));

  // last[w][k]: generation of the writer's last put, or -generation of its last remove.
  std::vector<std::vector<int64_t>> last(kWriters, std::vector<int64_t>(kKeysPerWriter, 0));
  std::atomic<int> writers_done{0};
  std::atomic<int64_t> failures{0};
  std::vector<std::thread> threads;

  for (int w = 0; w < kWriters; w++) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(seed + w);
      std::vector<int64_t> gen(kKeysPerWriter, 0);
      for (int op = 0; op < ops_per_writer; op++) {
        const int k = static_cast<int>(rng() % kKeysPerWriter);
        const std::string key = WriterKey(w, k);
        const int64_t g = ++gen[k];
        switch (rng() % 4) {
          case 0:
          case 1:
            store.Put(V(key, std::to_string(g)));
            last[w][k] = g;
            break;
          case 2: {
            // Update: same effect as a put of generation g, through the CAS loop.
            Result<ValuePtr> r = store.Update(key, [&](const Value*) -> Result<Mutation> {
              return Mutation::Put(V(key, std::to_string(g)));
            });
            if (!r.ok()) failures++;
            last[w][k] = g;
            break;
          }
          case 3:
            store.Remove(key);
            last[w][k] = -g;
            break;
        }
      }
      writers_done++;
    });
  }

  // Readers: generations of one key never go backwards for one reader.
  for (int r = 0; r < 2; r++) {
    threads.emplace_back([&, r] {
      std::mt19937 rng(seed + 100 + r);
      std::vector<std::vector<int64_t>> seen(kWriters, std::vector<int64_t>(kKeysPerWriter, 0));
      while (writers_done.load() < kWriters) {
        const int w = static_cast<int>(rng() % kWriters);
        const int k = static_cast<int>(rng() % kKeysPerWriter);
        store.Read(WriterKey(w, k), [&](const Value& v) {
          const int64_t g = std::stoll(std::string(v.payload()));
          if (g < seen[w][k]) failures++;
          seen[w][k] = g;
        });
        ValuePtr held = store.Get("stable:" + std::to_string(rng() % kStable));
        if (!held || held->payload() != "s") failures++;
      }
    });
  }

  // Scanner: every stable key appears in every complete scan.
  std::atomic<int> scans{0};
  threads.emplace_back([&] {
    while (writers_done.load() < kWriters) {
      std::set<std::string> got;
      uint64_t cursor = 0;
      do {
        cursor = store.Scan(cursor, 50, [&](const Value& v) {
          if (v.key().starts_with("stable:")) got.insert(std::string(v.key()));
        });
      } while (cursor != 0);
      if (got.size() != static_cast<size_t>(kStable)) failures++;
      scans++;
    }
  });

  // Churn and resizes: transient keys grow shards and leave tombstones; forced rebuilds freeze
  // slots under the writers' feet.
  threads.emplace_back([&] {
    int i = 0;
    while (writers_done.load() < kWriters) {
      for (int j = 0; j < 200; j++) store.Put(V("t:" + std::to_string(i + j), "t"));
      for (int j = 0; j < 200; j++) store.Remove("t:" + std::to_string(i + j));
      i += 200;
      if ((i / 200) % 5 == 0) store.TEST_ResizeAll(/*grow=*/(i / 200) % 10 == 0);
    }
  });

  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(scans.load(), 0);

  for (int w = 0; w < kWriters; w++) {
    for (int k = 0; k < kKeysPerWriter; k++) {
      ValuePtr v = store.Get(WriterKey(w, k));
      if (last[w][k] > 0) {
        ASSERT_TRUE(v) << WriterKey(w, k);
        EXPECT_EQ(v->payload(), std::to_string(last[w][k])) << WriterKey(w, k);
      } else {
        EXPECT_FALSE(v) << WriterKey(w, k);
      }
    }
  }
  size_t expected = kStable;
  for (int w = 0; w < kWriters; w++) {
    for (int k = 0; k < kKeysPerWriter; k++) expected += last[w][k] > 0 ? 1 : 0;
  }
  EXPECT_EQ(store.Size(), expected);
  internal::EpochDomain::Global().Barrier();
}

}  // namespace
}  // namespace floe::store
