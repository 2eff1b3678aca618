// FRAME.GROUPBY of a cluster frame (docs/frames_cluster.md, D6, D8's kGroupBy): the members'
// partial tables merged up the tree equal one node's group-by of the same CSV, the group limit
// holds at every member and every merge, and a silent member fails the task.

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "mr/mr.h"
#include "server/internal/chunk_store.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/command.h"
#include "server/internal/frame_rpc.h"
#include "server/internal/frame_testing.h"
#include "server/server.h"
#include "wire/wire.h"

namespace floe::server::internal {
namespace {

// ---- The codec (D12) and the table's merge ----

// D8, D12: kGroupBy's request carries its keys and aggregates; bad ones are refused.
TEST(FrameRpcTest, GroupByTaskRoundTripsAndRefusesBadMessages) {
  MapTaskRequest q{.map_version = 3,
                   .op = MapOp::kGroupBy,
                   .budget_us = 750'000,
                   .group_keys = {2, 0},
                   .aggregates = {{.fn = mr::AggFn::kSum, .col = 1},
                                  {.fn = mr::AggFn::kDistinct, .col = 3},
                                  {.fn = mr::AggFn::kCount, .col = 0}},
                   .members = {4, 1, 9},
                   .header = "header bytes"};
  const std::string enc = EncodeMapTask(q);
  Result<MapTaskRequest> r = DecodeMapTask(enc);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->op, MapOp::kGroupBy);
  EXPECT_EQ(r->group_keys, q.group_keys);
  ASSERT_EQ(r->aggregates.size(), 3u);
  for (size_t i = 0; i < 3; i++) {
    EXPECT_EQ(r->aggregates[i].fn, q.aggregates[i].fn);
    EXPECT_EQ(r->aggregates[i].col, q.aggregates[i].col);
  }
  EXPECT_EQ(r->members, q.members);
  EXPECT_EQ(r->header, "header bytes");
  for (size_t n = 0; n < enc.size() - q.header.size(); n++) {
    EXPECT_FALSE(DecodeMapTask(enc.substr(0, n)).ok()) << n;
  }
  auto refused = [](const MapTaskRequest& bad) {
    return DecodeMapTask(EncodeMapTask(bad)).status().code() == StatusCode::kCorruption;
  };
  MapTaskRequest bad = q;
  bad.group_keys = {};
  EXPECT_TRUE(refused(bad));
  bad.group_keys = {2, 2};
  EXPECT_TRUE(refused(bad));
  bad.group_keys = {static_cast<uint32_t>(kMaxFrameColumns)};
  EXPECT_TRUE(refused(bad));
  bad.group_keys.clear();
  for (uint32_t k = 0; k <= kMaxMapGroupKeys; k++) bad.group_keys.push_back(k);
  EXPECT_TRUE(refused(bad));
  bad.group_keys.pop_back();
  EXPECT_TRUE(DecodeMapTask(EncodeMapTask(bad)).ok());
  bad = q;
  bad.aggregates = {};
  EXPECT_TRUE(refused(bad));
  bad.aggregates.assign(kMaxMapAggregates + 1, {.fn = mr::AggFn::kCount, .col = 0});
  EXPECT_TRUE(refused(bad));
  bad.aggregates.pop_back();
  EXPECT_TRUE(DecodeMapTask(EncodeMapTask(bad)).ok());
  bad.aggregates = {{.fn = static_cast<mr::AggFn>(7), .col = 0}};
  EXPECT_TRUE(refused(bad));
}

// A column's values, NA as NaN.
std::vector<double> ColumnValues(const frame::Frame& f, size_t col) {
  std::vector<double> out;
  for (uint64_t r = 0; r < f.rows(); r++) out.push_back(f.vec(col).At(r));
  return out;
}

// D8: members' partial tables travel in the wire encoding and merge, in either order, to one
// node's group-by of the whole frame (exact but for a floating sum's last bits).
TEST(FrameRpcTest, GroupTablesRoundTripAndMergeToOneNodesResult) {
  const frame::Frame f = AnalyticsFrame(9);
  const std::vector<size_t> keys = {1};
  const std::vector<mr::Aggregate> aggs = {{.fn = mr::AggFn::kCount, .col = 0},
                                           {.fn = mr::AggFn::kSum, .col = 0},
                                           {.fn = mr::AggFn::kSd, .col = 2},
                                           {.fn = mr::AggFn::kMax, .col = 2},
                                           {.fn = mr::AggFn::kDistinct, .col = 0}};
  // The frame's chunks in two parts, as two members hold them.
  auto part = [&f](size_t from, size_t to) {
    std::vector<std::string> names;
    std::vector<frame::Vec> vecs;
    for (size_t c = 0; c < f.columns(); c++) {
      std::vector<std::shared_ptr<const std::string>> chunks;
      for (size_t k = from; k < to; k++) chunks.push_back(f.vec(c).chunk_bytes(k));
      Result<frame::Vec> v = frame::Vec::Make(f.vec(c).type(), {}, std::move(chunks));
      EXPECT_TRUE(v.ok());
      names.push_back(f.name(c));
      vecs.push_back(std::move(*v));
    }
    Result<frame::Frame> made = frame::Frame::Make(std::move(names), std::move(vecs));
    EXPECT_TRUE(made.ok());
    return std::move(*made);
  };
  const GroupShape shape{.keys = 1, .aggregates = aggs};
  auto table_of = [&](const frame::Frame& p) {
    Result<mr::GroupTable> t = mr::GroupByTable(p, keys, aggs);
    if (!t.ok()) {
      ADD_FAILURE() << t.status().ToString();
      return mr::GroupTable();
    }
    MapTaskAnswer a{.mapped = {{.index = 3, .rows = 40}}};
    a.groups = std::move(*t);
    const std::string enc = EncodeMapTaskAnswer(MapOp::kGroupBy, a);
    for (size_t n = 0; n < enc.size(); n += 97) {
      EXPECT_FALSE(DecodeMapTaskAnswer(MapOp::kGroupBy, 1, enc.substr(0, n), shape).ok()) << n;
    }
    Result<MapTaskAnswer> back = DecodeMapTaskAnswer(MapOp::kGroupBy, 1, enc, shape);
    EXPECT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->mapped, a.mapped);
    EXPECT_EQ(EncodeMapTaskAnswer(MapOp::kGroupBy, *back), enc);
    return std::move(back->groups);
  };
  Result<frame::Frame> one = mr::GroupBy(f, keys, aggs);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  std::vector<mr::GroupColumn> key_columns = {{.name = "i", .type = frame::ColumnType::kInteger}};
  std::vector<mr::GroupColumn> agg_columns;
  for (const mr::Aggregate& a : aggs) {
    agg_columns.push_back({.name = f.name(a.col), .type = f.vec(a.col).type()});
  }
  for (bool swapped : {false, true}) {
    mr::GroupTable a = table_of(part(0, 4)), b = table_of(part(4, 9));
    if (swapped) std::swap(a, b);
    mr::GroupTable merged;
    ASSERT_TRUE(mr::MergeGroupTables(merged, std::move(a), 1, aggs).ok());
    ASSERT_TRUE(mr::MergeGroupTables(merged, std::move(b), 1, aggs).ok());
    Result<frame::Frame> g = mr::FinishGroupBy(merged, key_columns, agg_columns, aggs);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    ASSERT_EQ(g->columns(), one->columns());
    ASSERT_EQ(g->rows(), one->rows());
    for (size_t c = 0; c < g->columns(); c++) {
      EXPECT_EQ(g->name(c), one->name(c));
      const std::vector<double> x = ColumnValues(*g, c), y = ColumnValues(*one, c);
      for (size_t r = 0; r < x.size(); r++) {
        if (std::isnan(y[r])) {
          EXPECT_TRUE(std::isnan(x[r])) << c << " " << r;
        } else if (x[r] != y[r]) {
          EXPECT_NEAR(x[r], y[r], 1e-12 * std::abs(y[r])) << c << " " << r;
        }
      }
    }
  }
  // Past the limit at a merge (each table within it): refused with GroupBy's text.
  mr::GroupTable a = table_of(part(0, 1)), b = table_of(part(1, 2));
  const uint64_t limit = std::max(a.groups(), b.groups());
  mr::TEST_MaxGroups().store(limit);
  const Status s = mr::MergeGroupTables(a, std::move(b), 1, aggs);
  mr::TEST_MaxGroups().store(0);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(s.message().starts_with("more than " + std::to_string(limit) + " groups"))
      << s.ToString();
  // A table of another shape is refused, not read past.
  mr::GroupTable odd = table_of(part(0, 1));
  odd.sums.pop_back();
  mr::GroupTable into;
  EXPECT_EQ(mr::MergeGroupTables(into, std::move(odd), 1, aggs).code(), StatusCode::kCorruption);
}

// D12: a kGroupBy answer's counts are checked against the request's group limit and the bytes
// left before anything is sized; a group's moments and sketches are checked as a summary's.
TEST(FrameRpcTest, HugeGroupCountsAreRefusedWithoutAllocating) {
  const std::vector<mr::Aggregate> aggs = {{.fn = mr::AggFn::kCount, .col = 0},
                                           {.fn = mr::AggFn::kDistinct, .col = 0}};
  const GroupShape shape{.keys = 2, .aggregates = aggs};
  auto answer = [&shape](std::string_view msg) {
    return DecodeMapTaskAnswer(MapOp::kGroupBy, 1, msg, shape);
  };
  auto message = [](const std::vector<uint64_t>& varints, std::string_view tail) {
    return VarintsThen(varints, tail);
  };
  const std::string zeros(1 << 20, '\0');
  auto refused = [](auto decode, const std::string& msg, int64_t most) {
    return RefusedWithin(decode, msg, most);
  };
  // No chunk mapped, then 2^31 groups claimed in 16 bytes; one group past the limit with bytes
  // for it; 2^14 groups claimed with bytes for 2^14 at a byte each.
  EXPECT_TRUE(refused(answer, message({0, uint64_t{1} << 31}, zeros.substr(0, 16)), 4096));
  const uint64_t most = mr::MaxGroups(2, aggs);
  EXPECT_TRUE(refused(answer, message({0, most + 1}, zeros), 4096));
  EXPECT_TRUE(refused(answer, message({0, uint64_t{1} << 14}, zeros.substr(0, 1 << 14)), 4096));
  // One well-formed group, then the same with more infinities than values, and with a sketch of
  // other parameters.
  auto group = [&](uint64_t pos_inf, const std::string& sketch) {
    std::string out = message({0, 1}, "");
    wire::Writer w(&out);
    w.PutDouble(1.5);
    w.PutDouble(std::numeric_limits<double>::quiet_NaN());
    w.PutVarint64(7);  // rows
    for (size_t x = 0; x < aggs.size(); x++) {
      for (uint64_t v : {uint64_t{2}, uint64_t{5}, pos_inf, uint64_t{0}}) w.PutVarint64(v);
      for (int d = 0; d < 5; d++) w.PutDouble(0);
    }
    w.PutLengthPrefixed(sketch);
    return out;
  };
  const std::string empty = sketch::HyperLogLog().Serialize();
  Result<MapTaskAnswer> fine = answer(group(1, empty));
  ASSERT_TRUE(fine.ok()) << fine.status().ToString();
  ASSERT_EQ(fine->groups.groups(), 1u);
  EXPECT_EQ(fine->groups.rows[0], 7u);
  EXPECT_TRUE(std::isnan(fine->groups.keys[0][1]));
  EXPECT_FALSE(answer(group(3, empty)).ok());
  Result<sketch::HyperLogLog> other = sketch::HyperLogLog::Create({.log2m = 10});
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(answer(group(1, other->Serialize())).ok());
  // A shape of no key or no aggregate is no group-by.
  EXPECT_FALSE(DecodeMapTaskAnswer(MapOp::kGroupBy, 1, message({0, 0}, ""), {}).ok());
}

// Three members importing from one directory (D5), FRAME.* let through for the test, and one
// node importing the same files.
class FrameGroupByInClusterTest : public ::testing::Test {
 protected:
  static Config Base() {
    Config c;
    c.import_dir = "/tmp";
    return c;
  }
  FrameGroupByInClusterTest()
      : cluster_(InProcessClusterOptions{.base = Base()}), one_(Base(), 1), local_(&one_, 0) {}
  void SetUp() override {
    TEST_FramesInCluster().store(true);
    ASSERT_TRUE(cluster_.WaitFormed());
    char dir[] = "/tmp/floe_groupby_cluster_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    TEST_FramesInCluster().store(false);
    mr::TEST_MaxGroups().store(0);
    std::filesystem::remove_all(dir_);
  }
  // `files` CSV files of 60 rows (each file a chunk at least): f the file's number, c a level
  // or NA, k a small integer or NA, v a real or NA, x the row's number.
  std::string WriteCsvDir(int files) {
    const std::string path = dir_ + "/csv";
    std::filesystem::create_directory(path);
    int row = 0;
    for (int f = 0; f < files; f++) {
      std::ofstream out(path + "/part" + std::to_string(10 + f) + ".csv");
      out << "f,c,k,v,x\n";
      for (int r = 0; r < 60; r++, row++) {
        const char* level[] = {"a", "b", "c", ""};
        out << f << "," << level[(row * 7) % 4] << ",";
        if (row % 7 != 3) out << (row * 5) % 4;
        out << ",";
        if (row % 5 != 1) out << (row * 37 % 101) * 0.37 - 11.5;
        out << "," << row << "\n";
      }
    }
    return path;
  }
  // The job's final state: JOB.STATUS until it no longer runs.
  static std::string WaitJob(Session& c, const std::string& reply) {
    EXPECT_TRUE(reply.starts_with(":")) << reply;
    const std::string id = reply.substr(1, reply.find('\r') - 1);
    std::string status;
    for (int i = 0; i < 4000; i++) {
      status = c.Run({"JOB.STATUS", id});
      if (status.find("\r\nrunning\r\n") == std::string::npos) return status;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "job " << id << " did not finish: " << status;
    return status;
  }
  // The same CSV as cluster frame `name` (imported through member 0) and as one node's frame.
  void Import(const std::string& name, int files) {
    const std::string path = WriteCsvDir(files);
    Session& c0 = cluster_.client(0);
    const std::string there = WaitJob(c0, c0.Run({"FRAME.IMPORT", name, path}));
    ASSERT_NE(there.find("\r\ndone\r\n"), std::string::npos) << there;
    const std::string here = WaitJob(local_, local_.Run({"FRAME.IMPORT", name, path}));
    ASSERT_NE(here.find("\r\ndone\r\n"), std::string::npos) << here;
  }
  ClientCluster cluster_;
  Engine one_;
  Session local_;
  std::string dir_;
};

// A reply's lines without bulk lengths (a number printed with other digits has another length).
std::vector<std::string> Values(const std::string& reply) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < reply.size()) {
    const size_t end = reply.find("\r\n", at);
    if (end == std::string::npos) break;
    std::string line = reply.substr(at, end - at);
    at = end + 2;
    if (line.starts_with("$") && line != "$-1") continue;
    out.push_back(std::move(line));
  }
  return out;
}

// A frame's rows as one node's: every value exact but a number that differs in its last bits
// (D8: the members' sums are added in another order), within 1e-12 relative.
void ExpectSameRows(const std::string& cluster, const std::string& one) {
  ASSERT_FALSE(one.starts_with("-")) << one;
  const std::vector<std::string> a = Values(cluster), b = Values(one);
  ASSERT_EQ(a.size(), b.size()) << cluster << "\n" << one;
  for (size_t i = 0; i < a.size(); i++) {
    if (a[i] == b[i]) continue;
    char* end_a = nullptr;
    char* end_b = nullptr;
    const double x = std::strtod(a[i].c_str(), &end_a), y = std::strtod(b[i].c_str(), &end_b);
    ASSERT_TRUE(*end_a == '\0' && *end_b == '\0' && !a[i].empty())
        << "value " << i << ": " << a[i] << " vs " << b[i];
    EXPECT_NEAR(x, y, 1e-12 * std::abs(y)) << "value " << i;
  }
}

// D6, D8: GROUPBY of a frame spread over 3 members, through each member, the destination homed
// at another member than the source or at the source's, equals one node's group-by of the same
// CSV: the reply (the groups), the result's rows (keys with NA, count, sum, mean, min, max, sd,
// distinct; groups in key order, NA last), and the refusals.
TEST_F(FrameGroupByInClusterTest, EqualsOneNodesGroupByOfTheSameCsv) {
  const std::string src = cluster_.KeyAt(1, "src");
  Import(src, 7);
  int64_t chunks = 0;
  for (size_t i = 0; i < 3; i++) {
    EXPECT_GT(cluster_.node(i).chunks().chunks(), 0) << "every member maps some chunks";
    chunks += cluster_.node(i).chunks().chunks();
  }
  EXPECT_GE(chunks, 7);
  for (const std::string& dst : {cluster_.KeyAt(2, "g"), cluster_.KeyAt(1, "g")}) {
    const std::vector<std::vector<std::string>> commands = {
        {"FRAME.GROUPBY", src, dst,      "KEYS", "c",   "AGG", "count", "c", "sum",      "v",
         "mean",          "v", "min",    "v",    "max", "v",   "sd",    "v", "distinct", "v",
         "distinct",      "c", "REPLACE"},
        {"FRAME.GROUPBY", src, dst,   "KEYS", "c",  "k", "AGG",  "count", "v",      "sum", "k",
         "min",           "k", "max", "k",    "sd", "v", "mean", "k",     "REPLACE"},
        {"FRAME.GROUPBY", src, dst, "KEYS", "k", "AGG", "mean", "v", "distinct", "x", "sum", "x",
         "REPLACE"},
        {"FRAME.GROUPBY", src, dst, "KEYS", "x", "AGG", "min", "v", "REPLACE"}};
    for (const std::vector<std::string>& args : commands) {
      const std::string expected = local_.Run(args);
      ASSERT_TRUE(expected.starts_with(":")) << expected;
      for (size_t via = 0; via < 3; via++) {
        SCOPED_TRACE(args[4] + " into " + dst + " through member " + std::to_string(via));
        ASSERT_EQ(cluster_.client(via).Run(args), expected);
        ExpectSameRows(cluster_.client(via).Run({"FRAME.HEAD", dst, "1000"}),
                       local_.Run({"FRAME.HEAD", dst, "1000"}));
        EXPECT_EQ(cluster_.client(via).Run({"TYPE", dst}), "+frame\r\n");
      }
    }
    // A source of no row (a filter keeping none: its chunks empty) makes a frame of no group.
    const std::vector<std::string> none = {"FRAME.FILTER", src, "none", "WHERE", "x", "<", "0",
                                           "REPLACE"};
    ASSERT_EQ(local_.Run(none), ":0\r\n");
    ASSERT_EQ(cluster_.client(0).Run(none), ":0\r\n");
    const std::vector<std::string> empty = {"FRAME.GROUPBY", "none", dst, "KEYS",   "c",
                                            "AGG",           "sum",  "v", "REPLACE"};
    ASSERT_EQ(local_.Run(empty), ":0\r\n");
    for (size_t via = 0; via < 3; via++) {
      EXPECT_EQ(cluster_.client(via).Run(empty), ":0\r\n") << via;
      EXPECT_EQ(cluster_.client(via).Run({"FRAME.HEAD", dst, "10"}),
                local_.Run({"FRAME.HEAD", dst, "10"}));
    }
    // Refused as one node refuses.
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"FRAME.GROUPBY", src, dst, "KEYS", "c", "AGG", "count", "c"},
             {"FRAME.GROUPBY", src, dst + "2", "KEYS", "nope", "AGG", "count", "c"},
             {"FRAME.GROUPBY", src, dst + "2", "KEYS", "c", "c", "AGG", "count", "c"},
             {"FRAME.GROUPBY", src, dst + "2", "KEYS", "k", "AGG", "sum", "c"},
             {"FRAME.GROUPBY", src, dst + "2", "KEYS", "k", "AGG", "sum", "nope"}}) {
      const std::string expected = local_.Run(args);
      ASSERT_TRUE(expected.starts_with("-")) << expected;
      EXPECT_EQ(cluster_.client(0).Run(args), expected) << args[4];
    }
  }
}

// D8: the group limit holds at every member's map and at every merge up the tree: past it the
// task fails with one node's error, stores nothing, and every member still serves.
TEST_F(FrameGroupByInClusterTest, PastTheGroupLimitFailsAsOneNodeDoes) {
  const std::string src = cluster_.KeyAt(1, "big");
  Import(src, 12);
  const std::string dst = cluster_.KeyAt(2, "g");
  // 12 groups (one a file): no member holds more than 9 of the 12 chunks (D1's bound), so each
  // member's table fits under 10 and a merge goes past it. Then 720 groups (one a row): a
  // member's own map goes past it.
  for (size_t i = 0; i < 3; i++) ASSERT_LT(cluster_.node(i).chunks().chunks(), 10) << i;
  mr::TEST_MaxGroups().store(10);
  for (const std::string key : {"f", "x"}) {
    const std::vector<std::string> args = {"FRAME.GROUPBY", src,     dst, "KEYS", key,
                                           "AGG",           "count", key};
    const std::string expected = local_.Run(args);
    ASSERT_TRUE(expected.starts_with("-ERR more than 10 groups")) << expected;
    for (size_t via = 0; via < 3; via++) {
      EXPECT_EQ(cluster_.client(via).Run(args), expected) << key << " through " << via;
      EXPECT_EQ(cluster_.client(via).Run({"EXISTS", dst}), ":0\r\n");
    }
  }
  mr::TEST_MaxGroups().store(0);
  EXPECT_EQ(cluster_.client(0).Run({"FRAME.GROUPBY", src, dst, "KEYS", "f", "AGG", "count", "f"}),
            ":12\r\n");
}

// D9: a member killed before the task fails it with CLUSTERDOWN naming that member, through
// the coordinator and through another member (whose node waits for the coordinator
// cluster-node-timeout: the coordinator gives up on the silent member first); nothing stored.
TEST_F(FrameGroupByInClusterTest, ASilentMemberFailsTheTask) {
  const std::string src = cluster_.KeyAt(0, "gone");
  Import(src, 6);
  ASSERT_GT(cluster_.node(2).chunks().chunks(), 0);
  cluster_.Kill(2);
  const std::string dst = cluster_.KeyAt(1, "g");
  for (size_t via : {0, 1}) {
    const std::string down = cluster_.client(via).Run(
        {"FRAME.GROUPBY", src, dst, "KEYS", "c", "AGG", "count", "c", "sum", "v"});
    EXPECT_TRUE(down.starts_with("-CLUSTERDOWN The node 127.0.0.1:" +
                                 std::to_string(cluster_.cluster_port(2)) + " is unreachable"))
        << via << ": " << down;
    EXPECT_EQ(cluster_.client(via).Run({"EXISTS", dst}), ":0\r\n");
  }
}

}  // namespace
}  // namespace floe::server::internal
