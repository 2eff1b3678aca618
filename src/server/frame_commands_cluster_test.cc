// The frame commands in a cluster (docs/frames_cluster.md): FRAME.IMPORT, FRAME.INFO,
// FRAME.LIST, FRAME.EXPORT, FRAME.HEAD, FRAME.DROP and JOB.* through any member (D5, D7, D10,
// D11).

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "server/analytics_test_support.h"
#include "server/internal/chunk_store.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/command.h"
#include "server/internal/frame_cluster.h"
#include "server/internal/frame_testing.h"
#include "server/internal/frame_value.h"
#include "server/server.h"
#include "store/internal/epoch.h"

namespace floe::server::internal {
namespace {

// ---- The frame commands in a cluster, the refusal lifted for the test ----

// Three members importing from one directory (as every member of a real cluster should see it,
// D5), with FRAME.* and JOB.* let through (TEST_FramesInCluster).
class FrameCommandsInClusterTest : public ::testing::Test {
 protected:
  static InProcessClusterOptions Options() {
    InProcessClusterOptions o;
    o.base.import_dir = "/tmp";
    o.base.export_dir = "/tmp";
    return o;
  }
  FrameCommandsInClusterTest() : cluster_(Options()) {}
  void SetUp() override {
    TEST_FramesInCluster().store(true);
    ASSERT_TRUE(cluster_.WaitFormed());
    char dir[] = "/tmp/floe_frames_cluster_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    TEST_FramesInCluster().store(false);
    std::filesystem::remove_all(dir_);
  }
  // A directory of `files` CSV files of 40 rows each (x: the row's number, c: a level): each
  // file is at least one chunk.
  std::string WriteCsvDir(const std::string& name, int files) {
    const std::string path = dir_ + "/" + name;
    std::filesystem::create_directory(path);
    int row = 0;
    for (int f = 0; f < files; f++) {
      std::ofstream out(path + "/part" + std::to_string(10 + f) + ".csv");
      out << "x,c\n";
      for (int r = 0; r < 40; r++, row++) out << row << "," << (row % 3 == 0 ? "a" : "b") << "\n";
    }
    return path;
  }
  // The job's final state through client `via`: JOB.STATUS until it no longer runs.
  std::string WaitJob(size_t via, const std::string& reply) {
    EXPECT_TRUE(reply.starts_with(":")) << reply;
    const std::string id = reply.substr(1, reply.find('\r') - 1);
    Session& c = cluster_.client(via);
    std::string status;
    for (int i = 0; i < 4000; i++) {
      status = c.Run({"JOB.STATUS", id});
      if (status.find("\r\nrunning\r\n") == std::string::npos) return status;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "job " << id << " did not finish: " << status;
    return status;
  }
  int64_t ChunksEverywhere() {
    int64_t n = 0;
    for (size_t i = 0; i < 3; i++) n += cluster_.node(i).chunks().chunks();
    return n;
  }
  bool NoChunksEventually() {
    store::internal::EpochDomain::Global().Barrier();  // a removed header's cell is freed
    for (int t = 0; t < 5000; t++) {
      if (ChunksEverywhere() == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  ClientCluster cluster_;
  std::string dir_;
};

std::string Bulk(const std::string& s) {
  return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
}

// An integer field of a RESP2 map reply (JOB.STATUS, FRAME.INFO): the one after `$n\r\nname\r\n`.
int64_t IntField(const std::string& reply, const std::string& name) {
  const std::string key = Bulk(name) + ":";
  const size_t at = reply.find(key);
  EXPECT_NE(at, std::string::npos) << name << " in " << reply;
  return at == std::string::npos ? -1 : std::stoll(reply.substr(at + key.size()));
}

// D5, D7, D10, D11: FRAME.IMPORT through any member runs at the name's home, whose job (its id
// naming that member) puts the chunks at their homes and then the header; JOB.STATUS follows it
// through any member; FRAME.INFO answers from the header, FRAME.LIST through any member finds it,
// FRAME.DROP drops the header and every chunk.
TEST_F(FrameCommandsInClusterTest, AnImportPutsItsChunksThenItsHeaderAtTheNamesHome) {
  const std::string name = cluster_.KeyAt(1, "imp");
  const std::string path = WriteCsvDir("six", 6);
  Session& c0 = cluster_.client(0);
  const std::string started = c0.Run({"FRAME.IMPORT", name, path});
  ASSERT_TRUE(started.starts_with(":")) << started;
  const uint64_t job_id = std::stoull(started.substr(1));
  EXPECT_EQ(job::Registry::MemberOf(job_id), cluster_.node(1).self());
  const std::string status = WaitJob(2, started);
  EXPECT_NE(status.find("\r\ndone\r\n"), std::string::npos) << status;
  EXPECT_NE(status.find("240 rows"), std::string::npos) << status;
  // Progress: the parse (the input's bytes), then the chunks put (the frame's compressed bytes).
  const std::string first_info = cluster_.client(1).Run({"FRAME.INFO", name});
  EXPECT_EQ(IntField(status, "bytes_total"), IntField(status, "bytes_done"));
  int64_t input = 0;
  for (const auto& e : std::filesystem::directory_iterator(path)) {
    input += static_cast<int64_t>(e.file_size());
  }
  EXPECT_EQ(IntField(status, "bytes_total"), input + IntField(first_info, "compressed_bytes"));

  // The chunks are spread over the members, none in a keyspace; the header is at the name.
  const int64_t chunks = ChunksEverywhere();
  EXPECT_GE(chunks, 6);
  for (size_t i = 0; i < 3; i++) EXPECT_GT(cluster_.node(i).chunks().chunks(), 0) << i;
  EXPECT_EQ(cluster_.client(2).Run({"KEYS", "*"}), "*1\r\n" + Bulk(name));
  for (size_t i = 0; i < 3; i++) {
    const std::string info = cluster_.client(i).Run({"FRAME.INFO", name});
    EXPECT_TRUE(info.starts_with(
        "*14\r\n$4\r\nname\r\n" + Bulk(name) + "$4\r\nrows\r\n:240\r\n" +
        "$7\r\ncolumns\r\n:2\r\n$6\r\nchunks\r\n:" + std::to_string(chunks) + "\r\n"))
        << i << ": " << info;
    EXPECT_NE(info.find("$4\r\ntype\r\n$11\r\ncategorical\r\n$2\r\nna\r\n:0\r\n$6\r\nlevels\r\n:2"),
              std::string::npos)
        << info;
    EXPECT_EQ(cluster_.client(i).Run({"FRAME.LIST"}), "*1\r\n" + Bulk(name)) << i;
  }
  // JOB.LIST through any member shows the job, which ran at member 1 only.
  for (size_t i = 0; i < 3; i++) {
    const std::string list = cluster_.client(i).Run({"JOB.LIST"});
    EXPECT_TRUE(list.starts_with("*1\r\n*5\r\n:" + std::to_string(job_id) + "\r\n")) << list;
  }

  // Again without REPLACE: refused at the home; with it, the old chunks go.
  EXPECT_EQ(c0.Run({"FRAME.IMPORT", name, path}), std::string("-") + kFrameTargetExists + "\r\n");
  const std::string again = WaitJob(0, c0.Run({"FRAME.IMPORT", name, path, "REPLACE"}));
  EXPECT_NE(again.find("\r\ndone\r\n"), std::string::npos) << again;
  store::internal::EpochDomain::Global().Barrier();  // the replaced header's cell is freed
  bool replaced = false;
  for (int t = 0; t < 5000 && !replaced; t++) {
    replaced = ChunksEverywhere() == chunks;
    if (!replaced) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(replaced) << ChunksEverywhere();
  EXPECT_EQ(InfoFigure(cluster_.engine(1), "frames"), 1u);

  EXPECT_EQ(cluster_.client(2).Run({"FRAME.DROP", name}), ":1\r\n");
  EXPECT_EQ(cluster_.client(2).Run({"FRAME.LIST"}), "*0\r\n");
  EXPECT_EQ(cluster_.client(0).Run({"FRAME.INFO", name}), "-ERR no such frame\r\n");
  EXPECT_TRUE(NoChunksEventually());
}

// D9, D5: an import whose put meets a dead member fails the job with the reason, stores no
// header, and drops the chunks it put; the id's registration ends with it.
TEST_F(FrameCommandsInClusterTest, AnImportThatCannotPutFailsAndLeavesNothing) {
  const std::string name = cluster_.KeyAt(0, "imp");
  const std::string path = WriteCsvDir("twelve", 12);
  cluster_.Kill(2);
  Session& c1 = cluster_.client(1);
  const std::string status = WaitJob(1, c1.Run({"FRAME.IMPORT", name, path}));
  EXPECT_NE(status.find("\r\nfailed\r\n"), std::string::npos) << status;
  EXPECT_NE(status.find("import of '"), std::string::npos) << status;
  EXPECT_EQ(c1.Run({"EXISTS", name}), ":0\r\n");
  bool empty = false;
  for (int t = 0; t < 5000 && !empty; t++) {
    empty = cluster_.node(0).chunks().chunks() == 0 && cluster_.node(1).chunks().chunks() == 0;
    if (!empty) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(empty);
  MutexLock lock(&cluster_.engine(0).frame_totals()->ids_mu);
  EXPECT_TRUE(cluster_.engine(0).frame_totals()->importing_ids.empty());
}

// D7, D9: FRAME.EXPORT of a cluster frame through another member writes every chunk's rows in
// order, fetched from their homes; with a member holding chunks dead, the job fails with the
// unreachable member's error and leaves no file.
TEST_F(FrameCommandsInClusterTest, ExportFetchesTheChunksInOrder) {
  const std::string name = cluster_.KeyAt(1, "exp");
  const std::string path = WriteCsvDir("seven", 7);
  const std::string imported = WaitJob(0, cluster_.client(0).Run({"FRAME.IMPORT", name, path}));
  ASSERT_NE(imported.find("\r\ndone\r\n"), std::string::npos) << imported;
  ASSERT_GT(cluster_.node(2).chunks().chunks(), 0);
  std::string expected = "x,c\r\n";  // text quoted, as CsvWriter writes it
  for (int row = 0; row < 7 * 40; row++) {
    expected += std::to_string(row) + "," + (row % 3 == 0 ? "\"a\"" : "\"b\"") + "\r\n";
  }
  const std::string out = dir_ + "/out.csv";
  // (Through members 0 and 1: a client of member 2 would outlive its engine, killed below.)
  const std::string exported = WaitJob(1, cluster_.client(0).Run({"FRAME.EXPORT", name, out}));
  EXPECT_NE(exported.find("\r\ndone\r\n"), std::string::npos) << exported;
  EXPECT_NE(exported.find("280 rows, 2 columns"), std::string::npos) << exported;
  std::string written;
  if (FILE* in = std::fopen(out.c_str(), "rb"); in != nullptr) {
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof(buf), in)) > 0;) written.append(buf, n);
    std::fclose(in);
  }
  EXPECT_EQ(written, expected);

  cluster_.Kill(2);
  const std::string failed =
      WaitJob(0, cluster_.client(0).Run({"FRAME.EXPORT", name, dir_ + "/lost.csv"}));
  EXPECT_NE(failed.find("\r\nfailed\r\n"), std::string::npos) << failed;
  EXPECT_NE(failed.find("CLUSTERDOWN The node 127.0.0.1:" +
                        std::to_string(cluster_.cluster_port(2)) + " is unreachable"),
            std::string::npos)
      << failed;
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);  // out.csv alone: no lost.csv, no temporary file
}

// D7: FRAME.HEAD of a cluster frame through any member (at the home: on the analytics pool, or
// in the proxy session of another member's client) fetches the first chunks from their homes.
TEST_F(FrameCommandsInClusterTest, HeadFetchesTheFirstChunks) {
  const std::string name = cluster_.KeyAt(1, "head");
  const std::string path = WriteCsvDir("three", 3);
  const std::string imported = WaitJob(0, cluster_.client(0).Run({"FRAME.IMPORT", name, path}));
  ASSERT_NE(imported.find("\r\ndone\r\n"), std::string::npos) << imported;
  auto head = [](int rows) {
    std::string out = "*" + std::to_string(rows + 1) + "\r\n*2\r\n" + Bulk("x") + Bulk("c");
    for (int row = 0; row < rows; row++) {
      out += "*2\r\n" + Bulk(std::to_string(row)) + Bulk(row % 3 == 0 ? "a" : "b");
    }
    return out;
  };
  for (size_t i = 0; i < 3; i++) {
    Session& c = cluster_.client(i);
    EXPECT_EQ(c.Run({"FRAME.HEAD", name, "50"}), head(50)) << i;  // two chunks of 40 rows
    EXPECT_EQ(c.Run({"FRAME.HEAD", name, "0"}), head(0)) << i;
    EXPECT_EQ(c.Run({"FRAME.HEAD", name, "1000"}), head(120)) << i;
    EXPECT_EQ(c.Run({"FRAME.HEAD", name, "1001"}), "-ERR n must be between 0 and 1000\r\n");
  }
}

// D9: FRAME.HEAD of a cluster frame with a chunk on a member that does not answer fails with
// D9's text as it is (it was prefixed "ERR ": CLUSTERDOWN is no code the reply writer knew).
// Through the home itself: a client of another member would see its own forward's deadline,
// which is the fetch's, naming the home.
TEST_F(FrameCommandsInClusterTest, HeadOfAFrameWithAChunkOnADeadMemberIsClusterdown) {
  const std::string name = cluster_.KeyAt(1, "dead");
  const std::string path = WriteCsvDir("nine", 9);
  const std::string imported = WaitJob(0, cluster_.client(0).Run({"FRAME.IMPORT", name, path}));
  ASSERT_NE(imported.find("\r\ndone\r\n"), std::string::npos) << imported;
  ASSERT_GT(cluster_.node(2).chunks().chunks(), 0);
  cluster_.Kill(2);
  const std::string head = cluster_.client(1).Run({"FRAME.HEAD", name, "1000"});
  EXPECT_TRUE(head.starts_with("-CLUSTERDOWN The node 127.0.0.1:" +
                               std::to_string(cluster_.cluster_port(2)) + " is unreachable ("))
      << head;
}

// Proxy sessions defer their replies (cluster.md, proxy sessions; D7): while a FRAME.HEAD
// forwarded to its frame's home waits there (its analytics task held at the pool's gate),
// neither the RPC handler thread that received it nor the proxy worker lock is held, so another
// client's command forwarded to that member is answered (it waited for the worker lock, and
// its node gave up at cluster-node-timeout, CLUSTERDOWN); the FRAME.HEAD is answered after.
TEST_F(FrameCommandsInClusterTest, AWaitingProxySessionHoldsNoOtherSession) {
  const std::string name = cluster_.KeyAt(1, "held");
  const std::string path = WriteCsvDir("two", 2);
  const std::string imported = WaitJob(0, cluster_.client(0).Run({"FRAME.IMPORT", name, path}));
  ASSERT_NE(imported.find("\r\ndone\r\n"), std::string::npos) << imported;
  const std::string key = cluster_.KeyAt(1, "plain");
  Gate gate;
  cluster_.engine(1).analytics().TEST_SetBeforeTask([&gate] { gate.Wait(); });
  Session& heads = cluster_.client(0);
  Session& sets = cluster_.client(2);
  std::string head;
  std::thread waiting([&] { head = heads.Run({"FRAME.HEAD", name, "1"}); });
  const bool held = gate.AwaitWaiting(1);
  const std::string set = held ? sets.Run({"SET", key, "v"}) : std::string();
  gate.Open();
  waiting.join();
  cluster_.engine(1).analytics().TEST_SetBeforeTask(nullptr);
  ASSERT_TRUE(held);
  EXPECT_EQ(set, "+OK\r\n");
  EXPECT_EQ(head, "*2\r\n*2\r\n" + Bulk("x") + Bulk("c") + "*2\r\n" + Bulk("0") + Bulk("a"));
  EXPECT_EQ(cluster_.client(1).Run({"GET", key}), Bulk("v"));
  // The proxy session's later requests run as before.
  EXPECT_EQ(heads.Run({"FRAME.HEAD", name, "0"}), "*1\r\n*2\r\n" + Bulk("x") + Bulk("c"));
}

// A proxy session dropped (CLIENT KILL, a CLOSE, a restart's purge) while its request is
// parked answers that request with an error at once: it was left unanswered, and its client
// got CLUSTERDOWN only at cluster-node-timeout.
TEST_F(FrameCommandsInClusterTest, ADroppedParkedProxyAnswersItsRequest) {
  const std::string name = cluster_.KeyAt(1, "held");
  const std::string path = WriteCsvDir("two", 2);
  const std::string imported = WaitJob(0, cluster_.client(0).Run({"FRAME.IMPORT", name, path}));
  ASSERT_NE(imported.find("\r\ndone\r\n"), std::string::npos) << imported;
  Gate gate;
  cluster_.engine(1).analytics().TEST_SetBeforeTask([&gate] { gate.Wait(); });
  Session& heads = cluster_.client(0);
  std::string head;
  std::thread waiting([&] { head = heads.Run({"FRAME.HEAD", name, "1"}); });
  const bool held = gate.AwaitWaiting(1);
  // Parked, not only posted: a drop while the proxy's thread had not parked it yet raced the
  // request's own reply (seen under TSan).
  bool parked = false;
  for (int i = 0; i < 2000 && held && !parked; i++) {
    parked = cluster_.node(1).TEST_ParkedProxies() > 0;
    if (!parked) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  cluster_.node(1).TEST_DropProxySessions();
  gate.Open();
  waiting.join();
  cluster_.engine(1).analytics().TEST_SetBeforeTask(nullptr);
  ASSERT_TRUE(held);
  ASSERT_TRUE(parked);
  EXPECT_EQ(head,
            "-ERR the client's session at the key's home was closed before the command ran\r\n");
}

// D11: JOB.STATUS and JOB.CANCEL run at the member the id names, through any member; an id
// naming no member is looked up here.
TEST_F(FrameCommandsInClusterTest, JobsAreFollowedThroughAnyMember) {
  // On the heap, held by the job: its thread may still be reading it when this test returns
  // (ThreadSanitizer saw the read race the stack's reuse).
  auto release = std::make_shared<std::atomic<bool>>(false);
  Result<uint64_t> id =
      cluster_.engine(2).jobs().Start("test", "waits", [release](job::Context& j) {
        while (!release->load() && !j.cancelled())
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return j.cancelled() ? Status::Cancelled("cancelled by JOB.CANCEL") : Status::OK();
      });
  ASSERT_TRUE(id.ok());
  const std::string sid = std::to_string(*id);
  for (size_t i = 0; i < 3; i++) {
    const std::string st = cluster_.client(i).Run({"JOB.STATUS", sid});
    EXPECT_TRUE(st.starts_with("*26\r\n$2\r\nid\r\n:" + sid + "\r\n")) << i << ": " << st;
    EXPECT_NE(st.find("\r\nrunning\r\n"), std::string::npos) << st;
  }
  EXPECT_EQ(cluster_.client(0).Run({"JOB.CANCEL", sid}), "+OK\r\n");
  const std::string st = WaitJob(1, ":" + sid + "\r\n");
  EXPECT_NE(st.find("\r\ncancelled\r\n"), std::string::npos) << st;
  EXPECT_EQ(cluster_.client(1).Run({"JOB.CANCEL", sid}),
            "-ERR job " + sid + " already finished\r\n");
  // Another id of member 2's, and an id naming no member: no such job.
  EXPECT_EQ(cluster_.client(0).Run({"JOB.STATUS", std::to_string(*id + 1)}),
            "-ERR no such job\r\n");
  EXPECT_EQ(cluster_.client(0).Run({"JOB.STATUS", std::to_string((uint64_t{999} << 32) + 1)}),
            "-ERR no such job\r\n");
  EXPECT_EQ(cluster_.client(0).Run({"JOB.STATUS", "x"}), "-ERR a job id is a positive integer\r\n");

  // JOB.LIST joins every member's jobs in the client's protocol: RESP3's doubles stay doubles.
  Result<uint64_t> other =
      cluster_.engine(0).jobs().Start("test", "", [](job::Context&) { return Status::OK(); });
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(cluster_.engine(0).jobs().TEST_Wait(*other).ok());
  Session& c = cluster_.client(1);
  c.Run({"HELLO", "3"});
  const std::string list = c.Run({"JOB.LIST"});
  size_t used = 0;
  Result<resp::Reply> r = resp::ParseReply(list, &used);
  ASSERT_TRUE(r.ok()) << list;
  EXPECT_EQ(used, list.size());
  ASSERT_EQ(r->elements.size(), 2u) << list;
  std::set<int64_t> ids;
  for (const resp::Reply& j : r->elements) {
    ASSERT_EQ(j.elements.size(), 5u) << list;
    ids.insert(j.elements[0].integer);
    EXPECT_EQ(j.elements[3].type, resp::Reply::Type::kDouble) << list;
  }
  EXPECT_EQ(ids, (std::set<int64_t>{static_cast<int64_t>(*id), static_cast<int64_t>(*other)}));
}

}  // namespace
}  // namespace floe::server::internal
