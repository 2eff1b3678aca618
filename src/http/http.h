// http: the node's HTTP front end — a REST/JSON API over the same engine RESP clients use,
// Prometheus metrics and a web page at / (docs/api.md).
//
//   Attach      adds the front end to a server::Server before it runs: HTTP connections live
//               on the node's own I/O threads (its asio::io_contexts), parsed by Debian's
//               http-parser, so RESP and HTTP share one runtime (docs/api.md, "Why this
//               library")
//   Routes      the table of endpoints (method, path template); docs/openapi.json lists the same
//   the pieces  strict URL decoding, query strings, Authorization, RESP reply -> JSON, INFO ->
//               Prometheus text: pure functions, unit-tested and fuzzed (fuzz/http_fuzz.cc)
//
// Threads: each HTTP connection belongs to the I/O thread that owns its socket, and runs its
// commands through its own server::Session on that thread, exactly as a RESP connection does
// (AUTH, limits, CLIENT LIST); a command that waits for another node suspends the request,
// not the thread (its reply comes back through the session's reply sink). The pure functions
// are thread-safe.

#ifndef FLOE_HTTP_HTTP_H_
#define FLOE_HTTP_HTTP_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "resp/resp.h"
#include "server/server.h"

namespace floe::http {

// What a client controls is bounded (docs/api.md, "Limits").
struct Limits {
  size_t max_header_bytes = 16 * 1024;  // request line + headers; more: 431
  // An answer's body past it is replaced by a 507 (JSON may be 6x its value: control bytes
  // become \u00XX), so one request cannot make the node hold gigabytes for a slow reader.
  size_t max_answer_bytes = size_t{64} << 20;
  size_t max_connections = 1024;     // HTTP connections at once; more: 503 (and maxclients)
  int64_t read_timeout_ms = 10'000;  // a started request must be complete by then: 408
  int64_t idle_timeout_ms = 60'000;  // a keep-alive connection idle this long is closed
  // The body's limit is the engine's proto-max-bulk-len (413 above it), read per request.
};

struct Options {
  std::vector<std::string> bind = {"127.0.0.1"};  // addresses (server::BindAddresses)
  int port = 0;                                   // 0 picks a free port (see bound_port)
  // When the port cannot be bound: true fails Server::Run, false logs a warning and serves
  // RESP alone (the derived default port, http-port -1, must not stop a node from starting).
  bool required = true;
  Limits limits;
};

// Adds the HTTP front end to `server`; it listens once Run() starts. REQUIRES: before Run().
// The returned pointer (owned by the server) stays valid while the server exists; its
// bound_port() is the port bound, valid once Run() has bound it (0 if none).
class FrontEndInfo {
 public:
  virtual ~FrontEndInfo() = default;
  virtual int bound_port() const = 0;
};
const FrontEndInfo* Attach(server::Server& server, Options options);

// What `floe serve` attaches for `config` (app/main.cc): http-port, http-bind and the
// timeouts; none when HTTP is off. http-port 0 is off; the default, -1, derives port + 1000,
// and when that is no TCP port (port above 64535, or port 0: a random one) HTTP is off with
// one log line saying so and how to turn it on. (An explicit http-port out of range never
// gets here: the settings table refuses it at start.)
std::optional<Options> ServeOptions(const server::Config& config);

// ---------------------------------------------------------------------------------------------
// The routes.

struct Route {
  std::string_view method;  // GET, PUT, DELETE, POST
  std::string_view path;    // a template: "/api/keys/{key}"; {name} matches one non-empty segment
};
// Every endpoint the front end serves, in docs/openapi.json's order.
std::span<const Route> Routes();

// ---------------------------------------------------------------------------------------------
// Pure functions (thread-safe), each bounded by its input's size.

// Decodes %XX escapes strictly: '%' must be followed by two hex digits, else InvalidArgument.
// `plus_is_space`: form encoding ('+' is ' '), for query strings only.
Result<std::string> PercentDecode(std::string_view text, bool plus_is_space = false);
// Splits a query string ("a=1&b=%20") into decoded names and values; a repeated name keeps its
// last value. InvalidArgument on a bad escape.
Result<std::map<std::string, std::string>> ParseQuery(std::string_view query);
// Standard base64 (RFC 4648, with padding).
std::string Base64Encode(std::string_view bytes);
// Strict: the standard alphabet, length a multiple of 4, padding only at the end.
Result<std::string> Base64Decode(std::string_view text);
// The password an Authorization header carries: "Bearer <password>", or "Basic base64(user:
// password)" with any user name (Redis's requirepass has the one user "default"). NotFound
// when the header holds neither.
Result<std::string> PasswordFromAuthorization(std::string_view header);
// True if `bytes` is valid UTF-8 (a string value can then be shown as text).
bool IsUtf8(std::string_view bytes);
// A RESP reply as JSON: arrays and sets as arrays, maps as objects, null as null, integers as
// numbers, bulk and simple strings as strings (bytes that are not UTF-8 become U+FFFD), errors
// as {"error":"<the RESP text>"}.
void AppendReplyJson(std::string* out, const resp::Reply& reply);
// INFO's text ("# Section" headers, "name:value" lines) as sections of (name, value).
using InfoSections = std::map<std::string, std::vector<std::pair<std::string, std::string>>>;
InfoSections ParseInfo(std::string_view info);
// Prometheus text exposition format 0.0.4 for INFO's numbers (docs/api.md, "/metrics").
std::string PrometheusText(const InfoSections& info);
// The per-command latency histograms (server::CommandLatencies) as one Prometheus histogram
// family, floe_command_latency_seconds{command}: cumulative buckets at every power of two
// nanoseconds from 256 ns to 2^35 ns, then +Inf, _sum and _count.
std::string PrometheusLatency(std::span<const server::CommandLatency> latencies);

}  // namespace floe::http

#endif  // FLOE_HTTP_HTTP_H_
