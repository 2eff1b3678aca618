// The group-by as a map/reduce task (mr.h): one node's GroupBy, and its parts for a frame whose
// chunks are spread over members (GroupByTable, MergeGroupTables, FinishGroupBy).

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "mr/mr.h"
#include "sketch/sketch.h"

namespace floe::mr {

namespace {

using frame::ChunkView;
using frame::ColumnType;
using frame::Frame;

}  // namespace

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

size_t DistinctCount(const std::vector<Aggregate>& aggs) { return DistinctSlots(aggs).count; }

std::atomic<uint64_t>& TEST_MaxGroups() {
  static std::atomic<uint64_t> most{0};
  return most;
}

uint64_t MaxGroups(size_t keys, const std::vector<Aggregate>& aggs) {
  const uint64_t most = std::min<uint64_t>(
      kMaxGroups, kMaxGroupBytes / GroupBytes(keys, aggs.size(), DistinctCount(aggs)));
  // relaxed: a test's setting, made before the task starts.
  const uint64_t lowered = TEST_MaxGroups().load(std::memory_order_relaxed);
  return lowered == 0 ? most : std::min(most, lowered);
}

namespace {

Status TooManyGroups(size_t keys, const std::vector<Aggregate>& aggs) {
  const uint64_t group_bytes = GroupBytes(keys, aggs.size(), DistinctCount(aggs));
  return Status::ResourceExhausted(
      "more than " + std::to_string(MaxGroups(keys, aggs)) + " groups (at most " +
      std::to_string(kMaxGroups) + ", and a group-by's table at most " +
      std::to_string(kMaxGroupBytes >> 20) + " MiB: ~" + std::to_string(group_bytes) +
      " bytes a group with these columns)");
}

Status CheckGroupBy(const Frame& frame, const std::vector<size_t>& keys,
                    const std::vector<Aggregate>& aggs) {
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
  return Status::OK();
}

// GroupBy's map/reduce: a table per chunk, merged in chunk order.
Result<Groups> ReduceGroups(const Frame& frame, const std::vector<size_t>& keys,
                            const std::vector<Aggregate>& aggs, const TaskOptions& options) {
  const size_t width = aggs.size();
  const DistinctSlots ds(aggs);
  const uint64_t max_groups = MaxGroups(keys.size(), aggs);
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
  if (groups.too_many) return TooManyGroups(keys.size(), aggs);
  return groups;
}

// The result frame of a reduced table (its vectors as GroupTable names them), groups in
// ascending key order. `header_bytes`: the key columns' domains, charged with the result.
Result<Frame> BuildGroupFrame(
    const std::vector<std::vector<double>>& group_keys, const std::vector<uint64_t>& group_rows,
    const std::vector<Moments>& group_moments, const std::vector<double>& group_sums,
    const std::vector<sketch::HyperLogLog>& group_sketches,
    const std::vector<GroupColumn>& key_columns, const std::vector<GroupColumn>& agg_columns,
    const std::vector<Aggregate>& aggs, uint64_t header_bytes, const TaskOptions& options) {
  const size_t width = aggs.size();
  const DistinctSlots ds(aggs);
  const size_t n = group_keys.size();
  if (group_rows.size() != n || group_moments.size() != n * width ||
      group_sums.size() != n * width || group_sketches.size() != n * ds.count ||
      agg_columns.size() != width) {
    return Status::Corruption("a group table of another shape");
  }
  for (const std::vector<double>& k : group_keys) {
    if (k.size() != key_columns.size()) return Status::Corruption("a group of other keys");
  }
  std::vector<uint32_t> order(n);
  for (uint32_t i = 0; i < order.size(); i++) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return KeyLess(group_keys[a], group_keys[b]); });

  std::vector<frame::ColumnSpec> specs;
  // Names taken, and per base name the next suffix to try: each name is found in O(1) expected
  // tries (a suffix tried for a base is never tried again), not by scanning every column.
  std::unordered_set<std::string> taken;
  std::unordered_map<std::string, uint64_t> next_suffix;
  for (const GroupColumn& k : key_columns) {
    specs.push_back({.name = k.name, .type = k.type});
    taken.insert(k.name);
  }
  for (size_t x = 0; x < width; x++) {
    const Aggregate& a = aggs[x];
    std::string base =
        a.fn == AggFn::kCount ? "count" : std::string(AggFnName(a.fn)) + "_" + agg_columns[x].name;
    std::string name = base;
    if (taken.contains(name)) {
      uint64_t& s = next_suffix.try_emplace(base, 2).first->second;
      do {
        name = base + "_" + std::to_string(s++);
      } while (taken.contains(name));
    }
    taken.insert(name);
    const ColumnType src = agg_columns[x].type;
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
      result.Grow(uint64_t{order.size()} * (key_columns.size() + width) * 8 + header_bytes));
  FLOE_ASSIGN_OR_RETURN(frame::FrameBuilder builder, frame::FrameBuilder::Make(specs));
  for (uint32_t g : order) {
    for (size_t i = 0; i < key_columns.size(); i++) {
      const double v = group_keys[g][i];
      const GroupColumn& kc = key_columns[i];
      if (std::isnan(v)) {
        FLOE_RETURN_IF_ERROR(builder.AddNA(i));
      } else if (kc.type == ColumnType::kCategorical) {
        if (kc.domain == nullptr || !(v >= 0) || v >= static_cast<double>(kc.domain->size()) ||
            v != std::floor(v)) {
          return Status::Corruption("code outside its domain");
        }
        FLOE_RETURN_IF_ERROR(builder.AddString(i, (*kc.domain)[static_cast<size_t>(v)]));
      } else if (kc.type == ColumnType::kTime) {
        FLOE_RETURN_IF_ERROR(builder.AddTime(i, static_cast<int64_t>(v)));
      } else {
        FLOE_RETURN_IF_ERROR(builder.AddNumber(i, v));
      }
    }
    for (size_t a = 0; a < width; a++) {
      const size_t col = key_columns.size() + a;
      const Moments& m = group_moments[g * width + a];
      double v = frame::kNA;
      switch (aggs[a].fn) {
        case AggFn::kCount:
          v = static_cast<double>(group_rows[g]);
          break;
        case AggFn::kSum:
          if (m.count > 0) v = group_sums[g * width + a];
          break;
        case AggFn::kMean:
          if (m.count > 0) v = group_sums[g * width + a] / static_cast<double>(m.count);
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
              group_sketches[g * ds.count + static_cast<size_t>(ds.slot[a])].Cardinality(true));
          break;
      }
      FLOE_RETURN_IF_ERROR(std::isnan(v) ? builder.AddNA(col) : builder.AddNumber(col, v));
    }
    FLOE_RETURN_IF_ERROR(builder.EndRow());
  }
  return builder.Finish();
}

}  // namespace

Result<Frame> GroupBy(const Frame& frame, const std::vector<size_t>& keys,
                      const std::vector<Aggregate>& aggs, const TaskOptions& options) {
  FLOE_RETURN_IF_ERROR(CheckGroupBy(frame, keys, aggs));
  FLOE_ASSIGN_OR_RETURN(Groups groups, ReduceGroups(frame, keys, aggs, options));
  std::vector<GroupColumn> key_columns, agg_columns;
  for (size_t k : keys) {
    key_columns.push_back(
        {.name = frame.name(k), .type = frame.vec(k).type(), .domain = &frame.vec(k).domain()});
  }
  for (const Aggregate& a : aggs) {
    agg_columns.push_back({.name = frame.name(a.col), .type = frame.vec(a.col).type()});
  }
  // Built while the tables live (and stay charged).
  return BuildGroupFrame(groups.keys, groups.rows, groups.moments, groups.sums, groups.sketches,
                         key_columns, agg_columns, aggs, frame.header_bytes(), options);
}

Result<GroupTable> GroupByTable(const Frame& frame, const std::vector<size_t>& keys,
                                const std::vector<Aggregate>& aggs, const TaskOptions& options) {
  FLOE_RETURN_IF_ERROR(CheckGroupBy(frame, keys, aggs));
  GroupTable t;
  if (frame.chunk_count() == 0) return t;
  FLOE_ASSIGN_OR_RETURN(Groups groups, ReduceGroups(frame, keys, aggs, options));
  t.keys = std::move(groups.keys);
  t.rows = std::move(groups.rows);
  t.moments = std::move(groups.moments);
  t.sums = std::move(groups.sums);
  t.sketches = std::move(groups.sketches);
  return t;
}

Status MergeGroupTables(GroupTable& a, GroupTable&& b, size_t keys,
                        const std::vector<Aggregate>& aggs) {
  const size_t width = aggs.size();
  const size_t distinct = DistinctCount(aggs);
  for (const GroupTable* t :
       {static_cast<const GroupTable*>(&a), static_cast<const GroupTable*>(&b)}) {
    const size_t n = t->keys.size();
    if (t->rows.size() != n || t->moments.size() != n * width || t->sums.size() != n * width ||
        t->sketches.size() != n * distinct) {
      return Status::Corruption("a group table of another shape");
    }
    for (const std::vector<double>& k : t->keys) {
      if (k.size() != keys) return Status::Corruption("a group of other keys");
    }
  }
  const uint64_t max_groups = MaxGroups(keys, aggs);
  std::unordered_map<std::vector<uint64_t>, uint32_t, KeyHash> index;
  index.reserve(a.keys.size() + b.keys.size());
  std::vector<uint64_t> key(keys);
  for (uint32_t i = 0; i < a.keys.size(); i++) {
    for (size_t x = 0; x < keys; x++) key[x] = Canonical(a.keys[i][x]);
    index.try_emplace(key, i);
  }
  for (size_t j = 0; j < b.keys.size(); j++) {
    for (size_t x = 0; x < keys; x++) key[x] = Canonical(b.keys[j][x]);
    auto [it, fresh] = index.try_emplace(key, static_cast<uint32_t>(a.keys.size()));
    if (fresh) {
      if (a.keys.size() >= max_groups) return TooManyGroups(keys, aggs);
      std::vector<double>& k = a.keys.emplace_back(std::move(b.keys[j]));
      for (double& v : k) {
        if (std::isnan(v)) v = frame::kNA;
        if (v == 0) v = 0;  // -0 is 0
      }
      a.rows.push_back(b.rows[j]);
      a.moments.insert(a.moments.end(), b.moments.begin() + static_cast<ptrdiff_t>(j * width),
                       b.moments.begin() + static_cast<ptrdiff_t>((j + 1) * width));
      a.sums.insert(a.sums.end(), b.sums.begin() + static_cast<ptrdiff_t>(j * width),
                    b.sums.begin() + static_cast<ptrdiff_t>((j + 1) * width));
      for (size_t d = 0; d < distinct; d++) {
        a.sketches.push_back(std::move(b.sketches[j * distinct + d]));
      }
      continue;
    }
    const uint32_t at = it->second;
    a.rows[at] += b.rows[j];
    for (size_t x = 0; x < width; x++) {
      a.moments[at * width + x].Merge(b.moments[j * width + x]);
      a.sums[at * width + x] += b.sums[j * width + x];
    }
    for (size_t d = 0; d < distinct; d++) {
      sketch::HyperLogLog& into = a.sketches[at * distinct + d];
      const sketch::HyperLogLog& from = b.sketches[j * distinct + d];
      if (!(into.params() == from.params())) {
        return Status::Corruption("a group's sketch of other parameters");
      }
      FLOE_RETURN_IF_ERROR(into.Merge(from));
    }
  }
  return Status::OK();
}

Result<Frame> FinishGroupBy(const GroupTable& table, const std::vector<GroupColumn>& key_columns,
                            const std::vector<GroupColumn>& agg_columns,
                            const std::vector<Aggregate>& aggs, const TaskOptions& options) {
  uint64_t header_bytes = 0;
  for (const GroupColumn& k : key_columns) {
    if (k.domain == nullptr) continue;
    for (const std::string& v : *k.domain) header_bytes += v.size() + sizeof(std::string);
  }
  return BuildGroupFrame(table.keys, table.rows, table.moments, table.sums, table.sketches,
                         key_columns, agg_columns, aggs, header_bytes, options);
}

}  // namespace floe::mr
