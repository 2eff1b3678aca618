// Vecs, frames and the frame builder (docs/frame.md): chunks cut at the target size and aligned
// across columns, every row read back, chunk sizes against raw, and bad input refused.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "frame/frame.h"
#include "testing/testing.h"

namespace floe::frame {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::shared_ptr<const std::string> Bytes(std::string s) {
  return std::make_shared<const std::string>(std::move(s));
}

FrameBuilder MakeBuilder(std::vector<ColumnSpec> columns, uint64_t target) {
  Result<FrameBuilder> b = FrameBuilder::Make(std::move(columns), {.target_chunk_bytes = target});
  FLOE_CHECK_OK(b.status());
  return std::move(*b);
}

// A 1 MiB CSV of 10,000 mostly missing columns held every column's values until one column
// alone reached the target: about 40 GiB pending per parse worker before the first cut. All
// columns together are cut at 16 times the target.
TEST(FrameBuilderTest, ManyColumnsTogetherAreCutAtSixteenTimesTheTarget) {
  std::vector<ColumnSpec> columns;
  for (int c = 0; c < 1000; c++) columns.push_back({"c" + std::to_string(c), ColumnType::kReal});
  // 8 raw bytes per column and row: 8,000 a row, so 16 x 4,000 bytes is 8 rows a chunk, where
  // each column alone would wait for 500 rows.
  FrameBuilder b = MakeBuilder(columns, 4000);
  for (int row = 0; row < 100; row++) {
    for (size_t c = 0; c < columns.size(); c++) ASSERT_TRUE(b.AddNA(c).ok());
    ASSERT_TRUE(b.EndRow().ok());
  }
  Result<Frame> f = b.Finish();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->rows(), 100u);
  EXPECT_EQ(f->chunk_count(), 13u);  // 12 of 8 rows, then 4
  EXPECT_EQ(f->vec(0).chunk_start(1), 8u);
}

TEST(FrameBuilderTest, ChunksAreCutAtTheTargetRawSize) {
  // Two numeric columns, 8 raw bytes a row: 800 bytes is 100 rows a chunk.
  FrameBuilder b = MakeBuilder({{"a", ColumnType::kInteger}, {"b", ColumnType::kReal}}, 800);
  for (int i = 0; i < 1001; i++) {
    ASSERT_TRUE(b.AddNumber(0, i).ok());
    ASSERT_TRUE(b.AddNumber(1, i * 0.5).ok());
    ASSERT_TRUE(b.EndRow().ok());
  }
  Result<Frame> f = b.Finish();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->rows(), 1001u);
  ASSERT_EQ(f->chunk_count(), 11u);
  for (size_t k = 0; k <= 10; k++) EXPECT_EQ(f->vec(0).chunk_start(k), 100 * k);
  EXPECT_EQ(f->vec(0).chunk(10).rows(), 1u);
  EXPECT_EQ(f->vec(0).chunk(3).layout(), Layout::kInt8);      // 300..399 with a bias
  EXPECT_EQ(f->vec(1).chunk(3).layout(), Layout::kScaled16);  // halves 150.0..199.5
  // The widest column decides: a string column of 20-byte values (24 raw bytes a row) cuts
  // every 34 rows (34 * 24 >= 800 > 33 * 24), the numeric one beside it too.
  b = MakeBuilder({{"n", ColumnType::kReal}, {"s", ColumnType::kString}}, 800);
  for (int i = 0; i < 100; i++) {
    ASSERT_TRUE(b.AddString(1, std::string(20, 'x')).ok());
    ASSERT_TRUE(b.AddNumber(0, i).ok());
    ASSERT_TRUE(b.EndRow().ok());
  }
  f = b.Finish();
  ASSERT_TRUE(f.ok());
  ASSERT_EQ(f->chunk_count(), 3u);
  EXPECT_EQ(f->vec(0).chunk_start(1), 34u);
  EXPECT_EQ(f->vec(1).chunk_start(1), 34u);
  EXPECT_EQ(f->vec(1).chunk(0).raw_bytes(), 34u * 24);
}

// A row of every column type, generated from the seed; NA-heavy in places.
struct Row {
  double integer, real;
  std::optional<std::string> category, text;
  int64_t time;
};

TEST(FrameBuilderTest, EveryRowReadsBackFromAlignedChunks) {
  const uint64_t seed = testing::Seed(0, true);
  std::mt19937_64 rng(seed);
  const char* kCities[] = {"Oslo", "Lima", "", "Kyiv", "Pune"};
  std::vector<Row> rows(5000);
  for (size_t i = 0; i < rows.size(); i++) {
    Row& r = rows[i];
    const bool na_run = (i / 500) % 3 == 1;  // some chunks mostly NA
    r.integer = na_run || rng() % 10 == 0 ? kNA : static_cast<double>(rng() % 1000) - 500;
    if (rng() % 50 == 0) r.integer = rng() % 2 ? 9223372036854774784.0 : -9223372036854774784.0;
    uint64_t bits = rng();
    std::memcpy(&r.real, &bits, 8);
    if (i % 7 == 0) r.real = std::vector<double>{0.0, -0.0, kInf, -kInf, 5e-324}[rng() % 5];
    if (!na_run && rng() % 8 != 0) r.category = kCities[rng() % 5];
    if (!na_run && rng() % 8 != 0) {
      r.text.emplace(rng() % 30, '\0');
      for (char& ch : *r.text) ch = static_cast<char>(rng());
    }
    r.time = rng() % 9 == 0 ? kNATime : 1'600'000'000'000 + static_cast<int64_t>(rng() % 100000);
  }
  FrameBuilder b = MakeBuilder({{"i", ColumnType::kInteger},
                                {"r", ColumnType::kReal},
                                {"c", ColumnType::kCategorical},
                                {"s", ColumnType::kString},
                                {"t", ColumnType::kTime}},
                               1 + rng() % 8000);
  for (const Row& r : rows) {
    // Columns in a different order each row: the builder does not care.
    ASSERT_TRUE(b.AddTime(4, r.time).ok());
    ASSERT_TRUE((r.text ? b.AddString(3, *r.text) : b.AddNA(3)).ok());
    ASSERT_TRUE((r.category ? b.AddString(2, *r.category) : b.AddNA(2)).ok());
    ASSERT_TRUE(b.AddNumber(1, r.real).ok());
    ASSERT_TRUE((IsNA(r.integer) ? b.AddNA(0) : b.AddNumber(0, r.integer)).ok());
    ASSERT_TRUE(b.EndRow().ok());
  }
  EXPECT_EQ(b.rows(), rows.size());
  Result<Frame> f = b.Finish();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->rows(), rows.size());
  ASSERT_EQ(f->Find("s"), 3u);
  EXPECT_FALSE(f->Find("nope"));
  const Vec &vi = f->vec(0), &vr = f->vec(1), &vc = f->vec(2), &vs = f->vec(3), &vt = f->vec(4);
  // First-seen order: the domain lists each city once, as it first appeared.
  EXPECT_EQ(vc.domain().size(), 5u);
  for (uint64_t i = 0; i < rows.size(); i++) {
    const Row& r = rows[i];
    SCOPED_TRACE(::testing::Message() << "row " << i);
    ASSERT_EQ(vi.IsNA(i), IsNA(r.integer));
    if (!IsNA(r.integer)) {
      ASSERT_EQ(vi.At(i), r.integer);
    }
    const double real = vr.At(i);
    if (IsNA(r.real)) {
      ASSERT_TRUE(IsNA(real));
    } else {
      ASSERT_EQ(std::memcmp(&real, &r.real, 8), 0);
    }
    ASSERT_EQ(vc.IsNA(i), !r.category);
    ASSERT_EQ(vc.AtString(i), r.category.value_or(""));
    ASSERT_EQ(vs.IsNA(i), !r.text);
    ASSERT_EQ(vs.AtString(i), r.text.value_or(""));
    const Vec::Place p = vt.ChunkFor(i);
    ASSERT_EQ(vt.chunk(p.chunk).AtTime(p.row), r.time);
  }
}

TEST(FrameBuilderTest, TypicalColumnsCompressToHalfOfRawAndRandomDoublesStayNearRaw) {
  std::mt19937_64 rng(testing::Seed(0, true));
  FrameBuilder b = MakeBuilder({{"age", ColumnType::kInteger},
                                {"price", ColumnType::kReal},
                                {"city", ColumnType::kCategorical},
                                {"noise", ColumnType::kReal},
                                {"when", ColumnType::kTime}},
                               64 << 10);
  for (int i = 0; i < 100000; i++) {
    ASSERT_TRUE(b.AddNumber(0, static_cast<double>(rng() % 100)).ok());
    ASSERT_TRUE(b.AddNumber(1, static_cast<double>(rng() % 50000) / 100).ok());
    ASSERT_TRUE(b.AddString(2, "city" + std::to_string(rng() % 200)).ok());
    double noise;
    do {
      uint64_t bits = rng();
      std::memcpy(&noise, &bits, 8);
    } while (std::isnan(noise));
    ASSERT_TRUE(b.AddNumber(3, noise).ok());
    const int64_t when = 1'700'000'000'000 + i * 1000 + static_cast<int64_t>(rng() % 1000);
    ASSERT_TRUE(b.AddTime(4, when).ok());
    ASSERT_TRUE(b.EndRow().ok());
  }
  Result<Frame> f = b.Finish();
  ASSERT_TRUE(f.ok());
  EXPECT_GT(f->chunk_count(), 10u);
  // Each column's share of raw, and its bytes a row beside 8 raw (4 for codes), headers aside.
  const struct {
    double ratio;
    uint64_t per_row, raw_per_row;
  } kWant[] = {
      {.ratio = 0.5, .per_row = 1, .raw_per_row = 8},   // ages: int8
      {.ratio = 0.5, .per_row = 2, .raw_per_row = 8},   // prices in cents below 500: scaled16
      {.ratio = 0.5, .per_row = 1, .raw_per_row = 4},   // 200 cities: 1-byte codes
      {.ratio = 1.05, .per_row = 8, .raw_per_row = 8},  // random doubles: raw
      {.ratio = 0.51, .per_row = 4, .raw_per_row = 8},  // ms over 8,192 s a chunk: int32
  };
  for (size_t c = 0; c < f->columns(); c++) {
    const Vec& v = f->vec(c);
    const double ratio = static_cast<double>(v.compressed_bytes()) / v.raw_bytes();
    SCOPED_TRACE(::testing::Message() << f->name(c) << " compressed/raw " << ratio);
    EXPECT_LE(ratio, kWant[c].ratio);
    EXPECT_LE(v.compressed_bytes(), v.raw_bytes() / kWant[c].raw_per_row * kWant[c].per_row +
                                        2 * kChunkHeaderBytes * f->chunk_count());
  }
}

TEST(FrameBuilderTest, BadValuesAndIncompleteRowsAreRefused) {
  EXPECT_FALSE(FrameBuilder::Make({}).ok());
  EXPECT_FALSE(FrameBuilder::Make({{"a", ColumnType::kReal}, {"a", ColumnType::kReal}}).ok());
  EXPECT_FALSE(FrameBuilder::Make({{"", ColumnType::kReal}}).ok());
  EXPECT_FALSE(FrameBuilder::Make({{"a", ColumnType::kReal}}, {.target_chunk_bytes = 0}).ok());
  EXPECT_FALSE(FrameBuilder::Make({{"a", ColumnType::kReal}},
                                  {.target_chunk_bytes = kMaxTargetChunkBytes + 1})
                   .ok());
  FrameBuilder b = MakeBuilder({{"i", ColumnType::kInteger},
                                {"s", ColumnType::kString},
                                {"c", ColumnType::kCategorical},
                                {"t", ColumnType::kTime}},
                               100);
  EXPECT_FALSE(b.AddNumber(4, 1).ok());  // no such column
  EXPECT_FALSE(b.AddNumber(1, 1).ok());  // a number in a string column
  EXPECT_FALSE(b.AddString(0, "1").ok());
  EXPECT_FALSE(b.AddNumber(3, 1).ok());  // times through AddTime only
  EXPECT_FALSE(b.AddTime(0, 1).ok());
  EXPECT_FALSE(b.AddNumber(0, 1.5).ok());
  EXPECT_FALSE(b.AddNumber(0, kInf).ok());
  EXPECT_FALSE(b.AddNumber(0, -9223372036854775808.0).ok());
  EXPECT_FALSE(b.AddTime(3, kMaxTimeMs + 1).ok());
  // A row with a column missing is refused and its values dropped; the builder stays aligned.
  ASSERT_TRUE(b.AddNumber(0, -0.0).ok());
  EXPECT_FALSE(b.AddNumber(0, 2).ok());  // set twice
  ASSERT_TRUE(b.AddString(1, "dropped").ok());
  ASSERT_TRUE(b.AddString(2, "dropped too").ok());
  EXPECT_FALSE(b.EndRow().ok());
  EXPECT_EQ(b.rows(), 0u);
  ASSERT_TRUE(b.AddNumber(0, -0.0).ok());  // -0 is 0 in an integer column
  ASSERT_TRUE(b.AddString(1, "kept").ok());
  ASSERT_TRUE(b.AddString(2, "kept too").ok());
  ASSERT_TRUE(b.AddTime(3, kNATime).ok());
  ASSERT_TRUE(b.EndRow().ok());
  ASSERT_TRUE(b.AddNA(0).ok());
  EXPECT_EQ(b.Finish().status().code(), StatusCode::kFailedPrecondition);  // a row half done
  ASSERT_TRUE(b.AddNA(1).ok());
  ASSERT_TRUE(b.AddNA(2).ok());
  ASSERT_TRUE(b.AddNA(3).ok());
  ASSERT_TRUE(b.EndRow().ok());
  Result<Frame> f = b.Finish();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->rows(), 2u);
  EXPECT_EQ(f->vec(1).AtString(0), "kept");
  EXPECT_EQ(f->vec(2).domain(), std::vector<std::string>{"kept too"});  // "dropped too" stays
  EXPECT_EQ(f->vec(0).chunk(0).layout(), Layout::kInt8);                // not double: -0 is 0
}

TEST(VecTest, ChunkForFindsEveryRowIncludingAroundEmptyChunks) {
  std::vector<std::shared_ptr<const std::string>> chunks;
  std::vector<double> all;
  for (int n : {3, 0, 1, 0, 0, 7, 2}) {
    std::vector<double> v;
    for (int i = 0; i < n; i++) v.push_back(static_cast<double>(all.size() + v.size()));
    all.insert(all.end(), v.begin(), v.end());
    chunks.push_back(Bytes(Compress(v)));
  }
  Result<Vec> vec = Vec::Make(ColumnType::kReal, {}, chunks);
  ASSERT_TRUE(vec.ok());
  ASSERT_EQ(vec->rows(), all.size());
  for (uint64_t i = 0; i < all.size(); i++) {
    const Vec::Place p = vec->ChunkFor(i);
    EXPECT_GT(vec->chunk(p.chunk).rows(), p.row) << i;
    EXPECT_EQ(vec->chunk_start(p.chunk) + p.row, i);
    EXPECT_EQ(vec->At(i), all[i]);
  }
}

// What FRAME.INFO reports is counted once by Make: NAs in every layout (sparse ones included)
// and chunks per layout name.
TEST(VecTest, MakeCountsNasAndLayouts) {
  std::vector<double> sparse(1000, 0.0);
  sparse[3] = kNA;
  sparse[500] = 7;
  sparse[999] = kNA;
  const std::vector<double> dense = {1.5, kNA, 2.5};
  Result<Vec> vec = Vec::Make(ColumnType::kReal, {},
                              {Bytes(Compress(sparse)), Bytes(Compress(dense)),
                               Bytes(Compress(std::vector<double>{0.5, 1.5}))});
  ASSERT_TRUE(vec.ok());
  EXPECT_EQ(vec->na_count(), 3u);
  uint64_t chunks = 0;
  for (const auto& [name, count] : vec->layout_counts()) {
    EXPECT_FALSE(name.empty());
    chunks += count;
  }
  EXPECT_EQ(chunks, 3u);
  // A count given (the builder's) is taken as it is, but never more NAs than rows.
  const std::vector<std::shared_ptr<const std::string>> two = {Bytes(Compress(dense))};
  EXPECT_EQ(Vec::Make(ColumnType::kReal, {}, two, 1)->na_count(), 1u);
  EXPECT_EQ(Vec::Make(ColumnType::kReal, {}, two, 4).status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(std::is_sorted(vec->layout_counts().begin(), vec->layout_counts().end()));
  Result<Vec> text = Vec::Make(
      ColumnType::kString, {},
      {Bytes(*CompressStrings(std::vector<std::optional<std::string_view>>{"a", {}, {}, ""}))});
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->na_count(), 2u);
  ASSERT_EQ(text->layout_counts().size(), 1u);
  EXPECT_EQ(text->layout_counts()[0].first, "string");
  Result<Vec> cat = Vec::Make(ColumnType::kCategorical, {"a", "b", "c"},
                              {Bytes(CompressCodes(std::vector<int32_t>{0, kNACode, 2}, 3))});
  ASSERT_TRUE(cat.ok());
  EXPECT_EQ(cat->na_count(), 1u);
  ASSERT_EQ(cat->layout_counts().size(), 1u);
  EXPECT_TRUE(cat->layout_counts()[0].first.starts_with("categorical/"));
}

TEST(VecTest, ChunksThatDoNotFitTheColumnAreRefused) {
  const auto reals = Bytes(Compress(std::vector<double>{0.5, 1.5}));
  const auto ints = Bytes(Compress(std::vector<double>{1, 2}));
  const auto codes = Bytes(CompressCodes(std::vector<int32_t>{0, 2}, 3));
  const auto text = Bytes(*CompressStrings(std::vector<std::optional<std::string_view>>{"a", {}}));
  EXPECT_TRUE(Vec::Make(ColumnType::kReal, {}, {reals, ints}).ok());
  EXPECT_FALSE(Vec::Make(ColumnType::kInteger, {}, {ints, reals}).ok());
  EXPECT_FALSE(Vec::Make(ColumnType::kTime, {}, {reals}).ok());
  EXPECT_FALSE(Vec::Make(ColumnType::kReal, {}, {codes}).ok());
  EXPECT_FALSE(Vec::Make(ColumnType::kString, {}, {ints}).ok());
  EXPECT_FALSE(Vec::Make(ColumnType::kReal, {}, {text}).ok());
  EXPECT_TRUE(Vec::Make(ColumnType::kCategorical, {"a", "b", "c"}, {codes}).ok());
  EXPECT_TRUE(Vec::Make(ColumnType::kCategorical, {"a", "b", "c", "d"}, {codes}).ok());
  EXPECT_FALSE(Vec::Make(ColumnType::kCategorical, {"a", "b"}, {codes}).ok());  // code 2
  EXPECT_FALSE(Vec::Make(ColumnType::kCategorical, {"a", "b", "a"}, {codes}).ok());
  EXPECT_FALSE(Vec::Make(ColumnType::kString, {"a"}, {text}).ok());  // a domain
  EXPECT_FALSE(Vec::Make(ColumnType::kReal, {}, {nullptr}).ok());
  EXPECT_FALSE(Vec::Make(ColumnType::kReal, {}, {Bytes("short")}).ok());
}

TEST(FrameTest, ColumnsMustAlignChunkByChunk) {
  auto vec = [](std::vector<int> sizes) {
    std::vector<std::shared_ptr<const std::string>> chunks;
    for (int n : sizes) chunks.push_back(Bytes(Compress(std::vector<double>(n, 1.0))));
    return *Vec::Make(ColumnType::kReal, {}, chunks);
  };
  EXPECT_TRUE(Frame::Make({"a", "b"}, {vec({3, 4}), vec({3, 4})}).ok());
  EXPECT_FALSE(Frame::Make({"a", "b"}, {vec({3, 4}), vec({4, 3})}).ok());  // same rows
  EXPECT_FALSE(Frame::Make({"a", "b"}, {vec({3, 4}), vec({3, 4, 1})}).ok());
  EXPECT_FALSE(Frame::Make({"a", "b"}, {vec({7}), vec({3, 4})}).ok());
  EXPECT_FALSE(Frame::Make({"a", "a"}, {vec({3}), vec({3})}).ok());
  EXPECT_FALSE(Frame::Make({"a"}, {vec({3}), vec({3})}).ok());
  Result<Frame> f = Frame::Make({"a", "b"}, {vec({3, 4}), vec({3, 4})});
  EXPECT_EQ(f->rows(), 7u);
  EXPECT_EQ(f->raw_bytes(), 2u * 7 * 8);
  EXPECT_EQ(f->compressed_bytes(), 4u * kChunkHeaderBytes);  // four constant chunks
}

// A categorical column turned into strings between rows keeps every value, cut chunks and
// pending ones alike, frees its domain, and refuses a row half set.
TEST(FrameBuilderTest, CategoricalCodesSurviveDroppedRowsAndLookalikeValues) {
  // Values that share their length and their first and last bytes (the code cache's hash), a
  // value first seen in a dropped row (its code is then given to another value), and a domain
  // growing past every cache size: each row reads back the value it was given.
  FrameBuilder b = MakeBuilder({{"n", ColumnType::kReal}, {"c", ColumnType::kCategorical}}, 1024);
  std::vector<std::string> expected;
  auto add = [&](const std::string& v) {
    ASSERT_TRUE(b.AddNumber(0, 0).ok());
    ASSERT_TRUE(b.AddString(1, v).ok());
    ASSERT_TRUE(b.EndRow().ok());
    expected.push_back(v);
  };
  add("first");
  ASSERT_TRUE(b.AddString(1, "gone").ok());  // a row without column 0: dropped with its value
  EXPECT_FALSE(b.EndRow().ok());
  add("other");  // takes the code "gone" had
  add("gone");
  add("other");
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; i++) {
    const uint64_t r = rng() % 3000;
    add("a" + std::string(10, ' ') + std::to_string(r) + std::string(10, ' ') + "z");
  }
  // Short values (a cache hit trusts the slot's key without the domain): every length to 9,
  // of two bytes one of which is NUL, so values differ by their length alone or by one byte.
  for (int i = 0; i < 20000; i++) {
    std::string v(rng() % 10, 'a');
    for (char& ch : v) ch = rng() % 2 == 0 ? 'a' : '\0';
    add(v);
  }
  EXPECT_EQ(b.domain_size(1), std::set<std::string>(expected.begin(), expected.end()).size());
  Result<Frame> f = b.Finish();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->rows(), expected.size());
  for (size_t r = 0; r < expected.size(); r++) {
    ASSERT_EQ(f->vec(1).AtString(r), expected[r]) << "row " << r;
  }
}

// A dropped row's values leave the counts a cut is decided by: the row that filled a column
// and was refused cuts nothing, and the pending bytes are those of the rows kept.
TEST(FrameBuilderTest, ADroppedRowLeavesTheCutsAndPendingBytesAsBefore) {
  FrameBuilder b = MakeBuilder({{"n", ColumnType::kReal}, {"s", ColumnType::kString}}, 64);
  for (int i = 0; i < 6; i++) {
    ASSERT_TRUE(b.AddNumber(0, i).ok());
    ASSERT_TRUE(b.AddNA(1).ok());
    ASSERT_TRUE(b.EndRow().ok());
  }
  EXPECT_EQ(b.pending_bytes(), 6u * 12);
  ASSERT_TRUE(b.AddString(1, std::string(60, 'x')).ok());  // past the target, and dropped
  EXPECT_FALSE(b.EndRow().ok());
  EXPECT_EQ(b.pending_bytes(), 6u * 12);
  ASSERT_TRUE(b.AddNumber(0, 99).ok());
  EXPECT_FALSE(b.EndRow().ok());
  for (int i = 6; i < 9; i++) {
    ASSERT_TRUE(b.AddNumber(0, i).ok());
    ASSERT_TRUE(b.AddNA(1).ok());
    ASSERT_TRUE(b.EndRow().ok());
    // The eighth kept row brings the numbers to the target and cuts.
    EXPECT_EQ(b.pending_bytes(), i == 6 ? 7u * 12 : i == 7 ? 0u : 12u) << i;
  }
  Result<Frame> f = b.Finish();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->vec(0).chunk_count(), 2u);
  EXPECT_EQ(f->vec(0).chunk(0).rows(), 8u);
  for (uint64_t r = 0; r < 9; r++) EXPECT_EQ(f->vec(0).At(r), static_cast<double>(r)) << r;
}

TEST(FrameBuilderTest, DemoteToStringKeepsEveryValueAndFreesTheDomain) {
  FrameBuilder b = MakeBuilder({{"n", ColumnType::kReal}, {"c", ColumnType::kCategorical}}, 64);
  std::vector<std::optional<std::string>> expected;
  for (int i = 0; i < 100; i++) {
    ASSERT_TRUE(b.AddNumber(0, i).ok());
    if (i % 9 == 0) {
      ASSERT_TRUE(b.AddNA(1).ok());
      expected.emplace_back();
    } else {
      const std::string v = "v" + std::to_string(i % 13);
      ASSERT_TRUE(b.AddString(1, v).ok());
      expected.emplace_back(v);
    }
    ASSERT_TRUE(b.EndRow().ok());
  }
  EXPECT_GT(b.domain_bytes(), 0u);
  EXPECT_EQ(b.domain_size(1), 13u);
  ASSERT_TRUE(b.AddNumber(0, 1).ok());
  EXPECT_EQ(b.DemoteToString(1).code(), StatusCode::kInvalidArgument);  // a row half set
  ASSERT_TRUE(b.AddString(1, "last").ok());
  ASSERT_TRUE(b.EndRow().ok());
  expected.emplace_back("last");
  EXPECT_EQ(b.DemoteToString(0).code(), StatusCode::kInvalidArgument);  // not categorical
  ASSERT_TRUE(b.DemoteToString(1).ok());
  EXPECT_EQ(b.domain_bytes(), 0u);
  EXPECT_EQ(b.domain_size(1), 0u);
  ASSERT_TRUE(b.AddNumber(0, 2).ok());
  ASSERT_TRUE(b.AddString(1, "after").ok());
  ASSERT_TRUE(b.EndRow().ok());
  expected.emplace_back("after");
  Result<Frame> f = b.Finish();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const Vec& v = f->vec(1);
  EXPECT_EQ(v.type(), ColumnType::kString);
  EXPECT_TRUE(v.domain().empty());
  ASSERT_EQ(v.rows(), expected.size());
  for (uint64_t r = 0; r < v.rows(); r++) {
    EXPECT_EQ(v.IsNA(r), !expected[r].has_value()) << r;
    if (expected[r]) {
      EXPECT_EQ(v.AtString(r), *expected[r]) << r;
    }
  }
}

// The builder counts NAs as values come, and Finish hands the count to Vec::Make instead of
// decoding every chunk: the count must be what Make finds in the chunks, whatever the NA came
// from (AddNA, a NaN, kNATime, a padded or dropped row, a column demoted to strings).
TEST(FrameBuilderTest, NaCountsKeptAsValuesComeEqualWhatTheChunksHold) {
  FrameBuilder b = MakeBuilder({{"i", ColumnType::kInteger},
                                {"r", ColumnType::kReal},
                                {"t", ColumnType::kTime},
                                {"c", ColumnType::kCategorical},
                                {"d", ColumnType::kCategorical},
                                {"s", ColumnType::kString}},
                               256);
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; i++) {
    const bool na = rng() % 4 == 0;
    ASSERT_TRUE((na ? b.AddNA(0) : b.AddNumber(0, i % 17)).ok());
    ASSERT_TRUE(b.AddNumber(1, rng() % 5 == 0 ? std::nan("") : i * 0.5).ok());
    ASSERT_TRUE(b.AddTime(2, rng() % 6 == 0 ? kNATime : int64_t{i} * 1000).ok());
    ASSERT_TRUE((rng() % 3 == 0 ? b.AddNA(3) : b.AddString(3, "v" + std::to_string(i % 5))).ok());
    ASSERT_TRUE((rng() % 7 == 0 ? b.AddNA(4) : b.AddString(4, "w" + std::to_string(i % 3))).ok());
    if (i % 101 == 50) {  // a row dropped with NAs and values set
      EXPECT_FALSE(b.EndRow().ok());
      continue;
    }
    ASSERT_TRUE((rng() % 5 == 0 ? b.AddNA(5) : b.AddString(5, "s" + std::to_string(i))).ok());
    ASSERT_TRUE(b.EndRow().ok());
    if (i == 1500) {
      ASSERT_TRUE(b.DemoteToString(4).ok());
    }
  }
  Result<Frame> f = b.Finish();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  for (size_t c = 0; c < f->columns(); c++) {
    const Vec& v = f->vec(c);
    std::vector<std::shared_ptr<const std::string>> chunks;
    for (size_t k = 0; k < v.chunk_count(); k++) chunks.push_back(v.chunk_bytes(k));
    Result<Vec> counted = Vec::Make(v.type(), v.domain(), chunks);
    ASSERT_TRUE(counted.ok()) << counted.status().ToString();
    EXPECT_GT(v.na_count(), 0u) << c;
    EXPECT_EQ(v.na_count(), counted->na_count()) << c;
  }
}

// AppendRows makes what AddNumber/AddString/AddNA and EndRow make of the same values, chunk
// cuts included, when each run stays within RowsBeforeCut; what it refuses leaves no trace.
TEST(FrameBuilderTest, RowsAppendedAColumnAtATimeEqualRowByRow) {
  const std::vector<ColumnSpec> specs = {
      {"i", ColumnType::kInteger}, {"r", ColumnType::kReal}, {"c", ColumnType::kCategorical}};
  FrameBuilder rows = MakeBuilder(specs, 200);
  FrameBuilder runs = MakeBuilder(specs, 200);
  std::mt19937 rng(3);
  const std::vector<std::string> names = {"a", "bb", "a long categorical value", ""};
  int row = 0;
  while (row < 2000) {
    const uint64_t room = runs.RowsBeforeCut();
    ASSERT_GE(room, 1u);
    const size_t n = std::min<uint64_t>(room, 1 + rng() % 40);
    std::vector<double> ints(n), reals(n);
    std::vector<std::string_view> cats(n);
    for (size_t k = 0; k < n; k++, row++) {
      ints[k] = rng() % 9 == 0 ? kNA : (rng() % 2 ? -0.0 : row - 1000.0);
      reals[k] = rng() % 7 == 0 ? std::nan("") : row * 0.25;
      cats[k] = rng() % 5 == 0 ? std::string_view() : std::string_view(names[rng() % 4]);
      ASSERT_TRUE(rows.AddNumber(0, ints[k]).ok());
      ASSERT_TRUE(rows.AddNumber(1, reals[k]).ok());
      ASSERT_TRUE((cats[k].data() == nullptr ? rows.AddNA(2) : rows.AddString(2, cats[k])).ok());
      ASSERT_TRUE(rows.EndRow().ok());
    }
    const std::vector<FrameBuilder::ColumnRun> run = {
        {.numbers = ints.data()}, {.numbers = reals.data()}, {.values = cats.data()}};
    ASSERT_TRUE(runs.AppendRows(n, run).ok());
    EXPECT_EQ(runs.pending_bytes(), rows.pending_bytes());
    // Refused, and nothing kept: past the next cut, a value an integer column does not take.
    EXPECT_EQ(runs.AppendRows(runs.RowsBeforeCut() + 1, run).code(), StatusCode::kInvalidArgument);
    const double bad[1] = {0.5};
    const double one[1] = {1};
    const std::string_view cat[1] = {"new"};
    EXPECT_EQ(runs.AppendRows(1,
                              std::vector<FrameBuilder::ColumnRun>{
                                  {.numbers = one}, {.numbers = one}, {.values = nullptr}})
                  .code(),
              StatusCode::kInvalidArgument);
    EXPECT_EQ(runs.AppendRows(1,
                              std::vector<FrameBuilder::ColumnRun>{
                                  {.numbers = bad}, {.numbers = one}, {.values = cat}})
                  .code(),
              StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(runs.rows(), rows.rows());
  EXPECT_EQ(runs.domain_bytes(), rows.domain_bytes());
  Result<Frame> a = runs.Finish();
  Result<Frame> b = rows.Finish();
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t c = 0; c < specs.size(); c++) {
    ASSERT_EQ(a->vec(c).chunk_count(), b->vec(c).chunk_count()) << c;
    EXPECT_GT(a->vec(c).chunk_count(), 3u);
    for (size_t k = 0; k < a->vec(c).chunk_count(); k++) {
      EXPECT_EQ(*a->vec(c).chunk_bytes(k), *b->vec(c).chunk_bytes(k)) << c << " " << k;
    }
    EXPECT_EQ(a->vec(c).domain(), b->vec(c).domain());
    EXPECT_EQ(a->vec(c).na_count(), b->vec(c).na_count());
  }
  // A string column, or a row begun: no rows column at a time.
  FrameBuilder text = MakeBuilder({{"s", ColumnType::kString}, {"r", ColumnType::kReal}}, 200);
  EXPECT_EQ(text.RowsBeforeCut(), 0u);
  FrameBuilder half = MakeBuilder(specs, 200);
  ASSERT_TRUE(half.AddNumber(0, 1).ok());
  EXPECT_EQ(half.RowsBeforeCut(), 0u);
}

}  // namespace
}  // namespace floe::frame
