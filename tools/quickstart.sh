#!/usr/bin/env bash
# Sets everything up and runs Floe: installs dependencies, builds the release binary, and runs
# it. Until `floe serve` exists this runs the store's self-check, which loads, reads, scans and
# removes keys from several threads at once and reports what it measured.
# Arguments are passed to `floe selfcheck` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target floe
exec build/release/app/floe selfcheck "$@"
