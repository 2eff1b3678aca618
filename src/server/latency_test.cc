// Per-command latency: the histogram's buckets, INFO latencystats and CONFIG RESETSTAT.

#include <gtest/gtest.h>

#include <string>

#include "server/server.h"

namespace floe::server {
namespace {

TEST(LatencyBucketTest, BucketsAreContiguousAndWithinAQuarter) {
  // Every value from 0 to past 2^20 lands in the bucket whose range holds it, buckets in order.
  uint64_t start = 0;
  for (size_t b = 0; b + 1 < kLatencyBuckets; b++) {
    const uint64_t end = LatencyBucketEndNs(b);
    ASSERT_GT(end, start) << b;
    EXPECT_EQ(LatencyBucket(start), b);
    EXPECT_EQ(LatencyBucket(end - 1), b);
    if (start >= 4) {
      EXPECT_LE((end - start) * 4, start) << "bucket " << b << " is too wide";
    }
    start = end;
  }
  EXPECT_EQ(start, uint64_t{7} << 33);                        // the last bucket starts there...
  EXPECT_EQ(LatencyBucket(UINT64_MAX), kLatencyBuckets - 1);  // ...and holds everything longer
  EXPECT_EQ(LatencyBucketEndNs(4 * 7 + 3), 512u);  // every fourth bucket ends at a power of two
}

TEST(LatencyPercentileTest, TakesTheBucketOfTheRank) {
  CommandLatency c{.name = "get", .count = 1000, .buckets = std::vector<uint64_t>(kLatencyBuckets)};
  c.buckets[LatencyBucket(1000)] = 990;  // 990 calls near 1 us
  c.buckets[LatencyBucket(50000)] = 9;   // 9 near 50 us
  c.buckets[LatencyBucket(900000)] = 1;  // one near 0.9 ms
  EXPECT_EQ(LatencyPercentileUsec(c, 50), LatencyBucketEndNs(LatencyBucket(1000)) / 1000.0);
  EXPECT_EQ(LatencyPercentileUsec(c, 99), LatencyBucketEndNs(LatencyBucket(1000)) / 1000.0);
  EXPECT_EQ(LatencyPercentileUsec(c, 99.9), LatencyBucketEndNs(LatencyBucket(50000)) / 1000.0);
  EXPECT_EQ(LatencyPercentileUsec(c, 100), LatencyBucketEndNs(LatencyBucket(900000)) / 1000.0);
  EXPECT_EQ(LatencyPercentileUsec(c, 0), LatencyBucketEndNs(LatencyBucket(1000)) / 1000.0);
}

std::string Info(Session& s, std::string_view section) {
  std::string reply = s.Run({"INFO", section});
  return reply.substr(reply.find("\r\n") + 2);
}

TEST(LatencyStatsTest, InfoPrintsRedisLinesAndResetStatClearsThem) {
  Engine engine{Config{}};
  Session s(&engine, 0);
  s.Run({"SET", "a", "1"});
  for (int i = 0; i < 10; i++) s.Run({"GET", "a"});
  s.Run({"CONFIG", "GET", "maxmemory"});
  std::string info = Info(s, "latencystats");
  EXPECT_TRUE(info.starts_with("# Latencystats\r\n")) << info;
  const size_t get = info.find("latency_percentiles_usec_get:p50=");
  ASSERT_NE(get, std::string::npos) << info;
  // Redis 7.0's shape: p50, p99, p99.9, each in microseconds with three decimals.
  const std::string line = info.substr(get, info.find("\r\n", get) - get);
  double p50 = 0, p99 = 0, p999 = 0;
  ASSERT_EQ(std::sscanf(line.c_str(), "latency_percentiles_usec_get:p50=%lf,p99=%lf,p99.9=%lf",
                        &p50, &p99, &p999),
            3)
      << line;
  EXPECT_NE(line.find(".", line.find("p50=")), std::string::npos);
  EXPECT_GT(p50, 0);
  EXPECT_LE(p50, p99);
  EXPECT_LE(p99, p999);
  EXPECT_NE(info.find("latency_percentiles_usec_config|get:"), std::string::npos) << info;
  EXPECT_NE(info.find("latency_percentiles_usec_set:"), std::string::npos) << info;
  // Not in the default sections (as in Redis), in "everything".
  EXPECT_EQ(Info(s, "default").find("Latencystats"), std::string::npos);
  EXPECT_NE(Info(s, "everything").find("# Latencystats"), std::string::npos);
  uint64_t gets = 0;
  for (const CommandLatency& c : CommandLatencies(engine)) {
    if (c.name == "get") gets = c.count;
  }
  EXPECT_EQ(gets, 10u);

  EXPECT_EQ(s.Run({"CONFIG", "RESETSTAT"}), "+OK\r\n");
  info = Info(s, "latencystats");
  EXPECT_EQ(info.find("usec_get:"), std::string::npos) << info;
  EXPECT_EQ(info.find("usec_set:"), std::string::npos) << info;
  EXPECT_EQ(Info(s, "commandstats").find("cmdstat_get:"), std::string::npos);
  const std::string stats = Info(s, "stats");
  EXPECT_NE(stats.find("keyspace_hits:0\r\n"), std::string::npos) << stats;
  s.Run({"GET", "a"});
  EXPECT_NE(Info(s, "latencystats").find("usec_get:"), std::string::npos);
}

}  // namespace
}  // namespace floe::server
