// frame: columns of a table cut into chunks, each chunk compressed by looking at its data
// (docs/frame.md): numeric (dense and sparse), categorical and string chunks, and the vecs and
// frames made of them. CSV import and map/reduce build on these.
//
// Contracts
// ---------
// 1. Compress(values) picks the smallest layout that represents every value exactly (NA included)
//    and returns the chunk's bytes; ChunkView reads back exactly the same values, NA where NA
//    was, bit for bit for every other double. CompressCodes and CompressStrings likewise give
//    back the same codes and the same bytes.
// 2. A ChunkView reads a value without allocating: At(i) is a few instructions of arithmetic on
//    the bytes it views (which must outlive it), a binary search on sparse chunks; AtString
//    returns a view into those bytes.
// 3. ChunkView::Make takes untrusted bytes (a chunk from another node, a file): every length and
//    field is checked before it is used, in overflow-safe arithmetic, and the work it does is
//    bounded by the input's length; malformed input is a Corruption status, never a crash
//    (fuzzed by fuzz/frame_fuzz.cc).
// 4. NA is a quiet NaN (kNA). A NaN read from input is stored as NA: a column has one missing
//    value, as in H2O. Codes have kNACode, times kNATime, strings an NA bit.
// 5. Chunk k of every column of a Frame covers the same rows (Frame::Make checks it).
//
// Thread rule: the functions are pure, and ChunkView, Vec and Frame immutable: thread-safe.
// FrameBuilder is thread-compatible.

#ifndef FLOE_FRAME_FRAME_H_
#define FLOE_FRAME_FRAME_H_

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

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
  kDouble = 9,        // raw doubles; NaN is NA
  kBits = 10,         // 0/1 values, one bit each, with no NA
  kSparseZero = 11,   // mostly +0.0: sorted row indices of the other rows + a dense chunk of them
  kSparseNA = 12,     // mostly NA: the same, the rows not listed being NA
  kCategorical = 13,  // codes into the column's domain: a header, then a numeric chunk of codes
  kString = 14,       // byte strings: end offsets, NA bits, one blob
};
inline constexpr uint8_t kLayoutCount = 15;
std::string_view LayoutName(Layout layout);

inline constexpr size_t kChunkHeaderBytes = 16;      // layout, scale, 2 reserved, rows, bias
inline constexpr uint32_t kMaxChunkRows = 1u << 26;  // 64 Mi rows: a chunk is ~1-4 MB of data

// Compresses `values` (NA as kNA). REQUIRES: values.size() <= kMaxChunkRows.
std::string Compress(std::span<const double> values);

// Categorical chunks hold codes: indices into a domain (the distinct strings) that belongs to
// the column, not to the chunk. A chunk records the domain size it was cut with, and every code
// in it is below that size.
inline constexpr int32_t kNACode = -1;
inline constexpr uint32_t kMaxDomain = std::numeric_limits<int32_t>::max();
// REQUIRES: codes.size() <= kMaxChunkRows, domain <= kMaxDomain, and every code is kNACode or
// in [0, domain).
std::string CompressCodes(std::span<const int32_t> codes, uint32_t domain);

// String chunks hold any bytes (UTF-8 or not) per row, or NA. The blob of one chunk (the sum of
// its values' lengths) is at most kMaxStringBlob bytes.
inline constexpr uint64_t kMaxStringBlob = uint64_t{1} << 30;
// ResourceExhausted if the values' lengths add up to more than kMaxStringBlob.
// REQUIRES: values.size() <= kMaxChunkRows.
Result<std::string> CompressStrings(std::span<const std::optional<std::string_view>> values);

// Time is not a layout: a time column is a numeric column of milliseconds since the epoch (the
// vec's type says so), so it gets the integer layouts (bias + narrow offsets). Milliseconds are
// exact as doubles up to 2^53 (about ±285,000 years).
inline constexpr int64_t kNATime = std::numeric_limits<int64_t>::min();
inline constexpr int64_t kMaxTimeMs = int64_t{1} << 53;
// REQUIRES: ms.size() <= kMaxChunkRows; every value kNATime or within ±kMaxTimeMs.
std::string CompressTimes(std::span<const int64_t> ms);

namespace internal {

// The rows of a dense numeric layout (every layout but the sparse ones): enough of the header to
// decode row i from the bytes after it.
struct Dense {
  Layout layout = Layout::kEmpty;
  uint8_t scale = 0;
  int64_t bias = 0;
  double constant = 0;
  const char* data = nullptr;

  double At(uint32_t i) const {
    switch (layout) {
      case Layout::kConstant:
        return constant;
      case Layout::kInt8:
        return Int<uint8_t>(i, 0);
      case Layout::kInt16:
        return Int<uint16_t>(i, 0);
      case Layout::kInt32:
        return Int<uint32_t>(i, 0);
      case Layout::kInt64: {
        int64_t x;
        std::memcpy(&x, data + 8 * size_t{i}, 8);
        return x == std::numeric_limits<int64_t>::min() ? kNA : static_cast<double>(x);
      }
      case Layout::kScaled8:
        return Int<uint8_t>(i, scale);
      case Layout::kScaled16:
        return Int<uint16_t>(i, scale);
      case Layout::kScaled32:
        return Int<uint32_t>(i, scale);
      case Layout::kDouble: {
        double x;
        std::memcpy(&x, data + 8 * size_t{i}, 8);
        return x;
      }
      case Layout::kBits:
        return (static_cast<uint8_t>(data[i / 8]) >> (i % 8)) & 1;
      default:
        break;
    }
    return kNA;
  }

  // f(i, At(i)) for i in [0, rows), with the layout's case chosen once outside the loop, so
  // each loop is a plain decode per row that the compiler can unroll.
  template <typename F>
  void ForEach(uint32_t rows, F&& f) const {
    switch (layout) {
      case Layout::kInt8:
        for (uint32_t i = 0; i < rows; i++) f(i, Int<uint8_t>(i, 0));
        return;
      case Layout::kInt16:
        for (uint32_t i = 0; i < rows; i++) f(i, Int<uint16_t>(i, 0));
        return;
      case Layout::kInt32:
        for (uint32_t i = 0; i < rows; i++) f(i, Int<uint32_t>(i, 0));
        return;
      case Layout::kDouble:
        for (uint32_t i = 0; i < rows; i++) {
          double x;
          std::memcpy(&x, data + 8 * size_t{i}, 8);
          f(i, x);
        }
        return;
      default:
        for (uint32_t i = 0; i < rows; i++) f(i, At(i));
        return;
    }
  }

  // Offsets are unsigned; the all-ones offset is NA.
  template <typename U>
  double Int(uint32_t i, uint8_t s) const {
    U x;
    std::memcpy(&x, data + sizeof(U) * size_t{i}, sizeof(U));
    if (x == std::numeric_limits<U>::max()) return kNA;
    const double v = static_cast<double>(bias + static_cast<int64_t>(x));
    return s == 0 ? v : v / kPow10[s];
  }
  static constexpr double kPow10[10] = {1,      10,      100,      1000,      10000,
                                        100000, 1000000, 10000000, 100000000, 1000000000};
};

}  // namespace internal

// A read-only view of a chunk's bytes (which must outlive it). Copyable; thread-safe.
class ChunkView {
 public:
  static Result<ChunkView> Make(std::string_view bytes);

  Layout layout() const { return layout_; }
  // The numeric layout of a categorical chunk's codes; layout() for the others.
  Layout value_layout() const { return value_layout_; }
  // The dense layout of the values a sparse chunk (or sparse codes) stores; else value_layout().
  Layout stored_layout() const { return dense_.layout; }
  uint32_t rows() const { return rows_; }
  // Bytes of the encoding, header included.
  size_t bytes() const { return size_; }
  // The values' size before compression, what bytes() is measured against: 8 a row for
  // numbers and times (a double or an int64), 4 for categorical codes (an int32), and for
  // strings their bytes plus 4 a row (an offset).
  uint64_t raw_bytes() const { return raw_bytes_; }
  bool sparse() const { return index_width_ != 0; }
  // Rows a sparse chunk lists (its non-fill rows); rows() for a dense one.
  uint32_t stored() const { return stored_; }

  // The value of row i (kNA for a missing one). REQUIRES: i < rows(). Dense layouts: a few
  // instructions. Sparse layouts: a binary search over the listed rows, O(log stored()) with
  // no allocation; a pass over all rows should use ForEach / ForEachNonZero instead.
  double At(uint32_t i) const {
    if (FLOE_PREDICT_FALSE(index_width_ != 0)) return SparseAt(i);
    return dense_.At(i);
  }
  bool IsNA(uint32_t i) const {
    if (FLOE_PREDICT_FALSE(layout_ == Layout::kString)) {
      return (static_cast<uint8_t>(na_bits_[i / 8]) >> (i % 8)) & 1;
    }
    return frame::IsNA(At(i));
  }

  // A dense kDouble chunk's values (rows() little-endian doubles, NaN for NA) for loops that
  // want no decoding at all, read with memcpy (no alignment is promised); nullptr for any other
  // layout.
  const char* raw_doubles() const {
    return index_width_ == 0 && dense_.layout == Layout::kDouble ? dense_.data : nullptr;
  }

  // Categorical chunks: the code of row i, kNACode for NA. REQUIRES: layout() is kCategorical
  // and i < rows(). Make checked every code, so it is below domain().
  int32_t CodeAt(uint32_t i) const {
    const double v = At(i);
    return frame::IsNA(v) ? kNACode : static_cast<int32_t>(v);
  }
  // The domain size a categorical chunk was cut with (the column's domain may have grown since).
  uint32_t domain() const { return domain_; }

  // String chunks: row i's bytes, a view into the chunk (empty for NA: tell them apart with
  // IsNA). REQUIRES: layout() is kString and i < rows().
  std::string_view AtString(uint32_t i) const {
    uint32_t begin = 0, end;
    if (i > 0) std::memcpy(&begin, ends_ + 4 * (size_t{i} - 1), 4);
    std::memcpy(&end, ends_ + 4 * size_t{i}, 4);
    return {blob_ + begin, end - begin};
  }

  // Time columns: row i in milliseconds since the epoch, kNATime for NA. REQUIRES: i < rows().
  // A value beyond ±kMaxTimeMs (only a chunk not made by CompressTimes has one) reads as NA.
  int64_t AtTime(uint32_t i) const {
    const double v = At(i);
    if (!(std::fabs(v) <= static_cast<double>(kMaxTimeMs))) return kNATime;
    return static_cast<int64_t>(v);
  }
  // Whether every value is NA or an integer, judged from the layout alone (O(1)): constant with
  // an integer, bits, the integer offsets, int64, or sparse over one of these. A time or integer
  // column's chunks must be.
  bool IntegerLayout() const;

  // Calls f(row, value) for every row in order, without a search per row: O(rows()).
  template <typename F>
  void ForEach(F&& f) const {
    if (index_width_ == 0) {
      dense_.ForEach(rows_, f);
      return;
    }
    uint32_t k = 0, next = stored_ > 0 ? Index(0) : rows_;
    for (uint32_t i = 0; i < rows_; i++) {
      if (i == next) {
        f(i, dense_.At(k++));
        next = k < stored_ ? Index(k) : rows_;
      } else {
        f(i, fill_);
      }
    }
  }

  // Calls f(row, value) in row order for every row whose value is not zero (either sign); NA is
  // not zero, so NA rows are visited. On a kSparseZero chunk (or sparse-zero codes) this costs
  // O(stored()), on any other O(rows()): a sum or a count over a mostly-zero chunk touches only
  // what it stores.
  template <typename F>
  void ForEachNonZero(F&& f) const {
    if (value_layout_ == Layout::kSparseZero) {
      for (uint32_t k = 0; k < stored_; k++) {
        const double v = dense_.At(k);
        if (v != 0) f(Index(k), v);
      }
      return;
    }
    ForEach([&](uint32_t i, double v) {
      if (v != 0) f(i, v);
    });
  }

 private:
  Status ParseSparse(std::string_view bytes);
  Status ParseCategorical(std::string_view bytes);
  Status ParseString(std::string_view bytes);
  uint32_t Index(uint32_t k) const {
    switch (index_width_) {
      case 1:
        return static_cast<uint8_t>(index_[k]);
      case 2: {
        uint16_t x;
        std::memcpy(&x, index_ + 2 * size_t{k}, 2);
        return x;
      }
      default: {
        uint32_t x;
        std::memcpy(&x, index_ + 4 * size_t{k}, 4);
        return x;
      }
    }
  }
  double SparseAt(uint32_t i) const {
    uint32_t lo = 0, hi = stored_;  // the first listed row >= i is in [lo, hi]
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo) / 2;
      if (Index(mid) < i) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo < stored_ && Index(lo) == i ? dense_.At(lo) : fill_;
  }

  Layout layout_ = Layout::kEmpty;
  uint32_t rows_ = 0;
  size_t size_ = 0;
  uint64_t raw_bytes_ = 0;
  internal::Dense dense_;  // the rows, or a sparse chunk's listed values
  // Sparse chunks: `stored_` row indices of `index_width_` bytes each, strictly increasing.
  uint8_t index_width_ = 0;
  uint32_t stored_ = 0;
  const char* index_ = nullptr;
  double fill_ = 0;  // the value of the rows not listed
  Layout value_layout_ = Layout::kEmpty;
  uint32_t domain_ = 0;  // categorical
  // String chunks: `rows_` uint32 end offsets into the blob, then the NA bits, then the blob.
  const char* ends_ = nullptr;
  const char* na_bits_ = nullptr;
  const char* blob_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Vecs and frames (single node; homing chunks in the DKV comes later).

enum class ColumnType : uint8_t { kInteger, kReal, kCategorical, kString, kTime };
std::string_view ColumnTypeName(ColumnType type);

// A column: a type, the domain of a categorical, and its chunks in row order. Immutable once
// made; copies share the chunks' bytes. Thread-safe.
class Vec {
 public:
  // Checks every chunk (ChunkView::Make) and that it fits the type: integer and time columns
  // take numeric chunks of IntegerLayout(), real ones any numeric chunk, categorical ones
  // categorical chunks cut with a domain size at most domain.size(), string ones string chunks.
  // `domain` (distinct values, at most kMaxDomain) is for categorical columns only. Corruption
  // or InvalidArgument otherwise. `na_count`, when given, is the chunks' NA rows as their maker
  // knows them (the parse's merge sums its pieces'), and they are not counted again.
  static Result<Vec> Make(ColumnType type, std::vector<std::string> domain,
                          std::vector<std::shared_ptr<const std::string>> chunks,
                          std::optional<uint64_t> na_count = std::nullopt);

  ColumnType type() const { return type_; }
  const std::vector<std::string>& domain() const { return domain_; }
  uint64_t rows() const { return starts_.back(); }
  size_t chunk_count() const { return chunks_.size(); }
  const ChunkView& chunk(size_t k) const { return views_[k]; }
  const std::shared_ptr<const std::string>& chunk_bytes(size_t k) const { return chunks_[k]; }
  // The first row of chunk k; chunk_start(chunk_count()) == rows().
  uint64_t chunk_start(size_t k) const { return starts_[k]; }
  // Sums over the chunks: encoded bytes (headers included) and ChunkView::raw_bytes().
  uint64_t compressed_bytes() const { return compressed_bytes_; }
  uint64_t raw_bytes() const { return raw_bytes_; }
  // Computed once by Make (a pass over the rows), so that describing a vec costs nothing per
  // row: its NA rows, and how many chunks have each layout, by LayoutName (a categorical's as
  // "categorical/<layout of its codes>"), sorted by name.
  uint64_t na_count() const { return na_count_; }
  const std::vector<std::pair<std::string, uint64_t>>& layout_counts() const {
    return layout_counts_;
  }

  // The chunk holding `row` and the row's index in it: a binary search over the chunk starts,
  // O(log chunk_count()). REQUIRES: row < rows().
  struct Place {
    size_t chunk;
    uint32_t row;
  };
  Place ChunkFor(uint64_t row) const;

  // Row access through ChunkFor (a loop over a chunk should read the ChunkView instead).
  // REQUIRES: row < rows(). At: the number, time or code (kNA for NA). AtString: a string
  // column's value, or a categorical's domain value ("" for NA in both).
  double At(uint64_t row) const;
  bool IsNA(uint64_t row) const;
  std::string_view AtString(uint64_t row) const;

 private:
  ColumnType type_ = ColumnType::kReal;
  std::vector<std::string> domain_;
  std::vector<std::shared_ptr<const std::string>> chunks_;
  std::vector<ChunkView> views_;        // into chunks_, which they share the lifetime of
  std::vector<uint64_t> starts_ = {0};  // chunk_count() + 1 entries
  uint64_t compressed_bytes_ = 0;
  uint64_t raw_bytes_ = 0;
  uint64_t na_count_ = 0;
  std::vector<std::pair<std::string, uint64_t>> layout_counts_;
};

// Named vecs of equal length whose chunk boundaries line up: chunk k of every column covers the
// same rows (so map/reduce reads row-aligned chunks together). Immutable; thread-safe.
class Frame {
 public:
  // InvalidArgument unless the names are non-empty and distinct, one per vec, and every vec has
  // the same chunk starts (hence the same rows).
  static Result<Frame> Make(std::vector<std::string> names, std::vector<Vec> vecs);

  size_t columns() const { return vecs_.size(); }
  uint64_t rows() const { return vecs_.empty() ? 0 : vecs_[0].rows(); }
  size_t chunk_count() const { return vecs_.empty() ? 0 : vecs_[0].chunk_count(); }
  const std::string& name(size_t i) const { return names_[i]; }
  const Vec& vec(size_t i) const { return vecs_[i]; }
  std::optional<size_t> Find(std::string_view name) const;
  uint64_t compressed_bytes() const;
  uint64_t raw_bytes() const;
  // Heap bytes of the header outside the chunks: column names and categorical domains (each
  // string's bytes plus kHeaderEntryBytes). A domain of millions of long values, or names of
  // kilobytes, weigh on memory as chunks do, so whoever charges a frame charges these too.
  uint64_t header_bytes() const { return header_bytes_; }
  static constexpr uint64_t kHeaderEntryBytes = 32;

 private:
  std::vector<std::string> names_;
  std::vector<Vec> vecs_;
  uint64_t header_bytes_ = 0;
};

// A frame as CSV (RFC 4180), written a piece at a time so that whoever writes it (FRAME.EXPORT's
// file, an HTTP download) holds a bounded buffer, never the whole text (docs/frame.md, "CSV
// out"). A header of the column names (quoted when they must be: a comma, a quote, a line break,
// edge blanks, or empty), then one line per row, CRLF line ends. Cells: NA an empty field; text
// (string and categorical) always quoted, its quotes doubled, so "" and the text NA read back as
// themselves; integers in decimal; reals in the shortest form that reads back to the same double,
// bit for bit (inf and -inf as the import reads them); times "YYYY-MM-DD HH:MM:SS.mmm" (UTC), or
// their milliseconds outside the years 0000-9999. Holds the frame (shared) while it lives.
// Thread-compatible.
class CsvWriter {
 public:
  explicit CsvWriter(std::shared_ptr<const Frame> frame);
  // Appends whole lines (the header first) to *out until out->size() reaches `target` or the
  // frame ends; returns whether lines remain. A line is never split, so *out passes `target` by
  // at most one line (a frame's widest row is the bound beyond it). With a `max_line`, each
  // line's width is bounded before it is written (text: its bytes, its doubled quotes and two
  // more; a number or a time: 32) and a line that may pass `max_line` bytes is not written:
  // ResourceExhausted, the lines before it left in *out, and the writer stays at that line.
  Result<bool> Next(std::string* out, size_t target,
                    size_t max_line = std::numeric_limits<size_t>::max());
  bool done() const;
  uint64_t rows_written() const { return rows_written_; }
  const Frame& frame() const { return *frame_; }

 private:
  std::shared_ptr<const Frame> frame_;
  bool header_written_ = false;
  size_t chunk_ = 0;  // the next row to write: chunk_, row_
  uint32_t row_ = 0;
  uint64_t rows_written_ = 0;
};

struct ColumnSpec {
  std::string name;
  ColumnType type = ColumnType::kReal;
};

struct FrameBuilderOptions {
  // A chunk is cut (every column at the same row) once any column's rows since the last cut
  // reach this many raw bytes (ChunkView::raw_bytes), or kMaxChunkRows rows. Default 4 MiB;
  // must be in [1, kMaxTargetChunkBytes].
  uint64_t target_chunk_bytes = uint64_t{4} << 20;
};
inline constexpr uint64_t kMaxTargetChunkBytes = uint64_t{256} << 20;
// The longest string value a builder takes: with a target of at most 256 MiB, a chunk's blob
// stays below kMaxStringBlob.
inline constexpr uint64_t kMaxStringValue = uint64_t{512} << 20;

// Builds a frame row by row: a value for every column (in any order), then EndRow; chunks are
// cut and compressed as they fill, so memory holds one uncompressed chunk per column at most.
// Categorical domains grow in the order values are first seen. Thread-compatible.
class FrameBuilder {
 public:
  // InvalidArgument for no columns, empty or repeated names, or a target out of range.
  static Result<FrameBuilder> Make(std::vector<ColumnSpec> columns,
                                   FrameBuilderOptions options = {});

  // Each sets column `col` of the current row. InvalidArgument for a column out of range, one
  // already set in this row, or a value its type does not take: AddNumber takes integer columns
  // (integers of magnitude below 2^63; -0 is 0) and real ones (any double; NaN is NA);
  // AddTime takes time columns (±kMaxTimeMs); AddString categorical columns and string ones
  // (at most kMaxStringValue bytes); AddNA any column. ResourceExhausted when a categorical
  // domain would pass kMaxDomain.
  Status AddNumber(size_t col, double v);
  Status AddTime(size_t col, int64_t ms);
  Status AddString(size_t col, std::string_view v);
  Status AddNA(size_t col);
  // Ends the row. InvalidArgument, and the row's values dropped, if a column was not set.
  Status EndRow();
  // Column at a time: `n` whole rows given as each column's n values, for a parser that splits
  // a run of rows first and then reads each column in one loop (no per-value call, no per-row
  // bookkeeping). The frame is the one AddNumber/AddString/AddNA and EndRow make of the same
  // values row by row, chunk cuts included, as long as n <= RowsBeforeCut(). One run a column,
  // in column order: integer and real columns take `numbers` (NaN is NA), categorical ones
  // `values` (a view whose data() is nullptr is NA; codes as AddString gives them).
  // InvalidArgument, and nothing appended, for a run per column missing or of the wrong kind, a
  // string or time column, a row begun, n past RowsBeforeCut(), or a number its column does not
  // take (as AddNumber); ResourceExhausted when a domain could pass kMaxDomain.
  struct ColumnRun {
    const double* numbers = nullptr;
    const std::string_view* values = nullptr;
  };
  Status AppendRows(size_t n, std::span<const ColumnRun> runs);
  // The most rows AppendRows takes now: those up to and including the row after which EndRow
  // would cut. 0 with a row begun or a string or time column (a string's width varies, so the
  // row of the next cut is not known ahead).
  uint64_t RowsBeforeCut() const;
  // Gives categorical column `col` the domain `values` (distinct, in order: codes 0, 1, ...)
  // before its first value, as if rows had added them; domain_bytes counts them. A parser seeds
  // each range's builder with the values the input's first rows add, so that most ranges number
  // them as the first range does and need no re-encoding when their pieces are joined.
  // InvalidArgument for a column that is not categorical, one that has values or chunks, or
  // values that repeat or pass kMaxDomain.
  Status SeedDomain(size_t col, const std::vector<std::string>& values);
  // Distinct values of categorical column `col` so far (0 for other columns or out of range).
  size_t domain_size(size_t col) const {
    return col < columns_.size() ? columns_[col].domain.size() : 0;
  }
  // Turns categorical column `col` into a string column between rows: its chunks and pending
  // codes are re-encoded as strings and its domain freed (domain_bytes falls). A parser does so
  // once a domain passes its categorical limit, so a column of millions of distinct values
  // holds at most the limit in memory. InvalidArgument for a column that is not categorical or
  // a row begun and not ended; ResourceExhausted if the pending strings pass the blob limit.
  Status DemoteToString(size_t col);
  uint64_t rows() const { return rows_; }
  // Heap bytes the categorical domains hold (each value twice, in the domain and its index,
  // plus kDomainEntryBytes of overhead): what a parser charges to maxmemory as they grow, since
  // a domain is not bounded by the chunk size the way pending values are.
  uint64_t domain_bytes() const { return domain_bytes_; }
  static constexpr uint64_t kDomainEntryBytes = 96;
  // Raw bytes of the values pending since the last cut (ChunkView::raw_bytes of the chunks
  // they will make), as of the last EndRow: at most 16 times the target plus one row. The
  // pending vectors' heap is at most twice the most this ever was (they grow by doubling and
  // keep their capacity across cuts); a parser charges that before it adds a row.
  uint64_t pending_bytes() const { return pending_bytes_; }

  // The frame of every ended row. FailedPrecondition if a row was begun and not ended. Call
  // once; the builder is empty afterwards.
  Result<Frame> Finish();

 private:
  struct Column {
    ColumnSpec spec;
    std::vector<double> numbers;  // integer, real, time (milliseconds as doubles)
    std::vector<int32_t> codes;   // categorical
    std::string blob;             // string: the values' bytes,
    std::vector<uint32_t> ends;   // where each ends in the blob,
    std::vector<bool> na;         // and which are NA
    uint64_t pending_raw = 0;     // raw bytes since the last cut
    uint64_t na_count = 0;        // NA values of the ended and pending rows (Vec::na_count)
    std::vector<std::string> domain;
    // Looked up by string_view (transparent), so a value already seen costs no allocation.
    struct Hash {
      using is_transparent = void;
      size_t operator()(std::string_view v) const { return std::hash<std::string_view>{}(v); }
    };
    std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> codes_of;
    // A direct-mapped cache in front of codes_of: slot (a hash of the value) -> the value's
    // ShortKey and its code, or code -1. A value of up to 7 bytes is a hit when its key, which
    // is the value itself, equals the slot's: no read of the domain (the slots of a domain value
    // dropped with its row are cleared). A longer value's hit is confirmed against the domain.
    // A stale or colliding slot only costs the map lookup. Grown with the domain (to the power
    // of 2 at or above twice its size, 4 slots at least, 1,024 at most; emptied, it refills as
    // values come): 16 KiB at most, and never more than 64 bytes per domain value, within what
    // domain_bytes charges for one (kDomainEntryBytes).
    struct CodeSlot {
      uint64_t key = 0;
      int32_t code = -1;
    };
    std::vector<CodeSlot> code_cache;
    // A value of up to 7 bytes as a key that tells it from every other value: its bytes
    // (little-endian, zero-padded) and its length in the top byte. kLongValue for the others.
    static constexpr uint64_t kLongValue = ~uint64_t{0};
    static uint64_t ShortKey(std::string_view v) {
      const size_t n = v.size();
      const char* p = v.data();
      if (n >= 8 || std::endian::native != std::endian::little) return kLongValue;
      uint64_t k = 0;
      if (n >= 4) {
        uint32_t x, y;
        std::memcpy(&x, p, 4);
        std::memcpy(&y, p + n - 4, 4);
        k = x | uint64_t{y} << (8 * (n - 4));  // the bytes both loads hold are the same
      } else if (n > 0) {
        k = uint64_t{static_cast<uint8_t>(p[0])} |
            uint64_t{static_cast<uint8_t>(p[n / 2])} << (8 * (n / 2)) |
            uint64_t{static_cast<uint8_t>(p[n - 1])} << (8 * (n - 1));
      }
      return k | uint64_t{n} << 56;
    }
    static size_t SlotHash(uint64_t key) {
      return static_cast<size_t>((key * 0x9e3779b97f4a7c15ull) >> 40);
    }
    // The code of a domain value, or -1: a short value's cache hit inline, the rest in CodeSlow.
    int32_t Code(std::string_view v) {
      const uint64_t key = ShortKey(v);
      if (key != kLongValue && !code_cache.empty()) {
        const CodeSlot& s = code_cache[SlotHash(key) & (code_cache.size() - 1)];
        if (s.key == key && s.code >= 0) return s.code;
      }
      return CodeSlow(v, key);
    }
    int32_t CodeSlow(std::string_view v, uint64_t key);
    void SizeCodeCache();
    std::vector<std::shared_ptr<const std::string>> chunks;
    size_t pending() const;
  };
  Status Check(size_t col, bool ok_for_type);
  // Marks column `col` set in this row with `raw` more pending bytes.
  void Set(size_t col, uint64_t raw) {
    Column& c = columns_[col];
    set_[col] = 1;
    set_count_++;
    c.pending_raw += raw;
    row_pending_ += raw;
    column_full_ |= c.pending_raw >= options_.target_chunk_bytes;
  }
  // The out-of-line halves of the Add calls and EndRow below: every case but the common one,
  // and every error.
  Status AddNumberSlow(size_t col, double v);
  Status AddStringSlow(size_t col, std::string_view v);
  // A categorical value of column `col` (checked) whose code Code gave: -1 adds it to the domain.
  Status AddCategorical(size_t col, std::string_view v, int32_t code);
  Status DropRow();
  void Cut();

  FrameBuilderOptions options_;
  std::vector<Column> columns_;
  uint32_t pending_rows_ = 0;  // rows ended since the last cut
  uint64_t rows_ = 0;
  uint64_t domain_bytes_ = 0;
  uint64_t pending_bytes_ = 0;
  // The current row, kept as its values are added so EndRow need not visit every column: which
  // columns it set (and how many), the categorical columns it added a domain value to, the raw
  // bytes pending with its values, and whether a column reached the target with them.
  std::vector<uint8_t> set_;
  size_t set_count_ = 0;
  std::vector<size_t> new_values_;
  uint64_t row_pending_ = 0;
  bool column_full_ = false;
};

// The common case of AddNumber, AddString and EndRow inline, since a parser calls them for every
// value: a column in range and not yet set, a value its type takes.
inline Status FrameBuilder::AddNumber(size_t col, double v) {
  if (col < columns_.size() && set_[col] == 0) {
    Column& c = columns_[col];
    if (c.spec.type == ColumnType::kReal) {
      const bool na = std::isnan(v);
      c.numbers.push_back(na ? kNA : v);
      c.na_count += na ? 1 : 0;
      Set(col, 8);
      return Status::OK();
    }
    // An integer below 2^63 in magnitude converts to int64 and back unchanged (NaN fails the
    // first test and goes the slow way, which takes it as NA).
    if (c.spec.type == ColumnType::kInteger && std::fabs(v) < 9223372036854775808.0 &&
        static_cast<double>(static_cast<int64_t>(v)) == v) {
      c.numbers.push_back(v + 0.0);  // -0 is 0 in an integer column
      Set(col, 8);
      return Status::OK();
    }
  }
  return AddNumberSlow(col, v);
}

inline Status FrameBuilder::AddString(size_t col, std::string_view v) {
  if (col < columns_.size() && set_[col] == 0 &&
      columns_[col].spec.type == ColumnType::kCategorical) {
    Column& c = columns_[col];
    const int32_t code = c.Code(v);
    if (code < 0) return AddCategorical(col, v, code);
    c.codes.push_back(code);
    Set(col, 4);
    return Status::OK();
  }
  return AddStringSlow(col, v);
}

inline Status FrameBuilder::EndRow() {
  if (set_count_ != columns_.size()) return DropRow();
  new_values_.clear();
  std::memset(set_.data(), 0, set_.size());
  set_count_ = 0;
  pending_rows_++;
  rows_++;
  pending_bytes_ = row_pending_;
  // Each column's chunk is cut at the target size; all columns together at 16 times it, so a
  // frame of very many columns (a 1 MiB CSV of 10,000 mostly missing ones) cannot hold
  // gigabytes of pending values before its first cut.
  if (column_full_ || pending_rows_ == kMaxChunkRows ||
      row_pending_ >= uint64_t{16} * options_.target_chunk_bytes) {
    Cut();
  }
  return Status::OK();
}

}  // namespace floe::frame

#endif  // FLOE_FRAME_FRAME_H_
