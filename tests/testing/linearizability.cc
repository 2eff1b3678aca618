#include "testing/linearizability.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <functional>
#include <map>
#include <tuple>
#include <unordered_map>
#include <utility>

namespace floe::testing::lin {
namespace {

std::string FormatValue(const Value& value) {
  if (!value) return "absent";
  constexpr size_t kShown = 40;
  std::string out = "\"";
  const std::string& bytes = *value;
  for (size_t i = 0; i < bytes.size() && i < kShown; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  out += '"';
  if (bytes.size() > kShown) out += "...(" + std::to_string(bytes.size()) + " bytes)";
  return out;
}

// The value as a counter: absent is 0; anything but a canonical decimal int64 is not a counter.
std::optional<int64_t> CounterOf(const Value& value) {
  if (!value) return 0;
  const std::string& s = *value;
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || end != s.data() + s.size() || std::to_string(n) != s) {
    return std::nullopt;
  }
  return n;
}

// A set of operations of one key, by their rank among the key's kOk (or kUnknown) operations.
// Its hash is kept up to date as members come and go (Zobrist hashing: the XOR of a random
// word per member), so the memo never rehashes a whole set.
class Bits {
 public:
  explicit Bits(size_t n) : words_((n + 63) / 64, 0) {}
  bool Has(size_t i) const { return (words_[i / 64] >> (i % 64)) & 1; }
  void Set(size_t i) {
    if (!Has(i)) hash_ ^= Mix(i);
    words_[i / 64] |= uint64_t{1} << (i % 64);
  }
  void Clear(size_t i) {
    if (Has(i)) hash_ ^= Mix(i);
    words_[i / 64] &= ~(uint64_t{1} << (i % 64));
  }
  bool SubsetOf(const Bits& other) const {
    for (size_t w = 0; w < words_.size(); ++w) {
      if ((words_[w] & ~other.words_[w]) != 0) return false;
    }
    return true;
  }
  bool operator==(const Bits& other) const {
    return hash_ == other.hash_ && words_ == other.words_;
  }
  uint64_t Hash() const { return hash_; }

  // The set with its leading all-ones words counted instead of stored, and trailing zero words
  // dropped: operations are placed roughly in call order, so a set of thousands of kOk
  // operations keeps a word or two. Equal sets have equal compact forms.
  struct Compact {
    uint32_t full_words = 0;
    std::vector<uint64_t> rest;
    bool operator==(const Compact& other) const = default;
  };
  Compact Compacted() const {
    size_t full = 0;
    while (full < words_.size() && words_[full] == ~uint64_t{0}) ++full;
    size_t end = words_.size();
    while (end > full && words_[end - 1] == 0) --end;
    return {.full_words = static_cast<uint32_t>(full),
            .rest = std::vector<uint64_t>(words_.begin() + full, words_.begin() + end)};
  }
  bool Matches(const Compact& compact) const {
    if (compact.full_words + compact.rest.size() > words_.size()) return false;
    for (size_t w = 0; w < words_.size(); ++w) {
      const size_t r = w - compact.full_words;
      const uint64_t expected = w < compact.full_words    ? ~uint64_t{0}
                                : r < compact.rest.size() ? compact.rest[r]
                                                          : 0;
      if (words_[w] != expected) return false;
    }
    return true;
  }

 private:
  static uint64_t Mix(uint64_t x) {  // SplitMix64's finalizer: a random-looking word per member
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }

  std::vector<uint64_t> words_;
  uint64_t hash_ = 0;
};

// The memo's key: the kOk operations placed and the model state. Lookups use MemoProbe, which
// borrows both, so that only a new entry copies them.
struct MemoKey {
  Bits::Compact ok;
  State state;
  size_t hash;
};
struct MemoProbe {
  const Bits* ok;
  const State* state;
  size_t hash;
};
struct MemoHash {
  using is_transparent = void;
  static size_t Of(const Bits& ok, const State& state) {
    return static_cast<size_t>(ok.Hash() ^ (std::hash<State>()(state) * 0x9e3779b97f4a7c15ULL));
  }
  size_t operator()(const MemoKey& key) const { return key.hash; }
  size_t operator()(const MemoProbe& probe) const { return probe.hash; }
};
struct MemoEqual {
  using is_transparent = void;
  bool operator()(const MemoKey& a, const MemoKey& b) const {
    return a.hash == b.hash && a.ok == b.ok && a.state == b.state;
  }
  bool operator()(const MemoProbe& a, const MemoKey& b) const {
    return a.hash == b.hash && *a.state == b.state && a.ok->Matches(b.ok);
  }
  bool operator()(const MemoKey& a, const MemoProbe& b) const { return (*this)(b, a); }
};

// How it works
// ------------
// Wing & Gong's search, with Lowe's just-in-time linearization, as Porcupine implements it. The
// key's operations become a list of events sorted by time: a call event per operation and a
// return event per kOk one (a call sorts before a return at the same instant: contract rule 2).
// Walking the list from its head, the first events are the calls of operations that could take
// effect next (they began before the earliest pending return). At a call event the search tries
// the operation on the current model state: if the model accepts it, the operation is
// linearized -- its call and return events are unlinked from the list (dancing links), it is
// pushed on a stack with the state before it, and the walk restarts from the head. Reaching a
// return event means that operation's deadline has come while it is still unplaced: every
// candidate before it has been tried, so the search backtracks: it pops the last linearized
// operation, relinks its events, restores the state and tries the next candidate after it. The
// key is linearizable when every kOk operation is placed; it is not when a return event is met
// with an empty stack.
//
// The memo makes this tractable: two partial orders that placed the same set of operations and
// reached the same model state have the same futures, so a (set, state) pair is explored once.
//
// Unknown outcomes (contract rule 3). Such an operation has a call event and no return event:
// nothing forces it to be placed, and success is declared when every kOk operation is placed,
// which leaves the unplaced unknown ones as "never happened". Such an operation has no
// deadline, so the search may always postpone it, and leaving it unplaced keeps every option
// that placing it would give. Left alone, though, every unknown write stays a candidate at
// every later point and the search tries every subset of them in every order: 30 unknown puts
// that nobody saw cost 2^30. Five rules remove what can never help, each by pointing at a
// configuration the search also reaches that has the same state, the same kOk operations
// placed and fewer (or earlier, identical) unknown ones placed -- so the result is unchanged:
//  1. Fewest first: at each point the search tries the kOk candidates before the unknown
//     ones, so a configuration with fewer unknown operations placed is met before the ones
//     that extend it -- which is what lets rule 3 prune them (an unknown put that a later put
//     overwrote meets the configuration without it, already explored).
//  2. An unknown operation is tried only where it changes the state. (An unknown get therefore
//     never branches; Check() drops those up front.)
//  3. Dominance: (set, state) is dominated by a pair with the same state whose set has the
//     same kOk operations and a subset of its unknown ones. The memo is keyed by (kOk
//     operations placed, state) and keeps the unknown sets seen with it; a new pair is explored
//     only if none of them is a subset of its own.
//  4. Overwrites: an unknown operation placed right after another unknown one is skipped when
//     it leaves the same state as it would have without that one (a put after a put): the
//     configuration without the first is explored too. Model::IsBlindWrite says so without a
//     step for the operations whose effect never depends on the state.
//  5. Twins: of two unknown operations with the same kind and inputs (two "incr +1" that timed
//     out), the one called first and bounded no earlier (rule 6) can stand wherever the other
//     can, so the other is placed only after it: otherwise "u1 then not u2" and "u2 then not
//     u1" would both be explored.
//  6. Bounds: an unknown operation whose recorder knows it cannot take effect after
//     `unknown_until` is not placed after an operation called later than that (it would have
//     to follow it). Without a bound every unknown write stays a candidate to the end, and the
//     cost of the search grows with how many are pending at once.
class KeySearch {
 public:
  KeySearch(const std::vector<Operation>& history, const std::vector<size_t>& ops,
            const Model& model, const CheckOptions& options)
      : history_(history), ops_(ops), model_(model), options_(options) {}

  KeyReport Run(uint64_t* steps_out);

 private:
  struct Event {
    size_t op;  // index into ops_
    bool is_call;
    Time time;
  };
  struct Frame {
    int call_event;
    State before;
    Time latest_call_before;
  };
  static constexpr int kNil = -1;

  const Operation& op(size_t local) const { return history_[ops_[local]]; }
  bool unknown(size_t local) const { return op(local).outcome == Outcome::kUnknown; }

  void BuildEvents();
  void Unlink(int e) {
    next_[prev_[e]] = next_[e];
    if (next_[e] != kNil) prev_[next_[e]] = prev_[e];
  }
  void Relink(int e) {
    next_[prev_[e]] = e;
    if (next_[e] != kNil) prev_[next_[e]] = e;
  }
  void Lift(int call) {
    Unlink(call);
    if (match_[call] != kNil) Unlink(match_[call]);
  }
  void Unlift(int call) {
    if (match_[call] != kNil) Relink(match_[call]);
    Relink(call);
  }
  // Rules 2 and 4: whether placing unknown op `local`, taking `state` to `after`, can help.
  // Rules 4, 5 and 6 before any model step: whether unknown op `local` may be placed next.
  bool Admissible(size_t local) const;
  bool Worthwhile(size_t local, const State& state, const State& after) const;
  // Rule 3: true when (placed sets, state) is new and not dominated; records it.
  bool Remember(const State& state);
  void RecordDeadEnd(int return_event, const State& state);
  std::string Explain() const;

  const std::vector<Operation>& history_;
  const std::vector<size_t>& ops_;
  const Model& model_;
  const CheckOptions& options_;

  std::vector<Event> events_;
  std::vector<int> next_, prev_, match_;  // head sentinel at index events_.size()
  int head_ = 0;
  std::vector<size_t> rank_;                 // an op's bit in ok_placed_ or unknown_placed_
  std::vector<std::optional<size_t>> twin_;  // rule 5: the previous identical unknown op
  Bits ok_placed_{0}, unknown_placed_{0};
  std::vector<Frame> stack_;
  Time latest_call_ = 0;  // the latest call among the placed operations (rule 6)
  bool has_unknown_ = false;
  // Per (kOk set, state): the unknown sets seen with it (rule 3); empty without unknown ops.
  std::unordered_map<MemoKey, std::vector<Bits>, MemoHash, MemoEqual> memo_;

  // The deepest dead end: the order placed then, and the operation whose deadline came.
  std::vector<size_t> best_order_;
  std::optional<size_t> best_stuck_;
  std::vector<size_t> best_pending_;
  State best_state_;
};

void KeySearch::BuildEvents() {
  size_t ok_count = 0, unknown_count = 0;
  rank_.resize(ops_.size());
  // Ranked by call, so that the placed kOk operations form a prefix (Bits::Compact).
  std::vector<size_t> call_order(ops_.size());
  for (size_t i = 0; i < ops_.size(); ++i) call_order[i] = i;
  std::stable_sort(call_order.begin(), call_order.end(),
                   [&](size_t a, size_t b) { return op(a).call < op(b).call; });
  for (size_t i : call_order) rank_[i] = unknown(i) ? unknown_count++ : ok_count++;
  for (size_t i = 0; i < ops_.size(); ++i) {
    events_.push_back({.op = i, .is_call = true, .time = op(i).call});
    if (!unknown(i)) events_.push_back({.op = i, .is_call = false, .time = op(i).ret});
  }
  // Rule 5: each unknown op's twin: the latest one called before it with the same kind and
  // inputs that can take effect at least as late.
  std::vector<size_t> by_call;
  for (size_t i = 0; i < ops_.size(); ++i) {
    if (unknown(i)) by_call.push_back(i);
  }
  std::stable_sort(by_call.begin(), by_call.end(),
                   [&](size_t a, size_t b) { return op(a).call < op(b).call; });
  twin_.assign(ops_.size(), std::nullopt);
  std::map<std::tuple<OpKind, std::string, Value, int64_t>, std::vector<size_t>> identical;
  for (size_t i : by_call) {
    const Operation& o = op(i);
    std::vector<size_t>& earlier = identical[{o.kind, o.value, o.expected, o.delta}];
    for (auto it = earlier.rbegin(); it != earlier.rend(); ++it) {
      if (op(*it).unknown_until >= o.unknown_until) {
        twin_[i] = *it;
        break;
      }
    }
    earlier.push_back(i);
  }
  ok_placed_ = Bits(ok_count);
  unknown_placed_ = Bits(unknown_count);
  std::stable_sort(events_.begin(), events_.end(), [](const Event& a, const Event& b) {
    if (a.time != b.time) return a.time < b.time;
    return a.is_call && !b.is_call;
  });
  const int n = static_cast<int>(events_.size());
  head_ = n;
  next_.assign(n + 1, kNil);
  prev_.assign(n + 1, kNil);
  match_.assign(n + 1, kNil);
  std::vector<int> call_of(ops_.size(), kNil);
  int last = head_;
  for (int e = 0; e < n; ++e) {
    next_[last] = e;
    prev_[e] = last;
    last = e;
    if (events_[e].is_call) {
      call_of[events_[e].op] = e;
    } else {
      match_[call_of[events_[e].op]] = e;
    }
  }
}

bool KeySearch::Remember(const State& state) {
  const size_t hash = MemoHash::Of(ok_placed_, state);
  auto it = memo_.find(MemoProbe{.ok = &ok_placed_, .state = &state, .hash = hash});
  if (it == memo_.end()) {
    it = memo_
             .emplace(MemoKey{.ok = ok_placed_.Compacted(), .state = state, .hash = hash},
                      std::vector<Bits>())
             .first;
  } else if (!has_unknown_) {
    return false;  // the same set and state, explored already
  }
  if (!has_unknown_) return true;
  std::vector<Bits>& seen = it->second;
  for (const Bits& earlier : seen) {
    if (earlier.SubsetOf(unknown_placed_)) return false;
  }
  // Sets the new one dominates will never prune anything it would not.
  std::erase_if(seen, [&](const Bits& earlier) { return unknown_placed_.SubsetOf(earlier); });
  seen.push_back(unknown_placed_);
  return true;
}

bool KeySearch::Admissible(size_t local) const {
  const Operation& o = op(local);
  if (o.unknown_until < latest_call_) return false;
  if (twin_[local] && !unknown_placed_.Has(rank_[*twin_[local]])) return false;
  if (stack_.empty() || !unknown(events_[stack_.back().call_event].op)) return true;
  return !model_.IsBlindWrite(o);
}

bool KeySearch::Worthwhile(size_t local, const State& state, const State& after) const {
  if (after == state) return false;
  if (!stack_.empty()) {
    const Frame& top = stack_.back();
    const size_t previous = events_[top.call_event].op;
    if (unknown(previous) && model_.Step(top.before, op(local)) == after) return false;
  }
  return true;
}

void KeySearch::RecordDeadEnd(int return_event, const State& state) {
  if (best_stuck_ && stack_.size() <= best_order_.size()) return;
  best_order_.clear();
  for (const Frame& frame : stack_) best_order_.push_back(events_[frame.call_event].op);
  best_stuck_ = events_[return_event].op;
  best_state_ = state;
  best_pending_.clear();
  for (int e = next_[head_]; e != return_event; e = next_[e]) {
    if (events_[e].is_call) best_pending_.push_back(events_[e].op);
  }
}

KeyReport KeySearch::Run(uint64_t* steps_out) {
  KeyReport report{.key = op(0).key};
  BuildEvents();
  size_t ok_left = 0;
  for (size_t i = 0; i < ops_.size(); ++i) ok_left += unknown(i) ? 0 : 1;

  const auto deadline = std::chrono::steady_clock::now() + options_.max_time_per_key;
  uint64_t steps = 0, iterations = 0;
  // Candidates are tried in two passes: kOk operations, then unknown ones (see "Unknown
  // outcomes": the configurations with fewer unknown operations placed are met first).
  bool unknown_pass = false;
  has_unknown_ = ok_left < ops_.size();
  State state = model_.Init();
  int e = next_[head_];
  while (ok_left > 0) {
    if (steps >= options_.max_steps_per_key || memo_.size() >= options_.max_memo_entries_per_key ||
        (++iterations % 1024 == 0 && std::chrono::steady_clock::now() > deadline)) {
      report.verdict = Verdict::kUnknown;
      report.explanation = "key " + FormatValue(report.key) + ": gave up after " +
                           std::to_string(steps) + " model steps and " +
                           std::to_string(memo_.size()) + " configurations remembered (" +
                           std::to_string(ops_.size()) + " operations on this key)\n";
      *steps_out += steps;
      return report;
    }
    // Every kOk operation unplaced has its return event in the list, so the walk meets one
    // before the end.
    if (events_[e].is_call) {
      const size_t local = events_[e].op;
      if (unknown(local) != unknown_pass) {
        e = next_[e];
        continue;
      }
      if (unknown(local) && !Admissible(local)) {
        e = next_[e];
        continue;
      }
      ++steps;
      std::optional<State> after = model_.Step(state, op(local));
      if (after && unknown(local) && !Worthwhile(local, state, *after)) after.reset();
      if (after) {
        Bits& placed = unknown(local) ? unknown_placed_ : ok_placed_;
        placed.Set(rank_[local]);
        if (Remember(*after)) {
          stack_.push_back(
              {.call_event = e, .before = std::move(state), .latest_call_before = latest_call_});
          state = std::move(*after);
          latest_call_ = std::max(latest_call_, op(local).call);
          ok_left -= unknown(local) ? 0 : 1;
          Lift(e);
          e = next_[head_];
          unknown_pass = false;
          continue;
        }
        placed.Clear(rank_[local]);
      }
      e = next_[e];
      continue;
    }
    if (!unknown_pass && has_unknown_) {
      unknown_pass = true;
      e = next_[head_];
      continue;
    }
    RecordDeadEnd(e, state);
    if (stack_.empty()) {
      report.verdict = Verdict::kViolation;
      report.explanation = Explain();
      *steps_out += steps;
      return report;
    }
    Frame frame = std::move(stack_.back());
    stack_.pop_back();
    const size_t local = events_[frame.call_event].op;
    (unknown(local) ? unknown_placed_ : ok_placed_).Clear(rank_[local]);
    ok_left += unknown(local) ? 0 : 1;
    state = std::move(frame.before);
    latest_call_ = frame.latest_call_before;
    Unlift(frame.call_event);
    e = next_[frame.call_event];
    unknown_pass = unknown(local);
  }
  *steps_out += steps;
  return report;
}

std::string KeySearch::Explain() const {
  constexpr size_t kShownOrder = 20;
  std::string out = "key " + FormatValue(op(0).key) + ": not linearizable (" +
                    std::to_string(ops_.size()) + " operations on this key)\n";
  out += "  the longest linearizable order found places " + std::to_string(best_order_.size()) +
         " of them";
  if (best_order_.empty()) {
    out += "\n";
  } else {
    out += best_order_.size() > kShownOrder ? "; its last ones (=> state after):\n"
                                            : " (=> state after):\n";
  }
  State state = model_.Init();
  for (size_t i = 0; i < best_order_.size(); ++i) {
    const size_t local = best_order_[i];
    state = model_.Step(state, op(local)).value_or(state);  // accepted during the search
    if (i + kShownOrder < best_order_.size()) continue;
    out += "    #" + std::to_string(ops_[local]) + " " + FormatOperation(op(local)) + "  => " +
           model_.FormatState(state) + "\n";
  }
  const size_t stuck = *best_stuck_;
  out += "  then #" + std::to_string(ops_[stuck]) + " " + FormatOperation(op(stuck)) +
         " must take effect before it returns at " + std::to_string(op(stuck).ret) +
         ", but from state " + model_.FormatState(best_state_) +
         " no operation called by then can go next without a dead end:\n";
  for (size_t local : best_pending_) {
    const bool legal = model_.Step(best_state_, op(local)).has_value();
    out += "    #" + std::to_string(ops_[local]) + " " + FormatOperation(op(local)) +
           (legal ? "  (possible here, but nothing fits after it)" : "  (impossible here)") + "\n";
  }
  return out;
}

}  // namespace

std::string Model::FormatState(const State& state) const { return FormatValue(state); }

bool KvModel::IsBlindWrite(const Operation& op) const {
  return op.kind == OpKind::kPut || op.kind == OpKind::kRemove;
}

std::optional<State> KvModel::Step(const State& state, const Operation& op) const {
  const bool check = op.outcome == Outcome::kOk;
  auto applied_matches = [&](bool applied) {
    return !check || !op.applied.has_value() || *op.applied == applied;
  };
  switch (op.kind) {
    case OpKind::kGet:
      if (check && op.read != state) return std::nullopt;
      return state;
    case OpKind::kPut:
      return State(op.value);
    case OpKind::kRemove:
      if (!applied_matches(state.has_value())) return std::nullopt;
      return State();
    case OpKind::kPutIfAbsent:
      if (!applied_matches(!state.has_value())) return std::nullopt;
      return state ? state : State(op.value);
    case OpKind::kCompareAndPut: {
      const bool swapped = state == op.expected;
      if (!applied_matches(swapped)) return std::nullopt;
      return swapped ? State(op.value) : state;
    }
    case OpKind::kIncrement: {
      const std::optional<int64_t> before = CounterOf(state);
      int64_t after = 0;
      if (!before || __builtin_add_overflow(*before, op.delta, &after)) {
        // The increment fails without effect: a response saying it succeeded is impossible.
        if (check) return std::nullopt;
        return state;
      }
      if (check && op.counter != after) return std::nullopt;
      return State(std::to_string(after));
    }
  }
  return std::nullopt;
}

std::string_view VerdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kOk:
      return "ok";
    case Verdict::kViolation:
      return "violation";
    case Verdict::kUnknown:
      return "unknown (gave up)";
    case Verdict::kInvalid:
      return "invalid history";
  }
  return "?";
}

CheckResult Check(const std::vector<Operation>& history, const Model& model,
                  const CheckOptions& options) {
  std::map<std::string_view, std::vector<size_t>> by_key;
  for (size_t i = 0; i < history.size(); ++i) {
    const Operation& op = history[i];
    // An unknown get constrains nothing and changes nothing (contract rule 3).
    if (op.outcome == Outcome::kUnknown && op.kind == OpKind::kGet) continue;
    by_key[op.key].push_back(i);
  }
  CheckResult result;
  for (const auto& [key, ops] : by_key) {
    ++result.keys_checked;
    KeyReport report;
    for (size_t i : ops) {
      const Operation& op = history[i];
      const bool backwards =
          op.outcome == Outcome::kOk ? op.ret < op.call : op.unknown_until < op.call;
      if (backwards) {
        report = {.key = std::string(key),
                  .verdict = Verdict::kInvalid,
                  .explanation = "key " + FormatValue(std::string(key)) + ": #" +
                                 std::to_string(i) + " " + FormatOperation(op) +
                                 " ends before its call\n"};
        break;
      }
    }
    if (report.verdict == Verdict::kOk) {
      report = KeySearch(history, ops, model, options).Run(&result.steps);
    }
    if (report.verdict == Verdict::kOk) continue;
    auto severity = [](Verdict v) {
      switch (v) {
        case Verdict::kViolation:
          return 3;
        case Verdict::kInvalid:
          return 2;
        case Verdict::kUnknown:
          return 1;
        case Verdict::kOk:
          return 0;
      }
      return 0;
    };
    if (severity(report.verdict) > severity(result.verdict)) result.verdict = report.verdict;
    result.explanation += report.explanation;
    result.failed_keys.push_back(std::move(report));
  }
  return result;
}

CheckResult Check(const std::vector<Operation>& history, const CheckOptions& options) {
  return Check(history, KvModel(), options);
}

std::string FormatOperation(const Operation& op) {
  const bool known = op.outcome == Outcome::kOk;
  std::string out = "c" + std::to_string(op.client) + " [" + std::to_string(op.call) + ",";
  if (known) {
    out += std::to_string(op.ret);
  } else {
    out += op.unknown_until == kForever ? "?" : "?<=" + std::to_string(op.unknown_until);
  }
  out += "] ";
  const std::string key = FormatValue(op.key);
  auto flag = [&](const char* yes, const char* no) -> std::string {
    if (!op.applied) return " -> (unchecked)";
    return std::string(" -> ") + (*op.applied ? yes : no);
  };
  std::string output;
  switch (op.kind) {
    case OpKind::kGet:
      out += "get(" + key + ")";
      output = " -> " + FormatValue(op.read);
      break;
    case OpKind::kPut:
      out += "put(" + key + ", " + FormatValue(op.value) + ")";
      break;
    case OpKind::kRemove:
      out += "remove(" + key + ")";
      output = flag("removed", "not removed");
      break;
    case OpKind::kPutIfAbsent:
      out += "put-if-absent(" + key + ", " + FormatValue(op.value) + ")";
      output = flag("stored", "not stored");
      break;
    case OpKind::kCompareAndPut:
      out += "cas(" + key + ", " + FormatValue(op.expected) + " => " + FormatValue(op.value) + ")";
      output = flag("swapped", "not swapped");
      break;
    case OpKind::kIncrement:
      out += "incr(" + key + ", " + (op.delta >= 0 ? "+" : "") + std::to_string(op.delta) + ")";
      output = " -> " + std::to_string(op.counter);
      break;
  }
  return out + (known ? output : std::string(" unknown"));
}

std::string FormatHistory(const std::vector<Operation>& history) {
  std::string out;
  for (size_t i = 0; i < history.size(); ++i) {
    out += "#" + std::to_string(i) + " " + FormatOperation(history[i]) + "\n";
  }
  return out;
}

}  // namespace floe::testing::lin
