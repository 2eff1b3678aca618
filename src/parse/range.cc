// The range parser: a range's rows into one FrameBuilder, row by row or a column at a time in
// runs, with bad values, padded and rejected rows counted and noted by line.

#include "parse/internal/range.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include "parse/internal/csv.h"

namespace floe::parse::internal {
namespace {

using frame::ColumnType;

constexpr uint64_t kRowsPerCheck = 4096;  // rows between cancel checks and progress updates
// A run of rows read column at a time (RangeParser::Flush) has at most kRunRows rows and
// kRunValues fields: ~0.5 MiB of fields, numbers and views a range parser, whatever the width.
constexpr size_t kRunRows = 256;
constexpr size_t kRunValues = 8192;

// Whether `text`, read as `x` (|x| >= 2^53), is an integer literal (an optional sign and digits,
// spaces around) whose value `x` does not hold exactly. A double that large is an integer, and
// below 2^127 converts to an unsigned __int128 exactly; a literal of more than 38 digits
// (10^38 < 2^127) is compared by its magnitude alone.
__extension__ typedef unsigned __int128 Exact;

bool RoundedInteger(std::string_view text, double x) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  if (!text.empty() && (text.front() == '+' || text.front() == '-')) text.remove_prefix(1);
  while (text.size() > 1 && text.front() == '0') text.remove_prefix(1);
  if (text.empty()) return false;
  for (const char ch : text) {
    if (ch < '0' || ch > '9') return false;  // a fraction or an exponent: a real as written
  }
  if (text.size() > 38) return true;
  Exact exact = 0;
  for (const char ch : text) exact = exact * 10 + static_cast<unsigned>(ch - '0');
  const double m = std::fabs(x);
  if (!(m < 1.7014118346046923e38)) return true;  // 2^127
  return static_cast<Exact>(m) != exact;
}

std::string Shorten(std::string_view v) {
  std::string s(v.substr(0, 32));
  if (v.size() > 32) s += "...";
  return s;
}

class RangeParser {
 public:
  ~RangeParser() {
    // After Run's builder is gone: its pending values are freed.
    if (granted_ > 0) s_.control->may_pend(-static_cast<int64_t>(granted_));
  }
  RangeParser(const RangeParser&) = delete;
  RangeParser& operator=(const RangeParser&) = delete;
  // `stop_after_rows`: the range ends after that many rows (0: none), for the seeds' pass.
  RangeParser(Shared* shared, Piece* piece, uint64_t stop_after_rows = 0)
      : s_(*shared), setup_(*shared->setup), piece_(*piece), stop_after_rows_(stop_after_rows) {
    for (const std::string& t : s_.options->na_tokens) {
      if (t.size() < 64) {
        na_lengths_ |= uint64_t{1} << t.size();
      } else {
        na_long_ = true;
      }
      if (!t.empty()) na_first_[static_cast<uint8_t>(t[0])] = true;
    }
  }

  Status Run(const char* begin, const char* end) {
    const ParseOptions& o = *s_.options;
    std::vector<frame::ColumnSpec> specs;
    for (size_t c = 0; c < setup_.names.size(); c++) {
      specs.push_back({.name = setup_.names[c], .type = setup_.types[c]});
    }
    FLOE_ASSIGN_OR_RETURN(frame::FrameBuilder b, frame::FrameBuilder::Make(specs, o.builder));
    const size_t columns = specs.size();
    bool columnar = true;  // every column integer, real or categorical: rows go in runs
    for (const ColumnType t : setup_.types) {
      columnar &=
          t == ColumnType::kInteger || t == ColumnType::kReal || t == ColumnType::kCategorical;
    }
    if (columnar && o.column_runs) {
      run_max_rows_ = std::clamp<size_t>(kRunValues / columns, 1, kRunRows);
      run_fields_.resize(columns * run_max_rows_);
      run_numbers_.resize(columns * run_max_rows_);
      run_values_.resize(columns * run_max_rows_);
      run_lines_.resize(run_max_rows_);
      runs_.resize(columns);
    }
    for (size_t c = 0; c < s_.seeds.size() && c < columns; c++) {
      if (!s_.seeds[c].empty()) FLOE_RETURN_IF_ERROR(b.SeedDomain(c, s_.seeds[c]));
    }
    if (!s_.seeds.empty()) FLOE_RETURN_IF_ERROR(ChargeDomains(b));
    Row row;
    internal::CapRow(&row, o.limits.max_field_bytes, o.limits.max_line_bytes);
    row.cancel = s_.control->cancel;
    const char* p = begin;
    const char* checked = begin;   // where the last cancel check was
    const char* reported = begin;  // bytes and rows up to here are in the shared counters
    uint64_t rows_reported = 0;
    uint64_t since_check = 0;
    while (p < end) {
      // In a run, a plain row (every field kept, within the limits, not blank) is split straight
      // into the run's fields: no Row, no copy (Gather).
      if (run_max_rows_ > 0 && run_cap_ == 0) run_cap_ = RunRoom(b);
      const char* next = nullptr;
      bool plain = false;
      if (run_cap_ > 0) {
        size_t count = 0, longest = 0;
        Row::Field* slot = &run_fields_[run_rows_];
        next = internal::ReadPlainFields(p, end, setup_.separator, setup_.quote, columns, slot,
                                         run_max_rows_, &count, &longest);
        plain = next != nullptr && count == columns && longest <= o.limits.max_field_bytes &&
                static_cast<uint64_t>(next - p) <= o.limits.max_line_bytes &&
                !(columns == 1 && slot->size == 0);  // a blank line
      }
      if (!plain) {
        next = internal::ReadRow(p, end, setup_.separator, setup_.quote, columns, &row);
        if (row.cancelled) return Status::Cancelled("parse cancelled");
      }
      const uint64_t line = piece_.newlines + 1;
      piece_.newlines += plain ? 1 : row.newlines;
      const auto length = static_cast<uint64_t>(next - p);
      p = next;
      // Every 4,096 rows, or every MiB of long rows: cancel takes effect after bounded work.
      if (++since_check == kRowsPerCheck ||
          static_cast<size_t>(p - checked) >= internal::kScanStep) {
        since_check = 0;
        checked = p;
        if (o.limits.max_rows < piece_.rows) break;
        if (s_.control->cancel != nullptr && s_.control->cancel->load(std::memory_order_relaxed)) {
          return Status::Cancelled("parse cancelled");
        }
        if (s_.failed.load(std::memory_order_relaxed)) {
          return Status::Aborted("another range failed");
        }
        // Relaxed: counters for the progress callback, which needs no ordering with the rows.
        s_.bytes_done.fetch_add(static_cast<uint64_t>(p - reported), std::memory_order_relaxed);
        s_.rows.fetch_add(piece_.rows - rows_reported, std::memory_order_relaxed);
        reported = p;
        rows_reported = piece_.rows;
      }
      if (plain) {  // its fields are in the run already
        run_lines_[run_rows_++] = line;
        run_bytes_ += length;
        piece_.rows++;
        if (RunFull()) FLOE_RETURN_IF_ERROR(Flush(&b));
        if (piece_.rows == stop_after_rows_) break;
        continue;
      }
      if (row.blank()) {
        piece_.blank++;
        continue;
      }
      if (length > o.limits.max_line_bytes || row.over_line_cap) {
        FLOE_RETURN_IF_ERROR(Flush(&b));  // its issues before this row's
        Reject(line, "line longer than " + std::to_string(o.limits.max_line_bytes) + " bytes");
        continue;
      }
      if (row.unterminated) {
        // Everything after the stray quote is this one row: say how much of the input it took.
        FLOE_RETURN_IF_ERROR(Flush(&b));  // its issues before this row's
        Reject(line, "quote not closed before the end of the input (the row takes the " +
                         std::to_string(row.newlines + (next[-1] == '\n' ? 0 : 1)) +
                         " lines from here to the end)");
        continue;
      }
      if (row.count > columns) {
        FLOE_RETURN_IF_ERROR(Flush(&b));  // its issues before this row's
        Reject(line, std::to_string(row.count) + " fields, expected " + std::to_string(columns));
        continue;
      }
      if (row.longest > o.limits.max_field_bytes) {
        FLOE_RETURN_IF_ERROR(Flush(&b));  // its issues before this row's
        Reject(line, "field longer than " + std::to_string(o.limits.max_field_bytes) + " bytes");
        continue;
      }
      if (run_max_rows_ > 0 && run_cap_ == 0) run_cap_ = RunRoom(b);
      if (run_cap_ > 0) {
        Gather(row, line);
        run_bytes_ += length;
        piece_.rows++;
        if (RunFull()) FLOE_RETURN_IF_ERROR(Flush(&b));
        if (piece_.rows == stop_after_rows_) break;
        continue;
      }
      FLOE_RETURN_IF_ERROR(MayPend(b, columns, length));
      for (size_t c = 0; c < columns; c++) {
        if (c < row.count) {
          Add(&b, c, row.text(c), row.fields[c].quoted, line);
        } else {
          FLOE_RETURN_IF_ERROR(b.AddNA(c));
        }
      }
      if (row.count < columns) {
        piece_.padded++;
        Note(line, std::to_string(row.count) + " fields, expected " + std::to_string(columns) +
                       ": the rest are NA");
      }
      FLOE_RETURN_IF_ERROR(b.EndRow());
      piece_.rows++;
      if (piece_.rows == stop_after_rows_) break;
      // A domain past the categorical limit is freed at once: its column is a string column now.
      for (const size_t c : demote_) FLOE_RETURN_IF_ERROR(b.DemoteToString(c));
      demote_.clear();
      if (b.domain_bytes() != domain_reported_) FLOE_RETURN_IF_ERROR(ChargeDomains(b));
    }
    FLOE_RETURN_IF_ERROR(Flush(&b));
    if (piece_.rows > o.limits.max_rows) {
      return Status::ResourceExhausted("more rows than the limit (" +
                                       std::to_string(o.limits.max_rows) + ")");
    }
    s_.bytes_done.fetch_add(static_cast<uint64_t>(end - reported), std::memory_order_relaxed);
    s_.rows.fetch_add(piece_.rows - rows_reported, std::memory_order_relaxed);
    FLOE_ASSIGN_OR_RETURN(piece_.frame, b.Finish());
    return Status::OK();
  }

 private:
  // Categorical domains grow with the distinct values, not with the chunk: their bytes are
  // summed over the ranges (the import charges them to maxmemory through progress) and bounded.
  Status ChargeDomains(const frame::FrameBuilder& b) {
    const uint64_t now = b.domain_bytes();
    // Relaxed: a statistic and a bound, ordered with nothing else.
    const uint64_t total =
        s_.domain_bytes.fetch_add(now - domain_reported_, std::memory_order_relaxed) + now -
        domain_reported_;
    domain_reported_ = now;
    if (total > s_.options->limits.max_domain_bytes) {
      return Status::ResourceExhausted("categorical values take more than " +
                                       std::to_string(s_.options->limits.max_domain_bytes) +
                                       " bytes (import the columns as string)");
    }
    return Status::OK();
  }

  // Pending values are granted before the rows that may grow them (ParseControl::may_pend): a
  // value adds at most 8 bytes plus its text, and the vectors' capacity is at most twice the
  // most they held. Asked a MiB at a time at least; kept until the range ends.
  Status MayPend(const frame::FrameBuilder& b, size_t values, uint64_t length) {
    if (!s_.control->may_pend) return Status::OK();
    const uint64_t need = 2 * (b.pending_bytes() + 8 * uint64_t{values} + length);
    if (need <= granted_) return Status::OK();
    const uint64_t more = std::max<uint64_t>(need - granted_, uint64_t{1} << 20);
    if (!s_.control->may_pend(static_cast<int64_t>(more))) {
      return Status::ResourceExhausted("no memory for the values pending before a chunk is cut");
    }
    granted_ += more;
    return Status::OK();
  }

  void Note(uint64_t line, std::string reason) {
    if (piece_.issues.size() < s_.options->limits.max_issues) {
      piece_.issues.push_back({.source = "", .line = line, .reason = std::move(reason)});
    }
  }
  void Reject(uint64_t line, std::string reason) {
    piece_.rejected++;
    Note(line, "row rejected: " + std::move(reason));
  }
  std::string BadText(size_t c, std::string_view v, const char* what) const {
    return "column '" + setup_.names[c] + "': '" + Shorten(v) + "' is not " + what + ": NA";
  }
  void Bad(frame::FrameBuilder* b, size_t c, std::string_view v, uint64_t line, const char* what) {
    piece_.bad_values++;
    Note(line, BadText(c, v, what));
    FLOE_CHECK_OK(b->AddNA(c));
  }
  std::string RoundedText(size_t c, std::string_view v, double x) const {
    char shown[400];  // a double in fixed notation: at most 309 digits
    const auto [end, ec] = std::to_chars(shown, shown + sizeof(shown), x, std::chars_format::fixed);
    return "column '" + setup_.names[c] + "': '" + Shorten(v) +
           "' is an integer past 2^53: " + "rounded to " +
           (ec == std::errc() ? std::string(shown, end) : std::string("a double"));
  }

  // Most values are no NA token: their length or first byte says so without a comparison.
  bool IsNA(std::string_view v) const {
    if (v.size() < 64 ? ((na_lengths_ >> v.size()) & 1) == 0 : !na_long_) return false;
    if (!v.empty() && !na_first_[static_cast<uint8_t>(v[0])]) return false;
    return internal::IsNAToken(v, s_.options->na_tokens);
  }

  void Add(frame::FrameBuilder* b, size_t c, std::string_view v, bool quoted, uint64_t line) {
    switch (setup_.types[c]) {
      case ColumnType::kInteger:
      case ColumnType::kReal: {
        if (IsNA(v)) {
          FLOE_CHECK_OK(b->AddNA(c));
          return;
        }
        double x;
        const bool read = internal::ReadNumber(v, &x);
        const bool integer = setup_.types[c] == ColumnType::kInteger;
        // An integer column holds integers a double keeps exactly: past 2^53 the value read may
        // already be rounded, so it is a bad value, not a silently different number.
        if (read && integer && !(std::fabs(x) < 9007199254740992.0)) {
          Bad(b, c, v, line, "an integer of magnitude below 2^53 (exact in a double)");
        } else if (!read || !b->AddNumber(c, x).ok()) {
          Bad(b, c, v, line, integer ? "an integer" : "a number");
        } else if (!integer && !(std::fabs(x) < 9007199254740992.0) && RoundedInteger(v, x)) {
          piece_.rounded++;
          Note(line, RoundedText(c, v, x));
        }
        return;
      }
      case ColumnType::kTime: {
        if (IsNA(v)) {
          FLOE_CHECK_OK(b->AddNA(c));
          return;
        }
        const std::optional<int64_t> t = internal::ReadTime(v);
        if (!t || !b->AddTime(c, *t).ok()) Bad(b, c, v, line, "a time");
        return;
      }
      case ColumnType::kCategorical:
      case ColumnType::kString:
        if (!quoted && IsNA(v)) {
          FLOE_CHECK_OK(b->AddNA(c));
          return;
        }
        if (!b->AddString(c, v).ok()) {
          Bad(b, c, v, line, "a value the column takes");
        } else if (b->domain_size(c) > s_.options->max_categorical_domain &&
                   (demote_.empty() || demote_.back() != c)) {
          demote_.push_back(c);  // the merge would make it a string column anyway
        }
        return;
    }
  }

  // Rows column at a time (FrameBuilder::AppendRows): when every column is integer, real or
  // categorical, a range's rows are split into fields as before but gathered in runs of up to
  // run_max_rows_, and each column of a run is then read in one loop and appended whole. The
  // frame, counts and issues are the row-by-row ones: a run ends at the builder's next cut
  // (RowsBeforeCut), never lets a domain pass the categorical limit (a column close to it goes
  // row by row, and is demoted there), and a run's issues are noted in row order, before those
  // of a rejected row after it.
  // The rows a run may take now: 0 to go row by row.
  size_t RunRoom(const frame::FrameBuilder& b) const {
    uint64_t room = std::min<uint64_t>(run_max_rows_, b.RowsBeforeCut());
    const uint64_t limit =
        std::min<uint64_t>(s_.options->max_categorical_domain, frame::kMaxDomain);
    for (size_t c = 0; c < setup_.types.size(); c++) {
      if (setup_.types[c] != ColumnType::kCategorical) continue;
      const uint64_t d = b.domain_size(c);  // a run of n rows adds n values at most
      room = d >= limit ? 0 : std::min(room, limit - d);
    }
    return static_cast<size_t>(room);
  }

  // A field of the run with no text: the row had fewer fields (NA).
  static constexpr size_t kMissing = SIZE_MAX;

  void Gather(const Row& row, uint64_t line) {
    const size_t columns = setup_.types.size();
    const size_t i = run_rows_++;
    run_lines_[i] = line;
    for (size_t c = 0; c < columns; c++) {
      Row::Field& f = run_fields_[c * run_max_rows_ + i];
      if (c >= row.count) {
        f = {.data = nullptr, .offset = kMissing, .size = 0, .quoted = false};
        continue;
      }
      f = row.fields[c];
      if (f.data == nullptr) {  // unescaped into the row's scratch, which the next row reuses
        f.offset = run_scratch_.size();
        run_scratch_.append(row.scratch, row.fields[c].offset, f.size);
      }
    }
    if (row.count < columns) {
      piece_.padded++;
      run_notes_.push_back({.row = i,
                            .column = columns,
                            .text = std::to_string(row.count) + " fields, expected " +
                                    std::to_string(columns) + ": the rest are NA"});
    }
  }

  Status Flush(frame::FrameBuilder* b) {
    const size_t n = run_rows_;
    if (n == 0) return Status::OK();
    const uint64_t run_bytes = run_bytes_;
    run_rows_ = 0;
    run_cap_ = 0;
    run_bytes_ = 0;
    static constexpr char kEmpty[] = "";
    for (size_t c = 0; c < setup_.types.size(); c++) {
      const Row::Field* f = &run_fields_[c * run_max_rows_];
      auto text = [this](const Row::Field& field) {
        return field.data != nullptr
                   ? std::string_view(field.data, field.size)
                   : std::string_view(run_scratch_).substr(field.offset, field.size);
      };
      if (setup_.types[c] == ColumnType::kCategorical) {
        std::string_view* out = &run_values_[c * run_max_rows_];
        for (size_t i = 0; i < n; i++) {
          if (f[i].data == nullptr && f[i].offset == kMissing) {
            out[i] = {};
            continue;
          }
          const std::string_view v = text(f[i]);
          if (!f[i].quoted && IsNA(v)) {
            out[i] = {};
          } else {
            out[i] = v.data() != nullptr ? v : std::string_view(kEmpty, 0);
          }
        }
        runs_[c] = {.values = out};
        continue;
      }
      const bool integer = setup_.types[c] == ColumnType::kInteger;
      double* out = &run_numbers_[c * run_max_rows_];
      for (size_t i = 0; i < n; i++) {
        out[i] = frame::kNA;
        if (f[i].data == nullptr && f[i].offset == kMissing) continue;
        const std::string_view v = text(f[i]);
        if (IsNA(v)) continue;
        double x;
        const bool read = internal::ReadNumber(v, &x);
        // As Add: a value AddNumber would refuse is a bad value, NA.
        const char* bad = nullptr;
        if (!read) {
          bad = integer ? "an integer" : "a number";
        } else if (integer && !(std::fabs(x) < 9007199254740992.0)) {
          bad = "an integer of magnitude below 2^53 (exact in a double)";
        } else if (integer && static_cast<double>(static_cast<int64_t>(x)) != x) {
          bad = "an integer";
        }
        if (bad != nullptr) {
          piece_.bad_values++;
          run_notes_.push_back({.row = i, .column = c, .text = BadText(c, v, bad)});
          continue;
        }
        out[i] = x;
        if (!integer && !(std::fabs(x) < 9007199254740992.0) && RoundedInteger(v, x)) {
          piece_.rounded++;
          run_notes_.push_back({.row = i, .column = c, .text = RoundedText(c, v, x)});
        }
      }
      runs_[c] = {.numbers = out};
    }
    // Granted before the run's values are appended, as MayPend is before a row's.
    FLOE_RETURN_IF_ERROR(MayPend(*b, setup_.types.size() * n, run_bytes));
    FLOE_RETURN_IF_ERROR(b->AppendRows(n, runs_));
    run_scratch_.clear();
    // A run of long escaped fields grew it: its memory goes back, as a row's scratch does.
    if (run_scratch_.capacity() > 2 * kRunBytes) std::string().swap(run_scratch_);
    // Row by row, a row's values are noted in column order and its padding after them.
    std::stable_sort(run_notes_.begin(), run_notes_.end(), [](const RunNote& x, const RunNote& y) {
      return x.row != y.row ? x.row < y.row : x.column < y.column;
    });
    for (RunNote& note : run_notes_) Note(run_lines_[note.row], std::move(note.text));
    run_notes_.clear();
    if (b->domain_bytes() != domain_reported_) FLOE_RETURN_IF_ERROR(ChargeDomains(*b));
    return Status::OK();
  }

  Shared& s_;
  const Setup& setup_;
  Piece& piece_;
  uint64_t stop_after_rows_ = 0;  // 0: the whole range
  uint64_t domain_reported_ = 0;  // of this range's builder, in s_.domain_bytes
  uint64_t granted_ = 0;          // pending bytes may_pend granted this range
  std::vector<size_t> demote_;    // categorical columns this row took past the limit
  uint64_t na_lengths_ = 0;       // bit n: a token of n bytes
  bool na_long_ = false;          // a token of 64 bytes or more
  bool na_first_[256] = {};       // a token's first byte
  // The run being gathered (see RunRoom): per column, run_max_rows_ fields (the column's n-th
  // at c * run_max_rows_ + n), and the numbers or views each column's loop makes of them.
  struct RunNote {
    size_t row, column;  // column: columns() for the row's padding
    std::string text;
  };
  size_t run_max_rows_ = 0;  // 0: the setup has a string or time column; row by row
  size_t run_rows_ = 0;
  size_t run_cap_ = 0;      // rows this run may take (RunRoom when it began)
  uint64_t run_bytes_ = 0;  // bytes of its lines
  // A run goes at its row count or once its lines hold kRunBytes: what a run holds before the
  // builder and the memory account see it stays about what one row held row by row (a run of
  // 256 rows of 16 MiB escaped fields held 4 GiB of copies no one had charged).
  static constexpr uint64_t kRunBytes = 1 << 20;
  bool RunFull() const { return run_rows_ == run_cap_ || run_bytes_ >= kRunBytes; }
  std::vector<Row::Field> run_fields_;
  std::vector<double> run_numbers_;
  std::vector<std::string_view> run_values_;
  std::vector<uint64_t> run_lines_;
  std::string run_scratch_;  // fields unescaped into the row's scratch, copied
  std::vector<RunNote> run_notes_;
  std::vector<frame::FrameBuilder::ColumnRun> runs_;
};

}  // namespace

Status ParseRange(Shared* shared, Piece* piece, const char* begin, const char* end,
                  uint64_t stop_after_rows) {
  RangeParser parser(shared, piece, stop_after_rows);
  return parser.Run(begin, end);
}

}  // namespace floe::parse::internal
