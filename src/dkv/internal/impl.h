// The distributed store's implementation, shared by its source files: dkv.cc (reads, the
// writer's side of writes, the public face), home.cc (the home's side of writes and the writes
// the caller applies itself, rules W2 and X1-X4), handlers.cc (the RPC handlers, lease lapses
// and the sweep). Rules referred to as H1, R3, W2, L3... are docs/coherence.md's.

#ifndef FLOE_DKV_INTERNAL_IMPL_H_
#define FLOE_DKV_INTERNAL_IMPL_H_

#include <time.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <shared_mutex>
#include <thread>
#include <unordered_map>

#include "dkv/dkv.h"
#include "dkv/internal/messages.h"

namespace floe::dkv {

namespace internal {

inline constexpr size_t kStripes = 256;
inline constexpr size_t kMaxApplyStripes = 16;  // ApplyIfFree holds at most this many stripe locks
// How many ApplyIfFree `apply`s this thread is inside (Dkv::InApply).
inline thread_local int applying_here = 0;
inline constexpr size_t kMaxNodes = 4096;  // node ids index the lease generations
// The version a writer's own pending copy carries (rule W4): above every stamp, so neither an
// invalidation nor a late answer replaces it; the writer's answer does.
inline constexpr uint64_t kPendingStamp = UINT64_MAX;

inline Result<store::ValuePtr> MakeValue(std::string_view key, const Entry& e, uint64_t stamp) {
  return store::Value::MakeVersioned(key, e.type, e.payload, e.expire_at_ms, stamp);
}

// Contract 2: a home that does not answer by the deadline is Unavailable, whether or not the RPC
// layer had already marked it down (before that it reports Timeout).
inline Status Unreachable(const Status& s, NodeId home) {
  if (s.code() != StatusCode::kTimeout) return s;
  return Status::Unavailable("the home of the key (node " + std::to_string(home) +
                             ") did not answer in time: " + std::string(s.message()));
}

inline Entry EntryOf(const store::Value& v) {
  return Entry{
      .type = v.type(), .expire_at_ms = v.expire_at_ms(), .payload = std::string(v.payload())};
}

inline bool SameValue(const store::Value* v, const std::optional<Entry>& e) {
  if (v == nullptr || !e) return v == nullptr && !e;
  return v->type() == e->type && v->payload() == e->payload;
}

}  // namespace internal

using internal::EntryOf;
using internal::GetAnswer;
using internal::kMaxApplyStripes;
using internal::kMaxNodes;
using internal::kPendingStamp;
using internal::kStripes;
using internal::MakeValue;
using internal::SameValue;
using internal::Unreachable;
using internal::WriteAnswer;

struct Dkv::Impl : std::enable_shared_from_this<Impl> {
  // A write waiting at its home (rule W2).
  struct Queued {
    NodeId writer = 0;
    uint64_t sent_us = 0;  // the writer's clock when it sent the write
    uint16_t op = 0;
    std::string args;
    std::function<void(Result<WriteAnswer>)> reply;
    // Set: a reservation for a write the caller applies itself (rule X2); called once the
    // key's holders are invalidated. The entry stays at the front, busy, until Release.
    std::function<void()> external;
  };
  // A node holding a copy, and its own clock reading when it asked for it (rule W3: a write it
  // sent later comes from a node that dropped that copy; one sent earlier, arriving late, must
  // invalidate it like any other).
  struct Holder {
    NodeId node = 0;
    uint64_t asked_us = 0;
  };
  struct HomeKey {
    std::vector<Holder> holders;
    std::list<Queued> queue;  // a list: an idle key allocates nothing for it
    bool busy = false;        // the front of `queue` is between its stamp and its commit
  };
  // A GET this node has in flight for a key (rule R3).
  struct InFlightGet {
    int count = 0;
    uint64_t floor = 0;
  };
  // This node's writes to one key, sent one at a time (rule W1).
  struct Outgoing {
    uint16_t op = 0;
    std::string args;
    WriteDone done;
    bool plain = false;  // a Put (rule W4)
  };
  struct WriterKey {
    std::deque<Outgoing> queue;  // front: in flight
    uint64_t max_inval = 0;      // the highest invalidation seen while the front was in flight
    int plain_puts = 0;          // Puts queued, in flight included
    uint64_t gen = 0;            // the lease generation the front was sent under
  };
  struct Stripe {
    Mutex mu;
    std::unordered_map<std::string, HomeKey> home FLOE_GUARDED_BY(mu);
    std::unordered_map<std::string, InFlightGet> gets FLOE_GUARDED_BY(mu);
    std::unordered_map<std::string, WriterKey> writes FLOE_GUARDED_BY(mu);
    // Writes of this node to keys homed elsewhere sent by the caller's own path (rule X4).
    std::unordered_map<std::string, int> own_writes FLOE_GUARDED_BY(mu);
  };
  // One invalidation round of a write at the home.
  struct Round {
    std::string key;
    bool external = false;  // a reservation (rule X2): nothing to commit here
    uint64_t stamp = 0;
    Outcome outcome;
    std::atomic<size_t> remaining{0};
  };
  using After = std::vector<std::function<void()>>;

  Impl(rpc::Endpoint& e, Options o)
      : ep(e),
        loop(e.loop()),
        options(std::move(o)),
        coarse_margin_us(CoarseMargin(loop)),
        serve_after(loop.NowMicros() + options.start_grace_us),
        home_store(options.home_store != nullptr ? *options.home_store : own_home_store) {
    for (auto& g : gens) g.store(0);
    // Rule X1: a GET answer's stamp is the last one taken, and a copy's version is never 0.
    if (options.home_store != nullptr) next_stamp.store(1);
  }

  rpc::Endpoint& ep;
  net::Loop& loop;
  Options options;
  const uint64_t coarse_margin_us;   // 0: read the loop's clock
  const uint64_t serve_after;        // rule L4: the start-up grace
  std::map<uint16_t, AtomicFn> ops;  // fixed after construction's registrations
  store::Store own_home_store, cache;
  store::Store& home_store;  // own_home_store, or Options::home_store
  // ReserveAll calls in progress: while any is, no GET is answered cacheable (rule X3).
  std::atomic<int> all_pending{0};
  std::atomic<bool> started{false};  // rule L4's grace is over
  uint64_t dead_copy_cursor = 0;     // the loop's: where the sweep's active expiry of copies is
  std::atomic<uint64_t> next_stamp{0};
  std::array<std::atomic<uint64_t>, kMaxNodes> gens;  // lease generation per home (rule L3)
  std::array<Stripe, kStripes> stripes;
  std::atomic<uint64_t> outstanding_puts{0};
  std::atomic<uint64_t> queued_writes{0};  // this node's writes queued or in flight
  // Installs of copies hold it shared, a lease purge exclusively (rule L3). Before any stripe.
  std::shared_mutex purge_mu;
  Stats stats;

  Stripe& StripeOf(std::string_view key) { return stripes[store::KeyView(key).hash() % kStripes]; }
  int64_t NowMs() const {
    return options.now_ms ? options.now_ms() : static_cast<int64_t>(WallMicros() / 1000);
  }
  std::atomic<uint64_t>& Gen(NodeId id) { return gens[id % kMaxNodes]; }

  // Rule L1. On a real loop the hot path reads the coarse monotonic clock (a few ns, where the
  // precise one costs ~20): it lags the precise clock by up to its resolution, so it is read
  // as that much later than it says, which can only end a lease early.
  // Puts a copy into the cache if the budget allows; otherwise the read stays uncached.
  void InstallCopy(store::ValuePtr v) {
    if (options.cache_max_bytes != 0 &&
        cache.MemoryUsed() + v->AllocatedBytes() > options.cache_max_bytes) {
      stats.cache_full.fetch_add(1, std::memory_order_relaxed);
      cache.Remove(v->key());  // an older copy of the key must not stay either
      return;
    }
    cache.Put(std::move(v));
  }

  bool LeaseValid(NodeId home) const {
    uint64_t now;
    if (coarse_margin_us != 0) {
      timespec ts;
      clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
      now = static_cast<uint64_t>(ts.tv_sec) * 1'000'000 +
            static_cast<uint64_t>(ts.tv_nsec) / 1000 + coarse_margin_us;
    } else {
      now = loop.NowMicros();
    }
    return now < ep.LeaseUntil(home);
  }
  static uint64_t CoarseMargin(net::Loop& l) {
    // floe::NowMicros is CLOCK_MONOTONIC's steady clock; the coarse one shares its origin.
    if (dynamic_cast<net::AsioLoop*>(&l) == nullptr) return 0;  // a simulation's virtual clock
    timespec res;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) != 0 || res.tv_sec != 0) return 0;
    return 2 * (static_cast<uint64_t>(res.tv_nsec) / 1000 + 1);
  }

  // ---- reads ----

  std::optional<store::ValuePtr> TryGetLocal(std::string_view key);

  // A miss: registers the GET in flight (rule R3) and gives what its answer needs.
  struct Miss {
    NodeId home;
    uint64_t gen;  // the lease generation it is asked under (rule L3)
    std::string key;
    std::string request;
  };
  Miss StartMiss(std::string_view key, bool encode = true);

  void Get(std::string_view key, ValueDone done);

  Result<store::ValuePtr> GetBlocking(std::string_view key);

  void OnGetAnswer(const std::string& key, NodeId h, uint64_t gen, Result<std::string> r,
                   const ValueDone& done);

  // ---- writes: the writer's side (rules W1, W3, W4) ----

  // `send_myself`: when set and this write is the key's front, the caller sends it (a blocking
  // call) instead of SendFront; *send_myself tells which.
  // `refuse_only`: `done` is called only if the write is refused (a plain Put's Status).
  void Write(std::string_view key, uint16_t op, std::string args, WriteDone done, bool plain,
             const Entry* pending, bool* send_myself = nullptr, bool refuse_only = false);

  // A write from a thread that may wait: when it is the key's front (the common case) it is
  // sent with a blocking call, which polls for the answer itself and so saves the hand-off from
  // the loop thread; otherwise it waits its turn in the key's queue (W1).
  Result<std::string> WriteBlocking(std::string_view key, uint16_t op, std::string args);

  // The front write's operation and arguments; drops our copy of the key (W3).
  void PrepareFront(const std::string& key, uint16_t* op, std::string* args);

  void SendFront(const std::string& key);

  void OnWriteAnswer(const std::string& key, Result<WriteAnswer> a);

  // ---- writes: the home's side (rule W2) ----

  void HomeEnqueue(const std::string& key, NodeId writer, uint64_t sent_us, uint16_t op,
                   std::string args, std::function<void(Result<WriteAnswer>)> reply);

  // Runs the queued writes of `key` until one has to wait for invalidations.
  void RunHome(Stripe& s, const std::string& key, After& after) FLOE_REQUIRES(s.mu);

  // Step 2 of W2: the atomic replace, the new holder set, the writer's answer.
  void Commit([[maybe_unused]] Stripe& s, HomeKey& hk, Round& round, After& after)
      FLOE_REQUIRES(s.mu);

  void SendInvalidate(NodeId target, std::shared_ptr<Round> round);

  void InvalidationDone(const std::shared_ptr<Round>& round);

  // ---- writes the caller applies itself (rules X1-X3) ----

  bool Started();
  // WaitOutCopies: the adoptions still running, and whether `key` (any key, when null) is in
  // one; ends the adoptions that ran out. `until` gets the latest end of those that cover it.
  struct Adoption {
    std::function<bool(std::string_view)> covers;
    uint64_t until_us = 0;
  };
  Mutex adopt_mu;
  std::vector<Adoption> adoptions FLOE_GUARDED_BY(adopt_mu);
  std::atomic<bool> adopting{false};  // adoptions is not empty: the hot path's one load
  bool Adopted(const std::string_view* key, uint64_t* until) FLOE_EXCLUDES(adopt_mu);

  // Whether `key` has nothing a change by `writer` (its copies dropped before `sent_us`, rule
  // X4) must wait for.
  static bool Free(const Stripe& s, const std::string& key, NodeId writer, uint64_t sent_us)
      FLOE_REQUIRES(s.mu);

  bool ApplyIfFree(const std::vector<std::string_view>& keys, const std::function<void()>& apply,
                   NodeId writer, uint64_t sent_us) FLOE_NO_THREAD_SAFETY_ANALYSIS;

  // One Reserve call: its keys are reserved one after the other (X2). A key granted at once
  // moves the loop on; one that must wait hands the rest to its grant (no recursion per key:
  // an MSET of 100,000 free keys is a loop, not 100,000 nested calls).
  struct Reservation {
    std::vector<std::string> keys;
    bool every_key = false;  // ReserveAll's: waits out every adoption (WaitOutCopies)
    NodeId writer = 0;       // whose copies from before sent_us are gone already (rule X4)
    uint64_t sent_us = 0;
    size_t next = 0;
    std::function<void()> ready;
    // For the key being reserved: 0 the loop waits; 1 granted before the loop looked; 2 the
    // loop left, the grant goes on.
    std::atomic<int> handoff{0};
  };

  // `first_call`: from Reserve or ReserveAll on the caller's thread, which hears a throw
  // (memory) with nothing reserved; later calls (a grant on another thread) try the key again
  // 10 ms later instead.
  void ReserveFrom(std::shared_ptr<Reservation> r, bool first_call);
  void ReleaseOne(const std::string& key);

  void Release(const std::vector<std::string>& keys);

  void ReserveAll(std::function<void(std::vector<std::string>)> ready);

  void ReleaseAll(const std::vector<std::string>& reserved);

  // ---- handlers ----

  Status CheckHome(std::string_view key, uint64_t map_version);

  // Rule L4: a home serves nothing until every lease its previous life may have granted has
  // lapsed (it cannot know the holders it had).
  Status CheckStarted();

  Result<std::string> OnGet(NodeId from, std::string_view request);

  // A GET's answer (R1, R4), for OnGet and HandOut.
  Result<std::string> Answer(NodeId from, std::string_view key_view, uint64_t sent_us);

  void OnWrite(NodeId from, std::string_view request, rpc::Reply reply);

  Result<std::string> OnInvalidate(std::string_view request);

  // Rule L3. Excludes every install of a copy (they hold purge_mu shared) so that none slips
  // between the generation's bump and the purge.
  void OnLeaseLapse(NodeId home);

  // A key read from elsewhere and then expired (or never written again) would keep its holder
  // list forever; the sweep drops the state of idle keys whose value is gone.
  void SweepHomeState();

  // Copies no read will be served from again (rule E1: within a lease of their expiry) hold
  // memory and the cache's budget, and their home forgets their holders: the store's active
  // expiry removes them, a bounded step per sweep (it looks only at shards holding values with
  // an expiry, and removes a value only if it is still the current one).
  void SweepDeadCopies(int64_t now_ms);

  void ScheduleSweep();
};

}  // namespace floe::dkv

#endif  // FLOE_DKV_INTERNAL_IMPL_H_
