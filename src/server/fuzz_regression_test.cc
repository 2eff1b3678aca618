// Regression tests for what the command fuzzer (fuzz/command_fuzz.cc) and the randomized
// differential test (tests/e2e/test_random_differential.py) found, one test per finding, each
// naming the sequence that found it.

#include "server/command_test.h"

namespace floe::server {
namespace {

// Differential: `CONFIG SET maxmemory-policy noeviction PXAT` answered an arity error; Redis 7.0
// answers a syntax error for an odd number of arguments past the minimum arity.
TEST_F(CommandTest, ConfigSetWithAnOddNumberOfArgumentsIsASyntaxError) {
  EXPECT_THAT(Run({"CONFIG", "SET", "hz", "10", "timeout"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"CONFIG", "GET", "hz"}).elements[1].str, "10");
}

// Differential: `MULTI`, `QUIT` queued the QUIT and kept the connection; Redis replies +OK and
// closes at once (its processCommand exempts QUIT from queueing, as it does RESET).
TEST_F(CommandTest, QuitInsideMultiClosesAtOnce) {
  EXPECT_THAT(Run({"MULTI"}), IsOk());
  EXPECT_THAT(Run({"SET", "k", "v"}), IsSimple("QUEUED"));
  EXPECT_THAT(Run({"QUIT"}), IsOk());
  EXPECT_TRUE(session_.close_requested());
  Session other(&engine_, 0);
  EXPECT_THAT(RunOn(other, {"EXISTS", "k"}), IsInt(0));  // the transaction never ran
}

}  // namespace
}  // namespace floe::server
