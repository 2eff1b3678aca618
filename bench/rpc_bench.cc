// RPC against the raw sockets it runs on, same loopback, same run (docs/perf.md, "RPC"):
//   RoundTrip   one small call at a time      vs a UDP ping-pong
//   Throughput  one-datagram calls, 256 in flight vs UDP datagrams echoed, 256 in flight
//   Bulk        100 MB requests                vs 100 MB over one raw TCP connection
// Counters: calls, resends, duplicates dropped, bytes, authentication failures, and the
// process's context switches per operation (sleeps_per_op, preempted_per_op): a voluntary
// switch is a thread going to sleep, so each is a wake-up paid later. Raw and Floe run in the
// same process, so the figures compare directly.

#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <future>
#include <thread>

#include "net/net.h"
#include "rpc/rpc.h"

namespace {

using floe::Result;
using floe::net::NodeId;

constexpr uint16_t kEcho = 1;
constexpr uint16_t kSink = 2;        // answers with the request's size only
constexpr uint16_t kEchoInline = 3;  // kEcho registered inline (it never blocks)

// Two Floe nodes on 127.0.0.1 with an echo and a sink method.
struct FloePair {
  struct Node {
    floe::net::AsioLoop loop;
    std::unique_ptr<floe::net::UdpTcpTransport> transport;
    std::unique_ptr<floe::rpc::Endpoint> endpoint;
  };
  Node a, b;

  explicit FloePair(bool secret) {
    floe::net::TransportOptions ta, tb;
    ta.self = 1;
    tb.self = 2;
    ta.port = 0;
    auto t1 = floe::net::UdpTcpTransport::Start(a.loop, ta);
    auto t2 = floe::net::UdpTcpTransport::Start(b.loop, tb);
    FLOE_CHECK(t1.ok() && t2.ok());
    a.transport = std::move(t1).value();
    b.transport = std::move(t2).value();
    a.transport->SetPeer({2, "127.0.0.1", b.transport->port()});
    b.transport->SetPeer({1, "127.0.0.1", a.transport->port()});
    for (Node* n : {&a, &b}) {
      floe::rpc::Options o;
      o.peers = {n == &a ? NodeId{2} : NodeId{1}};
      if (secret) o.secret = "bench secret";
      n->endpoint = std::make_unique<floe::rpc::Endpoint>(*n->transport, o);
      n->endpoint->Register(
          kEcho, 0, [](NodeId, std::string_view r) { return Result<std::string>(std::string(r)); });
      n->endpoint->Register(
          kEchoInline, 0,
          [](NodeId, std::string_view r) { return Result<std::string>(std::string(r)); },
          /*runs_inline=*/true);
      n->endpoint->Register(kSink, 0, [](NodeId, std::string_view r) {
        return Result<std::string>(std::to_string(r.size()));
      });
      n->endpoint->Start();
    }
  }

  void Count(benchmark::State& state) {
    const auto& s = a.endpoint->stats();
    const auto& r = b.endpoint->stats();
    state.counters["calls"] = static_cast<double>(s.calls.load());
    state.counters["resends"] = static_cast<double>(s.call_resends + r.ack_resends);
    state.counters["dups_dropped"] = static_cast<double>(r.duplicates.load());
    state.counters["auth_failures"] = static_cast<double>(s.auth_failures + r.auth_failures);
    state.counters["wire_bytes"] = static_cast<double>(s.bytes_sent + r.bytes_sent);
  }
};

// Context switches of the whole process, all threads.
struct Switches {
  int64_t voluntary = 0, involuntary = 0;
  static Switches Now() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return {u.ru_nvcsw, u.ru_nivcsw};
  }
  // Reports the switches since `this` per operation.
  void Report(benchmark::State& state, int64_t ops) const {
    const Switches now = Now();
    const double n = static_cast<double>(std::max<int64_t>(1, ops));
    state.counters["sleeps_per_op"] = static_cast<double>(now.voluntary - voluntary) / n;
    state.counters["preempted_per_op"] = static_cast<double>(now.involuntary - involuntary) / n;
  }
};

// ---- raw sockets ----
int UdpSocket(sockaddr_in* addr) {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr->sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(addr), sizeof(*addr));
  socklen_t len = sizeof(*addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(addr), &len);
  return fd;
}

// An echo server on a UDP socket, in its own thread, until `stop`.
struct UdpEcho {
  sockaddr_in addr{};
  int fd;
  std::atomic<bool> stop{false};
  std::thread thread;
  UdpEcho() : fd(UdpSocket(&addr)) {
    timeval tv{0, 100000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    thread = std::thread([this] {
      char buf[2048];
      while (!stop.load()) {
        sockaddr_in from{};
        socklen_t len = sizeof(from);
        const ssize_t n =
            recvfrom(fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
        if (n > 0)
          sendto(fd, buf, static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&from), len);
      }
    });
  }
  ~UdpEcho() {
    stop = true;
    thread.join();
    close(fd);
  }
};

void BM_RoundTrip_Raw(benchmark::State& state) {
  UdpEcho echo;
  sockaddr_in me{};
  const int fd = UdpSocket(&me);
  char msg[64] = "ping", buf[2048];
  const Switches before = Switches::Now();
  for (auto _ : state) {
    sendto(fd, msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&echo.addr), sizeof(echo.addr));
    recv(fd, buf, sizeof(buf), 0);
  }
  before.Report(state, state.iterations());
  close(fd);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RoundTrip_Raw)->UseRealTime();

// The same ping-pong with the caller spinning on a non-blocking receive for up to 100 us before
// it blocks, as Floe's blocking Call does (Options::call_spin_us): the baseline without the
// caller's wake-up, so that the ratio measures Floe's work rather than the scheduler's.
void BM_RoundTrip_RawSpin(benchmark::State& state) {
  UdpEcho echo;
  sockaddr_in me{};
  const int fd = UdpSocket(&me);
  char msg[64] = "ping", buf[2048];
  const Switches before = Switches::Now();
  for (auto _ : state) {
    sendto(fd, msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&echo.addr), sizeof(echo.addr));
    const uint64_t spin_until = floe::NowMicros() + 100;
    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) < 0) {
      if (floe::NowMicros() >= spin_until) {
        recv(fd, buf, sizeof(buf), 0);
        break;
      }
    }
  }
  before.Report(state, state.iterations());
  close(fd);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RoundTrip_RawSpin)->UseRealTime();

void BM_RoundTrip_Floe(benchmark::State& state) {
  FloePair p(state.range(0) != 0);
  const std::string msg(64, 'p');
  const uint16_t method = state.range(1) != 0 ? kEchoInline : kEcho;
  const Switches before = Switches::Now();
  for (auto _ : state) {
    Result<std::string> r = p.a.endpoint->Call(2, method, msg, 5'000'000);
    if (!r.ok()) state.SkipWithError(r.status().ToString().c_str());
  }
  before.Report(state, state.iterations());
  p.Count(state);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RoundTrip_Floe)
    ->ArgsProduct({{0, 1}, {0, 1}})
    ->ArgNames({"mac", "inline"})
    ->UseRealTime();

constexpr int kWindow = 256;

void BM_Throughput_Raw(benchmark::State& state) {
  UdpEcho echo;
  sockaddr_in me{};
  const int fd = UdpSocket(&me);
  timeval tv{0, 200000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char msg[64] = "x", buf[2048];
  int64_t lost = 0;
  const Switches before = Switches::Now();
  for (auto _ : state) {
    for (int i = 0; i < kWindow; i++) {
      sendto(fd, msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&echo.addr), sizeof(echo.addr));
    }
    for (int i = 0; i < kWindow; i++) {
      if (recv(fd, buf, sizeof(buf), 0) < 0) lost++;  // raw UDP may lose; Floe may not
    }
  }
  before.Report(state, state.iterations() * kWindow);
  close(fd);
  state.counters["lost"] = static_cast<double>(lost);
  state.SetItemsProcessed(state.iterations() * kWindow);
}
BENCHMARK(BM_Throughput_Raw)->UseRealTime();

void BM_Throughput_Floe(benchmark::State& state) {
  FloePair p(false);
  const std::string msg(64, 'x');
  const uint16_t method = state.range(0) != 0 ? kEchoInline : kEcho;
  const Switches before = Switches::Now();
  for (auto _ : state) {
    std::mutex mu;
    std::condition_variable cv;
    int left = kWindow;
    for (int i = 0; i < kWindow; i++) {
      p.a.endpoint->CallAsync(2, method, msg, 10'000'000, [&](Result<std::string> r) {
        if (!r.ok()) std::abort();
        std::lock_guard<std::mutex> lock(mu);
        if (--left == 0) cv.notify_one();
      });
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return left == 0; });
  }
  before.Report(state, state.iterations() * kWindow);
  p.Count(state);
  state.SetItemsProcessed(state.iterations() * kWindow);
}
BENCHMARK(BM_Throughput_Floe)->Arg(0)->Arg(1)->ArgName("inline")->UseRealTime();

constexpr size_t kBulk = 100 << 20;

std::string BulkPayload() {
  std::string s(kBulk, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ULL;
  for (size_t i = 0; i + 8 <= s.size(); i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;  // incompressible, like most bulk data
    std::memcpy(s.data() + i, &x, 8);
  }
  return s;
}

void BM_Bulk_Raw(benchmark::State& state) {
  const std::string payload = BulkPayload();
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  listen(listener, 1);
  // The receiver reads whole transfers into a buffer (as a message receiver must) and answers
  // one byte after each.
  std::thread receiver([&] {
    const int c = accept(listener, nullptr, nullptr);
    std::string buf(kBulk, '\0');
    for (;;) {
      size_t got = 0;
      while (got < kBulk) {
        const ssize_t n = read(c, buf.data() + got, kBulk - got);
        if (n <= 0) {
          close(c);
          return;
        }
        got += static_cast<size_t>(n);
      }
      const char ok = 1;
      if (write(c, &ok, 1) != 1) break;
    }
    close(c);
  });
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  for (auto _ : state) {
    size_t sent = 0;
    while (sent < kBulk) {
      const ssize_t n = write(fd, payload.data() + sent, kBulk - sent);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    char ok;
    if (read(fd, &ok, 1) != 1) state.SkipWithError("raw receiver failed");
  }
  close(fd);
  receiver.join();
  close(listener);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBulk));
}
BENCHMARK(BM_Bulk_Raw)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_Bulk_Floe(benchmark::State& state) {
  FloePair p(false);
  const std::string payload = BulkPayload();
  for (auto _ : state) {
    // The caller hands its buffer over (Call takes it by value); making the copy is not part
    // of the transfer, as the raw sender's buffer is not.
    state.PauseTiming();
    std::string request = payload;
    state.ResumeTiming();
    Result<std::string> r = p.a.endpoint->Call(2, kSink, std::move(request), 60'000'000);
    if (!r.ok() || *r != std::to_string(kBulk)) state.SkipWithError("bulk call failed");
  }
  p.Count(state);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBulk));
}
BENCHMARK(BM_Bulk_Floe)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
