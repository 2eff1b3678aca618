// Ownership leases and failover (docs/membership.md, O1-O8). In a cluster that makes backups a
// member serves keys only under a lease the Raft leader granted after a majority confirmed its
// leadership (RPC 308); the leader fails over a member it has not granted one for a lease and
// a margin, and Raft has not heard for as long: its slots go to their in-sync backups. Every
// decision of the leader runs on the loop; OnLease's checks run on a handler thread and its
// grant on the loop.

#include <algorithm>

#include "server/internal/cluster_node.h"
#include "server/internal/cluster_node_impl.h"

namespace floe::server::internal {
namespace {

// O4: how long the leader waits past a grant before a failover. The member's lease ends a
// lease after the renewal began, by its own clock; clocks that run at rates 0.5% apart need
// 1% more, and the margin covers the time between the grant and its record here.
uint64_t FailOverAfterUs(uint64_t lease_us) { return lease_us + lease_us / 64 + 20'000; }

}  // namespace

void ClusterNode::Impl::RenewLease() {
  if (stopped.load() || removed.load()) return;
  // Every quarter lease while one is held; every 100 ms at most while none is (a member that
  // just caught up, or whose renewal failed), so it serves as soon as the leader grants one.
  const uint64_t quarter = std::max<uint64_t>(lease_us / 4, 10'000);
  const uint64_t every =
      lease_until_us.load() > BootMicros() ? quarter : std::min<uint64_t>(quarter, 100'000);
  loop.PostAt(loop.NowMicros() + every, [this] { RenewLease(); });
  if (!makes_backups.load() || leases_stopped.load() || lease_asking || meta_refused.load()) return;
  cluster::Meta* m = nullptr;
  {
    MutexLock lock(&meta_mu);
    m = meta.get();
  }
  if (m == nullptr || !meta_caught_up.load()) return;
  const net::NodeId self = cluster->self();
  const uint64_t life = endpoint->incarnation();
  const std::shared_ptr<const cluster::Table> table = m->table();
  const cluster::TableMember* me = table->FindMember(self);
  if (me == nullptr || me->life != life) return;  // W1 records it first
  const consensus::State st = m->raft();
  if (!st.running || st.leader_id == 0) return;
  // O1: the lease counts from before the request leaves, so it ends no later than the leader
  // (which grants after it came) may count it to.
  const uint64_t began = BootMicros();
  const std::string request =
      EncodeLeaseRequest({.id = self, .life = life, .epoch = table->epoch(), .forwarded = false});
  lease_asking = true;
  auto done = [this, began](Result<std::string> r) {
    loop.Post([this, began, ok = r.ok(), why = r.ok() ? std::string() : r.status().ToString()] {
      lease_asking = false;
      if (!ok) {
        FLOE_LOG_DEBUG("renewing this member's ownership lease: {}", why);
        return;
      }
      uint64_t until = lease_until_us.load();
      while (until < began + lease_us &&
             !lease_until_us.compare_exchange_weak(until, began + lease_us)) {
      }
    });
  };
  if (st.leader) {
    OnLease(self, request, std::move(done));
  } else {
    // A quarter of a lease at most, the next renewal's turn: one stuck at a leader that died
    // would otherwise hold the next back until this member's lease had lapsed.
    endpoint->CallAsync(st.leader_id, kLeaseMethod, request,
                        std::max<uint64_t>(lease_us / 4, 10'000), std::move(done));
  }
}

void ClusterNode::Impl::OnLease(net::NodeId from, std::string_view bytes, rpc::Reply reply) {
  Result<LeaseRequest> request = DecodeLeaseRequest(bytes);
  if (!request.ok()) return reply(request.status());
  if (!request->forwarded && request->id != from) {
    return reply(Status::PermissionDenied("a member asks for its own lease only"));
  }
  if (request->id >= cluster::kFirstReservedId) {
    return reply(Status::FailedPrecondition("no member " + std::to_string(request->id)));
  }
  cluster::Meta* m = LeaderOrForward(
      kLeaseMethod, request->forwarded,
      [&request] {
        LeaseRequest forward = *request;
        forward.forwarded = true;
        return EncodeLeaseRequest(forward);
      },
      reply);
  if (m == nullptr) return;
  const auto id = static_cast<net::NodeId>(request->id);
  const std::shared_ptr<const cluster::Table> table = m->table();
  if (table->FindMember(from) == nullptr) {
    return reply(Status::PermissionDenied("only a member asks for a lease"));
  }
  const cluster::TableMember* member = table->FindMember(id);
  if (member == nullptr)
    return reply(Status::FailedPrecondition("no member " + std::to_string(id)));
  if (member->life != request->life) {
    return reply(
        Status::FailedPrecondition("member " + std::to_string(id) + " is in another life"));
  }
  if (member->suspected) {
    // O7: a failed-over member that is back (a pause, a partition healed) is cleared once it
    // has applied its failover; it gets a lease only once it applied the clearing too.
    if (request->epoch >= member->suspect_epoch) {
      loop.Post([this, id, life = request->life] { ClearSuspicion(id, life); });
    }
    return reply(Status::Unavailable("member " + std::to_string(id) +
                                     " was failed over; its suspicion is being cleared"));
  }
  // O2: never a lease to a member whose table does not show its last failover yet: it could
  // serve a slot promoted away by that table.
  if (request->epoch < member->suspect_epoch) {
    return reply(Status::Unavailable("member " + std::to_string(id) +
                                     " has not applied the table of its failover"));
  }
  m->ConfirmLeadership([this, id, life = request->life, epoch = request->epoch,
                        reply = std::move(reply)](Result<uint64_t> commit) mutable {
    loop.Post([this, id, life, epoch, commit = std::move(commit), reply = std::move(reply)] {
      if (!commit.ok()) return reply(commit.status());
      // Checked again where failovers are decided: none of this member is being proposed, and
      // none committed meanwhile.
      const cluster::Meta* view = meta_view.load(std::memory_order_acquire);
      if (view == nullptr || failing_over == id) {
        return reply(Status::Unavailable("member " + std::to_string(id) + " is being failed over"));
      }
      const std::shared_ptr<const cluster::Table> now = view->table();
      const cluster::TableMember* listed = now->FindMember(id);
      if (listed == nullptr || listed->life != life || listed->suspected ||
          epoch < listed->suspect_epoch) {
        return reply(Status::Unavailable("member " + std::to_string(id) + " was failed over"));
      }
      uint64_t& at = granted_at[id];
      at = std::max(at, BootMicros());
      reply(std::string());
    });
  });
}

void ClusterNode::Impl::FailOverSilent() {
  cluster::Meta* m = nullptr;
  {
    MutexLock lock(&meta_mu);
    m = meta.get();
  }
  const consensus::State st = m != nullptr && !meta_refused.load() ? m->raft() : consensus::State{};
  const uint64_t now = BootMicros();
  // Grants of an earlier term are not this leader's to count on: it counts from when it was
  // first seen ready in this term (O4: every earlier leader's grant came before this one was
  // elected). So does a leader whose loop stood still for a quarter lease (a suspended
  // process: its clock jumped), and one that lost and regained leadership between two ticks.
  const bool stalled = last_failover_tick_us != 0 && now - last_failover_tick_us > lease_us / 4;
  last_failover_tick_us = now;
  if (!st.running || !st.leader || !st.leader_ready || st.term != leading_term || stalled) {
    leading_since_us = 0;
    granted_at.clear();
    listed_since.clear();
    leading_term = st.leader ? st.term : 0;
  }
  if (!st.running || !st.leader || !st.leader_ready) return;
  if (leading_since_us == 0) leading_since_us = now;
  if (failing_over != 0) return;
  const std::shared_ptr<const cluster::Table> table = m->table();
  if (table->members().empty() || table->replicas() == 0) return;
  const net::NodeId self = cluster->self();
  const uint64_t after = FailOverAfterUs(lease_us);
  for (const cluster::TableMember& member : table->members()) {
    if (member.id == self || member.life == 0) continue;
    if (member.suspected) continue;
    // Counted from when this life, cleared of its last suspicion, was first seen.
    const uint64_t listed =
        listed_since.try_emplace({member.id, member.life, member.suspect_epoch}, now).first->second;
    const auto grant = granted_at.find(member.id);
    const uint64_t since = std::max(
        {leading_since_us, listed, grant == granted_at.end() ? uint64_t{0} : grant->second});
    if (now < since + after) continue;
    // Not granted for a lease and a margin: its lease has lapsed. Failed over once this member
    // has not heard it for a lease either (RPC heartbeats come every 200 ms), or after three
    // leases without a grant: a live member whose renewals are late under load only stops
    // serving meanwhile.
    if (endpoint->SilentUs(member.id) < lease_us && now < since + 3 * after) continue;
    failing_over = member.id;
    FLOE_LOG_WARN("member {} was not granted an ownership lease for {} ms: failing it over",
                  member.id, (now - since) / 1000);
    cluster::Change change{.kind = cluster::Change::Kind::kFailOver, .node = member.id};
    change.member.life = member.life;
    m->Propose(change, [this, id = member.id](Status s) {
      loop.Post([this, id, s] {
        failing_over = 0;
        if (s.ok()) {
          failovers++;
          FLOE_LOG_WARN("member {} was failed over: its slots are served by their backups", id);
        } else {
          FLOE_LOG_INFO("failing member {} over: {}", id, s.ToString());
        }
      });
    });
    return;  // one at a time
  }
  std::erase_if(listed_since, [&table](const auto& kv) {
    const cluster::TableMember* x = table->FindMember(std::get<0>(kv.first));
    return x == nullptr || x->life != std::get<1>(kv.first) ||
           x->suspect_epoch != std::get<2>(kv.first);
  });
}

void ClusterNode::Impl::ClearSuspicion(net::NodeId id, uint64_t life) {
  if (clearing_suspicion || stopped.load()) return;
  cluster::Meta* m = nullptr;
  {
    MutexLock lock(&meta_mu);
    m = meta.get();
  }
  if (m == nullptr) return;
  clearing_suspicion = true;
  FLOE_LOG_INFO("member {} is back after its failover: clearing its suspicion", id);
  cluster::Change change{.kind = cluster::Change::Kind::kSuspect, .node = id, .flag = false};
  change.member.life = life;
  m->Propose(change, [this, id](Status s) {
    loop.Post([this, id, s] {
      clearing_suspicion = false;
      if (!s.ok()) FLOE_LOG_DEBUG("clearing the suspicion of member {}: {}", id, s.ToString());
    });
  });
}

// On the Raft thread, once the routes follow `table`: a member it lists as failed over drops
// its lease (O1-O2), and requests in flight to a member just failed over fail now (O5).
void ClusterNode::Impl::LeasesFollow(const cluster::Table& table, net::NodeId self) {
  // O1-O2: a member its table lists as failed over serves nothing by its lease: it gets a new
  // one only once the leader cleared the suspicion and it applied that.
  if (const cluster::TableMember* me = table.FindMember(self); me != nullptr && me->suspected) {
    lease_until_us.store(0);
  }
  // O5: requests in flight to a member just failed over fail now (a write's outcome unknown,
  // rule C4) instead of at their deadline; after the routes switched, so that its clients' next
  // requests reach the heirs.
  for (const cluster::TableMember& m : table.members()) {
    if (m.id == self) continue;
    if (!m.suspected) {
      suspected_seen.erase(m.id);
    } else if (suspected_seen.insert(m.id).second) {
      loop.Post([this, id = m.id] {
        endpoint->FailCalls(
            id, Status::Unavailable("member " + std::to_string(id) + " was failed over"));
      });
    }
  }
}

}  // namespace floe::server::internal
