// The Raft transport (internal/transport.h; docs/consensus.md, "The transport"): plain libuv
// TCP, with a handshake that checks a fixed-layout, MAC'd hello before a stream reaches raft.

#include "consensus/internal/transport.h"

#include <sys/random.h>

#include <cstdio>
#include <cstring>
#include <unordered_set>
#include <vector>

extern "C" {
#include <raft.h>
#include <raft/uv.h>
}
#include <uv.h>

namespace floe::consensus::internal {
namespace {

struct Transport;

// One connection being set up, either way. Its tcp handle is raft_malloc'ed: raft frees it
// after closing it once it owns it.
struct Shake {
  Transport* transport = nullptr;
  bool incoming = false;
  uint64_t seq = 0;  // the transport's count of shakes when this one began (T4: oldest first)
  uv_tcp_t* tcp = nullptr;
  uv_timer_t timer{};
  uv_connect_t connect{};
  uv_write_t write{};
  int open = 0;            // handles of this shake not yet closed (tcp, timer)
  bool finished = false;   // the stream went to raft, or the shake failed
  bool written = false;    // our write (nonce or hello) completed
  bool read_done = false;  // we read all we expect (the hello, or the nonce)
  std::string nonce;       // kNonceBytes
  char buf[kMaxHello] = {};
  size_t have = 0;
  size_t want = 0;
  std::string out;  // what we write
  // outgoing
  raft_uv_connect* req = nullptr;
  raft_uv_connect_cb cb = nullptr;
  uint64_t peer_id = 0;
};

struct Transport {
  raft_uv_transport* t = nullptr;
  uv_loop_t* loop = nullptr;
  Mac mac;
  std::atomic<uint64_t>* refused = nullptr;
  uint64_t id = 0;
  std::string address;
  raft_uv_accept_cb accept_cb = nullptr;
  uv_tcp_t listener{};
  bool listening = false;
  bool closing = false;
  raft_uv_transport_close_cb close_cb = nullptr;
  int open = 0;         // handles of the transport not yet closed (listener, every shake's)
  size_t incoming = 0;  // incoming shakes in progress (T4)
  uint64_t seq = 0;     // shakes begun
  std::unordered_set<Shake*> shakes;
};

void MaybeClosed(Transport* tr) {
  if (tr->closing && tr->open == 0 && tr->close_cb != nullptr) {
    raft_uv_transport_close_cb cb = tr->close_cb;
    tr->close_cb = nullptr;
    cb(tr->t);
  }
}

void OnShakeHandleClosed(uv_handle_t* handle) {
  Shake* s = static_cast<Shake*>(handle->data);
  Transport* tr = s->transport;
  if (handle == reinterpret_cast<uv_handle_t*>(s->tcp)) {
    raft_free(s->tcp);
    s->tcp = nullptr;
  }
  tr->open--;
  if (--s->open == 0) {
    tr->shakes.erase(s);
    delete s;
  }
  MaybeClosed(tr);
}

// Ends a shake that did not succeed: the incoming one is counted, the outgoing one's callback
// runs once with RAFT_NOCONNECTION (RAFT_CANCELED when the transport closes). T5.
void Fail(Shake* s, int status) {
  if (s->finished) return;
  s->finished = true;
  Transport* tr = s->transport;
  if (s->incoming) {
    tr->incoming--;
    if (status != RAFT_CANCELED) tr->refused->fetch_add(1, std::memory_order_relaxed);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(s->tcp), OnShakeHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&s->timer), OnShakeHandleClosed);
  if (!s->incoming && s->cb != nullptr) s->cb(s->req, nullptr, status);
}

// Hands the stream to raft (it owns the tcp handle from here) and closes the timer.
void Succeed(Shake* s) {
  s->finished = true;
  Transport* tr = s->transport;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(s->tcp));
  uv_stream_t* stream = reinterpret_cast<uv_stream_t*>(s->tcp);
  s->tcp = nullptr;
  s->open--;
  tr->open--;
  stream->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&s->timer), OnShakeHandleClosed);
  if (s->incoming) {
    tr->incoming--;
    Hello hello;
    DecodeHello(std::string_view(s->buf, s->have), s->nonce, tr->id, tr->mac, &hello);
    tr->accept_cb(tr->t, hello.id, hello.address.c_str(), stream);
  } else {
    s->cb(s->req, stream, 0);
  }
}

void MaybeSucceed(Shake* s) {
  if (!s->finished && s->written && s->read_done) Succeed(s);
}

void OnTimer(uv_timer_t* timer) { Fail(static_cast<Shake*>(timer->data), RAFT_NOCONNECTION); }

void OnAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  // Never past what the handshake expects: what follows belongs to raft.
  Shake* s = static_cast<Shake*>(handle->data);
  buf->base = s->buf + s->have;
  buf->len = s->want - s->have;
}

void OnWritten(uv_write_t* write, int status) {
  Shake* s = static_cast<Shake*>(write->data);
  if (s->finished) return;
  if (status != 0) return Fail(s, RAFT_NOCONNECTION);
  s->written = true;
  if (!s->incoming) {
    // The hello went out after the nonce was read: the stream is raft's.
    s->read_done = true;
  }
  MaybeSucceed(s);
}

void WriteOut(Shake* s) {
  uv_buf_t buf = uv_buf_init(s->out.data(), static_cast<unsigned>(s->out.size()));
  s->write.data = s;
  if (uv_write(&s->write, reinterpret_cast<uv_stream_t*>(s->tcp), &buf, 1, OnWritten) != 0) {
    Fail(s, RAFT_NOCONNECTION);
  }
}

void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
  Shake* s = static_cast<Shake*>(stream->data);
  if (s->finished) return;
  if (nread < 0) return Fail(s, RAFT_NOCONNECTION);  // EOF or error mid-handshake
  s->have += static_cast<size_t>(nread);
  if (s->have < s->want) return;
  Transport* tr = s->transport;
  if (!s->incoming) {
    // The nonce: answer it with our hello; read nothing more until raft does.
    uv_read_stop(stream);
    s->nonce.assign(s->buf, kNonceBytes);
    s->out = EncodeHello(tr->id, tr->address, s->peer_id, s->nonce, tr->mac);
    return WriteOut(s);
  }
  if (s->want == kHelloFixed) {
    // T1: the fixed part says how long the rest is, at most kMaxHello in all.
    const size_t length = HelloLength(std::string_view(s->buf, s->have));
    if (length == 0) return Fail(s, RAFT_NOCONNECTION);
    s->want = length;
    return;
  }
  Hello hello;
  if (!DecodeHello(std::string_view(s->buf, s->have), s->nonce, tr->id, tr->mac, &hello)) {
    return Fail(s, RAFT_NOCONNECTION);
  }
  uv_read_stop(stream);
  s->read_done = true;
  MaybeSucceed(s);
}

// A shake with its tcp and timer initialized and the deadline running (T3).
Shake* NewShake(Transport* tr, bool incoming) {
  auto* s = new Shake;
  s->transport = tr;
  s->incoming = incoming;
  s->seq = ++tr->seq;
  s->tcp = static_cast<uv_tcp_t*>(raft_malloc(sizeof(uv_tcp_t)));
  if (s->tcp == nullptr) {
    delete s;
    return nullptr;
  }
  uv_tcp_init(tr->loop, s->tcp);
  uv_timer_init(tr->loop, &s->timer);
  s->tcp->data = s;
  s->timer.data = s;
  s->open = 2;
  tr->open += 2;
  tr->shakes.insert(s);
  uv_timer_start(&s->timer, OnTimer, kHandshakeDeadlineMs, 0);
  return s;
}

void OnConnection(uv_stream_t* listener, int status) {
  Transport* tr = static_cast<Transport*>(listener->data);
  if (status != 0 || tr->closing) return;
  Shake* s = NewShake(tr, true);
  if (s == nullptr) return;
  tr->incoming++;
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(s->tcp)) != 0) {
    return Fail(s, RAFT_NOCONNECTION);
  }
  if (tr->incoming > kMaxPendingHandshakes) {
    // T4: the oldest incoming handshake in progress goes, not this one: a member's completes
    // within a round trip, so a stranger holding the slots cannot keep members out.
    Shake* oldest = nullptr;
    for (Shake* other : tr->shakes) {
      if (other != s && other->incoming && !other->finished &&
          (oldest == nullptr || other->seq < oldest->seq)) {
        oldest = other;
      }
    }
    if (oldest == nullptr) return Fail(s, RAFT_NOCONNECTION);
    Fail(oldest, RAFT_NOCONNECTION);
  }
  s->nonce.resize(kNonceBytes);
  if (getrandom(s->nonce.data(), kNonceBytes, 0) != static_cast<ssize_t>(kNonceBytes)) {
    return Fail(s, RAFT_NOCONNECTION);
  }
  s->want = kHelloFixed;
  s->out = s->nonce;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(s->tcp), OnAlloc, OnRead) != 0) {
    return Fail(s, RAFT_NOCONNECTION);
  }
  WriteOut(s);
}

void OnConnected(uv_connect_t* connect, int status) {
  Shake* s = static_cast<Shake*>(connect->data);
  if (s->finished) return;
  if (status != 0) return Fail(s, RAFT_NOCONNECTION);
  s->want = kNonceBytes;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(s->tcp), OnAlloc, OnRead) != 0) {
    Fail(s, RAFT_NOCONNECTION);
  }
}

bool ParseIPv4(const char* address, sockaddr_in* out) {
  std::string_view a(address);
  const size_t colon = a.rfind(':');
  if (colon == std::string_view::npos) return false;
  const std::string host(a.substr(0, colon));
  int port = 0;
  for (char c : a.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) return false;
    port = port * 10 + (c - '0');
  }
  if (port < 1 || port > 65535) return false;
  return uv_ip4_addr(host.c_str(), port, out) == 0;
}

Transport* Of(raft_uv_transport* t) { return static_cast<Transport*>(t->impl); }

int Init(raft_uv_transport* t, raft_id id, const char* address) {
  Transport* tr = Of(t);
  const size_t n = std::strlen(address);
  if (id == 0 || n == 0 || n > kMaxHelloAddress) {
    std::snprintf(t->errmsg, sizeof(t->errmsg), "address too long for the transport's hello");
    return RAFT_INVALID;
  }
  tr->id = id;
  tr->address = address;
  return 0;
}

int Listen(raft_uv_transport* t, raft_uv_accept_cb cb) {
  Transport* tr = Of(t);
  sockaddr_in addr{};
  if (!ParseIPv4(tr->address.c_str(), &addr)) {
    std::snprintf(t->errmsg, sizeof(t->errmsg), "cannot parse address %s", tr->address.c_str());
    return RAFT_IOERR;
  }
  tr->accept_cb = cb;
  uv_tcp_init(tr->loop, &tr->listener);
  tr->listener.data = tr;
  tr->listening = true;
  tr->open++;
  int rv = uv_tcp_bind(&tr->listener, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rv == 0) rv = uv_listen(reinterpret_cast<uv_stream_t*>(&tr->listener), 128, OnConnection);
  if (rv != 0) {
    std::snprintf(t->errmsg, sizeof(t->errmsg), "listen on %s: %s", tr->address.c_str(),
                  uv_strerror(rv));
    return RAFT_IOERR;  // the listener is closed by close()
  }
  return 0;
}

int Connect(raft_uv_transport* t, raft_uv_connect* req, raft_id id, const char* address,
            raft_uv_connect_cb cb) {
  Transport* tr = Of(t);
  sockaddr_in addr{};
  if (tr->closing) return RAFT_CANCELED;
  if (!ParseIPv4(address, &addr)) return RAFT_NOCONNECTION;
  Shake* s = NewShake(tr, false);
  if (s == nullptr) return RAFT_NOMEM;
  s->req = req;
  s->cb = cb;
  s->peer_id = id;
  s->connect.data = s;
  if (uv_tcp_connect(&s->connect, s->tcp, reinterpret_cast<const sockaddr*>(&addr), OnConnected) !=
      0) {
    // Nothing started: close without running cb (the error is the return value).
    s->cb = nullptr;
    Fail(s, RAFT_NOCONNECTION);
    return RAFT_NOCONNECTION;
  }
  return 0;
}

void Close(raft_uv_transport* t, raft_uv_transport_close_cb cb) {
  Transport* tr = Of(t);
  tr->closing = true;
  tr->close_cb = cb;
  if (tr->listening) {
    tr->listening = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&tr->listener), [](uv_handle_t* h) {
      Transport* closed = static_cast<Transport*>(h->data);
      closed->open--;
      MaybeClosed(closed);
    });
  }
  // T5: every pending shake ends, an outgoing one's callback once with RAFT_CANCELED.
  std::vector<Shake*> pending(tr->shakes.begin(), tr->shakes.end());
  for (Shake* s : pending) Fail(s, RAFT_CANCELED);
  MaybeClosed(tr);
}

// The send that raft_uv_init installed (the same function for every raft_io), called by
// GuardedSend for every message with a known destination.
std::atomic<int (*)(raft_io*, raft_io_send*, const raft_message*, raft_io_send_cb)> uv_send{
    nullptr};

int GuardedSend(raft_io* io, raft_io_send* req, const raft_message* message, raft_io_send_cb cb) {
  if (message->server_id == 0 || message->server_address == nullptr) return RAFT_NOCONNECTION;
  return uv_send.load(std::memory_order_relaxed)(io, req, message, cb);
}

}  // namespace

void GuardSends(raft_io* io) {
  if (io->send == GuardedSend) return;
  uv_send.store(io->send, std::memory_order_relaxed);
  io->send = GuardedSend;
}

int InitTransport(raft_uv_transport* t, uv_loop_s* loop, Mac mac, std::atomic<uint64_t>* refused) {
  auto* tr = new Transport;
  tr->t = t;
  tr->loop = loop;
  tr->mac = std::move(mac);
  tr->refused = refused;
  t->impl = tr;
  t->init = Init;
  t->listen = Listen;
  t->connect = Connect;
  t->close = Close;
  return 0;
}

void ReleaseTransport(raft_uv_transport* t) {
  delete Of(t);
  t->impl = nullptr;
}

}  // namespace floe::consensus::internal
