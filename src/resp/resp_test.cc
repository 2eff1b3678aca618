#include "resp/resp.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace floe::resp {
namespace {

using ::testing::ElementsAre;

struct Parsed {
  RequestParser::Outcome outcome;
  std::vector<std::string> args;
  size_t consumed = 0;
  std::string error;
};

Parsed ParseOnce(RequestParser& p, std::string_view buf) {
  Parsed r;
  std::vector<std::string_view> args;
  r.outcome = p.Parse(buf, &args, &r.consumed, &r.error);
  for (auto a : args) r.args.emplace_back(a);
  return r;
}

Parsed ParseOnce(std::string_view buf, Limits limits = Limits()) {
  RequestParser p(limits);
  return ParseOnce(p, buf);
}

TEST(RequestParserTest, ParsesMultibulk) {
  Parsed r = ParseOnce("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nextra");
  ASSERT_EQ(r.outcome, RequestParser::Outcome::kCommand);
  EXPECT_THAT(r.args, ElementsAre("SET", "k", ""));
  EXPECT_EQ(r.consumed, 26u);
}

TEST(RequestParserTest, BinarySafeArguments) {
  std::string bin("a\r\n\0b", 5);
  Parsed r = ParseOnce("*1\r\n$5\r\n" + bin + "\r\n");
  ASSERT_EQ(r.outcome, RequestParser::Outcome::kCommand);
  EXPECT_EQ(r.args[0], bin);
}

TEST(RequestParserTest, ResumesAcrossArbitrarySplits) {
  const std::string msg = "*2\r\n$4\r\nECHO\r\n$11\r\nhello world\r\n*1\r\n$4\r\nPING\r\n";
  for (size_t step = 1; step <= 7; step++) {
    RequestParser p;
    std::string buf;
    std::vector<std::vector<std::string>> got;
    for (size_t i = 0; i < msg.size(); i += step) {
      buf += msg.substr(i, step);
      for (;;) {
        Parsed r = ParseOnce(p, buf);
        buf.erase(0, r.consumed);
        if (r.outcome != RequestParser::Outcome::kCommand) {
          ASSERT_EQ(r.outcome, RequestParser::Outcome::kNeedMore);
          break;
        }
        got.push_back(r.args);
      }
    }
    ASSERT_EQ(got.size(), 2u) << step;
    EXPECT_THAT(got[0], ElementsAre("ECHO", "hello world"));
    EXPECT_THAT(got[1], ElementsAre("PING"));
    EXPECT_TRUE(buf.empty());
  }
}

TEST(RequestParserTest, SkipsEmptyRequests) {
  Parsed r = ParseOnce("*0\r\n*-1\r\n\r\n  \r\n*1\r\n$4\r\nPING\r\n");
  ASSERT_EQ(r.outcome, RequestParser::Outcome::kCommand);
  EXPECT_THAT(r.args, ElementsAre("PING"));
  RequestParser p;
  Parsed partial = ParseOnce(p, "*0\r\n*1\r\n$4\r\nPI");
  EXPECT_EQ(partial.outcome, RequestParser::Outcome::kNeedMore);
  EXPECT_EQ(partial.consumed, 4u);  // the empty request may be dropped
}

TEST(RequestParserTest, ProtocolErrorsUseRedisTexts) {
  EXPECT_EQ(ParseOnce("*x\r\n").error, "Protocol error: invalid multibulk length");
  EXPECT_EQ(ParseOnce("*01\r\n").error, "Protocol error: invalid multibulk length");
  EXPECT_EQ(ParseOnce("*1\r\n+OK\r\n").error, "Protocol error: expected '$', got '+'");
  EXPECT_EQ(ParseOnce("*1\r\n$-2\r\n").error, "Protocol error: invalid bulk length");
  EXPECT_EQ(ParseOnce("*1\r\n$abc\r\n").error, "Protocol error: invalid bulk length");
  EXPECT_EQ(ParseOnce("\"unbalanced\r\n").error, "Protocol error: unbalanced quotes in request");
  EXPECT_EQ(ParseOnce("*99999999999\r\n").error, "Protocol error: invalid multibulk length");
}

TEST(RequestParserTest, EnforcesLimits) {
  Limits limits;
  limits.max_bulk_len = 10;
  limits.max_args = 3;
  limits.max_inline = 16;
  EXPECT_EQ(ParseOnce("*1\r\n$11\r\n", limits).error, "Protocol error: invalid bulk length");
  EXPECT_EQ(ParseOnce("*1\r\n$10\r\n", limits).outcome, RequestParser::Outcome::kNeedMore);
  EXPECT_EQ(ParseOnce("*4\r\n", limits).error, "Protocol error: invalid multibulk length");
  EXPECT_EQ(ParseOnce(std::string(17, 'a'), limits).error,
            "Protocol error: too big inline request");
  EXPECT_EQ(ParseOnce("*" + std::string(17, '1'), limits).error,
            "Protocol error: too big mbulk count string");
  EXPECT_EQ(ParseOnce("*1\r\n$" + std::string(17, '1'), limits).error,
            "Protocol error: too big bulk count string");
}

TEST(RequestParserTest, InlineCommands) {
  Parsed r = ParseOnce("SET k \"a b\\x41\\n\" 'it\\'s'\r\n");
  ASSERT_EQ(r.outcome, RequestParser::Outcome::kCommand);
  EXPECT_THAT(r.args, ElementsAre("SET", "k", "a bA\n", "it's"));
  Parsed lf = ParseOnce("PING\n");
  EXPECT_THAT(lf.args, ElementsAre("PING"));
  EXPECT_EQ(ParseOnce("PING").outcome, RequestParser::Outcome::kNeedMore);
  EXPECT_EQ(ParseOnce("GET \"a\"b\r\n").outcome, RequestParser::Outcome::kError);
}

TEST(SplitInlineArgsTest, MatchesRedis) {
  std::vector<std::string> out;
  ASSERT_TRUE(SplitInlineArgs("  a  b\t c ", &out));
  EXPECT_THAT(out, ElementsAre("a", "b", "c"));
  out.clear();
  ASSERT_TRUE(SplitInlineArgs("foo\"bar baz\"", &out));
  EXPECT_THAT(out, ElementsAre("foobar baz"));
  out.clear();
  EXPECT_FALSE(SplitInlineArgs("'open", &out));
  out.clear();
  ASSERT_TRUE(SplitInlineArgs("\"\"", &out));
  EXPECT_THAT(out, ElementsAre(""));
}

TEST(ReplyWriterTest, Resp2AndResp3Spellings) {
  std::string out2, out3;
  ReplyWriter w2(&out2, 2), w3(&out3, 3);
  for (ReplyWriter* w : {&w2, &w3}) {
    w->Null();
    w->NullArray();
    w->MapHeader(1);
    w->SetHeader(2);
    w->Double(1.5);
    w->Bool(true);
    w->Verbatim("txt", "hi");
  }
  EXPECT_EQ(out2, "$-1\r\n*-1\r\n*2\r\n*2\r\n$3\r\n1.5\r\n:1\r\n$2\r\nhi\r\n");
  EXPECT_EQ(out3, "_\r\n_\r\n%1\r\n~2\r\n,1.5\r\n#t\r\n=6\r\ntxt:hi\r\n");
}

TEST(ReplyWriterTest, ScalarsAndErrors) {
  std::string out;
  ReplyWriter w(&out);
  w.SimpleString("OK");
  w.Error("ERR bad\r\nthing");
  w.Integer(-42);
  w.Bulk("");
  w.ArrayHeader(0);
  w.Double(0.1);
  w.Double(-std::numeric_limits<double>::infinity());
  EXPECT_EQ(out,
            "+OK\r\n-ERR bad  thing\r\n:-42\r\n$0\r\n\r\n*0\r\n$19\r\n0.10000000000000001\r\n"
            "$4\r\n-inf\r\n");
}

// An error quoting a huge argument is cut: a 50 MB option echoed whole was a 50 MB reply.
TEST(ReplyWriterTest, ALongErrorIsCut) {
  std::string out;
  ReplyWriter w(&out);
  w.Error("ERR Unsupported option " + std::string(1 << 20, 'x'));
  EXPECT_EQ(out.size(), 1 + kMaxErrorBytes + 2);
  EXPECT_TRUE(out.ends_with("x...\r\n"));
}

TEST(ParseReplyTest, RoundTripsWhatTheWriterWrites) {
  std::string out;
  ReplyWriter w(&out, 3);
  w.MapHeader(2);
  w.Bulk("a");
  w.Integer(1);
  w.SimpleString("b");
  w.ArrayHeader(3);
  w.Null();
  w.Double(2.5);
  w.Bool(false);
  size_t consumed = 0;
  Result<Reply> r = ParseReply(out, &consumed);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(consumed, out.size());
  EXPECT_EQ(r->ToString(), "{'a': (integer) 1, b: [(nil), (double) 2.5, (false)]}");
}

TEST(ParseReplyTest, ReportsIncompleteAndCorruptInput) {
  size_t consumed = 0;
  EXPECT_EQ(ParseReply("$5\r\nab", &consumed).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(ParseReply("*2\r\n:1\r\n", &consumed).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(ParseReply("?x\r\n", &consumed).status().code(), StatusCode::kCorruption);
  EXPECT_EQ(ParseReply("$2\r\nabcd\r\n", &consumed).status().code(), StatusCode::kCorruption);
  std::string deep(100, '*');
  std::string nested;
  for (int i = 0; i < 100; i++) nested += "*1\r\n";
  EXPECT_EQ(ParseReply(nested + ":1\r\n", &consumed).status().code(), StatusCode::kCorruption);
}

}  // namespace
}  // namespace floe::resp
