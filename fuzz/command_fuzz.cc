// libFuzzer target for the command layer: an in-process Engine and a few Sessions run command
// sequences decoded from the input, the way hostile clients would send them.
//
// How it works. The input is read by FuzzedDataProvider as a list of steps (at most kMaxSteps).
// A step either runs one command from the command table (every command and subcommand, found
// through internal::AllCommands(), so a command is fuzzed the day it is added), creates a key of
// some type (string, HLL, Count-Min, range Count-Min, Bloom, expiring, or a frame imported by a
// job it waits for, then grouped, selected, filtered or exported), wraps commands in
// WATCH/MULTI/EXEC, sends a command made of raw bytes, switches a client's protocol, replaces a
// client, or runs an active-expiry cycle. Each argument is drawn by a kind the input picks: what
// the command's syntax line expects at that position, a key from a small key space (so commands
// meet each other's values, and one key is longer than 64 KiB), an option word (the command's
// own or any, in odd case, repeated as often as the input likes), a hostile value (extreme
// integers, inf/nan, empty, binary, NUL), an integer or double built from input bytes, raw
// bytes, or a 1 MB string.
//
// What counts as a bug, besides what ASan/UBSan and libFuzzer catch (a crash, an uncaught
// exception, a leak, a timeout, one allocation over -malloc_limit_mb, RSS over -rss_limit_mb):
//   1. every command yields exactly one well-formed reply, decodable by resp::ParseReply;
//   2. a RESP2 client never receives a RESP3-only type (unless the command switched protocol);
//   3. INFO's errors_internal (the command-boundary safety net's count), once the server has
//      it, stays 0: an exception that a handler let escape is a bug even if the node survives.
//
// The memory cap: maxmemory kMaxMemory and proto-max-bulk-len kMaxBulk. They belong to the
// harness, so CONFIG SET may lower them but not raise or lift them (an administrator who raises
// them allows big allocations on purpose); every other setting is fuzzed freely. Run with
// -rss_limit_mb=2048 -malloc_limit_mb=256 (fuzz/README.md): within the cap the largest single
// allocation is a reply of all the values (under 100 MB of data, its buffer doubled), so one
// of 256 MB means something a client asked for escaped the limits.

#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/base.h"
#include "resp/resp.h"
#include "server/internal/command.h"
#include "server/server.h"
#include "store/internal/epoch.h"
#include "store/store.h"

namespace floe::server {
namespace {

using internal::CommandSpec;
using internal::EqualsIgnoreCase;

constexpr int64_t kMaxMemory = 64ll << 20;
constexpr int64_t kMaxBulk = 8ll << 20;
constexpr int kMaxSteps = 48;
constexpr int kMaxArgs = 12;
constexpr int kSessions = 3;

// Few keys, so commands meet each other's values; the last is over the 64 KiB key limit.
const std::vector<std::string>& Keys() {
  static const std::vector<std::string> keys = {"k0", "k1", "k2",
                                                "k3", "",   std::string(65537, 'k')};
  return keys;
}

// Plain elements and values (PFADD, BF.ADD, SET, ECHO...).
const std::vector<std::string>& Elements() {
  static const std::vector<std::string> v = {"a", "b", "c", "d", "e", "v", "10", "hello world"};
  return v;
}

// Values a hostile client tries first.
const std::vector<std::string>& Hostile() {
  static const std::vector<std::string> values = [] {
    std::vector<std::string> v = {"0",
                                  "-1",
                                  "1",
                                  "2",
                                  "3",
                                  "4",
                                  "8",
                                  "10",
                                  "16",
                                  "31",
                                  "32",
                                  "64",
                                  "100",
                                  "-100",
                                  "1000",
                                  "65535",
                                  "65536",
                                  "1048576",
                                  "536870911",
                                  "536870912",
                                  "2147483647",
                                  "2147483648",
                                  "-2147483648",
                                  "-2147483649",
                                  "4294967295",
                                  "4294967296",
                                  "9223372036854775807",
                                  "9223372036854775806",
                                  "9223372036854775808",
                                  "-9223372036854775808",
                                  "-9223372036854775807",
                                  "-9223372036854775809",
                                  "18446744073709551615",
                                  "18446744073709551616",
                                  "99999999999999999999999999999999999999",
                                  "inf",
                                  "-inf",
                                  "+inf",
                                  "INF",
                                  "nan",
                                  "-nan",
                                  "NaN",
                                  "1e308",
                                  "1e309",
                                  "-1e308",
                                  "1e-308",
                                  "1e-4950",
                                  "4.9e-324",
                                  "0.5",
                                  "-0.5",
                                  "0.01",
                                  "0.001",
                                  "0.99",
                                  "0.999999",
                                  "1.0",
                                  "1.5",
                                  "3.14",
                                  "1e-300",
                                  "0x10",
                                  " 1",
                                  "1 ",
                                  "+1",
                                  "-0",
                                  "01",
                                  "00",
                                  "1.",
                                  ".5",
                                  "",
                                  "*",
                                  "?",
                                  "[",
                                  "[a-",
                                  "\\",
                                  "k*",
                                  "normal",
                                  "yes",
                                  "no",
                                  "string",
                                  "hll",
                                  "cms",
                                  "bf",
                                  "none",
                                  "default",
                                  "x",
                                  "maxmemory",
                                  "proto-max-bulk-len",
                                  "hz",
                                  "timeout",
                                  "maxclients",
                                  "loglevel",
                                  "requirepass",
                                  "client-output-buffer-limit",
                                  "normal 0 1000 9223372036854775807",
                                  "127.0.0.1:1000",
                                  "127.0.0.1:1001",
                                  "127.0.0.1:0",
                                  "1 2",
                                  "a\r\nb",
                                  "\r\n",
                                  "*1\r\n$4\r\nPING\r\n",
                                  "all",
                                  "everything",
                                  "stats",
                                  "ffff",
                                  "\\x00",
                                  "get",
                                  "set",
                                  "client|list",
                                  "client"};
    v.emplace_back("\0", 1);
    v.emplace_back("a\0b", 3);
    v.emplace_back("\xff\xfe\x80\x00\x01", 5);
    v.emplace_back(1000, '9');  // a 1,000-digit number
    return v;
  }();
  return values;
}

// The integers most likely to break size arithmetic, tried first where a number is expected.
const std::vector<std::string>& Extreme() {
  static const std::vector<std::string> v = {"9223372036854775807",
                                             "-9223372036854775808",
                                             "9223372036854775806",
                                             "-9223372036854775807",
                                             "4611686018427387904",
                                             "2147483648",
                                             "4294967296",
                                             "4294967295",
                                             "536870912",
                                             "1000000000000000",
                                             "100000000000000",
                                             "268435456",
                                             "8388608",
                                             "300000000",
                                             "-1",
                                             "0"};
  return v;
}

// Option words of every command, tried against every command.
const std::vector<std::string>& AnyOption() {
  static const std::vector<std::string> v = {
      "EX",         "PX",       "EXAT",      "PXAT",       "KEEPTTL", "GET",     "NX",
      "XX",         "GT",       "LT",        "MATCH",      "COUNT",   "TYPE",    "WEIGHTS",
      "ERROR",      "CAPACITY", "EXPANSION", "NONSCALING", "ITEMS",   "LOG2M",   "REGWIDTH",
      "EXPTHRESH",  "SPARSEON", "PERSIST",   "ID",         "ADDR",    "LADDR",   "SKIPME",
      "USER",       "FILTERBY", "MODULE",    "ACLCAT",     "PATTERN", "SETNAME", "AUTH",
      "ASYNC",      "SYNC",     "INT",       "TEXT",       "SIZE",    "FILTERS", "NOCREATE",
      "WITHSCORES", "LIMIT",    "HELP",      "COLS",       "WHERE",   "AND",     "ISNA",
      "NOTNA",      "REPLACE"};
  return v;
}

const std::string& OneMegabyte() {
  static const std::string s(1 << 20, 'x');
  return s;
}

// What the syntax line of a command expects at each position.
enum class Hint { kKey, kNumber, kOption, kValue };
struct Slot {
  Hint hint;
  std::string word;  // the option word, for kOption
};

bool IsUpperWord(std::string_view t) {
  if (t.size() < 2) return false;
  for (char c : t) {
    if (!(std::isupper(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)))) {
      return false;
    }
  }
  return true;
}

Slot SlotFor(std::string_view token) {
  if (IsUpperWord(token)) return {Hint::kOption, std::string(token)};
  const std::string t = internal::ToLower(token);
  if (t.find("key") != std::string::npos || t == "destination" || t == "source") {
    return {Hint::kKey, ""};
  }
  static const char* const kNumbers[] = {"seconds",
                                         "milliseconds",
                                         "unix-time-seconds",
                                         "unix-time-milliseconds",
                                         "offset",
                                         "start",
                                         "end",
                                         "increment",
                                         "decrement",
                                         "width",
                                         "depth",
                                         "bits",
                                         "error_rate",
                                         "capacity",
                                         "expansion",
                                         "error",
                                         "probability",
                                         "q",
                                         "lo",
                                         "hi",
                                         "numkeys",
                                         "weight",
                                         "cursor",
                                         "index",
                                         "count",
                                         "n",
                                         "hash",
                                         "protover",
                                         "client-id",
                                         "id",
                                         "p",
                                         "0",
                                         "1"};
  for (const char* n : kNumbers) {
    if (t == n) return {Hint::kNumber, ""};
  }
  return {Hint::kValue, ""};
}

// A command as the fuzzer knows it: the words that name it and what its syntax expects.
struct FuzzCommand {
  std::vector<std::string> name;  // {"client", "list"} for a subcommand
  int min_args;                   // after the name words
  bool fixed;                     // exact arity
  std::vector<Slot> slots;
  std::vector<std::string> options;
};

std::vector<FuzzCommand> BuildCommands() {
  std::vector<FuzzCommand> out;
  for (const CommandSpec* spec : internal::AllCommands()) {
    FuzzCommand c;
    std::string_view name = spec->name;
    const size_t bar = name.find('|');
    if (bar == std::string_view::npos) {
      c.name.emplace_back(name);
    } else {
      c.name.emplace_back(name.substr(0, bar));
      c.name.emplace_back(name.substr(bar + 1));
    }
    const int arity = spec->arity < 0 ? -spec->arity : spec->arity;
    c.min_args = std::max(0, arity - static_cast<int>(c.name.size()));
    c.fixed = spec->arity > 0;
    std::string token;
    auto flush = [&] {
      if (!token.empty() && token != "...") {
        Slot s = SlotFor(token);
        if (s.hint == Hint::kOption) c.options.push_back(s.word);
        c.slots.push_back(std::move(s));
      }
      token.clear();
    };
    for (char ch : spec->syntax) {
      if (ch == ' ' || ch == '[' || ch == ']' || ch == '|') {
        flush();
      } else {
        token += ch;
      }
    }
    flush();
    out.push_back(std::move(c));
  }
  return out;
}

const std::vector<FuzzCommand>& Commands() {
  static const std::vector<FuzzCommand> commands = BuildCommands();
  return commands;
}

std::string OddCase(std::string s, uint8_t mode) {
  for (size_t i = 0; i < s.size(); i++) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (mode % 3 == 1) s[i] = static_cast<char>(std::tolower(c));
    if (mode % 3 == 2 && i % 2 == 1) s[i] = static_cast<char>(std::tolower(c));
  }
  return s;
}

template <typename T>
const T& Pick(FuzzedDataProvider& in, const std::vector<T>& v) {
  return v[in.ConsumeIntegralInRange<size_t>(0, v.size() - 1)];
}

// COMMAND_FUZZ_SKIP=SETRANGE,RENAME leaves those commands out, for a local run that must go on
// past a known bug while its fix is pending. CI sets nothing: every command is fuzzed.
bool Skipped(std::string_view command) {
  static const std::vector<std::string> skip = [] {
    std::vector<std::string> v;
    const char* env = std::getenv("COMMAND_FUZZ_SKIP");
    std::string_view list = env != nullptr ? env : "";
    while (!list.empty()) {
      const size_t comma = list.find(',');
      v.push_back(internal::ToLower(list.substr(0, comma)));
      list = comma == std::string_view::npos ? "" : list.substr(comma + 1);
    }
    return v;
  }();
  for (const std::string& s : skip) {
    if (EqualsIgnoreCase(s, command)) return true;
  }
  return false;
}

// COMMAND_FUZZ_TRACE=1 prints every command sent (to turn a crashing input into a sequence).
bool Trace() {
  static const bool trace = std::getenv("COMMAND_FUZZ_TRACE") != nullptr;
  return trace;
}

[[noreturn]] void Fail(const std::vector<std::string>& args, std::string_view reply,
                       const char* what) {
  std::fprintf(stderr, "command_fuzz: %s\n  command:", what);
  for (const std::string& a : args) {
    std::fprintf(stderr, " '%.*s'%s", static_cast<int>(std::min<size_t>(a.size(), 64)), a.data(),
                 a.size() > 64 ? "..." : "");
  }
  std::fprintf(stderr, "\n  reply (%zu bytes): %.*s\n", reply.size(),
               static_cast<int>(std::min<size_t>(reply.size(), 512)), reply.data());
  std::abort();
}

// True if the reply at s[*pos] uses only RESP2 types. REQUIRES: s is well formed.
bool OnlyResp2(std::string_view s, size_t* pos) {
  const size_t eol = s.find("\r\n", *pos);
  if (eol == std::string_view::npos) return false;
  const char type = s[*pos];
  const std::string_view line = s.substr(*pos + 1, eol - *pos - 1);
  *pos = eol + 2;
  int64_t n = 0;
  switch (type) {
    case '+':
    case '-':
    case ':':
      return true;
    case '$':
      if (!internal::ParseInt64(line, &n)) return false;
      if (n >= 0) *pos += static_cast<size_t>(n) + 2;
      return true;
    case '*':
      if (!internal::ParseInt64(line, &n)) return false;
      for (int64_t i = 0; i < n; i++) {
        if (!OnlyResp2(s, pos)) return false;
      }
      return true;
    default:
      return false;
  }
}

// The harness's own directory, import-dir of every engine: FRAME.IMPORT reads the frame CSV
// from it, and FRAME.EXPORT (whatever path the input spells) can write only into it. Made once
// per process; what the inputs wrote is removed after each (ClearSandbox), the directory at exit.
class Sandbox {
 public:
  static const Sandbox& Get() {
    static const Sandbox sandbox;
    return sandbox;
  }
  const std::string& dir() const { return dir_; }
  const std::string& frame_csv() const { return frame_csv_; }
  // Removes every file but the frame CSV (what exports left), so that files do not pile up.
  void Clear() const {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
      if (e.path() != frame_csv_) std::filesystem::remove_all(e.path(), ec);
    }
  }
  ~Sandbox() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

 private:
  Sandbox() {
    char name[] = "/tmp/floe_command_fuzz_XXXXXX";
    if (mkdtemp(name) == nullptr) return;
    dir_ = name;
    frame_csv_ = dir_ + "/frame.csv";
    std::string text = "i,r,c,s,t\n";
    for (int row = 0; row < 300; row++) {
      text += row % 7 == 0 ? "" : std::to_string(row * 13 - 1000);
      text += "," + (row % 5 == 0 ? std::string("NA") : std::to_string(row * 0.25 - 3));
      text += std::string(",") + "xyz"[row % 3] + ",s" + std::to_string(row * 7919 % 1000);
      text += ",2024-01-" + std::to_string(10 + row % 20) + "\n";
    }
    FILE* f = std::fopen(frame_csv_.c_str(), "wb");
    if (f == nullptr) return;
    (void)!std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  std::string dir_, frame_csv_;
};

Config HarnessConfig() {
  Config c;
  c.maxmemory = kMaxMemory;
  c.proto_max_bulk_len = kMaxBulk;
  c.import_dir = Sandbox::Get().dir().empty() ? "." : Sandbox::Get().dir();
  c.export_dir = Sandbox::Get().dir();  // empty (no sandbox): exports are off
  return c;
}

class Harness {
 public:
  Harness() : engine_(HarnessConfig(), 1) {
    for (int i = 0; i < kSessions; i++) sessions_.push_back(NewSession());
  }

  void Run(FuzzedDataProvider& in) {
    for (int step = 0; step < kMaxSteps && in.remaining_bytes() > 0; step++) {
      switch (in.ConsumeIntegralInRange<int>(0, 15)) {
        case 0:
          current_ = in.ConsumeIntegralInRange<int>(0, kSessions - 1);
          break;
        case 1:
          Send(current_, {in.ConsumeBool() ? "HELLO" : "hello", in.ConsumeBool() ? "3" : "2"});
          break;
        case 2:
          MakeTypedKey(in);
          break;
        case 3:
          Transaction(in);
          break;
        case 4:
          RawCommand(in);
          break;
        case 5:
          if (in.ConsumeBool()) {
            hello_queued_.erase(sessions_[static_cast<size_t>(current_)].get());
            sessions_[static_cast<size_t>(current_)] = NewSession();
          } else {
            // Frees every retired value now, so a later use of one is a use-after-free that
            // ASan reports (rather than a read of memory still awaiting reclamation).
            engine_.ActiveExpireCycle(0, 1000);
            store::internal::EpochDomain::Global().Barrier();
          }
          break;
        case 6:
          // Keys moving between values of every type, to a key over the limit too: a failed
          // move must leave both keys usable.
          Send(current_,
               {in.ConsumeBool() ? "RENAME" : "RENAMENX", Pick(in, Keys()), Pick(in, Keys())});
          break;
        case 7:
          UpdateInPlace(in);
          break;
        default:
          Send(current_, TableCommand(in));
          break;
      }
    }
    CheckNoInternalErrors();
  }

 private:
  std::unique_ptr<Session> NewSession() {
    return std::make_unique<Session>(&engine_, 0, "127.0.0.1:" + std::to_string(next_port_++));
  }

  std::vector<std::string> TableCommand(FuzzedDataProvider& in) {
    const FuzzCommand& c = Pick(in, Commands());
    const uint8_t name_case = in.ConsumeIntegral<uint8_t>();
    std::vector<std::string> args;
    for (const std::string& w : c.name) {
      std::string upper = w;
      for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      args.push_back(OddCase(upper, name_case));
    }
    const uint8_t shape = in.ConsumeIntegral<uint8_t>();
    int n = c.min_args;
    if (!c.fixed || shape % 4 == 0) n += (shape / 4) % 9 - 1;
    n = std::clamp(n, 0, kMaxArgs);
    for (int i = 0; i < n; i++) {
      const Slot* slot =
          static_cast<size_t>(i) < c.slots.size() ? &c.slots[static_cast<size_t>(i)] : nullptr;
      args.push_back(Argument(in, c, slot));
    }
    return args;
  }

  std::string Argument(FuzzedDataProvider& in, const FuzzCommand& c, const Slot* slot) {
    switch (in.ConsumeIntegralInRange<int>(0, 9)) {
      case 0:
      case 1:
      case 2:
        if (slot != nullptr) {
          switch (slot->hint) {
            case Hint::kKey:
              return Pick(in, Keys());
            case Hint::kNumber:
              switch (in.ConsumeIntegralInRange<int>(0, 2)) {
                case 0:
                  return Pick(in, Extreme());
                case 1:
                  return Pick(in, Hostile());
                default:
                  return Number(in);
              }
            case Hint::kOption:
              return OddCase(slot->word, in.ConsumeIntegral<uint8_t>());
            case Hint::kValue:
              return in.ConsumeBool() ? Pick(in, Elements()) : Pick(in, Hostile());
          }
        }
        return Pick(in, Elements());
      case 3:
        return Pick(in, Keys());
      case 4: {
        const bool own = in.ConsumeBool() && !c.options.empty();
        return OddCase(own ? Pick(in, c.options) : Pick(in, AnyOption()),
                       in.ConsumeIntegral<uint8_t>());
      }
      case 5:
        return Pick(in, Hostile());
      case 6:
        return Number(in);
      case 7:
        return in.ConsumeRandomLengthString(64);
      case 8:
        return Pick(in, Elements());
      default:
        return in.ConsumeIntegralInRange<int>(0, 15) == 0 ? OneMegabyte() : Pick(in, Elements());
    }
  }

  static std::string Number(FuzzedDataProvider& in) {
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
      case 0:
        return std::to_string(in.ConsumeIntegral<int64_t>());
      case 1:
        return std::to_string(in.ConsumeIntegralInRange<int64_t>(-2, 300));
      case 2:
        return std::to_string(in.ConsumeIntegral<uint64_t>());
      default: {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%.17g", in.ConsumeFloatingPoint<double>());
        return buf;
      }
    }
  }

  void MakeTypedKey(FuzzedDataProvider& in) {
    const std::string key = Pick(in, Keys());
    switch (in.ConsumeIntegralInRange<int>(0, 13)) {
      case 12:
        return MakeFrame(in, key);
      case 0:
        return Send(current_, {"SET", key, "v"});
      case 1:
        return Send(current_, {"PFADD", key, "a", "b", "c"});
      case 2:
        return Send(current_, {"HLL.CREATE", key, "LOG2M", "10", "REGWIDTH", "5"});
      case 3:
        return Send(current_, {"CMS.INITBYDIM", key, "16", "4"});
      case 4:
        return Send(current_, {"CMS.INITRANGE", key, "16", "4", "8"});
      case 5:
        return Send(current_, {"BF.RESERVE", key, "0.01", "100"});
      case 6:
        return Send(current_, {"SET", key, "12", "PX", in.ConsumeBool() ? "1" : "100000"});
      case 7:
        return Send(current_, {"APPEND", key, OneMegabyte()});
      case 8:
        return Send(current_, {"BF.ADD", key, "a"});
      // Sketches of hostile dimensions: each must be refused or fit in the memory cap.
      case 9:
        return Send(current_, {"CMS.INITBYDIM", key, Dimension(in), Dimension(in)});
      case 10:
        return Send(current_, {"CMS.INITRANGE", key, Dimension(in), Dimension(in), Dimension(in)});
      case 11:
        return Send(current_, {"BF.RESERVE", key, in.ConsumeBool() ? "0.01" : Pick(in, Hostile()),
                               Dimension(in), "EXPANSION", Dimension(in)});
      default:
        Send(current_, {"HLL.CREATE", key, "LOG2M", Dimension(in), "REGWIDTH",
                        std::to_string(in.ConsumeIntegralInRange<int>(0, 9)), "EXPTHRESH",
                        in.ConsumeBool() ? "0" : (in.ConsumeBool() ? "-1" : Dimension(in)),
                        "SPARSEON", in.ConsumeBool() ? "0" : "1"});
        return Send(current_, {"HLL.ADD", key, "a", "b", "c"});
    }
  }

  // A frame at `key` (integer, real, categorical, string and time columns, NAs), or a group-by
  // of one: an import is a job, so this waits (a bounded while) until it has finished.
  void MakeFrame(FuzzedDataProvider& in, const std::string& key) {
    Send(current_, {"FRAME.IMPORT", key, FrameCsv(), "REPLACE"});
    Session probe(&engine_, 0);
    for (int i = 0; i < 2000; i++) {
      const std::string status = probe.Run({"JOB.LIST"});
      if (status.find("running") == std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    switch (in.ConsumeIntegralInRange<int>(0, 4)) {
      case 0:
        Send(current_, {"FRAME.GROUPBY", key, Pick(in, Keys()), "KEYS", "c", "AGG", "count", "i",
                        "sum", "r", "sd", "i", "min", "t", "REPLACE"});
        break;
      case 1:
        Send(current_, {"FRAME.SELECT", key, Pick(in, Keys()), "COLS", "s", "0", "t", "REPLACE"});
        break;
      case 2:
        Send(current_, {"FRAME.FILTER", key, Pick(in, Keys()), "WHERE", "c", "!=", "x", "AND", "r",
                        in.ConsumeBool() ? ">=" : "<", Number(in), "AND", "t", "NOTNA", "REPLACE"});
        break;
      case 3:
        Send(current_, {"FRAME.EXPORT", key, "out.csv", "REPLACE"});
        break;
      default:
        break;
    }
  }
  static const std::string& FrameCsv() { return Sandbox::Get().frame_csv(); }

  // The commands that change a sketch value where it is (its cell), on any key.
  void UpdateInPlace(FuzzedDataProvider& in) {
    const std::string key = Pick(in, Keys());
    switch (in.ConsumeIntegralInRange<int>(0, 4)) {
      case 0:
        return Send(current_, {"PFADD", key, Pick(in, Elements()), Pick(in, Hostile())});
      case 1:
        return Send(current_, {"HLL.ADD", key, Pick(in, Elements())});
      case 2:
        return Send(current_, {"BF.ADD", key, Pick(in, Elements())});
      case 3:
        return Send(current_, {"CMS.INCRBY", key, Pick(in, Elements()), Pick(in, Extreme())});
      default:
        return Send(current_, {"PFMERGE", key, Pick(in, Keys())});
    }
  }

  // A size: one of the size-breaking integers, or a small one (an HLL's log2m, a depth).
  static std::string Dimension(FuzzedDataProvider& in) {
    return in.ConsumeBool() ? Pick(in, Extreme())
                            : std::to_string(in.ConsumeIntegralInRange<int>(0, 40));
  }

  // WATCH from this client, maybe a change from another, MULTI, a few commands, EXEC or DISCARD.
  void Transaction(FuzzedDataProvider& in) {
    const int me = current_;
    if (in.ConsumeBool()) Send(me, {"WATCH", Pick(in, Keys())});
    if (in.ConsumeBool()) Send((me + 1) % kSessions, TableCommand(in));
    Send(me, {"MULTI"});
    const int n = in.ConsumeIntegralInRange<int>(0, 5);
    for (int i = 0; i < n && in.remaining_bytes() > 0; i++) Send(me, TableCommand(in));
    Send(me, {in.ConsumeIntegralInRange<int>(0, 3) == 0 ? "DISCARD" : "EXEC"});
  }

  void RawCommand(FuzzedDataProvider& in) {
    std::vector<std::string> args;
    const int n = in.ConsumeIntegralInRange<int>(1, 6);
    for (int i = 0; i < n; i++) args.push_back(in.ConsumeRandomLengthString(40));
    Send(current_, args);
  }

  // CONFIG SET may lower the memory cap, never raise or lift it.
  static void KeepMemoryCap(std::vector<std::string>* args) {
    if (args->size() < 4 || !EqualsIgnoreCase((*args)[0], "config") ||
        !EqualsIgnoreCase((*args)[1], "set")) {
      return;
    }
    for (size_t i = 2; i + 1 < args->size(); i += 2) {
      int64_t cap = 0;
      if (EqualsIgnoreCase((*args)[i], "maxmemory")) cap = kMaxMemory;
      if (EqualsIgnoreCase((*args)[i], "proto-max-bulk-len")) cap = kMaxBulk;
      if (cap == 0) continue;
      Result<int64_t> v = ParseMemory((*args)[i + 1]);
      if (v.ok() && (*v == 0 || *v > cap)) (*args)[i + 1] = std::to_string(cap);
    }
  }

  void Send(int s, std::vector<std::string> args) {
    KeepMemoryCap(&args);
    if (Skipped(args[0])) return;
    if (Trace()) {
      std::fprintf(stderr, "[%d]", s);
      for (const std::string& a : args) {
        std::fprintf(stderr, " '%.*s'%s", static_cast<int>(std::min<size_t>(a.size(), 40)),
                     a.data(), a.size() > 40 ? "..." : "");
      }
      std::fprintf(stderr, "\n");
    }
    Session& session = *sessions_[static_cast<size_t>(s)];
    const int protocol_before = session.protocol();
    // A HELLO queued in MULTI switches the protocol in the middle of EXEC's reply, as in Redis:
    // the replies after it use the new one even if a later HELLO switches back.
    const bool exec = EqualsIgnoreCase(args[0], "exec");
    const bool mixed_exec = exec && hello_queued_.count(&session) != 0;
    const std::vector<std::string_view> views(args.begin(), args.end());
    std::string out;
    session.Execute(views, &out);
    if (EqualsIgnoreCase(args[0], "hello") && out == "+QUEUED\r\n") hello_queued_.insert(&session);
    if (exec || EqualsIgnoreCase(args[0], "discard") || EqualsIgnoreCase(args[0], "reset")) {
      hello_queued_.erase(&session);
    }
    size_t consumed = 0;
    const Result<resp::Reply> reply = resp::ParseReply(out, &consumed);
    if (!reply.ok() || consumed != out.size()) Fail(args, out, "not exactly one valid reply");
    if (protocol_before == 2 && session.protocol() == 2 && !mixed_exec) {
      size_t pos = 0;
      if (!OnlyResp2(out, &pos) || pos != out.size()) Fail(args, out, "RESP3 type to RESP2");
    }
    // QUIT, RESET, CLIENT KILL (of any client here): the connection would close; a new one
    // takes its place.
    for (auto& other : sessions_) {
      if (other->close_requested()) {
        hello_queued_.erase(other.get());
        other = NewSession();
      }
    }
  }

  void CheckNoInternalErrors() {
    std::string failed;
    (void)engine_.SetConfig({{"requirepass", ""}}, &failed);
    Session probe(&engine_, 0);
    const std::string info = probe.Run({"INFO", "everything"});
    const size_t at = info.find("errors_internal:");
    if (at == std::string::npos) return;  // a server without the safety net
    int64_t n = 0;
    const size_t end = info.find("\r\n", at);
    const std::string_view value =
        std::string_view(info).substr(at + 16, end == std::string::npos ? end : end - at - 16);
    if (!internal::ParseInt64(value, &n) || n != 0) {
      Fail({"INFO", "everything"}, value, "an exception escaped a handler (errors_internal)");
    }
  }

  Engine engine_;
  std::vector<std::unique_ptr<Session>> sessions_;
  std::set<const Session*> hello_queued_;  // sessions with a HELLO queued in their MULTI
  int current_ = 0;
  int next_port_ = 1000;
};

}  // namespace
}  // namespace floe::server

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  {
    floe::server::Harness harness;
    harness.Run(in);
  }
  // Everything the input allocated is freed before the next one: libFuzzer then sees as many
  // frees as mallocs and skips its per-input leak scan, and a real leak still shows.
  floe::store::internal::EpochDomain::Global().Barrier();
  floe::server::Sandbox::Get().Clear();  // the engine's jobs were joined with it
  return 0;
}
