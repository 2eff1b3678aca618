// What a hostile or careless client can make one command do, in process: limits that must hold
// whatever the arguments (the over-the-wire cases are in tests/e2e/test_hostile.py).

#include <string>
#include <vector>

#include "server/command_test.h"

namespace floe::server {
namespace {

class HostileTest : public CommandTest {
 protected:
  // What INFO reports as used_memory, computed now (the engine refreshes its figure at most
  // once a millisecond, and INFO would be queued inside MULTI).
  int64_t UsedMemory() {
    return static_cast<int64_t>(engine_.store().MemoryUsed()) + engine_.client_buffer_bytes();
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

TEST_F(HostileTest, TransactionQueueIsChargedAndRefusedOverMaxmemory) {
  // Queued commands were not charged to used memory, so MULTI and 2,000 SETs of 1 MB held 2 GB
  // under maxmemory 100mb, and ten clients could do it at once.
  constexpr int64_t kMax = int64_t{16} << 20;
  ASSERT_THAT(Run({"CONFIG", "SET", "maxmemory", std::to_string(kMax)}), IsOk());
  const int64_t before = UsedMemory();
  const std::string value(size_t{1} << 20, 'v');
  ASSERT_THAT(Run({"MULTI"}), IsOk());
  int queued = 0;
  Reply r;
  for (; queued < 64; queued++) {
    r = Run({"SET", "k", value});
    if (r.type != Reply::Type::kSimple) break;
  }
  EXPECT_LT(queued, 32);
  EXPECT_THAT(r, ErrStartsWith("OOM"));
  // Any command, not only a write, is refused once a queue passes the limit.
  EXPECT_THAT(Run({"ECHO", value}), ErrStartsWith("OOM"));
  EXPECT_LE(UsedMemory(), kMax + (int64_t{2} << 20));
  EXPECT_THAT(Run({"EXEC"}), ErrStartsWith("EXECABORT"));
  EXPECT_LE(UsedMemory(), before + (int64_t{1} << 20));  // the charge is given back
}

TEST_F(HostileTest, WatchOfManyKeysWatchesEachOnce) {
  // WATCH compared every key with every key already watched: 200,000 keys took 20 s, with
  // every client of the I/O thread waiting. Now a set; this checks it still watches each key
  // once and sees a change to any of them.
  std::vector<std::string> watch = {"WATCH"};
  for (int i = 0; i < 200000; i++) watch.push_back("w" + std::to_string(i % 150000));
  ASSERT_THAT(Run(watch), IsOk());
  ASSERT_THAT(Run({"WATCH", "w0", "w149999", "other"}), IsOk());
  Session writer(&engine_, 1);
  ASSERT_THAT(RunOn(writer, {"SET", "w149999", "x"}), IsOk());
  ASSERT_THAT(Run({"MULTI"}), IsOk());
  ASSERT_THAT(Run({"PING"}), IsSimple("QUEUED"));
  EXPECT_THAT(Run({"EXEC"}), IsNil());
  // EXEC forgot the watches: the next transaction runs.
  ASSERT_THAT(Run({"MULTI"}), IsOk());
  ASSERT_THAT(Run({"PING"}), IsSimple("QUEUED"));
  EXPECT_THAT(Run({"EXEC"}), IsArrayOfSize(1));
}

}  // namespace
}  // namespace floe::server
