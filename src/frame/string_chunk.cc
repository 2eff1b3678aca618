// Categorical, string and time chunks (docs/frame.md): codes wrapped around a numeric chunk,
// byte strings as end offsets + NA bits + one blob, and times as numeric chunks.

#include <cmath>
#include <cstring>
#include <vector>

#include "frame/frame.h"

namespace floe::frame {
namespace {

void PutHeader(std::string* out, Layout layout, uint32_t rows, uint64_t field) {
  out->assign(kChunkHeaderBytes, '\0');
  (*out)[0] = static_cast<char>(layout);
  std::memcpy(out->data() + 4, &rows, 4);
  std::memcpy(out->data() + 8, &field, 8);
}

// The header's layout-independent checks: reserved bytes and the row limit.
Status ParseHeader(std::string_view bytes, uint32_t* rows, uint64_t* field) {
  if (bytes[1] != 0 || bytes[2] != 0 || bytes[3] != 0) {
    return Status::Corruption("chunk header reserved bytes set");
  }
  std::memcpy(rows, bytes.data() + 4, 4);
  std::memcpy(field, bytes.data() + 8, 8);
  if (*rows > kMaxChunkRows) return Status::Corruption("chunk row count above the limit");
  return Status::OK();
}

}  // namespace

std::string CompressCodes(std::span<const int32_t> codes, uint32_t domain) {
  FLOE_CHECK(codes.size() <= kMaxChunkRows && domain <= kMaxDomain);
  std::vector<double> values(codes.size());
  for (size_t i = 0; i < codes.size(); i++) {
    FLOE_CHECK(codes[i] == kNACode || (codes[i] >= 0 && static_cast<uint32_t>(codes[i]) < domain));
    values[i] = codes[i] == kNACode ? kNA : codes[i];
  }
  std::string out;
  PutHeader(&out, Layout::kCategorical, static_cast<uint32_t>(codes.size()), domain);
  out += Compress(values);
  return out;
}

Result<std::string> CompressStrings(std::span<const std::optional<std::string_view>> values) {
  FLOE_CHECK(values.size() <= kMaxChunkRows);
  const auto rows = static_cast<uint32_t>(values.size());
  uint64_t blob = 0;
  for (const std::optional<std::string_view>& v : values) {
    // Each length is at most the address space, and the sum stops before 2^30 + 2^64 could wrap.
    if (v && (v->size() > kMaxStringBlob || blob + v->size() > kMaxStringBlob)) {
      return Status::ResourceExhausted("string chunk larger than its blob limit");
    }
    if (v) blob += v->size();
  }
  std::string out;
  PutHeader(&out, Layout::kString, rows, blob);
  const size_t ends_at = kChunkHeaderBytes, bits_at = ends_at + 4 * size_t{rows};
  const size_t blob_at = bits_at + (size_t{rows} + 7) / 8;
  out.resize(blob_at + blob);
  uint32_t end = 0;
  for (uint32_t i = 0; i < rows; i++) {
    if (values[i]) {
      std::memcpy(out.data() + blob_at + end, values[i]->data(), values[i]->size());
      end += static_cast<uint32_t>(values[i]->size());
    } else {
      out[bits_at + i / 8] = static_cast<char>(out[bits_at + i / 8] | (1 << (i % 8)));
    }
    std::memcpy(out.data() + ends_at + 4 * size_t{i}, &end, 4);
  }
  return out;
}

std::string CompressTimes(std::span<const int64_t> ms) {
  std::vector<double> values(ms.size());
  for (size_t i = 0; i < ms.size(); i++) {
    FLOE_CHECK(ms[i] == kNATime || (ms[i] >= -kMaxTimeMs && ms[i] <= kMaxTimeMs));
    values[i] = ms[i] == kNATime ? kNA : static_cast<double>(ms[i]);
  }
  return Compress(values);
}

Status ChunkView::ParseCategorical(std::string_view bytes) {
  uint64_t domain = 0;
  FLOE_RETURN_IF_ERROR(ParseHeader(bytes, &rows_, &domain));
  if (domain > kMaxDomain) return Status::Corruption("categorical chunk domain above the limit");
  // Looked at before parsing, so that nested headers cannot recurse without bound.
  if (bytes.size() < 2 * kChunkHeaderBytes || static_cast<uint8_t>(bytes[kChunkHeaderBytes]) >=
                                                  static_cast<uint8_t>(Layout::kCategorical)) {
    return Status::Corruption("categorical chunk's codes are not a numeric chunk");
  }
  FLOE_ASSIGN_OR_RETURN(ChunkView codes, Make(bytes.substr(kChunkHeaderBytes)));
  if (codes.rows_ != rows_) return Status::Corruption("categorical chunk's codes miss rows");
  // Every code is checked here, so CodeAt can trust them. A constant has one value, and a sparse
  // chunk its fill and the listed values (O(stored)): a 50-byte chunk naming 2^26 rows must not
  // cost 2^26 steps. Other layouts take O(rows), which the input's length bounds.
  const auto limit = static_cast<double>(domain);
  auto is_code = [limit](double v) {
    return frame::IsNA(v) || (v >= 0 && v < limit && v == std::trunc(v));
  };
  bool ok = true;
  if (codes.layout_ == Layout::kConstant) {
    ok = is_code(codes.dense_.constant);
  } else if (codes.sparse()) {
    ok = codes.stored_ == codes.rows_ || is_code(codes.fill_);
    for (uint32_t k = 0; k < codes.stored_; k++) ok &= is_code(codes.dense_.At(k));
  } else {
    codes.ForEach([&](uint32_t, double v) { ok &= is_code(v); });
  }
  if (!ok) return Status::Corruption("categorical chunk code outside its domain");
  const uint32_t rows = rows_;
  const size_t size = size_;
  *this = codes;
  value_layout_ = layout_;
  layout_ = Layout::kCategorical;
  rows_ = rows;
  size_ = size;
  domain_ = static_cast<uint32_t>(domain);
  raw_bytes_ = 4 * uint64_t{rows_};
  return Status::OK();
}

Status ChunkView::ParseString(std::string_view bytes) {
  layout_ = value_layout_ = Layout::kString;
  uint64_t blob = 0;
  FLOE_RETURN_IF_ERROR(ParseHeader(bytes, &rows_, &blob));
  if (blob > kMaxStringBlob) return Status::Corruption("string chunk blob above the limit");
  // Rows and blob are bounded above, so these sums cannot wrap.
  const uint64_t bits_at = kChunkHeaderBytes + 4 * uint64_t{rows_};
  const uint64_t blob_at = bits_at + (uint64_t{rows_} + 7) / 8;
  if (bytes.size() != blob_at + blob) {
    return Status::Corruption("string chunk length does not match its rows and blob");
  }
  ends_ = bytes.data() + kChunkHeaderBytes;
  na_bits_ = bytes.data() + bits_at;
  blob_ = bytes.data() + blob_at;
  stored_ = rows_;
  uint32_t begin = 0;
  for (uint32_t i = 0; i < rows_; i++) {
    uint32_t end;
    std::memcpy(&end, ends_ + 4 * size_t{i}, 4);
    if (end < begin || end > blob) {
      return Status::Corruption("string chunk offsets not increasing within its blob");
    }
    if (((static_cast<uint8_t>(na_bits_[i / 8]) >> (i % 8)) & 1) != 0 && end != begin) {
      return Status::Corruption("string chunk NA row with bytes");
    }
    begin = end;
  }
  if (begin != blob) return Status::Corruption("string chunk offsets end before its blob");
  raw_bytes_ = blob + 4 * uint64_t{rows_};
  if (rows_ % 8 != 0 && (static_cast<uint8_t>(na_bits_[rows_ / 8]) >> (rows_ % 8)) != 0) {
    return Status::Corruption("string chunk NA bits set past its rows");
  }
  return Status::OK();
}

}  // namespace floe::frame
