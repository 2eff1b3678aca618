// What a hostile or careless client can make one command do, in process: limits that must hold
// whatever the arguments (the over-the-wire cases are in tests/e2e/test_hostile.py).

#include <string>

#include "server/command_test.h"

namespace floe::server {
namespace {

class HostileTest : public CommandTest {
 protected:
  int64_t UsedMemory() {
    const Reply info = Run({"INFO", "memory"});
    const size_t at = info.str.find("used_memory:");
    EXPECT_NE(at, std::string::npos) << info.str;
    return at == std::string::npos ? 0 : std::stoll(info.str.substr(at + 12));
  }
};

TEST_F(HostileTest, AppendedStringStaysWithinMaxmemory) {
  // Growing a string asked the allocator for Redis's step (1 MiB beyond 1 MiB) and checked that
  // against maxmemory, but std::string::reserve doubled the capacity instead: appends of 1 MiB
  // took used_memory to about twice maxmemory before the first OOM error.
  constexpr int64_t kMax = int64_t{24} << 20;
  ASSERT_THAT(Run({"CONFIG", "SET", "maxmemory", std::to_string(kMax)}), IsOk());
  const std::string chunk(size_t{1} << 20, 'a');
  bool refused = false;
  for (int i = 0; i < 64 && !refused; i++) {
    const Reply r = Run({"APPEND", "s", chunk});
    refused = r.type == Reply::Type::kError;
    if (refused) {
      EXPECT_THAT(r, ErrStartsWith("OOM")) << i;
    }
    ASSERT_LE(UsedMemory(), kMax + (int64_t{2} << 20)) << "after " << i + 1 << " appends";
  }
  EXPECT_TRUE(refused);
}

TEST_F(HostileTest, SetrangeGrowthStaysWithinMaxmemory) {
  constexpr int64_t kMax = int64_t{24} << 20;
  ASSERT_THAT(Run({"CONFIG", "SET", "maxmemory", std::to_string(kMax)}), IsOk());
  bool refused = false;
  for (int i = 1; i <= 64 && !refused; i++) {
    const Reply r = Run({"SETRANGE", "s", std::to_string((int64_t{i} << 20) - 1), "x"});
    refused = r.type == Reply::Type::kError;
    ASSERT_LE(UsedMemory(), kMax + (int64_t{2} << 20)) << "after " << i << " setranges";
  }
  EXPECT_TRUE(refused);
}

}  // namespace
}  // namespace floe::server
