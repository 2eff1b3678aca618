// The `floe` binary. Subcommands:
//   floe serve       a node that speaks the Redis protocol (RESP2/RESP3)
//   floe selfcheck   load, read, update, scan and remove keys from several threads, verifying all
//   floe commands    print the command reference (docs/commands.md is generated from it)
//   floe import      import a CSV file into a frame on a running node, with a progress bar

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <deque>
#include <string>

#include "base/base.h"
#include "http/http.h"
#include "import.h"
#include "selfcheck.h"
#include "server/server.h"

namespace {

// What `floe serve --help` says of a setting's values.
std::string TypeName(const floe::server::Setting& s) {
  using Kind = floe::server::Setting::Kind;
  switch (s.kind) {
    case Kind::kInteger: {
      const int64_t lo = std::max(s.min, s.clamp_min), hi = std::min(s.max, s.clamp_max);
      return "INT in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    }
    case Kind::kMemory:
      return "BYTES in [" + std::to_string(s.min) + ", " + std::to_string(s.max) + "] (100mb, 4gb)";
    case Kind::kChoice: {
      std::string names;
      for (std::string_view c : s.choices) names += (names.empty() ? "" : "|") + std::string(c);
      return "{" + names + "}";
    }
    case Kind::kText:
    case Kind::kOutputLimit:
      return "TEXT";
  }
  return "TEXT";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Floe: a peer-to-peer, in-memory, distributed key/value store for analytics"};
  app.set_version_flag("--version", std::string("floe ") + floe::server::kFloeVersion);
  app.require_subcommand(1);

  // ---- serve ----
  // A config file supplies the defaults; flags given on the command line override it. The file
  // is read before CLI11 parses, so --help shows its values as the defaults.
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
  CLI::App* serve = app.add_subcommand(
      "serve",
      "Run a node that speaks the Redis protocol (RESP2 and RESP3): any Redis client works "
      "against it. Stops cleanly on SIGINT or SIGTERM.");
  serve->add_option("--config", config_path,
                    "Read settings from a Redis-style file: one `name value` per line, names as "
                    "the long flags below (e.g. `maxmemory 4gb`); flags override the file");
  // One flag per row of the settings table; the values are parsed by the table, after CLI11.
  struct Flag {
    const floe::server::Setting* setting;
    std::string value;
    CLI::Option* option = nullptr;
  };
  std::deque<Flag> flags;
  for (const floe::server::Setting& s : floe::server::Settings()) {
    if (!s.cli) continue;
    Flag& f = flags.emplace_back(Flag{&s, ""});
    const std::string name(s.flag.empty() ? s.name : s.flag);
    f.option = serve->add_option("--" + name, f.value, std::string(s.help))
                   ->type_name(TypeName(s))
                   ->default_str(floe::server::SettingValue(s, config));
    if (!s.env.empty()) f.option->envname(std::string(s.env));
  }

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

  // ---- import ----
  floe::app::ImportOptions import;
  CLI::App* import_cmd = app.add_subcommand(
      "import",
      "Import a CSV file, or a directory of them (gzip or not), into a frame on a running node "
      "(FRAME.IMPORT), showing the job's progress until it ends; Ctrl-C cancels it. The path "
      "is the node's: it must lie under the node's --import-dir.");
  import_cmd->add_option("name", import.name, "the frame's key")->required();
  import_cmd->add_option("path", import.path, "file or directory, as the node sees it")->required();
  import_cmd->add_option("-H,--host", import.host, "the node's address")->capture_default_str();
  import_cmd->add_option("-p,--port", import.port, "the node's RESP port")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  import_cmd->add_option("-a,--password", import.password, "AUTH with this password")
      ->envname("FLOE_REQUIREPASS");
  import_cmd->add_option("--sep", import.sep, "field separator (one character; default ,)");
  import_cmd->add_option("--header", import.header, "the first line names the columns")
      ->check(CLI::IsMember({"yes", "no"}));
  import_cmd->add_option("--types", import.types,
                         "column types, comma-separated (FRAME.IMPORT's TYPES)");
  import_cmd->add_option("--na", import.na, "strings read as missing, comma-separated");
  import_cmd->add_flag("--replace", import.replace, "replace an existing key of that name");
  import_cmd->add_flag("-q,--quiet", import.quiet, "no progress, only the result");
  import_cmd->add_option("--timeout", import.timeout_ms, "milliseconds to wait for each reply")
      ->capture_default_str()
      ->check(CLI::Range(100, 3'600'000));

  CLI11_PARSE(app, argc, argv);

  if (import_cmd->parsed()) return floe::app::RunImport(import);

  if (commands->parsed()) {
    std::fputs(floe::server::CommandsMarkdown().c_str(), stdout);
    return 0;
  }
  if (selfcheck->parsed()) return floe::app::RunSelfCheck(check);

  // serve
  for (const Flag& f : flags) {
    if (f.option->count() == 0) continue;
    floe::Status s = floe::server::ApplySetting(*f.setting, f.value, &config);
    if (!s.ok()) {
      std::fprintf(stderr, "floe: %s: %s\n", f.option->get_name().c_str(),
                   std::string(s.message()).c_str());
      return 2;
    }
  }
  floe::Status valid = floe::server::ValidateConfig(config);
  if (!valid.ok()) {
    std::fprintf(stderr, "floe: %s\n", std::string(valid.message()).c_str());
    return 2;
  }
  floe::Result<floe::LogLevel> level = floe::server::RedisLogLevel(config.loglevel);
  if (!level.ok()) {
    std::fprintf(stderr, "floe: %s\n", level.status().ToString().c_str());
    return 2;
  }
  floe::SetLogLevel(*level);
  floe::server::Server server(config);
  // HTTP (docs/api.md): http-port -1 derives port + 1000, which is skipped if taken.
  if (std::optional<floe::http::Options> http = floe::http::ServeOptions(config)) {
    floe::http::Attach(server, std::move(*http));
  }
  floe::Status s = server.Run();
  if (!s.ok()) {
    std::fprintf(stderr, "floe: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
