#include "base/base.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

namespace floe {
namespace {

TEST(StatusTest, OkIsNullAndCheap) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_EQ(sizeof(Status), sizeof(void*));
}

TEST(StatusTest, CarriesCodeAndMessage) {
  Status s = Status::Corruption("bad varint");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_EQ(s.message(), "bad varint");
  EXPECT_EQ(s.ToString(), "Corruption: bad varint");
  Status copy = s;
  EXPECT_EQ(copy, s);
  EXPECT_EQ(s.WithContext("decoding").message(), "decoding: bad varint");
  EXPECT_TRUE(Status().WithContext("x").ok());
}

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  FLOE_ASSIGN_OR_RETURN(int h, Half(x));
  FLOE_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int x) {
  FLOE_RETURN_IF_ERROR(Half(x).status());
  return Status::OK();
}

TEST(ResultTest, PropagatesThroughMacros) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_FALSE(CheckEven(3).ok());
  EXPECT_EQ(Quarter(6).value_or(-1), -1);
}

TEST(ResultTest, OkStatusBecomesInternalError) {
  Result<int> r{Status::OK()};
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

TEST(CheckDeathTest, CheckAbortsWithExpression) {
  EXPECT_DEATH(FLOE_CHECK(1 + 1 == 3), "1 \\+ 1 == 3");
}

TEST(LogTest, ParsesLevels) {
  EXPECT_EQ(*ParseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_FALSE(ParseLogLevel("loud").ok());
}

// MurmurHash3 x64-128 verification as published with smhasher: hash the keys {}, {0}, {0,1},
// ... of lengths 0..255 with seed 256-i, hash the concatenated 16-byte results with seed 0, and
// the first four bytes read little-endian must be 0x6384BA69.
TEST(HashTest, Murmur3MatchesSmhasherVerificationValue) {
  uint8_t key[256];
  uint8_t hashes[256 * 16];
  for (int i = 0; i < 256; i++) {
    key[i] = static_cast<uint8_t>(i);
    Hash128 h = Murmur3x64_128(key, static_cast<size_t>(i), static_cast<uint32_t>(256 - i));
    std::memcpy(hashes + i * 16, &h.h1, 8);
    std::memcpy(hashes + i * 16 + 8, &h.h2, 8);
  }
  Hash128 final = Murmur3x64_128(hashes, sizeof(hashes), 0);
  uint32_t verification;
  std::memcpy(&verification, &final.h1, 4);
  EXPECT_EQ(verification, 0x6384BA69u);
}

TEST(HashTest, Murmur3KnownValues) {
  Hash128 empty = Murmur3x64_128("", 0, 0);
  EXPECT_EQ(empty.h1, 0u);
  EXPECT_EQ(empty.h2, 0u);
  // "hello" with seed 0, as computed by the reference implementation (and Python's mmh3).
  Hash128 hello = Murmur3x64_128("hello", 5, 0);
  EXPECT_EQ(hello.h1, 0xcbd8a7b341bd9b02ULL);
  EXPECT_EQ(hello.h2, 0x5b1e906a48ae1d19ULL);
}

TEST(HashTest, KeyHashIsStableXxh3) {
  // XXH3-64 of the empty input with seed 0 is a published constant.
  EXPECT_EQ(HashBytes(""), 0x2D06800538D394C2ULL);
  EXPECT_NE(HashBytes("a"), HashBytes("b"));
}

TEST(ParseTest, DecimalInt64FollowsRedisRules) {
  int64_t v = 0;
  EXPECT_TRUE(ParseDecimalInt64("0", &v));
  EXPECT_EQ(v, 0);
  EXPECT_TRUE(ParseDecimalInt64("-9223372036854775808", &v));
  EXPECT_EQ(v, INT64_MIN);
  EXPECT_TRUE(ParseDecimalInt64("9223372036854775807", &v));
  EXPECT_EQ(v, INT64_MAX);
  for (const char* bad : {"", "-", "01", "-0", "+1", " 1", "1 ", "9223372036854775808",
                          "-9223372036854775809", "1x", "99999999999999999999"}) {
    EXPECT_FALSE(ParseDecimalInt64(bad, &v)) << bad;
  }
}

TEST(ClockTest, CycleClockMeasuresDurations) {
  const uint64_t t0 = CycleNow();
  const uint64_t w0 = NowMicros();
  while (NowMicros() - w0 < 20000) {
  }
  const double us = CyclesToMicros(CycleNow() - t0);
  EXPECT_GT(us, 15000.0);  // a bound on correctness of the conversion, not a timing assertion
  EXPECT_LT(us, 2'000'000.0);
}

TEST(ThreadTest, StartThreadRunsOrSaysWhy) {
  std::atomic<int> ran{0};
  Result<std::thread> t = StartThread([&ran] { ran.store(1); });
  ASSERT_TRUE(t.ok());
  t->join();
  EXPECT_EQ(ran.load(), 1);
  internal::FailNextThreadStarts(1);
  Result<std::thread> refused = StartThread([&ran] { ran.store(2); });
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  Result<std::thread> again = StartThread([] {});
  ASSERT_TRUE(again.ok());
  again->join();
  EXPECT_EQ(ran.load(), 1);
}

TEST(MutexTest, GuardsACounter) {
  Mutex mu;
  int counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; i++) {
        MutexLock lock(&mu);
        counter++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, 40000);
}

}  // namespace
}  // namespace floe
