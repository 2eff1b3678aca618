#include "store/store.h"

#include <sys/mman.h>

#include <bit>
#include <cstdlib>
#include <cstring>
#include <new>
#include <unordered_map>
#include <vector>

namespace floe::store {

using internal::EpochDomain;
using internal::Guard;

// ---------------------------------------------------------------------------------------------
// Keys.

std::string_view HashTag(std::string_view key) {
  const size_t open = key.find('{');
  if (open == std::string_view::npos) return key;
  const size_t close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

uint64_t HomeHash(std::string_view key) { return HashBytes(HashTag(key)); }

Result<Key> Key::Make(std::string_view bytes) {
  if (bytes.size() > kMaxKeyBytes) {
    return Status::InvalidArgument("key of " + std::to_string(bytes.size()) +
                                   " bytes exceeds the limit of " + std::to_string(kMaxKeyBytes));
  }
  return Key(std::string(bytes), HashBytes(bytes), HomeHash(bytes));
}

// ---------------------------------------------------------------------------------------------
// Values.

namespace {

// Versions are unique per process without a shared counter on the hot path: each thread takes
// a block of 4096 from a global counter and hands them out locally.
uint64_t NextVersion() {
  static std::atomic<uint64_t> next_block{1};
  constexpr uint64_t kBlock = 4096;
  thread_local uint64_t next = 0;
  thread_local uint64_t end = 0;
  if (next == end) {
    // relaxed: only uniqueness matters, which the atomic increment gives by itself.
    next = next_block.fetch_add(kBlock, std::memory_order_relaxed);
    end = next + kBlock;
  }
  return next++;
}

}  // namespace

Result<ValuePtr> Value::Make(std::string_view key, uint16_t type, std::string_view payload,
                             int64_t expire_at_ms) {
  return MakeVersioned(key, type, payload, expire_at_ms, NextVersion());
}

Result<ValuePtr> Value::MakeVersioned(std::string_view key, uint16_t type, std::string_view payload,
                                      int64_t expire_at_ms, uint64_t version) {
  if (key.size() > kMaxKeyBytes) {
    return Status::InvalidArgument("key of " + std::to_string(key.size()) +
                                   " bytes exceeds the limit of " + std::to_string(kMaxKeyBytes));
  }
  if (payload.size() > kMaxPayloadBytes) {
    return Status::InvalidArgument("value of " + std::to_string(payload.size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(kMaxPayloadBytes));
  }
  const uint16_t flags = expire_at_ms != 0 ? kHasExpiry : 0;
  const size_t expiry_bytes = expire_at_ms != 0 ? sizeof(int64_t) : 0;
  void* mem = ::operator new(sizeof(Value) + expiry_bytes + key.size() + payload.size());
  auto* v = new (mem) Value(type, flags, static_cast<uint32_t>(key.size()),
                            static_cast<uint32_t>(payload.size()), version);
  char* p = v->data();
  if (expiry_bytes != 0) std::memcpy(p, &expire_at_ms, sizeof(expire_at_ms));
  p += expiry_bytes;
  if (!key.empty()) std::memcpy(p, key.data(), key.size());
  if (!payload.empty()) std::memcpy(p + key.size(), payload.data(), payload.size());
  return ValuePtr::Adopt(v);
}

Value::~Value() { delete decoded_.load(std::memory_order_relaxed); }

void Value::Unref() const {
  // acq_rel: the release orders this thread's reads of the value before the decrement; the
  // acquire on the final decrement makes every other thread's reads happen before the delete.
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    const_cast<Value*>(this)->~Value();
    ::operator delete(const_cast<Value*>(this));
  }
}

const DecodedObject* Value::CacheDecoded(std::unique_ptr<DecodedObject> obj) const {
  DecodedObject* expected = nullptr;
  // acq_rel: release publishes obj's contents; acquire (also on failure) sees the winner's.
  if (decoded_.compare_exchange_strong(expected, obj.get(), std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
    return obj.release();
  }
  return expected;
}

// ---------------------------------------------------------------------------------------------
// The table.
//
// A value word is 0 (empty: never claimed), kTombstone (claimed, key removed), or a Value*
// (8-byte aligned, so bit 0 is free). Bit 0 set means the slot is frozen by a rebuild.

namespace {

constexpr uintptr_t kTombstone = 2;
constexpr uintptr_t kFrozen = 1;
constexpr size_t kMinCapacity = 8;
constexpr int kShardShift = 64 - Store::kShardBits;
constexpr uint64_t kCursorMask = (uint64_t{1} << kShardShift) - 1;

inline bool IsLive(uintptr_t word) { return (word & ~kFrozen) > kTombstone; }
inline const Value* AsValue(uintptr_t word) {
  return reinterpret_cast<const Value*>(word & ~kFrozen);
}
inline uintptr_t AsWord(const Value* v) { return reinterpret_cast<uintptr_t>(v); }

// 0 marks an empty slot, so the one hash that is 0 is stored as 1; every use of the hash in the
// table (shard, home index, comparison) goes through this.
inline uint64_t TableHash(uint64_t h) { return h == 0 ? 1 : h; }

void UnrefValue(void* p) { static_cast<const Value*>(p)->Unref(); }

// Retires a value no published structure reaches any more, with the bytes freeing it may give
// back (rule 6): its block and what its decoded object holds. A cell shared by another value
// is counted here too; that only starts a reclamation early.
void RetireValue(const Value* v) {
  const DecodedObject* d = v->decoded();
  EpochDomain::Global().Retire(const_cast<Value*>(v), UnrefValue,
                               v->AllocatedBytes() + (d != nullptr ? d->HeldBytes() : 0));
}

// Scan cursors step through home positions in reverse-binary order (see ScanImpl).
inline uint64_t ReverseBits(uint64_t v) {
  v = ((v >> 1) & 0x5555555555555555ULL) | ((v & 0x5555555555555555ULL) << 1);
  v = ((v >> 2) & 0x3333333333333333ULL) | ((v & 0x3333333333333333ULL) << 2);
  v = ((v >> 4) & 0x0F0F0F0F0F0F0F0FULL) | ((v & 0x0F0F0F0F0F0F0F0FULL) << 4);
  return __builtin_bswap64(v);
}

// Large slot arrays live in 2 MiB-aligned regions marked MADV_HUGEPAGE, so a lookup in a big
// store does not pay a TLB miss (a two-dimensional page walk in a VM) for its slot on top of the
// cache miss: measured -9% per 1M-key hit and miss (docs/store.md, "Huge pages"). A region
// holds many arrays; a 128 KiB array could not have a huge page of its own. Freed arrays give
// their memory back to the kernel (MADV_DONTNEED) and keep their address range for the next
// array of the same size, so a shard that grew still leaves nothing resident behind. Arrays
// larger than a quarter of a region get a mapping of their own, unmapped when freed.
// Thread-safe.
class ArrayArena {
 public:
  static ArrayArena& Global() {
    static ArrayArena* const arena = new ArrayArena();  // never destroyed, like the epochs
    return *arena;
  }

  // `size` bytes, 4 KiB-aligned and zero-filled; throws std::bad_alloc.
  void* Allocate(size_t size) {
    size = RoundUp(size, kPage);
    if (size > kRegion / 4) return MapAligned(RoundUp(size, kHuge));
    MutexLock lock(&mu_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      return p;  // zero: MADV_DONTNEED left it unbacked
    }
    if (left_ < size) {
      // The rest of the old region (less than one array) stays unused and unbacked.
      next_ = static_cast<char*>(MapAligned(kRegion));
      left_ = kRegion;
    }
    void* p = next_;
    next_ += size;
    left_ -= size;
    return p;
  }

  void Free(void* p, size_t size) {
    size = RoundUp(size, kPage);
    if (size > kRegion / 4) {
      munmap(p, RoundUp(size, kHuge));
      return;
    }
    madvise(p, size, MADV_DONTNEED);  // failure only leaves the memory resident
    MutexLock lock(&mu_);
    free_[size].push_back(p);
  }

 private:
  static constexpr size_t kPage = 4096;
  static constexpr size_t kHuge = size_t{2} << 20;
  static constexpr size_t kRegion = size_t{64} << 20;  // address space; backed as touched
  static size_t RoundUp(size_t n, size_t to) { return (n + to - 1) & ~(to - 1); }

  // A mapping of `size` (a multiple of kHuge) bytes starting on a kHuge boundary.
  static void* MapAligned(size_t size) {
    void* raw =
        mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const auto start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = RoundUp(start, kHuge);
    if (aligned != start) munmap(raw, aligned - start);
    if (const size_t tail = start + kHuge - aligned; tail != 0) {
      munmap(reinterpret_cast<void*>(aligned + size), tail);
    }
    auto* p = reinterpret_cast<void*>(aligned);
    madvise(p, size, MADV_HUGEPAGE);  // a hint; without THP the arrays still work
    return p;
  }

  Mutex mu_;
  char* next_ FLOE_GUARDED_BY(mu_) = nullptr;
  size_t left_ FLOE_GUARDED_BY(mu_) = 0;
  std::unordered_map<size_t, std::vector<void*>> free_ FLOE_GUARDED_BY(mu_);
};

}  // namespace

struct Store::Table {
  uint64_t mask;  // capacity - 1; capacity is a power of two
  struct Slot {
    std::atomic<uint64_t> hash{0};
    std::atomic<uintptr_t> value{0};
  };
  Slot* slots() { return reinterpret_cast<Slot*>(reinterpret_cast<char*>(this) + 64); }
  const Slot* slots() const {
    return reinterpret_cast<const Slot*>(reinterpret_cast<const char*>(this) + 64);
  }
  size_t capacity() const { return mask + 1; }
  size_t bytes() const { return 64 + capacity() * sizeof(Slot); }

  // The header has a cache line to itself, so slots are line-aligned, four to a line. Large
  // arrays come from the ArrayArena (huge pages, memory returned when freed): a shard that grew
  // leaves its old arrays behind, and an allocator would keep that memory resident.
  static constexpr size_t kArenaThreshold = 64 * 1024;
  static Table* Create(size_t capacity) {
    const size_t size = 64 + capacity * sizeof(Slot);
    void* mem;
    if (size >= kArenaThreshold) {
      mem = ArrayArena::Global().Allocate(size);
    } else {
      mem = std::aligned_alloc(64, size);
      if (mem == nullptr) throw std::bad_alloc();
    }
    auto* t = static_cast<Table*>(mem);
    t->mask = capacity - 1;
    Slot* s = t->slots();
    for (size_t i = 0; i < capacity; i++) new (&s[i]) Slot();
    return t;
  }
  static void Destroy(void* p) {
    auto* t = static_cast<Table*>(p);
    const size_t size = t->bytes();
    if (size >= kArenaThreshold) {
      ArrayArena::Global().Free(p, size);
    } else {
      std::free(p);
    }
  }

  // The slot holding a live value of `key`, or nullptr; *word receives its value word. Safe
  // without the shard mutex, inside an epoch critical section.
  const Slot* Find(std::string_view key, uint64_t th, uintptr_t* word) const {
    const Slot* s = slots();
    for (uint64_t i = th & mask;; i = (i + 1) & mask) {
      // acquire: pairs with the release store of the hash when the slot was claimed, which
      // follows the store of its first value word.
      const uint64_t h = s[i].hash.load(std::memory_order_acquire);
      if (h == 0) return nullptr;
      if (h != th) continue;
      // acquire: the Value's bytes were written before the release that published the word.
      const uintptr_t w = s[i].value.load(std::memory_order_acquire);
      if (!IsLive(w)) continue;
      const Value* v = AsValue(w);
      if (v->key() == key) {
        *word = w;
        return &s[i];
      }
    }
  }
};

struct alignas(64) Store::Shard {
  // acquire/release: the array's slots were initialized before it was published.
  std::atomic<Table*> table{nullptr};
  // relaxed counters: statistics, read without synchronizing with the data they describe.
  std::atomic<int64_t> live{0};
  std::atomic<int64_t> value_bytes{0};
  std::atomic<int64_t> expiring{0};  // live values with an expiry time
  Mutex mu;
  // Slots claimed in the current array (live values plus tombstones).
  size_t claimed FLOE_GUARDED_BY(mu) = 0;

  // Replaces the array with one of `capacity` slots holding the live values (none if `drop`),
  // freezing the old slots so no lock-free writer can change them behind the copy.
  //
  // Order matters when dropping (Clear): the values are retired only after the new, empty array
  // is published. Until then the old array is the one readers find, and a reader that enters
  // after a retirement may use a frozen value it finds there -- retiring first would let that
  // value be freed under it (rule 6 in store.h).
  void Rebuild(size_t capacity, bool drop, const Store& store) FLOE_REQUIRES(mu) {
    Table* old = table.load(std::memory_order_relaxed);  // relaxed: we are the only writer
    Table* fresh = Table::Create(capacity);
    Table::Slot* dst = fresh->slots();
    size_t moved = 0;
    int64_t dropped_bytes = 0;
    int64_t dropped = 0;
    int64_t dropped_expiring = 0;
    Table::Slot* src = old->slots();
    for (size_t i = 0; i < old->capacity(); i++) {
      // acquire on the value we freeze: we read the Value (its key) if it is live.
      uintptr_t w = src[i].value.load(std::memory_order_acquire);
      while (!src[i].value.compare_exchange_weak(w, w | kFrozen, std::memory_order_acq_rel,
                                                 std::memory_order_acquire)) {
      }
      if (!IsLive(w)) continue;
      if (drop) {
        dropped_bytes += static_cast<int64_t>(AsValue(w)->AllocatedBytes());
        dropped++;
        if (AsValue(w)->expire_at_ms() != 0) dropped_expiring++;
        continue;
      }
      // relaxed: the slot's hash was written before the value we just acquired.
      const uint64_t th = src[i].hash.load(std::memory_order_relaxed);
      uint64_t j = th & fresh->mask;
      while (dst[j].hash.load(std::memory_order_relaxed) != 0) j = (j + 1) & fresh->mask;
      // relaxed: `fresh` is unpublished; the release store of `table` below publishes it all.
      dst[j].value.store(w, std::memory_order_relaxed);
      dst[j].hash.store(th, std::memory_order_relaxed);
      moved++;
    }
    claimed = moved;
    store.RunHook(TestPoint::kRebuildBeforePublish);
    // release: publishes the fully built array to lock-free readers and writers.
    table.store(fresh, std::memory_order_release);
    if (drop) {
      // Now unreachable from the shard; frozen words never change again, so relaxed suffices
      // for the second pass (the first pass's acquire already ordered our reads of the values).
      for (size_t i = 0; i < old->capacity(); i++) {
        const uintptr_t w = src[i].value.load(std::memory_order_relaxed);
        if (!IsLive(w)) continue;
        const Value* v = AsValue(w);
        RetireValue(v);
      }
      // After the keys stopped being visible, as every decrement of `live` (see Scan).
      live.fetch_sub(dropped, std::memory_order_relaxed);
      value_bytes.fetch_sub(dropped_bytes, std::memory_order_relaxed);
      expiring.fetch_sub(dropped_expiring, std::memory_order_relaxed);
    }
    EpochDomain::Global().Retire(old, Table::Destroy, old->bytes());
  }

  // Capacity for `n` live keys: at most half full after a rebuild.
  static size_t CapacityFor(size_t n) { return std::max(kMinCapacity, std::bit_ceil(n * 2 + 2)); }
};

Store::Store() : shards_(new Shard[kShards]) {
  for (size_t i = 0; i < kShards; i++) {
    shards_[i].table.store(Table::Create(kMinCapacity), std::memory_order_release);
  }
}

Store::~Store() {
  for (size_t i = 0; i < kShards; i++) {
    Table* t = shards_[i].table.load(std::memory_order_acquire);
    Table::Slot* s = t->slots();
    for (size_t j = 0; j < t->capacity(); j++) {
      const uintptr_t w = s[j].value.load(std::memory_order_acquire);
      if (IsLive(w)) AsValue(w)->Unref();
    }
    Table::Destroy(t);
  }
}

const Value* Store::FindLive(KeyView key) const {
  const uint64_t th = TableHash(key.hash());
  const Shard& shard = shards_[th >> kShardShift];
  // acquire: see the array's initialized slots.
  const Table* t = shard.table.load(std::memory_order_acquire);
  uintptr_t w;
  return t->Find(key.bytes(), th, &w) != nullptr ? AsValue(w) : nullptr;
}

ValuePtr Store::Get(KeyView key) const {
  Guard guard;
  const Value* v = FindLive(key);
  if (v == nullptr) return nullptr;
  v->Ref();  // safe: the table's reference cannot be dropped before our critical section ends
  return ValuePtr::Adopt(v);
}

// How it works: the read-modify-write loop.
//
// 1. Find the key's slot in the current array without a lock.
// 2. Present: ask `decide`, then CAS the slot's value word from the word we saw to the new one.
//    A failed CAS means another writer, a remover or a rebuild got there first: start over. A
//    frozen word means a rebuild is running: wait for the shard mutex (the rebuilder holds it
//    until the new array is published) and start over.
// 3. Absent: ask `decide` with null; if it wants a put, take the shard mutex. Under the mutex no
//    one else can claim a slot, so if the key is still absent it stays absent until we insert
//    it. If it appeared meanwhile, drop the mutex and start over with the new value.
// 4. The replaced value is retired, not released: readers may be using it without a reference.
Status Store::Apply(KeyView key, DecideFn decide, void* ctx, ApplyOutcome* out) {
  const uint64_t th = TableHash(key.hash());
  Shard& shard = shards_[th >> kShardShift];
  // The installed value's reference becomes the table's: taken from the mutation, or, for a
  // borrowed put, from the caller of Apply once it returns.
  auto transfer_to_table = [out](Mutation* m) {
    if (m->value_) {
      m->value_.Release();
    } else {
      out->borrowed_installed = true;
    }
  };
  Guard guard;
  for (;;) {
    Table* t = shard.table.load(std::memory_order_acquire);  // acquire: initialized slots
    uintptr_t w = 0;
    auto* slot = const_cast<Table::Slot*>(t->Find(key.bytes(), th, &w));
    if (slot != nullptr && (w & kFrozen) != 0) {
      MutexLock wait(&shard.mu);
      continue;
    }
    const Value* current = slot != nullptr ? AsValue(w) : nullptr;
    FLOE_ASSIGN_OR_RETURN(Mutation m, decide(ctx, current));
    if (m.kind() == Mutation::Kind::kKeep || (m.kind() == Mutation::Kind::kRemove && !current)) {
      if (out->want_current && current != nullptr) {
        current->Ref();
        out->current = ValuePtr::Adopt(current);
      }
      return Status::OK();
    }
    const Value* next = m.kind() == Mutation::Kind::kPut ? m.target() : nullptr;
    if (next != nullptr) FLOE_CHECK(next->key() == key.bytes());

    if (current != nullptr) {
      const uintptr_t next_word = next != nullptr ? AsWord(next) : kTombstone;
      // acq_rel: release publishes the new Value's bytes to readers that acquire the word;
      // acquire orders our later reads after whatever the previous writer published.
      if (!slot->value.compare_exchange_strong(w, next_word, std::memory_order_acq_rel,
                                               std::memory_order_acquire)) {
        continue;
      }
      int64_t delta = -static_cast<int64_t>(current->AllocatedBytes());
      if (next != nullptr) {
        delta += static_cast<int64_t>(next->AllocatedBytes());
        transfer_to_table(&m);
        if (out->want_current) {
          next->Ref();
          out->current = ValuePtr::Adopt(next);
        }
      } else {
        shard.live.fetch_sub(1, std::memory_order_relaxed);
      }
      if (delta != 0) shard.value_bytes.fetch_add(delta, std::memory_order_relaxed);
      const int64_t expiring_delta = (next != nullptr && next->expire_at_ms() != 0 ? 1 : 0) -
                                     (current->expire_at_ms() != 0 ? 1 : 0);
      if (expiring_delta != 0) shard.expiring.fetch_add(expiring_delta, std::memory_order_relaxed);
      if (out->want_previous) {
        current->Ref();
        out->previous = ValuePtr::Adopt(current);
      }
      RetireValue(current);
      out->changed = true;
      return Status::OK();
    }

    // Absent and the decision is to insert.
    MutexLock lock(&shard.mu);
    t = shard.table.load(std::memory_order_relaxed);        // relaxed: stable while we hold mu
    if (t->Find(key.bytes(), th, &w) != nullptr) continue;  // appeared meanwhile: start over
    if ((shard.claimed + 1) * 4 > t->capacity() * 3) {
      const auto live = static_cast<size_t>(shard.live.load(std::memory_order_relaxed));
      shard.Rebuild(Shard::CapacityFor(live + 1), /*drop=*/false, *this);
      t = shard.table.load(std::memory_order_relaxed);
    }
    Table::Slot* s = t->slots();
    uint64_t i = th & t->mask;
    for (;; i = (i + 1) & t->mask) {
      // relaxed: under mu no one else claims or frees slots; lock-free writers only turn a live
      // word into another live word or a tombstone, never touch empty or tombstone words.
      const uintptr_t cw = s[i].value.load(std::memory_order_relaxed);
      if (cw == 0 || cw == kTombstone) break;
    }
    const bool fresh_slot = s[i].hash.load(std::memory_order_relaxed) == 0;
    // Counted before it becomes visible, as every removal is uncounted only after the key stopped
    // being visible: `live` never reads below the number of keys visible (see ScanImpl).
    // relaxed: the release stores below order it before the publication.
    shard.live.fetch_add(1, std::memory_order_relaxed);
    // release: publishes the Value's bytes. The word is stored before the hash, so a reader
    // that acquires the new hash also sees the word.
    s[i].value.store(AsWord(next), std::memory_order_release);
    s[i].hash.store(th, std::memory_order_release);
    RunHook(TestPoint::kInsertPublished);
    if (fresh_slot) shard.claimed++;
    transfer_to_table(&m);
    shard.value_bytes.fetch_add(static_cast<int64_t>(next->AllocatedBytes()),
                                std::memory_order_relaxed);
    if (next->expire_at_ms() != 0) shard.expiring.fetch_add(1, std::memory_order_relaxed);
    if (out->want_current) {
      next->Ref();
      out->current = ValuePtr::Adopt(next);
    }
    out->changed = true;
    return Status::OK();
  }
}

Status Store::ApplyPut(ValuePtr* value, DecideFn decide, void* ctx, ApplyOutcome* out) {
  const KeyView key((*value)->key());
  Status s = Apply(key, decide, ctx, out);
  if (out->borrowed_installed) value->Release();
  return s;
}

void Store::Put(ValuePtr value) {
  ApplyOutcome out;
  FLOE_CHECK_OK(ApplyPut(
      &value,
      [](void* ctx, const Value*) -> Result<Mutation> {
        return Mutation::PutBorrowed(static_cast<ValuePtr*>(ctx)->get());
      },
      &value, &out));
}

ValuePtr Store::Exchange(ValuePtr value) {
  ApplyOutcome out;
  out.want_previous = true;
  FLOE_CHECK_OK(ApplyPut(
      &value,
      [](void* ctx, const Value*) -> Result<Mutation> {
        return Mutation::PutBorrowed(static_cast<ValuePtr*>(ctx)->get());
      },
      &value, &out));
  return std::move(out.previous);
}

bool Store::PutIfAbsent(ValuePtr value) {
  ApplyOutcome out;
  FLOE_CHECK_OK(ApplyPut(
      &value,
      [](void* ctx, const Value* current) -> Result<Mutation> {
        if (current != nullptr) return Mutation::Keep();
        return Mutation::PutBorrowed(static_cast<ValuePtr*>(ctx)->get());
      },
      &value, &out));
  return out.changed;
}

Status Store::CompareAndPut(ValuePtr value, uint64_t expected_version) {
  struct Ctx {
    const Value* value;
    uint64_t expected;
  } ctx{value.get(), expected_version};
  ApplyOutcome out;
  return ApplyPut(
      &value,
      [](void* c, const Value* current) -> Result<Mutation> {
        auto* x = static_cast<Ctx*>(c);
        const uint64_t have = current != nullptr ? current->version() : 0;
        if (have != x->expected) {
          return Status::Aborted("version is " + std::to_string(have) + ", expected " +
                                 std::to_string(x->expected));
        }
        return Mutation::PutBorrowed(x->value);
      },
      &ctx, &out);
}

bool Store::Remove(KeyView key) {
  ApplyOutcome out;
  FLOE_CHECK_OK(Apply(
      key, [](void*, const Value*) -> Result<Mutation> { return Mutation::Remove(); }, nullptr,
      &out));
  return out.changed;
}

ValuePtr Store::Take(KeyView key) {
  ApplyOutcome out;
  out.want_previous = true;
  FLOE_CHECK_OK(Apply(
      key, [](void*, const Value*) -> Result<Mutation> { return Mutation::Remove(); }, nullptr,
      &out));
  return std::move(out.previous);
}

void Store::Prefetch(const KeyView* keys, size_t n) const {
  Guard guard;
  // Stage 1: the home slots. Stage 2, once they have had time to arrive: the values they hold.
  for (size_t i = 0; i < n; i++) {
    const uint64_t th = TableHash(keys[i].hash());
    const Table* t = shards_[th >> kShardShift].table.load(std::memory_order_acquire);
    __builtin_prefetch(&t->slots()[th & t->mask]);
  }
  for (size_t i = 0; i < n; i++) {
    const uint64_t th = TableHash(keys[i].hash());
    const Table* t = shards_[th >> kShardShift].table.load(std::memory_order_acquire);
    const Table::Slot& slot = t->slots()[th & t->mask];
    // relaxed: a hint only; a stale or torn view just prefetches the wrong line.
    if (slot.hash.load(std::memory_order_relaxed) != th) continue;
    const uintptr_t w = slot.value.load(std::memory_order_relaxed);
    if (IsLive(w)) __builtin_prefetch(AsValue(w));
  }
}

size_t Store::Size() const {
  int64_t n = 0;
  for (size_t i = 0; i < kShards; i++) n += shards_[i].live.load(std::memory_order_relaxed);
  return n > 0 ? static_cast<size_t>(n) : 0;
}

size_t Store::MemoryUsed() const {
  Guard guard;
  int64_t n = 0;
  for (size_t i = 0; i < kShards; i++) {
    n += shards_[i].value_bytes.load(std::memory_order_relaxed);
    n += static_cast<int64_t>(shards_[i].table.load(std::memory_order_acquire)->bytes());
  }
  n += account_.bytes();
  return n > 0 ? static_cast<size_t>(n) : 0;
}

void Store::Reclaim() { EpochDomain::Global().Poll(); }
void Store::HandOff() { EpochDomain::Global().HandOff(); }

void Store::Clear() {
  for (size_t i = 0; i < kShards; i++) {
    MutexLock lock(&shards_[i].mu);
    shards_[i].Rebuild(kMinCapacity, /*drop=*/true, *this);
  }
}

// How it works: SCAN over a table that may be rebuilt between calls.
//
// A key's home position in a shard of capacity 2^b is the low b bits of its hash; linear
// probing keeps every key reachable from its home without crossing an empty slot. The cursor
// names a shard (top 8 bits) and a home position v (low 56 bits). One step passes every live
// key whose home is v & mask, found by probing from v & mask to the first empty slot.
//
// v advances in reverse-binary order, as Redis's dictScan does: set the bits above the mask,
// reverse, add one, reverse back. The high bits of the index are incremented first, so the
// positions already visited at capacity 2^b are exactly the positions whose low b bits were
// visited -- still true after the capacity doubles (each old position splits into two that
// share its low bits, both already covered or both still ahead) or halves (positions fold
// together; some keys are passed again, none is skipped). A shard is done when v wraps to 0.
uint64_t Store::ScanImpl(uint64_t cursor, size_t count, ScanFn fn, void* ctx) const {
  if (count == 0) count = 1;
  Guard guard;
  uint64_t shard_index = cursor >> kShardShift;
  uint64_t v = cursor & kCursorMask;
  size_t emitted = 0;
  size_t steps = 0;
  const size_t max_steps = count * 10;
  while (shard_index < kShards && emitted < count && steps < max_steps) {
    const Shard& shard = shards_[shard_index];
    // An empty shard is skipped without walking its positions. That is safe only because a key
    // is counted in `live` before its slot becomes visible and uncounted only after it stopped
    // being visible (insert, remove, expiry, Clear all follow this), so every decrement of
    // `live` in its modification order comes after the increment of the same key. A key present
    // for the whole scan was inserted before this call, so this load reads a value at or after
    // its increment, with no decrement of it: never 0.
    // relaxed: the argument needs only the counter's own modification order.
    if (v == 0 && shard.live.load(std::memory_order_relaxed) == 0) {
      shard_index++;
      continue;
    }
    const Table* t = shard.table.load(std::memory_order_acquire);  // acquire: initialized slots
    const Table::Slot* s = t->slots();
    const uint64_t home = v & t->mask;
    for (uint64_t i = home;; i = (i + 1) & t->mask) {
      const uint64_t h = s[i].hash.load(std::memory_order_acquire);  // as in Find
      if (h == 0) break;
      if ((h & t->mask) != home) continue;
      const uintptr_t w = s[i].value.load(std::memory_order_acquire);
      if (!IsLive(w)) continue;
      fn(ctx, *AsValue(w));
      emitted++;
    }
    steps++;
    v |= ~t->mask;
    v = ReverseBits(v);
    v++;
    v = ReverseBits(v);
    v &= kCursorMask;
    if (v == 0) shard_index++;
  }
  if (shard_index >= kShards) return 0;
  return (shard_index << kShardShift) | v;
}

size_t Store::ExpiringCount() const {
  int64_t n = 0;
  for (size_t i = 0; i < kShards; i++) n += shards_[i].expiring.load(std::memory_order_relaxed);
  return n > 0 ? static_cast<size_t>(n) : 0;
}

// A plain sweep by slot index: unlike SCAN it promises nothing about keys present throughout,
// because an expired key missed now is met again on a later sweep (or removed lazily).
Store::ExpireSweep Store::RemoveExpired(uint64_t* cursor, size_t max_slots, int64_t now_ms) {
  ExpireSweep result;
  Guard guard;
  uint64_t shard_index = *cursor >> kShardShift;
  uint64_t index = *cursor & kCursorMask;
  size_t budget = max_slots;
  size_t shards_seen = 0;
  while (budget > 0 && shards_seen <= kShards) {
    if (shard_index >= kShards) shard_index = 0;
    Shard& shard = shards_[shard_index];
    Table* t = shard.table.load(std::memory_order_acquire);  // acquire: initialized slots
    if (shard.expiring.load(std::memory_order_relaxed) <= 0 || index >= t->capacity()) {
      shard_index++;
      shards_seen++;
      index = 0;
      continue;
    }
    Table::Slot* s = t->slots();
    for (; index < t->capacity() && budget > 0; index++, budget--) {
      uintptr_t w = s[index].value.load(std::memory_order_acquire);  // as in Find
      if (!IsLive(w) || (w & kFrozen) != 0) continue;
      const Value* v = AsValue(w);
      if (v->expire_at_ms() == 0) continue;
      result.examined++;
      if (!v->IsExpired(now_ms)) continue;
      // acq_rel, as in Apply; failure means the key changed since we looked: leave it.
      if (!s[index].value.compare_exchange_strong(w, kTombstone, std::memory_order_acq_rel,
                                                  std::memory_order_acquire)) {
        continue;
      }
      shard.live.fetch_sub(1, std::memory_order_relaxed);
      shard.value_bytes.fetch_sub(static_cast<int64_t>(v->AllocatedBytes()),
                                  std::memory_order_relaxed);
      shard.expiring.fetch_sub(1, std::memory_order_relaxed);
      RetireValue(v);
      result.removed++;
    }
  }
  *cursor = (std::min<uint64_t>(shard_index, kShards - 1) << kShardShift) | index;
  return result;
}

size_t Store::TEST_ShardCapacity(KeyView key) const {
  Guard guard;
  const Shard& shard = shards_[TableHash(key.hash()) >> kShardShift];
  return shard.table.load(std::memory_order_acquire)->capacity();
}

void Store::TEST_ResizeAll(bool grow) {
  for (size_t i = 0; i < kShards; i++) {
    MutexLock lock(&shards_[i].mu);
    const auto live = static_cast<size_t>(shards_[i].live.load(std::memory_order_relaxed));
    const size_t cap = shards_[i].table.load(std::memory_order_relaxed)->capacity();
    shards_[i].Rebuild(
        grow ? std::max(cap * 2, Shard::CapacityFor(live)) : Shard::CapacityFor(live),
        /*drop=*/false, *this);
  }
}

void Store::ForEachImpl(ScanFn fn, void* ctx) const {
  for (size_t i = 0; i < kShards; i++) {
    Shard& shard = shards_[i];
    // Under the mutex no slot is claimed and the array is not replaced, so a key cannot move to
    // a second slot behind us; a replace or remove changes a word in place. Each key is met in
    // the one slot it has, once.
    MutexLock lock(&shard.mu);
    Guard guard;  // values may still be replaced and retired by lock-free writers
    const Table* t = shard.table.load(std::memory_order_relaxed);  // relaxed: stable under mu
    const Table::Slot* s = t->slots();
    for (size_t j = 0; j < t->capacity(); j++) {
      const uintptr_t w = s[j].value.load(std::memory_order_acquire);  // as in Find
      if (IsLive(w)) fn(ctx, *AsValue(w));
    }
  }
}

size_t Store::TEST_PendingReclaimBytes() { return internal::LocalEpochState().pending_bytes; }

}  // namespace floe::store
