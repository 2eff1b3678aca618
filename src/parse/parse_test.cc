// CSV import (parse.h): the setup guess, quoting, ragged and bad rows with their lines, limits,
// the split into ranges (a quoted field across a split point), the same frame for 1 and N
// threads, gzip, files and directories, progress and cancellation.

#include "parse/parse.h"

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
#include "parse/parse_test_support.h"
#include "testing/gzip.h"

namespace floe::parse {
namespace {

using namespace test_support;  // NOLINT: the tests' shared helpers
using testing::Gzip;

TEST(ParseTest, GuessesHeaderAndTypesOfASmallMixedFile) {
  const ParseResult r = Parse(
      "id,price,city,name,when,day\n"
      "1,9.99,Paris,Ann Lee,2024-01-02T03:04:05Z,2024-01-02\n"
      "2,19.5,Lyon,Bob Ray,2024-01-02 03:04:06.250,2024-01-03\n"
      "3,,Paris,Cy Ng,2024-01-02T03:04:07+01:00,2024-01-04\n"
      "4,0.5,Lyon,Di Po,2024-01-02T03:04,NA\n"
      "5,1e3,Paris,Ed Uh,2024-01-02T03:04:09.5-0130,2024-01-06\n"
      "6,2,Lyon,Fa Oz,2024-01-02T03:04:10,2024-01-07\n");
  EXPECT_EQ(r.setup.separator, ',');
  EXPECT_TRUE(r.setup.header);
  EXPECT_EQ(r.setup.names,
            (std::vector<std::string>{"id", "price", "city", "name", "when", "day"}));
  EXPECT_EQ(Types(r), (std::vector<ColumnType>{ColumnType::kInteger, ColumnType::kReal,
                                               ColumnType::kCategorical, ColumnType::kString,
                                               ColumnType::kTime, ColumnType::kTime}));
  ASSERT_EQ(r.frame.rows(), 6u);
  EXPECT_EQ(Column(r.frame, 0), (std::vector<std::string>{"1", "2", "3", "4", "5", "6"}));
  EXPECT_EQ(Column(r.frame, 1),
            (std::vector<std::string>{"9.9900000000000002", "19.5", "NA", "0.5", "1000", "2"}));
  EXPECT_EQ(r.frame.vec(2).domain(), (std::vector<std::string>{"Paris", "Lyon"}));
  EXPECT_EQ(Column(r.frame, 3)[1], "Bob Ray");
  const int64_t base = 1704164640000;  // 2024-01-02T03:04:00Z
  EXPECT_EQ(r.frame.vec(4).At(0), static_cast<double>(base + 5000));
  EXPECT_EQ(r.frame.vec(4).At(1), static_cast<double>(base + 6250));
  EXPECT_EQ(r.frame.vec(4).At(2), static_cast<double>(base + 7000 - 3600000));
  EXPECT_EQ(r.frame.vec(4).At(3), static_cast<double>(base));
  EXPECT_EQ(r.frame.vec(4).At(4), static_cast<double>(base + 9500 + 5400000));
  EXPECT_EQ(r.frame.vec(5).At(0), 1704153600000.0);
  EXPECT_TRUE(r.frame.vec(5).IsNA(3));
  EXPECT_EQ(r.report.bad_values, 0u);
  EXPECT_TRUE(r.report.issues.empty());
}

TEST(ParseTest, GuessesEachSeparator) {
  for (const char sep : std::string(",;\t| ")) {
    std::string text = "a_b_c\n1_2_3\n4_5_6\n";
    for (char& ch : text) {
      if (ch == '_') ch = sep;
    }
    const ParseResult r = Parse(text);
    EXPECT_EQ(r.setup.separator, sep) << int(sep);
    EXPECT_EQ(r.frame.columns(), 3u) << int(sep);
    EXPECT_EQ(r.frame.rows(), 2u) << int(sep);
  }
  // A comma inside quotes does not make the comma the separator.
  const ParseResult q = Parse("\"x,y\";b\n\"1,5\";2\n\"2,5\";3\n");
  EXPECT_EQ(q.setup.separator, ';');
  EXPECT_EQ(Column(q.frame, 0), (std::vector<std::string>{"1,5", "2,5"}));
}

TEST(ParseTest, NoHeaderWhenTheFirstRowIsData) {
  const ParseResult r = Parse("1,2.5,x\n3,4.5,y\n");
  EXPECT_FALSE(r.setup.header);
  EXPECT_EQ(r.setup.names, (std::vector<std::string>{"C1", "C2", "C3"}));
  EXPECT_EQ(r.frame.rows(), 2u);
}

TEST(ParseTest, HeaderNamesAreMadeDistinctAndNonEmpty) {
  ParseOptions o;
  o.header = true;  // the guess wants distinct non-empty names
  const ParseResult r = Parse("a,a,,b\n1,2,3,4\n", o);
  EXPECT_EQ(r.setup.names, (std::vector<std::string>{"a", "a_2", "C3", "b"}));
}

TEST(ParseTest, QuotedFieldsHoldSeparatorsNewlinesAndEscapedQuotes) {
  const ParseResult r = Parse(
      "k,v\n"
      "1,\"a,b\"\n"
      "2,\"line1\nline2\"\n"
      "3,\"say \"\"hi\"\"\"\n"
      "4,\"\"\n"
      "5,ab\"c,d\"e\n"
      "6,\"x\"y\n");
  ASSERT_EQ(r.frame.rows(), 6u);
  EXPECT_EQ(Column(r.frame, 1),
            (std::vector<std::string>{"a,b", "line1\nline2", "say \"hi\"", "", "abc,de", "xy"}));
  EXPECT_TRUE(r.report.issues.empty());
}

TEST(ParseTest, CRLFAndAMissingFinalNewline) {
  const ParseResult crlf = Parse("a,b\r\n1,\"x\"\r\n2,y\r\n3,\"z\r\nw\"\r\n4,v");
  ASSERT_EQ(crlf.frame.rows(), 4u);
  EXPECT_EQ(Column(crlf.frame, 1), (std::vector<std::string>{"x", "y", "z\r\nw", "v"}));
  EXPECT_EQ(crlf.setup.names, (std::vector<std::string>{"a", "b"}));
  const ParseResult lf = Parse("a,b\n1,x\n2,y");
  EXPECT_EQ(Column(lf.frame, 1), (std::vector<std::string>{"x", "y"}));
}

TEST(ParseTest, RaggedRowsArePaddedOrRejectedWithTheirLines) {
  ParseOptions o;
  o.header = true;
  const ParseResult r =
      Parse("a,b,c\n1,2,3\n4,5\n6,7,8,9\n10,11,12\n\n13,\"x\ny\",14,15\n16,17,18\n", o);
  ASSERT_EQ(r.frame.rows(), 4u);
  EXPECT_EQ(Column(r.frame, 0), (std::vector<std::string>{"1", "4", "10", "16"}));
  EXPECT_EQ(Column(r.frame, 2), (std::vector<std::string>{"3", "NA", "12", "18"}));
  EXPECT_EQ(r.report.padded_rows, 1u);
  EXPECT_EQ(r.report.rejected_rows, 2u);
  EXPECT_EQ(r.report.blank_lines, 1u);
  ASSERT_EQ(r.report.issues.size(), 3u);
  EXPECT_EQ(r.report.issues[0].line, 3u);
  EXPECT_EQ(r.report.issues[0].reason, "2 fields, expected 3: the rest are NA");
  EXPECT_EQ(r.report.issues[1].line, 4u);
  EXPECT_EQ(r.report.issues[1].reason, "row rejected: 4 fields, expected 3");
  EXPECT_EQ(r.report.issues[2].line, 7u);  // its row spans lines 7 and 8
}

TEST(ParseTest, EmptyHeaderOnlyAndBOM) {
  const ParseResult empty = Parse("");
  EXPECT_EQ(empty.frame.rows(), 0u);
  EXPECT_EQ(empty.frame.columns(), 1u);
  const ParseResult header = Parse("x,y,z\n");
  EXPECT_TRUE(header.setup.header);
  EXPECT_EQ(header.frame.rows(), 0u);
  EXPECT_EQ(header.setup.names, (std::vector<std::string>{"x", "y", "z"}));
  const ParseResult bom = Parse("\xEF\xBB\xBFid,v\n1,2\n");
  EXPECT_EQ(bom.setup.names, (std::vector<std::string>{"id", "v"}));
  EXPECT_EQ(bom.frame.rows(), 1u);
  // A forced header on an empty input (found by parse_fuzz).
  ParseOptions header_on_empty;
  header_on_empty.header = true;
  EXPECT_EQ(Parse("", header_on_empty).frame.columns(), 1u);
  EXPECT_EQ(Parse("\n\n", header_on_empty).frame.rows(), 0u);
  // Blank lines before the header are skipped like any other, not taken for the header.
  const ParseResult blank_first = Parse("\n\r\nid,v\n1,2\n3\n");
  EXPECT_EQ(blank_first.setup.names, (std::vector<std::string>{"id", "v"}));
  EXPECT_EQ(Column(blank_first.frame, 0), (std::vector<std::string>{"1", "3"}));
  EXPECT_EQ(blank_first.report.blank_lines, 2u);
  ASSERT_EQ(blank_first.report.issues.size(), 1u);
  EXPECT_EQ(blank_first.report.issues[0].line, 5u);
  const ParseResult one = Parse("id,v\n7,8.5");
  EXPECT_EQ(Column(one.frame, 1), (std::vector<std::string>{"8.5"}));
}

TEST(ParseTest, MostlyNumbersStayNumericAndBadTokensAreCountedWithLines) {
  std::string text = "n\n";
  for (int i = 0; i < 40; i++)
    text += (i == 10 ? "oops" : i == 30 ? "1.2.3" : std::to_string(i)) + "\n";
  const ParseResult r = Parse(text);
  EXPECT_EQ(Types(r), std::vector<ColumnType>{ColumnType::kInteger});
  EXPECT_EQ(r.frame.rows(), 40u);
  EXPECT_TRUE(r.frame.vec(0).IsNA(10));
  EXPECT_TRUE(r.frame.vec(0).IsNA(30));
  EXPECT_EQ(r.report.bad_values, 2u);
  ASSERT_EQ(r.report.issues.size(), 2u);
  EXPECT_EQ(r.report.issues[0].line, 12u);
  EXPECT_EQ(r.report.issues[0].reason, "column 'n': 'oops' is not an integer: NA");
  EXPECT_EQ(r.report.issues[1].line, 32u);
  // A non-integer in an integer column (forced) is a bad value too, not a rounding.
  ParseOptions o;
  o.column_types = {ColumnType::kInteger};
  const ParseResult forced = Parse("n\n1\n2.5\n", o);
  EXPECT_EQ(Column(forced.frame, 0), (std::vector<std::string>{"1", "NA"}));
  EXPECT_EQ(forced.report.bad_values, 1u);
}

TEST(ParseTest, NATokensAndNAHeavyColumns) {
  std::string text = "a,b,c\n";
  for (int i = 0; i < 100; i++) {
    const char* na[] = {"", "NA", "N/A", "null", "NaN"};
    text += std::string(i % 25 == 0 ? std::to_string(i) : na[i % 5]) + "," + na[(i + 1) % 5] + "," +
            (i % 3 == 0 ? "\"NA\"" : "NA") + "\n";
  }
  const ParseResult r = Parse(text);
  EXPECT_EQ(Types(r)[0], ColumnType::kInteger);
  EXPECT_EQ(Types(r)[1], ColumnType::kReal);  // all NA
  for (uint64_t i = 0; i < 100; i++) {
    EXPECT_EQ(r.frame.vec(0).IsNA(i), i % 25 != 0) << i;
    EXPECT_TRUE(r.frame.vec(1).IsNA(i));
  }
  // In a text column a quoted "NA" is the string NA; unquoted it is NA.
  EXPECT_EQ(Types(r)[2], ColumnType::kCategorical);
  EXPECT_EQ(Cell(r.frame, 2, 0), "NA");
  EXPECT_FALSE(r.frame.vec(2).IsNA(0));
  EXPECT_TRUE(r.frame.vec(2).IsNA(1));
  EXPECT_EQ(r.report.bad_values, 0u);
  // Other tokens on request.
  ParseOptions o;
  o.na_tokens = {"-"};
  const ParseResult custom = Parse("x\n1\n-\n3\n", o);
  EXPECT_EQ(Column(custom.frame, 0), (std::vector<std::string>{"1", "NA", "3"}));
}

TEST(ParseTest, TimesRefuseImpossibleDates) {
  EXPECT_TRUE(internal::ReadTime("2024-02-29").has_value());
  EXPECT_FALSE(internal::ReadTime("2023-02-29").has_value());
  EXPECT_FALSE(internal::ReadTime("2024-13-01").has_value());
  EXPECT_FALSE(internal::ReadTime("2024-01-01T24:00:00").has_value());
  EXPECT_FALSE(internal::ReadTime("2024-01-01T10:00:00+2").has_value());
  EXPECT_EQ(*internal::ReadTime("1970-01-01"), 0);
  EXPECT_EQ(*internal::ReadTime("1969-12-31T23:59:59.999Z"), -1);
  EXPECT_EQ(*internal::ReadTime("0000-01-01"), -62167219200000);
  EXPECT_EQ(*internal::ReadTime("9999-12-31T23:59:59.999"), 253402300799999);
}

TEST(ParseTest, CategoricalOrStringByDistinctCount) {
  // Values that repeat (at most half as many distinct as values): categorical.
  std::string text = "rep,uniq\n";
  for (int i = 0; i < 50; i++)
    text += "v" + std::to_string(i % 10) + ",u" + std::to_string(i) + "\n";
  const ParseResult r = Parse(text);
  EXPECT_EQ(Types(r), (std::vector<ColumnType>{ColumnType::kCategorical, ColumnType::kString}));
  EXPECT_EQ(r.frame.vec(0).domain().size(), 10u);
  // Past the domain limit: string, even though values repeat.
  ParseOptions o;
  o.max_categorical_domain = 5;
  EXPECT_EQ(Types(Parse(text, o))[0], ColumnType::kString);
}

// Regression: a first data row wider than the sample (1 MiB) was cut by it and left out, so
// the types were guessed from the header alone (real, real) and every value came out NA.
TEST(ParseTest, TheGuessSeesWholeRowsWhenTheFirstRowIsWiderThanTheSample) {
  const std::string wide(1'100'000, 'a');
  const std::string text = "k,s\n1," + wide + "\n2,hello\n";
  for (uint32_t threads : {1u, 3u}) {
    const ParseResult r = Parse(text, Threads(threads));
    EXPECT_TRUE(r.setup.header);
    EXPECT_EQ(Types(r), (std::vector<ColumnType>{ColumnType::kInteger, ColumnType::kString}));
    EXPECT_EQ(Column(r.frame, 0), (std::vector<std::string>{"1", "2"}));
    EXPECT_TRUE(Cell(r.frame, 1, 0) == wide);  // not EXPECT_EQ: a failure would print 1 MB
    EXPECT_EQ(Cell(r.frame, 1, 1), "hello");
    EXPECT_EQ(r.report.bad_values, 0u);
  }
  // Without a header, and quoted, the row is still read to its end.
  const ParseResult q = Parse("1,\"" + wide + "\n" + wide + "\"\n2,hello\n");
  EXPECT_FALSE(q.setup.header);
  EXPECT_EQ(Types(q), (std::vector<ColumnType>{ColumnType::kInteger, ColumnType::kString}));
  EXPECT_EQ(Column(q.frame, 0), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(Cell(q.frame, 1, 1), "hello");
  // The first 10 rows are read even past the sample's bytes.
  ParseOptions o;
  o.sample_bytes = 8;
  const ParseResult few = Parse("k,s\n1,x\n2,x\n3,x\n4,y\n", o);
  EXPECT_EQ(Types(few), (std::vector<ColumnType>{ColumnType::kInteger, ColumnType::kCategorical}));
  // A first row past the line limit is never read for the guess (the parse rejects it), but
  // the guess reads on past it to rows it can read: the columns are guessed from them, not
  // from the header alone.
  o.sample_bytes = 64;
  o.limits.max_line_bytes = 1000;
  const ParseResult cut = Parse("k,s\n1," + std::string(5000, 'b') + "\n2,x\n3,y\n", o);
  EXPECT_EQ(Types(cut), (std::vector<ColumnType>{ColumnType::kInteger, ColumnType::kString}));
  EXPECT_EQ(Column(cut.frame, 0), (std::vector<std::string>{"2", "3"}));
  EXPECT_EQ(cut.report.rejected_rows, 1u);
  EXPECT_EQ(cut.report.bad_values, 0u);
  // Rows past the limit for longer than the guess reads on (11 line limits past the sample):
  // the values it could not see are counted as bad, never dropped in silence.
  std::string many = "k,s\n";
  for (int i = 0; i < 12; i++) many += "1," + std::string(1500, 'b') + "\n";
  const ParseResult far = Parse(many + "2,x\n3,y\n", o);
  EXPECT_EQ(Column(far.frame, 0), (std::vector<std::string>{"2", "3"}));
  EXPECT_EQ(far.report.rejected_rows, 12u);
  EXPECT_EQ(far.report.bad_values, 2u);
}

// Regression (fuzz): an empty field read through the unescaping path (a quote opened at the end
// of the input) pointed into a copy the guess had not kept.
TEST(ParseTest, TheGuessReadsAnEmptyUnescapedField) {
  const ParseResult r = Parse("NA\n'");
  EXPECT_EQ(r.setup.quote, '\'');
  EXPECT_EQ(r.report.rejected_rows, 1u);  // quote not closed
  const ParseResult q = Parse("a,b\n1,\"\"\"\"\n2,\"\"\n");
  EXPECT_EQ(Column(q.frame, 1), (std::vector<std::string>{"\"", ""}));
}

TEST(ParseTest, ACategoricalWhoseWholeDomainPassesTheLimitBecomesString) {
  // The sample (the first 64 bytes) sees 2 values; the input has 30.
  std::string text = "c\n";
  for (int i = 0; i < 20; i++) text += (i % 2 ? "a\n" : "b\n");
  for (int i = 0; i < 30; i++) text += "w" + std::to_string(i) + "\n";
  ParseOptions o = Threads(3);
  o.sample_bytes = 64;
  o.max_categorical_domain = 10;
  const ParseResult r = Parse(text, o);
  EXPECT_EQ(r.setup.types[0], ColumnType::kCategorical);
  EXPECT_EQ(r.frame.vec(0).type(), ColumnType::kString);
  EXPECT_EQ(r.report.string_columns_from_categorical, 1u);
  EXPECT_EQ(Cell(r.frame, 0, 0), "b");
  EXPECT_EQ(Cell(r.frame, 0, 49), "w29");
}

TEST(ParseTest, ManyColumnsAndTheColumnLimit) {
  std::string header, row;
  for (int c = 0; c < 2000; c++) {
    header += (c ? "," : "") + std::string("c") + std::to_string(c);
    row += (c ? "," : "") + std::to_string(c);
  }
  const ParseResult r = Parse(header + "\n" + row + "\n" + row + "\n");
  ASSERT_EQ(r.frame.columns(), 2000u);
  EXPECT_EQ(r.frame.rows(), 2u);
  EXPECT_EQ(Cell(r.frame, 1999, 1), "1999");
  ParseOptions o;
  o.limits.max_columns = 1000;
  const Result<ParseResult> refused = ParseBytes(header + "\n" + row + "\n", o);
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  // One stray row that wide among narrow ones is a rejected row, not a refused import.
  std::string narrow = "a,b\n";
  for (int i = 0; i < 5; i++) narrow += "1,2\n";
  narrow += row + "\n3,4\n";
  const ParseResult stray = Parse(narrow, o);
  EXPECT_EQ(stray.frame.rows(), 6u);
  EXPECT_EQ(stray.report.rejected_rows, 1u);
  EXPECT_EQ(stray.report.issues.at(0).line, 7u);
}

TEST(ParseTest, FieldLineAndRowLimits) {
  ParseOptions o;
  o.header = true;
  o.limits.max_field_bytes = 5;
  o.limits.max_line_bytes = 12;
  const ParseResult r = Parse("a,b\n1,abc\n2,abcdef\n3,\"ab\ncd\"\n4,abcd\n", o);
  EXPECT_EQ(Column(r.frame, 0), (std::vector<std::string>{"1", "3", "4"}));
  EXPECT_EQ(r.report.rejected_rows, 1u);
  // A field that needs unescaping is copied; past the cap it is counted, not copied.
  const std::string big = "\"" + std::string(10000, 'a') + "\"\"b\"";
  internal::Row row;
  row.field_cap = 6;
  const std::string line = "1," + big + ",2\n";
  internal::ReadRow(line.data(), line.data() + line.size(), ',', '"', 3, &row);
  EXPECT_EQ(row.count, 3u);
  EXPECT_EQ(row.longest, 10002u);
  EXPECT_LE(row.scratch.size(), 6u);
  EXPECT_EQ(row.text(2), "2");
  const ParseResult capped = Parse("a,b\n1,x\n2," + big + "\n", o);
  EXPECT_EQ(capped.frame.rows(), 1u);
  EXPECT_EQ(capped.report.rejected_rows, 1u);
  ParseOptions lines;
  lines.header = true;
  lines.limits.max_line_bytes = 6;
  const ParseResult l = Parse("a,b\n1,abc\n2,abcdef\n", lines);
  EXPECT_EQ(l.frame.rows(), 1u);
  EXPECT_EQ(l.report.issues.at(0).line, 3u);
  ParseOptions rows = Threads(2);
  rows.limits.max_rows = 3;
  EXPECT_EQ(ParseBytes("a\n1\n2\n3\n", rows).status().code(), StatusCode::kOk);
  EXPECT_EQ(ParseBytes("a\n1\n2\n3\n4\n", rows).status().code(), StatusCode::kResourceExhausted);
}

TEST(ParseTest, AnUnclosedQuoteRejectsItsRow) {
  const ParseResult r = Parse("a,b\n1,x\n2,\"never closed\n3,y\n");
  EXPECT_EQ(r.frame.rows(), 1u);
  EXPECT_EQ(r.report.rejected_rows, 1u);
  EXPECT_EQ(r.report.issues.at(0).line, 3u);
  // The message says how much of the input the stray quote took.
  EXPECT_NE(r.report.issues.at(0).reason.find("takes the 2 lines from here to the end"),
            std::string::npos)
      << r.report.issues.at(0).reason;
  const ParseResult unended = Parse("a,b\n1,x\n2,\"never closed\n3,y\n4,z");
  EXPECT_NE(unended.report.issues.at(0).reason.find("takes the 3 lines"), std::string::npos)
      << unended.report.issues.at(0).reason;
}

TEST(ParseTest, OverridesWin) {
  ParseOptions o;
  o.separator = ';';
  o.header = false;
  o.quote = '\0';
  o.column_names = {"x", "y"};
  o.column_types = {ColumnType::kString};
  const ParseResult r = Parse("1;\"a,b\"\n2;c\n", o);
  EXPECT_EQ(r.setup.names, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(Types(r)[0], ColumnType::kString);
  EXPECT_EQ(Column(r.frame, 1), (std::vector<std::string>{"\"a,b\"", "c"}));
  o.column_names = {"x", "x"};
  EXPECT_EQ(ParseBytes("1;2\n", o).status().code(), StatusCode::kInvalidArgument);
  ParseOptions same;
  same.separator = '"';
  EXPECT_EQ(ParseBytes("1\n", same).status().code(), StatusCode::kInvalidArgument);
  // Single quotes are guessed when only they quote.
  const ParseResult single = Parse("a,b\n1,'x,y'\n2,'z'\n");
  EXPECT_EQ(single.setup.quote, '\'');
  EXPECT_EQ(Column(single.frame, 1), (std::vector<std::string>{"x,y", "z"}));
}

TEST(ParseTest, ASetupGuessedOnceIsTheOneTheParseUses) {
  const std::string text = "a;b\n1;x\n2;y\n3;x\n4;x\n";
  Result<parse::Setup> setup = GuessSetup(text, {});  // gtest has a Test::Setup
  ASSERT_TRUE(setup.ok());
  setup->types[0] = ColumnType::kReal;  // edited, as a user might
  setup->names[1] = "label";
  ParseOptions o;
  ApplySetup(*setup, &o);
  const ParseResult r = Parse(text, o);
  EXPECT_EQ(r.setup.separator, ';');
  EXPECT_TRUE(r.setup.header);
  EXPECT_EQ(r.setup.names, (std::vector<std::string>{"a", "label"}));
  EXPECT_EQ(Types(r), (std::vector<ColumnType>{ColumnType::kReal, ColumnType::kCategorical}));
  EXPECT_EQ(Column(r.frame, 1), (std::vector<std::string>{"x", "y", "x", "x"}));
}

// The split: with 2 ranges the body (the input after its header) is cut at byte n / 2.
TEST(ParseTest, AQuotedNewlineExactlyAtTheSplitPoint) {
  for (int pad = 8; pad < 20; pad++) {  // the first row longer than the rest
    const std::string head = "1," + std::string(pad, 'p') + "\"ab";  // the LF follows
    const std::string tail = "cd\"\n2,x\n3,";
    std::string last;
    while ((head.size() + 1 + tail.size() + last.size() + 1) / 2 < head.size()) last += "y";
    const std::string text = head + "\n" + tail + last + "\n";
    ASSERT_EQ(text.size() / 2, head.size());  // the cut falls on the quoted LF
    ParseOptions o1 = Threads(1), o2 = Threads(2);
    o1.header = o2.header = false;
    const ParseResult one = Parse(text, o1);
    const ParseResult two = Parse(text, o2);
    ASSERT_EQ(one.frame.rows(), 3u) << text;
    EXPECT_EQ(Cell(one.frame, 1, 0), std::string(pad, 'p') + "ab\ncd");
    EXPECT_EQ(Dump(one), Dump(two)) << text;
    EXPECT_TRUE(two.report.issues.empty()) << Dump(two);
  }
}

TEST(ParseTest, AFieldSplitAcrossRangesAndEverySplitPoint) {
  // A quoted field longer than a range (spanning several cuts), with separators, doubled
  // quotes and newlines in it; every thread count puts the cuts somewhere else.
  std::string text = "id,text,n\n1,\"";
  for (int i = 0; i < 20; i++) text += "a,\"\"b\"\"\nc;";
  text += "\",5\n2,plain,6\n3,\"q\n\",7\n";
  const ParseResult one = Parse(text, Threads(1));
  ASSERT_EQ(one.frame.rows(), 3u);
  EXPECT_EQ(Column(one.frame, 2), (std::vector<std::string>{"5", "6", "7"}));
  for (uint32_t t = 2; t <= 40; t++) EXPECT_EQ(Dump(one), Dump(Parse(text, Threads(t)))) << t;
}

TEST(ParseTest, OneThreadAndManyThreadsGiveTheSameFrame) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::string text = RandomCsv(seed, 3000);
  ParseOptions base = Threads(1);
  base.limits.max_issues = 1000;
  const ParseResult one = Parse(text, base);
  EXPECT_EQ(Types(one), (std::vector<ColumnType>{ColumnType::kInteger, ColumnType::kReal,
                                                 ColumnType::kCategorical, ColumnType::kString,
                                                 ColumnType::kTime}));
  EXPECT_GT(one.report.rejected_rows, 0u);
  EXPECT_GT(one.report.padded_rows, 0u);
  EXPECT_GT(one.report.bad_values, 0u);
  EXPECT_GT(one.report.blank_lines, 0u);
  EXPECT_GT(one.frame.chunk_count(), 1u);
  const std::string expected = Dump(one);
  // The merge sums its pieces' NA rows rather than counting them again: a recount agrees.
  auto expect_na_counts = [](const ParseResult& r, uint32_t threads) {
    uint64_t all = 0;
    for (size_t c = 0; c < r.frame.columns(); c++) {
      const frame::Vec& v = r.frame.vec(c);
      uint64_t na = 0;
      for (uint64_t row = 0; row < v.rows(); row++) na += v.IsNA(row) ? 1 : 0;
      EXPECT_EQ(v.na_count(), na) << "column " << c << ", " << threads << " threads";
      all += na;
    }
    EXPECT_GT(all, 0u);
  };
  expect_na_counts(one, 1);
  for (uint32_t t : {2u, 3u, 7u, 16u}) {
    ParseOptions o = base;
    o.threads = t;
    const ParseResult many = Parse(text, o);
    EXPECT_EQ(expected, Dump(many)) << t << " threads";
    expect_na_counts(many, t);
  }
  // Threads the system refuses: their ranges are parsed on the calling thread, same frame.
  for (int refused : {1, 100}) {
    ParseOptions o = base;
    o.threads = 7;
    floe::internal::FailNextThreadStarts(refused);
    const std::string with_refusals = Dump(Parse(text, o));
    floe::internal::FailNextThreadStarts(0);
    EXPECT_EQ(expected, with_refusals) << refused << " threads refused";
  }
  // The issues' lines point at the rows: every reported line starts a row of the file.
  std::vector<size_t> line_start = {0};
  for (size_t i = 0; i < text.size(); i++) {
    if (text[i] == '\n') line_start.push_back(i + 1);
  }
  for (const ParseIssue& issue : one.report.issues) {
    ASSERT_LE(issue.line, line_start.size());
    const std::string_view at = std::string_view(text).substr(line_start[issue.line - 1]);
    if (issue.reason.find("'bad'") != std::string::npos) {
      EXPECT_NE(at.substr(0, at.find('\n')).find(",bad,"), std::string_view::npos) << issue.line;
    }
  }
}

TEST(ParseTest, ProgressIsReportedAndCancelStops) {
  const std::string text = RandomCsv(11, 2000);
  std::vector<ParseProgress> seen;
  const std::thread::id caller = std::this_thread::get_id();
  bool other_thread = false;
  ParseControl control{.progress = [&](const ParseProgress& p) {
    seen.push_back(p);
    other_thread |= std::this_thread::get_id() != caller;
  }};
  const Result<ParseResult> r = ParseBytes(text, Threads(2), control);
  ASSERT_TRUE(r.ok());
  ASSERT_FALSE(seen.empty());
  EXPECT_FALSE(other_thread);  // always called on the calling thread
  for (size_t i = 1; i < seen.size(); i++) EXPECT_LE(seen[i - 1].bytes_done, seen[i].bytes_done);
  EXPECT_EQ(seen.back().bytes_done, text.size());
  EXPECT_EQ(seen.back().bytes_total, text.size());
  EXPECT_EQ(seen.back().rows, r->frame.rows());
  std::atomic<bool> cancel{true};
  ParseOptions o = Threads(2);
  const Result<ParseResult> cancelled =
      ParseBytes(RandomCsv(12, 20000), o, ParseControl{.cancel = &cancel});
  EXPECT_EQ(cancelled.status().code(), StatusCode::kCancelled);
  // Also while inflating gzip.
  EXPECT_EQ(ParseBytes(Gzip(text), o, ParseControl{.cancel = &cancel}).status().code(),
            StatusCode::kCancelled);
}

// Regression (review, issue 9): the header row was read with no copy cap, so a file whose first
// line is one multi-GB escaped field was copied whole (twice) before anything was refused; and
// a data line of many escaped fields, each under the field cap, was copied whole into scratch.
TEST(ParseTest, AnOverlongLineIsRefusedAndNeverCopiedWhole) {
  ParseOptions o;
  o.header = true;
  o.limits.max_line_bytes = 100;
  const std::string huge = "\"a\"\"" + std::string(10000, 'x') + "\"";
  const Result<ParseResult> header = ParseBytes(huge + ",b\n1,2\n", o);
  EXPECT_EQ(header.status().code(), StatusCode::kInvalidArgument) << header.status().ToString();
  // A data line: 200 fields of 50 escaped bytes, each under the field cap.
  std::string line;
  for (int i = 0; i < 200; i++) line += (i ? ",\"a\"\"" : "\"a\"\"") + std::string(46, 'y') + "\"";
  line += "\n";
  internal::Row row;
  internal::CapRow(&row, 1000, 300);
  internal::ReadRow(line.data(), line.data() + line.size(), ',', '"', 200, &row);
  EXPECT_EQ(row.count, 200u);
  EXPECT_TRUE(row.over_line_cap);
  EXPECT_LE(row.scratch.size(), 301u);
  ParseOptions wide;
  wide.header = false;
  wide.column_types.assign(200, ColumnType::kString);
  wide.limits.max_line_bytes = 300;
  const ParseResult r = Parse(line + "short\n", wide);
  EXPECT_EQ(r.report.rejected_rows, 1u);
  EXPECT_EQ(r.frame.rows(), 1u);
}

// Regression (review, issue 9): a header of huge names made columns named by megabytes.
TEST(ParseTest, ALongColumnNameIsRefused) {
  ParseOptions o;
  o.header = true;
  EXPECT_EQ(ParseBytes(std::string(2000, 'n') + ",b\n1,2\n", o).status().code(),
            StatusCode::kInvalidArgument);
  o.column_names = {std::string(1025, 'm')};
  EXPECT_EQ(ParseBytes("a,b\n1,2\n", o).status().code(), StatusCode::kInvalidArgument);
  o.column_names = {std::string(1024, 'm')};
  EXPECT_TRUE(ParseBytes("a,b\n1,2\n", o).ok());
}

// Regression (review, issue 9): 9007199254740993 in an integer column became ...992 in silence.
TEST(ParseTest, IntegersPast2To53AreBadValuesNotRounded) {
  ParseOptions o;
  o.column_types = {ColumnType::kInteger};
  const ParseResult r = Parse("n\n9007199254740993\n9007199254740991\n-9007199254740992\n12\n", o);
  EXPECT_EQ(Column(r.frame, 0), (std::vector<std::string>{"NA", "9007199254740991", "NA", "12"}));
  EXPECT_EQ(r.report.bad_values, 2u);
  ASSERT_FALSE(r.report.issues.empty());
  EXPECT_NE(r.report.issues[0].reason.find("2^53"), std::string::npos);
  // Guessed, such a column is real: doubles, as documented.
  EXPECT_EQ(Types(Parse("n\n9007199254740993\n1\n")), std::vector<ColumnType>{ColumnType::kReal});
}

// Regression: without TYPES a column of integers past 2^53 is guessed real (an integer column
// could only make them bad values), and its values were rounded in silence. They still are
// rounded (a double holds them), but each integer a double does not hold exactly is counted and
// listed; exact ones (2^53 itself, 2^60), reals as written and small integers are not.
TEST(ParseTest, IntegersPast2To53InARealColumnAreCountedRounded) {
  const ParseResult r = Parse(
      "n\n9007199254740993\n1\n-9007199254740995\n9007199254740992\n1152921504606846976\n"
      "9007199254740993.0\n1e17\n123456789012345678901234567890123456789012\n");
  EXPECT_EQ(Types(r), std::vector<ColumnType>{ColumnType::kReal});
  EXPECT_EQ(r.report.rounded_values, 3u);
  EXPECT_EQ(r.report.bad_values, 0u);
  ASSERT_EQ(r.report.issues.size(), 3u);
  EXPECT_EQ(r.report.issues[0].line, 2u);
  EXPECT_EQ(r.report.issues[0].reason,
            "column 'n': '9007199254740993' is an integer past 2^53: rounded to 9007199254740992");
  EXPECT_EQ(r.report.issues[1].line, 4u);
  EXPECT_EQ(r.report.issues[2].line, 9u);
  // A real column forced: the same count.
  ParseOptions o;
  o.column_types = {ColumnType::kReal};
  EXPECT_EQ(Parse("n\n9007199254740993\n2\n", o).report.rounded_values, 1u);
  // Integers a double holds: none.
  EXPECT_EQ(Parse("n\n9007199254740991\n-12\n").report.rounded_values, 0u);
  EXPECT_EQ(Types(Parse("n\n9007199254740991\n-12\n")),
            std::vector<ColumnType>{ColumnType::kInteger});
}

// Regression (review, issue 9): cancel was checked every 4,096 rows only, so one huge line (a
// file that is a single 8 MiB row here; GBs in the review) was read to its end after a cancel.
TEST(ParseTest, CancelStopsInsideOneHugeLine) {
  std::atomic<bool> cancel{true};
  ParseOptions o;
  o.header = false;
  o.threads = 1;
  o.column_types = {ColumnType::kString};
  for (const std::string& text :
       {std::string(8 << 20, 'x') + "\n", "\"" + std::string(8 << 20, 'x') + "\"\n",
        "\"a\"\"" + std::string(8 << 20, 'x') + "\"\n"}) {
    EXPECT_EQ(ParseBytes(text, o, ParseControl{.cancel = &cancel}).status().code(),
              StatusCode::kCancelled);
  }
  // ReadRow itself stops within a step of the start.
  const std::string line = std::string(8 << 20, 'x') + "\n";
  internal::Row row;
  row.cancel = &cancel;
  EXPECT_EQ(internal::ReadRow(line.data(), line.data() + line.size(), ',', '"', 1, &row),
            line.data() + line.size());
  EXPECT_TRUE(row.cancelled);
}

// Categorical domains are summed over the ranges, reported as held bytes, and bounded.
// Every range's builder is seeded with the categorical values the input's first rows add (so
// most ranges' chunks are joined without re-encoding): the domain is still in the order values
// are first seen over the whole input, with no value of a rejected row or an NA token, and
// values past the seeding rows (2,048) come after, in their order.
TEST(ParseTest, SeededCategoricalDomainsKeepTheOrderValuesAreFirstSeen) {
  std::string text = "k,n\nb,1\na,2\nz,3,extra\nNA,4\n\"NA\",5\nc,6\n";
  std::vector<std::string> expected = {"b", "a", "NA", "NA", "c"};
  for (int i = 0; i < 5000; i++) {
    std::string v(1, "cadbe"[i % 5]);
    if (i == 3000) v = "f";
    if (i == 4990) v = "g";
    text += v + "," + std::to_string(i) + "\n";
    expected.push_back(v);
  }
  for (const uint32_t threads : {1u, 2u, 4u}) {
    ParseOptions o = Threads(threads);
    o.column_types = {ColumnType::kCategorical, ColumnType::kInteger};
    const ParseResult r = Parse(text, o);
    SCOPED_TRACE(threads);
    EXPECT_EQ(r.report.rejected_rows, 1u);
    EXPECT_EQ(r.frame.vec(0).domain(),
              (std::vector<std::string>{"b", "a", "NA", "c", "d", "e", "f", "g"}));
    EXPECT_EQ(Column(r.frame, 0), expected);
    EXPECT_EQ(r.frame.vec(0).na_count(), 1u);
  }
}

TEST(ParseTest, CategoricalDomainsAreCountedAndBounded) {
  std::string text = "c\n";
  for (int i = 0; i < 2000; i++) text += "value_" + std::to_string(i % 1000) + "\n";
  ParseOptions o = Threads(2);
  o.column_types = {ColumnType::kCategorical};
  ParseProgress last;
  const Result<ParseResult> r =
      ParseBytes(text, o, {.progress = [&](const ParseProgress& p) { last = p; }});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE(last.held_bytes, 1000 * (2 * 9 + frame::FrameBuilder::kDomainEntryBytes));
  o.limits.max_domain_bytes = 10'000;
  EXPECT_EQ(ParseBytes(text, o).status().code(), StatusCode::kResourceExhausted);
}

// The split's scans go a MiB at a time (so a cancel stops them): a quoted field of several MiB,
// holding LFs and doubled quotes, across cuts and steps, splits as one thread reads it.
TEST(ParseTest, SplitScansInStepsAcrossALongQuotedField) {
  std::string big = "\"";
  for (int i = 0; i < 80000; i++)
    big += i % 7 == 0 ? "a\"\"b\n" : "xyzxyzxyzxyzxyzxyzxyzxyzxyzxyzxyzxyzxyzxyzxyzxyzxyz\n";
  big += "\"";
  std::string text = "id,s\n";
  for (int i = 0; i < 1000; i++) text += std::to_string(i) + ",v" + std::to_string(i % 5) + "\n";
  text += "1000," + big + "\n";
  for (int i = 1001; i < 2000; i++) text += std::to_string(i) + ",w\n";
  ASSERT_GT(text.size(), size_t{3} << 20);
  ParseOptions one;
  one.threads = 1;
  const std::string expected = Dump(Parse(text, one));
  for (uint32_t t : {2u, 3u, 5u}) EXPECT_EQ(Dump(Parse(text, Threads(t))), expected) << t;
  std::atomic<bool> cancel{true};
  EXPECT_EQ(ParseBytes(text, Threads(3), ParseControl{.cancel = &cancel}).status().code(),
            StatusCode::kCancelled);
}

// A categorical column of many distinct values is turned into a string column by each range as
// soon as its domain passes the limit, so its domain never holds more than the limit: 50,000
// distinct values pass a domain bound of 64 KB, with the frame a one-thread parse gives.
TEST(ParseTest, ARangeTurnsACategoricalPastTheLimitIntoStringsAtOnce) {
  std::string text = "id,c\n";
  for (int i = 0; i < 50000; i++) text += std::to_string(i) + ",value_" + std::to_string(i) + "\n";
  text += "50000,\n50001,value_7\n";
  ParseOptions one;
  one.threads = 1;
  one.column_types = {ColumnType::kInteger, ColumnType::kCategorical};
  one.max_categorical_domain = 100;
  one.limits.max_domain_bytes = 64 << 10;
  ParseProgress last;
  const Result<ParseResult> r =
      ParseBytes(text, one, {.progress = [&](const ParseProgress& p) { last = p; }});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->frame.vec(1).type(), ColumnType::kString);
  EXPECT_EQ(r->report.string_columns_from_categorical, 1u);
  EXPECT_EQ(Cell(r->frame, 1, 49999), "value_49999");
  EXPECT_EQ(Cell(r->frame, 1, 50000), "NA");
  EXPECT_EQ(last.held_bytes, 0u);
  ParseOptions many = Threads(3);
  many.builder.target_chunk_bytes = 4096;
  many.column_types = one.column_types;
  many.max_categorical_domain = 100;
  many.limits.max_domain_bytes = 64 << 10;
  const Result<ParseResult> m = ParseBytes(text, many);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(Dump(*m), Dump(*r));
  // Few distinct values stay categorical.
  std::string few = "c\n";
  for (int i = 0; i < 5000; i++) few += "v" + std::to_string(i % 50) + "\n";
  many.column_types = {ColumnType::kCategorical};
  EXPECT_EQ(Parse(few, many).frame.vec(0).type(), ColumnType::kCategorical);
}

// Rows read a column at a time (ParseOptions::column_runs) make the frame row-by-row reading
// makes, byte for byte: the same chunks (cuts included), domains, NA counts, counts and issues
// in the same order, on NA tokens, quoted and unescaped fields, padded, rejected and blank rows,
// bad and rounded values, and a categorical column that passes the domain limit in a range.
TEST(ParseTest, ColumnRunsAndRowByRowGiveTheSameFrame) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::string text = RandomCsv(seed, 3000);
  // Values an integer or real column takes or refuses, quoted ones, a quoted NA as text.
  for (const char* row :
       {"1.5,1e400,\"cat1\",x,NA", "9007199254740993,9007199254740993,\"NA\",\"q\"\"q\",NA",
        "nan,nan,NA,NA,NA", "-0,-0,\"\",\"\",NA", "\"12\",\" 3.25 \",cat2,y", "1e3,-1e-3,cat3,z,NA",
        "abc,,cat4,w,NA", "-9223372036854775808,18446744073709551616,cat5,v,NA"}) {
    text += std::string(row) + "\n";
  }
  text += RandomCsv(seed + 1, 500).substr(text.find('\n') + 1);
  auto dump = [](const ParseResult& r) {
    std::string s = Dump(r);
    s += "rounded " + std::to_string(r.report.rounded_values) + " demoted " +
         std::to_string(r.report.string_columns_from_categorical) + "\n";
    for (size_t c = 0; c < r.frame.columns(); c++) {
      const frame::Vec& v = r.frame.vec(c);
      s += "na " + std::to_string(v.na_count()) + " chunks";
      for (size_t k = 0; k < v.chunk_count(); k++) {
        s += " " + std::to_string(v.chunk_start(k)) + ":" +
             std::to_string(std::hash<std::string>{}(*v.chunk_bytes(k)));
      }
      s += "\n";
    }
    return s;
  };
  for (const uint32_t threads : {1u, 3u}) {
    for (const uint64_t target : {uint64_t{256}, uint64_t{4096}, uint64_t{4} << 20}) {
      for (const uint32_t limit : {60u, 100000u}) {
        ParseOptions o = Threads(threads);
        o.builder.target_chunk_bytes = target;
        o.limits.max_issues = limit == 60 ? 5 : 1000;
        o.column_types = {ColumnType::kInteger, ColumnType::kReal, ColumnType::kCategorical,
                          ColumnType::kCategorical, ColumnType::kCategorical};
        o.max_categorical_domain = limit;  // 60: `str` passes it, `time` and `cat` do not
        const ParseResult runs = Parse(text, o);
        o.column_runs = false;
        const ParseResult rows = Parse(text, o);
        SCOPED_TRACE(std::to_string(threads) + " threads, target " + std::to_string(target) +
                     ", limit " + std::to_string(limit));
        EXPECT_EQ(dump(runs), dump(rows));
        EXPECT_GT(rows.report.bad_values, 0u);
        EXPECT_GT(rows.report.rounded_values, 0u);
        EXPECT_EQ(rows.report.string_columns_from_categorical, limit == 60 ? 1u : 0u);
        EXPECT_EQ(rows.frame.vec(2).type(), ColumnType::kCategorical);
      }
    }
  }
  // One column: a blank line (LF or CRLF) is no row, an empty field at the end of a wider row is.
  std::string one = "v\n";
  for (int i = 0; i < 3000; i++) {
    one += i % 17 == 0 ? "\r\n" : i % 13 == 0 ? "\n" : "x" + std::to_string(i % 7) + "\r\n";
  }
  for (const ColumnType type : {ColumnType::kCategorical, ColumnType::kString}) {
    ParseOptions o = Threads(3);
    o.column_types = {type};
    const std::string runs = Dump(Parse(one, o));
    o.column_runs = false;
    EXPECT_EQ(runs, Dump(Parse(one, o)));
    EXPECT_NE(runs.find(" blank 394\n"), std::string::npos) << runs.substr(runs.size() - 200);
  }
}

}  // namespace
}  // namespace floe::parse
