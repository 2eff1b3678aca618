// Hostile tests of commands through any node of a cluster (routing.cc, cluster_node.cc): three
// Engines with a ClusterNode each, on loopback, in one process. Each test names the defect it
// pins down.

#include <chrono>
#include <thread>

#include "cluster/cluster.h"
#include "server/command_test.h"
#include "server/internal/cluster_node.h"
#include "testing/process.h"

namespace floe::server {
namespace {

using internal::ClusterNode;

// Three nodes on 127.0.0.1; node i's engine and ClusterNode. Destroyed in the order the
// server uses: the ClusterNodes (their proxy sessions belong to the engines) before the
// Engines.
class ThreeNodes : public ::testing::Test {
 protected:
  static constexpr int kNodes = 3;

  void SetUp() override { ASSERT_TRUE(Start(Config())); }

  // Starts the three nodes with `base` as every node's configuration (plus the cluster
  // settings); false when a port could not be found or the cloud did not form.
  bool Start(const Config& base) {
    std::string list;
    for (int i = 0; i < kNodes; i++) {
      ports_[i] = floe::testing::FreePort("127.0.0.1");
      if (ports_[i] == 0) return false;
      list += (i > 0 ? "," : "") + std::string("127.0.0.1:") + std::to_string(ports_[i]);
    }
    for (int i = 0; i < kNodes; i++) {
      Config c = base;
      c.bind = "127.0.0.1";
      c.cluster = list;
      c.cluster_port = ports_[i];
      c.cluster_node_timeout = timeout_ms_;
      engines_[i] = std::make_unique<Engine>(c, 1);
      Result<std::unique_ptr<ClusterNode>> n = ClusterNode::Start(engines_[i].get(), c, 6000 + i);
      EXPECT_TRUE(n.ok()) << n.status().ToString();
      if (!n.ok()) return false;
      nodes_[i] = std::move(*n);
      engines_[i]->set_cluster(nodes_[i].get());
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (int i = 0; i < kNodes; i++) {
      while (!nodes_[i]->formed()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    return true;
  }

  void TearDown() override {
    for (int i = 0; i < kNodes; i++) {
      if (engines_[i]) engines_[i]->set_cluster(nullptr);
      nodes_[i].reset();
    }
    for (auto& e : engines_) e.reset();
  }

  // Which node (0-based) is home to `key`.
  int HomeOf(std::string_view key) const {
    const net::NodeId id = nodes_[0]->Home(cluster::KeySlot(key));
    for (int i = 0; i < kNodes; i++) {
      if (nodes_[i]->self() == id) return i;
    }
    return -1;
  }
  // A key (prefix + number) homed at node `home`.
  std::string KeyAt(int home, const std::string& prefix = "k") const {
    for (int n = 0;; n++) {
      std::string k = prefix + std::to_string(n);
      if (HomeOf(k) == home) return k;
    }
  }

  static Reply Do(Session& s, std::vector<std::string> args) {
    return CommandTest::Decode(s.Run(args));
  }

  int64_t timeout_ms_ = 2000;
  uint16_t ports_[kNodes] = {};
  std::unique_ptr<Engine> engines_[kNodes];
  std::unique_ptr<ClusterNode> nodes_[kNodes];
};

TEST_F(ThreeNodes, EveryNodeAnswersEveryKey) {
  Session s0(engines_[0].get(), 0), s2(engines_[2].get(), 0);
  const std::string k = KeyAt(1);
  EXPECT_THAT(Do(s0, {"SET", k, "v"}), IsOk());
  EXPECT_THAT(Do(s2, {"GET", k}), IsBulk("v"));
}

// A cluster whose nodes require a password: the client authenticated at its node, and the
// proxy session at the home runs its commands (it answered NOAUTH to every forwarded command).
TEST_F(ThreeNodes, AForwardedCommandNeedsNoSecondAuth) {
  TearDown();
  Config c;
  c.requirepass = "pw";
  ASSERT_TRUE(Start(c));
  Session s(engines_[0].get(), 0);
  EXPECT_THAT(Do(s, {"SET", KeyAt(1), "v"}), ErrStartsWith("NOAUTH"));
  EXPECT_THAT(Do(s, {"AUTH", "pw"}), IsOk());
  const std::string k1 = KeyAt(1), k2 = KeyAt(2);
  EXPECT_THAT(Do(s, {"SET", k1, "v"}), IsOk());
  EXPECT_THAT(Do(s, {"GET", k1}), IsBulk("v"));
  EXPECT_THAT(Do(s, {"EXISTS", k1, k2}), IsInt(1));
  EXPECT_THAT(Do(s, {"DBSIZE"}), IsInt(1));
}

// PFCOUNT of keys on several homes, one of them down: CLUSTERDOWN as for every other command
// (rule C4), not "a node sent a reply of the wrong shape".
TEST_F(ThreeNodes, PfCountAcrossHomesWithOneDownSaysClusterDown) {
  Session s(engines_[0].get(), 0);
  const std::string k0 = KeyAt(0, "h"), k2 = KeyAt(2, "h");
  EXPECT_THAT(Do(s, {"PFADD", k0, "a"}), IsInt(1));
  EXPECT_THAT(Do(s, {"PFADD", k2, "b"}), IsInt(1));
  EXPECT_THAT(Do(s, {"PFCOUNT", k0, k2}), IsInt(2));
  nodes_[2]->Stop();
  EXPECT_THAT(Do(s, {"PFCOUNT", k0, k2}), ErrStartsWith("CLUSTERDOWN"));
  EXPECT_THAT(Do(s, {"MGET", k0, k2}), ErrStartsWith("CLUSTERDOWN"));
}

// A node restarts and its first client gets the id a client of its previous life had: the home
// must not hand it that client's proxy session, WATCHes included (its EXEC was aborted by a
// WATCH it never made), and the proxy sessions of the node's previous life are dropped.
TEST_F(ThreeNodes, AClientOfARestartedNodeDoesNotInheritAnOldProxySession) {
  const std::string k = KeyAt(1);
  uint64_t old_id = 0;
  {
    Session a(engines_[0].get(), 0), a2(engines_[0].get(), 0);
    old_id = a.id();
    EXPECT_THAT(Do(a, {"WATCH", k}), IsOk());
    EXPECT_THAT(Do(a2, {"GET", k}), IsNil());
    EXPECT_EQ(nodes_[1]->stats().proxy_sessions.load(), 2u);
    // Node 0 dies: no word reaches the home that its clients left.
    engines_[0]->set_cluster(nullptr);
    nodes_[0].reset();
  }
  engines_[0].reset();
  Session other(engines_[2].get(), 0);
  EXPECT_THAT(Do(other, {"SET", k, "changed"}), IsOk());

  Config c;
  c.bind = "127.0.0.1";
  c.cluster = "127.0.0.1:" + std::to_string(ports_[0]) + ",127.0.0.1:" + std::to_string(ports_[1]) +
              ",127.0.0.1:" + std::to_string(ports_[2]);
  c.cluster_port = ports_[0];
  c.cluster_node_timeout = timeout_ms_;
  engines_[0] = std::make_unique<Engine>(c, 1);
  Result<std::unique_ptr<ClusterNode>> n = ClusterNode::Start(engines_[0].get(), c, 6000);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  nodes_[0] = std::move(*n);
  engines_[0]->set_cluster(nodes_[0].get());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!nodes_[0]->formed() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(nodes_[0]->formed());
  Session b(engines_[0].get(), 0);
  ASSERT_EQ(b.id(), old_id);
  EXPECT_THAT(Do(b, {"MULTI"}), IsOk());
  EXPECT_THAT(Do(b, {"SET", k, "mine"}), IsSimple("QUEUED"));
  EXPECT_THAT(Do(b, {"EXEC"}), IsArrayOfSize(1));
  EXPECT_THAT(Do(b, {"GET", k}), IsBulk("mine"));
  // The sessions of the node's previous life are gone (they counted toward maxclients): left
  // are those of `other` and `b`.
  EXPECT_EQ(nodes_[1]->stats().proxy_sessions.load(), 2u);
}

// A home slower than cluster-node-timeout: the client got CLUSTERDOWN for its EXEC and went on
// while the EXEC still waited at the home. Its next command ran in the same proxy session at
// once, inside that unfinished MULTI: a GET answered QUEUED and joined the transaction. A
// client's requests now run one after the other at the home.
TEST_F(ThreeNodes, ACommandAfterATimedOutExecDoesNotJoinTheTransaction) {
  TearDown();
  timeout_ms_ = 300;
  ASSERT_TRUE(Start(Config()));
  Session s(engines_[0].get(), 0);
  const std::string k = KeyAt(1);
  EXPECT_THAT(Do(s, {"SET", k, "old"}), IsOk());
  // The home's I/O thread holds its lock: the EXEC (exclusive: it needs every lock) waits.
  Mutex& io_lock = engines_[1]->worker_lock(0);
  io_lock.Lock();
  EXPECT_THAT(Do(s, {"MULTI"}), IsOk());
  EXPECT_THAT(Do(s, {"SET", k, "new"}), IsSimple("QUEUED"));
  EXPECT_THAT(Do(s, {"EXEC"}), ErrStartsWith("CLUSTERDOWN"));
  const Reply get = Do(s, {"GET", k});
  io_lock.Unlock();
  EXPECT_THAT(get, ::testing::Not(IsSimple("QUEUED")));
  // The EXEC ran once the lock was free, with its one command.
  Reply after;
  for (int i = 0; i < 200; i++) {
    after = Do(s, {"GET", k});
    if (after.type == Reply::Type::kBulk && after.str == "new") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_THAT(after, IsBulk("new"));
}

}  // namespace
}  // namespace floe::server
