// CsvWriter (docs/frame.md, "CSV out"): the text of every type, quoting, and pieces that stay
// near their target and join to the same text whatever the target.

#include <gtest/gtest.h>

#include <charconv>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "frame/frame.h"
#include "testing/testing.h"

namespace floe::frame {
namespace {

std::shared_ptr<const Frame> Mixed(uint64_t target_chunk_bytes) {
  Result<FrameBuilder> made = FrameBuilder::Make({{"id", ColumnType::kInteger},
                                                  {"x", ColumnType::kReal},
                                                  {"region", ColumnType::kCategorical},
                                                  {"note, quoted", ColumnType::kString},
                                                  {"at", ColumnType::kTime}},
                                                 {.target_chunk_bytes = target_chunk_bytes});
  FLOE_CHECK_OK(made.status());
  FrameBuilder b = std::move(*made);
  const std::vector<std::string> notes = {"plain", "a,b", "say \"hi\"", "line\nbreak", "", "NA"};
  for (int i = 0; i < 1000; i++) {
    FLOE_CHECK_OK(i % 11 == 5 ? b.AddNA(0) : b.AddNumber(0, i - 300));
    FLOE_CHECK_OK(i % 13 == 7 ? b.AddNA(1) : b.AddNumber(1, i * 0.1));
    FLOE_CHECK_OK(b.AddString(2, i % 3 == 0 ? "north" : "south"));
    FLOE_CHECK_OK(b.AddString(3, notes[static_cast<size_t>(i) % notes.size()]));
    FLOE_CHECK_OK(b.AddTime(4, int64_t{1'700'000'000'000} + i * 1001));
    FLOE_CHECK_OK(b.EndRow());
  }
  Result<Frame> f = b.Finish();
  FLOE_CHECK_OK(f.status());
  return std::make_shared<const Frame>(std::move(*f));
}

std::string All(std::shared_ptr<const Frame> f) {
  CsvWriter w(std::move(f));
  std::string out;
  Result<bool> more = w.Next(&out, std::numeric_limits<size_t>::max());
  EXPECT_TRUE(more.ok() && !*more);
  EXPECT_TRUE(w.done());
  return out;
}

TEST(CsvWriterTest, WritesEveryTypeQuotedAsTheImportReadsIt) {
  const std::string csv = All(Mixed(4 << 20));
  const std::string head =
      "id,x,region,\"note, quoted\",at\r\n"
      "-300,0,\"north\",\"plain\",2023-11-14 22:13:20.000\r\n"
      "-299,0.1,\"south\",\"a,b\",2023-11-14 22:13:21.001\r\n"
      "-298,0.2,\"south\",\"say \"\"hi\"\"\",2023-11-14 22:13:22.002\r\n"
      "-297,0.30000000000000004,\"north\",\"line\nbreak\",2023-11-14 22:13:23.003\r\n"
      "-296,0.4,\"south\",\"\",2023-11-14 22:13:24.004\r\n"
      ",0.5,\"south\",\"NA\",2023-11-14 22:13:25.005\r\n";
  EXPECT_EQ(csv.substr(0, head.size()), head);
  // Row 7: x is NA, an empty field.
  EXPECT_NE(csv.find("\r\n-293,,\"south\","), std::string::npos);
}

TEST(CsvWriterTest, PiecesStayNearTheTargetAndJoinToTheSameText) {
  // Small chunks, so that pieces end inside chunks and across them.
  const std::shared_ptr<const Frame> f = Mixed(512);
  ASSERT_GT(f->chunk_count(), 10u);
  const std::string whole = All(f);
  size_t widest = 0;
  for (size_t at = 0, end; (end = whole.find("\r\n", at)) != std::string::npos; at = end + 2) {
    widest = std::max(widest, end + 2 - at);
  }
  for (size_t target : {size_t{1}, size_t{7}, size_t{100}, size_t{4096}}) {
    CsvWriter w(f);
    std::string joined, piece;
    bool more = true;
    int pieces = 0;
    while (more) {
      piece.clear();
      Result<bool> next = w.Next(&piece, target);
      ASSERT_TRUE(next.ok());
      more = *next;
      EXPECT_LT(piece.size(), target + widest) << target;
      EXPECT_TRUE(!more || !piece.empty());
      joined += piece;
      pieces++;
    }
    EXPECT_EQ(joined, whole) << target;
    EXPECT_EQ(w.rows_written(), 1000u);
    if (target == 1) {
      EXPECT_EQ(pieces, 1001);  // the header, then a row each
    }
  }
}

// A line that may pass max_line is not written: the lines before it are, and the writer stays
// there; the bound counts a text's doubled quotes.
// A frame of one string column "s" holding `values`.
std::shared_ptr<const Frame> StringColumn(const std::vector<std::string>& values) {
  Result<FrameBuilder> made = FrameBuilder::Make({{"s", ColumnType::kString}});
  FLOE_CHECK_OK(made.status());
  FrameBuilder b = std::move(*made);
  for (const std::string& v : values) {
    FLOE_CHECK_OK(b.AddString(0, v));
    FLOE_CHECK_OK(b.EndRow());
  }
  Result<Frame> f = b.Finish();
  FLOE_CHECK_OK(f.status());
  return std::make_shared<const Frame>(std::move(*f));
}

// A bounded line's room is reserved whole before it is written: grown by doubling, a piece that
// took a 3 MB line held up to twice that, all of it charged to its client. A line of many
// quotes is judged by its bytes alone once they pass the bound (not read quote by quote).
TEST(CsvWriterTest, AWideLineIsReservedWholeNotDoubled) {
  auto frame = StringColumn(
      {std::string("a"), std::string(3 << 20, 'y'), std::string("b"), std::string(1 << 20, '"')});
  CsvWriter w(frame);
  std::string out;
  Result<bool> next = w.Next(&out, 64 << 10, 4 << 20);  // the header, "a", then the wide row
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_TRUE(*next);
  EXPECT_EQ(w.rows_written(), 2u);
  EXPECT_GT(out.size(), size_t{3} << 20);
  EXPECT_LT(out.capacity(), out.size() + (size_t{64} << 10)) << "the buffer grew by doubling";
  out.clear();
  next = w.Next(&out, 64 << 10, 1 << 20);  // "b", then a row of 2 MiB + 2 as CSV
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.status().message(), "row 4 is up to 1048580 bytes as CSV, more than 1048576");
  EXPECT_EQ(out, "\"b\"\r\n");
}

TEST(CsvWriterTest, ALineWiderThanMaxLineIsRefusedBeforeItIsWritten) {
  auto frame = StringColumn({std::string("a"), std::string(1000, '"'), std::string("b")});
  CsvWriter w(frame);
  std::string out;
  for (int attempt = 0; attempt < 2; attempt++) {
    Result<bool> next = w.Next(&out, std::numeric_limits<size_t>::max(), 2000);
    ASSERT_FALSE(next.ok());
    EXPECT_EQ(next.status().code(), StatusCode::kResourceExhausted);
    EXPECT_EQ(next.status().message(), "row 2 is up to 2004 bytes as CSV, more than 2000");
    EXPECT_EQ(out, "s\r\n\"a\"\r\n");
    EXPECT_EQ(w.rows_written(), 1u);
  }
  const std::string whole = All(frame);
  EXPECT_EQ(whole.size(), 3u + 5 + 2004 + 5);
  CsvWriter wide(frame);
  std::string again;
  Result<bool> next = wide.Next(&again, std::numeric_limits<size_t>::max(), 2004);
  ASSERT_TRUE(next.ok() && !*next);
  EXPECT_EQ(again, whole);
  CsvWriter header(frame);
  std::string none;
  EXPECT_FALSE(header.Next(&none, 1, 3).ok());
  EXPECT_TRUE(none.empty());
}

TEST(CsvWriterTest, RealsReadBackBitForBit) {
  Result<FrameBuilder> made = FrameBuilder::Make({{"v", ColumnType::kReal}});
  FLOE_CHECK_OK(made.status());
  FrameBuilder b = std::move(*made);
  std::mt19937_64 rng(7);
  std::vector<double> values = {0.1,
                                -0.0,
                                5e-324,
                                std::numeric_limits<double>::max(),
                                -std::numeric_limits<double>::infinity(),
                                std::numeric_limits<double>::infinity()};
  for (int i = 0; i < 10000; i++) {
    uint64_t bits = rng();
    double d;
    std::memcpy(&d, &bits, sizeof(d));
    if (!std::isnan(d)) values.push_back(d);
  }
  for (double v : values) {
    FLOE_CHECK_OK(b.AddNumber(0, v));
    FLOE_CHECK_OK(b.EndRow());
  }
  Result<Frame> f = b.Finish();
  FLOE_CHECK_OK(f.status());
  const std::string csv = All(std::make_shared<const Frame>(std::move(*f)));
  size_t at = csv.find("\r\n") + 2;
  for (double v : values) {
    const size_t end = csv.find("\r\n", at);
    ASSERT_NE(end, std::string::npos);
    const std::string cell = csv.substr(at, end - at);
    double back = 0;
    if (cell == "inf" || cell == "-inf") {
      back = cell[0] == '-' ? -std::numeric_limits<double>::infinity()
                            : std::numeric_limits<double>::infinity();
    } else {
      auto [p, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), back);
      ASSERT_EQ(ec, std::errc()) << cell;
    }
    uint64_t want, got;
    std::memcpy(&want, &v, sizeof(v));
    std::memcpy(&got, &back, sizeof(back));
    EXPECT_EQ(got, want) << cell;
    at = end + 2;
  }
  EXPECT_EQ(at, csv.size());
}

}  // namespace
}  // namespace floe::frame
