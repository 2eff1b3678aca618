// parse: CSV import into frames on one node, on all its cores (docs/frame.md, "CSV import").
// A setup (separator, quote, header, column names and types) is guessed from a sample and may
// be overridden field by field; then the input is cut into byte ranges parsed in parallel, each
// into its own FrameBuilder, and the pieces are joined in input order into one Frame.
//
// Contracts
// ---------
// 1. Input is untrusted: every size taken from it (columns, rows, field and line lengths,
//    decompressed gzip bytes) is checked against a ParseLimits bound before it sizes anything.
//    Whatever the bytes, Parse returns a Frame or a Status; it never crashes or hangs
//    (fuzzed by fuzz/parse_fuzz.cc).
// 2. Nothing is dropped silently: a row with too few fields is padded with NA and counted, a row
//    with too many (or a field or line over its limit) is rejected and counted, a value that
//    does not fit its column's type becomes NA and is counted; blank lines are counted. The
//    first ParseLimits::max_issues of these carry their source, 1-based line number and reason.
// 3. The result does not depend on the number of threads: rows in input order, the same values,
//    categorical domains in first-seen order of the whole input, the same report (chunk
//    boundaries may differ). Ranges are split exactly, not speculatively (parse.cc, "How ranges
//    split"): a quoted field holding separators or newlines may cross any split point.
// 4. Quoting follows RFC 4180, made total: every quote character outside a quoted run opens one,
//    inside one a doubled quote is a literal quote and a single one closes it; text around a
//    quoted run in the same field is kept ("ab"cd is abcd). Rows end at LF outside quotes; a CR
//    before it is dropped. A UTF-8 byte order mark at the start of a source is skipped.
// 5. Progress is reported on the calling thread, about every `progress_interval` while workers
//    run and once at the end; cancel is checked by every worker every 4,096 rows and while gzip
//    inflates, and a cancelled parse returns Cancelled with no frame.
//
// Thread rule: the functions are thread-safe (they share nothing); each Parse call starts its
// own worker threads and joins them before it returns.

#ifndef FLOE_PARSE_PARSE_H_
#define FLOE_PARSE_PARSE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "frame/frame.h"

namespace floe::parse {

// The separators the setup guess tries, in order of preference on a tie.
inline constexpr std::string_view kGuessedSeparators = ",\t;| ";
// The default NA tokens (matched exactly, case-sensitive).
inline const std::vector<std::string> kDefaultNATokens = {"", "NA", "N/A", "null", "NaN"};

struct ParseLimits {
  uint64_t max_rows = uint64_t{1} << 40;  // ResourceExhausted past it
  uint32_t max_columns = 10'000;          // ResourceExhausted past it
  // A field or line past these is rejected with its row, and never copied whole: the reader
  // copies at most this much of it (a header line past them is InvalidArgument).
  uint64_t max_field_bytes = uint64_t{16} << 20;
  uint64_t max_line_bytes = uint64_t{64} << 20;
  // A column name (header or option) past it is InvalidArgument: names live as long as the
  // frame, in every reply that lists them.
  uint32_t max_name_bytes = 1024;
  // Bytes the categorical domains of all ranges may hold together (FrameBuilder::domain_bytes:
  // values and their index); ResourceExhausted past it. Reported as ParseProgress::held_bytes,
  // which an import charges to maxmemory, so under a maxmemory this is only a backstop. (Each
  // range holds its own domains, so near this bound the outcome may depend on the thread count:
  // the one exception to contract 3.)
  uint64_t max_domain_bytes = uint64_t{4} << 30;
  // Bytes a gzip source may inflate to (ResourceExhausted past it): a bomb stops here.
  uint64_t max_input_bytes = uint64_t{64} << 30;
  // A gzip source inflating past this many times its compressed size (or past the floor,
  // whichever is more) is refused: a bomb of a few MB meant to inflate to tens of GiB stops at
  // a ratio no CSV reaches.
  uint64_t max_gzip_ratio = 1000;
  uint64_t gzip_ratio_floor_bytes = uint64_t{1} << 30;
  uint32_t max_issues = 20;  // issues listed with their line (all are counted)
  // Files x columns past it is ResourceExhausted before any file is parsed: every file ends a
  // chunk of every column, and each chunk costs its own bookkeeping (300 one-row files of
  // 10,000 columns held 2 GB).
  uint64_t max_column_chunks = uint64_t{1} << 18;
};

struct ParseOptions {
  // Each unset field is guessed from the sample (docs/frame.md, "Setup guess").
  std::optional<char> separator;
  std::optional<char> quote;  // '\0' turns quoting off; guessed: '"', or '\'' if only it quotes
  std::optional<bool> header;
  // Per column (by index; shorter vectors leave the rest guessed). Names must be distinct.
  std::vector<std::optional<frame::ColumnType>> column_types;
  std::vector<std::string> column_names;
  std::vector<std::string> na_tokens = kDefaultNATokens;
  // A text column is categorical when its sample has at most this many distinct values and
  // at most half as many distinct values as non-NA values; else string. A categorical column
  // whose whole-input domain passes it becomes a string column.
  uint32_t max_categorical_domain = 10'000;
  // When every column is integer, real or categorical, a range's rows are read a column at a
  // time, in runs (frame::FrameBuilder::AppendRows); false reads them row by row. Both make the
  // same frame, counts and issues (parse_test compares them). Default true.
  bool column_runs = true;
  // The guess reads the rows that start in these first bytes (and at least the first 10), each
  // to its end but no further than limits.max_line_bytes past them (docs/frame.md).
  uint64_t sample_bytes = uint64_t{1} << 20;
  uint32_t threads = 0;                          // 0: std::thread::hardware_concurrency()
  uint64_t min_range_bytes = uint64_t{1} << 20;  // no range is cut smaller (tests use 1)
  ParseLimits limits;
  frame::FrameBuilderOptions builder;
};

// What the guess decided (or the options imposed), used for every source of one import.
struct Setup {
  char separator = ',';
  char quote = '"';
  bool header = false;
  std::vector<std::string> names;
  std::vector<frame::ColumnType> types;
};

// A bad row or value: the source (file path, or "" for bytes), the 1-based line where its row
// starts, and why.
struct ParseIssue {
  std::string source;
  uint64_t line = 0;
  std::string reason;
};

struct ParseReport {
  uint64_t rows = 0;           // rows in the frame
  uint64_t bytes = 0;          // input bytes parsed (after decompression)
  uint64_t rejected_rows = 0;  // too many fields, or a field or line over its limit
  uint64_t padded_rows = 0;    // too few fields: the rest NA
  uint64_t bad_values = 0;     // values that did not fit their column's type: NA
  // Integers (digits and an optional sign) in a real column that a double does not hold
  // exactly (past 2^53): kept rounded to the nearest double, counted and listed as issues.
  uint64_t rounded_values = 0;
  uint64_t blank_lines = 0;                      // lines with no bytes (or a lone CR): skipped
  uint64_t string_columns_from_categorical = 0;  // domains that passed the limit
  std::vector<ParseIssue> issues;                // the first limits.max_issues, in input order
};

struct ParseProgress {
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;  // of the sources known so far (decompressed)
  uint64_t rows = 0;
  // Memory the parse holds beyond its input and the chunks it has cut: categorical domains.
  uint64_t held_bytes = 0;
};

struct ParseControl {
  // Called on the calling thread, about every progress_interval and once at the end.
  std::function<void(const ParseProgress&)> progress;
  std::chrono::milliseconds progress_interval{100};
  const std::atomic<bool>* cancel = nullptr;  // set it to stop the parse (Cancelled)
  // Called on the calling thread before inflated (gzip) input grows by another MiB, with the
  // inflated bytes the parse would then hold; false stops the parse (ResourceExhausted). An
  // import charges them to maxmemory here, before they are allocated.
  std::function<bool(uint64_t inflated_bytes)> may_hold;
  // Called from the parse's worker threads, at once (so it must be thread-safe): before a
  // range's builder may hold more values pending (uncompressed, up to 16 times the chunk target
  // plus a row: 64 MiB a range by default), with the bytes to add (> 0), and when the range
  // ends, with what it was given back (< 0). False refuses the growth: the parse stops
  // (ResourceExhausted). A range asks for twice its pending values plus the next row's bound
  // (the vectors' capacity), at least a MiB at a time. An import charges them to maxmemory here,
  // before they are allocated.
  std::function<bool(int64_t change)> may_pend;
};

struct ParseResult {
  frame::Frame frame;
  Setup setup;
  ParseReport report;
};

// Guesses the setup from the start of one source's bytes (the options' fields win).
// InvalidArgument for options that contradict themselves (a separator equal to the quote,
// names that repeat, more names or types than columns); ResourceExhausted for more columns
// than the limit. An empty sample gives one real column "C1" and no header.
Result<Setup> GuessSetup(std::string_view sample, const ParseOptions& options);

// Fixes every field of `setup` in `options`, so a setup guessed once (and shown, or edited, as an
// import's first step) is the one the parse uses: no field is guessed again.
void ApplySetup(const Setup& setup, ParseOptions* options);

// Parses bytes held in memory (plain CSV; gzip is detected by its magic bytes and inflated).
Result<ParseResult> ParseBytes(std::string_view data, const ParseOptions& options = {},
                               const ParseControl& control = {});

// Parses a file, or every regular file of a directory in name order (names starting with '.'
// skipped; the directory is opened once and listed once, then its files are read as
// ParseDirectoryFiles reads them) with the setup guessed from the first that is not empty. Each
// gzip file (by its magic bytes) is inflated into memory. With a header, each later file's first
// line is dropped when it equals the header and parsed as data otherwise. NotFound /
// InvalidArgument for a path that is neither, Internal for a read that fails, and the errors of
// ParseBytes.
Result<ParseResult> ParseFile(const std::string& path, const ParseOptions& options = {},
                              const ParseControl& control = {});

// Parses the files `names` (plain names, no '/') of an open directory, in the order given, as
// ParseFile parses a directory's files. Each is opened only when its turn comes, with
// openat(dir_fd, name, O_NOFOLLOW | O_NONBLOCK), and read only if that descriptor is a regular
// file (InvalidArgument otherwise): a name swapped after the caller checked it for a link, a
// FIFO or a device is refused, never followed or waited on, and nothing outside the directory
// is reachable. Issues name a file as `dir_name` + "/" + name. dir_fd stays the caller's.
Result<ParseResult> ParseDirectoryFiles(int dir_fd, const std::string& dir_name,
                                        const std::vector<std::string>& names,
                                        const ParseOptions& options = {},
                                        const ParseControl& control = {});

}  // namespace floe::parse

#endif  // FLOE_PARSE_PARSE_H_
