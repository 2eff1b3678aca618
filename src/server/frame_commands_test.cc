// FRAME.* and JOB.* in process: imports as jobs, frames as values of the store, the analytics'
// replies, and hostile arguments.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "cluster/cluster.h"
#include "server/analytics_test_support.h"
#include "server/command_test.h"
#include "server/internal/analytics_pool.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/engine_budget.h"
#include "server/internal/frame_value.h"
#include "store/internal/epoch.h"

namespace floe::server {
namespace {

Config ImportsFromTmp() {
  Config c;
  c.import_dir = "/tmp";  // where the tests write their files (FRAME.IMPORT reads only there)
  return c;
}

class FrameCommandsTest : public CommandTest {
 protected:
  FrameCommandsTest() : CommandTest(ImportsFromTmp()) {}
  void SetUp() override {
    char dir[] = "/tmp/floe_frame_cmd_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    for (const std::string& f : files_) std::remove(f.c_str());
    rmdir(dir_.c_str());
  }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    files_.push_back(path);
    return path;
  }
  // Imports and waits; the job's final state.
  std::string Import(std::vector<std::string> args) {
    std::vector<std::string> command = {"FRAME.IMPORT"};
    for (std::string& a : args) command.push_back(std::move(a));
    Reply r = Run(command);
    if (r.type != Reply::Type::kInteger) return "error: " + r.str;
    return Wait(r.integer)["state"].str;
  }

  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(FrameCommandsTest, ImportIsAJobThatStoresAFrame) {
  const std::string path = Write("t.csv", kCsv);
  Reply id = Run({"FRAME.IMPORT", "t", path});
  ASSERT_EQ(id.type, Reply::Type::kInteger) << id.str;
  std::map<std::string, Reply> st = Wait(id.integer);
  EXPECT_EQ(st["state"].str, "done") << st["error"].str;
  EXPECT_EQ(st["rows"].integer, 5);
  EXPECT_EQ(st["percent"].str, "100");
  EXPECT_THAT(st["result"].str, HasSubstr("5 rows, 4 columns"));
  EXPECT_THAT(Run({"TYPE", "t"}), IsSimple("frame"));
  EXPECT_THAT(Run({"GET", "t"}), IsErr(kWrongType));
  Reply list = Run({"FRAME.LIST"});
  ASSERT_THAT(list, IsArrayOfSize(1));
  EXPECT_EQ(list.elements[0].str, "t");
  Reply head = Run({"FRAME.HEAD", "t", "3"});
  ASSERT_THAT(head, IsArrayOfSize(4));
  EXPECT_EQ(head.elements[0].elements[2].str, "color");
  EXPECT_EQ(head.elements[2].elements[1].str, "2.25");
  EXPECT_EQ(head.elements[2].elements[3].type, Reply::Type::kNull);  // NA
  EXPECT_EQ(head.elements[3].elements[2].str, "red");
  Reply info = Run({"FRAME.INFO", "t"});
  ASSERT_THAT(info, IsArrayOfSize(14));
  EXPECT_EQ(info.elements[3].integer, 5);  // rows
  EXPECT_EQ(info.elements[5].integer, 4);  // columns
  const Reply& price = info.elements[13].elements[1];
  EXPECT_EQ(price.elements[3].str, "real");
  EXPECT_EQ(price.elements[5].integer, 1);  // one NA
  std::string text = Run({"INFO", "frames"}).str;
  EXPECT_THAT(text, HasSubstr("frames:1\r\n"));
  EXPECT_THAT(text, HasSubstr("jobs_done:1\r\n"));
}

// FRAME.IMPORT could read any file the node's process may read (and FRAME.HEAD show it): it now
// reads only under import-dir, links resolved first.
TEST_F(FrameCommandsTest, ImportReadsOnlyUnderImportDir) {
  EXPECT_THAT(Run({"FRAME.IMPORT", "f", "/etc/hostname"}),
              ErrStartsWith("ERR '/etc/hostname' is outside import-dir (/tmp)"));
  EXPECT_THAT(Run({"FRAME.IMPORT", "f", dir_ + "/../../etc/hostname"}),
              ErrStartsWith("ERR '" + dir_ + "/../../etc/hostname' is outside import-dir"));
  const std::string link = dir_ + "/link.csv";
  ASSERT_EQ(symlink("/etc/hostname", link.c_str()), 0);
  files_.push_back(link);
  EXPECT_THAT(Run({"FRAME.IMPORT", "f", link}), ErrStartsWith("ERR '" + link + "' is outside"));
  // A link to a file outside that does not exist gets the same answer: another one told a
  // client which files exist outside import-dir.
  const std::string dangling = dir_ + "/dangling.csv";
  ASSERT_EQ(symlink("/etc/no-such-file-floe.csv", dangling.c_str()), 0);
  files_.push_back(dangling);
  EXPECT_THAT(Run({"FRAME.IMPORT", "f", dangling}),
              ErrStartsWith("ERR '" + dangling + "' is outside"));
  EXPECT_THAT(Run({"FRAME.IMPORT", "f", dir_ + "/missing.csv"}), ErrStartsWith("ERR cannot read"));
  ASSERT_EQ(unlink(dangling.c_str()), 0);
  files_.pop_back();
  // A directory under it holding such a link is refused whole.
  EXPECT_THAT(Run({"FRAME.IMPORT", "f", dir_}), ErrStartsWith("ERR '" + link + "' is outside"));
  EXPECT_THAT(Run({"EXISTS", "f"}), IsInt(0));
  // A relative path is under import-dir, wherever the node runs (it was the working
  // directory's, so a node started elsewhere refused every relative path as outside).
  const std::string name = dir_.substr(std::string("/tmp/").size()) + "/rel.csv";
  Write("rel.csv", kCsv);
  EXPECT_EQ(Import({"r", name}), "done");
  EXPECT_THAT(Run({"FRAME.IMPORT", "x", "../etc/hostname"}),
              ErrStartsWith("ERR '/tmp/../etc/hostname' is outside import-dir"));
}

// The default import-dir was the working directory: a client of a node started in a home read
// .ssh/id_rsa back through FRAME.HEAD. It is <dir>/import now, a directory of its own.
TEST(FrameImportDirTest, TheDefaultImportDirIsADirectoryOfItsOwn) {
  EXPECT_EQ(Config().import_dir, "");
  EXPECT_EQ(ImportDir(Config()), "floe-data/import");
  char tmp[] = "/tmp/floe_import_default_XXXXXX";
  ASSERT_NE(mkdtemp(tmp), nullptr);
  const std::string dir = tmp;
  Config c;
  c.dir = dir;
  Engine engine(c);
  Session s(&engine, 0);
  auto run = [&](std::vector<std::string> a) { return CommandTest::Decode(s.Run(a)); };
  std::ofstream(dir + "/secret.csv") << "a\n1\n";
  // Before the directory exists: a clear error saying what to do.
  EXPECT_THAT(run({"FRAME.IMPORT", "f", "x.csv"}),
              ErrStartsWith("ERR import-dir '" + dir + "/import' cannot be used"));
  ASSERT_EQ(mkdir((dir + "/import").c_str(), 0700), 0);
  std::ofstream(dir + "/import/x.csv") << "a\n1\n";
  EXPECT_THAT(run({"FRAME.IMPORT", "f", dir + "/secret.csv"}),
              ErrStartsWith("ERR '" + dir + "/secret.csv' is outside import-dir"));
  EXPECT_THAT(run({"FRAME.IMPORT", "f", "../secret.csv"}), ErrStartsWith("ERR '"));
  const Reply job = run({"FRAME.IMPORT", "f", "x.csv"});
  ASSERT_EQ(job.type, Reply::Type::kInteger) << job.str;
  Result<job::Info> info = engine.jobs().TEST_Wait(static_cast<uint64_t>(job.integer));
  ASSERT_TRUE(info.ok());
  EXPECT_THAT(run({"FRAME.HEAD", "f", "1"}), IsArrayOfSize(2));
  std::filesystem::remove_all(dir);
}

TEST_F(FrameCommandsTest, KeyspaceCommandsTreatAFrameSanely) {
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv)}), "done");
  EXPECT_THAT(Run({"RENAME", "t", "u"}), IsOk());
  EXPECT_THAT(Run({"FRAME.HEAD", "u", "1"}), IsArrayOfSize(2));
  EXPECT_THAT(Run({"FRAME.HEAD", "t"}), IsErr("ERR no such frame"));
  EXPECT_THAT(Run({"EXPIRE", "u", "100"}), IsInt(1));
  EXPECT_THAT(Run({"FRAME.INFO", "u"}), IsArrayOfSize(14));
  EXPECT_THAT(Run({"DUMP", "u"}), IsErr("ERR DUMP does not support frames"));
  EXPECT_THAT(Run({"DEL", "u"}), IsInt(1));
  EXPECT_THAT(Run({"FRAME.LIST"}), IsArrayOfSize(0));
  // A removed value counts until it is freed, as its memory does.
  store::internal::EpochDomain::Global().Barrier();
  EXPECT_THAT(Run({"INFO", "frames"}).str, HasSubstr("frames:0\r\n"));
  ASSERT_EQ(Import({"t", Write("t2.csv", kCsv)}), "done");
  EXPECT_THAT(Run({"FLUSHALL"}), IsOk());
  EXPECT_THAT(Run({"FRAME.LIST"}), IsArrayOfSize(0));
  store::internal::EpochDomain::Global().Barrier();
  EXPECT_THAT(Run({"INFO", "frames"}).str, HasSubstr("frames_compressed_bytes:0\r\n"));
  EXPECT_THAT(Run({"SET", "s", "x"}), IsOk());
  EXPECT_THAT(Run({"FRAME.DROP", "s"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"FRAME.DROP", "nothing"}), IsInt(0));
}

// The import's job stores the frame outside any command: a transaction WATCHing the absent
// name still aborts (EXEC finds a value where there was none).
TEST_F(FrameCommandsTest, ImportTouchesAWatchedAbsentName) {
  EXPECT_THAT(Run({"WATCH", "t"}), IsOk());
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv)}), "done");
  EXPECT_THAT(Run({"MULTI"}), IsOk());
  EXPECT_THAT(Run({"SET", "x", "1"}), IsSimple("QUEUED"));
  EXPECT_EQ(Run({"EXEC"}).type, Reply::Type::kNull);
  EXPECT_THAT(Run({"EXISTS", "x"}), IsInt(0));
}

TEST_F(FrameCommandsTest, ImportRefusesBadPathsAndExistingNames) {
  EXPECT_THAT(Run({"FRAME.IMPORT", "t", dir_ + "/missing.csv"}), ErrStartsWith("ERR cannot read"));
  EXPECT_THAT(Run({"FRAME.IMPORT", "t", Write("bin.csv", std::string("a,b\n\0\x01\x02", 7))}),
              ErrStartsWith("ERR '"));
  const std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  files_.push_back(fifo);
  EXPECT_THAT(Run({"FRAME.IMPORT", "t", fifo}), ErrStartsWith("ERR '" + fifo + "' is not a"));
  EXPECT_THAT(Run({"FRAME.IMPORT", "a{b}", Write("t.csv", kCsv)}), ErrStartsWith("ERR a frame"));
  EXPECT_THAT(Run({"FRAME.IMPORT", "t", dir_ + "/t.csv", "SEP", "ab"}), ErrStartsWith("ERR SEP"));
  EXPECT_THAT(Run({"FRAME.IMPORT", "t", dir_ + "/t.csv", "TYPES", "int,bogus"}),
              ErrStartsWith("ERR unknown column type"));
  EXPECT_THAT(Run({"FRAME.IMPORT", "t", dir_ + "/t.csv", "HEADER"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"SET", "t", "x"}), IsOk());
  EXPECT_THAT(Run({"FRAME.IMPORT", "t", dir_ + "/t.csv"}), ErrStartsWith("ERR target key exists"));
  EXPECT_EQ(Import({"t", dir_ + "/t.csv", "REPLACE"}), "done");
  EXPECT_THAT(Run({"TYPE", "t"}), IsSimple("frame"));
}

TEST_F(FrameCommandsTest, ImportOptionsOverrideTheGuess) {
  const std::string path = Write("s.csv", "1;x;7\n2;NULL;8\n");
  ASSERT_EQ(Import({"t", path, "SEP", ";", "HEADER", "no", "TYPES", "real,string,", "NA", "NULL"}),
            "done");
  Reply info = Run({"FRAME.INFO", "t"});
  ASSERT_THAT(info, IsArrayOfSize(14));
  EXPECT_EQ(info.elements[13].elements[0].elements[3].str, "real");
  EXPECT_EQ(info.elements[13].elements[1].elements[3].str, "string");
  EXPECT_EQ(info.elements[13].elements[1].elements[5].integer, 1);  // NULL is NA
  EXPECT_EQ(info.elements[13].elements[2].elements[3].str, "integer");
}

TEST_F(FrameCommandsTest, ImportOverMaxmemoryFailsCleanly) {
  std::string big = "a,b\n";
  for (int i = 0; i < 200000; i++) big += std::to_string(i) + "," + std::to_string(i * 7) + "\n";
  const std::string path = Write("big.csv", big);
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", "1mb"}), IsOk());
  // Refused before a job starts: the input alone passes the limit.
  EXPECT_THAT(Run({"FRAME.IMPORT", "t", path}), ErrStartsWith("OOM"));
  EXPECT_THAT(Run({"EXISTS", "t"}), IsInt(0));
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", "0"}), IsOk());
  EXPECT_EQ(Import({"t", path}), "done");
}

TEST_F(FrameCommandsTest, BadRowsAreReportedWithTheirLines) {
  const std::string path = Write("bad.csv", "a,b\n1,2\n3,4,5\n6,7\n");
  Reply id = Run({"FRAME.IMPORT", "t", path});
  ASSERT_EQ(id.type, Reply::Type::kInteger);
  std::map<std::string, Reply> st = Wait(id.integer);
  EXPECT_EQ(st["state"].str, "done");
  EXPECT_THAT(st["result"].str, HasSubstr("1 rejected rows"));
  EXPECT_THAT(st["result"].str, HasSubstr("line 3"));
}

TEST_F(FrameCommandsTest, FailedImportLeavesNoFrame) {
  // A forced integer type on text is bad values, not failure; an unreadable gzip is failure.
  const std::string path = Write("bad.gz", std::string("\x1f\x8b\x08\x00garbage", 11));
  Reply id = Run({"FRAME.IMPORT", "t", path});
  ASSERT_EQ(id.type, Reply::Type::kInteger) << id.str;
  std::map<std::string, Reply> st = Wait(id.integer);
  EXPECT_EQ(st["state"].str, "failed");
  EXPECT_THAT(st["error"].str, StartsWith("import of '"));
  EXPECT_THAT(Run({"EXISTS", "t"}), IsInt(0));
}

TEST_F(FrameCommandsTest, JobCommandsCheckTheirArguments) {
  EXPECT_THAT(Run({"JOB.STATUS", "0"}), IsErr("ERR a job id is a positive integer"));
  EXPECT_THAT(Run({"JOB.STATUS", "-5"}), IsErr("ERR a job id is a positive integer"));
  EXPECT_THAT(Run({"JOB.STATUS", "99999999999999999999"}),
              IsErr("ERR a job id is a positive integer"));
  EXPECT_THAT(Run({"JOB.STATUS", "7"}), IsErr("ERR no such job"));
  EXPECT_THAT(Run({"JOB.CANCEL", "7"}), IsErr("ERR no such job"));
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv)}), "done");
  EXPECT_THAT(Run({"JOB.CANCEL", "1"}), IsErr("ERR job 1 already finished"));
  Reply list = Run({"JOB.LIST"});
  ASSERT_THAT(list, IsArrayOfSize(1));
  EXPECT_EQ(list.elements[0].elements[2].str, "done");
}

TEST_F(FrameCommandsTest, SummaryQuantileAndGroupBy) {
  // Five rows are too few for the guess to call color categorical: TYPES says so.
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv), "TYPES", ",,cat,"}), "done");
  Reply s = Run({"FRAME.SUMMARY", "t", "price", "BINS", "4"});
  ASSERT_THAT(s, IsArrayOfSize(22));
  EXPECT_EQ(s.elements[5].integer, 4);   // count
  EXPECT_EQ(s.elements[7].integer, 1);   // na
  EXPECT_EQ(s.elements[9].str, "1.5");   // min
  EXPECT_EQ(s.elements[11].str, "5.5");  // max
  EXPECT_EQ(s.elements[13].str, "3.3125");
  EXPECT_EQ(s.elements[17].integer, 4);  // cardinality
  EXPECT_THAT(s.elements[19], IsArrayOfSize(4));
  Reply q = Run({"FRAME.QUANTILE", "t", "1", "0", "0.5", "1"});  // by index
  ASSERT_THAT(q, IsArrayOfSize(3));
  EXPECT_EQ(q.elements[0].str, "1.5");
  EXPECT_EQ(q.elements[1].str, "3.125");
  EXPECT_EQ(q.elements[2].str, "5.5");
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g", "KEYS", "color", "AGG", "count", "id", "sum", "qty",
                   "mean", "price"}),
              IsInt(3));
  Reply head = Run({"FRAME.HEAD", "g"});
  ASSERT_THAT(head, IsArrayOfSize(4));
  EXPECT_EQ(head.elements[0].elements[1].str, "count");
  EXPECT_EQ(head.elements[0].elements[2].str, "sum_qty");
  EXPECT_EQ(head.elements[1].elements[0].str, "red");  // domain order: red, blue, green
  EXPECT_EQ(head.elements[1].elements[1].str, "3");
  EXPECT_EQ(head.elements[1].elements[2].str, "90");
  EXPECT_EQ(head.elements[1].elements[3].str, "3.5");
  EXPECT_EQ(head.elements[2].elements[2].type, Reply::Type::kNull);  // blue's qty is NA
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g", "KEYS", "color", "AGG", "count", "id"}),
              ErrStartsWith("ERR target key exists"));
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g", "KEYS", "color", "AGG", "count", "id", "REPLACE"}),
              IsInt(3));
}

TEST_F(FrameCommandsTest, HostileAnalyticsArgumentsAreRefused) {
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv), "TYPES", ",,cat,"}), "done");
  // 1,000 aggregates over 3M rows held a node for 18 s: the limits are 32 keys, 100 aggregates.
  std::vector<std::string> aggregates = {"FRAME.GROUPBY", "t", "wide", "KEYS", "color", "AGG"};
  for (int i = 0; i < 101; i++) aggregates.insert(aggregates.end(), {"sum", "qty"});
  EXPECT_THAT(Run(aggregates), IsErr("ERR at most 32 keys and 100 aggregates"));
  aggregates.resize(aggregates.size() - 2);
  EXPECT_THAT(Run(aggregates), IsInt(3));
  EXPECT_THAT(Run({"FRAME.HEAD", "t", "-1"}), IsErr("ERR n must be between 0 and 1000"));
  EXPECT_THAT(Run({"FRAME.HEAD", "t", "1001"}), IsErr("ERR n must be between 0 and 1000"));
  EXPECT_THAT(Run({"FRAME.HEAD", "t", "x"}), IsErr(kNotInt));
  EXPECT_THAT(Run({"FRAME.SUMMARY", "t", "price", "BINS", "0"}), ErrStartsWith("ERR BINS"));
  EXPECT_THAT(Run({"FRAME.SUMMARY", "t", "price", "BINS", "10001"}), ErrStartsWith("ERR BINS"));
  EXPECT_THAT(Run({"FRAME.SUMMARY", "t", "4"}), ErrStartsWith("ERR no such column"));
  EXPECT_THAT(Run({"FRAME.SUMMARY", "t", "-1"}), ErrStartsWith("ERR no such column"));
  EXPECT_THAT(Run({"FRAME.SUMMARY", "t", "99999999999999999999999"}),
              ErrStartsWith("ERR no such column"));
  EXPECT_THAT(Run({"FRAME.QUANTILE", "t", "price", "1.5"}), ErrStartsWith("ERR a probability"));
  EXPECT_THAT(Run({"FRAME.QUANTILE", "t", "price", "nan"}), ErrStartsWith("ERR a probability"));
  std::vector<std::string> many = {"FRAME.QUANTILE", "t", "price"};
  for (int i = 0; i < 101; i++) many.push_back("0.5");
  EXPECT_THAT(Run(many), IsErr("ERR at most 100 probabilities"));
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g", "KEYS", "AGG", "count", "id"}),
              IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g", "KEYS", "color", "AGG", "median", "id"}),
              ErrStartsWith("ERR unknown aggregate"));
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g", "KEYS", "color", "AGG", "sum"}),
              IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g", "KEYS", "color", "AGG", "sum", "color"}),
              ErrStartsWith("ERR only count"));
  EXPECT_THAT(Run({"FRAME.GROUPBY", "nope", "g", "KEYS", "color", "AGG", "sum", "id"}),
              IsErr("ERR no such frame"));
  EXPECT_EQ(engine_.internal_errors(), 0u);
}

// ---- analytics hardening (a hostile review of the frames analytics) ----

// Regression: a group-by's tables were not charged to maxmemory (only its result frame was
// checked, once built): 200,000 groups held ~30 MB of tables on a node with 8 MB to spare. Now
// they are reserved as they grow, refused with Redis's OOM error, and given back after.
TEST_F(FrameCommandsTest, GroupByWorkingMemoryIsChargedToMaxmemory) {
  std::string csv = "id,x\n";
  for (int i = 0; i < 200000; i++) csv += std::to_string(i) + "," + std::to_string(i % 7) + "\n";
  ASSERT_EQ(Import({"t", Write("ids.csv", csv)}), "done");
  const int64_t used = engine_.UsedMemoryNow();
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", std::to_string(used + (8 << 20))}), IsOk());
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g", "KEYS", "id", "AGG", "sum", "x", "mean", "x"}),
              IsErr("OOM command not allowed when used memory > 'maxmemory'."));
  EXPECT_THAT(Run({"EXISTS", "g"}), IsInt(0));
  EXPECT_EQ(engine_.reserved_memory(), 0);
  // Few groups fit; the same with no limit.
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g", "KEYS", "x", "AGG", "count", "id"}), IsInt(7));
  EXPECT_EQ(engine_.reserved_memory(), 0);
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", "0"}), IsOk());
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g2", "KEYS", "id", "AGG", "sum", "x"}), IsInt(200000));
  EXPECT_EQ(engine_.reserved_memory(), 0);
  EXPECT_EQ(engine_.internal_errors(), 0u);
}

// Quantiles' working memory is charged too (bounded: 256 counters a rank a held accumulator).
TEST_F(FrameCommandsTest, QuantileWorkingMemoryIsChargedToMaxmemory) {
  std::string csv = "x\n";
  for (int i = 0; i < 20000; i++) csv += std::to_string(i * 0.5) + "\n";
  ASSERT_EQ(Import({"t", Write("q.csv", csv)}), "done");
  std::vector<std::string> many = {"FRAME.QUANTILE", "t", "x"};
  for (int i = 0; i < 100; i++) many.push_back(std::to_string(i / 100.0));
  const int64_t used = engine_.UsedMemoryNow();
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", std::to_string(used + (64 << 10))}), IsOk());
  EXPECT_THAT(Run(many), IsErr("OOM command not allowed when used memory > 'maxmemory'."));
  EXPECT_EQ(engine_.reserved_memory(), 0);
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", "0"}), IsOk());
  Reply q = Run(many);
  ASSERT_THAT(q, IsArrayOfSize(100));
  EXPECT_EQ(q.elements[50].str, "4999.75");  // (n - 1) x 0.5 = 9999.5: 4999.5 and 5000 halfway
  EXPECT_EQ(engine_.reserved_memory(), 0);
}

// Regression: a frame dropped while a reader held it (an analytics task, an export job, an HTTP
// reader) stopped counting toward maxmemory though its bytes lived on, so (cores + 64 queued)
// old versions of a frame could each pass the limit. Now its bytes count until the last
// reference goes (docs/frame.md, "Frames in the store").
TEST_F(FrameCommandsTest, ADroppedFrameStillHeldCountsTowardMaxmemory) {
  std::string csv = "id,x\n";
  for (int i = 0; i < 300000; i++) {
    csv += std::to_string(i) + "," + std::to_string((int64_t{i} * 7919) % 1000003) + "\n";
  }
  ASSERT_EQ(Import({"f", Write("pinned.csv", csv)}), "done");
  std::shared_ptr<const frame::Frame> held;  // what a task holds once it loaded the frame
  {
    store::ValuePtr v = engine_.store().Get("f");
    ASSERT_NE(v, nullptr);
    auto cell = internal::CellOf<internal::FrameHolder>(*v);
    ASSERT_TRUE(cell.ok());
    held = (*cell)->Read([](const internal::FrameHolder& h) { return h.frame; });
  }
  const auto charge = static_cast<int64_t>(internal::FrameHolder::ChargeOf(*held));
  ASSERT_GT(charge, int64_t{2} << 20);
  EXPECT_EQ(engine_.DetachedFrameBytes(), 0);
  const int64_t with_frame = engine_.UsedMemoryNow();
  EXPECT_THAT(Run({"FRAME.DROP", "f"}), IsInt(1));
  store::internal::EpochDomain::Global().Barrier();  // the dropped value and its cell are freed
  EXPECT_EQ(engine_.DetachedFrameBytes(), charge);
  EXPECT_THAT(Run({"INFO", "frames"}).str,
              HasSubstr("frames_detached_bytes:" + std::to_string(charge) + "\r\n"));
  // The limit where used memory stood with the frame stored: half its bytes fit only if they
  // were free.
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", std::to_string(with_frame + (64 << 10))}), IsOk());
  const std::string offset = std::to_string(charge / 2);
  EXPECT_THAT(Run({"SETRANGE", "s", offset, "x"}),
              IsErr("OOM command not allowed when used memory > 'maxmemory'."));
  EXPECT_EQ(engine_.reserved_memory(), 0);
  held.reset();  // the reader lets go: the bytes are freed
  EXPECT_EQ(engine_.DetachedFrameBytes(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));  // past UsedMemory's cached figure
  EXPECT_THAT(Run({"SETRANGE", "s", offset, "x"}), IsInt(charge / 2 + 1));
  EXPECT_EQ(engine_.internal_errors(), 0u);
}

// After a task whose working memory reached 64 MiB the pool thread returns the allocator's free
// pages (tcmalloc kept them: RSS stayed tens of MB above used memory); after a small one it
// does not.
TEST_F(FrameCommandsTest, ALargeTaskReturnsFreedMemoryToTheSystem) {
  internal::AnalyticsPool& pool = engine_.analytics();
  auto run = [&](uint64_t bytes) {
    ASSERT_TRUE(pool.Post(
        [this, bytes] {
          internal::EngineBudget budget(engine_);
          ASSERT_TRUE(budget.Reserve(bytes / 2).ok());
          ASSERT_TRUE(budget.Reserve(bytes - bytes / 2).ok());
          budget.Release(bytes);
        },
        nullptr));
    for (int i = 0; i < 2000 && pool.busy() > 0; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_EQ(pool.busy(), 0u);
  };
  const uint64_t before = pool.allocator_releases();
  run(uint64_t{1} << 20);
  EXPECT_EQ(pool.allocator_releases(), before);
  run(internal::AnalyticsPool::kLargeTaskBytes);
  EXPECT_EQ(pool.allocator_releases(), before + 1);
  run(uint64_t{1} << 20);
  EXPECT_EQ(pool.allocator_releases(), before + 1);
  EXPECT_EQ(engine_.reserved_memory(), 0);
}

// Regression: FRAME.HEAD's reply had no byte budget (1,000 rows of wide string columns made a
// reply of gigabytes). Now it is refused past the lesser of proto-max-bulk-len and 64 MiB.
TEST_F(FrameCommandsTest, HeadReplyIsBoundedInBytes) {
  std::string csv = "id,s\n";
  for (int i = 0; i < 100; i++)
    csv += std::to_string(i) + "," + std::string(30000, 'a' + i % 26) + "\n";
  ASSERT_EQ(Import({"t", Write("wide.csv", csv)}), "done");
  EXPECT_THAT(Run({"CONFIG", "SET", "proto-max-bulk-len", "1048576"}), IsOk());
  EXPECT_THAT(Run({"FRAME.HEAD", "t", "100"}), ErrStartsWith("ERR FRAME.HEAD reply would exceed"));
  Reply head = Run({"FRAME.HEAD", "t", "20"});  // ~600 KB fits
  ASSERT_THAT(head, IsArrayOfSize(21));
  EXPECT_EQ(head.elements[20].elements[1].str.size(), 30000u);
  EXPECT_THAT(Run({"CONFIG", "SET", "proto-max-bulk-len", "536870912"}), IsOk());
  EXPECT_THAT(Run({"FRAME.HEAD", "t", "100"}), IsArrayOfSize(101));
}

// FRAME.INFO reports the NA counts and layouts the vecs computed once when made (it used to
// scan every row of every column per call, on the I/O thread).
TEST_F(FrameCommandsTest, InfoReportsPrecomputedNaCountsAndLayouts) {
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv), "TYPES", ",,cat,"}), "done");
  Reply info = Run({"FRAME.INFO", "t"});
  ASSERT_THAT(info, IsArrayOfSize(14));
  const std::vector<int64_t> na = {0, 1, 0, 1};
  for (size_t c = 0; c < na.size(); c++) {
    const Reply& vec = info.elements[13].elements[c];
    EXPECT_EQ(vec.elements[5].integer, na[c]) << c;
    EXPECT_THAT(vec.elements[13].str, HasSubstr(":1")) << c;  // one chunk, one layout
  }
  EXPECT_THAT(info.elements[13].elements[2].elements[13].str, HasSubstr("categorical/"));
}

// Aggregate names stay distinct when they repeat or meet a key's name, found without a scan of
// every column per try.
TEST_F(FrameCommandsTest, GroupByNamesRepeatedAggregatesDistinctly) {
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv), "TYPES", ",,cat,"}), "done");
  std::vector<std::string> args = {"FRAME.GROUPBY", "t", "g", "KEYS", "color", "AGG"};
  for (int i = 0; i < 100; i++) {
    args.push_back("sum");
    args.push_back("qty");
  }
  EXPECT_THAT(Run(args), IsInt(3));
  Reply head = Run({"FRAME.HEAD", "g", "0"});
  ASSERT_THAT(head, IsArrayOfSize(1));
  ASSERT_THAT(head.elements[0], IsArrayOfSize(101));
  EXPECT_EQ(head.elements[0].elements[1].str, "sum_qty");
  EXPECT_EQ(head.elements[0].elements[2].str, "sum_qty_2");
  EXPECT_EQ(head.elements[0].elements[100].str, "sum_qty_100");
  std::set<std::string> names;
  for (const Reply& n : head.elements[0].elements) names.insert(n.str);
  EXPECT_EQ(names.size(), 101u);
}

// Regression: an analytics task could not be stopped while it held its I/O thread. Now CLIENT
// KILL of the calling client (its kill flag) cancels it at the next chunk.
TEST_F(FrameCommandsTest, AnalyticsStopWhenTheirClientIsKilled) {
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv), "TYPES", ",,cat,"}), "done");
  session_.state().kill_requested.store(true);
  EXPECT_THAT(Run({"FRAME.QUANTILE", "t", "price", "0.5"}), ErrStartsWith("ERR task cancelled"));
  EXPECT_THAT(Run({"FRAME.SUMMARY", "t", "price"}), ErrStartsWith("ERR task cancelled"));
  EXPECT_THAT(Run({"FRAME.GROUPBY", "t", "g", "KEYS", "color", "AGG", "count", "id"}),
              ErrStartsWith("ERR task cancelled"));
  EXPECT_THAT(Run({"EXISTS", "g"}), IsInt(0));
  session_.state().kill_requested.store(false);
  EXPECT_THAT(Run({"FRAME.QUANTILE", "t", "price", "0.5"}), IsArrayOfSize(1));
  EXPECT_EQ(engine_.internal_errors(), 0u);
}

// ---- analytics off the I/O thread (docs/frame.md, A1-A8) ----

// A reply sink that collects what the pool hands back, as a connection's would.
class Sink {
 public:
  Session::ReplySink Make() {
    return [this](uint64_t ticket, std::string reply) {
      std::lock_guard<std::mutex> lock(mu_);
      got_.emplace_back(ticket, std::move(reply));
      cv_.notify_all();
    };
  }
  // The next reply handed back; ticket 0 if none came.
  std::pair<uint64_t, std::string> Next() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(15), [&] { return !got_.empty(); })) return {};
    auto r = std::move(got_.front());
    got_.pop_front();
    return r;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<uint64_t, std::string>> got_;
};

// The calls of a command in INFO commandstats ("cmdstat_<name>:calls=N,..."), -1 if absent.
int64_t Calls(Session& s, const std::string& name) {
  const std::string info = CommandTest::Decode(s.Run({"INFO", "commandstats"})).str;
  const std::string key = "cmdstat_" + name + ":calls=";
  const size_t at = info.find(key);
  return at == std::string::npos ? -1 : std::stoll(info.substr(at + key.size()));
}

// A1, A2: with a reply sink the I/O thread only prepares: the command is deferred, its session
// reports it pending (the connection runs nothing more), other sessions of the same thread run
// meanwhile, and the reply comes through the sink; finishing it stores the group-by's frame
// under the worker lock, so the client's next command sees it. Counted once.
TEST_F(FrameCommandsTest, AnalyticsRunOnThePoolAndDeferTheirReply) {
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv), "TYPES", ",,cat,"}), "done");
  Gate gate;
  engine_.analytics().TEST_SetBeforeTask([&] { gate.Wait(); });
  Sink sink;
  Session s(&engine_, 0);
  s.set_reply_sink(sink.Make());
  const std::vector<std::string> cmd = {"FRAME.GROUPBY", "t",   "g",     "KEYS",
                                        "color",         "AGG", "count", "id"};
  std::vector<std::string_view> args(cmd.begin(), cmd.end());
  std::string out;
  EXPECT_FALSE(s.Execute(args, &out));
  EXPECT_EQ(out, "");
  EXPECT_TRUE(s.local_part_pending());
  ASSERT_TRUE(gate.AwaitWaiting(1));
  // The task is on the pool, held: this thread (the same worker) serves another client.
  EXPECT_THAT(Run({"PING"}), IsSimple("PONG"));
  EXPECT_THAT(Run({"EXISTS", "g"}), IsInt(0));
  gate.Open();
  auto [ticket, reply] = sink.Next();
  ASSERT_EQ(ticket, s.last_ticket());
  EXPECT_EQ(s.FinishDeferred(ticket, std::move(reply), nullptr), ":3\r\n");
  EXPECT_FALSE(s.local_part_pending());
  EXPECT_THAT(RunOn(s, {"FRAME.HEAD", "g", "5"}), IsArrayOfSize(4));  // a header, 3 groups
  EXPECT_EQ(Calls(s, "frame.groupby"), 1);
  // A summary and a quantile the same way, in the session's protocol.
  EXPECT_THAT(RunOn(s, {"HELLO", "3"}).type, Reply::Type::kMap);
  for (std::vector<std::string> c :
       {std::vector<std::string>{"FRAME.SUMMARY", "t", "price"},
        std::vector<std::string>{"FRAME.QUANTILE", "t", "price", "0.5"}}) {
    std::vector<std::string_view> v(c.begin(), c.end());
    out.clear();
    ASSERT_FALSE(s.Execute(v, &out));
    auto [t, r] = sink.Next();
    const Reply done = Decode(s.FinishDeferred(t, std::move(r), nullptr));
    EXPECT_EQ(done.type, c[0] == "FRAME.SUMMARY" ? Reply::Type::kMap : Reply::Type::kArray);
  }
  // FRAME.FILTER too: deferred, and its frame stored when its reply is written.
  const std::vector<std::string> filter = {"FRAME.FILTER", "t", "f", "WHERE", "id", ">", "1"};
  std::vector<std::string_view> fargs(filter.begin(), filter.end());
  out.clear();
  EXPECT_FALSE(s.Execute(fargs, &out));
  EXPECT_EQ(out, "");
  EXPECT_TRUE(s.local_part_pending());
  auto [ft, fr] = sink.Next();
  EXPECT_THAT(Run({"EXISTS", "f"}), IsInt(0));
  // Done, its reply not yet written: the result's charge is held meanwhile (it was given back
  // when the task ended, so results waiting for their clients counted nowhere), and handed to
  // the store when the reply is written.
  EXPECT_GT(engine_.reserved_memory(), 0);
  EXPECT_THAT(Decode(s.FinishDeferred(ft, std::move(fr), nullptr)), IsInt(4));
  EXPECT_EQ(engine_.reserved_memory(), 0);
  EXPECT_THAT(Run({"EXISTS", "f"}), IsInt(1));
  EXPECT_EQ(engine_.internal_errors(), 0u);
}

// A3 (revised after review): inside EXEC an analytics task would run with every I/O thread
// stopped, past the pool's bounds and out of CLIENT KILL's reach; they are refused when queued
// (no_multi), and the transaction aborts as with any command refused while queueing.
TEST_F(FrameCommandsTest, AnalyticsAreRefusedInsideMulti) {
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv), "TYPES", ",,cat,"}), "done");
  Sink sink;
  Session s(&engine_, 0);
  s.set_reply_sink(sink.Make());
  auto run = [&](std::vector<std::string> c) {
    std::vector<std::string_view> v(c.begin(), c.end());
    std::string out;
    EXPECT_TRUE(s.Execute(v, &out));
    return Decode(out);
  };
  EXPECT_THAT(run({"MULTI"}), IsOk());
  EXPECT_THAT(run({"FRAME.GROUPBY", "t", "g", "KEYS", "color", "AGG", "sum", "qty"}),
              IsErr("ERR frame.groupby is not allowed in a transaction"));
  EXPECT_THAT(run({"FRAME.QUANTILE", "t", "price", "0.5"}),
              IsErr("ERR frame.quantile is not allowed in a transaction"));
  EXPECT_THAT(run({"FRAME.SUMMARY", "t", "price"}),
              IsErr("ERR frame.summary is not allowed in a transaction"));
  EXPECT_THAT(run({"FRAME.FILTER", "t", "f", "WHERE", "id", ">", "1"}),
              IsErr("ERR frame.filter is not allowed in a transaction"));
  EXPECT_THAT(run({"EXISTS", "g"}), IsSimple("QUEUED"));
  EXPECT_THAT(run({"EXEC"}), ErrStartsWith("EXECABORT"));
  EXPECT_THAT(run({"EXISTS", "g"}), IsInt(0));
  EXPECT_FALSE(s.local_part_pending());
}

// A5: the client leaving sets its task's cancel flag; the task stops and stores nothing.
TEST_F(FrameCommandsTest, AnalyticsOfAClientThatLeftAreCancelled) {
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv), "TYPES", ",,cat,"}), "done");
  Gate gate;
  engine_.analytics().TEST_SetBeforeTask([&] { gate.Wait(); });
  Sink sink;
  std::shared_ptr<ClientState> client;
  {
    Session s(&engine_, 0);
    s.set_reply_sink(sink.Make());
    for (const auto& c : engine_.Clients()) {
      if (c->id == s.id()) client = c;
    }
    const std::vector<std::string> cmd = {"FRAME.GROUPBY", "t",   "g",     "KEYS",
                                          "color",         "AGG", "count", "id"};
    std::vector<std::string_view> args(cmd.begin(), cmd.end());
    std::string out;
    ASSERT_FALSE(s.Execute(args, &out));
    ASSERT_TRUE(gate.AwaitWaiting(1));
    EXPECT_FALSE(client->kill_requested.load());
  }  // the connection closed
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->kill_requested.load());
  gate.Open();
  EXPECT_NE(sink.Next().first, 0u);  // handed back (a connection drops it: it is gone)
  EXPECT_THAT(Run({"EXISTS", "g"}), IsInt(0));
  EXPECT_EQ(engine_.internal_errors(), 0u);
}

// A6: an exception in the task is the command boundary's error reply, counted as internal.
TEST_F(FrameCommandsTest, AnExceptionInAnAnalyticsTaskIsAnErrorReply) {
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv), "TYPES", ",,cat,"}), "done");
  engine_.analytics().TEST_SetBeforeTask([] { throw std::runtime_error("injected"); });
  Sink sink;
  Session s(&engine_, 0);
  s.set_reply_sink(sink.Make());
  const std::vector<std::string> cmd = {"FRAME.SUMMARY", "t", "price"};
  std::vector<std::string_view> args(cmd.begin(), cmd.end());
  std::string out;
  ASSERT_FALSE(s.Execute(args, &out));
  auto [ticket, reply] = sink.Next();
  EXPECT_THAT(Decode(s.FinishDeferred(ticket, std::move(reply), nullptr)),
              IsErr("ERR internal error: injected"));
  EXPECT_EQ(engine_.internal_errors(), 1u);
  engine_.analytics().TEST_SetBeforeTask(nullptr);
  out.clear();
  ASSERT_FALSE(s.Execute(args, &out));  // the next task replies as usual
  auto [t, r] = sink.Next();
  EXPECT_THAT(Decode(s.FinishDeferred(t, std::move(r), nullptr)), IsArrayOfSize(22));
}

// A7: at most `threads` tasks run; past kMaxQueuedAnalytics waiting, a command is refused with
// BUSY (and answered at once, not deferred).
TEST_F(FrameCommandsTest, AnalyticsPastTheQueueBoundAreBusy) {
  ASSERT_EQ(Import({"t", Write("t.csv", kCsv), "TYPES", ",,cat,"}), "done");
  Gate gate;
  engine_.analytics().TEST_SetBeforeTask([&] { gate.Wait(); });
  Sink sink;
  const std::vector<std::string> cmd = {"FRAME.QUANTILE", "t", "price", "0.5"};
  std::vector<std::string_view> args(cmd.begin(), cmd.end());
  const size_t threads = engine_.analytics().threads();
  std::vector<std::unique_ptr<Session>> sessions;
  for (size_t i = 0; i < threads + internal::kMaxQueuedAnalytics; i++) {
    sessions.push_back(std::make_unique<Session>(&engine_, 0));
    sessions.back()->set_reply_sink(sink.Make());
    std::string out;
    ASSERT_FALSE(sessions.back()->Execute(args, &out)) << i;
    if (i + 1 == threads) {
      ASSERT_TRUE(gate.AwaitWaiting(static_cast<int>(threads)));
    }
  }
  Session late(&engine_, 0);
  late.set_reply_sink(sink.Make());
  std::string out;
  EXPECT_TRUE(late.Execute(args, &out));
  EXPECT_THAT(Decode(out), IsErr(internal::kAnalyticsBusyError));
  EXPECT_FALSE(late.local_part_pending());
  gate.Open();
  for (size_t i = 0; i < sessions.size(); i++) EXPECT_NE(sink.Next().first, 0u);
}

// A8: shutdown sets the running tasks' cancel flags, drops the waiting ones and joins.
TEST(AnalyticsPoolTest, ShutdownCancelsAndJoins) {
  internal::AnalyticsPool pool(1, 4);
  auto running = std::make_shared<std::atomic<bool>>(false);
  auto waiting = std::make_shared<std::atomic<bool>>(false);
  std::atomic<bool> started{false}, stopped{false}, ran_waiting{false};
  ASSERT_TRUE(pool.Post(
      [&, running] {
        started = true;
        while (!running->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        stopped = true;
      },
      running));
  ASSERT_TRUE(pool.Post([&] { ran_waiting = true; }, waiting));
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  pool.Shutdown();
  EXPECT_TRUE(stopped);
  EXPECT_TRUE(waiting->load());
  EXPECT_FALSE(ran_waiting);
  EXPECT_FALSE(pool.Post([] {}, nullptr));
}

// The homing rule (frame_value.h, rule 4): chunk k of a frame has one key for all its columns,
// hashed whole (no hash tag, since names refuse braces), so the chunks spread over slots.
TEST(FrameHomingTest, EachChunkIndexHasItsOwnKeyAndSlot) {
  EXPECT_EQ(internal::ChunkKey("sales", 7), "sales#7");
  EXPECT_FALSE(internal::CheckFrameName("a{b").ok());
  EXPECT_FALSE(internal::CheckFrameName("a}b").ok());
  EXPECT_TRUE(internal::CheckFrameName("sales").ok());
  std::set<uint16_t> slots;
  for (uint64_t k = 0; k < 64; k++) {
    const std::string key = internal::ChunkKey("sales", k);
    EXPECT_EQ(key.find_first_of("{}"), std::string::npos);
    slots.insert(cluster::KeySlot(key));
  }
  EXPECT_GT(slots.size(), 50u);  // 64 chunk keys over 16,384 slots: nearly all distinct
}

// Frames live on one node for now: a cluster member refuses every FRAME.* and JOB.* command,
// keyed or not, whichever node routing sends it to.
TEST(FrameClusterTest, ClusterMembersRefuseFramesAndJobs) {
  internal::InProcessCluster cluster({.members = 2});
  ASSERT_TRUE(cluster.WaitFormed());
  Session s(&cluster.engine(0), 0);
  const std::string refused = "ERR frames and jobs are single-node for now";
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"FRAME.LIST"},
                                             {"JOB.LIST"},
                                             {"JOB.STATUS", "1"},
                                             {"FRAME.IMPORT", "a", "/tmp/x.csv"},
                                             {"FRAME.IMPORT", "b", "/tmp/x.csv"},
                                             {"FRAME.SUMMARY", "a", "x"}}) {
    EXPECT_THAT(CommandTest::Decode(s.Run(args)), ErrStartsWith(refused)) << args[0];
  }
}

}  // namespace
}  // namespace floe::server
