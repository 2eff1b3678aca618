// HyperLogLog micro-benchmarks: adding one element (hash included), estimating, union of 1,000
// sketches, and serializing, at PostgreSQL's default size (log2m 11) and Redis's (14, 6 bits).
//
// Names: <Op>/<Impl>/log2m:<p>; items_per_second counts elements (Add) or sketches (Union).

#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "sketch/sketch.h"

namespace floe::sketch {
namespace {

HyperLogLog Filled(int log2m, int regwidth, uint64_t n, uint64_t seed) {
  HyperLogLog h = HyperLogLog::Create({log2m, regwidth, -1, true}).value();
  std::mt19937_64 rng(seed);
  for (uint64_t i = 0; i < n; i++) h.AddHash(rng());
  return h;
}

// Every iteration adds an element never added before, as PFADD of new elements does. (Adding
// the same 4,096 again, as this once did, left the registers untouched after the first pass.)
// Elements are made in batches outside the timed region; `changed` is the share of adds that
// raised a register.
void AddText(benchmark::State& state) {
  const int log2m = static_cast<int>(state.range(0));
  HyperLogLog h = Filled(log2m, log2m == 14 ? 6 : 5, 100000, 1);  // registers, not EXPLICIT
  constexpr size_t kBatch = size_t{1} << 16;
  std::vector<std::string> items(kBatch);
  uint64_t next = 0;
  auto refill = [&] {
    for (std::string& item : items) item = "element:" + std::to_string(next++);
  };
  refill();
  size_t i = 0;
  int64_t changed = 0;
  for (auto _ : state) {
    if (i == kBatch) {
      state.PauseTiming();
      refill();
      i = 0;
      state.ResumeTiming();
    }
    changed += h.AddHash(HyperLogLog::HashBytes(items[i++])) ? 1 : 0;
  }
  benchmark::DoNotOptimize(changed);
  state.counters["changed"] =
      static_cast<double>(changed) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void Count(benchmark::State& state) {
  const int log2m = static_cast<int>(state.range(0));
  const HyperLogLog h = Filled(log2m, log2m == 14 ? 6 : 5, 1000000, 2);
  for (auto _ : state) benchmark::DoNotOptimize(h.Cardinality());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void Union1000(benchmark::State& state) {
  const int log2m = static_cast<int>(state.range(0));
  std::vector<HyperLogLog> parts;
  for (int i = 0; i < 1000; i++) parts.push_back(Filled(log2m, 5, 5000, 100 + i));
  for (auto _ : state) {
    HyperLogLog u = HyperLogLog::Create({log2m, 5, -1, true}).value();
    for (const HyperLogLog& p : parts) benchmark::DoNotOptimize(u.Merge(p).ok());
    benchmark::DoNotOptimize(u.Cardinality());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 1000);
}

void Serialize(benchmark::State& state) {
  const int log2m = static_cast<int>(state.range(0));
  const HyperLogLog h = Filled(log2m, 5, 1000000, 3);
  for (auto _ : state) benchmark::DoNotOptimize(h.Serialize());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

BENCHMARK(AddText)->Name("HllAdd/Floe")->ArgName("log2m")->Arg(11)->Arg(14);
BENCHMARK(Count)->Name("HllCount/Floe")->ArgName("log2m")->Arg(11)->Arg(14);
BENCHMARK(Union1000)->Name("HllUnion1000/Floe")->ArgName("log2m")->Arg(11)->Arg(14);
BENCHMARK(Serialize)->Name("HllSerializeFull/Floe")->ArgName("log2m")->Arg(11)->Arg(14);

}  // namespace
}  // namespace floe::sketch

BENCHMARK_MAIN();
