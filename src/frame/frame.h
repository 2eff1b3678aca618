// frame: columns of a table cut into chunks, each chunk compressed by looking at its data
// (docs/frame.md). This first part holds the numeric chunk layouts; frames, CSV import and
// map/reduce build on them.
//
// Contracts
// ---------
// 1. Compress(values) picks the smallest layout that represents every value exactly (NA included)
//    and returns the chunk's bytes; Decode of those bytes reads back exactly the same values, NA
//    where NA was, bit for bit for every other double.
// 2. A ChunkView reads a value without allocating: At(i) is a few instructions of arithmetic on
//    the bytes it views (which must outlive it).
// 3. ChunkView::Make takes untrusted bytes (a chunk from another node, a file): every length and
//    field is checked before it is used; malformed input is a Corruption status, never a crash
//    (fuzzed by fuzz/frame_fuzz.cc).
// 4. NA is a quiet NaN (kNA). A NaN read from input is stored as NA: a column has one missing
//    value, as in H2O.
//
// Thread rule: everything here is a pure function or an immutable view; thread-safe.

#ifndef FLOE_FRAME_FRAME_H_
#define FLOE_FRAME_FRAME_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include "base/base.h"

namespace floe::frame {

inline constexpr double kNA = std::numeric_limits<double>::quiet_NaN();
inline bool IsNA(double v) { return std::isnan(v); }

// Layout ids: the chunk's first byte (docs/frame.md has each byte format).
enum class Layout : uint8_t {
  kEmpty = 0,     // no rows
  kConstant = 1,  // every row the same value (NA included): one double
  kInt8 = 2,      // integers as bias + 1-byte offsets; the offset's top value is NA
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,    // bias 0, raw int64; INT64_MIN is NA
  kScaled8 = 6,  // decimals: (bias + offset) / 10^scale, 1-byte offsets
  kScaled16 = 7,
  kScaled32 = 8,
  kDouble = 9,  // raw doubles; NaN is NA
  kBits = 10,   // 0/1 values, one bit each, with no NA
};
inline constexpr uint8_t kLayoutCount = 11;
std::string_view LayoutName(Layout layout);

inline constexpr size_t kChunkHeaderBytes = 16;      // layout, scale, 2 reserved, rows, bias
inline constexpr uint32_t kMaxChunkRows = 1u << 26;  // 64 Mi rows: a chunk is ~1-4 MB of data

// Compresses `values` (NA as kNA). REQUIRES: values.size() <= kMaxChunkRows.
std::string Compress(std::span<const double> values);

// A read-only view of a chunk's bytes.
class ChunkView {
 public:
  static Result<ChunkView> Make(std::string_view bytes);

  Layout layout() const { return layout_; }
  uint32_t rows() const { return rows_; }
  // Bytes of the encoding, header included.
  size_t bytes() const { return size_; }

  // The value of row i (kNA for a missing one). REQUIRES: i < rows().
  double At(uint32_t i) const {
    switch (layout_) {
      case Layout::kConstant:
        return constant_;
      case Layout::kInt8:
        return Int<uint8_t>(i, 0);
      case Layout::kInt16:
        return Int<uint16_t>(i, 0);
      case Layout::kInt32:
        return Int<uint32_t>(i, 0);
      case Layout::kInt64: {
        int64_t x;
        std::memcpy(&x, data_ + 8 * size_t{i}, 8);
        return x == std::numeric_limits<int64_t>::min() ? kNA : static_cast<double>(x);
      }
      case Layout::kScaled8:
        return Int<uint8_t>(i, scale_);
      case Layout::kScaled16:
        return Int<uint16_t>(i, scale_);
      case Layout::kScaled32:
        return Int<uint32_t>(i, scale_);
      case Layout::kDouble: {
        double x;
        std::memcpy(&x, data_ + 8 * size_t{i}, 8);
        return x;
      }
      case Layout::kBits:
        return (static_cast<uint8_t>(data_[i / 8]) >> (i % 8)) & 1;
      case Layout::kEmpty:
        break;
    }
    return kNA;
  }
  bool IsNA(uint32_t i) const { return frame::IsNA(At(i)); }

 private:
  // Offsets are unsigned; the all-ones offset is NA.
  template <typename U>
  double Int(uint32_t i, uint8_t scale) const {
    U x;
    std::memcpy(&x, data_ + sizeof(U) * size_t{i}, sizeof(U));
    if (x == std::numeric_limits<U>::max()) return kNA;
    const double v = static_cast<double>(bias_ + static_cast<int64_t>(x));
    return scale == 0 ? v : v / kPow10[scale];
  }
  static constexpr double kPow10[10] = {1,      10,      100,      1000,      10000,
                                        100000, 1000000, 10000000, 100000000, 1000000000};

  Layout layout_ = Layout::kEmpty;
  uint8_t scale_ = 0;
  uint32_t rows_ = 0;
  int64_t bias_ = 0;
  double constant_ = 0;
  const char* data_ = nullptr;  // the rows, after the header
  size_t size_ = 0;
};

}  // namespace floe::frame

#endif  // FLOE_FRAME_FRAME_H_
