// Vecs, frames and the frame builder (docs/frame.md): checking chunks against a column's type,
// finding a row's chunk, lining up chunk boundaries, and cutting chunks as rows arrive.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "frame/frame.h"

namespace floe::frame {

std::string_view ColumnTypeName(ColumnType type) {
  switch (type) {
    case ColumnType::kInteger:
      return "integer";
    case ColumnType::kReal:
      return "real";
    case ColumnType::kCategorical:
      return "categorical";
    case ColumnType::kString:
      return "string";
    case ColumnType::kTime:
      return "time";
  }
  return "unknown";
}

Result<Vec> Vec::Make(ColumnType type, std::vector<std::string> domain,
                      std::vector<std::shared_ptr<const std::string>> chunks,
                      std::optional<uint64_t> na_count) {
  if (type != ColumnType::kCategorical && !domain.empty()) {
    return Status::InvalidArgument("only a categorical column has a domain");
  }
  if (domain.size() > kMaxDomain) return Status::InvalidArgument("domain above the limit");
  {
    std::vector<std::string_view> sorted(domain.begin(), domain.end());
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return Status::InvalidArgument("domain values repeat");
    }
  }
  Vec v;
  v.type_ = type;
  v.views_.reserve(chunks.size());
  v.starts_.reserve(chunks.size() + 1);
  for (const std::shared_ptr<const std::string>& bytes : chunks) {
    if (bytes == nullptr) return Status::InvalidArgument("vec chunk missing");
    FLOE_ASSIGN_OR_RETURN(ChunkView c, ChunkView::Make(*bytes));
    bool fits = false;
    switch (type) {
      case ColumnType::kInteger:
      case ColumnType::kTime:
        fits = c.layout() < Layout::kCategorical && c.IntegerLayout();
        break;
      case ColumnType::kReal:
        fits = c.layout() < Layout::kCategorical;
        break;
      case ColumnType::kCategorical:
        fits = (c.layout() == Layout::kCategorical && c.domain() <= domain.size()) ||
               c.layout() == Layout::kEmpty;
        break;
      case ColumnType::kString:
        fits = c.layout() == Layout::kString || c.layout() == Layout::kEmpty;
        break;
    }
    if (!fits) return Status::Corruption("chunk layout does not fit the column's type");
    v.starts_.push_back(v.starts_.back() + c.rows());
    v.compressed_bytes_ += c.bytes();
    v.raw_bytes_ += c.raw_bytes();
    v.views_.push_back(c);
    if (na_count) {
      // Known: not counted again.
    } else if (c.layout() == Layout::kString) {
      for (uint32_t i = 0; i < c.rows(); i++) v.na_count_ += c.IsNA(i) ? 1 : 0;
    } else {
      // NA is not zero: a sparse-zero chunk is read in O(stored()).
      c.ForEachNonZero([&](uint32_t, double x) { v.na_count_ += frame::IsNA(x) ? 1 : 0; });
    }
    std::string layout(LayoutName(c.layout()));
    if (c.layout() == Layout::kCategorical) {
      layout += "/" + std::string(LayoutName(c.value_layout()));
    }
    auto it = std::lower_bound(v.layout_counts_.begin(), v.layout_counts_.end(), layout,
                               [](const auto& e, const std::string& n) { return e.first < n; });
    if (it == v.layout_counts_.end() || it->first != layout) {
      it = v.layout_counts_.emplace(it, std::move(layout), 0);
    }
    it->second++;
  }
  if (na_count) {
    // The builder's own count: more NAs than rows is a bug, refused here rather than found
    // by a peer that decodes the frame's header.
    if (*na_count > v.starts_.back()) return Status::Corruption("more NAs than rows");
    v.na_count_ = *na_count;
  }
  v.domain_ = std::move(domain);
  v.chunks_ = std::move(chunks);  // the views point into the strings, which do not move
  return v;
}

Vec::Place Vec::ChunkFor(uint64_t row) const {
  FLOE_DCHECK(row < rows());
  // The last chunk starting at or before `row`; empty chunks share a start with the next one,
  // which upper_bound steps past.
  const auto it = std::upper_bound(starts_.begin(), starts_.end(), row);
  const auto k = static_cast<size_t>(it - starts_.begin()) - 1;
  return {.chunk = k, .row = static_cast<uint32_t>(row - starts_[k])};
}

double Vec::At(uint64_t row) const {
  const Place p = ChunkFor(row);
  return views_[p.chunk].At(p.row);
}

bool Vec::IsNA(uint64_t row) const {
  const Place p = ChunkFor(row);
  return views_[p.chunk].IsNA(p.row);
}

std::string_view Vec::AtString(uint64_t row) const {
  const Place p = ChunkFor(row);
  const ChunkView& c = views_[p.chunk];
  if (type_ == ColumnType::kString) return c.AtString(p.row);
  if (type_ != ColumnType::kCategorical) return {};
  const int32_t code = c.CodeAt(p.row);
  return code == kNACode ? std::string_view() : std::string_view(domain_[code]);
}

Result<Frame> Frame::Make(std::vector<std::string> names, std::vector<Vec> vecs) {
  if (names.size() != vecs.size()) return Status::InvalidArgument("one name per column");
  std::unordered_set<std::string_view> seen;
  for (const std::string& n : names) {
    if (n.empty()) return Status::InvalidArgument("empty column name");
    if (!seen.insert(n).second) return Status::InvalidArgument("column names repeat");
  }
  for (const Vec& v : vecs) {
    if (v.chunk_count() != vecs[0].chunk_count()) {
      return Status::InvalidArgument("columns with different chunk counts");
    }
    for (size_t k = 0; k <= v.chunk_count(); k++) {
      if (v.chunk_start(k) != vecs[0].chunk_start(k)) {
        return Status::InvalidArgument("column chunks not aligned by row");
      }
    }
  }
  Frame f;
  for (const std::string& n : names) f.header_bytes_ += n.size() + kHeaderEntryBytes;
  for (const Vec& v : vecs) {
    for (const std::string& d : v.domain()) f.header_bytes_ += d.size() + kHeaderEntryBytes;
  }
  f.names_ = std::move(names);
  f.vecs_ = std::move(vecs);
  return f;
}

std::optional<size_t> Frame::Find(std::string_view name) const {
  for (size_t i = 0; i < names_.size(); i++) {
    if (names_[i] == name) return i;
  }
  return std::nullopt;
}

uint64_t Frame::compressed_bytes() const {
  uint64_t sum = 0;
  for (const Vec& v : vecs_) sum += v.compressed_bytes();
  return sum;
}

uint64_t Frame::raw_bytes() const {
  uint64_t sum = 0;
  for (const Vec& v : vecs_) sum += v.raw_bytes();
  return sum;
}

// ---------------------------------------------------------------------------------------------
// FrameBuilder

size_t FrameBuilder::Column::pending() const {
  switch (spec.type) {
    case ColumnType::kCategorical:
      return codes.size();
    case ColumnType::kString:
      return ends.size();
    default:
      return numbers.size();
  }
}

Result<FrameBuilder> FrameBuilder::Make(std::vector<ColumnSpec> columns,
                                        FrameBuilderOptions options) {
  if (options.target_chunk_bytes == 0 || options.target_chunk_bytes > kMaxTargetChunkBytes) {
    return Status::InvalidArgument("target chunk size out of range");
  }
  if (columns.empty()) return Status::InvalidArgument("a frame needs a column");
  std::unordered_set<std::string_view> seen;
  for (const ColumnSpec& c : columns) {
    if (c.name.empty()) return Status::InvalidArgument("empty column name");
    if (!seen.insert(c.name).second) return Status::InvalidArgument("column names repeat");
  }
  FrameBuilder b;
  b.options_ = options;
  for (ColumnSpec& c : columns) b.columns_.push_back(Column{.spec = std::move(c)});
  b.set_.assign(b.columns_.size(), 0);
  return b;
}

Status FrameBuilder::Check(size_t col, bool ok_for_type) {
  if (col >= columns_.size()) return Status::InvalidArgument("no such column");
  if (set_[col] != 0) return Status::InvalidArgument("column already set in this row");
  if (!ok_for_type) return Status::InvalidArgument("value does not fit the column's type");
  return Status::OK();
}

Status FrameBuilder::AddNumberSlow(size_t col, double v) {
  const ColumnType type = col < columns_.size() ? columns_[col].spec.type : ColumnType::kReal;
  if (type == ColumnType::kInteger && !frame::IsNA(v)) {
    // Magnitude below 2^63, and not -2^63 (int64's NA in its raw layout).
    if (!(std::fabs(v) < 9223372036854775808.0) || v != std::trunc(v)) {
      return Status::InvalidArgument("not an integer of at most 63 bits");
    }
    v += 0.0;  // -0 is 0 in an integer column
  }
  FLOE_RETURN_IF_ERROR(Check(col, type == ColumnType::kInteger || type == ColumnType::kReal));
  const bool na = frame::IsNA(v);
  columns_[col].numbers.push_back(na ? kNA : v);
  columns_[col].na_count += na ? 1 : 0;
  Set(col, 8);
  return Status::OK();
}

Status FrameBuilder::AddTime(size_t col, int64_t ms) {
  const bool time = col < columns_.size() && columns_[col].spec.type == ColumnType::kTime;
  FLOE_RETURN_IF_ERROR(Check(col, time));
  if (ms != kNATime && (ms < -kMaxTimeMs || ms > kMaxTimeMs)) {
    return Status::InvalidArgument("time out of range");
  }
  columns_[col].numbers.push_back(ms == kNATime ? kNA : static_cast<double>(ms));
  columns_[col].na_count += ms == kNATime ? 1 : 0;
  Set(col, 8);
  return Status::OK();
}

namespace {

constexpr size_t kCodeCacheSlots = 1024;

// A hash of the value's length and its first and last (up to) 8 bytes: enough to tell apart the
// values of a categorical column, which are mostly short; a miss only costs a map lookup.
size_t CacheHash(std::string_view v) {
  const size_t n = v.size();
  const char* p = v.data();
  uint64_t a = 0, b = 0;
  if (n >= 8) {
    std::memcpy(&a, p, 8);
    std::memcpy(&b, p + n - 8, 8);
  } else if (n >= 4) {
    uint32_t x, y;
    std::memcpy(&x, p, 4);
    std::memcpy(&y, p + n - 4, 4);
    a = x | uint64_t{y} << 32;
  } else if (n > 0) {
    a = uint64_t{static_cast<uint8_t>(p[0])} | uint64_t{static_cast<uint8_t>(p[n / 2])} << 8 |
        uint64_t{static_cast<uint8_t>(p[n - 1])} << 16;
  }
  const uint64_t h =
      (a * 0x9e3779b97f4a7c15ull ^ b * 0xc2b2ae3d27d4eb4full ^ n) * 0xff51afd7ed558ccdull;
  return static_cast<size_t>(h >> 32);
}

// Whether n bytes at a and b are equal; short values (the usual categorical) compared in a few
// word loads instead of a call to memcmp.
bool SameBytes(const char* a, const char* b, size_t n) {
  auto load8 = [](const char* p) {
    uint64_t x;
    std::memcpy(&x, p, 8);
    return x;
  };
  auto load4 = [](const char* p) {
    uint32_t x;
    std::memcpy(&x, p, 4);
    return x;
  };
  if (n >= 8 && n <= 16) {
    return load8(a) == load8(b) && load8(a + n - 8) == load8(b + n - 8);
  }
  if (n >= 4 && n < 8) return load4(a) == load4(b) && load4(a + n - 4) == load4(b + n - 4);
  if (n < 4) {
    for (size_t i = 0; i < n; i++) {
      if (a[i] != b[i]) return false;
    }
    return true;
  }
  return std::memcmp(a, b, n) == 0;
}

}  // namespace

int32_t FrameBuilder::Column::CodeSlow(std::string_view v, uint64_t key) {
  const size_t slot = code_cache.empty()  ? 0
                      : key != kLongValue ? SlotHash(key) & (code_cache.size() - 1)
                                          : CacheHash(v) & (code_cache.size() - 1);
  if (!code_cache.empty() && key == kLongValue) {
    const int32_t code = code_cache[slot].code;
    if (code >= 0 && static_cast<size_t>(code) < domain.size() && domain[code].size() == v.size() &&
        SameBytes(domain[code].data(), v.data(), v.size())) {
      return code;
    }
  }
  const auto it = codes_of.find(v);
  if (it == codes_of.end()) return -1;
  if (!code_cache.empty()) code_cache[slot] = {.key = key, .code = it->second};
  return it->second;
}

void FrameBuilder::Column::SizeCodeCache() {
  size_t slots = 4;
  while (slots < kCodeCacheSlots && slots < 2 * domain.size()) slots *= 2;
  if (slots != code_cache.size()) code_cache.assign(slots, CodeSlot{});
}

Status FrameBuilder::AddStringSlow(size_t col, std::string_view v) {
  const ColumnType type = col < columns_.size() ? columns_[col].spec.type : ColumnType::kReal;
  FLOE_RETURN_IF_ERROR(Check(col, type == ColumnType::kCategorical || type == ColumnType::kString));
  Column& c = columns_[col];
  if (type == ColumnType::kCategorical) return AddCategorical(col, v, c.Code(v));
  // The blob holds less than the target (else the last EndRow cut it) plus this value: below
  // 256 MiB + 512 MiB, inside kMaxStringBlob.
  if (v.size() > kMaxStringValue) return Status::InvalidArgument("string value too long");
  c.blob.append(v);
  c.ends.push_back(static_cast<uint32_t>(c.blob.size()));
  c.na.push_back(false);
  Set(col, 4 + v.size());
  return Status::OK();
}

Status FrameBuilder::AddCategorical(size_t col, std::string_view v, int32_t code) {
  Column& c = columns_[col];
  if (code < 0) {
    if (c.domain.size() >= kMaxDomain) return Status::ResourceExhausted("domain too large");
    code = static_cast<int32_t>(c.domain.size());
    c.codes_of.emplace(std::string(v), code);
    c.domain.emplace_back(v);
    new_values_.push_back(col);
    domain_bytes_ += 2 * v.size() + kDomainEntryBytes;
    c.SizeCodeCache();  // grows with the domain (emptied: it refills as values come)
  }
  c.codes.push_back(code);
  Set(col, 4);
  return Status::OK();
}

Status FrameBuilder::SeedDomain(size_t col, const std::vector<std::string>& values) {
  if (col >= columns_.size() || columns_[col].spec.type != ColumnType::kCategorical) {
    return Status::InvalidArgument("not a categorical column");
  }
  Column& c = columns_[col];
  if (!c.domain.empty() || !c.codes.empty() || !c.chunks.empty() || set_[col] != 0) {
    return Status::InvalidArgument("the column already has values");
  }
  if (values.size() > kMaxDomain) return Status::InvalidArgument("domain above the limit");
  for (const std::string& v : values) {
    if (!c.codes_of.emplace(v, static_cast<int32_t>(c.domain.size())).second) {
      c.codes_of.clear();
      c.domain.clear();
      return Status::InvalidArgument("domain values repeat");
    }
    c.domain.push_back(v);
  }
  for (const std::string& v : c.domain) domain_bytes_ += 2 * v.size() + kDomainEntryBytes;
  if (c.domain.size() > 0) c.SizeCodeCache();
  return Status::OK();
}

Status FrameBuilder::AddNA(size_t col) {
  FLOE_RETURN_IF_ERROR(Check(col, true));
  Column& c = columns_[col];
  c.na_count++;
  switch (c.spec.type) {
    case ColumnType::kCategorical:
      c.codes.push_back(kNACode);
      Set(col, 4);
      break;
    case ColumnType::kString:
      c.ends.push_back(static_cast<uint32_t>(c.blob.size()));
      c.na.push_back(true);
      Set(col, 4);
      break;
    default:
      c.numbers.push_back(kNA);
      Set(col, 8);
  }
  return Status::OK();
}

// EndRow with a column not set.
Status FrameBuilder::DropRow() {
  // Drop the values this row set, so the builder stays row-aligned.
  for (size_t i = 0; i < columns_.size(); i++) {
    if (set_[i] == 0) continue;
    Column& c = columns_[i];
    switch (c.spec.type) {
      case ColumnType::kCategorical:
        c.na_count -= c.codes.back() == kNACode ? 1 : 0;
        c.codes.pop_back();
        c.pending_raw -= 4;
        // A value seen only in the dropped row leaves the domain.
        if (std::find(new_values_.begin(), new_values_.end(), i) != new_values_.end()) {
          domain_bytes_ -= 2 * c.domain.back().size() + kDomainEntryBytes;
          c.codes_of.erase(c.domain.back());
          c.domain.pop_back();
          // A short value's slot is trusted without the domain: its code may go to another.
          std::fill(c.code_cache.begin(), c.code_cache.end(), Column::CodeSlot{});
        }
        break;
      case ColumnType::kString: {
        const uint32_t begin = c.ends.size() > 1 ? c.ends[c.ends.size() - 2] : 0;
        c.pending_raw -= 4 + (c.ends.back() - begin);
        c.na_count -= c.na.back() ? 1 : 0;
        c.blob.resize(begin);
        c.ends.pop_back();
        c.na.pop_back();
        break;
      }
      default:
        c.na_count -= frame::IsNA(c.numbers.back()) ? 1 : 0;
        c.numbers.pop_back();
        c.pending_raw -= 8;
    }
  }
  new_values_.clear();
  std::fill(set_.begin(), set_.end(), 0);
  set_count_ = 0;
  row_pending_ = 0;
  column_full_ = false;
  for (const Column& c : columns_) {
    row_pending_ += c.pending_raw;
    column_full_ |= c.pending_raw >= options_.target_chunk_bytes;
  }
  return Status::InvalidArgument("row ended with a column not set");
}

Status FrameBuilder::DemoteToString(size_t col) {
  if (col >= columns_.size() || columns_[col].spec.type != ColumnType::kCategorical) {
    return Status::InvalidArgument("not a categorical column");
  }
  for (const Column& c : columns_) {
    if (c.pending() != pending_rows_) return Status::InvalidArgument("a row is not ended");
  }
  Column& c = columns_[col];
  std::vector<std::optional<std::string_view>> values;
  auto value_of = [&c](int32_t code) {
    return code == kNACode ? std::nullopt : std::optional<std::string_view>(c.domain[code]);
  };
  std::vector<std::shared_ptr<const std::string>> chunks;
  for (const auto& chunk : c.chunks) {
    FLOE_ASSIGN_OR_RETURN(ChunkView view, ChunkView::Make(*chunk));
    values.clear();
    for (uint32_t r = 0; r < view.rows(); r++) {
      values.push_back(value_of(view.layout() == Layout::kEmpty ? kNACode : view.CodeAt(r)));
    }
    FLOE_ASSIGN_OR_RETURN(std::string bytes, CompressStrings(values));
    chunks.push_back(std::make_shared<const std::string>(std::move(bytes)));
  }
  // The pending codes as the string column's pending values: the blob stays within what
  // AddString allows (the target plus one value), else the caller gets an error, never a blob
  // past the chunk format's limit.
  std::string blob;
  std::vector<uint32_t> ends;
  std::vector<bool> na;
  uint64_t raw = 0;
  for (const int32_t code : c.codes) {
    if (code != kNACode) {
      const std::string& v = c.domain[code];
      if (blob.size() + v.size() > kMaxTargetChunkBytes + kMaxStringValue) {
        return Status::ResourceExhausted("pending strings too long");
      }
      blob.append(v);
    }
    ends.push_back(static_cast<uint32_t>(blob.size()));
    na.push_back(code == kNACode);
    raw += 4 + (code == kNACode ? 0 : c.domain[code].size());
  }
  for (const std::string& v : c.domain) domain_bytes_ -= 2 * v.size() + kDomainEntryBytes;
  c.chunks = std::move(chunks);
  c.blob = std::move(blob);
  c.ends = std::move(ends);
  c.na = std::move(na);
  row_pending_ += raw - c.pending_raw;
  column_full_ |= raw >= options_.target_chunk_bytes;
  c.pending_raw = raw;
  c.codes.clear();
  std::vector<std::string>().swap(c.domain);
  decltype(c.codes_of)().swap(c.codes_of);
  std::vector<Column::CodeSlot>().swap(c.code_cache);
  c.spec.type = ColumnType::kString;
  return Status::OK();
}

uint64_t FrameBuilder::RowsBeforeCut() const {
  if (set_count_ != 0) return 0;
  // The first row after which a condition of EndRow's cut holds, counted from here: each column
  // of fixed width gains its width a row (NA included), so its pending bytes are known ahead.
  const uint64_t target = options_.target_chunk_bytes;
  uint64_t rows = kMaxChunkRows - pending_rows_;
  uint64_t width = 0;
  for (const Column& c : columns_) {
    uint64_t w = 8;
    if (c.spec.type == ColumnType::kCategorical) {
      w = 4;
    } else if (c.spec.type != ColumnType::kInteger && c.spec.type != ColumnType::kReal) {
      return 0;
    }
    width += w;
    rows = std::min(rows, c.pending_raw >= target ? 1 : (target - c.pending_raw + w - 1) / w);
  }
  const uint64_t all = 16 * target;
  rows = std::min(rows, row_pending_ >= all ? 1 : (all - row_pending_ + width - 1) / width);
  return std::max<uint64_t>(rows, 1);
}

Status FrameBuilder::AppendRows(size_t n, std::span<const ColumnRun> runs) {
  if (runs.size() != columns_.size()) return Status::InvalidArgument("one run per column");
  if (n == 0) return Status::OK();
  if (n > RowsBeforeCut()) {
    return Status::InvalidArgument("rows past the next cut, a row begun, or a string column");
  }
  for (size_t col = 0; col < columns_.size(); col++) {
    const Column& c = columns_[col];
    if (c.spec.type == ColumnType::kCategorical ? runs[col].values == nullptr
                                                : runs[col].numbers == nullptr) {
      return Status::InvalidArgument("a column's run is missing");
    }
    if (c.spec.type == ColumnType::kCategorical && c.domain.size() + n > kMaxDomain) {
      return Status::ResourceExhausted("domain too large");
    }
  }
  // Numbers first, each checked as it is copied: a value a column does not take undoes the
  // numeric columns appended so far, before any categorical domain has grown.
  std::vector<uint64_t> na_before;
  for (size_t col = 0; col < columns_.size(); col++) {
    Column& c = columns_[col];
    if (c.spec.type == ColumnType::kCategorical) continue;
    na_before.push_back(c.na_count);
    const double* in = runs[col].numbers;
    const size_t at = c.numbers.size();
    c.numbers.resize(at + n);
    double* out = c.numbers.data() + at;
    uint64_t na = 0;
    bool ok = true;
    if (c.spec.type == ColumnType::kReal) {
      for (size_t i = 0; i < n; i++) {
        const bool is_na = std::isnan(in[i]);
        out[i] = is_na ? kNA : in[i];
        na += is_na ? 1 : 0;
      }
    } else {
      for (size_t i = 0; i < n; i++) {
        const double v = in[i];
        // As AddNumber: an integer below 2^63 in magnitude (-0 is 0), or NaN for NA.
        if (std::fabs(v) < 9223372036854775808.0 &&
            static_cast<double>(static_cast<int64_t>(v)) == v) {
          out[i] = v + 0.0;
        } else if (std::isnan(v)) {
          out[i] = kNA;
          na++;
        } else {
          ok = false;
          break;
        }
      }
    }
    c.na_count += na;
    if (!ok) {
      for (size_t back = 0, k = 0; back <= col; back++) {
        Column& b = columns_[back];
        if (b.spec.type == ColumnType::kCategorical) continue;
        b.numbers.resize(b.numbers.size() - n);
        b.na_count = na_before[k++];
      }
      return Status::InvalidArgument("value does not fit the column's type");
    }
  }
  for (size_t col = 0; col < columns_.size(); col++) {
    Column& c = columns_[col];
    if (c.spec.type != ColumnType::kCategorical) continue;
    const std::string_view* in = runs[col].values;
    const size_t at = c.codes.size();
    c.codes.resize(at + n);
    int32_t* out = c.codes.data() + at;
    for (size_t i = 0; i < n; i++) {
      const std::string_view v = in[i];
      if (v.data() == nullptr) {
        out[i] = kNACode;
        c.na_count++;
        continue;
      }
      int32_t code = c.Code(v);
      if (code < 0) {  // as AddCategorical; the domain has room (checked above)
        code = static_cast<int32_t>(c.domain.size());
        c.codes_of.emplace(std::string(v), code);
        c.domain.emplace_back(v);
        domain_bytes_ += 2 * v.size() + kDomainEntryBytes;
        c.SizeCodeCache();
      }
      out[i] = code;
    }
  }
  for (Column& c : columns_) {
    const uint64_t raw = (c.spec.type == ColumnType::kCategorical ? 4 : 8) * uint64_t{n};
    c.pending_raw += raw;
    row_pending_ += raw;
    column_full_ |= c.pending_raw >= options_.target_chunk_bytes;
  }
  // As EndRow after the run's last row (RowsBeforeCut: no row before it would have cut).
  pending_rows_ += static_cast<uint32_t>(n);
  rows_ += n;
  pending_bytes_ = row_pending_;
  if (column_full_ || pending_rows_ == kMaxChunkRows ||
      row_pending_ >= uint64_t{16} * options_.target_chunk_bytes) {
    Cut();
  }
  return Status::OK();
}

void FrameBuilder::Cut() {
  for (Column& c : columns_) {
    std::string bytes;
    switch (c.spec.type) {
      case ColumnType::kCategorical:
        bytes = CompressCodes(c.codes, static_cast<uint32_t>(c.domain.size()));
        c.codes.clear();
        break;
      case ColumnType::kString: {
        std::vector<std::optional<std::string_view>> values(c.ends.size());
        uint32_t begin = 0;
        for (size_t i = 0; i < values.size(); i++) {
          if (!c.na[i]) values[i] = std::string_view(c.blob).substr(begin, c.ends[i] - begin);
          begin = c.ends[i];
        }
        Result<std::string> s = CompressStrings(values);
        FLOE_CHECK_OK(s.status());  // AddString keeps the blob under the limit
        bytes = std::move(*s);
        c.blob.clear();
        c.ends.clear();
        c.na.clear();
        break;
      }
      default:
        bytes = Compress(c.numbers);
        c.numbers.clear();
    }
    c.chunks.push_back(std::make_shared<const std::string>(std::move(bytes)));
    c.pending_raw = 0;
  }
  pending_rows_ = 0;
  pending_bytes_ = 0;
  row_pending_ = 0;
  column_full_ = false;
}

Result<Frame> FrameBuilder::Finish() {
  for (const Column& c : columns_) {
    if (c.pending() != pending_rows_) return Status::FailedPrecondition("a row is not ended");
  }
  if (pending_rows_ > 0) Cut();
  std::vector<std::string> names;
  std::vector<Vec> vecs;
  for (Column& c : columns_) {
    // The NA count kept as values came: Vec::Make need not decode every chunk to count it.
    FLOE_ASSIGN_OR_RETURN(
        Vec v, Vec::Make(c.spec.type, std::move(c.domain), std::move(c.chunks), c.na_count));
    names.push_back(std::move(c.spec.name));
    vecs.push_back(std::move(v));
  }
  columns_.clear();
  rows_ = 0;
  domain_bytes_ = 0;
  return Frame::Make(std::move(names), std::move(vecs));
}

}  // namespace floe::frame
