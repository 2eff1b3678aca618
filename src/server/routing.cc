// Commands in a cluster (docs/cluster.md, "Commands through any node"): which node runs a
// command, the forwarding of a command to the home of its keys, the commands split by home
// (MGET, DEL, EXISTS, UNLINK, TOUCH, PFCOUNT) and those that ask every node (KEYS, SCAN,
// DBSIZE, RANDOMKEY, FLUSHALL, FLUSHDB, FRAME.LIST, JOB.LIST); JOB.STATUS and JOB.CANCEL run at
// the member their job id names (docs/frames_cluster.md, D11).
//
// Rules (each with its test in tests/e2e/test_cluster.py and cluster_routing_test.cc):
//   C1 Keys on one slot run at the slot's home, whole: a command, or a MULTI ... EXEC batch.
//   C2 A command whose keys span slots answers CROSSSLOT, except the split commands, whose
//      parts each run at their home; the whole is not atomic, each key is linearizable.
//   C3 A command waiting for another node holds back its connection's next commands, so
//      replies keep their order; the I/O thread serves its other clients meanwhile.
//   C4 A home that does not answer within cluster-node-timeout gives CLUSTERDOWN; a write then
//      may or may not have happened (never twice: the RPC layer runs a call at most once).
//   C5 Until the cloud forms, every command naming a key answers CLUSTERDOWN with the reason.
//   C6 WATCH lives at the home of the watched slot, in the client's proxy session there; a
//      transaction must touch only that slot (else CROSSSLOT). UNWATCH, DISCARD, RESET and a
//      failed EXEC make the next request to that home forget its watches first.

#include <algorithm>
#include <deque>
#include <future>
#include <map>
#include <random>

#include "cluster/cluster.h"
#include "server/internal/analytics_pool.h"
#include "server/internal/cluster_node.h"
#include "server/internal/command.h"
#include "server/internal/gather.h"
#include "server/internal/replica_store.h"

namespace floe::server {

using internal::Combine;
using internal::CommandSpec;
using internal::DecodeScanCursor;
using internal::ErrorBytes;
using internal::ForwardRequest;
using internal::Gather;
using internal::PartDone;
using internal::Unreachable;

namespace {

constexpr char kCrossSlot[] = "CROSSSLOT Keys in request don't hash to the same slot";
constexpr char kTooLarge[] =
    "ERR the command is too large to send to the node that is home to its keys (at most 1048576 "
    "commands and 16777216 arguments)";

}  // namespace

// ---------------------------------------------------------------------------------------------
// A client's requests to each home, in order (rule C3): at most one request per home in flight;
// what comes meanwhile waits and goes in the next request, several commands at once. The replies
// come back framed, one per command, and each entry gets its own.

namespace internal {

namespace {

// What a request's commands hold while they wait for their home.
size_t CommandBytes(const std::vector<std::vector<std::string>>& commands) {
  size_t n = 0;
  for (const auto& c : commands) {
    for (const std::string& a : c) n += a.size();
  }
  return n;
}

}  // namespace

struct ForwardQueues : std::enable_shared_from_this<ForwardQueues> {
  using Done = std::function<void(std::vector<std::string> replies)>;
  struct Entry {
    uint8_t protocol = 2;
    bool watching = false;  // ForwardRequest::watching, before this entry runs
    std::vector<std::vector<std::string>> commands;
    size_t count = 0;  // commands.size(), kept once they are moved into a request
    Done done;         // null: the replies are not wanted (UNWATCH)
    // A read of one key (one command) that asks the home for a copy of it (rule C8).
    std::shared_ptr<dkv::Fetch> fetch;
    // The keys its writes change: this node dropped its copies of them when the entry was
    // queued and installs none until the answer (coherence X4).
    std::vector<std::string> own_writes;
    bool changes = false;  // a write command is among them (it may wait for holders, C7)
    uint64_t order = 0;    // numbers the client's entries to every home, in its command order
  };
  struct Home {
    std::deque<Entry> waiting;
    std::vector<Entry> sent;
    bool busy = false;
    // Rule C9: the home stopped short at its answer budget; what it did not run waits in
    // `waiting` until the client has read its replies (Release). The home stays busy.
    bool held = false;
    bool close_when_idle = false;
    uint64_t seq = 0;  // the last ForwardRequest::seq sent
    // The seq whose answer `sent` waits for (0: none). An answer of another is dropped: the
    // late answer of a request whose send failed part way (FailAll answered its entries) must
    // not be taken for the next request's.
    uint64_t in_flight = 0;
  };

  // `wake`: the client reads its replies from a connection, which calls Release as it writes
  // them, and soon after `wake` (C9); without, what a home did not run is sent again at once.
  ForwardQueues(ClusterNode* n, uint64_t c, std::function<void()> wake)
      : node(n), client(c), wake_(std::move(wake)) {}

  // REQUIRES: every entry fits a request alone (ForwardFits).
  void Enqueue(uint32_t home, Entry entry) {
    entry.count = entry.commands.size();
    // Every write's keys (CommandKeys replaces what it is given: each one's are appended), or
    // the home, told this node dropped its copies (X4), would leave a copy of an earlier
    // queued write's key here unchanged.
    std::vector<std::string_view> keys, one;
    for (const auto& c : entry.commands) {
      std::vector<std::string_view> args(c.begin(), c.end());
      const CommandSpec* spec = internal::ResolveCommand(args);
      if (spec != nullptr && (spec->flags & internal::kWrite) != 0) {
        internal::CommandKeys(*spec, args, &one);
        keys.insert(keys.end(), one.begin(), one.end());
        entry.changes = true;
      }
    }
    // Each own write begun is ended, by the answer or here if the entry is never queued (a
    // count left behind would keep the key out of this node's cache for good).
    size_t begun = 0;
    try {
      entry.own_writes.reserve(keys.size());
      for (std::string_view k : keys) {
        entry.own_writes.emplace_back(k);
        node->dkv().BeginOwnWrite(k);
        begun++;
      }
      MutexLock lock(&mu);
      Home& h = homes[home];
      entry.order = ++orders;
      h.waiting.push_back(std::move(entry));
      if (h.busy) return;
      h.busy = true;
    } catch (...) {
      for (size_t i = 0; i < begun; i++) node->dkv().EndOwnWrite(entry.own_writes[i]);
      throw;
    }
    SendNext(home);
  }

  // Whether a request of the client to `home` is queued or in flight.
  bool Busy(uint32_t home) {
    MutexLock lock(&mu);
    auto it = homes.find(home);
    return it != homes.end() && it->second.busy;
  }

  // The client left: each proxy session it has goes once its home answered the last request.
  // What a home held back (C9) goes now, as Redis runs every command a client sent before it
  // left; its replies go nowhere, so nothing is held back any more. Never throws (a session's
  // end calls it).
  void CloseAll() noexcept {
    try {
      std::vector<uint32_t> now, go;
      {
        MutexLock lock(&mu);
        now.reserve(homes.size());
        go.reserve(homes.size());
        closed = true;
        for (auto& [id, h] : homes) {
          if (h.held) {
            UnholdLocked(h);
            go.push_back(id);
          }
          if (h.busy) {
            h.close_when_idle = true;
          } else {
            now.push_back(id);
          }
        }
      }
      for (uint32_t id : go) SendNext(id);  // never throws
      for (uint32_t id : now) {
        try {
          node->CloseProxy(client, id);
        } catch (const std::exception& e) {
          FLOE_LOG_ERROR("closing a client's proxy session failed: {}", e.what());
        }
      }
    } catch (const std::exception& e) {
      FLOE_LOG_ERROR("closing a client's proxy sessions failed: {}", e.what());
    }
  }

  // Rule C9, on the client's connection as it moves its replies on: a home held back sends
  // what its answer left out once the client holds less than the budget in replies (`room`),
  // or, when nothing is left to write (`drained`), if its next entry is the client's oldest
  // still to be answered (the replies behind that one cannot be written before it comes).
  void Release(bool room, bool drained) {
    if (held_homes.load(std::memory_order_acquire) == 0) return;
    std::vector<uint32_t> go;
    try {
      MutexLock lock(&mu);
      go.reserve(homes.size());  // before any home is released: nothing below throws
      uint64_t oldest = UINT64_MAX;
      for (const auto& [id, h] : homes) {
        if (!h.sent.empty()) oldest = std::min(oldest, h.sent.front().order);
        if (!h.waiting.empty()) oldest = std::min(oldest, h.waiting.front().order);
      }
      for (auto& [id, h] : homes) {
        if (!h.held) continue;
        if (room || (drained && !h.waiting.empty() && h.waiting.front().order == oldest)) {
          UnholdLocked(h);
          go.push_back(id);
        }
      }
    } catch (const std::exception& e) {
      FLOE_LOG_ERROR("releasing a client's forwarded commands failed: {}", e.what());
      return;  // nothing was released; the next write or answer tries again
    }
    for (uint32_t id : go) SendNext(id);
  }

 private:
  // REQUIRES: the home is marked busy by the caller. Never throws: were it to, the home would
  // stay busy with nothing in flight, and every later request of the client to it would wait
  // for ever; when memory runs out the entries taken and waiting are answered with an error.
  void SendNext(uint32_t home) {
    try {
      Send(home);
    } catch (const std::exception& e) {
      FLOE_LOG_ERROR("forwarding a client's commands failed: {}", e.what());
      FailAll(home);
    }
  }

  // Memory ran out: what was taken and what waits are answered with an error. Nothing under
  // the lock allocates (swaps), so the home is never left busy.
  void FailAll(uint32_t home) {
    std::vector<Entry> sent;
    std::deque<Entry> waiting;
    bool close = false;
    {
      MutexLock lock(&mu);
      Home& h = homes[home];
      sent.swap(h.sent);
      waiting.swap(h.waiting);
      h.in_flight = 0;
      h.busy = false;
      UnholdLocked(h);
      close = std::exchange(h.close_when_idle, false);
    }
    try {
      if (close) node->CloseProxy(client, home);
      static const std::string kLost = ErrorBytes(
          "OOM out of memory on this node while forwarding to the key's home: the command may "
          "or may not have run");
      Finish(sent, 0, std::string(), Status::ResourceExhausted("out of memory"), kLost);
      Finish(waiting, 0, std::string(), Status::ResourceExhausted("out of memory"), kLost);
    } catch (const std::exception& e) {
      FLOE_LOG_ERROR("answering a client's forwarded commands failed: {}", e.what());
    }
    Wake();  // the oldest entry may have changed without a reply reaching the client
  }

  // After every answer while a home is held: the answer may have made its home the oldest, or
  // made room, without a reply that reaches the connection (an UNWATCH, a split command's part
  // that is not its last).
  void Wake() {
    if (!wake_ || held_homes.load(std::memory_order_acquire) == 0) return;
    try {
      wake_();
    } catch (const std::exception& e) {
      FLOE_LOG_ERROR("waking a client's connection failed: {}", e.what());
    }
  }

  void UnholdLocked(Home& h) FLOE_REQUIRES(mu) {
    if (!h.held) return;
    h.held = false;
    held_homes.fetch_sub(1, std::memory_order_release);
  }

  void Send(uint32_t home) {
    ForwardRequest req{.origin = node->origin(), .client = client, .sent_us = NowMicros()};
    bool changes = false;
    {
      MutexLock lock(&mu);
      Home& h = homes[home];
      req.protocol = h.waiting.front().protocol;
      req.watching = h.waiting.front().watching;  // what the home holds before the batch
      req.seq = ++h.seq;
      h.in_flight = req.seq;
      uint64_t args = 0;
      while (!h.waiting.empty() && h.waiting.front().protocol == req.protocol) {
        Entry& e = h.waiting.front();
        uint64_t entry_args = 0;
        for (const auto& c : e.commands) entry_args += c.size();
        if (!h.sent.empty() && (req.commands.size() + e.count > kMaxForwardCommands ||
                                args + entry_args > kMaxForwardArgs)) {
          break;
        }
        args += entry_args;
        changes = changes || e.changes;
        if (e.fetch) req.copies.push_back(static_cast<uint32_t>(req.commands.size()));
        for (size_t j = 1; j < e.count; j++) {
          req.continues.push_back(static_cast<uint32_t>(req.commands.size() + j));
        }
        for (auto& c : e.commands) req.commands.push_back(std::move(c));
        e.commands.clear();
        h.sent.push_back(std::move(e));
        h.waiting.pop_front();
      }
    }
    const size_t n = req.commands.size();
    std::string request = EncodeForward(req);
    {
      // The entries keep their commands until the answer: what the home does not run goes
      // again (C9). No answer comes before the request leaves, below.
      MutexLock lock(&mu);
      size_t k = 0;
      for (Entry& e : homes[home].sent) {
        e.commands.assign(std::make_move_iterator(req.commands.begin() + k),
                          std::make_move_iterator(req.commands.begin() + k + e.count));
        k += e.count;
      }
    }
    const cluster::Member* m = node->map().Find(home);
    std::string addr = m != nullptr ? m->address() : std::to_string(home);
    node->ForwardEncoded(
        home, std::move(request), changes,
        [self = shared_from_this(), home, seq = req.seq, n, addr = std::move(addr)](
            Result<std::string> r) { self->OnAnswer(home, seq, n, addr, std::move(r)); });
  }

  // Rule C9: how many of `done`'s entries the home ran, from their replies (one whose replies
  // are empty frames did not run). Corruption unless the home ran a first part of them, at
  // least one, each whole.
  static Result<size_t> RanEntries(const std::vector<Entry>& done,
                                   const std::vector<std::string>& replies) {
    size_t k = 0, ran = done.size();
    for (size_t i = 0; i < done.size(); i++) {
      const bool unrun = replies[k].empty();
      for (size_t j = 1; j < done[i].count; j++) {
        if (replies[k + j].empty() != unrun) return Status::Corruption("an entry ran in part");
      }
      if (unrun && ran == done.size()) ran = i;
      if (!unrun && ran != done.size()) return Status::Corruption("an entry ran after one did not");
      k += done[i].count;
    }
    if (ran == 0) return Status::Corruption("no command ran");
    return ran;
  }

  void OnAnswer(uint32_t home, uint64_t seq, size_t n, const std::string& addr,
                Result<std::string> r) {
    std::vector<Entry> done, again;
    {
      MutexLock lock(&mu);
      Home& h = homes[home];
      if (seq != h.in_flight) return;  // its entries were answered already (FailAll)
      h.in_flight = 0;
      done.swap(h.sent);
    }
    bool handed = false;  // the replies are being handed out: never answer them twice
    try {
      size_t copies = 0;
      for (const Entry& e : done) copies += e.fetch ? 1 : 0;
      Result<std::vector<std::string>> replies = r.ok()
                                                     ? DecodeFramedReplies(*r, n + copies)
                                                     : Result<std::vector<std::string>>(r.status());
      if (replies.ok()) {
        Result<size_t> ran = RanEntries(done, *replies);
        if (!ran.ok()) {
          replies = ran.status();
        } else if (*ran < done.size()) {
          again.reserve(done.size() - *ran);
          std::move(done.begin() + static_cast<ptrdiff_t>(*ran), done.end(),
                    std::back_inserter(again));
          done.resize(*ran);
        }
      }
      std::string error;
      if (!r.ok()) {
        error = Unreachable(addr, r.status());
      } else if (!replies.ok()) {
        error = ErrorBytes("ERR the node " + addr + " sent a malformed answer");
      }
      bool more = false, close = false, held = false;
      {
        MutexLock lock(&mu);
        Home& h = homes[home];
        // What did not run goes first (it came before what waits). An allocation that fails
        // part way leaves the rest in `again`, answered below.
        const bool cut = !again.empty();
        while (!again.empty()) {
          h.waiting.push_front(std::move(again.back()));
          again.pop_back();
        }
        more = !h.waiting.empty();
        // Held back until the client has read its replies, unless it left (its replies go
        // nowhere) or has no connection to read them from.
        if (cut && wake_ && !closed) {
          h.held = held = true;
          held_homes.fetch_add(1, std::memory_order_release);
          node->stats().forwards_held.fetch_add(1, std::memory_order_relaxed);
        }
        if (!more) {
          h.busy = false;
          close = std::exchange(h.close_when_idle, false);
        }
      }
      // The next request leaves before the replies are handed out: the home stays busy.
      if (more && !held) SendNext(home);
      if (close) node->CloseProxy(client, home);
      handed = true;
      Finish(done, n, addr, std::move(replies), std::move(error));
    } catch (const std::exception& e) {
      FLOE_LOG_ERROR("handing out a forwarded answer failed: {}", e.what());
      if (!handed) {
        static const std::string kLost = ErrorBytes(
            "OOM out of memory on this node while forwarding to the key's home: the command "
            "may or may not have run");
        try {
          Finish(done, 0, std::string(), Status::ResourceExhausted("out of memory"), kLost);
          Finish(again, 0, std::string(), Status::ResourceExhausted("out of memory"), kLost);
        } catch (const std::exception& e2) {
          FLOE_LOG_ERROR("answering a client's forwarded commands failed: {}", e2.what());
        }
        FailAll(home);
      }
    }
    Wake();
  }

  // Answers the entries `done` took: from the `n` framed replies (and copies) of their request,
  // or its error (`error` when given).
  template <typename Entries>
  void Finish(Entries& done, size_t n, const std::string& addr,
              Result<std::vector<std::string>> replies, std::string error = std::string()) {
    // This node's writes are answered (or abandoned): copies of their keys may come again.
    for (const Entry& e : done) {
      for (const std::string& k : e.own_writes) node->dkv().EndOwnWrite(k);
    }
    // The copies go to the cache first (rule C8: installed under R3's checks, or not at all).
    // Each step that allocates fails alone: every entry still gets its replies.
    size_t c = n;
    for (const Entry& e : done) {
      if (!e.fetch) continue;
      try {
        if (replies.ok() && !(*replies)[c].empty()) {
          node->dkv().FinishFetch(*e.fetch, std::move((*replies)[c]));
        } else {
          node->dkv().FinishFetch(*e.fetch, Status::NotFound("no copy"));
        }
      } catch (const std::exception& ex) {
        FLOE_LOG_ERROR("installing a forwarded read's copy failed: {}", ex.what());
      }
      c++;
    }
    if (error.empty() && !replies.ok()) {
      try {
        error = Unreachable(addr, replies.status());
      } catch (const std::exception&) {
        static const std::string kInternal = ErrorBytes("ERR internal error");
        return DeliverAll(done, nullptr, kInternal);
      }
    }
    DeliverAll(done, error.empty() ? &*replies : nullptr, error);
  }

  template <typename Entries>
  static void DeliverAll(Entries& done, std::vector<std::string>* replies,
                         const std::string& error) {
    size_t k = 0;
    for (Entry& e : done) {
      if (e.done) Deliver(e, replies, k, error);
      k += e.count;
    }
  }

  // Hands an entry its replies (or `error` for each when `replies` is null). On an RPC thread,
  // outside the command boundary's net: an exception (out of memory) gives the entry an error
  // reply instead, so its client is not left waiting for ever. Never throws: the entries after
  // it get theirs.
  static void Deliver(Entry& e, std::vector<std::string>* replies, size_t first,
                      const std::string& error) {
    try {
      std::vector<std::string> mine;
      try {
        mine.reserve(e.count);
        for (size_t j = 0; j < e.count; j++) {
          mine.push_back(replies != nullptr ? std::move((*replies)[first + j]) : error);
        }
      } catch (const std::exception& ex) {
        FLOE_LOG_ERROR("handing back a forwarded command's replies failed: {}", ex.what());
        mine.assign(e.count, "-ERR internal error\r\n");
      }
      e.done(std::move(mine));  // once: a part's gather counts each answer
    } catch (const std::exception& ex) {
      // Nothing reaches the client then; its connection is told nothing more either.
      FLOE_LOG_ERROR("answering a forwarded command failed: {}", ex.what());
    }
  }

  ClusterNode* const node;
  const uint64_t client;
  const std::function<void()> wake_;
  Mutex mu;
  std::map<uint32_t, Home> homes FLOE_GUARDED_BY(mu);
  uint64_t orders FLOE_GUARDED_BY(mu) = 0;  // the last Entry::order given
  bool closed FLOE_GUARDED_BY(mu) = false;  // CloseAll ran: the client is gone
  std::atomic<int> held_homes{0};           // homes held (C9): Release's quick way out
};

}  // namespace internal

internal::ForwardQueues& Session::Queues() {
  if (!queues_) {
    queues_ = std::make_shared<internal::ForwardQueues>(engine_->cluster(), id(), forward_waker_);
  }
  return *queues_;
}

void Session::ReleaseForwards(size_t unwritten, size_t held) {
  if (queues_) queues_->Release(held < internal::ForwardAnswerBudget(), unwritten == 0);
}

bool Session::WatchingAt(uint32_t home) const {
  return std::find(watch_homes_.begin(), watch_homes_.end(), home) != watch_homes_.end();
}

void Session::CloseRemoteSessions() {
  if (queues_ && engine_->cluster() != nullptr) queues_->CloseAll();
}

void Session::ForgetRemoteWatches() {
  // In order with this client's other requests to the home: an UNWATCH of its own.
  for (uint32_t home : watch_homes_) {
    Queues().Enqueue(home, {.protocol = 2, .watching = true, .commands = {{"UNWATCH"}}});
  }
  watch_homes_.clear();
  watch_slot_ = -1;
}

std::string Session::RunPart(const std::vector<std::string>& part, int64_t now_ms, int protocol) {
  std::vector<std::string_view> views(part.begin(), part.end());
  const CommandSpec* spec = internal::ResolveCommand(views);
  std::string bytes;
  resp::ReplyWriter w(&bytes, protocol);
  Call(spec, views, w, /*exclusive_held=*/false, now_ms);
  return bytes;
}

void Session::SendParts(std::shared_ptr<void> gather_any, Parts parts, resp::ReplyWriter& out,
                        int64_t now_ms, std::shared_ptr<dkv::Fetch> fetch) {
  auto g = std::static_pointer_cast<Gather>(gather_any);
  internal::ClusterNode& node = *engine_->cluster();
  g->replies.resize(parts.size());
  size_t remote = 0;
  for (const auto& [home, commands] : parts) {
    if (home == node.self()) continue;
    remote++;
    if (!internal::ForwardFits(commands)) {
      if (fetch) node.dkv().FinishFetch(*fetch, Status::NotFound("not sent"));
      out.Error(kTooLarge);
      return;
    }
  }
  // The parts homed here run now, under this session's worker lock; a change whose keys have
  // copies elsewhere waits for their invalidation (rule C7) and runs when they are reserved.
  std::vector<std::pair<size_t, std::shared_ptr<HomeReservation>>> waiting;
  for (size_t i = 0; i < parts.size(); i++) {
    if (parts[i].first != node.self()) continue;
    std::string bytes;
    for (const auto& command : parts[i].second) {
      running_parts_ = true;
      bytes += RunPart(command, now_ms, g->how == Combine::kJoined ? protocol_ : 2);
      running_parts_ = false;
      if (part_reservation_) {
        // Only changes wait, and a part that changes keys is one command (DEL, UNLINK,
        // FLUSHALL, FLUSHDB).
        FLOE_CHECK(parts[i].second.size() == 1);
        waiting.emplace_back(i, std::move(part_reservation_));
        part_reservation_ = nullptr;
      }
    }
    g->replies[i] = std::move(bytes);
  }
  if (remote == 0 && waiting.empty()) {
    out.buffer()->append(FinishGather(*g));
    return;
  }
  // H4: the parts run here may wait for their backups; the whole reply then waits for them
  // once every part is in (with no remote part, ExecuteLocked holds the reply, H2).
  std::vector<internal::CommitWait> waits;
  bool write = false;
  const bool hold = TakeCommitWaits(&waits, &write);
  HeldReply held;
  if (hold) held = MakeHeldReply(std::string(), write);
  g->remaining.store(remote + waiting.size(), std::memory_order_relaxed);
  g->done = BeginDeferred();
  deferred_bytes_ = 0;
  if (hold) {
    held.deliver = std::move(g->done);
    g->done = [r = engine_->replication(), waits = std::move(waits),
               held = std::move(held)](std::string combined) mutable {
      held.bytes = std::move(combined);
      HoldOrFail(*r, std::move(waits), std::move(held));
    };
  }
  dkv::Dkv& d = node.dkv();
  for (auto& [i, r] : waiting) {
    const uint64_t id = ++part_tickets_ | kPartTicket;
    part_changes_[id] =
        PartChange{.gather = g, .part = i, .command = parts[i].second[0], .reservation = r};
    Reserve(d, std::move(r), [sink = sink_, id] { sink(id, std::string()); });
  }
  for (size_t i = 0; i < parts.size(); i++) {
    const uint32_t home = parts[i].first;
    if (home == node.self()) continue;
    deferred_bytes_ += internal::CommandBytes(parts[i].second);
    Queues().Enqueue(home,
                     {.protocol = static_cast<uint8_t>(
                          g->how == Combine::kAsIs || g->how == Combine::kJoined ? protocol_ : 2),
                      .watching = WatchingAt(home),
                      .commands = std::move(parts[i].second),
                      .done =
                          [g, i](std::vector<std::string> replies) {
                            std::string all;
                            for (const std::string& r : replies) all += r;
                            PartDone(g, i, std::move(all));
                          },
                      .fetch = fetch});
  }
}

namespace {

// The commands that may run from a cached copy (rule C8): reads of one key that look it up
// only through Lookup, so the pinned copy is all they see.
bool ReadsFromCopy(internal::Handler h) {
  return h == internal::CmdGet || h == internal::CmdStrLen || h == internal::CmdGetRange ||
         h == internal::CmdExists || h == internal::CmdType || h == internal::CmdTtl ||
         h == internal::CmdPTtl || h == internal::CmdExpireTime || h == internal::CmdPExpireTime ||
         h == internal::CmdMGet;
}

}  // namespace

bool Session::RouteCluster(const CommandSpec* spec, const std::vector<std::string_view>& args,
                           resp::ReplyWriter& out, int64_t now_ms, const Reject& reject) {
  internal::ClusterNode& node = *engine_->cluster();
  const internal::Handler h = spec->handler;
  if (h == internal::CmdExec) return in_multi_ && RouteExec(out, reject);
  // DISCARD outside MULTI is an error that leaves the watches, as in Redis.
  if (h == internal::CmdUnwatch || h == internal::CmdReset ||
      (h == internal::CmdDiscard && in_multi_)) {
    ForgetRemoteWatches();
    return false;
  }
  // Inside MULTI only MULTI, WATCH (refused), QUIT and RESET get here: they run here.
  if (in_multi_) return false;
  const bool fan_out = internal::KeyspaceWide(h);
  if (h == internal::CmdJobStatus || h == internal::CmdJobCancel) {
    // docs/frames_cluster.md, D11: at the member the job id names. An id that names no member
    // (or this one, or is no id) runs here, for its answer or its error.
    int64_t id = 0;
    if (!internal::ParseInt64(args[1], &id) || id < 1) return false;
    const net::NodeId member = job::Registry::MemberOf(static_cast<uint64_t>(id));
    bool known = false;
    for (const cluster::Member& m : node.map().members()) known = known || m.id == member;
    if (!known || member == node.self()) return false;
    if (!node.serving()) {
      reject(node.DownError());
      return true;
    }
    auto g = std::make_shared<Gather>();
    g->protocol = protocol_;
    std::vector<std::string> c(args.begin(), args.end());
    SendParts(g, {{member, {std::move(c)}}}, out, now_ms);
    return true;
  }
  std::vector<std::string_view> keys;
  internal::CommandKeys(*spec, args, &keys);
  if (!fan_out && keys.empty()) return false;
  if (!node.serving()) {
    reject(node.DownError());
    return true;
  }
  auto whole = [&] {
    std::vector<std::string> c(args.begin(), args.end());
    return std::vector<std::vector<std::string>>{std::move(c)};
  };
  const uint64_t members = node.map().members().size();
  if (fan_out) {
    auto g = std::make_shared<Gather>();
    g->protocol = protocol_;
    Parts parts;
    if (h == internal::CmdScan) {
      uint64_t cursor = 0, local = 0, index = 0;
      if (!internal::ParseCursor(args[1], &cursor)) {
        reject("ERR invalid cursor");
        return true;
      }
      DecodeScanCursor(cursor, &local, &index);
      if (index >= members) {
        // No member has this cursor: like a Redis cursor past its table, the scan is over. The
        // options are still checked, by a page of our own whose keys are dropped.
        std::vector<std::string> check(args.begin(), args.end());
        check[1] = "0";
        std::string page = RunPart(check, now_ms);
        if (page.starts_with("-")) {
          out.buffer()->append(page);
        } else {
          out.ArrayHeader(2);
          out.Bulk("0");
          out.ArrayHeader(0);
        }
        return true;
      }
      g->how = Combine::kScan;
      g->scan_index = index;
      g->members = members;
      std::vector<std::string> c(args.begin(), args.end());
      c[1] = std::to_string(local);
      parts.push_back({node.map().members()[index].id, {std::move(c)}});
    } else {
      g->how = h == internal::CmdKeys        ? Combine::kConcat
               : h == internal::CmdFrameList ? Combine::kSorted
               : h == internal::CmdJobList   ? Combine::kJoined
               : h == internal::CmdDbSize    ? Combine::kSum
               : h == internal::CmdFlushDb   ? Combine::kAllOk
                                             : Combine::kRandom;
      for (const cluster::Member& m : node.map().members()) parts.push_back({m.id, whole()});
    }
    SendParts(g, std::move(parts), out, now_ms);
    return true;
  }
  const uint16_t slot = cluster::KeySlot(keys[0]);
  bool one_slot = true;
  for (std::string_view k : keys) one_slot = one_slot && cluster::KeySlot(k) == slot;
  if (!one_slot) {
    const bool split = h == internal::CmdMGet || h == internal::CmdDel ||
                       h == internal::CmdExists || h == internal::CmdTouch ||
                       h == internal::CmdPfCount;
    if (!split) {
      reject(kCrossSlot);
      return true;
    }
    auto g = std::make_shared<Gather>();
    g->protocol = protocol_;
    g->how = h == internal::CmdMGet      ? Combine::kMGet
             : h == internal::CmdPfCount ? Combine::kPfCount
                                         : Combine::kSum;
    g->keys = keys.size();
    std::map<uint32_t, size_t> part_of;  // home -> index in parts
    Parts parts;
    for (size_t i = 0; i < keys.size(); i++) {
      const uint32_t home = node.Home(cluster::KeySlot(keys[i]));
      auto [it, added] = part_of.emplace(home, parts.size());
      if (added) {
        parts.push_back({home, {}});
        g->positions.emplace_back();
        if (g->how != Combine::kPfCount) {
          parts.back().second.push_back({std::string(args[0])});  // DEL k1 k2 ... per home
        }
      }
      auto& commands = parts[it->second].second;
      if (g->how == Combine::kPfCount) {
        commands.push_back({"TYPE", std::string(keys[i])});
        commands.push_back({"HLL.EXPORT", std::string(keys[i])});
      } else {
        commands[0].emplace_back(keys[i]);
      }
      g->positions[it->second].push_back(i);
    }
    SendParts(g, std::move(parts), out, now_ms);
    return true;
  }
  const uint32_t home = node.Home(slot);
  if (h == internal::CmdWatch) watch_slot_ = watch_slot_ == -1 || watch_slot_ == slot ? slot : -2;
  if (home == node.self()) return false;
  if (keys.size() == 1 && ReadsFromCopy(h) && !(queues_ && queues_->Busy(home))) {
    // Rule C8: a read of one key from a valid cached copy runs here, as a local read would.
    // Not while this client has a request to the home outstanding: a write of its own that
    // the copy does not show yet may be in it.
    dkv::Dkv& d = node.dkv();
    if (std::optional<store::ValuePtr> v = d.TryGetLocal(keys[0]); v && *v) {
      const std::pair<std::string_view, store::ValuePtr> pinned{keys[0], std::move(*v)};
      pinned_ = &pinned;
      Call(spec, args, out, /*exclusive_held=*/false, now_ms);
      pinned_ = nullptr;
      return true;
    }
    // A miss: the home hands out a copy with the reply (the next read may find it).
    auto g = std::make_shared<Gather>();
    g->protocol = protocol_;
    SendParts(g, {{home, whole()}}, out, now_ms,
              std::make_shared<dkv::Fetch>(d.StartFetch(keys[0])));
    return true;
  }
  auto g = std::make_shared<Gather>();
  g->protocol = protocol_;
  SendParts(g, {{home, whole()}}, out, now_ms);  // before the WATCH counts as held there
  if (h == internal::CmdWatch && !WatchingAt(home)) watch_homes_.push_back(home);
  return true;
}

bool Session::RouteExec(resp::ReplyWriter& out, const Reject& reject) {
  internal::ClusterNode& node = *engine_->cluster();
  int slot = watch_slot_;
  bool cross = slot == -2;
  // Which queued commands run here, after the home's EXEC: those that name no key and are not
  // keyspace-wide (PING, CLIENT, CONFIG, HELLO, ...: the connection and the node are here).
  std::vector<bool> here(queued_.size(), false);
  bool wide = false;  // a keyspace-wide command: it acts on this node's store
  std::vector<std::string_view> views, keys;
  for (size_t i = 0; i < queued_.size(); i++) {
    views.assign(queued_[i].begin(), queued_[i].end());
    const CommandSpec* spec = internal::ResolveCommand(views);
    if (spec == nullptr) continue;
    internal::CommandKeys(*spec, views, &keys);
    here[i] = keys.empty() && !internal::KeyspaceWide(spec->handler);
    wide = wide || internal::KeyspaceWide(spec->handler);
    for (std::string_view k : keys) {
      const int s = cluster::KeySlot(k);
      if (slot == -1) slot = s;
      cross = cross || s != slot;
    }
  }
  if ((slot >= 0 || wide) && !cross && !node.serving()) {
    DiscardTransaction();
    ForgetRemoteWatches();
    reject(node.DownError());
    return true;
  }
  if (cross) {
    DiscardTransaction();
    ForgetRemoteWatches();
    reject(kCrossSlot);
    return true;
  }
  const uint32_t home = slot >= 0 ? node.Home(static_cast<uint16_t>(slot)) : node.self();
  if (home == node.self()) {
    watch_homes_.clear();  // none: a watch on this slot is held by this session
    watch_slot_ = -1;
    return false;
  }
  if (queued_.size() + 2 > internal::kMaxForwardCommands) {
    DiscardTransaction();
    ForgetRemoteWatches();
    reject(kTooLarge);
    return true;
  }
  std::vector<std::vector<std::string>> batch;
  batch.reserve(queued_.size() + 2);
  batch.push_back({"MULTI"});
  LocalPart local{.total = queued_.size()};
  for (size_t i = 0; i < queued_.size(); i++) {
    if (here[i]) {
      // HELLO <version> changes the protocol of the replies after it, the home's too.
      std::vector<std::string_view> v(queued_[i].begin(), queued_[i].end());
      const CommandSpec* spec = internal::ResolveCommand(v);
      if (spec != nullptr && spec->handler == internal::CmdHello && v.size() == 2) {
        batch.push_back(queued_[i]);
        local.echoed.push_back(i);
      }
      local.commands.emplace_back(i, std::move(queued_[i]));
    } else {
      batch.push_back(std::move(queued_[i]));
    }
  }
  batch.push_back({"EXEC"});
  if (!internal::ForwardFits(batch)) {
    DiscardTransaction();
    ForgetRemoteWatches();
    reject(kTooLarge);
    return true;
  }
  // Refused at queue time: Redis discards the whole transaction, and the home's watches go
  // too (DiscardTransaction sends an UNWATCH). Otherwise EXEC at the home forgets them there.
  const bool dirty = multi_dirty_;
  const bool watching = WatchingAt(home);
  if (!dirty) watch_homes_.clear();
  DiscardTransaction();
  if (dirty) {
    out.Error("EXECABORT Transaction discarded because of previous errors.");
    return true;
  }
  auto done = BeginDeferred();
  deferred_bytes_ = internal::CommandBytes(batch);
  if (!local.commands.empty()) local_parts_.emplace(tickets_, std::move(local));
  // Only EXEC's reply is the client's; MULTI's and the QUEUED ones are dropped.
  Queues().Enqueue(home, {.protocol = static_cast<uint8_t>(protocol_),
                          .watching = watching,
                          .commands = std::move(batch),
                          .done = [done = std::move(done)](std::vector<std::string> replies) {
                            done(std::move(replies.back()));
                          }});
  return true;
}

}  // namespace floe::server
