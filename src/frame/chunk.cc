// Numeric chunk layouts: choosing one by looking at the data, encoding, and checking untrusted
// bytes (docs/frame.md).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "frame/frame.h"

namespace floe::frame {
namespace {

constexpr int kMaxScale = 9;
constexpr double kPow10[kMaxScale + 1] = {1,      10,      100,      1000,      10000,
                                          100000, 1000000, 10000000, 100000000, 1000000000};
// Integers beyond 2^53 are exact doubles only at even steps; keep the scaled path within the
// range where every integer is one.
constexpr double kExactIntLimit = 9007199254740992.0;  // 2^53

size_t PayloadBytes(Layout layout, uint64_t rows) {
  switch (layout) {
    case Layout::kEmpty:
    case Layout::kConstant:
      return 0;
    case Layout::kInt8:
    case Layout::kScaled8:
      return rows;
    case Layout::kInt16:
    case Layout::kScaled16:
      return 2 * rows;
    case Layout::kInt32:
    case Layout::kScaled32:
      return 4 * rows;
    case Layout::kInt64:
    case Layout::kDouble:
      return 8 * rows;
    case Layout::kBits:
      return (rows + 7) / 8;
  }
  return 0;
}

void PutHeader(std::string* out, Layout layout, uint8_t scale, uint32_t rows, uint64_t bias_bits) {
  out->resize(kChunkHeaderBytes);
  char* p = out->data();
  p[0] = static_cast<char>(layout);
  p[1] = static_cast<char>(scale);
  p[2] = p[3] = 0;
  std::memcpy(p + 4, &rows, 4);
  std::memcpy(p + 8, &bias_bits, 8);
}

// The values as integers scaled by 10^scale, if every one is exactly such an integer (NA
// aside): k with k / 10^scale == v in double arithmetic, so decoding gives v back bit for bit.
bool AsScaledIntegers(std::span<const double> values, int scale, std::vector<int64_t>* out,
                      int64_t* lo, int64_t* hi) {
  out->resize(values.size());
  bool any = false;
  for (size_t i = 0; i < values.size(); i++) {
    const double v = values[i];
    if (IsNA(v)) continue;
    if (std::signbit(v) && v == 0) return false;  // -0.0 would come back as +0.0
    const double scaled = v * kPow10[scale];
    if (!(std::fabs(scaled) < kExactIntLimit)) return false;
    const auto k = static_cast<int64_t>(std::llround(scaled));
    const double back =
        scale == 0 ? static_cast<double>(k) : static_cast<double>(k) / kPow10[scale];
    if (back != v) return false;
    (*out)[i] = k;
    if (!any || k < *lo) *lo = k;
    if (!any || k > *hi) *hi = k;
    any = true;
  }
  if (!any) *lo = *hi = 0;
  return true;
}

template <typename U>
std::string EncodeOffsets(Layout layout, uint8_t scale, std::span<const double> values,
                          const std::vector<int64_t>& ints, int64_t bias) {
  std::string out;
  PutHeader(&out, layout, scale, static_cast<uint32_t>(values.size()), static_cast<uint64_t>(bias));
  out.resize(kChunkHeaderBytes + sizeof(U) * values.size());
  char* p = out.data() + kChunkHeaderBytes;
  for (size_t i = 0; i < values.size(); i++) {
    const U x = IsNA(values[i]) ? std::numeric_limits<U>::max()
                                : static_cast<U>(static_cast<uint64_t>(ints[i] - bias));
    std::memcpy(p + sizeof(U) * i, &x, sizeof(U));
  }
  return out;
}

// The narrowest offset layout for integers in [lo, hi] (one value kept free for NA), if any.
std::optional<std::string> EncodeNarrow(std::span<const double> values,
                                        const std::vector<int64_t>& ints, int64_t lo, int64_t hi,
                                        int scale) {
  const auto range = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  const auto s = static_cast<uint8_t>(scale);
  if (range < 0xFF) {
    return EncodeOffsets<uint8_t>(scale == 0 ? Layout::kInt8 : Layout::kScaled8, s, values, ints,
                                  lo);
  }
  if (range < 0xFFFF) {
    return EncodeOffsets<uint16_t>(scale == 0 ? Layout::kInt16 : Layout::kScaled16, s, values, ints,
                                   lo);
  }
  if (range < 0xFFFFFFFFu) {
    return EncodeOffsets<uint32_t>(scale == 0 ? Layout::kInt32 : Layout::kScaled32, s, values, ints,
                                   lo);
  }
  return std::nullopt;
}

}  // namespace

std::string_view LayoutName(Layout layout) {
  static constexpr std::string_view kNames[kLayoutCount] = {
      "empty",   "constant", "int8",     "int16",  "int32", "int64",
      "scaled8", "scaled16", "scaled32", "double", "bits"};
  const auto i = static_cast<uint8_t>(layout);
  return i < kLayoutCount ? kNames[i] : "unknown";
}

std::string Compress(std::span<const double> values) {
  FLOE_CHECK(values.size() <= kMaxChunkRows);
  const auto rows = static_cast<uint32_t>(values.size());
  std::string out;
  if (rows == 0) {
    PutHeader(&out, Layout::kEmpty, 0, 0, 0);
    return out;
  }
  // Constant: every value the same, bit for bit (every NaN is NA).
  auto bits_of = [](double v) {
    uint64_t b;
    if (IsNA(v)) v = kNA;
    std::memcpy(&b, &v, 8);
    return b;
  };
  const uint64_t first = bits_of(values[0]);
  if (std::all_of(values.begin(), values.end(), [&](double v) { return bits_of(v) == first; })) {
    PutHeader(&out, Layout::kConstant, 0, rows, first);
    return out;
  }
  // Bits: only 0 and 1, no NA.
  if (std::all_of(values.begin(), values.end(), [&](double v) {
        return bits_of(v) == bits_of(0.0) || bits_of(v) == bits_of(1.0);
      })) {
    PutHeader(&out, Layout::kBits, 0, rows, 0);
    out.resize(kChunkHeaderBytes + PayloadBytes(Layout::kBits, rows));
    for (uint32_t i = 0; i < rows; i++) {
      if (values[i] == 1.0) out[kChunkHeaderBytes + i / 8] |= static_cast<char>(1 << (i % 8));
    }
    return out;
  }
  // Integers, then decimals of up to 9 places, each in the narrowest offsets that hold them.
  std::vector<int64_t> ints;
  int64_t lo = 0, hi = 0;
  for (int scale = 0; scale <= kMaxScale; scale++) {
    if (!AsScaledIntegers(values, scale, &ints, &lo, &hi)) continue;
    if (std::optional<std::string> narrow = EncodeNarrow(values, ints, lo, hi, scale)) {
      return std::move(*narrow);
    }
    break;  // the values fit a finer scale only with a wider range
  }
  // Wide integers: int64, with INT64_MIN as NA (no value may be it).
  bool integers = true;
  for (double v : values) {
    if (IsNA(v)) continue;
    if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0) || v != std::trunc(v) ||
        (std::signbit(v) && v == 0) || v == -9223372036854775808.0) {
      integers = false;
      break;
    }
  }
  if (integers) {
    PutHeader(&out, Layout::kInt64, 0, rows, 0);
    out.resize(kChunkHeaderBytes + 8 * size_t{rows});
    for (uint32_t i = 0; i < rows; i++) {
      const int64_t x =
          IsNA(values[i]) ? std::numeric_limits<int64_t>::min() : static_cast<int64_t>(values[i]);
      std::memcpy(out.data() + kChunkHeaderBytes + 8 * size_t{i}, &x, 8);
    }
    return out;
  }
  PutHeader(&out, Layout::kDouble, 0, rows, 0);
  out.resize(kChunkHeaderBytes + 8 * size_t{rows});
  for (uint32_t i = 0; i < rows; i++) {
    const double v = IsNA(values[i]) ? kNA : values[i];
    std::memcpy(out.data() + kChunkHeaderBytes + 8 * size_t{i}, &v, 8);
  }
  return out;
}

Result<ChunkView> ChunkView::Make(std::string_view bytes) {
  if (bytes.size() < kChunkHeaderBytes) return Status::Corruption("chunk shorter than its header");
  const auto layout_byte = static_cast<uint8_t>(bytes[0]);
  if (layout_byte >= kLayoutCount) return Status::Corruption("unknown chunk layout");
  ChunkView c;
  c.layout_ = static_cast<Layout>(layout_byte);
  c.scale_ = static_cast<uint8_t>(bytes[1]);
  if (bytes[2] != 0 || bytes[3] != 0) return Status::Corruption("chunk header reserved bytes set");
  std::memcpy(&c.rows_, bytes.data() + 4, 4);
  uint64_t bias_bits;
  std::memcpy(&bias_bits, bytes.data() + 8, 8);
  if (c.rows_ > kMaxChunkRows) return Status::Corruption("chunk row count above the limit");
  const bool scaled = c.layout_ == Layout::kScaled8 || c.layout_ == Layout::kScaled16 ||
                      c.layout_ == Layout::kScaled32;
  if (scaled ? (c.scale_ == 0 || c.scale_ > kMaxScale) : c.scale_ != 0) {
    return Status::Corruption("chunk scale out of range");
  }
  if ((c.layout_ == Layout::kEmpty) != (c.rows_ == 0)) {
    return Status::Corruption("an empty chunk must have no rows, and only an empty one");
  }
  if (bytes.size() != kChunkHeaderBytes + PayloadBytes(c.layout_, c.rows_)) {
    return Status::Corruption("chunk length does not match its layout and rows");
  }
  c.bias_ = static_cast<int64_t>(bias_bits);
  // Offsets add to the bias: the largest must not overflow it.
  uint64_t max_offset = 0;
  switch (c.layout_) {
    case Layout::kInt8:
    case Layout::kScaled8:
      max_offset = 0xFF;
      break;
    case Layout::kInt16:
    case Layout::kScaled16:
      max_offset = 0xFFFF;
      break;
    case Layout::kInt32:
    case Layout::kScaled32:
      max_offset = 0xFFFFFFFFu;
      break;
    case Layout::kConstant:
      std::memcpy(&c.constant_, &bias_bits, 8);
      break;
    default:
      if (bias_bits != 0) return Status::Corruption("chunk bias set for a layout without one");
      break;
  }
  if (max_offset != 0 &&
      c.bias_ > std::numeric_limits<int64_t>::max() - static_cast<int64_t>(max_offset)) {
    return Status::Corruption("chunk bias overflows with its offsets");
  }
  if (c.layout_ == Layout::kBits && c.rows_ % 8 != 0) {
    const auto last = static_cast<uint8_t>(bytes.back());
    if ((last >> (c.rows_ % 8)) != 0) return Status::Corruption("chunk bits set past its rows");
  }
  c.data_ = bytes.data() + kChunkHeaderBytes;
  c.size_ = bytes.size();
  return c;
}

}  // namespace floe::frame
