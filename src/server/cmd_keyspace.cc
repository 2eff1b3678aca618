// Keyspace commands (generic group), with Redis 7.0 semantics and error texts.

#include <cstdio>
#include <random>

#include "server/internal/command.h"
#include "server/internal/sketch_cell.h"
#include "server/internal/string_cell.h"
#include "sketch/sketch.h"

namespace floe::server::internal {

namespace {

using store::Mutation;
using store::Value;
using store::ValuePtr;

std::string_view TypeName(const Value* v) {
  switch (static_cast<ValueType>(v->type())) {
    case ValueType::kString:
      return "string";
    case ValueType::kHll:
      return "hll";
    case ValueType::kCountMin:
    case ValueType::kRangeCountMin:
      return "cms";
    case ValueType::kBloom:
      return "bloom";
    case ValueType::kFrame:
      return "frame";
  }
  return "unknown";
}

// Removes `key` if present (expired values are removed silently); true if it was live.
bool RemoveKey(CommandContext& ctx, std::string_view key) {
  bool was_live = false;
  (void)ctx.store().Update(key, [&](const Value* cur) -> Result<Mutation> {
    was_live = Live(cur, ctx.now_ms) != nullptr;
    return cur != nullptr ? Mutation::Remove() : Mutation::Keep();
  });
  return was_live;
}

// The same value under a different expiry (or key), keeping type and contents: a value with a
// cell (a sketch, an appended-to string) shares its cell's state and copies nothing; a failed
// rewrite changes nothing (sketch_cell.h, rule 2).
Result<ValuePtr> Rewrite(CommandContext& ctx, const Value& v, std::string_view key,
                         int64_t expire_at_ms) {
  return RewriteValue(ctx, v, key, expire_at_ms);
}

void ExpireGeneric(CommandContext& ctx, int64_t base_ms, ExpireUnit unit) {
  bool nx = false, xx = false, gt = false, lt = false;
  for (size_t j = 3; j < ctx.args.size(); j++) {
    const std::string_view opt = ctx.args[j];
    if (EqualsIgnoreCase(opt, "NX")) {
      nx = true;
    } else if (EqualsIgnoreCase(opt, "XX")) {
      xx = true;
    } else if (EqualsIgnoreCase(opt, "GT")) {
      gt = true;
    } else if (EqualsIgnoreCase(opt, "LT")) {
      lt = true;
    } else {
      return ctx.Error("ERR Unsupported option " + std::string(opt.substr(0, 128)));
    }
  }
  if (nx && (xx || gt || lt)) {
    return ctx.Error("ERR NX and XX, GT or LT options at the same time are not compatible");
  }
  if (gt && lt) return ctx.Error("ERR GT and LT options at the same time are not compatible");
  int64_t when = 0;
  if (!ParseInt64(ctx.args[2], &when)) return ctx.NotInteger();
  const std::string invalid =
      "ERR invalid expire time in '" + std::string(ctx.spec->name) + "' command";
  if (!ExpireToMs(when, unit, base_ms, &when)) return ctx.Error(invalid);

  const std::string_view key = ctx.args[1];
  int reply = 0;
  Result<ValuePtr> r = ctx.store().Update(key, [&](const Value* cur) -> Result<Mutation> {
    reply = 0;
    const Value* live = Live(cur, ctx.now_ms);
    if (live == nullptr) return Mutation::Keep();
    const int64_t current = live->expire_at_ms();  // 0: no TTL, i.e. infinite
    if (nx && current != 0) return Mutation::Keep();
    if (xx && current == 0) return Mutation::Keep();
    if (gt && (current == 0 || when <= current)) return Mutation::Keep();
    if (lt && current != 0 && when >= current) return Mutation::Keep();
    reply = 1;
    if (when <= ctx.now_ms) return Mutation::Remove();
    FLOE_ASSIGN_OR_RETURN(ValuePtr next, Rewrite(ctx, *live, key, when));
    return Mutation::Put(std::move(next));
  });
  if (!r.ok()) return ctx.Error(r.status());
  ctx.out.Integer(reply);
}

void TtlGeneric(CommandContext& ctx, bool output_ms, bool output_abs) {
  ValuePtr v = Lookup(ctx, ctx.args[1], /*count_stats=*/false);
  if (!v) return ctx.out.Integer(-2);
  const int64_t expire = v->expire_at_ms();
  if (expire == 0) return ctx.out.Integer(-1);
  int64_t ttl = output_abs ? expire : expire - ctx.now_ms;
  if (ttl < 0) ttl = 0;
  // Rounded to the nearest second without ttl + 500, which overflows for an expiry at the
  // end of time (PXAT 9223372036854775807).
  ctx.out.Integer(output_ms ? ttl : ttl / 1000 + (ttl % 1000 >= 500 ? 1 : 0));
}

}  // namespace

void CmdDel(CommandContext& ctx) {
  int64_t removed = 0;
  for (size_t i = 1; i < ctx.args.size(); i++) removed += RemoveKey(ctx, ctx.args[i]) ? 1 : 0;
  ctx.out.Integer(removed);
}

void CmdExists(CommandContext& ctx) {
  int64_t n = 0;
  for (size_t i = 1; i < ctx.args.size(); i++) n += Lookup(ctx, ctx.args[i]) ? 1 : 0;
  ctx.out.Integer(n);
}

void CmdTouch(CommandContext& ctx) {
  int64_t n = 0;
  for (size_t i = 1; i < ctx.args.size(); i++) {
    n += Lookup(ctx, ctx.args[i], /*count_stats=*/false) ? 1 : 0;
  }
  ctx.out.Integer(n);
}

void CmdType(CommandContext& ctx) {
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  ctx.out.SimpleString(v ? TypeName(v.get()) : "none");
}

void CmdKeys(CommandContext& ctx) {
  const std::string_view pattern = ctx.args[1];
  const bool all = pattern == "*";
  std::vector<std::string> keys;
  // ForEach, not Scan: Scan may pass a key twice when a shard is rebuilt between its calls.
  ctx.store().ForEach([&](const Value& v) {
    if (v.IsExpired(ctx.now_ms)) return;
    if (all || GlobMatch(pattern, v.key())) keys.emplace_back(v.key());
  });
  ctx.out.ArrayHeader(keys.size());
  for (const std::string& k : keys) ctx.out.Bulk(k);
}

void CmdScan(CommandContext& ctx) {
  uint64_t cursor = 0;
  if (!ParseCursor(ctx.args[1], &cursor)) return ctx.Error("ERR invalid cursor");
  std::string_view pattern;
  bool has_pattern = false;
  std::string_view type;
  bool has_type = false;
  int64_t count = 10;
  for (size_t j = 2; j < ctx.args.size(); j += 2) {
    if (j + 1 >= ctx.args.size()) return ctx.SyntaxError();
    const std::string_view opt = ctx.args[j];
    if (EqualsIgnoreCase(opt, "COUNT")) {
      if (!ParseInt64(ctx.args[j + 1], &count)) return ctx.NotInteger();
      if (count < 1) return ctx.SyntaxError();
    } else if (EqualsIgnoreCase(opt, "MATCH")) {
      pattern = ctx.args[j + 1];
      has_pattern = !(pattern.size() == 1 && pattern[0] == '*');
    } else if (EqualsIgnoreCase(opt, "TYPE")) {
      type = ctx.args[j + 1];
      has_type = true;
    } else {
      return ctx.SyntaxError();
    }
  }
  std::vector<std::string> keys;
  const uint64_t next = ctx.store().Scan(
      cursor, static_cast<size_t>(std::min<int64_t>(count, 1 << 20)), [&](const Value& v) {
        if (v.IsExpired(ctx.now_ms)) return;
        if (has_type && !EqualsIgnoreCase(TypeName(&v), type)) return;
        if (has_pattern && !GlobMatch(pattern, v.key())) return;
        keys.emplace_back(v.key());
      });
  ctx.out.ArrayHeader(2);
  ctx.out.Bulk(std::to_string(next));
  ctx.out.ArrayHeader(keys.size());
  for (const std::string& k : keys) ctx.out.Bulk(k);
}

void CmdRandomKey(CommandContext& ctx) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  if (ctx.store().Size() == 0) return ctx.out.Null();
  // Start a scan at a random position; a few short scans find a key in a non-empty store.
  for (int attempt = 0; attempt < 64; attempt++) {
    uint64_t cursor = rng();
    std::string found;
    for (int step = 0; step < 64 && found.empty(); step++) {
      cursor = ctx.store().Scan(cursor, 1, [&](const Value& v) {
        if (found.empty() && !v.IsExpired(ctx.now_ms)) found = v.key();
      });
      if (cursor == 0) break;
    }
    if (!found.empty()) return ctx.out.Bulk(found);
  }
  // Everything sampled was expired; fall back to a full scan.
  std::string found;
  uint64_t cursor = 0;
  do {
    cursor = ctx.store().Scan(cursor, 1024, [&](const Value& v) {
      if (found.empty() && !v.IsExpired(ctx.now_ms)) found = v.key();
    });
  } while (cursor != 0 && found.empty());
  if (found.empty()) return ctx.out.Null();
  ctx.out.Bulk(found);
}

namespace {
// RENAME and RENAMENX run in the exclusive section, so read, write and remove are atomic.
void RenameGeneric(CommandContext& ctx, bool nx) {
  const std::string_view from = ctx.args[1];
  const std::string_view to = ctx.args[2];
  ValuePtr v = Lookup(ctx, from, /*count_stats=*/false);
  if (!v) return ctx.Error("ERR no such key");
  if (from == to) return nx ? ctx.out.Integer(0) : ctx.out.Ok();
  if (nx && Lookup(ctx, to, /*count_stats=*/false)) return ctx.out.Integer(0);
  Result<ValuePtr> moved = Rewrite(ctx, *v, to, v->expire_at_ms());
  if (!moved.ok()) return ctx.Error(moved.status());
  ctx.store().Put(std::move(moved).value());
  ctx.store().Remove(from);
  return nx ? ctx.out.Integer(1) : ctx.out.Ok();
}
}  // namespace

void CmdRename(CommandContext& ctx) { RenameGeneric(ctx, false); }
void CmdRenameNx(CommandContext& ctx) { RenameGeneric(ctx, true); }

void CmdExpire(CommandContext& ctx) { ExpireGeneric(ctx, ctx.now_ms, ExpireUnit::kSeconds); }
void CmdPExpire(CommandContext& ctx) { ExpireGeneric(ctx, ctx.now_ms, ExpireUnit::kMilliseconds); }
void CmdExpireAt(CommandContext& ctx) { ExpireGeneric(ctx, 0, ExpireUnit::kSeconds); }
void CmdPExpireAt(CommandContext& ctx) { ExpireGeneric(ctx, 0, ExpireUnit::kMilliseconds); }
void CmdTtl(CommandContext& ctx) { TtlGeneric(ctx, false, false); }
void CmdPTtl(CommandContext& ctx) { TtlGeneric(ctx, true, false); }
void CmdExpireTime(CommandContext& ctx) { TtlGeneric(ctx, false, true); }
void CmdPExpireTime(CommandContext& ctx) { TtlGeneric(ctx, true, true); }

void CmdPersist(CommandContext& ctx) {
  const std::string_view key = ctx.args[1];
  int reply = 0;
  Result<ValuePtr> r = ctx.store().Update(key, [&](const Value* cur) -> Result<Mutation> {
    reply = 0;
    const Value* live = Live(cur, ctx.now_ms);
    if (live == nullptr || live->expire_at_ms() == 0) return Mutation::Keep();
    reply = 1;
    FLOE_ASSIGN_OR_RETURN(ValuePtr next, Rewrite(ctx, *live, key, 0));
    return Mutation::Put(std::move(next));
  });
  if (!r.ok()) return ctx.Error(r.status());
  ctx.out.Integer(reply);
}

// Floe derives the encoding from the content, as Redis would for a freshly set string:
// "int" for a decimal that fits 64 bits, "embstr" up to 44 bytes, "raw" beyond.
void CmdObjectEncoding(CommandContext& ctx) {
  ValuePtr v = Lookup(ctx, ctx.args[2], /*count_stats=*/false);
  if (!v) return ctx.out.Null();
  if (v->type() == static_cast<uint16_t>(ValueType::kHll)) {
    // The storage specification's representation: empty, explicit, sparse or full.
    static const char* kNames[] = {"undefined", "empty", "explicit", "sparse", "full"};
    Result<const SketchCell<sketch::HyperLogLog>*> cell = CellOf<sketch::HyperLogLog>(*v);
    if (!cell.ok()) return ctx.out.Bulk("undefined");
    const int t = static_cast<int>(
        (*cell)->Read([](const sketch::HyperLogLog& h) { return h.representation(); }));
    return ctx.out.Bulk(t <= 4 ? kNames[t] : "undefined");
  }
  if (v->type() != static_cast<uint16_t>(ValueType::kString)) return ctx.out.Bulk("raw");
  WithStringBytes(*v, [&](std::string_view p) {
    int64_t ignored = 0;
    if (p.size() <= 20 && ParseInt64(p, &ignored)) return ctx.out.Bulk("int");
    ctx.out.Bulk(p.size() <= 44 ? "embstr" : "raw");
  });
}

void CmdObjectHelp(CommandContext& ctx) {
  static const char* kLines[] = {
      "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
      "ENCODING <key>",
      "    Return the kind of internal representation used in order to store the value",
      "    associated with a <key>.",
      "HELP",
      "    Print this help.",
  };
  ReplyHelp(ctx, kLines);
}

bool ParseCursor(std::string_view s, uint64_t* out) {
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
    if (s.empty()) return false;
  }
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const auto d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = negative ? 0 - v : v;
  return true;
}

}  // namespace floe::server::internal
