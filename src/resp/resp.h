// resp: the Redis serialization protocol (RESP2 and RESP3), without knowing any command.
//
//   RequestParser   incremental parser of client requests: multibulk arrays of bulk strings and
//                   inline commands, with Redis's limits and Redis's protocol error texts
//   ReplyWriter     builds replies in RESP2 or RESP3 (maps, sets, doubles, booleans and nulls
//                   are written the way each version spells them)
//   ParseReply      decodes any RESP2/RESP3 reply into a tree, for tests and tools
//
// Thread rules: all classes are thread-compatible; a connection owns its parser and writer.

#ifndef FLOE_RESP_RESP_H_
#define FLOE_RESP_RESP_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"

namespace floe::resp {

// The longest error text a reply carries (ReplyWriter::Error).
inline constexpr size_t kMaxErrorBytes = 4096;

struct Limits {
  // Longest bulk string a client may send (Redis's proto-max-bulk-len). Default 512 MiB.
  uint64_t max_bulk_len = 512ull << 20;
  // Most arguments in one multibulk request. Default 1,048,576.
  uint64_t max_args = 1ull << 20;
  // Longest inline request, and longest "*<n>" / "$<n>" header line. Default 64 KiB.
  size_t max_inline = 64 * 1024;
  // A client that has not authenticated yet (a password is required) may send at most
  // kUnauthenticatedMaxArgs arguments of at most kUnauthenticatedMaxBulk bytes each, as in
  // Redis 7: nobody can make the server buffer large requests before AUTH.
  bool unauthenticated = false;
  static constexpr int64_t kUnauthenticatedMaxArgs = 10;
  static constexpr int64_t kUnauthenticatedMaxBulk = 16 * 1024;
};

// Parses requests from a byte stream that arrives in pieces. The caller keeps the unconsumed
// bytes in one buffer: after Parse returns kNeedMore it appends what arrives and calls Parse
// again with the buffer from the same starting point; the parser resumes where it stopped
// instead of starting over, so a huge argument arriving slowly costs linear time.
class RequestParser {
 public:
  explicit RequestParser(const Limits& limits = Limits()) : limits_(limits) {}

  enum class Outcome : uint8_t {
    kCommand,   // *args holds a command; *consumed bytes of the buffer belong to it
    kNeedMore,  // the buffer holds an incomplete request
    kError,     // protocol error: *error holds Redis's text (without "ERR "); close the client
  };

  // `buf` starts at the first byte not yet consumed. On every outcome *consumed is the number of
  // leading bytes the caller may now drop (on kNeedMore: empty requests skipped so far). On
  // kCommand the views in *args point into `buf` (or, for inline commands, into the parser) and
  // stay valid until the next call or until the caller drops those bytes. Empty requests (a
  // blank inline line, "*0") are skipped silently.
  Outcome Parse(std::string_view buf, std::vector<std::string_view>* args, size_t* consumed,
                std::string* error);

  // Forgets a request in progress, so that the next Parse starts at a request boundary (the
  // caller stopped running a batch early and will parse the rest of its input again).
  void Restart() { Reset(); }

  void set_limits(const Limits& limits) { limits_ = limits; }
  const Limits& limits() const { return limits_; }
  // Bytes the parser wants before it can make progress: a hint for buffer sizing, announced
  // by the client and therefore never a reason to allocate by itself.
  size_t wanted() const { return wanted_; }

 private:
  Outcome ParseInline(std::string_view buf, std::vector<std::string_view>* args, size_t* consumed,
                      std::string* error);
  void Reset();

  Limits limits_;
  // Multibulk progress, as offsets from the start of the request.
  bool in_multibulk_ = false;
  int64_t remaining_args_ = 0;
  size_t pos_ = 0;
  std::vector<std::pair<size_t, size_t>> spans_;  // offset, length of each parsed argument
  std::vector<std::string> inline_args_;
  size_t wanted_ = 0;
};

// A connection's unconsumed input bytes. It grows geometrically as bytes arrive -- never to a
// size a client merely announces in a "$<len>" header -- and never writes the bytes it has not
// received (no zero fill), so a client costs memory in proportion to what it actually sent, as
// Redis's query buffer does. Thread-compatible; a connection owns its buffer.
class InputBuffer {
 public:
  // `chunk`: the smallest read; `limit`: the most unconsumed bytes the buffer will hold
  // (Redis's client-query-buffer-limit, 1 GiB).
  explicit InputBuffer(size_t chunk = 16 * 1024, size_t limit = size_t{1} << 30)
      : chunk_(chunk), limit_(limit) {}

  // The unconsumed bytes. Valid until the next PrepareRead or ShrinkIfIdle.
  std::string_view data() const { return {buf_.get() + begin_, end_ - begin_}; }
  size_t size() const { return end_ - begin_; }
  // Bytes allocated (what the connection charges to used memory).
  size_t capacity() const { return capacity_; }

  // Room for the next read. `wanted` (the parser's hint) may let the buffer grow up to the end
  // of the request being received, but it grows at most to twice its size per call, so memory
  // follows the bytes that arrived. Empty when the unconsumed bytes have reached the limit or
  // memory cannot be had: the caller closes the client.
  std::span<char> PrepareRead(size_t wanted);
  // `n` bytes were written into the span PrepareRead returned.
  void Commit(size_t n) { end_ += n; }
  // The first `n` unconsumed bytes are done with.
  void Consume(size_t n);
  // With nothing pending, gives back everything beyond one chunk (a large request is over).
  void ShrinkIfIdle();

 private:
  // Storage: small buffers from the allocator, large ones mapped directly, so that freeing a
  // large buffer returns its pages to the system at once (an allocator may keep them).
  struct Release {
    size_t bytes;
    void operator()(char* p) const;
  };
  using Storage = std::unique_ptr<char[], Release>;
  static Storage Allocate(size_t bytes);

  size_t chunk_, limit_;
  Storage buf_{nullptr, Release{0}};
  size_t capacity_ = 0;
  size_t begin_ = 0, end_ = 0;  // unconsumed bytes are buf_[begin_, end_)
};

// Splits an inline command line the way Redis's sdssplitargs does: whitespace separates
// arguments (a NUL byte is an ordinary byte of an argument); "double quotes" take \n \r \t \b \a
// \\ \" and \xHH escapes; 'single quotes' take
// \'. A closing quote must be followed by whitespace or the end. False on unbalanced quotes.
bool SplitInlineArgs(std::string_view line, std::vector<std::string>* out);

// Appends RESP replies to a caller-owned string, in the protocol version the client chose.
class ReplyWriter {
 public:
  explicit ReplyWriter(std::string* out, int protocol = 2) : out_(out), protocol_(protocol) {}

  int protocol() const { return protocol_; }
  void set_protocol(int protocol) { protocol_ = protocol; }
  std::string* buffer() { return out_; }

  void SimpleString(std::string_view s);  // +s
  // -<text>; `text` starts with the error code ("ERR ...", "WRONGTYPE ..."). Newlines in it are
  // replaced by spaces so the reply stays one line.
  // "-text\r\n": CR and LF inside become spaces; at most kMaxErrorBytes of text (cut with
  // "...").
  void Error(std::string_view text);
  void Integer(int64_t v);
  void Bulk(std::string_view s);
  void Null();       // RESP2: $-1   RESP3: _
  void NullArray();  // RESP2: *-1   RESP3: _
  void ArrayHeader(size_t n);
  void MapHeader(size_t n);  // n key/value pairs. RESP2: an array of 2n
  void SetHeader(size_t n);  // RESP2: an array
  // RESP3: ,<double>. RESP2: a bulk string. Formatted as Redis 7.0 does ("%.17g"; inf, -inf,
  // nan), so replies compare byte for byte.
  void Double(double v);
  void Bool(bool v);  // RESP3: #t/#f. RESP2: :1/:0
  // RESP3: =<len>\r\n<fmt>:<text>. RESP2: a bulk string of `text`.
  void Verbatim(std::string_view format, std::string_view text);
  void Ok() { out_->append("+OK\r\n"); }

 private:
  void Header(char type, int64_t n);
  std::string* out_;
  int protocol_;
};

// A decoded reply, for tests and tools.
struct Reply {
  enum class Type : uint8_t {
    kSimple,
    kError,
    kInteger,
    kBulk,
    kNull,
    kArray,
    kMap,
    kSet,
    kDouble,
    kBool,
    kVerbatim,
    kBigNumber,
    kPush,
  };
  Type type = Type::kNull;
  std::string str;              // simple, error, bulk, verbatim (without the format), big number
  int64_t integer = 0;          // integer, bool (0/1)
  double dbl = 0;               // double
  std::vector<Reply> elements;  // array, set, push; map: key, value, key, value, ...

  bool operator==(const Reply&) const = default;
  // A compact rendering for test failure messages: 'str', (integer) 5, [a, b], {k: v}, (nil)...
  std::string ToString() const;
};

// Decodes one reply from the start of `buf`. Corruption on malformed input; OutOfRange when the
// input ends early (more bytes may complete it). Nesting is bounded (64 levels).
Result<Reply> ParseReply(std::string_view buf, size_t* consumed);

}  // namespace floe::resp

#endif  // FLOE_RESP_RESP_H_
