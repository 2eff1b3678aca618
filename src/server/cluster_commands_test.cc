// CLUSTER subcommands and INFO's cluster section on in-process nodes: three Engines, each with
// its ClusterNode on a loopback cluster port, driven through Sessions (no RESP listener).

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster.h"
#include "server/command_test.h"
#include "server/internal/cluster_node.h"
#include "server/internal/command.h"
#include "testing/process.h"

namespace floe::server {
namespace {

using floe::testing::WaitFor;

using internal::ClusterNode;
using internal::NodeName;
using ::testing::ElementsAre;
using ::testing::Not;

constexpr char kDisabled[] = "ERR This instance has cluster support disabled";

Reply Decode(const std::string& raw) { return CommandTest::Decode(raw); }

// The lines of an INFO-like text, without their "\r\n".
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

// One member of an in-process cluster: its engine and its part in the cluster.
struct Node {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<ClusterNode> cluster;
  uint16_t cluster_port = 0;
  uint16_t client_port = 0;

  ~Node() {
    // The ClusterNode goes first: its proxy sessions belong to the engine. Its endpoint stops
    // before the engine forgets it, so no handler thread still reads the pointer.
    if (cluster != nullptr) cluster->Stop();
    if (engine != nullptr) engine->set_cluster(nullptr);
    cluster.reset();
  }
};

// Starts a node that is the member on `cluster_port` of `list`.
std::unique_ptr<Node> StartNode(const std::string& list, uint16_t cluster_port,
                                uint16_t client_port, int64_t node_timeout_ms = 5000) {
  auto n = std::make_unique<Node>();
  Config c;
  c.bind = "127.0.0.1";
  c.cluster = list;
  c.cluster_port = cluster_port;
  c.cluster_node_timeout = node_timeout_ms;
  static testing::TempDir dir;  // every test's members', removed at exit
  c.dir = dir.path();
  n->engine = std::make_unique<Engine>(c, 1);
  Result<std::unique_ptr<ClusterNode>> started =
      ClusterNode::Start(n->engine.get(), c, client_port);
  EXPECT_TRUE(started.ok()) << started.status().ToString();
  if (!started.ok()) return nullptr;
  n->cluster = std::move(*started);
  n->cluster_port = cluster_port;
  n->client_port = client_port;
  return n;
}

std::string List(const std::vector<uint16_t>& ports) {
  std::string list;
  for (uint16_t p : ports)
    list += (list.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(p);
  return list;
}

// ---- a standalone node ----

TEST(ClusterStandaloneTest, EverySubcommandButHelpIsRefused) {
  Engine engine(Config(), 1);
  Session s(&engine, 0);
  const std::vector<std::vector<std::string>> commands = {
      {"CLUSTER", "INFO"},
      {"CLUSTER", "MYID"},
      {"CLUSTER", "NODES"},
      {"CLUSTER", "SLOTS"},
      {"CLUSTER", "SHARDS"},
      {"CLUSTER", "KEYSLOT", "foo"},
      {"CLUSTER", "COUNTKEYSINSLOT", "0"},
      {"cluster", "getkeysinslot", "0", "10"},
  };
  for (const auto& c : commands) {
    EXPECT_THAT(Decode(s.Run(c)), IsErr(kDisabled)) << c[1];
  }
  const Reply help = Decode(s.Run({"CLUSTER", "HELP"}));
  ASSERT_EQ(help.type, Reply::Type::kArray);
  EXPECT_THAT(help.elements.front(), IsSimple("CLUSTER <subcommand> [<arg> [value] [opt] ...]. "
                                              "Subcommands are:"));
  EXPECT_THAT(Decode(s.Run({"CLUSTER", "NOPE"})),
              IsErr("ERR unknown subcommand 'NOPE'. Try CLUSTER HELP."));
  EXPECT_THAT(Decode(s.Run({"CLUSTER"})),
              IsErr("ERR wrong number of arguments for 'cluster' command"));
}

TEST(ClusterStandaloneTest, InfoSaysClusterDisabled) {
  Engine engine(Config(), 1);
  Session s(&engine, 0);
  EXPECT_EQ(Decode(s.Run({"INFO", "cluster"})).str, "# Cluster\r\ncluster_enabled:0\r\n");
  for (const char* section : {"default", "all", "everything"}) {
    const std::string info = Decode(s.Run({"INFO", section})).str;
    EXPECT_THAT(info, HasSubstr("\r\n# Cluster\r\ncluster_enabled:0\r\n\r\n# Keyspace\r\n"))
        << section;
  }
  EXPECT_THAT(Decode(s.Run({"INFO"})).str, HasSubstr("# Cluster\r\ncluster_enabled:0\r\n"));
  EXPECT_THAT(Decode(s.Run({"INFO", "server"})).str, HasSubstr("redis_mode:standalone\r\n"));
}

// ---- three formed nodes ----

class ClusterCommandsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::vector<uint16_t> ports;
    for (int i = 0; i < 3; i++) ports.push_back(testing::FreeClusterPort("127.0.0.1"));
    for (uint16_t p : ports) ASSERT_NE(p, 0);
    list_ = new std::string(List(ports));
    Result<std::vector<cluster::Member>> members = cluster::ParseMembers(*list_);
    ASSERT_TRUE(members.ok());
    members_ = new std::vector<cluster::Member>(*members);
    nodes_ = new std::vector<std::unique_ptr<Node>>();
    // Node i (0-based) is member id i + 1 and listens for clients on 17001 + i (not bound:
    // the port is only what the members tell clients).
    for (size_t i = 0; i < members_->size(); i++) {
      nodes_->push_back(StartNode(*list_, (*members_)[i].port, static_cast<uint16_t>(17001 + i)));
      ASSERT_NE(nodes_->back(), nullptr);
    }
    for (const auto& n : *nodes_) {
      // Formed, and its agreed metadata caught up: it serves keys (docs/membership.md).
      ASSERT_TRUE(WaitFor([&] { return n->cluster->serving(); }));
    }
    // Every member's client port is known once formed (each answered HELLO); liveness too.
    for (const auto& n : *nodes_) {
      ASSERT_TRUE(WaitFor([&] {
        for (const auto& m : n->cluster->cluster().Members()) {
          if (m.client_port == 0 || !m.up) return false;
        }
        return true;
      }));
    }
    ready_ = true;
  }
  static void TearDownTestSuite() {
    delete nodes_;
    delete members_;
    delete list_;
  }

  // A cluster that did not form fails every test here rather than crashing them.
  void SetUp() override { ASSERT_TRUE(ready_) << "the three nodes did not form"; }

  static Engine& engine(size_t i) { return *(*nodes_)[i]->engine; }
  static const cluster::Member& member(size_t i) { return (*members_)[i]; }
  static std::string name(size_t i) { return NodeName(member(i)); }
  // Runs one command on node i in a fresh session.
  static Reply RunOn(size_t i, const std::vector<std::string>& args) {
    Session s(&engine(i), 0);
    return Decode(s.Run(args));
  }
  static std::string RawOn(size_t i, const std::vector<std::string>& args) {
    Session s(&engine(i), 0);
    return s.Run(args);
  }

  static std::string* list_;
  static std::vector<cluster::Member>* members_;
  static std::vector<std::unique_ptr<Node>>* nodes_;
  static bool ready_;
};

std::string* ClusterCommandsTest::list_ = nullptr;
std::vector<cluster::Member>* ClusterCommandsTest::members_ = nullptr;
std::vector<std::unique_ptr<Node>>* ClusterCommandsTest::nodes_ = nullptr;
bool ClusterCommandsTest::ready_ = false;

std::string Bulk(std::string_view s) {
  return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n";
}

TEST_F(ClusterCommandsTest, SlotsIsTheMapInRedisFormat) {
  // 16384 = 5462 + 5461 + 5461: the first member gets the extra slot.
  std::string want = "*3\r\n";
  const int ranges[3][2] = {{0, 5461}, {5462, 10922}, {10923, 16383}};
  for (size_t i = 0; i < 3; i++) {
    want += "*3\r\n:" + std::to_string(ranges[i][0]) + "\r\n:" + std::to_string(ranges[i][1]) +
            "\r\n*4\r\n" + Bulk("127.0.0.1") + ":" + std::to_string(17001 + i) + "\r\n" +
            Bulk(name(i)) + "*0\r\n";
  }
  // Every node gives the same answer.
  for (size_t i = 0; i < 3; i++) EXPECT_EQ(RawOn(i, {"CLUSTER", "SLOTS"}), want) << i;
  // RESP3: the empty metadata is a map.
  Session s(&engine(1), 0);
  s.Run({"HELLO", "3"});
  const std::string resp3 = s.Run({"CLUSTER", "SLOTS"});
  EXPECT_THAT(resp3, HasSubstr(Bulk(name(0)) + "%0\r\n"));
}

TEST_F(ClusterCommandsTest, NodesListsEveryMemberWithItsSlots) {
  const char* slots[3] = {"0-5461", "5462-10922", "10923-16383"};
  for (size_t self = 0; self < 3; self++) {
    std::string want;
    for (size_t i = 0; i < 3; i++) {
      want += name(i) + " 127.0.0.1:" + std::to_string(17001 + i) + "@" +
              std::to_string(member(i).port) + (i == self ? " myself,master" : " master") +
              " - 0 0 1 connected " + slots[i] + "\n";
    }
    const Reply r = RunOn(self, {"CLUSTER", "NODES"});
    EXPECT_EQ(r.type, Reply::Type::kBulk);  // verbatim in RESP3
    EXPECT_EQ(r.str, want) << self;
  }
}

TEST_F(ClusterCommandsTest, MyIdIsTheNodeName) {
  for (size_t i = 0; i < 3; i++) {
    EXPECT_THAT(RunOn(i, {"CLUSTER", "MYID"}), IsBulk(name(i)));
    EXPECT_EQ(name(i).size(), 40u);
  }
  EXPECT_NE(name(0), name(1));
}

TEST_F(ClusterCommandsTest, InfoIsOkWhenFormedAndEveryMemberIsUp) {
  const std::vector<std::string> lines = Lines(RunOn(2, {"CLUSTER", "INFO"}).str);
  ASSERT_EQ(lines.size(), 12u);
  EXPECT_THAT(
      std::vector<std::string>(lines.begin(), lines.begin() + 9),
      ElementsAre("cluster_state:ok", "cluster_slots_assigned:16384", "cluster_slots_ok:16384",
                  "cluster_slots_pfail:0", "cluster_slots_fail:0", "cluster_known_nodes:3",
                  "cluster_size:3", "cluster_current_epoch:1", "cluster_my_epoch:1"));
  EXPECT_THAT(lines[9], StartsWith("cluster_stats_messages_sent:"));
  EXPECT_NE(lines[9], "cluster_stats_messages_sent:0");  // HELLOs and heartbeats went out
  EXPECT_THAT(lines[10], StartsWith("cluster_stats_messages_received:"));
  EXPECT_NE(lines[10], "cluster_stats_messages_received:0");
  EXPECT_EQ(lines[11], "total_cluster_links_buffer_limit_exceeded:0");
}

TEST_F(ClusterCommandsTest, ShardsGiveEachMemberItsRanges) {
  const Reply r = RunOn(0, {"CLUSTER", "SHARDS"});
  ASSERT_EQ(r.type, Reply::Type::kArray);
  ASSERT_EQ(r.elements.size(), 3u);
  const int ranges[3][2] = {{0, 5461}, {5462, 10922}, {10923, 16383}};
  for (size_t i = 0; i < 3; i++) {
    const Reply& shard = r.elements[i];
    ASSERT_EQ(shard.elements.size(), 4u);  // RESP2: a map is a flat array
    EXPECT_THAT(shard.elements[0], IsBulk("slots"));
    EXPECT_THAT(shard.elements[1].elements, ElementsAre(IsInt(ranges[i][0]), IsInt(ranges[i][1])));
    EXPECT_THAT(shard.elements[2], IsBulk("nodes"));
    ASSERT_EQ(shard.elements[3].elements.size(), 1u);
    EXPECT_THAT(
        shard.elements[3].elements[0].elements,
        ElementsAre(IsBulk("id"), IsBulk(name(i)), IsBulk("port"),
                    IsInt(static_cast<int64_t>(17001 + i)), IsBulk("ip"), IsBulk("127.0.0.1"),
                    IsBulk("endpoint"), IsBulk("127.0.0.1"), IsBulk("role"), IsBulk("master"),
                    IsBulk("replication-offset"), IsInt(0), IsBulk("health"), IsBulk("online")));
  }
}

TEST_F(ClusterCommandsTest, KeySlotIsRedisClusters) {
  EXPECT_THAT(RunOn(0, {"CLUSTER", "KEYSLOT", "foo"}), IsInt(12182));
  EXPECT_THAT(RunOn(0, {"CLUSTER", "KEYSLOT", "somekey"}), IsInt(11058));
  EXPECT_THAT(RunOn(0, {"CLUSTER", "KEYSLOT", "123456789"}), IsInt(0x31C3 % 16384));
  EXPECT_THAT(RunOn(0, {"CLUSTER", "KEYSLOT", "{foo}bar"}), IsInt(12182));
  EXPECT_THAT(RunOn(1, {"CLUSTER", "KEYSLOT", "{user1000}.following"}),
              IsInt(RunOn(2, {"CLUSTER", "KEYSLOT", "{user1000}.followers"}).integer));
  EXPECT_THAT(RunOn(0, {"CLUSTER", "KEYSLOT", ""}), IsInt(0));
  EXPECT_THAT(RunOn(0, {"CLUSTER", "KEYSLOT"}),
              IsErr("ERR wrong number of arguments for 'cluster|keyslot' command"));
}

TEST_F(ClusterCommandsTest, KeysInSlotCountOnlyTheHomesKeys) {
  // Three keys on one slot, written at their home (keys live at their home).
  const uint16_t slot = cluster::KeySlot("{kis}");
  size_t home = 0;
  while (member(home).id != nodes_->at(0)->cluster->map().Home(slot)) home++;
  const size_t other = (home + 1) % 3;
  for (const char* k : {"{kis}a", "{kis}b", "{kis}c"}) {
    EXPECT_THAT(RunOn(home, {"SET", k, "v"}), IsOk());
  }
  EXPECT_THAT(RunOn(home, {"SET", "{other}x", "v"}), IsOk());  // another slot
  const std::string s = std::to_string(slot);
  EXPECT_THAT(RunOn(home, {"CLUSTER", "COUNTKEYSINSLOT", s}), IsInt(3));
  EXPECT_THAT(RunOn(other, {"CLUSTER", "COUNTKEYSINSLOT", s}), IsInt(0));
  EXPECT_THAT(RunOn(home, {"CLUSTER", "COUNTKEYSINSLOT", std::to_string((slot + 1) % 16384)}),
              IsInt(cluster::KeySlot("{other}x") == (slot + 1) % 16384 ? 1 : 0));

  Reply all = RunOn(home, {"CLUSTER", "GETKEYSINSLOT", s, "10"});
  ASSERT_EQ(all.elements.size(), 3u);
  std::vector<std::string> keys;
  for (const Reply& k : all.elements) keys.push_back(k.str);
  std::sort(keys.begin(), keys.end());
  EXPECT_THAT(keys, ElementsAre("{kis}a", "{kis}b", "{kis}c"));
  EXPECT_THAT(RunOn(home, {"CLUSTER", "GETKEYSINSLOT", s, "2"}), IsArrayOfSize(2));
  EXPECT_THAT(RunOn(home, {"CLUSTER", "GETKEYSINSLOT", s, "0"}), IsArrayOfSize(0));
  // The count bounds what is returned, never what is allocated.
  EXPECT_THAT(RunOn(home, {"CLUSTER", "GETKEYSINSLOT", s, "9223372036854775807"}),
              IsArrayOfSize(3));
  EXPECT_THAT(RunOn(other, {"CLUSTER", "GETKEYSINSLOT", s, "10"}), IsArrayOfSize(0));

  // A value of that slot in another node's store (as a cached copy would be) is not its key.
  Result<store::ValuePtr> stray = internal::MakeString("{kis}stray", "v");
  ASSERT_TRUE(stray.ok());
  engine(other).store().Put(*stray);
  EXPECT_THAT(RunOn(other, {"CLUSTER", "COUNTKEYSINSLOT", s}), IsInt(0));
  EXPECT_THAT(RunOn(other, {"CLUSTER", "GETKEYSINSLOT", s, "10"}), IsArrayOfSize(0));
  engine(other).store().Remove("{kis}stray");

  EXPECT_THAT(RunOn(home, {"DEL", "{kis}b"}), IsInt(1));
  EXPECT_THAT(RunOn(home, {"CLUSTER", "COUNTKEYSINSLOT", s}), IsInt(2));
  for (const char* k : {"{kis}a", "{kis}c", "{other}x"}) RunOn(home, {"DEL", k});
}

TEST_F(ClusterCommandsTest, KeysInSlotRefuseBadSlotsAndCounts) {
  for (const char* bad : {"-1", "16384", "9223372036854775807", "-9223372036854775808"}) {
    EXPECT_THAT(RunOn(0, {"CLUSTER", "COUNTKEYSINSLOT", bad}), IsErr("ERR Invalid slot")) << bad;
    EXPECT_THAT(RunOn(0, {"CLUSTER", "GETKEYSINSLOT", bad, "1"}),
                IsErr("ERR Invalid slot or number of keys"))
        << bad;
  }
  EXPECT_THAT(RunOn(0, {"CLUSTER", "GETKEYSINSLOT", "0", "-1"}),
              IsErr("ERR Invalid slot or number of keys"));
  for (const char* nan : {"x", "", " 1", "1.5", "99999999999999999999"}) {
    EXPECT_THAT(RunOn(0, {"CLUSTER", "COUNTKEYSINSLOT", nan}), IsErr(kNotInt)) << nan;
    EXPECT_THAT(RunOn(0, {"CLUSTER", "GETKEYSINSLOT", nan, "1"}), IsErr(kNotInt)) << nan;
    EXPECT_THAT(RunOn(0, {"CLUSTER", "GETKEYSINSLOT", "0", nan}), IsErr(kNotInt)) << nan;
  }
  EXPECT_THAT(RunOn(0, {"CLUSTER", "COUNTKEYSINSLOT", "0", "1"}),
              IsErr("ERR wrong number of arguments for 'cluster|countkeysinslot' command"));
  EXPECT_THAT(RunOn(0, {"CLUSTER", "GETKEYSINSLOT", "0"}),
              IsErr("ERR wrong number of arguments for 'cluster|getkeysinslot' command"));
}

TEST_F(ClusterCommandsTest, HostileArgumentsGetRepliesNeverCrashes) {
  const std::vector<std::string> hostile = {"",
                                            "-1",
                                            "0",
                                            "16383",
                                            "16384",
                                            "9223372036854775807",
                                            "-9223372036854775808",
                                            "18446744073709551616",
                                            "1e3",
                                            " 1",
                                            std::string("1\0", 2),
                                            std::string(70000, 'x'),
                                            "{",
                                            "}{",
                                            "{}",
                                            "{{}}"};
  for (const std::string& a : hostile) {
    for (const std::string& b : hostile) {
      for (const std::vector<std::string>& args :
           std::vector<std::vector<std::string>>{{"CLUSTER", "KEYSLOT", a},
                                                 {"CLUSTER", "COUNTKEYSINSLOT", a},
                                                 {"CLUSTER", "GETKEYSINSLOT", a, b},
                                                 {"CLUSTER", a},
                                                 {"CLUSTER", "INFO", a},
                                                 {"CLUSTER", "SLOTS", a, b}}) {
        const Reply r = RunOn(0, args);  // one whole, well-formed reply (Decode checks)
        EXPECT_NE(r.type, Reply::Type::kNull);
      }
    }
  }
  EXPECT_EQ(engine(0).internal_errors(), 0u);
}

TEST_F(ClusterCommandsTest, InfoClusterSection) {
  for (size_t i = 0; i < 3; i++) {
    const std::string info = RunOn(i, {"INFO", "cluster"}).str;
    const std::vector<std::string> lines = Lines(info);
    ASSERT_GE(lines.size(), 10u) << info;
    EXPECT_EQ(lines[0], "# Cluster");
    EXPECT_EQ(lines[1], "cluster_enabled:1");
    EXPECT_EQ(lines[2], "cluster_state:ok");
    EXPECT_EQ(lines[3], "cluster_name:floe");
    EXPECT_EQ(lines[4], "cluster_formed:1");
    EXPECT_EQ(lines[5], "cluster_map_version:1");
    EXPECT_EQ(lines[6], "cluster_self_id:" + std::to_string(member(i).id));
    EXPECT_EQ(lines[7], "cluster_self_address:" + member(i).address());
    EXPECT_THAT(lines[8], StartsWith("cluster_formation_ms:"));
    EXPECT_THAT(info, Not(HasSubstr("waiting_")));
    for (size_t m = 0; m < 3; m++) {
      EXPECT_EQ(lines[9 + m], "member_" + std::to_string(member(m).id) +
                                  ":address=" + member(m).address() +
                                  ",client_port=" + std::to_string(17001 + m) +
                                  ",state=up,self=" + (m == i ? "1" : "0"));
    }
    const char* owned[3] = {"5462", "5461", "5461"};
    const char* ranges[3] = {"0-5461", "5462-10922", "10923-16383"};
    EXPECT_EQ(lines[12], std::string("cluster_slots_owned:") + owned[i]);
    EXPECT_EQ(lines[13], std::string("cluster_slot_ranges:") + ranges[i]);
    for (const char* field :
         {"\r\ncluster_forwarded:", "\r\ncluster_forward_failures:", "\r\ncluster_proxied:",
          "\r\ncluster_proxy_sessions:", "\r\nrpc_calls:", "\r\nrpc_timeouts:",
          "\r\nrpc_call_resends:", "\r\nrpc_messages_sent:", "\r\nrpc_peers_down:"}) {
      EXPECT_THAT(info, HasSubstr(field));
    }
    // The section is in INFO's default and full lists, between errorstats and keyspace.
    EXPECT_THAT(RunOn(i, {"INFO"}).str, HasSubstr("# Errorstats\r\n"));
    EXPECT_THAT(RunOn(i, {"INFO"}).str, HasSubstr("\r\n# Cluster\r\ncluster_enabled:1\r\n"));
    EXPECT_THAT(RunOn(i, {"INFO", "everything"}).str, HasSubstr("# Cluster\r\n"));
    EXPECT_THAT(RunOn(i, {"INFO", "server"}).str, HasSubstr("redis_mode:cluster\r\n"));
  }
}

// ---- a node whose peers never start ----

TEST(ClusterAloneTest, BeforeFormationTheMapIsShownAndTheReasonsAreGiven) {
  std::vector<uint16_t> ports;
  for (int i = 0; i < 3; i++) ports.push_back(testing::FreeClusterPort("127.0.0.1"));
  for (uint16_t p : ports) ASSERT_NE(p, 0);
  const std::string list = List(ports);
  Result<std::vector<cluster::Member>> members = cluster::ParseMembers(list);
  ASSERT_TRUE(members.ok());
  const cluster::Member& me = (*members)[1];
  // The shortest node timeout marks silent peers down soonest (RPC's down_after).
  std::unique_ptr<Node> node = StartNode(list, me.port, 17100, /*node_timeout_ms=*/100);
  ASSERT_NE(node, nullptr);
  Session s(node->engine.get(), 0);
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& m : node->cluster->cluster().Members()) {
      if (!m.self && m.up) return false;
    }
    return true;
  }));
  EXPECT_FALSE(node->cluster->formed());

  const std::string info = Decode(s.Run({"INFO", "cluster"})).str;
  EXPECT_THAT(info, HasSubstr("\r\ncluster_state:fail\r\n"));
  EXPECT_THAT(info, HasSubstr("\r\ncluster_formed:0\r\ncluster_map_version:1\r\n"));
  EXPECT_THAT(info, HasSubstr("\r\ncluster_formation_ms:0.000\r\n"));
  const std::vector<std::string> reasons = node->cluster->cluster().WaitingReasons();
  ASSERT_EQ(reasons.size(), 2u);
  EXPECT_EQ(reasons[0], (*members)[0].address() + ": no answer");
  EXPECT_THAT(info,
              HasSubstr("\r\nwaiting_1:" + reasons[0] + "\r\nwaiting_2:" + reasons[1] + "\r\n"));
  EXPECT_THAT(info, HasSubstr("\r\nmember_1:address=" + (*members)[0].address() +
                              ",client_port=0,state=waiting,self=0\r\n"));
  EXPECT_THAT(info, HasSubstr("\r\nmember_2:address=" + me.address() +
                              ",client_port=17100,state=up,self=1\r\n"));

  const std::vector<std::string> lines = Lines(Decode(s.Run({"CLUSTER", "INFO"})).str);
  EXPECT_THAT(
      std::vector<std::string>(lines.begin(), lines.begin() + 5),
      ElementsAre("cluster_state:fail", "cluster_slots_assigned:16384", "cluster_slots_ok:5461",
                  "cluster_slots_pfail:10923", "cluster_slots_fail:0"));

  // The map is known from the list; the silent members' client ports are not (0).
  const Reply slots = Decode(s.Run({"CLUSTER", "SLOTS"}));
  ASSERT_EQ(slots.elements.size(), 3u);
  EXPECT_THAT(slots.elements[0].elements[2].elements[1], IsInt(0));
  EXPECT_THAT(slots.elements[1].elements[2].elements[1], IsInt(17100));
  const std::string nodes = Decode(s.Run({"CLUSTER", "NODES"})).str;
  EXPECT_THAT(nodes, HasSubstr(NodeName((*members)[0]) + " 127.0.0.1:0@" +
                               std::to_string((*members)[0].port) +
                               " master,fail? - 0 0 1 disconnected 0-5461\n"));
  EXPECT_THAT(nodes, HasSubstr(NodeName(me) + " 127.0.0.1:17100@" + std::to_string(me.port) +
                               " myself,master - 0 0 1 connected 5462-10922\n"));
  const Reply shards = Decode(s.Run({"CLUSTER", "SHARDS"}));
  ASSERT_EQ(shards.elements.size(), 3u);
  // No "port" for a member whose port is unknown; health from liveness.
  EXPECT_THAT(
      shards.elements[0].elements[3].elements[0].elements,
      ElementsAre(IsBulk("id"), IsBulk(NodeName((*members)[0])), IsBulk("ip"), IsBulk("127.0.0.1"),
                  IsBulk("endpoint"), IsBulk("127.0.0.1"), IsBulk("role"), IsBulk("master"),
                  IsBulk("replication-offset"), IsInt(0), IsBulk("health"), IsBulk("fail")));
}

}  // namespace
}  // namespace floe::server
