// What the CSV import's tests share (parse_test.cc, parse_file_test.cc): parsing bytes,
// options that split a small input into ranges, a frame as text, a random file, a temp dir.

#ifndef FLOE_PARSE_PARSE_TEST_SUPPORT_H_
#define FLOE_PARSE_PARSE_TEST_SUPPORT_H_

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "parse/parse.h"

namespace floe::parse::test_support {

using frame::ColumnType;

inline ParseResult Parse(std::string_view text, ParseOptions options = {}) {
  Result<ParseResult> r = ParseBytes(text, options);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return {};
  return std::move(*r);
}

// Options that split even a tiny input into `threads` ranges.
inline ParseOptions Threads(uint32_t threads) {
  ParseOptions o;
  o.threads = threads;
  o.min_range_bytes = 1;
  o.builder.target_chunk_bytes = 256;  // several chunks per range too
  return o;
}

// A cell as text: "NA", the number (%.17g), the time in ms, or the string.
inline std::string Cell(const frame::Frame& f, size_t col, uint64_t row) {
  const frame::Vec& v = f.vec(col);
  if (v.IsNA(row)) return "NA";
  switch (v.type()) {
    case ColumnType::kCategorical:
    case ColumnType::kString:
      return std::string(v.AtString(row));
    default: {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.17g", v.At(row));
      return buf;
    }
  }
}

inline std::vector<std::string> Column(const frame::Frame& f, size_t col) {
  std::vector<std::string> out;
  for (uint64_t r = 0; r < f.rows(); r++) out.push_back(Cell(f, col, r));
  return out;
}

// Everything a parse decides, as text, to compare runs.
inline std::string Dump(const ParseResult& r) {
  std::string s;
  for (size_t c = 0; c < r.frame.columns(); c++) {
    s += r.frame.name(c) + ":" + std::string(frame::ColumnTypeName(r.frame.vec(c).type())) + "[";
    for (const std::string& d : r.frame.vec(c).domain()) s += d + "|";
    s += "]\n";
  }
  for (uint64_t row = 0; row < r.frame.rows(); row++) {
    for (size_t c = 0; c < r.frame.columns(); c++) s += Cell(r.frame, c, row) + "\x1f";
    s += "\n";
  }
  const ParseReport& p = r.report;
  s += "rows " + std::to_string(p.rows) + " rejected " + std::to_string(p.rejected_rows) +
       " padded " + std::to_string(p.padded_rows) + " bad " + std::to_string(p.bad_values) +
       " blank " + std::to_string(p.blank_lines) + "\n";
  for (const ParseIssue& i : p.issues) s += std::to_string(i.line) + ": " + i.reason + "\n";
  return s;
}

inline std::vector<ColumnType> Types(const ParseResult& r) { return r.setup.types; }

// A random file with every kind of column, quotes, embedded newlines, NA, ragged and bad rows.
inline std::string RandomCsv(uint64_t seed, int rows) {
  std::mt19937_64 rng(seed);
  std::string s = "int,real,cat,str,time\r\n";
  for (int i = 0; i < rows; i++) {
    const uint64_t x = rng();
    if (x % 97 == 0) {
      s += x % 2 ? "\r\n" : "\n";  // blank
      continue;
    }
    s += (x % 13 == 0 ? "" : std::to_string(static_cast<int64_t>(rng() % 2000000) - 1000000)) + ",";
    s += (x % 89 == 0 ? "bad" : std::to_string(static_cast<double>(rng() % 100000) / 100)) + ",";
    s += (x % 7 == 0 ? "\"c,at" + std::to_string(rng() % 3) + "\""
                     : "cat" + std::to_string(rng() % 40)) +
         ",";
    switch (x % 5) {
      case 0:
        s += "\"multi\nline \"\"" + std::to_string(rng() % 1000) + "\"\"\r\nend\"";
        break;
      case 1:
        s += "NA";
        break;
      default:
        s += "s" + std::to_string(rng());
    }
    s += "," + std::string(x % 11 == 0 ? "NA"
                                       : "2024-03-0" + std::to_string(1 + rng() % 9) + "T12:00:00");
    if (x % 101 == 0) s += ",extra";
    if (x % 103 == 0) s.resize(s.rfind(','));  // a row one field short
    s += (x % 2 ? "\r\n" : "\n");
  }
  return s;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/floe_parse_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string Write(const std::string& name, std::string_view bytes) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace floe::parse::test_support

#endif  // FLOE_PARSE_PARSE_TEST_SUPPORT_H_
