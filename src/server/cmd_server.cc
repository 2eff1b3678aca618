// Server commands: INFO, CONFIG, DBSIZE, FLUSHDB/FLUSHALL, TIME, COMMAND.

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>

#include "server/internal/command.h"

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
           rejected = 0;
};

Totals Sum(Engine& e) {
  Totals t;
  for (int w = 0; w < e.workers(); w++) {
    WorkerStats& s = e.stats(w);
    t.commands += s.commands.load(std::memory_order_relaxed);
    t.hits += s.keyspace_hits.load(std::memory_order_relaxed);
    t.misses += s.keyspace_misses.load(std::memory_order_relaxed);
    t.expired += s.expired_keys.load(std::memory_order_relaxed);
    t.in += s.net_input_bytes.load(std::memory_order_relaxed);
    t.out += s.net_output_bytes.load(std::memory_order_relaxed);
    t.conns += s.connections.load(std::memory_order_relaxed);
    t.rejected += s.rejected_connections.load(std::memory_order_relaxed);
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
    Line(out, "redis_version", "7.0.0");
    Line(out, "floe_version", "0.1.0");
    Line(out, "redis_mode", "standalone");
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
    Line(out, "connected_clients", static_cast<int64_t>(e.ClientCount()));
    Line(out, "maxclients", c.maxclients);
    Line(out, "blocked_clients", 0);
  } else if (name == "memory") {
    out->append("# Memory\r\n");
    const int64_t used = static_cast<int64_t>(e.store().MemoryUsed());
    Line(out, "used_memory", used);
    Line(out, "used_memory_human", Human(used));
    const int64_t rss = ResidentBytes();
    Line(out, "used_memory_rss", rss);
    Line(out, "used_memory_rss_human", Human(rss));
    Line(out, "maxmemory", c.maxmemory);
    Line(out, "maxmemory_human", Human(c.maxmemory));
    Line(out, "maxmemory_policy", c.maxmemory_policy);
    Line(out, "mem_allocator", FLOE_MALLOC_NAME);
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
  } else if (name == "keyspace") {
    out->append("# Keyspace\r\n");
    const size_t keys = e.store().Size();
    if (keys > 0) {
      Line(out, "db0",
           "keys=" + std::to_string(keys) +
               ",expires=" + std::to_string(e.store().ExpiringCount()) + ",avg_ttl=0");
    }
  } else if (name == "commandstats") {
    out->append("# Commandstats\r\n");
    for (const CommandSpec* spec : AllCommands()) {
      uint64_t calls = 0, ticks = 0, failed = 0;
      const auto i = static_cast<size_t>(spec->index);
      for (int w = 0; w < e.workers(); w++) {
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

constexpr std::string_view kDefaultSections[] = {"server", "clients", "memory", "stats",
                                                 "keyspace"};
constexpr std::string_view kAllSections[] = {"server", "clients",      "memory",
                                             "stats",  "commandstats", "keyspace"};

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

void CmdConfigGet(CommandContext& ctx) {
  std::vector<std::pair<std::string, std::string>> result;
  std::set<std::string> seen;
  for (size_t i = 2; i < ctx.args.size(); i++) {
    for (auto& kv : ctx.engine.GetConfig(ctx.args[i])) {
      if (seen.insert(kv.first).second) result.push_back(std::move(kv));
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
    bool known = false;
    for (const auto& kv : ctx.engine.GetConfig(lower)) known = known || kv.first == lower;
    if (!known) {
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
      "HELP",
      "    Print this help.",
  };
  ReplyHelp(ctx, kLines);
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
  if (flags & kNoMulti) names.push_back("no_multi");
  if (flags & kLoading) names.push_back("loading");
  if (flags & kStale) names.push_back("stale");
  if (flags & kFast) names.push_back("fast");
  if (flags & kAllowBusy) names.push_back("allow_busy");
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
    const CommandSpec* c = FindCommand(ctx.args[i]);
    if (c == nullptr) {
      ctx.out.NullArray();
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
      "HELP",
      "    Print this help.",
  };
  ReplyHelp(ctx, kLines);
}

std::string MarkdownForTable() {
  std::string md =
      "# Commands\n\n"
      "Generated from the command table (`src/server/command_table_*.cc`) by `floe commands`;\n"
      "CI fails when this file is stale. Semantics, replies and error strings are "
      "Redis 7.0's\nunless a note says otherwise.\n\n"
      "| command | arity | flags | group | since | summary |\n|---|---|---|---|---|---|\n";
  auto flags = [](uint32_t f) {
    std::string s;
    auto add = [&](uint32_t bit, const char* name) {
      if (f & bit) s += std::string(s.empty() ? "" : ", ") + name;
    };
    add(kWrite, "write");
    add(kReadOnly, "readonly");
    add(kDenyOom, "denyoom");
    add(kFast, "fast");
    add(kNoAuth, "no_auth");
    add(kNoMulti, "no_multi");
    add(kExclusive, "exclusive");
    return s;
  };
  for (const CommandSpec* c : AllCommands()) {
    std::string name(c->name);
    for (char& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    for (char& ch : name) ch = ch == '|' ? ' ' : ch;
    std::string usage = "`" + name + (c->syntax.empty() ? "" : " " + std::string(c->syntax)) + "`";
    for (size_t p = 0; (p = usage.find('|', p)) != std::string::npos; p += 2)
      usage.replace(p, 1, "\\|");
    md += "| " + usage + " | " + std::to_string(c->arity) + " | " + flags(c->flags) + " | " +
          std::string(c->group) + " | " + std::string(c->since) + " | " + std::string(c->summary) +
          " |\n";
  }
  md += R"md(
## Notes

- `exclusive`: the command runs while every other I/O thread is paused between commands,
  which makes it atomic across keys (Redis gets this from being single-threaded).
- `SELECT`: Floe has one database; `SELECT 0` succeeds, any other index is an error.
- `OBJECT ENCODING` derives the encoding from the content: `int` for a 64-bit decimal,
  `embstr` up to 44 bytes, `raw` beyond. Redis also reports `raw` for short strings that
  were modified in place (APPEND, SETRANGE); Floe strings are immutable, so it does not.
- `HELLO` reports `server` as `floe` and `version` as `7.0.0`, the Redis version whose
  semantics Floe follows.
- `CONFIG GET`/`SET` know the settings listed in `floe serve --help`; `bind`, `port`,
  `io-threads`, `save`, `appendonly` and `databases` are read-only.
- `FLUSHDB`/`FLUSHALL` ignore `ASYNC`: both free the keys at once.
- `GET` on a key of a type other than string replies `WRONGTYPE`.

## Sketches

Sketch values (`hll`, `cms`, `bloom`) change in place: an add updates the sketch under a lock
of its own instead of copying it, so `PFADD` or `BF.ADD` costs the same on a 12 KB sketch as on
a small one. A transaction that `WATCH`es a sketch key is aborted by any add that changed it,
and `EXPIRE`, `RENAME` and `PFMERGE` carry every add that completed before them.

- `HLL.*` and `PF*` keys hold one value type, `hll` (what `TYPE` replies): the bytes of
  PostgreSQL's `hll` extension (storage specification v1). `HLL.EXPORT` gives them in
  PostgreSQL's text form, so `SELECT '<that>'::hll` reads them; `HLL.IMPORT` takes that form
  back. `GET` on a sketch key replies `WRONGTYPE` (Redis would return its own HLL bytes);
  `OBJECT ENCODING` names the representation: `empty`, `explicit`, `sparse` or `full`.
- `PFADD` creates sketches with Redis's precision (2^14 registers of 6 bits) in the
  PostgreSQL format; replies, errors and `PFMERGE` (the destination's own contents
  included) follow Redis, and counts agree with Redis's within the sketch error (Redis
  uses a different hash and estimator, so the exact integers can differ). `PFADD` and
  `PFCOUNT` refuse string values with Redis's `WRONGTYPE Key is not a valid HyperLogLog
  string value.` and undecodable sketches with `INVALIDOBJ Corrupted HLL object detected`.
- `HLL.COUNT` and `HLL.UNION` accept sketches of different sizes by folding them exactly to
  the smallest log2m and regwidth among the inputs; PostgreSQL refuses such unions.
- Estimates equal PostgreSQL's except where PostgreSQL's large-range bound overflows
  (regwidth 6 and above, where it returns NaN); Floe computes that bound in floating
  point. A saturated sketch (every register at its maximum, e.g. regwidth 1) returns NaN
  in both.
- `HLL.ADD key INT` with nothing after `INT` adds the text `INT`; the kind word is read as
  a kind only when elements follow it. The reply counts elements that changed the sketch.
- `CMS.*` follow RedisBloom (replies and error texts). Range counts and quantiles need a
  sketch created over integers with `CMS.INITRANGE key width depth bits`: it keeps bits + 1
  Count-Min levels of width x depth (level l counts value >> l), takes `CMS.INCRBY` items that
  are integers in [0, 2^bits), and answers `CMS.RANGE key lo hi` (the count of values in
  [lo, hi], never below the truth) and `CMS.QUANTILE key q...` (the smallest value whose
  range count from 0 reaches q of the total, found by binary search). `CMS.QUERY` on such a
  sketch gives the count of one value; `CMS.MERGE` takes plain sketches only.
- `BF.*` follow RedisBloom 8 (replies, RESP3 booleans, error texts, argument order):
  filters are scalable unless `NONSCALING` (or `EXPANSION 0`); each new sub-filter has
  `EXPANSION` times the capacity and half the error rate of the last, so the whole chain
  stays under the requested rate. Defaults for filters created by `BF.ADD`/`BF.MADD`/
  `BF.INSERT`: error rate 0.01, capacity 100, expansion 2. Error rates above 0.25 are capped
  at 0.25. A filter may take at most 512 MiB (`ERR Insufficient memory to create filter`).
  `BF.EXISTS` on a key of another type replies 0, as RedisBloom does. Floe hashes items with
  xxh3, so filter bits differ from RedisBloom's (no dump/load compatibility); `TYPE` replies
  `bloom`. `BF.INSERT` and `BF.RESERVE` refuse unknown arguments (`Unknown argument
  received`, `ERR syntax error`).
)md";
  return md;
}

}  // namespace floe::server::internal

namespace floe::server {
std::string CommandsMarkdown() { return internal::MarkdownForTable(); }
}  // namespace floe::server
