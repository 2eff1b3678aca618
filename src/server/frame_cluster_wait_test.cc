// Frames in a cluster, rule D13 (docs/frames_cluster.md): nothing waits for another member
// under a lock the node's loop thread takes. In the frame_cluster_test binary.

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster.h"
#include "dkv/dkv.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/frame_testing.h"
#include "server/server.h"

namespace floe::server::internal {
namespace {

// D13 (and D9): FRAME.FILTER and FRAME.SELECT run at once after a member is killed, before any
// heartbeat marks it down, through the source's home's own session (no reply sink: the path
// that ran the work inline). They fail with the silent member's CLUSTERDOWN once the budget
// passes, and store nothing. They waited under ApplyIfFree's stripe locks, which the loop's DKV
// sweep (every second, within the 3 s budget here) then waited for, and the loop delivers the
// deadline: a hang.
TEST(FrameClusterWaitTest, ADerivedFrameRightAfterAKillFailsWithinItsBudget) {
  FramesInCluster lifted;
  ClientCluster c(3, -1, /*timeout_ms=*/4000);
  ASSERT_TRUE(c.WaitFormed());
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(12));
  const std::string src = c.KeyAt(0, "s");
  PutClusterFrame(c, 0, src, f);
  c.Kill(2);
  const std::string down =
      "-CLUSTERDOWN The node 127.0.0.1:" + std::to_string(c.cluster_port(2)) + " is unreachable";
  for (const std::string& dst : {c.KeyAt(0, "here"), c.KeyAt(1, "there")}) {
    for (const std::vector<std::string>& args :
         std::vector<std::vector<std::string>>{{"FRAME.FILTER", src, dst, "WHERE", "r", ">", "0"},
                                               {"FRAME.SELECT", src, dst, "COLS", "i", "w"}}) {
      std::string reply;
      ASSERT_TRUE(ReturnsWithin(std::chrono::seconds(60), [&] { reply = c.client(0).Run(args); }));
      EXPECT_TRUE(reply.starts_with(down)) << args[0] << " " << dst << ": " << reply;
      EXPECT_EQ(c.client(0).Run({"EXISTS", dst}), ":0\r\n");
    }
  }
}

// D13: while a map task waits for a member's answer, the coordinator's loop thread runs the
// DKV's sweep (it takes the stripe locks a write command's handler runs under). Member 1 holds
// its map until member 0 has swept, or 4 s (the sweep comes every second; member 1's budget is
// 4.5 s), through the home's own session (no reply sink).
TEST(FrameClusterWaitTest, TheLoopSweepsWhileAMapTaskWaits) {
  FramesInCluster lifted;
  ClientCluster c(3, -1, /*timeout_ms=*/8000);
  ASSERT_TRUE(c.WaitFormed());
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(12));
  const std::string src = c.KeyAt(0, "s"), dst = c.KeyAt(0, "t");
  PutClusterFrame(c, 0, src, f);
  const dkv::Stats& stats = c.node(0).dkv().stats();
  std::atomic<int> held{0}, swept{0};
  c.node(1).TEST_SetMapHook([&] {
    held++;
    const uint64_t before = stats.home_sweeps.load();
    // The sweep comes every second; 4 s without one is a sweep blocked.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(4);
    while (std::chrono::steady_clock::now() < until) {
      if (stats.home_sweeps.load() > before) {
        swept++;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"FRAME.FILTER", src, dst, "WHERE", "r", ">", "0"},
                                             {"FRAME.SELECT", src, dst, "COLS", "i", "REPLACE"},
                                             {"FRAME.SUMMARY", src, "r"}}) {
    const int before = held.load();
    std::string reply;
    ASSERT_TRUE(ReturnsWithin(std::chrono::seconds(60), [&] { reply = c.client(0).Run(args); }));
    EXPECT_FALSE(reply.starts_with("-")) << args[0] << ": " << reply;
    EXPECT_GT(held.load(), before) << args[0];
    EXPECT_EQ(swept.load(), held.load()) << args[0] << ": the sweep waited for the command";
  }
  c.node(1).TEST_SetMapHook(nullptr);
}

// A client that leaves ends its cluster SUMMARY, QUANTILE and GROUPBY (frames_cluster.md,
// "Open questions"): the coordinator stops waiting for a member that is still mapping. Member
// 1 holds its map until the command has returned (or 20 s); the command used to wait for it.
TEST(FrameClusterWaitTest, AClientThatLeavesEndsItsMapTask) {
  FramesInCluster lifted;
  ClientCluster c(3, -1, /*timeout_ms=*/30000);
  ASSERT_TRUE(c.WaitFormed());
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(12));
  const std::string src = c.KeyAt(0, "s");
  PutClusterFrame(c, 0, src, f);
  std::atomic<bool> entered{false}, returned{false};
  c.node(1).TEST_SetMapHook([&] {
    entered = true;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!returned.load() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"FRAME.SUMMARY", src, "r"},
           {"FRAME.QUANTILE", src, "r", "0.5"},
           {"FRAME.GROUPBY", src, c.KeyAt(0, "g"), "KEYS", "i", "AGG", "count", "r"}}) {
    entered = false;
    returned = false;
    Session& s = c.client(0);
    std::thread leave([&] {
      while (!entered.load()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      s.state().kill_requested.store(true);
    });
    std::string reply;
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(ReturnsWithin(std::chrono::seconds(60), [&] { reply = s.Run(args); }));
    // The member holds its map 20 s unless the command returns first.
    const bool before_the_member =
        std::chrono::steady_clock::now() - start < std::chrono::seconds(15);
    returned = true;
    leave.join();
    EXPECT_TRUE(before_the_member) << args[0] << " waited for the member: " << reply;
    EXPECT_TRUE(reply.starts_with("-")) << args[0] << ": " << reply;
  }
  c.node(1).TEST_SetMapHook(nullptr);
}

}  // namespace
}  // namespace floe::server::internal
