#!/usr/bin/env bash
# Sets everything up and runs every test: installs dependencies, builds with warnings as errors,
# runs the whole suite, then the concurrency tests again under ThreadSanitizer.
#   tools/test.sh            everything
#   tools/test.sh -L unit    pass ctest arguments through (e.g. one label)
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
jobs=$(nproc)
# Test slots: a unit test takes two (PROCESSORS 2, cmake/FloeTargets.cmake), an end-to-end test
# one, as it mostly waits on sockets; so as many unit tests run at once as there are cores.
slots=$((2 * jobs))

# The ThreadSanitizer tree builds at the lowest priority from the start, on what the release
# build and tests leave idle (the tests used about half of 2 cores): only the targets its label
# runs (each test is the target of its name), not the rest of the tree.
cmake --preset tsan >/dev/null
mapfile -t tsan_tests < <(ctest --preset tsan -N | sed -n 's/^ *Test *#[0-9]*: //p')
[ "${#tsan_tests[@]}" -gt 0 ] || { echo "no tests in the tsan label" >&2; exit 1; }
tsan_log=$(mktemp)
tools/idle.sh cmake --build --preset tsan -j "$jobs" --target "${tsan_tests[@]}" \
  >"$tsan_log" 2>&1 &
tsan_build=$!
trap 'kill -- -"$tsan_build" 2>/dev/null || true' EXIT

echo "== build (release, -Werror)"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
echo "== tests"
ctest --preset release -j "$slots" --no-tests=error "$@"

echo "== ThreadSanitizer (label tsan)"
if ! wait "$tsan_build"; then
  tail -n 60 "$tsan_log"
  echo "FAILED: the tsan build (log: $tsan_log)" >&2
  exit 1
fi
trap - EXIT
rm -f "$tsan_log"
ctest --preset tsan -j "$slots" --no-tests=error
echo "== all tests passed"
