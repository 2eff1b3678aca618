// Checked, not claimed (docs/coherence.md): seeded random workloads on simulated clusters under
// drop, duplication, reordering, delay and partitions, every operation recorded with its call
// and return times on the virtual clock, each history checked for linearizability per key.
//
// FLOE_DKV_HISTORIES sets how many histories run (default 200; CI runs 1,000). A failure
// prints its seed (FLOE_TEST_SEED replays the whole run) and the history's index.

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "dkv/dkv.h"
#include "dkv/dkv_sim_testing.h"
#include "net/net.h"
#include "rpc/rpc.h"
#include "testing/linearizability.h"
#include "testing/testing.h"

namespace floe::dkv {
namespace {

namespace lin = floe::testing::lin;

constexpr uint64_t kLease = 1'000'000;

// A simulated cluster whose keys are homed by hash, and the history its clients record.
struct SimRun : sim::SimCluster {
  SimRun(int n, uint64_t seed)
      : sim::SimCluster(
            n, seed,
            sim::SimSetup{.lease_us = kLease,
                          .heartbeat_us = 100'000,
                          .down_after_us = 1'500'000,
                          .timeout_us = 1'500'000,
                          .patience_us = 60'000,
                          .seed_mul = 131,
                          .home =
                              [](std::string_view key, int nodes) {
                                return static_cast<NodeId>(store::KeyView(key).hash() %
                                                           static_cast<uint64_t>(nodes)) +
                                       1;
                              },
                          .tweak = nullptr}),
        rng(seed ^ 0x9e3779b97f4a7c15ULL) {}
  std::mt19937_64 rng;
  std::vector<lin::Operation> history;
  int read_pct = 40;
};

bool UnknownOutcome(const Status& s) {
  return s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kTimeout ||
         s.code() == StatusCode::kCancelled;
}

struct Client {
  int id = 0;
  NodeId node = 0;
  int seq = 0;
  std::map<std::string, lin::Value> last_read;  // for compare-and-put's expectation
};

// One client's next operation, issued now; records itself when answered, then schedules the
// client's next one until `until`.
void Issue(SimRun& r, Client& c, const std::vector<std::string>& keys, uint64_t until) {
  if (r.net.NowMicros() >= until) return;
  std::uniform_int_distribution<size_t> pick_key(0, keys.size() - 1);
  const std::string key = keys[pick_key(r.rng)];
  // Reads are r.read_pct of the mix; the writes share the rest as 20:5:10:5:20 (put, remove,
  // compare-and-put, put-if-absent, increment).
  int dice = static_cast<int>(r.rng() % 100);
  dice = dice < r.read_pct ? 0 : 40 + (dice - r.read_pct) * 60 / (100 - r.read_pct);
  auto op = std::make_shared<lin::Operation>();
  op->client = c.id;
  op->key = key;
  op->call = r.net.NowMicros();
  Dkv& d = *r.dkvs[c.node];
  auto next = [&r, &c, &keys, until] {
    const uint64_t think = r.rng() % 3000;
    r.net.PostAt(r.net.NowMicros() + think, [&r, &c, &keys, until] { Issue(r, c, keys, until); });
  };
  auto finish_write = [&r, op, next](Result<std::string> res,
                                     const std::function<void(const std::string&)>& out) {
    op->ret = r.net.NowMicros();
    if (res.ok()) {
      out(*res);
      r.history.push_back(*op);
    } else if (UnknownOutcome(res.status())) {
      op->outcome = lin::Outcome::kUnknown;
      r.history.push_back(*op);
    }  // any other error: refused at the home, nothing applied (left out)
    next();
  };
  Entry e{.type = 0, .expire_at_ms = 0, .payload = std::to_string(c.id * 100'000 + ++c.seq)};
  if (dice == 0) {
    op->kind = lin::OpKind::kGet;
    d.Get(key, [&r, &c, op, next](Result<store::ValuePtr> res) {
      op->ret = r.net.NowMicros();
      if (res.ok()) {
        op->read = *res ? lin::Value(std::string((*res)->payload())) : std::nullopt;
        c.last_read[op->key] = op->read;
        r.history.push_back(*op);
      }
      next();
    });
  } else if (dice < 60) {
    op->kind = lin::OpKind::kPut;
    op->value = e.payload;
    d.PutVolatile(key, e, [finish_write](Result<std::string> res) {
      finish_write(std::move(res), [](const std::string&) {});
    });
  } else if (dice < 65) {
    op->kind = lin::OpKind::kRemove;
    d.Remove(key, [finish_write, op](Result<std::string> res) {
      finish_write(std::move(res), [op](const std::string& s) { op->applied = s == "1"; });
    });
  } else if (dice < 75) {
    op->kind = lin::OpKind::kCompareAndPut;
    op->value = e.payload;
    auto it = c.last_read.find(key);
    op->expected = it == c.last_read.end() ? std::nullopt : it->second;
    std::optional<Entry> want;
    if (op->expected) want = Entry{.type = 0, .expire_at_ms = 0, .payload = *op->expected};
    d.CompareAndPut(key, want, e, [finish_write, op](Result<std::string> res) {
      finish_write(std::move(res), [op](const std::string& s) { op->applied = s == "1"; });
    });
  } else if (dice < 80) {
    op->kind = lin::OpKind::kPutIfAbsent;
    op->value = e.payload;
    d.PutIfAbsent(key, e, [finish_write, op](Result<std::string> res) {
      finish_write(std::move(res), [op](const std::string& s) { op->applied = s == "1"; });
    });
  } else {
    op->kind = lin::OpKind::kIncrement;
    op->delta = 1 + static_cast<int64_t>(r.rng() % 3);
    d.Atomic(
        key, kOpIncrement, std::to_string(op->delta), [finish_write, op](Result<std::string> res) {
          finish_write(std::move(res), [op](const std::string& s) { op->counter = std::stoll(s); });
        });
  }
}

uint64_t HistoryCount() {
  const char* env = std::getenv("FLOE_DKV_HISTORIES");
  return env != nullptr && *env != '\0' ? std::strtoull(env, nullptr, 10) : 200;
}

TEST(DkvTest, RandomHistories) {
  const uint64_t base = testing::Seed(20261128, true);
  const uint64_t count = HistoryCount();
  uint64_t inconclusive = 0;
  uint64_t ops = 0, unknown = 0, lease_waits = 0, not_cached_late = 0, cache_hits = 0;
  for (uint64_t h = 0; h < count; h++) {
    const uint64_t seed = base + h;
    std::mt19937_64 plan(seed);
    const int n = 3 + static_cast<int>(plan() % 3);
    SimRun r(n, seed);
    r.read_pct = 40 + static_cast<int>(plan() % 55);
    const double drop = static_cast<double>(plan() % 25) / 100.0;
    const double dup = static_cast<double>(plan() % 15) / 100.0;
    const uint64_t max_delay = plan() % 6000;
    r.net.SetFaults({.drop = drop, .duplicate = dup, .min_delay_us = 0, .max_delay_us = max_delay});
    std::vector<std::string> keys;
    const int key_count = 1 + static_cast<int>(plan() % 4);
    for (int k = 0; k < key_count; k++) keys.push_back("k" + std::to_string(k));
    std::vector<std::unique_ptr<Client>> clients;
    const uint64_t start = r.net.NowMicros();
    const uint64_t until = start + 1'500'000 + plan() % 1'500'000;
    for (int i = 0; i < n * 2; i++) {
      auto c = std::make_unique<Client>();
      c->id = i + 1;
      c->node = static_cast<NodeId>(i % n + 1);
      Client* raw = c.get();
      clients.push_back(std::move(c));
      r.net.PostAt(start + plan() % 2000, [&r, raw, &keys, until] { Issue(r, *raw, keys, until); });
    }
    // Partitions: cut one link (both ways) for a while, up to three times.
    const int cuts = static_cast<int>(plan() % 4);
    for (int i = 0; i < cuts; i++) {
      const auto a = static_cast<NodeId>(plan() % n + 1);
      const auto b = static_cast<NodeId>(plan() % n + 1);
      if (a == b) continue;
      const uint64_t at = start + plan() % 1'500'000;
      const uint64_t len = 100'000 + plan() % 2'000'000;
      r.net.PostAt(at, [&r, a, b] { r.net.Cut(a, b, true); });
      r.net.PostAt(at + len, [&r, a, b] { r.net.Cut(a, b, false); });
    }
    r.net.RunFor(until - start + 6'000'000);  // every operation answers by its deadline
    r.net.HealAll();

    lin::CheckOptions budget;
    budget.max_steps_per_key = 5'000'000;
    lin::CheckResult res = lin::Check(r.history, budget);
    if (res.verdict == lin::Verdict::kUnknown) {
      // The search gave up (many writes of unknown outcome overlapping: its cost is exponential
      // in them). Inconclusive, not a pass: counted and bounded below.
      std::printf("history %llu (seed %llu): inconclusive: %s\n",
                  static_cast<unsigned long long>(h), static_cast<unsigned long long>(seed),
                  res.explanation.c_str());
      inconclusive++;
      continue;
    }
    ASSERT_EQ(res.verdict, lin::Verdict::kOk)
        << "history " << h << " (seed " << seed << ", " << n << " nodes, drop " << drop << ", dup "
        << dup << ", delay " << max_delay << " us, " << cuts << " cuts):\n"
        << res.explanation << "\n"
        << lin::FormatHistory(r.history);
    ops += r.history.size();
    for (const auto& op : r.history) unknown += op.outcome == lin::Outcome::kUnknown ? 1 : 0;
    for (auto& [id, d] : r.dkvs) {
      lease_waits += d->stats().lease_waits.load();
      not_cached_late += d->stats().not_cached_late.load();
      cache_hits += d->stats().cache_hits.load();
    }
  }
  std::printf("%llu inconclusive\n", static_cast<unsigned long long>(inconclusive));
  EXPECT_LE(inconclusive * 100, count) << "more than 1% of the histories could not be checked";
  std::printf(
      "%llu histories, %llu operations (%llu unknown outcome), %llu cache hits, "
      "%llu lease waits, %llu late answers not cached\n",
      static_cast<unsigned long long>(count), static_cast<unsigned long long>(ops),
      static_cast<unsigned long long>(unknown), static_cast<unsigned long long>(cache_hits),
      static_cast<unsigned long long>(lease_waits),
      static_cast<unsigned long long>(not_cached_late));
  // The faults must have bitten, or the test proves little.
  EXPECT_GT(cache_hits, 0u);
  EXPECT_GT(lease_waits, 0u);
  EXPECT_GT(unknown, 0u);
}

}  // namespace
}  // namespace floe::dkv
