// Frames made from frames, and frames written out: FRAME.SELECT (columns, sharing the chunks),
// FRAME.FILTER (rows, a map/reduce of src/mr) and FRAME.EXPORT (a job writing CSV under
// export-dir). docs/frame.md, "Commands", has the syntax and the replies.

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <limits>

#include "mr/mr.h"
#include "server/internal/analytics_pool.h"
#include "server/internal/cluster_node.h"
#include "server/internal/engine_budget.h"
#include "server/internal/frame_cluster.h"
#include "server/internal/frame_value.h"

namespace floe::server::internal {

using frame::ColumnType;
using frame::Frame;

namespace {

// Whether the destination (args[2]) is homed here: always on one node; in a cluster FRAME.FILTER
// and FRAME.SELECT are routed by their source alone (D6).
bool DestinationHere(CommandContext& ctx) {
  ClusterNode* node = ctx.engine.cluster();
  return node == nullptr || node->Home(cluster::KeySlot(ctx.args[2])) == node->self();
}

constexpr char kOneNodeSourceElsewhere[] =
    "ERR the source is a one-node frame and the destination is homed at another member";

// D6: a derived frame of a cluster frame (docs/frames_cluster.md), at the source's home, on the
// analytics pool: the map task makes output chunk k where source chunk k lives
// (ClusterNode::DeriveFrame), then the header is stored at the destination's home by PUT_HEADER
// from the pool's thread, this member or another (D14): the destination's copies at other
// members go first (C7; the command changes no key where it runs). A header refused there (the
// destination exists without REPLACE, OOM) drops the chunks made (D10). Replies the rows
// (FRAME.FILTER) or the columns (FRAME.SELECT) of the new frame.
void DeriveInCluster(CommandContext& ctx, std::shared_ptr<const FrameHeader> header,
                     MapTaskRequest task, bool replace) {
  ClusterNode* node = ctx.engine.cluster();
  if (node == nullptr) {
    return ctx.Error("ERR frame " + std::string(ctx.args[1]) + " lives in a cluster");
  }
  task.out_id = ctx.engine.NewFrameId();
  task.out_header_slot = cluster::KeySlot(ctx.args[2]);
  const bool rows = task.op == MapOp::kFilter;
  RunAnalytics(
      ctx,
      [node, header = std::move(header), name = std::string(ctx.args[1]),
       dst = std::string(ctx.args[2]), task = std::move(task), replace,
       rows](const std::atomic<bool>*) mutable -> AnalyticsReply {
        auto out = std::make_shared<Result<FrameHeader>>(
            node->DeriveFrame(*header, name, std::move(task)));
        // The header stored at the destination's home by PUT_HEADER (D14), which clears the
        // destination's copies at other members first (C7). Refused: the chunks go (D10); no
        // answer: they stay until the sweep finds whether the header landed.
        if (out->ok()) {
          bool unknown = false;
          const Status s =
              node->PutHeader(dst, replace, EncodeFrameHeader(**out), nullptr, &unknown);
          if (!s.ok()) {
            if (!unknown) node->DropFrameChunks((*out)->id);
            *out = s;
          }
        }
        return [out, rows](CommandContext& c) {
          if (!out->ok()) {
            // D9's text as it is (CLUSTERDOWN is no code ErrorReplyText knows).
            const std::string_view why = out->status().message();
            if (why.starts_with("CLUSTERDOWN ") || why.starts_with("TRYAGAIN ")) {
              return c.Error(why);
            }
            return c.Error(TaskError(out->status()));
          }
          const FrameHeader& h = **out;
          c.out.Integer(static_cast<int64_t>(rows ? h.rows() : h.columns.size()));
        };
      },
      AnalyticsWaits::kForMembers);
}

}  // namespace

// FRAME.SELECT src dst COLS col [col ...] [REPLACE]
//
// The new frame's vecs are copies of the source's, which share its chunks' bytes (Vec holds
// them by shared_ptr): nothing is copied but the names and domains. The store still charges the
// new frame's whole MemoryBytes: chunks shared now are the new frame's alone once the source is
// dropped, and a charge made only for the overhead would then count them nowhere.
void CmdFrameSelect(CommandContext& ctx) {
  if (FinishAnalytics(ctx) || RefusedInCluster(ctx)) return;
  const auto& a = ctx.args;
  if (Status s = CheckFrameName(a[2]); !s.ok()) return ctx.Error(s);
  if (!EqualsIgnoreCase(a[3], "COLS")) return ctx.SyntaxError();
  size_t end = a.size();
  bool replace = false;
  // A trailing REPLACE is the option (a column named REPLACE can be given by its index).
  if (end > 5 && EqualsIgnoreCase(a[end - 1], "REPLACE")) {
    replace = true;
    end--;
  }
  if (end <= 4) return ctx.SyntaxError();
  Result<LoadedFrame> loaded = LoadFrameOrHeader(ctx, a[1]);
  if (!loaded.ok()) return ctx.Error(loaded.status());
  if (loaded->frame == nullptr) {
    const FrameHeader& h = *loaded->header;
    if (end - 4 > h.columns.size()) {
      return ctx.Error("ERR more columns than the frame has (" + std::to_string(h.columns.size()) +
                       ")");
    }
    MapTaskRequest task{.op = MapOp::kSelect};
    std::vector<bool> seen(h.columns.size(), false);
    for (size_t i = 4; i < end; i++) {
      Result<size_t> col = FindHeaderColumn(h, a[i]);
      if (!col.ok()) return ctx.Error(col.status());
      if (seen[*col]) {
        return ctx.Error("ERR column '" + h.columns[*col].name.substr(0, 64) + "' given twice");
      }
      seen[*col] = true;
      task.select.push_back(static_cast<uint32_t>(*col));
    }
    if (!replace && DestinationHere(ctx) && Lookup(ctx, a[2], false)) {
      return ctx.Error(kFrameTargetExists);
    }
    return DeriveInCluster(ctx, std::move(loaded->header), std::move(task), replace);
  }
  if (!DestinationHere(ctx)) return ctx.Error(kOneNodeSourceElsewhere);
  const Frame& src = *loaded->frame;
  // Each column at most once, so the count is bounded by the source's columns.
  if (end - 4 > src.columns()) {
    return ctx.Error("ERR more columns than the frame has (" + std::to_string(src.columns()) + ")");
  }
  std::vector<bool> seen(src.columns(), false);
  std::vector<std::string> names;
  std::vector<frame::Vec> vecs;
  for (size_t i = 4; i < end; i++) {
    Result<size_t> col = FindColumn(src, a[i]);
    if (!col.ok()) return ctx.Error(col.status());
    if (seen[*col]) {
      return ctx.Error("ERR column '" + src.name(*col).substr(0, 64) + "' given twice");
    }
    seen[*col] = true;
    names.push_back(src.name(*col));
    vecs.push_back(src.vec(*col));
  }
  if (!replace && Lookup(ctx, a[2], false)) return ctx.Error(kFrameTargetExists);
  Result<Frame> g = Frame::Make(std::move(names), std::move(vecs));
  if (!g.ok()) return ctx.Error(TaskError(g.status()));
  const auto columns = static_cast<int64_t>(g->columns());
  if (Status s = StoreFrame(ctx.engine, a[2], std::move(g).value(), replace); !s.ok()) {
    return ctx.Error(s);
  }
  ctx.out.Integer(columns);
}

namespace {

// FRAME.FILTER's task, apart from its arguments so that it can move to another thread: the
// conditions resolved against the frame, run with a cancel flag and a memory budget.
Result<Frame> RunFilter(const Frame& f, const std::vector<mr::Condition>& conditions,
                        const std::atomic<bool>* cancel, mr::MemoryBudget* budget) {
  return mr::Filter(f, conditions, {.cancel = cancel, .memory = budget});
}

}  // namespace

// FRAME.FILTER src dst WHERE col op [value] [AND col op [value] ...] [REPLACE]
void CmdFrameFilter(CommandContext& ctx) {
  if (FinishAnalytics(ctx) || RefusedInCluster(ctx)) return;
  const auto& a = ctx.args;
  if (Status s = CheckFrameName(a[2]); !s.ok()) return ctx.Error(s);
  if (!EqualsIgnoreCase(a[3], "WHERE")) return ctx.SyntaxError();
  struct Spelled {
    std::string_view col;
    mr::FilterOp op;
    std::string_view value;
  };
  std::vector<Spelled> spelled;
  bool replace = false;
  size_t i = 4;
  for (;;) {
    if (i + 1 >= a.size()) return ctx.SyntaxError();
    if (spelled.size() == mr::kMaxFilterConditions) {
      return ctx.Error("ERR at most 16 conditions");
    }
    std::optional<mr::FilterOp> op = mr::ParseFilterOp(a[i + 1]);
    if (!op) {
      return ctx.Error("ERR unknown operator '" + std::string(a[i + 1].substr(0, 32)) +
                       "' (=, !=, <, <=, >, >=, ISNA, NOTNA)");
    }
    Spelled s{.col = a[i], .op = *op, .value = {}};
    if (*op == mr::FilterOp::kIsNA || *op == mr::FilterOp::kNotNA) {
      i += 2;
    } else {
      if (i + 2 >= a.size()) return ctx.SyntaxError();
      s.value = a[i + 2];
      i += 3;
    }
    spelled.push_back(s);
    if (i == a.size()) break;
    if (i + 1 == a.size() && EqualsIgnoreCase(a[i], "REPLACE")) {
      replace = true;
      break;
    }
    if (!EqualsIgnoreCase(a[i], "AND")) return ctx.SyntaxError();
    i++;
  }
  Result<LoadedFrame> loaded = LoadFrameOrHeader(ctx, a[1]);
  if (!loaded.ok()) return ctx.Error(loaded.status());
  const std::shared_ptr<const Frame>& f = loaded->frame;
  const std::shared_ptr<const FrameHeader>& h = loaded->header;  // a cluster frame's (D6)
  std::vector<mr::Condition> conditions;
  for (const Spelled& s : spelled) {
    Result<size_t> col = f != nullptr ? FindColumn(*f, s.col) : FindHeaderColumn(*h, s.col);
    if (!col.ok()) return ctx.Error(col.status());
    mr::Condition c{.col = *col, .op = s.op, .number = 0, .text = std::string(s.value)};
    const ColumnType type =
        f != nullptr ? f->vec(*col).type() : static_cast<ColumnType>(h->columns[*col].type);
    const std::string& col_name = f != nullptr ? f->name(*col) : h->columns[*col].name;
    const bool text = type == ColumnType::kCategorical || type == ColumnType::kString;
    const bool na_test = s.op == mr::FilterOp::kIsNA || s.op == mr::FilterOp::kNotNA;
    if (!text && !na_test && !ParseRedisDouble(s.value, &c.number)) {
      return ctx.Error("ERR column '" + col_name.substr(0, 64) +
                       "' is compared with a number, not '" + std::string(s.value.substr(0, 32)) +
                       "'");
    }
    conditions.push_back(std::move(c));
  }
  if (f != nullptr && !DestinationHere(ctx)) return ctx.Error(kOneNodeSourceElsewhere);
  if (!replace && DestinationHere(ctx) && Lookup(ctx, a[2], false)) {
    return ctx.Error(kFrameTargetExists);
  }
  if (f == nullptr) {
    MapTaskRequest task{.op = MapOp::kFilter};
    task.conditions = std::move(conditions);
    return DeriveInCluster(ctx, h, std::move(task), replace);
  }
  // On the analytics pool, as FRAME.GROUPBY (docs/frame.md, rules A1-A8): the result is stored
  // when the reply is written, on this client's thread under its worker lock.
  RunAnalytics(ctx, [f, conditions = std::move(conditions), replace,
                     &engine = ctx.engine](const std::atomic<bool>* cancel) {
    auto budget = std::make_shared<EngineBudget>(engine);
    Result<Frame> g = RunFilter(*f, conditions, cancel, budget.get());
    return AnalyticsReply(StoreMadeFrame(std::move(budget), std::move(g), replace));
  });
}

// ---- FRAME.EXPORT ----

namespace {

// Where an export writes: the directory opened and checked by the command, and the file's name
// in it. The job creates, writes and renames relative to that descriptor, so a directory
// swapped for a link after the checks cannot lead outside export-dir.
struct ExportTarget {
  std::shared_ptr<const int> dir;
  std::string name;   // one path component, not "." or ".."
  std::string shown;  // the path as errors and JOB.STATUS name it
  bool replace = false;
};

bool Within(const std::string& p, const std::string& dir) {
  return p == dir || dir == "/" ||
         (p.size() > dir.size() && p.compare(0, dir.size(), dir) == 0 && p[dir.size()] == '/');
}

Status OutsideImportDir(const std::string& path, const std::string& root) {
  return ClientError("ERR '" + path + "' is outside export-dir (" + root +
                     "): FRAME.EXPORT writes only under it (CONFIG GET export-dir)");
}

// The checks FRAME.IMPORT makes of what it reads, made of what FRAME.EXPORT writes: the path as
// spelled is under export-dir, and so is the real path of its directory (links resolved); the
// file itself, if there, is a regular file and not a link, and is replaced only with REPLACE.
Status ResolveExportTarget(const std::string& export_dir, std::string path, ExportTarget* t) {
  // Off unless the node was given a directory for it: a client that may write files anywhere
  // under the working directory (the default import-dir), with REPLACE, could overwrite the
  // files of whoever runs the node.
  if (export_dir.empty()) {
    return ClientError(
        "ERR FRAME.EXPORT is off: start the node with --export-dir DIR (it writes only under it)");
  }
  if (path.empty() || path.size() > 4096 || path.find('\0') != std::string::npos) {
    return ClientError("ERR bad path");
  }
  char* real_root = ::realpath(export_dir.c_str(), nullptr);
  if (real_root == nullptr) {
    return ClientError("ERR export-dir '" + export_dir +
                       "' cannot be used: " + std::strerror(errno));
  }
  const std::string root = real_root;
  std::free(real_root);
  std::error_code ec;
  std::string spelled_root = std::filesystem::absolute(export_dir, ec).lexically_normal().string();
  while (spelled_root.size() > 1 && spelled_root.back() == '/') spelled_root.pop_back();
  if (path.front() != '/') path = spelled_root + "/" + path;
  const std::filesystem::path lexical = std::filesystem::absolute(path, ec).lexically_normal();
  if (ec || !(Within(lexical.string(), root) || Within(lexical.string(), spelled_root))) {
    return OutsideImportDir(path, root);
  }
  t->name = lexical.filename().string();
  if (t->name.empty() || t->name == "." || t->name == "..") {
    return ClientError("ERR '" + path + "' does not name a file");
  }
  const std::string parent = lexical.parent_path().string();
  const int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ClientError("ERR cannot write in '" + parent + "': " + std::strerror(errno));
  t->dir = std::shared_ptr<const int>(new int(fd), [](const int* d) {
    ::close(*d);
    delete d;
  });
  // The directory opened, wherever its spelling led: under export-dir, or refused.
  char buf[PATH_MAX + 1];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), buf, PATH_MAX);
  if (n <= 0) return ClientError("ERR cannot write in '" + parent + "'");
  const std::string dir_name(buf, static_cast<size_t>(n));
  if (!Within(dir_name, root)) return OutsideImportDir(path, root);
  t->shown = dir_name + (dir_name == "/" ? "" : "/") + t->name;
  struct stat st;
  if (::fstatat(fd, t->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) {
      return ClientError("ERR '" + t->shown + "' is a symbolic link (FRAME.EXPORT follows none)");
    }
    if (!S_ISREG(st.st_mode)) return ClientError("ERR '" + t->shown + "' is not a regular file");
    if (!t->replace) {
      return ClientError("ERR '" + t->shown + "' exists (FRAME.EXPORT takes REPLACE)");
    }
  } else if (errno != ENOENT) {
    return ClientError("ERR cannot write '" + t->shown + "': " + std::strerror(errno));
  }
  return Status::OK();
}

Status WriteAll(int fd, std::string* buf, uint64_t* written) {
  size_t off = 0;
  while (off < buf->size()) {
    const ssize_t n = ::write(fd, buf->data() + off, buf->size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Internal(std::string("write: ") + std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
  *written += buf->size();
  buf->clear();
  return Status::OK();
}

// The write buffer: filled to this by frame::CsvWriter (a line more at most), then written.
constexpr size_t kExportBuffer = size_t{1} << 20;

// The CSV of `f` into `fd` (frame::CsvWriter, docs/frame.md "CSV out"), a buffer at a time,
// polling the job's flag between buffers. The buffer's capacity is charged to `budget`
// (maxmemory) before it grows: ResourceExhausted with the OOM text if it does not fit. Progress:
// rows written, and bytes against the bytes the written rows predict.
struct CsvOut {
  explicit CsvOut(uint64_t rows) : total_rows(rows) { buf.reserve(target + max_line); }
  // The buffer holds lines up to `target`, then one line of at most `max_line` (the writer
  // bounds a line's width before building it): target + max_line, charged, never grown past.
  const size_t target = kExportBuffer / 2;
  size_t max_line = kExportBuffer - target;
  std::string buf;
  uint64_t written = 0;
  uint64_t rows_before = 0;  // written by the writers before this one (a cluster frame's chunks)
  const uint64_t total_rows;
};

// Writes what `writer` has left (`last`: the export's last writer).
Status DrainCsv(frame::CsvWriter& writer, int fd, job::Context& job, EngineBudget& budget,
                CsvOut& o, bool last) {
  const size_t target = o.target;
  size_t& max_line = o.max_line;
  std::string& buf = o.buf;
  uint64_t& written = o.written;
  const uint64_t total_rows = o.total_rows;
  bool more = true;
  while (more) {
    if (job.cancelled()) return Status::Cancelled("cancelled by JOB.CANCEL");
    Result<bool> next = writer.Next(&buf, target, max_line);
    if (!next.ok()) {
      if (next.status().code() != StatusCode::kResourceExhausted) return next.status();
      if (buf.empty()) {
        // A line wider than max_line: its room is charged first (OOM stops the export), then
        // the writer, still at that line, takes it.
        if (max_line > (std::numeric_limits<size_t>::max() >> 2)) return next.status();
        FLOE_RETURN_IF_ERROR(budget.Reserve(max_line));
        max_line *= 2;
        buf.reserve(target + max_line);
        continue;
      }
      more = true;  // the lines before it go out first
    } else {
      more = *next;
    }
    FLOE_RETURN_IF_ERROR(WriteAll(fd, &buf, &written));
    const uint64_t rows_done = o.rows_before + writer.rows_written();
    const uint64_t expected =
        rows_done == 0
            ? written
            : static_cast<uint64_t>(static_cast<double>(written) * static_cast<double>(total_rows) /
                                    static_cast<double>(rows_done));
    job.SetProgress(rows_done, written, more || !last ? std::max(expected, written) : written);
  }
  o.rows_before += writer.rows_written();
  return Status::OK();
}

Status WriteCsv(const std::shared_ptr<const Frame>& f, int fd, job::Context& job,
                EngineBudget& budget) {
  frame::CsvWriter writer(f);
  CsvOut out(f->rows());
  return DrainCsv(writer, fd, job, budget, out, true);
}

// A cluster frame's CSV (docs/frames_cluster.md, D7): its chunks fetched from their homes in
// order, at most kChunksAhead asked ahead of the one written, each written as a one-chunk frame
// (the header line once). A chunk's bytes are charged to `budget` while it is written; a chunk
// missing or a home that does not answer fails the export (D9).
constexpr size_t kChunksAhead = 4;
Status WriteClusterCsv(ClusterNode& node, const FrameHeader& h, const std::string& name, int fd,
                       job::Context& job, EngineBudget& budget) {
  CsvOut out(h.rows());
  if (h.chunks.empty()) {
    // No chunk: the header line alone, from a frame of the header's columns and no row.
    std::vector<std::string> names;
    std::vector<frame::Vec> vecs;
    for (const FrameHeader::Column& c : h.columns) {
      FLOE_ASSIGN_OR_RETURN(frame::Vec v,
                            frame::Vec::Make(static_cast<frame::ColumnType>(c.type), c.domain, {}));
      names.push_back(c.name);
      vecs.push_back(std::move(v));
    }
    FLOE_ASSIGN_OR_RETURN(Frame empty, Frame::Make(std::move(names), std::move(vecs)));
    frame::CsvWriter writer(std::make_shared<const Frame>(std::move(empty)));
    return DrainCsv(writer, fd, job, budget, out, true);
  }
  using Answer = std::promise<Result<std::string>>;
  std::deque<std::pair<std::shared_ptr<Answer>, std::future<Result<std::string>>>> ahead;
  uint64_t next = 0;
  for (uint64_t k = 0; k < h.chunks.size(); k++) {
    while (ahead.size() < kChunksAhead && next < h.chunks.size()) {
      auto answer = std::make_shared<Answer>();
      std::future<Result<std::string>> got = answer->get_future();
      FetchChunk(node, h, name, next++,
                 [answer](Result<std::string> r) { answer->set_value(std::move(r)); });
      ahead.emplace_back(std::move(answer), std::move(got));
    }
    Result<std::string> bytes = ahead.front().second.get();
    ahead.pop_front();
    if (!bytes.ok()) return bytes.status();
    if (job.cancelled()) return Status::Cancelled("cancelled by JOB.CANCEL");
    FLOE_RETURN_IF_ERROR(budget.Reserve(bytes->size()));
    Status s = [&]() -> Status {
      FLOE_ASSIGN_OR_RETURN(Frame chunk, ChunkFrameOf(h, k, *bytes));
      frame::CsvWriter writer(std::make_shared<const Frame>(std::move(chunk)));
      if (k > 0) {
        std::string header_line;
        FLOE_RETURN_IF_ERROR(writer.Next(&header_line, 0).status());  // written once, above
      }
      return DrainCsv(writer, fd, job, budget, out, k + 1 == h.chunks.size());
    }();
    budget.Release(bytes->size());
    FLOE_RETURN_IF_ERROR(s);
  }
  // The fetches still asked (after a failure) answer into their promises, which they hold.
  return Status::OK();
}

std::atomic<uint64_t> export_sequence{0};

// The job: write a temporary file beside the target (created new, no link followed), then
// rename it over the target (without REPLACE, only if no file came there meanwhile). The
// temporary file is removed on every failure and on cancel.
Status ExportWork(const LoadedFrame& f, const std::string& name, Engine* engine,
                  const ExportTarget& t, const std::shared_ptr<EngineBudget>& budget,
                  job::Context& job) {
  const int dir = *t.dir;
  // relaxed: a counter that only has to differ between exports of this process.
  const std::string tmp = "." + t.name.substr(0, 200) + ".export-" + std::to_string(::getpid()) +
                          "-" +
                          std::to_string(export_sequence.fetch_add(1, std::memory_order_relaxed));
  const int fd =
      ::openat(dir, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status::Internal("cannot create a file beside '" + t.shown +
                            "': " + std::strerror(errno));
  }
  Status s;
  if (f.frame != nullptr) {
    s = WriteCsv(f.frame, fd, job, *budget);
  } else if (ClusterNode* node = engine->cluster(); node != nullptr) {
    s = WriteClusterCsv(*node, *f.header, name, fd, job, *budget);
  } else {
    s = Status::Unavailable("this member left the cluster");
  }
  if (s.ok() && ::fsync(fd) != 0)
    s = Status::Internal(std::string("fsync: ") + std::strerror(errno));
  if (::close(fd) != 0 && s.ok())
    s = Status::Internal(std::string("close: ") + std::strerror(errno));
  if (s.ok() && job.cancelled()) s = Status::Cancelled("cancelled by JOB.CANCEL");
  if (s.ok() &&
      ::renameat2(dir, tmp.c_str(), dir, t.name.c_str(), t.replace ? 0 : RENAME_NOREPLACE) != 0) {
    s = errno == EEXIST
            ? Status::AlreadyExists("'" + t.shown +
                                    "' was created meanwhile (FRAME.EXPORT takes REPLACE)")
            : Status::Internal("cannot rename onto '" + t.shown + "': " + std::strerror(errno));
  }
  if (!s.ok()) {
    ::unlinkat(dir, tmp.c_str(), 0);
    return s;
  }
  const uint64_t rows = f.frame != nullptr ? f.frame->rows() : f.header->rows();
  const size_t columns = f.frame != nullptr ? f.frame->columns() : f.header->columns.size();
  job.SetResult("frame exported to '" + t.shown + "': " + std::to_string(rows) + " rows, " +
                std::to_string(columns) + " columns");
  return Status::OK();
}

}  // namespace

// FRAME.EXPORT key path [REPLACE]
void CmdFrameExport(CommandContext& ctx) {
  if (RefusedInCluster(ctx)) return;
  const auto& a = ctx.args;
  ExportTarget t;
  if (a.size() == 4 && EqualsIgnoreCase(a[3], "REPLACE")) {
    t.replace = true;
  } else if (a.size() != 3) {
    return ctx.SyntaxError();
  }
  // The frame as it is now: a FRAME.DROP or a replace meanwhile does not change what is written.
  // In a cluster, its header (D7: the chunks are fetched by the job).
  Result<LoadedFrame> f = LoadFrameOrHeader(ctx, a[1]);
  if (!f.ok()) return ctx.Error(f.status());
  if (Status s = ResolveExportTarget(ctx.engine.config().export_dir, std::string(a[2]), &t);
      !s.ok()) {
    return ctx.Error(s);
  }
  // The job's write buffer counts against maxmemory from now until the job ends: an export that
  // would pass it is refused here, before the job starts.
  auto budget = std::make_shared<EngineBudget>(ctx.engine);
  if (Status s = budget->Reserve(kExportBuffer); !s.ok()) return ctx.Error(s);
  std::string what = std::string(a[1]) + " -> " + t.shown;
  Result<uint64_t> id = ctx.engine.jobs().Start(
      "export", std::move(what),
      [frame = std::move(f).value(), name = std::string(a[1]), engine = &ctx.engine,
       t = std::move(t), budget](job::Context& job) {
        Status s = ExportWork(frame, name, engine, t, budget, job);
        budget->Release(budget->held());  // the buffer is gone with the job's end
        return s;
      });
  if (!id.ok()) return ctx.Error("ERR " + std::string(id.status().message()));
  ctx.out.Integer(static_cast<int64_t>(*id));
}

}  // namespace floe::server::internal
