"""End to end: a node joins a running cluster while it serves (docs/membership.md, rule J1;
docs/cluster.md, "Adding a node"): `floe serve --join HOST:PORT` asks any member, the Raft
leader adds it, and it serves every key by forwarding to the owners (no data moves yet). A join
that differs in cluster name or slot count is refused, naming what differs, within 10 s; one
with another secret is left unanswered and gives up at 10 s, saying so.
Every wait is for a condition, bounded; nothing asserts a time."""
import os
import signal
import subprocess
import threading
import time

from floe_cluster import CLUSTER_DOWN, NOT_FORMED, Node, RespError, free_cluster_ports, free_ports
from cluster_cache_helpers import HOSTS3, clusters, info  # noqa: F401 (clusters: the fixture)

JOINER_HOST = "127.0.0.4"


def joiner(clusters, c, extra=(), env=None, contact=1):
    """Plans a node on 127.0.0.4 that joins `c` through member `contact`."""
    (cport,) = free_cluster_ports([JOINER_HOST], 1)
    (resp,) = free_ports([JOINER_HOST], 1, taken={cport, cport + 1})
    node = Node(clusters, JOINER_HOST, resp, cport, "", list(extra), dict(env or {}))
    node.cluster_flags = False
    node.extra = ["--cluster-port", str(cport), "--join", c[contact].address,
                  "--dir", clusters.data_dir, *node.extra]
    return node


def wait_serving(node, timeout=20.0):
    c = node.conn(timeout=timeout)
    deadline = time.time() + timeout
    while True:
        reply = c.call("EXISTS", "probe")
        if not isinstance(reply, RespError):
            return c
        assert str(reply).startswith(NOT_FORMED) or str(reply) == CLUSTER_DOWN, reply
        assert time.time() < deadline, f"the joined node does not serve: {reply}\n{node.log()}"
        time.sleep(0.05)


def test_a_fourth_node_joins_while_a_client_writes_and_serves_every_key(clusters):
    c = clusters.make(3, hosts=HOSTS3, same_ports=True).wait_formed()
    stop = threading.Event()
    written, failures = [], []

    def writer():
        conn = c[0].conn()
        i = 0
        while not stop.is_set():
            key = f"w{i}"
            reply = conn.call("SET", key, str(i))
            if reply == b"OK":
                written.append(key)
            else:
                failures.append((key, reply))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        node = joiner(clusters, c).start()
        conn = wait_serving(node)
    finally:
        stop.set()
        t.join(timeout=30)
    assert not failures, failures[:5]
    assert written, "the writer wrote nothing"
    # The writer's keys (homed at all three) read back through the new node.
    for key in written[:: max(1, len(written) // 200)]:
        assert conn.call("GET", key) == key[1:].encode(), key
    # It writes and reads keys owned by each of the others, and owns none itself.
    for i in range(3):
        for key in c.keys_at(i, 5, prefix="joined"):
            assert conn.call("SET", key, "v") == b"OK"
            assert c[i].conn().call("GET", key) == b"v", (i, key)
    assert conn.call("DBSIZE") == len(set(written)) + 15
    for n in [*c.nodes, node]:
        fields = info(n)  # INFO cluster
        assert fields["meta_table_members"] == "4", (n.address, fields)
        assert fields["member_4"] == (f"address={node.address},client_port={node.port},state=up,"
                                      f"self={int(n is node)}"), (n.address, fields)
        assert b"cluster_known_nodes:4\r\n" in n.conn().call("CLUSTER", "INFO"), n.address
        text = n.conn().call("CLUSTER", "NODES")
        text = text.decode() if isinstance(text, bytes) else str(text)
        lines = [line for line in text.splitlines() if line]
        assert len(lines) == 4, text
        assert any(f"{JOINER_HOST}:{node.port}@{node.cluster_port}" in line for line in lines), text
    assert info(node)["cluster_slots_owned"] == "0"
    mine = [line for line in node.conn().call("CLUSTER", "NODES").decode().splitlines()
            if "myself" in line]
    assert len(mine) == 1 and mine[0].split()[-1] in ("connected", "disconnected"), mine
    assert "joined cluster" in node.log()


def refused(clusters, c, extra=(), env=None):
    node = joiner(clusters, c, extra=extra, env=env)
    started = time.monotonic()
    args = node.args()
    proc = subprocess.run(args, capture_output=True, timeout=30,
                          env={**{k: v for k, v in os.environ.items()
                                  if k != "FLOE_CLUSTER_SECRET"}, **(env or {})})
    took = time.monotonic() - started
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode != 0, out
    return out, took


def test_each_mismatch_is_refused_naming_it(clusters):
    c = clusters.make(3, hosts=HOSTS3, same_ports=True,
                      env={"FLOE_CLUSTER_SECRET": "the-secret"}).wait_formed()
    out, took = refused(clusters, c, extra=["--cluster-name", "other"],
                        env={"FLOE_CLUSTER_SECRET": "the-secret"})
    assert "cluster-name 'other', ours 'floe'" in out, out
    assert took < 10, took  # the rule's bound (J1), not a timing measurement
    # Another secret proves nothing: the members leave it unanswered, and the joiner gives up
    # at its limit saying what the silence may mean (docs/membership.md J1).
    out, took = refused(clusters, c, env={"FLOE_CLUSTER_SECRET": "another"})
    assert "--cluster-secret differs" in out, out
    out, took = refused(clusters, c, env={"FLOE_CLUSTER_SECRET": "the-secret",
                                          "FLOE_TEST_JOIN_SLOTS": "8192"})
    assert "8192 slots, ours 16384" in out, out
    assert took < 10, took
    for n in c.nodes:
        assert info(n)["meta_table_members"] == "3", n.address


def test_a_joined_member_leaves_and_exits_0(clusters):
    """Rule J2 (docs/membership.md; docs/cluster.md, "Removing a node"): a joined member that
    owns nothing leaves with CLUSTER LEAVE, exits 0, and the others keep serving every key."""
    c = clusters.make(3, hosts=HOSTS3, same_ports=True).wait_formed()
    keys = {i: c.keys_at(i, 20, prefix="leave") for i in range(3)}
    for i in range(3):
        for key in keys[i]:
            assert c[0].conn().call("SET", key, key) == b"OK"
    node = joiner(clusters, c).start()
    conn = wait_serving(node)
    assert conn.call("GET", keys[1][0]) == keys[1][0].encode()
    assert conn.call("CLUSTER", "LEAVE") == b"OK"
    assert node.proc.wait(timeout=30) == 0, node.log()
    assert "was removed from cluster" in node.log(), node.log()
    for n in c.nodes:
        deadline = time.time() + 20
        while info(n)["meta_table_members"] != "3":
            assert time.time() < deadline, (n.address, info(n))
            time.sleep(0.05)
        assert "member_4" not in info(n), n.address
        conn = n.conn()
        for i in range(3):
            for key in keys[i]:
                assert conn.call("GET", key) == key.encode(), (n.address, key)
        assert conn.call("SET", keys[2][0], "after") == b"OK"
        assert conn.call("GET", keys[2][0]) == b"after"
        assert conn.call("SET", keys[2][0], keys[2][0]) == b"OK"
    # Its directory refuses a start, naming why.
    proc = subprocess.run(node.args(), capture_output=True, timeout=30)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode != 0 and "was removed from cluster" in out, out


def test_sigterm_makes_a_joined_member_leave_then_exit_0(clusters):
    """Rule J2: SIGTERM of a member that holds no slot leaves as CLUSTER LEAVE does (bounded),
    then exits 0; a founder (it owns slots) stops without leaving."""
    c = clusters.make(3, hosts=HOSTS3, same_ports=True).wait_formed()
    node = joiner(clusters, c).start()
    wait_serving(node)
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=30) == 0, node.log()
    assert "leaving the cluster first" in node.log(), node.log()
    assert "left the cluster: stopping" in node.log(), node.log()
    for n in c.nodes:
        deadline = time.time() + 20
        while info(n)["meta_table_members"] != "3":
            assert time.time() < deadline, (n.address, info(n))
            time.sleep(0.05)
    key = c.keys_at(0, 1, prefix="term")[0]
    assert c[1].conn().call("SET", key, "v") == b"OK"
    assert c[2].conn().call("GET", key) == b"v"


def test_sigterm_of_a_joined_member_that_cannot_leave_still_exits_0(clusters):
    """Rule J2: with no member left to commit the removal, SIGTERM stops the member anyway,
    saying it did not leave."""
    c = clusters.make(3, hosts=HOSTS3, same_ports=True).wait_formed()
    node = joiner(clusters, c).start()
    wait_serving(node)
    for n in c.nodes:
        n.kill9()
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=30) == 0, node.log()
    assert "did not leave the cluster" in node.log(), node.log()


def test_a_removal_waiting_for_the_leader_holds_no_other_client(clusters):
    """Rule J2: CLUSTER FORGET waits for the Raft leader (up to 15 s) off the I/O thread, so a
    member with one I/O thread answers its other clients meanwhile (it held that thread, and
    its worker lock, for the whole wait)."""
    c = clusters.make(3, hosts=HOSTS3, same_ports=True, extra=["--threads", "1"]).wait_formed()
    node = joiner(clusters, c).start()
    wait_serving(node)
    # No majority left: no leader can commit the removal, so FORGET waits its whole bound.
    c[1].kill9()
    c[2].kill9()
    forget = {}

    def run_forget():
        forget["reply"] = c[0].conn(timeout=60).call("CLUSTER", "FORGET", "4")
        forget["at"] = time.monotonic()

    t = threading.Thread(target=run_forget)
    t.start()
    other = c[0].conn(timeout=60)
    # Until FORGET has begun (CLIENT LIST names it as the other connection's command). Were it
    # holding the I/O thread, CLIENT LIST would answer only after it, and FORGET be done.
    deadline = time.time() + 30
    while b"cmd=cluster|forget" not in other.call("CLIENT", "LIST"):
        assert time.time() < deadline
        time.sleep(0.05)
    assert other.call("PING") == b"PONG"
    ping_at = time.monotonic()
    t.join(timeout=60)
    assert not t.is_alive()
    # Order, not time: the PING was answered while FORGET still waited.
    assert ping_at < forget["at"], f"FORGET answered before the other client's PING: {forget}"
    assert isinstance(forget["reply"], RespError) and "retry" in str(forget["reply"]), forget
