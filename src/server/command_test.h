// The in-process command-test fixture: a Session runs commands against an Engine, replies are
// decoded and matched (shared by server_test.cc and sketch_commands_test.cc).

#ifndef FLOE_SERVER_COMMAND_TEST_H_
#define FLOE_SERVER_COMMAND_TEST_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "resp/resp.h"
#include "server/server.h"

namespace floe::resp {
inline void PrintTo(const Reply& r, std::ostream* os) { *os << r.ToString(); }
}  // namespace floe::resp

namespace floe::server {

using resp::Reply;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class CommandTest : public ::testing::Test {
 public:
  static Reply Decode(const std::string& raw) {
    size_t consumed = 0;
    Result<Reply> r = resp::ParseReply(raw, &consumed);
    EXPECT_TRUE(r.ok()) << raw;
    EXPECT_EQ(consumed, raw.size()) << "one reply expected: " << raw;
    return r.ok() ? *r : Reply{};
  }

 protected:
  CommandTest() : CommandTest(Config()) {}
  explicit CommandTest(Config config) : engine_(std::move(config), 2), session_(&engine_, 0) {}

  Reply Run(std::vector<std::string> args) { return Decode(session_.Run(args)); }
  Reply RunOn(Session& s, std::vector<std::string> args) { return Decode(s.Run(args)); }
  // A job's map from JOB.STATUS, once it has finished (frame imports and exports).
  std::map<std::string, Reply> Wait(int64_t id) {
    for (int i = 0; i < 2000; i++) {
      Reply r = Run({"JOB.STATUS", std::to_string(id)});
      std::map<std::string, Reply> m;
      for (size_t k = 0; k + 1 < r.elements.size(); k += 2)
        m[r.elements[k].str] = r.elements[k + 1];
      if (m["state"].str != "running") return m;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "job " << id << " did not finish";
    return {};
  }

  Engine engine_;
  Session session_;
};

MATCHER(IsOk, "") { return arg.type == Reply::Type::kSimple && arg.str == "OK"; }
MATCHER_P(IsSimple, s, "") { return arg.type == Reply::Type::kSimple && arg.str == s; }
MATCHER_P(IsInt, n, "") { return arg.type == Reply::Type::kInteger && arg.integer == n; }
MATCHER_P(IsBulk, s, "") { return arg.type == Reply::Type::kBulk && arg.str == s; }
MATCHER(IsNil, "") { return arg.type == Reply::Type::kNull; }
MATCHER_P(IsErr, text, "") { return arg.type == Reply::Type::kError && arg.str == text; }
MATCHER_P(ErrStartsWith, prefix, "") {
  return arg.type == Reply::Type::kError && arg.str.rfind(prefix, 0) == 0;
}
MATCHER_P(IsArrayOfSize, n, "") {
  return arg.type == Reply::Type::kArray && arg.elements.size() == static_cast<size_t>(n);
}

const char kWrongType[] = "WRONGTYPE Operation against a key holding the wrong kind of value";
const char kNotInt[] = "ERR value is not an integer or out of range";

inline int64_t NowMs() { return static_cast<int64_t>(WallMicros() / 1000); }

}  // namespace floe::server

#endif  // FLOE_SERVER_COMMAND_TEST_H_
