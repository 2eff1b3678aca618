#!/usr/bin/env bash
# Runs a command on the cores that the rest of the machine leaves idle: at nice 19, in a session
# of its own, so that the caller can end it with every process it started (kill -- -PID, PID
# being this script's). The kernel's autogroups (/proc/sys/kernel/sched_autogroup_enabled) give
# every session an equal share of the cores whatever the nice values of its processes, so the
# new session's autogroup is set to nice 19 as well; without that, a build started this way
# took as much of the cores as the tests beside it.
#   tools/idle.sh cmake --build --preset tsan &
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: tools/idle.sh COMMAND [ARG...]" >&2; exit 2; }
if [ -z "${FLOE_IDLE_SESSION:-}" ]; then
  exec env FLOE_IDLE_SESSION=1 setsid -w "$0" "$@"
fi
echo 19 >/proc/self/autogroup 2>/dev/null || true
exec nice -n 19 "$@"
