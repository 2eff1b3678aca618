// Capture at a key's home (docs/replication.md S1-S4, "Wiring into the server" step 2): on a
// one-member cluster whose slots are made replicated by hand (Replication::Own), every write at
// home comes out of the Sender as one change, in order, and a Receiver feeding a ReplicaStore
// leaves the backup's copy equal to the home's, DUMP body for DUMP body.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster.h"
#include "replica/replica_testing.h"
#include "server/command_test.h"
#include "server/internal/alloc_failure_testing.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/command.h"
#include "server/internal/replica_store.h"
#include "server/internal/replica_store_testing.h"

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

  void SetUp() override {
    ASSERT_TRUE(cluster_.WaitFormed());
    replication().TEST_StopPump();        // the test sends the Sender's messages itself
    replication().SetHoldBound(300'000);  // a lost change's reply fails sooner (H5)
    // A reply held for its commit (docs/replication.md, H2) comes through the sink once the
    // test has sent the Sender's messages.
    session_->set_reply_sink([this](uint64_t ticket, std::string reply) {
      std::lock_guard<std::mutex> lock(sink_mu_);
      arrived_.emplace_back(ticket, std::move(reply));
    });
  }

  Engine& home() { return cluster_.engine(0); }
  internal::Replication& replication() { return *home().replication(); }
  replica::Sender& sender() { return replication().sender(); }
  Reply Run(const std::vector<std::string>& args) {
    const std::vector<std::string_view> views(args.begin(), args.end());
    std::string out;
    if (session_->Execute(views, &out)) return CommandTest::Decode(out);
    return CommandTest::Decode(AwaitHeld());
  }
  // The reply of the last command, held until its change commits: the Sender's messages are
  // sent until it comes, and the changes they carried are kept for the next Pump.
  std::string AwaitHeld() {
    const uint64_t ticket = session_->last_ticket();
    for (int round = 0; round < 10000; round++) {
      std::vector<std::pair<uint64_t, std::string>> got;
      {
        std::lock_guard<std::mutex> lock(sink_mu_);
        got.swap(arrived_);
      }
      // An internal ticket (a part of a fanned-out FLUSHALL that waited for its keys) runs
      // through FinishDeferred as a connection runs it; its command's reply comes after.
      for (auto& [t, reply] : got) {
        bool held = false;
        std::string bytes = session_->FinishDeferred(t, std::move(reply), &held);
        if (t == ticket && !held) return bytes;
      }
      if (!got.empty()) continue;
      std::vector<Seen> more = SendAll();
      if (more.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      stash_.insert(stash_.end(), more.begin(), more.end());
    }
    ADD_FAILURE() << "a held reply never came";
    return {};
  }
  // The changes sent since the last call: those AwaitHeld sent, then what is left.
  std::vector<Seen> Pump() {
    std::vector<Seen> changes = std::move(stash_);
    stash_.clear();
    std::vector<Seen> more = SendAll();
    changes.insert(changes.end(), more.begin(), more.end());
    return changes;
  }
  // Makes `slot` replicated to backup 2 (life 7), as an applied table would.
  void Replicate(uint16_t slot) { ASSERT_TRUE(replication().Own(slot, 1, 0, {{2, 7}}, {}).ok()); }
  // Sends every message the Sender has for the backup; returns the changes it carried.
  std::vector<Seen> SendAll() {
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
    return internal::DumpState(s, key);
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
  std::mutex sink_mu_;
  std::vector<std::pair<uint64_t, std::string>> arrived_;
  std::vector<Seen> stash_;
};

// S1-S4: SET, APPEND, DEL, EXPIRE, PFADD, an EXEC (one change, S3) and FLUSHALL (a slot flush,
// S2.1) at home each leave as one change of their slot, numbered in the order they ran, and the
// backup's replica store ends equal to the home's.
TEST_F(ReplicaCaptureTest, EveryWriteAtHomeLeavesAsOneChangeInOrder) {
  const uint16_t slot = cluster::KeySlot("{t}");
  Replicate(slot);
  const std::vector<std::string> keys = {"{t}s", "{t}h", "{t}x", "{t}gone"};
  ASSERT_THAT(Run({"SET", "{t}s", "hello"}), IsOk());
  ASSERT_THAT(Run({"APPEND", "{t}s", " world"}), IsInt(11));
  ASSERT_THAT(Run({"SET", "{t}gone", "1"}), IsOk());
  ASSERT_THAT(Run({"DEL", "{t}gone"}), IsInt(1));
  ASSERT_THAT(Run({"EXPIRE", "{t}s", "600"}), IsInt(1));
  ASSERT_THAT(Run({"PFADD", "{t}h", "a", "b", "c"}), IsInt(1));
  ASSERT_THAT(Run({"GET", "{t}s"}), IsBulk("hello world"));  // a read: no change
  std::vector<Seen> changes = Pump();
  ASSERT_EQ(changes.size(), 6u);
  for (size_t i = 0; i < changes.size(); i++) EXPECT_EQ(changes[i].n, i + 1);
  EXPECT_EQ(changes[0].words, "1/{t}s");
  EXPECT_EQ(changes[3].words, "2/{t}gone");  // DEL: the key's absence
  EXPECT_EQ(changes[5].words, "1/{t}h");
  ExpectSame(keys);
  EXPECT_NE(State(replicas_->store(), "{t}s").find("@"), std::string::npos);
  EXPECT_NE(replicas_->store().Get("{t}s")->expire_at_ms(), 0);

  // A transaction is one change with every key it wrote (S3).
  ASSERT_THAT(Run({"MULTI"}), IsOk());
  ASSERT_THAT(Run({"SET", "{t}x", "1"}), IsSimple("QUEUED"));
  ASSERT_THAT(Run({"INCR", "{t}x"}), IsSimple("QUEUED"));
  ASSERT_THAT(Run({"PFADD", "{t}h", "d"}), IsSimple("QUEUED"));
  ASSERT_EQ(Run({"EXEC"}).elements.size(), 3u);
  changes = Pump();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].n, 7u);
  EXPECT_EQ(changes[0].words, "1/{t}h 1/{t}x");
  ExpectSame(keys);
  EXPECT_EQ(State(replicas_->store(), "{t}x"), State(home().store(), "{t}x"));

  // FLUSHALL: a slot flush of every replicated slot, then the states of an EXEC's later writes.
  ASSERT_THAT(Run({"MULTI"}), IsOk());
  ASSERT_THAT(Run({"FLUSHALL"}), IsSimple("QUEUED"));
  ASSERT_THAT(Run({"SET", "{t}x", "after"}), IsSimple("QUEUED"));
  ASSERT_EQ(Run({"EXEC"}).elements.size(), 2u);
  changes = Pump();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].words, "3/ 1/{t}x");
  ExpectSame(keys);
  EXPECT_EQ(State(replicas_->store(), "{t}s"), "(absent)");
  EXPECT_EQ(State(replicas_->store(), "{t}x").substr(0, 2), "1@");
  ASSERT_THAT(Run({"FLUSHALL"}), IsOk());
  changes = Pump();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].words, "3/");
  EXPECT_EQ(replicas_->store().Size(), 0u);
  EXPECT_EQ(replication().capture_failures(), 0u);
  EXPECT_EQ(replicas_->install_failures(), 0u);
}

// S3: a DEL of keys of two replicated slots is one change per slot; a slot not replicated from
// here captures nothing.
TEST_F(ReplicaCaptureTest, AWriteOfSeveralSlotsIsOneChangePerSlot) {
  const uint16_t a = cluster::KeySlot("{a}");
  ASSERT_NE(a, cluster::KeySlot("{b}"));
  Replicate(a);
  Replicate(cluster::KeySlot("{b}"));
  ASSERT_THAT(Run({"SET", "{a}1", "x"}), IsOk());
  ASSERT_THAT(Run({"SET", "{b}1", "y"}), IsOk());
  ASSERT_THAT(Run({"SET", "{c}1", "z"}), IsOk());  // not replicated
  ASSERT_EQ(Pump().size(), 2u);
  ASSERT_THAT(Run({"DEL", "{a}1", "{b}1", "{c}1"}), IsInt(3));
  std::vector<Seen> changes = Pump();
  ASSERT_EQ(changes.size(), 2u);
  std::vector<std::string> words = {changes[0].words, changes[1].words};
  std::sort(words.begin(), words.end());
  EXPECT_EQ(words, (std::vector<std::string>{"2/{a}1", "2/{b}1"}));
  ExpectSame({"{a}1", "{b}1"});
  EXPECT_EQ(State(replicas_->store(), "{c}1"), "(absent)");
}

// S2, S4: threads writing one key at once; each change's number is taken and its state read
// under the key's lock, so the changes leave in the order they applied and the backup's final
// state is the home's.
TEST_F(ReplicaCaptureTest, ChangesOfOneKeyLeaveInApplyOrder) {
  const std::string key = "{k}one";
  Replicate(cluster::KeySlot(key));
  constexpr int kThreads = 4;
  constexpr int kWrites = 300;
  std::vector<std::thread> threads;
  std::atomic<int> finished{0};
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      Session s(&home(), 0);
      for (int i = 0; i < kWrites; i++) {
        if (i % 3 == 2) {
          s.Run({"APPEND", key, std::to_string(t)});
        } else {
          s.Run({"SET", key, std::to_string(t) + ":" + std::to_string(i)});
        }
      }
      finished.fetch_add(1);
    });
  }
  // The backup takes changes while they are written (each write's reply waits for it, H2).
  std::vector<Seen> changes;
  while (finished.load() < kThreads) {
    std::vector<Seen> some = Pump();
    changes.insert(changes.end(), some.begin(), some.end());
  }
  for (std::thread& t : threads) t.join();
  std::vector<Seen> rest = Pump();
  changes.insert(changes.end(), rest.begin(), rest.end());
  ASSERT_EQ(changes.size(), static_cast<size_t>(kThreads * kWrites));
  for (size_t i = 0; i < changes.size(); i++) ASSERT_EQ(changes[i].n, i + 1);
  ExpectSame({key});
}

// S1: a merge (PFMERGE, HLL.UNION, CMS.MERGE) changes its destination alone: its change holds
// the destination's state, not its unchanged sources' (they were captured too, and their slots'
// changes opened, when capture took every key the command names).
TEST_F(ReplicaCaptureTest, AMergeCapturesItsDestinationAlone) {
  const uint16_t slot = cluster::KeySlot("{g}");
  Replicate(slot);
  ASSERT_THAT(Run({"PFADD", "{g}a", "x", "y"}), IsInt(1));
  ASSERT_THAT(Run({"PFADD", "{g}b", "y", "z"}), IsInt(1));
  ASSERT_THAT(Run({"CMS.INITBYDIM", "{g}c1", "16", "2"}), IsOk());
  ASSERT_THAT(Run({"CMS.INITBYDIM", "{g}c2", "16", "2"}), IsOk());
  ASSERT_THAT(Run({"CMS.INITBYDIM", "{g}cd", "16", "2"}), IsOk());
  ASSERT_THAT(Run({"CMS.INCRBY", "{g}c1", "k", "3"}), IsArrayOfSize(1));
  ASSERT_EQ(Pump().size(), 6u);
  ASSERT_THAT(Run({"PFMERGE", "{g}m", "{g}a", "{g}b"}), IsOk());
  ASSERT_THAT(Run({"HLL.UNION", "{g}u", "{g}a", "{g}b"}), IsOk());
  ASSERT_THAT(Run({"CMS.MERGE", "{g}cd", "2", "{g}c1", "{g}c2"}), IsOk());
  const std::vector<Seen> changes = Pump();
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[0].words, "1/{g}m");
  EXPECT_EQ(changes[1].words, "1/{g}u");
  EXPECT_EQ(changes[2].words, "1/{g}cd");
  ExpectSame({"{g}a", "{g}b", "{g}m", "{g}u", "{g}c1", "{g}c2", "{g}cd"});
}

// M9: memory that runs out anywhere in a write at home (the nth allocation of the command, for
// every n the command reaches) leaves no change open and no backup wrong: either the backup's
// copy equals the home's and the slot's changes all committed, or the change was closed lost
// and the backup is reported as needing a fill. Before, a failure after Open (its number taken
// before its queue entry; a state's copy after the handler) left the slot's stream stalled on a
// change that never closed.
TEST_F(ReplicaCaptureTest, AnAllocationThatFailsLeavesNoChangeOpenAndNoBackupWrong) {
  int covered = 0, lost = 0;
  bool done = false;
  for (int64_t nth = 1; nth < 20000 && !done; nth++) {
    const std::string tag = "{m" + std::to_string(nth) + "}";
    const uint16_t slot = cluster::KeySlot(tag);
    if (sender().serving(slot)) continue;  // a slot an earlier round used
    Replicate(slot);
    const std::string key = tag + "k", other = tag + "o";
    ASSERT_THAT(Run({"SET", key, "before"}), IsOk());
    Pump();
    const uint64_t failures = replication().capture_failures();
    // An MSET of two keys of the slot, one of them new: one change with two states. Its
    // arguments and reply buffer are made first, as a connection's are.
    const std::vector<std::string_view> mset = {"MSET", key, "after", other, "new"};
    std::string reply;
    reply.reserve(256);
    internal::FailNthAllocation(nth);
    bool answered = false;
    try {
      answered = session_->Execute(mset, &reply);
    } catch (const std::bad_alloc&) {
      internal::StopFailingAllocations();
      FAIL() << "allocation " << nth << " escaped the session";
    }
    done = !internal::StopFailingAllocations();
    if (!answered) reply = AwaitHeld();  // held for its commit (H2): the messages go by hand
    if (done) {
      ASSERT_EQ(reply, "+OK\r\n");
    } else {
      covered++;
    }
    Pump();
    const std::vector<std::pair<uint16_t, uint32_t>> fill = sender().NeedsFill();
    if (std::find(fill.begin(), fill.end(), std::make_pair(slot, uint32_t{2})) != fill.end()) {
      lost++;
      EXPECT_GT(replication().capture_failures(), failures) << nth;
      // A lost change never commits (until a fill): its reply says the outcome is unknown.
      EXPECT_THAT(reply, HasSubstr("may or may not have been applied")) << nth;
      continue;
    }
    ASSERT_THAT(Run({"SET", other, "later"}), IsOk()) << nth;  // the session goes on
    Pump();
    EXPECT_EQ(sender().committed(slot), sender().started(slot)) << nth << ": " << reply;
    EXPECT_EQ(State(replicas_->store(), key), State(home().store(), key)) << nth;
    EXPECT_EQ(State(replicas_->store(), other), State(home().store(), other)) << nth;
  }
  EXPECT_TRUE(done);
  EXPECT_GT(covered, 10);
  EXPECT_GT(lost, 0);  // some failures fell after the handler, on a state's copy
}

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
