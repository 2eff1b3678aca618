#!/usr/bin/env bash
# Installs every Debian package Floe's build, tests, fuzzers and benchmarks need.
# Idempotent; runs as root (or through sudo) on a fresh Debian 12. Nothing else is downloaded,
# but for npm's @duckdb/node-api, pinned by tests/duckdb/package-lock.json: the frame
# differential test's reference (tests/e2e/test_frames.py).
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev clang-format   # the asan tree (unit tests, fuzz targets), formatting
  # libraries
  libspdlog-dev libfmt-dev libxxhash-dev libcli11-dev libasio-dev
  liblz4-dev                               # RPC payload compression
  zlib1g-dev                               # gzip CSV input (src/parse)
  libhttp-parser-dev nlohmann-json3-dev    # HTTP API: request framing, JSON bodies (docs/api.md)
  chromium                                 # the web page's browser test (tests/browser)
  libgoogle-perftools-dev                  # tcmalloc (docs/store.md, "Allocator")
  libraft-dev libuv1-dev                   # agreed cluster metadata (src/consensus)
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  libtbb-dev libcuckoo-dev liburcu-dev      # the maps store_bench compares against
  python3 python3-pytest python3-redis      # e2e tests (Debian's interpreter: /usr/bin/python3)
  redis-server redis-tools                  # differential tests, redis-cli, redis-benchmark
  postgresql-15 postgresql-15-hll           # HyperLogLog compatibility tests (tests/compat)
)

if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=DEBIAN_FRONTEND "$0" "$@"
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm for the browser test: the machine's own when it has them (a NodeSource
# nodejs bundles npm, and Debian's npm package conflicts with it), else Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
# DuckDB for the frame differential test, as tests/browser gets puppeteer-core: `npm ci` from
# the lock file, once (skipped when it is there).
duckdb_package() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/duckdb"
  [ -d "$dir/node_modules/@duckdb/node-api" ] && return 0
  echo "install-deps: npm ci in tests/duckdb"
  (cd "$dir" && npm ci --no-audit --no-fund >/dev/null)
}
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  duckdb_package
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
duckdb_package
