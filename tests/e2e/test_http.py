"""End to end: the HTTP API (docs/api.md) of a started `floe serve`, over plain sockets with the
standard library, checked against what RESP sees of the same node."""
import base64
import gzip
import http.client
import json
import math
import os
import random
import re
import select
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import FLOE_BIN, free_port, wait_for_port


@pytest.fixture
def node(make_floe):
    """Starts nodes with HTTP on a free port; each must then stop cleanly on SIGTERM (under a
    sanitizer, a report at exit fails the test: the e2e suite is how ASan and TSan see the
    front end's sockets)."""
    started = []

    def start(*args):
        port = free_port()
        s = make_floe("--http-port", str(port), *args)
        wait_for_port(port, s.proc)
        s.http_port = port
        started.append(s)
        return s
    yield start
    for s in started:
        rc = s.stop()
        assert rc == 0, f"floe exited with {rc}: {s.proc.stdout.read().decode(errors='replace')[-3000:]}"


def no_duplicate_keys(pairs):
    names = [k for k, _ in pairs]
    assert len(names) == len(set(names)), f"duplicate JSON keys in {names}"
    return dict(pairs)


def call(node, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=headers or {})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    ctype = resp.getheader("Content-Type", "")
    return resp.status, (json.loads(raw, object_pairs_hook=no_duplicate_keys) if ctype.startswith("application/json") else raw.decode()), resp


def raw_request(port, data, read_timeout=10):
    """Sends bytes as they are and returns the status line's code and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_keys_round_trip_and_resp_sees_the_same_data(node):
    s = node()
    r = s.client(decode_responses=True)
    assert call(s, "PUT", "/api/keys/user%3A1", {"value": "alice", "ttl": 100})[0] == 200
    assert r.get("user:1") == "alice"
    assert 0 < r.ttl("user:1") <= 100
    r.set("from resp/x", "héllo")
    status, body, _ = call(s, "GET", "/api/keys/from%20resp%2Fx")
    assert status == 200
    assert body["value"] == "héllo" and body["value_encoding"] == "utf8" and body["ttl_ms"] == -1
    r.set("bin", b"\x00\xff\x10")
    got = call(s, "GET", "/api/keys/bin")[1]
    assert got["value"] == base64.b64encode(b"\x00\xff\x10").decode()
    assert got["value_encoding"] == "base64"
    status, body, _ = call(s, "DELETE", "/api/keys/user%3A1")
    assert (status, body) == (200, {"deleted": 1})
    assert r.exists("user:1") == 0
    status, body, _ = call(s, "GET", "/api/keys/user%3A1")
    assert (status, body) == (404, {"error": "ERR no such key"})


def test_scan_pages_through_every_key(node):
    s = node()
    r = s.client()
    for i in range(250):
        r.set(f"k:{i}", i)
    r.pfadd("k:hll", "a")
    seen, cursor = set(), "0"
    while True:
        status, body, _ = call(s, "GET", f"/api/keys?pattern=k%3A*&type=string&count=50&cursor={cursor}")
        assert status == 200
        seen |= {k["key"] for k in body["keys"]}
        cursor = body["cursor"]
        if cursor == "0":
            break
    assert seen == {f"k:{i}" for i in range(250)}
    assert call(s, "GET", "/api/keys?count=5000")[0] == 400


def test_sketch_views(node):
    s = node()
    r = s.client()
    r.pfadd("visitors", *[f"u{i}" for i in range(1000)])
    r.execute_command("CMS.INITBYDIM", "cms", 1000, 5)
    r.execute_command("CMS.INCRBY", "cms", "apple", 3)
    r.execute_command("BF.ADD", "bf", "x")
    hll = call(s, "GET", "/api/keys/visitors")[1]
    assert hll["type"] == "hll" and abs(hll["estimate"] - 1000) < 100
    assert hll["info"]
    cms = call(s, "GET", "/api/keys/cms?item=apple")[1]
    assert cms["type"] == "cms" and cms["count"] == 3 and cms["info"]
    bf = call(s, "GET", "/api/keys/bf?item=x")[1]
    assert bf["type"] == "bloom" and bf["exists"] is True


def test_command_endpoint_runs_resp_commands(node):
    s = node()
    assert call(s, "POST", "/api/command", ["SET", "a", "1"])[1] == "OK"
    assert call(s, "POST", "/api/command", ["MGET", "a", "missing"])[1] == ["1", None]
    assert call(s, "POST", "/api/command", ["INCR", "a"])[1] == 2
    status, body, _ = call(s, "POST", "/api/command", ["NOSUCH"])
    # The same text a RESP client gets.
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"*1\r\n$6\r\nNOSUCH\r\n")
        resp_error = c.recv(1000).decode()
    assert status == 400 and "-" + body["error"] + "\r\n" == resp_error
    assert call(s, "POST", "/api/command", {"not": "a list"})[0] == 400
    # The HTTP connection is a client like any other.
    clients = call(s, "POST", "/api/command", ["CLIENT", "LIST"])[1]
    assert "cmd=client" in clients


def parse_metrics(text):
    """Checks Prometheus's text format 0.0.4 rules; returns {series: value}."""
    name_re = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    label_re = re.compile(r'^[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"$')
    types, series, values = {}, set(), {}
    buckets = {}  # histogram series without le -> [(le, cumulative count)] in line order
    for line in text.splitlines():
        assert line
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name_re.match(name) and kind in ("counter", "gauge", "histogram")
            assert name not in types, f"two TYPE lines for {name}"
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        ident, value = line.rsplit(" ", 1)
        name = ident.split("{")[0]
        assert name_re.match(name) and name.startswith("floe_")
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
                name = name[:-len(suffix)]
                if suffix == "_bucket":
                    le = re.search(r',le="([^"]*)"}$', ident)
                    assert le, f"a bucket without le: {ident}"
                    buckets.setdefault(ident[:le.start()] + "}", []).append((le.group(1), float(value)))
        assert name in types, f"no TYPE for {name}"
        if "{" in ident:
            assert ident.endswith("}")
            for label in re.findall(r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"', ident[len(name) + 1:-1]):
                assert label_re.match(label)
        assert ident not in series, f"duplicate series {ident}"
        series.add(ident)
        values[ident] = float(value)
        assert not math.isnan(values[ident])
    # Histograms: cumulative buckets with increasing le, the last +Inf and equal to _count.
    for ident, rows in buckets.items():
        assert rows[-1][0] == "+Inf", ident
        les = [float(le) for le, _ in rows[:-1]]
        assert les == sorted(les) and len(set(les)) == len(les), ident
        counts = [n for _, n in rows]
        assert counts == sorted(counts), ident
        count = ident.replace("_bucket{", "_count{", 1)
        assert values[count] == counts[-1], ident
    return values


def test_cluster_and_metrics_agree_with_info(node):
    s = node()
    r = s.client()
    for i in range(10):
        r.set(f"m{i}", i)
    r.get("m1")
    r.get("absent")
    status, cl, _ = call(s, "GET", "/api/cluster")
    assert status == 200
    assert cl["keys"] == 10 and cl["mode"] == "standalone" and cl["version"]
    info_before = r.info("everything")
    status, text, resp = call(s, "GET", "/metrics")
    info_after = r.info("everything")
    assert status == 200 and resp.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    values = parse_metrics(text)
    assert values["floe_keys"] == info_before["db0"]["keys"] == 10
    for metric, field in [("floe_keyspace_hits_total", "keyspace_hits"),
                          ("floe_keyspace_misses_total", "keyspace_misses"),
                          ("floe_commands_processed_total", "total_commands_processed")]:
        assert info_before[field] <= values[metric] <= info_after[field], metric
    # The scraping connection is a client too, while it scrapes.
    assert 2 <= values["floe_connected_clients"] <= info_before["connected_clients"] + 1
    assert values['floe_command_calls_total{command="set"}'] == info_after["cmdstat_set"]["calls"]
    # The latency histogram counts the same calls INFO latencystats summarizes.
    assert values['floe_command_latency_seconds_count{command="set"}'] == 10
    assert values['floe_command_latency_seconds_bucket{command="set",le="+Inf"}'] == 10
    assert values['floe_command_latency_seconds_sum{command="set"}'] > 0
    assert set(info_after["latency_percentiles_usec_set"]) == {"p50", "p99", "p99.9"}


def test_latencystats_and_config_resetstat(node):
    s = node()
    r = s.client()
    for i in range(20):
        r.set("k", i)
        r.get("k")
    lines = subprocess.run(["redis-cli", "-p", str(s.port), "info", "latencystats"],
                           capture_output=True, text=True, timeout=10).stdout.splitlines()
    assert lines[0] == "# Latencystats"
    # Redis 7.0's line: microseconds, three decimals, the default percentiles 50, 99, 99.9.
    number = r"\d+\.\d{3}"
    for cmd in ("set", "get"):
        line = next(l for l in lines if l.startswith(f"latency_percentiles_usec_{cmd}:"))
        assert re.fullmatch(rf"latency_percentiles_usec_{cmd}:p50=({number}),p99=({number}),"
                            rf"p99\.9=({number})", line), line
    values = parse_metrics(call(s, "GET", "/metrics")[1])
    assert values['floe_command_latency_seconds_count{command="get"}'] == 20
    assert r.config_resetstat()
    info = r.info("everything")
    assert "latency_percentiles_usec_get" not in info and "cmdstat_get" not in info
    assert info["keyspace_hits"] == 0
    values = parse_metrics(call(s, "GET", "/metrics")[1])
    assert 'floe_command_latency_seconds_count{command="get"}' not in values
    assert 'floe_command_calls_total{command="get"}' not in values


def test_auth_every_request(node):
    s = node("--requirepass", "pw")
    status, body, resp = call(s, "GET", "/api/cluster")
    assert status == 401 and body == {"error": "NOAUTH Authentication required."}
    assert resp.getheader("WWW-Authenticate").startswith("Basic")
    status, body, _ = call(s, "GET", "/api/cluster", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and body["error"].startswith("WRONGPASS")
    assert call(s, "GET", "/api/cluster", headers={"Authorization": "Bearer pw"})[0] == 200
    basic = "Basic " + base64.b64encode(b"default:pw").decode()
    assert call(s, "GET", "/metrics", headers={"Authorization": basic})[0] == 200
    # Without the password the body is not read: the 401 comes before it is sent.
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=5) as c:
        c.sendall(b"POST /api/command HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 401")


def test_non_loopback_http_bind_needs_a_password():
    out = subprocess.run([FLOE_BIN, "serve", "--port", "0", "--http-port", str(free_port()),
                          "--http-bind", "0.0.0.0"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2
    assert "requirepass" in out.stderr


def test_limits_answer_with_json_errors(node):
    s = node()
    r = s.client()
    r.config_set("proto-max-bulk-len", 2048)
    status, body = raw_request(s.http_port, b"GET /api/cluster HTTP/1.1\r\nHost: localhost\r\nX-Big: " +
                               b"a" * 20000 + b"\r\n\r\n")
    assert status == 431 and b"error" in body
    status, body = raw_request(s.http_port, b"PUT /api/keys/k HTTP/1.1\r\nHost: localhost\r\n"
                               b"Content-Length: 5000\r\n\r\n" + b"x" * 5000)
    assert status == 413 and json.loads(body)["error"].startswith("ERR")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (3000, b"y" * 3000)
    status, body = raw_request(s.http_port, b"POST /api/command HTTP/1.1\r\nHost: localhost\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert status == 413
    status, body = raw_request(s.http_port, b"GET /api/keys/bad%zzkey HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert status == 400 and json.loads(body)["error"].startswith("ERR bad URL escape")
    status, body = raw_request(s.http_port, b"NONSENSE\r\n\r\n")
    assert status == 400
    assert call(s, "GET", "/nowhere")[0] == 404
    assert call(s, "DELETE", "/api/cluster")[0] == 405
    # The node still serves both protocols.
    assert r.ping() and call(s, "GET", "/api/cluster")[0] == 200


def test_keep_alive_and_pipelined_requests(node):
    s = node()
    req = b"GET /api/keys/nope HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=10) as c:
        c.sendall(req * 3)
        data = b""
        deadline = time.time() + 10
        while data.count(b"HTTP/1.1 404") < 3 and time.time() < deadline:
            data += c.recv(65536)
    assert data.count(b"HTTP/1.1 404") == 3


def serve_resp_briefly(port):
    """Starts `floe serve` on RESP `port` with the default HTTP port, checks RESP answers, stops
    it; returns what it printed."""
    proc = subprocess.Popen([FLOE_BIN, "serve", "--port", str(port), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"PING\r\n")
            assert c.recv(100) == b"+PONG\r\n"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode()
    return out


def test_derived_default_port(make_floe):
    # http-port -1 (the default) is RESP port + 1000; if that is taken the node serves RESP alone.
    for _ in range(20):
        port = free_port()
        blocker = socket.socket()
        try:
            blocker.bind(("127.0.0.1", port + 1000))
            break
        except OSError:
            blocker.close()
    blocker.listen()
    try:
        out = serve_resp_briefly(port)
    finally:
        blocker.close()
    assert "HTTP is off" in out
    # Free, it is taken.
    s = make_floe()
    wait_for_port(s.port + 1000, s.proc)
    conn = http.client.HTTPConnection("127.0.0.1", s.port + 1000, timeout=10)
    conn.request("GET", "/api/cluster")
    assert conn.getresponse().status == 200


def test_a_request_slower_than_the_request_timeout_gets_408(node):
    s = node("--http-request-timeout", "300")
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=10) as c:
        c.sendall(b"GET /api/cluster HTTP/1.1\r\nHost: localhost\r\n")  # the headers never end
        out = b""
        while True:  # the node answers and closes (a timeout here raises)
            chunk = c.recv(65536)
            if not chunk:
                break
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
    assert json.loads(body) == {"error": "ERR the request did not arrive in time"}
    assert s.client().ping()


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(node):
    s = node("--http-idle-timeout", "300")
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=10) as c:
        c.sendall(b"GET /api/cluster HTTP/1.1\r\nHost: localhost\r\n\r\n")
        out = b""
        while b"\r\n\r\n" not in out:
            out += c.recv(65536)
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        while len(body) < length:
            body += c.recv(65536)
        # Kept alive, then idle: the node closes it (a timeout here raises).
        assert c.recv(65536) == b""


def test_the_timeouts_are_settings(node):
    s = node("--http-request-timeout", "1234", "--http-idle-timeout", "5678")
    r = s.client(decode_responses=True)
    assert r.config_get("http-*-timeout") == {"http-request-timeout": "1234",
                                              "http-idle-timeout": "5678"}
    for bad in ("0", "-1", "x"):
        out = subprocess.run([FLOE_BIN, "serve", "--port", "0", "--http-request-timeout", bad],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 2 and "http-request-timeout" in out.stderr, bad


def test_an_http_port_out_of_range_is_refused_at_start():
    for bad in ("65536", "70000", "-2"):
        out = subprocess.run([FLOE_BIN, "serve", "--port", "0", "--http-port", bad],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 2, bad
        assert "--http-port: argument must be between -1 and 65535 inclusive" in out.stderr, bad


def test_a_resp_port_with_no_derived_http_port_logs_that_http_is_off():
    # Port + 1000 is past 65535: no HTTP port can be derived. The node serves RESP and says,
    # in one line, that HTTP is off and how to turn it on.
    for port in range(64536, 65536):
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
        finally:
            probe.close()
    out = serve_resp_briefly(port)
    lines = [l for l in out.splitlines() if "HTTP is off" in l]
    assert len(lines) == 1, out
    assert f"port {port}" in lines[0] and "--http-port" in lines[0], lines[0]


def test_maxclients_counts_http_connections(node):
    s = node()
    r = s.client()
    r.ping()
    r.config_set("maxclients", 1)  # the RESP client is the one
    status, body = raw_request(s.http_port, b"GET /api/cluster HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status == 503 and json.loads(body)["error"] == "ERR max number of clients reached"
    r.config_set("maxclients", 10)
    assert call(s, "GET", "/api/cluster")[0] == 200


def test_http_buffers_are_given_back(node):
    s = node()
    r = s.client()
    before = r.info("memory")["mem_clients_normal"]
    for _ in range(5):
        assert call(s, "PUT", "/api/keys/big", {"value": "x" * 100000})[0] == 200
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=5) as c:  # cut short
        c.sendall(b"PUT /api/keys/k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"v")
    deadline = time.time() + 5
    while r.info("clients")["connected_clients"] > 1 and time.time() < deadline:
        time.sleep(0.05)
    # The RESP client's own read buffer may have grown or shrunk meanwhile (16 KiB steps); the
    # HTTP bodies were 5 x 100 KB.
    assert abs(r.info("memory")["mem_clients_normal"] - before) <= 32 << 10


def test_web_page_is_served(node):
    s = node()
    status, page, resp = call(s, "GET", "/")
    assert status == 200 and resp.getheader("Content-Type").startswith("text/html")
    assert "<title>Floe</title>" in page
    # It calls only endpoints the node serves.
    for path in set(re.findall(r'"(/api/[a-z]+)', page)):
        assert path in ("/api/cluster", "/api/keys", "/api/frames", "/api/jobs", "/api/command"), path
    assert "default-src 'self'" in resp.getheader("Content-Security-Policy")


def test_cluster_members_and_keys_homed_elsewhere():
    from floe_cluster import ClusterFactory
    factory = ClusterFactory()
    try:
        http_ports = [free_port() for _ in range(3)]
        cluster = factory.make(3, per_node_extra={i: ["--http-port", str(p)]
                                                  for i, p in enumerate(http_ports)})
        cluster.wait_formed()

        class At:
            def __init__(self, port):
                self.http_port = port
        first = At(http_ports[0])
        status, body, _ = call(first, "GET", "/api/cluster")
        assert status == 200 and body["mode"] == "cluster"
        assert len(body["members"]) == 3 and all(m["state"] == "up" for m in body["members"])
        assert body["cluster"]["cluster_state"] == "ok"
        # A key homed at another node, written over HTTP at the first, read at every node.
        key = cluster.keys_at(2, 1)[0]
        assert call(first, "PUT", "/api/keys/" + key, {"value": "across"})[0] == 200
        home = cluster[2].conn()
        assert home.call("GET", key) == b"across"
        for p in http_ports:
            status, body, _ = call(At(p), "GET", "/api/keys/" + key)
            assert status == 200 and body["value"] == "across", p
        status, body, _ = call(At(http_ports[1]), "POST", "/api/command", ["GET", key])
        assert (status, body) == (200, "across")
        status, text, _ = call(first, "GET", "/metrics")
        values = parse_metrics(text)
        assert values["floe_cluster_forwarded_total"] >= 1
        assert any(k.startswith("floe_cluster_rpc_") for k in values)
    finally:
        problems = factory.close()
    assert not problems, "\n".join(problems)


def test_a_command_waiting_for_another_node_does_not_hold_the_io_thread():
    """An HTTP request for a key homed at a stopped node waits for it; meanwhile the node's
    only I/O thread (--threads 1) goes on answering its RESP clients. Before the HTTP path
    was asynchronous it waited in the I/O thread, and every client of the node waited too."""
    import threading
    from floe_cluster import ClusterFactory, freeze
    factory = ClusterFactory()
    try:
        http_port = free_port()
        cluster = factory.make(3, node_timeout=20000, start=False,
                               per_node_extra={0: ["--http-port", str(http_port)]})
        usual = cluster[0].args()
        at = usual.index("--threads") + 1
        cluster[0].args = lambda: usual[:at] + ["1"] + usual[at + 1:]
        for n in cluster.nodes:
            n.start()
        cluster.wait_formed()
        key = cluster.keys_at(2, 1, prefix="far")[0]
        cluster[2].conn().call("SET", key, "far away")
        first = cluster[0]
        resp = first.conn(timeout=5)
        freeze(cluster[2].proc.pid)
        result = {}

        def ask(name, command):
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
            try:
                conn.request("POST", "/api/command", body=json.dumps(command).encode())
                r = conn.getresponse()
                result[name] = (r.status, json.loads(r.read()))
            except (ConnectionError, http.client.HTTPException) as e:
                result[name] = e
            finally:
                conn.close()
        asker = threading.Thread(target=ask, args=("reply", ["GET", key]))
        asker.start()
        # A second request waits too, and its connection is killed meanwhile (CLIENT KILL):
        # the request ends without an answer, and the reply that comes later finds it gone.
        killed = threading.Thread(target=ask, args=("killed", ["STRLEN", key]))
        killed.start()
        try:
            # The HTTP client's GET is under way (CLIENT LIST shows it), and RESP clients of
            # the same thread are answered meanwhile (a timeout here raises).
            deadline = time.time() + 10
            while True:
                clients = [line for line in resp.call("CLIENT", "LIST").decode().splitlines()
                           if f"laddr=127.0.0.1:{http_port}" in line]
                if (any("cmd=get" in line for line in clients) and
                        any("cmd=strlen" in line for line in clients)):
                    break
                assert time.time() < deadline, clients
                time.sleep(0.05)
            for _ in range(5):
                assert resp.call("PING") == b"PONG"
                assert first.conn(timeout=5).call("PING") == b"PONG"  # and new ones
            assert "reply" not in result and "killed" not in result  # the home is stopped
            victim = next(line for line in clients if "cmd=strlen" in line)
            victim_id = re.search(r"\bid=(\d+)", victim).group(1)
            assert resp.call("CLIENT", "KILL", "ID", victim_id) == 1
            killed.join(timeout=10)
            assert isinstance(result.get("killed"), Exception), result.get("killed")
            assert resp.call("PING") == b"PONG"
        finally:
            os.kill(cluster[2].proc.pid, signal.SIGCONT)
            asker.join(timeout=40)
            killed.join(timeout=40)
        assert result.get("reply") == (200, "far away")
        assert resp.call("PING") == b"PONG"
    finally:
        problems = factory.close()
    assert not problems, "\n".join(problems)


def test_expect_100_continue(node):
    s = node()
    body = json.dumps({"value": "v" * 5000}).encode()
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=5) as c:
        c.sendall(b"PUT /api/keys/big HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        assert c.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.sendall(body)
        assert c.recv(100).startswith(b"HTTP/1.1 200 OK")
    assert s.client().strlen("big") == 5000
    # A body over the limit is refused before the client sends it.
    s.client().config_set("proto-max-bulk-len", 2048)
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=5) as c:
        c.sendall(b"PUT /api/keys/big HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        assert c.recv(100).startswith(b"HTTP/1.1 413")


def test_an_announced_body_is_not_reserved_whole(node):
    s = node()
    r = s.client()
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=5) as c:
        c.sendall(b"PUT /api/keys/k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n\r\n{")
        deadline = time.time() + 5
        while r.info("clients")["connected_clients"] < 2 and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the bytes sent are read
        assert r.info("memory")["mem_clients_normal"] < 4 << 20


def test_an_explicit_http_port_that_is_taken_stops_the_node():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        out = subprocess.run([FLOE_BIN, "serve", "--port", "0", "--http-port",
                              str(blocker.getsockname()[1])], capture_output=True, text=True,
                             timeout=10)
    finally:
        blocker.close()
    assert out.returncode == 1
    assert "cannot listen for HTTP" in out.stderr


def test_a_client_leaving_a_waiting_request_frees_its_connection_and_a_late_one_gets_504():
    """While a request waits for a stopped home: a client that closes its connection ends the
    request at once (before, its connection, session and slot stayed until the home answered
    or the node timeout passed), and a request not answered within http-request-timeout gets
    504 and the connection closes (before, it waited for the home however long that took)."""
    from floe_cluster import ClusterFactory, freeze
    factory = ClusterFactory()
    try:
        patient, hasty = free_port(), free_port()
        cluster = factory.make(3, node_timeout=20000, per_node_extra={
            0: ["--http-port", str(patient), "--http-request-timeout", "30000"],
            1: ["--http-port", str(hasty), "--http-request-timeout", "1000"]})
        cluster.wait_formed()
        key = cluster.keys_at(2, 1, prefix="far")[0]
        cluster[2].conn().call("SET", key, "far away")
        resp = cluster[0].conn(timeout=5)
        freeze(cluster[2].proc.pid)
        try:
            def http_clients():
                return [line for line in resp.call("CLIENT", "LIST").decode().splitlines()
                        if f"laddr=127.0.0.1:{patient}" in line]
            body = json.dumps(["GET", key]).encode()
            leaver = socket.create_connection(("127.0.0.1", patient), timeout=5)
            leaver.sendall(b"POST /api/command HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
                           str(len(body)).encode() + b"\r\n\r\n" + body)
            deadline = time.time() + 10
            while not any("cmd=get" in line for line in http_clients()):
                assert time.time() < deadline, http_clients()
                time.sleep(0.05)
            leaver.close()
            deadline = time.time() + 5
            while http_clients():
                assert time.time() < deadline, http_clients()
                time.sleep(0.05)

            conn = http.client.HTTPConnection("127.0.0.1", hasty, timeout=15)
            started = time.time()
            conn.request("POST", "/api/command", body=body)
            r = conn.getresponse()
            answer = json.loads(r.read())
            assert r.status == 504, (r.status, answer)
            assert "http-request-timeout" in answer["error"]
            assert r.getheader("Connection") == "close"
            assert time.time() - started < 10
            conn.close()
            assert resp.call("PING") == b"PONG"
        finally:
            os.kill(cluster[2].proc.pid, signal.SIGCONT)
        # The node serves the key again once its home is back.
        status, value, _ = call(type("At", (), {"http_port": hasty})(), "POST", "/api/command",
                                ["GET", key])
        assert (status, value) == (200, "far away")
    finally:
        problems = factory.close()
    assert not problems, "\n".join(problems)


# ---- Frames and jobs (docs/api.md, "Frames" and "Jobs") ----

def wait_http_job(s, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job, _ = call(s, "GET", f"/api/jobs/{job_id}")
        assert status == 200, job
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def write_small_csv(path):
    # 6 rows: an int column with one NA, a real column, a categorical one.
    path.write_text("id,price,region\n1,2.5,north\n2,,south\n3,4.25,north\n4,8,east\n"
                    "5,1.5,south\nNA,3,north\n")


def node_with_small_frame(node, tmp_path, name):
    """A node whose import dir holds the small CSV, imported over HTTP as frame `name`; the node
    and the import's job."""
    s = node("--import-dir", str(tmp_path))
    write_small_csv(tmp_path / f"{name}.csv")
    status, job, _ = call(s, "POST", "/api/frames", {"name": name, "path": f"{name}.csv"})
    assert status == 202, job
    wait_http_job(s, job["id"])
    return s, job


def test_frames_import_inspect_and_drop(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    r = s.client(decode_responses=True)
    write_small_csv(tmp_path / "sales.csv")
    status, job, resp = call(s, "POST", "/api/frames", {"name": "sales", "path": "sales.csv",
                                                         "types": ["int", "real", "cat"]})
    assert status == 202 and resp.reason == "Accepted", job
    assert resp.getheader("Location") == f"/api/jobs/{job['id']}"
    assert job["kind"] == "import" and job["state"] in ("running", "done")
    job = wait_http_job(s, job["id"])
    assert job["state"] == "done" and job["error"] == ""
    assert isinstance(job["percent"], (int, float)) and job["percent"] == 100
    assert job["rows"] == 6

    status, listed, _ = call(s, "GET", "/api/frames")
    assert status == 200 and listed == {"frames": ["sales"], "truncated": False}
    assert r.execute_command("FRAME.LIST") == ["sales"]

    status, info, _ = call(s, "GET", "/api/frames/sales")
    assert status == 200, info
    assert info["name"] == "sales" and info["rows"] == 6 and info["columns"] == 3
    assert info["compressed_bytes"] > 0 and info["raw_bytes"] > 0
    vecs = {v["name"]: v for v in info["vecs"]}
    assert [v["name"] for v in info["vecs"]] == ["id", "price", "region"]
    assert (vecs["id"]["type"], vecs["id"]["na"]) == ("integer", 1)
    assert (vecs["price"]["type"], vecs["price"]["na"]) == ("real", 1)
    assert (vecs["region"]["type"], vecs["region"]["levels"]) == ("categorical", 3)
    assert all(v["layouts"] for v in info["vecs"])

    status, head, _ = call(s, "GET", "/api/frames/sales/head?n=3")
    assert status == 200, head
    assert head == {"columns": ["id", "price", "region"],
                    "rows": [["1", "2.5", "north"], ["2", None, "south"], ["3", "4.25", "north"]]}
    status, head, _ = call(s, "GET", "/api/frames/sales/head")
    assert status == 200 and len(head["rows"]) == 6

    status, summary, _ = call(s, "GET", "/api/frames/sales/columns/price/summary?bins=4")
    assert status == 200, summary
    assert (summary["column"], summary["count"], summary["na"]) == ("price", 5, 1)
    assert (summary["min"], summary["max"]) == (1.5, 8)
    assert summary["mean"] == pytest.approx((2.5 + 4.25 + 8 + 1.5 + 3) / 5)
    assert isinstance(summary["sd"], float)
    assert len(summary["histogram"]) == 4 and sum(summary["histogram"]) == 5
    assert len(summary["bin_starts"]) == 4 and summary["bin_starts"][0] == 1.5
    # By 0-based index too, as FRAME.SUMMARY takes it.
    status, by_index, _ = call(s, "GET", "/api/frames/sales/columns/1/summary?bins=4")
    assert status == 200 and by_index == summary

    status, q, _ = call(s, "GET", "/api/frames/sales/columns/id/quantiles?p=0,1")
    assert status == 200 and q == {"quantiles": [1, 5]}

    status, body, _ = call(s, "DELETE", "/api/frames/sales")
    assert status == 200 and body == {"deleted": 1}
    assert r.exists("sales") == 0
    status, body, _ = call(s, "DELETE", "/api/frames/sales")
    assert status == 404 and body == {"error": "ERR no such frame"}


def test_jobs_list_status_and_cancel(node, tmp_path):
    s, job = node_with_small_frame(node, tmp_path, "a")
    status, jobs, _ = call(s, "GET", "/api/jobs")
    assert status == 200
    assert [(j["id"], j["kind"], j["state"], j["percent"]) for j in jobs["jobs"]] == [
        (job["id"], "import", "done", 100)]
    assert "a.csv" in jobs["jobs"][0]["description"]
    # A finished job cannot be cancelled: 409 with JOB.CANCEL's text.
    status, body, _ = call(s, "POST", f"/api/jobs/{job['id']}/cancel")
    assert status == 409 and body["error"] == f"ERR job {job['id']} already finished"

    # A running import cancelled over HTTP: whole either way (cancelled and no frame, or done
    # first and the whole frame), as over RESP.
    rng = random.Random(5)
    with open(tmp_path / "big.csv", "w") as f:
        f.write("a,b\n")
        for i in range(600_000):
            f.write(f"{i},{rng.random()}\n")
    status, job, _ = call(s, "POST", "/api/frames", {"name": "big", "path": "big.csv"})
    assert status == 202, job
    status, body, _ = call(s, "POST", f"/api/jobs/{job['id']}/cancel")
    assert status in (200, 409), body
    final = wait_http_job(s, job["id"])
    if final["state"] == "cancelled":
        assert status == 200 and call(s, "GET", "/api/frames/big")[0] == 404
    else:
        assert final["state"] == "done"
        assert call(s, "GET", "/api/frames/big")[1]["rows"] == 600_000


def test_frames_and_jobs_refuse_hostile_input(node, tmp_path):
    s, job = node_with_small_frame(node, tmp_path, "t")
    cases = [
        # Rows, bins and probabilities: the commands' own ranges and texts.
        ("GET", "/api/frames/t/head?n=1001", None, 400, "ERR n must be between 0 and 1000"),
        ("GET", "/api/frames/t/head?n=-1", None, 400, "ERR n must be between 0 and 1000"),
        ("GET", "/api/frames/t/head?n=99999999999999999999999", None, 400, "ERR value is not an integer or out of range"),
        ("GET", "/api/frames/t/head?n=1%20x", None, 400, "ERR value is not an integer or out of range"),
        ("GET", "/api/frames/t/columns/price/summary?bins=0", None, 400, "ERR BINS must be between 1 and 10000"),
        ("GET", "/api/frames/t/columns/price/summary?bins=18446744073709551617", None, 400, "ERR value is not an integer or out of range"),
        ("GET", "/api/frames/t/columns/nope/summary", None, 400, "ERR no such column 'nope'"),
        ("GET", "/api/frames/t/columns/price/quantiles?p=2", None, 400, None),
        ("GET", "/api/frames/t/columns/price/quantiles?p=" + ",".join(["0.5"] * 1000), None, 400, None),
        ("GET", "/api/frames/t/columns/price/quantiles", None, 400, "ERR p is required: p=0.5,0.9"),
        # Names.
        ("GET", "/api/frames/nope", None, 404, "ERR no such frame"),
        ("GET", "/api/frames/" + "x" * 5000, None, 404, "ERR no such frame"),
        ("GET", "/api/frames/bad%zz", None, 400, None),
        ("GET", "/api/frames/nope/head", None, 404, "ERR no such frame"),
        ("POST", "/api/frames", {"name": "a{b}", "path": "t.csv"}, 400, None),
        ("POST", "/api/frames", {"name": "x" * 600, "path": "t.csv"}, 400, None),
        ("POST", "/api/frames", {"name": "t", "path": "t.csv"}, 400, "ERR target key exists (FRAME.IMPORT and FRAME.GROUPBY take REPLACE)"),
        ("POST", "/api/frames", {"name": "u", "path": "/etc/passwd"}, 400, None),
        ("POST", "/api/frames", {"name": "u", "path": "../t.csv"}, 400, None),
        ("POST", "/api/frames", {"name": "u", "path": "missing.csv"}, 400, None),
        # Bad JSON and bad fields.
        ("POST", "/api/frames", b"{not json", 400, None),
        ("POST", "/api/frames", b"[" * 100 + b"]" * 100, 400, "ERR the request body nests too deeply"),
        ("POST", "/api/frames", ["t", "t.csv"], 400, 'ERR the body must be an object with string "name" and "path"'),
        ("POST", "/api/frames", {"name": 1, "path": "t.csv"}, 400, 'ERR the body must be an object with string "name" and "path"'),
        ("POST", "/api/frames", {"name": "u", "path": "t.csv", "header": "yes"}, 400, "ERR header must be true or false"),
        ("POST", "/api/frames", {"name": "u", "path": "t.csv", "types": "int"}, 400, "ERR types must be an array of strings"),
        ("POST", "/api/frames", {"name": "u", "path": "t.csv", "types": ["int,real"]}, 400, "ERR types entries cannot hold a comma"),
        ("POST", "/api/frames", {"name": "u", "path": "t.csv", "types": ["nope"]}, 400, None),
        ("POST", "/api/frames", {"name": "u", "path": "t.csv", "sep": "ab"}, 400, None),
        ("POST", "/api/frames", {"name": "u", "path": "t.csv", "bogus": 1}, 400, "ERR unknown field 'bogus'"),
        # Job ids.
        ("GET", "/api/jobs/0", None, 400, "ERR a job id is a positive integer"),
        ("GET", "/api/jobs/-1", None, 400, "ERR a job id is a positive integer"),
        ("GET", "/api/jobs/abc", None, 400, "ERR a job id is a positive integer"),
        ("GET", "/api/jobs/18446744073709551616", None, 400, "ERR a job id is a positive integer"),
        ("GET", "/api/jobs/" + "9" * 5000, None, 400, "ERR a job id is a positive integer"),
        ("GET", "/api/jobs/999", None, 404, "ERR no such job"),
        ("POST", "/api/jobs/999/cancel", None, 404, "ERR no such job"),
        ("POST", "/api/jobs/x/cancel", None, 400, "ERR a job id is a positive integer"),
        ("PUT", "/api/jobs/1", None, 405, "ERR method not allowed"),
    ]
    for method, path, body, want_status, want_error in cases:
        status, got, _ = call(s, method, path, body)
        assert status == want_status, (method, path[:80], got)
        assert set(got) == {"error"}, (path[:80], got)
        if want_error is not None:
            assert got["error"] == want_error, (path[:80], got)
    # Nothing was imported by the refused requests, and the node still serves.
    assert call(s, "GET", "/api/frames")[1]["frames"] == ["t"]
    assert [j["id"] for j in call(s, "GET", "/api/jobs")[1]["jobs"]] == [job["id"]]
    assert s.client().ping()


def test_frame_endpoints_read_resp3_replies_too(node, tmp_path):
    """A connection that switched to RESP3 (HELLO 3 through /api/command) gets maps and real
    doubles from the commands: the endpoints answer the same JSON."""
    s, job = node_with_small_frame(node, tmp_path, "t")
    paths = ["/api/frames/t", "/api/frames/t/head?n=2", "/api/frames/t/columns/price/summary?bins=3",
             "/api/frames/t/columns/price/quantiles?p=0.5,1", "/api/jobs", f"/api/jobs/{job['id']}"]
    resp2 = {p: call(s, "GET", p)[1] for p in paths}
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=10)
    try:
        conn.request("POST", "/api/command", body=json.dumps(["HELLO", "3"]))
        hello = json.loads(conn.getresponse().read())
        assert hello["proto"] == 3
        for p in paths:
            conn.request("GET", p)
            got = conn.getresponse()
            body = json.loads(got.read())
            assert got.status == 200, (p, body)
            if p.startswith("/api/jobs"):  # elapsed_ms moves on while nothing else does
                for j in [body] if "id" in body else body["jobs"]:
                    j.pop("elapsed_ms", None)
                for j in [resp2[p]] if "id" in resp2[p] else resp2[p]["jobs"]:
                    j.pop("elapsed_ms", None)
            assert body == resp2[p], p
    finally:
        conn.close()


# ---- Group-by, upload and CSV export over HTTP (docs/api.md, "Frames") ----

def import_small(s, tmp_path, name="t"):
    write_small_csv(tmp_path / f"{name}.csv")
    status, job, _ = call(s, "POST", "/api/frames", {"name": name, "path": f"{name}.csv",
                                                     "types": ["int", "real", "cat"]})
    assert status == 202, job
    assert wait_http_job(s, job["id"])["state"] == "done"


def test_frame_groupby_makes_a_new_frame(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    import_small(s, tmp_path)
    body = {"into": "by region", "keys": ["region"],
            "aggs": [{"fn": "count", "column": "id"}, {"fn": "sum", "column": "price"}]}
    status, got, resp = call(s, "POST", "/api/frames/t/groupby", body)
    assert status == 201 and resp.reason == "Created", got
    assert got == {"name": "by region", "groups": 3}
    assert resp.getheader("Location") == "/api/frames/by%20region"
    status, head, _ = call(s, "GET", resp.getheader("Location") + "/head")
    assert status == 200, head
    assert head["columns"] == ["region", "count", "sum_price"]
    sums = {row[0]: float(row[2]) for row in head["rows"]}
    assert sums == {"north": 9.75, "south": 1.5, "east": 8.0}
    # Once more: the target exists; with replace it is written again. Keys by index work too.
    status, got, _ = call(s, "POST", "/api/frames/t/groupby", body)
    assert status == 400 and got["error"].startswith("ERR target key exists"), got
    status, got, _ = call(s, "POST", "/api/frames/t/groupby", {**body, "keys": ["2"], "replace": True})
    assert status == 201 and got["groups"] == 3, got


def test_frame_select_and_filter_make_new_frames(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    import_small(s, tmp_path)
    status, got, resp = call(s, "POST", "/api/frames/t/select",
                             {"into": "price list", "columns": ["price", "0"]})
    assert status == 201 and resp.reason == "Created", got
    assert got == {"name": "price list", "columns": 2}
    assert resp.getheader("Location") == "/api/frames/price%20list"
    status, head, _ = call(s, "GET", resp.getheader("Location") + "/head")
    assert head["columns"] == ["price", "id"] and head["rows"][1] == [None, "2"], head
    status, got, _ = call(s, "POST", "/api/frames/t/select", {"into": "price list", "columns": ["id"]})
    assert status == 400 and got["error"].startswith("ERR target key exists"), got
    status, got, _ = call(s, "POST", "/api/frames/t/select",
                          {"into": "price list", "columns": ["id"], "replace": True})
    assert status == 201 and got["columns"] == 1, got

    where = [{"column": "price", "op": "<", "value": 3}, {"column": "region", "op": "=", "value": "north"}]
    status, got, resp = call(s, "POST", "/api/frames/t/filter", {"into": "cheap", "where": where})
    assert status == 201 and got == {"name": "cheap", "rows": 1}, got
    assert resp.getheader("Location") == "/api/frames/cheap"
    status, head, _ = call(s, "GET", "/api/frames/cheap/head")
    assert head["rows"] == [["1", "2.5", "north"]], head
    # A number as text, a real value, NA tests, and the same through RESP.
    for body, rows in [
        ({"where": [{"column": "price", "op": ">=", "value": "4.25"}]}, 2),
        ({"where": [{"column": "price", "op": ">", "value": 4.2}]}, 2),
        ({"where": [{"column": "price", "op": "isna"}]}, 1),
        ({"where": [{"column": "id", "op": "=", "value": 99}]}, 0),
        ({"where": [{"column": "id", "op": "notna"}, {"column": "region", "op": "!=", "value": "north"}]}, 3),
    ]:
        status, got, _ = call(s, "POST", "/api/frames/t/filter", {"into": "f", "replace": True, **body})
        assert status == 201 and got["rows"] == rows, (body, got)
    r = s.client()
    assert r.execute_command("FRAME.FILTER", "t", "g", "WHERE", "id", "NOTNA", "AND", "region",
                             "!=", "north") == 3
    assert call(s, "GET", "/api/frames/g/csv")[1] == call(s, "GET", "/api/frames/f/csv")[1] == \
        'id,price,region\r\n2,,"south"\r\n4,8,"east"\r\n5,1.5,"south"\r\n'
    status, got, _ = call(s, "POST", "/api/frames/nope/filter", {"into": "x", "where": where})
    assert status == 404 and got == {"error": "ERR no such frame"}
    status, got, _ = call(s, "POST", "/api/frames/nope/select", {"into": "x", "columns": ["a"]})
    assert status == 404 and got == {"error": "ERR no such frame"}


def test_frame_select_and_filter_refuse_bad_bodies(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    import_small(s, tmp_path)
    into = 'ERR the body must be an object with a string "into"'
    cond = {"column": "price", "op": "<", "value": 3}
    cases = [
        ("select", {"columns": ["id"]}, into),
        ("select", ["x"], into),
        ("select", {"into": "x"}, 'ERR the body needs "columns"'),
        ("select", {"into": "x", "columns": []}, 'ERR columns must be a non-empty array of strings: column names, or indexes as "0"'),
        ("select", {"into": "x", "columns": [0]}, 'ERR columns must be a non-empty array of strings: column names, or indexes as "0"'),
        ("select", {"into": "x", "columns": ["id", "replace"]}, "ERR a column named REPLACE: give its 0-based index"),
        ("select", {"into": "x", "columns": ["id", "id"]}, "ERR column 'id' given twice"),
        ("select", {"into": "x", "columns": ["id"] * 4}, "ERR more columns than the frame has (3)"),
        ("select", {"into": "x", "columns": ["nope"]}, "ERR no such column 'nope'"),
        ("select", {"into": "a{b}", "columns": ["id"]}, None),
        ("select", {"into": "x", "columns": ["id"], "replace": 1}, "ERR replace must be true or false"),
        ("select", {"into": "x", "columns": ["id"], "bogus": 1}, "ERR unknown field 'bogus'"),
        ("filter", {"where": [cond]}, into),
        ("filter", {"into": "x"}, 'ERR the body needs "where"'),
        ("filter", {"into": "x", "where": []}, None),
        ("filter", {"into": "x", "where": [["price", "<", 3]]}, None),
        ("filter", {"into": "x", "where": [cond] * 17}, "ERR at most 16 conditions"),
        ("filter", {"into": "x", "where": [{"column": "price", "op": "<"}]}, None),
        ("filter", {"into": "x", "where": [{"column": "price", "op": "isna", "value": 1}]},
         "ERR isna and notna take no value"),
        ("filter", {"into": "x", "where": [{**cond, "value": None}]},
         "ERR a condition's value is a string or a number"),
        ("filter", {"into": "x", "where": [{**cond, "value": [1]}]},
         "ERR a condition's value is a string or a number"),
        ("filter", {"into": "x", "where": [{**cond, "extra": 1}]}, None),
        ("filter", {"into": "x", "where": [{**cond, "op": "~"}]},
         "ERR unknown operator '~' (=, !=, <, <=, >, >=, ISNA, NOTNA)"),
        ("filter", {"into": "x", "where": [{**cond, "value": "cheap"}]},
         "ERR column 'price' is compared with a number, not 'cheap'"),
        ("filter", {"into": "x", "where": [{**cond, "column": "nope"}]}, "ERR no such column 'nope'"),
        ("filter", {"into": "t", "where": [cond]}, None),
        ("filter", {"into": "x", "where": [cond], "bogus": 1}, "ERR unknown field 'bogus'"),
        ("filter", b"[" * 100 + b"]" * 100, "ERR the request body nests too deeply"),
    ]
    for route, body, want in cases:
        status, got, _ = call(s, "POST", f"/api/frames/t/{route}", body)
        assert status == 400, (route, str(body)[:80], got)
        assert want is None or got == {"error": want}, (route, str(body)[:80], got)
    assert sorted(call(s, "GET", "/api/frames")[1]["frames"]) == ["t"]


def test_frame_groupby_refuses_hostile_input(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    import_small(s, tmp_path)
    agg = [{"fn": "sum", "column": "price"}]
    cases = [
        ({"into": "g", "keys": ["region"]}, 400, 'ERR the body needs "keys" and "aggs"'),
        ({"keys": ["region"], "aggs": agg}, 400, 'ERR the body must be an object with a string "into"'),
        ({"into": 5, "keys": ["region"], "aggs": agg}, 400, 'ERR the body must be an object with a string "into"'),
        (["g"], 400, 'ERR the body must be an object with a string "into"'),
        (b"{nope", 400, None),
        (b"[" * 100 + b"]" * 100, 400, "ERR the request body nests too deeply"),
        ({"into": "g", "keys": [], "aggs": agg}, 400, 'ERR keys must be a non-empty array of strings: column names, or indexes as "0"'),
        ({"into": "g", "keys": "region", "aggs": agg}, 400, 'ERR keys must be a non-empty array of strings: column names, or indexes as "0"'),
        ({"into": "g", "keys": [1], "aggs": agg}, 400, 'ERR keys must be a non-empty array of strings: column names, or indexes as "0"'),
        ({"into": "g", "keys": ["region"] * 33, "aggs": agg}, 400, "ERR at most 32 keys and 100 aggregates"),
        ({"into": "g", "keys": ["region"], "aggs": agg * 101}, 400, "ERR at most 32 keys and 100 aggregates"),
        ({"into": "g", "keys": ["agg"], "aggs": agg}, 400, "ERR a key column named AGG: give its 0-based index"),
        ({"into": "g", "keys": ["region"], "aggs": []}, 400, None),
        ({"into": "g", "keys": ["region"], "aggs": [{"fn": "sum"}]}, 400, None),
        ({"into": "g", "keys": ["region"], "aggs": [{"fn": "sum", "column": "price", "x": 1}]}, 400, None),
        ({"into": "g", "keys": ["region"], "aggs": ["sum", "price"]}, 400, None),
        ({"into": "g", "keys": ["region"], "aggs": [{"fn": "median", "column": "price"}]}, 400, None),
        ({"into": "g", "keys": ["region"], "aggs": [{"fn": "sum", "column": "region"}]}, 400, None),
        ({"into": "g", "keys": ["nope"], "aggs": agg}, 400, "ERR no such column 'nope'"),
        ({"into": "g", "keys": ["99999999999999999999999"], "aggs": agg}, 400, None),
        ({"into": "g", "keys": ["region"], "aggs": [{"fn": "REPLACE", "column": "price"}]}, 400, None),
        ({"into": "a{b}", "keys": ["region"], "aggs": agg}, 400, None),
        ({"into": "x" * 600, "keys": ["region"], "aggs": agg}, 400, None),
        ({"into": "g", "keys": ["region"], "aggs": agg, "replace": "yes"}, 400, "ERR replace must be true or false"),
        ({"into": "g", "keys": ["region"], "aggs": agg, "bogus": 1}, 400, "ERR unknown field 'bogus'"),
    ]
    for body, want_status, want_error in cases:
        status, got, _ = call(s, "POST", "/api/frames/t/groupby", body)
        assert status == want_status, (str(body)[:80], got)
        assert set(got) == {"error"}, (str(body)[:80], got)
        if want_error is not None:
            assert got["error"] == want_error, (str(body)[:80], got)
    status, got, _ = call(s, "POST", "/api/frames/nope/groupby", {"into": "g", "keys": ["region"], "aggs": agg})
    assert status == 404 and got == {"error": "ERR no such frame"}
    status, got, _ = call(s, "GET", "/api/frames/t/groupby")
    assert status == 405, got
    # Nothing was written by the refused requests, and the node still serves.
    assert call(s, "GET", "/api/frames")[1]["frames"] == ["t"]
    assert s.client().ping()


def uploads(tmp_path, s):
    d = tmp_path / f".http-uploads-{s.port}"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def wait_no_uploads(tmp_path, s, timeout=10):
    deadline = time.monotonic() + timeout
    while uploads(tmp_path, s) and time.monotonic() < deadline:
        time.sleep(0.05)
    return uploads(tmp_path, s)


def test_frame_upload_imports_the_body_and_removes_its_file(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    csv = b"id,price,region\n1,2.5,north\n2,,south\n3,4.25,north\n"
    status, job, resp = call(s, "PUT", "/api/frames/up/csv?types=int,real,cat", csv,
                             {"Content-Type": "text/csv"})
    assert status == 202 and resp.reason == "Accepted", job
    assert resp.getheader("Location") == f"/api/jobs/{job['id']}"
    assert job["kind"] == "import"
    job = wait_http_job(s, job["id"])
    assert job["state"] == "done" and job["rows"] == 3, job
    status, info, _ = call(s, "GET", "/api/frames/up")
    assert status == 200 and info["rows"] == 3
    assert [v["type"] for v in info["vecs"]] == ["integer", "real", "categorical"]
    assert wait_no_uploads(tmp_path, s) == []
    mode = (tmp_path / f".http-uploads-{s.port}").stat().st_mode & 0o777
    assert mode == 0o700

    # gzip, found by its magic bytes; options from the query; replace.
    status, job, _ = call(s, "PUT", "/api/frames/up/csv?header=no&sep=%3B&replace=true",
                          gzip.compress(b"7;x\n8;y\n"), {"Content-Encoding": "gzip"})
    assert status == 202, job
    job = wait_http_job(s, job["id"])
    assert job["state"] == "done" and job["rows"] == 2, job
    status, head, _ = call(s, "GET", "/api/frames/up/head")
    assert head["rows"] == [["7", "x"], ["8", "y"]]
    assert wait_no_uploads(tmp_path, s) == []


def test_frame_upload_removes_its_file_when_refused_failed_or_cancelled(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    # Refused by FRAME.IMPORT before a job starts: the file goes at once.
    for url, body in [("/api/frames/a%7Bb%7D/csv", b"a\n1\n"),
                      ("/api/frames/bin/csv", b"a,b\n\x00\x01\x02\n"),
                      ("/api/frames/t/csv?types=nope", b"a\n1\n"),
                      ("/api/frames/t/csv?sep=ab", b"a\n1\n"),
                      ("/api/frames/t/csv?header=maybe", b"a\n1\n")]:
        status, got, _ = call(s, "PUT", url, body)
        assert status == 400 and set(got) == {"error"}, (url, got)
        assert uploads(tmp_path, s) == [], url
    # A cancelled import: whichever way it ends, its file goes.
    rng = random.Random(7)
    big = "a,b\n" + "".join(f"{i},{rng.random()}\n" for i in range(600_000))
    status, job, _ = call(s, "PUT", "/api/frames/big/csv", big.encode())
    assert status == 202, job
    call(s, "POST", f"/api/jobs/{job['id']}/cancel")
    final = wait_http_job(s, job["id"])
    assert final["state"] in ("cancelled", "done"), final
    assert wait_no_uploads(tmp_path, s) == []
    # A job that fails (gzip's magic, then no gzip stream): its file goes too.
    status, job, _ = call(s, "PUT", "/api/frames/broken/csv", b"\x1f\x8b" + b"not gzip" * 100)
    assert status == 202, job
    final = wait_http_job(s, job["id"])
    assert final["state"] == "failed", final
    assert wait_no_uploads(tmp_path, s) == []


def test_frame_upload_refuses_hostile_input(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    cases = [
        ("/api/frames/t/csv", b"", 400, "ERR the body is empty: send the CSV file"),
        ("/api/frames/t/csv?replace=yes", b"a\n1\n", 400, "ERR replace must be true or false"),
        ("/api/frames/t/csv?bogus=1", b"a\n1\n", 400, "ERR unknown parameter 'bogus'"),
        ("/api/frames/t/csv?x=%zz", b"a\n1\n", 400, None),
        ("/api/frames/" + "x" * 600 + "/csv", b"a\n1\n", 400, None),
    ]
    for url, body, want_status, want_error in cases:
        status, got, _ = call(s, "PUT", url, body)
        assert status == want_status, (url[:80], got)
        assert set(got) == {"error"}, (url[:80], got)
        if want_error is not None:
            assert got["error"] == want_error, (url[:80], got)
    # Above proto-max-bulk-len: 413 before the body is read; nothing written.
    s.client().config_set("proto-max-bulk-len", str(1024 * 1024))
    status, got, _ = call(s, "PUT", "/api/frames/t/csv", b"a\n" + b"1\n" * (600 * 1024))
    assert status == 413, got
    assert uploads(tmp_path, s) == []
    status, got, _ = call(s, "POST", "/api/frames/t/csv", b"a\n1\n")
    assert status == 405, got
    assert call(s, "GET", "/api/frames")[1]["frames"] == []
    assert s.client().ping()


def test_frame_upload_needs_a_writable_import_dir(node, tmp_path):
    # import-dir is a file: the upload directory cannot be made there.
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    s = node("--import-dir", str(not_a_dir))
    status, got, _ = call(s, "PUT", "/api/frames/t/csv", b"a\n1\n")
    assert status == 409, got
    assert got["error"].startswith("ERR cannot create") and "import-dir writable" in got["error"]


def test_frame_upload_refuses_an_upload_directory_it_does_not_own_alone(node, tmp_path):
    # With a shared import-dir (/tmp), another local user could make the upload directory first
    # and swap the files in it before FRAME.IMPORT reads them.
    s = node("--import-dir", str(tmp_path))
    d = tmp_path / f".http-uploads-{s.port}"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    status, got, _ = call(s, "PUT", "/api/frames/t/csv", b"a\n1\n")
    assert status == 409 and "not this user's own" in got["error"] and "755" in got["error"], got
    assert list(d.iterdir()) == []


def test_uploads_land_under_the_default_import_dir(node, tmp_path):
    # The default import-dir is <dir>/import (it was the working directory), made on the first
    # upload, private to the user.
    data = tmp_path / "data"
    s = node("--dir", str(data), "--import-dir", "")
    status, job, _ = call(s, "PUT", "/api/frames/t/csv", b"a\n1\n2\n")
    assert status == 202, job
    assert wait_http_job(s, job["id"])["rows"] == 2
    assert (data / "import").stat().st_mode & 0o777 == 0o700
    assert (data / "import" / f".http-uploads-{s.port}").stat().st_mode & 0o777 == 0o700
    (tmp_path / "outside.csv").write_text("a\n1\n")
    status, got, _ = call(s, "POST", "/api/command",
                          ["FRAME.IMPORT", "o", str(tmp_path / "outside.csv")])
    assert status == 400 and "outside import-dir" in got["error"], got


def test_a_restarted_node_removes_uploads_left_behind(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    port = s.port
    assert s.stop() == 0
    left = tmp_path / f".http-uploads-{port}"
    left.mkdir(exist_ok=True)
    (left / "upload-0123456789abcdef.csv").write_text("a\n1\n")
    other = tmp_path / ".http-uploads-1"
    other.mkdir()
    (other / "upload-0123456789abcdef.csv").write_text("a\n1\n")
    # The same node again: same port, same import-dir.
    http_port = free_port()
    proc = subprocess.Popen([FLOE_BIN, "serve", "--port", str(port), "--http-port", str(http_port),
                             "--import-dir", str(tmp_path), "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(http_port, proc)
        assert list(left.iterdir()) == []
        # Another node's directory is not touched.
        assert (other / "upload-0123456789abcdef.csv").exists()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_frame_export_as_csv(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    import_small(s, tmp_path)
    status, text, resp = call(s, "GET", "/api/frames/t/csv")
    assert status == 200, text
    assert resp.getheader("Content-Type") == "text/csv; charset=utf-8"
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert text == ('id,price,region\r\n1,2.5,"north"\r\n2,,"south"\r\n3,4.25,"north"\r\n'
                    '4,8,"east"\r\n5,1.5,"south"\r\n,3,"north"\r\n')
    # Fields that need quoting; an empty string stays "" while NA is an empty field; and what
    # is exported imports back to the same rows.
    csv = b'name,note\n"a,b","say ""hi"""\n"line\nbreak",x\n' + b'c,"" \n'
    status, job, _ = call(s, "PUT", "/api/frames/q/csv?types=string,string", csv)
    assert status == 202, job
    assert wait_http_job(s, job["id"])["state"] == "done"
    status, text, _ = call(s, "GET", "/api/frames/q/csv")
    assert status == 200, text
    head = call(s, "GET", "/api/frames/q/head")[1]
    status, job, _ = call(s, "PUT", "/api/frames/q2/csv?types=string,string", text.encode())
    assert status == 202, job
    assert wait_http_job(s, job["id"])["state"] == "done"
    assert call(s, "GET", "/api/frames/q2/head")[1] == head
    assert '"a,b","say ""hi"""' in text and '"line\nbreak"' in text

    # A group-by's result exports too.
    call(s, "POST", "/api/frames/t/groupby", {"into": "g", "keys": ["region"],
                                              "aggs": [{"fn": "count", "column": "id"}]})
    status, text, _ = call(s, "GET", "/api/frames/g/csv")
    assert status == 200 and text.startswith("region,count\r\n") and text.count("\r\n") == 4


def test_frame_download_refuses_only_what_it_cannot_find(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    # Past FRAME.HEAD's 1,000 rows and its reply cap: the download streams them all.
    (tmp_path / "big.csv").write_text("a\n" + "".join(f"{i}\n" for i in range(1001)))
    status, job, _ = call(s, "POST", "/api/frames", {"name": "big", "path": "big.csv"})
    assert status == 202 and wait_http_job(s, job["id"])["state"] == "done"
    status, text, _ = call(s, "GET", "/api/frames/big/csv")
    assert status == 200 and text == "a\r\n" + "".join(f"{i}\r\n" for i in range(1001))
    s.client().config_set("proto-max-bulk-len", str(1024 * 1024))
    (tmp_path / "wide.csv").write_text("a\n" + "".join("x" * 5000 + f"{i}\n" for i in range(300)))
    status, job, _ = call(s, "POST", "/api/frames", {"name": "wide", "path": "wide.csv"})
    assert status == 202 and wait_http_job(s, job["id"])["state"] == "done"
    status, text, _ = call(s, "GET", "/api/frames/wide/csv")
    assert status == 200 and text.count("\r\n") == 301 and len(text) > 1024 * 1024
    status, got, _ = call(s, "GET", "/api/frames/nope/csv")
    assert status == 404 and got == {"error": "ERR no such frame"}
    s.client().set("str", "v")
    status, got, _ = call(s, "GET", "/api/frames/str/csv")
    assert status == 400 and got["error"].startswith("WRONGTYPE"), got
    status, got, _ = call(s, "GET", "/api/frames/big/csv?n=3")
    assert status == 400 and got == {"error": "ERR unknown parameter 'n'"}
    # HTTP/1.0 cannot read chunks: the body goes as it is, and the connection closes.
    code, body = raw_request(s.http_port, b"GET /api/frames/big/csv HTTP/1.0\r\n\r\n")
    assert code == 200 and body.decode() == "a\r\n" + "".join(f"{i}\r\n" for i in range(1001))


def write_wide_csv(path, rows, seed=5):
    """A CSV of `rows` rows: int (some NA), real (random doubles, every 7th NA), cat, string
    with commas, quotes and line breaks. The rows as Python's csv module reads them back."""
    import csv as pycsv
    rng = random.Random(seed)
    notes = ["plain", "a,b", 'say "hi"', "line\nbreak", "", "NA"]
    out = []
    with open(path, "w", newline="") as f:
        w = pycsv.writer(f, lineterminator="\n")
        w.writerow(["id", "x", "region", "note"])
        for i in range(rows):
            x = "" if i % 7 == 3 else repr(rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-20, 20))
            row = ["" if i % 11 == 5 else str(i - 1000), x, rng.choice(["n", "s", "e", "w"]),
                   notes[i % len(notes)]]
            w.writerow(row)
            out.append(row)
    return out


def download(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def download_raw(port, name, timeout=30):
    """GETs a frame's CSV over a raw socket: (the head, the de-chunked body, whether it ended
    whole). download() cannot say the last: http.client raises on a body cut short."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c.sendall(b"GET /api/frames/%s/csv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % name.encode())
    raw = b""
    try:
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            chunk = c.recv(1 << 20)
            if not chunk:
                break
            raw += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    c.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    whole = raw.endswith(b"\r\n0\r\n\r\n")
    out = b""
    while body:  # de-chunk what came
        size, sep, rest = body.partition(b"\r\n")
        if not sep:
            break
        n = int(size, 16)
        out += rest[:n]
        body = rest[n + 2:]
    return head, out, whole


def test_a_download_past_maxmemory_ends_instead_of_building_the_row(node, tmp_path):
    # 14 clients downloading a frame with 60 MB rows held 900 MB under maxmemory 200mb: each
    # piece was built whole whatever the limit. A row wider than what is left below maxmemory
    # (at least 1 MiB) now ends the download, unfinished; small rows still stream.
    s = node("--import-dir", str(tmp_path))
    wide = b"k,s\n1," + b"w" * (3 << 20) + b"\n2,x\n"
    status, job, _ = call(s, "PUT", "/api/frames/w/csv?types=int,string", wide)
    assert status == 202, job
    assert wait_http_job(s, job["id"])["state"] == "done"
    r = s.client()
    used = r.info("memory")["used_memory"]
    r.config_set("maxmemory", used + (2 << 20))
    head, body, whole = download_raw(s.http_port, "w")
    assert head.startswith(b"HTTP/1.1 200") and not whole and len(body) < (1 << 20), (head, len(body))
    r.config_set("maxmemory", 0)
    head, body, whole = download_raw(s.http_port, "w")
    assert whole and body.count(b"\r\n") == 3 and len(body) > (3 << 20), len(body)
    assert r.ping()


def test_frame_download_is_the_exported_file(node, tmp_path):
    import csv as pycsv
    import io
    out = tmp_path / "out"
    out.mkdir()
    s = node("--import-dir", str(tmp_path), "--export-dir", str(out))
    want = write_wide_csv(tmp_path / "w.csv", 300_000)
    status, job, _ = call(s, "POST", "/api/frames", {"name": "w", "path": "w.csv",
                                                     "types": ["int", "real", "cat", "string"],
                                                     "na": [""]})
    assert status == 202 and wait_http_job(s, job["id"])["state"] == "done", job
    r = s.client()
    job = r.execute_command("FRAME.EXPORT", "w", str(out / "w.csv"))
    assert wait_http_job(s, job)["state"] == "done"
    resp, body = download(s.http_port, "/api/frames/w/csv")
    assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.getheader("Content-Length") is None
    exported = (out / "w.csv").read_bytes()
    assert len(body) > 10_000_000 and body == exported
    # And it reads back as the imported file: text as it was, reals bit for bit, NA empty.
    got = list(pycsv.reader(io.StringIO(body.decode(), newline="")))
    assert got[0] == ["id", "x", "region", "note"] and len(got) == len(want) + 1
    for g, w in zip(got[1:], want):
        assert g[0] == w[0] and g[2] == w[2] and g[3] == w[3], (g, w)
        assert (g[1] == "") == (w[1] == "") and (not w[1] or float(g[1]) == float(w[1])), (g, w)


def test_frame_download_streams_the_frame_as_it_was(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    write_wide_csv(tmp_path / "w.csv", 300_000)
    status, job, _ = call(s, "POST", "/api/frames", {"name": "w", "path": "w.csv",
                                                     "types": ["int", "real", "cat", "string"]})
    assert status == 202 and wait_http_job(s, job["id"])["state"] == "done", job
    _, whole = download(s.http_port, "/api/frames/w/csv")
    r = s.client()
    base = r.info("memory")["mem_clients_normal"]
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=30)
    conn.request("GET", "/api/frames/w/csv")
    resp = conn.getresponse()
    first = resp.read(100_000)
    # The reader is slow: the node holds a piece, not the CSV (about 20 MB), meanwhile.
    held = r.info("memory")["mem_clients_normal"] - base
    assert held < 1_000_000, held
    # Dropped meanwhile: the download goes on with the frame as it was.
    assert r.execute_command("FRAME.DROP", "w") == 1
    rest = resp.read()
    conn.close()
    assert first + rest == whole


def connected_clients_becomes(r, want, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.info("clients")["connected_clients"] == want:
            return True
        time.sleep(0.05)
    return False


def test_a_client_leaving_a_download_does_not_hurt_the_node(node, tmp_path):
    s = node("--import-dir", str(tmp_path), "--http-request-timeout", "500")
    write_wide_csv(tmp_path / "w.csv", 300_000)
    status, job, _ = call(s, "POST", "/api/frames", {"name": "w", "path": "w.csv"})
    assert status == 202 and wait_http_job(s, job["id"])["state"] == "done", job
    r = s.client()
    # The baseline is this RESP client alone: the HTTP connections the job
    # polling used may still be closing, and counting one of them would set a
    # baseline the node leaves as soon as it reaps that connection.
    base = 1
    assert connected_clients_becomes(r, base)
    # Clients that read a little and close, some with a reset.
    for i in range(20):
        c = socket.create_connection(("127.0.0.1", s.http_port))
        c.sendall(b"GET /api/frames/w/csv HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert c.recv(1000).startswith(b"HTTP/1.1 200")
        if i % 2:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
    assert connected_clients_becomes(r, base)
    # A client that stops reading is closed after http-request-timeout, and its frame let go.
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", s.http_port))
    stuck.sendall(b"GET /api/frames/w/csv HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert stuck.recv(100).startswith(b"HTTP/1.1 200")
    assert connected_clients_becomes(r, base)
    stuck.close()
    assert r.execute_command("FRAME.DROP", "w") == 1
    assert r.info("memory")["mem_clients_normal"] < 1_000_000
    assert r.ping()
    status, got, _ = call(s, "GET", "/api/cluster")
    assert status == 200, got


def test_frame_download_needs_the_password(node, tmp_path):
    s = node("--import-dir", str(tmp_path), "--requirepass", "pw")
    r = s.client(password="pw")
    assert r.execute_command("FRAME.IMPORT", "t", str(write_small(tmp_path)),
                             "TYPES", "int,real,cat") >= 1
    deadline = time.monotonic() + 30
    while r.exists("t") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, got, resp = call(s, "GET", "/api/frames/t/csv")
    assert status == 401 and got == {"error": "NOAUTH Authentication required."}
    status, got, _ = call(s, "GET", "/api/frames/t/csv", headers={"Authorization": "Bearer no"})
    assert status == 401 and got["error"].startswith("WRONGPASS")
    status, got, _ = call(s, "GET", "/api/frames/t/csv",
                          headers={"Authorization": "Bearer pw", "Origin": "http://evil.example"})
    assert status == 403, got
    status, text, _ = call(s, "GET", "/api/frames/t/csv", headers={"Authorization": "Bearer pw"})
    assert status == 200 and text.startswith("id,price,region\r\n1,2.5,")


def write_small(tmp_path):
    write_small_csv(tmp_path / "small.csv")
    return tmp_path / "small.csv"


def test_a_node_stopping_during_an_upload_import_removes_its_file(node, tmp_path):
    s = node("--import-dir", str(tmp_path))
    rng = random.Random(3)
    big = "a,b\n" + "".join(f"{i},{rng.random()}\n" for i in range(2_000_000))
    status, job, _ = call(s, "PUT", "/api/frames/big/csv", big.encode())
    assert status == 202, job
    assert s.stop() == 0
    # Whether the job had ended or was still running when SIGTERM came, the file is gone.
    assert uploads(tmp_path, s) == []


def test_answers_are_bounded_and_charged(node):
    """A 100 MB value of control bytes became 600 MB of JSON per request, uncharged, and held
    for a client that did not read it: values past 10 MiB are refused by the key view, and an
    answer past 64 MiB is replaced by a 507."""
    s = node()
    r = s.client()
    r.set("big", b"\x01" * (11 << 20))
    status, body, _ = call(s, "GET", "/api/keys/big")
    assert status == 507 and "read it over RESP" in body["error"], body
    status, body, _ = call(s, "POST", "/api/command", ["GET", "big"])  # 66 MiB as JSON
    assert status == 507 and "more than HTTP answers may be" in body["error"], body
    # Its escapes would take six bytes each: the key view sends it as base64 (4/3 of its size).
    r.set("fine", b"\x01" * (1 << 20))
    status, body, _ = call(s, "GET", "/api/keys/fine")
    assert status == 200 and body["value_encoding"] == "base64", body.get("value_encoding")
    assert base64.b64decode(body["value"]) == b"\x01" * (1 << 20)
    assert r.ping()


def test_nodes_started_with_port_0_keep_their_uploads_apart(tmp_path):
    # Regression: with --port 0 every node named its upload directory ".http-uploads-0", so a
    # second node on the same import-dir removed the first one's uploads when it started.
    class Node:
        pass

    procs, nodes = [], []
    try:
        for _ in range(2):
            n = Node()
            n.http_port = free_port()
            p = subprocess.Popen([FLOE_BIN, "serve", "--port", "0", "--http-port", str(n.http_port),
                                  "--import-dir", str(tmp_path), "--loglevel", "warning"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_for_port(n.http_port, p)
            info = call(n, "POST", "/api/command", ["INFO", "server"])[1]
            n.port = int(re.search(r"tcp_port:(\d+)", info).group(1))
            assert n.port != 0, info
            nodes.append(n)
        assert nodes[0].port != nodes[1].port
        for n in nodes:
            status, job, _ = call(n, "PUT", "/api/frames/up/csv", b"a\n1\n2\n")
            assert status == 202, job
            assert f"/.http-uploads-{n.port}/upload-" in job["description"], job
            assert wait_http_job(n, job["id"])["state"] == "done"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(timeout=10) == 0


def test_infinite_values_are_not_taken_for_no_value(node, tmp_path):
    # Regression: an infinite minimum or quantile was JSON null, as if the column had no value.
    (tmp_path / "inf.csv").write_text("x\n-inf\n1\n2\ninf\n")
    s = node("--import-dir", str(tmp_path))
    status, job, _ = call(s, "POST", "/api/frames", {"name": "t", "path": "inf.csv",
                                                     "types": ["real"]})
    assert status == 202, job
    assert wait_http_job(s, job["id"])["state"] == "done"
    status, summary, _ = call(s, "GET", "/api/frames/t/columns/x/summary?bins=2")
    assert status == 200, summary
    assert summary["min"] == "-Infinity" and summary["max"] == "Infinity", summary
    assert float(summary["min"]) == -math.inf
    status, q, _ = call(s, "GET", "/api/frames/t/columns/x/quantiles?p=0,0.5,1")
    assert status == 200, q
    assert q["quantiles"] == ["-Infinity", 1.5, "Infinity"], q


def test_request_bodies_that_pass_maxmemory_are_refused_as_they_arrive(node, tmp_path):
    # Regression: an upload's body was held whole before maxmemory was looked at; four
    # concurrent 315 MB uploads took a node with maxmemory 100mb to 1.3 GB of RSS.
    s = node("--maxmemory", "20mb", "--import-dir", str(tmp_path))
    # Announced: refused from the headers, before a byte of the body.
    code, answer = raw_request(s.http_port, b"PUT /api/frames/big/csv HTTP/1.1\r\nHost: localhost\r\n"
                               b"Content-Length: 33554432\r\n\r\n")
    assert code == 507 and b"OOM" in answer, answer
    # Chunked: refused as the chunks pass the limit.
    head = (b"PUT /api/frames/big/csv HTTP/1.1\r\nHost: localhost\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"1,hello\n" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(600))  # 39 MB
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=10) as sock:
        data = head + chunks + b"0\r\n\r\n"
        # In pieces, stopping once the answer is there: a client that kept sending after the
        # node closed would get a reset that may drop the answer.
        for at in range(0, len(data), 256 << 10):
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(data[at:at + (256 << 10)])
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert answer.startswith(b"HTTP/1.1 507") and b"OOM" in answer, answer[:200]
    # A chunk announcing more than proto-max-bulk-len is refused at once, not waited for.
    start = time.monotonic()
    code, answer = raw_request(s.http_port, head + b"ffffffffff\r\nab")
    assert code == 413, answer
    assert time.monotonic() - start < 5
    # Under the limit, an upload works once the refused bodies are let go, and the node still
    # serves.
    deadline = time.monotonic() + 10
    while True:
        status, job, _ = call(s, "PUT", "/api/frames/small/csv", b"a,b\n1,x\n")
        if status != 507 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 202, job
    assert wait_http_job(s, job["id"])["state"] == "done"
    assert s.client().ping()


def test_cross_site_requests_are_refused(node):
    # Regression: any web page the user opened could POST ["FLUSHALL"] to the node's
    # /api/command (a "simple" cross-site request runs without a preflight), and a name that
    # rebinds to 127.0.0.1 made the node that page's own site.
    s = node()
    assert call(s, "POST", "/api/command", ["SET", "k", "v"])[1] == "OK"
    # X1: a foreign Origin is refused, before the command runs.
    status, got, _ = call(s, "POST", "/api/command", ["FLUSHALL"],
                          {"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert status == 403 and "cross-origin" in got["error"], got
    assert s.client().get("k") == b"v"
    # The node's own page (same origin) and clients that send no Origin are served.
    host = f"127.0.0.1:{s.http_port}"
    status, got, _ = call(s, "POST", "/api/command", ["GET", "k"],
                          {"Origin": f"http://{host}"})
    assert status == 200 and got == "v", got
    # X2: without a password, a Host that is a name other than localhost is refused (DNS
    # rebinding); an address or localhost is served.
    for bad in ["evil.example", f"evil.example:{s.http_port}", "127.0.0.1.nip.io"]:
        code, answer = raw_request(s.http_port, b"GET /api/cluster HTTP/1.1\r\nHost: %s\r\n"
                                   b"Connection: close\r\n\r\n" % bad.encode())
        assert code == 403 and b"Host" in answer, (bad, answer)
    for good in [f"localhost:{s.http_port}", f"127.0.0.1:{s.http_port}", f"[::1]:{s.http_port}"]:
        code, answer = raw_request(s.http_port, b"GET /api/cluster HTTP/1.1\r\nHost: %s\r\n"
                                   b"Connection: close\r\n\r\n" % good.encode())
        assert code == 200, (good, answer)


def test_repeated_headers_the_rules_read_are_refused(node):
    # Two copies of a header X1-X3 or the password read were joined into one value, so
    # "cross-site" twice read as "cross-sitecross-site" and passed X3 (docs/api.md).
    s = node()
    assert call(s, "POST", "/api/command", ["SET", "k", "v"])[1] == "OK"
    port = s.http_port
    body = b'["FLUSHALL"]'
    for name, value in [("Sec-Fetch-Site", "cross-site"), ("Host", "127.0.0.1:%d" % port),
                        ("Origin", "http://127.0.0.1:%d" % port), ("Sec-Fetch-Mode", "cors"),
                        ("Sec-Fetch-Dest", "empty"), ("Authorization", "Basic eDp5")]:
        extra = ("%s: %s\r\n%s: %s\r\n" % (name, value, name.lower(), value)).encode()
        if name != "Host":
            extra += b"Host: 127.0.0.1:%d\r\n" % port
        code, answer = raw_request(port, b"POST /api/command HTTP/1.1\r\n%s"
                                   b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                                       extra, len(body), body))
        assert code == 400 and b"repeated '%s' header" % name.lower().encode() in answer, (
            name, answer)
    assert s.client().get("k") == b"v"
    # One copy of each is a normal request.
    code, answer = raw_request(port, b"GET /api/keys/k HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                               b"Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\n"
                               b"Sec-Fetch-Dest: empty\r\nConnection: close\r\n\r\n" % port)
    assert code == 200, answer


def test_blank_header_names_and_a_missing_host_are_refused(node):
    # "Host : evil" was no Host to X2 (its name is "Host "), but is one to a proxy that trims
    # it; an HTTP/1.1 request without Host skipped X2 altogether. Both ran the command.
    s = node()
    port = s.http_port
    body = b'["SET","x","1"]'
    for headers, text in [
            (b"Host: 127.0.0.1\r\nHost : evil.example\r\n", b"whitespace between"),
            (b"Host: 127.0.0.1\r\nOrigin\t: http://evil.example\r\n", b""),  # the parser's
            (b"Host : evil.example\r\n", b"whitespace between"),
            (b"", b"needs a Host header")]:
        code, answer = raw_request(port, b"POST /api/command HTTP/1.1\r\n%s"
                                   b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                                       headers, len(body), body))
        assert code == 400 and text in answer, (headers, answer)
    assert s.client().get("x") is None
    # HTTP/1.0 has no Host to require.
    code, answer = raw_request(port, b"GET /api/cluster HTTP/1.0\r\n\r\n")
    assert code == 200, answer


def test_cross_site_fetch_metadata_and_names_are_refused(node):
    # X3: what another page makes the browser send without an Origin (an <img> or <script>
    # pointing at a GET, a no-cors fetch, a form) carries Sec-Fetch-Site; only following a link
    # (a GET navigation) is served. X2: only names this machine alone answers to.
    s = node()
    assert call(s, "POST", "/api/command", ["SET", "k", "v"])[1] == "OK"
    port = s.http_port
    for site, mode, method, dest in [("cross-site", "no-cors", "GET", "image"),
                                     ("same-site", "cors", "GET", "empty"),
                                     ("cross-site", "navigate", "POST", "document"),
                                     ("cross-site", "navigate", "GET", "iframe")]:
        body = b'["FLUSHALL"]'
        code, answer = raw_request(port, b"%s /api/%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                   b"Sec-Fetch-Site: %s\r\nSec-Fetch-Mode: %s\r\n"
                                   b"Sec-Fetch-Dest: %s\r\n"
                                   b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                                       method.encode(),
                                       b"keys/k" if method == "GET" else b"command", port,
                                       site.encode(), mode.encode(), dest.encode(),
                                       len(body) if method == "POST" else 0,
                                       body if method == "POST" else b""))
        assert code == 403 and b"cross-site" in answer, (site, mode, method, dest, answer)
    assert s.client().get("k") == b"v"
    for site, mode in [("cross-site", "navigate"), ("same-origin", "cors"), ("none", "navigate")]:
        code, answer = raw_request(port, b"GET /api/keys/k HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                   b"Sec-Fetch-Site: %s\r\nSec-Fetch-Mode: %s\r\n"
                                   b"Connection: close\r\n\r\n" % (port, site.encode(),
                                                                     mode.encode()))
        assert code == 200, (site, mode, answer)
    # A single-label name is not enough: a LAN's name service may answer it for an attacker.
    for bad in ["intranet", f"printer:{port}", "localhost.evil.example"]:
        code, answer = raw_request(port, b"GET /api/cluster HTTP/1.1\r\nHost: %s\r\n"
                                   b"Connection: close\r\n\r\n" % bad.encode())
        assert code == 403 and b"Host" in answer, (bad, answer)
    for good in [f"localhost.:{port}", f"app.localhost:{port}", f"{socket.gethostname()}:{port}"]:
        code, answer = raw_request(port, b"GET /api/cluster HTTP/1.1\r\nHost: %s\r\n"
                                   b"Connection: close\r\n\r\n" % good.encode())
        assert code == 200, (good, answer)
    # Origin null (a sandboxed frame, a redirect) and another port of the same host are foreign.
    for origin in ["null", "http://127.0.0.1:1"]:
        status, got, _ = call(s, "POST", "/api/command", ["FLUSHALL"], {"Origin": origin})
        assert status == 403, (origin, got)
    assert s.client().get("k") == b"v"


def test_post_is_an_unknown_command_over_http(node):
    # The RESP port closes a connection whose command is an HTTP request line; over HTTP the
    # same word is an ordinary unknown command (the guard once answered nothing there, a 400
    # "reply could not be decoded", and closed the keep-alive connection).
    s = node()
    for word in ["post", "Host:"]:
        status, got, _ = call(s, "POST", "/api/command", [word, "x"])
        assert status == 400 and got["error"].startswith("ERR unknown command"), (word, got)


def test_cross_site_refusals_come_before_the_body(node):
    # A foreign page's POST used to be read whole before X1 refused it: with maxmemory 0 (the
    # default) six 500 MiB no-cors POSTs held 3 GiB. It is refused at its headers now.
    s = node()
    with socket.create_connection(("127.0.0.1", s.http_port), timeout=10) as c:
        c.sendall(b"POST /api/command HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  b"Origin: http://evil.example\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: %d\r\n\r\n" % (s.http_port, 500 << 20))
        c.sendall(b"x" * 65536)  # the rest never comes: the answer must not wait for it
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = c.recv(65536)
            assert chunk, out
            out += chunk
        assert out.split(b" ")[1] == b"403", out


def test_the_page_cannot_be_framed(node):
    # Clickjacking: another site could show the page in a frame under a decoy and have the user
    # click its buttons (same-origin requests from inside the frame pass X1).
    s = node()
    with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/", timeout=10) as r:
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_with_a_password_any_host_name_is_served(node):
    # A node with requirepass may be reached by name (the password is what keeps it).
    s = node("--requirepass", "pw")
    auth = "Basic " + base64.b64encode(b"default:pw").decode()
    code, answer = raw_request(s.http_port, b"GET /api/cluster HTTP/1.1\r\nHost: db.internal\r\n"
                               b"Authorization: %s\r\nConnection: close\r\n\r\n" % auth.encode())
    assert code == 200, answer
