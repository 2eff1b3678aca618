// A streamed answer (a frame's CSV) on a real node: its pieces are made off the I/O thread
// (docs/api.md, "Made off the I/O thread"). Downloads end to end: tests/e2e/test_http.py.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "http/http.h"
#include "server/analytics_test_support.h"
#include "server/server.h"

namespace floe::http {
namespace {

// A node with one I/O thread, RESP and HTTP, and the frame t of kCsv.
class StreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/floe_stream_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    csv_ = dir_ + "/t.csv";
    std::ofstream(csv_, std::ios::binary) << server::kCsv;
    wide_csv_ = dir_ + "/w.csv";
    std::ofstream(wide_csv_, std::ios::binary) << "id,s\n1,a\n2," << Wide() << "\n3,c\n";
    server::Config c;
    c.bind = "127.0.0.1";
    c.port = 0;
    c.threads = 1;
    c.import_dir = "/tmp";
    server_ = std::make_unique<server::Server>(c);
    http_ = Attach(*server_, Options{});
    run_ = std::thread([this] { EXPECT_TRUE(server_->Run().ok()); });
    for (int i = 0; i < 2000 && (server_->bound_port() == 0 || http_->bound_port() == 0); i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_NE(http_->bound_port(), 0);
    const int fd = Connect(server_->bound_port());
    ASSERT_NO_FATAL_FAILURE(Import(fd, "t", csv_));
    ASSERT_NO_FATAL_FAILURE(Import(fd, "w", wide_csv_));
  }
  // A line wider than the I/O thread makes itself (kInlineLine, 256 KiB).
  static std::string Wide() { return std::string(300 << 10, 'y'); }
  void Import(int fd, const std::string& name, const std::string& path) {
    Send(fd, "FRAME.IMPORT " + name + " " + path + "\r\n");
    const std::string id = ReadSome(fd);  // ":<job id>\r\n"
    ASSERT_EQ(id[0], ':') << id;
    for (int i = 0; i < 2000; i++) {
      Send(fd, "EXISTS " + name + "\r\n");
      if (ReadSome(fd) == ":1\r\n") return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    FAIL() << "the import did not end";
  }
  // Holds every piece thread (one a core) until gate_ opens.
  void HoldPieceThreads() {
    const int n = static_cast<int>(std::thread::hardware_concurrency());
    for (int i = 0; i < n; i++) {
      ASSERT_TRUE(server_->engine().PostPiece([this] { gate_.Wait(); }));
    }
    ASSERT_TRUE(gate_.AwaitWaiting(n));
  }
  int Download(const std::string& frame) {
    const int fd = Connect(http_->bound_port());
    Send(fd, "GET /api/frames/" + frame + "/csv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    return fd;
  }
  void TearDown() override {
    gate_.Open();
    for (int fd : fds_) close(fd);
    server_->Stop();
    run_.join();
    std::remove(csv_.c_str());
    std::remove(wide_csv_.c_str());
    rmdir(dir_.c_str());
  }
  int Connect(int port) {
    const int fd = server::ConnectLoopback(port);
    fds_.push_back(fd);
    return fd;
  }
  static void Send(int fd, const std::string& bytes) {
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  static std::string ReadSome(int fd) {
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof(buf));
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }
  // Reads until `end` has come (or the peer closed, or the timeout).
  static std::string ReadUntil(int fd, std::string_view end, std::string got = {}) {
    while (got.find(end) == std::string::npos) {
      const std::string more = ReadSome(fd);
      if (more.empty()) break;
      got += more;
    }
    return got;
  }

  std::string dir_, csv_, wide_csv_;
  server::Gate gate_;
  std::unique_ptr<server::Server> server_;
  const FrontEndInfo* http_ = nullptr;
  std::thread run_;
  std::vector<int> fds_;
};

// While the piece threads are held, a download whose next line may be wider than kInlineLine
// gets its headers but none of its body, and another client of the same (only) I/O thread is
// served; once the threads go on, the body comes whole. Made on the I/O thread, the body
// followed the headers at once.
TEST_F(StreamTest, AWideRowIsMadeOffTheIOThread) {
  ASSERT_NO_FATAL_FAILURE(HoldPieceThreads());
  const int download = Download("w");
  const std::string head = ReadUntil(download, "\r\n\r\n");
  ASSERT_NE(head.find("200 OK"), std::string::npos) << head;
  const std::string after_head = head.substr(head.find("\r\n\r\n") + 4);

  const int other = Connect(server_->bound_port());
  Send(other, "PING\r\n");
  EXPECT_EQ(ReadSome(other), "+PONG\r\n");
  char byte;
  EXPECT_EQ(after_head, "");
  EXPECT_EQ(recv(download, &byte, 1, MSG_DONTWAIT), -1);
  EXPECT_EQ(errno, EAGAIN);

  gate_.Open();
  const std::string body = ReadUntil(download, "\r\n0\r\n\r\n", after_head);
  EXPECT_NE(body.find("id,s\r\n"), std::string::npos);
  EXPECT_NE(body.find("2,\"" + Wide() + "\"\r\n"), std::string::npos);
  EXPECT_NE(body.find("3,\"c\"\r\n"), std::string::npos);
  EXPECT_NE(body.find("\r\n0\r\n\r\n"), std::string::npos);
}

// Narrow rows, the common case, are made by the I/O thread (no hand-off per piece): the
// download is whole while every piece thread is held.
TEST_F(StreamTest, NarrowRowsAreMadeOnTheIOThread) {
  ASSERT_NO_FATAL_FAILURE(HoldPieceThreads());
  const std::string body = ReadUntil(Download("t"), "\r\n0\r\n\r\n");
  EXPECT_NE(body.find("5,5.5,\"red\",50"), std::string::npos) << body;
  EXPECT_NE(body.find("\r\n0\r\n\r\n"), std::string::npos);
}

// With the piece threads' queue full, the I/O thread makes the wide piece itself: the download
// is whole all the same.
TEST_F(StreamTest, AFullPieceQueueMakesThePieceOnTheIOThread) {
  ASSERT_NO_FATAL_FAILURE(HoldPieceThreads());
  for (size_t i = 0; i < server::Engine::kMaxQueuedPieces; i++) {
    ASSERT_TRUE(server_->engine().PostPiece([] {}));
  }
  ASSERT_FALSE(server_->engine().PostPiece([] {}));
  const std::string body = ReadUntil(Download("w"), "\r\n0\r\n\r\n");
  EXPECT_NE(body.find("3,\"c\"\r\n"), std::string::npos);
}

// A client that leaves while its piece is away is closed when the piece comes back: its buffers
// stop counting toward used memory, and the node serves on.
TEST_F(StreamTest, AClientThatLeavesWhileItsPieceIsMadeIsLetGo) {
  server::Engine& engine = server_->engine();
  ASSERT_NO_FATAL_FAILURE(HoldPieceThreads());
  const int64_t before = engine.client_buffer_bytes();
  const int download = Download("w");
  ASSERT_NE(ReadUntil(download, "\r\n\r\n").find("200 OK"), std::string::npos);
  close(download);  // with its body unread: the node's next write fails
  fds_.erase(std::find(fds_.begin(), fds_.end(), download));
  gate_.Open();
  bool let_go = false;
  for (int i = 0; i < 2000 && !let_go; i++) {
    let_go = engine.client_buffer_bytes() <= before;
    if (!let_go) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(let_go) << engine.client_buffer_bytes() << " > " << before;
  const int other = Connect(server_->bound_port());
  Send(other, "PING\r\n");
  EXPECT_EQ(ReadSome(other), "+PONG\r\n");
}

}  // namespace
}  // namespace floe::http
