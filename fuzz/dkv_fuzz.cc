// libFuzzer target for the DKV's message decoders (docs/coherence.md, "Messages"): any input
// either fails with a Status or decodes to a message that encodes back to the same bytes (the
// encodings are canonical). The first byte picks the decoder.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/base.h"
#include "dkv/internal/messages.h"

namespace {

using namespace floe::dkv::internal;  // NOLINT(google-build-using-namespace): a fuzz target

template <typename T, typename Dec, typename Enc>
void RoundTrip(std::string_view in, Dec decode, Enc encode) {
  floe::Result<T> m = decode(in);
  if (!m.ok()) return;
  const std::string again = encode(*m);
  floe::Result<T> back = decode(again);
  FLOE_CHECK(back.ok());
  FLOE_CHECK(encode(*back) == again);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 7) {
    case 0:
      RoundTrip<GetRequest>(in, DecodeGetRequest, EncodeGetRequest);
      break;
    case 1:
      RoundTrip<GetAnswer>(in, DecodeGetAnswer, EncodeGetAnswer);
      break;
    case 2:
      RoundTrip<WriteRequest>(in, DecodeWriteRequest, EncodeWriteRequest);
      break;
    case 3:
      RoundTrip<WriteAnswer>(in, DecodeWriteAnswer, EncodeWriteAnswer);
      break;
    case 4:
      RoundTrip<InvalidateRequest>(in, DecodeInvalidate, EncodeInvalidate);
      break;
    case 5:
      RoundTrip<floe::dkv::Entry>(in, DecodeEntry, EncodeEntry);
      break;
    case 6:
      RoundTrip<CompareAndPutArgs>(in, DecodeCompareAndPut, [](const CompareAndPutArgs& a) {
        return EncodeCompareAndPut(a.expected, a.entry);
      });
      break;
  }
  return 0;
}
