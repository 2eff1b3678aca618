// Removing a member that owns nothing (docs/membership.md, rule J2): CLUSTER LEAVE at the
// member, CLUSTER FORGET at any member, both through the Raft leader (RemoveMember, then
// RemoveServer); a member that owns or backs up slots, or an id never assigned, is refused.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "cluster/cluster.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_node_impl.h"
#include "server/internal/cluster_testing.h"
#include "server/server.h"
#include "testing/process.h"

namespace floe::server {
namespace {

using internal::ClusterNode;
using internal::InTable;
using internal::JoinedNode;
using internal::JoinerConfig;
using internal::NotTheLeader;
using internal::WaitRemovedEverywhere;
using ::testing::HasSubstr;

// CLUSTER LEAVE at a joined member removes it from the table and from Raft's configuration at
// every member; it stops serving, its directory refuses a restart, and the same address joins
// again (with a fresh directory) under a new id.
TEST(ClusterLeaveTest, ALeaverIsRemovedEverywhereAndItsAddressJoinsAgainUnderANewId) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir dir, fresh;
  const int port = floe::testing::FreeClusterPort();
  const Config config = JoinerConfig(c, dir.path(), port);
  const std::string key = c.KeyAt(1, "leave");
  {
    Session s(&c.engine(1), 0);
    ASSERT_EQ(s.Run({"SET", key, "v"}), "+OK\r\n");
  }
  JoinedNode j;
  ASSERT_NO_FATAL_FAILURE(internal::StartJoinedNode(config, &j));
  ASSERT_EQ(j.node->self(), 4u);
  for (size_t i = 0; i < 3; i++) ASSERT_TRUE(InTable(c, i, 4));
  {
    Session s(j.engine.get(), 0);
    EXPECT_EQ(s.Run({"CLUSTER", "LEAVE"}), "+OK\r\n");
    EXPECT_TRUE(j.node->removed());
    // Asked again (its first answer lost), it is done.
    EXPECT_EQ(s.Run({"CLUSTER", "LEAVE"}), "+OK\r\n");
    EXPECT_FALSE(j.node->serving());
    EXPECT_EQ(s.Run({"GET", key}), "-CLUSTERDOWN The cluster is down\r\n");
    const std::string info = s.Run({"INFO", "cluster"});
    EXPECT_THAT(info, HasSubstr("meta:removed\r\n"));
    EXPECT_THAT(info, HasSubstr("was removed from cluster"));
  }
  ASSERT_NO_FATAL_FAILURE(WaitRemovedEverywhere(c, 4));
  for (size_t i = 0; i < 3; i++) {
    Session s(&c.engine(i), 0);
    EXPECT_EQ(s.Run({"GET", key}), "$1\r\nv\r\n") << "founder " << i;
  }
  j.Stop();
  // Its directory records the removal: a start from it is refused, naming why.
  {
    Engine engine(config, 1);
    Result<std::unique_ptr<ClusterNode>> again = ClusterNode::Start(&engine, config, 20099);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_THAT(again.status().message(), HasSubstr("was removed from cluster"));
    EXPECT_THAT(again.status().message(), HasSubstr("fresh --dir"));
  }
  // The same address with a fresh directory joins under a new id (ids are never reused).
  Config rejoin = config;
  rejoin.dir = fresh.path();
  JoinedNode k;
  ASSERT_NO_FATAL_FAILURE(internal::StartJoinedNode(rejoin, &k));
  EXPECT_EQ(k.node->self(), 5u);
  for (size_t i = 0; i < 3; i++) {
    EXPECT_TRUE(InTable(c, i, 5));
    EXPECT_FALSE(InTable(c, i, 4));
  }
  Session s(k.engine.get(), 0);
  EXPECT_EQ(s.Run({"GET", key}), "$1\r\nv\r\n");
  EXPECT_EQ(s.Run({"SET", c.KeyAt(2, "after"), "w"}), "+OK\r\n");
}

// CLUSTER FORGET of a joined member that is dead, asked at a member that does not lead: removed
// everywhere; asked again, it is done already (OK).
TEST(ClusterLeaveTest, AForgottenDeadMemberIsRemovedEverywhere) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir dir;
  JoinedNode j;
  ASSERT_NO_FATAL_FAILURE(internal::JoinNode(c, dir, &j));
  ASSERT_EQ(j.node->self(), 4u);
  j.Stop();
  const size_t asked = NotTheLeader(c);
  Session s(&c.engine(asked), 0);
  EXPECT_EQ(s.Run({"CLUSTER", "FORGET", "4"}), "+OK\r\n");
  ASSERT_NO_FATAL_FAILURE(WaitRemovedEverywhere(c, 4));
  EXPECT_EQ(s.Run({"CLUSTER", "FORGET", "4"}), "+OK\r\n");
  EXPECT_THAT(s.Run({"CLUSTER", "INFO"}), HasSubstr("cluster_known_nodes:3\r\n"));
}

// J2 (F5): a member forgotten while its Raft is stopped never applies its removal (the leader
// drops it from Raft's configuration at once): the members tell it (RPC 304), and it stops
// serving and says why instead of answering CLUSTERDOWN with no reason.
TEST(ClusterLeaveTest, AMemberWhoseLogMissedItsRemovalIsToldSo) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir dir;
  JoinedNode j;
  ASSERT_NO_FATAL_FAILURE(internal::JoinNode(c, dir, &j));
  ASSERT_EQ(j.node->self(), 4u);
  j.node->TEST_meta()->Stop();
  Session s(&c.engine(0), 0);
  EXPECT_EQ(s.Run({"CLUSTER", "FORGET", "4"}), "+OK\r\n");
  ASSERT_NO_FATAL_FAILURE(WaitRemovedEverywhere(c, 4));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!j.node->removed()) {
    ASSERT_LT(std::chrono::steady_clock::now(), until) << "member 4 was never told";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Session mine(j.engine.get(), 0);
  const std::string info = mine.Run({"INFO", "cluster"});
  EXPECT_THAT(info, HasSubstr("meta:removed\r\n"));
  EXPECT_THAT(info, HasSubstr("told it so"));
}

// A removal notice (RPC 304) for another member, another cluster, or contradicted by a newer
// table that lists this member is refused, and nothing changes.
TEST(ClusterLeaveTest, AWrongRemovalNoticeIsRefused) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  ClusterNode& n = c.node(0);
  const std::shared_ptr<const cluster::Table> table = n.meta()->table();
  auto notice = [&](uint64_t id, uint64_t epoch, cluster::ClusterId cid) {
    return n.TEST_RemovedNotice(c.node(1).self(),
                                internal::EncodeRemovedNotice(internal::RemovedNotice{
                                    .id = id, .epoch = epoch, .cluster_id = cid}));
  };
  EXPECT_EQ(notice(n.self() + 1, table->epoch() + 1, table->cluster_id()).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      notice(n.self(), table->epoch() + 1, cluster::ClusterId{.hi = 1, .lo = 2}).status().code(),
      StatusCode::kFailedPrecondition);
  EXPECT_EQ(notice(n.self(), table->epoch(), table->cluster_id()).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(n.TEST_RemovedNotice(c.node(1).self(), "\x01").status().code(),
            StatusCode::kCorruption);
  EXPECT_FALSE(n.removed());
  EXPECT_TRUE(n.serving());
}

// A founder owns slots: LEAVE and FORGET of it are refused naming the count, and nothing is
// removed; an id never assigned, or not an id, is refused too.
TEST(ClusterLeaveTest, MembersThatOwnSlotsAndUnknownIdsAreRefused) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  const std::shared_ptr<const cluster::Table> table = c.node(0).meta()->table();
  auto owned = [&](net::NodeId id) {
    int n = 0;
    for (uint16_t slot = 0; slot < cluster::kSlots; slot++) n += table->slot(slot).owner == id;
    return n;
  };
  Session s0(&c.engine(0), 0);
  const std::string two = std::to_string(c.node(2).self());
  EXPECT_EQ(s0.Run({"CLUSTER", "FORGET", two}),
            "-ERR member " + two + " owns or backs up " + std::to_string(owned(c.node(2).self())) +
                " slots: moving them away needs migration, which is not built yet; nothing "
                "was removed\r\n");
  Session s1(&c.engine(1), 0);
  const net::NodeId one = c.node(1).self();
  EXPECT_THAT(s1.Run({"CLUSTER", "LEAVE"}),
              HasSubstr("-ERR member " + std::to_string(one) + " owns or backs up " +
                        std::to_string(owned(one)) + " slots"));
  const net::NodeId zero = c.node(0).self();
  EXPECT_THAT(s1.Run({"CLUSTER", "FORGET", std::to_string(zero)}),
              HasSubstr("-ERR member " + std::to_string(zero) + " owns or backs up " +
                        std::to_string(owned(zero)) + " slots"));
  EXPECT_EQ(s0.Run({"CLUSTER", "FORGET", "99"}), "-ERR no member 99 in the agreed table\r\n");
  EXPECT_EQ(s0.Run({"CLUSTER", "FORGET", std::to_string(c.node(0).self())}),
            "-ERR I tried hard but I can't forget myself...\r\n");
  EXPECT_EQ(s0.Run({"CLUSTER", "FORGET", "0"}), "-ERR Unknown node 0\r\n");
  EXPECT_EQ(s0.Run({"CLUSTER", "FORGET", "x1"}), "-ERR Unknown node x1\r\n");
  EXPECT_EQ(s0.Run({"CLUSTER", "FORGET", "99999999999999999999"}),
            "-ERR Unknown node 99999999999999999999\r\n");
  for (size_t i = 0; i < 3; i++) {
    EXPECT_EQ(c.node(i).meta()->table()->members().size(), 3u);
    EXPECT_TRUE(c.node(i).serving());
  }
}

}  // namespace
}  // namespace floe::server
