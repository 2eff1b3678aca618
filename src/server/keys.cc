// The keyspace as handlers see it: lookups that honour expiry, string values and the maxmemory
// check.

#include "server/internal/command.h"

namespace floe::server::internal {

store::ValuePtr Lookup(CommandContext& ctx, std::string_view key, bool count_stats) {
  if (ctx.pinned != nullptr && key == ctx.pinned->first) {
    store::ValuePtr v = ctx.pinned->second;
    if (v && v->IsExpired(ctx.now_ms)) v = nullptr;
    if (count_stats) Bump(v ? ctx.stats().keyspace_hits : ctx.stats().keyspace_misses);
    return v;
  }
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

Result<store::ValuePtr> MakeString(std::string_view key, std::string_view payload,
                                   int64_t expire_at_ms) {
  return store::Value::Make(key, static_cast<uint16_t>(ValueType::kString), payload, expire_at_ms);
}

bool OverMemoryLimit(Engine& engine) {
  const int64_t limit = engine.maxmemory();
  // Dispatch, before the command runs: no DKV lock is held, so copies may be trimmed here.
  // Other commands' reservations count: their bytes are promised (an import under way, a large
  // sketch about to be allocated), and writes must not take them meanwhile.
  return limit > 0 &&
         engine.UsedMemory(/*may_trim_copies=*/true) + engine.reserved_memory() > limit;
}

}  // namespace floe::server::internal
