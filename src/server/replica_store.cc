// The server's ends of the replication stream (docs/replication.md, S1 and S6): capture of a
// key's state after a change, and the replica store a backup installs changes into.

#include "server/internal/replica_store.h"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>

#include "base/base.h"
#include "cluster/cluster.h"
#include "server/internal/command.h"

namespace floe::server::internal {

Result<CapturedState> CaptureState(const store::Store& store, std::string_view key,
                                   int64_t now_ms) {
  CapturedState s;
  s.key = std::string(key);
  const store::ValuePtr v = store.Get(key);
  if (Live(v.get(), now_ms) == nullptr) return s;  // absent, or expired: a remove
  FLOE_ASSIGN_OR_RETURN(s.body, DumpBody(*v));
  s.kind = replica::EntryKind::kPut;
  s.type = v->type();
  s.expire_ms = static_cast<uint64_t>(v->expire_at_ms());
  return s;
}

bool ReplicaStore::Install(uint16_t slot, uint64_t n, std::span<const replica::Entry> entries,
                           std::vector<std::string>* need_state) {
  (void)n;
  MutexLock lock(&drop_mu_);
  for (const replica::Entry& e : entries) {
    switch (e.kind) {
      case replica::EntryKind::kPut: {
        MemoryReservation reserved;
        Result<store::ValuePtr> v = BuildValue({*engine_, store_.memory_account(), reserved}, e.key,
                                               e.type, e.bytes, static_cast<int64_t>(e.expire_ms));
        if (!v.ok()) {
          // The owner has it: this copy lacks a committed change and is lost until a fill
          // (R16). The old value goes too.
          store_.Remove(e.key);
          install_failures_.fetch_add(1, std::memory_order_relaxed);
          FLOE_LOG_WARN("replica of slot {}: key of {} bytes not installed: {}", slot, e.key.size(),
                        v.status().ToString());
          return false;
        }
        store_.Put(std::move(v).value());
        break;
      }
      case replica::EntryKind::kRemove:
        store_.Remove(e.key);
        break;
      case replica::EntryKind::kFlush:
        FlushSlot(slot);
        break;
      case replica::EntryKind::kDelta:
        // Cells travel as whole states until deltas are built (S1): a delta never applies here.
        need_state->emplace_back(e.key);
        break;
      case replica::EntryKind::kRecord:
        // Request records (S14) are kept with the retry table, which is not built yet.
        break;
    }
  }
  return true;
}

void ReplicaStore::FlushSlot(uint16_t slot) {
  generation_[slot % cluster::kSlots].fetch_add(1, std::memory_order_relaxed);
  DropLocked({slot});
}

std::vector<uint64_t> ReplicaStore::Generations(const std::vector<uint16_t>& slots) const {
  std::vector<uint64_t> out;
  out.reserve(slots.size());
  for (uint16_t s : slots) out.push_back(generation_[s % cluster::kSlots].load());
  return out;
}

void ReplicaStore::DropSlots(const std::vector<uint16_t>& slots,
                             const std::vector<uint64_t>* generations) {
  if (slots.empty()) return;
  if (generations == nullptr) {
    MutexLock lock(&drop_mu_);
    return DropLocked(slots);
  }
  FLOE_CHECK(generations->size() == slots.size());
  std::vector<uint64_t> expected(cluster::kSlots, ~uint64_t{0});
  for (size_t i = 0; i < slots.size(); i++)
    expected[slots[i] % cluster::kSlots] = (*generations)[i];
  // The keys are found without the lock (a pass over the store: installs must not wait for it),
  // then removed in batches under it, each slot only while its copy was not started again.
  std::vector<std::string> keys;
  store_.ForEach([&](const store::Value& v) {
    if (expected[cluster::KeySlot(v.key())] != ~uint64_t{0}) keys.emplace_back(v.key());
  });
  constexpr size_t kBatch = 1024;
  for (size_t i = 0; i < keys.size(); i += kBatch) {
    MutexLock lock(&drop_mu_);
    for (size_t j = i; j < std::min(keys.size(), i + kBatch); j++) {
      const uint16_t slot = cluster::KeySlot(keys[j]);
      if (generation_[slot].load(std::memory_order_relaxed) == expected[slot])
        store_.Remove(keys[j]);
    }
  }
}

void ReplicaStore::DropLocked(const std::vector<uint16_t>& slots) {
  if (slots.empty()) return;
  std::vector<bool> drop(cluster::kSlots, false);
  for (uint16_t s : slots) drop[s % cluster::kSlots] = true;
  // Without S6's per-slot index yet, the slots' keys are found by one pass over the store.
  std::vector<std::string> keys;
  store_.ForEach([&](const store::Value& v) {
    if (drop[cluster::KeySlot(v.key())]) keys.emplace_back(v.key());
  });
  for (const std::string& k : keys) store_.Remove(k);
}

size_t ReplicaStore::MoveSlotsTo(const std::vector<uint16_t>& slots, store::Store& to) {
  if (slots.empty()) return 0;
  std::vector<bool> move(cluster::kSlots, false);
  for (uint16_t s : slots) move[s % cluster::kSlots] = true;
  std::vector<std::string> keys;
  store_.ForEach([&](const store::Value& v) {
    if (move[cluster::KeySlot(v.key())]) keys.emplace_back(v.key());
  });
  size_t moved = 0;
  for (const std::string& k : keys) {
    store::ValuePtr v = store_.Take(k);
    if (!v) continue;
    moved++;
    if (v->decoded() != nullptr) {
      // Its decoded object charges this store's account: rebuilt against the main store's.
      MemoryReservation reserved;
      Result<std::string> body = DumpBody(*v);
      Result<store::ValuePtr> rebuilt =
          body.ok() ? BuildValue({*engine_, to.memory_account(), reserved}, v->key(), v->type(),
                                 *body, v->expire_at_ms())
                    : Result<store::ValuePtr>(body.status());
      if (rebuilt.ok()) {
        to.Put(std::move(rebuilt).value());
        continue;
      }
      FLOE_LOG_WARN(
          "promotion: key of {} bytes moved as it was ({}): its bytes stay counted as "
          "the replica store's",
          k.size(), rebuilt.status().ToString());
    }
    to.Put(std::move(v));
  }
  return moved;
}

bool ReplicaStore::Reserve(uint64_t bytes) {
  if (bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / 2)) return false;
  const int64_t limit = engine_->maxmemory();
  // Reserved even without a limit, so that Release always gives back what was added. Without
  // one the use is not read: it walks every shard of the store, and installs reserve often.
  if (limit <= 0) {
    return engine_->TryReserveMemory(static_cast<int64_t>(bytes), 0,
                                     std::numeric_limits<int64_t>::max());
  }
  return engine_->TryReserveMemory(static_cast<int64_t>(bytes), engine_->UsedMemory(), limit);
}

void ReplicaStore::Release(uint64_t bytes) { engine_->ReleaseMemory(static_cast<int64_t>(bytes)); }

uint64_t ReplicaStore::Headroom() const {
  const int64_t limit = engine_->maxmemory();
  if (limit <= 0) return std::numeric_limits<uint64_t>::max();
  const int64_t used = engine_->UsedMemoryNow() + engine_->reserved_memory();
  return used >= limit ? 0 : static_cast<uint64_t>(limit - used);
}

void AppliedTableView::Set(std::shared_ptr<const cluster::Table> table, uint32_t self,
                           uint64_t life) {
  MutexLock lock(&mu_);
  table_ = std::move(table);
  self_ = self;
  life_ = life;
}

std::shared_ptr<const cluster::Table> AppliedTableView::Table() const {
  MutexLock lock(&mu_);
  return table_;
}

uint32_t AppliedTableView::self() const {
  MutexLock lock(&mu_);
  return self_;
}

uint64_t AppliedTableView::life() const {
  MutexLock lock(&mu_);
  return life_;
}

bool AppliedTableView::ListsLife(uint64_t life) const {
  MutexLock lock(&mu_);
  if (table_ == nullptr || life == 0) return false;
  const cluster::TableMember* m = table_->FindMember(self_);
  return m != nullptr && m->life == life;
}

uint64_t AppliedTableView::Ownership(uint16_t slot) const {
  const std::shared_ptr<const cluster::Table> t = Table();
  return t == nullptr || slot >= cluster::kSlots ? 0 : t->slot(slot).ownership;
}

bool AppliedTableView::Backs(uint16_t slot) const {
  MutexLock lock(&mu_);
  if (table_ == nullptr || slot >= cluster::kSlots) return false;
  const cluster::SlotState& st = table_->slot(slot);
  const uint32_t self = self_;
  auto listed = [self](const std::vector<net::NodeId>& ids) {
    return std::find(ids.begin(), ids.end(), self) != ids.end();
  };
  return listed(st.backups) || listed(st.filling);
}

Status Replication::Own(uint16_t slot, uint64_t ownership, uint64_t n,
                        std::vector<replica::Target> in_sync,
                        std::vector<replica::Target> filling) {
  MutexLock lock(&mu_);
  FLOE_RETURN_IF_ERROR(sender_.Own(slot, ownership, n, std::move(in_sync), std::move(filling)));
  owned_.insert(slot);
  owned_count_.store(owned_.size(), std::memory_order_relaxed);
  return Status::OK();
}

void Replication::Drop(uint16_t slot) {
  MutexLock lock(&mu_);
  sender_.Drop(slot);
  owned_.erase(slot);
  ownership_.erase(slot);
  owned_count_.store(owned_.size(), std::memory_order_relaxed);
}

namespace {

bool Listed(const std::vector<net::NodeId>& ids, uint32_t self) {
  return std::find(ids.begin(), ids.end(), self) != ids.end();
}

// Whether `table` lists this process's life: a member gets roles only then (W1, W2).
bool LifeListed(const cluster::Table& table, uint32_t self, uint64_t life) {
  const cluster::TableMember* me = table.FindMember(self);
  return me != nullptr && life != 0 && me->life == life;
}

}  // namespace

std::vector<uint16_t> Replication::Follow(std::shared_ptr<const cluster::Table> table,
                                          uint32_t self, uint64_t life) {
  // From here the Receiver fences every message of an older ownership (S7): a slot promoted
  // below takes no change of its old owner's once Promote has it.
  view_.Set(table, self, life);
  if (table->members().empty() || !LifeListed(*table, self, life)) return {};
  auto targets = [&table](const std::vector<net::NodeId>& ids) {
    std::vector<replica::Target> out;
    out.reserve(ids.size());
    for (net::NodeId id : ids) {
      const cluster::TableMember* m = table->FindMember(id);
      out.push_back({.id = static_cast<uint32_t>(id), .life = m != nullptr ? m->life : 0});
    }
    return out;
  };
  // W10: the slots this member backed and now owns under an ownership it has not promoted.
  struct Promoting {
    uint16_t slot;
    uint64_t n = 0;          // the Sender numbers on from it
    uint64_t committed = 0;  // what this member had installed before: known committed
  };
  std::vector<Promoting> promoting;
  {
    MutexLock lock(&mu_);
    for (uint16_t s : backed_) {
      const cluster::SlotState& st = table->slot(s);
      if (st.owner != self) continue;
      auto p = promoted_.find(s);
      if (p != promoted_.end() && p->second.first == st.ownership) continue;
      promoting.push_back({.slot = s});
    }
  }
  std::vector<uint16_t> promoted;
  promoted.reserve(promoting.size());
  std::map<uint16_t, uint64_t> promoted_floor;  // W12's committed, by slot
  for (Promoting& p : promoting) {
    // Asked outside mu_: the Receiver's lock is held across installs.
    const replica::Receiver::SlotStats was = receiver_.Stats(p.slot);
    p.committed = was.applied;
    Status s = receiver_.Promote(p.slot, was.received);
    if (s.ok()) {
      p.n = was.received;
    } else {
      // Lost, still being filled, or holding fill state past what it received: served with
      // what was installed (W10). Its acknowledged writes may be missing: said loudly.
      promotion_failures_.fetch_add(1, std::memory_order_relaxed);
      p.n = receiver_.Stats(p.slot).applied;
      receiver_.Forget(p.slot);
      FLOE_LOG_ERROR(
          "slot {}: promoted here with an incomplete copy ({}); it is served with the {} "
          "changes installed",
          p.slot, s.ToString(), p.n);
    }
    promoted.push_back(p.slot);
    promoted_floor[p.slot] = std::min(p.committed, p.n);
  }
  if (!promoted.empty()) {
    // W11: before the routes send the slots' requests here.
    const size_t keys = store_.MoveSlotsTo(promoted, engine_->store());
    promotions_.fetch_add(promoted.size(), std::memory_order_relaxed);
    FLOE_LOG_INFO("promoted {} slot(s) to this member: {} key(s) moved to the main store",
                  promoted.size(), keys);
    MutexLock lock(&mu_);
    for (const Promoting& p : promoting) {
      promoted_[p.slot] = {table->slot(p.slot).ownership, p.n};
      backed_.erase(p.slot);  // not forgotten by Unfollow: its keys left the replica store
    }
  }
  std::vector<uint16_t> to_own;
  {
    MutexLock lock(&mu_);
    // W18: tables this member never applied (a snapshot, or tables published faster than
    // followed) may have removed a filling backup and listed it again; its copy may be gone,
    // so every filling backup starts over (a fill it had done does not carry over to W8).
    const bool skipped = table->epoch() > followed_epoch_ + 1;
    followed_epoch_ = std::max(followed_epoch_, table->epoch());
    for (uint16_t s = 0; s < cluster::kSlots; s++) {
      const cluster::SlotState& st = table->slot(s);
      if (st.owner != self) continue;
      auto it = ownership_.find(s);
      if (it != ownership_.end() && it->second == st.ownership) {
        // Owned already: a slot whose backups went to 0 stays owned with none (SetBackups keeps
        // the ownership, and Own refuses one it had); one the Sender stopped (a fence or a
        // conflict) stays stopped until a new ownership.
        if (!sender_.serving(s)) {
          if (owned_.erase(s) != 0) owned_count_.store(owned_.size(), std::memory_order_relaxed);
          continue;
        }
        // Configured again only when its backups or their lives changed (a first life's
        // Restarted raises no slot version, but gives a backup the life it is sent as).
        Backups now{targets(st.backups), targets(st.filling)};
        auto v = configured_.find(s);
        if (v == configured_.end() || v->second != now || (skipped && !now.second.empty())) {
          Status c = Status::OK();
          if (skipped && !now.second.empty()) c = sender_.Configure(s, st.ownership, now.first, {});
          if (c.ok()) c = sender_.Configure(s, st.ownership, now.first, now.second);
          if (!c.ok()) FLOE_LOG_ERROR("replica of slot {}: {}", s, c.ToString());
          configured_[s] = std::move(now);
        }
        versions_[s] = st.version;  // after the Sender has this table's backups
      } else if (!st.backups.empty() || !st.filling.empty()) {
        to_own.push_back(s);
      }
    }
  }
  for (uint16_t s : to_own) {
    const cluster::SlotState& st = table->slot(s);
    // Numbering goes on from what this member has of the slot: 0 for a new cluster's slot;
    // what a promotion installed (W12). Asked outside mu_: the Receiver's lock is held across
    // installs.
    uint64_t n = std::max(sender_.started(s), receiver_.Stats(s).applied);
    std::optional<uint64_t> committed;
    if (auto p = promoted_floor.find(s); p != promoted_floor.end()) {
      committed = p->second;  // promoted now: S15's confirmation first
    }
    MutexLock lock(&mu_);
    if (auto p = promoted_.find(s); p != promoted_.end() && p->second.first == st.ownership) {
      n = std::max(n, p->second.second);
    }
    Backups now{targets(st.backups), targets(st.filling)};
    Status o = sender_.Own(s, st.ownership, n, now.first, now.second, committed);
    if (!o.ok()) {
      FLOE_LOG_ERROR("replica of slot {}: {}", s, o.ToString());
      continue;
    }
    owned_.insert(s);
    ownership_[s] = st.ownership;
    configured_[s] = std::move(now);
    versions_[s] = st.version;
    // At once: a write the routes already send here is captured from now on.
    owned_count_.store(owned_.size(), std::memory_order_relaxed);
  }
  return promoted;
}

std::vector<uint16_t> Replication::Unfollow(const std::shared_ptr<const cluster::Table>& table,
                                            uint32_t self, uint64_t life) {
  if (table->members().empty()) return {};
  const bool roles = LifeListed(*table, self, life);
  std::vector<uint16_t> forget;
  {
    MutexLock lock(&mu_);
    for (auto it = ownership_.begin(); it != ownership_.end();) {
      const uint16_t s = it->first;
      if (roles && table->slot(s).owner == self) {
        ++it;
        continue;
      }
      sender_.Drop(s);
      owned_.erase(s);
      configured_.erase(s);
      versions_[s] = 0;
      it = ownership_.erase(it);
    }
    owned_count_.store(owned_.size(), std::memory_order_relaxed);
    for (uint16_t s = 0; s < cluster::kSlots; s++) {
      const cluster::SlotState& st = table->slot(s);
      if (roles && (Listed(st.backups, self) || Listed(st.filling, self))) {
        backed_.insert(s);
      } else if (backed_.erase(s) != 0) {
        forget.push_back(s);
      }
    }
  }
  for (uint16_t s : forget) receiver_.Forget(s);
  return forget;
}

std::vector<uint64_t> Replication::ConfiguredVersions() const {
  MutexLock lock(&mu_);
  return versions_;
}

std::vector<uint16_t> Replication::OwnedSlots() const {
  MutexLock lock(&mu_);
  return {owned_.begin(), owned_.end()};
}

}  // namespace floe::server::internal
