// The REST/JSON endpoints, free of sockets: a request in, a response out, commands run through
// the caller's session. front_end.cc feeds it from HTTP connections; http_test.cc calls it.

#ifndef FLOE_HTTP_INTERNAL_API_H_
#define FLOE_HTTP_INTERNAL_API_H_

#include <asio.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/server.h"

namespace floe::http::internal {

struct Request {
  std::string method;         // "GET", ...
  std::string url;            // the request target: path and query, still escaped
  std::string authorization;  // the Authorization header, if any
  std::string host;           // the Host header, if any
  std::string origin;         // the Origin header, if any (browsers send it cross-site)
  std::string fetch_site;     // Sec-Fetch-Site, if any ("cross-site", "same-origin", ...)
  std::string fetch_mode;     // Sec-Fetch-Mode, if any ("navigate", "no-cors", ...)
  std::string fetch_dest;     // Sec-Fetch-Dest, if any ("document", "iframe", "image", ...)
  std::string body;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // beyond the usual ones
  // A body too large to build whole (a frame as CSV), made a piece at a time while it is sent
  // with chunked transfer encoding (front_end.cc); `body` is unused then. Each call appends the
  // next piece (about kStreamPiece bytes, at most kMaxStreamPiece) to *out and says whether
  // more follows, or returns an error: the body cannot go on (the connection is then closed
  // without the last chunk, which clients see as an incomplete body). Called by the I/O thread
  // (`on_io_thread`), it writes only lines of at most kInlineLine bytes: before a line that may
  // be wider it stops with kWide, and the piece is finished by a call off the I/O thread
  // (docs/api.md, "Made off the I/O thread"). It holds what it reads (a pinned frame) until the
  // response is sent or its client gone.
  enum class Piece : uint8_t { kMore, kLast, kWide };
  std::function<Result<Piece>(std::string* out, bool on_io_thread)> stream;
};
// The widest line the I/O thread makes itself (a line's bound, CsvWriter::Next's max_line).
inline constexpr size_t kInlineLine = size_t{256} << 10;
// The size a streamed response's pieces are made to: what a response holds at once, beyond one
// line of its content.
inline constexpr size_t kStreamPiece = size_t{64} << 10;
// A piece is never larger: a CSV line wider than this ends the download (an answer's bound,
// Limits::max_answer_bytes).
inline constexpr size_t kMaxStreamPiece = size_t{64} << 20;
// SO_SNDBUF of a connection that streams an answer (the kernel doubles it for its bookkeeping).
inline constexpr int kStreamSendBuffer = 128 << 10;
// Under maxmemory, a piece's last line may take what is left below it, but at least this much,
// so small rows stream at the limit (a reply's worth, as RESP answers GET there).
inline constexpr size_t kMinStreamLine = size_t{1} << 20;

// Rules X1-X3 (docs/api.md, "Cross-site requests"): a browser page of another site must not make
// the node run or answer anything (X1: an Origin that is not the node's own is refused; X3: a
// request a browser marks cross-site or same-site is refused unless it is a GET navigation of a
// top-level document), and
// a name that resolves to the node's address must not make it another site's (X2: without a
// password, the Host must be an address literal, localhost or this machine's own name). 403 with
// the reason, or nothing.
std::optional<Response> RefuseCrossSite(const server::Engine& engine, const Request& request);

// ASCII letters compared case-insensitively (header names, host names).
inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    const char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] + 32) : a[i];
    const char y = b[i] >= 'A' && b[i] <= 'Z' ? static_cast<char>(b[i] + 32) : b[i];
    if (x != y) return false;
  }
  return true;
}

// {"error":"<message>"} with the given status.
Response Error(int status, std::string_view message);
// The one table from a RESP error's code word to an HTTP status (docs/api.md, "Errors").
int StatusForError(std::string_view error);
// Error(StatusForError(r.str), r.str).
Response FromError(const resp::Reply& r);
bool IsError(const resp::Reply& r);
// A request body as JSON, nesting bounded; InvalidArgument with the text to send otherwise.
Result<nlohmann::json> ParseBody(std::string_view body);

// The 401 for a request whose Authorization does not carry the password (NOAUTH or
// WRONGPASS), or nothing when it does or none is needed. Thread-safe.
std::optional<Response> Refuse(const server::Engine& engine, std::string_view authorization);

// Uploads (PUT /api/frames/{name}/csv) are written under <import-dir>/.http-uploads-<port>;
// "" when import-dir is not set. One directory per node, so that CleanUploads, run as the
// front end opens, removes only this node's leftovers (a node killed before its import ended).
std::string UploadDir(const server::Config& config);
void CleanUploads(const server::Config& config);

// The web page served at / (web/index.html, compiled in).
std::string_view WebPage();

// How a request's commands reach its connection's session, without holding the I/O thread
// while a command waits for another node (api.cc, "How it works"). Owned by the connection's
// thread, like the session.
class Commands {
 public:
  // `executor`: the session's thread. The session, when it has a reply sink, must hand each
  // reply to Deliver on that thread.
  Commands(server::Session* session, const asio::any_io_executor& executor);
  // Runs one command and returns its reply, decoded. After Detach: an error reply.
  asio::awaitable<resp::Reply> RunArgs(std::vector<std::string> args);
  // Run("TYPE", key): the words as they are. (Not a braced list: GCC 12 cannot keep an
  // initializer_list's array across a co_await, "array used as initializer".)
  template <typename... Words>
  asio::awaitable<resp::Reply> Run(const Words&... words) {
    return RunArgs(std::vector<std::string>{std::string(words)...});
  }
  // A deferred reply from the session's sink.
  void Deliver(uint64_t ticket, std::string reply);
  // The connection closed: its session goes; a command waiting ends with an error reply.
  void Detach();
  server::Session* session() const { return session_; }
  // The session's thread (work that outlives the request runs there).
  asio::any_io_executor executor() { return wake_.get_executor(); }

 private:
  asio::awaitable<void> Sleep();

  server::Session* session_;
  asio::steady_timer wake_;
  uint64_t awaited_ = 0;  // the ticket of the reply Run waits for
  std::optional<std::string> reply_;
};

// Decoded {name} segments of the path, or the query string's names and values.
using Params = std::map<std::string, std::string>;
// An endpoint: the request, its path's parameters and its query.
using Handler = asio::awaitable<Response> (*)(server::Engine&, Commands&, const Request&,
                                              const Params& path, const Params& query);

// Frames and jobs (frames_api.cc, docs/api.md "Frames" and "Jobs").
asio::awaitable<Response> GetFrames(server::Engine&, Commands&, const Request&, const Params&,
                                    const Params&);
asio::awaitable<Response> PostFrame(server::Engine&, Commands&, const Request&, const Params&,
                                    const Params&);
asio::awaitable<Response> PostFrameGroupBy(server::Engine&, Commands&, const Request&,
                                           const Params&, const Params&);
asio::awaitable<Response> PostFrameSelect(server::Engine&, Commands&, const Request&, const Params&,
                                          const Params&);
asio::awaitable<Response> PostFrameFilter(server::Engine&, Commands&, const Request&, const Params&,
                                          const Params&);
asio::awaitable<Response> PutFrameCsv(server::Engine&, Commands&, const Request&, const Params&,
                                      const Params&);
asio::awaitable<Response> GetFrameCsv(server::Engine&, Commands&, const Request&, const Params&,
                                      const Params&);
asio::awaitable<Response> GetFrame(server::Engine&, Commands&, const Request&, const Params&,
                                   const Params&);
asio::awaitable<Response> DeleteFrame(server::Engine&, Commands&, const Request&, const Params&,
                                      const Params&);
asio::awaitable<Response> GetFrameHead(server::Engine&, Commands&, const Request&, const Params&,
                                       const Params&);
asio::awaitable<Response> GetColumnSummary(server::Engine&, Commands&, const Request&,
                                           const Params&, const Params&);
asio::awaitable<Response> GetColumnQuantiles(server::Engine&, Commands&, const Request&,
                                             const Params&, const Params&);
asio::awaitable<Response> GetJobs(server::Engine&, Commands&, const Request&, const Params&,
                                  const Params&);
asio::awaitable<Response> GetJob(server::Engine&, Commands&, const Request&, const Params&,
                                 const Params&);
asio::awaitable<Response> CancelJob(server::Engine&, Commands&, const Request&, const Params&,
                                    const Params&);

// Runs one request on the session's thread; commands that wait for another node suspend it
// (Commands), they never block the thread.
// The request is the coroutine's own: a connection closed meanwhile (CLIENT KILL, a client
// that left, the deadline) cannot pull it from under a suspended handler.
asio::awaitable<Response> Handle(server::Engine& engine, Commands& commands, Request request);
// The same, run to its end on the caller's thread with a session that has no reply sink (its
// commands wait for other nodes in Execute): for tests.
Response HandleNow(server::Engine& engine, server::Session& session, const Request& request);

}  // namespace floe::http::internal

#endif  // FLOE_HTTP_INTERNAL_API_H_
