// Frame commands: FRAME.LIST, FRAME.DROP, FRAME.INFO, FRAME.HEAD, and INFO's frames section.
// FRAME.IMPORT (a job) is in cmd_frame_import.cc, the analytics (SUMMARY, QUANTILE, GROUPBY) in
// cmd_frame_analytics.cc, the JOB.* commands in cmd_job.cc. docs/frame.md, "Commands", has the
// syntax and the replies.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <future>
#include <map>

#include "server/internal/analytics_pool.h"
#include "server/internal/cluster_node.h"
#include "server/internal/frame_cluster.h"
#include "server/internal/frame_value.h"

namespace floe::server::internal {

using frame::ColumnType;
using frame::Frame;
using store::Mutation;
using store::Value;
using store::ValuePtr;

// ---- frames as values (frame_value.h) ----

Status CheckFrameName(std::string_view name) {
  if (name.empty() || name.size() > 512) {
    return ClientError("ERR a frame name is 1 to 512 bytes");
  }
  if (name.find_first_of("{}") != std::string_view::npos) {
    return ClientError("ERR a frame name may not contain '{' or '}'");
  }
  return Status::OK();
}

std::string ChunkKey(std::string_view frame, uint64_t k) {
  std::string key(frame);
  key.push_back('#');
  key.append(std::to_string(k));
  return key;
}

Result<LoadedFrame> LoadFrameOrHeader(CommandContext& ctx, std::string_view name) {
  ValuePtr v = Lookup(ctx, name);
  if (!v) return Status::NotFound("ERR no such frame");
  if (v->type() != kFrameType) return ClientError(kWrongType);
  FLOE_ASSIGN_OR_RETURN(const Cell<FrameHolder>* cell, CellOf<FrameHolder>(*v));
  return cell->Read([](const FrameHolder& h) { return LoadedFrame{h.frame, h.header}; });
}

Result<std::shared_ptr<const Frame>> LoadFrame(CommandContext& ctx, std::string_view name) {
  FLOE_ASSIGN_OR_RETURN(LoadedFrame loaded, LoadFrameOrHeader(ctx, name));
  // A cluster frame's header (D2): its commands are not served here yet.
  if (loaded.frame == nullptr) {
    return ClientError("ERR frame " + std::string(name) + " lives in a cluster");
  }
  return std::move(loaded.frame);
}

}  // namespace floe::server::internal

namespace floe::server {

using frame::Frame;

Result<std::shared_ptr<const Frame>> PinFrame(Engine& engine, std::string_view name) {
  if (engine.cluster() != nullptr) {
    return internal::ClientError(
        "ERR frames and jobs are single-node for now: not available in a cluster");
  }
  store::ValuePtr v = engine.store().Get(name);
  if (!v || v->IsExpired(static_cast<int64_t>(WallMicros() / 1000))) {
    return Status::NotFound("ERR no such frame");
  }
  if (v->type() != internal::kFrameType) return internal::ClientError(internal::kWrongType);
  FLOE_ASSIGN_OR_RETURN(const internal::Cell<internal::FrameHolder>* cell,
                        internal::CellOf<internal::FrameHolder>(*v));
  std::shared_ptr<const Frame> f =
      cell->Read([](const internal::FrameHolder& h) { return h.frame; });
  if (f == nullptr) return internal::ClientError("ERR frame lives in a cluster");
  return f;
}

}  // namespace floe::server

namespace floe::server::internal {

namespace {

// Stores `holder` at `name`: reserved against maxmemory until the store charges it, refused
// with kFrameTargetExists when a live key is there and !replace, and then by `check` (given
// what the key holds now; OK to store).
Status PutFrameHolder(Engine& engine, std::string_view name, FrameHolder holder, bool replace,
                      const std::function<Status(const Value* cur)>& check = nullptr) {
  const int64_t limit = engine.maxmemory();
  const uint64_t bytes = holder.MemoryBytes();
  if (limit > 0 &&
      (bytes > static_cast<uint64_t>(limit) ||
       !engine.TryReserveMemory(static_cast<int64_t>(bytes), engine.UsedMemoryNow(), limit))) {
    return Status::ResourceExhausted(kOomError);
  }
  struct Unreserve {
    Engine& engine;
    int64_t bytes;
    ~Unreserve() {
      if (bytes > 0) engine.ReleaseMemory(bytes);
    }
  } unreserve{.engine = engine, .bytes = limit > 0 ? static_cast<int64_t>(bytes) : 0};
  FLOE_ASSIGN_OR_RETURN(ValuePtr v, Value::Make(name, kFrameType, {}, 0));
  v->CacheDecoded(
      std::make_unique<Cell<FrameHolder>>(std::move(holder), engine.store().memory_account()));
  const int64_t now_ms = static_cast<int64_t>(WallMicros() / 1000);
  return engine.store().Mutate(name, [&](const Value* cur) -> Result<Mutation> {
    if (!replace && Live(cur, now_ms) != nullptr) {
      return Status(StatusCode::kAlreadyExists, kFrameTargetExists);
    }
    if (check) FLOE_RETURN_IF_ERROR(check(cur));
    return Mutation::Put(v);
  });
}

}  // namespace

Status StoreFrame(Engine& engine, std::string_view name, Frame f, bool replace) {
  // The tally (stored_charge) before the shared frame (live_charge), so the check below never
  // counts this frame as detached as well as reserved (rule 3).
  auto tally = std::make_shared<FrameTally>(engine.frame_totals(), f, engine.NewFrameId());
  FrameHolder holder{.frame = ShareCounted(engine.frame_totals(), std::move(f)),
                     .tally = std::move(tally)};
  return PutFrameHolder(engine, name, std::move(holder), replace);
}

Status StoreFrameHeader(Engine& engine, std::string_view name, FrameHeader header, bool replace,
                        std::shared_ptr<ChunkDropper> dropper) {
  // Held here until the put is decided: armed only once stored, so a refused header (the key
  // exists, OOM, a bad key) never drops the chunks of the frame whose id it carries.
  auto tally = std::make_shared<FrameTally>(engine.frame_totals(), header);
  const uint64_t id = header.id;
  const size_t charge = HeaderCharge(header);
  FrameHolder holder{.frame = nullptr,
                     .header = std::make_shared<const FrameHeader>(std::move(header)),
                     .header_charge = charge,
                     .tally = tally};
  FLOE_RETURN_IF_ERROR(
      PutFrameHolder(engine, name, std::move(holder), replace, [&](const Value* cur) {
        // An id is live under one key at most (D2): the values holding it now, less this
        // header's own tally and the value it replaces if that holds the same id, must be none.
        uint64_t cur_id = 0;
        if (cur != nullptr && cur->type() == kFrameType) {
          if (Result<const Cell<FrameHolder>*> cell = CellOf<FrameHolder>(*cur); cell.ok()) {
            cur_id = (*cell)->Read([](const FrameHolder& h) { return h.id(); });
          }
        }
        int holders = 0;
        {
          MutexLock lock(&engine.frame_totals()->ids_mu);
          auto it = engine.frame_totals()->live_ids.find(id);
          if (it != engine.frame_totals()->live_ids.end()) holders = it->second;
        }
        if (holders - 1 - (cur_id == id ? 1 : 0) > 0) {
          return Status(StatusCode::kAlreadyExists,
                        "ERR frame id " + std::to_string(id) + " is live under another key");
        }
        return Status::OK();
      }));
  tally->Arm(std::move(dropper));
  return Status::OK();
}

// ---- FRAME.LIST, FRAME.DROP ----

void CmdFrameList(CommandContext& ctx) {
  if (RefusedInCluster(ctx)) return;
  std::vector<std::string> names;
  ctx.store().ForEach([&](const Value& v) {
    if (v.type() == kFrameType && !v.IsExpired(ctx.now_ms)) names.emplace_back(v.key());
  });
  std::sort(names.begin(), names.end());
  ctx.out.ArrayHeader(names.size());
  for (const std::string& n : names) ctx.out.Bulk(n);
}

void CmdFrameDrop(CommandContext& ctx) {
  if (RefusedInCluster(ctx)) return;
  bool dropped = false, wrong_type = false;
  uint64_t header_id = 0;  // a cluster frame's header's id (D2)
  Status s = ctx.store().Mutate(ctx.args[1], [&](const Value* cur) -> Result<Mutation> {
    if (Live(cur, ctx.now_ms) == nullptr) return Mutation::Keep();
    if (cur->type() != kFrameType) {
      wrong_type = true;
      return Mutation::Keep();
    }
    dropped = true;
    if (Result<const Cell<FrameHolder>*> cell = CellOf<FrameHolder>(*cur); cell.ok()) {
      header_id = (*cell)->Read(
          [](const FrameHolder& h) { return h.header != nullptr ? h.id() : uint64_t{0}; });
    }
    return Mutation::Remove();
  });
  if (!s.ok()) return ctx.Error(s);
  if (wrong_type) return ctx.WrongType();
  // D10: the chunks go at once, not when the header's cell is freed (after every reader of the
  // store has moved on); the cell's own DROP_CHUNKS then finds nothing.
  if (header_id != 0 && ctx.engine.cluster() != nullptr) {
    ctx.engine.cluster()->DropFrameChunks(header_id);
  }
  ctx.out.Integer(dropped ? 1 : 0);
}

// ---- FRAME.INFO, FRAME.HEAD ----

namespace {

// A value as text: integers without a point, reals in their shortest exact form, a time as
// its milliseconds since the epoch, a categorical as its level.
std::string CellText(const frame::Vec& vec, uint64_t row) {
  if (vec.type() == ColumnType::kString || vec.type() == ColumnType::kCategorical) {
    return std::string(vec.AtString(row));
  }
  const double v = vec.At(row);
  char buf[64];
  if (vec.type() != ColumnType::kReal) {
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), static_cast<int64_t>(v));
    return std::string(buf, end);
  }
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, end);
}

}  // namespace

namespace {

// FRAME.INFO of a cluster frame, from its header alone (docs/frames_cluster.md, D7): a vec's
// bytes and layouts are not in the header (D2), so they are nil and "".
void WriteHeaderInfo(CommandContext& ctx, const FrameHeader& h) {
  uint64_t compressed = 0, raw = 0;
  for (const FrameHeader::Chunk& c : h.chunks) {
    compressed += c.compressed_bytes;
    raw += c.raw_bytes;
  }
  ctx.out.MapHeader(7);
  ctx.out.Bulk("name");
  ctx.out.Bulk(ctx.args[1]);
  ctx.out.Bulk("rows");
  ctx.out.Integer(static_cast<int64_t>(h.rows()));
  ctx.out.Bulk("columns");
  ctx.out.Integer(static_cast<int64_t>(h.columns.size()));
  ctx.out.Bulk("chunks");
  ctx.out.Integer(static_cast<int64_t>(h.chunks.size()));
  ctx.out.Bulk("compressed_bytes");
  ctx.out.Integer(static_cast<int64_t>(compressed));
  ctx.out.Bulk("raw_bytes");
  ctx.out.Integer(static_cast<int64_t>(raw));
  ctx.out.Bulk("vecs");
  ctx.out.ArrayHeader(h.columns.size());
  for (const FrameHeader::Column& c : h.columns) {
    ctx.out.MapHeader(7);
    ctx.out.Bulk("name");
    ctx.out.Bulk(c.name);
    ctx.out.Bulk("type");
    // DecodeFrameHeader checked the type.
    ctx.out.Bulk(frame::ColumnTypeName(static_cast<ColumnType>(c.type)));
    ctx.out.Bulk("na");
    ctx.out.Integer(static_cast<int64_t>(c.na_count));
    ctx.out.Bulk("levels");
    ctx.out.Integer(static_cast<int64_t>(c.domain.size()));
    ctx.out.Bulk("compressed_bytes");
    ctx.out.Null();
    ctx.out.Bulk("raw_bytes");
    ctx.out.Null();
    ctx.out.Bulk("layouts");
    ctx.out.Bulk("");
  }
}

}  // namespace

void CmdFrameInfo(CommandContext& ctx) {
  if (RefusedInCluster(ctx)) return;
  Result<LoadedFrame> f = LoadFrameOrHeader(ctx, ctx.args[1]);
  if (!f.ok()) return ctx.Error(f.status());
  if (f->frame == nullptr) return WriteHeaderInfo(ctx, *f->header);
  const Frame& frame = *f->frame;
  ctx.out.MapHeader(7);
  ctx.out.Bulk("name");
  ctx.out.Bulk(ctx.args[1]);
  ctx.out.Bulk("rows");
  ctx.out.Integer(static_cast<int64_t>(frame.rows()));
  ctx.out.Bulk("columns");
  ctx.out.Integer(static_cast<int64_t>(frame.columns()));
  ctx.out.Bulk("chunks");
  ctx.out.Integer(static_cast<int64_t>(frame.chunk_count()));
  ctx.out.Bulk("compressed_bytes");
  ctx.out.Integer(static_cast<int64_t>(frame.compressed_bytes()));
  ctx.out.Bulk("raw_bytes");
  ctx.out.Integer(static_cast<int64_t>(frame.raw_bytes()));
  ctx.out.Bulk("vecs");
  ctx.out.ArrayHeader(frame.columns());
  for (size_t c = 0; c < frame.columns(); c++) {
    const frame::Vec& vec = frame.vec(c);
    // Counted when the vec was made: nothing here costs a row.
    std::string layout_text;
    for (const auto& [name, count] : vec.layout_counts()) {
      if (!layout_text.empty()) layout_text += " ";
      layout_text += name + ":" + std::to_string(count);
    }
    ctx.out.MapHeader(7);
    ctx.out.Bulk("name");
    ctx.out.Bulk(frame.name(c));
    ctx.out.Bulk("type");
    ctx.out.Bulk(frame::ColumnTypeName(vec.type()));
    ctx.out.Bulk("na");
    ctx.out.Integer(static_cast<int64_t>(vec.na_count()));
    ctx.out.Bulk("levels");
    ctx.out.Integer(static_cast<int64_t>(vec.domain().size()));
    ctx.out.Bulk("compressed_bytes");
    ctx.out.Integer(static_cast<int64_t>(vec.compressed_bytes()));
    ctx.out.Bulk("raw_bytes");
    ctx.out.Integer(static_cast<int64_t>(vec.raw_bytes()));
    ctx.out.Bulk("layouts");
    ctx.out.Bulk(layout_text);
  }
}

// FRAME.HEAD name [n]: the column names, then the first n rows (default 10, at most 1,000),
// each an array of bulk strings, nil for NA. Refused when the reply would pass
// kHeadReplyMaxBytes or proto-max-bulk-len.
constexpr uint64_t kHeadReplyMaxBytes = uint64_t{64} << 20;

namespace {

// FRAME.HEAD's reply: the names, then the first `n` rows of `frame`.
void WriteHead(CommandContext& ctx, const Frame& frame, int64_t n) {
  const uint64_t rows = std::min<uint64_t>(frame.rows(), static_cast<uint64_t>(n));
  // The reply's bytes are bounded before any is written: 1,000 rows of many wide string
  // columns could otherwise build a reply of gigabytes. An upper bound a cell (its text and
  // 16 bytes of framing), summed until it passes the cap.
  const uint64_t cap = std::min<uint64_t>(
      kHeadReplyMaxBytes,
      static_cast<uint64_t>(std::max<int64_t>(0, ctx.engine.proto_max_bulk_len())));
  uint64_t bytes = 16;
  for (size_t c = 0; c < frame.columns() && bytes <= cap; c++) bytes += frame.name(c).size() + 16;
  for (uint64_t r = 0; r < rows && bytes <= cap; r++) {
    bytes += 16;
    for (size_t c = 0; c < frame.columns() && bytes <= cap; c++) {
      const frame::Vec& vec = frame.vec(c);
      const bool text = vec.type() == ColumnType::kString || vec.type() == ColumnType::kCategorical;
      bytes += 16 + (text ? vec.AtString(r).size() : 32);
    }
  }
  if (bytes > cap) {
    return ctx.Error("ERR FRAME.HEAD reply would exceed " + std::to_string(cap) +
                     " bytes (the lesser of proto-max-bulk-len and 64 MiB): ask for fewer rows");
  }
  ctx.out.ArrayHeader(rows + 1);
  ctx.out.ArrayHeader(frame.columns());
  for (size_t c = 0; c < frame.columns(); c++) ctx.out.Bulk(frame.name(c));
  for (uint64_t r = 0; r < rows; r++) {
    ctx.out.ArrayHeader(frame.columns());
    for (size_t c = 0; c < frame.columns(); c++) {
      if (frame.vec(c).IsNA(r)) {
        ctx.out.Null();
      } else {
        ctx.out.Bulk(CellText(frame.vec(c), r));
      }
    }
  }
}

// The first chunks of a cluster frame holding `n` rows (all of them if it has fewer), fetched
// from their homes in order, at most 4 asked at once (docs/frames_cluster.md, D7), each checked
// against the header (ChunkFrameOf), as one frame. Blocks its thread: the analytics pool's.
Result<Frame> FetchHead(ClusterNode& node, const FrameHeader& h, const std::string& name,
                        uint64_t n) {
  size_t chunks = 0;
  for (uint64_t rows = 0; chunks < h.chunks.size() && (rows < n || chunks == 0); chunks++) {
    rows += h.chunks[chunks].rows;
  }
  std::vector<std::vector<std::shared_ptr<const std::string>>> columns(h.columns.size());
  for (size_t first = 0; first < chunks; first += 4) {
    const size_t last = std::min(chunks, first + 4);
    std::vector<std::shared_ptr<std::promise<Result<std::string>>>> asked;
    for (size_t k = first; k < last; k++) {
      auto answer = std::make_shared<std::promise<Result<std::string>>>();
      asked.push_back(answer);
      FetchChunk(node, h, name, k,
                 [answer](Result<std::string> r) { answer->set_value(std::move(r)); });
    }
    for (size_t k = first; k < last; k++) {
      FLOE_ASSIGN_OR_RETURN(std::string bytes, asked[k - first]->get_future().get());
      FLOE_ASSIGN_OR_RETURN(Frame one, ChunkFrameOf(h, k, bytes));
      for (size_t c = 0; c < columns.size(); c++) columns[c].push_back(one.vec(c).chunk_bytes(0));
    }
  }
  std::vector<std::string> names;
  std::vector<frame::Vec> vecs;
  for (size_t c = 0; c < columns.size(); c++) {
    const FrameHeader::Column& col = h.columns[c];
    FLOE_ASSIGN_OR_RETURN(frame::Vec v, frame::Vec::Make(static_cast<ColumnType>(col.type),
                                                         col.domain, std::move(columns[c])));
    names.push_back(col.name);
    vecs.push_back(std::move(v));
  }
  return Frame::Make(std::move(names), std::move(vecs));
}

}  // namespace

void CmdFrameHead(CommandContext& ctx) {
  if (FinishAnalytics(ctx) || RefusedInCluster(ctx)) return;
  int64_t n = 10;
  if (ctx.args.size() > 3) return ctx.SyntaxError();
  if (ctx.args.size() == 3) {
    if (!ParseInt64(ctx.args[2], &n)) return ctx.NotInteger();
    if (n < 0 || n > 1000) return ctx.Error("ERR n must be between 0 and 1000");
  }
  Result<LoadedFrame> f = LoadFrameOrHeader(ctx, ctx.args[1]);
  if (!f.ok()) return ctx.Error(f.status());
  if (f->frame != nullptr) return WriteHead(ctx, *f->frame, n);
  // A cluster frame: its first chunks are fetched off the I/O thread, on the analytics pool
  // (docs/frames_cluster.md, D7).
  ClusterNode* node = ctx.engine.cluster();
  if (node == nullptr)
    return ctx.Error("ERR frame " + std::string(ctx.args[1]) + " lives in a cluster");
  RunAnalytics(
      ctx,
      [node, header = f->header, name = std::string(ctx.args[1]),
       n](const std::atomic<bool>*) -> AnalyticsReply {
        auto head = std::make_shared<Result<Frame>>(
            FetchHead(*node, *header, name, static_cast<uint64_t>(n)));
        return [head, n](CommandContext& c) {
          if (!head->ok()) {
            // D9's text as it is: CLUSTERDOWN is no code ErrorReplyText knows.
            const std::string_view why = head->status().message();
            if (why.starts_with("CLUSTERDOWN ")) return c.Error(why);
            return c.Error(head->status());
          }
          WriteHead(c, **head, n);
        };
      },
      AnalyticsWaits::kForMembers);
}

// ---- INFO ----

void FramesInfoSection(Engine& engine, std::string* out) {
  const Engine::FrameTotals& t = *engine.frame_totals();
  const job::Counters j = engine.jobs().counters();
  auto line = [&](std::string_view k, uint64_t v) {
    out->append(k).append(":").append(std::to_string(v)).append("\r\n");
  };
  out->append("# Frames\r\n");
  // relaxed: statistics.
  line("frames",
       static_cast<uint64_t>(std::max<int64_t>(0, t.count.load(std::memory_order_relaxed))));
  line("frames_compressed_bytes", static_cast<uint64_t>(std::max<int64_t>(
                                      0, t.compressed_bytes.load(std::memory_order_relaxed))));
  line("frames_raw_bytes",
       static_cast<uint64_t>(std::max<int64_t>(0, t.raw_bytes.load(std::memory_order_relaxed))));
  line("frames_detached_bytes", static_cast<uint64_t>(engine.DetachedFrameBytes()));
  line("frame_chunks",
       static_cast<uint64_t>(std::max<int64_t>(0, t.chunks.load(std::memory_order_relaxed))));
  line("frame_chunk_bytes", static_cast<uint64_t>(engine.ChunkStoreBytes()));
  line("jobs_running", j.running);
  line("jobs_started", j.started);
  line("jobs_done", j.done);
  line("jobs_failed", j.failed);
  line("jobs_cancelled", j.cancelled);
  line("jobs_refused", j.refused);
}

}  // namespace floe::server::internal
