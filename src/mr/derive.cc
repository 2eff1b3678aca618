// Derived frames: FRAME.FILTER's task (mr.h, "derived frames").
//
// How a filter runs: one map per source chunk k. The map marks the chunk's rows that pass every
// condition (a byte a row, one pass over each compared column's chunk with ForEach, so a sparse
// or constant chunk costs no search per row), then cuts each column's chunk k down to those
// rows and compresses it as a builder would. The reduce appends the chunks in chunk order, so
// the output's row order is the source's. Memory: a chunk's scratch (the mask and one column's
// values) is reserved before it is allocated and given back after; each output chunk is
// reserved once compressed and held until the task returns.

#include <algorithm>
#include <cmath>

#include "mr/mr.h"

namespace floe::mr {

using frame::ChunkView;
using frame::ColumnType;
using frame::Frame;

std::optional<FilterOp> ParseFilterOp(std::string_view op) {
  if (op == "=" || op == "==") return FilterOp::kEq;
  if (op == "!=" || op == "<>") return FilterOp::kNe;
  if (op == "<") return FilterOp::kLt;
  if (op == "<=") return FilterOp::kLe;
  if (op == ">") return FilterOp::kGt;
  if (op == ">=") return FilterOp::kGe;
  auto upper_equals = [&](std::string_view word) {
    return op.size() == word.size() &&
           std::equal(op.begin(), op.end(), word.begin(), [](char a, char b) {
             return (a >= 'a' && a <= 'z' ? static_cast<char>(a - 32) : a) == b;
           });
  };
  if (upper_equals("ISNA")) return FilterOp::kIsNA;
  if (upper_equals("NOTNA")) return FilterOp::kNotNA;
  return std::nullopt;
}

namespace {

// A condition checked against its column once, before the task.
struct Compiled {
  size_t col = 0;
  FilterOp op = FilterOp::kEq;
  ColumnType type = ColumnType::kReal;
  double number = 0;      // numeric, time; a categorical's level code (-1: no such level)
  std::string_view text;  // string columns
};

bool Holds(FilterOp op, double v, double x) {
  switch (op) {
    case FilterOp::kEq:
      return v == x;
    case FilterOp::kNe:
      return v != x;
    case FilterOp::kLt:
      return v < x;
    case FilterOp::kLe:
      return v <= x;
    case FilterOp::kGt:
      return v > x;
    case FilterOp::kGe:
      return v >= x;
    case FilterOp::kIsNA:
    case FilterOp::kNotNA:
      break;
  }
  return false;
}

Result<std::vector<Compiled>> Compile(const Frame& f, const std::vector<Condition>& conditions) {
  if (conditions.size() > kMaxFilterConditions) {
    return Status::InvalidArgument("at most 16 conditions");
  }
  std::vector<Compiled> out;
  for (const Condition& c : conditions) {
    const frame::Vec& vec = f.vec(c.col);
    Compiled k{.col = c.col, .op = c.op, .type = vec.type(), .number = c.number, .text = c.text};
    const bool na_test = c.op == FilterOp::kIsNA || c.op == FilterOp::kNotNA;
    const bool equality = c.op == FilterOp::kEq || c.op == FilterOp::kNe;
    if (vec.type() == ColumnType::kCategorical || vec.type() == ColumnType::kString) {
      if (!na_test && !equality) {
        return Status::InvalidArgument("column '" + f.name(c.col).substr(0, 64) + "' is " +
                                       std::string(frame::ColumnTypeName(vec.type())) +
                                       ": it takes =, !=, ISNA and NOTNA");
      }
      if (vec.type() == ColumnType::kCategorical && !na_test) {
        const auto& d = vec.domain();
        const auto at = std::find(d.begin(), d.end(), c.text);
        k.number = at == d.end() ? -1 : static_cast<double>(at - d.begin());
      }
    } else if (!na_test && std::isnan(c.number)) {
      return Status::InvalidArgument("a value compared with a number must be a number");
    }
    out.push_back(k);
  }
  return out;
}

// Marks in keep[i] (already 1 for rows still passing) whether row i of chunk k passes `c`.
void Mark(const Frame& f, size_t k, const Compiled& c, std::vector<uint8_t>& keep) {
  const ChunkView& chunk = f.vec(c.col).chunk(k);
  if (c.type == ColumnType::kString) {
    for (uint32_t i = 0; i < chunk.rows(); i++) {
      if (keep[i] == 0) continue;
      const bool na = chunk.IsNA(i);
      bool pass;
      switch (c.op) {
        case FilterOp::kIsNA:
          pass = na;
          break;
        case FilterOp::kNotNA:
          pass = !na;
          break;
        case FilterOp::kEq:
          pass = !na && chunk.AtString(i) == c.text;
          break;
        default:  // kNe: Compile allows no other
          pass = !na && chunk.AtString(i) != c.text;
          break;
      }
      keep[i] = pass ? 1 : 0;
    }
    return;
  }
  // Numbers, times and categorical codes are doubles to ForEach (NA is NaN). A categorical
  // level that is not in the domain has code -1: = never holds, != holds for every non-NA row.
  chunk.ForEach([&](uint32_t i, double v) {
    const bool na = frame::IsNA(v);
    bool pass;
    if (c.op == FilterOp::kIsNA) {
      pass = na;
    } else if (c.op == FilterOp::kNotNA) {
      pass = !na;
    } else {
      pass = !na && Holds(c.op, v, c.number);
    }
    keep[i] &= pass ? 1 : 0;
  });
}

// The kept rows of one column's chunk k, compressed as a builder would.
Result<std::shared_ptr<const std::string>> Cut(const frame::Vec& vec, size_t k,
                                               const std::vector<uint8_t>& keep, uint32_t kept) {
  const ChunkView& chunk = vec.chunk(k);
  switch (vec.type()) {
    case ColumnType::kString: {
      std::vector<std::optional<std::string_view>> values;
      values.reserve(kept);
      for (uint32_t i = 0; i < chunk.rows(); i++) {
        if (keep[i] == 0) continue;
        if (chunk.IsNA(i)) {
          values.emplace_back(std::nullopt);
        } else {
          values.emplace_back(chunk.AtString(i));
        }
      }
      FLOE_ASSIGN_OR_RETURN(std::string bytes, frame::CompressStrings(values));
      return std::make_shared<const std::string>(std::move(bytes));
    }
    case ColumnType::kCategorical: {
      std::vector<int32_t> codes;
      codes.reserve(kept);
      chunk.ForEach([&](uint32_t i, double v) {
        if (keep[i] != 0)
          codes.push_back(frame::IsNA(v) ? frame::kNACode : static_cast<int32_t>(v));
      });
      return std::make_shared<const std::string>(frame::CompressCodes(codes, chunk.domain()));
    }
    case ColumnType::kTime: {
      std::vector<int64_t> ms;
      ms.reserve(kept);
      const auto limit = static_cast<double>(frame::kMaxTimeMs);
      chunk.ForEach([&](uint32_t i, double v) {
        if (keep[i] == 0) return;
        ms.push_back(std::fabs(v) <= limit ? static_cast<int64_t>(v) : frame::kNATime);
      });
      return std::make_shared<const std::string>(frame::CompressTimes(ms));
    }
    case ColumnType::kInteger:
    case ColumnType::kReal:
      break;
  }
  std::vector<double> values;
  values.reserve(kept);
  chunk.ForEach([&](uint32_t i, double v) {
    if (keep[i] != 0) values.push_back(v);
  });
  return std::make_shared<const std::string>(frame::Compress(values));
}

// Bytes reserved with a budget by the task's workers, all given back when the task returns.
// Thread-safe.
class Held {
 public:
  explicit Held(MemoryBudget* budget) : budget_(budget) {}
  Held(const Held&) = delete;
  Held& operator=(const Held&) = delete;
  ~Held() {
    // relaxed: the workers were joined before the task returns.
    const uint64_t left = bytes_.load(std::memory_order_relaxed);
    if (budget_ != nullptr && left > 0) budget_->Release(left);
  }
  Status Reserve(uint64_t bytes) {
    if (budget_ == nullptr || bytes == 0) return Status::OK();
    FLOE_RETURN_IF_ERROR(budget_->Reserve(bytes));
    bytes_.fetch_add(bytes, std::memory_order_relaxed);  // relaxed: a total for the end
    return Status::OK();
  }
  void Release(uint64_t bytes) {
    if (budget_ == nullptr || bytes == 0) return;
    bytes_.fetch_sub(bytes, std::memory_order_relaxed);  // as above
    budget_->Release(bytes);
  }

 private:
  MemoryBudget* budget_;
  std::atomic<uint64_t> bytes_{0};
};

struct FilterPart {
  bool ok = true;
  uint64_t rows = 0;
  std::vector<std::vector<std::shared_ptr<const std::string>>> chunks;  // [column][piece]
};

}  // namespace

Result<Frame> Filter(const Frame& frame, const std::vector<Condition>& conditions,
                     const TaskOptions& options) {
  FLOE_ASSIGN_OR_RETURN(std::vector<Compiled> compiled, Compile(frame, conditions));
  const size_t columns = frame.columns();
  Held held(options.memory);
  Mutex mu;
  Status first_error;  // guarded by mu
  std::atomic<bool> failed{false};
  auto fail = [&](Status s) {
    MutexLock lock(&mu);
    if (first_error.ok()) first_error = std::move(s);
    failed.store(true, std::memory_order_relaxed);  // relaxed: a hint to skip work; mu orders
  };
  auto map = [&](size_t k) -> FilterPart {
    FilterPart part;
    part.chunks.resize(columns);
    if (failed.load(std::memory_order_relaxed)) {
      part.ok = false;
      return part;
    }
    const uint32_t rows = frame.vec(0).chunk(k).rows();
    // Scratch: the mask, then the widest per-row buffer one column's cut holds (a string view
    // a kept row).
    uint64_t scratch = rows;
    if (Status s = held.Reserve(scratch); !s.ok()) {
      fail(std::move(s));
      part.ok = false;
      return part;
    }
    std::vector<uint8_t> keep(rows, 1);
    for (const Compiled& c : compiled) Mark(frame, k, c, keep);
    const auto kept = static_cast<uint32_t>(std::count(keep.begin(), keep.end(), uint8_t{1}));
    const uint64_t values = uint64_t{kept} * sizeof(std::optional<std::string_view>);
    if (Status s = held.Reserve(values); !s.ok()) {
      fail(std::move(s));
      part.ok = false;
      held.Release(scratch);
      return part;
    }
    scratch += values;
    if (kept > 0) {
      for (size_t col = 0; col < columns && part.ok; col++) {
        Result<std::shared_ptr<const std::string>> bytes = Cut(frame.vec(col), k, keep, kept);
        Status s = bytes.ok() ? held.Reserve((*bytes)->size()) : bytes.status();
        if (!s.ok()) {
          fail(std::move(s));
          part.ok = false;
          break;
        }
        part.chunks[col].push_back(std::move(bytes).value());
      }
      part.rows = kept;
    }
    held.Release(scratch);
    return part;
  };
  auto reduce = [](FilterPart& a, FilterPart&& b) {
    a.ok = a.ok && b.ok;
    a.rows += b.rows;
    if (a.chunks.size() < b.chunks.size()) a.chunks.resize(b.chunks.size());
    for (size_t c = 0; c < b.chunks.size(); c++) {
      for (auto& piece : b.chunks[c]) a.chunks[c].push_back(std::move(piece));
    }
  };
  Result<FilterPart> out = MapReduce<FilterPart>(frame.chunk_count(), map, reduce, options);
  {
    MutexLock lock(&mu);
    if (!first_error.ok()) return first_error;
  }
  FLOE_RETURN_IF_ERROR(out.status());
  out->chunks.resize(columns);
  std::vector<std::string> names;
  std::vector<frame::Vec> vecs;
  for (size_t c = 0; c < columns; c++) {
    names.push_back(frame.name(c));
    FLOE_ASSIGN_OR_RETURN(
        frame::Vec vec,
        frame::Vec::Make(frame.vec(c).type(), frame.vec(c).domain(), std::move(out->chunks[c])));
    vecs.push_back(std::move(vec));
  }
  return Frame::Make(std::move(names), std::move(vecs));
}

}  // namespace floe::mr
