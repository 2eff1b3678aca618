// The agreed table over a real Raft log (docs/membership.md, rule M1): three founders on
// loopback TCP, each in a temporary directory the test removes. Elections are short (150 ms);
// every wait is for a condition, bounded generously, never a timing claim.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "cluster/cluster.h"
#include "testing/process.h"

namespace floe::cluster {
namespace {

using floe::testing::WaitFor;

using namespace std::chrono_literals;

TableMember Founder(int id, uint16_t raft_port) {
  return TableMember{.id = static_cast<net::NodeId>(id),
                     .host = "127.0.0." + std::to_string(id),
                     .port = 7100,
                     .raft_port = raft_port};
}

class MetaCluster {
 public:
  explicit MetaCluster(int founders, uint64_t snapshot_threshold = 1024)
      : snapshot_threshold_(snapshot_threshold) {
    char tmpl[] = "/tmp/floe-meta-XXXXXX";
    root_ = mkdtemp(tmpl);
    for (int i = 1; i <= founders; i++) {
      const uint16_t port = NewPort();
      founders_.push_back(Founder(i, port));
      raft_founders_.push_back({.id = static_cast<uint64_t>(i),
                                .address = "127.0.0.1:" + std::to_string(port),
                                .role = consensus::Role::kVoter});
    }
  }
  ~MetaCluster() {
    nodes_.clear();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  uint16_t NewPort() {
    uint16_t port = 0;
    do {
      port = testing::FreePort();
    } while (port == 0 || !ports_.insert(port).second);
    return port;
  }

  // Starts (or restarts from its directory) member `id`: a founder, or a joiner at `address`.
  Meta* Start(uint64_t id, std::string address = "") {
    nodes_[id].reset();
    MetaOptions o;
    o.raft.id = id;
    o.raft.address = address.empty() ? raft_founders_[id - 1].address : address;
    o.raft.dir = root_ + "/" + std::to_string(id);
    o.raft.election_timeout_ms = 150;
    o.raft.heartbeat_timeout_ms = 30;
    o.raft.snapshot_threshold = snapshot_threshold_;
    o.raft.snapshot_trailing = 2;
    if (address.empty()) {
      o.raft.bootstrap = raft_founders_;
      o.founders = founders_;
      o.replicas = 1;
    }
    o.on_change = [this, id](const std::shared_ptr<const Table>&) { changes_.at(id)++; };
    Result<std::unique_ptr<Meta>> m = Meta::Start(std::move(o));
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) return nullptr;
    nodes_[id] = std::move(m).value();
    return nodes_[id].get();
  }
  void StartFounders() {
    for (const TableMember& f : founders_) Start(f.id);
  }
  void Stop(uint64_t id) { nodes_[id].reset(); }
  Meta* at(uint64_t id) { return nodes_[id].get(); }

  uint64_t WaitLeader() {
    uint64_t leader = 0;
    WaitFor([&] {
      for (auto& [id, m] : nodes_) {
        if (m && m->raft().leader) leader = id;
      }
      return leader != 0;
    });
    return leader;
  }

  Status ProposeOn(uint64_t id, const Change& c) {
    std::promise<Status> p;
    at(id)->Propose(c, [&p](Status st) { p.set_value(st); });
    return p.get_future().get();
  }

  // Proposes on the leader, retrying while leadership moves (FailedPrecondition naming the
  // leader: not appended) and after an unknown outcome (Unavailable, Cancelled: maybe applied).
  // An AddMember retried after an unknown outcome that the table refuses as "already member"
  // did go through the first time.
  Status Commit(const Change& c) {
    Status last;
    bool unknown = false;
    for (int attempt = 0; attempt < 40; attempt++) {
      const uint64_t leader = WaitLeader();
      if (leader == 0) continue;
      last = ProposeOn(leader, c);
      if (last.ok()) return last;
      if (last.code() == StatusCode::kFailedPrecondition &&
          last.message().find("leader") == std::string::npos) {
        if (unknown && last.message().find("already member") != std::string::npos) {
          return Status::OK();
        }
        return last;  // the table's verdict
      }
      if (last.code() != StatusCode::kFailedPrecondition) unknown = true;
      std::this_thread::sleep_for(20ms);
    }
    return last;
  }

  // Every running member has applied a table equal to `id`'s (and not empty).
  bool Converged(uint64_t id) {
    const std::string want = at(id)->table()->Encode();
    if (at(id)->table()->members().empty()) return false;
    for (auto& [other, m] : nodes_) {
      if (m && m->table()->Encode() != want) return false;
    }
    return true;
  }

  int changes(uint64_t id) { return changes_.at(id).load(); }
  const std::vector<TableMember>& founders() const { return founders_; }

 private:
  std::string root_;
  uint64_t snapshot_threshold_;
  std::set<uint16_t> ports_;
  std::vector<TableMember> founders_;
  std::vector<consensus::Server> raft_founders_;
  std::map<uint64_t, std::unique_ptr<Meta>> nodes_;
  // By member id; written on the Raft threads, read by the test: fixed slots, no map nodes.
  std::array<std::atomic<int>, 16> changes_{};
};

Change AddMember(int i) {
  Change c;
  c.kind = Change::Kind::kAddMember;
  c.member = TableMember{.host = "127.0.1." + std::to_string(i), .port = 7100, .raft_port = 7101};
  return c;
}

TEST(MetaTest, FoundersAgreeOnTheInitialTable) {
  MetaCluster c(3);
  c.StartFounders();
  ASSERT_TRUE(WaitFor([&] { return c.Converged(1); }));
  const std::shared_ptr<const Table> t = c.at(2)->table();
  EXPECT_EQ(t->epoch(), 1u) << "one Initialize, whichever founder proposed it";
  EXPECT_EQ(t->members().size(), 3u);
  EXPECT_EQ(t->replicas(), 1u);
  for (int s = 0; s < kSlots; s++) EXPECT_EQ(t->slot(static_cast<uint16_t>(s)).backups.size(), 1u);
  EXPECT_TRUE(WaitFor([&] { return c.changes(3) >= 1; })) << "on_change runs after each change";
  // Rule M5: the proposing founder chose a cluster id, and every member has the same one.
  EXPECT_FALSE(t->cluster_id().empty());
  ASSERT_TRUE(WaitFor([&] { return c.Converged(1); }));
  for (uint64_t id = 1; id <= 3; id++) EXPECT_EQ(c.at(id)->table()->cluster_id(), t->cluster_id());
}

TEST(MetaTest, ChangesGoThroughTheLeaderAndRefusalsChangeNothing) {
  MetaCluster c(3);
  c.StartFounders();
  ASSERT_TRUE(WaitFor([&] { return c.Converged(1); }));
  const uint64_t leader = c.WaitLeader();
  ASSERT_NE(leader, 0u);
  // On a follower: refused, naming the leader. (Probed with a change that is harmless if the
  // follower has meanwhile become the leader under load, and retried until one is seen.)
  Change same_replicas;
  same_replicas.kind = Change::Kind::kSetReplicas;
  same_replicas.count = 1;
  Status st;
  for (int attempt = 0; attempt < 20; attempt++) {
    const uint64_t now_leader = c.WaitLeader();
    st = c.ProposeOn(now_leader == 1 ? 2 : 1, same_replicas);
    if (!st.ok()) break;
  }
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("leader"), std::string::npos) << st.ToString();

  ASSERT_TRUE(c.Commit(AddMember(1)).ok());
  ASSERT_TRUE(
      WaitFor([&] { return c.Converged(leader) && c.at(3)->table()->members().size() == 4; }));
  EXPECT_EQ(c.at(3)->table()->members().back().id, 4u);

  // Refused by the table: committed in the log, yet no member's table changes.
  const uint64_t epoch = c.at(leader)->table()->epoch();
  Change remove;
  remove.kind = Change::Kind::kRemoveMember;
  remove.node = 1;
  st = c.Commit(remove);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("still holds"), std::string::npos) << st.ToString();
  ASSERT_TRUE(c.Commit(AddMember(2)).ok());  // a later change, to know the refusal was applied
  ASSERT_TRUE(WaitFor([&] { return c.Converged(leader); }));
  EXPECT_EQ(c.at(1)->table()->epoch(), epoch + 1);
  EXPECT_NE(c.at(1)->table()->FindMember(1), nullptr);
}

TEST(MetaTest, ARestartedMemberReplaysTheSameTable) {
  MetaCluster c(3, /*snapshot_threshold=*/4);
  c.StartFounders();
  ASSERT_TRUE(WaitFor([&] { return c.Converged(1); }));
  c.Stop(3);
  for (int i = 1; i <= 6; i++) ASSERT_TRUE(c.Commit(AddMember(i)).ok());
  ASSERT_NE(c.Start(3), nullptr);
  const uint64_t leader = c.WaitLeader();
  ASSERT_TRUE(WaitFor([&] { return c.Converged(leader); }));
  EXPECT_EQ(c.at(3)->table()->members().size(), 9u);
}

// A member that joins knows nothing of the founders: it rebuilds the table from the log (its
// Initialize entry, or a snapshot once the log was truncated).
TEST(MetaTest, AJoinerRebuildsTheTableFromTheLog) {
  for (uint64_t threshold : {1024u, 3u}) {
    MetaCluster c(3, threshold);
    c.StartFounders();
    ASSERT_TRUE(WaitFor([&] { return c.Converged(1); }));
    for (int i = 1; i <= 5; i++) {
      Status st = c.Commit(AddMember(i));
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
    const std::string address = "127.0.0.1:" + std::to_string(c.NewPort());
    ASSERT_NE(c.Start(4, address), nullptr);
    EXPECT_TRUE(c.at(4)->table()->members().empty());
    const uint64_t leader = c.WaitLeader();
    if (threshold == 3) {
      // The leader's log is truncated once its snapshot is taken: the joiner needs it.
      ASSERT_TRUE(WaitFor([&] { return c.at(leader)->raft().snapshots_taken >= 1; }));
    }
    // Retried on whichever member leads (a leadership change under load refuses it).
    Status added;
    for (int attempt = 0; attempt < 20; attempt++) {
      std::promise<Status> p;
      c.at(c.WaitLeader())->AddServer(4, address, consensus::Role::kLearner, [&](Status st) {
        p.set_value(st);
      });
      added = p.get_future().get();
      if (added.ok()) break;
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(added.ok()) << added.ToString();
    ASSERT_TRUE(WaitFor([&] { return c.Converged(c.WaitLeader()); })) << "threshold " << threshold;
    EXPECT_EQ(c.at(4)->table()->members().size(), 8u);
    if (threshold == 3) {
      EXPECT_TRUE(WaitFor([&] { return c.at(4)->raft().snapshots_restored >= 1; }))
          << "the log was truncated: a snapshot";
    }
  }
}

TEST(MetaTest, FoundersThatCannotFormATableAreRefused) {
  MetaOptions o;
  o.raft.id = 1;
  o.raft.address = "127.0.0.1:1";
  o.raft.dir = "/tmp/unused";
  o.founders = {Founder(2, 7101)};  // ids must start at 1
  Result<std::unique_ptr<Meta>> m = Meta::Start(o);
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace floe::cluster
