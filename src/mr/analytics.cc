// The built-in analytics as map/reduce tasks (mr.h): summary and exact quantiles (the group-by
// is in groupby.cc).

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

}  // namespace floe::mr
