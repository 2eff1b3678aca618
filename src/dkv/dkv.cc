// The distributed store: homes, cached copies, invalidation before acknowledgement, leases.
// Rules referred to as H1, R3, W2, L3... are docs/coherence.md's.

#include "dkv/dkv.h"

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

#include "dkv/internal/messages.h"

namespace floe::dkv {

using internal::GetAnswer;
using internal::WriteAnswer;

namespace {

constexpr size_t kStripes = 256;
constexpr size_t kMaxApplyStripes = 16;  // ApplyIfFree holds at most this many stripe locks
constexpr size_t kMaxNodes = 4096;       // node ids index the lease generations
// The version a writer's own pending copy carries (rule W4): above every stamp, so neither an
// invalidation nor a late answer replaces it; the writer's answer does.
constexpr uint64_t kPendingStamp = UINT64_MAX;

Result<store::ValuePtr> MakeValue(std::string_view key, const Entry& e, uint64_t stamp) {
  return store::Value::MakeVersioned(key, e.type, e.payload, e.expire_at_ms, stamp);
}

// Contract 2: a home that does not answer by the deadline is Unavailable, whether or not the RPC
// layer had already marked it down (before that it reports Timeout).
Status Unreachable(const Status& s, NodeId home) {
  if (s.code() != StatusCode::kTimeout) return s;
  return Status::Unavailable("the home of the key (node " + std::to_string(home) +
                             ") did not answer in time: " + std::string(s.message()));
}

Entry EntryOf(const store::Value& v) {
  return Entry{
      .type = v.type(), .expire_at_ms = v.expire_at_ms(), .payload = std::string(v.payload())};
}

bool SameValue(const store::Value* v, const std::optional<Entry>& e) {
  if (v == nullptr || !e) return v == nullptr && !e;
  return v->type() == e->type && v->payload() == e->payload;
}

}  // namespace

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

  std::optional<store::ValuePtr> TryGetLocal(std::string_view key) {
    const NodeId h = options.home(key);
    if (h == options.self) {
      stats.local_hits.fetch_add(1, std::memory_order_relaxed);
      store::ValuePtr v = home_store.Get(key);
      // The clock only for values that can expire.
      if (v && v->expire_at_ms() != 0 && v->IsExpired(NowMs())) return store::ValuePtr();
      return v;
    }
    store::ValuePtr v = cache.Get(key);
    if (!v) return std::nullopt;
    if (!LeaseValid(h)) {
      stats.lease_misses.fetch_add(1, std::memory_order_relaxed);
      return std::nullopt;
    }
    const int64_t at = v->expire_at_ms();
    if (at != 0 && at - static_cast<int64_t>(options.lease_us / 1000) <= NowMs()) {
      // Rule E1: the home decides. The copy is never served again, so it goes: kept, it would
      // hold its bytes and block the key's next copy if that carries the same stamp (X1).
      Stripe& s = StripeOf(key);
      MutexLock lock(&s.mu);
      store::ValuePtr cur = cache.Get(key);
      if (cur && cur.get() == v.get() && cur->version() != kPendingStamp) cache.Remove(key);
      return std::nullopt;
    }
    stats.cache_hits.fetch_add(1, std::memory_order_relaxed);
    return v;
  }

  // A miss: registers the GET in flight (rule R3) and gives what its answer needs.
  struct Miss {
    NodeId home;
    uint64_t gen;  // the lease generation it is asked under (rule L3)
    std::string key;
    std::string request;
  };
  Miss StartMiss(std::string_view key, bool encode = true) {
    stats.misses.fetch_add(1, std::memory_order_relaxed);
    Miss m{.home = options.home(key), .gen = 0, .key = std::string(key), .request = {}};
    m.gen = Gen(m.home).load(std::memory_order_acquire);
    {
      Stripe& s = StripeOf(key);
      MutexLock lock(&s.mu);
      s.gets[m.key].count++;
    }
    if (encode) {
      m.request = internal::EncodeGetRequest(
          {.map_version = options.map_version, .key = key, .sent_us = loop.NowMicros()});
    }
    return m;
  }

  void Get(std::string_view key, ValueDone done) {
    if (std::optional<store::ValuePtr> v = TryGetLocal(key)) return done(std::move(*v));
    Miss m = StartMiss(key);
    const NodeId h = m.home;
    std::string request = std::move(m.request);  // before `m` moves into the callback
    ep.CallAsync(h, kMethodGet, std::move(request), options.timeout_us,
                 [self = shared_from_this(), m = std::move(m),
                  done = std::move(done)](Result<std::string> r) {
                   self->OnGetAnswer(m.key, m.home, m.gen, std::move(r), done);
                 });
  }

  Result<store::ValuePtr> GetBlocking(std::string_view key) {
    if (std::optional<store::ValuePtr> v = TryGetLocal(key)) return std::move(*v);
    Miss m = StartMiss(key);
    // A blocking call polls the socket itself: the answer needs no hop through the loop.
    Result<std::string> r = ep.Call(m.home, kMethodGet, std::move(m.request), options.timeout_us);
    Result<store::ValuePtr> out = Status::Internal("no answer");
    OnGetAnswer(m.key, m.home, m.gen, std::move(r),
                [&out](Result<store::ValuePtr> v) { out = std::move(v); });
    return out;
  }

  void OnGetAnswer(const std::string& key, NodeId h, uint64_t gen, Result<std::string> r,
                   const ValueDone& done) {
    Result<GetAnswer> a =
        r.ok() ? internal::DecodeGetAnswer(*r) : Result<GetAnswer>(Unreachable(r.status(), h));
    store::ValuePtr value;
    if (a.ok() && a->entry) {
      Result<store::ValuePtr> v = MakeValue(key, *a->entry, a->stamp);
      if (!v.ok())
        a = v.status();
      else
        value = std::move(*v);
    }
    {
      Stripe& s = StripeOf(key);
      std::shared_lock<std::shared_mutex> no_purge(purge_mu);  // rule L3
      MutexLock lock(&s.mu);
      auto it = s.gets.find(key);
      uint64_t floor = 0;
      if (it != s.gets.end()) {
        floor = it->second.floor;
        if (--it->second.count == 0) s.gets.erase(it);
      }
      if (a.ok() && value && a->cacheable) {
        // Rule R3: never after its own invalidation, nor across a lapsed lease (L3), nor while
        // a write of ours to the key is in flight (W3: its answer decides our copy).
        if (s.writes.count(key) == 0 && s.own_writes.count(key) == 0 && a->stamp >= floor &&
            Gen(h).load(std::memory_order_acquire) == gen && LeaseValid(h)) {
          store::ValuePtr cur = cache.Get(key);
          if (!cur || cur->version() < a->stamp) InstallCopy(value);
        } else {
          stats.not_cached_late.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
    if (!a.ok()) return done(a.status());
    done(std::move(value));
  }

  // ---- writes: the writer's side (rules W1, W3, W4) ----

  // `send_myself`: when set and this write is the key's front, the caller sends it (a blocking
  // call) instead of SendFront; *send_myself tells which.
  // `refuse_only`: `done` is called only if the write is refused (a plain Put's Status).
  void Write(std::string_view key, uint16_t op, std::string args, WriteDone done, bool plain,
             const Entry* pending, bool* send_myself = nullptr, bool refuse_only = false) {
    if (queued_writes.fetch_add(1, std::memory_order_acq_rel) >= options.max_queued_writes) {
      queued_writes.fetch_sub(1, std::memory_order_acq_rel);
      stats.writes_refused.fetch_add(1, std::memory_order_relaxed);
      if (send_myself != nullptr) *send_myself = false;
      if (done) {
        done(Status::ResourceExhausted("too many writes queued on this node (" +
                                       std::to_string(options.max_queued_writes) + ")"));
      }
      return;
    }
    if (refuse_only) done = nullptr;
    const NodeId h = options.home(key);
    std::string k(key);
    bool start = false;
    {
      Stripe& s = StripeOf(key);
      MutexLock lock(&s.mu);
      WriterKey& w = s.writes[k];
      if (plain) {
        w.plain_puts++;
        if (pending != nullptr && h != options.self) {
          // W4: local readers see the Put at once.
          if (Result<store::ValuePtr> v = MakeValue(key, *pending, kPendingStamp); v.ok()) {
            cache.Put(std::move(*v));
          }
        }
      }
      w.queue.push_back(
          Outgoing{.op = op, .args = std::move(args), .done = std::move(done), .plain = plain});
      start = w.queue.size() == 1;
      if (start) {
        w.max_inval = 0;
        w.gen = Gen(h).load(std::memory_order_acquire);
      }
    }
    if (plain) outstanding_puts.fetch_add(1, std::memory_order_relaxed);
    if (send_myself != nullptr) {
      *send_myself = start;
      return;
    }
    if (start) SendFront(k);
  }

  // A write from a thread that may wait: when it is the key's front (the common case) it is
  // sent with a blocking call, which polls for the answer itself and so saves the hand-off from
  // the loop thread; otherwise it waits its turn in the key's queue (W1).
  Result<std::string> WriteBlocking(std::string_view key, uint16_t op, std::string args) {
    struct Wait {
      std::mutex mu;
      std::condition_variable cv;
      std::optional<Result<std::string>> result;
    };
    auto wait = std::make_shared<Wait>();
    WriteDone done = [wait](Result<std::string> r) {
      std::lock_guard<std::mutex> lock(wait->mu);
      wait->result = std::move(r);
      wait->cv.notify_all();
    };
    const NodeId h = options.home(key);
    bool mine = false;
    Write(key, op, std::move(args), std::move(done), false, nullptr, &mine);
    std::string k(key);
    if (mine) {
      if (h == options.self) {
        SendFront(k);
      } else {
        uint16_t front_op;
        std::string front_args;
        PrepareFront(k, &front_op, &front_args);
        Result<std::string> r =
            ep.Call(h, kMethodWrite,
                    internal::EncodeWriteRequest({.map_version = options.map_version,
                                                  .key = k,
                                                  .op = front_op,
                                                  .args = front_args,
                                                  .sent_us = loop.NowMicros()}),
                    options.timeout_us);
        OnWriteAnswer(k, r.ok() ? internal::DecodeWriteAnswer(*r)
                                : Result<WriteAnswer>(Unreachable(r.status(), h)));
      }
    }
    std::unique_lock<std::mutex> lock(wait->mu);
    wait->cv.wait(lock, [&] { return wait->result.has_value(); });
    return std::move(*wait->result);
  }

  // The front write's operation and arguments; drops our copy of the key (W3).
  void PrepareFront(const std::string& key, uint16_t* op, std::string* args) {
    Stripe& s = StripeOf(key);
    MutexLock lock(&s.mu);
    WriterKey& w = s.writes[key];
    *op = w.queue.front().op;
    *args = w.queue.front().args;
    // W3: our copy is not served while our write is in flight: once the home commits, a read
    // elsewhere sees the new value, so one here must not see the old.
    store::ValuePtr cur = cache.Get(key);
    if (cur && cur->version() != kPendingStamp) cache.Remove(key);
  }

  void SendFront(const std::string& key) {
    uint16_t op;
    std::string args;
    PrepareFront(key, &op, &args);
    const NodeId h = options.home(key);
    auto self = shared_from_this();
    if (h == options.self) {
      return HomeEnqueue(key, options.self, loop.NowMicros(), op, std::move(args),
                         // Weak: the answer waits in this node's own home queue, inside *this.
                         [weak = weak_from_this(), key](Result<WriteAnswer> a) {
                           if (auto impl = weak.lock()) impl->OnWriteAnswer(key, std::move(a));
                         });
    }
    std::string req = internal::EncodeWriteRequest({.map_version = options.map_version,
                                                    .key = key,
                                                    .op = op,
                                                    .args = args,
                                                    .sent_us = loop.NowMicros()});
    ep.CallAsync(h, kMethodWrite, std::move(req), options.timeout_us,
                 [self, key, h](Result<std::string> r) {
                   Result<WriteAnswer> a = r.ok() ? internal::DecodeWriteAnswer(*r)
                                                  : Result<WriteAnswer>(Unreachable(r.status(), h));
                   self->OnWriteAnswer(key, std::move(a));
                 });
  }

  void OnWriteAnswer(const std::string& key, Result<WriteAnswer> a) {
    const NodeId h = options.home(key);
    Outgoing done_op;
    bool next = false;
    {
      Stripe& s = StripeOf(key);
      std::shared_lock<std::shared_mutex> no_purge(purge_mu);  // rule L3
      MutexLock lock(&s.mu);
      WriterKey& w = s.writes[key];
      done_op = std::move(w.queue.front());
      w.queue.pop_front();
      // The home sends no invalidation to the writer (W2), so a GET of ours answered before
      // this write committed and still in flight must not install its older value (R3). After a
      // write of unknown outcome, none of them may.
      if (auto g = s.gets.find(key); g != s.gets.end()) {
        g->second.floor = std::max(g->second.floor, a.ok() ? a->stamp : kPendingStamp);
      }
      if (done_op.plain) w.plain_puts--;
      if (h != options.self && w.plain_puts == 0) {
        // The cache now reflects this answer: the confirmed value when the home sent it, no
        // later write is known to have won (R3 by the floor) and the lease held throughout;
        // otherwise no copy at all (a pending copy of ours included).
        store::ValuePtr cur = cache.Get(key);
        bool installed = false;
        if (a.ok() && a->entry && a->stamp >= w.max_inval &&
            Gen(h).load(std::memory_order_acquire) == w.gen && LeaseValid(h)) {
          if (Result<store::ValuePtr> v = MakeValue(key, *a->entry, a->stamp); v.ok()) {
            if (!cur || cur->version() == kPendingStamp || cur->version() < a->stamp) {
              InstallCopy(std::move(*v));
            }
            installed = true;
          }
        }
        if (!installed && cur && (cur->version() == kPendingStamp || a.ok())) {
          // A write changed the key: a copy older than its stamp is stale; ours pending is moot.
          if (cur->version() == kPendingStamp || !a.ok() || cur->version() < a->stamp) {
            cache.Remove(key);
          }
        }
      } else if (h != options.self && !a.ok()) {
        // unknown outcome with Puts still queued: leave their pending copy
      }
      next = !w.queue.empty();
      if (next) {
        w.max_inval = 0;
        w.gen = Gen(h).load(std::memory_order_acquire);
      } else {
        s.writes.erase(key);
      }
    }
    if (done_op.plain) outstanding_puts.fetch_sub(1, std::memory_order_release);
    queued_writes.fetch_sub(1, std::memory_order_acq_rel);
    // Through the loop, not a call: an answer can come back synchronously (a local home, a
    // peer already marked down), and a long queue would otherwise recurse once per write.
    if (next) loop.Post([self = shared_from_this(), key] { self->SendFront(key); });
    if (done_op.done) {
      if (a.ok()) {
        done_op.done(std::move(a->result));
      } else {
        done_op.done(a.status());
      }
    }
  }

  // ---- writes: the home's side (rule W2) ----

  void HomeEnqueue(const std::string& key, NodeId writer, uint64_t sent_us, uint16_t op,
                   std::string args, std::function<void(Result<WriteAnswer>)> reply) {
    After after;
    {
      Stripe& s = StripeOf(key);
      MutexLock lock(&s.mu);
      HomeKey& hk = s.home[key];
      hk.queue.push_back(Queued{.writer = writer,
                                .sent_us = sent_us,
                                .op = op,
                                .args = std::move(args),
                                .reply = std::move(reply)});
      if (!hk.busy) RunHome(s, key, after);
    }
    for (auto& fn : after) fn();
  }

  // Runs the queued writes of `key` until one has to wait for invalidations.
  void RunHome(Stripe& s, const std::string& key, After& after) FLOE_REQUIRES(s.mu) {
    auto hit = s.home.find(key);
    while (hit != s.home.end() && !hit->second.queue.empty() && !hit->second.busy) {
      HomeKey& hk = hit->second;
      Queued& q = hk.queue.front();
      if (q.external) {
        // Rule X2: invalidate every holder, then hand the key to the caller, still busy.
        auto round = std::make_shared<Round>();
        round->key = key;
        round->external = true;
        round->stamp = next_stamp.fetch_add(1, std::memory_order_acq_rel) + 1;
        std::vector<NodeId> targets;
        for (const Holder& x : hk.holders) {
          if (x.node == options.self) continue;
          if (x.node == q.writer && x.asked_us < q.sent_us) continue;  // X4: dropped already
          targets.push_back(x.node);
        }
        hk.busy = true;
        if (targets.empty()) {
          hk.holders.clear();
          after.push_back(q.external);
          return;
        }
        round->remaining.store(targets.size());
        for (NodeId t : targets) {
          after.push_back(
              [self = shared_from_this(), t, round] { self->SendInvalidate(t, round); });
        }
        return;
      }
      store::ValuePtr cur = home_store.Get(key);
      if (cur && cur->IsExpired(NowMs())) cur = nullptr;
      auto fit = ops.find(q.op);
      Result<Outcome> out = Status::Unimplemented("no operation " + std::to_string(q.op));
      if (fit != ops.end()) {
        // A function that throws fails its write; the key's queue moves on.
        try {
          out = fit->second(cur.get(), q.args);
        } catch (const std::exception& e) {
          out = Status::Internal(std::string("operation ") + std::to_string(q.op) +
                                 " failed: " + e.what());
        } catch (...) {
          out = Status::Internal("operation " + std::to_string(q.op) + " failed");
        }
      }
      if (!out.ok() || out->kind == Outcome::Kind::kKeep) {
        Result<WriteAnswer> ans =
            out.ok() ? Result<WriteAnswer>(WriteAnswer{.stamp = cur ? cur->version() : 0,
                                                       .result = std::move(out->result)})
                     : Result<WriteAnswer>(out.status());
        after.push_back([reply = std::move(q.reply), ans = std::move(ans)]() mutable {
          reply(std::move(ans));
        });
        hk.queue.pop_front();
        continue;
      }
      auto round = std::make_shared<Round>();
      round->key = key;
      round->stamp = next_stamp.fetch_add(1, std::memory_order_relaxed) + 1;
      round->outcome = std::move(*out);
      std::vector<NodeId> targets;
      for (const Holder& x : hk.holders) {
        if (x.node == options.self) continue;
        // The writer dropped the copy it asked for before it sent this write (W3); a copy it
        // asked for after sending — after this write was abandoned, say — is invalidated.
        if (x.node == q.writer && x.asked_us < q.sent_us) continue;
        targets.push_back(x.node);
      }
      if (targets.empty()) {
        Commit(s, hk, *round, after);
        continue;
      }
      hk.busy = true;
      round->remaining.store(targets.size());
      for (NodeId t : targets) {
        after.push_back([self = shared_from_this(), t, round] { self->SendInvalidate(t, round); });
      }
      return;
    }
    if (hit != s.home.end() && hit->second.queue.empty() && hit->second.holders.empty() &&
        !hit->second.busy) {
      s.home.erase(hit);
    }
  }

  // Step 2 of W2: the atomic replace, the new holder set, the writer's answer.
  void Commit([[maybe_unused]] Stripe& s, HomeKey& hk, Round& round, After& after)
      FLOE_REQUIRES(s.mu) {
    Queued q = std::move(hk.queue.front());
    hk.queue.pop_front();
    hk.busy = false;
    hk.holders.clear();
    WriteAnswer ans{.stamp = round.stamp, .result = std::move(round.outcome.result)};
    if (round.outcome.kind == Outcome::Kind::kPut) {
      Result<store::ValuePtr> v = MakeValue(round.key, round.outcome.entry, round.stamp);
      if (!v.ok()) {
        after.push_back([reply = std::move(q.reply), st = v.status()] { reply(st); });
        return;
      }
      home_store.Put(std::move(*v));
      if (q.writer != options.self &&
          round.outcome.entry.payload.size() <= options.writer_copy_max) {
        ans.entry = std::move(round.outcome.entry);
        hk.holders.push_back(Holder{.node = q.writer, .asked_us = q.sent_us});
      }
    } else {
      home_store.Remove(round.key);
    }
    stats.writes_committed.fetch_add(1, std::memory_order_relaxed);
    after.push_back(
        [reply = std::move(q.reply), ans = std::move(ans)]() mutable { reply(std::move(ans)); });
  }

  void SendInvalidate(NodeId target, std::shared_ptr<Round> round) {
    stats.invalidations_sent.fetch_add(1, std::memory_order_relaxed);
    auto self = shared_from_this();
    ep.CallAsync(target, kMethodInvalidate,
                 internal::EncodeInvalidate({.key = round->key, .stamp = round->stamp}),
                 options.invalidate_patience_us, [self, target, round](Result<std::string> r) {
                   if (r.ok()) return self->InvalidationDone(round);
                   // L2: revoke the lease and wait it out.
                   self->stats.lease_waits.fetch_add(1, std::memory_order_relaxed);
                   const uint64_t bound = self->ep.RevokeLease(target);
                   self->loop.PostAt(bound, [self, target, round] {
                     self->ep.RestoreLease(target);
                     self->InvalidationDone(round);
                   });
                 });
  }

  void InvalidationDone(const std::shared_ptr<Round>& round) {
    if (round->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    After after;
    {
      Stripe& s = StripeOf(round->key);
      MutexLock lock(&s.mu);
      auto it = s.home.find(round->key);
      FLOE_CHECK(it != s.home.end() && it->second.busy);
      if (round->external) {
        // Rule X2: every holder is invalidated; the key stays busy until Release.
        it->second.holders.clear();
        after.push_back(it->second.queue.front().external);
      } else {
        Commit(s, it->second, *round, after);
        RunHome(s, round->key, after);
      }
    }
    for (auto& fn : after) fn();
  }

  // ---- writes the caller applies itself (rules X1-X3) ----

  bool Started() {
    if (started.load(std::memory_order_acquire)) return true;
    const uint64_t now = loop.NowMicros();
    bool ok = now >= serve_after;
    if (!ok && !options.peers.empty()) {
      // Rule L4's early end: an echo of a reading taken in this life renews a lease to past
      // born + lease; one of an earlier life's reading cannot.
      const uint64_t born = serve_after - options.start_grace_us;
      ok = std::all_of(options.peers.begin(), options.peers.end(),
                       [&](NodeId p) { return ep.LeaseUntil(p) > born + options.lease_us; });
    }
    if (ok) started.store(true, std::memory_order_release);
    return ok;
  }

  // Whether `key` has nothing a change by `writer` (its copies dropped before `sent_us`, rule
  // X4) must wait for.
  static bool Free(const Stripe& s, const std::string& key, NodeId writer, uint64_t sent_us)
      FLOE_REQUIRES(s.mu) {
    auto it = s.home.find(key);
    if (it == s.home.end()) return true;
    const HomeKey& hk = it->second;
    if (!hk.queue.empty() || hk.busy) return false;
    return std::all_of(hk.holders.begin(), hk.holders.end(),
                       [&](const Holder& x) { return x.node == writer && x.asked_us < sent_us; });
  }

  bool ApplyIfFree(const std::vector<std::string_view>& keys, const std::function<void()>& apply,
                   NodeId writer, uint64_t sent_us) FLOE_NO_THREAD_SAFETY_ANALYSIS {
    if (!Started()) return false;
    // The stripes in index order, each once: two callers cannot deadlock. One key (the common
    // case) allocates nothing.
    size_t one = 0;
    std::vector<size_t> many;
    size_t* idx = &one;
    size_t n = 0;
    if (keys.size() == 1) {
      one = store::KeyView(keys[0]).hash() % kStripes;
      n = 1;
    } else {
      for (std::string_view k : keys) many.push_back(store::KeyView(k).hash() % kStripes);
      std::sort(many.begin(), many.end());
      many.erase(std::unique(many.begin(), many.end()), many.end());
      idx = many.data();
      n = many.size();
      // Many keys take the reservation path instead of holding many locks at once.
      if (n > kMaxApplyStripes) return false;
    }
    for (size_t i = 0; i < n; i++) stripes[idx[i]].mu.Lock();
    bool free = true;
    std::string key;
    for (std::string_view k : keys) {
      if (stripes[store::KeyView(k).hash() % kStripes].home.empty()) continue;
      key.assign(k);
      if (!Free(StripeOf(k), key, writer, sent_us)) {
        free = false;
        break;
      }
    }
    if (free) {
      // The writer's own records go: it holds no copy from before its write (X4).
      for (std::string_view k : keys) {
        Stripe& s = StripeOf(k);
        if (s.home.empty()) continue;
        auto it = s.home.find(std::string(k));
        if (it == s.home.end()) continue;
        it->second.holders.clear();
        if (it->second.queue.empty() && !it->second.busy) s.home.erase(it);
      }
      try {
        apply();
      } catch (...) {
        for (size_t i = n; i-- > 0;) stripes[idx[i]].mu.Unlock();
        throw;
      }
    }
    for (size_t i = n; i-- > 0;) stripes[idx[i]].mu.Unlock();
    return free;
  }

  // One Reserve call: its keys are reserved one after the other (X2). A key granted at once
  // moves the loop on; one that must wait hands the rest to its grant (no recursion per key:
  // an MSET of 100,000 free keys is a loop, not 100,000 nested calls).
  struct Reservation {
    std::vector<std::string> keys;
    NodeId writer = 0;  // whose copies from before sent_us are gone already (rule X4)
    uint64_t sent_us = 0;
    size_t next = 0;
    std::function<void()> ready;
    // For the key being reserved: 0 the loop waits; 1 granted before the loop looked; 2 the
    // loop left, the grant goes on.
    std::atomic<int> handoff{0};
  };

  void ReserveFrom(std::shared_ptr<Reservation> r) {
    if (!Started()) {
      // Rule L4: copies a previous life of this node handed out may still be served.
      loop.PostAt(std::min(serve_after, loop.NowMicros() + 10'000),
                  [self = shared_from_this(), r = std::move(r)]() mutable {
                    self->ReserveFrom(std::move(r));
                  });
      return;
    }
    while (r->next < r->keys.size()) {
      r->handoff.store(0, std::memory_order_release);
      After after;
      {
        const std::string& key = r->keys[r->next];
        Stripe& s = StripeOf(key);
        MutexLock lock(&s.mu);
        HomeKey& hk = s.home[key];
        hk.queue.push_back(Queued{
            .writer = r->writer, .sent_us = r->sent_us, .external = [self = shared_from_this(), r] {
              int waiting = 0;
              if (r->handoff.compare_exchange_strong(waiting, 1, std::memory_order_acq_rel)) {
                return;  // the loop goes on
              }
              r->next++;
              self->ReserveFrom(r);
            }});
        if (!hk.busy) RunHome(s, key, after);
      }
      for (auto& fn : after) fn();
      int waiting = 0;
      if (r->handoff.compare_exchange_strong(waiting, 2, std::memory_order_acq_rel)) return;
      r->next++;
    }
    r->ready();
  }

  void Release(const std::vector<std::string>& keys) {
    for (const std::string& key : keys) {
      After after;
      {
        Stripe& s = StripeOf(key);
        MutexLock lock(&s.mu);
        auto it = s.home.find(key);
        FLOE_CHECK(it != s.home.end() && it->second.busy && !it->second.queue.empty() &&
                   it->second.queue.front().external);
        it->second.queue.pop_front();
        it->second.busy = false;
        RunHome(s, key, after);
      }
      for (auto& fn : after) fn();
    }
  }

  void ReserveAll(std::function<void(std::vector<std::string>)> ready) {
    std::vector<std::string> keys;
    // From here no GET records a holder (it reads the count under its stripe's lock, which
    // this walk takes after the increment), so the walk sees every holder there will be.
    all_pending.fetch_add(1, std::memory_order_acq_rel);
    for (Stripe& s : stripes) {
      MutexLock lock(&s.mu);
      for (const auto& [k, hk] : s.home) {
        if (!hk.holders.empty() || !hk.queue.empty() || hk.busy) keys.push_back(k);
      }
    }
    std::sort(keys.begin(), keys.end());
    auto r = std::make_shared<Reservation>();
    auto shared = std::make_shared<std::vector<std::string>>(keys);
    r->keys = std::move(keys);
    r->ready = [shared, ready = std::move(ready)]() mutable { ready(std::move(*shared)); };
    ReserveFrom(std::move(r));
  }

  void ReleaseAll(const std::vector<std::string>& reserved) {
    Release(reserved);
    all_pending.fetch_sub(1, std::memory_order_acq_rel);
  }

  // ---- handlers ----

  Status CheckHome(std::string_view key, uint64_t map_version) {
    if (map_version != options.map_version || options.home(key) != options.self) {
      stats.wrong_home.fetch_add(1, std::memory_order_relaxed);
      return Status::WrongHome("not the home of this key under slot map version " +
                               std::to_string(map_version) +
                               " (ours: " + std::to_string(options.map_version) + ")");
    }
    return Status::OK();
  }

  // Rule L4: a home serves nothing until every lease its previous life may have granted has
  // lapsed (it cannot know the holders it had).
  Status CheckStarted() {
    if (!Started()) {
      return Status::Unavailable("home just started: waiting out the leases of its previous life");
    }
    return Status::OK();
  }

  Result<std::string> OnGet(NodeId from, std::string_view request) {
    FLOE_ASSIGN_OR_RETURN(internal::GetRequest q, internal::DecodeGetRequest(request));
    FLOE_RETURN_IF_ERROR(CheckHome(q.key, q.map_version));
    return Answer(from, q.key, q.sent_us);
  }

  // A GET's answer (R1, R4), for OnGet and HandOut.
  Result<std::string> Answer(NodeId from, std::string_view key_view, uint64_t sent_us) {
    FLOE_RETURN_IF_ERROR(CheckStarted());
    GetAnswer a;
    std::string key(key_view);
    Stripe& s = StripeOf(key);
    MutexLock lock(&s.mu);
    store::ValuePtr v = home_store.Get(key);
    if (v && v->IsExpired(NowMs())) v = nullptr;
    if (v) {
      if (options.export_value) {
        a.entry = options.export_value(*v);
        if (!a.entry) return Status::FailedPrecondition("this value is not handed out for caching");
      } else {
        a.entry = EntryOf(*v);
      }
      // Rule X1: the caller's values carry no stamps of ours. The last stamp taken, read under
      // the key's lock, is below the stamp of every write reserved after this answer and at
      // least that of every write released before it.
      a.stamp =
          options.home_store != nullptr ? next_stamp.load(std::memory_order_acquire) : v->version();
      auto it = s.home.find(key);
      const bool busy = (it != s.home.end() && it->second.busy) ||
                        all_pending.load(std::memory_order_acquire) > 0;
      // E1: a value within a lease of its expiry would never be served from a copy, so the
      // asker is not made a holder every change would wait for.
      const int64_t at = a.entry->expire_at_ms;
      const bool expiring =
          at != 0 && at - static_cast<int64_t>(options.lease_us / 1000) <= NowMs();
      // R4: not while a write is in progress. Nor to a node that has not echoed our clock
      // lately (it cannot hear us, so every write would wait out its lease).
      if (!busy && !expiring && from != options.self && loop.NowMicros() < ep.LeaseUntil(from)) {
        HomeKey& hk = s.home[key];
        auto h = std::find_if(hk.holders.begin(), hk.holders.end(),
                              [from](const Holder& x) { return x.node == from; });
        if (h == hk.holders.end()) {
          hk.holders.push_back(Holder{.node = from, .asked_us = sent_us});
        } else {
          h->asked_us = std::max(h->asked_us, sent_us);
        }
        a.cacheable = true;
      }
    }
    return internal::EncodeGetAnswer(a);
  }

  void OnWrite(NodeId from, std::string_view request, rpc::Reply reply) {
    Result<internal::WriteRequest> q = internal::DecodeWriteRequest(request);
    if (!q.ok()) return reply(q.status());
    if (Status st = CheckHome(q->key, q->map_version); !st.ok()) return reply(st);
    if (Status st = CheckStarted(); !st.ok()) return reply(st);
    HomeEnqueue(std::string(q->key), from, q->sent_us, q->op, std::string(q->args),
                [reply = std::move(reply)](Result<WriteAnswer> a) {
                  if (!a.ok()) return reply(a.status());
                  reply(internal::EncodeWriteAnswer(*a));
                });
  }

  Result<std::string> OnInvalidate(std::string_view request) {
    FLOE_ASSIGN_OR_RETURN(internal::InvalidateRequest q, internal::DecodeInvalidate(request));
    stats.invalidations_received.fetch_add(1, std::memory_order_relaxed);
    std::string key(q.key);
    Stripe& s = StripeOf(key);
    MutexLock lock(&s.mu);
    if (auto it = s.gets.find(key); it != s.gets.end()) {
      it->second.floor = std::max(it->second.floor, q.stamp);
    }
    if (auto it = s.writes.find(key); it != s.writes.end()) {
      it->second.max_inval = std::max(it->second.max_inval, q.stamp);
    }
    store::ValuePtr cur = cache.Get(key);
    if (cur && cur->version() != kPendingStamp && cur->version() < q.stamp) cache.Remove(key);
    return std::string();
  }

  // Rule L3. Excludes every install of a copy (they hold purge_mu shared) so that none slips
  // between the generation's bump and the purge.
  void OnLeaseLapse(NodeId home) {
    std::unique_lock<std::shared_mutex> purging(purge_mu);
    Gen(home).fetch_add(1, std::memory_order_acq_rel);
    std::vector<std::string> doomed;
    cache.ForEach([&](const store::Value& v) {
      if (v.version() != kPendingStamp && options.home(v.key()) == home) {
        doomed.emplace_back(v.key());
      }
    });
    for (const std::string& k : doomed) cache.Remove(k);
    stats.purges.fetch_add(1, std::memory_order_relaxed);
  }

  // A key read from elsewhere and then expired (or never written again) would keep its holder
  // list forever; the sweep drops the state of idle keys whose value is gone.
  void SweepHomeState() {
    const int64_t now_ms = NowMs();
    SweepDeadCopies(now_ms);
    for (Stripe& s : stripes) {
      MutexLock lock(&s.mu);
      for (auto it = s.home.begin(); it != s.home.end();) {
        const HomeKey& hk = it->second;
        if (!hk.busy && hk.queue.empty()) {
          store::ValuePtr v = home_store.Get(it->first);
          if (!v || v->IsExpired(now_ms)) {
            it = s.home.erase(it);
            continue;
          }
        }
        ++it;
      }
    }
  }

  // Copies no read will be served from again (rule E1: within a lease of their expiry) hold
  // memory and the cache's budget, and their home forgets their holders: the store's active
  // expiry removes them, a bounded step per sweep (it looks only at shards holding values with
  // an expiry, and removes a value only if it is still the current one).
  void SweepDeadCopies(int64_t now_ms) {
    const auto lease_ms = static_cast<int64_t>(options.lease_us / 1000);
    for (int step = 0; step < 64; step++) {
      cache.RemoveExpired(&dead_copy_cursor, 4096, now_ms + lease_ms);
      if (dead_copy_cursor == 0) break;  // a whole pass
    }
  }

  void ScheduleSweep() {
    std::weak_ptr<Impl> weak = weak_from_this();
    loop.PostAt(loop.NowMicros() + options.sweep_interval_us, [weak] {
      if (auto self = weak.lock()) {
        self->SweepHomeState();
        self->ScheduleSweep();
      }
    });
  }
};

// ---- built-in operations ----

namespace {

Result<Outcome> OpPut(const store::Value*, std::string_view args) {
  FLOE_ASSIGN_OR_RETURN(Entry e, internal::DecodeEntry(args));
  return Outcome{.kind = Outcome::Kind::kPut, .entry = std::move(e), .result = {}};
}

Result<Outcome> OpRemove(const store::Value* cur, std::string_view) {
  if (cur == nullptr) return Outcome{.kind = Outcome::Kind::kKeep, .entry = {}, .result = "0"};
  return Outcome{.kind = Outcome::Kind::kRemove, .entry = {}, .result = "1"};
}

Result<Outcome> OpPutIfAbsent(const store::Value* cur, std::string_view args) {
  if (cur != nullptr) return Outcome{.kind = Outcome::Kind::kKeep, .entry = {}, .result = "0"};
  FLOE_ASSIGN_OR_RETURN(Entry e, internal::DecodeEntry(args));
  return Outcome{.kind = Outcome::Kind::kPut, .entry = std::move(e), .result = "1"};
}

Result<Outcome> OpCompareAndPut(const store::Value* cur, std::string_view args) {
  FLOE_ASSIGN_OR_RETURN(internal::CompareAndPutArgs a, internal::DecodeCompareAndPut(args));
  if (!SameValue(cur, a.expected)) {
    return Outcome{.kind = Outcome::Kind::kKeep, .entry = {}, .result = "0"};
  }
  return Outcome{.kind = Outcome::Kind::kPut, .entry = std::move(a.entry), .result = "1"};
}

Result<Outcome> OpIncrement(const store::Value* cur, std::string_view args) {
  int64_t delta = 0, value = 0;
  auto [p, ec] = std::from_chars(args.data(), args.data() + args.size(), delta);
  if (ec != std::errc() || p != args.data() + args.size()) {
    return Status::InvalidArgument("increment is not an integer");
  }
  if (cur != nullptr) {
    std::string_view s = cur->payload();
    auto [q, ec2] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec2 != std::errc() || q != s.data() + s.size()) {
      return Status::InvalidArgument("value is not an integer or out of range");
    }
  }
  if (__builtin_add_overflow(value, delta, &value)) {
    return Status::OutOfRange("increment or decrement would overflow");
  }
  std::string text = std::to_string(value);
  Entry e{.type = cur ? cur->type() : uint16_t{0},
          .expire_at_ms = cur ? cur->expire_at_ms() : 0,
          .payload = text};
  return Outcome{.kind = Outcome::Kind::kPut, .entry = std::move(e), .result = std::move(text)};
}

}  // namespace

// ---- the public face ----

Dkv::Dkv(rpc::Endpoint& endpoint, Options options)
    : impl_(std::make_shared<Impl>(endpoint, std::move(options))) {
  impl_->ops[kOpPut] = OpPut;
  impl_->ops[kOpRemove] = OpRemove;
  impl_->ops[kOpPutIfAbsent] = OpPutIfAbsent;
  impl_->ops[kOpCompareAndPut] = OpCompareAndPut;
  impl_->ops[kOpIncrement] = OpIncrement;
  impl_->ScheduleSweep();
  std::weak_ptr<Impl> weak = impl_;
  // Inline: none of them blocks (a write that waits answers later through `reply`).
  endpoint.Register(
      kMethodGet, 2,
      [weak](NodeId from, std::string_view req) -> Result<std::string> {
        auto self = weak.lock();
        if (!self) return Status::Unavailable("shutting down");
        return self->OnGet(from, req);
      },
      /*runs_inline=*/true);
  endpoint.RegisterAsync(
      kMethodWrite, 1,
      [weak](NodeId from, std::string_view req, rpc::Reply reply) {
        auto self = weak.lock();
        if (!self) return reply(Status::Unavailable("shutting down"));
        self->OnWrite(from, req, std::move(reply));
      },
      /*runs_inline=*/true);
  endpoint.Register(
      kMethodInvalidate, 3,
      [weak](NodeId, std::string_view req) -> Result<std::string> {
        auto self = weak.lock();
        if (!self) return Status::Unavailable("shutting down");
        return self->OnInvalidate(req);
      },
      /*runs_inline=*/true);
}

Dkv::~Dkv() = default;

std::function<void(NodeId)> Dkv::MakeLeaseHook(Slot slot) {
  return [slot](NodeId home) {
    if (Dkv* d = slot->load(std::memory_order_acquire)) d->OnLeaseLapse(home);
  };
}

void Dkv::OnLeaseLapse(NodeId home) { impl_->OnLeaseLapse(home); }

void Dkv::RegisterOp(uint16_t op, AtomicFn fn) {
  FLOE_CHECK(op >= kFirstUserOp);
  impl_->ops[op] = std::move(fn);
}

void Dkv::Get(std::string_view key, ValueDone done) { impl_->Get(key, std::move(done)); }

Result<std::string> Dkv::WriteBlocking(std::string_view key, uint16_t op, std::string args) {
  return impl_->WriteBlocking(key, op, std::move(args));
}

Result<std::string> Dkv::PutVolatileBlocking(std::string_view key, const Entry& entry) {
  return impl_->WriteBlocking(key, kOpPut, internal::EncodeEntry(entry));
}

Result<store::ValuePtr> Dkv::GetBlocking(std::string_view key) { return impl_->GetBlocking(key); }

std::optional<store::ValuePtr> Dkv::TryGetLocal(std::string_view key) {
  return impl_->TryGetLocal(key);
}

void Dkv::PutVolatile(std::string_view key, Entry entry, WriteDone done) {
  impl_->Write(key, kOpPut, internal::EncodeEntry(entry), std::move(done), false, nullptr);
}

void Dkv::Remove(std::string_view key, WriteDone done) {
  impl_->Write(key, kOpRemove, {}, std::move(done), false, nullptr);
}

void Dkv::PutIfAbsent(std::string_view key, Entry entry, WriteDone done) {
  impl_->Write(key, kOpPutIfAbsent, internal::EncodeEntry(entry), std::move(done), false, nullptr);
}

void Dkv::CompareAndPut(std::string_view key, std::optional<Entry> expected, Entry entry,
                        WriteDone done) {
  impl_->Write(key, kOpCompareAndPut, internal::EncodeCompareAndPut(expected, entry),
               std::move(done), false, nullptr);
}

void Dkv::Atomic(std::string_view key, uint16_t op, std::string args, WriteDone done) {
  impl_->Write(key, op, std::move(args), std::move(done), false, nullptr);
}

Status Dkv::Put(std::string_view key, Entry entry) {
  std::string args = internal::EncodeEntry(entry);
  Status refused;
  impl_->Write(
      key, kOpPut, std::move(args),
      [&refused](Result<std::string> r) {
        // Runs here, at once, only when the write is refused; later answers find `refused` gone,
        // so the callback is dropped before the write is queued (below).
        refused = r.status();
      },
      true, &entry, nullptr, /*refuse_only=*/true);
  return refused;
}

uint64_t Dkv::OutstandingPuts() const {
  return impl_->outstanding_puts.load(std::memory_order_acquire);
}

void Dkv::Fence() {
  // Puts answer on other threads; poll with a short sleep (a fence ends bulk loads, not a
  // latency-critical path).
  while (OutstandingPuts() != 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
}

const Stats& Dkv::stats() const { return impl_->stats; }
size_t Dkv::HomeSize() const { return impl_->home_store.Size(); }
size_t Dkv::CacheSize() const { return impl_->cache.Size(); }
size_t Dkv::CacheBytes() const { return impl_->cache.MemoryUsed(); }

bool Dkv::ApplyIfFree(const std::vector<std::string_view>& keys, const std::function<void()>& apply,
                      NodeId writer, uint64_t sent_us) {
  return impl_->ApplyIfFree(keys, apply, writer, sent_us);
}
void Dkv::Reserve(std::vector<std::string> keys, std::function<void()> ready, NodeId writer,
                  uint64_t sent_us) {
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  auto r = std::make_shared<Impl::Reservation>();
  r->keys = std::move(keys);
  r->writer = writer;
  r->sent_us = sent_us;
  r->ready = std::move(ready);
  impl_->ReserveFrom(std::move(r));
}
void Dkv::Release(const std::vector<std::string>& keys) {
  if (std::is_sorted(keys.begin(), keys.end()) &&
      std::adjacent_find(keys.begin(), keys.end()) == keys.end()) {
    return impl_->Release(keys);
  }
  std::vector<std::string> once(keys);
  std::sort(once.begin(), once.end());
  once.erase(std::unique(once.begin(), once.end()), once.end());
  impl_->Release(once);
}
void Dkv::ReserveAll(std::function<void(std::vector<std::string>)> ready) {
  impl_->ReserveAll(std::move(ready));
}
void Dkv::ReleaseAll(const std::vector<std::string>& reserved) { impl_->ReleaseAll(reserved); }
bool Dkv::Serving() { return impl_->Started(); }

Fetch Dkv::StartFetch(std::string_view key) {
  Impl::Miss m = impl_->StartMiss(key, /*encode=*/false);
  return Fetch{.home = m.home, .gen = m.gen, .key = std::move(m.key)};
}

void Dkv::FinishFetch(const Fetch& fetch, Result<std::string> answer) {
  impl_->OnGetAnswer(fetch.key, fetch.home, fetch.gen, std::move(answer),
                     [](Result<store::ValuePtr>) {});
}

Result<std::string> Dkv::HandOut(NodeId to, std::string_view key, uint64_t asked_us) {
  if (impl_->options.home(key) != impl_->options.self) {
    return Status::WrongHome("not the home of this key");
  }
  return impl_->Answer(to, key, asked_us);
}

void Dkv::BeginOwnWrite(std::string_view key) {
  Impl::Stripe& s = impl_->StripeOf(key);
  MutexLock lock(&s.mu);
  s.own_writes[std::string(key)]++;
  store::ValuePtr cur = impl_->cache.Get(key);
  if (cur && cur->version() != kPendingStamp) impl_->cache.Remove(key);
}

void Dkv::EndOwnWrite(std::string_view key) {
  Impl::Stripe& s = impl_->StripeOf(key);
  MutexLock lock(&s.mu);
  const std::string k(key);
  auto it = s.own_writes.find(k);
  if (it == s.own_writes.end()) return;
  if (--it->second == 0) s.own_writes.erase(it);
  // A GET in flight now may have been answered before the write committed: not installed.
  if (auto g = s.gets.find(k); g != s.gets.end()) g->second.floor = kPendingStamp;
}

void Dkv::TrimCache() {
  std::vector<std::string> keys;
  impl_->cache.ForEach([&](const store::Value& v) { keys.emplace_back(v.key()); });
  for (const std::string& k : keys) {
    Impl::Stripe& s = impl_->StripeOf(k);
    MutexLock lock(&s.mu);
    store::ValuePtr cur = impl_->cache.Get(k);
    if (cur && cur->version() != kPendingStamp) impl_->cache.Remove(k);
  }
}

}  // namespace floe::dkv
