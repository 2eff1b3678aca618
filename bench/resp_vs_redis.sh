#!/usr/bin/env bash
# Floe against Debian's redis-server, side by side in one run, with redis-benchmark:
# SET, GET, INCR, MSET; -P 1 and -P 16; -c 50; values of 3 and 1000 bytes. Prints ops/s and
# p50/p99 latency for both and the ratio Floe/Redis, then loads 1,000,000 keys with 16-byte
# values into each and compares resident memory.
#
#   bench/resp_vs_redis.sh [--floe PATH] [--threads N] [--requests N] [--repeat N] [--quick]
#                          [--only kv|pfadd|memory] [--pipelines "1 16"] [--sizes "3 1000"]
#
# Each measurement is repeated (default 3 times, floe and redis alternating) and the median is
# reported, because two cores shared by both servers and the client make single runs noisy.
# --quick runs a short version (CI smoke test). Both servers are started on free loopback
# ports and stopped by PID at the end, also on error or Ctrl-C. A server that does not start
# or dies, or a redis-benchmark run that errors, hangs or misses a test, fails the script
# (exit 1, with the reason on stderr): a smoke run cannot pass on no data.
set -euo pipefail
cd "$(dirname "$0")/.."

floe=build/release/app/floe
threads=0
requests=400000
keys=1000000
repeat=3
bench_timeout=1800  # seconds for one redis-benchmark run (it retries forever if a server dies)
only=all
pipelines="1 16"
sizes="3 1000"
while [ $# -gt 0 ]; do
  case "$1" in
    --floe) floe=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --quick) requests=20000; keys=20000; repeat=1; bench_timeout=120; shift ;;
    --only) only=$2; shift 2 ;;
    --pipelines) pipelines=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
runs() { [ "$only" = all ] || [ "$only" = "$1" ]; }  # runs PART: is PART selected?
for tool in redis-server redis-benchmark redis-cli; do
  command -v $tool >/dev/null || { echo "$tool is not installed (tools/install-deps.sh)" >&2; exit 2; }
done
[ -x "$floe" ] || { echo "no floe binary at $floe (build the release preset)" >&2; exit 2; }

tmp=$(mktemp -d)
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
floe_port=$(free_port)
redis_port=$(free_port)
pids=()

# cleanup (of $pids and $tmp, on exit), fail, alive, run_benchmark, csv_rows, median, col, ratio,
# wait_up
source "$(dirname "$0")/lib.sh"

start_servers() {
  "$floe" serve --port "$floe_port" --threads "$threads" --loglevel warning ${FLOE_ARGS:-} &
  pids+=($!); floe_pid=$!
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
  pids+=($!); redis_pid=$!
  wait_up floe "$floe_port" "$floe_pid"
  wait_up redis-server "$redis_port" "$redis_pid"
}
stop_servers() {
  kill "$floe_pid" "$redis_pid" 2>/dev/null || true
  wait "$floe_pid" "$redis_pid" 2>/dev/null || true
}
start_servers

echo "floe: $($floe --version), $(redis-cli -p "$floe_port" info server | tr -d "\r" | grep -E "^io_threads_active") , port $floe_port"
echo "redis: $(redis-server --version | awk '{print $3}'), port $redis_port"
echo "host: $(nproc) cores; redis-benchmark -c 50 -n $requests (-n x4 with -P 16) -r 100000;" \
  "median of $repeat runs"
echo
if runs kv; then
  printf "| test | value | pipeline | floe ops/s | redis ops/s | floe/redis | floe p50/p99 ms | redis p50/p99 ms |\n"
  printf "|---|---|---|---|---|---|---|---|\n"
fi

bench() {  # name pid port size pipeline n -> lines "TEST rps p50 p99"
  run_benchmark "$1" "$2" -p "$3" -c 50 -n "$6" -r 100000 -d "$4" -P "$5" -t set,get,incr,mset
  csv_rows SET GET INCR MSET
}

for size in $sizes; do
  runs kv || break
  for pipe in $pipelines; do
    n=$requests
    [ "$pipe" -gt 1 ] && n=$((requests * 4))
    : >"$tmp/f"; : >"$tmp/r"
    for _ in $(seq "$repeat"); do
      # Interleave floe and redis, so drift on the host affects both alike.
      bench floe "$floe_pid" "$floe_port" "$size" "$pipe" "$n" >>"$tmp/f"
      bench redis-server "$redis_pid" "$redis_port" "$size" "$pipe" "$n" >>"$tmp/r"
    done
    for test in SET GET INCR MSET; do
      frps=$(col "$tmp/f" $test 2); rrps=$(col "$tmp/r" $test 2)
      fp50=$(col "$tmp/f" $test 3); fp99=$(col "$tmp/f" $test 4)
      rp50=$(col "$tmp/r" $test 3); rp99=$(col "$tmp/r" $test 4)
      ratio=$(ratio "$frps" "$rrps")
      printf "| %s | %s B | %s | %.0f | %.0f | **%s** | %s / %s | %s / %s |\n" \
        "$test" "$size" "$pipe" "$frps" "$rrps" "$ratio" "$fp50" "$fp99" "$rp50" "$rp99"
    done
  done
done
# PFADD: one element per command into one HyperLogLog key (Redis's 2^14 x 6-bit layout).
# Also the server's CPU time per command (user + system, from /proc), which shows the work
# each server does when the single-threaded client sets the pace.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pfbench() {  # name port pipeline n pid -> "PFADD rps p50 p99 cpu_us_per_op"
  redis-cli -p "$2" del hll:bench >/dev/null || fail "$1 did not answer DEL"
  local t0 t1 line
  t0=$(cpu_ticks "$5")
  run_benchmark "$1" "$5" -p "$2" -c 50 -n "$4" -r 10000000 -P "$3" PFADD hll:bench __rand_int__
  t1=$(cpu_ticks "$5")
  line=$(csv_rows PFADD | tail -n 1)
  echo "$line $(awk -v d=$((t1 - t0)) -v n="$4" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.3f", d * 1e6 / hz / n }')"
}
if runs pfadd; then
  echo
  echo "| test | value | pipeline | floe ops/s | redis ops/s | floe/redis | floe p50/p99 ms | redis p50/p99 ms | server CPU µs/op floe / redis |"
  echo "|---|---|---|---|---|---|---|---|---|"
fi
for pipe in $pipelines; do
  runs pfadd || break
  n=$requests
  [ "$pipe" -gt 1 ] && n=$((requests * 4))
  : >"$tmp/f"; : >"$tmp/r"
  for _ in $(seq "$repeat"); do
    pfbench floe "$floe_port" "$pipe" "$n" "$floe_pid" >>"$tmp/f"
    pfbench redis-server "$redis_port" "$pipe" "$n" "$redis_pid" >>"$tmp/r"
  done
  frps=$(col "$tmp/f" PFADD 2); rrps=$(col "$tmp/r" PFADD 2)
  fp50=$(col "$tmp/f" PFADD 3); fp99=$(col "$tmp/f" PFADD 4)
  rp50=$(col "$tmp/r" PFADD 3); rp99=$(col "$tmp/r" PFADD 4)
  fcpu=$(col "$tmp/f" PFADD 5); rcpu=$(col "$tmp/r" PFADD 5)
  ratio=$(ratio "$frps" "$rrps")
  printf "| PFADD | 1 element | %s | %.0f | %.0f | **%s** | %s / %s | %s / %s | %s / %s |\n" \
    "$pipe" "$frps" "$rrps" "$ratio" "$fp50" "$fp99" "$rp50" "$rp99" "$fcpu" "$rcpu"
done

runs memory || exit 0
echo
echo "Loading $keys keys with 16-byte values into freshly started servers (redis-cli --pipe) ..."
stop_servers
start_servers
gen() {
  /usr/bin/python3 - "$keys" <<'PY'
import sys
n = int(sys.argv[1])
out = sys.stdout.buffer
val = b"v" * 16
chunk = []
for i in range(n):
    k = b"key:%012d" % i
    chunk.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$16\r\n%s\r\n" % (len(k), k, val))
    if len(chunk) == 10000:
        out.write(b"".join(chunk)); chunk = []
out.write(b"".join(chunk))
PY
}
# Both servers report their resident set size (from /proc/self) in INFO memory.
rss_kb() { redis-cli -p "$1" info memory | tr -d '\r' | awk -F: '/^used_memory_rss:/ {print int($2/1024)}'; }
floe_before=$(rss_kb "$floe_port"); redis_before=$(rss_kb "$redis_port")
gen | redis-cli -p "$floe_port" --pipe >/dev/null
gen | redis-cli -p "$redis_port" --pipe >/dev/null
fk=$(redis-cli -p "$floe_port" dbsize); rk=$(redis-cli -p "$redis_port" dbsize)
[ "$fk" = "$keys" ] || fail "floe holds $fk keys after loading $keys"
[ "$rk" = "$keys" ] || fail "redis-server holds $rk keys after loading $keys"
sleep 1  # let both finish background work (Floe frees retired tables on its next tick)
floe_rss=$(rss_kb "$floe_port"); redis_rss=$(rss_kb "$redis_port")
printf "| server | keys | RSS before (MiB) | RSS after (MiB) | bytes per key (RSS growth) |\n|---|---|---|---|---|\n"
printf "| floe | %s | %.1f | %.1f | %.1f |\n" "$fk" "$(echo "$floe_before/1024" | bc -l)" \
  "$(echo "$floe_rss/1024" | bc -l)" "$(echo "($floe_rss-$floe_before)*1024/$fk" | bc -l)"
printf "| redis | %s | %.1f | %.1f | %.1f |\n" "$rk" "$(echo "$redis_before/1024" | bc -l)" \
  "$(echo "$redis_rss/1024" | bc -l)" "$(echo "($redis_rss-$redis_before)*1024/$rk" | bc -l)"
printf "\nfloe RSS / redis RSS after loading: **%.2f**\n" "$(echo "$floe_rss/$redis_rss" | bc -l)"
