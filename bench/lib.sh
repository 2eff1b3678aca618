# Shell helpers the cluster and redis-benchmark scripts share (resp_vs_redis.sh,
# cluster_bench.sh, replicas_bench.sh, failover.sh). Sourced; the caller defines $tmp (a scratch
# directory), $pids (the servers it starts) and $bench_timeout (seconds per run).

# On exit, however it comes: every server started is stopped by PID, the scratch goes.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

fail() { echo "FAILED: $*" >&2; exit 1; }

# usage SCRIPT: prints the comment block at the top of SCRIPT (its --help).
usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$1"; }

# run_options SCRIPT ARGS...: the options of the cluster scripts: --floe PATH (default the
# release build's), --requests N (200,000), --repeat N (3), --quick (10,000 requests, one run,
# 120 s per run instead of 600), -h; sets $floe, $requests, $repeat and $bench_timeout.
run_options() {
  local script=$1
  shift
  floe=build/release/app/floe
  requests=200000
  repeat=3
  bench_timeout=600
  while [ $# -gt 0 ]; do
    case "$1" in
      --floe) floe=$2; shift 2 ;;
      --requests) requests=$2; shift 2 ;;
      --repeat) repeat=$2; shift 2 ;;
      --quick) requests=10000; repeat=1; bench_timeout=120; shift ;;
      -h|--help) usage "$script"; exit 0 ;;
      *) echo "unknown option $1" >&2; exit 2 ;;
    esac
  done
}

# require TOOLS...: exits 2 unless each tool is installed and $floe is built.
require() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null ||
      { echo "$tool is not installed (tools/install-deps.sh)" >&2; exit 2; }
  done
  [ -x "$floe" ] || { echo "no floe binary at $floe (build the release preset)" >&2; exit 2; }
}
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

# pick_ports R C: R distinct ports free for TCP and UDP on 127.0.0.1, from the kernel, then C
# cluster ports below the ephemeral range, each with the next port free for the member's Raft
# (docs/cluster.md, "Agreed metadata"); one line, space separated.
pick_ports() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import random
import socket
import sys


def free(p, kinds=(socket.SOCK_STREAM, socket.SOCK_DGRAM)):
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


resp, cluster = int(sys.argv[1]), int(sys.argv[2])
out = []
while len(out) < resp:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
    if p not in out and free(p):
        out.append(p)
while len(out) < resp + cluster:
    p = random.randrange(20000, 32000)
    if all(q not in out for q in (p - 1, p, p + 1)) and free(p) and free(p + 1):
        out.append(p)
print(" ".join(map(str, out)))
PY
}

# wait_up NAME PORT PID: returns once it answers PING; fails if it exits or takes 10 s.
wait_up() {
  for _ in $(seq 200); do
    [ "$(redis-cli -p "$2" ping 2>/dev/null)" = PONG ] && return 0
    kill -0 "$3" 2>/dev/null || fail "$1 exited before answering on port $2"
    sleep 0.05
  done
  fail "$1 did not answer PING on port $2 within 10 s"
}

# start_cluster NAME DIR "RESP1 RESP2 RESP3" "CPORT1 CPORT2 CPORT3" [FLAGS...]: starts a 3-member
# cluster on 127.0.0.1 with FLAGS (each member's Raft under DIR), adds its PIDs to $pids, sets
# $cluster_pids, and returns once every member reports cluster_state:ok (fails after 10 s).
start_cluster() {
  local name=$1 dir=$2 i formed
  local -a rp cp
  read -r -a rp <<<"$3"
  read -r -a cp <<<"$4"
  shift 4
  local members="127.0.0.1:${cp[0]},127.0.0.1:${cp[1]},127.0.0.1:${cp[2]}"
  cluster_pids=()
  for i in 0 1 2; do
    "$floe" serve --port "${rp[$i]}" --cluster-port "${cp[$i]}" --cluster "$members" \
      --dir "$dir" --loglevel warning "$@" &
    pids+=($!); cluster_pids+=($!)
  done
  for i in 0 1 2; do wait_up "$name member $i" "${rp[$i]}" "${cluster_pids[$i]}"; done
  for _ in $(seq 200); do
    formed=0
    for i in 0 1 2; do
      redis-cli -p "${rp[$i]}" info cluster | tr -d '\r' | grep -qx 'cluster_state:ok' &&
        formed=$((formed + 1))
    done
    [ "$formed" = 3 ] && return 0
    sleep 0.05
  done
  fail "$name did not form within 10 s"
}
