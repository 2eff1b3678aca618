// What a TCP frame may make a member hold before it is authenticated (docs/rpc.md, "Limits"):
// the transport's buffer grows with the bytes that came, a frame is admitted by its header's
// sender before its body is read (net::Transport::SetAdmission, set by the endpoint), and
// incoming connections are bounded (net::TransportOptions::max_incoming).

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
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
  explicit OneTransport(size_t max_incoming = 4096,
                        uint16_t peer_port = floe::testing::FreePort("127.0.0.1")) {
    net::TransportOptions o;
    o.self = 1;
    o.port = port;
    o.peers = {{2, "127.0.0.1", peer_port}};
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

// The 16 bytes of an RPC header the admission reads: 8 of anything, then sender and receiver.
std::string Head(uint32_t sender, uint32_t receiver) {
  std::string h(8, '\0');
  PutLe32(&h, sender);
  PutLe32(&h, receiver);
  return h;
}

// A connection that announces a frame of `length` and sends its first 16 bytes only.
int Announce(uint16_t port, const std::string& head, uint32_t length) {
  const int fd = ConnectTo(port);
  std::string bytes;
  PutLe32(&bytes, length);
  bytes += head;
  EXPECT_EQ(send(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  return fd;
}

// Node 1's endpoint options: peer 2, the secret every test's peer shares.
Options MemberOptions() {
  Options o;
  o.peers = {2};
  o.secret = "s3cret";
  return o;
}

// Node 2 on `port`, with the secret, peer of node 1 at `member_port`.
struct RealPeer {
  RealPeer(uint16_t port, uint16_t member_port) {
    net::TransportOptions t;
    t.self = 2;
    t.port = port;
    t.peers = {{1, "127.0.0.1", member_port}};
    auto started = net::UdpTcpTransport::Start(loop, t);
    if (!started.ok()) return;
    transport = std::move(started).value();
    Options o;
    o.peers = {1};
    o.secret = "s3cret";
    endpoint = std::make_unique<Endpoint>(*transport, o);
    endpoint->Start();
  }
  bool started() const { return endpoint != nullptr; }
  net::AsioLoop loop;
  std::unique_ptr<net::UdpTcpTransport> transport;
  std::unique_ptr<Endpoint> endpoint;
};

// Bytes that do not compress: a call this large is a frame on a bulk connection.
std::string Incompressible(size_t n) {
  std::string out(n, '\0');
  std::mt19937_64 rng(n);
  for (char& c : out) c = static_cast<char>(rng());
  return out;
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
  one.t->SetAdmission(16, [](std::string_view head, net::NodeId) -> size_t {
    return head[0] == 'p' ? size_t{1} << 20 : 64;
  });
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
  // One closed, a place again (once the transport has seen it close).
  close(a);
  const std::string frame = Frame("again");
  bool in = false;
  for (int attempt = 0; attempt < 50 && !in; attempt++) {
    const int d = ConnectTo(one.port);
    (void)send(d, frame.data(), frame.size(), MSG_NOSIGNAL);
    in = WaitFor([&] { return one.t->stats().tcp_received.load() == 3; },
                 std::chrono::milliseconds(100));
    close(d);
  }
  EXPECT_TRUE(in);
  close(b);
}

// Connections take descriptors: the bound is at most a quarter of the descriptor limit, so
// connections alone never exhaust it (at the limit, accepting failed at once, again and again,
// spinning a core, and no client could connect).
TEST(RpcAdmissionTest, TheConnectionBoundIsAQuarterOfTheDescriptorLimit) {
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  rlimit low = before;
  low.rlim_cur = std::min<rlim_t>(before.rlim_cur, 256);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  OneTransport one;  // max_incoming 4096 asked: 64 taken
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &before), 0);
  ASSERT_NE(one.t, nullptr);
  const size_t allowed = std::max<size_t>(16, low.rlim_cur / 4);  // 64 at a limit of 256
  std::vector<int> fds;
  for (size_t i = 0; i <= allowed; i++) fds.push_back(ConnectTo(one.port));
  EXPECT_TRUE(WaitFor([&] { return one.t->stats().refused_connections.load() == 1; }));
  for (int fd : fds) close(fd);
}

// The endpoint admits nobody's frame but a peer's to it and the stranger's: an unknown sender's
// announced megabyte, or one addressed to another node, is refused on its header before its
// body is read; so is a stranger's past 4 KiB when the endpoint takes no stranger calls.
TEST(RpcAdmissionTest, TheEndpointAdmitsOnlyItsPeersAndTheStranger) {
  OneTransport one;
  ASSERT_NE(one.t, nullptr);
  Endpoint endpoint(*one.t, MemberOptions());
  endpoint.Start();
  const int unknown = Announce(one.port, Head(9, 1), 1 << 20);
  EXPECT_TRUE(ClosedByPeer(unknown));
  EXPECT_EQ(one.t->stats().refused_frames.load(), 1u);
  const int to_another = Announce(one.port, Head(2, 7), 1 << 20);
  EXPECT_TRUE(ClosedByPeer(to_another));
  EXPECT_EQ(one.t->stats().refused_frames.load(), 2u);
  const int stranger = Announce(one.port, Head(kStrangerId, kAnyNodeId), 5000);
  EXPECT_TRUE(ClosedByPeer(stranger));
  EXPECT_EQ(one.t->stats().refused_frames.load(), 3u);
  for (int fd : {unknown, to_another, stranger}) close(fd);
  endpoint.Stop();
}

// A frame that claims to come from a peer is read past 16 KiB only on a connection that peer's
// greeting proved (signed with the secret): a forged header claiming peer 2, with or without a
// forged greeting, is refused before its body (anyone who reached the port could make a member
// buffer 1 GiB a connection so); the real peer's large calls arrive.
TEST(RpcAdmissionTest, AClaimedPeersLargeFrameNeedsItsGreeting) {
  const uint16_t port2 = floe::testing::FreePort("127.0.0.1");
  OneTransport one(4096, port2);
  ASSERT_NE(one.t, nullptr);
  constexpr uint16_t kEcho = 7;
  Endpoint member(*one.t, MemberOptions());
  member.Register(kEcho, 0, [](NodeId, std::string_view req) -> Result<std::string> {
    return std::string(req.size() > 16 ? req.substr(0, 16) : req);
  });
  member.Start();
  // No greeting: a forged peer-2 header announcing a megabyte.
  const int forged = Announce(one.port, Head(2, 1), 1 << 20);
  EXPECT_TRUE(ClosedByPeer(forged));
  EXPECT_EQ(one.t->stats().refused_frames.load(), 1u);
  close(forged);
  // A forged greeting (no MAC under the secret) proves nothing.
  const int greeted = ConnectTo(one.port);
  std::string greeting = Head(2, 1) + std::string(60, 'g');
  std::string frame;
  PutLe32(&frame, static_cast<uint32_t>(greeting.size()) | 0x80000000u);
  frame += greeting;
  PutLe32(&frame, wire::Crc32c(greeting));
  PutLe32(&frame, 1 << 20);
  frame += Head(2, 1);
  ASSERT_EQ(send(greeted, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
  EXPECT_TRUE(ClosedByPeer(greeted));  // at the greeting
  EXPECT_EQ(one.t->stats().refused_greetings.load(), 1u);
  EXPECT_EQ(one.t->stats().refused_frames.load(), 1u);
  close(greeted);

  // The real peer 2, with the secret: its 1 MiB call rides a bulk connection it greeted.
  RealPeer peer(port2, one.port);
  ASSERT_TRUE(peer.started());
  const std::string big = Incompressible(1 << 20);
  Result<std::string> r = peer.endpoint->Call(1, kEcho, big, 20'000'000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, big.substr(0, 16));
  EXPECT_GE(one.t->stats().tcp_received.load(), 1u);
  EXPECT_EQ(one.t->stats().refused_frames.load(), 1u);
  EXPECT_EQ(one.t->stats().refused_greetings.load(), 1u);
  peer.endpoint->Stop();
  member.Stop();
}

// A greeting (code kGreetingCode, the sender's clock) under the secret, framed as one.
std::string GreetingFrame(const std::string& secret, uint32_t sender, uint32_t receiver,
                          uint16_t code, uint64_t at) {
  const MacKey key = DeriveMacKey(secret);
  CodecOptions codec;
  codec.key = &key;
  Header h;
  h.kind = Kind::kHeartbeat;
  h.sender = sender;
  h.receiver = receiver;
  h.incarnation = 1;
  h.task = at;
  h.code = code;
  const std::string greeting = Encode(h, "", codec);
  std::string frame;
  PutLe32(&frame, static_cast<uint32_t>(greeting.size()) | 0x80000000u);
  frame += greeting;
  PutLe32(&frame, wire::Crc32c(greeting));
  return frame;
}

// Only a greeting proves a connection: a periodic heartbeat under the secret (code 0, sent in
// the clear every interval) does not, nor one a minute old, nor one under another secret; the
// right one does, and the peer's announced megabyte is then read on.
TEST(RpcAdmissionTest, OnlyAFreshGreetingUnderTheSecretProvesAConnection) {
  OneTransport one;
  ASSERT_NE(one.t, nullptr);
  Endpoint endpoint(*one.t, MemberOptions());
  endpoint.Start();
  const uint64_t now = WallMicros();
  auto try_greeting = [&](const std::string& greeting) {
    const int fd = ConnectTo(one.port);
    std::string bytes = greeting;
    PutLe32(&bytes, 1 << 20);
    bytes += Head(2, 1);
    EXPECT_EQ(send(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    return fd;
  };
  const std::vector<std::string> refused = {
      GreetingFrame("s3cret", 2, 1, 0, now),                            // a heartbeat
      GreetingFrame("s3cret", 2, 1, kGreetingCode, now - 120'000'000),  // stale
      GreetingFrame("other", 2, 1, kGreetingCode, now),                 // another secret
      GreetingFrame("s3cret", 2, 3, kGreetingCode, now),                // to another node
  };
  for (size_t i = 0; i < refused.size(); i++) {
    const int fd = try_greeting(refused[i]);
    EXPECT_TRUE(ClosedByPeer(fd)) << i;
    EXPECT_EQ(one.t->stats().refused_greetings.load(), i + 1) << i;
    close(fd);
  }
  // The right one proves the connection: the announced megabyte is read whole (its frame then
  // arrives, whatever the endpoint makes of it).
  const int good = ConnectTo(one.port);
  std::string bytes = GreetingFrame("s3cret", 2, 1, kGreetingCode, now) +
                      Frame(Head(2, 1) + std::string((1 << 20) - 16, 'x'));
  ASSERT_EQ(send(good, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  EXPECT_TRUE(WaitFor([&] { return one.t->stats().tcp_received.load() >= 1; }));
  EXPECT_EQ(one.t->stats().refused_greetings.load(), refused.size());
  EXPECT_EQ(one.t->stats().refused_frames.load(), 0u);
  close(good);
  endpoint.Stop();
}

// A connection no greeting proves is closed after the deadline (idle ones held every place and
// locked the peers out), and at the bound the oldest such connection makes room for a new one.
TEST(RpcAdmissionTest, UngreetedConnectionsLeaveRoomForThePeers) {
  const uint16_t port2 = floe::testing::FreePort("127.0.0.1");
  OneTransport one(/*max_incoming=*/2, port2);
  ASSERT_NE(one.t, nullptr);
  constexpr uint16_t kEcho = 7;
  Endpoint member(*one.t, MemberOptions());
  member.Register(kEcho, 0, [](NodeId, std::string_view req) -> Result<std::string> {
    return std::string(req.substr(0, 16));
  });
  member.Start();
  const int idle_a = ConnectTo(one.port), idle_b = ConnectTo(one.port);
  // The real peer's large call needs a connection: the oldest idle one makes room.
  RealPeer peer(port2, one.port);
  ASSERT_TRUE(peer.started());
  Result<std::string> r = peer.endpoint->Call(1, kEcho, Incompressible(1 << 20), 20'000'000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE(one.t->stats().evicted_connections.load(), 1u);
  // The idle one left is closed once its deadline passes, unless the peer's connections made
  // room by evicting it too (under load the peer may open a second one first): both idle
  // connections go, one way or the other.
  EXPECT_TRUE(WaitFor([&] {
    return one.t->stats().evicted_connections.load() + one.t->stats().ungreeted_closed.load() >= 2;
  })) << "evicted "
      << one.t->stats().evicted_connections.load() << ", closed at the deadline "
      << one.t->stats().ungreeted_closed.load();
  close(idle_a);
  close(idle_b);
  peer.endpoint->Stop();
  member.Stop();
}

// A joiner (not a member yet) is greeted by nobody: the answer it awaits, larger than 16 KiB
// (a big cluster's member list), is read on a connection no greeting proves, which stays open.
TEST(RpcAdmissionTest, AJoinerTakesAnswersPastTheUngreetedBound) {
  net::AsioLoop loop;
  net::TransportOptions t;
  t.self = kStrangerId;
  t.port = floe::testing::FreePort("127.0.0.1");
  t.peers = {{kAnyNodeId, "127.0.0.1", floe::testing::FreePort("127.0.0.1")}};
  auto started = net::UdpTcpTransport::Start(loop, t);
  ASSERT_TRUE(started.ok());
  std::unique_ptr<net::UdpTcpTransport> joiner = std::move(started).value();
  Options o;
  o.peers = {kAnyNodeId};
  o.max_message = 256 * 1024;
  Endpoint endpoint(*joiner, o);
  endpoint.Start();
  const int fd = ConnectTo(t.port);
  const std::string frame = Frame(Head(kAnyNodeId, kStrangerId) + std::string(100'000 - 16, 'a'));
  ASSERT_EQ(send(fd, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
  EXPECT_TRUE(WaitFor([&] { return joiner->stats().tcp_received.load() >= 1; }));
  EXPECT_EQ(joiner->stats().refused_frames.load(), 0u);
  close(fd);
  endpoint.Stop();
}

// A greeting proves one connection (a captured one replayed on others held every place and
// let each announce a gigabyte); a peer's proved connections are few (its oldest close first);
// a proved connection announcing a gigabyte and sending 16 bytes reserves at most 64 MiB; and
// a greeting sent as a message (a datagram) is dropped, not taken as a heartbeat.
TEST(RpcAdmissionTest, AGreetingProvesOneConnectionAndAPeersConnectionsAreFew) {
  OneTransport one;
  ASSERT_NE(one.t, nullptr);
  Endpoint endpoint(*one.t, MemberOptions());
  endpoint.Start();
  const uint64_t now = WallMicros();
  const std::string greeting = GreetingFrame("s3cret", 2, 1, kGreetingCode, now);
  const int first = ConnectTo(one.port);
  ASSERT_EQ(send(first, greeting.data(), greeting.size(), 0),
            static_cast<ssize_t>(greeting.size()));
  ASSERT_TRUE(WaitFor([&] { return one.t->stats().greeted.load() == 1; }));
  const int replay = ConnectTo(one.port);
  ASSERT_EQ(send(replay, greeting.data(), greeting.size(), 0),
            static_cast<ssize_t>(greeting.size()));
  EXPECT_TRUE(ClosedByPeer(replay));
  EXPECT_EQ(one.t->stats().refused_greetings.load(), 1u);
  EXPECT_EQ(one.t->stats().greeted.load(), 1u);
  close(replay);

  // More proved connections than a peer opens (1 + 2 bulk + 1 spare): the oldest close.
  std::vector<int> fds = {first};
  for (uint64_t i = 1; i <= 5; i++) {
    const int fd = ConnectTo(one.port);
    const std::string g = GreetingFrame("s3cret", 2, 1, kGreetingCode, now + i);
    ASSERT_EQ(send(fd, g.data(), g.size(), 0), static_cast<ssize_t>(g.size()));
    ASSERT_TRUE(WaitFor([&] { return one.t->stats().greeted.load() == 1 + i; }));
    fds.push_back(fd);
  }
  EXPECT_EQ(one.t->stats().evicted_connections.load(), 2u);
  EXPECT_TRUE(ClosedByPeer(fds[0]));
  EXPECT_TRUE(ClosedByPeer(fds[1]));

  // A proved connection announcing a gigabyte reserves at most 64 MiB until the bytes come.
  const uint64_t before = VirtualBytes();
  std::string big;
  PutLe32(&big, 1u << 30);
  big += Head(2, 1);
  ASSERT_EQ(send(fds.back(), big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_LT(VirtualBytes(), before + (uint64_t{256} << 20));
  for (int fd : fds) close(fd);

  // The greeting as a datagram: dropped as a bad message, never a heartbeat.
  const uint64_t bad_before = endpoint.stats().bad_messages.load();
  const MacKey key = DeriveMacKey("s3cret");
  CodecOptions codec;
  codec.key = &key;
  Header h;
  h.kind = Kind::kHeartbeat;
  h.sender = 2;
  h.receiver = 1;
  h.incarnation = 1;
  h.task = now + 100;
  h.code = kGreetingCode;
  const std::string message = Encode(h, "", codec);
  const int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(one.port);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  ASSERT_EQ(
      sendto(udp, message.data(), message.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)),
      static_cast<ssize_t>(message.size()));
  EXPECT_TRUE(WaitFor([&] { return endpoint.stats().bad_messages.load() > bad_before; }));
  close(udp);
  endpoint.Stop();
}

}  // namespace
}  // namespace floe::rpc
