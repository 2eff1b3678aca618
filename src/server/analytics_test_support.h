// What the frames commands' tests share: a small CSV, a gate the analytics pool's tasks
// wait at until the test opens it (the pool's test hook), and a loopback connection.

#ifndef FLOE_SERVER_ANALYTICS_TEST_SUPPORT_H_
#define FLOE_SERVER_ANALYTICS_TEST_SUPPORT_H_

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace floe::server {

inline const char kCsv[] =
    "id,price,color,qty\n"
    "1,1.5,red,10\n"
    "2,2.25,blue,\n"
    "3,,red,30\n"
    "4,4.0,green,40\n"
    "5,5.5,red,50\n";

class Gate {
 public:
  // Until every task that waited has left Wait: the test's reply may come before the task's
  // thread is out (a dropped proxy session answers at once), and the gate is on its stack.
  ~Gate() {
    std::unique_lock<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return inside_ == 0; });
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    waiting_++;
    inside_++;
    cv_.notify_all();
    // Bounded: a task run inline by mistake holds the test's own thread here.
    cv_.wait_for(lock, std::chrono::seconds(15), [&] { return open_; });
    inside_--;
    cv_.notify_all();
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // Until `n` tasks wait at the gate.
  bool AwaitWaiting(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(15), [&] { return waiting_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  int inside_ = 0;
  bool open_ = false;
};

// A TCP connection to 127.0.0.1:port whose reads give up after 10 s, so a reply that never
// comes (the I/O thread held) fails a test rather than hanging it. The caller closes it.
inline int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  timeval limit{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  return fd;
}

}  // namespace floe::server

#endif  // FLOE_SERVER_ANALYTICS_TEST_SUPPORT_H_
