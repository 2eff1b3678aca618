// rpc::Endpoint: the call cycle of docs/rpc.md. Every member of Impl below the "protocol
// state" line is guarded by `mu`; entry points (calls, received messages, timers, answers) take
// it through Locked(), which sends the messages queued meanwhile and runs callbacks and inline
// handlers after releasing it. A call is thus encoded and sent on the caller's thread and an
// answer on the handler's: no hand-off to the loop thread on the way out.

#include <endian.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>

#include "rpc/internal/handler_pool.h"
#include "rpc/internal/peer_cells.h"
#include "rpc/rpc.h"

namespace floe::rpc {

namespace {
using internal::HandlerPool;
using internal::tl_class;
// Set while an inline handler runs (it must not block).
thread_local bool tl_inline = false;

// A node's incarnation: its start time in microseconds since the Unix epoch, and above any
// incarnation already taken in this process (endpoints started within one microsecond, as in
// simulations). A restarted process therefore always has a higher incarnation than its earlier
// life, and a callee keeps the highest it has heard (docs/rpc.md, rule 8), provided the wall
// clock is not set back by more than the time the node was down.
uint64_t NextIncarnation() {
  static std::atomic<uint64_t> last{0};
  uint64_t prev = last.load(std::memory_order_relaxed);
  uint64_t next;
  do {
    next = std::max(WallMicros(), prev + 1);
  } while (!last.compare_exchange_weak(prev, next, std::memory_order_relaxed));
  return next;
}

Status StatusFromCode(uint16_t code, std::string message) {
  if (code == 0 || code > static_cast<uint16_t>(StatusCode::kWrongHome)) {
    return Status::Internal("remote status " + std::to_string(code) + ": " + message);
  }
  return Status(static_cast<StatusCode>(code), message);
}

}  // namespace

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
  std::vector<std::unique_ptr<HandlerPool>> pools;
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
  std::unordered_map<uint64_t, std::pair<NodeId, uint64_t>> calls;  // call id -> (peer, task)
  uint64_t next_call_id = 1;
  size_t callee_entries = 0;

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

  // Whether `h` is a message a stranger may send us (Options::stranger_method).
  bool FromStranger(const Header& h) const {
    return options.stranger_method != 0 && h.sender == kStrangerId && h.receiver == kAnyNodeId &&
           ((h.kind == Kind::kCall && h.code == options.stranger_method) ||
            h.kind == Kind::kAckAck);
  }

  Impl(net::Transport& t, Options o) : transport(t), loop(t.loop()), options(std::move(o)) {
    uint64_t seed = options.seed != 0 ? options.seed : WallMicros() ^ CycleNow();
    rng.seed(seed ^ (uint64_t{t.self()} << 32));
    incarnation_ = NextIncarnation();
    if (!options.secret.empty()) {
      key = DeriveMacKey(options.secret);
      codec.key = &key;
    }
    codec.max_message = options.max_message;
    codec.compress_min = options.compress_min;
    stranger_codec.max_message = std::min<size_t>(options.max_message, kStrangerMaxMessage);
    stranger_codec.compress_min = 0;  // answers to a stranger go uncompressed
    stranger_codec.accept_lz4 = false;
    for (NodeId peer : options.peers) {
      // A list that names this node too is tolerated (a member list passed whole); that entry
      // is no peer.
      if (peer != transport.self()) FLOE_CHECK(AddPeerLocked(peer).ok());
    }
  }

  Status AddPeerLocked(NodeId peer) {
    if (peer == 0 || peer > kMaxPeerId || peer == transport.self()) {
      return Status::InvalidArgument("bad peer id " + std::to_string(peer));
    }
    if (peers.count(peer) != 0) return Status::OK();
    peers[peer].last_heard = loop.NowMicros();
    PeerCell& cell = cells.Make(peer);
    cell.lease_until.store(0, std::memory_order_relaxed);
    cell.up.store(true, std::memory_order_relaxed);
    cell.known.store(true, std::memory_order_release);
    return Status::OK();
  }

  void RemovePeerLocked(NodeId peer) {
    auto pit = peers.find(peer);
    if (pit == peers.end()) return;
    PeerState& p = pit->second;
    while (!p.pending.empty()) {
      stats.unavailable++;
      Complete(p, p.pending.begin(),
               Status::Unavailable("peer " + std::to_string(peer) + " was removed"));
    }
    peers.erase(pit);
    // What it asked of us: its answers are not resent, and a running handler's reply finds no
    // caller and is dropped (Answered).
    if (auto cit = callers.find(peer); cit != callers.end()) {
      for (const auto& entry : cit->second.entries) ForgetAck(entry.second);
      callee_entries -= cit->second.entries.size();
      stats.callee_entries.store(callee_entries, std::memory_order_relaxed);
      callers.erase(cit);
    }
    PeerCell* cell = Cell(peer);
    cell->known.store(false, std::memory_order_release);
    cell->up.store(false, std::memory_order_relaxed);
    cell->lease_until.store(0, std::memory_order_release);
  }

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

  uint64_t Jitter(uint64_t us) {
    // +-25%
    const uint64_t quarter = us / 4;
    return quarter == 0 ? us : us - quarter + rng() % (2 * quarter + 1);
  }

  // How long to wait before resending a message of `bytes` (time to send it included).
  uint64_t InitialBackoff(size_t bytes) const {
    return options.resend_initial_us + static_cast<uint64_t>(bytes) * 1'000'000 /
                                           std::max<uint64_t>(1, options.resend_bytes_per_sec);
  }

  // Queues a message; Locked sends it once `mu` is released.
  void SendRaw(NodeId to, net::Transport::Bytes message) {
    stats.messages_sent++;
    stats.bytes_sent += message->size();
    outbox.emplace_back(to, std::move(message));
  }

  net::Transport::Bytes EncodeMsg(Kind kind, NodeId to, uint64_t task, uint64_t mark, uint16_t code,
                                  std::string payload, uint8_t priority = 0) {
    Header h;
    h.kind = kind;
    h.priority = priority;
    // To a stranger: as the node it called, without a MAC (Options::stranger_method).
    const bool stranger = to == kStrangerId && options.stranger_method != 0;
    h.sender = stranger ? kAnyNodeId : transport.self();
    h.receiver = to;
    h.incarnation = incarnation_;
    h.task = task;
    h.mark = mark;
    h.code = code;
    return std::make_shared<const net::OutMessage>(
        EncodeParts(h, std::move(payload), stranger ? stranger_codec : codec));
  }

  uint64_t LowWater(const PeerState& p) const {
    return p.pending.empty() ? p.next_task : p.pending.begin()->first;
  }

  void SetUp(NodeId peer, PeerState& p, bool up) {
    if (p.down == !up) return;
    p.down = !up;
    if (!up) stats.peers_down++;
    if (PeerCell* cell = Cell(peer)) cell->up.store(up, std::memory_order_relaxed);
  }

  // ---- caller ----
  void StartCall(uint64_t call_id, NodeId peer, uint16_t method, std::string request,
                 uint64_t timeout_us, Done done) {
    stats.calls++;
    auto pit = peers.find(peer);
    if (stopped.load()) return Finish(std::move(done), Status::Cancelled("endpoint stopped"));
    if (pit == peers.end()) {
      return Finish(std::move(done),
                    Status::InvalidArgument("unknown peer " + std::to_string(peer)));
    }
    PeerState& p = pit->second;
    if (p.down) {
      stats.unavailable++;
      return Finish(std::move(done),
                    Status::Unavailable("peer " + std::to_string(peer) + " is down"));
    }
    const uint64_t task = p.next_task++;
    const auto mit = methods.find(method);
    const int priority = mit != methods.end() ? mit->second.priority : 0;
    Pending& c = p.pending[task];
    c.call_id = call_id;
    c.method = method;
    c.deadline = loop.NowMicros() + timeout_us;
    c.done = std::move(done);
    const uint64_t mark = LowWater(p);
    c.message = EncodeMsg(Kind::kCall, peer, task, mark, method, std::move(request),
                          static_cast<uint8_t>(priority));
    NoteMarkSent(p, mark);
    c.backoff = InitialBackoff(c.message->size());
    calls[call_id] = {peer, task};
    SendRaw(peer, c.message);
    c.resend_timer = ScheduleResend(peer, task, c.backoff);
    c.deadline_timer = Schedule(c.deadline, {TimerKind::kDeadline, peer, task, 0});
  }

  TimerId ScheduleResend(NodeId peer, uint64_t task, uint64_t after) {
    const uint64_t delay = Jitter(after);
    return Schedule(loop.NowMicros() + delay, {TimerKind::kResend, peer, task, 0}, delay / 4);
  }

  // ---- timers ----
  // Resends, deadlines and ACK resends wait in one ordered map; a single loop timer is armed for
  // the earliest. A loop timer per event cost a timerfd_settime system call and a wake-up each.
  // Two more rules keep the loop timer off the path of a call that is answered in time:
  //   - a call's entries (resend, deadline) and an answer's (ACK resend) are erased when the
  //     call completes or the answer is acknowledged, so they never fire, and a loop timer
  //     armed for them finds nothing due and re-arms for the next entry;
  //   - a resend may fire up to a quarter of its delay late (the size of its jitter): an entry
  //     that falls that close before the armed time does not re-arm the loop timer. Jitter
  //     would otherwise put about every other call's resend before the one armed.
  // So calls made one after another arm the loop timer about once per resend interval, not
  // twice per call (docs/perf.md, "RPC"). Deadlines and the ACKACK flush are never late.
  TimerId Schedule(uint64_t at, TimerKey what, uint64_t slack = 0) {
    const TimerId id{at, next_timer++};
    timers.emplace(id, what);
    Arm(at, slack);
    return id;
  }

  // Erases an entry, if it is still there (it is not once it fired).
  void Unschedule(const TimerId& id) { timers.erase(id); }

  void Arm(uint64_t at, uint64_t slack = 0) {
    if (armed_at != 0 && armed_at <= at + slack) return;
    armed_at = at;
    auto weak = weak_from_this();
    loop.PostAt(at, [weak, at] {
      if (auto self = weak.lock()) self->Locked([&] { self->OnTimer(at); });
    });
  }

  void OnTimer(uint64_t at) {
    if (at != armed_at) return;  // superseded by an earlier arming, which covers this
    armed_at = 0;
    if (stopped.load()) return;
    const uint64_t now = loop.NowMicros();
    while (!timers.empty() && timers.begin()->first.first <= now) {
      const TimerKey due = timers.begin()->second;
      timers.erase(timers.begin());
      switch (due.kind) {
        case TimerKind::kResend:
          Resend(due.peer, due.task);
          break;
        case TimerKind::kDeadline:
          Expire(due.peer, due.task);
          break;
        case TimerKind::kAckResend:
          ResendAck(due.peer, due.incarnation, due.task);
          break;
        case TimerKind::kAckAckFlush:
          FlushAckAck(due.peer);
          break;
      }
    }
    if (!timers.empty()) Arm(timers.begin()->first.first);
  }

  void Resend(NodeId peer, uint64_t task) {
    if (stopped.load()) return;
    auto pit = peers.find(peer);
    if (pit == peers.end()) return;  // removed, its calls failed
    PeerState& p = pit->second;
    auto it = p.pending.find(task);
    if (it == p.pending.end()) return;
    Pending& c = it->second;
    stats.call_resends++;
    SendRaw(peer, c.message);
    // After a NACK the callee has the call: resend rarely, only to notice a restart.
    c.backoff = c.nacked ? options.resend_max_us : std::min(c.backoff * 2, options.resend_max_us);
    c.backoff = std::max(c.backoff, InitialBackoff(c.message->size()));
    c.resend_timer = ScheduleResend(peer, task, c.backoff);
  }

  void Expire(NodeId peer, uint64_t task) {
    auto pit = peers.find(peer);
    if (pit == peers.end()) return;
    PeerState& p = pit->second;
    auto it = p.pending.find(task);
    if (it == p.pending.end()) return;
    Status s;
    if (p.down) {
      stats.unavailable++;
      s = Status::Unavailable("peer " + std::to_string(peer) + " is down");
    } else {
      stats.timeouts++;
      s = Status::Timeout("no answer from peer " + std::to_string(peer) + " before the deadline");
    }
    Complete(p, it, std::move(s));
  }

  void Complete(PeerState& p, std::map<uint64_t, Pending>::iterator it, Result<std::string> r) {
    Unschedule(it->second.resend_timer);
    Unschedule(it->second.deadline_timer);
    Done done = std::move(it->second.done);
    calls.erase(it->second.call_id);
    p.pending.erase(it);
    Finish(std::move(done), std::move(r));
  }

  void Finish(Done done, Result<std::string> r) {
    if (r.ok()) {
      stats.completed++;
    } else {
      stats.failed++;
      if (r.status().code() == StatusCode::kCancelled) stats.cancelled++;
    }
    completions.emplace_back(std::move(done), std::move(r));
  }

  void CancelCall(uint64_t call_id) {
    auto it = calls.find(call_id);
    if (it == calls.end()) return;
    const auto [peer, task] = it->second;
    auto peer_it = peers.find(peer);
    if (peer_it == peers.end()) return;
    PeerState& p = peer_it->second;
    auto pit = p.pending.find(task);
    if (pit != p.pending.end()) Complete(p, pit, Status::Cancelled("call cancelled"));
  }

  // ---- callee ----
  // The state for `sender`'s incarnation, or null if the message is from an earlier one.
  CallerState* CallerFor(NodeId sender, uint64_t inc) {
    CallerState& c = callers[sender];
    if (c.incarnation == inc) return &c;
    // The stranger is not one process but anyone without an id (Options::stranger_method): a
    // lower incarnation is another joiner, heard once no call of the current one is running,
    // so one message with an incarnation far ahead shuts nobody out.
    if (inc < c.incarnation && (sender != kStrangerId || Running(c))) {
      stats.stale++;  // a late message from a previous life: never displaces the newer one
      return nullptr;
    }
    // A newer incarnation: the previous process is gone, and so are its calls.
    for (const auto& entry : c.entries) ForgetAck(entry.second);
    callee_entries -= c.entries.size();
    stats.callee_entries.store(callee_entries, std::memory_order_relaxed);
    c.entries.clear();
    c.incarnation = inc;
    c.low_water = 0;
    return &c;
  }

  static bool Running(const CallerState& c) {
    return std::any_of(c.entries.begin(), c.entries.end(), [](const auto& entry) {
      return entry.second.state == Entry::State::kRunning;
    });
  }

  // Drops the ACK resend of an entry about to be forgotten or finished.
  void ForgetAck(const Entry& e) {
    if (e.state == Entry::State::kDone) Unschedule(e.ack_timer);
  }

  void Collect(CallerState& c, uint64_t mark) {
    if (mark <= c.low_water) return;
    c.low_water = mark;
    auto end = c.entries.lower_bound(mark);
    for (auto it = c.entries.begin(); it != end;) {
      ForgetAck(it->second);
      it = c.entries.erase(it);
      callee_entries--;
    }
    stats.callee_entries.store(callee_entries, std::memory_order_relaxed);
  }

  void OnCall(Message& m) {
    const Header h = m.header;
    CallerState* c = CallerFor(h.sender, h.incarnation);
    if (c == nullptr) return;
    Collect(*c, h.mark);
    if (h.task < c->low_water) {
      stats.stale++;
      return;
    }
    auto it = c->entries.find(h.task);
    if (it != c->entries.end()) {
      stats.duplicates++;
      if (it->second.state == Entry::State::kRunning) {
        stats.nacks_sent++;
        SendRaw(h.sender, EncodeMsg(Kind::kNack, h.sender, h.task, h.incarnation, 0, {}));
      } else if (it->second.state == Entry::State::kDone) {
        stats.ack_resends++;
        SendRaw(h.sender, it->second.ack);
      }
      return;
    }
    c->entries[h.task];  // kRunning
    callee_entries++;
    stats.callee_entries.store(callee_entries, std::memory_order_relaxed);
    auto mit = methods.find(h.code);
    if (mit == methods.end()) {
      return Answered(h.sender, h.incarnation, h.task,
                      Status::Unimplemented("no method " + std::to_string(h.code)));
    }
    const Method& method = mit->second;
    auto request = std::make_shared<Message>(std::move(m));
    const bool inline_run = options.inline_handlers || method.runs_inline;
    auto run = [weak = weak_from_this(), handler = method.handler, async = method.async,
                from = h.sender, inc = h.incarnation, task = h.task, request, inline_run]() {
      auto self = weak.lock();
      if (!self) return;
      self->stats.handled++;
      const bool was_inline = tl_inline;
      tl_inline = inline_run;
      if (async) {
        async(from, request->payload(), [weak, from, inc, task](Result<std::string> r) {
          if (auto ep = weak.lock()) {
            ep->Locked([&] { ep->Answered(from, inc, task, std::move(r)); });
          }
        });
        tl_inline = was_inline;
        return;
      }
      Result<std::string> r = handler(from, request->payload());
      tl_inline = was_inline;
      self->Locked([&] { self->Answered(from, inc, task, std::move(r)); });
    };
    if (inline_run) {
      jobs.push_back(std::move(run));  // on this thread, once `mu` is released
    } else {
      pools[static_cast<size_t>(method.priority)]->Add(std::move(run));
    }
  }

  void Answered(NodeId caller, uint64_t inc, uint64_t task, Result<std::string> r) {
    if (stopped.load()) return;
    auto cit = callers.find(caller);
    if (cit == callers.end() || cit->second.incarnation != inc) return;
    auto it = cit->second.entries.find(task);
    if (it == cit->second.entries.end()) return;  // collected: the caller gave up
    Entry& e = it->second;
    if (e.state != Entry::State::kRunning) return;  // a second reply from an async handler
    const uint16_t code = r.ok() ? 0 : static_cast<uint16_t>(r.status().code());
    std::string payload = r.ok() ? std::move(*r) : std::string(r.status().message());
    e.state = Entry::State::kDone;
    e.ack = EncodeMsg(Kind::kAck, caller, task, inc, code, std::move(payload));
    e.backoff = InitialBackoff(e.ack->size());
    // An answer to a stranger is resent only briefly: the joiner acknowledges it at once.
    e.give_up_at = loop.NowMicros() + (caller == kStrangerId
                                           ? std::min(options.ack_give_up_us, kStrangerGiveUpUs)
                                           : options.ack_give_up_us);
    SendRaw(caller, e.ack);
    e.ack_timer = ScheduleAckResend(caller, inc, task, e.backoff);
  }

  TimerId ScheduleAckResend(NodeId caller, uint64_t inc, uint64_t task, uint64_t after) {
    const uint64_t delay = Jitter(after);
    return Schedule(loop.NowMicros() + delay, {TimerKind::kAckResend, caller, task, inc},
                    delay / 4);
  }

  void ResendAck(NodeId caller, uint64_t inc, uint64_t task) {
    Impl* self = this;
    {
      auto cit = self->callers.find(caller);
      if (cit == self->callers.end() || cit->second.incarnation != inc) return;
      auto it = cit->second.entries.find(task);
      if (it == cit->second.entries.end() || it->second.state != Entry::State::kDone) return;
      Entry& e = it->second;
      if (self->loop.NowMicros() >= e.give_up_at) {
        // The caller is gone: keep the id (a late CALL must not run again), free the answer.
        e.state = Entry::State::kFinished;
        e.ack.reset();
        return;
      }
      self->stats.ack_resends++;
      self->SendRaw(caller, e.ack);
      e.backoff = std::max(std::min(e.backoff * 2, self->options.resend_max_us),
                           self->InitialBackoff(e.ack->size()));
      e.ack_timer = self->ScheduleAckResend(caller, inc, task, e.backoff);
    }
  }

  void OnAckAck(const Message& m) {
    const Header& h = m.header;
    auto cit = callers.find(h.sender);
    if (cit == callers.end() || cit->second.incarnation != h.incarnation) return;
    CallerState& c = cit->second;
    auto it = c.entries.find(h.task);
    if (it != c.entries.end() && it->second.state == Entry::State::kDone) {
      ForgetAck(it->second);
      it->second.state = Entry::State::kFinished;
      it->second.ack.reset();
    }
    // A stranger's ACKACK carries no proof: its mark collects nothing (it would erase running
    // calls of that incarnation, leaving them unanswered and their resends stale). Only the
    // stranger's proven CALLs move its low-water mark.
    if (h.sender == kStrangerId) return;
    Collect(c, h.mark);
  }

  void OnAck(Message& m) {
    const Header& h = m.header;
    if (h.mark != incarnation_) return;  // for an earlier life of this node
    PeerState& p = peers[h.sender];
    auto it = p.pending.find(h.task);
    const bool was_pending = it != p.pending.end();
    if (was_pending) {
      if (h.code == 0) {
        Complete(p, it, m.TakePayload());
      } else {
        Complete(p, it, StatusFromCode(h.code, std::string(m.payload())));
      }
    }
    // An answer to a call still waited for, below every call still pending: the next message
    // to the callee carries a mark that covers it, so its ACKACK waits for that (or for the
    // flush timer, if no call follows). Anything else (a duplicate ACK, an answer to an
    // abandoned call or one overtaking an earlier call's) is ACKACKed at once, so the callee
    // stops resending.
    const uint64_t mark = LowWater(p);
    if (was_pending && h.task < mark && options.ackack_delay_us > 0) {
      p.ackack_owed = std::max(p.ackack_owed, h.task);
      if (!p.ackack_timer) {
        p.ackack_timer = true;
        const uint64_t delay = std::min(options.ackack_delay_us, options.resend_initial_us / 4);
        Schedule(loop.NowMicros() + delay, {TimerKind::kAckAckFlush, h.sender, 0, 0});
      }
      return;
    }
    SendAckAck(h.sender, p, h.task);
  }

  void SendAckAck(NodeId peer, PeerState& p, uint64_t task) {
    const uint64_t mark = LowWater(p);
    SendRaw(peer, EncodeMsg(Kind::kAckAck, peer, task, mark, 0, {}));
    NoteMarkSent(p, mark);
  }

  // A mark went out to the peer: deferred ACKACKs below it are covered.
  void NoteMarkSent(PeerState& p, uint64_t mark) {
    p.mark_sent = std::max(p.mark_sent, mark);
    if (p.ackack_owed != 0 && p.ackack_owed < p.mark_sent) p.ackack_owed = 0;
  }

  void FlushAckAck(NodeId peer) {
    auto pit = peers.find(peer);
    if (pit == peers.end()) return;
    PeerState& p = pit->second;
    p.ackack_timer = false;
    if (p.ackack_owed == 0) return;
    const uint64_t task = p.ackack_owed;
    p.ackack_owed = 0;
    SendAckAck(peer, p, task);
  }

  void OnNack(const Message& m) {
    const Header& h = m.header;
    if (h.mark != incarnation_) return;
    PeerState& p = peers[h.sender];
    auto it = p.pending.find(h.task);
    if (it != p.pending.end()) it->second.nacked = true;
  }

  // Dropped messages are counted (Stats) and, so that an operator sees a misconfiguration,
  // logged at most once every 10 seconds.
  void WarnDropped(const std::string& what) {
    const uint64_t now = loop.NowMicros();
    if (last_drop_warning_us != 0 && now - last_drop_warning_us < 10'000'000) return;
    last_drop_warning_us = now;
    FLOE_LOG_WARN("rpc: node {} dropped {}", transport.self(), what);
  }
  uint64_t last_drop_warning_us = 0;  // under mu (OnMessage runs in Locked)

  void OnMessage(std::string bytes, bool checked) {
    if (stopped.load()) return;
    stats.messages_received++;
    stats.bytes_received += bytes.size();
    // A stranger's message (its sender at bytes 8-11; no member has that id) is decoded on a
    // stranger's terms (Options::stranger_method): no MAC, at most 4 KiB, never compressed, so
    // nothing large is allocated or inflated for an unauthenticated sender.
    bool from_stranger = false;
    if (bytes.size() >= 12) {
      uint32_t sender = 0;
      std::memcpy(&sender, bytes.data() + 8, 4);
      from_stranger = le32toh(sender) == kStrangerId;
    }
    if (from_stranger && options.stranger_method == 0) {
      stats.unknown_sender++;
      return;
    }
    Result<Message> m = Decode(std::move(bytes), from_stranger ? stranger_codec : codec, checked);
    if (!m.ok()) {
      if (m.status().code() == StatusCode::kPermissionDenied) {
        stats.auth_failures++;
        WarnDropped("a message that failed authentication (a different cluster secret?)");
      } else {
        stats.bad_messages++;
      }
      return;
    }
    const Header& h = m->header;
    if (h.sender == kStrangerId) {
      // Never a peer: its messages keep no peer state, and only these are taken.
      if (!FromStranger(h)) {
        stats.unknown_sender++;
        return;
      }
      if (h.kind == Kind::kAckAck) return OnAckAck(*m);
      // Unauthenticated: bounded. An incarnation far ahead of our clock would shut out every
      // later stranger (a lower one is never heard again), and its calls are at most a few.
      auto cit = callers.find(kStrangerId);
      if (h.incarnation > WallMicros() + kStrangerClockSlackUs ||
          (cit != callers.end() && cit->second.incarnation == h.incarnation &&
           cit->second.entries.size() >= kMaxStrangerCalls)) {
        stats.unknown_sender++;
        return;
      }
      // A call without its proof is dropped before it keeps any state or is answered, so
      // nothing is sent back for it (an answer would go wherever the request says).
      if (!options.stranger_check || !options.stranger_check(m->payload())) {
        stats.auth_failures++;
        return;
      }
      return OnCall(*m);
    }
    // A peer's incarnation is its start time: one far ahead of our clock is forged (without a
    // secret anyone may send it), and kept it would make every real message of that peer
    // stale for good. The strangers' bound, an hour, applies to peers too.
    if (h.incarnation > WallMicros() + kStrangerClockSlackUs) {
      stats.stale++;
      return;
    }
    auto pit = peers.find(h.sender);
    if (pit == peers.end() || h.receiver != transport.self()) {
      stats.unknown_sender++;
      WarnDropped("a message from node " + std::to_string(h.sender) + " to node " +
                  std::to_string(h.receiver) + ", not one of ours (different member lists?)");
      return;
    }
    pit->second.last_heard = loop.NowMicros();
    SetUp(h.sender, pit->second, true);
    switch (h.kind) {
      case Kind::kCall:
        return OnCall(*m);
      case Kind::kAck:
        return OnAck(*m);
      case Kind::kAckAck:
        return OnAckAck(*m);
      case Kind::kNack:
        return OnNack(*m);
      case Kind::kHeartbeat:
        return OnHeartbeat(h, pit->second);
    }
  }

  // Leases (docs/rpc.md, "Leases"): a heartbeat's task is its sender's clock reading + 1 and
  // its mark echoes the latest reading + 1 the sender had from us (0: none, or revoked).
  void OnHeartbeat(const Header& h, PeerState& p) {
    const uint64_t now = loop.NowMicros();
    if (h.task != 0 && (h.incarnation > p.reading_incarnation ||
                        (h.incarnation == p.reading_incarnation && h.task > p.reading))) {
      p.reading = h.task;
      p.reading_at = now;
      p.reading_incarnation = h.incarnation;
    }
    if (options.lease_us == 0) return;
    if (h.incarnation > p.lease_incarnation && p.lease_incarnation != 0) {
      // A new life of the peer: what its previous one granted is void at once, echo or not
      // (coherence rule L4); the holder purges before anything renews the lease.
      Cell(h.sender)->lease_until.store(0, std::memory_order_release);
      p.lease_incarnation = h.incarnation;
      if (options.on_lease_lapse) {
        jobs.push_back([this, peer = h.sender] { options.on_lease_lapse(peer); });
      }
    }
    if (h.mark == 0 || h.mark - 1 > now) return;
    if (h.incarnation < p.lease_incarnation) return;  // a late message from an earlier life
    std::atomic<uint64_t>& until = Cell(h.sender)->lease_until;
    const uint64_t new_until = h.mark - 1 + options.lease_us;
    if (new_until <= now) return;  // an echo too old to renew anything (a link just healed)
    const bool lapsed =
        h.incarnation != p.lease_incarnation || now >= until.load(std::memory_order_relaxed);
    p.lease_incarnation = h.incarnation;
    if (!lapsed) {
      if (new_until > until.load(std::memory_order_relaxed)) {
        until.store(new_until, std::memory_order_release);
      }
      return;
    }
    // The holder purges what it held under the lapsed lease before the lease is extended
    // (coherence rule L3): the hook runs first, without the mutex, then the lease is set.
    jobs.push_back([this, peer = h.sender, &until, new_until] {
      if (options.on_lease_lapse) options.on_lease_lapse(peer);
      uint64_t cur = until.load(std::memory_order_relaxed);
      while (new_until > cur &&
             !until.compare_exchange_weak(cur, new_until, std::memory_order_release,
                                          std::memory_order_relaxed)) {
      }
    });
  }

  void Heartbeat() {
    if (stopped.load()) return;
    const uint64_t now = loop.NowMicros();
    for (auto& [id, p] : peers) {
      const uint64_t echo = p.revokes > 0 ? 0 : p.reading;
      SendRaw(id, EncodeMsg(Kind::kHeartbeat, id, now + 1, echo, 0, {}));
      if (now - p.last_heard > options.down_after_us) SetUp(id, p, false);
    }
    auto weak = weak_from_this();
    loop.PostAt(now + options.heartbeat_interval_us, [weak] {
      if (auto self = weak.lock()) self->Locked([&] { self->Heartbeat(); });
    });
  }

  void StopOnLoop() {
    for (auto& [id, p] : peers) {
      while (!p.pending.empty())
        Complete(p, p.pending.begin(), Status::Cancelled("endpoint stopped"));
    }
  }
};

Endpoint::Endpoint(net::Transport& transport, Options options)
    : impl_(std::make_shared<Impl>(transport, std::move(options))) {}

Endpoint::~Endpoint() { Stop(); }

void Endpoint::Register(uint16_t method, int priority, Handler handler, bool runs_inline) {
  FLOE_CHECK(!impl_->started.load());
  FLOE_CHECK(priority >= 0 && priority < kPriorityClasses);
  impl_->methods[method] = {priority, std::move(handler), runs_inline};
}

void Endpoint::RegisterAsync(uint16_t method, int priority, AsyncHandler handler,
                             bool runs_inline) {
  FLOE_CHECK(!impl_->started.load());
  FLOE_CHECK(priority >= 0 && priority < kPriorityClasses);
  Impl::Method m;
  m.priority = priority;
  m.runs_inline = runs_inline;
  m.async = std::move(handler);
  impl_->methods[method] = std::move(m);
}

uint64_t Endpoint::LeaseUntil(NodeId home) const {
  const Impl::PeerCell* cell = impl_->Cell(home);
  return cell == nullptr || !cell->known.load(std::memory_order_acquire)
             ? 0
             : cell->lease_until.load(std::memory_order_acquire);
}

Status Endpoint::AddPeer(NodeId peer) {
  Status st;
  impl_->Locked([&] { st = impl_->AddPeerLocked(peer); });
  return st;
}

void Endpoint::RemovePeer(NodeId peer) {
  impl_->Locked([&] { impl_->RemovePeerLocked(peer); });
}

uint64_t Endpoint::RevokeLease(NodeId holder) {
  uint64_t bound = 0;
  impl_->Locked([&] {
    auto it = impl_->peers.find(holder);
    if (it == impl_->peers.end()) return;
    Impl::PeerState& p = it->second;
    p.revokes++;
    // Every reading echoed so far arrived by reading_at, so a lease it granted ends by then
    // plus the lease (and a margin for clocks that run at slightly different rates).
    const uint64_t lease = impl_->options.lease_us;
    bound = p.reading_at + lease + lease / 50 + 1000;
  });
  return bound;
}

void Endpoint::RestoreLease(NodeId holder) {
  impl_->Locked([&] {
    auto it = impl_->peers.find(holder);
    if (it != impl_->peers.end() && it->second.revokes > 0) it->second.revokes--;
  });
}

net::Loop& Endpoint::loop() const { return impl_->loop; }

void Endpoint::Start() {
  if (impl_->started.exchange(true)) return;
  if (!impl_->options.inline_handlers) {
    for (int c = 0; c < kPriorityClasses; c++) {
      impl_->pools.push_back(std::make_unique<HandlerPool>(
          c, std::max(1, impl_->options.threads_per_class), impl_->options.on_idle));
    }
  }
  std::weak_ptr<Impl> weak = impl_;
  impl_->transport.SetReceiver([weak](std::string bytes, bool checked) {
    if (auto self = weak.lock()) {
      self->Locked([&] { self->OnMessage(std::move(bytes), checked); });
    }
  });
  impl_->loop.Post([weak] {
    if (auto self = weak.lock()) self->Locked([&] { self->Heartbeat(); });
  });
}

void Endpoint::Stop() {
  if (impl_->stopped.exchange(true)) return;
  impl_->Locked([&] { impl_->StopOnLoop(); });  // calls in flight end with Cancelled
  for (auto& p : impl_->pools) p->Stop();
}

uint64_t Endpoint::CallAsync(NodeId peer, uint16_t method, std::string request, uint64_t timeout_us,
                             Done done) {
  static std::atomic<uint64_t> next_id{1};
  const uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed);
  impl_->Locked(
      [&] { impl_->StartCall(id, peer, method, std::move(request), timeout_us, std::move(done)); });
  return id;
}

Result<std::string> Endpoint::Call(NodeId peer, uint16_t method, std::string request,
                                   uint64_t timeout_us) {
  auto* asio_loop = dynamic_cast<net::AsioLoop*>(&impl_->loop);
  if (asio_loop == nullptr || asio_loop->InLoopThread()) {
    return Status::FailedPrecondition("a blocking Call needs a real loop and a thread not its own");
  }
  if (tl_inline) {
    return Status::FailedPrecondition("an inline handler must not wait for a call");
  }
  auto mit = impl_->methods.find(method);
  if (tl_class >= 0 && mit != impl_->methods.end() && mit->second.priority <= tl_class) {
    return Status::FailedPrecondition("a handler of priority class " + std::to_string(tl_class) +
                                      " may only wait for methods of a higher class (method " +
                                      std::to_string(method) + " is class " +
                                      std::to_string(mit->second.priority) + ")");
  }
  // The caller waits by polling for a short while, then sleeps. It polls the transport itself
  // (Transport::Poll), so an answer that comes within the poll is received, handled and
  // returned on this thread: no wake-up of the caller, and none of the loop thread on the way
  // (the loop may still wake for the datagram, but it no longer stands between the answer and
  // the caller). Between empty polls it yields its core (docs/perf.md, "RPC").
  struct Waiter {
    std::atomic<bool> ready{false};
    Mutex mu;
    std::condition_variable_any cv;
    std::optional<Result<std::string>> result;
  };
  auto w = std::make_shared<Waiter>();
  CallAsync(peer, method, std::move(request), timeout_us, [w](Result<std::string> r) {
    MutexLock lock(&w->mu);
    w->result = std::move(r);
    w->ready.store(true, std::memory_order_release);
    w->cv.notify_one();
  });
  const uint64_t spin_until = NowMicros() + impl_->options.call_spin_us;
  while (!w->ready.load(std::memory_order_acquire) && NowMicros() < spin_until) {
    if (!impl_->transport.Poll()) std::this_thread::yield();
  }
  MutexLock lock(&w->mu);
  while (!w->ready.load(std::memory_order_acquire)) w->cv.wait(w->mu);
  return std::move(*w->result);
}

void Endpoint::Cancel(uint64_t call_id) {
  impl_->Locked([&] { impl_->CancelCall(call_id); });
}

bool Endpoint::PeerUp(NodeId peer) const {
  const Impl::PeerCell* cell = impl_->Cell(peer);
  return cell != nullptr && cell->known.load(std::memory_order_acquire) &&
         cell->up.load(std::memory_order_relaxed);
}

uint64_t Endpoint::incarnation() const { return impl_->incarnation_; }
const Stats& Endpoint::stats() const { return impl_->stats; }

}  // namespace floe::rpc
