// The Engine: configuration, clients, statistics, the exclusive section, active expiry.

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>

#include "server/internal/command.h"

namespace floe::server {

using internal::EqualsIgnoreCase;

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
  int64_t v = 0;
  if (!internal::ParseInt64(t, &v) || v < 0 || v > INT64_MAX / mul) {
    return Status::InvalidArgument("argument must be a memory value");
  }
  return v * mul;
}

bool IsLoopbackAddress(std::string_view address) {
  return address.starts_with("127.") || address == "::1" || address == "localhost";
}

namespace {
std::vector<std::string> SplitSpaces(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') i++;
    size_t j = i;
    while (j < s.size() && s[j] != ' ') j++;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}
}  // namespace

Status ValidateConfig(const Config& c) {
  if (c.port < 0 || c.port > 65535) return Status::InvalidArgument("port must be 0-65535");
  if (c.threads < 0 || c.threads > 256) return Status::InvalidArgument("threads must be 0-256");
  if (c.busy_poll_us < -1 || c.busy_poll_us > 100000) {
    return Status::InvalidArgument("busy-poll-us must be -1 (auto) or 0-100000");
  }
  if (c.maxclients < 1) return Status::InvalidArgument("maxclients must be at least 1");
  if (c.hz < 1 || c.hz > 500) return Status::InvalidArgument("hz must be 1-500");
  if (c.proto_max_bulk_len < 1024) {
    return Status::InvalidArgument("proto-max-bulk-len must be at least 1kb");
  }
  if (c.maxmemory_policy != "noeviction") {
    return Status::InvalidArgument("maxmemory-policy: only noeviction is supported");
  }
  const auto addrs = SplitSpaces(c.bind);
  if (addrs.empty()) return Status::InvalidArgument("bind needs at least one address");
  for (const std::string& a : addrs) {
    if (!IsLoopbackAddress(a) && c.requirepass.empty()) {
      return Status::FailedPrecondition(
          "refusing to listen on " + a +
          " without a password (protected mode): set --requirepass so clients must AUTH, or "
          "bind to a loopback address such as 127.0.0.1");
    }
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
Engine::Engine(Config config, int workers) : config_(std::move(config)) {
  workers = std::max(workers, 1);
  const size_t ncommands = internal::AllCommands().size();
  for (int i = 0; i < workers; i++) {
    worker_locks_.emplace_back();
    auto s = std::make_unique<WorkerStats>();
    s->calls.reset(new std::atomic<uint64_t>[ncommands]());
    s->ticks.reset(new std::atomic<uint64_t>[ncommands]());
    s->failed.reset(new std::atomic<uint64_t>[ncommands]());
    stats_.push_back(std::move(s));
  }
  start_ms_ = static_cast<int64_t>(WallMicros() / 1000);
  MutexLock lock(&config_mu_);
  ApplyHotSettings(config_);
}

Engine::~Engine() = default;

void Engine::ApplyHotSettings(const Config& c) {
  maxmemory_.store(c.maxmemory, std::memory_order_relaxed);
  maxclients_.store(c.maxclients, std::memory_order_relaxed);
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

bool Engine::CheckPassword(std::string_view password) const {
  std::string expected;
  {
    MutexLock lock(&config_mu_);
    expected = config_.requirepass;
  }
  if (expected.empty()) return true;
  // Constant time in the length of the expected password.
  unsigned diff = password.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); i++) {
    diff |= static_cast<unsigned>(expected[i] ^ (i < password.size() ? password[i] : 0));
  }
  return diff == 0;
}

namespace {

// Every setting CONFIG knows: name, read-only, how to show it, how to set it.
struct Param {
  std::string_view name;
  bool mutable_at_runtime;
  std::string (*get)(const Config&);
  Status (*set)(Config&, std::string_view);
};

Status SetInt(int64_t* field, std::string_view v, int64_t min, int64_t max) {
  int64_t n = 0;
  if (!internal::ParseInt64(v, &n) || n < min || n > max) {
    return Status::InvalidArgument("argument couldn't be parsed into an integer");
  }
  *field = n;
  return Status::OK();
}

std::string OutputLimit(const Config& c) {
  return "normal " + std::to_string(c.output_hard_limit) + " " +
         std::to_string(c.output_soft_limit) + " " + std::to_string(c.output_soft_seconds) +
         " slave 0 0 0 pubsub 0 0 0";
}

Status SetOutputLimit(Config& c, std::string_view v) {
  const auto parts = SplitSpaces(v);
  if (parts.size() % 4 != 0 || parts.empty()) {
    return Status::InvalidArgument("Wrong number of arguments in buffer limit configuration.");
  }
  Config next = c;
  for (size_t i = 0; i < parts.size(); i += 4) {
    Result<int64_t> hard = ParseMemory(parts[i + 1]);
    Result<int64_t> soft = ParseMemory(parts[i + 2]);
    int64_t secs = 0;
    if (!hard.ok() || !soft.ok() || !internal::ParseInt64(parts[i + 3], &secs) || secs < 0) {
      return Status::InvalidArgument(
          "Error in hard, soft or soft_seconds setting in buffer limit configuration.");
    }
    if (parts[i] == "normal") {
      next.output_hard_limit = *hard;
      next.output_soft_limit = *soft;
      next.output_soft_seconds = secs;
    } else if (parts[i] != "slave" && parts[i] != "replica" && parts[i] != "pubsub") {
      return Status::InvalidArgument(
          "Invalid client class specified in buffer limit configuration.");
    }
  }
  c = next;
  return Status::OK();
}

const Param kParams[] = {
    {"appendonly", false, [](const Config&) -> std::string { return "no"; }, nullptr},
    {"bind", false, [](const Config& c) { return c.bind; }, nullptr},
    {"client-output-buffer-limit", true, OutputLimit, SetOutputLimit},
    {"databases", false, [](const Config&) -> std::string { return "1"; }, nullptr},
    {"hz", true, [](const Config& c) { return std::to_string(c.hz); },
     [](Config& c, std::string_view v) {
       int64_t n = 0;
       FLOE_RETURN_IF_ERROR(SetInt(&n, v, 1, 500));
       c.hz = static_cast<int>(n);
       return Status::OK();
     }},
    {"busy-poll-us", false, [](const Config& c) { return std::to_string(c.busy_poll_us); },
     nullptr},
    {"io-threads", false, [](const Config& c) { return std::to_string(c.threads); }, nullptr},
    {"loglevel", true, [](const Config& c) { return c.loglevel; },
     [](Config& c, std::string_view v) {
       const std::string l = internal::ToLower(v);
       if (l != "debug" && l != "verbose" && l != "notice" && l != "warning" && l != "nothing") {
         return Status::InvalidArgument(
             "argument(s) must be one of the following: debug, verbose, notice, warning, nothing");
       }
       c.loglevel = l;
       return Status::OK();
     }},
    {"maxclients", true, [](const Config& c) { return std::to_string(c.maxclients); },
     [](Config& c, std::string_view v) { return SetInt(&c.maxclients, v, 1, 1000000); }},
    {"maxmemory", true, [](const Config& c) { return std::to_string(c.maxmemory); },
     [](Config& c, std::string_view v) {
       FLOE_ASSIGN_OR_RETURN(c.maxmemory, ParseMemory(v));
       return Status::OK();
     }},
    {"maxmemory-policy", true, [](const Config& c) { return c.maxmemory_policy; },
     [](Config& c, std::string_view v) {
       if (internal::ToLower(v) != "noeviction") {
         return Status::InvalidArgument("argument(s) must be one of the following: noeviction");
       }
       c.maxmemory_policy = "noeviction";
       return Status::OK();
     }},
    {"port", false, [](const Config& c) { return std::to_string(c.port); }, nullptr},
    {"proto-max-bulk-len", true,
     [](const Config& c) { return std::to_string(c.proto_max_bulk_len); },
     [](Config& c, std::string_view v) {
       FLOE_ASSIGN_OR_RETURN(int64_t n, ParseMemory(v));
       if (n < 1024) return Status::InvalidArgument("argument must be at least 1kb");
       c.proto_max_bulk_len = n;
       return Status::OK();
     }},
    {"requirepass", true, [](const Config& c) { return c.requirepass; },
     [](Config& c, std::string_view v) {
       c.requirepass.assign(v);
       return Status::OK();
     }},
    {"save", false, [](const Config&) -> std::string { return ""; }, nullptr},
    {"timeout", true, [](const Config& c) { return std::to_string(c.timeout); },
     [](Config& c, std::string_view v) { return SetInt(&c.timeout, v, 0, INT32_MAX); }},
};

}  // namespace

Status LoadConfigFile(const std::string& path, Config* config) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read config file " + path);
  std::string line;
  int number = 0;
  Config next = *config;
  while (std::getline(in, line)) {
    number++;
    std::vector<std::string> args;
    if (!resp::SplitInlineArgs(line, &args)) {
      return Status::InvalidArgument(path + ":" + std::to_string(number) + ": unbalanced quotes");
    }
    if (args.empty() || args[0][0] == '#') continue;
    const std::string name = internal::ToLower(args[0]);
    std::string value;
    for (size_t i = 1; i < args.size(); i++) value += (i > 1 ? " " : "") + args[i];
    auto where = [&](std::string_view what) {
      return Status::InvalidArgument(path + ":" + std::to_string(number) + ": " +
                                     std::string(what));
    };
    if (name == "bind") {
      next.bind = value;
    } else if (name == "busy-poll-us") {
      int64_t n = 0;
      if (!internal::ParseInt64(value, &n) || n < -1 || n > 100000) {
        return where("busy-poll-us needs -1 (auto) or a number from 0 to 100000");
      }
      next.busy_poll_us = n;
    } else if (name == "port" || name == "io-threads") {
      int64_t n = 0;
      if (!internal::ParseInt64(value, &n) || n < 0 || n > 65535)
        return where(name + " needs a number");
      (name == "port" ? next.port : next.threads) = static_cast<int>(n);
    } else {
      const Param* param = nullptr;
      for (const Param& p : kParams) {
        if (p.name == name && p.set != nullptr) param = &p;
      }
      if (param == nullptr) return where("unknown setting '" + args[0] + "'");
      Status s = param->set(next, value);
      if (!s.ok()) return where(name + ": " + std::string(s.message()));
    }
  }
  next.config_file = path;
  *config = next;
  return Status::OK();
}

Status Engine::SetConfig(const std::vector<std::pair<std::string_view, std::string_view>>& changes,
                         std::string* failed) {
  MutexLock lock(&config_mu_);
  Config next = config_;
  for (const auto& [name, value] : changes) {
    *failed = std::string(name);
    const Param* param = nullptr;
    for (const Param& p : kParams) {
      if (EqualsIgnoreCase(p.name, name)) param = &p;
    }
    if (param == nullptr) return Status::NotFound(name);
    if (!param->mutable_at_runtime) return Status::InvalidArgument("can't set immutable config");
    FLOE_RETURN_IF_ERROR(param->set(next, value));
    // Protected mode holds at runtime too: no password on a non-loopback listener.
    if (next.requirepass.empty()) {
      for (const std::string& a : SplitSpaces(next.bind)) {
        if (!IsLoopbackAddress(a)) {
          return Status::InvalidArgument("a password is required while listening on " + a);
        }
      }
    }
  }
  config_ = next;
  ApplyHotSettings(config_);
  failed->clear();
  return Status::OK();
}

std::vector<std::pair<std::string, std::string>> Engine::GetConfig(std::string_view pattern) const {
  MutexLock lock(&config_mu_);
  std::vector<std::pair<std::string, std::string>> out;
  for (const Param& p : kParams) {
    if (internal::GlobMatch(pattern, p.name, /*nocase=*/true)) {
      out.emplace_back(std::string(p.name), p.get(config_));
    }
  }
  return out;
}

int64_t Engine::UsedMemory() {
  const auto now = static_cast<int64_t>(NowMicros());
  if (now - used_memory_at_us_.load(std::memory_order_relaxed) > 1000) {
    used_memory_.store(static_cast<int64_t>(store_.MemoryUsed()) + client_buffer_bytes(),
                       std::memory_order_relaxed);
    used_memory_at_us_.store(now, std::memory_order_relaxed);
  }
  return used_memory_.load(std::memory_order_relaxed);
}

std::shared_ptr<ClientState> Engine::RegisterClient(std::string addr, std::string laddr) {
  auto c = std::make_shared<ClientState>();
  c->id = next_client_id_.fetch_add(1, std::memory_order_relaxed);
  c->addr = std::move(addr);
  c->laddr = std::move(laddr);
  c->created_ms = static_cast<int64_t>(WallMicros() / 1000);
  c->last_interaction_ms.store(c->created_ms, std::memory_order_relaxed);
  MutexLock lock(&clients_mu_);
  clients_.emplace(c->id, c);
  client_count_.store(clients_.size(), std::memory_order_relaxed);
  return c;
}

void Engine::UnregisterClient(uint64_t id) {
  MutexLock lock(&clients_mu_);
  clients_.erase(id);
  client_count_.store(clients_.size(), std::memory_order_relaxed);
}

std::vector<std::shared_ptr<ClientState>> Engine::Clients() const {
  MutexLock lock(&clients_mu_);
  std::vector<std::shared_ptr<ClientState>> out;
  out.reserve(clients_.size());
  for (const auto& [id, c] : clients_) out.push_back(c);
  return out;
}

Engine::ExclusiveSection::ExclusiveSection(Engine* engine) FLOE_NO_THREAD_SAFETY_ANALYSIS
    : engine_(engine) {
  for (Mutex& m : engine_->worker_locks_) m.Lock();
}

Engine::ExclusiveSection::~ExclusiveSection() FLOE_NO_THREAD_SAFETY_ANALYSIS {
  for (auto it = engine_->worker_locks_.rbegin(); it != engine_->worker_locks_.rend(); ++it) {
    it->Unlock();
  }
}

// Like Redis's activeExpireCycle: sweep slots of shards that hold expiring keys; keep going
// while more than a quarter of the expiring keys looked at had expired and time remains.
void Engine::ActiveExpireCycle(int worker, uint64_t budget_us) {
  if (store_.ExpiringCount() == 0) return;
  const uint64_t start = NowMicros();
  MutexLock lock(&worker_lock(worker));
  for (;;) {
    const auto now_ms = static_cast<int64_t>(WallMicros() / 1000);
    const store::Store::ExpireSweep sweep = store_.RemoveExpired(&expire_cursor_, 256, now_ms);
    stats(worker).expired_keys.fetch_add(sweep.removed, std::memory_order_relaxed);
    if (sweep.examined == 0 || sweep.removed * 4 < sweep.examined) break;
    if (NowMicros() - start > budget_us) break;
  }
}

}  // namespace floe::server
