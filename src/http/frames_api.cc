// The frame and job endpoints (docs/api.md, "Frames" and "Jobs"). Each runs the FRAME.* and
// JOB.* commands through the request's session, so their checks (names, --import-dir, n,
// BINS, p, job ids), their bounds and their error texts are the commands' own; this file only
// shapes their replies as JSON objects. Replies come in either protocol: a RESP3 map or RESP2's
// flat name/value array, and RESP2's doubles as bulk strings, which become JSON numbers here.

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "frame/frame.h"
#include "http/internal/api.h"
#include "job/job.h"

namespace floe::http::internal {

namespace {

// Ordered: fields go out in the commands' order.
using Json = nlohmann::ordered_json;
using Type = resp::Reply::Type;

// FRAME.LIST sends every name; the endpoint sends at most this many (and says so).
constexpr size_t kMaxFramesListed = 10'000;

Response Ok(const Json& j, int status = 200) {
  // Frame names, column names and cells are client bytes: invalid UTF-8 becomes U+FFFD.
  return {.status = status, .body = j.dump(-1, ' ', false, Json::error_handler_t::replace)};
}

// "no such frame" and "no such job" are the 404s; the rest follow the one table (api.cc).
Response Failed(const resp::Reply& r) {
  if (r.str == "ERR no such frame" || r.str == "ERR no such job") return Error(404, r.str);
  return FromError(r);
}

// A double sent as text (RESP2) or as a double (RESP3); not a number at all: null. JSON has no
// infinity nor NaN: they are the strings "Infinity", "-Infinity" and "NaN" (JavaScript's
// Number() and Python's float() read them), so an infinite minimum is not taken for "no value".
Json Number(const resp::Reply& r) {
  double v = 0;
  if (r.type == Type::kDouble) {
    v = r.dbl;
  } else if (r.type == Type::kInteger) {
    return r.integer;
  } else if (r.type == Type::kBulk || r.type == Type::kSimple) {
    const char* begin = r.str.data();
    const char* end = begin + r.str.size();
    auto [at, ec] = std::from_chars(begin, end, v);
    if (ec != std::errc() || at != end) return nullptr;
  } else {
    return nullptr;
  }
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return v;
}

Json Value(const resp::Reply& r);

// A map (RESP3) or a flat name/value array (RESP2) as an object.
Json Object(const resp::Reply& r) {
  Json out = Json::object();
  if (r.type != Type::kMap && r.type != Type::kArray) return out;
  for (size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    out[r.elements[i].str] = Value(r.elements[i + 1]);
  }
  return out;
}

Json Value(const resp::Reply& r) {
  switch (r.type) {
    case Type::kInteger:
      return r.integer;
    case Type::kNull:
      return nullptr;
    case Type::kBool:
      return r.integer != 0;
    case Type::kDouble:
      return Number(r);
    case Type::kMap:
      return Object(r);
    case Type::kArray:
    case Type::kSet:
    case Type::kPush: {
      Json a = Json::array();
      for (const resp::Reply& e : r.elements) a.push_back(Value(e));
      return a;
    }
    default:
      return r.str;
  }
}

// Fields that the commands send as doubles (RESP2: as text) become numbers.
void Numbers(const resp::Reply& reply, Json* j, std::initializer_list<std::string_view> names) {
  if (reply.type != Type::kMap && reply.type != Type::kArray) return;
  for (size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
    const resp::Reply& v = reply.elements[i + 1];
    for (std::string_view name : names) {
      if (reply.elements[i].str != name) continue;
      if (v.type == Type::kArray) {
        Json a = Json::array();
        for (const resp::Reply& e : v.elements) a.push_back(Number(e));
        (*j)[std::string(name)] = std::move(a);
      } else if (v.type != Type::kNull) {
        (*j)[std::string(name)] = Number(v);
      }
    }
  }
}

// FRAME.INFO's reply, its vecs as objects.
Json FrameObject(const resp::Reply& r) {
  Json j = Object(r);
  for (size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    if (r.elements[i].str != "vecs") continue;
    Json vecs = Json::array();
    for (const resp::Reply& v : r.elements[i + 1].elements) vecs.push_back(Object(v));
    j["vecs"] = std::move(vecs);
  }
  return j;
}

Json JobObject(const resp::Reply& r) {
  Json j = Object(r);
  Numbers(r, &j, {"percent"});
  return j;
}

// A started job's answer: 202, its status, and its Location.
asio::awaitable<Response> JobAccepted(Commands& c, int64_t job) {
  const std::string id = std::to_string(job);
  const resp::Reply status = co_await c.Run("JOB.STATUS", id);
  if (IsError(status)) co_return Failed(status);
  Response out = Ok(JobObject(status), 202);
  out.headers.emplace_back("Location", "/api/jobs/" + id);
  co_return out;
}

// The job's id as the commands take it: digits only here, so a path segment is never read as
// a command's other argument; JOB.* checks the range.
bool JobIdSegment(const std::string& id) {
  return !id.empty() && id.size() <= 20 && id.find_first_not_of("0123456789") == std::string::npos;
}

}  // namespace

asio::awaitable<Response> GetFrames(server::Engine&, Commands& c, const Request&, const Params&,
                                    const Params&) {
  const resp::Reply r = co_await c.Run("FRAME.LIST");
  if (IsError(r)) co_return Failed(r);
  Json names = Json::array();
  for (size_t i = 0; i < r.elements.size() && i < kMaxFramesListed; i++) {
    names.push_back(r.elements[i].str);
  }
  co_return Ok({{"frames", std::move(names)}, {"truncated", r.elements.size() > kMaxFramesListed}});
}

asio::awaitable<Response> GetFrame(server::Engine&, Commands& c, const Request&, const Params& path,
                                   const Params&) {
  const resp::Reply r = co_await c.Run("FRAME.INFO", path.at("name"));
  if (IsError(r)) co_return Failed(r);
  co_return Ok(FrameObject(r));
}

asio::awaitable<Response> DeleteFrame(server::Engine&, Commands& c, const Request&,
                                      const Params& path, const Params&) {
  const resp::Reply r = co_await c.Run("FRAME.DROP", path.at("name"));
  if (IsError(r)) co_return Failed(r);
  if (r.integer == 0) co_return Error(404, "ERR no such frame");
  co_return Ok({{"deleted", r.integer}});
}

// ?n= rows (FRAME.HEAD: default 10, 0..1000): the column names and the rows, NA as null.
asio::awaitable<Response> GetFrameHead(server::Engine&, Commands& c, const Request&,
                                       const Params& path, const Params& query) {
  std::vector<std::string> args = {"FRAME.HEAD", path.at("name")};
  if (auto n = query.find("n"); n != query.end()) args.push_back(n->second);
  const resp::Reply r = co_await c.RunArgs(std::move(args));
  if (IsError(r)) co_return Failed(r);
  if (r.elements.empty()) co_return Error(500, "ERR unexpected FRAME.HEAD reply");
  Json rows = Json::array();
  for (size_t i = 1; i < r.elements.size(); i++) rows.push_back(Value(r.elements[i]));
  co_return Ok({{"columns", Value(r.elements[0])}, {"rows", std::move(rows)}});
}

// ?bins= (FRAME.SUMMARY's BINS, 1..10000).
asio::awaitable<Response> GetColumnSummary(server::Engine&, Commands& c, const Request&,
                                           const Params& path, const Params& query) {
  std::vector<std::string> args = {"FRAME.SUMMARY", path.at("name"), path.at("column")};
  if (auto bins = query.find("bins"); bins != query.end()) {
    args.insert(args.end(), {"BINS", bins->second});
  }
  const resp::Reply r = co_await c.RunArgs(std::move(args));
  if (IsError(r)) co_return Failed(r);
  Json j = Object(r);
  Numbers(r, &j, {"min", "max", "mean", "sd", "bin_starts"});
  co_return Ok(j);
}

// ?p=0.5,0.99 (FRAME.QUANTILE: each in [0, 1], at most 100).
asio::awaitable<Response> GetColumnQuantiles(server::Engine&, Commands& c, const Request&,
                                             const Params& path, const Params& query) {
  auto p = query.find("p");
  if (p == query.end() || p->second.empty()) co_return Error(400, "ERR p is required: p=0.5,0.9");
  std::vector<std::string> args = {"FRAME.QUANTILE", path.at("name"), path.at("column")};
  std::string_view list = p->second;
  while (true) {
    const size_t comma = list.find(',');
    args.emplace_back(list.substr(0, comma));
    // The command refuses more than 100; stop splitting soon after, whatever the URL holds.
    if (comma == std::string_view::npos || args.size() > 3 + 101) break;
    list.remove_prefix(comma + 1);
  }
  const resp::Reply r = co_await c.RunArgs(std::move(args));
  if (IsError(r)) co_return Failed(r);
  Json out = Json::array();
  for (const resp::Reply& q : r.elements) out.push_back(Number(q));
  co_return Ok({{"quantiles", std::move(out)}});
}

namespace {

// FRAME.IMPORT's arguments from the body {"name", "path", "sep", "header": bool, "types": [..],
// "na": [..], "replace": bool}; InvalidArgument with the text to send. A relative path is taken
// under --import-dir (the command takes it under the working directory): a page's user knows
// the import dir, not where the node was started.
Result<std::vector<std::string>> ImportArgs(const server::Engine&, std::string_view body) {
  FLOE_ASSIGN_OR_RETURN(nlohmann::json j, ParseBody(body));
  auto text = [&](const char* name) { return j.contains(name) && j[name].is_string(); };
  if (!j.is_object() || !text("name") || !text("path")) {
    return Status::InvalidArgument(
        "ERR the body must be an object with string \"name\" and \"path\"");
  }
  // A relative path is taken under import-dir by FRAME.IMPORT itself.
  std::vector<std::string> args = {"FRAME.IMPORT", j["name"].get<std::string>(),
                                   j["path"].get<std::string>()};
  for (const auto& [field, value] : j.items()) {
    if (field == "name" || field == "path") continue;
    if (field == "sep") {
      if (!value.is_string()) return Status::InvalidArgument("ERR sep must be a string");
      args.insert(args.end(), {"SEP", value.get<std::string>()});
    } else if (field == "header") {
      if (!value.is_boolean()) return Status::InvalidArgument("ERR header must be true or false");
      args.insert(args.end(), {"HEADER", value.get<bool>() ? "yes" : "no"});
    } else if (field == "types" || field == "na") {
      const std::string not_strings = "ERR " + field + " must be an array of strings";
      if (!value.is_array()) return Status::InvalidArgument(not_strings);
      std::string joined;
      bool first = true;
      for (const nlohmann::json& v : value) {
        if (!v.is_string()) return Status::InvalidArgument(not_strings);
        const std::string s = v.get<std::string>();
        if (s.find(',') != std::string::npos) {
          return Status::InvalidArgument("ERR " + field + " entries cannot hold a comma");
        }
        if (!first) joined += ",";
        first = false;
        joined += s;
      }
      args.insert(args.end(), {field == "types" ? "TYPES" : "NA", joined});
    } else if (field == "replace") {
      if (!value.is_boolean()) return Status::InvalidArgument("ERR replace must be true or false");
      if (value.get<bool>()) args.emplace_back("REPLACE");
    } else {
      return Status::InvalidArgument("ERR unknown field '" + field.substr(0, 64) + "'");
    }
  }
  return args;
}

}  // namespace

// FRAME.IMPORT (ImportArgs); the job's status comes back with 202 and its Location.
asio::awaitable<Response> PostFrame(server::Engine& engine, Commands& c, const Request& request,
                                    const Params&, const Params&) {
  Result<std::vector<std::string>> args = ImportArgs(engine, request.body);
  if (!args.ok()) co_return Error(400, args.status().message());
  const resp::Reply r = co_await c.RunArgs(std::move(*args));
  if (IsError(r)) co_return Failed(r);
  co_return co_await JobAccepted(c, r.integer);
}

namespace {

// FRAME.GROUPBY's limits (cmd_frame_analytics.cc), checked here before any list is built.
constexpr size_t kMaxGroupKeys = server::kMaxGroupByKeys;
constexpr size_t kMaxAggregates = server::kMaxGroupByAggregates;

// A path segment as it goes into a Location header: unreserved bytes as they are, the rest %XX.
std::string PathSegment(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char ch : s) {
    if (std::isalnum(ch) != 0 || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    }
  }
  return out;
}

// FRAME.GROUPBY's arguments from the body {"into", "keys": [..], "aggs": [{"fn", "column"}],
// "replace": bool}; InvalidArgument with the text to send.
Result<std::vector<std::string>> GroupByArgs(const std::string& source, std::string_view body) {
  FLOE_ASSIGN_OR_RETURN(nlohmann::json j, ParseBody(body));
  if (!j.is_object() || !j.contains("into") || !j["into"].is_string()) {
    return Status::InvalidArgument("ERR the body must be an object with a string \"into\"");
  }
  std::vector<std::string> args = {"FRAME.GROUPBY", source, j["into"].get<std::string>(), "KEYS"};
  bool replace = false;
  bool have_keys = false;
  bool have_aggs = false;
  std::vector<std::string> aggs;
  for (const auto& [field, value] : j.items()) {
    if (field == "into") continue;
    if (field == "keys") {
      const char* not_strings =
          "ERR keys must be a non-empty array of strings: column names, or indexes as \"0\"";
      if (!value.is_array() || value.empty()) return Status::InvalidArgument(not_strings);
      if (value.size() > kMaxGroupKeys) {
        return Status::InvalidArgument(server::kGroupByLimitsError);
      }
      for (const nlohmann::json& k : value) {
        if (!k.is_string()) return Status::InvalidArgument(not_strings);
        std::string name = k.get<std::string>();
        // The command ends its key list at the word AGG: a column so named is taken by index.
        if (name.size() == 3 && std::toupper(static_cast<unsigned char>(name[0])) == 'A' &&
            std::toupper(static_cast<unsigned char>(name[1])) == 'G' &&
            std::toupper(static_cast<unsigned char>(name[2])) == 'G') {
          return Status::InvalidArgument("ERR a key column named AGG: give its 0-based index");
        }
        args.push_back(std::move(name));
      }
      have_keys = true;
    } else if (field == "aggs") {
      const char* bad = "ERR aggs must be a non-empty array of {\"fn\", \"column\"} objects";
      if (!value.is_array() || value.empty()) return Status::InvalidArgument(bad);
      if (value.size() > kMaxAggregates) {
        return Status::InvalidArgument(server::kGroupByLimitsError);
      }
      for (const nlohmann::json& a : value) {
        if (!a.is_object() || a.size() != 2 || !a.contains("fn") || !a["fn"].is_string() ||
            !a.contains("column") || !a["column"].is_string()) {
          return Status::InvalidArgument(bad);
        }
        aggs.push_back(a["fn"].get<std::string>());
        aggs.push_back(a["column"].get<std::string>());
      }
      have_aggs = true;
    } else if (field == "replace") {
      if (!value.is_boolean()) return Status::InvalidArgument("ERR replace must be true or false");
      replace = value.get<bool>();
    } else {
      return Status::InvalidArgument("ERR unknown field '" + field.substr(0, 64) + "'");
    }
  }
  if (!have_keys || !have_aggs) {
    return Status::InvalidArgument("ERR the body needs \"keys\" and \"aggs\"");
  }
  args.emplace_back("AGG");
  for (std::string& a : aggs) args.push_back(std::move(a));
  if (replace) args.emplace_back("REPLACE");
  return args;
}

}  // namespace

// FRAME.GROUPBY (GroupByArgs): 201 with the new frame's name and group count, and its Location.
asio::awaitable<Response> PostFrameGroupBy(server::Engine&, Commands& c, const Request& request,
                                           const Params& path, const Params&) {
  Result<std::vector<std::string>> args = GroupByArgs(path.at("name"), request.body);
  if (!args.ok()) co_return Error(400, args.status().message());
  const std::string into = (*args)[2];
  const resp::Reply r = co_await c.RunArgs(std::move(*args));
  if (IsError(r)) co_return Failed(r);
  Response out = Ok({{"name", into}, {"groups", r.integer}}, 201);
  out.headers.emplace_back("Location", "/api/frames/" + PathSegment(into));
  co_return out;
}

namespace {

// FRAME.FILTER's limit on conditions (mr::kMaxFilterConditions), checked before any list is built.
constexpr size_t kMaxFilterConditions = 16;

bool IsWord(std::string_view s, std::string_view word) {
  if (s.size() != word.size()) return false;
  for (size_t i = 0; i < s.size(); i++) {
    if (std::toupper(static_cast<unsigned char>(s[i])) != word[i]) return false;
  }
  return true;
}

// FRAME.SELECT's arguments from the body {"into", "columns": [..], "replace": bool};
// InvalidArgument with the text to send.
Result<std::vector<std::string>> SelectArgs(const std::string& source, std::string_view body) {
  FLOE_ASSIGN_OR_RETURN(nlohmann::json j, ParseBody(body));
  if (!j.is_object() || !j.contains("into") || !j["into"].is_string()) {
    return Status::InvalidArgument("ERR the body must be an object with a string \"into\"");
  }
  std::vector<std::string> args = {"FRAME.SELECT", source, j["into"].get<std::string>(), "COLS"};
  bool replace = false;
  bool have_columns = false;
  for (const auto& [field, value] : j.items()) {
    if (field == "into") continue;
    if (field == "columns") {
      const char* not_strings =
          "ERR columns must be a non-empty array of strings: column names, or indexes as \"0\"";
      if (!value.is_array() || value.empty()) return Status::InvalidArgument(not_strings);
      for (const nlohmann::json& col : value) {
        if (!col.is_string()) return Status::InvalidArgument(not_strings);
        std::string name = col.get<std::string>();
        // The command takes a trailing REPLACE as its option.
        if (IsWord(name, "REPLACE")) {
          return Status::InvalidArgument("ERR a column named REPLACE: give its 0-based index");
        }
        args.push_back(std::move(name));
      }
      have_columns = true;
    } else if (field == "replace") {
      if (!value.is_boolean()) return Status::InvalidArgument("ERR replace must be true or false");
      replace = value.get<bool>();
    } else {
      return Status::InvalidArgument("ERR unknown field '" + field.substr(0, 64) + "'");
    }
  }
  if (!have_columns) return Status::InvalidArgument("ERR the body needs \"columns\"");
  if (replace) args.emplace_back("REPLACE");
  return args;
}

// FRAME.FILTER's arguments from the body {"into", "where": [{"column", "op", "value"}],
// "replace": bool}; InvalidArgument with the text to send. A number value goes as the shortest
// text that reads back to it; the command checks operators and values.
Result<std::vector<std::string>> FilterArgs(const std::string& source, std::string_view body) {
  FLOE_ASSIGN_OR_RETURN(nlohmann::json j, ParseBody(body));
  if (!j.is_object() || !j.contains("into") || !j["into"].is_string()) {
    return Status::InvalidArgument("ERR the body must be an object with a string \"into\"");
  }
  std::vector<std::string> args = {"FRAME.FILTER", source, j["into"].get<std::string>(), "WHERE"};
  bool replace = false;
  bool have_where = false;
  for (const auto& [field, value] : j.items()) {
    if (field == "into") continue;
    if (field == "where") {
      const char* bad =
          "ERR where must be a non-empty array of {\"column\", \"op\", \"value\"} objects";
      if (!value.is_array() || value.empty()) return Status::InvalidArgument(bad);
      if (value.size() > kMaxFilterConditions) {
        return Status::InvalidArgument("ERR at most 16 conditions");
      }
      for (const nlohmann::json& c : value) {
        if (!c.is_object() || !c.contains("column") || !c["column"].is_string() ||
            !c.contains("op") || !c["op"].is_string()) {
          return Status::InvalidArgument(bad);
        }
        const std::string op = c["op"].get<std::string>();
        const bool na_test = IsWord(op, "ISNA") || IsWord(op, "NOTNA");
        if (c.size() != (na_test ? 2u : 3u) || (!na_test && !c.contains("value"))) {
          return Status::InvalidArgument(
              na_test ? "ERR isna and notna take no value"
                      : "ERR a condition is {\"column\", \"op\", \"value\"} (value: a string "
                        "or a number)");
        }
        if (args.size() > 4) args.emplace_back("AND");
        args.push_back(c["column"].get<std::string>());
        args.push_back(op);
        if (na_test) continue;
        const nlohmann::json& v = c["value"];
        if (v.is_string()) {
          args.push_back(v.get<std::string>());
        } else if (v.is_number_integer()) {
          args.push_back(v.dump());
        } else if (v.is_number_float()) {
          char buf[64];
          auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v.get<double>());
          args.emplace_back(buf, end);
        } else {
          return Status::InvalidArgument("ERR a condition's value is a string or a number");
        }
      }
      have_where = true;
    } else if (field == "replace") {
      if (!value.is_boolean()) return Status::InvalidArgument("ERR replace must be true or false");
      replace = value.get<bool>();
    } else {
      return Status::InvalidArgument("ERR unknown field '" + field.substr(0, 64) + "'");
    }
  }
  if (!have_where) return Status::InvalidArgument("ERR the body needs \"where\"");
  if (replace) args.emplace_back("REPLACE");
  return args;
}

// A command that made the frame `into`: 201 with its name, `what` (the reply's integer), and its
// Location.
Response Made(const std::string& into, const char* what, int64_t n) {
  Response out = Ok({{"name", into}, {what, n}}, 201);
  out.headers.emplace_back("Location", "/api/frames/" + PathSegment(into));
  return out;
}

}  // namespace

// FRAME.SELECT (SelectArgs): 201 with the new frame's name and column count.
asio::awaitable<Response> PostFrameSelect(server::Engine&, Commands& c, const Request& request,
                                          const Params& path, const Params&) {
  Result<std::vector<std::string>> args = SelectArgs(path.at("name"), request.body);
  if (!args.ok()) co_return Error(400, args.status().message());
  const std::string into = (*args)[2];
  const resp::Reply r = co_await c.RunArgs(std::move(*args));
  if (IsError(r)) co_return Failed(r);
  co_return Made(into, "columns", r.integer);
}

// FRAME.FILTER (FilterArgs), on the analytics pool as the command runs: 201 with the new
// frame's name and row count.
asio::awaitable<Response> PostFrameFilter(server::Engine&, Commands& c, const Request& request,
                                          const Params& path, const Params&) {
  Result<std::vector<std::string>> args = FilterArgs(path.at("name"), request.body);
  if (!args.ok()) co_return Error(400, args.status().message());
  const std::string into = (*args)[2];
  const resp::Reply r = co_await c.RunArgs(std::move(*args));
  if (IsError(r)) co_return Failed(r);
  co_return Made(into, "rows", r.integer);
}

namespace {

// The upload's file goes once its job has ended, however it ended (done, failed, cancelled),
// or the node stops: the guard removes it when the coroutine ends, also when its io_context
// is destroyed with the coroutine still waiting. A node killed outright leaves it for the
// next start (CleanUploads).
struct RemoveOnExit {
  std::string path;
  ~RemoveOnExit() { ::unlink(path.c_str()); }
};

asio::awaitable<void> RemoveWhenJobEnds(server::Engine* engine, uint64_t id, std::string path) {
  const RemoveOnExit guard{.path = std::move(path)};
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (true) {
    // Not kept any more (a hundred later jobs ended) counts as ended.
    const Result<job::Info> info = engine->jobs().Get(id);
    if (!info.ok() || info->state != job::State::kRunning) co_return;
    timer.expires_after(std::chrono::milliseconds(100));
    std::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
  }
}

// A new file under the upload directory: O_EXCL, mode 0600, a random name; the body written
// whole. The path, or the error to answer with.
Result<std::string> WriteUpload(const server::Config& config, const std::string& dir,
                                std::string_view body) {
  // The default import-dir (<dir>/import) is made on the first upload, private to this user
  // (mode 0700 whatever the umask); a configured one must exist (a typo is not created).
  if (config.import_dir.empty()) {
    const std::filesystem::path import = std::filesystem::path(dir).parent_path();
    std::error_code made;
    std::filesystem::create_directories(import.parent_path(), made);
    if (::mkdir(import.c_str(), 0700) != 0 && errno != EEXIST) {
      return Status::FailedPrecondition("ERR cannot create the import-dir '" + import.string() +
                                        "': " + std::strerror(errno));
    }
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::FailedPrecondition("ERR cannot create '" + dir + "' for uploads: " +
                                      std::strerror(errno) + " (is import-dir writable?)");
  }
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::FailedPrecondition("ERR '" + dir + "' is not a directory");
  }
  // Another local user could have made it first (import-dir /tmp) and swap the files in it
  // before FRAME.IMPORT reads them: it must be ours and closed to others.
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%03o", static_cast<unsigned>(st.st_mode & 0777));
    return Status::FailedPrecondition("ERR the upload directory '" + dir +
                                      "' is not this user's own (owner uid " +
                                      std::to_string(st.st_uid) + ", mode " + mode +
                                      "): remove it, or make it this user's with mode 0700");
  }
  static thread_local std::mt19937_64 random(std::random_device{}());
  for (int attempt = 0; attempt < 8; attempt++) {
    char name[64];
    std::snprintf(name, sizeof(name), "/upload-%016llx.csv",
                  static_cast<unsigned long long>(random()));
    std::string path = dir + name;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno == EEXIST) continue;
    if (fd < 0) {
      return Status::FailedPrecondition("ERR cannot write an upload under '" + dir + "': " +
                                        std::strerror(errno) + " (is import-dir writable?)");
    }
    size_t done = 0;
    while (done < body.size()) {
      const ssize_t n = ::write(fd, body.data() + done, body.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n < 0 ? errno : EIO;
        ::close(fd);
        ::unlink(path.c_str());
        return Status::ResourceExhausted("ERR cannot write the upload: " +
                                         std::string(std::strerror(err)));
      }
      done += static_cast<size_t>(n);
    }
    if (::close(fd) != 0) {
      ::unlink(path.c_str());
      return Status::ResourceExhausted("ERR cannot write the upload: " +
                                       std::string(std::strerror(errno)));
    }
    return path;
  }
  return Status::FailedPrecondition("ERR no free upload name under '" + dir + "'");
}

// FRAME.IMPORT's options from the query: sep, header (yes|no), types, na (comma lists), and
// replace (true|false).
Result<std::vector<std::string>> UploadOptions(const Params& query) {
  std::vector<std::string> args;
  for (const auto& [field, value] : query) {
    if (field == "sep") {
      args.insert(args.end(), {"SEP", value});
    } else if (field == "header") {
      args.insert(args.end(), {"HEADER", value});
    } else if (field == "types") {
      args.insert(args.end(), {"TYPES", value});
    } else if (field == "na") {
      args.insert(args.end(), {"NA", value});
    } else if (field == "replace") {
      if (value != "true" && value != "false") {
        return Status::InvalidArgument("ERR replace must be true or false");
      }
      if (value == "true") args.emplace_back("REPLACE");
    } else {
      return Status::InvalidArgument("ERR unknown parameter '" + field.substr(0, 64) + "'");
    }
  }
  return args;
}

}  // namespace

std::string UploadDir(const server::Config& config) {
  // Absolute: FRAME.IMPORT would take a relative path under import-dir a second time.
  std::error_code ec;
  std::string root =
      std::filesystem::absolute(server::ImportDir(config), ec).lexically_normal().string();
  if (ec) return "";
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  return root + "/.http-uploads-" + std::to_string(config.port);
}

void CleanUploads(const server::Config& config) {
  const std::string dir = UploadDir(config);
  if (dir.empty()) return;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d)) {
    if (std::string_view(e->d_name).starts_with("upload-")) stale.push_back(dir + "/" + e->d_name);
  }
  ::closedir(d);
  for (const std::string& path : stale) ::unlink(path.c_str());
}

// The body written to a file under UploadDir, then FRAME.IMPORT of it as a job: 202 with the
// job's status and Location; the file goes when the job ends (RemoveWhenJobEnds).
asio::awaitable<Response> PutFrameCsv(server::Engine& engine, Commands& c, const Request& request,
                                      const Params& path, const Params& query) {
  Result<std::vector<std::string>> options = UploadOptions(query);
  if (!options.ok()) co_return Error(400, options.status().message());
  if (request.body.empty()) co_return Error(400, "ERR the body is empty: send the CSV file");
  const std::string dir = UploadDir(engine.config());
  if (dir.empty()) {
    co_return Error(409,
                    "ERR import-dir has no absolute path (was the working directory removed?)");
  }
  Result<std::string> file = WriteUpload(engine.config(), dir, request.body);
  if (!file.ok()) {
    const bool full = file.status().code() == StatusCode::kResourceExhausted;
    co_return Error(full ? 507 : 409, file.status().message());
  }
  std::vector<std::string> args = {"FRAME.IMPORT", path.at("name"), *file};
  args.insert(args.end(), options->begin(), options->end());
  const resp::Reply r = co_await c.RunArgs(std::move(args));
  if (IsError(r)) {
    ::unlink(file->c_str());
    co_return Failed(r);
  }
  asio::co_spawn(c.executor(), RemoveWhenJobEnds(&engine, static_cast<uint64_t>(r.integer), *file),
                 asio::detached);
  co_return co_await JobAccepted(c, r.integer);
}

// The frame as CSV (frame::CsvWriter, docs/frame.md "CSV out": FRAME.EXPORT's bytes), streamed:
// the frame pinned as it is now, written kStreamPiece bytes at a time as the client reads.
asio::awaitable<Response> GetFrameCsv(server::Engine& engine, Commands&, const Request&,
                                      const Params& path, const Params& query) {
  if (!query.empty()) {
    co_return Error(400, "ERR unknown parameter '" + query.begin()->first.substr(0, 64) + "'");
  }
  Result<std::shared_ptr<const frame::Frame>> f = server::PinFrame(engine, path.at("name"));
  if (!f.ok()) {
    const std::string text(f.status().message());
    co_return f.status().code() == StatusCode::kNotFound ? Error(404, text)
                                                         : Error(StatusForError(text), text);
  }
  auto writer = std::make_shared<frame::CsvWriter>(std::move(f).value());
  Response out{.status = 200, .content_type = "text/csv; charset=utf-8"};
  // Each piece counts as the client's buffer. Under maxmemory a line may take what is left
  // below it (at least kMinStreamLine): a row wider than that ends the download, as an export's
  // or an upload's past maxmemory would end them; 14 clients of a frame with 60 MB rows held
  // 900 MB under maxmemory 200mb.
  out.stream = [writer, &engine](std::string* piece, bool on_io_thread) -> Result<Response::Piece> {
    size_t max_line = kMaxStreamPiece - kStreamPiece;
    if (const int64_t limit = engine.maxmemory(); limit > 0) {
      const int64_t room = limit - engine.UsedMemoryNow() - engine.reserved_memory() -
                           static_cast<int64_t>(kStreamPiece);
      max_line =
          std::clamp(static_cast<size_t>(std::max<int64_t>(room, 0)), kMinStreamLine, max_line);
    }
    // On the I/O thread only narrow lines: a wider one is made off it (kWide).
    const bool capped = on_io_thread && max_line > kInlineLine;
    Result<bool> more = writer->Next(piece, kStreamPiece, capped ? kInlineLine : max_line);
    if (!more.ok()) {
      if (capped && more.status().code() == StatusCode::kResourceExhausted) {
        return Response::Piece::kWide;
      }
      return more.status();
    }
    return *more ? Response::Piece::kMore : Response::Piece::kLast;
  };
  co_return out;
}

asio::awaitable<Response> GetJobs(server::Engine&, Commands& c, const Request&, const Params&,
                                  const Params&) {
  const resp::Reply r = co_await c.Run("JOB.LIST");  // at most 100 finished and 4 running
  if (IsError(r)) co_return Failed(r);
  Json jobs = Json::array();
  for (const resp::Reply& e : r.elements) {
    if (e.elements.size() != 5) co_return Error(500, "ERR unexpected JOB.LIST reply");
    jobs.push_back({{"id", Value(e.elements[0])},
                    {"kind", Value(e.elements[1])},
                    {"state", Value(e.elements[2])},
                    {"percent", Number(e.elements[3])},
                    {"description", Value(e.elements[4])}});
  }
  co_return Ok({{"jobs", std::move(jobs)}});
}

asio::awaitable<Response> GetJob(server::Engine&, Commands& c, const Request&, const Params& path,
                                 const Params&) {
  const std::string& id = path.at("id");
  if (!JobIdSegment(id)) co_return Error(400, "ERR a job id is a positive integer");
  const resp::Reply r = co_await c.Run("JOB.STATUS", id);
  if (IsError(r)) co_return Failed(r);
  co_return Ok(JobObject(r));
}

// Sets the job's cancel flag (JOB.CANCEL) and returns its status; a finished job is a 409.
asio::awaitable<Response> CancelJob(server::Engine&, Commands& c, const Request&,
                                    const Params& path, const Params&) {
  const std::string& id = path.at("id");
  if (!JobIdSegment(id)) co_return Error(400, "ERR a job id is a positive integer");
  const resp::Reply r = co_await c.Run("JOB.CANCEL", id);
  if (IsError(r)) {
    if (r.str.ends_with("already finished")) co_return Error(409, r.str);
    co_return Failed(r);
  }
  const resp::Reply status = co_await c.Run("JOB.STATUS", id);
  if (IsError(status)) co_return Failed(status);
  co_return Ok(JobObject(status));
}

}  // namespace floe::http::internal
