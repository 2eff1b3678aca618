// `floe selfcheck`: exercises the store from several threads and verifies every result.

#ifndef FLOE_APP_SELFCHECK_H_
#define FLOE_APP_SELFCHECK_H_

#include <cstddef>

namespace floe::app {

struct SelfCheckOptions {
  size_t keys = 1'000'000;  // keys loaded and verified
  int threads = 2;          // worker threads for every phase
  bool quiet = false;       // no progress lines
};

// Returns the process exit code: 0 when every check passed.
int RunSelfCheck(const SelfCheckOptions& options);

}  // namespace floe::app

#endif  // FLOE_APP_SELFCHECK_H_
