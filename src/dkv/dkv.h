// dkv: the distributed key/value store. Every key has one home node (its slot's owner); any node
// reads and writes every key; copies cached on other nodes stay coherent. The protocol, as
// numbered rules with the test that checks each, is docs/coherence.md; this header gives the
// contracts a caller relies on.
//
// Contracts
// ---------
// 1. Linearizable operations: Get, PutVolatile, Remove, PutIfAbsent, CompareAndPut and Atomic.
//    Each takes effect at one instant between its call and its answer (for a write, the commit
//    at the home, rule W2), so every history of them is linearizable per key. Put is the
//    exception: it returns after the local apply; Fence / OutstandingPuts say when the home has
//    every Put of the caller.
// 2. An operation whose home does not answer by Options::timeout_us fails with Unavailable. A
//    read that fails had no effect; a write that fails may or may not have been committed
//    (rule F2), and is never committed twice.
// 3. Atomic(key, op, args) runs the function registered under `op` at the home, in the key's
//    write order (rule W2): it sees the committed value (null: absent or expired) and decides
//    the new one. Functions are registered on every node before Start under the same id; no
//    closure crosses the wire.
// 4. Callbacks (`done`) run once, on the thread that finished the operation (the loop's, an RPC
//    handler's, or the caller's own when no message was needed), with no lock of the store
//    held; they may start new operations but must not block.
// 5. Thread-safe: every public member may be called from any thread; Get of a key homed here or
//    cached here takes no lock (docs/coherence.md, "Thread safety").
// 6. Writes the caller applies itself (Options::home_store): a change to keys homed here runs
//    through ApplyIfFree, or, when that refuses, between Reserve's `ready` and Release. Either
//    way no cached copy of those keys is served anywhere once the change is visible (rule X1).

#ifndef FLOE_DKV_DKV_H_
#define FLOE_DKV_DKV_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "net/net.h"
#include "rpc/rpc.h"
#include "store/store.h"

namespace floe::dkv {

using net::NodeId;

// RPC method ids (docs/coherence.md, "Messages"); the cluster module uses 100-119.
inline constexpr uint16_t kMethodGet = 200;
inline constexpr uint16_t kMethodWrite = 201;
inline constexpr uint16_t kMethodInvalidate = 202;

// A value as it travels: type, expiry (Unix ms, 0: none), payload.
struct Entry {
  uint16_t type = 0;
  int64_t expire_at_ms = 0;
  std::string payload;
};

// What an atomic function decides.
struct Outcome {
  enum class Kind : uint8_t { kKeep, kPut, kRemove };
  Kind kind = Kind::kKeep;
  Entry entry;         // kPut: the new value
  std::string result;  // returned to the caller
};
// current: the committed value, or null when the key is absent or expired. Must be a pure
// function of its arguments (it may run again after a retry of the RPC layer never does, but a
// future migration may replay it on a new home).
using AtomicFn = std::function<Result<Outcome>(const store::Value* current, std::string_view args)>;

// Ids of the operations every node has (users register theirs from kFirstUserOp).
enum BuiltinOp : uint16_t {
  kOpPut = 1,            // args: an Entry; result: empty
  kOpRemove = 2,         // result: "1" if it removed a value, else "0"
  kOpPutIfAbsent = 3,    // args: an Entry; result: "1" if stored, else "0"
  kOpCompareAndPut = 4,  // args: expected (absent, or type + payload), then an Entry; "1"/"0"
  kOpIncrement = 5,      // args: int64 delta (decimal); result: the new value (decimal)
  kFirstUserOp = 64,
};

struct Options {
  NodeId self = 0;
  // The home of a key under the current slot map, and that map's version (sent with every
  // request; rule H1). In this issue the map never changes while the node runs.
  std::function<NodeId(std::string_view key)> home;
  uint64_t map_version = 1;
  uint64_t timeout_us = 5'000'000;  // per request to a home
  // How long a home waits for a holder to acknowledge an invalidation before it revokes the
  // holder's lease and waits that out instead (rule L2).
  uint64_t invalidate_patience_us = 250'000;
  // The lease length the endpoint was configured with (rpc::Options::lease_us); a copy with a
  // TTL is served only until this long before it expires (rule E1).
  uint64_t lease_us = 2'000'000;
  // Copies larger than this are not sent back to a writer to cache (it will miss once).
  size_t writer_copy_max = 4096;
  // The cache's budget: a copy that would take the cache store above it is not installed (the
  // read is answered, uncached). 0: no limit.
  size_t cache_max_bytes = size_t{256} << 20;
  // This node's writes queued or in flight, all keys together; more fail at once with
  // ResourceExhausted (a caller that floods Put cannot grow the queues without bound).
  uint64_t max_queued_writes = 1'000'000;
  // Wall-clock milliseconds, for expiry (tests give a virtual clock).
  std::function<int64_t()> now_ms;
  // Rule L4: for this long after it starts a home answers Unavailable, so that every lease a
  // previous life of the node granted has lapsed before it serves. At least lease_us plus
  // the lease margin (docs/rpc.md, "Leases").
  uint64_t start_grace_us = 2'100'000;
  // Every other member. When set, the grace ends early once each of them has echoed a clock
  // reading this node took after it started: each has then heard this life, which voided
  // what the previous one granted (rule L4).
  std::vector<NodeId> peers;
  // How often idle per-key home state (the holders of keys gone since) is swept.
  uint64_t sweep_interval_us = 1'000'000;
  // The store committed values live in; null: the Dkv's own. A node that runs its own commands
  // against this store (the server) changes keys homed here through ApplyIfFree / Reserve
  // (contract 6), and the Dkv's own writes should then not be used on it.
  store::Store* home_store = nullptr;
  // What a GET hands out for a committed value: null keeps the value's type, expiry and
  // payload. A hook that returns nullopt refuses the value (the GET fails with
  // FailedPrecondition and records no holder): a type whose payload is not its contents, or a
  // value too large to copy.
  std::function<std::optional<Entry>(const store::Value&)> export_value;
};

struct Stats {
  std::atomic<uint64_t> local_hits{0}, cache_hits{0}, misses{0}, lease_misses{0};
  std::atomic<uint64_t> invalidations_sent{0}, invalidations_received{0}, lease_waits{0};
  std::atomic<uint64_t> writes_committed{0}, not_cached_late{0}, purges{0}, wrong_home{0};
  std::atomic<uint64_t> cache_full{0}, writes_refused{0};
  std::atomic<uint64_t> home_sweeps{0};  // SweepHomeState's runs (on the loop thread)
};

// A GET carried by another message (Dkv::StartFetch).
struct Fetch {
  NodeId home = 0;
  uint64_t gen = 0;  // the lease generation it is asked under (rule L3)
  std::string key;
};

class Dkv {
 public:
  // Registers the DKV's methods on `endpoint` (before endpoint.Start()); the endpoint must have
  // been configured with on_lease_lapse calling OnLeaseLapse (see MakeLeaseHook).
  Dkv(rpc::Endpoint& endpoint, Options options);
  ~Dkv();
  Dkv(const Dkv&) = delete;
  Dkv& operator=(const Dkv&) = delete;

  // For rpc::Options::on_lease_lapse: purges the copies homed at `home` (rule L3). The pointer
  // is set once the Dkv exists and cleared before it is destroyed.
  using Slot = std::shared_ptr<std::atomic<Dkv*>>;
  static Slot MakeSlot() { return std::make_shared<std::atomic<Dkv*>>(nullptr); }
  static std::function<void(NodeId)> MakeLeaseHook(Slot slot);
  void OnLeaseLapse(NodeId home);

  // Before the endpoint starts (not checked), on every node with the same function. Ids below
  // kFirstUserOp are taken.
  void RegisterOp(uint16_t op, AtomicFn fn);

  using ValueDone = std::function<void(Result<store::ValuePtr>)>;  // null: absent
  using WriteDone = std::function<void(Result<std::string>)>;      // the operation's result

  // The value of `key`, or null. Answers at once (on this thread) for a key homed here or
  // cached under a valid lease; otherwise after one round trip to the home.
  void Get(std::string_view key, ValueDone done);
  // Get for a thread that may wait (not the loop's, not an RPC handler's): on a miss it polls
  // the socket for the answer itself, saving the hand-off from the loop thread (the blocking
  // RPC call's fast path).
  Result<store::ValuePtr> GetBlocking(std::string_view key);
  // The local part of Get: the value if it can be answered without a message.
  std::optional<store::ValuePtr> TryGetLocal(std::string_view key);

  void PutVolatile(std::string_view key, Entry entry, WriteDone done);
  void Remove(std::string_view key, WriteDone done);
  void PutIfAbsent(std::string_view key, Entry entry, WriteDone done);
  // Replaces the value only if it is `expected` (nullopt: only if absent), by type and payload.
  void CompareAndPut(std::string_view key, std::optional<Entry> expected, Entry entry,
                     WriteDone done);
  void Atomic(std::string_view key, uint16_t op, std::string args, WriteDone done);

  // The writes above for a thread that may wait (not the loop's, not an RPC handler's): the
  // operation's result. A write that is its key's front is sent with a blocking call, which
  // polls for the answer itself (no hand-off from the loop thread). `op` as for Atomic.
  Result<std::string> WriteBlocking(std::string_view key, uint16_t op, std::string args);
  Result<std::string> PutVolatileBlocking(std::string_view key, const Entry& entry);

  // Applies locally (local readers see it at once) and sends it home; returns at once.
  // ResourceExhausted when max_queued_writes are already queued (nothing is applied then).
  Status Put(std::string_view key, Entry entry);
  // Plain Puts of this node not yet answered by their homes.
  uint64_t OutstandingPuts() const;
  // Blocks until no Put of this node is outstanding (so every Put issued before the call has
  // been answered by its home). Not on the loop thread.
  void Fence();

  // ---- writes the caller applies to the home store itself (contract 6, rules X1-X3) ----

  // Runs `apply` at once, with the keys' locks held, if no key of `keys` (all homed here) has a
  // holder, a write queued or in progress, and the start-up grace (L4) is over; returns whether
  // it ran. `apply` must not call into the Dkv. Cheap: a lock and a lookup per key. Keys spread
  // over more than 16 of its lock stripes are refused (the caller reserves them instead).
  // `writer`, `sent_us`: a change a peer sent at its clock reading `sent_us`, having dropped its
  // copies of the keys first (BeginOwnWrite, rule X4): its holder records from before that
  // need no invalidation.
  bool ApplyIfFree(const std::vector<std::string_view>& keys, const std::function<void()>& apply,
                   NodeId writer = 0, uint64_t sent_us = 0);
  // Rule O3 (docs/membership.md): keys `moved` accepts get another home. Under the lock that
  // excludes every install of a copy, this drops their copies here, makes every answer of a
  // request sent before the call uncacheable, and runs `publish` (the caller's switch to the
  // new homes). A copy is installed only from the key's home at the time (checked then), and
  // served only under that home's lease, so no copy of the old home outlives the switch.
  void ChangeHomes(const std::function<bool(std::string_view key)>& moved,
                   const std::function<void()>& publish);
  // Keys this home took over from a home whose life ended (a slot promoted to this member,
  // docs/replication.md W13): that life may have handed out copies nobody here knows of, each
  // valid until at most the lease plus its margin after it ended. So for `wait_us` from now
  // the changes of every key `covers` accepts wait as in the start-up grace (L4): ApplyIfFree
  // refuses them and Reserve (and ReserveAll, which may change any key) grants them only after.
  // Reads and GETs are answered meanwhile. `covers` runs on the thread that changes a key,
  // under the Dkv's adoption lock (taken with no other of its locks held); it must be cheap,
  // thread-safe, and must not call into the Dkv.
  void WaitOutCopies(std::function<bool(std::string_view key)> covers, uint64_t wait_us);
  // True on a thread running an ApplyIfFree's `apply` (of any Dkv): its stripe locks are held,
  // and the loop thread takes them, so what runs there must not wait for another node.
  static bool InApply();
  // Reserves `keys` (in sorted order, each once) one after the other, each behind its key's earlier
  // writes (W2): every holder of the key is invalidated (or its lease waited out, L2), and the
  // key stays reserved -- its GETs are answered uncacheable, its other writes wait -- until
  // Release. Then calls `ready` once, on any thread (this one if nothing had to wait), no lock
  // held. The caller applies its change and then calls Release(keys).
  void Reserve(std::vector<std::string> keys, std::function<void()> ready, NodeId writer = 0,
               uint64_t sent_us = 0);
  void Release(const std::vector<std::string>& keys);
  // The same for a change to every key (FLUSHALL): from the call until ReleaseAll, no GET is
  // answered cacheable; `ready` gets the keys that had holders, reserved as Reserve does.
  void ReserveAll(std::function<void(std::vector<std::string> reserved)> ready);
  void ReleaseAll(const std::vector<std::string>& reserved);

  // A GET carried by another message (the server asks for a copy with a forwarded read): the
  // asker registers it before sending (rule R3), the home answers it with HandOut, and the
  // asker hands the answer (or the failure) to FinishFetch exactly once, which installs the
  // copy under R1/R3 as a GET's answer would be.
  Fetch StartFetch(std::string_view key);
  void FinishFetch(const Fetch& fetch, Result<std::string> answer);
  // The home's side: a GET answer for `to` (recording it as a holder when cacheable), asked
  // at `to`'s clock reading `asked_us`.
  Result<std::string> HandOut(NodeId to, std::string_view key, uint64_t asked_us);
  // Rule X4, the writer's side: a change this node sends to the home of `key` by its own path
  // (the server's forwarded commands). BeginOwnWrite, before the clock reading the change
  // carries, drops the copy of `key`; until the matching EndOwnWrite no GET answer for it is
  // installed, and none in flight at EndOwnWrite is either. Calls nest.
  void BeginOwnWrite(std::string_view key);
  void EndOwnWrite(std::string_view key);

  // Whether rule L4's start-up grace is over: until then this home answers GETs Unavailable
  // and its changes wait.
  bool Serving();

  const Stats& stats() const;
  // Values held: committed here, and cached copies of other homes' keys.
  size_t HomeSize() const;
  size_t CacheSize() const;
  size_t CacheBytes() const;
  // Drops every cached copy (memory pressure, rule E2). Committed values are untouched.
  void TrimCache();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace floe::dkv

#endif  // FLOE_DKV_DKV_H_
