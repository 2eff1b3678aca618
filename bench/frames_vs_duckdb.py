#!/usr/bin/python3
"""Frames against DuckDB on the same CSV in the same run: import (FRAME.IMPORT until its job is
done, against DuckDB's CREATE TABLE AS read_csv) and a 100-group group-by with count, sum, mean,
min, max, sd (FRAME.GROUPBY against GROUP BY), in 3 alternated rounds, medians and ratios
(DuckDB's time over Floe's: above 1, Floe is faster). Not part of CI.

  bench/frames_vs_duckdb.py [ROWS]    (default 10,000,000 rows, ~270 MB; needs
                                       `cd tests/duckdb && npm ci` and build/release/app/floe)
"""
import json
import os
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import conftest  # noqa: E402  (starts floe on a free port, stops it by PID)

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
path = f"/tmp/floe_frames_vs_duckdb_{rows}.csv"
if not os.path.exists(path):
    rng = random.Random(5)
    with open(path + ".tmp", "w") as f:
        f.write("k,x,q\n")
        for _ in range(rows):
            f.write(f"g{rng.randrange(100)},{rng.random()!r},{rng.randrange(1000)}\n")
    os.rename(path + ".tmp", path)
threads = str(os.cpu_count())
ROUNDS = 3  # alternated, Floe then DuckDB; medians reported


def floe_round(r):
    t0 = time.time()
    job = r.execute_command("FRAME.IMPORT", "t", path, "REPLACE")
    status = conftest.wait_job(r, job, timeout=600, poll=0.005)
    assert status["state"] == "done", status
    out = {"import_ms": round((time.time() - t0) * 1000), "groupby_ms": []}
    for _ in range(3):
        t0 = time.time()
        r.execute_command("FRAME.GROUPBY", "t", "g", "KEYS", "k", "AGG", "count", "x", "sum", "x",
                          "mean", "x", "min", "q", "max", "q", "sd", "x", "REPLACE")
        out["groupby_ms"].append(round((time.time() - t0) * 1000))
    return out


def duck_round():
    return json.loads(subprocess.run(
        ["node", os.path.join(ROOT, "tests", "duckdb", "duckdb_bench.mjs"), path, threads],
        capture_output=True, text=True, check=True).stdout)


def median(values):
    return sorted(values)[len(values) // 2]


server = conftest.Floe()
floe, duck = [], []
try:
    r = server.client(decode_responses=True)
    for _ in range(ROUNDS):
        floe.append(floe_round(r))
        duck.append(duck_round())
    info = dict(zip(*[iter(r.execute_command("FRAME.INFO", "t"))] * 2))
finally:
    server.stop()
summary = {
    "floe_import_ms": median([f["import_ms"] for f in floe]),
    "duckdb_import_ms": median([d["import_ms"] for d in duck]),
    "floe_groupby_ms": median([min(f["groupby_ms"]) for f in floe]),
    "duckdb_groupby_ms": median([min(d["groupby_ms"]) for d in duck]),
}
summary["import_ratio"] = round(summary["duckdb_import_ms"] / summary["floe_import_ms"], 2)
summary["groupby_ratio"] = round(summary["duckdb_groupby_ms"] / summary["floe_groupby_ms"], 2)
print(json.dumps({"rows": rows, "bytes": os.path.getsize(path), "threads": threads,
                  "compressed_bytes": info["compressed_bytes"], "raw_bytes": info["raw_bytes"],
                  "rounds": {"floe": floe, "duckdb": duck}, "medians": summary}, indent=1))
