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
# Only the targets the label runs (each test is the target of its name): the rest of the tree
# under ThreadSanitizer would be built and never run.
mapfile -t tsan_tests < <(ctest --preset tsan -N | sed -n 's/^ *Test *#[0-9]*: //p')
[ "${#tsan_tests[@]}" -gt 0 ] || { echo "no tests in the tsan label" >&2; exit 1; }
cmake --build --preset tsan -j "$jobs" --target "${tsan_tests[@]}"
ctest --preset tsan -j "$jobs" --no-tests=error
echo "== all tests passed"
