// Sketch commands: Floe's HLL.* (PostgreSQL hll compatible) and Redis's PF*, both on one value
// type holding the PostgreSQL storage bytes.

#include <algorithm>
#include <cmath>

#include "server/internal/command.h"
#include "server/internal/sketch_cell.h"
#include "sketch/sketch.h"

namespace floe::server::internal {

namespace {

using sketch::HllParams;
using sketch::HyperLogLog;
using store::Mutation;
using store::Value;
using store::ValuePtr;

constexpr uint16_t kHllType = static_cast<uint16_t>(ValueType::kHll);
const char kNotHll[] = "WRONGTYPE Key is not a valid HyperLogLog string value.";
const char kCorrupt[] = "INVALIDOBJ Corrupted HLL object detected";

using HllCell = SketchCell<HyperLogLog>;

// PFADD's parameters: Redis's precision (2^14 registers of 6 bits).
HllParams RedisParams() { return HllParams{14, 6, -1, true}; }

// The live sketch in `v`, or the client's error text. `redis_text` picks PF*'s wording.
Result<const HllCell*> Load(const Value& v, bool redis_text) {
  if (v.type() != kHllType) {
    return Status::InvalidArgument(
        redis_text && v.type() == static_cast<uint16_t>(ValueType::kString) ? kNotHll : kWrongType);
  }
  Result<const HllCell*> cell = CellOf<HyperLogLog>(v);
  if (!cell.ok()) return Status::Corruption(kCorrupt);
  return cell;
}

// A copy of the sketch in `v` (for unions).
Result<HyperLogLog> Copy(const Value& v, bool redis_text) {
  FLOE_ASSIGN_OR_RETURN(const HllCell* cell, Load(v, redis_text));
  return cell->Read([](const HyperLogLog& h) { return h; });
}

bool ParseSigned(std::string_view s, int* out, int lo, int hi) {
  int64_t v = 0;
  if (!ParseInt64(s, &v) || v < lo || v > hi) return false;
  *out = static_cast<int>(v);
  return true;
}

// Adds hashes to `key` in place, creating it with `params` if absent. Returns how many of the
// hashes changed the sketch (an explicit entry added or a register raised), or an error text.
Result<int64_t> AddHashes(CommandContext& ctx, std::string_view key,
                          const std::vector<uint64_t>& hashes, const HllParams& params,
                          bool redis_text, bool* created) {
  return UpdateSketch<HyperLogLog, int64_t>(
      ctx, key, kHllType, [&](const Value& v) { return Load(v, redis_text); },
      [&]() -> Result<HyperLogLog> { return HyperLogLog::Create(params); },
      [&](HyperLogLog& h, bool* changed) -> Result<int64_t> {
        // An add may promote the sketch to its registers: 2^log2m bytes (sketch_cell.h, rule 8).
        if (!h.has_registers()) {
          FLOE_RETURN_IF_ERROR(CheckAllocation(ctx, HyperLogLog::RegisterBytes(h.params())));
        }
        int64_t n = 0;
        for (uint64_t hash : hashes) n += h.AddHash(hash) ? 1 : 0;
        *changed = n > 0;
        return n;
      },
      created);
}

// The union of `parts`, folded to the smallest log2m and regwidth among them; an empty sketch
// with `if_none` when there are none.
Result<HyperLogLog> UnionOfSketches(const std::vector<HyperLogLog>& parts,
                                    const HllParams& if_none) {
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
    if (p.params() == params) {
      FLOE_RETURN_IF_ERROR(out.Merge(p));
      continue;
    }
    FLOE_ASSIGN_OR_RETURN(HyperLogLog folded, p.Fold(log2m, regwidth));
    FLOE_RETURN_IF_ERROR(out.Merge(folded));
  }
  return out;
}

// The union of the sketches at `keys` (absent keys skipped, a key named twice read once),
// folded to their smallest log2m and regwidth; an empty sketch with `if_none` when there are
// none. Each sketch is read in place under its cell's mutex, never copied, and the registers
// the union needs are checked against maxmemory first (sketch_cell.h, rule 8): a command that
// names a large sketch many times costs it once, not once per name.
Result<HyperLogLog> UnionAt(CommandContext& ctx, std::span<const std::string_view> keys,
                            bool redis_text, const HllParams& if_none, size_t* found = nullptr) {
  std::vector<std::string_view> distinct(keys.begin(), keys.end());
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  std::vector<std::pair<ValuePtr, const HllCell*>> cells;
  for (std::string_view k : distinct) {
    ValuePtr v = Lookup(ctx, k);
    if (!v) continue;
    FLOE_ASSIGN_OR_RETURN(const HllCell* cell, Load(*v, redis_text));
    cells.emplace_back(std::move(v), cell);
  }
  if (found != nullptr) *found = cells.size();
  if (cells.empty()) return HyperLogLog::Create(if_none);
  // Parameters never change once a sketch is made: read once each.
  HllParams params = cells[0].second->Read([](const HyperLogLog& h) { return h.params(); });
  bool registers = false;
  for (const auto& [v, cell] : cells) {
    cell->Read([&](const HyperLogLog& h) {
      params.log2m = std::min(params.log2m, h.params().log2m);
      params.regwidth = std::min(params.regwidth, h.params().regwidth);
      registers = registers || h.has_registers();
    });
  }
  if (registers) FLOE_RETURN_IF_ERROR(CheckAllocation(ctx, HyperLogLog::RegisterBytes(params)));
  FLOE_ASSIGN_OR_RETURN(HyperLogLog out, HyperLogLog::Create(params));
  for (const auto& [v, cell] : cells) {
    FLOE_RETURN_IF_ERROR(cell->Read([&](const HyperLogLog& h) -> Status {
      if (h.params().log2m == params.log2m && h.params().regwidth == params.regwidth) {
        return out.Merge(h);
      }
      FLOE_ASSIGN_OR_RETURN(HyperLogLog folded, h.Fold(params.log2m, params.regwidth));
      return out.Merge(folded);
    }));
  }
  return out;
}

// The estimated cardinality of the union of the sketches at `keys`.
// `redis_text`: PFCOUNT's errors and its integer count (never NaN); else HLL.COUNT's.
Result<double> CountOf(CommandContext& ctx, std::span<const std::string_view> keys,
                       bool redis_text) {
  // A key named twice counts once: one distinct key is estimated in place, under its lock.
  std::vector<std::string_view> distinct(keys.begin(), keys.end());
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  if (distinct.size() == 1) {
    ValuePtr v = Lookup(ctx, distinct[0]);
    if (!v) return 0.0;
    FLOE_ASSIGN_OR_RETURN(const HllCell* cell, Load(*v, redis_text));
    return cell->Read([&](const HyperLogLog& h) { return h.Cardinality(redis_text); });
  }
  FLOE_ASSIGN_OR_RETURN(HyperLogLog u, UnionAt(ctx, keys, redis_text, RedisParams()));
  return u.Cardinality(redis_text);
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

// A cardinality as PFCOUNT's integer: rounded, and within int64 whatever the estimate.
int64_t RoundedCount(double cardinality) {
  if (!(cardinality >= 0)) return 0;
  if (cardinality >= 9.2e18) return INT64_MAX;
  return static_cast<int64_t>(std::llround(cardinality));
}

// The registers an add may allocate later (2^log2m bytes) are bounded when the sketch is made,
// like any client-sized allocation (sketch_cell.h, rule 8). Replies and returns false if not.
bool RegistersFit(CommandContext& ctx, int log2m) {
  HllParams p;
  p.log2m = log2m;
  if (HyperLogLog::RegisterBytes(p) <= static_cast<uint64_t>(ctx.engine.proto_max_bulk_len())) {
    return true;
  }
  ctx.Error("ERR log2m " + std::to_string(log2m) +
            " needs more register bytes than proto-max-bulk-len");
  return false;
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
  if (!valid.ok()) return ctx.Error(valid);
  if (!RegistersFit(ctx, p.log2m)) return;
  bool existed = false;
  const std::string_view key = ctx.args[1];
  Status s = ctx.store().Mutate(key, [&](const Value* cur) -> Result<Mutation> {
    existed = Live(cur, ctx.now_ms) != nullptr;
    if (existed) return Mutation::Keep();
    FLOE_ASSIGN_OR_RETURN(HyperLogLog h, HyperLogLog::Create(p));
    FLOE_ASSIGN_OR_RETURN(ValuePtr v, MakeCellValue(ctx, key, kHllType, std::move(h), 0));
    return Mutation::Put(std::move(v));
  });
  if (!s.ok()) return ctx.Error(s);
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
  if (!n.ok()) return ctx.Error(n.status());
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
  if (!n.ok()) return ctx.Error(n.status());
  ctx.out.Integer(*n);
}

void CmdHllCount(CommandContext& ctx) {
  std::vector<std::string_view> keys(ctx.args.begin() + 1, ctx.args.end());
  Result<double> n = CountOf(ctx, keys, false);
  if (!n.ok()) return ctx.Error(n.status());
  ctx.out.Double(*n);
}

// The destination is replaced without being read (sketch_cell.h, rule 4).
void CmdHllUnion(CommandContext& ctx) {
  std::vector<std::string_view> keys(ctx.args.begin() + 2, ctx.args.end());
  Result<HyperLogLog> u = UnionAt(ctx, keys, false, HllParams{});
  if (!u.ok()) return ctx.Error(u.status());
  Result<ValuePtr> v = MakeCellValue(ctx, ctx.args[1], kHllType, std::move(u).value(), 0);
  if (!v.ok()) return ctx.Error(v.status());
  ctx.store().Put(std::move(v).value());
  ctx.out.Ok();
}

void CmdHllExport(CommandContext& ctx) {
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.out.Null();
  Result<const HllCell*> cell = Load(*v, false);
  if (!cell.ok()) return ctx.Error(cell.status());
  ctx.out.Bulk(HexOf((*cell)->Read([](const HyperLogLog& h) { return h.Serialize(); })));
}

void CmdHllImport(CommandContext& ctx) {
  std::string bytes;
  if (!FromHex(ctx.args[2], &bytes)) {
    return ctx.Error("ERR invalid hexadecimal hll: expected \\x followed by hex digits");
  }
  // The header's log2m (byte 1, low 5 bits) is checked before parsing allocates registers.
  if (bytes.size() >= 3 && !RegistersFit(ctx, static_cast<uint8_t>(bytes[1]) & 0x1f)) return;
  // RegistersFit bounded the registers: a small SPARSE body of a large sketch reads back.
  Result<HyperLogLog> h =
      HyperLogLog::Parse(bytes, static_cast<uint64_t>(ctx.engine.proto_max_bulk_len()));
  if (!h.ok()) return ctx.Error("ERR invalid hll: " + std::string(h.status().message()));
  Result<ValuePtr> v = MakeCellValue(ctx, ctx.args[1], kHllType, std::move(h).value(), 0);
  if (!v.ok()) return ctx.Error(v.status());
  ctx.store().Put(std::move(v).value());
  ctx.out.Ok();
}

void CmdHllInfo(CommandContext& ctx) {
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.Error("ERR no such key");
  Result<HyperLogLog> h = Copy(*v, false);
  if (!h.ok()) return ctx.Error(h.status());
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
  ctx.out.Integer(static_cast<int64_t>(h->Serialize().size()));
  ctx.out.Bulk("cardinality");
  ctx.out.Double(h->Cardinality());
}

void CmdPfAdd(CommandContext& ctx) {
  std::vector<uint64_t> hashes;
  for (size_t i = 2; i < ctx.args.size(); i++)
    hashes.push_back(HyperLogLog::HashBytes(ctx.args[i]));
  bool created = false;
  Result<int64_t> n = AddHashes(ctx, ctx.args[1], hashes, RedisParams(), true, &created);
  if (!n.ok()) return ctx.Error(n.status());
  ctx.out.Integer(*n > 0 || created ? 1 : 0);
}

void CmdPfCount(CommandContext& ctx) {
  std::vector<std::string_view> keys(ctx.args.begin() + 1, ctx.args.end());
  Result<double> n = CountOf(ctx, keys, true);
  if (!n.ok()) return ctx.Error(n.status());
  ctx.out.Integer(RoundedCount(*n));
}

// PFMERGE includes the destination's own contents, as Redis does: the union replaces the
// destination's sketch in place, under its cell's mutex, so adds racing with the merge are kept
// (sketch_cell.h, rule 3).
void CmdPfMerge(CommandContext& ctx) {
  const std::string_view dest = ctx.args[1];
  std::vector<std::string_view> keys(ctx.args.begin() + 2, ctx.args.end());
  // The sources' union first (each read once, in place); then, under the destination's
  // mutex, its union with the destination (folding composes: the result is the same).
  size_t found = 0;
  Result<HyperLogLog> sources_union = UnionAt(ctx, keys, true, RedisParams(), &found);
  if (!sources_union.ok()) return ctx.Error(sources_union.status());
  std::vector<HyperLogLog> sources;
  if (found > 0) sources.push_back(std::move(sources_union).value());
  bool created = false;
  Result<bool> r = UpdateSketch<HyperLogLog, bool>(
      ctx, dest, kHllType, [&](const Value& v) { return Load(v, true); },
      [&]() -> Result<HyperLogLog> {
        created = true;
        return HyperLogLog::Create(RedisParams());
      },
      [&](HyperLogLog& h, bool* changed) -> Result<bool> {
        std::vector<HyperLogLog> parts = sources;
        // A sketch create() just made is not part of the union (its parameters would fold it).
        if (!std::exchange(created, false)) parts.push_back(h);
        FLOE_ASSIGN_OR_RETURN(HyperLogLog u, UnionOfSketches(parts, RedisParams()));
        h = std::move(u);
        *changed = true;
        return true;
      });
  if (!r.ok()) {
    return ctx.Error(r.status());
  }
  ctx.out.Ok();
}

}  // namespace floe::server::internal

namespace floe::server::internal {

// PFCOUNT of keys on several nodes (routing.cc): each key's TYPE and HLL.EXPORT, fetched from
// its home, merged here as PFCOUNT merges local keys.
Result<int64_t> PfCountOfExports(const std::vector<TypedExport>& keys) {
  std::vector<HyperLogLog> parts;
  for (const TypedExport& k : keys) {
    if (k.type == nullptr || k.exported == nullptr) return Status::Internal("a key has no reply");
    if (k.exported->type == resp::Reply::Type::kError) {
      // What PFCOUNT says of a key that holds a plain string, as at a single node.
      if (k.type->str == "string") return Status::InvalidArgument(kNotHll);
      return Status::InvalidArgument(k.exported->str);
    }
    if (k.exported->type != resp::Reply::Type::kBulk) continue;  // absent: empty
    std::string bytes;
    if (!FromHex(k.exported->str, &bytes)) return Status::Corruption(kCorrupt);
    // From a member's HLL.EXPORT (members are trusted: the cluster secret authenticates them),
    // whose sketch was bounded where it was made: any register count reads back.
    FLOE_ASSIGN_OR_RETURN(HyperLogLog h, HyperLogLog::Parse(bytes, UINT64_MAX));
    parts.push_back(std::move(h));
  }
  if (parts.empty()) return 0;
  FLOE_ASSIGN_OR_RETURN(HyperLogLog u, UnionOfSketches(parts, RedisParams()));
  return RoundedCount(u.Cardinality(/*raw_when_saturated=*/true));
}

}  // namespace floe::server::internal
