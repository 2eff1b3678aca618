// Categorical, string and time chunks (docs/frame.md): the layouts they get, exact round trips
// (NA, empty strings, any bytes, very long values, edge times), sizes against raw, and malformed
// bytes refused.

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "frame/frame.h"
#include "testing/testing.h"

namespace floe::frame {
namespace {

std::string Header(uint8_t layout, uint8_t scale, uint32_t rows, uint64_t field) {
  std::string h(kChunkHeaderBytes, '\0');
  h[0] = static_cast<char>(layout);
  h[1] = static_cast<char>(scale);
  std::memcpy(h.data() + 4, &rows, 4);
  std::memcpy(h.data() + 8, &field, 8);
  return h;
}

// The view reads `bytes`, which must outlive it: a temporary does not compile.
ChunkView MakeOrDie(const std::string& bytes) {
  Result<ChunkView> c = ChunkView::Make(bytes);
  FLOE_CHECK_MSG(c.ok(), c.status().ToString());
  return *c;
}
ChunkView MakeOrDie(std::string&&) = delete;

void ExpectCodes(const std::vector<int32_t>& codes, uint32_t domain, Layout want_codes) {
  const std::string bytes = CompressCodes(codes, domain);
  const ChunkView c = MakeOrDie(bytes);
  EXPECT_EQ(c.layout(), Layout::kCategorical);
  EXPECT_EQ(LayoutName(c.value_layout()), LayoutName(want_codes));
  EXPECT_EQ(c.domain(), domain);
  ASSERT_EQ(c.rows(), codes.size());
  for (uint32_t i = 0; i < codes.size(); i++) {
    ASSERT_EQ(c.CodeAt(i), codes[i]) << "row " << i;
    ASSERT_EQ(c.IsNA(i), codes[i] == kNACode);
  }
}

TEST(CategoricalChunkTest, CodesGetTheNarrowestNumericLayout) {
  ExpectCodes({}, 0, Layout::kEmpty);
  ExpectCodes({kNACode, kNACode}, 0, Layout::kConstant);
  ExpectCodes({2, 2, 2}, 3, Layout::kConstant);
  ExpectCodes({0, 1, 1, 0}, 2, Layout::kBits);
  ExpectCodes({0, 5, kNACode, 253}, 254, Layout::kInt8);
  ExpectCodes({0, 300, kNACode}, 301, Layout::kInt16);
  ExpectCodes({0, 70000, kNACode}, 70001, Layout::kInt32);
  ExpectCodes({0, static_cast<int32_t>(kMaxDomain) - 1}, kMaxDomain, Layout::kInt32);
  std::vector<int32_t> mostly_na(1000, kNACode);
  mostly_na[10] = 4;
  ExpectCodes(mostly_na, 5, Layout::kSparseNA);
  std::vector<int32_t> mostly_first(1000, 0);
  mostly_first[999] = 1;
  ExpectCodes(mostly_first, 7, Layout::kSparseZero);
}

TEST(CategoricalChunkTest, RandomCodesRoundTripAtAQuarterOfRawOrLess) {
  std::mt19937_64 rng(testing::Seed(0, true));
  for (int round = 0; round < 100; round++) {
    const uint32_t domain = 1 + static_cast<uint32_t>(rng() % (round % 2 ? 200 : 60000));
    std::vector<int32_t> codes(rng() % 3000);
    const uint64_t na_in = 1 + rng() % 4;  // up to all NA
    for (int32_t& c : codes) {
      c = rng() % na_in == 0 ? kNACode : static_cast<int32_t>(rng() % domain);
    }
    SCOPED_TRACE(::testing::Message() << "domain " << domain << " rows " << codes.size());
    const std::string bytes = CompressCodes(codes, domain);
    ExpectCodes(codes, domain, MakeOrDie(bytes).value_layout());
    // Raw is a 4-byte code a row; fewer than 65,535 values take 2 bytes or less (and two
    // 16-byte headers).
    EXPECT_LE(CompressCodes(codes, domain).size(), 2 * kChunkHeaderBytes + codes.size() * 4 / 2);
  }
}

TEST(CategoricalChunkTest, MalformedCategoricalChunksAreRefused) {
  const std::string codes = Header(2, 0, 3, 0) + std::string("\x00\x02\xff", 3);  // 0, 2, NA
  EXPECT_TRUE(ChunkView::Make(Header(13, 0, 3, 3) + codes).ok());
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 3, 2) + codes).ok());  // code 2 in a domain of 2
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 4, 3) + codes).ok());  // rows differ
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 3, 3) + codes + "x").ok());
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 3, 3)).ok());                          // no codes
  EXPECT_FALSE(ChunkView::Make(Header(13, 1, 3, 3) + codes).ok());                  // reserved byte
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 3, uint64_t{1} << 31) + codes).ok());  // domain
  // Codes that are not codes: negative, fractional.
  const uint64_t minus_one = static_cast<uint64_t>(int64_t{-1});
  EXPECT_FALSE(
      ChunkView::Make(Header(13, 0, 3, 9) + Header(2, 0, 3, minus_one) + "\x00\x01\x02").ok());
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 3, 9) + Header(6, 1, 3, 0) + "\x00\x01\x02").ok());
  // The fill of sparse codes is a code too: 0 needs a domain of at least one value, NA none.
  const std::string one_listed = "\x05" + Header(1, 0, 1, 0);  // row 5 is 0.0
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 9, 0) + Header(11, 1, 9, 1) + one_listed).ok());
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 9, 0) + Header(12, 1, 9, 1) + one_listed).ok());
  const std::string one_na = "\x05" + Header(1, 0, 1, 0x7ff8000000000000);  // row 5 is NA
  EXPECT_TRUE(ChunkView::Make(Header(13, 0, 9, 0) + Header(12, 1, 9, 1) + one_na).ok());
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 9, 0) + Header(11, 1, 9, 1) + one_na).ok());
  EXPECT_TRUE(ChunkView::Make(Header(13, 0, 9, 1) + Header(11, 1, 9, 1) + one_na).ok());
  // A listed code outside the domain, and a constant one.
  const std::string seven = "\x05" + Header(1, 0, 1, 0x401c000000000000);  // row 5 is 7.0
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 9, 7) + Header(12, 1, 9, 1) + seven).ok());
  EXPECT_TRUE(ChunkView::Make(Header(13, 0, 9, 8) + Header(12, 1, 9, 1) + seven).ok());
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 9, 7) + Header(1, 0, 9, 0x401c000000000000)).ok());
  EXPECT_TRUE(ChunkView::Make(Header(13, 0, 9, 8) + Header(1, 0, 9, 0x401c000000000000)).ok());
  // Codes must be a numeric chunk, not another categorical or a string chunk (checked before
  // parsing, so nesting cannot recurse).
  EXPECT_FALSE(ChunkView::Make(Header(13, 0, 3, 3) + Header(13, 0, 3, 3) + codes).ok());
  std::string nested;
  for (int i = 0; i < 100000; i++) nested += Header(13, 0, 1, 1);
  EXPECT_FALSE(ChunkView::Make(nested).ok());
}

std::vector<std::optional<std::string_view>> Views(
    const std::vector<std::optional<std::string>>& v) {
  std::vector<std::optional<std::string_view>> out;
  for (const auto& s : v) out.push_back(s ? std::optional<std::string_view>(*s) : std::nullopt);
  return out;
}

void ExpectStrings(const std::vector<std::optional<std::string>>& values) {
  Result<std::string> bytes = CompressStrings(Views(values));
  ASSERT_TRUE(bytes.ok());
  const ChunkView c = MakeOrDie(*bytes);
  EXPECT_EQ(c.layout(), Layout::kString);
  ASSERT_EQ(c.rows(), values.size());
  for (uint32_t i = 0; i < values.size(); i++) {
    ASSERT_EQ(c.IsNA(i), !values[i]) << "row " << i;
    const std::string_view got = c.AtString(i);
    ASSERT_EQ(got, values[i].value_or("")) << "row " << i;
    if (!got.empty()) {  // a view into the chunk, not a copy
      EXPECT_GE(got.data(), bytes->data());
      EXPECT_LE(got.data() + got.size(), bytes->data() + bytes->size());
    }
  }
}

TEST(StringChunkTest, ValuesRoundTripAsViewsIntoTheChunk) {
  ExpectStrings({});
  ExpectStrings({std::nullopt});
  ExpectStrings({"", std::nullopt, ""});  // empty is not NA
  ExpectStrings({"héllo", std::string("\0\xff\x80 binary", 10), std::nullopt, "x"});
  ExpectStrings({std::string(3 << 20, 'L'), "short", std::string(70000, '\0')});
  std::mt19937_64 rng(testing::Seed(0, true));
  for (int round = 0; round < 100; round++) {
    std::vector<std::optional<std::string>> values(rng() % 500);
    for (auto& v : values) {
      if (rng() % 5 == 0) continue;
      v.emplace(rng() % 40, '\0');
      for (char& ch : *v) ch = static_cast<char>(rng());
    }
    ExpectStrings(values);
  }
}

TEST(StringChunkTest, ABlobPastTheLimitIsRefusedBeforeAnyCopy) {
  // Views of declared lengths only: the sizes are summed and refused before a byte is read.
  const char byte = 'x';
  const std::string_view half(&byte, kMaxStringBlob / 2 + 1);
  std::vector<std::optional<std::string_view>> v = {half, half};
  EXPECT_EQ(CompressStrings(v).status().code(), StatusCode::kResourceExhausted);
  v = {std::string_view(&byte, SIZE_MAX)};  // a sum that would wrap
  EXPECT_EQ(CompressStrings(v).status().code(), StatusCode::kResourceExhausted);
}

std::string Ends(std::initializer_list<uint32_t> ends) {
  std::string out;
  for (uint32_t e : ends) out.append(reinterpret_cast<const char*>(&e), 4);
  return out;
}

TEST(StringChunkTest, MalformedStringChunksAreRefused) {
  // Rows "ab", NA, "c": ends 2, 2, 3; NA bit 1.
  EXPECT_TRUE(ChunkView::Make(Header(14, 0, 3, 3) + Ends({2, 2, 3}) + "\x02" + "abc").ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 3, 3) + Ends({2, 1, 3}) + "\x02" + "abc").ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 3, 3) + Ends({2, 2, 4}) + "\x02" + "abc").ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 3, 3) + Ends({2, 2, 2}) + "\x02" + "abc").ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 3, 3) + Ends({2, 3, 3}) + "\x02" + "abc").ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 3, 3) + Ends({2, 2, 3}) + "\x0a" + "abc").ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 3, 3) + Ends({2, 2, 3}) + "\x02" + "abcd").ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 3, 4) + Ends({2, 2, 3}) + "\x02" + "abc").ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 3, 3) + Ends({2, 2, 3}) + "\x02" + "ab").ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 1, 3, 3) + Ends({2, 2, 3}) + "\x02" + "abc").ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 3, kMaxStringBlob + 1)).ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 3, UINT64_MAX - 20)).ok());  // length would wrap
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, kMaxChunkRows + 1, 0)).ok());
  EXPECT_FALSE(ChunkView::Make(Header(14, 0, 0xFFFFFFFF, 0)).ok());
}

TEST(TimeChunkTest, MillisecondsGetTheIntegerLayouts) {
  const int64_t day = 86'400'000, t0 = 1'700'000'000'000;  // 2023-11-14
  std::vector<int64_t> ms;
  for (int i = 0; i < 1000; i++) ms.push_back(t0 + (i * 7919) % day);
  ms[5] = kNATime;
  std::string bytes = CompressTimes(ms);
  ChunkView c = MakeOrDie(bytes);
  EXPECT_EQ(c.layout(), Layout::kInt32);  // a day of milliseconds: 4 bytes, half of raw
  EXPECT_TRUE(c.IntegerLayout());
  for (uint32_t i = 0; i < ms.size(); i++) ASSERT_EQ(c.AtTime(i), ms[i]);
  // Times across years are wider; the limits come back exactly.
  ms = {-kMaxTimeMs, kMaxTimeMs, 0, kNATime, t0};
  bytes = CompressTimes(ms);
  c = MakeOrDie(bytes);
  EXPECT_EQ(c.layout(), Layout::kInt64);
  for (uint32_t i = 0; i < ms.size(); i++) ASSERT_EQ(c.AtTime(i), ms[i]);
  // A value no time chunk holds reads as NA, never as an overflowing cast.
  bytes = Compress(std::vector<double>{1e300, 0.5});
  c = MakeOrDie(bytes);
  EXPECT_FALSE(c.IntegerLayout());
  EXPECT_EQ(c.AtTime(0), kNATime);
}

}  // namespace
}  // namespace floe::frame
