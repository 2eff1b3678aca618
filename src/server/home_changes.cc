// Rule C7 (docs/cluster.md, "Reads from cached copies"): a change at a key's home waits until no
// other node holds a copy of its keys. A change that is free runs at once (ApplyIfFree); else
// the keys are reserved (the holders' copies invalidated, or their leases waited out), the
// client's reply is deferred, and the change runs when the reservation is ready. A split
// command's local part waits the same way without holding a thread; a client that leaves
// meanwhile releases its keys.

#include <algorithm>
#include <exception>
#include <future>
#include <map>

#include "cluster/cluster.h"
#include "replica/replica.h"
#include "server/internal/cluster_node.h"
#include "server/internal/command.h"
#include "server/internal/replica_store.h"

namespace floe::server {

using internal::CommandSpec;

void Session::HomeKeys(const internal::CommandContext& ctx, std::vector<std::string_view>* keys,
                       bool* all, bool written) const {
  // FRAME.FILTER, FRAME.SELECT and FRAME.GROUPBY change no key where they run: they read their
  // source, and their destination's header is stored by PUT_HEADER, which clears its copies
  // itself (docs/frames_cluster.md, D14). Cleared here, they could run from a reservation, inline.
  auto is_write = [](const CommandSpec* s) {
    return s != nullptr && (s->flags & internal::kWrite) != 0 &&
           s->handler != internal::CmdFrameFilter && s->handler != internal::CmdFrameSelect &&
           s->handler != internal::CmdFrameGroupBy;
  };
  if (ctx.spec->handler != internal::CmdExec) {
    if (!is_write(ctx.spec)) return;
    // The common case: no copy.
    if (written) {
      internal::WrittenKeys(*ctx.spec, ctx.args, keys);
    } else {
      internal::CommandKeys(*ctx.spec, ctx.args, keys);
    }
    if (keys->empty()) *all = true;
    return;
  }
  if (!in_multi_) return;
  // CommandKeys replaces what it is given: each queued write's keys are appended (all of them,
  // not only the last's).
  std::vector<std::string_view> one;
  for (const auto& q : queued_) {
    const std::vector<std::string_view> views(q.begin(), q.end());
    const CommandSpec* s = internal::ResolveCommand(views);
    if (!is_write(s)) continue;
    if (written) {
      internal::WrittenKeys(*s, views, &one);
    } else {
      internal::CommandKeys(*s, views, &one);
    }
    if (one.empty()) *all = true;
    keys->insert(keys->end(), one.begin(), one.end());
  }
}

// S11: with min-replicas-to-write N, a write whose slots have fewer than N in-sync backups
// is refused before it runs (Redis's NOREPLICAS). A flush (no keys) needs it of every slot
// routed to this member. Each part of a split command (MSET, DEL across homes) is checked at
// its own home, so one home may refuse its part while another applies its own.
bool Session::EnoughBackups(const internal::CommandContext& ctx, int64_t min) const {
  const internal::Replication* r = engine_->replication();
  if (r == nullptr || capturing_) return true;  // not a member; in EXEC, EXEC checked its keys
  std::vector<std::string_view> keys;
  bool all = false;
  HomeKeys(ctx, &keys, &all, /*written=*/true);
  const replica::Sender& sender = r->sender();
  for (std::string_view k : keys) {
    if (sender.in_sync(cluster::KeySlot(k)) < min) return false;
  }
  if (all) {
    // Every slot routed here, the Sender's or not (a slot it stopped, or owned with no backup,
    // has none in sync); a member that is home to no slot flushes nothing and is not refused.
    const internal::ClusterNode* node = engine_->cluster();
    if (node == nullptr) return true;
    for (uint16_t slot = 0; slot < cluster::kSlots; slot++) {
      if (node->Home(slot) == node->self() && sender.in_sync(slot) < min) return false;
    }
  }
  return true;
}

// A command refused at its home before it ran. An EXEC that is refused ends its transaction
// as Redis's execCommandAbort does (the queued commands never run, and the session, a proxy's
// too, leaves MULTI): EXECABORT with the reason.
void Session::RefuseAtHome(internal::CommandContext& ctx, std::string_view why) {
  if (ctx.spec->handler == internal::CmdExec && in_multi_ && !capturing_) {
    DiscardTransaction();
    ctx.Error("EXECABORT Transaction discarded because of: " + std::string(why));
    return;
  }
  ctx.Error(std::string(why));
}

void Session::RunHandlerAtHome(internal::CommandContext& ctx) {
  if (const int64_t min = engine_->min_replicas_to_write(); min > 0) [[unlikely]] {
    bool enough = false;
    try {
      enough = EnoughBackups(ctx, min);
    } catch (const std::bad_alloc&) {
      return RefuseAtHome(ctx, "OOM command not allowed when used memory > 'maxmemory'.");
    }
    if (!enough) return RefuseAtHome(ctx, "NOREPLICAS Not enough good replicas to write.");
  }
  const internal::Replication* r = engine_->replication();
  if (r == nullptr || !r->any_owned()) [[likely]] {
    RunHandler(ctx);
    return;
  }
  RunCaptured(ctx);
}

// S2, S3, S4: one change per replicated slot the command may write, numbered (Open) before the
// handler runs and closed with each key's state after it, all under the keys' DKV locks (the
// caller's ApplyIfFree or reservation), so changes of one key leave in the order they applied.
// EXEC's queued commands run inside its scope: one change for the whole transaction.
void Session::RunCaptured(internal::CommandContext& ctx) {
  if (capturing_) {
    // A command EXEC runs: its keys are in EXEC's change; a flush is noted for it (S2.1). A
    // read notes what it may have seen (S9).
    RunHandler(ctx);
    if (ctx.spec->handler == internal::CmdFlushDb && !ctx.failed) capture_flushed_ = true;
    if ((ctx.spec->flags & internal::kWrite) == 0) NoteReadWaits(ctx);
    return;
  }
  internal::Replication& r = *engine_->replication();
  replica::Sender& sender = r.sender();
  // M9: what the change needs is allocated before any change is opened (an allocation that
  // fails then refuses the write, which has not run), and every opened change is closed
  // whatever fails after: empty if the handler never ran, lost (its backups need a fill) if
  // its entries could not be built.
  struct Open {
    uint16_t slot;
    replica::Sender::Ticket ticket;
    const std::vector<std::string>* keys;
  };
  std::vector<std::string_view> keys;
  bool all = false;
  std::map<uint16_t, std::vector<std::string>> slots;
  std::vector<Open> opened;
  try {
    HomeKeys(ctx, &keys, &all, /*written=*/true);
    // The slots this change may write, each with its keys (sorted, once each). Copies: EXEC's
    // keys view its queue, which the handler takes.
    for (std::string_view k : keys) {
      const uint16_t slot = cluster::KeySlot(k);
      if (sender.serving(slot)) slots[slot].emplace_back(k);
    }
    if (all) {
      for (uint16_t slot : r.OwnedSlots()) {
        if (sender.serving(slot)) slots.try_emplace(slot);
      }
    }
    for (auto& [slot, slot_keys] : slots) {
      std::sort(slot_keys.begin(), slot_keys.end());
      slot_keys.erase(std::unique(slot_keys.begin(), slot_keys.end()), slot_keys.end());
    }
    opened.reserve(slots.size());
    for (auto& [slot, slot_keys] : slots) {
      Result<replica::Sender::Ticket> t = sender.Open(slot);
      if (!t.ok()) continue;  // fenced or dropped meanwhile: no longer replicated from here
      opened.push_back({slot, *t, &slot_keys});
      commit_waits_.push_back({slot, t->n});  // H1: the reply waits for it
      held_write_ = true;
    }
  } catch (const std::bad_alloc&) {
    for (const Open& o : opened) sender.CloseEmpty(o.slot, o.ticket, /*lost=*/false);
    return RefuseAtHome(ctx, "OOM command not allowed when used memory > 'maxmemory'.");
  }
  capturing_ = true;
  capture_flushed_ = false;
  // RunHandler has its own net (OOM, an internal error); were its answer to throw, the changes
  // are still closed first.
  std::exception_ptr escaped;
  try {
    RunHandler(ctx);
  } catch (...) {
    escaped = std::current_exception();
  }
  capturing_ = false;
  const bool flushed =
      capture_flushed_ || (ctx.spec->handler == internal::CmdFlushDb && !ctx.failed);
  capture_flushed_ = false;
  // Every opened change is closed, even empty (S4: the stream has no holes). One a key of
  // which cannot be captured (a frame header until S2.3, or memory) is closed lost whole: a
  // backup holding the rest would be a copy that looks whole and is not.
  std::vector<internal::CapturedState> states;
  std::vector<replica::Entry> entries;
  for (const Open& o : opened) {
    bool complete = true;
    // Whatever a capture throws, its change and the ones after it are closed first.
    try {
      states.clear();
      entries.clear();
      if (flushed) entries.push_back({.kind = replica::EntryKind::kFlush});
      for (const std::string& k : *o.keys) {
        Result<internal::CapturedState> state =
            internal::CaptureState(engine_->store(), k, ctx.now_ms);
        if (!state.ok()) {
          FLOE_LOG_WARN("replica of slot {}: a key's change could not be captured: {}", o.slot,
                        state.status().ToString());
          complete = false;
          break;
        }
        states.push_back(std::move(state).value());
      }
      if (complete) {
        for (const internal::CapturedState& state : states) entries.push_back(state.entry());
        sender.Close(o.slot, o.ticket, entries);
      }
    } catch (const std::bad_alloc&) {
      complete = false;  // memory: the change is lost, the write's own reply stands
    } catch (...) {
      complete = false;
      if (!escaped) escaped = std::current_exception();
    }
    if (!complete) {
      r.CountCaptureFailure();
      sender.CloseEmpty(o.slot, o.ticket, /*lost=*/true);
    }
  }
  // W4: the node's loop sends what closed (one exchange when a pump is already posted).
  if (!opened.empty()) r.Wake();
  // A command that wrote no replicated slot (a read reserved with a write's keys, say) is
  // held as a read (S9).
  if (opened.empty()) NoteReadWaits(ctx);
  if (escaped) std::rethrow_exception(escaped);
}

bool Session::RunAtHome(internal::CommandContext& ctx) {
  internal::ClusterNode* node = engine_->cluster();
  if (node == nullptr || home_cleared_ || ctx.pinned != nullptr) {
    // A standalone node, or keys already held (a reserved change, a part, EXEC's commands).
    // A read from a cached copy (pinned) is no change at home.
    if (ctx.pinned != nullptr) {
      RunHandler(ctx);
    } else {
      RunHandlerAtHome(ctx);
    }
    return true;
  }
  // The keys the command may change: a write's own; for EXEC, those of the queued writes.
  // A write that names no key (FLUSHALL, FLUSHDB) changes them all.
  std::vector<std::string_view> keys;
  bool all = false;
  HomeKeys(ctx, &keys, &all);
  if (keys.empty() && !all) {
    RunHandler(ctx);
    // S9: held while a change it may have seen has not committed (an analytics command that
    // posted its task notes them when it finishes).
    if (!analytics_posted_) NoteReadWaits(ctx);
    return true;
  }
  dkv::Dkv& d = node->dkv();
  if (!all) {
    bool ran = false;
    {
      ClearedWhile cleared(&home_cleared_);
      ran = d.ApplyIfFree(
          keys, [&] { RunHandlerAtHome(ctx); }, origin_node_, origin_sent_us_);
    }
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
    ReleasedAfter release(engine_, r.get());
    ClearedWhile cleared(&home_cleared_);
    RunHandlerAtHome(ctx);
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

Session::ReleasedAfter::~ReleasedAfter() {
  if (engine_->cluster() != nullptr) r_->Release(engine_->cluster()->dkv());
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

void Session::AbandonHomeChanges() { AbandonChangesAfter(0); }

void Session::EndDeferralAfter(uint64_t ticket) noexcept {
  if (!deferred_ || tickets_ == ticket) return;
  deferred_ = false;
  try {
    AbandonChangesAfter(ticket);
  } catch (...) {
  }
}

void Session::AbandonChangesAfter(uint64_t ticket) {
  std::vector<std::shared_ptr<HomeReservation>> all;
  for (auto it = home_changes_.upper_bound(ticket); it != home_changes_.end();) {
    all.push_back(it->second.reservation);
    it = home_changes_.erase(it);
  }
  for (auto it = part_changes_.upper_bound(ticket); it != part_changes_.end();) {
    all.push_back(it->second.reservation);
    it = part_changes_.erase(it);
  }
  local_parts_.erase(local_parts_.upper_bound(ticket), local_parts_.end());
  analytics_.erase(analytics_.upper_bound(ticket), analytics_.end());
  for (const auto& held : all) {
    if (held == nullptr) continue;
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
