// Ownership leases and failover (docs/membership.md, O1-O8): a member serves keys only under a
// lease the Raft leader granted; the leader fails over a member it has not granted one for a
// lease and a margin, whose slots then serve from their in-sync backups with every acknowledged
// write; a member that comes back is cleared and serves by the table that shows its failover.

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>
#include <vector>

#include "cluster/cluster.h"
#include "server/command_test.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/replica_store.h"
#include "server/internal/replica_store_testing.h"
#include "testing/process.h"

namespace floe::server {
namespace {

using internal::ClientCluster;
using std::chrono::seconds;

// A lease short enough for a quick test, long enough for a member whose loop runs slowly under
// ThreadSanitizer while it fills a backup (renewals time out at a quarter lease).
ClientCluster::Options WithLease(int64_t lease_ms) {
  ClientCluster::Options o;
  o.members = 3;
  o.timeout_ms = 2000;
  o.lease_ms = lease_ms;
  return o;
}

std::string Call(Session& s, std::vector<std::string> args) {
  return CommandTest::Decode(s.Run(args)).str;
}

// Keys homed at member `home` now.
std::vector<std::string> KeysAt(ClientCluster& c, size_t home, int n, const std::string& prefix) {
  std::vector<std::string> keys;
  for (int i = 0; static_cast<int>(keys.size()) < n; i++) {
    const std::string k = prefix + std::to_string(i);
    if (c.HomeOf(k) == static_cast<int>(home)) keys.push_back(k);
  }
  return keys;
}

// O4-O5: member 2 dies for good. The leader fails it over once its lease lapsed: its slots go to
// their in-sync backups and every write acknowledged before the death reads back through the
// members that stay; the slots take writes again. The dead member's calls in flight fail then,
// not at their deadline.
TEST(ClusterFailoverTest, AKilledOwnersSlotsServeFromItsBackupsWithEveryAcknowledgedWrite) {
  internal::ReplicasAtFounding one(1);
  ClientCluster c(WithLease(2000));
  ASSERT_TRUE(c.WaitFormed());
  const size_t gone = c.Leader() == 2 ? 1 : 2;  // a member that does not lead: no election
  const net::NodeId gone_id = c.node(gone).self();
  const size_t via = gone == 0 ? 1 : 0;
  const std::vector<std::string> keys = KeysAt(c, gone, 40, "fo:");
  Session& client = c.client(via);
  for (const std::string& k : keys) {
    ASSERT_TRUE(floe::testing::WaitFor(
        [&] {
          return Call(client, {"SET", k, "v-" + k}) == "OK";
        },
        seconds(60)))
        << k;
  }
  EXPECT_GT(c.node(via).lease_left_ms(), 0u) << "a member of a cluster with backups holds one";
  c.Kill(gone);
  // Every key reads back its acknowledged value once the failover committed.
  ASSERT_TRUE(floe::testing::WaitFor(
      [&] {
        for (const std::string& k : keys) {
          if (Call(client, {"GET", k}) != "v-" + k) return false;
        }
        return true;
      },
      seconds(60)))
      << "the dead owner's slots did not come back";
  const std::shared_ptr<const cluster::Table> t = c.node(via).meta()->table();
  const cluster::TableMember* dead = t->FindMember(gone_id);
  ASSERT_NE(dead, nullptr);
  EXPECT_TRUE(dead->suspected);
  // The slots take writes again (each once the heir waited out the dead owner's copies, W13,
  // and while a member under a slow build may be between two leases).
  for (const std::string& k : keys) {
    EXPECT_NE(t->slot(cluster::KeySlot(k)).owner, gone_id) << k;
    EXPECT_TRUE(floe::testing::WaitFor(
        [&] {
          return Call(client, {"SET", k, "w-" + k}) == "OK";
        },
        seconds(30)))
        << k;
    std::string got;
    EXPECT_TRUE(floe::testing::WaitFor(
        [&] {
          return (got = Call(client, {"GET", k})).rfind("CLUSTERDOWN", 0) != 0;
        },
        seconds(30)))
        << k;
    EXPECT_EQ(got, "w-" + k) << k;
  }
  uint64_t failovers = 0;
  for (size_t i = 0; i < 3; i++) {
    if (c.running(i)) failovers += c.node(i).failovers();
  }
  EXPECT_EQ(failovers, 1u);
}

// O1, O4, O7: a member that stops renewing its lease (as a paused process would) stops serving
// keys within a lease, is failed over, and its keys take writes at the heirs. Once it asks again
// it is cleared, and serves by the table that shows its failover: its reads reach the heirs,
// never its own copies from before.
TEST(ClusterFailoverTest, AMemberWithoutALeaseServesNothingIsFailedOverAndComesBack) {
  internal::ReplicasAtFounding one(1);
  ClientCluster c(WithLease(2000));
  ASSERT_TRUE(c.WaitFormed());
  const size_t quiet = c.Leader() == 2 ? 1 : 2;
  const net::NodeId quiet_id = c.node(quiet).self();
  const size_t via = quiet == 0 ? 1 : 0;
  const std::vector<std::string> keys = KeysAt(c, quiet, 10, "q:");
  Session& client = c.client(via);
  Session& at_quiet = c.client(quiet);
  for (const std::string& k : keys) {
    ASSERT_TRUE(floe::testing::WaitFor(
        [&] {
          return Call(client, {"SET", k, "old"}) == "OK";
        },
        seconds(60)));
  }
  c.node(quiet).TEST_StopLeases(true);
  ASSERT_TRUE(floe::testing::WaitFor([&] { return !c.node(quiet).serving(); }, seconds(30)))
      << "a member without a lease still serves";
  EXPECT_EQ(Call(at_quiet, {"GET", keys[0]}).rfind("CLUSTERDOWN", 0), 0u);
  ASSERT_TRUE(floe::testing::WaitFor(
      [&] {
        const std::shared_ptr<const cluster::Table> t = c.node(via).meta()->table();
        const cluster::TableMember* m = t->FindMember(quiet_id);
        return m != nullptr && m->suspected;
      },
      seconds(30)))
      << "the leader did not fail it over";
  for (const std::string& k : keys) {
    ASSERT_TRUE(floe::testing::WaitFor(
        [&] {
          return Call(client, {"SET", k, "new"}) == "OK";
        },
        seconds(30)))
        << k;
  }
  c.node(quiet).TEST_StopLeases(false);
  ASSERT_TRUE(floe::testing::WaitFor([&] { return c.node(quiet).serving(); }, seconds(30)))
      << "it never served again";
  const std::shared_ptr<const cluster::Table> now = c.node(quiet).meta()->table();
  const cluster::TableMember* back = now->FindMember(quiet_id);
  ASSERT_NE(back, nullptr);
  EXPECT_FALSE(back->suspected);
  EXPECT_GE(c.node(quiet).meta()->table()->epoch(), back->suspect_epoch);
  for (const std::string& k : keys) {
    std::string got;
    EXPECT_TRUE(floe::testing::WaitFor(
        [&] {
          return (got = Call(at_quiet, {"GET", k})).rfind("CLUSTERDOWN", 0) != 0;
        },
        seconds(30)))
        << k;
    EXPECT_EQ(got, "new") << k << ": never its own copy from before";
  }
}

// O2 at the leader (RPC 308): a lease only for a member's own id and life, never to a
// suspected member, nor to one whose table is older than its last failover.
TEST(ClusterFailoverTest, TheLeaderGrantsALeaseOnlyByTheTableThatShowsTheFailover) {
  internal::ReplicasAtFounding one(1);
  ClientCluster c(WithLease(2000));
  ASSERT_TRUE(c.WaitFormed());
  const size_t leader = c.Leader();
  const size_t other = leader == 0 ? 1 : 0;
  const net::NodeId id = c.node(other).self();
  auto ask = [&](net::NodeId from, internal::LeaseRequest q) {
    std::promise<Result<std::string>> p;
    c.node(leader).TEST_Lease(from, internal::EncodeLeaseRequest(q),
                              [&p](Result<std::string> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  auto table = [&] { return c.node(leader).meta()->table(); };
  const uint64_t life = table()->FindMember(id)->life;
  EXPECT_TRUE(floe::testing::WaitFor(
      [&] { return ask(id, {.id = id, .life = life, .epoch = table()->epoch()}).ok(); },
      seconds(20)));
  EXPECT_EQ(ask(id + 1, {.id = id, .life = life, .epoch = 1}).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(ask(id, {.id = id, .life = life + 1, .epoch = 1}).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_FALSE(internal::DecodeLeaseRequest(std::string_view("\x01\x00\x01\x00", 4)).ok())
      << "a life of 0";
  EXPECT_TRUE(internal::DecodeLeaseRequest(std::string_view("\x01\x01\x01\x00", 4)).ok());
  // Failed over by hand (its renewals stopped first, so it is not cleared at once).
  c.node(other).TEST_StopLeases(true);
  cluster::Change fail{.kind = cluster::Change::Kind::kFailOver, .node = id};
  fail.member.life = life;
  // The leader may fail it over first (its renewals stopped): either way it ends suspected.
  (void)internal::Propose(c, fail);
  ASSERT_TRUE(
      floe::testing::WaitFor([&] { return table()->FindMember(id)->suspected; }, seconds(10)));
  const uint64_t failed_at = table()->FindMember(id)->suspect_epoch;
  EXPECT_EQ(ask(id, {.id = id, .life = life, .epoch = failed_at - 1}).status().code(),
            StatusCode::kUnavailable)
      << "suspected";
  // Asked by a table that shows the failover, the suspicion is cleared; then a table older than
  // the clearing gets nothing, a newer one a lease.
  EXPECT_EQ(ask(id, {.id = id, .life = life, .epoch = table()->epoch()}).status().code(),
            StatusCode::kUnavailable);
  ASSERT_TRUE(
      floe::testing::WaitFor([&] { return !table()->FindMember(id)->suspected; }, seconds(10)));
  const uint64_t cleared_at = table()->FindMember(id)->suspect_epoch;
  EXPECT_GT(cleared_at, failed_at);
  c.node(other).TEST_StopLeases(false);  // renewing again: not failed over a second time
  EXPECT_EQ(ask(id, {.id = id, .life = life, .epoch = cleared_at - 1}).status().code(),
            StatusCode::kUnavailable);
  // (Asked again if the leader's confirmation of its leadership failed meanwhile.)
  EXPECT_TRUE(floe::testing::WaitFor(
      [&] { return ask(id, {.id = id, .life = life, .epoch = cleared_at}).ok(); }, seconds(20)));
}

}  // namespace
}  // namespace floe::server
