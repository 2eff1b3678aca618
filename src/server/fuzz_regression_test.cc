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

// Differential: `CONFIG SET nosuch 1 nosuch 1` answered "duplicate parameter"; Redis reports the
// unknown name first (and checks no duplicates after an unknown name).
TEST_F(CommandTest, ConfigSetReportsAnUnknownNameBeforeADuplicate) {
  const char kUnknown[] = "ERR Unknown option or number of arguments for CONFIG SET - 'NoSuch'";
  EXPECT_THAT(Run({"CONFIG", "SET", "NoSuch", "1", "NoSuch", "1"}), IsErr(kUnknown));
  EXPECT_THAT(Run({"CONFIG", "SET", "NoSuch", "1", "hz", "1", "hz", "2"}), IsErr(kUnknown));
  EXPECT_THAT(Run({"CONFIG", "SET", "hz", "1", "hz", "2", "NoSuch", "1"}),
              IsErr("ERR CONFIG SET failed (possibly related to argument 'hz') - duplicate "
                    "parameter"));
  EXPECT_THAT(Run({"CONFIG", "GET", "hz"}).elements[1].str, "10");
}

// Differential: `SELECT -9223372036854775808` answered "DB index is out of range"; Redis reads
// the index as an int first.
TEST_F(CommandTest, SelectOfAnIndexBeyondAnIntIsOutOfRangeOfAnInt) {
  const char kNotInt32[] =
      "ERR value is out of range, value must between -2147483648 and 2147483647";
  EXPECT_THAT(Run({"SELECT", "-9223372036854775808"}), IsErr(kNotInt32));
  EXPECT_THAT(Run({"SELECT", "2147483648"}), IsErr(kNotInt32));
  EXPECT_THAT(Run({"SELECT", "-2147483648"}), IsErr("ERR DB index is out of range"));
  EXPECT_THAT(Run({"SELECT", "0"}), IsOk());
}

// Differential: `EXPIREAT k 4102444800 "\r\n"` answered "-ERR Unsupported option   "; Redis
// drops CR and LF at the end of an error text and turns only the inner ones into spaces.
TEST_F(CommandTest, ErrorTextDropsLineBreaksAtItsEnd) {
  Run({"SET", "k", "v"});
  EXPECT_EQ(session_.Run({"EXPIREAT", "k", "4102444800", "\r\n"}), "-ERR Unsupported option \r\n");
  EXPECT_EQ(session_.Run({"EXPIREAT", "k", "4102444800", "a\r\nb"}),
            "-ERR Unsupported option a  b\r\n");
}

}  // namespace
}  // namespace floe::server
