#include "wire/wire.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "testing/testing.h"

namespace floe::wire {
namespace {

struct Inner {
  uint32_t a = 0;
  std::string b;
  static constexpr uint16_t kTypeId = 901;
  static constexpr std::string_view kTypeName = "Inner";
  static constexpr auto FloeIcedFields() {
    return std::make_tuple(Field("a", &Inner::a), Field("b", &Inner::b));
  }
  bool operator==(const Inner&) const = default;
};

struct Sample {
  bool flag = false;
  int64_t delta = 0;
  uint64_t count = 0;
  int8_t small = 0;
  double ratio = 0;
  std::string name;
  std::vector<uint64_t> ids;
  std::vector<std::string> tags;
  Inner inner;
  std::vector<Inner> inners;
  static constexpr uint16_t kTypeId = 900;
  static constexpr std::string_view kTypeName = "Sample";
  static constexpr auto FloeIcedFields() {
    return std::make_tuple(Field("flag", &Sample::flag), Field("delta", &Sample::delta),
                           Field("count", &Sample::count), Field("small", &Sample::small),
                           Field("ratio", &Sample::ratio), Field("name", &Sample::name),
                           Field("ids", &Sample::ids), Field("tags", &Sample::tags),
                           Field("inner", &Sample::inner), Field("inners", &Sample::inners));
  }
  bool operator==(const Sample&) const = default;
};

Sample MakeSample() {
  Sample s;
  s.flag = true;
  s.delta = -1234567890123;
  s.count = ~0ull;
  s.small = -7;
  s.ratio = 0.1;
  s.name = "caf\xc3\xa9 \"q\"\n";
  s.ids = {1, 300, 1ull << 63};
  s.tags = {"", "x"};
  s.inner = {42, "in"};
  s.inners = {{1, "a"}, {2, "b"}};
  return s;
}

TEST(WireTest, VarintRoundTripsEdgeValues) {
  const uint64_t values[] = {0, 1, 127, 128, 16383, 16384, (1ull << 32) - 1, 1ull << 63, ~0ull};
  std::string buf;
  Writer w(&buf);
  for (uint64_t v : values) w.PutVarint64(v);
  for (int64_t v : std::initializer_list<int64_t>{0, -1, 1, INT64_MIN, INT64_MAX})
    w.PutVarintSigned(v);
  Reader r(buf);
  for (uint64_t v : values) {
    uint64_t got;
    ASSERT_TRUE(r.GetVarint64(&got).ok());
    EXPECT_EQ(got, v);
  }
  for (int64_t v : std::initializer_list<int64_t>{0, -1, 1, INT64_MIN, INT64_MAX}) {
    int64_t got;
    ASSERT_TRUE(r.GetVarintSigned(&got).ok());
    EXPECT_EQ(got, v);
  }
  EXPECT_TRUE(r.empty());
}

TEST(WireTest, VarintRejectsOverflowAndTruncation) {
  uint64_t v;
  std::string eleven(11, '\x80');
  EXPECT_EQ(Reader(eleven).GetVarint64(&v).code(), StatusCode::kCorruption);
  std::string overflow(9, '\xff');
  overflow.push_back('\x02');  // tenth byte may only be 0 or 1
  EXPECT_EQ(Reader(overflow).GetVarint64(&v).code(), StatusCode::kCorruption);
  EXPECT_EQ(Reader("\x80").GetVarint64(&v).code(), StatusCode::kCorruption);
  uint32_t v32;
  std::string big;
  Writer(&big).PutVarint64(1ull << 40);
  EXPECT_FALSE(Reader(big).GetVarint32(&v32).ok());
}

TEST(WireTest, FixedWidthIsLittleEndian) {
  std::string buf;
  Writer w(&buf);
  w.PutFixed32(0x01020304);
  w.PutFixed64(0x0102030405060708ull);
  w.PutFixed16(0xA0B0);
  w.PutDouble(-2.5);
  EXPECT_EQ(buf.substr(0, 4), std::string("\x04\x03\x02\x01", 4));
  Reader r(buf);
  uint32_t a;
  uint64_t b;
  uint16_t c;
  double d;
  ASSERT_TRUE(r.GetFixed32(&a).ok());
  ASSERT_TRUE(r.GetFixed64(&b).ok());
  ASSERT_TRUE(r.GetFixed16(&c).ok());
  ASSERT_TRUE(r.GetDouble(&d).ok());
  EXPECT_EQ(a, 0x01020304u);
  EXPECT_EQ(b, 0x0102030405060708ull);
  EXPECT_EQ(c, 0xA0B0);
  EXPECT_EQ(d, -2.5);
  EXPECT_FALSE(r.GetU8(nullptr).ok());
}

TEST(WireTest, LengthPrefixedIsBounded) {
  std::string buf;
  Writer w(&buf);
  w.PutVarint64(1000);
  w.PutRaw("short");
  std::string_view out;
  EXPECT_EQ(Reader(buf).GetLengthPrefixed(&out).code(), StatusCode::kCorruption);
  std::string ok;
  Writer(&ok).PutLengthPrefixed("hello");
  EXPECT_EQ(Reader(ok).GetLengthPrefixed(&out, 4).code(), StatusCode::kCorruption);
  ASSERT_TRUE(Reader(ok).GetLengthPrefixed(&out).ok());
  EXPECT_EQ(out, "hello");
}

TEST(Crc32cTest, MatchesPublishedVectors) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string inc;
  for (int i = 0; i < 32; i++) inc.push_back(static_cast<char>(i));
  EXPECT_EQ(Crc32c(inc), 0x46DD794Eu);
  EXPECT_EQ(Crc32c(""), 0u);
}

TEST(Crc32cTest, LargeInputsMatchSmallPieces) {
  // Inputs of three blocks and more take the interleaved path; pieces of 1,000 bytes never do.
  std::string data;
  uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < 200000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    data.push_back(static_cast<char>(x));
  }
  for (size_t len : {24575u, 24576u, 24577u, 100000u, 200000u}) {
    const std::string_view d = std::string_view(data).substr(0, len);
    uint32_t chained = 0;
    for (size_t at = 0; at < d.size(); at += 1000) chained = Crc32c(d.substr(at, 1000), chained);
    EXPECT_EQ(Crc32c(d), chained) << len;
  }
}

TEST(Crc32cTest, ChainsAcrossPieces) {
  std::string data = "The quick brown fox jumps over the lazy dog, many times over.";
  for (size_t cut = 0; cut <= data.size(); cut++) {
    uint32_t a = Crc32c(std::string_view(data).substr(0, cut));
    EXPECT_EQ(Crc32c(std::string_view(data).substr(cut), a), Crc32c(data)) << cut;
  }
}

TEST(IcedTest, RoundTripsEveryFieldKind) {
  Sample s = MakeSample();
  std::string bytes = Encode(s);
  Result<Sample> back = Decode<Sample>(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, s);
}

TEST(IcedTest, EveryTruncationIsAStatusNotACrash) {
  std::string bytes = Encode(MakeSample());
  for (size_t n = 0; n < bytes.size(); n++) {
    Result<Sample> r = Decode<Sample>(std::string_view(bytes).substr(0, n));
    EXPECT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), StatusCode::kCorruption) << n;
  }
}

TEST(IcedTest, RandomCorruptionNeverCrashes) {
  std::string bytes = Encode(MakeSample());
  const uint64_t seed = testing::Seed();
  SCOPED_TRACE("FLOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed);
  for (int i = 0; i < 5000; i++) {
    std::string b = bytes;
    b[rng() % b.size()] = static_cast<char>(rng());
    Result<Sample> r = Decode<Sample>(b);
    if (r.ok()) {
      EXPECT_FALSE(ToJson(*r).empty());
    }
  }
}

TEST(IcedTest, RejectsWrongTypeAndTrailingBytes) {
  std::string bytes = Encode(Inner{1, "x"});
  EXPECT_FALSE(Decode<Sample>(bytes).ok());
  EXPECT_FALSE(Decode<Inner>(bytes + "z").ok());
  // Inner.a is a uint32_t: a varint beyond its range is corruption, not a silent wrap.
  std::string body;
  Writer w(&body);
  w.PutVarint64(1ull << 40);
  w.PutLengthPrefixed("");
  std::string wide;
  Writer o(&wide);
  o.PutVarint64(Inner::kTypeId);
  o.PutLengthPrefixed(body);
  EXPECT_EQ(Decode<Inner>(wide).status().code(), StatusCode::kCorruption);
}

TEST(IcedTest, HostileElementCountDoesNotAllocate) {
  // Sample with ids count = 2^60 and no elements.
  std::string body;
  Writer w(&body);
  w.PutU8(0);
  w.PutVarintSigned(0);
  w.PutVarint64(0);
  w.PutVarintSigned(0);
  w.PutDouble(0);
  w.PutLengthPrefixed("");
  w.PutVarint64(1ull << 60);
  std::string bytes;
  Writer o(&bytes);
  o.PutVarint64(Sample::kTypeId);
  o.PutLengthPrefixed(body);
  Result<Sample> r = Decode<Sample>(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("ids"), std::string_view::npos) << r.status().ToString();
}

TEST(IcedTest, RendersJson) {
  Inner in{7, "a\"b\\c\x01"};
  EXPECT_EQ(ToJson(in), R"({"type":"Inner","a":7,"b":"a\"b\\c\u0001"})");
  Sample s = MakeSample();
  std::string json = ToJson(s);
  EXPECT_NE(json.find(R"("name":"café \"q\"\n")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("ratio":0.1)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("inners":[{"a":1,"b":"a"},{"a":2,"b":"b"}])"), std::string::npos);
}

TEST(JsonTest, InvalidUtf8BecomesReplacementCharacter) {
  std::string out;
  AppendJsonString(&out, "ok\xff\xc3");
  EXPECT_EQ(out, "\"ok\\ufffd\\ufffd\"");
  out.clear();
  AppendJsonString(&out, "\xed\xa0\x80");  // a UTF-16 surrogate encoded in UTF-8
  EXPECT_EQ(out, "\"\\ufffd\\ufffd\\ufffd\"");
  out.clear();
  AppendJsonDouble(&out, std::nan(""));
  EXPECT_EQ(out, "null");
}

TEST(TypeRegistryTest, RendersRegisteredTypesAndRejectsUnknown) {
  TypeRegistry& reg = TypeRegistry::Global();
  ASSERT_TRUE(reg.Register<Inner>().ok());
  ASSERT_TRUE(reg.Register<Inner>().ok());  // idempotent
  EXPECT_EQ(reg.Register(TypeCodec{Inner::kTypeId, "Other", nullptr}).code(),
            StatusCode::kAlreadyExists);
  Result<std::string> json = reg.RenderJson(Encode(Inner{3, "z"}));
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(*json, R"({"type":"Inner","a":3,"b":"z"})");
  EXPECT_FALSE(reg.RenderJson(Encode(Sample{})).ok());  // not registered
  EXPECT_FALSE(reg.RenderJson("").ok());
}

}  // namespace
}  // namespace floe::wire
