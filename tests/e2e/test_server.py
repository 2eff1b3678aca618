"""End to end: a started `floe serve`, driven by Debian's redis-py (RESP2), by hand-written
RESP3, and by redis-cli."""
import os
import shutil
import subprocess
import threading
import time

import pytest
import redis

from conftest import FLOE_BIN, RawConn, missing


def test_strings(r):
    assert r.set("k", "v") is True
    assert r.get("k") == "v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True, get=True) == "v"
    assert r.incr("n") == 1
    assert r.incrby("n", 41) == 42
    assert r.decrby("n", 2) == 40
    assert r.incrbyfloat("f", 1.5) == 1.5
    assert r.append("s", "ab") == 2
    assert r.strlen("s") == 2
    assert r.getrange("s", 0, 0) == "a"
    assert r.setrange("s", 1, "XY") == 3
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "b", "zz") == ["1", "2", None]
    assert r.msetnx({"a": "x", "new": "y"}) is False
    assert r.getdel("a") == "1"
    assert r.getset("b", "3") == "2"
    assert r.setnx("b", "4") is False
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("s")


def test_binary_and_large_values(floe_server):
    c = floe_server.client()
    blob = bytes(range(256)) * 40000  # 10 MB with every byte value
    assert c.set(b"bin\x00key", blob)
    assert c.get(b"bin\x00key") == blob
    c.delete(b"bin\x00key")


def test_expiry(r):
    r.set("t", "v", ex=100)
    assert 99 <= r.ttl("t") <= 100
    assert r.persist("t") is True
    assert r.ttl("t") == -1
    r.set("p", "v", px=50)
    time.sleep(0.2)
    assert r.get("p") is None
    assert r.exists("p") == 0
    assert r.expire("t", 100, nx=True) is True
    assert r.expire("t", 50, gt=True) is False
    assert r.pexpiretime("t") > int(time.time() * 1000)


def test_active_expiry_frees_keys_nobody_reads(r):
    for i in range(200):
        r.set(f"gone:{i}", "v", px=20)
    r.set("stays", "v")
    deadline = time.time() + 5
    while time.time() < deadline and r.dbsize() > 1:
        time.sleep(0.05)
    assert r.dbsize() == 1
    assert int(r.info("stats")["expired_keys"]) >= 200


def test_keyspace(r):
    for i in range(100):
        r.set(f"user:{i}", i)
    assert len(r.keys("user:*")) == 100
    assert set(r.scan_iter(match="user:1*", count=10)) == {f"user:{i}" for i in
                                                           [1] + list(range(10, 20))}
    assert r.type("user:1") == "string"
    assert r.exists("user:1", "user:2", "nope") == 2
    assert r.rename("user:1", "renamed") is True
    assert r.renamenx("renamed", "user:2") is False
    assert r.delete("renamed", "user:2") == 2
    assert r.randomkey().startswith("user:")
    assert r.dbsize() == 98
    assert r.object("encoding", "user:3") == "int"


def test_transactions(floe_server, r):
    with r.pipeline(transaction=True) as p:
        p.set("a", 1).incr("a").get("a")
        assert p.execute() == [True, 2, "2"]
    other = floe_server.client(decode_responses=True)
    with r.pipeline(transaction=True) as p:
        p.watch("a")
        other.set("a", 100)
        p.multi()
        p.set("a", 5)
        with pytest.raises(redis.WatchError):
            p.execute()
    assert r.get("a") == "100"


def test_pipelining_many_commands_in_one_write(floe_server):
    c = floe_server.client()
    p = c.pipeline(transaction=False)
    for i in range(10000):
        p.set(f"p{i}", i)
    assert all(p.execute())
    p = c.pipeline(transaction=False)
    for i in range(10000):
        p.get(f"p{i}")
    assert p.execute() == [str(i).encode() for i in range(10000)]


def test_concurrent_increments_from_many_clients(floe_server, r):
    def work():
        c = floe_server.client()
        for _ in range(500):
            c.incr("counter")
        c.close()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.get("counter") == "4000"


def test_client_and_server_commands(floe_server, r):
    r.client_setname("e2e")
    assert r.client_getname() == "e2e"
    assert any(c["name"] == "e2e" for c in r.client_list())
    info = r.info()
    assert info["redis_mode"] == "standalone"
    assert info["connected_clients"] >= 1
    assert "cmdstat_client|setname" in r.info("commandstats")
    assert r.config_get("maxmemory") == {"maxmemory": "0"}
    assert r.config_set("timeout", 0) is True
    assert len(r.time()) == 2
    assert r.echo("hi") == "hi"
    assert r.ping() is True
    victim = floe_server.client()
    victim.ping()
    vid = victim.client_id()
    assert r.client_kill_filter(_id=vid) == 1
    deadline = time.time() + 5
    while time.time() < deadline and any(c["id"] == str(vid) for c in r.client_list()):
        time.sleep(0.02)
    assert all(c["id"] != str(vid) for c in r.client_list())


def test_errors_reach_the_client(r):
    with pytest.raises(redis.ResponseError, match="unknown command 'NOPE'"):
        r.execute_command("NOPE")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get'"):
        r.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", 3)


def test_resp3_by_hand(floe_server):
    c = RawConn(floe_server.port)
    hello = c.call("HELLO", "3")
    assert hello.startswith(b"%7\r\n$6\r\nserver\r\n$4\r\nfloe\r\n")
    assert c.call("GET", "nothing-here") == b"_\r\n"
    c.call("SET", "r3", "v")
    assert c.call("CONFIG", "GET", "maxmemory") == b"%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"
    assert c.call("INFO", "keyspace").startswith(b"=")
    assert c.call("EXEC") == b"-ERR EXEC without MULTI\r\n"
    c.call("WATCH", "r3")
    other = RawConn(floe_server.port)
    other.call("SET", "r3", "changed")
    c.call("MULTI")
    c.call("GET", "r3")
    assert c.call("EXEC") == b"_\r\n"
    c.close()
    other.close()


def test_inline_commands_and_pipelined_replies_in_one_read(floe_server):
    c = RawConn(floe_server.port)
    c.send_raw(b"SET inl \"a b\"\r\nGET inl\r\nPING\r\n")
    assert c.read_reply() == b"+OK\r\n"
    assert c.read_reply() == b"$3\r\na b\r\n"
    assert c.read_reply() == b"+PONG\r\n"
    c.close()


def test_protocol_error_closes_only_that_connection(floe_server):
    bad = RawConn(floe_server.port)
    good = RawConn(floe_server.port)
    bad.send_raw(b"*1\r\n$-5\r\n")
    assert bad.read_reply() == b"-ERR Protocol error: invalid bulk length\r\n"
    assert bad.closed_by_peer()
    assert good.call("PING") == b"+PONG\r\n"


def test_oversized_bulk_is_refused(make_floe):
    s = make_floe("--proto-max-bulk-len", "1kb")
    c = RawConn(s.port)
    c.send_raw(b"*2\r\n$3\r\nGET\r\n$2000\r\n")
    assert c.read_reply() == b"-ERR Protocol error: invalid bulk length\r\n"
    assert c.closed_by_peer()


def test_requirepass(make_floe):
    s = make_floe("--requirepass", "pw")
    c = s.client(decode_responses=True)
    with pytest.raises(redis.AuthenticationError):
        c.get("k")
    ok = s.client(decode_responses=True, password="pw")
    assert ok.set("k", "v")


def test_maxclients(make_floe):
    s = make_floe("--maxclients", "2")
    a = RawConn(s.port)
    # The start-up probe's connection (wait_for_port's one) may not even be accepted yet (the
    # other I/O thread's backlog): accepted late, it took a place or was rejected itself. Wait
    # until it came and went: two connections received, `a` alone.
    deadline = time.time() + 10
    while time.time() < deadline:
        info = a.call("INFO", "clients") + a.call("INFO", "stats")
        if b"connected_clients:1\r\n" in info and b"total_connections_received:2\r\n" in info:
            break
        time.sleep(0.02)
    b = RawConn(s.port)
    assert b.call("PING") == b"+PONG\r\n"
    c = RawConn(s.port)
    assert c.read_reply() == b"-ERR max number of clients reached\r\n"
    assert c.closed_by_peer()
    assert b"rejected_connections:1\r\n" in a.call("INFO", "stats")


def test_idle_timeout(make_floe):
    s = make_floe("--timeout", "1")
    c = RawConn(s.port)
    assert c.call("PING") == b"+PONG\r\n"
    assert c.closed_by_peer(timeout=5)


def test_output_buffer_limit_closes_a_greedy_client(make_floe):
    s = make_floe("--client-output-buffer-limit", "normal 64kb 0 0")
    s.client().set("big", "x" * 100000)
    c = RawConn(s.port)
    c.send("GET", "big")
    assert c.closed_by_peer()


def test_non_loopback_bind_without_password_is_refused():
    out = subprocess.run([FLOE_BIN, "serve", "--bind", "0.0.0.0", "--port", "0"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2
    assert "requirepass" in out.stderr


def test_config_file(tmp_path, make_floe):
    conf = tmp_path / "floe.conf"
    conf.write_text("# a comment\nmaxclients 77\ntimeout 9\n"
                    "client-output-buffer-limit \"normal 1mb 0 0\"\nmaxmemory 2gb\n"
                    "busy-poll-us 0\n")
    s = make_floe("--config", str(conf), "--timeout", "8")  # the flag wins over the file
    c = s.client(decode_responses=True)
    assert c.config_get("maxclients") == {"maxclients": "77"}
    assert c.config_get("timeout") == {"timeout": "8"}
    assert c.config_get("maxmemory") == {"maxmemory": str(2 << 30)}
    assert c.config_get("busy-poll-us") == {"busy-poll-us": "0"}
    assert c.config_get("client-output-buffer-limit")["client-output-buffer-limit"].startswith(
        "normal 1048576 0 0")
    bad = tmp_path / "bad.conf"
    bad.write_text("maxclients 5\nnosuch 1\n")
    out = subprocess.run([FLOE_BIN, "serve", "--config", str(bad)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 2
    assert "bad.conf:2: unknown setting 'nosuch'" in out.stderr
    bad.write_text("busy-poll-us -5\n")
    out = subprocess.run([FLOE_BIN, "serve", "--config", str(bad)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 2
    assert "bad.conf:1: busy-poll-us: argument must be between -1 and 100000 inclusive" in out.stderr


def test_default_threads_leave_a_core_and_busy_poll_follows(make_floe):
    # One I/O thread per core but one; busy polling only when a core is left free.
    c = make_floe("--threads", "0").client(decode_responses=True)  # 0: the default rule
    threads = int(c.config_get("io-threads")["io-threads"])
    assert threads == max(1, os.cpu_count() - 1)
    expected = "200" if threads < os.cpu_count() else "0"
    assert c.config_get("busy-poll-us") == {"busy-poll-us": expected}
    c2 = make_floe("--threads", str(os.cpu_count())).client(decode_responses=True)
    assert c2.config_get("busy-poll-us") == {"busy-poll-us": "0"}


def test_sigterm_stops_cleanly(make_floe):
    s = make_floe()
    s.client().set("k", "v")
    assert s.stop() == 0


def test_redis_cli(floe_server):
    if shutil.which("redis-cli") is None:
        missing("redis-cli is not installed")

    def cli(*args, proto=None):
        cmd = ["redis-cli", "-p", str(floe_server.port)]
        if proto:
            cmd.append(f"-{proto}")
        return subprocess.run(cmd + list(args), capture_output=True, text=True,
                              timeout=10).stdout.strip()
    assert cli("PING") == "PONG"
    assert cli("SET", "cli", "v") == "OK"
    assert cli("GET", "cli") == "v"
    assert cli("GET", "cli", proto=3) == "v"
    assert cli("HELLO", "3", proto=3).startswith("server floe\nversion 7.0.0\nproto 3")
    assert cli("CONFIG", "GET", "maxmemory", proto=3) == "maxmemory 0"
    assert cli("EXISTS", "nope") == "0"
    piped = subprocess.run(["redis-cli", "-p", str(floe_server.port)],
                           input="SET a 1\nINCR a\nGET a\n", capture_output=True, text=True,
                           timeout=10).stdout.split()
    assert piped == ["OK", "2", "2"]


# ---- hostile clients: memory a client can make the node allocate ----

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


BIG_SET_HEADER = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870000\r\n"


def test_unauthenticated_clients_cannot_make_the_node_allocate(make_floe):
    s = make_floe("--requirepass", "x", "--maxmemory", "50mb")
    conns = []
    for _ in range(8):
        c = RawConn(s.port)
        c.send_raw(BIG_SET_HEADER + b"a" * 20000)
        conns.append(c)
    for c in conns:
        assert c.read_reply() == b"-ERR Protocol error: unauthenticated bulk length\r\n"
        assert c.closed_by_peer()
    c = RawConn(s.port)
    c.send_raw(b"*11\r\n")
    assert c.read_reply() == b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    assert c.closed_by_peer()
    # Limits end with AUTH, even for a command pipelined right behind it.
    c = RawConn(s.port)
    c.send_raw(b"*2\r\n$4\r\nAUTH\r\n$1\r\nx\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n" +
               b"v" * 20000 + b"\r\n")
    assert c.read_reply() == b"+OK\r\n"
    assert c.read_reply() == b"+OK\r\n"
    assert rss_kb(s.proc.pid) < 200 * 1024


def test_announced_bulk_lengths_do_not_size_buffers(make_floe):
    s = make_floe("--requirepass", "x", "--maxmemory", "50mb")
    conns = []
    for _ in range(8):
        c = RawConn(s.port)
        assert c.call("AUTH", "x") == b"+OK\r\n"
        c.send_raw(BIG_SET_HEADER + b"a" * 20000)
        conns.append(c)
    admin = s.client(password="x")
    time.sleep(0.3)  # let the server read what was sent (the check is on memory, not time)
    # The buffers hold what arrived, and used_memory counts them as Redis counts query buffers.
    assert rss_kb(s.proc.pid) < 200 * 1024
    used = int(admin.info("memory")["used_memory"])
    assert used >= 8 * 20000
    for c in conns:
        c.close()
    deadline = time.time() + 5
    while time.time() < deadline and int(admin.info("memory")["used_memory"]) >= used:
        time.sleep(0.05)
    assert int(admin.info("memory")["used_memory"]) < used  # freed with the connections


def test_a_large_value_buffer_is_given_back_when_the_request_is_done(make_floe):
    s = make_floe()
    c = s.client()
    before = rss_kb(s.proc.pid)
    assert c.set("big", b"x" * (64 << 20))
    # The 64 MB input buffer goes once the SET is done: what stays resident is the value (the
    # allocator may keep its pages after DEL) and nothing for the buffer that received it.
    assert rss_kb(s.proc.pid) <= before + (64 + 16) * 1024
    c.delete("big")
    assert int(c.info("memory")["used_memory"]) < 8 << 20


# ---- transactions, connection commands and INFO as Redis 7.0 has them ----

def test_redis_py_transactional_pipeline_queues_connection_commands(floe_server):
    c = floe_server.client(decode_responses=True)
    c.delete("tx")
    with c.pipeline(transaction=True) as p:
        p.set("tx", "1")
        p.execute_command("CLIENT", "SETNAME", "txclient")
        p.execute_command("UNWATCH")
        p.incr("tx")
        assert p.execute() == [True, "OK", True, 2]
    assert c.get("tx") == "2"


def test_watch_of_an_absent_key_sees_it_come_and_go(floe_server):
    c = RawConn(floe_server.port)
    other = floe_server.client()
    c.call("DEL", "wk")
    assert c.call("WATCH", "wk") == b"+OK\r\n"
    other.set("wk", "1")
    other.delete("wk")
    assert c.call("MULTI") == b"+OK\r\n"
    assert c.call("INCR", "wk") == b"+QUEUED\r\n"
    assert c.call("EXEC") == b"*-1\r\n"
    assert c.call("EXEC", "x") == (b"-EXECABORT Transaction discarded because of: wrong number "
                                   b"of arguments for 'exec' command\r\n")


def test_client_kill_of_ones_own_address_answers_then_closes(floe_server):
    c = RawConn(floe_server.port)
    info = c.call("CLIENT", "INFO").decode()
    addr = info.split(" addr=")[1].split(" ")[0]
    assert c.call("CLIENT", "KILL", addr) == b"+OK\r\n"
    assert c.closed_by_peer()


def test_inline_argument_keeps_a_nul_byte(floe_server):
    c = RawConn(floe_server.port)
    c.send_raw(b"SET nul\x00key v\r\n")
    assert c.read_reply() == b"+OK\r\n"
    assert c.call(b"GET", b"nul\x00key") == b"$1\r\nv\r\n"


def test_info_has_the_cpu_section_and_error_counters(r):
    cpu = r.info("cpu")
    for field in ("used_cpu_sys", "used_cpu_user", "used_cpu_sys_children",
                  "used_cpu_user_children"):
        assert float(cpu[field]) >= 0
    assert "used_cpu_user" in r.info()
    stats = r.info("stats")
    assert stats["errors_internal"] == 0
    before = stats["total_error_replies"]
    with pytest.raises(redis.ResponseError):
        r.execute_command("NOSUCHCOMMAND")
    assert r.info("stats")["total_error_replies"] == before + 1


def test_sigterm_as_soon_as_the_port_answers_stops_cleanly(make_floe, tmp_path):
    """The signals are caught before the port listens: a SIGTERM sent the moment a connection is
    taken (a supervisor, a test) stopped the process by the default action before (status -15;
    a restart test saw it on a loaded host). A one-member cluster's start (its Raft log) widens
    the time between the two."""
    from floe_cluster import free_cluster_ports
    for i in range(5):
        assert make_floe().stop() == 0
        (cport,) = free_cluster_ports(["127.0.0.1"], 1)
        s = make_floe("--cluster", f"127.0.0.1:{cport}", "--cluster-port", str(cport),
                      "--dir", str(tmp_path / str(i)))
        assert s.stop() == 0
