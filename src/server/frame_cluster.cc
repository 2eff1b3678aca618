// The frame methods a member answers (docs/frames_cluster.md, "RPC methods"): chunks put,
// fetched and dropped in its chunk store, and whether frame ids are still live here.

#include "server/internal/frame_cluster.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "server/internal/chunk_store.h"
#include "server/internal/cluster_node_impl.h"
#include "server/internal/frame_rpc.h"
#include "server/internal/frame_value.h"
#include "wire/wire.h"

namespace floe::server::internal {

void ClusterNode::Impl::RegisterFrameMethods() {
  endpoint->Register(kPutChunksMethod, 1,
                     [this](net::NodeId, std::string_view req) { return OnPutChunks(req); });
  // Class 2, above the forwarded commands' (1), as the DKV's GET: a fetch never waits for the
  // threads forwarded commands hold (a proxy session's analytics command defers its reply and
  // fetches on the analytics pool; a blocking Call needs a class above its caller's, rpc.h).
  endpoint->Register(kGetChunkMethod, 2,
                     [this](net::NodeId, std::string_view req) { return OnGetChunk(req); });
  // Answered later: a member sends its halves of the tree, maps its own chunks on this thread,
  // and answers once the halves have (frame_map.cc; D8).
  endpoint->RegisterAsync(kMapTaskMethod, 1,
                          [this](net::NodeId, std::string_view req, rpc::Reply reply) {
                            OnMapTask(req, std::move(reply));
                          });
  endpoint->Register(kDropChunksMethod, 1,
                     [this](net::NodeId, std::string_view req) { return OnDropChunks(req); });
  // Answered later: a header stored over a name other members hold copies of waits for them to
  // go (C7), as a command's change at the home does. Class 2, above the map tasks' (1), which
  // may hold every class-1 thread for long spells: its deadline counts from here (D14).
  endpoint->RegisterAsync(kPutHeaderMethod, 2,
                          [this](net::NodeId, std::string_view req, rpc::Reply reply) {
                            OnPutHeader(req, std::move(reply));
                          });
  endpoint->Register(kFrameIdsLiveMethod, 1,
                     [this](net::NodeId, std::string_view req) { return OnFrameIdsLive(req); });
}

Status ClusterNode::Impl::CheckFrameMapVersion(uint64_t version) const {
  if (!Serving()) return Status::Unavailable("this member does not serve yet");
  const uint64_t ours = Routes().version();
  if (version != ours) {
    return Status::WrongHome("slot map version " + std::to_string(version) +
                             " (ours: " + std::to_string(ours) + ")");
  }
  return Status::OK();
}

Result<std::string> ClusterNode::Impl::OnPutChunks(std::string_view request) {
  FLOE_ASSIGN_OR_RETURN(PutChunksRequest req, DecodePutChunks(request));
  FLOE_RETURN_IF_ERROR(CheckFrameMapVersion(req.map_version));
  const cluster::SlotMap& map = Routes();
  const net::NodeId self = cluster->self();
  FLOE_RETURN_IF_ERROR(
      chunks->Put(req, [&map, self](uint16_t slot) { return map.Home(slot) == self; }));
  return std::string();
}

Result<std::string> ClusterNode::Impl::OnGetChunk(std::string_view request) {
  FLOE_ASSIGN_OR_RETURN(GetChunkRequest req, DecodeGetChunk(request));
  FLOE_RETURN_IF_ERROR(CheckFrameMapVersion(req.map_version));
  if (Routes().Home(ChunkSlot(req.group, req.index)) != cluster->self()) {
    return Status::WrongHome("chunk " + std::to_string(req.index) + " is not homed here");
  }
  FLOE_ASSIGN_OR_RETURN(std::shared_ptr<const ChunkStore::Chunk> chunk,
                        chunks->Get(req.frame_id, req.index));
  return EncodeChunkColumns(chunk->columns);
}

namespace {

// A handler's answer of no bytes, or its failure.
Result<std::string> Answer(const Status& s) {
  if (!s.ok()) return s;
  return std::string();
}

}  // namespace

void ClusterNode::Impl::OnPutHeader(std::string_view request, rpc::Reply reply) {
  // The store's deadline, from receipt: the caller's wait (ChangeTimeoutUs) less a margin for
  // the answer's way back, so that a header is never stored after its caller gave up (D14).
  // At least the longest holder wait plus half of cluster-node-timeout: a put is never refused
  // where a command's change of the key would have waited its copies out.
  const uint64_t margin = std::min(kPutHeaderMarginUs, timeout_us / 2);
  const uint64_t deadline_us = NowMicros() + timeout_us + holder_wait_us - margin;
  Result<PutHeaderRequest> req = DecodePutHeader(request);
  if (!req.ok()) return reply(req.status());
  if (Status s = CheckFrameMapVersion(req->map_version); !s.ok()) return reply(std::move(s));
  if (Routes().Home(cluster::KeySlot(req->key)) != cluster->self()) {
    return reply(Status::WrongHome("not the home of this key"));
  }
  Result<FrameHeader> header = DecodeFrameHeader(req->header);
  if (!header.ok()) return reply(header.status());
  if (dkv::Dkv::InApply()) {
    // Called under a change's stripe locks at this member (no path does: D13): waiting for
    // the name's copies here could deadlock the node's loop.
    return reply(Status::Internal("PUT_HEADER inside a change at the home"));
  }
  // C7: the name is a key homed here, and storing the header changes it; other members' copies
  // of it go first. At once when none has one; else the key is reserved (the copies
  // invalidated, or their leases waited out) and the header stored on a handler thread.
  struct Put {
    std::string key;
    FrameHeader header;
    bool replace;
    uint64_t map_version;
    uint64_t deadline_us;
    rpc::Reply reply;
  };
  auto put = std::make_shared<Put>(Put{std::string(req->key), std::move(*header), req->replace,
                                       req->map_version, deadline_us, std::move(reply)});
  // Checked again when the store runs, which may be a holder's lease later (D14).
  auto store = [this, put]() -> Status {
    FLOE_RETURN_IF_ERROR(CheckFrameMapVersion(put->map_version));
    if (Routes().Home(cluster::KeySlot(put->key)) != cluster->self()) {
      return Status::WrongHome("not the home of this key");
    }
    if (NowMicros() > put->deadline_us) {
      return Status::Aborted("not stored: its deadline passed while other members' copies of '" +
                             put->key.substr(0, 64) + "' were invalidated");
    }
    try {
      return StoreFrameHeader(*engine, put->key, std::move(put->header), put->replace, dropper);
    } catch (const std::bad_alloc&) {
      return Status::ResourceExhausted("OOM storing a frame header");
    }
  };
  Status stored;
  const std::vector<std::string_view> keys{put->key};
  if (dkv->ApplyIfFree(keys, [&] { stored = store(); })) return put->reply(Answer(stored));
  dkv->Reserve({put->key}, [this, put, store] {
    // `ready` may run on the loop thread, or on a thread releasing an earlier change of the
    // key: the store (and the reply) run on a handler thread of class 2, which no long
    // handler holds (MAP_TASKs run on class 1).
    auto job = [this, put, store] {
      const Status s = store();
      dkv->Release({put->key});
      put->reply(Answer(s));
    };
    // Refused only once the endpoint stopped: the member is going, its DKV with it (the
    // caller's wait ends at its deadline).
    endpoint->Post(2, job);
  });
}

Result<std::string> ClusterNode::Impl::OnDropChunks(std::string_view request) {
  FLOE_ASSIGN_OR_RETURN(FrameIdsRequest req, DecodeFrameIds(request));
  FLOE_RETURN_IF_ERROR(CheckFrameMapVersion(req.map_version));
  std::string out;
  wire::Writer(&out).PutVarint64(chunks->Drop(req.ids));
  return out;
}

Result<std::string> ClusterNode::Impl::OnFrameIdsLive(std::string_view request) {
  FLOE_ASSIGN_OR_RETURN(FrameIdsRequest req, DecodeFrameIds(request));
  FLOE_RETURN_IF_ERROR(CheckFrameMapVersion(req.map_version));
  std::vector<FrameIdState> states;
  states.reserve(req.ids.size());
  Engine::FrameTotals& t = *engine->frame_totals();
  // At most kMaxFrameIds ids (the decoder's cap), looked up 1,024 at a time so that a long list
  // holds ids_mu (which every frame value's birth and death takes) for short spells only.
  constexpr size_t kIdsPerLock = 1024;
  for (size_t at = 0; at < req.ids.size(); at += kIdsPerLock) {
    MutexLock lock(&t.ids_mu);
    const size_t end = std::min(req.ids.size(), at + kIdsPerLock);
    for (size_t i = at; i < end; i++) {
      const uint64_t id = req.ids[i];
      if (t.live_ids.contains(id)) {
        states.push_back(FrameIdState::kLive);
      } else if (t.importing_ids.contains(id)) {
        states.push_back(FrameIdState::kImporting);
      } else {
        states.push_back(FrameIdState::kGone);
      }
    }
  }
  return EncodeFrameIdStates(states);
}

void ClusterNode::Impl::SweepTick(ClusterNode* node) {
  if (stopped.load()) return;
  node->SweepChunks([](uint64_t) {});
  loop.PostAt(loop.NowMicros() + kChunkSweepUs, [this, node] { SweepTick(node); });
}

void ClusterNode::SweepChunks(std::function<void(uint64_t dropped)> done) {
  const cluster::SlotMap& map = impl_->Routes();
  // The sets here by the home of their header slot, in requests of at most kMaxFrameIds ids
  // (rule 3 of frame_rpc.h).
  std::vector<std::pair<net::NodeId, std::vector<uint64_t>>> by_home;
  {
    std::map<net::NodeId, size_t> open;  // each home's request being filled
    for (const auto& [id, slot] : impl_->chunks->Sets()) {
      const net::NodeId home = map.Home(slot);
      if (home == 0) continue;
      auto it = open.find(home);
      if (it == open.end() || by_home[it->second].second.size() >= kMaxFrameIds) {
        by_home.emplace_back(home, std::vector<uint64_t>());
        it = open.insert_or_assign(home, by_home.size() - 1).first;
      }
      by_home[it->second].second.push_back(id);
    }
  }
  if (by_home.empty()) return done(0);
  struct Sweep {
    std::atomic<size_t> pending;
    std::atomic<uint64_t> dropped{0};
    std::function<void(uint64_t)> done;
  };
  auto sweep = std::make_shared<Sweep>();
  sweep->pending.store(by_home.size());
  sweep->done = std::move(done);
  ChunkStore* store = impl_->chunks.get();
  for (auto& [home, ids] : by_home) {
    FrameIdsRequest q{.map_version = map.version(), .ids = std::move(ids)};
    std::string request = EncodeFrameIds(q);
    CallFrame(home, kFrameIdsLiveMethod, std::move(request),
              [sweep, store, asked = std::move(q.ids)](Result<std::string> r) {
                // A home that does not answer changes no count: its sets wait for the next.
                if (r.ok()) {
                  Result<std::vector<FrameIdState>> states = DecodeFrameIdStates(*r, asked.size());
                  if (states.ok()) {
                    for (size_t i = 0; i < asked.size(); i++) {
                      // relaxed: the count is read after the last decrement (acq_rel) below.
                      if (store->NoteSweepAnswer(asked[i], (*states)[i])) {
                        sweep->dropped.fetch_add(1, std::memory_order_relaxed);
                      }
                    }
                  }
                }
                if (sweep->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                  sweep->done(sweep->dropped.load(std::memory_order_relaxed));
                }
              });
  }
}

std::vector<ChunkPutPlan> PlanChunkPuts(const frame::Frame& f, uint64_t frame_id, uint16_t group,
                                        uint16_t header_slot, const cluster::SlotMap& map,
                                        uint64_t batch_bytes) {
  std::vector<ChunkPutPlan> plan;
  // The request being filled for each home (an index into plan) and its bytes so far.
  std::map<net::NodeId, std::pair<size_t, uint64_t>> open;
  for (size_t k = 0; k < f.chunk_count(); k++) {
    const net::NodeId home = map.Home(ChunkSlot(group, k));
    ChunkPut put{.index = k, .columns = {}};
    uint64_t bytes = 0;
    put.columns.reserve(f.columns());
    for (size_t c = 0; c < f.columns(); c++) {
      const std::string& b = *f.vec(c).chunk_bytes(k);
      put.columns.push_back(b);
      bytes += b.size();
    }
    auto it = open.find(home);
    if (it == open.end() || it->second.second + bytes > batch_bytes) {
      ChunkPutPlan p{.home = home, .request = {}};
      p.request.map_version = map.version();
      p.request.frame_id = frame_id;
      p.request.group = group;
      p.request.header_slot = header_slot;
      p.request.columns = static_cast<uint32_t>(f.columns());
      plan.push_back(std::move(p));
      it = open.insert_or_assign(home, std::make_pair(plan.size() - 1, uint64_t{0})).first;
    }
    plan[it->second.first].request.chunks.push_back(std::move(put));
    it->second.second += bytes;
  }
  return plan;
}

FrameHeader HeaderOf(const frame::Frame& f, uint64_t frame_id, uint16_t group) {
  FrameHeader h;
  h.id = frame_id;
  h.group = group;
  h.columns.reserve(f.columns());
  for (size_t c = 0; c < f.columns(); c++) {
    const frame::Vec& v = f.vec(c);
    h.columns.push_back({.name = f.name(c),
                         .type = static_cast<uint8_t>(v.type()),
                         .domain = v.domain(),
                         .na_count = v.na_count()});
  }
  h.chunks.resize(f.chunk_count());
  for (size_t k = 0; k < f.chunk_count(); k++) {
    FrameHeader::Chunk& ch = h.chunks[k];
    for (size_t c = 0; c < f.columns(); c++) {
      const frame::ChunkView& view = f.vec(c).chunk(k);
      ch.rows = view.rows();
      ch.compressed_bytes += view.bytes();
      ch.raw_bytes += view.raw_bytes();
    }
  }
  return h;
}

Result<frame::Frame> ChunkFrameOf(const FrameHeader& h, uint64_t k, std::string_view answer) {
  FLOE_ASSIGN_OR_RETURN(std::vector<std::string_view> columns, DecodeChunkColumns(answer));
  if (columns.size() != h.columns.size()) {
    return Status::Corruption("chunk " + std::to_string(k) + " has " +
                              std::to_string(columns.size()) + " columns, the header " +
                              std::to_string(h.columns.size()));
  }
  std::vector<std::string> names;
  std::vector<frame::Vec> vecs;
  names.reserve(columns.size());
  vecs.reserve(columns.size());
  for (size_t c = 0; c < columns.size(); c++) {
    const FrameHeader::Column& col = h.columns[c];
    Result<frame::Vec> v = frame::Vec::Make(static_cast<frame::ColumnType>(col.type), col.domain,
                                            {std::make_shared<const std::string>(columns[c])});
    if (!v.ok()) {
      return Status::Corruption("chunk " + std::to_string(k) + ", column " + col.name + ": " +
                                std::string(v.status().message()));
    }
    if (v->rows() != h.chunks[k].rows) {
      return Status::Corruption("chunk " + std::to_string(k) + " has " + std::to_string(v->rows()) +
                                " rows, the header " + std::to_string(h.chunks[k].rows));
    }
    names.push_back(col.name);
    vecs.push_back(std::move(*v));
  }
  Result<frame::Frame> f = frame::Frame::Make(std::move(names), std::move(vecs));
  if (!f.ok()) return Status::Corruption(std::string(f.status().message()));
  return f;
}

void FetchChunk(ClusterNode& node, const FrameHeader& h, std::string_view name, uint64_t k,
                std::function<void(Result<std::string>)> done) {
  const cluster::SlotMap& map = node.map();
  const net::NodeId home = map.Home(ChunkSlot(h.group, k));
  std::string address = "member " + std::to_string(home);
  for (const cluster::Member& m : map.members()) {
    if (m.id == home) address = m.address();
  }
  node.CallFrame(
      home, kGetChunkMethod,
      EncodeGetChunk(
          {.map_version = map.version(), .frame_id = h.id, .group = h.group, .index = k}),
      [done = std::move(done), address = std::move(address), name = std::string(name), k,
       home](Result<std::string> r) {
        if (r.ok()) return done(std::move(r));
        const StatusCode code = r.status().code();
        if (code == StatusCode::kNotFound) {
          return done(Status::NotFound("ERR frame " + name + " is missing chunk " +
                                       std::to_string(k) + " at member " + std::to_string(home)));
        }
        if (code == StatusCode::kTimeout || code == StatusCode::kUnavailable ||
            code == StatusCode::kCancelled) {
          return done(Status::Unavailable("CLUSTERDOWN The node " + address + " is unreachable (" +
                                          std::string(r.status().message()) + ")"));
        }
        done(Status(code, "ERR the node " + address + " refused GET_CHUNK (" +
                              r.status().ToString() + ")"));
      });
}

namespace {

// One PutFrameChunks under way (rule 2 of frame_cluster.h).
struct PutRun {
  std::shared_ptr<const frame::Frame> frame;  // the plan's views point into it
  std::vector<ChunkPutPlan> plan;
  ClusterNode* node = nullptr;
  uint64_t frame_id = 0;
  uint64_t map_version = 0;
  std::vector<net::NodeId> members;
  std::function<void(Status)> done;
  FramePutOptions options;
  Mutex mu;
  uint64_t bytes_put FLOE_GUARDED_BY(mu) = 0;
  size_t next FLOE_GUARDED_BY(mu) = 0;
  size_t in_flight FLOE_GUARDED_BY(mu) = 0;
  Status failed FLOE_GUARDED_BY(mu);
  bool finished FLOE_GUARDED_BY(mu) = false;
  // A Pump runs: another (a put answered meanwhile, at once when it was this member's own) only
  // asks it to go round again, so puts answered synchronously never nest.
  bool pumping FLOE_GUARDED_BY(mu) = false;
  bool again FLOE_GUARDED_BY(mu) = false;
};

void FinishPut(const std::shared_ptr<PutRun>& run, Status status) {
  if (!status.ok()) {
    // D9: the chunks already put are dropped wherever they went (best effort: a member that
    // misses it finds them by its sweep, D10).
    for (net::NodeId m : run->members) {
      run->node->CallFrame(
          m, kDropChunksMethod,
          EncodeFrameIds({.map_version = run->map_version, .ids = {run->frame_id}}),
          [](Result<std::string>) {});
    }
  }
  run->done(std::move(status));
}

void Pump(const std::shared_ptr<PutRun>& run) {
  {
    MutexLock lock(&run->mu);
    if (run->pumping) {
      run->again = true;
      return;
    }
    run->pumping = true;
  }
  for (;;) {
    std::vector<size_t> send;
    std::optional<Status> finish;
    {
      MutexLock lock(&run->mu);
      run->again = false;
      // relaxed: a job's cancel flag, read again before each batch.
      if (run->options.cancel != nullptr && run->options.cancel->load(std::memory_order_relaxed) &&
          run->failed.ok()) {
        run->failed = Status::Cancelled("cancelled by JOB.CANCEL");
      }
      while (run->failed.ok() && run->in_flight < kMaxPutsInFlight &&
             run->next < run->plan.size()) {
        send.push_back(run->next++);
        run->in_flight++;
      }
      if (send.empty() && run->in_flight == 0 && !run->finished &&
          (!run->failed.ok() || run->next == run->plan.size())) {
        run->finished = true;
        finish = run->failed;
      }
    }
    if (finish.has_value()) return FinishPut(run, std::move(*finish));
    for (size_t i : send) {
      const ChunkPutPlan& p = run->plan[i];
      uint64_t bytes = 0;
      for (const ChunkPut& c : p.request.chunks) {
        for (std::string_view col : c.columns) bytes += col.size();
      }
      run->node->CallFrame(p.home, kPutChunksMethod, EncodePutChunks(p.request),
                           [run, home = p.home, bytes](Result<std::string> r) {
                             {
                               MutexLock lock(&run->mu);
                               run->in_flight--;
                               if (!r.ok() && run->failed.ok()) {
                                 run->failed = Status(r.status().code(),
                                                      "member " + std::to_string(home) + ": " +
                                                          std::string(r.status().message()));
                               }
                               // Under the lock: the put is not done (nor its caller gone) while
                               // this runs.
                               if (r.ok()) {
                                 run->bytes_put += bytes;
                                 if (run->options.sent) run->options.sent(run->bytes_put);
                               }
                             }
                             Pump(run);
                           });
    }
    MutexLock lock(&run->mu);
    if (!run->again) {
      run->pumping = false;
      return;
    }
  }
}

}  // namespace

void ClusterNode::PutFrameChunks(std::shared_ptr<const frame::Frame> f, uint64_t frame_id,
                                 uint16_t group, uint16_t header_slot,
                                 std::function<void(Status)> done, FramePutOptions options) {
  auto run = std::make_shared<PutRun>();
  run->options = std::move(options);
  const cluster::SlotMap& map = impl_->Routes();
  run->plan =
      PlanChunkPuts(*f, frame_id, group, header_slot, map,
                    run->options.batch_bytes > 0 ? run->options.batch_bytes : kPutBatchBytes);
  run->frame = std::move(f);
  run->node = this;
  run->frame_id = frame_id;
  run->map_version = map.version();
  for (const cluster::Member& m : map.members()) run->members.push_back(m.id);
  run->done = std::move(done);
  Pump(run);
}

ChunkStore& ClusterNode::chunks() { return *impl_->chunks; }
ChunkDropper& ClusterNode::TEST_dropper() { return *impl_->dropper; }

void ClusterNode::DropFrameChunks(uint64_t frame_id) {
  DropFrameChunks(std::vector<uint64_t>{frame_id});
}

void ClusterNode::DropFrameChunks(const std::vector<uint64_t>& frame_ids) {
  const cluster::SlotMap& map = impl_->Routes();
  for (size_t at = 0; at < frame_ids.size(); at += kMaxFrameIds) {
    const size_t end = std::min<size_t>(frame_ids.size(), at + kMaxFrameIds);
    const std::string request = EncodeFrameIds(
        {.map_version = map.version(),
         .ids = std::vector<uint64_t>(frame_ids.begin() + static_cast<ptrdiff_t>(at),
                                      frame_ids.begin() + static_cast<ptrdiff_t>(end))});
    for (const cluster::Member& m : map.members()) {
      CallFrame(m.id, kDropChunksMethod, request, [](Result<std::string>) {});
    }
  }
}

void ClusterNode::Impl::StartDropper(ClusterNode* node) {
  // D10: to every member, this one too; a member that misses it finds the set by its sweep.
  dropper = std::make_shared<ChunkDropper>(
      [node](const std::vector<uint64_t>& frame_ids) { node->DropFrameChunks(frame_ids); });
}

Status ClusterNode::PutHeader(std::string_view key, bool replace, std::string header,
                              Engine* exclusive_here, bool* unknown) {
  *unknown = false;
  const cluster::SlotMap& map = impl_->Routes();
  const net::NodeId home = map.Home(cluster::KeySlot(key));
  std::string address = std::to_string(home);
  for (const cluster::Member& m : map.members()) {
    if (m.id == home) address = m.address();
  }
  auto stored = std::make_shared<std::promise<Result<std::string>>>();
  std::future<Result<std::string>> answer = stored->get_future();
  {
    std::optional<Engine::ExclusiveSection> section;
    if (home == self() && exclusive_here != nullptr) section.emplace(exclusive_here);
    CallFrame(home, kPutHeaderMethod,
              EncodePutHeader({.map_version = map.version(),
                               .key = key,
                               .replace = replace,
                               .header = std::move(header)}),
              [stored](Result<std::string> r) { stored->set_value(std::move(r)); });
  }
  // The call's own deadline is ChangeTimeoutUs; this wait, a little longer, ends a call to this
  // member, whose handler has no RPC deadline (its store refuses past its own).
  const auto wait = std::chrono::microseconds(ChangeTimeoutUs() + kPutHeaderMarginUs);
  Status s = answer.wait_for(wait) == std::future_status::ready
                 ? answer.get().status()
                 : Status::Timeout("no answer before the deadline");
  if (s.ok()) return s;
  const StatusCode code = s.code();
  if (code == StatusCode::kTimeout || code == StatusCode::kUnavailable ||
      code == StatusCode::kCancelled) {
    // No answer from the home (or it was stopping): the header may or may not be stored.
    *unknown = true;
    return Status::Unavailable("CLUSTERDOWN The node " + address + " is unreachable (" +
                               std::string(s.message()) + "; the header of '" +
                               std::string(key.substr(0, 64)) + "' may or may not be stored)");
  }
  if (code == StatusCode::kWrongHome) {
    return Status::Unavailable("TRYAGAIN the slot of '" + std::string(key.substr(0, 64)) +
                               "' moved meanwhile");
  }
  return s;  // the home's refusal: nothing stored
}

uint64_t ClusterNode::ChangeTimeoutUs() const { return impl_->timeout_us + impl_->holder_wait_us; }

void ClusterNode::CallFrame(net::NodeId peer, uint16_t method, std::string request,
                            std::function<void(Result<std::string>)> done) {
  if (peer == self()) {
    // The endpoint knows no peer by its own id: this member's handler runs here.
    switch (method) {
      case kPutChunksMethod:
        return done(impl_->OnPutChunks(request));
      case kGetChunkMethod:
        return done(impl_->OnGetChunk(request));
      case kDropChunksMethod:
        return done(impl_->OnDropChunks(request));
      case kPutHeaderMethod:
        return impl_->OnPutHeader(request, std::move(done));
      case kFrameIdsLiveMethod:
        return done(impl_->OnFrameIdsLive(request));
      default:
        return done(Status::Unimplemented("no frame method " + std::to_string(method)));
    }
  }
  // PUT_HEADER may wait at its home for a cut-off holder's lease (C7), as a forwarded change.
  const uint64_t timeout = method == kPutHeaderMethod ? ChangeTimeoutUs() : impl_->timeout_us;
  impl_->endpoint->CallAsync(peer, method, std::move(request), timeout, std::move(done));
}

}  // namespace floe::server::internal
