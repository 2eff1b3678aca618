// The state and protocol of an rpc::Endpoint (docs/rpc.md), private to src/rpc: endpoint.cc has
// the construction, the caller's side, the timers and the public calls, endpoint_inbound.cc what
// arrives (the callee's side, answers, ACKACKs, NACKs, heartbeats and leases, strangers). The
// locking rule is endpoint.cc's.

#ifndef FLOE_RPC_INTERNAL_ENDPOINT_IMPL_H_
#define FLOE_RPC_INTERNAL_ENDPOINT_IMPL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/base.h"
#include "rpc/internal/handler_pool.h"
#include "rpc/internal/peer_cells.h"
#include "rpc/rpc.h"

namespace floe::rpc {

namespace internal {
// Set while an inline handler runs (it must not block).
inline thread_local bool tl_inline = false;
}  // namespace internal

struct Endpoint::Impl : std::enable_shared_from_this<Impl> {
  // An entry in `timers`: when it is due, and a sequence number that makes it unique.
  using TimerId = std::pair<uint64_t, uint64_t>;
  struct Method {
    int priority = 0;
    Handler handler;
    bool runs_inline = false;
    AsyncHandler async;  // set instead of handler by RegisterAsync
  };
  // A call this node made and still waits for.
  struct Pending {
    uint64_t call_id = 0;
    uint16_t method = 0;
    net::Transport::Bytes message;  // the encoded CALL, resent as is
    uint64_t deadline = 0;
    uint64_t backoff = 0;
    TimerId resend_timer{}, deadline_timer{};  // erased from `timers` on completion
    bool nacked = false;
    Done done;
  };
  struct PeerState {
    uint64_t next_task = 1;
    std::map<uint64_t, Pending> pending;  // by task id; begin() is the low-water mark
    uint64_t last_heard = 0;
    bool down = false;
    // Deferred ACKACKs (docs/rpc.md, "Ending the cycle"): the highest mark sent in a CALL or
    // ACKACK, the highest answered task whose ACKACK waits for a mark to cover it (0: none),
    // and whether the flush timer is set.
    uint64_t mark_sent = 0;
    uint64_t ackack_owed = 0;
    bool ackack_timer = false;
    // Leases (docs/rpc.md, "Leases"). As a home: the peer's latest clock reading (as sent,
    // reading + 1), when it arrived, and how many revocations stand. As a holder: the peer
    // incarnation the lease in lease_until[] was granted by.
    uint64_t reading = 0;
    uint64_t reading_at = 0;
    uint64_t reading_incarnation = 0;
    int revokes = 0;
    uint64_t lease_incarnation = 0;
  };
  // What this node knows of calls from one caller incarnation.
  struct Entry {
    enum class State { kRunning, kDone, kFinished } state = State::kRunning;
    net::Transport::Bytes ack;  // kDone: the encoded ACK
    uint64_t backoff = 0;
    uint64_t give_up_at = 0;
    TimerId ack_timer{};  // kDone: its ACK resend in `timers`
  };
  struct CallerState {
    // The newest incarnation heard from the caller. Incarnations increase with each start
    // (NextIncarnation), so anything lower is an earlier life and its late messages are ignored.
    uint64_t incarnation = 0;
    uint64_t low_water = 0;
    std::map<uint64_t, Entry> entries;
  };

  net::Transport& transport;
  net::Loop& loop;
  Options options;
  MacKey key;
  CodecOptions codec;
  uint64_t incarnation_ = 0;
  std::map<uint16_t, Method> methods;  // fixed after Start
  std::vector<std::unique_ptr<internal::HandlerPool>> pools;
  Stats stats;
  std::atomic<bool> stopped{false};
  std::atomic<bool> started{false};
  // Lock-free reads of each peer: known, up, and the lease from it.
  internal::PeerCells cells;
  using PeerCell = internal::PeerCell;
  PeerCell* Cell(NodeId id) const { return cells.Find(id); }

  // ---- protocol state (guarded by mu) ----
  enum class TimerKind : uint8_t { kResend, kDeadline, kAckResend, kAckAckFlush };
  struct TimerKey {
    TimerKind kind;
    NodeId peer;
    uint64_t task;
    uint64_t incarnation;  // kAckResend: the caller's
  };
  Mutex mu;
  std::map<TimerId, TimerKey> timers;
  uint64_t next_timer = 0;
  uint64_t armed_at = 0;  // when the loop timer fires; 0: none armed
  std::vector<std::pair<Done, Result<std::string>>> completions;  // run after unlocking
  std::vector<std::function<void()>> jobs;                        // run after unlocking
  std::vector<std::pair<NodeId, net::Transport::Bytes>> outbox;   // sent after unlocking
  std::mt19937_64 rng;
  std::map<NodeId, PeerState> peers;
  std::map<NodeId, CallerState> callers;
  // The greetings each peer's connections were proved by (their clock readings), while fresh:
  // a greeting proves one connection only, so a captured one cannot be replayed on others
  // (docs/rpc.md, "Limits"). At most kMaxGreetingsKept a peer.
  std::map<NodeId, std::set<uint64_t>> greetings_taken;
  static constexpr size_t kMaxGreetingsKept = 64;
  uint64_t last_greeting_warning_us = 0;
  std::unordered_map<uint64_t, std::pair<NodeId, uint64_t>> calls;  // call id -> (peer, task)
  uint64_t next_call_id = 1;
  size_t callee_entries = 0;

  // The clock reading the last greeting this node sent carried: each is later than the one
  // before, so no two of its connections are proved by the same greeting.
  std::atomic<uint64_t> last_greeting_sent{0};
  // A stranger's calls remembered at once, and how far ahead of our clock its incarnation
  // (its start time) may be.
  static constexpr size_t kMaxStrangerCalls = 64;
  static constexpr uint64_t kStrangerClockSlackUs = 3'600'000'000;
  // The largest payload a stranger may send (docs/rpc.md, "A stranger").
  static constexpr size_t kStrangerMaxMessage = 4096;
  // How long an answer to a stranger is resent without its ACKACK.
  static constexpr uint64_t kStrangerGiveUpUs = 2'000'000;
  // A stranger's messages (Options::stranger_method) travel without a MAC.
  CodecOptions stranger_codec;

  bool FromStranger(const Header& h) const;
  Impl(net::Transport& t, Options o);
  Status AddPeerLocked(NodeId peer);
  void RemovePeerLocked(NodeId peer);

  // Runs fn with `mu` held, then the jobs and callbacks it queued without it.
  template <typename Fn>
  void Locked(Fn&& fn) {
    std::vector<std::pair<Done, Result<std::string>>> done;
    std::vector<std::function<void()>> run;
    std::vector<std::pair<NodeId, net::Transport::Bytes>> out;
    {
      MutexLock lock(&mu);
      fn();
      done.swap(completions);
      run.swap(jobs);
      out.swap(outbox);
    }
    // Messages leave in the order they were queued; a send to a loopback peer runs its
    // receive path, so it is kept out of the lock the receiving thread needs next.
    for (auto& [to, message] : out) (void)transport.Send(to, std::move(message));
    for (auto& job : run) job();
    for (auto& [cb, r] : done) {
      if (cb) cb(std::move(r));
    }
  }

  uint64_t Jitter(uint64_t us);
  uint64_t InitialBackoff(size_t bytes) const;
  void SendRaw(NodeId to, net::Transport::Bytes message);

  net::Transport::Bytes EncodeMsg(Kind kind, NodeId to, uint64_t task, uint64_t mark, uint16_t code,
                                  std::string payload, uint8_t priority = 0);
  uint64_t LowWater(const PeerState& p) const;
  void SetUp(NodeId peer, PeerState& p, bool up);

  // ---- caller ----
  void StartCall(uint64_t call_id, NodeId peer, uint16_t method, std::string request,
                 uint64_t timeout_us, Done done);
  TimerId ScheduleResend(NodeId peer, uint64_t task, uint64_t after);

  // ---- timers ----
  TimerId Schedule(uint64_t at, TimerKey what, uint64_t slack = 0);

  // Erases an entry, if it is still there (it is not once it fired).
  void Unschedule(const TimerId& id) { timers.erase(id); }

  void Arm(uint64_t at, uint64_t slack = 0);
  void OnTimer(uint64_t at);
  void Resend(NodeId peer, uint64_t task);
  void Expire(NodeId peer, uint64_t task);
  void Complete(PeerState& p, std::map<uint64_t, Pending>::iterator it, Result<std::string> r);
  void Finish(Done done, Result<std::string> r);
  void CancelCall(uint64_t call_id);

  // ---- callee ----
  CallerState* CallerFor(NodeId sender, uint64_t inc);
  static bool Running(const CallerState& c);
  void ForgetAck(const Entry& e);
  void Collect(CallerState& c, uint64_t mark);
  void OnCall(Message& m);
  void Answered(NodeId caller, uint64_t inc, uint64_t task, Result<std::string> r);
  TimerId ScheduleAckResend(NodeId caller, uint64_t inc, uint64_t task, uint64_t after);
  void ResendAck(NodeId caller, uint64_t inc, uint64_t task);
  void OnAckAck(const Message& m);
  void OnAck(Message& m);
  void SendAckAck(NodeId peer, PeerState& p, uint64_t task);
  void NoteMarkSent(PeerState& p, uint64_t mark);
  void FlushAckAck(NodeId peer);
  void OnNack(const Message& m);
  void WarnDropped(const std::string& what);
  uint64_t last_drop_warning_us = 0;  // under mu (OnMessage runs in Locked)

  void OnMessage(std::string bytes, bool checked);
  void OnHeartbeat(const Header& h, PeerState& p);
  void Heartbeat();
  void StopOnLoop();
};

}  // namespace floe::rpc

#endif  // FLOE_RPC_INTERNAL_ENDPOINT_IMPL_H_
