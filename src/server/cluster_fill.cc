// Fills at a slot's owner (docs/replication.md, S12 and wiring step 5, rules F6 and F7): the
// node's loop begins a fill for every backup that wants one, scans the store for the keys of
// its filling slots once their changes up to the fill's start are closed, hands the keys'
// states to the Sender in batches, and asks the leader to make a filled backup in sync
// (RPC 306). Everything here runs on the loop but OnBackupInSync (a handler thread).

#include <algorithm>

#include "replica/replica.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_node_impl.h"
#include "server/internal/replica_store.h"

namespace floe::server::internal {
namespace {

// A batch goes to the Sender at this many puts or bytes, whichever comes first; a put that
// would take a batch past the bytes goes in the next one (alone if it is larger).
constexpr size_t kFillBatchPuts = 256;
constexpr uint64_t kFillBatchBytes = 1ull << 20;
// A pass stops reading while its fills have this many batches not yet installed at the backup,
// and hands its largest unfinished batch over once the puts it holds pass kFillBufferBytes: at
// most ~8 MiB queued and ~4 MiB read ahead per backup being filled, whatever the slot count.
constexpr uint64_t kFillWindow = 8;
constexpr uint64_t kFillBufferBytes = 4ull << 20;
// How long one step of the scans may hold the loop, and the pause before the next step.
constexpr uint64_t kFillStepUs = 5'000;
constexpr uint64_t kFillPauseUs = 1'000;
// Keys the store's cursor visits per read.
constexpr size_t kFillScanKeys = 256;

}  // namespace

void ClusterNode::Impl::BeginWantedFills(replica::Sender& sender) {
  fills_begin_pending = false;
  for (const auto& [slot, id] : sender.FillsWanted()) {
    // Unavailable while a message is in flight to it: asked again after its answer.
    if (!sender.BeginFill(slot, id).ok()) fills_begin_pending = true;
  }
}

void ClusterNode::Impl::DriveFills() {
  if (stopped.load()) return;
  Replication* r = engine->replication();
  if (r == nullptr || r->pump_stopped()) return;
  replica::Sender& sender = r->sender();
  BeginWantedFills(sender);  // F1
  const std::vector<replica::Sender::FillState> fills = sender.Fills();
  std::map<uint64_t, const replica::Sender::FillState*> by_fill;
  for (const replica::Sender::FillState& f : fills) by_fill[f.ticket.id] = &f;
  std::erase_if(fills_scanned, [&by_fill](uint64_t id) { return !by_fill.contains(id); });
  AskInSync(*r, fills);

  // F6: a pass of the store per backup, over the slots whose fills were begun and whose
  // changes up to the fill's start are in the store when it starts.
  for (const replica::Sender::FillState& f : fills) {
    if (f.done || fills_scanned.contains(f.ticket.id)) continue;
    FillPass& pass = fill_passes[f.id];
    if (pass.started) continue;  // the next pass takes it
    if (sender.closed(f.slot) < f.ticket.from) continue;
    pass.slots[f.slot] = f.ticket;
  }
  store::Store& store = engine->store();
  const uint64_t until = loop.NowMicros() + kFillStepUs;
  bool more = false;
  for (auto it = fill_passes.begin(); it != fill_passes.end();) {
    const uint32_t backup = it->first;
    FillPass& pass = it->second;
    // A fill that ended (a lost change or install, another life, a new fill) leaves the pass.
    uint64_t waiting = 0;
    for (auto s = pass.slots.begin(); s != pass.slots.end();) {
      auto f = by_fill.find(s->second.id);
      if (f == by_fill.end() || f->second->slot != s->first || f->second->id != backup) {
        pass.buffered -= pass.batch_bytes[s->first];
        pass.batches.erase(s->first);
        pass.batch_bytes.erase(s->first);
        s = pass.slots.erase(s);
        continue;
      }
      waiting += f->second->waiting;
      ++s;
    }
    if (pass.slots.empty()) {
      it = fill_passes.erase(it);
      continue;
    }
    pass.started = true;
    // Hands the slot's batch to the Sender. A fill that ended meanwhile leaves the pass (it is
    // begun again); one that refuses the batch otherwise is given up, logged.
    auto add = [&](uint16_t slot, bool last) {
      std::vector<replica::Entry> puts;
      std::vector<CapturedState>& states = pass.batches[slot];
      puts.reserve(states.size());
      for (const CapturedState& c : states) puts.push_back(c.entry());
      const uint64_t ticket_id = pass.slots[slot].id;
      Result<uint64_t> added = sender.AddFill(slot, backup, pass.slots[slot], puts, last);
      pass.buffered -= pass.batch_bytes[slot];
      pass.batches.erase(slot);
      pass.batch_bytes.erase(slot);
      if (!added.ok()) {
        if (added.status().code() != StatusCode::kFailedPrecondition) {
          FLOE_LOG_ERROR("fill of slot {} for member {}: {}", slot, backup,
                         added.status().ToString());
          fills_scanned.insert(ticket_id);
        }
        pass.slots.erase(slot);
        return;
      }
      waiting++;
      if (last) fills_scanned.insert(ticket_id);
    };
    const int64_t now_ms = static_cast<int64_t>(WallMicros() / 1000);
    while (waiting < kFillWindow && loop.NowMicros() < until && !pass.slots.empty()) {
      if (pass.keys.empty()) {
        if (pass.scanned) break;
        pass.cursor = store.Scan(pass.cursor, kFillScanKeys, [&](const store::Value& v) {
          if (pass.slots.contains(cluster::KeySlot(v.key()))) pass.keys.emplace_back(v.key());
        });
        pass.scanned = pass.cursor == 0;
        continue;
      }
      const std::string key = std::move(pass.keys.front());
      pass.keys.pop_front();
      const uint16_t slot = cluster::KeySlot(key);
      if (!pass.slots.contains(slot)) continue;
      // Read without the key's lock: values are immutable and cells serialize under their own,
      // and whatever state is read, a live change after the fill's start replaces it at the
      // backup (F3).
      Result<CapturedState> state = CaptureState(store, key, now_ms);
      if (!state.ok()) {
        // A state that cannot travel (a frame header, S2.3): this fill cannot complete. It is
        // not scanned again; the backup stays unfilled, as after a lost change.
        r->CountCaptureFailure();
        FLOE_LOG_ERROR("fill of slot {} for member {}: key not sent: {}", slot, backup,
                       state.status().ToString());
        fills_scanned.insert(pass.slots[slot].id);
        pass.buffered -= pass.batch_bytes[slot];
        pass.batches.erase(slot);
        pass.batch_bytes.erase(slot);
        pass.slots.erase(slot);
        continue;
      }
      if (state->kind != replica::EntryKind::kPut) continue;  // gone or expired meanwhile
      const uint64_t bytes = state->key.size() + state->body.size();
      if (!pass.batches[slot].empty() && pass.batch_bytes[slot] + bytes > kFillBatchBytes) {
        add(slot, false);
        if (!pass.slots.contains(slot)) continue;
      }
      pass.batches[slot].push_back(std::move(state).value());
      pass.batch_bytes[slot] += bytes;
      pass.buffered += bytes;
      if (pass.batches[slot].size() >= kFillBatchPuts ||
          pass.batch_bytes[slot] >= kFillBatchBytes) {
        add(slot, false);
      }
      // Many slots' small batches: the largest goes, so what the pass holds stays bounded.
      while (pass.buffered > kFillBufferBytes) {
        auto largest =
            std::max_element(pass.batch_bytes.begin(), pass.batch_bytes.end(),
                             [](const auto& a, const auto& b) { return a.second < b.second; });
        add(largest->first, false);
      }
    }
    if (pass.scanned && pass.keys.empty()) {
      // Every slot's last batch: what is left of each is small (kFillBufferBytes in all).
      std::vector<uint16_t> slots;
      for (const auto& [slot, ticket] : pass.slots) slots.push_back(slot);
      for (uint16_t slot : slots) add(slot, true);
      it = fill_passes.erase(it);
    } else {
      if (waiting < kFillWindow) more = true;  // the step's time ran out
      ++it;
    }
    Wake(waker);
  }
  if (more) PostFillStep(kFillPauseUs);
}

void ClusterNode::Impl::PostFillStep(uint64_t after_us) {
  if (fill_step_posted) return;
  fill_step_posted = true;
  loop.PostAt(loop.NowMicros() + after_us, [this] {
    fill_step_posted = false;
    DriveFills();
  });
}

// F7: the filled backups still listed as filling, made in sync by the leader. One request at a
// time, asked again kInSyncAgainUs after an answer; at most one backup per slot in a request
// (each commit raises the slot's version).
void ClusterNode::Impl::AskInSync(Replication& r,
                                  const std::vector<replica::Sender::FillState>& fills) {
  const uint64_t now = loop.NowMicros();
  if (in_sync_asking || now < in_sync_next_us) return;
  if (std::none_of(fills.begin(), fills.end(),
                   [](const auto& f) { return f.done && !f.in_sync; })) {
    return;
  }
  const cluster::Meta* m = meta_view.load(std::memory_order_acquire);
  if (m == nullptr) return;
  const net::NodeId self = cluster->self();
  const std::shared_ptr<const cluster::Table> table = m->table();  // keeps `me` alive
  const cluster::TableMember* me = table->FindMember(self);
  if (me == nullptr || me->life != endpoint->incarnation()) return;
  // The versions the Sender was configured at, read before its fills (W8): a fill done under
  // an older configuration than the version named is refused by the leader as stale.
  const std::vector<uint64_t> versions = r.ConfiguredVersions();
  const std::vector<replica::Sender::FillState> now_fills = r.sender().Fills();
  BackupInSyncRequest request{.owner = self, .life = me->life};
  std::set<uint16_t> named;
  for (const replica::Sender::FillState& f : now_fills) {
    if (!f.done || f.in_sync || versions[f.slot] == 0 || named.contains(f.slot)) continue;
    if (request.items.size() >= kMaxInSyncItems) break;
    named.insert(f.slot);
    request.items.push_back(
        {.slot = f.slot, .version = versions[f.slot], .backup = f.id, .n = f.received});
  }
  if (request.items.empty()) return;
  in_sync_asking = true;
  OnBackupInSync(self, EncodeBackupInSync(request), [this](Result<std::string> answer) {
    loop.Post(
        [this, ok = answer.ok(), why = answer.ok() ? std::string() : answer.status().ToString()] {
          in_sync_asking = false;
          in_sync_next_us = loop.NowMicros() + kInSyncAgainUs;
          if (!ok) FLOE_LOG_DEBUG("asking for backups in sync: {}", why);
        });
  });
}

void ClusterNode::Impl::OnBackupInSync(net::NodeId from, std::string_view bytes, rpc::Reply reply) {
  Result<BackupInSyncRequest> request = DecodeBackupInSync(bytes);
  if (!request.ok()) return reply(request.status());
  // An owner asks for its own slots; a member that forwards names the owner, checked below.
  if (!request->forwarded && request->owner != from) {
    return reply(Status::PermissionDenied("an owner asks for its own slots only"));
  }
  auto forward = [this, &request] {
    BackupInSyncRequest f = *request;
    // An owner forwarding its own request sends it as its own: the leader checks the sender.
    f.forwarded = request->owner != cluster->self();
    return EncodeBackupInSync(f);
  };
  cluster::Meta* m = LeaderOrForward(kBackupInSyncMethod, request->forwarded, forward, reply);
  if (m == nullptr) return;
  const std::shared_ptr<const cluster::Table> table = m->table();
  if (table->FindMember(from) == nullptr) {
    return reply(Status::PermissionDenied("only a member asks for backups in sync"));
  }
  const cluster::TableMember* owner = table->FindMember(static_cast<net::NodeId>(request->owner));
  if (owner == nullptr || owner->life != request->life) {
    return reply(Status::FailedPrecondition("the table lists no such life of that owner"));
  }
  cluster::Change change{.kind = cluster::Change::Kind::kBackupInSync};
  for (const InSyncItem& item : request->items) {
    const cluster::SlotState& s = table->slot(item.slot);
    const auto backup = static_cast<net::NodeId>(item.backup);
    if (s.owner != owner->id) {
      return reply(Status::FailedPrecondition("slot " + std::to_string(item.slot) +
                                              " is not that member's"));
    }
    // Made in sync already (a retry), or no longer filling there: nothing to commit for it.
    if (std::find(s.filling.begin(), s.filling.end(), backup) == s.filling.end()) continue;
    change.slots.push_back(
        {.slot = item.slot, .version = item.version, .node = backup, .seq = item.n});
  }
  if (change.slots.empty()) return reply(std::string());
  // The versions are the owner's: a slot changed since (another backup list, a life) refuses
  // the whole change, and the owner asks again from its newer table if the fill still stands.
  m->Propose(change, [reply = std::move(reply)](Status s) {
    if (!s.ok()) return reply(s);
    reply(std::string());
  });
}

// B6: slots with fewer in-sync backups than the table's replicas (a backup's restart ended its
// roles, O7) get filling ones, which their owners fill and the leader then makes in sync (F7).
// Only the planner's backup repairs: moves are migration's (not built), and removals J2's.
void ClusterNode::Impl::RepairBackups() {
  if (stopped.load() || removed.load()) return;
  loop.PostAt(loop.NowMicros() + kRepairEveryUs, [this] { RepairBackups(); });
  if (repair_proposing) return;
  cluster::Meta* m = nullptr;
  {
    MutexLock lock(&meta_mu);
    m = meta.get();
  }
  if (m == nullptr || meta_refused.load()) return;
  const consensus::State st = m->raft();
  if (!st.running || !st.leader || !st.leader_ready) return;
  const std::shared_ptr<const cluster::Table> table = m->table();
  // A cluster that makes no backups (every floe serve cluster today) plans nothing.
  if (table->members().empty() || table->replicas() == 0 || table->planner_paused()) return;
  // W17: new filling backups go to members this leader hears, which it knows a node timeout
  // after it took office.
  if (st.led_ms < timeout_us / 1000) return;
  const cluster::PlanOptions options{.max_moves = 0, .unheard = Unheard(st, *table)};
  for (const cluster::Change& change : cluster::Plan(*table, options)) {
    if (change.kind != cluster::Change::Kind::kSetBackups) continue;
    repair_proposing = true;
    FLOE_LOG_INFO("repairing the backups of {} slots", change.slots.size());
    m->Propose(change, [this](Status s) {
      if (!s.ok()) FLOE_LOG_DEBUG("repairing backups: {}", s.ToString());
      loop.Post([this] { repair_proposing = false; });
    });
    return;  // one at a time: the next plan starts from the table it made
  }
}

}  // namespace floe::server::internal
