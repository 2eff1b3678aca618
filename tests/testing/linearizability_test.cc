#include "testing/linearizability.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <map>
#include <random>

#include "testing/testing.h"

namespace floe::testing::lin {
namespace {

using ::testing::HasSubstr;

// Builders for hand-written histories: one key "k" unless said, client 0 unless said.
Operation Get(Value read, Time call, Time ret, int client = 0) {
  return {.client = client,
          .key = "k",
          .kind = OpKind::kGet,
          .read = std::move(read),
          .call = call,
          .ret = ret};
}
Operation Put(std::string value, Time call, Time ret, int client = 0) {
  return {.client = client,
          .key = "k",
          .kind = OpKind::kPut,
          .value = std::move(value),
          .call = call,
          .ret = ret};
}
Operation Remove(std::optional<bool> removed, Time call, Time ret, int client = 0) {
  return {.client = client,
          .key = "k",
          .kind = OpKind::kRemove,
          .applied = removed,
          .call = call,
          .ret = ret};
}
Operation PutIfAbsent(std::string value, bool stored, Time call, Time ret, int client = 0) {
  return {.client = client,
          .key = "k",
          .kind = OpKind::kPutIfAbsent,
          .value = std::move(value),
          .applied = stored,
          .call = call,
          .ret = ret};
}
Operation Cas(Value expected, std::string value, bool swapped, Time call, Time ret,
              int client = 0) {
  return {.client = client,
          .key = "k",
          .kind = OpKind::kCompareAndPut,
          .value = std::move(value),
          .expected = std::move(expected),
          .applied = swapped,
          .call = call,
          .ret = ret};
}
Operation Incr(int64_t delta, int64_t after, Time call, Time ret, int client = 0) {
  return {.client = client,
          .key = "k",
          .kind = OpKind::kIncrement,
          .delta = delta,
          .counter = after,
          .call = call,
          .ret = ret};
}
Operation Unknown(Operation op) {
  op.outcome = Outcome::kUnknown;
  op.ret = 0;
  return op;
}
Operation OnKey(std::string key, Operation op) {
  op.key = std::move(key);
  return op;
}

void ExpectLinearizable(const std::vector<Operation>& history) {
  const CheckResult result = Check(history);
  EXPECT_EQ(result.verdict, Verdict::kOk) << result.explanation << FormatHistory(history);
}
void ExpectViolation(const std::vector<Operation>& history) {
  const CheckResult result = Check(history);
  EXPECT_EQ(result.verdict, Verdict::kViolation) << FormatHistory(history);
}

// ---- Histories it must accept ------------------------------------------------------------

TEST(LinearizabilityTest, AcceptsASequentialHistory) {
  ExpectLinearizable({Get(std::nullopt, 0, 1), Put("a", 2, 3), Get("a", 4, 5),
                      Cas("a", "b", true, 6, 7), Cas("a", "c", false, 8, 9), Get("b", 10, 11),
                      Remove(true, 12, 13), Remove(false, 14, 15), PutIfAbsent("d", true, 16, 17),
                      PutIfAbsent("e", false, 18, 19), Get("d", 20, 21),
                      Cas(std::nullopt, "f", false, 22, 23)});
}

TEST(LinearizabilityTest, AcceptsTheEmptyHistory) { ExpectLinearizable({}); }

TEST(LinearizabilityTest, AcceptsAReadOverlappingAWriteEitherWay) {
  // The read overlaps the write: it may take effect before it or after it.
  ExpectLinearizable({Put("a", 0, 1), Put("b", 10, 20, 1), Get("a", 12, 18, 2)});
  ExpectLinearizable({Put("a", 0, 1), Put("b", 10, 20, 1), Get("b", 12, 18, 2)});
  // A read that begins before the write and ends after it, too.
  ExpectLinearizable({Put("a", 0, 1), Put("b", 10, 20, 1), Get("b", 5, 25, 2)});
}

TEST(LinearizabilityTest, AcceptsAnOldReadThenANewReadDuringAWrite) {
  ExpectLinearizable(
      {Put("a", 0, 1), Put("b", 10, 40, 1), Get("a", 12, 15, 2), Get("b", 20, 25, 2)});
}

TEST(LinearizabilityTest, RejectsANewReadThenAnOldReadDuringAWrite) {
  // Once one read saw the write, a read that begins after it cannot see the old value, even
  // though the write has not returned yet.
  ExpectViolation({Put("a", 0, 1), Put("b", 10, 40, 1), Get("b", 12, 15, 2), Get("a", 20, 25, 2)});
}

TEST(LinearizabilityTest, TreatsACallAtTheInstantOfAReturnAsConcurrent) {
  // Contract rule 2: a tie never rejects.
  ExpectLinearizable({Put("a", 0, 10), Get(std::nullopt, 10, 12, 1)});
}

TEST(LinearizabilityTest, AcceptsConcurrentWritesSeenInEitherOrder) {
  ExpectLinearizable({Put("a", 0, 10), Put("b", 0, 10, 1), Get("b", 11, 12), Get("b", 13, 14)});
  ExpectLinearizable({Put("a", 0, 10), Put("b", 0, 10, 1), Get("a", 11, 12), Get("a", 13, 14)});
}

TEST(LinearizabilityTest, AcceptsAnUnknownWriteWhoseEffectIsSeen) {
  ExpectLinearizable(
      {Put("a", 0, 1), Unknown(Put("b", 5, 0, 1)), Get("a", 10, 11), Get("b", 100, 101)});
  // Seen long after the writer moved on and wrote something else.
  ExpectLinearizable(
      {Unknown(Put("b", 5, 0, 1)), Put("c", 10, 11, 1), Get("c", 12, 13), Get("b", 500, 501)});
}

TEST(LinearizabilityTest, AcceptsAnUnknownWriteWhoseEffectIsNeverSeen) {
  ExpectLinearizable({Put("a", 0, 1), Unknown(Put("b", 5, 0, 1)), Get("a", 10, 11),
                      Get("a", 20, 21), Get("a", 1000, 1001)});
  // Many of them, none seen: the search must be able to leave every one out.
  std::vector<Operation> history = {Put("a", 0, 1)};
  for (int i = 0; i < 30; ++i) {
    history.push_back(Unknown(Put("u" + std::to_string(i), 2 + i, 0, i % 5)));
    history.push_back(Get("a", 3 + i, 4 + i, 5));
  }
  ExpectLinearizable(history);
}

TEST(LinearizabilityTest, AcceptsUnknownConditionalWritesEitherWay) {
  ExpectLinearizable({Put("a", 0, 1), Unknown(Cas("a", "b", false, 2, 0)), Get("b", 5, 6)});
  ExpectLinearizable({Put("a", 0, 1), Unknown(Cas("a", "b", false, 2, 0)), Get("a", 5, 6)});
  ExpectLinearizable({Unknown(PutIfAbsent("a", false, 2, 0)), Get("a", 5, 6)});
  ExpectLinearizable({Put("a", 0, 1), Unknown(Remove(true, 2, 0)), Get(std::nullopt, 5, 6)});
}

TEST(LinearizabilityTest, AcceptsConcurrentIncrements) {
  ExpectLinearizable({Incr(1, 2, 0, 10), Incr(1, 3, 0, 10, 1), Incr(1, 1, 0, 10, 2),
                      Get("3", 11, 12), Incr(-5, -2, 13, 14), Get("-2", 15, 16)});
  // An increment of unknown outcome may be counted or not.
  ExpectLinearizable({Unknown(Incr(1, 0, 0, 0)), Incr(1, 2, 5, 6, 1)});
  ExpectLinearizable({Unknown(Incr(1, 0, 0, 0)), Incr(1, 1, 5, 6, 1), Get("1", 7, 8)});
  // A counter is a decimal string: a put can set it, a remove resets it.
  ExpectLinearizable({Put("41", 0, 1), Incr(1, 42, 2, 3), Remove(true, 4, 5), Incr(7, 7, 6, 7)});
}

TEST(LinearizabilityTest, ChecksKeysIndependently) {
  // On one key this would be a stale read; on two keys each is fine.
  ExpectLinearizable({OnKey("x", Put("a", 0, 1)), OnKey("y", Put("b", 2, 3)),
                      OnKey("x", Get("a", 4, 5)), OnKey("y", Get("b", 4, 5))});
}

// ---- Histories it must reject ------------------------------------------------------------

TEST(LinearizabilityTest, RejectsAStaleReadAndShowsIt) {
  const std::vector<Operation> history = {Put("old", 0, 1), Put("new", 10, 20, 1),
                                          Get("new", 21, 22, 2), Get("old", 30, 31, 2)};
  const CheckResult result = Check(history);
  ASSERT_EQ(result.verdict, Verdict::kViolation);
  ASSERT_EQ(result.failed_keys.size(), 1u);
  EXPECT_EQ(result.failed_keys[0].key, "k");
  EXPECT_THAT(result.explanation, HasSubstr("key \"k\": not linearizable"));
  // The deepest order placed the writes and the first read; the stale read is what cannot go
  // next, and the state it met is shown.
  EXPECT_THAT(result.explanation, HasSubstr("places 3 of them"));
  EXPECT_THAT(result.explanation, HasSubstr("then #3 c2 [30,31] get(\"k\") -> \"old\""));
  EXPECT_THAT(result.explanation, HasSubstr("from state \"new\""));
}

TEST(LinearizabilityTest, RejectsAStaleReadAfterACompletedWrite) {
  ExpectViolation({Put("old", 0, 1), Put("new", 10, 20, 1), Get("old", 25, 26, 2)});
}

TEST(LinearizabilityTest, RejectsALostWrite) {
  // Acknowledged, never visible, and nothing else wrote.
  ExpectViolation({Put("a", 0, 1), Get(std::nullopt, 5, 6, 1), Get(std::nullopt, 7, 8, 2)});
  ExpectViolation({Put("a", 0, 1), Put("b", 2, 3), Get("a", 5, 6, 1)});
}

TEST(LinearizabilityTest, RejectsADoubleAppliedIncrement) {
  ExpectViolation({Incr(1, 1, 0, 10), Incr(1, 2, 0, 10, 1), Get("3", 11, 12)});
  // The same seen through the outputs alone.
  ExpectViolation({Incr(1, 1, 0, 10), Incr(1, 1, 0, 10, 1)});
  ExpectViolation({Incr(1, 2, 0, 1)});
}

TEST(LinearizabilityTest, RejectsAReadOfAValueNeverWritten) {
  ExpectViolation({Put("a", 0, 1), Get("zzz", 2, 3)});
  ExpectViolation({Get("a", 0, 1)});
}

TEST(LinearizabilityTest, RejectsACompareAndPutThatSwappedAValueThatWasNotThere) {
  ExpectViolation({Put("a", 0, 1), Cas("b", "c", true, 2, 3)});
  ExpectViolation({Cas(std::nullopt, "c", false, 2, 3)});
  ExpectViolation({Put("a", 0, 1), Cas("a", "c", true, 2, 3), Get("a", 4, 5)});
}

TEST(LinearizabilityTest, RejectsAPutIfAbsentThatStoredTwice) {
  ExpectViolation({PutIfAbsent("a", true, 0, 10), PutIfAbsent("b", true, 5, 15, 1)});
  ExpectViolation({Put("x", 0, 1), PutIfAbsent("a", true, 2, 3)});
}

TEST(LinearizabilityTest, RejectsRemovesThatDisagreeWithTheValue) {
  ExpectViolation({Remove(true, 0, 1)});
  ExpectViolation({Put("a", 0, 1), Remove(false, 2, 3)});
  // Unchecked output: only the effect counts.
  ExpectLinearizable({Remove(std::nullopt, 0, 1), Put("a", 2, 3), Remove(std::nullopt, 4, 5),
                      Get(std::nullopt, 6, 7)});
}

TEST(LinearizabilityTest, RejectsAnIncrementOfANonCounterThatClaimsSuccess) {
  ExpectViolation({Put("abc", 0, 1), Incr(1, 1, 2, 3)});
  ExpectViolation({Put("007", 0, 1), Incr(1, 8, 2, 3)});  // not canonical decimal
  ExpectViolation({Put(std::to_string(INT64_MAX), 0, 1), Incr(1, INT64_MIN, 2, 3)});
  // One of unknown outcome just has no effect there.
  ExpectLinearizable({Put("abc", 0, 1), Unknown(Incr(1, 0, 2, 0)), Get("abc", 5, 6)});
}

TEST(LinearizabilityTest, RejectsAnUnknownWriteSeenBeforeItsCall) {
  ExpectViolation({Get("b", 10, 20), Unknown(Put("b", 100, 0, 1))});
}

TEST(LinearizabilityTest, RejectsAnUnknownWriteThatIsUndone) {
  // It took effect (seen), so the older value cannot come back: it happens once.
  ExpectViolation({Put("a", 0, 1), Unknown(Put("b", 2, 0, 1)), Get("b", 10, 11), Get("a", 20, 21)});
}

TEST(LinearizabilityTest, ReportsOnlyTheKeysThatFail) {
  const CheckResult result = Check({OnKey("good", Put("a", 0, 1)), OnKey("bad", Put("a", 0, 1)),
                                    OnKey("good", Get("a", 2, 3)), OnKey("bad", Get("b", 2, 3))});
  EXPECT_EQ(result.verdict, Verdict::kViolation);
  EXPECT_EQ(result.keys_checked, 2u);
  ASSERT_EQ(result.failed_keys.size(), 1u);
  EXPECT_EQ(result.failed_keys[0].key, "bad");
  EXPECT_THAT(result.explanation, Not(HasSubstr("\"good\"")));
}

TEST(LinearizabilityTest, RejectsAHistoryWhoseResponseComesBeforeItsCall) {
  const CheckResult result = Check({Put("a", 10, 5)});
  EXPECT_EQ(result.verdict, Verdict::kInvalid);
  EXPECT_THAT(result.explanation, HasSubstr("#0 c0 [10,5] put(\"k\", \"a\") ends before its call"));
  Operation bounded = Unknown(Put("a", 10, 0));
  bounded.unknown_until = 9;
  EXPECT_EQ(Check({bounded}).verdict, Verdict::kInvalid);
}

TEST(LinearizabilityTest, AnUnknownWriteTakesEffectBeforeItsBoundOrNever) {
  Operation bounded = Unknown(Put("b", 5, 0, 1));
  bounded.unknown_until = 50;
  EXPECT_EQ(FormatOperation(bounded), "c1 [5,?<=50] put(\"k\", \"b\") unknown");
  // Seen before the bound, or never: fine.
  ExpectLinearizable({Put("a", 0, 1), bounded, Get("a", 10, 11), Get("b", 40, 41)});
  ExpectLinearizable({Put("a", 0, 1), bounded, Get("a", 10, 11), Get("a", 60, 61)});
  // A read of the old value called after the bound means it never happened...
  ExpectViolation({Put("a", 0, 1), bounded, Get("a", 55, 56), Get("b", 60, 61)});
  // ...unless the read overlaps the bound.
  ExpectLinearizable({Put("a", 0, 1), bounded, Get("a", 45, 56), Get("b", 60, 61)});
  // Unbounded, the late effect is possible.
  ExpectLinearizable(
      {Put("a", 0, 1), Unknown(Put("b", 5, 0, 1)), Get("a", 55, 56), Get("b", 60, 61)});
}

TEST(LinearizabilityTest, IdenticalUnknownIncrementsAreNotInterchangeableAcrossBounds) {
  // The earlier "incr +1" could only have taken effect by 10; the first read says it did not.
  // The later one, bounded at 100, must still be able to count alone. (Regression: twins were
  // matched by kind and inputs only, which made the later wait for the earlier forever.)
  Operation early = Unknown(Incr(1, 0, 0, 0));
  early.unknown_until = 10;
  Operation late = Unknown(Incr(1, 0, 5, 0, 1));
  late.unknown_until = 100;
  ExpectLinearizable({early, late, Get(std::nullopt, 20, 21, 2), Get("1", 50, 51, 2)});
  ExpectViolation({early, late, Get(std::nullopt, 20, 21, 2), Get("2", 50, 51, 2)});
  // Unbounded twins: either one, both, or neither.
  ExpectLinearizable({Unknown(Incr(1, 0, 0, 0)), Unknown(Incr(1, 0, 5, 0, 1)), Get("1", 20, 21),
                      Get("2", 30, 31)});
}

TEST(LinearizabilityTest, UnknownOperationsCanDependOnEachOther) {
  // A swap that only succeeds after an unknown put, both unknown, then seen.
  ExpectLinearizable(
      {Unknown(Put("a", 0, 0)), Unknown(Cas("a", "b", false, 1, 0, 1)), Get("b", 10, 11, 2)});
  // Two unknown puts: the one seen last is the one that took effect last.
  ExpectLinearizable({Unknown(Put("a", 0, 0)), Unknown(Put("b", 1, 0, 1)), Get("a", 10, 11, 2),
                      Get("b", 12, 13, 2)});
  ExpectViolation({Unknown(Put("a", 0, 0)), Unknown(Put("b", 1, 0, 1)), Get("a", 10, 11, 2),
                   Get("b", 12, 13, 2), Get("a", 14, 15, 2)});
}

TEST(LinearizabilityTest, SaysUnknownWhenItsBudgetRunsOutInsteadOfGuessing) {
  std::vector<Operation> history;
  for (int i = 0; i < 8; ++i) history.push_back(Put(std::to_string(i), 0, 100, i));
  history.push_back(Get("7", 200, 201));
  const CheckResult result = Check(history, CheckOptions{.max_steps_per_key = 3});
  EXPECT_EQ(result.verdict, Verdict::kUnknown);
  EXPECT_THAT(result.explanation, HasSubstr("gave up"));
  const CheckResult out_of_memory = Check(history, CheckOptions{.max_memo_entries_per_key = 2});
  EXPECT_EQ(out_of_memory.verdict, Verdict::kUnknown);
  EXPECT_THAT(out_of_memory.explanation, HasSubstr("2 configurations remembered"));
  EXPECT_EQ(Check(history).verdict, Verdict::kOk);
}

TEST(LinearizabilityTest, FormatsOperationsOnePerLine) {
  EXPECT_EQ(FormatOperation(Get(std::nullopt, 1, 2, 3)), "c3 [1,2] get(\"k\") -> absent");
  EXPECT_EQ(FormatOperation(Unknown(Put("a\n", 7, 0, 1))),
            "c1 [7,?] put(\"k\", \"a\\x0a\") unknown");
  EXPECT_EQ(FormatOperation(Cas(std::nullopt, "v", true, 1, 2)),
            "c0 [1,2] cas(\"k\", absent => \"v\") -> swapped");
  EXPECT_EQ(FormatOperation(Incr(-2, 5, 1, 2)), "c0 [1,2] incr(\"k\", -2) -> 5");
  EXPECT_EQ(FormatHistory({Get("x", 1, 2), Remove(std::nullopt, 3, 4)}),
            "#0 c0 [1,2] get(\"k\") -> \"x\"\n#1 c0 [3,4] remove(\"k\") -> (unchecked)\n");
}

// ---- Randomized: histories of a truly linearizable store ---------------------------------

struct Workload {
  int clients = 4;
  int keys = 2;  // even-numbered keys are registers, odd-numbered ones counters
  int ops = 100;
  double unknown_rate = 0.05;
  // An unknown operation takes effect within this long after its call, or never; it is
  // recorded as its unknown_until when bound_unknowns is set.
  Time unknown_window = 500;
  bool bound_unknowns = false;
};

// Runs `w` against a sequential store: every operation takes effect at a random instant inside
// its interval (a kUnknown one at any instant after its call, or never), and its outputs are
// what the store returned there. The result is linearizable by construction.
std::vector<Operation> GenerateLinearizable(std::mt19937_64& rng, const Workload& w) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>()(rng) < p; };
  std::vector<Operation> history;
  std::vector<double> effect_at;  // +inf: never
  std::vector<Time> next_call(w.clients, 0);
  std::map<std::string, std::vector<std::string>> written;
  for (int i = 0; i < w.ops; ++i) {
    const int client = uniform(0, w.clients - 1);
    const int key_number = uniform(0, w.keys - 1);
    Operation op{.client = client, .key = "key" + std::to_string(key_number)};
    op.call = next_call[client] + uniform(0, 4);
    op.ret = op.call + uniform(0, 20);
    const int dice = uniform(0, 99);
    if (key_number % 2 == 1) {
      op.kind = dice < 55 ? OpKind::kIncrement : OpKind::kGet;
      op.delta = uniform(1, 3);
    } else {
      op.kind = dice < 40   ? OpKind::kGet
                : dice < 65 ? OpKind::kPut
                : dice < 80 ? OpKind::kCompareAndPut
                : dice < 88 ? OpKind::kPutIfAbsent
                            : OpKind::kRemove;
      op.value = "v" + std::to_string(i);
      std::vector<std::string>& seen = written[op.key];
      if (!seen.empty() && !chance(0.2)) {
        op.expected = seen[seen.size() - 1 - uniform(0, std::min<int>(2, seen.size() - 1))];
      }
      if (op.kind != OpKind::kGet && op.kind != OpKind::kRemove) seen.push_back(op.value);
    }
    double at = op.call + std::uniform_real_distribution<double>(0, op.ret - op.call)(rng);
    if (chance(w.unknown_rate)) {
      op.outcome = Outcome::kUnknown;
      const double window = static_cast<double>(w.unknown_window);
      at = chance(0.5) ? op.call + std::uniform_real_distribution<double>(0, window)(rng)
                       : std::numeric_limits<double>::infinity();
      if (w.bound_unknowns) op.unknown_until = op.call + w.unknown_window;
    }
    next_call[client] = op.ret + uniform(0, 2);
    history.push_back(std::move(op));
    effect_at.push_back(at);
  }
  std::vector<size_t> order(history.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return effect_at[a] < effect_at[b]; });
  std::map<std::string, Value> store;
  for (size_t i : order) {
    if (effect_at[i] == std::numeric_limits<double>::infinity()) break;
    Operation& op = history[i];
    Value& value = store[op.key];
    switch (op.kind) {
      case OpKind::kGet:
        op.read = value;
        break;
      case OpKind::kPut:
        value = op.value;
        break;
      case OpKind::kRemove:
        if (!chance(0.3)) op.applied = value.has_value();
        value.reset();
        break;
      case OpKind::kPutIfAbsent:
        op.applied = !value.has_value();
        if (!value) value = op.value;
        break;
      case OpKind::kCompareAndPut:
        op.applied = value == op.expected;
        if (value == op.expected) value = op.value;
        break;
      case OpKind::kIncrement:
        op.counter = (value ? std::stoll(*value) : 0) + op.delta;
        value = std::to_string(op.counter);
        break;
    }
  }
  return history;
}

// Makes one kOk get of `history` impossible, returning false when no get qualifies: on a
// register, a read of a value put by an acknowledged put that was followed (strictly, in real
// time) by another acknowledged put that returned before the get began; on a counter (only
// positive increments), a read below the sum of the increments that returned before it began.
bool MakeOneReadStale(std::mt19937_64& rng, std::vector<Operation>& history) {
  std::vector<std::pair<size_t, Value>> candidates;
  for (size_t g = 0; g < history.size(); ++g) {
    const Operation& get = history[g];
    if (get.kind != OpKind::kGet || get.outcome != Outcome::kOk) continue;
    int64_t counted = 0;
    std::optional<std::string> stale;
    for (const Operation& w : history) {
      if (w.key != get.key || w.outcome != Outcome::kOk || w.ret >= get.call) continue;
      if (w.kind == OpKind::kIncrement) counted += w.delta;
      if (w.kind != OpKind::kPut) continue;
      for (const Operation& p : history) {
        if (p.key == get.key && p.kind == OpKind::kPut && p.outcome == Outcome::kOk &&
            p.ret < w.call) {
          stale = p.value;
        }
      }
    }
    if (stale) candidates.emplace_back(g, stale);
    if (counted >= 1) candidates.emplace_back(g, std::to_string(counted - 1));
  }
  if (candidates.empty()) return false;
  auto [g, value] =
      candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng)];
  history[g].read = value;
  return true;
}

TEST(LinearizabilityTest, AcceptsRandomLinearizableHistoriesAndRejectsThemWithAStaleRead) {
  std::mt19937_64 rng(Seed());
  int mutated = 0;
  constexpr int kHistories = 300;
  for (int i = 0; i < kHistories; ++i) {
    const Workload w{.clients = 1 + static_cast<int>(rng() % 6),
                     .keys = 1 + static_cast<int>(rng() % 3),
                     .ops = 20 + static_cast<int>(rng() % 150),
                     .unknown_rate = static_cast<double>(rng() % 4) * 0.04,
                     .unknown_window = 50 + rng() % 500,
                     .bound_unknowns = rng() % 2 == 0};
    std::vector<Operation> history = GenerateLinearizable(rng, w);
    const CheckResult accepted = Check(history);
    ASSERT_EQ(accepted.verdict, Verdict::kOk) << "history " << i << "\n"
                                              << accepted.explanation << FormatHistory(history);
    if (!MakeOneReadStale(rng, history)) continue;
    ++mutated;
    const CheckResult rejected = Check(history);
    ASSERT_EQ(rejected.verdict, Verdict::kViolation) << "history " << i << "\n"
                                                     << FormatHistory(history);
  }
  // The workloads are shaped so that most histories hold a read that can be made stale.
  EXPECT_GT(mutated, kHistories / 2);
}

TEST(LinearizabilityTest, ChecksAFiveThousandOperationHistoryOverTwentyKeys) {
  std::mt19937_64 rng(Seed());
  const std::vector<Operation> history = GenerateLinearizable(
      rng, Workload{.clients = 8, .keys = 20, .ops = 5000, .unknown_rate = 0.02});
  const auto start = std::chrono::steady_clock::now();
  const CheckResult result = Check(history);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(result.verdict, Verdict::kOk) << result.explanation;
  EXPECT_EQ(result.keys_checked, 20u);
  // Information for docs, not an assertion (tests assert behaviour, not timings).
  std::printf("checked %zu operations over %zu keys: %llu model steps, %.1f ms\n", history.size(),
              result.keys_checked, static_cast<unsigned long long>(result.steps),
              std::chrono::duration<double, std::milli>(elapsed).count());
}

// ---- Histories as text -----------------------------------------------------------------

TEST(LinearizabilityTextTest, ParsesTheDocumentedFormat) {
  const std::string text =
      "# a comment, then a blank line\n"
      "\n"
      "c=1 op=put key=6b value=61 call=10 ret=12\n"
      "c=2 op=get key=6b read=- call=11 ret=13\r\n"
      "op=cas key=6b expected=- value=0a20 applied=0 call=14 ret=15\n"
      "c=3 op=incr key=6e delta=-2 ret=? call=16 until=99\n"
      "c=3 op=remove key= applied=- call=17 ret=18\n";
  std::vector<Operation> history;
  std::string error;
  ASSERT_TRUE(ParseHistory(text, &history, &error)) << error;
  EXPECT_EQ(FormatHistory(history),
            "#0 c1 [10,12] put(\"k\", \"a\")\n"
            "#1 c2 [11,13] get(\"k\") -> absent\n"
            "#2 c0 [14,15] cas(\"k\", absent => \"\\x0a \") -> not swapped\n"
            "#3 c3 [16,?<=99] incr(\"n\", -2) unknown\n"
            "#4 c3 [17,18] remove(\"\") -> (unchecked)\n");
  EXPECT_EQ(Check(history).verdict, Verdict::kOk);
}

TEST(LinearizabilityTextTest, SaysWhichLineIsMalformed) {
  std::vector<Operation> history;
  std::string error;
  EXPECT_FALSE(
      ParseHistory("op=get key=6b call=1 ret=2\nop=get key=6 call=1 ret=2\n", &history, &error));
  EXPECT_EQ(error, "line 2: bad value in 'key=6'");
  EXPECT_FALSE(ParseHistory("op=get key=6b call=1\n", &history, &error));
  EXPECT_EQ(error, "line 1: every line needs op=, key=, call= and ret=");
  EXPECT_FALSE(ParseHistory("op=get key=6b call=1 ret=2 colour=blue\n", &history, &error));
  EXPECT_EQ(error, "line 1: unknown field 'colour'");
  EXPECT_FALSE(ParseHistory("op=incr key=6b delta=1x call=1 ret=2\n", &history, &error));
  EXPECT_FALSE(ParseHistory("op=get key=6b call=1 ret=2 until=5\n", &history, &error));
  EXPECT_FALSE(ParseHistory("op=frob key=6b call=1 ret=2\n", &history, &error));
  EXPECT_FALSE(ParseHistory("op=get key=6b call=-1 ret=2\n", &history, &error));
}

TEST(LinearizabilityTextTest, RandomHistoriesSurviveTheRoundTrip) {
  std::mt19937_64 rng(Seed());
  for (int i = 0; i < 50; ++i) {
    std::vector<Operation> history =
        GenerateLinearizable(rng, Workload{.clients = 4,
                                           .keys = 3,
                                           .ops = 100,
                                           .unknown_rate = 0.1,
                                           .bound_unknowns = i % 2 == 0});
    // A key of awkward bytes (which may make the history a violation: the verdict must survive).
    history[rng() % history.size()].key = std::string("\0 \n\xff", 4);
    const std::string text = WriteHistory(history);
    std::vector<Operation> parsed;
    std::string error;
    ASSERT_TRUE(ParseHistory(text, &parsed, &error)) << error;
    EXPECT_EQ(FormatHistory(parsed), FormatHistory(history));
    EXPECT_EQ(WriteHistory(parsed), text);
    EXPECT_EQ(Check(parsed).verdict, Check(history).verdict);
  }
}

}  // namespace
}  // namespace floe::testing::lin
