// Values that change in place (private to server/): sketch cells, and string cells
// (string_cell.h).
//
// A sketch (HyperLogLog, Count-Min, Bloom filter) is large and changes by small steps, and so
// does a string built by APPEND or SETRANGE: copying the whole value into a new immutable Value
// per change would make every change cost the whole value. So such a value carries a Cell, its
// live state, and changes happen in the cell under the cell's own lock. The rules:
//
//   1. The cell is the truth. A value is made with its cell (MakeCellValue) and an empty
//      payload, so nothing is held twice; nothing reads a cell value's payload. A sketch value
//      without a cell is Corruption (CellOf).
//   2. A cell's state lives in a shared box {mutex, object, superseded, change count, charged
//      bytes}. A rewrite that keeps the contents and changes only the key or the expiry
//      (EXPIRE family, PERSIST, RENAME, RENAMENX, GETEX) makes a new value whose cell shares the
//      box (RewriteValue): it copies no bytes and changes no state, so a rewrite that fails
//      (a key too long, a lost compare-and-swap) leaves the current value exactly as it was. At
//      most one current value points to a box: EXPIRE and PERSIST replace the old value with
//      one compare-and-swap; RENAME runs exclusive and removes the source.
//   3. Every change of the object happens in place, under the box mutex (TryMutate): adds,
//      PFMERGE into an existing sketch, a Bloom filter growing a sub-filter, CMS.MERGE, APPEND,
//      SETRANGE. A change made through a value that SET or DEL replaced meanwhile (rule 5)
//      lands in a box no lookup reaches any more: it is ordered before that replacement.
//   4. A replacement computed from a string cell's bytes (INCR, INCRBYFLOAT, SET ... GET,
//      GETSET, GETDEL) holds the box mutex from its read until the store's compare-and-swap
//      has replaced the value, and only then marks the box superseded (ReplaceLocked); a
//      failed or refused replacement marks nothing. A change that finds its box superseded
//      looks the key up again. That retry cannot spin on one value: the mark is set only after
//      the compare-and-swap took the value out of the store, and the store never makes a
//      removed value current again, so the next lookup finds another value or none -- each
//      retry follows a write another client completed. Sketch boxes are never superseded
//      (rule 3 covers every sketch change).
//   5. A writer that replaces the value without reading it (SET, DEL, HLL.UNION, HLL.IMPORT)
//      neither locks nor marks.
//   6. WATCH compares the value's version and the box's change count (changes()), so an
//      in-place change aborts a transaction watching the key, as a replacement does.
//   7. Exclusive commands (EXEC, MSET, RENAME, ...) stop every I/O thread, and in-place
//      changes run on I/O threads, so an exclusive command sees no change half done.
//   8. Memory: a box charges the heap bytes of its object (HeapBytes: capacity, not size) to
//      the store's MemoryAccount when it is made, measures again after every in-place change and
//      charges the difference, and gives all of it back when the last value pointing to it
//      dies. A command about to allocate for a client (a new sketch, a sub-filter, HLL
//      registers, string growth) checks the size against proto-max-bulk-len and
//      `used + reserved + size > maxmemory` (CheckAllocation) before allocating, and keeps the
//      size reserved until the command ends.
//   9. Readers copy out under the box mutex (Read); string readers go through WithStringBytes
//      (string_cell.h), never payload().

#ifndef FLOE_SERVER_INTERNAL_SKETCH_CELL_H_
#define FLOE_SERVER_INTERNAL_SKETCH_CELL_H_

#include <algorithm>
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

// Redis's reply when memory is short.
inline constexpr char kOomError[] = "OOM command not allowed when used memory > 'maxmemory'.";

// Whether the node may allocate `bytes` more for a client (rule 8): ResourceExhausted with
// Redis's OOM text when maxmemory is set and used + reserved + bytes would pass it; otherwise
// the bytes stay reserved until the command ends (CommandContext::reserved), so commands
// running at once on other threads count them before the allocation shows in the store; a
// command that abandons an attempt and retries gives back what the attempt reserved
// (MemoryReservation::ReleaseSince). Overflow-safe. From 1 MiB up used memory is measured
// afresh (UsedMemoryNow: a microsecond), so a burst of large allocations cannot all pass
// against the engine's figure cached for a millisecond.
// The same for work that is not a client's command (the replica store's installs): the bytes
// stay reserved in `reserved` until it goes.
inline Status CheckAllocation(Engine& engine, MemoryReservation& reserved, uint64_t bytes) {
  const int64_t limit = engine.maxmemory();
  if (limit <= 0 || bytes == 0) return Status::OK();
  if (bytes > static_cast<uint64_t>(limit)) return Status::ResourceExhausted(kOomError);
  const int64_t used = bytes >= (uint64_t{1} << 20) ? engine.UsedMemoryNow() : engine.UsedMemory();
  if (!engine.TryReserveMemory(static_cast<int64_t>(bytes), used, limit)) {
    return Status::ResourceExhausted(kOomError);
  }
  reserved.Add(&engine, static_cast<int64_t>(bytes));
  return Status::OK();
}
inline Status CheckAllocation(CommandContext& ctx, uint64_t bytes) {
  return CheckAllocation(ctx.engine, ctx.reserved, bytes);
}

// The heap bytes a cell's object holds (rule 8).
inline size_t HeapBytes(const std::string& s) { return s.capacity(); }
template <typename T>
size_t HeapBytes(const T& object) {
  return object.MemoryBytes();
}

// The type-independent face of a cell: what WATCH and rewrites need.
class MutableObject : public store::DecodedObject {
 public:
  // How many in-place changes the box has had (rule 6).
  virtual uint64_t changes() const = 0;
  // A cell sharing this one's box, for a value that replaces this one's (rule 2).
  virtual std::unique_ptr<store::DecodedObject> Share() const = 0;
  // Identifies the box (equal for cells that share one).
  virtual const void* box() const = 0;
};

// A cell holding a T: a sketch class (MemoryBytes()) or std::string. Reached through the
// value's const DecodedObject pointer; the box's state is guarded by its mutex, so the methods
// are const. Thread-safe.
//
// The lock is a SpinMutex: adds hold it for tens of nanoseconds and a hot key has every I/O
// thread queueing on it.
template <typename T>
class Cell final : public MutableObject {
  struct Box {
    Box(T obj, store::MemoryAccount acct) FLOE_NO_THREAD_SAFETY_ANALYSIS
        : object(std::move(obj)),
          charged(static_cast<int64_t>(HeapBytes(object))),
          account(std::move(acct)) {
      account.Charge(charged.load(std::memory_order_relaxed));
    }
    ~Box() { account.Charge(-charged.load(std::memory_order_relaxed)); }
    void Recharge() FLOE_REQUIRES(mu) {
      const auto now = static_cast<int64_t>(HeapBytes(object));
      const int64_t before = charged.load(std::memory_order_relaxed);
      if (now != before) account.Charge(now - before);
      charged.store(now, std::memory_order_relaxed);
    }

    mutable SpinMutex mu;
    T object FLOE_GUARDED_BY(mu);
    bool superseded FLOE_GUARDED_BY(mu) = false;
    // Written under mu (Recharge); atomic because the store reads it (HeldBytes) when it
    // retires a value, possibly on a thread that holds mu (rule 4). relaxed: a size hint.
    std::atomic<int64_t> charged;
    std::atomic<uint64_t> changes{0};
    store::MemoryAccount account;
  };

 public:
  // Charges the object's bytes to `account` (rule 8).
  Cell(T object, const store::MemoryAccount& account)
      : box_(std::make_shared<Box>(std::move(object), account)) {}

  // Runs fn(T&, bool* changed) in place (rule 3) and returns its result; nullopt if the box is
  // superseded (rule 4: look the key up again). fn must check an allocation before making it
  // (rule 8); the box is measured again afterwards.
  template <typename Fn>
  auto TryMutate(Fn&& fn) const -> std::optional<std::invoke_result_t<Fn, T&, bool*>> {
    Box& b = *box_;
    SpinLock lock(&b.mu);
    if (b.superseded) return std::nullopt;
    bool changed = false;
    auto result = fn(b.object, &changed);
    b.Recharge();
    // relaxed: WATCH reads the count on the same key after its own lookup; the mutex orders
    // the change itself.
    if (changed) b.changes.fetch_add(1, std::memory_order_relaxed);
    return result;
  }

  // Runs fn(const T&) under the mutex and returns its result.
  template <typename Fn>
  auto Read(Fn&& fn) const -> std::invoke_result_t<Fn, const T&> {
    Box& b = *box_;
    SpinLock lock(&b.mu);
    return fn(std::as_const(b.object));
  }

  // Rule 4: runs fn(const T&, bool* supersede) -- which reads the object and replaces the value
  // in the store -- with the mutex held throughout, and marks the box superseded if fn set
  // *supersede. nullopt (fn not run) if the box is superseded already.
  template <typename Fn>
  auto ReplaceLocked(Fn&& fn) const -> std::optional<std::invoke_result_t<Fn, const T&, bool*>> {
    Box& b = *box_;
    SpinLock lock(&b.mu);
    if (b.superseded) return std::nullopt;
    bool supersede = false;
    auto result = fn(std::as_const(b.object), &supersede);
    if (supersede) b.superseded = true;
    return result;
  }

  uint64_t changes() const override { return box_->changes.load(std::memory_order_relaxed); }
  // relaxed: a hint for when to reclaim (store.h, rule 6).
  size_t HeldBytes() const override {
    return static_cast<size_t>(std::max<int64_t>(box_->charged.load(std::memory_order_relaxed), 0));
  }
  std::unique_ptr<store::DecodedObject> Share() const override {
    return std::unique_ptr<store::DecodedObject>(new Cell(box_));
  }
  const void* box() const override { return box_.get(); }

 private:
  explicit Cell(std::shared_ptr<Box> box) : box_(std::move(box)) {}
  std::shared_ptr<Box> box_;
};

template <typename T>
using SketchCell = Cell<T>;

// The cell of a sketch value (rule 1).
template <typename T>
Result<const Cell<T>*> CellOf(const store::Value& v) {
  if (const auto* c = dynamic_cast<const Cell<T>*>(v.decoded())) return c;
  return Status::Corruption("sketch value without its cell");
}

// A new value of `type` holding `object` in a cell charged to the store (rules 1 and 8).
// `account`: the memory account of the store the value goes into.
template <typename T>
Result<store::ValuePtr> MakeCellValue(const store::MemoryAccount& account, std::string_view key,
                                      uint16_t type, T object, int64_t expire_at_ms) {
  FLOE_ASSIGN_OR_RETURN(store::ValuePtr v, store::Value::Make(key, type, {}, expire_at_ms));
  v->CacheDecoded(std::make_unique<Cell<T>>(std::move(object), account));
  return v;
}
template <typename T>
Result<store::ValuePtr> MakeCellValue(CommandContext& ctx, std::string_view key, uint16_t type,
                                      T object, int64_t expire_at_ms) {
  return MakeCellValue(ctx.store().memory_account(), key, type, std::move(object), expire_at_ms);
}

// Plain strings at least this long move into a cell when first rewritten, so that later
// rewrites share it instead of copying them again.
inline constexpr size_t kRewriteIntoCellBytes = 64 * 1024;

// The same value under another key or expiry (rule 2): a value with a cell gets a new cell
// sharing its box; a plain string of kRewriteIntoCellBytes or more is copied once into a new
// cell; anything else is copied. InvalidArgument if the key is too long.
inline Result<store::ValuePtr> RewriteValue(CommandContext& ctx, const store::Value& v,
                                            std::string_view key, int64_t expire_at_ms) {
  const auto* cell = dynamic_cast<const MutableObject*>(v.decoded());
  if (cell == nullptr && v.type() == static_cast<uint16_t>(ValueType::kString) &&
      v.payload().size() >= kRewriteIntoCellBytes) {
    return MakeCellValue(ctx, key, v.type(), std::string(v.payload()), expire_at_ms);
  }
  FLOE_ASSIGN_OR_RETURN(store::ValuePtr next,
                        store::Value::Make(key, v.type(), v.payload(), expire_at_ms));
  if (cell != nullptr) next->CacheDecoded(cell->Share());
  return next;
}

// The change count WATCH adds to a value's version (rule 6).
inline uint64_t ChangesOf(const store::Value& v) {
  const auto* m = dynamic_cast<const MutableObject*>(v.decoded());
  return m != nullptr ? m->changes() : 0;
}

// Applies an operation to the sketch at `key`:
//   cell_of(const Value&) -> Result<const Cell<T>*>  checks the type; its error is returned
//   create() -> Result<T>                              makes the sketch when `key` is absent
//                                                      (return an error to refuse)
//   op(T&, bool* changed) -> Result<R>                 does the work, in place under the cell's
//                                                      mutex (rule 3); it checks what it would
//                                                      allocate first and changes nothing when
//                                                      it returns an error
// Returns op's result, or the first error; *created (if given) says whether the sketch op
// changed is one this call made and installed (create() may run and lose the race to another
// client, whose sketch op then changes). The loop repeats only when the key was created or
// removed by another client between the lookup and the compare-and-swap (sketch boxes are
// never superseded, rule 4).
template <typename T, typename R, typename CellFn, typename CreateFn, typename OpFn>
Result<R> UpdateSketch(CommandContext& ctx, std::string_view key, uint16_t type, CellFn cell_of,
                       CreateFn create, OpFn op, bool* created = nullptr) {
  if (created != nullptr) *created = false;
  // What an abandoned attempt reserved (a create() whose sketch was not installed) is given
  // back before the next, so a retry cannot refuse its own command.
  const int64_t mark = ctx.reserved.bytes();
  for (;;) {
    ctx.reserved.ReleaseSince(mark);
    if (store::ValuePtr v = Lookup(ctx, key)) {
      FLOE_ASSIGN_OR_RETURN(const Cell<T>* cell, cell_of(*v));
      std::optional<Result<R>> in_place = cell->TryMutate(op);
      if (in_place.has_value()) return std::move(*in_place);
      continue;
    }
    bool stale = false;
    std::optional<R> out;
    FLOE_RETURN_IF_ERROR(
        ctx.store().Mutate(key, [&](const store::Value* cur) -> Result<store::Mutation> {
          ctx.reserved.ReleaseSince(mark);  // the store may call this more than once
          stale = Live(cur, ctx.now_ms) != nullptr;
          if (stale) return store::Mutation::Keep();  // created meanwhile: change it instead
          FLOE_ASSIGN_OR_RETURN(T object, create());
          bool changed = false;
          FLOE_ASSIGN_OR_RETURN(R r, op(object, &changed));
          out = std::move(r);
          FLOE_ASSIGN_OR_RETURN(store::ValuePtr next,
                                MakeCellValue(ctx, key, type, std::move(object), 0));
          return store::Mutation::Put(std::move(next));
        }));
    if (stale) continue;
    if (created != nullptr) *created = true;
    return std::move(*out);
  }
}

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_SKETCH_CELL_H_
