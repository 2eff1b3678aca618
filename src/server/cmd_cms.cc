// Count-Min commands: RedisBloom's CMS.* with its replies and error texts, plus Floe's integer
// range sketches (CMS.INITRANGE, CMS.RANGE, CMS.QUANTILE).

#include <cmath>
#include <cstdlib>

#include "server/internal/command.h"
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
const char kWrongType[] = "WRONGTYPE Operation against a key holding the wrong kind of value";

bool ParseUnsigned32(std::string_view s, uint32_t* out) {
  int64_t v = 0;
  if (!ParseInt64(s, &v) || v < 0 || v > UINT32_MAX) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

bool ParseDouble(std::string_view s, double* out) {
  long double v = 0;
  if (!ParseLongDouble(s, &v)) return false;
  *out = static_cast<double>(v);
  return std::isfinite(*out);
}

// Creates `key` with `bytes` of `type` unless it exists.
void Create(CommandContext& ctx, uint16_t type, const std::string& bytes) {
  bool existed = false;
  const std::string_view key = ctx.args[1];
  Status s = ctx.store().Mutate(key, [&](const Value* cur) -> Result<Mutation> {
    existed = Live(cur, ctx.now_ms) != nullptr;
    if (existed) return Mutation::Keep();
    FLOE_ASSIGN_OR_RETURN(ValuePtr v, Value::Make(key, type, bytes));
    return Mutation::Put(std::move(v));
  });
  if (!s.ok()) return ctx.Error("ERR " + std::string(s.message()));
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
  Result<CountMin> c = CountMin::Create(width, depth);
  if (!c.ok()) return ctx.Error("CMS: Insufficient memory to create the key");
  Create(ctx, kCms, c->Serialize());
}

void CmdCmsInitByProb(CommandContext& ctx) {
  if (Exists(ctx)) return;
  double error = 0, prob = 0;
  if (!ParseDouble(ctx.args[2], &error) || !(error > 0 && error < 1)) {
    return ctx.Error("CMS: invalid overestimation value");
  }
  if (!ParseDouble(ctx.args[3], &prob) || !(prob > 0 && prob < 1)) {
    return ctx.Error("CMS: invalid prob value");
  }
  Result<CountMin> c = CountMin::CreateForError(error, prob);
  if (!c.ok()) return ctx.Error("CMS: Insufficient memory to create the key");
  Create(ctx, kCms, c->Serialize());
}

void CmdCmsInitRange(CommandContext& ctx) {
  if (Exists(ctx)) return;
  uint32_t width = 0, depth = 0, bits = 0;
  if (!ParseUnsigned32(ctx.args[2], &width) || width == 0) return ctx.Error("CMS: invalid width");
  if (!ParseUnsigned32(ctx.args[3], &depth) || depth == 0) return ctx.Error("CMS: invalid depth");
  if (!ParseUnsigned32(ctx.args[4], &bits) || bits < 1 || bits > 32) {
    return ctx.Error("CMS: bits must be between 1 and 32");
  }
  Result<RangeCountMin> r = RangeCountMin::Create(width, depth, static_cast<int>(bits));
  if (!r.ok()) return ctx.Error("CMS: Insufficient memory to create the key");
  Create(ctx, kCmsRange, r->Serialize());
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
  std::vector<Result<uint32_t>> results;
  Status s = ctx.store().Mutate(key, [&](const Value* cur) -> Result<Mutation> {
    results.clear();
    const Value* live = Live(cur, ctx.now_ms);
    if (live == nullptr) return Status::NotFound("CMS: key does not exist");
    std::string bytes;
    if (live->type() == kCms) {
      FLOE_ASSIGN_OR_RETURN(CountMin c, CountMin::Parse(live->payload()));
      for (size_t i = 0; i < incrs.size(); i++)
        results.push_back(c.Add(ctx.args[2 + 2 * i], incrs[i]));
      bytes = c.Serialize();
    } else if (live->type() == kCmsRange) {
      FLOE_ASSIGN_OR_RETURN(RangeCountMin r, RangeCountMin::Parse(live->payload()));
      for (size_t i = 0; i < incrs.size(); i++) {
        int64_t x = 0;
        if (!ParseInt64(ctx.args[2 + 2 * i], &x) || x < 0 ||
            (static_cast<uint64_t>(x) >> r.bits()) != 0) {
          return Status::InvalidArgument("CMS: item is not an integer in the sketch's range");
        }
        Status added = r.Add(static_cast<uint64_t>(x), incrs[i]);
        if (added.ok()) {
          results.emplace_back(static_cast<uint32_t>(
              std::min<uint64_t>(r.Point(static_cast<uint64_t>(x)), UINT32_MAX)));
        } else {
          results.emplace_back(added);
        }
      }
      bytes = r.Serialize();
    } else {
      return Status::InvalidArgument(kWrongType);
    }
    FLOE_ASSIGN_OR_RETURN(ValuePtr v, Value::Make(key, live->type(), bytes, live->expire_at_ms()));
    return Mutation::Put(std::move(v));
  });
  if (!s.ok()) return ctx.Error(s.message());
  ctx.out.ArrayHeader(results.size());
  for (const auto& r : results) {
    if (r.ok()) {
      ctx.out.Integer(*r);
    } else {
      ctx.out.Error("CMS: INCRBY overflow");
    }
  }
}

namespace {
// Loads either kind for reading; false (with the reply written) on error.
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
}  // namespace

void CmdCmsQuery(CommandContext& ctx) {
  ValuePtr v;
  if (!LoadForRead(ctx, ctx.args[1], &v)) return;
  if (v->type() == kCms) {
    Result<CountMin> c = CountMin::Parse(v->payload());
    if (!c.ok()) return ctx.Error("ERR corrupt Count-Min sketch");
    ctx.out.ArrayHeader(ctx.args.size() - 2);
    for (size_t i = 2; i < ctx.args.size(); i++) ctx.out.Integer(c->Query(ctx.args[i]));
    return;
  }
  Result<RangeCountMin> r = RangeCountMin::Parse(v->payload());
  if (!r.ok()) return ctx.Error("ERR corrupt Count-Min sketch");
  ctx.out.ArrayHeader(ctx.args.size() - 2);
  for (size_t i = 2; i < ctx.args.size(); i++) {
    int64_t x = 0;
    const bool ok =
        ParseInt64(ctx.args[i], &x) && x >= 0 && (static_cast<uint64_t>(x) >> r->bits()) == 0;
    ctx.out.Integer(ok ? static_cast<int64_t>(r->Point(static_cast<uint64_t>(x))) : 0);
  }
}

void CmdCmsInfo(CommandContext& ctx) {
  ValuePtr v;
  if (!LoadForRead(ctx, ctx.args[1], &v)) return;
  uint32_t width = 0, depth = 0;
  uint64_t count = 0;
  int bits = 0;
  if (v->type() == kCms) {
    Result<CountMin> c = CountMin::Parse(v->payload());
    if (!c.ok()) return ctx.Error("ERR corrupt Count-Min sketch");
    width = c->width(), depth = c->depth(), count = c->total();
  } else {
    Result<RangeCountMin> r = RangeCountMin::Parse(v->payload());
    if (!r.ok()) return ctx.Error("ERR corrupt Count-Min sketch");
    width = r->level(0).width(), depth = r->level(0).depth(), count = r->total(), bits = r->bits();
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

// CMS.MERGE dest numkeys src... [WEIGHTS w...]: dest must exist and is overwritten.
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
  Result<CountMin> out = CountMin::Parse(dest->payload());
  if (!out.ok()) return ctx.Error("ERR corrupt Count-Min sketch");
  std::vector<CountMin> sources;
  sources.reserve(n);
  for (size_t i = 0; i < n; i++) {
    ValuePtr v = Lookup(ctx, ctx.args[3 + i]);
    if (!v) return ctx.Error("CMS: key does not exist");
    if (v->type() != kCms) return ctx.WrongType();
    Result<CountMin> c = CountMin::Parse(v->payload());
    if (!c.ok()) return ctx.Error("ERR corrupt Count-Min sketch");
    sources.push_back(std::move(c).value());
  }
  std::vector<std::pair<const CountMin*, int64_t>> weighted;
  for (size_t i = 0; i < n; i++) weighted.emplace_back(&sources[i], weights[i]);
  Status s = out->MergeWeighted(weighted);
  if (s.code() == StatusCode::kInvalidArgument) return ctx.Error("CMS: width/depth is not equal");
  if (!s.ok()) return ctx.Error("CMS: MERGE overflow");
  Result<ValuePtr> next = Value::Make(ctx.args[1], kCms, out->Serialize(), dest->expire_at_ms());
  if (!next.ok()) return ctx.Error("ERR " + std::string(next.status().message()));
  ctx.store().Put(std::move(next).value());
  ctx.out.Ok();
}

namespace {
bool LoadRange(CommandContext& ctx, Result<RangeCountMin>* r) {
  ValuePtr v;
  if (!LoadForRead(ctx, ctx.args[1], &v)) return false;
  if (v->type() != kCmsRange) {
    ctx.Error("CMS: not a range sketch (create it with CMS.INITRANGE)");
    return false;
  }
  *r = RangeCountMin::Parse(v->payload());
  if (!r->ok()) {
    ctx.Error("ERR corrupt Count-Min sketch");
    return false;
  }
  return true;
}
}  // namespace

void CmdCmsRange(CommandContext& ctx) {
  int64_t lo = 0, hi = 0;
  if (!ParseInt64(ctx.args[2], &lo) || !ParseInt64(ctx.args[3], &hi)) return ctx.NotInteger();
  Result<RangeCountMin> r = Status::Internal("unset");
  if (!LoadRange(ctx, &r)) return;
  if (hi < 0 || lo > hi) return ctx.out.Integer(0);
  ctx.out.Integer(static_cast<int64_t>(
      r->RangeCount(static_cast<uint64_t>(std::max<int64_t>(lo, 0)), static_cast<uint64_t>(hi))));
}

void CmdCmsQuantile(CommandContext& ctx) {
  std::vector<double> qs;
  for (size_t i = 2; i < ctx.args.size(); i++) {
    double q = 0;
    if (!ParseDouble(ctx.args[i], &q) || q < 0 || q > 1) {
      return ctx.Error("CMS: quantile must be a number between 0 and 1");
    }
    qs.push_back(q);
  }
  Result<RangeCountMin> r = Status::Internal("unset");
  if (!LoadRange(ctx, &r)) return;
  ctx.out.ArrayHeader(qs.size());
  for (double q : qs) ctx.out.Integer(static_cast<int64_t>(r->Quantile(q)));
}

}  // namespace floe::server::internal
