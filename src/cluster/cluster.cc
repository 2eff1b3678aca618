// Formation: every node asks every other member HELLO until each has answered and agrees.
//
// How it works
//   - Start() sends one HELLO call to each other member (rpc::CallAsync, deadline
//     hello_timeout; rpc resends within it). A member keeps at most one HELLO in flight.
//   - An answer is the member's own view. If it agrees (Disagreement() is empty) the member is
//     marked agreed and never asked again; otherwise the disagreement is its waiting reason and
//     it is asked again hello_interval after the last ask (an operator may restart it with a
//     fixed configuration). A call that timed out is repeated at once (it already waited); one
//     that failed at once (rpc marks the peer down after down_after) waits hello_interval.
//   - A HELLO received is answered with our view, formed or not (contract 3), and also read:
//     a sender that is not in our list, or that our list numbers differently, becomes a
//     "stranger" reason (kept for two log intervals after its last HELLO); a listed member whose
//     HELLO disagrees loses its agreement until it answers agreeing again.
//   - When the last member agrees (or more than half, at a node restarted with a log that holds
//     the cluster id), formed_ is set (release) and the OnFormed callbacks are posted to the
//     loop. Nothing here sends a heartbeat: liveness is rpc's (contract 4).
//   - Each process draws a start token; the token of each member's agreeing answer is kept,
//     and on forming our HELLO lists them (rule M5 (7)), so a member we counted that heard no
//     answer before our log had an id is told it was a founder, not a wiped member.
// Locking: all state is under mu; no endpoint call is made with mu held, since CallAsync may
// finish at once on the calling thread and the callback takes mu.

#include "cluster/cluster.h"

#include <algorithm>
#include <map>

#include "cluster/internal/hello.h"

namespace floe::cluster {

using internal::Hello;

struct Cluster::Impl : std::enable_shared_from_this<Impl> {
  enum class Heard : uint8_t { kNothing, kAgreeing, kDisagreeing };
  struct Peer {
    Member member;
    bool agreed = false;
    bool asking = false;
    // Its last answer disagreed on more than a wiped directory (internal::DisagreesOnlyAsWiped):
    // it keeps a restarted member from forming with a majority (M5 (3)).
    bool blocks_majority = false;
    bool settled = false;  // an answer to our HELLO, or its deadline, came once at least
    uint16_t client_port = 0;
    uint64_t start_token = 0;          // of its process, from its last agreeing answer
    std::string reason = "no answer";  // from our last ask
    Heard heard = Heard::kNothing;     // from its last HELLO to us
    std::string heard_reason;
  };
  struct Stranger {
    std::string reason;
    uint64_t heard_at = 0;
  };

  rpc::Endpoint& endpoint;
  net::Loop& loop;
  const Options options;
  const SlotMap map;
  const Status invalid;  // ValidateOptions
  // Our view as a HELLO, with formed false (an answer once formed sets it on a copy). Only its
  // cluster id and holds_log (SetClusterId, SetHoldsLog) and the founder tokens (on forming)
  // change; every read holds mu.
  Hello ours FLOE_GUARDED_BY(mu);
  std::string ours_bytes FLOE_GUARDED_BY(mu);

  std::atomic<bool> formed{false};
  std::atomic<bool> started{false};
  std::atomic<bool> stopped{false};

  mutable Mutex mu;
  std::vector<Peer> peers FLOE_GUARDED_BY(mu);  // index id - 1; self's entry is never asked
  std::map<std::string, Stranger> strangers FLOE_GUARDED_BY(mu);
  std::vector<std::function<void()>> on_formed FLOE_GUARDED_BY(mu);
  uint64_t started_at FLOE_GUARDED_BY(mu) = 0;
  uint64_t formation_us FLOE_GUARDED_BY(mu) = 0;

  Impl(rpc::Endpoint& e, net::Loop& l, Options o)
      : endpoint(e),
        loop(l),
        options(std::move(o)),
        map(SlotMap::Balanced(options.members)),
        invalid(ValidateOptions(options)),
        ours(internal::MakeHello(options, map, false)),
        ours_bytes(internal::EncodeHello(ours)) {
    MutexLock lock(&mu);
    for (const Member& m : map.members()) peers.push_back({.member = m});
    ours.start_token = options.start_token;
    while (ours.start_token == 0) ours.start_token = ClusterId::Random().lo;
    ours_bytes = internal::EncodeHello(ours);
  }

  bool IsPeer(net::NodeId id) const { return id != options.self && map.Find(id) != nullptr; }
  // Peers are in id order; a joined member's ids may have gaps (members removed, rule J2).
  Peer& PeerOf(net::NodeId id) FLOE_REQUIRES(mu) {
    if (id >= 1 && id <= peers.size() && peers[id - 1].member.id == id) return peers[id - 1];
    for (Peer& p : peers) {
      if (p.member.id == id) return p;
    }
    FLOE_CHECK_MSG(false, "not a peer");
    return peers.front();
  }

  // ---- asking ----
  void Ask(net::NodeId id) {
    {
      MutexLock lock(&mu);
      Peer& p = PeerOf(id);
      // Also once formed: a member formed with a majority goes on asking those that did not
      // agree yet, so each is recorded (its client port) when it answers (M5 (3)).
      if (stopped.load() || p.asking || p.agreed) return;
      p.asking = true;
    }
    const uint64_t start = loop.NowMicros();
    std::weak_ptr<Impl> weak = weak_from_this();
    std::string bytes;
    {
      MutexLock lock(&mu);
      bytes = ours_bytes;
    }
    endpoint.CallAsync(id, kHelloMethod, bytes, options.hello_timeout_us,
                       [weak, id, start](Result<std::string> r) {
                         if (auto self = weak.lock()) self->OnAnswer(id, start, std::move(r));
                       });
  }

  void OnAnswer(net::NodeId id, uint64_t start, Result<std::string> r) {
    bool retry = false, now_formed = false;
    uint64_t retry_at = 0;
    {
      MutexLock lock(&mu);
      Peer& p = PeerOf(id);
      p.asking = false;
      if (stopped.load()) return;
      if (r.status().code() != StatusCode::kCancelled) p.settled = true;
      if (r.ok()) {
        Result<Hello> theirs = internal::DecodeHello(*r);
        if (!theirs.ok()) {
          p.reason = "sent a malformed HELLO answer (" + theirs.status().ToString() + ")";
          p.blocks_majority = true;
        } else {
          p.reason = internal::Disagreement(ours, *theirs, p.member);
          p.agreed = p.reason.empty();
          p.blocks_majority = !p.agreed && !internal::DisagreesOnlyAsWiped(ours, *theirs);
          if (p.agreed) {
            p.client_port = static_cast<uint16_t>(theirs->client_port);
            p.start_token = theirs->start_token;
          }
        }
        retry_at = start + options.hello_interval_us;
      } else if (r.status().code() == StatusCode::kCancelled) {
        return;  // the endpoint is stopping
      } else if (r.status().code() == StatusCode::kTimeout ||
                 r.status().code() == StatusCode::kUnavailable) {
        switch (p.heard) {
          case Heard::kNothing:
            p.reason = "no answer";
            break;
          case Heard::kAgreeing:
            p.reason = "no answer (its HELLOs reach us, ours get no answer)";
            break;
          case Heard::kDisagreeing:
            p.reason = p.heard_reason;
            break;
        }
        // A call that waited out its deadline is repeated at once; one refused at once (the
        // peer is marked down) waits an interval.
        retry_at =
            r.status().code() == StatusCode::kTimeout ? start : start + options.hello_interval_us;
      } else {
        p.reason = "refused our HELLO (" + r.status().ToString() + ")";
        retry_at = start + options.hello_interval_us;
      }
      retry = !p.agreed;
      now_formed = CheckFormed();
    }
    if (retry) {
      std::weak_ptr<Impl> weak = weak_from_this();
      const uint64_t at = std::max(retry_at, loop.NowMicros());
      loop.PostAt(at, [weak, id] {
        if (auto self = weak.lock()) self->Ask(id);
      });
    }
    if (now_formed) RunFormed();
  }

  // Sets formed when every member agrees, or more than half of them do at a node restarted
  // with a log that holds the cluster id (contract 2; docs/membership.md, M5 (3)); true exactly
  // once.
  bool CheckFormed() FLOE_REQUIRES(mu) {
    if (formed.load() || !invalid.ok() || !started.load()) return false;
    size_t agreed = 1;  // self
    for (const Peer& p : peers) agreed += p.member.id != options.self && p.agreed ? 1 : 0;
    const bool restarted = ours.holds_log && (ours.cluster_id_hi != 0 || ours.cluster_id_lo != 0);
    if (agreed < peers.size() && !(restarted && 2 * agreed > peers.size())) return false;
    if (agreed < peers.size()) {
      // A majority forms without silent members and wiped ones (they must --join), never
      // beside a member that answered as another build, cluster or list: two builds must not
      // share one Raft log (docs/cluster.md, "Versions"). So each member's first answer (or
      // its deadline) is waited for.
      for (const Peer& p : peers) {
        if (p.member.id != options.self && !p.agreed && (!p.settled || p.blocks_majority)) {
          return false;
        }
      }
    }
    formation_us = std::max<uint64_t>(1, loop.NowMicros() - started_at);
    // Rule M5 (7): the processes we formed with (peers are in the order of ours.members).
    ours.founder_tokens.clear();
    for (const Peer& p : peers) {
      ours.founder_tokens.push_back(p.member.id == options.self ? ours.start_token
                                    : p.agreed                  ? p.start_token
                                                                : 0);
    }
    ours_bytes = internal::EncodeHello(ours);
    // release: whoever sees formed() true sees the state set before it.
    formed.store(true, std::memory_order_release);
    if (agreed == peers.size()) {
      FLOE_LOG_INFO("cluster '{}': formed with {} members in {:.1f} ms; slot map version {}",
                    options.cluster_name, peers.size(), formation_us / 1000.0, map.version());
    } else {
      FLOE_LOG_INFO(
          "cluster '{}': formed with {} of {} members in {:.1f} ms (a majority: this member's "
          "log holds the cluster id); slot map version {}",
          options.cluster_name, agreed, peers.size(), formation_us / 1000.0, map.version());
    }
    return true;
  }

  void RunFormed() {
    std::vector<std::function<void()>> run;
    {
      MutexLock lock(&mu);
      run.swap(on_formed);
    }
    for (auto& fn : run) PostFormed(std::move(fn));
  }

  // Posts an OnFormed callback that runs only while the cluster lives and has not stopped: what
  // it captures (the owner of the cluster) may be gone by the time the loop gets to it.
  void PostFormed(std::function<void()> fn) {
    std::weak_ptr<Impl> weak = weak_from_this();
    loop.Post([weak, fn = std::move(fn)] {
      if (auto self = weak.lock(); self != nullptr && !self->stopped.load()) fn();
    });
  }

  // ---- answering ----
  Result<std::string> OnHello(net::NodeId from, std::string_view request) {
    if (!invalid.ok()) {
      return Status::FailedPrecondition("its cluster options are invalid: " +
                                        std::string(invalid.message()));
    }
    Result<Hello> theirs = internal::DecodeHello(request);
    if (!theirs.ok()) return theirs.status();
    const bool is_formed = formed.load(std::memory_order_acquire);
    MutexLock lock(&mu);
    RecordHeard(from, *theirs);
    if (!is_formed) return ours_bytes;
    Hello now = ours;
    now.formed = true;
    return internal::EncodeHello(now);
  }

  void RecordHeard(net::NodeId from, const Hello& theirs) FLOE_REQUIRES(mu) {
    const Member* by_id = IsPeer(from) ? map.Find(from) : nullptr;
    if (!theirs.complete) {
      // Another protocol version: its address is unreadable, so it is named by its id.
      if (by_id != nullptr) {
        NoteHeard(from, internal::Disagreement(ours, theirs, *by_id));
      }
      return;
    }
    auto it = std::find(ours.members.begin(), ours.members.end(), theirs.self);
    if (it == ours.members.end()) {
      NoteStranger(theirs.self, "not in our list");
      return;
    }
    const auto our_id = static_cast<net::NodeId>(it - ours.members.begin() + 1);
    if (our_id != from || by_id == nullptr) {
      NoteStranger(theirs.self, "node ids differ: it is node " + std::to_string(theirs.self_id) +
                                    " in its list, " + std::to_string(our_id) + " in ours; " +
                                    internal::Disagreement(ours, theirs, *map.Find(our_id)));
      return;
    }
    NoteHeard(from, internal::Disagreement(ours, theirs, *by_id), theirs.client_port);
  }

  // Remembers a node outside our list for the waiting reasons; old entries expire, and the
  // table is bounded so that HELLOs naming ever new addresses cannot grow it.
  void NoteStranger(const std::string& address, std::string reason) FLOE_REQUIRES(mu) {
    const uint64_t now = loop.NowMicros();
    std::erase_if(strangers, [&](const auto& kv) { return Expired(kv.second, now); });
    if (strangers.size() >= internal::kMaxStrangers && strangers.count(address) == 0) return;
    strangers[address] = {std::move(reason), now};
  }

  bool Expired(const Stranger& s, uint64_t now) const {
    return now - s.heard_at > 2 * options.log_interval_us;
  }

  void NoteHeard(net::NodeId from, std::string disagreement, uint32_t client_port = 0)
      FLOE_REQUIRES(mu) {
    Peer& p = PeerOf(from);
    p.heard = disagreement.empty() ? Heard::kAgreeing : Heard::kDisagreeing;
    p.heard_reason = std::move(disagreement);
    if (!p.agreed && formed.load()) {
      // Formed by a majority without it (M5 (3)), and nobody asks it any more: its own HELLO
      // makes it agreed, or says why not (INFO's member list).
      if (p.heard == Heard::kAgreeing) {
        p.agreed = true;
        p.reason.clear();
        p.client_port = static_cast<uint16_t>(client_port);
      } else {
        p.reason = p.heard_reason;
      }
    }
    if (p.heard == Heard::kDisagreeing && p.agreed && !formed.load()) {
      // It agreed before and now says otherwise (restarted with another configuration): ask
      // again before counting it.
      p.agreed = false;
      p.reason = p.heard_reason;
      if (started.load() && !stopped.load()) {
        std::weak_ptr<Impl> weak = weak_from_this();
        loop.Post([weak, from] {
          if (auto self = weak.lock()) self->Ask(from);
        });
      }
    }
  }

  // ---- reporting ----
  std::vector<std::string> Reasons() const {
    if (formed.load(std::memory_order_acquire)) return {};
    if (!invalid.ok()) return {"invalid cluster options: " + std::string(invalid.message())};
    std::vector<std::string> out;
    MutexLock lock(&mu);
    for (const Peer& p : peers) {
      if (p.member.id != options.self && !p.agreed) {
        out.push_back(p.member.address() + ": " + p.reason);
      }
    }
    const uint64_t now = loop.NowMicros();
    for (const auto& [address, s] : strangers) {
      if (!Expired(s, now)) out.push_back(address + ": " + s.reason);
    }
    return out;
  }

  void LogTick() {
    if (stopped.load() || formed.load()) return;
    const std::vector<std::string> reasons = Reasons();
    size_t agreed = 1;  // self
    std::string self_address;
    {
      MutexLock lock(&mu);
      for (const Peer& p : peers) agreed += p.member.id != options.self && p.agreed ? 1 : 0;
      self_address = ours.self;
    }
    std::string text;
    for (const std::string& r : reasons) text += (text.empty() ? "" : "; ") + r;
    FLOE_LOG_WARN("cluster '{}' at {}: not formed, {} of {} members agree; waiting for: {}",
                  options.cluster_name, self_address, agreed, map.members().size(), text);
    std::weak_ptr<Impl> weak = weak_from_this();
    loop.PostAt(loop.NowMicros() + options.log_interval_us, [weak] {
      if (auto self = weak.lock()) self->LogTick();
    });
  }
};

Cluster::Cluster(rpc::Endpoint& endpoint, net::Loop& loop, Options options)
    : impl_(std::make_shared<Impl>(endpoint, loop, std::move(options))) {
  std::weak_ptr<Impl> weak = impl_;
  endpoint.Register(
      kHelloMethod, rpc::kPriorityClasses - 1,
      [weak](net::NodeId from, std::string_view request) -> Result<std::string> {
        if (auto self = weak.lock()) return self->OnHello(from, request);
        return Status::Unavailable("cluster stopped");
      },
      /*runs_inline=*/true);
}

Cluster::~Cluster() { Stop(); }

void Cluster::Start() {
  Impl& im = *impl_;
  if (im.started.exchange(true)) return;
  if (!im.invalid.ok()) {
    FLOE_LOG_ERROR("cluster '{}' cannot form: {}", im.options.cluster_name, im.invalid.ToString());
    return;
  }
  bool now_formed = false;
  {
    MutexLock lock(&im.mu);
    im.started_at = im.loop.NowMicros();
    if (im.options.joined) {
      for (Impl::Peer& p : im.peers) p.agreed = true;
    }
    now_formed = im.CheckFormed();  // a cluster of one, or a joined member
  }
  if (now_formed) {
    im.RunFormed();
    return;
  }
  for (const Member& m : im.map.members()) {
    if (m.id != im.options.self) im.Ask(m.id);
  }
  std::weak_ptr<Impl> weak = impl_;
  im.loop.PostAt(im.loop.NowMicros() + im.options.log_interval_us, [weak] {
    if (auto self = weak.lock()) self->LogTick();
  });
}

void Cluster::Stop() { impl_->stopped.store(true); }

void Cluster::SetClusterId(const ClusterId& id) {
  MutexLock lock(&impl_->mu);
  if (ClusterId{impl_->ours.cluster_id_hi, impl_->ours.cluster_id_lo} == id) return;
  impl_->ours.cluster_id_hi = id.hi;
  impl_->ours.cluster_id_lo = id.lo;
  impl_->ours_bytes = internal::EncodeHello(impl_->ours);
}

void Cluster::SetHoldsLog(bool holds) {
  MutexLock lock(&impl_->mu);
  if (impl_->ours.holds_log == holds) return;
  impl_->ours.holds_log = holds;
  impl_->ours_bytes = internal::EncodeHello(impl_->ours);
}

bool Cluster::formed() const { return impl_->formed.load(std::memory_order_acquire); }

std::vector<std::string> Cluster::WaitingReasons() const { return impl_->Reasons(); }

const SlotMap& Cluster::map() const { return impl_->map; }

net::NodeId Cluster::self() const { return impl_->options.self; }

bool Cluster::PeerUp(net::NodeId id) const {
  if (id == impl_->options.self) return true;
  return impl_->IsPeer(id) && impl_->endpoint.PeerUp(id);
}

void Cluster::OnFormed(std::function<void()> fn) {
  {
    MutexLock lock(&impl_->mu);
    if (!impl_->formed.load()) {
      impl_->on_formed.push_back(std::move(fn));
      return;
    }
  }
  impl_->PostFormed(std::move(fn));
}

std::vector<Cluster::MemberState> Cluster::Members() const {
  std::vector<MemberState> out;
  std::vector<net::NodeId> ids;
  {
    MutexLock lock(&impl_->mu);
    for (const Impl::Peer& p : impl_->peers) {
      const bool self = p.member.id == impl_->options.self;
      out.push_back({.member = p.member,
                     .self = self,
                     .agreed = self || p.agreed,
                     .up = self,
                     .reason = self || p.agreed ? std::string() : p.reason,
                     .client_port = self ? impl_->options.client_port : p.client_port});
    }
  }
  for (MemberState& m : out) {
    if (!m.self) m.up = impl_->endpoint.PeerUp(m.member.id);
  }
  return out;
}

uint64_t Cluster::formation_us() const {
  MutexLock lock(&impl_->mu);
  return impl_->formation_us;
}

}  // namespace floe::cluster
