"""End to end: the agreed metadata every member of `floe serve --cluster` runs (docs/cluster.md,
"Agreed metadata"; docs/membership.md, rule M1 and step 1 of its build order): a Raft log of the
cluster's table on each member's cluster port + 1, kept in --dir. Every wait is for a
condition, bounded; nothing asserts a time."""
import os
import socket
import subprocess
import time

from floe_cluster import NOT_FORMED, ClusterFactory, RespError, free_cluster_ports, free_ports
from cluster_cache_helpers import HOSTS3, clusters, info  # noqa: F401 (clusters: the fixture)
from conftest import FLOE_BIN


def meta(node):
    fields = info(node)
    return {k: v for k, v in fields.items() if k.startswith("meta")}


def wait_agreed(nodes, timeout=20.0, not_leader=None):
    """Waits until every node in `nodes` runs the metadata and names one leader among them
    (not `not_leader`), with the initial table applied; returns each node's fields."""
    deadline = time.time() + timeout
    while True:
        views = [meta(n) for n in nodes]
        leaders = {v.get("meta_leader_id") for v in views}
        terms = {v.get("meta_term") for v in views}
        led = [v for v in views if v.get("meta_role") == "leader"]
        if (len(leaders) == 1 and len(terms) == 1 and len(led) == 1 and "0" not in leaders
                and not_leader not in leaders
                and all(int(v.get("meta_table_epoch", "0")) >= 1 for v in views)):
            return views
        assert time.time() < deadline, f"no agreed leader within {timeout} s: {views}"
        time.sleep(0.05)


def test_members_agree_on_one_leader_and_on_the_table_routing_uses(clusters):
    c = clusters.make(3, hosts=HOSTS3, same_ports=True).wait_formed()
    views = wait_agreed(c.nodes)
    for node, v in zip(c.nodes, views):
        assert v["meta"] == "on", v
        assert v["meta_table_members"] == "3", v
        # The table's first entry is the member list's balanced map, which routing uses.
        assert v["meta_table_matches_routing"] == "1", v
        assert int(v["meta_term"]) >= 1, v
        leader = int(v["meta_leader_id"])
        assert v["meta_leader_address"] == \
            f"{c.nodes[leader - 1].host}:{c.nodes[leader - 1].cluster_port + 1}", v
        # Its log lives in --dir, under the member's own address.
        where = os.path.join(clusters.data_dir, f"{node.host}-{node.cluster_port}")
        assert os.path.isdir(where) and os.listdir(where), where
        assert f"Raft on {node.host}:{node.cluster_port + 1}, directory {where}" in node.log()


def test_a_killed_leader_is_replaced_and_its_restart_follows_from_its_directory(clusters):
    c = clusters.make(3, hosts=HOSTS3, same_ports=True, node_timeout=2000).wait_formed()
    views = wait_agreed(c.nodes)
    old = int(views[0]["meta_leader_id"])
    epoch = views[0]["meta_table_epoch"]
    c[old - 1].kill9()
    survivors = [n for i, n in enumerate(c.nodes) if i != old - 1]
    views = wait_agreed(survivors, not_leader=str(old))
    assert all(v["meta_table_epoch"] == epoch for v in views), views
    # The same member, same ports and directory: it replays its log and follows.
    c[old - 1].start()
    views = wait_agreed(c.nodes)
    assert all(v["meta_table_epoch"] == epoch for v in views), views
    assert all(v["meta_table_matches_routing"] == "1" for v in views), views


def test_a_member_restarted_while_another_is_dead_serves_again(clusters):
    """Rule M5 (3): with one member dead, a member restarted from its directory forms with the
    live majority, catches up with the leader and serves keys again (it waited for every member
    before); the dead one, back later, is counted as agreed."""
    c = clusters.make(3, hosts=HOSTS3, same_ports=True, node_timeout=2000).wait_formed()
    wait_agreed(c.nodes)
    keys = {i: c.keys_at(i, 1, prefix=f"r{i}-")[0] for i in range(3)}
    for k in keys.values():
        assert c[0].conn().call("SET", k, "v-" + k) == b"OK"
    c[2].kill9()
    c[1].kill9()
    c[1].start()
    assert "formed with 2 of 3 members" in c[1].log() or wait_log(c[1], "formed with 2 of 3")
    views = wait_agreed(c.nodes[:2])
    assert all(v["meta_caught_up"] == "1" for v in views) or wait_caught_up(c[1])
    # The live member's keys are served through it, and its own (lost with its process: no
    # backups yet) are written and read again; the dead member's keys are CLUSTERDOWN.
    assert wait_value(c[1], keys[0]) == ("v-" + keys[0]).encode()
    assert c[1].conn().call("SET", keys[1], "again") == b"OK"
    assert c[1].conn().call("GET", keys[1]) == b"again"
    down = c[1].conn().call("GET", keys[2])
    assert isinstance(down, RespError) and str(down).startswith("CLUSTERDOWN"), down
    # The dead member comes back: everyone agrees, and every key is served.
    c[2].start()
    wait_agreed(c.nodes)
    wait_value(c[1], keys[2])
    assert c[1].conn().call("SET", keys[2], "back") == b"OK"
    assert c[2].conn().call("GET", keys[2]) == b"back"
    assert wait_value(c[2], keys[0]) == ("v-" + keys[0]).encode()


def wait_log(node, text, timeout=20.0):
    deadline = time.time() + timeout
    while text not in node.log():
        assert time.time() < deadline, f"{text!r} not in the log of {node.address}"
        time.sleep(0.05)
    return True


def wait_caught_up(node, timeout=20.0):
    deadline = time.time() + timeout
    while meta(node).get("meta_caught_up") != "1":
        assert time.time() < deadline, f"{node.address} did not catch up: {meta(node)}"
        time.sleep(0.05)
    return True


def wait_value(node, key, timeout=20.0):
    """GET through `node` until it answers without CLUSTERDOWN (a member catching up refuses)."""
    deadline = time.time() + timeout
    while True:
        got = node.conn().call("GET", key)
        if not isinstance(got, RespError):
            return got
        assert str(got).startswith("CLUSTERDOWN") and time.time() < deadline, got
        time.sleep(0.05)


def start_fails(*args, timeout=20, argv=None):
    """Runs `floe serve` with `args` (or exactly `argv`); it must exit with an error. Returns
    its output."""
    argv = argv or [FLOE_BIN, "serve", "--port", "0", "--http-port", "0", *args]
    out = subprocess.run(argv, capture_output=True, timeout=timeout)
    assert out.returncode != 0, out
    return (out.stdout + out.stderr).decode(errors="replace")


def test_a_raft_port_in_use_or_an_unusable_directory_stops_the_start_with_the_reason(tmp_path):
    (cport,) = free_cluster_ports(["127.0.0.1"], 1)
    (other,) = free_cluster_ports(["127.0.0.1"], 1, taken={cport, cport + 1})
    members = f"127.0.0.1:{cport},127.0.0.1:{other}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", cport + 1))
        taken.listen()
        text = start_fails("--cluster", members, "--cluster-port", str(cport),
                           "--dir", str(tmp_path))
    assert f"cannot start the agreed metadata (Raft on 127.0.0.1:{cport + 1}" in text, text
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    text = start_fails("--cluster", members, "--cluster-port", str(cport),
                       "--dir", str(blocker))
    assert f"directory {blocker}/127.0.0.1-{cport}" in text, text


def test_a_member_whose_raft_fails_at_formation_serves_no_key_and_says_why(clusters):
    """docs/membership.md, "Routing from the agreed table": a member whose Raft port was
    taken after its start's check cannot start Raft when the cloud forms; it must not route by
    the balanced map meanwhile, so every key command answers CLUSTERDOWN The cluster is down."""
    from test_cluster import wait_reply
    c = clusters.make(2, hosts=HOSTS3[:2], same_ports=True, start=False)
    c[0].start()
    # Past its start's check of the Raft port (logged after it).
    deadline = time.time() + 20
    while "waiting for the others" not in c[0].log():
        assert time.time() < deadline, c[0].log()
        time.sleep(0.02)
    with socket.socket() as taken:
        taken.bind((c[0].host, c[0].cluster_port + 1))
        taken.listen()
        c[1].start()
        conn = c[0].conn()
        reply = wait_reply(conn, ["SET", "k", "v"],
                           lambda r: isinstance(r, RespError) and not str(r).startswith(NOT_FORMED))
        assert isinstance(reply, RespError) and str(reply) == "CLUSTERDOWN The cluster is down", \
            reply
        v = meta(c[0])
        assert v["meta"] == "off" and v["meta_caught_up"] == "0", v
        assert "cannot start the agreed metadata" in v["meta_off_reason"], v
        assert "cluster_state:fail" in conn.call("CLUSTER", "INFO").decode()
        assert conn.call("PING") == b"PONG"


def test_adjacent_cluster_ports_on_one_address_are_refused(tmp_path):
    (cport,) = free_cluster_ports(["127.0.0.1"], 1)
    members = f"127.0.0.1:{cport},127.0.0.1:{cport + 1}"
    text = start_fails("--cluster", members, "--cluster-port", str(cport), "--dir", str(tmp_path))
    assert f"members 127.0.0.1:{cport} and 127.0.0.1:{cport + 1}: a member's Raft listens" in text


def test_a_directory_held_by_another_start_or_another_cluster_is_refused(clusters, tmp_path):
    import fcntl
    c = clusters.make(2, hosts=HOSTS3[:2], same_ports=True, start=False)
    node = c[0]
    where = os.path.join(clusters.data_dir, f"{node.host}-{node.cluster_port}")
    os.makedirs(where)
    # A second `floe serve` of a member (here: a process holding its lock) is refused before it
    # touches the log.
    with open(os.path.join(where, "LOCK"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        text = start_fails(argv=node.args())
    assert "another floe serve of this member holds it" in text, text
    # The member runs and stops: its directory now holds its log.
    c.nodes[0].start()
    c.nodes[1].start()
    c.wait_formed()
    wait_agreed(c.nodes)
    for n in c.nodes:
        n.proc.terminate()
        n.proc.wait(timeout=20)
    # The same address in another cluster (another member list) must not replay that log.
    argv = node.args()
    argv[argv.index(node.members)] = f"{node.host}:{node.cluster_port},127.0.0.9:{node.cluster_port}"
    text = start_fails(argv=argv)
    assert "it holds the metadata of another cluster" in text, text


def test_temporary_copies_left_by_a_crash_do_not_count_as_a_log(clusters):
    """The member and cluster-id files are written to a temporary copy, synced and renamed (a
    crash mid-write left a torn file, refused at every start after). A copy left behind by such
    a crash is not a log: the member starts, and its files are whole."""
    c = clusters.make(2, hosts=HOSTS3[:2], same_ports=True, start=False)
    for node in c.nodes:
        where = os.path.join(clusters.data_dir, f"{node.host}-{node.cluster_port}")
        os.makedirs(where)
        for name in ("member.tmp", "cluster-id.tmp"):
            with open(os.path.join(where, name), "w") as f:
                f.write("torn")
    for node in c.nodes:
        node.start()
    c.wait_formed()
    wait_agreed(c.nodes)
    for node in c.nodes:
        where = os.path.join(clusters.data_dir, f"{node.host}-{node.cluster_port}")
        deadline = time.time() + 10
        while not os.path.exists(os.path.join(where, "cluster-id")):
            assert time.time() < deadline, os.listdir(where)
            time.sleep(0.05)
        with open(os.path.join(where, "member")) as f:
            assert f.read().endswith("\n")
        with open(os.path.join(where, "cluster-id")) as f:
            assert len(f.read().strip()) >= 32


def test_a_member_off_loopback_runs_without_agreed_metadata_and_says_why(clusters):
    c = clusters.make(1, start=False, env={"FLOE_CLUSTER_SECRET": "s3cret"})
    node = c[0]
    node.members = f"10.0.0.9:{node.cluster_port},{node.address}"
    node.start()
    v = meta(node)
    assert v["meta"] == "off", v
    assert "10.0.0.9" in v["meta_off_reason"] and "loopback" in v["meta_off_reason"], v


def test_a_member_with_an_ipv6_address_runs_without_agreed_metadata_and_says_why(clusters):
    c = clusters.make(3, hosts=["::1"] * 3).wait_formed()
    v = meta(c[0])
    assert v["meta"] == "off", v
    assert "IPv6" in v["meta_off_reason"], v
    assert "agreed metadata is off" in c[0].log()


def test_a_member_run_from_another_clusters_directory_is_refused_naming_the_cluster_ids(
        clusters, tmp_path):
    """Rule M5: two clusters of the same members (same addresses, name and list), each with its
    own directories, agree on different cluster ids; a member restarted with the other cluster's
    directory is refused by its peer's HELLO within 10 s, naming both ids, and runs no Raft."""
    from test_cluster import wait_reply
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    kept = clusters.data_dir
    try:
        clusters.data_dir = first
        c = clusters.make(2, hosts=HOSTS3[:2], same_ports=True).wait_formed()
        ids = {v["meta_cluster_id"] for v in wait_agreed(c.nodes)}
        assert len(ids) == 1, ids
        (first_id,) = ids
        assert len(first_id) == 32 and first_id != "0" * 32, first_id
        for n in c.nodes:
            n.proc.terminate()
            n.proc.wait(timeout=20)
        with open(os.path.join(first, f"{c[0].host}-{c[0].cluster_port}", "cluster-id")) as f:
            assert f.read().strip() == first_id
        # The same members again, from new directories: a new cluster, with a new id.
        clusters.data_dir = second
        for n in c.nodes:
            n.start()
        c.wait_formed()
        ids = {v["meta_cluster_id"] for v in wait_agreed(c.nodes)}
        assert len(ids) == 1 and first_id not in ids, (first_id, ids)
        (second_id,) = ids
        # The first member, restarted from the first cluster's directory.
        c[0].proc.terminate()
        c[0].proc.wait(timeout=20)
        clusters.data_dir = first
        c[0].start()
        reason = f"{c[1].address}: cluster id {second_id}, ours {first_id}"
        reply = wait_reply(c[0].conn(), ["GET", "k"],
                           lambda r: isinstance(r, RespError) and reason in str(r), timeout=10)
        assert isinstance(reply, RespError) and str(reply).startswith(NOT_FORMED), reply
        assert reason in str(reply), reply
        # It never formed, so it runs no Raft that could vote in the other cluster's log.
        assert meta(c[0])["meta"] == "waiting", meta(c[0])
        # The member that stayed keeps its table.
        assert meta(c[1])["meta_cluster_id"] == second_id
    finally:
        clusters.data_dir = kept


def test_a_wiped_member_is_refused_by_one_with_a_log_and_must_join(clusters):
    """Rule M5, finding (1): the id is read from the log itself before the first HELLO, and HELLO
    says whether its sender holds a log. A member whose directory was wiped (no log, no id) is
    refused by a member that has an id, and refuses it: they never form, so no second log is
    bootstrapped; the member with the log keeps it. A member whose cluster-id file alone was
    lost reads the id from its log and forms again."""
    import shutil
    from test_cluster import wait_reply
    c = clusters.make(2, hosts=HOSTS3[:2], same_ports=True).wait_formed()
    (cid,) = {v["meta_cluster_id"] for v in wait_agreed(c.nodes)}
    for n in c.nodes:
        n.proc.terminate()
        n.proc.wait(timeout=20)
    kept = os.path.join(clusters.data_dir, f"{c[0].host}-{c[0].cluster_port}")
    os.remove(os.path.join(kept, "cluster-id"))  # only the cache: the log still says
    shutil.rmtree(os.path.join(clusters.data_dir, f"{c[1].host}-{c[1].cluster_port}"))
    for n in c.nodes:
        n.start()
    theirs = f"{c[1].address}: it holds no log (a new or wiped data directory) and ours is " \
             f"cluster {cid}: it must --join"
    reply = wait_reply(c[0].conn(), ["GET", "k"],
                       lambda r: isinstance(r, RespError) and theirs in str(r), timeout=10)
    assert isinstance(reply, RespError) and theirs in str(reply), reply
    ours = f"{c[0].address}: cluster id {cid}, and we hold no log (a new or wiped data " \
           f"directory): this member must --join"
    reply = wait_reply(c[1].conn(), ["GET", "k"],
                       lambda r: isinstance(r, RespError) and ours in str(r), timeout=10)
    assert isinstance(reply, RespError) and ours in str(reply), reply
    assert meta(c[0])["meta"] == "waiting" and meta(c[1])["meta"] == "waiting"
