// Joining a running cluster, the members' side (docs/membership.md, rule J1 and V4): a member
// forwards a JOIN to the Raft leader, which checks it, commits AddMember and adds the node to
// Raft as a learner; a retry is answered with the same member; every member then accepts RPC
// from the new id.

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "cluster/cluster.h"
#include "net/net.h"
#include "rpc/rpc.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_node_impl.h"
#include "server/internal/cluster_testing.h"
#include "server/server.h"
#include "testing/process.h"

namespace floe::server {
namespace {

using internal::ClusterNode;
using ::testing::HasSubstr;

Result<std::string> Join(ClusterNode& at, const cluster::JoinRequest& request) {
  std::promise<Result<std::string>> p;
  at.TEST_Join(cluster::EncodeJoinRequest(request),
               [&p](Result<std::string> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

// Starts `config`'s node (which joins as member 4), waits until it serves (its log is then
// written, so its directory is a joined member's), and stops it.
Status StartAsMemberFour(const Config& config) {
  Engine engine(config, 1);
  Result<std::unique_ptr<ClusterNode>> node = ClusterNode::Start(&engine, config, 20099);
  if (!node.ok()) return node.status();
  EXPECT_EQ((*node)->self(), 4u);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!(*node)->serving() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE((*node)->serving());
  (*node)->Stop();
  engine.set_cluster(nullptr);
  return Status::OK();
}

// The config of a node that joins `c` through a member that does not lead (what `--join` sets),
// its data in `dir`, on a free cluster port.
Config JoinerConfig(internal::InProcessCluster& c, const std::string& dir) {
  return internal::JoinerConfig(c, dir, floe::testing::FreeClusterPort());
}

cluster::JoinRequest Request(uint16_t port) {
  cluster::JoinRequest r;
  r.complete = true;
  r.cluster_name = "floe";
  r.host = "127.0.0.1";
  r.port = port;
  r.raft_port = static_cast<uint16_t>(port + 1);
  r.client_port = 6399;
  r.token = 77;
  return r;
}

TEST(ClusterJoinTest, TheLeaderAddsTheNodeOnceAndEveryMemberAcceptsIt) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  const uint16_t port = floe::testing::FreeClusterPort();
  const cluster::JoinRequest request = Request(port);

  // A node with the id the join will give (4), on the joiner's port: before the join, no member
  // answers it (an unknown sender's messages are dropped).
  net::AsioLoop loop;
  Result<std::unique_ptr<net::UdpTcpTransport>> transport = net::UdpTcpTransport::Start(
      loop, net::TransportOptions{.self = 4, .bind_host = "127.0.0.1", .port = port});
  ASSERT_TRUE(transport.ok()) << transport.status().ToString();
  rpc::Options o;
  o.peers = {1, 2, 3};
  for (size_t i = 0; i < 3; i++) {
    (*transport)
        ->SetPeer(net::PeerAddress{
            .id = c.node(i).self(), .host = "127.0.0.1", .port = c.cluster_port(i)});
  }
  rpc::Endpoint joiner(**transport, o);
  joiner.Start();
  // Method 302 answers at every member: the commit index from the leader, "not the leader"
  // from the others. Either means the member heard us; anything else (a timeout, the peer down
  // at our end) that it did not.
  auto heard_by = [&](net::NodeId id) {
    Result<std::string> r = joiner.Call(id, internal::kMetaCommitMethod, "", 300'000);
    return r.ok() || (r.status().code() == StatusCode::kFailedPrecondition &&
                      r.status().message() == "not the leader");
  };
  for (net::NodeId id = 1; id <= 3; id++) EXPECT_FALSE(heard_by(id)) << id;

  const size_t asked = internal::NotTheLeader(c);
  Result<std::string> answer = Join(c.node(asked), request);
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  Result<cluster::JoinAnswer> joined = cluster::DecodeJoinAnswer(*answer);
  ASSERT_TRUE(joined.ok()) << joined.status().ToString();
  EXPECT_EQ(joined->id, 4u);
  ASSERT_EQ(joined->members.size(), 4u);
  EXPECT_EQ(joined->members[3].port, port);
  EXPECT_EQ(joined->members[3].client_port, 6399);
  EXPECT_EQ(joined->cluster_id, c.node(0).meta()->table()->cluster_id());

  // A retry (the answer was lost, or the leader changed) is the same member, added once.
  answer = Join(c.node((asked + 1) % 3), request);
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(cluster::DecodeJoinAnswer(*answer)->id, 4u);
  // A learner in the leader's Raft configuration, once.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (size_t i = 0; i < 3; i++) {
    for (;;) {
      const consensus::State st = c.node(i).meta()->raft();
      const std::shared_ptr<const cluster::Table> t = c.node(i).meta()->table();
      int learners = 0;
      for (const consensus::Server& s : st.configuration) {
        if (s.id == 4 && s.role == consensus::Role::kLearner &&
            s.address == "127.0.0.1:" + std::to_string(port + 1)) {
          learners++;
        }
      }
      if (learners == 1 && t->members().size() == 4) break;
      ASSERT_LT(std::chrono::steady_clock::now(), until) << "member " << i;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  // CLUSTER NODES and INFO at every member list the new member (it owns no slot).
  for (size_t i = 0; i < 3; i++) {
    Session s(&c.engine(i), 0);
    const std::string nodes = s.Run({"CLUSTER", "NODES"});
    EXPECT_THAT(nodes, HasSubstr("127.0.0.1:6399@" + std::to_string(port) + " ")) << nodes;
    EXPECT_THAT(s.Run({"CLUSTER", "INFO"}), HasSubstr("cluster_known_nodes:4\r\n"));
  }
  // Rule V4: every member accepts RPC from the new member now.
  for (net::NodeId id = 1; id <= 3; id++) {
    bool heard = false;
    for (int attempt = 0; attempt < 20 && !heard; attempt++) heard = heard_by(id);
    EXPECT_TRUE(heard) << "member " << id << " does not hear the new member";
  }
  joiner.Stop();
}

// A replayed JOIN (the same request, within its 10 minutes) never runs beside its original:
// a member runs one join at a time and answers a second "retry" before the leader's lookup, at
// the leader and at a member that forwards, so two identical requests at once make one
// AddMember proposal (docs/membership.md J1, "One join at a time per member").
TEST(ClusterJoinTest, TwoIdenticalJoinsAtOnceProposeOneMember) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  size_t leader = 0;
  for (size_t i = 0; i < 3; i++) {
    if (c.node(i).meta()->raft().leader) leader = i;
  }
  const size_t forwarder = internal::NotTheLeader(c);
  ASSERT_NE(leader, forwarder);
  // Summed over the members: a leader change between the two asks moves the proposals.
  auto proposed = [&] {
    uint64_t n = 0;
    for (size_t i = 0; i < 3; i++) n += c.node(i).joins_proposed();
    return n;
  };
  uint64_t token = 500;
  for (const size_t at : {leader, forwarder}) {
    cluster::JoinRequest request = Request(floe::testing::FreeClusterPort());
    request.token = ++token;
    const uint64_t before = proposed();
    std::promise<Result<std::string>> p1, p2;
    const std::string bytes = cluster::EncodeJoinRequest(request);
    c.node(at).TEST_Join(bytes, [&p1](Result<std::string> r) { p1.set_value(std::move(r)); });
    c.node(at).TEST_Join(bytes, [&p2](Result<std::string> r) { p2.set_value(std::move(r)); });
    Result<std::string> first = p1.get_future().get(), second = p2.get_future().get();
    ASSERT_TRUE(first.ok()) << "at " << at << ": " << first.status().ToString();
    Result<cluster::JoinAnswer> joined = cluster::DecodeJoinAnswer(*first);
    ASSERT_TRUE(joined.ok()) << joined.status().ToString();
    if (second.ok()) {
      Result<cluster::JoinAnswer> also = cluster::DecodeJoinAnswer(*second);
      ASSERT_TRUE(also.ok()) << also.status().ToString();
      EXPECT_EQ(also->id, joined->id);
    } else {
      EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status().ToString();
      EXPECT_THAT(std::string(second.status().message()),
                  HasSubstr("the join of this token is in progress here; retry"));
    }
    EXPECT_EQ(proposed() - before, 1u) << "asked at member " << at;
    // Its retry, once the first is answered, is answered as its join, proposing nothing.
    Result<std::string> again = Join(c.node(at), request);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(cluster::DecodeJoinAnswer(*again)->id, joined->id);
    EXPECT_EQ(proposed() - before, 1u) << "asked at member " << at;
  }
  EXPECT_EQ(c.node(leader).meta()->table()->members().size(), 5u);
}

TEST(ClusterJoinTest, EachMismatchIsRefusedNamingIt) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  const size_t asked = internal::NotTheLeader(c);
  // The checks run where the join is decided, at the leader: until the member asked knows one
  // it answers "retry" (seen under ThreadSanitizer, where electing one takes longer).
  ASSERT_TRUE(floe::testing::WaitFor([&] { return c.node(asked).meta()->raft().leader_id != 0; },
                                     std::chrono::seconds(20)));
  cluster::JoinRequest r = Request(floe::testing::FreeClusterPort());
  r.cluster_name = "other";
  Result<std::string> a = Join(c.node(asked), r);
  EXPECT_EQ(a.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("cluster-name 'other', ours 'floe'"));
  r = Request(r.port);
  r.slots = 8192;
  a = Join(c.node(asked), r);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("8192 slots, ours 16384"));
  r = Request(r.port);
  cluster::SignJoinRequest(&r, "a secret the cluster has not");
  a = Join(c.node(asked), r);
  EXPECT_THAT(std::string(a.status().message()),
              HasSubstr("cluster secret differs (--cluster-secret)"));
  r = Request(r.port);
  r.protocol_version = 1;
  a = Join(c.node(asked), r);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("protocol version 1, ours 2"));
  // A member's own address.
  r = Request(c.cluster_port(0));
  a = Join(c.node(asked), r);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("is already member "));
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 3u) << "a refused join added a member";
}

// Rule J1 end to end in one process: a node started with Config::join (what `--join` sets)
// asks a member that does not lead, as rpc's stranger; it becomes member 4, catches up with
// the agreed metadata, owns no slot and serves every key by forwarding it to its owner; the
// others forward to it and list it. A restart with the same directory is the same member.
TEST(ClusterJoinTest, ANodeStartedWithJoinServesEveryKeyByForwarding) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir dir;
  Config config = JoinerConfig(c, dir.path());
  std::string key_of_other;
  {
    Session s(&c.engine(0), 0);
    key_of_other = c.KeyAt(0, "before");
    EXPECT_EQ(s.Run({"SET", key_of_other, "v0"}), "+OK\r\n");
  }
  for (int life = 0; life < 2; life++) {
    auto engine = std::make_unique<Engine>(config, 1);
    Result<std::unique_ptr<ClusterNode>> node = ClusterNode::Start(engine.get(), config, 20099);
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    EXPECT_EQ((*node)->self(), 4u) << "life " << life;
    // A joined member replicates as a founder does (it owns the replica store and the Sender).
    EXPECT_NE(engine->replication(), nullptr);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!(*node)->serving()) {
      ASSERT_LT(std::chrono::steady_clock::now(), until) << "the joined member never serves";
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    {
      Session s(engine.get(), 0);
      EXPECT_EQ(s.Run({"GET", key_of_other}), "$2\r\nv0\r\n");
      for (size_t i = 0; i < 3; i++) {
        const std::string k = c.KeyAt(i, "via-joiner-" + std::to_string(life));
        EXPECT_EQ(s.Run({"SET", k, "x"}), "+OK\r\n") << k;
        EXPECT_EQ(c.engine(i).store().Get(k) != nullptr, true) << "not at its owner " << i;
      }
      EXPECT_EQ(engine->store().Size(), 0u) << "the joined member owns no slot";
      EXPECT_THAT(s.Run({"CLUSTER", "INFO"}), HasSubstr("cluster_known_nodes:4\r\n"));
      const std::string nodes = s.Run({"CLUSTER", "NODES"});
      EXPECT_THAT(nodes, HasSubstr("myself,master"));
      EXPECT_THAT(nodes, HasSubstr(":20000@")) << "founders' client ports: " << nodes;
    }
    EXPECT_EQ(c.node(0).meta()->table()->members().size(), 4u);
    // The member that answered the join as a stranger stopped resending its answer (the joiner
    // acknowledged it at once), so the new member drops nothing addressed to the stranger.
    EXPECT_EQ((*node)->rpc_stats().unknown_sender.load(), 0u);
    (*node)->Stop();
    node->reset();
    engine.reset();
  }
}

// A joined member restarts from its directory (its identity, the answer it joined with, its
// log) without asking anyone: restarted with --join naming an address where nobody listens, it
// is member 4 again and serves.
TEST(ClusterJoinTest, AJoinedMemberRestartsFromItsDirectoryWithoutAsking) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir dir;
  Config config = JoinerConfig(c, dir.path());
  const std::string key = c.KeyAt(1, "restart");
  {
    Session s(&c.engine(1), 0);
    ASSERT_EQ(s.Run({"SET", key, "v"}), "+OK\r\n");
  }
  for (int life = 0; life < 2; life++) {
    if (life == 1) config.join = "127.0.0.1:" + std::to_string(floe::testing::FreeClusterPort());
    auto engine = std::make_unique<Engine>(config, 1);
    Result<std::unique_ptr<ClusterNode>> node = ClusterNode::Start(engine.get(), config, 20099);
    ASSERT_TRUE(node.ok()) << "life " << life << ": " << node.status().ToString();
    EXPECT_EQ((*node)->self(), 4u) << "life " << life;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!(*node)->serving()) {
      ASSERT_LT(std::chrono::steady_clock::now(), until) << "never serves, life " << life;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    {
      Session s(engine.get(), 0);
      EXPECT_EQ(s.Run({"GET", key}), "$1\r\nv\r\n") << "life " << life;
    }
    (*node)->Stop();
    engine->set_cluster(nullptr);
    node->reset();
    engine.reset();
  }
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 4u);
}

// A joined member's restart checks the protocol version it joined under (its kept answer's)
// before it decodes the answer: another version stops the start with its own error, not as a
// damaged answer.
TEST(ClusterJoinTest, AJoinedMembersRestartChecksTheVersionItJoinedUnder) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir dir;
  Config config = JoinerConfig(c, dir.path());
  auto start = [&] { return StartAsMemberFour(config); };
  ASSERT_TRUE(start().ok());
  const std::string path =
      internal::MemberDirectory(config, "127.0.0.1", static_cast<uint16_t>(config.cluster_port)) +
      "/join-answer";
  std::string kept = internal::ReadSmallFile(path);
  ASSERT_FALSE(kept.empty());
  ASSERT_EQ(kept[0], static_cast<char>(cluster::kProtocolVersion));
  kept[0] = static_cast<char>(cluster::kProtocolVersion + 1);
  ASSERT_TRUE(internal::WriteFileDurably(path, kept));
  const Status st = start();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_THAT(
      std::string(st.message()),
      HasSubstr("joined under protocol version " + std::to_string(cluster::kProtocolVersion + 1) +
                " (its answer in " + path + "), and this build runs protocol version " +
                std::to_string(cluster::kProtocolVersion)));
  EXPECT_THAT(std::string(st.message()), ::testing::Not(HasSubstr("damaged")));
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 4u);
}

// A joined member removed from the table (RemoveMember) that asks again with its directory
// (its kept answer gone) sends the member id its directory records, and is refused, signed,
// rather than given a new id its start would then refuse against the recorded one.
TEST(ClusterJoinTest, ARemovedMemberAskingAgainIsRefusedNotGivenANewId) {
  Config base;
  base.cluster_secret = "the cluster's";  // the refusal is signed, and the joiner exits on it
  internal::InProcessCluster c({.members = 3, .base = base});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir dir;
  Config config = JoinerConfig(c, dir.path());
  ASSERT_EQ(config.cluster_secret, base.cluster_secret);
  auto start = [&] { return StartAsMemberFour(config); };
  ASSERT_TRUE(start().ok());
  const std::string member_dir =
      internal::MemberDirectory(config, "127.0.0.1", static_cast<uint16_t>(config.cluster_port));
  Result<internal::JoinersDirectory> recorded = internal::ReadJoinersDirectory(
      config, "127.0.0.1", static_cast<uint16_t>(config.cluster_port));
  ASSERT_TRUE(recorded.ok()) << recorded.status().ToString();
  EXPECT_EQ(recorded->member, 4u);
  ASSERT_TRUE(std::filesystem::remove(member_dir + "/join-answer"));
  size_t leader = 0;
  for (size_t i = 0; i < 3; i++) {
    if (c.node(i).meta()->raft().leader) leader = i;
  }
  cluster::Change remove;
  remove.kind = cluster::Change::Kind::kRemoveMember;
  remove.node = 4;
  std::promise<Status> removed;
  c.node(leader).TEST_meta()->Propose(remove, [&removed](Status st) { removed.set_value(st); });
  ASSERT_TRUE(removed.get_future().get().ok());
  ASSERT_EQ(c.node(leader).meta()->table()->members().size(), 3u);
  const uint64_t proposed = c.node(leader).joins_proposed();
  const Status st = start();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("this node's directory records member 4, which the cluster does not list "
                        "with its join token"));
  EXPECT_EQ(c.node(leader).meta()->table()->members().size(), 3u) << "given a new id";
  EXPECT_EQ(c.node(leader).joins_proposed(), proposed);
}

TEST(ClusterJoinTest, AJoinerIsToldWhatDiffers) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir dir;
  Config config = c.MemberConfig(0);
  config.cluster.clear();
  config.join = "127.0.0.1:" + std::to_string(c.cluster_port(0));
  config.cluster_port = floe::testing::FreeClusterPort();
  config.dir = dir.path();
  config.cluster_name = "other";
  Result<cluster::JoinAnswer> a = internal::AskToJoin(config, "127.0.0.1", 20099);
  EXPECT_EQ(a.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("cluster-name 'other', ours 'floe'"));
  config.cluster_name = "floe";
  // Another secret is not answered at all (it proves nothing): the joiner gives up at its
  // limit and says what silence may mean.
  config.cluster_secret = "not the cluster's";
  a = internal::AskToJoin(config, "127.0.0.1", 20099, 1'000'000);
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("--cluster-secret differs"));
  // Nobody at the address: it gives up at its limit, naming whom it asked.
  config.cluster_secret.clear();
  config.join = "127.0.0.1:" + std::to_string(floe::testing::FreeClusterPort());
  a = internal::AskToJoin(config, "127.0.0.1", 20099, 1'000'000);
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("asked " + config.join));
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 3u);
}

// The request carries the cluster id of the joiner's log, read from the log itself as the
// start reads it: a directory holding an earlier cluster's log of this name and address, its
// cluster-id file gone, is refused by the leader naming both ids, and nothing is committed (it
// was committed, then the start refused the directory). A cluster-id file that disagrees with
// the log is refused before anything is sent.
TEST(ClusterJoinTest, AJoinerSendsTheClusterIdOfItsLog) {
  floe::testing::TempDir dir;
  Config config;
  cluster::ClusterId earlier;
  {
    internal::InProcessCluster first({.members = 3});
    ASSERT_TRUE(first.WaitFormed());
    config = JoinerConfig(first, dir.path());
    Engine engine(config, 1);
    Result<std::unique_ptr<ClusterNode>> node = ClusterNode::Start(&engine, config, 20099);
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    earlier = first.node(0).meta()->table()->cluster_id();
    ASSERT_FALSE(earlier.empty());
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!(*node)->serving()) {
      ASSERT_LT(std::chrono::steady_clock::now(), until) << "the joined member never serves";
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    (*node)->Stop();
    engine.set_cluster(nullptr);
  }
  const std::string member_dir =
      internal::MemberDirectory(config, "127.0.0.1", static_cast<uint16_t>(config.cluster_port));
  // The files that name the earlier cluster are gone; its log is not.
  ASSERT_TRUE(std::filesystem::remove(member_dir + "/cluster-id"));
  ASSERT_TRUE(std::filesystem::remove(member_dir + "/join-answer"));

  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  const cluster::ClusterId ours = c.node(0).meta()->table()->cluster_id();
  ASSERT_NE(ours, earlier);
  config.join = JoinerConfig(c, dir.path()).join;
  Result<internal::JoinersDirectory> sent = internal::ReadJoinersDirectory(
      config, "127.0.0.1", static_cast<uint16_t>(config.cluster_port));
  ASSERT_TRUE(sent.ok()) << sent.status().ToString();
  EXPECT_EQ(sent->cluster_id, earlier);
  {
    Engine engine(config, 1);
    Result<std::unique_ptr<ClusterNode>> node = ClusterNode::Start(&engine, config, 20099);
    ASSERT_FALSE(node.ok()) << "joined with another cluster's log";
    EXPECT_EQ(node.status().code(), StatusCode::kFailedPrecondition) << node.status().ToString();
    EXPECT_THAT(std::string(node.status().message()),
                HasSubstr("cluster id " + earlier.ToString() + ", ours " + ours.ToString()));
  }
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 3u) << "a member was committed";
  // A cache that disagrees with the log: refused before asking, as the start refuses it.
  ASSERT_TRUE(internal::WriteFileDurably(member_dir + "/cluster-id", ours.ToString() + "\n"));
  Result<cluster::JoinAnswer> a = internal::AskToJoin(config, "127.0.0.1", 20099);
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable) << a.status().ToString();
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("files of two clusters"));
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 3u) << "a member was committed";
}

// Two nodes join at once through one member, which hears one stranger at a time: each retries
// under a new incarnation until it is heard, and both become members, once each.
TEST(ClusterJoinTest, TwoNodesJoiningAtOnceThroughOneMemberBothJoin) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir dir;
  Config config = JoinerConfig(c, dir.path());
  Config a = config, b = config;
  a.cluster_port = floe::testing::FreeClusterPort();
  b.cluster_port = floe::testing::FreeClusterPort();
  for (int round = 0; round < 3; round++) {
    std::promise<Result<cluster::JoinAnswer>> pa, pb;
    std::thread ta([&] { pa.set_value(internal::AskToJoin(a, "127.0.0.1", 20098)); });
    std::thread tb([&] { pb.set_value(internal::AskToJoin(b, "127.0.0.1", 20097)); });
    Result<cluster::JoinAnswer> ra = pa.get_future().get(), rb = pb.get_future().get();
    ta.join();
    tb.join();
    ASSERT_TRUE(ra.ok()) << ra.status().ToString();
    ASSERT_TRUE(rb.ok()) << rb.status().ToString();
    EXPECT_NE(ra->id, rb->id);
    EXPECT_GE(std::min(ra->id, rb->id), 4u);
    EXPECT_LE(std::max(ra->id, rb->id), 5u) << "a retried join added a node twice";
  }
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 5u);
}

// A stranger without the secret's proof is dropped by the member it asks, which forwards
// nothing and answers nothing: not even to the address the request names, so an unproven
// request cannot aim the member's answers at anyone (docs/membership.md J1).
TEST(ClusterJoinTest, AnUnprovenJoinIsNeitherForwardedNorAnswered) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  const size_t asked = internal::NotTheLeader(c);
  // Where the request says the answer should go: a bare UDP socket that counts datagrams.
  const int victim = socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(victim, 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(victim, reinterpret_cast<sockaddr*>(&at), sizeof(at)), 0);
  socklen_t len = sizeof(at);
  ASSERT_EQ(getsockname(victim, reinterpret_cast<sockaddr*>(&at), &len), 0);
  const uint16_t victim_port = ntohs(at.sin_port);
  {
    net::AsioLoop loop;
    net::TransportOptions t;
    t.self = cluster::kJoinerId;
    t.bind_host = "127.0.0.1";
    t.port = floe::testing::FreeClusterPort();
    t.peers = {net::PeerAddress{
        .id = rpc::kAnyNodeId, .host = "127.0.0.1", .port = c.cluster_port(asked)}};
    auto transport = net::UdpTcpTransport::Start(loop, t);
    ASSERT_TRUE(transport.ok()) << transport.status().ToString();
    rpc::Options o;
    o.peers = {rpc::kAnyNodeId};
    o.down_after_us = 60'000'000;
    rpc::Endpoint endpoint(**transport, o);
    endpoint.Start();
    cluster::JoinRequest r = Request(victim_port);
    cluster::SignJoinRequest(&r, "a secret the cluster has not");
    Result<std::string> answer = endpoint.Call(rpc::kAnyNodeId, cluster::kJoinMethod,
                                               cluster::EncodeJoinRequest(r), 1'500'000);
    EXPECT_EQ(answer.status().code(), StatusCode::kTimeout) << answer.status().ToString();
    EXPECT_EQ(endpoint.stats().messages_received.load(), 0u);
    endpoint.Stop();
  }
  char buf[2048];
  EXPECT_LT(recv(victim, buf, sizeof(buf), MSG_DONTWAIT), 0)
      << "an answer went to the address named";
  close(victim);
  EXPECT_GT(c.node(asked).rpc_stats().auth_failures.load(), 0u);
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 3u);
}

// Anyone may answer a joiner (its port takes the stranger's answers unauthenticated): an answer
// or a refusal that does not carry the leader's MAC under the secret, for this request, is not
// taken, so a forger can neither hand the joiner an id and a member list nor make it exit
// (docs/membership.md J1).
TEST(ClusterJoinTest, AJoinerTakesNoAnswerOrRefusalWithoutTheSecretsMac) {
  const uint16_t forger_port = floe::testing::FreeClusterPort();
  net::AsioLoop loop;
  net::TransportOptions t;
  t.self = 1;
  t.bind_host = "127.0.0.1";
  t.port = forger_port;
  auto transport = net::UdpTcpTransport::Start(loop, t);
  ASSERT_TRUE(transport.ok()) << transport.status().ToString();
  rpc::Options o;
  o.stranger_method = cluster::kJoinMethod;
  o.stranger_check = [](std::string_view) { return true; };
  rpc::Endpoint forger(**transport, o);
  std::atomic<int> asked{0};
  forger.Register(
      cluster::kJoinMethod, rpc::kPriorityClasses - 1,
      [&](net::NodeId, std::string_view bytes) -> Result<std::string> {
        Result<cluster::JoinRequest> r = cluster::DecodeJoinRequest(bytes);
        if (!r.ok()) return r.status();
        (*transport)
            ->SetPeer(net::PeerAddress{.id = cluster::kJoinerId, .host = r->host, .port = r->port});
        if (asked++ == 0) {
          // First a refusal, MACed under another secret: not one to exit on.
          return Status::FailedPrecondition(cluster::SignJoinRefusal(
              "cluster-name 'floe', ours 'forged'", *r, "the forger's guess"));
        }
        cluster::JoinAnswer a;
        a.id = 4;
        a.cluster_id = cluster::ClusterId::Random();
        a.members = {
            cluster::TableMember{.id = 1, .host = "127.0.0.1", .port = forger_port, .raft_port = 1},
            cluster::TableMember{
                .id = 4, .host = r->host, .port = r->port, .raft_port = r->raft_port}};
        // Signed, but with another secret than the joiner's.
        cluster::SignJoinAnswer(&a, *r, "the forger's guess");
        return cluster::EncodeJoinAnswer(a);
      });
  forger.Start();
  floe::testing::TempDir dir;
  Config config;
  config.cluster_name = "floe";
  config.cluster_secret = "the cluster's";
  config.join = "127.0.0.1:" + std::to_string(forger_port);
  config.cluster_port = floe::testing::FreeClusterPort();
  config.dir = dir.path();
  Result<cluster::JoinAnswer> a = internal::AskToJoin(config, "127.0.0.1", 20099, 1'500'000);
  EXPECT_GE(asked.load(), 2) << "the forged refusal ended the join";
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable) << a.status().ToString();
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("does not prove the cluster secret"));
  forger.Stop();
}

// A joiner nobody answers is told what silence can mean, its protocol version among them (a
// member of another version cannot read the request and answers nothing).
TEST(ClusterJoinTest, AJoinerNobodyAnswersIsToldItsProtocolVersion) {
  floe::testing::TempDir dir;
  Config config;
  config.join = "127.0.0.1:" + std::to_string(floe::testing::FreeClusterPort());
  config.cluster_port = floe::testing::FreeClusterPort();
  config.dir = dir.path();
  Result<cluster::JoinAnswer> a = internal::AskToJoin(config, "127.0.0.1", 20099, 600'000);
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable) << a.status().ToString();
  EXPECT_THAT(std::string(a.status().message()),
              HasSubstr("another protocol version than this node's " +
                        std::to_string(cluster::kProtocolVersion)));
}

// A joiner makes every check of its own before it asks (rule J1), so the cluster never commits
// a member that then cannot start: off loopback without a secret, off the agreed metadata's
// loopback, its Raft port taken, its directory locked by another run, test faults that do not
// parse, its directory holding another cluster's log. Each is refused naming it, and the
// cluster keeps 3 members.
TEST(ClusterJoinTest, AJoinerChecksItselfBeforeItAsks) {
  internal::InProcessCluster c({.members = 3});
  ASSERT_TRUE(c.WaitFormed());
  floe::testing::TempDir dir;
  Config config = JoinerConfig(c, dir.path());
  auto start = [&](const Config& with) -> Status {
    Engine engine(with, 1);
    Result<std::unique_ptr<ClusterNode>> node = ClusterNode::Start(&engine, with, 20099);
    if (node.ok()) {
      (*node)->Stop();
      engine.set_cluster(nullptr);
      return Status::OK();
    }
    return node.status();
  };
  Config off = config;
  off.bind = "10.9.9.9";
  Status st = start(off);
  EXPECT_THAT(std::string(st.message()), HasSubstr("set --cluster-secret")) << st.ToString();
  off.cluster_secret = "a secret";
  st = start(off);
  EXPECT_THAT(std::string(st.message()), HasSubstr("join from a 127.0.0.x address"))
      << st.ToString();
  {
    // Its Raft port (cluster port + 1) is taken.
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    at.sin_port = htons(static_cast<uint16_t>(config.cluster_port + 1));
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof(at)), 0);
    ASSERT_EQ(listen(fd, 1), 0);
    st = start(config);
    close(fd);
    EXPECT_THAT(std::string(st.message()), HasSubstr("Raft on 127.0.0.1:")) << st.ToString();
  }
  {
    // Another run of this member holds its directory.
    internal::DirectoryLock held;
    const std::string member_dir =
        internal::MemberDirectory(config, "127.0.0.1", static_cast<uint16_t>(config.cluster_port));
    std::filesystem::create_directories(member_dir);
    ASSERT_TRUE(held.Take(member_dir).ok());
    st = start(config);
    EXPECT_THAT(std::string(st.message()), HasSubstr("its LOCK")) << st.ToString();
    // A lock that failed is not held: taking it again fails again.
    internal::DirectoryLock second;
    EXPECT_FALSE(second.Take(member_dir).ok());
    EXPECT_FALSE(second.Take(member_dir).ok()) << "a failed Take counted as taken";
  }
  {
    // The test faults it would start its transport with do not parse.
    setenv("FLOE_TEST_CLUSTER_FAULTS", "drop=2", 1);
    st = start(config);
    unsetenv("FLOE_TEST_CLUSTER_FAULTS");
    EXPECT_THAT(std::string(st.message()), HasSubstr("FLOE_TEST_CLUSTER_FAULTS")) << st.ToString();
  }
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 3u) << "a member was committed";
  {
    // Its directory holds another cluster's log (a founder's identity), and no cluster-id file
    // that the leader could refuse.
    const std::string member_dir =
        internal::MemberDirectory(config, "127.0.0.1", static_cast<uint16_t>(config.cluster_port));
    std::filesystem::create_directories(member_dir);
    ASSERT_TRUE(internal::WriteFileDurably(
        member_dir + "/member",
        "floe agreed metadata\ncluster-name floe\nmembers 127.0.0.1:9100\nself 1\n"));
    ASSERT_TRUE(internal::WriteFileDurably(member_dir + "/metadata1", "a log of its own"));
    st = start(config);
    EXPECT_THAT(std::string(st.message()), HasSubstr("holds the metadata of another cluster"))
        << st.ToString();
  }
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 3u) << "a member was committed";
}

// A cluster with a secret, joined through a member that does not lead: the member checks the
// proof (rpc::Options::stranger_check), forwards the request MACed to the leader, which checks
// it again, commits and MACs its answer, which the joiner checks. The same joiner with another
// secret is dropped unanswered where it asked.
TEST(ClusterJoinTest, AClusterWithASecretIsJoinedThroughAMemberThatDoesNotLead) {
  Config base;
  base.cluster_secret = "the cluster's";
  internal::InProcessCluster c({.members = 3, .base = base});
  ASSERT_TRUE(c.WaitFormed());
  const size_t asked = internal::NotTheLeader(c);
  floe::testing::TempDir dir;
  Config config = c.MemberConfig(0);
  config.cluster.clear();
  config.join = "127.0.0.1:" + std::to_string(c.cluster_port(asked));
  config.cluster_port = floe::testing::FreeClusterPort();
  config.dir = dir.path();
  Config wrong = config;
  wrong.cluster_secret = "not the cluster's";
  const uint64_t failures = c.node(asked).rpc_stats().auth_failures.load();
  Result<cluster::JoinAnswer> refused = internal::AskToJoin(wrong, "127.0.0.1", 20099, 1'000'000);
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable) << refused.status().ToString();
  EXPECT_GT(c.node(asked).rpc_stats().auth_failures.load(), failures);
  // The right secret and another name: the leader's refusal, MACed, is taken and named.
  Config named = config;
  named.cluster_name = "other";
  Result<cluster::JoinAnswer> other = internal::AskToJoin(named, "127.0.0.1", 20099, 5'000'000);
  EXPECT_EQ(other.status().code(), StatusCode::kFailedPrecondition) << other.status().ToString();
  EXPECT_THAT(std::string(other.status().message()),
              HasSubstr("cluster-name 'other', ours 'floe'"));
  EXPECT_EQ(std::string(other.status().message()).find("\n#"), std::string::npos);
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 3u);
  auto engine = std::make_unique<Engine>(config, 1);
  Result<std::unique_ptr<ClusterNode>> node = ClusterNode::Start(engine.get(), config, 20099);
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  EXPECT_EQ((*node)->self(), 4u);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!(*node)->serving()) {
    ASSERT_LT(std::chrono::steady_clock::now(), until) << "the joined member never serves";
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  {
    Session s(engine.get(), 0);
    const std::string k = c.KeyAt(asked, "secret");
    EXPECT_EQ(s.Run({"SET", k, "x"}), "+OK\r\n");
    EXPECT_TRUE(c.engine(asked).store().Get(k) != nullptr);
  }
  EXPECT_EQ(c.node(0).meta()->table()->members().size(), 4u);
  (*node)->Stop();
  engine->set_cluster(nullptr);
}

}  // namespace
}  // namespace floe::server
