// CLUSTER INFO/MYID/NODES/SLOTS/SHARDS/KEYSLOT/COUNTKEYSINSLOT/GETKEYSINSLOT/HELP in Redis 7.0's
// reply formats, and INFO's cluster section (docs/cluster.md, "CLUSTER commands and INFO").
//
// Every answer comes from this node's view: the static slot map (ranges per member, in id
// order), the members' states from formation and RPC's liveness, and the node's counters. Any
// node answers any key (keyed commands are routed to their home), so the topology a
// cluster-aware client reads here only lets it go to the home directly and save a hop.

#include <charconv>
#include <cstdio>
#include <set>

#include "cluster/cluster.h"
#include "consensus/consensus.h"
#include "server/internal/analytics_pool.h"
#include "server/internal/cluster_node.h"
#include "server/internal/command.h"

namespace floe::server::internal {

namespace {

constexpr char kDisabled[] = "ERR This instance has cluster support disabled";

// The cluster node, or null after answering Redis's error for a standalone node.
ClusterNode* NodeOrError(CommandContext& ctx) {
  ClusterNode* node = ctx.engine.cluster();
  if (node == nullptr) ctx.Error(kDisabled);
  return node;
}

// One snapshot of the members (in id order, ids 1..n) for one reply, so that the lines of a
// reply agree with each other even while peers come and go.
struct View {
  const cluster::SlotMap& map;
  std::vector<cluster::Cluster::MemberState> members;
  net::NodeId self;
  bool formed;
  bool serving;

  explicit View(const ClusterNode& node)
      : map(node.map()),
        members(node.Members()),
        self(node.self()),
        formed(node.formed()),
        serving(node.serving()) {}
  // Redis's cluster_state: ok only when every member is formed with us and reachable, and this
  // member serves keys (its agreed metadata caught up, docs/membership.md).
  bool ok() const {
    if (!formed || !serving) return false;
    for (const auto& m : members) {
      if (!m.up) return false;
    }
    return true;
  }
  const cluster::Cluster::MemberState* Find(net::NodeId id) const {
    if (id >= 1 && id <= members.size() && members[id - 1].member.id == id) {
      return &members[id - 1];  // ids are 1..n in order: O(1) for a thousand ranges
    }
    for (const auto& m : members) {
      if (m.member.id == id) return &m;
    }
    return nullptr;
  }
};

std::string SlotRangeText(const cluster::SlotMap::Range& r) {
  return r.first == r.last ? std::to_string(r.first)
                           : std::to_string(r.first) + "-" + std::to_string(r.last);
}

bool InRange(int64_t slot) { return slot >= 0 && slot < cluster::kSlots; }

// Keys live at their home: a slot homed elsewhere has no keys here (and a cached copy, once
// the DKV keeps some, is not this node's key).
bool HomedHere(const ClusterNode& node, int64_t slot) {
  return node.map().Home(static_cast<uint16_t>(slot)) == node.self();
}

// One `[host, port, name, {}]` entry of CLUSTER SLOTS.
void SlotsNodeEntry(resp::ReplyWriter& out, const cluster::Cluster::MemberState& m) {
  out.ArrayHeader(4);
  out.Bulk(m.member.host);
  out.Integer(m.client_port);
  out.Bulk(NodeName(m.member));
  out.MapHeader(0);  // no hostname: the IP is the preferred endpoint
}

}  // namespace

void CmdClusterInfo(CommandContext& ctx) {
  ClusterNode* node = NodeOrError(ctx);
  if (node == nullptr) return;
  const View view(*node);
  int64_t slots_ok = 0, slots_pfail = 0;
  for (const cluster::SlotMap::Range& r : view.map.Ranges()) {
    const auto* home = view.Find(r.home);
    const int64_t n = int64_t{r.last} - r.first + 1;
    // Down in our own view only: Redis calls that PFAIL; nothing here agrees on FAIL.
    (home != nullptr && home->up ? slots_ok : slots_pfail) += n;
  }
  const rpc::Stats& rpc = node->rpc_stats();
  const auto epoch = std::to_string(view.map.version());
  std::string text;
  auto line = [&text](std::string_view key, std::string_view value) {
    text.append(key).append(":").append(value).append("\r\n");
  };
  line("cluster_state", view.ok() ? "ok" : "fail");
  line("cluster_slots_assigned", std::to_string(cluster::kSlots));
  line("cluster_slots_ok", std::to_string(slots_ok));
  line("cluster_slots_pfail", std::to_string(slots_pfail));
  line("cluster_slots_fail", "0");
  line("cluster_known_nodes", std::to_string(view.members.size()));
  // Members that are home to at least one slot (every member, in a balanced map).
  std::set<net::NodeId> homes;
  for (const cluster::SlotMap::Range& r : view.map.Ranges()) homes.insert(r.home);
  line("cluster_size", std::to_string(homes.size()));
  line("cluster_current_epoch", epoch);
  line("cluster_my_epoch", epoch);
  line("cluster_stats_messages_sent",
       std::to_string(rpc.messages_sent.load(std::memory_order_relaxed)));
  line("cluster_stats_messages_received",
       std::to_string(rpc.messages_received.load(std::memory_order_relaxed)));
  line("total_cluster_links_buffer_limit_exceeded", "0");
  ctx.out.Verbatim("txt", text);
}

void CmdClusterMyId(CommandContext& ctx) {
  ClusterNode* node = NodeOrError(ctx);
  if (node == nullptr) return;
  const cluster::Member* me = node->map().Find(node->self());  // never null: self is a member
  ctx.out.Bulk(me == nullptr ? std::string() : NodeName(*me));
}

// `<id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <config-epoch> <link-state>
// <slot> ...`, one line per member in id order. Ping and pong times are 0: liveness is RPC's
// heartbeat, which keeps no per-ping times.
void CmdClusterNodes(CommandContext& ctx) {
  ClusterNode* node = NodeOrError(ctx);
  if (node == nullptr) return;
  const View view(*node);
  const std::vector<cluster::SlotMap::Range> ranges = view.map.Ranges();
  const auto epoch = std::to_string(view.map.version());
  std::string text;
  for (const auto& m : view.members) {
    text.append(NodeName(m.member)).append(" ");
    text.append(m.member.host).append(":").append(std::to_string(m.client_port));
    text.append("@").append(std::to_string(m.member.port)).append(" ");
    text.append(m.self ? "myself,master" : (m.up ? "master" : "master,fail?"));
    text.append(" - 0 0 ").append(epoch);
    text.append(m.up ? " connected" : " disconnected");
    for (const cluster::SlotMap::Range& r : ranges) {
      if (r.home == m.member.id) text.append(" ").append(SlotRangeText(r));
    }
    text.append("\n");
  }
  ctx.out.Verbatim("txt", text);
}

void CmdClusterSlots(CommandContext& ctx) {
  ClusterNode* node = NodeOrError(ctx);
  if (node == nullptr) return;
  const View view(*node);
  const std::vector<cluster::SlotMap::Range> ranges = view.map.Ranges();
  size_t homed = 0;
  for (const cluster::SlotMap::Range& r : ranges) homed += view.Find(r.home) != nullptr ? 1 : 0;
  ctx.out.ArrayHeader(homed);
  for (const cluster::SlotMap::Range& r : ranges) {
    const auto* home = view.Find(r.home);
    if (home == nullptr) continue;  // never: every home is a member
    ctx.out.ArrayHeader(3);
    ctx.out.Integer(r.first);
    ctx.out.Integer(r.last);
    SlotsNodeEntry(ctx.out, *home);
  }
}

// One shard per member (a master without replicas), in id order.
void CmdClusterShards(CommandContext& ctx) {
  ClusterNode* node = NodeOrError(ctx);
  if (node == nullptr) return;
  const View view(*node);
  const std::vector<cluster::SlotMap::Range> ranges = view.map.Ranges();
  ctx.out.ArrayHeader(view.members.size());
  for (const auto& m : view.members) {
    ctx.out.MapHeader(2);
    ctx.out.Bulk("slots");
    size_t owned = 0;
    for (const cluster::SlotMap::Range& r : ranges) owned += r.home == m.member.id ? 1 : 0;
    ctx.out.ArrayHeader(2 * owned);
    for (const cluster::SlotMap::Range& r : ranges) {
      if (r.home != m.member.id) continue;
      ctx.out.Integer(r.first);
      ctx.out.Integer(r.last);
    }
    ctx.out.Bulk("nodes");
    ctx.out.ArrayHeader(1);
    // Redis leaves "port" out while a node's port is unknown (0).
    ctx.out.MapHeader(m.client_port != 0 ? 7 : 6);
    ctx.out.Bulk("id");
    ctx.out.Bulk(NodeName(m.member));
    if (m.client_port != 0) {
      ctx.out.Bulk("port");
      ctx.out.Integer(m.client_port);
    }
    ctx.out.Bulk("ip");
    ctx.out.Bulk(m.member.host);
    ctx.out.Bulk("endpoint");
    ctx.out.Bulk(m.member.host);
    ctx.out.Bulk("role");
    ctx.out.Bulk("master");
    ctx.out.Bulk("replication-offset");
    ctx.out.Integer(0);
    ctx.out.Bulk("health");
    ctx.out.Bulk(m.up ? "online" : "fail");
  }
}

void CmdClusterKeySlot(CommandContext& ctx) {
  if (NodeOrError(ctx) == nullptr) return;
  ctx.out.Integer(cluster::KeySlot(ctx.args[2]));
}

// O(N) in the keys this node holds: the store keeps no per-slot index, so this scans it
// (docs/cluster.md). A slot homed elsewhere answers 0 without a scan.
void CmdClusterCountKeysInSlot(CommandContext& ctx) {
  ClusterNode* node = NodeOrError(ctx);
  if (node == nullptr) return;
  int64_t slot = 0;
  if (!ParseInt64(ctx.args[2], &slot)) return ctx.NotInteger();
  if (!InRange(slot)) return ctx.Error("ERR Invalid slot");
  // Not caught up, the store may be stale or empty (docs/membership.md, "Slot scans").
  if (!node->serving()) return ctx.Error(node->DownError());
  if (!HomedHere(*node, slot)) return ctx.out.Integer(0);
  int64_t count = 0;
  ctx.store().ForEach([&](const store::Value& v) {
    if (!v.IsExpired(ctx.now_ms) && cluster::KeySlot(v.key()) == slot) count++;
  });
  ctx.out.Integer(count);
}

// The same scan, keeping at most `count` keys: what the client asks for bounds what is copied,
// never what is reserved.
void CmdClusterGetKeysInSlot(CommandContext& ctx) {
  ClusterNode* node = NodeOrError(ctx);
  if (node == nullptr) return;
  int64_t slot = 0, count = 0;
  if (!ParseInt64(ctx.args[2], &slot) || !ParseInt64(ctx.args[3], &count)) {
    return ctx.NotInteger();
  }
  if (!InRange(slot) || count < 0) return ctx.Error("ERR Invalid slot or number of keys");
  if (!node->serving()) return ctx.Error(node->DownError());
  std::vector<std::string> keys;
  if (count > 0 && HomedHere(*node, slot)) {
    const auto want = static_cast<uint64_t>(count);
    ctx.store().ForEach([&](const store::Value& v) {
      if (keys.size() >= want || v.IsExpired(ctx.now_ms)) return;
      if (cluster::KeySlot(v.key()) == slot) keys.emplace_back(v.key());
    });
  }
  ctx.out.ArrayHeader(keys.size());
  for (const std::string& k : keys) ctx.out.Bulk(k);
}

// Rule J2 (docs/membership.md): the removal's refusal in Redis's style.
void ReplyRemoval(CommandContext& ctx, const Status& s) {
  if (s.ok()) return ctx.out.Ok();
  ctx.Error("ERR " + std::string(s.message()));
}

// LEAVE and FORGET wait for the Raft leader (up to 15 s) on an analytics pool thread, not on
// the I/O thread, whose other clients (and, through its worker lock, exclusive commands on every
// thread) would wait meanwhile; the reply is deferred as an analytics command's is.
void RunRemoval(CommandContext& ctx, ClusterNode* node, net::NodeId id, bool leave) {
  RunAnalytics(ctx, [node, id, leave](const std::atomic<bool>* cancel) -> AnalyticsReply {
    const Status s = node->RemoveMember(id, std::chrono::seconds(15), cancel);
    return [node, s, leave](CommandContext& c) {
      ReplyRemoval(c, s);
      // The reply leaves before the node stops (the server's Stop, once the loop runs this).
      if (leave && s.ok()) node->Leave(200'000);
    };
  });
}

void CmdClusterLeave(CommandContext& ctx) {
  if (FinishAnalytics(ctx)) return;
  ClusterNode* node = NodeOrError(ctx);
  if (node == nullptr) return;
  RunRemoval(ctx, node, node->self(), true);
}

void CmdClusterForget(CommandContext& ctx) {
  if (FinishAnalytics(ctx)) return;
  ClusterNode* node = NodeOrError(ctx);
  if (node == nullptr) return;
  const std::string_view arg = ctx.args[2];
  net::NodeId id = 0;
  for (const auto& m : node->Members()) {
    if (NodeName(m.member) == arg) id = m.member.id;
  }
  if (id == 0) {
    uint64_t n = 0;
    const auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
    if (ec != std::errc() || end != arg.data() + arg.size() || n == 0 ||
        n >= cluster::kFirstReservedId) {
      return ctx.Error("ERR Unknown node " + std::string(arg.substr(0, 64)));
    }
    id = static_cast<net::NodeId>(n);
  }
  // Redis's text: a member leaves with CLUSTER LEAVE, which also stops it.
  if (id == node->self()) return ctx.Error("ERR I tried hard but I can't forget myself...");
  RunRemoval(ctx, node, id, false);
}

// The one CLUSTER subcommand a standalone node answers, so a user can learn what it offers.
void CmdClusterHelp(CommandContext& ctx) {
  static const char* kLines[] = {
      "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
      "COUNTKEYSINSLOT <slot>",
      "    Return the number of keys in <slot> held by this node.",
      "FORGET <node-id>",
      "    Remove a member that owns and backs up no slot (its id or node name).",
      "GETKEYSINSLOT <slot> <count>",
      "    Return up to <count> key names in <slot> held by this node.",
      "INFO",
      "    Return information about the cluster.",
      "KEYSLOT <key>",
      "    Return the hash slot for <key>.",
      "LEAVE",
      "    Remove this member (it must own and back up no slot); the node then exits.",
      "MYID",
      "    Return the node id.",
      "NODES",
      "    Return cluster configuration seen by node. Output format:",
      "    <id> <ip:port@bus-port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
      "SHARDS",
      "    Return information about slot range mappings and the nodes associated with them.",
      "SLOTS",
      "    Return information about slots range mappings. Each range is made of:",
      "    start, end, master addresses, ports and ids",
      "HELP",
      "    Print this help.",
  };
  ReplyHelp(ctx, kLines);
}

void ClusterInfoSection(Engine& engine, std::string* out) {
  auto line = [out](std::string_view key, std::string_view value) {
    out->append(key).append(":").append(value).append("\r\n");
  };
  auto number = [&line](std::string_view key, uint64_t value) { line(key, std::to_string(value)); };
  out->append("# Cluster\r\n");
  ClusterNode* node = engine.cluster();
  line("cluster_enabled", node == nullptr ? "0" : "1");
  if (node == nullptr) return;
  const View view(*node);
  const Config config = engine.config();
  line("cluster_state", view.ok() ? "ok" : "fail");
  line("cluster_name", config.cluster_name);
  number("cluster_formed", view.formed ? 1 : 0);
  number("cluster_map_version", view.map.version());
  number("cluster_self_id", view.self);
  const auto* me = view.Find(view.self);
  line("cluster_self_address", me != nullptr ? me->member.address() : std::string());
  char ms[32];
  std::snprintf(ms, sizeof(ms), "%.3f",
                static_cast<double>(node->cluster().formation_us()) / 1000.0);
  line("cluster_formation_ms", ms);
  // One line per reason, as the log gives them; a line break in one would end the line early.
  const std::vector<std::string> reasons = node->cluster().WaitingReasons();
  for (size_t i = 0; i < reasons.size(); i++) {
    std::string reason = reasons[i];
    for (char& c : reason) c = (c == '\r' || c == '\n') ? ' ' : c;
    line("waiting_" + std::to_string(i + 1), reason);
  }
  for (const auto& m : view.members) {
    const char* state = !m.agreed ? "waiting" : (m.up ? "up" : "down");
    line("member_" + std::to_string(m.member.id),
         "address=" + m.member.address() + ",client_port=" + std::to_string(m.client_port) +
             ",state=" + state + ",self=" + (m.self ? "1" : "0"));
  }
  uint64_t owned = 0;
  std::string owned_ranges;
  for (const cluster::SlotMap::Range& r : view.map.Ranges()) {
    if (r.home != view.self) continue;
    owned += uint64_t{r.last} - r.first + 1;
    owned_ranges.append(owned_ranges.empty() ? "" : " ").append(SlotRangeText(r));
  }
  number("cluster_slots_owned", owned);
  line("cluster_slot_ranges", owned_ranges);
  // The agreed metadata (docs/membership.md, rule M1): its Raft state and the table's.
  if (const cluster::Meta* meta = node->meta(); meta == nullptr) {
    const std::string off = node->meta_off();
    // Raft starts when the cloud forms (rule M5): until then it waits.
    line("meta", off.empty() ? "waiting" : "off");
    if (!off.empty()) line("meta_off_reason", off);
    number("meta_caught_up", node->meta_caught_up() ? 1 : 0);
  } else {
    // A member that refused its log's cluster id (rule M5) stopped its Raft and says why.
    const std::string refused = node->meta_off();
    line("meta", refused.empty() ? "on" : node->removed() ? "removed" : "refused");
    if (!refused.empty()) line("meta_off_reason", refused);
    number("meta_caught_up", node->meta_caught_up() ? 1 : 0);
    // docs/replication.md, W1: backups take changes only for a recorded life.
    number("meta_life_recorded", node->life_recorded() ? 1 : 0);
    // docs/membership.md, O1 and O4: the ownership lease, and failovers committed as leader.
    number("meta_lease_left_ms", static_cast<int64_t>(node->lease_left_ms()));
    number("meta_failovers", static_cast<int64_t>(node->failovers()));
    const consensus::State rs = meta->raft();
    line("meta_role", !rs.running ? "stopped" : rs.leader ? "leader" : "follower");
    number("meta_leader_id", rs.leader_id);
    line("meta_leader_address", rs.leader_address);
    // Rule M4: this member's role in Raft's configuration, and the configuration's counts.
    std::string_view raft_role = "none";
    uint64_t voters = 0;
    uint64_t learners = 0;
    for (const consensus::Server& server : rs.configuration) {
      if (server.id == rs.id) raft_role = consensus::RoleName(server.role);
      voters += server.role == consensus::Role::kVoter ? 1 : 0;
      learners += server.role == consensus::Role::kLearner ? 1 : 0;
    }
    line("meta_raft_role", raft_role);
    number("meta_voters", voters);
    number("meta_learners", learners);
    number("meta_term", rs.term);
    number("meta_commit_index", rs.commit_index);
    number("meta_applied_index", rs.applied_index);
    const std::shared_ptr<const cluster::Table> table = meta->table();
    number("meta_table_epoch", table->epoch());
    number("meta_table_members", table->members().size());
    line("meta_cluster_id", table->cluster_id().ToString());
    // Routing reads the table's owners once it is applied (docs/membership.md, step 1).
    number("meta_slots_given_away_with_keys", node->slots_given_away_with_keys());
    bool matches = !table->members().empty();
    for (uint16_t slot = 0; matches && slot < cluster::kSlots; slot++) {
      matches = table->slot(slot).owner == view.map.Home(slot);
    }
    number("meta_table_matches_routing", matches ? 1 : 0);
  }
  const ClusterNode::Stats& s = node->stats();
  number("cluster_forwarded", s.forwarded.load(std::memory_order_relaxed));
  number("cluster_forward_failures", s.forward_failures.load(std::memory_order_relaxed));
  number("cluster_proxied", s.proxied.load(std::memory_order_relaxed));
  number("cluster_proxy_sessions", s.proxy_sessions.load(std::memory_order_relaxed));
  number("cluster_proxy_failures", s.proxy_failures.load(std::memory_order_relaxed));
  number("cluster_forward_answers_cut", s.answers_cut.load(std::memory_order_relaxed));
  number("cluster_forwards_held", s.forwards_held.load(std::memory_order_relaxed));
  // Cached copies (docs/cluster.md, rules C7 and C8).
  dkv::Dkv& d = node->dkv();
  number("cluster_home_ready", d.Serving() ? 1 : 0);
  const dkv::Stats& ds = d.stats();
  number("cache_keys", d.CacheSize());
  number("cache_bytes", d.CacheBytes());
  number("cache_hits", ds.cache_hits.load(std::memory_order_relaxed));
  number("cache_misses", ds.misses.load(std::memory_order_relaxed));
  number("cache_lease_misses", ds.lease_misses.load(std::memory_order_relaxed));
  number("cache_not_installed_late", ds.not_cached_late.load(std::memory_order_relaxed));
  number("cache_full", ds.cache_full.load(std::memory_order_relaxed));
  number("cache_purges", ds.purges.load(std::memory_order_relaxed));
  number("invalidations_sent", ds.invalidations_sent.load(std::memory_order_relaxed));
  number("invalidations_received", ds.invalidations_received.load(std::memory_order_relaxed));
  number("lease_waits", ds.lease_waits.load(std::memory_order_relaxed));
  const rpc::Stats& r = node->rpc_stats();
  const std::pair<std::string_view, const std::atomic<uint64_t>*> counters[] = {
      {"rpc_calls", &r.calls},
      {"rpc_completed", &r.completed},
      {"rpc_failed", &r.failed},
      {"rpc_timeouts", &r.timeouts},
      {"rpc_unavailable", &r.unavailable},
      {"rpc_cancelled", &r.cancelled},
      {"rpc_call_resends", &r.call_resends},
      {"rpc_ack_resends", &r.ack_resends},
      {"rpc_nacks_sent", &r.nacks_sent},
      {"rpc_duplicates", &r.duplicates},
      {"rpc_stale", &r.stale},
      {"rpc_handled", &r.handled},
      {"rpc_messages_sent", &r.messages_sent},
      {"rpc_messages_received", &r.messages_received},
      {"rpc_bytes_sent", &r.bytes_sent},
      {"rpc_bytes_received", &r.bytes_received},
      {"rpc_bad_messages", &r.bad_messages},
      {"rpc_auth_failures", &r.auth_failures},
      {"rpc_unknown_sender", &r.unknown_sender},
      {"rpc_peers_down", &r.peers_down},
      {"rpc_callee_entries", &r.callee_entries},
  };
  for (const auto& [name, counter] : counters) {
    number(name, counter->load(std::memory_order_relaxed));
  }
}

}  // namespace floe::server::internal
