// libFuzzer target for the RESP decoders: the request parser, fed the input in two pieces at a
// position the input chooses (so resumption is exercised), and the reply parser.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "resp/resp.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const size_t cut = in.empty() ? 0 : data[0] % (in.size() + 1);

  floe::resp::Limits limits;
  limits.max_bulk_len = 1 << 20;
  limits.max_inline = 4096;
  floe::resp::RequestParser parser(limits);
  std::string buf(in.substr(0, cut));
  std::vector<std::string_view> args;
  std::string error;
  bool fed_rest = false;
  for (int guard = 0; guard < 100000; guard++) {
    size_t consumed = 0;
    const auto outcome = parser.Parse(buf, &args, &consumed, &error);
    FLOE_CHECK(consumed <= buf.size());
    buf.erase(0, consumed);
    if (outcome == floe::resp::RequestParser::Outcome::kError) break;
    if (outcome == floe::resp::RequestParser::Outcome::kNeedMore) {
      if (fed_rest) break;
      buf.append(in.substr(cut));
      fed_rest = true;
    }
  }

  size_t consumed = 0;
  floe::Result<floe::resp::Reply> reply = floe::resp::ParseReply(in, &consumed);
  if (reply.ok()) {
    FLOE_CHECK(consumed <= in.size());
    (void)reply->ToString();
  }
  return 0;
}
