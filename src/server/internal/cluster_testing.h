// In-process clusters for tests: Engines, each with its ClusterNode on loopback UDP/TCP, in one
// process, driven through Sessions (a Session without a reply sink waits for forwarded replies
// itself). Tests only.

#ifndef FLOE_SERVER_INTERNAL_CLUSTER_TESTING_H_
#define FLOE_SERVER_INTERNAL_CLUSTER_TESTING_H_

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cluster/cluster.h"
#include "consensus/consensus.h"
#include "server/internal/cluster_node.h"
#include "server/server.h"
#include "testing/process.h"

namespace floe::server::internal {

struct InProcessClusterOptions {
  int members = 3;
  int started = -1;           // how many of the members run (the others never answer); -1: all
  int64_t timeout_ms = 1000;  // cluster-node-timeout
  // The ownership lease (docs/membership.md, O1): far longer than a server's 1 s. Under
  // ThreadSanitizer on a loaded machine the Raft thread applies a large table change in
  // seconds, and a renewal waits for it (its confirmation is a barrier applied after it): a
  // short lease would lapse between renewals there. The failover tests set a shorter one.
  int64_t lease_ms = 30000;
  Config base;                    // every member's settings, before the cluster ones
  int first_client_port = 20000;  // member i tells clients it listens on this + i
};

class InProcessCluster {
 public:
  using Options = InProcessClusterOptions;
  explicit InProcessCluster(Options options = {}) : options_(std::move(options)) {
    const int started = options_.started < 0 ? options_.members : options_.started;
    for (int i = 0; i < options_.members; i++) {
      ports_.push_back(floe::testing::FreeClusterPort());
      list_ += (i > 0 ? "," : "") + std::string("127.0.0.1:") + std::to_string(ports_.back());
    }
    engines_.resize(static_cast<size_t>(options_.members));
    nodes_.resize(static_cast<size_t>(options_.members));
    for (int i = 0; i < started; i++) EXPECT_TRUE(Start(static_cast<size_t>(i)).ok());
  }

  // Every endpoint stops (its handler threads joined) before any engine forgets its node: a
  // proxy session of one member may still be running a command another member sent. The
  // ClusterNodes go before the Engines: their proxy sessions belong to the engines.
  ~InProcessCluster() {
    for (auto& n : nodes_) {
      if (n) n->Stop();
    }
    for (size_t i = 0; i < nodes_.size(); i++) Kill(i);
  }
  InProcessCluster(const InProcessCluster&) = delete;
  InProcessCluster& operator=(const InProcessCluster&) = delete;

  // Whether every running member formed, serves keys (its agreed metadata caught up,
  // docs/membership.md; in a cluster that makes backups, its life recorded, docs/replication.md
  // W1) and is ready to change them (its start-up grace is over, docs/coherence.md L4), within
  // `limit`.
  bool WaitFormed(std::chrono::seconds limit = std::chrono::seconds(20)) {
    const auto until = std::chrono::steady_clock::now() + limit;
    for (auto& n : nodes_) {
      while (n && (!n->serving() || !n->dkv().Serving())) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
    return true;
  }

  Engine& engine(size_t i) { return *engines_[i]; }
  ClusterNode& node(size_t i) { return *nodes_[i]; }
  uint16_t cluster_port(size_t i) const { return ports_[i]; }
  // Every member's --dir (each keeps its Raft log in its own directory under it).
  const std::string& data_dir() const { return dir_.path(); }
  const std::string& member_list() const { return list_; }

  // Which member (0-based) is home to `key`; -1 before formation.
  int HomeOf(std::string_view key) const {
    const ClusterNode* any = nullptr;
    for (const auto& n : nodes_) any = any != nullptr ? any : n.get();
    const net::NodeId id = any != nullptr ? any->Home(cluster::KeySlot(key)) : 0;
    for (size_t i = 0; i < nodes_.size(); i++) {
      if (nodes_[i] && nodes_[i]->self() == id) return static_cast<int>(i);
    }
    return -1;
  }
  // A key, `prefix` and a number, homed at member `home`. REQUIRES: the cluster formed.
  std::string KeyAt(size_t home, const std::string& prefix = "k") const {
    for (int n = 0;; n++) {
      std::string k = prefix + std::to_string(n);
      if (HomeOf(k) == static_cast<int>(home)) return k;
    }
  }

  // Which running member (0-based) is node `id`: a test failure, and 0, if none is.
  size_t IndexOf(net::NodeId id) const {
    for (size_t i = 0; i < nodes_.size(); i++) {
      if (nodes_[i] && nodes_[i]->self() == id) return i;
    }
    ADD_FAILURE() << "no running member " << id;
    return 0;
  }
  bool running(size_t i) const { return nodes_[i] != nullptr; }
  // The running member that leads the agreed metadata now (0 when none does).
  size_t Leader() {
    for (size_t i = 0; i < nodes_.size(); i++) {
      if (nodes_[i] && nodes_[i]->meta() != nullptr && nodes_[i]->meta()->raft().leader) return i;
    }
    return 0;
  }

  // Member i dies without a word to the others (as kill -9 would): its node and engine go.
  void Kill(size_t i) {
    if (nodes_[i]) nodes_[i]->Stop();
    if (engines_[i]) engines_[i]->set_cluster(nullptr);
    nodes_[i].reset();
    engines_[i].reset();
  }
  // Member i's settings.
  Config MemberConfig(size_t i) const {
    Config c = options_.base;
    c.bind = "127.0.0.1";
    c.cluster = list_;
    c.cluster_port = ports_[i];
    c.cluster_node_timeout = options_.timeout_ms;
    c.cluster_owner_lease = options_.lease_ms;
    c.dir = dir_.path();
    return c;
  }
  // Starts member i (again, after Kill: a new life with the same ports).
  Status Start(size_t i) {
    Config c = MemberConfig(i);
    engines_[i] = std::make_unique<Engine>(c, 1);
    Result<std::unique_ptr<ClusterNode>> n =
        ClusterNode::Start(engines_[i].get(), c, options_.first_client_port + static_cast<int>(i));
    if (!n.ok()) return n.status();
    nodes_[i] = std::move(*n);
    return Status::OK();
  }

 private:
  const Options options_;
  floe::testing::TempDir dir_;  // outlives the members (declared before them)
  std::vector<uint16_t> ports_;
  std::string list_;
  std::vector<std::unique_ptr<Engine>> engines_;
  std::vector<std::unique_ptr<ClusterNode>> nodes_;
};

// The harness with clients (Sessions of its members' engines) that live as long as it.
class ClientCluster : public InProcessCluster {
 public:
  explicit ClientCluster(int n = 3, int started = -1, int64_t timeout_ms = 1000)
      : InProcessCluster({.members = n, .started = started, .timeout_ms = timeout_ms}) {}
  explicit ClientCluster(InProcessClusterOptions options) : InProcessCluster(std::move(options)) {}
  ~ClientCluster() { sessions_.clear(); }  // before the engines they belong to
  // A client connected to member i.
  Session& client(size_t i) {
    sessions_.push_back(std::make_unique<Session>(&engine(i), 0));
    return *sessions_.back();
  }

 private:
  std::vector<std::unique_ptr<Session>> sessions_;
};

// A founder of `c` (of its first `founders`) that does not lead the agreed metadata.
inline size_t NotTheLeader(InProcessCluster& c, size_t founders = 3) {
  for (size_t i = 0; i < founders; i++) {
    if (!c.node(i).meta()->raft().leader) return i;
  }
  return 0;
}

// The settings of a node that joins `c` (--join at a founder that does not lead) on
// `cluster_port`, with its own data directory.
inline Config JoinerConfig(InProcessCluster& c, const std::string& dir, int cluster_port) {
  Config config = c.MemberConfig(0);
  config.cluster.clear();
  config.join = "127.0.0.1:" + std::to_string(c.cluster_port(NotTheLeader(c)));
  config.cluster_port = cluster_port;
  config.dir = dir;
  return config;
}

// A node started with a joiner's config, serving; its engine outlives its node.
struct JoinedNode {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<ClusterNode> node;
  ~JoinedNode() { Stop(); }
  void Stop() {
    if (node) {
      node->Stop();
      engine->set_cluster(nullptr);
      node.reset();
    }
  }
};

// Starts `j` with `config` and waits (bounded) until it serves.
inline void StartJoinedNode(const Config& config, JoinedNode* j) {
  j->engine = std::make_unique<Engine>(config, 1);
  Result<std::unique_ptr<ClusterNode>> node = ClusterNode::Start(j->engine.get(), config, 20099);
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  j->node = std::move(*node);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!j->node->serving()) {
    ASSERT_LT(std::chrono::steady_clock::now(), until) << "the joined member never serves";
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Starts `j`, a node that joins `c` through a member that does not lead, with its directory
// `dir` and a free cluster port, and waits (bounded) until it serves.
inline void JoinNode(InProcessCluster& c, const floe::testing::TempDir& dir, JoinedNode* j) {
  StartJoinedNode(JoinerConfig(c, dir.path(), floe::testing::FreeClusterPort()), j);
}

// Whether member `id` is in founder i's applied table, and in its Raft configuration.
inline bool InTable(InProcessCluster& c, size_t i, net::NodeId id) {
  return c.node(i).meta()->table()->FindMember(id) != nullptr;
}
inline bool InRaft(InProcessCluster& c, size_t i, net::NodeId id) {
  for (const consensus::Server& s : c.node(i).meta()->raft().configuration) {
    if (s.id == id) return true;
  }
  return false;
}

// Waits (bounded) until none of the first `founders` lists `id` in its table or its Raft
// configuration.
inline void WaitRemovedEverywhere(InProcessCluster& c, net::NodeId id, size_t founders = 3) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (size_t i = 0; i < founders; i++) {
    while (InTable(c, i, id) || InRaft(c, i, id)) {
      ASSERT_LT(std::chrono::steady_clock::now(), until)
          << "member " << id << " still at founder " << i << ": table " << InTable(c, i, id)
          << ", raft " << InRaft(c, i, id);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
}

// Commits `change` through the leader of `c`'s agreed metadata, proposing it again while no
// member leads yet or leadership moves (not when the table refuses it);
// Unavailable if that takes more than 20 s.
inline Status Propose(InProcessCluster& c, const cluster::Change& change) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  Status last = Status::Unavailable("no leader in 20 s");
  while (std::chrono::steady_clock::now() < until) {
    const size_t leader = c.Leader();
    if (!c.running(leader) || c.node(leader).meta() == nullptr ||
        !c.node(leader).meta()->raft().leader) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    auto done = std::make_shared<std::promise<Status>>();
    std::future<Status> result = done->get_future();
    c.node(leader).TEST_meta()->Propose(change, [done](Status s) { done->set_value(s); });
    if (result.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
      return Status::Unavailable("not committed in 20 s");
    }
    last = result.get();
    // The table's refusal is final; "not the leader" (leadership moved) is not.
    if (last.ok() || (last.code() == StatusCode::kFailedPrecondition &&
                      !last.message().starts_with("not the leader"))) {
      return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return last;
}

// Runs `fn` on another thread; false if it has not returned within `limit` (a hang: the test
// binary then exits at once, as the stuck thread holds locks the cluster's teardown needs).
inline bool ReturnsWithin(std::chrono::seconds limit, std::function<void()> fn) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> returned = done->get_future();
  std::thread([fn = std::move(fn), done] {
    fn();
    done->set_value();
  }).detach();
  if (returned.wait_for(limit) == std::future_status::ready) return true;
  std::fprintf(stderr, "hung: the command did not return within %llds\n",
               static_cast<long long>(limit.count()));
  std::fflush(stderr);
  std::_Exit(1);
}

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_CLUSTER_TESTING_H_
