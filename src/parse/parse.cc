// Parallel parsing of sources into one Frame: sources (bytes, files, directories, gzip; loaded
// by source.cc), the split into byte ranges, the range parsers, and the merge of their pieces in
// input order.

#include "parse/parse.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <unordered_map>

#include "parse/internal/csv.h"
#include "parse/internal/range.h"
#include "parse/internal/source.h"

namespace floe::parse {
namespace {

using frame::ColumnType;
using internal::Inflate;
using internal::IsGzip;
using internal::LoadFile;
using internal::ParseRange;
using internal::Piece;
using internal::Row;
using internal::Shared;
using internal::Source;

constexpr uint32_t kMaxThreads = 256;
constexpr size_t kMergeWorkers = 4;       // threads re-encoding categorical chunks in the merge
constexpr uint32_t kRangesPerThread = 4;  // a body is cut in up to this many ranges a thread

// Range parsing: internal/range.h, range.cc.

// Rows of the input's start parsed once more before the ranges, for their categorical values,
// and the most values a column is seeded with: a range seeded with values it never meets only
// holds them (charged to maxmemory with its domain), so the seed stays small.
constexpr uint64_t kSeedRows = 2048;
constexpr size_t kMaxSeedValues = 1024;
constexpr size_t kMaxSeedBytes = 64 << 10;  // of one column's seed values together

// How ranges split
// ----------------
// A body of n bytes is cut at n * i / T for T ranges (up to kRangesPerThread a thread, taken in
// turn by the threads). A cut may fall inside a quoted field, so
// no range can find its first row by looking for an LF alone. The split is exact instead of
// speculative: pass 1 counts the quote characters of each range in parallel; under contract 4
// every quote toggles the quoted state (a doubled quote toggles twice), so the prefix parity of
// those counts says whether each cut lies inside quotes. Pass 2: range i starts at the first
// LF outside quotes at or after its cut (NextRowStart, scanning from the known state) and ends
// where range i + 1 starts, found by the same function, so the ranges tile the body with no row
// lost or read twice, whatever the quotes. Pass 1 is a count at memory bandwidth. A quoted
// field longer than a range leaves ranges with no row start of their own: their scan stops at
// the next cut and they take the next range's start (empty), so the scans stay O(n) in all.
struct Split {
  std::vector<const char*> starts;  // ranges + 1 row starts; range i is [starts[i], starts[i+1])
};

// Runs f(0..n-1), f(0) and any whose thread the system refused on the calling thread.
template <typename F>
void RunAll(size_t n, F&& f) {
  std::vector<std::thread> threads;
  std::vector<size_t> inline_runs;
  for (size_t i = 1; i < n; i++) {
    Result<std::thread> t = StartThread([&f, i] { f(i); });
    if (t.ok()) {
      threads.push_back(std::move(*t));
    } else {
      inline_runs.push_back(i);
    }
  }
  if (n > 0) f(0);
  for (size_t i : inline_runs) f(i);
  for (std::thread& t : threads) t.join();
}

// Both passes go a MiB at a time and stop early once `cancel` is set (the caller then returns
// Cancelled and ignores the split): a cancel takes effect within a MiB of work per thread.
Split SplitBody(std::string_view body, char quote, size_t ranges, size_t workers,
                const std::atomic<bool>* cancel) {
  auto cancelled = [cancel] {
    return cancel != nullptr && cancel->load(std::memory_order_relaxed);
  };
  auto step_end = [](const char* at, const char* limit) {
    return limit - at > static_cast<ptrdiff_t>(internal::kScanStep) ? at + internal::kScanStep
                                                                    : limit;
  };
  const char* begin = body.data();
  const char* end = begin + body.size();
  std::vector<const char*> cuts(ranges + 1);
  for (size_t i = 0; i <= ranges; i++) {
    // n * i / T without overflow (i <= T <= kMaxThreads).
    const size_t n = body.size();
    cuts[i] = begin + (n / ranges) * i + (n % ranges) * i / ranges;
  }
  std::vector<uint64_t> quotes(ranges, 0);
  if (quote != '\0' && ranges > 1) {
    RunAll(std::min(workers, ranges), [&](size_t w) {
      for (size_t i = w; i < ranges; i += std::min(workers, ranges)) {
        for (const char* at = cuts[i]; at < cuts[i + 1] && !cancelled();) {
          const char* stop = step_end(at, cuts[i + 1]);
          quotes[i] += internal::CountQuotes(at, stop, quote);
          at = stop;
        }
      }
    });
  }
  Split split;
  split.starts.resize(ranges + 1);
  split.starts[0] = begin;
  split.starts[ranges] = end;
  uint64_t parity = 0;
  std::vector<bool> in_quotes(ranges, false);
  for (size_t i = 1; i < ranges; i++) {
    parity += quotes[i - 1];
    in_quotes[i] = (parity & 1) != 0;
  }
  // Each scan stops at the next cut: a range with no row start of its own (inside a long quoted
  // field) starts where the next one does, so the scans cost O(n) together, not O(T * n).
  const size_t scans = ranges - 1;
  RunAll(std::min(workers, scans), [&](size_t w) {
    for (size_t k = w; k < scans; k += std::min(workers, scans)) {
      const size_t i = k + 1;
      // A step that holds no row start leaves the scan at its end, in the state its quotes give
      // (a row start right at the step's end is found again by the next step's look back).
      const char* at = cuts[i];
      bool in_quotes_at = in_quotes[i];
      for (;;) {
        const char* stop = step_end(at, cuts[i + 1]);
        const char* found = internal::NextRowStart(begin, at, stop, quote, in_quotes_at);
        if (found != stop || stop == cuts[i + 1] || cancelled()) {
          split.starts[i] = found;
          break;
        }
        if ((internal::CountQuotes(at, stop, quote) & 1) != 0) in_quotes_at = !in_quotes_at;
        at = stop;
      }
    }
  });
  for (size_t i = ranges - 1; i >= 1; i--) {
    if (split.starts[i] >= cuts[i + 1]) split.starts[i] = split.starts[i + 1];
  }
  return split;
}

// ---------------------------------------------------------------------------------------------
// Merge

// Joins the pieces' columns chunk by chunk. Categorical domains are merged in piece order, which
// is first-seen order over the whole input; a piece whose codes differ from the merged ones has
// its chunks re-encoded. A domain past the categorical limit makes the column a string column.
Result<frame::Frame> Merge(const Setup& setup, const ParseOptions& options, uint32_t threads,
                           std::vector<Piece>& pieces, ParseReport* report) {
  std::vector<frame::Vec> vecs;
  for (size_t c = 0; c < setup.names.size(); c++) {
    std::vector<std::shared_ptr<const std::string>> chunks;
    std::vector<std::string> domain;
    ColumnType type = setup.types[c];
    // A re-encoded chunk keeps its NA rows: the column's are its pieces', counted as each was
    // made (on the parse's threads), not again here.
    uint64_t na_count = 0;
    for (const Piece& p : pieces) na_count += p.frame.vec(c).na_count();
    if (type != ColumnType::kCategorical) {
      for (Piece& p : pieces) {
        const frame::Vec& v = p.frame.vec(c);
        for (size_t k = 0; k < v.chunk_count(); k++) chunks.push_back(v.chunk_bytes(k));
      }
    } else {
      std::unordered_map<std::string_view, int32_t> code_of;
      std::vector<std::vector<int32_t>> maps(pieces.size());
      // A range whose domain passed the limit made its column a string column already.
      bool any_string = false;
      for (const Piece& p : pieces) any_string |= p.frame.vec(c).type() == ColumnType::kString;
      for (size_t i = 0; i < pieces.size(); i++) {
        for (const std::string& value : pieces[i].frame.vec(c).domain()) {
          auto [it, fresh] = code_of.emplace(value, static_cast<int32_t>(domain.size()));
          if (fresh) domain.push_back(value);
          maps[i].push_back(it->second);
        }
      }
      const bool as_strings = any_string || domain.size() > options.max_categorical_domain;
      if (as_strings) {
        type = ColumnType::kString;
        report->string_columns_from_categorical++;
      }
      // The chunks of pieces whose codes differ from the merged ones (every piece but the first,
      // as a rule: each range numbers values as it meets them) are re-encoded on the parse's
      // threads, each a share of them; the chunks then go in input order.
      struct Task {
        size_t piece, chunk;
        std::shared_ptr<const std::string> bytes;
        Status status;
      };
      std::vector<Task> tasks;
      std::vector<bool> identity(pieces.size(), false);
      for (size_t i = 0; i < pieces.size(); i++) {
        const frame::Vec& v = pieces[i].frame.vec(c);
        if (v.type() == ColumnType::kString) continue;
        identity[i] = !as_strings;
        for (size_t k = 0; identity[i] && k < maps[i].size(); k++) {
          identity[i] = maps[i][k] == int32_t(k);
        }
        if (identity[i]) continue;
        for (size_t k = 0; k < v.chunk_count(); k++) tasks.push_back({.piece = i, .chunk = k});
      }
      auto reencode = [&](Task& t) {
        const frame::Vec& v = pieces[t.piece].frame.vec(c);
        const frame::ChunkView& view = v.chunk(t.chunk);
        std::vector<int32_t> codes;
        std::vector<std::optional<std::string_view>> strings;
        for (uint32_t r = 0; r < view.rows(); r++) {
          const int32_t code =
              view.layout() == frame::Layout::kEmpty ? frame::kNACode : view.CodeAt(r);
          const int32_t global = code == frame::kNACode ? frame::kNACode : maps[t.piece][code];
          if (as_strings) {
            strings.push_back(global == frame::kNACode
                                  ? std::nullopt
                                  : std::optional<std::string_view>(domain[global]));
          } else {
            codes.push_back(global);
          }
        }
        if (as_strings) {
          Result<std::string> bytes = frame::CompressStrings(strings);
          if (!bytes.ok()) {
            t.status = bytes.status();
            return;
          }
          t.bytes = std::make_shared<const std::string>(std::move(*bytes));
        } else {
          t.bytes = std::make_shared<const std::string>(
              frame::CompressCodes(codes, static_cast<uint32_t>(domain.size())));
        }
      };
      // At most kMergeWorkers: each holds one chunk's values while it re-encodes them (a few MB,
      // uncharged, as the one-thread merge held), so the peak does not grow with the cores.
      const size_t workers = std::min<size_t>({tasks.size(), threads, kMergeWorkers});
      RunAll(workers, [&](size_t w) {
        for (size_t t = w; t < tasks.size(); t += workers) {
          // An allocation that fails fails the parse, as in the range parsers.
          try {
            reencode(tasks[t]);
          } catch (const std::bad_alloc&) {
            tasks[t].status = Status::ResourceExhausted("out of memory while merging");
          }
        }
      });
      size_t next_task = 0;
      for (size_t i = 0; i < pieces.size(); i++) {
        const frame::Vec& v = pieces[i].frame.vec(c);
        if (v.type() == ColumnType::kString || identity[i]) {
          for (size_t k = 0; k < v.chunk_count(); k++) chunks.push_back(v.chunk_bytes(k));
          continue;
        }
        for (size_t k = 0; k < v.chunk_count(); k++) {
          Task& t = tasks[next_task++];
          FLOE_RETURN_IF_ERROR(t.status);
          chunks.push_back(std::move(t.bytes));
        }
      }
      if (as_strings) domain.clear();
    }
    FLOE_ASSIGN_OR_RETURN(frame::Vec v,
                          frame::Vec::Make(type, std::move(domain), std::move(chunks), na_count));
    vecs.push_back(std::move(v));
  }
  return frame::Frame::Make(setup.names, std::move(vecs));
}

// ---------------------------------------------------------------------------------------------
// The parse of a list of sources

std::string_view StripBOM(std::string_view s) {
  if (s.size() >= 3 && s.substr(0, 3) == "\xEF\xBB\xBF") s.remove_prefix(3);
  return s;
}

Result<ParseResult> ParseSources(std::vector<std::unique_ptr<Source>>& sources,
                                 const ParseOptions& options, const ParseControl& control) {
  const uint32_t threads = std::clamp<uint32_t>(
      options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency()), 1,
      kMaxThreads);
  uint64_t total = 0;  // progress's bytes_total: loaded sources' bytes, others' sizes on disk
  for (const auto& s : sources) total += s->loaded ? s->bytes.size() : s->disk_size;
  uint64_t inflated = 0;  // held by the gzip sources loaded so far
  std::function<bool(uint64_t)> may_hold;
  if (control.may_hold) {
    may_hold = [&](uint64_t bytes) { return control.may_hold(inflated + bytes); };
  }
  auto load = [&](Source* s) {
    if (s->loaded) return Status::OK();
    total -= s->disk_size;
    FLOE_RETURN_IF_ERROR(LoadFile(options.limits, threads, control.cancel, may_hold, s));
    total += s->bytes.size();
    inflated += s->owned.size();
    return Status::OK();
  };
  // The setup comes from the first source with any bytes (an empty first file guesses nothing).
  std::string_view first;
  for (const auto& s : sources) {
    FLOE_RETURN_IF_ERROR(load(s.get()));
    if (!s->bytes.empty()) {
      first = StripBOM(s->bytes);
      break;
    }
  }
  FLOE_ASSIGN_OR_RETURN(Setup setup, GuessSetup(first, options));
  if (setup.names.size() > 0 &&
      sources.size() > options.limits.max_column_chunks / setup.names.size()) {
    return Status::ResourceExhausted(
        std::to_string(sources.size()) + " files of " + std::to_string(setup.names.size()) +
        " columns make more than " + std::to_string(options.limits.max_column_chunks) +
        " column chunks: join the files first");
  }
  Shared shared{.setup = &setup, .options = &options, .control = &control};
  const uint64_t min_range = std::max<uint64_t>(options.min_range_bytes, 1);

  std::vector<Piece> pieces;
  ParseResult result;
  ParseReport& report = result.report;
  std::vector<std::string> header;  // the first source's header row, to recognize it later
  bool have_header = false;
  bool seeded = false;  // shared.seeds made (or found not needed)
  for (size_t si = 0; si < sources.size(); si++) {
    FLOE_RETURN_IF_ERROR(load(sources[si].get()));
    std::string_view body = StripBOM(sources[si]->bytes);
    report.bytes += sources[si]->bytes.size();
    uint64_t line_base = 0;  // lines before the body
    if (setup.header && !body.empty()) {
      // Blank lines before the header are skipped (and counted), as the guess skipped them.
      Row row;
      internal::CapRow(&row, options.limits.max_field_bytes, options.limits.max_line_bytes);
      row.cancel = control.cancel;
      uint64_t blank_lines = 0, blank_newlines = 0;
      const char* next = body.data();
      for (;;) {
        next = internal::ReadRow(body.data(), body.data() + body.size(), setup.separator,
                                 setup.quote, setup.names.size() + 1, &row);
        if (row.cancelled) return Status::Cancelled("parse cancelled");
        if (!row.blank()) break;
        blank_lines++;
        blank_newlines += row.newlines;
        body.remove_prefix(static_cast<size_t>(next - body.data()));
        if (body.empty()) break;
      }
      report.blank_lines += blank_lines;
      line_base += blank_newlines;
      const bool guessed_from_this = !have_header;  // the first source with bytes
      // An overlong first line is not copied: the header is refused; a later file's first line
      // that long is no header (the first was within the limits) and its row is rejected.
      const bool over = static_cast<uint64_t>(next - body.data()) > options.limits.max_line_bytes ||
                        row.over_line_cap || row.longest > options.limits.max_field_bytes;
      if (over && guessed_from_this) {
        return Status::InvalidArgument("the header line is longer than " +
                                       std::to_string(options.limits.max_line_bytes) +
                                       " bytes, or a name in it longer than " +
                                       std::to_string(options.limits.max_field_bytes));
      }
      std::vector<std::string> fields;
      if (!over) {
        for (size_t i = 0; i < row.fields.size(); i++) fields.emplace_back(row.text(i));
      }
      if (guessed_from_this) {
        header = fields;
        have_header = true;
      }
      if (guessed_from_this || (!over && fields == header)) {
        line_base += row.newlines;
        body.remove_prefix(static_cast<size_t>(next - body.data()));
      }
    }
    shared.bytes_done.fetch_add(sources[si]->bytes.size() - body.size());
    // kRangesPerThread ranges a thread, taken in turn by the threads as each finishes one, so a
    // thread slowed by others on its core does not leave the rest waiting at the end.
    const size_t ranges = static_cast<size_t>(
        std::clamp<uint64_t>(body.size() / min_range, 1, uint64_t{threads} * kRangesPerThread));
    const size_t working = std::min<size_t>(threads, ranges);
    const Split split = SplitBody(body, setup.quote, ranges, working, control.cancel);
    if (control.cancel != nullptr && control.cancel->load(std::memory_order_relaxed)) {
      return Status::Cancelled("parse cancelled");
    }
    // The first body's first rows once more, for their categorical values: every range is
    // seeded with them, in the order these rows add them, which is the order the first range
    // adds them too. So the merged domains are what they were unseeded (first seen over the whole
    // input), and a range that meets no other value keeps its codes: its chunks are joined
    // as they are, not re-encoded. Seeded values a range never meets cost it their domain entry.
    if (pieces.empty() && !body.empty() && !seeded && (ranges > 1 || sources.size() > 1)) {
      seeded = true;
      bool categorical = false;
      for (const ColumnType t : setup.types) categorical |= t == ColumnType::kCategorical;
      if (categorical) {
        Shared seeding{.setup = &setup, .options = &options, .control = &control};
        Piece piece;
        Status status;
        try {
          status = ParseRange(&seeding, &piece, body.data(), body.data() + body.size(), kSeedRows);
        } catch (const std::bad_alloc&) {
          status = Status::ResourceExhausted("out of memory while parsing");
        }
        if (status.code() == StatusCode::kCancelled) return status;
        // Any other failure is the ranges' to report: they meet it again.
        if (status.ok()) {
          shared.seeds.resize(setup.names.size());
          for (size_t c = 0; c < setup.names.size(); c++) {
            const frame::Vec& v = piece.frame.vec(c);
            if (v.type() != ColumnType::kCategorical || v.domain().size() > kMaxSeedValues) {
              continue;
            }
            size_t bytes = 0;
            for (const std::string& value : v.domain()) bytes += value.size();
            if (bytes <= kMaxSeedBytes) shared.seeds[c] = v.domain();
          }
        }
      }
    }
    const size_t first_piece = pieces.size();
    pieces.resize(first_piece + ranges);
    std::mutex mu;
    std::condition_variable cv;
    size_t running = working;
    std::atomic<size_t> next_range{0};
    std::vector<std::thread> workers;
    size_t inline_workers = 0;
    auto parse_range = [&](size_t i) {
      Piece& piece = pieces[first_piece + i];
      if (shared.failed.load(std::memory_order_relaxed)) {
        piece.status = Status::Aborted("another range failed");
        return;
      }
      // An exception (an allocation that failed) fails the parse instead of ending the
      // process from a worker thread.
      try {
        piece.status = ParseRange(&shared, &piece, split.starts[i], split.starts[i + 1]);
      } catch (const std::bad_alloc&) {
        piece.status = Status::ResourceExhausted("out of memory while parsing");
      } catch (const std::exception& e) {
        piece.status = Status::Internal(std::string("parse failed: ") + e.what());
      }
      if (!piece.status.ok()) shared.failed.store(true, std::memory_order_relaxed);
    };
    // Every range is taken by some worker: after a failure the rest are taken too, and end at
    // once (Aborted), so each piece has a status.
    auto work = [&] {
      for (size_t i; (i = next_range.fetch_add(1, std::memory_order_relaxed)) < ranges;) {
        parse_range(i);
      }
      std::lock_guard<std::mutex> lock(mu);
      if (--running == 0) cv.notify_all();
    };
    for (size_t w = 0; w < working; w++) {
      Result<std::thread> t = StartThread(work);
      if (t.ok()) {
        workers.push_back(std::move(*t));
      } else {
        inline_workers++;  // no thread to be had: it works here, without progress reports
      }
    }
    for (size_t w = 0; w < inline_workers; w++) work();
    {
      std::unique_lock<std::mutex> lock(mu);
      while (!cv.wait_for(lock, control.progress_interval, [&] { return running == 0; })) {
        if (control.progress) {
          lock.unlock();
          control.progress({.bytes_done = shared.bytes_done.load(std::memory_order_relaxed),
                            .bytes_total = total,
                            .rows = shared.rows.load(std::memory_order_relaxed),
                            .held_bytes = shared.domain_bytes.load(std::memory_order_relaxed)});
          lock.lock();
        }
      }
    }
    for (std::thread& t : workers) t.join();
    // The first failure in input order wins, a cancel over the aborts it caused.
    for (size_t i = first_piece; i < pieces.size(); i++) {
      if (pieces[i].status.code() == StatusCode::kCancelled) return pieces[i].status;
    }
    for (size_t i = first_piece; i < pieces.size(); i++) {
      if (!pieces[i].status.ok() && pieces[i].status.code() != StatusCode::kAborted) {
        return pieces[i].status;
      }
    }
    uint64_t lines = line_base;
    for (size_t i = first_piece; i < pieces.size(); i++) {
      Piece& p = pieces[i];
      for (ParseIssue& issue : p.issues) {
        if (report.issues.size() >= options.limits.max_issues) break;
        issue.source = sources[si]->name;
        issue.line += lines;
        report.issues.push_back(std::move(issue));
      }
      p.issues.clear();
      lines += p.newlines;
      report.rows += p.rows;
      report.rejected_rows += p.rejected;
      report.padded_rows += p.padded;
      report.bad_values += p.bad_values;
      report.rounded_values += p.rounded;
      report.blank_lines += p.blank;
    }
    if (report.rows > options.limits.max_rows) {
      return Status::ResourceExhausted("more rows than the limit (" +
                                       std::to_string(options.limits.max_rows) + ")");
    }
    sources[si]->Release();  // the pieces copied what they keep
  }
  if (pieces.empty()) {  // no sources: an empty frame of the setup's columns
    pieces.emplace_back();
    std::vector<frame::ColumnSpec> specs;
    for (size_t c = 0; c < setup.names.size(); c++) {
      specs.push_back({.name = setup.names[c], .type = setup.types[c]});
    }
    FLOE_ASSIGN_OR_RETURN(frame::FrameBuilder b, frame::FrameBuilder::Make(specs, options.builder));
    FLOE_ASSIGN_OR_RETURN(pieces[0].frame, b.Finish());
  }
  FLOE_ASSIGN_OR_RETURN(result.frame, Merge(setup, options, threads, pieces, &report));
  result.setup = std::move(setup);
  if (control.progress) {
    control.progress({.bytes_done = report.bytes,
                      .bytes_total = total,
                      .rows = report.rows,
                      .held_bytes = shared.domain_bytes.load(std::memory_order_relaxed)});
  }
  return result;
}

}  // namespace

Result<ParseResult> ParseBytes(std::string_view data, const ParseOptions& options,
                               const ParseControl& control) {
  std::vector<std::unique_ptr<Source>> sources;
  sources.push_back(std::make_unique<Source>());
  sources[0]->loaded = true;
  if (IsGzip(data)) {
    FLOE_ASSIGN_OR_RETURN(sources[0]->owned, Inflate(data, options.limits.max_input_bytes,
                                                     control.cancel, control.may_hold));
    sources[0]->bytes = sources[0]->owned;
  } else {
    if (data.size() > options.limits.max_input_bytes) {
      return Status::ResourceExhausted("input larger than the limit");
    }
    sources[0]->bytes = data;
  }
  return ParseSources(sources, options, control);
}

namespace {

// The files (display name, name in dir_fd) opened as ParseDirectoryFiles says.
Result<ParseResult> ParseAt(int dir_fd,
                            const std::vector<std::pair<std::string, std::string>>& files,
                            const ParseOptions& options, const ParseControl& control) {
  std::vector<std::unique_ptr<Source>> sources;
  for (const auto& [display, n] : files) {
    if (n.empty() || n.find('/') != std::string::npos || n == "." || n == "..") {
      return Status::InvalidArgument("'" + n + "' is not a plain file name");
    }
    sources.push_back(std::make_unique<Source>());
    Source& src = *sources.back();
    src.name = display;
    src.dir_fd = dir_fd;
    src.open_name = n;
    struct stat st {};
    if (fstatat(dir_fd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
      src.disk_size = static_cast<uint64_t>(st.st_size);
    }
  }
  return ParseSources(sources, options, control);
}

}  // namespace

Result<ParseResult> ParseDirectoryFiles(int dir_fd, const std::string& dir_name,
                                        const std::vector<std::string>& names,
                                        const ParseOptions& options, const ParseControl& control) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const std::string& n : names) {
    files.emplace_back(dir_name == "/" ? "/" + n : dir_name + "/" + n, n);
  }
  return ParseAt(dir_fd, files, options, control);
}

Result<ParseResult> ParseFile(const std::string& path, const ParseOptions& options,
                              const ParseControl& control) {
  // The directory is opened once; a file is named within its directory, so what is listed (or
  // named) is what is read.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return Status::NotFound(path + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    close(fd);
    return Status::Internal(path + ": " + std::strerror(errno));
  }
  std::vector<std::pair<std::string, std::string>> files;
  int dir_fd = fd;
  if (S_ISDIR(st.st_mode)) {
    DIR* dir = fdopendir(dup(fd));
    if (dir == nullptr) {
      close(fd);
      return Status::Internal(path + ": " + std::strerror(errno));
    }
    std::vector<std::string> names;
    while (const dirent* e = readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      struct stat fst {};
      if (fstatat(fd, e->d_name, &fst, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(fst.st_mode)) continue;
      names.emplace_back(e->d_name);
    }
    closedir(dir);
    std::sort(names.begin(), names.end());
    const std::string dir_name = path.ends_with("/") ? path : path + "/";
    for (const std::string& n : names) files.emplace_back(dir_name + n, n);
  } else {
    close(fd);
    if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + ": not a regular file");
    const std::filesystem::path p(path);
    const std::string dir_name = p.has_parent_path() ? p.parent_path().string() : ".";
    dir_fd = open(dir_name.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECTORY);
    if (dir_fd < 0) return Status::NotFound(dir_name + ": " + std::strerror(errno));
    files.emplace_back(path, p.filename().string());
  }
  Result<ParseResult> r = ParseAt(dir_fd, files, options, control);
  close(dir_fd);
  return r;
}

}  // namespace floe::parse
