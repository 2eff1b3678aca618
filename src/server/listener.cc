// Server: listeners, I/O threads and connections on Asio.
//
// Each I/O thread owns an io_context, its own listening sockets (SO_REUSEPORT, so the kernel
// spreads connections across threads) and the connections it accepted. A connection reads,
// runs every complete command in what it read, and answers them with one write; once 64 KiB of
// replies are ready it writes them before running more (docs/architecture.md, rule W1). A write
// the socket cannot take at once stays in flight, and meanwhile the connection reads on and,
// once requests pile up, runs them, their replies waiting behind the write (W2), up to the
// client's output limits (W3): a client that writes its whole pipeline before reading never
// finds the node blocked in a write while it is blocked in one. In a cluster, commands that
// wait for other nodes leave their replies to come in slots (docs/cluster.md, rule C3): the
// connection may read on while they are outstanding, up to the slots' bounds.

#include <sys/socket.h>

#include <asio.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <deque>
#include <functional>
#include <thread>
#include <unordered_map>

#include "server/internal/analytics_pool.h"
#include "server/internal/cluster_node.h"
#include "server/internal/command.h"

namespace floe::server {

namespace {
// How long SIGTERM waits for a member's leave before it stops anyway (rule J2).
constexpr int kLeaveOnTermSeconds = 10;
}  // namespace

namespace {

using asio::ip::tcp;

constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kFlushThreshold = 64 * 1024;  // stop running commands; write first (W1)
// While a write is in flight, requests run once this much input waits unrun (W2).
constexpr size_t kRunWhileWritingInput = size_t{1} << 20;
// The most the replies behind a write in flight may hold before the connection stops running
// and reading (W3): back-pressure, not a close, so a client that reads slowly is not cut off,
// and one that never reads parks this much (its buffer's capacity up to twice it).
constexpr size_t kReplyBacklogLimit = size_t{64} << 20;
constexpr size_t kStaticReplyBuffer = 16 * 1024;  // Redis's PROTO_REPLY_CHUNK_BYTES
constexpr size_t kBatch = 32;
// Replies of one connection outstanding at once (commands waiting for other nodes and the
// ones after them); more commands wait until some are written.
constexpr size_t kMaxSlots = 1024;
// Bytes of the commands waiting for other nodes at once (Session::last_deferred_bytes); a
// larger command still goes alone.
constexpr size_t kMaxWaitingInput = size_t{8} << 20;
constexpr int64_t kAcceptRetryMs = 100;  // after a failed accept (e.g. out of descriptors) //
                                         // commands parsed and prefetched together
// Redis's client-query-buffer-limit: a client whose unconsumed input reaches it is closed.
constexpr size_t kQueryBufferLimit = size_t{1} << 30;

std::string Endpoint(const tcp::endpoint& ep) {
  const std::string host = ep.address().to_string();
  return (ep.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(ep.port());
}

struct Worker;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Worker* worker, tcp::socket socket);
  void Start();
  void Close();
  int64_t last_interaction_ms() const {
    return session_ ? session_->state().last_interaction_ms.load(std::memory_order_relaxed) : 0;
  }
  // A reply is to come (another node's, an analytics task's): the client waits, it is not idle.
  bool awaiting_reply() const { return slots_waiting_ > 0; }

 private:
  void DoRead();
  // While a write is in flight: waits until the client sends more and reads it without handing
  // in_ to an asynchronous read, so the commands in in_ can run as soon as the write is done
  // (W2).
  void ReadWhileWriting();
  void CloseAtQueryBufferLimit();
  // Whether commands may run now, with `unrun` bytes of input waiting: with no write in flight
  // until a write's worth of replies is ready (W1); with one, once requests pile up (W2).
  bool MayRun(size_t unrun) const {
    if (writing_) {
      // Past the backlog bound nothing more runs (nor is read) until the write moves on.
      if (out_.size() + slot_bytes_ >= kReplyBacklogLimit) return false;
      // A client that closed its side sends nothing more: what it sent runs behind the write.
      return peer_eof_ || unrun >= kRunWhileWritingInput;
    }
    return out_.size() < kFlushThreshold;
  }
  // While a reply is to come nothing is read (the client's next commands wait in the socket),
  // but a client that closes is noticed: its session goes, and with it the work of an
  // analytics task (docs/frame.md, A5).
  void WatchForClose();
  void Process();
  // The reply of a command that waited for another node (any thread posts it here).
  void Resume(uint64_t ticket, std::string reply);
  // Moves the replies at the front of slots_ that have come into out_.
  void DrainSlots();
  // Too many replies outstanding or held: run nothing more until some are written.
  // Also while a transaction's connection commands wait to run here (Session::
  // local_part_pending) and while the commands waiting for other nodes are large: their copies
  // are held until their homes answer, so a client cannot pile up kMaxSlots large writes.
  bool Blocked() const {
    return slots_.size() >= kMaxSlots || slot_bytes_ >= kFlushThreshold ||
           waiting_input_ >= kMaxWaitingInput || session_->local_part_pending();
  }
  void DoWrite();
  void ScheduleWrite();
  bool OverOutputLimits();
  // Empties an output buffer once written; a buffer grown by a large reply is freed, so an idle
  // connection does not keep the memory of the largest reply it ever got.
  static void ReleaseOutput(std::string* buffer);
  // Charges the output held while a write is in flight (sending_ and the replies behind it) to
  // the engine's used memory and shows it in CLIENT LIST (omem).
  void ChargeOutput();
  // Charges in_'s current capacity to the engine's used memory (Redis counts query buffers).
  void ChargeInput();
  // Before AUTH the parser applies Redis's unauthenticated request limits.
  void UpdateParserLimits();
  friend void FlushWrites(Worker* w);

  Worker* worker_;
  tcp::socket socket_;
  std::unique_ptr<Session> session_;
  resp::RequestParser parser_;
  resp::InputBuffer in_{kReadChunk, kQueryBufferLimit};
  size_t charged_ = 0;   // in_'s capacity as counted in the engine's client-buffer bytes
  std::string out_;      // replies to write next
  std::string sending_;  // what the asynchronous write in flight sends (out_ is free meanwhile)
  size_t charged_output_ = 0;  // as ChargeOutput last counted it
  std::vector<std::vector<std::string_view>> batch_;
  std::vector<size_t> ends_;  // where each command of batch_ ends in the input
  std::vector<store::KeyView> keys_;
  bool closing_ = false;
  bool closed_ = false;
  bool write_scheduled_ = false;
  bool writing_ = false;     // an asynchronous write of sending_ is in flight
  bool reading_ = false;     // an asynchronous read into in_ is in flight: in_ is not ours
  bool watching_ = false;    // WatchForClose's wait is in flight
  bool input_wait_ = false;  // ReadWhileWriting's wait is in flight
  // ReadWhileWriting met the end of the client's stream (it shut down its side and reads on):
  // nothing more is read, every request it sent runs, and the connection closes once the
  // replies are written, as when DoRead meets the end with nothing left to run or write.
  bool peer_eof_ = false;
  // Replies in command order once a command waits for another node (rule C3): a reply goes to
  // out_ only when every reply before it has. `ticket` is the session's for a reply to come.
  struct Slot {
    uint64_t ticket = 0;
    bool ready = false;
    std::string bytes;
    size_t input = 0;  // the bytes it sent to other nodes, while its reply is to come
  };
  std::deque<Slot> slots_;
  size_t slot_bytes_ = 0;  // bytes of the ready replies in slots_
  size_t slots_waiting_ = 0;
  size_t waiting_input_ = 0;  // sum of the waiting slots' `input`
  std::string scratch_;
  // Keeps the connection alive while replies are to come and no socket operation may: they
  // always come (the RPC layer answers every call by its deadline), and the last one or Close
  // lets go.
  std::shared_ptr<Connection> hold_;
  int64_t soft_limit_since_ms_ = 0;
};

struct Worker {
  int index = 0;
  Engine* engine = nullptr;
  // Only this thread touches the sockets of this io_context, so the reactor's per-socket locks
  // are skipped; posting from other threads (CLIENT KILL) still goes through the locked queue.
  asio::io_context io{ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  // One per acceptor: the wait before an accept that failed is retried (Accept).
  std::vector<std::unique_ptr<asio::steady_timer>> accept_retry;
  std::unique_ptr<asio::steady_timer> housekeeping;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections;
  // Connections with replies to write once the reads that are ready now have all run (see
  // Connection::ScheduleWrite).
  std::vector<std::shared_ptr<Connection>> to_flush;
  bool flush_posted = false;
  int64_t accept_error_logged_ms = 0;
  std::thread thread;
};

void FlushWrites(Worker* w) {
  w->flush_posted = false;
  std::vector<std::shared_ptr<Connection>> batch;
  batch.swap(w->to_flush);
  for (auto& c : batch) {
    c->write_scheduled_ = false;
    if (!c->closed_) c->DoWrite();
  }
}

Connection::Connection(Worker* worker, tcp::socket socket)
    : worker_(worker), socket_(std::move(socket)) {}

void Connection::Start() {
  std::error_code ec;
  socket_.set_option(tcp::no_delay(true), ec);
  socket_.non_blocking(true, ec);  // DoWrite's direct writes must not block the thread
  const std::string addr = Endpoint(socket_.remote_endpoint(ec));
  const std::string laddr = Endpoint(socket_.local_endpoint(ec));
  session_ = std::make_unique<Session>(worker_->engine, worker_->index, addr, laddr);
  ClientState& state = session_->state();
  state.fd.store(static_cast<int>(socket_.native_handle()), std::memory_order_relaxed);
  {
    MutexLock lock(&state.mu);
    std::weak_ptr<Connection> weak = weak_from_this();
    asio::io_context* io = &worker_->io;
    state.closer = [weak, io] {
      asio::post(*io, [weak] {
        if (auto c = weak.lock()) c->Close();
      });
    };
  }
  worker_->connections.emplace(this, weak_from_this());
  {
    // Replies come later from other nodes (cluster) and from the analytics pool (frames).
    std::weak_ptr<Connection> weak = weak_from_this();
    asio::io_context* io = &worker_->io;
    session_->set_reply_sink([weak, io](uint64_t ticket, std::string reply) {
      asio::post(*io, [weak, ticket, reply = std::move(reply)]() mutable {
        if (auto c = weak.lock()) c->Resume(ticket, std::move(reply));
      });
    });
    // Rule C9: a home held back is looked at again after each answer from any home.
    session_->set_forward_waker([weak, io] {
      asio::post(*io, [weak] {
        if (auto c = weak.lock()) c->Process();
      });
    });
  }
  UpdateParserLimits();
  DoRead();
}

void Connection::UpdateParserLimits() {
  resp::Limits limits;
  limits.max_bulk_len = static_cast<uint64_t>(worker_->engine->proto_max_bulk_len());
  limits.unauthenticated = !session_->authenticated();
  parser_.set_limits(limits);
}

void Connection::ChargeInput() {
  const size_t now = in_.capacity();
  if (now == charged_) return;
  worker_->engine->ChargeClientBuffers(static_cast<int64_t>(now) - static_cast<int64_t>(charged_));
  charged_ = now;
}

void Connection::Close() {
  if (closed_) return;
  closed_ = true;
  auto self = std::move(hold_);  // released when this returns
  std::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  worker_->connections.erase(this);
  in_ = resp::InputBuffer(kReadChunk, kQueryBufferLimit);
  ChargeInput();
  ChargeOutput();  // sending_ stays until the write's completion: the write may still read it
  if (session_) {
    {
      MutexLock lock(&session_->state().mu);
      session_->state().closer = nullptr;
    }
    session_.reset();  // unregisters the client
  }
}

void Connection::WatchForClose() {
  if (watching_ || closed_) return;
  watching_ = true;
  auto self = shared_from_this();
  socket_.async_wait(tcp::socket::wait_read, [this, self](std::error_code ec) {
    watching_ = false;
    // A read in flight (the reply came and reading resumed) sees the end of the stream itself,
    // after the commands before it: closing here would drop their replies.
    if (ec || closed_ || reading_) return;
    // Readable: the end of the stream, or more commands (left in the socket: once they are
    // there, a close after them is noticed by the next read).
    char byte = 0;
    const ssize_t n = ::recv(socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      return Close();
    }
    if (n < 0 && slots_waiting_ > 0) WatchForClose();  // woken for nothing: watch on
  });
}

void Connection::CloseAtQueryBufferLimit() {
  FLOE_LOG_WARN("closing client id={} addr={}: it reached the query buffer limit ({} bytes)",
                session_->id(), session_->state().addr, kQueryBufferLimit);
  Close();
}

void Connection::DoRead() {
  if (closed_) return;
  const std::span<char> room = in_.PrepareRead(parser_.wanted());
  ChargeInput();
  if (room.empty()) return CloseAtQueryBufferLimit();
  auto self = shared_from_this();
  reading_ = true;
  socket_.async_read_some(asio::buffer(room.data(), room.size()), [this, self](std::error_code ec,
                                                                               size_t n) {
    reading_ = false;
    if (ec) return Close();
    in_.Commit(n);
    worker_->engine->stats(worker_->index).net_input_bytes.fetch_add(n, std::memory_order_relaxed);
    Process();
  });
}

void Connection::ReadWhileWriting() {
  if (input_wait_ || closed_) return;
  input_wait_ = true;
  auto self = shared_from_this();
  socket_.async_wait(tcp::socket::wait_read, [this, self](std::error_code ec) {
    input_wait_ = false;
    // Once the write is done its completion runs Process, which reads as usual; a read in
    // flight owns in_.
    if (ec || closed_ || reading_ || !writing_) return;
    const std::span<char> room = in_.PrepareRead(parser_.wanted());
    ChargeInput();
    if (room.empty()) return CloseAtQueryBufferLimit();
    std::error_code rec;
    const size_t n = socket_.read_some(asio::buffer(room.data(), room.size()), rec);
    if (rec == asio::error::would_block || rec == asio::error::try_again) {
      return ReadWhileWriting();  // woken for nothing
    }
    if (rec == asio::error::eof) {
      peer_eof_ = true;
      return Process();
    }
    if (rec) return Close();  // a reset or another error: nobody reads the replies
    in_.Commit(n);
    worker_->engine->stats(worker_->index).net_input_bytes.fetch_add(n, std::memory_order_relaxed);
    Process();
  });
}

void Connection::ReleaseOutput(std::string* buffer) {
  if (buffer->capacity() > 4 * kFlushThreshold) {
    std::string().swap(*buffer);
  } else {
    buffer->clear();
  }
}

void Connection::ChargeOutput() {
  const size_t now = writing_ && !closed_ ? sending_.size() + out_.size() : 0;
  if (now == charged_output_) return;
  worker_->engine->ChargeClientBuffers(static_cast<int64_t>(now) -
                                       static_cast<int64_t>(charged_output_));
  charged_output_ = now;
  if (session_) session_->state().output_pending.store(now, std::memory_order_relaxed);
}

bool Connection::OverOutputLimits() {
  const Engine::OutputLimits c = worker_->engine->output_limits();
  // As in Redis, replies that fit the client's fixed 16 KB reply buffer are not counted: a
  // limit of a few bytes then closes clients with large replies, not every client including
  // the one that would set the limit back.
  const size_t held = sending_.size() + out_.size() + slot_bytes_;
  const auto pending =
      static_cast<int64_t>(held > kStaticReplyBuffer ? held - kStaticReplyBuffer : 0);
  if (c.hard > 0 && pending > c.hard) return true;
  if (c.soft > 0 && pending > c.soft) {
    const auto now = static_cast<int64_t>(WallMicros() / 1000);
    if (soft_limit_since_ms_ == 0) soft_limit_since_ms_ = now;
    // A soft time beyond what milliseconds can count is never reached (soft_seconds * 1000
    // would overflow).
    if (c.soft_seconds <= INT64_MAX / 1000 && now - soft_limit_since_ms_ > c.soft_seconds * 1000) {
      return true;
    }
  } else {
    soft_limit_since_ms_ = 0;
  }
  return false;
}

// How it works: commands are parsed a batch at a time (up to kBatch, all from the bytes already
// read), the keys they name are prefetched together, and then they run in order. A pipeline of
// GETs thus overlaps its cache misses instead of taking them one by one. Replies and errors keep
// their order: a protocol error is answered after the commands before it.
void Connection::Resume(uint64_t ticket, std::string reply) {
  if (closed_) return;
  auto it = std::find_if(slots_.begin(), slots_.end(),
                         [ticket](const Slot& s) { return !s.ready && s.ticket == ticket; });
  if (it == slots_.end()) {
    // An internal ticket (a split command's part that waited for its keys here): it runs
    // now; the command's own reply comes through its slot's ticket.
    bool held = false;  // a part's reply joins its gather; it is never held here
    session_->FinishDeferred(ticket, std::move(reply), &held);
    std::shared_ptr<Connection> self = shared_from_this();
    if (slots_waiting_ == 0 && !session_->local_part_pending()) hold_.reset();
    Process();
    return;
  }
  bool held = false;
  std::string bytes = session_->FinishDeferred(ticket, std::move(reply), &held);
  // A change that waited for its keys now waits for its backups (docs/replication.md, H3):
  // the sink brings the same ticket again. The commands read after it may run meanwhile.
  if (held) {
    std::shared_ptr<Connection> self = shared_from_this();
    Process();
    return;
  }
  it->ready = true;
  waiting_input_ -= it->input;
  it->bytes = std::move(bytes);
  slot_bytes_ += it->bytes.size();
  std::shared_ptr<Connection> self = shared_from_this();  // hold_ may be the last reference
  if (--slots_waiting_ == 0) hold_.reset();
  Process();  // nothing while a write is in flight: its completion runs Process
}

void Connection::DrainSlots() {
  while (!slots_.empty() && slots_.front().ready) {
    slot_bytes_ -= slots_.front().bytes.size();
    out_ += slots_.front().bytes;
    slots_.pop_front();
  }
}

void Connection::Process() {
  // An asynchronous write sends from sending_, so out_ may take replies meanwhile; they are
  // written when it is done (its completion runs Process). Before AUTH nothing more is read or
  // run while a write is in flight (W2).
  if (closed_ || (writing_ && !session_->authenticated())) return;
  DrainSlots();
  // Rule C9: a home that stopped short sends the rest once the client has read enough.
  session_->ReleaseForwards(out_.size() + sending_.size(),
                            out_.size() + sending_.size() + slot_bytes_);
  if (OverOutputLimits()) {
    FLOE_LOG_WARN("client id={} addr={} closed for overcoming of output buffer limits",
                  session_->id(), session_->state().addr);
    return Close();
  }
  // A read in flight owns in_'s free space: nothing is parsed (all that was complete has run).
  if (reading_) {
    if (!out_.empty() && !writing_) ScheduleWrite();
    return;
  }
  // CONFIG SET proto-max-bulk-len applies to connections already open, as in Redis; they kept
  // the limit they started with.
  UpdateParserLimits();
  while (!closing_ && MayRun(in_.size()) && !Blocked()) {
    size_t n = 0;
    size_t pos = 0;
    const std::string_view input = in_.data();
    bool need_more = false;
    std::string error;
    // Before AUTH one command at a time: AUTH lifts the limits for the commands after it.
    const size_t batch = parser_.limits().unauthenticated ? 1 : kBatch;
    while (n < batch) {
      if (batch_.size() <= n) batch_.emplace_back();
      size_t consumed = 0;
      const auto outcome = parser_.Parse(input.substr(pos), &batch_[n], &consumed, &error);
      pos += consumed;
      if (outcome == resp::RequestParser::Outcome::kNeedMore) {
        need_more = true;
        break;
      }
      if (outcome == resp::RequestParser::Outcome::kError) break;
      if (ends_.size() <= n) ends_.emplace_back();
      ends_[n] = pos;
      n++;
      // An inline command's arguments live in the parser and the next Parse overwrites them.
      const char* first = batch_[n - 1][0].data();
      if (first < input.data() || first >= input.data() + input.size()) break;
    }
    if (n > 1) {
      keys_.clear();
      for (size_t i = 0; i < n; i++) {
        if (batch_[i].size() >= 2) keys_.emplace_back(batch_[i][1]);
      }
      worker_->engine->store().Prefetch(keys_.data(), keys_.size());
    }
    const bool was_unauthenticated = parser_.limits().unauthenticated;
    for (size_t i = 0; i < n && !closing_; i++) {
      // Enough output for one write: the rest of the batch waits until it is written, so a
      // pipeline of large replies (32 GETs of a 20 MB value) holds one reply, not the batch's
      // (W1). Behind a write in flight, the rest waits once few requests are left unrun (W2).
      if (i > 0 && (!MayRun(input.size() - ends_[i - 1]) || Blocked())) {
        pos = ends_[i - 1];
        error.clear();
        need_more = false;
        parser_.Restart();  // what follows is parsed again from `pos`
        break;
      }
      // Cross-protocol requests: a web page can make a browser POST to this port, and the
      // inline parser reads each line of that HTTP request as a command, so a body of
      // "FLUSHALL" would run. An HTTP request line ("POST ...") or header ("Host: ...") closes
      // the connection at once, with no reply, whatever else the client sent unread and before
      // AUTH, as Redis does. Only here: over HTTP, /api/command ["post"] is an unknown command.
      if (!batch_[i].empty() && (internal::EqualsIgnoreCase(batch_[i][0], "post") ||
                                 internal::EqualsIgnoreCase(batch_[i][0], "host:"))) {
        FLOE_LOG_WARN(
            "possible cross-protocol attack from {}: an HTTP request reached the RESP port "
            "(command '{}'); connection closed",
            session_->state().addr, batch_[i][0]);
        return Close();
      }
      // Once a reply is outstanding, the replies after it wait in slots (rule C3).
      std::string* target = slots_.empty() ? &out_ : &scratch_;
      if (!session_->Execute(batch_[i], target)) {
        const size_t request = session_->last_deferred_bytes();
        slots_.push_back({.ticket = session_->last_ticket(), .input = request});
        slots_waiting_++;
        waiting_input_ += request;
        if (!hold_) hold_ = shared_from_this();
      } else if (target == &scratch_) {
        slot_bytes_ += scratch_.size();
        slots_.push_back({.ready = true, .bytes = std::move(scratch_)});
        scratch_.clear();
      }
      if (session_->close_requested()) closing_ = true;  // what follows QUIT is not run
      if (OverOutputLimits()) {
        FLOE_LOG_WARN("client id={} addr={} closed for overcoming of output buffer limits",
                      session_->id(), session_->state().addr);
        return Close();
      }
    }
    in_.Consume(pos);
    if (was_unauthenticated == session_->authenticated()) UpdateParserLimits();
    if (!error.empty() && !closing_) {
      std::string reply = "-ERR " + error + "\r\n";
      if (slots_.empty()) {
        out_ += reply;
      } else {  // after the replies still to come
        slot_bytes_ += reply.size();
        slots_.push_back({.ready = true, .bytes = std::move(reply)});
      }
      closing_ = true;
    }
    if (need_more || n == 0) break;
  }
  if (in_.size() == 0) {
    in_.ShrinkIfIdle();  // a large request is over: its memory goes back
    ChargeInput();
  }
  if (writing_) {  // its completion writes out_ and runs Process again
    ChargeOutput();
    if (!closing_ && !Blocked() && !peer_eof_ && out_.size() + slot_bytes_ < kReplyBacklogLimit) {
      ReadWhileWriting();
    }
    return;
  }
  if (!out_.empty()) return ScheduleWrite();
  if (closing_) {
    if (slots_.empty()) Close();  // else after the replies still to come
    return;
  }
  if (Blocked()) {  // Resume goes on
    if (slots_waiting_ > 0 && !peer_eof_) WatchForClose();
    return;
  }
  // Everything the client sent before closing its side has run and been written.
  if (peer_eof_) return Close();
  DoRead();
}

// Replies are written after every read that is ready now has run, as Redis writes in
// beforeSleep: a client with many connections then finds many replies per wake-up instead of
// one, which on a host where the client is the bottleneck is what sets the pace.
void Connection::ScheduleWrite() {
  if (write_scheduled_) return;
  write_scheduled_ = true;
  worker_->to_flush.push_back(shared_from_this());
  if (!worker_->flush_posted) {
    worker_->flush_posted = true;
    Worker* w = worker_;
    asio::post(w->io, [w] { FlushWrites(w); });
  }
}

// Writes at once when the socket takes everything (the usual case), which saves a trip through
// the event loop per reply; falls back to an asynchronous write for what is left.
void Connection::DoWrite() {
  if (writing_) return;  // its completion writes what came meanwhile
  std::error_code ec;
  size_t written = 0;
  while (written < out_.size()) {
    const size_t n =
        socket_.write_some(asio::buffer(out_.data() + written, out_.size() - written), ec);
    if (ec) break;
    written += n;
  }
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) return Close();
  worker_->engine->stats(worker_->index)
      .net_output_bytes.fetch_add(written, std::memory_order_relaxed);
  if (written == out_.size()) {
    ReleaseOutput(&out_);
    if (closing_ && slots_.empty()) return Close();
    return Process();
  }
  out_.erase(0, written);
  sending_.swap(out_);  // out_ takes sending_'s emptied buffer
  auto self = shared_from_this();
  writing_ = true;
  ChargeOutput();
  asio::async_write(socket_, asio::buffer(sending_), [this, self](std::error_code wec, size_t n) {
    writing_ = false;
    if (wec) return Close();
    worker_->engine->stats(worker_->index).net_output_bytes.fetch_add(n, std::memory_order_relaxed);
    ReleaseOutput(&sending_);
    if (closed_) return;
    ChargeOutput();
    // Replies that came meanwhile are written next; a closing connection closes once written.
    if (closing_ && slots_.empty() && out_.empty()) return Close();
    Process();
  });
  Process();  // reads on while the write is in flight (W2)
}

// Runs a worker's io_context. Before sleeping in epoll_wait the thread polls for up to
// `busy_poll_us`: a client's next request then finds the thread awake, which spares the client
// the cost of waking it (on a small host, where the client is the bottleneck, that cost sets
// the pace). 0 turns it off.
void RunWorker(Worker* w, int64_t busy_poll_us) {
  if (busy_poll_us <= 0) {
    w->io.run();
    return;
  }
  const uint64_t spin_cycles = static_cast<uint64_t>(busy_poll_us);
  while (!w->io.stopped()) {
    if (w->io.poll() > 0) continue;
    const uint64_t idle_since = NowMicros();
    bool ran = false;
    while (!w->io.stopped() && NowMicros() - idle_since < spin_cycles) {
      if (w->io.poll() > 0) {
        ran = true;
        break;
      }
    }
    if (!ran && !w->io.stopped()) w->io.run_one();
  }
}

// Accepts on w->acceptors[i] until the acceptor closes.
void Accept(Worker* w, size_t i) {
  tcp::acceptor* acceptor = w->acceptors[i].get();
  acceptor->async_accept([w, i](std::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      WorkerStats& stats = w->engine->stats(w->index);
      // Proxy sessions (clients of other nodes) have a limit of their own.
      if (internal::ConnectedClients(*w->engine) >= w->engine->maxclients()) {
        stats.rejected_connections.fetch_add(1, std::memory_order_relaxed);
        std::error_code ignored;
        asio::write(socket,
                    asio::buffer(std::string_view("-ERR max number of clients reached\r\n")),
                    ignored);
        socket.close(ignored);
      } else {
        stats.connections.fetch_add(1, std::memory_order_relaxed);
        std::make_shared<Connection>(w, std::move(socket))->Start();
      }
    } else {
      // Out of descriptors (EMFILE, ENFILE) the pending connection stays in the backlog and the
      // next accept fails at once: retrying at once spun every I/O thread at 100% CPU and wrote
      // 45 MB of log a second. Wait a little instead, and log once a second at most.
      const auto now = static_cast<int64_t>(WallMicros() / 1000);
      if (now - w->accept_error_logged_ms >= 1000) {
        w->accept_error_logged_ms = now;
        FLOE_LOG_WARN("accept failed: {} (retrying every {} ms)", ec.message(), kAcceptRetryMs);
      }
      // The timer belongs to the worker (a timer owned by its own handler was destroyed by
      // that handler at shutdown, under UBSan an invalid control block).
      asio::steady_timer& timer = *w->accept_retry[i];
      timer.expires_after(std::chrono::milliseconds(kAcceptRetryMs));
      timer.async_wait([w, i](std::error_code tec) {
        if (!tec && w->acceptors[i]->is_open()) Accept(w, i);
      });
      return;
    }
    Accept(w, i);
  });
}

// tcmalloc's C interface, when the binary is linked with it (weak: null with another allocator).
extern "C" {
int MallocExtension_GetNumericProperty(const char* property, size_t* value) __attribute__((weak));
void MallocExtension_ReleaseFreeMemory() __attribute__((weak));
}

// tcmalloc keeps freed pages for reuse and gives them back only as later frees come, so after
// a large value is deleted or a client with large buffers leaves, an idle node kept the memory
// (RSS 205 MB with used_memory 64 KB). Once a second, a large amount of it is returned.
void ReleaseAllocatorMemory() {
  constexpr size_t kKeepFreeBytes = size_t{32} << 20;
  if (MallocExtension_GetNumericProperty == nullptr ||
      MallocExtension_ReleaseFreeMemory == nullptr) {
    return;
  }
  size_t free_bytes = 0;
  if (MallocExtension_GetNumericProperty("tcmalloc.pageheap_free_bytes", &free_bytes) != 0 &&
      free_bytes > kKeepFreeBytes) {
    MallocExtension_ReleaseFreeMemory();
  }
}

// Once a second: idle clients, and (thread 0) allocator memory; `hz` times a second on thread
// 0: active expiry.
void Housekeeping(Worker* w, int64_t tick_ms, int64_t last_idle_check_ms) {
  const Config c = w->engine->config();
  const int64_t period_ms = std::max<int64_t>(1, 1000 / c.hz);
  w->housekeeping->expires_after(std::chrono::milliseconds(period_ms));
  w->housekeeping->async_wait([w, tick_ms, last_idle_check_ms, period_ms](std::error_code ec) {
    if (ec) return;
    const auto now = static_cast<int64_t>(WallMicros() / 1000);
    if (w->index == 0) w->engine->ActiveExpireCycle(0, 25000 / 10);
    store::Store::Reclaim();  // memory retired by this thread while it is otherwise idle
    int64_t last = last_idle_check_ms;
    if (now - last >= 1000) {
      last = now;
      if (w->index == 0) ReleaseAllocatorMemory();
      const Config cfg = w->engine->config();
      if (cfg.timeout > 0) {
        std::vector<std::shared_ptr<Connection>> idle;
        for (auto& [ptr, weak] : w->connections) {
          auto conn = weak.lock();
          if (conn && !conn->awaiting_reply() &&
              now - conn->last_interaction_ms() > cfg.timeout * 1000) {
            idle.push_back(conn);
          }
        }
        for (auto& conn : idle) conn->Close();
      }
    }
    Housekeeping(w, tick_ms + period_ms, last);
  });
}

}  // namespace

struct Server::Impl {
  Config config;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<internal::ClusterNode> cluster;
  std::vector<std::unique_ptr<Worker>> workers;
  std::atomic<bool> stopping{false};
  // Declared after the workers: destroyed first, while their io_contexts still exist.
  std::vector<std::unique_ptr<FrontEnd>> front_ends;
};

Server::Server(Config config) : impl_(new Impl) {
  impl_->config = std::move(config);
  int n = impl_->config.threads;
  // One core is left to the kernel's network stack and to clients on the same host: measured on
  // two cores (docs/perf.md), one I/O thread beats two by 1.2-1.5x with pipelining.
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  if (n <= 0) n = std::max(1, cores - 1);
  impl_->config.threads = n;
  // Spinning threads are only worth it with a core to spare; otherwise they starve the host.
  if (impl_->config.busy_poll_us < 0) impl_->config.busy_poll_us = n < cores ? 200 : 0;
  impl_->engine = std::make_unique<Engine>(impl_->config, n);
}

Server::~Server() {
  Stop();
  for (auto& w : impl_->workers) {
    if (w->thread.joinable()) w->thread.join();
  }
  // Run does this as it ends; if it ended by an exception, before the io_contexts go all the
  // same (a task ending posts to one). A second call does nothing.
  impl_->engine->analytics().Shutdown();
  impl_->engine->StopPieces();
  // Before the engine: proxy sessions belong to it. The endpoint stops first, so no handler
  // thread still reads the engine's pointer to the node.
  if (impl_->cluster) impl_->cluster->Stop();
  impl_->engine->set_cluster(nullptr);
  impl_->cluster.reset();
}

Engine& Server::engine() { return *impl_->engine; }

void Server::AddFrontEnd(std::unique_ptr<FrontEnd> front_end) {
  impl_->front_ends.push_back(std::move(front_end));
}

void Server::Stop() {
  impl_->stopping.store(true);
  for (auto& w : impl_->workers) w->io.stop();
}

Status Server::Run() {
  Impl& m = *impl_;
  FLOE_RETURN_IF_ERROR(ValidateConfig(m.config));
  const std::vector<std::string> addrs = BindAddresses(m.config.bind);
  int port = m.config.port;
  for (int i = 0; i < m.config.threads; i++) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    w->engine = m.engine.get();
    for (const std::string& a : addrs) {
      std::error_code ec;
      const auto address = asio::ip::make_address(a == "localhost" ? "127.0.0.1" : a, ec);
      if (ec) return Status::InvalidArgument("bad bind address '" + a + "': " + ec.message());
      auto acc = std::make_unique<tcp::acceptor>(w->io);
      const tcp::endpoint ep(address, static_cast<uint16_t>(port));
      acc->open(ep.protocol(), ec);
      if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec) {
        int one = 1;
        if (setsockopt(acc->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
          ec = std::error_code(errno, std::system_category());
        }
      }
      if (!ec) acc->bind(ep, ec);
      if (ec) {
        return Status::Unavailable("cannot listen on " + a + ":" + std::to_string(port) + ": " +
                                   ec.message());
      }
      if (port == 0) port = acc->local_endpoint().port();  // the other threads share it
      w->acceptors.push_back(std::move(acc));
    }
    m.workers.push_back(std::move(w));
  }
  // The signals are caught before any port listens: a SIGTERM sent as soon as the port takes
  // a connection (a supervisor, a test) was met by the default action, and the process died
  // of it instead of stopping cleanly. One that comes before the workers run is queued by the
  // signal set and handled once they do.
  std::thread leaving;
  asio::signal_set signals(m.workers[0]->io, SIGINT, SIGTERM);
  for (auto& w : m.workers) {
    for (auto& acc : w->acceptors) {
      std::error_code ec;
      acc->listen(511, ec);
      if (ec)
        return Status::Unavailable("cannot listen on port " + std::to_string(port) + ": " +
                                   ec.message());
    }
  }
  bound_port_.store(port);
  m.engine->SetBoundPort(port);
  std::vector<asio::io_context*> contexts;
  for (auto& w : m.workers) contexts.push_back(&w->io);
  for (auto& f : m.front_ends) FLOE_RETURN_IF_ERROR(f->Open(*m.engine, contexts));
  if (!m.config.cluster.empty() || !m.config.join.empty()) {
    FLOE_ASSIGN_OR_RETURN(m.cluster, internal::ClusterNode::Start(m.engine.get(), m.config, port));
    // CLUSTER LEAVE (docs/membership.md, J2): once removed, the node stops and exits 0.
    m.cluster->SetOnLeft([this] {
      FLOE_LOG_INFO("this member left the cluster: stopping");
      Stop();
    });
  }

  // SIGTERM of a member that holds no slot leaves the cluster first, as CLUSTER LEAVE does,
  // for at most 10 s, then stops anyway; a second SIGTERM (or SIGINT) stops at once
  // (docs/membership.md, J2).
  std::function<void(std::error_code, int)> on_signal;
  on_signal = [this, &m, &leaving, &signals, &on_signal](std::error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGTERM && m.cluster && !leaving.joinable() && m.cluster->CanLeave()) {
      FLOE_LOG_INFO(
          "received SIGTERM: leaving the cluster first (at most {} s; a second SIGTERM stops at "
          "once)",
          kLeaveOnTermSeconds);
      internal::ClusterNode* node = m.cluster.get();
      leaving = std::thread([this, node] {
        const Status left =
            node->RemoveMember(node->self(), std::chrono::seconds(kLeaveOnTermSeconds));
        if (left.ok()) {
          FLOE_LOG_INFO("left the cluster: stopping");
        } else {
          FLOE_LOG_WARN("did not leave the cluster ({}): stopping anyway", left.ToString());
        }
        Stop();
      });
      signals.async_wait(on_signal);
      return;
    }
    FLOE_LOG_INFO("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    Stop();
  };
  signals.async_wait(on_signal);
  for (auto& w : m.workers) {
    for (size_t i = 0; i < w->acceptors.size(); i++) {
      w->accept_retry.push_back(std::make_unique<asio::steady_timer>(w->io));
      Accept(w.get(), i);
    }
    w->housekeeping = std::make_unique<asio::steady_timer>(w->io);
    Housekeeping(w.get(), 0, 0);
  }
  FLOE_LOG_INFO("Floe {} ready to accept connections on {} port {} ({} I/O threads)", kFloeVersion,
                m.config.bind, port, m.config.threads);
  for (size_t i = 1; i < m.workers.size(); i++) {
    Worker* w = m.workers[i].get();
    w->thread = std::thread([w, busy = m.config.busy_poll_us] { RunWorker(w, busy); });
  }
  if (!m.stopping.load()) RunWorker(m.workers[0].get(), m.config.busy_poll_us);
  for (size_t i = 1; i < m.workers.size(); i++) m.workers[i]->thread.join();
  // Close what is still open, on this thread: the I/O threads have stopped.
  for (auto& w : m.workers) {
    std::vector<std::shared_ptr<Connection>> open;
    for (auto& [ptr, weak] : w->connections) {
      if (auto c = weak.lock()) open.push_back(c);
    }
    for (auto& c : open) c->Close();
  }
  for (auto& f : m.front_ends) f->Close();
  // Before the I/O threads' io_contexts go: a task ending posts its reply to one (A8).
  m.engine->analytics().Shutdown();
  m.engine->StopPieces();  // as the analytics: a piece made posts itself to an io_context
  if (m.cluster) m.cluster->Stop();
  if (leaving.joinable()) leaving.join();  // the node's Stop ends its wait
  FLOE_LOG_INFO("Floe stopped");
  return Status::OK();
}

}  // namespace floe::server
