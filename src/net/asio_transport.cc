// AsioLoop and UdpTcpTransport (docs/rpc.md, "Layers"): UDP for messages that fit one
// datagram, TCP for larger ones. Socket operations run on the loop's thread, except that Send
// writes a datagram directly from its caller's thread, and Poll reads datagrams on its
// caller's, when no faults are injected; the rest of Send and the controls post to the loop.

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <asio.hpp>
#include <cerrno>
#include <deque>
#include <future>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "net/net.h"
#include "wire/wire.h"

namespace floe::net {

// ---------------------------------------------------------------------------------------------
struct AsioLoop::Impl {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::thread thread;
  std::thread::id thread_id;
};

AsioLoop::AsioLoop() : impl_(new Impl) {
  std::promise<void> started;
  impl_->thread = std::thread([this, &started] {
    impl_->thread_id = std::this_thread::get_id();
    started.set_value();
    impl_->io.run();
  });
  started.get_future().wait();
}

AsioLoop::~AsioLoop() {
  impl_->work.reset();
  impl_->io.stop();
  impl_->thread.join();
}

void AsioLoop::Post(std::function<void()> fn) { asio::post(impl_->io, std::move(fn)); }

void AsioLoop::PostAt(uint64_t at_micros, std::function<void()> fn) {
  const uint64_t now = NowMicros();
  auto timer = std::make_shared<asio::steady_timer>(impl_->io);
  timer->expires_after(std::chrono::microseconds(at_micros > now ? at_micros - now : 0));
  timer->async_wait([timer, fn = std::move(fn)](std::error_code ec) {
    if (!ec) fn();
  });
}

void* AsioLoop::io_context() { return &impl_->io; }
bool AsioLoop::InLoopThread() const { return std::this_thread::get_id() == impl_->thread_id; }

// ---------------------------------------------------------------------------------------------
namespace {
using asio::ip::tcp;
using asio::ip::udp;

// A TCP frame: u32 little-endian length, the message, u32 little-endian CRC32C of the
// message. The message goes out in chunks straight from its pieces (never copied), and each
// chunk's CRC is computed just before it is written, so checksumming overlaps the receiver's
// reading instead of delaying the first byte; the receiver checks chunk by chunk as they come.
constexpr size_t kChunk = 1 << 20;
// A frame whose length word has this bit is a greeting (Transport::Trust); lengths are at most
// 2^31 - 1 otherwise (max_message is checked below that).
constexpr uint32_t kGreetingBit = uint32_t{1} << 31;
constexpr size_t kMaxGreeting = 1024;
// A connection no greeting proved is closed this long after it was accepted.
constexpr uint64_t kGreetingDeadlineUs = 5'000'000;
// The most a frame's buffer is reserved at once on a proved connection; beyond, it grows with
// the bytes that came (a proved peer can still be a replayed greeting's holder).
constexpr size_t kMaxReserve = size_t{64} << 20;

struct Frame {
  std::array<char, 4> length{};
  Transport::Bytes message;
  std::array<char, 4> crc_bytes{};
  uint32_t crc = 0;
  int piece = -1;  // -1: the length; 0..2: head, body, tail; 3: the CRC
  size_t offset = 0;
  int64_t corrupt_at = -1;  // fault injection: flip this byte of the message on the wire
  std::string scratch;      // the chunk with that byte flipped
};

void PutLe32(std::array<char, 4>* out, uint32_t v) {
  for (size_t i = 0; i < 4; i++) (*out)[i] = static_cast<char>(v >> (8 * i));
}
uint32_t GetLe32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

// Sends a datagram made of the message's three pieces; false on error.
bool SendDatagram(int fd, const OutMessage& m, const void* addr, size_t addr_len) {
  iovec iov[3] = {{const_cast<char*>(m.head.data()), m.head.size()},
                  {const_cast<char*>(m.body.data()), m.body.size()},
                  {const_cast<char*>(m.tail.data()), m.tail.size()}};
  msghdr msg{};
  msg.msg_name = const_cast<void*>(addr);
  msg.msg_namelen = static_cast<socklen_t>(addr_len);
  msg.msg_iov = iov;
  msg.msg_iovlen = 3;
  return ::sendmsg(fd, &msg, 0) >= 0;
}

}  // namespace

struct UdpTcpTransport::Impl : std::enable_shared_from_this<Impl> {
  // An outgoing TCP connection to one peer, with its queue of framed messages.
  struct Out {
    // Shared with the handlers of operations in flight: closing cancels them, but the socket
    // object must outlive their completion (Asio's composed writes touch it while unwinding).
    std::shared_ptr<tcp::socket> socket;
    enum class State { kIdle, kConnecting, kConnected } state = State::kIdle;
    std::deque<Frame> queue;
    size_t queued_bytes = 0;
    bool writing = false;
    uint64_t retry_at = 0;  // no connection attempt before this (after a failure)
  };
  struct Peer {
    PeerAddress address;
    udp::endpoint udp_endpoint;
    tcp::endpoint tcp_endpoint;
    Out message;
    std::vector<Out> bulk;
    size_t next_bulk = 0;
  };

  AsioLoop* loop;
  asio::io_context& io;
  TransportOptions options;
  udp::socket udp_socket;
  tcp::acceptor acceptor;
  std::map<NodeId, Peer> peers;
  std::set<NodeId> blocked;
  Receiver receiver;
  size_t admit_head = 0;  // loop thread only, as admission and trust
  Admission admission;
  std::mt19937_64 rng;
  TransportStats stats;
  bool closed = false;
  // The direct path for datagrams: Send writes them from the caller's thread when no faults
  // are injected, instead of handing them to the loop (a post wakes the loop thread, which on
  // a small call cost a quarter of the round trip). Guarded by fast_mu: senders hold it shared
  // across the send, so they never wait for each other and Close, which takes it exclusively,
  // cannot pull the socket from under them.
  std::shared_mutex fast_mu;
  bool fast_ok = false;                        // guarded by fast_mu
  std::map<NodeId, udp::endpoint> fast_peers;  // guarded by fast_mu
  // The receiver for Poll (the loop uses `receiver`); guarded by fast_mu, called without it.
  std::shared_ptr<const Receiver> poll_receiver;
  std::vector<char> udp_buffer = std::vector<char>(64 * 1024);
  udp::endpoint udp_from;
  // Incoming connections, each with the peer its greeting proved (0: none yet).
  struct Incoming {
    NodeId trusted = 0;   // the peer its greeting proved (0: none yet)
    bool framed = false;  // a frame has come: a greeting now is refused
    uint64_t accepted_at = 0;
  };
  std::map<std::shared_ptr<tcp::socket>, Incoming> incoming;
  Trust trust;              // loop thread only
  size_t max_incoming = 0;  // options.max_incoming, at most a quarter of the descriptor limit

  Impl(AsioLoop* l, TransportOptions o)
      : loop(l),
        io(*static_cast<asio::io_context*>(l->io_context())),
        options(std::move(o)),
        udp_socket(io),
        acceptor(io),
        rng(options.seed) {}

  Status Bind() {
    std::error_code ec;
    const asio::ip::address addr = asio::ip::make_address(options.bind_host, ec);
    if (ec) return Status::InvalidArgument("bad bind address " + options.bind_host);
    // TCP first (port 0 picks one), then UDP on the same number; retry if UDP's is taken.
    for (int attempt = 0; attempt < 20; attempt++) {
      acceptor = tcp::acceptor(io);
      acceptor.open(addr.is_v6() ? tcp::v6() : tcp::v4(), ec);
      if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) acceptor.bind(tcp::endpoint(addr, options.port), ec);
      if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
      if (ec) return Status::Unavailable("tcp bind " + options.bind_host + ": " + ec.message());
      const uint16_t port = acceptor.local_endpoint().port();
      udp_socket = udp::socket(io);
      udp_socket.open(addr.is_v6() ? udp::v6() : udp::v4(), ec);
      if (!ec) udp_socket.bind(udp::endpoint(addr, port), ec);
      if (!ec) {
        options.port = port;
        udp_socket.non_blocking(true, ec);
        udp_socket.set_option(asio::socket_base::receive_buffer_size(4 << 20), ec);
        udp_socket.set_option(asio::socket_base::send_buffer_size(4 << 20), ec);
        return Status::OK();
      }
      if (options.port != 0) {
        return Status::Unavailable("udp bind " + options.bind_host + ": " + ec.message());
      }
    }
    return Status::Unavailable("no port free for both UDP and TCP");
  }

  void AddPeer(const PeerAddress& p) {
    std::error_code ec;
    const asio::ip::address addr = asio::ip::make_address(p.host, ec);
    if (ec) return;
    if (auto it = peers.find(p.id); it != peers.end() && it->second.address.host == p.host &&
                                    it->second.address.port == p.port) {
      return;  // where it was: its connections stay
    }
    Peer& peer = peers[p.id];
    peer.address = p;
    peer.udp_endpoint = udp::endpoint(addr, p.port);
    peer.tcp_endpoint = tcp::endpoint(addr, p.port);
    peer.bulk.resize(static_cast<size_t>(std::max(1, options.bulk_connections)));
    UpdateFastPath();
    // A moved peer: drop connections to the old address.
    CloseOut(peer.message);
    for (Out& o : peer.bulk) CloseOut(o);
  }

  // Called on the loop thread whenever peers, blocks or faults change.
  void UpdateFastPath() {
    std::unique_lock lock(fast_mu);
    const Faults& f = options.faults;
    fast_ok = !closed && f.drop == 0 && f.duplicate == 0 && f.max_delay_us == 0 && f.corrupt == 0;
    fast_peers.clear();
    for (const auto& [id, peer] : peers) {
      if (blocked.count(id) == 0) fast_peers[id] = peer.udp_endpoint;
    }
  }

  // Sends a datagram from the calling thread; false if the loop must do it.
  bool SendDirect(NodeId to, const OutMessage& message) {
    std::shared_lock lock(fast_mu);
    if (!fast_ok) return false;
    auto it = fast_peers.find(to);
    if (it == fast_peers.end()) return false;
    const bool sent =
        SendDatagram(udp_socket.native_handle(), message, it->second.data(), it->second.size());
    stats.bytes_sent += message.size();
    if (!sent) {
      stats.send_failures++;
    } else {
      stats.udp_sent++;
    }
    return true;
  }

  // Poll: reads what is queued on the UDP socket from the calling thread, each datagram with
  // fast_mu held shared (so Close cannot pull the socket away mid-read), delivered without it
  // (the receiver may Send, which takes it again).
  bool PollDatagrams() {
    thread_local std::vector<char> buffer(64 * 1024);
    bool any = false;
    for (int i = 0; i < 64; i++) {
      std::shared_ptr<const Receiver> deliver;
      ssize_t n;
      {
        std::shared_lock lock(fast_mu);
        if (!fast_ok || !poll_receiver) return any;
        n = ::recv(udp_socket.native_handle(), buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n < 0) return any;  // EAGAIN: nothing waiting
        deliver = poll_receiver;
      }
      any = true;
      stats.udp_received++;
      stats.bytes_received += static_cast<uint64_t>(n);
      (*deliver)(std::string(buffer.data(), static_cast<size_t>(n)), /*checked=*/false);
    }
    return any;
  }

  void CloseOut(Out& o) {
    if (o.socket) {
      std::error_code ec;
      o.socket->close(ec);
    }
    o.socket.reset();
    o.state = Out::State::kIdle;
    o.writing = false;
    stats.send_failures += o.queue.size();
    o.queue.clear();
    o.queued_bytes = 0;
  }

  // One completion per wake-up, then whatever else is queued on the socket (up to a bound, so
  // TCP and timers get their turn): under load a datagram then costs one recvfrom instead of
  // an epoll_wait and a recvfrom.
  void StartReceiving() {
    auto self = shared_from_this();
    udp_socket.async_receive_from(asio::buffer(udp_buffer), udp_from,
                                  [self](std::error_code ec, size_t n) {
                                    if (self->closed) return;
                                    if (!ec) {
                                      self->Deliver(n);
                                      self->Drain();
                                    }
                                    if (ec != asio::error::operation_aborted)
                                      self->StartReceiving();
                                  });
  }

  void Deliver(size_t n) {
    stats.udp_received++;
    stats.bytes_received += n;
    if (receiver) receiver(std::string(udp_buffer.data(), n), /*checked=*/false);
  }

  void Drain() {
    for (int i = 0; i < 64 && !closed; i++) {
      std::error_code ec;
      const size_t n = udp_socket.receive_from(asio::buffer(udp_buffer), udp_from, 0, ec);
      if (ec) return;  // would_block: empty
      Deliver(n);
    }
  }

  void StartAccepting() {
    auto self = shared_from_this();
    auto socket = std::make_shared<tcp::socket>(io);
    acceptor.async_accept(*socket, [self, socket](std::error_code ec) {
      if (self->closed || ec == asio::error::operation_aborted) return;
      if (ec) {
        self->stats.accept_failures++;
        // Out of descriptors or memory: accepting again at once spun a core while it lasted.
        const bool short_of = ec.value() == EMFILE || ec.value() == ENFILE ||
                              ec.value() == ENOBUFS || ec.value() == ENOMEM;
        if (!short_of) return self->StartAccepting();
        self->loop->PostAt(self->loop->NowMicros() + 100'000, [self] {
          if (!self->closed) self->StartAccepting();
        });
        return;
      }
      if (self->incoming.size() >= self->max_incoming && !self->EvictUntrusted()) {
        self->stats.refused_connections++;
        std::error_code ignored;
        socket->close(ignored);
      } else {
        std::error_code ignored;
        socket->set_option(tcp::no_delay(true), ignored);
        socket->set_option(asio::socket_base::keep_alive(true), ignored);
        const uint64_t now = self->loop->NowMicros();
        self->incoming[socket] = Incoming{.accepted_at = now};
        if (self->trust.verify) {
          // A connection no greeting proved within the deadline is closed: idle ones held
          // every place and locked the peers out.
          std::weak_ptr<tcp::socket> weak = socket;
          self->loop->PostAt(now + kGreetingDeadlineUs, [self, weak] {
            auto s = weak.lock();
            if (self->closed || s == nullptr) return;
            auto it = self->incoming.find(s);
            if (it != self->incoming.end() && it->second.trusted == 0 &&
                !self->trust.untrusted_stays) {
              self->stats.ungreeted_closed++;
              self->DropIncoming(s);
            }
          });
        }
        self->ReadFrame(socket, std::make_shared<std::string>());
      }
      self->StartAccepting();
    });
  }

  // At max_incoming: closes the oldest connection no greeting proved, to make room for a new
  // one; false when every connection is a peer's.
  bool EvictUntrusted() {
    if (!trust.verify) return false;  // no greetings: every connection counts
    auto oldest = incoming.end();
    for (auto it = incoming.begin(); it != incoming.end(); ++it) {
      if (it->second.trusted != 0) continue;
      if (oldest == incoming.end() || it->second.accepted_at < oldest->second.accepted_at) {
        oldest = it;
      }
    }
    if (oldest == incoming.end()) return false;
    stats.evicted_connections++;
    std::shared_ptr<tcp::socket> victim = oldest->first;
    DropIncoming(victim);
    return true;
  }

  void BoundPeersConnections(NodeId peer) {
    const size_t most = static_cast<size_t>(std::max(1, options.bulk_connections)) + 2;
    std::vector<std::pair<uint64_t, std::shared_ptr<tcp::socket>>> its;
    for (const auto& [socket, in] : incoming) {
      if (in.trusted == peer) its.emplace_back(in.accepted_at, socket);
    }
    if (its.size() <= most) return;
    std::sort(its.begin(), its.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (size_t i = 0; i + most < its.size(); i++) {
      stats.evicted_connections++;
      DropIncoming(its[i].second);
    }
  }

  void DropIncoming(const std::shared_ptr<tcp::socket>& socket) {
    std::error_code ec;
    socket->close(ec);
    incoming.erase(socket);
  }

  // Reads one frame: the length, checked before anything is allocated, then the message in
  // chunks (each CRC-ed as it arrives, while the sender keeps writing; the buffer grows with
  // them), then the CRC.
  void ReadFrame(std::shared_ptr<tcp::socket> socket, std::shared_ptr<std::string> buf) {
    auto self = shared_from_this();
    auto len = std::make_shared<std::array<char, 4>>();
    asio::async_read(*socket, asio::buffer(*len),
                     [self, socket, buf, len](std::error_code ec, size_t) {
                       if (self->closed) return;
                       if (ec) return self->DropIncoming(socket);
                       const uint32_t word = GetLe32(len->data());
                       auto it = self->incoming.find(socket);
                       if (it == self->incoming.end()) return;
                       const bool first = !it->second.framed;
                       it->second.framed = true;
                       if ((word & kGreetingBit) != 0) {
                         // Only as a connection's first frame.
                         if (!first) {
                           self->stats.refused_greetings++;
                           return self->DropIncoming(socket);
                         }
                         return self->ReadGreeting(socket, word & ~kGreetingBit);
                       }
                       const uint32_t n = word;
                       if (n > self->options.max_message) {
                         self->stats.oversized++;
                         return self->DropIncoming(socket);
                       }
                       // Not reserved up front: the buffer grows with the bytes that came, so
                       // a length announced and never sent holds no memory.
                       buf->clear();
                       const bool asks = self->admission || self->trust.verify;
                       if (!asks || n < self->admit_head) {
                         return self->ReadChunk(socket, buf, n, 0);
                       }
                       self->ReadHead(socket, buf, n);
                     });
  }

  // A greeting (the first frame of a connection a peer opened, marked by kGreetingBit): read
  // whole (it is small), its CRC checked, then verified; a good one makes the connection its
  // peer's, whose frames are then admitted past Trust::untrusted_max.
  void ReadGreeting(std::shared_ptr<tcp::socket> socket, uint32_t n) {
    if (n > kMaxGreeting) {
      stats.oversized++;
      return DropIncoming(socket);
    }
    auto self = shared_from_this();
    auto g = std::make_shared<std::string>(n + 4, '\0');
    asio::async_read(*socket, asio::buffer(g->data(), g->size()),
                     [self, socket, g, n](std::error_code ec, size_t) {
                       if (self->closed) return;
                       if (ec) return self->DropIncoming(socket);
                       const std::string_view greeting(g->data(), n);
                       if (GetLe32(g->data() + n) != wire::Crc32c(greeting)) {
                         self->stats.bad_frames++;
                         return self->DropIncoming(socket);
                       }
                       const NodeId from = self->trust.verify ? self->trust.verify(greeting) : 0;
                       auto it = self->incoming.find(socket);
                       if (it == self->incoming.end()) return;
                       if (from == 0) {
                         // Not (yet) a peer's: closed, so the sender greets again on its
                         // next connection (a member that joined since is known by then).
                         self->stats.refused_greetings++;
                         return self->DropIncoming(socket);
                       }
                       it->second.trusted = from;
                       self->stats.greeted++;
                       // A peer opens one message and options.bulk_connections bulk connections
                       // to us; more proved by it (a crashed host's half-open ones, or
                       // greetings replayed) close from the oldest.
                       self->BoundPeersConnections(from);
                       self->ReadFrame(socket, std::make_shared<std::string>());
                     });
  }

  // The frame's first admit_head bytes, then what the admission allows a frame that starts so
  // (at most Trust::untrusted_max on a connection no greeting proved): one announcing more is
  // dropped with its connection before the rest is read.
  void ReadHead(std::shared_ptr<tcp::socket> socket, std::shared_ptr<std::string> buf,
                uint32_t total) {
    auto self = shared_from_this();
    buf->resize(admit_head);
    asio::async_read(*socket, asio::buffer(buf->data(), buf->size()),
                     [self, socket, buf, total](std::error_code ec, size_t) {
                       if (self->closed) return;
                       if (ec) return self->DropIncoming(socket);
                       auto it = self->incoming.find(socket);
                       const NodeId trusted = it == self->incoming.end() ? 0 : it->second.trusted;
                       size_t allowed = self->admission ? self->admission(*buf, trusted)
                                                        : self->options.max_message;
                       if (self->trust.verify && trusted == 0) {
                         allowed = std::min(allowed, self->trust.untrusted_max);
                       }
                       if (total > allowed) {
                         self->stats.refused_frames++;
                         return self->DropIncoming(socket);
                       }
                       // A peer's (the greeting proved it): the whole frame at once, rather
                       // than growing by doubling and copying.
                       if (trusted != 0) buf->reserve(std::min<size_t>(total, kMaxReserve));
                       self->ReadChunk(socket, buf, total, wire::Crc32c(*buf));
                     });
  }

  void ReadChunk(std::shared_ptr<tcp::socket> socket, std::shared_ptr<std::string> buf,
                 uint32_t total, uint32_t crc) {
    auto self = shared_from_this();
    if (buf->size() == total) {
      auto trailer = std::make_shared<std::array<char, 4>>();
      asio::async_read(*socket, asio::buffer(*trailer),
                       [self, socket, buf, trailer, crc](std::error_code ec, size_t) {
                         if (self->closed) return;
                         if (ec) return self->DropIncoming(socket);
                         if (GetLe32(trailer->data()) != crc) {
                           // The stream can no longer be trusted to be framed.
                           self->stats.bad_frames++;
                           return self->DropIncoming(socket);
                         }
                         self->stats.tcp_received++;
                         self->stats.bytes_received += buf->size();
                         if (self->receiver) self->receiver(std::move(*buf), /*checked=*/true);
                         self->ReadFrame(socket, std::make_shared<std::string>());
                       });
      return;
    }
    const size_t at = buf->size();
    const size_t n = std::min<size_t>(kChunk, total - at);
    try {
      buf->resize(at + n);
    } catch (const std::bad_alloc&) {
      // Out of memory for a frame: the connection goes, the node stays.
      stats.oversized++;
      return DropIncoming(socket);
    }
    asio::async_read(*socket, asio::buffer(buf->data() + at, n),
                     [self, socket, buf, total, crc, at, n](std::error_code ec, size_t) {
                       if (self->closed) return;
                       if (ec) return self->DropIncoming(socket);
                       const uint32_t next =
                           wire::Crc32c(std::string_view(buf->data() + at, n), crc);
                       self->ReadChunk(socket, buf, total, next);
                     });
  }

  // On the loop thread: faults, then the wire.
  void SendNow(NodeId to, Bytes message) {
    if (closed) return;
    auto it = peers.find(to);
    if (it == peers.end()) return;
    if (blocked.count(to) != 0) {
      stats.dropped_by_faults++;
      return;
    }
    const Faults& f = options.faults;
    std::uniform_real_distribution<double> coin(0, 1);
    if (f.drop > 0 && coin(rng) < f.drop) {
      stats.dropped_by_faults++;
      return;
    }
    int copies = 1;
    if (f.duplicate > 0 && coin(rng) < f.duplicate) {
      copies = 2;
      stats.duplicated_by_faults++;
    }
    int64_t corrupt_at = -1;
    if (f.corrupt > 0 && coin(rng) < f.corrupt && message->size() > 0) {
      corrupt_at = static_cast<int64_t>(rng() % message->size());
      stats.corrupted_by_faults++;
      if (message->size() <= options.udp_max) {
        // A datagram: send a flipped copy; the receiver's checks must catch it.
        auto bad = std::make_shared<OutMessage>();
        bad->head = message->Flatten();
        bad->head[static_cast<size_t>(corrupt_at)] ^= 0x20;
        message = std::move(bad);
        corrupt_at = -1;
      }
    }
    for (int c = 0; c < copies; c++) {
      Bytes m = message;
      uint64_t delay = f.min_delay_us;
      if (f.max_delay_us > f.min_delay_us) delay += rng() % (f.max_delay_us - f.min_delay_us + 1);
      if (delay == 0) {
        Wire(it->second, std::move(m), c == 0 ? corrupt_at : -1);
      } else {
        auto self = shared_from_this();
        loop->PostAt(loop->NowMicros() + delay, [self, to, m = std::move(m), corrupt_at, c]() {
          auto p = self->peers.find(to);
          if (!self->closed && p != self->peers.end()) {
            self->Wire(p->second, m, c == 0 ? corrupt_at : -1);
          }
        });
      }
    }
  }

  void Wire(Peer& peer, Bytes message, int64_t corrupt_at = -1) {
    stats.bytes_sent += message->size();
    if (message->size() <= options.udp_max) {
      if (!SendDatagram(udp_socket.native_handle(), *message, peer.udp_endpoint.data(),
                        peer.udp_endpoint.size())) {
        stats.send_failures++;
      } else {
        stats.udp_sent++;
      }
      return;
    }
    Out& out = message->size() >= options.bulk_min ? peer.bulk[peer.next_bulk++ % peer.bulk.size()]
                                                   : peer.message;
    const uint64_t now = loop->NowMicros();
    if (out.state == Out::State::kIdle && now < out.retry_at) {
      stats.send_failures++;  // reconnecting later; the RPC layer resends
      return;
    }
    out.queued_bytes += message->size();
    Frame f;
    PutLe32(&f.length, static_cast<uint32_t>(message->size()));
    f.message = std::move(message);
    f.corrupt_at = corrupt_at;
    out.queue.push_back(std::move(f));
    stats.tcp_sent++;
    if (out.state == Out::State::kIdle) return Connect(peer, out);
    if (out.state == Out::State::kConnected && !out.writing) WriteNext(out);
  }

  void Connect(Peer& peer, Out& out) {
    out.state = Out::State::kConnecting;
    out.socket = std::make_shared<tcp::socket>(io);
    stats.connects++;
    auto self = shared_from_this();
    std::shared_ptr<tcp::socket> socket = out.socket;
    const NodeId id = peer.address.id;
    socket->async_connect(peer.tcp_endpoint, [self, &out, socket, id](std::error_code ec) {
      if (self->closed || out.socket != socket) return;
      if (ec) return self->Failed(out);
      std::error_code ignored;
      socket->set_option(tcp::no_delay(true), ignored);
      out.state = Out::State::kConnected;
      self->Greet(id, out);
      self->WriteNext(out);
    });
  }

  // Puts the greeting for `to` (Trust::greet) before everything queued on a connection just
  // opened, so the peer trusts it before the first large frame.
  void Greet(NodeId to, Out& out) {
    if (!trust.greet) return;
    Bytes g = trust.greet(to);
    if (g == nullptr || g->size() > kMaxGreeting) return;
    Frame f;
    PutLe32(&f.length, static_cast<uint32_t>(g->size()) | kGreetingBit);
    out.queued_bytes += g->size();
    f.message = std::move(g);
    out.queue.push_front(std::move(f));
  }

  void Failed(Out& out) {
    CloseOut(out);
    out.retry_at = loop->NowMicros() + options.reconnect_delay_us;
  }

  // Writes the next step of the front frame: the length, then each piece of the message in
  // chunks (CRC-ing each chunk first), then the CRC.
  void WriteNext(Out& out) {
    if (out.queue.empty()) {
      out.writing = false;
      return;
    }
    out.writing = true;
    Frame& f = out.queue.front();
    asio::const_buffer step;
    if (f.piece < 0) {
      step = asio::buffer(f.length);
    } else if (f.piece < 3) {
      const std::string& piece =
          f.piece == 0 ? f.message->head : (f.piece == 1 ? f.message->body : f.message->tail);
      const size_t n = std::min(kChunk, piece.size() - f.offset);
      const std::string_view chunk(piece.data() + f.offset, n);
      f.crc = wire::Crc32c(chunk, f.crc);
      step = asio::buffer(chunk.data(), chunk.size());
      // Fault injection: the byte goes bad after the CRC was taken, as on a bad link.
      const size_t base = (f.piece >= 1 ? f.message->head.size() : 0) +
                          (f.piece >= 2 ? f.message->body.size() : 0) + f.offset;
      if (f.corrupt_at >= 0 && static_cast<size_t>(f.corrupt_at) >= base &&
          static_cast<size_t>(f.corrupt_at) < base + n) {
        f.scratch.assign(chunk);
        f.scratch[static_cast<size_t>(f.corrupt_at) - base] ^= 0x20;
        step = asio::buffer(f.scratch);
      }
    } else {
      PutLe32(&f.crc_bytes, f.crc);
      step = asio::buffer(f.crc_bytes);
    }
    auto self = shared_from_this();
    std::shared_ptr<tcp::socket> socket = out.socket;
    asio::async_write(*socket, step, [self, &out, socket](std::error_code ec, size_t n) {
      if (self->closed || out.socket != socket) return;
      if (ec) return self->Failed(out);
      Frame& fr = out.queue.front();
      if (fr.piece >= 0 && fr.piece < 3) {
        fr.offset += n;
      } else {
        fr.offset = 0;
        fr.piece++;
      }
      // Past the end of a piece (or an empty one): on to the next.
      while (fr.piece >= 0 && fr.piece < 3) {
        const std::string& piece = fr.piece == 0   ? fr.message->head
                                   : fr.piece == 1 ? fr.message->body
                                                   : fr.message->tail;
        if (fr.offset < piece.size()) break;
        fr.offset = 0;
        fr.piece++;
      }
      if (fr.piece > 3) {
        out.queued_bytes -= fr.message->size();
        out.queue.pop_front();
      }
      self->WriteNext(out);
    });
  }

  void Close() {
    closed = true;
    UpdateFastPath();
    std::error_code ec;
    udp_socket.close(ec);
    acceptor.close(ec);
    for (auto& [id, peer] : peers) {
      CloseOut(peer.message);
      for (Out& o : peer.bulk) CloseOut(o);
    }
    for (const auto& [s, state] : incoming) s->close(ec);
    incoming.clear();
  }
};

// Runs fn on the loop thread and waits for it (or runs it at once on the loop thread).
template <typename Fn>
static void RunOnLoop(AsioLoop& loop, Fn fn) {
  if (loop.InLoopThread()) return fn();
  std::promise<void> done;
  loop.Post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

Result<std::unique_ptr<UdpTcpTransport>> UdpTcpTransport::Start(AsioLoop& loop,
                                                                TransportOptions options) {
  auto impl = std::make_shared<Impl>(&loop, std::move(options));
  Status s;
  RunOnLoop(loop, [&] {
    s = impl->Bind();
    if (!s.ok()) return;
    for (const PeerAddress& p : impl->options.peers) impl->AddPeer(p);
    // Each connection takes a descriptor: past a quarter of the limit, connections are refused
    // before the process runs out (then it could accept no client either).
    rlimit fds{};
    impl->max_incoming = impl->options.max_incoming;
    // A length word's bit 31 marks a greeting.
    impl->options.max_message = std::min<size_t>(impl->options.max_message, kGreetingBit - 1);
    if (getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur != RLIM_INFINITY) {
      impl->max_incoming =
          std::min<size_t>(impl->max_incoming, std::max<size_t>(16, fds.rlim_cur / 4));
    }
    impl->StartReceiving();
    impl->StartAccepting();
  });
  if (!s.ok()) return s;
  return std::unique_ptr<UdpTcpTransport>(new UdpTcpTransport(std::move(impl)));
}

UdpTcpTransport::UdpTcpTransport(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

UdpTcpTransport::~UdpTcpTransport() {
  RunOnLoop(*impl_->loop, [impl = impl_] { impl->Close(); });
}

NodeId UdpTcpTransport::self() const { return impl_->options.self; }
Loop& UdpTcpTransport::loop() { return *impl_->loop; }
uint16_t UdpTcpTransport::port() const { return impl_->options.port; }
const TransportStats& UdpTcpTransport::stats() const { return impl_->stats; }

Status UdpTcpTransport::Send(NodeId to, Bytes message) {
  if (message->size() > impl_->options.max_message) {
    impl_->stats.oversized++;
    return Status::InvalidArgument("message of " + std::to_string(message->size()) +
                                   " bytes exceeds the limit");
  }
  if (message->size() <= impl_->options.udp_max && impl_->SendDirect(to, *message)) {
    return Status::OK();
  }
  impl_->loop->Post(
      [impl = impl_, to, m = std::move(message)]() mutable { impl->SendNow(to, std::move(m)); });
  return Status::OK();
}

void UdpTcpTransport::SetReceiver(Receiver receiver) {
  RunOnLoop(*impl_->loop, [&] {
    std::unique_lock lock(impl_->fast_mu);
    impl_->poll_receiver = std::make_shared<const Receiver>(receiver);
    impl_->receiver = std::move(receiver);
  });
}

void UdpTcpTransport::SetAdmission(size_t head_bytes, Admission admission) {
  RunOnLoop(*impl_->loop, [&] {
    impl_->admit_head = head_bytes;
    impl_->admission = std::move(admission);
  });
}

void UdpTcpTransport::SetTrust(Trust trust) {
  RunOnLoop(*impl_->loop, [&] { impl_->trust = std::move(trust); });
}

bool UdpTcpTransport::Poll() { return impl_->PollDatagrams(); }

void UdpTcpTransport::SetPeer(const PeerAddress& peer) {
  RunOnLoop(*impl_->loop, [&] { impl_->AddPeer(peer); });
}

void UdpTcpTransport::SetFaults(const Faults& faults) {
  RunOnLoop(*impl_->loop, [&] {
    impl_->options.faults = faults;
    impl_->UpdateFastPath();
  });
}

void UdpTcpTransport::Block(NodeId peer, bool blocked) {
  RunOnLoop(*impl_->loop, [&] {
    if (blocked) {
      impl_->blocked.insert(peer);
    } else {
      impl_->blocked.erase(peer);
    }
    impl_->UpdateFastPath();
  });
}

}  // namespace floe::net
