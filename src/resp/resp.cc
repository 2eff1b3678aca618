#include "resp/resp.h"

#include <sys/mman.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

namespace floe::resp {

namespace {

// Redis's string2ll rules for every number in the protocol.
bool ParseStrictInt64(std::string_view s, int64_t* out) { return ParseDecimalInt64(s, out); }

}  // namespace

void RequestParser::Reset() {
  in_multibulk_ = false;
  remaining_args_ = 0;
  pos_ = 0;
  spans_.clear();
  wanted_ = 0;
}

RequestParser::Outcome RequestParser::Parse(std::string_view buf,
                                            std::vector<std::string_view>* args, size_t* consumed,
                                            std::string* error) {
  size_t base = 0;  // empty requests skipped in this call
  *consumed = 0;
  for (;;) {
    const std::string_view b = buf.substr(base);
    if (!in_multibulk_) {
      if (b.empty()) {
        *consumed = base;
        wanted_ = 1;
        return Outcome::kNeedMore;
      }
      if (b[0] != '*') {
        size_t used = 0;
        const Outcome o = ParseInline(b, args, &used, error);
        if (o == Outcome::kCommand && args->empty()) {  // blank line
          base += used;
          continue;
        }
        *consumed = base + used;
        return o;
      }
      const size_t cr = b.find('\r');
      if (cr == std::string_view::npos) {
        if (b.size() > limits_.max_inline) {
          *error = "Protocol error: too big mbulk count string";
          return Outcome::kError;
        }
        *consumed = base;
        return Outcome::kNeedMore;
      }
      if (cr + 1 >= b.size()) {  // the '\n' has not arrived
        *consumed = base;
        return Outcome::kNeedMore;
      }
      int64_t n = 0;
      if (!ParseStrictInt64(b.substr(1, cr - 1), &n) ||
          n > static_cast<int64_t>(std::min<uint64_t>(limits_.max_args, INT32_MAX))) {
        *error = "Protocol error: invalid multibulk length";
        return Outcome::kError;
      }
      if (limits_.unauthenticated && n > Limits::kUnauthenticatedMaxArgs) {
        *error = "Protocol error: unauthenticated multibulk length";
        return Outcome::kError;
      }
      if (n <= 0) {
        base += cr + 2;
        continue;
      }
      in_multibulk_ = true;
      remaining_args_ = n;
      pos_ = cr + 2;
      spans_.reserve(static_cast<size_t>(std::min<int64_t>(n, 1024)));
    }

    while (remaining_args_ > 0) {
      if (pos_ >= b.size()) {
        *consumed = base;
        wanted_ = pos_ + 1 - b.size();
        return Outcome::kNeedMore;
      }
      if (b[pos_] != '$') {
        *error = "Protocol error: expected '$', got '";
        error->push_back(b[pos_]);
        error->push_back('\'');
        return Outcome::kError;
      }
      const size_t cr = b.find('\r', pos_);
      if (cr == std::string_view::npos) {
        if (b.size() - pos_ > limits_.max_inline) {
          *error = "Protocol error: too big bulk count string";
          return Outcome::kError;
        }
        *consumed = base;
        return Outcome::kNeedMore;
      }
      if (cr + 1 >= b.size()) {
        *consumed = base;
        return Outcome::kNeedMore;
      }
      int64_t len = 0;
      if (!ParseStrictInt64(b.substr(pos_ + 1, cr - pos_ - 1), &len) || len < 0 ||
          static_cast<uint64_t>(len) > limits_.max_bulk_len) {
        *error = "Protocol error: invalid bulk length";
        return Outcome::kError;
      }
      if (limits_.unauthenticated && len > Limits::kUnauthenticatedMaxBulk) {
        *error = "Protocol error: unauthenticated bulk length";
        return Outcome::kError;
      }
      const size_t start = cr + 2;
      const size_t end = start + static_cast<size_t>(len) + 2;  // data and its CRLF
      if (end > b.size()) {
        *consumed = base;
        wanted_ = end - b.size();
        return Outcome::kNeedMore;
      }
      spans_.emplace_back(start, static_cast<size_t>(len));
      pos_ = end;
      remaining_args_--;
    }

    args->clear();
    args->reserve(spans_.size());
    for (const auto& [off, len] : spans_) args->push_back(b.substr(off, len));
    *consumed = base + pos_;
    Reset();
    return Outcome::kCommand;
  }
}

RequestParser::Outcome RequestParser::ParseInline(std::string_view buf,
                                                  std::vector<std::string_view>* args,
                                                  size_t* consumed, std::string* error) {
  const size_t nl = buf.find('\n');
  if (nl == std::string_view::npos) {
    if (buf.size() > limits_.max_inline) {
      *error = "Protocol error: too big inline request";
      return Outcome::kError;
    }
    *consumed = 0;
    return Outcome::kNeedMore;
  }
  std::string_view line = buf.substr(0, nl);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  inline_args_.clear();
  if (!SplitInlineArgs(line, &inline_args_)) {
    *error = "Protocol error: unbalanced quotes in request";
    return Outcome::kError;
  }
  args->clear();
  for (const std::string& a : inline_args_) args->push_back(a);
  *consumed = nl + 1;
  return Outcome::kCommand;
}

// ---------------------------------------------------------------------------------------------
namespace {
constexpr size_t kMapThreshold = 256 * 1024;
}  // namespace

InputBuffer::Storage InputBuffer::Allocate(size_t bytes) {
  if (bytes < kMapThreshold) return Storage(new char[bytes], Release{bytes});  // no zero fill
  // The kernel provides pages when they are first written: bytes never received cost nothing.
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return Storage(nullptr, Release{0});
  return Storage(static_cast<char*>(p), Release{bytes});
}

void InputBuffer::Release::operator()(char* p) const {
  if (bytes < kMapThreshold) {
    delete[] p;
  } else {
    munmap(p, bytes);
  }
}

std::span<char> InputBuffer::PrepareRead(size_t wanted) {
  const size_t pending = size();
  if (pending >= limit_) return {};
  // Move the unconsumed bytes to the front when that frees a useful amount of room.
  if (begin_ > 0 && (capacity_ - end_ < chunk_ / 4 || begin_ == end_)) {
    std::memmove(buf_.get(), buf_.get() + begin_, pending);
    begin_ = 0;
    end_ = pending;
  }
  if (capacity_ - end_ < chunk_ / 4) {
    // Geometric growth: at most double, at least one chunk more, within the limit. Inside a
    // large bulk string the parser knows how many bytes the request still needs; the buffer
    // then grows no further than that (a request of many small arguments keeps doubling).
    size_t next = std::max(capacity_ * 2, end_ + chunk_);
    if (wanted > chunk_) next = std::min(next, end_ + std::min(wanted, limit_) + chunk_);
    next = std::min(next, limit_ + chunk_);
    Storage grown = Allocate(next);
    if (!grown) return {};  // out of memory: the caller closes the client
    if (pending > 0) std::memcpy(grown.get(), buf_.get() + begin_, pending);
    buf_ = std::move(grown);
    capacity_ = next;
    begin_ = 0;
    end_ = pending;
  }
  return {buf_.get() + end_, capacity_ - end_};
}

void InputBuffer::Consume(size_t n) {
  begin_ += n;
  if (begin_ == end_) begin_ = end_ = 0;
}

void InputBuffer::ShrinkIfIdle() {
  if (begin_ != end_ || capacity_ <= chunk_) return;
  buf_ = Allocate(chunk_);
  capacity_ = chunk_;
  begin_ = end_ = 0;
}

namespace {
bool IsHexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
}  // namespace

bool SplitInlineArgs(std::string_view line, std::vector<std::string>* out) {
  size_t i = 0;
  const size_t n = line.size();
  for (;;) {
    while (i < n && IsSpace(line[i])) i++;
    if (i >= n) return true;
    std::string current;
    bool in_dq = false;
    bool in_sq = false;
    bool done = false;
    while (!done) {
      if (in_dq) {
        if (i >= n) return false;  // unterminated quotes
        if (line[i] == '\\' && i + 3 < n && line[i + 1] == 'x' && IsHexDigit(line[i + 2]) &&
            IsHexDigit(line[i + 3])) {
          current.push_back(static_cast<char>(HexValue(line[i + 2]) * 16 + HexValue(line[i + 3])));
          i += 3;
        } else if (line[i] == '\\' && i + 1 < n) {
          i++;
          switch (line[i]) {
            case 'n':
              current.push_back('\n');
              break;
            case 'r':
              current.push_back('\r');
              break;
            case 't':
              current.push_back('\t');
              break;
            case 'b':
              current.push_back('\b');
              break;
            case 'a':
              current.push_back('\a');
              break;
            default:
              current.push_back(line[i]);
              break;
          }
        } else if (line[i] == '"') {
          // The closing quote must be followed by a space or nothing.
          if (i + 1 < n && !IsSpace(line[i + 1])) return false;
          done = true;
        } else {
          current.push_back(line[i]);
        }
      } else if (in_sq) {
        if (i >= n) return false;
        if (line[i] == '\\' && i + 1 < n && line[i + 1] == '\'') {
          i++;
          current.push_back('\'');
        } else if (line[i] == '\'') {
          if (i + 1 < n && !IsSpace(line[i + 1])) return false;
          done = true;
        } else {
          current.push_back(line[i]);
        }
      } else {
        if (i >= n) {
          done = true;
          continue;
        }
        switch (line[i]) {
          case ' ':
          case '\n':
          case '\r':
          case '\t':
            done = true;
            break;
          case '"':
            in_dq = true;
            break;
          case '\'':
            in_sq = true;
            break;
          default:
            current.push_back(line[i]);
            break;
        }
      }
      if (i < n) i++;
    }
    out->push_back(std::move(current));
  }
}

// ---------------------------------------------------------------------------------------------
void ReplyWriter::Header(char type, int64_t n) {
  char buf[32];
  buf[0] = type;
  char* end = std::to_chars(buf + 1, buf + sizeof(buf) - 2, n).ptr;
  end[0] = '\r';
  end[1] = '\n';
  out_->append(buf, static_cast<size_t>(end + 2 - buf));
}

void ReplyWriter::SimpleString(std::string_view s) {
  out_->push_back('+');
  out_->append(s);
  out_->append("\r\n");
}

void ReplyWriter::Error(std::string_view text) {
  // As Redis: CR and LF at either end are dropped, the others become spaces (a client's
  // argument quoted in an error must not end the line early).
  while (!text.empty() && (text.front() == '\r' || text.front() == '\n')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == '\r' || text.back() == '\n')) text.remove_suffix(1);
  // An error that quotes a client's argument is no longer than kMaxErrorBytes: a 50 MB option
  // echoed whole was held as a 50 MB reply.
  const bool cut = text.size() > kMaxErrorBytes;
  if (cut) text = text.substr(0, kMaxErrorBytes - 3);
  out_->push_back('-');
  for (char c : text) out_->push_back(c == '\r' || c == '\n' ? ' ' : c);
  if (cut) out_->append("...");
  out_->append("\r\n");
}

void ReplyWriter::Integer(int64_t v) { Header(':', v); }

void ReplyWriter::Bulk(std::string_view s) {
  Header('$', static_cast<int64_t>(s.size()));
  out_->append(s);
  out_->append("\r\n");
}

void ReplyWriter::Null() { out_->append(protocol_ >= 3 ? "_\r\n" : "$-1\r\n"); }
void ReplyWriter::NullArray() { out_->append(protocol_ >= 3 ? "_\r\n" : "*-1\r\n"); }
void ReplyWriter::ArrayHeader(size_t n) { Header('*', static_cast<int64_t>(n)); }

void ReplyWriter::MapHeader(size_t n) {
  if (protocol_ >= 3) {
    Header('%', static_cast<int64_t>(n));
  } else {
    Header('*', static_cast<int64_t>(n * 2));
  }
}

void ReplyWriter::SetHeader(size_t n) {
  Header(protocol_ >= 3 ? '~' : '*', static_cast<int64_t>(n));
}

void ReplyWriter::Double(double v) {
  char buf[64];
  int len;
  if (std::isinf(v)) {
    len = std::snprintf(buf, sizeof(buf), "%s", v > 0 ? "inf" : "-inf");
  } else if (std::isnan(v)) {
    len = std::snprintf(buf, sizeof(buf), "nan");
  } else {
    len = std::snprintf(buf, sizeof(buf), "%.17g", v);
  }
  const std::string_view text(buf, static_cast<size_t>(len));
  if (protocol_ >= 3) {
    out_->push_back(',');
    out_->append(text);
    out_->append("\r\n");
  } else {
    Bulk(text);
  }
}

void ReplyWriter::Bool(bool v) {
  if (protocol_ >= 3) {
    out_->append(v ? "#t\r\n" : "#f\r\n");
  } else {
    Integer(v ? 1 : 0);
  }
}

void ReplyWriter::Verbatim(std::string_view format, std::string_view text) {
  if (protocol_ < 3) return Bulk(text);
  Header('=', static_cast<int64_t>(text.size() + format.size() + 1));
  out_->append(format);
  out_->push_back(':');
  out_->append(text);
  out_->append("\r\n");
}

// ---------------------------------------------------------------------------------------------
namespace {

constexpr int kMaxReplyDepth = 64;

Status Incomplete() { return Status::OutOfRange("incomplete reply"); }

Result<Reply> ParseAt(std::string_view buf, size_t* pos, int depth) {
  if (depth > kMaxReplyDepth) return Status::Corruption("reply nested too deeply");
  if (*pos >= buf.size()) return Incomplete();
  const char type = buf[*pos];
  const size_t cr = buf.find("\r\n", *pos);
  if (cr == std::string_view::npos) return Incomplete();
  const std::string_view line = buf.substr(*pos + 1, cr - *pos - 1);
  *pos = cr + 2;
  Reply r;
  auto length = [&](int64_t* n) -> Status {
    if (!ParseStrictInt64(line, n) || *n < -1) return Status::Corruption("bad length");
    return Status::OK();
  };
  auto bulk_body = [&](int64_t n) -> Status {
    if (buf.size() - *pos < static_cast<size_t>(n) + 2) return Incomplete();
    r.str.assign(buf.substr(*pos, static_cast<size_t>(n)));
    if (buf.substr(*pos + static_cast<size_t>(n), 2) != "\r\n") {
      return Status::Corruption("bulk not terminated by CRLF");
    }
    *pos += static_cast<size_t>(n) + 2;
    return Status::OK();
  };
  auto elements = [&](int64_t n) -> Status {
    for (int64_t i = 0; i < n; i++) {
      FLOE_ASSIGN_OR_RETURN(Reply e, ParseAt(buf, pos, depth + 1));
      r.elements.push_back(std::move(e));
    }
    return Status::OK();
  };
  int64_t n = 0;
  switch (type) {
    case '+':
      r.type = Reply::Type::kSimple;
      r.str.assign(line);
      break;
    case '-':
      r.type = Reply::Type::kError;
      r.str.assign(line);
      break;
    case ':':
      r.type = Reply::Type::kInteger;
      if (!ParseStrictInt64(line, &r.integer)) return Status::Corruption("bad integer");
      break;
    case '(':
      r.type = Reply::Type::kBigNumber;
      r.str.assign(line);
      break;
    case '_':
      r.type = Reply::Type::kNull;
      break;
    case '#':
      r.type = Reply::Type::kBool;
      if (line != "t" && line != "f") return Status::Corruption("bad boolean");
      r.integer = line == "t";
      break;
    case ',': {
      r.type = Reply::Type::kDouble;
      std::string s(line);
      if (s == "inf") {
        r.dbl = std::numeric_limits<double>::infinity();
      } else if (s == "-inf") {
        r.dbl = -std::numeric_limits<double>::infinity();
      } else if (s == "nan") {
        r.dbl = std::numeric_limits<double>::quiet_NaN();
      } else {
        char* end = nullptr;
        r.dbl = std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size()) return Status::Corruption("bad double");
      }
      break;
    }
    case '$':
    case '=':
      FLOE_RETURN_IF_ERROR(length(&n));
      if (n == -1) {
        r.type = Reply::Type::kNull;
        break;
      }
      r.type = type == '$' ? Reply::Type::kBulk : Reply::Type::kVerbatim;
      FLOE_RETURN_IF_ERROR(bulk_body(n));
      if (type == '=') {
        if (r.str.size() < 4 || r.str[3] != ':') return Status::Corruption("bad verbatim");
        r.str.erase(0, 4);
      }
      break;
    case '*':
    case '~':
    case '>':
    case '%':
      FLOE_RETURN_IF_ERROR(length(&n));
      if (n == -1) {
        r.type = Reply::Type::kNull;
        break;
      }
      r.type = type == '*'   ? Reply::Type::kArray
               : type == '~' ? Reply::Type::kSet
               : type == '>' ? Reply::Type::kPush
                             : Reply::Type::kMap;
      if (static_cast<uint64_t>(n) > buf.size()) return Incomplete();  // each element ≥ 1 byte
      FLOE_RETURN_IF_ERROR(elements(type == '%' ? n * 2 : n));
      break;
    default:
      return Status::Corruption(std::string("unknown reply type byte '") + type + "'");
  }
  return r;
}

}  // namespace

Result<Reply> ParseReply(std::string_view buf, size_t* consumed) {
  size_t pos = 0;
  FLOE_ASSIGN_OR_RETURN(Reply r, ParseAt(buf, &pos, 0));
  *consumed = pos;
  return r;
}

std::string Reply::ToString() const {
  switch (type) {
    case Type::kSimple:
      return str;
    case Type::kError:
      return "(error) " + str;
    case Type::kInteger:
      return "(integer) " + std::to_string(integer);
    case Type::kBulk:
    case Type::kVerbatim:
    case Type::kBigNumber:
      return "'" + str + "'";
    case Type::kNull:
      return "(nil)";
    case Type::kDouble: {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "(double) %.17g", dbl);
      return buf;
    }
    case Type::kBool:
      return integer ? "(true)" : "(false)";
    case Type::kArray:
    case Type::kSet:
    case Type::kPush:
    case Type::kMap: {
      std::string out = type == Type::kMap ? "{" : "[";
      for (size_t i = 0; i < elements.size(); i++) {
        if (i > 0) out += (type == Type::kMap && i % 2 == 1) ? ": " : ", ";
        out += elements[i].ToString();
      }
      out += type == Type::kMap ? "}" : "]";
      return out;
    }
  }
  return "?";
}

}  // namespace floe::resp
