#!/usr/bin/env bash
# The cost of backups (issue 11's goal: SET with --replicas 1 at least 0.6x --replicas 0):
# redis-benchmark through member 0 of a 3-node cluster started with --replicas 1 against one
# started with --replicas 0, in one run: SET and GET, -P 1 and -P 16, -c 50, -r 100000 random
# keys, 3-byte and 1,000-byte values. Prints ops/s, p50/p99 latency and the ratio
# replicas1/replicas0, medians of --repeat runs (default 3), the two clusters alternating so that
# drift on the host affects both alike. Each cluster is set up as its users would: the same flags
# but --replicas.
#
#   bench/replicas_bench.sh [--floe PATH] [--requests N] [--repeat N] [--quick]
#
# Every server is started on free loopback ports and stopped by PID at the end, also on error
# or Ctrl-C. A server that does not start or dies, a cluster that does not form, a
# redis-benchmark run that errors, hangs or misses a test, or a --replicas 1 cluster whose
# members hold no backed-up key at the end, fails the script (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
pids=()
# cleanup (of $pids and $tmp, on exit), fail, usage, run_options, require, alive, run_benchmark,
# csv_rows, median, col, ratio, pick_ports, wait_up, start_cluster
source "$(dirname "$0")/lib.sh"
run_options "$0" "$@"
require redis-benchmark redis-cli

read -r -a ports <<<"$(pick_ports 6 6)"
start_cluster "replicas 1" "$tmp/one" "${ports[*]:0:3}" "${ports[*]:6:3}" --replicas 1
one=("${cluster_pids[@]}")
start_cluster "replicas 0" "$tmp/zero" "${ports[*]:3:3}" "${ports[*]:9:3}" --replicas 0
zero=("${cluster_pids[@]}")
one_port=${ports[0]}
zero_port=${ports[3]}

echo "floe: $($floe --version); host: $(nproc) cores; each node with its default I/O threads"
echo "two 3-member clusters on 127.0.0.1, --replicas 1 (client on port $one_port) and" \
  "--replicas 0 (port $zero_port)"
echo "redis-benchmark -c 50 -n $requests (-n x4 with -P 16) -r 100000 -t set,get; median of" \
  "$repeat runs"
echo
printf "| test | pipeline | value bytes | replicas 1 ops/s | replicas 0 ops/s | 1/0 |"
printf " replicas 1 p50/p99 ms | replicas 0 p50/p99 ms |\n"
printf "|---|---|---|---|---|---|---|---|\n"

bench() {  # NAME PID PORT PIPELINE N BYTES -> lines "TEST rps p50 p99"
  run_benchmark "$1" "$2" -p "$3" -c 50 -n "$5" -r 100000 -d "$6" -P "$4" -t set,get
  csv_rows SET GET
}

for bytes in 3 1000; do
  for pipe in 1 16; do
    n=$requests
    [ "$pipe" -gt 1 ] && n=$((requests * 4))
    : >"$tmp/a"; : >"$tmp/b"
    for _ in $(seq "$repeat"); do
      bench "replicas 1" "${one[0]}" "$one_port" "$pipe" "$n" "$bytes" >>"$tmp/a"
      for i in 1 2; do alive "replicas 1 member $i" "${one[$i]}"; done
      bench "replicas 0" "${zero[0]}" "$zero_port" "$pipe" "$n" "$bytes" >>"$tmp/b"
      for i in 1 2; do alive "replicas 0 member $i" "${zero[$i]}"; done
    done
    for test in SET GET; do
      a=$(col "$tmp/a" $test 2); b=$(col "$tmp/b" $test 2)
      printf "| %s | %s | %s | %.0f | %.0f | **%s** | %s / %s | %s / %s |\n" "$test" "$pipe" \
        "$bytes" "$a" "$b" "$(ratio "$a" "$b")" "$(col "$tmp/a" $test 3)" \
        "$(col "$tmp/a" $test 4)" "$(col "$tmp/b" $test 3)" "$(col "$tmp/b" $test 4)"
    done
  done
done

# The --replicas 1 cluster really kept backups: its members hold replicas of each other's keys.
backed=0
for p in "${ports[@]:0:3}"; do
  k=$(redis-cli -p "$p" info memory | tr -d '\r' | awk -F: '/^replica_keys:/ {print $2}')
  backed=$((backed + ${k:-0}))
done
[ "$backed" -gt 0 ] || fail "the --replicas 1 cluster holds no backed-up key"
echo
echo "keys held as backups by the --replicas 1 cluster's members at the end: $backed"
