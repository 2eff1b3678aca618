// The HTTP front end's pieces without sockets: decoding, routing, auth and the endpoints run on
// an in-process engine and session. Over real sockets: tests/e2e/test_http.py.

#include "http/http.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "http/internal/api.h"

namespace floe::http {
namespace {

using internal::HandleNow;
using internal::Request;
using internal::Response;

TEST(PercentDecodeTest, DecodesEscapesAndRefusesBadOnes) {
  EXPECT_EQ(*PercentDecode("a%2Fb%20c"), "a/b c");
  EXPECT_EQ(*PercentDecode("%e2%82%AC"), "\xe2\x82\xac");
  EXPECT_EQ(*PercentDecode("a+b"), "a+b");
  EXPECT_EQ(*PercentDecode("a+b", true), "a b");
  EXPECT_EQ(*PercentDecode("%00"), std::string(1, '\0'));
  for (std::string_view bad : {"%", "%4", "a%zz", "%g0", "abc%2"}) {
    EXPECT_FALSE(PercentDecode(bad).ok()) << bad;
  }
}

TEST(ParseQueryTest, SplitsAndDecodes) {
  auto q = ParseQuery("pattern=user%3A*&count=10&&flag&x=a+b");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->at("pattern"), "user:*");
  EXPECT_EQ(q->at("count"), "10");
  EXPECT_EQ(q->at("flag"), "");
  EXPECT_EQ(q->at("x"), "a b");
  EXPECT_FALSE(ParseQuery("a=%2").ok());
}

TEST(Base64Test, RoundTripsAndRefusesMalformed) {
  const std::vector<std::string> samples = {
      "", "f", "fo", "foo", "foob", "fooba", "foobar", std::string("\0\xff\x10", 3)};
  for (const std::string& s : samples) {
    EXPECT_EQ(*Base64Decode(Base64Encode(s)), s);
  }
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  for (std::string_view bad : {"Zm8", "Zm=8", "Z===", "Zm9v!mFy", "=Zm8", "Zm9=", "Zh=="}) {
    EXPECT_FALSE(Base64Decode(bad).ok()) << bad;
  }
}

TEST(AuthorizationTest, TakesBearerAndBasic) {
  EXPECT_EQ(*PasswordFromAuthorization("Bearer s3cret"), "s3cret");
  EXPECT_EQ(*PasswordFromAuthorization("bearer   s3cret "), "s3cret");
  // "default:pa:ss" -> the password is everything after the first colon.
  EXPECT_EQ(*PasswordFromAuthorization("Basic " + Base64Encode("default:pa:ss")), "pa:ss");
  EXPECT_FALSE(PasswordFromAuthorization("Basic !!!").ok());
  EXPECT_FALSE(PasswordFromAuthorization("Basic " + Base64Encode("nocolon")).ok());
  EXPECT_FALSE(PasswordFromAuthorization("Digest x").ok());
}

TEST(Utf8Test, TellsTextFromBytes) {
  EXPECT_TRUE(IsUtf8("plain"));
  EXPECT_TRUE(IsUtf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsUtf8("\xff"));
  EXPECT_FALSE(IsUtf8("\xc3"));          // cut short
  EXPECT_FALSE(IsUtf8("\xc0\x80"));      // overlong
  EXPECT_FALSE(IsUtf8("\xed\xa0\x80"));  // a surrogate
}

TEST(ReplyJsonTest, RendersEveryReplyType) {
  auto json = [](std::string_view bytes) {
    size_t consumed = 0;
    Result<resp::Reply> r = resp::ParseReply(bytes, &consumed);
    EXPECT_TRUE(r.ok()) << bytes;
    std::string out;
    AppendReplyJson(&out, *r);
    return out;
  };
  EXPECT_EQ(json("+OK\r\n"), "\"OK\"");
  EXPECT_EQ(json("-ERR bad \"x\"\r\n"), "{\"error\":\"ERR bad \\\"x\\\"\"}");
  EXPECT_EQ(json(":-42\r\n"), "-42");
  EXPECT_EQ(json("$-1\r\n"), "null");
  EXPECT_EQ(json("*3\r\n$1\r\na\r\n$-1\r\n:1\r\n"), "[\"a\",null,1]");
  EXPECT_EQ(json("%1\r\n$1\r\nk\r\n,1.5\r\n"), "{\"k\":1.5}");
  EXPECT_EQ(json("#t\r\n"), "true");
  EXPECT_EQ(json("_\r\n"), "null");
}

TEST(RoutesTest, OpenApiListsExactlyTheRoutes) {
  std::ifstream in(std::string(FLOE_SOURCE_DIR) + "/docs/openapi.json");
  ASSERT_TRUE(in) << "docs/openapi.json";
  const nlohmann::json doc = nlohmann::json::parse(in);
  EXPECT_EQ(doc["openapi"].get<std::string>().substr(0, 2), "3.");
  std::set<std::pair<std::string, std::string>> documented, served;
  for (const auto& [path, methods] : doc["paths"].items()) {
    for (const auto& [method, op] : methods.items()) {
      std::string m = method;
      for (char& c : m) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      documented.emplace(m, path);
    }
  }
  for (const Route& r : Routes()) served.emplace(std::string(r.method), std::string(r.path));
  EXPECT_EQ(documented, served);
}

TEST(ServeOptionsTest, DerivesThePortAndCarriesTheTimeouts) {
  server::Config c;
  c.port = 6379;
  std::optional<Options> o = ServeOptions(c);
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->port, 7379);
  EXPECT_FALSE(o->required);  // a derived port that is taken does not stop the node
  EXPECT_EQ(o->limits.read_timeout_ms, 10'000);
  EXPECT_EQ(o->limits.idle_timeout_ms, 60'000);
  c.http_request_timeout = 250;
  c.http_idle_timeout = 500;
  c.http_port = 8080;
  o = ServeOptions(c);
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->port, 8080);
  EXPECT_TRUE(o->required);
  EXPECT_EQ(o->limits.read_timeout_ms, 250);
  EXPECT_EQ(o->limits.idle_timeout_ms, 500);
  c.http_port = 0;
  EXPECT_FALSE(ServeOptions(c).has_value());
  // No port to derive: off (with a log line).
  c.http_port = -1;
  c.port = 64536;
  EXPECT_FALSE(ServeOptions(c).has_value());
  c.port = 0;
  EXPECT_FALSE(ServeOptions(c).has_value());
  c.port = 64535;
  ASSERT_TRUE(ServeOptions(c).has_value());
  EXPECT_EQ(ServeOptions(c)->port, 65535);
}

// The endpoints on an in-process engine.
class ApiTest : public ::testing::Test {
 protected:
  explicit ApiTest(server::Config config = {})
      : engine_(std::move(config)), session_(&engine_, 0) {}
  Response Call(std::string method, std::string url, std::string body = "",
                std::string authorization = "") {
    return HandleNow(engine_, session_,
                     Request{.method = std::move(method),
                             .url = std::move(url),
                             .authorization = std::move(authorization),
                             .body = std::move(body)});
  }
  static nlohmann::json Json(const Response& r) { return nlohmann::json::parse(r.body); }

  server::Engine engine_;
  server::Session session_;
};

TEST_F(ApiTest, PutGetDeleteAString) {
  EXPECT_EQ(Call("PUT", "/api/keys/a%2Fb", R"({"value":"hi","ttl":100})").status, 200);
  EXPECT_EQ(session_.Run({"GET", "a/b"}), "$2\r\nhi\r\n");
  const Response got = Call("GET", "/api/keys/a%2Fb");
  ASSERT_EQ(got.status, 200) << got.body;
  const auto j = Json(got);
  EXPECT_EQ(j["key"], "a/b");
  EXPECT_EQ(j["type"], "string");
  EXPECT_EQ(j["value"], "hi");
  EXPECT_EQ(j["value_encoding"], "utf8");
  EXPECT_EQ(j["key_encoding"], "utf8");
  EXPECT_GT(j["ttl_ms"].get<int64_t>(), 0);
  EXPECT_EQ(Call("DELETE", "/api/keys/a%2Fb").status, 200);
  EXPECT_EQ(Call("GET", "/api/keys/a%2Fb").status, 404);
  EXPECT_EQ(Call("DELETE", "/api/keys/a%2Fb").status, 404);
}

TEST_F(ApiTest, BinaryValuesTravelAsBase64) {
  EXPECT_EQ(Call("PUT", "/api/keys/bin", R"({"value":"AP8Q","encoding":"base64"})").status, 200);
  EXPECT_EQ(session_.Run({"STRLEN", "bin"}), ":3\r\n");
  const auto j = Json(Call("GET", "/api/keys/bin"));
  EXPECT_EQ(j["value"], "AP8Q");
  EXPECT_EQ(j["value_encoding"], "base64");
}

// A value of control bytes is valid UTF-8 whose JSON escapes take six bytes each: it goes as
// base64, at most 4/3 of its size (a hostile tester's 10 MiB value took ~60 MB per GET).
TEST_F(ApiTest, TextWhoseEscapesOutweighBase64TravelsAsBase64) {
  session_.Run({"SET", "ctl", std::string(300 << 10, '\x01')});
  const Response got = Call("GET", "/api/keys/ctl");
  ASSERT_EQ(got.status, 200);
  EXPECT_LT(got.body.size(), (300u << 10) * 3 / 2);
  const auto j = Json(got);
  EXPECT_EQ(j["value_encoding"], "base64");
  EXPECT_EQ(j["value"].get<std::string>().size(), (300u << 10) / 3 * 4);
  session_.Run({"SET", "lines", "one\ntwo\tthree \"quoted\""});
  const auto text = Json(Call("GET", "/api/keys/lines"));
  EXPECT_EQ(text["value_encoding"], "utf8");
  EXPECT_EQ(text["value"], "one\ntwo\tthree \"quoted\"");
}

TEST_F(ApiTest, SketchViews) {
  session_.Run({"PFADD", "h", "a", "b", "c"});
  auto h = Json(Call("GET", "/api/keys/h"));
  EXPECT_EQ(h["type"], "hll");
  EXPECT_NEAR(h["estimate"].get<double>(), 3.0, 0.5);
  EXPECT_TRUE(h["info"].is_object()) << h.dump();
  session_.Run({"CMS.INITBYDIM", "c", "100", "4"});
  session_.Run({"CMS.INCRBY", "c", "x", "7"});
  auto c = Json(Call("GET", "/api/keys/c?item=x"));
  EXPECT_EQ(c["type"], "cms");
  EXPECT_EQ(c["count"], 7);
  EXPECT_TRUE(c["info"].is_object()) << c.dump();
  session_.Run({"BF.ADD", "b", "in"});
  auto b = Json(Call("GET", "/api/keys/b?item=in"));
  EXPECT_EQ(b["type"], "bloom");
  EXPECT_EQ(b["exists"], true);
  EXPECT_EQ(Json(Call("GET", "/api/keys/b?item=out"))["exists"], false);
}

TEST_F(ApiTest, ScanWithPatternTypeAndBoundedCount) {
  for (int i = 0; i < 30; i++) session_.Run({"SET", "user:" + std::to_string(i), "v"});
  session_.Run({"PFADD", "user:h", "a"});
  std::set<std::string> seen;
  std::string cursor = "0";
  do {
    const Response r =
        Call("GET", "/api/keys?pattern=user%3A*&type=string&count=7&cursor=" + cursor);
    ASSERT_EQ(r.status, 200) << r.body;
    const auto j = Json(r);
    for (const auto& k : j["keys"]) {
      EXPECT_EQ(k["type"], "string");
      seen.insert(k["key"].get<std::string>());
    }
    cursor = j["cursor"].get<std::string>();
  } while (cursor != "0");
  EXPECT_EQ(seen.size(), 30u);
  EXPECT_EQ(Call("GET", "/api/keys?count=0").status, 400);
  EXPECT_EQ(Call("GET", "/api/keys?count=1001").status, 400);
  EXPECT_EQ(Call("GET", "/api/keys?count=99999999999999999999999").status, 400);
  EXPECT_EQ(Call("GET", "/api/keys?cursor=x").status, 400);
}

TEST_F(ApiTest, CommandRepliesAsJsonWithRespErrorTexts) {
  const Response set = Call("POST", "/api/command", R"(["SET","k","v"])");
  EXPECT_EQ(set.status, 200);
  EXPECT_EQ(set.body, "\"OK\"");
  EXPECT_EQ(Call("POST", "/api/command", R"(["MGET","k","nope"])").body, "[\"v\",null]");
  EXPECT_EQ(Call("POST", "/api/command", R"(["INCR","k"])").body,
            "{\"error\":\"ERR value is not an integer or out of range\"}");
  EXPECT_EQ(Call("POST", "/api/command", R"(["INCR","k"])").status, 400);
  EXPECT_EQ(Call("POST", "/api/command", R"(["EXISTS","k"])").body, "1");
  EXPECT_EQ(Call("POST", "/api/command", R"([])").status, 400);
  EXPECT_EQ(Call("POST", "/api/command", R"(["SET",1])").status, 400);
  EXPECT_EQ(Call("POST", "/api/command", R"(not json)").status, 400);
  EXPECT_EQ(Call("POST", "/api/command", std::string(100000, '[')).status, 400);
}

TEST_F(ApiTest, UnknownRoutesMethodsAndBadEscapes) {
  EXPECT_EQ(Call("GET", "/api/nope").status, 404);
  EXPECT_EQ(Call("POST", "/api/keys").status, 405);
  EXPECT_EQ(Call("GET", "/api/keys/bad%zz").status, 400);
  EXPECT_EQ(Call("GET", "/api/keys/bad%2").status, 400);
  EXPECT_EQ(Call("GET", "/api/keys?pattern=%").status, 400);
  EXPECT_THAT(Call("GET", "/api/nope").body, ::testing::HasSubstr("\"error\""));
}

TEST_F(ApiTest, ClusterViewAgreesWithInfo) {
  session_.Run({"SET", "a", "1"});
  session_.Run({"SET", "b", "2"});
  const Response r = Call("GET", "/api/cluster");
  ASSERT_EQ(r.status, 200) << r.body;
  const auto j = Json(r);
  EXPECT_EQ(j["version"], server::kFloeVersion);
  EXPECT_EQ(j["keys"], 2);
  EXPECT_EQ(j["mode"], "standalone");
  EXPECT_TRUE(j["memory"]["used"].is_number());
  EXPECT_TRUE(j["members"].is_array());
  EXPECT_EQ(j["cluster"]["cluster_enabled"], 0);
}

class AuthApiTest : public ApiTest {
 protected:
  static server::Config WithPassword() {
    server::Config c;
    c.requirepass = "s3cret";
    return c;
  }
  AuthApiTest() : ApiTest(WithPassword()) {}
};

TEST_F(AuthApiTest, EveryRequestNeedsThePassword) {
  const Response none = Call("GET", "/api/cluster");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(Json(none)["error"], "NOAUTH Authentication required.");
  const Response wrong = Call("GET", "/api/cluster", "", "Bearer nope");
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(Json(wrong)["error"], "WRONGPASS invalid username-password pair or user is disabled.");
  EXPECT_EQ(Call("GET", "/api/cluster", "", "Bearer s3cret").status, 200);
  EXPECT_EQ(Call("GET", "/api/cluster", "", "Basic " + Base64Encode("default:s3cret")).status, 200);
  // Authenticated once is not enough: the next request without the password is refused.
  EXPECT_EQ(Call("GET", "/metrics").status, 401);
}

TEST(PrometheusTest, FollowsTheTextFormat) {
  server::Engine engine{server::Config{}};
  server::Session session(&engine, 0);
  session.Run({"SET", "a", "1"});
  session.Run({"GET", "a"});
  session.Run({"GET", "zz"});
  session.Run({"INCR", "a\"b"});
  const std::string info = session.Run({"INFO", "everything"});
  const std::string text = PrometheusText(ParseInfo(info.substr(info.find("\r\n") + 2))) +
                           PrometheusLatency(server::CommandLatencies(engine));
  std::map<std::string, std::string> types;  // family -> its type
  std::set<std::string> series;
  // Histograms: per family and labels but le, the (le, cumulative count) in order of lines.
  std::map<std::string, std::vector<std::pair<std::string, double>>> buckets;
  std::istringstream lines(text);
  std::string line;
  std::map<std::string, double> values;
  while (std::getline(lines, line)) {
    ASSERT_FALSE(line.empty());
    if (line.starts_with("# TYPE ")) {
      std::istringstream t(line.substr(7));
      std::string name, kind;
      t >> name >> kind;
      EXPECT_TRUE(kind == "counter" || kind == "gauge" || kind == "histogram") << line;
      EXPECT_TRUE(types.emplace(name, kind).second) << "two TYPE lines for " << name;
      continue;
    }
    if (line.starts_with("# HELP ")) continue;
    const size_t space = line.rfind(' ');
    const std::string id = line.substr(0, space);
    std::string name = id.substr(0, id.find('{'));
    for (std::string_view suffix : {"_bucket", "_sum", "_count"}) {
      const std::string family = name.substr(0, name.size() - std::min(name.size(), suffix.size()));
      if (name.ends_with(suffix) && types.contains(family) && types[family] == "histogram") {
        name = family;
      }
    }
    EXPECT_TRUE(types.contains(name)) << "no TYPE before " << line;
    EXPECT_TRUE(series.insert(id).second) << "duplicate series " << id;
    size_t used = 0;
    values[id] = std::stod(line.substr(space + 1), &used);
    EXPECT_EQ(used, line.size() - space - 1) << line;
    if (const size_t le = id.find(",le=\"");
        le != std::string::npos && types[name] == "histogram") {
      const std::string bound = id.substr(le + 5, id.find('"', le + 5) - le - 5);
      buckets[id.substr(0, le) + "}"].emplace_back(bound, values[id]);
    }
  }
  // Histograms (the format's rules): buckets cumulative with increasing `le`, the last +Inf,
  // equal to _count.
  ASSERT_FALSE(buckets.empty());
  for (const auto& [labels, list] : buckets) {
    ASSERT_GE(list.size(), 2u) << labels;
    EXPECT_EQ(list.back().first, "+Inf") << labels;
    for (size_t i = 1; i + 1 < list.size(); i++) {
      EXPECT_LT(std::stod(list[i - 1].first), std::stod(list[i].first)) << labels;
      EXPECT_LE(list[i - 1].second, list[i].second) << labels;
    }
    const std::string count =
        "floe_command_latency_seconds_count" + labels.substr(labels.find('{'));
    EXPECT_EQ(list.back().second, values[count]) << labels;
  }
  EXPECT_EQ(values["floe_command_latency_seconds_count{command=\"get\"}"], 2);
  EXPECT_EQ(values["floe_command_latency_seconds_count{command=\"incr\"}"], 1);
  EXPECT_GT(values["floe_command_latency_seconds_sum{command=\"get\"}"], 0);
  EXPECT_EQ(values["floe_keys"], 2);  // a and a"b
  EXPECT_EQ(values["floe_keyspace_hits_total"], 1);
  EXPECT_EQ(values["floe_keyspace_misses_total"], 1);
  EXPECT_EQ(values["floe_command_calls_total{command=\"get\"}"], 2);
  EXPECT_EQ(values["floe_errors_total{code=\"ERR\"}"], 0) << "INCR on a fresh key succeeds";
}

}  // namespace
}  // namespace floe::http
