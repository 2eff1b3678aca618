// Log: one canonical-raft server on a libuv loop of its own (docs/consensus.md).
//
// How it works
//
// Everything libraft and libuv touch lives in Log::Impl and is used by the raft thread only:
// the loop, the raft_uv I/O and its transport (transport.cc), struct raft, the fsm adapter and the
// set of requests raft holds. Other threads reach it through one mutex-guarded queue of Requests
// and uv_async_send; the async callback takes the whole queue and starts each request with raft. A
// Request is heap-allocated once, carries the raft request structs raft fills in, and is finished
// exactly once by Finish(), which also releases its slot of max_pending: from raft's callback, from
// a synchronous raft error, or with Cancelled when Stop closes raft before raft answered. The raft
// thread also publishes a State copy under the mutex after every loop iteration (a uv_check
// handle), so state() never touches raft.
//
// Stop sets `stopping_` under the mutex (no request is queued after that) and wakes the loop;
// the loop cancels what is queued and calls raft_close. Raft fails its own pending requests
// while closing; its close callback frees the raft_uv I/O and transport, cancels any request
// raft did not answer, and closes our two handles, so uv_run returns and the thread ends.

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "consensus/consensus.h"
#include "consensus/internal/fsm.h"
#include "consensus/internal/transport.h"

extern "C" {
#include <raft.h>
#include <raft/uv.h>
}
#include <uv.h>

// libraft 0.15 parses "host:port" addresses with strtok (when it listens and each time it
// connects to a peer), whose hidden state glibc keeps per process: two Logs in one process (tests,
// benchmarks) raced on it, one thread continuing to tokenize the other's stack buffer (reported by
// tsan in SnapshotsBringUpNewAndRestartedServers). This definition in the executable takes
// precedence over libc's for every caller, with the same contract but the state per thread, as
// strtok_r makes it.
extern "C" char* strtok(char* __restrict s, const char* __restrict delim) noexcept {
  thread_local char* next = nullptr;
  return strtok_r(s, delim, &next);
}

namespace floe::consensus {

namespace {

int RaftRole(Role role) {
  switch (role) {
    case Role::kVoter:
      return RAFT_VOTER;
    case Role::kLearner:
      return RAFT_STANDBY;
    case Role::kSpare:
      return RAFT_SPARE;
  }
  return RAFT_SPARE;
}

Role FromRaftRole(int role) {
  if (role == RAFT_VOTER) return Role::kVoter;
  if (role == RAFT_STANDBY) return Role::kLearner;
  return Role::kSpare;
}

}  // namespace

struct Request {
  enum class Kind : uint8_t { kPropose, kAdd, kAssign, kRemove, kTransfer, kConfirm };
  Kind kind;
  Log::Impl* impl = nullptr;
  IndexDone index_done;  // kPropose, kConfirm
  Done done;             // the others
  std::string entry;     // kPropose
  uint64_t id = 0;       // target server
  std::string address;   // kAdd
  Role role = Role::kVoter;
  struct raft_apply apply {};
  struct raft_change change {};
  struct raft_change assign {};  // kAdd's second step
  struct raft_transfer transfer {};
  uint64_t read_index = 0;  // kConfirm: the commit index when dispatched
  uint64_t term = 0;        // kConfirm: the term it was dispatched in
};

class Log::Impl {
 public:
  Impl(const Options& options, StateMachine* machine)
      : options_(options), fsm_(machine, options.id) {}

  // Runs the raft thread: sets up raft, reports the outcome through `started`, then runs the
  // loop until Stop.
  void Run(std::promise<Status>* started);

  Status Enqueue(Request* request) FLOE_EXCLUDES(mu_);
  void RequestStop() FLOE_EXCLUDES(mu_);
  State Snapshot() const FLOE_EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    return state_;
  }
  void Join() {
    std::lock_guard<std::mutex> lock(join_mu_);
    if (thread_.joinable()) thread_.join();
  }
  bool OnRaftThread() const { return std::this_thread::get_id() == thread_id_; }

  std::thread thread_;
  std::thread::id thread_id_;

 private:
  Status Init();
  void Close(std::function<void()> then);
  void MaybeEndDrain();
  void BeginClose();
  void Dispatch(Request* r);
  void Finish(Request* r, Status status, uint64_t index = 0) FLOE_EXCLUDES(mu_);
  Status RaftError(int rv, std::string_view what);
  Status NotLeader();
  size_t Voters() const;
  void Refresh() FLOE_EXCLUDES(mu_);
  void CancelQueued() FLOE_EXCLUDES(mu_);

  static void OnWake(uv_async_t* handle);
  static void OnCheck(uv_check_t* handle);
  static void OnApplied(struct raft_apply* req, int status, void* result);
  static void OnChanged(struct raft_change* req, int status);
  static void OnAssigned(struct raft_change* req, int status);
  static void OnTransferred(struct raft_transfer* req);
  static void OnBarrier(struct raft_barrier* req, int status);
  static void OnConfirmed(struct raft_barrier* req, int status);
  // Contract C10: a leader appends a barrier once per term it leads.
  void MaybeAppendBarrier();
  // Contract C11: one barrier for every confirmation dispatched since the last was appended.
  void MaybeAppendConfirmBarrier();

  const Options options_;
  std::mutex join_mu_;

  // Raft thread only.
  uv_loop_t loop_{};
  uv_async_t wake_{};
  uv_check_t check_{};
  uv_timer_t drain_deadline_{};
  bool draining_ = false;  // Stop was asked; waiting for the log to be on disk
  struct raft_uv_transport transport_ {};
  std::atomic<uint64_t> refused_{0};  // the transport's refused handshakes
  struct raft_io io_ {};
  internal::FsmAdapter fsm_;
  struct raft raft_ {};
  std::function<void()> after_close_;
  bool closing_ = false;
  std::unordered_set<Request*> in_raft_;
  // Contract C10: the barrier a leader appends when elected, the term it was appended in, and
  // the last term whose barrier was committed and applied here.
  struct raft_barrier barrier_ {};
  bool barrier_pending_ = false;
  uint64_t barrier_term_ = 0;
  uint64_t ready_term_ = 0;
  // Contract C11: confirmations waiting for the next barrier, and those the barrier in flight
  // (appended in confirm_term_) answers. Their requests are in in_raft_ too, so Close finishes
  // them.
  std::vector<Request*> confirm_next_;
  std::vector<Request*> confirm_inflight_;
  struct raft_barrier confirm_barrier_ {};
  bool confirm_pending_ = false;
  uint64_t confirm_term_ = 0;
  // The configuration last published, by (index, uncommitted index, size): copied only when
  // it changes.
  uint64_t published_config_[3] = {~uint64_t{0}, 0, 0};
  // At the leader: when (uv_now) each other server last answered it; cleared when it stops
  // leading.
  std::vector<std::pair<uint64_t, uint64_t>> heard_at_;
  uint64_t led_since_ = 0;  // uv_now when it last became the leader; 0 while it does not lead

  mutable Mutex mu_;
  std::deque<Request*> queue_ FLOE_GUARDED_BY(mu_);
  bool wake_ready_ FLOE_GUARDED_BY(mu_) = false;  // wake_ is initialized and not yet closed
  bool stopping_ FLOE_GUARDED_BY(mu_) = false;
  uint64_t pending_ FLOE_GUARDED_BY(mu_) = 0;   // requests accepted and not finished
  uint64_t confirms_ FLOE_GUARDED_BY(mu_) = 0;  // ... of them, kConfirm (not in pending_)
  State state_ FLOE_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------------------------
// Set-up and tear-down (raft thread).

Status Log::Impl::Init() {
  std::error_code ec;
  std::filesystem::create_directories(options_.dir, ec);
  if (ec) return Status::Unavailable("creating " + options_.dir + ": " + ec.message());
  if (int rv = uv_loop_init(&loop_); rv != 0) {
    return Status::Unavailable(std::string("uv_loop_init: ") + uv_strerror(rv));
  }
  if (int rv = internal::InitTransport(&transport_, &loop_, options_.mac, &refused_); rv != 0) {
    uv_loop_close(&loop_);
    return Status::Unavailable(std::string("transport: ") + raft_strerror(rv));
  }
  if (int rv = raft_uv_init(&io_, &loop_, options_.dir.c_str(), &transport_); rv != 0) {
    Status s = Status::Unavailable("raft_uv_init " + options_.dir + ": " + io_.errmsg);
    internal::ReleaseTransport(&transport_);
    uv_loop_close(&loop_);
    return s;
  }
  internal::GuardSends(&io_);  // T6
  // Reconnect to a peer as often as the leader would send it heartbeats, so a restarted
  // server is reached again within a heartbeat rather than raft_uv's default second.
  raft_uv_set_connect_retry_delay(&io_, static_cast<unsigned>(options_.heartbeat_timeout_ms));
  fsm_.set_raft(&raft_);
  if (int rv = raft_init(&raft_, &io_, fsm_.fsm(), options_.id, options_.address.c_str());
      rv != 0) {
    Status s = Status::Unavailable(std::string("raft_init: ") + raft_strerror(rv) + ": " +
                                   raft_errmsg(&raft_));
    raft_uv_close(&io_);
    internal::ReleaseTransport(&transport_);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    return s;
  }
  raft_.data = this;
  raft_set_election_timeout(&raft_, static_cast<unsigned>(options_.election_timeout_ms));
  raft_set_heartbeat_timeout(&raft_, static_cast<unsigned>(options_.heartbeat_timeout_ms));
  raft_set_snapshot_threshold(&raft_, static_cast<unsigned>(options_.snapshot_threshold));
  raft_set_snapshot_trailing(&raft_, static_cast<unsigned>(options_.snapshot_trailing));
  // A server cut off from the others keeps raising its term; pre-vote stops it from deposing
  // a healthy leader when it comes back (issue 11, partitions).
  raft_set_pre_vote(&raft_, true);

  Status failed;
  if (!options_.bootstrap.empty()) {
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rv = 0;
    for (const Server& server : options_.bootstrap) {
      rv = raft_configuration_add(&conf, server.id, server.address.c_str(), RaftRole(server.role));
      if (rv != 0) break;
    }
    if (rv == 0) rv = raft_bootstrap(&raft_, &conf);
    raft_configuration_close(&conf);
    // CANTBOOTSTRAP: the directory already holds a log, which wins over `bootstrap`.
    if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) failed = RaftError(rv, "bootstrap");
  }
  if (failed.ok()) {
    if (int rv = raft_start(&raft_); rv != 0) failed = RaftError(rv, "start");
  }
  if (!failed.ok()) {
    bool closed = false;
    Close([&closed] { closed = true; });
    while (!closed && uv_run(&loop_, UV_RUN_ONCE) != 0) {
    }
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    return failed;
  }
  uv_async_init(&loop_, &wake_, &Impl::OnWake);
  wake_.data = this;
  uv_check_init(&loop_, &check_);
  check_.data = this;
  uv_check_start(&check_, &Impl::OnCheck);
  uv_timer_init(&loop_, &drain_deadline_);
  drain_deadline_.data = this;
  {
    MutexLock lock(&mu_);
    wake_ready_ = true;
  }
  return Status::OK();
}

void Log::Impl::Run(std::promise<Status>* started) {
  thread_id_ = std::this_thread::get_id();
  // raft_uv writes to peers' sockets without MSG_NOSIGNAL: a peer that closed its end would
  // raise SIGPIPE and kill the process. Blocked on this thread only (the signal is directed at
  // the writing thread), the write fails with EPIPE and raft reconnects; the process's own
  // disposition is left alone.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  Status s = Init();
  if (!s.ok()) {
    started->set_value(std::move(s));
    return;
  }
  Refresh();
  started->set_value(Status::OK());
  // A Stop may have come before wake_ existed; it found nothing to wake.
  {
    MutexLock lock(&mu_);
    if (stopping_) uv_async_send(&wake_);
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  CancelQueued();
  {
    MutexLock lock(&mu_);
    state_.running = false;
    state_.leader = false;
    state_.leader_ready = false;
  }
  uv_loop_close(&loop_);
}

// Closes raft, then the transport and I/O, then our handles; `then` runs after raft's close
// callback.
void Log::Impl::Close(std::function<void()> then) {
  closing_ = true;
  after_close_ = std::move(then);
  raft_close(&raft_, [](struct raft* r) {
    auto* self = static_cast<Impl*>(r->data);
    raft_uv_close(&self->io_);
    internal::ReleaseTransport(&self->transport_);
    // Whatever raft did not answer while closing will never be answered now (confirmations
    // included: their lists only point into in_raft_).
    self->confirm_next_.clear();
    self->confirm_inflight_.clear();
    while (!self->in_raft_.empty()) {
      self->Finish(*self->in_raft_.begin(), Status::Cancelled("stopped; outcome unknown"));
    }
    if (self->after_close_) self->after_close_();
  });
}

// raft 0.15 can crash inside raft_close while entries it appended are still being written
// (measured: StopFinishesEveryPendingRequestExactlyOnce, a null chain in its entry reference
// table in about one run of 50), so Stop first waits until every entry in the local log is on
// disk (no new ones come: requests are no longer started), for at most an election timeout.
void Log::Impl::MaybeEndDrain() {
  if (draining_ && !closing_ && raft_.last_stored >= raft_last_index(&raft_)) BeginClose();
}

void Log::Impl::BeginClose() {
  if (closing_) return;
  {
    MutexLock lock(&mu_);
    wake_ready_ = false;
  }
  uv_timer_stop(&drain_deadline_);
  Close([this] {
    uv_close(reinterpret_cast<uv_handle_t*>(&wake_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&drain_deadline_), nullptr);
  });
}

void Log::Impl::RequestStop() {
  MutexLock lock(&mu_);
  if (stopping_) return;
  stopping_ = true;
  if (wake_ready_) uv_async_send(&wake_);
}

void Log::Impl::CancelQueued() {
  std::deque<Request*> batch;
  {
    MutexLock lock(&mu_);
    batch.swap(queue_);
  }
  for (Request* r : batch) Finish(r, Status::Cancelled("stopped before the request started"));
}

// ---------------------------------------------------------------------------------------------
// Requests.

Status Log::Impl::Enqueue(Request* r) {
  MutexLock lock(&mu_);
  if (stopping_) return Status::Cancelled("the log is stopped");
  if (r->kind == Request::Kind::kConfirm) {
    // Confirmations share one barrier each round, and have a bound of their own, so a flood of
    // them never takes the places of proposals and membership changes (C11).
    if (confirms_ >= kMaxConfirms) {
      return Status::ResourceExhausted(std::to_string(kMaxConfirms) +
                                       " leadership confirmations are already waiting");
    }
    confirms_++;
  } else if (pending_ >= options_.max_pending) {
    return Status::ResourceExhausted("max_pending (" + std::to_string(options_.max_pending) +
                                     ") requests are already waiting");
  } else {
    pending_++;
  }
  r->impl = this;
  queue_.push_back(r);
  uv_async_send(&wake_);
  return Status::OK();
}

void Log::Impl::OnWake(uv_async_t* handle) {
  auto* self = static_cast<Impl*>(handle->data);
  if (self->closing_) return;
  std::deque<Request*> batch;
  bool stop;
  {
    MutexLock lock(&self->mu_);
    batch.swap(self->queue_);
    stop = self->stopping_;
  }
  if (stop) {
    for (Request* r : batch) {
      self->Finish(r, Status::Cancelled("stopped before the request started"));
    }
    if (self->draining_) return;
    self->draining_ = true;
    uv_timer_start(
        &self->drain_deadline_, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->BeginClose(); },
        self->options_.election_timeout_ms, 0);
    self->MaybeEndDrain();
    return;
  }
  for (Request* r : batch) self->Dispatch(r);
  self->MaybeAppendBarrier();
  self->MaybeAppendConfirmBarrier();
  self->Refresh();
}

void Log::Impl::Dispatch(Request* r) {
  in_raft_.insert(r);
  int rv = 0;
  switch (r->kind) {
    case Request::Kind::kPropose: {
      struct raft_buffer buf;
      buf.len = internal::FramedSize(r->entry.size());
      // raft takes the buffer on success and frees it with raft_free.
      buf.base = raft_malloc(buf.len);
      if (buf.base == nullptr) {
        Finish(r, Status::ResourceExhausted("raft_malloc failed"));
        return;
      }
      internal::Frame(r->entry, static_cast<char*>(buf.base));
      std::string().swap(r->entry);
      r->apply.data = r;
      rv = raft_apply(&raft_, &r->apply, &buf, 1, &Impl::OnApplied);
      if (rv != 0) raft_free(buf.base);
      break;
    }
    case Request::Kind::kAdd: {
      if (r->role == Role::kVoter && raft_state(&raft_) == RAFT_LEADER && Voters() >= kMaxVoters) {
        Finish(r, Status::ResourceExhausted("the configuration already has 5 voters"));
        return;
      }
      const struct raft_server* same_id = nullptr;
      const struct raft_server* same_address = nullptr;
      for (unsigned i = 0; i < raft_.configuration.n; i++) {
        const struct raft_server& s = raft_.configuration.servers[i];
        if (s.id == r->id) same_id = &s;
        if (s.address != nullptr && r->address == s.address) same_address = &s;
      }
      if (same_id != nullptr || same_address != nullptr) {
        // raft_.configuration holds an uncommitted change too: one a leader change may yet
        // drop. Nothing is answered from it until it is committed (Aborted is retried).
        if (raft_.configuration_uncommitted_index != 0) {
          Finish(r, Status::Aborted("server " + std::to_string(r->id) +
                                    ": a configuration change is not yet committed; retry"));
          return;
        }
        if (same_id != same_address) {
          Finish(r, Status::AlreadyExists(same_id != nullptr
                                              ? "server " + std::to_string(r->id) + " is at " +
                                                    same_id->address + ", not " + r->address
                                              : r->address + " is server " +
                                                    std::to_string(same_address->id)));
          return;
        }
        // This very server, added before: a retry, or an add whose role a leader change cut
        // off (raft_add then raft_assign are two changes). A spare gets its role now; one
        // with a role keeps it.
        if (same_id->role != RAFT_SPARE || r->role == Role::kSpare) {
          Finish(r, Status::OK());
          return;
        }
        r->assign.data = r;
        rv = raft_assign(&raft_, &r->assign, r->id, RaftRole(r->role), &Impl::OnAssigned);
        break;
      }
      r->change.data = r;
      rv = raft_add(&raft_, &r->change, r->id, r->address.c_str(), &Impl::OnChanged);
      break;
    }
    case Request::Kind::kAssign:
      if (r->role == Role::kVoter && raft_state(&raft_) == RAFT_LEADER && Voters() >= kMaxVoters) {
        Finish(r, Status::ResourceExhausted("the configuration already has 5 voters"));
        return;
      }
      r->assign.data = r;
      rv = raft_assign(&raft_, &r->assign, r->id, RaftRole(r->role), &Impl::OnAssigned);
      break;
    case Request::Kind::kRemove:
      r->change.data = r;
      rv = raft_remove(&raft_, &r->change, r->id, &Impl::OnChanged);
      break;
    case Request::Kind::kTransfer:
      r->transfer.data = r;
      rv = raft_transfer(&raft_, &r->transfer, r->id, &Impl::OnTransferred);
      break;
    case Request::Kind::kConfirm:
      // Contract C11.
      if (raft_state(&raft_) != RAFT_LEADER) {
        Finish(r, NotLeader());
        return;
      }
      // Until its C10 barrier is applied a new leader's commit index can lag an earlier
      // leader's (Raft §5.4.2).
      if (ready_term_ != raft_.current_term) {
        Finish(r, Status::Unavailable("the leader has not committed an entry of its term yet"));
        return;
      }
      // The answer is the commit index now, not once the barrier is in: an asker waiting to
      // apply it must not also wait for the barrier.
      r->term = raft_.current_term;
      r->read_index = raft_.commit_index;
      confirm_next_.push_back(r);
      return;
  }
  if (rv != 0) Finish(r, RaftError(rv, "request"));
}

void Log::Impl::OnApplied(struct raft_apply* req, int status, void* /*result*/) {
  auto* r = static_cast<Request*>(req->data);
  if (status != 0) {
    r->impl->Finish(r, r->impl->RaftError(status, "apply"));
  } else {
    r->impl->Finish(r, Status::OK(), req->index);
  }
}

void Log::Impl::OnChanged(struct raft_change* req, int status) {
  auto* r = static_cast<Request*>(req->data);
  Impl* self = r->impl;
  if (status != 0) {
    self->Finish(r, self->RaftError(status, "configuration change"));
    return;
  }
  // raft_add makes a spare; a voter or learner needs a second, separate change.
  if (r->kind == Request::Kind::kAdd && r->role != Role::kSpare) {
    if (self->closing_) {
      self->Finish(r, Status::Cancelled("stopped after adding the server as a spare"));
      return;
    }
    r->assign.data = r;
    const int rv =
        raft_assign(&self->raft_, &r->assign, r->id, RaftRole(r->role), &Impl::OnAssigned);
    if (rv != 0) self->Finish(r, self->RaftError(rv, "assigning the role of the added server"));
    return;
  }
  self->Finish(r, Status::OK());
}

void Log::Impl::OnAssigned(struct raft_change* req, int status) {
  auto* r = static_cast<Request*>(req->data);
  Impl* self = r->impl;
  self->Finish(r, status == 0 ? Status::OK() : self->RaftError(status, "configuration change"));
}

void Log::Impl::OnConfirmed(struct raft_barrier* req, int status) {
  auto* self = static_cast<Impl*>(req->data);
  self->confirm_pending_ = false;
  std::vector<Request*> batch;
  batch.swap(self->confirm_inflight_);
  // Committed by a majority in the term it was appended in, and this server still leads that
  // term: no other leader committed anything before a request came that its read index (the
  // commit index then, in the same term) does not cover.
  const bool leads =
      raft_state(&self->raft_) == RAFT_LEADER && self->raft_.current_term == self->confirm_term_;
  for (Request* r : batch) {
    if (status != 0) {
      self->Finish(r, Status::Unavailable(std::string("leadership not confirmed: ") +
                                          raft_strerror(status)));
    } else if (!leads || r->term != self->confirm_term_) {
      self->Finish(r, Status::FailedPrecondition("not the leader: leadership moved while "
                                                 "confirming it"));
    } else {
      self->Finish(r, Status::OK(), r->read_index);
    }
  }
}

void Log::Impl::OnTransferred(struct raft_transfer* req) {
  auto* r = static_cast<Request*>(req->data);
  Impl* self = r->impl;
  raft_id leader = 0;
  const char* address = nullptr;
  raft_leader(&self->raft_, &leader, &address);
  const bool moved = raft_state(&self->raft_) != RAFT_LEADER && (r->id == 0 || leader == r->id);
  self->Finish(r, moved ? Status::OK()
                        : Status::Timeout("leadership did not move to " + std::to_string(req->id) +
                                          " within the election timeout"));
}

void Log::Impl::Finish(Request* r, Status status, uint64_t index) {
  in_raft_.erase(r);
  // So that a done sees state() agree with what it is told (a lost leadership, a new member).
  Refresh();
  {
    MutexLock lock(&mu_);
    if (r->kind == Request::Kind::kConfirm) {
      confirms_--;
    } else {
      pending_--;
    }
  }
  if (r->kind == Request::Kind::kPropose || r->kind == Request::Kind::kConfirm) {
    IndexDone done = std::move(r->index_done);
    delete r;
    if (status.ok()) {
      done(index);
    } else {
      done(std::move(status));
    }
  } else {
    Done done = std::move(r->done);
    delete r;
    done(std::move(status));
  }
}

size_t Log::Impl::Voters() const {
  size_t n = 0;
  for (unsigned i = 0; i < raft_.configuration.n; i++) {
    if (raft_.configuration.servers[i].role == RAFT_VOTER) n++;
  }
  return n;
}

Status Log::Impl::NotLeader() {
  raft_id leader = 0;
  const char* address = nullptr;
  raft_leader(&raft_, &leader, &address);
  if (leader == 0 || address == nullptr) {
    return Status::FailedPrecondition("not the leader; no leader known");
  }
  return Status::FailedPrecondition("not the leader; leader " + std::to_string(leader) + " at " +
                                    address);
}

// The one place raft's error codes become Status codes (docs/consensus.md, "Errors").
Status Log::Impl::RaftError(int rv, std::string_view what) {
  std::string text = std::string(what) + ": " + raft_strerror(rv);
  switch (rv) {
    case RAFT_NOTLEADER:
      return NotLeader();
    case RAFT_LEADERSHIPLOST:
      return Status::Unavailable(text + " (leadership lost; the outcome is unknown)");
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
      return Status::Cancelled(text + " (stopped; the outcome is unknown)");
    case RAFT_CANTCHANGE:
    case RAFT_BUSY:
      return Status::Aborted(text + " (another change is in progress; retry)");
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
      return Status::AlreadyExists(text);
    case RAFT_BADID:
    case RAFT_NOTFOUND:
      return Status::NotFound(text);
    case RAFT_BADROLE:
    case RAFT_INVALID:
    case RAFT_NAMETOOLONG:
      return Status::InvalidArgument(text);
    case RAFT_NOMEM:
    case RAFT_TOOBIG:
    case RAFT_TOOMANY:
    case RAFT_NOSPACE:
      return Status::ResourceExhausted(text);
    case RAFT_NOCONNECTION:
      return Status::Unavailable(text);
    case RAFT_MALFORMED:
    case RAFT_CORRUPT:
      return Status::Corruption(text + ": " + raft_errmsg(&raft_));
    default:
      return Status::Unavailable(text + ": " + raft_errmsg(&raft_));
  }
}

// ---------------------------------------------------------------------------------------------
// State publication.

void Log::Impl::OnCheck(uv_check_t* handle) {
  auto* self = static_cast<Impl*>(handle->data);
  self->MaybeAppendBarrier();
  self->MaybeAppendConfirmBarrier();
  self->Refresh();
  self->MaybeEndDrain();
}

// Called only from the loop's own callbacks (OnCheck, OnWake), never from inside one of raft's:
// a leader that steps down fails its pending requests while raft_state still says leader and
// its replication state is already freed, so a barrier appended from such a callback (a failed
// proposal's Finish, a failed barrier's OnBarrier) crashed in raft_barrier (SIGSEGV).
void Log::Impl::MaybeAppendBarrier() {
  // Not while Stop drains: every appended entry must be on disk before raft closes.
  if (closing_ || draining_ || barrier_pending_ || raft_state(&raft_) != RAFT_LEADER ||
      barrier_term_ == raft_.current_term) {
    return;
  }
  barrier_.data = this;
  if (raft_barrier(&raft_, &barrier_, OnBarrier) == 0) {
    barrier_pending_ = true;
    barrier_term_ = raft_.current_term;
  }
}

void Log::Impl::OnBarrier(struct raft_barrier* req, int status) {
  auto* self = static_cast<Impl*>(req->data);
  self->barrier_pending_ = false;
  if (self->closing_) return;
  const bool leads = raft_state(&self->raft_) == RAFT_LEADER;
  if (status == 0 && leads && self->raft_.current_term == self->barrier_term_) {
    self->ready_term_ = self->barrier_term_;
  } else if (leads && self->raft_.current_term == self->barrier_term_) {
    self->barrier_term_ = 0;  // failed while still leading this term: appended again
  }
  self->Refresh();
}

// From the loop's own callbacks only, as MaybeAppendBarrier. While Stop drains nothing is
// appended: the waiting confirmations are finished by Close (they are in in_raft_).
void Log::Impl::MaybeAppendConfirmBarrier() {
  if (closing_ || draining_ || confirm_pending_ || confirm_next_.empty()) return;
  std::vector<Request*> batch;
  if (raft_state(&raft_) != RAFT_LEADER) {
    batch.swap(confirm_next_);
    for (Request* r : batch) Finish(r, NotLeader());
    return;
  }
  // Dispatched in an earlier term: that term's leadership can no longer be confirmed.
  std::erase_if(confirm_next_, [&](Request* r) {
    if (r->term == raft_.current_term) return false;
    batch.push_back(r);
    return true;
  });
  for (Request* r : batch) {
    Finish(r, Status::FailedPrecondition("not the leader: leadership moved while confirming it"));
  }
  if (confirm_next_.empty()) return;
  confirm_barrier_.data = this;
  const int rv = raft_barrier(&raft_, &confirm_barrier_, OnConfirmed);
  if (rv != 0) {
    batch.clear();
    batch.swap(confirm_next_);
    for (Request* r : batch) Finish(r, RaftError(rv, "confirming leadership"));
    return;
  }
  confirm_pending_ = true;
  confirm_term_ = raft_.current_term;
  confirm_inflight_.swap(confirm_next_);
}

void Log::Impl::Refresh() {
  if (closing_) return;
  raft_id leader = 0;
  const char* address = nullptr;
  raft_leader(&raft_, &leader, &address);
  const uint64_t key[3] = {raft_.configuration_index, raft_.configuration_uncommitted_index,
                           raft_.configuration.n};
  const bool config_changed = std::memcmp(key, published_config_, sizeof(key)) != 0;
  std::vector<Server> config;
  if (config_changed) {
    std::memcpy(published_config_, key, sizeof(key));
    config.reserve(raft_.configuration.n);
    for (unsigned i = 0; i < raft_.configuration.n; i++) {
      const struct raft_server& s = raft_.configuration.servers[i];
      config.push_back({.id = s.id, .address = s.address, .role = FromRaftRole(s.role)});
    }
  }
  std::vector<State::Follower> followers;
  uint64_t led_ms = 0;
  if (raft_state(&raft_) == RAFT_LEADER && raft_.leader_state.progress != nullptr) {
    // raft keeps one progress entry per server of its configuration, in the same order.
    const uint64_t now = uv_now(&loop_);
    if (led_since_ == 0) led_since_ = now;
    led_ms = now - led_since_;
    followers.reserve(raft_.configuration.n);
    for (unsigned i = 0; i < raft_.configuration.n; i++) {
      const uint64_t id = raft_.configuration.servers[i].id;
      if (id == options_.id) continue;
      const struct raft_progress& p = raft_.leader_state.progress[i];
      auto it = std::find_if(heard_at_.begin(), heard_at_.end(),
                             [id](const auto& h) { return h.first == id; });
      if (p.recent_recv) {
        if (it == heard_at_.end()) it = heard_at_.insert(heard_at_.end(), {id, now});
        it->second = now;
      }
      followers.push_back(
          {.id = id,
           .match_index = p.match_index,
           .silent_ms = it != heard_at_.end() ? now - it->second : State::kNeverHeard});
    }
    // Servers that left the configuration.
    std::erase_if(heard_at_, [&followers](const auto& h) {
      return std::none_of(followers.begin(), followers.end(),
                          [&h](const State::Follower& f) { return f.id == h.first; });
    });
  } else {
    heard_at_.clear();
    led_since_ = 0;
  }
  MutexLock lock(&mu_);
  state_.followers = std::move(followers);
  state_.led_ms = led_ms;
  state_.id = options_.id;
  state_.running = true;
  state_.leader = raft_state(&raft_) == RAFT_LEADER;
  state_.leader_ready = state_.leader && ready_term_ == raft_.current_term;
  state_.leader_id = leader;
  state_.leader_address = address != nullptr ? address : "";
  state_.term = raft_.current_term;
  state_.commit_index = raft_.commit_index;
  state_.applied_index = raft_last_applied(&raft_);
  state_.last_index = raft_last_index(&raft_);
  state_.snapshots_taken = fsm_.snapshots_taken();
  state_.handshakes_refused = refused_.load(std::memory_order_relaxed);
  state_.snapshots_restored = fsm_.snapshots_restored();
  if (config_changed) state_.configuration = std::move(config);
}

// ---------------------------------------------------------------------------------------------
// Log: the thread-safe face.

Log::Log(uint64_t id) : id_(id) {}

Log::~Log() { Stop(); }

Result<std::unique_ptr<Log>> Log::Start(const Options& options, StateMachine* machine) {
  FLOE_RETURN_IF_ERROR(Validate(options));
  if (machine == nullptr) return Status::InvalidArgument("no state machine");
  std::unique_ptr<Log> log(new Log(options.id));
  log->impl_ = std::make_unique<Impl>(options, machine);
  // Shared with the thread, which may still be inside set_value when Start has returned.
  auto started = std::make_shared<std::promise<Status>>();
  std::future<Status> result = started->get_future();
  Impl* impl = log->impl_.get();
  impl->thread_ = std::thread([impl, started] { impl->Run(started.get()); });
  Status s = result.get();
  if (!s.ok()) {
    impl->Join();
    return s;
  }
  return log;
}

void Log::Propose(std::string entry, IndexDone done) {
  if (entry.size() > kMaxEntryBytes) {
    done(Status::InvalidArgument("entry of " + std::to_string(entry.size()) +
                                 " bytes is over the limit of " + std::to_string(kMaxEntryBytes)));
    return;
  }
  auto* r = new Request{.kind = Request::Kind::kPropose};
  r->entry = std::move(entry);
  r->index_done = std::move(done);
  if (Status s = impl_->Enqueue(r); !s.ok()) {
    IndexDone d = std::move(r->index_done);
    delete r;
    d(std::move(s));
  }
}

namespace {

void Submit(Log::Impl* impl, Request* r) {
  if (Status s = impl->Enqueue(r); !s.ok()) {
    Done d = std::move(r->done);
    delete r;
    d(std::move(s));
  }
}

}  // namespace

void Log::AddServer(uint64_t id, std::string address, Role role, Done done) {
  if (id == 0) return done(Status::InvalidArgument("server id 0"));
  if (Status s = ValidateAddress(address); !s.ok()) return done(std::move(s));
  auto* r = new Request{.kind = Request::Kind::kAdd};
  r->id = id;
  r->address = std::move(address);
  r->role = role;
  r->done = std::move(done);
  Submit(impl_.get(), r);
}

void Log::Assign(uint64_t id, Role role, Done done) {
  if (id == 0) return done(Status::InvalidArgument("server id 0"));
  auto* r = new Request{.kind = Request::Kind::kAssign};
  r->id = id;
  r->role = role;
  r->done = std::move(done);
  Submit(impl_.get(), r);
}

void Log::RemoveServer(uint64_t id, Done done) {
  if (id == 0) return done(Status::InvalidArgument("server id 0"));
  auto* r = new Request{.kind = Request::Kind::kRemove};
  r->id = id;
  r->done = std::move(done);
  Submit(impl_.get(), r);
}

void Log::TransferLeadership(uint64_t id, Done done) {
  auto* r = new Request{.kind = Request::Kind::kTransfer};
  r->id = id;
  r->done = std::move(done);
  Submit(impl_.get(), r);
}

void Log::ConfirmLeadership(IndexDone done) {
  auto* r = new Request{.kind = Request::Kind::kConfirm};
  r->index_done = std::move(done);
  if (Status s = impl_->Enqueue(r); !s.ok()) {
    IndexDone d = std::move(r->index_done);
    delete r;
    d(std::move(s));
  }
}

State Log::state() const { return impl_->Snapshot(); }

void Log::Stop() {
  if (!impl_) return;
  FLOE_CHECK_MSG(!impl_->OnRaftThread(), "Log::Stop called on the raft thread");
  impl_->RequestStop();
  impl_->Join();
}

}  // namespace floe::consensus
