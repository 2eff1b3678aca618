// libFuzzer target for HyperLogLog::Parse: any input either fails with a Status or parses to a
// sketch whose serialization parses again to the same sketch.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/base.h"
#include "sketch/sketch.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  floe::Result<floe::sketch::HyperLogLog> h = floe::sketch::HyperLogLog::Parse(in);
  if (!h.ok()) return 0;
  (void)h->Cardinality();
  const std::string bytes = h->Serialize();
  floe::Result<floe::sketch::HyperLogLog> again = floe::sketch::HyperLogLog::Parse(bytes);
  FLOE_CHECK(again.ok());
  FLOE_CHECK(again->Serialize() == bytes);
  if (h->params().log2m > 4) {
    floe::Result<floe::sketch::HyperLogLog> folded = h->Fold(h->params().log2m - 1);
    FLOE_CHECK(folded.ok());
  }
  return 0;
}
