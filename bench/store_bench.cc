// The store against three concurrent hash maps from Debian, on the identical workload, in one
// run: tbb::concurrent_hash_map, libcuckoo's cuckoohash_map and liburcu's cds_lfht.
//
// Workload: 16-byte keys, 8-byte values; 10,000 keys (cache-resident) and 1,000,000 keys; 1 and
// 2 threads. Operations: GetHit (copy the value out), GetMiss, PutOverwrite (replace the value
// of a present key), Mixed90 (90% GetHit, 10% PutOverwrite). Keys are visited in a shuffled
// order stored contiguously, so reading the next key costs no cache miss of its own.
//
// Fairness rules: every implementation hashes with the same xxh3 and keeps its 16-byte keys
// inline, as a std::array<char, 16> (Floe keeps them in the value's one allocation, liburcu in
// its node): no map pays a heap allocation or a pointer per key that another does not. Lookups
// take the key by reference; nothing is built per lookup. liburcu's table is created with as
// many buckets as keys (its automatic resize runs later, on a helper thread, and would leave a
// short run with long chains). The libraries store a uint64_t value and update it in place;
// Floe stores immutable values, so its PutOverwrite allocates a new value and retires the old
// one. liburcu uses the memb flavor with inline read-side locks (_LGPL_SOURCE), its fastest.
//
// Run with --benchmark_repetitions=3 (or more) and read medians: bench/store_goals.py does.
// Names: <Op>/<Impl>/keys:<N>/real_time/threads:<T>; items_per_second is the total over threads.

#define _LGPL_SOURCE 1
#include <benchmark/benchmark.h>
#include <oneapi/tbb/concurrent_hash_map.h>
#include <urcu/rculfhash.h>
#include <urcu/urcu-memb.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <libcuckoo/cuckoohash_map.hh>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "store/store.h"

namespace floe {
namespace {

using KeyBytes = std::array<char, 16>;

std::string_view View(const KeyBytes& k) { return {k.data(), k.size()}; }

KeyBytes MakeKey(char prefix, size_t i) {
  KeyBytes k;
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%c%015zu", prefix, i);
  std::memcpy(k.data(), buf, 16);
  return k;
}

// The keys of one size, present (hit) and absent (miss), each in its own shuffled order.
struct Keys {
  std::vector<KeyBytes> hit;
  std::vector<KeyBytes> miss;
  explicit Keys(size_t n) {
    hit.reserve(n);
    miss.reserve(n);
    for (size_t i = 0; i < n; i++) {
      hit.push_back(MakeKey('k', i));
      miss.push_back(MakeKey('m', i));
    }
    std::mt19937_64 rng(42);
    std::shuffle(hit.begin(), hit.end(), rng);
    std::shuffle(miss.begin(), miss.end(), rng);
  }
};

struct KeyHasher {
  size_t operator()(const KeyBytes& k) const { return HashBytes(View(k)); }
};
struct KeyEq {
  bool operator()(const KeyBytes& a, const KeyBytes& b) const {
    return std::memcmp(a.data(), b.data(), a.size()) == 0;
  }
};

// ---------------------------------------------------------------------------------------------
class FloeMap {
 public:
  explicit FloeMap(size_t /*expected_keys*/) {}
  void Put(const KeyBytes& key, uint64_t v) {
    store_.Put(*store::Value::Make(View(key), 1, {reinterpret_cast<const char*>(&v), sizeof(v)}));
  }
  bool Get(const KeyBytes& key, uint64_t* out) const {
    return store_.Read(View(key), [&](const store::Value& v) {
      std::memcpy(out, v.payload().data(), sizeof(*out));
    });
  }

 private:
  store::Store store_;
};

class TbbMap {
 public:
  struct HashCompare {
    static size_t hash(const KeyBytes& k) { return HashBytes(View(k)); }
    static bool equal(const KeyBytes& a, const KeyBytes& b) { return KeyEq()(a, b); }
  };
  explicit TbbMap(size_t /*expected_keys*/) {}
  void Put(const KeyBytes& key, uint64_t v) {
    Map::accessor a;
    map_.insert(a, key);  // finds the key if present
    a->second = v;
  }
  bool Get(const KeyBytes& key, uint64_t* out) const {
    Map::const_accessor a;
    if (!map_.find(a, key)) return false;
    *out = a->second;
    return true;
  }

 private:
  using Map = tbb::concurrent_hash_map<KeyBytes, uint64_t, HashCompare>;
  Map map_;
};

class CuckooMap {
 public:
  explicit CuckooMap(size_t /*expected_keys*/) {}
  void Put(const KeyBytes& key, uint64_t v) { map_.insert_or_assign(key, v); }
  bool Get(const KeyBytes& key, uint64_t* out) const { return map_.find(key, *out); }

 private:
  libcuckoo::cuckoohash_map<KeyBytes, uint64_t, KeyHasher, KeyEq> map_;
};

class LfhtMap {
 public:
  explicit LfhtMap(size_t expected_keys) {
    RegisterThread();
    // One bucket per key from the start (a power of two, as liburcu requires).
    const unsigned long buckets = std::bit_ceil(std::max<size_t>(expected_keys, 1024));
    ht_ = cds_lfht_new_flavor(buckets, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
                              &urcu_memb_flavor, nullptr);
  }
  // Nodes still in the table are left to the process's exit: freeing them would need every
  // benchmark thread's RCU registration torn down in order, which buys nothing here.

  void Put(const KeyBytes& key, uint64_t v) {
    auto* node = new Node;
    std::memcpy(node->key, key.data(), 16);
    node->value = v;
    cds_lfht_node_init(&node->node);
    const uint64_t h = HashBytes(View(key));
    urcu_memb_read_lock();
    cds_lfht_node* old = cds_lfht_add_replace(ht_, h, Match, node->key, &node->node);
    urcu_memb_read_unlock();
    if (old != nullptr) {
      urcu_memb_call_rcu(&caa_container_of(old, Node, node)->rcu, FreeNode);
    }
  }
  bool Get(const KeyBytes& key, uint64_t* out) const {
    cds_lfht_iter iter;
    urcu_memb_read_lock();
    cds_lfht_lookup(ht_, HashBytes(View(key)), Match, key.data(), &iter);
    cds_lfht_node* n = cds_lfht_iter_get_node(&iter);
    const bool found = n != nullptr;
    if (found) *out = caa_container_of(n, Node, node)->value;
    urcu_memb_read_unlock();
    return found;
  }
  // Registers the calling thread with RCU until it exits (benchmark threads come and go).
  static void RegisterThread() {
    struct Registration {
      Registration() { urcu_memb_register_thread(); }
      ~Registration() { urcu_memb_unregister_thread(); }
    };
    thread_local Registration registration;
  }

 private:
  struct Node {
    cds_lfht_node node;
    char key[16];
    uint64_t value;
    rcu_head rcu;
  };
  static int Match(cds_lfht_node* n, const void* key) {
    return std::memcmp(caa_container_of(n, Node, node)->key, key, 16) == 0;
  }
  static void FreeNode(rcu_head* head) { delete caa_container_of(head, Node, rcu); }
  cds_lfht* ht_;
};

// ---------------------------------------------------------------------------------------------
// One map per (implementation, size), built once and shared by every benchmark that uses it.
template <typename Map>
struct Fixture {
  Keys keys;
  Map map;
  explicit Fixture(size_t n) : keys(n), map(n) {
    for (size_t i = 0; i < n; i++) map.Put(keys.hit[i], i);
  }
  static Fixture& For(size_t n) {
    static std::mutex mu;
    static std::map<size_t, std::unique_ptr<Fixture>> all;
    std::lock_guard<std::mutex> lock(mu);
    auto& f = all[n];
    if (!f) f = std::make_unique<Fixture>(n);
    return *f;
  }
};

template <typename Map>
void PrepareThread() {
  if constexpr (std::is_same_v<Map, LfhtMap>) LfhtMap::RegisterThread();
}

template <typename Map>
void GetHit(benchmark::State& state) {
  PrepareThread<Map>();
  auto& f = Fixture<Map>::For(static_cast<size_t>(state.range(0)));
  const size_t n = f.keys.hit.size();
  size_t i = (static_cast<size_t>(state.thread_index()) * n) / 2;
  uint64_t out = 0;
  for (auto _ : state) {
    bool found = f.map.Get(f.keys.hit[i], &out);
    benchmark::DoNotOptimize(found);
    benchmark::DoNotOptimize(out);
    if (++i == n) i = 0;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

template <typename Map>
void GetMiss(benchmark::State& state) {
  PrepareThread<Map>();
  auto& f = Fixture<Map>::For(static_cast<size_t>(state.range(0)));
  const size_t n = f.keys.miss.size();
  size_t i = (static_cast<size_t>(state.thread_index()) * n) / 2;
  uint64_t out = 0;
  for (auto _ : state) {
    bool found = f.map.Get(f.keys.miss[i], &out);
    benchmark::DoNotOptimize(found);
    if (++i == n) i = 0;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

template <typename Map>
void PutOverwrite(benchmark::State& state) {
  PrepareThread<Map>();
  auto& f = Fixture<Map>::For(static_cast<size_t>(state.range(0)));
  const size_t n = f.keys.hit.size();
  size_t i = (static_cast<size_t>(state.thread_index()) * n) / 2;
  uint64_t v = 0;
  for (auto _ : state) {
    f.map.Put(f.keys.hit[i], v++);
    if (++i == n) i = 0;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

template <typename Map>
void Mixed90(benchmark::State& state) {
  PrepareThread<Map>();
  auto& f = Fixture<Map>::For(static_cast<size_t>(state.range(0)));
  const size_t n = f.keys.hit.size();
  size_t i = (static_cast<size_t>(state.thread_index()) * n) / 2;
  uint64_t out = 0;
  unsigned step = 0;
  for (auto _ : state) {
    if (++step == 10) {
      step = 0;
      f.map.Put(f.keys.hit[i], out);
    } else {
      bool found = f.map.Get(f.keys.hit[i], &out);
      benchmark::DoNotOptimize(found);
    }
    if (++i == n) i = 0;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

template <typename Map>
void RegisterAll(const char* impl) {
  struct Op {
    const char* name;
    void (*fn)(benchmark::State&);
  };
  const Op ops[] = {{"GetHit", GetHit<Map>},
                    {"GetMiss", GetMiss<Map>},
                    {"PutOverwrite", PutOverwrite<Map>},
                    {"Mixed90", Mixed90<Map>}};
  for (const Op& op : ops) {
    for (int64_t keys : {int64_t{10000}, int64_t{1000000}}) {
      std::string name = std::string(op.name) + "/" + impl;
      benchmark::RegisterBenchmark(name.c_str(), op.fn)
          ->ArgName("keys")
          ->Arg(keys)
          ->UseRealTime()
          ->Threads(1)
          ->Threads(2);
    }
  }
}

}  // namespace
}  // namespace floe

int main(int argc, char** argv) {
  floe::RegisterAll<floe::FloeMap>("Floe");
  floe::RegisterAll<floe::TbbMap>("Tbb");
  floe::RegisterAll<floe::CuckooMap>("Cuckoo");
  floe::RegisterAll<floe::LfhtMap>("Lfht");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
