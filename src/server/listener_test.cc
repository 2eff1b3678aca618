// The RESP listener on a real socket: replies and back-pressure (docs/architecture.md, W1-W3).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "server/analytics_test_support.h"
#include "server/command_test.h"
#include "testing/process.h"

namespace floe::server {
namespace {

std::string Command(const std::vector<std::string>& args) {
  std::string bytes = "*" + std::to_string(args.size()) + "\r\n";
  for (const std::string& a : args) bytes += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  return bytes;
}

std::string Bulk(const std::string& v) {
  return "$" + std::to_string(v.size()) + "\r\n" + v + "\r\n";
}

// Writes all of `bytes`; false once a write fails (the node closed the connection, or took
// nothing for the socket's send timeout).
bool WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// `n` bytes, or fewer if the peer closed or nothing came for the socket's receive timeout.
std::string ReadExactly(int fd, size_t n) {
  std::string got(n, '\0');
  size_t have = 0;
  while (have < n) {
    const ssize_t k = read(fd, got.data() + have, n - have);
    if (k <= 0) break;
    have += static_cast<size_t>(k);
  }
  got.resize(have);
  return got;
}

// A node with one I/O thread and its real listener.
class ListenerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Config c;
    c.bind = "127.0.0.1";
    c.port = 0;
    c.threads = 1;
    server_ = std::make_unique<Server>(c);
    run_ = std::thread([this] { EXPECT_TRUE(server_->Run().ok()); });
    ASSERT_TRUE(floe::testing::WaitFor([this] { return server_->bound_port() != 0; }));
  }
  void TearDown() override {
    for (int fd : fds_) close(fd);
    server_->Stop();
    run_.join();
  }
  // A connection whose reads and writes give up after 10 s: a node that stops reading or
  // answering fails the test rather than hanging it.
  int Connect() {
    const int fd = ConnectLoopback(server_->bound_port());
    timeval limit{.tv_sec = 10, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    fds_.push_back(fd);
    return fd;
  }
  std::string Run(const std::vector<std::string>& args) {
    Session s(&server_->engine(), 0);
    return s.Run(args);
  }

  std::unique_ptr<Server> server_;
  std::thread run_;
  std::vector<int> fds_;
};

// W2: a client that writes its whole pipeline before it reads a reply, with large requests and
// large replies. The node stopped reading while a write of its replies was pending, so both
// sides blocked in a write (100 x SET k <200 KB> GET, as redis-py's pipeline sends them).
TEST_F(ListenerTest, APipelineWrittenWholeBeforeItsRepliesAreReadCompletes) {
  const int fd = Connect();
  std::string pipeline;
  std::string want = "$-1\r\n";  // k did not exist
  for (int i = 0; i < 100; i++) {
    const std::string v(200000, static_cast<char>('a' + i % 26));
    const std::string value = std::to_string(i) + v;
    pipeline += Command({"SET", "k", value, "GET"});
    if (i < 99) want += Bulk(value);
  }
  ASSERT_TRUE(WriteAll(fd, pipeline)) << "the node stopped reading a pipeline it had to answer";
  const std::string got = ReadExactly(fd, want.size());
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "replies out of order or wrong";
  EXPECT_EQ(Run({"STRLEN", "k"}), ":200002\r\n");
}

// W3: replies that pile up behind a pending write are bounded by the client's output limit;
// the client is then closed, its buffers are given back, and the node serves the others.
TEST_F(ListenerTest, AClientThatNeverReadsIsClosedAtItsOutputLimit) {
  ASSERT_EQ(Run({"SET", "big", std::string(size_t{1} << 20, 'v')}), "+OK\r\n");
  ASSERT_EQ(Run({"CONFIG", "SET", "client-output-buffer-limit", "normal 4mb 0 0"}), "+OK\r\n");
  const int other = Connect();
  ASSERT_TRUE(WriteAll(other, Command({"PING"})));
  ASSERT_EQ(ReadExactly(other, 7), "+PONG\r\n");
  const int64_t idle = server_->engine().client_buffer_bytes();
  const int greedy = Connect();
  std::string batch;
  for (int i = 0; i < 10000; i++) batch += Command({"GET", "big"});
  int error = 0;  // of the write that failed
  for (int i = 0; i < 200 && error == 0; i++) {
    if (!WriteAll(greedy, batch)) error = errno;
  }
  ASSERT_NE(error, 0) << "a client holding far more than its output limit was not closed";
  EXPECT_NE(error, EAGAIN) << "the node stopped reading instead of closing the client";
  EXPECT_TRUE(floe::testing::WaitFor([&] {
    return server_->engine().client_buffer_bytes() <= idle;
  })) << server_->engine().client_buffer_bytes()
      << " bytes still charged, " << idle << " before";
  ASSERT_TRUE(WriteAll(other, Command({"STRLEN", "big"})));
  EXPECT_EQ(ReadExactly(other, 10), ":1048576\r\n");
}

// W2: a client that sends a pipeline, shuts down its side (as `nc -N` does) and then reads gets
// every reply, and every request it sent runs: the end of its stream, met while a write was in
// flight, closed the connection at once (4 MB of 40 arrived, none of 2,000 SETs ran), and past
// the backlog bound the connection was closed too.
TEST_F(ListenerTest, AClientThatClosesItsSideGetsEveryReply) {
  const std::string v(200000, 'v');
  ASSERT_EQ(Run({"SET", "v", v}), "+OK\r\n");
  const int fd = Connect();
  std::string pipeline, want;
  // 400 replies of 200 KB: more than the backlog bound (64 MiB), past which the connection
  // was closed, losing the rest.
  for (int i = 0; i < 400; i++) {
    pipeline += Command({"GET", "v"});
    want += Bulk(v);
  }
  for (int i = 0; i < 2000; i++) {
    pipeline += Command({"SET", "m" + std::to_string(i), "x"});
    want += "+OK\r\n";
  }
  ASSERT_TRUE(WriteAll(fd, pipeline));
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the node meets the end first
  const std::string got = ReadExactly(fd, want.size() + 1);
  EXPECT_EQ(got.size(), want.size()) << "replies lost (or more than asked)";
  EXPECT_TRUE(got == want) << "replies out of order or wrong";
  EXPECT_EQ(Run({"GET", "m1999"}), "$1\r\nx\r\n");
}

}  // namespace
}  // namespace floe::server
