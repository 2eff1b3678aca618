// libFuzzer target for the text the HTTP front end decodes itself (src/http/encoding.cc,
// metrics.cc): URL escapes, query strings, base64, the Authorization header, INFO's lines and
// their Prometheus rendering. HTTP framing is http-parser's and is not ours to fuzz.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/base.h"
#include "http/http.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  using namespace floe::http;
  switch (data[0] % 6) {
    case 0:
    case 1: {
      auto decoded = PercentDecode(in, data[0] % 2 == 1);
      if (decoded.ok()) FLOE_CHECK(decoded->size() <= in.size());
      break;
    }
    case 2: {
      auto query = ParseQuery(in);
      if (query.ok()) FLOE_CHECK(query->size() <= in.size());
      break;
    }
    case 3: {
      auto decoded = Base64Decode(in);
      if (decoded.ok()) FLOE_CHECK(Base64Encode(*decoded) == in);  // strict: one spelling
      FLOE_CHECK(*Base64Decode(Base64Encode(in)) == in);
      break;
    }
    case 4: {
      auto password = PasswordFromAuthorization(in);
      if (password.ok()) FLOE_CHECK(password->size() <= in.size());
      (void)IsUtf8(in);
      break;
    }
    case 5: {
      const std::string text = PrometheusText(ParseInfo(in));
      // Every line is a comment or "<name>[{labels}] <value>": never empty, never a raw newline
      // inside a label.
      size_t start = 0;
      while (start < text.size()) {
        const size_t nl = text.find('\n', start);
        FLOE_CHECK(nl != std::string::npos && nl > start);
        start = nl + 1;
      }
      break;
    }
  }
  return 0;
}
