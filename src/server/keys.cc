// The keyspace as handlers see it: lookups that honour expiry, string values, the current bytes
// of any value, and the maxmemory check.

#include "server/internal/command.h"
#include "server/internal/sketch_cell.h"
#include "sketch/sketch.h"

namespace floe::server::internal {

store::ValuePtr Lookup(CommandContext& ctx, std::string_view key, bool count_stats) {
  store::ValuePtr v = ctx.store().Get(key);
  if (v && v->IsExpired(ctx.now_ms)) {
    const uint64_t version = v->version();
    bool removed = false;
    Result<store::ValuePtr> r =
        ctx.store().Update(key, [&](const store::Value* cur) -> Result<store::Mutation> {
          removed = cur != nullptr && cur->version() == version;
          return removed ? store::Mutation::Remove() : store::Mutation::Keep();
        });
    if (r.ok() && removed) ctx.stats().expired_keys.fetch_add(1, std::memory_order_relaxed);
    v = nullptr;
  }
  if (count_stats) Bump(v ? ctx.stats().keyspace_hits : ctx.stats().keyspace_misses);
  return v;
}

Result<std::string> CurrentPayload(const store::Value& v) {
  switch (static_cast<ValueType>(v.type())) {
    case ValueType::kString:
      return std::string(v.payload());
    case ValueType::kHll: {
      FLOE_ASSIGN_OR_RETURN(const auto* cell, CellOf<sketch::HyperLogLog>(v));
      return cell->SealedPayload();
    }
    case ValueType::kCountMin: {
      FLOE_ASSIGN_OR_RETURN(const auto* cell, CellOf<sketch::CountMin>(v));
      return cell->SealedPayload();
    }
    case ValueType::kRangeCountMin: {
      FLOE_ASSIGN_OR_RETURN(const auto* cell, CellOf<sketch::RangeCountMin>(v));
      return cell->SealedPayload();
    }
    case ValueType::kBloom: {
      FLOE_ASSIGN_OR_RETURN(const auto* cell, CellOf<sketch::BloomFilter>(v));
      return cell->SealedPayload();
    }
  }
  return std::string(v.payload());
}

Result<store::ValuePtr> MakeString(std::string_view key, std::string_view payload,
                                   int64_t expire_at_ms) {
  return store::Value::Make(key, static_cast<uint16_t>(ValueType::kString), payload, expire_at_ms);
}

bool OverMemoryLimit(Engine& engine) {
  const int64_t limit = engine.maxmemory();
  return limit > 0 && engine.UsedMemory() > limit;
}

}  // namespace floe::server::internal
