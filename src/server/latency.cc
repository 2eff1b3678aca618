// Per-command latency histograms (server.h, "Per-command latency"), INFO latencystats'
// percentiles and CONFIG RESETSTAT.
//
// How it works (LatencyBucket, server.h): a duration in nanoseconds falls in a bucket by its
// leading bits. Below 4 ns the bucket is the value; from there, a value with its highest set
// bit at position e (2^e <= ns < 2^(e+1)) lands in one of four buckets splitting
// [2^e, 2^(e+1)) evenly, chosen by the two bits after the highest: bucket = 4 * (e - 1) +
// those two bits. So each bucket is at most a quarter of its lower bound wide, indexing is a
// count-leading-zeros and two shifts, and 140 buckets reach 2^36 ns. The boundaries are powers
// of two every four buckets, which is where /metrics places its `le` boundaries
// (src/http/metrics.cc).

#include <algorithm>
#include <cmath>
#include <new>

#include "server/internal/command.h"

namespace floe::server {

WorkerStats::~WorkerStats() {
  if (!latency) return;
  for (size_t i = 0; i < internal::AllCommands().size(); i++) {
    delete latency[i].load(std::memory_order_relaxed);  // no worker runs any more
  }
}

void RecordLatency(WorkerStats& stats, size_t index, uint64_t ticks) {
  // relaxed: only this worker stores the pointer, and it reads its own store.
  LatencyCounts* counts = stats.latency[index].load(std::memory_order_relaxed);
  if (counts == nullptr) {
    // Not recorded when memory is out: the command has been applied, and its reply must not
    // turn into an OOM error because of a statistic.
    counts = new (std::nothrow) LatencyCounts();
    if (counts == nullptr) return;
    // release: a reader (INFO on another thread) that sees the pointer sees zeroed counts.
    stats.latency[index].store(counts, std::memory_order_release);
  }
  const double ns = CyclesToMicros(ticks) * 1000.0;
  Bump(counts->buckets[LatencyBucket(ns < 1e18 ? static_cast<uint64_t>(ns) : UINT64_MAX)]);
}

std::vector<CommandLatency> CommandLatencies(Engine& engine) {
  std::vector<CommandLatency> out;
  for (const internal::CommandSpec* spec : internal::AllCommands()) {
    const auto i = static_cast<size_t>(spec->index);
    CommandLatency c{.name = spec->name};
    uint64_t ticks = 0;
    for (int w = 0; w <= engine.proxy_worker(); w++) {
      WorkerStats& s = engine.stats(w);
      // acquire: pairs with RecordLatency's release.
      const LatencyCounts* counts = s.latency[i].load(std::memory_order_acquire);
      if (counts == nullptr) continue;
      if (c.buckets.empty()) c.buckets.assign(kLatencyBuckets, 0);
      for (size_t b = 0; b < kLatencyBuckets; b++) {
        const uint64_t n = counts->buckets[b].load(std::memory_order_relaxed);
        c.buckets[b] += n;
        c.count += n;
      }
      ticks += s.ticks[i].load(std::memory_order_relaxed);
    }
    if (c.count == 0) continue;
    c.sum_seconds = CyclesToMicros(ticks) / 1e6;
    out.push_back(std::move(c));
  }
  return out;
}

double LatencyPercentileUsec(const CommandLatency& latency, double percentile) {
  if (latency.count == 0) return 0;
  // The rank of the percentile's call, 1-based: at least the first, at most the last. (The
  // slack keeps 99.9% of 1000 at rank 999: in doubles it comes out a hair above.)
  const double wanted = percentile / 100.0 * static_cast<double>(latency.count);
  const auto rank = std::max<uint64_t>(
      1, std::min(latency.count, static_cast<uint64_t>(std::ceil(wanted - 1e-6))));
  uint64_t seen = 0;
  for (size_t b = 0; b < latency.buckets.size(); b++) {
    seen += latency.buckets[b];
    if (seen >= rank) return static_cast<double>(LatencyBucketEndNs(b)) / 1000.0;
  }
  return static_cast<double>(LatencyBucketEndNs(kLatencyBuckets - 1)) / 1000.0;
}

void ResetStats(Engine& engine) {
  const size_t commands = internal::AllCommands().size();
  for (int w = 0; w <= engine.proxy_worker(); w++) {
    WorkerStats& s = engine.stats(w);
    for (std::atomic<uint64_t>* counter :
         {&s.commands, &s.keyspace_hits, &s.keyspace_misses, &s.expired_keys, &s.net_input_bytes,
          &s.net_output_bytes, &s.connections, &s.rejected_connections, &s.rejected_calls}) {
      counter->store(0, std::memory_order_relaxed);
    }
    for (auto& e : s.error_replies) e.store(0, std::memory_order_relaxed);
    for (size_t i = 0; i < commands; i++) {
      s.calls[i].store(0, std::memory_order_relaxed);
      s.ticks[i].store(0, std::memory_order_relaxed);
      s.failed[i].store(0, std::memory_order_relaxed);
      if (LatencyCounts* counts = s.latency[i].load(std::memory_order_relaxed)) {
        for (auto& b : counts->buckets) b.store(0, std::memory_order_relaxed);
      }
    }
  }
}

}  // namespace floe::server
