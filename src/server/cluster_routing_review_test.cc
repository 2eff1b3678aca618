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
    for (auto& n : nodes_) {
      if (n) n->Stop();  // no proxy session runs from here on
    }
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

// Clients on every node at once: increments through any node, transactions and MSETs at a
// home (exclusive sections beside its own I/O thread and the proxy sessions), split MGETs and
// DELs. No increment is lost or doubled (run under TSan too).
TEST_F(ThreeNodes, ConcurrentClientsOnEveryNodeLoseNoIncrement) {
  constexpr int kThreads = 6, kRounds = 150;
  const std::string counter = KeyAt(1, "n");
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      Session s(engines_[t % kNodes].get(), 0);
      const std::string tag = "{t" + std::to_string(t) + "}";
      for (int i = 0; i < kRounds; i++) {
        if (Do(s, {"INCR", counter}).type != Reply::Type::kInteger) bad++;
        switch (i % 4) {
          case 0:
            if (Do(s, {"MSET", tag + "a", "1", tag + "b", "2"}).str != "OK") bad++;
            break;
          case 1: {
            Do(s, {"MULTI"});
            Do(s, {"INCR", tag + "a"});
            Do(s, {"GET", tag + "b"});
            const Reply r = Do(s, {"EXEC"});
            if (r.type != Reply::Type::kArray || r.elements.size() != 2) bad++;
            break;
          }
          case 2:
            if (Do(s, {"MGET", "x1", "x2", "x3", tag + "a"}).elements.size() != 4) bad++;
            break;
          case 3:
            if (Do(s, {"DEL", "y1", "y2", "y3"}).type != Reply::Type::kInteger) bad++;
            break;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  Session s(engines_[2].get(), 0);
  EXPECT_THAT(Do(s, {"GET", counter}), IsBulk(std::to_string(kThreads * kRounds)));
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

// Each node's clients may have a proxy session at every other node. A limit of maxclients on
// all of them together refused the clients of a node that had few, once another node's clients
// had filled the home; now each node may have up to maxclients proxy sessions at a home.
TEST_F(ThreeNodes, ProxySessionsOfOneNodeDoNotCrowdOutAnother) {
  TearDown();
  Config c;
  c.maxclients = 2;
  ASSERT_TRUE(Start(c));
  const std::string k = KeyAt(1);
  Session a1(engines_[0].get(), 0), a2(engines_[0].get(), 0), b(engines_[2].get(), 0);
  EXPECT_THAT(Do(a1, {"GET", k}), IsNil());
  EXPECT_THAT(Do(a2, {"GET", k}), IsNil());
  EXPECT_THAT(Do(b, {"GET", k}), IsNil());  // was "ERR max number of clients reached"
  // A node cannot open more proxy sessions than maxclients.
  Session a3(engines_[0].get(), 0);
  EXPECT_THAT(Do(a3, {"GET", k}), IsErr("ERR max number of clients reached"));
}

// The same for the home's own clients: proxy sessions do not count toward the connections a
// node accepts (it refused every connection once other nodes' clients had maxclients proxies).
TEST(ClusterServerTest, ProxySessionsDoNotCrowdOutConnections) {
  uint16_t ports[3];
  std::string list;
  for (int i = 0; i < 3; i++) {
    ports[i] = floe::testing::FreePort("127.0.0.1");
    ASSERT_NE(ports[i], 0);
    list += (i > 0 ? "," : "") + std::string("127.0.0.1:") + std::to_string(ports[i]);
  }
  Config c;
  c.bind = "127.0.0.1";
  c.cluster = list;
  c.cluster_node_timeout = 2000;
  c.maxclients = 1;
  // Node 0 is a server (listener and all); nodes 1 and 2 are bare engines.
  Config sc = c;
  sc.port = 0;
  sc.threads = 1;
  sc.cluster_port = ports[0];
  Server server(sc);
  std::thread run([&] { EXPECT_TRUE(server.Run().ok()); });
  std::unique_ptr<Engine> engines[2];
  std::unique_ptr<ClusterNode> nodes[2];
  for (int i = 0; i < 2; i++) {
    Config nc = c;
    nc.cluster_port = ports[i + 1];
    engines[i] = std::make_unique<Engine>(nc, 1);
    Result<std::unique_ptr<ClusterNode>> n = ClusterNode::Start(engines[i].get(), nc, 6000 + i);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    nodes[i] = std::move(*n);
    engines[i]->set_cluster(nodes[i].get());
  }
  // A key homed at the server's node, and its client, proxied there once the server formed.
  std::string k;
  for (int n = 0; k.empty(); n++) {
    const std::string key = "k" + std::to_string(n);
    const net::NodeId home = nodes[0]->map().Home(cluster::KeySlot(key));
    if (home != nodes[0]->self() && home != nodes[1]->self()) k = key;
  }
  {
    Session a(engines[0].get(), 0);
    Reply r;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    do {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      r = CommandTest::Decode(a.Run(std::vector<std::string>{"SET", k, "v"}));
    } while (!(r.type == Reply::Type::kSimple && r.str == "OK") &&
             std::chrono::steady_clock::now() < deadline);
    ASSERT_THAT(r, IsOk());
    ASSERT_NE(server.bound_port(), 0);

    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server.bound_port()));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const std::string ping = "*1\r\n$4\r\nPING\r\n";
    ASSERT_EQ(write(fd, ping.data(), ping.size()), static_cast<ssize_t>(ping.size()));
    char buf[128];
    const ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "+PONG\r\n");
  }
  server.Stop();
  run.join();
  for (int i = 0; i < 2; i++) {
    engines[i]->set_cluster(nullptr);
    nodes[i].reset();
  }
}

// A client that leaves while its command is on its way to the home: the proxy session's close
// must not overtake the command (which would then open a session nobody closes).
TEST_F(ThreeNodes, AClientThatLeavesMidForwardLeavesNoProxySession) {
  constexpr int kClients = 8;
  const std::string k = "{" + KeyAt(1, "t") + "}";  // keys of one slot, homed at node 1
  std::vector<std::string> mset = {"MSET"};
  for (int i = 0; i < 100000; i++) {
    mset.push_back(k + std::to_string(i));
    mset.push_back("v");
  }
  std::vector<std::string_view> args(mset.begin(), mset.end());
  const uint64_t before = nodes_[1]->stats().proxied.load();
  for (int c = 0; c < kClients; c++) {
    Session s(engines_[0].get(), 0);
    s.set_reply_sink([](uint64_t, std::string) {});
    std::string out;
    EXPECT_FALSE(s.Execute(args, &out));  // sent; the session ends at once
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (nodes_[1]->stats().proxied.load() < before + kClients &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(nodes_[1]->stats().proxied.load(), before + kClients);
  // Every close follows its command's answer.
  const auto closed_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (nodes_[1]->stats().proxy_sessions.load() > 0 &&
         std::chrono::steady_clock::now() < closed_by) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(nodes_[1]->stats().proxy_sessions.load(), 0u);
}

// A part too large for one forwarded request is refused at the client's node, not reported as
// an unreachable home.
TEST_F(ThreeNodes, ACommandTooLargeToForwardIsRefusedNotClusterDown) {
  Session s(engines_[0].get(), 0);
  std::vector<std::string> pfcount = {"PFCOUNT"};
  for (int n = 0; pfcount.size() <= (size_t{1} << 19) + 1; n++) {
    std::string k = "p" + std::to_string(n);
    if (HomeOf(k) == 1) pfcount.push_back(std::move(k));
  }
  EXPECT_THAT(Do(s, pfcount), ErrStartsWith("ERR the command is too large to send"));
  EXPECT_THAT(Do(s, {"PFCOUNT", pfcount[1], pfcount[2]}), IsInt(0));  // still serving
}

// After an aborted transaction (DISCARD, then EXECABORT), a new WATCH still guards its EXEC.
TEST_F(ThreeNodes, AWatchAfterAnAbortedTransactionStillGuardsTheExec) {
  Session s(engines_[0].get(), 0), other(engines_[2].get(), 0);
  const std::string k = KeyAt(1);
  EXPECT_THAT(Do(s, {"WATCH", k}), IsOk());
  EXPECT_THAT(Do(s, {"MULTI"}), IsOk());
  EXPECT_THAT(Do(s, {"DISCARD"}), IsOk());
  EXPECT_THAT(Do(s, {"MULTI"}), IsOk());
  EXPECT_THAT(Do(s, {"SET", k, "x"}), IsSimple("QUEUED"));
  EXPECT_THAT(Do(s, {"NOSUCHCOMMAND"}), ErrStartsWith("ERR unknown command"));
  EXPECT_THAT(Do(s, {"EXEC"}), ErrStartsWith("EXECABORT"));

  EXPECT_THAT(Do(s, {"WATCH", k}), IsOk());
  EXPECT_THAT(Do(other, {"SET", k, "theirs"}), IsOk());
  EXPECT_THAT(Do(s, {"MULTI"}), IsOk());
  EXPECT_THAT(Do(s, {"SET", k, "mine"}), IsSimple("QUEUED"));
  EXPECT_THAT(Do(s, {"EXEC"}), IsNil());
  EXPECT_THAT(Do(s, {"GET", k}), IsBulk("theirs"));
}

}  // namespace
}  // namespace floe::server
