// libFuzzer target for the Bloom filter and Count-Min decoders: the first byte picks the
// decoder; any input either fails with a Status or parses to a sketch whose serialization parses
// again to the same bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/base.h"
#include "sketch/sketch.h"

namespace {
template <typename T>
void RoundTrip(std::string_view in) {
  floe::Result<T> s = T::Parse(in);
  if (!s.ok()) return;
  const std::string bytes = s->Serialize();
  floe::Result<T> again = T::Parse(bytes);
  FLOE_CHECK(again.ok());
  FLOE_CHECK(again->Serialize() == bytes);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      RoundTrip<floe::sketch::BloomFilter>(in);
      floe::Result<floe::sketch::BloomFilter> f = floe::sketch::BloomFilter::Parse(in);
      if (f.ok()) {
        (void)f->Contains("probe");
        floe::sketch::BloomFilter g = *f;
        FLOE_CHECK(g.Merge(*f).ok());
      }
      break;
    }
    case 1:
      RoundTrip<floe::sketch::CountMin>(in);
      break;
    default: {
      floe::Result<floe::sketch::RangeCountMin> r = floe::sketch::RangeCountMin::Parse(in);
      if (r.ok()) {
        (void)r->Quantile(0.5);
        FLOE_CHECK(floe::sketch::RangeCountMin::Parse(r->Serialize()).ok());
      }
      break;
    }
  }
  return 0;
}
