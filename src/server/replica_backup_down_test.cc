// Dropping a backup that is down (docs/replication.md, B7 and wiring step 7, W15-W17): an owner
// reports a backup that confirmed nothing for cluster-node-timeout, the leader removes it from
// the table, fenced by slot version and lives, and the planner gives the slots a backup on a
// member it hears; the slots' writes commit again.

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

bool Listed(const std::vector<net::NodeId>& ids, net::NodeId id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Whether any slot of `t` lists `id` as a backup, in sync or filling.
bool BacksAnything(const cluster::Table& t, net::NodeId id) {
  for (uint16_t s = 0; s < cluster::kSlots; s++) {
    if (Listed(t.slot(s).backups, id) || Listed(t.slot(s).filling, id)) return true;
  }
  return false;
}

// W15-W17: member 2 dies for good (no restart: its life stays in the table). The owners of the
// slots it backed report it, the leader drops it from every slot, the planner gives those slots
// a filling backup on the member that stays, and their writes are answered OK again; every write
// acknowledged before, during and after is there.
TEST(ReplicaBackupDownTest, ADownBackupIsDroppedAndWritesCommitAgain) {
  internal::ReplicasAtFounding one(1);
  ClientCluster c(3);
  ASSERT_TRUE(c.WaitFormed());
  const size_t gone = 2;
  const net::NodeId gone_id = c.node(gone).self();
  const std::shared_ptr<const cluster::Table> before = c.node(0).meta()->table();
  // A key of each member that stays, in a slot the dying member backs.
  std::vector<std::string> keys;
  for (size_t owner : {0u, 1u}) {
    for (int i = 0;; i++) {
      const std::string k = "d:" + std::to_string(i);
      const cluster::SlotState& st = before->slot(cluster::KeySlot(k));
      if (st.owner == c.node(owner).self() && Listed(st.backups, gone_id)) {
        keys.push_back(k);
        break;
      }
    }
  }
  Session& client = c.client(0);
  auto set = [&client](const std::string& k, const std::string& v) {
    return CommandTest::Decode(client.Run({"SET", k, v})).str;
  };
  // Acknowledged once the backups have it (a first write may wait for the streams to open).
  for (const std::string& k : keys) {
    ASSERT_TRUE(
        floe::testing::WaitFor([&] { return set(k, "before") == "OK"; }, std::chrono::seconds(60)));
  }
  c.Kill(gone);
  // While the dead backup is still listed a write waits for it (up to its hold bound, then an
  // unknown outcome); once the leader dropped it, the same write is answered OK.
  for (const std::string& k : keys) {
    ASSERT_TRUE(
        floe::testing::WaitFor([&] { return set(k, "during") == "OK"; }, std::chrono::seconds(60)))
        << k;
  }
  ASSERT_TRUE(floe::testing::WaitFor(
      [&] {
        return !BacksAnything(*c.node(0).meta()->table(), gone_id) &&
               !BacksAnything(*c.node(1).meta()->table(), gone_id);
      },
      std::chrono::seconds(30)))
      << "the dead member still backs slots";
  // W17: the planner refills the slots of the members that stay on each other, never on the
  // dead member, and makes them in sync.
  ASSERT_TRUE(floe::testing::WaitFor(
      [&] {
        const std::shared_ptr<const cluster::Table> t = c.node(0).meta()->table();
        for (const std::string& k : keys) {
          const cluster::SlotState& st = t->slot(cluster::KeySlot(k));
          if (st.backups.size() != 1 || st.backups[0] == gone_id) return false;
        }
        return true;
      },
      std::chrono::seconds(60)))
      << "the slots got no backup again";
  // No write waits for the dead backup any more: each is answered OK, and reads see the last
  // of them (asked again only while the member is between two ownership leases, CLUSTERDOWN,
  // which a loaded machine under ThreadSanitizer can cause).
  for (const std::string& k : keys) {
    std::string r;
    EXPECT_TRUE(
        floe::testing::WaitFor([&] { return (r = set(k, "after")).rfind("CLUSTERDOWN", 0) != 0; },
                               std::chrono::seconds(30)))
        << k;
    EXPECT_EQ(r, "OK") << k;
    EXPECT_TRUE(floe::testing::WaitFor(
        [&] {
          return (r = CommandTest::Decode(client.Run({"GET", k})).str).rfind("CLUSTERDOWN", 0) != 0;
        },
        std::chrono::seconds(30)))
        << k;
    EXPECT_EQ(r, "after") << k;
  }
}

// W16: the leader removes a reported backup only for the owner's life, the slot's version and
// the backup's life as its table has them; a stale version is named in the answer; a slot's last
// in-sync backup that the leader still hears stays; a suspected owner removes nothing.
TEST(ReplicaBackupDownTest, ABackupReportIsFencedBySlotVersionAndLife) {
  internal::ReplicasAtFounding two(2);
  // A node timeout long enough that no owner reports a live backup of its own (under a slow
  // build a backup may confirm nothing for a second) while the test's reports run.
  ClientCluster c(3, -1, 5000);
  ASSERT_TRUE(c.WaitFormed());
  ASSERT_TRUE(
      internal::Propose(c, {.kind = cluster::Change::Kind::kPausePlanner, .flag = true}).ok());
  const size_t leader = c.Leader();
  std::shared_ptr<const cluster::Table> t = c.node(leader).meta()->table();
  uint16_t slot = 0;
  while (t->slot(slot).owner == c.node(leader).self()) slot++;  // an owner that does not lead
  const net::NodeId owner = t->slot(slot).owner;
  const net::NodeId backup = t->slot(slot).backups[0];
  const net::NodeId other = t->slot(slot).backups[1];
  auto report = [&](net::NodeId from, net::NodeId who, uint64_t version, uint64_t life,
                    uint64_t owner_life = 0) {
    const std::shared_ptr<const cluster::Table> now = c.node(leader).meta()->table();
    internal::BackupDownRequest r{
        .owner = owner,
        .life = owner_life != 0 ? owner_life : now->FindMember(owner)->life,
        .items = {{.slot = slot, .version = version, .backup = who, .n = life}}};
    Result<std::string> answer = Status::Unavailable("not asked");
    // A leader answers only once it has led for a node timeout (it then knows whom it hears).
    floe::testing::WaitFor(
        [&] {
          std::promise<Result<std::string>> p;
          c.node(leader).TEST_BackupDown(
              from, internal::EncodeBackupInSync(r),
              [&p](Result<std::string> a) { p.set_value(std::move(a)); });
          answer = p.get_future().get();
          // Unavailable, or leadership that moved meanwhile (under a slow build): asked again.
          return answer.ok() || (answer.status().code() != StatusCode::kUnavailable &&
                                 !answer.status().message().starts_with("not the leader"));
        },
        std::chrono::seconds(20));
    return answer;
  };
  auto life_of = [&](net::NodeId id) {
    return c.node(leader).meta()->table()->FindMember(id)->life;
  };
  auto slot_now = [&] { return c.node(leader).meta()->table()->slot(slot); };
  const uint64_t v = slot_now().version;
  // Only the owner reports its backups.
  EXPECT_EQ(report(other, backup, v, life_of(backup)).status().code(),
            StatusCode::kPermissionDenied);
  // Another life of the owner.
  EXPECT_EQ(report(owner, backup, v, life_of(backup), life_of(owner) + 1).status().code(),
            StatusCode::kFailedPrecondition);
  // A version the table no longer has: named stale, nothing removed.
  Result<std::string> stale = report(owner, backup, v - 1, life_of(backup));
  ASSERT_TRUE(stale.ok()) << stale.status().ToString();
  EXPECT_EQ(internal::DecodeSlotList(*stale).value(), std::vector<uint16_t>{slot});
  // Another life of the backup: nothing removed.
  Result<std::string> other_life = report(owner, backup, v, life_of(backup) + 1);
  ASSERT_TRUE(other_life.ok()) << other_life.status().ToString();
  EXPECT_TRUE(internal::DecodeSlotList(*other_life).value().empty());
  EXPECT_EQ(slot_now().version, v);
  EXPECT_TRUE(Listed(slot_now().backups, backup));
  // As the table has them: removed, the other backup kept.
  Result<std::string> removed = report(owner, backup, v, life_of(backup));
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  ASSERT_TRUE(floe::testing::WaitFor([&] { return !Listed(slot_now().backups, backup); },
                                     std::chrono::seconds(10)));
  EXPECT_EQ(slot_now().backups, std::vector<net::NodeId>{other});
  // The slot's last in-sync backup, which the leader hears: kept.
  const uint64_t v2 = slot_now().version;
  Result<std::string> last = report(owner, other, v2, life_of(other));
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  EXPECT_EQ(slot_now().version, v2);
  EXPECT_EQ(slot_now().backups, std::vector<net::NodeId>{other});
  // A suspected owner removes nothing (its backups may be the heirs of its slots).
  cluster::Change suspect{.kind = cluster::Change::Kind::kSuspect, .node = owner, .flag = true};
  suspect.member.life = life_of(owner);
  ASSERT_TRUE(internal::Propose(c, suspect).ok());
  EXPECT_EQ(report(owner, other, slot_now().version, life_of(other)).status().code(),
            StatusCode::kFailedPrecondition);
}

// S11, W19: with min-replicas-to-write N, a write to a slot with fewer in-sync backups is
// refused with NOREPLICAS before it runs (forwarded from another member too); a FLUSHALL needs
// every replicated slot of each member to have them. Once a dead backup is dropped (B7), its
// slots' writes are refused until a new backup is in sync.
TEST(ReplicaBackupDownTest, AWriteWithTooFewBackupsIsRefusedWhenAsked) {
  internal::ReplicasAtFounding one(1);
  // As above: only the backup that is killed is reported.
  ClientCluster c(3, -1, 5000);
  ASSERT_TRUE(c.WaitFormed());
  const std::string k = c.KeyAt(0, "m"), elsewhere = c.KeyAt(1, "m");
  // The member that dies later backs `elsewhere`'s slot; clients connect to the two others (a
  // session must not outlive its engine).
  const uint16_t slot = cluster::KeySlot(elsewhere);
  const net::NodeId backup = c.node(0).meta()->table()->slot(slot).backups[0];
  const size_t gone = c.IndexOf(backup);
  std::vector<Session*> clients;
  std::vector<size_t> alive;
  for (size_t i = 0; i < 3; i++) {
    if (i == gone) continue;
    alive.push_back(i);
    clients.push_back(&c.client(i));
  }
  auto run = [](Session* s, const std::vector<std::string>& args) {
    return CommandTest::Decode(s->Run(args));
  };
  auto set_min = [&](const std::string& n) {
    for (size_t i = 0; i < 3; i++) {
      std::string failed;
      ASSERT_TRUE(c.engine(i).SetConfig({{"min-replicas-to-write", n}}, &failed).ok());
    }
  };
  set_min("2");
  EXPECT_EQ(run(clients[1], {"CONFIG", "GET", "min-replicas-to-write"}).elements.at(1).str, "2");
  for (Session* s : clients) {
    const resp::Reply r = run(s, {"SET", k, "v"});
    EXPECT_TRUE(r.str.starts_with("NOREPLICAS")) << r.str;
  }
  EXPECT_TRUE(run(clients[0], {"FLUSHALL"}).str.starts_with("NOREPLICAS"));
  // An EXEC refused so ends its transaction, here and at a home it was forwarded to (review of
  // W19): the next command runs, it is not queued.
  for (Session* s : clients) {
    ASSERT_EQ(run(s, {"MULTI"}).str, "OK");
    ASSERT_EQ(run(s, {"SET", k, "in-multi"}).str, "QUEUED");
    const resp::Reply exec = run(s, {"EXEC"});
    EXPECT_EQ(exec.str,
              "EXECABORT Transaction discarded because of: NOREPLICAS Not enough good replicas "
              "to write.");
    EXPECT_EQ(run(s, {"GET", k}).type, resp::Reply::Type::kNull) << "not queued, nothing written";
  }
  EXPECT_EQ(run(clients[0], {"GET", k}).type, resp::Reply::Type::kNull) << "reads are served";
  EXPECT_EQ(run(clients[0], {"EXISTS", k}).integer, 0) << "nothing was written";
  set_min("1");
  ASSERT_TRUE(floe::testing::WaitFor(
      [&] {
        return run(clients[1], {"SET", k, "v"}).str == "OK";
      },
      std::chrono::seconds(60)));
  EXPECT_EQ(run(clients[1], {"GET", k}).str, "v");
  // The backup of `elsewhere`'s slot dies: once dropped, the slot has no in-sync backup and its
  // writes are refused, until the planner's new backup is filled and made in sync.
  c.Kill(gone);
  ASSERT_TRUE(floe::testing::WaitFor(
      [&] {
        return run(clients[0], {"SET", elsewhere, "x"}).str.starts_with("NOREPLICAS") ||
               !Listed(c.node(alive[0]).meta()->table()->slot(slot).backups, backup);
      },
      std::chrono::seconds(90)))
      << "backups of the slot: "
      << ::testing::PrintToString(c.node(alive[0]).meta()->table()->slot(slot).backups);
  ASSERT_TRUE(floe::testing::WaitFor(
      [&] {
        return run(clients[0], {"SET", elsewhere, "y"}).str == "OK";
      },
      std::chrono::seconds(60)))
      << "refilled, the slot takes writes again";
  EXPECT_EQ(run(clients[1], {"GET", elsewhere}).str, "y");
}

// RPC 307's answer: a list of slots, checked when decoded.
TEST(ReplicaBackupDownTest, TheAnswersSlotListIsCheckedWhenDecoded) {
  const std::vector<uint16_t> slots{0, 7, 16383};
  Result<std::vector<uint16_t>> back = internal::DecodeSlotList(internal::EncodeSlotList(slots));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, slots);
  EXPECT_TRUE(internal::DecodeSlotList(internal::EncodeSlotList({})).value().empty());
  EXPECT_FALSE(internal::DecodeSlotList(internal::EncodeSlotList({16384})).ok());
  EXPECT_FALSE(internal::DecodeSlotList(internal::EncodeSlotList({7, 7})).ok());
  EXPECT_FALSE(internal::DecodeSlotList(internal::EncodeSlotList({7, 3})).ok());
  EXPECT_FALSE(internal::DecodeSlotList(internal::EncodeSlotList(slots) + "x").ok());
  std::vector<uint16_t> many(internal::kMaxInSyncItems + 1);
  for (size_t i = 0; i < many.size(); i++) many[i] = static_cast<uint16_t>(i);
  EXPECT_FALSE(internal::DecodeSlotList(internal::EncodeSlotList(many)).ok());
  // A count the bytes cannot hold is refused before anything is sized by it.
  EXPECT_FALSE(internal::DecodeSlotList(std::string("\xff\xff\x03\x00\x01", 5)).ok());
}

}  // namespace
}  // namespace floe::server
