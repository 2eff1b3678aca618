// libFuzzer target for CSV import (parse.h): arbitrary bytes go through the setup guess and the
// parse with small limits. Any input gives a Frame or a Status, never a crash; a frame's columns
// all have the report's row count; and the same input parsed with 1 and with 3 ranges gives the
// same values, types and report (contract 3), as does the row-by-row read of the column runs.
// The first byte picks options (separator guessed or forced, header guessed or forced, quoting
// on or off, tight line and field limits); the rest is the input.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "base/base.h"
#include "parse/parse.h"

namespace {

using floe::parse::ParseOptions;
using floe::parse::ParseResult;

bool SameValue(double a, double b) {
  return std::isnan(a) ? std::isnan(b) : std::memcmp(&a, &b, 8) == 0;
}

// `same_cuts`: the same ranges (the column runs against the row-by-row read), so the chunks
// must be cut at the same rows too.
void CheckSame(const ParseResult& a, const ParseResult& b, bool same_cuts = false) {
  FLOE_CHECK(a.frame.columns() == b.frame.columns());
  FLOE_CHECK(a.frame.rows() == b.frame.rows());
  FLOE_CHECK(a.report.rows == b.report.rows && a.report.rejected_rows == b.report.rejected_rows &&
             a.report.padded_rows == b.report.padded_rows &&
             a.report.bad_values == b.report.bad_values &&
             a.report.blank_lines == b.report.blank_lines &&
             a.report.rounded_values == b.report.rounded_values &&
             a.report.string_columns_from_categorical == b.report.string_columns_from_categorical);
  FLOE_CHECK(a.report.issues.size() == b.report.issues.size());
  for (size_t i = 0; i < a.report.issues.size(); i++) {
    FLOE_CHECK(a.report.issues[i].line == b.report.issues[i].line);
    FLOE_CHECK(a.report.issues[i].reason == b.report.issues[i].reason);
  }
  for (size_t c = 0; c < a.frame.columns(); c++) {
    const floe::frame::Vec& x = a.frame.vec(c);
    const floe::frame::Vec& y = b.frame.vec(c);
    FLOE_CHECK(x.type() == y.type() && x.domain() == y.domain());
    FLOE_CHECK(x.na_count() == y.na_count());
    if (same_cuts) {
      FLOE_CHECK(x.chunk_count() == y.chunk_count());
      for (size_t k = 0; k < x.chunk_count(); k++) FLOE_CHECK(x.chunk_start(k) == y.chunk_start(k));
    }
    FLOE_CHECK(x.rows() == a.frame.rows());
    uint64_t nas = 0;  // the count kept as values came, against the values
    for (uint64_t r = 0; r < x.rows(); r++) {
      nas += x.IsNA(r) ? 1 : 0;
      FLOE_CHECK(x.IsNA(r) == y.IsNA(r));
      FLOE_CHECK(x.AtString(r) == y.AtString(r));
      if (x.type() != floe::frame::ColumnType::kString) FLOE_CHECK(SameValue(x.At(r), y.At(r)));
    }
    FLOE_CHECK(nas == x.na_count());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  ParseOptions o;
  if (flags & 1) o.separator = ",;\t|"[(flags >> 1) & 3];
  if (flags & 8) o.header = (flags & 16) != 0;
  if (flags & 32) o.quote = '\0';
  o.max_categorical_domain = 16;
  o.sample_bytes = 512;
  o.min_range_bytes = 1;
  o.limits.max_columns = 32;
  o.limits.max_rows = 4096;
  o.limits.max_field_bytes = 64;
  o.limits.max_line_bytes = 256;
  o.limits.max_input_bytes = 1 << 16;  // a gzip bomb stops here
  o.limits.max_issues = 8;
  o.builder.target_chunk_bytes = 128;
  // Limits a plain row (at most 64 bytes, read from bitmasks) can pass or fail.
  if (flags & 64) {
    o.limits.max_field_bytes = 3;
    o.limits.max_line_bytes = 12;
  } else if (flags & 128) {
    o.limits.max_field_bytes = 8;
    o.limits.max_line_bytes = 40;
  }
  o.threads = 1;
  floe::Result<ParseResult> one = floe::parse::ParseBytes(input, o);
  o.threads = 3;
  floe::Result<ParseResult> three = floe::parse::ParseBytes(input, o);
  FLOE_CHECK(one.ok() == three.ok());
  if (!one.ok()) {
    FLOE_CHECK(one.status() == three.status());
    return 0;
  }
  FLOE_CHECK(one->frame.rows() == one->report.rows);
  FLOE_CHECK(one->frame.columns() == one->setup.names.size());
  CheckSame(*one, *three);
  // Columns read a run at a time give the frame rows read one by one give, chunk cuts included
  // (the same 3 ranges).
  o.column_runs = false;
  floe::Result<ParseResult> rows = floe::parse::ParseBytes(input, o);
  FLOE_CHECK(rows.ok());
  FLOE_CHECK(rows->report.rows == three->report.rows);
  CheckSame(*three, *rows, /*same_cuts=*/true);
  return 0;
}
