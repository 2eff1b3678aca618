// Hostile tests of commands through any node of a cluster (routing.cc, cluster_node.cc): three
// Engines with a ClusterNode each, on loopback, in one process. Each test names the defect it
// pins down.

#include <chrono>
#include <thread>

#include "cluster/cluster.h"
#include "server/command_test.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_testing.h"

namespace floe::server {
namespace {

using internal::ClusterNode;

// Three nodes on 127.0.0.1 (internal::InProcessCluster); tests may start them again with other
// settings.
class ThreeNodes : public ::testing::Test {
 protected:
  static constexpr int kNodes = 3;

  void SetUp() override { ASSERT_TRUE(Start(Config())); }
  void TearDown() override { cluster_.reset(); }

  // Starts the three nodes with `base` as every node's configuration (plus the cluster
  // settings); false when the cloud did not form.
  bool Start(const Config& base) {
    cluster_.reset();
    cluster_ = std::make_unique<internal::InProcessCluster>(internal::InProcessClusterOptions{
        .members = kNodes, .timeout_ms = timeout_ms_, .base = base, .first_client_port = 6000});
    return cluster_->WaitFormed();
  }

  Engine& engine(size_t i) { return cluster_->engine(i); }
  ClusterNode& node(size_t i) { return cluster_->node(i); }
  int HomeOf(std::string_view key) const { return cluster_->HomeOf(key); }
  std::string KeyAt(int home, const std::string& prefix = "k") const {
    return cluster_->KeyAt(static_cast<size_t>(home), prefix);
  }

  static Reply Do(Session& s, std::vector<std::string> args) {
    return CommandTest::Decode(s.Run(args));
  }

  int64_t timeout_ms_ = 2000;
  std::unique_ptr<internal::InProcessCluster> cluster_;
};

TEST_F(ThreeNodes, EveryNodeAnswersEveryKey) {
  Session s0(&engine(0), 0), s2(&engine(2), 0);
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
      Session s(&engine(t % kNodes), 0);
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
  Session s(&engine(2), 0);
  EXPECT_THAT(Do(s, {"GET", counter}), IsBulk(std::to_string(kThreads * kRounds)));
}

// A cluster whose nodes require a password: the client authenticated at its node, and the
// proxy session at the home runs its commands (it answered NOAUTH to every forwarded command).
TEST_F(ThreeNodes, AForwardedCommandNeedsNoSecondAuth) {
  TearDown();
  Config c;
  c.requirepass = "pw";
  ASSERT_TRUE(Start(c));
  Session s(&engine(0), 0);
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
  Session s(&engine(0), 0);
  const std::string k0 = KeyAt(0, "h"), k2 = KeyAt(2, "h");
  EXPECT_THAT(Do(s, {"PFADD", k0, "a"}), IsInt(1));
  EXPECT_THAT(Do(s, {"PFADD", k2, "b"}), IsInt(1));
  EXPECT_THAT(Do(s, {"PFCOUNT", k0, k2}), IsInt(2));
  node(2).Stop();
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
    auto a = std::make_unique<Session>(&engine(0), 0);
    auto a2 = std::make_unique<Session>(&engine(0), 0);
    old_id = a->id();
    EXPECT_THAT(Do(*a, {"WATCH", k}), IsOk());
    EXPECT_THAT(Do(*a2, {"GET", k}), IsNil());
    EXPECT_EQ(node(1).stats().proxy_sessions.load(), 2u);
    // Its clients' sessions end with it, without a word to the home (as in a kill -9).
    engine(0).set_cluster(nullptr);
    a.reset();
    a2.reset();
    // Node 0 dies: no word reaches the home that its clients left.
    cluster_->Kill(0);
  }
  Session other(&engine(2), 0);
  EXPECT_THAT(Do(other, {"SET", k, "changed"}), IsOk());
  ASSERT_TRUE(cluster_->Start(0).ok());
  ASSERT_TRUE(cluster_->WaitFormed());
  Session b(&engine(0), 0);
  ASSERT_EQ(b.id(), old_id);
  EXPECT_THAT(Do(b, {"MULTI"}), IsOk());
  EXPECT_THAT(Do(b, {"SET", k, "mine"}), IsSimple("QUEUED"));
  EXPECT_THAT(Do(b, {"EXEC"}), IsArrayOfSize(1));
  EXPECT_THAT(Do(b, {"GET", k}), IsBulk("mine"));
  // The sessions of the node's previous life are gone (they counted toward maxclients): left
  // are those of `other` and `b`.
  EXPECT_EQ(node(1).stats().proxy_sessions.load(), 2u);
}

// A home slower than cluster-node-timeout: the client got CLUSTERDOWN for its EXEC and went on
// while the EXEC still waited at the home. Its next command ran in the same proxy session at
// once, inside that unfinished MULTI: a GET answered QUEUED and joined the transaction. A
// client's requests now run one after the other at the home.
TEST_F(ThreeNodes, ACommandAfterATimedOutExecDoesNotJoinTheTransaction) {
  TearDown();
  timeout_ms_ = 300;
  ASSERT_TRUE(Start(Config()));
  Session s(&engine(0), 0);
  const std::string k = KeyAt(1);
  EXPECT_THAT(Do(s, {"SET", k, "old"}), IsOk());
  // The home's I/O thread holds its lock: the EXEC (exclusive: it needs every lock) waits.
  Mutex& io_lock = engine(1).worker_lock(0);
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
  Session a1(&engine(0), 0), a2(&engine(0), 0), b(&engine(2), 0);
  EXPECT_THAT(Do(a1, {"GET", k}), IsNil());
  EXPECT_THAT(Do(a2, {"GET", k}), IsNil());
  EXPECT_THAT(Do(b, {"GET", k}), IsNil());  // was "ERR max number of clients reached"
  // A node cannot open more proxy sessions than maxclients.
  Session a3(&engine(0), 0);
  EXPECT_THAT(Do(a3, {"GET", k}), IsErr("ERR max number of clients reached"));
}

// The same for the home's own clients: proxy sessions do not count toward the connections a
// node accepts (it refused every connection once other nodes' clients had maxclients proxies).
TEST(ClusterServerTest, ProxySessionsDoNotCrowdOutConnections) {
  Config c;
  c.maxclients = 1;
  // Member 0 is a server (listener and all), members 1 and 2 bare engines.
  internal::InProcessCluster cluster(
      {.members = 3, .started = 0, .timeout_ms = 2000, .base = c, .first_client_port = 6000});
  Config sc = c;
  sc.bind = "127.0.0.1";
  sc.cluster = cluster.member_list();
  sc.cluster_node_timeout = 2000;
  sc.port = 0;
  sc.threads = 1;
  sc.cluster_port = cluster.cluster_port(0);
  sc.dir = cluster.data_dir();
  Server server(sc);
  std::thread run([&] { EXPECT_TRUE(server.Run().ok()); });
  ASSERT_TRUE(cluster.Start(1).ok());
  ASSERT_TRUE(cluster.Start(2).ok());
  ClusterNode* nodes[2] = {&cluster.node(1), &cluster.node(2)};
  Engine* engines[2] = {&cluster.engine(1), &cluster.engine(2)};
  // A key homed at the server's node, and its client, proxied there once the server formed.
  std::string k;
  for (int n = 0; k.empty(); n++) {
    const std::string key = "k" + std::to_string(n);
    const net::NodeId home = nodes[0]->map().Home(cluster::KeySlot(key));
    if (home != nodes[0]->self() && home != nodes[1]->self()) k = key;
  }
  {
    Session a(engines[0], 0);
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
  const uint64_t before = node(1).stats().proxied.load();
  for (int c = 0; c < kClients; c++) {
    Session s(&engine(0), 0);
    s.set_reply_sink([](uint64_t, std::string) {});
    std::string out;
    EXPECT_FALSE(s.Execute(args, &out));  // sent; the session ends at once
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (node(1).stats().proxied.load() < before + kClients &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(node(1).stats().proxied.load(), before + kClients);
  // Every close follows its command's answer.
  const auto closed_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (node(1).stats().proxy_sessions.load() > 0 &&
         std::chrono::steady_clock::now() < closed_by) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(node(1).stats().proxy_sessions.load(), 0u);
}

// A part too large for one forwarded request is refused at the client's node, not reported as
// an unreachable home.
TEST_F(ThreeNodes, ACommandTooLargeToForwardIsRefusedNotClusterDown) {
  Session s(&engine(0), 0);
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
  Session s(&engine(0), 0), other(&engine(2), 0);
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
