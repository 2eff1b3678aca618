// The `floe` binary. Subcommands:
//   floe serve       a node that speaks the Redis protocol (RESP2/RESP3)
//   floe selfcheck   load, read, update, scan and remove keys from several threads, verifying all
//   floe commands    print the command reference (docs/commands.md is generated from it)

#include <CLI/CLI.hpp>
#include <cstdio>

#include "base/base.h"
#include "selfcheck.h"
#include "server/server.h"

namespace {

// Redis log levels, mapped onto spdlog's.
floe::Result<floe::LogLevel> RedisLogLevel(const std::string& name) {
  if (name == "debug") return floe::LogLevel::kDebug;
  if (name == "verbose" || name == "notice") return floe::LogLevel::kInfo;
  if (name == "warning") return floe::LogLevel::kWarn;
  if (name == "nothing") return floe::LogLevel::kOff;
  return floe::ParseLogLevel(name);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Floe: a peer-to-peer, in-memory, distributed key/value store for analytics"};
  app.set_version_flag("--version", "floe 0.1.0");
  app.require_subcommand(1);

  // ---- serve ----
  // A config file supplies the defaults; flags given on the command line override it. The file
  // is found before CLI11 parses, so its values are in place when the options bind to them.
  floe::server::Config config;
  std::string config_path;
  for (int i = 1; i < argc; i++) {
    const std::string_view a = argv[i];
    if (a == "--config" && i + 1 < argc) config_path = argv[i + 1];
    if (a.starts_with("--config=")) config_path = std::string(a.substr(9));
  }
  if (!config_path.empty()) {
    floe::Status s = floe::server::LoadConfigFile(config_path, &config);
    if (!s.ok()) {
      std::fprintf(stderr, "floe: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  std::string maxmemory = std::to_string(config.maxmemory);
  std::string bulk = std::to_string(config.proto_max_bulk_len);
  std::string output_limit = "normal " + std::to_string(config.output_hard_limit) + " " +
                             std::to_string(config.output_soft_limit) + " " +
                             std::to_string(config.output_soft_seconds);
  CLI::App* serve = app.add_subcommand(
      "serve",
      "Run a node that speaks the Redis protocol (RESP2 and RESP3): any Redis client works "
      "against it. Stops cleanly on SIGINT or SIGTERM.");
  serve->add_option("--config", config_path,
                    "Read settings from a Redis-style file: one `name value` per line, names as "
                    "the long flags below (e.g. `maxmemory 4gb`); flags override the file");
  serve
      ->add_option("--bind", config.bind,
                   "Addresses to listen on, space separated. A non-loopback address needs "
                   "--requirepass (protected mode)")
      ->capture_default_str();
  serve->add_option("--port", config.port, "TCP port (0 picks a free one)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  serve
      ->add_option("--threads", config.threads,
                   "I/O threads; 0 = one per core but one (at least 1), leaving a core to the "
                   "kernel's network stack and to clients on the same host")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  serve
      ->add_option("--busy-poll-us", config.busy_poll_us,
                   "Microseconds an idle I/O thread keeps polling before it sleeps: a request "
                   "arriving then does not have to wake it (lower latency, and less work for "
                   "clients on the same host), at the cost of that much spinning; 0 = never; "
                   "-1 = 200 when the I/O threads leave a core free, else never")
      ->capture_default_str()
      ->check(CLI::Range(-1, 100000));
  serve
      ->add_option("--requirepass", config.requirepass,
                   "Password clients must give with AUTH or HELLO (also from $FLOE_REQUIREPASS)")
      ->envname("FLOE_REQUIREPASS");
  serve->add_option("--maxclients", config.maxclients, "Most simultaneous clients")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  serve
      ->add_option("--maxmemory", maxmemory,
                   "Refuse writes with an OOM error above this much data (e.g. 4gb); 0 = no "
                   "limit")
      ->capture_default_str();
  serve
      ->add_option("--maxmemory-policy", config.maxmemory_policy,
                   "What to do at maxmemory: noeviction (refuse writes)")
      ->capture_default_str()
      ->check(CLI::IsMember({"noeviction"}));
  serve->add_option("--timeout", config.timeout, "Close clients idle this many seconds; 0 = never")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{INT32_MAX}));
  serve->add_option("--proto-max-bulk-len", bulk, "Longest string a client may send")
      ->capture_default_str();
  serve
      ->add_option("--client-output-buffer-limit", output_limit,
                   "Close a client whose unsent replies pass <hard> bytes, or stay above <soft> "
                   "for <seconds>: \"normal <hard> <soft> <seconds>\"; 0 = no limit")
      ->capture_default_str();
  serve->add_option("--hz", config.hz, "Active expiry cycles per second")
      ->capture_default_str()
      ->check(CLI::Range(1, 500));
  serve->add_option("--loglevel", config.loglevel, "debug, verbose, notice, warning or nothing")
      ->capture_default_str()
      ->check(CLI::IsMember({"debug", "verbose", "notice", "warning", "nothing"}));

  // ---- selfcheck ----
  floe::app::SelfCheckOptions check;
  CLI::App* selfcheck = app.add_subcommand(
      "selfcheck",
      "Exercise the node-local store from several threads (put, get, update, scan, remove), "
      "verify every result and report throughput. Exits non-zero on any mismatch.");
  selfcheck->add_option("--keys", check.keys, "number of keys to load and verify")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 32));
  selfcheck->add_option("--threads", check.threads, "worker threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  selfcheck->add_flag("--quiet", check.quiet, "no progress lines");

  // ---- commands ----
  CLI::App* commands = app.add_subcommand(
      "commands", "Print the command reference as Markdown (the source of docs/commands.md)");

  CLI11_PARSE(app, argc, argv);

  if (commands->parsed()) {
    std::fputs(floe::server::CommandsMarkdown().c_str(), stdout);
    return 0;
  }
  if (selfcheck->parsed()) return floe::app::RunSelfCheck(check);

  // serve
  floe::Result<floe::LogLevel> level = RedisLogLevel(config.loglevel);
  if (!level.ok()) {
    std::fprintf(stderr, "floe: %s\n", level.status().ToString().c_str());
    return 2;
  }
  floe::SetLogLevel(*level);
  floe::Result<int64_t> mm = floe::server::ParseMemory(maxmemory);
  floe::Result<int64_t> bl = floe::server::ParseMemory(bulk);
  if (!mm.ok() || !bl.ok()) {
    std::fprintf(stderr,
                 "floe: --maxmemory and --proto-max-bulk-len take a memory value such "
                 "as 100mb or 1gb\n");
    return 2;
  }
  config.maxmemory = *mm;
  config.proto_max_bulk_len = *bl;
  floe::Status valid = floe::server::ValidateConfig(config);
  if (!valid.ok()) {
    std::fprintf(stderr, "floe: %s\n", std::string(valid.message()).c_str());
    return 2;
  }
  {
    floe::server::Engine probe(config);
    std::string failed;
    floe::Status s = probe.SetConfig({{"client-output-buffer-limit", output_limit}}, &failed);
    if (!s.ok()) {
      std::fprintf(stderr, "floe: --client-output-buffer-limit: %s\n",
                   std::string(s.message()).c_str());
      return 2;
    }
    config = probe.config();
  }
  floe::server::Server server(config);
  floe::Status s = server.Run();
  if (!s.ok()) {
    std::fprintf(stderr, "floe: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
