// Frames in a cluster (docs/frames_cluster.md), the parts that need no cluster: where a chunk
// lives (D1), the chunk store (D3, D4's put rules), frame ids (D2), frame headers and the frame
// RPC codecs (D12).

#include "server/internal/chunk_store.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <future>
#include <limits>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "cluster/cluster.h"
#include "frame/frame.h"
#include "server/internal/command.h"
#include "server/internal/frame_cluster.h"
#include "server/internal/frame_rpc.h"
#include "server/internal/frame_testing.h"
#include "server/internal/frame_value.h"
#include "server/server.h"
#include "wire/wire.h"

namespace floe::server::internal {
namespace {

cluster::SlotMap MapOf(int n) {
  std::string list;
  for (int i = 0; i < n; i++) {
    list += (i > 0 ? "," : "") + std::string("127.0.0.1:") + std::to_string(7000 + i);
  }
  Result<std::vector<cluster::Member>> members = cluster::ParseMembers(list);
  EXPECT_TRUE(members.ok());
  return cluster::SlotMap::Balanced(*members);
}

// Groups the tests try: the ends, powers of two and their neighbours, and a few others.
const std::vector<uint16_t> kGroups = {0, 1, 2, 5, 777, 4095, 4096, 8191, 12345, 16383};

// D1: from any group, the first G chunks of a frame split among the members in proportion to
// their slots, each member's count within log2 G + 1 of its share, for 1 to 64 members and every
// G up to 4,096.
TEST(ChunkSlotTest, SpreadsEveryPrefixInProportionToSlots) {
  for (int n = 1; n <= 64; n++) {
    const cluster::SlotMap map = MapOf(n);
    std::vector<double> share(static_cast<size_t>(n) + 1, 0);
    for (int s = 0; s < cluster::kSlots; s++) {
      share[map.Home(static_cast<uint16_t>(s))] += 1.0 / cluster::kSlots;
    }
    for (uint16_t group : kGroups) {
      std::vector<int> count(static_cast<size_t>(n) + 1, 0);
      for (uint64_t g = 1; g <= 4096; g++) {
        const net::NodeId home = map.Home(ChunkSlot(group, g - 1));
        ASSERT_GE(home, 1u);
        count[home]++;
        const double bound = std::log2(static_cast<double>(g)) + 1;
        for (int m = 1; m <= n; m++) {
          ASSERT_LE(std::fabs(count[static_cast<size_t>(m)] -
                              static_cast<double>(g) * share[static_cast<size_t>(m)]),
                    bound)
              << n << " members, group " << group << ", " << g << " chunks, member " << m;
        }
      }
    }
  }
  // The doc's example: a 20-chunk frame on 3 members is split 8/6/6 or 7/7/6, or 8/7/5 from
  // 342 of the 16,384 groups.
  const cluster::SlotMap three = MapOf(3);
  int eight_seven_five = 0;
  for (uint32_t group = 0; group < kChunkGroups; group++) {
    std::vector<int> c(4, 0);
    for (uint64_t k = 0; k < 20; k++) c[three.Home(ChunkSlot(static_cast<uint16_t>(group), k))]++;
    std::vector<int> sorted = {c[1], c[2], c[3]};
    std::sort(sorted.begin(), sorted.end());
    eight_seven_five += sorted == (std::vector<int>{5, 7, 8}) ? 1 : 0;
    ASSERT_TRUE(sorted == (std::vector<int>{6, 6, 8}) || sorted == (std::vector<int>{6, 7, 7}) ||
                sorted == (std::vector<int>{5, 7, 8}))
        << group << ": " << sorted[0] << "/" << sorted[1] << "/" << sorted[2];
  }
  EXPECT_EQ(eight_seven_five, 342);
}

TEST(ChunkSlotTest, IsABijectionOnSlots) {
  for (uint16_t group : kGroups) {
    std::set<uint16_t> seen;
    for (uint64_t k = 0; k < static_cast<uint64_t>(cluster::kSlots); k++) {
      const uint16_t s = ChunkSlot(group, k);
      ASSERT_LT(s, cluster::kSlots);
      seen.insert(s);
      // (g + k) mod 16,384, whatever the high bits.
      ASSERT_EQ(ChunkSlot(group, k + cluster::kSlots), s);
      ASSERT_EQ(ChunkSlot(group, k + (uint64_t{1} << 63)), s);
      ASSERT_EQ(ChunkSlot(0, group + k), s);
      // An involution: reversing twice gives (g + k) mod 16,384 back.
      ASSERT_EQ(ChunkSlot(0, s), (group + k) % cluster::kSlots);
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(cluster::kSlots)) << group;
  }
  EXPECT_EQ(ChunkSlot(0, 1), 8192);
  EXPECT_EQ(ChunkSlot(0, 2), 4096);
  EXPECT_EQ(ChunkSlot(0, 3), 12288);
  EXPECT_EQ(ChunkSlot(1, 2), 12288);
  // Random groups are groups.
  for (int i = 0; i < 1000; i++) ASSERT_LT(RandomChunkGroup(), kChunkGroups);
}

PutChunksRequest TwoChunks(const std::vector<std::string>& bytes) {
  PutChunksRequest r;
  r.map_version = 7;
  r.frame_id = (uint64_t{3} << 44) | 5;
  r.group = 3;
  r.header_slot = 1234;
  r.columns = 2;
  r.chunks.push_back({.index = 0, .columns = {bytes[0], bytes[1]}});
  r.chunks.push_back({.index = 9, .columns = {bytes[2], bytes[3]}});
  return r;
}

std::vector<std::string> SomeColumns() {
  return {Numbers({1, 2, 3}), Numbers({0.5, 1.5, 2.5}), Numbers({10, 11}), Numbers({-1, 7})};
}

TEST(FrameRpcTest, PutChunksRoundTripsAndRefusesEveryTruncation) {
  const std::vector<std::string> cols = SomeColumns();
  const PutChunksRequest r = TwoChunks(cols);
  const std::string enc = EncodePutChunks(r);
  Result<PutChunksRequest> d = DecodePutChunks(enc);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->map_version, 7u);
  EXPECT_EQ(d->frame_id, r.frame_id);
  EXPECT_EQ(d->header_slot, 1234);
  EXPECT_EQ(d->group, 3);
  ASSERT_EQ(d->chunks.size(), 2u);
  EXPECT_EQ(d->chunks[1].index, 9u);
  EXPECT_EQ(d->chunks[1].columns[1], cols[3]);
  for (size_t n = 0; n < enc.size(); n++) {
    EXPECT_FALSE(DecodePutChunks(enc.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(DecodePutChunks(enc + "x").ok());
}

TEST(FrameRpcTest, PutChunksRefusesCountsBeyondItsBytes) {
  const std::vector<std::string> cols = SomeColumns();
  PutChunksRequest r = TwoChunks(cols);
  // A header slot outside 0-16383.
  r.header_slot = 16384;
  EXPECT_EQ(DecodePutChunks(EncodePutChunks(r)).status().code(), StatusCode::kCorruption);
  r.header_slot = 1;
  r.group = 16384;  // a group outside 0-16383
  EXPECT_EQ(DecodePutChunks(EncodePutChunks(r)).status().code(), StatusCode::kCorruption);
  r.group = 16383;
  EXPECT_TRUE(DecodePutChunks(EncodePutChunks(r)).ok());
  // No column, a chunk count of 2^60, a column count of 2^31, a column under a chunk header.
  auto with = [&](uint64_t columns, uint64_t chunks) {
    std::string out;
    wire::Writer w(&out);
    w.PutVarint64(1);
    w.PutVarint64(2);
    w.PutFixed16(0);
    w.PutFixed16(3);
    w.PutVarint64(columns);
    w.PutVarint64(chunks);
    w.PutVarint64(0);
    w.PutLengthPrefixed(cols[0]);
    return out;
  };
  EXPECT_TRUE(DecodePutChunks(with(1, 1)).ok());
  EXPECT_FALSE(DecodePutChunks(with(0, 1)).ok());
  EXPECT_FALSE(DecodePutChunks(with(1, 0)).ok());
  EXPECT_FALSE(DecodePutChunks(with(1, uint64_t{1} << 60)).ok());
  EXPECT_FALSE(DecodePutChunks(with(uint64_t{1} << 31, 1)).ok());
  EXPECT_FALSE(DecodePutChunks(with(2, 1)).ok());
  r.chunks[0].columns[0] = std::string_view(cols[0]).substr(0, frame::kChunkHeaderBytes - 1);
  EXPECT_FALSE(DecodePutChunks(EncodePutChunks(r)).ok());
}

TEST(FrameRpcTest, TheOtherMessagesRoundTripAndRefuseTruncations) {
  const GetChunkRequest g{.map_version = 2, .frame_id = 99, .group = 9, .index = 1u << 20};
  const std::string ge = EncodeGetChunk(g);
  Result<GetChunkRequest> gd = DecodeGetChunk(ge);
  ASSERT_TRUE(gd.ok());
  EXPECT_EQ(gd->index, g.index);
  EXPECT_EQ(gd->group, 9);
  for (size_t n = 0; n < ge.size(); n++) EXPECT_FALSE(DecodeGetChunk(ge.substr(0, n)).ok());
  EXPECT_FALSE(DecodeGetChunk(ge + "x").ok());

  const std::vector<std::string> cols = SomeColumns();
  const std::string ce = EncodeChunkColumns({cols[0], cols[1]});
  Result<std::vector<std::string_view>> cd = DecodeChunkColumns(ce);
  ASSERT_TRUE(cd.ok());
  EXPECT_EQ((*cd)[1], cols[1]);
  for (size_t n = 0; n < ce.size(); n++) EXPECT_FALSE(DecodeChunkColumns(ce.substr(0, n)).ok());
  EXPECT_FALSE(DecodeChunkColumns(EncodeChunkColumns({})).ok());

  const FrameIdsRequest f{.map_version = 4, .ids = {1, uint64_t{1} << 63, 5}};
  const std::string fe = EncodeFrameIds(f);
  Result<FrameIdsRequest> fd = DecodeFrameIds(fe);
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(fd->ids, f.ids);
  for (size_t n = 0; n < fe.size(); n++) EXPECT_FALSE(DecodeFrameIds(fe.substr(0, n)).ok());
  std::string huge;
  wire::Writer w(&huge);
  w.PutVarint64(1);
  w.PutVarint64(uint64_t{1} << 40);  // ids the bytes cannot hold: refused before sizing
  w.PutVarint64(1);
  EXPECT_FALSE(DecodeFrameIds(huge).ok());

  const std::vector<FrameIdState> st = {FrameIdState::kGone, FrameIdState::kLive,
                                        FrameIdState::kImporting};
  Result<std::vector<FrameIdState>> sd = DecodeFrameIdStates(EncodeFrameIdStates(st), 3);
  ASSERT_TRUE(sd.ok());
  EXPECT_EQ(*sd, st);
  EXPECT_FALSE(DecodeFrameIdStates(EncodeFrameIdStates(st), 2).ok());
  EXPECT_FALSE(DecodeFrameIdStates("\x03", 1).ok());
}

// D12: every count a peer gives is checked against an absolute cap (kMaxFrameIds,
// kMaxFrameColumns, kMaxFrameChunks, kMaxHeaderDomainValues) as well as against its bytes, and
// nothing is sized from a count: a small message claiming a huge count is Corruption having
// allocated next to nothing, and a message holding one more than a cap is refused.
// D8: MAP_TASK and its answer round-trip, and refuse every truncation, an unknown operation,
// bins out of range, an unordered or infinite histogram range, a member given twice, a sketch
// of other parameters, and more infinities than values.
TEST(FrameRpcTest, MapTaskRoundTripsAndRefusesBadMessages) {
  MapTaskRequest q{.map_version = 3,
                   .op = MapOp::kSummaryHistogram,
                   .column = 2,
                   .bins = 7,
                   .lo = -1.5,
                   .hi = 9,
                   .budget_us = 750'000,
                   .members = {4, 1, 9},
                   .header = "header bytes"};
  const std::string enc = EncodeMapTask(q);
  Result<MapTaskRequest> r = DecodeMapTask(enc);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->op, q.op);
  EXPECT_EQ(r->column, 2u);
  EXPECT_EQ(r->bins, 7u);
  EXPECT_EQ(r->lo, -1.5);
  EXPECT_EQ(r->hi, 9);
  EXPECT_EQ(r->budget_us, 750'000u);
  EXPECT_EQ(r->members, q.members);
  EXPECT_EQ(r->header, "header bytes");
  for (size_t n = 0; n < enc.size() - q.header.size(); n++) {
    EXPECT_FALSE(DecodeMapTask(enc.substr(0, n)).ok()) << n;
  }
  auto refused = [](MapTaskRequest bad) {
    return DecodeMapTask(EncodeMapTask(bad)).status().code() == StatusCode::kCorruption;
  };
  MapTaskRequest bad = q;
  bad.op = static_cast<MapOp>(3);
  EXPECT_TRUE(refused(bad));
  bad = q;
  bad.bins = 0;
  EXPECT_TRUE(refused(bad));
  bad.bins = mr::kMaxBins + 1;
  EXPECT_TRUE(refused(bad));
  bad = q;
  bad.lo = 10;
  EXPECT_TRUE(refused(bad));
  bad.lo = -std::numeric_limits<double>::infinity();
  EXPECT_TRUE(refused(bad));
  bad = q;
  bad.members = {4, 1, 4};
  EXPECT_TRUE(refused(bad));
  bad.members = {};
  EXPECT_TRUE(refused(bad));
  bad = q;
  bad.op = MapOp::kSummaryMoments;
  bad.lo = 10;  // no range for the first pass
  EXPECT_TRUE(DecodeMapTask(EncodeMapTask(bad)).ok());
  // A quantile pass: its pass and increasing prefixes, at most 200 of them.
  MapTaskRequest radix = q;
  radix.op = MapOp::kQuantileRadix;
  radix.pass = 7;
  radix.prefixes = {0, 5, 1ull << 55};
  Result<MapTaskRequest> rr = DecodeMapTask(EncodeMapTask(radix));
  ASSERT_TRUE(rr.ok()) << rr.status().ToString();
  EXPECT_EQ(rr->pass, 7u);
  EXPECT_EQ(rr->prefixes, radix.prefixes);
  EXPECT_EQ(rr->Counts(), 3u * 256);
  bad = radix;
  bad.pass = 8;
  EXPECT_TRUE(refused(bad));
  bad = radix;
  bad.prefixes = {5, 5};
  EXPECT_TRUE(refused(bad));
  bad.prefixes = {};
  EXPECT_TRUE(refused(bad));
  bad.prefixes.clear();
  for (uint64_t p = 0; p <= mr::kMaxRadixPrefixes; p++) bad.prefixes.push_back(p);
  EXPECT_TRUE(refused(bad));
  bad.prefixes.pop_back();
  EXPECT_TRUE(DecodeMapTask(EncodeMapTask(bad)).ok());
  // D6's operations: the output's id and header slot, the columns or the conditions.
  MapTaskRequest select = q;
  select.op = MapOp::kSelect;
  select.out_id = 1ull << 50;
  select.out_header_slot = 16383;
  select.select = {2, 0};
  Result<MapTaskRequest> rs = DecodeMapTask(EncodeMapTask(select));
  ASSERT_TRUE(rs.ok()) << rs.status().ToString();
  EXPECT_EQ(rs->out_id, select.out_id);
  EXPECT_EQ(rs->out_header_slot, 16383);
  EXPECT_EQ(rs->select, select.select);
  EXPECT_EQ(rs->Counts(5), 2u);
  bad = select;
  bad.select = {};
  EXPECT_TRUE(refused(bad));
  bad.select = {kMaxFrameColumns};
  EXPECT_TRUE(refused(bad));
  bad = select;
  bad.out_header_slot = 16384;
  EXPECT_TRUE(refused(bad));
  MapTaskRequest filter = q;
  filter.op = MapOp::kFilter;
  filter.out_id = 5;
  filter.conditions = {{.col = 1, .op = mr::FilterOp::kLe, .number = -2.5, .text = ""},
                       {.col = 0, .op = mr::FilterOp::kEq, .number = 0, .text = "red"}};
  Result<MapTaskRequest> rf = DecodeMapTask(EncodeMapTask(filter));
  ASSERT_TRUE(rf.ok()) << rf.status().ToString();
  ASSERT_EQ(rf->conditions.size(), 2u);
  EXPECT_EQ(rf->conditions[0].op, mr::FilterOp::kLe);
  EXPECT_EQ(rf->conditions[0].number, -2.5);
  EXPECT_EQ(rf->conditions[1].text, "red");
  EXPECT_EQ(rf->Counts(5), 5u);
  bad = filter;
  bad.conditions.assign(mr::kMaxFilterConditions + 1, filter.conditions[0]);
  EXPECT_TRUE(refused(bad));
  bad.conditions = {};
  EXPECT_TRUE(refused(bad));
  bad = filter;
  bad.conditions[0].number = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(refused(bad));
  // Its answer: each output chunk's figures (its rows at most the source chunk's) and the
  // output columns' NA counts.
  MapTaskAnswer made{.mapped = {{.index = 4, .rows = 10}, {.index = 7, .rows = 3}},
                     .moments = {},
                     .histogram = {2, 0},
                     .made = {{.rows = 10, .compressed_bytes = 90, .raw_bytes = 160},
                              {.rows = 0, .compressed_bytes = 8, .raw_bytes = 0}}};
  Result<MapTaskAnswer> ra =
      DecodeMapTaskAnswer(MapOp::kSelect, 2, EncodeMapTaskAnswer(MapOp::kSelect, made));
  ASSERT_TRUE(ra.ok()) << ra.status().ToString();
  EXPECT_EQ(ra->mapped, made.mapped);
  EXPECT_EQ(ra->histogram, made.histogram);
  ASSERT_EQ(ra->made.size(), 2u);
  EXPECT_EQ(ra->made[0].compressed_bytes, 90u);
  EXPECT_EQ(ra->made[1].rows, 0u);
  made.made[1].rows = 4;  // longer than its source chunk
  EXPECT_EQ(DecodeMapTaskAnswer(MapOp::kFilter, 2, EncodeMapTaskAnswer(MapOp::kFilter, made))
                .status()
                .code(),
            StatusCode::kCorruption);

  // The answers.
  MapTaskAnswer a;
  a.mapped = {{.index = 0, .rows = 10}, {.index = 5, .rows = 3}};
  Result<sketch::HyperLogLog> hll = sketch::HyperLogLog::Create(mr::SummaryHllParams());
  ASSERT_TRUE(hll.ok());
  a.moments.hll = *std::move(hll);
  for (double v : {1.0, 2.5, std::numeric_limits<double>::infinity()}) {
    a.moments.m.Add(v);
    a.moments.hll.AddHash(sketch::HyperLogLog::HashInt64(
        std::isfinite(v) ? static_cast<int64_t>(v * 10) : std::numeric_limits<int64_t>::max()));
  }
  a.moments.lo = 1;
  a.moments.hi = 2.5;
  const std::string moments = EncodeMapTaskAnswer(MapOp::kSummaryMoments, a);
  Result<MapTaskAnswer> back = DecodeMapTaskAnswer(MapOp::kSummaryMoments, 7, moments);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->mapped, a.mapped);
  EXPECT_EQ(back->moments.m.count, 3u);
  EXPECT_EQ(back->moments.m.pos_inf, 1u);
  EXPECT_EQ(back->moments.m.mean, a.moments.m.mean);
  EXPECT_EQ(back->moments.hll.Cardinality(true), a.moments.hll.Cardinality(true));
  EXPECT_EQ(EncodeMapTaskAnswer(MapOp::kSummaryMoments, *back), moments);
  for (size_t n = 0; n < moments.size(); n++) {
    EXPECT_FALSE(DecodeMapTaskAnswer(MapOp::kSummaryMoments, 7, moments.substr(0, n)).ok()) << n;
  }
  MapTaskAnswer inf = a;
  inf.moments.m.neg_inf = 3;  // with one +inf, of 3 values
  EXPECT_EQ(DecodeMapTaskAnswer(MapOp::kSummaryMoments, 7,
                                EncodeMapTaskAnswer(MapOp::kSummaryMoments, inf))
                .status()
                .code(),
            StatusCode::kCorruption);
  sketch::HllParams other = mr::SummaryHllParams();
  other.log2m = 11;
  MapTaskAnswer small = a;
  small.moments.hll = *sketch::HyperLogLog::Create(other);
  EXPECT_EQ(DecodeMapTaskAnswer(MapOp::kSummaryMoments, 7,
                                EncodeMapTaskAnswer(MapOp::kSummaryMoments, small))
                .status()
                .code(),
            StatusCode::kCorruption);
  a.histogram = {1, 0, 300, 7, 0, 0, 2};
  const std::string hist = EncodeMapTaskAnswer(MapOp::kSummaryHistogram, a);
  back = DecodeMapTaskAnswer(MapOp::kSummaryHistogram, 7, hist);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->histogram, a.histogram);
  EXPECT_FALSE(DecodeMapTaskAnswer(MapOp::kSummaryHistogram, 6, hist).ok());  // a count left over
  EXPECT_FALSE(DecodeMapTaskAnswer(MapOp::kSummaryHistogram, 8, hist).ok());
}

TEST(FrameRpcTest, HugeCountsAreRefusedWithoutAllocating) {
  const std::string zeros(1 << 20, '\0');
  auto refused = [](auto decode, const std::string& msg, int64_t most) {
    return RefusedWithin(decode, msg, most);
  };
  auto message = [](const std::vector<uint64_t>& varints, std::string_view tail) {
    return VarintsThen(varints, tail);
  };

  // DROP_CHUNKS / FRAME_IDS_LIVE: 2^31 ids in 16 bytes; 2^20 ids present (a byte each); one id
  // more than the cap; the cap itself is taken.
  EXPECT_TRUE(refused(DecodeFrameIds, message({1, uint64_t{1} << 31}, zeros.substr(0, 16)), 4096));
  EXPECT_TRUE(refused(DecodeFrameIds, message({1, uint64_t{1} << 20}, zeros), 4096));
  EXPECT_TRUE(refused(DecodeFrameIds,
                      message({1, kMaxFrameIds + 1}, zeros.substr(0, kMaxFrameIds + 1)), 4096));
  Result<FrameIdsRequest> ids =
      DecodeFrameIds(message({1, kMaxFrameIds}, zeros.substr(0, kMaxFrameIds)));
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_EQ(ids->ids.size(), kMaxFrameIds);
  EXPECT_FALSE(DecodeFrameIdStates(std::string(kMaxFrameIds + 1, '\0'), kMaxFrameIds + 1).ok());

  // PUT_CHUNKS: one column more than the cap, each column a chunk header's bytes; 2^15 chunks
  // claimed in their smallest bytes, the second one bad (nothing sized from the count).
  const std::string column(frame::kChunkHeaderBytes, '\0');
  std::string wide = message({1, 2}, "");
  wide += std::string("\0\0\0\0", 4);  // group, header slot
  {
    wire::Writer w(&wide);
    w.PutVarint64(kMaxFrameColumns + 1);
    w.PutVarint64(1);
    w.PutVarint64(0);
    for (uint64_t c = 0; c <= kMaxFrameColumns; c++) w.PutLengthPrefixed(column);
  }
  EXPECT_TRUE(refused(DecodePutChunks, wide, 4096));
  std::string cut = message({1, 2}, std::string("\0\0\0\0", 4));
  {
    wire::Writer w(&cut);
    w.PutVarint64(1);
    w.PutVarint64(uint64_t{1} << 15);
    w.PutVarint64(0);
    w.PutVarint64(1000);  // a column longer than the message
  }
  cut += zeros.substr(0, (uint64_t{1} << 15) * 18);
  EXPECT_TRUE(refused(DecodePutChunks, cut, 4096));

  // MAP_TASK: 2^31 members claimed in 16 bytes; one member more than the cap, all present.
  // Its answer: 2^31 chunks mapped claimed in 16 bytes; 2^20 claimed with 2^20 bytes present;
  // a histogram of 10,000 bins claimed in 16 bytes.
  const std::string task_head = message({1, 1, 0, 20}, zeros.substr(0, 16)) + message({1000}, "");
  EXPECT_TRUE(
      refused(DecodeMapTask, task_head + message({uint64_t{1} << 31}, zeros.substr(0, 16)), 4096));
  {
    std::string over = task_head + message({kMaxMapMembers + 1}, "");
    for (uint64_t m = 0; m <= kMaxMapMembers; m++) over += message({m + 1}, "");
    EXPECT_TRUE(refused(DecodeMapTask, over, 4096));
  }
  auto moments_answer = [](std::string_view msg) {
    return DecodeMapTaskAnswer(MapOp::kSummaryMoments, 1, msg);
  };
  auto histogram_answer = [](std::string_view msg) {
    return DecodeMapTaskAnswer(MapOp::kSummaryHistogram, mr::kMaxBins, msg);
  };
  EXPECT_TRUE(refused(moments_answer, message({uint64_t{1} << 31}, zeros.substr(0, 16)), 4096));
  EXPECT_TRUE(refused(moments_answer, message({uint64_t{1} << 20}, zeros), 4096));
  EXPECT_TRUE(refused(histogram_answer, message({0}, zeros.substr(0, 16)), 4096));
  // D6's operations: 2^31 columns or conditions claimed in 16 bytes; a condition's text of 2^31
  // bytes claimed; an answer's 2^16 output chunks claimed with 2^16 mapped in their bytes and
  // no figure after them.
  for (uint64_t op : {4, 5}) {
    const std::string head =
        message({1, op, 0, 20}, zeros.substr(0, 16)) + message({1000, 9}, std::string(2, '\0'));
    EXPECT_TRUE(
        refused(DecodeMapTask, head + message({uint64_t{1} << 31}, zeros.substr(0, 16)), 4096))
        << op;
  }
  EXPECT_TRUE(refused(DecodeMapTask,
                      message({1, 5, 0, 20}, zeros.substr(0, 16)) +
                          message({1000, 9}, std::string(2, '\0')) + message({1, 0}, "\x02") +
                          zeros.substr(0, 8) + message({uint64_t{1} << 31}, zeros.substr(0, 16)),
                      4096));
  auto select_answer = [](std::string_view msg) {
    return DecodeMapTaskAnswer(MapOp::kSelect, 3, msg);
  };
  {
    std::string mapped = message({uint64_t{1} << 16}, "");
    for (uint64_t k = 0; k < (uint64_t{1} << 16); k++) mapped += message({k, 1}, "");
    // Enough bytes for the mapped chunks, not for their figures: refused before growing more.
    EXPECT_TRUE(refused(select_answer, mapped + zeros.substr(0, 16), 4 << 20));
  }

  // GET_CHUNK's answer: one column more than the cap.
  std::string answer;
  {
    wire::Writer w(&answer);
    w.PutVarint64(kMaxFrameColumns + 1);
    for (uint64_t c = 0; c <= kMaxFrameColumns; c++) w.PutLengthPrefixed(column);
  }
  EXPECT_TRUE(refused(DecodeChunkColumns, answer, 4096));

  // A header: the cap's columns claimed in 1 MiB, the first of an unknown type; one column more
  // than the cap, all good; a domain of 2^20 values claimed, the second cut short; 2^18 chunks
  // claimed, the first too long.
  const std::string head = message({42}, std::string("\x07\0", 2));
  auto col = [](const std::string& name, uint8_t type, uint64_t domain) {
    std::string out;
    wire::Writer w(&out);
    w.PutLengthPrefixed(name);
    w.PutU8(type);
    w.PutVarint64(domain);
    return out;
  };
  const auto real = static_cast<uint8_t>(frame::ColumnType::kReal);
  const auto cat = static_cast<uint8_t>(frame::ColumnType::kCategorical);
  EXPECT_TRUE(refused(DecodeFrameHeader,
                      head + message({kMaxFrameColumns}, col("a", 99, 0)) + zeros, 4096));
  std::string wide_header = head + message({kMaxFrameColumns + 1}, "");
  for (uint64_t c = 0; c <= kMaxFrameColumns; c++) {
    wide_header += col("c" + std::to_string(c), real, 0) + std::string(1, '\0');
  }
  wide_header += std::string(1, '\0');  // no chunk
  EXPECT_TRUE(refused(DecodeFrameHeader, wide_header, 4096));
  EXPECT_TRUE(refused(DecodeFrameHeader,
                      head + message({1}, col("a", cat, uint64_t{1} << 20)) +
                          message({1, 'x', 0x7fffffff}, "") + zeros,
                      4096));
  EXPECT_TRUE(refused(DecodeFrameHeader,
                      head + message({1}, col("a", real, 0) + std::string(1, '\0')) +
                          message({uint64_t{1} << 18, uint64_t{frame::kMaxChunkRows} + 1}, "") +
                          zeros,
                      4096));
}

const auto kOwnsAll = [](uint16_t) { return true; };

// D3/D4: an entry is kept once (the first put wins), charged to the engine's used memory and
// counted outside the keyspace; dropping it gives the charge back.
TEST(ChunkStoreTest, KeepsTheFirstPutAndChargesUsedMemory) {
  Engine engine(Config(), 1);
  const int64_t before = engine.UsedMemoryNow();
  const std::vector<std::string> cols = SomeColumns();
  {
    ChunkStore store(&engine);
    const PutChunksRequest r = TwoChunks(cols);
    ASSERT_TRUE(store.Put(r, kOwnsAll).ok());
    const int64_t charge = ChunkStore::EntryCharge({cols[0], cols[1]}) +
                           ChunkStore::EntryCharge({cols[2], cols[3]}) + ChunkStore::kSetCharge;
    EXPECT_EQ(store.chunks(), 2);
    EXPECT_EQ(store.charge(), charge);
    EXPECT_EQ(engine.ChunkStoreBytes(), charge);
    EXPECT_EQ(engine.UsedMemoryNow(), before + charge);
    EXPECT_EQ(engine.frame_totals()->chunks.load(), 2);
    EXPECT_EQ(engine.store().Size(), 0u);

    // The same id and index again, with other bytes: the first stays.
    PutChunksRequest again = r;
    again.chunks.resize(1);
    again.chunks[0].columns = {cols[2], cols[3]};
    ASSERT_TRUE(store.Put(again, kOwnsAll).ok());
    Result<std::shared_ptr<const ChunkStore::Chunk>> c = store.Get(r.frame_id, 0);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ((*c)->columns[0], cols[0]);
    EXPECT_EQ((*c)->rows, 3u);
    EXPECT_EQ(store.charge(), charge);
    EXPECT_EQ(store.Get(r.frame_id, 1).status().code(), StatusCode::kNotFound);
    EXPECT_EQ(store.Get(r.frame_id + 1, 0).status().code(), StatusCode::kNotFound);
    ASSERT_EQ(store.Sets().size(), 1u);
    EXPECT_EQ(store.Sets()[0].second, 1234);

    EXPECT_EQ(store.Drop({r.frame_id, 12345}), 1u);
    EXPECT_EQ(store.chunks(), 0);
    EXPECT_EQ(engine.ChunkStoreBytes(), 0);
    EXPECT_EQ(engine.UsedMemoryNow(), before);
    // A reader's chunk outlives the drop.
    EXPECT_EQ((*c)->columns[1], cols[1]);
    ASSERT_TRUE(store.Put(r, kOwnsAll).ok());
  }
  // The store's end gives its charge back.
  EXPECT_EQ(engine.ChunkStoreBytes(), 0);
  EXPECT_EQ(engine.frame_totals()->chunks.load(), 0);
}

// D4: a chunk homed elsewhere, bytes ChunkView refuses, columns of different rows: the whole
// put is refused and nothing is kept.
TEST(ChunkStoreTest, RefusesAWrongHomeAndBadBytesKeepingNothing) {
  Engine engine(Config(), 1);
  ChunkStore store(&engine);
  const std::vector<std::string> cols = SomeColumns();
  const PutChunksRequest r = TwoChunks(cols);
  Status s = store.Put(r, [&r](uint16_t slot) { return slot != ChunkSlot(r.group, 9); });
  EXPECT_EQ(s.code(), StatusCode::kWrongHome) << s.ToString();
  EXPECT_NE(s.message().find("chunk 9"), std::string::npos) << s.ToString();

  std::string bad = cols[2];
  bad[0] = static_cast<char>(0xff);  // no such layout
  PutChunksRequest b = r;
  b.chunks[1].columns[0] = bad;
  s = store.Put(b, kOwnsAll);
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();

  PutChunksRequest ragged = r;
  ragged.chunks[1].columns[1] = cols[0];  // 3 rows beside 2
  s = store.Put(ragged, kOwnsAll);
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();

  EXPECT_EQ(store.chunks(), 0);
  EXPECT_TRUE(store.Sets().empty());
  EXPECT_EQ(engine.ChunkStoreBytes(), 0);
}

// D3: a put that does not fit under maxmemory is refused with the OOM text, keeping nothing and
// reserving nothing.
TEST(ChunkStoreTest, APutBeyondMaxmemoryIsRefusedWithTheOomText) {
  Engine engine(Config(), 1);
  ChunkStore store(&engine);
  std::vector<double> many(200000);
  for (size_t i = 0; i < many.size(); i++) many[i] = static_cast<double>(i) * 0.37;
  const std::string big = Numbers(many);
  PutChunksRequest r;
  r.frame_id = 1;
  r.columns = 1;
  r.chunks.push_back({.index = 0, .columns = {big}});
  SetMaxMemory(engine, engine.UsedMemoryNow() + static_cast<int64_t>(big.size()) / 2);
  const Status s = store.Put(r, kOwnsAll);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("OOM"), std::string::npos) << s.ToString();
  EXPECT_EQ(store.chunks(), 0);
  EXPECT_EQ(engine.reserved_memory(), 0);
  SetMaxMemory(engine, 0);
  EXPECT_TRUE(store.Put(r, kOwnsAll).ok());
  EXPECT_EQ(engine.reserved_memory(), 0);
}

// D3: what the chunk store charges is what its entries hold (measured at the allocator: at
// least that, and not half as much again), and it is the engine's used memory; a put that does
// not fit is refused before it copies a byte.
TEST(ChunkStoreTest, ChargesWhatItsEntriesHoldAndReservesBeforeCopying) {
  if (!ThreadAllocations::Available()) GTEST_SKIP() << "needs tcmalloc's hooks";
  Engine engine(Config(), 1);
  const int64_t before = engine.UsedMemoryNow();
  ChunkStore store(&engine);
  const std::vector<std::string> cols = SomeColumns();
  std::vector<PutChunksRequest> puts;
  for (uint64_t id = 1; id <= 50; id++) {
    PutChunksRequest r;
    r.frame_id = id;
    r.columns = 1;  // the smallest entries: a chunk of two rows
    for (uint64_t k = 0; k < 40; k++) r.chunks.push_back({.index = k, .columns = {cols[2]}});
    puts.push_back(std::move(r));
  }
  int64_t held = 0;
  {
    ThreadAllocations count;
    for (const PutChunksRequest& r : puts) ASSERT_TRUE(store.Put(r, kOwnsAll).ok());
    held = count.held();
  }
  EXPECT_EQ(store.chunks(), 2000);
  EXPECT_GE(store.charge(), held);
  EXPECT_LE(store.charge(), held + held / 2);
  EXPECT_EQ(engine.UsedMemoryNow() - before, store.charge());

  // 1 MiB that does not fit: refused having copied none of it.
  std::vector<double> many(200000);
  for (size_t i = 0; i < many.size(); i++) many[i] = static_cast<double>(i) * 0.37;
  const std::string big = Numbers(many);
  ASSERT_GT(big.size(), 1u << 20);
  PutChunksRequest r;
  r.frame_id = 99;
  r.columns = 1;
  r.chunks.push_back({.index = 0, .columns = {big}});
  SetMaxMemory(engine, engine.UsedMemoryNow() + static_cast<int64_t>(big.size()) / 2);
  int64_t allocated = 0;
  {
    ThreadAllocations count;
    EXPECT_EQ(store.Put(r, kOwnsAll).code(), StatusCode::kResourceExhausted);
    allocated = count.allocated();
  }
  EXPECT_LT(allocated, 64 << 10);
  EXPECT_EQ(engine.reserved_memory(), 0);
}

// D10: the dropper sends outside its lock: a drop asked while another caller's send is under
// way returns at once, its id queued and sent by that caller in one batch with every id queued
// meanwhile; after Stop nothing is sent.
TEST(ChunkDropperTest, SendsOutsideItsLockInBatches) {
  Mutex mu;
  std::vector<std::vector<uint64_t>> batches;
  std::promise<void> sending, release;
  std::shared_future<void> go = release.get_future().share();
  ChunkDropper dropper([&](const std::vector<uint64_t>& ids) {
    {
      MutexLock lock(&mu);
      batches.push_back(ids);
    }
    if (ids == std::vector<uint64_t>{1}) {
      sending.set_value();
      go.wait();
    }
  });
  std::thread first([&] { dropper.Drop(1); });
  sending.get_future().wait();
  auto others = std::async(std::launch::async, [&] {
    dropper.Drop(2);
    dropper.Drop(3);
  });
  // A drop that waited for the send under way would still be waiting (the send waits for us).
  const bool returned = others.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  EXPECT_TRUE(returned) << "a drop waited for another caller's send";
  release.set_value();
  first.join();
  others.wait();
  {
    MutexLock lock(&mu);
    EXPECT_EQ(batches, (std::vector<std::vector<uint64_t>>{{1}, {2, 3}}));
  }
  EXPECT_EQ(dropper.TEST_drops(), 3u);
  dropper.Stop();
  dropper.Drop(4);
  MutexLock lock(&mu);
  EXPECT_EQ(batches.size(), 2u);
}
// D2: a frame id's low 44 bits count up from the member's start in 256 µs ticks of the wall
// clock since 1970 (they wrap in 2112), so a later life starts above an earlier one's ids.
TEST(FrameIdTest, CountsUpFromTheStartInTicksThatDoNotWrap) {
  constexpr uint64_t kLow = (uint64_t{1} << 44) - 1;
  const uint64_t before = WallMicros() / Engine::FrameTotals::kFrameIdTickUs;
  Engine first(Config(), 1);
  const uint64_t a = first.NewFrameId();
  EXPECT_EQ(first.NewFrameId(), a + 1);
  EXPECT_EQ(a >> 44, 0u);  // member 0 on one node
  EXPECT_GE(a & kLow, before);
  EXPECT_LE(a & kLow, WallMicros() / Engine::FrameTotals::kFrameIdTickUs);
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Engine later(Config(), 1);
  EXPECT_GT(later.NewFrameId(), first.NewFrameId());
}

// D2, D12: a frame's header round-trips through its encoding, with every figure FRAME.INFO
// needs; every truncation and every inconsistent header is refused.
TEST(FrameHeaderTest, RoundTripsAndRefusesBadHeaders) {
  const frame::Frame f = ChunkedFrame(5);
  const FrameHeader h = HeaderOf(f, 42, 7);
  ASSERT_EQ(h.columns.size(), 2u);
  ASSERT_EQ(h.chunks.size(), 5u);
  EXPECT_EQ(h.rows(), f.rows());
  uint64_t compressed = 0, raw = 0;
  for (const FrameHeader::Chunk& c : h.chunks) {
    compressed += c.compressed_bytes;
    raw += c.raw_bytes;
  }
  EXPECT_EQ(compressed, f.compressed_bytes());
  EXPECT_EQ(raw, f.raw_bytes());
  const std::string enc = EncodeFrameHeader(h);
  Result<FrameHeader> d = DecodeFrameHeader(enc);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->id, 42u);
  EXPECT_EQ(d->group, 7);
  EXPECT_EQ(d->columns[1].name, "b");
  EXPECT_EQ(d->columns[1].type, static_cast<uint8_t>(frame::ColumnType::kInteger));
  EXPECT_EQ(d->chunks[4].rows, 14u);
  EXPECT_EQ(EncodeFrameHeader(*d), enc);
  for (size_t n = 0; n < enc.size(); n++) EXPECT_FALSE(DecodeFrameHeader(enc.substr(0, n)).ok());
  EXPECT_FALSE(DecodeFrameHeader(enc + "x").ok());

  auto refused = [](FrameHeader bad) {
    return DecodeFrameHeader(EncodeFrameHeader(bad)).status().code() == StatusCode::kCorruption;
  };
  FrameHeader bad = h;
  bad.columns[1].name = "a";  // repeated
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns[0].name = "";
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns[0].domain = {"x"};  // a domain on a real column
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns[0].type = 5;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns[0].na_count = h.rows() + 1;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.group = 16384;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.chunks[0].rows = frame::kMaxChunkRows + 1;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns.clear();
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns[0].type = static_cast<uint8_t>(frame::ColumnType::kCategorical);
  bad.columns[0].domain = {"x", "y"};
  EXPECT_TRUE(DecodeFrameHeader(EncodeFrameHeader(bad)).ok());
  bad.columns[0].domain = {"", "y"};  // "" is a level when the NA tokens leave it out
  EXPECT_TRUE(DecodeFrameHeader(EncodeFrameHeader(bad)).ok());
  bad.columns[0].domain = {"x", "y", "x"};  // repeated
  EXPECT_TRUE(refused(bad));
  // Byte sums that would wrap, or pass kMaxFrameBytes.
  bad = h;
  bad.chunks[0].compressed_bytes = uint64_t{1} << 63;
  bad.chunks[1].compressed_bytes = uint64_t{1} << 63;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.chunks[2].raw_bytes = ~uint64_t{0};
  bad.chunks[3].raw_bytes = 2;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.chunks[4].raw_bytes = kMaxFrameBytes;
  EXPECT_TRUE(refused(bad));

  const std::string p =
      EncodePutHeader({.map_version = 3, .key = "frame", .replace = true, .header = enc});
  Result<PutHeaderRequest> q = DecodePutHeader(p);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->key, "frame");
  EXPECT_TRUE(q->replace);
  EXPECT_EQ(q->header, enc);
  const size_t fixed = p.size() - enc.size();  // the part before the header's bytes
  for (size_t n = 0; n < fixed; n++) EXPECT_FALSE(DecodePutHeader(p.substr(0, n)).ok());
  EXPECT_FALSE(DecodePutHeader(EncodePutHeader({.key = ""})).ok());
  std::string two = p;
  two[fixed - 1] = 2;  // replace is 0 or 1
  EXPECT_FALSE(DecodePutHeader(two).ok());
}

// D2, D3: a header's charge is what it holds in memory (measured at the allocator as decoded and
// shared: at least that, and not half as much again), domains at their in-memory size, and the
// store's used memory grows by at least that when it is stored.
TEST(FrameHeaderTest, ChargesWhatItHolds) {
  if (!ThreadAllocations::Available()) GTEST_SKIP() << "needs tcmalloc's hooks";
  FrameHeader h = HeaderOf(ChunkedFrame(2000), 42, 7);
  h.columns.push_back({.name = "c", .type = static_cast<uint8_t>(frame::ColumnType::kCategorical)});
  for (int i = 0; i < 20000; i++) h.columns.back().domain.push_back("v" + std::to_string(i));
  for (int i = 0; i < 200; i++) {
    h.columns.back().domain.push_back(std::string(40, 'x') + std::to_string(i));
  }
  const std::string enc = EncodeFrameHeader(h);
  int64_t held = 0;
  size_t charge = 0;
  std::shared_ptr<const FrameHeader> shared;
  {
    ThreadAllocations count;
    Result<FrameHeader> d = DecodeFrameHeader(enc);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    charge = HeaderCharge(*d);
    shared = std::make_shared<const FrameHeader>(std::move(*d));
    held = count.held();
  }
  EXPECT_GE(static_cast<int64_t>(charge), held);
  EXPECT_LE(static_cast<int64_t>(charge), held + held / 2);
  EXPECT_GT(charge, 20000 * sizeof(std::string)) << "every domain value at its in-memory size";

  Engine engine(Config(), 1);
  const size_t used = engine.store().MemoryUsed();
  Result<FrameHeader> d = DecodeFrameHeader(enc);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(StoreFrameHeader(engine, "f", std::move(*d), false, nullptr).ok());
  EXPECT_GE(engine.store().MemoryUsed() - used, static_cast<size_t>(held));
}

// D7, D12: a chunk fetched from a peer becomes a one-chunk frame of the header's columns only
// when its bytes hold one column each of the header's rows, in a layout ChunkView takes.
TEST(FrameHeaderTest, AFetchedChunkIsCheckedAgainstItsHeader) {
  const frame::Frame f = ChunkedFrame(3);
  const FrameHeader h = HeaderOf(f, 42, 7);
  auto answer = [&](uint64_t k) {
    return EncodeChunkColumns({*f.vec(0).chunk_bytes(k), *f.vec(1).chunk_bytes(k)});
  };
  Result<frame::Frame> one = ChunkFrameOf(h, 2, answer(2));
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->rows(), 12u);
  EXPECT_EQ(one->name(1), "b");
  EXPECT_EQ(one->vec(1).type(), frame::ColumnType::kInteger);
  EXPECT_EQ(one->vec(0).At(3), f.vec(0).At(10 + 11 + 3));
  // Chunk 1's bytes as chunk 2: its rows are not the header's.
  EXPECT_EQ(ChunkFrameOf(h, 2, answer(1)).status().code(), StatusCode::kCorruption);
  // One column short.
  EXPECT_EQ(ChunkFrameOf(h, 0, EncodeChunkColumns({*f.vec(0).chunk_bytes(0)})).status().code(),
            StatusCode::kCorruption);
  // Bytes of no layout.
  std::string bad = *f.vec(1).chunk_bytes(0);
  bad[0] = static_cast<char>(0xfe);
  EXPECT_EQ(ChunkFrameOf(h, 0, EncodeChunkColumns({*f.vec(0).chunk_bytes(0), bad})).status().code(),
            StatusCode::kCorruption);
  EXPECT_EQ(ChunkFrameOf(h, 0, "\x05").status().code(), StatusCode::kCorruption);
}

}  // namespace
}  // namespace floe::server::internal
