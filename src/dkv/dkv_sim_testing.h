// Test-only: a DKV cluster on the simulated network (net::SimNetwork: one thread, a virtual
// clock, seeded faults), shared by dkv_test.cc and dkv_history_test.cc.

#ifndef FLOE_DKV_DKV_SIM_TESTING_H_
#define FLOE_DKV_DKV_SIM_TESTING_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "dkv/dkv.h"
#include "net/net.h"
#include "rpc/rpc.h"

namespace floe::dkv::sim {

inline constexpr int64_t kEpochMs = 1'800'000'000'000;  // the virtual wall clock's origin

// Keys that name their home, "n<id>:...", live on node <id>; others by hash.
inline NodeId PrefixHome(std::string_view key, int nodes) {
  if (key.size() > 2 && key[0] == 'n' && key[2] == ':') return static_cast<NodeId>(key[1] - '0');
  return static_cast<NodeId>(store::KeyView(key).hash() % static_cast<uint64_t>(nodes)) + 1;
}

inline Entry Str(std::string s) {
  return Entry{.type = 0, .expire_at_ms = 0, .payload = std::move(s)};
}

struct SimSetup {
  uint64_t lease_us = 2'000'000;
  uint64_t heartbeat_us = 200'000;
  uint64_t down_after_us = 3'000'000;
  uint64_t timeout_us = 3'000'000;
  uint64_t patience_us = 100'000;
  uint64_t seed_mul = 31;  // endpoint seeds are seed * seed_mul + id
  std::function<NodeId(std::string_view key, int nodes)> home = PrefixHome;
  std::function<void(NodeId, Options&)> tweak;  // per node, before its Dkv is made
};

class SimCluster {
 public:
  SimCluster(int n, uint64_t seed, std::function<void(NodeId, Options&)> tweak = nullptr)
      : SimCluster(n, seed, SimSetup{.tweak = std::move(tweak)}) {}
  SimCluster(int n, uint64_t seed, SimSetup setup)
      : net(seed), nodes_(n), seed_(seed), setup_(std::move(setup)) {
    for (int i = 1; i <= n; i++) Start(static_cast<NodeId>(i), seed * setup_.seed_mul + i);
    for (auto& [id, e] : eps) e->Start();
    // Leases, and the homes' start-up grace (rule L4).
    net.RunFor(setup_.lease_us + setup_.lease_us / 10);
  }
  ~SimCluster() {
    for (auto& [id, s] : slots) s->store(nullptr);
  }
  SimCluster(const SimCluster&) = delete;
  SimCluster& operator=(const SimCluster&) = delete;

  Dkv& at(NodeId id) { return *dkvs.at(id); }

  // A restart of node `id`: a new endpoint (a new incarnation) and an empty store.
  void Restart(NodeId id) {
    slots[id]->store(nullptr);
    dkvs.erase(id);
    eps.erase(id);
    Start(id, seed_ * setup_.seed_mul + id + 1000);
    eps[id]->Start();
  }

  Result<store::ValuePtr> Get(NodeId id, std::string_view key) {
    std::optional<Result<store::ValuePtr>> out;
    at(id).Get(key, [&](Result<store::ValuePtr> r) { out = std::move(r); });
    net.RunUntil([&] { return out.has_value(); }, 60'000'000);
    if (!out) return Status::Timeout("no answer in the simulation");
    return std::move(*out);
  }
  // The value as a string, "<absent>", or the error.
  std::string GetText(NodeId id, std::string_view key) {
    Result<store::ValuePtr> r = Get(id, key);
    if (!r.ok()) return r.status().ToString();
    return *r ? std::string((*r)->payload()) : "<absent>";
  }
  Result<std::string> Wait(const std::function<void(Dkv::WriteDone)>& op) {
    std::optional<Result<std::string>> out;
    op([&](Result<std::string> r) { out = std::move(r); });
    net.RunUntil([&] { return out.has_value(); }, 60'000'000);
    if (!out) return Status::Timeout("no answer in the simulation");
    return std::move(*out);
  }
  Result<std::string> PutV(NodeId id, std::string_view key, std::string v) {
    return Wait([&](Dkv::WriteDone d) { at(id).PutVolatile(key, Str(std::move(v)), d); });
  }
  // Whether `id` can answer `key` without a message, and with what.
  std::string Local(NodeId id, std::string_view key) {
    std::optional<store::ValuePtr> v = at(id).TryGetLocal(key);
    if (!v) return "<miss>";
    return *v ? std::string((*v)->payload()) : "<absent>";
  }
  int64_t NowMs() const { return kEpochMs + static_cast<int64_t>(net.NowMicros() / 1000); }

  net::SimNetwork net;
  std::map<NodeId, Dkv::Slot> slots;
  std::map<NodeId, std::unique_ptr<rpc::Endpoint>> eps;
  std::map<NodeId, std::unique_ptr<Dkv>> dkvs;

 private:
  void Start(NodeId id, uint64_t rpc_seed) {
    rpc::Options o;
    for (int j = 1; j <= nodes_; j++) {
      if (static_cast<NodeId>(j) != id) o.peers.push_back(static_cast<NodeId>(j));
    }
    o.inline_handlers = true;
    o.seed = rpc_seed;
    o.lease_us = setup_.lease_us;
    o.heartbeat_interval_us = setup_.heartbeat_us;
    o.down_after_us = setup_.down_after_us;
    if (!slots.count(id)) slots[id] = Dkv::MakeSlot();
    o.on_lease_lapse = Dkv::MakeLeaseHook(slots[id]);
    eps[id] = std::make_unique<rpc::Endpoint>(net.AddNode(id), o);
    Options d;
    d.self = id;
    d.home = [home = setup_.home, n = nodes_](std::string_view key) { return home(key, n); };
    d.lease_us = setup_.lease_us;
    d.timeout_us = setup_.timeout_us;
    d.invalidate_patience_us = setup_.patience_us;
    d.start_grace_us = setup_.lease_us + setup_.lease_us / 20 + 1000;
    d.now_ms = [this] { return NowMs(); };
    if (setup_.tweak) setup_.tweak(id, d);
    dkvs[id] = std::make_unique<Dkv>(*eps[id], d);
    slots[id]->store(dkvs[id].get());
  }

  int nodes_;
  uint64_t seed_;
  SimSetup setup_;
};

}  // namespace floe::dkv::sim

#endif  // FLOE_DKV_DKV_SIM_TESTING_H_
