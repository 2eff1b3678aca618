// http_parser (libhttp-parser-dev) driven by a standalone-Asio io_context, one thread.
#include <http_parser.h>

#include <asio.hpp>
#include <memory>
#include <string>
using asio::ip::tcp;
struct Conn : std::enable_shared_from_this<Conn> {
  tcp::socket s;
  http_parser p;
  char buf[16384];
  std::string out;
  std::string url;
  bool done = false;
  explicit Conn(tcp::socket so) : s(std::move(so)) {
    http_parser_init(&p, HTTP_REQUEST);
    p.data = this;
  }
  static http_parser_settings& S() {
    static http_parser_settings st = [] {
      http_parser_settings x;
      http_parser_settings_init(&x);
      x.on_url = [](http_parser* p, const char* a, size_t n) {
        static_cast<Conn*>(p->data)->url.append(a, n);
        return 0;
      };
      x.on_message_complete = [](http_parser* p) {
        auto* c = static_cast<Conn*>(p->data);
        c->out +=
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            "11\r\n\r\n{\"ok\":true}";
        c->url.clear();
        return 0;
      };
      return x;
    }();
    return st;
  }
  void Read() {
    s.async_read_some(asio::buffer(buf), [self = shared_from_this()](std::error_code ec, size_t n) {
      if (ec) return;
      size_t k = http_parser_execute(&self->p, &S(), self->buf, n);
      if (k != n) return;
      if (self->out.empty()) return self->Read();
      asio::async_write(self->s, asio::buffer(self->out), [self](std::error_code ec2, size_t) {
        self->out.clear();
        if (!ec2) self->Read();
      });
    });
  }
};
void Accept(tcp::acceptor& a) {
  a.async_accept([&a](std::error_code ec, tcp::socket s) {
    if (!ec) std::make_shared<Conn>(std::move(s))->Read();
    Accept(a);
  });
}
int main(int, char** argv) {
  asio::io_context io{1};
  tcp::acceptor a(
      io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), (unsigned short)atoi(argv[1])));
  Accept(a);
  io.run();
}
