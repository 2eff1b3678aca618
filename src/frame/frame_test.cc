// Numeric chunk layouts (docs/frame.md): the layout chosen for each kind of data, exact round
// trips (NA included, bit for bit otherwise), and untrusted bytes refused.

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

// Compresses, checks the layout, decodes and compares every row.
void RoundTrip(const std::vector<double>& values, Layout want) {
  const std::string bytes = Compress(values);
  Result<ChunkView> c = ChunkView::Make(bytes);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(LayoutName(c->layout()), LayoutName(want));
  ASSERT_EQ(c->rows(), values.size());
  for (uint32_t i = 0; i < values.size(); i++) {
    if (IsNA(values[i])) {
      EXPECT_TRUE(c->IsNA(i)) << "row " << i;
    } else {
      EXPECT_EQ(Bits(c->At(i)), Bits(values[i])) << "row " << i << ": " << values[i];
    }
  }
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

TEST(ChunkTest, RandomValuesRoundTripExactly) {
  std::mt19937_64 rng(testing::Seed(0, true));
  for (int round = 0; round < 300; round++) {
    const size_t n = rng() % 2000;
    const int kind = static_cast<int>(rng() % 5);
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
    }
    const std::string bytes = Compress(v);
    Result<ChunkView> c = ChunkView::Make(bytes);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ASSERT_EQ(c->rows(), n);
    for (uint32_t i = 0; i < n; i++) {
      if (IsNA(v[i])) {
        ASSERT_TRUE(c->IsNA(i));
      } else {
        ASSERT_EQ(Bits(c->At(i)), Bits(v[i])) << "kind " << kind << " row " << i;
      }
    }
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

}  // namespace
}  // namespace floe::frame
