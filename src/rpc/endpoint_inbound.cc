// rpc::Endpoint, what arrives (docs/rpc.md): a message's checks on its sender (a peer's, or a
// stranger's on a stranger's terms) and the drop warnings; the callee's side of the call cycle
// (calls run once, answers resent until acknowledged); answers, NACKs and deferred ACKACKs of
// the caller's side; heartbeats and leases. Every function here runs with `mu` held, inside
// Locked (endpoint.cc).

#include <endian.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "rpc/internal/endpoint_impl.h"
#include "rpc/rpc.h"

namespace floe::rpc {

namespace {
using internal::tl_inline;

Status StatusFromCode(uint16_t code, std::string message) {
  if (code == 0 || code > static_cast<uint16_t>(StatusCode::kWrongHome)) {
    return Status::Internal("remote status " + std::to_string(code) + ": " + message);
  }
  return Status(static_cast<StatusCode>(code), message);
}

}  // namespace

// Whether `h` is a message a stranger may send us (Options::stranger_method).
bool Endpoint::Impl::FromStranger(const Header& h) const {
  return options.stranger_method != 0 && h.sender == kStrangerId && h.receiver == kAnyNodeId &&
         ((h.kind == Kind::kCall && h.code == options.stranger_method) || h.kind == Kind::kAckAck);
}

// ---- callee ----
// The state for `sender`'s incarnation, or null if the message is from an earlier one.
Endpoint::Impl::CallerState* Endpoint::Impl::CallerFor(NodeId sender, uint64_t inc) {
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

bool Endpoint::Impl::Running(const CallerState& c) {
  return std::any_of(c.entries.begin(), c.entries.end(), [](const auto& entry) {
    return entry.second.state == Entry::State::kRunning;
  });
}

// Drops the ACK resend of an entry about to be forgotten or finished.
void Endpoint::Impl::ForgetAck(const Entry& e) {
  if (e.state == Entry::State::kDone) Unschedule(e.ack_timer);
}

void Endpoint::Impl::Collect(CallerState& c, uint64_t mark) {
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

void Endpoint::Impl::OnCall(Message& m) {
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

void Endpoint::Impl::Answered(NodeId caller, uint64_t inc, uint64_t task, Result<std::string> r) {
  if (stopped.load()) return;
  auto cit = callers.find(caller);
  if (cit == callers.end() || cit->second.incarnation != inc) return;
  auto it = cit->second.entries.find(task);
  if (it == cit->second.entries.end()) return;  // collected: the caller gave up
  Entry& e = it->second;
  if (e.state != Entry::State::kRunning) return;  // a second reply from an async handler
  const uint16_t code = r.ok() ? 0 : static_cast<uint16_t>(r.status().code());
  std::string payload = r.ok() ? std::move(*r) : std::string(r.status().message());
  // Encoded before the entry is marked done: memory that runs out here leaves it running, to be
  // answered again, never done without an answer to resend (a duplicate call then sent a null
  // message, a segfault on the loop thread).
  net::Transport::Bytes ack = EncodeMsg(Kind::kAck, caller, task, inc, code, std::move(payload));
  e.state = Entry::State::kDone;
  e.ack = std::move(ack);
  e.backoff = InitialBackoff(e.ack->size());
  // An answer to a stranger is resent only briefly: the joiner acknowledges it at once.
  e.give_up_at = loop.NowMicros() + (caller == kStrangerId
                                         ? std::min(options.ack_give_up_us, kStrangerGiveUpUs)
                                         : options.ack_give_up_us);
  SendRaw(caller, e.ack);
  e.ack_timer = ScheduleAckResend(caller, inc, task, e.backoff);
}

Endpoint::Impl::TimerId Endpoint::Impl::ScheduleAckResend(NodeId caller, uint64_t inc,
                                                          uint64_t task, uint64_t after) {
  const uint64_t delay = Jitter(after);
  return Schedule(loop.NowMicros() + delay, {TimerKind::kAckResend, caller, task, inc}, delay / 4);
}

void Endpoint::Impl::ResendAck(NodeId caller, uint64_t inc, uint64_t task) {
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

void Endpoint::Impl::OnAckAck(const Message& m) {
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

void Endpoint::Impl::OnAck(Message& m) {
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

void Endpoint::Impl::SendAckAck(NodeId peer, PeerState& p, uint64_t task) {
  const uint64_t mark = LowWater(p);
  SendRaw(peer, EncodeMsg(Kind::kAckAck, peer, task, mark, 0, {}));
  NoteMarkSent(p, mark);
}

// A mark went out to the peer: deferred ACKACKs below it are covered.
void Endpoint::Impl::NoteMarkSent(PeerState& p, uint64_t mark) {
  p.mark_sent = std::max(p.mark_sent, mark);
  if (p.ackack_owed != 0 && p.ackack_owed < p.mark_sent) p.ackack_owed = 0;
}

void Endpoint::Impl::FlushAckAck(NodeId peer) {
  auto pit = peers.find(peer);
  if (pit == peers.end()) return;
  PeerState& p = pit->second;
  p.ackack_timer = false;
  if (p.ackack_owed == 0) return;
  const uint64_t task = p.ackack_owed;
  p.ackack_owed = 0;
  SendAckAck(peer, p, task);
}

void Endpoint::Impl::OnNack(const Message& m) {
  const Header& h = m.header;
  if (h.mark != incarnation_) return;
  PeerState& p = peers[h.sender];
  auto it = p.pending.find(h.task);
  if (it != p.pending.end()) it->second.nacked = true;
}

// Dropped messages are counted (Stats) and, so that an operator sees a misconfiguration,
// logged at most once every 10 seconds.
void Endpoint::Impl::WarnDropped(const std::string& what) {
  const uint64_t now = loop.NowMicros();
  if (last_drop_warning_us != 0 && now - last_drop_warning_us < 10'000'000) return;
  last_drop_warning_us = now;
  FLOE_LOG_WARN("rpc: node {} dropped {}", transport.self(), what);
}

void Endpoint::Impl::OnMessage(std::string bytes, bool checked) {
  if (stopped.load()) return;
  stats.messages_received++;
  stats.bytes_received += bytes.size();
  // A stranger's message (its sender at bytes 8-11; no member has that id) is decoded on a
  // stranger's terms (Options::stranger_method): no MAC, at most 4 KiB, never compressed, so
  // nothing large is allocated or inflated for an unauthenticated sender.
  bool from_stranger = false;
  if (bytes.size() >= kHeaderBytes) {
    uint32_t sender = 0, receiver = 0;
    std::memcpy(&sender, bytes.data() + 8, 4);
    std::memcpy(&receiver, bytes.data() + 12, 4);
    sender = le32toh(sender);
    receiver = le32toh(receiver);
    from_stranger = sender == kStrangerId;
    // Neither a peer's to us nor a stranger's: dropped on these two fields, before its
    // payload is checksummed, authenticated or inflated under our lock (docs/rpc.md).
    if (!from_stranger && (peers.count(sender) == 0 || receiver != transport.self())) {
      stats.unknown_sender++;
      WarnDropped("a message from node " + std::to_string(sender) + " to node " +
                  std::to_string(receiver) + ", not one of ours (different member lists?)");
      return;
    }
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
  // A greeting is the transport's alone: one replayed as a message (a datagram) would count as
  // hearing the peer and set its lease reading to a wall clock far above its own readings.
  if (h.kind == Kind::kHeartbeat && h.code != 0) {
    stats.bad_messages++;
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
void Endpoint::Impl::OnHeartbeat(const Header& h, PeerState& p) {
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

}  // namespace floe::rpc
