// What a TCP frame may make a member hold before it is authenticated (docs/rpc.md, "Limits"):
// the transport's buffer grows with the bytes that came, a frame is admitted by its header's
// sender before its body is read (net::Transport::SetAdmission, set by the endpoint), and
// incoming connections are bounded (net::TransportOptions::max_incoming).

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "net/net.h"
#include "rpc/rpc.h"
#include "testing/process.h"
#include "wire/wire.h"

namespace floe::rpc {
namespace {

using floe::testing::WaitFor;

// One transport on 127.0.0.1 (node 1, peer 2 at a port nobody listens on).
struct OneTransport {
  explicit OneTransport(size_t max_incoming = 4096) {
    net::TransportOptions o;
    o.self = 1;
    o.port = port;
    o.peers = {{2, "127.0.0.1", floe::testing::FreePort("127.0.0.1")}};
    o.max_incoming = max_incoming;
    auto started = net::UdpTcpTransport::Start(loop, o);
    if (started.ok()) t = std::move(started).value();
  }
  uint16_t port = floe::testing::FreePort("127.0.0.1");
  net::AsioLoop loop;
  std::unique_ptr<net::UdpTcpTransport> t;
};

int ConnectTo(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0);
  return fd;
}

void PutLe32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; i++) out->push_back(static_cast<char>(v >> (8 * i)));
}

// A whole TCP frame: its length, the message, the message's CRC32C.
std::string Frame(const std::string& message) {
  std::string frame;
  PutLe32(&frame, static_cast<uint32_t>(message.size()));
  frame += message;
  PutLe32(&frame, wire::Crc32c(message));
  return frame;
}

// Whether the peer closed `fd` (a read returns 0 or an error within the wait).
bool ClosedByPeer(int fd) {
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char c;
  return recv(fd, &c, 1, 0) <= 0;
}

// The process's virtual size in bytes (/proc/self/status VmSize).
uint64_t VirtualBytes() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  uint64_t kib = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "VmSize: %lu kB", &kib) == 1) break;
  }
  std::fclose(f);
  return kib * 1024;
}

// Anyone who reaches the cluster port may announce a TCP frame of up to max_message (1 GiB):
// the transport reserved that much at once from the 4-byte length, before a byte of it came,
// so eight connections that announce and send nothing held 8 GiB of address space. The buffer
// now grows with the bytes that came.
TEST(RpcAdmissionTest, AnAnnouncedTcpFrameHoldsNoMemoryUntilItsBytesCome) {
  OneTransport one;
  ASSERT_NE(one.t, nullptr);
  const uint64_t before = VirtualBytes();
  std::vector<int> announcers;
  for (int i = 0; i < 8; i++) {
    announcers.push_back(ConnectTo(one.port));
    std::string length;
    PutLe32(&length, (1u << 30) - 1);
    ASSERT_EQ(send(announcers.back(), length.data(), length.size(), 0), 4);
  }
  // A whole small frame after them: once it is in, the transport has read every announcement.
  const int whole = ConnectTo(one.port);
  const std::string frame = Frame("a small frame");
  ASSERT_EQ(send(whole, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
  ASSERT_TRUE(WaitFor([&] { return one.t->stats().tcp_received.load() >= 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the others' reads, if later
  EXPECT_LT(VirtualBytes() - before, uint64_t{1} << 30)
      << "eight announced frames held " << (VirtualBytes() - before) << " bytes";
  for (int fd : announcers) close(fd);
  close(whole);
}

// A frame is read past its head only if the admission allows its length: a refused one is
// dropped with its connection, before its body; an allowed one arrives; a frame shorter than
// the head is not asked about.
TEST(RpcAdmissionTest, AFrameIsReadPastItsHeadOnlyIfAdmitted) {
  OneTransport one;
  ASSERT_NE(one.t, nullptr);
  one.t->SetAdmission(
      16, [](std::string_view head) -> size_t { return head[0] == 'p' ? size_t{1} << 20 : 64; });
  const int refused = ConnectTo(one.port);
  std::string big;
  PutLe32(&big, 100'000);
  big += std::string(16, 'q');  // the head only: the body never comes
  ASSERT_EQ(send(refused, big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
  EXPECT_TRUE(ClosedByPeer(refused));
  EXPECT_EQ(one.t->stats().refused_frames.load(), 1u);
  close(refused);

  const int allowed = ConnectTo(one.port);
  for (const std::string& message :
       {std::string(100'000, 'p'), std::string(40, 'q'), std::string("short")}) {
    const std::string frame = Frame(message);
    ASSERT_EQ(send(allowed, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
  }
  EXPECT_TRUE(WaitFor([&] { return one.t->stats().tcp_received.load() == 3; }));
  EXPECT_EQ(one.t->stats().refused_frames.load(), 1u);
  close(allowed);
}

// Past max_incoming open connections, one more is closed as it is accepted.
TEST(RpcAdmissionTest, IncomingConnectionsAreBounded) {
  OneTransport one(/*max_incoming=*/2);
  ASSERT_NE(one.t, nullptr);
  const int a = ConnectTo(one.port), b = ConnectTo(one.port);
  // Each counted once accepted: a frame on each.
  for (int fd : {a, b}) {
    const std::string frame = Frame("hello");
    ASSERT_EQ(send(fd, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
  }
  ASSERT_TRUE(WaitFor([&] { return one.t->stats().tcp_received.load() == 2; }));
  const int c = ConnectTo(one.port);
  EXPECT_TRUE(ClosedByPeer(c));
  EXPECT_EQ(one.t->stats().refused_connections.load(), 1u);
  close(c);
  // One closed, a place again.
  close(a);
  const int d = ConnectTo(one.port);
  const std::string frame = Frame("again");
  bool in = false;
  for (int attempt = 0; attempt < 50 && !in; attempt++) {
    (void)send(d, frame.data(), frame.size(), MSG_NOSIGNAL);
    in = WaitFor([&] { return one.t->stats().tcp_received.load() == 3; },
                 std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(in);
  close(b);
  close(d);
}

// The endpoint admits a peer's frame to it up to max_message, the stranger's up to 4 KiB (when
// it takes a stranger's calls), and nobody else's: an unknown sender's announced megabyte is
// refused on its header before its body is read.
TEST(RpcAdmissionTest, TheEndpointAdmitsOnlyItsPeersAndTheStranger) {
  OneTransport one;
  ASSERT_NE(one.t, nullptr);
  Options o;
  o.peers = {2};
  Endpoint endpoint(*one.t, o);
  endpoint.Start();
  auto head = [](uint32_t sender, uint32_t receiver) {
    std::string h(8, '\0');
    PutLe32(&h, sender);
    PutLe32(&h, receiver);
    return h;
  };
  auto announce = [&](const std::string& h, uint32_t length) {
    const int fd = ConnectTo(one.port);
    std::string bytes;
    PutLe32(&bytes, length);
    bytes += h;
    EXPECT_EQ(send(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    return fd;
  };
  const int unknown = announce(head(9, 1), 1 << 20);
  EXPECT_TRUE(ClosedByPeer(unknown));
  EXPECT_EQ(one.t->stats().refused_frames.load(), 1u);
  const int to_another = announce(head(2, 7), 1 << 20);
  EXPECT_TRUE(ClosedByPeer(to_another));
  EXPECT_EQ(one.t->stats().refused_frames.load(), 2u);
  const int stranger = announce(head(kStrangerId, kAnyNodeId), 5000);  // no stranger_method
  EXPECT_TRUE(ClosedByPeer(stranger));
  EXPECT_EQ(one.t->stats().refused_frames.load(), 3u);
  // A peer's announced megabyte is read on (the connection stays open while it waits).
  const int peer = announce(head(2, 1), 1 << 20);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(one.t->stats().refused_frames.load(), 3u);
  for (int fd : {unknown, to_another, stranger, peer}) close(fd);
  endpoint.Stop();
}

}  // namespace
}  // namespace floe::rpc
