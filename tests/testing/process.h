// Helpers for tests that use real sockets and processes. Test-only, like testing.h.
#ifndef FLOE_TESTING_PROCESS_H_
#define FLOE_TESTING_PROCESS_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace floe::testing {

namespace internal {
// The ports this process handed out (FreePort, FreeClusterPort), under their mutex.
struct GivenPorts {
  std::mutex mu;
  std::set<uint16_t> ports;
};
inline GivenPorts& Given() {
  static GivenPorts given;
  return given;
}
// Whether `port` is free for TCP and UDP on `host` now (0: let the kernel choose, and *port
// gets its choice).
inline bool BindsBoth(const std::string& host, uint16_t* port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(*port);
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) return false;
  const int t = socket(AF_INET, SOCK_STREAM, 0);
  const bool tcp_ok = bind(t, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  socklen_t len = sizeof(addr);
  getsockname(t, reinterpret_cast<sockaddr*>(&addr), &len);
  const int u = socket(AF_INET, SOCK_DGRAM, 0);
  const bool udp_ok = tcp_ok && bind(u, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(u);
  close(t);
  *port = ntohs(addr.sin_port);
  return udp_ok;
}
// Reserves `port` among this machine's test processes for this process's life: an exclusive
// flock on a file named after it, held by a descriptor left open (the kernel lets it go when
// the process ends, however it ends). False if another live process holds it. Where the lock
// directory cannot be used, every port counts as reserved (as before there was one).
inline bool ReservePort(uint16_t port) {
  static const std::string dir = [] {
    const char* tmp = getenv("TMPDIR");
    std::string d = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/floe-test-ports";
    std::error_code ec;
    std::filesystem::create_directories(d, ec);
    return d;
  }();
  const std::string path = dir + "/" + std::to_string(port);
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return true;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return false;
  }
  return true;  // fd stays open: the reservation lasts as long as the process
}
}  // namespace internal

// A port free for both UDP and TCP on `host` (an IPv4 literal) right now, or 0 when the host
// cannot be bound (127.0.0.2 and up are not configured everywhere). Never one this process was
// given before: the port is released when this returns, so the kernel could hand the same one
// to the next call before the test binds it.
inline uint16_t FreePort(const std::string& host = "127.0.0.1") {
  internal::GivenPorts& given = internal::Given();
  std::lock_guard<std::mutex> lock(given.mu);
  for (int attempt = 0; attempt < 200; attempt++) {
    uint16_t port = 0;
    if (internal::BindsBoth(host, &port) && given.ports.insert(port).second) return port;
  }
  return 0;
}

// A cluster port: free as FreePort's are, and the next port free too, for the member's Raft,
// which listens on the cluster port + 1 (docs/cluster.md). Drawn below the ephemeral range
// (32768 and up by default), so an outgoing connection does not take the Raft port before the
// member binds it; neither port was given before, and both count as given now.
inline uint16_t FreeClusterPort(const std::string& host = "127.0.0.1") {
  internal::GivenPorts& given = internal::Given();
  std::lock_guard<std::mutex> lock(given.mu);
  static std::mt19937 rng(std::random_device{}());
  for (int attempt = 0; attempt < 1000; attempt++) {
    uint16_t port = static_cast<uint16_t>(20000 + rng() % 12000);
    uint16_t next = static_cast<uint16_t>(port + 1);
    if (given.ports.count(port) != 0 || given.ports.count(next) != 0) continue;
    // Test processes run side by side (ctest -j): each reserves its ports for its whole life,
    // or two could draw the same free port and the second to bind it fail (a member's Raft
    // failed to start so under ThreadSanitizer, whose slow starts widen the gap).
    if (!internal::ReservePort(port) || !internal::ReservePort(next)) continue;
    if (!internal::BindsBoth(host, &port) || !internal::BindsBoth(host, &next)) continue;
    given.ports.insert(port);
    given.ports.insert(next);
    return port;
  }
  return 0;
}

// Waits until `pred()` holds, polling every few milliseconds, at most `limit` of real time;
// returns whether it held. For tests of real threads and sockets, which wait for a condition,
// never for a time.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

// Starts args[0] (a path) with `args`; returns the child's pid (it exits 127 if exec fails).
inline pid_t Spawn(const std::vector<std::string>& args) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// A fresh directory under /tmp, removed with everything in it when this goes.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/floe-test-XXXXXX";
    const char* made = mkdtemp(tmpl);
    path_ = made != nullptr ? made : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace floe::testing

#endif  // FLOE_TESTING_PROCESS_H_
