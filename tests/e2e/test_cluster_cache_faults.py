"""Hostile end-to-end tests of the cluster's cached copies under faults (docs/cluster.md, rules
C7 and C8): a holder or home frozen, killed or restarted, a tiny maxmemory, clients that leave
while their writes wait, node timeouts shorter than a lease, copies of expired keys.

Every test starts its own 3-member cluster on 127.0.0.1-3 (ClusterFactory, processes stopped by
PID), has a deadline on every wait, and asserts behaviour, never timings."""
import os
import signal
import socket
import threading
import time

import pytest

from floe_cluster import Conn, RespError, Timeout
from cluster_cache_helpers import (  # noqa: F401 (clusters: the fixture)
    clusters, counters, freeze, info, make3, prime, run_race, tag_homed_at)


def test_a_holder_frozen_past_its_lease_neither_blocks_writes_nor_serves_stale(clusters):
    c = make3(clusters)
    conns = [n.conn(timeout=30) for n in c.nodes]
    # Keys homed at node 0, cached on node 1 (frozen) and node 2.
    keys = c.keys_at(0, 4, prefix="frz")
    home = {k: 0 for k in keys}
    for k in keys:
        assert conns[0].call("SET", k, "before") == b"OK"
    prime(conns, home, keys)
    waits_before = int(info(c[0])["lease_waits"])
    pid = c[1].proc.pid
    freeze(pid)
    try:
        # Writes through the home and through the other node: each completes, well within
        # the client's deadline, although a holder does not answer its invalidation.
        for i, k in enumerate(keys):
            via = 0 if i % 2 == 0 else 2
            r = conns[via].call("SET", k, "after")
            assert r == b"OK", (k, via, r, c.logs())
            # Reads elsewhere see it at once.
            assert conns[2].call("GET", k) == b"after"
            assert conns[0].call("GET", k) == b"after"
        # A transaction at the home, and a split DEL from the other node, with the holder still
        # frozen.
        for args in (["MULTI"], ["SET", keys[0], "tx"], ["EXEC"]):
            r = conns[0].call(*args)
        assert r == [b"OK"], r
        kx = c.keys_at(2, 1, prefix="frzx")[0]
        assert conns[2].call("DEL", keys[1], kx) == 1
        time.sleep(0.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    want = {keys[0]: b"tx", keys[1]: None, keys[2]: b"after", keys[3]: b"after"}
    # The resumed node's first reads must not come from its old copies.
    for k in keys:
        got = conns[1].call("GET", k)
        assert got == want[k], (k, got)
    for k in keys:
        for _ in range(3):
            assert conns[1].call("GET", k) == want[k], k
    # It caches again, and its copies are invalidated again.
    assert conns[2].call("SET", keys[2], "later") == b"OK"
    assert conns[1].call("GET", keys[2]) == b"later"
    # Not vacuous: the home did wait out the frozen holder's lease.
    assert int(info(c[0])["lease_waits"]) > waits_before


def test_exec_waiting_for_a_frozen_holder_still_honours_watch(clusters):
    """A transaction at the home whose write waits for a frozen holder's copy to lapse: a
    watched key changed meanwhile (by a write that waits for nothing) must abort it."""
    c = make3(clusters)
    conns = [n.conn(timeout=30) for n in c.nodes]
    tag = tag_homed_at(c, 0, "wx")
    k, w = "{" + tag + "}k", "{" + tag + "}w"
    home = {k: 0}
    failures = []
    for rnd in range(6):
        assert conns[0].call("SET", k, f"k{rnd}") == b"OK"
        assert conns[0].call("SET", w, f"w{rnd}") == b"OK"
        # Copies of k only (writes of w wait for nothing); node 1 must hold one.
        deadline = time.time() + 10
        while int(info(c[1])["cache_keys"]) == 0:
            assert time.time() < deadline, "node 1 never cached the key"
            prime(conns, home, [k])
        tx = c[0 if rnd % 2 == 0 else 2].conn(timeout=30)
        other = c[0].conn(timeout=30)
        assert tx.call("WATCH", w) == b"OK"
        assert tx.call("MULTI") == b"OK"
        assert tx.call("SET", k, "from-tx") == b"QUEUED"
        pid = c[1].proc.pid
        freeze(pid)
        try:
            tx.send("EXEC")  # waits: node 1 holds a copy of k and does not answer
            time.sleep(0.3)
            assert other.call("SET", w, "changed") == b"OK"
            # After the watched key changed, the transaction has not taken effect yet (k is
            # unchanged at its home): when it does, its WATCH must abort it.
            mid = other.call("GET", k)
            r = tx.read()
        finally:
            os.kill(pid, signal.SIGCONT)
        if r is not None and mid == f"k{rnd}".encode():
            failures.append(f"round {rnd} (EXEC via node {0 if rnd % 2 == 0 else 2}): EXEC "
                            f"answered {r!r}; the watched key {w} had changed (SET replied) and "
                            f"then {k} still read {mid!r} at the home, so the transaction "
                            f"committed after its watched key changed")
        got = conns[0].call("GET", k)
        if r is None and got != f"k{rnd}".encode():
            failures.append(f"round {rnd}: EXEC aborted but {k} is {got!r} at its home")
        # The resumed holder serves what the home has, never its old copy.
        for i in (1, 2):
            if (seen := conns[i].call("GET", k)) != got:
                failures.append(f"round {rnd}: {k} via node {i} after the EXEC: {seen!r}, "
                                f"the home has {got!r}")
        tx.close()
        other.close()
    assert not failures, "\n".join(failures)


# ---- kill -9 of a holder and of a home ------------------------------------------------------

def test_a_killed_holder_does_not_block_writes_and_restarts_without_copies(clusters):
    c = make3(clusters, node_timeout=2000)
    conns = [n.conn(timeout=30) for n in c.nodes]
    keys = c.keys_at(0, 4, prefix="kh")
    home = {k: 0 for k in keys}
    for k in keys:
        assert conns[0].call("SET", k, "v0") == b"OK"
    prime(conns, home, keys)
    c[1].kill9()
    for i, k in enumerate(keys):
        via = 0 if i % 2 else 2
        r = conns[via].call("SET", k, "v1")
        assert r == b"OK", (k, r)
        assert conns[2].call("GET", k) == b"v1"
    c[1].start()
    c.wait_formed(nodes=[c[1]], timeout=30)
    fresh = c[1].conn(timeout=30)
    for k in keys:
        assert fresh.call("GET", k) == b"v1", k
    prime([conns[0], fresh, conns[2]], home, keys)
    assert conns[0].call("SET", keys[0], "v2") == b"OK"
    assert fresh.call("GET", keys[0]) == b"v2"


def test_a_restarted_home_does_not_leave_old_copies_served(clusters):
    c = make3(clusters, node_timeout=2000)
    conns = [n.conn(timeout=30) for n in c.nodes]
    keys = c.keys_at(0, 4, prefix="kr")
    home = {k: 0 for k in keys}
    for k in keys:
        assert conns[0].call("SET", k, "old") == b"OK"
    prime(conns, home, keys)
    c[0].kill9()
    c[0].start()  # at once: within the lease its previous life granted
    c.wait_formed(nodes=[c[0]], timeout=30)
    h = c[0].conn(timeout=30)
    failures = []
    # The restarted home is empty; the other nodes must agree with it, and must see what it
    # writes next.
    for k in keys:
        want = h.call("GET", k)
        for i in (1, 2):
            got = conns[i].call("GET", k)
            if got != want:
                failures.append(f"{k} via node {i}: {got!r}, the restarted home: {want!r}")
    for j, k in enumerate(keys):
        via = [h, conns[1], conns[2]][j % 3]
        r = via.call("SET", k, "new")
        if r != b"OK":
            failures.append(f"SET {k} after the restart: {r!r}")
            continue
        for i in (1, 2):
            for _ in range(2):
                got = conns[i].call("GET", k)
                if got != b"new":
                    failures.append(f"{k} via node {i} after the restarted home's SET: {got!r}")
    assert not failures, "\n".join(failures) + "\n" + c.logs()


# ---- a small maxmemory on a holder -----------------------------------------------------------

def test_a_holder_with_a_tiny_maxmemory_stays_correct(clusters):
    c = make3(clusters)
    conns = [n.conn(timeout=15) for n in c.nodes]
    keys = [k for home in (0, 2) for k in c.keys_at(home, 20, prefix="mm")]
    home = {k: c.nodes.index(c.home(k)) for k in keys}
    for k in keys:
        assert conns[home[k]].call("SET", k, "x" * 30000) == b"OK"
    prime(conns, home, keys)
    assert int(info(c[1])["cache_keys"]) > 0
    assert conns[1].call("CONFIG", "SET", "maxmemory", "1") == b"OK"
    failures = []
    for rnd in range(5):
        for j, k in enumerate(keys):
            value = f"r{rnd}-{j}-" + "y" * (1000 * j)
            r = conns[home[k]].call("SET", k, value)
            if r != b"OK":
                failures.append(f"SET {k} at its home: {r!r}")
                continue
            for _ in range(2):
                got = conns[1].call("GET", k)
                if got != value.encode():
                    failures.append(f"round {rnd}: {k} via the node with maxmemory 1: "
                                    f"{(got or b'')[:20]!r}...")
        # INFO still answers; the node still reads its own keys.
        assert "cache_keys" in info(c[1])
    assert conns[1].call("CONFIG", "SET", "maxmemory", "0") == b"OK"
    for k in keys:
        conns[home[k]].call("SET", k, "done")
    prime(conns, home, keys)
    for k in keys:
        assert conns[1].call("GET", k) == b"done"
    assert not failures, "\n".join(failures[:30])


# ---- clients leaving while their writes wait ------------------------------------------------

def blast_and_leave(node, commands_per_conn, conns_count):
    """Opens connections, sends pipelined commands on each and closes it without reading."""
    for n in range(conns_count):
        s = socket.create_connection((node.host, node.port), timeout=10)
        out = []
        for args in commands_per_conn(n):
            out.append(b"*%d\r\n" % len(args))
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        try:
            s.sendall(b"".join(out))
        except OSError:
            pass
        if n % 3 == 0:
            # An abortive close (RST) for some.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()


@pytest.mark.parametrize("frozen", [False, True], ids=["live", "frozen-holder"])
def test_clients_that_leave_mid_write_leave_no_key_stuck(clusters, frozen):
    c = make3(clusters)
    conns = [n.conn(timeout=30) for n in c.nodes]
    tag = tag_homed_at(c, 0, "lv")
    keys = ["{" + tag + "}" + str(i) for i in range(4)]
    kx = c.keys_at(2, 1, prefix="lvx")[0]
    home = {k: 0 for k in keys}
    home[kx] = 2
    for k in keys + [kx]:
        conns[home[k]].call("SET", k, "0")
    prime(conns, home, keys + [kx])

    def commands(n):
        k = keys[n % len(keys)]
        return [["SET", k, f"c{n}"], ["INCR", keys[0]], ["APPEND", k, "z"],
                ["MSET", keys[1], f"m{n}", keys[2], f"m{n}"],
                ["MULTI"], ["SET", keys[3], f"t{n}"], ["EXEC"],
                ["DEL", kx, keys[(n + 1) % len(keys)]], ["GET", k],
                ["FLUSHALL"] if n % 17 == 16 else ["SET", kx, "1"]]

    # The proxy sessions of this test's own clients.
    baseline = [int(info(n).get("cluster_proxy_sessions", "0")) for n in c.nodes]
    pid = c[1].proc.pid
    if frozen:
        freeze(pid)
    try:
        threads = [threading.Thread(target=blast_and_leave, args=(c[i], commands, 40),
                                    daemon=True) for i in (0, 2, 0, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive()
        if frozen:
            time.sleep(2.5)  # past the frozen holder's lease
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
    # What the clients that left sent may still run at the homes (its outcome is unknown):
    # wait until every node has closed their proxy sessions (after their last requests).
    deadline = time.time() + 60
    while True:
        now = [int(info(n).get("cluster_proxy_sessions", "0")) for n in c.nodes]
        if all(a <= b for a, b in zip(now, baseline)):
            break
        assert time.time() < deadline, (
            f"proxy sessions of clients that left stay open: {now}, before {baseline}")
        time.sleep(0.1)
    # No key stays reserved by a client that left: every write completes, and every node
    # reads it.
    failures = []
    for rnd in range(3):
        for j, k in enumerate(keys + [kx]):
            via = (rnd + j) % 3
            try:
                r = conns[via].call("SET", k, f"final{rnd}")
            except (Timeout, ConnectionError) as e:
                failures.append(f"SET {k} via node {via}: {type(e).__name__}: {e}")
                conns[via] = c[via].conn(timeout=30)
                continue
            if r != b"OK":
                failures.append(f"SET {k} via node {via}: {r!r}")
            for i, conn in enumerate(conns):
                for _ in range(2):
                    got = conn.call("GET", k)
                    if got != f"final{rnd}".encode():
                        failures.append(f"{k} via node {i}: {got!r} after final{rnd}")
    assert not failures, "\n".join(failures[:30]) + "\n" + c.logs()
    for node in c.nodes:
        assert node.conn().call("PING") == b"PONG"


# ---- several writers of one key, from every node --------------------------------------------

@pytest.mark.parametrize("node_timeout", [None, 2000, 1000],
                         ids=["default-timeout", "timeout-2s", "timeout-1s"])
def test_concurrent_writes_while_a_holder_is_frozen_all_succeed(clusters, node_timeout):
    """Node 1 holds copies of 24 keys homed at node 0 and is frozen; 24 clients write them at
    once through node 2 and node 0. The home is up and answers: every write must succeed (a
    holder that does not answer delays a write by its lease, it does not fail it), and the
    resumed holder serves the new values."""
    c = make3(clusters, node_timeout=node_timeout)
    conns = [n.conn(timeout=30) for n in c.nodes]
    keys = c.keys_at(0, 24, prefix="fzc")
    home = {k: 0 for k in keys}
    for k in keys:
        assert conns[0].call("SET", k, "old") == b"OK"
    deadline = time.time() + 10
    while int(info(c[1])["cache_keys"]) < len(keys):
        assert time.time() < deadline, "node 1 did not cache every key"
        prime(conns, home, keys)
    results = {}

    def write(i, k):
        via = c[2] if i % 2 else c[0]
        try:
            conn = Conn(via.host, via.port, timeout=30)
            results[k] = conn.call("SET", k, "new")
            conn.close()
        except (Timeout, ConnectionError, OSError) as e:
            results[k] = f"{type(e).__name__}: {e}"

    # A key of the same home that no node caches: its reads through node 2 must not suffer.
    plain = c.keys_at(0, 1, prefix="fzcplain")[0]
    assert conns[0].call("SET", plain, "p") == b"OK"
    unrelated = []
    done = threading.Event()

    def read_plain():
        conn = Conn(c[2].host, c[2].port, timeout=30)
        try:
            while not done.is_set():
                r = conn.call("STRLEN", plain)  # a read, never from a copy of a frozen node
                if r != 1:
                    unrelated.append(r)
                time.sleep(0.01)
        except (Timeout, ConnectionError, OSError) as e:
            unrelated.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    pid = c[1].proc.pid
    freeze(pid)
    try:
        reader = threading.Thread(target=read_plain, daemon=True)
        reader.start()
        threads = [threading.Thread(target=write, args=(i, k), daemon=True)
                   for i, k in enumerate(keys)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive()
        done.set()
        reader.join(timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
    bad = {k: r for k, r in results.items() if r != b"OK"}
    stale = []
    for k in keys:
        want = conns[0].call("GET", k)
        for i in (1, 2):
            if (got := conns[i].call("GET", k)) != want:
                stale.append(f"{k} via node {i}: {got!r}, the home has {want!r}")
    assert not stale, "\n".join(stale)
    assert not unrelated, f"reads of an uncached key of the same home failed: {unrelated[:5]}"
    assert not bad, f"{len(bad)} of {len(keys)} writes failed: " + "\n".join(
        f"{k} via node {2 if keys.index(k) % 2 else 0}: {r!r}" for k, r in list(bad.items())[:10])


# ---- a client's pipeline behind a write that waits for a frozen holder ----------------------

@pytest.mark.parametrize("via", [0, 2], ids=["at-home", "through-another-node"])
def test_a_pipeline_behind_a_waiting_write_keeps_order_and_quit_flushes(clusters, via):
    """At the home a write of a key cached on a frozen node waits for its lease: the commands
    the same client pipelined after it must see it, their replies must keep their order, and
    QUIT must answer after the write's own reply (the write is applied)."""
    c = make3(clusters)
    conns = [n.conn(timeout=30) for n in c.nodes]
    tag = tag_homed_at(c, 0, "pq")
    k, k2 = "{" + tag + "}a", "{" + tag + "}b"
    home = {k: 0, k2: 0}
    failures = []
    for rnd in range(2):
        assert conns[0].call("SET", k, "old") == b"OK"
        assert conns[0].call("SET", k2, "10") == b"OK"
        deadline = time.time() + 10
        while int(info(c[1])["cache_keys"]) < 2:
            assert time.time() < deadline, "node 1 did not cache the keys"
            prime(conns, home, [k, k2])
        pid = c[1].proc.pid
        freeze(pid)
        try:
            conn = c[via].conn(timeout=30)
            script = [(["SET", k, "new"], b"OK"), (["GET", k], b"new"), (["INCR", k2], 11),
                      (["GET", k2], b"11"), (["APPEND", k, "!"], 4), (["STRLEN", k], 4),
                      (["MGET", k], [b"new!"])]
            if rnd == 1:
                script.append((["QUIT"], b"OK"))
            for args, _ in script:
                conn.send(*args)
            for args, want in script:
                try:
                    got = conn.read()
                except (Timeout, ConnectionError) as e:
                    got = f"{type(e).__name__}: {e}"
                if got != want:
                    failures.append(f"round {rnd} via node {via}: {args} answered {got!r}, "
                                    f"expected {want!r}")
            if rnd == 1:
                try:
                    conn.read()
                    failures.append("the connection stayed open after QUIT")
                except ConnectionError:
                    pass
            conn.close()
        finally:
            os.kill(pid, signal.SIGCONT)
        for i in range(3):
            if (got := conns[i].call("GET", k)) != b"new!":
                failures.append(f"round {rnd}: GET via node {i} after the pipeline: {got!r}")
    assert not failures, "\n".join(failures)


# ---- a home restarted within its previous life's leases --------------------------------------

def test_a_restarted_home_does_not_answer_reads_while_old_copies_are_served(clusters):
    """A home killed and restarted at once is empty. Until every copy its previous life handed
    out is dropped, a read at the home that answers 'absent' followed by a read elsewhere that
    answers the old value shows a value coming back from the dead: the home must not answer
    its keys' reads before its previous life's leases are void (coherence rule L4), or the
    holders must drop them first."""
    c = make3(clusters, node_timeout=2000)
    conns = [n.conn(timeout=30) for n in c.nodes]
    keys = c.keys_at(0, 8, prefix="rh")
    home = {k: 0 for k in keys}
    anomalies = []
    for rnd in range(3):
        for k in keys:
            assert conns[0].call("SET", k, f"old{rnd}") == b"OK"
        deadline = time.time() + 10
        while int(info(c[1])["cache_keys"]) < len(keys):
            assert time.time() < deadline, "node 1 did not cache the keys"
            prime(conns, home, keys)
        c[0].kill9()
        c[0].start()
        h = Conn(c[0].host, c[0].port, timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline:
            for k in keys:
                at_home = h.call("GET", k)
                if isinstance(at_home, RespError):
                    continue  # not formed yet
                elsewhere = conns[1].call("GET", k)
                if at_home is None and elsewhere == f"old{rnd}".encode():
                    anomalies.append(f"round {rnd}: {k} read absent at its restarted home, "
                                     f"then {elsewhere!r} through node 1")
            if info(c[0], conn=h).get("cluster_home_ready") == "1":
                break
        h.close()
        c.wait_formed(nodes=[c[0]], timeout=30)
        conns[0] = c[0].conn(timeout=30)
    assert not anomalies, "\n".join(anomalies[:10]) + f"\n({len(anomalies)} in all)"


def test_a_holder_killed_mid_race_leaves_no_stale_read_and_no_stuck_write(clusters):
    """The race above; a third of the way through, node 1 (a holder of copies of every other
    node's keys, and home to two of the keys) is killed with SIGKILL. Writes of the others'
    keys wait out its lease and go on; no read on the survivors is older than an acknowledged
    write."""
    c = make3(clusters, node_timeout=3000)
    keys = ["{" + k + "}" for home in (0, 2) for k in c.keys_at(home, 3, prefix="racek")]
    race = run_race(c, keys, seconds=9, tolerate_unknown=False, kill=1)
    assert not race.stale, "\n".join(race.stale[:30]) + f"\n({len(race.stale)} stale reads)"
    assert not race.errors, "\n".join(race.errors[:20]) + "\n" + c.logs()
    assert race.reads > 1000, race.reads
    # Writes went on after the kill (a writer whose node died stops: its last write's outcome
    # is unknown), and the homes waited out the dead holder's lease.
    assert any(race.acked[k] > race.at_kill[k] + 10 for k in keys), (race.at_kill, race.acked)
    # The dead node held copies when it died (run_race made sure): the first write to each such
    # key after the kill waits out its lease. A key whose writer died with it may have had no
    # write since, so every key gets one more, through a survivor, and none may stick.
    final = c[0].conn(timeout=15)
    for k in keys:
        assert final.call("SET", k, "after") == b"OK"
    final.close()
    assert counters(c, skip=(1,))["lease_waits"] > 0


@pytest.mark.parametrize("length", [1.0, 2.6], ids=["within-lease", "past-lease"])
def test_a_home_frozen_mid_race_leaves_no_stale_read(clusters, length):
    """The race; a third of the way through, node 0 (home to two keys, holder of copies of the
    others) is frozen for a while shorter than the node timeout, then resumed. Copies of its
    keys may be served only while their leases last; afterwards every read and write goes on,
    none older than an acknowledged write."""
    c = make3(clusters, node_timeout=5000)
    keys = ["{" + k + "}" for home in range(3) for k in c.keys_at(home, 2, prefix="racep")]
    race = run_race(c, keys, seconds=9, tolerate_unknown=False, pause=(0, length))
    assert not race.stale, "\n".join(race.stale[:30]) + f"\n({len(race.stale)} stale reads)"
    assert not race.errors, "\n".join(race.errors[:20]) + "\n" + c.logs()
    assert race.reads > 1000, race.reads
    assert all(race.acked[k] > race.at_kill[k] for k in keys), (race.at_kill, race.acked)


# ---- copies of keys that expired --------------------------------------------------------------

def test_copies_of_expired_keys_do_not_stay_in_the_holders_cache(clusters):
    """Copies of keys that have expired at their home are never served again; they must not
    stay in the holder's cache for ever either (they count in cache_bytes, used_memory and the
    cache's budget: a cache full of dead copies installs no new ones)."""
    c = make3(clusters)
    conns = [n.conn(timeout=15) for n in c.nodes]
    keys = c.keys_at(0, 300, prefix="dead")
    home = {k: 0 for k in keys}
    for k in keys:
        assert conns[0].call("SET", k, "x" * 100, "EX", "3") == b"OK"
    prime(conns, home, keys)
    assert int(info(c[1])["cache_keys"]) >= len(keys)
    # Every key expires at its home (and is gone: DBSIZE counts none of them).
    deadline = time.time() + 20
    while conns[0].call("DBSIZE") != 0:
        assert time.time() < deadline, "the keys did not expire at their home"
        time.sleep(0.2)
    deadline = time.time() + 15
    while True:
        fields = info(c[1])
        if int(fields["cache_keys"]) == 0:
            break
        assert time.time() < deadline, (
            f"15 s after every key expired at its home, node 1 still holds copies of them: "
            f"cache_keys {fields['cache_keys']}, cache_bytes {fields['cache_bytes']}")
        time.sleep(0.5)
