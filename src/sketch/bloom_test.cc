#include <gtest/gtest.h>

#include <random>
#include <string>

#include "sketch/sketch.h"
#include "testing/testing.h"

namespace floe::sketch {
namespace {

TEST(BloomTest, SizingFollowsRedisBloom) {
  // BF.RESERVE k 0.01 1000: the first sub-filter gets half the error rate.
  BloomFilter f = BloomFilter::Create(0.01, 1000, 2).value();
  EXPECT_EQ(f.sub_filter(0).bits, 11072u);
  EXPECT_EQ(f.sub_filter(0).hashes, 8u);
  EXPECT_EQ(f.capacity(), 1000u);
  // NONSCALING keeps the whole error rate.
  BloomFilter n = BloomFilter::Create(0.01, 1000, 0).value();
  EXPECT_EQ(n.sub_filter(0).bits, 9600u);
  EXPECT_EQ(n.sub_filter(0).hashes, 7u);
  // Error rates above 0.25 are capped, as RedisBloom 8 does.
  EXPECT_EQ(BloomFilter::Create(0.9, 10, 2)->error_rate(), 0.25);
  EXPECT_FALSE(BloomFilter::Create(0, 10, 2).ok());
  EXPECT_FALSE(BloomFilter::Create(1, 10, 2).ok());
  EXPECT_FALSE(BloomFilter::Create(0.01, 0, 2).ok());
  EXPECT_FALSE(BloomFilter::Create(0.01, BloomFilter::kMaxCapacity + 1, 2).ok());
  EXPECT_FALSE(BloomFilter::Create(0.01, 10, BloomFilter::kMaxExpansion + 1).ok());
  EXPECT_EQ(BloomFilter::Create(1e-300, BloomFilter::kMaxCapacity, 2).status().code(),
            StatusCode::kResourceExhausted);
}

// The false-positive checks are statistical: 100,000 probes against a rate of at most 1% fail
// the 1.3% bound about 9.6 standard deviations out, so any seed passes; the fixed seed keeps CI
// reproducible all the same (testing.h).
TEST(BloomTest, NoFalseNegativesAndTheErrorRateHolds) {
  const uint64_t seed = testing::Seed(20261122);
  SCOPED_TRACE("FLOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (uint32_t expansion : {0u, 2u}) {
    BloomFilter f = BloomFilter::Create(0.01, 20000, expansion).value();
    std::vector<std::string> in;
    for (int i = 0; i < 20000; i++) in.push_back("in:" + std::to_string(rng()));
    int added = 0;
    for (const auto& s : in) added += f.Add(s).value() ? 1 : 0;
    EXPECT_EQ(f.items(), static_cast<uint64_t>(added));
    EXPECT_GT(added, 19900);  // a few may collide with earlier ones: that is the error rate
    for (const auto& s : in) ASSERT_TRUE(f.Contains(s));
    int false_positives = 0;
    const int probes = 100000;
    for (int i = 0; i < probes; i++) false_positives += f.Contains("out:" + std::to_string(rng()));
    EXPECT_LE(false_positives, probes * 0.013) << "expansion " << expansion;
  }
}

TEST(BloomTest, ScalesByAddingSubFiltersAndKeepsTheBound) {
  const uint64_t seed = testing::Seed(20261122);
  SCOPED_TRACE("FLOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  BloomFilter f = BloomFilter::Create(0.01, 100, 2).value();
  std::vector<std::string> in;
  for (int i = 0; i < 50000; i++) in.push_back("in:" + std::to_string(rng()));
  for (const auto& s : in) ASSERT_TRUE(f.Add(s).ok());
  // 100 + 200 + ... : 9 sub-filters hold 51,100.
  EXPECT_EQ(f.filters(), 9u);
  EXPECT_EQ(f.capacity(), 51100u);
  EXPECT_EQ(f.sub_filter(1).capacity, 200u);
  EXPECT_DOUBLE_EQ(f.sub_filter(1).error, 0.0025);
  for (const auto& s : in) ASSERT_TRUE(f.Contains(s));
  int false_positives = 0;
  const int probes = 100000;
  for (int i = 0; i < probes; i++) false_positives += f.Contains("out:" + std::to_string(rng()));
  EXPECT_LE(false_positives, probes * 0.013);
}

TEST(BloomTest, NonScalingFilterRefusesNewItemsWhenFull) {
  BloomFilter f = BloomFilter::Create(0.01, 10, 0).value();
  int i = 0;
  while (f.items() < 10) ASSERT_TRUE(f.Add("x" + std::to_string(i++)).ok());
  EXPECT_FALSE(f.AddWouldGrow("x0"));  // present: no growth needed
  EXPECT_EQ(f.Add("x0").value(), false);
  EXPECT_TRUE(f.AddWouldGrow("new item"));
  Result<bool> r = f.Add("new item");
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(), "non scaling filter is full");
  EXPECT_EQ(f.items(), 10u);
}

TEST(BloomTest, MergeIsTheUnionAndRefusesOtherConfigurations) {
  BloomFilter a = BloomFilter::Create(0.01, 100, 2).value();
  BloomFilter b = BloomFilter::Create(0.01, 100, 2).value();
  for (int i = 0; i < 500; i++) ASSERT_TRUE(a.Add("a" + std::to_string(i)).ok());
  for (int i = 0; i < 50; i++) ASSERT_TRUE(b.Add("b" + std::to_string(i)).ok());
  BloomFilter ab = a, ba = b;
  ASSERT_TRUE(ab.Merge(b).ok());
  ASSERT_TRUE(ba.Merge(a).ok());
  EXPECT_EQ(ab.Serialize(), ba.Serialize());  // commutative
  for (int i = 0; i < 500; i++) EXPECT_TRUE(ab.Contains("a" + std::to_string(i)));
  for (int i = 0; i < 50; i++) EXPECT_TRUE(ab.Contains("b" + std::to_string(i)));
  EXPECT_EQ(ab.items(), a.items() + b.items());
  BloomFilter self = a;
  ASSERT_TRUE(self.Merge(a).ok());  // bits idempotent
  EXPECT_TRUE(self.Contains("a1"));
  EXPECT_FALSE(a.Merge(BloomFilter::Create(0.02, 100, 2).value()).ok());
  EXPECT_FALSE(a.Merge(BloomFilter::Create(0.01, 101, 2).value()).ok());
  EXPECT_FALSE(a.Merge(BloomFilter::Create(0.01, 100, 4).value()).ok());
}

TEST(BloomTest, SerializationRoundTripsAndRejectsCorruption) {
  BloomFilter f = BloomFilter::Create(0.001, 50, 3).value();
  for (int i = 0; i < 400; i++) ASSERT_TRUE(f.Add(std::to_string(i)).ok());
  const std::string bytes = f.Serialize();
  BloomFilter g = BloomFilter::Parse(bytes).value();
  EXPECT_EQ(f, g);
  EXPECT_EQ(g.Serialize(), bytes);
  for (size_t cut = 0; cut < bytes.size(); cut += 7) {
    EXPECT_FALSE(BloomFilter::Parse(bytes.substr(0, cut)).ok()) << cut;
  }
  EXPECT_FALSE(BloomFilter::Parse(bytes + "x").ok());
  // A header claiming a huge filter with no bits behind it allocates nothing and fails.
  BloomFilter big = BloomFilter::Create(1e-9, BloomFilter::kMaxCapacity / 64, 2).value();
  const std::string header = big.Serialize().substr(0, 40);
  EXPECT_FALSE(BloomFilter::Parse(header).ok());
}

// The sizes the server charges before allocating (sketch_cell.h, rule 8) are the sizes the
// filter then holds.
TEST(BloomFilterTest, SizesAreKnownBeforeAllocating) {
  const uint64_t first = BloomFilter::FirstFilterBytes(0.01, 1000, 2);
  BloomFilter f = BloomFilter::Create(0.01, 1000, 2).value();
  EXPECT_GT(first, 1000u);
  EXPECT_GE(f.MemoryBytes(), first);
  EXPECT_LT(f.MemoryBytes(), first + 256);
  EXPECT_EQ(BloomFilter::FirstFilterBytes(0, 1000, 2), 0u);
  EXPECT_EQ(BloomFilter::FirstFilterBytes(0.01, 0, 2), 0u);
  const uint64_t growth = f.GrowthBytes();
  EXPECT_GT(growth, first);
  for (int i = 0; f.filters() == 1; i++) ASSERT_TRUE(f.Add("item" + std::to_string(i)).ok());
  EXPECT_GE(f.MemoryBytes(), first + growth);
  EXPECT_EQ(BloomFilter::Create(0.01, 10, 0).value().GrowthBytes(), 0u);  // non-scaling
}

}  // namespace
}  // namespace floe::sketch
