// RPC over real UDP and TCP on loopback: exactly-once with the transport's fault injector,
// 100 MB payloads, a restarting peer, a healing partition, a dead peer's deadline, nested calls
// across priority classes, and two processes on 127.0.0.2 and 127.0.0.3. Label rpc_fault.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <random>
#include <thread>
#include <utility>

#include "net/net.h"
#include "rpc/rpc.h"
#include "testing/process.h"
#include "wire/wire.h"

namespace floe::rpc {
namespace {

using net::NodeId;

constexpr uint16_t kIncrement = 1;
constexpr uint16_t kEcho = 2;
constexpr uint16_t kNested = 3;  // class 0: calls the other node's kEcho (class 1)
constexpr uint16_t kSameClass = 4;
constexpr uint16_t kInlineWaits = 5;  // inline, and (wrongly) tries to wait for a call
constexpr uint16_t kHeld = 6;         // echoes once StartNode's `hold` is ready

// One node: loop, transport, endpoint, and the side effects of its handlers.
// Members are destroyed bottom up: the endpoint (joining its handler threads) before the
// transport, both before the state the handlers touch, the loop last.
struct RealNode {
  net::AsioLoop loop;
  Mutex mu;
  std::map<std::string, int> effects FLOE_GUARDED_BY(mu);
  NodeId other = 0;
  std::unique_ptr<net::UdpTcpTransport> transport;
  std::unique_ptr<Endpoint> endpoint;

  int Effects(const std::string& k) {
    MutexLock lock(&mu);
    auto it = effects.find(k);
    return it == effects.end() ? 0 : it->second;
  }
  size_t EffectCount() {
    MutexLock lock(&mu);
    return effects.size();
  }
};

std::unique_ptr<RealNode> StartNode(NodeId id, uint16_t port, const net::PeerAddress& peer,
                                    Options o = {}, std::shared_future<void> hold = {}) {
  auto n = std::make_unique<RealNode>();
  n->other = peer.id;
  net::TransportOptions t;
  t.self = id;
  t.port = port;
  t.peers = {peer};
  t.seed = id;
  auto transport = net::UdpTcpTransport::Start(n->loop, t);
  EXPECT_TRUE(transport.ok()) << transport.status().ToString();
  if (!transport.ok()) return nullptr;
  n->transport = std::move(transport).value();
  o.peers = {peer.id};
  o.threads_per_class = o.threads_per_class > 0 ? o.threads_per_class : 2;
  n->endpoint = std::make_unique<Endpoint>(*n->transport, o);
  RealNode* raw = n.get();
  n->endpoint->Register(kIncrement, 0, [raw](NodeId from, std::string_view req) {
    MutexLock lock(&raw->mu);
    const int times = ++raw->effects[std::to_string(from) + ":" + std::string(req)];
    return Result<std::string>(std::string(req) + "#" + std::to_string(times));
  });
  n->endpoint->Register(
      kEcho, 1, [](NodeId, std::string_view req) { return Result<std::string>(std::string(req)); });
  n->endpoint->Register(kNested, 0, [raw](NodeId, std::string_view req) {
    return raw->endpoint->Call(raw->other, kEcho, "nested:" + std::string(req), 10'000'000);
  });
  n->endpoint->Register(kSameClass, 0, [raw](NodeId, std::string_view req) {
    return raw->endpoint->Call(raw->other, kIncrement, std::string(req), 10'000'000);
  });
  n->endpoint->Register(
      kInlineWaits, 2,
      [raw](NodeId, std::string_view req) {
        return raw->endpoint->Call(raw->other, kEcho, std::string(req), 10'000'000);
      },
      /*runs_inline=*/true);
  n->endpoint->Register(kHeld, 1, [hold](NodeId, std::string_view req) {
    if (hold.valid()) hold.wait();
    return Result<std::string>(std::string(req));
  });
  n->endpoint->Start();
  return n;
}

// A pair of nodes 1 and 2 on 127.0.0.1, the second started once the first's port is known.
struct Pair {
  std::unique_ptr<RealNode> a, b;
  uint16_t port_a = 0, port_b = 0;
};

Pair StartPair(Options o = {}) {
  Pair p;
  p.port_a = floe::testing::FreePort("127.0.0.1");
  p.port_b = floe::testing::FreePort("127.0.0.1");
  p.a = StartNode(1, p.port_a, {2, "127.0.0.1", p.port_b}, o);
  p.b = StartNode(2, p.port_b, {1, "127.0.0.1", p.port_a}, o);
  return p;
}

// Counts the answers to a known number of calls: Expect() makes one call's callback; an answer
// counts as right when it is OK and, for Expect(want), equal to `want`.
class Tally {
 public:
  explicit Tally(int expected) : expected_(expected) {}
  Done Expect() { return Make(false, std::string()); }
  Done Expect(std::string want) { return Make(true, std::move(want)); }
  // Whether every call ended within `seconds`.
  bool Wait(int seconds) {
    return ended_.wait_for(std::chrono::seconds(seconds)) == std::future_status::ready;
  }
  int done() const { return done_.load(); }
  int right() const { return right_.load(); }

 private:
  Done Make(bool check, std::string want) {
    return [this, check, want = std::move(want)](Result<std::string> r) {
      if (r.ok() && (!check || *r == want)) right_++;
      if (++done_ == expected_) all_.set_value();
    };
  }

  const int expected_;
  std::atomic<int> done_{0}, right_{0};
  std::promise<void> all_;
  std::future<void> ended_ = all_.get_future();
};

// `prefix` followed by `bytes` that do not compress (a multiple of 8), the same for a seed.
std::string Incompressible(std::string prefix, size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t j = 0; j < bytes / 8; j++) {
    const uint64_t v = rng();
    prefix.append(reinterpret_cast<const char*>(&v), 8);
  }
  return prefix;
}

// Transports of nodes 1 and 2 on 127.0.0.1, peers of each other, each on its own loop (the
// transports go first: they use their loops).
struct TransportPair {
  uint16_t port_a = floe::testing::FreePort("127.0.0.1");
  uint16_t port_b = floe::testing::FreePort("127.0.0.1");
  net::AsioLoop loop_a, loop_b;
  std::unique_ptr<net::UdpTcpTransport> a, b;
  TransportPair() {
    net::TransportOptions ta, tb;
    ta.self = 1;
    ta.port = port_a;
    ta.peers = {{2, "127.0.0.1", port_b}};
    tb.self = 2;
    tb.port = port_b;
    tb.peers = {{1, "127.0.0.1", port_a}};
    auto started_a = net::UdpTcpTransport::Start(loop_a, ta);
    auto started_b = net::UdpTcpTransport::Start(loop_b, tb);
    if (started_a.ok()) a = std::move(started_a).value();
    if (started_b.ok()) b = std::move(started_b).value();
  }
};

// A datagram sent from a thread other than the loop's is written by that thread: it arrives
// while the sender's loop is busy. Regression: Send once posted every message to the loop,
// whose wake-up cost a quarter of a small call's round trip. Larger messages, and every
// message while faults are injected, still go through the loop.
TEST(RpcNetTest, DatagramsLeaveFromTheSendingThread) {
  TransportPair p;
  ASSERT_TRUE(p.a && p.b);
  Mutex mu;
  std::condition_variable_any cv;
  std::vector<std::string> got;
  p.b->SetReceiver([&](std::string m, bool) {
    MutexLock lock(&mu);
    got.push_back(std::move(m));
    cv.notify_all();
  });
  auto arrived = [&](size_t n, int ms) {
    MutexLock lock(&mu);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (got.size() < n && std::chrono::steady_clock::now() < until) cv.wait_until(mu, until);
    return got.size() >= n;
  };
  auto message = [](std::string body) {
    auto m = std::make_shared<net::OutMessage>();
    m->body = std::move(body);
    return net::Transport::Bytes(std::move(m));
  };
  // Keeps a's loop busy until the returned promise is set.
  auto hold_loop = [&p] {
    auto release = std::make_shared<std::promise<void>>();
    p.loop_a.Post([held = release->get_future().share()] { held.wait(); });
    return release;
  };
  auto release = hold_loop();
  EXPECT_TRUE(p.a->Send(2, message("small")).ok());
  EXPECT_TRUE(arrived(1, 5000));
  EXPECT_TRUE(p.a->Send(2, message(std::string(5000, 'L'))).ok());  // TCP: needs the loop
  EXPECT_FALSE(arrived(2, 300));
  release->set_value();
  EXPECT_TRUE(arrived(2, 5000));
  // With faults injected, datagrams take the loop's path too.
  net::Faults f;
  f.duplicate = 1e-9;
  p.a->SetFaults(f);
  release = hold_loop();
  EXPECT_TRUE(p.a->Send(2, message("via loop")).ok());
  EXPECT_FALSE(arrived(3, 300));
  release->set_value();
  EXPECT_TRUE(arrived(3, 5000));
  MutexLock lock(&mu);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], "small");
  EXPECT_EQ(got[1].size(), 5000u);
  EXPECT_EQ(got[2], "via loop");
}

// A peer set again at the address it has keeps its connection (the members' peers follow the
// agreed table, which names every member again at each change: docs/membership.md V4); one
// set at another address gets a new one.
TEST(RpcNetTest, APeerSetAgainAtItsAddressKeepsItsConnection) {
  TransportPair p;
  ASSERT_TRUE(p.a && p.b);
  std::atomic<int> got{0};
  p.b->SetReceiver([&](std::string, bool) { got++; });
  auto send_large = [&](int n) {
    auto m = std::make_shared<net::OutMessage>();
    m->body = std::string(5000, 'L');  // over a datagram: TCP
    EXPECT_TRUE(p.a->Send(2, net::Transport::Bytes(std::move(m))).ok());
    for (int i = 0; i < 500 && got.load() < n; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return got.load() >= n;
  };
  ASSERT_TRUE(send_large(1));
  EXPECT_EQ(p.a->stats().connects.load(), 1u);
  p.a->SetPeer({2, "127.0.0.1", p.port_b});
  ASSERT_TRUE(send_large(2));
  EXPECT_EQ(p.a->stats().connects.load(), 1u) << "reconnected to an unchanged address";
  p.a->SetPeer({2, "127.0.0.2", p.port_b});  // moved (nobody listens there)
  p.a->SetPeer({2, "127.0.0.1", p.port_b});  // and back
  ASSERT_TRUE(send_large(3));
  EXPECT_EQ(p.a->stats().connects.load(), 2u);
}

// A blocking Call reads its answer from the socket itself while it waits, so the answer does
// not need the caller's loop thread: the call completes while that loop is held busy. Before,
// every answer went through the loop, whose wake-up stood between the answer and the caller.
TEST(RpcNetTest, ABlockingCallTakesItsAnswerWithoutItsLoop) {
  Options o;
  o.call_spin_us = 60'000'000;  // polls for the whole call instead of sleeping
  Pair p = StartPair(o);
  ASSERT_TRUE(p.a && p.b);
  // a's loop is held until released, or for 3 s at most.
  // What the held task touches is shared with it: it may still run after the test's body ends.
  auto release = std::make_shared<std::promise<void>>();
  auto holding = std::make_shared<std::promise<void>>();
  auto held = std::make_shared<std::atomic<bool>>(true);
  std::future<void> holding_started = holding->get_future();
  p.a->loop.Post([holding, held, until = release->get_future().share()] {
    holding->set_value();
    until.wait_for(std::chrono::seconds(3));
    held->store(false);
  });
  holding_started.wait();
  Result<std::string> r = p.a->endpoint->Call(2, kEcho, "while the loop is busy", 20'000'000);
  EXPECT_TRUE(held->load());  // answered before the loop was free
  release->set_value();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "while the loop is busy");
}

// Options::on_idle runs on a handler thread that ran work and found no more, before it sleeps
// (a server frees what its handlers retired there): never on threads that did nothing.
TEST(RpcNetTest, AHandlerThreadCallsOnIdleAfterItsWork) {
  auto idles = std::make_shared<std::atomic<int>>(0);
  Options o;
  o.on_idle = [idles] { idles->fetch_add(1); };
  Pair p = StartPair(o);
  ASSERT_TRUE(p.a && p.b);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(idles->load(), 0);  // no handler has run yet
  Result<std::string> r = p.a->endpoint->Call(2, kEcho, "x", 10'000'000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (int i = 0; i < 500 && idles->load() == 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(idles->load(), 1);
}

TEST(RpcNetTest, ExactlyOnceOverUdpAndTcpWithInjectedFaults) {
  Pair p = StartPair();
  const net::Faults faults{.drop = 0.3, .duplicate = 0.1, .min_delay_us = 0, .max_delay_us = 3000};
  p.a->transport->SetFaults(faults);
  p.b->transport->SetFaults(faults);
  constexpr int kCalls = 2000;
  Tally tally(kCalls);
  for (int i = 0; i < kCalls; i++) {
    RealNode& from = i % 2 == 0 ? *p.a : *p.b;
    // Mostly one-datagram calls; every 50th carries 20 KB that does not compress (TCP).
    const std::string name = "c" + std::to_string(i);
    const std::string req = i % 50 == 0 ? Incompressible(name, 20000, i) : name;
    from.endpoint->CallAsync(from.other, kIncrement, req, 120'000'000, tally.Expect(req + "#1"));
  }
  ASSERT_TRUE(tally.Wait(150));
  EXPECT_EQ(tally.right(), kCalls);
  EXPECT_EQ(p.a->EffectCount() + p.b->EffectCount(), static_cast<size_t>(kCalls));
  {
    MutexLock la(&p.a->mu), lb(&p.b->mu);
    for (const auto& [k, n] : p.a->effects) EXPECT_EQ(n, 1) << k;
    for (const auto& [k, n] : p.b->effects) EXPECT_EQ(n, 1) << k;
  }
  EXPECT_GT(p.a->transport->stats().dropped_by_faults.load(), 0u);
  EXPECT_GT(p.a->transport->stats().tcp_sent.load(), 0u);
  EXPECT_GT(p.a->endpoint->stats().call_resends.load() + p.b->endpoint->stats().call_resends.load(),
            0u);
}

// Sanitizer builds check the same path with 16 MB: instrumented loops over 100 MB take minutes.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr size_t kBig = 16 << 20;
#else
constexpr size_t kBig = 100 << 20;
#endif

TEST(RpcNetTest, BytesFlippedOnTheWireAreCaughtAndTheCallsRetried) {
  // 30% of messages get one byte flipped after the sender's checksums were taken: datagrams are
  // caught by the message CRC, TCP frames by the frame CRC checked as they stream.
  Options o;
  o.resend_max_us = 200'000;  // a dropped TCP connection costs a reconnect; retry soon after
  Pair p = StartPair(o);
  const net::Faults faults{.corrupt = 0.3};
  p.a->transport->SetFaults(faults);
  p.b->transport->SetFaults(faults);
  constexpr int kCalls = 60;
  Tally tally(kCalls);
  for (int i = 0; i < kCalls; i++) {
    // Every other call carries 100 KB that does not compress: a TCP frame with the frame-CRC
    // flag.
    const std::string name = "x" + std::to_string(i);
    const std::string req = i % 2 == 0 ? Incompressible(name, 100000, i) : name;
    p.a->endpoint->CallAsync(2, kIncrement, req, 60'000'000, tally.Expect(req + "#1"));
  }
  ASSERT_TRUE(tally.Wait(90));
  EXPECT_EQ(tally.right(), kCalls);
  EXPECT_EQ(p.b->EffectCount(), static_cast<size_t>(kCalls));
  EXPECT_GT(p.b->transport->stats().bad_frames.load(), 0u);
  EXPECT_GT(p.a->endpoint->stats().bad_messages + p.b->endpoint->stats().bad_messages, 0u);
}

TEST(RpcNetTest, HundredMegabytesArriveIntact) {
  Pair p = StartPair();
  std::string big(kBig, '\0');
  std::mt19937_64 rng(7);
  for (size_t i = 0; i + 8 <= big.size(); i += 8) {
    const uint64_t v = rng();
    std::memcpy(big.data() + i, &v, 8);
  }
  const uint64_t want = HashBytes(big);
  Result<std::string> r = p.a->endpoint->Call(2, kEcho, big, 120'000'000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->size(), big.size());
  EXPECT_EQ(HashBytes(*r), want);
}

TEST(RpcNetTest, APeerRestartingMidStreamAnswersEveryCall) {
  Pair p = StartPair();
  constexpr int kCalls = 300;
  Tally tally(kCalls);
  std::thread caller([&] {
    for (int i = 0; i < kCalls; i++) {
      p.a->endpoint->CallAsync(2, kIncrement, "s" + std::to_string(i), 60'000'000, tally.Expect());
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  p.b.reset();  // the peer's process ends mid-stream...
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  p.b = StartNode(2, p.port_b, {1, "127.0.0.1", p.port_a});  // ...and starts again
  caller.join();
  ASSERT_TRUE(tally.Wait(90));
  EXPECT_EQ(tally.right(), kCalls);
}

TEST(RpcNetTest, CallsWaitOutAPartitionAndCompleteWhenItHeals) {
  Pair p = StartPair();
  p.a->transport->Block(2, true);
  p.b->transport->Block(1, true);
  constexpr int kCalls = 50;
  Tally tally(kCalls);
  for (int i = 0; i < kCalls; i++) {
    p.a->endpoint->CallAsync(2, kIncrement, "h" + std::to_string(i), 60'000'000, tally.Expect());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(tally.done(), 0);
  p.a->transport->Block(2, false);
  p.b->transport->Block(1, false);
  ASSERT_TRUE(tally.Wait(30));
  EXPECT_EQ(tally.right(), kCalls);
  for (int i = 0; i < kCalls; i++) EXPECT_EQ(p.b->Effects("1:h" + std::to_string(i)), 1);
}

TEST(RpcNetTest, ACallToADeadPeerFailsAtItsDeadline) {
  const uint16_t nobody = floe::testing::FreePort("127.0.0.1");
  auto a = StartNode(1, floe::testing::FreePort("127.0.0.1"), {2, "127.0.0.1", nobody});
  const uint64_t t0 = NowMicros();
  Result<std::string> r = a->endpoint->Call(2, kEcho, "anyone?", 300'000);
  const uint64_t took = NowMicros() - t0;
  EXPECT_EQ(r.status().code(), StatusCode::kTimeout);
  EXPECT_GE(took, 290'000u);
  EXPECT_LT(took, 2'000'000u);
}

uint64_t NowMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// A stranger without an endpoint: CALLs written by hand, never acknowledged.
struct RawStranger {
  net::AsioLoop loop;
  std::unique_ptr<net::UdpTcpTransport> transport;
  RawStranger(uint16_t port, uint16_t member_port) {
    net::TransportOptions t;
    t.self = kStrangerId;
    t.port = port;
    t.peers = {{kAnyNodeId, "127.0.0.1", member_port}};
    auto started = net::UdpTcpTransport::Start(loop, t);
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    if (started.ok()) transport = std::move(started).value();
  }
  bool ok() const { return transport != nullptr; }
  void Call(uint16_t method, std::string_view payload, uint64_t incarnation,
            const CodecOptions& codec = {}, uint64_t task = 1) {
    Header h;
    h.kind = Kind::kCall;
    h.priority = 1;
    h.sender = kStrangerId;
    h.receiver = kAnyNodeId;
    h.incarnation = incarnation;
    h.task = task;
    h.code = method;
    auto out = std::make_shared<net::OutMessage>();
    out->body = Encode(h, payload, codec);
    EXPECT_TRUE(transport->Send(kAnyNodeId, net::Transport::Bytes(std::move(out))).ok());
  }
  // Any message, as `h` says it is (its sender field included), flattened.
  void Send(std::string bytes) {
    auto out = std::make_shared<net::OutMessage>();
    out->body = std::move(bytes);
    EXPECT_TRUE(transport->Send(kAnyNodeId, net::Transport::Bytes(std::move(out))).ok());
  }
  void AckAck(uint64_t incarnation, uint64_t task, uint64_t mark) {
    Header h;
    h.kind = Kind::kAckAck;
    h.priority = 1;
    h.sender = kStrangerId;
    h.receiver = kAnyNodeId;
    h.incarnation = incarnation;
    h.task = task;
    h.mark = mark;
    auto out = std::make_shared<net::OutMessage>();
    out->body = Encode(h, {}, {});
    EXPECT_TRUE(transport->Send(kAnyNodeId, net::Transport::Bytes(std::move(out))).ok());
  }
};

// Member 1, which hears a stranger sending from `stranger_port`: the stranger's method is kEcho
// and every request counts as proven, unless `o` sets them.
std::unique_ptr<RealNode> StartStrangersMember(uint16_t member_port, uint16_t stranger_port,
                                               Options o = {}) {
  if (o.stranger_method == 0) o.stranger_method = kEcho;
  if (!o.stranger_check) o.stranger_check = [](std::string_view) { return true; };
  auto member =
      StartNode(1, member_port, {2, "127.0.0.1", floe::testing::FreePort("127.0.0.1")}, o);
  if (member != nullptr) member->transport->SetPeer({kStrangerId, "127.0.0.1", stranger_port});
  return member;
}

// Whether `counter` reaches n within 5 s (polled every 10 ms).
bool ReachesWithin5s(const std::atomic<uint64_t>& counter, uint64_t n) {
  for (int i = 0; i < 500 && counter.load() < n; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return counter.load() >= n;
}

// Without a secret anyone can send as a peer: one datagram claiming peer 2 with an incarnation
// far ahead of the clock must not make node 2's real messages stale at node 1 for good (a
// hostile test cut a member off so). Such a message is dropped, and 2 and 1 keep talking.
TEST(RpcNetTest, APeersIncarnationFarAheadIsDropped) {
  Pair p = StartPair();
  ASSERT_TRUE(p.a && p.b);
  ASSERT_TRUE(p.b->endpoint->Call(1, kEcho, "before", 10'000'000).ok());
  net::AsioLoop loop;
  net::TransportOptions t;
  t.self = 2;  // forged: node 2's id from another port
  t.port = floe::testing::FreePort("127.0.0.1");
  t.peers = {{1, "127.0.0.1", p.port_a}};
  auto forger = net::UdpTcpTransport::Start(loop, t);
  ASSERT_TRUE(forger.ok());
  Header h;
  h.kind = Kind::kCall;
  h.priority = 1;
  h.sender = 2;
  h.receiver = 1;
  h.incarnation = NowMicros() + 1'000'000'000'000ull;
  h.task = 1;
  h.code = kEcho;
  auto out = std::make_shared<net::OutMessage>();
  out->body = Encode(h, "forged", {});
  ASSERT_TRUE((*forger)->Send(1, net::Transport::Bytes(std::move(out))).ok());
  ASSERT_TRUE(ReachesWithin5s(p.a->endpoint->stats().stale, 1));
  Result<std::string> r = p.b->endpoint->Call(1, kEcho, "after", 3'000'000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "after");
}

// Options::stranger_method (docs/membership.md J1): a node without an id calls one method of a
// node that has a secret, without a MAC, addressing it as kAnyNodeId, and gets its answer;
// every other method, and a message that carries a MAC of another secret, is dropped.
TEST(RpcNetTest, AStrangerCallsOnlyItsMethodWithoutAMac) {
  const uint16_t member_port = floe::testing::FreePort("127.0.0.1");
  const uint16_t stranger_port = floe::testing::FreePort("127.0.0.1");
  Options o;
  o.secret = "the cluster's";
  auto member = StartStrangersMember(member_port, stranger_port, o);
  ASSERT_NE(member, nullptr);
  auto stranger_with = [&](std::string secret) {
    Options so;
    so.secret = std::move(secret);
    so.stranger_method = 0;
    so.down_after_us = 60'000'000;
    return StartNode(kStrangerId, stranger_port, {kAnyNodeId, "127.0.0.1", member_port}, so);
  };
  {
    auto stranger = stranger_with("");
    ASSERT_NE(stranger, nullptr);
    Result<std::string> r = stranger->endpoint->Call(kAnyNodeId, kEcho, "hello", 2'000'000);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r, "hello");
    // Its other methods are not open to it.
    r = stranger->endpoint->Call(kAnyNodeId, kIncrement, "x", 300'000);
    EXPECT_EQ(r.status().code(), StatusCode::kTimeout);
    EXPECT_EQ(member->EffectCount(), 0u);
  }
  {
    // A MAC under another secret is not a stranger's message: dropped.
    auto stranger = stranger_with("another");
    ASSERT_NE(stranger, nullptr);
    Result<std::string> r = stranger->endpoint->Call(kAnyNodeId, kEcho, "hello", 300'000);
    EXPECT_EQ(r.status().code(), StatusCode::kTimeout);
  }
  EXPECT_GT(member->endpoint->stats().auth_failures.load(), 0u);
  // Without stranger_method nothing of it is taken.
  Options closed;
  closed.secret = "the cluster's";
  const uint16_t closed_port = floe::testing::FreePort("127.0.0.1");
  auto shut =
      StartNode(1, closed_port, {2, "127.0.0.1", floe::testing::FreePort("127.0.0.1")}, closed);
  ASSERT_NE(shut, nullptr);
  shut->transport->SetPeer({kStrangerId, "127.0.0.1", stranger_port});
  Options so;
  so.down_after_us = 60'000'000;
  auto stranger = StartNode(kStrangerId, stranger_port, {kAnyNodeId, "127.0.0.1", closed_port}, so);
  ASSERT_NE(stranger, nullptr);
  Result<std::string> r = stranger->endpoint->Call(kAnyNodeId, kEcho, "hello", 300'000);
  EXPECT_EQ(r.status().code(), StatusCode::kTimeout);
}

// One message of a stranger with an incarnation 59 minutes ahead of the clock (the bound is an
// hour) does not shut out the joiners after it: once its call is answered, a stranger with a
// lower incarnation is heard (docs/rpc.md, "A stranger").
TEST(RpcNetTest, AStrangerFarAheadShutsOutNoLaterStranger) {
  const uint16_t member_port = floe::testing::FreePort("127.0.0.1");
  const uint16_t stranger_port = floe::testing::FreePort("127.0.0.1");
  auto member = StartStrangersMember(member_port, stranger_port);
  ASSERT_NE(member, nullptr);
  {
    // A bare transport sends one CALL by hand, its incarnation far ahead.
    RawStranger raw(stranger_port, member_port);
    ASSERT_TRUE(raw.ok());
    raw.Call(kEcho, "from the future", NowMicros() + 59ull * 60 * 1'000'000);
    for (int i = 0; i < 500 && member->endpoint->stats().handled.load() == 0; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(member->endpoint->stats().handled.load(), 1u);
  }
  Options so;
  so.down_after_us = 60'000'000;
  auto stranger = StartNode(kStrangerId, stranger_port, {kAnyNodeId, "127.0.0.1", member_port}, so);
  ASSERT_NE(stranger, nullptr);
  Result<std::string> r = stranger->endpoint->Call(kAnyNodeId, kEcho, "hello", 2'000'000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "hello");
}

// A stranger's ACKACK is unproven: its mark never collects a running call of that incarnation
// (the call would go unanswered and its resends count as stale); it only finishes the task it
// acknowledges (docs/rpc.md, "A stranger").
TEST(RpcNetTest, AStrangersAckAckCollectsNoRunningCall) {
  const uint16_t member_port = floe::testing::FreePort("127.0.0.1");
  const uint16_t stranger_port = floe::testing::FreePort("127.0.0.1");
  Options o;
  o.stranger_method = kHeld;
  o.stranger_check = [](std::string_view) { return true; };
  std::promise<void> release;
  bool let_go = false;
  auto let_go_at_exit = [&] {
    if (!std::exchange(let_go, true)) release.set_value();
  };
  auto member = StartNode(1, member_port, {2, "127.0.0.1", floe::testing::FreePort("127.0.0.1")}, o,
                          release.get_future().share());
  ASSERT_NE(member, nullptr);
  // Runs before `member` is destroyed (which joins the held handler's thread).
  std::unique_ptr<void, std::function<void(void*)>> guard(&let_go,
                                                          [&](void*) { let_go_at_exit(); });
  member->transport->SetPeer({kStrangerId, "127.0.0.1", stranger_port});
  RawStranger raw(stranger_port, member_port);
  ASSERT_TRUE(raw.ok());
  const Stats& stats = member->endpoint->stats();
  auto wait_for = [](auto done) {
    for (int i = 0; i < 500 && !done(); i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
  };
  const uint64_t inc = NowMicros();
  raw.Call(kHeld, "held", inc, {}, /*task=*/1);
  ASSERT_TRUE(wait_for([&] { return stats.handled.load() == 1; }));
  // A forged ACKACK marking task 1 done, then the call's resend: still running, so NACKed as a
  // duplicate, not dropped as stale.
  raw.AckAck(inc, /*task=*/1, /*mark=*/2);
  raw.Call(kHeld, "held", inc, {}, /*task=*/1);
  ASSERT_TRUE(wait_for([&] { return stats.duplicates.load() + stats.stale.load() >= 1; }));
  EXPECT_EQ(stats.stale.load(), 0u);
  EXPECT_EQ(stats.duplicates.load(), 1u);
  let_go_at_exit();
  // Its answer is kept and (never acknowledged) resent.
  EXPECT_TRUE(wait_for([&] { return stats.ack_resends.load() > 0; }));
}

// A stranger's call without its proof (Options::stranger_check) is dropped unanswered: nothing
// is sent back for it, so it cannot aim answers at anyone; a proven one is answered, and that
// answer, never acknowledged, is resent for 2 s at most (docs/rpc.md, "A stranger").
TEST(RpcNetTest, AStrangersUnprovenCallIsNotAnsweredAndAnswersGiveUpSoon) {
  const uint16_t member_port = floe::testing::FreePort("127.0.0.1");
  const uint16_t stranger_port = floe::testing::FreePort("127.0.0.1");
  Options o;
  o.secret = "the cluster's";
  o.stranger_check = [](std::string_view payload) { return payload.substr(0, 6) == "proven"; };
  auto member = StartStrangersMember(member_port, stranger_port, o);
  ASSERT_NE(member, nullptr);
  {
    Options so;
    so.down_after_us = 60'000'000;
    auto stranger =
        StartNode(kStrangerId, stranger_port, {kAnyNodeId, "127.0.0.1", member_port}, so);
    ASSERT_NE(stranger, nullptr);
    Result<std::string> r = stranger->endpoint->Call(kAnyNodeId, kEcho, "unproven", 500'000);
    EXPECT_EQ(r.status().code(), StatusCode::kTimeout);
    EXPECT_EQ(stranger->endpoint->stats().messages_received.load(), 0u);
    EXPECT_EQ(member->endpoint->stats().handled.load(), 0u);
    EXPECT_GT(member->endpoint->stats().auth_failures.load(), 0u);
    r = stranger->endpoint->Call(kAnyNodeId, kEcho, "proven hello", 2'000'000);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r, "proven hello");
  }
  RawStranger raw(stranger_port, member_port);
  ASSERT_TRUE(raw.ok());
  raw.Call(kEcho, "proven, never acknowledged", NowMicros());
  // The answer is resent (no ACKACK comes) until it is given up, well before the 60 s of a
  // peer's answer.
  uint64_t resends = 0;
  for (int i = 0; i < 100; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    resends = member->endpoint->stats().ack_resends.load();
    if (resends > 0) break;
  }
  ASSERT_GT(resends, 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));
  resends = member->endpoint->stats().ack_resends.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(member->endpoint->stats().ack_resends.load(), resends) << "still resent after 3 s";
}

// A stranger's message is decoded on its terms: at most 4 KiB and never compressed, so an
// unauthenticated sender makes the member allocate or inflate nothing large; the same call
// plain and small is taken (docs/rpc.md, "A stranger").
TEST(RpcNetTest, AStrangersMessagesAreSmallAndPlain) {
  const uint16_t member_port = floe::testing::FreePort("127.0.0.1");
  const uint16_t stranger_port = floe::testing::FreePort("127.0.0.1");
  Options o;
  o.secret = "the cluster's";
  auto member = StartStrangersMember(member_port, stranger_port, o);
  ASSERT_NE(member, nullptr);
  RawStranger raw(stranger_port, member_port);
  ASSERT_TRUE(raw.ok());
  const Stats& stats = member->endpoint->stats();
  uint64_t inc = NowMicros();
  // 4,000 bytes that LZ4 makes about 30: refused before inflating.
  CodecOptions squeeze;
  squeeze.compress_min = 1;
  raw.Call(kEcho, std::string(4000, 'z'), inc++, squeeze);
  EXPECT_TRUE(ReachesWithin5s(stats.bad_messages, 1));
  // 5,000 plain bytes: above a stranger's 4 KiB.
  raw.Call(kEcho, std::string(5000, 'z'), inc++);
  EXPECT_TRUE(ReachesWithin5s(stats.bad_messages, 2));
  EXPECT_EQ(stats.handled.load(), 0u);
  // 4,000 plain bytes are a stranger's call.
  raw.Call(kEcho, std::string(4000, 'z'), inc++);
  EXPECT_TRUE(ReachesWithin5s(stats.handled, 1));
  EXPECT_EQ(stats.bad_messages.load(), 2u);
}

// A message from a node that is not a peer (or a peer's to another node) is dropped on its
// header's sender and receiver fields, before its payload is checksummed or authenticated
// (docs/rpc.md, "Peers and liveness"): one with a wrong MAC or a damaged payload counts as an
// unknown sender, not as an authentication failure or a bad message, which only decoding finds.
TEST(RpcNetTest, AnUnknownSendersMessageIsDroppedBeforeItsPayloadIsDecoded) {
  const uint16_t member_port = floe::testing::FreePort("127.0.0.1");
  const uint16_t sender_port = floe::testing::FreePort("127.0.0.1");
  Options o;
  o.secret = "the cluster's";
  auto member = StartStrangersMember(member_port, sender_port, o);
  ASSERT_NE(member, nullptr);
  RawStranger raw(sender_port, member_port);
  ASSERT_TRUE(raw.ok());
  const Stats& stats = member->endpoint->stats();
  const MacKey other = DeriveMacKey("not the cluster's");
  CodecOptions wrong_key;
  wrong_key.key = &other;
  auto message = [](NodeId sender, NodeId receiver, const CodecOptions& codec) {
    Header h;
    h.kind = Kind::kCall;
    h.priority = 1;
    h.sender = sender;
    h.receiver = receiver;
    h.incarnation = NowMicros();
    h.task = 1;
    h.code = kEcho;
    return Encode(h, std::string(1000, 'p'), codec);
  };
  const uint64_t received = stats.messages_received.load();
  // Node 9 is no peer: a wrong MAC, then a damaged payload (its CRC no longer matches).
  raw.Send(message(9, 1, wrong_key));
  std::string damaged = message(9, 1, {});
  damaged[kHeaderBytes + 10] ^= 1;
  raw.Send(std::move(damaged));
  // Peer 2's message to node 7, not to us, with a wrong MAC.
  raw.Send(message(2, 7, wrong_key));
  ASSERT_TRUE(ReachesWithin5s(stats.messages_received, received + 3));
  EXPECT_TRUE(ReachesWithin5s(stats.unknown_sender, 3));
  EXPECT_EQ(stats.auth_failures.load(), 0u) << "an unknown sender's MAC was checked";
  EXPECT_EQ(stats.bad_messages.load(), 0u) << "an unknown sender's payload was checksummed";
  // Peer 2's own message to us is decoded: its wrong MAC is found.
  raw.Send(message(2, 1, wrong_key));
  EXPECT_TRUE(ReachesWithin5s(stats.auth_failures, 1));
  EXPECT_EQ(stats.unknown_sender.load(), 3u);
  EXPECT_EQ(stats.handled.load(), 0u);
}

// The stranger's bounds (docs/rpc.md, "A stranger"): an incarnation more than an hour ahead of
// the member's clock is dropped, and at most 64 calls of one stranger are remembered (the
// rest dropped until some are collected), so an unauthenticated sender holds little state.
TEST(RpcNetTest, AStrangerIsBounded) {
  const uint16_t member_port = floe::testing::FreePort("127.0.0.1");
  const uint16_t stranger_port = floe::testing::FreePort("127.0.0.1");
  auto member = StartStrangersMember(member_port, stranger_port);
  ASSERT_NE(member, nullptr);
  RawStranger raw(stranger_port, member_port);
  ASSERT_TRUE(raw.ok());
  const Stats& stats = member->endpoint->stats();
  auto settle = [&](const std::atomic<uint64_t>& counter, uint64_t n) {
    for (int i = 0; i < 500 && counter.load() < n; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return counter.load();
  };
  raw.Call(kEcho, "from two hours ahead", NowMicros() + 2ull * 3600 * 1'000'000);
  EXPECT_EQ(settle(stats.unknown_sender, 1), 1u);
  EXPECT_EQ(stats.handled.load(), 0u);
  const uint64_t inc = NowMicros();
  for (uint64_t task = 1; task <= 70; task++) {
    raw.Call(kEcho, "call " + std::to_string(task), inc, CodecOptions{}, task);
    // One at a time, so none is lost to a full socket buffer rather than to the bound.
    settle(stats.messages_received, task + 1);
  }
  EXPECT_EQ(settle(stats.handled, 64), 64u);
  EXPECT_EQ(settle(stats.unknown_sender, 7), 7u);
  EXPECT_EQ(stats.handled.load(), 64u);
}

TEST(RpcNetTest, NestedCallsClimbPriorityClassesAndNeverDeadlock) {
  // One thread per class: 20 concurrent class-0 handlers on each node each wait for a class-1
  // call to the other node. With a single pool they would all block each other.
  Options o;
  o.threads_per_class = 1;
  Pair p = StartPair(o);
  constexpr int kCalls = 20;
  Tally tally(2 * kCalls);
  for (int i = 0; i < 2 * kCalls; i++) {
    RealNode& from = i % 2 == 0 ? *p.a : *p.b;
    const std::string req = "n" + std::to_string(i);
    from.endpoint->CallAsync(from.other, kNested, req, 30'000'000, tally.Expect("nested:" + req));
  }
  ASSERT_TRUE(tally.Wait(60));
  EXPECT_EQ(tally.right(), 2 * kCalls);
  // Waiting on a method of the same class from a handler is refused, not risked; so is waiting
  // at all from an inline handler (it runs on the thread that receives answers).
  Result<std::string> same = p.a->endpoint->Call(2, kSameClass, "x", 10'000'000);
  EXPECT_EQ(same.status().code(), StatusCode::kFailedPrecondition);
  Result<std::string> inline_wait = p.a->endpoint->Call(2, kInlineWaits, "x", 10'000'000);
  EXPECT_EQ(inline_wait.status().code(), StatusCode::kFailedPrecondition);
}

// Two processes, 127.0.0.2 and 127.0.0.3, each serving and calling the other.
TEST(RpcNetTest, TwoProcessesTalkToEachOther) {
  const uint16_t p2 = floe::testing::FreePort("127.0.0.2"),
                 p3 = floe::testing::FreePort("127.0.0.3");
  ASSERT_NE(p2, 0);
  ASSERT_NE(p3, 0);
  const std::string bin = FLOE_RPC_PEER;
  const pid_t a = floe::testing::Spawn(
      {bin, "--self", "2", "--bind", "127.0.0.2", "--port", std::to_string(p2), "--peer",
       "3@127.0.0.3:" + std::to_string(p3), "--calls", "300", "--secret", "two-process-test"});
  const pid_t b = floe::testing::Spawn(
      {bin, "--self", "3", "--bind", "127.0.0.3", "--port", std::to_string(p3), "--peer",
       "2@127.0.0.2:" + std::to_string(p2), "--calls", "300", "--secret", "two-process-test"});
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  std::map<pid_t, int> status;
  const uint64_t start = NowMicros();
  while (status.size() < 2 && NowMicros() - start < 120'000'000) {
    for (pid_t pid : {a, b}) {
      int st = 0;
      if (status.count(pid) == 0 && waitpid(pid, &st, WNOHANG) == pid) status[pid] = st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (pid_t pid : {a, b}) {
    if (status.count(pid) == 0) {
      kill(pid, SIGKILL);  // bounded: a hung peer fails the test, it does not hang it
      waitpid(pid, nullptr, 0);
      ADD_FAILURE() << "rpc_peer " << pid << " did not finish";
      continue;
    }
    EXPECT_TRUE(WIFEXITED(status[pid]) && WEXITSTATUS(status[pid]) == 0) << status[pid];
  }
}

}  // namespace
}  // namespace floe::rpc
