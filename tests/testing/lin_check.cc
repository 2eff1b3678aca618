// lin_check: checks a history recorded as text (format: linearizability.h) for linearizability,
// for tests whose clients are not C++ (tests/e2e). Usage: lin_check <file | ->.
// Prints the verdict and, unless it is ok, the explanation. Exit status: 0 linearizable,
// 1 violation, 2 gave up (kUnknown), 3 invalid history or unreadable input.
#include <cstdio>
#include <string>

#include "testing/linearizability.h"

int main(int argc, char** argv) {
  namespace lin = floe::testing::lin;
  if (argc != 2) {
    std::fprintf(stderr, "usage: lin_check <history file | ->\n");
    return 3;
  }
  const bool from_stdin = std::string(argv[1]) == "-";
  std::FILE* file = from_stdin ? stdin : std::fopen(argv[1], "rb");
  if (file == nullptr) {
    std::fprintf(stderr, "lin_check: cannot read %s\n", argv[1]);
    return 3;
  }
  std::string text;
  char buffer[1 << 16];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, file)) > 0;) text.append(buffer, n);
  const bool failed = std::ferror(file) != 0;
  if (!from_stdin) std::fclose(file);
  if (failed) {
    std::fprintf(stderr, "lin_check: cannot read %s\n", argv[1]);
    return 3;
  }
  std::vector<lin::Operation> history;
  std::string error;
  if (!lin::ParseHistory(text, &history, &error)) {
    std::fprintf(stderr, "lin_check: %s: %s\n", argv[1], error.c_str());
    return 3;
  }
  const lin::CheckResult result = lin::Check(history);
  std::printf("%s: %zu operations, %zu keys, %llu model steps\n",
              std::string(lin::VerdictName(result.verdict)).c_str(), history.size(),
              result.keys_checked, static_cast<unsigned long long>(result.steps));
  std::fputs(result.explanation.c_str(), stdout);
  switch (result.verdict) {
    case lin::Verdict::kOk:
      return 0;
    case lin::Verdict::kViolation:
      return 1;
    case lin::Verdict::kUnknown:
      return 2;
    case lin::Verdict::kInvalid:
      return 3;
  }
  return 3;
}
