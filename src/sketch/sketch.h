// sketch: probabilistic data structures as plain values (no threads, no store).
//
//   HyperLogLog   distinct counts, byte-compatible with PostgreSQL's `hll` extension (the
//                 Aggregate Knowledge storage specification, schema version 1): same parameters,
//                 hashing, representations, promotion points, serialized bytes and estimates;
//                 plus what PostgreSQL refuses: unions across log2m by an exact fold.
//
// Thread rules: every class here is thread-compatible (a value; copy it to share).

#ifndef FLOE_SKETCH_SKETCH_H_
#define FLOE_SKETCH_SKETCH_H_

#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"

namespace floe::sketch {

// An allocator for counter arrays that a new sketch needs zeroed: calloc hands out pages the
// kernel zeroes on first touch, and elements are default-initialized (not written), so creating
// a 100 MB sketch costs one allocation and touches nothing. Only a freshly constructed
// ZeroedVector<T>(n) is all zeros this way; `assign` and `resize` after a shrink write as usual.
template <typename T>
struct ZeroedAllocator {
  using value_type = T;
  ZeroedAllocator() = default;
  template <typename U>
  ZeroedAllocator(const ZeroedAllocator<U>&) {}  // NOLINT
  T* allocate(size_t n) {
    void* p = std::calloc(n, sizeof(T));
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-init: calloc already zeroed it
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <typename U>
  bool operator==(const ZeroedAllocator<U>&) const {
    return true;
  }
};
template <typename T>
using ZeroedVector = std::vector<T, ZeroedAllocator<T>>;

// Parameters of a HyperLogLog, as the storage specification encodes them.
struct HllParams {
  int log2m = 11;    // 4..31: 2^log2m registers
  int regwidth = 5;  // 1..8: bits per register
  // -1: automatic (PostgreSQL's rule); 0: no EXPLICIT representation; 1..18: keep up to
  // 2^(expthresh-1) distinct hashes exactly before switching to registers. (PostgreSQL's SQL
  // functions take the count itself, a power of two; its bytes store this exponent.)
  int expthresh = -1;
  bool sparseon = true;  // allow the SPARSE serialization

  Status Validate() const;
  bool operator==(const HllParams&) const = default;
};

// A HyperLogLog in PostgreSQL `hll`'s representation: EMPTY, then EXPLICIT (the distinct
// hashes themselves, exact), then registers; SPARSE or FULL is chosen when serializing.
//
// How it works (hash -> register): for a 64-bit hash h and m = 2^log2m registers, the register
// index is the low log2m bits of h, and its value is the 1-based position of the lowest set
// bit of h >> log2m, capped at 2^regwidth - 1 (0: nothing to record).
class HyperLogLog {
 public:
  static Result<HyperLogLog> Create(const HllParams& params);
  HyperLogLog() = default;  // EMPTY with default parameters

  // hll_hash_bigint: MurmurHash3 x64-128, seed 0, of the 8-byte little-endian integer; first
  // 64 bits. hll_hash_text / hll_hash_bytea: of the bytes themselves.
  static uint64_t HashInt64(int64_t v);
  static uint64_t HashBytes(std::string_view bytes);

  // Adds one hash (as hll_add does); returns whether the sketch changed.
  bool AddHash(uint64_t hash);

  // PostgreSQL's hll_cardinality: exact in EXPLICIT, 0 when EMPTY, otherwise the HyperLogLog
  // estimate with PostgreSQL's small- and large-range corrections, unrounded. Like PostgreSQL's,
  // NaN where the large-range correction is undefined (a sketch saturated for its regwidth),
  // unless `raw_when_saturated`, which gives the uncorrected estimate there (for counts that
  // must be integers: PFCOUNT).
  double Cardinality(bool raw_when_saturated = false) const;

  // Adds everything `other` holds. Equal parameters: the PostgreSQL union (as if every input
  // had been added here). A different log2m or regwidth is an InvalidArgument; use Fold first.
  Status Merge(const HyperLogLog& other);

  // The same set at fewer registers (log2m' <= log2m), exactly: for each register the value is
  // recomputed from the index bits that leave the index, so the result is byte-identical to
  // building the smaller sketch from the same inputs (barring saturation at 2^regwidth - 1).
  // A smaller `regwidth` (0: keep) caps every register at the narrower maximum, which is what
  // building with that width would have stored.
  Result<HyperLogLog> Fold(int log2m, int regwidth = 0) const;

  // The storage-specification bytes, identical to PostgreSQL's for the same inputs.
  std::string Serialize() const;
  // Parses those bytes; every malformed input is a Corruption status naming what is wrong.
  // A SPARSE body is expanded into all 2^log2m registers. With `max_register_bytes` 0, a body
  // must carry at least one byte per 64 registers above 2^20 registers (a few bytes must not
  // allocate gigabytes); a caller that has bounded the allocation itself passes its bound, and
  // then any body whose registers fit it is accepted (a lightly filled sketch with many
  // registers serializes to a small SPARSE body, and must read back).
  static Result<HyperLogLog> Parse(std::string_view bytes, uint64_t max_register_bytes = 0);

  enum class Representation : uint8_t { kEmpty = 1, kExplicit = 2, kSparse = 3, kFull = 4 };
  // What Serialize would write.
  Representation representation() const;
  const HllParams& params() const { return params_; }
  // Heap bytes the sketch holds now (explicit list and registers, by capacity).
  size_t MemoryBytes() const {
    return explicit_.capacity() * sizeof(int64_t) + registers_.capacity();
  }
  // Heap bytes the registers of a sketch with `params` take once it has them (2^log2m);
  // what an add may allocate at most while `has_registers()` is false.
  static uint64_t RegisterBytes(const HllParams& params) { return uint64_t{1} << params.log2m; }
  bool has_registers() const { return state_ == State::kRegisters; }
  // Distinct hashes in EXPLICIT, or non-zero registers.
  size_t filled() const;
  bool operator==(const HyperLogLog& o) const = default;

 private:
  explicit HyperLogLog(const HllParams& p) : params_(p) {}
  size_t ExplicitThreshold() const;
  void PromoteToRegisters();
  bool SetRegisterFromHash(uint64_t hash);

  enum class State : uint8_t { kEmpty, kExplicit, kRegisters };
  HllParams params_;
  State state_ = State::kEmpty;
  std::vector<int64_t> explicit_;    // ascending by signed value, as the format requires
  ZeroedVector<uint8_t> registers_;  // 2^log2m entries once in kRegisters
};

// A Count-Min sketch: depth rows of width 32-bit counters. An item adds to one counter per row;
// its estimate is the smallest of them, never below the true count and, with probability at
// least 1 - probability, at most error * total above it (RedisBloom's sizing and semantics).
class CountMin {
 public:
  static constexpr uint64_t kMaxCells = uint64_t{1} << 28;  // 1 GiB of counters

  // width, depth >= 1 and width * depth <= kMaxCells.
  static Result<CountMin> Create(uint32_t width, uint32_t depth);
  // RedisBloom's CMS.INITBYPROB sizing: width = ceil(2 / error), depth = ceil(log2(1 / prob)).
  static Result<CountMin> CreateForError(double error, double probability);

  // Adds `incr` to `item` and returns its new estimate. OutOfRange, with nothing changed (no
  // counter, not the total), when a counter would pass 2^32 - 1 or the total int64's largest,
  // as RedisBloom's CMS_IncrBy undoes its rows.
  Result<uint32_t> Add(std::string_view item, uint32_t incr);
  uint32_t Query(std::string_view item) const;
  // Adds by a precomputed 64-bit key (the range sketch's levels use it).
  Result<uint32_t> AddKey(uint64_t key, uint32_t incr);
  // Whether AddKey(key, incr) would overflow (and so change nothing).
  bool WouldOverflow(uint64_t key, uint32_t incr) const;
  uint32_t QueryKey(uint64_t key) const;

  // Replaces the counters with sum(weight_k * source_k). Every source must have this sketch's
  // dimensions; OutOfRange if a cell would leave [0, 2^32 - 1] (nothing changes then).
  Status MergeWeighted(const std::vector<std::pair<const CountMin*, int64_t>>& sources);

  uint32_t width() const { return width_; }
  uint32_t depth() const { return depth_; }
  uint64_t total() const { return total_; }
  // Heap bytes of a sketch with these dimensions (its counters), computed without overflow.
  static uint64_t BytesFor(uint32_t width, uint32_t depth) {
    return uint64_t{width} * depth * sizeof(uint32_t);
  }
  size_t MemoryBytes() const { return counters_.capacity() * sizeof(uint32_t); }

  std::string Serialize() const;
  static Result<CountMin> Parse(std::string_view bytes);
  bool operator==(const CountMin&) const = default;

 private:
  size_t Cell(uint32_t row, uint64_t h1, uint64_t h2) const;
  uint32_t width_ = 0, depth_ = 0;
  uint64_t total_ = 0;
  ZeroedVector<uint32_t> counters_;  // row-major
};

// Count-Min over integers in [0, 2^bits) with range counts and quantiles: level l counts the
// values' top bits (x >> l), so a range is the sum of O(bits) dyadic pieces, one per level, and
// a quantile is found by binary search over range counts (as in Cormode and Muthukrishnan).
class RangeCountMin {
 public:
  // bits in 1..32; width/depth as CountMin, per level.
  static Result<RangeCountMin> Create(uint32_t width, uint32_t depth, int bits);

  // REQUIRES value < 2^bits (InvalidArgument otherwise). OutOfRange, with no level changed,
  // when a counter of any level would overflow.
  Status Add(uint64_t value, uint32_t incr);
  // Estimated number of values in [lo, hi] (clamped to the domain), never below the truth.
  uint64_t RangeCount(uint64_t lo, uint64_t hi) const;
  // The smallest v with RangeCount(0, v) >= q * total, q in [0, 1].
  uint64_t Quantile(double q) const;
  // Level 0 counts each value under the key Add gives it there (value * 64 + level 0).
  uint64_t Point(uint64_t value) const { return levels_[0].QueryKey(value * 64); }
  uint64_t total() const { return levels_.empty() ? 0 : levels_[0].total(); }
  int bits() const { return bits_; }
  const CountMin& level(int l) const { return levels_[static_cast<size_t>(l)]; }
  // Heap bytes of a range sketch with these dimensions: bits + 1 levels (no overflow for
  // bits <= 32).
  static uint64_t BytesFor(uint32_t width, uint32_t depth, int bits) {
    return CountMin::BytesFor(width, depth) * static_cast<uint64_t>(bits + 1);
  }
  size_t MemoryBytes() const {
    size_t n = levels_.capacity() * sizeof(CountMin);
    for (const CountMin& c : levels_) n += c.MemoryBytes();
    return n;
  }

  std::string Serialize() const;
  static Result<RangeCountMin> Parse(std::string_view bytes);

 private:
  int bits_ = 0;
  std::vector<CountMin> levels_;  // bits + 1 levels
};

// A scalable Bloom filter (Almeida et al.), sized as RedisBloom sizes it: a chain of sub-filters;
// when the newest holds its capacity, the next one gets `expansion` times the capacity and half
// the error rate, so the chain's false-positive rate stays below the requested one. No false
// negatives. expansion 0 means non-scaling: a full filter refuses new items.
class BloomFilter {
 public:
  static constexpr uint64_t kMaxCapacity = uint64_t{1} << 30;  // RedisBloom's bound
  static constexpr uint32_t kMaxExpansion = 32768;             // RedisBloom's bound
  static constexpr uint64_t kMaxBytes = uint64_t{512} << 20;   // all sub-filters together
  static constexpr double kMaxErrorRate = 0.25;                // larger rates are capped

  // error_rate in (0, 1) (above kMaxErrorRate it is capped); capacity in [1, kMaxCapacity];
  // expansion in [0, kMaxExpansion]. ResourceExhausted if the first sub-filter would pass
  // kMaxBytes.
  static Result<BloomFilter> Create(double error_rate, uint64_t capacity, uint32_t expansion);

  // True if the item was not (as far as the filter can tell) present and is now. Errors:
  // FailedPrecondition "non scaling filter is full"; ResourceExhausted when the next
  // sub-filter would pass kMaxBytes. Nothing changes on error.
  Result<bool> Add(std::string_view item);
  bool Contains(std::string_view item) const;
  // Whether adding `item` would need a new sub-filter (it is absent and the newest is full).
  bool AddWouldGrow(std::string_view item) const;
  // Heap bytes the first sub-filter of Create(error_rate, capacity, expansion) takes (0 when
  // Create would refuse the arguments).
  static uint64_t FirstFilterBytes(double error_rate, uint64_t capacity, uint32_t expansion);
  // Heap bytes the next sub-filter would take (0 when the filter cannot grow).
  uint64_t GrowthBytes() const;
  // Heap bytes the filter holds now.
  size_t MemoryBytes() const {
    size_t n = links_.capacity() * sizeof(Link);
    for (const Link& l : links_) n += l.words.capacity() * sizeof(uint64_t);
    return n;
  }

  // Union with a filter built with the same error rate, capacity and expansion: bits are OR-ed
  // sub-filter by sub-filter (sub-filter i has the same size in both), sub-filters only `other`
  // has are copied, and item counts add (an upper bound on the union's, so the chain grows no
  // later than it should). InvalidArgument if the configurations differ.
  Status Merge(const BloomFilter& other);

  uint64_t capacity() const;  // the sum of the sub-filters' capacities
  uint64_t items() const;     // items added (each counted once, when it was new)
  size_t filters() const { return links_.size(); }
  uint32_t expansion() const { return expansion_; }
  double error_rate() const { return error_rate_; }
  uint64_t initial_capacity() const { return initial_capacity_; }
  size_t bytes() const;  // bit arrays plus bookkeeping, as RedisBloom's BF.INFO Size counts it
  struct SubFilter {
    uint64_t capacity, items, bits;
    uint32_t hashes;
    double error;
  };
  SubFilter sub_filter(size_t i) const {
    const Link& l = links_.at(i);
    return {l.capacity, l.items, l.bits, l.hashes, l.error};
  }

  std::string Serialize() const;
  static Result<BloomFilter> Parse(std::string_view bytes);
  bool operator==(const BloomFilter&) const = default;

 private:
  struct Link {
    uint64_t capacity = 0, items = 0, bits = 0;
    uint32_t hashes = 0;
    double error = 0;
    ZeroedVector<uint64_t> words;  // bits / 64 words
    bool operator==(const Link&) const = default;
  };
  static Result<Link> MakeLink(uint64_t capacity, double error, bool allocate = true);
  static bool Test(const Link& l, uint64_t h1, uint64_t h2);
  static bool Set(Link& l, uint64_t h1, uint64_t h2);  // true if a bit changed
  Status Grow();

  double error_rate_ = 0;
  uint64_t initial_capacity_ = 0;
  uint32_t expansion_ = 0;
  std::vector<Link> links_;
};

}  // namespace floe::sketch

#endif  // FLOE_SKETCH_SKETCH_H_
