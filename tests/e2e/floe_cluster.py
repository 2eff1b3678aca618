"""Real `floe serve --cluster` processes for the e2e tests: starting N members on 127.0.0.x,
waiting for the cloud to form, Redis Cluster's key -> slot function and the slot map's homes, so
a test knows which node is home to a key, and a small RESP client with deadlines.

Every process is started by a ClusterFactory, which a fixture closes: each is killed by its PID
(SIGKILL after a bounded SIGTERM), never by name. Every wait here has a deadline."""
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from conftest import FLOE_BIN

SLOTS = 16384
NOT_FORMED = "CLUSTERDOWN The cluster is not formed: "
CLUSTER_DOWN = "CLUSTERDOWN The cluster is down"
CROSSSLOT = "CROSSSLOT Keys in request don't hash to the same slot"


# ---- Redis Cluster's key -> slot (CRC16/XMODEM of the key or its {tag}, mod 16384) ----------

def _crc16_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def crc16(data):
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc


def key_slot(key):
    key = key.encode() if isinstance(key, str) else bytes(key)
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return crc16(key) % SLOTS


def home_index(slot, members):
    """The 0-based index, in sorted member order, of the slot's home: contiguous ranges, the
    first 16384 mod n members one slot larger (docs/cluster.md, "Slots")."""
    base, extra = divmod(SLOTS, members)
    first = 0
    for i in range(members):
        size = base + (1 if i < extra else 0)
        if slot < first + size:
            return i
        first += size
    raise AssertionError(slot)


def keys_homed_at(index, members, count, prefix="k"):
    """`count` distinct keys, `prefix` followed by a number, whose home is member `index`."""
    out, i = [], 0
    while len(out) < count:
        k = f"{prefix}{i}"
        if home_index(key_slot(k), members) == index:
            out.append(k)
        i += 1
    return out


# ---- A RESP client with a deadline on every reply --------------------------------------------

class RespError(Exception):
    """An error reply; str() is its text without the leading '-'."""


class Timeout(Exception):
    pass


class Conn:
    """One connection. call() returns the parsed reply (bytes, int, list, None, RespError as a
    value); raw() returns the reply's bytes, for byte-for-byte comparisons. A timeout or a
    dropped connection raises (Timeout, ConnectionError): the caller must drop the connection,
    whose next reply could be the late one."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.pos = 0  # bytes of buf already parsed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def _fill(self, want=65536):
        if self.pos > (1 << 20) and self.pos * 2 > len(self.buf):
            del self.buf[:self.pos]  # appending stays linear in the reply's size
            self.pos = 0
        try:
            chunk = self.sock.recv(max(want, 65536))
        except socket.timeout as e:
            raise Timeout("no reply before the deadline") from e
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def _line(self):
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos:end])
                self.pos = end + 2
                return line
            self._fill()

    def _bulk(self, n):
        while len(self.buf) - self.pos < n + 2:
            self._fill(n + 2 - (len(self.buf) - self.pos))
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n + 2
        return data

    def read_raw(self):
        line = self._line()
        raw = line + b"\r\n"
        t = line[:1]
        if t in (b"$", b"=", b"!"):
            n = int(line[1:])
            if n >= 0:
                raw += self._bulk(n) + b"\r\n"
        elif t in (b"*", b"~", b">", b"%", b"|"):
            n = int(line[1:])
            for _ in range(max(n, 0) * (2 if t in (b"%", b"|") else 1)):
                raw += self.read_raw()
        return raw

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            return RespError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._bulk(n)
        if t == b"_":
            return None
        if t in (b"*", b"~", b">"):
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        if t == b"%":
            return {self._hashable(self.read()): self.read() for _ in range(int(rest))}
        if t in (b",", b"("):
            return rest
        if t == b"#":
            return rest == b"t"
        if t in (b"=", b"!"):
            return self._bulk(int(rest))
        raise AssertionError(f"unexpected reply type {line!r}")

    @staticmethod
    def _hashable(v):
        return tuple(v) if isinstance(v, list) else v

    def call(self, *args):
        self.send(*args)
        return self.read()

    def call_raw(self, *args):
        self.send(*args)
        return self.read_raw()


# ---- Processes ------------------------------------------------------------------------------

def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bracketed(host):
    """A host as a member list writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def port_free_on(hosts, port):
    """True when `port` is free for TCP and UDP on every host."""
    for host in hosts:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(family(host), kind) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    return False
    return True


def free_ports(hosts, count, taken=()):
    """`count` distinct ports, each free for TCP and UDP on every host in `hosts`."""
    out = []
    deadline = time.time() + 10
    while len(out) < count:
        assert time.time() < deadline, "no free ports"
        with socket.socket(family(hosts[0])) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        if port not in out and port not in taken and port_free_on(hosts, port):
            out.append(port)
    return out


def free_cluster_ports(hosts, count, taken=()):
    """`count` cluster ports, each free for TCP and UDP on every host in `hosts` with the next
    port free too (a member's Raft listens on its cluster port + 1), none of them in `taken`,
    and no two adjacent. Drawn below the ephemeral range (which starts at 32768 by default), so
    an outgoing connection does not take the Raft port between this check and the member's
    start."""
    out = []
    deadline = time.time() + 10
    while len(out) < count:
        assert time.time() < deadline, "no free port pairs"
        port = random.randrange(20000, 32000)
        near = {port - 1, port, port + 1}
        if near & set(out) or near & set(taken) or port + 1 in taken:
            continue
        if not (reserve_port(port) and reserve_port(port + 1)):
            continue
        if port_free_on(hosts, port) and port_free_on(hosts, port + 1):
            out.append(port)
    return out


# Ports this process reserved among the machine's test processes, which run side by side and
# draw cluster ports from the same range (the C++ tests' FreeClusterPort uses the same files):
# an exclusive flock on a file named after the port, held while the process lives.
_RESERVED = []


def reserve_port(port):
    """Whether `port` is now reserved for this process (False: another live process holds it).
    Where the lock directory cannot be used, every port counts as reserved."""
    d = os.path.join(os.environ.get("TMPDIR") or "/tmp", "floe-test-ports")
    try:
        os.makedirs(d, exist_ok=True)
        fd = os.open(os.path.join(d, str(port)), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _RESERVED.append(fd)
    # The oldest reservations belong to clusters long stopped (each test's factory stops its
    # own): at most 256 descriptors stay open.
    while len(_RESERVED) > 256:
        os.close(_RESERVED.pop(0))
    return True


def wait_listening(host, port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"floe on {host}:{port} exited early with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"floe did not listen on {host}:{port} within {timeout}s")


class Node:
    """One `floe serve` member. `index` is its place in the sorted member list (slot order)."""

    def __init__(self, factory, host, port, cluster_port, members, extra, env):
        self.factory = factory
        self.host, self.port, self.cluster_port = host, port, cluster_port
        self.members = members
        self.extra = list(extra)
        self.env = env
        self.proc = None
        self.log_path = None
        self.cluster_flags = True  # False: the test gives them in a config file (extra)

    @property
    def address(self):
        return f"{bracketed(self.host)}:{self.cluster_port}"

    def args(self):
        cluster = ["--cluster-port", str(self.cluster_port), "--cluster", self.members,
                   "--dir", self.factory.data_dir]
        # Two I/O threads unless the test names its own count.
        threads = [] if "--threads" in self.extra else ["--threads", "2"]
        return [FLOE_BIN, "serve", "--bind", self.host, "--port", str(self.port),
                *threads, "--loglevel", "notice",
                *(cluster if self.cluster_flags else []), *self.extra]

    def start(self):
        fd, self.log_path = tempfile.mkstemp(prefix=f"floe-{self.host}-{self.port}-",
                                             suffix=".log")
        env = dict(os.environ)
        env.pop("FLOE_CLUSTER_SECRET", None)
        env.pop("FLOE_TEST_CLUSTER_FAULTS", None)
        env.update(self.env)
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT,
                                         env=env)
        self.factory.procs.append(self.proc)
        self.factory.logs[self.proc.pid] = self.log_path
        try:
            wait_listening(self.host, self.port, self.proc)
        except RuntimeError as e:
            raise RuntimeError(f"{e}; its output:\n{self.log()}") from None
        return self

    def conn(self, timeout=10.0):
        c = Conn(self.host, self.port, timeout)
        self.factory.conns.append(c)
        return c

    def redis(self, **kw):
        import redis
        return redis.Redis(host=self.host, port=self.port, socket_timeout=15, **kw)

    def kill9(self):
        """kill -9, then reaps it; returns the monotonic time after it is gone."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.factory.killed.add(self.proc.pid)
        return time.monotonic_ns()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except (OSError, TypeError):
            return ""


class Cluster:
    def __init__(self, nodes):
        self.nodes = nodes

    def __getitem__(self, i):
        return self.nodes[i]

    def __len__(self):
        return len(self.nodes)

    def home(self, key):
        return self.nodes[home_index(key_slot(key), len(self.nodes))]

    def keys_at(self, index, count, prefix="k"):
        return keys_homed_at(index, len(self.nodes), count, prefix)

    def logs(self):
        return "\n".join(f"--- {n.address} (RESP {n.host}:{n.port}):\n{n.log()}"
                         for n in self.nodes)

    def wait_formed(self, timeout=15.0, nodes=None, password=None):
        """Waits until every node (or the given ones) stops answering a key command with
        'not formed' and says in INFO that it is ready to change its keys."""
        deadline = time.time() + timeout
        for node in nodes or self.nodes:
            c = node.conn(timeout=timeout)
            if password is not None:
                assert c.call("AUTH", password) == b"OK"
            while True:
                reply = c.call("EXISTS", "formed-probe")
                # Formed but not caught up with the agreed metadata: CLUSTERDOWN The cluster is
                # down (docs/membership.md, "Routing from the agreed table").
                if not (isinstance(reply, RespError) and (str(reply).startswith(NOT_FORMED)
                                                          or str(reply) == CLUSTER_DOWN)):
                    # Formed; and ready to change its keys once its start-up grace is over
                    # (docs/coherence.md, L4).
                    info = c.call("INFO", "cluster")
                    if isinstance(info, bytes) and b"cluster_home_ready:1" in info:
                        break
                assert time.time() < deadline, (
                    f"{node.address} not formed within {timeout}s: {reply}\n{self.logs()}")
                time.sleep(0.05)
            c.close()
        return self


def freeze(pid):
    """SIGSTOP, then waits until every thread of the process is stopped: a multi-threaded
    process stops only once the thread that takes the signal has run, and meanwhile its other
    threads go on (they could still answer an invalidation)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.time() + 10
    while True:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                pass
        if states and all(st in ("T", "t") for st in states):
            return
        assert time.time() < deadline, f"pid {pid} did not stop: {states}"
        time.sleep(0.001)


class ClusterFactory:
    """Starts clusters; close() kills every process it started, by PID."""

    def __init__(self):
        self.procs = []
        self.conns = []
        self.killed = set()  # pids a test killed with SIGKILL on purpose
        self.logs = {}       # pid -> log path
        # Every member's --dir: each keeps its Raft log in <dir>/<host>-<cluster port>, and a
        # member started again with its ports finds its log there.
        self.data_dir = tempfile.mkdtemp(prefix="floe-cluster-")

    def make(self, n=3, hosts=None, start=True, node_timeout=None, faults=None, extra=(),
             per_node_extra=None, env=None, same_ports=False):
        """Plans (and unless start=False starts) an n-member cluster. hosts: one address per
        member (default 127.0.0.1 for all). same_ports: every member uses the same RESP and
        cluster ports (needs distinct hosts). Returns the Cluster with nodes in member order:
        nodes[0] is home to the first slots."""
        hosts = hosts or ["127.0.0.1"] * n
        assert len(hosts) == n
        distinct = sorted(set(hosts))
        if same_ports:
            assert len(distinct) == n
            (cport,) = free_cluster_ports(distinct, 1)
            (resp,) = free_ports(distinct, 1, taken={cport, cport + 1})
            resp_ports, cluster_ports = [resp] * n, [cport] * n
        else:
            cluster_ports = sorted(free_cluster_ports(distinct, n))
            resp_ports = free_ports(distinct, n,
                                    taken=set(cluster_ports) | {p + 1 for p in cluster_ports})
        # Member order is (address, port): sort the plan so that index = slot order.
        # (IPv4 before IPv6, docs/cluster.md "The member list").
        plan = sorted(zip(hosts, cluster_ports, resp_ports),
                      key=lambda t: (family(t[0]) == socket.AF_INET6,
                                     socket.inet_pton(family(t[0]), t[0]), t[1]))
        members = ",".join(f"{bracketed(h)}:{c}" for h, c, _ in plan)
        node_env = dict(env or {})
        if faults:
            node_env["FLOE_TEST_CLUSTER_FAULTS"] = faults
        args = list(extra)
        if node_timeout is not None:
            args += ["--cluster-node-timeout", str(node_timeout)]
        nodes = []
        for i, (h, c, r) in enumerate(plan):
            more = args + list((per_node_extra or {}).get(i, []))
            nodes.append(Node(self, h, r, c, members, more, node_env))
        cluster = Cluster(nodes)
        if start:
            for node in nodes:
                node.start()
        return cluster

    def close(self):
        """Stops every process; returns what went wrong: a process that was not killed on
        purpose and did not exit with status 0 after SIGTERM (it crashed or exited early, or a
        sanitizer reported at exit), with the end of its output. Removes the logs if none."""
        for c in self.conns:
            c.close()
        stopped = []
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                stopped.append(p.pid)
        problems = []
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
                problems.append(f"pid {p.pid} did not stop within 20 s of SIGTERM")
            if p.pid in self.killed:
                continue
            # -SIGTERM: stopped before it installed its handler (just started): not a fault.
            if p.returncode not in (0, -signal.SIGTERM):
                tail = ""
                try:
                    with open(self.logs.get(p.pid, ""), "rb") as f:
                        tail = f.read().decode(errors="replace")[-3000:]
                except OSError:
                    pass
                problems.append(f"{' '.join(p.args[:8])}... exited with {p.returncode}:\n"
                                f"{tail}")
        if not problems:
            for path in self.logs.values():
                try:
                    os.remove(path)
                except OSError:
                    pass
        self.procs = []
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return problems
