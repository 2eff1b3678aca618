// String commands, with Redis 7.0 semantics and error texts.

#include <charconv>
#include <cmath>
#include <cstdio>

#include "server/internal/command.h"
#include "server/internal/string_cell.h"

namespace floe::server::internal {

namespace {

using store::Mutation;
using store::Value;
using store::ValuePtr;

constexpr uint16_t kStringType = static_cast<uint16_t>(ValueType::kString);

bool IsString(const Value* v) { return v->type() == kStringType; }

const char kNotInteger[] = "ERR value is not an integer or out of range";

Result<Mutation> PutString(std::string_view key, std::string_view payload, int64_t expire_at_ms) {
  FLOE_ASSIGN_OR_RETURN(ValuePtr v, MakeString(key, payload, expire_at_ms));
  return Mutation::Put(std::move(v));
}

// Redis's getExpireMillisecondsOrReply: the absolute expiry in ms, or an error reply.
bool ParseExpire(CommandContext& ctx, std::string_view arg, ExpireUnit unit, bool absolute,
                 std::string_view command, int64_t* out) {
  int64_t v = 0;
  if (!ParseInt64(arg, &v)) {
    ctx.NotInteger();
    return false;
  }
  if (v <= 0 || !ExpireToMs(v, unit, absolute ? 0 : ctx.now_ms, out)) {
    ctx.Error("ERR invalid expire time in '" + std::string(command) + "' command");
    return false;
  }
  return true;
}

// Options shared by SET and GETEX.
struct StringOptions {
  bool nx = false, xx = false, get = false, keepttl = false, persist = false;
  bool has_expire = false;
  int64_t expire_at_ms = 0;
  // The expiry option as written, until ResolveExpiry reads its number.
  enum Expiry { kNone, kEx, kPx, kExAt, kPxAt } expiry = kNone;
  std::string_view expiry_arg;
};

// Reads the number of the expiry option into o->expire_at_ms (Redis's
// getExpireMillisecondsOrReply); false after replying with the error.
bool ResolveExpiry(CommandContext& ctx, std::string_view command, StringOptions* o) {
  using E = StringOptions::Expiry;
  if (o->expiry == E::kNone) return true;
  const ExpireUnit unit = o->expiry == E::kEx || o->expiry == E::kExAt ? ExpireUnit::kSeconds
                                                                       : ExpireUnit::kMilliseconds;
  if (!ParseExpire(ctx, o->expiry_arg, unit, o->expiry == E::kExAt || o->expiry == E::kPxAt,
                   command, &o->expire_at_ms)) {
    return false;
  }
  o->has_expire = true;
  return true;
}

// Redis's parseExtendedStringArgumentsOrReply: an option may repeat (the last expiry wins) but
// not combine with a conflicting one, and the expiry's number is read only after every option
// was accepted, so `SET k v PX ex 1` is a syntax error before it is a bad number. GETEX reads
// that number later still, after its key lookup (ResolveExpiry): a missing key is nil first.
bool ParseStringOptions(CommandContext& ctx, size_t first, bool for_getex, StringOptions* o) {
  const auto& a = ctx.args;
  using Expiry = StringOptions::Expiry;
  Expiry& expiry = o->expiry;
  std::string_view& expiry_arg = o->expiry_arg;
  constexpr Expiry kNone = Expiry::kNone, kEx = Expiry::kEx, kPx = Expiry::kPx,
                   kExAt = Expiry::kExAt, kPxAt = Expiry::kPxAt;
  for (size_t j = first; j < a.size(); j++) {
    const std::string_view opt = a[j];
    const bool has_next = j + 1 < a.size();
    auto expiry_option = [&](std::string_view name, Expiry kind) {
      return EqualsIgnoreCase(opt, name) && !o->keepttl && !o->persist &&
             (expiry == kNone || expiry == kind) && has_next;
    };
    if (!for_getex && EqualsIgnoreCase(opt, "NX") && !o->xx) {
      o->nx = true;
    } else if (!for_getex && EqualsIgnoreCase(opt, "XX") && !o->nx) {
      o->xx = true;
    } else if (!for_getex && EqualsIgnoreCase(opt, "GET")) {
      o->get = true;
    } else if (!for_getex && EqualsIgnoreCase(opt, "KEEPTTL") && expiry == kNone) {
      o->keepttl = true;
    } else if (for_getex && EqualsIgnoreCase(opt, "PERSIST") && expiry == kNone) {
      o->persist = true;
    } else if (expiry_option("EX", kEx) || expiry_option("PX", kPx) ||
               expiry_option("EXAT", kExAt) || expiry_option("PXAT", kPxAt)) {
      expiry = EqualsIgnoreCase(opt, "EX")     ? kEx
               : EqualsIgnoreCase(opt, "PX")   ? kPx
               : EqualsIgnoreCase(opt, "EXAT") ? kExAt
                                               : kPxAt;
      expiry_arg = a[++j];
    } else {
      ctx.SyntaxError();
      return false;
    }
  }
  return for_getex || ResolveExpiry(ctx, "set", o);
}

// SET and its relatives. Replies per `reply`: OK/nil, the old value (GET), or 1/0 (SETNX).
enum class SetReply { kOkOrNil, kOldValue, kOneZero };

void SetGeneric(CommandContext& ctx, std::string_view key, std::string_view payload,
                const StringOptions& o, SetReply reply) {
  bool applied = false;
  bool had_old = false;
  std::string old;
  Status r =
      ReplaceString(ctx, key, [&](const Value* cur, std::string_view bytes) -> Result<Mutation> {
        const Value* live = Live(cur, ctx.now_ms);
        applied = false;
        had_old = live != nullptr;
        if (live != nullptr && reply == SetReply::kOldValue) {
          if (!IsString(live)) return ClientError(kWrongType);
          old.assign(bytes);
        }
        if ((o.nx && live != nullptr) || (o.xx && live == nullptr)) return Mutation::Keep();
        applied = true;
        int64_t expire = o.has_expire ? o.expire_at_ms : 0;
        if (o.keepttl && live != nullptr) expire = live->expire_at_ms();
        return PutString(key, payload, expire);
      });
  if (!r.ok()) return ctx.Error(r);
  switch (reply) {
    case SetReply::kOkOrNil:
      return applied ? ctx.out.Ok() : ctx.out.Null();
    case SetReply::kOldValue:
      return had_old ? ctx.out.Bulk(old) : ctx.out.Null();
    case SetReply::kOneZero:
      return ctx.out.Integer(applied ? 1 : 0);
  }
}

void IncrGeneric(CommandContext& ctx, int64_t incr) {
  const std::string_view key = ctx.args[1];
  int64_t result = 0;
  Status r =
      ReplaceString(ctx, key, [&](const Value* cur, std::string_view bytes) -> Result<Mutation> {
        const Value* live = Live(cur, ctx.now_ms);
        int64_t old = 0;
        if (live != nullptr) {
          if (!IsString(live)) return ClientError(kWrongType);
          if (!ParseInt64(bytes, &old)) return ClientError(kNotInteger);
        }
        if ((incr < 0 && old < 0 && incr < INT64_MIN - old) ||
            (incr > 0 && old > 0 && incr > INT64_MAX - old)) {
          return ClientError("ERR increment or decrement would overflow");
        }
        result = old + incr;
        char buf[24];
        const char* end = std::to_chars(buf, buf + sizeof(buf), result).ptr;
        return PutString(key, std::string_view(buf, static_cast<size_t>(end - buf)),
                         live != nullptr ? live->expire_at_ms() : 0);
      });
  if (!r.ok()) return ctx.Error(r);
  ctx.out.Integer(result);
}

// Redis's ld2string(LD_STR_HUMAN): "%.17Lf" without trailing zeros or a trailing dot.
std::string HumanLongDouble(long double v) {
  char buf[5120];
  int n = std::snprintf(buf, sizeof(buf), "%.17Lf", v);
  std::string s(buf, static_cast<size_t>(std::max(n, 0)));
  if (s.find('.') != std::string::npos) {
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

}  // namespace

void CmdGet(CommandContext& ctx) {
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.out.Null();
  if (!IsString(v.get())) return ctx.WrongType();
  WithStringBytes(*v, [&](std::string_view s) { ctx.out.Bulk(s); });
}

void CmdSet(CommandContext& ctx) {
  StringOptions o;
  if (!ParseStringOptions(ctx, 3, /*for_getex=*/false, &o)) return;
  SetGeneric(ctx, ctx.args[1], ctx.args[2], o, o.get ? SetReply::kOldValue : SetReply::kOkOrNil);
}

void CmdSetNx(CommandContext& ctx) {
  StringOptions o;
  o.nx = true;
  SetGeneric(ctx, ctx.args[1], ctx.args[2], o, SetReply::kOneZero);
}

void SetExGeneric(CommandContext& ctx, ExpireUnit unit, std::string_view name) {
  StringOptions o;
  if (!ParseExpire(ctx, ctx.args[2], unit, false, name, &o.expire_at_ms)) return;
  o.has_expire = true;
  SetGeneric(ctx, ctx.args[1], ctx.args[3], o, SetReply::kOkOrNil);
}

void CmdSetEx(CommandContext& ctx) { SetExGeneric(ctx, ExpireUnit::kSeconds, "setex"); }
void CmdPSetEx(CommandContext& ctx) { SetExGeneric(ctx, ExpireUnit::kMilliseconds, "psetex"); }

void CmdGetSet(CommandContext& ctx) {
  StringOptions o;
  SetGeneric(ctx, ctx.args[1], ctx.args[2], o, SetReply::kOldValue);
}

void CmdGetDel(CommandContext& ctx) {
  std::string old;
  bool found = false;
  Status r = ReplaceString(ctx, ctx.args[1],
                           [&](const Value* cur, std::string_view bytes) -> Result<Mutation> {
                             const Value* live = Live(cur, ctx.now_ms);
                             found = live != nullptr;
                             if (live == nullptr)
                               return cur != nullptr ? Mutation::Remove() : Mutation::Keep();
                             if (!IsString(live)) return ClientError(kWrongType);
                             old.assign(bytes);
                             return Mutation::Remove();
                           });
  if (!r.ok()) return ctx.Error(r);
  if (!found) return ctx.out.Null();
  ctx.out.Bulk(old);
}

void CmdGetEx(CommandContext& ctx) {
  StringOptions o;
  if (!ParseStringOptions(ctx, 2, /*for_getex=*/true, &o)) return;
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.out.Null();
  if (!IsString(v.get())) return ctx.WrongType();
  if (!ResolveExpiry(ctx, "getex", &o)) return;
  // PERSIST of a key without an expiry changes nothing (and so aborts no WATCH), as in Redis.
  if (o.has_expire || (o.persist && v->expire_at_ms() != 0)) {
    const std::string_view key = ctx.args[1];
    const uint64_t version = v->version();
    Result<ValuePtr> r = ctx.store().Update(key, [&](const Value* cur) -> Result<Mutation> {
      if (cur == nullptr || cur->version() != version) return Mutation::Keep();
      if (o.has_expire && o.expire_at_ms <= ctx.now_ms) return Mutation::Remove();
      // The same bytes under a new expiry; a string cell's box is shared, not copied.
      FLOE_ASSIGN_OR_RETURN(ValuePtr next,
                            RewriteValue(ctx, *cur, key, o.persist ? 0 : o.expire_at_ms));
      return Mutation::Put(std::move(next));
    });
    if (!r.ok()) return ctx.Error(r.status());
  }
  WithStringBytes(*v, [&](std::string_view s) { ctx.out.Bulk(s); });
}

void CmdMGet(CommandContext& ctx) {
  ctx.out.ArrayHeader(ctx.args.size() - 1);
  for (size_t i = 1; i < ctx.args.size(); i++) {
    ValuePtr v = Lookup(ctx, ctx.args[i]);
    if (v && IsString(v.get())) {
      WithStringBytes(*v, [&](std::string_view s) { ctx.out.Bulk(s); });
    } else {
      ctx.out.Null();
    }
  }
}

namespace {
bool CheckPairs(CommandContext& ctx) {
  if (ctx.args.size() % 2 == 0) {
    ctx.Error("ERR wrong number of arguments for '" + std::string(ctx.spec->name) + "' command");
    return false;
  }
  return true;
}

// Makes every key/value pair first, so a bad pair changes nothing; then puts them all. Runs in
// the exclusive section (MSET and MSETNX are flagged so), which makes the puts atomic.
bool PutAllPairs(CommandContext& ctx) {
  std::vector<ValuePtr> values;
  for (size_t i = 1; i + 1 < ctx.args.size(); i += 2) {
    Result<ValuePtr> v = MakeString(ctx.args[i], ctx.args[i + 1]);
    if (!v.ok()) {
      ctx.Error(v.status());
      return false;
    }
    values.push_back(std::move(v).value());
  }
  for (ValuePtr& v : values) ctx.store().Put(std::move(v));
  return true;
}
}  // namespace

void CmdMSet(CommandContext& ctx) {
  if (CheckPairs(ctx) && PutAllPairs(ctx)) ctx.out.Ok();
}

void CmdMSetNx(CommandContext& ctx) {
  if (!CheckPairs(ctx)) return;
  for (size_t i = 1; i + 1 < ctx.args.size(); i += 2) {
    if (Lookup(ctx, ctx.args[i], /*count_stats=*/false)) return ctx.out.Integer(0);
  }
  if (PutAllPairs(ctx)) ctx.out.Integer(1);
}

void CmdIncr(CommandContext& ctx) { IncrGeneric(ctx, 1); }
void CmdDecr(CommandContext& ctx) { IncrGeneric(ctx, -1); }

void CmdIncrBy(CommandContext& ctx) {
  int64_t by = 0;
  if (!ParseInt64(ctx.args[2], &by)) return ctx.NotInteger();
  IncrGeneric(ctx, by);
}

void CmdDecrBy(CommandContext& ctx) {
  int64_t by = 0;
  if (!ParseInt64(ctx.args[2], &by)) return ctx.NotInteger();
  if (by == INT64_MIN) return ctx.Error("ERR decrement would overflow");
  IncrGeneric(ctx, -by);
}

void CmdIncrByFloat(CommandContext& ctx) {
  long double incr = 0;
  if (!ParseLongDouble(ctx.args[2], &incr)) {
    return ctx.Error("ERR value is not a valid float");
  }
  const std::string_view key = ctx.args[1];
  std::string text;
  Status r =
      ReplaceString(ctx, key, [&](const Value* cur, std::string_view bytes) -> Result<Mutation> {
        const Value* live = Live(cur, ctx.now_ms);
        long double old = 0;
        if (live != nullptr) {
          if (!IsString(live)) return ClientError(kWrongType);
          if (!ParseLongDouble(bytes, &old)) {
            return ClientError("ERR value is not a valid float");
          }
        }
        const long double sum = old + incr;
        if (std::isnan(sum) || std::isinf(sum)) {
          return ClientError("ERR increment would produce NaN or Infinity");
        }
        text = HumanLongDouble(sum);
        return PutString(key, text, live != nullptr ? live->expire_at_ms() : 0);
      });
  if (!r.ok()) return ctx.Error(r);
  ctx.out.Bulk(text);
}

// APPEND and SETRANGE change the string in place, in its cell (string_cell.h): amortized
// growth, and every size checked against proto-max-bulk-len and maxmemory before allocating.
void CmdAppend(CommandContext& ctx) {
  const std::string_view tail = ctx.args[2];
  Result<int64_t> r =
      ChangeString(ctx, ctx.args[1], [&](std::string* s, bool* changed) -> Result<int64_t> {
        FLOE_RETURN_IF_ERROR(ReserveString(ctx, s, uint64_t{s->size()} + tail.size()));
        s->append(tail);
        *changed = true;
        return static_cast<int64_t>(s->size());
      });
  if (!r.ok()) return ctx.Error(r.status());
  ctx.out.Integer(*r);
}

void CmdStrLen(CommandContext& ctx) {
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.out.Integer(0);
  if (!IsString(v.get())) return ctx.WrongType();
  ctx.out.Integer(
      WithStringBytes(*v, [](std::string_view s) { return static_cast<int64_t>(s.size()); }));
}

void CmdGetRange(CommandContext& ctx) {
  int64_t start = 0, end = 0;
  if (!ParseInt64(ctx.args[2], &start) || !ParseInt64(ctx.args[3], &end)) return ctx.NotInteger();
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.out.Bulk("");
  if (!IsString(v.get())) return ctx.WrongType();
  WithStringBytes(*v, [&](std::string_view s) {
    const auto len = static_cast<int64_t>(s.size());
    if (start < 0 && end < 0 && start > end) return ctx.out.Bulk("");
    if (start < 0) start = len + start;
    if (end < 0) end = len + end;
    if (start < 0) start = 0;
    if (end < 0) end = 0;
    if (end >= len) end = len - 1;
    if (start > end || len == 0) return ctx.out.Bulk("");
    ctx.out.Bulk(s.substr(static_cast<size_t>(start), static_cast<size_t>(end - start + 1)));
  });
}

void CmdSetRange(CommandContext& ctx) {
  int64_t offset = 0;
  if (!ParseInt64(ctx.args[2], &offset)) return ctx.NotInteger();
  if (offset < 0) return ctx.Error("ERR offset is out of range");
  const std::string_view piece = ctx.args[3];
  // offset + size may pass INT64_MAX: compare without adding.
  const auto limit = static_cast<uint64_t>(std::max<int64_t>(ctx.engine.proto_max_bulk_len(), 0));
  if (!piece.empty() &&
      (piece.size() > limit || static_cast<uint64_t>(offset) > limit - piece.size())) {
    // Redis checks the size only when there is something to write.
    ValuePtr v = Lookup(ctx, ctx.args[1]);
    if (v && !IsString(v.get())) return ctx.WrongType();
    return ctx.Error(kStringTooBig);
  }
  const auto at = static_cast<size_t>(offset);
  Result<int64_t> r =
      ChangeString(ctx, ctx.args[1], [&](std::string* s, bool* changed) -> Result<int64_t> {
        if (piece.empty()) return static_cast<int64_t>(s->size());
        const size_t need = std::max(s->size(), at + piece.size());
        FLOE_RETURN_IF_ERROR(ReserveString(ctx, s, need));
        if (s->size() < need) s->resize(need, '\0');
        s->replace(at, piece.size(), piece);
        *changed = true;
        return static_cast<int64_t>(s->size());
      });
  if (!r.ok()) return ctx.Error(r.status());
  ctx.out.Integer(*r);
}

}  // namespace floe::server::internal
