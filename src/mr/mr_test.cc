#include "mr/mr.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <new>
#include <random>
#include <set>
#include <thread>

#include "testing/budget.h"

// Every heap byte the test binary holds through operator new (requested sizes rounded up to 16,
// as the allocator's small size classes are), for tests that compare what a task charged with
// what it really allocated. Each block carries its size in a 16-byte header.
namespace {
std::atomic<int64_t> g_heap_bytes{0};
constexpr size_t kHeader = 16;
}  // namespace

void* operator new(size_t n) {
  const size_t rounded = (std::max<size_t>(n, 1) + 15) & ~size_t{15};
  auto* p = static_cast<char*>(std::malloc(rounded + kHeader));
  if (p == nullptr) throw std::bad_alloc();
  *reinterpret_cast<size_t*>(p) = rounded;
  g_heap_bytes.fetch_add(static_cast<int64_t>(rounded), std::memory_order_relaxed);
  return p + kHeader;
}
// Not inlined: seen through a sized delete of an array, GCC took the header for out of bounds.
__attribute__((noinline)) void operator delete(void* p) noexcept {
  if (p == nullptr) return;
  char* block = static_cast<char*>(p) - kHeader;
  g_heap_bytes.fetch_sub(static_cast<int64_t>(*reinterpret_cast<size_t*>(block)),
                         std::memory_order_relaxed);
  std::free(block);
}
void operator delete(void* p, size_t) noexcept { operator delete(p); }

namespace floe::mr {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

using frame::ColumnType;
using frame::Frame;

// A random frame: an integer key with `groups` values (some NA), a real column with NA
// probability `na`, a categorical of 5 levels; small chunks so there are many.
struct Data {
  Frame frame;
  std::vector<double> key, x;
  std::vector<int> cat;  // -1 NA
};

Data Random(uint64_t seed, size_t rows, int groups, double na) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  auto b = frame::FrameBuilder::Make({{.name = "k", .type = ColumnType::kInteger},
                                      {.name = "x", .type = ColumnType::kReal},
                                      {.name = "c", .type = ColumnType::kCategorical}},
                                     {.target_chunk_bytes = 4096});
  EXPECT_TRUE(b.ok());
  Data d;
  const char* levels[] = {"a", "b", "c", "d", "e"};
  for (size_t r = 0; r < rows; r++) {
    const double k = u(rng) < 0.02 ? frame::kNA : static_cast<double>(rng() % groups);
    double x = u(rng) < na ? frame::kNA : std::round((u(rng) * 2000 - 1000) * 100) / 100;
    if (!std::isnan(x) && u(rng) < 0.01) x = 1e6 * u(rng);
    const int c = u(rng) < 0.1 ? -1 : static_cast<int>(rng() % 5);
    d.key.push_back(k);
    d.x.push_back(x);
    d.cat.push_back(c);
    EXPECT_TRUE((std::isnan(k) ? b->AddNA(0) : b->AddNumber(0, k)).ok());
    EXPECT_TRUE((std::isnan(x) ? b->AddNA(1) : b->AddNumber(1, x)).ok());
    EXPECT_TRUE((c < 0 ? b->AddNA(2) : b->AddString(2, levels[c])).ok());
    EXPECT_TRUE(b->EndRow().ok());
  }
  d.frame = *b->Finish();
  return d;
}

TEST(MrTest, ReduceRunsInChunkOrderWhateverTheThreads) {
  const Data d = Random(1, 20000, 10, 0.3);
  ASSERT_GT(d.frame.chunk_count(), 10u);
  auto sum_with = [&](uint32_t threads) {
    return *MapReduce<std::vector<size_t>>(
        d.frame.chunk_count(), [](size_t k) { return std::vector<size_t>{k}; },
        [](std::vector<size_t>& a, std::vector<size_t>&& b) {
          a.insert(a.end(), b.begin(), b.end());
        },
        {.threads = threads});
  };
  for (uint32_t t : {1u, 2u, 3u, 8u}) {
    std::vector<size_t> order = sum_with(t);
    ASSERT_EQ(order.size(), d.frame.chunk_count());
    for (size_t k = 0; k < order.size(); k++) EXPECT_EQ(order[k], k);
  }
}

TEST(MrTest, ThreadsTheSystemRefusesLeaveTheWorkToTheOthers) {
  for (int refused : {1, 7}) {
    floe::internal::FailNextThreadStarts(refused);
    Result<size_t> sum = MapReduce<size_t>(
        100, [](size_t k) { return k; }, [](size_t& a, size_t&& b) { a += b; }, {.threads = 8});
    floe::internal::FailNextThreadStarts(0);
    ASSERT_TRUE(sum.ok()) << refused;
    EXPECT_EQ(*sum, 99u * 100u / 2) << refused;
  }
}

TEST(MrTest, CancelledTaskReturnsCancelled) {
  std::atomic<bool> cancel{true};
  Result<int> r = MapReduce<int>(
      5, [](size_t) { return 1; }, [](int& a, int&& b) { a += b; },
      {.threads = 2, .cancel = &cancel});
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled);
}

TEST(MrTest, SummaryMatchesASingleThreadedPass) {
  for (uint64_t seed : {2u, 3u, 4u}) {
    for (double na : {0.0, 0.5, 0.97}) {
      SCOPED_TRACE(::testing::Message() << "seed " << seed << " na " << na);
      const Data d = Random(seed, 30000, 7, na);
      Result<Summary> s = Summarize(d.frame, 1, 10, {.threads = 3});
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      uint64_t count = 0, nas = 0;
      double sum = 0, mn = kInf, mx = -kInf;
      std::map<double, int> distinct;
      for (double v : d.x) {
        if (std::isnan(v)) {
          nas++;
          continue;
        }
        count++;
        sum += v;
        mn = std::min(mn, v);
        mx = std::max(mx, v);
        distinct[v]++;
      }
      const double mean = sum / static_cast<double>(count);
      double ss = 0;
      for (double v : d.x) {
        if (!std::isnan(v)) ss += (v - mean) * (v - mean);
      }
      EXPECT_EQ(s->moments.count, count);
      EXPECT_EQ(s->moments.na, nas);
      EXPECT_EQ(s->moments.min, mn);
      EXPECT_EQ(s->moments.max, mx);
      EXPECT_NEAR(s->moments.mean, mean, 1e-9 * std::max(1.0, std::fabs(mean)));
      EXPECT_NEAR(s->moments.sd(), std::sqrt(ss / static_cast<double>(count - 1)),
                  1e-9 * std::sqrt(ss));
      EXPECT_NEAR(static_cast<double>(s->cardinality), static_cast<double>(distinct.size()),
                  0.03 * static_cast<double>(distinct.size()) + 1);
      uint64_t in_hist = 0;
      for (uint64_t c : s->histogram) in_hist += c;
      EXPECT_EQ(in_hist, count);
      ASSERT_EQ(s->histogram.size(), 10u);
      // Each value falls in the bin its edges say (the last bin holds max).
      std::vector<uint64_t> expect(10, 0);
      for (double v : d.x) {
        if (std::isnan(v)) continue;
        size_t b = 0;
        while (b + 1 < 10 && v >= s->bin_starts[b + 1]) b++;
        expect[b]++;
      }
      for (size_t b = 0; b < 10; b++) EXPECT_NEAR(expect[b], s->histogram[b], 2) << b;
    }
  }
}

TEST(MrTest, ChunkSumMatchesAPlainLoopInEveryLayout) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> u(0, 1);
  // Raw doubles, 1/2/4-byte integers, scaled decimals, constant, bits, sparse, with NAs; and
  // raw doubles without (the fast path).
  auto make = [&](int kind, size_t n) {
    std::vector<double> v(n);
    for (size_t i = 0; i < n; i++) {
      switch (kind) {
        case 0:
          v[i] = u(rng) * 1e6 - 5e5;
          break;
        case 1:
          v[i] = static_cast<double>(rng() % 200);
          break;
        case 2:
          v[i] = static_cast<double>(rng() % 60000);
          break;
        case 3:
          v[i] = static_cast<double>(rng() % 4000000000ull) - 2e9;
          break;
        case 4:
          v[i] = static_cast<double>(rng() % 10000) / 100;
          break;
        case 5:
          v[i] = 7;
          break;
        case 6:
          v[i] = static_cast<double>(rng() % 2);
          break;
        default:
          v[i] = u(rng) < 0.95 ? 0 : u(rng);
          break;
      }
      if (kind != 5 && kind != 6 && kind != 8 && u(rng) < 0.1) v[i] = frame::kNA;
    }
    return v;
  };
  for (int kind = 0; kind < 9; kind++) {
    for (size_t n : {size_t{0}, size_t{3}, size_t{1001}}) {
      const std::vector<double> v = make(kind, n);
      const std::string bytes = frame::Compress(v);
      Result<frame::ChunkView> chunk = frame::ChunkView::Make(bytes);
      ASSERT_TRUE(chunk.ok());
      double want = 0;
      uint64_t count = 0;
      for (double x : v) {
        if (!std::isnan(x)) {
          want += x;
          count++;
        }
      }
      const SumCount got = ChunkSum(*chunk);
      EXPECT_EQ(got.count, count) << kind << " " << n;
      EXPECT_NEAR(got.sum, want, 1e-9 * std::max(1.0, std::fabs(want))) << kind << " " << n;
      EXPECT_EQ(chunk->raw_doubles() != nullptr, chunk->layout() == frame::Layout::kDouble);
    }
  }
}

TEST(MrTest, SummaryOfAnAllNAColumnHasNoValues) {
  const Data d = Random(5, 1000, 3, 1.0);
  Result<Summary> s = Summarize(d.frame, 1, 5);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->moments.count, 0u);
  EXPECT_EQ(s->moments.na, 1000u);
  EXPECT_TRUE(s->histogram.empty());
  EXPECT_EQ(Summarize(d.frame, 1, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Summarize(d.frame, 1, kMaxBins + 1).status().code(), StatusCode::kInvalidArgument);
}

// Type 7: h = (n - 1) p between sorted[floor(h)] and sorted[floor(h) + 1].
double Type7(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double h = static_cast<double>(v.size() - 1) * p;
  const auto lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  if (v[lo] == v[hi] || h == static_cast<double>(lo)) return v[lo];
  // DuckDB's quantile_cont: -inf with a finite value is -inf, a finite value with +inf is +inf.
  if (std::isinf(v[lo]) || std::isinf(v[hi])) {
    if (v[lo] == -kInf && v[hi] == kInf) return std::numeric_limits<double>::quiet_NaN();
    return std::isinf(v[lo]) ? v[lo] : v[hi];
  }
  return v[lo] + (v[hi] - v[lo]) * (h - static_cast<double>(lo));
}

TEST(MrTest, QuantilesAreExactAfterRefinement) {
  // 200,000 values: more than one refinement pass is needed before gathering.
  for (uint64_t seed : {6u, 7u}) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    const Data d = Random(seed, 200000, 3, 0.2);
    std::vector<double> vals;
    for (double v : d.x) {
      if (!std::isnan(v)) vals.push_back(v);
    }
    const std::vector<double> ps = {0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999, 1};
    Result<std::vector<std::optional<double>>> q = Quantiles(d.frame, 1, ps, {.threads = 2});
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    for (size_t i = 0; i < ps.size(); i++) {
      ASSERT_TRUE((*q)[i].has_value());
      EXPECT_EQ(*(*q)[i], Type7(vals, ps[i])) << ps[i];
    }
  }
}

TEST(MrTest, QuantilesAtTheEdgesOfDoubles) {
  auto b = *frame::FrameBuilder::Make({{.name = "x", .type = ColumnType::kReal}});
  std::vector<double> vals = {-kInf, -1.7e308, -0.0, 0.0, 4.9e-324, 1e-310, 1.7e308, kInf};
  for (int rep = 0; rep < 20000; rep++) {
    for (double v : vals) {
      ASSERT_TRUE(b.AddNumber(0, v).ok());
      ASSERT_TRUE(b.EndRow().ok());
    }
  }
  Frame f = *b.Finish();
  std::vector<double> all;
  for (int rep = 0; rep < 20000; rep++) all.insert(all.end(), vals.begin(), vals.end());
  for (double p : {0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.99}) {
    Result<std::vector<std::optional<double>>> q = Quantiles(f, 0, {p});
    ASSERT_TRUE(q.ok());
    const double want = Type7(all, p);
    EXPECT_TRUE(*(*q)[0] == want || (std::isnan(want) && std::isnan(*(*q)[0]))) << p;
  }
  EXPECT_EQ(Quantiles(f, 0, {1.5}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Quantiles(f, 0, {}).status().code(), StatusCode::kInvalidArgument);
}

using testing::TestBudget;

Frame OneColumn(const std::vector<double>& vals) {
  auto b = *frame::FrameBuilder::Make({{.name = "x", .type = ColumnType::kReal}},
                                      {.target_chunk_bytes = 1 << 16});
  for (double v : vals) {
    EXPECT_TRUE((std::isnan(v) ? b.AddNA(0) : b.AddNumber(0, v)).ok());
    EXPECT_TRUE(b.EndRow().ok());
  }
  return *b.Finish();
}

// Regression: the mean of finite values of opposite signs past half the range was -inf (their
// difference overflowed in the running update), and the last bin starts were inf.
TEST(MrTest, SummaryOfTheLargestDoublesOfBothSigns) {
  Result<Summary> two = Summarize(OneColumn({1e308, -1e308}), 0, 2);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->moments.Mean(), 0.0);
  EXPECT_EQ(two->moments.sd(), kInf);  // 1.41e308, but its squares pass any double
  Result<Summary> four = Summarize(OneColumn({1e308, 1e308, 1e308, -1e308}), 0, 20);
  ASSERT_TRUE(four.ok());
  EXPECT_DOUBLE_EQ(four->moments.Mean(), 5e307);
  ASSERT_EQ(four->bin_starts.size(), 20u);
  for (double b : four->bin_starts) EXPECT_TRUE(std::isfinite(b)) << b;
  EXPECT_EQ(four->bin_starts[0], -1e308);
  // Merged from chunks: the same.
  Moments a, b;
  a.Add(1e308);
  b.Add(-1e308);
  a.Merge(b);
  EXPECT_EQ(a.Mean(), 0.0);
}

TEST(MrTest, QuantilesBetweenTheLargestDoublesOfBothSigns) {
  // Between the largest finite doubles of both signs: the gap overflows, the quantile does not.
  Frame ends = OneColumn({-1.7e308, 1.7e308});
  Result<std::vector<std::optional<double>>> q = Quantiles(ends, 0, {0.0, 0.25, 0.5, 1.0});
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*(*q)[0], -1.7e308);
  EXPECT_DOUBLE_EQ(*(*q)[1], -0.85e308);
  EXPECT_EQ(*(*q)[2], 0.0);
  EXPECT_EQ(*(*q)[3], 1.7e308);
}

// Regression: the refinement over equal-width value ranges took one pass per ~10 binary
// orders of magnitude on values spread over the doubles' exponents (hundreds of column reads),
// and gathered a whole column into memory when its range was subnormal. Now: 9 reads of the
// column whatever the data, and working memory charged to the budget and bounded.
TEST(MrTest, QuantilePassesAndMemoryAreBoundedWhateverTheData) {
  std::mt19937_64 rng(11);
  std::vector<std::vector<double>> sets(4);
  for (int i = 0; i < 200000; i++) {
    // Spread over every exponent, both signs.
    const int e = static_cast<int>(rng() % 2098) - 1074;
    sets[0].push_back(std::ldexp(rng() % 2 == 0 ? 1.0 : -1.0, e));
    // Subnormal: multiples of the least double.
    sets[1].push_back(static_cast<double>(rng() % 100000) * 4.9406564584124654e-324);
    // A tiny range: a few ulps above 1, with infinities and NA.
    const uint64_t r = rng() % 1000;
    sets[2].push_back(r == 0   ? kInf
                      : r == 1 ? -kInf
                      : r == 2 ? frame::kNA
                               : 1.0 + static_cast<double>(r) * 1e-16);
    // Two values far apart.
    sets[3].push_back(r % 2 == 0 ? -1e300 : 1e-300);
  }
  const std::vector<double> ps = {0, 0.001, 0.25, 0.5, 0.7, 0.999, 1};
  for (size_t d = 0; d < sets.size(); d++) {
    SCOPED_TRACE(::testing::Message() << "set " << d);
    const Frame f = OneColumn(sets[d]);
    ASSERT_GT(f.chunk_count(), 4u);
    std::vector<double> vals;
    for (double v : sets[d]) {
      if (!std::isnan(v)) vals.push_back(v);
    }
    TaskStats stats;
    TestBudget budget(64 << 20);
    Result<std::vector<std::optional<double>>> q =
        Quantiles(f, 0, ps, {.threads = 2, .memory = &budget, .stats = &stats});
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    for (size_t i = 0; i < ps.size(); i++) {
      const double want = Type7(vals, ps[i]);
      EXPECT_TRUE(*(*q)[i] == want || (std::isnan(want) && std::isnan(*(*q)[i])))
          << ps[i] << ": " << *(*q)[i] << " != " << want;
    }
    EXPECT_LE(stats.chunks_mapped.load(), 9 * f.chunk_count());
    EXPECT_GT(budget.peak(), 0u);
    EXPECT_LE(budget.peak(), 4u << 20);
    EXPECT_EQ(budget.now(), 0u);
  }
  TestBudget tight(1024);
  EXPECT_EQ(Quantiles(OneColumn(sets[0]), 0, ps, {.threads = 2, .memory = &tight}).status().code(),
            StatusCode::kResourceExhausted);
}

// DuckDB's answers (quantile_cont) on columns with infinities.
TEST(MrTest, QuantilesWithInfinitiesFollowDuckDB) {
  auto q = [](const std::vector<double>& vals, double p) {
    return *(*Quantiles(OneColumn(vals), 0, {p}))[0];
  };
  EXPECT_EQ(q({-kInf, 1, 2, 3}, 0.1), -kInf);
  EXPECT_EQ(q({-kInf, 1, 2, 3}, 0.5), 1.5);
  EXPECT_EQ(q({-kInf, 1, 2, 3}, 0.75), 2.25);
  EXPECT_EQ(q({1, 2, 3, kInf}, 0.5), 2.5);
  EXPECT_EQ(q({1, 2, 3, kInf}, 0.9), kInf);
  EXPECT_TRUE(std::isnan(q({-kInf, kInf}, 0.5)));
}

// An accumulator counting how many are alive (moved-from ones are not).
std::atomic<int> g_live{0}, g_peak{0};
struct Tracked {
  bool live = false;
  Tracked() = default;
  explicit Tracked(int) : live(true) {
    const int now = ++g_live;
    int peak = g_peak.load();
    while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
    }
  }
  Tracked(Tracked&& o) noexcept : live(o.live) { o.live = false; }
  Tracked& operator=(Tracked&& o) noexcept {
    if (live) --g_live;
    live = o.live;
    o.live = false;
    return *this;
  }
  ~Tracked() {
    if (live) --g_live;
  }
};

// Regression: while the first chunk was slow, the other workers mapped every later chunk and
// their accumulators all waited to be reduced (a group-by's tables, one per chunk). Now a
// worker waits once it is 2 x workers chunks ahead.
TEST(MrTest, MapReduceHoldsFewAccumulatorsWhileAChunkIsSlow) {
  std::atomic<int> mapped{0};
  {
    Result<Tracked> r = MapReduce<Tracked>(
        200,
        [&](size_t k) {
          if (k == 0) {
            // Waits for the others to race ahead: 100 maps unless they are held back (then the
            // wait ends after 0.3 s; the test asserts what was alive, not how long).
            for (int i = 0; i < 300 && mapped.load() < 100; i++) {
              std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
          }
          mapped++;
          return Tracked(1);
        },
        [](Tracked&, Tracked&&) {}, {.threads = 2});
    ASSERT_TRUE(r.ok());
    EXPECT_LE(g_peak.load(), 3 * 2 + 2);
  }
  EXPECT_EQ(g_live.load(), 0);
}

// Regression: the bound on groups counted aggregates only, so many key columns grew a table
// past it, and nothing charged the tables. Now each group's bytes count its keys, every table
// is charged to the budget as it grows (and given back), and a refusal fails the task.
TEST(MrTest, GroupByChargesItsTablesKeysIncluded) {
  std::vector<frame::ColumnSpec> specs;
  for (int c = 0; c < 40; c++)
    specs.push_back({.name = "k" + std::to_string(c), .type = ColumnType::kInteger});
  auto b = *frame::FrameBuilder::Make(specs, {.target_chunk_bytes = 1 << 16});
  const int rows = 20000;
  for (int r = 0; r < rows; r++) {
    for (size_t c = 0; c < specs.size(); c++)
      ASSERT_TRUE(b.AddNumber(c, static_cast<double>(r * 41 + static_cast<int>(c))).ok());
    ASSERT_TRUE(b.EndRow().ok());
  }
  const Frame f = *b.Finish();
  std::vector<size_t> keys(specs.size());
  for (size_t c = 0; c < keys.size(); c++) keys[c] = c;
  TestBudget budget(1 << 30);
  Result<Frame> g =
      GroupBy(f, keys, {{.fn = AggFn::kCount, .col = 0}}, {.threads = 2, .memory = &budget});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->rows(), static_cast<uint64_t>(rows));
  // At least the key values of every group (40 x 8 bytes, twice: the index and the keys).
  EXPECT_GE(budget.peak(), uint64_t{rows} * 40 * 16);
  EXPECT_EQ(budget.now(), 0u);
  TestBudget tight(1 << 20);
  EXPECT_EQ(GroupBy(f, keys, {{.fn = AggFn::kCount, .col = 0}}, {.threads = 2, .memory = &tight})
                .status()
                .code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(tight.now(), 0u);
}

// Regression: a group-by's merge did not poll the cancel flag, so a task cancelled after its
// last chunk's map still merged every group of that chunk (with their distinct sketches). The
// flag is set here while the last chunk is mapped, on the task's only thread (the budget's
// hook), so the next poll is the merge's: it merges none of that chunk's groups.
TEST(MrTest, GroupByCancelledDuringItsMergeStopsThere) {
  auto b = *frame::FrameBuilder::Make({{.name = "k", .type = ColumnType::kInteger}},
                                      {.target_chunk_bytes = 1 << 16});
  for (int r = 0; r < 60000; r++) {
    ASSERT_TRUE(b.AddNumber(0, static_cast<double>(r)).ok());
    ASSERT_TRUE(b.EndRow().ok());
  }
  const Frame f = *b.Finish();
  ASSERT_GE(f.chunk_count(), 2u);
  std::atomic<bool> cancel{false};
  TaskStats stats;
  // Sets the flag at the first charge of the last chunk's map, after the map phase's last poll.
  class CancellingBudget : public TestBudget {
   public:
    CancellingBudget(std::atomic<bool>* cancel, TaskStats* stats, uint64_t chunks)
        : TestBudget(uint64_t{1} << 32), cancel_(cancel), stats_(stats), chunks_(chunks) {}
    Status Reserve(uint64_t bytes) override {
      if (stats_->chunks_mapped.load() == chunks_) cancel_->store(true);
      return TestBudget::Reserve(bytes);
    }

   private:
    std::atomic<bool>* cancel_;
    TaskStats* stats_;
    const uint64_t chunks_;
  } budget(&cancel, &stats, f.chunk_count());
  const std::vector<Aggregate> aggs = {{.fn = AggFn::kCount, .col = 0},
                                       {.fn = AggFn::kDistinct, .col = 0}};
  Result<Frame> g =
      GroupBy(f, {0}, aggs, {.threads = 1, .cancel = &cancel, .memory = &budget, .stats = &stats});
  EXPECT_TRUE(cancel.load());
  EXPECT_EQ(stats.chunks_mapped.load(), f.chunk_count());  // every map ran: the merge stopped it
  EXPECT_EQ(g.status().code(), StatusCode::kCancelled) << g.status().ToString();
  EXPECT_EQ(budget.now(), 0u);
  // Not cancelled, the same task completes, and merges every group of chunks 1 to n - 1; the
  // cancelled one merged none of the last chunk's (a key a row: each chunk has its own groups).
  TestBudget plain(uint64_t{1} << 32);
  TaskStats all_stats;
  Result<Frame> all = GroupBy(f, {0}, aggs, {.threads = 1, .memory = &plain, .stats = &all_stats});
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->rows(), 60000u);
  const uint64_t last_rows = f.vec(0).chunk(f.chunk_count() - 1).rows();
  EXPECT_EQ(all_stats.groups_merged.load(), 60000u - f.vec(0).chunk(0).rows());
  EXPECT_EQ(stats.groups_merged.load(), all_stats.groups_merged.load() - last_rows);
}

// A budget that checks, at every change of the charge, that the heap held beyond `base` stays
// under what is charged: the charge comes before the bytes it covers.
class HeapCheckingBudget : public MemoryBudget {
 public:
  explicit HeapCheckingBudget(int64_t base) : base_(base) {}
  Status Reserve(uint64_t bytes) override {
    Check();
    charged_ += static_cast<int64_t>(bytes);
    return Status::OK();
  }
  void Release(uint64_t bytes) override {
    Check();
    charged_ -= static_cast<int64_t>(bytes);
  }
  void Check() {
    const int64_t held = g_heap_bytes.load() - base_;
    worst_ = std::max(worst_, held - charged_);
  }
  int64_t worst() const { return worst_; }  // the most held beyond the charge

 private:
  const int64_t base_;
  int64_t charged_ = 0;
  int64_t worst_ = 0;
};

// Regression: a group's estimate missed the hash table's nodes and buckets, the allocator's
// rounding and the vectors' spare capacity, so a group-by held about twice what it charged.
TEST(MrTest, GroupByChargesWhatItsTablesReallyHold) {
  for (size_t nkeys : {1, 4}) {
    std::vector<frame::ColumnSpec> specs;
    for (size_t c = 0; c < nkeys; c++)
      specs.push_back({.name = "k" + std::to_string(c), .type = ColumnType::kInteger});
    specs.push_back({.name = "x", .type = ColumnType::kReal});
    auto b = *frame::FrameBuilder::Make(specs);
    const int rows = 300000;
    for (int r = 0; r < rows; r++) {
      for (size_t c = 0; c < nkeys; c++)
        ASSERT_TRUE(b.AddNumber(c, static_cast<double>(r * 7 + static_cast<int>(c))).ok());
      ASSERT_TRUE(b.AddNumber(nkeys, r * 0.5).ok());
      ASSERT_TRUE(b.EndRow().ok());
    }
    const Frame f = *b.Finish();
    std::vector<size_t> keys(nkeys);
    for (size_t c = 0; c < nkeys; c++) keys[c] = c;
    HeapCheckingBudget budget(g_heap_bytes.load());
    Result<Frame> g = GroupBy(f, keys,
                              {{.fn = AggFn::kCount, .col = 0},
                               {.fn = AggFn::kMean, .col = nkeys},
                               {.fn = AggFn::kSd, .col = nkeys},
                               {.fn = AggFn::kDistinct, .col = nkeys}},
                              {.threads = 1, .memory = &budget});
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    EXPECT_EQ(g->rows(), static_cast<uint64_t>(rows));
    // Slack: what a task holds outside its tables (a chunk's scratch, small vectors).
    EXPECT_LE(budget.worst(), int64_t{1} << 20) << nkeys << " keys";
  }
}

// Infinities, as DuckDB treats them: counted, min and max; avg +inf, -inf or NaN with both;
// sd NaN; the histogram's bins span the finite values, -inf in the first, +inf in the last.
TEST(MrTest, SummaryWithInfinities) {
  Result<Summary> s = Summarize(OneColumn({-kInf, 1, 2, 3, kInf, kInf, frame::kNA}), 0, 2);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->moments.count, 6u);
  EXPECT_EQ(s->moments.na, 1u);
  EXPECT_EQ(s->moments.min, -kInf);
  EXPECT_EQ(s->moments.max, kInf);
  EXPECT_TRUE(std::isnan(s->moments.Mean()));
  EXPECT_TRUE(std::isnan(s->moments.sd()));
  EXPECT_EQ(s->histogram, (std::vector<uint64_t>{2, 4}));  // -inf 1 | 2 3 inf inf
  EXPECT_EQ(s->bin_starts, (std::vector<double>{1, 2}));
  s = Summarize(OneColumn({1, 2, 3, kInf}), 0, 3);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->moments.Mean(), kInf);
  EXPECT_EQ(s->histogram, (std::vector<uint64_t>{1, 1, 2}));
  s = Summarize(OneColumn({-kInf, 5, 5}), 0, 3);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->moments.Mean(), -kInf);
  EXPECT_EQ(s->histogram, (std::vector<uint64_t>{3, 0, 0}));
  s = Summarize(OneColumn({1, 2, 4}), 0, 2);  // finite data as before
  ASSERT_TRUE(s.ok());
  EXPECT_NEAR(s->moments.Mean(), 7.0 / 3, 1e-12);
  EXPECT_NEAR(s->moments.sd(), std::sqrt(7.0 / 3), 1e-12);
}

// Distinct per group through a HyperLogLog each: exact while a sketch is explicit (a few
// hundred values), within a few percent past it; numbers, categoricals and strings; NA not
// counted; the same whatever the threads (sketches merge as sets).
TEST(MrTest, GroupByDistinctCountsEachGroupsValues) {
  auto b = *frame::FrameBuilder::Make({{.name = "g", .type = ColumnType::kInteger},
                                       {.name = "x", .type = ColumnType::kReal},
                                       {.name = "c", .type = ColumnType::kCategorical},
                                       {.name = "s", .type = ColumnType::kString}},
                                      {.target_chunk_bytes = 1 << 14});
  // Group 0: 50 distinct x; group 1: 20,000 distinct x; group 2: x always NA.
  std::map<int, std::set<double>> xs;
  std::map<int, std::set<std::string>> cs, ss;
  std::mt19937_64 rng(7);
  for (int r = 0; r < 60000; r++) {
    const int g = r % 3;
    ASSERT_TRUE(b.AddNumber(0, g).ok());
    double x = frame::kNA;
    if (g == 0) x = static_cast<double>(rng() % 50) * 0.5;
    if (g == 1) x = static_cast<double>(r / 3 % 20000);
    ASSERT_TRUE((std::isnan(x) ? b.AddNA(1) : b.AddNumber(1, x)).ok());
    if (!std::isnan(x)) xs[g].insert(x);
    const std::string c = "level" + std::to_string(rng() % (g == 1 ? 100 : 7));
    ASSERT_TRUE(b.AddString(2, c).ok());
    cs[g].insert(c);
    const std::string str = "s" + std::to_string(rng() % (g == 2 ? 30000 : 40));
    ASSERT_TRUE(b.AddString(3, str).ok());
    ss[g].insert(str);
    ASSERT_TRUE(b.EndRow().ok());
  }
  const Frame f = *b.Finish();
  ASSERT_GT(f.chunk_count(), 4u);
  std::string first;
  for (uint32_t threads : {1u, 3u}) {
    Result<Frame> g = GroupBy(f, {0},
                              {{.fn = AggFn::kDistinct, .col = 1},
                               {.fn = AggFn::kDistinct, .col = 2},
                               {.fn = AggFn::kDistinct, .col = 3},
                               {.fn = AggFn::kCount, .col = 0}},
                              {.threads = threads});
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    ASSERT_EQ(g->rows(), 3u);
    EXPECT_EQ(g->name(1), "distinct_x");
    EXPECT_EQ(g->vec(1).type(), ColumnType::kInteger);
    auto near = [](double got, size_t want) {
      return want < 200 ? got == static_cast<double>(want)
                        : std::fabs(got - static_cast<double>(want)) <= 0.05 * want;
    };
    for (int grp = 0; grp < 3; grp++) {
      EXPECT_TRUE(near(g->vec(1).At(grp), xs[grp].size())) << grp << " " << g->vec(1).At(grp);
      EXPECT_TRUE(near(g->vec(2).At(grp), cs[grp].size())) << grp << " " << g->vec(2).At(grp);
      EXPECT_TRUE(near(g->vec(3).At(grp), ss[grp].size())) << grp << " " << g->vec(3).At(grp);
    }
    EXPECT_EQ(g->vec(1).At(2), 0.0);  // only NA: no distinct value
    std::string dump;
    for (int grp = 0; grp < 3; grp++) {
      for (size_t c = 1; c <= 3; c++) dump += std::to_string(g->vec(c).At(grp)) + " ";
    }
    if (threads == 1) first = dump;
    EXPECT_EQ(dump, first) << threads << " threads";
  }
}

// Aggregates that share a pass (sum and mean, min and max of one column) share it only for the
// same column: each result equals the aggregate computed alone.
TEST(MrTest, GroupByAggregatesOfOtherColumnsDoNotShareAPass) {
  const Data d = Random(9, 30000, 50, 0.2);
  const std::vector<Aggregate> aggs = {
      {.fn = AggFn::kSum, .col = 1}, {.fn = AggFn::kMean, .col = 0}, {.fn = AggFn::kMean, .col = 1},
      {.fn = AggFn::kMin, .col = 0}, {.fn = AggFn::kMax, .col = 1},  {.fn = AggFn::kMin, .col = 1},
      {.fn = AggFn::kSd, .col = 0},  {.fn = AggFn::kSd, .col = 1},   {.fn = AggFn::kSum, .col = 0}};
  Result<Frame> all = GroupBy(d.frame, {2}, aggs, {.threads = 2});
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  for (size_t a = 0; a < aggs.size(); a++) {
    SCOPED_TRACE(::testing::Message() << "aggregate " << a);
    Result<Frame> one = GroupBy(d.frame, {2}, {aggs[a]}, {.threads = 2});
    ASSERT_TRUE(one.ok()) << one.status().ToString();
    ASSERT_EQ(one->rows(), all->rows());
    for (uint64_t r = 0; r < all->rows(); r++) {
      EXPECT_EQ(one->vec(1).IsNA(r), all->vec(1 + a).IsNA(r)) << "row " << r;
      if (!one->vec(1).IsNA(r)) {
        EXPECT_EQ(one->vec(1).At(r), all->vec(1 + a).At(r)) << "row " << r;
      }
    }
  }
}

TEST(MrTest, GroupByMatchesASingleThreadedPass) {
  for (double na : {0.1, 0.9}) {
    SCOPED_TRACE(::testing::Message() << "na " << na);
    const Data d = Random(8, 40000, 100, na);
    Result<Frame> g = GroupBy(d.frame, {0},
                              {{.fn = AggFn::kCount, .col = 0},
                               {.fn = AggFn::kSum, .col = 1},
                               {.fn = AggFn::kMean, .col = 1},
                               {.fn = AggFn::kMin, .col = 1},
                               {.fn = AggFn::kMax, .col = 1},
                               {.fn = AggFn::kSd, .col = 1}},
                              {.threads = 3});
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    struct Want {
      uint64_t rows = 0, n = 0;
      double sum = 0, mn = kInf, mx = -kInf;
      std::vector<double> v;
    };
    std::map<double, Want> want;  // NA keyed as +inf: sorts last, as groups do
    for (size_t r = 0; r < d.key.size(); r++) {
      Want& w = want[std::isnan(d.key[r]) ? kInf : d.key[r]];
      w.rows++;
      if (std::isnan(d.x[r])) continue;
      w.n++;
      w.sum += d.x[r];
      w.mn = std::min(w.mn, d.x[r]);
      w.mx = std::max(w.mx, d.x[r]);
      w.v.push_back(d.x[r]);
    }
    ASSERT_EQ(g->rows(), want.size());
    ASSERT_EQ(g->columns(), 7u);
    EXPECT_EQ(g->name(1), "count");
    EXPECT_EQ(g->name(2), "sum_x");
    EXPECT_EQ(g->name(6), "sd_x");
    uint64_t row = 0;
    for (const auto& [key, w] : want) {
      if (std::isinf(key)) {
        EXPECT_TRUE(g->vec(0).IsNA(row));
      } else {
        EXPECT_EQ(g->vec(0).At(row), key);
      }
      EXPECT_EQ(g->vec(1).At(row), static_cast<double>(w.rows));
      if (w.n == 0) {
        EXPECT_TRUE(g->vec(2).IsNA(row));
      } else {
        const double mean = w.sum / static_cast<double>(w.n);
        EXPECT_NEAR(g->vec(2).At(row), w.sum, 1e-9 * std::max(1.0, std::fabs(w.sum)));
        EXPECT_NEAR(g->vec(3).At(row), mean, 1e-9 * std::max(1.0, std::fabs(mean)));
        EXPECT_EQ(g->vec(4).At(row), w.mn);
        EXPECT_EQ(g->vec(5).At(row), w.mx);
        if (w.n >= 2) {
          double ss = 0;
          for (double v : w.v) ss += (v - mean) * (v - mean);
          EXPECT_NEAR(g->vec(6).At(row), std::sqrt(ss / static_cast<double>(w.n - 1)),
                      1e-9 * std::max(1.0, std::sqrt(ss)));
        }
      }
      row++;
    }
  }
}

// Groups times aggregates is bounded, so many aggregates cannot multiply a big table.
TEST(MrTest, GroupByRefusesTooManyGroupCells) {
  auto b = *frame::FrameBuilder::Make({{.name = "k", .type = ColumnType::kInteger}},
                                      {.target_chunk_bytes = 4096});
  for (int i = 0; i < 5000; i++) {
    ASSERT_TRUE(b.AddNumber(0, i).ok());
    ASSERT_TRUE(b.EndRow().ok());
  }
  Frame f = *b.Finish();
  std::vector<Aggregate> many(1000, {.fn = AggFn::kSum, .col = 0});
  EXPECT_EQ(GroupBy(f, {0}, many, {.threads = 2}).status().code(), StatusCode::kResourceExhausted);
  Result<Frame> few = GroupBy(f, {0}, {{.fn = AggFn::kSum, .col = 0}}, {.threads = 2});
  ASSERT_TRUE(few.ok());
  EXPECT_EQ(few->rows(), 5000u);
  EXPECT_EQ(few->vec(1).At(4999), 4999);
}

TEST(MrTest, GroupByACategoricalKeepsItsLevels) {
  const Data d = Random(9, 5000, 4, 0.0);
  Result<Frame> g = GroupBy(d.frame, {2, 0}, {{.fn = AggFn::kCount, .col = 0}});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->vec(0).type(), ColumnType::kCategorical);
  uint64_t total = 0;
  for (uint64_t r = 0; r < g->rows(); r++) total += static_cast<uint64_t>(g->vec(2).At(r));
  EXPECT_EQ(total, 5000u);
  EXPECT_EQ(g->vec(0).AtString(0), g->vec(0).domain()[0]);
  EXPECT_EQ(GroupBy(d.frame, {}, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(GroupBy(d.frame, {0, 0}, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(GroupBy(d.frame, {0}, {{.fn = AggFn::kSum, .col = 2}}).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace floe::mr
