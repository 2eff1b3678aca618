// Hardening tests for the connection, the protocol, transactions and the command boundary:
// each names the hostile input or the Redis behaviour it pins down.

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "server/command_test.h"
#include "server/internal/command.h"

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
  // The same when the parser wants only a byte or two more (a request of many arguments).
  resp::InputBuffer many(1024, size_t{1} << 20);
  size_t grows_many = 0;
  last = 0;
  for (size_t total = 0; total < 100000;) {
    std::span<char> room = many.PrepareRead(2);
    if (many.capacity() != last) grows_many++, last = many.capacity();
    many.Commit(room.size());
    total += room.size();
  }
  EXPECT_LE(grows_many, 10u);
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

// ---- transactions, compared with redis-server 7.0 ----

TEST_F(CommandTest, AWatchedKeyTouchedWhileAbsentAbortsExec) {
  Session other(&engine_, 1);
  EXPECT_THAT(Run({"WATCH", "k"}), IsOk());
  EXPECT_THAT(RunOn(other, {"SET", "k", "1"}), IsOk());
  EXPECT_THAT(RunOn(other, {"DEL", "k"}), IsInt(1));
  EXPECT_THAT(Run({"MULTI"}), IsOk());
  EXPECT_THAT(Run({"INCR", "k"}), IsSimple("QUEUED"));
  EXPECT_THAT(Run({"EXEC"}), IsNil());
  EXPECT_THAT(Run({"GET", "k"}), IsNil());
  // The same with FLUSHALL removing it.
  EXPECT_THAT(Run({"WATCH", "k"}), IsOk());
  EXPECT_THAT(RunOn(other, {"SET", "k", "1"}), IsOk());
  EXPECT_THAT(RunOn(other, {"FLUSHALL"}), IsOk());
  Run({"MULTI"});
  Run({"INCR", "k"});
  EXPECT_THAT(Run({"EXEC"}), IsNil());
}

// Found by the randomized differential test: a write that stores a value already past its
// expiry leaves the key absent to readers, but it is a write of the key, and Redis's EXEC fails.
TEST_F(CommandTest, StoringAnAlreadyExpiredValueTouchesAnAbsentWatchedKey) {
  Session other(&engine_, 1);
  EXPECT_THAT(Run({"WATCH", "k"}), IsOk());
  EXPECT_THAT(RunOn(other, {"SET", "k", "a", "PXAT", "1000"}), IsOk());
  EXPECT_THAT(Run({"MULTI"}), IsOk());
  EXPECT_THAT(Run({"EXEC"}), IsNil());
  // But a key watched while expired stays clean when the expired value is removed.
  EXPECT_THAT(Run({"WATCH", "k"}), IsOk());
  EXPECT_THAT(RunOn(other, {"GETDEL", "k"}), IsNil());
  EXPECT_THAT(Run({"MULTI"}), IsOk());
  EXPECT_THAT(Run({"EXEC"}), IsArrayOfSize(0));
}

// Found by the randomized differential test: GETEX PERSIST of a key without an expiry is no
// write in Redis, so it does not abort a transaction watching the key.
TEST_F(CommandTest, GetExPersistOfAKeyWithoutExpiryAbortsNoWatch) {
  Session other(&engine_, 1);
  EXPECT_THAT(Run({"SET", "k", "v"}), IsOk());
  EXPECT_THAT(Run({"WATCH", "k"}), IsOk());
  EXPECT_THAT(RunOn(other, {"GETEX", "k", "PERSIST"}), IsBulk("v"));
  EXPECT_THAT(Run({"MULTI"}), IsOk());
  EXPECT_THAT(Run({"EXEC"}), IsArrayOfSize(0));
}

TEST_F(CommandTest, WritesThatLeaveAnAbsentWatchedKeyAloneDoNotAbort) {
  Session other(&engine_, 1);
  EXPECT_THAT(Run({"WATCH", "k"}), IsOk());
  EXPECT_THAT(RunOn(other, {"DEL", "k"}), IsInt(0));
  EXPECT_THAT(RunOn(other, {"SET", "k", "1", "XX"}), IsNil());
  EXPECT_THAT(RunOn(other, {"FLUSHALL"}), IsOk());
  EXPECT_THAT(RunOn(other, {"SET", "other", "1"}), IsOk());
  Run({"MULTI"});
  Run({"INCR", "k"});
  Reply r = Run({"EXEC"});
  ASSERT_THAT(r, IsArrayOfSize(1));
  EXPECT_THAT(r.elements[0], IsInt(1));
  // Nothing stays registered once the transaction is over.
  EXPECT_TRUE(engine_.absent_watches().empty());
}

TEST_F(CommandTest, OnlyRedissTransactionCommandsRunInsideMulti) {
  EXPECT_THAT(Run({"MULTI"}), IsOk());
  for (std::vector<std::string> cmd : std::vector<std::vector<std::string>>{{"UNWATCH"},
                                                                            {"CLIENT", "ID"},
                                                                            {"CONFIG", "GET", "hz"},
                                                                            {"HELLO", "2"},
                                                                            {"AUTH", "x"},
                                                                            {"SELECT", "0"}}) {
    EXPECT_THAT(Run(cmd), IsSimple("QUEUED")) << cmd[0];
  }
  EXPECT_THAT(Run({"MULTI"}), IsErr("ERR MULTI calls can not be nested"));
  EXPECT_THAT(Run({"WATCH", "a"}), IsErr("ERR WATCH inside MULTI is not allowed"));
  Reply r = Run({"EXEC"});
  ASSERT_THAT(r, IsArrayOfSize(6));
  EXPECT_THAT(r.elements[0], IsOk());
  EXPECT_THAT(r.elements[4], ErrStartsWith("ERR AUTH <password> called without"));
}

TEST_F(CommandTest, AMalformedExecDiscardsTheTransaction) {
  EXPECT_THAT(Run({"MULTI"}), IsOk());
  EXPECT_THAT(Run({"SET", "k", "v"}), IsSimple("QUEUED"));
  EXPECT_THAT(Run({"EXEC", "x"}),
              IsErr("EXECABORT Transaction discarded because of: wrong number of arguments for "
                    "'exec' command"));
  EXPECT_THAT(Run({"EXEC"}), IsErr("ERR EXEC without MULTI"));
  EXPECT_THAT(Run({"GET", "k"}), IsNil());
  // Other malformed commands flag the transaction, which EXEC then refuses.
  Run({"MULTI"});
  EXPECT_THAT(Run({"DISCARD", "x"}), IsErr("ERR wrong number of arguments for 'discard' command"));
  EXPECT_THAT(Run({"EXEC"}), IsErr("EXECABORT Transaction discarded because of previous errors."));
}

// ---- the safety net at the command boundary ----

TEST_F(CommandTest, AnExceptionInAHandlerBecomesAnErrorReplyAndIsCounted) {
  Run({"SET", "k", "v"});
  session_.TEST_SetBeforeHandler([](std::string_view command) {
    if (command == "get") throw std::runtime_error("boom");
  });
  EXPECT_EQ(engine_.internal_errors(), 0u);
  EXPECT_THAT(Run({"GET", "k"}), IsErr("ERR internal error: boom"));
  EXPECT_EQ(engine_.internal_errors(), 1u);
  EXPECT_THAT(Run({"PING"}), IsSimple("PONG"));  // the session keeps serving
  Reply info = Run({"INFO", "stats"});
  EXPECT_THAT(info.str, HasSubstr("errors_internal:1\r\n"));
  EXPECT_THAT(Run({"INFO", "errorstats"}).str, HasSubstr("errorstat_ERR:count=1\r\n"));
  // Inside EXEC the failing command is one error in the array; the others run.
  Run({"MULTI"});
  Run({"SET", "k", "w"});
  Run({"GET", "k"});
  Reply r = Run({"EXEC"});
  ASSERT_THAT(r, IsArrayOfSize(2));
  EXPECT_THAT(r.elements[0], IsOk());
  EXPECT_THAT(r.elements[1], IsErr("ERR internal error: boom"));
  EXPECT_EQ(engine_.internal_errors(), 2u);
}

TEST_F(CommandTest, ErrorStatsCountErrorRepliesByCode) {
  Run({"SET", "s", "v"});
  Run({"INCR", "s"});
  Run({"NOSUCH"});
  Run({"EXEC", "x"});
  Run({"HELLO", "4"});
  Run({"SET", "h", "v"});
  const std::string text = Run({"INFO", "errorstats"}).str;
  EXPECT_THAT(text, HasSubstr("errorstat_ERR:count=2\r\n"));
  EXPECT_THAT(text, HasSubstr("errorstat_EXECABORT:count=1\r\n"));
  EXPECT_THAT(text, HasSubstr("errorstat_NOPROTO:count=1\r\n"));
  EXPECT_THAT(Run({"INFO", "stats"}).str, HasSubstr("total_error_replies:4\r\n"));
}

// A cluster error that travels as a Status (a member unreachable during a map task) keeps its
// code word: no "ERR " in front of it, and errorstats count it under its own name.
TEST_F(CommandTest, ClusterErrorCodesAreKeptAndCounted) {
  EXPECT_EQ(internal::ErrorReplyText(Status::Unavailable("CLUSTERDOWN The node x is unreachable")),
            "CLUSTERDOWN The node x is unreachable");
  EXPECT_EQ(internal::ErrorReplyText(Status::InvalidArgument("CROSSSLOT Keys in request")),
            "CROSSSLOT Keys in request");
  EXPECT_EQ(internal::ErrorReplyText(Status::Unavailable("CLUSTERDOWNx")), "ERR CLUSTERDOWNx");
  WorkerStats stats;
  internal::CountErrorReply(stats, "-CLUSTERDOWN The cluster is down\r\n");
  internal::CountErrorReply(stats, "-MOVED 3999 127.0.0.1:6381\r\n");
  const auto codes = internal::RedisErrorCodes();
  const auto at = [&](std::string_view code) {
    return static_cast<size_t>(std::find(codes.begin(), codes.end(), code) - codes.begin());
  };
  EXPECT_EQ(stats.error_replies[at("CLUSTERDOWN")].load(), 1u);
  EXPECT_EQ(stats.error_replies[at("MOVED")].load(), 1u);
  EXPECT_EQ(stats.error_replies[codes.size()].load(), 0u);  // none counted as another code
}

TEST_F(CommandTest, OutOfMemoryInAHandlerBecomesTheOomReply) {
  session_.TEST_SetBeforeHandler([](std::string_view command) {
    if (command == "set") throw std::bad_alloc();
  });
  EXPECT_THAT(Run({"SET", "k", "v"}),
              IsErr("OOM command not allowed when used memory > 'maxmemory'."));
  EXPECT_EQ(engine_.internal_errors(), 1u);
  session_.TEST_SetBeforeHandler(nullptr);
  EXPECT_THAT(Run({"SET", "k", "v"}), IsOk());
}

// ---- differences from Redis 7.0 (each compared with redis-server) ----

TEST_F(CommandTest, SetAndGetExTakeTheLastOfARepeatedExpiry) {
  EXPECT_THAT(Run({"SET", "k", "v", "EX", "1", "EX", "200"}), IsOk());
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(200));
  EXPECT_THAT(Run({"GETEX", "k", "EX", "1", "EX", "300"}), IsBulk("v"));
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(300));
  EXPECT_THAT(Run({"GETEX", "k", "PERSIST", "PERSIST"}), IsBulk("v"));
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(-1));
  // Different expiry options still conflict.
  EXPECT_THAT(Run({"SET", "k", "v", "EX", "100", "PX", "5"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"GETEX", "k", "EX", "1", "PERSIST"}), IsErr("ERR syntax error"));
}

TEST_F(CommandTest, AnExpirysNumberIsReadAfterTheOptions) {
  EXPECT_THAT(Run({"SET", "k", "v", "PX", "ex", "1"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"SET", "k", "v", "PX", "ex"}), IsErr(kNotInt));
  EXPECT_THAT(Run({"SET", "k", "v", "EX", "0"}), IsErr("ERR invalid expire time in 'set' command"));
  EXPECT_THAT(Run({"GETEX", "k", "PX", "ex"}), IsNil());  // read after the key, as Redis
  EXPECT_THAT(Run({"GETEX", "k", "PX", "ex", "PX"}), IsErr("ERR syntax error"));  // before it
  Run({"SET", "k", "v"});
  EXPECT_THAT(Run({"GETEX", "k", "PX", "ex"}), IsErr(kNotInt));
  EXPECT_THAT(Run({"SET", "k", "v", "EXAT", "9223372036854776"}),
              IsErr("ERR invalid expire time in 'set' command"));
  EXPECT_THAT(Run({"SET", "k", "v", "PXAT", "9223372036854775807"}), IsOk());
}

TEST_F(CommandTest, ATooLongKeyIsAnErrError) {
  const std::string key(65537, 'k');
  EXPECT_THAT(Run({"SET", key, "v"}), IsErr("ERR key of 65537 bytes exceeds the limit of 65536"));
  EXPECT_THAT(Run({"INCR", key}), IsErr("ERR key of 65537 bytes exceeds the limit of 65536"));
  EXPECT_THAT(Run({"MSET", key, "v"}), IsErr("ERR key of 65537 bytes exceeds the limit of 65536"));
}

TEST_F(CommandTest, ClientKillOfOnesOwnAddressAnswersFirst) {
  Session other(&engine_, 1, "127.0.0.1:5000");
  EXPECT_THAT(RunOn(other, {"CLIENT", "KILL", "127.0.0.1:5000"}), IsOk());
  EXPECT_TRUE(other.close_requested());
  Session third(&engine_, 1, "127.0.0.1:5001");
  EXPECT_THAT(RunOn(third, {"CLIENT", "KILL", "ADDR", "127.0.0.1:5001", "SKIPME", "no"}), IsInt(1));
  EXPECT_TRUE(third.close_requested());
}

TEST_F(CommandTest, ClientKillFiltersByUserAndType) {
  Session other(&engine_, 1, "127.0.0.1:5002");
  EXPECT_THAT(Run({"CLIENT", "KILL", "USER", "x"}), IsErr("ERR No such user 'x'"));
  EXPECT_THAT(Run({"CLIENT", "KILL", "TYPE", "foo"}), IsErr("ERR Unknown client type 'foo'"));
  EXPECT_THAT(Run({"CLIENT", "KILL", "TYPE", "pubsub"}), IsInt(0));
  EXPECT_FALSE(other.close_requested());
  EXPECT_THAT(Run({"CLIENT", "KILL", "USER", "default", "TYPE", "normal"}), IsInt(1));
  EXPECT_TRUE(other.close_requested());
}

TEST_F(CommandTest, ClientListIdsAndLongLines) {
  EXPECT_THAT(Run({"CLIENT", "LIST", "ID", "0"}), IsBulk(""));
  EXPECT_THAT(Run({"CLIENT", "LIST", "ID", "-1"}), IsBulk(""));
  EXPECT_THAT(Run({"CLIENT", "LIST", "ID", "x"}), IsErr("ERR Invalid client ID"));
  const std::string name(2000, 'n');
  EXPECT_THAT(Run({"CLIENT", "SETNAME", name}), IsOk());
  Reply r = Run({"CLIENT", "INFO"});
  EXPECT_THAT(r.str, HasSubstr("name=" + name + " age="));
  EXPECT_THAT(r.str, HasSubstr(" resp=2\n"));
}

TEST_F(CommandTest, ScanReadsItsCursorAsRedisDoes) {
  Run({"SET", "a", "1"});
  Reply r = Run({"SCAN", "-1"});
  ASSERT_THAT(r, IsArrayOfSize(2));
  EXPECT_THAT(Run({"SCAN", "18446744073709551616"}), IsErr("ERR invalid cursor"));
  EXPECT_THAT(Run({"SCAN", "-"}), IsErr("ERR invalid cursor"));
  EXPECT_THAT(Run({"SCAN", "0", "COUNT", "9223372036854775807"}), IsArrayOfSize(2));
  EXPECT_THAT(Run({"SCAN", "0", "COUNT", "0"}), IsErr("ERR syntax error"));
}

TEST_F(CommandTest, IncrByFloatTakesASubnormalIncrement) {
  EXPECT_THAT(Run({"INCRBYFLOAT", "k", "1e-4950"}), IsBulk("0"));
  EXPECT_THAT(Run({"INCRBYFLOAT", "k", "1e4950"}), IsErr("ERR value is not a valid float"));
  Run({"SET", "f", "1e-4950"});
  EXPECT_THAT(Run({"INCRBYFLOAT", "f", "1"}), IsBulk("1"));
}

// Integers from a client at the edges of int64: no overflow, Redis's replies.
TEST_F(CommandTest, ExtremeIntegersInStringAndConnectionCommands) {
  Run({"SET", "s", "hello"});
  EXPECT_THAT(Run({"GETRANGE", "s", "-9223372036854775808", "9223372036854775807"}),
              IsBulk("hello"));
  EXPECT_THAT(Run({"GETRANGE", "s", "9223372036854775807", "-9223372036854775808"}), IsBulk(""));
  Run({"SET", "n", "9223372036854775807"});
  EXPECT_THAT(Run({"INCR", "n"}), IsErr("ERR increment or decrement would overflow"));
  EXPECT_THAT(Run({"DECRBY", "n", "-9223372036854775808"}), IsErr("ERR decrement would overflow"));
  Run({"SET", "n", "-9223372036854775808"});
  EXPECT_THAT(Run({"INCRBY", "n", "-1"}), IsErr("ERR increment or decrement would overflow"));
  EXPECT_THAT(Run({"SETEX", "k", "9223372036854775807", "v"}),
              IsErr("ERR invalid expire time in 'setex' command"));
  EXPECT_THAT(Run({"PSETEX", "k", "9223372036854775807", "v"}),
              IsErr("ERR invalid expire time in 'psetex' command"));
  EXPECT_THAT(Run({"SELECT", "9223372036854775808"}), IsErr(kNotInt));
  EXPECT_THAT(Run({"CLIENT", "KILL", "ID", "18446744073709551615"}),
              IsErr("ERR client-id should be greater than 0"));
  EXPECT_THAT(Run({"EXPIRE", "s", "9223372036854775807"}),
              IsErr("ERR invalid expire time in 'expire' command"));
  EXPECT_THAT(Run({"PEXPIREAT", "s", "-9223372036854775808"}), IsInt(1));
  Run({"SET", "end", "v", "PXAT", "9223372036854775807"});
  EXPECT_THAT(Run({"EXPIRETIME", "end"}), IsInt(9223372036854776));  // as Redis, no overflow
  EXPECT_THAT(Run({"PEXPIRETIME", "end"}), IsInt(INT64_MAX));
}

TEST_F(CommandTest, MGetReadsOneSnapshotOfItsKeys) {
  // A writer on another thread sets a then b to the same counter, one SET at a time. The
  // states are (i-1, i-1), (i, i-1), (i, i): a snapshot never shows b ahead of a. Reading the
  // keys one by one can (a read before the writer's SETs, b after).
  Run({"MSET", "a", "0", "b", "0"});
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    Session w(&engine_, 1);
    for (int i = 1; !stop.load(); i++) {
      const std::string v = std::to_string(i);
      w.Run({"SET", "a", v});
      w.Run({"SET", "b", v});
    }
  });
  // Absent keys between a and b widen the window a per-key read leaves open.
  std::vector<std::string> mget = {"MGET", "a"};
  for (int i = 0; i < 200; i++) mget.push_back("absent" + std::to_string(i));
  mget.push_back("b");
  int ahead = 0;
  for (int i = 0; i < 2000; i++) {
    Reply r = Run(mget);
    ASSERT_THAT(r, IsArrayOfSize(202));
    if (std::stoll(r.elements[201].str) > std::stoll(r.elements[0].str)) ahead++;
  }
  stop.store(true);
  writer.join();
  EXPECT_EQ(ahead, 0);
}

}  // namespace
}  // namespace floe::server
