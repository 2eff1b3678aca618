// The replication stream between members (docs/replication.md, wiring step 3, rules W1-W4):
// each member records its life in the agreed table (RPC 305), backups take REPLICATE (RPC 320)
// into their replica store, and the node's loop pumps each owner's Sender to its backups.

#include <algorithm>

#include "replica/replica.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_node_impl.h"
#include "server/internal/replica_store.h"
#include "store/store.h"

namespace floe::server::internal {

void ClusterNode::Impl::RegisterReplication() {
  // A cheap message is installed on the receiving thread: a hand-off to a handler thread per
  // message was a quarter of a backup's context switches (docs/perf.md, "Backups"). One that
  // may take long (a flush or a fill, which pass over the replica store; a large or multi-part
  // change) goes to a handler thread of class 2, above the forwarded commands that wait for
  // their changes to commit, so the loop's heartbeats and pump never wait behind it.
  endpoint->RegisterAsync(
      replica::kReplicateMethod, 2,
      [this](net::NodeId, std::string_view req, rpc::Reply reply) {
        OnReplicateInline(req, std::move(reply));
      },
      /*runs_inline=*/true);
  endpoint->RegisterAsync(kBackupInSyncMethod, rpc::kPriorityClasses - 1,
                          [this](net::NodeId from, std::string_view req, rpc::Reply reply) {
                            OnBackupInSync(from, req, std::move(reply));
                          });
  endpoint->RegisterAsync(kBackupDownMethod, rpc::kPriorityClasses - 1,
                          [this](net::NodeId from, std::string_view req, rpc::Reply reply) {
                            OnBackupDown(from, req, std::move(reply));
                          });
  endpoint->RegisterAsync(kLeaseMethod, rpc::kPriorityClasses - 1,
                          [this](net::NodeId from, std::string_view req, rpc::Reply reply) {
                            OnLease(from, req, std::move(reply));
                          });
  endpoint->RegisterAsync(kRecordLifeMethod, rpc::kPriorityClasses - 1,
                          [this](net::NodeId from, std::string_view req, rpc::Reply reply) {
                            OnRecordLife(from, req, std::move(reply));
                          });
  {
    MutexLock lock(&waker->mu);
    waker->impl = this;
  }
  if (Replication* r = engine->replication()) {
    r->SetWake([w = waker] { Wake(w); });
    // H5: a held reply waits at most twice cluster-node-timeout.
    r->SetHoldBound(2 * timeout_us);
  }
}

void ClusterNode::Impl::Wake(const std::shared_ptr<Waker>& waker) {
  if (waker->scheduled.exchange(true, std::memory_order_acq_rel)) return;
  MutexLock lock(&waker->mu);
  Impl* impl = waker->impl;
  if (impl == nullptr) return;
  impl->loop.Post([impl] { impl->PumpReplication(); });
}

// ---- W1: this process's life in the agreed table ----

void ClusterNode::Impl::RecordLife() {
  if (stopped.load() || removed.load() || meta_refused.load()) return;
  auto again = [this] {
    loop.PostAt(loop.NowMicros() + kRecordLifeEveryUs, [this] { RecordLife(); });
  };
  const cluster::Meta* m = meta_view.load(std::memory_order_acquire);
  if (m == nullptr) {
    MutexLock lock(&meta_mu);
    if (!meta_off.empty()) return;  // no agreed metadata at this member: no life to record
  }
  if (m == nullptr || !meta_caught_up.load()) return again();
  const net::NodeId self = cluster->self();
  const uint64_t life = endpoint->incarnation();
  const std::shared_ptr<const cluster::Table> table = m->table();
  const cluster::TableMember* me = table->FindMember(self);
  if (me == nullptr) return again();
  // A cluster that makes no backups records no lives: a start changes no table. (Recording
  // them at every start of an 8-member cluster made libraft 0.15 crash under TSan in most runs,
  // docs/replication.md W1; until that is understood only clusters with backups, which only
  // tests make, record them.)
  if (table->replicas() == 0) return;
  if (me->life == life) return;  // recorded
  if (me->life > life) {
    FLOE_LOG_ERROR("the agreed table lists a later life of member {} than this process's", self);
    return;
  }
  OnRecordLife(self, EncodeRecordLife({.id = self, .life = life, .forwarded = false}),
               [this, again](Result<std::string> r) {
                 if (!r.ok()) {
                   FLOE_LOG_DEBUG("recording this member's life: {}", r.status().ToString());
                 }
                 if (!stopped.load()) again();  // which then sees it recorded, or asks again
               });
}

void ClusterNode::Impl::OnRecordLife(net::NodeId from, std::string_view bytes, rpc::Reply reply) {
  Result<RecordLifeRequest> request = DecodeRecordLife(bytes);
  if (!request.ok()) return reply(request.status());
  // A member records its own life; a member that forwards names whom it asks for, and is
  // checked below to be a member (the RPC layer authenticated it).
  if (!request->forwarded && request->id != from) {
    return reply(Status::PermissionDenied("a member records its own life only"));
  }
  if (request->id >= cluster::kFirstReservedId) {
    return reply(Status::FailedPrecondition("no member " + std::to_string(request->id)));
  }
  cluster::Meta* m = LeaderOrForward(
      kRecordLifeMethod, request->forwarded,
      [&request] {
        RecordLifeRequest forward = *request;
        forward.forwarded = true;
        return EncodeRecordLife(forward);
      },
      reply);
  if (m == nullptr) return;
  const auto id = static_cast<net::NodeId>(request->id);
  const std::shared_ptr<const cluster::Table> table = m->table();
  if (table->FindMember(from) == nullptr) {
    return reply(Status::PermissionDenied("only a member asks to record a life"));
  }
  const cluster::TableMember* member = table->FindMember(id);
  if (member == nullptr) {
    return reply(Status::FailedPrecondition("no member " + std::to_string(request->id)));
  }
  if (member->life == request->life) return reply(std::string());  // a retry: recorded
  cluster::Change change{.kind = cluster::Change::Kind::kRestarted, .node = id};
  change.member.life = request->life;
  m->Propose(change, [reply = std::move(reply)](Status s) {
    if (!s.ok()) return reply(s);
    reply(std::string());
  });
}

cluster::Meta* ClusterNode::Impl::LeaderOrForward(uint16_t method, bool forwarded,
                                                  const std::function<std::string()>& forward,
                                                  rpc::Reply& reply) {
  cluster::Meta* m = nullptr;
  {
    MutexLock lock(&meta_mu);
    m = meta.get();
  }
  if (m == nullptr || meta_refused.load() || removed.load()) {
    reply(Status::Unavailable("the agreed metadata does not run at this member"));
    return nullptr;
  }
  const consensus::State st = m->raft();
  if (st.leader) return m;
  if (forwarded || st.leader_id == 0) {
    reply(Status::Unavailable("no leader of the agreed metadata here; retry"));
  } else {
    endpoint->CallAsync(st.leader_id, method, forward(), timeout_us, std::move(reply));
  }
  return nullptr;
}

// ---- W3: the backup's side ----

Result<std::string> ClusterNode::Impl::OnReplicate(std::string_view bytes) {
  Replication* r = engine->replication();
  if (r == nullptr || stopped.load()) return Status::Unavailable("no replication here");
  // Decoded as everything from a peer (S5): counts checked before sizing, every entry at most
  // kMaxEntryBytes, the bound every member shares whatever its own proto-max-bulk-len (N8).
  // The request's views point into `bytes`, alive until we answer.
  Result<replica::Request> request = replica::DecodeRequest(bytes, replica::kMaxEntryBytes);
  if (!request.ok()) return request.status();
  return replica::EncodeAnswer(r->receiver().Receive(*request));
}

namespace {

// True when installing `request` is quick: small, and with nothing that passes over the
// replica store (a flush, a fill's start or batch) or rebuilds a value from parts.
bool QuickToInstall(const replica::Request& request, size_t bytes) {
  constexpr size_t kInlineBytes = 64 * 1024;
  if (bytes > kInlineBytes) return false;
  for (const replica::Group& g : request.groups) {
    if (g.fill) return false;
    for (const replica::Change& c : g.changes) {
      if (c.more || c.part != 0) return false;
      for (const replica::Entry& e : c.entries) {
        if (e.kind == replica::EntryKind::kFlush) return false;
      }
    }
  }
  return true;
}

}  // namespace

void ClusterNode::Impl::OnReplicateInline(std::string_view bytes, rpc::Reply reply) {
  Replication* r = engine->replication();
  if (r == nullptr || stopped.load()) return reply(Status::Unavailable("no replication here"));
  Result<replica::Request> request = replica::DecodeRequest(bytes, replica::kMaxEntryBytes);
  if (!request.ok()) return reply(request.status());
  if (QuickToInstall(*request, bytes.size())) {
    return reply(replica::EncodeAnswer(r->receiver().Receive(*request)));
  }
  // The views of a decoded request point into `bytes`, which lives only while we run.
  auto copy = std::make_shared<std::string>(bytes);
  auto shared_reply = std::make_shared<rpc::Reply>(std::move(reply));
  if (!endpoint->Post(2, [this, copy, shared_reply] { (*shared_reply)(OnReplicate(*copy)); })) {
    (*shared_reply)(Status::Unavailable("stopping"));
  }
}

// ---- W4: the owner's pump ----

void ClusterNode::Impl::PumpReplication() {
  waker->scheduled.store(false, std::memory_order_release);
  if (stopped.load()) return;
  Replication* r = engine->replication();
  if (r == nullptr || r->pump_stopped()) return;
  replica::Sender& sender = r->sender();
  const uint64_t now = loop.NowMicros();
  for (uint32_t id : sender.Ready()) {
    auto backoff = replica_backoff.find(id);
    if (backoff != replica_backoff.end() && backoff->second.retry_at > now) continue;
    std::optional<std::string> message = sender.NextMessage(id);
    if (!message) continue;
    const uint64_t sent = sender.in_flight(id);
    r->CountSent();
    // The answer is handled on the loop, as the pump is: the backoff is the loop's alone.
    endpoint->CallAsync(id, replica::kReplicateMethod, std::move(*message), timeout_us,
                        [this, id, sent](Result<std::string> answer) {
                          loop.Post([this, id, sent, answer = std::move(answer)]() mutable {
                            OnReplicateAnswer(id, sent, std::move(answer));
                          });
                        });
  }
}

void ClusterNode::Impl::OnReplicateAnswer(uint32_t backup, uint64_t message,
                                          Result<std::string> answer) {
  if (stopped.load()) return;
  Replication& r = *engine->replication();
  replica::Sender& sender = r.sender();
  Result<replica::Answer> decoded =
      answer.ok() ? replica::DecodeAnswer(*answer) : Result<replica::Answer>(answer.status());
  if (!decoded.ok()) {
    // Sent again after a pause that doubles up to kRetryAtMostUs: a backup that is down (its
    // calls fail at once once the RPC layer marks it down) costs one message per pause, not
    // one per write.
    r.CountSendFailure();
    FLOE_LOG_DEBUG("REPLICATE to member {}: {}", backup, decoded.status().ToString());
    sender.OnFailed(backup, message);
    Backoff& b = replica_backoff[backup];
    b.delay_us = std::clamp<uint64_t>(b.delay_us * 2, kRetryAfterUs, kRetryAtMostUs);
    b.retry_at = loop.NowMicros() + b.delay_us;
    loop.PostAt(b.retry_at, [w = waker] { Wake(w); });
    return;
  }
  replica_backoff.erase(backup);
  if (sender.OnAnswer(backup, *decoded)) {
    // Behind, full or not its life: asked again after a pause (its log, memory or restart
    // catches up meanwhile).
    loop.PostAt(loop.NowMicros() + kResumeAfterUs, [this, backup] {
      if (stopped.load()) return;
      engine->replication()->sender().Resume(backup);
      Wake(waker);
    });
  }
  // A fill that found a message in flight to its backup begins now, before the next message.
  if (fills_begin_pending) BeginWantedFills(sender);
  Wake(waker);  // the next batch, and the committed n for the other backups
  if (!fill_passes.empty()) PostFillStep(0);  // a fill's window may have opened
}

void ClusterNode::Impl::ReplicationTick() {
  if (stopped.load()) return;
  Replication* r = engine->replication();
  loop.PostAt(loop.NowMicros() + kPumpEveryUs, [this] { ReplicationTick(); });
  // What the loop's installs retired, and what idle handler threads handed over (HandOff does
  // not advance the epoch), is freed here too: a node may run without I/O threads (tests).
  store::Store::Reclaim();
  if (r != nullptr && r->any_owned()) {
    Wake(waker);
    PostFillStep(0);  // S12: fills to begin, scan or report done
  }
  if (r != nullptr && r->any_owned() && !r->pump_stopped()) {
    WatchBackups(*r);  // B7
  } else {
    // Owning again (or, in a test, sending again), a backup is watched from then on: a pump a
    // test stopped is this owner's silence, not its backups'.
    backup_watch.clear();
  }
  if (r != nullptr) r->ExpireHolds();  // H5
  FailOverSilent();                    // O4, at the leader
}

}  // namespace floe::server::internal
