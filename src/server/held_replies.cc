// Held replies (docs/replication.md, wiring step 4, rules H1-H6): a reply that depends on a
// change its slot's backups have not all received leaves only once they have (S9), or fails
// with an error that says the outcome is unknown once it has waited twice
// cluster-node-timeout (S11) or the slot stopped being served here (S13).

#include <algorithm>

#include "base/base.h"
#include "replica/replica.h"
#include "resp/resp.h"
#include "server/internal/analytics_pool.h"
#include "server/internal/command.h"
#include "server/internal/replica_store.h"

namespace floe::server {

namespace internal {

Replication::~Replication() {
  // Nothing is answered after the engine goes: the sinks may point at connections and loops
  // already gone. The Sender's destructor then fails its waiters into closed holds.
  std::map<uint64_t, PendingHold> dropped;
  MutexLock lock(&holds_mu_);
  holds_closed_ = true;
  dropped.swap(holds_);
  hold_groups_.clear();
}

void Replication::SetHoldBound(uint64_t bound_us) {
  MutexLock lock(&holds_mu_);
  hold_bound_us_ = bound_us;
}

bool Replication::Committed(const std::vector<CommitWait>& waits) const {
  return std::all_of(waits.begin(), waits.end(),
                     [this](const CommitWait& w) { return sender_.committed(w.slot) >= w.n; });
}

size_t Replication::held_replies() const {
  MutexLock lock(&holds_mu_);
  return holds_.size();
}

void Replication::Hold(std::vector<CommitWait> waits, std::function<void(HoldEnd)> done) {
  // One wait per slot, the highest: a slot commits in order, so it covers the others.
  std::sort(waits.begin(), waits.end(), [](const CommitWait& a, const CommitWait& b) {
    return a.slot != b.slot ? a.slot < b.slot : a.n > b.n;
  });
  waits.erase(
      std::unique(waits.begin(), waits.end(),
                  [](const CommitWait& a, const CommitWait& b) { return a.slot == b.slot; }),
      waits.end());
  std::vector<CommitWait> fresh;
  fresh.reserve(waits.size());
  bool closed = false;
  uint64_t id = 0;
  {
    MutexLock lock(&holds_mu_);
    if (holds_closed_) {
      closed = true;
    } else {
      const uint64_t now = NowMicros();
      id = ++hold_ids_;
      // Every allocation before the hold is visible: a failure leaves nothing half made.
      auto [it, inserted] = holds_.try_emplace(id);
      try {
        for (const CommitWait& w : waits) {
          auto [group, made] = hold_groups_.try_emplace({w.slot, w.n});
          group->second.insert(id);
          if (made) fresh.push_back(w);
        }
      } catch (...) {
        for (const CommitWait& w : waits) {
          auto group = hold_groups_.find({w.slot, w.n});
          if (group == hold_groups_.end()) continue;
          group->second.erase(id);
          // A group made here has no Sender callback yet: it goes too.
          if (group->second.empty() &&
              std::any_of(fresh.begin(), fresh.end(),
                          [&](const CommitWait& f) { return f.slot == w.slot && f.n == w.n; })) {
            hold_groups_.erase(group);
          }
        }
        holds_.erase(it);
        throw;
      }
      it->second = PendingHold{.deadline_us = now + hold_bound_us_,
                               .remaining = waits.size(),
                               .waits = std::move(waits),
                               .done = std::move(done)};
    }
  }
  if (closed) {
    done(HoldEnd::kAborted);
    return;
  }
  // Outside the lock: a wait that committed already calls back at once, on this thread.
  size_t registered = 0;
  try {
    for (; registered < fresh.size(); registered++) {
      const CommitWait w = fresh[registered];
      sender_.WhenCommitted(w.slot, w.n, [this, w](Status s) { OnCommitted(w, s); });
    }
  } catch (const std::bad_alloc&) {
    // The hold is taken back (the group that failed never fired, so it cannot have
    // committed), and the groups no callback was registered for go: a hold that joined one
    // meanwhile ends at its bound. One an earlier group already ended (Aborted) was delivered:
    // then nothing is thrown, or it would be delivered twice.
    bool taken = false;
    {
      MutexLock lock(&holds_mu_);
      auto it = holds_.find(id);
      if (it != holds_.end()) {
        for (const CommitWait& w : it->second.waits) {
          auto g = hold_groups_.find({w.slot, w.n});
          if (g != hold_groups_.end()) g->second.erase(id);
        }
        holds_.erase(it);
        taken = true;
      }
      for (size_t i = registered; i < fresh.size(); i++) {
        hold_groups_.erase({fresh[i].slot, fresh[i].n});
      }
    }
    if (taken) throw;
  }
}

void Replication::OnCommitted(CommitWait w, const Status& s) {
  std::vector<std::pair<std::function<void(HoldEnd)>, HoldEnd>> ended;
  {
    MutexLock lock(&holds_mu_);
    auto group = hold_groups_.find({w.slot, w.n});
    if (group == hold_groups_.end()) return;
    const std::set<uint64_t> ids = std::move(group->second);
    hold_groups_.erase(group);
    for (uint64_t id : ids) {
      auto it = holds_.find(id);
      if (it == holds_.end()) continue;
      PendingHold& h = it->second;
      if (!s.ok()) {
        // The hold ends now: its other groups forget it.
        for (const CommitWait& other : h.waits) {
          auto g = hold_groups_.find({other.slot, other.n});
          if (g != hold_groups_.end()) g->second.erase(id);
        }
        ended.emplace_back(std::move(h.done), HoldEnd::kAborted);
        holds_.erase(it);
      } else if (--h.remaining == 0) {
        ended.emplace_back(std::move(h.done), HoldEnd::kCommitted);
        holds_.erase(it);
      }
    }
  }
  EndHolds(ended);
}

void Replication::ExpireHolds() {
  std::vector<std::pair<std::function<void(HoldEnd)>, HoldEnd>> ended;
  {
    MutexLock lock(&holds_mu_);
    const uint64_t now = NowMicros();
    // Ids are given in deadline order (the clock is read under this lock). Memory that runs
    // out stops the sweep; the next tick goes on (a hold leaves only once it is collected).
    try {
      while (!holds_.empty() && holds_.begin()->second.deadline_us <= now) {
        auto it = holds_.begin();
        ended.emplace_back(std::move(it->second.done), HoldEnd::kTimedOut);
        for (const CommitWait& w : it->second.waits) {
          // The group stays, empty, while its Sender callback is registered: a later hold on
          // the same change joins it rather than registering another.
          auto g = hold_groups_.find({w.slot, w.n});
          if (g != hold_groups_.end()) g->second.erase(it->first);
        }
        holds_.erase(it);
      }
    } catch (const std::bad_alloc&) {
    }
  }
  hold_timeouts_.fetch_add(ended.size(), std::memory_order_relaxed);
  EndHolds(ended);
}

void Replication::EndHolds(std::vector<std::pair<std::function<void(HoldEnd)>, HoldEnd>>& ended) {
  for (auto& [done, end] : ended) {
    try {
      done(end);
    } catch (const std::exception& e) {
      // The reply could not be handed on (memory): its client's connection is closed by its
      // own limits, or waits; this thread (the node's loop) goes on.
      FLOE_LOG_ERROR("a held reply could not be delivered: {}", e.what());
    }
  }
}

}  // namespace internal

void Session::NoteReadWaits(const internal::CommandContext& ctx) {
  internal::Replication* r = engine_->replication();
  if (r == nullptr || !r->any_owned()) [[likely]] {
    return;
  }
  const replica::Sender& sender = r->sender();
  // S9's order: the value was read first; `started` is loaded after it.
  auto note = [&](uint16_t slot) {
    if (!sender.serving(slot)) return;
    const uint64_t started = sender.started(slot);
    if (started > sender.committed(slot)) commit_waits_.push_back({slot, started});
  };
  std::vector<std::string_view> keys;
  internal::CommandKeys(*ctx.spec, ctx.args, &keys);
  if (keys.empty() && internal::KeyspaceWide(ctx.spec->handler)) {
    for (uint16_t slot : r->OwnedSlots()) note(slot);
    return;
  }
  for (std::string_view k : keys) note(cluster::KeySlot(k));
}

std::string Session::HeldReplyError(internal::HoldEnd end, bool write) const {
  std::string out;
  resp::ReplyWriter w(&out, protocol_);
  if (write) {
    w.Error(end == internal::HoldEnd::kTimedOut
                ? "TIMEOUT the slot's backups did not confirm the change in time: it may or may "
                  "not have been applied"
                : "TIMEOUT the slot stopped being served here before its backups confirmed the "
                  "change: it may or may not have been applied");
  } else {
    w.Error(end == internal::HoldEnd::kTimedOut
                ? "CLUSTERDOWN the slot's backups did not confirm the value read in time"
                : "CLUSTERDOWN the slot stopped being served here before its backups confirmed "
                  "the value read");
  }
  return out;
}

Session::HeldReply Session::MakeHeldReply(std::string bytes, bool write) const {
  // The error texts are made now, in the client's protocol: the session may be gone when the
  // hold ends.
  HeldReply h;
  h.client = state_;
  h.bytes = std::move(bytes);
  h.timed_out = HeldReplyError(internal::HoldEnd::kTimedOut, write);
  h.aborted = HeldReplyError(internal::HoldEnd::kAborted, write);
  return h;
}

void Session::HeldReply::operator()(internal::HoldEnd end) {
  std::string& chosen = end == internal::HoldEnd::kCommitted  ? bytes
                        : end == internal::HoldEnd::kTimedOut ? timed_out
                                                              : aborted;
  try {
    deliver(std::move(chosen));
  } catch (...) {
    // The reply could not be handed on (memory): its connection would wait for it for ever,
    // so the client is closed, as an analytics reply that cannot be delivered closes it (A6).
    if (client != nullptr) internal::KillClient(*client);
    throw;
  }
}

bool Session::TakeCommitWaits(std::vector<internal::CommitWait>* waits, bool* write) {
  if (commit_waits_.empty()) [[likely]] {
    return false;
  }
  *write = std::exchange(held_write_, false);
  internal::Replication* r = engine_->replication();
  if (r == nullptr || r->Committed(commit_waits_)) {
    commit_waits_.clear();
    return false;
  }
  waits->swap(commit_waits_);
  commit_waits_.clear();
  return true;
}

void Session::ClearCommitWaits() {
  commit_waits_.clear();
  held_write_ = false;
}

void Session::HoldOrFail(internal::Replication& r, std::vector<internal::CommitWait> waits,
                         HeldReply reply) {
  try {
    std::function<void(internal::HoldEnd)> done(reply);
    r.Hold(std::move(waits), std::move(done));
  } catch (const std::bad_alloc&) {
    // Nothing is held (Hold throws only before): not answered as it was, since its change may
    // never reach the backups.
    reply(internal::HoldEnd::kAborted);
  }
}

void Session::HoldReply(std::string* out, size_t mark) {
  std::vector<internal::CommitWait> waits;
  bool write = false;
  if (!TakeCommitWaits(&waits, &write)) return;
  if (deferred_) {
    // The reply already comes later, and whatever deferred it took the waits (SendParts):
    // none may be left here.
    FLOE_LOG_ERROR("a deferred reply left commit waits behind; it is not held for them");
    return;
  }
  const uint64_t tickets_before = tickets_;
  try {
    // BeginDeferred changes nothing when it throws; HoldOrFail delivers whatever happens.
    HeldReply reply = MakeHeldReply(out->substr(mark), write);
    reply.deliver = BeginDeferred();
    deferred_bytes_ = 0;
    out->resize(mark);
    HoldOrFail(*engine_->replication(), std::move(waits), std::move(reply));
  } catch (const std::bad_alloc&) {
    // The command ran: its answer is that the outcome is unknown, never its reply, nor the
    // net's OOM (which says it did not run). A deferral begun is undone: nothing has its ticket.
    if (tickets_ != tickets_before) {
      tickets_ = tickets_before;
      deferred_ = false;
    }
    out->resize(mark);
    out->append(write ? internal::kHeldWriteLost : internal::kHeldReadLost);
  }
}

}  // namespace floe::server
