// Rule M4 (docs/membership.md): the Raft leader keeps min(5, members) voters, an odd number,
// by reconfiguring learners that are listed and up; a leader asked to remove itself first hands
// leadership over.

#include <algorithm>
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
  if (!st.running || !st.leader || !st.leader_ready) return again();
  const std::shared_ptr<const cluster::Table> table = view->table();
  if (table->members().empty()) return again();
  // A removal cut off between its two steps (RemoveMember committed, then the leader lost
  // before RemoveServer: rule J2) is finished here: a server the table no longer lists, its id
  // assigned, leaves Raft's configuration (a later join at its address needs it gone).
  for (const consensus::Server& s : st.configuration) {
    if (s.id == st.id || s.id >= table->next_id() || table->FindMember(s.id) != nullptr) continue;
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
  size_t voters = 0;
  std::vector<uint64_t> eligible;
  for (const consensus::Server& s : st.configuration) {
    if (s.role == consensus::Role::kVoter) {
      voters++;
    } else if (s.role == consensus::Role::kLearner && table->FindMember(s.id) != nullptr &&
               endpoint->PeerUp(s.id)) {
      eligible.push_back(s.id);
    }
  }
  if (eligible.empty() || voters >= VotersWanted(voters + eligible.size())) return again();
  const uint64_t id = *std::min_element(eligible.begin(), eligible.end());
  reconfiguring = true;
  FLOE_LOG_INFO("reconfiguring member {} to a voter of the agreed metadata ({} voters, {} wanted)",
                id, voters, VotersWanted(voters + eligible.size()));
  // Meta lives as long as the node: the pointer outlives the callback.
  view->Assign(id, consensus::Role::kVoter, [this, id](Status s) {
    loop.Post([this, id, s] {
      reconfiguring = false;
      if (s.ok()) {
        FLOE_LOG_INFO("member {} is a voter of the agreed metadata", id);
      } else {
        FLOE_LOG_WARN("reconfiguring member {} to a voter failed: {}", id, s.ToString());
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
