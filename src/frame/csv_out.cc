// CsvWriter: a frame as CSV a piece at a time (frame.h, docs/frame.md "CSV out").

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>

#include "frame/frame.h"

namespace floe::frame {

namespace {

// RFC 4180: a field in double quotes, its quotes doubled. A run without quotes is one append.
void AppendQuoted(std::string_view v, std::string* out) {
  out->push_back('"');
  for (size_t start = 0;;) {
    const size_t quote = v.find('"', start);
    if (quote == std::string_view::npos) {
      out->append(v.substr(start));
      break;
    }
    out->append(v.substr(start, quote + 1 - start));
    out->push_back('"');
    start = quote + 1;
  }
  out->push_back('"');
}

// A header name quoted when it must be (a comma, a quote, a line break, edge blanks, or empty).
void AppendName(std::string_view v, std::string* out) {
  const bool quote = v.empty() || v.find_first_of(",\"\r\n") != std::string_view::npos ||
                     v.front() == ' ' || v.back() == ' ' || v.front() == '\t' || v.back() == '\t';
  if (quote) {
    AppendQuoted(v, out);
  } else {
    out->append(v);
  }
}

// Days since 1970-01-01 to the civil date (proleptic Gregorian), the inverse of the import's
// count of 400-year eras from 0000-03-01.
void CivilFromDays(int64_t z, int64_t* y, int64_t* m, int64_t* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = yoe + era * 400 + (*m <= 2 ? 1 : 0);
}

// A time as the import reads it: "YYYY-MM-DD HH:MM:SS.mmm" (UTC). A year outside 0000-9999
// has no such spelling: it is written as its milliseconds. REQUIRES: |ms| <= kMaxTimeMs.
void AppendTime(int64_t ms, std::string* out) {
  const int64_t day_ms = 86'400'000;
  const int64_t days = ms >= 0 ? ms / day_ms : -((-ms + day_ms - 1) / day_ms);
  const int64_t in_day = ms - days * day_ms;
  int64_t y, mo, d;
  CivilFromDays(days, &y, &mo, &d);
  char buf[64];
  if (y < 0 || y > 9999) {
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), ms);
    out->append(buf, end);
    return;
  }
  const int n =
      std::snprintf(buf, sizeof(buf), "%04d-%02d-%02d %02d:%02d:%02d.%03d", static_cast<int>(y),
                    static_cast<int>(mo), static_cast<int>(d), static_cast<int>(in_day / 3'600'000),
                    static_cast<int>(in_day / 60'000 % 60), static_cast<int>(in_day / 1000 % 60),
                    static_cast<int>(in_day % 1000));
  out->append(buf, static_cast<size_t>(n));
}

// One cell of chunk k's row i. NA is an empty field; text is always quoted, so an empty string
// or the text "NA" reads back as itself and not as NA.
void AppendCell(const Vec& vec, size_t k, uint32_t i, std::string* out) {
  const ChunkView& chunk = vec.chunk(k);
  if (chunk.IsNA(i)) return;
  char buf[64];
  switch (vec.type()) {
    case ColumnType::kString:
      AppendQuoted(chunk.AtString(i), out);
      return;
    case ColumnType::kCategorical:
      AppendQuoted(vec.domain()[static_cast<size_t>(chunk.CodeAt(i))], out);
      return;
    case ColumnType::kTime: {
      // AtTime reads a value past ±kMaxTimeMs (a chunk CompressTimes did not make) as NA.
      const int64_t ms = chunk.AtTime(i);
      if (ms != kNATime) AppendTime(ms, out);
      return;
    }
    case ColumnType::kInteger: {
      auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), static_cast<int64_t>(chunk.At(i)));
      out->append(buf, end);
      return;
    }
    case ColumnType::kReal: {
      // Shortest form that reads back to the same double (inf and -inf as the import reads).
      auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), chunk.At(i));
      out->append(buf, end);
      return;
    }
  }
}

// The width of a quoted field of `v` (AppendQuoted's), and of a header name. Past `limit` the
// quotes are not counted: the field's bytes alone may already pass it (a row of many megabytes
// is then judged in O(1), not read byte by byte where the caller must not take long).
size_t QuotedWidth(std::string_view v, size_t limit = std::numeric_limits<size_t>::max()) {
  if (v.size() + 2 > limit) return v.size() + 2;
  return v.size() + static_cast<size_t>(std::count(v.begin(), v.end(), '"')) + 2;
}

// Wider than any number or time AppendCell writes (at most 24 characters).
constexpr size_t kNumberWidth = 32;

// At least the width of chunk k's row i as AppendCell writes it, line end included; once past
// `limit`, some width past it (the rest is not measured).
size_t RowWidth(const Frame& f, size_t k, uint32_t i, size_t limit) {
  size_t width = f.columns() + 1;  // the commas and CRLF
  for (size_t c = 0; c < f.columns() && width <= limit; c++) {
    const Vec& vec = f.vec(c);
    const ChunkView& chunk = vec.chunk(k);
    if (chunk.IsNA(i)) continue;
    const size_t left = limit - width;
    switch (vec.type()) {
      case ColumnType::kString:
        width += QuotedWidth(chunk.AtString(i), left);
        break;
      case ColumnType::kCategorical:
        width += QuotedWidth(vec.domain()[static_cast<size_t>(chunk.CodeAt(i))], left);
        break;
      default:
        width += kNumberWidth;
    }
  }
  return width;
}

Status TooWide(size_t width, size_t max_line, uint64_t row) {
  return Status::ResourceExhausted(
      (row == 0 ? std::string("the header") : "row " + std::to_string(row)) + " is up to " +
      std::to_string(width) + " bytes as CSV, more than " + std::to_string(max_line));
}

}  // namespace

CsvWriter::CsvWriter(std::shared_ptr<const Frame> frame) : frame_(std::move(frame)) {}

bool CsvWriter::done() const { return header_written_ && chunk_ >= frame_->chunk_count(); }

Result<bool> CsvWriter::Next(std::string* out, size_t target, size_t max_line) {
  const Frame& f = *frame_;
  const bool bounded = max_line != std::numeric_limits<size_t>::max();
  if (!header_written_) {
    if (bounded) {
      size_t width = f.columns() + 1;
      for (size_t c = 0; c < f.columns(); c++) width += QuotedWidth(f.name(c));
      if (width > max_line) return TooWide(width, max_line, 0);
    }
    for (size_t c = 0; c < f.columns(); c++) {
      if (c > 0) out->push_back(',');
      AppendName(f.name(c), out);
    }
    out->append("\r\n");
    header_written_ = true;
  }
  while (chunk_ < f.chunk_count() && out->size() < target) {
    const uint32_t rows = f.vec(0).chunk(chunk_).rows();
    while (row_ < rows && out->size() < target) {
      if (bounded) {
        const size_t width = RowWidth(f, chunk_, row_, max_line);
        if (width > max_line) return TooWide(width, max_line, rows_written_ + 1);
        // Room for the whole line at once: grown by doubling, a wide line's buffer held up to
        // twice the line, all of it charged as the client's (mem_clients_normal).
        if (out->capacity() - out->size() < width) out->reserve(out->size() + width);
      }
      for (size_t c = 0; c < f.columns(); c++) {
        if (c > 0) out->push_back(',');
        AppendCell(f.vec(c), chunk_, row_, out);
      }
      out->append("\r\n");
      row_++;
      rows_written_++;
    }
    if (row_ == rows) {
      chunk_++;
      row_ = 0;
    }
  }
  return !done();
}

}  // namespace floe::frame
