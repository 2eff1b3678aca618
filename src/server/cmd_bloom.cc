// Bloom filter commands: RedisBloom's BF.* with its replies and error texts. Filters change in
// place (sketch_cell.h), growing a sub-filter included; every sub-filter is bounded and charged
// before it is allocated.

#include <cmath>
#include <string>

#include "server/internal/command.h"
#include "server/internal/sketch_cell.h"
#include "sketch/sketch.h"

namespace floe::server::internal {

namespace {

using sketch::BloomFilter;
using store::Mutation;
using store::Value;
using store::ValuePtr;

constexpr uint16_t kBloomType = static_cast<uint16_t>(ValueType::kBloom);
const char kFull[] = "ERR non scaling filter is full";

// RedisBloom's defaults (bf-error-rate, bf-initial-size, bf-expansion-factor).
constexpr double kDefaultError = 0.01;
constexpr int64_t kDefaultCapacity = 100;
constexpr int64_t kDefaultExpansion = 2;

struct BloomOptions {
  double error = kDefaultError;
  int64_t capacity = kDefaultCapacity;
  int64_t expansion = kDefaultExpansion;  // 0: non-scaling
  bool create = true;
};

Result<const SketchCell<BloomFilter>*> Load(const Value& v) {
  if (v.type() != kBloomType) return Status::InvalidArgument(kWrongType);
  Result<const SketchCell<BloomFilter>*> cell = CellOf<BloomFilter>(v);
  if (!cell.ok()) return Status::Corruption("ERR corrupt Bloom filter");
  return cell;
}

// Makes a filter, after checking the first sub-filter against proto-max-bulk-len and maxmemory.
Result<BloomFilter> Create(CommandContext& ctx, const BloomOptions& o) {
  const uint64_t bytes = BloomFilter::FirstFilterBytes(o.error, static_cast<uint64_t>(o.capacity),
                                                       static_cast<uint32_t>(o.expansion));
  if (bytes > static_cast<uint64_t>(ctx.engine.proto_max_bulk_len())) {
    return Status::ResourceExhausted("ERR Insufficient memory to create filter");
  }
  FLOE_RETURN_IF_ERROR(CheckAllocation(ctx, bytes));
  Result<BloomFilter> f = BloomFilter::Create(o.error, static_cast<uint64_t>(o.capacity),
                                              static_cast<uint32_t>(o.expansion));
  if (!f.ok()) {
    return Status(f.status().code(), f.status().code() == StatusCode::kResourceExhausted
                                         ? "ERR Insufficient memory to create filter"
                                         : "ERR could not create filter");
  }
  return f;
}

// One item's outcome: added (1), maybe present (0), or an error text.
struct AddOutcome {
  int added = 0;
  const char* error = nullptr;
};

// Adds `items` to the filter at `key` (created with `o` when absent and o.create), stopping at
// the first item that fails, as RedisBloom does. Errors that stop the whole command (missing
// key with NOCREATE, wrong type) come back as a Status.
Result<std::vector<AddOutcome>> AddItems(CommandContext& ctx,
                                         std::span<const std::string_view> items,
                                         const BloomOptions& o) {
  return UpdateSketch<BloomFilter, std::vector<AddOutcome>>(
      ctx, ctx.args[1], kBloomType, Load,
      [&]() -> Result<BloomFilter> {
        if (!o.create) return Status::NotFound("ERR not found");
        return Create(ctx, o);
      },
      [&](BloomFilter& f, bool* changed) -> Result<std::vector<AddOutcome>> {
        std::vector<AddOutcome> out;
        for (std::string_view item : items) {
          // A new sub-filter is charged before it is allocated (sketch_cell.h, rule 8).
          if (f.AddWouldGrow(item)) {
            Status room = CheckAllocation(ctx, f.GrowthBytes());
            if (!room.ok()) {
              if (out.empty()) return room;
              out.push_back({0, kOomError});
              break;
            }
          }
          Result<bool> r = f.Add(item);
          if (!r.ok()) {
            out.push_back({0, r.status().code() == StatusCode::kFailedPrecondition
                                  ? kFull
                                  : "ERR Insufficient memory to grow filter"});
            break;
          }
          *changed |= *r;
          out.push_back({*r ? 1 : 0, nullptr});
        }
        return out;
      });
}

void ReplyOutcome(CommandContext& ctx, const AddOutcome& o) {
  if (o.error != nullptr) {
    ctx.out.Error(o.error);
  } else {
    ctx.out.Bool(o.added == 1);
  }
}

}  // namespace

// BF.RESERVE key error_rate capacity [EXPANSION expansion] [NONSCALING]. Every argument is read
// and bounded before the key is looked at, in RedisBloom's order.
void CmdBfReserve(CommandContext& ctx) {
  if (ctx.args.size() > 7)
    return ctx.Error("ERR wrong number of arguments for 'bf.reserve' command");
  BloomOptions o;
  if (!ParseRedisDouble(ctx.args[2], &o.error)) return ctx.Error("ERR bad error rate");
  if (!(o.error > 0 && o.error < 1)) {
    return ctx.Error("ERR error rate must be in the range (0.000000, 1.000000)");
  }
  if (!ParseInt64(ctx.args[3], &o.capacity)) return ctx.Error("ERR bad capacity");
  if (o.capacity < 1 || o.capacity > static_cast<int64_t>(BloomFilter::kMaxCapacity)) {
    return ctx.Error("ERR capacity must be in the range [1, 1073741824]");
  }
  bool nonscaling = false;
  size_t expansion_at = 0;
  for (size_t i = 4; i < ctx.args.size(); i++) {
    if (EqualsIgnoreCase(ctx.args[i], "NONSCALING")) {
      nonscaling = true;
    } else if (EqualsIgnoreCase(ctx.args[i], "EXPANSION")) {
      if (i + 1 == ctx.args.size()) return ctx.Error("ERR no expansion");
      expansion_at = ++i;
    } else {
      return ctx.SyntaxError();
    }
  }
  if (expansion_at != 0) {
    if (nonscaling) return ctx.Error("Nonscaling filters cannot expand");
    if (!ParseInt64(ctx.args[expansion_at], &o.expansion)) return ctx.Error("ERR bad expansion");
    if (o.expansion < 0 || o.expansion > BloomFilter::kMaxExpansion) {
      return ctx.Error("ERR expansion must be in the range [0, 32768]");
    }
  }
  if (nonscaling) o.expansion = 0;
  const std::string_view key = ctx.args[1];
  const char* refusal = nullptr;
  Status s = ctx.store().Mutate(key, [&](const Value* cur) -> Result<Mutation> {
    refusal = nullptr;
    if (const Value* live = Live(cur, ctx.now_ms)) {
      refusal = live->type() == kBloomType ? "ERR item exists" : kWrongType;
      return Mutation::Keep();
    }
    FLOE_ASSIGN_OR_RETURN(BloomFilter f, Create(ctx, o));
    FLOE_ASSIGN_OR_RETURN(ValuePtr v, MakeCellValue(ctx, key, kBloomType, std::move(f), 0));
    return Mutation::Put(std::move(v));
  });
  if (!s.ok()) return ctx.Error(s);
  if (refusal != nullptr) return ctx.Error(refusal);
  ctx.out.Ok();
}

void CmdBfAdd(CommandContext& ctx) {
  Result<std::vector<AddOutcome>> r = AddItems(ctx, std::span(ctx.args).subspan(2), {});
  if (!r.ok()) return ctx.Error(r.status());
  if (r->front().error != nullptr) return ctx.Error(r->front().error);
  ReplyOutcome(ctx, r->front());
}

void CmdBfMAdd(CommandContext& ctx) {
  Result<std::vector<AddOutcome>> r = AddItems(ctx, std::span(ctx.args).subspan(2), {});
  if (!r.ok()) return ctx.Error(r.status());
  ctx.out.ArrayHeader(r->size());
  for (const AddOutcome& o : *r) ReplyOutcome(ctx, o);
}

// BF.INSERT key [CAPACITY c] [ERROR e] [EXPANSION x] [NOCREATE] [NONSCALING] ITEMS item...
void CmdBfInsert(CommandContext& ctx) {
  BloomOptions o;
  size_t items_at = 0;
  for (size_t i = 2; i < ctx.args.size() && items_at == 0; i++) {
    const std::string_view opt = ctx.args[i];
    const bool has_value = i + 1 < ctx.args.size();
    if (EqualsIgnoreCase(opt, "ITEMS")) {
      items_at = i + 1;
    } else if (EqualsIgnoreCase(opt, "CAPACITY")) {
      if (!has_value) return ctx.Error("ERR wrong number of arguments for 'bf.insert' command");
      if (!ParseInt64(ctx.args[++i], &o.capacity)) return ctx.Error("Bad capacity");
    } else if (EqualsIgnoreCase(opt, "ERROR")) {
      if (!has_value) return ctx.Error("ERR wrong number of arguments for 'bf.insert' command");
      if (!ParseRedisDouble(ctx.args[++i], &o.error)) return ctx.Error("Bad error rate");
    } else if (EqualsIgnoreCase(opt, "EXPANSION")) {
      if (!has_value) return ctx.Error("ERR wrong number of arguments for 'bf.insert' command");
      if (!ParseInt64(ctx.args[++i], &o.expansion)) return ctx.Error("Bad expansion");
      if (o.expansion < 1) return ctx.Error("Bad argument received");
    } else if (EqualsIgnoreCase(opt, "NOCREATE")) {
      o.create = false;
    } else if (EqualsIgnoreCase(opt, "NONSCALING")) {
      o.expansion = -1;  // resolved below: NONSCALING wins over EXPANSION
    } else {
      return ctx.Error("Unknown argument received");
    }
  }
  if (items_at == 0 || items_at >= ctx.args.size()) {
    return ctx.Error("ERR wrong number of arguments for 'bf.insert' command");
  }
  if (!(o.error > 0 && o.error < 1) || o.capacity < 1 ||
      o.capacity > static_cast<int64_t>(BloomFilter::kMaxCapacity) ||
      o.expansion > BloomFilter::kMaxExpansion) {
    return ctx.Error("Bad argument received");
  }
  if (o.expansion < 0) o.expansion = 0;
  Result<std::vector<AddOutcome>> r = AddItems(ctx, std::span(ctx.args).subspan(items_at), o);
  if (!r.ok()) return ctx.Error(r.status());
  ctx.out.ArrayHeader(r->size());
  for (const AddOutcome& out : *r) ReplyOutcome(ctx, out);
}

namespace {
// RedisBloom answers "not present" for a missing key and for a key of another type alike.
void Exists(CommandContext& ctx, bool multi) {
  const size_t n = ctx.args.size() - 2;
  std::vector<bool> found(n, false);
  if (ValuePtr v = Lookup(ctx, ctx.args[1]); v && v->type() == kBloomType) {
    Result<const SketchCell<BloomFilter>*> cell = Load(*v);
    if (!cell.ok()) return ctx.Error(cell.status());
    (*cell)->Read([&](const BloomFilter& f) {
      for (size_t i = 0; i < n; i++) found[i] = f.Contains(ctx.args[2 + i]);
    });
  }
  if (multi) ctx.out.ArrayHeader(n);
  for (bool b : found) ctx.out.Bool(b);
}
}  // namespace

void CmdBfExists(CommandContext& ctx) { Exists(ctx, false); }
void CmdBfMExists(CommandContext& ctx) { Exists(ctx, true); }

void CmdBfCard(CommandContext& ctx) {
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.out.Integer(0);
  Result<const SketchCell<BloomFilter>*> cell = Load(*v);
  if (!cell.ok()) return ctx.Error(cell.status());
  ctx.out.Integer(
      static_cast<int64_t>((*cell)->Read([](const BloomFilter& f) { return f.items(); })));
}

// BF.INFO key [CAPACITY | SIZE | FILTERS | ITEMS | EXPANSION]
void CmdBfInfo(CommandContext& ctx) {
  if (ctx.args.size() > 3) return ctx.Error("ERR wrong number of arguments for 'bf.info' command");
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.Error("ERR not found");
  Result<const SketchCell<BloomFilter>*> cell = Load(*v);
  if (!cell.ok()) return ctx.Error(cell.status());
  struct Info {
    int64_t capacity, size, filters, items, expansion;
  };
  const Info info = (*cell)->Read([](const BloomFilter& f) {
    return Info{static_cast<int64_t>(f.capacity()), static_cast<int64_t>(f.bytes()),
                static_cast<int64_t>(f.filters()), static_cast<int64_t>(f.items()),
                static_cast<int64_t>(f.expansion())};
  });
  auto expansion = [&] {
    if (info.expansion == 0) return ctx.out.Null();
    ctx.out.Integer(info.expansion);
  };
  if (ctx.args.size() == 3) {
    const std::string_view field = ctx.args[2];
    static const char* kFields[] = {"CAPACITY", "SIZE", "FILTERS", "ITEMS", "EXPANSION"};
    const int64_t values[] = {info.capacity, info.size, info.filters, info.items};
    for (int i = 0; i < 5; i++) {
      if (!EqualsIgnoreCase(field, kFields[i])) continue;
      ctx.out.ArrayHeader(1);
      return i < 4 ? ctx.out.Integer(values[i]) : expansion();
    }
    return ctx.Error("Invalid information value");
  }
  ctx.out.MapHeader(5);
  ctx.out.SimpleString("Capacity");
  ctx.out.Integer(info.capacity);
  ctx.out.SimpleString("Size");
  ctx.out.Integer(info.size);
  ctx.out.SimpleString("Number of filters");
  ctx.out.Integer(info.filters);
  ctx.out.SimpleString("Number of items inserted");
  ctx.out.Integer(info.items);
  ctx.out.SimpleString("Expansion rate");
  expansion();
}

}  // namespace floe::server::internal
