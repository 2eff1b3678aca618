// RPC on the simulated network: the rules of docs/rpc.md, each under faults, seeded so a
// failure replays exactly (the seed is printed).

#include "rpc/rpc.h"

#include <gtest/gtest.h>

#include <future>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "net/net.h"
#include "testing/testing.h"

namespace floe::rpc {
namespace {

using net::NodeId;
using net::SimNetwork;

constexpr uint16_t kIncrement = 1;  // adds the request's number to a per-caller counter
constexpr uint16_t kEcho = 2;
constexpr uint16_t kFail = 3;

// A node: its endpoint, and the side effects its handlers performed (call key -> times run).
struct Node {
  std::unique_ptr<Endpoint> endpoint;
  std::map<std::string, int> effects;
};

Options SimOptions(std::vector<NodeId> peers, uint64_t seed) {
  Options o;
  o.peers = std::move(peers);
  o.inline_handlers = true;
  o.seed = seed;
  o.down_after_us = 3'600'000'000;  // liveness is tested on its own below
  return o;
}

std::unique_ptr<Node> MakeNode(SimNetwork& net, NodeId id, std::vector<NodeId> peers, uint64_t seed,
                               Options base = {}) {
  auto node = std::make_unique<Node>();
  Options o = SimOptions(std::move(peers), seed + id);
  o.secret = base.secret;
  if (base.down_after_us != Options{}.down_after_us) o.down_after_us = base.down_after_us;
  node->endpoint = std::make_unique<Endpoint>(net.AddNode(id), o);
  Node* raw = node.get();
  node->endpoint->Register(kIncrement, 0, [raw](NodeId from, std::string_view req) {
    const int times = ++raw->effects[std::to_string(from) + ":" + std::string(req)];
    return Result<std::string>(std::string(req) + "#" + std::to_string(times));
  });
  node->endpoint->Register(
      kEcho, 0, [](NodeId, std::string_view req) { return Result<std::string>(std::string(req)); });
  node->endpoint->Register(kFail, 1, [](NodeId, std::string_view req) -> Result<std::string> {
    return Status::NotFound("no such thing: " + std::string(req));
  });
  node->endpoint->Start();
  return node;
}

TEST(RpcCodecTest, SipHashMatchesTheReferenceVectors) {
  const MacKey key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
  std::string in;
  for (int i = 0; i < 16; i++) in.push_back(static_cast<char>(i));
  const std::map<size_t, std::vector<uint8_t>> want = {
      {0,
       {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02,
        0x93}},
      {1,
       {0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22, 0xfc,
        0x45}},
      {8,
       {0x3b, 0x62, 0xa9, 0xba, 0x62, 0x58, 0xf5, 0x61, 0x0f, 0x83, 0xe2, 0x64, 0xf3, 0x14, 0x97,
        0xb4}},
      {15,
       {0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf, 0xc3,
        0xd9}},
  };
  for (const auto& [len, bytes] : want) {
    uint8_t out[16];
    SipHash128(key, std::string_view(in).substr(0, len), out);
    EXPECT_EQ(std::vector<uint8_t>(out, out + 16), bytes) << "length " << len;
  }
}

TEST(RpcCodecTest, RoundTripsAndRejectsEveryAlteration) {
  const MacKey key = DeriveMacKey("cluster secret");
  for (const MacKey* k : {static_cast<const MacKey*>(nullptr), &key}) {
    CodecOptions o;
    o.key = k;
    Header h;
    h.kind = Kind::kAck;
    h.sender = 7;
    h.receiver = 9;
    h.incarnation = 0x1122334455667788ULL;
    h.task = 42;
    h.mark = 99;
    h.code = 5;
    for (const std::string& payload :
         {std::string(), std::string("short"), std::string(100000, 'z')}) {
      const std::string bytes = Encode(h, payload, o);
      Result<Message> m = Decode(bytes, o);
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      EXPECT_EQ(m->payload(), payload);
      EXPECT_EQ(m->header.task, 42u);
      EXPECT_EQ(m->header.mark, 99u);
      EXPECT_EQ(m->header.code, 5u);
      EXPECT_EQ(m->header.incarnation, h.incarnation);
      if (payload.size() == 100000) {
        EXPECT_LT(bytes.size(), 10000u);  // compressed
      }
      // Any single flipped bit, anywhere, is caught (CRC, MAC, or a header check).
      for (size_t i = 0; i < std::min<size_t>(bytes.size(), 200); i++) {
        std::string bad = bytes;
        bad[i] = static_cast<char>(bad[i] ^ 0x10);
        EXPECT_FALSE(Decode(bad, o).ok()) << "byte " << i;
      }
      for (size_t cut = 0; cut < bytes.size(); cut += 1 + bytes.size() / 50) {
        EXPECT_FALSE(Decode(bytes.substr(0, cut), o).ok());
      }
    }
  }
  // A MAC is required with a secret, refused without one, and keys must match.
  CodecOptions plain, signed_a, signed_b;
  const MacKey other = DeriveMacKey("other secret");
  signed_a.key = &key;
  signed_b.key = &other;
  Header h;
  EXPECT_EQ(Decode(Encode(h, "x", plain), signed_a).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(Decode(Encode(h, "x", signed_a), plain).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(Decode(Encode(h, "x", signed_b), signed_a).status().code(),
            StatusCode::kPermissionDenied);
  // A payload of 64 KiB and more is left to the transport's frame CRC: accepted only when the
  // transport says it checked the message.
  std::string big;
  std::mt19937_64 rng(1);
  for (int i = 0; i < 10000; i++) {
    const uint64_t v = rng();
    big.append(reinterpret_cast<const char*>(&v), 8);
  }
  const std::string framed = Encode(h, big, plain);
  EXPECT_EQ(Decode(framed, plain).status().code(), StatusCode::kCorruption);
  ASSERT_TRUE(Decode(framed, plain, /*transport_checked=*/true).ok());
  EXPECT_EQ(Decode(framed, plain, true)->payload(), big);
  std::string bad_header = framed;
  bad_header[30] ^= 1;  // the header itself is still covered
  EXPECT_FALSE(Decode(bad_header, plain, true).ok());
  // Lengths are checked before anything is allocated.
  CodecOptions small;
  small.max_message = 1000;
  small.compress_min = 0;
  EXPECT_EQ(Decode(Encode(h, std::string(2000, 'a'), plain), small).status().code(),
            StatusCode::kResourceExhausted);
  // A codec that takes no LZ4 (a stranger's, docs/rpc.md) refuses a compressed payload before
  // inflating it, and takes the same payload sent plain.
  CodecOptions no_lz4;
  no_lz4.accept_lz4 = false;
  CodecOptions squeeze;
  squeeze.compress_min = 1;
  const std::string squeezed = Encode(h, std::string(4000, 'z'), squeeze);
  ASSERT_LT(squeezed.size(), 1000u);
  EXPECT_TRUE(Decode(squeezed, plain).ok());
  EXPECT_EQ(Decode(squeezed, no_lz4).status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(Decode(Encode(h, std::string(4000, 'z'), plain), no_lz4).ok());
}

// The bar from DESIGN.md §5: half of all messages lost, some duplicated, all reordered, and
// still every one of 10,000 calls completes, and every handler ran exactly once.
TEST(RpcSimTest, ExactlyOnceUnderHeavyLoss) {
  const uint64_t seed = testing::Seed();
  SimNetwork net(seed);
  net.SetFaults({.drop = 0.5,
                 .duplicate = 0.1,
                 .min_delay_us = 100,
                 .max_delay_us = 20'000,
                 .corrupt = 0.02});
  std::vector<std::unique_ptr<Node>> nodes;
  for (NodeId id = 1; id <= 3; id++) {
    std::vector<NodeId> peers;
    for (NodeId p = 1; p <= 3; p++) {
      if (p != id) peers.push_back(p);
    }
    nodes.push_back(MakeNode(net, id, peers, seed));
  }
  constexpr int kCalls = 10000;
  int done = 0, ok = 0;
  std::map<std::string, std::string> answers;
  for (int i = 0; i < kCalls; i++) {
    const NodeId from = 1 + static_cast<NodeId>(i % 3);
    const NodeId to = 1 + static_cast<NodeId>((i + 1 + (i / 3) % 2) % 3);
    const std::string req = "call" + std::to_string(i);
    nodes[from - 1]->endpoint->CallAsync(to, kIncrement, req, 3'600'000'000,
                                         [&, req](Result<std::string> r) {
                                           done++;
                                           if (r.ok()) {
                                             ok++;
                                             answers[req] = *r;
                                           }
                                         });
  }
  ASSERT_TRUE(net.RunUntil([&] { return done == kCalls; }, 7'200'000'000)) << done;
  EXPECT_EQ(ok, kCalls);
  int effects = 0;
  for (const auto& n : nodes) {
    for (const auto& [k, times] : n->effects) {
      EXPECT_EQ(times, 1) << k;
      effects++;
    }
  }
  EXPECT_EQ(effects, kCalls);
  for (const auto& [req, answer] : answers) EXPECT_EQ(answer, req + "#1");
  uint64_t resends = 0, duplicates = 0;
  for (const auto& n : nodes) {
    resends += n->endpoint->stats().call_resends + n->endpoint->stats().ack_resends;
    duplicates += n->endpoint->stats().duplicates;
  }
  EXPECT_GT(resends, 0u);
  EXPECT_GT(duplicates, 0u);
  uint64_t bad = 0;
  for (const auto& n : nodes) bad += n->endpoint->stats().bad_messages;
  EXPECT_GT(bad, 0u);  // corrupted messages were caught by the CRC, never acted on
  // Collection: once the callers' low-water marks pass, the dedup tables empty.
  net.SetFaults({});
  for (int round = 0; round < 3; round++) {
    for (NodeId id = 1; id <= 3; id++) {
      bool pinged = false;
      nodes[id - 1]->endpoint->CallAsync(id % 3 + 1, kEcho, "sweep", 60'000'000,
                                         [&](Result<std::string>) { pinged = true; });
      net.RunUntil([&] { return pinged; }, 60'000'000);
    }
    net.RunFor(2'000'000);
  }
  for (const auto& n : nodes) EXPECT_LE(n->endpoint->stats().callee_entries.load(), 2u);
  std::printf("sim: %llu sent, %llu dropped, %llu duplicated; %llu resends\n",
              static_cast<unsigned long long>(net.stats().sent),
              static_cast<unsigned long long>(net.stats().dropped),
              static_cast<unsigned long long>(net.stats().duplicated),
              static_cast<unsigned long long>(resends));
}

TEST(RpcSimTest, ErrorsTravelBackAsStatuses) {
  SimNetwork net(testing::Seed());
  auto a = MakeNode(net, 1, {2}, 1), b = MakeNode(net, 2, {1}, 1);
  std::optional<Result<std::string>> r;
  a->endpoint->CallAsync(2, kFail, "k", 1'000'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 10'000'000));
  EXPECT_EQ(r->status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r->status().message(), "no such thing: k");
  r.reset();
  a->endpoint->CallAsync(2, 77, "k", 1'000'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 10'000'000));
  EXPECT_EQ(r->status().code(), StatusCode::kUnimplemented);
  r.reset();
  a->endpoint->CallAsync(5, kEcho, "k", 1'000'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 10'000'000));
  EXPECT_EQ(r->status().code(), StatusCode::kInvalidArgument);
}

// Calls made one after another: each CALL's mark covers the previous answer, so no ACKACK is
// sent until the calls stop, then one, after ackack_delay_us, covers them all. The callee never
// resends an ACK and forgets every call. With the delay at 0 every answer gets its ACKACK.
TEST(RpcSimTest, SequentialCallsShareOneAckAck) {
  for (uint64_t delay : {uint64_t{2'000}, uint64_t{0}}) {
    SCOPED_TRACE("ackack_delay_us " + std::to_string(delay));
    SimNetwork net(testing::Seed());
    Options o = SimOptions({2}, 1);
    o.heartbeat_interval_us = 3'600'000'000;  // count call messages only
    o.ackack_delay_us = delay;
    Endpoint a(net.AddNode(1), o);
    o.peers = {1};
    Endpoint b(net.AddNode(2), o);
    b.Register(kEcho, 0,
               [](NodeId, std::string_view req) { return Result<std::string>(std::string(req)); });
    a.Start();
    b.Start();
    net.RunFor(1'000);
    const uint64_t before = a.stats().messages_sent.load();  // the first heartbeat
    constexpr int kCalls = 100;
    for (int i = 0; i < kCalls; i++) {
      std::optional<Result<std::string>> r;
      a.CallAsync(2, kEcho, std::to_string(i), 1'000'000, [&](Result<std::string> x) { r = x; });
      ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 10'000'000));
      ASSERT_TRUE(r->ok());
    }
    net.RunFor(200'000);  // past the flush and ten ACK resend intervals
    const uint64_t ackacks = a.stats().messages_sent.load() - before - kCalls;
    EXPECT_EQ(ackacks, delay > 0 ? 1u : static_cast<uint64_t>(kCalls));
    EXPECT_EQ(b.stats().ack_resends.load(), 0u);
    EXPECT_EQ(b.stats().callee_entries.load(), 0u);
    EXPECT_EQ(a.stats().call_resends.load(), 0u);
  }
}

TEST(RpcSimTest, DeadPeerFailsAtTheDeadlineNotNever) {
  SimNetwork net(testing::Seed());
  auto a = MakeNode(net, 1, {2}, 1);  // node 2 never exists
  std::optional<Result<std::string>> r;
  a->endpoint->CallAsync(2, kEcho, "x", 500'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 10'000'000));
  EXPECT_EQ(r->status().code(), StatusCode::kTimeout);
  EXPECT_GE(net.NowMicros(), 500'000u);
  EXPECT_LT(net.NowMicros(), 600'000u);
}

TEST(RpcSimTest, PeerGoesDownAndComesBack) {
  SimNetwork net(testing::Seed());
  Options fast;
  fast.down_after_us = 1'000'000;
  auto a = MakeNode(net, 1, {2}, 1, fast), b = MakeNode(net, 2, {1}, 1, fast);
  net.RunFor(500'000);
  EXPECT_TRUE(a->endpoint->PeerUp(2));
  net.Cut(1, 2, true);
  net.RunFor(2'000'000);
  EXPECT_FALSE(a->endpoint->PeerUp(2));
  std::optional<Result<std::string>> r;
  const uint64_t t0 = net.NowMicros();
  a->endpoint->CallAsync(2, kEcho, "x", 60'000'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 1'000'000));
  EXPECT_EQ(r->status().code(), StatusCode::kUnavailable);  // at once, not at the deadline
  EXPECT_EQ(net.NowMicros(), t0);
  net.Cut(1, 2, false);
  ASSERT_TRUE(net.RunUntil([&] { return a->endpoint->PeerUp(2); }, 2'000'000));
  EXPECT_GE(a->endpoint->stats().peers_down.load(), 1u);
}

// Membership that changes while serving (docs/membership.md, rule V4): a node that joins is
// added as a peer while the others serve, one that leaves is removed; neither needs a restart.
TEST(RpcSimTest, PeersAreAddedAndRemovedWhileServing) {
  SimNetwork net(testing::Seed());
  auto a = MakeNode(net, 1, {2}, 1), b = MakeNode(net, 2, {1}, 1);
  auto c = MakeNode(net, 3, {1}, 1);  // knows node 1; node 1 does not know it yet
  std::optional<Result<std::string>> r;
  c->endpoint->CallAsync(1, kEcho, "early", 300'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 1'000'000));
  EXPECT_EQ(r->status().code(), StatusCode::kTimeout) << "a stranger's call was answered";
  EXPECT_GE(a->endpoint->stats().unknown_sender.load(), 1u);
  r.reset();
  a->endpoint->CallAsync(3, kEcho, "x", 300'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(a->endpoint->PeerUp(3));
  EXPECT_EQ(a->endpoint->LeaseUntil(3), 0u);

  ASSERT_TRUE(a->endpoint->AddPeer(3).ok());
  ASSERT_TRUE(a->endpoint->AddPeer(3).ok()) << "idempotent";
  EXPECT_FALSE(a->endpoint->AddPeer(0).ok());
  EXPECT_FALSE(a->endpoint->AddPeer(1).ok()) << "itself";
  EXPECT_FALSE(a->endpoint->AddPeer(kMaxPeerId + 1).ok());
  r.reset();
  c->endpoint->CallAsync(1, kIncrement, "7", 5'000'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 5'000'000));
  ASSERT_TRUE(r->ok()) << r->status().ToString();
  EXPECT_EQ(**r, "7#1");
  // Heartbeats flow both ways now, and with them the lease.
  net.RunFor(1'000'000);
  EXPECT_TRUE(a->endpoint->PeerUp(3));
  EXPECT_GT(a->endpoint->LeaseUntil(3), net.NowMicros());

  // Removal: a call in flight fails at once, the lease and liveness go, and later messages are
  // dropped; the other peer is untouched.
  net.Cut(1, 3, true);
  r.reset();
  a->endpoint->CallAsync(3, kEcho, "pending", 60'000'000, [&](Result<std::string> x) { r = x; });
  net.RunFor(100'000);
  EXPECT_FALSE(r.has_value());
  a->endpoint->RemovePeer(3);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(a->endpoint->PeerUp(3));
  EXPECT_EQ(a->endpoint->LeaseUntil(3), 0u);
  net.Cut(1, 3, false);
  const uint64_t strangers = a->endpoint->stats().unknown_sender.load();
  net.RunFor(1'000'000);
  EXPECT_GT(a->endpoint->stats().unknown_sender.load(), strangers) << "its heartbeats dropped";
  EXPECT_EQ(a->endpoint->LeaseUntil(3), 0u);
  r.reset();
  a->endpoint->CallAsync(2, kIncrement, "1", 5'000'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 5'000'000));
  EXPECT_TRUE(r->ok());
  // Added again, it is a peer like any other.
  ASSERT_TRUE(a->endpoint->AddPeer(3).ok());
  r.reset();
  a->endpoint->CallAsync(3, kIncrement, "9", 5'000'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 5'000'000));
  ASSERT_TRUE(r->ok()) << r->status().ToString();
  EXPECT_EQ(**r, "9#1");
  (void)b;
}

TEST(RpcSimTest, CallsInFlightCompleteWhenAPartitionHeals) {
  SimNetwork net(testing::Seed());
  auto a = MakeNode(net, 1, {2}, 1), b = MakeNode(net, 2, {1}, 1);
  net.Cut(1, 2, true);
  int ok = 0;
  for (int i = 0; i < 100; i++) {
    a->endpoint->CallAsync(2, kIncrement, "p" + std::to_string(i), 120'000'000,
                           [&](Result<std::string> r) { ok += r.ok() ? 1 : 0; });
  }
  net.RunFor(10'000'000);
  EXPECT_EQ(ok, 0);
  net.Cut(1, 2, false);
  ASSERT_TRUE(net.RunUntil([&] { return ok == 100; }, 30'000'000));
  for (const auto& [k, times] : b->effects) EXPECT_EQ(times, 1) << k;
}

TEST(RpcSimTest, ACalleeRestartMidCallStillAnswers) {
  SimNetwork net(testing::Seed());
  auto a = MakeNode(net, 1, {2}, 1);
  auto b = MakeNode(net, 2, {1}, 1);
  net.Cut(1, 2, true);  // the call cannot reach the first process
  std::optional<Result<std::string>> r;
  a->endpoint->CallAsync(2, kIncrement, "r", 60'000'000, [&](Result<std::string> x) { r = x; });
  net.RunFor(1'000'000);
  b.reset();                      // node 2 crashes...
  b = MakeNode(net, 2, {1}, 99);  // ...and a new process starts (a new incarnation)
  net.Cut(1, 2, false);
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 30'000'000));
  ASSERT_TRUE(r->ok()) << r->status().ToString();
  EXPECT_EQ(**r, "r#1");
}

TEST(RpcSimTest, ARestartedCallerIsNotConfusedWithItsEarlierLife) {
  SimNetwork net(testing::Seed());
  auto a = MakeNode(net, 1, {2}, 1), b = MakeNode(net, 2, {1}, 1);
  std::optional<Result<std::string>> r;
  a->endpoint->CallAsync(2, kIncrement, "same", 10'000'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 10'000'000));
  a.reset();
  a = MakeNode(net, 1, {2}, 2);  // new incarnation: task ids start at 1 again
  r.reset();
  a->endpoint->CallAsync(2, kIncrement, "same", 10'000'000, [&](Result<std::string> x) { r = x; });
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 10'000'000));
  ASSERT_TRUE(r->ok());
  EXPECT_EQ(**r, "same#2");  // ran again: a new call, not mistaken for task 1 of the old life
}

// A CALL from a caller's previous life, held up in the network until after the new life has
// called, must not displace the new life. With random incarnations the callee could not tell
// which life was the earlier one: it took the late CALL for a restart, retired the live
// incarnation and dropped every call it made afterwards.
TEST(RpcSimTest, ALateCallFromAnEarlierLifeDoesNotRetireTheCurrentOne) {
  const uint64_t seed = testing::Seed();
  SimNetwork net(seed);
  auto b = MakeNode(net, 2, {1}, seed);
  auto a = MakeNode(net, 1, {2}, seed);
  net.SetFaults({.min_delay_us = 5'000'000, .max_delay_us = 5'000'000});
  a->endpoint->CallAsync(2, kIncrement, "old", 60'000'000, [](Result<std::string>) {});
  net.RunFor(1'000);  // the CALL is on its way, no resend yet
  a.reset();          // the caller crashes...
  net.SetFaults({});
  a = MakeNode(net, 1, {2}, seed + 7);  // ...and starts again
  auto call = [&](const std::string& req) {
    std::optional<Result<std::string>> r;
    a->endpoint->CallAsync(2, kIncrement, req, 1'000'000, [&](Result<std::string> x) { r = x; });
    EXPECT_TRUE(net.RunUntil([&] { return r.has_value(); }, 2'000'000));
    return r.value_or(Status::Internal("no result"));
  };
  Result<std::string> first = call("first");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  net.RunFor(6'000'000);  // the earlier life's CALL arrives now
  Result<std::string> second = call("second");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(*second, "second#1");
  EXPECT_EQ(b->effects.count("1:old"), 0u);  // the earlier life's late call is ignored
  EXPECT_GE(b->endpoint->stats().stale.load(), 1u);
}

TEST(RpcSimTest, CancelEndsACallAtOnce) {
  SimNetwork net(testing::Seed());
  auto a = MakeNode(net, 1, {2}, 1);
  std::optional<Result<std::string>> r;
  const uint64_t id =
      a->endpoint->CallAsync(2, kEcho, "x", 60'000'000, [&](Result<std::string> x) { r = x; });
  net.RunFor(100'000);
  a->endpoint->Cancel(id);
  ASSERT_TRUE(net.RunUntil([&] { return r.has_value(); }, 1'000));
  EXPECT_EQ(r->status().code(), StatusCode::kCancelled);
}

TEST(RpcSimTest, WithASecretStrangersAndForgersAreDropped) {
  SimNetwork net(testing::Seed());
  Options secret;
  secret.secret = "s3cret";
  Options wrong;
  wrong.secret = "other";
  auto a = MakeNode(net, 1, {2, 3}, 1, secret), b = MakeNode(net, 2, {1}, 1, secret);
  auto forger = MakeNode(net, 3, {1}, 1, wrong);
  auto stranger = MakeNode(net, 4, {1}, 1, secret);  // not in node 1's peer list
  std::optional<Result<std::string>> good, forged, strange;
  a->endpoint->CallAsync(2, kEcho, "hi", 1'000'000, [&](Result<std::string> x) { good = x; });
  forger->endpoint->CallAsync(1, kIncrement, "evil", 1'000'000,
                              [&](Result<std::string> x) { forged = x; });
  stranger->endpoint->CallAsync(1, kIncrement, "evil", 1'000'000,
                                [&](Result<std::string> x) { strange = x; });
  ASSERT_TRUE(net.RunUntil([&] { return good && forged && strange; }, 10'000'000));
  EXPECT_TRUE(good->ok());
  EXPECT_EQ(forged->status().code(), StatusCode::kTimeout);
  EXPECT_EQ(strange->status().code(), StatusCode::kTimeout);
  EXPECT_TRUE(a->effects.empty());
  EXPECT_GT(a->endpoint->stats().auth_failures.load(), 0u);
  EXPECT_GT(a->endpoint->stats().unknown_sender.load(), 0u);
}

// ---- Leases (docs/rpc.md, "Leases") ----

struct LeasePair {
  explicit LeasePair(uint64_t seed) : net(seed) {
    for (NodeId id : {NodeId{1}, NodeId{2}}) {
      Options o = SimOptions({id == 1 ? NodeId{2} : NodeId{1}}, seed + id);
      o.lease_us = 2'000'000;
      o.on_lease_lapse = [this, id](NodeId peer) {
        lapses.push_back({id, peer});
        // The renewal waits for the hook: the lease has not been extended yet.
        lease_at_lapse.push_back(ep[id]->LeaseUntil(peer));
        now_at_lapse.push_back(net.NowMicros());
      };
      ep[id] = std::make_unique<Endpoint>(net.AddNode(id), o);
    }
    for (auto& [id, e] : ep) e->Start();
  }
  SimNetwork net;
  std::map<NodeId, std::unique_ptr<Endpoint>> ep;
  std::vector<std::pair<NodeId, NodeId>> lapses;
  std::vector<uint64_t> lease_at_lapse, now_at_lapse;
};

TEST(RpcLeaseTest, HeartbeatsGrantLeasesThatLapseWhenCut) {
  LeasePair p(testing::Seed(0, true));
  p.net.RunFor(1'000'000);
  const uint64_t now = p.net.NowMicros();
  EXPECT_GT(p.ep[1]->LeaseUntil(2), now);
  EXPECT_GT(p.ep[2]->LeaseUntil(1), now);
  // A lease never reaches further than a lease past now: it starts before the home heard us.
  EXPECT_LE(p.ep[1]->LeaseUntil(2), now + 2'000'000);
  p.net.Cut(1, 2, true);
  p.net.RunFor(2'100'000);
  EXPECT_LE(p.ep[1]->LeaseUntil(2), p.net.NowMicros());
  EXPECT_LE(p.ep[2]->LeaseUntil(1), p.net.NowMicros());
}

TEST(RpcLeaseTest, RevokedLeaseLapsesByTheBoundWhileTheLinkIsUp) {
  LeasePair p(testing::Seed(0, true));
  p.net.RunFor(1'000'000);
  const uint64_t bound = p.ep[2]->RevokeLease(1);
  EXPECT_GT(bound, p.net.NowMicros());
  EXPECT_LE(bound, p.net.NowMicros() + 2'000'000 + 2'000'000 / 50 + 1000);
  // Sample the holder's lease until the bound: it must never reach past it.
  while (p.net.NowMicros() < bound) {
    p.net.RunFor(10'000);
    EXPECT_LE(p.ep[1]->LeaseUntil(2), bound);
  }
  EXPECT_LE(p.ep[1]->LeaseUntil(2), p.net.NowMicros());
  const size_t lapses_before = p.lapses.size();
  p.ep[2]->RestoreLease(1);
  p.net.RunFor(500'000);
  EXPECT_GT(p.ep[1]->LeaseUntil(2), p.net.NowMicros());
  // The renewal after the lapse ran the holder's hook first, while the lease was still lapsed.
  ASSERT_GT(p.lapses.size(), lapses_before);
  EXPECT_EQ(p.lapses.back(), (std::pair<NodeId, NodeId>{1, 2}));
  EXPECT_LE(p.lease_at_lapse.back(), p.now_at_lapse.back());
}

TEST(RpcLeaseTest, RevocationsNest) {
  LeasePair p(testing::Seed(0, true));
  p.net.RunFor(1'000'000);
  p.ep[2]->RevokeLease(1);
  const uint64_t bound = p.ep[2]->RevokeLease(1);
  p.ep[2]->RestoreLease(1);  // one still stands
  p.net.RunFor(bound - p.net.NowMicros() + 500'000);
  EXPECT_LE(p.ep[1]->LeaseUntil(2), p.net.NowMicros());
  p.ep[2]->RestoreLease(1);
  p.net.RunFor(500'000);
  EXPECT_GT(p.ep[1]->LeaseUntil(2), p.net.NowMicros());
}

TEST(RpcLeaseTest, HealedLinkRenewsOnlyAfterTheHook) {
  LeasePair p(testing::Seed(0, true));
  p.net.RunFor(1'000'000);
  p.lapses.clear();
  p.lease_at_lapse.clear();
  p.now_at_lapse.clear();
  p.net.Cut(1, 2, true);
  p.net.RunFor(3'000'000);
  EXPECT_TRUE(p.lapses.empty());  // nothing renews while cut
  p.net.Cut(1, 2, false);
  p.net.RunFor(1'000'000);
  ASSERT_EQ(p.lapses.size(), 2u);  // each side, once
  for (size_t i = 0; i < p.lapses.size(); i++) {
    EXPECT_LE(p.lease_at_lapse[i], p.now_at_lapse[i]);
  }
  EXPECT_GT(p.ep[1]->LeaseUntil(2), p.net.NowMicros());
}

TEST(RpcAsyncTest, AsyncHandlerAnswersLaterAndExactlyOnce) {
  SimNetwork net(testing::Seed(0, true));
  net.SetFaults({.drop = 0.3, .duplicate = 0.2, .min_delay_us = 100, .max_delay_us = 5000});
  Options o1 = SimOptions({2}, 1), o2 = SimOptions({1}, 2);
  Endpoint a(net.AddNode(1), o1), b(net.AddNode(2), o2);
  int runs = 0;
  b.RegisterAsync(7, 0, [&](NodeId, std::string_view req, Reply reply) {
    runs++;
    net.PostAt(net.NowMicros() + 50'000, [reply, r = std::string(req)] { reply(r + "!"); });
  });
  a.Start();
  b.Start();
  std::vector<std::string> answers;
  for (int i = 0; i < 20; i++) {
    a.CallAsync(2, 7, std::to_string(i), 10'000'000, [&](Result<std::string> r) {
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      answers.push_back(*r);
    });
  }
  net.RunUntil([&] { return answers.size() == 20; }, 60'000'000);
  EXPECT_EQ(answers.size(), 20u);
  EXPECT_EQ(runs, 20);
}

// Post runs a job on a handler thread (not the caller's), and none once the endpoint stopped:
// what a handler that answers later uses to finish its work off a callback's thread.
TEST(RpcPostTest, RunsOnAHandlerThreadUntilStopped) {
  SimNetwork net(testing::Seed());
  Options o = SimOptions({2}, 1);
  o.inline_handlers = false;
  Endpoint a(net.AddNode(1), o);
  a.Start();
  std::promise<std::thread::id> ran;
  ASSERT_TRUE(a.Post(1, [&ran] { ran.set_value(std::this_thread::get_id()); }));
  EXPECT_NE(ran.get_future().get(), std::this_thread::get_id());
  a.Stop();
  auto after = std::make_shared<bool>(false);
  EXPECT_FALSE(a.Post(1, [after] { *after = true; }));
  EXPECT_FALSE(*after);
}

}  // namespace
}  // namespace floe::rpc
