// Hardening tests for the connection, the protocol, transactions and the command boundary:
// each names the hostile input or the Redis behaviour it pins down.

#include <cstring>
#include <thread>

#include "server/command_test.h"

namespace floe::server {
namespace {

// ---- the input buffer and the parser: memory follows the bytes that arrived ----

TEST(InputBufferTest, AnAnnouncedLengthDoesNotSizeTheBuffer) {
  resp::InputBuffer in(16 * 1024, size_t{1} << 30);
  resp::RequestParser parser;
  const std::string header = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870000\r\n";
  std::vector<std::string_view> args;
  std::string error;
  size_t received = 0;
  // 20 KB after the header arrive in 4 KB reads.
  std::string stream = header + std::string(20000, 'a');
  while (received < stream.size()) {
    std::span<char> room = in.PrepareRead(parser.wanted());
    ASSERT_FALSE(room.empty());
    const size_t n = std::min<size_t>({room.size(), 4096, stream.size() - received});
    std::memcpy(room.data(), stream.data() + received, n);
    in.Commit(n);
    received += n;
    size_t consumed = 0;
    EXPECT_EQ(parser.Parse(in.data(), &args, &consumed, &error),
              resp::RequestParser::Outcome::kNeedMore);
    in.Consume(consumed);
  }
  EXPECT_GT(parser.wanted(), size_t{500} << 20);
  // Twice what arrived at most, never the half gigabyte announced.
  EXPECT_LE(in.capacity(), 2 * stream.size() + 16 * 1024);
}

TEST(InputBufferTest, GrowsGeometricallyAndShrinksWhenIdle) {
  resp::InputBuffer in(1024, size_t{1} << 20);
  size_t grows = 0, last = 0;
  for (size_t total = 0; total < 100000;) {
    std::span<char> room = in.PrepareRead(1 << 30);
    ASSERT_FALSE(room.empty());
    if (in.capacity() != last) grows++, last = in.capacity();
    std::memset(room.data(), 'x', room.size());
    in.Commit(room.size());
    total += room.size();
  }
  EXPECT_LE(grows, 10u);  // doubling, not one chunk at a time
  EXPECT_EQ(in.data().find_first_not_of('x'), std::string_view::npos);
  in.ShrinkIfIdle();
  EXPECT_GT(in.capacity(), 1024u);  // bytes are pending: kept
  in.Consume(in.size());
  in.ShrinkIfIdle();
  EXPECT_EQ(in.capacity(), 1024u);
}

TEST(InputBufferTest, StopsAtTheQueryBufferLimit) {
  resp::InputBuffer in(1024, 8192);
  size_t total = 0;
  for (;;) {
    std::span<char> room = in.PrepareRead(1 << 30);
    if (room.empty()) break;
    in.Commit(room.size());
    total += room.size();
    ASSERT_LT(total, 100000u);
  }
  EXPECT_GE(in.size(), 8192u);
  EXPECT_LE(in.capacity(), 8192u + 1024u);
}

TEST(RequestParserTest, UnauthenticatedClientsGetRedisLimits) {
  resp::Limits limits;
  limits.unauthenticated = true;
  resp::RequestParser parser(limits);
  std::vector<std::string_view> args;
  std::string error;
  size_t consumed = 0;
  EXPECT_EQ(parser.Parse("*11\r\n", &args, &consumed, &error),
            resp::RequestParser::Outcome::kError);
  EXPECT_EQ(error, "Protocol error: unauthenticated multibulk length");
  resp::RequestParser p2(limits);
  EXPECT_EQ(p2.Parse("*2\r\n$3\r\nGET\r\n$16385\r\n", &args, &consumed, &error),
            resp::RequestParser::Outcome::kError);
  EXPECT_EQ(error, "Protocol error: unauthenticated bulk length");
  resp::RequestParser p3(limits);
  const std::string ok = "*2\r\n$4\r\nAUTH\r\n$16384\r\n" + std::string(16384, 'p') + "\r\n";
  EXPECT_EQ(p3.Parse(ok, &args, &consumed, &error), resp::RequestParser::Outcome::kCommand);
  limits.unauthenticated = false;
  resp::RequestParser p4(limits);
  EXPECT_EQ(p4.Parse("*2\r\n$3\r\nGET\r\n$16385\r\n", &args, &consumed, &error),
            resp::RequestParser::Outcome::kNeedMore);
}

TEST(RequestParserTest, AnInlineArgumentKeepsItsNulByte) {
  resp::RequestParser parser;
  std::vector<std::string_view> args;
  std::string error;
  size_t consumed = 0;
  const std::string line("SET a\0b c\r\n", 11);
  ASSERT_EQ(parser.Parse(line, &args, &consumed, &error), resp::RequestParser::Outcome::kCommand);
  ASSERT_EQ(args.size(), 3u);
  EXPECT_EQ(args[1], std::string_view("a\0b", 3));
  EXPECT_EQ(args[2], "c");
}

}  // namespace
}  // namespace floe::server
