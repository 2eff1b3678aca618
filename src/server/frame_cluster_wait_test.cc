// Frames in a cluster, rule D13 (docs/frames_cluster.md): nothing waits for another member
// under a lock the node's loop thread takes; a member's maps run on its map pool, never on the
// threads its forwarded commands need; a client that leaves ends its map task.

#include <gtest/gtest.h>

#include <algorithm>
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
  // Each command's map at member 1 is held until that command has returned (or 20 s): a
  // generation each, so a hold never outlives its own command.
  std::atomic<int> started{0}, finished{0};
  std::atomic<bool> entered{false};
  c.node(1).TEST_SetMapHook([&] {
    const int mine = started.load();
    entered = true;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (finished.load() < mine && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"FRAME.SUMMARY", src, "r"},
           {"FRAME.QUANTILE", src, "r", "0.5"},
           {"FRAME.GROUPBY", src, c.KeyAt(0, "g"), "KEYS", "i", "AGG", "count", "r"}}) {
    entered = false;
    started++;
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
    finished = started.load();
    leave.join();
    EXPECT_TRUE(before_the_member) << args[0] << " waited for the member: " << reply;
    EXPECT_TRUE(reply.starts_with("-")) << args[0] << ": " << reply;
  }
  c.node(1).TEST_SetMapHook(nullptr);
}

// A member maps its own chunks for other members' MAP_TASKs on its map pool (a thread a core,
// at most kMaxQueuedAnalytics waiting, the rest refused), never on the class-1 handler threads its
// forwarded commands run on (frames_cluster.md, "Open questions"): twelve MAP_TASKs held at member
// 1 left a GET forwarded to it waiting for them (eight class-1 threads, all mapping).
TEST(FrameClusterWaitTest, MapsWaitingAtAMemberLeaveItsForwardedCommandsServed) {
  FramesInCluster lifted;
  ClientCluster c(3, -1, /*timeout_ms=*/30000);
  ASSERT_TRUE(c.WaitFormed());
  const frame::Frame f = AnalyticsFrame(6);
  const std::string header = EncodeFrameHeader(HeaderOf(f, 1, 0));
  std::atomic<bool> release{false};
  std::atomic<int> held{0};
  c.node(1).TEST_SetMapHook([&] {
    held++;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!release.load() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  MapTaskRequest req{.map_version = c.node(1).map().version(),
                     .op = MapOp::kSummaryMoments,
                     .budget_us = 25'000'000,
                     .members = {c.node(1).self()}};
  req.header = header;
  const std::string task = EncodeMapTask(req);
  // A thread a core maps, 64 wait (kMaxQueuedAnalytics), the rest (4) are refused at once.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int kCalls = cores + static_cast<int>(kMaxQueuedAnalytics) + 4;
  std::vector<std::string> answers(static_cast<size_t>(kCalls));
  std::vector<std::thread> calls;
  for (int i = 0; i < kCalls; i++) {
    calls.emplace_back([&, i] {
      Result<std::string> r = CallFrame(c.node(0), c.node(1).self(), kMapTaskMethod, task);
      answers[static_cast<size_t>(i)] = r.ok() ? "ok" : std::string(r.status().message());
    });
  }
  for (int i = 0; i < 2000 && held.load() == 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GT(held.load(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the others reach member 1
  const std::string k = c.KeyAt(1);
  ASSERT_EQ(c.client(1).Run({"SET", k, "v"}), "+OK\r\n");
  std::string got;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(ReturnsWithin(std::chrono::seconds(60), [&] { got = c.client(0).Run({"GET", k}); }));
  const bool before_the_maps =
      !release.load() && std::chrono::steady_clock::now() - start < std::chrono::seconds(10);
  release = true;
  for (std::thread& t : calls) t.join();
  c.node(1).TEST_SetMapHook(nullptr);
  EXPECT_TRUE(before_the_maps) << "the forwarded GET waited for the maps";
  EXPECT_EQ(got, "$1\r\nv\r\n");
  const auto busy = std::count_if(answers.begin(), answers.end(), [](const std::string& a) {
    return a.find("has too many map tasks waiting") != std::string::npos;
  });
  EXPECT_GE(busy, 4);
}

}  // namespace
}  // namespace floe::server::internal
