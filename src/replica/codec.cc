// The REPLICATE codec (docs/wire.md, "The replication stream"): its own file so that its fuzz
// target (fuzz/replica_fuzz.cc) compiles it alone.

#include "replica/replica.h"
#include "wire/wire.h"

namespace floe::replica {
namespace {

// The fewest bytes each element takes on the wire: a count claiming more elements than the
// bytes left could hold is refused before anything is sized by it.
constexpr uint64_t kMinGroupBytes = 7;   // slot, o(s), start, committed, flags, changes
constexpr uint64_t kMinChangeBytes = 4;  // n, part, flags, entries
constexpr uint64_t kMinEntryBytes = 2;   // kind, key length
constexpr uint64_t kMinSlotAnswerBytes = 10;

void PutEntry(wire::Writer& w, const Entry& e) {
  w.PutU8(static_cast<uint8_t>(e.kind));
  w.PutLengthPrefixed(e.key);
  switch (e.kind) {
    case EntryKind::kPut:
      w.PutFixed16(e.type);
      w.PutVarint64(e.expire_ms);
      w.PutLengthPrefixed(e.bytes);
      break;
    case EntryKind::kRemove:
    case EntryKind::kFlush:
      break;
    case EntryKind::kDelta:
      w.PutFixed16(e.type);
      w.PutVarint64(e.cell_version);
      w.PutLengthPrefixed(e.bytes);
      break;
    case EntryKind::kRecord:
      w.PutFixed32(e.origin);
      w.PutVarint64(e.client);
      w.PutVarint64(e.seq);
      w.PutVarint64(e.age_ms);
      w.PutLengthPrefixed(e.bytes);
      break;
  }
}

Status GetEntry(wire::Reader& r, uint64_t max_bytes, Entry* e) {
  uint8_t kind = 0;
  FLOE_RETURN_IF_ERROR(r.GetU8(&kind));
  if (kind == 0 || kind > kLastEntryKind) return Status::Corruption("replicate: unknown kind");
  e->kind = static_cast<EntryKind>(kind);
  FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&e->key, kMaxKeyBytes));
  switch (e->kind) {
    case EntryKind::kPut:
      FLOE_RETURN_IF_ERROR(r.GetFixed16(&e->type));
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&e->expire_ms));
      return r.GetLengthPrefixed(&e->bytes, max_bytes);
    case EntryKind::kRemove:
      return Status::OK();
    case EntryKind::kFlush:
      if (!e->key.empty()) return Status::Corruption("replicate: a slot flush names a key");
      return Status::OK();
    case EntryKind::kDelta:
      FLOE_RETURN_IF_ERROR(r.GetFixed16(&e->type));
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&e->cell_version));
      return r.GetLengthPrefixed(&e->bytes, max_bytes);
    case EntryKind::kRecord:
      FLOE_RETURN_IF_ERROR(r.GetFixed32(&e->origin));
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&e->client));
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&e->seq));
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&e->age_ms));
      return r.GetLengthPrefixed(&e->bytes, max_bytes);
  }
  return Status::Corruption("replicate: unknown kind");
}

// A count read from `r`, refused when the bytes left could not hold that many elements of at
// least `min_bytes` each, or when it passes `max`.
Status GetCount(wire::Reader& r, uint64_t min_bytes, uint64_t max, const char* what, uint64_t* n) {
  FLOE_RETURN_IF_ERROR(r.GetVarint64(n));
  if (*n > max || *n > r.remaining() / min_bytes) {
    return Status::Corruption(std::string("replicate: ") + what + " count out of range");
  }
  return Status::OK();
}

// The slots a message names, each once.
class SlotSet {
 public:
  bool Insert(uint16_t slot) {
    uint64_t& word = bits_[slot / 64];
    const uint64_t bit = uint64_t{1} << (slot % 64);
    if ((word & bit) != 0) return false;
    word |= bit;
    return true;
  }

 private:
  std::vector<uint64_t> bits_ = std::vector<uint64_t>(kSlots / 64);
};

}  // namespace

std::string EncodeRequest(const Request& request) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(request.id);
  w.PutFixed32(request.target);
  w.PutVarint64(request.life);
  w.PutVarint64(request.groups.size());
  for (const Group& g : request.groups) {
    w.PutFixed16(g.slot);
    w.PutVarint64(g.ownership);
    w.PutVarint64(g.start);
    w.PutVarint64(g.committed);
    w.PutU8(g.fill ? 1 : 0);
    if (g.fill) {
      const Fill& f = *g.fill;
      w.PutVarint64(f.id);
      w.PutVarint64(f.from);
      w.PutVarint64(f.batch);
      w.PutVarint64(f.top);
      w.PutU8(f.last ? 1 : 0);
      w.PutVarint64(f.puts.size());
      for (const Entry& e : f.puts) PutEntry(w, e);
    }
    w.PutVarint64(g.changes.size());
    for (const Change& c : g.changes) {
      w.PutVarint64(c.n);
      w.PutVarint64(c.part);
      w.PutU8(c.more ? 1 : 0);
      w.PutVarint64(c.entries.size());
      for (const Entry& e : c.entries) PutEntry(w, e);
    }
  }
  return out;
}

Result<Request> DecodeRequest(std::string_view bytes, uint64_t max_bytes) {
  wire::Reader r(bytes);
  Request req;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&req.id));
  FLOE_RETURN_IF_ERROR(r.GetFixed32(&req.target));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&req.life));
  uint64_t groups = 0;
  FLOE_RETURN_IF_ERROR(GetCount(r, kMinGroupBytes, kSlots, "slot", &groups));
  req.groups.resize(groups);
  SlotSet seen;
  uint64_t total_changes = 0;
  uint64_t total_entries = 0;
  for (Group& g : req.groups) {
    FLOE_RETURN_IF_ERROR(r.GetFixed16(&g.slot));
    if (g.slot >= kSlots) return Status::Corruption("replicate: slot out of range");
    if (!seen.Insert(g.slot)) return Status::Corruption("replicate: a slot named twice");
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&g.ownership));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&g.start));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&g.committed));
    uint8_t group_flags = 0;
    FLOE_RETURN_IF_ERROR(r.GetU8(&group_flags));
    if ((group_flags & ~1u) != 0) return Status::Corruption("replicate: unknown group flags");
    if ((group_flags & 1) != 0) {
      Fill& f = g.fill.emplace();
      uint8_t last = 0;
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&f.id));
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&f.from));
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&f.batch));
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&f.top));
      FLOE_RETURN_IF_ERROR(r.GetU8(&last));
      if (f.id == 0) return Status::Corruption("replicate: a fill without a number");
      if (last > 1) return Status::Corruption("replicate: unknown fill flags");
      if (f.from < g.start) return Status::Corruption("replicate: a fill from before its owner");
      f.last = last == 1;
      uint64_t puts = 0;
      FLOE_RETURN_IF_ERROR(GetCount(r, kMinEntryBytes, kMaxEntries - total_entries, "put", &puts));
      if (f.batch == 0 && (puts != 0 || f.last || f.top != 0)) {
        return Status::Corruption("replicate: fill data without a batch number");
      }
      if (f.batch != 0 && f.top < f.from) {
        return Status::Corruption("replicate: a fill batch read before its fill's start");
      }
      total_entries += puts;
      f.puts.resize(puts);
      for (Entry& e : f.puts) {
        FLOE_RETURN_IF_ERROR(GetEntry(r, max_bytes, &e));
        if (e.kind != EntryKind::kPut)
          return Status::Corruption("replicate: a fill entry not a put");
      }
    }
    uint64_t changes = 0;
    FLOE_RETURN_IF_ERROR(
        GetCount(r, kMinChangeBytes, kMaxChanges - total_changes, "change", &changes));
    total_changes += changes;
    g.changes.resize(changes);
    const Change* prev = nullptr;
    for (Change& c : g.changes) {
      uint8_t flags = 0;
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&c.n));
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&c.part));
      FLOE_RETURN_IF_ERROR(r.GetU8(&flags));
      if (c.n == 0) return Status::Corruption("replicate: a change without a number");
      if (g.fill && c.n <= g.fill->from) {
        return Status::Corruption("replicate: a change at or below its fill's start");
      }
      if ((flags & ~1u) != 0) return Status::Corruption("replicate: unknown flags");
      c.more = (flags & 1) != 0;
      // In n order; a part is followed by the next part of the same change, and a change's
      // first part here may continue one begun in an earlier message.
      if (prev != nullptr && (prev->more ? c.n != prev->n || c.part != prev->part + 1
                                         : c.n <= prev->n || c.part != 0)) {
        return Status::Corruption("replicate: changes out of order");
      }
      uint64_t entries = 0;
      FLOE_RETURN_IF_ERROR(
          GetCount(r, kMinEntryBytes, kMaxEntries - total_entries, "entry", &entries));
      total_entries += entries;
      c.entries.resize(entries);
      for (Entry& e : c.entries) FLOE_RETURN_IF_ERROR(GetEntry(r, max_bytes, &e));
      prev = &c;
    }
  }
  if (r.remaining() != 0) return Status::Corruption("replicate: trailing bytes");
  return req;
}

std::string EncodeAnswer(const Answer& answer) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(answer.id);
  w.PutU8(answer.not_my_life ? 1 : 0);
  w.PutVarint64(answer.headroom);
  w.PutVarint64(answer.slots.size());
  for (const SlotAnswer& s : answer.slots) {
    w.PutFixed16(s.slot);
    w.PutU8(static_cast<uint8_t>(s.status));
    w.PutVarint64(s.ownership);
    w.PutVarint64(s.applied);
    w.PutVarint64(s.received);
    w.PutVarint64(s.next_part);
    w.PutVarint64(s.need_state.size());
    for (const std::string& key : s.need_state) w.PutLengthPrefixed(key);
    w.PutVarint64(s.fill_id);
    w.PutVarint64(s.filled);
  }
  return out;
}

Result<Answer> DecodeAnswer(std::string_view bytes) {
  wire::Reader r(bytes);
  Answer a;
  uint8_t status = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&a.id));
  FLOE_RETURN_IF_ERROR(r.GetU8(&status));
  if (status > 1) return Status::Corruption("replicate answer: unknown status");
  a.not_my_life = status == 1;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&a.headroom));
  uint64_t slots = 0;
  FLOE_RETURN_IF_ERROR(GetCount(r, kMinSlotAnswerBytes, kSlots, "slot", &slots));
  a.slots.resize(slots);
  SlotSet seen;
  uint64_t total_keys = 0;
  for (SlotAnswer& s : a.slots) {
    uint8_t st = 0;
    FLOE_RETURN_IF_ERROR(r.GetFixed16(&s.slot));
    if (s.slot >= kSlots) return Status::Corruption("replicate answer: slot out of range");
    if (!seen.Insert(s.slot)) return Status::Corruption("replicate answer: a slot named twice");
    FLOE_RETURN_IF_ERROR(r.GetU8(&st));
    if (st > kLastSlotStatus) return Status::Corruption("replicate answer: unknown slot status");
    s.status = static_cast<SlotStatus>(st);
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&s.ownership));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&s.applied));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&s.received));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&s.next_part));
    uint64_t keys = 0;
    // Each key takes at least its length's byte; at most kMaxNeedState in the whole answer.
    FLOE_RETURN_IF_ERROR(GetCount(r, 1, kMaxNeedState - total_keys, "key", &keys));
    total_keys += keys;
    s.need_state.reserve(keys);
    for (uint64_t i = 0; i < keys; i++) {
      std::string_view key;
      FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&key, kMaxKeyBytes));
      s.need_state.emplace_back(key);
    }
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&s.fill_id));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&s.filled));
  }
  if (r.remaining() != 0) return Status::Corruption("replicate answer: trailing bytes");
  return a;
}

uint64_t ChargeOf(const Change& change) {
  constexpr uint64_t kChangeOverhead = 64;
  constexpr uint64_t kEntryOverhead = sizeof(Entry);
  uint64_t bytes = kChangeOverhead;
  for (const Entry& e : change.entries) bytes += kEntryOverhead + e.key.size() + e.bytes.size();
  return bytes;
}

}  // namespace floe::replica
