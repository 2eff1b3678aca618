// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>: first.
// clang-format off
#include <utility>
#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <memory>
// clang-format on
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;
struct Conn : std::enable_shared_from_this<Conn> {
  tcp::socket s;
  beast::flat_buffer buf;
  http::request<http::string_body> req;
  http::response<http::string_body> res;
  explicit Conn(tcp::socket so) : s(std::move(so)) {}
  void Read() {
    req = {};
    http::async_read(s, buf, req, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;
      self->Answer();
    });
  }
  void Answer() {
    res = http::response<http::string_body>(http::status::ok, req.version());
    res.set(http::field::content_type, "application/json");
    res.body() = "{\"ok\":true}";
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    http::async_write(s, res, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (!ec) self->Read();
    });
  }
};
void Accept(tcp::acceptor& a) {
  a.async_accept([&a](beast::error_code ec, tcp::socket s) {
    if (!ec) std::make_shared<Conn>(std::move(s))->Read();
    Accept(a);
  });
}
int main(int, char** argv) {
  boost::asio::io_context io{1};
  tcp::acceptor a(
      io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), (unsigned short)atoi(argv[1])));
  Accept(a);
  io.run();
}
