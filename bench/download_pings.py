#!/usr/bin/python3
"""How long other clients of an I/O thread wait while a frame downloads as CSV (docs/api.md,
"Made off the I/O thread"), for one or more floe binaries, alternated. Not part of CI.

  bench/download_pings.py FLOE [FLOE ...]

Each binary serves with `--threads 1` (so the download and the PINGs share the one I/O thread).
Per binary and round: three downloads (curl) of a frame of 6 rows of four 15 MB strings while a
client PINGs every 2 ms (the longest and the median PING per download), and three downloads of
a frame of 2,000,000 narrow rows (seconds each). Two rounds. The CSVs go to /tmp/floe_dlpings.
"""
import os
import random
import socket
import statistics
import subprocess
import sys
import time

import redis

DIR = "/tmp/floe_dlpings"
IMPORT = DIR + "/import"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_files():
    os.makedirs(IMPORT, exist_ok=True)
    wide, narrow = IMPORT + "/wide.csv", IMPORT + "/narrow.csv"
    if not os.path.exists(wide):
        s = "x" * (15 << 20)
        with open(wide + ".tmp", "w") as f:
            f.write("id,a,b,c,d\n")
            for i in range(6):
                f.write(f"{i},{s},{s},{s},{s}\n")
        os.rename(wide + ".tmp", wide)
    if not os.path.exists(narrow):
        rng = random.Random(1)
        with open(narrow + ".tmp", "w") as f:
            f.write("id,price,color,name\n")
            for i in range(2_000_000):
                f.write(f"{i},{rng.randrange(100000) / 100},{rng.choice(['red', 'green', 'blue'])},"
                        f"n{rng.randrange(100000)}\n")
        os.rename(narrow + ".tmp", narrow)
    return wide, narrow


def run(binary, wide, narrow):
    port, http = free_port(), free_port()
    p = subprocess.Popen([binary, "serve", "--port", str(port), "--http-port", str(http),
                          "--threads", "1", "--dir", DIR, "--import-dir", IMPORT],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port)
        for _ in range(200):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        for name, path in [("w", wide), ("n", narrow)]:
            job = r.execute_command("FRAME.IMPORT", name, path)
            while dict(zip(*[iter(r.execute_command("JOB.STATUS", job))] * 2))[b"state"] == b"running":
                time.sleep(0.05)
        url = f"localhost:{http}/api/frames/%s/csv"
        times = []
        for _ in range(3):
            t0 = time.time()
            subprocess.run(["curl", "-sf", "-o", "/dev/null", url % "n"], check=True)
            times.append(round(time.time() - t0, 3))
        pings = []
        for _ in range(3):
            lat = []
            dl = subprocess.Popen(["curl", "-sf", "-o", "/dev/null", url % "w"])
            while dl.poll() is None:
                t0 = time.perf_counter()
                r.ping()
                lat.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.002)
            pings.append(f"max {max(lat):.1f} ms, median {statistics.median(lat):.2f} ms "
                         f"({len(lat)} PINGs)")
        print(f"{binary}\n  2M narrow rows: {times} s\n  wide rows: " + "; ".join(pings))
    finally:
        p.terminate()
        p.wait()


if __name__ == "__main__":
    wide, narrow = make_files()
    for _ in range(2):
        for b in sys.argv[1:]:
            run(b, wide, narrow)
