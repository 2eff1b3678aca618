// Dropping a backup that is down (docs/replication.md, B7 and wiring step 7, W15-W17): an owner
// reports a backup that confirmed nothing for cluster-node-timeout (RPC 307), and the leader
// removes it from the slots' lists, fenced by slot version and both lives, never removing a
// suspected owner's heir nor a slot's last in-sync backup that the leader still hears. The
// planner then gives those slots a filling backup on a member the leader hears (W17).
// Everything here runs on the loop but OnBackupDown's decode and checks (a handler thread).

#include <algorithm>

#include "replica/replica.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_node_impl.h"
#include "server/internal/replica_store.h"

namespace floe::server::internal {
namespace {

bool Listed(const std::vector<net::NodeId>& ids, net::NodeId id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

// W15: per backup of this owner's slots, how long it has been waited for without progress, and
// how long the RPC layer has found it down. Either past cluster-node-timeout reports it.
void ClusterNode::Impl::WatchBackups(Replication& r) {
  const uint64_t now = loop.NowMicros();
  std::set<uint32_t> seen;
  for (const replica::Sender::Lag& lag : r.sender().Lags()) {
    seen.insert(lag.id);
    auto [it, added] = backup_watch.try_emplace(lag.id);
    BackupWatch& w = it->second;
    if (added || w.life != lag.life || w.progress != lag.progress || !lag.waiting) {
      w.life = lag.life;
      w.progress = lag.progress;
      w.still_since_us = now;
    }
    if (endpoint->PeerUp(lag.id)) {
      w.down_since_us = 0;
    } else if (w.down_since_us == 0) {
      w.down_since_us = now;
    }
    const bool still = now - w.still_since_us >= timeout_us;
    const bool down = w.down_since_us != 0 && now - w.down_since_us >= timeout_us;
    if ((still || down) && now >= w.next_report_us && !backup_down_asking) {
      ReportBackupDown(lag.id, lag.life);
    }
  }
  std::erase_if(backup_watch, [&seen](const auto& kv) { return !seen.contains(kv.first); });
}

void ClusterNode::Impl::ReportBackupDown(uint32_t backup, uint64_t life) {
  const cluster::Meta* m = meta_view.load(std::memory_order_acquire);
  if (m == nullptr) return;
  const net::NodeId self = cluster->self();
  const std::shared_ptr<const cluster::Table> table = m->table();  // keeps the pointers alive
  const cluster::TableMember* me = table->FindMember(self);
  const cluster::TableMember* b = table->FindMember(backup);
  // The life seen stalling, not a later one the table lists already (its Restarted ended the
  // old life's roles; the Sender follows).
  if (me == nullptr || me->life != endpoint->incarnation() || b == nullptr || b->life != life) {
    return;
  }
  BackupWatch& w = backup_watch[backup];
  BackupDownRequest request{.owner = self, .life = me->life};
  // From where the last full request ended, round the slots: each is named in its turn.
  for (uint32_t i = 0; i < cluster::kSlots && request.items.size() < kMaxInSyncItems; i++) {
    const auto s = static_cast<uint16_t>((w.next_slot + i) % cluster::kSlots);
    const cluster::SlotState& st = table->slot(s);
    if (st.owner != self || (!Listed(st.backups, backup) && !Listed(st.filling, backup))) continue;
    request.items.push_back({.slot = s, .version = st.version, .backup = backup, .n = life});
  }
  if (request.items.empty()) return;  // this table no longer lists it: the Sender follows
  const bool full = request.items.size() == kMaxInSyncItems;  // more slots may list it
  w.next_slot = full ? (request.items.back().slot + 1u) % cluster::kSlots : 0;
  std::sort(request.items.begin(), request.items.end(),
            [](const InSyncItem& a, const InSyncItem& c) { return a.slot < c.slot; });
  if (!std::exchange(w.told, true)) {
    FLOE_LOG_WARN(
        "backup {} of {} slot(s) confirmed nothing for {} ms: asking the leader to drop it", backup,
        request.items.size(), timeout_us / 1000);
  }
  backup_down_asking = true;
  OnBackupDown(self, EncodeBackupInSync(request), [this, backup, full](Result<std::string> answer) {
    Result<std::vector<uint16_t>> stale =
        answer.ok() ? DecodeSlotList(*answer) : Result<std::vector<uint16_t>>(answer.status());
    loop.Post([this, backup, full, stale = std::move(stale)] {
      backup_down_asking = false;
      auto it = backup_watch.find(backup);
      if (it == backup_watch.end()) return;
      if (!stale.ok()) {
        FLOE_LOG_DEBUG("reporting backup {}: {}", backup, stale.status().ToString());
        it->second.next_report_us = loop.NowMicros() + kInSyncAgainUs;
      } else {
        // Stale items are sent again at once with this member's newer table, and the slots a
        // full request left out soon after; otherwise the next report waits a node timeout
        // (the table drops the backup, or its progress resumes meanwhile).
        const uint64_t wait = !stale->empty() ? 0 : full ? kInSyncAgainUs : timeout_us;
        it->second.next_report_us = loop.NowMicros() + wait;
      }
    });
  });
}

void ClusterNode::Impl::OnBackupDown(net::NodeId from, std::string_view bytes, rpc::Reply reply) {
  Result<BackupDownRequest> request = DecodeBackupInSync(bytes);
  if (!request.ok()) return reply(request.status());
  if (!request->forwarded && request->owner != from) {
    return reply(Status::PermissionDenied("an owner reports its own backups only"));
  }
  const uint64_t backup = request->items[0].backup;
  for (const InSyncItem& item : request->items) {
    if (item.backup != backup) {
      return reply(Status::InvalidArgument("a report names one backup"));
    }
  }
  auto forward = [this, &request] {
    BackupDownRequest f = *request;
    f.forwarded = request->owner != cluster->self();
    return EncodeBackupInSync(f);
  };
  cluster::Meta* m = LeaderOrForward(kBackupDownMethod, request->forwarded, forward, reply);
  if (m == nullptr) return;
  const std::shared_ptr<const cluster::Table> table = m->table();
  if (table->FindMember(from) == nullptr) {
    return reply(Status::PermissionDenied("only a member reports a backup"));
  }
  // The one-at-a-time gate of the planner's repairs (W9) is the loop's; every check is made
  // there, against the latest table.
  loop.Post([this, m, request = BackupDownRequest(std::move(*request)),
             reply = std::move(reply)]() mutable {
    if (repair_proposing) return reply(Status::Unavailable("another backup change is proposed"));
    const consensus::State st = m->raft();
    const uint64_t timeout_ms = timeout_us / 1000;
    if (!st.leader || !st.leader_ready) return reply(Status::Unavailable("not the leader now"));
    // A new leader has not heard from anyone yet: whom it hears is known a node timeout later.
    if (st.led_ms < timeout_ms) return reply(Status::Unavailable("the leader is new; retry"));
    const std::shared_ptr<const cluster::Table> t = m->table();
    const cluster::TableMember* owner = t->FindMember(static_cast<net::NodeId>(request.owner));
    if (owner == nullptr || owner->life != request.life) {
      return reply(Status::FailedPrecondition("the table lists no such life of that owner"));
    }
    // W16: an owner cut off from most voters may be the one that is down; it must not remove
    // the heirs its promotion needs (O4-O5).
    if (owner->suspected) return reply(Status::FailedPrecondition("the owner is suspected"));
    const auto id = static_cast<net::NodeId>(request.items[0].backup);
    const cluster::TableMember* b = t->FindMember(id);
    auto heard = [&](net::NodeId x) {
      const cluster::TableMember* xm = t->FindMember(x);
      return xm != nullptr && !xm->suspected &&
             (SilentMs(st, x) < timeout_ms || endpoint->PeerUp(x));
    };
    auto live = [&](const std::vector<net::NodeId>& ids) {
      std::vector<net::NodeId> out;
      for (net::NodeId x : ids) {
        const cluster::TableMember* xm = t->FindMember(x);
        if (x != id && xm != nullptr && !xm->suspected) out.push_back(x);
      }
      return out;
    };
    cluster::Change change{.kind = cluster::Change::Kind::kSetBackups};
    std::vector<uint16_t> stale;
    for (const InSyncItem& item : request.items) {
      const cluster::SlotState& s = t->slot(item.slot);
      if (s.version != item.version) {
        if (s.owner == owner->id) stale.push_back(item.slot);
        continue;
      }
      // Another life of the backup (its Restarted ended the old one's roles), or no longer
      // listed: nothing to remove.
      if (s.owner != owner->id || b == nullptr || b->life != item.n) continue;
      if (!Listed(s.backups, id) && !Listed(s.filling, id)) continue;
      // An in-sync backup the leader hears may be the heir a failover needs: removed only if
      // another in-sync backup the leader hears stays (an owner that reaches no backup keeps
      // its slots' writes waiting rather than drop the only copy it can count on).
      if (Listed(s.backups, id) && heard(id) &&
          std::none_of(s.backups.begin(), s.backups.end(),
                       [&](net::NodeId x) { return x != id && heard(x); })) {
        continue;
      }
      // Suspected members leave the lists too: the table lists none (Table::Check).
      change.slots.push_back({.slot = item.slot,
                              .version = s.version,
                              .backups = live(s.backups),
                              .filling = live(s.filling)});
    }
    std::sort(stale.begin(), stale.end());
    if (change.slots.empty()) return reply(EncodeSlotList(stale));
    repair_proposing = true;
    FLOE_LOG_INFO("dropping backup {} of {} slot(s) of member {}: it confirmed nothing", id,
                  change.slots.size(), owner->id);
    m->Propose(change,
               [this, id, reply = std::move(reply), stale = std::move(stale)](Status s) mutable {
                 loop.Post([this, id, ok = s.ok()] {
                   repair_proposing = false;
                   if (ok) dropped_at[id] = loop.NowMicros();  // W17: not picked for a while
                 });
                 if (!s.ok()) return reply(s);
                 reply(EncodeSlotList(stale));
               });
  });
}

std::vector<net::NodeId> ClusterNode::Impl::Unheard(const consensus::State& st,
                                                    const cluster::Table& table) const {
  std::vector<net::NodeId> out;
  const uint64_t timeout_ms = timeout_us / 1000;
  const uint64_t now = loop.NowMicros();
  for (const cluster::TableMember& member : table.members()) {
    if (member.id == cluster->self()) continue;
    auto dropped = dropped_at.find(member.id);
    const bool resting = dropped != dropped_at.end() && now - dropped->second < kPickAgainAfterUs;
    if (resting || SilentMs(st, member.id) >= timeout_ms || !endpoint->PeerUp(member.id)) {
      out.push_back(member.id);
    }
  }
  return out;
}

}  // namespace floe::server::internal
