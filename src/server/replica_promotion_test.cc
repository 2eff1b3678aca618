// Promotion (docs/replication.md, wiring step 6, W10-W13): a member that owned slots restarts,
// the table gives its slots to their in-sync backups (O7), and each heir serves them from what
// it had received: no acknowledged write is lost, and the slots take writes again.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster.h"
#include "server/command_test.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/replica_store.h"
#include "server/internal/replica_store_testing.h"
#include "testing/process.h"

namespace floe::server {
namespace {

using internal::ClientCluster;
using internal::InProcessCluster;

// Kills member `gone` and starts it again; waits (bounded) until the table lists its new life,
// and so no longer lists it as any slot's owner or backup.
void Restart(InProcessCluster& c, size_t gone) {
  const net::NodeId id = c.node(gone).self();
  const uint64_t old_life = c.node(0).meta()->table()->FindMember(id)->life;
  c.Kill(gone);
  ASSERT_TRUE(c.Start(gone).ok());
  ASSERT_TRUE(floe::testing::WaitFor(
      [&] {
        const std::shared_ptr<const cluster::Table> t = c.node(0).meta()->table();
        const cluster::TableMember* m = t->FindMember(id);
        return m != nullptr && m->life != old_life;
      },
      std::chrono::seconds(30)));
}

// Sets `key` to `value` through `s`, sending it again while the reply says the outcome is
// unknown (SET is safe to send again). Right after formation, or while a slot's backups are
// filled, a change may wait past its hold bound under a slow build (ThreadSanitizer, a loaded
// machine) and answer TIMEOUT: with two backups per slot the restarted member is refilled in
// every slot, and with three such ThreadSanitizer tests on 2 cores one SET took 81 s (35
// TIMEOUTs) before it was acknowledged. Bounded: 120 s.
bool Write(Session& s, const std::string& key, const std::string& value) {
  return floe::testing::WaitFor(
      [&] {
        return CommandTest::Decode(s.Run({"SET", key, value})).str == "OK";
      },
      std::chrono::seconds(120));
}

// A command's reply once it is not CLUSTERDOWN, as a client retries it: a read of a slot whose
// backups are being filled (W9's repair after the restart) is held until they confirm, and
// under a slow build may answer CLUSTERDOWN at its bound. Bounded: 20 s.
resp::Reply Read(Session& s, const std::vector<std::string>& command) {
  resp::Reply r;
  floe::testing::WaitFor(
      [&] {
        r = CommandTest::Decode(s.Run(command));
        return !(r.type == resp::Reply::Type::kError && r.str.starts_with("CLUSTERDOWN"));
      },
      std::chrono::seconds(20));
  return r;
}

// A writer of its own keys: SET key i for i = 1, 2, ... through one member. A key's value at
// the end is at least the last acknowledged i and at most the last one sent (a write whose
// reply was an error may or may not have been applied).
struct Writer {
  std::vector<std::string> keys;
  std::map<std::string, long> acked, sent;
  void Run(Session& s, const std::atomic<bool>& stop) {
    for (long i = 1; !stop.load(); i++) {
      const std::string& k = keys[static_cast<size_t>(i) % keys.size()];
      sent[k] = i;
      if (CommandTest::Decode(s.Run({"SET", k, std::to_string(i)})).str == "OK") acked[k] = i;
    }
  }
};

// W10-W13, O7: writers on the two members that stay write all the time while the third, which
// owns a third of the slots, is killed and started again. Its slots go to their backups; every
// acknowledged write is then read back through both other members (a string, a sketch cell
// and a key with a TTL written before the kill too), and the promoted slots take new writes.
TEST(ReplicaPromotionTest, AnOwnerThatRestartsLosesNoAcknowledgedWrite) {
  constexpr size_t kMembers = 3;
  internal::ReplicasAtFounding one(1);
  ClientCluster c(kMembers);
  ASSERT_TRUE(c.WaitFormed());
  const size_t gone = 2;
  const net::NodeId gone_id = c.node(gone).self();
  const std::shared_ptr<const cluster::Table> before = c.node(0).meta()->table();
  // Keys owned by the member that restarts (and some others), before the kill: a sketch cell
  // (its decoded object moves by its DUMP body, W11) and a key with a TTL.
  std::string hll, ttl;
  for (int i = 0; hll.empty() || ttl.empty(); i++) {
    const std::string k = "p:" + std::to_string(i);
    if (before->slot(cluster::KeySlot(k)).owner != gone_id) continue;
    (hll.empty() ? hll : ttl) = k;
  }
  Session& setup = c.client(0);
  ASSERT_TRUE(Write(setup, ttl, "warm"));
  ASSERT_EQ(CommandTest::Decode(setup.Run({"PFADD", hll, "a", "b", "c"})).integer, 1);
  ASSERT_EQ(CommandTest::Decode(setup.Run({"SET", ttl, "t", "EX", "3600"})).str, "OK");
  Writer writers[2];
  for (int i = 0; i < 200; i++) {
    Writer& w = writers[i % 2];
    const std::string k = "w:" + std::to_string(i);
    w.keys.push_back(k);
    ASSERT_EQ(CommandTest::Decode(setup.Run({"SET", k, "0"})).str, "OK");
    w.acked[k] = w.sent[k] = 0;
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (size_t w = 0; w < 2; w++) {
    Session& s = c.client(w);  // members that stay: a session must not outlive its engine
    threads.emplace_back([&writers, &s, &stop, w] { writers[w].Run(s, stop); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Restart(c, gone);
  std::this_thread::sleep_for(std::chrono::seconds(3));  // past W13's wait: writes run again
  stop.store(true);
  for (std::thread& t : threads) t.join();

  const std::shared_ptr<const cluster::Table> after = c.node(0).meta()->table();
  size_t promoted_keys = 0;
  for (const Writer& w : writers) {
    ASSERT_EQ(w.acked.size(), w.keys.size());
    for (const auto& [k, acked] : w.acked) {
      if (before->slot(cluster::KeySlot(k)).owner == gone_id) promoted_keys++;
      for (size_t m = 0; m < 2; m++) {
        const std::string got = Read(c.client(m), {"GET", k}).str;
        long value = -1;
        try {
          value = std::stol(got);
        } catch (...) {
        }
        EXPECT_GE(value, acked) << k << " at member " << m << ": " << got;
        EXPECT_LE(value, w.sent.at(k)) << k << " at member " << m;
      }
    }
  }
  EXPECT_GT(promoted_keys, 20u);
  for (size_t m = 0; m < 2; m++) {
    EXPECT_EQ(Read(c.client(m), {"PFCOUNT", hll}).integer, 3);
    EXPECT_EQ(Read(c.client(m), {"GET", ttl}).str, "t");
    const int64_t left = Read(c.client(m), {"TTL", ttl}).integer;
    EXPECT_GT(left, 3500);
    EXPECT_LE(left, 3600);
  }
  // Their heirs own them now, and take writes.
  const cluster::SlotState& st = after->slot(cluster::KeySlot(hll));
  EXPECT_NE(st.owner, gone_id);
  ASSERT_EQ(CommandTest::Decode(c.client(1).Run({"PFADD", hll, "d"})).integer, 1);
  EXPECT_EQ(CommandTest::Decode(c.client(0).Run({"PFCOUNT", hll})).integer, 4);
  const size_t heir = c.IndexOf(st.owner);
  Session& at_heir = c.client(heir);
  EXPECT_NE(internal::InfoField(at_heir, "replica_promotions"), "0");
  EXPECT_EQ(internal::InfoField(at_heir, "replica_promotion_failures"), "0");
  // Nothing of the promoted slots is left in the heir's replica store.
  EXPECT_EQ(internal::DumpState(c.engine(heir).replication()->store().store(), hll), "(absent)");
}

// W12 (S15): with two backups per slot, the heir owns each slot with the other backup in sync;
// the changes it received are committed once that backup confirms them, writes after the
// promotion commit, and the remaining backup's copy equals the heir's store.
TEST(ReplicaPromotionTest, APromotedSlotCommitsOnceItsOtherBackupHasIt) {
  constexpr size_t kMembers = 3;
  internal::ReplicasAtFounding two(2);
  ClientCluster c(kMembers);
  ASSERT_TRUE(c.WaitFormed());
  const size_t gone = 2;
  const net::NodeId gone_id = c.node(gone).self();
  const std::shared_ptr<const cluster::Table> before = c.node(0).meta()->table();
  std::vector<std::string> keys;
  for (int i = 0; keys.size() < 60; i++) {
    const std::string k = "two:" + std::to_string(i);
    if (before->slot(cluster::KeySlot(k)).owner == gone_id) keys.push_back(k);
  }
  ASSERT_TRUE(Write(c.client(0), keys[0], "warm"));
  for (const std::string& k : keys) ASSERT_TRUE(Write(c.client(0), k, "before"));
  Restart(c, gone);
  // Once both members that stayed route the slots to their heirs (until then a read may
  // answer CLUSTERDOWN, as a client retries it).
  Session& first = c.client(0);
  Session& second = c.client(1);
  ASSERT_TRUE(floe::testing::WaitFor(
      [&] {
        for (Session* s : {&first, &second}) {
          if (CommandTest::Decode(s->Run({"GET", keys[0]})).str != "before") return false;
        }
        return true;
      },
      std::chrono::seconds(20)));
  for (size_t i = 0; i < keys.size(); i++) {
    EXPECT_EQ(Read(i % 2 == 0 ? first : second, {"GET", keys[i]}).str, "before") << keys[i];
    if (i % 2 == 0) {
      EXPECT_TRUE(Write(second, keys[i], "after"));
    }
  }
  const std::shared_ptr<const cluster::Table> after = c.node(0).meta()->table();
  for (size_t i = 0; i < keys.size(); i++) {
    const uint16_t slot = cluster::KeySlot(keys[i]);
    const cluster::SlotState& st = after->slot(slot);
    ASSERT_NE(st.owner, gone_id);
    const size_t heir = c.IndexOf(st.owner);
    std::vector<net::NodeId> others = st.backups;
    std::erase(others, gone_id);
    ASSERT_EQ(others.size(), 1u) << "slot " << slot;
    const size_t other = c.IndexOf(others[0]);
    internal::Replication& r = *c.engine(heir).replication();
    internal::Replication& b = *c.engine(other).replication();
    ASSERT_TRUE(floe::testing::WaitFor(
        [&] {
          const uint64_t started = r.sender().started(slot);
          return r.sender().committed(slot) == started &&
                 b.receiver().Stats(slot).applied == started;
        },
        std::chrono::seconds(20)));
    const std::string want = i % 2 == 0 ? "after" : "before";
    EXPECT_EQ(Read(c.client(heir), {"GET", keys[i]}).str, want);
    EXPECT_EQ(internal::DumpState(b.store().store(), keys[i]),
              internal::DumpState(c.engine(heir).store(), keys[i]))
        << keys[i];
  }
}

}  // namespace
}  // namespace floe::server
