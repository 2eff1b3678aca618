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
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"

namespace floe::sketch {

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
  // estimate with PostgreSQL's small- and large-range corrections, unrounded.
  double Cardinality() const;

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
  static Result<HyperLogLog> Parse(std::string_view bytes);

  enum class Representation : uint8_t { kEmpty = 1, kExplicit = 2, kSparse = 3, kFull = 4 };
  // What Serialize would write.
  Representation representation() const;
  const HllParams& params() const { return params_; }
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
  std::vector<int64_t> explicit_;   // ascending by signed value, as the format requires
  std::vector<uint8_t> registers_;  // 2^log2m entries once in kRegisters
};

}  // namespace floe::sketch

#endif  // FLOE_SKETCH_SKETCH_H_
