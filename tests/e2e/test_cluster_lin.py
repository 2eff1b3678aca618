"""End to end: every reply a client sees from a cluster of real `floe serve` processes is
linearizable. Three members on 127.0.0.1-3 whose cluster transport drops, duplicates and delays
messages (FLOE_TEST_CLUSTER_FAULTS); client threads on every node run GET, SET, INCR, DEL,
SET NX, MGET and DEL of keys on several homes (alone, or pipelined 2-8 at a time) and a
WATCH/MULTI/EXEC compare-and-set over RESP, each through a random node, on a few keys spread
over every home. The history they record is
checked by the same checker as the simulated tests (tests/testing/lin_check). Variants kill
one member with SIGKILL mid-run, or freeze it with SIGSTOP past the node timeout and resume it.

FLOE_CLUSTER_HISTORIES sets how many lossy histories run (default 3; .ci/run runs 20),
FLOE_CLUSTER_KILL_HISTORIES and FLOE_CLUSTER_PAUSE_HISTORIES how many of the variants (default
1 each); FLOE_CLUSTER_FAULTS replaces the injected faults. FLOE_TEST_SEED=<n> replays a run's
choices (the seed is printed)."""
import os
import random
import signal
import subprocess
import threading
import time

import pytest

from conftest import FLOE_BIN
from floe_cluster import ClusterFactory, Conn, RespError, Timeout, freeze, home_index, key_slot

HISTORIES = int(os.environ.get("FLOE_CLUSTER_HISTORIES", "3"))
KILL_HISTORIES = int(os.environ.get("FLOE_CLUSTER_KILL_HISTORIES", "1"))
PAUSE_HISTORIES = int(os.environ.get("FLOE_CLUSTER_PAUSE_HISTORIES", "1"))
# The transport's injected faults; FLOE_CLUSTER_FAULTS overrides them (same syntax).
FAULTS = os.environ.get("FLOE_CLUSTER_FAULTS", "drop=0.05,duplicate=0.02,max_delay_us=2000")
HOSTS3 = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
THREADS_PER_NODE = 3
OPS_PER_THREAD = 100
KEYS_PER_HOME = 2
# Seconds a whole history may take before the test gives up on it (a hang is a failure).
HISTORY_DEADLINE = 120


def lin_check_path():
    explicit = os.environ.get("FLOE_LIN_CHECK")
    if explicit:
        return explicit
    # FLOE_BIN is build/<preset>/app/floe; the checker is built beside it.
    build = os.path.dirname(os.path.dirname(os.path.abspath(FLOE_BIN)))
    return os.path.join(build, "tests", "testing", "lin_check")


def seed():
    s = int(os.environ.get("FLOE_TEST_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)
    print(f"seed {s} (FLOE_TEST_SEED={s} replays it)")
    return s


def hexb(b):
    return "-" if b is None else b.hex()


class History:
    """Operations in lin_check's text format (tests/testing/linearizability.h)."""

    def __init__(self):
        self.lines = []
        self.mu = threading.Lock()
        self.known = 0
        self.unknown = 0

    def add(self, client, op, key, call, ret=None, until=None, **fields):
        parts = [f"c={client}", f"op={op}", f"key={key.encode().hex()}"]
        parts += [f"{name}={value}" for name, value in fields.items()]
        parts.append(f"call={call}")
        parts.append(f"ret={ret}" if ret is not None else "ret=?")
        if ret is None and until is not None:
            parts.append(f"until={until}")
        with self.mu:
            self.lines.append(" ".join(parts))
            if ret is None:
                self.unknown += 1
            else:
                self.known += 1

    def text(self):
        return "\n".join(self.lines) + "\n"


def run_lin_check(history_text, path):
    checker = lin_check_path()
    if not os.path.exists(checker):
        pytest.fail(f"lin_check not found at {checker} (build target lin_check, or set "
                    "FLOE_LIN_CHECK)")
    with open(path, "w") as f:
        f.write(history_text)
    out = subprocess.run([checker, str(path)], capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


def test_the_recorded_format_is_what_lin_check_reads(tmp_path):
    # The recorder and the tool agree, and a stale read is caught: the same writer as below.
    h = History()
    h.add(1, "put", "k", 1, 2, value=b"1".hex())
    h.add(2, "get", "k", 3, 4, read=hexb(b"1"))
    h.add(1, "incr", "k", 5, 6, delta=1, counter=2)
    h.add(3, "put-if-absent", "k", 7, 8, value=b"9".hex(), applied=0)
    h.add(3, "cas", "k", 9, 10, expected=hexb(b"2"), value=b"5".hex(), applied=1)
    h.add(2, "remove", "k", 11, 12, applied=1)
    h.add(1, "put", "j", 1, None)
    rc, out = run_lin_check(h.text(), tmp_path / "ok.txt")
    assert rc == 0, out
    h.add(2, "get", "k", 13, 14, read=hexb(b"5"))  # stale: the key was removed
    rc, out = run_lin_check(h.text(), tmp_path / "stale.txt")
    assert rc == 1, out


class Worker(threading.Thread):
    def __init__(self, run, client, rng):
        super().__init__(daemon=True)
        self.run_state, self.client, self.rng = run, client, rng
        self.conns = {}
        self.errors = []
        self.seq = 0

    # A connection to node i, or None when it cannot be reached (it was killed).
    def conn(self, i):
        if i not in self.conns:
            node = self.run_state.cluster[i]
            try:
                self.conns[i] = Conn(node.host, node.port, timeout=self.run_state.op_timeout)
            except OSError:
                return None
        return self.conns[i]

    def drop(self, i):
        c = self.conns.pop(i, None)
        if c is not None:
            c.close()

    def run(self):
        try:
            for _ in range(OPS_PER_THREAD):
                if time.monotonic() > self.run_state.deadline:
                    self.errors.append("the history's deadline passed")
                    return
                self.one()
                self.run_state.note_done()
        except Exception as e:  # recorded; the test fails on it
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            for i in list(self.conns):
                self.drop(i)

    def value(self):
        self.seq += 1
        return str(self.client * 100000 + self.seq)

    def simple_op(self, key):
        # The first key of each home is read far more often than written, so that reads are
        # served from cached copies (rule C7) often enough to be checked, not once a history.
        weights = [85, 4, 4, 2, 2, 3, 0] if key in self.run_state.read_mostly else [
            35, 20, 20, 10, 10, 8, 3]
        kind = self.rng.choices(["get", "set", "incr", "del", "setnx", "mget", "mdel"], weights)[0]
        if kind in ("mget", "mdel"):
            # Split by home (rule C2): each key's part is linearizable on its own.
            keys = self.rng.sample(self.run_state.keys, self.rng.randint(2, 4))
            return kind, keys, ["MGET" if kind == "mget" else "DEL", *keys]
        args = {"get": ["GET", key], "set": ["SET", key, None], "incr": ["INCR", key],
                "del": ["DEL", key], "setnx": ["SET", key, None, "NX"]}[kind]
        if None in args:
            value = self.value()
            args = [value if a is None else a for a in args]
        return kind, key, args

    def one(self):
        """One operation, or a pipeline of 2-8 on one connection (a quarter of the time), so
        that a node's batching of a client's requests to one home (rule C3) is checked too."""
        rs = self.run_state
        nodes = [i for i in range(3) if i not in rs.dead]
        i = self.rng.choice(nodes)
        conn = self.conn(i)
        if conn is None:
            return
        if self.rng.random() < 0.05:
            self.cas(i, conn, self.rng.choice(rs.keys))
            return
        count = self.rng.randint(2, 8) if self.rng.random() < 0.25 else 1
        ops = [self.simple_op(self.rng.choice(rs.keys)) for _ in range(count)]
        call = time.monotonic_ns()
        try:
            for _, _, args in ops:
                conn.send(*args)
        except (Timeout, ConnectionError, OSError):
            self.drop(i)
            for kind, key, args in ops:
                self.record_unknown(kind, key, args, call)
            return
        for n, (kind, key, args) in enumerate(ops):
            try:
                reply = conn.read()
            except (Timeout, ConnectionError, OSError):
                self.drop(i)
                for kind2, key2, args2 in ops[n:]:
                    self.record_unknown(kind2, key2, args2, call)
                return
            self.record(i, kind, key, args, call, time.monotonic_ns(), reply)

    def record(self, i, kind, key, args, call, ret, reply):
        rs = self.run_state
        if kind == "mget" and isinstance(reply, list):
            self.expect(len(reply) == len(key), args, reply)
            for k, v in zip(key, reply):
                rs.history.add(self.client, "get", k, call, ret, read=hexb(v))
            return
        if kind == "mdel" and isinstance(reply, int):
            # The count says which keys were removed only when it is none or all.
            self.expect(0 <= reply <= len(key), args, reply)
            applied = 0 if reply == 0 else 1 if reply == len(key) else "-"
            for k in key:
                rs.history.add(self.client, "remove", k, call, ret, applied=applied)
            return
        if isinstance(reply, RespError):
            text = str(reply)
            if text.startswith("CLUSTERDOWN"):
                self.record_unknown(kind, key, args, call)
            elif not text.startswith("ERR value is not an integer"):
                self.errors.append(f"{args} via node {i}: -{text}")
            return  # INCR of a value that is not an integer changes nothing
        h = rs.history
        if kind == "get":
            h.add(self.client, "get", key, call, ret, read=hexb(reply))
        elif kind == "set":
            self.expect(reply == b"OK", args, reply)
            h.add(self.client, "put", key, call, ret, value=args[2].encode().hex())
        elif kind == "incr":
            self.expect(isinstance(reply, int), args, reply)
            h.add(self.client, "incr", key, call, ret, delta=1, counter=reply)
        elif kind == "del":
            self.expect(reply in (0, 1), args, reply)
            h.add(self.client, "remove", key, call, ret, applied=reply)
        else:
            self.expect(reply in (b"OK", None), args, reply)
            h.add(self.client, "put-if-absent", key, call, ret, value=args[2].encode().hex(),
                  applied=1 if reply == b"OK" else 0)

    def expect(self, ok, args, reply):
        if not ok:
            self.errors.append(f"{args}: unexpected reply {reply!r}")

    def record_unknown(self, kind, key, args, call, expected=None):
        """A write whose outcome is unknown: it may take effect at any time after `call`, or
        never. Once its key's home is dead it cannot take effect any more; a write called
        after that is known to have done nothing and is left out."""
        if kind in ("get", "mget"):
            return  # a read has no effect: nothing to record
        if kind == "mdel":
            for k in key:
                self.record_unknown("del", k, ["DEL", k], call)
            return
        rs = self.run_state
        until = None
        home = home_index(key_slot(key), 3)
        if home in rs.dead:
            if call > rs.dead[home]:
                return
            until = rs.dead[home]
        h = rs.history
        if kind == "set":
            h.add(self.client, "put", key, call, None, until, value=args[2].encode().hex())
        elif kind == "incr":
            h.add(self.client, "incr", key, call, None, until, delta=1)
        elif kind == "del":
            h.add(self.client, "remove", key, call, None, until)
        elif kind == "setnx":
            h.add(self.client, "put-if-absent", key, call, None, until,
                  value=args[2].encode().hex())
        else:
            h.add(self.client, "cas", key, call, None, until, expected=hexb(expected),
                  value=args[2].encode().hex())

    def cas(self, i, conn, key):
        """WATCH, GET, MULTI, SET, EXEC: a compare-and-set of the value read. EXEC that runs
        means nothing changed the key since WATCH, so it swapped from the value read; EXEC that
        answers nil did nothing and is left out."""
        rs = self.run_state
        value = self.value()
        call = time.monotonic_ns()
        try:
            if conn.call("WATCH", key) != b"OK":
                raise ConnectionError("WATCH refused")
            get_call = time.monotonic_ns()
            read = conn.call("GET", key)
            get_ret = time.monotonic_ns()
            if isinstance(read, RespError):
                raise ConnectionError(str(read))
            rs.history.add(self.client, "get", key, get_call, get_ret, read=hexb(read))
            if conn.call("MULTI") != b"OK" or conn.call("SET", key, value) != b"QUEUED":
                raise ConnectionError("MULTI refused")
        except (Timeout, ConnectionError, OSError):
            # Nothing was queued to run: dropping the connection discards it.
            self.drop(i)
            return
        try:
            reply = conn.call("EXEC")
        except (Timeout, ConnectionError, OSError):
            self.drop(i)
            self.record_unknown("cas", key, ["SET", key, value], call, expected=read)
            return
        ret = time.monotonic_ns()
        if reply is None:
            return
        if isinstance(reply, RespError) or reply != [b"OK"]:
            text = str(reply)
            if "CLUSTERDOWN" in text:
                self.record_unknown("cas", key, ["SET", key, value], call, expected=read)
            else:
                self.errors.append(f"EXEC of SET {key} via node {i}: {reply!r}")
            return
        rs.history.add(self.client, "cas", key, call, ret, expected=hexb(read),
                       value=value.encode().hex(), applied=1)


class Run:
    def __init__(self, cluster, keys, op_timeout):
        self.cluster, self.keys, self.op_timeout = cluster, keys, op_timeout
        self.read_mostly = set(keys[::KEYS_PER_HOME])
        self.history = History()
        self.dead = {}  # member index -> monotonic ns after its process was reaped
        self.done = 0
        self.counters = {"cache_hits": 0, "invalidations_sent": 0, "cache_misses": 0,
                         "rpc_call_resends": 0}
        self.mu = threading.Lock()
        self.deadline = time.monotonic() + HISTORY_DEADLINE

    def note_done(self):
        with self.mu:
            self.done += 1


def run_history(factory, rng, number, mode):
    kill = mode == "kill"
    node_timeout = 2000 if mode == "lossy" else 1000
    c = factory.make(3, hosts=HOSTS3, same_ports=True, node_timeout=node_timeout,
                     faults=FAULTS).wait_formed()
    keys = [k for home in range(3) for k in c.keys_at(home, KEYS_PER_HOME, prefix=f"lin{number}-")]
    run = Run(c, keys, op_timeout=node_timeout / 1000 + 5)
    workers = [Worker(run, client, random.Random(rng.random()))
               for client in range(1, 3 * THREADS_PER_NODE + 1)]
    for w in workers:
        w.start()
    total = len(workers) * OPS_PER_THREAD
    victim = rng.randrange(3) if mode != "lossy" else None
    if victim is not None:
        # A third of the way through, kill a member with SIGKILL, or freeze it with SIGSTOP
        # for longer than the node timeout and let it go on (its requests then arrive late).
        while run.done < total // 3 and time.monotonic() < run.deadline and any(
                w.is_alive() for w in workers):
            time.sleep(0.005)
        if kill:
            # Its counters first: they are lost with it.
            add_counters(run.counters, c[victim].conn().call("INFO", "cluster").decode())
            run.dead[victim] = c[victim].kill9()
        else:
            freeze(c[victim].proc.pid)  # every thread stopped, not only the first
            time.sleep(node_timeout / 1000 * 1.5)
            os.kill(c[victim].proc.pid, signal.SIGCONT)
    for w in workers:
        w.join(timeout=max(1.0, run.deadline - time.monotonic() + 10))
        assert not w.is_alive(), f"client {w.client} hung\n{c.logs()}"
    errors = [e for w in workers for e in w.errors]
    for i, node in enumerate(c.nodes):
        if i not in run.dead:
            add_counters(run.counters, node.conn().call("INFO", "cluster").decode())
    drop = float(dict(item.split("=", 1) for item in FAULTS.split(",") if "=" in item).get(
        "drop", "0"))
    if drop > 0:
        assert run.counters["rpc_call_resends"] > 0, "no message was lost: were the faults injected?"
    return c, run, errors, victim


def add_counters(into, info):
    """Adds the counters of one member's INFO cluster that the checks below read."""
    for line in info.splitlines():
        name, _, value = line.partition(":")
        if name in into:
            into[name] += int(value)


def check_histories(tmp_path, count, mode):
    factory = ClusterFactory()
    rng = random.Random(seed())
    totals = {"cache_hits": 0, "invalidations_sent": 0}
    try:
        for number in range(count):
            c, run, errors, victim = run_history(factory, rng, number, mode)
            assert not errors, "\n".join(errors[:20]) + "\n" + c.logs()
            h = run.history
            path = tmp_path / f"history-{mode}-{number}.txt"
            rc, out = run_lin_check(h.text(), path)
            print(f"history {number}: {h.known} known, {h.unknown} unknown outcomes"
                  + (f", member {victim} {dict(kill='killed', pause='paused')[mode]}"
                     if victim is not None else "")
                  + f": {out.strip().splitlines()[:1]}, {run.counters}")
            assert rc == 0, f"lin_check {path}: exit {rc}\n{out[:6000]}"
            # Not vacuous: most operations got an answer.
            assert h.known >= 0.5 * 3 * THREADS_PER_NODE * OPS_PER_THREAD, (h.known, h.unknown)
            for name in totals:
                totals[name] += run.counters[name]
            problems = factory.close()
            assert not problems, "\n".join(problems)
            factory = ClusterFactory()
    finally:
        factory.close()
    # Not vacuous either: reads were served from cached copies, and writes invalidated them
    # (docs/cluster.md, rules C7 and C8). Summed over the histories, the killed member's
    # counters read before the kill: one history makes a few dozen hits at most, as every key
    # is written about as often as it is read.
    assert totals["cache_hits"] > 0 and totals["invalidations_sent"] > 0, totals


def test_lossy_histories_through_every_node_are_linearizable(tmp_path):
    check_histories(tmp_path, HISTORIES, "lossy")


def test_a_history_with_a_member_killed_is_linearizable(tmp_path):
    check_histories(tmp_path, KILL_HISTORIES, "kill")


def test_a_history_with_a_member_paused_past_the_timeout_is_linearizable(tmp_path):
    check_histories(tmp_path, PAUSE_HISTORIES, "pause")
