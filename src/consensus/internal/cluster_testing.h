// Tests of the consensus module (consensus_test, consensus_transport_test): up to a handful of
// real raft servers on 127.0.0.1, their directories under one temporary root the cluster
// removes. Every wait is for a condition, bounded generously, never a timing claim.

#ifndef FLOE_CONSENSUS_INTERNAL_CLUSTER_TESTING_H_
#define FLOE_CONSENSUS_INTERNAL_CLUSTER_TESTING_H_

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "consensus/consensus.h"
#include "consensus/internal/recorder_testing.h"
#include "testing/process.h"

namespace floe::consensus::internal {

using floe::testing::WaitFor;
using namespace std::chrono_literals;

struct Node {
  Options options;
  std::unique_ptr<Recorder> machine;
  std::unique_ptr<Log> log;
};

// Up to a handful of servers on 127.0.0.1, their directories under one temporary root.
class TestCluster {
 public:
  explicit TestCluster(int voters, Options base = {}) : base_(base) {
    char tmpl[] = "consensus_test.XXXXXX";
    root_ = mkdtemp(tmpl);
    for (int i = 1; i <= voters; i++) founders_.push_back(NewServer(i, Role::kVoter));
  }
  ~TestCluster() {
    for (auto& [id, node] : nodes_) node.log.reset();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  // FreePort releases the port it found, so two calls can return the same one: keep the
  // cluster's ports distinct.
  Server NewServer(uint64_t id, Role role) {
    uint16_t port = 0;
    do {
      port = testing::FreePort();
    } while (port == 0 || !ports_.insert(port).second);
    return {.id = id, .address = "127.0.0.1:" + std::to_string(port), .role = role};
  }
  const std::vector<Server>& founders() const { return founders_; }

  Options OptionsFor(const Server& s, bool founder) {
    Options o = base_;
    o.id = s.id;
    o.address = s.address;
    o.dir = root_ + "/" + std::to_string(s.id);
    // Short timeouts keep the tests quick, unless the test chose its own.
    if (o.election_timeout_ms == Options{}.election_timeout_ms) {
      o.election_timeout_ms = 150;
      o.heartbeat_timeout_ms = 30;
    }
    if (founder) o.bootstrap = founders_;
    return o;
  }

  // Starts (or restarts, from its directory) server `s` with a fresh state machine.
  Log* Start(const Server& s, bool founder = true) {
    Node& node = nodes_[s.id];
    node.log.reset();
    node.options = OptionsFor(s, founder);
    node.machine = std::make_unique<Recorder>();
    auto log = Log::Start(node.options, node.machine.get());
    EXPECT_TRUE(log.ok()) << log.status().ToString();
    if (!log.ok()) return nullptr;
    node.log = std::move(log).value();
    return node.log.get();
  }
  void StartAll() {
    for (const Server& s : founders_) Start(s);
  }
  void Stop(uint64_t id) { nodes_[id].log.reset(); }
  Log* log(uint64_t id) { return nodes_[id].log.get(); }
  Recorder* machine(uint64_t id) { return nodes_[id].machine.get(); }

  // The one running server that says it leads, once every running server names it; 0 if none
  // within the limit.
  uint64_t WaitLeader(std::chrono::milliseconds limit = 10s) {
    uint64_t leader = 0;
    WaitFor(
        [&] {
          leader = 0;
          int leaders = 0;
          for (auto& [id, node] : nodes_) {
            if (node.log && node.log->state().leader) {
              leader = id;
              leaders++;
            }
          }
          if (leaders != 1) return false;
          for (auto& [id, node] : nodes_) {
            if (node.log && node.log->state().leader_id != leader) return false;
          }
          return true;
        },
        limit);
    return leader;
  }

  // Proposes on the current leader until the entry is acknowledged (retrying an entry that was
  // certainly not appended, and one whose outcome is unknown: entries are unique, and the
  // checks look for each acknowledged entry, not for exactly-once).
  Result<uint64_t> Commit(const std::string& entry) {
    Status last = Status::Unavailable("no leader");
    for (int attempt = 0; attempt < 20; attempt++) {
      const uint64_t leader = WaitLeader();
      if (leader == 0) continue;
      Result<uint64_t> r = ProposeOn(leader, entry);
      if (r.ok()) return r;
      last = r.status();
    }
    return last;
  }
  Result<uint64_t> ProposeOn(uint64_t id, const std::string& entry) {
    std::promise<Result<uint64_t>> p;
    log(id)->Propose(entry, [&p](Result<uint64_t> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }
  template <typename F>
  Status Sync(F call) {
    std::promise<Status> p;
    call([&p](Status s) { p.set_value(std::move(s)); });
    return p.get_future().get();
  }

  // Waits until every running server has applied exactly `entries`.
  bool WaitConverged(const std::vector<std::string>& entries) {
    return WaitFor([&] {
      for (auto& [id, node] : nodes_) {
        if (node.log && node.machine->Entries() != entries) return false;
      }
      return true;
    });
  }

 private:
  Options base_;
  std::string root_;
  std::vector<Server> founders_;
  std::map<uint64_t, Node> nodes_;
  std::set<uint16_t> ports_;
};

}  // namespace floe::consensus::internal

#endif  // FLOE_CONSENSUS_INTERNAL_CLUSTER_TESTING_H_
