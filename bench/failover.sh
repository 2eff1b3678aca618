#!/usr/bin/env bash
# Failover time (issue 11's goal: kill -9 of an owner to its slots served again within 3 s with
# default settings; docs/membership.md O8): a 3-member cluster started with --replicas 1 (the
# defaults otherwise), 200 keys of one member that does not lead the Raft metadata written
# through another; that member is killed with kill -9, and a client polls through the other
# member until every key reads back its acknowledged value ("reads") and then until a write of
# each is acknowledged ("writes"). Prints both times from the kill, and the same for the member
# that leads the metadata (an election first); medians of --repeat runs (default 3), each on a
# new cluster. The baseline printed with them: the ownership lease (1 s) and this host's
# round trip of a SET through a member to another member's key (redis-cli, median of 200).
#
#   bench/failover.sh [--floe PATH] [--repeat N] [--quick]
#
# Every server is started on free loopback ports and stopped by PID at the end, also on error
# or Ctrl-C; the script fails if a cluster does not form, a key is lost or a time passes 60 s.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
pids=()
# cleanup (of $pids and $tmp, on exit), fail, usage, run_options, require, pick_ports,
# wait_up, start_cluster
source "$(dirname "$0")/lib.sh"
run_options "$0" "$@"
require redis-cli /usr/bin/python3

# one_run LABEL LEADER(yes|no) FILE: appends "reads writes role" (seconds) to FILE (the
# servers' own output goes to this function's stdout).
one_run() {
  local dir=$tmp/$RANDOM
  local -a ports
  read -r -a ports <<<"$(pick_ports 3 3)"
  start_cluster "$1" "$dir" "${ports[*]:0:3}" "${ports[*]:3:3}" --replicas 1
  local -a cp=("${cluster_pids[@]}")
  /usr/bin/python3 - "${ports[0]}" "${ports[1]}" "${ports[2]}" "$2" "${cp[@]}" "$3" <<'EOF'
import os, signal, sys, time
import redis
ports, want_leader, pids = [int(p) for p in sys.argv[1:4]], sys.argv[4] == "yes", sys.argv[5:8]
cs = [redis.Redis(port=p, socket_timeout=30) for p in ports]
roles = [c.info("cluster").get("meta_role") for c in cs]
# The victim leads the metadata or not, as asked; the client reads through another member.
v = [i for i in range(3) if (roles[i] == "leader") == want_leader][0]
via = cs[1 if v == 0 else 0]
owner = {}
for start, end, first, *_ in via.execute_command("CLUSTER", "SLOTS"):
    for s in range(start, end + 1):
        owner[s] = int(first[1])
keys, k = [], 0
while len(keys) < 200:
    key = f"fo{k}"
    k += 1
    if owner[via.execute_command("CLUSTER", "KEYSLOT", key)] == ports[v]:
        keys.append(key)
for key in keys:
    assert via.set(key, "v-" + key)
t0 = time.monotonic()
os.kill(int(pids[v]), signal.SIGKILL)


def until(check):
    while time.monotonic() - t0 < 60:
        try:
            if check():
                return time.monotonic() - t0
        except redis.RedisError:
            pass
        time.sleep(0.02)
    sys.exit("not served again within 60 s")


reads = until(lambda: all(via.get(key) == ("v-" + key).encode() for key in keys))
writes = until(lambda: all(via.set(key, "w-" + key) for key in keys))
for key in keys:
    assert via.get(key) == ("w-" + key).encode(), key
with open(sys.argv[8], "a") as out:
    out.write(f"{reads:.2f} {writes:.2f} {roles[v]}\n")
EOF
  for p in "${cp[@]}"; do kill "$p" 2>/dev/null || true; done
}

# The baseline: a SET through member 0 to a key another member owns, median of 200 round trips.
baseline() {
  local -a ports
  read -r -a ports <<<"$(pick_ports 3 3)"
  start_cluster "baseline" "$tmp/base" "${ports[*]:0:3}" "${ports[*]:3:3}" --replicas 1
  /usr/bin/python3 - "${ports[0]}" <<'EOF'
import statistics, sys, time
import redis
c = redis.Redis(port=int(sys.argv[1]))
times = []
for i in range(200):
    t = time.monotonic()
    c.set(f"base{i}", "v")
    times.append(time.monotonic() - t)
print(f"{statistics.median(times) * 1000:.3f}")
EOF
  for p in "${cluster_pids[@]}"; do kill "$p" 2>/dev/null || true; done
}

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo "floe: $($floe --version); host: $(nproc) cores; 3 members on 127.0.0.1, --replicas 1"
echo "baseline: SET round trip through a member to another's key, median of 200:" \
  "$(baseline) ms; ownership lease 1000 ms"
echo
printf "| killed member | reads served again, s | writes served again, s |\n|---|---|---|\n"
for lead in no yes; do
  : >"$tmp/runs"
  for _ in $(seq "$repeat"); do one_run "failover ($lead)" "$lead" "$tmp/runs" >/dev/null; done
  [ "$(wc -l <"$tmp/runs")" -eq "$repeat" ] || fail "a failover run gave no figures"
  role=$(awk '{print $3}' "$tmp/runs" | sort | uniq -c | sort -rn | awk 'NR == 1 {print $2}')
  printf "| a %s (median of %s) | %s | %s |\n" "$role" "$repeat" \
    "$(awk '{print $1}' "$tmp/runs" | median)" "$(awk '{print $2}' "$tmp/runs" | median)"
done
