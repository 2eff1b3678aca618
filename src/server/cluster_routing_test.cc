// Commands in an in-process cluster: three Engines, each with its ClusterNode on loopback UDP,
// driven through Sessions (a Session without a reply sink waits for forwarded replies itself).
// One test per rule of routing.cc (docs/cluster.md, "Commands through any node").

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <set>
#include <thread>

#include "cluster/cluster.h"
#include "resp/resp.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_testing.h"
#include "server/server.h"

namespace floe::server {
namespace {

using internal::ClusterNode;
using ::testing::HasSubstr;
using ::testing::StartsWith;

using TestCluster = internal::ClientCluster;

std::string Bulk(std::string_view s) {
  return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n";
}

resp::Reply Parse(const std::string& bytes) {
  size_t used = 0;
  Result<resp::Reply> r = resp::ParseReply(bytes, &used);
  EXPECT_TRUE(r.ok()) << bytes;
  EXPECT_EQ(used, bytes.size()) << bytes;
  return r.ok() ? *r : resp::Reply{};
}

// Rule C1: a command on one slot runs at the slot's home, from any node.
TEST(ClusterRoutingTest, C1_KeysOfOneSlotRunAtTheirHome) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  const std::string k = c.KeyAt(1);
  Session& a = c.client(0);
  EXPECT_EQ(a.Run({"SET", k, "v"}), "+OK\r\n");
  EXPECT_EQ(a.Run({"APPEND", k, "w"}), ":2\r\n");
  // Only the home holds it; every node answers it.
  EXPECT_NE(c.engine(1).store().Get(k), nullptr);
  EXPECT_EQ(c.engine(0).store().Get(k), nullptr);
  EXPECT_EQ(c.client(2).Run({"GET", k}), Bulk("vw"));
  EXPECT_EQ(c.client(1).Run({"GET", k}), Bulk("vw"));
  // A transaction on one slot runs whole at its home.
  const std::string t = "{" + c.KeyAt(2, "t") + "}";
  Session& b = c.client(0);
  EXPECT_EQ(b.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(b.Run({"SET", t + "a", "1"}), "+QUEUED\r\n");
  EXPECT_EQ(b.Run({"INCRBY", t + "a", "4"}), "+QUEUED\r\n");
  EXPECT_EQ(b.Run({"MSET", t + "b", "x", t + "c", "y"}), "+QUEUED\r\n");
  EXPECT_EQ(b.Run({"EXEC"}), "*3\r\n+OK\r\n:5\r\n+OK\r\n");
  EXPECT_NE(c.engine(2).store().Get(t + "b"), nullptr);
  EXPECT_EQ(b.Run({"MGET", t + "a", t + "c"}), "*2\r\n" + Bulk("5") + Bulk("y"));
  // A reply in the client's protocol: RESP3 through a node that is not the home.
  Session& r3 = c.client(0);
  EXPECT_THAT(r3.Run({"HELLO", "3"}), StartsWith("%7\r\n"));
  EXPECT_EQ(r3.Run({"GET", c.KeyAt(2, "absent")}), "_\r\n");
  EXPECT_EQ(r3.Run({"INCRBYFLOAT", k + "f", "1.5"}), Bulk("1.5"));
}

// Rule C2: keys on several slots: CROSSSLOT, or split by home for the split commands.
TEST(ClusterRoutingTest, C2_CrossSlotCommandsAreRefusedOrSplit) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  Session& s = c.client(0);
  const std::string k0 = c.KeyAt(0), k1 = c.KeyAt(1), k2 = c.KeyAt(2);
  const std::string cross = "-CROSSSLOT Keys in request don't hash to the same slot\r\n";
  EXPECT_EQ(s.Run({"MSET", k0, "a", k1, "b"}), cross);
  EXPECT_EQ(s.Run({"RENAME", k0, k1}), cross);
  EXPECT_EQ(s.Run({"PFMERGE", k0, k1}), cross);
  EXPECT_EQ(s.Run({"SET", k0, "a"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"SET", k2, "c"}), "+OK\r\n");
  // MGET keeps the order of its keys, whichever node holds each.
  EXPECT_EQ(s.Run({"MGET", k2, k1, k0, k2}),
            "*4\r\n" + Bulk("c") + "$-1\r\n" + Bulk("a") + Bulk("c"));
  EXPECT_EQ(s.Run({"EXISTS", k0, k1, k2, k2}), ":3\r\n");
  EXPECT_EQ(s.Run({"TOUCH", k0, k1, k2}), ":2\r\n");
  // PFCOUNT of keys on several nodes is the union's count, as at one node.
  const std::string h0 = c.KeyAt(0, "h"), h1 = c.KeyAt(1, "h");
  EXPECT_EQ(s.Run({"PFADD", h0, "a", "b", "c"}), ":1\r\n");
  EXPECT_EQ(s.Run({"PFADD", h1, "c", "d"}), ":1\r\n");
  EXPECT_EQ(s.Run({"PFCOUNT", h0, h1, k1}), ":4\r\n");
  EXPECT_EQ(s.Run({"PFCOUNT", h0, k2}),
            "-WRONGTYPE Key is not a valid HyperLogLog string value.\r\n");
  EXPECT_EQ(s.Run({"DEL", k0, k1, k2, h0, h1}), ":4\r\n");
  EXPECT_EQ(s.Run({"EXISTS", k0, k2}), ":0\r\n");
  // Inside MULTI a command whose own keys span slots is refused when queued.
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"MSET", k0, "a", k1, "b"}), cross);
  EXPECT_EQ(s.Run({"EXEC"}), "-EXECABORT Transaction discarded because of previous errors.\r\n");
  // Queued commands on different slots: EXEC answers CROSSSLOT and runs nothing.
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"SET", k0, "a"}), "+QUEUED\r\n");
  EXPECT_EQ(s.Run({"SET", k1, "b"}), "+QUEUED\r\n");
  EXPECT_EQ(s.Run({"EXEC"}), cross);
  EXPECT_EQ(s.Run({"EXISTS", k0, k1}), ":0\r\n");
}

// Rule C2 for the commands that ask every node, and the SCAN cursor that moves across them.
TEST(ClusterRoutingTest, C2_KeyspaceCommandsAskEveryNode) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  Session& s = c.client(1);
  std::set<std::string> keys;
  for (int i = 0; i < 200; i++) {
    keys.insert("key:" + std::to_string(i));
    EXPECT_EQ(s.Run({"SET", "key:" + std::to_string(i), "v"}), "+OK\r\n");
  }
  for (size_t i = 0; i < 3; i++) EXPECT_GT(c.engine(i).store().Size(), 20u);
  EXPECT_EQ(s.Run({"DBSIZE"}), ":200\r\n");
  resp::Reply all = Parse(c.client(2).Run({"KEYS", "key:1*"}));
  EXPECT_EQ(all.elements.size(), 111u);  // 1, 10-19, 100-199
  std::set<std::string> seen;
  std::string cursor = "0";
  int calls = 0;
  do {
    resp::Reply r = Parse(s.Run({"SCAN", cursor, "COUNT", "7"}));
    ASSERT_EQ(r.elements.size(), 2u);
    cursor = r.elements[0].str;
    for (const auto& e : r.elements[1].elements) seen.insert(e.str);
  } while (cursor != "0" && ++calls < 10000);
  EXPECT_EQ(seen, keys);
  // A cursor no member has ends the scan, as a Redis cursor past its table; options are checked.
  EXPECT_EQ(s.Run({"SCAN", "1023"}), "*2\r\n$1\r\n0\r\n*0\r\n");
  EXPECT_EQ(s.Run({"SCAN", "-1", "COUNT", "0"}), "-ERR syntax error\r\n");
  EXPECT_EQ(s.Run({"SCAN", "x"}), "-ERR invalid cursor\r\n");
  resp::Reply random = Parse(s.Run({"RANDOMKEY"}));
  EXPECT_EQ(keys.count(random.str), 1u);
  EXPECT_EQ(s.Run({"FLUSHALL"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"DBSIZE"}), ":0\r\n");
  EXPECT_EQ(s.Run({"RANDOMKEY"}), "$-1\r\n");
}

// Rule C4: a home that does not answer gives CLUSTERDOWN by the deadline; the others serve.
TEST(ClusterRoutingTest, C4_AnUnreachableHomeGivesClusterDown) {
  TestCluster c(3, -1, /*timeout_ms=*/500);
  ASSERT_TRUE(c.WaitFormed());
  const std::string k1 = c.KeyAt(1), k2 = c.KeyAt(2);
  Session& s = c.client(0);
  EXPECT_EQ(s.Run({"SET", k1, "a"}), "+OK\r\n");
  c.node(1).Stop();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(s.Run({"GET", k1}), StartsWith("-CLUSTERDOWN The node 127.0.0.1:"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(s.Run({"SET", k2, "b"}), "+OK\r\n");
  EXPECT_EQ(c.client(2).Run({"GET", k2}), Bulk("b"));
  EXPECT_THAT(s.Run({"MGET", k2, k1}), StartsWith("-CLUSTERDOWN"));
}

// Rule C5: before the cloud forms, keys are refused with the reason; the rest works.
TEST(ClusterRoutingTest, C5_KeysWaitForFormation) {
  TestCluster c(3, /*started=*/2);
  Session& s = c.client(0);
  EXPECT_THAT(s.Run({"GET", "a"}),
              StartsWith("-CLUSTERDOWN The cluster is not formed: 127.0.0.1:"));
  EXPECT_THAT(s.Run({"GET", "a"}), HasSubstr(": no answer"));
  EXPECT_THAT(s.Run({"DBSIZE"}), StartsWith("-CLUSTERDOWN The cluster is not formed"));
  EXPECT_EQ(s.Run({"PING"}), "+PONG\r\n");
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"SET", "a", "1"}), "+QUEUED\r\n");
  EXPECT_THAT(s.Run({"EXEC"}), StartsWith("-CLUSTERDOWN The cluster is not formed"));
}

// docs/membership.md, "Routing from the agreed table" (rule M5, finding (2)): a restarted
// member whose log cannot catch up with a leader (here: nobody leads, the others' Raft is
// stopped while they still answer HELLO) has formed, yet serves no key, neither to its own
// clients nor to a peer's proxy session: it does not route by the balanced map meanwhile.
TEST(ClusterRoutingTest, AMemberServesNoKeyUntilItCaughtUpWithTheLeader) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  const std::string mine = c.KeyAt(2, "mine");
  {
    Session first(&c.engine(2), 0);  // gone before member 2's engine is
    EXPECT_EQ(first.Run({"SET", mine, "1"}), "+OK\r\n");
  }
  c.Kill(2);
  c.node(0).TEST_meta()->Stop();
  c.node(1).TEST_meta()->Stop();
  ASSERT_TRUE(c.Start(2).ok());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!c.node(2).formed() || c.node(2).meta() == nullptr) {
    ASSERT_LT(std::chrono::steady_clock::now(), until) << "member 2 did not form";
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_FALSE(c.node(2).meta_caught_up());
  EXPECT_FALSE(c.node(2).serving());
  Session& s = c.client(2);
  EXPECT_EQ(s.Run({"SET", mine, "2"}), "-CLUSTERDOWN The cluster is down\r\n");
  EXPECT_EQ(s.Run({"GET", c.KeyAt(0, "theirs")}), "-CLUSTERDOWN The cluster is down\r\n");
  EXPECT_EQ(s.Run({"DBSIZE"}), "-CLUSTERDOWN The cluster is down\r\n");
  EXPECT_EQ(s.Run({"PING"}), "+PONG\r\n");
  // A peer's proxy session at member 2 refuses its key too.
  EXPECT_EQ(c.client(0).Run({"SET", mine, "3"}), "-CLUSTERDOWN The cluster is down\r\n");
  EXPECT_EQ(c.engine(2).store().Get(mine), nullptr);
}

// The same for a member whose Raft failed to start at formation (its port taken after the
// start's check): it refuses keys for good and says why, rather than routing by the balanced
// map while the others follow the agreed table.
TEST(ClusterRoutingTest, AMemberWhoseRaftFailedToStartServesNoKey) {
  TestCluster c(2, /*started=*/1);
  // Member 0's Raft port (its cluster port + 1), taken before the cloud forms.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(c.cluster_port(0) + 1));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
  ASSERT_EQ(listen(fd, 1), 0);
  ASSERT_TRUE(c.Start(1).ok());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!c.node(0).formed() || c.node(0).meta_off().empty()) {
    ASSERT_LT(std::chrono::steady_clock::now(), until) << "member 0 did not form";
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_THAT(c.node(0).meta_off(), HasSubstr("cannot start the agreed metadata"));
  EXPECT_FALSE(c.node(0).serving());
  EXPECT_EQ(c.client(0).Run({"SET", c.KeyAt(0), "1"}), "-CLUSTERDOWN The cluster is down\r\n");
  close(fd);
}

// Rule M5, findings (1) and (4): the cluster id a member's directory file records is compared
// with the one its log holds, read from the log itself before the first HELLO. Here every
// member's file was replaced by another id while they were down, so HELLO would agree (every
// file says the same) and only the logs know better: each member refuses to start, naming both
// ids, and leaves the file as it was. A member whose file is missing takes the log's id.
TEST(ClusterRoutingTest, AClusterIdFileThatDisagreesWithTheLogIsRefusedNamingBoth) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  const std::string logged = c.node(0).TEST_meta()->table()->cluster_id().ToString();
  std::vector<std::string> files;
  for (size_t i = 0; i < 3; i++) {
    const std::string file =
        c.data_dir() + "/127.0.0.1-" + std::to_string(c.cluster_port(i)) + "/cluster-id";
    ASSERT_TRUE(floe::testing::WaitFor([&] { return std::filesystem::exists(file); })) << file;
    files.push_back(file);
  }
  for (size_t i = 0; i < 3; i++) c.Kill(i);
  const std::string other = cluster::ClusterId::Random().ToString();
  for (const std::string& file : files) {
    std::FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs((other + "\n").c_str(), f);
    std::fclose(f);
  }
  for (size_t i = 0; i < 3; i++) {
    const Status st = c.Start(i);
    EXPECT_THAT(st.ToString(), HasSubstr("the cluster id in " + files[i] + " is " + other +
                                         ", but its log holds " + logged));
    std::FILE* f = std::fopen(files[i].c_str(), "r");
    ASSERT_NE(f, nullptr);
    char buf[64] = {};
    ASSERT_NE(std::fgets(buf, sizeof(buf), f), nullptr);
    std::fclose(f);
    EXPECT_EQ(std::string(buf), other + "\n");
  }
  // Without the file, the id is the log's: the members form again under it, and the file is
  // written anew from the log.
  for (const std::string& file : files) std::filesystem::remove(file);
  for (size_t i = 0; i < 3; i++) ASSERT_TRUE(c.Start(i).ok());
  ASSERT_TRUE(c.WaitFormed());
  for (size_t i = 0; i < 3; i++) {
    EXPECT_EQ(c.node(i).TEST_meta()->table()->cluster_id().ToString(), logged);
    EXPECT_TRUE(c.node(i).meta_off().empty());
  }
}

// Rule C6: WATCH holds at the home of its slot; a transaction must stay on that slot.
TEST(ClusterRoutingTest, C6_WatchLivesAtTheHomeOfItsSlot) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  const std::string w = c.KeyAt(1, "w"), other = c.KeyAt(2, "o");
  Session& s = c.client(0);
  Session& writer = c.client(2);
  // A write through another node between WATCH and EXEC aborts the transaction.
  EXPECT_EQ(s.Run({"WATCH", w}), "+OK\r\n");
  EXPECT_EQ(writer.Run({"SET", w, "x"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"SET", w, "mine"}), "+QUEUED\r\n");
  EXPECT_EQ(s.Run({"EXEC"}), "*-1\r\n");
  EXPECT_EQ(s.Run({"GET", w}), Bulk("x"));
  // Untouched: it commits.
  EXPECT_EQ(s.Run({"WATCH", w}), "+OK\r\n");
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"SET", w, "mine"}), "+QUEUED\r\n");
  EXPECT_EQ(s.Run({"EXEC"}), "*1\r\n+OK\r\n");
  // Watched and written keys on different slots: CROSSSLOT, and the watch is gone after.
  EXPECT_EQ(s.Run({"WATCH", w}), "+OK\r\n");
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"SET", other, "1"}), "+QUEUED\r\n");
  EXPECT_EQ(s.Run({"EXEC"}), "-CROSSSLOT Keys in request don't hash to the same slot\r\n");
  EXPECT_EQ(writer.Run({"SET", w, "y"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"SET", w, "z"}), "+QUEUED\r\n");
  EXPECT_EQ(s.Run({"EXEC"}), "*1\r\n+OK\r\n");  // the old watch was dropped at the home
  // DISCARD outside MULTI is an error and keeps the watch (found by the differential test).
  EXPECT_EQ(s.Run({"WATCH", w}), "+OK\r\n");
  EXPECT_EQ(s.Run({"DISCARD"}), "-ERR DISCARD without MULTI\r\n");
  EXPECT_EQ(writer.Run({"SET", w, "q"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"EXEC"}), "*-1\r\n");
  // UNWATCH of a remote watch: a later write does not abort the next transaction.
  EXPECT_EQ(s.Run({"WATCH", w}), "+OK\r\n");
  EXPECT_EQ(s.Run({"UNWATCH"}), "+OK\r\n");
  EXPECT_EQ(writer.Run({"SET", w, "y"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"INCR", w + "n"}), "+QUEUED\r\n");  // any slot: nothing is watched
  EXPECT_THAT(s.Run({"EXEC"}), StartsWith("*1\r\n"));
}

// Rule C6: a home that lost the client's WATCHes (it restarted, or dropped the idle proxy
// session) cannot check them any more: the EXEC aborts rather than commit unguarded.
TEST(ClusterRoutingTest, C6_WatchesLostAtTheHomeAbortTheExec) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  const std::string w = c.KeyAt(1, "w");
  Session& s = c.client(0);
  EXPECT_EQ(s.Run({"WATCH", w}), "+OK\r\n");
  c.node(1).TEST_DropProxySessions();
  EXPECT_EQ(s.Run({"GET", w}), "$-1\r\n");  // a new proxy session, without the watch
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"SET", w, "x"}), "+QUEUED\r\n");
  EXPECT_EQ(s.Run({"EXEC"}), "*-1\r\n");
  EXPECT_EQ(s.Run({"GET", w}), "$-1\r\n");
  // The next transaction, with no WATCH, commits.
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"SET", w, "y"}), "+QUEUED\r\n");
  EXPECT_EQ(s.Run({"EXEC"}), "*1\r\n+OK\r\n");
}

TEST(ClusterRoutingTest, ProxySessionsCloseWithTheirClient) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  const std::string k = c.KeyAt(1);
  {
    Session s(&c.engine(0), 0);
    EXPECT_EQ(s.Run({"SET", k, "v"}), "+OK\r\n");
    EXPECT_EQ(c.node(1).stats().proxy_sessions.load(), 1u);
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (c.node(1).stats().proxy_sessions.load() != 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(c.node(1).stats().proxy_sessions.load(), 0u);
}

// CLIENT KILL of a proxy session at the home drops it (it answered 1 and left it running): the
// client's next request gets a new session, and a transaction that relied on its WATCH aborts.
TEST(ClusterRoutingTest, ClientKillOfAProxySessionDropsIt) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  const std::string k = c.KeyAt(1);
  Session s(&c.engine(0), 0);
  EXPECT_EQ(s.Run({"WATCH", k}), "+OK\r\n");
  ASSERT_EQ(c.node(1).stats().proxy_sessions.load(), 1u);
  Session home(&c.engine(1), 0);
  const std::string list = home.Run({"CLIENT", "LIST"});
  const size_t at = list.find("addr=node");
  ASSERT_NE(at, std::string::npos) << list;
  const size_t id_at = list.rfind("id=", at);
  const std::string id = list.substr(id_at + 3, list.find(' ', id_at) - id_at - 3);
  EXPECT_EQ(home.Run({"CLIENT", "KILL", "ID", id}), ":1\r\n");
  EXPECT_EQ(c.node(1).stats().proxy_sessions.load(), 0u);
  EXPECT_EQ(s.Run({"MULTI"}), "+OK\r\n");
  EXPECT_EQ(s.Run({"SET", k, "v"}), "+QUEUED\r\n");
  EXPECT_EQ(s.Run({"EXEC"}), "*-1\r\n");  // the WATCH went with the session
  EXPECT_EQ(s.Run({"GET", k}), "$-1\r\n");
}

// Proposes `change` through whichever member leads the agreed metadata (retried while the
// leadership moves); the table's verdict.
Status ProposeOnLeader(TestCluster& c, const cluster::Change& change) {
  Status st = Status::Unavailable("no leader");
  for (int attempt = 0; attempt < 200; attempt++) {
    for (size_t i = 0; i < 3; i++) {
      cluster::Meta* meta = c.node(i).TEST_meta();
      if (meta == nullptr || !meta->raft().leader) continue;
      std::promise<Status> p;
      meta->Propose(change, [&p](Status s) { p.set_value(s); });
      st = p.get_future().get();
      if (st.ok() || st.message().find("leader") == std::string_view::npos) return st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return st;
}

// docs/membership.md, step 1: once a member has applied the agreed table, routing, the DKV's
// homes and CLUSTER SLOTS read its owners. A committed table that gives two slots of member 0
// to member 1 is followed by every member; for the one whose key member 0 held, the guard
// counts it, keeps the key there and serves it from nobody.
TEST(ClusterRoutingTest, RoutingFollowsTheAgreedTable) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (size_t i = 0; i < 3; i++) {
    while (c.node(i).TEST_meta() == nullptr || c.node(i).TEST_meta()->table()->epoch() < 1) {
      ASSERT_LT(std::chrono::steady_clock::now(), until) << "member " << i << " has no table";
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  const std::string moved = c.KeyAt(0, "moved");
  std::string kept = c.KeyAt(0, "kept");
  for (int n = 0; cluster::KeySlot(kept) == cluster::KeySlot(moved); n++) {
    kept = c.KeyAt(0, "kept" + std::to_string(n) + "-");
  }
  const uint16_t slot = cluster::KeySlot(moved), kept_slot = cluster::KeySlot(kept);
  EXPECT_EQ(c.client(2).Run({"SET", kept, "here"}), "+OK\r\n");
  ASSERT_TRUE(c.engine(0).store().Get(kept));
  const net::NodeId to = c.node(1).self();

  cluster::Change begin{.kind = cluster::Change::Kind::kBeginMove};
  begin.slots = {{.slot = slot, .version = 1, .node = to},
                 {.slot = kept_slot, .version = 1, .node = to}};
  ASSERT_TRUE(ProposeOnLeader(c, begin).ok());
  cluster::Change commit{.kind = cluster::Change::Kind::kCommitMove};
  commit.slots = {{.slot = slot, .version = 2}, {.slot = kept_slot, .version = 2}};
  ASSERT_TRUE(ProposeOnLeader(c, commit).ok());
  for (size_t i = 0; i < 3; i++) {
    while (c.node(i).Home(slot) != to || c.node(i).Home(kept_slot) != to) {
      ASSERT_LT(std::chrono::steady_clock::now(), until) << "member " << i << " did not follow";
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    // The member list's balanced map still says member 0: routing reads the table.
    EXPECT_EQ(c.node(i).cluster().map().Home(slot), c.node(0).self());
    EXPECT_EQ(c.node(i).map().Home(slot), to);
  }

  // A write through member 2 and one through member 0 (the old owner) land at member 1.
  EXPECT_EQ(c.client(2).Run({"SET", moved, "v"}), "+OK\r\n");
  EXPECT_TRUE(c.engine(1).store().Get(moved));
  EXPECT_FALSE(c.engine(0).store().Get(moved));
  EXPECT_EQ(c.client(0).Run({"APPEND", moved, "w"}), ":2\r\n");
  EXPECT_EQ(c.client(0).Run({"GET", moved}), Bulk("vw"));

  // CLUSTER SLOTS, at every member, names member 1 (client port 20001) for the slot alone.
  for (size_t i = 0; i < 3; i++) {
    const resp::Reply r = Parse(c.client(i).Run({"CLUSTER", "SLOTS"}));
    bool found = false;
    for (const resp::Reply& range : r.elements) {
      ASSERT_GE(range.elements.size(), 3u);
      if (range.elements[0].integer <= slot && slot <= range.elements[1].integer) {
        found = true;
        EXPECT_EQ(range.elements[0].integer, slot) << r.ToString();
        EXPECT_EQ(range.elements[1].integer, slot) << r.ToString();
        EXPECT_EQ(range.elements[2].elements[1].integer, 20001) << r.ToString();
      }
    }
    EXPECT_TRUE(found) << r.ToString();
  }

  // The guard: the key member 0 held is still there, counted, and served by nobody (its new
  // owner has no copy; no member routes the slot to member 0 any more).
  EXPECT_TRUE(floe::testing::WaitFor([&] { return c.node(0).slots_given_away_with_keys() == 1; }))
      << c.node(0).slots_given_away_with_keys();
  EXPECT_EQ(c.node(1).slots_given_away_with_keys(), 0u);
  EXPECT_TRUE(c.engine(0).store().Get(kept));
  for (size_t i = 0; i < 3; i++) EXPECT_EQ(c.client(i).Run({"GET", kept}), "$-1\r\n") << i;
}

// ProposeOnLeader that waits at most 20 s for the verdict (a Raft thread held up never gives
// it): Timeout then.
Status ProposeOnLeaderWithin(TestCluster& c, const cluster::Change& change) {
  Status st = Status::Unavailable("no leader");
  for (int attempt = 0; attempt < 200; attempt++) {
    for (size_t i = 0; i < 3; i++) {
      cluster::Meta* meta = c.node(i).TEST_meta();
      if (meta == nullptr || !meta->raft().leader) continue;
      auto p = std::make_shared<std::promise<Status>>();
      std::future<Status> verdict = p->get_future();
      meta->Propose(change, [p](Status s) { p->set_value(s); });
      if (verdict.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
        return Status::Timeout("no verdict within 20 s");
      }
      st = verdict.get();
      if (st.ok() || st.message().find("leader") == std::string_view::npos) return st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return st;
}

// Rule M5, finding (5): the guard's count of the keys a published table gave away walks the
// whole store, so it runs on the node's guard thread: while a count is held up there, member 0's
// Raft thread still applies the log's next entries.
TEST(ClusterRoutingTest, TheGuardCountsKeysOffTheRaftThread) {
  TestCluster c;
  ASSERT_TRUE(c.WaitFormed());
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  // Released on every way out, so the guard thread can be joined.
  struct Releaser {
    std::promise<void>* p;
    bool done = false;
    void Release() {
      if (!done) p->set_value();
      done = true;
    }
    ~Releaser() { Release(); }
  } releaser{&release};
  std::atomic<int> counts{0};
  c.node(0).TEST_SetGuardHook([&counts, released] {
    counts++;
    released.wait();
  });
  const std::string kept = c.KeyAt(0, "kept");
  const uint16_t slot = cluster::KeySlot(kept);
  EXPECT_EQ(c.client(0).Run({"SET", kept, "here"}), "+OK\r\n");
  const net::NodeId to = c.node(1).self();
  cluster::Change begin{.kind = cluster::Change::Kind::kBeginMove};
  begin.slots = {{.slot = slot, .version = 1, .node = to}};
  ASSERT_TRUE(ProposeOnLeader(c, begin).ok());
  cluster::Change commit{.kind = cluster::Change::Kind::kCommitMove};
  commit.slots = {{.slot = slot, .version = 2}};
  ASSERT_TRUE(ProposeOnLeaderWithin(c, commit).ok());
  // Member 0 published the map that gives the slot away; its count is held up.
  ASSERT_TRUE(floe::testing::WaitFor([&] { return counts.load() == 1; }));
  EXPECT_EQ(c.node(0).Home(slot), to);
  // The next entry still applies at member 0.
  const uint64_t epoch = c.node(0).TEST_meta()->table()->epoch();
  cluster::Change pause{.kind = cluster::Change::Kind::kPausePlanner, .flag = true};
  ASSERT_TRUE(ProposeOnLeaderWithin(c, pause).ok());
  EXPECT_TRUE(floe::testing::WaitFor([&] {
    return c.node(0).TEST_meta()->table()->epoch() > epoch &&
           c.node(0).TEST_meta()->table()->planner_paused();
  })) << "member 0's Raft thread is held up by the count";
  EXPECT_EQ(c.node(0).slots_given_away_with_keys(), 0u);
  releaser.Release();
  EXPECT_TRUE(floe::testing::WaitFor([&] { return c.node(0).slots_given_away_with_keys() == 1; }));
}

TEST(ForwardCodecTest, CopiesRoundTripAndBadIndicesAreRefused) {
  internal::ForwardRequest req{.origin = 1,
                               .client = 2,
                               .seq = 3,
                               .protocol = 2,
                               .commands = {{"GET", "a"}, {"SET", "b", "1"}, {"GET", "b"}},
                               .copies = {0, 2}};
  const std::string bytes = internal::EncodeForward(req);
  Result<internal::ForwardRequest> back = internal::DecodeForward(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->copies, (std::vector<uint32_t>{0, 2}));
  for (size_t n = 0; n < bytes.size(); n++) {
    EXPECT_FALSE(internal::DecodeForward(bytes.substr(0, n)).ok()) << n;
  }
  // Out of range, repeated, out of order, or more indices than commands.
  for (std::vector<uint32_t> bad : std::vector<std::vector<uint32_t>>{{3}, {1, 1}, {2, 0}}) {
    req.copies = bad;
    EXPECT_FALSE(internal::DecodeForward(internal::EncodeForward(req)).ok()) << bad[0];
  }
  req.copies = {0, 1, 2};
  std::string more = internal::EncodeForward(req);
  more[more.size() - 4] = 4;  // the count: 4 indices for 3 commands
  EXPECT_FALSE(internal::DecodeForward(more).ok());
}

// Rule C9: the commands that continue an entry (docs/wire.md, flags bit 2).
TEST(ForwardCodecTest, ContinuationsRoundTripAndBadIndicesAreRefused) {
  internal::ForwardRequest req{
      .origin = 1,
      .client = 2,
      .seq = 3,
      .protocol = 2,
      .commands = {{"TYPE", "a"}, {"HLL.EXPORT", "a"}, {"GET", "b"}, {"MULTI"}, {"EXEC"}},
      .copies = {2},
      .continues = {1, 4}};
  const std::string bytes = internal::EncodeForward(req);
  Result<internal::ForwardRequest> back = internal::DecodeForward(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->continues, (std::vector<uint32_t>{1, 4}));
  EXPECT_EQ(back->copies, (std::vector<uint32_t>{2}));
  for (size_t n = 0; n < bytes.size(); n++) {
    EXPECT_FALSE(internal::DecodeForward(bytes.substr(0, n)).ok()) << n;
  }
  // The first command begins an entry; out of range, repeated or out of order.
  for (std::vector<uint32_t> bad : std::vector<std::vector<uint32_t>>{{0}, {5}, {2, 2}, {3, 1}}) {
    req.continues = bad;
    EXPECT_FALSE(internal::DecodeForward(internal::EncodeForward(req)).ok()) << bad[0];
  }
  // As many as the commands: the first cannot continue anything.
  req.continues = {1, 2, 3, 4};
  std::string more = internal::EncodeForward(req);
  more[more.size() - 5] = 5;  // the count
  EXPECT_FALSE(internal::DecodeForward(more).ok());
}

TEST(ForwardCodecTest, RoundTripsAndRefusesLies) {
  internal::ForwardRequest req{.origin = 0x1234567890abcdefull,
                               .client = 77,
                               .seq = 300,
                               .sent_us = 123456789,
                               .protocol = 3,
                               .watching = true,
                               .commands = {{"MULTI"}, {"SET", "k", std::string(300, 'x')}}};
  const std::string bytes = internal::EncodeForward(req);
  Result<internal::ForwardRequest> back = internal::DecodeForward(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->origin, req.origin);
  EXPECT_EQ(back->client, 77u);
  EXPECT_EQ(back->seq, 300u);
  EXPECT_EQ(back->sent_us, 123456789u);
  EXPECT_EQ(back->protocol, 3);
  EXPECT_TRUE(back->watching);
  EXPECT_EQ(back->commands, req.commands);
  // Every truncation and a trailing byte are refused.
  for (size_t n = 0; n < bytes.size(); n++) {
    EXPECT_FALSE(internal::DecodeForward(bytes.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(internal::DecodeForward(bytes + "x").ok());
  // A count that claims more commands than the bytes could hold is refused before sizing.
  std::string lie(8, '\0');       // origin
  lie.push_back(1);               // client
  lie.push_back(1);               // seq
  lie.push_back(1);               // sent_us
  lie.push_back(2);               // protocol
  lie.push_back(0);               // flags
  lie += "\xff\xff\xff\xff\x0f";  // 4 billion commands
  EXPECT_FALSE(internal::DecodeForward(lie).ok());
  internal::ForwardRequest bad = req;
  bad.protocol = 4;
  EXPECT_FALSE(internal::DecodeForward(internal::EncodeForward(bad)).ok());
  bad = req;
  bad.commands.clear();
  EXPECT_FALSE(internal::DecodeForward(internal::EncodeForward(bad)).ok());
  bad = req;
  bad.commands.push_back({});
  EXPECT_FALSE(internal::DecodeForward(internal::EncodeForward(bad)).ok());
}

TEST(ForwardCodecTest, FramedRepliesSplitExactly) {
  std::string answer;
  internal::AppendFramedReply("+OK\r\n", &answer);
  internal::AppendFramedReply("", &answer);
  internal::AppendFramedReply("$1\r\nx\r\n", &answer);
  Result<std::vector<std::string>> r = internal::DecodeFramedReplies(answer, 3);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (std::vector<std::string>{"+OK\r\n", "", "$1\r\nx\r\n"}));
  EXPECT_FALSE(internal::DecodeFramedReplies(answer, 2).ok());  // one left over
  EXPECT_FALSE(internal::DecodeFramedReplies(answer, 4).ok());  // one missing
  EXPECT_FALSE(internal::DecodeFramedReplies(answer, size_t{1} << 40).ok());
}

}  // namespace
}  // namespace floe::server
