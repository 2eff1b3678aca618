#include "client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace floe::app {

namespace {

// Replies larger than this are refused: the tools read small status replies only.
constexpr size_t kMaxReplyBytes = size_t{64} << 20;

}  // namespace

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

Status Client::WaitFor(short events) {
  pollfd p{.fd = fd_, .events = events, .revents = 0};
  for (;;) {
    const int n = ::poll(&p, 1, timeout_ms_);
    if (n > 0) return Status::OK();
    if (n == 0) return Status::Timeout("the node did not answer in time");
    if (errno != EINTR) return Status::Unavailable(std::strerror(errno));
  }
}

Status Client::Connect(const std::string& host, int port, int timeout_ms) {
  timeout_ms_ = timeout_ms;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return Status::InvalidArgument(host + ": " + ::gai_strerror(rc));
  }
  Status last = Status::Unavailable("no address for " + host);
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    fd_ = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd_ < 0) continue;
    if (::connect(fd_, a->ai_addr, a->ai_addrlen) == 0 || errno == EINPROGRESS) {
      int err = 0;
      socklen_t len = sizeof(err);
      last = WaitFor(POLLOUT);
      if (last.ok() && ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
        ::freeaddrinfo(found);
        return Status::OK();
      }
      if (last.ok()) last = Status::Unavailable(std::strerror(err));
    } else {
      last = Status::Unavailable(std::strerror(errno));
    }
    ::close(fd_);
    fd_ = -1;
  }
  ::freeaddrinfo(found);
  return Status::Unavailable(host + ":" + service + ": " + std::string(last.message()));
}

Result<resp::Reply> Client::Call(const std::vector<std::string>& args) {
  if (fd_ < 0) return Status::FailedPrecondition("not connected");
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (const std::string& a : args) {
    out += "$" + std::to_string(a.size()) + "\r\n";
    out += a;
    out += "\r\n";
  }
  for (size_t sent = 0; sent < out.size();) {
    const ssize_t n = ::send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (Status s = WaitFor(POLLOUT); !s.ok()) return s;
    } else {
      return Status::Unavailable(std::string("the connection failed: ") + std::strerror(errno));
    }
  }
  for (;;) {
    if (!in_.empty()) {
      size_t used = 0;
      Result<resp::Reply> reply = resp::ParseReply(in_, &used);
      if (reply.ok()) {
        in_.erase(0, used);
        return reply;
      }
      if (reply.status().code() != StatusCode::kOutOfRange) return reply.status();
    }
    if (in_.size() > kMaxReplyBytes) return Status::ResourceExhausted("the reply is too large");
    if (Status s = WaitFor(POLLIN); !s.ok()) return s;
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      in_.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      return Status::Unavailable("the node closed the connection");
    } else if (errno != EAGAIN && errno != EINTR) {
      return Status::Unavailable(std::string("the connection failed: ") + std::strerror(errno));
    }
  }
}

const resp::Reply* Field(const resp::Reply& map, std::string_view name) {
  for (size_t i = 0; i + 1 < map.elements.size(); i += 2) {
    if (map.elements[i].str == name) return &map.elements[i + 1];
  }
  return nullptr;
}

}  // namespace floe::app
