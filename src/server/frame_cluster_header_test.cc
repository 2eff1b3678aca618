// Frames in a cluster, rule D4 with C7 (docs/frames_cluster.md, docs/cluster.md): a frame's
// header stored at its name's home by PUT_HEADER is a change at that home like a command's, so
// every other member's cached copy of the name goes first. In the frame_cluster_test binary.

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "cluster/cluster.h"
#include "dkv/dkv.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/frame_testing.h"
#include "server/server.h"

namespace floe::server::internal {
namespace {

// Reads `key` through member i until it holds a copy (the first read's prefetch).
bool WaitForCopy(ClientCluster& c, size_t i, const std::string& key) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < until) {
    c.client(i).Run({"GET", key});
    if (c.node(i).dkv().TryGetLocal(key).has_value()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// C7 for PUT_HEADER: members 0 and 2 hold copies of a string homed at member 1; a frame header
// put there over it (REPLACE, as FRAME.IMPORT ... REPLACE does) is seen through both at once:
// the copies were invalidated before the put answered. Both the remote handler (called from
// member 2) and the home's own call (member 1 to itself) are checked.
TEST(FrameClusterHeaderTest, APutHeaderInvalidatesCopiesOfTheName) {
  ClientCluster c(3, -1, /*timeout_ms=*/5000);
  ASSERT_TRUE(c.WaitFormed());
  auto f = std::make_shared<const frame::Frame>(ChunkedFrame(4));
  for (size_t via : {size_t{2}, size_t{1}}) {
    const std::string name = c.KeyAt(1, "hdr" + std::to_string(via));
    ASSERT_EQ(c.client(1).Run({"SET", name, "old"}), "+OK\r\n");
    ASSERT_TRUE(WaitForCopy(c, 0, name));
    ASSERT_TRUE(WaitForCopy(c, 2, name));
    const uint64_t sent = c.node(1).dkv().stats().invalidations_sent.load();
    const uint16_t group = RandomChunkGroup();
    const uint64_t id = c.engine(via).NewFrameId();
    ASSERT_TRUE(PutChunksOf(c.node(via), f, id, group, cluster::KeySlot(name)).ok());
    Result<std::string> put =
        CallFrame(c.node(via), c.node(1).self(), kPutHeaderMethod,
                  EncodePutHeader({.map_version = c.node(via).map().version(),
                                   .key = name,
                                   .replace = true,
                                   .header = EncodeFrameHeader(HeaderOf(*f, id, group))}));
    ASSERT_TRUE(put.ok()) << put.status().ToString();
    for (size_t i = 0; i < 3; i++) {
      EXPECT_EQ(c.client(i).Run({"TYPE", name}), "+frame\r\n") << via << " " << i;
      EXPECT_TRUE(c.client(i).Run({"GET", name}).starts_with("-WRONGTYPE")) << via << " " << i;
    }
    EXPECT_GE(c.node(1).dkv().stats().invalidations_sent.load(), sent + 2) << via;
  }
}

// The same for a derived frame (FRAME.FILTER, FRAME.SELECT), through the source's home and
// another member, with the destination homed at the source's home or elsewhere: the command's
// keys name its source alone, so its header's PUT_HEADER clears the destination's copies.
TEST(FrameClusterHeaderTest, ADerivedFrameAtItsSourcesHomeInvalidatesCopies) {
  FramesInCluster lifted;
  ClientCluster c(3, -1, /*timeout_ms=*/5000);
  ASSERT_TRUE(c.WaitFormed());
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(6));
  const std::string src = c.KeyAt(1, "src");
  PutClusterFrame(c, 0, src, f);
  for (size_t home : {size_t{1}, size_t{2}}) {
    for (size_t via : {size_t{0}, size_t{1}}) {
      const std::string dst = c.KeyAt(home, "dst" + std::to_string(via));
      const size_t other = home == 1 ? 2 : 1;
      ASSERT_EQ(c.client(home).Run({"SET", dst, "old"}), "+OK\r\n");
      ASSERT_TRUE(WaitForCopy(c, 0, dst));
      ASSERT_TRUE(WaitForCopy(c, other, dst));
      const uint64_t sent = c.node(home).dkv().stats().invalidations_sent.load();
      EXPECT_EQ(c.client(via)
                    .Run({"FRAME.FILTER", src, dst, "WHERE", "i", ">", "100", "REPLACE"})
                    .substr(0, 1),
                ":");
      EXPECT_EQ(c.client(via).Run({"FRAME.SELECT", src, dst, "COLS", "i", "REPLACE"}), ":1\r\n");
      for (size_t i = 0; i < 3; i++) {
        EXPECT_EQ(c.client(i).Run({"TYPE", dst}), "+frame\r\n") << home << via << i;
      }
      EXPECT_GE(c.node(home).dkv().stats().invalidations_sent.load(), sent + 2) << home << via;
    }
  }
}

// D14: a header whose home could not store it before its caller's deadline (its key held
// reserved there meanwhile) is never stored later: the caller hears CLUSTERDOWN's unknown
// outcome, and once the key is free the name is still no frame (before, it became one whose
// chunks the caller had dropped: FRAME.HEAD failed with a missing chunk). At a remote home and
// at the source's own.
TEST(FrameClusterHeaderTest, AHeaderIsNeverStoredAfterItsCallerGaveUp) {
  FramesInCluster lifted;
  ClientCluster c(3, -1, /*timeout_ms=*/500);
  ASSERT_TRUE(c.WaitFormed());
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(6));
  const std::string src = c.KeyAt(1, "src");
  PutClusterFrame(c, 0, src, f);
  for (size_t home : {size_t{2}, size_t{1}}) {
    const std::string dst = c.KeyAt(home, "late");
    std::promise<void> held;
    c.node(home).dkv().Reserve({dst}, [&held] { held.set_value(); });
    held.get_future().get();
    const std::string reply =
        c.client(1).Run({"FRAME.FILTER", src, dst, "WHERE", "i", ">", "-1", "REPLACE"});
    EXPECT_TRUE(reply.starts_with("-CLUSTERDOWN ")) << home << ": " << reply;
    EXPECT_NE(reply.find("may or may not be stored"), std::string::npos) << reply;
    c.node(home).dkv().Release({dst});
    // The put's store runs once the key is free, and refuses: its deadline passed.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (size_t i = 0; i < 3; i++) {
      EXPECT_EQ(c.client(i).Run({"TYPE", dst}), "+none\r\n") << home << " " << i;
    }
  }
}

// D14: FRAME.FILTER onto its own source, while another change holds the source reserved: the
// command changes no key where it runs, so it does not wait for that change inline (before, its
// header's put queued behind the reservation its own run held, and the client heard TIMEOUT
// after ChangeTimeoutUs, then the frame was replaced anyway). It stores once the source is free.
TEST(FrameClusterHeaderTest, AFilterOntoItsOwnSourceDoesNotWaitForItself) {
  FramesInCluster lifted;
  ClientCluster c(3, -1, /*timeout_ms=*/500);
  ASSERT_TRUE(c.WaitFormed());
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(6));
  const std::string src = c.KeyAt(1, "self");
  PutClusterFrame(c, 0, src, f);
  std::promise<void> held;
  c.node(1).dkv().Reserve({src}, [&held] { held.set_value(); });
  held.get_future().get();
  std::string reply;
  std::thread client([&] {
    reply = c.client(1).Run({"FRAME.FILTER", src, src, "WHERE", "i", ">", "100", "REPLACE"});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  c.node(1).dkv().Release({src});
  client.join();
  ASSERT_TRUE(reply.starts_with(":")) << reply;
  const std::string rows = reply.substr(1, reply.size() - 3);
  const std::string info = c.client(0).Run({"FRAME.INFO", src});
  EXPECT_NE(info.find("rows\r\n:" + rows + "\r\n"), std::string::npos) << rows << " " << info;
}

}  // namespace
}  // namespace floe::server::internal
