// Memory that runs out at any one allocation of a command (the nth, for every n the command
// reaches) leaves the node serving: the command answers exactly one reply, the session and
// another session go on, and no lock is left held (a held one hangs the next command, and the
// sanitizers report one unlocked twice). Found the exclusive section's worker lock unlocked
// twice (session.cc, UnlockedWhile).

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "resp/resp.h"
#include "server/command_test.h"
#include "server/internal/alloc_failure_testing.h"
#include "server/internal/cluster_testing.h"

namespace floe::server {
namespace {

class AllocFailureTest : public CommandTest {
 protected:
  // Runs `commands` in order with the nth allocation of them all failed; false when they made
  // fewer than n allocations (nothing failed). Each command answers one whole reply.
  bool RunFailing(const std::vector<std::vector<std::string>>& commands, int64_t nth) {
    std::vector<std::vector<std::string_view>> views;
    for (const auto& c : commands) views.emplace_back(c.begin(), c.end());
    std::vector<std::string> replies(commands.size());
    for (std::string& r : replies) r.reserve(1 << 16);
    internal::FailNthAllocation(nth);
    try {
      for (size_t i = 0; i < views.size(); i++) s_->Execute(views[i], &replies[i]);
    } catch (const std::bad_alloc&) {
      internal::StopFailingAllocations();
      ADD_FAILURE() << "allocation " << nth << " escaped the session";
      return false;
    }
    const bool reached = internal::StopFailingAllocations();
    for (size_t i = 0; i < replies.size(); i++) {
      size_t used = 0;
      Result<Reply> r = resp::ParseReply(replies[i], &used);
      EXPECT_TRUE(r.ok() && used == replies[i].size())
          << "allocation " << nth << ", command " << i << ": " << replies[i];
    }
    return reached;
  }
  // The node still serves: this session, and another on the same worker.
  void ExpectServing(int64_t nth) {
    EXPECT_EQ(s_->Run({"PING"}), "+PONG\r\n") << nth;
    Session other(e_, 0);
    EXPECT_EQ(other.Run({"SET", probe_, "x"}), "+OK\r\n") << nth;
    EXPECT_EQ(other.Run({"MSET", probe_, "y", probe2_, "z"}), "+OK\r\n") << nth;
  }
  // Every n until the commands run without reaching it: one by one at first, then in steps
  // (a command of thousands of allocations would take n^2).
  void Sweep(const std::vector<std::vector<std::string>>& setup,
             const std::vector<std::vector<std::string>>& commands) {
    int64_t nth = 1;
    for (int rounds = 0; rounds < 3000; rounds++) {
      s_->Run({"DISCARD"});  // leaves a MULTI an earlier round began
      for (const auto& c : setup) s_->Run(c);
      const bool reached = RunFailing(commands, nth);
      ExpectServing(nth);
      if (::testing::Test::HasFailure()) {
        ADD_FAILURE() << "in " << ::testing::PrintToString(commands);
        return;
      }
      if (!reached) return;
      nth += nth < 300 ? 1 : nth / 30;
    }
    ADD_FAILURE() << "still allocating after 3000 rounds: " << ::testing::PrintToString(commands);
  }
  // Keys of one slot ({t}): a cluster's multi-key commands need it.
  const std::vector<std::vector<std::string>>& StringCommands() {
    static const auto* commands = new std::vector<std::vector<std::string>>{
        {"SET", "{t}k", "v", "EX", "100"},
        {"SET", "{t}k", "v", "GET"},
        {"GET", "{t}k"},
        {"APPEND", "{t}k", "more"},
        {"INCR", "{t}n"},
        {"INCRBYFLOAT", "{t}f", "2.25"},
        {"MSET", "{t}a", "1", "{t}b", "2", "{t}c", "3"},
        {"MSETNX", "{t}x1", "1", "{t}x2", "2"},
        {"MGET", "{t}a", "{t}k", "{t}n"},
        {"DEL", "{t}k", "{t}n", "{t}missing"},
        {"EXPIRE", "{t}k", "100"},
        {"GETEX", "{t}k", "PX", "5000"},
        {"GETDEL", "{t}k"},
        {"RENAME", "{t}k", "{t}k3"},
        {"STRLEN", "{t}k"},
        {"GETRANGE", "{t}k", "1", "3"},
        {"SETRANGE", "{t}k", "2", "zz"},
        {"DUMP", "{t}k"},
        {"EXISTS", "{t}k", "{t}n"},
        {"TYPE", "{t}k"},
        {"TTL", "{t}k"},
        {"SCAN", "0", "COUNT", "100"},
        {"KEYS", "*"},
        {"DBSIZE"},
        {"FLUSHALL"},
    };
    return *commands;
  }
  const std::vector<std::vector<std::string>> string_setup_ = {
      {"SET", "{t}k", "value"}, {"SET", "{t}n", "41"}, {"SET", "{t}f", "1.5"}};

  Session* s_ = &session_;
  Engine* e_ = &engine_;
  std::string probe_ = "{t}probe", probe2_ = "{t}probe2";
};

TEST_F(AllocFailureTest, StringsAndKeys) {
  for (const std::vector<std::string>& c : StringCommands()) {
    Sweep(string_setup_, {c});
    if (HasFailure()) return;
  }
}

// The same at a one-member cluster's home: rule C7's ApplyIfFree and the exclusive section
// around it (an allocation that failed there left the worker lock unlocked twice).
TEST_F(AllocFailureTest, StringsAndKeysAtAClusterHome) {
  internal::InProcessCluster cluster(internal::InProcessCluster::Options{.members = 1});
  ASSERT_TRUE(cluster.WaitFormed());
  Session at_home(&cluster.engine(0), 0);
  s_ = &at_home;
  e_ = &cluster.engine(0);
  for (const std::vector<std::string>& c : StringCommands()) {
    Sweep(string_setup_, {c});
    if (HasFailure()) break;
  }
  s_ = &session_;
  e_ = &engine_;
}

// The same through a member that is not the keys' home: the forward (rule C1), its queues and
// the home's proxy session, with the failures on the client's thread.
TEST_F(AllocFailureTest, StringsAndKeysForwardedToTheirHome) {
  internal::InProcessCluster cluster(internal::InProcessCluster::Options{.members = 2});
  ASSERT_TRUE(cluster.WaitFormed());
  const std::string tag = "{" + cluster.KeyAt(1, "t") + "}";
  auto retag = [&tag](std::vector<std::vector<std::string>> commands) {
    for (auto& c : commands) {
      for (std::string& a : c) {
        if (a.starts_with("{t}")) a = tag + a.substr(3);
      }
    }
    return commands;
  };
  Session via(&cluster.engine(0), 0);
  s_ = &via;
  e_ = &cluster.engine(0);
  probe_ = retag({{"{t}probe"}, {"{t}probe2"}})[0][0];
  probe2_ = retag({{"{t}probe2"}})[0][0];
  const auto setup = retag(string_setup_);
  for (const std::vector<std::string>& c : retag(StringCommands())) {
    Sweep(setup, {c});
    if (HasFailure()) break;
  }
  s_ = &session_;
  e_ = &engine_;
}

// Memory that runs out at the home while it runs a forwarded request, outside any command's own
// net (the replies' framing, a copy handed out, the answer, a parked change's finish): the
// request was left marked as running in its proxy session, so the client's later requests there
// queued for good (each answered CLUSTERDOWN at its deadline), and a transaction it left open
// took the client's next one. Now the request answers at once, each command with an unknown
// outcome or its reply, a parked change's keys are released, and the client's next command
// through the same node runs.
std::atomic<int64_t> proxy_fail_at{0};  // 0: off
std::atomic<bool> proxy_reached{false};
std::atomic<int> proxy_runs_entered{0}, proxy_runs_left{0}, proxy_runs_armed{0};
void FailInProxy(bool entering) {
  if (entering) {
    proxy_runs_entered.fetch_add(1);
    if (const int64_t nth = proxy_fail_at.load(); nth > 0) {
      proxy_runs_armed.fetch_add(1);
      internal::FailNthAllocation(nth);
    }
    return;
  }
  if (internal::StopFailingAllocations()) proxy_reached.store(true);
  proxy_runs_left.fetch_add(1);  // after `reached`: the test reads it once every run has left
}
// Until every run that entered a proxy session has left it (bounded: 10 s).
bool ProxyRunsLeft() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (proxy_runs_left.load() != proxy_runs_entered.load()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST_F(AllocFailureTest, AHomeThatRunsOutOfMemoryAnswersAndServesTheNextRequest) {
  internal::InProcessCluster cluster(internal::InProcessCluster::Options{.members = 3});
  ASSERT_TRUE(cluster.WaitFormed());
  const std::string tag = "{" + cluster.KeyAt(1, "t") + "}";
  const std::string key = tag + "k", counter = tag + "n", small = tag + "s";
  Session via(&cluster.engine(0), 0);
  Session holder(&cluster.engine(2), 0);
  internal::TEST_SetProxyRunHook(FailInProxy);
  struct Unhook {
    ~Unhook() { internal::TEST_SetProxyRunHook(nullptr); }
  } unhook;
  // Larger than a copy is handed out for (C8): every read of it runs at the home.
  ASSERT_EQ(via.Run({"SET", key, std::string(70'000, 'v')}), "+OK\r\n");
  ASSERT_EQ(via.Run({"SET", small, "v"}), "+OK\r\n");
  struct Request {
    std::vector<std::vector<std::string>> commands;  // the last one's reply is checked
    bool held = false;  // member 2 holds a copy of `small` first: a write to it parks (C7)
  };
  const std::vector<Request> requests = {
      {{{"GET", key}}},
      {{{"SET", key, std::string(70'000, 'w')}}},
      {{{"INCR", counter}}},
      {{{"APPEND", key, "x"}}},
      {{{"STRLEN", key}}},
      {{{"GET", small}}},                      // a copy handed out with the reply
      {{{"SET", small, "w"}}, /*held=*/true},  // parked, then finished (FinishDeferred)
      {{{"MULTI"}, {"SET", small, "x"}, {"INCR", counter}, {"EXEC"}}},  // a transaction
  };
  for (const Request& request : requests) {
    const std::string& name = request.commands.back()[0];
    bool reached = true;
    int64_t nth = 1;
    for (; reached && nth < 2000; nth++) {
      if (request.held) {
        ASSERT_EQ(holder.Run({"GET", small}).substr(0, 1), "$") << nth;
      }
      // A run still in the session (it answered, and looks for the next request) would take
      // this request unarmed.
      ASSERT_TRUE(ProxyRunsLeft()) << name << " " << nth;
      proxy_reached.store(false);
      proxy_runs_armed.store(0);
      proxy_fail_at.store(nth);
      std::string reply;
      for (const std::vector<std::string>& command : request.commands) {
        const std::vector<std::string_view> args(command.begin(), command.end());
        reply.clear();
        via.Execute(args, &reply);
      }
      proxy_fail_at.store(0);
      // The answer may reach this node before the home's thread has left the session.
      ASSERT_TRUE(ProxyRunsLeft()) << name << " " << nth;
      ASSERT_GT(proxy_runs_armed.load(), 0) << name << ": not run at the home";
      reached = proxy_reached.load();
      size_t used = 0;
      Result<Reply> r = resp::ParseReply(reply, &used);
      EXPECT_TRUE(r.ok() && used == reply.size()) << name << " " << nth << ": " << reply;
      // The client's next command there runs (a wedged proxy session answers CLUSTERDOWN at the
      // deadline instead; one left in MULTI answers QUEUED), and a write to the keys is not
      // left waiting behind a reservation nothing releases.
      ASSERT_EQ(via.Run({"EXISTS", key}), ":1\r\n") << name << ", allocation " << nth;
      ASSERT_EQ(via.Run({"SET", small, "v"}), "+OK\r\n") << name << ", allocation " << nth;
    }
    EXPECT_FALSE(reached) << name << " still allocating after 2000 rounds";
    EXPECT_GT(nth, 2) << name << ": no allocation at the home was failed";
  }
  EXPECT_GT(cluster.node(1).stats().proxy_failures.load(), 0u);
}

TEST_F(AllocFailureTest, Sketches) {
  const std::vector<std::vector<std::string>> setup = {
      {"DEL", "h", "h2", "c", "c2", "bf"}, {"PFADD", "h", "a", "b", "c"},
      {"PFADD", "h2", "c", "d"},           {"CMS.INITBYDIM", "c", "64", "3"},
      {"CMS.INITBYDIM", "c2", "64", "3"},  {"BF.RESERVE", "bf", "0.01", "1000"}};
  for (const std::vector<std::string>& c : std::vector<std::vector<std::string>>{
           {"PFADD", "h", "x", "y", "z"},
           {"PFCOUNT", "h", "h2"},
           {"PFMERGE", "m", "h", "h2"},
           {"HLL.UNION", "u", "h", "h2"},
           {"CMS.INCRBY", "c", "a", "3", "b", "4"},
           {"CMS.QUERY", "c", "a", "b"},
           {"CMS.MERGE", "c", "1", "c2"},
           {"BF.ADD", "bf", "x"},
           {"BF.MADD", "bf", "x", "y", "z"},
           {"BF.EXISTS", "bf", "x"},
       }) {
    Sweep(setup, {c});
    if (HasFailure()) return;
  }
}

TEST_F(AllocFailureTest, TransactionsAndServer) {
  Sweep({{"SET", "n", "1"}},
        {{"MULTI"}, {"SET", "k", "v"}, {"INCR", "n"}, {"MSET", "a", "1", "b", "2"}, {"EXEC"}});
  Sweep({{"SET", "n", "1"}}, {{"WATCH", "n"}, {"MULTI"}, {"INCR", "n"}, {"EXEC"}});
  for (const std::vector<std::string>& c : std::vector<std::vector<std::string>>{
           {"INFO"},
           {"CONFIG", "GET", "max*"},
           {"CONFIG", "SET", "maxmemory", "0"},
           {"CLIENT", "LIST"},
           {"CLIENT", "SETNAME", "me"},
           {"HELLO", "3"},
           {"HELLO", "2"},
           {"SLOWLOG", "GET"},
           {"LATENCY", "LATEST"},
       }) {
    Sweep({}, {c});
    if (HasFailure()) return;
  }
}

// An analytics command (FRAME.HEAD runs on the analytics pool, its reply deferred): memory
// that runs out between its deferral and its task's post answered OOM and left the connection
// waiting for the ticket (the task was never posted).
// An analytics command at a session with a reply sink (as a connection's): FRAME.GROUPBY defers
// its reply to the analytics pool. Memory that ran out between the deferral and the task's post
// answered OOM at once and still left the command deferred: its connection waited for ever for
// a ticket nothing would answer. Each command must answer once: at once, or through the sink
// within 10 s.
TEST_F(AllocFailureTest, AnAnalyticsCommandAnswersWhateverFails) {
  char path[] = "/tmp/floe_alloc_failure_XXXXXX.csv";
  const int fd = mkstemps(path, 4);
  ASSERT_GE(fd, 0);
  const std::string csv = "x,c\n1,a\n2,b\n3,a\n";
  ASSERT_EQ(write(fd, csv.data(), csv.size()), static_cast<ssize_t>(csv.size()));
  close(fd);
  Config config;
  config.import_dir = "/tmp";
  Engine engine(config, 2);
  Session session(&engine, 0);
  std::mutex mu;
  std::condition_variable arrived;
  std::map<uint64_t, std::string> replies;
  session.set_reply_sink([&](uint64_t ticket, std::string reply) {
    std::lock_guard<std::mutex> lock(mu);
    replies[ticket] = std::move(reply);
    arrived.notify_all();
  });
  // One command's whole reply: at once, or through the sink (FinishDeferred, as a connection's
  // Resume does); empty if none came.
  bool reached = false;
  auto run = [&](const std::vector<std::string_view>& args, int64_t nth) {
    std::string out;
    out.reserve(1 << 16);
    if (nth > 0) internal::FailNthAllocation(nth);
    const bool now = session.Execute(args, &out);
    reached = internal::StopFailingAllocations();
    if (now) return out;
    const uint64_t ticket = session.last_ticket();
    std::string reply;
    {
      std::unique_lock<std::mutex> lock(mu);
      if (!arrived.wait_for(lock, std::chrono::seconds(10),
                            [&] { return replies.contains(ticket); })) {
        return std::string();
      }
      reply = std::move(replies[ticket]);
      replies.erase(ticket);
    }
    return session.FinishDeferred(ticket, std::move(reply), nullptr);
  };
  const std::vector<std::string_view> import = {"FRAME.IMPORT", "f", path};
  const std::string id = run(import, 0);
  ASSERT_TRUE(id.starts_with(":")) << id;
  for (int i = 0; i < 2000 && session.Run({"EXISTS", "f"}) != ":1\r\n"; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(session.Run({"EXISTS", "f"}), ":1\r\n");
  const std::vector<std::string_view> head = {"FRAME.GROUPBY", "f",   "g", "KEYS",   "c",
                                              "AGG",           "sum", "x", "REPLACE"};
  int failed = 0;
  for (int64_t nth = 1; nth < 2000; nth++) {
    const std::string out = run(head, nth);
    size_t used = 0;
    Result<Reply> r = resp::ParseReply(out, &used);
    ASSERT_TRUE(r.ok() && used == out.size()) << "allocation " << nth << ": " << out;
    // The session goes on: the next command answers at once (nothing is left pending).
    ASSERT_EQ(session.Run({"PING"}), "+PONG\r\n") << nth;
    if (!reached) break;
    failed += r->type == Reply::Type::kError ? 1 : 0;
  }
  EXPECT_GT(failed, 3);
  unlink(path);
}

}  // namespace
}  // namespace floe::server
