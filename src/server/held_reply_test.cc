// Held replies (docs/replication.md, wiring step 4, H1-H6): in a cluster that makes backups, a
// reply that depends on a change its slot's backups have not all received leaves only once they
// have, or fails with an error that says so past its bound. The owner's pump is stopped to keep
// its changes from its backups, and started again to let them through.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster.h"
#include "server/command_test.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/replica_store.h"
#include "server/internal/replica_store_testing.h"
#include "server/internal/sink_session_testing.h"
#include "testing/process.h"

namespace floe::server {
namespace {

using floe::testing::WaitFor;
using internal::ClientCluster;
using internal::InfoField;
using internal::InProcessCluster;
using internal::SinkSession;
using resp::Reply;
using ::testing::HasSubstr;
using ::testing::Not;

// A cluster of three whose slots have one backup each; member 0's pump can be stopped.
class HeldReplies : public ::testing::Test {
 protected:
  void Start(int64_t timeout_ms = 5000) {
    cluster_ = std::make_unique<ClientCluster>(
        InProcessCluster::Options{.members = 3, .timeout_ms = timeout_ms});
    ASSERT_TRUE(cluster_->WaitFormed());
    // Every member's life is recorded (W1) and it owns its slots with their backups (W2).
    for (size_t i = 0; i < 3; i++) {
      ASSERT_TRUE(WaitFor([&] { return c().node(i).life_recorded(); })) << i;
      ASSERT_TRUE(WaitFor([&] { return c().engine(i).replication()->any_owned(); })) << i;
    }
  }
  void TearDown() override {
    if (cluster_) r0().TEST_StopPump(false);
    cluster_.reset();
  }
  ClientCluster& c() { return *cluster_; }
  internal::Replication& r0() { return *c().engine(0).replication(); }
  void StopPump() { r0().TEST_StopPump(true); }
  void StartPump() { r0().TEST_StopPump(false); }  // the node's tick wakes it within 100 ms
  // Whether `s` still has `n` replies to come after `for_ms`.
  static bool StillHeld(SinkSession& s, size_t n, int for_ms = 300) {
    std::this_thread::sleep_for(std::chrono::milliseconds(for_ms));
    return s.Pending() == n;
  }

  internal::ReplicasAtFounding replicas_{1};
  std::unique_ptr<ClientCluster> cluster_;
};

// S9, H1-H2: a write's reply waits until every backup of its slot has the change.
TEST_F(HeldReplies, RepliesWaitForEveryBackup) {
  Start();
  const std::string k = c().KeyAt(0);
  SinkSession s(&c().engine(0));
  StopPump();
  s.Send({"SET", k, "v"});
  s.Send({"PING"});  // answered at once; a connection's slots keep it after the SET's (S10)
  EXPECT_TRUE(StillHeld(s, 1)) << "a write was answered before its backup had it";
  EXPECT_EQ(InfoField(c().client(0), "replica_held_replies"), "1");
  StartPump();
  const std::vector<Reply> got = s.Replies();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].str, "OK");
  EXPECT_EQ(got[1].str, "PONG");
  EXPECT_EQ(InfoField(c().client(0), "replica_held_replies"), "0");
}

// S9: a read that saw a value whose change has not committed waits for it; a read of another
// slot with nothing in flight does not.
TEST_F(HeldReplies, ReadsOfAnUncommittedValueWait) {
  Start();
  const std::string k = c().KeyAt(0);
  std::string other = c().KeyAt(0, "other");
  for (int i = 0; cluster::KeySlot(other) == cluster::KeySlot(k); i++) {
    other = c().KeyAt(0, "other" + std::to_string(i));
  }
  SinkSession w(&c().engine(0));
  SinkSession r(&c().engine(0));
  StopPump();
  w.Send({"SET", k, "uncommitted"});
  r.Send({"GET", other});
  EXPECT_TRUE(StillHeld(r, 0)) << "a read of a slot with nothing in flight waited";
  r.Replies();
  r.Send({"GET", k});
  EXPECT_TRUE(StillHeld(r, 1)) << "a read saw a value its backups lack";
  StartPump();
  const std::vector<Reply> read = r.Replies();
  ASSERT_EQ(read.size(), 1u);
  EXPECT_EQ(read[0].str, "uncommitted");
  EXPECT_EQ(w.Replies().at(0).str, "OK");
}

// H5: a hold ends after twice cluster-node-timeout: a write with the unknown-outcome error, a
// read with CLUSTERDOWN; a session without a sink gets the same. The slot serves again once its
// backup takes the changes.
TEST_F(HeldReplies, HeldRepliesFailAfterTheirBound) {
  Start(/*timeout_ms=*/1000);
  const std::string k = c().KeyAt(0);
  SinkSession s(&c().engine(0));
  StopPump();
  s.Send({"SET", k, "v"});
  s.Send({"GET", k});
  const std::vector<Reply> got = s.Replies(std::chrono::seconds(10));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_THAT(got[0].str, HasSubstr("TIMEOUT"));
  EXPECT_THAT(got[0].str, HasSubstr("may or may not have been applied"));
  EXPECT_THAT(got[1].str, HasSubstr("CLUSTERDOWN"));
  const Reply direct = CommandTest::Decode(c().client(0).Run({"INCR", c().KeyAt(0, "n")}));
  EXPECT_THAT(direct.str, HasSubstr("TIMEOUT"));
  EXPECT_GE(std::stoll(InfoField(c().client(0), "replica_hold_timeouts")), 3);
  EXPECT_EQ(InfoField(c().client(0), "replica_held_replies"), "0");
  StartPump();
  EXPECT_EQ(CommandTest::Decode(c().client(0).Run({"SET", k, "after"})).str, "OK");
}

// H3: a write whose key another member holds a copy of waits for the copy to be invalidated
// (rule C7), runs, and then waits for its backup under the same ticket.
TEST_F(HeldReplies, AWriteThatWaitedForACopyThenWaitsForItsBackup) {
  Start();
  const std::string k = c().KeyAt(0);
  ASSERT_EQ(CommandTest::Decode(c().client(0).Run({"SET", k, "before", "EX", "1000"})).str, "OK");
  Session reader(&c().engine(1), 0);
  ASSERT_TRUE(WaitFor([&] {
    reader.Run({"GET", k});
    return c().node(1).dkv().TryGetLocal(k).has_value();
  })) << "member 1 never cached the key";
  SinkSession s(&c().engine(0));
  StopPump();
  s.Send({"SET", k, "after"});
  ASSERT_TRUE(s.Blocked()) << "the write did not wait for the copy's invalidation";
  // Once the copy is invalidated the write runs (the session no longer blocks) and its reply
  // then waits for the backup under the same ticket.
  ASSERT_TRUE(WaitFor([&] {
    s.Pending();  // hands the reservation's arrival to FinishDeferred, which runs the write
    return !s.Blocked();
  })) << "the copy was never invalidated";
  EXPECT_TRUE(StillHeld(s, 1)) << "a reserved write was answered before its backup had it";
  StartPump();
  EXPECT_EQ(s.Replies().at(0).str, "OK");
}

// H4: a command split across members waits for the backups of the part run here.
TEST_F(HeldReplies, ASplitCommandWaitsForItsLocalPartsBackup) {
  Start();
  const std::string here = c().KeyAt(0), there = c().KeyAt(1);
  Session& plain = c().client(0);
  ASSERT_EQ(CommandTest::Decode(plain.Run({"SET", here, "1"})).str, "OK");
  ASSERT_EQ(CommandTest::Decode(plain.Run({"SET", there, "1"})).str, "OK");
  SinkSession s(&c().engine(0));
  StopPump();
  s.Send({"DEL", here, there});
  EXPECT_TRUE(StillHeld(s, 1)) << "a split write was answered before its local part's backup";
  StartPump();
  EXPECT_EQ(s.Replies().at(0).integer, 2);
}

// H2 at a key's home for a client of another member: the forwarded write's reply (RPC 300)
// is held at the home, so the client's member answers only once the backups have it.
TEST_F(HeldReplies, AForwardedWriteWaitsAtItsHome) {
  Start();
  const std::string k = c().KeyAt(0);
  SinkSession s(&c().engine(1));
  StopPump();
  s.Send({"SET", k, "forwarded"});
  EXPECT_TRUE(StillHeld(s, 1)) << "a forwarded write was answered before its backup had it";
  StartPump();
  EXPECT_EQ(s.Replies().at(0).str, "OK");
  EXPECT_EQ(CommandTest::Decode(c().client(1).Run({"GET", k})).str, "forwarded");
}

// H5 for a forwarded read: the client's member waits out the home's bound, so the answer is
// the home's (the value read was not confirmed), not that the home did not answer (a read's
// forward deadline is one cluster-node-timeout; a write's is longer already, L2).
TEST_F(HeldReplies, AForwardedReadPastTheBoundGetsTheHomesAnswer) {
  Start(/*timeout_ms=*/1000);
  const std::string k = c().KeyAt(0);
  SinkSession w(&c().engine(0));
  StopPump();
  w.Send({"SET", k, "uncommitted"});
  const Reply got = CommandTest::Decode(c().client(1).Run({"GET", k}));
  EXPECT_THAT(got.str, HasSubstr("backups did not confirm the value read"));
  EXPECT_THAT(got.str, Not(HasSubstr("unreachable")));
  StartPump();
}

// H6: reads held while a backup is down end at the bound and leave nothing behind: one Sender
// callback per change however many holds waited for it.
TEST_F(HeldReplies, ManyHeldReadsLeaveNothingBehind) {
  Start(/*timeout_ms=*/1000);
  const std::string k = c().KeyAt(0);
  StopPump();
  SinkSession w(&c().engine(0));
  w.Send({"SET", k, "v"});
  std::vector<std::unique_ptr<SinkSession>> readers;
  for (int i = 0; i < 20; i++) {
    readers.push_back(std::make_unique<SinkSession>(&c().engine(0)));
    for (int j = 0; j < 50; j++) readers.back()->Send({"GET", k});
  }
  EXPECT_EQ(InfoField(c().client(0), "replica_held_replies"), "1001");
  for (auto& r : readers) {
    for (const Reply& got : r->Replies(std::chrono::seconds(10))) {
      EXPECT_THAT(got.str, HasSubstr("CLUSTERDOWN"));
    }
  }
  EXPECT_THAT(w.Replies(std::chrono::seconds(10)).at(0).str, HasSubstr("TIMEOUT"));
  EXPECT_EQ(InfoField(c().client(0), "replica_held_replies"), "0");
  EXPECT_EQ(r0().TEST_hold_groups(), 1u) << "one group for the one change waited for";
  StartPump();
  EXPECT_EQ(CommandTest::Decode(c().client(0).Run({"GET", k})).str, "v");
  EXPECT_TRUE(WaitFor([&] { return r0().TEST_hold_groups() == 0; }));
}

}  // namespace
}  // namespace floe::server
