// linearizability: checks that a recorded history of key/value operations is linearizable.
//
// A history is what clients saw: each operation's call time, its response time and its output.
// It is linearizable when every operation can be given one instant, inside its own interval,
// at which it took effect, such that applying the operations one by one at those instants to a
// sequential model of the store (KvModel: one value per key) produces exactly the outputs the
// clients saw. Check() searches for such an order, key by key, and returns kOk, or kViolation
// with an explanation a developer can read (the key, the longest order it could build, the
// operation that could not be placed and the state it met), or kUnknown when it ran out of the
// budget in CheckOptions.
//
// Contract
// --------
// 1. Times are any monotonic unit (a virtual clock's ticks, steady_clock nanoseconds); only
//    their order matters. An operation with outcome kOk REQUIRES call <= ret.
// 2. Real-time order is the only order imposed: if a.ret < b.call then a took effect before b.
//    An operation called at the same instant another returns counts as concurrent with it, so
//    a tie never causes a rejection; a recorder that needs the strict order uses a clock that
//    advances between a response and the next call.
// 3. outcome kUnknown: the client does not know whether the operation took effect (its call
//    timed out, the connection dropped). It may have taken effect at any instant after its call,
//    however late (up to unknown_until, when the recorder knows a bound), or never; its output
//    is not checked (leave it unset). A call that definitely did NOT take effect (refused
//    before it was sent, a typed error that says nothing was applied) is left out of the
//    history by the recorder: recording it as kUnknown is sound but slower. Likewise a kOk
//    response that carries an error with no effect (INCR of a non-integer) is left out.
// 4. Operations on different keys are independent (every operation touches one key), so each
//    key is checked separately; the history is linearizable iff every key's part is.
// 5. The search is Wing & Gong's, with Lowe's just-in-time linearization and a memo of
//    (operations linearized, model state), as Porcupine does it. Its cost grows with the
//    operations per key and with how many overlap in time (exponentially in the latter): 5,000
//    operations over 10+ keys with ~10 clients check in milliseconds, but one key with
//    thousands of operations takes seconds to reject (README.md has the measurements).
//    CheckOptions bounds the work per key.
// 6. Explanations and FormatHistory() name operations by their index in the vector given to
//    Check(), so "#17" is history[17].
//
// Thread rule: the functions are thread-safe (they share no state); a Model is immutable.

#ifndef FLOE_TESTING_LINEARIZABILITY_H_
#define FLOE_TESTING_LINEARIZABILITY_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace floe::testing::lin {

// A key's value; nullopt when the key is absent.
using Value = std::optional<std::string>;
using Time = uint64_t;
inline constexpr Time kForever = UINT64_MAX;

enum class OpKind : uint8_t {
  kGet,            // output: read
  kPut,            // input: value
  kRemove,         // output: applied = whether a value was removed (or nullopt: unchecked)
  kPutIfAbsent,    // input: value; output: applied = whether it stored (or nullopt)
  kCompareAndPut,  // inputs: expected, value; output: applied = whether it swapped (or nullopt)
  kIncrement,      // input: delta; output: counter = the value after. The value is a decimal
                   // string; absent counts as 0 (Redis's INCRBY)
};

enum class Outcome : uint8_t {
  kOk,       // the response arrived: the operation took effect inside [call, ret]
  kUnknown,  // contract rule 3: may have taken effect at any time after call, or never
};

// One operation as a client saw it. Fields a kind does not use are ignored.
struct Operation {
  int client = 0;  // for explanations only; the check does not assume a client is sequential
  std::string key;
  OpKind kind = OpKind::kGet;
  // Inputs.
  std::string value;  // kPut, kPutIfAbsent, kCompareAndPut: the value written
  Value expected;     // kCompareAndPut: the value required for the swap (nullopt: absent)
  int64_t delta = 0;  // kIncrement
  // Outputs, checked only when outcome is kOk.
  Value read;                   // kGet
  std::optional<bool> applied;  // kRemove, kPutIfAbsent, kCompareAndPut; nullopt: not checked
  int64_t counter = 0;          // kIncrement
  Time call = 0;
  Time ret = 0;  // ignored when outcome is kUnknown (treated as +infinity)
  Outcome outcome = Outcome::kOk;
  // kUnknown only: the latest instant at which the operation can still take effect, when the
  // recorder knows one (the server drops a request past its deadline, the node was stopped);
  // kForever when it does not. A bound is not needed for correctness, but it makes the check
  // much cheaper when many unknown writes hit one key (linearizability.cc, rule 6).
  Time unknown_until = kForever;
};

// A model's state for one key. KvModel's is the key's value; another model encodes its state in
// this form too, so that states stay hashable and comparable for the search's memo.
using State = Value;

// A sequential specification of one key. Immutable after construction; thread-safe.
class Model {
 public:
  virtual ~Model() = default;
  // The state of a key no operation has touched.
  virtual State Init() const = 0;
  // The state after `op` is applied to `state`, or nullopt when `op` cannot have happened there:
  // its outcome is kOk and the output it recorded is not the one it would have returned. An
  // operation with outcome kUnknown is applied with its output unchecked (it returns the state
  // it would leave, which may be `state` itself when it would have failed without effect).
  virtual std::optional<State> Step(const State& state, const Operation& op) const = 0;
  // True when `op`, its output unchecked, leaves a state that does not depend on the state
  // before it (a put). Only an optimization: the default, false, is always correct.
  virtual bool IsBlindWrite(const Operation& /*op*/) const { return false; }
  // How a state is shown in explanations.
  virtual std::string FormatState(const State& state) const;
};

// The DKV's key: a register with get/put/remove/put-if-absent/compare-and-put, and a counter
// (kIncrement) that shares the same value, as INCRBY shares a string key in Redis. An increment
// of a value that is not a canonical decimal int64, or that would overflow, fails without
// effect (so a kOk one cannot have happened there, and a kUnknown one leaves the value as is).
class KvModel final : public Model {
 public:
  State Init() const override { return std::nullopt; }
  std::optional<State> Step(const State& state, const Operation& op) const override;
  bool IsBlindWrite(const Operation& op) const override;
};

// Bounds on the search for one key. A key that exceeds either is reported kUnknown: the search
// gave up, which says nothing either way (raise the budget, or record fewer concurrent calls).
struct CheckOptions {
  uint64_t max_steps_per_key = 50'000'000;             // model steps tried; default 50 million
  std::chrono::milliseconds max_time_per_key{60'000};  // wall clock; default 60 s
  // Configurations remembered: the memory the search holds, ~150 bytes each (so ~600 MB at
  // the default, 4 million).
  size_t max_memo_entries_per_key = 4'000'000;
};

enum class Verdict : uint8_t {
  kOk,         // linearizable
  kViolation,  // not linearizable: the explanation shows where
  kUnknown,    // the budget ran out on some key before an answer (and no key was a violation)
  kInvalid,    // the history breaks the contract (a kOk operation with ret < call)
};
std::string_view VerdictName(Verdict verdict);

struct KeyReport {
  std::string key;
  Verdict verdict = Verdict::kOk;
  std::string explanation;
};

struct CheckResult {
  // kViolation if any key is one, else kInvalid if the history is, else kUnknown if any key
  // gave up, else kOk.
  Verdict verdict = Verdict::kOk;
  // Every key whose verdict is not kOk, in key order, each with its explanation.
  std::vector<KeyReport> failed_keys;
  // All failed keys' explanations, for a test's failure message; empty when kOk.
  std::string explanation;
  size_t keys_checked = 0;
  uint64_t steps = 0;  // model steps over all keys: a measure of the search's work
};

// Checks `history` against `model` (contract above). Returns the verdict; never throws.
CheckResult Check(const std::vector<Operation>& history, const Model& model,
                  const CheckOptions& options = {});
// Check(history, KvModel(), options).
CheckResult Check(const std::vector<Operation>& history, const CheckOptions& options = {});

// One line for `op`, e.g. `c3 [100,130] get("k") -> "v"` or `c1 [7,?] put("k", "a") unknown`.
// Values are quoted with non-printable bytes escaped, and long ones shortened.
std::string FormatOperation(const Operation& op);
// The history, one line per operation, each prefixed by its index ("#17 ").
std::string FormatHistory(const std::vector<Operation>& history);

// ---- Histories as text (linearizability_text.cc) -------------------------------------------
//
// So that a process that is not C++ (the pytest multi-process tests) can record a history and
// the `lin_check` tool can check it. One operation per line; blank lines and lines starting
// with '#' are skipped. A line is space-separated name=value fields, in any order:
//
//   c=<client> op=<get|put|remove|put-if-absent|cas|incr> key=<hex> call=<time> ret=<time|?>
//   value=<hex>  expected=<hex|->  delta=<int>  read=<hex|->  applied=<1|0|->  counter=<int>
//   until=<time>
//
// Bytes (key, value, expected, read) are hex, so any byte string fits ("" is the empty one);
// "-" is absent (read, expected) or unchecked (applied). ret=? is outcome kUnknown, with until
// its optional unknown_until. Fields a kind does not use may be left out; c defaults to 0.
// Example: `c=1 op=put key=6b value=61 call=10 ret=12`, `c=2 op=get key=6b read=- call=11 ret=13`.

// The text of `history`, one line per operation; ParseHistory(WriteHistory(h)) == h in every
// field the operation's kind uses.
std::string WriteHistory(const std::vector<Operation>& history);

// Parses `text` into `*history` (replacing its contents). On a malformed line returns false
// and sets `*error` to its line number and what is wrong.
bool ParseHistory(std::string_view text, std::vector<Operation>* history, std::string* error);

}  // namespace floe::testing::lin

#endif  // FLOE_TESTING_LINEARIZABILITY_H_
