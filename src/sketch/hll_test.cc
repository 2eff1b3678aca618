// HyperLogLog against vectors recorded from PostgreSQL 15 with postgresql-hll 2.17
// (../shared/notes/sketches.md), and properties: merge laws, exact folds, estimate accuracy.

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "sketch/sketch.h"
#include "testing/testing.h"

namespace floe::sketch {
namespace {

std::string Hex(std::string_view bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    out.push_back(kDigits[static_cast<uint8_t>(c) >> 4]);
    out.push_back(kDigits[static_cast<uint8_t>(c) & 15]);
  }
  return out;
}

HyperLogLog Make(int log2m, int regwidth, int expthresh, bool sparseon) {
  return HyperLogLog::Create({log2m, regwidth, expthresh, sparseon}).value();
}

HyperLogLog Bigints(int64_t from, int64_t to, int log2m = 11, int expthresh = -1) {
  HyperLogLog h = Make(log2m, 5, expthresh, true);
  for (int64_t i = from; i <= to; i++) h.AddHash(HyperLogLog::HashInt64(i));
  return h;
}

TEST(HllTest, HashesMatchPostgres) {
  EXPECT_EQ(HyperLogLog::HashInt64(1), 0x004403b7fb05c44aULL);  // hll_hash_bigint(1)
  EXPECT_EQ(static_cast<int64_t>(HyperLogLog::HashBytes("user1")), -1727604350198519072LL);
  EXPECT_EQ(HyperLogLog::HashBytes(""), 0u);
  const int32_t one = 1;  // hll_hash_integer hashes 4 bytes
  EXPECT_EQ(static_cast<int64_t>(
                HyperLogLog::HashBytes(std::string_view(reinterpret_cast<const char*>(&one), 4))),
            -8604791237420463362LL);
  EXPECT_EQ(HyperLogLog::HashBytes(std::string_view("\x01", 1)), 8849112093580131862ULL);
}

TEST(HllTest, EmptyHeadersMatchPostgres) {
  EXPECT_EQ(Hex(Make(11, 5, -1, true).Serialize()), "118b7f");
  EXPECT_EQ(Hex(Make(11, 5, 0, true).Serialize()), "118b40");
  EXPECT_EQ(Hex(Make(11, 5, 0, false).Serialize()), "118b00");
  EXPECT_EQ(Hex(Make(11, 5, -1, false).Serialize()), "118b3f");
  EXPECT_EQ(Hex(Make(14, 5, -1, true).Serialize()), "118e7f");
  EXPECT_EQ(Hex(Make(11, 5, 9, true).Serialize()), "118b49");  // PostgreSQL expthresh 256
  EXPECT_EQ(Hex(Make(11, 7, -1, true).Serialize()), "11cb7f");
}

TEST(HllTest, ExplicitAndSparseBytesMatchPostgres) {
  HyperLogLog e = Make(11, 5, -1, true);
  EXPECT_TRUE(e.AddHash(HyperLogLog::HashInt64(1)));
  EXPECT_FALSE(e.AddHash(HyperLogLog::HashInt64(1)));
  EXPECT_EQ(Hex(e.Serialize()), "128b7f004403b7fb05c44a");
  HyperLogLog s = Make(11, 5, 0, true);
  s.AddHash(HyperLogLog::HashInt64(1));  // register 1098, value 4
  EXPECT_EQ(Hex(s.Serialize()), "138b408944");
  HyperLogLog f = Make(11, 5, 0, false);
  f.AddHash(HyperLogLog::HashInt64(1));
  EXPECT_EQ(f.Serialize().size(), 1283u);
  EXPECT_EQ(f.representation(), HyperLogLog::Representation::kFull);
}

TEST(HllTest, PromotionPointsMatchPostgres) {
  using R = HyperLogLog::Representation;
  EXPECT_EQ(Bigints(1, 160).representation(), R::kExplicit);
  EXPECT_EQ(Bigints(1, 161).representation(), R::kSparse);
  EXPECT_EQ(Bigints(1, 780).representation(), R::kSparse);
  EXPECT_EQ(Bigints(1, 781).representation(), R::kFull);
  EXPECT_EQ(Bigints(1, 1280, 14).representation(), R::kExplicit);
  EXPECT_EQ(Bigints(1, 1281, 14).representation(), R::kSparse);
  EXPECT_EQ(Bigints(1, 5037, 14).representation(), R::kSparse);
  EXPECT_EQ(Bigints(1, 5038, 14).representation(), R::kFull);
}

TEST(HllTest, CardinalityMatchesPostgres) {
  EXPECT_EQ(Make(11, 5, -1, true).Cardinality(), 0.0);
  EXPECT_EQ(Bigints(1, 100).Cardinality(), 100.0);  // exact while EXPLICIT
  EXPECT_DOUBLE_EQ(Bigints(1, 1000).Cardinality(), 978.6302601354474);
}

// A sketch whose registers are saturated for its regwidth has an estimate past the large-range
// correction's domain: NaN, as PostgreSQL answers, or the raw estimate when asked for a count
// (PFCOUNT rounded the NaN to INT64_MIN). Registers of any value a decoder accepts are summed
// without an out-of-range shift.
TEST(HllTest, SaturatedSketchesHaveFiniteCounts) {
  HyperLogLog narrow = Make(4, 1, 0, false);
  for (int i = 1; i <= 200; i++) narrow.AddHash(HyperLogLog::HashInt64(i));
  EXPECT_TRUE(std::isnan(narrow.Cardinality())) << "PostgreSQL's answer";
  EXPECT_TRUE(std::isfinite(narrow.Cardinality(true))) << narrow.Cardinality(true);
  EXPECT_GT(narrow.Cardinality(true), 0);
  std::string full = "\x14\xe4\x7f";  // FULL, regwidth 8, log2m 4
  full.append(16, '\xff');            // every register 255
  Result<HyperLogLog> h = HyperLogLog::Parse(full);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_TRUE(std::isfinite(h->Cardinality(true))) << h->Cardinality(true);
}

TEST(HllTest, EveryRepresentationRoundTrips) {
  for (int n : {0, 1, 100, 161, 700, 781, 20000}) {
    for (bool sparseon : {true, false}) {
      HyperLogLog h = Make(11, 5, -1, sparseon);
      for (int i = 1; i <= n; i++) h.AddHash(HyperLogLog::HashInt64(i));
      Result<HyperLogLog> back = HyperLogLog::Parse(h.Serialize());
      ASSERT_TRUE(back.ok()) << back.status().ToString();
      EXPECT_EQ(back->Serialize(), h.Serialize()) << n;
      EXPECT_EQ(back->Cardinality(), h.Cardinality()) << n;
    }
  }
}

TEST(HllTest, ParseRejectsCorruptBytes) {
  EXPECT_FALSE(HyperLogLog::Parse("").ok());
  EXPECT_FALSE(HyperLogLog::Parse(std::string("\x21\x8b\x7f", 3)).ok());  // schema version 2
  EXPECT_FALSE(HyperLogLog::Parse(std::string("\x15\x8b\x7f", 3)).ok());  // type 5
  EXPECT_FALSE(HyperLogLog::Parse(std::string("\x11\x8b\x7f\x00", 4)).ok());
  EXPECT_FALSE(HyperLogLog::Parse(std::string("\x12\x8b\x7f\x00\x01", 5)).ok());
  // EXPLICIT elements must ascend: 2 then 1 is refused, as is a duplicate.
  const std::string descending(
      "\x12\x8b\x7f"
      "\0\0\0\0\0\0\0\x02"
      "\0\0\0\0\0\0\0\x01",
      19);
  EXPECT_EQ(HyperLogLog::Parse(descending).status().code(), StatusCode::kCorruption);
  const std::string duplicate(
      "\x12\x8b\x7f"
      "\0\0\0\0\0\0\0\x02"
      "\0\0\0\0\0\0\0\x02",
      19);
  EXPECT_EQ(HyperLogLog::Parse(duplicate).status().code(), StatusCode::kCorruption);
  const std::string ascending(
      "\x12\x8b\x7f"
      "\0\0\0\0\0\0\0\x01"
      "\0\0\0\0\0\0\0\x02",
      19);
  EXPECT_TRUE(HyperLogLog::Parse(ascending).ok());
  std::string full = Bigints(1, 5000).Serialize();
  EXPECT_FALSE(HyperLogLog::Parse(full.substr(0, full.size() - 1)).ok());
  EXPECT_FALSE(HyperLogLog::Parse(std::string("\x13\x9f\x7f\xff", 4)).ok());  // 2^31 registers
  EXPECT_FALSE(HyperLogLog::Create({3, 5, -1, true}).ok());
  EXPECT_FALSE(HyperLogLog::Create({11, 9, -1, true}).ok());
  EXPECT_FALSE(HyperLogLog::Create({11, 5, 19, true}).ok());
}

TEST(HllTest, MergeIsCommutativeAssociativeIdempotentAndEqualsDirectAdd) {
  const uint64_t seed = testing::Seed();
  SCOPED_TRACE("FLOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int sizes : {50, 300, 5000}) {
    HyperLogLog a = Make(11, 5, -1, true), b = a, c = a, all = a;
    for (int i = 0; i < sizes; i++) {
      const uint64_t x = rng(), y = rng(), z = rng();
      a.AddHash(x);
      b.AddHash(y);
      c.AddHash(z);
      all.AddHash(x);
      all.AddHash(y);
      all.AddHash(z);
    }
    HyperLogLog ab = a;
    ASSERT_TRUE(ab.Merge(b).ok());
    HyperLogLog ba = b;
    ASSERT_TRUE(ba.Merge(a).ok());
    EXPECT_EQ(ab.Serialize(), ba.Serialize());
    HyperLogLog ab_c = ab;
    ASSERT_TRUE(ab_c.Merge(c).ok());
    HyperLogLog bc = b;
    ASSERT_TRUE(bc.Merge(c).ok());
    HyperLogLog a_bc = a;
    ASSERT_TRUE(a_bc.Merge(bc).ok());
    EXPECT_EQ(ab_c.Serialize(), a_bc.Serialize());
    EXPECT_EQ(ab_c.Serialize(), all.Serialize());
    HyperLogLog twice = ab_c;
    ASSERT_TRUE(twice.Merge(ab_c).ok());
    EXPECT_EQ(twice.Serialize(), ab_c.Serialize());
  }
  EXPECT_EQ(Make(11, 5, -1, true).Merge(Make(12, 5, -1, true)).code(),
            StatusCode::kInvalidArgument);
}

TEST(HllTest, FoldEqualsBuildingTheSmallerSketchDirectly) {
  // The recorded PostgreSQL case: 1..100000 at log2m 14 folded to 11 is byte-identical to the
  // log2m 11 sketch built from the same inputs, whose estimate is 96663.3691660477.
  HyperLogLog big = Bigints(1, 100000, 14);
  HyperLogLog direct = Bigints(1, 100000, 11);
  Result<HyperLogLog> folded = big.Fold(11);
  ASSERT_TRUE(folded.ok());
  EXPECT_EQ(folded->Serialize(), direct.Serialize());
  EXPECT_NEAR(folded->Cardinality(), 96663.3691660477, 1e-6);
  for (int n : {10, 500, 3000}) {  // explicit and sparse inputs too
    Result<HyperLogLog> f = Bigints(1, n, 14).Fold(11);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->Serialize(), Bigints(1, n, 11).Serialize()) << n;
  }
  EXPECT_FALSE(direct.Fold(12).ok());
  // A narrower register width: the same as building with it (values cap at 2^w - 1).
  HyperLogLog narrow = HyperLogLog::Create({11, 3, -1, true}).value();
  for (int64_t i = 1; i <= 100000; i++) narrow.AddHash(HyperLogLog::HashInt64(i));
  Result<HyperLogLog> both = big.Fold(11, 3);
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->Serialize(), narrow.Serialize());
}

// 10^2 to 10^7 distinct elements, six independent runs each, at two precisions. Each run's
// error should be within 3 standard errors (1.04 / sqrt(m)); a run outside happens about 0.3%
// of the time, so at most one of six may be (an arbitrary seed fails this in a cell with
// probability about 1.3e-4). The mean error over the runs (the bias) must be within 4 standard
// errors of the mean (probability about 6e-5 per cell for an unbiased estimator; at 3, a seed
// failed somewhere in the 12 cells about 3% of the time, as CI once showed). So a seed fails
// about 0.2% of the time and CI runs a fixed one (testing.h).
TEST(HllTest, EstimatesStayWithinThreeStandardErrors) {
  const uint64_t seed = testing::Seed(20261122);
  SCOPED_TRACE("FLOE_TEST_SEED=" + std::to_string(seed));
  constexpr int kRuns = 6;
  for (int log2m : {11, 14}) {
    const double se = 1.04 / std::sqrt(std::ldexp(1.0, log2m));
    for (uint64_t n = 100; n <= 10000000; n *= 10) {
      int outside = 0;
      double sum = 0;
      for (int run = 0; run < kRuns; run++) {
        HyperLogLog h = Make(log2m, 5, -1, true);
        // Distinct elements: a bijection (Mix64) of distinct counters, hashed as PostgreSQL
        // hashes bigints.
        const uint64_t base = Mix64(seed + static_cast<uint64_t>(run) * 0x9e3779b97f4a7c15ULL);
        for (uint64_t i = 0; i < n; i++) {
          h.AddHash(HyperLogLog::HashInt64(static_cast<int64_t>(Mix64(base + i))));
        }
        const double rel = h.Cardinality() / static_cast<double>(n) - 1.0;
        outside += std::abs(rel) > 3 * se ? 1 : 0;
        sum += rel;
      }
      EXPECT_LE(outside, 1) << "log2m " << log2m << " n " << n;
      EXPECT_LE(std::abs(sum / kRuns), 4 * se / std::sqrt(kRuns))
          << "log2m " << log2m << " n " << n;
    }
  }
}

}  // namespace
}  // namespace floe::sketch
