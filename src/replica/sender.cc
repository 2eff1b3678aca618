// The owner's side of the replication stream (docs/replication.md, S4, S5, S8): changes numbered
// before their handlers write, queued per slot until every backup received them, sent in
// batches with one message in flight per backup, committed once every in-sync backup has them.
//
// One lock guards the queues (the hot path takes it twice per change: Open and Close);
// `started` and `committed` are also kept in atomics so that reads (S9) load them without it.

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <set>

#include "replica/replica.h"

namespace floe::replica {
namespace {

constexpr uint64_t kEntryWireOverhead = 32;  // an entry's bytes besides its key and bytes

uint64_t WireBytes(const Entry& e) { return kEntryWireOverhead + e.key.size() + e.bytes.size(); }

struct QueuedChange {
  uint64_t n = 0;
  bool closed = false;
  uint64_t bytes = 0;
  std::unique_ptr<char[]> storage;  // the entries' keys and bytes
  std::vector<Entry> entries;
  // Entry index where each part begins (parts[0] == 0); one part unless the change is larger
  // than kPartBytes.
  std::vector<size_t> parts;
};

struct Progress {
  uint64_t life = 0;
  bool in_sync = false;
  uint64_t received = 0;        // every change up to it received (from answers)
  uint64_t next_part = 0;       // of change received + 1, when it travels in parts
  uint64_t told_committed = 0;  // the committed n last sent
  // In flight: the last n (and its last part) the message carries, 0 if none.
  uint64_t sent_n = 0;
  uint64_t sent_part = 0;
  bool sent_whole = false;
};

struct SlotOut {
  bool configured = false;
  bool fenced = false;
  uint64_t ownership = 0;
  uint64_t started = 0;
  uint64_t closed = 0;  // every change up to it closed (or dropped)
  uint64_t committed = 0;
  std::deque<QueuedChange> queue;  // the changes not yet received by every backup, in n order
  std::map<uint32_t, Progress> backups;
  std::multimap<uint64_t, std::function<void(Status)>> waiters;
};

struct TargetState {
  bool in_flight = false;
  std::set<uint16_t> slots;       // the slots it backs
  std::set<uint16_t> in_message;  // the slots of the message in flight
};

}  // namespace

struct Sender::Impl {
  mutable Mutex mu;
  std::vector<SlotOut> slots FLOE_GUARDED_BY(mu) = std::vector<SlotOut>(kSlots);
  std::map<uint32_t, TargetState> targets FLOE_GUARDED_BY(mu);
  uint64_t queued_bytes FLOE_GUARDED_BY(mu) = 0;
  std::unique_ptr<std::atomic<uint64_t>[]> started_n { new std::atomic<uint64_t>[ kSlots ]() };
  std::unique_ptr<std::atomic<uint64_t>[]> committed_n { new std::atomic<uint64_t>[ kSlots ]() };

  using Callbacks = std::vector<std::pair<std::function<void(Status)>, Status>>;

  // The highest n with it and every earlier change closed.
  static uint64_t ClosedPrefix(const SlotOut& st) { return st.closed; }

  // The queued change numbered n, if still queued (the queue holds consecutive numbers).
  static QueuedChange* Find(SlotOut& st, uint64_t n) {
    if (st.queue.empty() || n < st.queue.front().n || n > st.queue.back().n) return nullptr;
    return &st.queue[n - st.queue.front().n];
  }

  // R9: committed is the closed prefix bounded by every in-sync backup's received n; the queue
  // keeps what some backup still lacks.
  void Advance(uint16_t slot, Callbacks* run) FLOE_REQUIRES(mu) {
    SlotOut& st = slots[slot];
    uint64_t c = ClosedPrefix(st);
    uint64_t keep_from = c;
    for (const auto& [id, p] : st.backups) {
      if (p.in_sync) c = std::min(c, p.received);
      keep_from = std::min(keep_from, p.received);
    }
    if (c > st.committed) {
      st.committed = c;
      committed_n[slot].store(c, std::memory_order_release);
    }
    while (!st.queue.empty() && st.queue.front().n <= std::min(keep_from, st.committed)) {
      queued_bytes -= st.queue.front().bytes;
      st.queue.pop_front();
    }
    while (!st.waiters.empty() && st.waiters.begin()->first <= st.committed) {
      run->emplace_back(std::move(st.waiters.begin()->second), Status::OK());
      st.waiters.erase(st.waiters.begin());
    }
  }

  void FailWaiters(SlotOut& st, std::string_view why, Callbacks* run) FLOE_REQUIRES(mu) {
    for (auto& [n, done] : st.waiters) run->emplace_back(std::move(done), Status::Aborted(why));
    st.waiters.clear();
  }

  // Changes opened and not yet closed are closed empty when they close: nothing waits for them.
  void ClearQueue(SlotOut& st) FLOE_REQUIRES(mu) {
    for (const QueuedChange& c : st.queue) queued_bytes -= c.bytes;
    st.queue.clear();
    st.closed = st.started;
  }

  void Untarget(uint16_t slot, uint32_t id) FLOE_REQUIRES(mu) {
    auto it = targets.find(id);
    if (it == targets.end()) return;
    it->second.slots.erase(slot);
    if (it->second.slots.empty() && !it->second.in_flight) targets.erase(it);
  }

  static void RunAll(Callbacks& run) {
    for (auto& [done, status] : run) done(status);
  }

  bool HasWork(uint32_t id, const TargetState& t) const FLOE_REQUIRES(mu) {
    if (t.in_flight) return false;
    for (uint16_t slot : t.slots) {
      const SlotOut& st = slots[slot];
      const Progress& p = st.backups.at(id);
      if (ClosedPrefix(st) > p.received || st.committed > p.told_committed) return true;
    }
    return false;
  }
};

Sender::Sender() : impl_(std::make_unique<Impl>()) {}

Sender::~Sender() {
  Impl::Callbacks run;
  {
    MutexLock lock(&impl_->mu);
    for (SlotOut& st : impl_->slots) impl_->FailWaiters(st, "replication stopped", &run);
  }
  Impl::RunAll(run);
}

void Sender::Configure(uint16_t slot, uint64_t ownership, std::vector<Target> in_sync,
                       std::vector<Target> filling) {
  Impl& im = *impl_;
  Impl::Callbacks run;
  {
    MutexLock lock(&im.mu);
    SlotOut& st = im.slots[slot];
    st.configured = true;
    st.fenced = false;
    st.ownership = ownership;
    std::map<uint32_t, Progress> next;
    std::vector<std::pair<Target, bool>> listed;
    for (const Target& t : in_sync) listed.emplace_back(t, true);
    for (const Target& t : filling) listed.emplace_back(t, false);
    for (const auto& [t, sync] : listed) {
      auto old = st.backups.find(t.id);
      Progress p;
      if (old != st.backups.end() && old->second.life == t.life) {
        p = old->second;
      } else {
        p.received = st.committed;  // holds the state up to it (an empty store, or a fill)
      }
      p.life = t.life;
      p.in_sync = sync;
      next[t.id] = p;
      im.targets[t.id].slots.insert(slot);
    }
    for (const auto& [id, p] : st.backups) {
      if (!next.contains(id)) im.Untarget(slot, id);
    }
    st.backups = std::move(next);
    im.Advance(slot, &run);
  }
  Impl::RunAll(run);
}

void Sender::Drop(uint16_t slot) {
  Impl& im = *impl_;
  Impl::Callbacks run;
  {
    MutexLock lock(&im.mu);
    SlotOut& st = im.slots[slot];
    im.FailWaiters(st, "the slot moved away before the change committed", &run);
    im.ClearQueue(st);
    for (const auto& [id, p] : st.backups) im.Untarget(slot, id);
    st.backups.clear();
    st.configured = false;
  }
  Impl::RunAll(run);
}

Result<uint64_t> Sender::Open(uint16_t slot) {
  Impl& im = *impl_;
  MutexLock lock(&im.mu);
  SlotOut& st = im.slots[slot];
  if (!st.configured) return Status::FailedPrecondition("replication: slot not owned here");
  if (st.fenced) return Status::FailedPrecondition("replication: slot fenced by a newer owner");
  const uint64_t n = ++st.started;
  im.started_n[slot].store(n, std::memory_order_release);
  st.queue.push_back(QueuedChange{.n = n});
  return n;
}

void Sender::Close(uint16_t slot, uint64_t n, std::span<const Entry> entries) {
  Impl& im = *impl_;
  Impl::Callbacks run;
  {
    MutexLock lock(&im.mu);
    SlotOut& st = im.slots[slot];
    // The change may have been dropped (the slot moved away or was fenced meanwhile).
    QueuedChange* found = Impl::Find(st, n);
    if (found == nullptr || found->closed) return;
    QueuedChange& c = *found;
    size_t storage = 0;
    for (const Entry& e : entries) storage += e.key.size() + e.bytes.size();
    c.storage = std::make_unique<char[]>(std::max<size_t>(storage, 1));
    c.entries.assign(entries.begin(), entries.end());
    char* p = c.storage.get();
    for (Entry& e : c.entries) {
      for (std::string_view* v : {&e.key, &e.bytes}) {
        if (!v->empty()) std::memcpy(p, v->data(), v->size());
        *v = std::string_view(p, v->size());
        p += v->size();
      }
    }
    uint64_t part_bytes = 0;
    c.parts = {0};
    for (size_t i = 0; i < c.entries.size(); i++) {
      const uint64_t b = WireBytes(c.entries[i]);
      if (part_bytes > 0 && part_bytes + b > kPartBytes) {
        c.parts.push_back(i);
        part_bytes = 0;
      }
      part_bytes += b;
      c.bytes += b;
    }
    c.bytes += 64;
    c.closed = true;
    im.queued_bytes += c.bytes;
    while (st.closed < st.started) {
      const QueuedChange* next = Impl::Find(st, st.closed + 1);
      if (next == nullptr || !next->closed) break;
      st.closed++;
    }
    im.Advance(slot, &run);
  }
  Impl::RunAll(run);
}

uint64_t Sender::started(uint16_t slot) const {
  return impl_->started_n[slot].load(std::memory_order_acquire);
}

uint64_t Sender::committed(uint16_t slot) const {
  return impl_->committed_n[slot].load(std::memory_order_acquire);
}

void Sender::WhenCommitted(uint16_t slot, uint64_t n, std::function<void(Status)> done) {
  Impl& im = *impl_;
  Status now;
  {
    MutexLock lock(&im.mu);
    SlotOut& st = im.slots[slot];
    if (st.committed < n) {
      if (st.configured && !st.fenced) {
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
  if (t == im.targets.end() || !im.HasWork(id, t->second)) return std::nullopt;
  Request req{.target = id};
  uint64_t bytes = 0;
  for (uint16_t slot : t->second.slots) {
    if (bytes >= kBatchBytes) break;
    SlotOut& st = im.slots[slot];
    Progress& p = st.backups.at(id);
    const uint64_t closed = Impl::ClosedPrefix(st);
    if (closed <= p.received && st.committed <= p.told_committed) continue;
    req.life = p.life;
    Group g{.slot = slot, .ownership = st.ownership, .committed = st.committed};
    p.sent_n = 0;
    p.sent_whole = true;
    for (const QueuedChange& c : st.queue) {
      if (c.n <= p.received) continue;
      if (c.n > closed || bytes >= kBatchBytes) break;
      const size_t first = c.n == p.received + 1 ? p.next_part : 0;
      for (size_t part = first; part < c.parts.size() && bytes < kBatchBytes; part++) {
        const size_t end = part + 1 < c.parts.size() ? c.parts[part + 1] : c.entries.size();
        Change out{.n = c.n, .part = part, .more = part + 1 < c.parts.size()};
        out.entries.assign(c.entries.begin() + static_cast<ptrdiff_t>(c.parts[part]),
                           c.entries.begin() + static_cast<ptrdiff_t>(end));
        for (const Entry& e : out.entries) bytes += WireBytes(e);
        bytes += 16;
        g.changes.push_back(std::move(out));
        p.sent_n = c.n;
        p.sent_part = part;
        p.sent_whole = part + 1 == c.parts.size();
      }
      if (!p.sent_whole) break;  // the rest of a parted change goes in the next message
    }
    p.told_committed = st.committed;
    t->second.in_message.insert(slot);
    req.groups.push_back(std::move(g));
  }
  if (req.groups.empty()) return std::nullopt;
  t->second.in_flight = true;
  return EncodeRequest(req);
}

void Sender::OnAnswer(uint32_t id, const Answer& answer) {
  Impl& im = *impl_;
  Impl::Callbacks run;
  {
    MutexLock lock(&im.mu);
    auto t = im.targets.find(id);
    if (t == im.targets.end() || !t->second.in_flight) return;
    t->second.in_flight = false;
    std::set<uint16_t> sent = std::move(t->second.in_message);
    t->second.in_message.clear();
    if (answer.not_my_life) {
      // The backup restarted: nothing it acknowledged as this life counts; the leader is told
      // by the caller (O7), whose new configuration drops or refills it.
      for (uint16_t slot : sent) im.slots[slot].backups.at(id).told_committed = 0;
    }
    for (const SlotAnswer& a : answer.slots) {
      if (!sent.contains(a.slot)) continue;  // not in the message: ignored
      SlotOut& st = im.slots[a.slot];
      auto pit = st.backups.find(id);
      if (pit == st.backups.end()) continue;
      Progress& p = pit->second;
      switch (a.status) {
        case SlotStatus::kTaken: {
          // Never past what was sent: an answer cannot commit what the backup was not given.
          const uint64_t upto = p.sent_n == 0 ? p.received : p.sent_whole ? p.sent_n : p.sent_n - 1;
          const uint64_t received = std::min(a.received, std::max(upto, p.received));
          if (received > p.received) {
            p.received = received;
            p.next_part = 0;
          }
          if (!p.sent_whole && p.sent_n == p.received + 1 && a.received == p.received) {
            p.next_part = p.sent_part + 1;
          }
          break;
        }
        case SlotStatus::kFenced:
          // R11 (rule S13): a newer owner exists; nothing more is served or numbered here.
          st.fenced = true;
          im.FailWaiters(st, "the change may or may not have been applied: a newer owner fenced it",
                         &run);
          im.ClearQueue(st);
          break;
        case SlotStatus::kBehind:
        case SlotStatus::kFull:
          p.told_committed = 0;  // sent again
          break;
      }
      p.sent_n = 0;
      if (!st.fenced) im.Advance(a.slot, &run);
    }
    for (uint16_t slot : sent) {
      // Slots the answer did not name are sent again.
      auto pit = im.slots[slot].backups.find(id);
      if (pit != im.slots[slot].backups.end() && pit->second.sent_n != 0) {
        pit->second.sent_n = 0;
        pit->second.told_committed = 0;
      }
    }
    if (t->second.slots.empty()) im.targets.erase(t);
  }
  Impl::RunAll(run);
}

void Sender::OnFailed(uint32_t id) {
  Impl& im = *impl_;
  MutexLock lock(&im.mu);
  auto t = im.targets.find(id);
  if (t == im.targets.end() || !t->second.in_flight) return;
  t->second.in_flight = false;
  for (uint16_t slot : t->second.in_message) {
    auto pit = im.slots[slot].backups.find(id);
    if (pit == im.slots[slot].backups.end()) continue;
    pit->second.sent_n = 0;
    pit->second.told_committed = 0;
  }
  t->second.in_message.clear();
  if (t->second.slots.empty()) im.targets.erase(t);
}

std::vector<uint32_t> Sender::Ready() const {
  const Impl& im = *impl_;
  MutexLock lock(&im.mu);
  std::vector<uint32_t> out;
  for (const auto& [id, t] : im.targets) {
    if (im.HasWork(id, t)) out.push_back(id);
  }
  return out;
}

uint64_t Sender::queued_bytes() const {
  MutexLock lock(&impl_->mu);
  return impl_->queued_bytes;
}

}  // namespace floe::replica
