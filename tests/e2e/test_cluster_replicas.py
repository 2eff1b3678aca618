"""End to end: `floe serve --cluster ... --replicas 1` processes on 127.0.0.1-3
(docs/replication.md, W15-W19). A backup killed with kill -9 under load is dropped and
replaced, and no acknowledged write is lost; an owner killed and started again hands its slots
to their backups with every acknowledged write, and one that stays down is failed over;
min-replicas-to-write refuses writes with NOREPLICAS. Every test is bounded in time and stops its own processes."""
import threading
import time

from cluster_cache_helpers import HOSTS3, clusters  # noqa: F401 (clusters: the fixture)
from floe_cluster import RespError


class Writers:
    """Threads that SET their own keys through given nodes, i = 1, 2, ...: for each key the
    last acknowledged i and the last i sent, and every reply with its time."""

    def __init__(self, cluster, plan):
        self.cluster, self.plan = cluster, plan  # [(node index, [keys])]
        self.acked, self.sent, self.errors = {}, {}, []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i, ks)) for i, ks in plan]

    def run(self, node, keys):
        conn = self.cluster[node].conn(timeout=30)
        i = 0
        while not self.stop.is_set():
            i += 1
            k = keys[i % len(keys)]
            self.sent[k] = i
            reply = conn.call("SET", k, str(i))
            if reply == b"OK":
                self.acked[k] = i
            else:
                self.errors.append((time.monotonic(), k, str(reply)))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def check(self, conn):
        """Every key holds at least its last acknowledged value and at most its last sent."""
        for k, sent in self.sent.items():
            reply = conn.call("GET", k)
            assert not isinstance(reply, RespError), (k, reply)
            got = int(reply) if reply is not None else 0
            assert self.acked.get(k, 0) <= got <= sent, (k, self.acked.get(k), got, sent)


def wait_ok(conn, key, timeout):
    deadline = time.monotonic() + timeout
    while (reply := conn.call("SET", key, "probe")) != b"OK":
        assert time.monotonic() < deadline, reply
        time.sleep(0.1)


def test_kill_9_of_a_backup_under_load_loses_nothing_and_writes_commit_again(clusters):
    c = clusters.make(3, hosts=HOSTS3, node_timeout=1000, extra=["--replicas", "1"]).wait_formed()
    plan = [(0, c.keys_at(0, 20, prefix="b0") + c.keys_at(1, 20, prefix="b1")),
            (1, c.keys_at(1, 20, prefix="c1") + c.keys_at(0, 20, prefix="c0"))]
    with Writers(c, plan) as w:
        time.sleep(1.0)
        killed = c[2].kill9() / 1e9
        before = sum(dict(w.acked).values())
        # The backup is reported a node timeout after it stops answering, then dropped: each
        # write held meanwhile is answered OK then, or at its hold bound with an unknown outcome.
        time.sleep(6.0)
    assert sum(w.acked.values()) > before + 1000, "writes were not acknowledged after the kill"
    late = [e for e in w.errors if e[0] > killed + 4.0]
    assert not late, f"writes failed after the backup was dropped: {late[:5]}\n{c.logs()}"
    for e in w.errors:
        assert "may or may not have been applied" in e[2], e
    w.check(c[0].conn())
    w.check(c[1].conn())
    info = c[0].conn().call("INFO", "memory").decode()
    assert "replica_owned_slots" in info, info


def test_an_owner_killed_and_started_again_loses_no_acknowledged_write(clusters):
    c = clusters.make(3, hosts=HOSTS3, node_timeout=1000, extra=["--replicas", "1"]).wait_formed()
    keys2 = c.keys_at(2, 20, prefix="o2")
    plan = [(0, keys2[:10] + c.keys_at(1, 10, prefix="o1")),
            (1, keys2[10:] + c.keys_at(0, 10, prefix="o0"))]
    with Writers(c, plan) as w:
        time.sleep(1.0)
        c[2].kill9()
        time.sleep(0.5)
        c[2].start()
        # Its slots go to their backups (promotion, W10-W14) and take writes again.
        wait_ok(c[0].conn(timeout=30), keys2[0], 60)
        time.sleep(1.0)
    assert all(w.acked.get(k) for k in keys2), "every key of the restarted owner was written"
    for node in range(3):
        w.check(c[node].conn(timeout=30))


def test_kill_9_of_an_owner_that_stays_down_fails_it_over_losing_nothing(clusters):
    """docs/membership.md O1-O5: the dead owner's lease lapses, the leader fails it over, and
    its slots serve from their backups with every acknowledged write, without a restart."""
    c = clusters.make(3, hosts=HOSTS3, node_timeout=1000, extra=["--replicas", "1"]).wait_formed()
    keys2 = c.keys_at(2, 20, prefix="f2")
    plan = [(0, keys2[:10] + c.keys_at(1, 10, prefix="f1")),
            (1, keys2[10:] + c.keys_at(0, 10, prefix="f0"))]
    with Writers(c, plan) as w:
        time.sleep(1.0)
        killed = c[2].kill9() / 1e9
        before = {k: w.acked.get(k, 0) for k in keys2}
        # Failed over about a lease (1 s) after the death; writes wait 2.1 s more (W13).
        wait_ok(c[0].conn(timeout=30), keys2[0], 30)
        time.sleep(2.0)
    assert all(w.acked.get(k, 0) > before[k] for k in keys2), "the dead owner's keys took no write"
    late = [e for e in w.errors if e[0] > killed + 8.0]
    assert not late, f"writes failed long after the failover: {late[:5]}\n{c.logs()}"
    for e in w.errors:
        assert "may or may not have been applied" in e[2] or "CLUSTERDOWN" in e[2], e
    for node in (0, 1):
        w.check(c[node].conn(timeout=30))
    info = c[0].conn().call("INFO", "cluster").decode() + c[1].conn().call("INFO", "cluster").decode()
    assert "meta_failovers:1" in info, info


def test_min_replicas_to_write_refuses_with_noreplicas(clusters):
    c = clusters.make(3, hosts=HOSTS3, node_timeout=1000, extra=["--replicas", "1"]).wait_formed()
    conns = [n.conn() for n in c.nodes]
    k = c.keys_at(1, 1, prefix="m")[0]
    for conn in conns:
        assert conn.call("CONFIG", "SET", "min-replicas-to-write", "2") == b"OK"
    reply = conns[0].call("SET", k, "v")
    assert isinstance(reply, RespError) and str(reply).startswith("NOREPLICAS"), reply
    for conn in conns:
        assert conn.call("CONFIG", "SET", "min-replicas-to-write", "1") == b"OK"
    wait_ok(conns[0], k, 20)
    assert conns[2].call("GET", k) == b"probe"


def test_a_cluster_founded_with_replicas_says_so_and_a_standalone_node_refuses_them(clusters):
    import subprocess
    from conftest import FLOE_BIN
    out = subprocess.run([FLOE_BIN, "serve", "--port", "0", "--replicas", "1"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and "replicas" in out.stderr, out.stderr
    c = clusters.make(3, hosts=HOSTS3, extra=["--replicas", "1"]).wait_formed()
    assert c[0].conn().call("CONFIG", "GET", "replicas") == [b"replicas", b"1"]
