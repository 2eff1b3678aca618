// libFuzzer target for the Raft transport's hello decoder (docs/wire.md, "The Raft transport's
// hello"; docs/consensus.md rules T1, T2): on any input HelloLength never claims more than
// kMaxHello bytes, DecodeHello takes only a hello whose length HelloLength gave, and a hello it
// takes encodes back to the same bytes. The input's first 16 bytes are the nonce; the decoder's
// source is compiled in, so it carries coverage and ASan.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "consensus/internal/transport.h"

namespace ci = floe::consensus::internal;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.size() < ci::kNonceBytes) return 0;
  const std::string_view nonce = in.substr(0, ci::kNonceBytes);
  const std::string_view hello = in.substr(ci::kNonceBytes);
  const size_t length = ci::HelloLength(hello);
  if (length > ci::kMaxHello) std::abort();
  if (length != 0 && length < ci::kHelloFixed + 1 + ci::kHelloMacBytes) std::abort();
  ci::Hello out;
  constexpr uint64_t kTarget = 7;  // the listener the hello is for
  const floe::consensus::Mac unkeyed;
  if (ci::DecodeHello(hello, nonce, kTarget, unkeyed, &out)) {
    if (length != hello.size()) std::abort();
    if (ci::EncodeHello(out.id, out.address, kTarget, nonce, unkeyed) != hello) std::abort();
  }
  // A hello made from the input's fields always decodes back to them.
  if (length != 0 && hello.size() >= length) {
    const std::string address(
        hello.substr(ci::kHelloFixed, length - ci::kHelloFixed - ci::kHelloMacBytes));
    if (address.find('\0') == std::string::npos) {
      uint64_t id = 0;
      for (int i = 7; i >= 0; i--) id = (id << 8) | static_cast<uint8_t>(hello[8 + i]);
      const std::string made = ci::EncodeHello(id, address, kTarget, nonce, unkeyed);
      if (!ci::DecodeHello(made, nonce, kTarget, unkeyed, &out) || out.id != id ||
          out.address != address) {
        std::abort();
      }
    }
  }
  return 0;
}
