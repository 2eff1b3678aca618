// The CSV reader's pieces against references (docs/frame.md, "CSV import"): numbers bit for bit
// against strtod, quotes and fields around the SIMD steps and masks against a byte-by-byte
// reader. In the parse_test binary.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "parse/internal/csv.h"
#include "parse/parse.h"
#include "parse/parse_test_support.h"
#include "testing/gzip.h"

namespace floe::parse {
namespace {

using namespace test_support;  // NOLINT: the tests' shared helpers
using testing::Gzip;

TEST(ParseTest, NumbersAtTheEdges) {
  ParseOptions o;
  o.header = true;
  const ParseResult r = Parse(
      "x\n0\n-0\n+0.0\n-0.0\n9223372036854775807\n-9223372036854775808\n1e308\n-1."
      "7976931348623157e308\n"
      "4.9e-324\n2.2250738585072014e-308\ninf\n-Infinity\n1e400\n 42 \n",
      o);
  EXPECT_EQ(Types(r), std::vector<ColumnType>{ColumnType::kReal});
  const frame::Vec& v = r.frame.vec(0);
  ASSERT_EQ(v.rows(), 14u);
  EXPECT_EQ(v.At(0), 0.0);
  EXPECT_FALSE(std::signbit(v.At(0)));
  EXPECT_TRUE(std::signbit(v.At(1)));
  EXPECT_FALSE(std::signbit(v.At(2)));
  EXPECT_TRUE(std::signbit(v.At(3)));
  EXPECT_EQ(v.At(4), 9223372036854775807.0);
  EXPECT_EQ(v.At(5), -9223372036854775808.0);
  EXPECT_EQ(v.At(6), 1e308);
  EXPECT_EQ(v.At(7), -std::numeric_limits<double>::max());
  EXPECT_EQ(v.At(8), std::numeric_limits<double>::denorm_min());
  EXPECT_EQ(v.At(9), std::numeric_limits<double>::min());
  EXPECT_EQ(v.At(10), std::numeric_limits<double>::infinity());
  EXPECT_EQ(v.At(11), -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(v.IsNA(12));  // beyond a double: a bad value
  EXPECT_EQ(v.At(13), 42.0);
  EXPECT_EQ(r.report.bad_values, 1u);
  // Integers beyond 2^53 are not exact as doubles: the guess makes the column real.
  EXPECT_EQ(Types(Parse("x\n1\n9007199254740993\n")), std::vector<ColumnType>{ColumnType::kReal});
  EXPECT_EQ(Types(Parse("x\n1\n-9007199254740991\n")),
            std::vector<ColumnType>{ColumnType::kInteger});
}

TEST(ParseTest, ReadNumberAgreesWithStrtodBitForBit) {
  // The short-decimal fast path (up to 15 digits) and from_chars behind it, against the C
  // library's correctly rounded conversion: digits up to 24, often with leading zeros, so both
  // sides of each bound are taken.
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto check = [](const std::string& s) {
    const std::optional<double> got = internal::ReadNumber(s);
    ASSERT_TRUE(got.has_value()) << s;
    const double want = std::strtod(s.c_str(), nullptr);
    ASSERT_EQ(std::memcmp(&*got, &want, 8), 0) << s << " " << *got << " " << want;
  };
  for (int i = 0; i < 400000; i++) {
    const int digits = 1 + static_cast<int>(rng() % 24);
    const int zeros = rng() % 3 == 0 ? static_cast<int>(rng() % digits) : 0;
    std::string s = rng() % 2 ? "-" : "";
    const int point = static_cast<int>(rng() % (digits + 2));
    for (int d = 0; d < digits; d++) {
      if (d == point) s += '.';
      s += static_cast<char>(d < zeros ? '0' : '0' + rng() % 10);
    }
    ASSERT_NO_FATAL_FAILURE(check(s));
  }
  for (const char* s :
       {"9007199254740992", "9007199254740993", "0.9007199254740992", "0.9007199254740993",
        "9007199254740993.0", "0.0000000000000000000001", "0.00000000000000000000001",
        "0.00000000640865532228086", "1.0000000000000000000000", "-0", "-0.0",
        "18446744073709551615", "9999999999999999999.5"}) {
    ASSERT_NO_FATAL_FAILURE(check(s));
  }
  EXPECT_FALSE(internal::ReadNumber(".").has_value());
  EXPECT_FALSE(internal::ReadNumber("-").has_value());
  EXPECT_FALSE(internal::ReadNumber("1.2.3").has_value());
  EXPECT_FALSE(internal::ReadNumber("0x10").has_value());
  EXPECT_FALSE(internal::ReadNumber("+-1").has_value());
  EXPECT_EQ(*internal::ReadNumber("1."), 1.0);
  EXPECT_EQ(*internal::ReadNumber(".5"), 0.5);
}

// 16 to 19 digits with up to 22 after the point are converted by Eisel-Lemire: random ones,
// and exact halfways between two doubles (ties to even, the case its rounding tests for) and
// their neighbours one digit off, for every binade an integer or a short fraction reaches.
TEST(ParseTest, LongDecimalsAndHalfwaysAgreeWithStrtodBitForBit) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto check = [](const std::string& s) {
    double got;
    ASSERT_TRUE(internal::ReadNumber(s, &got)) << s;
    const double want = std::strtod(s.c_str(), nullptr);
    ASSERT_EQ(std::memcmp(&got, &want, 8), 0) << s << " " << got << " " << want;
  };
  for (int i = 0; i < 400000; i++) {
    const int digits = 16 + static_cast<int>(rng() % 4);
    const int decimals = static_cast<int>(rng() % 23);
    std::string d;
    for (int k = 0; k < digits; k++) d += static_cast<char>('0' + rng() % 10);
    if (rng() % 4 == 0) d.replace(0, rng() % 6, std::string(5, '0'), 0, std::string::npos);
    std::string s = rng() % 2 ? "-" : "";
    if (decimals >= digits) {
      s += "0." + std::string(static_cast<size_t>(decimals - digits), '0') + d;
    } else {
      s += d.substr(0, d.size() - decimals) + "." + d.substr(d.size() - decimals);
    }
    ASSERT_NO_FATAL_FAILURE(check(s));
  }
  for (int i = 0; i < 20000; i++) {
    // A binade [2^e, 2^(e+1)) holds the doubles 2^(e-52) apart; halfway is 2^(e-53) past one.
    const int e = 50 + static_cast<int>(rng() % 13);  // 2^50 .. 2^62: 16 to 19 digits
    const uint64_t n = (uint64_t{1} << e) | (rng() & ((uint64_t{1} << e) - 1));
    std::string halfway;
    if (e >= 53) {
      const uint64_t step = uint64_t{1} << (e - 52);
      halfway = std::to_string(n / step * step + step / 2);
    } else {
      // Halfway is a fraction of 53 - e binary digits: its decimal ends in 5 (e = 52: ".5").
      const uint64_t whole = n;
      const int bits = 53 - e;
      const double frac = (static_cast<double>(rng() % (uint64_t{1} << (bits - 1))) * 2 + 1) /
                          static_cast<double>(uint64_t{1} << bits);
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.*f", bits, frac);
      halfway = std::to_string(whole) + (buf + 1);  // buf is "0.xxx"
      while (halfway.back() == '0') halfway.pop_back();
    }
    ASSERT_NO_FATAL_FAILURE(check(halfway));
    ASSERT_NO_FATAL_FAILURE(check("-" + halfway));
    for (const int delta : {-1, 1}) {
      std::string near = halfway;
      char& last = near.back();
      if ((delta < 0 && last > '0') || (delta > 0 && last < '9'))
        last = static_cast<char>(last + delta);
      ASSERT_NO_FATAL_FAILURE(check(near));
    }
  }
}

// The split's quote count (16 bytes a step, at most 255 steps a block) against std::count:
// every alignment and length around the step and the block, and buffers all of quotes, where a
// lane's byte counter would wrap at 256.
TEST(ParseTest, CountQuotesAgreesWithACountOfEveryByte) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::string buf(20000, 'a');
  for (char& ch : buf) ch = "\"a,\n"[rng() % 4];
  for (size_t offset = 0; offset < 17; offset++) {
    for (const size_t length :
         {0u, 1u, 15u, 16u, 17u, 31u, 4079u, 4080u, 4081u, 8160u, 8161u, 19983u}) {
      const char* p = buf.data() + offset;
      ASSERT_EQ(internal::CountQuotes(p, p + length, '"'),
                static_cast<uint64_t>(std::count(p, p + length, '"')))
          << offset << " " << length;
    }
  }
  const std::string quotes(16 * 255 * 3 + 5, '\'');
  for (const size_t length :
       {size_t{16 * 255 - 1}, size_t{16 * 255}, size_t{16 * 256}, quotes.size()}) {
    EXPECT_EQ(internal::CountQuotes(quotes.data(), quotes.data() + length, '\''), length);
  }
  EXPECT_EQ(internal::CountQuotes(quotes.data(), quotes.data() + quotes.size(), '\0'), 0u);
}

// The unquoted fields' scan goes 16 bytes a step while they are in the input: fields of every
// length around a step, ended by a separator, an LF, a CRLF or the input's end, read as a
// byte-wise split reads them; a quote anywhere in a field still sends it to the quoted path.
TEST(ParseTest, UnquotedFieldsOfEveryLengthAroundA16ByteStep) {
  for (size_t a = 0; a <= 40; a++) {
    for (size_t b = 0; b <= 40; b += 3) {
      for (const std::string_view ending : {"\n", "\r\n", "", ",x\n"}) {
        const std::string fa(a, 'a'), fb(b, 'b');
        const std::string line = fa + "," + fb + std::string(ending);
        internal::Row row;
        const char* next =
            internal::ReadRow(line.data(), line.data() + line.size(), ',', '"', 3, &row);
        SCOPED_TRACE(std::to_string(a) + " " + std::to_string(b) + " " + std::string(ending));
        EXPECT_EQ(next, line.data() + line.size());
        const size_t fields = ending == ",x\n" ? 3 : 2;
        ASSERT_EQ(row.count, fields);
        EXPECT_EQ(row.text(0), fa);
        EXPECT_EQ(row.text(1), fb);
        EXPECT_EQ(row.newlines, ending.empty() ? 0u : 1u);
        // A CRLF's CR counts in its field's length before it is dropped.
        const size_t cr = ending == "\r\n" ? 1 : 0;
        EXPECT_EQ(row.longest, std::max<size_t>({a, b + cr, fields == 3 ? size_t{1} : 0}));
      }
      // A quote after `a` plain bytes: the field is unescaped on the general path.
      const std::string quoted = std::string(a, 'a') + "\"q,\"\"\"" + std::string(b, 'b') + "\n";
      internal::Row row;
      internal::ReadRow(quoted.data(), quoted.data() + quoted.size(), ',', '"', 2, &row);
      ASSERT_EQ(row.count, 1u);
      EXPECT_EQ(row.text(0), std::string(a, 'a') + "q,\"" + std::string(b, 'b'));
      EXPECT_TRUE(row.fields[0].quoted);
    }
  }
}

// A byte-wise reading of one row (parse.h contract 4), the reference for ReadRow below.
struct RefRow {
  std::vector<std::string> fields;
  std::vector<bool> quoted;
  size_t next = 0;
  uint64_t newlines = 0;
  size_t longest = 0;  // raw bytes of the longest field, a dropped CR included
  bool unterminated = false;
};
RefRow ReadRefRow(std::string_view s) {
  RefRow r;
  std::string cur;
  bool in_quotes = false, quoted = false, cr_outside = false;
  auto end_field = [&] {
    r.longest = std::max(r.longest, cur.size());
    if (cr_outside) cur.pop_back();
    r.fields.push_back(cur);
    r.quoted.push_back(quoted);
    cur.clear();
    quoted = cr_outside = false;
  };
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (in_quotes) {
      if (c == '"' && i + 1 < s.size() && s[i + 1] == '"') {
        cur += '"';
        i += 2;
        cr_outside = false;
      } else if (c == '"') {
        in_quotes = false;  // a CR before the quoted run still ends the field at an LF
        i++;
      } else {
        if (c == '\n') r.newlines++;
        cur += c;
        i++;
        cr_outside = false;
      }
      continue;
    }
    if (c == ',') {
      cr_outside = false;  // a CR is dropped before an LF only
      end_field();
      i++;
      continue;
    }
    if (c == '\n') {
      end_field();
      r.newlines++;
      r.next = i + 1;
      return r;
    }
    if (c == '"') {
      in_quotes = quoted = true;
    } else {
      cur += c;
      cr_outside = c == '\r';
    }
    i++;
  }
  r.unterminated = in_quotes;
  end_field();
  r.next = s.size();
  return r;
}

// A row's fields are found from bitmasks of up to 64 bytes when its LF is within them and no
// quote comes before it, else by the scan: rows with a separator, a quote, a CR or an LF at
// every position around the 16-byte steps and the 64-byte bound, and random rows of those
// bytes, followed by more input or not, read as the byte-wise reference reads them, with
// fewer fields kept than the row has or not.
TEST(ParseTest, RowsWithSeparatorsQuotesAndLineEndsAtEveryPositionAroundTheMaskBounds) {
  std::vector<std::string> rows;
  for (size_t at = 0; at <= 70; at++) {
    for (const char c : {',', '"', '\r', '\n'}) {
      std::string row(72, 'a');
      row[at] = c;
      rows.push_back(row.substr(0, at + 1) + "b,c\n");  // LF soon after `at`
      rows.push_back(row + "\n");                       // LF at 72
      std::string crlf = row.substr(0, at) + "\r\n";    // CRLF ending at `at`
      rows.push_back(crlf);
    }
    rows.push_back(std::string(at, 'a') + "\"x\"\"\n\"y\n");  // a quoted LF after `at` bytes
  }
  std::mt19937_64 rng(7);
  static constexpr char kBytes[] = {'a', 'a', 'a', 'a', 'a', 'a', ',', ',', '"', '\r', '\n'};
  for (int i = 0; i < 20'000; i++) {
    std::string row(rng() % 100, 'a');
    for (char& b : row) b = kBytes[rng() % sizeof(kBytes)];
    rows.push_back(row);
  }
  for (const std::string& row : rows) {
    for (const std::string_view after :
         {"", "zz,zz\n", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"}) {
      const std::string input = row + std::string(after);
      const RefRow want = ReadRefRow(input);
      for (const size_t keep : {size_t{1}, size_t{2}, size_t{100}}) {
        SCOPED_TRACE(::testing::PrintToString(input) + " keep " + std::to_string(keep));
        internal::Row got;
        const char* next =
            internal::ReadRow(input.data(), input.data() + input.size(), ',', '"', keep, &got);
        ASSERT_EQ(next - input.data(), static_cast<ptrdiff_t>(want.next));
        ASSERT_EQ(got.count, want.fields.size());
        ASSERT_EQ(got.fields.size(), std::min(keep, want.fields.size()));
        for (size_t f = 0; f < got.fields.size(); f++) {
          EXPECT_EQ(got.text(f), want.fields[f]);
          EXPECT_EQ(got.fields[f].quoted, want.quoted[f]);
        }
        EXPECT_EQ(got.newlines, want.newlines);
        EXPECT_EQ(got.unterminated, want.unterminated);
        if (input.substr(0, want.next).find('"') == std::string::npos) {
          EXPECT_EQ(got.longest, want.longest);
        }
      }
    }
  }
}

}  // namespace
}  // namespace floe::parse
