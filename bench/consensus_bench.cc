// Commit latency through the consensus log against the raw loopback it runs on, same run
// (docs/consensus.md):
//   Commit/0   one 64-byte proposal at a time on the leader of a 3-server loopback cluster,
//              data directories in the current directory (the disk raft_uv syncs to)
//   Commit/1   the same with the directories in /dev/shm (tmpfs: no disk in the path)
//   TcpRoundTrip  64 bytes ping-pong over one raw TCP loopback connection (the network floor)
// A commit is at least: the leader's write, a round trip to a follower with its write, then
// the apply and the hand-back to the proposing thread.

#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <thread>

#include "consensus/consensus.h"

namespace {

using floe::consensus::Log;
using floe::consensus::Options;
using floe::consensus::Server;

uint16_t FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  FLOE_CHECK(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

class Counter : public floe::consensus::StateMachine {
 public:
  void Apply(uint64_t, std::string_view) override { applied_++; }
  std::string Snapshot() override { return std::to_string(applied_); }
  floe::Status Restore(std::string_view) override { return floe::Status::OK(); }

 private:
  uint64_t applied_ = 0;  // raft thread only
};

struct Cluster {
  std::string root;
  Counter machines[3];
  std::unique_ptr<Log> logs[3];

  explicit Cluster(const std::string& parent) {
    std::string tmpl = parent + "/consensus_bench.XXXXXX";
    FLOE_CHECK(mkdtemp(tmpl.data()) != nullptr);
    root = tmpl;
    std::vector<Server> servers;
    for (uint64_t id = 1; id <= 3; id++) {
      servers.push_back({.id = id, .address = "127.0.0.1:" + std::to_string(FreePort())});
    }
    for (int i = 0; i < 3; i++) {
      Options o{.id = servers[i].id,
                .address = servers[i].address,
                .dir = root + "/" + std::to_string(i + 1),
                .bootstrap = servers};
      auto log = Log::Start(o, &machines[i]);
      FLOE_CHECK_OK(log.status());
      logs[i] = std::move(log).value();
    }
  }
  ~Cluster() {
    for (auto& log : logs) log.reset();
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  Log* Leader() {
    for (int attempt = 0; attempt < 2000; attempt++) {
      for (auto& log : logs) {
        if (log->state().leader) return log.get();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return nullptr;
  }
};

void BM_Commit(benchmark::State& state) {
  Cluster cluster(state.range(0) == 0 ? std::filesystem::current_path().string() : "/dev/shm");
  Log* leader = cluster.Leader();
  FLOE_CHECK(leader != nullptr);
  const std::string entry(64, 'e');
  int64_t failed = 0;
  for (auto _ : state) {
    std::promise<bool> committed;
    leader->Propose(entry, [&](floe::Result<uint64_t> r) { committed.set_value(r.ok()); });
    if (!committed.get_future().get()) failed++;
  }
  state.counters["failed"] = static_cast<double>(failed);
}
BENCHMARK(BM_Commit)->Arg(0)->Arg(1)->Iterations(500)->Repetitions(3)->UseRealTime()->Unit(
    benchmark::kMicrosecond);

void BM_TcpRoundTrip(benchmark::State& state) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  FLOE_CHECK(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  FLOE_CHECK(listen(listener, 1) == 0);
  std::thread echo([listener] {
    const int fd = accept(listener, nullptr, nullptr);
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buf[64];
    while (true) {
      size_t got = 0;
      while (got < sizeof(buf)) {
        const ssize_t n = read(fd, buf + got, sizeof(buf) - got);
        if (n <= 0) {
          close(fd);
          return;
        }
        got += static_cast<size_t>(n);
      }
      if (write(fd, buf, sizeof(buf)) != static_cast<ssize_t>(sizeof(buf))) break;
    }
    close(fd);
  });
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  FLOE_CHECK(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  char buf[64];
  std::memset(buf, 'p', sizeof(buf));
  for (auto _ : state) {
    FLOE_CHECK(write(fd, buf, sizeof(buf)) == static_cast<ssize_t>(sizeof(buf)));
    size_t got = 0;
    while (got < sizeof(buf)) {
      const ssize_t n = read(fd, buf + got, sizeof(buf) - got);
      FLOE_CHECK(n > 0);
      got += static_cast<size_t>(n);
    }
  }
  close(fd);
  echo.join();
  close(listener);
}
BENCHMARK(BM_TcpRoundTrip)->Repetitions(3)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
