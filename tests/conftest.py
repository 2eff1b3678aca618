"""Fixtures that start `floe serve` (and, for differential tests, Debian's redis-server) on free
loopback ports, and stop them by PID when the test session ends."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOE_BIN = os.environ.get("FLOE_BIN", os.path.join(ROOT, "build", "release", "app", "floe"))


# In CI (`.ci/run` exports CI=true) a missing reference tool fails the run: a suite that skips
# its differential and compatibility tests must not count as green. Elsewhere it skips, saying
# what was not tested.
IN_CI = os.environ.get("CI") == "true"


def missing(what):
    """Skips the test for lack of `what`, or fails it when running in CI."""
    if IN_CI:
        pytest.fail(f"{what} (CI=true: a missing dependency fails the run)", pytrace=False)
    pytest.skip(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_job(r, job_id, timeout=120, poll=0.02):
    """Polls JOB.STATUS until the job is no longer running; returns its status as a dict of
    strings (a client without decode_responses gets the same). Fails after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        reply = [x.decode() if isinstance(x, bytes) else x
                 for x in r.execute_command("JOB.STATUS", job_id)]
        status = dict(zip(reply[0::2], reply[1::2]))
        if status["state"] != "running":
            return status
        time.sleep(poll)
    raise AssertionError(f"job {job_id} still running after {timeout}s")


def wait_for_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"server did not listen on port {port} within {timeout}s")


class Floe:
    def __init__(self, *extra_args):
        self.port = free_port()
        # Two I/O threads unless the test picks its own, so cross-thread paths are exercised.
        threads = [] if "--threads" in extra_args else ["--threads", "2"]
        # FRAME.IMPORT reads only under --import-dir: the tests write their files under the
        # system's temporary directory.
        imports = [] if "--import-dir" in extra_args else ["--import-dir", tempfile.gettempdir()]
        # FRAME.EXPORT is off without --export-dir; the tests export there too.
        if "--export-dir" not in extra_args:
            imports += ["--export-dir", tempfile.gettempdir()]
        self.args = [FLOE_BIN, "serve", "--port", str(self.port), *threads, *imports,
                     "--loglevel", "warning", *extra_args]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc)

    def client(self, **kw):
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def floe_server():
    if not os.path.exists(FLOE_BIN):
        pytest.fail(f"floe binary not found at {FLOE_BIN} (build first, or set FLOE_BIN)")
    server = Floe()
    yield server
    server.stop()


@pytest.fixture
def r(floe_server):
    client = floe_server.client(decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def make_floe():
    started = []

    def start(*args):
        s = Floe(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def start_redis_server():
    """Starts Debian's redis-server on a free loopback port; yields the port, then stops it."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed: differential tests skipped")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server():
    yield from start_redis_server()


@pytest.fixture
def own_redis():
    """A redis-server of the test's own: its CONFIG SETs must not reach the shared one."""
    yield from start_redis_server()


class RawConn:
    """A socket speaking RESP by hand, so replies can be compared byte for byte."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self):
        """Returns the raw bytes of one complete reply."""
        line = self._line()
        raw = line + b"\r\n"
        t = line[:1]
        if t in (b"$", b"="):
            n = int(line[1:])
            if n >= 0:
                while len(self.buf) < n + 2:
                    self._fill()
                raw += self.buf[:n + 2]
                self.buf = self.buf[n + 2:]
        elif t in (b"*", b"~", b">", b"%"):
            n = int(line[1:])
            for _ in range(max(n, 0) * (2 if t == b"%" else 1)):
                raw += self.read_reply()
        return raw

    def call(self, *args):
        self.send(*args)
        return self.read_reply()

    def closed_by_peer(self, timeout=5):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "release_only: measures the release build's allocator or process limits (RSS after frees, "
        "descriptors); a sanitizer's allocator keeps freed memory and adds its own, so sanitizer "
        "builds deselect these (tests/CMakeLists.txt) instead of skipping them")
    config.addinivalue_line(
        "markers",
        "cluster_commands: needs INFO's cluster section or the CLUSTER command family "
        "(tests/e2e/test_cluster.py); fails, never skips, where they are missing")


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test fails the session, whatever skipped it: green means it all ran."""
    if not IN_CI or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        print(f"\nCI=true: {len(skipped)} skipped test(s) fail the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
