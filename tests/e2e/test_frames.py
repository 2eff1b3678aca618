"""End to end: frames and jobs over the wire (redis-py and redis-cli), and a differential test of
FRAME.SUMMARY, FRAME.QUANTILE and FRAME.GROUPBY against DuckDB's answers on the same CSV (DuckDB
through npm's @duckdb/node-api: `cd tests/duckdb && npm ci`)."""
import gzip
import json
import math
import os
import random
import shutil
import subprocess
import zlib

import pytest
import redis

from conftest import missing, wait_job

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DUCKDB_DIR = os.path.join(ROOT, "tests", "duckdb")


def pairs(reply):
    """A RESP2 map (a flat array of names and values) as a dict."""
    return dict(zip(reply[0::2], reply[1::2]))


def import_frame(r, name, path, *options):
    job_id = r.execute_command("FRAME.IMPORT", name, path, *options)
    assert isinstance(job_id, int)
    return wait_job(r, job_id)


def test_import_info_head_and_keyspace(r, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,score,team\n" + "".join(
        f"{i},{'' if i % 10 == 0 else i * 0.5},{'ab'[i % 2]}\n" for i in range(1000)))
    status = import_frame(r, "t", str(path))
    assert status["state"] == "done", status
    assert status["rows"] == 1000
    assert float(status["percent"]) == 100
    assert r.type("t") == "frame"
    assert r.execute_command("FRAME.LIST") == ["t"]
    info = pairs(r.execute_command("FRAME.INFO", "t"))
    assert info["rows"] == 1000 and info["columns"] == 3
    assert 0 < info["compressed_bytes"] < info["raw_bytes"]
    vecs = [pairs(v) for v in info["vecs"]]
    assert [v["type"] for v in vecs] == ["integer", "real", "categorical"]
    assert vecs[1]["na"] == 100
    head = r.execute_command("FRAME.HEAD", "t", 3)
    assert head == [["id", "score", "team"], ["0", None, "a"], ["1", "0.5", "b"], ["2", "1", "a"]]
    text = r.execute_command("INFO", "frames")
    assert text["frames"] == 1 and text["jobs_done"] >= 1
    assert r.rename("t", "u")
    assert r.execute_command("FRAME.HEAD", "u", 1)[1] == ["0", None, "a"]
    with pytest.raises(redis.ResponseError, match="DUMP does not support frames"):
        r.dump("u")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.get("u")
    assert r.delete("u") == 1
    assert r.execute_command("FRAME.LIST") == []


def test_import_errors_are_clear(r, tmp_path):
    with pytest.raises(redis.ResponseError, match="cannot read"):
        r.execute_command("FRAME.IMPORT", "t", str(tmp_path / "missing.csv"))
    binary = tmp_path / "x.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(redis.ResponseError, match="not a CSV file"):
        r.execute_command("FRAME.IMPORT", "t", str(binary))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(redis.ResponseError, match="no files"):
        r.execute_command("FRAME.IMPORT", "t", str(empty_dir))
    good = tmp_path / "g.csv"
    good.write_text("a\n1\n")
    assert import_frame(r, "t", str(good))["state"] == "done"
    with pytest.raises(redis.ResponseError, match="target key exists"):
        r.execute_command("FRAME.IMPORT", "t", str(good))
    assert import_frame(r, "t", str(good), "REPLACE")["state"] == "done"
    bad_gzip = tmp_path / "bad.csv.gz"
    bad_gzip.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    status = import_frame(r, "z", str(bad_gzip))
    assert status["state"] == "failed" and status["error"]
    assert r.exists("z") == 0


def test_directory_of_gzip_files_and_bad_rows(r, tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    for part in range(3):
        with gzip.open(d / f"p{part}.csv.gz", "wt") as f:
            f.write("k,v\n")
            for i in range(500):
                f.write(f"{part},{i}\n")
            if part == 1:
                f.write("1,2,3\n")  # a ragged row: rejected, with its line
    status = import_frame(r, "t", str(d))
    assert status["state"] == "done", status
    assert status["rows"] == 1500
    assert "1 rejected rows" in status["result"] and "line 502" in status["result"]


def test_hostile_import_files(r, tmp_path):
    """Issue 9's review of the import path: an overlong header, a huge name, a FIFO or a link in
    a directory, integers past 2^53: each a clear error or a counted bad value, never a copy of
    the whole line, a read outside import-dir, or a blocked job; the node keeps serving."""
    long_header = tmp_path / "long_header.csv"
    long_header.write_text('"a""' + "x" * (70 << 20) + '",b\n1,2\n')
    status = import_frame(r, "h", str(long_header), "HEADER", "yes")
    assert status["state"] == "failed" and "longer than" in status["error"], status
    long_name = tmp_path / "long_name.csv"
    long_name.write_text("n" * 5000 + ",b\n1,2\n")
    status = import_frame(r, "h", str(long_name), "HEADER", "yes")
    assert status["state"] == "failed" and "name is longer" in status["error"], status
    d = tmp_path / "parts"
    d.mkdir()
    (d / "a.csv").write_text("k,v\n1,2\n")
    os.mkfifo(d / "b.csv")
    with pytest.raises(redis.ResponseError, match="not a regular file"):
        r.execute_command("FRAME.IMPORT", "t", str(d))
    os.unlink(d / "b.csv")
    os.symlink(d / "a.csv", d / "c.csv")
    with pytest.raises(redis.ResponseError, match="symbolic link"):
        r.execute_command("FRAME.IMPORT", "t", str(d))
    os.unlink(d / "c.csv")
    big = tmp_path / "big_ints.csv"
    big.write_text("n\n9007199254740993\n42\n")
    status = import_frame(r, "b", str(big), "TYPES", "int")
    assert status["state"] == "done", status
    assert "1 bad values" in status["result"] and "2^53" in status["result"], status
    assert r.ping()


def test_cancel_leaves_no_frame(r, tmp_path):
    path = tmp_path / "big.csv"
    rng = random.Random(3)
    with open(path, "w") as f:
        f.write("a,b,c\n")
        for i in range(600_000):
            f.write(f"{i},{rng.random()},{rng.randrange(1000)}\n")
    job_id = r.execute_command("FRAME.IMPORT", "t", str(path))
    try:
        assert r.execute_command("JOB.CANCEL", job_id) == "OK"
    except redis.ResponseError as e:  # it finished first
        assert "already finished" in str(e)
    status = wait_job(r, job_id)
    # Either way the outcome is whole: cancelled and no frame, or done and the whole frame.
    if status["state"] == "cancelled":
        assert r.exists("t") == 0
    else:
        assert status["state"] == "done"
        assert pairs(r.execute_command("FRAME.INFO", "t"))["rows"] == 600_000
    listed = r.execute_command("JOB.LIST")
    assert [j[0] for j in listed].count(job_id) == 1


def test_maxmemory_refuses_an_import_cleanly(make_floe, tmp_path):
    server = make_floe("--maxmemory", "2mb")
    c = server.client(decode_responses=True)
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 3}\n" for i in range(300_000)))
    with pytest.raises(redis.ResponseError, match="^OOM"):
        c.execute_command("FRAME.IMPORT", "t", str(path))
    assert c.exists("t") == 0
    assert c.ping()


def test_hostile_arguments(r, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    assert import_frame(r, "t", str(path))["state"] == "done"
    for args, pattern in [
        (("FRAME.HEAD", "t", "1000000"), "between 0 and 1000"),
        (("FRAME.HEAD", "t", "-9223372036854775808"), "between 0 and 1000"),
        (("FRAME.SUMMARY", "t", "a", "BINS", "99999999999"), "BINS"),
        (("FRAME.SUMMARY", "t", "18446744073709551616"), "no such column"),
        (("FRAME.QUANTILE", "t", "a", "-0.1"), "probability"),
        (("FRAME.QUANTILE", "t", "a", "inf"), "probability"),
        (("JOB.STATUS", "18446744073709551616"), "positive integer"),
        (("JOB.CANCEL", "abc"), "positive integer"),
        (("FRAME.IMPORT", "x", str(path), "TYPES", "," * 20000), "TYPES"),
        (("FRAME.IMPORT", "x", str(path), "SEP", '"'), "SEP"),
    ]:
        with pytest.raises(redis.ResponseError, match=pattern):
            r.execute_command(*args)
    assert r.ping()


def test_redis_cli_imports_and_reads(floe_server, tmp_path):
    cli = shutil.which("redis-cli")
    if cli is None:
        missing("redis-cli is not installed")
    path = tmp_path / "t.csv"
    path.write_text("x\n1\n2\n3\n4\n")
    base = [cli, "-p", str(floe_server.port)]
    job_id = subprocess.run(base + ["FRAME.IMPORT", "cli", str(path), "REPLACE"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert job_id.isdigit()
    wait_job(floe_server.client(decode_responses=True), int(job_id))
    out = subprocess.run(base + ["FRAME.QUANTILE", "cli", "x", "0.5"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "2.5"


def test_analytics_replies_keep_the_connections_order(make_floe, tmp_path):
    """docs/frame.md A1-A2: the analytics run off the I/O thread, their replies deferred. With
    one I/O thread, commands pipelined after a FRAME.GROUPBY run only once it is done (the HEAD
    sees its frame) and every reply comes in command order; a second client is served too."""
    from conftest import RawConn
    node = make_floe("--threads", "1")
    r = node.client(decode_responses=True)
    path = tmp_path / "t.csv"
    path.write_text("id,price,color\n" + "".join(
        f"{i},{i * 0.25},{'rgb'[i % 3]}\n" for i in range(20000)))
    assert import_frame(r, "t", str(path), "TYPES", ",,cat")["state"] == "done"
    a = RawConn(node.port)
    b = RawConn(node.port)
    try:
        for _ in range(3):
            a.send("FRAME.GROUPBY", "t", "g", "KEYS", "color", "AGG", "count", "id", "REPLACE")
            a.send("FRAME.HEAD", "g", 5)
            a.send("FRAME.SUMMARY", "t", "price")
            a.send("PING")
        assert b.call("PING") == b"+PONG\r\n"
        for _ in range(3):
            assert a.read_reply() == b":3\r\n"
            assert a.read_reply().startswith(b"*4\r\n")  # a header and the 3 groups
            assert a.read_reply().startswith(b"*22\r\n")
            assert a.read_reply() == b"+PONG\r\n"
    finally:
        a.close()
        b.close()
    info = r.info("errorstats")
    assert not any(k.startswith("errorstat_") for k in info), info
    assert r.info("stats")["errors_internal"] == 0


# ---- the differential test against DuckDB ----

def make_csv(path, seed, rows):
    """Integers, decimals, doubles, a 100-level categorical, NAs (empty fields) in each."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write("id,qty,price,x,grp\n")
        for i in range(rows):
            qty = "" if rng.random() < 0.1 else str(rng.randint(-500, 5000))
            price = "" if rng.random() < 0.15 else f"{rng.randint(0, 100000) / 100:.2f}"
            x = "" if rng.random() < 0.05 else repr(rng.gauss(0, 1000))
            grp = "" if rng.random() < 0.03 else f"g{rng.randrange(100):03d}"
            f.write(f"{i},{qty},{price},{x},{grp}\n")


def duckdb_answers(queries, tmp_path):
    node = shutil.which("node")
    if node is None:
        missing("node is not installed (tools/install-deps.sh)")
    if not os.path.isdir(os.path.join(DUCKDB_DIR, "node_modules", "@duckdb", "node-api")):
        missing("DuckDB's node package is not installed: cd tests/duckdb && npm ci")
    qfile = tmp_path / "queries.json"
    qfile.write_text(json.dumps(queries))
    out = subprocess.run([node, os.path.join(DUCKDB_DIR, "duckdb_answers.mjs"), str(qfile)],
                         capture_output=True, text=True, timeout=300, cwd=DUCKDB_DIR)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def close(a, b, rel):
    """Floating results computed in different orders: equal within `rel` of their size."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel)


PROBS = [0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1]


def test_frames_match_duckdb(r, tmp_path):
    seed = int(os.environ.get("FLOE_SEED", random.randrange(1 << 30)))
    print(f"seed {seed}")
    path = tmp_path / "d.csv"
    make_csv(path, seed, 80_000)
    status = import_frame(r, "d", str(path))
    assert status["state"] == "done", status
    types = [pairs(v)["type"] for v in pairs(r.execute_command("FRAME.INFO", "d"))["vecs"]]
    assert types == ["integer", "integer", "real", "real", "categorical"]

    table = (f"(SELECT * FROM read_csv('{path}', header=true, columns={{'id': 'BIGINT', "
             "'qty': 'BIGINT', 'price': 'DOUBLE', 'x': 'DOUBLE', 'grp': 'VARCHAR'}))")
    queries = {}
    for col in ["qty", "price", "x"]:
        queries[f"summary_{col}"] = (
            f"SELECT count({col})::DOUBLE AS n, (count(*) - count({col}))::DOUBLE AS na, "
            f"min({col})::DOUBLE AS mn, max({col})::DOUBLE AS mx, avg({col})::DOUBLE AS mean, "
            f"stddev_samp({col})::DOUBLE AS sd, count(DISTINCT {col})::DOUBLE AS distinct_n "
            f"FROM {table}")
        queries[f"quantile_{col}"] = "SELECT " + ", ".join(
            f"quantile_cont({col}, {p})::DOUBLE AS q{i}" for i, p in enumerate(PROBS)) + \
            f" FROM {table}"
    queries["groupby"] = (
        "SELECT grp, count(*)::DOUBLE AS n, sum(price)::DOUBLE AS s, avg(price)::DOUBLE AS m, "
        "min(qty)::DOUBLE AS mn, max(qty)::DOUBLE AS mx, stddev_samp(x)::DOUBLE AS sd, "
        "count(DISTINCT price)::DOUBLE AS dp "
        f"FROM {table} GROUP BY grp")
    want = duckdb_answers(queries, tmp_path)

    def num(v):
        return None if v is None else float(v)

    for col in ["qty", "price", "x"]:
        s = pairs(r.execute_command("FRAME.SUMMARY", "d", col))
        w = want[f"summary_{col}"][0]
        assert s["count"] == w["n"] and s["na"] == w["na"], col
        assert num(s["min"]) == w["mn"] and num(s["max"]) == w["mx"], col
        # Means and deviations are floating sums in another order: 1e-9 of their size.
        assert close(num(s["mean"]), w["mean"], 1e-9), (col, s["mean"], w["mean"])
        assert close(num(s["sd"]), w["sd"], 1e-9), (col, s["sd"], w["sd"])
        # The distinct count is a HyperLogLog estimate (2^14 registers: ~0.8% error).
        assert abs(s["cardinality"] - w["distinct_n"]) <= 0.03 * w["distinct_n"] + 2, col
        assert sum(s["histogram"]) == s["count"]
        got = [num(v) for v in r.execute_command("FRAME.QUANTILE", "d", col, *PROBS)]
        wq = want[f"quantile_{col}"][0]
        for i, p in enumerate(PROBS):
            # Exact ranks; the interpolation between them may round differently: 1e-12.
            assert close(got[i], wq[f"q{i}"], 1e-12), (col, p, got[i], wq[f"q{i}"])

    groups = r.execute_command("FRAME.GROUPBY", "d", "g", "KEYS", "grp", "AGG", "count", "id",
                               "sum", "price", "mean", "price", "min", "qty", "max", "qty",
                               "sd", "x", "distinct", "price")
    assert groups == len(want["groupby"]) == 101  # 100 levels and NA
    head = r.execute_command("FRAME.HEAD", "g", 1000)
    assert head[0] == ["grp", "count", "sum_price", "mean_price", "min_qty", "max_qty", "sd_x",
                       "distinct_price"]
    got = {row[0]: row[1:] for row in head[1:]}
    for w in want["groupby"]:
        g = got[w["grp"]]
        assert float(g[0]) == w["n"], w["grp"]
        assert close(num(g[1]), w["s"], 1e-9), (w["grp"], g[1], w["s"])
        assert close(num(g[2]), w["m"], 1e-9), (w["grp"], g[2], w["m"])
        assert num(g[3]) == w["mn"] and num(g[4]) == w["mx"], w["grp"]
        assert close(num(g[5]), w["sd"], 1e-9), (w["grp"], g[5], w["sd"])
        # A HyperLogLog a group (2^11 registers: ~2.3% error; exact below ~160 values).
        assert abs(float(g[6]) - w["dp"]) <= 0.08 * w["dp"] + 1, (w["grp"], g[6], w["dp"])


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_a_gzip_bomb_is_charged_before_it_inflates(make_floe, tmp_path):
    """A 1 MB gzip file inflating to 1 GiB reached 1.6 GB RSS under maxmemory 200mb: it was
    inflated whole before the import charged it. Now each MiB is charged before it is
    inflated, and the import fails with OOM near the limit."""
    node = make_floe("--maxmemory", "64mb")
    path = tmp_path / "bomb.csv.gz"
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"1,2\n" * (1 << 20)
    with open(path, "wb") as f:
        for _ in range(64):  # 256 MiB inflated
            f.write(z.compress(block))
        f.write(z.flush())
    r = node.client(decode_responses=True)
    before = peak_rss_kb(node.proc.pid)
    status = import_frame(r, "bomb", str(path))
    assert status["state"] == "failed" and "OOM" in status["error"], status
    grown = peak_rss_kb(node.proc.pid) - before
    assert grown < 160 * 1024, f"peak RSS grew by {grown} kB"
    assert r.ping() and r.exists("bomb") == 0


# ---- derived frames: FRAME.SELECT, FRAME.FILTER, FRAME.EXPORT ----

def read_rows(path):
    """The rows of a CSV as dicts of text ('' for an empty field)."""
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_select_filter_export_match_python(r, tmp_path):
    seed = int(os.environ.get("FLOE_SEED", random.randrange(1 << 30)))
    print(f"seed {seed}")
    path = tmp_path / "d.csv"
    make_csv(path, seed, 30_000)
    assert import_frame(r, "d", str(path))["state"] == "done"
    src = read_rows(path)

    # FILTER against the same conditions over the same CSV in Python (NA never matches).
    def keeps(row):
        return (row["qty"] != "" and int(row["qty"]) > 100 and row["grp"] != ""
                and row["grp"] != "g050")
    want = [row for row in src if keeps(row)]
    n = r.execute_command("FRAME.FILTER", "d", "f", "WHERE", "qty", ">", "100", "AND", "grp",
                          "!=", "g050")
    assert n == len(want)
    assert r.execute_command("FRAME.FILTER", "d", "na", "WHERE", "price", "ISNA") == \
        sum(1 for row in src if row["price"] == "")
    assert r.execute_command("FRAME.FILTER", "d", "le", "WHERE", "x", "<=", "-250.5", "AND",
                             "price", "NOTNA") == \
        sum(1 for row in src if row["x"] != "" and float(row["x"]) <= -250.5 and row["price"])

    # EXPORT the filtered frame; every value reads back as the source had it.
    out = tmp_path / "f.csv"
    status = wait_job(r, r.execute_command("FRAME.EXPORT", "f", str(out)))
    assert status["state"] == "done", status
    assert status["rows"] == len(want) and status["percent"] == "100"
    # Private to the node's user, as uploads are (it was 0644: readable by every local user).
    assert out.stat().st_mode & 0o777 == 0o600
    got = read_rows(out)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["id"] == w["id"] and g["qty"] == w["qty"] and g["grp"] == w["grp"]
        for col in ["price", "x"]:
            assert (g[col] == "") == (w[col] == ""), (col, g, w)
            if w[col]:
                assert float(g[col]) == float(w[col]), (col, g[col], w[col])

    # Imported back: the same frame (FRAME.INFO, HEAD and SUMMARY agree).
    assert import_frame(r, "back", str(out))["state"] == "done"
    a, b = pairs(r.execute_command("FRAME.INFO", "f")), pairs(r.execute_command("FRAME.INFO",
                                                                                 "back"))
    for key in ["rows", "columns", "chunks", "raw_bytes"]:
        assert a[key] == b[key], key
    va, vb = [pairs(v) for v in a["vecs"]], [pairs(v) for v in b["vecs"]]
    # FILTER keeps the source's domain (g050 with no row left); the import sees 99 levels.
    assert va[4].pop("levels") == 100 and vb[4].pop("levels") == 99
    assert va == vb
    assert r.execute_command("FRAME.HEAD", "f", 1000) == r.execute_command("FRAME.HEAD", "back",
                                                                            1000)
    for col in ["qty", "price", "x"]:
        assert r.execute_command("FRAME.SUMMARY", "f", col) == \
            r.execute_command("FRAME.SUMMARY", "back", col)

    # SELECT: those columns, in that order, the rows unchanged.
    assert r.execute_command("FRAME.SELECT", "d", "s", "COLS", "grp", "0") == 2
    head = r.execute_command("FRAME.HEAD", "s", 50)
    assert head[0] == ["grp", "id"]
    for row, w in zip(head[1:], src):
        assert row == [w["grp"] or None, w["id"]]
    r.execute_command("FRAME.DROP", "d")
    assert r.execute_command("FRAME.HEAD", "s", 50) == head  # shared chunks outlive the source


def test_derived_frames_refuse_hostile_arguments(r, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,x\n3,,y\n")
    assert import_frame(r, "t", str(path))["state"] == "done"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    os.symlink(victim, tmp_path / "link.csv")
    os.symlink("/etc", tmp_path / "etc")
    for args, pattern in [
        (("FRAME.SELECT", "t", "s", "COLS", "a", "a"), "given twice"),
        (("FRAME.SELECT", "t", "s", "COLS", *(["a"] * 100_000)), "more columns"),
        (("FRAME.SELECT", "t", "s", "COLS", "18446744073709551616"), "no such column"),
        (("FRAME.SELECT", "t", "s", "COLS", "-1"), "no such column"),
        (("FRAME.FILTER", "t", "f", "WHERE", "a", "LIKE", "1"), "unknown operator"),
        (("FRAME.FILTER", "t", "f", "WHERE", "c", ">", "x"), "takes =, !=, ISNA and NOTNA"),
        (("FRAME.FILTER", "t", "f", "WHERE", "a", "=", "1e999"), "compared with a number"),
        (("FRAME.FILTER", "t", "f", "WHERE", *(["a", "ISNA", "AND"] * 100_000), "a", "ISNA"),
         "at most 16 conditions"),
        (("FRAME.EXPORT", "t", "/etc/passwd", "REPLACE"), "outside export-dir"),
        (("FRAME.EXPORT", "t", str(tmp_path / ".." / ".." / ".." / ".." / "etc" / "x")),
         "outside export-dir"),
        (("FRAME.EXPORT", "t", str(tmp_path / "etc" / "x.csv")), "outside export-dir"),
        (("FRAME.EXPORT", "t", str(tmp_path / "link.csv"), "REPLACE"), "symbolic link"),
        (("FRAME.EXPORT", "t", str(path)), "exists"),
        (("FRAME.EXPORT", "t", str(tmp_path)), "not a regular file"),
        (("FRAME.EXPORT", "t", "a\0b"), "bad path"),
    ]:
        with pytest.raises(redis.ResponseError, match=pattern):
            r.execute_command(*args)
    assert victim.read_text() == "keep"
    assert not os.path.exists("/etc/x")
    assert sorted(os.listdir(tmp_path)) == ["etc", "link.csv", "t.csv", "victim.txt"]
    assert r.ping()
