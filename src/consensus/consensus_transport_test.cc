// The Raft transport (docs/consensus.md, "The transport", rules T1-T6): Floe's own
// raft_uv_transport, whose handshake must pass before libraft reads a byte, on real servers over
// loopback TCP. In the consensus_test binary.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "consensus/consensus.h"
#include "consensus/internal/cluster_testing.h"
#include "consensus/internal/transport.h"

extern "C" {
#include <raft.h>
#include <raft/uv.h>
}
#include <uv.h>

namespace floe::consensus {
namespace {

using floe::testing::WaitFor;
using internal::Recorder;
using internal::TestCluster;

// ---- The transport (docs/consensus.md, "The transport", rules T1-T6) ----

// A MAC keyed by `key` (a test stand-in for the server's SipHash under the cluster secret).
Mac KeyedMac(uint32_t key) {
  return [key](std::string_view bytes) {
    const Hash128 h = Murmur3x64_128(bytes.data(), bytes.size(), key);
    std::array<uint8_t, 16> out{};
    std::memcpy(out.data(), &h.h1, 8);
    std::memcpy(out.data() + 8, &h.h2, 8);
    return out;
  };
}

// A raw TCP connection to a server's raft address, as a stranger would open it.
class RawConnection {
 public:
  explicit RawConnection(const std::string& address) {
    const size_t colon = address.rfind(':');
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
    inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{.tv_sec = 20, .tv_usec = 0};  // a bound on the wait, not a timing claim
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawConnection() { close(fd_); }
  bool connected() const { return connected_; }
  void Send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close as soon as it has seen enough
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }
  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }
  // Reads until the server closes (or the bound passes): true when it closed, with everything
  // it sent in *got.
  bool ReadUntilClosed(std::string* got) {
    char buf[4096];
    for (;;) {
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
      got->append(buf, static_cast<size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

std::string Le64(std::initializer_list<uint64_t> values) {
  std::string out;
  for (uint64_t v : values) {
    for (int i = 0; i < 8; i++) out.push_back(static_cast<char>(v >> (8 * i)));
  }
  return out;
}

// libraft's own preamble (protocol 1, a made-up server id, an address), as its TCP transport
// expects it.
std::string RaftPreamble() {
  std::string address("127.0.0.9:9999");
  address.push_back('\0');
  address.resize((address.size() + 7) / 8 * 8, '\0');
  return Le64({1, 99, address.size()}) + address;
}

// T1, T2: the hello decoder takes exactly a well-formed hello under the same key and nonce, made
// for this server: one made for another server (relayed through a stopped member's port, with
// this server's nonce) is refused.
TEST(ConsensusTest, TheHelloDecoderTakesOnlyAWholeHelloUnderTheSameKey) {
  const std::string nonce(internal::kNonceBytes, 'n');
  const Mac mac = KeyedMac(7);
  const std::string hello = internal::EncodeHello(3, "127.0.0.1:7003", 5, nonce, mac);
  internal::Hello out;
  ASSERT_TRUE(internal::DecodeHello(hello, nonce, 5, mac, &out));
  EXPECT_EQ(out.id, 3u);
  EXPECT_EQ(out.address, "127.0.0.1:7003");
  EXPECT_EQ(internal::HelloLength(hello), hello.size());
  EXPECT_FALSE(internal::DecodeHello(hello, nonce, 6, mac, &out));  // made for server 5
  EXPECT_FALSE(internal::DecodeHello(hello, std::string(internal::kNonceBytes, 'm'), 5, mac, &out));
  EXPECT_FALSE(internal::DecodeHello(hello, nonce, 5, KeyedMac(8), &out));
  EXPECT_FALSE(internal::DecodeHello(hello, nonce, 5, Mac{}, &out));
  EXPECT_FALSE(internal::DecodeHello(hello.substr(0, hello.size() - 1), nonce, 5, mac, &out));
  EXPECT_FALSE(internal::DecodeHello(hello + "x", nonce, 5, mac, &out));
  for (size_t i = 0; i < hello.size(); i++) {
    std::string bad = hello;
    bad[i] = static_cast<char>(bad[i] ^ 0x20);
    EXPECT_FALSE(internal::DecodeHello(bad, nonce, 5, mac, &out)) << "byte " << i;
  }
  // libraft's preamble, even one announcing a 512 MiB address, is not a hello: nothing is
  // sized from it.
  EXPECT_EQ(internal::HelloLength(RaftPreamble()), 0u);
  EXPECT_EQ(internal::HelloLength(Le64({1, 99, 512 << 20})), 0u);
  std::string zero_id = hello.substr(0, internal::kHelloFixed);
  std::fill(zero_id.begin() + 8, zero_id.end(), '\0');
  EXPECT_EQ(internal::HelloLength(zero_id), 0u);
}

// T1-T3: a stranger's bytes are refused by the transport and never reach libraft. Without the
// transport, the first of them (libraft's preamble and an AppendEntries claiming 10,000,000
// entries in a 40-byte header) crashes the process in libraft's decoder.
TEST(ConsensusTest, AStrangersBytesNeverReachRaft) {
  Options base;
  base.mac = KeyedMac(1);
  TestCluster c(3, base);
  c.StartAll();
  ASSERT_TRUE(c.Commit("before").ok());
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  std::vector<std::string> attacks;
  const std::string header = Le64({5, 0, 0, 0, 10'000'000});
  attacks.push_back(RaftPreamble() + Le64({1, header.size()}) + header);    // appendcrash
  attacks.push_back(Le64({1, 99, 512 << 20}) + std::string(1 << 16, 'A'));  // bigaddr
  std::string random(4096, '\0');
  uint64_t x = 88172645463325252ull;
  for (char& ch : random) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    ch = static_cast<char>(x);
  }
  attacks.push_back(random);
  // A hello's valid fixed part, then EOF before its address and MAC.
  attacks.push_back(
      internal::EncodeHello(2, "127.0.0.1:1", 1, std::string(16, '\0'), base.mac).substr(0, 20));
  uint64_t refused = 0;
  for (const Server& s : c.founders()) refused += c.log(s.id)->state().handshakes_refused;
  for (const std::string& bytes : attacks) {
    for (const Server& s : c.founders()) {
      RawConnection conn(s.address);
      ASSERT_TRUE(conn.connected());
      conn.Send(bytes);
      conn.ShutdownWrite();
      std::string got;
      EXPECT_TRUE(conn.ReadUntilClosed(&got));
      // The server sent its nonce and nothing of raft's.
      EXPECT_LE(got.size(), internal::kNonceBytes);
    }
  }
  const uint64_t want = refused + attacks.size() * c.founders().size();
  EXPECT_TRUE(WaitFor([&] {
    uint64_t now = 0;
    for (const Server& s : c.founders()) now += c.log(s.id)->state().handshakes_refused;
    return now >= want;
  }));
  // Every server is alive, the term was not bumped by a stranger, and the cluster commits.
  ASSERT_TRUE(c.Commit("after").ok());
  EXPECT_TRUE(c.WaitConverged({"before", "after"}));
}

// T2: a server keyed otherwise is refused by the others and cannot join their log.
TEST(ConsensusTest, AServerWithAnotherKeyIsRefused) {
  Options base;
  base.mac = KeyedMac(1);
  TestCluster c(3, base);
  ASSERT_NE(c.Start(c.founders()[0]), nullptr);
  ASSERT_NE(c.Start(c.founders()[1]), nullptr);
  ASSERT_TRUE(c.Commit("a").ok());
  Options other = c.OptionsFor(c.founders()[2], true);
  other.mac = KeyedMac(2);
  Recorder machine;
  auto log = Log::Start(other, &machine);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  // Both ways are refused: the others refuse its connections, and it refuses theirs.
  EXPECT_TRUE(WaitFor([&] { return (*log)->state().handshakes_refused > 0; }));
  EXPECT_TRUE(WaitFor([&] {
    return c.log(1)->state().handshakes_refused + c.log(2)->state().handshakes_refused > 0;
  }));
  ASSERT_TRUE(c.Commit("b").ok());
  ASSERT_TRUE(c.Commit("c").ok());
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  EXPECT_TRUE(WaitFor([&] { return c.machine(1)->Entries().size() == 3; }));
  EXPECT_TRUE(machine.Entries().empty());
  EXPECT_EQ((*log)->state().leader_id, 0u);
  // Its log holds its bootstrap configuration alone: nothing of the others' entries.
  EXPECT_EQ((*log)->state().last_index, 1u);
  EXPECT_GT(c.log(leader)->state().last_index, 3u);
  (*log)->Stop();
}

// T3: a connection that sends nothing is closed by the server at its handshake deadline.
TEST(ConsensusTest, AHandshakeThatStallsIsClosedAtItsDeadline) {
  TestCluster c(1);
  ASSERT_NE(c.Start(c.founders()[0]), nullptr);
  ASSERT_NE(c.WaitLeader(), 0u);
  const uint64_t before = c.log(1)->state().handshakes_refused;
  RawConnection conn(c.founders()[0].address);
  ASSERT_TRUE(conn.connected());
  std::string got;
  EXPECT_TRUE(conn.ReadUntilClosed(&got));  // bounded by the socket's receive timeout
  EXPECT_EQ(got.size(), internal::kNonceBytes);
  EXPECT_TRUE(WaitFor([&] { return c.log(1)->state().handshakes_refused == before + 1; }));
}

// T4: past kMaxPendingHandshakes at once, a new connection is closed at once, before its nonce.
TEST(ConsensusTest, HandshakesInProgressAreBounded) {
  TestCluster c(1);
  ASSERT_NE(c.Start(c.founders()[0]), nullptr);
  ASSERT_NE(c.WaitLeader(), 0u);
  std::vector<std::unique_ptr<RawConnection>> held;
  for (size_t i = 0; i < internal::kMaxPendingHandshakes + 4; i++) {
    held.push_back(std::make_unique<RawConnection>(c.founders()[0].address));
    ASSERT_TRUE(held.back()->connected());
  }
  // Each connection past the bound ended the oldest in progress: the first four were closed at
  // once, the others at their deadline; every one got its nonce (none was refused unheard).
  for (auto& conn : held) {
    std::string got;
    EXPECT_TRUE(conn->ReadUntilClosed(&got));
    EXPECT_EQ(got.size(), internal::kNonceBytes);
  }
  EXPECT_TRUE(WaitFor([&] { return c.log(1)->state().handshakes_refused >= held.size(); }));
}

// T6: a message without a destination (libraft 0.15's append result of a follower that lost its
// leader while its write was on disk) is refused as a failed send; raft_uv's own send would read
// the null address with strlen and bring the process down. A message with a destination still
// goes out (here to a port nobody listens on: queued, then cancelled by close).
TEST(ConsensusTest, AMessageWithoutADestinationIsDropped) {
  floe::testing::TempDir dir;
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  raft_uv_transport transport{};
  std::atomic<uint64_t> refused{0};
  ASSERT_EQ(internal::InitTransport(&transport, &loop, KeyedMac(7), &refused), 0);
  raft_io io{};
  ASSERT_EQ(raft_uv_init(&io, &loop, dir.path().c_str(), &transport), 0);
  internal::GuardSends(&io);
  internal::GuardSends(&io);  // idempotent: the guard never wraps itself
  ASSERT_EQ(io.init(&io, 1, "127.0.0.1:1"), 0);
  ASSERT_EQ(io.start(
                &io, 1000, [](raft_io*) {}, [](raft_io*, raft_message*) {}),
            0);

  static int sent_status = 0;
  static int callbacks = 0;
  const auto cb = [](raft_io_send*, int status) {
    sent_status = status;
    callbacks++;
  };
  raft_message message{};
  message.type = RAFT_IO_APPEND_ENTRIES_RESULT;
  message.append_entries_result.term = 1;
  raft_io_send req{};
  message.server_id = 0;
  message.server_address = nullptr;
  EXPECT_EQ(io.send(&io, &req, &message, cb), RAFT_NOCONNECTION);
  message.server_id = 2;  // the leader's id with its address gone
  EXPECT_EQ(io.send(&io, &req, &message, cb), RAFT_NOCONNECTION);
  message.server_id = 0;
  message.server_address = "127.0.0.1:1";
  EXPECT_EQ(io.send(&io, &req, &message, cb), RAFT_NOCONNECTION);
  EXPECT_EQ(callbacks, 0);

  message.server_id = 2;
  EXPECT_EQ(io.send(&io, &req, &message, cb), 0);
  static bool closed = false;
  io.close(&io, [](raft_io*) { closed = true; });
  while (!closed) uv_run(&loop, UV_RUN_ONCE);
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(callbacks, 1);  // the one message with a destination, cancelled by close
  EXPECT_NE(sent_status, 0);
  raft_uv_close(&io);
  internal::ReleaseTransport(&transport);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace floe::consensus
