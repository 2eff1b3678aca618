// The settings table and everything that reads it: defaults, parsing and range checks, the
// config file, CONFIG SET/GET on the Engine, and the start-up checks. `floe serve`'s flags and
// --help are built from the same rows (app/main.cc).

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <climits>
#include <fstream>

#include "server/internal/command.h"

namespace floe::server {

namespace {

using Kind = Setting::Kind;

constexpr std::string_view kLogLevels[] = {"debug", "verbose", "notice", "warning", "nothing"};
constexpr std::string_view kPolicies[] = {"noeviction"};
constexpr std::string_view kNo[] = {"no"};
constexpr std::string_view kOne[] = {"1"};
constexpr std::string_view kEmpty[] = {""};

// One row per setting, sorted by name. Ranges are Redis 7.0's where Redis has the setting
// (its error texts quote them), narrower where Floe cannot do more.
// clang-format off
constexpr Setting kSettings[] = {
    {.name = "appendonly", .kind = Kind::kChoice, .default_value = "no", .choices = kNo,
     .cli = false, .help = "Floe keeps no append-only file"},
    {.name = "bind", .kind = Kind::kText, .field = &Config::bind, .default_value = "127.0.0.1",
     .help = "Addresses to listen on, space separated. A non-loopback address needs "
             "--requirepass (protected mode)"},
    {.name = "busy-poll-us", .kind = Kind::kInteger, .field = &Config::busy_poll_us,
     .default_value = "-1", .min = -1, .max = 100000,
     .help = "Microseconds an idle I/O thread keeps polling before it sleeps: a request arriving "
             "then does not have to wake it (lower latency, and less work for clients on the "
             "same host), at the cost of that much spinning; 0 = never; -1 = 200 when the I/O "
             "threads leave a core free, else never"},
    {.name = "client-output-buffer-limit", .kind = Kind::kOutputLimit,
     .default_value = "normal 0 0 0", .runtime = true,
     .help = "Close a client whose unsent replies pass <hard> bytes, or stay above <soft> for "
             "<seconds>: \"normal <hard> <soft> <seconds>\"; 0 = no limit (with no hard limit, "
             "the replies waiting behind a pending write still close the client past 1 GiB: "
             "docs/architecture.md, W3)"},
    {.name = "cluster", .kind = Kind::kText, .field = &Config::cluster,
     .help = "Every member of the cluster, this node included, as host:port of their cluster "
             "ports, comma separated (\"127.0.0.1:7101,127.0.0.2:7101\"); empty = a standalone "
             "node (docs/cluster.md)"},
    {.name = "cluster-name", .kind = Kind::kText, .field = &Config::cluster_name,
     .default_value = "floe",
     .help = "Nodes form a cluster only with members of the same name: 1-64 of A-Z a-z 0-9 . _ -"},
    {.name = "cluster-node-timeout", .kind = Kind::kInteger, .field = &Config::cluster_node_timeout,
     .default_value = "5000", .min = 100, .max = 3600000,
     .help = "Milliseconds a command waits for the node that is home to its keys before it "
             "answers CLUSTERDOWN"},
    {.name = "cluster-port", .kind = Kind::kInteger, .field = &Config::cluster_port,
     .default_value = "0", .min = 0, .max = 65535,
     .help = "This node's cluster port (UDP and TCP, on the first bind address): which member "
             "of --cluster it is"},
    {.name = "cluster-secret", .kind = Kind::kText, .field = &Config::cluster_secret,
     .env = "FLOE_CLUSTER_SECRET",
     .help = "Key that authenticates every message between members (also from "
             "$FLOE_CLUSTER_SECRET); required when a member is not on loopback"},
    {.name = "databases", .kind = Kind::kChoice, .default_value = "1", .choices = kOne,
     .cli = false, .help = "Floe has one database"},
    {.name = "dir", .kind = Kind::kText, .field = &Config::dir, .default_value = "floe-data",
     .help = "Directory for a cluster member's agreed metadata (its Raft log and snapshots, in "
             "<dir>/<host>-<cluster port>, created if missing); keep it across restarts "
             "(docs/cluster.md)"},
    {.name = "export-dir", .kind = Kind::kText, .field = &Config::export_dir,
     .help = "The directory FRAME.EXPORT may write under (symlinks and .. resolved first); "
             "empty (the default): FRAME.EXPORT is off"},
    {.name = "http-bind", .kind = Kind::kText, .field = &Config::http_bind,
     .default_value = "127.0.0.1",
     .help = "Addresses the HTTP API listens on (docs/api.md), space separated. A non-loopback "
             "address needs --requirepass, which every request must then give (Basic or "
             "Bearer)"},
    {.name = "http-idle-timeout", .kind = Kind::kInteger, .field = &Config::http_idle_timeout,
     .default_value = "60000", .min = 1, .max = INT32_MAX,
     .help = "Milliseconds after which an idle keep-alive HTTP connection is closed "
             "(docs/api.md, Limits)"},
    {.name = "http-port", .kind = Kind::kInteger, .field = &Config::http_port,
     .default_value = "-1", .min = -1, .max = 65535,
     .help = "TCP port of the HTTP API and /metrics (docs/api.md); -1 = port + 1000 (skipped "
             "with a warning if taken), 0 = off"},
    {.name = "http-request-timeout", .kind = Kind::kInteger,
     .field = &Config::http_request_timeout, .default_value = "10000", .min = 1, .max = INT32_MAX,
     .help = "Milliseconds within which a started HTTP request must have arrived whole, else "
             "408, and then be answered, else 504 (docs/api.md, Limits)"},
    // Redis takes 0..INT_MAX and clamps it into 1..500.
    {.name = "hz", .kind = Kind::kInteger, .field = &Config::hz, .default_value = "10",
     .min = 0, .max = INT_MAX, .clamp_min = 1, .clamp_max = 500, .runtime = true,
     .help = "Active expiry cycles per second (clamped to 1-500)"},
    {.name = "import-dir", .kind = Kind::kText, .field = &Config::import_dir,
     .help = "The directory FRAME.IMPORT may read, with everything under it (symlinks and .. "
             "resolved first), and where HTTP uploads land; default: <dir>/import, a directory "
             "of its own"},
    {.name = "io-threads", .kind = Kind::kInteger, .field = &Config::threads, .default_value = "0",
     .min = 0, .max = 256, .flag = "threads",
     .help = "I/O threads; 0 = one per core but one (at least 1), leaving a core to the kernel's "
             "network stack and to clients on the same host"},
    {.name = "join", .kind = Kind::kText, .field = &Config::join,
     .help = "Join a running cluster through any member's cluster address, host:port (instead "
             "of --cluster; with --cluster-port and --bind this node's IPv4 address): it owns no "
             "slot yet and serves every key by forwarding it (docs/cluster.md, \"Adding a node\")"},
    {.name = "loglevel", .kind = Kind::kChoice, .field = &Config::loglevel,
     .default_value = "notice", .choices = kLogLevels, .runtime = true,
     .help = "debug, verbose, notice, warning or nothing"},
    {.name = "maxclients", .kind = Kind::kInteger, .field = &Config::maxclients,
     .default_value = "10000", .min = 1, .max = UINT32_MAX, .runtime = true,
     .help = "Most simultaneous clients"},
    {.name = "maxmemory", .kind = Kind::kMemory, .field = &Config::maxmemory,
     .default_value = "0", .min = 0, .max = INT64_MAX, .runtime = true,
     .help = "Refuse writes with an OOM error above this much data (e.g. 4gb); 0 = no limit"},
    {.name = "maxmemory-policy", .kind = Kind::kChoice, .field = &Config::maxmemory_policy,
     .default_value = "noeviction", .choices = kPolicies, .runtime = true,
     .help = "What to do at maxmemory: noeviction (refuse writes)"},
    {.name = "min-replicas-to-write", .kind = Kind::kInteger,
     .field = &Config::min_replicas_to_write, .default_value = "0", .min = 0, .max = 8,
     .runtime = true,
     .help = "In a cluster, refuse a write (NOREPLICAS) to a slot that has fewer in-sync backups "
             "than this, rather than keep it in fewer copies (docs/replication.md); 0 = never"},
    {.name = "port", .kind = Kind::kInteger, .field = &Config::port, .default_value = "6379",
     .min = 0, .max = 65535, .help = "TCP port (0 picks a free one)"},
    // The store holds no payload above kMaxPayloadBytes, so no client may announce more.
    {.name = "proto-max-bulk-len", .kind = Kind::kMemory, .field = &Config::proto_max_bulk_len,
     .default_value = "536870912", .min = 1024,
     .max = static_cast<int64_t>(store::kMaxPayloadBytes), .runtime = true,
     .help = "Longest string a client may send"},
    {.name = "replicas", .kind = Kind::kInteger, .field = &Config::replicas,
     .default_value = "0", .min = 0, .max = 8,
     .help = "Backups of each slot a new cluster keeps on other members: a write is acknowledged "
             "once they have it, and a backup replaces an owner that restarts "
             "(docs/replication.md). Set when the cluster is founded (its first leader's value "
             "holds); a joining node takes the cluster's"},
    {.name = "requirepass", .kind = Kind::kText, .field = &Config::requirepass, .runtime = true,
     .env = "FLOE_REQUIREPASS",
     .help = "Password clients must give with AUTH or HELLO (also from $FLOE_REQUIREPASS)"},
    {.name = "save", .kind = Kind::kChoice, .default_value = "", .choices = kEmpty, .cli = false,
     .help = "Floe takes no snapshots"},
    {.name = "timeout", .kind = Kind::kInteger, .field = &Config::timeout, .default_value = "0",
     .min = 0, .max = INT_MAX, .runtime = true,
     .help = "Close clients idle this many seconds; 0 = never"},
};
// clang-format on

// The table's own invariants, checked when this file compiles: sorted lowercase names, a field
// of the right type for each kind, defaults among the choices, int fields that hold the range.
consteval bool WellFormed() {
  for (size_t i = 0; i < std::size(kSettings); i++) {
    const Setting& s = kSettings[i];
    if (i > 0 && !(kSettings[i - 1].name < s.name)) return false;
    for (char c : s.name) {
      if (c >= 'A' && c <= 'Z') return false;
    }
    const bool text_field = std::holds_alternative<std::string Config::*>(s.field);
    const bool int_field = std::holds_alternative<int Config::*>(s.field);
    const bool none = std::holds_alternative<std::monostate>(s.field);
    switch (s.kind) {
      case Kind::kInteger:
      case Kind::kMemory:
        if (text_field || none || s.min > s.max) return false;
        if (int_field && (s.min < INT_MIN || std::min(s.max, s.clamp_max) > INT_MAX)) return false;
        break;
      case Kind::kChoice: {
        if (!(text_field || none) || s.choices.empty()) return false;
        if (std::find(s.choices.begin(), s.choices.end(), s.default_value) == s.choices.end()) {
          return false;
        }
        break;
      }
      case Kind::kText:
        if (!text_field) return false;
        break;
      case Kind::kOutputLimit:
        if (!none) return false;
        break;
    }
  }
  return true;
}
static_assert(WellFormed());

Status Refused(std::string text) { return Status::InvalidArgument(std::move(text)); }

Status OutOfRange(int64_t min, int64_t max) {
  return Refused("argument must be between " + std::to_string(min) + " and " + std::to_string(max) +
                 " inclusive");
}

std::string OneOf(const Setting& s) {
  std::string text = "argument(s) must be one of the following: ";
  for (size_t i = 0; i < s.choices.size(); i++) {
    text += (i > 0 ? ", " : "") + std::string(s.choices[i]);
  }
  return text;
}

void StoreInteger(const Setting& s, int64_t v, Config* c) {
  if (auto* f = std::get_if<int Config::*>(&s.field)) {
    c->** f = static_cast<int>(v);  // the table guarantees the range fits (WellFormed)
  } else if (auto* g = std::get_if<int64_t Config::*>(&s.field)) {
    c->** g = v;
  }
}

int64_t LoadInteger(const Setting& s, const Config& c) {
  if (auto* f = std::get_if<int Config::*>(&s.field)) return c.**f;
  if (auto* g = std::get_if<int64_t Config::*>(&s.field)) return c.**g;
  return 0;
}

// Redis's client-output-buffer-limit: groups of four words; only the normal class applies
// to Floe, the others are checked and ignored. Bytes are memory values (at most INT64_MAX);
// seconds are 0..INT32_MAX, so the listener's seconds * 1000 cannot overflow.
Status SetOutputLimit(std::string_view value, Config* c) {
  const std::vector<std::string> parts = BindAddresses(value);  // the same space splitting
  if (parts.size() % 4 != 0) {
    return Refused("Wrong number of arguments in buffer limit configuration.");
  }
  Config next = *c;
  for (size_t i = 0; i < parts.size(); i += 4) {
    const std::string cls = internal::ToLower(parts[i]);
    if (cls != "normal" && cls != "slave" && cls != "replica" && cls != "pubsub") {
      return Refused("Invalid client class specified in buffer limit configuration.");
    }
    Result<int64_t> hard = ParseMemory(parts[i + 1]);
    Result<int64_t> soft = ParseMemory(parts[i + 2]);
    int64_t seconds = 0;
    if (!hard.ok() || !soft.ok() || !internal::ParseInt64(parts[i + 3], &seconds) || seconds < 0 ||
        seconds > INT32_MAX) {
      return Refused("Error in hard, soft or soft_seconds setting in buffer limit configuration.");
    }
    if (cls == "normal") {
      next.output_hard_limit = *hard;
      next.output_soft_limit = *soft;
      next.output_soft_seconds = seconds;
    }
  }
  *c = std::move(next);
  return Status::OK();
}

std::string OutputLimit(const Config& c) {
  return "normal " + std::to_string(c.output_hard_limit) + " " +
         std::to_string(c.output_soft_limit) + " " + std::to_string(c.output_soft_seconds) +
         " slave 0 0 0 pubsub 0 0 0";
}

}  // namespace

Config::Config() {
  for (const Setting& s : Settings()) {
    FLOE_CHECK(ApplySetting(s, s.default_value, this).ok());
  }
}

std::span<const Setting> Settings() { return kSettings; }

const Setting* FindSetting(std::string_view name) {
  for (const Setting& s : kSettings) {
    if (internal::EqualsIgnoreCase(s.name, name)) return &s;
  }
  return nullptr;
}

Status ApplySetting(const Setting& s, std::string_view value, Config* config) {
  switch (s.kind) {
    case Kind::kInteger: {
      int64_t v = 0;
      if (!internal::ParseInt64(value, &v)) {
        return Refused("argument couldn't be parsed into an integer");
      }
      if (v < s.min || v > s.max) return OutOfRange(s.min, s.max);
      StoreInteger(s, std::clamp(v, s.clamp_min, s.clamp_max), config);
      return Status::OK();
    }
    case Kind::kMemory: {
      Result<int64_t> v = ParseMemory(value);
      if (!v.ok()) return Refused("argument must be a memory value");
      if (*v < s.min || *v > s.max) return OutOfRange(s.min, s.max);
      StoreInteger(s, *v, config);
      return Status::OK();
    }
    case Kind::kChoice:
      for (std::string_view choice : s.choices) {
        if (internal::EqualsIgnoreCase(choice, value)) {
          if (auto* f = std::get_if<std::string Config::*>(&s.field)) config->** f = choice;
          return Status::OK();
        }
      }
      return Refused(OneOf(s));
    case Kind::kText:
      config->*std::get<std::string Config::*>(s.field) = std::string(value);
      return Status::OK();
    case Kind::kOutputLimit:
      return SetOutputLimit(value, config);
  }
  return Status::OK();
}

std::string SettingValue(const Setting& s, const Config& config) {
  switch (s.kind) {
    case Kind::kInteger:
    case Kind::kMemory:
      return std::to_string(LoadInteger(s, config));
    case Kind::kChoice:
    case Kind::kText:
      if (auto* f = std::get_if<std::string Config::*>(&s.field)) return config.**f;
      return std::string(s.choices[0]);
    case Kind::kOutputLimit:
      return OutputLimit(config);
  }
  return "";
}

Result<int64_t> ParseMemory(std::string_view text) {
  std::string t = internal::ToLower(text);
  int64_t mul = 1;
  auto strip = [&](std::string_view suffix, int64_t m) {
    if (t.size() > suffix.size() && t.ends_with(suffix)) {
      t.resize(t.size() - suffix.size());
      mul = m;
      return true;
    }
    return false;
  };
  strip("gb", 1024ll * 1024 * 1024) || strip("mb", 1024ll * 1024) || strip("kb", 1024) ||
      strip("g", 1000ll * 1000 * 1000) || strip("m", 1000ll * 1000) || strip("k", 1000) ||
      strip("b", 1);
  // Leading zeros are allowed ("01"), as Redis's strtoull-based memtoull allows them.
  const size_t first = std::min(t.find_first_not_of('0'), t.empty() ? 0 : t.size() - 1);
  int64_t v = 0;
  if (!internal::ParseInt64(std::string_view(t).substr(first), &v) || v < 0 ||
      v > INT64_MAX / mul) {
    return Status::InvalidArgument("argument must be a memory value");
  }
  return v * mul;
}

std::vector<std::string> BindAddresses(std::string_view bind) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < bind.size()) {
    while (i < bind.size() && bind[i] == ' ') i++;
    size_t j = i;
    while (j < bind.size() && bind[j] != ' ') j++;
    if (j > i) out.emplace_back(bind.substr(i, j - i));
    i = j;
  }
  return out;
}

bool IsLoopbackAddress(std::string_view address) {
  if (address == "localhost") return true;
  // Parsed, not matched as text: "127.foo" is no address at all, and "::0:1" is ::1.
  const std::string text(address);
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return inet_pton(AF_INET6, text.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

Result<LogLevel> RedisLogLevel(std::string_view name) {
  const std::string l = internal::ToLower(name);
  if (l == "debug") return LogLevel::kDebug;
  if (l == "verbose" || l == "notice") return LogLevel::kInfo;
  if (l == "warning") return LogLevel::kWarn;
  if (l == "nothing") return LogLevel::kOff;
  return Status::InvalidArgument("unknown log level '" + l + "'");
}

std::string ImportDir(const Config& config) {
  if (!config.import_dir.empty()) return config.import_dir;
  return (config.dir.empty() ? std::string("floe-data") : config.dir) + "/import";
}

namespace {

// Protected mode: without a password, every listener must be on a loopback address.
Status CheckProtectedMode(const Config& c) {
  if (!c.requirepass.empty()) return Status::OK();
  std::vector<std::string> addresses = BindAddresses(c.bind);
  if (c.http_port != 0) {
    for (std::string& a : BindAddresses(c.http_bind)) addresses.push_back(std::move(a));
  }
  for (const std::string& a : addresses) {
    if (!IsLoopbackAddress(a)) {
      return Status::FailedPrecondition(
          "refusing to listen on " + a +
          " without a password (protected mode): set --requirepass so clients must AUTH, or "
          "bind to a loopback address such as 127.0.0.1");
    }
  }
  return Status::OK();
}

}  // namespace

Status ValidateConfig(const Config& c) {
  for (const Setting& s : kSettings) {
    if (s.kind == Kind::kInteger || s.kind == Kind::kMemory) {
      const int64_t lo = std::max(s.min, s.clamp_min), hi = std::min(s.max, s.clamp_max);
      const int64_t v = LoadInteger(s, c);
      if (v < lo || v > hi) {
        return Status::InvalidArgument(std::string(s.name) + " must be between " +
                                       std::to_string(lo) + " and " + std::to_string(hi));
      }
    } else if (s.kind == Kind::kChoice) {
      const std::string v = SettingValue(s, c);
      if (std::find(s.choices.begin(), s.choices.end(), v) == s.choices.end()) {
        return Status::InvalidArgument(std::string(s.name) + ": " + OneOf(s));
      }
    }
  }
  if (c.output_hard_limit < 0 || c.output_soft_limit < 0 || c.output_soft_seconds < 0 ||
      c.output_soft_seconds > INT32_MAX) {
    return Status::InvalidArgument("client-output-buffer-limit out of range");
  }
  if (BindAddresses(c.bind).empty()) {
    return Status::InvalidArgument("bind needs at least one address");
  }
  if (c.http_port != 0 && BindAddresses(c.http_bind).empty()) {
    return Status::InvalidArgument("http-bind needs at least one address (or --http-port 0)");
  }
  // The cluster settings go together: one without the other is a mistake, not a standalone node.
  if (!c.cluster.empty() && !c.join.empty()) {
    return Status::InvalidArgument(
        "give cluster (the members of a new cluster) or join (a member of a running one), not "
        "both");
  }
  if (c.cluster.empty() && c.join.empty() && c.replicas != 0) {
    return Status::InvalidArgument(
        "replicas is set but cluster is not: backups live on other members of a cluster "
        "(docs/cluster.md)");
  }
  if (c.cluster.empty() && c.join.empty() && c.cluster_port != 0) {
    return Status::InvalidArgument(
        "cluster-port is set but cluster is not: give --cluster, the list of every member "
        "(docs/cluster.md), or --join, or drop --cluster-port for a standalone node");
  }
  return CheckProtectedMode(c);
}

Status LoadConfigFile(const std::string& path, Config* config) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read config file " + path);
  std::string line;
  int number = 0;
  Config next = *config;
  while (std::getline(in, line)) {
    number++;
    auto where = [&](std::string_view what) {
      return Status::InvalidArgument(path + ":" + std::to_string(number) + ": " +
                                     std::string(what));
    };
    std::vector<std::string> args;
    if (!resp::SplitInlineArgs(line, &args)) return where("unbalanced quotes");
    if (args.empty() || args[0][0] == '#') continue;
    std::string value;
    for (size_t i = 1; i < args.size(); i++) value += (i > 1 ? " " : "") + args[i];
    const Setting* s = FindSetting(args[0]);
    if (s == nullptr) return where("unknown setting '" + args[0] + "'");
    Status applied = ApplySetting(*s, value, &next);
    if (!applied.ok()) return where(std::string(s->name) + ": " + std::string(applied.message()));
  }
  next.config_file = path;
  *config = std::move(next);
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// The Engine's side: CONFIG SET and the settings read on every command.

Status Engine::SetConfig(const std::vector<std::pair<std::string_view, std::string_view>>& changes,
                         std::string* failed) {
  MutexLock lock(&config_mu_);
  Config next = config_;
  bool log_level_set = false;
  for (const auto& [name, value] : changes) {
    *failed = std::string(name);
    const Setting* s = FindSetting(name);
    if (s == nullptr) return Status::NotFound(name);
    if (!s->runtime) return Status::InvalidArgument("can't set immutable config");
    FLOE_RETURN_IF_ERROR(ApplySetting(*s, value, &next));
    log_level_set = log_level_set || s->field == Setting::Field(&Config::loglevel);
    // Protected mode holds at runtime too: no password on a non-loopback listener.
    if (!CheckProtectedMode(next).ok()) {
      return Status::InvalidArgument("a password is required while listening on " + next.bind);
    }
  }
  // The logger is process-wide: the last CONFIG SET loglevel wins, as in Redis.
  if (log_level_set) {
    Result<LogLevel> level = RedisLogLevel(next.loglevel);
    if (level.ok()) SetLogLevel(*level);
  }
  config_ = std::move(next);
  ApplyHotSettings(config_);
  failed->clear();
  return Status::OK();
}

void Engine::ApplyHotSettings(const Config& c) {
  maxmemory_.store(c.maxmemory, std::memory_order_relaxed);
  maxclients_.store(c.maxclients, std::memory_order_relaxed);
  min_replicas_.store(c.min_replicas_to_write, std::memory_order_relaxed);
  proto_max_bulk_len_.store(c.proto_max_bulk_len, std::memory_order_relaxed);
  requires_auth_.store(!c.requirepass.empty(), std::memory_order_relaxed);
  output_hard_.store(c.output_hard_limit, std::memory_order_relaxed);
  output_soft_.store(c.output_soft_limit, std::memory_order_relaxed);
  output_soft_seconds_.store(c.output_soft_seconds, std::memory_order_relaxed);
}

Config Engine::config() const {
  MutexLock lock(&config_mu_);
  return config_;
}

void Engine::SetBoundPort(int port) {
  MutexLock lock(&config_mu_);
  config_.port = port;
}

}  // namespace floe::server
