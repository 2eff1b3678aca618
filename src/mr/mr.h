// mr: map/reduce over the chunks of a frame on one node (docs/frame.md, "Map/reduce"). A task
// maps each chunk index to an accumulator on every core (fork/join), then reduces the
// accumulators in chunk order. The built-in analytics (summary, quantiles, group-by) are tasks
// here, so the server's commands only parse arguments and print results.
//
// Contracts
// ---------
// 1. Map(k) is called once for every chunk index k in [0, chunk_count) on one of `threads`
//    workers (the caller's thread is one of them); Reduce(a, b) folds b into a, and is applied
//    in chunk order, left to right: the result does not depend on the number of threads, and
//    equals a single-threaded loop Map(0), Reduce(Map(1)), ... bit for bit (floating sums
//    included, since their order is fixed).
// 2. Reduce must be associative; it need not be commutative.
// 3. `cancel` (optional) is polled before each chunk: a cancelled task returns Cancelled.
// 4. Map and Reduce may not throw. Map runs concurrently for different chunks: it may read the
//    frame (immutable) and write only its own accumulator.
// 5. The analytics are total: NA values are counted, never summed; every client-given size
//    (bins, probabilities, groups) is bounded by the constants below and checked by the
//    caller, or by these functions (InvalidArgument / ResourceExhausted).
//
// Thread rule: the functions are thread-safe; each call starts its own workers and joins them.

#ifndef FLOE_MR_MR_H_
#define FLOE_MR_MR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/base.h"
#include "frame/frame.h"

namespace floe::mr {

struct TaskOptions {
  uint32_t threads = 0;  // 0: every core (std::thread::hardware_concurrency())
  const std::atomic<bool>* cancel = nullptr;
};

// Runs fn(i) for every i in [0, n) on min(threads, n) workers, the caller's thread included.
// Cancelled if *cancel was set before every index ran.
Status ForkJoin(size_t n, const TaskOptions& options, const std::function<void(size_t)>& fn);

// Contract 1. Acc must be default-constructible and movable; an empty frame gives Acc{}.
// Accumulators are folded into the result as soon as every chunk before them has been (under a
// mutex, in chunk order), so only those waiting for an earlier chunk are held at once -- about
// one per worker, not one per chunk: a group-by's tables do not pile up.
template <typename Acc, typename MapFn, typename ReduceFn>
Result<Acc> MapReduce(size_t chunk_count, MapFn&& map, ReduceFn&& reduce,
                      const TaskOptions& options = {}) {
  std::vector<std::optional<Acc>> parts(chunk_count);
  Mutex mu;
  size_t next = 0;  // guarded by mu: the first chunk not folded yet
  std::optional<Acc> out;
  FLOE_RETURN_IF_ERROR(ForkJoin(chunk_count, options, [&](size_t k) {
    Acc a = map(k);
    MutexLock lock(&mu);
    parts[k] = std::move(a);
    for (; next < chunk_count && parts[next].has_value(); next++) {
      if (!out.has_value()) {
        out = std::move(*parts[next]);
      } else {
        reduce(*out, std::move(*parts[next]));
      }
      parts[next].reset();
    }
  }));
  if (!out.has_value()) return Acc{};
  return std::move(*out);
}

// ---- built-in analytics ----

// The sum of a numeric chunk's non-NA values and how many there are: raw doubles with four
// accumulators (what a tuned loop over memory does; a chunk holding an NA is summed again,
// skipping them), any other layout through ChunkView::ForEach. The order of the additions is fixed
// by the chunk, so a MapReduce of ChunkSums gives the same sum on any number of threads.
struct SumCount {
  double sum = 0;
  uint64_t count = 0;
};
SumCount ChunkSum(const frame::ChunkView& chunk);

inline constexpr uint32_t kDefaultBins = 20;
inline constexpr uint32_t kMaxBins = 10'000;
inline constexpr size_t kMaxProbabilities = 100;
inline constexpr uint64_t kMaxGroups = 1'000'000;
// Groups times (aggregates + 1): what a group-by's tables hold (~60 bytes a cell).
inline constexpr uint64_t kMaxGroupCells = uint64_t{1} << 22;

// Moments of the non-NA values of a numeric column (integer, real, time; a categorical's codes).
struct Moments {
  uint64_t count = 0;  // non-NA values
  uint64_t na = 0;
  double min = 0, max = 0;  // of the non-NA values; 0 when count == 0
  double mean = 0;
  double m2 = 0;  // sum of squared deviations from the mean (Chan et al.'s merge)
  // Sample standard deviation (n - 1), NaN below two values.
  double sd() const;
  void Add(double v);
  void Merge(const Moments& o);
};

struct Summary {
  Moments moments;
  uint64_t cardinality = 0;  // distinct non-NA values, estimated by the HyperLogLog (sketch)
  // `bins` equal-width bins over [min, max]: counts and the lower edge of each (the last bin
  // includes max). Empty when count == 0.
  std::vector<uint64_t> histogram;
  std::vector<double> bin_starts;
};

// The summary of column `col`. InvalidArgument for a string column or bins outside
// [1, kMaxBins]. REQUIRES: col < frame.columns().
Result<Summary> Summarize(const frame::Frame& frame, size_t col, uint32_t bins,
                          const TaskOptions& options = {});

// Exact quantiles of the non-NA values of a numeric column, linearly interpolated between the
// two nearest ranks (h = (n - 1) p, as R's type 7 and DuckDB's quantile_cont), found by
// multi-pass histogram refinement (mr.cc, "How exact quantiles are found"). nullopt for each p
// when the column has no value. InvalidArgument for a string column, a p outside [0, 1] or
// more than kMaxProbabilities of them.
Result<std::vector<std::optional<double>>> Quantiles(const frame::Frame& frame, size_t col,
                                                     const std::vector<double>& probabilities,
                                                     const TaskOptions& options = {});

enum class AggFn : uint8_t { kCount, kSum, kMean, kMin, kMax, kSd };
std::string_view AggFnName(AggFn fn);
std::optional<AggFn> ParseAggFn(std::string_view name);  // case-insensitive

struct Aggregate {
  AggFn fn = AggFn::kCount;
  size_t col = 0;  // ignored by kCount (rows of the group, NA or not)
};

// Groups the rows by the values of `keys` (integer, real, time or categorical columns; NA is a
// group of its own) and computes `aggs` over each group's non-NA values. The result frame has
// the key columns (same names, types and domains), then one column per aggregate named
// "<fn>_<column>" ("count" for kCount; a suffix "_2", "_3" makes a repeated name distinct);
// groups are in ascending order of their keys (a categorical by code, i.e. domain order; NA
// last). An aggregate of a group with no value is NA (count is 0). InvalidArgument for a
// string key or a string/categorical aggregated column (count excepted), no keys, a column
// given twice as key; ResourceExhausted past kMaxGroups groups or kMaxGroupCells cells.
// REQUIRES: every column index < frame.columns().
Result<frame::Frame> GroupBy(const frame::Frame& frame, const std::vector<size_t>& keys,
                             const std::vector<Aggregate>& aggs, const TaskOptions& options = {});

}  // namespace floe::mr

#endif  // FLOE_MR_MR_H_
