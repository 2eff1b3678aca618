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
// 3. `cancel` (optional) is polled before each chunk: a cancelled task returns Cancelled. A
//    reduce as long as a chunk's map (a group-by's merge) polls it too, every 1,024 groups.
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
#include <bit>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "frame/frame.h"
#include "sketch/sketch.h"

namespace floe::mr {

// Working memory a task charges before allocating it (the server charges it to maxmemory):
// Reserve refuses with the status to return (ResourceExhausted) when `bytes` more do not fit.
// Called from the task's workers at once: implementations are thread-safe.
class MemoryBudget {
 public:
  virtual ~MemoryBudget() = default;
  virtual Status Reserve(uint64_t bytes) = 0;
  virtual void Release(uint64_t bytes) = 0;
};

// Bytes charged to a budget (none: nothing charged) and given back when this goes. Movable.
class Charge {
 public:
  Charge() = default;
  explicit Charge(MemoryBudget* budget) : budget_(budget) {}
  Charge(Charge&& o) noexcept : budget_(o.budget_), bytes_(o.bytes_) { o.bytes_ = 0; }
  Charge& operator=(Charge&& o) noexcept {
    if (this != &o) {
      Reset();
      budget_ = o.budget_;
      bytes_ = o.bytes_;
      o.bytes_ = 0;
    }
    return *this;
  }
  Charge(const Charge&) = delete;
  Charge& operator=(const Charge&) = delete;
  ~Charge() { Reset(); }
  // Makes the charge at least `bytes`, reserving the difference.
  Status Grow(uint64_t bytes) {
    if (bytes <= bytes_ || budget_ == nullptr) return Status::OK();
    FLOE_RETURN_IF_ERROR(budget_->Reserve(bytes - bytes_));
    bytes_ = bytes;
    return Status::OK();
  }
  // Makes the charge at most `bytes`, giving back the difference.
  void ShrinkTo(uint64_t bytes) {
    if (bytes >= bytes_) return;
    if (budget_ != nullptr) budget_->Release(bytes_ - bytes);
    bytes_ = bytes;
  }
  uint64_t bytes() const { return bytes_; }

 private:
  void Reset() {
    if (budget_ != nullptr && bytes_ > 0) budget_->Release(bytes_);
    bytes_ = 0;
  }
  MemoryBudget* budget_ = nullptr;
  uint64_t bytes_ = 0;
};

// What a task did, for tests and statistics: chunks mapped (a column scan maps every chunk), and
// a group-by's groups merged from one chunk's table into the result's.
struct TaskStats {
  std::atomic<uint64_t> chunks_mapped{0};
  std::atomic<uint64_t> groups_merged{0};
};

struct TaskOptions {
  uint32_t threads = 0;  // 0: every core (std::thread::hardware_concurrency())
  const std::atomic<bool>* cancel = nullptr;
  MemoryBudget* memory = nullptr;  // optional: working memory is charged to it
  TaskStats* stats = nullptr;      // optional
};

// Runs fn(i) for every i in [0, n) on WorkerCount(options, n) workers, the caller's thread
// included. Cancelled if *cancel was set before every index ran. Counts options.stats.
Status ForkJoin(size_t n, const TaskOptions& options, const std::function<void(size_t)>& fn);
size_t WorkerCount(const TaskOptions& options, size_t n);

// Contract 1. Acc must be default-constructible and movable; an empty frame gives Acc{}.
// Accumulators are folded into the result as soon as every chunk before them has been (under a
// mutex, in chunk order), and a worker handed chunk k waits before mapping it while k is
// 2 x workers or more past the first chunk not folded yet: however slow one chunk is, at most
// ~3 accumulators a worker are alive at once, not one per chunk (a group-by's tables do not
// pile up). The worker holding the first unfolded chunk never waits, so the task always ends.
template <typename Acc, typename MapFn, typename ReduceFn>
Result<Acc> MapReduce(size_t chunk_count, MapFn&& map, ReduceFn&& reduce,
                      const TaskOptions& options = {}) {
  const size_t window = 2 * WorkerCount(options, chunk_count);
  std::vector<std::optional<Acc>> parts(chunk_count);
  Mutex mu;
  std::condition_variable_any folded;
  size_t next = 0;      // guarded by mu: the first chunk not folded yet
  bool failed = false;  // guarded by mu: a map or reduce threw; waiters give up
  std::optional<Acc> out;
  FLOE_RETURN_IF_ERROR(ForkJoin(chunk_count, options, [&](size_t k) {
    {
      std::unique_lock<Mutex> lock(mu);
      folded.wait(lock, [&] { return failed || k < next + window; });
      if (failed) return;  // ForkJoin reports the exception that set it
    }
    try {
      Acc a = map(k);
      MutexLock lock(&mu);
      parts[k] = std::move(a);
      const size_t was = next;
      for (; next < chunk_count && parts[next].has_value(); next++) {
        if (!out.has_value()) {
          out = std::move(*parts[next]);
        } else {
          reduce(*out, std::move(*parts[next]));
        }
        parts[next].reset();
      }
      if (next != was) folded.notify_all();
    } catch (...) {
      MutexLock lock(&mu);
      failed = true;
      folded.notify_all();
      throw;
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
// What one group-by table may hold (groups x their bytes, key columns and aggregates counted:
// ~100 bytes + 16 a key + 64 an aggregate).
inline constexpr uint64_t kMaxGroupBytes = uint64_t{256} << 20;

// A value's identity for hashing and grouping: every NaN is the one NA, and -0 is 0.
inline uint64_t Canonical(double v) {
  if (std::isnan(v)) return std::bit_cast<uint64_t>(frame::kNA);
  if (v == 0) return 0;
  return std::bit_cast<uint64_t>(v);
}

// Moments of the non-NA values of a numeric column (integer, real, time; a categorical's codes).
// Infinities are counted (count, min, max) but kept out of mean and m2, as DuckDB's avg and
// stddev treat them: Mean() is +inf or -inf when one kind is there, NaN with both; sd() is NaN
// (DuckDB refuses stddev_samp as out of range).
struct Moments {
  uint64_t count = 0;  // non-NA values
  uint64_t na = 0;
  uint64_t pos_inf = 0, neg_inf = 0;  // of count
  double min = 0, max = 0;            // of the non-NA values; 0 when count == 0
  double mean = 0;                    // of the finite values
  double m2 = 0;  // of the finite values: squared deviations from the mean (Chan et al.'s merge)
  uint64_t finite() const { return count - pos_inf - neg_inf; }
  double Mean() const;
  // Sample standard deviation (n - 1), NaN below two values or with an infinity.
  double sd() const;
  void Add(double v);
  void Merge(const Moments& o);
};

struct Summary {
  Moments moments;
  uint64_t cardinality = 0;  // distinct non-NA values, estimated by the HyperLogLog (sketch)
  // `bins` equal-width bins over the finite values' [min, max]: counts and the lower edge of
  // each (the last bin includes max; -inf counts in the first bin, +inf in the last). Empty
  // when no value is finite.
  std::vector<uint64_t> histogram;
  std::vector<double> bin_starts;
};

// The summary of column `col`. InvalidArgument for a string column or bins outside
// [1, kMaxBins]. REQUIRES: col < frame.columns().
Result<Summary> Summarize(const frame::Frame& frame, size_t col, uint32_t bins,
                          const TaskOptions& options = {});

// Summarize's two passes, for a frame whose chunks are spread over members (each maps its own
// chunks and the results are merged, docs/frames_cluster.md D8); Summarize is these over one
// frame. The first: moments, the distinct values' HyperLogLog (kSummaryHll), and the finite
// values' range; Merge folds `o` in after this (associative). The second: the histogram over
// [lo, hi] (HistogramPass; bins added). FinishSummary makes the summary from the merged two.
struct SummaryMoments {
  Moments m;
  sketch::HyperLogLog hll;
  double lo = std::numeric_limits<double>::infinity();  // of the finite values
  double hi = -std::numeric_limits<double>::infinity();
  void Merge(const SummaryMoments& o);
};
sketch::HllParams SummaryHllParams();
// InvalidArgument for a string column. REQUIRES: col < frame.columns().
Result<SummaryMoments> MomentsPass(const frame::Frame& frame, size_t col,
                                   const TaskOptions& options = {});
// Counts per bin of the non-NA values over [lo, hi] (the finite values' range, lo <= hi): as
// Summarize's histogram. InvalidArgument for a string column, bins outside [1, kMaxBins] or
// lo > hi or either not finite.
Result<std::vector<uint64_t>> HistogramPass(const frame::Frame& frame, size_t col, double lo,
                                            double hi, uint32_t bins,
                                            const TaskOptions& options = {});
// REQUIRES: hist has `bins` counts when first.lo <= first.hi, else it is empty.
Summary FinishSummary(const SummaryMoments& first, std::vector<uint64_t> hist, uint32_t bins);

// Exact quantiles of the non-NA values of a numeric column, linearly interpolated between the
// two nearest ranks (h = (n - 1) p, as R's type 7 and DuckDB's quantile_cont), found by
// histogram refinement of the doubles' 64-bit images (analytics.cc, "How exact quantiles are
// found"): 9 reads of the column whatever the data and the number of p, working memory 2 KiB a
// rank per accumulator held, charged to options.memory first. Infinities interpolate as in
// DuckDB (-inf with a finite value is -inf, a finite value with +inf is +inf, -inf with +inf
// NaN). nullopt for each p when the column has no value. InvalidArgument for a string column,
// a p outside [0, 1] or more than kMaxProbabilities of them; what options.memory refuses.
Result<std::vector<std::optional<double>>> Quantiles(const frame::Frame& frame, size_t col,
                                                     const std::vector<double>& probabilities,
                                                     const TaskOptions& options = {});

// Quantiles' passes, for a frame whose chunks are spread over members (D8): RadixPass is one
// refinement pass over `frame`'s column (pass 0 to 7: the 256-bin histograms of the next 8 bits
// of the images of the non-NA values whose leading 8 x pass bits are one of `wanted`, sorted,
// distinct, at most kMaxRadixPrefixes; pass 0 takes {0}), wanted.size() x 256 counts.
// QuantilesByPasses finds the quantiles of `n` non-NA values with the passes `radix` gives (the
// members' merged). InvalidArgument for a string column or a pass out of range.
inline constexpr size_t kMaxRadixPrefixes = 2 * kMaxProbabilities;
inline constexpr uint32_t kRadixCells = 256;
using RadixPassFn =
    std::function<Result<std::vector<uint64_t>>(int pass, const std::vector<uint64_t>& wanted)>;
Result<std::vector<uint64_t>> RadixPass(const frame::Frame& frame, size_t col, int pass,
                                        const std::vector<uint64_t>& wanted,
                                        const TaskOptions& options = {});
// `reserve` (optional) is told the distinct ranks wanted before the passes start.
// REQUIRES: probabilities as Quantiles checks them.
Result<std::vector<std::optional<double>>> QuantilesByPasses(
    uint64_t n, const std::vector<double>& probabilities, const RadixPassFn& radix,
    const std::function<Status(size_t ranks)>& reserve = nullptr);

// kDistinct: the distinct non-NA values of the column, estimated by a HyperLogLog per group
// (PostgreSQL hll's defaults: log2m 11, regwidth 5; exact up to its explicit threshold, about
// 2.3% error past it); any column type.
enum class AggFn : uint8_t { kCount, kSum, kMean, kMin, kMax, kSd, kDistinct };
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
// given twice as key (a string or categorical column takes count and distinct only);
// ResourceExhausted past kMaxGroups groups or a table of kMaxGroupBytes,
// or what options.memory refuses (every table is charged to it as it grows, each chunk's
// scratch too; MapReduce holds ~3 tables a worker).
// REQUIRES: every column index < frame.columns().
Result<frame::Frame> GroupBy(const frame::Frame& frame, const std::vector<size_t>& keys,
                             const std::vector<Aggregate>& aggs, const TaskOptions& options = {});

// GroupBy's parts, for a frame whose chunks are spread over members (docs/frames_cluster.md,
// D8's kGroupBy): each member's partial table of its own chunks (GroupByTable), merged up the
// tree (MergeGroupTables: associative, and order-independent but for a floating sum's last
// bits), then the result built at the coordinator (FinishGroupBy) as GroupBy builds it.
// GroupBy itself is GroupByTable's map/reduce followed by FinishGroupBy's build.
// A value, thread-compatible.
struct GroupTable {
  std::vector<std::vector<double>> keys;      // per group: its key values (NA as frame::kNA)
  std::vector<uint64_t> rows;                 // per group
  std::vector<Moments> moments;               // per group, one per aggregate
  std::vector<double> sums;                   // per group, one per aggregate: plain sums
  std::vector<sketch::HyperLogLog> sketches;  // per group, one per distinct aggregate
  size_t groups() const { return keys.size(); }
};
// How many of `aggs` are kDistinct (the sketches a group holds).
size_t DistinctCount(const std::vector<Aggregate>& aggs);
// The groups a table of these keys and aggregates may hold: GroupBy's limit, the lesser of
// kMaxGroups and kMaxGroupBytes over a group's bytes.
uint64_t MaxGroups(size_t keys, const std::vector<Aggregate>& aggs);
// Tests only: when not 0, a lower group limit than MaxGroups' (every GroupBy, GroupByTable and
// MergeGroupTables of the process takes it), so a test passes it with a few groups.
std::atomic<uint64_t>& TEST_MaxGroups();
// GroupBy's checks and map/reduce over `frame` (every core), its table before the result is
// built. The same errors as GroupBy (ResourceExhausted past MaxGroups).
Result<GroupTable> GroupByTable(const frame::Frame& frame, const std::vector<size_t>& keys,
                                const std::vector<Aggregate>& aggs,
                                const TaskOptions& options = {});
// Folds `b` into `a` (a group of b's whose keys a has is merged into it, a new one appended).
// ResourceExhausted, GroupBy's text, past MaxGroups; Corruption when b's shape is not the
// keys' and aggregates' (a peer's table) or its sketches have other parameters.
Status MergeGroupTables(GroupTable& a, GroupTable&& b, size_t keys,
                        const std::vector<Aggregate>& aggs);
// A column the result is built from: a key column (name, type, domain), or an aggregate's
// source column (name, type).
struct GroupColumn {
  std::string name;
  frame::ColumnType type = frame::ColumnType::kReal;
  const std::vector<std::string>* domain = nullptr;  // a categorical key's; outlives the build
};
// GroupBy's result from a merged table: `key_columns` one per key, `agg_columns` one per
// aggregate (its source column). Corruption for a categorical key's code outside its domain.
Result<frame::Frame> FinishGroupBy(const GroupTable& table,
                                   const std::vector<GroupColumn>& key_columns,
                                   const std::vector<GroupColumn>& agg_columns,
                                   const std::vector<Aggregate>& aggs,
                                   const TaskOptions& options = {});

// ---- derived frames (derive.cc) ----

// FRAME.FILTER's comparisons. Numeric and time columns take all six comparisons against a
// number (a time as milliseconds since the epoch); categorical and string columns take = and !=
// against a level or a string; any column takes kIsNA / kNotNA. NA never matches a comparison
// (as SQL's NULL), so a row with NA in a compared column is never kept by one.
enum class FilterOp : uint8_t { kEq, kNe, kLt, kLe, kGt, kGe, kIsNA, kNotNA };
// "=", "!=", "<", "<=", ">", ">=", "ISNA", "NOTNA" (the last two case-insensitive).
std::optional<FilterOp> ParseFilterOp(std::string_view op);
inline constexpr size_t kMaxFilterConditions = 16;

struct Condition {
  size_t col = 0;
  FilterOp op = FilterOp::kEq;
  double number = 0;  // numeric and time columns: the value compared with (not NaN)
  std::string text;   // categorical columns (a level name) and string columns
};

// The rows of `frame` where every condition holds, in their order, as a new frame with every
// column (same names, types and domains). A map/reduce over the chunks: each source chunk gives
// the output's chunk of the same index (none when it keeps no row), compressed as Compress,
// CompressTimes, CompressCodes and CompressStrings choose. Working memory (a chunk's scratch)
// and the output's chunks are charged to options.memory before they are held, and given back
// when this returns (the caller charges the frame it stores). InvalidArgument for an op a
// column's type does not take or more than kMaxFilterConditions conditions; Cancelled; what
// options.memory refuses. REQUIRES: every condition's col < frame.columns().
Result<frame::Frame> Filter(const frame::Frame& frame, const std::vector<Condition>& conditions,
                            const TaskOptions& options = {});

}  // namespace floe::mr

#endif  // FLOE_MR_MR_H_
