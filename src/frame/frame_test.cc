// Numeric chunk layouts, dense and sparse (docs/frame.md): the layout chosen for each kind of
// data, exact round trips (NA included, bit for bit otherwise), and untrusted bytes refused.

#include "frame/frame.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "testing/testing.h"

namespace floe::frame {
namespace {

uint64_t Bits(double v) {
  uint64_t b;
  std::memcpy(&b, &v, 8);
  return b;
}

bool Same(double a, double b) { return IsNA(a) ? IsNA(b) : Bits(a) == Bits(b); }

// Every way of reading a chunk gives `values` back: At, ForEach and ForEachNonZero.
void ExpectReadsBack(const ChunkView& c, const std::vector<double>& values) {
  ASSERT_EQ(c.rows(), values.size());
  for (uint32_t i = 0; i < values.size(); i++) {
    ASSERT_TRUE(Same(c.At(i), values[i])) << "row " << i << ": " << values[i] << " read " << c.At(i)
                                          << " from " << LayoutName(c.layout());
  }
  uint32_t next = 0;
  c.ForEach([&](uint32_t i, double v) {
    ASSERT_EQ(i, next++);
    ASSERT_TRUE(Same(v, values[i])) << "ForEach row " << i;
  });
  EXPECT_EQ(next, values.size());
  std::vector<uint32_t> want, got;
  for (uint32_t i = 0; i < values.size(); i++) {
    if (values[i] != 0) want.push_back(i);
  }
  c.ForEachNonZero([&](uint32_t i, double v) {
    got.push_back(i);
    ASSERT_TRUE(Same(v, values[i])) << "ForEachNonZero row " << i;
  });
  EXPECT_EQ(got, want);
}

// Compresses, checks the layout, decodes and compares every row.
void RoundTrip(const std::vector<double>& values, Layout want) {
  const std::string bytes = Compress(values);
  Result<ChunkView> c = ChunkView::Make(bytes);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(LayoutName(c->layout()), LayoutName(want));
  ExpectReadsBack(*c, values);
}

TEST(ChunkTest, EachKindOfDataGetsItsLayout) {
  RoundTrip({}, Layout::kEmpty);
  RoundTrip({7, 7, 7}, Layout::kConstant);
  RoundTrip({kNA, kNA}, Layout::kConstant);
  RoundTrip({0, 1, 1, 0, 1, 0, 0, 1, 1}, Layout::kBits);
  RoundTrip({0, 1, kNA}, Layout::kInt8);  // bits carry no NA
  RoundTrip({100, 300, 254, kNA}, Layout::kInt8);
  RoundTrip({-5, 60000, kNA}, Layout::kInt16);
  RoundTrip({-2'000'000'000.0, 2'000'000'000.0, kNA}, Layout::kInt32);
  RoundTrip({-3e9, 3e9}, Layout::kInt64);
  RoundTrip({std::ldexp(1.0, 60), -std::ldexp(1.0, 62), kNA}, Layout::kInt64);
  RoundTrip({0.5, 1.25, 2.0, kNA}, Layout::kScaled8);  // hundredths 50..200
  RoundTrip({19.99, 4.5, 1000.01, kNA}, Layout::kScaled32);
  RoundTrip({0.001, 0.002, -0.003}, Layout::kScaled8);
  RoundTrip({1.0 / 3, 2.0 / 3}, Layout::kDouble);
  RoundTrip({1e300, -1e-300, kNA}, Layout::kDouble);
}

TEST(ChunkTest, ValuesThatLookLikeSentinelsOrSignedZerosStayExact) {
  RoundTrip({-0.0, 1.0, 2.0}, Layout::kDouble);  // -0.0 must come back with its sign
  RoundTrip({-0.0, -0.0}, Layout::kConstant);
  RoundTrip({0, 254}, Layout::kInt8);   // 254 is the largest offset that is not NA
  RoundTrip({0, 255}, Layout::kInt16);  // 255 would be the 1-byte NA
  RoundTrip({-9223372036854775808.0, 0.0}, Layout::kDouble);    // INT64_MIN is int64's NA
  RoundTrip({std::nan("1"), std::nan("2"), 3}, Layout::kInt8);  // every NaN is NA
}

TEST(ChunkTest, NarrowLayoutsTakeTheBytesTheyShould) {
  std::vector<double> v(1000);
  for (size_t i = 0; i < v.size(); i++) v[i] = static_cast<double>(i % 200) + 1e6;
  EXPECT_EQ(Compress(v).size(), kChunkHeaderBytes + 1000);
  for (size_t i = 0; i < v.size(); i++) v[i] = (i % 2 == 0) ? 1 : 0;
  EXPECT_EQ(Compress(v).size(), kChunkHeaderBytes + 125);
}

TEST(ChunkTest, MostlyZeroOrMostlyNAChunksAreSparse) {
  std::vector<double> v(1000, 0.0);
  v[3] = 7;
  v[500] = kNA;
  v[999] = -0.0;  // not the fill: its sign must come back
  RoundTrip(v, Layout::kSparseZero);
  // 3 listed rows: 2-byte indices, then the values in their own chunk (int8).
  Result<ChunkView> c = ChunkView::Make(Compress(v));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->stored(), 3u);
  EXPECT_EQ(LayoutName(c->stored_layout()), "double");  // -0.0 keeps the values raw
  v[999] = 2;
  c = ChunkView::Make(Compress(v));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(LayoutName(c->stored_layout()), "int8");
  EXPECT_EQ(c->bytes(), 2 * kChunkHeaderBytes + 3 * 2 + 3);

  std::vector<double> na(300, kNA);
  na[0] = 1.5;
  na[299] = 1e300;
  RoundTrip(na, Layout::kSparseNA);
  // 1-byte indices below 257 rows; 4-byte ones above 65,536.
  std::vector<double> big(70000, 0.0);
  big[69999] = 1;
  RoundTrip(big, Layout::kSparseZero);
  c = ChunkView::Make(Compress(big));
  EXPECT_EQ(c->bytes(), 2 * kChunkHeaderBytes + 4);
}

TEST(ChunkTest, SparseIsChosenOnlyWhenItIsSmaller) {
  // A 0/1 column with no NA is one bit a row as bits; sparse wins only when under ~1 row in 16
  // is a 1 (2-byte indices).
  std::vector<double> v(4096, 0.0);
  for (size_t i = 0; i < v.size(); i += 8) v[i] = 1;  // 512 ones: 1,024 bytes sparse, 512 bits
  RoundTrip(v, Layout::kBits);
  std::fill(v.begin(), v.end(), 0.0);
  for (size_t i = 0; i < v.size(); i += 64) v[i] = 1;  // 64 ones: 128 + 32 bytes < 512
  RoundTrip(v, Layout::kSparseZero);
  // Half zeros of wide doubles: 8 bytes a row dense against 2 + 8 per listed row sparse.
  std::mt19937_64 rng(1);
  for (size_t i = 0; i < v.size(); i++) v[i] = i % 2 ? 0.0 : std::ldexp(double(rng() | 1), -70);
  RoundTrip(v, Layout::kSparseZero);
  // ... until more than 80% of the rows are listed: 7 in 8 take 35,840 bytes sparse, 32,768 raw.
  for (size_t i = 0; i < v.size(); i++) v[i] = i % 8 ? std::ldexp(double(rng() | 1), -70) : 0.0;
  RoundTrip(v, Layout::kDouble);
  // Small chunks: the second header costs more than the rows saved.
  RoundTrip({0, 0, 0, 5}, Layout::kInt8);
}

TEST(ChunkTest, RandomValuesRoundTripExactly) {
  std::mt19937_64 rng(testing::Seed(0, true));
  for (int round = 0; round < 400; round++) {
    const size_t n = rng() % 2000;
    const int kind = static_cast<int>(rng() % 5);
    // A third of the chunks are mostly zeros or mostly NA, the sparse layouts' data.
    const int fill = static_cast<int>(rng() % 3);
    const uint64_t dense_in = 2 + rng() % 100;
    const int64_t span = int64_t{1} << (rng() % 62);
    std::vector<double> v(n);
    for (double& x : v) {
      switch (kind) {
        case 0:
          x = static_cast<double>(static_cast<int64_t>(rng() % static_cast<uint64_t>(span)) -
                                  span / 2);
          break;
        case 1:
          x = static_cast<double>(static_cast<int64_t>(rng() % 100000)) / 100.0;
          break;
        case 2: {
          uint64_t b = rng();
          std::memcpy(&x, &b, 8);  // any bits: NaNs, infinities, subnormals
          break;
        }
        case 3:
          x = static_cast<double>(rng() % 2);
          break;
        default:
          x = std::ldexp(static_cast<double>(rng() % 1000), static_cast<int>(rng() % 80) - 40);
      }
      if (rng() % 10 == 0) x = kNA;
      if (fill != 0 && rng() % dense_in != 0) x = fill == 1 ? 0.0 : kNA;
    }
    const std::string bytes = Compress(v);
    Result<ChunkView> c = ChunkView::Make(bytes);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    SCOPED_TRACE(::testing::Message() << "kind " << kind << " fill " << fill);
    ExpectReadsBack(*c, v);
    // Never larger than raw doubles.
    EXPECT_LE(bytes.size(), kChunkHeaderBytes + 8 * n);
  }
}

std::string Header(uint8_t layout, uint8_t scale, uint32_t rows, int64_t bias) {
  std::string h(kChunkHeaderBytes, '\0');
  h[0] = static_cast<char>(layout);
  h[1] = static_cast<char>(scale);
  std::memcpy(h.data() + 4, &rows, 4);
  std::memcpy(h.data() + 8, &bias, 8);
  return h;
}

TEST(ChunkTest, MalformedChunksAreRefused) {
  EXPECT_FALSE(ChunkView::Make("").ok());
  EXPECT_FALSE(ChunkView::Make(std::string(15, '\0')).ok());
  EXPECT_FALSE(ChunkView::Make(Header(kLayoutCount, 0, 1, 0)).ok());  // unknown layout
  EXPECT_FALSE(ChunkView::Make(Header(0, 0, 1, 0)).ok());             // empty with a row
  EXPECT_FALSE(ChunkView::Make(Header(2, 0, 4, 0) + "abc").ok());     // 3 bytes for 4 rows
  EXPECT_FALSE(ChunkView::Make(Header(2, 0, 1, 0) + "ab").ok());      // trailing byte
  EXPECT_FALSE(ChunkView::Make(Header(2, 3, 1, 0) + "a").ok());       // scale on an int layout
  EXPECT_FALSE(ChunkView::Make(Header(6, 0, 1, 0) + "a").ok());       // scaled without a scale
  EXPECT_FALSE(ChunkView::Make(Header(6, 10, 1, 0) + "a").ok());      // scale above 9
  EXPECT_FALSE(ChunkView::Make(Header(2, 0, kMaxChunkRows + 1, 0)).ok());
  EXPECT_FALSE(ChunkView::Make(Header(2, 0, 1, INT64_MAX - 10) + "a").ok());      // bias overflows
  EXPECT_FALSE(ChunkView::Make(Header(9, 0, 1, 5) + std::string(8, '\0')).ok());  // stray bias
  EXPECT_FALSE(ChunkView::Make(Header(10, 0, 3, 0) + "\x0f").ok());  // bits past the rows
  std::string reserved = Header(2, 0, 1, 0) + "a";
  reserved[2] = 1;
  EXPECT_FALSE(ChunkView::Make(reserved).ok());
  EXPECT_TRUE(ChunkView::Make(Header(2, 0, 1, 0) + "a").ok());
  EXPECT_TRUE(ChunkView::Make(Header(10, 0, 3, 0) + "\x05").ok());
}

TEST(ChunkTest, MalformedSparseChunksAreRefused) {
  const std::string values = Header(2, 0, 2, 0) + "ab";  // two int8 rows
  auto sparse = [&](uint8_t width, uint32_t rows, int64_t stored, std::string index) {
    return Header(11, width, rows, stored) + index + values;
  };
  ASSERT_TRUE(ChunkView::Make(sparse(1, 10, 2, "\x02\x09")).ok());
  ASSERT_TRUE(ChunkView::Make(sparse(2, 10, 2, std::string("\x02\0\x09\0", 4))).ok());
  EXPECT_FALSE(ChunkView::Make(sparse(3, 10, 2, "\x02\x09\0\0\0\0")).ok());  // width 3
  EXPECT_FALSE(ChunkView::Make(sparse(0, 10, 2, "")).ok());                  // width 0
  EXPECT_FALSE(ChunkView::Make(sparse(1, 10, 0, "")).ok());                  // lists nothing
  EXPECT_FALSE(ChunkView::Make(sparse(1, 1, 2, "\x00\x01")).ok());           // more than rows
  EXPECT_FALSE(ChunkView::Make(sparse(1, 10, 2, "\x09\x02")).ok());          // decreasing
  EXPECT_FALSE(ChunkView::Make(sparse(1, 10, 2, "\x02\x02")).ok());          // repeated
  EXPECT_FALSE(ChunkView::Make(sparse(1, 10, 2, "\x02\x0a")).ok());          // past the rows
  EXPECT_FALSE(ChunkView::Make(sparse(1, 10, 3, "\x01\x02\x03")).ok());      // 3 indices, 2 values
  EXPECT_FALSE(ChunkView::Make(sparse(1, 10, 2, "\x02\x09") + "x").ok());    // trailing byte
  EXPECT_FALSE(ChunkView::Make(Header(11, 1, 10, 2) + "\x02").ok());         // truncated index
  EXPECT_FALSE(ChunkView::Make(Header(11, 4, 10, int64_t{1} << 40)).ok());   // huge count
  EXPECT_FALSE(ChunkView::Make(sparse(1, kMaxChunkRows + 1, 2, "\x02\x09")).ok());
  std::string reserved = sparse(1, 10, 2, "\x02\x09");
  reserved[3] = 1;
  EXPECT_FALSE(ChunkView::Make(reserved).ok());
  // The listed values must be a dense chunk: not sparse, not empty, and well formed.
  const std::string inner_sparse = Header(11, 1, 2, 1) + "\x01" + Header(2, 0, 1, 0) + "a";
  EXPECT_FALSE(ChunkView::Make(Header(12, 1, 10, 2) + "\x02\x09" + inner_sparse).ok());
  EXPECT_FALSE(ChunkView::Make(Header(12, 1, 10, 2) + "\x02\x09" + Header(2, 0, 2, 0)).ok());
}

}  // namespace
}  // namespace floe::frame
