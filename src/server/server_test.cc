// In-process command tests: a Session runs commands against an Engine, replies are decoded and
// matched. Every command and its error replies, with Redis 7.0's texts.

#include <thread>

#include "server/command_test.h"

namespace floe::server {
namespace {

// ---- connection ----

TEST_F(CommandTest, PingEchoSelect) {
  EXPECT_THAT(Run({"PING"}), IsSimple("PONG"));
  EXPECT_THAT(Run({"ping", "hi"}), IsBulk("hi"));
  EXPECT_THAT(Run({"PING", "a", "b"}), IsErr("ERR wrong number of arguments for 'ping' command"));
  EXPECT_THAT(Run({"ECHO", "x y"}), IsBulk("x y"));
  EXPECT_THAT(Run({"ECHO"}), IsErr("ERR wrong number of arguments for 'echo' command"));
  EXPECT_THAT(Run({"SELECT", "0"}), IsOk());
  EXPECT_THAT(Run({"SELECT", "1"}), IsErr("ERR DB index is out of range"));
  EXPECT_THAT(Run({"SELECT", "x"}), IsErr(kNotInt));
}

TEST_F(CommandTest, UnknownCommandAndSubcommand) {
  EXPECT_THAT(Run({"NOPE", "a", "b"}),
              IsErr("ERR unknown command 'NOPE', with args beginning with: 'a' 'b' "));
  EXPECT_THAT(Run({"CLIENT", "NOPE"}), IsErr("ERR unknown subcommand 'NOPE'. Try CLIENT HELP."));
  EXPECT_THAT(Run({"CLIENT"}), IsErr("ERR wrong number of arguments for 'client' command"));
  EXPECT_THAT(Run({"CLIENT", "SETNAME"}),
              IsErr("ERR wrong number of arguments for 'client|setname' command"));
}

TEST_F(CommandTest, HelloSwitchesProtocol) {
  Reply r = Run({"HELLO", "3"});
  ASSERT_EQ(r.type, Reply::Type::kMap);
  EXPECT_EQ(r.elements[0].str, "server");
  EXPECT_EQ(session_.protocol(), 3);
  EXPECT_THAT(Run({"GET", "missing"}), IsNil());
  EXPECT_EQ(session_.Run({"GET", "missing"}), "_\r\n");
  EXPECT_THAT(Run({"HELLO", "4"}), IsErr("NOPROTO unsupported protocol version"));
  EXPECT_THAT(Run({"HELLO", "x"}), IsErr("ERR Protocol version is not an integer or out of range"));
  EXPECT_THAT(Run({"HELLO", "3", "BOGUS"}), IsErr("ERR Syntax error in HELLO option 'BOGUS'"));
  r = Run({"HELLO", "2", "SETNAME", "app"});
  EXPECT_EQ(r.type, Reply::Type::kArray);  // RESP2 map = flat array
  EXPECT_THAT(Run({"CLIENT", "GETNAME"}), IsBulk("app"));
  EXPECT_EQ(session_.Run({"GET", "missing"}), "$-1\r\n");
}

TEST_F(CommandTest, ResetRestoresDefaults) {
  Run({"HELLO", "3", "SETNAME", "n"});
  Run({"MULTI"});
  EXPECT_THAT(Run({"RESET"}), IsSimple("RESET"));
  EXPECT_EQ(session_.protocol(), 2);
  EXPECT_THAT(Run({"CLIENT", "GETNAME"}), IsNil());
  EXPECT_THAT(Run({"EXEC"}), IsErr("ERR EXEC without MULTI"));
}

TEST_F(CommandTest, QuitClosesAfterReplying) {
  EXPECT_THAT(Run({"QUIT"}), IsOk());
  EXPECT_TRUE(session_.close_requested());
}

TEST(AuthTest, RequirePassGatesCommands) {
  Config c;
  c.requirepass = "s3cret";
  Engine engine(c);
  Session s(&engine, 0);
  auto run = [&](std::vector<std::string> a) { return CommandTest::Decode(s.Run(a)); };
  EXPECT_THAT(run({"GET", "k"}), IsErr("NOAUTH Authentication required."));
  EXPECT_THAT(run({"AUTH", "wrong"}),
              IsErr("WRONGPASS invalid username-password pair or user is disabled."));
  EXPECT_THAT(run({"AUTH", "other", "s3cret"}),
              IsErr("WRONGPASS invalid username-password pair or user is disabled."));
  EXPECT_THAT(run({"HELLO", "3"}), ErrStartsWith("NOAUTH HELLO must be called"));
  EXPECT_THAT(run({"AUTH", "s3cret"}), IsOk());
  EXPECT_THAT(run({"GET", "k"}), IsNil());
  Session s2(&engine, 0);
  Reply hello = CommandTest::Decode(s2.Run({"HELLO", "3", "AUTH", "default", "s3cret"}));
  EXPECT_EQ(hello.type, Reply::Type::kMap);
  EXPECT_THAT(CommandTest::Decode(s2.Run({"PING"})), IsSimple("PONG"));
}

TEST_F(CommandTest, AuthWithoutPasswordConfigured) {
  EXPECT_THAT(Run({"AUTH", "x"}),
              IsErr("ERR AUTH <password> called without any password configured for the default "
                    "user. Are you sure your configuration is correct?"));
  EXPECT_THAT(Run({"AUTH", "default", "anything"}), IsOk());
  EXPECT_THAT(Run({"AUTH", "a", "b", "c"}), IsErr("ERR syntax error"));
}

TEST_F(CommandTest, ClientIdNameListInfoKill) {
  EXPECT_THAT(Run({"CLIENT", "ID"}), IsInt(static_cast<int64_t>(session_.id())));
  EXPECT_THAT(Run({"CLIENT", "GETNAME"}), IsNil());
  EXPECT_THAT(Run({"CLIENT", "SETNAME", "bad name"}),
              IsErr("ERR Client names cannot contain spaces, newlines or special characters."));
  EXPECT_THAT(Run({"CLIENT", "SETNAME", "worker-1"}), IsOk());
  Session other(&engine_, 1, "127.0.0.1:5555");
  Reply list = Run({"CLIENT", "LIST"});
  ASSERT_EQ(list.type, Reply::Type::kBulk);
  EXPECT_THAT(list.str, HasSubstr("name=worker-1"));
  EXPECT_THAT(list.str, HasSubstr("addr=127.0.0.1:5555"));
  Reply only = Run({"CLIENT", "LIST", "ID", std::to_string(other.id())});
  EXPECT_THAT(only.str, StartsWith("id=" + std::to_string(other.id()) + " "));
  EXPECT_THAT(Run({"CLIENT", "LIST", "TYPE", "weird"}), IsErr("ERR Unknown client type 'weird'"));
  EXPECT_THAT(Run({"CLIENT", "LIST", "ID", "x"}), IsErr("ERR Invalid client ID"));
  EXPECT_THAT(Run({"CLIENT", "INFO"}).str, HasSubstr("cmd=client|info"));
  EXPECT_THAT(Run({"CLIENT", "KILL", "1.2.3.4:1"}), IsErr("ERR No such client"));
  EXPECT_THAT(Run({"CLIENT", "KILL", "127.0.0.1:5555"}), IsOk());
  EXPECT_TRUE(other.close_requested());
  Session third(&engine_, 0, "127.0.0.1:6666");
  EXPECT_THAT(Run({"CLIENT", "KILL", "ID", std::to_string(third.id())}), IsInt(1));
  EXPECT_TRUE(third.close_requested());
  EXPECT_THAT(Run({"CLIENT", "KILL", "ID", std::to_string(session_.id())}), IsInt(0));  // SKIPME
  EXPECT_THAT(Run({"CLIENT", "KILL", "ID"}), IsErr("ERR No such client"));  // the old form
  EXPECT_THAT(Run({"CLIENT", "KILL", "ID", "1", "SKIPME"}), IsErr("ERR syntax error"));
  EXPECT_EQ(Run({"CLIENT", "HELP"}).type, Reply::Type::kArray);
}

// ---- server ----

TEST_F(CommandTest, DbSizeFlushTime) {
  Run({"SET", "a", "1"});
  Run({"SET", "b", "2"});
  EXPECT_THAT(Run({"DBSIZE"}), IsInt(2));
  EXPECT_THAT(Run({"FLUSHDB", "BOGUS"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"FLUSHDB", "ASYNC"}), IsOk());
  EXPECT_THAT(Run({"DBSIZE"}), IsInt(0));
  Run({"SET", "c", "3"});
  EXPECT_THAT(Run({"FLUSHALL"}), IsOk());
  EXPECT_THAT(Run({"DBSIZE"}), IsInt(0));
  Reply t = Run({"TIME"});
  ASSERT_THAT(t, IsArrayOfSize(2));
  EXPECT_NEAR(std::stoll(t.elements[0].str), NowMs() / 1000, 2);
}

TEST_F(CommandTest, InfoSections) {
  Run({"SET", "k", "v"});
  Run({"GET", "k"});
  Run({"GET", "nope"});
  Reply all = Run({"INFO"});
  ASSERT_EQ(all.type, Reply::Type::kBulk);
  for (const char* s :
       {"# Server", "# Clients", "# Memory", "# Stats", "# Keyspace", "db0:keys=1,expires=0",
        "keyspace_hits:1", "keyspace_misses:1", "connected_clients:1"}) {
    EXPECT_THAT(all.str, HasSubstr(s));
  }
  EXPECT_THAT(all.str, Not(HasSubstr("# Commandstats")));
  Reply cs = Run({"INFO", "commandstats"});
  EXPECT_THAT(cs.str, HasSubstr("cmdstat_get:calls=2,"));
  EXPECT_THAT(cs.str, Not(HasSubstr("# Server")));
  EXPECT_THAT(Run({"INFO", "everything"}).str, HasSubstr("# Commandstats"));
  Run({"HELLO", "3"});
  EXPECT_EQ(Run({"INFO", "server"}).type, Reply::Type::kVerbatim);
}

TEST_F(CommandTest, ConfigGetSet) {
  Reply r = Run({"CONFIG", "GET", "maxmemory"});
  ASSERT_THAT(r, IsArrayOfSize(2));
  EXPECT_EQ(r.elements[1].str, "0");
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", "10mb"}), IsOk());
  EXPECT_EQ(Run({"CONFIG", "GET", "maxmemory"}).elements[1].str, "10485760");
  EXPECT_EQ(engine_.maxmemory(), 10485760);
  EXPECT_THAT(Run({"CONFIG", "GET", "max*"}), IsArrayOfSize(6));
  EXPECT_THAT(Run({"CONFIG", "SET", "nosuch", "1"}),
              IsErr("ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"));
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", "lots"}),
              IsErr("ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument "
                    "must be a memory value"));
  EXPECT_THAT(Run({"CONFIG", "SET", "port", "1"}),
              IsErr("ERR CONFIG SET failed (possibly related to argument 'port') - can't set "
                    "immutable config"));
  // All or nothing: a bad second pair leaves the first unapplied.
  EXPECT_THAT(Run({"CONFIG", "SET", "timeout", "5", "maxmemory", "bad"}), ErrStartsWith("ERR"));
  EXPECT_EQ(Run({"CONFIG", "GET", "timeout"}).elements[1].str, "0");
  EXPECT_THAT(Run({"CONFIG", "SET", "timeout"}),
              IsErr("ERR wrong number of arguments for 'config|set' command"));
  EXPECT_THAT(Run({"CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 512kb 10"}), IsOk());
  EXPECT_EQ(engine_.config().output_hard_limit, 1 << 20);
}

TEST_F(CommandTest, MaxMemoryRefusesWrites) {
  const size_t base = engine_.store().MemoryUsed();
  Run({"SET", "big", std::string(100000, 'x')});
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", std::to_string(base + 50000)}), IsOk());
  std::this_thread::sleep_for(std::chrono::milliseconds(3));  // the usage cache is 1 ms old
  EXPECT_THAT(Run({"SET", "k", "v"}),
              IsErr("OOM command not allowed when used memory > 'maxmemory'."));
  EXPECT_THAT(Run({"GET", "big"}), IsBulk(std::string(100000, 'x')));  // reads still work
  EXPECT_THAT(Run({"DEL", "big"}), IsInt(1));                          // and deletes
  std::this_thread::sleep_for(std::chrono::milliseconds(3));
  EXPECT_THAT(Run({"SET", "k", "v"}), IsOk());
}

TEST_F(CommandTest, CommandIntrospection) {
  Reply count = Run({"COMMAND", "COUNT"});
  ASSERT_EQ(count.type, Reply::Type::kInteger);
  EXPECT_GE(count.integer, 60);
  Reply info = Run({"COMMAND", "INFO", "get", "nosuch"});
  ASSERT_THAT(info, IsArrayOfSize(2));
  EXPECT_EQ(info.elements[0].elements[0].str, "get");
  EXPECT_THAT(info.elements[0].elements[1], IsInt(2));
  EXPECT_EQ(info.elements[1].type, Reply::Type::kNull);
  Reply docs = Run({"COMMAND", "DOCS", "set"});
  ASSERT_EQ(docs.elements.size(), 2u);
  EXPECT_EQ(docs.elements[0].str, "set");
  Reply list = Run({"COMMAND", "LIST", "FILTERBY", "PATTERN", "client*"});
  EXPECT_GE(list.elements.size(), 7u);
  EXPECT_THAT(Run({"COMMAND", "LIST", "FILTERBY", "nope", "x"}), IsErr("ERR syntax error"));
  EXPECT_EQ(Run({"COMMAND"}).elements.size(), static_cast<size_t>(count.integer));
}

// ---- strings ----

TEST_F(CommandTest, GetSetBasics) {
  EXPECT_THAT(Run({"GET", "k"}), IsNil());
  EXPECT_THAT(Run({"SET", "k", "v"}), IsOk());
  EXPECT_THAT(Run({"GET", "k"}), IsBulk("v"));
  EXPECT_THAT(Run({"SET", "k"}), IsErr("ERR wrong number of arguments for 'set' command"));
  EXPECT_THAT(Run({"GET", "k", "x"}), IsErr("ERR wrong number of arguments for 'get' command"));
}

TEST_F(CommandTest, SetOptions) {
  EXPECT_THAT(Run({"SET", "k", "1", "NX"}), IsOk());
  EXPECT_THAT(Run({"SET", "k", "2", "NX"}), IsNil());
  EXPECT_THAT(Run({"SET", "k", "3", "XX"}), IsOk());
  EXPECT_THAT(Run({"SET", "absent", "3", "XX"}), IsNil());
  EXPECT_THAT(Run({"SET", "k", "4", "GET"}), IsBulk("3"));
  EXPECT_THAT(Run({"SET", "new", "4", "GET"}), IsNil());
  EXPECT_THAT(Run({"SET", "k", "5", "NX", "GET"}), IsBulk("4"));
  EXPECT_THAT(Run({"SET", "k", "v", "NX", "XX"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"SET", "k", "v", "EX", "10", "PX", "10"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"SET", "k", "v", "EX"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"SET", "k", "v", "EX", "0"}), IsErr("ERR invalid expire time in 'set' command"));
  EXPECT_THAT(Run({"SET", "k", "v", "EX", "x"}), IsErr(kNotInt));
  EXPECT_THAT(Run({"SET", "k", "v", "EX", "9223372036854775"}),
              IsErr("ERR invalid expire time in 'set' command"));
  EXPECT_THAT(Run({"SET", "k", "v", "EX", "100"}), IsOk());
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(100));
  EXPECT_THAT(Run({"SET", "k", "w", "KEEPTTL"}), IsOk());
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(100));
  EXPECT_THAT(Run({"SET", "k", "w"}), IsOk());
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(-1));
  EXPECT_THAT(Run({"SET", "k", "v", "PX", "100000"}), IsOk());
  EXPECT_THAT(Run({"PTTL", "k"}).integer,
              ::testing::AllOf(::testing::Gt(99000), ::testing::Le(100000)));
  const std::string future = std::to_string(NowMs() / 1000 + 1000);
  EXPECT_THAT(Run({"SET", "k", "v", "EXAT", future}), IsOk());
  EXPECT_THAT(Run({"EXPIRETIME", "k"}), IsInt(std::stoll(future)));
  EXPECT_THAT(Run({"SET", "k", "v", "PXAT", std::to_string(NowMs() + 500000)}), IsOk());
  EXPECT_THAT(Run({"SET", "k", "v", "KEEPTTL", "EX", "1"}), IsErr("ERR syntax error"));
}

TEST_F(CommandTest, SetGetOnWrongTypeIsRefused) {
  // Only strings exist today; a value of another type is planted directly in the store.
  engine_.store().Put(*store::Value::Make("h", 99, "x"));
  EXPECT_THAT(Run({"SET", "h", "v", "GET"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"GET", "h"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"INCR", "h"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"APPEND", "h", "x"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"STRLEN", "h"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"GETRANGE", "h", "0", "1"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"SETRANGE", "h", "0", "x"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"GETDEL", "h"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"GETEX", "h"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"GETSET", "h", "v"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"INCRBYFLOAT", "h", "1"}), IsErr(kWrongType));
  Reply m = Run({"MGET", "h"});
  EXPECT_THAT(m.elements[0], IsNil());
  EXPECT_THAT(Run({"SET", "h", "v"}), IsOk());  // plain SET replaces any type
  EXPECT_THAT(Run({"GET", "h"}), IsBulk("v"));
}

TEST_F(CommandTest, SetNxSetExPSetExGetSetGetDelGetEx) {
  EXPECT_THAT(Run({"SETNX", "k", "1"}), IsInt(1));
  EXPECT_THAT(Run({"SETNX", "k", "2"}), IsInt(0));
  EXPECT_THAT(Run({"SETEX", "k", "100", "v"}), IsOk());
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(100));
  EXPECT_THAT(Run({"SETEX", "k", "0", "v"}), IsErr("ERR invalid expire time in 'setex' command"));
  EXPECT_THAT(Run({"SETEX", "k", "x", "v"}), IsErr(kNotInt));
  EXPECT_THAT(Run({"PSETEX", "k", "-5", "v"}),
              IsErr("ERR invalid expire time in 'psetex' command"));
  EXPECT_THAT(Run({"PSETEX", "k", "100000", "v"}), IsOk());
  EXPECT_THAT(Run({"GETSET", "k", "w"}), IsBulk("v"));
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(-1));
  EXPECT_THAT(Run({"GETSET", "n", "w"}), IsNil());
  EXPECT_THAT(Run({"GETDEL", "k"}), IsBulk("w"));
  EXPECT_THAT(Run({"GETDEL", "k"}), IsNil());
  Run({"SET", "g", "v"});
  EXPECT_THAT(Run({"GETEX", "g", "EX", "50"}), IsBulk("v"));
  EXPECT_THAT(Run({"TTL", "g"}), IsInt(50));
  EXPECT_THAT(Run({"GETEX", "g", "PERSIST"}), IsBulk("v"));
  EXPECT_THAT(Run({"TTL", "g"}), IsInt(-1));
  EXPECT_THAT(Run({"GETEX", "g", "PXAT", "1"}), IsBulk("v"));  // in the past: deleted
  EXPECT_THAT(Run({"EXISTS", "g"}), IsInt(0));
  // As Redis: the key is looked up before the expiry's number is read.
  EXPECT_THAT(Run({"GETEX", "g", "EX", "0"}), IsNil());
  Run({"SET", "g", "v"});
  EXPECT_THAT(Run({"GETEX", "g", "EX", "0"}), IsErr("ERR invalid expire time in 'getex' command"));
  Run({"DEL", "g"});
  EXPECT_THAT(Run({"GETEX", "g", "PERSIST", "EX", "1"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"GETEX", "g", "NX"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"GETEX", "missing"}), IsNil());
}

TEST_F(CommandTest, MGetMSetMSetNx) {
  EXPECT_THAT(Run({"MSET", "a", "1", "b", "2"}), IsOk());
  Reply r = Run({"MGET", "a", "b", "c"});
  ASSERT_THAT(r, IsArrayOfSize(3));
  EXPECT_THAT(r.elements[0], IsBulk("1"));
  EXPECT_THAT(r.elements[1], IsBulk("2"));
  EXPECT_THAT(r.elements[2], IsNil());
  EXPECT_THAT(Run({"MSET", "a", "1", "b"}),
              IsErr("ERR wrong number of arguments for 'mset' command"));
  EXPECT_THAT(Run({"MSETNX", "a", "9", "z", "9"}), IsInt(0));
  EXPECT_THAT(Run({"EXISTS", "z"}), IsInt(0));
  EXPECT_THAT(Run({"MSETNX", "y", "9", "z", "9"}), IsInt(1));
  EXPECT_THAT(Run({"MSETNX", "y"}), IsErr("ERR wrong number of arguments for 'msetnx' command"));
}

TEST_F(CommandTest, IncrDecrFamily) {
  EXPECT_THAT(Run({"INCR", "n"}), IsInt(1));
  EXPECT_THAT(Run({"INCRBY", "n", "10"}), IsInt(11));
  EXPECT_THAT(Run({"DECR", "n"}), IsInt(10));
  EXPECT_THAT(Run({"DECRBY", "n", "20"}), IsInt(-10));
  EXPECT_THAT(Run({"INCRBY", "n", "x"}), IsErr(kNotInt));
  Run({"SET", "s", "abc"});
  EXPECT_THAT(Run({"INCR", "s"}), IsErr(kNotInt));
  Run({"SET", "s", " 1"});
  EXPECT_THAT(Run({"INCR", "s"}), IsErr(kNotInt));
  Run({"SET", "big", "9223372036854775807"});
  EXPECT_THAT(Run({"INCR", "big"}), IsErr("ERR increment or decrement would overflow"));
  Run({"SET", "small", "-9223372036854775808"});
  EXPECT_THAT(Run({"DECR", "small"}), IsErr("ERR increment or decrement would overflow"));
  EXPECT_THAT(Run({"DECRBY", "n", "-9223372036854775808"}), IsErr("ERR decrement would overflow"));
  Run({"SET", "t", "5", "EX", "100"});
  EXPECT_THAT(Run({"INCR", "t"}), IsInt(6));
  EXPECT_THAT(Run({"TTL", "t"}), IsInt(100));  // INCR keeps the TTL
}

TEST_F(CommandTest, IncrByFloat) {
  EXPECT_THAT(Run({"INCRBYFLOAT", "f", "10.5"}), IsBulk("10.5"));
  EXPECT_THAT(Run({"INCRBYFLOAT", "f", "0.1"}), IsBulk("10.6"));
  EXPECT_THAT(Run({"INCRBYFLOAT", "f", "-5"}), IsBulk("5.6"));
  // Redis formats with "%.17Lf" and so shows the long double rounding error; so does Floe.
  EXPECT_THAT(Run({"INCRBYFLOAT", "f", "5.0e3"}), IsBulk("5005.60000000000000009"));
  EXPECT_THAT(Run({"INCRBYFLOAT", "f", "abc"}), IsErr("ERR value is not a valid float"));
  EXPECT_THAT(Run({"INCRBYFLOAT", "f", "inf"}),
              IsErr("ERR increment would produce NaN or Infinity"));
  EXPECT_THAT(Run({"INCRBYFLOAT", "f", "nan"}), IsErr("ERR value is not a valid float"));
  Run({"SET", "s", "x"});
  EXPECT_THAT(Run({"INCRBYFLOAT", "s", "1"}), IsErr("ERR value is not a valid float"));
  Run({"SET", "i", "3"});
  EXPECT_THAT(Run({"INCRBYFLOAT", "i", "1"}), IsBulk("4"));
}

TEST_F(CommandTest, AppendStrlenGetRangeSetRange) {
  EXPECT_THAT(Run({"APPEND", "s", "Hello"}), IsInt(5));
  EXPECT_THAT(Run({"APPEND", "s", " World"}), IsInt(11));
  EXPECT_THAT(Run({"STRLEN", "s"}), IsInt(11));
  EXPECT_THAT(Run({"STRLEN", "none"}), IsInt(0));
  EXPECT_THAT(Run({"GETRANGE", "s", "0", "4"}), IsBulk("Hello"));
  EXPECT_THAT(Run({"GETRANGE", "s", "-5", "-1"}), IsBulk("World"));
  EXPECT_THAT(Run({"GETRANGE", "s", "5", "2"}), IsBulk(""));
  EXPECT_THAT(Run({"GETRANGE", "s", "-1", "-5"}), IsBulk(""));
  EXPECT_THAT(Run({"GETRANGE", "s", "0", "100"}), IsBulk("Hello World"));
  EXPECT_THAT(Run({"GETRANGE", "none", "0", "1"}), IsBulk(""));
  EXPECT_THAT(Run({"GETRANGE", "s", "a", "1"}), IsErr(kNotInt));
  EXPECT_THAT(Run({"SETRANGE", "s", "6", "Redis"}), IsInt(11));
  EXPECT_THAT(Run({"GET", "s"}), IsBulk("Hello Redis"));
  EXPECT_THAT(Run({"SETRANGE", "z", "3", "x"}), IsInt(4));
  EXPECT_THAT(Run({"GET", "z"}), IsBulk(std::string("\0\0\0x", 4)));
  EXPECT_THAT(Run({"SETRANGE", "empty", "3", ""}), IsInt(0));
  EXPECT_THAT(Run({"EXISTS", "empty"}), IsInt(0));
  EXPECT_THAT(Run({"SETRANGE", "s", "0", ""}), IsInt(11));
  EXPECT_THAT(Run({"SETRANGE", "s", "-1", "x"}), IsErr("ERR offset is out of range"));
  EXPECT_THAT(Run({"SETRANGE", "s", "536870911", "xx"}),
              IsErr("ERR string exceeds maximum allowed size (proto-max-bulk-len)"));
  Run({"CONFIG", "SET", "proto-max-bulk-len", "2kb"});
  EXPECT_THAT(Run({"APPEND", "s", std::string(3000, 'x')}),
              IsErr("ERR string exceeds maximum allowed size (proto-max-bulk-len)"));
}

// ---- keyspace ----

TEST_F(CommandTest, DelExistsTypeTouchUnlink) {
  Run({"MSET", "a", "1", "b", "2", "c", "3"});
  EXPECT_THAT(Run({"EXISTS", "a", "a", "x"}), IsInt(2));
  EXPECT_THAT(Run({"TYPE", "a"}), IsSimple("string"));
  EXPECT_THAT(Run({"TYPE", "x"}), IsSimple("none"));
  EXPECT_THAT(Run({"TOUCH", "a", "b", "x"}), IsInt(2));
  EXPECT_THAT(Run({"DEL", "a", "b", "x"}), IsInt(2));
  EXPECT_THAT(Run({"UNLINK", "c"}), IsInt(1));
  EXPECT_THAT(Run({"DBSIZE"}), IsInt(0));
}

TEST_F(CommandTest, KeysAndScan) {
  for (int i = 0; i < 50; i++) Run({"SET", "user:" + std::to_string(i), "x"});
  Run({"SET", "other", "x"});
  EXPECT_THAT(Run({"KEYS", "user:*"}), IsArrayOfSize(50));
  EXPECT_THAT(Run({"KEYS", "user:[1-2]"}), IsArrayOfSize(2));
  EXPECT_THAT(Run({"KEYS", "user:?"}), IsArrayOfSize(10));
  EXPECT_THAT(Run({"KEYS", "*"}), IsArrayOfSize(51));
  std::set<std::string> seen;
  std::string cursor = "0";
  do {
    Reply r = Run({"SCAN", cursor, "MATCH", "user:*", "COUNT", "7"});
    ASSERT_THAT(r, IsArrayOfSize(2));
    cursor = r.elements[0].str;
    for (const Reply& k : r.elements[1].elements) seen.insert(k.str);
  } while (cursor != "0");
  EXPECT_EQ(seen.size(), 50u);
  EXPECT_THAT(Run({"SCAN", "x"}), IsErr("ERR invalid cursor"));
  EXPECT_THAT(Run({"SCAN", "0", "COUNT", "0"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"SCAN", "0", "COUNT", "x"}), IsErr(kNotInt));
  EXPECT_THAT(Run({"SCAN", "0", "BOGUS", "1"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"SCAN", "0", "MATCH"}), IsErr("ERR syntax error"));
  Reply typed = Run({"SCAN", "0", "TYPE", "hash", "COUNT", "1000"});
  EXPECT_TRUE(typed.elements[1].elements.empty());
}

TEST_F(CommandTest, RandomKey) {
  EXPECT_THAT(Run({"RANDOMKEY"}), IsNil());
  Run({"SET", "only", "x"});
  EXPECT_THAT(Run({"RANDOMKEY"}), IsBulk("only"));
}

TEST_F(CommandTest, RenameAndRenameNx) {
  EXPECT_THAT(Run({"RENAME", "a", "b"}), IsErr("ERR no such key"));
  Run({"SET", "a", "1", "EX", "100"});
  EXPECT_THAT(Run({"RENAME", "a", "b"}), IsOk());
  EXPECT_THAT(Run({"GET", "b"}), IsBulk("1"));
  EXPECT_THAT(Run({"TTL", "b"}), IsInt(100));  // the TTL moves with the value
  EXPECT_THAT(Run({"EXISTS", "a"}), IsInt(0));
  EXPECT_THAT(Run({"RENAME", "b", "b"}), IsOk());
  Run({"SET", "c", "2"});
  EXPECT_THAT(Run({"RENAMENX", "b", "c"}), IsInt(0));
  EXPECT_THAT(Run({"RENAMENX", "b", "d"}), IsInt(1));
  EXPECT_THAT(Run({"RENAMENX", "zz", "d"}), IsErr("ERR no such key"));
}

TEST_F(CommandTest, ExpireFamily) {
  Run({"SET", "k", "v"});
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(-1));
  EXPECT_THAT(Run({"TTL", "none"}), IsInt(-2));
  EXPECT_THAT(Run({"PTTL", "none"}), IsInt(-2));
  EXPECT_THAT(Run({"EXPIRETIME", "k"}), IsInt(-1));
  // An unknown option is named, cut to 128 bytes (it was echoed whole, however long).
  EXPECT_THAT(Run({"EXPIRE", "k", "100", std::string(100'000, 'Q')}),
              IsErr("ERR Unsupported option " + std::string(128, 'Q')));
  EXPECT_THAT(Run({"EXPIRE", "k", "100", "XX"}), IsInt(0));  // no TTL yet
  EXPECT_THAT(Run({"EXPIRE", "k", "100", "NX"}), IsInt(1));
  EXPECT_THAT(Run({"EXPIRE", "k", "200", "NX"}), IsInt(0));
  EXPECT_THAT(Run({"EXPIRE", "k", "50", "GT"}), IsInt(0));
  EXPECT_THAT(Run({"EXPIRE", "k", "300", "GT"}), IsInt(1));
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(300));
  EXPECT_THAT(Run({"EXPIRE", "k", "400", "LT"}), IsInt(0));
  EXPECT_THAT(Run({"EXPIRE", "k", "30", "LT"}), IsInt(1));
  EXPECT_THAT(Run({"PEXPIRE", "k", "20000"}), IsInt(1));
  EXPECT_THAT(Run({"TTL", "k"}), IsInt(20));
  const int64_t at = NowMs() / 1000 + 500;
  EXPECT_THAT(Run({"EXPIREAT", "k", std::to_string(at)}), IsInt(1));
  EXPECT_THAT(Run({"EXPIRETIME", "k"}), IsInt(at));
  EXPECT_THAT(Run({"PEXPIREAT", "k", std::to_string(at * 1000 + 7)}), IsInt(1));
  EXPECT_THAT(Run({"PEXPIRETIME", "k"}), IsInt(at * 1000 + 7));
  EXPECT_THAT(Run({"PERSIST", "k"}), IsInt(1));
  EXPECT_THAT(Run({"PERSIST", "k"}), IsInt(0));
  EXPECT_THAT(Run({"EXPIRE", "k", "10", "LT"}), IsInt(1));  // no TTL counts as infinite
  EXPECT_THAT(Run({"EXPIRE", "none", "10"}), IsInt(0));
  EXPECT_THAT(Run({"EXPIRE", "k", "10", "NX", "XX"}),
              IsErr("ERR NX and XX, GT or LT options at the same time are not compatible"));
  EXPECT_THAT(Run({"EXPIRE", "k", "10", "GT", "LT"}),
              IsErr("ERR GT and LT options at the same time are not compatible"));
  EXPECT_THAT(Run({"EXPIRE", "k", "10", "FOO"}), IsErr("ERR Unsupported option FOO"));
  EXPECT_THAT(Run({"EXPIRE", "k", "abc"}), IsErr(kNotInt));
  EXPECT_THAT(Run({"EXPIRE", "k", "9223372036854775807"}),
              IsErr("ERR invalid expire time in 'expire' command"));
  EXPECT_THAT(Run({"EXPIRE", "k", "-1"}), IsInt(1));  // in the past: deleted
  EXPECT_THAT(Run({"EXISTS", "k"}), IsInt(0));
}

TEST_F(CommandTest, LazyAndActiveExpiry) {
  Run({"SET", "lazy", "v", "PX", "1"});
  for (int i = 0; i < 100; i++) Run({"SET", "active:" + std::to_string(i), "v", "PX", "1"});
  Run({"SET", "keep", "v"});
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_THAT(Run({"GET", "lazy"}), IsNil());
  EXPECT_THAT(Run({"TTL", "lazy"}), IsInt(-2));
  engine_.ActiveExpireCycle(0, 1000000);
  EXPECT_THAT(Run({"DBSIZE"}), IsInt(1));
  EXPECT_THAT(Run({"KEYS", "*"}), IsArrayOfSize(1));
  Reply stats = Run({"INFO", "stats"});
  EXPECT_THAT(stats.str, HasSubstr("expired_keys:101"));
}

TEST_F(CommandTest, ObjectEncoding) {
  Run({"SET", "i", "12345"});
  Run({"SET", "e", "short"});
  Run({"SET", "r", std::string(45, 'x')});
  EXPECT_THAT(Run({"OBJECT", "ENCODING", "i"}), IsBulk("int"));
  EXPECT_THAT(Run({"OBJECT", "ENCODING", "e"}), IsBulk("embstr"));
  EXPECT_THAT(Run({"OBJECT", "ENCODING", "r"}), IsBulk("raw"));
  EXPECT_THAT(Run({"OBJECT", "ENCODING", "none"}), IsNil());
  EXPECT_THAT(Run({"OBJECT", "FREQ", "i"}),
              IsErr("ERR unknown subcommand 'FREQ'. Try OBJECT HELP."));
  EXPECT_EQ(Run({"OBJECT", "HELP"}).type, Reply::Type::kArray);
}

// ---- sketches ----

TEST_F(CommandTest, HllCreateAddCountExportImport) {
  EXPECT_THAT(Run({"HLL.CREATE", "h"}), IsOk());
  EXPECT_THAT(Run({"HLL.CREATE", "h"}), IsErr("ERR key already exists"));
  EXPECT_THAT(Run({"HLL.EXPORT", "h"}), IsBulk("\\x118b7f"));  // hll_empty()
  EXPECT_THAT(Run({"HLL.ADD", "h", "INT", "1"}), IsInt(1));
  EXPECT_THAT(Run({"HLL.ADD", "h", "INT", "1"}), IsInt(0));
  EXPECT_THAT(Run({"HLL.EXPORT", "h"}), IsBulk("\\x128b7f004403b7fb05c44a"));
  EXPECT_THAT(Run({"HLL.ADD", "h", "INT", "x"}), IsErr(kNotInt));
  EXPECT_THAT(Run({"HLL.ADD", "t", "user1", "user2"}), IsInt(2));  // TEXT is the default
  EXPECT_THAT(Run({"HLL.ADD", "t", "TEXT", "user1"}), IsInt(0));
  EXPECT_THAT(Run({"HLL.ADD", "t", "INT"}), IsInt(1));  // no elements after INT: it is one
  EXPECT_THAT(Run({"TYPE", "t"}), IsSimple("hll"));
  EXPECT_THAT(Run({"OBJECT", "ENCODING", "t"}), IsBulk("explicit"));
  EXPECT_THAT(Run({"HLL.ADDHASH", "a", "1234"}), IsInt(1));
  EXPECT_THAT(Run({"HLL.EXPORT", "a"}), IsBulk("\\x128b7f00000000000004d2"));
  EXPECT_THAT(Run({"HLL.ADDHASH", "a", "nope"}), IsErr(kNotInt));
  Reply count = Run({"HLL.COUNT", "h", "t", "a", "missing"});
  ASSERT_EQ(count.type, Reply::Type::kBulk);  // a double, RESP2 spelling
  EXPECT_EQ(std::stod(count.str), 5.0);
  EXPECT_THAT(Run({"HLL.IMPORT", "i", "\\x138b408944"}), IsOk());
  EXPECT_THAT(Run({"HLL.EXPORT", "i"}), IsBulk("\\x138b408944"));
  EXPECT_THAT(Run({"HLL.IMPORT", "i", "\\x13zz"}), ErrStartsWith("ERR invalid hexadecimal"));
  EXPECT_THAT(Run({"HLL.IMPORT", "i", "\\x218b7f"}), ErrStartsWith("ERR invalid hll:"));
  EXPECT_THAT(Run({"HLL.EXPORT", "missing"}), IsNil());
  Run({"SET", "s", "v"});
  EXPECT_THAT(Run({"HLL.ADD", "s", "x"}), IsErr(kWrongType));
  EXPECT_THAT(Run({"GET", "h"}), IsErr(kWrongType));
}

TEST_F(CommandTest, HllCreateValidatesParameters) {
  EXPECT_THAT(Run({"HLL.CREATE", "p", "LOG2M", "3"}), IsErr("ERR log2m must be between 4 and 31"));
  EXPECT_THAT(Run({"HLL.CREATE", "p", "REGWIDTH", "9"}),
              IsErr("ERR regwidth must be between 1 and 8"));
  EXPECT_THAT(Run({"HLL.CREATE", "p", "EXPTHRESH", "19"}),
              IsErr("ERR expthresh must be -1, 0 or between 1 and 18"));
  EXPECT_THAT(Run({"HLL.CREATE", "p", "SPARSEON", "2"}), IsErr("ERR SPARSEON must be 0 or 1"));
  EXPECT_THAT(Run({"HLL.CREATE", "p", "LOG2M"}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"HLL.CREATE", "p", "LOG2M", "x"}), IsErr(kNotInt));
  EXPECT_THAT(
      Run({"HLL.CREATE", "p", "LOG2M", "14", "REGWIDTH", "6", "EXPTHRESH", "0", "SPARSEON", "0"}),
      IsOk());
  Reply info = Run({"HLL.INFO", "p"});
  ASSERT_EQ(info.type, Reply::Type::kArray);
  EXPECT_EQ(info.elements[1].integer, 14);
  EXPECT_EQ(info.elements[9].str, "EMPTY");
  EXPECT_THAT(Run({"HLL.INFO", "none"}), IsErr("ERR no such key"));
}

TEST_F(CommandTest, HllUnionFoldsAcrossSizes) {
  Run({"HLL.CREATE", "big", "LOG2M", "14"});
  Run({"HLL.CREATE", "small", "LOG2M", "11"});
  std::vector<std::string> add_big = {"HLL.ADD", "big", "INT"};
  std::vector<std::string> add_small = {"HLL.ADD", "small", "INT"};
  for (int i = 1; i <= 3000; i++) add_big.push_back(std::to_string(i));
  for (int i = 2001; i <= 5000; i++) add_small.push_back(std::to_string(i));
  Run(add_big);
  Run(add_small);
  EXPECT_THAT(Run({"HLL.UNION", "u", "big", "small"}), IsOk());
  // The same as a log2m 11 sketch of 1..5000 built directly.
  Run({"HLL.CREATE", "direct", "LOG2M", "11"});
  std::vector<std::string> add_all = {"HLL.ADD", "direct", "INT"};
  for (int i = 1; i <= 5000; i++) add_all.push_back(std::to_string(i));
  Run(add_all);
  EXPECT_EQ(Run({"HLL.EXPORT", "u"}).str, Run({"HLL.EXPORT", "direct"}).str);
  EXPECT_EQ(Run({"HLL.COUNT", "big", "small"}).str, Run({"HLL.COUNT", "direct"}).str);
}

TEST_F(CommandTest, PfAddCountMerge) {
  EXPECT_THAT(Run({"PFADD", "p"}), IsInt(1));  // created
  EXPECT_THAT(Run({"PFADD", "p"}), IsInt(0));
  EXPECT_THAT(Run({"PFADD", "p", "a", "b", "c"}), IsInt(1));
  EXPECT_THAT(Run({"PFADD", "p", "a"}), IsInt(0));
  EXPECT_THAT(Run({"PFCOUNT", "p"}), IsInt(3));
  EXPECT_THAT(Run({"PFCOUNT", "none"}), IsInt(0));
  Run({"PFADD", "q", "c", "d"});
  EXPECT_THAT(Run({"PFCOUNT", "p", "q"}), IsInt(4));
  Run({"PFADD", "dest", "z"});
  EXPECT_THAT(Run({"PFMERGE", "dest", "p", "q"}), IsOk());
  EXPECT_THAT(Run({"PFCOUNT", "dest"}), IsInt(5));  // the destination's own element counts
  EXPECT_THAT(Run({"PFMERGE", "fresh"}), IsOk());
  EXPECT_THAT(Run({"PFCOUNT", "fresh"}), IsInt(0));
  Run({"SET", "s", "not an hll"});
  EXPECT_THAT(Run({"PFADD", "s", "x"}),
              IsErr("WRONGTYPE Key is not a valid HyperLogLog string value."));
  EXPECT_THAT(Run({"PFCOUNT", "s"}),
              IsErr("WRONGTYPE Key is not a valid HyperLogLog string value."));
  engine_.store().Put(*store::Value::Make("bad", static_cast<uint16_t>(ValueType::kHll), "xx"));
  EXPECT_THAT(Run({"PFCOUNT", "bad"}), IsErr("INVALIDOBJ Corrupted HLL object detected"));
  std::vector<std::string> many = {"PFADD", "big"};
  for (int i = 0; i < 100000; i++) many.push_back("e" + std::to_string(i));
  Run(many);
  const int64_t n = Run({"PFCOUNT", "big"}).integer;
  EXPECT_NEAR(static_cast<double>(n), 100000.0, 100000.0 * 3 * 0.0081);  // 3 standard errors
}

TEST_F(CommandTest, ConcurrentHllAddsLoseNothing) {
  // Exact up to 2^10 elements, so a lost add would show in the count.
  ASSERT_THAT(Run({"HLL.CREATE", "c", "EXPTHRESH", "11"}), IsOk());
  std::thread other([&] {
    Session s(&engine_, 1);
    for (int i = 0; i < 500; i++) s.Run({"HLL.ADD", "c", "INT", std::to_string(i)});
  });
  for (int i = 500; i < 1000; i++) Run({"HLL.ADD", "c", "INT", std::to_string(i)});
  other.join();
  Reply info = Run({"HLL.INFO", "c"});
  EXPECT_EQ(info.elements[9].str, "EXPLICIT");
  EXPECT_EQ(info.elements[11].integer, 1000);
}

TEST_F(CommandTest, CountMinCommandsFollowRedisBloom) {
  EXPECT_THAT(Run({"CMS.INITBYDIM", "c", "0", "5"}), IsErr("CMS: invalid width"));
  EXPECT_THAT(Run({"CMS.INITBYDIM", "c", "100", "x"}), IsErr("CMS: invalid depth"));
  EXPECT_THAT(Run({"CMS.INITBYPROB", "c", "2", "0.01"}),
              IsErr("CMS: invalid overestimation value"));
  EXPECT_THAT(Run({"CMS.INITBYPROB", "c", "0.001", "0"}), IsErr("CMS: invalid prob value"));
  EXPECT_THAT(Run({"CMS.INITBYPROB", "c", "0.001", "0.01"}), IsOk());
  // A probability that rounds to 1 as a float sized a sketch of no rows, refused as "no memory".
  EXPECT_THAT(Run({"CMS.INITBYPROB", "c1", "0.5", "0.9999999999"}), IsOk());
  EXPECT_THAT(Run({"CMS.INCRBY", "c1", "a", "3"}), IsArrayOfSize(1));
  EXPECT_THAT(Run({"CMS.QUERY", "c1", "a"}).elements.at(0), IsInt(3));
  EXPECT_THAT(Run({"CMS.INITBYDIM", "c", "10", "10"}), IsErr("CMS: key already exists"));
  Reply info = Run({"CMS.INFO", "c"});
  ASSERT_THAT(info, IsArrayOfSize(6));
  EXPECT_THAT(info.elements[1], IsInt(2000));
  EXPECT_THAT(info.elements[3], IsInt(7));
  Reply r = Run({"CMS.INCRBY", "c", "a", "5", "b", "2"});
  ASSERT_THAT(r, IsArrayOfSize(2));
  EXPECT_THAT(r.elements[0], IsInt(5));
  EXPECT_THAT(r.elements[1], IsInt(2));
  EXPECT_THAT(Run({"CMS.INCRBY", "c", "a", "-1"}), IsErr("CMS: Number cannot be negative"));
  EXPECT_THAT(Run({"CMS.INCRBY", "c", "a", "x"}), IsErr("CMS: Cannot parse number"));
  EXPECT_THAT(Run({"CMS.INCRBY", "c", "a", "1", "b"}),
              IsErr("ERR wrong number of arguments for 'cms.incrby' command"));
  EXPECT_THAT(Run({"CMS.INCRBY", "none", "a", "1"}), IsErr("CMS: key does not exist"));
  Reply q = Run({"CMS.QUERY", "c", "a", "b", "zzz"});
  EXPECT_THAT(q.elements[0], IsInt(5));
  EXPECT_THAT(q.elements[2], IsInt(0));
  EXPECT_THAT(Run({"CMS.QUERY", "none", "a"}), IsErr("CMS: key does not exist"));
  EXPECT_THAT(Run({"TYPE", "c"}), IsSimple("cms"));
  // MERGE: the destination must exist and is overwritten by the weighted sum.
  Run({"CMS.INITBYDIM", "m1", "100", "5"});
  Run({"CMS.INITBYDIM", "m2", "100", "5"});
  Run({"CMS.INITBYDIM", "dst", "100", "5"});
  Run({"CMS.INCRBY", "m1", "x", "3"});
  Run({"CMS.INCRBY", "m2", "x", "4"});
  Run({"CMS.INCRBY", "dst", "x", "100"});
  EXPECT_THAT(Run({"CMS.MERGE", "dst", "2", "m1", "m2", "WEIGHTS", "1", "2"}), IsOk());
  EXPECT_THAT(Run({"CMS.QUERY", "dst", "x"}).elements[0], IsInt(11));
  EXPECT_THAT(Run({"CMS.MERGE", "nope", "1", "m1"}), IsErr("CMS: key does not exist"));
  EXPECT_THAT(Run({"CMS.MERGE", "dst", "0", "m1"}), IsErr("CMS: Number of keys must be positive"));
  EXPECT_THAT(Run({"CMS.MERGE", "dst", "x", "m1"}), IsErr("CMS: invalid numkeys"));
  EXPECT_THAT(Run({"CMS.MERGE", "dst", "3", "m1"}), IsErr("CMS: wrong number of keys"));
  EXPECT_THAT(Run({"CMS.MERGE", "dst", "1", "m1", "WEIGHTS"}),
              IsErr("CMS: wrong number of keys/weights"));
  EXPECT_THAT(Run({"CMS.MERGE", "dst", "1", "m1", "WEIGHTS", "x"}),
              IsErr("CMS: invalid weight value"));
  EXPECT_THAT(Run({"CMS.MERGE", "dst", "1", "c"}), IsErr("CMS: width/depth is not equal"));
  EXPECT_THAT(Run({"CMS.MERGE", "dst", "1", "m1", "WEIGHTS", "-1"}), IsErr("CMS: MERGE overflow"));
  Run({"SET", "s", "v"});
  EXPECT_THAT(Run({"CMS.QUERY", "s", "a"}), IsErr(kWrongType));
}

TEST_F(CommandTest, CountMinRangesAndQuantiles) {
  EXPECT_THAT(Run({"CMS.INITRANGE", "r", "1000", "5", "33"}),
              IsErr("CMS: bits must be between 1 and 32"));
  EXPECT_THAT(Run({"CMS.INITRANGE", "r", "1000", "5", "16"}), IsOk());
  std::vector<std::string> add = {"CMS.INCRBY", "r"};
  for (int v = 0; v < 1000; v++) {
    add.push_back(std::to_string(v * 10));  // values 0, 10, ..., 9990, once each
    add.push_back("1");
  }
  Run(add);
  EXPECT_THAT(Run({"CMS.INCRBY", "r", "70000", "1"}),
              IsErr("CMS: item is not an integer in the sketch's range"));
  const int64_t in_range = Run({"CMS.RANGE", "r", "1000", "1999"}).integer;  // truth: 100
  EXPECT_GE(in_range, 100);
  EXPECT_LE(in_range, 130);
  EXPECT_THAT(Run({"CMS.RANGE", "r", "0", "65535"}), IsInt(1000));
  EXPECT_THAT(Run({"CMS.RANGE", "r", "5", "1"}), IsInt(0));
  Reply q = Run({"CMS.QUANTILE", "r", "0.5", "0.9"});
  ASSERT_THAT(q, IsArrayOfSize(2));
  EXPECT_NEAR(static_cast<double>(q.elements[0].integer), 4990, 300);
  EXPECT_NEAR(static_cast<double>(q.elements[1].integer), 8990, 300);
  EXPECT_THAT(Run({"CMS.QUANTILE", "r", "1.5"}),
              IsErr("CMS: quantile must be a number between 0 and 1"));
  Run({"CMS.INITBYDIM", "plain", "10", "2"});
  EXPECT_THAT(Run({"CMS.RANGE", "plain", "0", "1"}),
              IsErr("CMS: not a range sketch (create it with CMS.INITRANGE)"));
  Reply info = Run({"CMS.INFO", "r"});
  EXPECT_THAT(info, IsArrayOfSize(8));
}

// ---- transactions ----

TEST_F(CommandTest, MultiExecDiscard) {
  EXPECT_THAT(Run({"EXEC"}), IsErr("ERR EXEC without MULTI"));
  EXPECT_THAT(Run({"DISCARD"}), IsErr("ERR DISCARD without MULTI"));
  EXPECT_THAT(Run({"MULTI"}), IsOk());
  EXPECT_THAT(Run({"MULTI"}), IsErr("ERR MULTI calls can not be nested"));
  EXPECT_THAT(Run({"SET", "a", "1"}), IsSimple("QUEUED"));
  EXPECT_THAT(Run({"INCR", "a"}), IsSimple("QUEUED"));
  EXPECT_THAT(Run({"LPOP_NOPE"}), ErrStartsWith("ERR unknown command"));
  EXPECT_THAT(Run({"EXEC"}), IsErr("EXECABORT Transaction discarded because of previous errors."));
  EXPECT_THAT(Run({"GET", "a"}), IsNil());
  Run({"MULTI"});
  Run({"SET", "a", "x"});
  Run({"INCR", "a"});  // fails at run time, not at queue time
  Run({"GET", "a"});
  Reply r = Run({"EXEC"});
  ASSERT_THAT(r, IsArrayOfSize(3));
  EXPECT_THAT(r.elements[0], IsOk());
  EXPECT_THAT(r.elements[1], IsErr(kNotInt));
  EXPECT_THAT(r.elements[2], IsBulk("x"));
  Run({"MULTI"});
  Run({"SET", "a", "y"});
  EXPECT_THAT(Run({"DISCARD"}), IsOk());
  EXPECT_THAT(Run({"GET", "a"}), IsBulk("x"));
}

TEST_F(CommandTest, WatchAbortsOnConflict) {
  Session other(&engine_, 1);
  Run({"SET", "w", "1"});
  EXPECT_THAT(Run({"WATCH", "w", "absent"}), IsOk());
  RunOn(other, {"SET", "w", "2"});
  Run({"MULTI"});
  Run({"SET", "w", "3"});
  EXPECT_THAT(Run({"EXEC"}), IsNil());
  EXPECT_THAT(Run({"GET", "w"}), IsBulk("2"));
  // Creating a watched absent key also aborts.
  Run({"WATCH", "absent"});
  RunOn(other, {"SET", "absent", "now"});
  Run({"MULTI"});
  Run({"GET", "absent"});
  EXPECT_THAT(Run({"EXEC"}), IsNil());
  // Without interference EXEC runs; UNWATCH forgets.
  Run({"WATCH", "w"});
  Run({"MULTI"});
  EXPECT_THAT(Run({"WATCH", "x"}), IsErr("ERR WATCH inside MULTI is not allowed"));
  Run({"SET", "w", "4"});
  EXPECT_THAT(Run({"EXEC"}), IsArrayOfSize(1));
  Run({"WATCH", "w"});
  RunOn(other, {"SET", "w", "5"});
  EXPECT_THAT(Run({"UNWATCH"}), IsOk());
  Run({"MULTI"});
  Run({"GET", "w"});
  EXPECT_THAT(Run({"EXEC"}), IsArrayOfSize(1));
}

TEST_F(CommandTest, ExecIsAtomicAgainstOtherThreads) {
  // Two sessions on two workers: one moves a unit between keys in transactions, the other
  // keeps checking the sum inside its own transactions. The sum never changes.
  Run({"MSET", "x", "1000", "y", "0"});
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::thread checker([&] {
    Session s(&engine_, 1);
    while (!done.load()) {
      s.Run({"MULTI"});
      s.Run({"GET", "x"});
      s.Run({"GET", "y"});
      Reply r = Decode(s.Run({"EXEC"}));
      if (r.elements.size() != 2 ||
          std::stoll(r.elements[0].str) + std::stoll(r.elements[1].str) != 1000) {
        bad++;
      }
    }
  });
  for (int i = 0; i < 2000; i++) {
    Run({"MULTI"});
    Run({"DECR", "x"});
    Run({"INCR", "y"});
    Run({"EXEC"});
  }
  done = true;
  checker.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_THAT(Run({"GET", "y"}), IsBulk("2000"));
}

TEST(ConfigTest, MemoryValuesAndProtectedMode) {
  EXPECT_EQ(*ParseMemory("100"), 100);
  EXPECT_EQ(*ParseMemory("1kb"), 1024);
  EXPECT_EQ(*ParseMemory("1k"), 1000);
  EXPECT_EQ(*ParseMemory("2GB"), 2ll << 30);
  EXPECT_FALSE(ParseMemory("-1").ok());
  EXPECT_FALSE(ParseMemory("lots").ok());
  Config c;
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.bind = "0.0.0.0";
  Status s = ValidateConfig(c);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--requirepass"));
  c.requirepass = "pw";
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.port = 70000;
  EXPECT_FALSE(ValidateConfig(c).ok());
}

}  // namespace
}  // namespace floe::server
