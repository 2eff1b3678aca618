// Rule C9 (docs/cluster.md, "Commands through any node"): a home stops a forwarded request at
// its answer budget, between entries, and the client's node sends the rest again once its
// client has read its replies. Member 0 is a server with a listener (the hold lives in its
// connections); members 1 and 2 are bare engines. The budget is 4 MiB here rather than 64, and
// the values as much smaller, so the tests move tens of megabytes (run under TSan too).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <map>
#include <thread>

#include "cluster/cluster.h"
#include "resp/resp.h"
#include "server/command_test.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_testing.h"
#include "testing/process.h"

namespace floe::server {
namespace {

using internal::ClusterNode;
using Clock = std::chrono::steady_clock;

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kBudget = 4 * kMiB;
constexpr size_t kKiB = 1024;

class ForwardBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    internal::TEST_SetForwardAnswerBudget(kBudget);
    // The logger exists before the server's thread and this one start members at once.
    FLOE_LOG_INFO("forward budget test: answer budget {} bytes", kBudget);
    // Generous timeouts: under TSan a budget's worth of replies takes a while to move.
    cluster_ = std::make_unique<internal::InProcessCluster>(internal::InProcessClusterOptions{
        .members = 3, .started = 0, .timeout_ms = 20000, .first_client_port = 6000});
    Config sc;
    sc.bind = "127.0.0.1";
    sc.cluster = cluster_->member_list();
    sc.cluster_node_timeout = 20000;
    sc.port = 0;
    sc.threads = 1;
    sc.cluster_port = cluster_->cluster_port(0);
    sc.dir = cluster_->data_dir();
    server_ = std::make_unique<Server>(sc);
    run_ = std::thread([this] { EXPECT_TRUE(server_->Run().ok()); });
    ASSERT_TRUE(cluster_->Start(1).ok());
    ASSERT_TRUE(cluster_->Start(2).ok());
    // Every member serves: a SET through the server's engine to each other member succeeds.
    for (int m = 1; m <= 2; m++) {
      Session s(&server_->engine(), 0);
      Reply r;
      const auto deadline = Clock::now() + std::chrono::seconds(30);
      do {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        r = CommandTest::Decode(s.Run(std::vector<std::string>{"SET", KeyAt(m, "ready"), "v"}));
      } while (!(r.type == Reply::Type::kSimple && r.str == "OK") && Clock::now() < deadline);
      ASSERT_THAT(r, IsOk());
    }
    ASSERT_NE(server_->bound_port(), 0);
  }

  void TearDown() override {
    if (server_) server_->Stop();
    if (run_.joinable()) run_.join();
    server_.reset();
    cluster_.reset();
    internal::TEST_SetForwardAnswerBudget(internal::kForwardAnswerBudget);
  }

  // A key homed at member `m` (1 or 2), as the server's node routes it.
  std::string KeyAt(int m, const std::string& prefix) {
    ClusterNode* node = server_->engine().cluster();
    const net::NodeId want = cluster_->node(static_cast<size_t>(m)).self();
    for (int n = 0;; n++) {
      std::string k = prefix + std::to_string(n);
      if (node->map().Home(cluster::KeySlot(k)) == want) return k;
    }
  }

  // Stores `size` bytes of `fill` at `key` through the server's engine.
  void Store(const std::string& key, size_t size, char fill) {
    Session s(&server_->engine(), 0);
    ASSERT_THAT(
        CommandTest::Decode(s.Run(std::vector<std::string>{"SET", key, std::string(size, fill)})),
        IsOk());
  }

  // GETs run at member m (its commandstats count the proxy sessions' commands).
  uint64_t GetsAt(int m) {
    Session s(&cluster_->engine(static_cast<size_t>(m)), 0);
    const std::string info = CommandTest::Decode(s.Run({"INFO", "commandstats"})).str;
    const size_t at = info.find("cmdstat_get:calls=");
    if (at == std::string::npos) return 0;
    return std::stoull(info.substr(at + 18));
  }

  int Connect() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server_->bound_port()));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    // A small receive buffer: what the kernel holds for the client is not the node's.
    const int rcvbuf = 64 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    return fd;
  }

  static void WriteAll(int fd, const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t n = write(fd, bytes.data() + off, bytes.size() - off);
      ASSERT_GT(n, 0);
      off += static_cast<size_t>(n);
    }
  }

  // Reads `count` replies (bounded: 120 s); fewer when the node stops answering.
  static std::vector<resp::Reply> ReadReplies(int fd, size_t count) {
    std::vector<resp::Reply> replies;
    std::string in;
    std::vector<char> buf(1 << 20);
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    while (replies.size() < count && Clock::now() < deadline) {
      pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
      if (poll(&p, 1, 1000) <= 0) continue;
      const ssize_t n = read(fd, buf.data(), buf.size());
      if (n <= 0) break;
      in.append(buf.data(), static_cast<size_t>(n));
      size_t off = 0;
      for (;;) {
        size_t used = 0;
        Result<resp::Reply> r = resp::ParseReply(std::string_view(in).substr(off), &used);
        if (!r.ok() || used == 0) break;
        replies.push_back(std::move(*r));
        off += used;
      }
      in.erase(0, off);
    }
    return replies;
  }

  static std::string Command(std::initializer_list<std::string_view> args) {
    std::string out = "*" + std::to_string(args.size()) + "\r\n";
    for (std::string_view a : args) {
      out += "$" + std::to_string(a.size()) + "\r\n" + std::string(a) + "\r\n";
    }
    return out;
  }

  // Waits until member m's GET count stays put for half a second (bounded: 30 s).
  uint64_t SettledGetsAt(int m) {
    uint64_t last = GetsAt(m);
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      const uint64_t now = GetsAt(m);
      if (now == last) break;
      last = now;
    }
    return last;
  }

  std::unique_ptr<internal::InProcessCluster> cluster_;
  std::unique_ptr<Server> server_;
  std::thread run_;
};

// The home's answer stops at the budget; the rest runs in later requests, in order, and a
// transaction whose replies exceed the budget still runs whole (its EXEC is one entry). Through
// a session with a reply sink (no connection: the rest goes again at once).
TEST_F(ForwardBudgetTest, AHomeStopsAtItsBudgetAndTheRestFollowsInOrder) {
  // A budget of eight replies: whatever batches the sender makes (they depend on how fast
  // answers come), most requests are cut.
  internal::TEST_SetForwardAnswerBudget(256 * kKiB);
  const std::string big = KeyAt(1, "big"), counter = KeyAt(1, "counter");
  const size_t size = 32 * kKiB;
  Store(big, size, 'x');
  const std::string tx = "{" + big + "}";  // the same slot
  Session s(&server_->engine(), 0);
  std::mutex mu;
  std::map<uint64_t, std::string> deferred;
  s.set_reply_sink([&](uint64_t ticket, std::string reply) {
    std::lock_guard<std::mutex> lock(mu);
    deferred.emplace(ticket, std::move(reply));
  });
  // Each command's reply, immediate or by ticket.
  std::vector<std::pair<uint64_t, std::string>> order;
  auto run = [&](std::vector<std::string> args) {
    std::vector<std::string_view> views(args.begin(), args.end());
    std::string out;
    if (s.Execute(views, &out)) {
      order.emplace_back(0, std::move(out));
    } else {
      order.emplace_back(s.last_ticket(), std::string());
    }
  };
  constexpr int kGets = 300;  // 9.4 MiB of replies, and the transaction's 1.25 MiB
  for (int i = 0; i < kGets; i++) {
    run({"GET", big});
    if (i % 10 == 9) run({"INCR", counter});
    if (i == 100) {  // the budget is reached inside the transaction
      // 40 × 32 KiB in one EXEC: five budgets, never split.
      run({"MULTI"});
      for (int j = 0; j < 40; j++) run({"GET", big});
      run({"EXEC"});
    }
  }
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  size_t want = 0;
  for (const auto& [t, r] : order) want += t != 0 ? 1 : 0;
  while (Clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (deferred.size() == want) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(deferred.size(), want);
  const std::string big_reply =
      "$" + std::to_string(size) + "\r\n" + std::string(size, 'x') + "\r\n";
  int incr = 0;
  bool in_multi = false;
  for (auto& [ticket, immediate] : order) {
    const std::string& r = ticket != 0 ? deferred[ticket] : immediate;
    if (r == "+OK\r\n" && !in_multi) {
      in_multi = true;  // MULTI
    } else if (r == "+QUEUED\r\n") {
      ASSERT_TRUE(in_multi);
    } else if (r.rfind("*40\r\n", 0) == 0) {
      ASSERT_TRUE(in_multi);
      in_multi = false;
      std::string all = "*40\r\n";
      for (int j = 0; j < 40; j++) all += big_reply;
      ASSERT_TRUE(r == all) << "EXEC's reply differs";
    } else if (r[0] == ':') {
      ASSERT_EQ(r, ":" + std::to_string(++incr) + "\r\n");
    } else {
      ASSERT_TRUE(r == big_reply) << r.substr(0, 60);
    }
  }
  EXPECT_EQ(incr, kGets / 10);
  EXPECT_GE(cluster_->node(1).stats().answers_cut.load(), 2u);
}

// A client that pipelines more large reads than it reads replies: the home runs no more than
// about twice the budget's worth for it, and the rest runs as the client reads (without the
// rule the home built the whole answer, 37.5 MiB here, at once).
TEST_F(ForwardBudgetTest, AClientThatDoesNotReadHoldsItsHomeBack) {
  const std::string big = KeyAt(1, "big");
  const size_t size = 64 * kKiB;
  Store(big, size, 'y');
  const uint64_t before = GetsAt(1);
  const int fd = Connect();
  constexpr int kGets = 600;  // 37.5 MiB of replies
  std::string pipeline;
  for (int i = 0; i < kGets; i++) pipeline += Command({"GET", big});
  WriteAll(fd, pipeline);
  // The home is held back once the budget is spent: waited for, not read at once (a loaded
  // machine may pause the forwarding for longer than SettledGetsAt's half second before it).
  EXPECT_TRUE(floe::testing::WaitFor(
      [&] { return server_->engine().cluster()->stats().forwards_held.load() >= 1; }));
  const uint64_t ran = SettledGetsAt(1) - before;
  // Two budgets' worth (64 GETs each) and what the sockets hold (a few MiB).
  EXPECT_LT(ran, 400u) << "the home ran the client's reads ahead of what it read";
  const std::vector<resp::Reply> replies = ReadReplies(fd, kGets);
  close(fd);
  ASSERT_EQ(replies.size(), static_cast<size_t>(kGets));
  for (const resp::Reply& r : replies) {
    ASSERT_EQ(r.type, resp::Reply::Type::kBulk);
    ASSERT_TRUE(r.str == std::string(size, 'y'));
  }
}

// Replies of one home stuck behind the oldest reply, whose home is held back: once the client
// has read all it can, that home goes on (counting the stuck replies against the client would
// leave both waiting for ever).
TEST_F(ForwardBudgetTest, RepliesStuckBehindAHeldHomeDoNotHoldItForEver) {
  // Member 1's answer stops after 4 + 16 MiB, and its last reads wait; member 2's replies to
  // later reads wait behind them, more than the budget: only the oldest reply's home may go
  // on. A larger budget here, so that what the sockets hold does not decide it.
  internal::TEST_SetForwardAnswerBudget(4 * kBudget);
  const std::string a = KeyAt(1, "a"), b = KeyAt(2, "b");
  const size_t a_size = 4 * kMiB, b_size = 256 * kKiB;
  Store(a, a_size, 'a');
  Store(b, b_size, 'b');
  const int fd = Connect();
  std::string pipeline;
  constexpr size_t kA = 8, kB = 100;
  for (size_t i = 0; i < kA; i++) pipeline += Command({"GET", a});
  for (size_t i = 0; i < kB; i++) pipeline += Command({"GET", b});
  WriteAll(fd, pipeline);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::vector<resp::Reply> replies = ReadReplies(fd, kA + kB);
  close(fd);
  ASSERT_EQ(replies.size(), kA + kB);
  for (size_t i = 0; i < replies.size(); i++) {
    ASSERT_EQ(replies[i].type, resp::Reply::Type::kBulk) << i;
    ASSERT_TRUE(replies[i].str == (i < kA ? std::string(a_size, 'a') : std::string(b_size, 'b')))
        << i;
  }
  EXPECT_GE(server_->engine().cluster()->stats().forwards_held.load(), 2u);
}

// A client that leaves while its home is held back: what it sent still runs, in order (as
// Redis runs every command a client sent before it left), its replies go nowhere, and its proxy
// session at the home closes.
TEST_F(ForwardBudgetTest, AClientThatLeavesWhileHeldHasItsCommandsRunInOrder) {
  const std::string big = KeyAt(1, "big"), later = KeyAt(1, "later"), other = KeyAt(2, "other");
  Store(big, 64 * kKiB, 'z');
  const int fd = Connect();
  std::string pipeline;
  for (int i = 0; i < 600; i++) pipeline += Command({"GET", big});
  pipeline += Command({"SET", later, "ran"});
  pipeline += Command({"SET", other, "ran too"});
  WriteAll(fd, pipeline);
  SettledGetsAt(1);
  ASSERT_GE(server_->engine().cluster()->stats().forwards_held.load(), 1u);
  close(fd);
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (cluster_->node(1).stats().proxy_sessions.load() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(cluster_->node(1).stats().proxy_sessions.load(), 0u);
  Session s(&server_->engine(), 0);
  EXPECT_THAT(CommandTest::Decode(s.Run(std::vector<std::string>{"GET", later})), IsBulk("ran"));
  EXPECT_THAT(CommandTest::Decode(s.Run(std::vector<std::string>{"GET", other})),
              IsBulk("ran too"));
}

// An entry of several commands outside a transaction (a split PFCOUNT's part at one home: each
// key's TYPE and HLL.EXPORT) is never cut: the request names the commands that continue an
// entry, and the home stops only before one that does not.
TEST_F(ForwardBudgetTest, AHomeNeverStopsInsideAnEntry) {
  const std::string big = KeyAt(1, "big");
  Store(big, 128 * kKiB, 'e');
  ClusterNode& node = *server_->engine().cluster();
  auto forward = [&](uint64_t client, bool one_entry) {
    internal::ForwardRequest req{.origin = node.origin(), .client = client, .seq = 1, .sent_us = 1};
    for (uint32_t i = 0; i < 40; i++) {
      req.commands.push_back({"GET", big});
      if (one_entry && i > 0) req.continues.push_back(i);
    }
    std::promise<Result<std::string>> answered;
    node.Forward(cluster_->node(1).self(), req, false,
                 [&](Result<std::string> r) { answered.set_value(std::move(r)); });
    Result<std::string> r = answered.get_future().get();
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    Result<std::vector<std::string>> replies =
        internal::DecodeFramedReplies(r.ok() ? *r : std::string(), 40);
    EXPECT_TRUE(replies.ok());
    size_t ran = 0;
    if (replies.ok()) {
      for (const std::string& one : *replies) ran += one.empty() ? 0 : 1;
    }
    node.CloseProxy(client, cluster_->node(1).self());
    return ran;
  };
  EXPECT_EQ(forward(1u << 30, /*one_entry=*/true), 40u);
  EXPECT_EQ(forward((1u << 30) + 1, /*one_entry=*/false), 32u);  // 32 x 128 KiB: the budget
}

// The same through a client's connection: a split PFCOUNT's part at member 1 (each key's TYPE
// and HLL.EXPORT) queued behind reads that leave it just under the budget. The sender names the
// part's commands as one entry; without, the home stopped inside it and every reply of the
// request came back as a malformed answer.
TEST_F(ForwardBudgetTest, ASplitCommandsPartIsNeverCut) {
  const std::string big = KeyAt(1, "big");
  // Four GET replies (each framed: a 3-byte length, "$1048049\r\n", the value, "\r\n") leave
  // the answer 2 KiB under the budget; the first GET of the pipeline goes alone.
  const size_t size = (kBudget - 2048) / 4 - 15;
  Store(big, size, 'p');
  Session s(&server_->engine(), 0);
  std::vector<std::string> hlls;
  for (int i = 0; i < 10; i++) {
    hlls.push_back(KeyAt(1, "hll" + std::to_string(i) + "-"));
    std::vector<std::string> add = {"PFADD", hlls.back()};
    for (int j = 0; j < 5000; j++) add.push_back(std::to_string(i * 5000 + j));
    ASSERT_EQ(CommandTest::Decode(s.Run(add)).type, Reply::Type::kInteger);
  }
  hlls.push_back(KeyAt(2, "hll-elsewhere-"));
  const int fd = Connect();
  std::string pipeline;
  for (int i = 0; i < 5; i++) pipeline += Command({"GET", big});
  pipeline += "*" + std::to_string(hlls.size() + 1) + "\r\n$7\r\nPFCOUNT\r\n";
  for (const std::string& k : hlls)
    pipeline += "$" + std::to_string(k.size()) + "\r\n" + k + "\r\n";
  WriteAll(fd, pipeline);
  const std::vector<resp::Reply> replies = ReadReplies(fd, 6);
  close(fd);
  ASSERT_EQ(replies.size(), 6u);
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(replies[i].type, resp::Reply::Type::kBulk) << replies[i].str.substr(0, 80);
    ASSERT_EQ(replies[i].str.size(), size);
  }
  ASSERT_EQ(replies[5].type, resp::Reply::Type::kInteger) << replies[5].str;
  EXPECT_NEAR(static_cast<double>(replies[5].integer), 50000.0, 2500.0);
}

}  // namespace
}  // namespace floe::server
