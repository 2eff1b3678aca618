// rpc: reliable calls between nodes over a net::Transport (docs/rpc.md; message layout in
// docs/wire.md, "RPC messages").
//
//   Encode/Decode   the message codec (header, CRC32C, LZ4, SipHash MAC); fuzzed
//   Endpoint        the call cycle CALL -> ACK (the answer) -> ACKACK with resends, the
//                   callee's dedup table, deadlines, cancellation, heartbeats, priority pools
//
// Thread rules:
//   1. An Endpoint's protocol state is guarded by one mutex; every public method is
//      thread-safe. Stats are atomics, readable from anywhere.
//   2. Handlers run on the pool of their priority class, or on the receiving thread when
//      registered runs_inline (or Options::inline_handlers, as in simulations); they must be
//      thread-safe, and inline ones must not block. The receiving thread is the loop's, or
//      that of a blocking Call polling the transport while it waits for its answer.
//   3. CallAsync's callback runs once, on whichever thread finished the call (the loop, a
//      timer, a handler's, a thread polling in Call, or the caller's own for an immediate
//      failure), with no lock held; it must not block. Call blocks its caller and may not be used
//      on the loop thread, from an inline handler, nor from a handler of a class >= the target
//      method's.

#ifndef FLOE_RPC_RPC_H_
#define FLOE_RPC_RPC_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "net/net.h"

namespace floe::rpc {

using net::NodeId;

enum class Kind : uint8_t { kCall = 1, kAck = 2, kAckAck = 3, kNack = 4, kHeartbeat = 5 };

inline constexpr size_t kHeaderBytes = 56;
inline constexpr size_t kMacBytes = 16;
inline constexpr uint8_t kFlagLz4 = 1;
inline constexpr uint8_t kFlagMac = 2;
// The header's CRC covers the header only; the payload is covered by the transport's CRC of the
// whole message (TCP frames carry one, checked as the bytes stream). Set on payloads of at
// least kFrameCrcMin bytes, which never fit a datagram.
inline constexpr uint8_t kFlagFrameCrc = 4;
inline constexpr size_t kFrameCrcMin = 64 * 1024;
inline constexpr int kPriorityClasses = 4;
// A TCP connection's greeting (docs/wire.md, "Greetings and admission"): a HEARTBEAT with this
// code and the sender's wall clock (µs) as its task, taken within kGreetingFreshUs of the
// receiver's.
inline constexpr uint16_t kGreetingCode = 0x4752;
inline constexpr uint64_t kGreetingFreshUs = 60'000'000;

struct Header {
  Kind kind = Kind::kCall;
  uint8_t flags = 0;     // set by Encode
  uint8_t priority = 0;  // CALL: the method's class
  NodeId sender = 0;
  NodeId receiver = 0;
  uint64_t incarnation = 0;  // the sender's: its start time, higher for each restart
  uint64_t task = 0;
  // CALL and ACKACK: the caller's low-water mark. ACK and NACK: the caller's incarnation (so a
  // restarted caller never takes an answer meant for its previous life).
  uint64_t mark = 0;
  uint16_t code = 0;  // CALL: method id; ACK: status code
};

// SipHash-2-4 with a 128-bit key and 128-bit output.
struct MacKey {
  uint64_t k0 = 0, k1 = 0;
};
MacKey DeriveMacKey(std::string_view secret);
void SipHash128(const MacKey& key, std::string_view data, uint8_t out[16]);
// The same over the concatenation a + b; a.size() must be a multiple of 8.
void SipHash128(const MacKey& key, std::string_view a, std::string_view b, uint8_t out[16]);

struct CodecOptions {
  const MacKey* key = nullptr;           // sign and require a MAC when set
  size_t max_message = size_t{1} << 30;  // payload bound, compressed or not
  size_t compress_min = 4096;            // LZ4 payloads at least this large (0: never)
  bool accept_lz4 = true;  // false: an LZ4 payload is Corruption, refused before inflating
};

// The message in three pieces (header, payload, MAC), the payload moved in, not copied.
net::OutMessage EncodeParts(const Header& header, std::string payload, const CodecOptions& options);
// The same, flattened.
std::string Encode(const Header& header, std::string_view payload, const CodecOptions& options);

struct Message {
  Header header;
  std::string buffer;  // holds the (decompressed) payload at [offset, offset + size)
  size_t offset = 0, size = 0;
  std::string_view payload() const { return std::string_view(buffer).substr(offset, size); }
  // The payload as a string of its own (moves the buffer; call once).
  std::string TakePayload();
};
// Corruption for a malformed or altered message (bad magic, version, kind, flags, lengths,
// CRC, LZ4 data), PermissionDenied for a missing or wrong MAC, ResourceExhausted for a length
// above max_message. Nothing is allocated before the lengths are checked. The rvalue form
// keeps the received bytes as the payload's buffer instead of copying them.
// `transport_checked`: the transport verified a CRC32C over all of `bytes`; a message whose
// payload relies on that (kFlagFrameCrc) is Corruption without it.
Result<Message> Decode(std::string&& bytes, const CodecOptions& options,
                       bool transport_checked = false);
Result<Message> Decode(std::string_view bytes, const CodecOptions& options,
                       bool transport_checked = false);

// ---------------------------------------------------------------------------------------------
// Peer ids are at most this (a cluster never reuses an id, so ids grow with every join).
inline constexpr NodeId kMaxPeerId = (NodeId{1} << 20) - 1;
// A node without an id yet (one joining a cluster, docs/membership.md J1) sends as kStrangerId
// to kAnyNodeId, "whoever listens at this address"; the node that answers it answers as
// kAnyNodeId. Neither is ever a member's id (the cluster assigns ids below kAnyNodeId).
inline constexpr NodeId kStrangerId = kMaxPeerId;
inline constexpr NodeId kAnyNodeId = kMaxPeerId - 1;

struct Options {
  std::vector<NodeId> peers;  // the initial peers (AddPeer adds more); anyone else is dropped
  std::string secret;         // empty: no MAC
  uint64_t resend_initial_us = 20'000;
  uint64_t resend_max_us = 1'000'000;
  uint64_t resend_bytes_per_sec = 100'000'000;  // adds size / rate to a large message's timer
  // An ACKACK a later message's mark will cover waits up to this long for one (0: never
  // waits); keep it well below resend_initial_us, or the callee resends its ACK meanwhile.
  uint64_t ackack_delay_us = 2'000;
  uint64_t heartbeat_interval_us = 200'000;
  uint64_t down_after_us = 3'000'000;
  uint64_t ack_give_up_us = 60'000'000;
  size_t compress_min = 4096;
  size_t max_message = size_t{1} << 30;
  int threads_per_class = 2;
  uint64_t call_spin_us = 100;   // a blocking Call polls the transport this long, then sleeps
  bool inline_handlers = false;  // run handlers on the loop thread (simulations)
  // Leases ride on the heartbeats (docs/rpc.md, "Leases"); 0 turns them off.
  uint64_t lease_us = 2'000'000;
  // Called (no lock held) when a lease from `peer` that had lapsed, or was granted by an
  // earlier incarnation of `peer`, is about to be renewed; the renewal waits for it to return.
  std::function<void(NodeId peer)> on_lease_lapse;
  // Called (no lock held) by a handler thread each time it finds no more work and is about to
  // sleep: a server frees there what the handlers retired (store::Store::HandOff).
  std::function<void()> on_idle;
  uint64_t seed = 0;  // resend jitter; 0: from the clock
  // A method a stranger may call (0: none): CALLs of it from kStrangerId to kAnyNodeId, and
  // their ACKACKs, are accepted without a MAC even when this node has a secret, if
  // stranger_check says the payload proves it; every other message from kStrangerId is
  // dropped, and so is a call without its proof (counted in auth_failures, never answered).
  // The answer goes to kStrangerId, without a MAC and from kAnyNodeId, resent for 2 s at most:
  // the handler gives the transport kStrangerId's address before it answers. One stranger at a
  // time: a higher incarnation replaces the current one's calls, a lower one is heard once
  // none of the current one's calls is running.
  uint16_t stranger_method = 0;
  // Whether a stranger's CALL payload carries its proof (docs/membership.md J1's secret proof).
  // Runs on the endpoint's lock, on at most 4 KiB: cheap, and it calls nothing of the endpoint.
  // Unset: no stranger's call is taken.
  std::function<bool(std::string_view payload)> stranger_check;
};

struct Stats {
  std::atomic<uint64_t> calls{0}, completed{0}, failed{0}, timeouts{0}, unavailable{0};
  std::atomic<uint64_t> cancelled{0}, call_resends{0}, ack_resends{0}, nacks_sent{0};
  std::atomic<uint64_t> duplicates{0}, stale{0}, handled{0};
  std::atomic<uint64_t> messages_sent{0}, messages_received{0}, bytes_sent{0}, bytes_received{0};
  std::atomic<uint64_t> bad_messages{0}, auth_failures{0}, unknown_sender{0}, peers_down{0};
  std::atomic<uint64_t> callee_entries{0};  // the dedup table's size (all callers)
};

using Handler = std::function<Result<std::string>(NodeId from, std::string_view request)>;
using Done = std::function<void(Result<std::string>)>;
// A handler that answers later: it must call `reply` exactly once, from any thread, without
// holding locks the endpoint's callbacks need.
using Reply = std::function<void(Result<std::string>)>;
using AsyncHandler = std::function<void(NodeId from, std::string_view request, Reply reply)>;

class Endpoint {
 public:
  Endpoint(net::Transport& transport, Options options);
  ~Endpoint();  // Stop()
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Before Start. priority in [0, kPriorityClasses). A runs_inline handler never blocks (no
  // Call, no waiting): it runs on the thread that received the call, saving a hand-off.
  void Register(uint16_t method, int priority, Handler handler, bool runs_inline = false);
  // The same for a handler that answers later through `reply`. Inline ones must not block
  // either: they start work (calls of their own, timers) and return.
  void RegisterAsync(uint16_t method, int priority, AsyncHandler handler, bool runs_inline = false);
  void Start();
  // Runs `job` on a handler thread of class `priority` (as a handler of that class runs), for
  // work a handler left to be finished later from a thread that must not do it (a callback's).
  // After Start.
  // False, and `job` dropped on this thread, once the endpoint stopped; with inline_handlers
  // (no pools) it runs on this thread.
  bool Post(int priority, std::function<void()> job);
  // Fails calls in flight with Cancelled, stops heartbeats and the pools. Idempotent.
  void Stop();

  // Returns a call id for Cancel. `done` runs once, on the thread that finished the call (thread
  // rule 3).
  uint64_t CallAsync(NodeId peer, uint16_t method, std::string request, uint64_t timeout_us,
                     Done done);
  Result<std::string> Call(NodeId peer, uint16_t method, std::string request, uint64_t timeout_us);
  void Cancel(uint64_t call_id);

  bool PeerUp(NodeId peer) const;
  // How long since anything was last heard from `peer` (heartbeats come every
  // heartbeat_interval_us); UINT64_MAX for a peer this endpoint does not know.
  uint64_t SilentUs(NodeId peer) const;
  // Membership that changes while serving (docs/membership.md, rule V4). Thread-safe, before or
  // after Start. AddPeer accepts messages from `peer` and allows calls to it from now on
  // (idempotent; the transport needs its address too). InvalidArgument for 0, this node or an id
  // above kMaxPeerId. RemovePeer fails the calls in flight to `peer` with Unavailable, forgets
  // what it asked of us (its answers are not resent; a handler still running answers no one)
  // and the lease from it, and drops its later messages. PeerUp and LeaseUntil stay lock-free.
  Status AddPeer(NodeId peer);
  void RemovePeer(NodeId peer);
  // Fails every call in flight to `peer` with `why` (a peer known gone: docs/membership.md O5,
  // a member failed over), as RemovePeer does, but keeps it. Its later calls go as before.
  void FailCalls(NodeId peer, const Status& why);

  // Leases (docs/rpc.md, "Leases"; docs/coherence.md L1-L4). Holder side: the lease from
  // `home` is valid while loop().NowMicros() is below this (0: none yet). Lock-free.
  uint64_t LeaseUntil(NodeId home) const;
  // Home side: stop renewing `holder`'s lease until RestoreLease (calls nest). Returns the
  // loop time after which the lease it holds from us has certainly lapsed.
  uint64_t RevokeLease(NodeId holder);
  void RestoreLease(NodeId holder);
  net::Loop& loop() const;
  // This endpoint's incarnation: its start time in microseconds since the Unix epoch, raised
  // above every incarnation taken earlier in the process. Never 0.
  uint64_t incarnation() const;
  const Stats& stats() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace floe::rpc

#endif  // FLOE_RPC_RPC_H_
