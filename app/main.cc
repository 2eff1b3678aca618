// The `floe` binary. Subcommands:
//   floe selfcheck   load, read, update, scan and remove keys from several threads, verifying all

#include <CLI/CLI.hpp>
#include <cstdio>

#include "base/base.h"
#include "selfcheck.h"

int main(int argc, char** argv) {
  CLI::App app{"Floe: a peer-to-peer, in-memory, distributed key/value store for analytics"};
  app.set_version_flag("--version", "floe 0.1.0");
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();

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

  CLI11_PARSE(app, argc, argv);

  floe::Result<floe::LogLevel> level = floe::ParseLogLevel(log_level);
  if (!level.ok()) {
    std::fprintf(stderr, "floe: %s\n", level.status().ToString().c_str());
    return 2;
  }
  floe::SetLogLevel(*level);

  if (selfcheck->parsed()) return floe::app::RunSelfCheck(check);
  return 0;
}
