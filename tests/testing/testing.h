// Helpers shared by the unit tests. Test-only: outside the layers of src/; only *_test.cc
// files include it.
#ifndef FLOE_TESTING_TESTING_H_
#define FLOE_TESTING_TESTING_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace floe::testing {

// The seed of a randomized test, printed so that a failure can be replayed with
// FLOE_TEST_SEED=<seed>, which overrides it.
//
// Seed() is a fresh seed each run, for tests whose every assertion must hold whatever the
// inputs (round trips, no false negatives, exactly-once delivery): each run explores new
// inputs. Seed(fixed) is the same seed every run unless overridden, for tests whose assertions
// are statistical (an estimate within k standard errors): any seed fails with some small
// probability, so CI runs one known seed and the comment at the assertion states the
// probability that an arbitrary seed fails.
inline uint64_t Seed(uint64_t fixed, bool random) {
  uint64_t seed = fixed;
  if (const char* env = std::getenv("FLOE_TEST_SEED"); env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 10);
  } else if (random) {
    seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  }
  std::printf("FLOE_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  return seed;
}
inline uint64_t Seed() { return Seed(0, true); }
inline uint64_t Seed(uint64_t fixed) { return Seed(fixed, false); }

}  // namespace floe::testing

#endif  // FLOE_TESTING_TESTING_H_
