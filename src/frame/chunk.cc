// Numeric chunk layouts, dense and sparse: choosing one by looking at the data, encoding, and
// checking untrusted bytes (docs/frame.md).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
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
    default:
      break;
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
// `ints` holds values.size() integers (not initialized: a chunk's worth of zeros written for
// nothing at every chunk, random doubles' included, was 2% of an import). Scale 0 writes none:
// the integers are the values themselves (EncodeOffsets converts them again).
bool AsScaledIntegers(std::span<const double> values, int scale, int64_t* ints, int64_t* lo,
                      int64_t* hi) {
  // The bounds in locals, not through the pointers (which may alias the output to the
  // compiler): a store and a load of each at every value were a third of an import's
  // compression time.
  int64_t min = std::numeric_limits<int64_t>::max(), max = std::numeric_limits<int64_t>::min();
  if (scale == 0) {
    // An integer below 2^53 in magnitude converts to int64 and back unchanged.
    for (const double v : values) {
      if (IsNA(v)) continue;
      if (!(std::fabs(v) < kExactIntLimit)) return false;
      const auto k = static_cast<int64_t>(v);
      if (static_cast<double>(k) != v) return false;
      if (k == 0 && std::signbit(v)) return false;  // -0.0 would come back as +0.0
      min = std::min(min, k);
      max = std::max(max, k);
    }
    if (min > max) min = max = 0;  // every value NA
    *lo = min;
    *hi = max;
    return true;
  }
  const double pow10 = kPow10[scale];
  for (size_t i = 0; i < values.size(); i++) {
    const double v = values[i];
    if (IsNA(v)) continue;
    if (std::signbit(v) && v == 0) return false;  // -0.0 would come back as +0.0
    const double scaled = v * pow10;
    if (!(std::fabs(scaled) < kExactIntLimit)) return false;
    // llround's value (halves away from zero) without its call: below 2^53 the truncation and
    // the fraction left are exact.
    auto k = static_cast<int64_t>(scaled);
    const double fraction = scaled - static_cast<double>(k);
    if (fraction >= 0.5) k++;
    if (fraction <= -0.5) k--;
    if (static_cast<double>(k) / pow10 != v) return false;
    ints[i] = k;
    min = std::min(min, k);
    max = std::max(max, k);
  }
  if (min > max) min = max = 0;  // every value NA
  *lo = min;
  *hi = max;
  return true;
}

// `ints`: AsScaledIntegers's, or nullptr for scale 0 (the values are the integers).
template <typename U>
std::string EncodeOffsets(Layout layout, uint8_t scale, std::span<const double> values,
                          const int64_t* ints, int64_t bias) {
  std::string out;
  PutHeader(&out, layout, scale, static_cast<uint32_t>(values.size()), static_cast<uint64_t>(bias));
  out.resize(kChunkHeaderBytes + sizeof(U) * values.size());
  char* p = out.data() + kChunkHeaderBytes;
  auto put = [&](size_t i, int64_t k) {
    const U x = IsNA(values[i]) ? std::numeric_limits<U>::max()
                                : static_cast<U>(static_cast<uint64_t>(k - bias));
    std::memcpy(p + sizeof(U) * i, &x, sizeof(U));
  };
  if (ints == nullptr) {
    for (size_t i = 0; i < values.size(); i++) {
      put(i, IsNA(values[i]) ? 0 : static_cast<int64_t>(values[i]));
    }
  } else {
    for (size_t i = 0; i < values.size(); i++) put(i, ints[i]);
  }
  return out;
}

// The narrowest offset layout for integers in [lo, hi] (one value kept free for NA), if any.
std::optional<std::string> EncodeNarrow(std::span<const double> values, const int64_t* ints,
                                        int64_t lo, int64_t hi, int scale) {
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
      "empty", "constant",    "int8",      "int16",       "int32",
      "int64", "scaled8",     "scaled16",  "scaled32",    "double",
      "bits",  "sparse_zero", "sparse_na", "categorical", "string"};
  const auto i = static_cast<uint8_t>(layout);
  return i < kLayoutCount ? kNames[i] : "unknown";
}

namespace {

// The smallest dense layout (every layout but the sparse ones) for `values`.
std::string CompressDense(std::span<const double> values) {
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
  std::unique_ptr<int64_t[]> ints;  // for scales above 0, made at the first
  int64_t lo = 0, hi = 0;
  for (int scale = 0; scale <= kMaxScale; scale++) {
    if (scale > 0 && ints == nullptr) ints.reset(new int64_t[rows]);
    if (!AsScaledIntegers(values, scale, ints.get(), &lo, &hi)) continue;
    if (std::optional<std::string> narrow = EncodeNarrow(values, ints.get(), lo, hi, scale)) {
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

uint8_t IndexWidth(uint32_t rows) {
  if (rows <= 0x100) return 1;
  if (rows <= 0x10000) return 2;
  return 4;
}

// `values` as a sparse chunk around the fill of `layout` (+0.0 or NA), if that is smaller than
// `best` bytes. The listed values go in their own smallest dense layout.
// `fills`: how many values are that fill (counted once for both layouts by the caller).
std::optional<std::string> CompressSparse(std::span<const double> values, Layout layout,
                                          uint32_t fills, size_t best) {
  const bool zero = layout == Layout::kSparseZero;
  auto is_fill = [zero](double v) { return zero ? (v == 0 && !std::signbit(v)) : IsNA(v); };
  const auto rows = static_cast<uint32_t>(values.size());
  const uint32_t stored = rows - fills;
  // No fill: the sparse chunk would be the dense one of every value plus an index, never
  // smaller than `best` (which is at most that dense one): skip building it.
  if (stored == rows) return std::nullopt;
  const uint8_t width = IndexWidth(rows);
  // Two headers and the indices are a lower bound: most chunks stop here, before encoding.
  if (2 * kChunkHeaderBytes + size_t{stored} * width >= best) return std::nullopt;
  std::string out;
  PutHeader(&out, layout, width, rows, stored);
  out.resize(kChunkHeaderBytes + size_t{stored} * width);
  std::vector<double> kept;
  kept.reserve(stored);
  char* index = out.data() + kChunkHeaderBytes;
  for (uint32_t i = 0; i < rows; i++) {
    if (is_fill(values[i])) continue;
    std::memcpy(index + size_t{width} * kept.size(), &i, width);  // little-endian: the low bytes
    kept.push_back(values[i]);
  }
  out += CompressDense(kept);
  if (out.size() >= best) return std::nullopt;
  return out;
}

// Checks the header and length of a dense chunk (every layout but the sparse ones).
Status ParseDense(std::string_view bytes, internal::Dense* d, uint32_t* rows) {
  if (bytes.size() < kChunkHeaderBytes) return Status::Corruption("chunk shorter than its header");
  const auto layout_byte = static_cast<uint8_t>(bytes[0]);
  if (layout_byte > static_cast<uint8_t>(Layout::kBits)) {
    return Status::Corruption("unknown dense chunk layout");
  }
  d->layout = static_cast<Layout>(layout_byte);
  d->scale = static_cast<uint8_t>(bytes[1]);
  if (bytes[2] != 0 || bytes[3] != 0) return Status::Corruption("chunk header reserved bytes set");
  std::memcpy(rows, bytes.data() + 4, 4);
  uint64_t bias_bits;
  std::memcpy(&bias_bits, bytes.data() + 8, 8);
  if (*rows > kMaxChunkRows) return Status::Corruption("chunk row count above the limit");
  const bool scaled = d->layout == Layout::kScaled8 || d->layout == Layout::kScaled16 ||
                      d->layout == Layout::kScaled32;
  if (scaled ? (d->scale == 0 || d->scale > kMaxScale) : d->scale != 0) {
    return Status::Corruption("chunk scale out of range");
  }
  if ((d->layout == Layout::kEmpty) != (*rows == 0)) {
    return Status::Corruption("an empty chunk must have no rows, and only an empty one");
  }
  if (bytes.size() != kChunkHeaderBytes + PayloadBytes(d->layout, *rows)) {
    return Status::Corruption("chunk length does not match its layout and rows");
  }
  d->bias = static_cast<int64_t>(bias_bits);
  // Offsets add to the bias: the largest must not overflow it.
  uint64_t max_offset = 0;
  switch (d->layout) {
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
      std::memcpy(&d->constant, &bias_bits, 8);
      break;
    default:
      if (bias_bits != 0) return Status::Corruption("chunk bias set for a layout without one");
      break;
  }
  if (max_offset != 0 &&
      d->bias > std::numeric_limits<int64_t>::max() - static_cast<int64_t>(max_offset)) {
    return Status::Corruption("chunk bias overflows with its offsets");
  }
  if (d->layout == Layout::kBits && *rows % 8 != 0) {
    const auto last = static_cast<uint8_t>(bytes.back());
    if ((last >> (*rows % 8)) != 0) return Status::Corruption("chunk bits set past its rows");
  }
  d->data = bytes.data() + kChunkHeaderBytes;
  return Status::OK();
}

}  // namespace

std::string Compress(std::span<const double> values) {
  FLOE_CHECK(values.size() <= kMaxChunkRows);
  std::string best = CompressDense(values);
  // +0.0 and NA counted in one pass for both sparse layouts.
  uint32_t zeros = 0, nas = 0;
  for (const double v : values) {
    zeros += v == 0 && !std::signbit(v) ? 1 : 0;
    nas += IsNA(v) ? 1 : 0;
  }
  for (Layout sparse : {Layout::kSparseZero, Layout::kSparseNA}) {
    const uint32_t fills = sparse == Layout::kSparseZero ? zeros : nas;
    if (std::optional<std::string> s = CompressSparse(values, sparse, fills, best.size())) {
      best = std::move(*s);
    }
  }
  return best;
}

Status ChunkView::ParseSparse(std::string_view bytes) {
  layout_ = static_cast<Layout>(bytes[0]);
  const auto width = static_cast<uint8_t>(bytes[1]);
  if (bytes[2] != 0 || bytes[3] != 0) return Status::Corruption("chunk header reserved bytes set");
  uint64_t stored;
  std::memcpy(&rows_, bytes.data() + 4, 4);
  std::memcpy(&stored, bytes.data() + 8, 8);
  if (rows_ > kMaxChunkRows) return Status::Corruption("chunk row count above the limit");
  if (width != 1 && width != 2 && width != 4) {
    return Status::Corruption("sparse chunk index width is not 1, 2 or 4");
  }
  if (stored == 0 || stored > rows_) {
    return Status::Corruption("sparse chunk lists no rows, or more rows than it has");
  }
  stored_ = static_cast<uint32_t>(stored);
  index_width_ = width;
  const size_t index_bytes = size_t{stored_} * width;  // <= 2^28: rows are bounded above
  if (bytes.size() - kChunkHeaderBytes < index_bytes) {
    return Status::Corruption("sparse chunk shorter than its row indices");
  }
  index_ = bytes.data() + kChunkHeaderBytes;
  for (uint32_t k = 0; k < stored_; k++) {
    const uint32_t i = Index(k);
    if (i >= rows_ || (k > 0 && i <= Index(k - 1))) {
      return Status::Corruption("sparse chunk row indices not increasing within its rows");
    }
  }
  uint32_t inner_rows;
  FLOE_RETURN_IF_ERROR(
      ParseDense(bytes.substr(kChunkHeaderBytes + index_bytes), &dense_, &inner_rows));
  if (inner_rows != stored_) {
    return Status::Corruption("sparse chunk's values do not match its row indices");
  }
  fill_ = layout_ == Layout::kSparseZero ? 0.0 : kNA;
  return Status::OK();
}

Result<ChunkView> ChunkView::Make(std::string_view bytes) {
  if (bytes.size() < kChunkHeaderBytes) return Status::Corruption("chunk shorter than its header");
  ChunkView c;
  c.size_ = bytes.size();
  switch (static_cast<uint8_t>(bytes[0])) {
    case static_cast<uint8_t>(Layout::kSparseZero):
    case static_cast<uint8_t>(Layout::kSparseNA):
      FLOE_RETURN_IF_ERROR(c.ParseSparse(bytes));
      c.value_layout_ = c.layout_;
      c.raw_bytes_ = 8 * uint64_t{c.rows_};
      return c;
    case static_cast<uint8_t>(Layout::kCategorical):
      FLOE_RETURN_IF_ERROR(c.ParseCategorical(bytes));
      return c;
    case static_cast<uint8_t>(Layout::kString):
      FLOE_RETURN_IF_ERROR(c.ParseString(bytes));
      return c;
    default:
      if (static_cast<uint8_t>(bytes[0]) >= kLayoutCount) {
        return Status::Corruption("unknown chunk layout");
      }
      FLOE_RETURN_IF_ERROR(ParseDense(bytes, &c.dense_, &c.rows_));
      c.layout_ = c.value_layout_ = c.dense_.layout;
      c.stored_ = c.rows_;
      c.raw_bytes_ = 8 * uint64_t{c.rows_};
      return c;
  }
}
bool ChunkView::IntegerLayout() const {
  switch (dense_.layout) {
    case Layout::kConstant:
      return frame::IsNA(dense_.constant) || (std::fabs(dense_.constant) < 9223372036854775808.0 &&
                                              dense_.constant == std::trunc(dense_.constant));
    case Layout::kBits:
    case Layout::kInt8:
    case Layout::kInt16:
    case Layout::kInt32:
    case Layout::kInt64:
      return true;
    default:
      return layout_ == Layout::kEmpty;
  }
}

}  // namespace floe::frame
