#!/usr/bin/env bash
# Sets everything up and runs a Floe node: installs dependencies, builds the release binary,
# and starts `floe serve` on 127.0.0.1:6379 (any Redis client can connect; Ctrl-C stops it).
# Arguments are passed to `floe serve` (try --help), e.g. tools/quickstart.sh --port 7000
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target floe
exec build/release/app/floe serve "$@"
