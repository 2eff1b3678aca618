// The DKV across real OS processes: 3-5 dkv_peer processes (dkv_peer.cc), one node each, on
// 127.0.0.1..127.0.0.5 (or 127.0.0.1 alone where other loopback addresses do not bind), with
// the transport's fault injector dropping, duplicating and delaying datagrams. Every process
// runs clients of its own and records their operations with wall-clock times (common to the
// processes of one host); the test merges the histories and checks them for linearizability.
//
// FLOE_DKV_PROC_HISTORIES sets how many histories the first test runs (default 3; CI runs 20).
// FLOE_TEST_SEED replays a run's seeds (the interleaving of real processes does not replay).

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/base.h"
#include "cluster/cluster.h"
#include "testing/linearizability.h"
#include "testing/process.h"
#include "testing/testing.h"

namespace floe::dkv {
namespace {

namespace lin = floe::testing::lin;
using net::NodeId;

// One operation as a process recorded it (dkv_peer.cc documents the file).
struct Record {
  NodeId node = 0;
  lin::Operation op;   // inputs, times and (when result is "ok") outputs
  std::string result;  // "ok", "unknown:CODE", "failed:CODE"; empty: no answer before death
  bool answered() const { return !result.empty(); }
};

lin::Value DecodeValue(const std::string& s) {
  if (s == "-") return std::nullopt;
  std::string out;
  for (size_t i = 1; i + 1 < s.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(s.substr(i, 2), nullptr, 16)));
  }
  return out;
}

struct ProcHistory {
  std::vector<Record> records;
  bool done = false;  // its "done" line: every client finished
};

// Parses one history file; a malformed line fails the test. A process killed mid-write may
// leave a last line without its newline: it is ignored.
ProcHistory ParseHistory(const std::string& path, NodeId node) {
  ProcHistory h;
  std::ifstream in(path);
  std::stringstream all;
  all << in.rdbuf();
  std::string text = all.str();
  if (!text.empty() && text.back() != '\n') text.erase(text.rfind('\n') + 1);
  std::map<std::pair<int, uint64_t>, size_t> index;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    std::string word, kind, value, expected, output;
    f >> word;
    if (word == "done") {
      h.done = true;
      continue;
    }
    int client = 0;
    uint64_t seq = 0;
    f >> client >> seq;
    if (word == "call") {
      Record r{.node = node};
      f >> kind >> r.op.key >> r.op.call >> value >> expected >> r.op.delta;
      r.op.client = client;
      static const std::map<std::string, lin::OpKind> kKinds = {
          {"get", lin::OpKind::kGet},
          {"put", lin::OpKind::kPut},
          {"cas", lin::OpKind::kCompareAndPut},
          {"remove", lin::OpKind::kRemove},
          {"incr", lin::OpKind::kIncrement}};
      if (f.fail() || kKinds.count(kind) == 0) {
        ADD_FAILURE() << path << ": bad line: " << line;
        continue;
      }
      r.op.kind = kKinds.at(kind);
      r.op.value = DecodeValue(value).value_or("");
      r.op.expected = DecodeValue(expected);
      index[{client, seq}] = h.records.size();
      h.records.push_back(std::move(r));
    } else if (word == "ret") {
      auto it = index.find({client, seq});
      lin::Time ret = 0;
      std::string result;
      f >> ret >> result >> output;
      if (f.fail() || it == index.end()) {
        ADD_FAILURE() << path << ": bad line: " << line;
        continue;
      }
      Record& r = h.records[it->second];
      r.op.ret = ret;
      r.result = result;
      if (result != "ok") continue;
      if (r.op.kind == lin::OpKind::kGet) r.op.read = DecodeValue(output);
      if (r.op.kind == lin::OpKind::kCompareAndPut || r.op.kind == lin::OpKind::kRemove) {
        r.op.applied = output == "1";
      }
      if (r.op.kind == lin::OpKind::kIncrement) r.op.counter = std::stoll(output);
    } else {
      ADD_FAILURE() << path << ": bad line: " << line;
    }
  }
  return h;
}

// What goes to the checker: answered operations as they were; a write with an unknown outcome,
// or one its process never saw answered (killed), as kUnknown; reads that failed or were never
// answered, and writes that failed with a typed error, left out (they had no effect).
void AddToHistory(const Record& r, std::vector<lin::Operation>& history) {
  if (r.result.rfind("failed:", 0) == 0) return;
  if (r.result != "ok" && r.op.kind == lin::OpKind::kGet) return;
  lin::Operation op = r.op;
  if (r.result != "ok") op.outcome = lin::Outcome::kUnknown;
  history.push_back(std::move(op));
}

struct RunSpec {
  int nodes = 3;
  std::string faults = "0.1,0.05,2000";  // dkv_peer --faults: drop, duplicate, max delay (us)
  uint64_t seed = 1;
  int threads = 2;
  int keys_per_home = 1;
  uint64_t duration_ms = 1000;
  uint64_t timeout_ms = 2000;
  uint64_t down_after_ms = 1000;
  NodeId kill = 0;             // 0: none; else the node killed with SIGKILL ...
  uint64_t kill_after_ms = 0;  // ... this long after the workload starts
};

struct RunResult {
  cluster::SlotMap map;
  std::map<NodeId, ProcHistory> histories;
  uint64_t killed_at_us = 0;  // wall clock, after waitpid saw the victim dead
};

// Whether the process at `path` has written its "done" line (cheaper than parsing the file).
bool Finished(const std::string& path) {
  std::ifstream in(path);
  std::stringstream all;
  all << in.rdbuf();
  const std::string text = all.str();
  return text.rfind("done ", 0) == 0 || text.find("\ndone ") != std::string::npos;
}

bool LoopbackAliasesBind() {
  static const bool ok =
      floe::testing::FreePort("127.0.0.2") != 0 && floe::testing::FreePort("127.0.0.5") != 0;
  return ok;
}

// Starts the processes, lets them run, stops them (every one bounded in time), parses their
// histories. Fails the test (non-fatally) for a process that exits badly or does not finish.
RunResult RunCluster(const RunSpec& run) {
  RunResult out;
  const std::string dir = ::testing::TempDir() + "dkv_proc_" + std::to_string(getpid()) + "_" +
                          std::to_string(run.seed);
  std::filesystem::create_directories(dir);
  std::string list;
  for (int i = 1; i <= run.nodes; i++) {
    const std::string host = LoopbackAliasesBind() ? "127.0.0." + std::to_string(i) : "127.0.0.1";
    const uint16_t port = floe::testing::FreePort(host);
    EXPECT_NE(port, 0);
    list += (list.empty() ? "" : ",") + host + ":" + std::to_string(port);
  }
  Result<std::vector<cluster::Member>> members = cluster::ParseMembers(list);
  FLOE_CHECK(members.ok());
  out.map = cluster::SlotMap::Balanced(*members);
  // Keys chosen so that every node is home to keys_per_home of them.
  std::map<NodeId, int> per_home;
  std::string keys;
  for (int i = 0; per_home.size() < members->size() || keys.empty(); i++) {
    const std::string key = "k" + std::to_string(i);
    int& n = per_home[out.map.Home(cluster::KeySlot(key))];
    if (n >= run.keys_per_home) continue;
    n++;
    keys += (keys.empty() ? "" : ",") + key;
    if (static_cast<int>(keys.size()) > 1'000'000) break;
  }
  // The workload starts once every process has started and waited out its start grace.
  const uint64_t start_ms = WallMicros() / 1000 + 1100;
  std::map<NodeId, pid_t> pids;
  for (const cluster::Member& m : *members) {
    const std::string path = dir + "/" + std::to_string(m.id);
    pids[m.id] = floe::testing::Spawn({FLOE_DKV_PEER,
                                       "--members",
                                       list,
                                       "--listen",
                                       m.address(),
                                       "--keys",
                                       keys,
                                       "--history",
                                       path,
                                       "--start-at-unix-ms",
                                       std::to_string(start_ms),
                                       "--duration-ms",
                                       std::to_string(run.duration_ms),
                                       "--threads",
                                       std::to_string(run.threads),
                                       "--linger-ms",
                                       "20000",
                                       "--faults",
                                       run.faults,
                                       "--seed",
                                       std::to_string(run.seed * 10 + m.id),
                                       "--timeout-ms",
                                       std::to_string(run.timeout_ms),
                                       "--down-after-ms",
                                       std::to_string(run.down_after_ms)});
    EXPECT_GT(pids[m.id], 0);
  }
  if (run.kill != 0) {
    const uint64_t at_us = (start_ms + run.kill_after_ms) * 1000;
    while (WallMicros() < at_us) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    kill(pids.at(run.kill), SIGKILL);
    waitpid(pids.at(run.kill), nullptr, 0);
    out.killed_at_us = WallMicros();
    pids.erase(run.kill);
  }
  // Wait (bounded) until every live process has written its whole history; then nobody needs
  // anyone's keys any more, and SIGTERM ends their lingering.
  const uint64_t bound_us = (start_ms + run.duration_ms) * 1000 + 30'000'000;
  std::map<pid_t, int> status;
  auto reap = [&] {
    for (auto& [id, pid] : pids) {
      int st = 0;
      if (status.count(pid) == 0 && waitpid(pid, &st, WNOHANG) == pid) status[pid] = st;
    }
  };
  while (WallMicros() < bound_us) {
    reap();
    bool all_done = true;
    for (auto& [id, pid] : pids) {
      all_done = all_done && (status.count(pid) != 0 || Finished(dir + "/" + std::to_string(id)));
    }
    if (all_done) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (auto& [id, pid] : pids) {
    if (status.count(pid) == 0) kill(pid, SIGTERM);
  }
  for (int i = 0; i < 500 && status.size() < pids.size(); i++) {
    reap();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& [id, pid] : pids) {
    if (status.count(pid) == 0) {
      kill(pid, SIGKILL);  // bounded: a hung node fails the test, it does not hang it
      waitpid(pid, nullptr, 0);
      ADD_FAILURE() << "dkv_peer node " << id << " (pid " << pid << ") did not finish";
      continue;
    }
    EXPECT_TRUE(WIFEXITED(status[pid]) && WEXITSTATUS(status[pid]) == 0)
        << "dkv_peer node " << id << ": status " << status[pid];
  }
  for (const cluster::Member& m : *members) {
    out.histories[m.id] = ParseHistory(dir + "/" + std::to_string(m.id), m.id);
    if (m.id != run.kill) {
      EXPECT_TRUE(out.histories[m.id].done) << "node " << m.id;
    }
  }
  std::filesystem::remove_all(dir);
  return out;
}

uint64_t HistoryCount() {
  const char* env = std::getenv("FLOE_DKV_PROC_HISTORIES");
  return env != nullptr && *env != '\0' ? std::strtoull(env, nullptr, 10) : 3;
}

// Each history: 3, 4 or 5 processes, two client threads each, one key homed at every node,
// 10% of datagrams dropped, 5% duplicated, each delayed up to 2 ms, a 2 s deadline per request,
// a 1 s workload; every third history (the 5-process ones) drops 25%, duplicates 10%, delays up
// to 5 ms and gives requests 300 ms, so that some writes end with unknown outcomes. Every
// process must exit 0 having finished its workload, and the merged history must be
// linearizable (kOk: not a violation, and not a search that gave up).
TEST(DkvProcTest, HistoriesOfRealProcessesWithLossAreLinearizable) {
  const uint64_t base = testing::Seed(20261129, true);
  const uint64_t count = HistoryCount();
  uint64_t ops = 0, unknown = 0, dropped = 0;
  const uint64_t began = NowMicros();
  for (uint64_t h = 0; h < count; h++) {
    RunSpec run{.nodes = 3 + static_cast<int>(h % 3), .seed = base + h};
    if (h % 3 == 2) {
      // Heavy loss against a short deadline, so that writes end with unknown outcomes.
      run.faults = "0.25,0.1,5000";
      run.timeout_ms = 300;
    }
    RunResult r = RunCluster(run);
    std::vector<lin::Operation> history;
    for (auto& [id, ph] : r.histories) {
      for (const Record& rec : ph.records) AddToHistory(rec, history);
      dropped += ph.records.size();
    }
    dropped -= history.size();
    for (const lin::Operation& op : history) unknown += op.outcome == lin::Outcome::kUnknown;
    ops += history.size();
    EXPECT_GT(history.size(), 100u) << "history " << h;
    if (h == 0) {
      // The pipeline is not vacuous: the same history with one read changed to a value nobody
      // wrote is rejected.
      std::vector<lin::Operation> forged = history;
      auto read = std::find_if(forged.begin(), forged.end(), [](const lin::Operation& op) {
        return op.kind == lin::OpKind::kGet && op.read.has_value();
      });
      ASSERT_NE(read, forged.end());
      read->read = "never written";
      EXPECT_EQ(lin::Check(forged).verdict, lin::Verdict::kViolation);
    }
    lin::CheckResult res = lin::Check(history);
    ASSERT_EQ(res.verdict, lin::Verdict::kOk) << "history " << h << " (seed " << run.seed << ", "
                                              << run.nodes << " nodes): " << res.explanation << "\n"
                                              << lin::FormatHistory(history);
  }
  std::cout << "nodes on " << (LoopbackAliasesBind() ? "127.0.0.1-127.0.0.5" : "127.0.0.1 only")
            << "; " << count << " histories: " << ops << " operations checked, " << unknown
            << " unknown outcomes, " << dropped << " failed reads left out, "
            << static_cast<double>(NowMicros() - began) / 1e6 << " s" << std::endl;
}

// kill -9 of one of four nodes, 1.2 s into a 4 s workload (lossy as above, three client threads
// per node, two keys homed at each node). Asserted:
//  1. No operation hangs: every survivor finishes its workload and exits 0, and each of its
//     operations on the dead node's keys returns within its deadline (plus 1 s of slack).
//  2. The dead node's keys fail cleanly: every survivor operation on them called after the
//     dead node's last lease can have lapsed (death + lease + 200 ms) fails with Unavailable
//     (CLUSTERDOWN to a RESP client); none succeeds, none fails otherwise.
//  3. The rest keeps working: survivors complete reads and writes on keys homed at the
//     survivors after the kill.
//  4. The merged history is linearizable: the survivors' operations, and the dead node's as far
//     as its file goes (an operation it issued but never saw answered is a write of unknown
//     outcome, or a read left out). Survivor writes to the dead node's keys called after its
//     death are left out: with their home gone they cannot have taken effect. Reads of those
//     keys served after the death (from a cached copy, until its lease ran out) stay in: they
//     must return the last value written.
TEST(DkvProcTest, KillNineOfOneNodeFailsItsKeysCleanlyAndTheRestKeepsWorking) {
  const uint64_t seed = testing::Seed(20261130, true);
  const RunSpec run{.nodes = 4,
                    .seed = seed,
                    .threads = 3,
                    .keys_per_home = 2,
                    .duration_ms = 4000,
                    .timeout_ms = 1500,
                    .down_after_ms = 800,
                    .kill = 2,
                    .kill_after_ms = 1200};
  const uint64_t lease_us = 500'000;  // dkv_peer's default --lease-ms
  RunResult r = RunCluster(run);
  ASSERT_NE(r.killed_at_us, 0u);
  std::vector<lin::Operation> history;
  EXPECT_FALSE(r.histories.at(run.kill).done);  // it died mid-run
  uint64_t cached_reads = 0, dead_failed = 0, alive_ok = 0, alive_writes_ok = 0, alive_failed = 0,
           unknown = 0;
  for (auto& [id, ph] : r.histories) {
    for (const Record& rec : ph.records) {
      const bool dead_home = r.map.Home(cluster::KeySlot(rec.op.key)) == run.kill;
      const bool after_kill = rec.op.call > r.killed_at_us;
      if (id != run.kill && dead_home) {
        ASSERT_TRUE(rec.answered());
        EXPECT_LE(rec.op.ret - rec.op.call, (run.timeout_ms + 1000) * 1000) << rec.op.key;
        if (rec.op.call > r.killed_at_us + lease_us + 200'000) {
          EXPECT_EQ(rec.result, "unknown:Unavailable") << lin::FormatOperation(rec.op);
          dead_failed++;
        }
        if (after_kill && rec.result == "ok") cached_reads++;          // served under a lease
        if (after_kill && rec.op.kind != lin::OpKind::kGet) continue;  // rule 4 above
      }
      if (id != run.kill && !dead_home && after_kill) {
        if (rec.result == "ok") {
          alive_ok++;
          alive_writes_ok += rec.op.kind != lin::OpKind::kGet;
        } else {
          alive_failed++;
        }
      }
      AddToHistory(rec, history);
    }
  }
  for (const lin::Operation& op : history) unknown += op.outcome == lin::Outcome::kUnknown;
  std::cout << "after the kill: " << cached_reads
            << " reads of the dead node's keys served from cached copies, " << dead_failed
            << " operations on its keys failed Unavailable; on the others " << alive_ok
            << " succeeded (" << alive_writes_ok << " writes), " << alive_failed << " failed; "
            << history.size() << " operations checked (" << r.histories.at(run.kill).records.size()
            << " recorded by the dead node), " << unknown << " unknown outcomes" << std::endl;
  EXPECT_GT(dead_failed, 0u);
  EXPECT_GT(alive_ok, 0u);
  EXPECT_GT(alive_writes_ok, 0u);
  lin::CheckResult res = lin::Check(history);
  ASSERT_EQ(res.verdict, lin::Verdict::kOk) << res.explanation << "\n"
                                            << lin::FormatHistory(history);
}

}  // namespace
}  // namespace floe::dkv
