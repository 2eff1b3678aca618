#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "sketch/sketch.h"
#include "testing/testing.h"

namespace floe::sketch {
namespace {

TEST(CountMinTest, SizingFollowsRedisBloom) {
  CountMin c = CountMin::CreateForError(0.001, 0.01).value();
  EXPECT_EQ(c.width(), 2000u);
  EXPECT_EQ(c.depth(), 7u);
  EXPECT_FALSE(CountMin::CreateForError(0, 0.5).ok());
  EXPECT_FALSE(CountMin::CreateForError(0.1, 1).ok());
  EXPECT_FALSE(CountMin::Create(0, 5).ok());
  EXPECT_FALSE(CountMin::Create(5, 0).ok());
  EXPECT_EQ(CountMin::Create(1u << 20, 1u << 20).status().code(), StatusCode::kResourceExhausted);
}

// Statistical (an estimate exceeds the bound with probability at most 1%), so a fixed seed.
TEST(CountMinTest, NeverUnderestimatesAndStaysWithinTheBound) {
  const uint64_t seed = testing::Seed(20261122);
  SCOPED_TRACE("FLOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed);
  CountMin c = CountMin::CreateForError(0.01, 0.01).value();
  std::map<std::string, uint64_t> truth;
  for (int i = 0; i < 20000; i++) {
    const std::string item = "i" + std::to_string(rng() % 3000);
    const uint32_t incr = 1 + rng() % 3;
    ASSERT_TRUE(c.Add(item, incr).ok());
    truth[item] += incr;
  }
  int over_bound = 0;
  for (const auto& [item, n] : truth) {
    const uint32_t est = c.Query(item);
    EXPECT_GE(est, n);
    if (est > n + 0.01 * static_cast<double>(c.total())) over_bound++;
  }
  EXPECT_LE(over_bound, static_cast<int>(truth.size() / 50));  // allowed failure rate 1%, slack x2
}

// An increment that would overflow a counter changes nothing: it used to saturate the counter
// and move the total while answering "overflow" (RedisBloom now undoes its rows).
TEST(CountMinTest, AnOverflowingIncrementChangesNothing) {
  CountMin c = CountMin::Create(10, 2).value();
  ASSERT_TRUE(c.Add("x", 4000000000u).ok());
  const CountMin before = c;
  EXPECT_EQ(c.Add("x", 400000000u).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.Query("x"), 4000000000u);
  EXPECT_EQ(c.total(), 4000000000u);
  EXPECT_TRUE(c == before);
  EXPECT_EQ(*c.Add("x", 294967295u), 4294967295u);  // up to the largest counter is fine
}

TEST(CountMinTest, AnOverflowingRangeIncrementChangesNoLevel) {
  RangeCountMin r = RangeCountMin::Create(64, 2, 4).value();
  ASSERT_TRUE(r.Add(1, 4000000000u).ok());
  // Level 4 counts every value of [0, 16) in one cell: adding to another value overflows there
  // alone, and levels 0-3 must not move either.
  EXPECT_EQ(r.Add(9, 400000000u).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(r.Point(9), 0u);
  EXPECT_EQ(r.total(), 4000000000u);
  for (int l = 0; l <= 3; l++) EXPECT_EQ(r.level(l).total(), 4000000000u) << l;
}

TEST(CountMinTest, WeightedMergeAndErrors) {
  CountMin a = CountMin::Create(100, 3).value(), b = a, dest = a;
  ASSERT_TRUE(a.Add("x", 5).ok());
  ASSERT_TRUE(b.Add("x", 2).ok());
  ASSERT_TRUE(dest.MergeWeighted({{&a, 1}, {&b, 3}}).ok());
  EXPECT_EQ(dest.Query("x"), 11u);
  EXPECT_EQ(dest.total(), 11u);
  EXPECT_EQ(dest.MergeWeighted({{&a, -1}}).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(dest.Query("x"), 11u);  // unchanged after a failed merge
  CountMin other = CountMin::Create(50, 3).value();
  EXPECT_EQ(dest.MergeWeighted({{&other, 1}}).code(), StatusCode::kInvalidArgument);
}

TEST(CountMinTest, SerializationRoundTripsAndRejectsCorruption) {
  CountMin c = CountMin::Create(64, 4).value();
  ASSERT_TRUE(c.Add("a", 3).ok());
  const std::string bytes = c.Serialize();
  Result<CountMin> back = CountMin::Parse(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, c);
  for (size_t n = 0; n < bytes.size(); n += 7)
    EXPECT_FALSE(CountMin::Parse(bytes.substr(0, n)).ok());
}

// Statistical (quantiles within a band of the mass), so a fixed seed.
TEST(RangeCountMinTest, RangesAndQuantilesTrackTheTruth) {
  const uint64_t seed = testing::Seed(20261122);
  SCOPED_TRACE("FLOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed);
  RangeCountMin r = RangeCountMin::Create(2000, 5, 16).value();
  std::vector<uint64_t> values;
  for (int i = 0; i < 20000; i++) {
    const uint64_t v = std::min<uint64_t>(
        65535, static_cast<uint64_t>(std::abs(std::normal_distribution<>(30000, 5000)(rng))));
    values.push_back(v);
    ASSERT_TRUE(r.Add(v, 1).ok());
  }
  std::sort(values.begin(), values.end());
  auto truth = [&](uint64_t lo, uint64_t hi) {
    return static_cast<uint64_t>(std::upper_bound(values.begin(), values.end(), hi) -
                                 std::lower_bound(values.begin(), values.end(), lo));
  };
  const double slack = 0.001 * 17 * 20000 * 2;  // per-level error bound, summed over the levels
  for (auto [lo, hi] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 65535}, {25000, 35000}, {30000, 30000}, {0, 20000}, {12345, 54321}}) {
    const uint64_t est = r.RangeCount(lo, hi), t = truth(lo, hi);
    EXPECT_GE(est, t) << lo << ".." << hi;
    EXPECT_LE(static_cast<double>(est), static_cast<double>(t) + slack) << lo << ".." << hi;
  }
  EXPECT_EQ(r.RangeCount(0, 65535), 20000u);  // the whole domain is one top-level cell
  for (double q : {0.1, 0.5, 0.9}) {
    const uint64_t est = r.Quantile(q);
    const uint64_t exact = values[static_cast<size_t>(q * (values.size() - 1))];
    // Within the values that hold q +- 1% of the mass.
    const uint64_t lo = values[static_cast<size_t>(std::max(0.0, q - 0.02) * (values.size() - 1))];
    const uint64_t hi = values[static_cast<size_t>(std::min(1.0, q + 0.01) * (values.size() - 1))];
    EXPECT_GE(est, lo) << q << " exact " << exact;
    EXPECT_LE(est, hi) << q << " exact " << exact;
  }
  EXPECT_FALSE(r.Add(65536, 1).ok());
  Result<RangeCountMin> back = RangeCountMin::Parse(r.Serialize());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->RangeCount(25000, 35000), r.RangeCount(25000, 35000));
  EXPECT_FALSE(RangeCountMin::Create(100, 3, 0).ok());
  EXPECT_FALSE(RangeCountMin::Create(100, 3, 33).ok());
}

// A point query counts what Add put at that value (it read level 0 under another key, so it
// answered 0 for a value added once).
TEST(RangeCountMinTest, PointCountsWhatWasAdded) {
  RangeCountMin r = RangeCountMin::Create(100, 4, 16).value();
  EXPECT_EQ(r.Point(7), 0u);
  ASSERT_TRUE(r.Add(7, 1).ok());
  EXPECT_EQ(r.Point(7), 1u);
  ASSERT_TRUE(r.Add(7, 2).ok());
  ASSERT_TRUE(r.Add(65535, 5).ok());
  EXPECT_EQ(r.Point(7), 3u);
  EXPECT_EQ(r.Point(65535), 5u);
  EXPECT_EQ(r.Point(7), r.RangeCount(7, 7));
  EXPECT_EQ(r.Point(8), 0u);
}

// A new sketch's counters come from one zeroed allocation of exactly the announced size.
TEST(CountMinTest, SizesAreKnownBeforeAllocating) {
  EXPECT_EQ(CountMin::BytesFor(UINT32_MAX, UINT32_MAX), uint64_t{UINT32_MAX} * UINT32_MAX * 4);
  CountMin c = CountMin::Create(1000, 5).value();
  EXPECT_EQ(c.MemoryBytes(), CountMin::BytesFor(1000, 5));
  EXPECT_EQ(c.Query("anything"), 0u);
  EXPECT_EQ(RangeCountMin::BytesFor(1000, 5, 8), 9 * CountMin::BytesFor(1000, 5));
  RangeCountMin r = RangeCountMin::Create(1000, 5, 8).value();
  EXPECT_GE(r.MemoryBytes(), RangeCountMin::BytesFor(1000, 5, 8));
  EXPECT_EQ(r.RangeCount(0, 255), 0u);
}

}  // namespace
}  // namespace floe::sketch
