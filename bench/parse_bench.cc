// CSV import: rows/s and MB/s of ParseFile on a generated file (integers, decimals, a
// categorical, a string, a time column), with 1 thread and with every core.
//
// The file is written once to $FLOE_PARSE_BENCH_FILE (default /tmp/floe_parse_bench.csv),
// $FLOE_PARSE_BENCH_MB megabytes (default 150), and kept for side-by-side runs (DuckDB's
// read_csv on the same file: docs/frame.md, "CSV import"). Names: Parse/threads:<n>;
// bytes_per_second is input bytes, items_per_second rows.

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "parse/parse.h"

namespace floe::parse {
namespace {

std::string BenchFile() {
  const char* path = std::getenv("FLOE_PARSE_BENCH_FILE");
  const std::string file = path != nullptr ? path : "/tmp/floe_parse_bench.csv";
  const char* mb = std::getenv("FLOE_PARSE_BENCH_MB");
  const uint64_t bytes = (mb != nullptr ? std::strtoull(mb, nullptr, 10) : 150) << 20;
  std::error_code ec;
  if (std::filesystem::file_size(file, ec) >= bytes && !ec) return file;
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  std::mt19937_64 rng(42);
  static const char* kCities[] = {"Paris", "Lyon", "Nantes", "Lille",
                                  "Brest", "Nice", "Metz",   "Pau"};
  out << "id,qty,price,score,city,note,day\n";
  std::string row;
  uint64_t written = 0;
  for (uint64_t id = 0; written < bytes; id++) {
    const uint64_t r = rng();
    row = std::to_string(id) + "," + std::to_string(r % 1000) + "," +
          std::to_string(r % 100000 / 100) + "." + std::to_string(10 + r % 90) + "," +
          std::to_string(static_cast<double>(r >> 11) / 9007199254740992.0) + "," +
          kCities[(r >> 20) % 8] + ",note " + std::to_string((r >> 24) % 100000) + ",2024-0" +
          std::to_string(1 + (r >> 40) % 9) + "-1" + std::to_string((r >> 44) % 10) + "\n";
    out << row;
    written += row.size();
  }
  return file;
}

void Parse(benchmark::State& state) {
  static const std::string file = BenchFile();
  const auto size = static_cast<int64_t>(std::filesystem::file_size(file));
  ParseOptions options;
  options.threads = static_cast<uint32_t>(state.range(0));
  uint64_t rows = 0;
  for (auto _ : state) {
    Result<ParseResult> r = ParseFile(file, options);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      return;
    }
    rows = r->frame.rows();
    benchmark::DoNotOptimize(r->frame.compressed_bytes());
  }
  state.SetBytesProcessed(size * static_cast<int64_t>(state.iterations()));
  state.SetItemsProcessed(static_cast<int64_t>(rows) * static_cast<int64_t>(state.iterations()));
  state.counters["rows"] = static_cast<double>(rows);
}
BENCHMARK(Parse)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency())))
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace floe::parse

BENCHMARK_MAIN();
