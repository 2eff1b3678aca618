// dkv_peer: one DKV node in its own process, for the multi-process test (dkv_proc_test.cc). It
// serves its slots of the cluster's map and runs a client workload of its own: `--threads`
// clients issuing random linearizable operations on `--keys` from `--start-at-unix-ms` for
// `--duration-ms`, each recorded in `--history`. Then it keeps serving (others may still need
// its keys) for `--linger-ms` or until SIGTERM, and exits 0.
//
//   dkv_peer --members H:P,H:P,... --listen H:P --keys K,K,... --history PATH
//            --start-at-unix-ms MS [--duration-ms 1000] [--threads 2] [--linger-ms 5000]
//            [--faults DROP,DUP,MAX_DELAY_US] [--seed N] [--timeout-ms 2000]
//            [--lease-ms 500] [--down-after-ms 1000]
//
// History file: one line per event, appended with one write() each as it happens, so that a
// process killed with SIGKILL leaves every event up to its death (the kernel holds the bytes).
//   call CLIENT SEQ KIND KEY CALL_US VALUE EXPECTED DELTA   before the operation is issued
//   ret CLIENT SEQ RET_US RESULT OUTPUT                     when its answer arrives
//   done OPS                                                after every client has finished
// KIND: get put cas remove incr. VALUE, EXPECTED and a get's OUTPUT: "-" (absent) or "=" and
// the bytes in hex. RESULT: ok, unknown:CODE (Unavailable, Timeout, Cancelled: a write may or
// may not have happened) or failed:CODE (no effect). OUTPUT: get: a value; cas, remove: 0 or 1;
// incr: the counter; put: "-". Times are WallMicros (CLOCK_REALTIME, common to the processes).

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/base.h"
#include "cluster/cluster.h"
#include "dkv/dkv.h"
#include "net/net.h"
#include "rpc/rpc.h"

namespace {

using floe::Result;
using floe::Status;
using floe::StatusCode;

std::atomic<bool> g_terminate{false};
static_assert(std::atomic<bool>::is_always_lock_free, "used from a signal handler");
void OnTerminate(int) { g_terminate.store(true, std::memory_order_relaxed); }

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "dkv_peer: %s\nusage: dkv_peer --members H:P,H:P,... --listen H:P --keys K,K,... "
               "--history PATH --start-at-unix-ms MS [--duration-ms 1000] [--threads 2] "
               "[--linger-ms 5000] [--faults DROP,DUP,MAX_DELAY_US] [--seed N] "
               "[--timeout-ms 2000] [--lease-ms 500] [--down-after-ms 1000]\n",
               why.c_str());
  std::exit(2);
}

uint64_t ParseUint(const std::string& flag, const std::string& s, uint64_t min, uint64_t max) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || s[0] == '-' || *end != '\0' || errno == ERANGE || v < min || v > max) {
    Usage(flag + ": '" + s + "' is not an integer in [" + std::to_string(min) + ", " +
          std::to_string(max) + "]");
  }
  return v;
}

double ParseProbability(const std::string& flag, const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !(v >= 0 && v < 1)) {
    Usage(flag + ": '" + s + "' is not a probability in [0, 1)");
  }
  return v;
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t from = 0;
  while (true) {
    const size_t at = s.find(sep, from);
    out.push_back(s.substr(from, at - from));
    if (at == std::string::npos) return out;
    from = at + 1;
  }
}

// "-" for absent, "=" + hex otherwise.
std::string EncodeValue(const std::optional<std::string>& v) {
  if (!v) return "-";
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out = "=";
  for (unsigned char c : *v) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// Appends whole lines to the history, one write() each (O_APPEND), from any thread.
class HistoryFile {
 public:
  explicit HistoryFile(const std::string& path)
      : fd_(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644)) {}
  ~HistoryFile() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0 && !failed_.load(); }
  void Append(std::string line) {
    line.push_back('\n');
    if (write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) failed_ = true;
  }

 private:
  const int fd_;
  std::atomic<bool> failed_{false};
};

struct Flags {
  std::vector<floe::cluster::Member> members;
  floe::cluster::Member listen;
  std::vector<std::string> keys;
  std::string history;
  uint64_t start_at_ms = 0, duration_ms = 1000, threads = 2, linger_ms = 5000, seed = 1;
  uint64_t timeout_ms = 2000, lease_ms = 500, down_after_ms = 1000;
  floe::net::Faults faults;
};

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  std::string members, listen;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage(flag + " needs a value");
    const std::string value = argv[i + 1];
    constexpr uint64_t kDay = 86'400'000;
    if (flag == "--members") {
      members = value;
    } else if (flag == "--listen") {
      listen = value;
    } else if (flag == "--keys") {
      f.keys = Split(value, ',');
      for (const std::string& k : f.keys) {
        if (k.empty() || k.find_first_of(" \t\n") != std::string::npos) {
          Usage("--keys: keys must be non-empty, without spaces");
        }
      }
    } else if (flag == "--history") {
      f.history = value;
    } else if (flag == "--start-at-unix-ms") {
      f.start_at_ms = ParseUint(flag, value, 1, uint64_t{1} << 50);
    } else if (flag == "--duration-ms") {
      f.duration_ms = ParseUint(flag, value, 1, kDay);
    } else if (flag == "--threads") {
      f.threads = ParseUint(flag, value, 1, 64);
    } else if (flag == "--linger-ms") {
      f.linger_ms = ParseUint(flag, value, 0, kDay);
    } else if (flag == "--seed") {
      f.seed = ParseUint(flag, value, 0, UINT64_MAX);
    } else if (flag == "--timeout-ms") {
      f.timeout_ms = ParseUint(flag, value, 1, kDay);
    } else if (flag == "--lease-ms") {
      f.lease_ms = ParseUint(flag, value, 1, kDay);
    } else if (flag == "--down-after-ms") {
      f.down_after_ms = ParseUint(flag, value, 1, kDay);
    } else if (flag == "--faults") {
      const std::vector<std::string> parts = Split(value, ',');
      if (parts.size() != 3) Usage("--faults wants DROP,DUP,MAX_DELAY_US");
      f.faults.drop = ParseProbability("--faults drop", parts[0]);
      f.faults.duplicate = ParseProbability("--faults dup", parts[1]);
      f.faults.max_delay_us = ParseUint("--faults max delay", parts[2], 0, 10'000'000);
    } else {
      Usage("unknown flag " + flag);
    }
  }
  if (members.empty() || listen.empty() || f.keys.empty() || f.history.empty() ||
      f.start_at_ms == 0) {
    Usage("--members, --listen, --keys, --history and --start-at-unix-ms are required");
  }
  Result<std::vector<floe::cluster::Member>> m = floe::cluster::ParseMembers(members);
  if (!m.ok()) Usage("--members: " + m.status().ToString());
  f.members = std::move(m).value();
  Result<floe::cluster::Member> l = floe::cluster::ParseMember(listen);
  if (!l.ok()) Usage("--listen: " + l.status().ToString());
  Result<floe::net::NodeId> self = floe::cluster::FindSelf(f.members, l->host, l->port);
  if (!self.ok()) Usage("--listen: " + self.status().ToString());
  f.listen = *l;
  f.listen.id = *self;
  return f;
}

bool UnknownOutcome(const Status& s) {
  return s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kTimeout ||
         s.code() == StatusCode::kCancelled;
}

std::string ResultWord(const Status& s) {
  if (s.ok()) return "ok";
  const std::string code(floe::StatusCodeName(s.code()));
  return (UnknownOutcome(s) ? "unknown:" : "failed:") + code;
}

// One client thread: random operations until `until_us` (wall clock), each recorded.
void RunClient(floe::dkv::Dkv& dkv, const Flags& f, int client, uint64_t until_us,
               HistoryFile& history, std::atomic<uint64_t>& ops) {
  std::mt19937_64 rng(f.seed * 1'000'003 + static_cast<uint64_t>(client));
  std::map<std::string, std::optional<std::string>> last;  // the last value read, per key
  for (uint64_t seq = 1; floe::WallMicros() < until_us; seq++) {
    const std::string& key = f.keys[rng() % f.keys.size()];
    const int dice = static_cast<int>(rng() % 100);
    // Unique per client and operation, spaced so that increments rarely reach another's value.
    const std::string mine =
        std::to_string(static_cast<uint64_t>(client) * 1'000'000'000 + seq * 1000);
    const floe::dkv::Entry entry{.type = 0, .expire_at_ms = 0, .payload = mine};
    const std::string id = std::to_string(client) + " " + std::to_string(seq);
    auto call = [&](const char* kind, const std::optional<std::string>& value,
                    const std::optional<std::string>& expected, int delta) {
      history.Append("call " + id + " " + kind + " " + key + " " +
                     std::to_string(floe::WallMicros()) + " " + EncodeValue(value) + " " +
                     EncodeValue(expected) + " " + std::to_string(delta));
    };
    auto ret = [&](const Status& s, const std::string& output) {
      history.Append("ret " + id + " " + std::to_string(floe::WallMicros()) + " " + ResultWord(s) +
                     " " + output);
      ops.fetch_add(1, std::memory_order_relaxed);
    };
    if (dice < 50) {
      call("get", std::nullopt, std::nullopt, 0);
      Result<floe::store::ValuePtr> v = Status::Internal("unset");
      if (dice % 2 == 0) {
        v = dkv.GetBlocking(key);
      } else {
        std::promise<Result<floe::store::ValuePtr>> p;
        dkv.Get(key, [&p](Result<floe::store::ValuePtr> r) { p.set_value(std::move(r)); });
        v = p.get_future().get();
      }
      std::optional<std::string> read;
      if (v.ok() && *v) read = std::string((*v)->payload());
      ret(v.status(), v.ok() ? EncodeValue(read) : "-");
      if (v.ok()) last[key] = read;
      continue;
    }
    std::promise<Result<std::string>> p;
    auto done = [&p](Result<std::string> r) { p.set_value(std::move(r)); };
    const char* kind;
    if (dice < 70) {
      kind = "put";
      call(kind, mine, std::nullopt, 0);
      dkv.PutVolatile(key, entry, done);
    } else if (dice < 80) {
      kind = "cas";
      const std::optional<std::string> expected = last[key];
      call(kind, mine, expected, 0);
      std::optional<floe::dkv::Entry> want;
      if (expected) want = floe::dkv::Entry{.type = 0, .expire_at_ms = 0, .payload = *expected};
      dkv.CompareAndPut(key, want, entry, done);
    } else if (dice < 85) {
      kind = "remove";
      call(kind, std::nullopt, std::nullopt, 0);
      dkv.Remove(key, done);
    } else {
      kind = "incr";
      call(kind, std::nullopt, std::nullopt, 1);
      dkv.Atomic(key, floe::dkv::kOpIncrement, "1", done);
    }
    Result<std::string> w = p.get_future().get();
    ret(w.status(), !w.ok() || std::strcmp(kind, "put") == 0 ? "-" : *w);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Flags f = ParseFlags(argc, argv);
  std::signal(SIGTERM, OnTerminate);
  std::signal(SIGPIPE, SIG_IGN);
  const floe::net::NodeId self = f.listen.id;
  const floe::cluster::SlotMap map = floe::cluster::SlotMap::Balanced(f.members);

  floe::net::AsioLoop loop;
  floe::net::TransportOptions t;
  t.self = self;
  t.bind_host = f.listen.host;
  t.port = f.listen.port;
  t.peers = floe::cluster::PeerAddresses(f.members, self);
  t.faults = f.faults;
  t.seed = f.seed;
  auto transport = floe::net::UdpTcpTransport::Start(loop, t);
  if (!transport.ok()) {
    std::fprintf(stderr, "dkv_peer %u: %s\n", self, transport.status().ToString().c_str());
    return 1;
  }
  floe::dkv::Dkv::Slot slot = floe::dkv::Dkv::MakeSlot();
  floe::rpc::Options o;
  o.peers = floe::cluster::PeerIds(f.members, self);
  o.lease_us = f.lease_ms * 1000;
  o.heartbeat_interval_us = std::min<uint64_t>(50'000, o.lease_us / 4);
  o.down_after_us = f.down_after_ms * 1000;
  o.on_lease_lapse = floe::dkv::Dkv::MakeLeaseHook(slot);
  o.seed = f.seed;
  floe::rpc::Endpoint endpoint(**transport, o);

  floe::dkv::Options d;
  d.self = self;
  d.home = [&map](std::string_view key) { return map.Home(floe::cluster::KeySlot(key)); };
  d.map_version = map.version();
  d.timeout_us = f.timeout_ms * 1000;
  d.lease_us = o.lease_us;
  d.invalidate_patience_us = std::min<uint64_t>(100'000, o.lease_us / 4);
  d.start_grace_us = o.lease_us + 100'000;
  auto dkv = std::make_unique<floe::dkv::Dkv>(endpoint, d);
  slot->store(dkv.get());
  endpoint.Start();

  HistoryFile history(f.history);
  if (!history.ok()) {
    std::fprintf(stderr, "dkv_peer %u: cannot write %s: %s\n", self, f.history.c_str(),
                 std::strerror(errno));
    return 1;
  }
  const uint64_t start_us = f.start_at_ms * 1000, until_us = start_us + f.duration_ms * 1000;
  while (floe::WallMicros() < start_us && !g_terminate.load()) {
    std::this_thread::sleep_for(std::chrono::microseconds(
        std::min<uint64_t>(10'000, start_us - std::min(start_us, floe::WallMicros()))));
  }
  std::atomic<uint64_t> ops{0};
  std::vector<std::thread> clients;
  for (uint64_t i = 0; i < f.threads; i++) {
    // Client ids are unique across the cluster: node * 100 + thread.
    const int client = static_cast<int>(self) * 100 + static_cast<int>(i) + 1;
    clients.emplace_back([&, client] { RunClient(*dkv, f, client, until_us, history, ops); });
  }
  for (std::thread& th : clients) th.join();
  history.Append("done " + std::to_string(ops.load()));
  if (!history.ok()) {
    std::fprintf(stderr, "dkv_peer %u: writing %s failed\n", self, f.history.c_str());
    return 1;
  }
  const uint64_t linger_until = floe::NowMicros() + f.linger_ms * 1000;
  while (floe::NowMicros() < linger_until && !g_terminate.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const floe::dkv::Stats& s = dkv->stats();
  std::printf("dkv_peer %u: %llu ops, %llu cache hits, %llu misses, %llu lease waits\n", self,
              static_cast<unsigned long long>(ops.load()),
              static_cast<unsigned long long>(s.cache_hits.load()),
              static_cast<unsigned long long>(s.misses.load()),
              static_cast<unsigned long long>(s.lease_waits.load()));
  endpoint.Stop();
  slot->store(nullptr);
  dkv.reset();
  return 0;
}
