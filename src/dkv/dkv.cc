// The distributed store: homes, cached copies, invalidation before acknowledgement, leases
// (docs/coherence.md). This file: reads (rules R1-R4, L1), the writer's side of writes (W1, W3,
// W4), and the public face; the rest is in home.cc and handlers.cc.

#include "dkv/internal/impl.h"

namespace floe::dkv {

// ---- reads ----

std::optional<store::ValuePtr> Dkv::Impl::TryGetLocal(std::string_view key) {
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

Dkv::Impl::Miss Dkv::Impl::StartMiss(std::string_view key, bool encode) {
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

void Dkv::Impl::Get(std::string_view key, ValueDone done) {
  if (std::optional<store::ValuePtr> v = TryGetLocal(key)) return done(std::move(*v));
  Miss m = StartMiss(key);
  const NodeId h = m.home;
  std::string request = std::move(m.request);  // before `m` moves into the callback
  ep.CallAsync(
      h, kMethodGet, std::move(request), options.timeout_us,
      [self = shared_from_this(), m = std::move(m), done = std::move(done)](Result<std::string> r) {
        self->OnGetAnswer(m.key, m.home, m.gen, std::move(r), done);
      });
}

Result<store::ValuePtr> Dkv::Impl::GetBlocking(std::string_view key) {
  if (std::optional<store::ValuePtr> v = TryGetLocal(key)) return std::move(*v);
  Miss m = StartMiss(key);
  // A blocking call polls the socket itself: the answer needs no hop through the loop.
  Result<std::string> r = ep.Call(m.home, kMethodGet, std::move(m.request), options.timeout_us);
  Result<store::ValuePtr> out = Status::Internal("no answer");
  OnGetAnswer(m.key, m.home, m.gen, std::move(r),
              [&out](Result<store::ValuePtr> v) { out = std::move(v); });
  return out;
}

void Dkv::Impl::OnGetAnswer(const std::string& key, NodeId h, uint64_t gen, Result<std::string> r,
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
      // And only from the key's home now (O3): a copy of a home the routes left is checked
      // against the new home's lease, which says nothing of it.
      if (s.writes.count(key) == 0 && s.own_writes.count(key) == 0 && a->stamp >= floor &&
          Gen(h).load(std::memory_order_acquire) == gen && options.home(key) == h &&
          LeaseValid(h)) {
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

void Dkv::Impl::Write(std::string_view key, uint16_t op, std::string args, WriteDone done,
                      bool plain, const Entry* pending, bool* send_myself, bool refuse_only) {
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

Result<std::string> Dkv::Impl::WriteBlocking(std::string_view key, uint16_t op, std::string args) {
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

void Dkv::Impl::PrepareFront(const std::string& key, uint16_t* op, std::string* args) {
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

void Dkv::Impl::SendFront(const std::string& key) {
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

void Dkv::Impl::OnWriteAnswer(const std::string& key, Result<WriteAnswer> a) {
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
bool Dkv::InApply() { return internal::applying_here > 0; }
void Dkv::ChangeHomes(const std::function<bool(std::string_view key)>& moved,
                      const std::function<void()>& publish) {
  Impl& im = *impl_;
  std::unique_lock<std::shared_mutex> purging(im.purge_mu);
  // No answer of a request sent before this call installs a copy (each checks its home's
  // generation under purge_mu, shared).
  for (auto& g : im.gens) g.fetch_add(1, std::memory_order_acq_rel);
  std::vector<std::string> doomed;
  im.cache.ForEach([&](const store::Value& v) {
    if (moved(v.key())) doomed.emplace_back(v.key());
  });
  for (const std::string& k : doomed) im.cache.Remove(k);
  im.stats.purges.fetch_add(1, std::memory_order_relaxed);
  publish();
}

void Dkv::WaitOutCopies(std::function<bool(std::string_view key)> covers, uint64_t wait_us) {
  Impl& im = *impl_;
  const uint64_t until = im.loop.NowMicros() + wait_us;
  MutexLock lock(&im.adopt_mu);
  im.adoptions.push_back({.covers = std::move(covers), .until_us = until});
  im.adopting.store(true, std::memory_order_release);
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
  impl_->ReserveFrom(std::move(r), /*first_call=*/true);
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
