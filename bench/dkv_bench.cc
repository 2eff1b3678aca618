// The DKV's costs on loopback, against the RPC round trip beneath it, in one run
// (docs/perf.md, "DKV"): a local get, a cached get of a key homed elsewhere, a miss, and a
// volatile put to a remote home with 0 and with 2 cached copies to invalidate.
//
// Four nodes in this process, each with its own Asio loop thread, UDP/TCP transport and RPC
// endpoint, as `floe serve` will run them. Keys name their home: "n2:..." lives on node 2.

#include <benchmark/benchmark.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/base.h"
#include "dkv/dkv.h"
#include "net/net.h"
#include "rpc/rpc.h"

namespace {

using floe::Result;
using floe::net::NodeId;
namespace dkv = floe::dkv;

constexpr int kNodes = 4;
constexpr uint16_t kEcho = 150;  // a small inline method, the RPC baseline

NodeId HomeOf(std::string_view key) {
  return key.size() > 2 && key[0] == 'n' && key[2] == ':' ? static_cast<NodeId>(key[1] - '0') : 1;
}

// Waits for a callback that may run on another thread: spins (as a blocking RPC call does)
// and yields after a while.
struct Latch {
  std::atomic<bool> done{false};
  void Set() { done.store(true, std::memory_order_release); }
  void Wait() {
    for (int i = 0; !done.load(std::memory_order_acquire); i++) {
      if (i > 20'000) std::this_thread::yield();
    }
  }
};

struct Node {
  floe::net::AsioLoop loop;
  std::unique_ptr<floe::net::UdpTcpTransport> transport;
  std::unique_ptr<floe::rpc::Endpoint> endpoint;
  dkv::Dkv::Slot slot = dkv::Dkv::MakeSlot();
  std::unique_ptr<dkv::Dkv> store;
};

struct Cluster {
  Cluster() {
    for (int i = 1; i <= kNodes; i++) {
      auto n = std::make_unique<Node>();
      floe::net::TransportOptions t;
      t.self = static_cast<NodeId>(i);
      auto tr = floe::net::UdpTcpTransport::Start(n->loop, t);
      FLOE_CHECK(tr.ok());
      n->transport = std::move(tr).value();
      nodes[static_cast<NodeId>(i)] = std::move(n);
    }
    for (auto& [id, n] : nodes) {
      floe::rpc::Options o;
      for (auto& [other, m] : nodes) {
        if (other == id) continue;
        o.peers.push_back(other);
        n->transport->SetPeer({other, "127.0.0.1", m->transport->port()});
      }
      o.on_lease_lapse = dkv::Dkv::MakeLeaseHook(n->slot);
      n->endpoint = std::make_unique<floe::rpc::Endpoint>(*n->transport, o);
      n->endpoint->Register(
          kEcho, 2, [](NodeId, std::string_view r) { return Result<std::string>(std::string(r)); },
          /*runs_inline=*/true);
      dkv::Options d;
      d.self = id;
      d.home = HomeOf;
      n->store = std::make_unique<dkv::Dkv>(*n->endpoint, d);
      n->slot->store(n->store.get());
    }
    for (auto& [id, n] : nodes) n->endpoint->Start();
    // The homes serve once their start-up grace (rule L4) has passed.
    std::this_thread::sleep_for(std::chrono::microseconds(dkv::Options{}.start_grace_us));
    // Leases come with the first heartbeats.
    for (int i = 0; i < 100; i++) {
      bool all = true;
      const uint64_t now = floe::NowMicros();
      for (auto& [id, n] : nodes) {
        for (auto& [other, m] : nodes) {
          if (other != id && n->endpoint->LeaseUntil(other) <= now) all = false;
        }
      }
      if (all) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~Cluster() {
    for (auto& [id, n] : nodes) n->slot->store(nullptr);
    for (auto& [id, n] : nodes) n->endpoint->Stop();
  }
  dkv::Dkv& at(NodeId id) { return *nodes.at(id)->store; }

  Result<std::string> PutV(NodeId id, const std::string& key, std::string value) {
    Latch l;
    Result<std::string> out = floe::Status::Internal("unset");
    at(id).PutVolatile(key, dkv::Entry{.type = 0, .expire_at_ms = 0, .payload = std::move(value)},
                       [&](Result<std::string> r) {
                         out = std::move(r);
                         l.Set();
                       });
    l.Wait();
    return out;
  }
  Result<floe::store::ValuePtr> Get(NodeId id, const std::string& key) {
    Latch l;
    Result<floe::store::ValuePtr> out = floe::Status::Internal("unset");
    at(id).Get(key, [&](Result<floe::store::ValuePtr> r) {
      out = std::move(r);
      l.Set();
    });
    l.Wait();
    return out;
  }

  std::map<NodeId, std::unique_ptr<Node>> nodes;
};

Cluster& TheCluster() {
  static Cluster* c = new Cluster();  // lives for the process: its threads serve every run
  return *c;
}

void BM_LocalGet(benchmark::State& state) {
  Cluster& c = TheCluster();
  FLOE_CHECK(c.PutV(1, "n1:local", "value").ok());
  for (auto _ : state) {
    auto v = c.at(1).TryGetLocal("n1:local");
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK(BM_LocalGet);

void BM_CachedGet(benchmark::State& state) {
  Cluster& c = TheCluster();
  FLOE_CHECK(c.PutV(2, "n2:cached", "value").ok());
  FLOE_CHECK(c.Get(1, "n2:cached").ok());
  for (auto _ : state) {
    auto v = c.at(1).TryGetLocal("n2:cached");
    if (!v) state.SkipWithError("not cached");
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK(BM_CachedGet);

void BM_RpcRoundTrip(benchmark::State& state) {
  Cluster& c = TheCluster();
  const std::string msg(32, 'x');
  for (auto _ : state) {
    Result<std::string> r = c.nodes[1]->endpoint->Call(2, kEcho, msg, 5'000'000);
    if (!r.ok()) state.SkipWithError(r.status().ToString().c_str());
  }
}
BENCHMARK(BM_RpcRoundTrip)->UseRealTime();

void BM_RpcAsyncRoundTrip(benchmark::State& state) {
  Cluster& c = TheCluster();
  const std::string msg(32, 'x');
  for (auto _ : state) {
    Latch l;
    c.nodes[1]->endpoint->CallAsync(2, kEcho, msg, 5'000'000, [&](Result<std::string> r) {
      if (!r.ok()) std::abort();
      l.Set();
    });
    l.Wait();
  }
}
BENCHMARK(BM_RpcAsyncRoundTrip)->UseRealTime();

void BM_Miss(benchmark::State& state) {
  Cluster& c = TheCluster();
  const bool blocking = state.range(0) != 0;
  // Every iteration reads a key node 1 has not cached; the pool is refilled (untimed) when used.
  constexpr int kPool = 20'000;
  static bool filled = false;
  if (!filled) {
    for (int i = 0; i < kPool; i++) {
      FLOE_CHECK(c.at(1)
                     .Put("n2:miss" + std::to_string(i),
                          dkv::Entry{.type = 0, .expire_at_ms = 0, .payload = "value"})
                     .ok());
    }
    c.at(1).Fence();
    filled = true;
  }
  c.at(1).TrimCache();
  int next = 0;
  for (auto _ : state) {
    if (next == kPool) {
      state.PauseTiming();
      c.at(1).TrimCache();
      next = 0;
      state.ResumeTiming();
    }
    const std::string key = "n2:miss" + std::to_string(next++);
    Result<floe::store::ValuePtr> v = blocking ? c.at(1).GetBlocking(key) : c.Get(1, key);
    if (!v.ok() || !*v) state.SkipWithError("miss failed");
  }
  state.counters["misses"] = static_cast<double>(c.at(1).stats().misses.load());
}
BENCHMARK(BM_Miss)->Arg(0)->Arg(1)->ArgName("blocking")->UseRealTime();

void BM_PutVolatile(benchmark::State& state) {
  Cluster& c = TheCluster();
  const bool copies = state.range(0) != 0;
  const bool blocking = state.range(1) != 0;
  const std::string key = copies ? "n2:put-copies" : "n2:put-alone";
  FLOE_CHECK(c.PutV(1, key, "0").ok());
  const uint64_t inval_before = c.at(2).stats().invalidations_sent.load();
  int i = 0;
  for (auto _ : state) {
    if (copies) {
      state.PauseTiming();
      FLOE_CHECK(c.Get(3, key).ok());
      FLOE_CHECK(c.Get(4, key).ok());
      state.ResumeTiming();
    }
    const dkv::Entry e{.type = 0, .expire_at_ms = 0, .payload = std::to_string(i++)};
    const bool ok =
        blocking ? c.at(1).PutVolatileBlocking(key, e).ok() : c.PutV(1, key, e.payload).ok();
    if (!ok) state.SkipWithError("put failed");
  }
  state.counters["invalidations_per_put"] =
      static_cast<double>(c.at(2).stats().invalidations_sent.load() - inval_before) /
      static_cast<double>(state.iterations());
}
BENCHMARK(BM_PutVolatile)
    ->ArgsProduct({{0, 2}, {0, 1}})
    ->ArgNames({"copies", "blocking"})
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
