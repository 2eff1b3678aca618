// The keyspace as handlers see it: lookups that honour expiry, string values and the maxmemory
// check; and which keys a command names (routing, rule C7's reservations).

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

bool KeyspaceWide(Handler h) {
  return h == CmdKeys || h == CmdDbSize || h == CmdRandomKey || h == CmdFlushDb || h == CmdScan ||
         h == CmdFrameList || h == CmdJobList;
}

void CommandKeys(const CommandSpec& spec, const std::vector<std::string_view>& args,
                 std::vector<std::string_view>* keys) {
  keys->clear();
  if (spec.first_key <= 0 || spec.step <= 0) return;
  const auto argc = static_cast<int64_t>(args.size());
  const int64_t last = spec.last_key < 0 ? argc + spec.last_key : spec.last_key;
  for (int64_t i = spec.first_key; i <= last && i < argc; i += spec.step) {
    keys->push_back(args[static_cast<size_t>(i)]);
  }
  // FRAME.FILTER, FRAME.SELECT and FRAME.GROUPBY run at their source's home, whose chunks they
  // map where they are, and store the destination's header at its home by PUT_HEADER
  // (docs/frames_cluster.md, D6): the source alone routes them.
  if ((spec.handler == CmdFrameFilter || spec.handler == CmdFrameSelect ||
       spec.handler == CmdFrameGroupBy) &&
      keys->size() > 1) {
    keys->resize(1);
  }
  // CMS.MERGE dest numkeys src... [WEIGHTS ...]: the table names only the destination.
  if (spec.handler == CmdCmsMerge && args.size() > 3) {
    int64_t n = 0;
    if (ParseInt64(args[2], &n) && n > 0 && n <= argc - 3) {
      for (int64_t i = 0; i < n; i++) keys->push_back(args[static_cast<size_t>(3 + i)]);
    }
  }
}

void WrittenKeys(const CommandSpec& spec, const std::vector<std::string_view>& args,
                 std::vector<std::string_view>* keys) {
  CommandKeys(spec, args, keys);
  // A merge writes its destination and reads its sources.
  if (keys->size() > 1 &&
      (spec.handler == CmdPfMerge || spec.handler == CmdHllUnion || spec.handler == CmdCmsMerge)) {
    keys->resize(1);
  }
}

}  // namespace floe::server::internal
