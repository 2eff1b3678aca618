// The consensus contracts (docs/consensus.md) on real raft servers over loopback TCP, each in a
// temporary directory the test removes. Timeouts are small (150 ms elections) so each test runs
// in about a second; every wait is for a condition, bounded generously, never a timing claim.

#include "consensus/consensus.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "consensus/internal/cluster_testing.h"
#include "consensus/internal/fsm.h"
#include "consensus/internal/recorder_testing.h"
#include "testing/process.h"

namespace floe::consensus {
namespace {

using floe::testing::WaitFor;

using namespace std::chrono_literals;

using internal::Node;
using internal::Recorder;
using internal::TestCluster;

// Contract 6: every field is checked, and the text names it.
TEST(ConsensusTest, InvalidOptionsAreRefusedNamingTheField) {
  const Options good{.id = 1, .address = "127.0.0.1:7001", .dir = "unused"};
  EXPECT_TRUE(Validate(good).ok()) << Validate(good).ToString();
  struct Case {
    std::function<void(Options&)> change;
    std::string_view mentions;
  };
  const std::vector<Case> cases = {
      {[](Options& o) { o.id = 0; }, "id"},
      {[](Options& o) { o.address = "localhost:7001"; }, "IPv4"},
      {[](Options& o) { o.address = "127.0.0.1"; }, "address"},
      {[](Options& o) { o.address = "127.0.0.1:0"; }, "port"},
      {[](Options& o) { o.address = "127.0.0.1:65536"; }, "port"},
      {[](Options& o) { o.address = "127.0.0.1:+80"; }, "port"},
      {[](Options& o) { o.dir = ""; }, "dir"},
      {[](Options& o) { o.dir = std::string(901, 'd'); }, "dir"},
      {[](Options& o) { o.election_timeout_ms = 9; }, "election_timeout_ms"},
      {[](Options& o) { o.election_timeout_ms = 60'001; }, "election_timeout_ms"},
      {[](Options& o) { o.heartbeat_timeout_ms = 0; }, "heartbeat_timeout_ms"},
      {[](Options& o) { o.heartbeat_timeout_ms = 251; }, "heartbeat_timeout_ms"},
      {[](Options& o) { o.snapshot_threshold = 0; }, "snapshot_threshold"},
      {[](Options& o) { o.snapshot_threshold = (uint64_t{1} << 31) + 1; }, "snapshot_threshold"},
      {[](Options& o) { o.snapshot_trailing = uint64_t{1} << 40; }, "snapshot_trailing"},
      {[](Options& o) { o.max_pending = 0; }, "max_pending"},
      {[](Options& o) { o.max_pending = (1 << 20) + 1; }, "max_pending"},
      {[](Options& o) { o.bootstrap = {{.id = 2, .address = "127.0.0.1:7002"}}; },
       "does not list this server"},
      {[](Options& o) { o.bootstrap = {{.id = 1, .address = "127.0.0.1:7009"}}; },
       "not at its address"},
      {[](Options& o) {
         o.bootstrap = {{.id = 1, .address = "127.0.0.1:7001"},
                        {.id = 1, .address = "127.0.0.1:7002"}};
       },
       "twice"},
      {[](Options& o) {
         o.bootstrap = {{.id = 1, .address = "127.0.0.1:7001"},
                        {.id = 2, .address = "127.0.0.1:7001"}};
       },
       "twice"},
      {[](Options& o) {
         o.bootstrap = {{.id = 1, .address = "127.0.0.1:7001", .role = Role::kLearner}};
       },
       "no voter"},
      {[](Options& o) {
         o.bootstrap.clear();
         for (uint64_t i = 1; i <= 6; i++) {
           o.bootstrap.push_back({.id = i, .address = "127.0.0.1:" + std::to_string(7000 + i)});
         }
       },
       "more than 5 voters"},
      {[](Options& o) { o.bootstrap = {{.id = 0, .address = "127.0.0.1:7001"}}; }, "id is 0"},
  };
  for (const Case& c : cases) {
    Options o = good;
    c.change(o);
    const Status s = Validate(o);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.mentions;
    EXPECT_NE(s.message().find(c.mentions), std::string_view::npos) << s.ToString();
    // Start refuses the same options before touching the disk or the network.
    Recorder m;
    auto log = Log::Start(o, &m);
    EXPECT_EQ(log.status().code(), StatusCode::kInvalidArgument) << c.mentions;
  }
}

// A port already in use is an error from Start, not a crash or a silent server.
TEST(ConsensusTest, StartFailsWhenTheAddressIsTaken) {
  TestCluster c(1);
  ASSERT_NE(c.Start(c.founders()[0]), nullptr);
  Options o = c.OptionsFor(c.founders()[0], true);
  o.id = 2;
  o.dir += "-other";
  o.bootstrap = {{.id = 2, .address = o.address}};
  Recorder m;
  auto log = Log::Start(o, &m);
  EXPECT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kUnavailable) << log.status().ToString();

  // So is a directory that cannot be created (a file is in the way).
  Options blocked = o;
  blocked.address = "127.0.0.1:" + std::to_string(testing::FreePort());
  blocked.bootstrap = {{.id = 2, .address = blocked.address}};
  blocked.dir = c.OptionsFor(c.founders()[0], true).dir + "/metadata1/sub";
  auto no_dir = Log::Start(blocked, &m);
  EXPECT_EQ(no_dir.status().code(), StatusCode::kUnavailable) << no_dir.status().ToString();
  EXPECT_NE(no_dir.status().message().find("creating"), std::string_view::npos)
      << no_dir.status().ToString();
}

// Contract 1: one leader; proposals apply in the same order, with the same index, everywhere.
TEST(ConsensusTest, ThreeServersElectOneLeaderAndApplyInOneOrder) {
  TestCluster c(3);
  c.StartAll();
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);

  // Pipelined: 40 proposals in flight at once, acknowledged in proposal order.
  constexpr int kEntries = 40;
  std::vector<std::promise<Result<uint64_t>>> done(kEntries);
  std::vector<std::string> entries;
  for (int i = 0; i < kEntries; i++) {
    entries.push_back("entry-" + std::to_string(i));
    c.log(leader)->Propose(entries.back(),
                           [&done, i](Result<uint64_t> r) { done[i].set_value(std::move(r)); });
  }
  std::vector<uint64_t> indexes;
  for (auto& d : done) {
    Result<uint64_t> r = d.get_future().get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    indexes.push_back(*r);
  }
  for (int i = 1; i < kEntries; i++) EXPECT_GT(indexes[i], indexes[i - 1]);
  ASSERT_TRUE(c.WaitConverged(entries));

  // The index done reports is the index every StateMachine saw for that entry.
  for (uint64_t id = 1; id <= 3; id++) {
    const auto applied = c.machine(id)->Applied();
    ASSERT_EQ(applied.size(), entries.size());
    for (int i = 0; i < kEntries; i++) EXPECT_EQ(applied[i].first, indexes[i]) << "server " << id;
  }
  const State s = c.log(leader)->state();
  EXPECT_TRUE(s.leader);
  EXPECT_EQ(s.configuration.size(), 3u);
  EXPECT_GE(s.commit_index, indexes.back());
}

// Contract 2: a follower refuses, naming the leader.
TEST(ConsensusTest, AProposalOnAFollowerFailsNamingTheLeader) {
  TestCluster c(3);
  c.StartAll();
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  const uint64_t follower = leader == 1 ? 2 : 1;
  Result<uint64_t> r = c.ProposeOn(follower, "x");
  ASSERT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status().ToString();
  const std::string named =
      "leader " + std::to_string(leader) + " at " + c.founders()[leader - 1].address;
  EXPECT_NE(r.status().message().find(named), std::string_view::npos) << r.status().ToString();
  // Membership changes too.
  Status s = c.Sync([&](Done d) { c.log(follower)->RemoveServer(leader, std::move(d)); });
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
}

// Contracts 1 and 3: the leader stops; a new one is elected, proposals continue, and the old
// leader restarted from its directory replays and catches up with nothing committed lost.
TEST(ConsensusTest, ANewLeaderTakesOverAndARestartedServerCatchesUp) {
  TestCluster c(3);
  c.StartAll();
  std::vector<std::string> acknowledged;
  for (int i = 0; i < 10; i++) {
    const std::string e = "before-" + std::to_string(i);
    ASSERT_TRUE(c.Commit(e).ok());
    acknowledged.push_back(e);
  }
  const uint64_t old_leader = c.WaitLeader();
  ASSERT_NE(old_leader, 0u);
  c.Stop(old_leader);
  const uint64_t new_leader = c.WaitLeader();
  ASSERT_NE(new_leader, 0u);
  EXPECT_NE(new_leader, old_leader);
  for (int i = 0; i < 10; i++) {
    const std::string e = "after-" + std::to_string(i);
    ASSERT_TRUE(c.Commit(e).ok());
    acknowledged.push_back(e);
  }
  ASSERT_NE(c.Start(c.founders()[old_leader - 1]), nullptr);
  ASSERT_TRUE(
      WaitFor([&] { return c.machine(old_leader)->Entries().size() >= acknowledged.size(); }));
  // Every server holds the same history, containing every acknowledged entry in order.
  const std::vector<std::string> history = c.machine(new_leader)->Entries();
  ASSERT_TRUE(c.WaitConverged(history))
      << ::testing::PrintToString(c.machine(old_leader)->Entries()) << "\n"
      << ::testing::PrintToString(history);
  size_t next = 0;
  for (const std::string& e : history) {
    if (next < acknowledged.size() && e == acknowledged[next]) next++;
  }
  EXPECT_EQ(next, acknowledged.size());
}

// The leader's state tells how long each other server has been silent (docs/consensus.md,
// State): a stopped follower's silence grows past the election timeout while the other's stays
// under it; followers report only at the leader.
TEST(ConsensusTest, TheLeaderTellsHowLongEachFollowerHasBeenSilent) {
  TestCluster c(3);
  c.StartAll();
  ASSERT_TRUE(c.Commit("x").ok());
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  const uint64_t stopped = leader == 1 ? 2 : 1;
  const uint64_t other = 6 - leader - stopped;
  EXPECT_TRUE(c.log(other)->state().followers.empty());
  c.Stop(stopped);
  auto silent = [&](uint64_t id) {
    for (const State::Follower& f : c.log(leader)->state().followers) {
      if (f.id == id) return f.silent_ms;
    }
    return State::kNeverHeard;
  };
  ASSERT_TRUE(WaitFor([&] { return silent(stopped) > 3 * 150; }));
  const State st = c.log(leader)->state();
  EXPECT_TRUE(st.leader);
  EXPECT_GT(st.led_ms, 0u);
  ASSERT_EQ(st.followers.size(), 2u);
  EXPECT_LT(silent(other), 3 * 150u);
  for (const State::Follower& f : st.followers) {
    if (f.id == other) {
      EXPECT_GE(f.match_index, 1u);
    }
  }
}

// Contract 10: a leader is ready only once the barrier it appended when elected, an entry of
// its own term, is committed and applied: its commit index then covers every entry an earlier
// leader acknowledged. Checked for the first leader and for the one elected after it stops.
TEST(ConsensusTest, ALeaderIsReadyOnlyOnceItCommittedAnEntryOfItsTerm) {
  TestCluster c(3);
  c.StartAll();
  uint64_t last = 0;
  std::vector<std::string> acknowledged;
  for (int i = 0; i < 5; i++) {
    const std::string e = "e-" + std::to_string(i);
    Result<uint64_t> index = c.Commit(e);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    last = *index;
    acknowledged.push_back(e);
  }
  for (int round = 0; round < 2; round++) {
    const uint64_t leader = c.WaitLeader();
    ASSERT_NE(leader, 0u);
    State st;
    ASSERT_TRUE(WaitFor([&] {
      st = c.log(leader)->state();
      return st.leader_ready || !st.leader;
    }));
    ASSERT_TRUE(st.leader_ready) << "leader " << leader << " lost its leadership";
    if (round == 1) {
      // Elected after the entries: its barrier follows them, committed and applied.
      EXPECT_GT(st.commit_index, last);
      EXPECT_GT(st.applied_index, last);
    }
    std::vector<std::string> seen = c.machine(leader)->Entries();
    for (const std::string& e : acknowledged) {
      EXPECT_NE(std::find(seen.begin(), seen.end(), e), seen.end()) << e;
    }
    for (uint64_t id = 1; id <= 3; id++) {
      if (id != leader && c.log(id) != nullptr) {
        EXPECT_FALSE(c.log(id)->state().leader_ready) << id;
      }
    }
    if (round == 0) c.Stop(leader);
  }
}

// Contract C11: a leader with its majority confirms its leadership with a commit index past
// every acknowledged entry; one cut off from the majority never does, although it still counts
// itself ready until its quorum check steps it down (what a 302 answered from leader_ready
// alone trusted).
TEST(ConsensusTest, ACutOffLeaderDoesNotConfirmItsLeadership) {
  // A long election timeout: the cut-off leader's quorum check takes that long to depose it,
  // which leaves the time to ask it while it still counts itself ready.
  TestCluster c(3, Options{.election_timeout_ms = 1500, .heartbeat_timeout_ms = 100});
  c.StartAll();
  Result<uint64_t> last = c.Commit("before");
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  auto confirm = [&](uint64_t id) {
    std::promise<Result<uint64_t>> p;
    c.log(id)->ConfirmLeadership([&p](Result<uint64_t> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  // A leader with its majority confirms (retried across a leader change, as Commit is).
  uint64_t leader = 0;
  Result<uint64_t> confirmed = Status::Unavailable("not asked");
  for (int attempt = 0; attempt < 20 && !confirmed.ok(); attempt++) {
    leader = c.WaitLeader();
    if (leader == 0 || !WaitFor([&] { return c.log(leader)->state().leader_ready; })) continue;
    confirmed = confirm(leader);
  }
  ASSERT_TRUE(confirmed.ok()) << confirmed.status().ToString();
  EXPECT_GE(*confirmed, *last);
  for (uint64_t id = 1; id <= 3; id++) {
    if (id == leader) continue;
    Result<uint64_t> r = confirm(id);
    EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << id;
  }

  for (uint64_t id = 1; id <= 3; id++) {
    if (id != leader) c.Stop(id);
  }
  // Cut off: it still leads and counts itself ready (for up to the election timeout)...
  const State cut = c.log(leader)->state();
  ASSERT_TRUE(cut.leader && cut.leader_ready) << "stepped down before it was asked";
  // ...but cannot confirm it: its barrier never commits and fails when it steps down.
  Result<uint64_t> cut_off = confirm(leader);
  ASSERT_FALSE(cut_off.ok()) << "confirmed commit index " << *cut_off;
  EXPECT_TRUE(WaitFor([&] { return !c.log(leader)->state().leader; }));
}

// Contract C11: confirmations dispatched together share a barrier, and they are bounded apart
// from proposals: 200 at once with max_pending 4 are all answered, with far fewer than 200
// barriers, and a proposal still gets its place.
TEST(ConsensusTest, ConfirmationsShareBarriersAndHaveTheirOwnBound) {
  TestCluster c(3, Options{.max_pending = 4});
  c.StartAll();
  ASSERT_TRUE(c.Commit("first").ok());
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  ASSERT_TRUE(WaitFor([&] { return c.log(leader)->state().leader_ready; }));
  const uint64_t before = c.log(leader)->state().last_index;
  constexpr int kConfirms = 200;
  static_assert(kConfirms < kMaxConfirms);
  std::mutex mu;
  std::condition_variable cv;
  int answered = 0, ok = 0;
  std::vector<std::string> errors;
  for (int i = 0; i < kConfirms; i++) {
    c.log(leader)->ConfirmLeadership([&](Result<uint64_t> r) {
      std::lock_guard<std::mutex> lock(mu);
      answered++;
      if (r.ok()) {
        ok++;
      } else {
        errors.push_back(r.status().ToString());
      }
      cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 20s, [&] { return answered == kConfirms; }));
  }
  // A leader change in between would fail some (FailedPrecondition), never ResourceExhausted.
  for (const std::string& e : errors)
    EXPECT_EQ(e.find("ResourceExhausted"), std::string::npos) << e;
  EXPECT_GT(ok, 0);
  const uint64_t barriers = c.log(leader)->state().last_index - before;
  EXPECT_LT(barriers, 50u) << "one barrier per confirmation is not sharing";
  EXPECT_TRUE(c.Commit("after").ok());
}

// Contract 4: past the threshold a snapshot is taken; a new server is brought up by installing
// it, and a restarted server restores its own from disk.
TEST(ConsensusTest, SnapshotsBringUpNewAndRestartedServers) {
  TestCluster c(3, Options{.snapshot_threshold = 8, .snapshot_trailing = 2});
  c.StartAll();
  std::vector<std::string> entries;
  for (int i = 0; i < 30; i++) {
    entries.push_back("s-" + std::to_string(i));
    ASSERT_TRUE(c.Commit(entries.back()).ok());
  }
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  ASSERT_TRUE(WaitFor([&] { return c.log(leader)->state().snapshots_taken >= 1; }));

  // A new server: its log starts after the leader's truncated log, so only a snapshot helps.
  const Server fourth = c.NewServer(4, Role::kLearner);
  ASSERT_NE(c.Start(fourth, /*founder=*/false), nullptr);
  Status s = c.Sync([&](Done d) {
    c.log(leader)->AddServer(fourth.id, fourth.address, Role::kLearner, std::move(d));
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(c.WaitConverged(entries));
  EXPECT_GE(c.machine(4)->restores(), 1);
  // state() is published by the raft thread's next refresh, which may follow the restore.
  EXPECT_TRUE(WaitFor([&] { return c.log(4)->state().snapshots_restored >= 1; }));

  // A restarted follower restores the snapshot it stored, then replays the rest.
  const uint64_t follower = leader == 1 ? 2 : 1;
  c.Stop(follower);
  for (int i = 0; i < 5; i++) {
    entries.push_back("t-" + std::to_string(i));
    ASSERT_TRUE(c.Commit(entries.back()).ok());
  }
  ASSERT_NE(c.Start(c.founders()[follower - 1]), nullptr);
  ASSERT_TRUE(c.WaitConverged(entries));
  EXPECT_GE(c.machine(follower)->restores(), 1);
}

// docs/consensus.md, "Reading a directory": a stopped server's directory reads back as its
// last snapshot and the proposals stored after it, in order; a directory with no log is
// NotFound.
TEST(ConsensusTest, AStoppedServersDirectoryReadsBackAsSnapshotAndEntries) {
  TestCluster c(3, Options{.snapshot_threshold = 8, .snapshot_trailing = 2});
  c.StartAll();
  std::vector<std::string> entries;
  for (int i = 0; i < 12; i++) {
    entries.push_back("r-" + std::to_string(i));
    ASSERT_TRUE(c.Commit(entries.back()).ok());
  }
  ASSERT_TRUE(c.WaitConverged(entries));
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  ASSERT_TRUE(WaitFor([&] { return c.log(leader)->state().snapshots_taken >= 1; }));
  const Options o = c.OptionsFor(c.founders()[leader - 1], true);
  for (uint64_t id = 1; id <= 3; id++) c.Stop(id);
  Result<StoredLog> stored = ReadStoredLog(o);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_GT(stored->snapshot_index, 0u);
  EXPECT_FALSE(stored->snapshot.empty());
  ASSERT_FALSE(stored->entries.empty());
  for (size_t i = 1; i < stored->entries.size(); i++) {
    EXPECT_EQ(stored->entries[i].first, stored->entries[i - 1].first + 1);
  }
  EXPECT_EQ(stored->entries.back().second, entries.back());
  // Read twice: reading changes nothing a later read or start depends on.
  Result<StoredLog> again = ReadStoredLog(o);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->entries, stored->entries);
  EXPECT_EQ(again->snapshot, stored->snapshot);
  Options empty = o;
  empty.dir = o.dir + "-empty";
  std::filesystem::create_directories(empty.dir);
  EXPECT_EQ(ReadStoredLog(empty).status().code(), StatusCode::kNotFound);
}

// Contract 5: a learner receives entries but its vote does not count; promoted, it does.
TEST(ConsensusTest, ALearnerReplicatesWithoutVotingUntilPromoted) {
  TestCluster c(2);
  c.StartAll();
  uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  const Server learner = c.NewServer(3, Role::kLearner);
  ASSERT_NE(c.Start(learner, /*founder=*/false), nullptr);
  Status s = c.Sync([&](Done d) {
    c.log(leader)->AddServer(learner.id, learner.address, Role::kLearner, std::move(d));
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(c.Commit("seen-by-the-learner").ok());
  ASSERT_TRUE(c.WaitConverged({"seen-by-the-learner"}));
  const std::vector<Server> config = c.log(leader)->state().configuration;
  ASSERT_EQ(config.size(), 3u);
  EXPECT_EQ(config[2].role, Role::kLearner);

  // Without the other voter, the remaining voter and the learner are no majority of 2 voters:
  // nothing commits and no leader is elected.
  const uint64_t other = leader == 1 ? 2 : 1;
  c.Stop(other);
  Result<uint64_t> r = c.ProposeOn(leader, "never-committed");
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  // raft fails the request as it steps down; state() follows within a loop iteration.
  ASSERT_TRUE(WaitFor([&] { return !c.log(leader)->state().leader; }));
  EXPECT_FALSE(
      WaitFor([&] { return c.log(leader)->state().leader || c.log(3)->state().leader; }, 1500ms));

  // Promoted to voter, the learner's vote counts: with one voter of three gone, a leader is
  // elected among the other two.
  ASSERT_NE(c.Start(c.founders()[other - 1]), nullptr);
  leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  s = c.Sync([&](Done d) { c.log(leader)->Assign(learner.id, Role::kVoter, std::move(d)); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  const uint64_t stopped = leader == 3 ? 1 : leader;
  c.Stop(stopped);
  const uint64_t after = c.WaitLeader();
  ASSERT_NE(after, 0u);
  EXPECT_NE(after, stopped);
  ASSERT_TRUE(c.Commit("committed-with-the-promoted-voter").ok());

  // Removing the stopped server leaves a configuration without it.
  s = c.Sync([&](Done d) { c.log(after)->RemoveServer(stopped, std::move(d)); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::vector<Server> final_config = c.log(after)->state().configuration;
  ASSERT_EQ(final_config.size(), 2u);
  for (const Server& server : final_config) {
    EXPECT_NE(server.id, stopped);
    EXPECT_EQ(server.role, Role::kVoter);
  }
}

// AddServer is raft_add (a spare) then raft_assign: a leader change between the two leaves a
// spare. The next leader's AddServer of the same server assigns its role, and a retry of a
// finished add is OK; only an id at another address (or an address of another id) is refused.
TEST(ConsensusTest, AnAddCutOffByALeaderChangeIsFinishedByTheNextLeader) {
  TestCluster c(3);
  c.StartAll();
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  const Server fourth = c.NewServer(4, Role::kLearner);
  // The first step only, as if the leader stopped before it assigned the role (the server
  // starts later: a spare hears nothing, not even who leads).
  Status s = c.Sync([&](Done d) {
    c.log(leader)->AddServer(fourth.id, fourth.address, Role::kSpare, std::move(d));
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(c.Commit("after-the-spare").ok());
  c.Stop(leader);
  const uint64_t next = c.WaitLeader();
  ASSERT_NE(next, 0u);
  ASSERT_NE(next, leader);
  auto role_of_fourth = [&] {
    for (const Server& server : c.log(next)->state().configuration) {
      if (server.id == fourth.id) return server.role;
    }
    return Role::kVoter;
  };
  ASSERT_EQ(role_of_fourth(), Role::kSpare);
  ASSERT_NE(c.Start(fourth, /*founder=*/false), nullptr);
  s = c.Sync([&](Done d) {
    c.log(next)->AddServer(fourth.id, fourth.address, Role::kLearner, std::move(d));
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(role_of_fourth(), Role::kLearner);
  ASSERT_TRUE(c.Commit("seen-by-the-learner").ok());
  ASSERT_TRUE(WaitFor(
      [&] { return c.log(4)->state().applied_index >= c.log(next)->state().commit_index; }));
  // Again: nothing to do, OK.
  s = c.Sync([&](Done d) {
    c.log(next)->AddServer(fourth.id, fourth.address, Role::kLearner, std::move(d));
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  // The id at another address is not this server.
  s = c.Sync([&](Done d) {
    c.log(next)->AddServer(fourth.id, c.NewServer(5, Role::kLearner).address, Role::kLearner,
                           std::move(d));
  });
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.ToString();
  EXPECT_EQ(role_of_fourth(), Role::kLearner);
}

// A retried AddServer answers only from a committed configuration: with the role's change
// appended but not committed (both followers stopped), a leader change may yet drop it, so the
// retry is Aborted, not OK (the joiner would be told it joined while it stays a spare).
TEST(ConsensusTest, ARetriedAddIsNotOkWhileItsChangeIsUncommitted) {
  TestCluster c(3);
  c.StartAll();
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  const Server fourth = c.NewServer(4, Role::kLearner);
  Status s = c.Sync([&](Done d) {
    c.log(leader)->AddServer(fourth.id, fourth.address, Role::kSpare, std::move(d));
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (const Server& f : c.founders()) {
    if (f.id != leader) c.Stop(f.id);
  }
  std::promise<Status> assigned;
  c.log(leader)->Assign(fourth.id, Role::kLearner,
                        [&assigned](Status st) { assigned.set_value(std::move(st)); });
  auto role_of_fourth = [&] {
    for (const Server& server : c.log(leader)->state().configuration) {
      if (server.id == fourth.id) return server.role;
    }
    return Role::kVoter;
  };
  // The assign is appended (the latest configuration names the role), never committed.
  ASSERT_TRUE(WaitFor([&] { return role_of_fourth() == Role::kLearner; }));
  s = c.Sync([&](Done d) {
    c.log(leader)->AddServer(fourth.id, fourth.address, Role::kLearner, std::move(d));
  });
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s.ToString();
  c.Stop(leader);
  EXPECT_FALSE(assigned.get_future().get().ok());
}

// Contract 5's bound and the membership errors: a sixth voter is refused (added or promoted),
// a learner is not; an id or an address already in use is AlreadyExists.
TEST(ConsensusTest, MembershipIsBoundedAndChecked) {
  TestCluster c(5);
  c.StartAll();
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  const Server sixth = c.NewServer(6, Role::kVoter);
  Status s = c.Sync([&](Done d) {
    c.log(leader)->AddServer(sixth.id, sixth.address, Role::kVoter, std::move(d));
  });
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  s = c.Sync([&](Done d) {
    c.log(leader)->AddServer(sixth.id, sixth.address, Role::kLearner, std::move(d));
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  s = c.Sync([&](Done d) { c.log(leader)->Assign(sixth.id, Role::kVoter, std::move(d)); });
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  s = c.Sync([&](Done d) {
    c.log(leader)->AddServer(7, c.founders()[0].address, Role::kLearner, std::move(d));
  });
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.ToString();
  s = c.Sync([&](Done d) {
    c.log(leader)->AddServer(2, c.NewServer(8, Role::kLearner).address, Role::kLearner,
                             std::move(d));
  });
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.ToString();
  s = c.Sync(
      [&](Done d) { c.log(leader)->AddServer(9, "127.0.0.1", Role::kLearner, std::move(d)); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  s = c.Sync([&](Done d) { c.log(leader)->RemoveServer(42, std::move(d)); });
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  const std::vector<Server> config = c.log(leader)->state().configuration;
  ASSERT_EQ(config.size(), 6u);
  EXPECT_EQ(config[5].role, Role::kLearner);
}

// Leadership moves to the voter asked for.
TEST(ConsensusTest, LeadershipTransfersToTheNamedVoter) {
  TestCluster c(3);
  c.StartAll();
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  const uint64_t target = leader == 3 ? 1 : leader + 1;
  Status s = c.Sync([&](Done d) { c.log(leader)->TransferLeadership(target, std::move(d)); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.WaitLeader(), target);
}

// Contract 6: entries over the limit, and requests past max_pending, are refused at once.
TEST(ConsensusTest, OversizedEntriesAndAFullQueueAreRefused) {
  TestCluster c(1, Options{.max_pending = 2});
  ASSERT_NE(c.Start(c.founders()[0]), nullptr);
  ASSERT_EQ(c.WaitLeader(), 1u);
  Result<uint64_t> big = c.ProposeOn(1, std::string(kMaxEntryBytes + 1, 'x'));
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(c.ProposeOn(1, std::string(kMaxEntryBytes, 'x')).ok());
  ASSERT_TRUE(c.ProposeOn(1, "").ok());
  EXPECT_EQ(c.machine(1)->Entries(),
            (std::vector<std::string>{std::string(kMaxEntryBytes, 'x'), ""}));

  // The first entry's Apply holds the raft thread, so both requests stay pending.
  Recorder::Gate gate;
  c.machine(1)->gate_ = &gate;
  std::promise<Result<uint64_t>> first, second;
  c.log(1)->Propose("a", [&](Result<uint64_t> r) { first.set_value(std::move(r)); });
  gate.entered.get_future().wait();
  c.log(1)->Propose("b", [&](Result<uint64_t> r) { second.set_value(std::move(r)); });
  Result<uint64_t> third = c.ProposeOn(1, "c");  // refused inline
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted) << third.status().ToString();
  gate.open.set_value();
  EXPECT_TRUE(first.get_future().get().ok());
  EXPECT_TRUE(second.get_future().get().ok());
  c.machine(1)->gate_ = nullptr;
}

// Contract 7: Stop with proposals in flight finishes each exactly once; later calls are
// Cancelled at once. Five rounds, each stopping the leader with 300 proposals in flight and
// restarting it from its directory: nothing acknowledged is lost,
// and closing raft with appends in flight does not crash it (it did, about one round in 50, before
// Stop drained).
TEST(ConsensusTest, StopFinishesEveryPendingRequestExactlyOnce) {
  TestCluster c(3);
  c.StartAll();
  constexpr int kProposals = 300;
  Mutex mu;
  std::vector<std::string> acknowledged;
  for (int round = 0; round < 5; round++) {
    const uint64_t leader = c.WaitLeader();
    ASSERT_NE(leader, 0u);
    std::vector<std::atomic<int>> calls(kProposals);
    std::atomic<int> acknowledged_in_round{0};
    for (int i = 0; i < kProposals; i++) {
      const std::string entry = "r" + std::to_string(round) + "-" + std::to_string(i);
      c.log(leader)->Propose(entry, [&, i, entry](Result<uint64_t> r) {
        calls[i]++;
        if (!r.ok()) return;
        acknowledged_in_round++;
        MutexLock lock(&mu);
        acknowledged.push_back(entry);
      });
    }
    // Odd rounds stop once the first is acknowledged (raft acknowledges in batches, often all
    // of them); even rounds at once, with every proposal in flight.
    if (round % 2 == 1) {
      ASSERT_TRUE(WaitFor([&] { return acknowledged_in_round.load() > 0; }));
    }
    std::atomic<int> change_calls{0};
    if (round == 0) {
      c.log(leader)->AddServer(9, "127.0.0.1:9", Role::kVoter, [&](Status) { change_calls++; });
    }
    // Leadership confirmations too (C11), waiting or on a barrier in flight.
    constexpr int kConfirms = 50;
    std::vector<std::atomic<int>> confirm_calls(kConfirms);
    for (int i = 0; i < kConfirms; i++) {
      c.log(leader)->ConfirmLeadership([&, i](Result<uint64_t>) { confirm_calls[i]++; });
    }
    c.log(leader)->Stop();
    for (int i = 0; i < kProposals; i++) EXPECT_EQ(calls[i].load(), 1) << "proposal " << i;
    for (int i = 0; i < kConfirms; i++) EXPECT_EQ(confirm_calls[i].load(), 1) << "confirm " << i;
    EXPECT_EQ(change_calls.load(), round == 0 ? 1 : 0);
    c.log(leader)->Stop();  // idempotent
    Result<uint64_t> late = c.ProposeOn(leader, "late");
    EXPECT_EQ(late.status().code(), StatusCode::kCancelled);
    EXPECT_FALSE(c.log(leader)->state().running);
    std::printf("round %d: %d of %d acknowledged before Stop\n", round,
                acknowledged_in_round.load(), kProposals);
    ASSERT_NE(c.Start(c.founders()[leader - 1]), nullptr);
  }
  ASSERT_TRUE(c.Commit("final").ok());
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  const std::vector<std::string> history = c.machine(leader)->Entries();
  ASSERT_TRUE(c.WaitConverged(history));
  MutexLock lock(&mu);
  for (const std::string& entry : acknowledged) {
    EXPECT_NE(std::find(history.begin(), history.end(), entry), history.end()) << entry;
  }
}

}  // namespace
}  // namespace floe::consensus
