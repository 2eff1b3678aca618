// The RPC handlers of the distributed store (GET, WRITE, INVALIDATE), lease lapses (rule L3)
// and the periodic sweep of idle home state and dead copies.

#include "dkv/internal/impl.h"

namespace floe::dkv {

Status Dkv::Impl::CheckHome(std::string_view key, uint64_t map_version) {
  if (map_version != options.map_version || options.home(key) != options.self) {
    stats.wrong_home.fetch_add(1, std::memory_order_relaxed);
    return Status::WrongHome("not the home of this key under slot map version " +
                             std::to_string(map_version) +
                             " (ours: " + std::to_string(options.map_version) + ")");
  }
  return Status::OK();
}

Status Dkv::Impl::CheckStarted() {
  if (!Started()) {
    return Status::Unavailable("home just started: waiting out the leases of its previous life");
  }
  return Status::OK();
}

Result<std::string> Dkv::Impl::OnGet(NodeId from, std::string_view request) {
  FLOE_ASSIGN_OR_RETURN(internal::GetRequest q, internal::DecodeGetRequest(request));
  FLOE_RETURN_IF_ERROR(CheckHome(q.key, q.map_version));
  return Answer(from, q.key, q.sent_us);
}

Result<std::string> Dkv::Impl::Answer(NodeId from, std::string_view key_view, uint64_t sent_us) {
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
    const bool busy =
        (it != s.home.end() && it->second.busy) || all_pending.load(std::memory_order_acquire) > 0;
    // E1: a value within a lease of its expiry would never be served from a copy, so the
    // asker is not made a holder every change would wait for.
    const int64_t at = a.entry->expire_at_ms;
    const bool expiring = at != 0 && at - static_cast<int64_t>(options.lease_us / 1000) <= NowMs();
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

void Dkv::Impl::OnWrite(NodeId from, std::string_view request, rpc::Reply reply) {
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

Result<std::string> Dkv::Impl::OnInvalidate(std::string_view request) {
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

void Dkv::Impl::OnLeaseLapse(NodeId home) {
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

void Dkv::Impl::SweepHomeState() {
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
  stats.home_sweeps.fetch_add(1, std::memory_order_relaxed);
}

void Dkv::Impl::SweepDeadCopies(int64_t now_ms) {
  const auto lease_ms = static_cast<int64_t>(options.lease_us / 1000);
  for (int step = 0; step < 64; step++) {
    cache.RemoveExpired(&dead_copy_cursor, 4096, now_ms + lease_ms);
    if (dead_copy_cursor == 0) break;  // a whole pass
  }
}

void Dkv::Impl::ScheduleSweep() {
  std::weak_ptr<Impl> weak = weak_from_this();
  loop.PostAt(loop.NowMicros() + options.sweep_interval_us, [weak] {
    if (auto self = weak.lock()) {
      self->SweepHomeState();
      self->ScheduleSweep();
    }
  });
}

}  // namespace floe::dkv
