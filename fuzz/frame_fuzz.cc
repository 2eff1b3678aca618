// libFuzzer target for the numeric chunk decoder (docs/frame.md): any input either fails with a
// Status or is a chunk every row of which reads without fault; compressing those values again
// gives a chunk that reads back the same values (NA as NA, the rest bit for bit). Chunks of more
// than 65,536 rows (only a constant one fits in a fuzzer's input) are read at their ends.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "frame/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  floe::Result<floe::frame::ChunkView> c = floe::frame::ChunkView::Make(in);
  if (!c.ok()) return 0;
  if (c->rows() > (1u << 16)) {
    // A constant chunk names millions of rows in 16 bytes: read its ends, not all of it.
    (void)c->At(0);
    (void)c->At(c->rows() - 1);
    return 0;
  }
  std::vector<double> values(c->rows());
  for (uint32_t i = 0; i < c->rows(); i++) values[i] = c->At(i);
  const std::string again = floe::frame::Compress(values);
  floe::Result<floe::frame::ChunkView> back = floe::frame::ChunkView::Make(again);
  FLOE_CHECK(back.ok());
  FLOE_CHECK(back->rows() == c->rows());
  for (uint32_t i = 0; i < c->rows(); i++) {
    const double a = values[i], b = back->At(i);
    if (floe::frame::IsNA(a)) {
      FLOE_CHECK(floe::frame::IsNA(b));
    } else {
      FLOE_CHECK(std::memcmp(&a, &b, 8) == 0);
    }
  }
  return 0;
}
