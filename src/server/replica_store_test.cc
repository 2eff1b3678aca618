// The server's ends of the replication stream (docs/replication.md, S1 and S6): key states
// captured at an owner travel through replica::Sender and replica::Receiver into a backup's
// ReplicaStore, and build there the same values.

#include "server/internal/replica_store.h"

#include "cluster/cluster.h"
#include "replica/replica_testing.h"
#include "server/command_test.h"
#include "server/internal/command.h"
#include "server/internal/replica_store_testing.h"

namespace floe::server {
namespace {

using internal::CapturedState;
using internal::CaptureState;
using internal::ReplicaStore;

class ReplicaStoreTest : public CommandTest {
 protected:
  ReplicaStoreTest() : backup_engine_(Config(), 1), backup_session_(&backup_engine_, 0) {}

  // One change of `slot` carrying the current state of each key, sent until it committed.
  void Replicate(uint16_t slot, const std::vector<std::string>& keys) {
    if (!configured_.contains(slot)) {
      ASSERT_TRUE(sender_.Own(slot, 1, 0, {{2, 7}}, {}).ok());
      configured_.insert(slot);
    }
    std::vector<CapturedState> states;
    for (const std::string& k : keys) {
      Result<CapturedState> s = CaptureState(engine_.store(), k, NowMs());
      ASSERT_TRUE(s.ok()) << k << ": " << s.status().ToString();
      states.push_back(std::move(s).value());
    }
    std::vector<replica::Entry> entries;
    for (const CapturedState& s : states) entries.push_back(s.entry());
    Result<replica::Sender::Ticket> n = sender_.Open(slot);
    ASSERT_TRUE(n.ok());
    sender_.Close(slot, *n, entries);
    for (int round = 0; round < 6; round++) {  // where it is, the change, the committed n
      std::optional<std::string> m = sender_.NextMessage(2);
      if (!m) break;
      Result<replica::Request> req = replica::DecodeRequest(*m, 1 << 30);
      ASSERT_TRUE(req.ok());
      last_ = receiver_.Receive(*req);
      if (sender_.OnAnswer(2, last_)) sender_.Resume(2);  // the caller's wait: none here
    }
  }
  // The value as DUMP shows it, "(absent)" if there is none.
  static std::string State(store::Store& s, const std::string& key) {
    return internal::DumpState(s, key);
  }
  void ExpectSame(const std::string& key) {
    EXPECT_EQ(State(replicas_.store(), key), State(engine_.store(), key)) << key;
  }

  Engine backup_engine_;
  Session backup_session_;
  ReplicaStore replicas_{&backup_engine_};
  replica::FakeTable table_;
  replica::Receiver receiver_{&table_, &replicas_};
  replica::Sender sender_;
  std::set<uint16_t> configured_;
  replica::Answer last_;
};

// S1: every value type travels as its state (type, bytes, absolute expiry) and is built the
// same at the backup; later changes, removals and expiries travel as states too.
TEST_F(ReplicaStoreTest, EveryTypeReplicatesAsItsState) {
  const std::string tag = "{t}";
  const uint16_t slot = cluster::KeySlot(tag);
  const std::vector<std::string> keys = {tag + "s", tag + "cell", tag + "h",  tag + "c",
                                         tag + "r", tag + "b",    tag + "ttl"};
  ASSERT_THAT(Run({"SET", keys[0], "hello"}), IsOk());
  ASSERT_THAT(Run({"SETRANGE", keys[1], "70000", "x"}), IsInt(70001));  // a string cell
  ASSERT_THAT(Run({"PFADD", keys[2], "a", "b", "c"}), IsInt(1));
  ASSERT_THAT(Run({"CMS.INITBYDIM", keys[3], "100", "3"}), IsOk());
  ASSERT_EQ(Run({"CMS.INCRBY", keys[3], "x", "5"}).type, Reply::Type::kArray);
  ASSERT_THAT(Run({"CMS.INITRANGE", keys[4], "64", "2", "8"}), IsOk());
  ASSERT_THAT(Run({"BF.ADD", keys[5], "foo"}), IsInt(1));
  ASSERT_THAT(Run({"SET", keys[6], "v", "PX", "600000"}), IsOk());
  Replicate(slot, keys);
  for (const std::string& k : keys) ExpectSame(k);
  EXPECT_NE(State(replicas_.store(), keys[6]).find("@"), std::string::npos);
  EXPECT_EQ(replicas_.store().Get(keys[6])->expire_at_ms(),
            engine_.store().Get(keys[6])->expire_at_ms());  // absolute, not re-timed

  // A cell changed in place: its new state travels; the backup's copy is its own.
  ASSERT_THAT(Run({"PFADD", keys[2], "d", "e"}), IsInt(1));
  ASSERT_THAT(Run({"APPEND", keys[1], "yz"}), IsInt(70003));
  ASSERT_THAT(Run({"DEL", keys[0]}), IsInt(1));
  Replicate(slot, {keys[2], keys[1], keys[0]});
  for (const std::string& k : keys) ExpectSame(k);
  EXPECT_EQ(State(replicas_.store(), keys[0]), "(absent)");
  ASSERT_THAT(Run({"PFADD", keys[2], "f"}), IsInt(1));
  EXPECT_NE(State(replicas_.store(), keys[2]), State(engine_.store(), keys[2]));
  EXPECT_EQ(replicas_.install_failures(), 0u);
}

// S2.1, S6: a slot flush removes the slot's keys from the replica store, no other slot's.
TEST_F(ReplicaStoreTest, AFlushRemovesOnlyItsSlot) {
  ASSERT_THAT(Run({"SET", "{a}1", "x"}), IsOk());
  ASSERT_THAT(Run({"SET", "{a}2", "y"}), IsOk());
  ASSERT_THAT(Run({"SET", "{b}1", "z"}), IsOk());
  const uint16_t a = cluster::KeySlot("{a}");
  const uint16_t b = cluster::KeySlot("{b}");
  ASSERT_NE(a, b);
  Replicate(a, {"{a}1", "{a}2"});
  Replicate(b, {"{b}1"});
  ASSERT_EQ(State(replicas_.store(), "{a}2"), State(engine_.store(), "{a}2"));
  Result<replica::Sender::Ticket> n = sender_.Open(a);
  ASSERT_TRUE(n.ok());
  const replica::Entry flush{.kind = replica::EntryKind::kFlush};
  sender_.Close(a, *n, std::span<const replica::Entry>(&flush, 1));
  Replicate(a, {});  // carries the committed n
  EXPECT_EQ(State(replicas_.store(), "{a}1"), "(absent)");
  EXPECT_EQ(State(replicas_.store(), "{a}2"), "(absent)");
  EXPECT_EQ(State(replicas_.store(), "{b}1"), State(engine_.store(), "{b}1"));
}

// S6, R16: a put the backup cannot keep pending waits ("full"); one it can keep is built once the
// pending charge is given back; one it cannot build makes the copy lost, reported to the owner.
TEST_F(ReplicaStoreTest, APutThatDoesNotFitIsNeverLostSilently) {
  const uint16_t slot = cluster::KeySlot("big");
  ASSERT_THAT(Run({"SET", "big", "small"}), IsOk());
  Replicate(slot, {"big"});
  ASSERT_EQ(State(replicas_.store(), "big"), State(engine_.store(), "big"));
  ASSERT_THAT(Run({"SET", "big", std::string(8 << 20, 'v')}), IsOk());
  // Too little memory to keep the change pending: not received ("full"), sent again later.
  ASSERT_THAT(Decode(backup_session_.Run({"CONFIG", "SET", "maxmemory", "2mb"})), IsOk());
  Replicate(slot, {"big"});
  ASSERT_EQ(last_.slots.size(), 1u);
  EXPECT_EQ(last_.slots[0].status, replica::SlotStatus::kFull);
  EXPECT_EQ(State(replicas_.store(), "big").substr(0, 3), "1@0");
  EXPECT_EQ(replicas_.install_failures(), 0u);
  // Enough to keep it pending, and to build the value once the pending charge is given back
  // (never both at once): installed.
  ASSERT_THAT(Decode(backup_session_.Run({"CONFIG", "SET", "maxmemory", "12mb"})), IsOk());
  sender_.Resume(2);
  for (int round = 0; round < 6; round++) {
    std::optional<std::string> m = sender_.NextMessage(2);
    if (!m) break;
    last_ = receiver_.Receive(*replica::DecodeRequest(*m, 1 << 30));
    if (sender_.OnAnswer(2, last_)) sender_.Resume(2);
  }
  EXPECT_EQ(State(replicas_.store(), "big"), State(engine_.store(), "big"));
  EXPECT_EQ(replicas_.install_failures(), 0u);
  // A value that cannot be built (here a sketch body that does not parse) makes the copy lost:
  // reported to the owner, never an incomplete copy that counts.
  Result<replica::Sender::Ticket> t = sender_.Open(slot);
  ASSERT_TRUE(t.ok());
  const replica::Entry bad{.kind = replica::EntryKind::kPut,
                           .key = "big",
                           .type = static_cast<uint16_t>(ValueType::kHll),
                           .bytes = "not a sketch"};
  sender_.Close(slot, *t, std::span<const replica::Entry>(&bad, 1));
  Replicate(slot, {});
  EXPECT_EQ(State(replicas_.store(), "big"), "(absent)");  // not the stale value either
  ASSERT_EQ(last_.slots.size(), 1u);
  EXPECT_EQ(last_.slots[0].status, replica::SlotStatus::kLost);
  EXPECT_EQ(replicas_.install_failures(), 1u);
  EXPECT_EQ(sender_.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{slot, 2}}));
  EXPECT_EQ(backup_engine_.reserved_memory(), 0);
}

}  // namespace
}  // namespace floe::server
