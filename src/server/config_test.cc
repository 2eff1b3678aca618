// The settings table and the command table: their invariants, and CONFIG and COMMAND replies
// compared with Redis 7.0's (texts taken from a local redis-server).

#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <set>

#include "server/command_test.h"
#include "server/internal/command.h"

namespace floe::server {
namespace {

std::string ConfigSetFailed(std::string_view name, std::string_view why) {
  return "ERR CONFIG SET failed (possibly related to argument '" + std::string(name) + "') - " +
         std::string(why);
}

TEST(CommandTableTest, RowsAreSortedAndNumberedOnce) {
  const auto& top = internal::CommandTable();
  ASSERT_FALSE(top.empty());
  for (size_t i = 1; i < top.size(); i++) EXPECT_LT(top[i - 1]->name, top[i]->name);
  std::set<int> indexes;
  for (const internal::CommandSpec* c : internal::AllCommands()) {
    EXPECT_TRUE(indexes.insert(c->index).second) << c->name;
    EXPECT_GE(c->index, 0);
    EXPECT_LT(c->index, internal::CommandRowCount());
    if (c->name.find('|') == std::string_view::npos) {
      EXPECT_EQ(internal::FindCommand(c->name), c);
    }
  }
  EXPECT_EQ(indexes.size(), static_cast<size_t>(internal::CommandRowCount()));
}

TEST(SettingsTest, DefaultsAreTheRowsDefaults) {
  const Config c;
  EXPECT_TRUE(ValidateConfig(c).ok());
  for (const Setting& s : Settings()) {
    std::string expected(s.default_value);
    if (s.kind == Setting::Kind::kOutputLimit) expected += " slave 0 0 0 pubsub 0 0 0";
    EXPECT_EQ(SettingValue(s, c), expected) << s.name;
    EXPECT_EQ(FindSetting(s.name), &s);
  }
  EXPECT_EQ(c.port, 6379);
  EXPECT_EQ(c.bind, "127.0.0.1");
  EXPECT_EQ(c.proto_max_bulk_len, 512 << 20);
}

// Found by the randomized differential test: Redis reads memory amounts with strtoull, so a
// leading zero is accepted ("CONFIG SET maxmemory 01").
TEST(SettingsTest, MemoryAmountsTakeLeadingZerosAsRedisDoes) {
  EXPECT_EQ(*ParseMemory("01"), 1);
  EXPECT_EQ(*ParseMemory("007kb"), 7 * 1024);
  EXPECT_EQ(*ParseMemory("0"), 0);
  EXPECT_EQ(*ParseMemory("000"), 0);
  EXPECT_FALSE(ParseMemory("0-1").ok());
  EXPECT_FALSE(ParseMemory("-1").ok());
  EXPECT_FALSE(ParseMemory("").ok());
  EXPECT_FALSE(ParseMemory("0x1").ok());
}

TEST(SettingsTest, FlagNamesAreDistinct) {
  std::set<std::string_view> flags = {"config"};  // --config is main.cc's own
  for (const Setting& s : Settings()) {
    if (s.cli) {
      EXPECT_TRUE(flags.insert(s.flag.empty() ? s.name : s.flag).second) << s.name;
    }
  }
}

TEST_F(CommandTest, EverySettingIsInConfigGetAndRuntimeOnesTakeTheirOwnValue) {
  const Reply all = Run({"CONFIG", "GET", "*"});
  ASSERT_EQ(all.elements.size(), 2 * Settings().size());
  for (size_t i = 0; i < all.elements.size(); i += 2) {
    const Setting* s = FindSetting(all.elements[i].str);
    ASSERT_NE(s, nullptr) << all.elements[i].str;
    if (s->runtime) {
      EXPECT_THAT(Run({"CONFIG", "SET", std::string(s->name), all.elements[i + 1].str}), IsOk())
          << s->name;
    } else {
      EXPECT_THAT(Run({"CONFIG", "SET", std::string(s->name), all.elements[i + 1].str}),
                  IsErr(ConfigSetFailed(s->name, "can't set immutable config")));
    }
  }
}

TEST(SettingsTest, TheConfigFileUsesTheSameRows) {
  const std::string path = ::testing::TempDir() + "/floe_config_test.conf";
  {
    std::ofstream out(path);
    out << "# comment\nhz 1000\nMaxClients 5\nio-threads 3\nsave \"\"\nappendonly no\n";
  }
  Config c;
  ASSERT_TRUE(LoadConfigFile(path, &c).ok());
  EXPECT_EQ(c.hz, 500);
  EXPECT_EQ(c.maxclients, 5);
  EXPECT_EQ(c.threads, 3);
  {
    std::ofstream out(path);
    out << "port 1\nproto-max-bulk-len 1000000000000000\n";
  }
  Status s = LoadConfigFile(path, &c);
  EXPECT_EQ(s.message(), path +
                             ":2: proto-max-bulk-len: argument must be between 1024 and "
                             "4294967295 inclusive");
  EXPECT_EQ(c.port, 6379);  // nothing applied from a refused file
}

// ---- CONFIG SET defects ----

// Redis refuses soft seconds outside 0..INT_MAX; Floe accepted any int64 and the listener's
// seconds * 1000 overflowed.
TEST_F(CommandTest, OutputBufferLimitFieldsAreRangeChecked) {
  const std::string error =
      ConfigSetFailed("client-output-buffer-limit",
                      "Error in hard, soft or soft_seconds setting in buffer limit configuration.");
  for (const char* bad : {"normal 0 1000 9223372036854775807", "normal 0 1000 2147483648",
                          "normal 0 1000 -1", "normal -1 0 0", "normal 99999999999999999999 0 0",
                          "normal 8589934592gb 0 0", "normal 0 x 0"}) {
    EXPECT_THAT(Run({"CONFIG", "SET", "client-output-buffer-limit", bad}), IsErr(error)) << bad;
  }
  EXPECT_EQ(engine_.output_limits().soft_seconds, 0);
  EXPECT_THAT(Run({"CONFIG", "SET", "client-output-buffer-limit", "normal 0 1000 2147483647"}),
              IsOk());
  EXPECT_EQ(engine_.output_limits().soft_seconds, INT32_MAX);
  EXPECT_EQ(engine_.output_limits().soft, 1000);
  Config c;
  c.output_soft_seconds = INT64_MAX;
  EXPECT_FALSE(ValidateConfig(c).ok());
}

// A bulk length above what the store can hold let later commands size absurd allocations.
TEST_F(CommandTest, ProtoMaxBulkLenIsBoundedByWhatTheStoreHolds) {
  const std::string error = ConfigSetFailed(
      "proto-max-bulk-len", "argument must be between 1024 and 4294967295 inclusive");
  EXPECT_THAT(Run({"CONFIG", "SET", "proto-max-bulk-len", "1000000000000000"}), IsErr(error));
  EXPECT_THAT(Run({"CONFIG", "SET", "proto-max-bulk-len", "100"}), IsErr(error));
  EXPECT_EQ(engine_.proto_max_bulk_len(), 512 << 20);
  EXPECT_THAT(Run({"CONFIG", "SET", "proto-max-bulk-len", "4294967295"}), IsOk());
  EXPECT_EQ(engine_.proto_max_bulk_len(), int64_t{store::kMaxPayloadBytes});
  EXPECT_THAT(Run({"CONFIG", "SET", "proto-max-bulk-len", "x"}),
              IsErr(ConfigSetFailed("proto-max-bulk-len", "argument must be a memory value")));
}

// CONFIG SET loglevel answered OK and left the logger alone.
TEST_F(CommandTest, LogLevelChangesTheLogger) {
  const spdlog::level::level_enum before = spdlog::get_level();
  EXPECT_THAT(Run({"CONFIG", "SET", "loglevel", "WARNING"}), IsOk());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::warn);
  EXPECT_THAT(Run({"CONFIG", "GET", "loglevel"}).elements[1], IsBulk("warning"));
  EXPECT_THAT(Run({"CONFIG", "SET", "loglevel", "debug"}), IsOk());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::debug);
  EXPECT_THAT(Run({"CONFIG", "SET", "loglevel", "nothing"}), IsOk());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::off);
  EXPECT_THAT(Run({"CONFIG", "SET", "loglevel", "bogus"}),
              IsErr(ConfigSetFailed("loglevel",
                                    "argument(s) must be one of the following: debug, verbose, "
                                    "notice, warning, nothing")));
  EXPECT_EQ(spdlog::get_level(), spdlog::level::off);
  spdlog::set_level(before);
}

// Redis takes hz in 0..INT_MAX and clamps it into 1..500.
TEST_F(CommandTest, HzIsClampedAsRedisDoes) {
  EXPECT_THAT(Run({"CONFIG", "SET", "hz", "0"}), IsOk());
  EXPECT_THAT(Run({"CONFIG", "GET", "hz"}).elements[1], IsBulk("1"));
  EXPECT_THAT(Run({"CONFIG", "SET", "hz", "1000"}), IsOk());
  EXPECT_THAT(Run({"CONFIG", "GET", "hz"}).elements[1], IsBulk("500"));
  EXPECT_EQ(engine_.config().hz, 500);
  EXPECT_THAT(Run({"CONFIG", "SET", "hz", "-1"}),
              IsErr(ConfigSetFailed("hz", "argument must be between 0 and 2147483647 inclusive")));
  EXPECT_THAT(Run({"CONFIG", "SET", "hz", "x"}),
              IsErr(ConfigSetFailed("hz", "argument couldn't be parsed into an integer")));
}

// Redis's texts name the range; Floe said "couldn't be parsed" for a well-formed number.
TEST_F(CommandTest, OutOfRangeIntegersGiveRedisTexts) {
  EXPECT_THAT(
      Run({"CONFIG", "SET", "timeout", "-1"}),
      IsErr(ConfigSetFailed("timeout", "argument must be between 0 and 2147483647 inclusive")));
  EXPECT_THAT(
      Run({"CONFIG", "SET", "maxclients", "0"}),
      IsErr(ConfigSetFailed("maxclients", "argument must be between 1 and 4294967295 inclusive")));
  EXPECT_THAT(Run({"CONFIG", "SET", "maxclients", "4294967295"}), IsOk());
  EXPECT_EQ(engine_.maxclients(), 4294967295);
}

// Redis echoes a name without glob characters as it was asked for, once per setting.
TEST_F(CommandTest, ConfigGetEchoesTheNameAsAsked) {
  EXPECT_EQ(session_.Run({"CONFIG", "GET", "MAXMEMORY"}), "*2\r\n$9\r\nMAXMEMORY\r\n$1\r\n0\r\n");
  EXPECT_EQ(session_.Run({"CONFIG", "GET", "MAXMEMORY", "maxmemory"}),
            "*2\r\n$9\r\nMAXMEMORY\r\n$1\r\n0\r\n");
  EXPECT_EQ(session_.Run({"CONFIG", "GET", "MAXMEMORY-POL*"}),
            "*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n");
  EXPECT_EQ(session_.Run({"CONFIG", "GET", "nosuch"}), "*0\r\n");
}

// ---- COMMAND ----

TEST_F(CommandTest, CommandInfoOfAnUnknownNameIsANil) {
  EXPECT_EQ(session_.Run({"COMMAND", "INFO", "nosuch"}), "*1\r\n$-1\r\n");
  const std::string both = session_.Run({"COMMAND", "INFO", "nosuch", "get"});
  EXPECT_TRUE(both.starts_with("*2\r\n$-1\r\n*10\r\n$3\r\nget\r\n")) << both;
  EXPECT_TRUE(session_.Run({"COMMAND", "INFO", "CONFIG|GET"})
                  .starts_with("*1\r\n*10\r\n$10\r\n"
                               "config|get\r\n"));
  EXPECT_EQ(session_.Run({"COMMAND", "INFO", "config|nosuch"}), "*1\r\n$-1\r\n");
  Run({"HELLO", "3"});
  EXPECT_EQ(session_.Run({"COMMAND", "INFO", "nosuch"}), "*1\r\n_\r\n");
}

TEST_F(CommandTest, CommandGetKeysReadsTheKeySpecs) {
  EXPECT_EQ(session_.Run({"COMMAND", "GETKEYS", "get", "k"}), "*1\r\n$1\r\nk\r\n");
  EXPECT_EQ(session_.Run({"COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"}),
            "*2\r\n$1\r\na\r\n$1\r\nb\r\n");
  EXPECT_EQ(session_.Run({"COMMAND", "GETKEYS", "del", "a", "b", "c"}),
            "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n");
  EXPECT_EQ(session_.Run({"COMMAND", "GETKEYS", "object", "encoding", "k"}), "*1\r\n$1\r\nk\r\n");
  EXPECT_EQ(session_.Run({"COMMAND", "GETKEYS", "rename", "a", "b"}),
            "*2\r\n$1\r\na\r\n$1\r\nb\r\n");
  EXPECT_THAT(Run({"COMMAND", "GETKEYS", "nosuch", "k"}), IsErr("ERR Invalid command specified"));
  EXPECT_THAT(Run({"COMMAND", "GETKEYS", "object", "nosuch", "k"}),
              IsErr("ERR Invalid command specified"));
  EXPECT_THAT(Run({"COMMAND", "GETKEYS", "GET", "k", "x"}),
              IsErr("ERR Invalid number of arguments specified for command"));
  EXPECT_THAT(Run({"COMMAND", "GETKEYS", "object", "encoding"}),
              IsErr("ERR Invalid number of arguments specified for command"));
  EXPECT_THAT(Run({"COMMAND", "GETKEYS", "ping", "x"}),
              IsErr("ERR The command has no key arguments"));
  EXPECT_THAT(Run({"COMMAND", "GETKEYS", "config", "get", "x"}),
              IsErr("ERR The command has no key arguments"));
  EXPECT_THAT(Run({"COMMAND", "GETKEYS", "get"}),
              IsErr("ERR wrong number of arguments for 'command|getkeys' command"));
}

}  // namespace
}  // namespace floe::server

namespace floe::server {
namespace {

// Protected mode's test of a bind address parses it: text that merely starts like a loopback
// address is not one.
TEST(SettingsTest, AClusterPortWithoutAClusterIsRefused) {
  Config c;
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.cluster_port = 7100;
  const Status s = ValidateConfig(c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("--cluster"), std::string::npos) << s.ToString();
  c.cluster = "127.0.0.1:7100";
  EXPECT_TRUE(ValidateConfig(c).ok());
  // --join instead of --cluster (docs/cluster.md, "Adding a node"), never both.
  c.join = "127.0.0.1:7100";
  const Status both = ValidateConfig(c);
  EXPECT_EQ(both.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(both.message()).find("not both"), std::string::npos) << both.ToString();
  c.cluster.clear();
  EXPECT_TRUE(ValidateConfig(c).ok());
}

// W19 (docs/replication.md): backups live on other members, so --replicas needs a cluster.
TEST(SettingsTest, ReplicasWithoutAClusterAreRefused) {
  Config c;
  EXPECT_EQ(c.replicas, 0);
  EXPECT_EQ(c.min_replicas_to_write, 0);
  c.replicas = 1;
  const Status s = ValidateConfig(c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("replicas"), std::string::npos) << s.ToString();
  c.cluster = "127.0.0.1:7100";
  c.cluster_port = 7100;
  EXPECT_TRUE(ValidateConfig(c).ok());
  EXPECT_FALSE(ApplySetting(*FindSetting("replicas"), "9", &c).ok()) << "at most kMaxReplicas";
  EXPECT_FALSE(ApplySetting(*FindSetting("min-replicas-to-write"), "-1", &c).ok());
  EXPECT_TRUE(FindSetting("min-replicas-to-write")->runtime);
  EXPECT_FALSE(FindSetting("replicas")->runtime) << "set when the cluster is founded";
}

TEST(SettingsTest, LoopbackAddressesAreParsedNotMatched) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackAddress("127.255.3.4"));
  EXPECT_TRUE(IsLoopbackAddress("::1"));
  EXPECT_TRUE(IsLoopbackAddress("0:0::1"));
  EXPECT_TRUE(IsLoopbackAddress("localhost"));
  EXPECT_FALSE(IsLoopbackAddress("127.foo"));
  EXPECT_FALSE(IsLoopbackAddress("127."));
  EXPECT_FALSE(IsLoopbackAddress("128.0.0.1"));
  EXPECT_FALSE(IsLoopbackAddress("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackAddress("::"));
  EXPECT_FALSE(IsLoopbackAddress(""));
}

}  // namespace
}  // namespace floe::server
