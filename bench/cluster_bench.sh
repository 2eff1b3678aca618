#!/usr/bin/env bash
# redis-benchmark through one member of a 3-node Floe cluster against a single Floe node, in one
# run: SET and GET, -P 1 and -P 16, -c 50, -r 100000 random keys (so about two thirds of the
# commands are homed on the other two members and forwarded), then GET of 1,000 hot keys (read
# from cached copies on member 0 after their first miss). Prints ops/s and p50/p99 latency
# for both and the ratio cluster/single, medians of --repeat runs (default 3), the cluster and
# the single node alternating so that drift on the host affects both alike.
#
#   bench/cluster_bench.sh [--floe PATH] [--requests N] [--repeat N] [--quick]
#
# Every server is started on free loopback ports and stopped by PID at the end, also on error
# or Ctrl-C. A server that does not start or dies, a cluster that does not form, a
# redis-benchmark run that errors, hangs or misses a test, or a cluster run in which the other
# members ran nothing for the node the client used, fails the script (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
pids=()
# cleanup (of $pids and $tmp, on exit), fail, usage, run_options, require, alive, run_benchmark,
# csv_rows, median, col, ratio, pick_ports, wait_up, start_cluster
source "$(dirname "$0")/lib.sh"
run_options "$0" "$@"
require redis-benchmark redis-cli

read -r -a ports <<<"$(pick_ports 4 3)"
single_port=${ports[0]}
resp=("${ports[1]}" "${ports[2]}" "${ports[3]}")
cport=("${ports[4]}" "${ports[5]}" "${ports[6]}")

"$floe" serve --port "$single_port" --loglevel warning &
pids+=($!); single_pid=$!
wait_up single "$single_port" "$single_pid"
start_cluster cluster "$tmp/data" "${resp[*]}" "${cport[*]}"
node_pids=("${cluster_pids[@]}")
# The client talks to member 0; cluster_proxied counts what the others run for it.
proxied() {
  redis-cli -p "$1" info cluster | tr -d '\r' | awk -F: '/^cluster_proxied:/ {print $2}'
}
proxied_before=$(( $(proxied "${resp[1]}") + $(proxied "${resp[2]}") ))

echo "floe: $($floe --version); host: $(nproc) cores; each node with its default I/O threads"
echo "cluster: 3 members on 127.0.0.1, the client on member 0 (port ${resp[0]});" \
  "single: port $single_port"
echo "redis-benchmark -c 50 -n $requests (-n x4 with -P 16) -r 100000 -d 3 -t set,get;" \
  "then GET-hot: the same with -r 1000 -t get; median of $repeat runs"
echo
printf "| test | pipeline | cluster ops/s | single ops/s | cluster/single |"
printf " cluster p50/p99 ms | single p50/p99 ms |\n"
printf "|---|---|---|---|---|---|---|\n"

bench() {  # NAME PID PORT PIPELINE N -> lines "TEST rps p50 p99"
  run_benchmark "$1" "$2" -p "$3" -c 50 -n "$5" -r 100000 -d 3 -P "$4" -t set,get
  csv_rows SET GET
  # GET of 1,000 hot keys (set by the run above): on member 0 the remote ones are read from
  # their cached copies after their first miss (docs/cluster.md, rule C8).
  run_benchmark "$1" "$2" -p "$3" -c 50 -n "$5" -r 1000 -d 3 -P "$4" -t get
  csv_rows GET | sed 's/^GET /GET-hot /'
}

# The hot keys exist before their rows (SET's 100,000 random keys need not cover them).
run_benchmark cluster "${node_pids[0]}" -p "${resp[0]}" -c 50 -n 20000 -r 1000 -d 3 -t set
run_benchmark single "$single_pid" -p "$single_port" -c 50 -n 20000 -r 1000 -d 3 -t set
for pipe in 1 16; do
  n=$requests
  [ "$pipe" -gt 1 ] && n=$((requests * 4))
  : >"$tmp/c"; : >"$tmp/s"
  for _ in $(seq "$repeat"); do
    bench cluster "${node_pids[0]}" "${resp[0]}" "$pipe" "$n" >>"$tmp/c"
    for i in 1 2; do alive "member $i" "${node_pids[$i]}"; done
    bench single "$single_pid" "$single_port" "$pipe" "$n" >>"$tmp/s"
  done
  for test in SET GET GET-hot; do
    crps=$(col "$tmp/c" $test 2); srps=$(col "$tmp/s" $test 2)
    printf "| %s | %s | %.0f | %.0f | **%s** | %s / %s | %s / %s |\n" "$test" "$pipe" \
      "$crps" "$srps" "$(ratio "$crps" "$srps")" "$(col "$tmp/c" $test 3)" \
      "$(col "$tmp/c" $test 4)" "$(col "$tmp/s" $test 3)" "$(col "$tmp/s" $test 4)"
  done
done

proxied_after=$(( $(proxied "${resp[1]}") + $(proxied "${resp[2]}") ))
[ "$proxied_after" -gt "$proxied_before" ] ||
  fail "members 1 and 2 ran nothing for member 0: the keys did not reach their homes"
echo
echo "requests members 1 and 2 ran for member 0's clients: $((proxied_after - proxied_before))" \
  "(forwarded batches; a batch holds every command a client pipelined to that home meanwhile)"
