// The built-in analytics as map/reduce tasks (mr.h): summary, exact quantiles, group-by.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <unordered_map>

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
  if (count < 2) return frame::kNA;
  return std::sqrt(m2 / static_cast<double>(count - 1));
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
  const double d = v - mean;
  mean += d / static_cast<double>(count);
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
  const double n = static_cast<double>(count + o.count);
  const double d = o.mean - mean;
  mean += d * static_cast<double>(o.count) / n;
  m2 += o.m2 + d * d * static_cast<double>(count) * static_cast<double>(o.count) / n;
  min = std::min(min, o.min);
  max = std::max(max, o.max);
  count += o.count;
}

Result<Summary> Summarize(const Frame& frame, size_t col, uint32_t bins,
                          const TaskOptions& options) {
  const frame::Vec& vec = frame.vec(col);
  if (!Numeric(vec.type())) return Status::InvalidArgument("a string column has no summary");
  if (bins < 1 || bins > kMaxBins) return Status::InvalidArgument("bins out of range");
  struct Acc {
    Moments m;
    sketch::HyperLogLog hll;
  };
  sketch::HllParams params;
  params.log2m = 14;
  FLOE_ASSIGN_OR_RETURN(sketch::HyperLogLog empty, sketch::HyperLogLog::Create(params));
  FLOE_ASSIGN_OR_RETURN(Acc acc, MapReduce<Acc>(
                                     vec.chunk_count(),
                                     [&](size_t k) {
                                       Acc a{.m = {}, .hll = empty};
                                       vec.chunk(k).ForEach([&](uint32_t, double v) {
                                         a.m.Add(v);
                                         if (!std::isnan(v)) {
                                           a.hll.AddHash(sketch::HyperLogLog::HashInt64(
                                               static_cast<int64_t>(Canonical(v))));
                                         }
                                       });
                                       return a;
                                     },
                                     [](Acc& a, Acc&& b) {
                                       a.m.Merge(b.m);
                                       (void)a.hll.Merge(b.hll);  // same parameters: cannot fail
                                     },
                                     options));
  Summary s;
  s.moments = acc.m;
  s.cardinality = static_cast<uint64_t>(std::llround(acc.hll.Cardinality(true)));
  if (s.moments.count == 0 || !std::isfinite(s.moments.min) || !std::isfinite(s.moments.max)) {
    return s;
  }
  const Binner binner(s.moments.min, s.moments.max, bins);
  const bool one_bin = !binner.usable();
  using Hist = std::vector<uint64_t>;
  FLOE_ASSIGN_OR_RETURN(Hist hist, MapReduce<Hist>(
                                       vec.chunk_count(),
                                       [&](size_t k) {
                                         Hist h(bins, 0);
                                         vec.chunk(k).ForEach([&](uint32_t, double v) {
                                           if (!std::isnan(v)) h[one_bin ? 0 : binner.Bin(v)]++;
                                         });
                                         return h;
                                       },
                                       [](Hist& a, Hist&& b) {
                                         for (size_t i = 0; i < a.size(); i++) a[i] += b[i];
                                       },
                                       options));
  s.histogram = std::move(hist);
  const double width = (s.moments.max - s.moments.min) / bins;
  for (uint32_t i = 0; i < bins; i++) s.bin_starts.push_back(s.moments.min + width * i);
  return s;
}

// How exact quantiles are found
// -----------------------------
// As H2O does, by refining a histogram instead of sorting: to find the value of rank k (0-based,
// among the n non-NA values), pass 1 counts the values and finds the finite minimum and maximum
// (infinities are counted apart: rank k may be one). Each further pass bins the values of the
// current range [lo, hi] into 1,024 equal bins, keeping per bin its count and its least and
// greatest value; the bin holding rank k becomes the range, narrowed to exactly its least and
// greatest value (the binning is monotone, so those bound exactly the values in the bin). A
// range holding both its ends in different bins shrinks every pass; once it holds at most 65,536
// values (or one value) they are gathered and sorted, and rank k read off. Each pass reads the
// column once; a range shrinks ~1,000-fold a pass, so a billion rows take about 4 passes a rank.
namespace {

constexpr uint32_t kRefineBins = 1024;
constexpr uint64_t kGatherAtMost = 1 << 16;

struct Counts {
  uint64_t n = 0, neg_inf = 0, pos_inf = 0, finite = 0;
  double lo = 0, hi = 0;  // finite min and max
};

Result<double> KthSmallest(const frame::Vec& vec, const Counts& c, uint64_t k,
                           const TaskOptions& options) {
  if (k < c.neg_inf) return -kInf;
  if (k >= c.neg_inf + c.finite) return kInf;
  k -= c.neg_inf;
  double lo = c.lo, hi = c.hi;
  uint64_t below = 0, in_range = c.finite;
  for (;;) {
    if (lo == hi) return lo;
    const Binner binner(lo, hi, kRefineBins);
    if (in_range <= kGatherAtMost || !binner.usable()) {
      using Vals = std::vector<double>;
      FLOE_ASSIGN_OR_RETURN(
          Vals vals,
          MapReduce<Vals>(
              vec.chunk_count(),
              [&](size_t j) {
                Vals out;
                vec.chunk(j).ForEach([&](uint32_t, double v) {
                  if (v >= lo && v <= hi) out.push_back(v);
                });
                return out;
              },
              [](Vals& a, Vals&& b) { a.insert(a.end(), b.begin(), b.end()); }, options));
      const uint64_t at = k - below;
      if (at >= vals.size()) return Status::Internal("quantile refinement lost its rank");
      std::nth_element(vals.begin(), vals.begin() + static_cast<ptrdiff_t>(at), vals.end());
      return vals[at];
    }
    struct Bins {
      std::vector<uint64_t> count;
      std::vector<double> least, greatest;
    };
    FLOE_ASSIGN_OR_RETURN(Bins bins, MapReduce<Bins>(
                                         vec.chunk_count(),
                                         [&](size_t j) {
                                           Bins b{std::vector<uint64_t>(kRefineBins, 0),
                                                  std::vector<double>(kRefineBins, kInf),
                                                  std::vector<double>(kRefineBins, -kInf)};
                                           vec.chunk(j).ForEach([&](uint32_t, double v) {
                                             if (!(v >= lo && v <= hi)) return;
                                             const uint32_t i = binner.Bin(v);
                                             b.count[i]++;
                                             b.least[i] = std::min(b.least[i], v);
                                             b.greatest[i] = std::max(b.greatest[i], v);
                                           });
                                           return b;
                                         },
                                         [](Bins& a, Bins&& b) {
                                           for (uint32_t i = 0; i < kRefineBins; i++) {
                                             a.count[i] += b.count[i];
                                             a.least[i] = std::min(a.least[i], b.least[i]);
                                             a.greatest[i] = std::max(a.greatest[i], b.greatest[i]);
                                           }
                                         },
                                         options));
    uint64_t cum = below;
    uint32_t i = 0;
    for (; i < kRefineBins; i++) {
      if (cum + bins.count[i] > k) break;
      cum += bins.count[i];
    }
    if (i == kRefineBins) return Status::Internal("quantile refinement lost its rank");
    below = cum;
    in_range = bins.count[i];
    lo = bins.least[i];
    hi = bins.greatest[i];
  }
}

}  // namespace

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
  FLOE_ASSIGN_OR_RETURN(Counts c, MapReduce<Counts>(
                                      vec.chunk_count(),
                                      [&](size_t k) {
                                        Counts a;
                                        vec.chunk(k).ForEach([&](uint32_t, double v) {
                                          if (std::isnan(v)) return;
                                          a.n++;
                                          if (v == -kInf) {
                                            a.neg_inf++;
                                          } else if (v == kInf) {
                                            a.pos_inf++;
                                          } else {
                                            a.lo = a.finite == 0 ? v : std::min(a.lo, v);
                                            a.hi = a.finite == 0 ? v : std::max(a.hi, v);
                                            a.finite++;
                                          }
                                        });
                                        return a;
                                      },
                                      [](Counts& a, Counts&& b) {
                                        if (b.finite > 0) {
                                          a.lo = a.finite == 0 ? b.lo : std::min(a.lo, b.lo);
                                          a.hi = a.finite == 0 ? b.hi : std::max(a.hi, b.hi);
                                        }
                                        a.n += b.n;
                                        a.neg_inf += b.neg_inf;
                                        a.pos_inf += b.pos_inf;
                                        a.finite += b.finite;
                                      },
                                      options));
  std::vector<std::optional<double>> out;
  if (c.n == 0) {
    out.assign(probabilities.size(), std::nullopt);
    return out;
  }
  std::map<uint64_t, double> by_rank;  // ranks asked for by several p are found once
  auto value_at = [&](uint64_t rank) -> Result<double> {
    if (auto it = by_rank.find(rank); it != by_rank.end()) return it->second;
    FLOE_ASSIGN_OR_RETURN(double v, KthSmallest(vec, c, rank, options));
    by_rank.emplace(rank, v);
    return v;
  };
  for (double p : probabilities) {
    const double h = static_cast<double>(c.n - 1) * p;
    const auto lower = std::min<uint64_t>(static_cast<uint64_t>(std::floor(h)), c.n - 1);
    const uint64_t upper = std::min<uint64_t>(lower + 1, c.n - 1);
    const double frac = h - static_cast<double>(lower);
    FLOE_ASSIGN_OR_RETURN(double a, value_at(lower));
    if (frac == 0 || upper == lower) {
      out.push_back(a);
      continue;
    }
    FLOE_ASSIGN_OR_RETURN(double b, value_at(upper));
    out.push_back(a == b ? a : a + (b - a) * frac);
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
  }
  return "?";
}

std::optional<AggFn> ParseAggFn(std::string_view name) {
  for (AggFn fn :
       {AggFn::kCount, AggFn::kSum, AggFn::kMean, AggFn::kMin, AggFn::kMax, AggFn::kSd}) {
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

struct Groups {
  std::unordered_map<std::vector<uint64_t>, uint32_t, KeyHash> index;
  std::vector<std::vector<double>> keys;  // per group, the key values
  std::vector<uint64_t> rows;             // per group
  std::vector<Moments> moments;           // per group, one per aggregate
  std::vector<double> sums;               // likewise: plain sums, in row order
  bool too_many = false;
  uint64_t max_groups = kMaxGroups;

  // The group of `key` (made with `width` aggregates if new); nullopt past max_groups.
  std::optional<uint32_t> Find(const std::vector<uint64_t>& key, const std::vector<double>& vals,
                               size_t width) {
    auto [it, fresh] = index.try_emplace(key, static_cast<uint32_t>(keys.size()));
    if (fresh) {
      if (keys.size() >= max_groups) {
        index.erase(it);
        too_many = true;
        return std::nullopt;
      }
      keys.push_back(vals);
      rows.push_back(0);
      moments.resize(moments.size() + width);
      sums.resize(sums.size() + width, 0.0);
    }
    return it->second;
  }
};

// Categorical keys with a domain up to this size index a table by code instead of hashing.
constexpr size_t kDirectDomain = size_t{1} << 20;

// One chunk's groups: first each row's group (a table by code for one categorical key, else a
// hash of the key values), then each aggregate a column at a time, doing only what its function
// needs (a sum and a count for sum and mean, the extremes for min and max, Welford for sd).
Groups MapGroups(const Frame& frame, const std::vector<size_t>& keys,
                 const std::vector<Aggregate>& aggs, uint64_t max_groups, size_t k) {
  Groups g;
  g.max_groups = max_groups;
  const size_t width = aggs.size();
  const uint32_t rows = frame.vec(keys[0]).chunk(k).rows();
  std::vector<uint32_t> gid(rows);
  std::vector<uint64_t> key(keys.size());
  std::vector<double> vals(keys.size());
  const frame::Vec& first = frame.vec(keys[0]);
  if (keys.size() == 1 && first.type() == ColumnType::kCategorical &&
      first.domain().size() < kDirectDomain) {
    const size_t na_slot = first.domain().size();
    std::vector<int64_t> slot(na_slot + 1, -1);  // group by code; NA last
    first.chunk(k).ForEach([&](uint32_t r, double v) {
      if (g.too_many) return;
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
    for (uint32_t r = 0; r < rows && !g.too_many; r++) {
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
  if (g.too_many) return g;
  for (uint32_t r = 0; r < rows; r++) g.rows[gid[r]]++;
  for (size_t a = 0; a < width; a++) {
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
    if (a.fn != AggFn::kCount && (t == ColumnType::kString || t == ColumnType::kCategorical)) {
      return Status::InvalidArgument("only count applies to a string or categorical column");
    }
  }
  const size_t width = aggs.size();
  const uint64_t max_groups = std::min<uint64_t>(kMaxGroups, kMaxGroupCells / (width + 1));
  FLOE_ASSIGN_OR_RETURN(Groups groups,
                        MapReduce<Groups>(
                            frame.chunk_count(),
                            [&](size_t k) { return MapGroups(frame, keys, aggs, max_groups, k); },
                            [&](Groups& a, Groups&& b) {
                              if (a.too_many || b.too_many) {
                                a.too_many = true;
                                return;
                              }
                              std::vector<uint64_t> key(keys.size());
                              for (size_t j = 0; j < b.keys.size() && !a.too_many; j++) {
                                for (size_t i = 0; i < keys.size(); i++)
                                  key[i] = Canonical(b.keys[j][i]);
                                std::optional<uint32_t> at = a.Find(key, b.keys[j], width);
                                if (!at) break;
                                a.rows[*at] += b.rows[j];
                                for (size_t x = 0; x < width; x++) {
                                  a.moments[*at * width + x].Merge(b.moments[j * width + x]);
                                  a.sums[*at * width + x] += b.sums[j * width + x];
                                }
                              }
                            },
                            options));
  if (groups.too_many) {
    return Status::ResourceExhausted("more than " + std::to_string(max_groups) +
                                     " groups (at most " + std::to_string(kMaxGroups) +
                                     ", and groups x (aggregates + 1) at most " +
                                     std::to_string(kMaxGroupCells) + ")");
  }
  std::vector<uint32_t> order(groups.keys.size());
  for (uint32_t i = 0; i < order.size(); i++) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return KeyLess(groups.keys[a], groups.keys[b]); });

  std::vector<frame::ColumnSpec> specs;
  auto taken = [&](const std::string& n) {
    return std::any_of(specs.begin(), specs.end(), [&](const auto& s) { return s.name == n; });
  };
  for (size_t k : keys) specs.push_back({.name = frame.name(k), .type = frame.vec(k).type()});
  for (const Aggregate& a : aggs) {
    std::string base =
        a.fn == AggFn::kCount ? "count" : std::string(AggFnName(a.fn)) + "_" + frame.name(a.col);
    std::string name = base;
    for (int s = 2; taken(name); s++) name = base + "_" + std::to_string(s);
    const ColumnType src = frame.vec(a.col).type();
    ColumnType t = ColumnType::kReal;
    if (a.fn == AggFn::kCount) t = ColumnType::kInteger;
    if ((a.fn == AggFn::kMin || a.fn == AggFn::kMax) && src == ColumnType::kInteger) {
      t = ColumnType::kInteger;
    }
    specs.push_back({.name = std::move(name), .type = t});
  }
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
      }
      FLOE_RETURN_IF_ERROR(std::isnan(v) ? builder.AddNA(col) : builder.AddNumber(col, v));
    }
    FLOE_RETURN_IF_ERROR(builder.EndRow());
  }
  return builder.Finish();
}

}  // namespace floe::mr
