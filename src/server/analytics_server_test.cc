// The analytics pool on a real node: a listener with one I/O thread, raw RESP clients, and tasks
// held at a gate (docs/frame.md, A1-A8).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "server/analytics_test_support.h"
#include "server/command_test.h"
#include "server/internal/analytics_pool.h"

namespace floe::server {
namespace {

// A node with one I/O thread (a real listener), the frame t of kCsv, and a gate that holds
// its analytics tasks; raw RESP clients.
class AnalyticsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/floe_frame_srv_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    csv_ = dir_ + "/t.csv";
    std::ofstream(csv_, std::ios::binary) << kCsv;
    Config c;
    c.bind = "127.0.0.1";
    c.port = 0;
    c.threads = 1;
    c.import_dir = "/tmp";
    c.timeout = timeout_s_;
    server_ = std::make_unique<Server>(c);
    run_ = std::thread([this] { EXPECT_TRUE(server_->Run().ok()); });
    Session admin(&server_->engine(), 0);
    const Reply id = CommandTest::Decode(admin.Run({"FRAME.IMPORT", "t", csv_, "TYPES", ",,cat,"}));
    ASSERT_EQ(id.type, Reply::Type::kInteger) << id.str;
    for (int i = 0; i < 2000; i++) {
      const std::string st = admin.Run({"JOB.STATUS", std::to_string(id.integer)});
      if (st.find("running") == std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_THAT(CommandTest::Decode(admin.Run({"EXISTS", "t"})), IsInt(1));
    server_->engine().analytics().TEST_SetBeforeTask([this] { gate_.Wait(); });
    for (int i = 0; i < 2000 && server_->bound_port() == 0; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_NE(server_->bound_port(), 0);
  }
  void TearDown() override {
    gate_.Open();  // a failed assertion returned early: the task ends, the server stops
    for (int fd : fds_) close(fd);
    server_->Stop();
    run_.join();
    std::remove(csv_.c_str());
    rmdir(dir_.c_str());
  }
  int Connect() {
    const int fd = ConnectLoopback(server_->bound_port());
    fds_.push_back(fd);
    return fd;
  }
  static void Send(int fd, const std::vector<std::string>& args) {
    std::string bytes = "*" + std::to_string(args.size()) + "\r\n";
    for (const std::string& a : args) bytes += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  // Reads until `n` replies have come, or the peer closed (fewer then).
  static std::vector<Reply> Read(int fd, size_t n) {
    std::string got;
    std::vector<Reply> replies;
    char buf[4096];
    while (replies.size() < n) {
      const ssize_t k = read(fd, buf, sizeof(buf));
      if (k <= 0) break;
      got.append(buf, static_cast<size_t>(k));
      size_t used = 0;
      for (Result<resp::Reply> r = resp::ParseReply(got, &used); r.ok();
           r = resp::ParseReply(got, &used)) {
        replies.push_back(*r);
        got.erase(0, used);
      }
    }
    return replies;
  }

  int64_t timeout_s_ = 0;  // the node's `timeout`
  std::string dir_, csv_;
  Gate gate_;
  std::unique_ptr<Server> server_;
  std::thread run_;
  std::vector<int> fds_;
};

const std::vector<std::string> kGroupBy = {"FRAME.GROUPBY", "t",   "g",     "KEYS",
                                           "color",         "AGG", "count", "id"};

// A1, A2: a pipelined FRAME.HEAD after a FRAME.GROUPBY sees the new frame, and while the
// group-by's task is held another client of the same (only) I/O thread is answered.
TEST_F(AnalyticsServerTest, OtherClientsOfTheThreadAreServedWhileATaskRuns) {
  const int a = Connect();
  const int b = Connect();
  Send(a, kGroupBy);
  Send(a, {"FRAME.HEAD", "g", "5"});
  ASSERT_TRUE(gate_.AwaitWaiting(1));
  Send(b, {"PING"});
  std::vector<Reply> pong = Read(b, 1);
  ASSERT_EQ(pong.size(), 1u);
  EXPECT_THAT(pong[0], IsSimple("PONG"));  // while a's task is held
  gate_.Open();
  std::vector<Reply> got = Read(a, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_THAT(got[0], IsInt(3));
  EXPECT_THAT(got[1], IsArrayOfSize(4));  // the frame the group-by stored: a header, 3 groups
  EXPECT_EQ(server_->engine().internal_errors(), 0u);
}

// commandstats time the whole analytics command, its time on the pool included; they timed
// only the step that wrote the reply (microseconds for a group-by that ran for seconds).
TEST_F(AnalyticsServerTest, CommandstatsTimeTheWholeCommand) {
  const int a = Connect();
  const int b = Connect();
  Send(a, kGroupBy);
  ASSERT_TRUE(gate_.AwaitWaiting(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // held on the pool this long
  gate_.Open();
  ASSERT_EQ(Read(a, 1).size(), 1u);
  Send(b, {"INFO", "commandstats"});
  std::vector<Reply> info = Read(b, 1);
  ASSERT_EQ(info.size(), 1u);
  const std::string& text = info[0].str;
  const size_t at = text.find("cmdstat_frame.groupby:calls=1,usec=");
  ASSERT_NE(at, std::string::npos) << text;
  const long long usec =
      std::atoll(text.c_str() + at + std::strlen("cmdstat_frame.groupby:calls=1,usec="));
  EXPECT_GE(usec, 300000) << text;
}

// A5: CLIENT KILL of a client whose task runs cancels the task: its connection closes with no
// reply, and the group-by stores nothing.
TEST_F(AnalyticsServerTest, ClientKillCancelsTheTask) {
  const int a = Connect();
  const int b = Connect();
  Send(a, {"CLIENT", "ID"});
  std::vector<Reply> id = Read(a, 1);
  ASSERT_EQ(id.size(), 1u);
  Send(a, kGroupBy);
  ASSERT_TRUE(gate_.AwaitWaiting(1));
  Send(b, {"CLIENT", "KILL", "ID", std::to_string(id[0].integer)});
  std::vector<Reply> killed = Read(b, 1);
  ASSERT_EQ(killed.size(), 1u);
  EXPECT_THAT(killed[0], IsInt(1));
  gate_.Open();
  EXPECT_EQ(Read(a, 1).size(), 0u);  // closed, no reply
  // The task ends (its client's kill flag is its cancel flag) and its reply is dropped: the
  // frame, stored only as the reply is finished, is not.
  for (int i = 0; i < 2000 && server_->engine().analytics().busy() > 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Send(b, {"EXISTS", "g"});
  std::vector<Reply> exists = Read(b, 1);
  ASSERT_EQ(exists.size(), 1u);
  EXPECT_THAT(exists[0], IsInt(0));
  EXPECT_EQ(server_->engine().internal_errors(), 0u);
}

// A5: a client that closes its connection while its task runs is noticed at once (though the
// connection reads nothing meanwhile): the task's cancel flag is set.
TEST_F(AnalyticsServerTest, AClientThatClosesCancelsItsTask) {
  const int a = Connect();
  Send(a, kGroupBy);
  ASSERT_TRUE(gate_.AwaitWaiting(1));
  std::vector<std::shared_ptr<ClientState>> clients = server_->engine().Clients();
  ASSERT_EQ(clients.size(), 1u);
  EXPECT_FALSE(clients[0]->kill_requested.load());
  close(a);
  fds_.clear();
  for (int i = 0; i < 2000 && !clients[0]->kill_requested.load(); i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(clients[0]->kill_requested.load());
  EXPECT_TRUE(server_->engine().Clients().empty());
}

// Regression: when handing a task's reply back to the client's thread failed (out of memory),
// the connection waited for it until its client left. Now the client is closed, as CLIENT KILL
// closes it, and the failure is counted (A6).
TEST_F(AnalyticsServerTest, AFailedHandBackClosesTheConnection) {
  const int a = Connect();
  server_->engine().analytics().TEST_FailNextHandBacks(1);
  Send(a, kGroupBy);
  ASSERT_TRUE(gate_.AwaitWaiting(1));
  gate_.Open();
  char byte = 0;
  errno = 0;
  EXPECT_EQ(read(a, &byte, 1), 0) << "not closed (errno " << errno << ")";  // 0: the peer closed
  for (int i = 0; i < 2000 && server_->engine().analytics().busy() > 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the task counts, then ends
  }
  EXPECT_EQ(server_->engine().internal_errors(), 1u);
  // The node serves on.
  const int b = Connect();
  Send(b, {"PING"});
  std::vector<Reply> pong = Read(b, 1);
  ASSERT_EQ(pong.size(), 1u);
  EXPECT_THAT(pong[0], IsSimple("PONG"));
}

// Regression: the idle `timeout` closed a client that waited for its analytics reply (it had
// sent nothing since the command), cancelling the task. A client awaiting a reply is not idle.
class AnalyticsServerTimeoutTest : public AnalyticsServerTest {
 protected:
  AnalyticsServerTimeoutTest() { timeout_s_ = 2; }
};

TEST_F(AnalyticsServerTimeoutTest, AClientAwaitingItsReplyIsNotIdle) {
  const int a = Connect();
  Send(a, kGroupBy);
  ASSERT_TRUE(gate_.AwaitWaiting(1));
  // Past the timeout, and past the once-a-second idle check after it (the behaviour checked is
  // that the connection survives, whatever the exact moment of the check).
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  gate_.Open();
  std::vector<Reply> got = Read(a, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_THAT(got[0], IsInt(3));
  // The reply counts as an interaction (it did not: the connection, idle since the command was
  // sent, was closed by the next idle check). 1.2 s later, with an idle check in between, it
  // is still open.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  Send(a, {"PING"});
  got = Read(a, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_THAT(got[0], IsSimple("PONG"));
}

}  // namespace
}  // namespace floe::server
