// Count-Min commands: RedisBloom's CMS.* with its replies and error texts, plus Floe's integer
// range sketches (CMS.INITRANGE, CMS.RANGE, CMS.QUANTILE).

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "server/internal/command.h"
#include "server/internal/sketch_cell.h"
#include "sketch/sketch.h"

namespace floe::server::internal {

namespace {

using sketch::CountMin;
using sketch::RangeCountMin;
using store::Mutation;
using store::Value;
using store::ValuePtr;

constexpr uint16_t kCms = static_cast<uint16_t>(ValueType::kCountMin);
constexpr uint16_t kCmsRange = static_cast<uint16_t>(ValueType::kRangeCountMin);
const char kNotInRange[] = "CMS: item is not an integer in the sketch's range";

// The cell of a Count-Min value of `type`.
template <typename T>
Result<const SketchCell<T>*> CellFor(const Value& v, uint16_t type) {
  if (v.type() != type) return Status::InvalidArgument(kWrongType);
  Result<const SketchCell<T>*> cell = CellOf<T>(v);
  if (!cell.ok()) return Status::Corruption("ERR corrupt Count-Min sketch");
  return cell;
}

bool ParseUnsigned32(std::string_view s, uint32_t* out) {
  int64_t v = 0;
  if (!ParseInt64(s, &v) || v < 0 || v > UINT32_MAX) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

// RedisBloom's number parsing, finite values only.
bool ParseFiniteDouble(std::string_view s, double* out) {
  return ParseRedisDouble(s, out) && std::isfinite(*out);
}

const char kNoMemory[] = "CMS: Insufficient memory to create the key";

// Whether a sketch of `bytes` may be made: at most proto-max-bulk-len (as any client-sized
// allocation), and within maxmemory (sketch_cell.h, rule 8). Replies and returns false if not.
bool MayAllocate(CommandContext& ctx, uint64_t bytes) {
  if (bytes > static_cast<uint64_t>(ctx.engine.proto_max_bulk_len())) {
    ctx.Error(kNoMemory);
    return false;
  }
  Status s = CheckAllocation(ctx, bytes);
  if (!s.ok()) ctx.Error(s);
  return s.ok();
}

// Creates `key` holding `sketch` (in its cell, allocated once) unless it exists.
template <typename T>
void Create(CommandContext& ctx, uint16_t type, T sketch) {
  bool existed = false;
  const std::string_view key = ctx.args[1];
  Result<ValuePtr> made = MakeCellValue(ctx, key, type, std::move(sketch), 0);
  if (!made.ok()) return ctx.Error(made.status());
  Status s = ctx.store().Mutate(key, [&](const Value* cur) -> Result<Mutation> {
    existed = Live(cur, ctx.now_ms) != nullptr;
    if (existed) return Mutation::Keep();
    return Mutation::Put(*made);
  });
  if (!s.ok()) return ctx.Error(s);
  if (existed) return ctx.Error("CMS: key already exists");
  ctx.out.Ok();
}

bool Exists(CommandContext& ctx) {
  if (Lookup(ctx, ctx.args[1], /*count_stats=*/false)) {
    ctx.Error("CMS: key already exists");
    return true;
  }
  return false;
}

}  // namespace

void CmdCmsInitByDim(CommandContext& ctx) {
  if (Exists(ctx)) return;
  uint32_t width = 0, depth = 0;
  if (!ParseUnsigned32(ctx.args[2], &width) || width == 0) return ctx.Error("CMS: invalid width");
  if (!ParseUnsigned32(ctx.args[3], &depth) || depth == 0) return ctx.Error("CMS: invalid depth");
  if (!MayAllocate(ctx, CountMin::BytesFor(width, depth))) return;
  Result<CountMin> c = CountMin::Create(width, depth);
  if (!c.ok()) return ctx.Error(kNoMemory);
  Create(ctx, kCms, std::move(c).value());
}

void CmdCmsInitByProb(CommandContext& ctx) {
  if (Exists(ctx)) return;
  double error = 0, prob = 0;
  if (!ParseFiniteDouble(ctx.args[2], &error) || !(error > 0 && error < 1)) {
    return ctx.Error("CMS: invalid overestimation value");
  }
  if (!ParseFiniteDouble(ctx.args[3], &prob) || !(prob > 0 && prob < 1)) {
    return ctx.Error("CMS: invalid prob value");
  }
  // RedisBloom's sizing (CountMin::CreateForError), bounded before anything is allocated.
  const double width = std::ceil(2.0 / error);
  const double depth = std::max(
      1.0, std::ceil(static_cast<double>(std::log10(static_cast<float>(prob)) / std::log10(0.5f))));
  if (width <= UINT32_MAX && depth >= 1 && depth <= UINT32_MAX &&
      !MayAllocate(
          ctx, CountMin::BytesFor(static_cast<uint32_t>(width), static_cast<uint32_t>(depth)))) {
    return;
  }
  Result<CountMin> c = CountMin::CreateForError(error, prob);
  if (!c.ok()) return ctx.Error(kNoMemory);
  Create(ctx, kCms, std::move(c).value());
}

void CmdCmsInitRange(CommandContext& ctx) {
  if (Exists(ctx)) return;
  uint32_t width = 0, depth = 0, bits = 0;
  if (!ParseUnsigned32(ctx.args[2], &width) || width == 0) return ctx.Error("CMS: invalid width");
  if (!ParseUnsigned32(ctx.args[3], &depth) || depth == 0) return ctx.Error("CMS: invalid depth");
  if (!ParseUnsigned32(ctx.args[4], &bits) || bits < 1 || bits > 32) {
    return ctx.Error("CMS: bits must be between 1 and 32");
  }
  if (!MayAllocate(ctx, RangeCountMin::BytesFor(width, depth, static_cast<int>(bits)))) return;
  Result<RangeCountMin> r = RangeCountMin::Create(width, depth, static_cast<int>(bits));
  if (!r.ok()) return ctx.Error(kNoMemory);
  Create(ctx, kCmsRange, std::move(r).value());
}

void CmdCmsIncrBy(CommandContext& ctx) {
  if (ctx.args.size() % 2 != 0) {
    return ctx.Error("ERR wrong number of arguments for 'cms.incrby' command");
  }
  std::vector<uint32_t> incrs;
  for (size_t i = 3; i < ctx.args.size(); i += 2) {
    int64_t v = 0;
    if (!ParseInt64(ctx.args[i], &v)) return ctx.Error("CMS: Cannot parse number");
    if (v < 0) return ctx.Error("CMS: Number cannot be negative");
    incrs.push_back(static_cast<uint32_t>(std::min<int64_t>(v, UINT32_MAX)));
  }
  const std::string_view key = ctx.args[1];
  ValuePtr v = Lookup(ctx, key);
  if (!v) return ctx.Error("CMS: key does not exist");
  // Both kinds must exist before INCRBY: created meanwhile or removed meanwhile, the same error.
  auto missing = [](auto* tag) -> Result<std::remove_pointer_t<decltype(tag)>> {
    return Status::NotFound("CMS: key does not exist");
  };
  using Results = std::vector<Result<uint32_t>>;
  Result<Results> results = Status::Internal("unset");
  if (v->type() == kCms) {
    results = UpdateSketch<CountMin, Results>(
        ctx, key, kCms, [&](const Value& cur) { return CellFor<CountMin>(cur, kCms); },
        [&] { return missing(static_cast<CountMin*>(nullptr)); },
        [&](CountMin& c, bool* changed) -> Result<Results> {
          Results out;
          for (size_t i = 0; i < incrs.size(); i++)
            out.push_back(c.Add(ctx.args[2 + 2 * i], incrs[i]));
          *changed = true;
          return out;
        });
  } else if (v->type() == kCmsRange) {
    results = UpdateSketch<RangeCountMin, Results>(
        ctx, key, kCmsRange,
        [&](const Value& cur) { return CellFor<RangeCountMin>(cur, kCmsRange); },
        [&] { return missing(static_cast<RangeCountMin*>(nullptr)); },
        [&](RangeCountMin& r, bool* changed) -> Result<Results> {
          // Every item is checked before any counter moves.
          std::vector<uint64_t> values;
          for (size_t i = 0; i < incrs.size(); i++) {
            int64_t x = 0;
            if (!ParseInt64(ctx.args[2 + 2 * i], &x) || x < 0 ||
                (static_cast<uint64_t>(x) >> r.bits()) != 0) {
              return Results{Status::InvalidArgument(kNotInRange)};
            }
            values.push_back(static_cast<uint64_t>(x));
          }
          Results out;
          for (size_t i = 0; i < values.size(); i++) {
            Status added = r.Add(values[i], incrs[i]);
            if (added.ok()) {
              out.emplace_back(
                  static_cast<uint32_t>(std::min<uint64_t>(r.Point(values[i]), UINT32_MAX)));
            } else {
              out.emplace_back(added);
            }
          }
          *changed = true;
          return out;
        });
  } else {
    return ctx.WrongType();
  }
  if (!results.ok()) return ctx.Error(results.status());
  if (results->size() == 1 && results->front().status().code() == StatusCode::kInvalidArgument) {
    return ctx.Error(kNotInRange);
  }
  ctx.out.ArrayHeader(results->size());
  for (const auto& r : *results) {
    if (r.ok()) {
      ctx.out.Integer(*r);
    } else {
      ctx.out.Error("CMS: INCRBY overflow");
    }
  }
}

namespace {
// The value at `key` if it is a Count-Min sketch of either kind; false (with the reply written)
// otherwise.
bool LoadForRead(CommandContext& ctx, std::string_view key, ValuePtr* v) {
  *v = Lookup(ctx, key);
  if (!*v) {
    ctx.Error("CMS: key does not exist");
    return false;
  }
  if ((*v)->type() != kCms && (*v)->type() != kCmsRange) {
    ctx.WrongType();
    return false;
  }
  return true;
}

// A copy of the plain Count-Min sketch in `v` (type already checked).
Result<CountMin> CopyCountMin(const Value& v) {
  FLOE_ASSIGN_OR_RETURN(const auto* cell, CellFor<CountMin>(v, kCms));
  return cell->Read([](const CountMin& c) { return c; });
}
}  // namespace

void CmdCmsQuery(CommandContext& ctx) {
  ValuePtr v;
  if (!LoadForRead(ctx, ctx.args[1], &v)) return;
  const size_t n = ctx.args.size() - 2;
  std::vector<int64_t> counts;
  counts.reserve(n);
  if (v->type() == kCms) {
    Result<const SketchCell<CountMin>*> cell = CellFor<CountMin>(*v, kCms);
    if (!cell.ok()) return ctx.Error(cell.status());
    (*cell)->Read([&](const CountMin& c) {
      for (size_t i = 2; i < ctx.args.size(); i++) counts.push_back(c.Query(ctx.args[i]));
    });
  } else {
    Result<const SketchCell<RangeCountMin>*> cell = CellFor<RangeCountMin>(*v, kCmsRange);
    if (!cell.ok()) return ctx.Error(cell.status());
    (*cell)->Read([&](const RangeCountMin& r) {
      for (size_t i = 2; i < ctx.args.size(); i++) {
        int64_t x = 0;
        const bool ok =
            ParseInt64(ctx.args[i], &x) && x >= 0 && (static_cast<uint64_t>(x) >> r.bits()) == 0;
        counts.push_back(ok ? static_cast<int64_t>(r.Point(static_cast<uint64_t>(x))) : 0);
      }
    });
  }
  ctx.out.ArrayHeader(n);
  for (int64_t c : counts) ctx.out.Integer(c);
}

void CmdCmsInfo(CommandContext& ctx) {
  ValuePtr v;
  if (!LoadForRead(ctx, ctx.args[1], &v)) return;
  uint32_t width = 0, depth = 0;
  uint64_t count = 0;
  int bits = 0;
  if (v->type() == kCms) {
    Result<const SketchCell<CountMin>*> cell = CellFor<CountMin>(*v, kCms);
    if (!cell.ok()) return ctx.Error(cell.status());
    (*cell)->Read(
        [&](const CountMin& c) { width = c.width(), depth = c.depth(), count = c.total(); });
  } else {
    Result<const SketchCell<RangeCountMin>*> cell = CellFor<RangeCountMin>(*v, kCmsRange);
    if (!cell.ok()) return ctx.Error(cell.status());
    (*cell)->Read([&](const RangeCountMin& r) {
      width = r.level(0).width(), depth = r.level(0).depth(), count = r.total(), bits = r.bits();
    });
  }
  ctx.out.MapHeader(bits > 0 ? 4 : 3);
  ctx.out.Bulk("width");
  ctx.out.Integer(width);
  ctx.out.Bulk("depth");
  ctx.out.Integer(depth);
  ctx.out.Bulk("count");
  ctx.out.Integer(static_cast<int64_t>(count));
  if (bits > 0) {
    ctx.out.Bulk("bits");
    ctx.out.Integer(bits);
  }
}

// CMS.MERGE dest numkeys src... [WEIGHTS w...]: dest must exist; its counters are replaced in
// place by the weighted sum of the sources (sketch_cell.h, rule 3).
void CmdCmsMerge(CommandContext& ctx) {
  int64_t numkeys = 0;
  if (!ParseInt64(ctx.args[2], &numkeys)) return ctx.Error("CMS: invalid numkeys");
  if (numkeys <= 0) return ctx.Error("CMS: Number of keys must be positive");
  const size_t n = static_cast<size_t>(numkeys);
  if (ctx.args.size() < 3 + n) return ctx.Error("CMS: wrong number of keys");
  std::vector<int64_t> weights(n, 1);
  if (ctx.args.size() > 3 + n) {
    if (!EqualsIgnoreCase(ctx.args[3 + n], "WEIGHTS") || ctx.args.size() != 4 + 2 * n) {
      return ctx.Error("CMS: wrong number of keys/weights");
    }
    for (size_t i = 0; i < n; i++) {
      if (!ParseInt64(ctx.args[4 + n + i], &weights[i])) {
        return ctx.Error("CMS: invalid weight value");
      }
    }
  }
  ValuePtr dest = Lookup(ctx, ctx.args[1]);
  if (!dest) return ctx.Error("CMS: key does not exist");
  if (dest->type() != kCms) return ctx.WrongType();
  Result<const SketchCell<CountMin>*> out = CellFor<CountMin>(*dest, kCms);
  if (!out.ok()) return ctx.Error(out.status());
  std::vector<CountMin> sources;
  sources.reserve(n);
  for (size_t i = 0; i < n; i++) {
    ValuePtr v = Lookup(ctx, ctx.args[3 + i]);
    if (!v) return ctx.Error("CMS: key does not exist");
    if (v->type() != kCms) return ctx.WrongType();
    Result<CountMin> c = CopyCountMin(*v);
    if (!c.ok()) return ctx.Error(c.status());
    sources.push_back(std::move(c).value());
  }
  std::vector<std::pair<const CountMin*, int64_t>> weighted;
  for (size_t i = 0; i < n; i++) weighted.emplace_back(&sources[i], weights[i]);
  // In place (sketch_cell.h, rule 3); the merge builds its counters beside the old ones first.
  std::optional<Status> s = (*out)->TryMutate([&](CountMin& c, bool* changed) -> Status {
    FLOE_RETURN_IF_ERROR(CheckAllocation(ctx, c.MemoryBytes()));
    Status merged = c.MergeWeighted(weighted);
    *changed = merged.ok();
    return merged;
  });
  if (!s.has_value()) return ctx.Error("CMS: key does not exist");
  if (s->code() == StatusCode::kInvalidArgument) return ctx.Error("CMS: width/depth is not equal");
  if (s->code() == StatusCode::kResourceExhausted) return ctx.Error(*s);
  if (!s->ok()) return ctx.Error("CMS: MERGE overflow");
  ctx.out.Ok();
}

namespace {
// The range sketch at the command's key; *v holds its value, and with it the cell, for as long
// as the caller reads it: nothing else keeps a value that DEL or SET removes meanwhile.
const SketchCell<RangeCountMin>* LoadRange(CommandContext& ctx, ValuePtr* v) {
  if (!LoadForRead(ctx, ctx.args[1], v)) return nullptr;
  if ((*v)->type() != kCmsRange) {
    ctx.Error("CMS: not a range sketch (create it with CMS.INITRANGE)");
    return nullptr;
  }
  Result<const SketchCell<RangeCountMin>*> cell = CellFor<RangeCountMin>(**v, kCmsRange);
  if (!cell.ok()) {
    ctx.Error(cell.status());
    return nullptr;
  }
  return *cell;
}
}  // namespace

void CmdCmsRange(CommandContext& ctx) {
  int64_t lo = 0, hi = 0;
  if (!ParseInt64(ctx.args[2], &lo) || !ParseInt64(ctx.args[3], &hi)) return ctx.NotInteger();
  ValuePtr held;
  const SketchCell<RangeCountMin>* cell = LoadRange(ctx, &held);
  if (cell == nullptr) return;
  if (hi < 0 || lo > hi) return ctx.out.Integer(0);
  ctx.out.Integer(static_cast<int64_t>(cell->Read([&](const RangeCountMin& r) {
    return r.RangeCount(static_cast<uint64_t>(std::max<int64_t>(lo, 0)), static_cast<uint64_t>(hi));
  })));
}

// Each quantile is a binary search of range counts: O(bits^2 x depth). The count a call may
// ask is bounded (as FRAME.QUANTILE's), so one short command cannot hold its I/O thread for
// minutes on a deep sketch.
constexpr size_t kMaxQuantiles = 100;

void CmdCmsQuantile(CommandContext& ctx) {
  if (ctx.args.size() - 2 > kMaxQuantiles) {
    return ctx.Error("ERR at most " + std::to_string(kMaxQuantiles) + " quantiles per call");
  }
  std::vector<double> qs;
  for (size_t i = 2; i < ctx.args.size(); i++) {
    double q = 0;
    if (!ParseFiniteDouble(ctx.args[i], &q) || q < 0 || q > 1) {
      return ctx.Error("CMS: quantile must be a number between 0 and 1");
    }
    qs.push_back(q);
  }
  ValuePtr held;
  const SketchCell<RangeCountMin>* cell = LoadRange(ctx, &held);
  if (cell == nullptr) return;
  std::vector<uint64_t> out = cell->Read([&](const RangeCountMin& r) {
    std::vector<uint64_t> v;
    for (double q : qs) v.push_back(r.Quantile(q));
    return v;
  });
  ctx.out.ArrayHeader(out.size());
  for (uint64_t x : out) ctx.out.Integer(static_cast<int64_t>(x));
}

}  // namespace floe::server::internal
