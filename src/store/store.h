// store: the node-local concurrent map Key -> Value that every thread of a node shares.
//
// Thread safety
// -------------
// 1. Every public member of Store is thread-safe. Reads (Get, Read, Contains, Scan, Size) take
//    no lock and never wait, not even while a shard is being resized. ForEach is the exception
//    among iterations: it holds one shard's mutex at a time (rule 4) so that it meets each key
//    once.
// 2. A Value is immutable once it has been handed to the store; changing a key means putting a
//    new Value. A Value's memory is owned by its reference count (ValuePtr); the table holds one
//    reference for as long as the value is current. The one exception is the decoded object a
//    Value may carry (DecodedObject, below): the server's cells (server/internal/sketch_cell.h)
//    keep sketches and appended-to strings there and change them in place under the cell's own
//    lock; key, type, expiry, version and payload bytes never change.
//    Memory: the table charges each Value's own block (AllocatedBytes) while the value is
//    current. A cell charges what it allocates outside that block through the store's
//    MemoryAccount (ChargeBytes): when it is created, wherever it grows or shrinks in place, and
//    back when the cell dies. MemoryUsed() is the sum of both. A caller about to allocate a
//    large object checks MemoryUsed() against its limit before allocating, not after.
// 3. The table is split into 256 shards by the top 8 bits of the key hash. Each shard is an
//    open-addressed, linearly probed array of 16-byte slots {hash, value word}. A slot's hash is
//    written once, when the slot is first claimed, and never cleared while that array lives.
// 4. Replacing or removing the value of a key that is present is a single compare-and-swap on
//    its slot's value word, without a lock. Claiming a new slot (inserting a key that is absent)
//    and rebuilding a shard's array take that shard's mutex; no operation takes more than one
//    shard's mutex, and no global lock exists.
// 5. A rebuild (grow, shrink, purge of tombstones, Clear) freezes each old slot by setting bit 0
//    of its value word with a CAS, copies the live values into a new array and publishes it with
//    a release store. A writer that meets a frozen slot waits for the shard mutex and retries on
//    the new array; a reader uses the frozen word as is, because it is the slot's final value.
// 6. Memory that readers may still hold without a reference -- replaced values and old arrays --
//    is retired to an epoch-based reclamation domain (internal/epoch.h) and freed only after
//    every critical section that might have seen it has ended. Retire only what no published
//    structure reaches any more: a value after the CAS that replaced it in its slot, or -- for
//    values dropped by Clear and for old arrays -- after the array that held them was replaced
//    in its shard. A value is retired with its size -- its block and its decoded object's
//    HeldBytes -- so large ones, cells included, are freed at once.
// 7. A shard's `live` count is raised before a key's slot becomes visible and lowered only after
//    it stopped being visible, so it never reads below the number of keys a reader can find
//    there (Scan skips shards that read 0).
// 8. Every atomic access in store.cc and epoch.h names its memory order and the reason beside it.
//
// docs/store.md gives the design, the alternatives that were measured and the reasons.

#ifndef FLOE_STORE_STORE_H_
#define FLOE_STORE_STORE_H_

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "base/base.h"
#include "store/internal/epoch.h"

namespace floe::store {

inline constexpr size_t kMaxKeyBytes = 64 * 1024;
inline constexpr size_t kMaxPayloadBytes = (size_t{1} << 32) - 1;

// The part of a key that decides its home node: the text between the first '{' and the first
// '}' after it, when that text is not empty (the Redis Cluster hash-tag rule); otherwise the
// whole key. "{user1}.a" and "{user1}.b" live together.
std::string_view HashTag(std::string_view key);
// HashBytes(HashTag(key)): the hash the cluster layer homes keys by.
uint64_t HomeHash(std::string_view key);

// A key that is being looked up: borrowed bytes and their hash (the whole key, not the tag, so
// that keys sharing a tag still spread over the table). Thread-compatible; cheap to copy.
class KeyView {
 public:
  KeyView(std::string_view bytes) : bytes_(bytes), hash_(HashBytes(bytes)) {}  // NOLINT
  KeyView(const char* bytes) : KeyView(std::string_view(bytes)) {}             // NOLINT
  KeyView(const std::string& bytes) : KeyView(std::string_view(bytes)) {}      // NOLINT
  KeyView(std::string_view bytes, uint64_t hash) : bytes_(bytes), hash_(hash) {}

  std::string_view bytes() const { return bytes_; }
  uint64_t hash() const { return hash_; }

 private:
  std::string_view bytes_;
  uint64_t hash_;
};

// An owned, immutable key with both hashes cached. Thread-compatible.
class Key {
 public:
  // InvalidArgument if the key is longer than kMaxKeyBytes.
  static Result<Key> Make(std::string_view bytes);

  std::string_view bytes() const { return bytes_; }
  uint64_t hash() const { return hash_; }
  uint64_t home_hash() const { return home_hash_; }
  operator KeyView() const { return KeyView(bytes_, hash_); }  // NOLINT
  friend bool operator==(const Key& a, const Key& b) { return a.bytes_ == b.bytes_; }

 private:
  Key(std::string bytes, uint64_t hash, uint64_t home_hash)
      : bytes_(std::move(bytes)), hash_(hash), home_hash_(home_hash) {}
  std::string bytes_;
  uint64_t hash_;
  uint64_t home_hash_;
};

// A decoded form of a payload (a HyperLogLog, a parsed integer), cached on the Value so that
// hot reads decode nothing. Shared by every thread that reaches the Value: it must be immutable
// once cached, or synchronize its own changes (the server's sketch cells do, and follow the
// rules in server/internal/sketch_cell.h).
class DecodedObject {
 public:
  virtual ~DecodedObject() = default;
  // Heap bytes the object holds outside its value's block (a cell's charged bytes), which
  // freeing the value may give back: a removed value is retired with them (rule 6). Thread-safe
  // and lock-free: the store asks while the remover may hold the object's own lock.
  virtual size_t HeldBytes() const { return 0; }
};

class ValuePtr;

// A store-wide count of bytes that values hold outside their own block (in-place cells).
// Shared: a cell freed by epoch reclamation after its store is gone still uncharges into a live
// counter. Thread-safe; cheap to copy.
class MemoryAccount {
 public:
  MemoryAccount() : bytes_(std::make_shared<std::atomic<int64_t>>(0)) {}
  void Charge(int64_t delta) const {
    // relaxed: a statistic; nothing is ordered by it.
    bytes_->fetch_add(delta, std::memory_order_relaxed);
  }
  int64_t bytes() const { return bytes_->load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<std::atomic<int64_t>> bytes_;
};

// An immutable value: its key, a type id, payload bytes, a version unique in the process, and
// an optional cached decoded object. One allocation holds header, key and payload, so a lookup
// touches one cache line for small keys and values. Thread-safe (immutable; the refcount and the
// decoded cache are atomic).
class Value {
 public:
  // InvalidArgument if the key or the payload is too long. `expire_at_ms` (Unix milliseconds)
  // is when the value stops existing; 0 means never. The store keeps expired values until
  // someone removes them: readers check IsExpired (lazy expiry).
  static Result<ValuePtr> Make(std::string_view key, uint16_t type, std::string_view payload,
                               int64_t expire_at_ms = 0);
  // The same with a version the caller chooses instead of the process's next one: the
  // distributed store gives committed values and cached copies the home's stamp
  // (docs/coherence.md). Versions then order values of one key only as that caller defines.
  static Result<ValuePtr> MakeVersioned(std::string_view key, uint16_t type,
                                        std::string_view payload, int64_t expire_at_ms,
                                        uint64_t version);

  std::string_view key() const { return {data() + ExpiryBytes(), key_len_}; }
  std::string_view payload() const { return {data() + ExpiryBytes() + key_len_, payload_len_}; }
  // Unix milliseconds after which the value no longer exists; 0: never.
  int64_t expire_at_ms() const {
    if ((flags_ & kHasExpiry) == 0) return 0;
    int64_t at;
    std::memcpy(&at, data(), sizeof(at));
    return at;
  }
  bool IsExpired(int64_t now_ms) const {
    const int64_t at = expire_at_ms();
    return at != 0 && at <= now_ms;
  }
  uint16_t type() const { return type_; }
  // Unique among all values made by this process; never 0.
  uint64_t version() const { return version_; }
  // Bytes this value occupies: header, key and payload.
  size_t AllocatedBytes() const { return sizeof(Value) + ExpiryBytes() + key_len_ + payload_len_; }

  // The cached decoded object, or nullptr.
  const DecodedObject* decoded() const {
    // acquire: pairs with CacheDecoded's release, so the object's contents are visible.
    return decoded_.load(std::memory_order_acquire);
  }
  // Caches `obj` unless another thread did first; returns whichever is cached.
  const DecodedObject* CacheDecoded(std::unique_ptr<DecodedObject> obj) const;

  void Ref() const {
    // relaxed: taking a new reference needs no ordering; the caller already reaches the value.
    refs_.fetch_add(1, std::memory_order_relaxed);
  }
  void Unref() const;

 private:
  static constexpr uint16_t kHasExpiry = 1;
  Value(uint16_t type, uint16_t flags, uint32_t key_len, uint32_t payload_len, uint64_t version)
      : type_(type),
        flags_(flags),
        key_len_(key_len),
        payload_len_(payload_len),
        version_(version) {}
  // Values without a TTL spend no bytes on one.
  size_t ExpiryBytes() const { return (flags_ & kHasExpiry) != 0 ? sizeof(int64_t) : 0; }
  ~Value();
  const char* data() const { return reinterpret_cast<const char*>(this + 1); }
  char* data() { return reinterpret_cast<char*>(this + 1); }

  mutable std::atomic<uint32_t> refs_{1};
  uint16_t type_;
  uint16_t flags_;
  uint32_t key_len_;
  uint32_t payload_len_;
  uint64_t version_;
  mutable std::atomic<DecodedObject*> decoded_{nullptr};
  // [int64 expiry if kHasExpiry], key bytes, payload bytes follow the header.
};
static_assert(sizeof(Value) == 32, "Value header should stay half a cache line");

// A counted reference to a Value (like an intrusive shared_ptr). Thread-compatible; the Value
// it points to is thread-safe.
class ValuePtr {
 public:
  ValuePtr() = default;
  ValuePtr(std::nullptr_t) {}  // NOLINT
  ValuePtr(const ValuePtr& o) : v_(o.v_) {
    if (v_) v_->Ref();
  }
  ValuePtr(ValuePtr&& o) noexcept : v_(std::exchange(o.v_, nullptr)) {}
  ValuePtr& operator=(ValuePtr o) noexcept {
    std::swap(v_, o.v_);
    return *this;
  }
  ~ValuePtr() {
    if (v_) v_->Unref();
  }

  // Takes over a reference the caller owns.
  static ValuePtr Adopt(const Value* v) {
    ValuePtr p;
    p.v_ = v;
    return p;
  }
  // Gives up the reference without dropping it.
  const Value* Release() { return std::exchange(v_, nullptr); }

  const Value* get() const { return v_; }
  const Value* operator->() const { return v_; }
  const Value& operator*() const { return *v_; }
  explicit operator bool() const { return v_ != nullptr; }
  friend bool operator==(const ValuePtr& p, std::nullptr_t) { return p.v_ == nullptr; }

 private:
  const Value* v_ = nullptr;
};

// What an Update decides to do with a key, given its current value.
class Mutation {
 public:
  static Mutation Keep() { return Mutation(Kind::kKeep, nullptr); }
  // REQUIRES: value is not null and its key is the key being updated.
  static Mutation Put(ValuePtr value) { return Mutation(Kind::kPut, std::move(value)); }
  static Mutation Remove() { return Mutation(Kind::kRemove, nullptr); }

  enum class Kind : uint8_t { kKeep, kPut, kRemove };
  Kind kind() const { return kind_; }
  // The value a kPut installs.
  const Value* target() const { return value_ ? value_.get() : borrowed_; }

 private:
  friend class Store;
  Mutation(Kind kind, ValuePtr value) : kind_(kind), value_(std::move(value)) {}
  // A put of a value whose reference the caller of Store::Apply still holds; on success the
  // caller hands that reference to the table, saving an increment and a decrement per put.
  static Mutation PutBorrowed(const Value* v) {
    Mutation m(Kind::kPut, nullptr);
    m.borrowed_ = v;
    return m;
  }
  Kind kind_;
  ValuePtr value_;
  const Value* borrowed_ = nullptr;
};

class Store {
 public:
  static constexpr int kShardBits = 8;
  static constexpr size_t kShards = size_t{1} << kShardBits;

  Store();
  // REQUIRES: no other thread is using the store.
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // The current value of `key`, or null.
  ValuePtr Get(KeyView key) const;

  // Calls fn(const Value&) with the current value of `key` without taking a reference; returns
  // false (and does not call fn) if the key is absent. fn must not block or call Barrier().
  template <typename F>
  bool Read(KeyView key, F&& fn) const {
    internal::Guard guard;
    const Value* v = FindLive(key);
    if (v == nullptr) return false;
    fn(*v);
    return true;
  }

  bool Contains(KeyView key) const {
    internal::Guard guard;
    return FindLive(key) != nullptr;
  }

  // Makes `value` the current value of its key.
  void Put(ValuePtr value);
  // As Put, and returns the value it replaced (or null).
  ValuePtr Exchange(ValuePtr value);
  // Puts only if the key is absent; returns whether it did.
  bool PutIfAbsent(ValuePtr value);
  // Puts only if the current value's version is `expected_version` (0: the key must be absent).
  // Aborted otherwise.
  Status CompareAndPut(ValuePtr value, uint64_t expected_version);
  // Removes the key; returns whether it was present.
  bool Remove(KeyView key);
  // Removes the key and returns the value it had (or null).
  ValuePtr Take(KeyView key);

  // Atomic read-modify-write: calls fn(const Value* current) -> Result<Mutation> (current is
  // null when the key is absent) and applies the mutation with a compare-and-swap, calling fn
  // again with the newer value if another writer got there first. fn must therefore be a pure
  // function of `current`. If fn returns an error nothing changes and that error is returned.
  // Returns the value current after the update (null if the key is absent).
  template <typename F>
  Result<ValuePtr> Update(KeyView key, F&& fn) {
    ApplyOutcome out;
    out.want_current = true;
    FLOE_RETURN_IF_ERROR(Apply(
        key,
        [](void* ctx, const Value* current) -> Result<Mutation> {
          return (*static_cast<std::remove_reference_t<F>*>(ctx))(current);
        },
        &fn, &out));
    return std::move(out.current);
  }

  // Starts loading what a lookup of each key will touch -- its slot, then the value the slot
  // points to -- without waiting, so that a batch of lookups (a client's pipeline) overlaps its
  // cache misses instead of paying them one after another. Changes nothing.
  void Prefetch(const KeyView* keys, size_t n) const;

  // Update without returning the value: one reference-count increment and decrement fewer.
  template <typename F>
  Status Mutate(KeyView key, F&& fn) {
    ApplyOutcome out;
    return Apply(
        key,
        [](void* ctx, const Value* current) -> Result<Mutation> {
          return (*static_cast<std::remove_reference_t<F>*>(ctx))(current);
        },
        &fn, &out);
  }

  // Number of keys.
  size_t Size() const;
  // Bytes used by values and tables (excluding memory awaiting reclamation), plus the bytes
  // charged to the memory account (rule 2).
  size_t MemoryUsed() const;
  // Removes every key, shard by shard (not atomic across shards). Each shard's values are
  // retired only after its new, empty array is published (rule 6).
  // Adds `delta` (negative: gives back) to the bytes charged outside values' blocks (rule 2).
  void ChargeBytes(int64_t delta) { account_.Charge(delta); }
  // The account ChargeBytes adds to, for objects that may outlive the store.
  const MemoryAccount& memory_account() const { return account_; }
  // Removes every key.
  void Clear();
  // Frees replaced values and old arrays that no reader can still see, if any are waiting on
  // this thread. Servers call it periodically from each thread; it never blocks.
  // REQUIRES: not inside a Read/Scan/Update callback.
  static void Reclaim();
  // Hands what this thread retired to the list every thread's Reclaim frees from, without
  // advancing the epoch (no barrier): for threads that go idle without calling Reclaim (RPC
  // handler pools), whose retirements (a forwarded DEL's value, an invalidated copy) would
  // otherwise wait for their next batch. Cheap; the next Reclaim anywhere frees them.
  // REQUIRES: not inside a Read/Scan/Update callback.
  static void HandOff();

  // Number of keys whose value has an expiry time.
  size_t ExpiringCount() const;
  // Active expiry: examines up to `max_slots` slots, starting at *cursor and skipping shards
  // with no expiring keys, and removes values expired at `now_ms` (only if still current).
  // Advances *cursor (wrapping to 0 after the last shard). Returns {examined, removed}.
  struct ExpireSweep {
    size_t examined = 0;  // expiring values looked at
    size_t removed = 0;
  };
  ExpireSweep RemoveExpired(uint64_t* cursor, size_t max_slots, int64_t now_ms);

  // Cursor iteration with the Redis SCAN guarantee: a key present from the first call (cursor 0)
  // until the call that returns 0 is passed to fn at least once, even if shards are resized in
  // between; a key may be passed more than once. Visits home positions until about `count`
  // values have been passed (count is a hint, at least 1). Returns the next cursor; 0 when done.
  // fn(const Value&) runs without a reference held and must not block.
  template <typename F>
  uint64_t Scan(uint64_t cursor, size_t count, F&& fn) const {
    return ScanImpl(
        cursor, count,
        [](void* ctx, const Value& v) { (*static_cast<std::remove_reference_t<F>*>(ctx))(v); },
        &fn);
  }

  // Calls fn(const Value&) once for each key in the store: a key present for the whole call is
  // passed exactly once, a key added or removed meanwhile at most once -- never twice, even while
  // shards are rebuilt (KEYS relies on this; Scan may repeat keys). Visits one shard at a time
  // holding its mutex, so inserts into that shard wait until fn has seen its keys; reads,
  // replaces and removes do not. fn must not block and must not insert into this store.
  template <typename F>
  void ForEach(F&& fn) const {
    ForEachImpl(
        [](void* ctx, const Value& v) { (*static_cast<std::remove_reference_t<F>*>(ctx))(v); },
        &fn);
  }

  // For tests: the slot capacity of the shard that holds `key`.
  size_t TEST_ShardCapacity(KeyView key) const;
  // For tests: rebuilds every shard's array, doubling it (grow) or to the smallest capacity that
  // holds its keys (!grow).
  void TEST_ResizeAll(bool grow);
  // For tests: points where a hook set by TEST_SetHook runs, so a test can force a race.
  enum class TestPoint : uint8_t {
    kRebuildBeforePublish,  // a rebuild froze the old array and is about to publish the new one
    kInsertPublished,       // an insert made its slot visible (the shard mutex is held)
  };
  // REQUIRES: no other thread is using the store.
  void TEST_SetHook(std::function<void(TestPoint)> hook) { test_hook_ = std::move(hook); }
  // For tests: bytes this thread has retired that are not yet freed.
  static size_t TEST_PendingReclaimBytes();

 private:
  struct Shard;
  struct Table;
  struct ApplyOutcome {
    bool want_previous = false;
    bool want_current = false;
    bool changed = false;
    bool borrowed_installed = false;  // a PutBorrowed value now belongs to the table
    ValuePtr previous;
    ValuePtr current;
  };
  using DecideFn = Result<Mutation> (*)(void* ctx, const Value* current);
  using ScanFn = void (*)(void* ctx, const Value& v);

  // REQUIRES: the caller holds an epoch Guard for as long as it uses the result.
  const Value* FindLive(KeyView key) const;
  // Apply for a decision that may put `*value` by PutBorrowed; if it is installed, the caller's
  // reference in *value is handed to the table.
  Status ApplyPut(ValuePtr* value, DecideFn decide, void* ctx, ApplyOutcome* out);
  Status Apply(KeyView key, DecideFn decide, void* ctx, ApplyOutcome* out);
  uint64_t ScanImpl(uint64_t cursor, size_t count, ScanFn fn, void* ctx) const;
  void ForEachImpl(ScanFn fn, void* ctx) const;
  void RunHook(TestPoint point) const {
    if (FLOE_PREDICT_FALSE(test_hook_ != nullptr)) test_hook_(point);
  }

  std::unique_ptr<Shard[]> shards_;
  std::function<void(TestPoint)> test_hook_;
  MemoryAccount account_;
};

}  // namespace floe::store

#endif  // FLOE_STORE_STORE_H_
