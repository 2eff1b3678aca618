// Deferred replies (docs/cluster.md, rule C3): a command whose reply comes later takes a
// ticket, and its reply comes back through the session's sink with it; FinishDeferred runs what
// was left to run here once it does (a change whose keys were reserved, rule C7; a split
// command's part; an analytics command's last step; a transaction's local commands), and a
// change run that way may then wait for its slot's backups (docs/replication.md, H3).

#include <future>
#include <map>

#include "server/internal/analytics_pool.h"
#include "server/internal/command.h"
#include "server/internal/gather.h"
#include "server/internal/replica_store.h"

namespace floe::server {

using internal::CommandSpec;
using internal::Gather;
using internal::PartDone;

namespace {

int64_t NowMs() { return static_cast<int64_t>(WallMicros() / 1000); }

}  // namespace

std::function<void(std::string)> Session::BeginDeferred() {
  // What may throw comes first: a deferral begun and then abandoned by an exception left the
  // connection waiting for a ticket nothing would answer.
  const uint64_t ticket = tickets_ + 1;
  std::function<void(std::string)> done;
  if (sink_) {
    done = [sink = sink_, ticket](std::string reply) { sink(ticket, std::move(reply)); };
  } else {
    auto promise = std::make_shared<std::promise<std::string>>();
    std::future<std::string> wait = promise->get_future();
    done = [promise](std::string reply) { promise->set_value(std::move(reply)); };
    wait_ = std::move(wait);
  }
  tickets_ = ticket;
  deferred_ = true;
  return done;
}

std::function<void(std::string)> Session::Redefer(uint64_t ticket) {
  if (sink_) {
    return [sink = sink_, ticket](std::string reply) { sink(ticket, std::move(reply)); };
  }
  auto promise = std::make_shared<std::promise<std::string>>();
  std::future<std::string> wait = promise->get_future();
  std::function<void(std::string)> deliver = [promise](std::string reply) {
    promise->set_value(std::move(reply));
  };
  wait_ = std::move(wait);
  return deliver;
}

std::string Session::HoldAgain(uint64_t ticket, std::string out, bool* held) {
  std::vector<internal::CommitWait> waits;
  bool write = false;
  if (!TakeCommitWaits(&waits, &write)) return out;
  if (held == nullptr) {
    // Tests of nodes that make no backups only: nothing is held for them.
    FLOE_LOG_ERROR("a deferred reply is not held for its backups (its caller cannot hold it)");
    return out;
  }
  try {
    // H3: deferred again under the same ticket, until its backups have its change.
    HeldReply again = MakeHeldReply(std::move(out), write);
    again.deliver = Redefer(ticket);
    *held = true;
    HoldOrFail(*engine_->replication(), std::move(waits), std::move(again));
    return std::string();
  } catch (const std::bad_alloc&) {
    // Not held (or its error could not be handed on): the command ran, so its answer is that
    // the outcome is unknown, never its reply.
    *held = false;
    return write ? internal::kHeldWriteLost : internal::kHeldReadLost;
  }
}

std::string Session::FinishDeferred(uint64_t ticket, std::string reply, bool* held) {
  ClearCommitWaits();
  if (auto at = analytics_.find(ticket); at != analytics_.end()) {
    // A frames analytics task is done (analytics_pool.h): the command runs once more, under
    // the worker lock, and its handler writes the task's reply (FinishAnalytics).
    std::shared_ptr<internal::AnalyticsTask> task = std::move(at->second);
    analytics_.erase(at);
    std::vector<std::string_view> args(task->args.begin(), task->args.end());
    std::string out;
    MutexLock lock(&engine_->worker_lock(worker_));
    resp::ReplyWriter w(&out, protocol_);
    const int64_t now_ms = NowMs();
    // The reply is an interaction (as Redis counts a reply written): a client that waited
    // longer than the idle timeout for it is not closed as idle the moment it comes.
    state_->last_interaction_ms.store(now_ms, std::memory_order_relaxed);
    finishing_ = task.get();
    struct Unset {
      internal::AnalyticsTask*& finishing;
      ~Unset() { finishing = nullptr; }
    } unset{finishing_};
    Call(task->spec, args, w, /*exclusive_held=*/false, now_ms);
    return HoldAgain(ticket, std::move(out), held);
  }
  if (auto pc = part_changes_.find(ticket); pc != part_changes_.end()) {
    // A split command's part homed here, its keys now reserved (rule C7): it runs, and its
    // reply joins the others'.
    PartChange change = std::move(pc->second);
    part_changes_.erase(pc);
    std::string bytes;
    {
      ReleasedAfter release(engine_, change.reservation.get());
      MutexLock lock(&engine_->worker_lock(worker_));
      ClearedWhile cleared(&home_cleared_);
      bytes = RunPart(change.command, NowMs());
    }
    std::vector<internal::CommitWait> waits;
    bool write = false;
    if (TakeCommitWaits(&waits, &write)) {
      // H4: the part's reply joins the others once its backups have its change.
      HeldReply part = MakeHeldReply(std::move(bytes), write);
      part.deliver = [g = std::static_pointer_cast<Gather>(change.gather),
                      i = change.part](std::string b) { PartDone(g, i, std::move(b)); };
      HoldOrFail(*engine_->replication(), std::move(waits), std::move(part));
      return std::string();
    }
    PartDone(std::static_pointer_cast<Gather>(change.gather), change.part, std::move(bytes));
    return std::string();
  }
  if (auto hc = home_changes_.find(ticket); hc != home_changes_.end()) {
    // Rule C7: the keys' holders are invalidated and the keys reserved; the change runs now.
    HomeChange change = std::move(hc->second);
    home_changes_.erase(hc);
    std::string out;
    {
      // First: the keys are released however the rest ends (a failed allocation, say).
      ReleasedAfter release(engine_, change.reservation.get());
      std::vector<std::string_view> args(change.args.begin(), change.args.end());
      const CommandSpec* spec = internal::ResolveCommand(args);
      MutexLock lock(&engine_->worker_lock(worker_));
      resp::ReplyWriter w(&out, protocol_);
      ClearedWhile cleared(&home_cleared_);
      Call(spec, args, w, /*exclusive_held=*/false, NowMs());
    }
    return HoldAgain(ticket, std::move(out), held);
  }
  auto it = local_parts_.find(ticket);
  if (it == local_parts_.end()) return reply;
  LocalPart local = std::move(it->second);
  local_parts_.erase(it);
  // The home's EXEC answered an array of the commands it ran: the ones that run here go in
  // between, in queue order. Anything else (nil: a WATCHed key changed; an error) is the answer
  // as it is, and nothing runs here.
  std::string_view rest(reply);
  size_t used = 0;
  Result<resp::Reply> whole = resp::ParseReply(rest, &used);
  const size_t remote = local.total - local.commands.size() + local.echoed.size();
  if (!whole.ok() || whole->type != resp::Reply::Type::kArray || whole->elements.size() != remote) {
    return reply;
  }
  rest.remove_prefix(rest.find('\n') + 1);  // past "*<n>\r\n"
  std::string out = "*" + std::to_string(local.total) + "\r\n";
  size_t next = 0, echoed = 0;
  for (size_t i = 0; i < local.total; i++) {
    if (next < local.commands.size() && local.commands[next].first == i) {
      if (echoed < local.echoed.size() && local.echoed[echoed] == i) {
        echoed++;
        if (!resp::ParseReply(rest, &used).ok()) return reply;
        rest.remove_prefix(used);  // the home's HELLO: this node's answers
      }
      std::vector<std::string_view> args(local.commands[next].second.begin(),
                                         local.commands[next].second.end());
      const CommandSpec* spec = internal::ResolveCommand(args);
      MutexLock lock(&engine_->worker_lock(worker_));
      resp::ReplyWriter w(&out, protocol_);
      Call(spec, args, w, /*exclusive_held=*/false, NowMs());
      next++;
    } else {
      Result<resp::Reply> one = resp::ParseReply(rest, &used);
      if (!one.ok()) return reply;
      out.append(rest.substr(0, used));
      rest.remove_prefix(used);
    }
  }
  return out;
}

}  // namespace floe::server
