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
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cluster/cluster.h"
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

  // Removes every key of these slots (a backup that no longer backs them, W2). Not under the
  // Receiver's lock: a slot forgotten there first. With `generations` (each slot's Generation
  // when it was forgotten), a slot whose copy was started again since (the member backs it
  // again and its fill flushed it, B7's W18) is left alone: the late drop of an old role must
  // not remove the new copy's keys.
  void DropSlots(const std::vector<uint16_t>& slots,
                 const std::vector<uint64_t>* generations = nullptr);
  // Raised by every slot flush installed here (a fill's start, a FLUSHALL).
  std::vector<uint64_t> Generations(const std::vector<uint16_t>& slots) const;
  // A promotion (docs/replication.md W11): every key of these slots leaves this store for
  // `to`, the main store. A value with no decoded object moves as a pointer; one with a decoded
  // object (its bytes charged to this store's account) is rebuilt from its DUMP body against
  // `to`'s account, and moves as a pointer only if that fails. Returns the keys moved. Not
  // under the Receiver's lock; nothing else writes these slots here meanwhile (their streams
  // are promoted, and no request of theirs reaches `to` yet).
  size_t MoveSlotsTo(const std::vector<uint16_t>& slots, store::Store& to);

  bool Install(uint16_t slot, uint64_t n, std::span<const replica::Entry> entries,
               std::vector<std::string>* need_state) override;
  bool Reserve(uint64_t bytes) override;
  void Release(uint64_t bytes) override;
  uint64_t Headroom() const override;

 private:
  void FlushSlot(uint16_t slot) FLOE_REQUIRES(drop_mu_);
  void DropLocked(const std::vector<uint16_t>& slots) FLOE_REQUIRES(drop_mu_);
  // Orders an old role's drop against a new copy's installs (DropSlots with generations): held
  // by each Install (under the Receiver's lock) and by each batch of a drop's removals.
  mutable Mutex drop_mu_;
  // Raised under drop_mu_; read without it (Generations, on the Raft thread).
  std::unique_ptr<std::atomic<uint64_t>[]> generation_ {
    new std::atomic<uint64_t>[ cluster::kSlots ]()
  };

  Engine* const engine_;
  store::Store store_;
  std::atomic<uint64_t> install_failures_{0};
};

// What a backup's Receiver asks of the applied table (S7): this member's id and life, and each
// slot's ownership and backups, from the last table Set (W2). Thread-safe.
class AppliedTableView final : public replica::TableView {
 public:
  void Set(std::shared_ptr<const cluster::Table> table, uint32_t self, uint64_t life);
  uint32_t self() const override;
  uint64_t life() const override;
  bool ListsLife(uint64_t life) const override;
  uint64_t Ownership(uint16_t slot) const override;
  bool Backs(uint16_t slot) const override;

 private:
  std::shared_ptr<const cluster::Table> Table() const;

  mutable Mutex mu_;
  std::shared_ptr<const cluster::Table> table_ FLOE_GUARDED_BY(mu_);
  uint32_t self_ FLOE_GUARDED_BY(mu_) = 0;
  uint64_t life_ FLOE_GUARDED_BY(mu_) = 0;
};

// A node's part in the replication stream (docs/replication.md, "Wiring into the server"): the
// replica store it backs other owners' slots into and the Receiver that fills it, and the
// Sender of the slots it owns with backups. Made by the engine of a cluster member only.
// Thread-safe.
//
// Capture (S2) asks any_owned() first: with no replicated slot it is one relaxed load, the only
// cost a write pays. Own and Drop go through here so that count stays right.
class Replication {
 public:
  explicit Replication(Engine* engine)
      : engine_(engine), store_(engine), receiver_(&view_, &store_) {}

  ReplicaStore& store() { return store_; }
  const ReplicaStore& store() const { return store_; }
  replica::Sender& sender() { return sender_; }
  const replica::Sender& sender() const { return sender_; }
  replica::Receiver& receiver() { return receiver_; }

  // W2: this member's roles as `table` has them, on the thread that applies tables, in two
  // halves around the routes' publication; none unless the table lists `life`, this
  // process's (W1). Follow, before the routes follow the table: a slot it owns with backups is
  // owned by the Sender (Own the first time under an ownership, Configure when the slot's
  // backups or their lives changed), and stays owned when its backups go to none. Unfollow, after:
  // a slot it no longer owns is dropped, and the stream of one it no longer backs is forgotten;
  // returns those, whose keys the caller drops from the replica store (DropSlots) off this thread.
  // Follow also promotes (W10-W12): a slot this member backed and now owns under a new
  // ownership gets its Receiver's received changes installed and its keys moved into the main
  // store before the routes send its requests here. Returns the slots promoted, whose keys'
  // changes the caller makes wait out the old owner's copies (W13).
  std::vector<uint16_t> Follow(std::shared_ptr<const cluster::Table> table, uint32_t self,
                               uint64_t life);
  std::vector<uint16_t> Unfollow(const std::shared_ptr<const cluster::Table>& table, uint32_t self,
                                 uint64_t life);
  // W4: called after a capture closed changes; runs the hook the node set (its pump), which
  // must not block. The hook is set once, before any slot is owned (so before any capture
  // calls it), and never changed.
  void SetWake(std::function<void()> wake) { wake_ = std::move(wake); }
  void Wake() const {
    if (wake_) wake_();
  }
  // Tests that drive the Sender by hand stop the node's pump first; tests of held replies stop
  // it for a while (the node's tick wakes it again within 100 ms).
  void TEST_StopPump(bool stop = true) { pump_stopped_.store(stop); }
  bool pump_stopped() const { return pump_stopped_.load(std::memory_order_relaxed); }
  // W4's counts (INFO memory): REPLICATE messages sent, and those that got no answer.
  void CountSent() { messages_sent_.fetch_add(1, std::memory_order_relaxed); }
  void CountSendFailure() { send_failures_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t messages_sent() const { return messages_sent_.load(std::memory_order_relaxed); }
  uint64_t send_failures() const { return send_failures_.load(std::memory_order_relaxed); }

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
  // W8: each slot's version in the last table whose backups the Sender was configured from
  // (0: not owned here). Read before Sender::Fills, a done fill is never paired with a later
  // table's version: a request naming it is refused as stale instead.
  std::vector<uint64_t> ConfiguredVersions() const;
  // Changes whose key state could not be captured (a frame header: S2.3, not built): each is
  // logged and counted, never silent.
  uint64_t capture_failures() const { return capture_failures_.load(std::memory_order_relaxed); }
  // Promotions whose copy Promote refused (W10: served with what was installed, logged).
  uint64_t promotions() const { return promotions_.load(std::memory_order_relaxed); }
  uint64_t promotion_failures() const {
    return promotion_failures_.load(std::memory_order_relaxed);
  }
  void CountCaptureFailure() { capture_failures_.fetch_add(1, std::memory_order_relaxed); }

  // Held replies (docs/replication.md, wiring step 4, H1-H6; CommitWait and HoldEnd are in
  // server.h). Whether every wait has committed already (the common case: no hold).
  bool Committed(const std::vector<CommitWait>& waits) const;
  // H5: calls `done` once, with kCommitted when every wait committed, kAborted when a slot
  // stopped being served here first (a fence, a drop: the outcome is unknown), or kTimedOut
  // once the hold is older than its bound. `done` runs on the thread that commits (the node's
  // loop), the one that expires holds, or this one, with no lock of this object held except as
  // Drop says above; it must not block. Throws only bad_alloc, before anything is held.
  void Hold(std::vector<CommitWait> waits, std::function<void(HoldEnd)> done);
  // The node's tick: ends the holds past their bound.
  void ExpireHolds();
  // The bound (twice cluster-node-timeout; the steady clock's microseconds), set by the node
  // before any slot is owned.
  void SetHoldBound(uint64_t bound_us);
  // Replies held now; holds that ended past their bound (INFO memory).
  size_t held_replies() const;
  uint64_t hold_timeouts() const { return hold_timeouts_.load(std::memory_order_relaxed); }
  // The changes holds registered a Sender callback for that has not run yet.
  size_t TEST_hold_groups() const {
    MutexLock lock(&holds_mu_);
    return hold_groups_.size();
  }
  ~Replication();

 private:
  void OnCommitted(CommitWait w, const Status& s);
  void EndHolds(std::vector<std::pair<std::function<void(HoldEnd)>, HoldEnd>>& ended);

  // The holds, each under an id given in deadline order, and the waits registered with the
  // Sender: one callback per (slot, n) however many holds wait for it, so holds that time out
  // while a backup is down leave nothing behind in the Sender (its waiters are bounded by the
  // changes it queues). Declared before sender_: the Sender's destructor fails its waiters into
  // it.
  struct PendingHold {
    uint64_t deadline_us = 0;
    size_t remaining = 0;  // groups not yet committed
    std::vector<CommitWait> waits;
    std::function<void(HoldEnd)> done;
  };
  mutable Mutex holds_mu_;
  bool holds_closed_ FLOE_GUARDED_BY(holds_mu_) = false;
  uint64_t hold_ids_ FLOE_GUARDED_BY(holds_mu_) = 0;
  uint64_t hold_bound_us_ FLOE_GUARDED_BY(holds_mu_) = 30'000'000;
  std::map<uint64_t, PendingHold> holds_ FLOE_GUARDED_BY(holds_mu_);
  std::map<std::pair<uint16_t, uint64_t>, std::set<uint64_t>> hold_groups_
      FLOE_GUARDED_BY(holds_mu_);
  std::atomic<uint64_t> hold_timeouts_{0};

  Engine* const engine_;
  ReplicaStore store_;
  AppliedTableView view_;
  replica::Receiver receiver_;  // after store_ and view_, which it uses
  replica::Sender sender_;
  std::function<void()> wake_;
  std::atomic<bool> pump_stopped_{false};
  std::atomic<uint64_t> messages_sent_{0};
  std::atomic<uint64_t> send_failures_{0};
  mutable Mutex mu_;
  std::set<uint16_t> owned_ FLOE_GUARDED_BY(mu_);
  // The slots Follow owns, by ownership (Own by hand, in tests, is left to its caller), and
  // the backups (in sync, filling) each was last configured with.
  std::map<uint16_t, uint64_t> ownership_ FLOE_GUARDED_BY(mu_);
  using Backups = std::pair<std::vector<replica::Target>, std::vector<replica::Target>>;
  std::map<uint16_t, Backups> configured_ FLOE_GUARDED_BY(mu_);
  uint64_t followed_epoch_ FLOE_GUARDED_BY(mu_) = 0;  // the latest table's epoch Follow saw
  std::set<uint16_t> backed_ FLOE_GUARDED_BY(mu_);    // by the last table Follow saw
  // Each owned slot's version in the last table Follow configured the Sender from (W8).
  std::vector<uint64_t> versions_ FLOE_GUARDED_BY(mu_) = std::vector<uint64_t>(cluster::kSlots);
  // W12: each slot promoted here, its ownership and the n it was promoted at (a backup added
  // later numbers on from it).
  std::map<uint16_t, std::pair<uint64_t, uint64_t>> promoted_ FLOE_GUARDED_BY(mu_);
  std::atomic<size_t> owned_count_{0};
  std::atomic<uint64_t> capture_failures_{0};
  std::atomic<uint64_t> promotions_{0};
  std::atomic<uint64_t> promotion_failures_{0};
};

// Tests: the backups per slot a new cluster's first table gets (its founders' Meta options),
// over `--replicas` (docs/replication.md W19) when not 0; set before the members start.
inline std::atomic<uint32_t>& TEST_ReplicasAtFounding() {
  static std::atomic<uint32_t> replicas{0};
  return replicas;
}

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_REPLICA_STORE_H_
