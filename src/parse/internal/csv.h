// The CSV tokenizer and value readers shared by the setup guess and the range parsers.
// Private to src/parse. Pure functions; thread-compatible Row.

#ifndef FLOE_PARSE_INTERNAL_CSV_H_
#define FLOE_PARSE_INTERNAL_CSV_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace floe::parse::internal {

// One row's fields. A field is a view into the input, or (when it needed unescaping: a doubled
// quote, or text around a quoted run) into `scratch`.
struct Row {
  struct Field {
    const char* data;  // into the input, or nullptr for scratch
    size_t offset;     // into scratch
    size_t size;
    bool quoted;
  };
  std::vector<Field> fields;  // at most the `keep` given to ReadRow
  size_t count = 0;           // fields in the row, kept or not
  uint64_t newlines = 0;      // LFs the row spans, its terminator included
  size_t longest = 0;         // bytes of the longest field
  bool unterminated = false;  // a quoted run still open at the end of the input
  std::string scratch;
  // Bytes of one field, and of all the row's fields together, copied into scratch at most
  // (set by the caller from ParseLimits; the row of a longer field or line is rejected, so what
  // is stored of it is never read). A multi-GB line costs a scan, never a copy of itself.
  size_t field_cap = SIZE_MAX;
  size_t line_cap = SIZE_MAX;
  // Set by ReadRow when a copy stopped at line_cap: the row's fields are not whole.
  bool over_line_cap = false;
  // Polled every kScanStep bytes of one row, so a cancel stops even a multi-GB line; when it is
  // seen, ReadRow sets `cancelled` and returns `end` with the row unfinished.
  const std::atomic<bool>* cancel = nullptr;
  bool cancelled = false;

  // A line with no bytes but its LF (or CRLF). REQUIRES: ReadRow was given keep >= 1.
  bool blank() const { return count == 1 && fields[0].size == 0 && !fields[0].quoted; }

  std::string_view text(size_t i) const {
    const Field& f = fields[i];
    return f.data != nullptr ? std::string_view(f.data, f.size)
                             : std::string_view(scratch).substr(f.offset, f.size);
  }
};

// Sets a row's copy caps one byte past the limits, so a field or line over them is seen as
// over (and rejected) while no more than the caps is ever copied.
inline void CapRow(Row* row, uint64_t max_field_bytes, uint64_t max_line_bytes) {
  row->field_cap = static_cast<size_t>(std::min<uint64_t>(max_field_bytes, SIZE_MAX - 1)) + 1;
  row->line_cap = static_cast<size_t>(std::min<uint64_t>(max_line_bytes, SIZE_MAX - 1)) + 1;
}

// Bytes of one row scanned between polls of Row::cancel.
inline constexpr size_t kScanStep = size_t{1} << 20;

// Reads the row that starts at `p` (which must be a row start, outside quotes) and returns where
// the next one starts (past its LF), or `end`. quote '\0' means no quoting.
const char* ReadRow(const char* p, const char* end, char sep, char quote, size_t keep, Row* row);

// ReadRow's fast case without a Row, for a parser that gathers rows a column at a time: a row
// of unquoted fields whose LF is within its first 64 bytes, its first `keep` fields written to
// out[0], out[stride], out[2 * stride], ... (views into the input). Returns where the next row
// starts and sets *count (the row's fields) and *longest (bytes of its longest field, a CR
// before the LF counted as ReadRow counts it); nullptr, with nothing meaningful written, when
// the row is not such a row or sep is LF (ReadRow reads it then). The row spans one LF.
const char* ReadPlainFields(const char* p, const char* end, char sep, char quote, size_t keep,
                            Row::Field* out, size_t stride, size_t* count, size_t* longest);

// The quote characters in [p, end).
uint64_t CountQuotes(const char* p, const char* end, char quote);

// The first row start at or after `p`, knowing whether `p` is inside a quoted run: the byte
// after the first LF at or after `p - 1` that is outside quotes (so `p` itself when byte p - 1
// is such an LF; `begin` bounds the look back). `end` if there is none.
const char* NextRowStart(const char* begin, const char* p, const char* end, char quote,
                         bool in_quotes_before_p);

// Strips spaces and tabs on both sides.
std::string_view Trim(std::string_view s);
// A number: optional sign, decimal digits with an optional fraction and exponent, or inf /
// infinity / nan in any case; surrounding spaces ignored. nullopt for anything else, and for
// magnitudes beyond a double's range.
// The parse's hot path takes the value through `out` (false for nullopt): an optional<double>
// returned from a call goes through the stack as a byte and a load of 8, a store-forwarding
// stall of ~12 cycles a value on x86-64 (7% of an import's CPU).
bool ReadNumber(std::string_view s, double* out);
inline std::optional<double> ReadNumber(std::string_view s) {
  double v;
  if (!ReadNumber(s, &v)) return std::nullopt;
  return v;
}
// An ISO-8601 date or date-time (docs/frame.md, "CSV import") as milliseconds since the epoch.
std::optional<int64_t> ReadTime(std::string_view s);
bool IsNAToken(std::string_view s, const std::vector<std::string>& tokens);

}  // namespace floe::parse::internal

#endif  // FLOE_PARSE_INTERNAL_CSV_H_
