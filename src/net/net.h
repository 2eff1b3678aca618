// net: moving whole messages between nodes (docs/rpc.md, "Layers").
//
//   Loop             time, posting and timers for one node's protocol code
//   Transport        Send(to, message) and a receive callback; best effort
//   AsioLoop         a Loop on an Asio io_context and its own thread
//   UdpTcpTransport  UDP for messages that fit a datagram, TCP above (a message connection
//                    and a small bulk pool per peer); a seeded fault injector for tests
//   SimNetwork       in-process, single-threaded, virtual clock, seeded: drop, duplicate,
//                    reorder, delay and partition controls; SimTransport is one node on it
//
// Thread rules:
//   1. A Loop runs its callbacks one at a time on its own thread (AsioLoop) or on the thread
//      that drives the simulation (SimNetwork). Post and PostAt may be called from any thread.
//   2. A Transport delivers received messages on its Loop's thread, and on any thread that
//      calls Poll (so the receiver must be thread-safe if anyone polls). Send and Poll may be
//      called from any thread.
//   3. SimNetwork and its transports are single-threaded: everything happens in Run* calls.

#ifndef FLOE_NET_NET_H_
#define FLOE_NET_NET_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"

namespace floe::net {

using NodeId = uint32_t;

class Loop {
 public:
  virtual ~Loop() = default;
  // Microseconds on the loop's clock (monotonic; virtual in a simulation).
  virtual uint64_t NowMicros() const = 0;
  virtual void Post(std::function<void()> fn) = 0;
  // Runs fn at or after `at_micros` on the loop's clock.
  virtual void PostAt(uint64_t at_micros, std::function<void()> fn) = 0;
};

// A message on its way out, in three pieces sent back to back: a header, a body that is never
// copied (a 100 MB payload goes from the caller's string to the socket), and a trailer.
struct OutMessage {
  std::string head, body, tail;
  size_t size() const { return head.size() + body.size() + tail.size(); }
  std::string Flatten() const { return head + body + tail; }
};

class Transport {
 public:
  // `checked`: the transport itself verified a CRC32C over the whole message (its TCP frames
  // carry one, computed while the bytes stream); false for datagrams.
  using Receiver = std::function<void(std::string message, bool checked)>;
  // Messages are shared, not copied: a resend or a duplicate is the same bytes.
  using Bytes = std::shared_ptr<const OutMessage>;
  // How large a message that starts with `head` may be (its first head_bytes bytes, given to
  // SetAdmission): a TCP frame announcing more is not read further and its connection is
  // closed, so a sender the receiver would drop anyway makes it buffer nothing large.
  // `trusted`: the peer whose greeting opened the connection (0: none; see Trust).
  using Admission = std::function<size_t(std::string_view head, NodeId trusted)>;
  // Connection trust: `greet(to)` (nullptr: none) is sent first on every TCP connection this
  // transport opens to `to`, marked as a greeting; `verify(greeting)` says which peer a
  // greeting received proves (0: none). Frames on a connection no greeting proved are admitted
  // up to untrusted_max at most, so a sender without the key (the greeting carries its MAC)
  // makes a member buffer little, however many bytes it announces.
  // A connection no greeting proves within 5 s is closed (unless untrusted_stays: a node that
  // is not a member yet, which no one greets), and at max_incoming the oldest such connection
  // makes room for a new one.
  struct Trust {
    std::function<Bytes(NodeId to)> greet;
    std::function<NodeId(std::string_view greeting)> verify;
    size_t untrusted_max = 16 << 10;
    bool untrusted_stays = false;
  };
  virtual ~Transport() = default;
  virtual NodeId self() const = 0;
  virtual Loop& loop() = 0;
  // Queues one whole message for `to`. Best effort: it may be lost, duplicated or reordered;
  // the RPC layer makes calls reliable. InvalidArgument for an unknown peer or a message
  // above the transport's limit.
  virtual Status Send(NodeId to, Bytes message) = 0;
  // Set before the first message can arrive; called on the loop thread (and on threads that
  // Poll).
  virtual void SetReceiver(Receiver receiver) = 0;
  // Set before the first message can arrive (optional: without one a frame may be up to the
  // transport's limit); called on the loop thread. Frames shorter than head_bytes are admitted.
  virtual void SetAdmission(size_t /*head_bytes*/, Admission /*admission*/) {}
  // Set before the first message (optional: without it every connection is trusted).
  virtual void SetTrust(Trust /*trust*/) {}
  // Receives the datagrams already waiting, on the calling thread, and hands each to the
  // receiver before returning; returns whether there was any. A thread waiting for an answer
  // polls so that the answer reaches it without a hop through the loop thread. Never blocks.
  // The default (and a transport with faults injected) receives nothing here.
  virtual bool Poll() { return false; }
};

// ---------------------------------------------------------------------------------------------
// Faults, for tests: applied to every message a transport sends.
struct Faults {
  double drop = 0;            // probability a message is lost
  double duplicate = 0;       // probability it is delivered twice
  uint64_t min_delay_us = 0;  // each copy is delayed uniformly in [min, max]; a spread
  uint64_t max_delay_us = 0;  // reorders messages
  double corrupt = 0;         // probability one byte is flipped on the wire (after any checksum
                              // the sender computes, as on a bad link)
};

// ---------------------------------------------------------------------------------------------
class AsioLoop final : public Loop {
 public:
  AsioLoop();
  ~AsioLoop() override;  // stops the thread; pending callbacks are dropped
  uint64_t NowMicros() const override { return floe::NowMicros(); }
  void Post(std::function<void()> fn) override;
  void PostAt(uint64_t at_micros, std::function<void()> fn) override;
  // The io_context (for the transport's sockets). Opaque here to keep Asio out of this header.
  void* io_context();
  bool InLoopThread() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct PeerAddress {
  NodeId id = 0;
  std::string host;  // IPv4 or IPv6 literal
  uint16_t port = 0;
};

struct TransportOptions {
  NodeId self = 0;
  std::string bind_host = "127.0.0.1";
  uint16_t port = 0;  // UDP and TCP; 0 picks a free port (see UdpTcpTransport::port())
  std::vector<PeerAddress> peers;
  size_t max_message = size_t{1} << 30;
  // TCP connections accepted and open at once, and at most a quarter of the descriptor limit;
  // one more is closed as it is accepted (counted in refused_connections). Each peer opens
  // 1 + bulk_connections.
  size_t max_incoming = 4096;
  size_t udp_max = 1400;        // larger messages go over TCP
  size_t bulk_min = 64 * 1024;  // messages this large use the bulk connections
  int bulk_connections = 2;     // per peer
  uint64_t reconnect_delay_us = 100'000;
  Faults faults;
  uint64_t seed = 0;  // for the fault injector
};

// Counters (monotonic; read from any thread).
struct TransportStats {
  std::atomic<uint64_t> udp_sent{0}, udp_received{0}, tcp_sent{0}, tcp_received{0};
  std::atomic<uint64_t> bytes_sent{0}, bytes_received{0};
  std::atomic<uint64_t> dropped_by_faults{0}, duplicated_by_faults{0}, corrupted_by_faults{0};
  std::atomic<uint64_t> send_failures{0}, connects{0}, oversized{0}, bad_frames{0};
  std::atomic<uint64_t> refused_frames{0};       // over what SetAdmission allowed their head
  std::atomic<uint64_t> refused_connections{0};  // past max_incoming
  std::atomic<uint64_t> accept_failures{0};      // accept errors (EMFILE...), retried in 100 ms
  std::atomic<uint64_t> refused_greetings{0};    // greetings verify did not prove
  std::atomic<uint64_t> ungreeted_closed{0};     // no greeting within the deadline
  std::atomic<uint64_t> evicted_connections{0};  // untrusted, closed to make room; or a peer's
                                                 // past its few (its oldest first)
  std::atomic<uint64_t> greeted{0};              // connections a greeting proved
};

class UdpTcpTransport final : public Transport {
 public:
  // Binds UDP and TCP on options.port (the same number) of options.bind_host.
  static Result<std::unique_ptr<UdpTcpTransport>> Start(AsioLoop& loop, TransportOptions options);
  ~UdpTcpTransport() override;

  NodeId self() const override;
  Loop& loop() override;
  Status Send(NodeId to, Bytes message) override;
  void SetReceiver(Receiver receiver) override;
  void SetAdmission(size_t head_bytes, Admission admission) override;
  void SetTrust(Trust trust) override;
  bool Poll() override;

  uint16_t port() const;
  // Adds or moves a peer (a restarted process may listen elsewhere); a moved peer's
  // connections are closed, and a peer set again at its address keeps them.
  void SetPeer(const PeerAddress& peer);
  // Replaces the fault settings (tests).
  void SetFaults(const Faults& faults);
  // Drops everything to and from `peer` while blocked (a partition).
  void Block(NodeId peer, bool blocked);
  const TransportStats& stats() const;

 private:
  struct Impl;
  explicit UdpTcpTransport(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
class SimNetwork;

class SimTransport final : public Transport {
 public:
  NodeId self() const override { return id_; }
  Loop& loop() override;
  Status Send(NodeId to, Bytes message) override;
  void SetReceiver(Receiver receiver) override { receiver_ = std::move(receiver); }

 private:
  friend class SimNetwork;
  SimTransport(SimNetwork* net, NodeId id) : net_(net), id_(id) {}
  SimNetwork* net_;
  NodeId id_;
  Receiver receiver_;
  bool crashed_ = false;  // removed or replaced: sends are lost, nothing is delivered
};

struct SimStats {
  uint64_t sent = 0, delivered = 0, dropped = 0, duplicated = 0, partitioned = 0, corrupted = 0;
};

class SimNetwork final : public Loop {
 public:
  explicit SimNetwork(uint64_t seed);
  ~SimNetwork() override;

  // A node on the network. Replaces (crashes) an existing node with the same id: messages in
  // flight to the old one are then delivered to the new one, as to a restarted process.
  SimTransport& AddNode(NodeId id);
  // Removes a node (a crash): messages to and from it are lost from now on. Its transport stays
  // valid (sending into the void) for whatever still holds it, until the network is destroyed.
  void RemoveNode(NodeId id);

  void SetFaults(const Faults& faults) { faults_ = faults; }
  // Cuts (or heals) the link between a and b, both directions.
  void Cut(NodeId a, NodeId b, bool cut);
  // Cuts (or heals) messages from `from` to `to` only: the other direction still works.
  void CutOneWay(NodeId from, NodeId to, bool cut);
  void HealAll() {
    cut_.clear();
    one_way_.clear();
  }

  // Loop: one virtual clock shared by every node.
  uint64_t NowMicros() const override { return now_; }
  void Post(std::function<void()> fn) override { PostAt(now_, std::move(fn)); }
  void PostAt(uint64_t at_micros, std::function<void()> fn) override;

  // Runs events in time order until `done()` holds (checked after each event), no events
  // remain, or virtual time passes now + max_us. Returns whether done() held.
  bool RunUntil(const std::function<bool()>& done, uint64_t max_us);
  // Runs every event up to now + us.
  void RunFor(uint64_t us);
  const SimStats& stats() const { return stats_; }
  std::mt19937_64& rng() { return rng_; }

 private:
  friend class SimTransport;
  void Deliver(NodeId from, NodeId to, Transport::Bytes message);
  bool IsCut(NodeId from, NodeId to) const;

  struct Event {
    uint64_t at;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  uint64_t now_ = 0;
  uint64_t seq_ = 0;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  std::map<NodeId, std::unique_ptr<SimTransport>> nodes_;
  std::vector<std::unique_ptr<SimTransport>> crashed_;  // removed or replaced nodes' transports
  std::set<std::pair<NodeId, NodeId>> cut_;
  std::set<std::pair<NodeId, NodeId>> one_way_;  // (from, to)
  Faults faults_;
  std::mt19937_64 rng_;
  SimStats stats_;
};

}  // namespace floe::net

#endif  // FLOE_NET_NET_H_
