// Capture at a key's home (docs/replication.md S1-S4, "Wiring into the server" step 2): on a
// one-member cluster whose slots are made replicated by hand (Replication::Own), every write at
// home comes out of the Sender as one change, in order, and a Receiver feeding a ReplicaStore
// leaves the backup's copy equal to the home's, DUMP body for DUMP body.

#include <algorithm>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster.h"
#include "replica/replica_testing.h"
#include "server/command_test.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/command.h"
#include "server/internal/replica_store.h"

namespace floe::server {
namespace {

using internal::InProcessCluster;
using internal::ReplicaStore;
using ::testing::Not;

// The entries of a change as "kind/key" words.
std::string Words(const replica::Change& c) {
  std::string out;
  for (const replica::Entry& e : c.entries) {
    out += (out.empty() ? "" : " ") + std::to_string(static_cast<int>(e.kind)) + "/" +
           std::string(e.key);
  }
  return out;
}
// A change as it left: its number and its entries' words (the message's views do not outlive it).
struct Seen {
  uint64_t n = 0;
  std::string words;
};

Config BackupConfig() {
  Config c;
  c.cluster = "127.0.0.1:1";  // a cluster member's engine (not started): it has a replica store
  return c;
}

class ReplicaCaptureTest : public ::testing::Test {
 protected:
  ReplicaCaptureTest()
      : cluster_(InProcessCluster::Options{.members = 1}),
        backup_engine_(BackupConfig(), 1),
        replicas_(&backup_engine_.replication()->store()) {}

  void SetUp() override { ASSERT_TRUE(cluster_.WaitFormed()); }

  Engine& home() { return cluster_.engine(0); }
  internal::Replication& replication() { return *home().replication(); }
  replica::Sender& sender() { return replication().sender(); }
  Reply Run(const std::vector<std::string>& args) {
    return CommandTest::Decode(session_->Run(args));
  }
  // Makes `slot` replicated to backup 2 (life 7), as an applied table would.
  void Replicate(uint16_t slot) { ASSERT_TRUE(replication().Own(slot, 1, 0, {{2, 7}}, {}).ok()); }
  // Sends every message the Sender has for the backup; returns the changes it carried.
  std::vector<Seen> Pump() {
    std::vector<Seen> changes;
    for (int round = 0; round < 1000; round++) {
      std::optional<std::string> m = sender().NextMessage(2);
      if (!m) break;
      Result<replica::Request> req = replica::DecodeRequest(*m, 1 << 30);
      EXPECT_TRUE(req.ok());
      if (!req.ok()) break;
      for (const replica::Group& g : req->groups) {
        for (const replica::Change& c : g.changes) changes.push_back({c.n, Words(c)});
      }
      if (sender().OnAnswer(2, receiver_.Receive(*req))) sender().Resume(2);
    }
    return changes;
  }
  // The value as DUMP shows it, "(absent)" if there is none.
  static std::string State(store::Store& s, const std::string& key) {
    store::ValuePtr v = s.Get(key);
    if (internal::Live(v.get(), NowMs()) == nullptr) return "(absent)";
    Result<std::string> body = internal::DumpBody(*v);
    return std::to_string(v->type()) + "@" + std::to_string(v->expire_at_ms()) + ":" +
           (body.ok() ? *body : body.status().ToString());
  }
  void ExpectSame(const std::vector<std::string>& keys) {
    for (const std::string& k : keys) {
      EXPECT_EQ(State(replicas_->store(), k), State(home().store(), k)) << k;
    }
  }

  InProcessCluster cluster_;
  std::unique_ptr<Session> session_ = std::make_unique<Session>(&cluster_.engine(0), 0);
  Engine backup_engine_;
  ReplicaStore* replicas_;
  replica::FakeTable table_;
  replica::Receiver receiver_{&table_, replicas_};
};

// S6, step 1: the replica store is memory like any other: counted in used_memory and INFO, and
// a backup over maxmemory answers "full" rather than taking the change.
TEST_F(ReplicaCaptureTest, ReplicasCountAsMemoryAndShowInInfo) {
  // The slot is replicated in the Sender alone (not through Replication::Own, so no write
  // captures): this test's changes are made by hand, as replica_store_test's are.
  const uint16_t slot = cluster::KeySlot("big");
  ASSERT_TRUE(sender().Own(slot, 1, 0, {{2, 7}}, {}).ok());
  auto change = [&] {
    Result<internal::CapturedState> state = internal::CaptureState(home().store(), "big", NowMs());
    ASSERT_TRUE(state.ok());
    Result<replica::Sender::Ticket> t = sender().Open(slot);
    ASSERT_TRUE(t.ok());
    const replica::Entry e = state->entry();
    sender().Close(slot, *t, std::span<const replica::Entry>(&e, 1));
  };
  const int64_t before = backup_engine_.UsedMemoryNow();
  ASSERT_THAT(Run({"SET", "big", std::string(1 << 20, 'v')}), IsOk());
  change();
  Pump();
  ExpectSame({"big"});
  EXPECT_GE(backup_engine_.UsedMemoryNow() - before, 1 << 20);
  EXPECT_GE(backup_engine_.ReplicaStoreBytes(), 1 << 20);
  Session backup(&backup_engine_, 0);
  const std::string info = CommandTest::Decode(backup.Run({"INFO", "memory"})).str;
  EXPECT_THAT(info, HasSubstr("\r\nreplica_keys:1\r\n"));
  EXPECT_THAT(info, HasSubstr("\r\nreplica_used_memory:" +
                              std::to_string(backup_engine_.ReplicaStoreBytes()) + "\r\n"));
  EXPECT_THAT(info, HasSubstr("\r\nreplica_install_failures:0\r\n"));
  EXPECT_THAT(info, HasSubstr("\r\nreplica_capture_failures:0\r\n"));
  // used_memory counts the replicas: it is above what the backup's own store holds.
  const std::string used = "used_memory:";
  const size_t at = info.find(used);
  ASSERT_NE(at, std::string::npos);
  EXPECT_GE(std::stoll(info.substr(at + used.size())), backup_engine_.ReplicaStoreBytes());
  // Over maxmemory with the replicas counted, the next change is not taken: "full".
  ASSERT_THAT(CommandTest::Decode(backup.Run(
                  {"CONFIG", "SET", "maxmemory", std::to_string(backup_engine_.UsedMemoryNow())})),
              IsOk());
  ASSERT_THAT(Run({"SET", "big", std::string(1 << 20, 'w')}), IsOk());
  change();
  std::optional<std::string> m = sender().NextMessage(2);
  ASSERT_TRUE(m.has_value());
  const replica::Answer answer = receiver_.Receive(*replica::DecodeRequest(*m, 1 << 30));
  ASSERT_EQ(answer.slots.size(), 1u);
  EXPECT_EQ(answer.slots[0].status, replica::SlotStatus::kFull);
  // A standalone node has no replica store, and INFO no replica fields.
  Engine standalone(Config(), 1);
  EXPECT_EQ(standalone.replication(), nullptr);
  Session s(&standalone, 0);
  EXPECT_THAT(CommandTest::Decode(s.Run({"INFO", "memory"})).str, Not(HasSubstr("replica_keys")));
}

}  // namespace
}  // namespace floe::server
