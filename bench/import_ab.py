#!/usr/bin/python3
"""FRAME.IMPORT of one CSV by two floe binaries side by side (a change against the build before
it), alternated, each import followed by a group-by as bench/frames_vs_duckdb.py runs them (so
each server hands freed memory back between imports, as there): wall time to job done and the
server's CPU per import, with medians. Not part of CI.

  bench/import_ab.py OLD_FLOE NEW_FLOE [ROUNDS]   (default 5; the CSV is frames_vs_duckdb.py's
                                                 10M-row file, made by that script)
"""
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import conftest  # noqa: E402  (starts floe on a free port, stops it by PID)

if len(sys.argv) < 3:
    sys.exit(__doc__)
PATH = "/tmp/floe_frames_vs_duckdb_10000000.csv"
if not os.path.exists(PATH):
    sys.exit(f"{PATH} is missing: run bench/frames_vs_duckdb.py once first")
bins = {"old": sys.argv[1], "new": sys.argv[2]}
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5


def cpu_ms(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")


servers = {}
for name, path in bins.items():
    conftest.FLOE_BIN = path
    servers[name] = conftest.Floe()
results = {name: {"wall_ms": [], "cpu_ms": []} for name in bins}
try:
    for _ in range(rounds):
        for name, server in servers.items():
            r = server.client(decode_responses=True)
            c0, t0 = cpu_ms(server.proc.pid), time.time()
            job = r.execute_command("FRAME.IMPORT", "t", PATH, "REPLACE")
            status = conftest.wait_job(r, job, timeout=600, poll=0.005)
            assert status["state"] == "done", status
            results[name]["wall_ms"].append(round((time.time() - t0) * 1000))
            results[name]["cpu_ms"].append(cpu_ms(server.proc.pid) - c0)
            r.execute_command("FRAME.GROUPBY", "t", "g", "KEYS", "k", "AGG", "count", "x", "sum",
                              "x", "REPLACE")
finally:
    for server in servers.values():
        server.stop()
for name, v in results.items():
    print(f"{name}: wall {v['wall_ms']} median {statistics.median(v['wall_ms'])} ms; "
          f"cpu {v['cpu_ms']} median {statistics.median(v['cpu_ms'])} ms")
