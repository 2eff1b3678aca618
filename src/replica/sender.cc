// The owner's side of the replication stream (docs/replication.md, S4, S5, S8): changes numbered
// before their handlers write, queued per slot until every backup received them, sent in
// batches with one message in flight per backup, committed once every in-sync backup has them.
//
// One lock guards the queues (the hot path takes it twice per change: Open and Close; Close
// copies the change's bytes before taking it); `started` and `committed` are also kept in
// atomics so that reads (S9) load them without it. Each backup keeps a set of the slots that
// may have something for it, so finding work costs what there is to send, not the slot count.

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <new>
#include <set>
#include <utility>

#include "replica/replica.h"

namespace floe::replica {
namespace {

constexpr uint64_t kEntryWireOverhead = 32;  // an entry's bytes besides its key and bytes
constexpr uint64_t kChangeWireOverhead = 16;
// A part's entries, so that any part fits a message's count limits.
constexpr size_t kPartEntries = 65536;

uint64_t WireBytes(const Entry& e) { return kEntryWireOverhead + e.key.size() + e.bytes.size(); }

struct QueuedChange {
  uint64_t n = 0;
  bool closed = false;
  uint64_t bytes = 0;
  std::unique_ptr<char[]> storage;  // the entries' keys and bytes
  std::vector<Entry> entries;
  // Entry index where each part begins (parts[0] == 0); one part unless the change is larger
  // than kPartBytes or kPartEntries.
  std::vector<size_t> parts = {0};
};

// A batch of a fill's puts (S12), kept until the backup installed it.
struct FillBatch {
  uint64_t top = 0;  // the slot's last opened n when it was added (F9)
  uint64_t bytes = 0;
  std::unique_ptr<char[]> storage;
  std::vector<Entry> puts;
};

// A fill of one backup's copy of one slot (F1-F8).
struct FillOut {
  uint64_t id = 0;  // 0: none
  uint64_t from = 0;
  uint64_t added = 0;  // batches added: numbered 1..added
  uint64_t acked = 0;  // installed at the backup
  bool last_added = false;
  bool done = false;              // the last batch was installed
  uint64_t sent_batch = 0;        // the batch in the message in flight; 0: none
  std::deque<FillBatch> batches;  // acked + 1 .. added
};

struct Progress {
  uint64_t life = 0;
  bool in_sync = false;
  bool known = false;           // its position was learned from an answer (R13)
  bool needs_fill = false;      // lacks changes dropped here: nothing is sent to it
  uint64_t received = 0;        // every change up to it received
  uint64_t next_part = 0;       // of change received + 1, when it travels in parts
  uint64_t told_committed = 0;  // the committed n last sent
  // What the message in flight carries for this slot.
  bool in_message = false;
  uint64_t sent_n = 0;  // the last change (or part's change) sent; 0: none
  uint64_t sent_part = 0;
  bool sent_whole = true;
  FillOut fill;
};

struct SlotOut {
  bool owned = false;
  uint64_t ownership = 0;
  uint64_t last_ownership = 0;  // the highest ever owned here: Own must go above it
  uint64_t start = 0;           // the n given to Own
  uint64_t started = 0;
  uint64_t closed = 0;  // every change up to it closed
  uint64_t committed = 0;
  uint64_t lost = 0;  // the last change closed lost (CloseEmpty): a backup below it needs a fill
  std::deque<QueuedChange> queue;  // consecutive n, committed < n <= started, or kept for a lagger
  std::map<uint32_t, Progress> backups;
  std::multimap<uint64_t, std::function<void(Status)>> waiters;
};

struct TargetState {
  bool in_flight = false;
  bool paused = false;
  uint64_t message_id = 0;
  std::set<uint16_t> slots;    // the slots it backs
  std::set<uint16_t> dirty;    // the slots that may have something for it
  std::vector<uint16_t> sent;  // the slots of the message in flight
  uint16_t cursor = 0;         // round robin over dirty slots
  // Rises with every answer that moved what it received or installed (B7, W15: Lags).
  uint64_t progress = 0;
};

}  // namespace

struct Sender::Impl {
  mutable Mutex mu;
  std::vector<SlotOut> slots FLOE_GUARDED_BY(mu) = std::vector<SlotOut>(kSlots);
  std::map<uint32_t, TargetState> targets FLOE_GUARDED_BY(mu);
  uint64_t queued_bytes FLOE_GUARDED_BY(mu) = 0;
  // queued_bytes as last written under mu: read without it (the node's used_memory, per write).
  std::atomic<uint64_t> queued_seen{0};
  void Queued(int64_t delta) FLOE_REQUIRES(mu) {
    queued_bytes += static_cast<uint64_t>(delta);
    queued_seen.store(queued_bytes, std::memory_order_relaxed);
  }
  uint64_t next_message_id FLOE_GUARDED_BY(mu) = 0;
  uint64_t next_fill_id FLOE_GUARDED_BY(mu) = 0;
  std::unique_ptr<std::atomic<uint64_t>[]> started_n { new std::atomic<uint64_t>[ kSlots ]() };
  std::unique_ptr<std::atomic<uint64_t>[]> committed_n { new std::atomic<uint64_t>[ kSlots ]() };
  std::unique_ptr<std::atomic<bool>[]> serving { new std::atomic<bool>[ kSlots ]() };
  std::unique_ptr<std::atomic<uint32_t>[]> in_sync_n { new std::atomic<uint32_t>[ kSlots ]() };

  using Callbacks = std::vector<std::pair<std::function<void(Status)>, Status>>;

  static QueuedChange* Find(SlotOut& st, uint64_t n) {
    if (st.queue.empty() || n < st.queue.front().n || n > st.queue.back().n) return nullptr;
    return &st.queue[n - st.queue.front().n];
  }
  // The first n still queued (or the next to be numbered).
  static uint64_t FrontN(const SlotOut& st) {
    return st.queue.empty() ? st.closed + 1 : st.queue.front().n;
  }

  void MarkDirty(uint16_t slot) FLOE_REQUIRES(mu) {
    for (const auto& [id, p] : slots[slot].backups) targets[id].dirty.insert(slot);
  }

  // R9: committed is the closed prefix bounded by every in-sync backup's received n; the queue
  // keeps what some backup still lacks.
  void Advance(uint16_t slot, Callbacks* run) FLOE_REQUIRES(mu) {
    SlotOut& st = slots[slot];
    uint64_t c = st.closed;
    uint64_t keep_from = st.closed;
    for (const auto& [id, p] : st.backups) {
      // One that needs a fill holds commits back until it is filled or dropped (B3, B7), but
      // nothing is kept for it: what it lacks is gone already.
      // R19: an in-sync backup being filled has nothing before its fill's end (its received
      // n is the fill's start until then), nor one that needs a fill (a fill that ended
      // unfinished restarted its copy): no commit passes them.
      if (p.in_sync) {
        c = std::min(c,
                     p.needs_fill || (p.fill.id != 0 && !p.fill.done) ? st.committed : p.received);
      } else if (p.fill.id != 0 && p.fill.done && !p.needs_fill) {
        // F7: a filled backup counts from the moment its fill is done, before the leader makes
        // it in sync: the table may list it in sync (and make it an heir, O7) before this
        // member applies that, and it must then have every change acknowledged here.
        c = std::min(c, p.received);
      }
      if (!p.needs_fill) keep_from = std::min(keep_from, p.received);
    }
    if (c > st.committed) {
      st.committed = c;
      committed_n[slot].store(c, std::memory_order_release);
      MarkDirty(slot);  // the backups install up to it once told
    }
    while (!st.queue.empty() && st.queue.front().n <= std::min(keep_from, st.committed)) {
      Queued(-static_cast<int64_t>(st.queue.front().bytes));
      st.queue.pop_front();
    }
    while (!st.waiters.empty() && st.waiters.begin()->first <= st.committed) {
      run->emplace_back(std::move(st.waiters.begin()->second), Status::OK());
      st.waiters.erase(st.waiters.begin());
    }
  }

  // A change of `slot` was closed: the closed prefix grows over every change closed after it.
  // Never throws once the change is marked closed (M9). Were a dirty mark or a waiter's entry
  // not made (memory), a backup may not be offered the slot until its next change or answer:
  // commits are late, never wrong. (Open: dirty marks that allocate nothing.)
  void Closed(uint16_t slot, Callbacks* run) FLOE_REQUIRES(mu) {
    SlotOut& st = slots[slot];
    const uint64_t before = st.closed;
    while (st.closed < st.started) {
      const QueuedChange* next = Find(st, st.closed + 1);
      if (next == nullptr || !next->closed) break;
      st.closed++;
    }
    if (st.closed == before) return;
    try {
      MarkDirty(slot);
      Advance(slot, run);
    } catch (const std::bad_alloc&) {
    }
  }

  // The backup's fill ends, done or not: its batches go.
  void EndFill(Progress& p) FLOE_REQUIRES(mu) {
    for (const FillBatch& b : p.fill.batches) Queued(-static_cast<int64_t>(b.bytes));
    p.fill = FillOut{};
  }

  void Untarget(uint16_t slot, uint32_t id) FLOE_REQUIRES(mu) {
    auto it = targets.find(id);
    if (it == targets.end()) return;
    it->second.slots.erase(slot);
    it->second.dirty.erase(slot);
  }
  // Targets that back nothing and wait for nothing go (Untarget leaves them: a caller may hold
  // a reference).
  void Prune() FLOE_REQUIRES(mu) {
    std::erase_if(targets,
                  [](const auto& kv) { return kv.second.slots.empty() && !kv.second.in_flight; });
  }

  // The slot is no longer served here: waiters fail, nothing is queued or sent for it.
  void Stop(uint16_t slot, std::string_view why, Callbacks* run) FLOE_REQUIRES(mu) {
    SlotOut& st = slots[slot];
    for (auto& [n, done] : st.waiters) run->emplace_back(std::move(done), Status::Aborted(why));
    st.waiters.clear();
    for (const QueuedChange& c : st.queue) Queued(-static_cast<int64_t>(c.bytes));
    st.queue.clear();
    for (auto& [id, p] : st.backups) {
      EndFill(p);
      Untarget(slot, id);
    }
    st.backups.clear();
    st.owned = false;
    serving[slot].store(false, std::memory_order_release);
    in_sync_n[slot].store(0, std::memory_order_relaxed);
  }

  // A callback that throws neither skips the others nor leaves a noexcept caller (CloseEmpty).
  static void RunAll(Callbacks& run) noexcept {
    for (auto& [done, status] : run) {
      try {
        done(status);
      } catch (...) {
      }
    }
  }

  void SetBackups(uint16_t slot, std::vector<Target> in_sync, std::vector<Target> filling,
                  Callbacks* run) FLOE_REQUIRES(mu) {
    SlotOut& st = slots[slot];
    std::vector<std::pair<Target, bool>> listed;
    for (const Target& t : in_sync) listed.emplace_back(t, true);
    for (const Target& t : filling) listed.emplace_back(t, false);
    std::map<uint32_t, Progress> next;
    for (const auto& [t, sync] : listed) {
      auto old = st.backups.find(t.id);
      Progress p;
      if (old != st.backups.end() && old->second.life == t.life) {
        p = std::move(old->second);
        old->second.fill = FillOut{};  // moved: its batches are p's now
        // A filled backup made in sync: its fill has served (F7).
        if (sync && p.fill.done) EndFill(p);
      } else {
        // Asked where it is before anything is sent (R13); meanwhile it holds nothing back.
        p.received = st.committed;
      }
      p.life = t.life;
      p.in_sync = sync;
      next[t.id] = std::move(p);
      TargetState& target = targets[t.id];
      target.slots.insert(slot);
      target.dirty.insert(slot);
    }
    for (auto& [id, p] : st.backups) {
      EndFill(p);  // another life's, or no longer listed (one kept was moved to `next`)
      if (!next.contains(id)) Untarget(slot, id);
    }
    st.backups = std::move(next);
    in_sync_n[slot].store(static_cast<uint32_t>(in_sync.size()), std::memory_order_relaxed);
    Prune();
    Advance(slot, run);
  }

  static bool HasWork(const SlotOut& st, const Progress& p) {
    if (!st.owned || p.needs_fill || p.in_message) return false;
    if (!p.known) return true;  // asked where it is
    return st.closed > p.received || st.committed > p.told_committed || p.fill.acked < p.fill.added;
  }

  bool Ready(const TargetState& t) const FLOE_REQUIRES(mu) {
    return !t.in_flight && !t.paused && !t.dirty.empty();
  }

  // (slot, backup) of every backup of an owned slot whose progress `pred` accepts, by backup.
  template <typename Pred>
  std::vector<std::pair<uint16_t, uint32_t>> BackupsWhere(Pred pred) const FLOE_EXCLUDES(mu) {
    MutexLock lock(&mu);
    std::vector<std::pair<uint16_t, uint32_t>> out;
    for (const auto& [id, t] : targets) {
      for (uint16_t slot : t.slots) {
        auto pit = slots[slot].backups.find(id);
        if (pit != slots[slot].backups.end() && pred(pit->second)) out.emplace_back(slot, id);
      }
    }
    return out;
  }
};

Sender::Sender() : impl_(std::make_unique<Impl>()) {}

Sender::~Sender() {
  Impl::Callbacks run;
  {
    MutexLock lock(&impl_->mu);
    for (uint32_t s = 0; s < kSlots; s++) {
      if (impl_->slots[s].owned) {
        impl_->Stop(static_cast<uint16_t>(s), "replication stopped", &run);
      }
    }
  }
  Impl::RunAll(run);
}

Status Sender::Own(uint16_t slot, uint64_t ownership, uint64_t n, std::vector<Target> in_sync,
                   std::vector<Target> filling, std::optional<uint64_t> committed) {
  if (slot >= kSlots) return Status::InvalidArgument("replication: slot out of range");
  Impl& im = *impl_;
  Impl::Callbacks run;
  Status configured;
  {
    MutexLock lock(&im.mu);
    SlotOut& st = im.slots[slot];
    if (ownership <= st.last_ownership) {
      return Status::FailedPrecondition("replication: ownership " + std::to_string(ownership) +
                                        " is not above " + std::to_string(st.last_ownership) +
                                        ", owned here before");
    }
    im.Stop(slot, "the slot changed owner before the change committed", &run);
    im.Prune();
    st.owned = true;
    st.ownership = st.last_ownership = ownership;
    st.start = st.started = st.closed = n;
    // S15: a promotion's changes past what it knew committed commit once every in-sync backup
    // confirmed them (SetBackups asks each where it is; Advance then counts it).
    st.committed = std::min(committed.value_or(n), n);
    // A start past the lost change covers it (a fill's, a promotion's); one below it does not:
    // a backup there still lacks the write this store holds.
    if (n >= st.lost) st.lost = 0;
    im.started_n[slot].store(n, std::memory_order_release);
    im.committed_n[slot].store(st.committed, std::memory_order_release);
    // Backups before the first change can be numbered (R9: nothing commits without them).
    im.SetBackups(slot, std::move(in_sync), std::move(filling), &run);
    im.serving[slot].store(true, std::memory_order_release);
  }
  Impl::RunAll(run);
  return Status::OK();
}

Status Sender::Configure(uint16_t slot, uint64_t ownership, std::vector<Target> in_sync,
                         std::vector<Target> filling) {
  if (slot >= kSlots) return Status::InvalidArgument("replication: slot out of range");
  Impl& im = *impl_;
  Impl::Callbacks run;
  {
    MutexLock lock(&im.mu);
    SlotOut& st = im.slots[slot];
    if (!st.owned || st.ownership != ownership) {
      return Status::FailedPrecondition("replication: slot not owned here under that ownership");
    }
    im.SetBackups(slot, std::move(in_sync), std::move(filling), &run);
  }
  Impl::RunAll(run);
  return Status::OK();
}

void Sender::Drop(uint16_t slot) {
  if (slot >= kSlots) return;
  Impl& im = *impl_;
  Impl::Callbacks run;
  {
    MutexLock lock(&im.mu);
    im.Stop(slot, "the slot moved away before the change committed", &run);
    im.Prune();
  }
  Impl::RunAll(run);
}

Result<Sender::Ticket> Sender::Open(uint16_t slot) {
  if (slot >= kSlots) return Status::InvalidArgument("replication: slot out of range");
  Impl& im = *impl_;
  MutexLock lock(&im.mu);
  SlotOut& st = im.slots[slot];
  if (!st.owned) return Status::FailedPrecondition("replication: slot not owned here");
  // M9: the queue's entry is made before the number is taken, so an allocation that fails
  // leaves no number without its change.
  const uint64_t n = st.started + 1;
  st.queue.push_back(QueuedChange{.n = n});
  st.started = n;
  im.started_n[slot].store(n, std::memory_order_release);
  return Ticket{.n = n, .ownership = st.ownership};
}

void Sender::Close(uint16_t slot, Ticket ticket, std::span<const Entry> entries) {
  if (slot >= kSlots) return;
  const uint64_t n = ticket.n;
  // The copy is made before the lock is taken.
  QueuedChange made{.n = n};
  size_t storage = 0;
  for (const Entry& e : entries) storage += e.key.size() + e.bytes.size();
  made.storage = std::make_unique<char[]>(std::max<size_t>(storage, 1));
  made.entries.assign(entries.begin(), entries.end());
  char* p = made.storage.get();
  for (Entry& e : made.entries) {
    for (std::string_view* v : {&e.key, &e.bytes}) {
      if (!v->empty()) std::memcpy(p, v->data(), v->size());
      *v = std::string_view(p, v->size());
      p += v->size();
    }
  }
  uint64_t part_bytes = 0;
  size_t part_entries = 0;
  for (size_t i = 0; i < made.entries.size(); i++) {
    const uint64_t b = WireBytes(made.entries[i]);
    if (part_entries > 0 && (part_bytes + b > kPartBytes || part_entries == kPartEntries)) {
      made.parts.push_back(i);
      part_bytes = 0;
      part_entries = 0;
    }
    part_bytes += b;
    part_entries++;
    made.bytes += b;
  }
  made.bytes += 64;
  made.closed = true;

  Impl& im = *impl_;
  Impl::Callbacks run;
  {
    MutexLock lock(&im.mu);
    SlotOut& st = im.slots[slot];
    // The change may have been dropped (the slot moved away or was fenced meanwhile, and may be
    // owned again under a new ownership whose numbers reuse n).
    QueuedChange* found = Impl::Find(st, n);
    if (!st.owned || st.ownership != ticket.ownership || found == nullptr || found->closed) {
      return;
    }
    *found = std::move(made);
    im.Queued(static_cast<int64_t>(found->bytes));
    im.Closed(slot, &run);
  }
  Impl::RunAll(run);
}

void Sender::CloseEmpty(uint16_t slot, Ticket ticket, bool lost) noexcept {
  if (slot >= kSlots) return;
  Impl& im = *impl_;
  Impl::Callbacks run;
  {
    MutexLock lock(&im.mu);
    SlotOut& st = im.slots[slot];
    QueuedChange* found = Impl::Find(st, ticket.n);
    if (!st.owned || st.ownership != ticket.ownership || found == nullptr || found->closed) {
      return;
    }
    found->closed = true;  // Open made its entry: nothing to allocate
    if (lost) {
      // Its writes reached no backup: every backup lacks them, so none may be promoted nor
      // be sent what follows until it is filled (S12); one configured later is asked where
      // it is first, and needs a fill if that is below this change.
      st.lost = std::max(st.lost, ticket.n);
      for (auto& [id, p] : st.backups) {
        p.needs_fill = true;
        im.EndFill(p);  // R20: a fill that began before it lacks it too
      }
    }
    im.Closed(slot, &run);
  }
  Impl::RunAll(run);
}

uint64_t Sender::started(uint16_t slot) const {
  return slot < kSlots ? impl_->started_n[slot].load(std::memory_order_acquire) : 0;
}

bool Sender::serving(uint16_t slot) const {
  return slot < kSlots && impl_->serving[slot].load(std::memory_order_acquire);
}

uint64_t Sender::committed(uint16_t slot) const {
  return slot < kSlots ? impl_->committed_n[slot].load(std::memory_order_acquire) : 0;
}

void Sender::WhenCommitted(uint16_t slot, uint64_t n, std::function<void(Status)> done) {
  Impl& im = *impl_;
  Status now;
  if (slot >= kSlots) {
    now = Status::InvalidArgument("replication: slot out of range");
  } else {
    MutexLock lock(&im.mu);
    SlotOut& st = im.slots[slot];
    if (st.committed < n) {
      if (st.owned) {
        st.waiters.emplace(n, std::move(done));
        return;
      }
      now = Status::Aborted("the slot is no longer served here");
    }
  }
  done(now);
}

std::optional<std::string> Sender::NextMessage(uint32_t id) {
  Impl& im = *impl_;
  MutexLock lock(&im.mu);
  auto t = im.targets.find(id);
  if (t == im.targets.end() || !im.Ready(t->second)) return std::nullopt;
  TargetState& target = t->second;
  Request req{.target = id};
  uint64_t bytes = 0, changes = 0, entries = 0;
  // Round robin: from the cursor to the end, then from the start.
  std::vector<uint16_t> order;
  order.reserve(target.dirty.size());
  for (auto it = target.dirty.lower_bound(target.cursor); it != target.dirty.end(); ++it) {
    order.push_back(*it);
  }
  for (auto it = target.dirty.begin(); it != target.dirty.end() && *it < target.cursor; ++it) {
    order.push_back(*it);
  }
  for (uint16_t slot : order) {
    if (bytes >= kBatchBytes || changes >= kMaxChanges || entries >= kMaxEntries) break;
    target.cursor = static_cast<uint16_t>((slot + 1) % kSlots);
    SlotOut& st = im.slots[slot];
    auto pit = st.backups.find(id);
    if (pit == st.backups.end() || !Impl::HasWork(st, pit->second)) {
      target.dirty.erase(slot);
      continue;
    }
    Progress& p = pit->second;
    // One life per message (the receiver checks it for every slot): another waits its turn.
    if (!req.groups.empty() && p.life != req.life) continue;
    req.life = p.life;
    Group g{.slot = slot, .ownership = st.ownership, .start = st.start, .committed = st.committed};
    // F1: every message to a backup being filled names the fill, so its copy restarts before
    // any change after the fill's start is taken.
    if (p.fill.id != 0 && !p.fill.done) g.fill = Fill{.id = p.fill.id, .from = p.fill.from};
    p.fill.sent_batch = 0;
    p.sent_n = 0;
    p.sent_part = 0;
    p.sent_whole = true;
    bool all_sent = true;
    // F4: the next batch, when it has room (or the message is empty): ahead of the live
    // changes in the budget, so a busy slot never starves its fill; the backup takes it after
    // them, and live changes win whatever the order (F3).
    if (g.fill && p.fill.acked < p.fill.added) {
      const FillBatch& b = p.fill.batches.front();
      const bool room = bytes + b.bytes <= kBatchBytes && entries + b.puts.size() <= kMaxEntries;
      if (room || req.groups.empty()) {
        g.fill->batch = p.fill.acked + 1;
        g.fill->top = b.top;
        g.fill->last = p.fill.last_added && g.fill->batch == p.fill.added;
        g.fill->puts = b.puts;
        bytes += b.bytes;
        entries += b.puts.size();
        p.fill.sent_batch = g.fill->batch;
      } else {
        all_sent = false;
      }
    }
    if (p.known) {
      for (uint64_t n = p.received + 1; n <= st.closed; n++) {
        const QueuedChange* c = Impl::Find(st, n);
        if (c == nullptr) break;  // dropped: cannot happen while p.received >= front - 1
        const size_t first = n == p.received + 1 ? p.next_part : 0;
        for (size_t part = first; part < c->parts.size(); part++) {
          const size_t begin = c->parts[part];
          const size_t end = part + 1 < c->parts.size() ? c->parts[part + 1] : c->entries.size();
          const bool room = bytes < kBatchBytes && changes + 1 <= kMaxChanges &&
                            entries + (end - begin) <= kMaxEntries;
          // At least one part goes in every message (a part always fits the counts).
          if (!room && (!req.groups.empty() || !g.changes.empty())) {
            all_sent = false;
            break;
          }
          Change out{.n = n, .part = part, .more = part + 1 < c->parts.size()};
          out.entries.assign(c->entries.begin() + static_cast<ptrdiff_t>(begin),
                             c->entries.begin() + static_cast<ptrdiff_t>(end));
          for (const Entry& e : out.entries) bytes += WireBytes(e);
          bytes += kChangeWireOverhead;
          changes++;
          entries += end - begin;
          g.changes.push_back(std::move(out));
          p.sent_n = n;
          p.sent_part = part;
          p.sent_whole = part + 1 == c->parts.size();
        }
        if (!all_sent || !p.sent_whole) {
          all_sent = false;
          break;
        }
      }
    }
    p.told_committed = st.committed;
    p.in_message = true;
    if (all_sent) target.dirty.erase(slot);
    target.sent.push_back(slot);
    req.groups.push_back(std::move(g));
  }
  if (req.groups.empty()) return std::nullopt;
  target.in_flight = true;
  target.message_id = ++im.next_message_id;
  req.id = target.message_id;
  return EncodeRequest(req);
}

bool Sender::OnAnswer(uint32_t id, const Answer& answer) {
  Impl& im = *impl_;
  Impl::Callbacks run;
  bool paused = false;
  {
    MutexLock lock(&im.mu);
    auto t = im.targets.find(id);
    if (t == im.targets.end()) return false;
    TargetState& target = t->second;
    if (!target.in_flight || answer.id != target.message_id) return target.paused;
    target.in_flight = false;
    std::vector<uint16_t> sent = std::move(target.sent);
    target.sent.clear();
    std::map<uint16_t, const SlotAnswer*> by_slot;
    if (!answer.not_my_life) {
      for (const SlotAnswer& a : answer.slots) by_slot[a.slot] = &a;
    } else {
      // The backup restarted (O7): nothing it says counts; the caller reports it.
      target.paused = true;
    }
    for (uint16_t slot : sent) {
      SlotOut& st = im.slots[slot];
      auto pit = st.backups.find(id);
      if (pit == st.backups.end()) continue;
      Progress& p = pit->second;
      target.dirty.insert(slot);
      // Replaced meanwhile (another life, or the slot owned again): the answer is not its.
      if (!p.in_message) continue;
      p.in_message = false;
      const uint64_t sent_batch = std::exchange(p.fill.sent_batch, 0);
      auto found = by_slot.find(slot);
      if (found == by_slot.end()) {
        p.told_committed = 0;  // sent again
        continue;
      }
      const SlotAnswer& a = *found->second;
      if (a.status == SlotStatus::kFenced && a.ownership > st.ownership) {
        // R11 (rule S13): a newer owner exists; nothing more is served or numbered here.
        im.Stop(slot, "the change may or may not have been applied: a newer owner fenced it", &run);
        continue;
      }
      if (a.status == SlotStatus::kLost) {
        p.needs_fill = true;  // R16: its copy lacks a committed change
        im.EndFill(p);        // R20: a fill it lost an install of starts again
        im.Advance(slot, &run);
        continue;
      }
      if (a.status == SlotStatus::kConflict && a.ownership == st.ownership) {
        im.Stop(slot,
                "the change may or may not have been applied: its number conflicts with what a "
                "backup installed",
                &run);
        continue;
      }
      if (a.status == SlotStatus::kFenced || a.status == SlotStatus::kConflict ||
          a.status == SlotStatus::kBehind || a.ownership != st.ownership) {
        // Stale, or the backup's table has not caught up: asked again after a pause.
        p.told_committed = 0;
        target.paused = true;
        continue;
      }
      // kTaken or kFull: what was received counts (R14).
      if (!p.known) {
        // R13: where it is, believed only within what is here to send it. Past anything this
        // owner numbered: this owner's start is wrong (R12), as a conflict.
        if (a.received > st.closed) {
          im.Stop(slot,
                  "the change may or may not have been applied: a backup holds changes this "
                  "owner never numbered",
                  &run);
          continue;
        }
        if (a.received + 1 < Impl::FrontN(st) || a.received < st.lost) {
          p.needs_fill = true;
        } else {
          p.known = true;
          p.received = a.received;
          p.next_part = a.next_part;
          target.progress++;
        }
      } else if (a.received < p.received) {
        p.needs_fill = true;  // it lost what it acknowledged
        im.EndFill(p);
      } else {
        // Never past what was sent: an answer cannot commit what the backup was not given.
        const uint64_t upto = p.sent_n == 0 ? p.received : p.sent_whole ? p.sent_n : p.sent_n - 1;
        const uint64_t received = std::min(a.received, std::max(upto, p.received));
        if (received > p.received) {
          p.received = received;
          p.next_part = 0;
          target.progress++;
        }
        if (a.received == p.received) {
          // Its parts of the next change: never more than were sent, and fewer if it lost some
          // (they are sent again).
          const uint64_t sent_parts =
              !p.sent_whole && p.sent_n == p.received + 1 ? p.sent_part + 1 : p.next_part;
          const uint64_t parts = std::min(a.next_part, sent_parts);
          if (parts > p.next_part) target.progress++;
          p.next_part = parts;
        }
      }
      // F5: a batch counts once the backup installed it under this fill, never past the one
      // sent; the last one installed ends the fill (R20).
      if (p.fill.id != 0 && a.fill_id == p.fill.id && !p.needs_fill) {
        const uint64_t acked = std::min(a.filled, std::max(sent_batch, p.fill.acked));
        while (p.fill.acked < acked && !p.fill.batches.empty()) {
          im.Queued(-static_cast<int64_t>(p.fill.batches.front().bytes));
          p.fill.batches.pop_front();
          p.fill.acked++;
          target.progress++;
        }
        if (p.fill.last_added && p.fill.acked == p.fill.added && !p.fill.done) {
          p.fill.done = true;
          // An in-sync backup's fill ends here; a filling one's when it is made in sync (F7).
          if (p.in_sync) im.EndFill(p);
        }
      }
      if (a.status == SlotStatus::kFull) {
        p.told_committed = 0;
        target.paused = true;
      }
      im.Advance(slot, &run);
    }
    paused = target.paused;
    im.Prune();
  }
  Impl::RunAll(run);
  return paused;
}

void Sender::OnFailed(uint32_t id, uint64_t message_id) {
  Impl& im = *impl_;
  MutexLock lock(&im.mu);
  auto t = im.targets.find(id);
  if (t == im.targets.end() || !t->second.in_flight || t->second.message_id != message_id) return;
  t->second.in_flight = false;
  for (uint16_t slot : t->second.sent) {
    auto pit = im.slots[slot].backups.find(id);
    if (pit == im.slots[slot].backups.end()) continue;
    pit->second.in_message = false;
    pit->second.told_committed = 0;
    pit->second.fill.sent_batch = 0;
    t->second.dirty.insert(slot);
  }
  t->second.sent.clear();
  im.Prune();
}

Result<Sender::FillTicket> Sender::BeginFill(uint16_t slot, uint32_t id) {
  if (slot >= kSlots) return Status::InvalidArgument("replication: slot out of range");
  Impl& im = *impl_;
  MutexLock lock(&im.mu);
  SlotOut& st = im.slots[slot];
  auto pit = st.backups.find(id);
  if (!st.owned || pit == st.backups.end()) {
    return Status::FailedPrecondition("replication: not a backup of a slot owned here");
  }
  Progress& p = pit->second;
  // F1: its answer to the message in flight would speak of the copy before the fill.
  if (p.in_message) return Status::Unavailable("replication: a message is in flight to it");
  im.EndFill(p);
  p.fill.id = ++im.next_fill_id;
  p.fill.from = st.started;
  // Its copy will hold every change up to `from` once filled; the later ones go live, so the
  // queue keeps them for it.
  p.known = true;
  p.needs_fill = false;
  p.received = st.started;
  p.next_part = 0;
  p.told_committed = 0;
  im.targets[id].dirty.insert(slot);
  return FillTicket{.id = p.fill.id, .from = p.fill.from};
}

Result<uint64_t> Sender::AddFill(uint16_t slot, uint32_t id, FillTicket ticket,
                                 std::span<const Entry> puts, bool last) {
  if (slot >= kSlots) return Status::InvalidArgument("replication: slot out of range");
  if (puts.size() > kPartEntries) {
    return Status::InvalidArgument("replication: a fill batch of too many puts");
  }
  // The copy is made before the lock is taken, as Close's.
  FillBatch batch;
  size_t storage = 0;
  for (const Entry& e : puts) {
    if (e.kind != EntryKind::kPut || !Fits(e)) {
      return Status::InvalidArgument("replication: a fill batch holds puts that fit only");
    }
    storage += e.key.size() + e.bytes.size();
    batch.bytes += WireBytes(e);
  }
  // A batch fits one message with room to spare for live changes, unless it is one put.
  if (puts.size() > 1 && batch.bytes > kBatchBytes) {
    return Status::InvalidArgument("replication: a fill batch of more than kBatchBytes");
  }
  batch.storage = std::make_unique<char[]>(std::max<size_t>(storage, 1));
  batch.puts.assign(puts.begin(), puts.end());
  char* p = batch.storage.get();
  for (Entry& e : batch.puts) {
    for (std::string_view* v : {&e.key, &e.bytes}) {
      if (!v->empty()) std::memcpy(p, v->data(), v->size());
      *v = std::string_view(p, v->size());
      p += v->size();
    }
  }
  batch.bytes += 64;
  Impl& im = *impl_;
  MutexLock lock(&im.mu);
  SlotOut& st = im.slots[slot];
  auto pit = st.backups.find(id);
  if (!st.owned || pit == st.backups.end() || pit->second.fill.id != ticket.id ||
      pit->second.fill.id == 0 || pit->second.fill.last_added) {
    return Status::FailedPrecondition("replication: that fill has ended");
  }
  FillOut& fill = pit->second.fill;
  batch.top = st.started;
  im.Queued(static_cast<int64_t>(batch.bytes));
  fill.batches.push_back(std::move(batch));
  fill.added++;
  fill.last_added = last;
  im.targets[id].dirty.insert(slot);
  return fill.added - fill.acked;
}

std::vector<Sender::FillState> Sender::Fills() const {
  const Impl& im = *impl_;
  MutexLock lock(&im.mu);
  std::vector<FillState> out;
  for (const auto& [id, t] : im.targets) {
    for (uint16_t slot : t.slots) {
      auto pit = im.slots[slot].backups.find(id);
      if (pit == im.slots[slot].backups.end() || pit->second.fill.id == 0) continue;
      const Progress& p = pit->second;
      out.push_back({.slot = slot,
                     .id = id,
                     .life = p.life,
                     .in_sync = p.in_sync,
                     .ticket = {.id = p.fill.id, .from = p.fill.from},
                     .waiting = p.fill.added - p.fill.acked,
                     .done = p.fill.done,
                     .received = p.received});
    }
  }
  return out;
}

std::vector<std::pair<uint16_t, uint32_t>> Sender::FillsWanted() const {
  return impl_->BackupsWhere(
      [](const Progress& p) { return p.needs_fill || (!p.in_sync && p.fill.id == 0); });
}

uint64_t Sender::closed(uint16_t slot) const {
  if (slot >= kSlots) return 0;
  MutexLock lock(&impl_->mu);
  return impl_->slots[slot].closed;
}

uint64_t Sender::in_flight(uint32_t id) const {
  MutexLock lock(&impl_->mu);
  auto t = impl_->targets.find(id);
  return t != impl_->targets.end() && t->second.in_flight ? t->second.message_id : 0;
}

void Sender::Resume(uint32_t id) {
  MutexLock lock(&impl_->mu);
  auto t = impl_->targets.find(id);
  if (t != impl_->targets.end()) t->second.paused = false;
}

std::vector<uint32_t> Sender::Ready() const {
  const Impl& im = *impl_;
  MutexLock lock(&im.mu);
  std::vector<uint32_t> out;
  for (const auto& [id, t] : im.targets) {
    if (im.Ready(t)) out.push_back(id);
  }
  return out;
}

uint32_t Sender::in_sync(uint16_t slot) const {
  return slot < kSlots ? impl_->in_sync_n[slot].load(std::memory_order_relaxed) : 0;
}

std::vector<Sender::Lag> Sender::Lags() const {
  const Impl& im = *impl_;
  MutexLock lock(&im.mu);
  std::vector<Lag> out;
  for (const auto& [id, t] : im.targets) {
    Lag lag{.id = id, .progress = t.progress};
    for (uint16_t slot : t.slots) {
      const SlotOut& st = im.slots[slot];
      auto pit = st.backups.find(id);
      if (!st.owned || pit == st.backups.end()) continue;
      const Progress& p = pit->second;
      lag.life = p.life;
      lag.waiting = lag.waiting || p.needs_fill || !p.known || st.closed > p.received ||
                    p.fill.acked < p.fill.added;
    }
    out.push_back(lag);
  }
  return out;
}

std::vector<std::pair<uint16_t, uint32_t>> Sender::NeedsFill() const {
  return impl_->BackupsWhere([](const Progress& p) { return p.needs_fill; });
}

uint64_t Sender::queued_bytes() const { return impl_->queued_seen.load(std::memory_order_relaxed); }

}  // namespace floe::replica
