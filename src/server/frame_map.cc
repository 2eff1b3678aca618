// Map/reduce over a cluster frame's chunks as a tree of members (docs/frames_cluster.md, D8):
// RPC 312 MAP_TASK at each member, and the coordinator's MapFrame.
//
// How it works: the coordinator is the root of the member list [self, the others in member
// order]. A member given a list keeps its first (itself), sends the rest's two halves, [1, mid)
// and [mid, n), to their first members, then maps its own chunks (every core, mr::MapReduce in
// chunk order) and, once both halves answered, reduces: its own result, then the left's, then
// the right's. The order is the member list's, so the result does not depend on threads or
// timing. Each answer lists the chunks mapped and their rows; the coordinator checks them
// against the header. A member waits for its halves at most its budget, and gives each half
// three quarters of it, so the member nearest a silent one reports it (D9) before its parent
// gives up on it.

#include <algorithm>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dkv/dkv.h"
#include "frame/frame.h"
#include "mr/mr.h"
#include "server/internal/chunk_store.h"
#include "server/internal/cluster_node_impl.h"
#include "server/internal/command.h"
#include "server/internal/frame_cluster.h"
#include "server/internal/frame_rpc.h"

namespace floe::server::internal {

namespace {

// The member's own chunks of the column, each checked against the header as a fetched chunk is
// (ChunkFrameOf: every column decodes as frame::Vec::Make takes it, with the header's rows), as
// one frame of that column, in chunk order, and the chunks it holds.
struct OwnChunks {
  std::optional<frame::Frame> frame;  // none when no chunk is here
  std::vector<MappedChunk> mapped;
};

Result<OwnChunks> CollectOwn(const FrameHeader& h, uint32_t column, ChunkStore& store,
                             const cluster::SlotMap& map, net::NodeId self) {
  OwnChunks own;
  std::vector<std::shared_ptr<const std::string>> bytes;
  for (uint64_t k = 0; k < h.chunks.size(); k++) {
    if (map.Home(ChunkSlot(h.group, k)) != self) continue;
    Result<std::shared_ptr<const ChunkStore::Chunk>> chunk = store.Get(h.id, k);
    if (!chunk.ok()) continue;  // missing: the coordinator names it
    FLOE_ASSIGN_OR_RETURN(frame::Frame one,
                          ChunkFrameOf(h, k, EncodeChunkColumns((*chunk)->columns)));
    bytes.push_back(one.vec(column).chunk_bytes(0));
    own.mapped.push_back({.index = k, .rows = h.chunks[k].rows});
  }
  if (bytes.empty()) return own;
  const FrameHeader::Column& col = h.columns[column];
  FLOE_ASSIGN_OR_RETURN(frame::Vec v, frame::Vec::Make(static_cast<frame::ColumnType>(col.type),
                                                       col.domain, std::move(bytes)));
  std::vector<frame::Vec> vecs;
  vecs.push_back(std::move(v));
  FLOE_ASSIGN_OR_RETURN(frame::Frame f, frame::Frame::Make({col.name}, std::move(vecs)));
  own.frame = std::move(f);
  return own;
}

Result<MapTaskAnswer> MapOwn(const MapTaskRequest& req, const OwnChunks& own) {
  MapTaskAnswer a;
  a.mapped = own.mapped;
  if (req.op == MapOp::kSummaryMoments) {
    if (own.frame.has_value()) {
      FLOE_ASSIGN_OR_RETURN(a.moments, mr::MomentsPass(*own.frame, 0));
    } else {
      FLOE_ASSIGN_OR_RETURN(a.moments.hll, sketch::HyperLogLog::Create(mr::SummaryHllParams()));
    }
  } else if (!own.frame.has_value()) {
    a.histogram.assign(req.Counts(), 0);
  } else if (req.op == MapOp::kSummaryHistogram) {
    FLOE_ASSIGN_OR_RETURN(a.histogram, mr::HistogramPass(*own.frame, 0, req.lo, req.hi, req.bins));
  } else {
    FLOE_ASSIGN_OR_RETURN(a.histogram,
                          mr::RadixPass(*own.frame, 0, static_cast<int>(req.pass), req.prefixes));
  }
  return a;
}

// A derived frame's chunk k (D6) from the source's chunk k as a one-chunk frame: its columns
// (kSelect) or its rows (kFilter), one chunk still when no row is kept (an empty chunk a column),
// so that output chunk k is source chunk k's and lives where it does.
Result<frame::Frame> DeriveChunk(const MapTaskRequest& req, const frame::Frame& one) {
  if (req.op == MapOp::kSelect) {
    std::vector<std::string> names;
    std::vector<frame::Vec> vecs;
    for (uint32_t c : req.select) {
      names.push_back(one.name(c));
      vecs.push_back(one.vec(c));
    }
    return frame::Frame::Make(std::move(names), std::move(vecs));
  }
  FLOE_ASSIGN_OR_RETURN(frame::Frame out, mr::Filter(one, req.conditions));
  if (out.chunk_count() == 1) return out;
  std::vector<std::string> names;
  std::vector<frame::Vec> vecs;
  auto empty = std::make_shared<const std::string>(frame::Compress({}));
  for (size_t c = 0; c < one.columns(); c++) {
    FLOE_ASSIGN_OR_RETURN(frame::Vec v,
                          frame::Vec::Make(one.vec(c).type(), one.vec(c).domain(), {empty}));
    names.push_back(one.name(c));
    vecs.push_back(std::move(v));
  }
  return frame::Frame::Make(std::move(names), std::move(vecs));
}

// kSelect and kFilter at this member (D6): each of its own chunks of the source derived (every
// core, mr::MapReduce in chunk order), then every output chunk put in its chunk store under the
// output's id in one all-or-nothing put (checked and charged as a PUT_CHUNKS is: no byte leaves
// the member). The answer lists the chunks mapped, each output chunk's figures, and the output
// columns' NA counts.
Result<MapTaskAnswer> DeriveOwn(const MapTaskRequest& req, const FrameHeader& h, ChunkStore& store,
                                const cluster::SlotMap& map, net::NodeId self) {
  std::vector<uint64_t> own;
  std::vector<std::shared_ptr<const ChunkStore::Chunk>> held;
  for (uint64_t k = 0; k < h.chunks.size(); k++) {
    if (map.Home(ChunkSlot(h.group, k)) != self) continue;
    Result<std::shared_ptr<const ChunkStore::Chunk>> chunk = store.Get(h.id, k);
    if (!chunk.ok()) continue;  // missing: the coordinator names it
    own.push_back(k);
    held.push_back(*std::move(chunk));
  }
  struct Made {
    Status failed;  // the first chunk's failure, in chunk order
    std::vector<std::pair<uint64_t, frame::Frame>> chunks;
  };
  FLOE_ASSIGN_OR_RETURN(Made made, mr::MapReduce<Made>(
                                       own.size(),
                                       [&](size_t i) -> Made {
                                         Made m;
                                         const uint64_t k = own[i];
                                         Result<frame::Frame> one = ChunkFrameOf(
                                             h, k, EncodeChunkColumns(held[i]->columns));
                                         if (!one.ok()) {
                                           m.failed = Status(one.status().code(),
                                                             "ERR member " + std::to_string(self) +
                                                                 " holds a bad chunk (" +
                                                                 one.status().ToString() + ")");
                                           return m;
                                         }
                                         Result<frame::Frame> out = DeriveChunk(req, *one);
                                         if (!out.ok()) {
                                           m.failed = out.status();
                                         } else {
                                           m.chunks.emplace_back(k, *std::move(out));
                                         }
                                         return m;
                                       },
                                       [](Made& a, Made&& b) {
                                         if (a.failed.ok()) a.failed = std::move(b.failed);
                                         for (auto& c : b.chunks) a.chunks.push_back(std::move(c));
                                       }));
  FLOE_RETURN_IF_ERROR(made.failed);
  MapTaskAnswer a;
  a.histogram.assign(req.Counts(h.columns.size()), 0);
  PutChunksRequest put{.map_version = map.version(),
                       .frame_id = req.out_id,
                       .group = h.group,
                       .header_slot = req.out_header_slot,
                       .columns = static_cast<uint32_t>(a.histogram.size()),
                       .chunks = {}};
  std::vector<std::shared_ptr<const std::string>> bytes;  // the put's views point into them
  for (auto& [k, out] : made.chunks) {
    const FrameHeader oh = HeaderOf(out, 0, 0);
    a.mapped.push_back({.index = k, .rows = h.chunks[k].rows});
    a.made.push_back(oh.chunks[0]);
    ChunkPut& c = put.chunks.emplace_back();
    c.index = k;
    for (size_t col = 0; col < out.columns(); col++) {
      a.histogram[col] += oh.columns[col].na_count;
      bytes.push_back(out.vec(col).chunk_bytes(0));
      c.columns.push_back(*bytes.back());
    }
  }
  if (!put.chunks.empty()) {
    FLOE_RETURN_IF_ERROR(
        store.Put(put, [&map, self](uint16_t slot) { return map.Home(slot) == self; }));
  }
  return a;
}

// kGroupBy at this member (D8): its own chunks of the source, each checked against the header
// as a fetched chunk is, as one frame of every column, grouped with every core as one node
// groups (mr::GroupByTable: its limits, its errors). The answer is the partial table.
Result<MapTaskAnswer> GroupOwn(const MapTaskRequest& req, const FrameHeader& h, ChunkStore& store,
                               const cluster::SlotMap& map, net::NodeId self) {
  MapTaskAnswer a;
  std::vector<std::vector<std::shared_ptr<const std::string>>> bytes(h.columns.size());
  for (uint64_t k = 0; k < h.chunks.size(); k++) {
    if (map.Home(ChunkSlot(h.group, k)) != self) continue;
    Result<std::shared_ptr<const ChunkStore::Chunk>> chunk = store.Get(h.id, k);
    if (!chunk.ok()) continue;  // missing: the coordinator names it
    Result<frame::Frame> one = ChunkFrameOf(h, k, EncodeChunkColumns((*chunk)->columns));
    if (!one.ok()) {
      return Status(one.status().code(), "ERR member " + std::to_string(self) +
                                             " holds a bad chunk (" + one.status().ToString() +
                                             ")");
    }
    for (size_t c = 0; c < h.columns.size(); c++) bytes[c].push_back(one->vec(c).chunk_bytes(0));
    a.mapped.push_back({.index = k, .rows = h.chunks[k].rows});
  }
  if (a.mapped.empty()) return a;
  std::vector<std::string> names;
  std::vector<frame::Vec> vecs;
  for (size_t c = 0; c < h.columns.size(); c++) {
    const FrameHeader::Column& col = h.columns[c];
    FLOE_ASSIGN_OR_RETURN(frame::Vec v, frame::Vec::Make(static_cast<frame::ColumnType>(col.type),
                                                         col.domain, std::move(bytes[c])));
    names.push_back(col.name);
    vecs.push_back(std::move(v));
  }
  FLOE_ASSIGN_OR_RETURN(frame::Frame f, frame::Frame::Make(std::move(names), std::move(vecs)));
  const std::vector<size_t> keys(req.group_keys.begin(), req.group_keys.end());
  FLOE_ASSIGN_OR_RETURN(a.groups, mr::GroupByTable(f, keys, req.aggregates));
  return a;
}

// Folds b into a (b after a).
Status Merge(MapOp op, const GroupShape& shape, MapTaskAnswer& a, MapTaskAnswer&& b) {
  a.mapped.insert(a.mapped.end(), b.mapped.begin(), b.mapped.end());
  a.made.insert(a.made.end(), b.made.begin(), b.made.end());
  if (op == MapOp::kGroupBy) {
    // The group limit holds at every merge, as at every member's map.
    Status s = mr::MergeGroupTables(a.groups, std::move(b.groups), shape.keys, shape.aggregates);
    if (!s.ok() && !s.message().starts_with("ERR ")) {
      s = Status(s.code(), "ERR " + std::string(s.message()));
    }
    return s;
  }
  if (op == MapOp::kSummaryMoments) {
    if (!(a.moments.hll.params() == b.moments.hll.params())) {
      return Status::Corruption("a sketch of other parameters");
    }
    a.moments.Merge(b.moments);
  } else {
    if (a.histogram.size() != b.histogram.size()) return Status::Corruption("bins differ");
    for (size_t i = 0; i < a.histogram.size(); i++) a.histogram[i] += b.histogram[i];
  }
  return Status::OK();
}

std::string AddressOf(const cluster::SlotMap& map, net::NodeId id) {
  for (const cluster::Member& m : map.members()) {
    if (m.id == id) return m.address();
  }
  return "member " + std::to_string(id);
}

// One member's task: its own result and its two halves', reduced once all three are in.
struct TaskJoin {
  Mutex mu;
  int left_to_come FLOE_GUARDED_BY(mu) = 3;
  Result<MapTaskAnswer> parts[3] FLOE_GUARDED_BY(mu) = {Status::Internal("not arrived"),
                                                        Status::Internal("not arrived"),
                                                        Status::Internal("not arrived")};
  MapOp op = MapOp::kSummaryMoments;
  GroupShape shape;  // kGroupBy
  std::function<void(Result<MapTaskAnswer>)> done;

  void Arrive(int i, Result<MapTaskAnswer> r) {
    std::vector<Result<MapTaskAnswer>> all;
    {
      MutexLock lock(&mu);
      parts[i] = std::move(r);
      if (--left_to_come > 0) return;
      for (auto& p : parts) all.push_back(std::move(p));  // the last to arrive reduces
    }
    // Own, left, right: the first failure in that order is the task's.
    for (auto& p : all) {
      if (!p.ok()) return done(p.status());
    }
    MapTaskAnswer out = *std::move(all[0]);
    for (size_t j = 1; j < all.size(); j++) {
      if (Status s = Merge(op, shape, out, *std::move(all[j])); !s.ok()) return done(s);
    }
    done(std::move(out));
  }
};

// A half's answer to its MAP_TASK (or why there is none), decoded and handed to the join.
void MergeAnswer(TaskJoin& join, int part, const std::string& address, MapOp op, size_t counts,
                 Result<std::string> r) {
  const GroupShape& shape = join.shape;
  if (!r.ok()) {
    const std::string_view why = r.status().message();
    // A member below answered why the task failed (its own error, or the CLUSTERDOWN of
    // a member below it): passed up as it is.
    if (why.starts_with("CLUSTERDOWN ") || why.starts_with("ERR ")) {
      return join.Arrive(part, r.status());
    }
    const StatusCode code = r.status().code();
    if (code == StatusCode::kTimeout || code == StatusCode::kUnavailable ||
        code == StatusCode::kCancelled) {
      return join.Arrive(part, Status::Unavailable("CLUSTERDOWN The node " + address +
                                                   " is unreachable (" + std::string(why) + ")"));
    }
    return join.Arrive(part, Status(code, "ERR the node " + address + " refused MAP_TASK (" +
                                              r.status().ToString() + ")"));
  }
  Result<MapTaskAnswer> a = DecodeMapTaskAnswer(op, counts, *r, shape);
  if (!a.ok()) {
    return join.Arrive(
        part, Status::Corruption("ERR the node " + address + " sent a malformed MAP_TASK answer (" +
                                 a.status().ToString() + ")"));
  }
  join.Arrive(part, std::move(a));
}

// This member's part of a map task: its own chunks mapped (or derived, or grouped), handed to
// the join as part 0.
void MapOwnPart(const MapTaskRequest& req, const FrameHeader& h, ChunkStore& chunks,
                const cluster::SlotMap& map, net::NodeId self, TaskJoin& join) {
  if (IsDeriveOp(req.op)) {
    Result<MapTaskAnswer> mine = DeriveOwn(req, h, chunks, map, self);
    if (!mine.ok() && !mine.status().message().starts_with("ERR ") &&
        !mine.status().message().starts_with("OOM ")) {
      mine = Status(mine.status().code(), "ERR " + std::string(mine.status().message()));
    }
    return join.Arrive(0, std::move(mine));
  }
  if (req.op == MapOp::kGroupBy) {
    Result<MapTaskAnswer> mine = GroupOwn(req, h, chunks, map, self);
    if (!mine.ok() && !mine.status().message().starts_with("ERR ")) {
      mine = Status(mine.status().code(), "ERR " + std::string(mine.status().message()));
    }
    return join.Arrive(0, std::move(mine));
  }
  Result<OwnChunks> own = CollectOwn(h, req.column, chunks, map, self);
  if (!own.ok()) {
    return join.Arrive(
        0, Status(own.status().code(), "ERR member " + std::to_string(self) +
                                           " holds a bad chunk (" + own.status().ToString() + ")"));
  }
  Result<MapTaskAnswer> mine = MapOwn(req, *own);
  if (!mine.ok() && !mine.status().message().starts_with("ERR ")) {
    mine = Status(mine.status().code(), "ERR " + std::string(mine.status().message()));
  }
  join.Arrive(0, std::move(mine));
}

}  // namespace

void ClusterNode::Impl::RunMapTask(MapTaskRequest req, std::shared_ptr<const std::string> header,
                                   std::function<void(Result<MapTaskAnswer>)> done, bool own_here) {
  map_tasks.fetch_add(1, std::memory_order_relaxed);
  req.header = *header;  // the halves' requests carry it on
  if (Status s = CheckFrameMapVersion(req.map_version); !s.ok()) return done(s);
  const net::NodeId self = cluster->self();
  if (req.members.empty() || req.members[0] != self) {
    return done(Status::InvalidArgument("MAP_TASK: this member is not the list's first"));
  }
  Result<FrameHeader> h = DecodeFrameHeader(*header);
  if (!h.ok()) return done(h.status());
  const size_t columns = h->columns.size();
  if (IsDeriveOp(req.op)) {
    std::vector<bool> seen(columns, false);
    for (uint32_t c : req.select) {
      if (c >= columns || seen[c]) return done(Status::Corruption("MAP_TASK: bad column list"));
      seen[c] = true;
    }
    for (const mr::Condition& c : req.conditions) {
      if (c.col >= columns) return done(Status::Corruption("MAP_TASK: no such column"));
    }
  } else if (req.op == MapOp::kGroupBy) {
    for (uint32_t c : req.group_keys) {
      if (c >= columns) return done(Status::Corruption("MAP_TASK: no such column"));
    }
    for (const mr::Aggregate& a : req.aggregates) {
      if (a.col >= columns) return done(Status::Corruption("MAP_TASK: no such column"));
    }
  } else {
    if (req.column >= columns) return done(Status::Corruption("MAP_TASK: no such column"));
    if (static_cast<frame::ColumnType>(h->columns[req.column].type) == frame::ColumnType::kString) {
      return done(Status::InvalidArgument("a string column has no summary"));
    }
  }
  const size_t counts = req.Counts(columns);
  const cluster::SlotMap& map = Routes();
  auto join = std::make_shared<TaskJoin>();
  join->op = req.op;
  join->shape = {.keys = req.group_keys.size(), .aggregates = req.aggregates};
  join->done = std::move(done);
  // The halves, sent before this member maps its own chunks.
  const size_t n = req.members.size();
  const size_t mid = 1 + (n - 1 + 1) / 2;
  // A peer's budget is taken within [1 ms, cluster-node-timeout]: it bounds this member's wait.
  req.budget_us = std::clamp<uint64_t>(req.budget_us, 1000, std::max<uint64_t>(timeout_us, 1000));
  const uint64_t child_budget = req.budget_us - req.budget_us / 4;
  auto send = [&](int part, size_t lo, size_t hi) {
    if (lo >= hi) {
      // An empty half: nothing mapped, the operation's empty accumulator.
      MapTaskAnswer empty;
      if (req.op == MapOp::kSummaryMoments) {
        Result<sketch::HyperLogLog> hll = sketch::HyperLogLog::Create(mr::SummaryHllParams());
        if (!hll.ok()) return join->Arrive(part, hll.status());
        empty.moments.hll = *std::move(hll);
      } else if (req.op != MapOp::kGroupBy) {
        empty.histogram.assign(counts, 0);
      }
      return join->Arrive(part, std::move(empty));
    }
    MapTaskRequest sub = req;
    sub.members.assign(req.members.begin() + static_cast<std::ptrdiff_t>(lo),
                       req.members.begin() + static_cast<std::ptrdiff_t>(hi));
    sub.budget_us = child_budget;
    const net::NodeId to = sub.members[0];
    endpoint->CallAsync(to, kMapTaskMethod, EncodeMapTask(sub), req.budget_us,
                        [join, part, address = AddressOf(map, to), op = req.op, counts,
                         ep = endpoint.get()](Result<std::string> answer) {
                          // An answer is decoded and merged on a handler thread of the lowest
                          // class, never on the node's loop, which finishes calls and carries
                          // heartbeats and leases: a member's group table may hold up to
                          // kMaxGroupBytes. Class 0 runs nothing that waits. Once the endpoint has
                          // stopped it runs here.
                          auto r = std::make_shared<Result<std::string>>(std::move(answer));
                          auto merge = [join, part, address, op, counts, r] {
                            MergeAnswer(*join, part, address, op, counts, std::move(*r));
                          };
                          if (!ep->Post(0, merge)) merge();
                        });
  };
  send(1, 1, mid);
  send(2, mid, n);
  // This member's own chunks: here on the coordinator, else on the map pool (bounded).
  auto own = [this, join, req = std::move(req), h = std::move(h).value(), map = &map, self] {
    std::function<void()> hook;
    {
      MutexLock lock(&map_hook_mu);
      hook = map_hook;
    }
    if (hook) hook();
    MapOwnPart(req, h, *chunks, *map, self, *join);
  };
  if (own_here) return own();
  auto task = std::make_shared<decltype(own)>(std::move(own));
  if (map_pool == nullptr || !map_pool->Post([task] { (*task)(); }, nullptr)) {
    join->Arrive(0, Status::Unavailable("ERR member " + std::to_string(self) +
                                        " has too many map tasks waiting; try again later"));
  }
}

void ClusterNode::Impl::OnMapTask(std::string_view request, rpc::Reply reply) {
  auto bytes = std::make_shared<std::string>(request);
  Result<MapTaskRequest> req = DecodeMapTask(*bytes);
  if (!req.ok()) return reply(req.status());
  const MapOp op = req->op;
  auto header = std::make_shared<const std::string>(req->header);
  RunMapTask(*std::move(req), std::move(header),
             [reply = std::move(reply), op](Result<MapTaskAnswer> a) {
               if (!a.ok()) return reply(a.status());
               reply(EncodeMapTaskAnswer(op, *a));
             });
}

Result<MapTaskAnswer> ClusterNode::MapFrame(const FrameHeader& h, std::string_view name,
                                            MapTaskRequest req, const std::atomic<bool>* cancel) {
  // D13: the answers come through the loop thread, which takes the DKV's stripe locks.
  if (dkv::Dkv::InApply()) {
    return Status::Internal("ERR a map task of frame " + std::string(name) +
                            " would wait for other members under the DKV's locks");
  }
  const cluster::SlotMap& map = impl_->Routes();
  req.map_version = map.version();
  const MapOp req_op = req.op;
  // Three quarters of cluster-node-timeout: a client of another member, whose node waits for
  // this one that long, gets the silent member's name, not this one's.
  req.budget_us = impl_->timeout_us - impl_->timeout_us / 4;
  req.members.clear();
  req.members.push_back(self());
  for (const cluster::Member& m : map.members()) {
    if (m.id != self()) req.members.push_back(m.id);
  }
  auto answer = std::make_shared<std::promise<Result<MapTaskAnswer>>>();
  impl_->RunMapTask(
      std::move(req), std::make_shared<const std::string>(EncodeFrameHeader(h)),
      [answer](Result<MapTaskAnswer> a) { answer->set_value(std::move(a)); },
      /*own_here=*/true);
  // A client that leaves (or a pool shutting down) stops the wait, not the members: the answer
  // goes to the shared promise, unread.
  std::future<Result<MapTaskAnswer>> done = answer->get_future();
  while (done.wait_for(std::chrono::milliseconds(10)) != std::future_status::ready) {
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      return Status::Cancelled("ERR the map task of frame " + std::string(name) +
                               " was cancelled: its client left");
    }
  }
  FLOE_ASSIGN_OR_RETURN(MapTaskAnswer a, done.get());
  // Exactly the header's chunks, once each, with their rows (D8).
  std::vector<bool> seen(h.chunks.size(), false);
  auto missing = [&](uint64_t k) {
    return ClientError("ERR frame " + std::string(name) + " is missing chunk " + std::to_string(k) +
                       " at member " + std::to_string(map.Home(ChunkSlot(h.group, k))));
  };
  for (const MappedChunk& c : a.mapped) {
    if (c.index >= h.chunks.size()) {
      return ClientError("ERR a member mapped chunk " + std::to_string(c.index) + " of frame " +
                         std::string(name) + ", which has " + std::to_string(h.chunks.size()));
    }
    if (seen[c.index] || c.rows != h.chunks[c.index].rows) return missing(c.index);
    seen[c.index] = true;
  }
  for (uint64_t k = 0; k < seen.size(); k++) {
    if (!seen[k]) return missing(k);
  }
  if (IsDeriveOp(req_op) && a.made.size() != a.mapped.size()) {
    return Status::Corruption("ERR a member's answer lists " + std::to_string(a.made.size()) +
                              " output chunks for " + std::to_string(a.mapped.size()) + " mapped");
  }
  return a;
}

Result<FrameHeader> ClusterNode::DeriveFrame(const FrameHeader& h, std::string_view name,
                                             MapTaskRequest task) {
  const uint64_t id = task.out_id;
  const std::vector<uint32_t> select = task.select;
  const MapOp op = task.op;
  Result<MapTaskAnswer> a = MapFrame(h, name, std::move(task));
  if (!a.ok()) {
    // The members that made their chunks before another failed hold them: dropped (a member
    // still deriving when this is sent is left to D10's sweep).
    DropFrameChunks(id);
    return a.status();
  }
  FrameHeader out;
  out.id = id;
  out.group = h.group;  // D1: output chunk k where source chunk k is
  std::vector<uint32_t> columns = select;
  if (op == MapOp::kFilter) {
    for (uint32_t c = 0; c < h.columns.size(); c++) columns.push_back(c);
  }
  if (a->histogram.size() != columns.size()) {
    DropFrameChunks(id);
    return Status::Corruption("ERR a member's answer holds NA counts of other columns");
  }
  for (size_t i = 0; i < columns.size(); i++) {
    const FrameHeader::Column& src = h.columns[columns[i]];
    out.columns.push_back(
        {.name = src.name, .type = src.type, .domain = src.domain, .na_count = a->histogram[i]});
  }
  out.chunks.resize(h.chunks.size());
  for (size_t i = 0; i < a->mapped.size(); i++) out.chunks[a->mapped[i].index] = a->made[i];
  for (const FrameHeader::Column& c : out.columns) {
    if (c.na_count > out.rows()) {
      DropFrameChunks(id);
      return Status::Corruption("ERR a member's answer counts more NAs than rows");
    }
  }
  return out;
}

void ClusterNode::TEST_SetMapHook(std::function<void()> hook) {
  MutexLock lock(&impl_->map_hook_mu);
  impl_->map_hook = std::move(hook);
}

uint64_t ClusterNode::TEST_map_tasks() const {
  return impl_->map_tasks.load(std::memory_order_relaxed);
}

}  // namespace floe::server::internal
