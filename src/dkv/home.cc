// The home's side of writes (rule W2: one write in progress per key, every copy invalidated
// before the writer's answer) and the writes the caller applies itself (rules X1-X4).

#include "dkv/internal/impl.h"

namespace floe::dkv {

// ---- writes: the home's side (rule W2) ----

void Dkv::Impl::HomeEnqueue(const std::string& key, NodeId writer, uint64_t sent_us, uint16_t op,
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

void Dkv::Impl::RunHome(Stripe& s, const std::string& key, After& after) FLOE_REQUIRES(s.mu) {
  auto hit = s.home.find(key);
  while (hit != s.home.end() && !hit->second.queue.empty() && !hit->second.busy) {
    HomeKey& hk = hit->second;
    Queued& q = hk.queue.front();
    if (q.external) {
      // Rule X2: invalidate every holder, then hand the key to the caller, still busy. What
      // may throw (memory) comes before the key is marked busy: a throw leaves it as it was,
      // with this entry at the front for ReserveFrom to take back (marked busy first, the key
      // waited for a round nothing had started).
      auto round = std::make_shared<Round>();
      round->key = key;
      round->external = true;
      std::vector<NodeId> targets;
      for (const Holder& x : hk.holders) {
        if (x.node == options.self) continue;
        if (x.node == q.writer && x.asked_us < q.sent_us) continue;  // X4: dropped already
        targets.push_back(x.node);
      }
      After sends;
      sends.reserve(targets.size());
      for (NodeId t : targets) {
        sends.push_back([self = shared_from_this(), t, round] { self->SendInvalidate(t, round); });
      }
      if (targets.empty()) sends.push_back(q.external);
      after.reserve(after.size() + sends.size());
      // Nothing below throws.
      round->stamp = next_stamp.fetch_add(1, std::memory_order_acq_rel) + 1;
      round->remaining.store(targets.size());
      hk.busy = true;
      if (targets.empty()) hk.holders.clear();
      for (auto& fn : sends) after.push_back(std::move(fn));
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
      after.push_back(
          [reply = std::move(q.reply), ans = std::move(ans)]() mutable { reply(std::move(ans)); });
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

void Dkv::Impl::Commit([[maybe_unused]] Stripe& s, HomeKey& hk, Round& round, After& after)
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
    if (q.writer != options.self && round.outcome.entry.payload.size() <= options.writer_copy_max) {
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

void Dkv::Impl::SendInvalidate(NodeId target, std::shared_ptr<Round> round) {
  stats.invalidations_sent.fetch_add(1, std::memory_order_relaxed);
  auto self = shared_from_this();
  // L2: the holder did not answer: revoke its lease and wait it out.
  auto wait_out_lease = [self, target, round] {
    self->stats.lease_waits.fetch_add(1, std::memory_order_relaxed);
    const uint64_t bound = self->ep.RevokeLease(target);
    self->loop.PostAt(bound, [self, target, round] {
      self->ep.RestoreLease(target);
      self->InvalidationDone(round);
    });
  };
  try {
    ep.CallAsync(target, kMethodInvalidate,
                 internal::EncodeInvalidate({.key = round->key, .stamp = round->stamp}),
                 options.invalidate_patience_us,
                 [self, round, wait_out_lease](Result<std::string> r) {
                   if (r.ok()) return self->InvalidationDone(round);
                   wait_out_lease();
                 });
  } catch (const std::bad_alloc&) {
    // The call could not be made (memory): as one unanswered, the lease is waited out; the
    // round never stays short of an answer, its key busy for good.
    wait_out_lease();
  }
}

void Dkv::Impl::InvalidationDone(const std::shared_ptr<Round>& round) {
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

// ---- writes the caller applies itself (rules X1-X4) ----

bool Dkv::Impl::Started() {
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

bool Dkv::Impl::Adopted(const std::string_view* key, uint64_t* until) {
  if (!adopting.load(std::memory_order_acquire)) return false;
  const uint64_t now = loop.NowMicros();
  MutexLock lock(&adopt_mu);
  std::erase_if(adoptions, [now](const Adoption& a) { return a.until_us <= now; });
  if (adoptions.empty()) adopting.store(false, std::memory_order_release);
  bool covered = false;
  for (const Adoption& a : adoptions) {
    if (key == nullptr || a.covers(*key)) {
      covered = true;
      *until = std::max(*until, a.until_us);
    }
  }
  return covered;
}

bool Dkv::Impl::Free(const Stripe& s, const std::string& key, NodeId writer, uint64_t sent_us)
    FLOE_REQUIRES(s.mu) {
  auto it = s.home.find(key);
  if (it == s.home.end()) return true;
  const HomeKey& hk = it->second;
  if (!hk.queue.empty() || hk.busy) return false;
  return std::all_of(hk.holders.begin(), hk.holders.end(),
                     [&](const Holder& x) { return x.node == writer && x.asked_us < sent_us; });
}

bool Dkv::Impl::ApplyIfFree(const std::vector<std::string_view>& keys,
                            const std::function<void()>& apply, NodeId writer,
                            uint64_t sent_us) FLOE_NO_THREAD_SAFETY_ANALYSIS {
  if (!Started()) return false;
  if (adopting.load(std::memory_order_relaxed)) [[unlikely]] {
    uint64_t until = 0;
    for (std::string_view k : keys) {
      if (Adopted(&k, &until)) return false;  // W13: the reservation waits it out
    }
  }
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
  bool applying = false;
  try {
    // Key copies allocate under the locks: whatever throws here unlocks them (below).
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
      internal::applying_here++;
      applying = true;
      apply();
      applying = false;
      internal::applying_here--;
    }
  } catch (...) {
    if (applying) internal::applying_here--;
    for (size_t i = n; i-- > 0;) stripes[idx[i]].mu.Unlock();
    throw;
  }
  for (size_t i = n; i-- > 0;) stripes[idx[i]].mu.Unlock();
  return free;
}

void Dkv::Impl::ReserveFrom(std::shared_ptr<Reservation> r, bool first_call) {
  if (!Started()) {
    // Rule L4: copies a previous life of this node handed out may still be served.
    loop.PostAt(std::min(serve_after, loop.NowMicros() + 10'000),
                [self = shared_from_this(), r = std::move(r)]() mutable {
                  self->ReserveFrom(std::move(r), /*first_call=*/false);
                });
    return;
  }
  // W13: keys taken over from a life that ended wait until its copies lapsed (an adoption has
  // no early end: tried again when it ends). ReserveAll's change may touch any key: it waits
  // out every adoption before its first key. Throws only before anything of the key is held.
  auto adopted = [this, &r](const std::string_view* key) {
    uint64_t until = 0;
    if (!adopting.load(std::memory_order_relaxed) || !Adopted(key, &until)) [[likely]] {
      return false;
    }
    loop.PostAt(until, [self = shared_from_this(), r]() mutable {
      self->ReserveFrom(std::move(r), /*first_call=*/false);
    });
    return true;
  };
  if (r->every_key && r->next == 0 && adopted(nullptr)) return;
  while (r->next < r->keys.size()) {
    r->handoff.store(0, std::memory_order_release);
    After after;
    const std::string& key = r->keys[r->next];
    try {
      if (!r->every_key) {
        const std::string_view k = key;
        if (adopted(&k)) return;
      }
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
            self->ReserveFrom(r, /*first_call=*/false);
          }});
      if (!hk.busy) {
        try {
          RunHome(s, key, after);
        } catch (...) {
          // RunHome threw before it marked the key busy: this entry, the only one, goes.
          hk.queue.pop_back();
          if (hk.queue.empty() && hk.holders.empty() && !hk.busy) s.home.erase(key);
          throw;
        }
      }
    } catch (...) {
      // Memory ran out before this key was queued, or RunHome took its entry back: nothing of
      // this key is held (the key's state is as it was).
      if (first_call) {
        // The caller's thread, and no key waited yet: the keys taken (each granted at once) are
        // released and the caller hears the exception; nothing stays reserved.
        for (size_t i = 0; i < r->next; i++) ReleaseOne(r->keys[i]);
        throw;
      }
      // A thread that granted the key before (a Release, an invalidation's answer) must not
      // hear it: this key is tried again shortly, the keys before it staying reserved.
      try {
        loop.PostAt(loop.NowMicros() + 10'000, [self = shared_from_this(), r]() mutable {
          self->ReserveFrom(std::move(r), /*first_call=*/false);
        });
        FLOE_LOG_WARN("reserving a key ran out of memory: tried again in 10 ms");
      } catch (...) {
        FLOE_LOG_ERROR("reserving a key ran out of memory twice: its change waits for good");
      }
      return;
    }
    for (auto& fn : after) fn();
    int waiting = 0;
    if (r->handoff.compare_exchange_strong(waiting, 2, std::memory_order_acq_rel)) return;
    r->next++;
  }
  r->ready();
}

void Dkv::Impl::Release(const std::vector<std::string>& keys) {
  for (const std::string& key : keys) ReleaseOne(key);
}

void Dkv::Impl::ReleaseOne(const std::string& key) {
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

void Dkv::Impl::ReserveAll(std::function<void(std::vector<std::string>)> ready) {
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
  r->every_key = true;
  auto shared = std::make_shared<std::vector<std::string>>(keys);
  r->keys = std::move(keys);
  r->ready = [shared, ready = std::move(ready)]() mutable { ready(std::move(*shared)); };
  try {
    ReserveFrom(std::move(r), /*first_call=*/true);
  } catch (...) {
    all_pending.fetch_sub(1, std::memory_order_acq_rel);  // nothing stays reserved
    throw;
  }
}

void Dkv::Impl::ReleaseAll(const std::vector<std::string>& reserved) {
  Release(reserved);
  all_pending.fetch_sub(1, std::memory_order_acq_rel);
}

}  // namespace floe::dkv
