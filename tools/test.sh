#!/usr/bin/env bash
# Sets everything up and runs every test: installs dependencies, builds with warnings as errors,
# runs the whole suite, then the concurrency tests again under ThreadSanitizer.
#   tools/test.sh            everything
#   tools/test.sh -L unit    pass ctest arguments through (e.g. one label)
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
jobs=$(nproc)

echo "== build (release, -Werror)"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
echo "== tests"
ctest --preset release -j "$jobs" --no-tests=error "$@"

echo "== ThreadSanitizer (label tsan)"
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j "$jobs"
ctest --preset tsan -j "$jobs" --no-tests=error
echo "== all tests passed"
