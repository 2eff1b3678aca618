// The REST/JSON endpoints (docs/api.md). Every endpoint runs ordinary commands through the
// connection's own Session, so an HTTP client is held to a RESP client's rules — AUTH,
// proto-max-bulk-len, maxmemory, the cluster's routing — and its errors carry the same texts.
// JSON goes out through wire::AppendJsonString/AppendJsonDouble and comes in through
// nlohmann-json; nothing a client sent is pasted into JSON unescaped.

#include "http/internal/api.h"

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <optional>

#include "http/http.h"
#include "wire/wire.h"

namespace floe::http {

namespace internal {
namespace {

resp::Reply Decode(std::string_view bytes) {
  size_t consumed = 0;
  Result<resp::Reply> reply = resp::ParseReply(bytes, &consumed);
  if (!reply.ok()) {
    return {.type = resp::Reply::Type::kError, .str = "ERR the reply could not be decoded"};
  }
  return std::move(*reply);
}

resp::Reply Closed() {
  return {.type = resp::Reply::Type::kError, .str = "ERR the connection closed"};
}

// A value from INFO: a number when it is one, else a string.
void AppendInfoValue(std::string* out, std::string_view v) {
  bool integer = !v.empty() && v.size() <= 18;
  for (size_t i = 0; i < v.size() && integer; i++) {
    integer = (v[i] >= '0' && v[i] <= '9') || (i == 0 && v[i] == '-' && v.size() > 1);
  }
  if (integer) {
    out->append(v);
    return;
  }
  wire::AppendJsonString(out, v);
}

void Key(std::string* out, bool* first, std::string_view name) {
  if (!*first) out->push_back(',');
  *first = false;
  wire::AppendJsonString(out, name);
  out->push_back(':');
}

// Text as JSON: the string itself when it is UTF-8, else base64, with <name>_encoding saying
// which.
// The bytes wire::AppendJsonString writes for UTF-8 `text`, quotes aside: a control character
// takes six (a backslash-u escape), a quote, a backslash, newline, return or tab two, and
// everything else itself.
size_t JsonEscapedBytes(std::string_view text) {
  size_t n = 0;
  for (const char ch : text) {
    const auto c = static_cast<uint8_t>(ch);
    if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') {
      n += 2;
    } else if (c < 0x20) {
      n += 6;
    } else {
      n += 1;
    }
  }
  return n;
}

// Text goes as itself unless it is not UTF-8, or its escapes would take more than base64 does
// (a value of control bytes was six times its size: a hostile tester's 60 slow GETs of a 10 MiB
// value held 3.8 GB).
void AppendBytes(std::string* out, bool* first, std::string_view name, std::string_view bytes) {
  const bool utf8 = IsUtf8(bytes) && JsonEscapedBytes(bytes) <= (bytes.size() + 2) / 3 * 4;
  Key(out, first, name);
  wire::AppendJsonString(out, utf8 ? std::string(bytes) : Base64Encode(bytes));
  Key(out, first, std::string(name) + "_encoding");
  wire::AppendJsonString(out, utf8 ? "utf8" : "base64");
}

// A flat [name, value, ...] reply (RESP2's way of sending a map) or a map, as an object.
void AppendInfoReply(std::string* out, const resp::Reply& r) {
  using Type = resp::Reply::Type;
  const bool flat = r.type == Type::kArray && r.elements.size() % 2 == 0;
  if (r.type != Type::kMap && !flat) return AppendReplyJson(out, r);
  out->push_back('{');
  bool first = true;
  for (size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    std::string name = r.elements[i].str;
    for (char& c : name) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
      if (c == ' ') c = '_';
    }
    Key(out, &first, name);
    AppendReplyJson(out, r.elements[i + 1]);
  }
  out->push_back('}');
}

// ops/s between two successive GET /api/cluster on one engine.
struct OpsSample {
  int64_t ms = 0;
  uint64_t commands = 0;
};
Mutex ops_mu;
std::map<const server::Engine*, OpsSample>& OpsSamples() {
  static auto* samples = new std::map<const server::Engine*, OpsSample>();
  return *samples;
}

double OpsPerSecond(const server::Engine& engine, uint64_t commands) {
  const auto now = static_cast<int64_t>(NowMicros() / 1000);
  MutexLock lock(&ops_mu);
  OpsSample& s = OpsSamples()[&engine];
  double rate = 0;
  if (s.ms != 0 && now > s.ms && commands >= s.commands) {
    rate = static_cast<double>(commands - s.commands) * 1000.0 / static_cast<double>(now - s.ms);
  }
  s = {.ms = now, .commands = commands};
  return rate;
}

asio::awaitable<Result<InfoSections>> Info(Commands& c) {
  const resp::Reply r = co_await c.Run("INFO", "everything");
  if (IsError(r)) co_return Status::InvalidArgument(r.str);
  co_return ParseInfo(r.str);
}

std::string_view InfoValue(const InfoSections& info, const std::string& section,
                           std::string_view name) {
  auto it = info.find(section);
  if (it == info.end()) return {};
  for (const auto& [k, v] : it->second) {
    if (k == name) return v;
  }
  return {};
}

asio::awaitable<Response> GetCluster(server::Engine& engine, Commands& c, const Request&,
                                     const Params&, const Params&) {
  Result<InfoSections> info = co_await Info(c);
  if (!info.ok()) co_return Error(StatusForError(info.status().message()), info.status().message());
  const InfoSections& i = *info;
  std::string out = "{";
  bool first = true;
  auto field = [&](std::string_view name, const std::string& section, std::string_view info_name) {
    Key(&out, &first, name);
    const std::string_view v = InfoValue(i, section, info_name);
    v.empty() ? out.append("null") : (AppendInfoValue(&out, v), out);
  };
  field("version", "server", "floe_version");
  field("redis_version", "server", "redis_version");
  field("mode", "server", "redis_mode");
  field("uptime_seconds", "server", "uptime_in_seconds");
  field("io_threads", "server", "io_threads_active");
  field("connected_clients", "clients", "connected_clients");
  Key(&out, &first, "memory");
  out += "{";
  {
    bool f = true;
    for (auto [name, info_name] :
         {std::pair{"used", "used_memory"}, {"rss", "used_memory_rss"}, {"max", "maxmemory"}}) {
      Key(&out, &f, name);
      AppendInfoValue(&out, InfoValue(i, "memory", info_name));
    }
  }
  out += "}";
  const std::string_view db0 = InfoValue(i, "keyspace", "db0");
  Key(&out, &first, "keys");
  {
    const size_t at = db0.find("keys=");
    const std::string_view n =
        at == std::string_view::npos ? "0" : db0.substr(at + 5, db0.find(',', at) - at - 5);
    AppendInfoValue(&out, n);
  }
  field("commands_processed", "stats", "total_commands_processed");
  field("keyspace_hits", "stats", "keyspace_hits");
  field("keyspace_misses", "stats", "keyspace_misses");
  field("expired_keys", "stats", "expired_keys");
  Key(&out, &first, "ops_per_sec");
  const std::string commands(InfoValue(i, "stats", "total_commands_processed"));
  wire::AppendJsonDouble(&out, OpsPerSecond(engine, std::strtoull(commands.c_str(), nullptr, 10)));
  // INFO cluster whole (state, slots, cache, invalidations, RPC counters), and its members.
  Key(&out, &first, "cluster");
  out += "{";
  std::string members = "[";
  if (auto it = i.find("cluster"); it != i.end()) {
    bool f = true;
    for (const auto& [k, v] : it->second) {
      if (k.starts_with("member_")) {
        if (members.size() > 1) members += ",";
        members += "{";
        bool mf = true;
        Key(&members, &mf, "id");
        AppendInfoValue(&members, std::string_view(k).substr(7));
        std::string_view rest = v;
        while (!rest.empty()) {
          const size_t comma = rest.find(',');
          const std::string_view part = rest.substr(0, comma);
          rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
          const size_t eq = part.find('=');
          if (eq == std::string_view::npos) continue;
          Key(&members, &mf, part.substr(0, eq));
          AppendInfoValue(&members, part.substr(eq + 1));
        }
        members += "}";
        continue;
      }
      Key(&out, &f, k);
      AppendInfoValue(&out, v);
    }
  }
  out += "}";
  Key(&out, &first, "members");
  out += members + "]}";
  co_return Response{.body = std::move(out)};
}

constexpr int64_t kMaxScanCount = 1000;
// A string value past it is refused, not shown: as JSON it may take 6x its size (max_answer_bytes).
constexpr size_t kMaxJsonValueBytes = size_t{10} << 20;

asio::awaitable<Response> GetKeys(server::Engine&, Commands& c, const Request&, const Params&,
                                  const Params& query) {
  auto get = [&](const char* name, std::string fallback) {
    auto it = query.find(name);
    return it == query.end() || it->second.empty() ? fallback : it->second;
  };
  const std::string cursor = get("cursor", "0");
  const std::string count_text = get("count", "100");
  int64_t count = 0;
  for (char digit : count_text) {
    if (digit < '0' || digit > '9' || count > kMaxScanCount)
      co_return Error(400, "ERR count must be between 1 and 1000");
    count = count * 10 + (digit - '0');
  }
  if (count < 1 || count > kMaxScanCount)
    co_return Error(400, "ERR count must be between 1 and 1000");
  std::vector<std::string> args = {"SCAN", cursor, "COUNT", std::to_string(count)};
  if (const std::string p = get("pattern", ""); !p.empty()) {
    args.insert(args.end(), {"MATCH", p});
  }
  if (const std::string t = get("type", ""); !t.empty()) args.insert(args.end(), {"TYPE", t});
  const resp::Reply r = co_await c.RunArgs(std::move(args));
  if (IsError(r)) co_return FromError(r);
  if (r.elements.size() != 2) co_return Error(500, "ERR unexpected SCAN reply");
  std::string out = "{\"cursor\":";
  wire::AppendJsonString(&out, r.elements[0].str);
  out += ",\"keys\":[";
  bool first_key = true;
  for (const resp::Reply& k : r.elements[1].elements) {
    if (!first_key) out += ",";
    first_key = false;
    out += "{";
    bool f = true;
    AppendBytes(&out, &f, "key", k.str);
    // A failed TYPE ends the request with its error: its home is unreachable, and asking
    // again for every other key would wait a node timeout each.
    const resp::Reply type = co_await c.Run("TYPE", k.str);
    if (IsError(type)) co_return FromError(type);
    Key(&out, &f, "type");
    wire::AppendJsonString(&out, type.str);
    out += "}";
  }
  out += "]}";
  co_return Response{.body = std::move(out)};
}

asio::awaitable<Response> GetKey(server::Engine&, Commands& c, const Request&, const Params& path,
                                 const Params& query) {
  const std::string& key = path.at("key");
  const resp::Reply type = co_await c.Run("TYPE", key);
  if (IsError(type)) co_return FromError(type);
  if (type.str == "none") co_return Error(404, "ERR no such key");
  const resp::Reply pttl = co_await c.Run("PTTL", key);
  if (IsError(pttl)) co_return FromError(pttl);
  std::string out = "{";
  bool first = true;
  AppendBytes(&out, &first, "key", key);
  Key(&out, &first, "type");
  wire::AppendJsonString(&out, type.str);
  Key(&out, &first, "ttl_ms");
  out += std::to_string(pttl.integer);
  const auto item = query.find("item");
  if (type.str == "string") {
    const resp::Reply v = co_await c.Run("GET", key);
    if (IsError(v)) co_return FromError(v);
    if (v.type == resp::Reply::Type::kNull) co_return Error(404, "ERR no such key");
    if (v.str.size() > kMaxJsonValueBytes) {  // not encoded only to be refused (front_end.cc)
      co_return Error(507, "ERR the value is " + std::to_string(v.str.size()) +
                               " bytes, more than the HTTP API shows: read it over RESP");
    }
    AppendBytes(&out, &first, "value", v.str);
  } else if (type.str == "hll") {
    const resp::Reply info = co_await c.Run("HLL.INFO", key);
    if (IsError(info)) co_return FromError(info);
    Key(&out, &first, "info");
    AppendInfoReply(&out, info);
    const resp::Reply count = co_await c.Run("HLL.COUNT", key);
    if (IsError(count)) co_return FromError(count);
    Key(&out, &first, "estimate");
    wire::AppendJsonDouble(&out, count.type == resp::Reply::Type::kDouble
                                     ? count.dbl
                                     : std::strtod(count.str.c_str(), nullptr));
  } else if (type.str == "cms" || type.str == "bloom") {
    const bool cms = type.str == "cms";
    const resp::Reply info = co_await c.Run(cms ? "CMS.INFO" : "BF.INFO", key);
    if (IsError(info)) co_return FromError(info);
    Key(&out, &first, "info");
    AppendInfoReply(&out, info);
    if (item != query.end()) {
      const resp::Reply r = co_await c.Run(cms ? "CMS.QUERY" : "BF.EXISTS", key, item->second);
      if (IsError(r)) co_return FromError(r);
      Key(&out, &first, cms ? "count" : "exists");
      const resp::Reply& v = cms && !r.elements.empty() ? r.elements[0] : r;
      out += cms ? std::to_string(v.integer) : (v.integer != 0 ? "true" : "false");
    }
  }
  out += "}";
  co_return Response{.body = std::move(out)};
}

asio::awaitable<Response> PutKey(server::Engine&, Commands& c, const Request& request,
                                 const Params& path, const Params&) {
  Result<nlohmann::json> body = ParseBody(request.body);
  if (!body.ok()) co_return Error(400, body.status().message());
  const nlohmann::json& j = *body;
  if (!j.is_object() || !j.contains("value") || !j["value"].is_string()) {
    co_return Error(400, "ERR the body must be an object with a string \"value\"");
  }
  std::string value = j["value"].get<std::string>();
  if (j.contains("encoding")) {
    if (!j["encoding"].is_string()) co_return Error(400, "ERR encoding must be utf8 or base64");
    const std::string enc = j["encoding"].get<std::string>();
    if (enc == "base64") {
      Result<std::string> decoded = Base64Decode(value);
      if (!decoded.ok()) co_return Error(400, "ERR value is not valid base64");
      value = std::move(*decoded);
    } else if (enc != "utf8") {
      co_return Error(400, "ERR encoding must be utf8 or base64");
    }
  }
  std::vector<std::string> args = {"SET", path.at("key"), std::move(value)};
  if (j.contains("ttl") && !j["ttl"].is_null()) {
    if (!j["ttl"].is_number_integer()) co_return Error(400, "ERR ttl must be an integer (seconds)");
    args.insert(args.end(), {"EX", j["ttl"].dump()});  // SET checks its range, with its text
  }
  const resp::Reply r = co_await c.RunArgs(std::move(args));
  if (IsError(r)) co_return FromError(r);
  co_return Response{.body = "{\"ok\":true}"};
}

asio::awaitable<Response> DeleteKey(server::Engine&, Commands& c, const Request&,
                                    const Params& path, const Params&) {
  const resp::Reply r = co_await c.Run("DEL", path.at("key"));
  if (IsError(r)) co_return FromError(r);
  if (r.integer == 0) co_return Error(404, "ERR no such key");
  co_return Response{.body = "{\"deleted\":" + std::to_string(r.integer) + "}"};
}

asio::awaitable<Response> PostCommand(server::Engine&, Commands& c, const Request& request,
                                      const Params&, const Params&) {
  Result<nlohmann::json> body = ParseBody(request.body);
  if (!body.ok()) co_return Error(400, body.status().message());
  const nlohmann::json& j = *body;
  if (!j.is_array() || j.empty())
    co_return Error(400, "ERR the body must be a JSON array of strings");
  std::vector<std::string> args;
  args.reserve(j.size());
  for (const auto& a : j) {
    if (!a.is_string()) co_return Error(400, "ERR the body must be a JSON array of strings");
    args.push_back(a.get<std::string>());
  }
  const resp::Reply r = co_await c.RunArgs(std::move(args));
  std::string out;
  AppendReplyJson(&out, r);
  co_return Response{.status = IsError(r) ? StatusForError(r.str) : 200, .body = std::move(out)};
}

asio::awaitable<Response> GetMetrics(server::Engine& engine, Commands& c, const Request&,
                                     const Params&, const Params&) {
  Result<InfoSections> info = co_await Info(c);
  if (!info.ok()) co_return Error(StatusForError(info.status().message()), info.status().message());
  co_return Response{
      .content_type = "text/plain; version=0.0.4; charset=utf-8",
      .body = PrometheusText(*info) + PrometheusLatency(server::CommandLatencies(engine))};
}

asio::awaitable<Response> GetPage(server::Engine&, Commands&, const Request&, const Params&,
                                  const Params&) {
  co_return Response{.content_type = "text/html; charset=utf-8",
                     .body = std::string(WebPage()),
                     .headers = {{"Content-Security-Policy",
                                  "default-src 'self'; script-src 'unsafe-inline'; style-src "
                                  "'unsafe-inline'; img-src 'self' data:; frame-ancestors "
                                  "'none'"},
                                 {"X-Frame-Options", "DENY"},
                                 {"X-Content-Type-Options", "nosniff"}}};
}

struct Endpoint {
  Route route;
  Handler handler;
};
constexpr Endpoint kEndpoints[] = {
    {{"GET", "/"}, GetPage},
    {{"GET", "/api/cluster"}, GetCluster},
    {{"GET", "/api/keys"}, GetKeys},
    {{"GET", "/api/keys/{key}"}, GetKey},
    {{"PUT", "/api/keys/{key}"}, PutKey},
    {{"DELETE", "/api/keys/{key}"}, DeleteKey},
    {{"GET", "/api/frames"}, GetFrames},
    {{"POST", "/api/frames"}, PostFrame},
    {{"GET", "/api/frames/{name}"}, GetFrame},
    {{"DELETE", "/api/frames/{name}"}, DeleteFrame},
    {{"GET", "/api/frames/{name}/head"}, GetFrameHead},
    {{"POST", "/api/frames/{name}/groupby"}, PostFrameGroupBy},
    {{"POST", "/api/frames/{name}/select"}, PostFrameSelect},
    {{"POST", "/api/frames/{name}/filter"}, PostFrameFilter},
    {{"GET", "/api/frames/{name}/csv"}, GetFrameCsv},
    {{"PUT", "/api/frames/{name}/csv"}, PutFrameCsv},
    {{"GET", "/api/frames/{name}/columns/{column}/summary"}, GetColumnSummary},
    {{"GET", "/api/frames/{name}/columns/{column}/quantiles"}, GetColumnQuantiles},
    {{"GET", "/api/jobs"}, GetJobs},
    {{"GET", "/api/jobs/{id}"}, GetJob},
    {{"POST", "/api/jobs/{id}/cancel"}, CancelJob},
    {{"POST", "/api/command"}, PostCommand},
    {{"GET", "/metrics"}, GetMetrics},
};

std::vector<std::string_view> Segments(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i <= path.size()) {
    const size_t slash = path.find('/', i);
    out.push_back(
        path.substr(i, slash == std::string_view::npos ? std::string_view::npos : slash - i));
    if (slash == std::string_view::npos) break;
    i = slash + 1;
  }
  return out;
}

// Matches raw (escaped) segments against a template; the {name} segments are decoded.
Result<bool> Match(std::string_view pattern, const std::vector<std::string_view>& raw,
                   Params* params) {
  const std::vector<std::string_view> want = Segments(pattern);
  if (want.size() != raw.size()) return false;
  Params found;
  for (size_t i = 0; i < want.size(); i++) {
    if (want[i].starts_with("{")) {
      if (raw[i].empty()) return false;
      FLOE_ASSIGN_OR_RETURN(std::string v, PercentDecode(raw[i]));
      found[std::string(want[i].substr(1, want[i].size() - 2))] = std::move(v);
    } else if (want[i] != raw[i]) {
      return false;
    }
  }
  *params = std::move(found);
  return true;
}

Response Unauthorized(std::string_view message) {
  Response r = Error(401, message);
  r.headers.emplace_back("WWW-Authenticate", "Basic realm=\"floe\", charset=\"UTF-8\"");
  return r;
}

}  // namespace

// The one table from a RESP error's code word to an HTTP status.
int StatusForError(std::string_view error) {
  const std::string_view code = error.substr(0, error.find(' '));
  if (code == "NOAUTH" || code == "WRONGPASS") return 401;
  if (code == "NOPERM") return 403;
  if (code == "OOM") return 507;
  if (code == "CLUSTERDOWN" || code == "TRYAGAIN" || code == "LOADING" || code == "BUSY")
    return 503;
  if (code == "MOVED" || code == "ASK" || code == "CROSSSLOT") return 409;
  return 400;
}

Response FromError(const resp::Reply& r) { return Error(StatusForError(r.str), r.str); }

bool IsError(const resp::Reply& r) { return r.type == resp::Reply::Type::kError; }

// Request bodies nest at most this deep (the parser's own stack is bounded by it).
constexpr int kMaxJsonDepth = 16;

Result<nlohmann::json> ParseBody(std::string_view body) {
  struct TooDeep {};
  try {
    return nlohmann::json::parse(body,
                                 [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
                                   if (depth > kMaxJsonDepth) throw TooDeep{};
                                   return true;
                                 });
  } catch (const TooDeep&) {
    return Status::InvalidArgument("ERR the request body nests too deeply");
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(std::string("ERR the request body is not JSON: ") + e.what());
  }
}

Response Error(int status, std::string_view message) {
  std::string body = "{\"error\":";
  wire::AppendJsonString(&body, message);
  body += "}";
  return {.status = status, .body = std::move(body)};
}

namespace {

// The host part of a Host header value ("name:port", "[v6]:port", "name").
std::string_view HostName(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    const size_t end = host.find(']');
    return end == std::string_view::npos ? host : host.substr(1, end - 1);
  }
  const size_t colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

// A name only this machine answers to: an address literal, localhost (and names under it,
// which browsers resolve to loopback themselves), or the machine's own host name. A site that
// rebinds its name to the node's address has another name; so may a single-label name a LAN's
// name service answers (LLMNR, a DNS search domain), which is why those are not all let in.
bool AddressLiteralOrLocalName(std::string_view name) {
  while (!name.empty() && name.back() == '.') name.remove_suffix(1);  // "localhost."
  if (name.empty()) return false;
  if (EqualsIgnoreCase(name, "localhost")) return true;
  constexpr std::string_view kLocalhost = ".localhost";
  if (name.size() > kLocalhost.size() &&
      EqualsIgnoreCase(name.substr(name.size() - kLocalhost.size()), kLocalhost)) {
    return true;
  }
  std::error_code ec;
  (void)asio::ip::make_address(std::string(name), ec);
  if (!ec) return true;
  static const std::string own = [] {
    char buf[256] = {};
    return gethostname(buf, sizeof(buf) - 1) == 0 ? std::string(buf) : std::string();
  }();
  return !own.empty() && EqualsIgnoreCase(name, own);
}

}  // namespace

std::optional<Response> RefuseCrossSite(const server::Engine& engine, const Request& request) {
  // X1: browsers send Origin with every cross-site POST, PUT and DELETE (and fetches); the
  // node's own page sends its own, "http://" + the Host it was loaded from.
  if (!request.origin.empty() && request.origin != "http://" + request.host) {
    return Error(403, "ERR cross-origin request refused (Origin " + request.origin.substr(0, 128) +
                          " is not this node's)");
  }
  // X3: browsers mark what another page asked for (an <img>, a script, a no-cors fetch, a form
  // POST, a frame); same-site counts too, as another port of localhost is another program. Only
  // following a link (a GET navigation) is served: it shows the page or a reply, and runs
  // nothing that changes data.
  // An iframe or a window another page opens is a navigation too, but not of a top-level
  // document the user chose: refused, or another site could start any number of downloads.
  const bool followed_link = request.method == "GET" && request.fetch_mode == "navigate" &&
                             (request.fetch_dest.empty() || request.fetch_dest == "document");
  if ((request.fetch_site == "cross-site" || request.fetch_site == "same-site") && !followed_link) {
    return Error(403, "ERR cross-site request refused (Sec-Fetch-Site " +
                          request.fetch_site.substr(0, 32) + ")");
  }
  // X2: DNS rebinding gives another site's page the node's address under that site's name;
  // without a password the name must be one only this machine answers to.
  if (!engine.requires_auth() && !request.host.empty() &&
      !AddressLiteralOrLocalName(HostName(request.host))) {
    return Error(403, "ERR Host '" + request.host.substr(0, 128) +
                          "' refused: without requirepass the node answers only to an address, "
                          "localhost or this machine's name");
  }
  return std::nullopt;
}

std::optional<Response> Refuse(const server::Engine& engine, std::string_view authorization) {
  if (!engine.requires_auth()) return std::nullopt;
  if (authorization.empty()) return Unauthorized("NOAUTH Authentication required.");
  Result<std::string> password = PasswordFromAuthorization(authorization);
  if (!password.ok() || !engine.CheckPassword(*password)) {
    return Unauthorized("WRONGPASS invalid username-password pair or user is disabled.");
  }
  return std::nullopt;
}

Commands::Commands(server::Session* session, const asio::any_io_executor& executor)
    : session_(session), wake_(executor) {}

// How it works: the request's coroutine runs the command; when Session::Execute leaves the
// reply to come later (the key's home is another node), the coroutine parks on wake_, a timer
// that never expires by itself, and the I/O thread goes on with its other connections. The
// session's reply sink posts the reply to this thread, Deliver hands it through FinishDeferred
// and cancels the timer, and the coroutine resumes. A reply of another ticket (a split
// command's part that waited for its keys here) is finished the same way and only wakes the
// coroutine to look again: nothing runs on the session while Session::local_part_pending.
asio::awaitable<resp::Reply> Commands::RunArgs(std::vector<std::string> args) {
  if (session_ == nullptr) co_return Closed();
  std::vector<std::string_view> views(args.begin(), args.end());
  std::string out;
  if (!session_->Execute(views, &out)) {
    awaited_ = session_->last_ticket();
    reply_.reset();
    while (session_ != nullptr && !reply_) co_await Sleep();
    if (!reply_) co_return Closed();
    out = std::move(*reply_);
    reply_.reset();
  }
  while (session_ != nullptr && session_->local_part_pending()) co_await Sleep();
  co_return Decode(out);
}

void Commands::Deliver(uint64_t ticket, std::string reply) {
  if (session_ == nullptr) return;
  bool held = false;
  std::string bytes = session_->FinishDeferred(ticket, std::move(reply), &held);
  // A change that waited for its keys may then wait for its backups (docs/replication.md,
  // H3): the sink brings the same ticket again.
  if (held) {
    wake_.cancel();
    return;
  }
  if (ticket == awaited_) {
    awaited_ = 0;
    reply_ = std::move(bytes);
  }
  wake_.cancel();
}

void Commands::Detach() {
  // A task the abandoned request waits for (frames analytics) stops at its next chunk now,
  // not when the connection finally closes.
  if (session_ != nullptr) session_->state().kill_requested.store(true, std::memory_order_relaxed);
  session_ = nullptr;
  wake_.cancel();
}

asio::awaitable<void> Commands::Sleep() {
  wake_.expires_at(asio::steady_timer::time_point::max());
  std::error_code ec;  // operation_aborted: Deliver or Detach woke us
  co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<Response> Handle(server::Engine& engine, Commands& c, Request request) {
  const std::string_view url = request.url;
  const size_t q = url.find('?');
  const std::string_view path = url.substr(0, q);
  Result<Params> query =
      ParseQuery(q == std::string_view::npos ? std::string_view() : url.substr(q + 1));
  if (!query.ok()) co_return Error(400, "ERR " + std::string(query.status().message()));
  const std::vector<std::string_view> raw = Segments(path);
  const Endpoint* found = nullptr;
  bool path_known = false;
  Params params;
  for (const Endpoint& e : kEndpoints) {
    Result<bool> m = Match(e.route.path, raw, &params);
    if (!m.ok()) co_return Error(400, "ERR " + std::string(m.status().message()));
    if (!*m) continue;
    path_known = true;
    if (e.route.method == request.method) {
      found = &e;
      break;
    }
  }
  if (found == nullptr) {
    co_return path_known ? Error(405, "ERR method not allowed")
                         : Error(404, "ERR no such endpoint");
  }
  if (std::optional<Response> refused = RefuseCrossSite(engine, request)) {
    co_return std::move(*refused);
  }
  // Every request carries the password when one is set (docs/api.md, "Authentication").
  if (engine.requires_auth()) {
    if (std::optional<Response> refused = Refuse(engine, request.authorization)) {
      co_return std::move(*refused);
    }
    Result<std::string> password = PasswordFromAuthorization(request.authorization);
    if (c.session() != nullptr && !c.session()->authenticated()) {
      const resp::Reply r = co_await c.Run("AUTH", *password);
      if (IsError(r)) co_return Unauthorized(r.str);
    }
  }
  co_return co_await found->handler(engine, c, request, params, *query);
}

Response HandleNow(server::Engine& engine, server::Session& session, const Request& request) {
  asio::io_context io;
  Commands commands(&session, io.get_executor());
  Response response = Error(500, "ERR the request did not finish");
  asio::co_spawn(io, Handle(engine, commands, request),
                 [&response](std::exception_ptr failed, Response r) {
                   if (!failed) response = std::move(r);
                 });
  io.run();
  return response;
}

}  // namespace internal

std::span<const Route> Routes() {
  static const std::vector<Route> routes = [] {
    std::vector<Route> out;
    for (const internal::Endpoint& e : internal::kEndpoints) out.push_back(e.route);
    return out;
  }();
  return routes;
}

}  // namespace floe::http
