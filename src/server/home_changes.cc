// Rule C7 (docs/cluster.md, "Reads from cached copies"): a change at a key's home waits until no
// other node holds a copy of its keys. A change that is free runs at once (ApplyIfFree); else
// the keys are reserved (the holders' copies invalidated, or their leases waited out), the
// client's reply is deferred, and the change runs when the reservation is ready. A split
// command's local part waits the same way without holding a thread; a client that leaves
// meanwhile releases its keys.

#include <algorithm>
#include <future>

#include "server/internal/cluster_node.h"
#include "server/internal/command.h"

namespace floe::server {

using internal::CommandSpec;

bool Session::RunAtHome(internal::CommandContext& ctx) {
  internal::ClusterNode* node = engine_->cluster();
  const CommandSpec* spec = ctx.spec;
  if (node == nullptr || home_cleared_ || ctx.pinned != nullptr) {
    RunHandler(ctx);
    return true;
  }
  // The keys the command may change: a write's own; for EXEC, those of the queued writes.
  // A write that names no key (FLUSHALL, FLUSHDB) changes them all.
  std::vector<std::string_view> keys;
  bool all = false;
  auto add = [&](const CommandSpec* s, const std::vector<std::string_view>& args) {
    if (s == nullptr || (s->flags & internal::kWrite) == 0) return;
    // FRAME.FILTER and FRAME.SELECT change no key where they run: they read their source, and
    // their destination's header is stored by PUT_HEADER, which clears its copies itself
    // (docs/frames_cluster.md, D14). Cleared here, they could run from a reservation, inline.
    if (s->handler == internal::CmdFrameFilter || s->handler == internal::CmdFrameSelect) return;
    const size_t before = keys.size();
    internal::CommandKeys(*s, args, &keys);
    if (keys.size() == before) all = true;
  };
  std::vector<std::vector<std::string_view>> queued_views;
  if (spec->handler == internal::CmdExec) {
    if (in_multi_) {
      queued_views.reserve(queued_.size());
      for (const auto& q : queued_) {
        queued_views.emplace_back(q.begin(), q.end());
        add(internal::ResolveCommand(queued_views.back()), queued_views.back());
      }
    }
  } else {
    add(spec, ctx.args);
  }
  if (keys.empty() && !all) {
    RunHandler(ctx);
    return true;
  }
  dkv::Dkv& d = node->dkv();
  if (!all) {
    home_cleared_ = true;
    const bool ran = d.ApplyIfFree(
        keys, [&] { RunHandler(ctx); }, origin_node_, origin_sent_us_);
    home_cleared_ = false;
    if (ran) return true;
  }
  auto r = std::make_shared<HomeReservation>();
  r->all = all;
  r->writer = origin_node_;
  r->sent_us = origin_sent_us_;
  if (!all) {
    r->keys.reserve(keys.size());
    for (std::string_view k : keys) r->keys.emplace_back(k);
    std::sort(r->keys.begin(), r->keys.end());
    r->keys.erase(std::unique(r->keys.begin(), r->keys.end()), r->keys.end());
  }
  if (!may_defer_ && running_parts_ && sink_) {
    // A part of a split or fanned-out command: SendParts reserves its keys and runs it later,
    // as the parts other nodes run (this thread must not wait: a change holding one of the
    // keys may need it to finish).
    part_reservation_ = std::move(r);
    return false;  // not run: counted when it runs
  }
  if (!may_defer_) {
    // No sink (tests, tools): a part waits here until the holders acknowledged (about a round
    // trip) or their leases lapsed (rule L2's bound).
    std::promise<void> ready;
    std::future<void> reserved = ready.get_future();
    Reserve(d, r, [&ready] { ready.set_value(); });
    reserved.get();
    home_cleared_ = true;
    RunHandler(ctx);
    home_cleared_ = false;
    r->Release(d);
    return true;
  }
  std::function<void(std::string)> done = BeginDeferred();
  deferred_bytes_ = 0;
  HomeChange& change = home_changes_[tickets_];
  change.args.assign(ctx.args.begin(), ctx.args.end());
  change.reservation = r;
  Reserve(d, std::move(r), [done] { done(std::string()); });
  return false;
}

void Session::HomeReservation::Release(dkv::Dkv& d) {
  if (all) {
    d.ReleaseAll(keys);
  } else {
    d.Release(keys);
  }
}

void Session::Reserve(dkv::Dkv& d, std::shared_ptr<HomeReservation> r,
                      std::function<void()> ready) {
  // The session may be gone when the keys are ready (its client left): then they are released
  // at once, or the keys would stay reserved for ever.
  auto on_ready = [&d, r, ready = std::move(ready)] {
    {
      MutexLock lock(&r->mu);
      if (r->abandoned) {
        r->Release(d);
        return;
      }
      r->ready = true;
    }
    ready();
  };
  if (r->all) {
    d.ReserveAll([r, on_ready](std::vector<std::string> keys) {
      r->keys = std::move(keys);  // before `ready` is set: read by whoever releases
      on_ready();
    });
  } else {
    d.Reserve(r->keys, std::move(on_ready), r->writer, r->sent_us);
  }
}

void Session::AbandonHomeChanges() {
  std::vector<std::shared_ptr<HomeReservation>> all;
  for (auto& [ticket, change] : home_changes_) all.push_back(change.reservation);
  for (auto& [ticket, change] : part_changes_) all.push_back(change.reservation);
  home_changes_.clear();
  part_changes_.clear();
  for (const auto& held : all) {
    HomeReservation& r = *held;
    MutexLock lock(&r.mu);
    if (r.ready) {
      if (engine_->cluster() != nullptr) r.Release(engine_->cluster()->dkv());
    } else {
      r.abandoned = true;
    }
  }
}

}  // namespace floe::server
