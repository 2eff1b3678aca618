// The DKV on simulated clusters (net::SimNetwork: one thread, virtual clock, seeded faults).
// One test per rule of docs/coherence.md, named there.

#include "dkv/dkv.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dkv/dkv_sim_testing.h"
#include "dkv/internal/messages.h"
#include "net/net.h"
#include "rpc/rpc.h"
#include "testing/testing.h"

namespace floe::dkv {
namespace {

constexpr uint64_t kLease = 2'000'000;  // SimSetup's default

using sim::SimCluster;
using sim::Str;

TEST(DkvTest, LocalGetSendsNothing) {
  SimCluster c(3, testing::Seed(1, true));
  ASSERT_TRUE(c.PutV(2, "n2:k", "v").ok());
  const uint64_t sent = c.net.stats().sent;
  EXPECT_EQ(c.Local(2, "n2:k"), "v");
  EXPECT_EQ(c.GetText(2, "n2:k"), "v");
  EXPECT_EQ(c.net.stats().sent, sent);
}

TEST(DkvTest, MissInstallsCopyAndRecordsHolder) {
  SimCluster c(3, testing::Seed(1, true));
  ASSERT_TRUE(c.PutV(1, "n2:k", "v").ok());
  EXPECT_EQ(c.Local(3, "n2:k"), "<miss>");
  EXPECT_EQ(c.GetText(3, "n2:k"), "v");
  EXPECT_EQ(c.at(3).stats().misses.load(), 1u);
  EXPECT_EQ(c.Local(3, "n2:k"), "v");
  // Recorded as a holder: a write invalidates it.
  ASSERT_TRUE(c.PutV(1, "n2:k", "w").ok());
  EXPECT_EQ(c.at(3).stats().invalidations_received.load(), 1u);
  EXPECT_EQ(c.Local(3, "n2:k"), "<miss>");
}

TEST(DkvTest, CachedGetSendsNothing) {
  SimCluster c(3, testing::Seed(1, true));
  ASSERT_TRUE(c.PutV(1, "n2:k", "v").ok());
  EXPECT_EQ(c.GetText(3, "n2:k"), "v");
  const uint64_t sent = c.net.stats().sent;
  for (int i = 0; i < 10; i++) EXPECT_EQ(c.GetText(3, "n2:k"), "v");
  EXPECT_EQ(c.net.stats().sent, sent);
  EXPECT_EQ(c.at(3).stats().cache_hits.load(), 10u);
}

TEST(DkvTest, WriteInvalidatesEveryHolderBeforeAck) {
  SimCluster c(5, testing::Seed(1, true));
  ASSERT_TRUE(c.PutV(2, "n2:k", "old").ok());
  for (NodeId id : {1, 3, 4}) ASSERT_EQ(c.GetText(id, "n2:k"), "old");
  std::vector<std::string> seen_at_ack;
  std::optional<Result<std::string>> done;
  c.at(5).PutVolatile("n2:k", Str("new"), [&](Result<std::string> r) {
    for (NodeId id : {1, 2, 3, 4}) seen_at_ack.push_back(c.Local(id, "n2:k"));
    done = std::move(r);
  });
  c.net.RunUntil([&] { return done.has_value(); }, 10'000'000);
  ASSERT_TRUE(done && done->ok());
  // No holder serves the old value once the writer has its answer; the home has the new one.
  EXPECT_EQ(seen_at_ack, (std::vector<std::string>{"<miss>", "new", "<miss>", "<miss>"}));
  EXPECT_EQ(c.Local(5, "n2:k"), "new");  // the writer caches what it wrote
  EXPECT_EQ(c.at(2).stats().invalidations_sent.load(), 3u);
}

TEST(DkvTest, GetDuringWriteIsNotCached) {
  SimCluster c(3, testing::Seed(1, true));
  ASSERT_TRUE(c.PutV(2, "n2:k", "old").ok());
  ASSERT_EQ(c.GetText(1, "n2:k"), "old");
  // Node 1 is cut off from the home: the home's write waits for node 1's lease to lapse.
  c.net.Cut(1, 2, true);
  std::optional<Result<std::string>> done;
  c.at(2).PutVolatile("n2:k", Str("new"), [&](Result<std::string> r) { done = std::move(r); });
  c.net.RunFor(200'000);
  ASSERT_FALSE(done.has_value());
  // Meanwhile node 3 reads: the old value (the write has not taken effect), not cached.
  EXPECT_EQ(c.GetText(3, "n2:k"), "old");
  EXPECT_EQ(c.Local(3, "n2:k"), "<miss>");
  c.net.RunUntil([&] { return done.has_value(); }, 10'000'000);
  ASSERT_TRUE(done && done->ok());
  EXPECT_EQ(c.GetText(3, "n2:k"), "new");
}

TEST(DkvTest, WriteCompletesAfterHolderLeaseLapses) {
  SimCluster c(3, testing::Seed(1, true));
  ASSERT_TRUE(c.PutV(2, "n2:k", "old").ok());
  ASSERT_EQ(c.GetText(1, "n2:k"), "old");
  c.net.Cut(1, 2, true);
  const uint64_t start = c.net.NowMicros();
  std::optional<Result<std::string>> done;
  c.at(3).PutVolatile("n2:k", Str("new"), [&](Result<std::string> r) { done = std::move(r); });
  c.net.RunUntil([&] { return done.has_value(); }, 10'000'000);
  ASSERT_TRUE(done && done->ok()) << (done ? done->status().ToString() : "no answer");
  const uint64_t took = c.net.NowMicros() - start;
  EXPECT_LE(took, kLease + kLease / 10 + 500'000);  // bounded: lease + patience + margin
  // The cut-off holder stopped serving its copy by itself before the write completed.
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");
  EXPECT_GE(c.at(2).stats().lease_waits.load(), 1u);
}

TEST(DkvTest, CutOffHolderStopsServingCopies) {
  SimCluster c(3, testing::Seed(1, true));
  ASSERT_TRUE(c.PutV(2, "n2:k", "v").ok());
  ASSERT_EQ(c.GetText(1, "n2:k"), "v");
  c.net.Cut(1, 2, true);
  c.net.RunFor(kLease / 2);
  EXPECT_EQ(c.Local(1, "n2:k"), "v");  // still under its lease
  c.net.RunFor(kLease);
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");
  EXPECT_GE(c.at(1).stats().lease_misses.load(), 1u);
}

TEST(DkvTest, HealedHolderDoesNotServeStaleCopy) {
  SimCluster c(3, testing::Seed(1, true));
  ASSERT_TRUE(c.PutV(2, "n2:k", "old").ok());
  ASSERT_EQ(c.GetText(1, "n2:k"), "old");
  c.net.Cut(1, 2, true);
  ASSERT_TRUE(c.PutV(3, "n2:k", "new").ok());  // waits out node 1's lease
  c.net.Cut(1, 2, false);
  c.net.RunFor(1'000'000);  // the lease renews, after the purge
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");
  EXPECT_EQ(c.GetText(1, "n2:k"), "new");
  EXPECT_GE(c.at(1).stats().purges.load(), 1u);
}

TEST(DkvTest, OneWayPartitionDoesNotBlockWrites) {
  for (bool holder_to_home : {true, false}) {
    SimCluster c(3, testing::Seed(1, true));
    ASSERT_TRUE(c.PutV(2, "n2:k", "old").ok());
    ASSERT_EQ(c.GetText(1, "n2:k"), "old");
    // Holder 1 still hears the home (and its heartbeats) but its answers are lost, or the
    // other way round. Either way the write completes within a lease, and the holder has
    // stopped serving the old value by then.
    if (holder_to_home) {
      c.net.CutOneWay(1, 2, true);
    } else {
      c.net.CutOneWay(2, 1, true);
    }
    const uint64_t start = c.net.NowMicros();
    std::optional<Result<std::string>> done;
    std::string holder_at_ack;
    c.at(3).PutVolatile("n2:k", Str("new"), [&](Result<std::string> r) {
      holder_at_ack = c.Local(1, "n2:k");
      done = std::move(r);
    });
    c.net.RunUntil([&] { return done.has_value(); }, 10'000'000);
    ASSERT_TRUE(done && done->ok()) << "holder_to_home " << holder_to_home;
    EXPECT_LE(c.net.NowMicros() - start, kLease + kLease / 10 + 500'000);
    EXPECT_EQ(holder_at_ack, "<miss>") << "holder_to_home " << holder_to_home;
    EXPECT_EQ(c.GetText(3, "n2:k"), "new");
  }
}

TEST(DkvTest, HomeSerializesRacingWrites) {
  SimCluster c(5, testing::Seed(1, true));
  c.net.SetFaults({.drop = 0.1, .duplicate = 0.1, .min_delay_us = 0, .max_delay_us = 3000});
  int answered = 0;
  for (NodeId id : {1, 2, 3, 4, 5}) {
    for (int i = 0; i < 20; i++) {
      c.at(id).Atomic("n3:counter", kOpIncrement, "1", [&](Result<std::string> r) {
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        answered++;
      });
    }
  }
  c.net.RunUntil([&] { return answered == 100; }, 120'000'000);
  ASSERT_EQ(answered, 100);
  c.net.SetFaults({});
  for (NodeId id : {1, 2, 3, 4, 5}) EXPECT_EQ(c.GetText(id, "n3:counter"), "100");
}

TEST(DkvTest, WritesFromOneNodeApplyInOrder) {
  SimCluster c(3, testing::Seed(1, true));
  c.net.SetFaults({.drop = 0.2, .duplicate = 0.1, .min_delay_us = 0, .max_delay_us = 5000});
  int answered = 0;
  for (int i = 1; i <= 50; i++) {
    c.at(1).PutVolatile("n2:k", Str(std::to_string(i)), [&](Result<std::string> r) {
      ASSERT_TRUE(r.ok());
      answered++;
    });
  }
  c.net.RunUntil([&] { return answered == 50; }, 120'000'000);
  c.net.SetFaults({});
  EXPECT_EQ(c.GetText(3, "n2:k"), "50");
}

TEST(DkvTest, PutThenFence) {
  SimCluster c(3, testing::Seed(1, true));
  ASSERT_TRUE(c.PutV(2, "n2:k", "old").ok());
  ASSERT_EQ(c.GetText(3, "n2:k"), "old");
  ASSERT_TRUE(c.at(1).Put("n2:k", Str("mine")).ok());
  EXPECT_EQ(c.Local(1, "n2:k"), "mine");  // read-your-writes at once
  EXPECT_EQ(c.at(1).OutstandingPuts(), 1u);
  c.net.RunUntil([&] { return c.at(1).OutstandingPuts() == 0; }, 10'000'000);
  EXPECT_EQ(c.Local(1, "n2:k"), "mine");  // confirmed copy
  EXPECT_EQ(c.Local(3, "n2:k"), "<miss>");
  EXPECT_EQ(c.GetText(3, "n2:k"), "mine");
}

TEST(DkvTest, ConditionalWrites) {
  SimCluster c(3, testing::Seed(1, true));
  auto pia = [&](NodeId id, std::string v) {
    return c.Wait([&](Dkv::WriteDone d) { c.at(id).PutIfAbsent("n2:k", Str(v), d); });
  };
  EXPECT_EQ(*pia(1, "a"), "1");
  EXPECT_EQ(*pia(3, "b"), "0");
  auto cas = [&](NodeId id, std::optional<Entry> want, std::string v) {
    return c.Wait([&](Dkv::WriteDone d) { c.at(id).CompareAndPut("n2:k", want, Str(v), d); });
  };
  EXPECT_EQ(*cas(3, Str("x"), "c"), "0");
  EXPECT_EQ(*cas(3, Str("a"), "c"), "1");
  EXPECT_EQ(*cas(1, std::nullopt, "d"), "0");
  EXPECT_EQ(c.GetText(1, "n2:k"), "c");
  auto rm = [&](NodeId id) {
    return c.Wait([&](Dkv::WriteDone d) { c.at(id).Remove("n2:k", d); });
  };
  EXPECT_EQ(*rm(1), "1");
  EXPECT_EQ(*rm(3), "0");
  EXPECT_EQ(c.GetText(3, "n2:k"), "<absent>");
  EXPECT_EQ(*cas(1, std::nullopt, "e"), "1");
}

TEST(DkvTest, UserAtomicRunsAtTheHome) {
  net::SimNetwork* net_seen = nullptr;
  SimCluster c(3, testing::Seed(1, true));
  net_seen = &c.net;
  (void)net_seen;
  // An op registered after construction but before any use (registration is per node).
  // Appends the argument: a closure-free function of (current, args).
  for (auto& [id, d] : c.dkvs) {
    d->RegisterOp(
        kFirstUserOp, [](const store::Value* cur, std::string_view args) -> Result<Outcome> {
          std::string s = cur ? std::string(cur->payload()) : "";
          s += args;
          return Outcome{
              .kind = Outcome::Kind::kPut, .entry = Str(s), .result = std::to_string(s.size())};
        });
  }
  auto app = [&](NodeId id, std::string a) {
    return c.Wait([&](Dkv::WriteDone d) { c.at(id).Atomic("n2:s", kFirstUserOp, a, d); });
  };
  EXPECT_EQ(*app(1, "ab"), "2");
  EXPECT_EQ(*app(3, "cd"), "4");
  EXPECT_EQ(c.GetText(2, "n2:s"), "abcd");
  Result<std::string> bad = c.Wait([&](Dkv::WriteDone d) { c.at(1).Atomic("n2:s", 999, "", d); });
  EXPECT_EQ(bad.status().code(), StatusCode::kUnimplemented);
}

TEST(DkvTest, DeadHomeFailsItsKeysOnly) {
  SimCluster c(3, testing::Seed(1, true));
  ASSERT_TRUE(c.PutV(1, "n2:k", "v").ok());
  ASSERT_TRUE(c.PutV(1, "n3:k", "v").ok());
  c.net.RemoveNode(2);      // a crash: its endpoint lives on, sending into the void
  c.net.RunFor(4'000'000);  // past down_after and every lease
  Result<store::ValuePtr> r = c.Get(1, "n2:k");
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  Result<std::string> w = c.PutV(1, "n2:k", "x");
  EXPECT_FALSE(w.ok());
  EXPECT_EQ(c.GetText(1, "n3:k"), "v");
  EXPECT_TRUE(c.PutV(1, "n3:k", "w").ok());
  EXPECT_EQ(c.GetText(3, "n3:k"), "w");
}

TEST(DkvTest, HomeThatStopsAnsweringIsUnavailableAtTheDeadline) {
  // The deadline (0.5 s) comes before the RPC layer marks the home down (3 s): still
  // Unavailable (contract 2), not the RPC layer's Timeout.
  SimCluster c(3, testing::Seed(1, true), [](NodeId id, Options& d) {
    if (id == 1) d.timeout_us = 500'000;
  });
  ASSERT_TRUE(c.PutV(3, "n2:k", "v").ok());
  c.net.RemoveNode(2);
  const uint64_t start = c.net.NowMicros();
  Result<store::ValuePtr> r = c.Get(1, "n2:k");
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_LE(c.net.NowMicros() - start, 600'000u);
  Result<std::string> w = c.PutV(1, "n2:k", "x");
  EXPECT_EQ(w.status().code(), StatusCode::kUnavailable) << w.status().ToString();
}

TEST(DkvTest, HomeRestartDropsCopies) {
  auto seed = testing::Seed(1, true);
  SimCluster c(3, seed);
  ASSERT_TRUE(c.PutV(1, "n2:k", "v").ok());
  ASSERT_EQ(c.GetText(3, "n2:k"), "v");
  // Node 2 restarts: a new endpoint and an empty store on the same id.
  c.Restart(2);
  c.net.RunFor(2'200'000);  // past its start-up grace
  // The copy of the old life's value is gone: the new home has no such key.
  EXPECT_EQ(c.Local(3, "n2:k"), "<miss>");
  EXPECT_EQ(c.GetText(3, "n2:k"), "<absent>");
}

TEST(DkvTest, WrongMapVersionIsRefused) {
  SimCluster c(3, testing::Seed(1, true));
  std::string req = internal::EncodeGetRequest({.map_version = 7, .key = "n2:k"});
  std::optional<Result<std::string>> out;
  c.eps[1]->CallAsync(2, kMethodGet, req, 1'000'000, [&](Result<std::string> r) { out = r; });
  c.net.RunUntil([&] { return out.has_value(); }, 5'000'000);
  ASSERT_TRUE(out);
  EXPECT_EQ(out->status().code(), StatusCode::kWrongHome);
  // And a key it is not the home of, under the right version.
  req = internal::EncodeGetRequest({.map_version = 1, .key = "n3:k"});
  out.reset();
  c.eps[1]->CallAsync(2, kMethodGet, req, 1'000'000, [&](Result<std::string> r) { out = r; });
  c.net.RunUntil([&] { return out.has_value(); }, 5'000'000);
  ASSERT_TRUE(out);
  EXPECT_EQ(out->status().code(), StatusCode::kWrongHome);
}

TEST(DkvTest, ExpiryIsDecidedAtHome) {
  SimCluster c(3, testing::Seed(1, true));
  const int64_t now = c.NowMs();
  Entry e = Str("t");
  e.expire_at_ms = now + 5'000;
  ASSERT_TRUE(c.Wait([&](Dkv::WriteDone d) { c.at(1).PutVolatile("n2:t", e, d); }).ok());
  EXPECT_EQ(c.GetText(3, "n2:t"), "t");
  EXPECT_EQ(c.Local(3, "n2:t"), "t");
  c.net.RunFor(3'500'000);  // within a lease of its expiry: the holder asks the home
  EXPECT_EQ(c.Local(3, "n2:t"), "<miss>");
  EXPECT_EQ(c.GetText(3, "n2:t"), "t");
  c.net.RunFor(2'000'000);
  EXPECT_EQ(c.GetText(3, "n2:t"), "<absent>");
  EXPECT_EQ(c.GetText(2, "n2:t"), "<absent>");
}

TEST(DkvTest, CacheTrimKeepsCommittedValues) {
  SimCluster c(3, testing::Seed(1, true));
  for (int i = 0; i < 20; i++) ASSERT_TRUE(c.PutV(1, "n2:k" + std::to_string(i), "v").ok());
  for (int i = 0; i < 20; i++) ASSERT_EQ(c.GetText(3, "n2:k" + std::to_string(i)), "v");
  EXPECT_EQ(c.at(3).CacheSize(), 20u);
  c.at(3).TrimCache();
  EXPECT_EQ(c.at(3).CacheSize(), 0u);
  for (int i = 0; i < 20; i++) EXPECT_EQ(c.GetText(3, "n2:k" + std::to_string(i)), "v");
}

TEST(DkvTest, CacheStaysWithinItsBudget) {
  SimCluster c(3, testing::Seed(1, true), [](NodeId id, Options& d) {
    if (id == 3) d.cache_max_bytes = 4096;
  });
  const std::string big(1000, 'x');
  for (int i = 0; i < 20; i++) ASSERT_TRUE(c.PutV(1, "n2:k" + std::to_string(i), big).ok());
  // Every read is answered; the copies beyond the budget are simply not kept.
  for (int i = 0; i < 20; i++) EXPECT_EQ(c.GetText(3, "n2:k" + std::to_string(i)), big);
  EXPECT_LT(c.at(3).CacheSize(), 5u);
  EXPECT_GT(c.at(3).stats().cache_full.load(), 0u);
}

TEST(DkvTest, QueuedWritesAreBounded) {
  SimCluster c(3, testing::Seed(1, true), [](NodeId id, Options& d) {
    if (id == 1) d.max_queued_writes = 10;
  });
  c.net.Cut(1, 2, true);  // nothing is answered meanwhile
  int refused = 0;
  for (int i = 0; i < 10; i++)
    EXPECT_TRUE(c.at(1).Put("n2:k" + std::to_string(i % 3), Str("v")).ok());
  Status st = c.at(1).Put("n2:k", Str("v"));
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  c.at(1).PutVolatile("n2:j", Str("v"), [&](Result<std::string> r) {
    if (r.status().code() == StatusCode::kResourceExhausted) refused++;
  });
  EXPECT_EQ(refused, 1);  // refused at once, not queued
  EXPECT_EQ(c.at(1).stats().writes_refused.load(), 2u);
  c.net.Cut(1, 2, false);
  c.net.RunUntil([&] { return c.at(1).OutstandingPuts() == 0; }, 30'000'000);
  EXPECT_TRUE(c.at(1).Put("n2:k", Str("again")).ok());  // room again once they are answered
}

TEST(DkvTest, LateGetAnswerAfterInvalidationIsNotCached) {
  // With random delays a GET's answer sometimes arrives after the invalidation of the value it
  // carries. Over many seeded runs that case must occur, and the stale copy must never be
  // installed: after every write completes, no node serves anything but the last value.
  uint64_t late = 0;
  const uint64_t base = testing::Seed(7, true);
  for (uint64_t run = 0; run < 60; run++) {
    SimCluster c(3, base + run);
    ASSERT_TRUE(c.PutV(2, "n2:k", "0").ok());
    c.net.SetFaults({.drop = 0, .duplicate = 0, .min_delay_us = 0, .max_delay_us = 4000});
    int pending = 0;
    for (int i = 1; i <= 10; i++) {
      pending += 2;
      c.at(1).Get("n2:k", [&](Result<store::ValuePtr>) { pending--; });
      c.at(3).PutVolatile("n2:k", Str(std::to_string(i)), [&](Result<std::string> r) {
        ASSERT_TRUE(r.ok());
        pending--;
      });
      c.net.RunFor(1'000);
    }
    c.net.RunUntil([&] { return pending == 0; }, 60'000'000);
    ASSERT_EQ(pending, 0);
    const std::string l = c.Local(1, "n2:k");
    EXPECT_TRUE(l == "<miss>" || l == "10") << "run " << run << ": node 1 serves " << l;
    late += c.at(1).stats().not_cached_late.load();
  }
  EXPECT_GT(late, 0u) << "the late-answer case never happened; the test tests nothing";
}

TEST(DkvTest, MessagesRejectMalformedInput) {
  EXPECT_FALSE(internal::DecodeGetRequest("").ok());
  EXPECT_FALSE(internal::DecodeGetAnswer(std::string("\x07\x00", 2)).ok());
  EXPECT_FALSE(internal::DecodeWriteAnswer(std::string("\x01\x00\x05", 3)).ok());
  EXPECT_FALSE(internal::DecodeInvalidate(std::string("\xff\xff\xff\xff\xff\x01", 6)).ok());
  std::string ok = internal::EncodeInvalidate({.key = "k", .stamp = 9});
  EXPECT_TRUE(internal::DecodeInvalidate(ok).ok());
  EXPECT_FALSE(internal::DecodeInvalidate(ok + "x").ok());
}

// ---- review: failing tests ----

// L4 only drops old-life copies once the new life's heartbeat (with an echo) reaches the holder;
// the new home takes writes at once and knows no holders. A holder that has not heard it yet
// serves the old life's value after a newer write was acknowledged.
TEST(DkvReviewTest, RestartedHomeTakesWritesWhileOldLeasesHold) {
  const uint64_t seed = testing::Seed(1, true);
  SimCluster c(3, seed);
  ASSERT_TRUE(c.PutV(1, "n2:k", "v").ok());
  ASSERT_EQ(c.GetText(3, "n2:k"), "v");
  c.net.Cut(2, 3, true);  // node 3 does not hear node 2's next life for a while
  c.Restart(2);
  // The new home refuses until every lease of its previous life has lapsed (rule L4) ...
  Result<std::string> w = c.PutV(1, "n2:k", "new");
  EXPECT_EQ(w.status().code(), StatusCode::kUnavailable) << w.status().ToString();
  for (int i = 0; i < 50 && !w.ok(); i++) {
    c.net.RunFor(100'000);
    w = c.PutV(1, "n2:k", "new");
  }
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_EQ(c.GetText(2, "n2:k"), "new");  // a read that completed after it
  // ... so by the time it takes the write, node 3 has stopped serving the old life's copy.
  EXPECT_NE(c.Local(3, "n2:k"), "v") << "a later read at node 3 returns the overwritten value";
}

// The home never invalidates the writer (W2 step 1). A write that its writer abandoned at its
// deadline (unknown outcome, F2) but whose CALL reaches the home later still commits, while
// the writer, which no longer tracks it, has cached the older value from a GET in between. The
// RPC layer drops such a late CALL only if the caller's low-water mark passed it, which it does
// not while any earlier call to the same home is pending.
// Node 1 (write deadline 300 ms) writes `value` to n2:k, and every copy of its CALL is delayed
// past that deadline: the write ends with an unknown outcome while its CALL is still on the way.
// Key n2:b is kept busy at the home meanwhile (its holder, node 3, is cut off), so an earlier
// call of node 1 to the home stays pending and the RPC layer's low-water mark cannot drop the
// late CALL (any call does that: a slow handler, a longer deadline).
struct AbandonedWrite {
  explicit AbandonedWrite(const char* value)
      : c(3, testing::Seed(1, true), [](NodeId id, Options& d) {
          if (id == 1) d.timeout_us = 300'000;
        }) {
    EXPECT_TRUE(c.PutV(2, "n2:k", "old").ok());
    EXPECT_TRUE(c.PutV(2, "n2:b", "x").ok());
    EXPECT_EQ(c.GetText(3, "n2:b"), "x");
    c.net.Cut(2, 3, true);
    c.at(2).PutVolatile("n2:b", Str("y"), [](Result<std::string>) {});
    c.eps[1]->CallAsync(2, kMethodWrite,
                        internal::EncodeWriteRequest({.map_version = 1,
                                                      .key = "n2:b",
                                                      .op = kOpPut,
                                                      .args = internal::EncodeEntry(Str("z"))}),
                        60'000'000, [this](Result<std::string> r) { other = std::move(r); });
    c.net.RunFor(10'000);
    EXPECT_FALSE(other.has_value());
    c.net.SetFaults({.drop = 0, .duplicate = 0, .min_delay_us = 400'000, .max_delay_us = 400'000});
    c.at(1).PutVolatile("n2:k", Str(value), [this](Result<std::string> r) { w = std::move(r); });
    c.net.RunUntil([this] { return w.has_value(); }, 1'000'000);
    c.net.SetFaults({});
    EXPECT_TRUE(w.has_value() && !w->ok());  // unknown outcome
  }
  // Before the cluster: stopping its endpoints completes the pending call into `other`.
  std::optional<Result<std::string>> other, w;
  SimCluster c;
};

TEST(DkvReviewTest, AbandonedWriteCommittingLateLeavesWriterStaleCopy) {
  AbandonedWrite a("new");
  EXPECT_EQ(a.c.GetText(1, "n2:k"), "old");  // the home has not seen the write yet
  a.c.net.RunFor(600'000);                   // now it has, and commits it
  ASSERT_EQ(a.c.GetText(2, "n2:k"), "new");  // a read that completed
  EXPECT_NE(a.c.Local(1, "n2:k"), "old") << "node 1 serves a value older than a completed read";
  EXPECT_NE(a.c.GetText(1, "n2:k"), "old");
}

// Variant without a GET: the writer's next write succeeds and is cached by the writer; the
// abandoned earlier write then commits after it, and the writer must not keep serving its own
// overwritten value.
TEST(DkvReviewTest, AbandonedWriteCommittingAfterTheNextOneLeavesWriterStaleCopy) {
  AbandonedWrite a("first");
  ASSERT_TRUE(a.c.PutV(1, "n2:k", "second").ok());  // acknowledged
  ASSERT_EQ(a.c.Local(1, "n2:k"), "second");
  a.c.net.RunFor(600'000);  // the first write's delayed CALL arrives and commits after the second
  ASSERT_EQ(a.c.GetText(2, "n2:k"), "first");  // a completed read at the home
  EXPECT_NE(a.c.Local(1, "n2:k"), "second") << "node 1 serves a value older than a completed read";
}

// OnWriteAnswer -> SendFront -> HomeEnqueue -> Commit -> (after) -> OnWriteAnswer -> ... : a
// writer's queue of writes to a key homed here drains by recursion, one level per write.
TEST(DkvReviewDeathTest, LocalWriterQueueDrainsWithoutRecursion) {
  EXPECT_EXIT(
      {
        SimCluster c(3, testing::Seed(1, true));
        if (!c.PutV(2, "n2:k", "old").ok() || c.GetText(1, "n2:k") != "old") std::exit(2);
        c.net.Cut(1, 2, true);       // the first write waits out node 1's lease
        const int kWrites = 200000;  // enough to overflow an 8 MB stack by recursion
        int answered = 0;
        for (int i = 0; i < kWrites; i++) {
          c.at(2).PutVolatile("n2:k", Str(std::to_string(i)),
                              [&](Result<std::string>) { answered++; });
        }
        c.net.RunUntil([&] { return answered == kWrites; }, 10'000'000);
        std::exit(answered == kWrites ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// Same recursion through CallAsync failing synchronously (the home is marked down): every
// queued write fails inside the previous one's callback.
TEST(DkvReviewDeathTest, QueueToDownHomeFailsWithoutRecursion) {
  EXPECT_EXIT(
      {
        SimCluster c(3, testing::Seed(1, true));
        c.net.Cut(1, 2, true);
        const int kWrites = 200000;  // enough to overflow an 8 MB stack by recursion
        for (int i = 0; i < kWrites; i++) {
          if (!c.at(1).Put("n2:k", Str(std::to_string(i))).ok()) std::exit(3);
        }
        c.net.RunUntil([&] { return c.at(1).OutstandingPuts() == 0; }, 20'000'000);
        std::exit(c.at(1).OutstandingPuts() == 0 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// An AtomicFn that throws (user code: std::stoll on a non-number, bad_alloc) unwinds through
// RunHome with its Queued entry still at the front of the home's queue and, on the writer, its
// Outgoing still at the front of WriterKey::queue: every later write to the key waits forever.
TEST(DkvReviewTest, ThrowingAtomicDoesNotWedgeTheKey) {
  SimCluster c(3, testing::Seed(1, true));
  for (auto& [id, d] : c.dkvs) {
    d->RegisterOp(kFirstUserOp, [](const store::Value*, std::string_view args) -> Result<Outcome> {
      (void)std::stoll(std::string(args));  // throws std::invalid_argument on "x"
      return Outcome{};
    });
  }
  bool threw = false;
  try {
    c.at(1).Atomic("n1:k", kFirstUserOp, "x", [](Result<std::string>) {});
  } catch (const std::exception&) {
    threw = true;
  }
  EXPECT_FALSE(threw) << "the exception escaped Atomic()";
  Result<std::string> r = c.PutV(1, "n1:k", "v");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
}

// kPendingStamp (UINT64_MAX) marks the writer's own pending copy, which no invalidation, lease
// purge or trim removes; a peer's answer must not be able to carry it.
TEST(DkvReviewTest, AnswersCannotCarryThePendingStamp) {
  internal::GetAnswer a{.stamp = UINT64_MAX, .cacheable = true, .entry = Str("x")};
  EXPECT_FALSE(internal::DecodeGetAnswer(internal::EncodeGetAnswer(a)).ok());
  internal::WriteAnswer b{.stamp = UINT64_MAX, .result = "", .entry = Str("x")};
  EXPECT_FALSE(internal::DecodeWriteAnswer(internal::EncodeWriteAnswer(b)).ok());
}

// ---- writes the caller applies itself (rules X1-X3) ----

// Every node's committed values live in a store the test owns, changed only through
// ApplyIfFree / Reserve, as the server's commands change theirs.
struct ExternalHomes {
  std::map<NodeId, std::unique_ptr<store::Store>> stores;
  std::function<void(NodeId, Options&)> Tweak() {
    return [this](NodeId id, Options& o) {
      auto& s = stores[id];
      if (!s) s = std::make_unique<store::Store>();
      o.home_store = s.get();
    };
  }
  void Set(NodeId id, std::string_view key, std::string_view v) {
    stores[id]->Put(*store::Value::Make(key, 0, v));
  }
};

TEST(DkvExternalTest, ApplyIfFreeRefusesWhileAKeyHasAHolder) {
  ExternalHomes homes;
  SimCluster c(3, testing::Seed(1, true), homes.Tweak());
  homes.Set(2, "n2:k", "old");
  bool ran = false;
  EXPECT_TRUE(c.at(2).ApplyIfFree({"n2:k"}, [&] { ran = true; }));
  EXPECT_TRUE(ran);
  ASSERT_EQ(c.GetText(1, "n2:k"), "old");
  ASSERT_EQ(c.Local(1, "n2:k"), "old");  // node 1 holds a copy now
  ran = false;
  EXPECT_FALSE(c.at(2).ApplyIfFree({"n2:j", "n2:k"}, [&] { ran = true; }));
  EXPECT_FALSE(ran);
  EXPECT_TRUE(c.at(2).ApplyIfFree({"n2:j"}, [&] { ran = true; }));  // other keys are free
}

TEST(DkvExternalTest, ReserveInvalidatesEveryHolderBeforeReady) {
  ExternalHomes homes;
  SimCluster c(4, testing::Seed(1, true), homes.Tweak());
  homes.Set(2, "n2:k", "old");
  for (NodeId id : {1, 3, 4}) ASSERT_EQ(c.GetText(id, "n2:k"), "old");
  std::vector<std::string> seen_at_ready;
  bool ready = false;
  c.at(2).Reserve({"n2:k"}, [&] {
    for (NodeId id : {1, 3, 4}) seen_at_ready.push_back(c.Local(id, "n2:k"));
    ready = true;
  });
  c.net.RunUntil([&] { return ready; }, 10'000'000);
  ASSERT_TRUE(ready);
  EXPECT_EQ(seen_at_ready, (std::vector<std::string>{"<miss>", "<miss>", "<miss>"}));
  // Reserved: a read gets the committed value but caches nothing, and other changes wait.
  EXPECT_EQ(c.GetText(1, "n2:k"), "old");
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");
  EXPECT_FALSE(c.at(2).ApplyIfFree({"n2:k"}, [] {}));
  homes.Set(2, "n2:k", "new");
  c.at(2).Release({"n2:k"});
  EXPECT_EQ(c.GetText(1, "n2:k"), "new");
  EXPECT_EQ(c.Local(1, "n2:k"), "new");
  EXPECT_EQ(c.at(2).stats().invalidations_sent.load(), 3u);
}

TEST(DkvExternalTest, ReservationsOfAKeyRunInOrder) {
  ExternalHomes homes;
  SimCluster c(3, testing::Seed(1, true), homes.Tweak());
  homes.Set(2, "n2:a", "0");
  ASSERT_EQ(c.GetText(1, "n2:a"), "0");
  std::vector<int> order;
  c.at(2).Reserve({"n2:b", "n2:a"}, [&] { order.push_back(1); });
  c.at(2).Reserve({"n2:a"}, [&] { order.push_back(2); });
  c.net.RunFor(1'000'000);
  ASSERT_EQ(order, std::vector<int>{1});  // the second waits for the first's Release
  c.at(2).Release({"n2:a", "n2:b"});
  c.net.RunFor(1'000'000);
  ASSERT_EQ(order, (std::vector<int>{1, 2}));
  c.at(2).Release({"n2:a"});
  EXPECT_TRUE(c.at(2).ApplyIfFree({"n2:a", "n2:b"}, [] {}));
}

TEST(DkvExternalTest, ReserveCompletesAfterHolderLeaseLapses) {
  ExternalHomes homes;
  SimCluster c(3, testing::Seed(1, true), homes.Tweak());
  homes.Set(2, "n2:k", "old");
  ASSERT_EQ(c.GetText(1, "n2:k"), "old");
  c.net.Cut(1, 2, true);
  bool ready = false;
  const uint64_t start = c.net.NowMicros();
  c.at(2).Reserve({"n2:k"}, [&] { ready = true; });
  c.net.RunUntil([&] { return ready; }, 10'000'000);
  ASSERT_TRUE(ready);
  EXPECT_GE(c.net.NowMicros() - start, kLease);  // waited out node 1's lease (rule L2)
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");       // which stopped serving its copy itself
  c.at(2).Release({"n2:k"});
}

TEST(DkvExternalTest, ReserveAllKeepsCopiesFromBeingMade) {
  ExternalHomes homes;
  SimCluster c(3, testing::Seed(1, true), homes.Tweak());
  homes.Set(2, "n2:k", "old");
  homes.Set(2, "n2:j", "j");
  ASSERT_EQ(c.GetText(1, "n2:k"), "old");
  std::optional<std::vector<std::string>> reserved;
  c.at(2).ReserveAll([&](std::vector<std::string> keys) { reserved = std::move(keys); });
  c.net.RunUntil([&] { return reserved.has_value(); }, 10'000'000);
  ASSERT_TRUE(reserved.has_value());
  EXPECT_EQ(*reserved, std::vector<std::string>{"n2:k"});  // the key that had a holder
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");
  // A key without holders is not reserved, but no copy of it is made until the change is done.
  EXPECT_EQ(c.GetText(1, "n2:j"), "j");
  EXPECT_EQ(c.Local(1, "n2:j"), "<miss>");
  homes.stores[2]->Clear();
  c.at(2).ReleaseAll(*reserved);
  EXPECT_EQ(c.GetText(1, "n2:j"), "<absent>");
}

// Rule O3: when a key's home changes, a holder's copy from the old home goes, and an answer
// the old home sent before the change is not cached; the key is then read from its new home.
// (Without the purge, node 1 would keep serving "old" under home 3's lease.)
TEST(DkvExternalTest, ACopyDoesNotOutliveAChangeOfItsHome) {
  ExternalHomes homes;
  auto moved = std::make_shared<std::atomic<bool>>(false);
  SimCluster c(3, testing::Seed(1, true), [&homes, moved](NodeId id, Options& o) {
    homes.Tweak()(id, o);
    // Node 2 has not switched yet: it answers the GET in flight as the home it still is.
    o.home = [moved, id](std::string_view key) -> NodeId {
      return id != 2 && moved->load() && key.substr(0, 3) == "n2:" ? 3 : sim::PrefixHome(key, 3);
    };
  });
  homes.Set(2, "n2:k", "old");
  homes.Set(2, "n2:j", "old");
  homes.Set(3, "n2:k", "new");
  homes.Set(3, "n2:j", "new");
  ASSERT_EQ(c.GetText(1, "n2:k"), "old");
  ASSERT_EQ(c.Local(1, "n2:k"), "old");
  // A GET of n2:j is in flight to home 2 when the homes change.
  std::optional<std::string> late;
  c.at(1).Get("n2:j", [&late](Result<store::ValuePtr> v) {
    late = v.ok() && *v ? std::string((*v)->payload()) : "<error>";
  });
  auto published = std::make_shared<bool>(false);
  c.at(1).ChangeHomes([](std::string_view k) { return k.substr(0, 3) == "n2:"; },
                      [moved, published] {
                        moved->store(true);
                        *published = true;
                      });
  EXPECT_TRUE(*published);
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");
  c.net.RunUntil([&] { return late.has_value(); }, 10'000'000);
  EXPECT_EQ(late, "old");                   // answered, as the read it is
  EXPECT_EQ(c.Local(1, "n2:j"), "<miss>");  // but not cached
  EXPECT_EQ(c.GetText(1, "n2:k"), "new");
  EXPECT_EQ(c.GetText(1, "n2:j"), "new");
}

// docs/replication.md W13: keys a home takes over from a life that ended wait out that life's
// copies: their changes are refused by ApplyIfFree and granted to a reservation only once the
// wait has passed; other keys, and reads, are served meanwhile; ReserveAll waits too.
TEST(DkvExternalTest, ChangesOfAdoptedKeysWaitOutTheOldCopies) {
  ExternalHomes homes;
  SimCluster c(3, testing::Seed(1, true), homes.Tweak());
  homes.Set(2, "n2:adopted", "v");
  constexpr uint64_t kWait = 500'000;
  const uint64_t start = c.net.NowMicros();
  c.at(2).WaitOutCopies([](std::string_view k) { return k == "n2:adopted"; }, kWait);
  EXPECT_FALSE(c.at(2).ApplyIfFree({"n2:adopted"}, [] {}));
  EXPECT_FALSE(c.at(2).ApplyIfFree({"n2:other", "n2:adopted"}, [] {}));
  EXPECT_TRUE(c.at(2).ApplyIfFree({"n2:other"}, [] {}));
  EXPECT_EQ(c.GetText(1, "n2:adopted"), "v");
  uint64_t ready_at = 0;
  c.at(2).Reserve({"n2:adopted"}, [&] { ready_at = c.net.NowMicros(); });
  std::optional<uint64_t> all_at;
  c.at(2).ReserveAll([&](std::vector<std::string> keys) {
    all_at = c.net.NowMicros();
    c.at(2).ReleaseAll(keys);
  });
  c.net.RunUntil([&] { return ready_at != 0; }, 10'000'000);
  ASSERT_NE(ready_at, 0u);
  EXPECT_GE(ready_at - start, kWait);
  c.at(2).Release({"n2:adopted"});
  c.net.RunUntil([&] { return all_at.has_value(); }, 10'000'000);
  ASSERT_TRUE(all_at.has_value());
  EXPECT_GE(*all_at - start, kWait);
  // Past the wait the adoption is gone: changes run at once again.
  EXPECT_TRUE(c.at(2).ApplyIfFree({"n2:adopted"}, [] {}));
}

TEST(DkvExternalTest, ExportHookRefusesValues) {
  ExternalHomes homes;
  SimCluster c(3, testing::Seed(1, true), [&](NodeId id, Options& o) {
    homes.Tweak()(id, o);
    o.export_value = [](const store::Value& v) -> std::optional<Entry> {
      if (v.payload() == "secret") return std::nullopt;
      return Entry{.type = v.type(), .expire_at_ms = 0, .payload = std::string(v.payload())};
    };
  });
  homes.Set(2, "n2:k", "secret");
  Result<store::ValuePtr> r = c.Get(1, "n2:k");
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");
  EXPECT_TRUE(c.at(2).ApplyIfFree({"n2:k"}, [] {}));  // no holder was recorded
}

// Rule L4's early end: a restarted home serves once every peer has heard its new life, and a
// peer that cannot hear it keeps the full grace.
TEST(DkvExternalTest, GraceEndsOnceEveryPeerHeardTheNewLife) {
  ExternalHomes homes;
  SimCluster c(3, testing::Seed(1, true), [&](NodeId id, Options& o) {
    homes.Tweak()(id, o);
    for (NodeId p = 1; p <= 3; p++) {
      if (p != id) o.peers.push_back(p);
    }
  });
  homes.Set(2, "n2:k", "old");
  ASSERT_EQ(c.GetText(1, "n2:k"), "old");
  c.Restart(2);
  EXPECT_FALSE(c.at(2).Serving());
  c.net.RunFor(kLease / 4);  // a few heartbeats, far less than the grace
  EXPECT_TRUE(c.at(2).Serving());
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");  // node 1 dropped the copy of the previous life
  // A peer cut off from the home: the home waits out the whole grace.
  c.net.Cut(3, 2, true);
  c.Restart(2);
  c.net.RunFor(kLease / 4);
  EXPECT_FALSE(c.at(2).Serving());
  c.net.RunFor(kLease);
  EXPECT_TRUE(c.at(2).Serving());
}

// Rule X4, the writer's side: no copy is installed while a change of the node's own is in
// flight, nor from a GET in flight when it ends; and the home skips the writer's older records.
TEST(DkvExternalTest, OwnWritesDropAndHoldOffCopies) {
  ExternalHomes homes;
  SimCluster c(3, testing::Seed(1, true), homes.Tweak());
  homes.Set(2, "n2:k", "old");
  ASSERT_EQ(c.GetText(1, "n2:k"), "old");
  ASSERT_EQ(c.Local(1, "n2:k"), "old");
  c.at(1).BeginOwnWrite("n2:k");
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");
  EXPECT_EQ(c.GetText(1, "n2:k"), "old");  // answered, not installed
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");
  // A GET still in flight when the write ends is not installed either.
  std::optional<Result<store::ValuePtr>> late;
  c.at(1).Get("n2:k", [&](Result<store::ValuePtr> r) { late = std::move(r); });
  c.at(1).EndOwnWrite("n2:k");
  c.net.RunUntil([&] { return late.has_value(); }, 10'000'000);
  EXPECT_EQ(c.Local(1, "n2:k"), "<miss>");
  // The home: node 1's records asked before its write's clock reading need no invalidation.
  const uint64_t sent = c.net.NowMicros();
  bool ran = false;
  EXPECT_FALSE(c.at(2).ApplyIfFree({"n2:k"}, [&] { ran = true; }));  // a local change: not free
  EXPECT_TRUE(c.at(2).ApplyIfFree(
      {"n2:k"}, [&] { ran = true; }, 1, sent + 1));
  EXPECT_TRUE(ran);
  EXPECT_TRUE(c.at(2).ApplyIfFree({"n2:k"}, [] {}));  // the records are gone
}

// E1 with X1: a copy within a lease of its expiry is never served again, and it is dropped
// when found so. Kept, it held its bytes (the cache is not expired by itself) and blocked the
// key's next copy: once the home's sweep forgot the holder of the expired value, setting the
// key again took no stamp (no holder to invalidate), the next GET answer carried the same stamp
// as the dead copy, and a copy is replaced only by a higher stamp -- every later read of the key
// there was a miss, recording a holder each time.
TEST(DkvExternalTest, AnExpiredCopyDoesNotBlockTheNextCopyOfItsKey) {
  ExternalHomes homes;
  SimCluster c(3, testing::Seed(1, true), homes.Tweak());
  homes.stores[2]->Put(*store::Value::Make("n2:t", 0, "old", c.NowMs() + 3'000));
  ASSERT_EQ(c.GetText(1, "n2:t"), "old");
  ASSERT_EQ(c.Local(1, "n2:t"), "old");
  c.net.RunFor(4'500'000);  // expired at the home, whose sweep forgot node 1 as its holder
  EXPECT_EQ(c.Local(1, "n2:t"), "<miss>");
  EXPECT_EQ(c.at(1).CacheSize(), 0u);
  ASSERT_TRUE(c.at(2).ApplyIfFree({"n2:t"}, [&] { homes.Set(2, "n2:t", "new"); }));
  EXPECT_EQ(c.GetText(1, "n2:t"), "new");
  EXPECT_EQ(c.Local(1, "n2:t"), "new");
}

// E1 and E2: copies whose values expired at their home are not served, and their home forgets
// their holders (no invalidation comes). Kept, a cache full of them refused every new copy for
// good: the node stopped caching. The sweep's active expiry removes the copies past E1's bound.
TEST(DkvTest, ExpiredCopiesDoNotFillTheCacheForGood) {
  // Room for three copies of 20,000 bytes (the empty cache itself takes about 49 KiB).
  SimCluster c(3, testing::Seed(1, true), [](NodeId id, Options& d) {
    if (id == 3) d.cache_max_bytes = 120'000;
  });
  const std::string big(20'000, 'x');
  Entry e = Str(big);
  e.expire_at_ms = c.NowMs() + 3'000;
  for (int i = 0; i < 3; i++) {
    const std::string k = "n2:t" + std::to_string(i);
    ASSERT_TRUE(c.Wait([&](Dkv::WriteDone d) { c.at(1).PutVolatile(k, e, d); }).ok());
    ASSERT_EQ(c.GetText(3, k), big);
  }
  ASSERT_EQ(c.at(3).CacheSize(), 3u);
  c.net.RunFor(4'000'000);  // all three expired at their home; sweeps ran
  EXPECT_EQ(c.at(3).CacheSize(), 0u);
  ASSERT_TRUE(c.PutV(1, "n2:fresh", big).ok());
  EXPECT_EQ(c.GetText(3, "n2:fresh"), big);
  EXPECT_EQ(c.Local(3, "n2:fresh"), big);  // room for it
  EXPECT_EQ(c.at(3).stats().cache_full.load(), 0u);
}

// E1 at the home: a value within a lease of its expiry is answered but not handed out as a
// copy. The asker would never serve it (it asks the home from a lease before the expiry on), yet
// it was recorded as a holder: every change of the key then waited for its invalidation (a
// lease, when the asker was cut off).
TEST(DkvExternalTest, AValueAboutToExpireRecordsNoHolder) {
  ExternalHomes homes;
  SimCluster c(3, testing::Seed(1, true), homes.Tweak());
  homes.stores[2]->Put(*store::Value::Make("n2:t", 0, "v", c.NowMs() + 1'000));  // lease: 2 s
  ASSERT_EQ(c.GetText(1, "n2:t"), "v");
  EXPECT_EQ(c.Local(1, "n2:t"), "<miss>");
  EXPECT_TRUE(c.at(2).ApplyIfFree({"n2:t"}, [] {}));
}

}  // namespace
}  // namespace floe::dkv
