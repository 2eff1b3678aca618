// Sketch values that change in place (private to server/).
//
// A sketch (HyperLogLog, Count-Min, Bloom filter) is large and changes by small steps: copying
// 12 KB to 1 MB into a new immutable value per PFADD or BF.ADD would make every add cost the
// whole sketch. So a sketch value carries a SketchCell, its live state, and adds change the
// cell in place under the cell's own mutex. The rules:
//
//   1. The cell is the truth. The value's payload holds the bytes the cell was created from and
//      goes stale after the first in-place change; nothing reads a sketch's payload except to
//      build its cell (CellOf) and no code path copies it (SealedPayload does, below).
//   2. An in-place change (TryMutate) happens only while the cell is unsealed, under its mutex.
//   3. Whoever replaces a sketch value with one derived from it (PFMERGE into it, EXPIRE, RENAME,
//      a Bloom filter growing a sub-filter, ...) first seals the cell under the mutex, then reads
//      it, then swaps the value with the store's compare-and-swap. An add that comes after the
//      seal sees it, fails, and starts again from the store's current value; so every add either
//      is in the state the replacement copied or lands in the replacement. None is lost.
//   4. A writer that replaces the value without reading it (SET, DEL) does not seal: an add still
//      running on the old cell overlapped that write and is ordered before it.
//   5. WATCH compares the value's version and the cell's change count (changes()), so an
//      in-place change aborts a transaction watching the key, as a replacement does.
//   6. Exclusive commands (EXEC, MSET, ...) stop every I/O thread, and in-place changes run on
//      I/O threads, so a transaction sees no sketch change half done.

#ifndef FLOE_SERVER_INTERNAL_SKETCH_CELL_H_
#define FLOE_SERVER_INTERNAL_SKETCH_CELL_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "base/base.h"
#include "server/internal/command.h"
#include "store/store.h"

namespace floe::server::internal {

// The lock is a SpinMutex: adds hold it for tens of nanoseconds and a hot key has every I/O
// thread queueing on it. (Serializing a large filter holds it longer; that is a copy, rare.)

// The type-independent face of a cell: what WATCH and value rewrites need.
class MutableObject : public store::DecodedObject {
 public:
  // How many in-place changes the cell has had.
  virtual uint64_t changes() const = 0;
  // Seals the cell (rule 3) and returns its current serialized bytes.
  virtual std::string SealedPayload() const = 0;
};

// T is a sketch class with Serialize() and a static Parse(). The cell is reached through the
// value's const DecodedObject pointer; its state is guarded by mu_, so the methods are const.
template <typename T>
class SketchCell final : public MutableObject {
 public:
  explicit SketchCell(T sketch) : sketch_(std::move(sketch)) {}

  // Runs fn(T&, bool* changed) in place and returns its result; nullopt if the cell is sealed
  // (look the key up again).
  template <typename Fn>
  auto TryMutate(Fn&& fn) const -> std::optional<std::invoke_result_t<Fn, T&, bool*>> {
    SpinLock lock(&mu_);
    if (sealed_) return std::nullopt;
    bool changed = false;
    auto result = fn(sketch_, &changed);
    // relaxed: WATCH reads the count on the same key after its own lookup; the mutex orders
    // the change itself.
    if (changed) changes_.fetch_add(1, std::memory_order_relaxed);
    return result;
  }

  // Runs fn(const T&) under the mutex and returns its result.
  template <typename Fn>
  auto Read(Fn&& fn) const -> std::invoke_result_t<Fn, const T&> {
    SpinLock lock(&mu_);
    return fn(std::as_const(sketch_));
  }

  // Seals the cell (rule 3) and returns a copy of its state.
  T SealAndCopy() const {
    SpinLock lock(&mu_);
    sealed_ = true;
    return sketch_;
  }

  uint64_t changes() const override { return changes_.load(std::memory_order_relaxed); }
  std::string SealedPayload() const override {
    SpinLock lock(&mu_);
    sealed_ = true;
    return sketch_.Serialize();
  }

 private:
  mutable SpinMutex mu_;
  mutable bool sealed_ FLOE_GUARDED_BY(mu_) = false;
  mutable T sketch_ FLOE_GUARDED_BY(mu_);
  mutable std::atomic<uint64_t> changes_{0};
};

// The cell of a sketch value, built from its payload on first use. Corruption if the payload
// does not decode.
template <typename T>
Result<const SketchCell<T>*> CellOf(const store::Value& v) {
  if (const auto* c = dynamic_cast<const SketchCell<T>*>(v.decoded())) return c;
  Result<T> parsed = T::Parse(v.payload());
  if (!parsed.ok()) return parsed.status();
  const store::DecodedObject* cached =
      v.CacheDecoded(std::make_unique<SketchCell<T>>(std::move(parsed).value()));
  const auto* c = dynamic_cast<const SketchCell<T>*>(cached);
  if (c == nullptr) return Status::Corruption("value holds another kind of object");
  return c;
}

// A new value of `type` holding `sketch`, with its cell attached.
template <typename T>
Result<store::ValuePtr> MakeSketchValue(std::string_view key, uint16_t type, T sketch,
                                        int64_t expire_at_ms) {
  FLOE_ASSIGN_OR_RETURN(store::ValuePtr v,
                        store::Value::Make(key, type, sketch.Serialize(), expire_at_ms));
  v->CacheDecoded(std::make_unique<SketchCell<T>>(std::move(sketch)));
  return v;
}

// The bytes a copy of `v` must hold: for a sketch, its cell's state, sealed (rule 3; the cell is
// built first if the value has none yet, so an add racing with the copy cannot go into a cell
// nobody sealed); the payload for anything else. Corruption if a sketch's payload is corrupt.
// Defined in keys.cc, which knows every sketch type.
Result<std::string> CurrentPayload(const store::Value& v);

// The change count WATCH adds to a value's version (rule 5).
inline uint64_t ChangesOf(const store::Value& v) {
  const auto* m = dynamic_cast<const MutableObject*>(v.decoded());
  return m != nullptr ? m->changes() : 0;
}

// Applies an operation to the sketch at `key`:
//   cell_of(const Value&) -> Result<const SketchCell<T>*>  checks the type; its error is returned
//   create() -> Result<T>                                    makes the sketch when `key` is absent
//                                                            (return an error to refuse)
//   op(T&, bool in_place, bool* changed) -> std::optional<R> does the work; in place it may
//                                                            return nullopt to ask for a copy
//                                                            (a Bloom filter that must grow a
//                                                            sub-filter), run again with
//                                                            in_place false on a sealed copy
//                                                            that then replaces the value
// Returns op's result, or the first error.
template <typename T, typename R, typename CellFn, typename CreateFn, typename OpFn>
Result<R> UpdateSketch(CommandContext& ctx, std::string_view key, uint16_t type, CellFn cell_of,
                       CreateFn create, OpFn op) {
  for (;;) {
    store::ValuePtr v = Lookup(ctx, key);
    std::optional<R> out;
    bool stale = false;
    if (v) {
      FLOE_ASSIGN_OR_RETURN(const SketchCell<T>* cell, cell_of(*v));
      auto in_place =
          cell->TryMutate([&](T& sketch, bool* changed) { return op(sketch, true, changed); });
      if (!in_place.has_value()) continue;  // sealed: the value is being replaced
      if (in_place->has_value()) return std::move(**in_place);
      // op asked for a copy (rule 3: seal, copy, change, swap).
      FLOE_RETURN_IF_ERROR(
          ctx.store().Mutate(key, [&](const store::Value* cur) -> Result<store::Mutation> {
            if (cur != v.get()) {
              stale = true;
              return store::Mutation::Keep();
            }
            T copy = cell->SealAndCopy();
            bool changed = false;
            out = op(copy, false, &changed);
            FLOE_ASSIGN_OR_RETURN(store::ValuePtr next,
                                  MakeSketchValue(key, type, std::move(copy), cur->expire_at_ms()));
            return store::Mutation::Put(std::move(next));
          }));
    } else {
      FLOE_RETURN_IF_ERROR(
          ctx.store().Mutate(key, [&](const store::Value* cur) -> Result<store::Mutation> {
            if (Live(cur, ctx.now_ms) != nullptr) {
              stale = true;  // created meanwhile: add to it instead
              return store::Mutation::Keep();
            }
            FLOE_ASSIGN_OR_RETURN(T sketch, create());
            bool changed = false;
            out = op(sketch, false, &changed);
            FLOE_ASSIGN_OR_RETURN(store::ValuePtr next,
                                  MakeSketchValue(key, type, std::move(sketch), 0));
            return store::Mutation::Put(std::move(next));
          }));
    }
    if (stale) continue;
    FLOE_CHECK(out.has_value());
    return std::move(*out);
  }
}

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_SKETCH_CELL_H_
