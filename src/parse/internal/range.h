// One byte range of a parse into its own frame (range.cc): the state the ranges share, a
// range's piece, and the range parser. Private to src/parse (parse.cc).

#ifndef FLOE_PARSE_INTERNAL_RANGE_H_
#define FLOE_PARSE_INTERNAL_RANGE_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "base/base.h"
#include "frame/frame.h"
#include "parse/parse.h"

namespace floe::parse::internal {

struct Shared {
  const Setup* setup;
  const ParseOptions* options;
  const ParseControl* control;
  std::atomic<uint64_t> bytes_done{0};
  std::atomic<uint64_t> rows{0};
  std::atomic<uint64_t> domain_bytes{0};  // FrameBuilder::domain_bytes of every range, summed
  std::atomic<bool> failed{false};
  // Per column: the categorical values the input's first rows add, in that order (empty for
  // other columns), given to every range's builder first (FrameBuilder::SeedDomain).
  std::vector<std::vector<std::string>> seeds;
};

// The rows of one range: its frame, counts, and issues with lines relative to the range.
struct Piece {
  frame::Frame frame;
  uint64_t rows = 0, newlines = 0, rejected = 0, padded = 0, bad_values = 0, blank = 0, rounded = 0;
  std::vector<ParseIssue> issues;  // line: 1-based within the range
  Status status;
};

// Parses the rows in [begin, end) (a range split at row starts) into piece->frame and its
// counts and issues; `stop_after_rows`: the range ends after that many rows (0: none), for the
// seeds' pass. Cancelled, Aborted when another range failed (shared->failed), or the error.
// Thread-safe for distinct pieces.
Status ParseRange(Shared* shared, Piece* piece, const char* begin, const char* end,
                  uint64_t stop_after_rows = 0);

}  // namespace floe::parse::internal

#endif  // FLOE_PARSE_INTERNAL_RANGE_H_
