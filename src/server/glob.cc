// Redis's glob matching (KEYS, SCAN MATCH, CONFIG GET, COMMAND LIST).

#include <cctype>
#include <utility>

#include "server/internal/command.h"

namespace floe::server::internal {

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

}  // namespace floe::server::internal
