// The server's ends of the replication stream (docs/replication.md, S1 and S6): a key's state
// captured after a change, and the replica store a backup installs changes into.
//
// Thread rules: CaptureState is called with the key's change scope held (its DKV stripe lock,
// S2), so no other change of the key runs meanwhile. ReplicaStore is thread-safe: its store is
// the lock-free store::Store; Install runs under the replica::Receiver's lock, one change at a
// time.

#ifndef FLOE_SERVER_INTERNAL_REPLICA_STORE_H_
#define FLOE_SERVER_INTERNAL_REPLICA_STORE_H_

#include <atomic>
#include <set>
#include <string>
#include <vector>

#include "replica/replica.h"
#include "server/server.h"
#include "store/store.h"

namespace floe::server::internal {

// A key's state after a change (S1): its value's type, DUMP body and absolute expiry, or its
// absence (an expired value is absent). Owns its bytes; entry() views them.
struct CapturedState {
  replica::EntryKind kind = replica::EntryKind::kRemove;
  std::string key;
  uint16_t type = 0;
  uint64_t expire_ms = 0;
  std::string body;
  replica::Entry entry() const {
    return {.kind = kind, .key = key, .type = type, .expire_ms = expire_ms, .bytes = body};
  }
};
// The state of `key` in `store` at `now_ms`; a cell is serialized under its mutex. Errors: a
// frame header (its own rule, S2.3, not built), a value of an unknown type.
Result<CapturedState> CaptureState(const store::Store& store, std::string_view key, int64_t now_ms);

// The store a backup's replicas live in (S6): not the store its commands read, so keyspace
// commands see owned slots only. Values are built by RESTORE's checked path (BuildValue) and
// charged to this store's own account; pending changes are reserved against maxmemory.
class ReplicaStore final : public replica::Sink {
 public:
  explicit ReplicaStore(Engine* engine) : engine_(engine) {}

  store::Store& store() { return store_; }
  const store::Store& store() const { return store_; }
  // Puts that could not be installed (memory, or a body that does not build): the slot's copy
  // is then lost (replica::SlotStatus::kLost) until a fill.
  uint64_t install_failures() const { return install_failures_.load(std::memory_order_relaxed); }

  bool Install(uint16_t slot, uint64_t n, std::span<const replica::Entry> entries,
               std::vector<std::string>* need_state) override;
  bool Reserve(uint64_t bytes) override;
  void Release(uint64_t bytes) override;
  uint64_t Headroom() const override;

 private:
  void FlushSlot(uint16_t slot);

  Engine* const engine_;
  store::Store store_;
  std::atomic<uint64_t> install_failures_{0};
};

// A node's part in the replication stream (docs/replication.md, "Wiring into the server"): the
// replica store it backs other owners' slots into, and the Sender of the slots it owns with
// backups. Made by the engine of a cluster member only. Thread-safe.
//
// Capture (S2) asks any_owned() first: with no replicated slot it is one relaxed load, the only
// cost a write pays. Own and Drop go through here so that count stays right.
class Replication {
 public:
  explicit Replication(Engine* engine) : store_(engine) {}

  ReplicaStore& store() { return store_; }
  const ReplicaStore& store() const { return store_; }
  replica::Sender& sender() { return sender_; }

  // replica::Sender::Own and Drop, counted. The Aborted callbacks of the changes they drop run
  // under this object's lock: a callback must not call Own, Drop or OwnedSlots. Lock order: a
  // DKV stripe lock (a change at home), then this lock, then the Sender's.
  Status Own(uint16_t slot, uint64_t ownership, uint64_t n, std::vector<replica::Target> in_sync,
             std::vector<replica::Target> filling);
  void Drop(uint16_t slot);
  // Some slot is owned here with backups: writes capture their changes.
  bool any_owned() const { return owned_count_.load(std::memory_order_relaxed) != 0; }
  // The slots owned here with backups (FLUSHALL's slot flushes, S2.1).
  std::vector<uint16_t> OwnedSlots() const;
  // Changes whose key state could not be captured (a frame header: S2.3, not built): each is
  // logged and counted, never silent.
  uint64_t capture_failures() const { return capture_failures_.load(std::memory_order_relaxed); }
  void CountCaptureFailure() { capture_failures_.fetch_add(1, std::memory_order_relaxed); }

 private:
  ReplicaStore store_;
  replica::Sender sender_;
  mutable Mutex mu_;
  std::set<uint16_t> owned_ FLOE_GUARDED_BY(mu_);
  std::atomic<size_t> owned_count_{0};
  std::atomic<uint64_t> capture_failures_{0};
};

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_REPLICA_STORE_H_
