// Map/reduce against memory bandwidth (docs/perf.md, "Map/reduce"): the sum of a plain array of
// doubles on 1 thread and on every core (the probe: what the memory system gives), then the
// map/reduce sum of a real column over a frame of the same doubles, stored raw (random doubles
// compress to nothing smaller), with the same threads. bytes_per_second is raw bytes read.
//
// $FLOE_MR_BENCH_MB (default 800) sets the data size; the array and the frame are built once.
// Names: ArraySum/threads:<n>, MrSum/threads:<n>.

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "frame/frame.h"
#include "mr/mr.h"

namespace floe::mr {
namespace {

uint64_t Rows() {
  const char* mb = std::getenv("FLOE_MR_BENCH_MB");
  return ((mb != nullptr ? std::strtoull(mb, nullptr, 10) : 800) << 20) / 8;
}

const std::vector<double>& Values() {
  static const std::vector<double> values = [] {
    std::vector<double> v(Rows());
    std::mt19937_64 rng(7);
    for (double& x : v) x = static_cast<double>(rng() >> 11) / 9007199254740992.0;
    return v;
  }();
  return values;
}

const frame::Frame& TheFrame() {
  static const frame::Frame f = [] {
    const std::vector<double>& v = Values();
    // Chunks of 4 MiB of raw doubles, as the builder cuts them by default.
    constexpr size_t kRowsPerChunk = (size_t{4} << 20) / 8;
    std::vector<std::shared_ptr<const std::string>> chunks;
    for (size_t at = 0; at < v.size(); at += kRowsPerChunk) {
      const size_t n = std::min(kRowsPerChunk, v.size() - at);
      chunks.push_back(std::make_shared<const std::string>(
          frame::Compress(std::span<const double>(v.data() + at, n))));
    }
    Result<frame::Vec> vec = frame::Vec::Make(frame::ColumnType::kReal, {}, std::move(chunks));
    Result<frame::Frame> frame = frame::Frame::Make({"x"}, {std::move(vec).value()});
    return std::move(frame).value();
  }();
  return f;
}

// The probe: each thread sums its contiguous share with four accumulators (so the adds are not
// one dependency chain), as any tuned loop over memory would.
double SumRange(const double* p, size_t n) {
  double a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  for (; i < n; i++) a += p[i];
  return (a + b) + (c + d);
}

void ArraySum(benchmark::State& state) {
  const std::vector<double>& v = Values();
  const auto threads = static_cast<size_t>(state.range(0));
  double total = 0;
  for (auto _ : state) {
    std::vector<double> parts(threads);
    std::vector<std::thread> workers;
    for (size_t t = 0; t < threads; t++) {
      workers.emplace_back([&, t] {
        const size_t lo = v.size() * t / threads, hi = v.size() * (t + 1) / threads;
        parts[t] = SumRange(v.data() + lo, hi - lo);
      });
    }
    for (auto& w : workers) w.join();
    total = 0;
    for (double p : parts) total += p;
    benchmark::DoNotOptimize(total);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * v.size() * 8));
}

void MrSum(benchmark::State& state) {
  const frame::Frame& f = TheFrame();
  const frame::Vec& x = f.vec(0);
  for (auto _ : state) {
    Result<double> sum = MapReduce<double>(
        x.chunk_count(), [&](size_t k) { return ChunkSum(x.chunk(k)).sum; },
        [](double& a, double&& b) { a += b; }, {.threads = static_cast<uint32_t>(state.range(0))});
    if (!sum.ok()) state.SkipWithError(sum.status().ToString().c_str());
    benchmark::DoNotOptimize(*sum);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.raw_bytes()));
}

const int kCores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
BENCHMARK(ArraySum)->Arg(1)->Arg(kCores)->ArgName("threads")->UseRealTime()->Unit(
    benchmark::kMillisecond);
BENCHMARK(MrSum)->Arg(1)->Arg(kCores)->ArgName("threads")->UseRealTime()->Unit(
    benchmark::kMillisecond);

}  // namespace
}  // namespace floe::mr

BENCHMARK_MAIN();
