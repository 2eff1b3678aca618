#include <httplib.h>
int main(int argc, char** argv) {
  httplib::Server s;
  if (argc > 2) s.set_tcp_nodelay(true);  // "nodelay": Nagle off
  s.Get("/ping", [](const httplib::Request&, httplib::Response& r) {
    r.set_content("{\"ok\":true}", "application/json");
  });
  s.listen("127.0.0.1", atoi(argv[1]));
}
