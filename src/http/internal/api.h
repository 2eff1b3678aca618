// The REST/JSON endpoints, free of sockets: a request in, a response out, commands run through
// the caller's session. front_end.cc feeds it from HTTP connections; http_test.cc calls it.

#ifndef FLOE_HTTP_INTERNAL_API_H_
#define FLOE_HTTP_INTERNAL_API_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "server/server.h"

namespace floe::http::internal {

struct Request {
  std::string method;         // "GET", ...
  std::string url;            // the request target: path and query, still escaped
  std::string authorization;  // the Authorization header, if any
  std::string body;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // beyond the usual ones
};

// {"error":"<message>"} with the given status.
Response Error(int status, std::string_view message);

// The 401 for a request whose Authorization does not carry the password (NOAUTH or
// WRONGPASS), or nothing when it does or none is needed. Thread-safe.
std::optional<Response> Refuse(const server::Engine& engine, std::string_view authorization);

// The web page served at / (web/index.html, compiled in).
std::string_view WebPage();

// Runs one request. Owned-by-one-thread like the session: call on the session's thread.
Response Handle(server::Engine& engine, server::Session& session, const Request& request);

}  // namespace floe::http::internal

#endif  // FLOE_HTTP_INTERNAL_API_H_
