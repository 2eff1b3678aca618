// libFuzzer target for CSV import (parse.h): arbitrary bytes go through the setup guess and the
// parse with small limits. Any input gives a Frame or a Status, never a crash; a frame's columns
// all have the report's row count; and the same input parsed with 1 and with 3 ranges gives the
// same values, types and report (contract 3), as does the row-by-row read of the column runs.
// The first byte picks options (separator guessed or forced, header guessed or forced, quoting
// on or off); the rest is the input.

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

void CheckSame(const ParseResult& a, const ParseResult& b) {
  FLOE_CHECK(a.frame.columns() == b.frame.columns());
  FLOE_CHECK(a.frame.rows() == b.frame.rows());
  FLOE_CHECK(a.report.rows == b.report.rows && a.report.rejected_rows == b.report.rejected_rows &&
             a.report.padded_rows == b.report.padded_rows &&
             a.report.bad_values == b.report.bad_values &&
             a.report.blank_lines == b.report.blank_lines);
  FLOE_CHECK(a.report.issues.size() == b.report.issues.size());
  for (size_t i = 0; i < a.report.issues.size(); i++) {
    FLOE_CHECK(a.report.issues[i].line == b.report.issues[i].line);
    FLOE_CHECK(a.report.issues[i].reason == b.report.issues[i].reason);
  }
  for (size_t c = 0; c < a.frame.columns(); c++) {
    const floe::frame::Vec& x = a.frame.vec(c);
    const floe::frame::Vec& y = b.frame.vec(c);
    FLOE_CHECK(x.type() == y.type() && x.domain() == y.domain());
    FLOE_CHECK(x.rows() == a.frame.rows());
    for (uint64_t r = 0; r < x.rows(); r++) {
      FLOE_CHECK(x.IsNA(r) == y.IsNA(r));
      FLOE_CHECK(x.AtString(r) == y.AtString(r));
      if (x.type() != floe::frame::ColumnType::kString) FLOE_CHECK(SameValue(x.At(r), y.At(r)));
    }
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
  // Columns read a run at a time give the frame rows read one by one give.
  o.column_runs = false;
  floe::Result<ParseResult> rows = floe::parse::ParseBytes(input, o);
  FLOE_CHECK(rows.ok());
  FLOE_CHECK(rows->report.rows == one->report.rows);
  CheckSame(*one, *rows);
  return 0;
}
