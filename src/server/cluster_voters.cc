// Rule M4 (docs/membership.md): the Raft leader keeps min(5, members) voters, an odd number,
// by reconfiguring learners that are listed and up (and four voters to three); it never
// removes or demotes a voter when the voters left that answer it would not commit; a leader
// asked to remove itself first hands leadership over.

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "consensus/consensus.h"
#include "server/internal/cluster_node_impl.h"

namespace floe::server::internal {

size_t VotersWanted(size_t servers) {
  size_t n = std::min(servers, consensus::kMaxVoters);
  if (n % 2 == 0 && n > 0) n--;
  return n;
}

uint64_t SilentMs(const consensus::State& st, uint64_t id) {
  if (id == st.id) return 0;
  for (const consensus::State::Follower& f : st.followers) {
    if (f.id == id) return f.silent_ms;
  }
  return consensus::State::kNeverHeard;
}

Status KeepsMajorityWithout(const consensus::State& st, uint64_t id, uint64_t answer_ms) {
  bool is_voter = false;
  size_t voters = 0, up = 0, unsure = 0;
  std::string down;
  for (const consensus::Server& s : st.configuration) {
    if (s.role != consensus::Role::kVoter) continue;
    if (s.id == id) {
      is_voter = true;
      continue;
    }
    voters++;
    const uint64_t silent = SilentMs(st, s.id);
    if (silent <= answer_ms) {
      up++;
      continue;
    }
    // Silent for a moment (a stall, a slow disk) is not yet down; never heard by a new leader
    // may be up.
    unsure += silent < 3 * answer_ms ||
                      (silent == consensus::State::kNeverHeard && st.led_ms < 2 * answer_ms)
                  ? 1
                  : 0;
    down += (down.empty() ? "" : ", ") + std::to_string(s.id);
  }
  const size_t majority = voters / 2 + 1;
  if (!is_voter || up >= majority) return Status::OK();
  std::string why = "member " + std::to_string(id) +
                    " is a voter of the agreed metadata: " + std::to_string(voters) +
                    " voters would remain, of which " + std::to_string(up) +
                    " answer the leader (not " + down + "), fewer than the " +
                    std::to_string(majority) + " that commit a change";
  if (up + unsure >= majority) {
    return Status::Unavailable(why +
                               "; some were silent only a moment, or this leader is new: "
                               "retry");
  }
  return Status::FailedPrecondition(std::move(why));
}

void ClusterNode::Impl::NoteRemoving(uint64_t id) {
  MutexLock lock(&removing_mu);
  removing_ids[id] = std::chrono::steady_clock::now() + kRemovingFor;
}

void ClusterNode::Impl::DoneRemoving(uint64_t id) {
  MutexLock lock(&removing_mu);
  removing_ids.erase(id);
}

bool ClusterNode::Impl::BeingRemoved(uint64_t id) {
  MutexLock lock(&removing_mu);
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(removing_ids, [now](const auto& kv) { return kv.second <= now; });
  return removing_ids.contains(id);
}

bool ClusterNode::Impl::AnyBeingRemoved() {
  MutexLock lock(&removing_mu);
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(removing_ids, [now](const auto& kv) { return kv.second <= now; });
  return !removing_ids.empty();
}

void ClusterNode::Impl::KeepVoters() {
  if (stopped.load() || removed.load()) return;
  auto again = [this] {
    loop.PostAt(loop.NowMicros() + kKeepVotersEveryUs, [this] { KeepVoters(); });
  };
  cluster::Meta* view = nullptr;
  {
    MutexLock lock(&meta_mu);
    view = meta.get();
  }
  if (view == nullptr || meta_refused.load() || reconfiguring) return again();
  const consensus::State st = view->raft();
  if (!st.running || !st.leader || !st.leader_ready) {
    four_voters_since = 0;
    return again();
  }
  // A wait begun in another term (this member led before) does not count.
  if (four_voters_term != st.term) {
    four_voters_since = 0;
    four_voters_term = st.term;
  }
  const std::shared_ptr<const cluster::Table> table = view->table();
  if (table->members().empty()) return again();
  const uint64_t answer_ms = raft_election_ms.load();
  // A removal cut off between its two steps (RemoveMember committed, then the leader lost
  // before RemoveServer: rule J2) is finished here: a server the table no longer lists, its id
  // assigned, leaves Raft's configuration (a later join at its address needs it gone). Not
  // while that would leave too few voters answering to commit: the change would stall the
  // metadata.
  for (const consensus::Server& s : st.configuration) {
    if (s.id == st.id || s.id >= table->next_id() || table->FindMember(s.id) != nullptr) continue;
    if (Status keeps = KeepsMajorityWithout(st, s.id, answer_ms); !keeps.ok()) {
      if (cut_off_warned_at + 30'000'000 <= loop.NowMicros()) {
        cut_off_warned_at = loop.NowMicros();
        FLOE_LOG_WARN("member {} is no longer in the agreed table but stays in Raft: {}", s.id,
                      keeps.ToString());
      }
      continue;
    }
    reconfiguring = true;
    FLOE_LOG_INFO("member {} is no longer in the agreed table: removing it from Raft", s.id);
    const uint64_t id = s.id;
    view->RemoveServer(id, [this, id](Status r) {
      loop.Post([this, id, r] {
        reconfiguring = false;
        if (!r.ok() && r.code() != StatusCode::kNotFound && r.code() != StatusCode::kAborted) {
          FLOE_LOG_WARN("removing member {} from Raft failed: {}", id, r.ToString());
        }
        loop.PostAt(loop.NowMicros() + kKeepVotersEveryUs, [this] { KeepVoters(); });
      });
    });
    return;
  }
  // Until this leader has led for a while, a follower it has not heard from yet may be up: it
  // neither promotes nor demotes on that.
  const uint64_t silent_ms = 3 * answer_ms;
  if (st.led_ms < silent_ms) return again();
  const uint64_t now = loop.NowMicros();
  std::erase_if(promote_backoff, [&st](const auto& kv) {
    return std::none_of(st.configuration.begin(), st.configuration.end(),
                        [&kv](const consensus::Server& s) { return s.id == kv.first; });
  });
  // A learner is eligible when the table lists it, RPC's heartbeats and Raft's replication both
  // hear it, it is not being removed, and its last failed promotion is far enough behind.
  size_t voters = 0;
  bool backing_off = false;  // a listed learner whose promotion failed lately
  std::vector<uint64_t> eligible, down_voters, other_voters;
  for (const consensus::Server& s : st.configuration) {
    const bool heard = SilentMs(st, s.id) < silent_ms;
    if (s.role == consensus::Role::kVoter) {
      voters++;
      if (s.id != st.id) (heard ? other_voters : down_voters).push_back(s.id);
      continue;
    }
    if (s.role != consensus::Role::kLearner || !heard || table->FindMember(s.id) == nullptr ||
        !endpoint->PeerUp(s.id) || BeingRemoved(s.id)) {
      continue;
    }
    if (auto it = promote_backoff.find(s.id);
        it != promote_backoff.end() && now < it->second.not_before) {
      backing_off = true;
      continue;
    }
    eligible.push_back(s.id);
  }
  const size_t wanted = VotersWanted(voters + eligible.size());
  if (voters < wanted && !eligible.empty()) {
    four_voters_since = 0;
    const uint64_t id = *std::min_element(eligible.begin(), eligible.end());
    reconfiguring = true;
    FLOE_LOG_INFO(
        "reconfiguring member {} to a voter of the agreed metadata ({} voters, {} wanted)", id,
        voters, wanted);
    // Meta lives as long as the node: the pointer outlives the callback.
    view->Assign(id, consensus::Role::kVoter, [this, id](Status s) {
      loop.Post([this, id, s] {
        reconfiguring = false;
        if (s.ok()) {
          promote_backoff.erase(id);
          FLOE_LOG_INFO("member {} is a voter of the agreed metadata", id);
        } else if (s.code() == StatusCode::kAborted) {
          // Another configuration change was in progress: not the learner's failure.
          FLOE_LOG_INFO("reconfiguring member {} to a voter waits: {}", id, s.ToString());
        } else {
          PromoteBackoff& b = promote_backoff[id];
          b.failures = std::min(b.failures + 1, 16);
          const uint64_t wait =
              std::min(kPromoteBackoffUs << std::min(b.failures - 1, 8), kPromoteBackoffMaxUs);
          b.not_before = loop.NowMicros() + wait;
          FLOE_LOG_WARN("reconfiguring member {} to a voter failed: {}; not tried again for {} s",
                        id, s.ToString(), wait / 1'000'000);
        }
        loop.PostAt(loop.NowMicros() + kKeepVotersEveryUs, [this] { KeepVoters(); });
      });
    });
    return;
  }
  // Four voters commit with three, as five do, and tolerate one failure, as three do: one is
  // made a learner, a silent one first (that also lets the other three lose one), else the
  // highest id that does not lead. Only once four voters have had no eligible learner for
  // demote_after_us, no learner backs off and no removal runs (which could leave two): never
  // below three, since each voter of two holds every committed entry.
  if (voters != 4 || wanted >= voters || backing_off || AnyBeingRemoved()) {
    four_voters_since = 0;
    return again();
  }
  if (four_voters_since == 0) four_voters_since = now;
  if (now - four_voters_since < demote_after_us.load()) return again();
  std::vector<uint64_t>& pool = down_voters.empty() ? other_voters : down_voters;
  if (pool.empty()) return again();
  const uint64_t id = *std::max_element(pool.begin(), pool.end());
  if (!KeepsMajorityWithout(st, id, answer_ms).ok()) return again();
  four_voters_since = 0;
  reconfiguring = true;
  FLOE_LOG_INFO("reconfiguring member {} to a learner of the agreed metadata (4 voters, {} wanted)",
                id, wanted);
  view->Assign(id, consensus::Role::kLearner, [this, id](Status s) {
    loop.Post([this, id, s] {
      reconfiguring = false;
      if (!s.ok()) {
        FLOE_LOG_WARN("reconfiguring member {} to a learner failed: {}", id, s.ToString());
      }
      loop.PostAt(loop.NowMicros() + kKeepVotersEveryUs, [this] { KeepVoters(); });
    });
  });
}

void ClusterNode::Impl::HandOverLeadership(cluster::Meta* m, rpc::Reply reply) {
  FLOE_LOG_INFO(
      "asked to remove itself while it leads the agreed metadata: handing leadership "
      "to another voter first");
  m->TransferLeadership(0, [reply](Status s) {
    reply(Status::Unavailable(
        s.ok() ? std::string("this member led the agreed metadata and handed leadership over; "
                             "retry")
               : "this member leads the agreed metadata and could not hand leadership over (" +
                     s.ToString() + "); retry"));
  });
}

}  // namespace floe::server::internal
