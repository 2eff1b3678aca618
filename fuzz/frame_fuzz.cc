// libFuzzer target for the chunk decoders (docs/frame.md): any input either fails with a Status
// or is a chunk every row of which reads without fault, through every accessor of its kind;
// compressing what was read again gives a chunk that reads back the same (numbers: NA as NA, the
// rest bit for bit; codes with the same domain size; strings byte for byte). Chunks of more than
// 65,536 rows (only constant or sparse ones fit in a fuzzer's input) are read at their ends.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "frame/frame.h"

namespace {

using floe::frame::ChunkView;
using floe::frame::Layout;

bool Same(double a, double b) {
  return floe::frame::IsNA(a) ? floe::frame::IsNA(b) : std::memcmp(&a, &b, 8) == 0;
}

// The view reads `bytes`, which must outlive it: a temporary does not compile.
ChunkView MakeOrDie(const std::string& bytes) {
  floe::Result<ChunkView> c = ChunkView::Make(bytes);
  FLOE_CHECK(c.ok());
  return *c;
}
ChunkView MakeOrDie(std::string&&) = delete;

void CheckStrings(const ChunkView& c) {
  std::vector<std::optional<std::string_view>> values(c.rows());
  for (uint32_t i = 0; i < c.rows(); i++) {
    if (!c.IsNA(i)) values[i] = c.AtString(i);
    FLOE_CHECK(!c.IsNA(i) || c.AtString(i).empty());
  }
  floe::Result<std::string> again = floe::frame::CompressStrings(values);
  FLOE_CHECK(again.ok());
  const ChunkView back = MakeOrDie(*again);
  FLOE_CHECK(back.layout() == Layout::kString && back.rows() == c.rows());
  for (uint32_t i = 0; i < c.rows(); i++) {
    FLOE_CHECK(back.IsNA(i) == c.IsNA(i) && back.AtString(i) == c.AtString(i));
  }
}

void CheckCodes(const ChunkView& c) {
  std::vector<int32_t> codes(c.rows());
  for (uint32_t i = 0; i < c.rows(); i++) {
    codes[i] = c.CodeAt(i);
    FLOE_CHECK(codes[i] == floe::frame::kNACode ||
               (codes[i] >= 0 && static_cast<uint32_t>(codes[i]) < c.domain()));
  }
  const std::string again = floe::frame::CompressCodes(codes, c.domain());
  const ChunkView back = MakeOrDie(again);
  FLOE_CHECK(back.layout() == Layout::kCategorical && back.domain() == c.domain());
  FLOE_CHECK(back.rows() == c.rows());
  for (uint32_t i = 0; i < c.rows(); i++) FLOE_CHECK(back.CodeAt(i) == codes[i]);
}

void CheckNumbers(const ChunkView& c) {
  std::vector<double> values(c.rows());
  for (uint32_t i = 0; i < c.rows(); i++) {
    values[i] = c.At(i);
    (void)c.AtTime(i);
  }
  // The sequential readers agree with At.
  uint32_t next = 0;
  c.ForEach([&](uint32_t i, double v) { FLOE_CHECK(i == next++ && Same(v, values[i])); });
  FLOE_CHECK(next == c.rows());
  next = 0;
  c.ForEachNonZero([&](uint32_t i, double v) {
    while (next < i) FLOE_CHECK(values[next++] == 0);
    FLOE_CHECK(Same(v, values[i]) && v != 0);
    next = i + 1;
  });
  while (next < c.rows()) FLOE_CHECK(values[next++] == 0);
  const std::string again = floe::frame::Compress(values);
  const ChunkView back = MakeOrDie(again);
  FLOE_CHECK(back.rows() == c.rows());
  for (uint32_t i = 0; i < c.rows(); i++) FLOE_CHECK(Same(back.At(i), values[i]));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  floe::Result<ChunkView> c = ChunkView::Make(in);
  if (!c.ok()) return 0;
  FLOE_CHECK(c->bytes() == size);
  if (c->rows() > (1u << 16)) {
    // A constant or sparse chunk names millions of rows in a few bytes: read its ends.
    (void)c->At(0);
    (void)c->At(c->rows() - 1);
    (void)c->IsNA(c->rows() - 1);
    return 0;
  }
  switch (c->layout()) {
    case Layout::kString:
      CheckStrings(*c);
      break;
    case Layout::kCategorical:
      CheckCodes(*c);
      break;
    default:
      CheckNumbers(*c);
  }
  return 0;
}
