// HTTP/1.1 connections on the node's own I/O threads (docs/api.md).
//
// One listening socket per bind address, on the first I/O thread's io_context (not
// SO_REUSEPORT: a second process's listener could otherwise share the port, and an HTTP port
// that happens to be some RESP port must fail to bind, not split its connections). Accepted
// sockets are handed round-robin to the I/O threads; a connection then lives on its thread, with
// its own server::Session, as a RESP connection does.
//
// Framing is Debian's http-parser (libhttp-parser-dev). A connection handles one request at a
// time: on a complete message the parser is paused, the request runs, its response is written,
// and only then are the bytes after it parsed (pipelined requests wait their turn, so a client
// cannot queue work faster than it reads answers). Every limit answers with JSON and closes:
// request line + headers over Limits::max_header_bytes -> 431, a body over proto-max-bulk-len
// -> 413, a request not complete within read_timeout_ms -> 408, too many connections -> 503.

#include <http_parser.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <asio.hpp>
#include <atomic>
#include <cerrno>
#include <climits>
#include <functional>
#include <memory>
#include <optional>
#include <unordered_map>

#include "http/http.h"
#include "http/internal/api.h"

namespace floe::http {

namespace {

using asio::ip::tcp;
using internal::EqualsIgnoreCase;

constexpr size_t kReadChunk = 16 * 1024;

std::string Endpoint(const tcp::endpoint& ep) {
  const std::string host = ep.address().to_string();
  return (ep.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(ep.port());
}

std::string_view Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 507:
      return "Insufficient Storage";
    default:
      return "Error";
  }
}

// A streamed response (r.stream) has no Content-Length: its body follows in chunks, or, to an
// HTTP/1.0 client (`chunked` false), as it is until the connection closes.
std::string Serialize(const internal::Response& r, bool close, bool chunked = false) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + std::string(Reason(r.status)) +
                    "\r\nContent-Type: " + r.content_type + "\r\n";
  if (!r.stream) {
    out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  } else if (chunked) {
    out += "Transfer-Encoding: chunked\r\n";
  }
  out += "Cache-Control: no-store\r\n";
  for (const auto& [name, value] : r.headers) out += name + ": " + value + "\r\n";
  if (close) out += "Connection: close\r\n";
  out += "\r\n";
  out += r.body;
  return out;
}

class HttpFrontEnd;

// One HTTP connection. Owned by its I/O thread.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(HttpFrontEnd* front, int worker, tcp::socket socket);
  void Start();
  void Close();
  // A reply that waited for another node (the session's reply sink posts it here).
  void Deliver(uint64_t ticket, std::string reply);

 private:
  static const http_parser_settings& Settings();
  void Read();
  // Parses what is buffered; answers a complete request or a refused one.
  void Parse();
  void Answer(internal::Response response, bool close);
  // A streamed response's next piece (as a chunk unless the client speaks HTTP/1.0), written;
  // after the last, the response ends as Answer's do.
  void SendPiece(bool close);
  // Room before a piece for its chunk size (16 hex digits at most) and CRLF.
  static constexpr size_t kPieceRoom = 18;
  // A piece being finished off the I/O thread: the stream and the buffer travel with it.
  struct PieceTask {
    decltype(internal::Response::stream) stream;
    std::string piece;
    Result<internal::Response::Piece> made = internal::Response::Piece::kLast;
    void Make();  // on the piece thread (or, the queue full, the I/O thread)
  };
  // Back on the I/O thread with the piece (or the stream's failure).
  void PieceMade(PieceTask* task, bool close);
  // A piece made (out_), or the stream failed: written, or the connection closed.
  void PieceDone(bool close, Result<internal::Response::Piece> made);
  // Writes out_ (a piece after kPieceRoom bytes) as a chunk, the last one unless `more`.
  void WritePiece(bool close, bool more);
  // The response is written whole: the connection closes, or reads the next request.
  void Sent(bool close);
  // Whether `more` body bytes fit under maxmemory with what is used and reserved; if not, the
  // request is refused (507, Redis's OOM text).
  bool BodyFits(uint64_t more);
  void ResetRequest();
  void Arm(int64_t ms);
  // After a response that closes the connection: no more sending, and what the client still
  // sends is read and dropped for a moment before closing, so that closing with unread input
  // (a refused body) does not reset the connection before the client has read the response.
  void Linger();
  void Drain(size_t dropped);
  // The running request missed its deadline: 504, and the connection closes.
  void Abandon();
  // While a request runs nothing is read; this notices a client that closes or resets.
  void WatchPeer();
  // Charges the input and body buffers' capacity to the engine's used memory, as a RESP
  // connection charges its query buffer (so maxmemory sees a client's large body).
  void Charge();
  // The request line and headers count against max_header_bytes; non-zero stops the parser.
  int ChargeHeader(size_t n);
  // Records that the header whose value begins is one the rules read, and whether it came twice.
  void NoteHeader();

  HttpFrontEnd* front_;
  int worker_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  uint64_t timer_generation_ = 0;
  std::unique_ptr<server::Session> session_;
  std::unique_ptr<internal::Commands> commands_;  // the session's commands, run asynchronously
  bool running_ = false;                          // a request runs (its coroutine is alive)
  bool abandoned_ = false;    // the running request was answered 504: its late result is dropped
  size_t running_bytes_ = 0;  // the running request's buffers, still charged (Charge)
  size_t making_bytes_ = 0;   // a piece's buffer, away on the piece thread (Charge)
  http_parser parser_{};
  std::string in_;  // bytes read and not parsed yet
  char buf_[kReadChunk];
  std::string out_;
  size_t out_start_ = 0;  // where out_'s bytes to send begin (a chunk's size is put before it)
  decltype(internal::Response::stream) stream_;  // a streamed response being sent
  bool chunked_ = true;  // the request was HTTP/1.1: a streamed response goes in chunks
  bool reset_ = false;   // Close resets the connection (a streamed answer that failed)
  bool closed_ = false;
  bool writing_ = false;
  bool in_request_ = false;  // a request has begun and is not complete
  bool lingering_ = false;   // Linger()
  size_t charged_ = 0;       // Charge()
  // The request being read.
  internal::Request request_;
  size_t header_bytes_ = 0;
  std::string header_field_;
  bool header_in_value_ = false;
  bool header_is_auth_ = false;
  bool header_is_expect_ = false;
  bool header_is_host_ = false;
  bool header_is_origin_ = false;
  bool header_is_fetch_site_ = false;
  bool header_is_fetch_mode_ = false;
  bool header_is_fetch_dest_ = false;
  // Which of the headers above this request has given (bits), and the first one given twice.
  unsigned headers_seen_ = 0;
  static constexpr unsigned kHostSeen = 1u << 1;  // NoteHeader's bit for Host
  std::string repeated_header_;
  bool bad_header_name_ = false;  // a header's name ended in blanks ("Host : ...")
  std::string expect_;            // the Expect header
  bool expect_continue_ = false;  // Expect: 100-continue
  bool send_continue_ = false;    // ... and the body is accepted: send 100 Continue
  bool complete_ = false;
  int refused_ = 0;  // a limit refused the request: this status, then close
  std::string refusal_;
  std::optional<internal::Response> refused_response_;  // a refusal with its own headers (401)
};

class HttpFrontEnd : public server::FrontEnd, public FrontEndInfo {
 public:
  explicit HttpFrontEnd(Options options) : options_(std::move(options)) {}
  ~HttpFrontEnd() override { CloseAcceptors(); }

  Status Open(server::Engine& engine, std::span<asio::io_context* const> io) override {
    engine_ = &engine;
    io_.assign(io.begin(), io.end());
    internal::CleanUploads(engine.config());
    connections_.resize(io_.size());
    retry_ = std::make_unique<asio::steady_timer>(*io_[0]);
    int port = options_.port;
    for (const std::string& a : options_.bind) {
      std::error_code ec;
      const auto address = asio::ip::make_address(a == "localhost" ? "127.0.0.1" : a, ec);
      if (ec) return Status::InvalidArgument("bad http-bind address '" + a + "': " + ec.message());
      auto acc = std::make_unique<tcp::acceptor>(*io_[0]);
      const tcp::endpoint ep(address, static_cast<uint16_t>(port));
      acc->open(ep.protocol(), ec);
      if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec) acc->bind(ep, ec);
      if (!ec) acc->listen(511, ec);
      if (ec) {
        const std::string what =
            "cannot listen for HTTP on " + a + ":" + std::to_string(port) + ": " + ec.message();
        CloseAcceptors();
        if (options_.required) return Status::Unavailable(what);
        FLOE_LOG_WARN("{} (HTTP is off; give --http-port to choose a port)", what);
        return Status::OK();
      }
      if (port == 0) port = acc->local_endpoint().port();
      acceptors_.push_back(std::move(acc));
    }
    port_.store(port);
    for (auto& a : acceptors_) Accept(a.get());
    FLOE_LOG_INFO("HTTP API on port {} (docs/api.md)", port);
    return Status::OK();
  }

  void Close() override {
    CloseAcceptors();
    for (auto& per_worker : connections_) {
      std::vector<std::shared_ptr<Connection>> open;
      for (auto& [ptr, weak] : per_worker) {
        if (auto c = weak.lock()) open.push_back(c);
      }
      for (auto& c : open) c->Close();
    }
  }

  int bound_port() const override { return port_.load(); }

  server::Engine& engine() { return *engine_; }
  asio::io_context& io(int worker) { return *io_[static_cast<size_t>(worker)]; }
  const Limits& limits() const { return options_.limits; }
  // Only the worker's own thread touches its map (and Close, once the threads stopped).
  std::unordered_map<Connection*, std::weak_ptr<Connection>>& connections(int worker) {
    return connections_[static_cast<size_t>(worker)];
  }
  void Released() { open_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  void CloseAcceptors() {
    if (retry_) retry_->cancel();
    std::error_code ec;
    for (auto& a : acceptors_) a->close(ec);
    acceptors_.clear();
  }

  void Accept(tcp::acceptor* acceptor) {
    const int worker = static_cast<int>(next_worker_++ % io_.size());
    // Accepted on the first thread's io_context, then handed over as a bare descriptor: each
    // io_context runs without the reactor's per-socket locks (ASIO_CONCURRENCY_HINT_UNSAFE_IO,
    // listener.cc), so a socket must be registered by the thread that runs it (accepting
    // straight onto another thread's io_context raced in its reactor, found by TSan).
    acceptor->async_accept([this, acceptor, worker](std::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
      if (!ec) {
        // relaxed: a count compared against a limit; one connection more or less is harmless.
        const size_t open = open_.fetch_add(1, std::memory_order_relaxed);
        if (open >= options_.limits.max_connections ||
            static_cast<int64_t>(engine_->ClientCount()) >= engine_->maxclients()) {
          open_.fetch_sub(1, std::memory_order_relaxed);
          const std::string refusal =
              Serialize(internal::Error(503, "ERR max number of clients reached"), /*close=*/true);
          std::error_code ignored;
          asio::write(socket, asio::buffer(refusal), ignored);
          socket.close(ignored);
        } else {
          std::error_code rec;
          const tcp protocol = socket.local_endpoint(rec).protocol();
          const int fd = rec ? -1 : socket.release(rec);
          if (rec || fd < 0) {
            open_.fetch_sub(1, std::memory_order_relaxed);
            socket.close(rec);
          } else {
            asio::post(io(worker), [this, worker, protocol, fd] {
              tcp::socket mine(io(worker));
              std::error_code aec;
              mine.assign(protocol, fd, aec);
              if (aec) {
                ::close(fd);
                open_.fetch_sub(1, std::memory_order_relaxed);
                return;
              }
              std::make_shared<Connection>(this, worker, std::move(mine))->Start();
            });
          }
        }
      } else {
        // Out of descriptors the failing accept would fail again at once: wait a little
        // (as the RESP listener does) instead of spinning, and log once a second at most.
        const auto now = static_cast<int64_t>(NowMicros() / 1000);
        if (now - accept_error_logged_ms_ >= 1000) {
          accept_error_logged_ms_ = now;
          FLOE_LOG_WARN("HTTP accept failed: {} (retrying every 100 ms)", ec.message());
        }
        retry_->expires_after(std::chrono::milliseconds(100));
        retry_->async_wait([this, acceptor](std::error_code tec) {
          if (!tec && acceptor->is_open()) Accept(acceptor);
        });
        return;
      }
      Accept(acceptor);
    });
  }

  Options options_;
  server::Engine* engine_ = nullptr;
  std::vector<asio::io_context*> io_;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;
  std::vector<std::unordered_map<Connection*, std::weak_ptr<Connection>>> connections_;
  size_t next_worker_ = 0;                     // the first I/O thread's: it runs every accept
  std::unique_ptr<asio::steady_timer> retry_;  // on the first I/O thread, as the acceptors
  int64_t accept_error_logged_ms_ = 0;
  std::atomic<size_t> open_{0};
  std::atomic<int> port_{0};
};

Connection::Connection(HttpFrontEnd* front, int worker, tcp::socket socket)
    : front_(front), worker_(worker), socket_(std::move(socket)), timer_(front->io(worker)) {}

void Connection::Start() {
  std::error_code ec;
  socket_.set_option(tcp::no_delay(true), ec);
  session_ = std::make_unique<server::Session>(&front_->engine(), worker_,
                                               Endpoint(socket_.remote_endpoint(ec)),
                                               Endpoint(socket_.local_endpoint(ec)));
  {
    MutexLock lock(&session_->state().mu);
    std::weak_ptr<Connection> weak = weak_from_this();
    asio::io_context* io = &front_->io(worker_);
    session_->state().closer = [weak, io] {  // CLIENT KILL
      asio::post(*io, [weak] {
        if (auto c = weak.lock()) c->Close();
      });
    };
  }
  // In a cluster a command may wait for another node: its reply comes through the sink, and
  // the I/O thread serves its other connections meanwhile (Commands).
  commands_ =
      std::make_unique<internal::Commands>(session_.get(), front_->io(worker_).get_executor());
  {
    std::weak_ptr<Connection> weak = weak_from_this();
    asio::io_context* io = &front_->io(worker_);
    session_->set_reply_sink([weak, io](uint64_t ticket, std::string reply) {
      asio::post(*io, [weak, ticket, reply = std::move(reply)]() mutable {
        if (auto c = weak.lock()) c->Deliver(ticket, std::move(reply));
      });
    });
  }
  front_->connections(worker_).emplace(this, weak_from_this());
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
  ResetRequest();
  Arm(front_->limits().idle_timeout_ms);
  Read();
}

void Connection::Close() {
  if (closed_) return;
  closed_ = true;
  std::error_code ec;
  if (reset_) {
    socket_.set_option(asio::socket_base::linger(true, 0), ec);  // close() sends RST
  } else {
    socket_.shutdown(tcp::socket::shutdown_both, ec);
  }
  socket_.close(ec);
  timer_.cancel();
  front_->connections(worker_).erase(this);
  front_->Released();
  in_ = std::string();
  request_ = {};
  stream_ = nullptr;  // a streamed response's frame is let go with the client
  front_->engine().ChargeClientBuffers(-static_cast<int64_t>(charged_));
  charged_ = 0;
  if (commands_) commands_->Detach();  // a request waiting for another node ends
  if (session_) {
    {
      MutexLock lock(&session_->state().mu);
      session_->state().closer = nullptr;
    }
    session_.reset();  // unregisters the client
  }
}

void Connection::Abandon() {
  abandoned_ = true;
  commands_->Detach();  // the coroutine ends with the connection-closed reply, dropped
  Answer(internal::Error(504, "ERR the request was not answered within http-request-timeout (" +
                                  std::to_string(front_->limits().read_timeout_ms) + " ms)"),
         true);
}

void Connection::WatchPeer() {
  socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](std::error_code ec) {
    if (ec || self->closed_ || !self->running_ || self->abandoned_) return;
    char byte;
    const ssize_t n =
        ::recv(self->socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == 0) return self->Close();  // the client left: nobody waits for the answer
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return self->Close();
    if (n < 0) return self->WatchPeer();
    // A pipelined request's bytes: they wait in the socket until this one is answered, and
    // the deadline still bounds the wait.
  });
}

void Connection::Deliver(uint64_t ticket, std::string reply) {
  if (closed_) return;
  commands_->Deliver(ticket, std::move(reply));
}

bool Connection::BodyFits(uint64_t more) {
  server::Engine& engine = front_->engine();
  const int64_t limit = engine.maxmemory();
  if (limit <= 0) return true;
  const int64_t used = engine.UsedMemoryNow() + engine.reserved_memory();
  if (more <= static_cast<uint64_t>(limit) && used <= limit - static_cast<int64_t>(more)) {
    return true;
  }
  refused_ = 507;
  refusal_ = "OOM command not allowed when used memory > 'maxmemory'.";
  return false;
}

void Connection::Charge() {
  if (closed_) return;
  const size_t now =
      in_.capacity() + request_.body.capacity() + running_bytes_ + out_.capacity() + making_bytes_;
  if (now == charged_) return;
  front_->engine().ChargeClientBuffers(static_cast<int64_t>(now) - static_cast<int64_t>(charged_));
  charged_ = now;
}

void Connection::Arm(int64_t ms) {
  const uint64_t generation = ++timer_generation_;
  timer_.expires_after(std::chrono::milliseconds(ms));
  timer_.async_wait([self = shared_from_this(), generation](std::error_code ec) {
    if (ec || self->closed_ || generation != self->timer_generation_) return;
    if (self->running_) return self->Abandon();
    if (self->in_request_ && !self->writing_ && !self->lingering_) {
      return self->Answer(internal::Error(408, "ERR the request did not arrive in time"), true);
    }
    self->Close();  // idle, or a client that does not read its response
  });
}

void Connection::ResetRequest() {
  request_ = {};
  header_bytes_ = 0;
  header_field_.clear();
  header_in_value_ = false;
  header_is_auth_ = false;
  header_is_expect_ = false;
  header_is_host_ = false;
  header_is_origin_ = false;
  header_is_fetch_site_ = false;
  header_is_fetch_mode_ = false;
  header_is_fetch_dest_ = false;
  headers_seen_ = 0;
  repeated_header_.clear();
  bad_header_name_ = false;
  expect_.clear();
  expect_continue_ = false;
  send_continue_ = false;
  complete_ = false;
  in_request_ = false;
}

void Connection::NoteHeader() {
  const bool is[] = {header_is_auth_,       header_is_host_,       header_is_origin_,
                     header_is_fetch_site_, header_is_fetch_mode_, header_is_fetch_dest_};
  static constexpr const char* kNames[] = {"authorization",  "host",           "origin",
                                           "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest"};
  for (unsigned i = 0; i < std::size(is); i++) {
    if (!is[i]) continue;
    if (((headers_seen_ >> i) & 1u) && repeated_header_.empty()) repeated_header_ = kNames[i];
    headers_seen_ |= 1u << i;
  }
}

int Connection::ChargeHeader(size_t n) {
  header_bytes_ += n;
  if (header_bytes_ <= front_->limits().max_header_bytes) return 0;
  refused_ = 431;
  refusal_ = "ERR the request line and headers are larger than " +
             std::to_string(front_->limits().max_header_bytes) + " bytes";
  return 1;
}

const http_parser_settings& Connection::Settings() {
  static const http_parser_settings settings = [] {
    http_parser_settings s;
    http_parser_settings_init(&s);
    s.on_message_begin = [](http_parser* p) {
      Connection* c = static_cast<Connection*>(p->data);
      c->in_request_ = true;
      c->Arm(c->front_->limits().read_timeout_ms);
      return 0;
    };
    s.on_url = [](http_parser* p, const char* at, size_t n) {
      Connection* c = static_cast<Connection*>(p->data);
      c->request_.url.append(at, n);
      return c->ChargeHeader(n);
    };
    s.on_header_field = [](http_parser* p, const char* at, size_t n) {
      Connection* c = static_cast<Connection*>(p->data);
      if (c->header_in_value_) {
        c->header_field_.clear();
        c->header_in_value_ = false;
      }
      c->header_field_.append(at, n);
      return c->ChargeHeader(n);
    };
    s.on_header_value = [](http_parser* p, const char* at, size_t n) {
      Connection* c = static_cast<Connection*>(p->data);
      if (!c->header_in_value_) {
        c->header_in_value_ = true;
        c->header_is_auth_ = EqualsIgnoreCase(c->header_field_, "authorization");
        c->header_is_expect_ = EqualsIgnoreCase(c->header_field_, "expect");
        c->header_is_host_ = EqualsIgnoreCase(c->header_field_, "host");
        c->header_is_origin_ = EqualsIgnoreCase(c->header_field_, "origin");
        c->header_is_fetch_site_ = EqualsIgnoreCase(c->header_field_, "sec-fetch-site");
        c->header_is_fetch_mode_ = EqualsIgnoreCase(c->header_field_, "sec-fetch-mode");
        c->header_is_fetch_dest_ = EqualsIgnoreCase(c->header_field_, "sec-fetch-dest");
        c->NoteHeader();
        // "Host : evil" is not a Host header to the rules, but may be one to a proxy that
        // trims it: a name that ends in blanks is refused (RFC 9112 §5.1).
        if (!c->header_field_.empty() &&
            (c->header_field_.back() == ' ' || c->header_field_.back() == '\t') &&
            c->repeated_header_.empty()) {
          c->bad_header_name_ = true;
        }
      }
      if (c->header_is_auth_) c->request_.authorization.append(at, n);
      if (c->header_is_host_) c->request_.host.append(at, n);
      if (c->header_is_origin_) c->request_.origin.append(at, n);
      if (c->header_is_fetch_site_) c->request_.fetch_site.append(at, n);
      if (c->header_is_fetch_mode_) c->request_.fetch_mode.append(at, n);
      if (c->header_is_fetch_dest_) c->request_.fetch_dest.append(at, n);
      if (c->header_is_expect_) {
        c->expect_.append(at, n);
        c->expect_continue_ = EqualsIgnoreCase(c->expect_, "100-continue");
      }
      return c->ChargeHeader(n);
    };
    s.on_headers_complete = [](http_parser* p) {
      Connection* c = static_cast<Connection*>(p->data);
      c->request_.method = http_method_str(static_cast<http_method>(p->method));
      // Two copies of a header the rules below read would be judged as one joined value.
      if (!c->repeated_header_.empty()) {
        c->refused_ = 400;
        c->refusal_ = "ERR repeated '" + c->repeated_header_ + "' header";
        return -1;
      }
      if (c->bad_header_name_) {
        c->refused_ = 400;
        c->refusal_ = "ERR whitespace between a header's name and its colon";
        return -1;
      }
      // X2 judges the Host: an HTTP/1.1 request must give one (RFC 9112 §3.2).
      if (p->http_major == 1 && p->http_minor >= 1 && (c->headers_seen_ & kHostSeen) == 0) {
        c->refused_ = 400;
        c->refusal_ = "ERR an HTTP/1.1 request needs a Host header";
        return -1;
      }
      // X1-X3 before the password and before any body is read: another site's page cannot
      // make the node hold a body only to refuse it.
      if (std::optional<internal::Response> refused =
              internal::RefuseCrossSite(c->front_->engine(), c->request_)) {
        c->refused_response_ = std::move(*refused);
        return -1;
      }
      // Without the password nothing more is read: an unauthenticated client cannot make the
      // node buffer a body (as RESP limits requests before AUTH).
      if (std::optional<internal::Response> refused =
              internal::Refuse(c->front_->engine(), c->request_.authorization)) {
        c->refused_response_ = std::move(*refused);
        return -1;
      }
      const auto limit = static_cast<uint64_t>(c->front_->engine().proto_max_bulk_len());
      // content_length is ULLONG_MAX when the request has none (chunked or no body).
      if (p->content_length != ULLONG_MAX && p->content_length > limit) {
        c->refused_ = 413;
        c->refusal_ = "ERR the request body is larger than proto-max-bulk-len (" +
                      std::to_string(limit) + " bytes)";
        return -1;
      }
      if (p->content_length != ULLONG_MAX && !c->BodyFits(p->content_length)) return -1;
      // Reserved only up to what a client has no cheap way to make us hold without sending.
      constexpr uint64_t kMaxReserve = uint64_t{1} << 20;
      if (p->content_length != ULLONG_MAX) {
        c->request_.body.reserve(std::min(p->content_length, kMaxReserve));
      }
      // A client waiting for "100 Continue" before its body (curl does, for large ones) gets it
      // now that the body's size is accepted.
      c->send_continue_ = c->expect_continue_ && p->content_length != 0;
      return 0;
    };
    s.on_body = [](http_parser* p, const char* at, size_t n) {
      Connection* c = static_cast<Connection*>(p->data);
      const auto limit = static_cast<uint64_t>(c->front_->engine().proto_max_bulk_len());
      if (c->request_.body.size() + n > limit) {  // chunked bodies are counted as they come
        c->refused_ = 413;
        c->refusal_ = "ERR the request body is larger than proto-max-bulk-len (" +
                      std::to_string(limit) + " bytes)";
        return 1;
      }
      // Bodies count as client buffers (Charge); one that would pass maxmemory is refused as
      // it arrives, so concurrent uploads cannot hold more than maxmemory between them.
      if (!c->BodyFits(n)) return 1;
      c->request_.body.append(at, n);
      return 0;
    };
    s.on_chunk_header = [](http_parser* p) {
      Connection* c = static_cast<Connection*>(p->data);
      const auto limit = static_cast<uint64_t>(c->front_->engine().proto_max_bulk_len());
      // A chunk's announced size (content_length here) past the limit is refused at once,
      // rather than waited for.
      if (p->content_length > limit || c->request_.body.size() + p->content_length > limit) {
        c->refused_ = 413;
        c->refusal_ = "ERR the request body is larger than proto-max-bulk-len (" +
                      std::to_string(limit) + " bytes)";
        return -1;
      }
      return 0;
    };
    s.on_message_complete = [](http_parser* p) {
      static_cast<Connection*>(p->data)->complete_ = true;
      http_parser_pause(p, 1);  // one request at a time
      return 0;
    };
    return s;
  }();
  return settings;
}

void Connection::Read() {
  if (closed_) return;
  socket_.async_read_some(asio::buffer(buf_),
                          [self = shared_from_this()](std::error_code ec, size_t n) {
                            if (self->lingering_) return;  // Drain reads now
                            if (ec || self->closed_) return self->Close();
                            self->in_.append(self->buf_, n);
                            self->Parse();
                            self->Charge();
                          });
}

void Connection::Parse() {
  if (closed_ || writing_ || running_) return;
  const size_t used = http_parser_execute(&parser_, &Settings(), in_.data(), in_.size());
  in_.erase(0, used);
  const auto err = static_cast<http_errno>(parser_.http_errno);
  if (refused_response_) return Answer(std::move(*refused_response_), true);
  if (refused_ != 0) return Answer(internal::Error(refused_, refusal_), true);
  if (err == HPE_HEADER_OVERFLOW) {
    return Answer(internal::Error(431, "ERR the request headers are too large"), true);
  }
  if (complete_) {
    http_parser_pause(&parser_, 0);
    const bool keep_alive = http_should_keep_alive(&parser_) != 0;
    chunked_ = parser_.http_major > 1 || (parser_.http_major == 1 && parser_.http_minor >= 1);
    running_ = true;
    // The coroutine owns the request; its buffers stay charged until it ends.
    running_bytes_ = request_.body.capacity() + request_.url.capacity();
    asio::co_spawn(
        front_->io(worker_), internal::Handle(front_->engine(), *commands_, std::move(request_)),
        [self = shared_from_this(), keep_alive](std::exception_ptr failed,
                                                internal::Response response) {
          self->running_ = false;
          self->running_bytes_ = 0;
          self->Charge();
          if (self->closed_ || self->abandoned_) return;
          if (failed) response = internal::Error(500, "ERR the request failed");
          self->Answer(std::move(response), !keep_alive || self->session_->close_requested());
        });
    // A request waiting for another node is timed like one arriving, and ends with its client.
    Arm(front_->limits().read_timeout_ms);
    WatchPeer();
    return;
  }
  if (err != HPE_OK) {
    return Answer(
        internal::Error(400, std::string("ERR bad HTTP request: ") + http_errno_description(err)),
        true);
  }
  if (send_continue_) {
    send_continue_ = false;
    writing_ = true;
    out_ = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this()](std::error_code ec, size_t) {
                        self->writing_ = false;
                        if (ec || self->closed_) return self->Close();
                        self->out_.clear();
                        if (!self->in_.empty()) return self->Parse();
                        self->Read();
                      });
    return;
  }
  Read();
}

void Connection::Answer(internal::Response response, bool close) {
  if (closed_) return;
  if (response.body.size() > front_->limits().max_answer_bytes) {
    response = internal::Error(
        507, "ERR the answer would be " + std::to_string(response.body.size()) +
                 " bytes, more than HTTP answers may be (" +
                 std::to_string(front_->limits().max_answer_bytes) + "): read it over RESP");
  }
  if (response.stream) {
    // An HTTP/1.0 client cannot read chunks: the body goes as it is and the connection closes.
    if (!chunked_) close = true;
    out_ = Serialize(response, close, chunked_);
    stream_ = std::move(response.stream);
    // A small kernel send buffer: the socket turns writable again once about half of what the
    // kernel holds has gone, so with the default (autotuned to megabytes) a reader taking
    // 100 KB/s waited past http-request-timeout for a 64 KiB piece to be taken. It also bounds
    // what each download holds outside every charge.
    std::error_code ignored;
    socket_.set_option(asio::socket_base::send_buffer_size(internal::kStreamSendBuffer), ignored);
    Charge();
    writing_ = true;
    Arm(front_->limits().read_timeout_ms);  // as each piece's (SendPiece)
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this(), close](std::error_code ec, size_t) {
                        if (ec || self->closed_) return self->Close();
                        self->SendPiece(close);
                      });
    return;
  }
  out_ = Serialize(response, close);
  Charge();  // the answer counts as the client's buffer until it is written
  writing_ = true;
  Arm(front_->limits().idle_timeout_ms);  // a client that never reads its answer is closed
  asio::async_write(socket_, asio::buffer(out_),
                    [self = shared_from_this(), close](std::error_code ec, size_t) {
                      if (ec || self->closed_) return self->Close();
                      self->Sent(close);
                    });
}

void Connection::SendPiece(bool close) {
  if (closed_) return;
  // A wide line's buffer is not kept (and charged) for the rest of the download.
  if (out_.capacity() > 4 * internal::kStreamPiece) std::string().swap(out_);
  out_.assign(kPieceRoom, ' ');
  if (!stream_) return WritePiece(close, false);
  Result<internal::Response::Piece> made = stream_(&out_, /*on_io_thread=*/true);
  if (!made.ok() || *made != internal::Response::Piece::kWide) {
    return PieceDone(close, std::move(made));
  }
  // A line that may be wider than kInlineLine: the piece is finished on the engine's piece
  // thread (docs/api.md, "Made off the I/O thread"), so a row of many megabytes does not hold
  // this thread's other clients. The stream and the buffer go with the task and come back with
  // the piece; meanwhile the timeout is paused (making it is not the client's delay) and
  // nothing else runs on this connection (writing_ stays set).
  auto task = std::make_shared<PieceTask>();
  task->stream = std::move(stream_);
  stream_ = nullptr;
  task->piece = std::move(out_);
  out_.clear();
  making_bytes_ = task->piece.capacity();  // still the client's buffer while it is away
  ++timer_generation_;
  timer_.cancel();
  asio::io_context& io = front_->io(worker_);
  const bool posted =
      front_->engine().PostPiece([self = shared_from_this(), task, close, &io]() mutable {
        task->Make();
        // The handler takes the only references: the connection is let go on its own thread.
        asio::post(io, [self = std::move(self), task = std::move(task), close] {
          self->PieceMade(task.get(), close);
        });
      });
  if (posted) return;
  // 64 pieces wait: made here, as before.
  task->Make();
  PieceMade(task.get(), close);
}

void Connection::PieceTask::Make() {
  // Whatever the stream throws (an allocation for a wide row) comes back as its failure, so the
  // connection is closed (and reset) on its own thread, not dropped with the task.
  try {
    made = stream(&piece, /*on_io_thread=*/false);
  } catch (const std::exception& e) {
    made = Status::ResourceExhausted(std::string("making a piece failed: ") + e.what());
  }
}

void Connection::PieceMade(PieceTask* task, bool close) {
  making_bytes_ = 0;
  if (closed_) return;  // the client went meanwhile: the piece and the frame are let go
  stream_ = std::move(task->stream);
  task->stream = nullptr;
  out_ = std::move(task->piece);
  PieceDone(close, std::move(task->made));
}

void Connection::PieceDone(bool close, Result<internal::Response::Piece> made) {
  if (!made.ok()) {
    // Nothing can tell the client after the 200 but an incomplete body: the connection
    // closes without the last chunk.
    // Without chunks (HTTP/1.0) the body ends where the connection does, so a plain close
    // would pass the truncated body for a whole one: it is reset instead (no FIN first).
    FLOE_LOG_WARN("HTTP: a streamed answer ended early: {}", made.status().message());
    reset_ = true;
    return Close();
  }
  const bool more = *made == internal::Response::Piece::kMore;
  if (!more) stream_ = nullptr;  // the frame is let go as soon as its last piece is made
  WritePiece(close, more);
}

void Connection::WritePiece(bool close, bool more) {
  const size_t n = out_.size() - kPieceRoom;
  out_start_ = kPieceRoom;
  if (chunked_) {
    if (n > 0) {
      static constexpr char kHex[] = "0123456789abcdef";
      out_[--out_start_] = '\n';
      out_[--out_start_] = '\r';
      size_t v = n;
      do {
        out_[--out_start_] = kHex[v & 15];
        v >>= 4;
      } while (v != 0);
      out_.append("\r\n");
    }
    if (!more) out_.append("0\r\n\r\n");  // the last chunk, and no trailers
  }
  Charge();  // the piece counts as the client's buffer until it is written
  // Each piece must be taken within http-request-timeout: a client that stops reading is
  // closed, and the frame it pinned let go.
  Arm(front_->limits().read_timeout_ms);
  asio::async_write(socket_, asio::buffer(out_.data() + out_start_, out_.size() - out_start_),
                    [self = shared_from_this(), close, more](std::error_code ec, size_t) {
                      if (ec || self->closed_) return self->Close();
                      if (more) return self->SendPiece(close);
                      self->out_start_ = 0;
                      self->Sent(close);
                    });
}

void Connection::Sent(bool close) {
  writing_ = false;
  if (close) return Linger();
  std::string().swap(out_);
  ResetRequest();
  if (in_.empty()) std::string().swap(in_);
  Charge();
  Arm(front_->limits().idle_timeout_ms);
  if (!in_.empty()) return Parse();  // a pipelined request
  Read();
}

void Connection::Linger() {
  constexpr int64_t kLingerMs = 1000;
  lingering_ = true;
  // A refused body goes now, not when the connection closes: it is charged until then.
  std::string().swap(request_.body);
  std::string().swap(in_);
  Charge();
  std::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_send, ec);
  if (ec) return Close();
  Arm(kLingerMs);
  Drain(0);
}

void Connection::Drain(size_t dropped) {
  constexpr size_t kMaxDropped = size_t{1} << 20;
  if (closed_ || dropped > kMaxDropped) return Close();
  socket_.async_read_some(asio::buffer(buf_),
                          [self = shared_from_this(), dropped](std::error_code ec, size_t n) {
                            if (ec || self->closed_) return self->Close();
                            self->Drain(dropped + n);
                          });
}

}  // namespace

std::optional<Options> ServeOptions(const server::Config& config) {
  int port = config.http_port;
  if (port == -1) {
    if (config.port == 0 || config.port > 65535 - 1000) {
      FLOE_LOG_WARN(
          "HTTP is off: the default HTTP port is port + 1000, and {} has none (give "
          "--http-port <port> to serve the HTTP API, or --http-port 0 to turn it off quietly)",
          config.port == 0 ? std::string("a random port (--port 0)")
                           : "port " + std::to_string(config.port));
      return std::nullopt;
    }
    port = config.port + 1000;
  }
  if (port == 0) return std::nullopt;
  return Options{.bind = server::BindAddresses(config.http_bind),
                 .port = port,
                 .required = config.http_port != -1,
                 .limits = {.read_timeout_ms = config.http_request_timeout,
                            .idle_timeout_ms = config.http_idle_timeout}};
}

const FrontEndInfo* Attach(server::Server& server, Options options) {
  auto front = std::make_unique<HttpFrontEnd>(std::move(options));
  const FrontEndInfo* info = front.get();
  server.AddFrontEnd(std::move(front));
  return info;
}

}  // namespace floe::http
