// libFuzzer target for the RPC message decoder (docs/wire.md, "RPC messages"): any input either
// fails with a Status or decodes to a message that encodes back to a decodable message with the
// same header and payload. Run with and without a MAC key, and as a stranger's codec (no key, at
// most 4 KiB, no LZ4: docs/rpc.md, "A stranger"), which never yields an LZ4 payload or one above
// 4 KiB (the first byte chooses).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/base.h"
#include "rpc/rpc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const floe::rpc::MacKey kKey = floe::rpc::DeriveMacKey("fuzz");
  floe::rpc::CodecOptions o;
  const bool stranger = (data[0] & 4) != 0;
  o.key = (data[0] & 1) != 0 && !stranger ? &kKey : nullptr;
  o.max_message = stranger ? 4096 : 1 << 20;
  o.accept_lz4 = !stranger;
  if (stranger) o.compress_min = 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool checked = (data[0] & 2) != 0;  // as if the transport verified a frame CRC
  floe::Result<floe::rpc::Message> m = floe::rpc::Decode(in, o, checked);
  if (!m.ok()) return 0;
  if (stranger) {
    FLOE_CHECK((m->header.flags & floe::rpc::kFlagLz4) == 0);
    FLOE_CHECK(m->payload().size() <= 4096);
  }
  const std::string again = floe::rpc::Encode(m->header, m->payload(), o);
  floe::Result<floe::rpc::Message> back = floe::rpc::Decode(again, o, checked);
  FLOE_CHECK(back.ok());
  FLOE_CHECK(back->payload() == m->payload());
  FLOE_CHECK(back->header.task == m->header.task && back->header.code == m->header.code);
  return 0;
}
