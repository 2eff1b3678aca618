// The text the front end decodes or encodes itself: URL escapes, query strings, base64, the
// Authorization header, RESP replies as JSON and INFO's lines. HTTP framing is http-parser's;
// these are what is left, and fuzz/http_fuzz.cc runs them on arbitrary bytes.

#include "http/http.h"
#include "wire/wire.h"

namespace floe::http {

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Case-insensitive prefix test for the scheme names in Authorization.
bool StartsWithIgnoreCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); i++) {
    const char a = text[i] >= 'A' && text[i] <= 'Z' ? static_cast<char>(text[i] + 32) : text[i];
    if (a != prefix[i]) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<std::string> PercentDecode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); i++) {
    const char c = text[i];
    if (c == '%') {
      if (text.size() - i < 3)
        return Status::InvalidArgument("bad URL escape: '%' needs two hex digits");
      const int hi = HexValue(text[i + 1]), lo = HexValue(text[i + 2]);
      if (hi < 0 || lo < 0)
        return Status::InvalidArgument("bad URL escape: '%' needs two hex digits");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Result<std::map<std::string, std::string>> ParseQuery(std::string_view query) {
  std::map<std::string, std::string> out;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    FLOE_ASSIGN_OR_RETURN(std::string name, PercentDecode(pair.substr(0, eq), true));
    std::string value;
    if (eq != std::string_view::npos) {
      FLOE_ASSIGN_OR_RETURN(value, PercentDecode(pair.substr(eq + 1), true));
    }
    out[std::move(name)] = std::move(value);
  }
  return out;
}

std::string Base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) |
                       (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                       static_cast<uint8_t>(bytes[i + 2]);
    out += kBase64[(v >> 18) & 63];
    out += kBase64[(v >> 12) & 63];
    out += kBase64[(v >> 6) & 63];
    out += kBase64[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kBase64[(v >> 18) & 63];
    out += kBase64[(v >> 12) & 63];
    out += rest == 2 ? kBase64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0)
    return Status::InvalidArgument("bad base64: length not a multiple of 4");
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int pad = 0;
    uint32_t v = 0;
    for (size_t j = 0; j < 4; j++) {
      const char c = text[i + j];
      if (c == '=' && last && j >= 2) {
        pad++;
        v <<= 6;
        continue;
      }
      const int d = Base64Value(c);
      if (d < 0 || pad > 0) return Status::InvalidArgument("bad base64");
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    // The bits the padding leaves over must be zero: one spelling per byte string.
    if ((pad == 1 && (v & 0xff) != 0) || (pad == 2 && (v & 0xffff) != 0)) {
      return Status::InvalidArgument("bad base64");
    }
    out.push_back(static_cast<char>((v >> 16) & 0xff));
    if (pad < 2) out.push_back(static_cast<char>((v >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(v & 0xff));
  }
  return out;
}

Result<std::string> PasswordFromAuthorization(std::string_view header) {
  header = Trim(header);
  if (StartsWithIgnoreCase(header, "bearer ")) return std::string(Trim(header.substr(7)));
  if (StartsWithIgnoreCase(header, "basic ")) {
    Result<std::string> decoded = Base64Decode(Trim(header.substr(6)));
    if (!decoded.ok()) return Status::NotFound("bad Basic credentials");
    const size_t colon = decoded->find(':');
    if (colon == std::string::npos) return Status::NotFound("bad Basic credentials");
    return decoded->substr(colon + 1);
  }
  return Status::NotFound("no Basic or Bearer credentials");
}

bool IsUtf8(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const auto c = static_cast<uint8_t>(bytes[i]);
    size_t len = 0;
    uint32_t min = 0;
    if (c < 0x80) {
      i++;
      continue;
    }
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      min = 0x10000;
    } else {
      return false;
    }
    if (bytes.size() - i < len) return false;
    uint32_t cp = c & (0xff >> (len + 1));
    for (size_t k = 1; k < len; k++) {
      const auto d = static_cast<uint8_t>(bytes[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

void AppendReplyJson(std::string* out, const resp::Reply& reply) {
  using Type = resp::Reply::Type;
  switch (reply.type) {
    case Type::kSimple:
    case Type::kBulk:
    case Type::kVerbatim:
      wire::AppendJsonString(out, reply.str);
      return;
    case Type::kBigNumber:  // digits, beyond what a JSON reader holds exactly: as text
      wire::AppendJsonString(out, reply.str);
      return;
    case Type::kError:
      out->append("{\"error\":");
      wire::AppendJsonString(out, reply.str);
      out->push_back('}');
      return;
    case Type::kInteger:
      out->append(std::to_string(reply.integer));
      return;
    case Type::kNull:
      out->append("null");
      return;
    case Type::kBool:
      out->append(reply.integer != 0 ? "true" : "false");
      return;
    case Type::kDouble:
      wire::AppendJsonDouble(out, reply.dbl);
      return;
    case Type::kArray:
    case Type::kSet:
    case Type::kPush:
      out->push_back('[');
      for (size_t i = 0; i < reply.elements.size(); i++) {
        if (i > 0) out->push_back(',');
        AppendReplyJson(out, reply.elements[i]);
      }
      out->push_back(']');
      return;
    case Type::kMap:
      // JSON keys are strings: a key that is not a string is rendered and then quoted.
      out->push_back('{');
      for (size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
        if (i > 0) out->push_back(',');
        const resp::Reply& key = reply.elements[i];
        if (key.type == Type::kBulk || key.type == Type::kSimple || key.type == Type::kVerbatim) {
          wire::AppendJsonString(out, key.str);
        } else {
          std::string rendered;
          AppendReplyJson(&rendered, key);
          wire::AppendJsonString(out, rendered);
        }
        out->push_back(':');
        AppendReplyJson(out, reply.elements[i + 1]);
      }
      out->push_back('}');
      return;
  }
}

InfoSections ParseInfo(std::string_view info) {
  InfoSections out;
  std::string section = "";
  while (!info.empty()) {
    const size_t nl = info.find('\n');
    std::string_view line = info.substr(0, nl);
    info = nl == std::string_view::npos ? std::string_view() : info.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    if (line.starts_with("# ")) {
      section = std::string(line.substr(2));
      for (char& c : section) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
      }
      out[section];
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    out[section].emplace_back(std::string(line.substr(0, colon)),
                              std::string(line.substr(colon + 1)));
  }
  return out;
}

}  // namespace floe::http
