// Helpers shared by the command handlers: strict number parsing, glob matching, lookups that
// honour expiry.

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "server/internal/command.h"
#include "server/internal/sketch_cell.h"
#include "sketch/sketch.h"

namespace floe::server::internal {

bool ParseInt64(std::string_view s, int64_t* out) { return ParseDecimalInt64(s, out); }

bool ParseLongDouble(std::string_view s, long double* out) {
  if (s.empty() || s.size() > 5000) return false;
  if (std::isspace(static_cast<unsigned char>(s[0]))) return false;
  std::string buf(s);
  char* end = nullptr;
  errno = 0;
  const long double v = std::strtold(buf.c_str(), &end);
  if (end != buf.c_str() + buf.size() || std::isnan(v)) return false;
  // As Redis's string2ld: out of range only when it overflows or underflows to zero; a tiny
  // subnormal such as 1e-4950 is a number.
  if (errno == ERANGE && (std::isinf(v) || v == 0)) return false;
  *out = v;
  return true;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

namespace {
// Redis's stringmatchlen, with a nesting bound on '*' recursion so hostile patterns cannot
// exhaust the stack or run exponentially long.
bool Match(std::string_view p, std::string_view s, bool nocase, int depth, bool* skip_longer) {
  if (depth > 1000) return false;
  auto lower = [nocase](char c) {
    return nocase ? static_cast<char>(std::tolower(static_cast<unsigned char>(c))) : c;
  };
  while (!p.empty() && !s.empty()) {
    switch (p[0]) {
      case '*':
        while (p.size() > 1 && p[1] == '*') p.remove_prefix(1);
        if (p.size() == 1) return true;
        while (!s.empty()) {
          if (Match(p.substr(1), s, nocase, depth + 1, skip_longer)) return true;
          if (*skip_longer) return false;
          s.remove_prefix(1);
        }
        *skip_longer = true;
        return false;
      case '?':
        s.remove_prefix(1);
        break;
      case '[': {
        p.remove_prefix(1);
        const bool negate = !p.empty() && p[0] == '^';
        if (negate) p.remove_prefix(1);
        bool matched = false;
        for (;;) {
          if (p.empty()) break;
          if (p[0] == '\\' && p.size() >= 2) {
            p.remove_prefix(1);
            if (p[0] == s[0]) matched = true;
          } else if (p[0] == ']') {
            break;
          } else if (p.size() >= 3 && p[1] == '-') {
            char start = lower(p[0]), end = lower(p[2]), c = lower(s[0]);
            if (start > end) std::swap(start, end);
            if (c >= start && c <= end) matched = true;
            p.remove_prefix(2);
          } else if (lower(p[0]) == lower(s[0])) {
            matched = true;
          }
          p.remove_prefix(1);
        }
        if (negate) matched = !matched;
        if (!matched) return false;
        s.remove_prefix(1);
        break;
      }
      case '\\':
        if (p.size() >= 2) p.remove_prefix(1);
        [[fallthrough]];
      default:
        if (lower(p[0]) != lower(s[0])) return false;
        s.remove_prefix(1);
        break;
    }
    if (!p.empty()) p.remove_prefix(1);
    if (s.empty()) {
      while (!p.empty() && p[0] == '*') p.remove_prefix(1);
      break;
    }
  }
  return p.empty() && s.empty();
}
}  // namespace

bool GlobMatch(std::string_view pattern, std::string_view text, bool nocase) {
  bool skip_longer = false;
  return Match(pattern, text, nocase, 0, &skip_longer);
}

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

bool ParseRedisDouble(std::string_view s, double* out) {
  if (s.empty() || s.size() > 256 || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  const std::string buf(s);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(buf.c_str(), &end);
  if (end != buf.c_str() + buf.size() || std::isnan(v)) return false;
  if (errno == ERANGE && (std::isinf(v) || v == 0)) return false;
  *out = v;
  return true;
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

void ReplyHelp(CommandContext& ctx, std::span<const char* const> lines) {
  ctx.out.ArrayHeader(lines.size());
  for (const char* line : lines) ctx.out.SimpleString(line);
}

bool OverMemoryLimit(Engine& engine) {
  const int64_t limit = engine.maxmemory();
  return limit > 0 && engine.UsedMemory() > limit;
}

}  // namespace floe::server::internal
