// Server commands: INFO (its cluster section is cmd_cluster.cc's), CONFIG, DBSIZE,
// FLUSHDB/FLUSHALL, TIME, COMMAND.

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>

#include "server/internal/cluster_node.h"
#include "server/internal/command.h"
#include "server/internal/replica_store.h"

namespace floe::server::internal {

namespace {

std::string Human(int64_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (bytes < 1024) {
    std::snprintf(buf, sizeof(buf), "%lldB", static_cast<long long>(bytes));
  } else if (bytes < (1 << 20)) {
    std::snprintf(buf, sizeof(buf), "%.2fK", b / 1024);
  } else if (bytes < (1ll << 30)) {
    std::snprintf(buf, sizeof(buf), "%.2fM", b / (1 << 20));
  } else {
    std::snprintf(buf, sizeof(buf), "%.2fG", b / (1ll << 30));
  }
  return buf;
}

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  long long pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return resident * sysconf(_SC_PAGESIZE);
}

struct Totals {
  uint64_t commands = 0, hits = 0, misses = 0, expired = 0, in = 0, out = 0, conns = 0,
           rejected = 0, rejected_calls = 0, failed_calls = 0;
};

// Redis prints CPU seconds as seconds.microseconds.
std::string CpuSeconds(const timeval& t) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%lld.%06lld", static_cast<long long>(t.tv_sec),
                static_cast<long long>(t.tv_usec));
  return buf;
}

Totals Sum(Engine& e) {
  Totals t;
  for (int w = 0; w <= e.proxy_worker(); w++) {
    WorkerStats& s = e.stats(w);
    t.commands += s.commands.load(std::memory_order_relaxed);
    t.hits += s.keyspace_hits.load(std::memory_order_relaxed);
    t.misses += s.keyspace_misses.load(std::memory_order_relaxed);
    t.expired += s.expired_keys.load(std::memory_order_relaxed);
    t.in += s.net_input_bytes.load(std::memory_order_relaxed);
    t.out += s.net_output_bytes.load(std::memory_order_relaxed);
    t.conns += s.connections.load(std::memory_order_relaxed);
    t.rejected += s.rejected_connections.load(std::memory_order_relaxed);
    t.rejected_calls += s.rejected_calls.load(std::memory_order_relaxed);
    for (size_t i = 0; i < AllCommands().size(); i++) {
      t.failed_calls += s.failed[i].load(std::memory_order_relaxed);
    }
  }
  return t;
}

void Line(std::string* out, std::string_view key, std::string_view value) {
  out->append(key).append(":").append(value).append("\r\n");
}
void Line(std::string* out, std::string_view key, int64_t value) {
  Line(out, key, std::to_string(value));
}

void InfoSection(CommandContext& ctx, std::string_view name, std::string* out) {
  Engine& e = ctx.engine;
  const Config c = e.config();
  if (name == "server") {
    out->append("# Server\r\n");
    Line(out, "redis_version", kRedisVersion);
    Line(out, "floe_version", kFloeVersion);
    Line(out, "redis_mode", e.cluster() != nullptr ? "cluster" : "standalone");
    utsname u{};
    uname(&u);
    Line(out, "os", std::string(u.sysname) + " " + u.release + " " + u.machine);
    Line(out, "arch_bits", 64);
    Line(out, "process_id", static_cast<int64_t>(getpid()));
    Line(out, "tcp_port", c.port);
    const int64_t uptime = (ctx.now_ms - e.start_ms()) / 1000;
    Line(out, "uptime_in_seconds", uptime);
    Line(out, "uptime_in_days", uptime / 86400);
    Line(out, "hz", c.hz);
    Line(out, "io_threads_active", e.workers());
    Line(out, "config_file", c.config_file);
  } else if (name == "clients") {
    out->append("# Clients\r\n");
    Line(out, "connected_clients", ConnectedClients(e));
    Line(out, "maxclients", c.maxclients);
    Line(out, "blocked_clients", 0);
  } else if (name == "memory") {
    out->append("# Memory\r\n");
    const int64_t clients = e.client_buffer_bytes();
    // A backup's replicas are memory like any other (docs/replication.md, S6).
    const int64_t used =
        static_cast<int64_t>(e.store().MemoryUsed()) + clients + e.ReplicaStoreBytes();
    Line(out, "used_memory", used);
    Line(out, "used_memory_human", Human(used));
    const int64_t rss = ResidentBytes();
    Line(out, "used_memory_rss", rss);
    Line(out, "used_memory_rss_human", Human(rss));
    Line(out, "mem_clients_normal", clients);
    Line(out, "maxmemory", c.maxmemory);
    Line(out, "maxmemory_human", Human(c.maxmemory));
    Line(out, "maxmemory_policy", c.maxmemory_policy);
    Line(out, "mem_allocator", FLOE_MALLOC_NAME);
    if (internal::Replication* r = e.replication()) {
      Line(out, "replica_keys", static_cast<int64_t>(r->store().store().Size()));
      Line(out, "replica_used_memory", e.ReplicaStoreBytes());
      Line(out, "replica_install_failures", static_cast<int64_t>(r->store().install_failures()));
      Line(out, "replica_capture_failures", static_cast<int64_t>(r->capture_failures()));
      // Promotions (W10): slots taken over here from an owner whose life ended, and those whose
      // copy was incomplete.
      Line(out, "replica_promotions", static_cast<int64_t>(r->promotions()));
      Line(out, "replica_promotion_failures", static_cast<int64_t>(r->promotion_failures()));
      // The stream (W2, W4): slots owned here with backups, and changes not yet acknowledged.
      Line(out, "replica_owned_slots", static_cast<int64_t>(r->OwnedSlots().size()));
      Line(out, "replica_queued_bytes", static_cast<int64_t>(r->sender().queued_bytes()));
      Line(out, "replica_messages_sent", static_cast<int64_t>(r->messages_sent()));
      Line(out, "replica_send_failures", static_cast<int64_t>(r->send_failures()));
      // Held replies (H5): waiting for their backups now, and those that waited past the bound.
      Line(out, "replica_held_replies", static_cast<int64_t>(r->held_replies()));
      Line(out, "replica_hold_timeouts", static_cast<int64_t>(r->hold_timeouts()));
    }
  } else if (name == "stats") {
    out->append("# Stats\r\n");
    const Totals t = Sum(e);
    Line(out, "total_connections_received", static_cast<int64_t>(t.conns));
    Line(out, "total_commands_processed", static_cast<int64_t>(t.commands));
    Line(out, "total_net_input_bytes", static_cast<int64_t>(t.in));
    Line(out, "total_net_output_bytes", static_cast<int64_t>(t.out));
    Line(out, "rejected_connections", static_cast<int64_t>(t.rejected));
    Line(out, "expired_keys", static_cast<int64_t>(t.expired));
    Line(out, "keyspace_hits", static_cast<int64_t>(t.hits));
    Line(out, "keyspace_misses", static_cast<int64_t>(t.misses));
    Line(out, "total_error_replies", static_cast<int64_t>(t.failed_calls + t.rejected_calls));
    Line(out, "errors_internal", static_cast<int64_t>(e.internal_errors()));
  } else if (name == "cpu") {
    out->append("# CPU\r\n");
    rusage self{}, children{};
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    Line(out, "used_cpu_sys", CpuSeconds(self.ru_stime));
    Line(out, "used_cpu_user", CpuSeconds(self.ru_utime));
    Line(out, "used_cpu_sys_children", CpuSeconds(children.ru_stime));
    Line(out, "used_cpu_user_children", CpuSeconds(children.ru_utime));
  } else if (name == "keyspace") {
    out->append("# Keyspace\r\n");
    const size_t keys = e.store().Size();
    if (keys > 0) {
      Line(out, "db0",
           "keys=" + std::to_string(keys) +
               ",expires=" + std::to_string(e.store().ExpiringCount()) + ",avg_ttl=0");
    }
  } else if (name == "errorstats") {
    out->append("# Errorstats\r\n");
    const auto codes = RedisErrorCodes();
    for (size_t i = 0; i <= codes.size(); i++) {
      uint64_t count = 0;
      for (int w = 0; w <= e.proxy_worker(); w++) {
        count += e.stats(w).error_replies[i].load(std::memory_order_relaxed);
      }
      if (count == 0) continue;
      Line(out, "errorstat_" + std::string(i < codes.size() ? codes[i] : "OTHER"),
           "count=" + std::to_string(count));
    }
  } else if (name == "latencystats") {
    // Redis 7.0's lines, at its default latency-tracking-info-percentiles (50 99 99.9).
    out->append("# Latencystats\r\n");
    for (const CommandLatency& latency : CommandLatencies(e)) {
      char buf[128];
      std::snprintf(buf, sizeof(buf), "p50=%.3f,p99=%.3f,p99.9=%.3f",
                    LatencyPercentileUsec(latency, 50), LatencyPercentileUsec(latency, 99),
                    LatencyPercentileUsec(latency, 99.9));
      Line(out, "latency_percentiles_usec_" + std::string(latency.name), buf);
    }
  } else if (name == "frames") {
    FramesInfoSection(e, out);
  } else if (name == "cluster") {
    ClusterInfoSection(e, out);
  } else if (name == "commandstats") {
    out->append("# Commandstats\r\n");
    for (const CommandSpec* spec : AllCommands()) {
      uint64_t calls = 0, ticks = 0, failed = 0;
      const auto i = static_cast<size_t>(spec->index);
      for (int w = 0; w <= e.proxy_worker(); w++) {
        calls += e.stats(w).calls[i].load(std::memory_order_relaxed);
        ticks += e.stats(w).ticks[i].load(std::memory_order_relaxed);
        failed += e.stats(w).failed[i].load(std::memory_order_relaxed);
      }
      if (calls == 0) continue;
      const auto usec = static_cast<uint64_t>(CyclesToMicros(ticks));
      char buf[256];
      std::snprintf(buf, sizeof(buf),
                    "calls=%llu,usec=%llu,usec_per_call=%.2f,rejected_calls=0,failed_calls=%llu",
                    static_cast<unsigned long long>(calls), static_cast<unsigned long long>(usec),
                    static_cast<double>(usec) / static_cast<double>(calls),
                    static_cast<unsigned long long>(failed));
      Line(out, "cmdstat_" + std::string(spec->name), buf);
    }
  }
}

// In Redis's order; Floe's own frames section last.
constexpr std::string_view kDefaultSections[] = {
    "server", "clients", "memory", "stats", "cpu", "errorstats", "cluster", "keyspace", "frames"};
constexpr std::string_view kAllSections[] = {
    "server",     "clients",      "memory",  "stats",    "cpu",   "commandstats",
    "errorstats", "latencystats", "cluster", "keyspace", "frames"};

}  // namespace

void CmdInfo(CommandContext& ctx) {
  std::vector<std::string_view> wanted;
  if (ctx.args.size() == 1) {
    wanted.assign(std::begin(kDefaultSections), std::end(kDefaultSections));
  }
  for (size_t i = 1; i < ctx.args.size(); i++) {
    const std::string section = ToLower(ctx.args[i]);
    if (section == "default") {
      wanted.insert(wanted.end(), std::begin(kDefaultSections), std::end(kDefaultSections));
    } else if (section == "all" || section == "everything") {
      wanted.insert(wanted.end(), std::begin(kAllSections), std::end(kAllSections));
    } else {
      for (std::string_view s : kAllSections) {
        if (s == section) wanted.push_back(s);
      }
    }
  }
  std::string text;
  std::set<std::string_view> done;
  for (std::string_view s : kAllSections) {  // canonical order, each once
    if (std::find(wanted.begin(), wanted.end(), s) == wanted.end() || !done.insert(s).second) {
      continue;
    }
    if (!text.empty()) text.append("\r\n");
    InfoSection(ctx, s, &text);
  }
  ctx.out.Verbatim("txt", text);
}

// A pattern without glob characters names one setting, and Redis echoes it as given
// ("MAXMEMORY"); a glob answers with the settings' own names. Each setting once.
void CmdConfigGet(CommandContext& ctx) {
  const Config config = ctx.engine.config();
  std::vector<std::pair<std::string, std::string>> result;
  std::set<const Setting*> seen;
  for (size_t i = 2; i < ctx.args.size(); i++) {
    const std::string_view pattern = ctx.args[i];
    if (pattern.find_first_of("*?[") == std::string_view::npos) {
      const Setting* s = FindSetting(pattern);
      if (s != nullptr && seen.insert(s).second) {
        result.emplace_back(pattern, SettingValue(*s, config));
      }
      continue;
    }
    for (const Setting& s : Settings()) {
      if (GlobMatch(pattern, s.name, /*nocase=*/true) && seen.insert(&s).second) {
        result.emplace_back(s.name, SettingValue(s, config));
      }
    }
  }
  ctx.out.MapHeader(result.size());
  for (const auto& [k, v] : result) {
    ctx.out.Bulk(k);
    ctx.out.Bulk(v);
  }
}

void CmdConfigSet(CommandContext& ctx) {
  // An odd number of arguments past the minimum arity is a syntax error in Redis 7.0.
  if ((ctx.args.size() - 2) % 2 != 0) return ctx.SyntaxError();
  std::vector<std::pair<std::string_view, std::string_view>> changes;
  // Redis's order of checks: once a name is unknown, the names after it are not checked for
  // duplicates, and the unknown name is the error.
  std::optional<std::string_view> unknown;
  for (size_t i = 2; i + 1 < ctx.args.size() && !unknown; i += 2) {
    const std::string lower = ToLower(ctx.args[i]);
    if (FindSetting(lower) == nullptr) {
      unknown = ctx.args[i];
      break;
    }
    for (const auto& [name, value] : changes) {
      if (EqualsIgnoreCase(name, ctx.args[i])) {
        return ctx.Error("ERR CONFIG SET failed (possibly related to argument '" + lower +
                         "') - duplicate parameter");
      }
    }
    changes.emplace_back(ctx.args[i], ctx.args[i + 1]);
  }
  if (unknown) {
    return ctx.Error("ERR Unknown option or number of arguments for CONFIG SET - '" +
                     std::string(*unknown) + "'");
  }
  std::string failed;
  Status s = ctx.engine.SetConfig(changes, &failed);
  if (s.ok()) return ctx.out.Ok();
  if (s.code() == StatusCode::kNotFound) {
    return ctx.Error("ERR Unknown option or number of arguments for CONFIG SET - '" + failed + "'");
  }
  ctx.Error("ERR CONFIG SET failed (possibly related to argument '" + ToLower(failed) + "') - " +
            std::string(s.message()));
}

void CmdConfigHelp(CommandContext& ctx) {
  static const char* kLines[] = {
      "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
      "GET <pattern>",
      "    Return parameters matching the glob-like <pattern> and their values.",
      "SET <directive> <value>",
      "    Set the configuration <directive> to <value>.",
      "RESETSTAT",
      "    Reset statistics reported by the INFO command.",
      "HELP",
      "    Print this help.",
  };
  ReplyHelp(ctx, kLines);
}

// Flagged exclusive: no worker counts while the counters are zeroed.
void CmdConfigResetStat(CommandContext& ctx) {
  ResetStats(ctx.engine);
  ctx.out.Ok();
}

void CmdDbSize(CommandContext& ctx) { ctx.out.Integer(static_cast<int64_t>(ctx.store().Size())); }

void CmdFlushDb(CommandContext& ctx) {
  if (ctx.args.size() > 2) return ctx.SyntaxError();
  if (ctx.args.size() == 2 && !EqualsIgnoreCase(ctx.args[1], "ASYNC") &&
      !EqualsIgnoreCase(ctx.args[1], "SYNC")) {
    return ctx.SyntaxError();
  }
  ctx.store().Clear();
  ctx.out.Ok();
}

void CmdTime(CommandContext& ctx) {
  const uint64_t us = WallMicros();
  ctx.out.ArrayHeader(2);
  ctx.out.Bulk(std::to_string(us / 1000000));
  ctx.out.Bulk(std::to_string(us % 1000000));
}

// ---- COMMAND ----
namespace {

void FlagSet(resp::ReplyWriter& out, uint32_t flags) {
  std::vector<std::string_view> names;
  if (flags & kWrite) names.push_back("write");
  if (flags & kReadOnly) names.push_back("readonly");
  if (flags & kDenyOom) names.push_back("denyoom");
  if (flags & kNoAuth) names.push_back("no_auth");
  if (flags & kLoading) names.push_back("loading");
  if (flags & kStale) names.push_back("stale");
  if (flags & kFast) names.push_back("fast");
  if (flags & kAllowBusy) names.push_back("allow_busy");
  if (flags & kNoMulti) names.push_back("no_multi");
  out.SetHeader(names.size());
  for (auto n : names) out.SimpleString(n);
}

std::vector<std::string> Categories(const CommandSpec& c) {
  std::vector<std::string> cats;
  if (c.flags & kWrite) cats.push_back("@write");
  if (c.flags & kReadOnly) cats.push_back("@read");
  if (c.group == "string") cats.push_back("@string");
  if (c.group == "generic") cats.push_back("@keyspace");
  if (c.group == "connection") cats.push_back("@connection");
  if (c.group == "transactions") cats.push_back("@transaction");
  if (c.group == "server") cats.push_back("@admin");
  cats.push_back((c.flags & kFast) ? "@fast" : "@slow");
  return cats;
}

void CommandInfoEntry(resp::ReplyWriter& out, const CommandSpec& c) {
  out.ArrayHeader(10);
  out.Bulk(c.name);
  out.Integer(c.arity);
  FlagSet(out, c.flags);
  out.Integer(c.first_key);
  out.Integer(c.last_key);
  out.Integer(c.step);
  const auto cats = Categories(c);
  out.SetHeader(cats.size());
  for (const auto& cat : cats) out.SimpleString(cat);
  out.SetHeader(0);    // tips
  out.ArrayHeader(0);  // key specifications
  out.ArrayHeader(c.subcommands.size());
  for (const CommandSpec& s : c.subcommands) CommandInfoEntry(out, s);
}

void CommandDocsEntry(resp::ReplyWriter& out, const CommandSpec& c) {
  out.Bulk(c.name);
  const bool subs = !c.subcommands.empty();
  out.MapHeader(subs ? 5 : 4);
  out.Bulk("summary");
  out.Bulk(c.summary);
  out.Bulk("since");
  out.Bulk(c.since);
  out.Bulk("group");
  out.Bulk(c.group);
  out.Bulk("complexity");
  out.Bulk(c.complexity);
  if (subs) {
    out.Bulk("subcommands");
    out.MapHeader(c.subcommands.size());
    for (const CommandSpec& s : c.subcommands) CommandDocsEntry(out, s);
  }
}

}  // namespace

void CmdCommand(CommandContext& ctx) {
  const auto& table = CommandTable();
  ctx.out.ArrayHeader(table.size());
  for (const CommandSpec* c : table) CommandInfoEntry(ctx.out, *c);
}

void CmdCommandCount(CommandContext& ctx) {
  ctx.out.Integer(static_cast<int64_t>(CommandTable().size()));
}

void CmdCommandInfo(CommandContext& ctx) {
  if (ctx.args.size() == 2) return CmdCommand(ctx);
  ctx.out.ArrayHeader(ctx.args.size() - 2);
  for (size_t i = 2; i < ctx.args.size(); i++) {
    // Redis answers an unknown name with a nil, a null bulk in RESP2.
    const CommandSpec* c = FindCommandByFullName(ctx.args[i]);
    if (c == nullptr) {
      ctx.out.Null();
    } else {
      CommandInfoEntry(ctx.out, *c);
    }
  }
}

void CmdCommandDocs(CommandContext& ctx) {
  std::vector<const CommandSpec*> specs;
  if (ctx.args.size() == 2) {
    specs = CommandTable();
  } else {
    for (size_t i = 2; i < ctx.args.size(); i++) {
      if (const CommandSpec* c = FindCommand(ctx.args[i])) specs.push_back(c);
    }
  }
  ctx.out.MapHeader(specs.size());
  for (const CommandSpec* c : specs) CommandDocsEntry(ctx.out, *c);
}

// Reads the keys from the command table's first/last/step, checking the command line first
// as Redis does: a known command, one that takes keys, a valid number of arguments.
void CmdCommandGetKeys(CommandContext& ctx) {
  const std::span<const std::string_view> line(ctx.args.begin() + 2, ctx.args.end());
  const CommandSpec* c = ResolveCommand(line);
  if (c == nullptr) return ctx.Error("ERR Invalid command specified");
  if (c->first_key <= 0 || c->step <= 0) return ctx.Error("ERR The command has no key arguments");
  const auto argc = static_cast<int64_t>(line.size());
  if ((c->arity > 0 && c->arity != argc) || argc < -int64_t{c->arity}) {
    return ctx.Error("ERR Invalid number of arguments specified for command");
  }
  const int64_t last =
      std::min<int64_t>(c->last_key < 0 ? argc + c->last_key : c->last_key, argc - 1);
  std::vector<std::string_view> keys;
  for (int64_t i = c->first_key; i <= last; i += c->step) {
    keys.push_back(line[static_cast<size_t>(i)]);
  }
  if (keys.empty()) return ctx.Error("ERR Invalid arguments specified for command");
  ctx.out.ArrayHeader(keys.size());
  for (std::string_view k : keys) ctx.out.Bulk(k);
}

void CmdCommandList(CommandContext& ctx) {
  std::string_view filter, value;
  if (ctx.args.size() != 2) {
    if (ctx.args.size() != 5 || !EqualsIgnoreCase(ctx.args[2], "FILTERBY")) {
      return ctx.SyntaxError();
    }
    filter = ctx.args[3];
    value = ctx.args[4];
    if (!EqualsIgnoreCase(filter, "MODULE") && !EqualsIgnoreCase(filter, "ACLCAT") &&
        !EqualsIgnoreCase(filter, "PATTERN")) {
      return ctx.SyntaxError();
    }
  }
  std::vector<std::string_view> names;
  for (const CommandSpec* c : AllCommands()) {
    if (EqualsIgnoreCase(filter, "MODULE")) continue;  // Floe has no modules
    if (EqualsIgnoreCase(filter, "PATTERN") && !GlobMatch(value, c->name, /*nocase=*/true)) {
      continue;
    }
    if (EqualsIgnoreCase(filter, "ACLCAT")) {
      bool match = false;
      for (const auto& cat : Categories(*c))
        match = match || EqualsIgnoreCase(cat.substr(1), value);
      if (!match) continue;
    }
    names.push_back(c->name);
  }
  ctx.out.ArrayHeader(names.size());
  for (auto n : names) ctx.out.Bulk(n);
}

void CmdCommandHelp(CommandContext& ctx) {
  static const char* kLines[] = {
      "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
      "(no subcommand)",
      "    Return details about all commands.",
      "COUNT",
      "    Return the total number of commands in this server.",
      "LIST",
      "    Return a list of all commands in this server.",
      "INFO [<command-name> ...]",
      "    Return details about multiple commands.",
      "    If no command names are given, documentation details for all",
      "    commands are returned.",
      "DOCS [<command-name> ...]",
      "    Return documentation details about multiple commands.",
      "    If no command names are given, documentation details for all",
      "    commands are returned.",
      "GETKEYS <full-command>",
      "    Return the keys from a full command.",
      "HELP",
      "    Print this help.",
  };
  ReplyHelp(ctx, kLines);
}

}  // namespace floe::server::internal
