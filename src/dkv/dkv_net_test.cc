// The DKV on real threads and sockets: three nodes in this process, each with its own Asio loop
// thread and UDP/TCP transport on 127.0.0.1, a seeded fault injector dropping, duplicating and
// delaying datagrams, and client threads on every node. Histories use the monotonic clock and
// are checked for linearizability; under TSan the same run looks for data races between the
// loop threads, the RPC handlers and the clients.

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/base.h"
#include "dkv/dkv.h"
#include "net/net.h"
#include "rpc/rpc.h"
#include "testing/linearizability.h"
#include "testing/testing.h"

namespace floe::dkv {
namespace {

namespace lin = floe::testing::lin;

struct NetNode {
  net::AsioLoop loop;
  std::unique_ptr<net::UdpTcpTransport> transport;
  std::unique_ptr<rpc::Endpoint> endpoint;
  Dkv::Slot slot = Dkv::MakeSlot();
  std::unique_ptr<Dkv> store;
};

struct NetCluster {
  NetCluster(int n, uint64_t seed, const net::Faults& faults) {
    for (int i = 1; i <= n; i++) {
      auto node = std::make_unique<NetNode>();
      net::TransportOptions t;
      t.self = static_cast<NodeId>(i);
      t.faults = faults;
      t.seed = seed + static_cast<uint64_t>(i);
      auto tr = net::UdpTcpTransport::Start(node->loop, t);
      FLOE_CHECK(tr.ok());
      node->transport = std::move(tr).value();
      nodes[static_cast<NodeId>(i)] = std::move(node);
    }
    for (auto& [id, node] : nodes) {
      rpc::Options o;
      for (auto& [other, m] : nodes) {
        if (other == id) continue;
        o.peers.push_back(other);
        node->transport->SetPeer({other, "127.0.0.1", m->transport->port()});
      }
      o.lease_us = 500'000;
      o.heartbeat_interval_us = 50'000;
      o.on_lease_lapse = Dkv::MakeLeaseHook(node->slot);
      node->endpoint = std::make_unique<rpc::Endpoint>(*node->transport, o);
      Options d;
      d.self = id;
      d.home = [n](std::string_view key) {
        return static_cast<NodeId>(store::KeyView(key).hash() % static_cast<uint64_t>(n)) + 1;
      };
      d.lease_us = o.lease_us;
      d.timeout_us = 2'000'000;
      d.invalidate_patience_us = 100'000;
      d.start_grace_us = 600'000;
      node->store = std::make_unique<Dkv>(*node->endpoint, d);
      node->slot->store(node->store.get());
    }
    for (auto& [id, node] : nodes) node->endpoint->Start();
    std::this_thread::sleep_for(std::chrono::milliseconds(700));  // leases, grace
  }
  ~NetCluster() {
    for (auto& [id, node] : nodes) node->endpoint->Stop();
    for (auto& [id, node] : nodes) node->slot->store(nullptr);
  }
  std::map<NodeId, std::unique_ptr<NetNode>> nodes;
};

// Waits for a callback run on another thread.
template <typename T>
struct Waiter {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<T> value;
  void Set(T v) {
    std::lock_guard<std::mutex> lock(mu);
    value = std::move(v);
    cv.notify_one();
  }
  T Wait() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return value.has_value(); });
    return std::move(*value);
  }
};

bool UnknownOutcome(const Status& s) {
  return s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kTimeout ||
         s.code() == StatusCode::kCancelled;
}

TEST(DkvNetTest, ConcurrentClientsOnLossyLoopbackStayLinearizable) {
  const uint64_t seed = testing::Seed(11, true);
  NetCluster c(3, seed, {.drop = 0.1, .duplicate = 0.05, .min_delay_us = 0, .max_delay_us = 2000});
  std::mutex history_mu;
  std::vector<lin::Operation> history;
  const std::vector<std::string> keys = {"a", "b", "c"};
  const uint64_t until = NowMicros() + 1'500'000;
  std::vector<std::thread> clients;
  for (int t = 0; t < 6; t++) {
    clients.emplace_back([&, t] {
      std::mt19937_64 rng(seed * 7 + static_cast<uint64_t>(t));
      Dkv& d = *c.nodes.at(static_cast<NodeId>(t % 3 + 1))->store;
      int seq = 0;
      std::map<std::string, lin::Value> last;
      while (NowMicros() < until) {
        lin::Operation op;
        op.client = t + 1;
        op.key = keys[rng() % keys.size()];
        const int dice = static_cast<int>(rng() % 100);
        const std::string mine = std::to_string((t + 1) * 1'000'000 + ++seq);
        Entry e{.type = 0, .expire_at_ms = 0, .payload = mine};
        op.call = NowMicros();
        Result<std::string> w = Status::Internal("unset");
        if (dice < 50) {
          op.kind = lin::OpKind::kGet;
          Result<store::ValuePtr> v = (dice % 2 == 0) ? d.GetBlocking(op.key) : [&] {
            Waiter<Result<store::ValuePtr>> wv;
            d.Get(op.key, [&](Result<store::ValuePtr> r) { wv.Set(std::move(r)); });
            return wv.Wait();
          }();
          op.ret = NowMicros();
          if (!v.ok()) continue;
          op.read = *v ? lin::Value(std::string((*v)->payload())) : std::nullopt;
          last[op.key] = op.read;
        } else {
          Waiter<Result<std::string>> ww;
          auto done = [&](Result<std::string> r) { ww.Set(std::move(r)); };
          if (dice < 70) {
            op.kind = lin::OpKind::kPut;
            op.value = mine;
            if (dice % 2 == 0) {
              done(d.PutVolatileBlocking(op.key, e));  // the blocking path, polling for its answer
            } else {
              d.PutVolatile(op.key, e, done);
            }
          } else if (dice < 80) {
            op.kind = lin::OpKind::kCompareAndPut;
            op.value = mine;
            auto it = last.find(op.key);
            op.expected = it == last.end() ? std::nullopt : it->second;
            std::optional<Entry> want;
            if (op.expected) want = Entry{.type = 0, .expire_at_ms = 0, .payload = *op.expected};
            d.CompareAndPut(op.key, want, e, done);
          } else if (dice < 85) {
            op.kind = lin::OpKind::kRemove;
            d.Remove(op.key, done);
          } else {
            op.kind = lin::OpKind::kIncrement;
            op.delta = 1;
            if (dice % 2 == 0) {
              done(d.WriteBlocking(op.key, kOpIncrement, "1"));
            } else {
              d.Atomic(op.key, kOpIncrement, "1", done);
            }
          }
          w = ww.Wait();
          op.ret = NowMicros();
          if (w.ok()) {
            if (op.kind == lin::OpKind::kCompareAndPut || op.kind == lin::OpKind::kRemove) {
              op.applied = *w == "1";
            } else if (op.kind == lin::OpKind::kIncrement) {
              op.counter = std::stoll(*w);
            }
          } else if (UnknownOutcome(w.status())) {
            op.outcome = lin::Outcome::kUnknown;
          } else {
            continue;  // refused at the home (an increment of a non-number): no effect
          }
        }
        std::lock_guard<std::mutex> lock(history_mu);
        history.push_back(std::move(op));
      }
    });
  }
  for (auto& th : clients) th.join();
  lin::CheckResult res = lin::Check(history);
  ASSERT_EQ(res.verdict, lin::Verdict::kOk) << res.explanation << "\n"
                                            << lin::FormatHistory(history);
  uint64_t hits = 0, waits = 0;
  for (auto& [id, node] : c.nodes) {
    hits += node->store->stats().cache_hits.load();
    waits += node->store->stats().lease_waits.load();
  }
  std::printf("%zu operations, %llu cache hits, %llu lease waits\n", history.size(),
              static_cast<unsigned long long>(hits), static_cast<unsigned long long>(waits));
  EXPECT_GT(history.size(), 100u);
}

}  // namespace
}  // namespace floe::dkv
