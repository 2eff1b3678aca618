// A member that has not caught up with the agreed metadata serves no key by any path
// (docs/membership.md, "Routing from the agreed table", rule M5 finding (2)): three Engines with
// a ClusterNode each on loopback, in one process; member 2 restarts while the others' Raft is
// stopped, so it forms but never learns the leader's commit index.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster.h"
#include "resp/resp.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/command.h"
#include "server/server.h"

namespace floe::server {
namespace {

constexpr const char* kDown = "-CLUSTERDOWN The cluster is down\r\n";

resp::Reply Parse(const std::string& bytes) {
  size_t used = 0;
  Result<resp::Reply> r = resp::ParseReply(bytes, &used);
  EXPECT_TRUE(r.ok()) << bytes;
  return r.ok() ? *r : resp::Reply{};
}

using TestCluster = internal::ClientCluster;

// Member 2 killed and started again after members 0 and 1 stopped their Raft: it forms and its
// DKV's start-up grace ends (rule L4), but it never catches up. Returns a key homed at member 2,
// whose store holds `stale` for it (as a store that missed later writes might).
std::string RestartBehind(TestCluster& c, const std::string& stale) {
  EXPECT_TRUE(c.WaitFormed());
  const std::string mine = c.KeyAt(2, "mine");
  c.Kill(2);
  c.node(0).TEST_meta()->Stop();
  c.node(1).TEST_meta()->Stop();
  EXPECT_TRUE(c.Start(2).ok());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!c.node(2).formed() || c.node(2).meta() == nullptr || !c.node(2).dkv().Serving()) {
    if (std::chrono::steady_clock::now() > until) {
      ADD_FAILURE() << "member 2 did not form";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_FALSE(c.node(2).serving());
  c.engine(2).store().Put(*internal::MakeString(mine, stale));
  return mine;
}

// Rule C8's copies ride on a proxy session's answer: a member that refuses the read must not
// hand out the copy either (it answered it from its own store, checking only that it is home).
TEST(CatchUpTest, AMemberNotCaughtUpHandsOutNoCachedCopy) {
  TestCluster c;
  const std::string mine = RestartBehind(c, "stale");
  internal::ForwardRequest req{.origin = c.node(0).origin(),
                               .client = 777,
                               .seq = 1,
                               .sent_us = 123456789,
                               .protocol = 2,
                               .commands = {{"GET", mine}},
                               .copies = {0}};
  std::promise<Result<std::string>> answer;
  c.node(0).Forward(c.node(2).self(), req, /*changes=*/false,
                    [&answer](Result<std::string> r) { answer.set_value(std::move(r)); });
  Result<std::string> r = answer.get_future().get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Result<std::vector<std::string>> frames = internal::DecodeFramedReplies(*r, 2);
  ASSERT_TRUE(frames.ok()) << frames.status().ToString();
  EXPECT_EQ((*frames)[0], kDown);
  EXPECT_EQ((*frames)[1], "") << "a copy was handed out";
  // Through a client of member 0: the read is refused, and nothing it cached answers the next.
  Session& s = c.client(0);
  EXPECT_EQ(s.Run({"GET", mine}), kDown);
  EXPECT_EQ(s.Run({"GET", mine}), kDown);
}

// The DKV's home function: a member that has not caught up is home to no key, so a peer's DKV
// GET of a key the table homes there is refused, never answered from its store.
TEST(CatchUpTest, AMemberNotCaughtUpIsHomeToNoDkvKey) {
  TestCluster c;
  const std::string mine = RestartBehind(c, "stale");
  Result<store::ValuePtr> got = c.node(0).dkv().GetBlocking(mine);
  ASSERT_FALSE(got.ok()) << "read from a member that is not caught up: "
                         << (got.ok() && *got ? std::string((*got)->payload()) : "(none)");
  EXPECT_EQ(got.status().code(), StatusCode::kWrongHome) << got.status().ToString();
}

// CLUSTER COUNTKEYSINSLOT and GETKEYSINSLOT name no key but read the store: a member that has
// not caught up refuses them (it counted and listed its stale key).
TEST(CatchUpTest, SlotScansAreRefusedUntilTheMemberServes) {
  TestCluster c;
  const std::string mine = RestartBehind(c, "stale");
  Session& s = c.client(2);
  const std::string slot = std::to_string(cluster::KeySlot(mine));
  EXPECT_EQ(s.Run({"CLUSTER", "COUNTKEYSINSLOT", slot}), kDown);
  EXPECT_EQ(s.Run({"CLUSTER", "GETKEYSINSLOT", slot, "10"}), kDown);
}

// Rule C2's keyspace-wide commands ask every member for its piece: a member that has not caught
// up refuses its piece, so the command fails whole (it answered from, or flushed, its own store).
TEST(CatchUpTest, KeyspaceWideCommandsFailWholeWhenAMemberIsNotCaughtUp) {
  TestCluster c;
  const std::string mine = RestartBehind(c, "stale");
  Session& s = c.client(0);
  EXPECT_EQ(s.Run({"DBSIZE"}), kDown);
  EXPECT_EQ(s.Run({"KEYS", "*"}), kDown);
  EXPECT_EQ(s.Run({"RANDOMKEY"}), kDown);
  // SCAN visits the members in turn: the walk fails when it reaches member 2, never ends as if
  // whole.
  std::string cursor = "0", reply;
  for (int page = 0; page < 1000; page++) {
    reply = s.Run({"SCAN", cursor, "COUNT", "1000"});
    if (reply.starts_with("-")) break;
    const resp::Reply r = Parse(reply);
    ASSERT_EQ(r.elements.size(), 2u) << reply;
    cursor = r.elements[0].str;
    ASSERT_NE(cursor, "0") << "the scan ended without member 2's keys";
  }
  EXPECT_EQ(reply, kDown);
  EXPECT_EQ(s.Run({"FLUSHDB"}), kDown);
  EXPECT_NE(c.engine(2).store().Get(mine), nullptr) << "FLUSHDB flushed member 2";
  // A transaction at member 2 itself, with no key: FLUSHDB there would flush its store.
  Session& t = c.client(2);
  EXPECT_EQ(t.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(t.Run({"FLUSHDB"}), "+QUEUED\r\n");
  EXPECT_EQ(t.Run({"EXEC"}), kDown);
  EXPECT_NE(c.engine(2).store().Get(mine), nullptr) << "a transaction flushed member 2";
}

// RPC 302 is answered only once a majority confirms the leadership (docs/membership.md,
// "Routing from the agreed table"; consensus C11): with both followers' Raft stopped, the leader
// still counts itself ready until its quorum check deposes it, yet a follower asking it (its
// endpoint still runs) gets no commit index.
TEST(CatchUpTest, ALeaderCutOffFromTheMajorityAnswersNoCommitIndex) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  auto ask = [&](size_t from, net::NodeId leader) {
    std::promise<Result<std::string>> p;
    c.node(from).CallFrame(leader, internal::kMetaCommitMethod, "",
                           [&p](Result<std::string> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  size_t leader = 3;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (leader == 3 && std::chrono::steady_clock::now() < until) {
    for (size_t i = 0; i < 3; i++) {
      const cluster::Meta* m = c.node(i).meta();
      if (m != nullptr && m->raft().leader_ready) leader = i;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_NE(leader, 3u) << "no ready leader";
  const size_t asker = (leader + 1) % 3, other = (leader + 2) % 3;
  const net::NodeId leader_id = c.node(leader).self();
  Result<std::string> healthy = ask(asker, leader_id);
  ASSERT_TRUE(healthy.ok()) << healthy.status().ToString();
  c.node(asker).TEST_meta()->Stop();
  c.node(other).TEST_meta()->Stop();
  Result<std::string> cut_off = ask(asker, leader_id);
  EXPECT_FALSE(cut_off.ok()) << "a cut-off leader answered its commit index";
}

}  // namespace
}  // namespace floe::server
