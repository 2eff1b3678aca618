// rpc::Endpoint: the call cycle of docs/rpc.md. Every member of Impl below the "protocol
// state" line is guarded by `mu`; entry points (calls, received messages, timers, answers) take
// it through Locked(), which sends the messages queued meanwhile and runs callbacks and inline
// handlers after releasing it. A call is thus encoded and sent on the caller's thread and an
// answer on the handler's: no hand-off to the loop thread on the way out. Impl is declared in
// internal/endpoint_impl.h; what arrives (the callee's side, answers, heartbeats, strangers) is
// handled in endpoint_inbound.cc.

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

#include "rpc/internal/endpoint_impl.h"
#include "rpc/internal/handler_pool.h"
#include "rpc/internal/peer_cells.h"
#include "rpc/rpc.h"

namespace floe::rpc {

namespace {
using internal::HandlerPool;
using internal::tl_class;
using internal::tl_inline;

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

}  // namespace

Endpoint::Impl::Impl(net::Transport& t, Options o)
    : transport(t), loop(t.loop()), options(std::move(o)) {
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

Status Endpoint::Impl::AddPeerLocked(NodeId peer) {
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

void Endpoint::Impl::RemovePeerLocked(NodeId peer) {
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

uint64_t Endpoint::Impl::Jitter(uint64_t us) {
  // +-25%
  const uint64_t quarter = us / 4;
  return quarter == 0 ? us : us - quarter + rng() % (2 * quarter + 1);
}

// How long to wait before resending a message of `bytes` (time to send it included).
uint64_t Endpoint::Impl::InitialBackoff(size_t bytes) const {
  return options.resend_initial_us + static_cast<uint64_t>(bytes) * 1'000'000 /
                                         std::max<uint64_t>(1, options.resend_bytes_per_sec);
}

// Queues a message; Locked sends it once `mu` is released.
void Endpoint::Impl::SendRaw(NodeId to, net::Transport::Bytes message) {
  stats.messages_sent++;
  stats.bytes_sent += message->size();
  outbox.emplace_back(to, std::move(message));
}

net::Transport::Bytes Endpoint::Impl::EncodeMsg(Kind kind, NodeId to, uint64_t task, uint64_t mark,
                                                uint16_t code, std::string payload,
                                                uint8_t priority) {
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

uint64_t Endpoint::Impl::LowWater(const PeerState& p) const {
  return p.pending.empty() ? p.next_task : p.pending.begin()->first;
}

void Endpoint::Impl::SetUp(NodeId peer, PeerState& p, bool up) {
  if (p.down == !up) return;
  p.down = !up;
  if (!up) stats.peers_down++;
  if (PeerCell* cell = Cell(peer)) cell->up.store(up, std::memory_order_relaxed);
}

// ---- caller ----
void Endpoint::Impl::StartCall(uint64_t call_id, NodeId peer, uint16_t method, std::string request,
                               uint64_t timeout_us, Done done) {
  stats.calls++;
  auto pit = peers.find(peer);
  if (stopped.load()) return Finish(std::move(done), Status::Cancelled("endpoint stopped"));
  if (pit == peers.end()) {
    return Finish(std::move(done), Status::InvalidArgument("unknown peer " + std::to_string(peer)));
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

Endpoint::Impl::TimerId Endpoint::Impl::ScheduleResend(NodeId peer, uint64_t task, uint64_t after) {
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
Endpoint::Impl::TimerId Endpoint::Impl::Schedule(uint64_t at, TimerKey what, uint64_t slack) {
  const TimerId id{at, next_timer++};
  timers.emplace(id, what);
  Arm(at, slack);
  return id;
}

void Endpoint::Impl::Arm(uint64_t at, uint64_t slack) {
  if (armed_at != 0 && armed_at <= at + slack) return;
  auto weak = weak_from_this();
  loop.PostAt(at, [weak, at] {
    if (auto self = weak.lock()) self->Locked([&] { self->OnTimer(at); });
  });
  // Only once the timer is posted (the callback runs later, under the lock we hold): a PostAt
  // that throws (memory) leaves the arming as it was. Set first, it named a timer that would
  // never fire, and every later arming deferred to it: no resend or deadline fired again.
  armed_at = at;
}

void Endpoint::Impl::OnTimer(uint64_t at) {
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

void Endpoint::Impl::Resend(NodeId peer, uint64_t task) {
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

void Endpoint::Impl::Expire(NodeId peer, uint64_t task) {
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

void Endpoint::Impl::Complete(PeerState& p, std::map<uint64_t, Pending>::iterator it,
                              Result<std::string> r) {
  Unschedule(it->second.resend_timer);
  Unschedule(it->second.deadline_timer);
  Done done = std::move(it->second.done);
  calls.erase(it->second.call_id);
  p.pending.erase(it);
  Finish(std::move(done), std::move(r));
}

void Endpoint::Impl::Finish(Done done, Result<std::string> r) {
  if (r.ok()) {
    stats.completed++;
  } else {
    stats.failed++;
    if (r.status().code() == StatusCode::kCancelled) stats.cancelled++;
  }
  completions.emplace_back(std::move(done), std::move(r));
}

void Endpoint::Impl::CancelCall(uint64_t call_id) {
  auto it = calls.find(call_id);
  if (it == calls.end()) return;
  const auto [peer, task] = it->second;
  auto peer_it = peers.find(peer);
  if (peer_it == peers.end()) return;
  PeerState& p = peer_it->second;
  auto pit = p.pending.find(task);
  if (pit != p.pending.end()) Complete(p, pit, Status::Cancelled("call cancelled"));
}

void Endpoint::Impl::Heartbeat() {
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

void Endpoint::Impl::StopOnLoop() {
  for (auto& [id, p] : peers) {
    while (!p.pending.empty())
      Complete(p, p.pending.begin(), Status::Cancelled("endpoint stopped"));
  }
}

Endpoint::Endpoint(net::Transport& transport, Options options)
    : impl_(std::make_shared<Impl>(transport, std::move(options))) {
  // The log's registry is built on its first use. Built here, before this endpoint's threads
  // run, two of them logging for the first time at once never race on its construction
  // (ThreadSanitizer cannot see the guard inside the uninstrumented library).
  spdlog::default_logger_raw();
}

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

uint64_t Endpoint::SilentUs(NodeId peer) const {
  uint64_t silent = UINT64_MAX;
  impl_->Locked([&] {
    auto pit = impl_->peers.find(peer);
    if (pit == impl_->peers.end()) return;
    const uint64_t now = impl_->loop.NowMicros();
    silent = now > pit->second.last_heard ? now - pit->second.last_heard : 0;
  });
  return silent;
}

void Endpoint::FailCalls(NodeId peer, const Status& why) {
  impl_->Locked([&] {
    auto pit = impl_->peers.find(peer);
    if (pit == impl_->peers.end()) return;
    Impl::PeerState& p = pit->second;
    while (!p.pending.empty()) {
      impl_->stats.unavailable++;
      impl_->Complete(p, p.pending.begin(), why);
    }
  });
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

bool Endpoint::Post(int priority, std::function<void()> job) {
  FLOE_CHECK(priority >= 0 && priority < kPriorityClasses);
  if (!impl_->started.load() || impl_->stopped.load()) return false;
  if (impl_->options.inline_handlers) {  // no pools
    job();
    return true;
  }
  return impl_->pools[static_cast<size_t>(priority)]->Add(std::move(job));
}

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
  // A TCP frame is read past its header's sender and receiver (bytes 8-15) only from a peer to
  // us, on a connection whose greeting that peer signed (up to max_message; up to the
  // transport's untrusted_max before any greeting), or from the stranger (up to its 4 KiB):
  // anyone else's is dropped with its connection before it is buffered (docs/rpc.md, "Limits").
  impl_->transport.SetAdmission(16, [weak](std::string_view head, NodeId trusted) -> size_t {
    auto self = weak.lock();
    if (!self) return 0;
    uint32_t sender = 0, receiver = 0;
    std::memcpy(&sender, head.data() + 8, 4);
    std::memcpy(&receiver, head.data() + 12, 4);
    sender = le32toh(sender);
    receiver = le32toh(receiver);
    if (sender == kStrangerId) {
      return self->options.stranger_method != 0
                 ? self->stranger_codec.max_message + kHeaderBytes + kMacBytes
                 : 0;
    }
    if (trusted != 0 && sender != trusted) return 0;
    MutexLock lock(&self->mu);
    if (self->peers.count(sender) == 0 || receiver != self->transport.self()) return 0;
    return self->codec.max_message;
  });
  // A connection's greeting: a HEARTBEAT to the peer with code kGreetingCode and the wall
  // clock as its task, under the MAC every message carries (so no periodic heartbeat, whose
  // code is 0, passes for one, and a captured greeting ages out in a minute), read by the
  // transport alone: it never reaches OnMessage, so it changes no lease or peer state.
  net::Transport::Trust trust;
  trust.greet = [weak](NodeId to) -> net::Transport::Bytes {
    auto self = weak.lock();
    if (!self || to == kStrangerId || to == kAnyNodeId || self->transport.self() == kStrangerId) {
      return nullptr;
    }
    // Distinct from the greeting sent just before (two connections opened in one microsecond):
    // nudged up within a second of it at most, so a clock stepped back is followed at once
    // rather than greetings staying ahead of it (and refused as too far off) for the step.
    const uint64_t now = WallMicros();
    uint64_t last = self->last_greeting_sent.load();
    uint64_t at = now;
    do {
      at = (now <= last && last - now < 1'000'000) ? last + 1 : now;
    } while (!self->last_greeting_sent.compare_exchange_weak(last, at));
    return self->EncodeMsg(Kind::kHeartbeat, to, at, 0, kGreetingCode, std::string());
  };
  trust.verify = [weak](std::string_view greeting) -> NodeId {
    auto self = weak.lock();
    // A joiner has no key to check a greeting with, and needs none (untrusted_stays below).
    if (!self || self->transport.self() == kStrangerId) return 0;
    Result<Message> m = Decode(greeting, self->codec, /*checked=*/true);
    if (!m.ok() || m->header.kind != Kind::kHeartbeat || m->header.code != kGreetingCode ||
        m->header.receiver != self->transport.self()) {
      return 0;
    }
    const uint64_t now = WallMicros(), at = m->header.task;
    const NodeId sender = m->header.sender;
    MutexLock lock(&self->mu);
    if (self->peers.count(sender) == 0) return 0;
    if ((at > now ? at - now : now - at) > kGreetingFreshUs) {
      // Said, not only counted: its small messages still pass over UDP, so the peer looks up
      // while every large one fails.
      const uint64_t mono = self->loop.NowMicros();
      if (self->last_greeting_warning_us == 0 ||
          mono - self->last_greeting_warning_us > 10'000'000) {
        self->last_greeting_warning_us = mono;
        FLOE_LOG_WARN(
            "rpc: node {} refused a connection from node {}: its greeting's clock is {:.0f} s "
            "{} this node's (at most {} s apart): check the clocks (NTP); messages over a "
            "datagram fail until then",
            self->transport.self(), sender,
            static_cast<double>(at > now ? at - now : now - at) / 1e6,
            at > now ? "ahead of" : "behind", kGreetingFreshUs / 1'000'000);
      }
      return 0;
    }
    // A greeting proves one connection: a replay of one taken is refused.
    std::set<uint64_t>& taken = self->greetings_taken[sender];
    while (!taken.empty() && *taken.begin() + kGreetingFreshUs < now) taken.erase(taken.begin());
    if (!taken.insert(at).second) return 0;
    if (taken.size() > Impl::kMaxGreetingsKept) taken.erase(taken.begin());
    return sender;
  };
  // A node that is not a member yet (a joiner) is greeted by nobody: the answers it awaits
  // (up to its message limit) come on connections no greeting proves, and stay open.
  if (impl_->transport.self() == kStrangerId) {
    trust.untrusted_max = impl_->codec.max_message + kHeaderBytes + kMacBytes;
    trust.untrusted_stays = true;
  }
  impl_->transport.SetTrust(std::move(trust));
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
