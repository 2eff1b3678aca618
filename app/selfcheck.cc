#include "selfcheck.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/base.h"
#include "store/store.h"

namespace floe::app {
namespace {

std::string KeyOf(size_t i) { return "selfcheck:" + std::to_string(i); }

// Runs fn(begin, end) on `threads` threads over [0, n) and prints progress for long phases.
template <typename F>
double Phase(const char* name, size_t n, int threads, bool quiet, F fn) {
  const uint64_t start = NowMicros();
  std::atomic<size_t> done{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; t++) {
    const size_t begin = n * static_cast<size_t>(t) / static_cast<size_t>(threads);
    const size_t end = n * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
    workers.emplace_back([&, begin, end] {
      constexpr size_t kStep = 65536;
      for (size_t b = begin; b < end; b += kStep) {
        const size_t e = std::min(end, b + kStep);
        fn(b, e);
        done.fetch_add(e - b, std::memory_order_relaxed);
      }
    });
  }
  if (!quiet) {
    while (done.load() < n) {
      std::fprintf(stderr, "\r  %-8s %3zu%%", name, n ? done.load() * 100 / n : 100);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::fprintf(stderr, "\r%*s\r", 20, "");
  }
  for (auto& w : workers) w.join();
  const double seconds = static_cast<double>(NowMicros() - start) / 1e6;
  std::printf("  %-8s %10zu ops  %8.3f s  %8.2f M ops/s\n", name, n, seconds,
              seconds > 0 ? static_cast<double>(n) / seconds / 1e6 : 0.0);
  return seconds;
}

}  // namespace

int RunSelfCheck(const SelfCheckOptions& o) {
  store::Store s;
  std::atomic<size_t> errors{0};
  auto fail = [&](const std::string& what) {
    if (errors.fetch_add(1) < 10) std::fprintf(stderr, "selfcheck: FAILED: %s\n", what.c_str());
  };
  std::printf("floe selfcheck: %zu keys, %d threads, allocator %s\n", o.keys, o.threads,
              FLOE_MALLOC_NAME);

  Phase("put", o.keys, o.threads, o.quiet, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; i++) {
      Result<store::ValuePtr> v = store::Value::Make(KeyOf(i), 1, std::to_string(i));
      if (!v.ok()) return fail(v.status().ToString());
      s.Put(std::move(v).value());
    }
  });
  if (s.Size() != o.keys) fail("size " + std::to_string(s.Size()) + " after loading");

  Phase("get", o.keys, o.threads, o.quiet, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; i++) {
      const std::string want = std::to_string(i);
      bool ok = false;
      s.Read(KeyOf(i), [&](const store::Value& v) { ok = v.payload() == want; });
      if (!ok) fail("wrong or missing value for " + KeyOf(i));
    }
  });

  Phase("update", o.keys, o.threads, o.quiet, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; i++) {
      const std::string key = KeyOf(i);
      Result<store::ValuePtr> r =
          s.Update(key, [&](const store::Value* cur) -> Result<store::Mutation> {
            if (cur == nullptr) return Status::NotFound(key);
            FLOE_ASSIGN_OR_RETURN(store::ValuePtr next,
                                  store::Value::Make(key, 1, std::string(cur->payload()) + "+"));
            return store::Mutation::Put(std::move(next));
          });
      if (!r.ok()) fail(r.status().ToString());
    }
  });

  size_t scanned = 0;
  std::vector<bool> seen(o.keys, false);
  const uint64_t scan_start = NowMicros();
  uint64_t cursor = 0;
  do {
    cursor = s.Scan(cursor, 1000, [&](const store::Value& v) {
      const size_t i = std::stoull(std::string(v.key().substr(10)));
      if (i < seen.size() && !seen[i]) {
        seen[i] = true;
        scanned++;
      }
    });
  } while (cursor != 0);
  std::printf("  %-8s %10zu keys %8.3f s\n", "scan", scanned,
              static_cast<double>(NowMicros() - scan_start) / 1e6);
  if (scanned != o.keys) fail("scan saw " + std::to_string(scanned) + " distinct keys");

  Phase("remove", o.keys / 2, o.threads, o.quiet, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; i++) {
      if (!s.Remove(KeyOf(i * 2))) fail("remove of " + KeyOf(i * 2) + " found nothing");
    }
  });
  const size_t expected = o.keys - o.keys / 2;
  if (s.Size() != expected) fail("size " + std::to_string(s.Size()) + " after removing half");

  std::printf("  keys %zu, memory %.1f MiB\n", s.Size(),
              static_cast<double>(s.MemoryUsed()) / (1 << 20));
  if (errors.load() != 0) {
    std::printf("floe selfcheck: %zu FAILURES\n", errors.load());
    return 1;
  }
  std::printf("floe selfcheck: all checks passed\n");
  return 0;
}

}  // namespace floe::app
