#include "store/store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace floe::store {
namespace {

ValuePtr V(std::string_view key, std::string_view payload, uint16_t type = 1) {
  Result<ValuePtr> v = Value::Make(key, type, payload);
  FLOE_CHECK(v.ok());
  return std::move(v).value();
}

std::string Payload(const Store& s, std::string_view key) {
  ValuePtr v = s.Get(key);
  return v ? std::string(v->payload()) : "<absent>";
}

TEST(KeyTest, HashTagFollowsTheRedisRule) {
  EXPECT_EQ(HashTag("{user1}.following"), "user1");
  EXPECT_EQ(HashTag("foo{bar}{zap}"), "bar");
  EXPECT_EQ(HashTag("foo{}{bar}"), "foo{}{bar}");  // empty tag: the whole key counts
  EXPECT_EQ(HashTag("foo{{bar}}zap"), "{bar");
  EXPECT_EQ(HashTag("no-tag"), "no-tag");
  EXPECT_EQ(HashTag("open{only"), "open{only");
  EXPECT_EQ(HomeHash("{u}.a"), HomeHash("{u}.b"));
  EXPECT_NE(HashBytes("{u}.a"), HashBytes("{u}.b"));
}

TEST(KeyTest, KeyCachesBothHashesAndEnforcesTheLimit) {
  Result<Key> k = Key::Make("{t}x");
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->hash(), HashBytes("{t}x"));
  EXPECT_EQ(k->home_hash(), HashBytes("t"));
  EXPECT_TRUE(Key::Make(std::string(kMaxKeyBytes, 'k')).ok());
  EXPECT_EQ(Key::Make(std::string(kMaxKeyBytes + 1, 'k')).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(ValueTest, HoldsKeyTypePayloadAndAUniqueVersion) {
  ValuePtr a = V("k", "payload", 7);
  ValuePtr b = V("k", "payload", 7);
  EXPECT_EQ(a->key(), "k");
  EXPECT_EQ(a->payload(), "payload");
  EXPECT_EQ(a->type(), 7);
  EXPECT_NE(a->version(), 0u);
  EXPECT_NE(a->version(), b->version());
  EXPECT_EQ(a->AllocatedBytes(), sizeof(Value) + 1 + 7);
  EXPECT_EQ(Value::Make(std::string(kMaxKeyBytes + 1, 'k'), 1, "").status().code(),
            StatusCode::kInvalidArgument);
  ValuePtr empty = V("", "");
  EXPECT_EQ(empty->key(), "");
  EXPECT_EQ(empty->payload(), "");
}

TEST(ValueTest, ExpiryCostsBytesOnlyWhenSet) {
  ValuePtr plain = V("key", "payload");
  EXPECT_EQ(plain->expire_at_ms(), 0);
  EXPECT_FALSE(plain->IsExpired(INT64_MAX));
  Result<ValuePtr> timed = Value::Make("key", 1, "payload", 1000);
  ASSERT_TRUE(timed.ok());
  EXPECT_EQ((*timed)->expire_at_ms(), 1000);
  EXPECT_EQ((*timed)->key(), "key");
  EXPECT_EQ((*timed)->payload(), "payload");
  EXPECT_FALSE((*timed)->IsExpired(999));
  EXPECT_TRUE((*timed)->IsExpired(1000));
  EXPECT_EQ((*timed)->AllocatedBytes(), plain->AllocatedBytes() + 8);
}

struct Decoded : DecodedObject {
  explicit Decoded(int v) : value(v) {}
  int value;
};

TEST(ValueTest, CachesOneDecodedObject) {
  ValuePtr v = V("k", "42");
  EXPECT_EQ(v->decoded(), nullptr);
  const DecodedObject* first = v->CacheDecoded(std::make_unique<Decoded>(42));
  const DecodedObject* second = v->CacheDecoded(std::make_unique<Decoded>(43));
  EXPECT_EQ(first, second);
  EXPECT_EQ(static_cast<const Decoded*>(v->decoded())->value, 42);
}

TEST(StoreTest, PutGetRemove) {
  Store s;
  EXPECT_EQ(s.Get("a"), nullptr);
  s.Put(V("a", "1"));
  EXPECT_EQ(Payload(s, "a"), "1");
  s.Put(V("a", "2"));
  EXPECT_EQ(Payload(s, "a"), "2");
  EXPECT_EQ(s.Size(), 1u);
  EXPECT_TRUE(s.Contains("a"));
  EXPECT_TRUE(s.Remove("a"));
  EXPECT_FALSE(s.Remove("a"));
  EXPECT_FALSE(s.Contains("a"));
  EXPECT_EQ(s.Size(), 0u);
}

TEST(StoreTest, ReadDoesNotCallFnOnMiss) {
  Store s;
  int calls = 0;
  EXPECT_FALSE(s.Read("x", [&](const Value&) { calls++; }));
  s.Put(V("x", "y"));
  std::string seen;
  EXPECT_TRUE(s.Read("x", [&](const Value& v) {
    calls++;
    seen = v.payload();
  }));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen, "y");
}

TEST(StoreTest, ExchangeTakeAndPutIfAbsent) {
  Store s;
  EXPECT_EQ(s.Exchange(V("k", "1")), nullptr);
  ValuePtr old = s.Exchange(V("k", "2"));
  ASSERT_TRUE(old);
  EXPECT_EQ(old->payload(), "1");
  EXPECT_FALSE(s.PutIfAbsent(V("k", "3")));
  EXPECT_EQ(Payload(s, "k"), "2");
  ValuePtr taken = s.Take("k");
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->payload(), "2");
  EXPECT_EQ(s.Take("k"), nullptr);
  EXPECT_TRUE(s.PutIfAbsent(V("k", "4")));
  EXPECT_EQ(Payload(s, "k"), "4");
}

TEST(StoreTest, CompareAndPutChecksTheVersion) {
  Store s;
  EXPECT_TRUE(s.CompareAndPut(V("k", "1"), 0).ok());
  EXPECT_EQ(s.CompareAndPut(V("k", "x"), 0).code(), StatusCode::kAborted);
  const uint64_t v1 = s.Get("k")->version();
  EXPECT_EQ(s.CompareAndPut(V("k", "x"), v1 + 12345).code(), StatusCode::kAborted);
  EXPECT_TRUE(s.CompareAndPut(V("k", "2"), v1).ok());
  EXPECT_EQ(Payload(s, "k"), "2");
  // The old version is gone for good: versions are never reused.
  EXPECT_EQ(s.CompareAndPut(V("k", "3"), v1).code(), StatusCode::kAborted);
}

TEST(StoreTest, UpdateAppliesAndPropagatesErrors) {
  Store s;
  auto incr = [](const Value* cur) -> Result<Mutation> {
    int64_t n = cur ? std::stoll(std::string(cur->payload())) : 0;
    return Mutation::Put(V("n", std::to_string(n + 1)));
  };
  for (int i = 0; i < 5; i++) ASSERT_TRUE(s.Update("n", incr).ok());
  Result<ValuePtr> r = s.Update("n", incr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->payload(), "6");
  Result<ValuePtr> bad =
      s.Update("n", [](const Value*) -> Result<Mutation> { return Status::InvalidArgument("no"); });
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Payload(s, "n"), "6");
  Result<ValuePtr> keep =
      s.Update("n", [](const Value*) { return Result<Mutation>(Mutation::Keep()); });
  ASSERT_TRUE(keep.ok());
  EXPECT_EQ((*keep)->payload(), "6");
  Result<ValuePtr> gone =
      s.Update("n", [](const Value*) { return Result<Mutation>(Mutation::Remove()); });
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(*gone, nullptr);
  EXPECT_FALSE(s.Contains("n"));
}

TEST(StoreTest, ConcurrentUpdatesLoseNothing) {
  Store s;
  constexpr int kThreads = 4;
  constexpr int kIncrements = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; i++) {
        FLOE_CHECK(s.Update("counter", [](const Value* cur) -> Result<Mutation> {
                      int64_t n = cur ? std::stoll(std::string(cur->payload())) : 0;
                      return Mutation::Put(V("counter", std::to_string(n + 1)));
                    }).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(Payload(s, "counter"), std::to_string(kThreads * kIncrements));
}

TEST(StoreTest, GrowsAndKeepsEveryKey) {
  Store s;
  constexpr int kKeys = 100000;
  for (int i = 0; i < kKeys; i++) s.Put(V("key:" + std::to_string(i), std::to_string(i)));
  EXPECT_EQ(s.Size(), static_cast<size_t>(kKeys));
  EXPECT_GT(s.TEST_ShardCapacity("key:1"), 8u);
  for (int i = 0; i < kKeys; i++) {
    ASSERT_EQ(Payload(s, "key:" + std::to_string(i)), std::to_string(i)) << i;
  }
  EXPECT_GT(s.MemoryUsed(), kKeys * sizeof(Value));
}

TEST(StoreTest, ArraysFromTheHugePageArenaAreReusedAfterShrinking) {
  Store s;
  for (int i = 0; i < 1000; i++) s.Put(V("a" + std::to_string(i), std::to_string(i)));
  for (int round = 0; round < 2; round++) {
    // Ten doublings take every shard past 64 KiB (4,096 slots), where arrays come from the
    // arena; the second round gets the first round's arrays back from its free lists.
    for (int g = 0; g < 10; g++) s.TEST_ResizeAll(/*grow=*/true);
    ASSERT_GE(s.TEST_ShardCapacity("a1"), 4096u);
    for (int i = 0; i < 1000; i++) {
      ASSERT_EQ(Payload(s, "a" + std::to_string(i)), std::to_string(i)) << i;
    }
    EXPECT_FALSE(s.Contains("absent"));
    s.TEST_ResizeAll(/*grow=*/false);
    ASSERT_LE(s.TEST_ShardCapacity("a1"), 64u);
    internal::EpochDomain::Global().Barrier();  // the big arrays go back to the arena
  }
  EXPECT_EQ(s.Size(), 1000u);
}

TEST(StoreTest, TombstonesAreReclaimedByRebuilds) {
  Store s;
  // Insert and remove many distinct keys: without rebuilds, tombstones would fill the table.
  for (int i = 0; i < 200000; i++) {
    const std::string k = "churn:" + std::to_string(i);
    s.Put(V(k, "x"));
    ASSERT_TRUE(s.Remove(k));
  }
  EXPECT_EQ(s.Size(), 0u);
  EXPECT_LE(s.TEST_ShardCapacity("churn:1"), 64u);
}

TEST(StoreTest, FullHashCollisionsStayDistinct) {
  Store s;
  constexpr uint64_t kSameHash = 0x1234;
  auto put = [&](const std::string& k, const std::string& v) {
    ASSERT_TRUE(s.Update(KeyView(k, kSameHash), [&](const Value*) -> Result<Mutation> {
                   return Mutation::Put(V(k, v));
                 }).ok());
  };
  for (int i = 0; i < 50; i++) put("c" + std::to_string(i), std::to_string(i));
  for (int i = 0; i < 50; i += 2) {
    ASSERT_TRUE(s.Update(KeyView("c" + std::to_string(i), kSameHash), [](const Value*) {
                   return Result<Mutation>(Mutation::Remove());
                 }).ok());
  }
  put("c0", "again");
  for (int i = 1; i < 50; i += 2) {
    std::string seen;
    ASSERT_TRUE(s.Read(KeyView("c" + std::to_string(i), kSameHash),
                       [&](const Value& v) { seen = v.payload(); }));
    EXPECT_EQ(seen, std::to_string(i));
  }
  EXPECT_FALSE(s.Read(KeyView("c2", kSameHash), [](const Value&) {}));
  EXPECT_TRUE(s.Read(KeyView("c0", kSameHash), [](const Value&) {}));
  EXPECT_EQ(s.Size(), 26u);
}

std::multiset<std::string> ScanAll(const Store& s, size_t count, bool resize_between = false,
                                   Store* mutable_store = nullptr) {
  std::multiset<std::string> seen;
  uint64_t cursor = 0;
  int calls = 0;
  do {
    cursor = s.Scan(cursor, count, [&](const Value& v) { seen.insert(std::string(v.key())); });
    // Grow three times, then shrink back, then grow again: both directions between calls.
    if (resize_between && mutable_store) mutable_store->TEST_ResizeAll(calls++ % 4 != 3);
  } while (cursor != 0);
  return seen;
}

TEST(StoreTest, ScanVisitsEveryKey) {
  Store s;
  EXPECT_TRUE(ScanAll(s, 10).empty());
  for (int i = 0; i < 5000; i++) s.Put(V("s" + std::to_string(i), ""));
  std::multiset<std::string> seen = ScanAll(s, 10);
  std::set<std::string> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), 5000u);
  EXPECT_EQ(seen.size(), 5000u);  // no resize, so no duplicates
}

TEST(StoreTest, ScanMissesNothingWhileTablesGrowBetweenCalls) {
  Store s;
  for (int i = 0; i < 3000; i++) s.Put(V("g" + std::to_string(i), ""));
  std::multiset<std::string> seen = ScanAll(s, 7, /*resize_between=*/true, &s);
  std::set<std::string> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), 3000u);
}

TEST(StoreTest, ScanMissesNothingWhileTablesShrinkBetweenCalls) {
  Store s;
  for (int i = 0; i < 20000; i++) s.Put(V("d" + std::to_string(i), ""));
  // Remove most keys: later inserts rebuild the shards smaller while the scan runs.
  for (int i = 1000; i < 20000; i++) s.Remove("d" + std::to_string(i));
  std::set<std::string> seen;
  uint64_t cursor = 0;
  int round = 0;
  do {
    cursor = s.Scan(cursor, 5, [&](const Value& v) { seen.insert(std::string(v.key())); });
    for (int j = 0; j < 50; j++) {
      const std::string k = "tmp" + std::to_string(round * 50 + j);
      s.Put(V(k, ""));
      s.Remove(k);
    }
    round++;
  } while (cursor != 0);
  for (int i = 0; i < 1000; i++) EXPECT_TRUE(seen.count("d" + std::to_string(i))) << i;
}

TEST(StoreTest, ActiveExpiryRemovesOnlyExpiredValues) {
  Store s;
  for (int i = 0; i < 1000; i++) {
    const std::string k = "e" + std::to_string(i);
    // Even keys expire at 100, odd ones at 10'000; plus keys without a TTL.
    ASSERT_TRUE(s.PutIfAbsent(*Value::Make(k, 1, "v", i % 2 == 0 ? 100 : 10'000)));
    s.Put(V("p" + std::to_string(i), "v"));
  }
  EXPECT_EQ(s.ExpiringCount(), 1000u);
  uint64_t cursor = 0;
  size_t removed = 0;
  for (int round = 0; round < 1000 && removed < 500; round++) {
    removed += s.RemoveExpired(&cursor, 64, /*now_ms=*/5000).removed;
  }
  EXPECT_EQ(removed, 500u);
  EXPECT_EQ(s.Size(), 1500u);
  EXPECT_EQ(s.ExpiringCount(), 500u);
  EXPECT_FALSE(s.Contains("e0"));
  EXPECT_TRUE(s.Contains("e1"));
  EXPECT_TRUE(s.Contains("p0"));
  // Replacing a value with a TTL by one without keeps the count right.
  s.Put(V("e1", "no ttl"));
  EXPECT_EQ(s.ExpiringCount(), 499u);
  s.Clear();
  EXPECT_EQ(s.ExpiringCount(), 0u);
}

TEST(StoreTest, ClearRemovesEverything) {
  Store s;
  for (int i = 0; i < 1000; i++) s.Put(V("c" + std::to_string(i), "v"));
  ValuePtr held = s.Get("c1");
  s.Clear();
  EXPECT_EQ(s.Size(), 0u);
  EXPECT_FALSE(s.Contains("c1"));
  EXPECT_EQ(held->payload(), "v");  // a held reference outlives the clear
  s.Put(V("c1", "w"));
  EXPECT_EQ(Payload(s, "c1"), "w");
}

TEST(StoreTest, MemoryAccountingFollowsPutsAndRemoves) {
  Store s;
  const size_t base = s.MemoryUsed();
  s.Put(V("m", std::string(1000, 'x')));
  EXPECT_GE(s.MemoryUsed(), base + 1000);
  s.Put(V("m", "small"));
  EXPECT_LT(s.MemoryUsed(), base + 1000);
  s.Remove("m");
  EXPECT_EQ(s.MemoryUsed(), base);
}

// A key whose table hash puts it in shard `shard` (the top 8 bits of its hash).
std::string KeyInShard(uint64_t shard, const std::string& prefix) {
  for (int i = 0;; i++) {
    std::string k = prefix + std::to_string(i);
    if (HashBytes(k) >> (64 - Store::kShardBits) == shard) return k;
  }
}

// Sets *flag when the value it is cached on is destroyed, so a test can see a free happen
// without touching freed memory.
struct DestroyFlag : DecodedObject {
  explicit DestroyFlag(std::atomic<int>* n) : destroyed(n) {}
  ~DestroyFlag() override { destroyed->fetch_add(1); }
  std::atomic<int>* destroyed;
};

ValuePtr Tracked(const std::string& key, std::string_view payload, std::atomic<int>* destroyed) {
  ValuePtr v = V(key, payload);
  v->CacheDecoded(std::make_unique<DestroyFlag>(destroyed));
  return v;
}

// Regression: Clear() retired each value while the old array, which still held it, was the
// published one, so a reader entering then could find the value and have it freed under it.
TEST(StoreTest, ClearFreesNoValueAReaderCanStillReach) {
  Store s;
  const std::string key = KeyInShard(0, "clear");  // Clear() rebuilds shard 0 first
  std::atomic<int> destroyed{0};
  s.Put(Tracked(key, "v", &destroyed));
  internal::EpochDomain::Global().Barrier();
  bool fired = false;
  bool found = false;
  int destroyed_while_reading = -1;
  s.TEST_SetHook([&](Store::TestPoint point) {
    if (point != Store::TestPoint::kRebuildBeforePublish || fired) return;
    fired = true;
    // Move the epoch past every retirement made so far, then let a reader in through the old
    // (frozen, still published) array and try to reclaim while it holds the value.
    internal::EpochDomain::Global().Poll();
    std::atomic<bool> inside{false};
    std::atomic<bool> go{false};
    std::thread reader([&] {
      found = s.Read(key, [&](const Value&) {
        inside = true;
        while (!go) std::this_thread::yield();
        destroyed_while_reading = destroyed.load();
      });
    });
    while (!inside) std::this_thread::yield();
    for (int i = 0; i < 4; i++) internal::EpochDomain::Global().Poll();
    go = true;
    reader.join();
  });
  s.Clear();
  s.TEST_SetHook(nullptr);
  ASSERT_TRUE(fired);
  EXPECT_TRUE(found);
  EXPECT_EQ(destroyed_while_reading, 0);
  internal::EpochDomain::Global().Barrier();
  EXPECT_EQ(destroyed.load(), 1);
}

// Regression: SCAN skipped a shard whose key count read 0, which happened while a key was
// present whenever another key of the shard was removed before its insert had been counted.
TEST(StoreTest, ScanFindsAKeyWhileAnotherOfItsShardComesAndGoes) {
  Store s;
  const std::string x = KeyInShard(3, "x");
  const std::string y = KeyInShard(3, "y");
  s.Put(V(x, "stays"));
  bool fired = false;
  std::set<std::string> seen;
  s.TEST_SetHook([&](Store::TestPoint point) {
    if (point != Store::TestPoint::kInsertPublished || fired) return;
    fired = true;
    EXPECT_TRUE(s.Remove(y));  // y is visible: another thread may remove it at once
    uint64_t cursor = 0;
    do {
      cursor = s.Scan(cursor, 100, [&](const Value& v) { seen.insert(std::string(v.key())); });
    } while (cursor != 0);
  });
  s.Put(V(y, "comes and goes"));
  s.TEST_SetHook(nullptr);
  ASSERT_TRUE(fired);
  EXPECT_EQ(seen.count(x), 1u);
  EXPECT_EQ(s.Size(), 1u);
}

// Regression: KEYS iterated with Scan, which passes a key again when a shard shrinks between
// calls. ForEach passes each key once while shards are rebuilt around it.
TEST(StoreTest, ForEachPassesEachKeyOnceWhileShardsRebuild) {
  Store s;
  constexpr int kStable = 20000;
  for (int i = 0; i < kStable; i++) s.Put(V("f" + std::to_string(i), ""));
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    for (int round = 0; !stop.load(); round++) s.TEST_ResizeAll(/*grow=*/round % 2 == 0);
  });
  for (int pass = 0; pass < 20; pass++) {
    std::multiset<std::string> seen;
    s.ForEach([&](const Value& v) {
      if (v.key().starts_with("f")) seen.insert(std::string(v.key()));
    });
    ASSERT_EQ(seen.size(), static_cast<size_t>(kStable)) << "pass " << pass;
    ASSERT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), seen.size());
  }
  stop = true;
  churn.join();
}

// Regression (issue item 4): replaced values were retired without their size, so a thread
// rewriting a large value freed the old versions only every 1,024 retirements.
TEST(StoreTest, ReplacingALargeValueManyTimesKeepsReclamationBounded) {
  std::atomic<int> destroyed{0};  // outlives the store, whose last value counts itself here
  Store s;
  internal::EpochDomain::Global().Barrier();
  constexpr size_t kBig = 2 << 20;
  const std::string payload(kBig, 'x');
  for (int i = 0; i < 40; i++) {
    s.Put(Tracked("big", payload, &destroyed));
    // i versions have been replaced; at most one of them may still wait for reclamation.
    EXPECT_GE(destroyed.load(), i - 1) << "after put " << i;
    EXPECT_LE(Store::TEST_PendingReclaimBytes(), 2 * (kBig + 1024)) << "after put " << i;
  }
}

}  // namespace
}  // namespace floe::store
