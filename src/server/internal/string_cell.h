// Strings that change in place (private to server/), under the cell rules of sketch_cell.h.
//
// A plain string value holds its bytes in its payload and never changes. The first APPEND or
// SETRANGE on a key turns it into a string cell: a value with an empty payload whose cell owns a
// std::string with spare capacity, grown as Redis grows its strings (double up to 1 MiB, then
// 1 MiB more at a time), so n appends cost O(total bytes), not O(n * size). Every reader of a
// string's bytes goes through WithStringBytes (rule 9): for a plain string that is the payload,
// after one atomic load of the value's decoded pointer.
//
// Only string cells are ever cached on a string value, so a string value's non-null decoded
// object is a StringCell.

#ifndef FLOE_SERVER_INTERNAL_STRING_CELL_H_
#define FLOE_SERVER_INTERNAL_STRING_CELL_H_

#include <string>
#include <string_view>

#include "server/internal/sketch_cell.h"

namespace floe::server::internal {

using StringCell = Cell<std::string>;

inline constexpr uint16_t kStringValueType = static_cast<uint16_t>(ValueType::kString);
inline constexpr char kStringTooBig[] =
    "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

// The string cell of a string value, or nullptr for a plain string.
// REQUIRES: v is a string.
inline const StringCell* StringCellOf(const store::Value& v) {
  return static_cast<const StringCell*>(v.decoded());
}

// Calls fn(std::string_view bytes) with the string's bytes and returns its result; for a
// cell, under the cell's mutex (the view dies with the call). REQUIRES: v is a string.
template <typename Fn>
decltype(auto) WithStringBytes(const store::Value& v, Fn&& fn) {
  const StringCell* cell = StringCellOf(v);
  if (cell == nullptr) return fn(v.payload());
  return cell->Read(
      [&](const std::string& s) -> decltype(auto) { return fn(std::string_view(s)); });
}

// A copy of the string's bytes. REQUIRES: v is a string.
inline std::string StringBytes(const store::Value& v) {
  return WithStringBytes(v, [](std::string_view s) { return std::string(s); });
}

// The capacity a string that must hold `need` bytes grows to (Redis's rule for its strings).
inline size_t GrownCapacity(size_t need) {
  constexpr size_t kStep = size_t{1} << 20;
  return need < kStep ? need * 2 : need + kStep;
}

// Makes room in `s` for `need` bytes (amortized), or refuses: need past proto-max-bulk-len or
// the store's largest payload is kStringTooBig; growth that would pass maxmemory is the OOM
// error (rule 8), checked before allocating.
inline Status ReserveString(CommandContext& ctx, std::string* s, uint64_t need) {
  const uint64_t limit = std::min<uint64_t>(
      static_cast<uint64_t>(std::max<int64_t>(ctx.engine.proto_max_bulk_len(), 0)),
      store::kMaxPayloadBytes);
  if (need > limit) return Status::InvalidArgument(kStringTooBig);
  if (need <= s->capacity()) return Status::OK();
  const size_t capacity = std::min<uint64_t>(GrownCapacity(need), std::max(limit, need));
  FLOE_RETURN_IF_ERROR(CheckAllocation(ctx, capacity - s->capacity()));
  // Into a new string: reserve() on a non-empty one at least doubles its capacity (libstdc++),
  // which would allocate far more than the growth just checked against maxmemory.
  std::string grown;
  grown.reserve(capacity);
  grown.append(*s);
  s->swap(grown);
  return Status::OK();
}

// The change APPEND or SETRANGE makes: fn(std::string* s) -> Result<int64_t> edits the bytes
// (calling ReserveString before it grows them), returns the reply, and sets *changed when it
// changed anything. ChangeString runs it in the key's cell, first turning an absent key or a
// plain string into a cell (one copy per key, not per change). WRONGTYPE for other types.
template <typename Fn>
Result<int64_t> ChangeString(CommandContext& ctx, std::string_view key, Fn&& fn) {
  // An attempt that loses to another writer is abandoned with what it reserved (sketch_cell.h,
  // CheckAllocation): given back before the next.
  const int64_t mark = ctx.reserved.bytes();
  for (;;) {
    ctx.reserved.ReleaseSince(mark);
    store::ValuePtr v = Lookup(ctx, key);
    if (v && v->type() != kStringValueType) return Status::InvalidArgument(kWrongType);
    if (v && StringCellOf(*v) != nullptr) {
      std::optional<Result<int64_t>> r =
          StringCellOf(*v)->TryMutate([&](std::string& s, bool* changed) {
            Result<int64_t> out = fn(&s, changed);
            if (!out.ok()) *changed = false;
            return out;
          });
      if (r.has_value()) return std::move(*r);
      continue;  // superseded (sketch_cell.h, rule 4)
    }
    // Absent or plain: the changed bytes go into a new cell that replaces v, if v is still
    // current (nothing to lose if not: a plain value never changes, so we start again).
    std::string s;
    if (v) {
      const std::string_view old = v->payload();
      FLOE_RETURN_IF_ERROR(ReserveString(ctx, &s, old.size()));
      s.assign(old);
    }
    bool changed = false;
    FLOE_ASSIGN_OR_RETURN(int64_t reply, fn(&s, &changed));
    if (!changed) return reply;
    // Made once, outside the update function, which the store may call more than once.
    FLOE_ASSIGN_OR_RETURN(
        store::ValuePtr next,
        MakeCellValue(ctx, key, kStringValueType, std::move(s), v ? v->expire_at_ms() : 0));
    bool stale = false;
    FLOE_RETURN_IF_ERROR(
        ctx.store().Mutate(key, [&](const store::Value* cur) -> Result<store::Mutation> {
          stale = v ? cur != v.get() : Live(cur, ctx.now_ms) != nullptr;
          if (stale) return store::Mutation::Keep();
          return store::Mutation::Put(next);
        }));
    if (!stale) return reply;
  }
}

// A read-modify-write of a string that replaces the value (INCR, INCRBYFLOAT, SET ... GET,
// GETSET, GETDEL): decide(const Value* cur, std::string_view bytes) -> Result<Mutation> as in
// Store::Update, where `bytes` are cur's string bytes (empty if cur is null or not a string).
// For a string cell it runs under the cell's mutex until the compare-and-swap is done, and
// supersedes the cell if the value was replaced (sketch_cell.h, rule 4). Returns decide's
// error, if any. For a plain string it costs what Store::Mutate costs, plus one load.
template <typename Fn>
Status ReplaceString(CommandContext& ctx, std::string_view key, Fn&& decide) {
  for (;;) {
    bool cell_found = false;
    Status r = ctx.store().Mutate(key, [&](const store::Value* cur) -> Result<store::Mutation> {
      cell_found =
          cur != nullptr && cur->type() == kStringValueType && StringCellOf(*cur) != nullptr;
      if (cell_found) return store::Mutation::Keep();
      const bool string = cur != nullptr && cur->type() == kStringValueType;
      return decide(cur, string ? cur->payload() : std::string_view());
    });
    if (!cell_found) return r;
    store::ValuePtr v = ctx.store().Get(key);
    if (!v || v->type() != kStringValueType || StringCellOf(*v) == nullptr) continue;
    bool stale = false;
    std::optional<Result<store::ValuePtr>> locked =
        StringCellOf(*v)->ReplaceLocked([&](const std::string& bytes, bool* supersede) {
          Result<store::ValuePtr> out =
              ctx.store().Update(key, [&](const store::Value* cur) -> Result<store::Mutation> {
                stale = cur != v.get();
                if (stale) return store::Mutation::Keep();
                return decide(cur, std::string_view(bytes));
              });
          // Replaced by a value not sharing this box (GETEX-style rewrites share it): from now
          // on no lookup returns v, so in-place changes through it must look again.
          if (out.ok() && !stale && out->get() != v.get()) {
            const auto* next =
                *out ? dynamic_cast<const MutableObject*>((*out)->decoded()) : nullptr;
            *supersede = next == nullptr || next->box() != StringCellOf(*v)->box();
          }
          return out;
        });
    if (!locked.has_value() || stale) continue;
    return locked->status();
  }
}

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_STRING_CELL_H_
