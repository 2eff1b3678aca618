"""Helpers of the hostile tests of the cluster's cached copies (test_cluster_cache_hostile.py,
test_cluster_cache_faults.py): clusters, INFO counters, freezing a process whole, priming copies,
comparing every node's reads with the home's, and racing readers against writers."""
import os
import random
import signal
import threading
import time

import pytest

from floe_cluster import ClusterFactory, Conn, RespError, Timeout, freeze

HOSTS3 = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
LOSSY = "drop=0.05,duplicate=0.02,max_delay_us=2000"


@pytest.fixture
def clusters():
    factory = ClusterFactory()
    yield factory
    problems = factory.close()
    assert not problems, "\n".join(problems)


def make3(factory, password=None, **kw):
    return factory.make(3, hosts=HOSTS3, same_ports=True, **kw).wait_formed(password=password)


def info(node, conn=None, password=None):
    own = conn is None
    if own:
        conn = Conn(node.host, node.port, timeout=10)
        if password is not None:
            assert conn.call("AUTH", password) == b"OK"
    try:
        text = conn.call("INFO", "cluster")
    finally:
        if own:
            conn.close()
    assert isinstance(text, bytes), text
    out = {}
    for line in text.decode().splitlines():
        if ":" in line and not line.startswith("#"):
            name, value = line.split(":", 1)
            out[name] = value
    return out


def counters(c, names=("cache_hits", "cache_misses", "invalidations_sent", "lease_waits"),
             password=None, skip=()):
    total = dict.fromkeys(names, 0)
    for i, node in enumerate(c.nodes):
        if i in skip:
            continue
        fields = info(node, password=password)
        for name in names:
            total[name] += int(fields.get(name, "0"))
    return total


def tag_homed_at(c, index, prefix):
    """A hash tag whose slot is homed at member `index`."""
    return c.keys_at(index, 1, prefix=prefix)[0]


# The reads that may be served from a copy, with the key's place marked by None.
READS = [
    ["GET", None], ["STRLEN", None], ["GETRANGE", None, "1", "3"], ["GETRANGE", None, "-4", "-1"],
    ["EXISTS", None], ["TYPE", None], ["PEXPIRETIME", None], ["EXPIRETIME", None], ["MGET", None],
    ["GETRANGE", None, "-9223372036854775808", "9223372036854775807"],
    ["GETRANGE", None, "5", "2"], ["GETRANGE", None, "0", "-1"], ["EXISTS", None, None],
    ["MGET", None, None], ["TTL", None], ["GETRANGE", None, "a", "1"],
]


def reads_of(key):
    return [[key if a is None else a for a in r] for r in READS]


def prime(conns, home, keys, times=2):
    """Reads every key through every node but its home, so that each holds a copy."""
    for i, conn in enumerate(conns):
        for k in keys:
            if i == home[k]:
                continue
            for _ in range(times):
                conn.call("GET", k)


def differences(c, conns, key, label):
    """Every read of READS through every node, compared byte for byte with its home's reply
    (the home reads its own store). Each non-home node is asked twice: the first read may
    fetch a copy, the second is served from it."""
    home = c.nodes.index(c.home(key))
    out = []
    for args in reads_of(key):
        want = conns[home].call_raw(*args)
        for i, conn in enumerate(conns):
            if i == home:
                continue
            for attempt in range(2):
                got = conn.call_raw(*args)
                if got != want:
                    out.append(f"{label}: {args} via node {i} (read {attempt + 1}) answered "
                               f"{got!r}, its home (node {home}) {want!r}")
    return out


# ---- every path that changes a string, each through every node ------------------------------

def write_paths(k, k2, kx):
    """Sequences of commands; each changes `k` (homed at the test's home), `k2` (same slot) or
    both; kx is on another home (split DEL/UNLINK)."""
    now = int(time.time() * 1000)
    return [
        [["SET", k, "hello world"]],
        [["SET", k, "v1", "EX", "100"]],
        [["SETEX", k, "200", "v2"]],
        [["PSETEX", k, "300000", "v3"]],
        [["SET", k, "v4", "KEEPTTL"]],
        [["SETNX", k, "never"]],
        [["SET", k, "v5", "XX", "GET"]],
        [["SET", k, "v6", "NX"]],
        [["SETRANGE", k, "1", "XYZ"]],
        [["SETRANGE", k, "40", "far"]],
        [["APPEND", k, "-tail"]],
        [["SET", k, "10"]],
        [["INCR", k]],
        [["INCRBY", k, "5"]],
        [["DECR", k]],
        [["DECRBY", k, "3"]],
        [["INCRBYFLOAT", k, "1.5"]],
        [["GETSET", k, "7"]],
        [["GETEX", k, "EX", "100"]],
        [["GETEX", k, "PERSIST"]],
        [["GETEX", k, "PXAT", str(now + 500000)]],
        [["PERSIST", k]],
        [["EXPIRE", k, "1000"]],
        [["PERSIST", k]],
        [["PEXPIRE", k, "900000"]],
        [["PEXPIREAT", k, str(now + 800000)]],
        [["EXPIREAT", k, str(now // 1000 + 700)]],
        [["EXPIRE", k, "5000", "GT"]],
        [["GETDEL", k]],
        [["SET", k, "back"]],
        [["SET", k2, "renamed"], ["RENAME", k2, k]],
        [["SET", k2, "nx"], ["RENAMENX", k2, k]],
        [["DEL", k], ["RENAMENX", k2, k]],
        [["MSET", k, "m1", k2, "m2"]],
        [["MSET", k2, "m3", k, "m4"]],
        [["MSETNX", k, "n1", k2, "n2"]],
        [["DEL", k2], ["MSETNX", k2, "n3", k, "n4"]],
        [["DEL", kx, k]],
        [["SET", k, "u"], ["UNLINK", kx, k2, k]],
        [["SET", k, "x"], ["EXPIRE", k, "0"]],
        [["SET", k, "y"], ["PEXPIREAT", k, "1"]],
        [["SET", k, "z"], ["SET", k, "w", "PXAT", "1"]],
        [["SET", k, "t1"], ["MULTI"], ["SET", k, "t2"], ["APPEND", k, "!"], ["EXEC"]],
        [["MULTI"], ["INCR", k2], ["GETDEL", k], ["SET", k, "t3"], ["EXEC"]],
        [["SET", k, "f"], ["FLUSHALL"]],
        [["SET", k, "g"], ["FLUSHDB"]],
        [["SET", k, "h"], ["FLUSHALL", "SYNC"]],
        [["SET", k, "s"], ["DEL", k2], ["PFADD", k2, "a"], ["HLL.UNION", k, k2]],
        [["SET", k, "s2"], ["PFMERGE", k, k2]],
        [["SET", k, "s3"], ["SET", k2, "s4"], ["PFMERGE", k2]],
        [["SET", k, "s"], ["DEL", k], ["PFADD", k, "a", "b"]],
        [["DEL", k], ["SET", k, "string again"]],
        [["MULTI"], ["DEL", k], ["PFADD", k, "x"], ["EXEC"]],
        [["DEL", k], ["HLL.CREATE", k]],
        [["DEL", k], ["SET", k, "str2"]],
        [["DEL", k], ["BF.ADD", k, "a"]],
        [["DEL", k], ["SET", k, "str3"]],
        [["DEL", k], ["CMS.INITBYDIM", k, "10", "3"]],
        [["DEL", k], ["SET", k, "final"]],
    ]


class Race:
    """Writers (one per key, through random nodes, by many commands) store increasing numbers;
    readers on every node check that a read started after a write's reply returns that number
    or a later one, and never one not yet written."""

    def __init__(self, c, keys, tolerate_unknown):
        self.c, self.keys = c, keys
        self.acked = {k: 0 for k in keys}    # the last number whose write replied
        self.started = {k: 0 for k in keys}  # the last number a write was sent for
        self.tolerate_unknown = tolerate_unknown
        self.errors = []
        self.stale = []
        self.reads = 0
        self.stop = threading.Event()
        self.mu = threading.Lock()
        self.dead = set()  # members killed on purpose
        self.go = threading.Event()  # cleared: writers wait before their next write
        self.go.set()
        self.writing = 0  # writes sent and not yet answered

    def fail(self, text):
        with self.mu:
            self.errors.append(text)

    def writer(self, key, seed):
        rng = random.Random(seed)
        conns = {}
        sibling = key + "-sib"
        n = 0
        try:
            while not self.stop.is_set():
                self.go.wait()
                if self.stop.is_set():
                    break
                via = rng.choice([i for i in range(3) if i not in self.dead])
                if via not in conns:
                    node = self.c[via]
                    conns[via] = Conn(node.host, node.port, timeout=20)
                conn = conns[via]
                n += 1
                self.started[key] = n
                kind = rng.choice(["set", "incr", "incrby", "getset", "setex", "multi", "mset",
                                   "incrbyfloat", "setxx", "psetex", "pipeline"])
                with self.mu:
                    self.writing += 1
                try:
                    ok = self.write(conn, kind, key, sibling, n)
                except (Timeout, ConnectionError, OSError) as e:
                    ok = f"{type(e).__name__}: {e}"
                finally:
                    with self.mu:
                        self.writing -= 1
                if ok is not True:
                    if via in self.dead or (self.tolerate_unknown and "CLUSTERDOWN" in str(ok)):
                        return  # an unknown outcome: stop writing this key, reads still check
                    self.fail(f"write {kind} {key}={n} via node {via}: {ok}")
                    return
                self.acked[key] = n
        finally:
            for conn in conns.values():
                conn.close()

    @staticmethod
    def write(conn, kind, key, sibling, n):
        s = str(n)
        if kind == "set":
            r = conn.call("SET", key, s)
            return True if r == b"OK" else r
        if kind == "setxx":
            r = conn.call("SET", key, s, "XX")
            return True if r == b"OK" else r
        if kind == "incr":
            r = conn.call("INCR", key)
            return True if r == n else r
        if kind == "incrby":
            r = conn.call("INCRBY", key, "1")
            return True if r == n else r
        if kind == "incrbyfloat":
            r = conn.call("INCRBYFLOAT", key, "1")
            return True if r == s.encode() else r
        if kind == "getset":
            r = conn.call("GETSET", key, s)
            return True if r == str(n - 1).encode() else r
        if kind == "setex":
            r = conn.call("SETEX", key, "1000", s)
            return True if r == b"OK" else r
        if kind == "psetex":
            r = conn.call("PSETEX", key, "1000000", s)
            return True if r == b"OK" else r
        if kind == "mset":
            r = conn.call("MSET", sibling, s, key, s)
            return True if r == b"OK" else r
        if kind == "pipeline":
            # A write and reads of the same key on the writer's own connection: each read after
            # the write must see it (rule C3's order plus C8).
            conn.send("SET", key, s)
            conn.send("GET", key)
            conn.send("MGET", key)
            r = [conn.read(), conn.read(), conn.read()]
            return True if r == [b"OK", s.encode(), [s.encode()]] else r
        for args in (["MULTI"], ["SET", key, s], ["EXEC"]):
            conn.send(*args)
        r = [conn.read(), conn.read(), conn.read()]
        return True if r == [b"OK", b"QUEUED", [b"OK"]] else r

    def reader(self, node_index, seed):
        rng = random.Random(seed)
        node = self.c[node_index]
        conn = Conn(node.host, node.port, timeout=20)
        try:
            while not self.stop.is_set():
                key = rng.choice(self.keys)
                floor = self.acked[key]
                how = rng.choice(["GET", "GETRANGE", "MGET"])
                args = {"GET": ["GET", key], "GETRANGE": ["GETRANGE", key, "0", "-1"],
                        "MGET": ["MGET", key]}[how]
                try:
                    r = conn.call(*args)
                except (Timeout, ConnectionError, OSError) as e:
                    if node_index not in self.dead:
                        self.fail(f"{args} via node {node_index}: {type(e).__name__}: {e}")
                    return
                ceiling = self.started[key]
                if how == "MGET" and isinstance(r, list) and len(r) == 1:
                    r = r[0]
                if isinstance(r, RespError):
                    if not (self.tolerate_unknown and str(r).startswith("CLUSTERDOWN")):
                        self.fail(f"{args} via node {node_index}: -{r}")
                        return
                    continue
                value = 0 if r in (None, b"") else int(r)
                with self.mu:
                    self.reads += 1
                    if value < floor or value > ceiling:
                        self.stale.append(f"{args} via node {node_index} read {value}; the "
                                          f"write of {floor} had replied before the read, "
                                          f"{ceiling} was the last sent")
        finally:
            conn.close()


def run_race(c, keys, seconds, tolerate_unknown, kill=None, pause=None):
    race = Race(c, keys, tolerate_unknown)
    setup = c[0].conn(timeout=20)
    for k in keys:
        assert setup.call("SET", k, "0") == b"OK"
    setup.close()
    threads = [threading.Thread(target=race.writer, args=(k, i), daemon=True)
               for i, k in enumerate(keys)]
    threads += [threading.Thread(target=race.reader, args=(n, 1000 + 10 * n + j), daemon=True)
                for n in range(3) for j in range(3)]
    for t in threads:
        t.start()
    if kill is not None:
        time.sleep(seconds / 3)
        # The node dies holding copies. With writes going on, each copy it holds lasts until the
        # key's next write, so the writers pause (readers go on): once the writes in flight have
        # replied, nothing invalidates the node's copies, its reads make sure it holds some, and
        # the first write of each such key after the kill must wait out its lease.
        race.go.clear()
        deadline = time.time() + 20
        while time.time() < deadline:
            with race.mu:
                if race.writing == 0:
                    break
            time.sleep(0.01)
        primer = c[kill].conn(timeout=10)
        deadline = time.time() + 5
        while time.time() < deadline:
            for k in keys:
                primer.call("GET", k)
            if int(info(c[kill], conn=primer).get("cache_keys", "0")) > 0:
                break
        primer.close()
        race.dead.add(kill)
        c[kill].kill9()
        race.at_kill = dict(race.acked)
        race.go.set()
        time.sleep(seconds * 2 / 3)
    elif pause is not None:
        index, length = pause
        time.sleep(seconds / 3)
        pid = c[index].proc.pid
        freeze(pid)
        try:
            time.sleep(length)
        finally:
            os.kill(pid, signal.SIGCONT)
        race.at_kill = dict(race.acked)
        time.sleep(max(0.0, seconds * 2 / 3 - length))
    else:
        time.sleep(seconds)
    race.stop.set()
    race.go.set()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), f"a client thread hung\n{c.logs()}"
    return race
