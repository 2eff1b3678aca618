// The server's ends of the replication stream (docs/replication.md, S1 and S6): capture of a
// key's state after a change, and the replica store a backup installs changes into.

#include "server/internal/replica_store.h"

#include <algorithm>
#include <limits>

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

void ReplicaStore::FlushSlot(uint16_t slot) { DropSlots({slot}); }

void ReplicaStore::DropSlots(const std::vector<uint16_t>& slots) {
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

bool ReplicaStore::Reserve(uint64_t bytes) {
  if (bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / 2)) return false;
  const int64_t limit = engine_->maxmemory();
  // Reserved even without a limit, so that Release always gives back what was added.
  return engine_->TryReserveMemory(static_cast<int64_t>(bytes), engine_->UsedMemory(),
                                   limit > 0 ? limit : std::numeric_limits<int64_t>::max());
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

void Replication::Follow(std::shared_ptr<const cluster::Table> table, uint32_t self,
                         uint64_t life) {
  view_.Set(table, self, life);
  if (table->members().empty() || !LifeListed(*table, self, life)) return;
  auto targets = [&table](const std::vector<net::NodeId>& ids) {
    std::vector<replica::Target> out;
    out.reserve(ids.size());
    for (net::NodeId id : ids) {
      const cluster::TableMember* m = table->FindMember(id);
      out.push_back({.id = static_cast<uint32_t>(id), .life = m != nullptr ? m->life : 0});
    }
    return out;
  };
  std::vector<uint16_t> to_own;
  {
    MutexLock lock(&mu_);
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
        if (v == configured_.end() || v->second != now) {
          Status c = sender_.Configure(s, st.ownership, now.first, now.second);
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
    // what it installed as the slot's backup when it becomes the owner (the move of those keys
    // into the main store is promotion's, wiring step 5). Asked outside mu_: the Receiver's
    // lock is held across installs.
    const uint64_t n = std::max(sender_.started(s), receiver_.Stats(s).applied);
    MutexLock lock(&mu_);
    if (backed_.count(s) != 0) {
      FLOE_LOG_WARN(
          "slot {}: owned here after backing it; its copy stays in the replica store "
          "(promotion is not built)",
          s);
    }
    Backups now{targets(st.backups), targets(st.filling)};
    Status o = sender_.Own(s, st.ownership, n, now.first, now.second);
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
