// Sketch commands: Floe's HLL.* (PostgreSQL hll compatible) and Redis's PF*, both on one value
// type holding the PostgreSQL storage bytes.

#include <cmath>

#include "server/internal/command.h"
#include "sketch/sketch.h"

namespace floe::server::internal {

namespace {

using sketch::HllParams;
using sketch::HyperLogLog;
using store::Mutation;
using store::Value;
using store::ValuePtr;

constexpr uint16_t kHllType = static_cast<uint16_t>(ValueType::kHll);
const char kWrongType[] = "WRONGTYPE Operation against a key holding the wrong kind of value";
const char kNotHll[] = "WRONGTYPE Key is not a valid HyperLogLog string value.";
const char kCorrupt[] = "INVALIDOBJ Corrupted HLL object detected";

// The decoded sketch, cached on its Value so repeated adds do not parse the bytes again.
struct HllObject : store::DecodedObject {
  explicit HllObject(HyperLogLog h) : hll(std::move(h)) {}
  HyperLogLog hll;
};

// PFADD's parameters: Redis's precision (2^14 registers of 6 bits).
HllParams RedisParams() { return HllParams{14, 6, -1, true}; }

// The sketch in `v`, or the client's error text. `redis_text` picks PF*'s wording.
Result<HyperLogLog> Load(const Value* v, bool redis_text) {
  if (v->type() != kHllType) {
    return Status::InvalidArgument(
        redis_text && v->type() == static_cast<uint16_t>(ValueType::kString) ? kNotHll
                                                                             : kWrongType);
  }
  if (const auto* obj = dynamic_cast<const HllObject*>(v->decoded())) return obj->hll;
  Result<HyperLogLog> h = HyperLogLog::Parse(v->payload());
  if (!h.ok()) return Status::Corruption(kCorrupt);
  v->CacheDecoded(std::make_unique<HllObject>(*h));
  return h;
}

Result<ValuePtr> MakeHll(std::string_view key, const HyperLogLog& h, int64_t expire_at_ms) {
  FLOE_ASSIGN_OR_RETURN(ValuePtr v, Value::Make(key, kHllType, h.Serialize(), expire_at_ms));
  v->CacheDecoded(std::make_unique<HllObject>(h));
  return v;
}

bool ParseSigned(std::string_view s, int* out, int lo, int hi) {
  int64_t v = 0;
  if (!ParseInt64(s, &v) || v < lo || v > hi) return false;
  *out = static_cast<int>(v);
  return true;
}

// Adds hashes to `key`, creating it with `params` if absent. Returns how many of the hashes
// changed the sketch (an explicit entry added or a register raised), or an error text.
Result<int64_t> AddHashes(CommandContext& ctx, std::string_view key,
                          const std::vector<uint64_t>& hashes, const HllParams& params,
                          bool redis_text, bool* created) {
  int64_t changed = 0;
  Status s = ctx.store().Mutate(key, [&](const Value* cur) -> Result<Mutation> {
    const Value* live = Live(cur, ctx.now_ms);
    changed = 0;
    *created = live == nullptr;
    HyperLogLog h;
    if (live != nullptr) {
      FLOE_ASSIGN_OR_RETURN(h, Load(live, redis_text));
    } else {
      FLOE_ASSIGN_OR_RETURN(h, HyperLogLog::Create(params));
    }
    for (uint64_t hash : hashes) changed += h.AddHash(hash) ? 1 : 0;
    if (changed == 0 && !*created) return Mutation::Keep();
    FLOE_ASSIGN_OR_RETURN(ValuePtr next,
                          MakeHll(key, h, live != nullptr ? live->expire_at_ms() : 0));
    return Mutation::Put(std::move(next));
  });
  if (!s.ok()) return s;
  return changed;
}

// The union of the sketches at `keys` (absent keys are empty), folded to the smallest log2m and
// regwidth among them. nullopt-like: `any` tells whether a key existed.
Result<HyperLogLog> UnionOf(CommandContext& ctx, std::span<const std::string_view> keys,
                            bool redis_text, const HllParams& if_none, bool* any) {
  std::vector<HyperLogLog> parts;
  for (std::string_view k : keys) {
    ValuePtr v = Lookup(ctx, k);
    if (!v) continue;
    FLOE_ASSIGN_OR_RETURN(HyperLogLog h, Load(v.get(), redis_text));
    parts.push_back(std::move(h));
  }
  *any = !parts.empty();
  if (parts.empty()) return HyperLogLog::Create(if_none);
  int log2m = parts[0].params().log2m, regwidth = parts[0].params().regwidth;
  for (const auto& p : parts) {
    log2m = std::min(log2m, p.params().log2m);
    regwidth = std::min(regwidth, p.params().regwidth);
  }
  HllParams params = parts[0].params();
  params.log2m = log2m;
  params.regwidth = regwidth;
  FLOE_ASSIGN_OR_RETURN(HyperLogLog out, HyperLogLog::Create(params));
  for (const auto& p : parts) {
    FLOE_ASSIGN_OR_RETURN(HyperLogLog folded, p.Fold(log2m, regwidth));
    FLOE_RETURN_IF_ERROR(out.Merge(folded));
  }
  return out;
}

std::string HexOf(std::string_view bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out = "\\x";
  for (char c : bytes) {
    out.push_back(kDigits[static_cast<uint8_t>(c) >> 4]);
    out.push_back(kDigits[static_cast<uint8_t>(c) & 15]);
  }
  return out;
}

bool FromHex(std::string_view text, std::string* out) {
  if (text.starts_with("\\x") || text.starts_with("\\X")) text.remove_prefix(2);
  if (text.size() % 2 != 0) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  out->clear();
  for (size_t i = 0; i < text.size(); i += 2) {
    const int hi = nibble(text[i]), lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

}  // namespace

void CmdHllCreate(CommandContext& ctx) {
  HllParams p;
  for (size_t j = 2; j < ctx.args.size(); j += 2) {
    if (j + 1 >= ctx.args.size()) return ctx.SyntaxError();
    const std::string_view opt = ctx.args[j], val = ctx.args[j + 1];
    bool ok = true;
    if (EqualsIgnoreCase(opt, "LOG2M")) {
      ok = ParseSigned(val, &p.log2m, INT32_MIN, INT32_MAX);
    } else if (EqualsIgnoreCase(opt, "REGWIDTH")) {
      ok = ParseSigned(val, &p.regwidth, INT32_MIN, INT32_MAX);
    } else if (EqualsIgnoreCase(opt, "EXPTHRESH")) {
      ok = ParseSigned(val, &p.expthresh, INT32_MIN, INT32_MAX);
    } else if (EqualsIgnoreCase(opt, "SPARSEON")) {
      int on = 0;
      ok = ParseSigned(val, &on, 0, 1);
      if (!ok) return ctx.Error("ERR SPARSEON must be 0 or 1");
      p.sparseon = on == 1;
    } else {
      return ctx.SyntaxError();
    }
    if (!ok) return ctx.NotInteger();
  }
  Status valid = p.Validate();
  if (!valid.ok()) return ctx.Error("ERR " + std::string(valid.message()));
  bool existed = false;
  const std::string_view key = ctx.args[1];
  Status s = ctx.store().Mutate(key, [&](const Value* cur) -> Result<Mutation> {
    existed = Live(cur, ctx.now_ms) != nullptr;
    if (existed) return Mutation::Keep();
    FLOE_ASSIGN_OR_RETURN(HyperLogLog h, HyperLogLog::Create(p));
    FLOE_ASSIGN_OR_RETURN(ValuePtr v, MakeHll(key, h, 0));
    return Mutation::Put(std::move(v));
  });
  if (!s.ok()) return ctx.Error(s.message());
  if (existed) return ctx.Error("ERR key already exists");
  ctx.out.Ok();
}

void CmdHllAdd(CommandContext& ctx) {
  // HLL.ADD key [INT|TEXT] element...: a leading INT or TEXT is the kind only when elements
  // follow it; "HLL.ADD key INT" adds the text "INT".
  size_t first = 2;
  bool ints = false;
  if (ctx.args.size() > 3 &&
      (EqualsIgnoreCase(ctx.args[2], "INT") || EqualsIgnoreCase(ctx.args[2], "TEXT"))) {
    ints = EqualsIgnoreCase(ctx.args[2], "INT");
    first = 3;
  }
  std::vector<uint64_t> hashes;
  for (size_t i = first; i < ctx.args.size(); i++) {
    if (ints) {
      int64_t v = 0;
      if (!ParseInt64(ctx.args[i], &v)) return ctx.NotInteger();
      hashes.push_back(HyperLogLog::HashInt64(v));
    } else {
      hashes.push_back(HyperLogLog::HashBytes(ctx.args[i]));
    }
  }
  bool created = false;
  Result<int64_t> n = AddHashes(ctx, ctx.args[1], hashes, HllParams{}, false, &created);
  if (!n.ok()) return ctx.Error(n.status().message());
  ctx.out.Integer(*n);
}

void CmdHllAddHash(CommandContext& ctx) {
  std::vector<uint64_t> hashes;
  for (size_t i = 2; i < ctx.args.size(); i++) {
    int64_t v = 0;
    if (!ParseInt64(ctx.args[i], &v)) return ctx.NotInteger();
    hashes.push_back(static_cast<uint64_t>(v));
  }
  bool created = false;
  Result<int64_t> n = AddHashes(ctx, ctx.args[1], hashes, HllParams{}, false, &created);
  if (!n.ok()) return ctx.Error(n.status().message());
  ctx.out.Integer(*n);
}

void CmdHllCount(CommandContext& ctx) {
  bool any = false;
  std::vector<std::string_view> keys(ctx.args.begin() + 1, ctx.args.end());
  Result<HyperLogLog> u = UnionOf(ctx, keys, false, HllParams{}, &any);
  if (!u.ok()) return ctx.Error(u.status().message());
  ctx.out.Double(u->Cardinality());
}

void CmdHllUnion(CommandContext& ctx) {
  bool any = false;
  std::vector<std::string_view> keys(ctx.args.begin() + 2, ctx.args.end());
  Result<HyperLogLog> u = UnionOf(ctx, keys, false, HllParams{}, &any);
  if (!u.ok()) return ctx.Error(u.status().message());
  Result<ValuePtr> v = MakeHll(ctx.args[1], *u, 0);
  if (!v.ok()) return ctx.Error("ERR " + std::string(v.status().message()));
  ctx.store().Put(std::move(v).value());
  ctx.out.Ok();
}

void CmdHllExport(CommandContext& ctx) {
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.out.Null();
  Result<HyperLogLog> h = Load(v.get(), false);
  if (!h.ok()) return ctx.Error(h.status().message());
  ctx.out.Bulk(HexOf(v->payload()));
}

void CmdHllImport(CommandContext& ctx) {
  std::string bytes;
  if (!FromHex(ctx.args[2], &bytes)) {
    return ctx.Error("ERR invalid hexadecimal hll: expected \\x followed by hex digits");
  }
  Result<HyperLogLog> h = HyperLogLog::Parse(bytes);
  if (!h.ok()) return ctx.Error("ERR invalid hll: " + std::string(h.status().message()));
  Result<ValuePtr> v = MakeHll(ctx.args[1], *h, 0);
  if (!v.ok()) return ctx.Error("ERR " + std::string(v.status().message()));
  ctx.store().Put(std::move(v).value());
  ctx.out.Ok();
}

void CmdHllInfo(CommandContext& ctx) {
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.Error("ERR no such key");
  Result<HyperLogLog> h = Load(v.get(), false);
  if (!h.ok()) return ctx.Error(h.status().message());
  static const char* kNames[] = {"", "EMPTY", "EXPLICIT", "SPARSE", "FULL"};
  const HllParams& p = h->params();
  ctx.out.MapHeader(8);
  ctx.out.Bulk("log2m");
  ctx.out.Integer(p.log2m);
  ctx.out.Bulk("regwidth");
  ctx.out.Integer(p.regwidth);
  ctx.out.Bulk("expthresh");
  ctx.out.Integer(p.expthresh);
  ctx.out.Bulk("sparseon");
  ctx.out.Integer(p.sparseon ? 1 : 0);
  ctx.out.Bulk("representation");
  ctx.out.Bulk(kNames[static_cast<int>(h->representation())]);
  ctx.out.Bulk("filled");
  ctx.out.Integer(static_cast<int64_t>(h->filled()));
  ctx.out.Bulk("size");
  ctx.out.Integer(static_cast<int64_t>(v->payload().size()));
  ctx.out.Bulk("cardinality");
  ctx.out.Double(h->Cardinality());
}

void CmdPfAdd(CommandContext& ctx) {
  std::vector<uint64_t> hashes;
  for (size_t i = 2; i < ctx.args.size(); i++)
    hashes.push_back(HyperLogLog::HashBytes(ctx.args[i]));
  bool created = false;
  Result<int64_t> n = AddHashes(ctx, ctx.args[1], hashes, RedisParams(), true, &created);
  if (!n.ok()) return ctx.Error(n.status().message());
  ctx.out.Integer(*n > 0 || created ? 1 : 0);
}

void CmdPfCount(CommandContext& ctx) {
  bool any = false;
  std::vector<std::string_view> keys(ctx.args.begin() + 1, ctx.args.end());
  Result<HyperLogLog> u = UnionOf(ctx, keys, true, RedisParams(), &any);
  if (!u.ok()) return ctx.Error(u.status().message());
  ctx.out.Integer(static_cast<int64_t>(std::llround(u->Cardinality())));
}

// PFMERGE includes the destination's own contents, as Redis does.
void CmdPfMerge(CommandContext& ctx) {
  bool any = false;
  std::vector<std::string_view> keys(ctx.args.begin() + 1, ctx.args.end());
  Result<HyperLogLog> u = UnionOf(ctx, keys, true, RedisParams(), &any);
  if (!u.ok()) return ctx.Error(u.status().message());
  ValuePtr old = Lookup(ctx, ctx.args[1], /*count_stats=*/false);
  Result<ValuePtr> v = MakeHll(ctx.args[1], *u, old ? old->expire_at_ms() : 0);
  if (!v.ok()) return ctx.Error("ERR " + std::string(v.status().message()));
  ctx.store().Put(std::move(v).value());
  ctx.out.Ok();
}

}  // namespace floe::server::internal
