// Closed-loop load: C connections (one thread each), keep-alive GETs for S seconds; prints req/s
// and p50/p99 in us.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>
using Clock = std::chrono::steady_clock;
int main(int argc, char** argv) {
  int port = atoi(argv[1]), conns = atoi(argv[2]);
  double secs = atof(argv[3]);
  const char* path = argc > 4 ? argv[4] : "/ping";
  std::vector<std::vector<double>> lat(conns);
  std::vector<std::thread> ts;
  auto end = Clock::now() + std::chrono::duration<double>(secs);
  for (int c = 0; c < conns; c++)
    ts.emplace_back([&, c] {
      int fd = -1;
      int reconnects = 0;
      auto dial = [&] {
        if (fd >= 0) close(fd);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(0x7f000001);
        if (connect(fd, (sockaddr*)&a, sizeof a)) {
          perror("connect");
          exit(1);
        }
      };
      dial();
      std::string req = std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
      char buf[65536];
      while (Clock::now() < end) {
        auto t0 = Clock::now();
      retry:
        if (write(fd, req.data(), req.size()) != (ssize_t)req.size()) {
          dial();
          goto retry;
        }
        std::string got;
        size_t need = 0;
        for (;;) {
          ssize_t n = read(fd, buf, sizeof buf);
          if (n <= 0) {
            if (got.empty() && ++reconnects < 1000000) {
              dial();
              goto retry;
            }
            fprintf(stderr, "closed\n");
            exit(3);
          }
          got.append(buf, n);
          size_t h = got.find("\r\n\r\n");
          if (h == std::string::npos) continue;
          if (!need) {
            const char* cl = strcasestr(got.c_str(), "content-length:");
            need = h + 4 + (cl ? atoi(cl + 15) : 0);
          }
          if (got.size() >= need) break;
        }
        lat[c].push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
      close(fd);
    });
  for (auto& t : ts) t.join();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  printf("requests/s %.0f  p50 %.0f us  p99 %.0f us  (n=%zu)\n", all.size() / secs,
         all[all.size() / 2], all[all.size() * 99 / 100], all.size());
}
