// The setup guess (docs/frame.md, "CSV import"): quote, separator, header, names and column
// types from a sample of the input, each overridable through ParseOptions.

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <unordered_set>

#include "parse/internal/csv.h"
#include "parse/parse.h"

namespace floe::parse {
namespace {

using frame::ColumnType;
using internal::Row;

constexpr size_t kSeparatorRows = 200;  // rows each candidate separator is tried on
constexpr size_t kMinSampleRows = 10;   // rows the guess reads even past the sample's bytes
constexpr double kMostly = 0.9;         // "mostly numbers": this share of non-NA values

std::string_view StripBOM(std::string_view s) {
  if (s.size() >= 3 && s.substr(0, 3) == "\xEF\xBB\xBF") s.remove_prefix(3);
  return s;
}

// The sample's rows: every row that starts in the first `sample_bytes`, and rows after them
// until kMinSampleRows of them are within the limits, each read to its end (so a row wider than
// the sample is whole), at most `max_rows`. `input` ends at most kMinSampleRows + 1 line limits
// past the sample, so no row is scanned further; a row cut by that end (`input` is shorter than
// the whole source) is dropped unless it is the only one. A row over the field or line limit
// counts for the column count only (the parse rejects it; its fields were not copied whole). Fields
// are views into `input`, or into the row's own copy when they needed unescaping: a wide row is not
// copied.
struct SampleRow {
  std::vector<std::string_view> fields;
  std::vector<bool> quoted;
  size_t count = 0;
  bool whole = true;
  bool over_limit = false;                 // counts its fields, but its values are not read
  std::unique_ptr<std::string> unescaped;  // heap-held, so views into it survive moves
};

Result<std::vector<SampleRow>> ReadSample(std::string_view input, bool cut, size_t sample_bytes,
                                          char sep, char quote, size_t max_rows,
                                          const ParseLimits& limits) {
  const uint32_t max_columns = limits.max_columns;
  std::vector<SampleRow> rows;
  Row row;
  internal::CapRow(&row, limits.max_field_bytes, limits.max_line_bytes);
  size_t over = 0;
  bool first_over = false;
  size_t readable = 0;  // rows whose values the guess reads: within the limits
  const char* p = input.data();
  const char* end = p + input.size();
  const char* sample_end = p + std::min(sample_bytes, input.size());
  while (p < end && (p < sample_end || readable < kMinSampleRows) && rows.size() < max_rows) {
    const char* start = p;
    p = internal::ReadRow(p, end, sep, quote, size_t{max_columns} + 1, &row);
    if (row.blank()) continue;
    if (row.count > max_columns) {
      // A stray row of too many fields is the parse's to reject; a first row (the header) or
      // most rows that wide mean the input has more columns than allowed.
      first_over |= rows.empty() && over == 0;
      over++;
      continue;
    }
    SampleRow r;
    r.count = row.count;
    // Cut by the end of `input` (the source goes on), or over a limit: not whole.
    const bool row_cut = cut && p == end && (row.unterminated || end[-1] != '\n');
    r.whole = !row_cut;
    r.over_limit = static_cast<uint64_t>(p - start) > limits.max_line_bytes || row.over_line_cap ||
                   row.longest > limits.max_field_bytes;
    if (!r.over_limit && r.whole) readable++;
    if (!row.scratch.empty()) {
      r.unescaped = std::make_unique<std::string>(std::move(row.scratch));
      row.scratch.clear();
    }
    for (size_t i = 0; i < row.fields.size(); i++) {
      const Row::Field& f = row.fields[i];
      // An empty field may point into an empty scratch, which was not kept.
      if (f.data != nullptr) {
        r.fields.emplace_back(f.data, f.size);
      } else if (r.unescaped != nullptr) {
        r.fields.push_back(std::string_view(*r.unescaped).substr(f.offset, f.size));
      } else {
        r.fields.emplace_back();
      }
      r.quoted.push_back(f.quoted);
    }
    rows.push_back(std::move(r));
  }
  if (over > 0 && (first_over || over >= rows.size())) {
    return Status::ResourceExhausted("more columns than the limit (" + std::to_string(max_columns) +
                                     ")");
  }
  // Rows that are not whole are left out, unless no row is.
  if (std::any_of(rows.begin(), rows.end(), [](const SampleRow& r) { return r.whole; })) {
    std::erase_if(rows, [](const SampleRow& r) { return !r.whole; });
  }
  return rows;
}

char GuessQuote(std::string_view sample) {
  if (sample.find('"') != std::string_view::npos) return '"';
  // Single quotes count only when one opens a field and one closes a field.
  auto boundary = [](char c) {
    return c == '\n' || c == '\r' || kGuessedSeparators.find(c) != std::string_view::npos;
  };
  bool opens = false, closes = false;
  for (size_t i = 0; i < sample.size(); i++) {
    if (sample[i] != '\'') continue;
    opens |= i == 0 || boundary(sample[i - 1]);
    closes |= i + 1 == sample.size() || boundary(sample[i + 1]);
  }
  return opens && closes ? '\'' : '"';
}

// The most common field count (the larger on a tie) and how many rows have it.
std::pair<size_t, size_t> ModeCount(const std::vector<size_t>& counts) {
  std::map<size_t, size_t> freq;
  for (size_t c : counts) freq[c]++;
  std::pair<size_t, size_t> best{0, 0};
  for (const auto& [count, n] : freq) {
    if (n >= best.second) best = {count, n};
  }
  return best;
}

char GuessSeparator(std::string_view sample, char quote) {
  char best = ',';
  size_t best_score = 0;
  Row row;
  for (const char sep : kGuessedSeparators) {
    if (sep == quote) continue;
    std::vector<size_t> counts;
    const char* p = sample.data();
    const char* end = p + sample.size();
    while (p < end && counts.size() < kSeparatorRows) {
      p = internal::ReadRow(p, end, sep, quote, 1, &row);
      if (row.blank()) continue;
      counts.push_back(row.count);
    }
    const auto [mode, score] = ModeCount(counts);
    if (mode >= 2 && score > best_score) {
      best = sep;
      best_score = score;
    }
  }
  return best;
}

struct ColumnStats {
  size_t non_na = 0, numbers = 0, integers = 0, times = 0;
  std::unordered_set<std::string_view> distinct;  // capped at the categorical limit + 1
};

std::vector<ColumnStats> Stats(const std::vector<SampleRow>& rows, size_t first, size_t columns,
                               const ParseOptions& options) {
  std::vector<ColumnStats> stats(columns);
  for (size_t r = first; r < rows.size(); r++) {
    if (rows[r].over_limit) continue;  // the parse rejects the row
    for (size_t c = 0; c < columns && c < rows[r].fields.size(); c++) {
      const std::string_view v = rows[r].fields[c];
      // A quoted NA token is NA in a numeric column but text in a text one: count it as text.
      const bool quoted = rows[r].quoted[c];
      if (!quoted && internal::IsNAToken(v, options.na_tokens)) continue;
      if (quoted && internal::IsNAToken(v, options.na_tokens)) {
        stats[c].non_na++;
        if (stats[c].distinct.size() <= options.max_categorical_domain) stats[c].distinct.insert(v);
        continue;
      }
      ColumnStats& s = stats[c];
      s.non_na++;
      if (const std::optional<double> x = internal::ReadNumber(v)) {
        s.numbers++;
        // Below 2^53 every integer is exact; a larger one may have been rounded.
        if (std::fabs(*x) < 9007199254740992.0 && *x == std::trunc(*x)) s.integers++;
      } else if (internal::ReadTime(v)) {
        s.times++;
      }
      if (s.distinct.size() <= options.max_categorical_domain) s.distinct.insert(v);
    }
  }
  return stats;
}

ColumnType TypeOf(const ColumnStats& s, const ParseOptions& options) {
  if (s.non_na == 0) return ColumnType::kReal;
  const auto mostly = static_cast<size_t>(std::ceil(kMostly * static_cast<double>(s.non_na)));
  if (s.times > 0 && s.times >= mostly) return ColumnType::kTime;
  if (s.numbers > 0 && s.numbers >= mostly) {
    return s.integers == s.numbers ? ColumnType::kInteger : ColumnType::kReal;
  }
  const size_t distinct = s.distinct.size();
  if (distinct <= options.max_categorical_domain && 2 * distinct <= s.non_na) {
    return ColumnType::kCategorical;
  }
  return ColumnType::kString;
}

bool IsText(std::string_view v, const ParseOptions& options) {
  return !internal::IsNAToken(v, options.na_tokens) && !internal::ReadNumber(v) &&
         !internal::ReadTime(v);
}

bool GuessHeader(const std::vector<SampleRow>& rows, size_t columns, const ParseOptions& options) {
  if (rows.empty()) return false;
  const SampleRow& first = rows[0];
  std::unordered_set<std::string_view> names;
  for (const std::string_view v : first.fields) {
    if (!IsText(v, options) || !names.insert(v).second) return false;
  }
  if (rows.size() == 1) return true;  // one line of distinct names: a header-only input
  const std::vector<ColumnStats> stats = Stats(rows, 1, columns, options);
  for (size_t c = 0; c < columns; c++) {
    const ColumnType t = TypeOf(stats[c], options);
    if (stats[c].non_na > 0 && t != ColumnType::kCategorical && t != ColumnType::kString) {
      return true;  // text above a column of numbers or times
    }
  }
  // Text everywhere: a header if none of its names shows up again in its column.
  for (size_t r = 1; r < rows.size(); r++) {
    for (size_t c = 0; c < first.fields.size() && c < rows[r].fields.size(); c++) {
      if (rows[r].fields[c] == first.fields[c]) return false;
    }
  }
  return true;
}

}  // namespace

Result<Setup> GuessSetup(std::string_view input, const ParseOptions& options) {
  input = StripBOM(input);
  const std::string_view sample = input.substr(0, options.sample_bytes);
  // The rows read for the guess may run past the sample by at most kMinSampleRows + 1 line
  // limits: enough to read past rows over the limit to the first rows whose values it can read.
  const uint64_t line = std::min<uint64_t>(options.limits.max_line_bytes, UINT64_MAX / 64);
  const uint64_t past = (kMinSampleRows + 1) * (line + 1);
  const uint64_t reach =
      options.sample_bytes > UINT64_MAX - past ? UINT64_MAX : options.sample_bytes + past;
  const std::string_view rows_input =
      input.substr(0, static_cast<size_t>(std::min<uint64_t>(reach, input.size())));
  Setup setup;
  setup.quote = options.quote.has_value() ? *options.quote : GuessQuote(sample);
  if (options.separator.has_value()) {
    setup.separator = *options.separator;
  } else {
    setup.separator = GuessSeparator(sample, setup.quote);
  }
  if (setup.separator == setup.quote) {
    return Status::InvalidArgument("the separator and the quote are the same character");
  }
  if (setup.separator == '\n' || setup.separator == '\r' || setup.quote == '\n' ||
      setup.quote == '\r') {
    return Status::InvalidArgument("a line break cannot separate or quote");
  }
  FLOE_ASSIGN_OR_RETURN(const std::vector<SampleRow> rows,
                        ReadSample(rows_input, rows_input.size() < input.size(), sample.size(),
                                   setup.separator, setup.quote, SIZE_MAX, options.limits));
  std::vector<size_t> counts;
  for (const SampleRow& r : rows) counts.push_back(r.count);
  size_t columns = std::max<size_t>(ModeCount(counts).first, 1);
  setup.header = options.header.has_value() ? *options.header : GuessHeader(rows, columns, options);
  if (setup.header && !rows.empty()) columns = std::max<size_t>(rows[0].count, 1);
  if (options.column_names.size() > columns || options.column_types.size() > columns) {
    return Status::InvalidArgument("more column names or types than columns (" +
                                   std::to_string(columns) + ")");
  }
  const std::vector<ColumnStats> stats = Stats(rows, setup.header ? 1 : 0, columns, options);
  std::unordered_set<std::string> used;
  for (size_t c = 0; c < columns; c++) {
    std::string name;
    if (c < options.column_names.size()) {
      name = options.column_names[c];
      if (name.empty() || !used.insert(name).second) {
        return Status::InvalidArgument("column names must be non-empty and distinct");
      }
    } else {
      name = setup.header && !rows.empty() && c < rows[0].fields.size()
                 ? std::string(rows[0].fields[c])
                 : "";
      if (name.empty()) name = "C" + std::to_string(c + 1);
      // A repeated name gets the first free suffix.
      const std::string base = name;
      for (size_t k = 2; used.count(name) > 0 || std::count(options.column_names.begin(),
                                                            options.column_names.end(), name) > 0;
           k++) {
        name = base + "_" + std::to_string(k);
      }
      used.insert(name);
    }
    if (name.size() > options.limits.max_name_bytes) {
      return Status::InvalidArgument("column " + std::to_string(c + 1) + "'s name is longer than " +
                                     std::to_string(options.limits.max_name_bytes) + " bytes");
    }
    setup.names.push_back(std::move(name));
    setup.types.push_back(c < options.column_types.size() && options.column_types[c]
                              ? *options.column_types[c]
                              : TypeOf(stats[c], options));
  }
  return setup;
}

void ApplySetup(const Setup& setup, ParseOptions* options) {
  options->separator = setup.separator;
  options->quote = setup.quote;
  options->header = setup.header;
  options->column_names = setup.names;
  options->column_types.assign(setup.types.begin(), setup.types.end());
}

}  // namespace floe::parse
