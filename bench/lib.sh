# Shell helpers the redis-benchmark scripts share (resp_vs_redis.sh, cluster_bench.sh). Sourced;
# the caller defines $tmp (a scratch directory), $pids (the servers it starts) and
# $bench_timeout (seconds per run).

# On exit, however it comes: every server started is stopped by PID, the scratch goes.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

fail() { echo "FAILED: $*" >&2; exit 1; }
# alive NAME PID: fails unless the process is still running.
alive() { kill -0 "$2" 2>/dev/null || fail "$1 (pid $2) is no longer running"; }

# run_benchmark NAME PID ARGS...: redis-benchmark --csv with ARGS into $tmp/csv; fails loudly
# if it exits non-zero, times out, reports an error reply, or the server is gone afterwards.
run_benchmark() {
  local name=$1 pid=$2 rc=0
  shift 2
  timeout "$bench_timeout" redis-benchmark --csv "$@" >"$tmp/csv" 2>"$tmp/err" || rc=$?
  if [ "$rc" -ne 0 ] || grep -qi "error" "$tmp/err" "$tmp/csv"; then
    cat "$tmp/err" "$tmp/csv" >&2
    [ "$rc" -eq 124 ] && fail "redis-benchmark against $name timed out after ${bench_timeout}s"
    fail "redis-benchmark against $name failed (exit $rc): redis-benchmark $*"
  fi
  alive "$name" "$pid"
}

# csv_rows TESTS...: "TEST rps p50 p99" for each line of $tmp/csv; fails unless every one of
# TESTS is there with a positive rate.
# redis-benchmark --csv: "test","rps","avg","min","p50","p95","p99","max"
csv_rows() {
  local rows t
  rows=$(tail -n +2 "$tmp/csv" | tr -d '"' | awk -F, '{split($1,a," "); print a[1], $2, $5, $7}')
  for t in "$@"; do
    echo "$rows" | awk -v t="$t" '$1 == t && $2 > 0 {ok=1} END {exit !ok}' ||
      fail "redis-benchmark gave no $t result: $(cat "$tmp/csv")"
  done
  echo "$rows"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# col FILE TEST FIELD: the median of FIELD over the lines of FILE for TEST.
col() { awk -v t="$2" -v f="$3" '$1 == t {print $f}' "$1" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
