// rpc_peer: one node of the two-process test in rpc_net_test.cc. It serves an increment method,
// calls its peer `--calls` times (each call's answer checked), then keeps serving until the
// peer has made its own calls, and exits 0 only if every call succeeded and every incoming
// call ran exactly once.
//
//   rpc_peer --self ID --bind HOST --port P --peer ID@HOST:P [--calls N] [--secret S]

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>

#include "net/net.h"
#include "rpc/rpc.h"

namespace {
constexpr uint16_t kIncrement = 1;

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "rpc_peer: %s\nusage: rpc_peer --self ID --bind HOST --port P --peer ID@HOST:P "
               "[--calls N] [--secret S]\n",
               why);
  std::exit(2);
}
}  // namespace

int main(int argc, char** argv) {
  floe::net::TransportOptions t;
  floe::rpc::Options o;
  int calls = 100;
  floe::net::PeerAddress peer;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--self") {
      t.self = static_cast<floe::net::NodeId>(std::stoul(value));
    } else if (flag == "--bind") {
      t.bind_host = value;
    } else if (flag == "--port") {
      t.port = static_cast<uint16_t>(std::stoul(value));
    } else if (flag == "--calls") {
      calls = std::stoi(value);
    } else if (flag == "--secret") {
      o.secret = value;
    } else if (flag == "--peer") {
      const size_t at = value.find('@'), colon = value.rfind(':');
      if (at == std::string::npos || colon == std::string::npos || colon < at) Usage("bad --peer");
      peer.id = static_cast<floe::net::NodeId>(std::stoul(value.substr(0, at)));
      peer.host = value.substr(at + 1, colon - at - 1);
      peer.port = static_cast<uint16_t>(std::stoul(value.substr(colon + 1)));
    } else {
      Usage(("unknown flag " + flag).c_str());
    }
  }
  if (t.self == 0 || peer.id == 0 || t.port == 0) Usage("--self, --port and --peer are required");
  t.peers = {peer};
  o.peers = {peer.id};

  floe::net::AsioLoop loop;
  auto transport = floe::net::UdpTcpTransport::Start(loop, t);
  if (!transport.ok()) {
    std::fprintf(stderr, "rpc_peer: %s\n", transport.status().ToString().c_str());
    return 1;
  }
  floe::rpc::Endpoint endpoint(**transport, o);
  floe::Mutex mu;
  std::map<std::string, int> seen;
  endpoint.Register(kIncrement, 0, [&](floe::net::NodeId, std::string_view req) {
    floe::MutexLock lock(&mu);
    const int n = ++seen[std::string(req)];
    return floe::Result<std::string>(std::string(req) + "#" + std::to_string(n));
  });
  endpoint.Start();

  int failures = 0;
  for (int i = 0; i < calls; i++) {
    const std::string req = "n" + std::to_string(t.self) + "-" + std::to_string(i);
    floe::Result<std::string> r = endpoint.Call(peer.id, kIncrement, req, 30'000'000);
    if (!r.ok() || *r != req + "#1") {
      std::fprintf(stderr, "rpc_peer %u: call %d: %s\n", t.self, i,
                   r.ok() ? r->c_str() : r.status().ToString().c_str());
      failures++;
    }
  }
  // Keep serving until the peer's calls have all arrived (or a minute passes).
  for (int waited = 0; waited < 600; waited++) {
    {
      floe::MutexLock lock(&mu);
      if (static_cast<int>(seen.size()) >= calls) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Give the peer's last ACKACKs a moment, then check exactly-once.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  floe::MutexLock lock(&mu);
  for (const auto& [req, n] : seen) {
    if (n != 1) {
      std::fprintf(stderr, "rpc_peer %u: %s ran %d times\n", t.self, req.c_str(), n);
      failures++;
    }
  }
  if (static_cast<int>(seen.size()) != calls) {
    std::fprintf(stderr, "rpc_peer %u: served %zu calls, expected %d\n", t.self, seen.size(),
                 calls);
    failures++;
  }
  std::printf("rpc_peer %u: %d calls made, %zu served, %d failures\n", t.self, calls, seen.size(),
              failures);
  return failures == 0 ? 0 : 1;
}
