// Removing a member that owns nothing (docs/membership.md, rule J2): CLUSTER LEAVE and FORGET
// ask the Raft leader (RPC 303), which commits RemoveMember and then removes the node from
// Raft's configuration; the removed member stops serving and its directory records it.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <string>
#include <thread>

#include "consensus/consensus.h"
#include "server/internal/cluster_node_impl.h"

namespace floe::server::internal {

namespace {

// Attempts of RemoveServer while another configuration change is in progress, 25 ms apart.
constexpr int kRemoveAttempts = 40;
// How long a member that does not lead waits for the leader's answer.
constexpr uint64_t kForwardTimeoutUs = 10'000'000;

std::string EncodeRemove(net::NodeId id, bool forwarded) {
  return EncodeRemoveRequest(RemoveRequest{.id = id, .forwarded = forwarded});
}

// The slots `id` owns, backs up (in sync or filling) or receives in `table`.
uint64_t SlotsHeld(const cluster::Table& table, net::NodeId id) {
  uint64_t n = 0;
  for (uint16_t s = 0; s < cluster::kSlots; s++) {
    const cluster::SlotState& st = table.slot(s);
    if (st.owner == id || st.moving_to == id ||
        std::find(st.backups.begin(), st.backups.end(), id) != st.backups.end() ||
        std::find(st.filling.begin(), st.filling.end(), id) != st.filling.end()) {
      n++;
    }
  }
  return n;
}

}  // namespace

Status RefuseRemovedDirectory(const std::string& dir) {
  const std::string why = ReadSmallFile(dir + "/" + kRemovedFile);
  if (why.empty()) return Status::OK();
  return Status::FailedPrecondition(
      "cannot start from " + dir + ": " + why.substr(0, why.find('\n')) +
      "; a removed member does not come back from its directory: start it with --join and a "
      "fresh --dir (docs/membership.md, J2)");
}

void ClusterNode::Impl::OnRemoveMember(std::string_view bytes, rpc::Reply reply) {
  Result<RemoveRequest> request = DecodeRemoveRequest(bytes);
  if (!request.ok()) return reply(request.status());
  const uint64_t id = request->id;
  const bool forwarded = request->forwarded;
  if (id == 0 || id >= cluster::kFirstReservedId) {
    return reply(Status::FailedPrecondition("no member " + std::to_string(id)));
  }
  cluster::Meta* m = nullptr;
  {
    MutexLock lock(&meta_mu);
    m = meta.get();
  }
  // A LEAVE asked again after this member applied its own removal is done (its first answer
  // may not have reached it).
  if (removed.load() && id == cluster->self()) return reply(std::string());
  if (m == nullptr || meta_refused.load() || removed.load()) {
    return reply(Status::Unavailable("the agreed metadata does not run at this member"));
  }
  const consensus::State st = m->raft();
  if (!st.leader) {
    if (forwarded || st.leader_id == 0) {
      return reply(Status::Unavailable("no leader of the agreed metadata here; retry"));
    }
    endpoint->CallAsync(st.leader_id, kRemoveMemberMethod, EncodeRemove(id, true),
                        kForwardTimeoutUs, [reply](Result<std::string> r) {
                          if (!r.ok() && r.status().code() != StatusCode::kFailedPrecondition) {
                            return reply(Status::Unavailable("the leader did not answer: " +
                                                             r.status().ToString()));
                          }
                          reply(std::move(r));
                        });
    return;
  }
  LeaderRemove(m, id, std::move(reply));
}

void ClusterNode::Impl::LeaderRemove(cluster::Meta* m, net::NodeId id, rpc::Reply reply) {
  const std::shared_ptr<const cluster::Table> table = m->table();
  if (table->FindMember(id) == nullptr) {
    // Never assigned: refused. Assigned and no longer listed: removed from the table before (a
    // retry after a leader change, or a second FORGET): the configuration is finished.
    if (id >= table->next_id()) {
      return reply(
          Status::FailedPrecondition("no member " + std::to_string(id) + " in the agreed table"));
    }
    return FinishRemove(m, id, true, std::move(reply), kRemoveAttempts);
  }
  if (const uint64_t held = SlotsHeld(*table, id); held > 0) {
    return reply(Status::FailedPrecondition(
        "member " + std::to_string(id) + " owns or backs up " + std::to_string(held) +
        " slots: moving them away needs migration, which is not built yet; nothing was removed"));
  }
  // Rule M4: a voter's removal must leave enough voters that answer to commit it (and every
  // later change); otherwise the metadata would stall until the silent voters came back.
  if (Status keeps = KeepsMajorityWithout(m->raft(), id, raft_election_ms.load()); !keeps.ok()) {
    if (keeps.code() != StatusCode::kFailedPrecondition) return reply(keeps);
    return reply(Status::FailedPrecondition(
        std::string(keeps.message()) +
        ": nothing was removed; start the silent voters again first, or FORGET one that is "
        "gone for good (docs/membership.md, M4)"));
  }
  // A leader removing itself could not finish: it hands leadership over, and the asker asks
  // the new leader (rule M4: a promoted member may lead).
  if (id == cluster->self()) return HandOverLeadership(m, std::move(reply));
  NoteRemoving(id);  // KeepVoters must not promote it meanwhile
  m->Propose(cluster::Change{.kind = cluster::Change::Kind::kRemoveMember, .node = id},
             [this, m, id, reply](Status proposed) {
               if (!proposed.ok() && proposed.code() != StatusCode::kFailedPrecondition) {
                 DoneRemoving(id);
                 return reply(Status::Unavailable("the removal's outcome is unknown (" +
                                                  proposed.ToString() + "); retry"));
               }
               // Refused as absent (removed meanwhile) counts as done; refused while still
               // listed (it got a slot meanwhile) is the table's reason.
               if (m->table()->FindMember(id) != nullptr) {
                 DoneRemoving(id);
                 return reply(proposed.ok() ? Status::Unavailable("the removal is not applied "
                                                                  "here yet; retry")
                                            : proposed);
               }
               FLOE_LOG_INFO("member {} removed from the agreed table", id);
               FinishRemove(m, id, true, reply, kRemoveAttempts);
             });
}

void ClusterNode::Impl::FinishRemove(cluster::Meta* m, net::NodeId id, bool was_member,
                                     rpc::Reply reply, int attempts) {
  if (stopped.load()) {
    DoneRemoving(id);
    return reply(Status::Unavailable("stopping"));
  }
  if (Status keeps = KeepsMajorityWithout(m->raft(), id, raft_election_ms.load()); !keeps.ok()) {
    DoneRemoving(id);
    return reply(Status::Unavailable("member " + std::to_string(id) +
                                     " left the agreed table, and leaves Raft once enough "
                                     "voters answer (" +
                                     std::string(keeps.message()) + "); retry"));
  }
  m->RemoveServer(id, [this, m, id, was_member, reply, attempts](Status s) {
    // NotFound: not in the configuration (removed before, or never added to Raft).
    if (s.ok() || (s.code() == StatusCode::kNotFound && was_member)) {
      FLOE_LOG_INFO("member {} removed from the agreed metadata's configuration", id);
      DoneRemoving(id);
      return reply(std::string());
    }
    if (s.code() == StatusCode::kAborted && attempts > 1) {
      loop.PostAt(loop.NowMicros() + 25'000, [this, m, id, was_member, reply, attempts] {
        FinishRemove(m, id, was_member, reply, attempts - 1);
      });
      return;
    }
    DoneRemoving(id);
    reply(Status::Unavailable("removing member " + std::to_string(id) +
                              " from Raft: " + s.ToString() + "; retry"));
  });
}

void ClusterNode::Impl::TellRemoved(RemovedNotice notice, uint64_t until) {
  if (stopped.load() || loop.NowMicros() >= until) return;
  const net::NodeId id = notice.id;
  endpoint->CallAsync(id, kRemovedNoticeMethod, EncodeRemovedNotice(notice), kTellRemovedEveryUs,
                      [this, notice, until](Result<std::string> r) {
                        // Told (or it knew), or it refused the notice: nothing more to say.
                        if (r.ok() || r.status().code() == StatusCode::kFailedPrecondition) return;
                        if (r.status().code() == StatusCode::kCancelled) return;  // stopping
                        loop.PostAt(loop.NowMicros() + kTellRemovedEveryUs,
                                    [this, notice, until] { TellRemoved(notice, until); });
                      });
}

Result<std::string> ClusterNode::Impl::OnRemovedNotice(net::NodeId from, std::string_view request) {
  Result<RemovedNotice> notice = DecodeRemovedNotice(request);
  if (!notice.ok()) return notice.status();
  const net::NodeId self = cluster->self();
  if (notice->id != self) {
    return Status::FailedPrecondition("this is member " + std::to_string(self) + ", not " +
                                      std::to_string(notice->id));
  }
  if (removed.load()) return std::string();
  const cluster::Meta* m = meta_view.load(std::memory_order_acquire);
  const std::shared_ptr<const cluster::Table> table = m != nullptr ? m->table() : nullptr;
  const cluster::ClusterId ours =
      table != nullptr && !table->cluster_id().empty() ? table->cluster_id() : recorded_id;
  if (ours.empty() || ours != notice->cluster_id) {
    return Status::FailedPrecondition("this member is not of cluster " +
                                      notice->cluster_id.ToString());
  }
  // Tables only move forward: one at least as new as the notice's that lists this member
  // contradicts it.
  if (table != nullptr && table->epoch() >= notice->epoch && table->FindMember(self) != nullptr) {
    return Status::FailedPrecondition("this member's table of epoch " +
                                      std::to_string(table->epoch()) + " lists it");
  }
  MarkRemoved("at table epoch " + std::to_string(notice->epoch) + " (member " +
              std::to_string(from) + " told it so: its own log had not applied the removal)");
  return std::string();
}

void ClusterNode::Impl::OnRemoved(const cluster::Table& table) {
  MarkRemoved("at table epoch " + std::to_string(table.epoch()));
}

void ClusterNode::Impl::MarkRemoved(const std::string& when) {
  MutexLock once(&mark_removed_mu);
  if (removed.load()) return;
  const cluster::Meta* m = meta_view.load(std::memory_order_acquire);
  const std::string cluster_id = m != nullptr && !m->table()->cluster_id().empty()
                                     ? m->table()->cluster_id().ToString()
                                     : recorded_id.ToString();
  std::string why = "this member (" + std::to_string(cluster->self()) +
                    ") was removed from cluster " + cluster_id + " " + when;
  FLOE_LOG_WARN("{}: it serves no key and stops its Raft", why);
  // A few bytes, once per life, as the cluster-id file: the Raft thread may write them.
  const std::string dir = cluster_id_path.substr(0, cluster_id_path.rfind('/'));
  if (!WriteFileDurably(dir + "/" + kRemovedFile, why + "\n")) {
    FLOE_LOG_WARN("cannot write {}/{}: {}", dir, kRemovedFile, std::strerror(errno));
  }
  why +=
      " (CLUSTER LEAVE or FORGET): it serves no key; start it again with --join and a fresh "
      "--dir";
  {
    MutexLock lock(&left_mu);
    removed_why = why;
  }
  // Last: what reads `removed` finds the reason and the file.
  removed.store(true);
  // Meta::Stop joins the Raft thread: not from it.
  loop.Post([this, why = std::move(why)] {
    MutexLock lock(&meta_mu);
    meta_off = why;
    if (meta) meta->Stop();
  });
}

bool ClusterNode::CanLeave() const {
  const cluster::Meta* m = impl_->meta_view.load(std::memory_order_acquire);
  if (m == nullptr || impl_->meta_refused.load() || impl_->removed.load() ||
      impl_->stopped.load()) {
    return false;
  }
  // A leader may leave too: it hands leadership over first (rule M4).
  if (!m->raft().running) return false;
  const std::shared_ptr<const cluster::Table> table = m->table();
  return table->FindMember(self()) != nullptr && SlotsHeld(*table, self()) == 0;
}

Status ClusterNode::RemoveMember(net::NodeId id, std::chrono::milliseconds wait,
                                 const std::atomic<bool>* cancel) {
  const auto until = std::chrono::steady_clock::now() + wait;
  auto going_on = [&] {
    return std::chrono::steady_clock::now() < until && !impl_->stopped.load() &&
           (cancel == nullptr || !cancel->load(std::memory_order_relaxed));
  };
  std::string last;  // the last "retry" answer's reason
  while (going_on()) {
    auto done = std::make_shared<std::promise<Status>>();
    std::future<Status> result = done->get_future();
    impl_->OnRemoveMember(EncodeRemove(id, false), [done](Result<std::string> r) {
      done->set_value(r.ok() ? Status::OK() : r.status());
    });
    // A member removing itself stops hearing its peers once they applied the removal, so the
    // leader's answer may not reach it: its own log applying the removal answers too.
    std::optional<Status> answer;
    while (!answer && going_on()) {
      if (result.wait_for(std::chrono::milliseconds(50)) == std::future_status::ready) {
        answer = result.get();
      } else if (id == self() && impl_->removed.load()) {
        return Status::OK();
      }
    }
    if (!answer) break;
    if (answer->ok()) {
      // The leader answered: removed from the table and from Raft. Its own log may not have
      // applied the removal (the leader stops sending to it once it is out of Raft).
      if (id == self()) impl_->MarkRemoved("by CLUSTER LEAVE");
      return *answer;
    }
    // "Retry" (no leader, a leader change, a leader that handed leadership over: rule M4) is
    // asked again within the wait; every other answer is final.
    if (answer->code() != StatusCode::kUnavailable) return *answer;
    last = std::string(answer->message());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return Status::Unavailable("the removal of member " + std::to_string(id) + " did not finish " +
                             (impl_->stopped.load() || (cancel != nullptr && cancel->load())
                                  ? std::string("before the node stopped")
                                  : "within " + std::to_string(wait.count()) + " ms") +
                             (last.empty() ? std::string() : " (" + last + ")") + "; retry");
}

bool ClusterNode::removed() const { return impl_->removed.load(); }

void ClusterNode::SetOnLeft(std::function<void()> on_left) {
  MutexLock lock(&impl_->left_mu);
  impl_->on_left = std::move(on_left);
}

void ClusterNode::Leave(uint64_t delay_us) {
  Impl* impl = impl_.get();
  impl->loop.PostAt(impl->loop.NowMicros() + delay_us, [impl] {
    std::function<void()> f;
    {
      MutexLock lock(&impl->left_mu);
      f = std::move(impl->on_left);
      impl->on_left = nullptr;
    }
    if (f) f();
  });
}

}  // namespace floe::server::internal
