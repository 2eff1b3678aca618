// The built-in analytics as map/reduce tasks (mr.h): summary, exact quantiles, group-by.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "mr/mr.h"
#include "sketch/sketch.h"

namespace floe::mr {

constexpr double kInf = std::numeric_limits<double>::infinity();

namespace {

using frame::ChunkView;
using frame::ColumnType;
using frame::Frame;

bool Numeric(ColumnType t) { return t != ColumnType::kString; }

// A value's identity for hashing and grouping: every NaN is the one NA, and -0 is 0.
uint64_t Canonical(double v) {
  if (std::isnan(v)) return std::bit_cast<uint64_t>(frame::kNA);
  if (v == 0) return 0;
  return std::bit_cast<uint64_t>(v);
}

// Where v falls among `bins` equal bins over [lo, hi] (hi > lo, both finite). Halving first
// keeps hi - lo finite for any pair of doubles; the map is monotone in v, so every value of a
// bin lies between the least and the greatest value that fell in it.
struct Binner {
  double lo_half, width_half;
  uint32_t bins;
  Binner(double lo, double hi, uint32_t n)
      : lo_half(lo * 0.5), width_half(hi * 0.5 - lo * 0.5), bins(n) {}
  bool usable() const { return width_half > 0 && std::isfinite(width_half); }
  uint32_t Bin(double v) const {
    const double f = (v * 0.5 - lo_half) / width_half * bins;
    if (!(f > 0)) return 0;
    return f >= bins ? bins - 1 : static_cast<uint32_t>(f);
  }
};

}  // namespace

SumCount ChunkSum(const ChunkView& chunk) {
  SumCount out;
  if (const char* p = chunk.raw_doubles()) {
    // Most chunks hold no NA: sum every row with four independent sums (so the adds are not one
    // chain of latencies), and only if that gives NaN -- an NA, or +inf meeting -inf -- sum
    // again skipping the NAs. The test for NA per row would cost more than the add.
    const uint32_t n = chunk.rows();
    double s[4] = {0, 0, 0, 0};
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) {
      for (uint32_t j = 0; j < 4; j++) {
        double x;
        std::memcpy(&x, p + 8 * (size_t{i} + j), 8);
        s[j] += x;
      }
    }
    for (; i < n; i++) {
      double x;
      std::memcpy(&x, p + 8 * size_t{i}, 8);
      s[0] += x;
    }
    out.sum = (s[0] + s[1]) + (s[2] + s[3]);
    out.count = n;
    if (!std::isnan(out.sum)) return out;
    out = {};
  }
  chunk.ForEach([&](uint32_t, double v) {
    if (!std::isnan(v)) {
      out.sum += v;
      out.count++;
    }
  });
  return out;
}

double Moments::sd() const {
  if (count < 2 || pos_inf + neg_inf > 0) return frame::kNA;
  return std::sqrt(m2 / static_cast<double>(count - 1));
}

double Moments::Mean() const {
  if (pos_inf > 0 && neg_inf > 0) return std::numeric_limits<double>::quiet_NaN();
  if (pos_inf > 0) return kInf;
  if (neg_inf > 0) return -kInf;
  return mean;
}

void Moments::Add(double v) {
  if (std::isnan(v)) {
    na++;
    return;
  }
  if (count == 0) {
    min = max = v;
  } else {
    min = std::min(min, v);
    max = std::max(max, v);
  }
  count++;
  if (std::isinf(v)) {
    (v > 0 ? pos_inf : neg_inf)++;
    return;
  }
  const double n = static_cast<double>(finite());
  const double d = v - mean;
  if (std::isinf(d)) {
    // Finite values of opposite signs past half the range: their difference overflows, so the
    // mean is updated by parts, and the squared deviations are past any double (sd inf).
    mean += v / n - mean / n;
    m2 = kInf;
    return;
  }
  mean += d / n;
  m2 += d * (v - mean);
}

void Moments::Merge(const Moments& o) {
  na += o.na;
  if (o.count == 0) return;
  if (count == 0) {
    const uint64_t keep_na = na;
    *this = o;
    na = keep_na;
    return;
  }
  if (o.finite() > 0) {
    if (finite() == 0) {
      mean = o.mean;
      m2 = o.m2;
    } else {
      const double n = static_cast<double>(finite() + o.finite());
      const double d = o.mean - mean;
      if (std::isinf(d)) {  // as in Add: by parts, and sd past any double
        mean = mean * (static_cast<double>(finite()) / n) +
               o.mean * (static_cast<double>(o.finite()) / n);
        m2 = kInf;
      } else {
        mean += d * static_cast<double>(o.finite()) / n;
        m2 += o.m2 + d * d * static_cast<double>(finite()) * static_cast<double>(o.finite()) / n;
      }
    }
  }
  min = std::min(min, o.min);
  max = std::max(max, o.max);
  count += o.count;
  pos_inf += o.pos_inf;
  neg_inf += o.neg_inf;
}

void SummaryMoments::Merge(const SummaryMoments& o) {
  m.Merge(o.m);
  (void)hll.Merge(o.hll);  // same parameters (SummaryHllParams): cannot fail
  lo = std::min(lo, o.lo);
  hi = std::max(hi, o.hi);
}

sketch::HllParams SummaryHllParams() {
  sketch::HllParams params;
  params.log2m = 14;
  return params;
}

Result<SummaryMoments> MomentsPass(const Frame& frame, size_t col, const TaskOptions& options) {
  const frame::Vec& vec = frame.vec(col);
  if (!Numeric(vec.type())) return Status::InvalidArgument("a string column has no summary");
  FLOE_ASSIGN_OR_RETURN(sketch::HyperLogLog empty, sketch::HyperLogLog::Create(SummaryHllParams()));
  FLOE_ASSIGN_OR_RETURN(
      SummaryMoments acc,
      MapReduce<SummaryMoments>(
          vec.chunk_count(),
          [&](size_t k) {
            SummaryMoments a{.m = {}, .hll = empty};
            vec.chunk(k).ForEach([&](uint32_t, double v) {
              a.m.Add(v);
              if (!std::isnan(v)) {
                a.hll.AddHash(sketch::HyperLogLog::HashInt64(static_cast<int64_t>(Canonical(v))));
              }
              if (std::isfinite(v)) {
                a.lo = std::min(a.lo, v);
                a.hi = std::max(a.hi, v);
              }
            });
            return a;
          },
          [](SummaryMoments& a, SummaryMoments&& b) { a.Merge(b); }, options));
  // An empty frame gives a default accumulator, whose sketch has no parameters yet.
  if (vec.chunk_count() == 0) acc.hll = std::move(empty);
  return acc;
}

Result<std::vector<uint64_t>> HistogramPass(const Frame& frame, size_t col, double lo, double hi,
                                            uint32_t bins, const TaskOptions& options) {
  const frame::Vec& vec = frame.vec(col);
  if (!Numeric(vec.type())) return Status::InvalidArgument("a string column has no summary");
  if (bins < 1 || bins > kMaxBins) return Status::InvalidArgument("bins out of range");
  if (!(lo <= hi) || !std::isfinite(lo) || !std::isfinite(hi)) {
    return Status::InvalidArgument("a histogram's range must be finite");
  }
  const Binner binner(lo, hi, bins);
  const bool one_bin = !binner.usable();
  using Hist = std::vector<uint64_t>;
  FLOE_ASSIGN_OR_RETURN(Hist hist, MapReduce<Hist>(
                                       vec.chunk_count(),
                                       [&](size_t k) {
                                         Hist h(bins, 0);
                                         vec.chunk(k).ForEach([&](uint32_t, double v) {
                                           if (std::isnan(v)) return;
                                           if (one_bin) {
                                             h[v == kInf ? bins - 1 : 0]++;
                                           } else {
                                             h[binner.Bin(v)]++;
                                           }
                                         });
                                         return h;
                                       },
                                       [](Hist& a, Hist&& b) {
                                         for (size_t i = 0; i < a.size(); i++) a[i] += b[i];
                                       },
                                       options));
  if (hist.empty()) hist.assign(bins, 0);  // no chunk
  return hist;
}

Summary FinishSummary(const SummaryMoments& first, std::vector<uint64_t> hist, uint32_t bins) {
  Summary s;
  s.moments = first.m;
  s.cardinality = static_cast<uint64_t>(std::llround(first.hll.Cardinality(true)));
  // The bins span the finite values; -inf counts in the first bin, +inf in the last. No finite
  // value: no histogram.
  if (!(first.lo <= first.hi)) return s;
  s.histogram = std::move(hist);
  const double width = (first.hi - first.lo) / bins;
  // Halved like the Binner's when the range is wider than the largest double.
  const double half_width = (first.hi * 0.5 - first.lo * 0.5) / bins;
  for (uint32_t i = 0; i < bins; i++) {
    // (Added half by half: 2 * half_width * i itself may pass the largest double.)
    s.bin_starts.push_back(std::isfinite(width) ? first.lo + width * i
                                                : (first.lo + half_width * i) + half_width * i);
  }
  return s;
}

Result<Summary> Summarize(const Frame& frame, size_t col, uint32_t bins,
                          const TaskOptions& options) {
  const frame::Vec& vec = frame.vec(col);
  if (!Numeric(vec.type())) return Status::InvalidArgument("a string column has no summary");
  if (bins < 1 || bins > kMaxBins) return Status::InvalidArgument("bins out of range");
  FLOE_ASSIGN_OR_RETURN(SummaryMoments first, MomentsPass(frame, col, options));
  std::vector<uint64_t> hist;
  if (first.lo <= first.hi) {
    FLOE_ASSIGN_OR_RETURN(hist, HistogramPass(frame, col, first.lo, first.hi, bins, options));
  }
  return FinishSummary(first, std::move(hist), bins);
}

// How exact quantiles are found
// -----------------------------
// As H2O does, by refining a histogram instead of sorting -- but over the order-preserving
// 64-bit image of each double (Image: unsigned order of images is the order of the values,
// -inf lowest, +inf highest), not over equal-width ranges of values, so no data (subnormal,
// tiny or huge ranges, infinities) can make it take more passes or gather values. Pass 1 counts
// the non-NA values. Each of the next 8 passes histograms the next 8 bits of the images whose
// leading bits equal a wanted rank's prefix found so far (one 256-bin histogram per distinct
// prefix, all ranks of the call refined together), and the bin holding each rank extends its
// prefix. After 8 passes a prefix is the whole image of the rank's value. So a call costs 9
// reads of the column whatever the data and the probabilities, and its working memory is
// 256 counters per wanted rank per accumulator held (MapReduce holds ~3 a worker), charged to
// options.memory before the passes start.
namespace {

constexpr int kRadixBits = 8;
constexpr uint32_t kRadixBins = 1u << kRadixBits;
constexpr int kRadixPasses = 64 / kRadixBits;

// -0 is 0 first, so that the two zeros have one image.
uint64_t Image(double v) {
  if (v == 0) v = 0;
  const auto b = std::bit_cast<uint64_t>(v);
  return (b >> 63) != 0 ? ~b : b | (uint64_t{1} << 63);
}

double FromImage(uint64_t u) {
  return std::bit_cast<double>((u >> 63) != 0 ? u & ~(uint64_t{1} << 63) : ~u);
}

// Linear interpolation between the values of two adjacent ranks, a <= b, 0 < frac < 1, as
// DuckDB's quantile_cont does with infinities: -inf with anything finite is -inf, anything
// finite with +inf is +inf, -inf with +inf is NaN (a + (b - a) * frac gives NaN for the first).
double Interpolate(double a, double b, double frac) {
  if (a == b) return a;
  if (a == -kInf) return b == kInf ? std::numeric_limits<double>::quiet_NaN() : -kInf;
  if (b == kInf) return kInf;
  if (frac == 0) return a;
  const double gap = b - a;
  // Finite ends of opposite signs past half the range: their gap overflows to inf, so weigh
  // each end instead (a result between them, not inf).
  if (std::isinf(gap)) return a * (1 - frac) + b * frac;
  return a + gap * frac;
}

// The values of the given ranks (0-based among the `n` non-NA values, each < n), by the
// refinement above, each pass's histograms from `radix`.
Result<std::vector<double>> ValuesAtRanks(const RadixPassFn& radix,
                                          const std::vector<uint64_t>& ranks) {
  std::vector<uint64_t> prefix(ranks.size(), 0);  // the leading bits found so far
  std::vector<uint64_t> below(ranks.size(), 0);   // values whose image is below the prefix's
  for (int pass = 0; pass < kRadixPasses; pass++) {
    std::vector<uint64_t> wanted = prefix;
    std::sort(wanted.begin(), wanted.end());
    wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
    const size_t cells = wanted.size() * kRadixBins;
    FLOE_ASSIGN_OR_RETURN(std::vector<uint64_t> hist, radix(pass, wanted));
    if (hist.size() != cells) return Status::Internal("quantile refinement lost its rank");
    for (size_t r = 0; r < ranks.size(); r++) {
      const auto at = static_cast<size_t>(
          std::lower_bound(wanted.begin(), wanted.end(), prefix[r]) - wanted.begin());
      uint64_t cum = below[r];
      uint32_t bin = 0;
      for (; bin < kRadixBins; bin++) {
        const uint64_t c = hist[at * kRadixBins + bin];
        if (cum + c > ranks[r]) break;
        cum += c;
      }
      if (bin == kRadixBins) return Status::Internal("quantile refinement lost its rank");
      below[r] = cum;
      prefix[r] = (prefix[r] << kRadixBits) | bin;
    }
  }
  std::vector<double> out;
  out.reserve(ranks.size());
  for (uint64_t p : prefix) out.push_back(FromImage(p));
  return out;
}

}  // namespace

Result<std::vector<uint64_t>> RadixPass(const Frame& frame, size_t col, int pass,
                                        const std::vector<uint64_t>& wanted,
                                        const TaskOptions& options) {
  const frame::Vec& vec = frame.vec(col);
  if (!Numeric(vec.type())) return Status::InvalidArgument("a string column has no quantiles");
  if (pass < 0 || pass >= kRadixPasses || wanted.empty() || wanted.size() > kMaxRadixPrefixes ||
      !std::is_sorted(wanted.begin(), wanted.end())) {
    return Status::InvalidArgument("a quantile pass out of range");
  }
  const int shift = 64 - kRadixBits * (pass + 1);  // of the bits this pass finds
  const size_t cells = wanted.size() * kRadixBins;
  using Hist = std::vector<uint64_t>;
  FLOE_ASSIGN_OR_RETURN(
      Hist hist, MapReduce<Hist>(
                     vec.chunk_count(),
                     [&](size_t k) {
                       Hist h(cells, 0);
                       vec.chunk(k).ForEach([&](uint32_t, double v) {
                         if (std::isnan(v)) return;
                         const uint64_t u = Image(v);
                         const uint64_t high = pass == 0 ? 0 : u >> (shift + kRadixBits);
                         const auto it = std::lower_bound(wanted.begin(), wanted.end(), high);
                         if (it == wanted.end() || *it != high) return;
                         const auto at = static_cast<size_t>(it - wanted.begin());
                         h[at * kRadixBins + ((u >> shift) & (kRadixBins - 1))]++;
                       });
                       return h;
                     },
                     [](Hist& a, Hist&& b) {
                       for (size_t i = 0; i < a.size(); i++) a[i] += b[i];
                     },
                     options));
  if (hist.empty()) hist.assign(cells, 0);  // no chunk
  return hist;
}

Result<std::vector<std::optional<double>>> Quantiles(const Frame& frame, size_t col,
                                                     const std::vector<double>& probabilities,
                                                     const TaskOptions& options) {
  const frame::Vec& vec = frame.vec(col);
  if (!Numeric(vec.type())) return Status::InvalidArgument("a string column has no quantiles");
  if (probabilities.empty() || probabilities.size() > kMaxProbabilities) {
    return Status::InvalidArgument("between 1 and 100 probabilities");
  }
  for (double p : probabilities) {
    if (!(p >= 0 && p <= 1)) return Status::InvalidArgument("a probability must be in [0, 1]");
  }
  FLOE_ASSIGN_OR_RETURN(uint64_t n, MapReduce<uint64_t>(
                                        vec.chunk_count(),
                                        [&](size_t k) {
                                          uint64_t a = 0;
                                          vec.chunk(k).ForEach([&](uint32_t, double v) {
                                            if (!std::isnan(v)) a++;
                                          });
                                          return a;
                                        },
                                        [](uint64_t& a, uint64_t&& b) { a += b; }, options));
  Charge charge(options.memory);
  const uint64_t held = 3 * WorkerCount(options, vec.chunk_count()) + 1;
  return QuantilesByPasses(
      n, probabilities,
      [&](int pass, const std::vector<uint64_t>& wanted) {
        return RadixPass(frame, col, pass, wanted, options);
      },
      [&](size_t ranks) { return charge.Grow(held * ranks * kRadixBins * sizeof(uint64_t)); });
}

Result<std::vector<std::optional<double>>> QuantilesByPasses(
    uint64_t n, const std::vector<double>& probabilities, const RadixPassFn& radix,
    const std::function<Status(size_t ranks)>& reserve) {
  std::vector<std::optional<double>> out;
  if (n == 0) {
    out.assign(probabilities.size(), std::nullopt);
    return out;
  }
  struct Wanted {
    uint64_t lower, upper;
    double frac;
  };
  std::vector<Wanted> wanted;
  std::vector<uint64_t> ranks;  // every rank asked for, found once
  for (double p : probabilities) {
    const double h = static_cast<double>(n - 1) * p;
    const auto lower = std::min<uint64_t>(static_cast<uint64_t>(std::floor(h)), n - 1);
    const uint64_t upper = std::min<uint64_t>(lower + 1, n - 1);
    wanted.push_back({.lower = lower, .upper = upper, .frac = h - static_cast<double>(lower)});
    ranks.push_back(lower);
    ranks.push_back(upper);
  }
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  if (reserve) FLOE_RETURN_IF_ERROR(reserve(ranks.size()));
  FLOE_ASSIGN_OR_RETURN(std::vector<double> values, ValuesAtRanks(radix, ranks));
  auto value_at = [&](uint64_t rank) {
    return values[static_cast<size_t>(std::lower_bound(ranks.begin(), ranks.end(), rank) -
                                      ranks.begin())];
  };
  for (const Wanted& w : wanted) {
    const double a = value_at(w.lower);
    if (w.frac == 0 || w.upper == w.lower) {
      out.push_back(a);
    } else {
      out.push_back(Interpolate(a, value_at(w.upper), w.frac));
    }
  }
  return out;
}

// ---- group-by ----

std::string_view AggFnName(AggFn fn) {
  switch (fn) {
    case AggFn::kCount:
      return "count";
    case AggFn::kSum:
      return "sum";
    case AggFn::kMean:
      return "mean";
    case AggFn::kMin:
      return "min";
    case AggFn::kMax:
      return "max";
    case AggFn::kSd:
      return "sd";
    case AggFn::kDistinct:
      return "distinct";
  }
  return "?";
}

std::optional<AggFn> ParseAggFn(std::string_view name) {
  for (AggFn fn : {AggFn::kCount, AggFn::kSum, AggFn::kMean, AggFn::kMin, AggFn::kMax, AggFn::kSd,
                   AggFn::kDistinct}) {
    const std::string_view n = AggFnName(fn);
    if (n.size() == name.size() && std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
          return a == (b >= 'A' && b <= 'Z' ? static_cast<char>(b - 'A' + 'a') : b);
        })) {
      return fn;
    }
  }
  return std::nullopt;
}

namespace {

struct KeyHash {
  size_t operator()(const std::vector<uint64_t>& key) const {
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (uint64_t x : key) h = (h ^ (x * 0xbf58476d1ce4e5b9ull)) * 0x94d049bb133111ebull;
    return static_cast<size_t>(h ^ (h >> 31));
  }
};

// What one group costs in a Groups table, the key columns included, with the table's vectors
// and index reserved to the groups charged (Groups::Find): its index node (next pointer, key
// vector, id, cached hash) and bucket, the key's heap block twice (the index's and the keys'),
// the keys' vector, its row count, and per aggregate a Moments and a sum. Heap blocks are
// rounded up to 16 bytes, as the allocator's small size classes are.
// A distinct aggregate adds an empty HyperLogLog; what its sketch allocates as values come is
// charged as it grows (Groups::sketch_bytes).
uint64_t GroupBytes(size_t keys, size_t width, size_t distinct) {
  auto block = [](uint64_t n) { return (std::max<uint64_t>(n, 1) + 15) / 16 * 16; };
  const uint64_t node = block(sizeof(void*) + sizeof(std::vector<uint64_t>) + 8 + 8);
  const uint64_t key_heap = block(8 * uint64_t{keys});
  return node + sizeof(void*) + 2 * key_heap + sizeof(std::vector<double>) + sizeof(uint64_t) +
         uint64_t{width} * (sizeof(Moments) + sizeof(double)) +
         uint64_t{distinct} * sizeof(sketch::HyperLogLog);
}

// Per aggregate, its index among the distinct ones (or -1), and how many there are.
struct DistinctSlots {
  std::vector<int> slot;
  size_t count = 0;
  explicit DistinctSlots(const std::vector<Aggregate>& aggs) {
    for (const Aggregate& a : aggs) {
      slot.push_back(a.fn == AggFn::kDistinct ? static_cast<int>(count++) : -1);
    }
  }
};

struct Groups {
  // First, so that they are given back after the tables they cover are freed (members go in
  // reverse order).
  Charge charge;         // the table's bytes, charged before it grows
  Charge sketch_charge;  // covers sketch_bytes, grown in geometric steps
  std::unordered_map<std::vector<uint64_t>, uint32_t, KeyHash> index;
  std::vector<std::vector<double>> keys;  // per group, the key values
  std::vector<uint64_t> rows;             // per group
  std::vector<Moments> moments;           // per group, one per aggregate
  std::vector<double> sums;               // likewise: plain sums, in row order
  // Per group, one per distinct aggregate (`distinct` of them), and the heap they hold.
  std::vector<sketch::HyperLogLog> sketches;
  size_t distinct = 0;
  uint64_t sketch_bytes = 0;
  bool too_many = false;
  uint64_t max_groups = kMaxGroups;
  uint64_t group_bytes = 0;  // GroupBytes of the task
  uint64_t capacity = 0;     // groups the table is reserved (and charged) for
  Status failure;            // the budget refused: the task fails with it

  // The group of `key` (made with `width` aggregates if new); nullopt past max_groups or when
  // the budget refuses the growth (too_many or failure set).
  std::optional<uint32_t> Find(const std::vector<uint64_t>& key, const std::vector<double>& vals,
                               size_t width) {
    if (keys.size() >= max_groups && index.find(key) == index.end()) {
      too_many = true;
      return std::nullopt;
    }
    const uint64_t need = keys.size() + 1;
    if (need > capacity && index.find(key) == index.end()) {
      // Geometric steps, so the budget is asked O(log groups) times. The vectors and the index
      // are reserved to the step, so they hold no spare capacity beyond what is charged; while
      // they move, the old buffers still exist, so the charge covers both for that moment.
      const uint64_t want =
          std::min(std::max({need, 2 * capacity, uint64_t{64 << 10} / group_bytes}),
                   std::max(need, max_groups));
      const uint64_t held = capacity * group_bytes;
      if (Status s = charge.Grow(held + want * group_bytes); !s.ok()) {
        failure = std::move(s);
        return std::nullopt;
      }
      keys.reserve(want);
      rows.reserve(want);
      moments.reserve(want * width);
      sums.reserve(want * width);
      sketches.reserve(want * distinct);
      index.reserve(want);
      charge.ShrinkTo(want * group_bytes);
      capacity = want;
    }
    auto [it, fresh] = index.try_emplace(key, static_cast<uint32_t>(keys.size()));
    if (fresh) {
      keys.push_back(vals);
      rows.push_back(0);
      moments.resize(moments.size() + width);
      sums.resize(sums.size() + width, 0.0);
      sketches.resize(sketches.size() + distinct);
    }
    return it->second;
  }
  // Counts `grew` more heap bytes held by the sketches (just allocated: one sketch's growth at
  // most goes uncharged for a moment) and charges them; false when the budget refuses.
  bool SketchGrew(uint64_t grew) {
    sketch_bytes += grew;
    if (sketch_bytes <= sketch_charge.bytes()) return true;
    const uint64_t step = std::max<uint64_t>(sketch_bytes, 2 * sketch_charge.bytes());
    if (Status s = sketch_charge.Grow(std::max<uint64_t>(step, 64 << 10)); !s.ok()) {
      failure = std::move(s);
      return false;
    }
    return true;
  }
  // Adds `hash` to group g's distinct slot d.
  void AddDistinct(uint32_t g, size_t d, uint64_t hash) {
    sketch::HyperLogLog& h = sketches[g * distinct + d];
    const size_t before = h.MemoryBytes();
    if (h.AddHash(hash) && h.MemoryBytes() > before) SketchGrew(h.MemoryBytes() - before);
  }
  bool stopped() const { return too_many || !failure.ok(); }
};

// Categorical keys with a domain below this size index a table by code instead of hashing.
constexpr size_t kDirectDomain = size_t{1} << 20;

// One chunk's groups: first each row's group (a table by code for one categorical key, else a
// hash of the key values), then each aggregate a column at a time, doing only what its function
// needs (a sum and a count for sum and mean, the extremes for min and max, Welford for sd).
Groups MapGroups(const Frame& frame, const std::vector<size_t>& keys,
                 const std::vector<Aggregate>& aggs, uint64_t max_groups,
                 const TaskOptions& options, size_t k) {
  Groups g;
  g.max_groups = max_groups;
  const DistinctSlots ds(aggs);
  g.distinct = ds.count;
  g.group_bytes = GroupBytes(keys.size(), aggs.size(), ds.count);
  g.charge = Charge(options.memory);
  g.sketch_charge = Charge(options.memory);
  const size_t width = aggs.size();
  const uint32_t rows = frame.vec(keys[0]).chunk(k).rows();
  const frame::Vec& first = frame.vec(keys[0]);
  const bool direct = keys.size() == 1 && first.type() == ColumnType::kCategorical &&
                      first.domain().size() < kDirectDomain;
  // The chunk's scratch (a group per row, the table by code) is charged with the table's first
  // step, which it stays under.
  Charge scratch(options.memory);
  g.failure = scratch.Grow(uint64_t{rows} * sizeof(uint32_t) +
                           (direct ? (first.domain().size() + 1) * sizeof(int64_t) : 0));
  if (!g.failure.ok()) return g;
  std::vector<uint32_t> gid(rows);
  std::vector<uint64_t> key(keys.size());
  std::vector<double> vals(keys.size());
  if (direct) {
    const size_t na_slot = first.domain().size();
    std::vector<int64_t> slot(na_slot + 1, -1);  // group by code; NA last
    first.chunk(k).ForEach([&](uint32_t r, double v) {
      if (g.stopped()) return;
      // Vec::Make checked every code against the domain; NA is its own slot.
      const size_t code = std::isnan(v) ? na_slot : std::min(static_cast<size_t>(v), na_slot);
      int64_t& s = slot[code];
      if (s < 0) {
        vals[0] = std::isnan(v) ? frame::kNA : v;
        key[0] = Canonical(vals[0]);
        std::optional<uint32_t> at = g.Find(key, vals, width);
        if (!at) return;
        s = *at;
      }
      gid[r] = static_cast<uint32_t>(s);
    });
  } else {
    for (uint32_t r = 0; r < rows && !g.stopped(); r++) {
      for (size_t i = 0; i < keys.size(); i++) {
        vals[i] = frame.vec(keys[i]).chunk(k).At(r);
        if (std::isnan(vals[i])) vals[i] = frame::kNA;
        if (vals[i] == 0) vals[i] = 0;  // -0 is 0
        key[i] = Canonical(vals[i]);
      }
      std::optional<uint32_t> at = g.Find(key, vals, width);
      if (!at) break;
      gid[r] = *at;
    }
  }
  if (g.stopped()) return g;
  for (uint32_t r = 0; r < rows; r++) g.rows[gid[r]]++;
  // Aggregates of one column whose state another's pass also gives share that pass: sum and
  // mean keep a count and a sum, min and max a count and the extremes, and sd's pass keeps all
  // of these (Moments::Add, and the plain sum in row order). Each takes its state from `source`:
  // the column's first sd, else its first aggregate of the same kind, else itself.
  auto kind = [](AggFn fn) {
    switch (fn) {
      case AggFn::kSum:
      case AggFn::kMean:
        return 1;
      case AggFn::kMin:
      case AggFn::kMax:
        return 2;
      case AggFn::kSd:
        return 3;
      default:
        return 0;  // count (no pass), distinct (its own sketches)
    }
  };
  std::vector<size_t> source(width);
  for (size_t a = 0; a < width; a++) {
    source[a] = a;
    if (kind(aggs[a].fn) == 0) continue;
    for (size_t b = 0; b < width; b++) {
      if (aggs[b].col == aggs[a].col && aggs[b].fn == AggFn::kSd) {
        source[a] = b;
        break;
      }
    }
    if (source[a] != a && aggs[source[a]].fn == AggFn::kSd) continue;
    for (size_t b = 0; b < a; b++) {
      if (aggs[b].col == aggs[a].col && kind(aggs[b].fn) == kind(aggs[a].fn)) {
        source[a] = b;
        break;
      }
    }
  }
  for (size_t a = 0; a < width; a++) {
    if (source[a] != a) continue;
    const ChunkView& chunk = frame.vec(aggs[a].col).chunk(k);
    auto state = [&](uint32_t r) -> Moments& { return g.moments[gid[r] * width + a]; };
    switch (aggs[a].fn) {
      case AggFn::kCount:
        break;
      case AggFn::kSum:
      case AggFn::kMean:
        chunk.ForEach([&](uint32_t r, double v) {
          Moments& m = state(r);
          if (std::isnan(v)) {
            m.na++;
          } else {
            m.count++;
            g.sums[gid[r] * width + a] += v;
          }
        });
        break;
      case AggFn::kMin:
      case AggFn::kMax:
        chunk.ForEach([&](uint32_t r, double v) {
          Moments& m = state(r);
          if (std::isnan(v)) {
            m.na++;
          } else if (m.count++ == 0) {
            m.min = m.max = v;
          } else {
            m.min = std::min(m.min, v);
            m.max = std::max(m.max, v);
          }
        });
        break;
      case AggFn::kSd:
        chunk.ForEach([&](uint32_t r, double v) {
          state(r).Add(v);
          if (!std::isnan(v)) g.sums[gid[r] * width + a] += v;
        });
        break;
      case AggFn::kDistinct: {
        const size_t d = static_cast<size_t>(ds.slot[a]);
        if (frame.vec(aggs[a].col).type() == ColumnType::kString) {
          // A string column's chunk is all NA unless it has the string layout.
          const bool has_strings = chunk.layout() == frame::Layout::kString;
          for (uint32_t r = 0; r < rows && !g.stopped(); r++) {
            if (!has_strings || chunk.IsNA(r)) {
              state(r).na++;
              continue;
            }
            state(r).count++;
            g.AddDistinct(gid[r], d, sketch::HyperLogLog::HashBytes(chunk.AtString(r)));
          }
        } else {
          // Numbers by their canonical bits (as FRAME.SUMMARY's distinct count), categoricals
          // by code: one frame's codes name one level each.
          chunk.ForEach([&](uint32_t r, double v) {
            if (g.stopped()) return;
            Moments& m = state(r);
            if (std::isnan(v)) {
              m.na++;
              return;
            }
            m.count++;
            g.AddDistinct(gid[r], d,
                          sketch::HyperLogLog::HashInt64(static_cast<int64_t>(Canonical(v))));
          });
        }
        break;
      }
    }
  }
  for (size_t a = 0; a < width; a++) {
    if (source[a] == a) continue;
    for (size_t i = 0; i < g.keys.size(); i++) {
      g.moments[i * width + a] = g.moments[i * width + source[a]];
      g.sums[i * width + a] = g.sums[i * width + source[a]];
    }
  }
  return g;
}

bool KeyLess(const std::vector<double>& a, const std::vector<double>& b) {
  for (size_t i = 0; i < a.size(); i++) {
    const bool na_a = std::isnan(a[i]), na_b = std::isnan(b[i]);
    if (na_a != na_b) return na_b;  // NA last
    if (na_a) continue;
    if (a[i] != b[i]) return a[i] < b[i];
  }
  return false;
}

}  // namespace

Result<Frame> GroupBy(const Frame& frame, const std::vector<size_t>& keys,
                      const std::vector<Aggregate>& aggs, const TaskOptions& options) {
  if (keys.empty()) return Status::InvalidArgument("no key column");
  for (size_t i = 0; i < keys.size(); i++) {
    if (frame.vec(keys[i]).type() == ColumnType::kString) {
      return Status::InvalidArgument("a string column cannot be a key");
    }
    for (size_t j = 0; j < i; j++) {
      if (keys[i] == keys[j]) return Status::InvalidArgument("a key column given twice");
    }
  }
  for (const Aggregate& a : aggs) {
    const ColumnType t = frame.vec(a.col).type();
    if (a.fn != AggFn::kCount && a.fn != AggFn::kDistinct &&
        (t == ColumnType::kString || t == ColumnType::kCategorical)) {
      return Status::InvalidArgument(
          "only count and distinct apply to a string or categorical column");
    }
  }
  const size_t width = aggs.size();
  const DistinctSlots ds(aggs);
  const uint64_t group_bytes = GroupBytes(keys.size(), width, ds.count);
  const uint64_t max_groups = std::min<uint64_t>(kMaxGroups, kMaxGroupBytes / group_bytes);
  FLOE_ASSIGN_OR_RETURN(
      Groups groups,
      MapReduce<Groups>(
          frame.chunk_count(),
          [&](size_t k) { return MapGroups(frame, keys, aggs, max_groups, options, k); },
          [&](Groups& a, Groups&& b) {
            if (a.stopped() || b.stopped()) {
              a.too_many = a.too_many || b.too_many;
              if (a.failure.ok()) a.failure = b.failure;
              return;
            }
            std::vector<uint64_t> key(keys.size());
            uint64_t merged = 0;
            for (size_t j = 0; j < b.keys.size() && !a.stopped(); j++, merged++) {
              // Contract 3: a merge of many groups, each with its sketches, is as long as a
              // chunk's map, so it polls the cancel flag as the map phase does.
              // relaxed: the flag is a request.
              if (j % 1024 == 0 && options.cancel != nullptr &&
                  options.cancel->load(std::memory_order_relaxed)) {
                a.failure = Status::Cancelled("task cancelled");
                break;
              }
              for (size_t i = 0; i < keys.size(); i++) key[i] = Canonical(b.keys[j][i]);
              std::optional<uint32_t> at = a.Find(key, b.keys[j], width);
              if (!at) break;
              a.rows[*at] += b.rows[j];
              for (size_t x = 0; x < width; x++) {
                a.moments[*at * width + x].Merge(b.moments[j * width + x]);
                a.sums[*at * width + x] += b.sums[j * width + x];
              }
              for (size_t d = 0; d < ds.count && !a.stopped(); d++) {
                sketch::HyperLogLog& into = a.sketches[*at * ds.count + d];
                sketch::HyperLogLog& from = b.sketches[j * ds.count + d];
                const size_t before = into.MemoryBytes();
                if (before == 0) {
                  // Taken whole (its bytes stay charged by b until b goes: counted twice a
                  // moment rather than not at all).
                  into = std::move(from);
                } else {
                  (void)into.Merge(from);  // same parameters: cannot fail
                }
                if (into.MemoryBytes() > before) a.SketchGrew(into.MemoryBytes() - before);
              }
            }
            if (options.stats != nullptr) {
              // relaxed: a statistic, read after the task.
              options.stats->groups_merged.fetch_add(merged, std::memory_order_relaxed);
            }
          },
          options));
  if (!groups.failure.ok()) return groups.failure;
  if (groups.too_many) {
    return Status::ResourceExhausted(
        "more than " + std::to_string(max_groups) + " groups (at most " +
        std::to_string(kMaxGroups) + ", and a group-by's table at most " +
        std::to_string(kMaxGroupBytes >> 20) + " MiB: ~" + std::to_string(group_bytes) +
        " bytes a group with these columns)");
  }
  std::vector<uint32_t> order(groups.keys.size());
  for (uint32_t i = 0; i < order.size(); i++) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return KeyLess(groups.keys[a], groups.keys[b]); });

  std::vector<frame::ColumnSpec> specs;
  // Names taken, and per base name the next suffix to try: each name is found in O(1) expected
  // tries (a suffix tried for a base is never tried again), not by scanning every column.
  std::unordered_set<std::string> taken;
  std::unordered_map<std::string, uint64_t> next_suffix;
  for (size_t k : keys) {
    specs.push_back({.name = frame.name(k), .type = frame.vec(k).type()});
    taken.insert(frame.name(k));
  }
  for (const Aggregate& a : aggs) {
    std::string base =
        a.fn == AggFn::kCount ? "count" : std::string(AggFnName(a.fn)) + "_" + frame.name(a.col);
    std::string name = base;
    if (taken.contains(name)) {
      uint64_t& s = next_suffix.try_emplace(base, 2).first->second;
      do {
        name = base + "_" + std::to_string(s++);
      } while (taken.contains(name));
    }
    taken.insert(name);
    const ColumnType src = frame.vec(a.col).type();
    ColumnType t = ColumnType::kReal;
    if (a.fn == AggFn::kCount || a.fn == AggFn::kDistinct) t = ColumnType::kInteger;
    if ((a.fn == AggFn::kMin || a.fn == AggFn::kMax) && src == ColumnType::kInteger) {
      t = ColumnType::kInteger;
    }
    specs.push_back({.name = std::move(name), .type = t});
  }
  // The result is built while the tables live, so it is charged too: 8 bytes a value at most
  // (pending values are raw doubles or codes; a finished chunk is no larger than its raw
  // values), and the key columns' domains, which it copies.
  Charge result(options.memory);
  FLOE_RETURN_IF_ERROR(
      result.Grow(uint64_t{order.size()} * (keys.size() + width) * 8 + frame.header_bytes()));
  FLOE_ASSIGN_OR_RETURN(frame::FrameBuilder builder, frame::FrameBuilder::Make(specs));
  for (uint32_t g : order) {
    for (size_t i = 0; i < keys.size(); i++) {
      const double v = groups.keys[g][i];
      const frame::Vec& vec = frame.vec(keys[i]);
      if (std::isnan(v)) {
        FLOE_RETURN_IF_ERROR(builder.AddNA(i));
      } else if (vec.type() == ColumnType::kCategorical) {
        const auto code = static_cast<size_t>(v);
        if (code >= vec.domain().size()) return Status::Corruption("code outside its domain");
        FLOE_RETURN_IF_ERROR(builder.AddString(i, vec.domain()[code]));
      } else if (vec.type() == ColumnType::kTime) {
        FLOE_RETURN_IF_ERROR(builder.AddTime(i, static_cast<int64_t>(v)));
      } else {
        FLOE_RETURN_IF_ERROR(builder.AddNumber(i, v));
      }
    }
    for (size_t a = 0; a < width; a++) {
      const size_t col = keys.size() + a;
      const Moments& m = groups.moments[g * width + a];
      double v = frame::kNA;
      switch (aggs[a].fn) {
        case AggFn::kCount:
          v = static_cast<double>(groups.rows[g]);
          break;
        case AggFn::kSum:
          if (m.count > 0) v = groups.sums[g * width + a];
          break;
        case AggFn::kMean:
          if (m.count > 0) v = groups.sums[g * width + a] / static_cast<double>(m.count);
          break;
        case AggFn::kMin:
          if (m.count > 0) v = m.min;
          break;
        case AggFn::kMax:
          if (m.count > 0) v = m.max;
          break;
        case AggFn::kSd:
          v = m.sd();
          break;
        case AggFn::kDistinct:
          // Exact in the sketch's explicit form; the raw estimate past saturation; an integer.
          v = std::round(
              groups.sketches[g * ds.count + static_cast<size_t>(ds.slot[a])].Cardinality(true));
          break;
      }
      FLOE_RETURN_IF_ERROR(std::isnan(v) ? builder.AddNA(col) : builder.AddNumber(col, v));
    }
    FLOE_RETURN_IF_ERROR(builder.EndRow());
  }
  return builder.Finish();
}

}  // namespace floe::mr
