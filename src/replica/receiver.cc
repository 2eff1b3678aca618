// The backup's side of the replication stream (docs/replication.md, S7): changes received in
// `n` order per slot, kept pending, installed up to the owner's committed `n`.

#include <algorithm>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <optional>
#include <set>

#include "replica/replica.h"

namespace floe::replica {
namespace {

// One change (or the parts of one come so far), owning copies of its keys and bytes. The
// entries' views point into `storage`, which never moves once built.
struct OwnedPart {
  std::unique_ptr<char[]> storage;
  std::vector<Entry> entries;
};

struct OwnedChange {
  uint64_t n = 0;
  uint64_t next_part = 0;  // the part expected next while `more`
  bool more = false;
  uint64_t charge = 0;
  std::vector<OwnedPart> parts;
};

OwnedPart CopyPart(const Change& c) {
  size_t bytes = 0;
  for (const Entry& e : c.entries) bytes += e.key.size() + e.bytes.size();
  OwnedPart part;
  part.storage = std::make_unique<char[]>(std::max<size_t>(bytes, 1));
  part.entries = c.entries;
  char* p = part.storage.get();
  auto copy = [&p](std::string_view* v) {
    if (!v->empty()) std::memcpy(p, v->data(), v->size());
    *v = std::string_view(p, v->size());
    p += v->size();
  };
  for (Entry& e : part.entries) {
    copy(&e.key);
    copy(&e.bytes);
  }
  return part;
}

struct SlotStream {
  uint64_t ownership = 0;
  // What was installed when `ownership` began: the new owner's changes must be numbered above
  // it (R12).
  uint64_t owned_from = 0;
  uint64_t applied = 0;
  uint64_t received = 0;
  uint64_t committed = 0;
  bool lost = false;                      // a committed change could not be installed (R16)
  std::deque<OwnedChange> pending;        // applied < n <= received, complete, in n order
  std::optional<OwnedChange> partial;     // n == received + 1, parts still coming
  std::map<uint64_t, OwnedChange> early;  // n > received + 1, complete
  std::vector<std::string> need_state;
  // S12: the fill this copy is being, or was, made by (F5), its batches installed, and while
  // its last batch has not come (`filling`) the keys live changes installed since it began
  // (F3): a fill put for one of them is older than what is here. A live flush makes every
  // later fill put older (`flushed`).
  uint64_t fill_id = 0;
  uint64_t filled = 0;
  bool filling = false;
  // F9: the copy holds fill state of changes up to it, some maybe not committed; 0 once the
  // owner said they are (or there is none). A new owner finds such a copy lost (R21).
  uint64_t fill_top = 0;
  bool flushed = false;
  std::set<std::string, std::less<>> touched;
  uint64_t touched_charge = 0;
};

// A key noted by a fill is charged its bytes and this (a set node's overhead).
constexpr uint64_t kTouchedOverhead = 64;

}  // namespace

struct Receiver::Impl {
  const TableView* const table;
  Sink* const sink;
  mutable Mutex mu;
  std::vector<std::unique_ptr<SlotStream>> slots FLOE_GUARDED_BY(mu);
  uint64_t charged FLOE_GUARDED_BY(mu) = 0;
  uint64_t early_bytes FLOE_GUARDED_BY(mu) = 0;

  Impl(const TableView* t, Sink* s) : table(t), sink(s), slots(kSlots) {}

  bool Reserve(uint64_t bytes) FLOE_REQUIRES(mu) {
    if (!sink->Reserve(bytes)) return false;
    charged += bytes;
    return true;
  }
  void Release(uint64_t bytes) FLOE_REQUIRES(mu) {
    sink->Release(bytes);
    charged -= bytes;
  }
  void DropEarly(SlotStream& st, std::map<uint64_t, OwnedChange>::iterator it) FLOE_REQUIRES(mu) {
    early_bytes -= it->second.charge;
    Release(it->second.charge);
    st.early.erase(it);
  }
  // Drops every change not installed past `keep` (R15; the destructor and Forget drop all).
  void DropPast(SlotStream& st, uint64_t keep) FLOE_REQUIRES(mu) {
    while (!st.pending.empty() && st.pending.back().n > keep) {
      Release(st.pending.back().charge);
      st.pending.pop_back();
    }
    if (st.partial) Release(st.partial->charge);
    st.partial.reset();
    while (!st.early.empty()) DropEarly(st, std::prev(st.early.end()));
    st.received = std::min(st.received, std::max(keep, st.applied));
  }
  void DropUninstalled(SlotStream& st) FLOE_REQUIRES(mu) { DropPast(st, st.applied); }

  // The fill stops noting keys (its last batch came, or the copy was lost or dropped).
  void EndFill(SlotStream& st) FLOE_REQUIRES(mu) {
    st.filling = false;
    st.flushed = false;
    st.touched.clear();
    Release(st.touched_charge);
    st.touched_charge = 0;
  }

  // F9: fill state the owner has said is committed is like any installed change.
  static void ForgetCommittedTop(SlotStream& st) {
    if (st.fill_top <= st.committed) st.fill_top = 0;
  }

  // F2: a fill's start. The copy restarts empty as the owner's store after `from`, under the
  // group's ownership; what was pending or early is dropped, and a lost copy is whole again.
  void BeginFill(uint16_t slot, SlotStream& st, const Group& g) FLOE_REQUIRES(mu) {
    DropUninstalled(st);
    EndFill(st);
    st.need_state.clear();
    st.ownership = g.ownership;
    st.owned_from = g.start;
    st.applied = st.received = g.fill->from;
    // The owner's committed n, not the fill's start: changes up to `from` may not be committed
    // yet, and the copy holds their state (F9).
    st.committed = g.committed;
    st.fill_top = g.fill->from;
    st.fill_id = g.fill->id;
    st.filled = 0;
    st.filling = true;
    const Entry flush{.kind = EntryKind::kFlush};
    std::vector<std::string> need;
    st.lost = !sink->Install(slot, g.fill->from, std::span<const Entry>(&flush, 1), &need);
    if (st.lost) EndFill(st);
  }

  // F3: while a fill's batches come, the keys live changes installed are noted, but for a
  // delta that did not apply (named in `need`: not a whole state here).
  void NoteLive(SlotStream& st, std::span<const Entry> entries,
                const std::vector<std::string>& need) FLOE_REQUIRES(mu) {
    for (const Entry& e : entries) {
      if (st.flushed) return;
      if (e.kind == EntryKind::kDelta && std::find(need.begin(), need.end(), e.key) != need.end()) {
        continue;
      }
      if (e.kind == EntryKind::kFlush) {
        st.flushed = true;  // every fill put still to come is older than this
        st.touched.clear();
        Release(st.touched_charge);
        st.touched_charge = 0;
        return;
      }
      if (st.touched.contains(e.key)) continue;
      const uint64_t charge = e.key.size() + kTouchedOverhead;
      if (!Reserve(charge)) {
        // No memory to tell a live key from a fill put: the copy cannot be proven (R16).
        st.lost = true;
        EndFill(st);
        return;
      }
      st.touched_charge += charge;
      st.touched.emplace(e.key);
    }
  }

  // F4: the fill's next batch, without the puts of keys live changes installed since its start.
  void TakeFill(uint16_t slot, SlotStream& st, const Fill& f) FLOE_REQUIRES(mu) {
    if (!st.filling || f.batch != st.filled + 1) return;  // done, a resend, or one missing
    std::vector<Entry> kept;
    if (!st.flushed) {
      kept.reserve(f.puts.size());
      for (const Entry& e : f.puts) {
        if (!st.touched.contains(e.key)) kept.push_back(e);
      }
    }
    std::vector<std::string> need;
    if (!kept.empty() && !sink->Install(slot, 0, kept, &need)) {
      st.lost = true;
      EndFill(st);
      return;
    }
    st.filled = f.batch;
    st.fill_top = std::max(st.fill_top, f.top);
    ForgetCommittedTop(st);
    if (f.last) EndFill(st);
  }

  // R21: a new owner's message (no fill of its own) finds a copy whose fill had not ended, or
  // that holds fill state not known committed, lost: it holds what no owner may have had.
  // Otherwise the old owner's fill is over; its numbers mean nothing to the new one.
  void NewOwner(SlotStream& st, const Group& g) FLOE_REQUIRES(mu) {
    if (st.filling || st.fill_top > st.committed) {
      DropUninstalled(st);
      EndFill(st);
      st.lost = true;
      st.ownership = g.ownership;
      st.owned_from = g.start;
    }
    st.fill_id = 0;
    st.filled = 0;
    st.fill_top = 0;
  }

  // A complete change n == received + 1 joins the pending ones, followed by any early ones the
  // gap held back.
  void Append(SlotStream& st, OwnedChange c) FLOE_REQUIRES(mu) {
    st.received = c.n;
    st.pending.push_back(std::move(c));
    for (auto it = st.early.find(st.received + 1); it != st.early.end();
         it = st.early.find(st.received + 1)) {
      early_bytes -= it->second.charge;
      st.received = it->first;
      st.pending.push_back(std::move(it->second));
      st.early.erase(it);
    }
    // Early changes the gap's filling overtook (a resend covered them) are duplicates now.
    while (!st.early.empty() && st.early.begin()->first <= st.received) {
      DropEarly(st, st.early.begin());
    }
  }

  // Takes the group's changes; kFull when one could not be charged (the rest is not taken),
  // kConflict when one is numbered at or below what was installed before this ownership.
  SlotStatus Take(SlotStream& st, const Group& g) FLOE_REQUIRES(mu) {
    for (const Change& c : g.changes) {
      if (c.n <= st.owned_from) return SlotStatus::kConflict;
      if (c.n <= st.received) continue;  // received before: acknowledged again
      if (c.n == st.received + 1) {
        if (st.partial) {
          OwnedChange& p = *st.partial;
          if (c.part < p.next_part) continue;  // a part received before
          if (c.part > p.next_part) break;     // a part missing before it: sent again
          const uint64_t charge = ChargeOf(c);
          if (!Reserve(charge)) return SlotStatus::kFull;
          p.charge += charge;
          p.parts.push_back(CopyPart(c));
          p.next_part++;
          p.more = c.more;
          if (!p.more) {
            OwnedChange whole = std::move(p);
            st.partial.reset();
            Append(st, std::move(whole));
          }
          continue;
        }
        if (c.part != 0) break;  // a later part without the first: sent again
        const uint64_t charge = ChargeOf(c);
        if (!Reserve(charge)) return SlotStatus::kFull;
        OwnedChange owned{.n = c.n, .next_part = 1, .more = c.more, .charge = charge};
        owned.parts.push_back(CopyPart(c));
        if (c.more) {
          st.partial = std::move(owned);
        } else {
          Append(st, std::move(owned));
        }
        continue;
      }
      // Early: a gap before it. Kept whole and within the bound, else the owner sends it again
      // once the gap is filled.
      if (c.part != 0 || c.more || st.early.contains(c.n)) continue;
      const uint64_t charge = ChargeOf(c);
      if (early_bytes + charge > kMaxEarlyBytes) continue;
      if (!Reserve(charge)) return SlotStatus::kFull;
      early_bytes += charge;
      OwnedChange owned{.n = c.n, .next_part = 1, .more = false, .charge = charge};
      owned.parts.push_back(CopyPart(c));
      st.early.emplace(c.n, std::move(owned));
    }
    return SlotStatus::kTaken;
  }

  void Install(uint16_t slot, SlotStream& st) FLOE_REQUIRES(mu) {
    std::vector<Entry> entries;
    while (!st.lost && !st.pending.empty() && st.pending.front().n <= st.committed) {
      OwnedChange& c = st.pending.front();
      std::span<const Entry> all;
      if (c.parts.size() == 1) {
        all = c.parts[0].entries;
      } else {
        entries.clear();
        for (const OwnedPart& p : c.parts) {
          entries.insert(entries.end(), p.entries.begin(), p.entries.end());
        }
        all = entries;
      }
      std::vector<std::string> need;
      // The pending charge goes before the install charges the built values: never both.
      Release(c.charge);
      c.charge = 0;
      if (!sink->Install(slot, c.n, all, &need)) {
        st.lost = true;  // R16: this copy lacks a committed change until a fill
        EndFill(st);
        st.pending.pop_front();
        break;
      }
      if (st.filling) NoteLive(st, all, need);
      for (std::string& key : need) {
        if (st.need_state.size() < kMaxNeedState) st.need_state.push_back(std::move(key));
      }
      st.applied = c.n;
      st.pending.pop_front();
      if (st.lost) break;  // a key NoteLive could not charge
    }
  }
};

Receiver::Receiver(const TableView* table, Sink* sink)
    : impl_(std::make_unique<Impl>(table, sink)) {}

Receiver::~Receiver() {
  MutexLock lock(&impl_->mu);
  for (auto& st : impl_->slots) {
    if (st) {
      impl_->DropUninstalled(*st);
      impl_->EndFill(*st);
    }
  }
}

Answer Receiver::Receive(const Request& request) {
  Impl& im = *impl_;
  MutexLock lock(&im.mu);
  Answer answer;
  answer.id = request.id;
  const TableView& table = *im.table;
  if (request.target != table.self() || request.life != table.life() ||
      !table.ListsLife(request.life)) {
    answer.not_my_life = true;
    answer.headroom = im.sink->Headroom();
    return answer;
  }
  answer.slots.reserve(request.groups.size());
  uint32_t need_total = 0;
  for (const Group& g : request.groups) {
    SlotAnswer& out = answer.slots.emplace_back();
    out.slot = g.slot;
    const uint64_t agreed = table.Ownership(g.slot);
    std::unique_ptr<SlotStream>& slot = im.slots[g.slot];
    if (g.ownership < agreed || g.ownership > agreed || !table.Backs(g.slot)) {
      out.status = g.ownership < agreed ? SlotStatus::kFenced : SlotStatus::kBehind;
      out.ownership = agreed;
      if (slot) {
        out.applied = slot->applied;
        out.received = slot->received;
      }
      continue;
    }
    if (!slot) slot = std::make_unique<SlotStream>();
    SlotStream& st = *slot;
    // R18: a fill starts the copy again once; a message of an older fill (a late resend) or of
    // an older ownership never does.
    if (g.fill &&
        (g.ownership > st.ownership || (g.ownership == st.ownership && g.fill->id > st.fill_id))) {
      im.BeginFill(g.slot, st, g);
    } else if (g.ownership > st.ownership) {
      im.NewOwner(st, g);
    }
    if (g.ownership != st.ownership && g.start >= st.applied) {
      // A new owner (R15): what was received up to its start is kept (it was committed: every
      // in-sync backup had it, S15), the rest dropped (O6); it numbers above its start (R12).
      im.DropPast(st, g.start);
      st.ownership = g.ownership;
      st.owned_from = g.start;
    }
    if (st.lost) {
      out.status = SlotStatus::kLost;
    } else if (g.ownership != st.ownership || g.start < st.owned_from) {
      out.status = SlotStatus::kConflict;  // R12: its start is below what was installed here
    } else {
      out.status = im.Take(st, g);
      if (out.status != SlotStatus::kConflict) {
        st.committed = std::max(st.committed, g.committed);
        Impl::ForgetCommittedTop(st);
        im.Install(g.slot, st);
        // F4: a batch only once the live changes before it in the message are taken.
        if (g.fill && g.fill->id == st.fill_id && out.status == SlotStatus::kTaken && !st.lost) {
          im.TakeFill(g.slot, st, *g.fill);
        }
        if (st.lost) {
          out.status = SlotStatus::kLost;
          im.DropUninstalled(st);  // nothing more is installed here until a fill
        }
      }
    }
    // A conflict names the ownership it concerns: the sender's.
    out.ownership = out.status == SlotStatus::kConflict ? g.ownership : st.ownership;
    out.applied = st.applied;
    out.received = st.received;
    out.next_part = st.partial ? st.partial->next_part : 0;
    out.fill_id = st.fill_id;
    out.filled = st.filled;
    // At most kMaxNeedState keys in one answer; the rest wait for the next.
    while (!st.need_state.empty() && need_total < kMaxNeedState) {
      out.need_state.push_back(std::move(st.need_state.back()));
      st.need_state.pop_back();
      need_total++;
    }
  }
  answer.headroom = im.sink->Headroom();
  return answer;
}

Receiver::SlotStats Receiver::Stats(uint16_t slot) const {
  MutexLock lock(&impl_->mu);
  SlotStats s;
  if (slot >= kSlots || !impl_->slots[slot]) return s;
  const SlotStream& st = *impl_->slots[slot];
  s.ownership = st.ownership;
  s.applied = st.applied;
  s.received = st.received;
  s.pending = st.pending.size() + (st.partial ? 1 : 0);
  s.early = st.early.size();
  s.fill_id = st.fill_id;
  s.filled = st.filled;
  s.filling = st.filling;
  return s;
}

Status Receiver::Promote(uint16_t slot, uint64_t n) {
  if (slot >= kSlots) return Status::InvalidArgument("replication: slot out of range");
  Impl& im = *impl_;
  MutexLock lock(&im.mu);
  std::unique_ptr<SlotStream>& p = im.slots[slot];
  if (n > 0 && (!p || p->received < n)) {
    return Status::FailedPrecondition(
        "replication: this backup has not received every change up to " + std::to_string(n));
  }
  if (p) {
    if (p->lost) return Status::FailedPrecondition("replication: this backup's copy is incomplete");
    if (p->filling) {
      return Status::FailedPrecondition("replication: this backup's copy is still being filled");
    }
    if (p->fill_top > n) {
      return Status::FailedPrecondition("replication: this backup's copy holds filled state past " +
                                        std::to_string(n));
    }
    p->committed = std::max(p->committed, n);
    im.Install(slot, *p);
    if (p->lost || p->applied < n) {
      return Status::FailedPrecondition("replication: a change could not be installed here");
    }
    im.DropUninstalled(*p);
    p.reset();
  }
  return Status::OK();
}

void Receiver::Forget(uint16_t slot) {
  if (slot >= kSlots) return;
  MutexLock lock(&impl_->mu);
  if (impl_->slots[slot]) {
    impl_->DropUninstalled(*impl_->slots[slot]);
    impl_->EndFill(*impl_->slots[slot]);
    impl_->slots[slot].reset();
  }
}

uint64_t Receiver::charged() const {
  MutexLock lock(&impl_->mu);
  return impl_->charged;
}

}  // namespace floe::replica
