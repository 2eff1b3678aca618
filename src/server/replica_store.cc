// The server's ends of the replication stream (docs/replication.md, S1 and S6): capture of a
// key's state after a change, and the replica store a backup installs changes into.

#include "server/internal/replica_store.h"

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

void ReplicaStore::FlushSlot(uint16_t slot) {
  // Without S6's per-slot index yet, the slot's keys are found by one pass over the store.
  std::vector<std::string> keys;
  store_.ForEach([&](const store::Value& v) {
    if (cluster::KeySlot(v.key()) == slot) keys.emplace_back(v.key());
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
  owned_count_.store(owned_.size(), std::memory_order_relaxed);
}

std::vector<uint16_t> Replication::OwnedSlots() const {
  MutexLock lock(&mu_);
  return {owned_.begin(), owned_.end()};
}

}  // namespace floe::server::internal
