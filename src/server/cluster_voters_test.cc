// Rule M4 (docs/membership.md): the Raft leader promotes joined learners until the
// configuration has min(5, members) voters, an odd number, so a grown cluster survives the loss
// of two founders; a promoted member that leads hands leadership over before it leaves.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_node_impl.h"
#include "server/internal/cluster_testing.h"
#include "server/server.h"
#include "testing/process.h"

namespace floe::server {
namespace {

using internal::ClusterNode;
using internal::JoinedNode;
using internal::JoinerConfig;
using internal::StartJoinedNode;
using ::testing::HasSubstr;

size_t Voters(const ClusterNode& n) {
  size_t voters = 0;
  for (const consensus::Server& s : n.meta()->raft().configuration) {
    voters += s.role == consensus::Role::kVoter ? 1 : 0;
  }
  return voters;
}

// Waits (bounded) until `done` holds.
void WaitFor(const std::function<bool()>& done, const std::string& what) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done()) {
    ASSERT_LT(std::chrono::steady_clock::now(), until) << what;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Three founders and two nodes joined through them, each serving.
struct GrownToFive {
  internal::InProcessCluster c{{.members = 3}};
  floe::testing::TempDir d4, d5;
  JoinedNode j4, j5;
  void Start() {
    ASSERT_TRUE(c.WaitFormed());
    ASSERT_NO_FATAL_FAILURE(Join(d4, &j4));
    ASSERT_NO_FATAL_FAILURE(Join(d5, &j5));
  }
  void Join(const floe::testing::TempDir& dir, JoinedNode* j) { internal::JoinNode(c, dir, j); }
  // Waits (bounded) until every member's Raft configuration has five voters.
  void WaitFiveVoters() {
    for (ClusterNode* n : all()) {
      ASSERT_NO_FATAL_FAILURE(WaitFor([n] { return Voters(*n) == 5; },
                                      "member " + std::to_string(n->self()) + " has " +
                                          std::to_string(Voters(*n)) + " voters, not 5"));
    }
  }
  std::vector<ClusterNode*> all() {
    return {&c.node(0), &c.node(1), &c.node(2), j4.node.get(), j5.node.get()};
  }
};

TEST(ClusterVotersTest, VotersWantedIsOddAndAtMostFive) {
  const size_t wanted[] = {0, 1, 1, 3, 3, 5, 5, 5, 5};
  for (size_t n = 0; n < std::size(wanted); n++) {
    EXPECT_EQ(internal::VotersWanted(n), wanted[n]) << n << " servers";
  }
}

// Three founders: one joined member stays a learner (four voters would be even); a second
// makes both voters, at every member.
TEST(ClusterVotersTest, TwoJoinedMembersMakeFiveVotersAndOneKeepsThree) {
  GrownToFive g;
  ASSERT_TRUE(g.c.WaitFormed());
  ASSERT_NO_FATAL_FAILURE(g.Join(g.d4, &g.j4));
  // Several of the leader's checks pass: still three voters and a learner.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  for (size_t i = 0; i < 3; i++) EXPECT_EQ(Voters(g.c.node(i)), 3u) << "founder " << i;
  {
    Session s(g.j4.engine.get(), 0);
    const std::string info = s.Run({"INFO", "cluster"});
    EXPECT_THAT(info, HasSubstr("meta_raft_role:learner\r\n"));
    EXPECT_THAT(info, HasSubstr("meta_voters:3\r\n"));
    EXPECT_THAT(info, HasSubstr("meta_learners:1\r\n"));
  }
  ASSERT_NO_FATAL_FAILURE(g.Join(g.d5, &g.j5));
  ASSERT_NO_FATAL_FAILURE(g.WaitFiveVoters());
  Session s(g.j5.engine.get(), 0);
  const std::string info = s.Run({"INFO", "cluster"});
  EXPECT_THAT(info, HasSubstr("meta_raft_role:voter\r\n"));
  EXPECT_THAT(info, HasSubstr("meta_voters:5\r\n"));
  EXPECT_THAT(info, HasSubstr("meta_learners:0\r\n"));
}

// Grown to five voters, the cluster still commits with two founders' Raft stopped: a sixth node
// joins (with three voters, two of them down, that join could not commit).
TEST(ClusterVotersTest, FiveVotersCommitWithTwoFoundersDown) {
  GrownToFive g;
  ASSERT_NO_FATAL_FAILURE(g.Start());
  ASSERT_NO_FATAL_FAILURE(g.WaitFiveVoters());
  g.c.node(0).TEST_meta()->Stop();
  g.c.node(1).TEST_meta()->Stop();
  floe::testing::TempDir d6;
  JoinedNode j6;
  Config config = JoinerConfig(g.c, d6.path(), floe::testing::FreeClusterPort());
  config.join = "127.0.0.1:" + std::to_string(g.c.cluster_port(2));
  ASSERT_NO_FATAL_FAILURE(StartJoinedNode(config, &j6));
  EXPECT_EQ(j6.node->self(), 6u);
  EXPECT_NE(g.c.node(2).meta()->table()->FindMember(6), nullptr);
}

// A promoted member that leads the agreed metadata leaves: CLUSTER LEAVE hands leadership to
// another voter, then the new leader removes it from the table and from Raft.
TEST(ClusterVotersTest, APromotedLeaderLeaves) {
  GrownToFive g;
  ASSERT_NO_FATAL_FAILURE(g.Start());
  ASSERT_NO_FATAL_FAILURE(WaitFor([&g] { return Voters(*g.j5.node) == 5; }, "five voters at 5"));
  // Member 5 takes the lead.
  ASSERT_NO_FATAL_FAILURE(WaitFor(
      [&] {
        if (g.j5.node->meta()->raft().leader) return true;
        for (ClusterNode* n : g.all()) {
          if (n->meta()->raft().leader) n->TEST_meta()->TransferLeadership(5, [](Status) {});
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        return false;
      },
      "member 5 never leads"));
  Session s(g.j5.engine.get(), 0);
  EXPECT_EQ(s.Run({"CLUSTER", "LEAVE"}), "+OK\r\n");
  EXPECT_TRUE(g.j5.node->removed());
  ASSERT_NO_FATAL_FAILURE(internal::WaitRemovedEverywhere(g.c, 5));
  EXPECT_NE(g.j5.node->meta()->raft().leader_id, 5u);
}

// A removal cut off between its two steps (RemoveMember committed, the leader lost before
// RemoveServer: rule J2) is finished by the leader: the server leaves Raft's configuration.
TEST(ClusterVotersTest, ARemovalCutOffBeforeRaftIsFinishedByTheLeader) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir d4;
  JoinedNode j4;
  ASSERT_NO_FATAL_FAILURE(internal::JoinNode(c, d4, &j4));
  j4.Stop();
  // Only the first step, as a leader that died after committing it would leave it.
  size_t leader = 0;
  for (size_t i = 0; i < 3; i++) leader = c.node(i).meta()->raft().leader ? i : leader;
  std::promise<Status> proposed;
  c.node(leader).TEST_meta()->Propose(
      cluster::Change{.kind = cluster::Change::Kind::kRemoveMember, .node = 4},
      [&proposed](Status s) { proposed.set_value(s); });
  ASSERT_TRUE(proposed.get_future().get().ok());
  ASSERT_NO_FATAL_FAILURE(internal::WaitRemovedEverywhere(c, 4));
}

// Rule M4: of five voters two are silent, so removing a third would leave four voters of which
// two answer the leader, which commit nothing (the removal itself included): the leader refuses
// it, and the table keeps the member.
TEST(ClusterVotersTest, AVoterIsNotRemovedWhenTooFewOfTheOthersAnswer) {
  GrownToFive g;
  ASSERT_NO_FATAL_FAILURE(g.Start());
  ASSERT_NO_FATAL_FAILURE(g.WaitFiveVoters());
  g.c.node(0).TEST_meta()->Stop();
  g.c.node(1).TEST_meta()->Stop();
  // Until the leader has missed both for a while, it cannot tell them from voters that answer.
  ASSERT_NO_FATAL_FAILURE(WaitFor(
      [&g] {
        for (ClusterNode* n : {&g.c.node(2), g.j4.node.get(), g.j5.node.get()}) {
          const consensus::State st = n->meta()->raft();
          // A leader that has led past its "retry" time (two election timeouts, at most 2 s).
          if (!st.leader || !st.leader_ready || st.led_ms <= 3000) continue;
          size_t silent = 0;
          for (const consensus::State::Follower& f : st.followers) {
            const bool stopped = f.id == g.c.node(0).self() || f.id == g.c.node(1).self();
            silent += stopped && f.silent_ms > 3000 ? 1 : 0;
          }
          return silent == 2;
        }
        return false;
      },
      "no leader that has missed members 1 and 2"));
  Session s(&g.c.engine(2), 0);
  const std::string answer = s.Run({"CLUSTER", "FORGET", "4"});
  const uint64_t a = std::min(g.c.node(0).self(), g.c.node(1).self());
  const uint64_t b = std::max(g.c.node(0).self(), g.c.node(1).self());
  EXPECT_THAT(answer, HasSubstr("is a voter of the agreed metadata: 4 voters would remain, of "
                                "which 2 answer the leader (not " +
                                std::to_string(a) + ", " + std::to_string(b) + ")"));
  EXPECT_THAT(answer, HasSubstr("nothing was removed"));
  for (ClusterNode* n : {&g.c.node(2), g.j4.node.get(), g.j5.node.get()}) {
    EXPECT_NE(n->meta()->table()->FindMember(4), nullptr) << "at member " << n->self();
    EXPECT_EQ(Voters(*n), 5u) << "at member " << n->self();
  }
}

// Rule M4: five voters, one leaves and no learner is left: four voters would commit with three
// and tolerate one failure, as three do, so one of them becomes a learner.
TEST(ClusterVotersTest, FourVotersBecomeThree) {
  GrownToFive g;
  ASSERT_NO_FATAL_FAILURE(g.Start());
  for (ClusterNode* n : g.all()) n->TEST_SetDemoteAfter(std::chrono::seconds(1));
  ASSERT_NO_FATAL_FAILURE(g.WaitFiveVoters());
  Session s(g.j5.engine.get(), 0);
  ASSERT_EQ(s.Run({"CLUSTER", "LEAVE"}), "+OK\r\n");
  ASSERT_NO_FATAL_FAILURE(internal::WaitRemovedEverywhere(g.c, 5));
  for (ClusterNode* n : {&g.c.node(0), &g.c.node(1), &g.c.node(2), g.j4.node.get()}) {
    ASSERT_NO_FATAL_FAILURE(WaitFor([n] { return Voters(*n) == 3; },
                                    "member " + std::to_string(n->self()) + " has " +
                                        std::to_string(Voters(*n)) + " voters, not 3"));
    EXPECT_EQ(n->meta()->raft().configuration.size(), 4u);
  }
}

// Rule M4: a learner that RPC hears but whose Raft does not answer (its Raft stopped) is not
// promoted, so it does not hold every later promotion back: two more members join and both
// become voters, while it stays a learner.
TEST(ClusterVotersTest, ALearnerWhoseRaftIsSilentIsPassedOver) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir d4, d5, d6;
  JoinedNode j4, j5, j6;
  ASSERT_NO_FATAL_FAILURE(internal::JoinNode(c, d4, &j4));
  j4.node->TEST_meta()->Stop();
  ASSERT_NO_FATAL_FAILURE(internal::JoinNode(c, d5, &j5));
  ASSERT_NO_FATAL_FAILURE(internal::JoinNode(c, d6, &j6));
  for (ClusterNode* n : {&c.node(0), &c.node(1), &c.node(2), j5.node.get(), j6.node.get()}) {
    ASSERT_NO_FATAL_FAILURE(WaitFor([n] { return Voters(*n) == 5; },
                                    "member " + std::to_string(n->self()) + " has " +
                                        std::to_string(Voters(*n)) + " voters, not 5"));
    for (const consensus::Server& s : n->meta()->raft().configuration) {
      if (s.id == 4) {
        EXPECT_EQ(s.role, consensus::Role::kLearner) << "at member " << n->self();
      }
    }
  }
}

}  // namespace
}  // namespace floe::server
