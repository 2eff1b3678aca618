"""End to end, review of the pipelined cluster connection (listener.cc's reply slots, rule C3 of
docs/cluster.md): the cases an independent review found, each on a real 3-node cluster."""
import os
import signal
import socket
import time

import pytest

from floe_cluster import ClusterFactory


@pytest.fixture(scope="module")
def formed():
    factory = ClusterFactory()
    try:
        yield factory.make(3).wait_formed()
    finally:
        factory.close()


def read_exactly(sock, n, timeout=30.0):
    sock.settimeout(timeout)
    out = bytearray()
    while len(out) < n:
        try:
            chunk = sock.recv(min(1 << 20, n - len(out)))
        except socket.timeout:
            break  # what came is compared
        if not chunk:
            break
        out += chunk
    return bytes(out)


def test_a_client_that_sends_while_a_deferred_reply_is_being_written_gets_each_reply_once(formed):
    # A GET of a large value homed elsewhere: its reply arrives while a read is in flight, and
    # the client does not read, so the node's write goes asynchronous. The client then sends
    # PINGs: the node must not add to (or write again) the reply buffer an asynchronous write
    # is still sending. Before the fix the PING's reply was appended to that buffer and it was
    # written a second time: the client got the value's bytes twice, or freed memory.
    key, = formed.keys_at(2, 1, prefix="asyncwrite")
    blob = os.urandom(8 << 20)
    assert formed[2].conn(timeout=60).call("SET", key, blob) == b"OK"
    node = formed[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((node.host, node.port))
    try:
        sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key.encode()))
        time.sleep(1.0)  # the reply came from the home; the node writes what the socket takes
        pings = 5
        for _ in range(pings):
            sock.sendall(b"PING\r\n")
            time.sleep(0.2)
        want = b"$%d\r\n" % len(blob) + blob + b"\r\n" + b"+PONG\r\n" * pings
        got = read_exactly(sock, len(want))
        assert len(got) == len(want)
        assert got == want, "the reply stream differs from the replies in order"
        # Nothing more: a reply written twice would show here.
        sock.sendall(b"PING\r\n")
        assert read_exactly(sock, 7, timeout=10) == b"+PONG\r\n"
    finally:
        sock.close()


def test_a_transactions_connection_commands_take_effect_before_the_next_command(formed):
    # MULTI / SET (homed elsewhere) / CLIENT SETNAME / EXEC, then CLIENT GETNAME, sent at once.
    # The transaction's CLIENT SETNAME runs at this node once the home's EXEC answered; the
    # GETNAME after it must see the name, as on a single node (Redis answers "review").
    key, = formed.keys_at(2, 1, prefix="txname")
    sock = socket.create_connection((formed[0].host, formed[0].port), timeout=30)
    try:
        def cmd(*args):
            out = [b"*%d\r\n" % len(args)]
            for a in args:
                a = a.encode()
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
            return b"".join(out)
        sock.sendall(cmd("MULTI") + cmd("SET", key, "v") + cmd("CLIENT", "SETNAME", "review") +
                     cmd("EXEC") + cmd("CLIENT", "GETNAME"))
        want = (b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n" + b"$6\r\nreview\r\n")
        assert read_exactly(sock, len(want), timeout=5) == want
    finally:
        sock.close()


@pytest.fixture
def slow_home():
    """A 3-node cluster whose requests wait 20 s for a home that does not answer."""
    factory = ClusterFactory()
    try:
        yield factory.make(3, node_timeout=20000).wait_formed()
    finally:
        factory.close()


def assert_bounded_while_home_stopped(cluster, command):
    """Sends `command` 400 times to member 0 while member 2, the home of its key, is stopped
    (SIGSTOP: its calls wait for their deadline); member 0 must stop reading after holding a
    bounded amount of them (back-pressure), not read and copy them all."""
    home = cluster[2]
    os.kill(home.proc.pid, signal.SIGSTOP)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.connect((cluster[0].host, cluster[0].port))
        sock.setblocking(False)
        sent = 0
        total = 400 * len(command)
        deadline = time.monotonic() + 5.0
        while sent < total and time.monotonic() < deadline:
            try:
                sent += sock.send(command[sent % len(command):])
            except BlockingIOError:
                time.sleep(0.05)
        # Socket buffers on both sides hold a few MiB; the node's own holding is bounded.
        assert sent < 64 * len(command), f"the node read {sent >> 20} MiB of waiting commands"
    finally:
        os.kill(home.proc.pid, signal.SIGCONT)
        sock.close()


def test_commands_waiting_for_a_stopped_home_do_not_grow_the_node_without_bound(slow_home):
    # A client pipelines 1 MiB SETs to keys of a home that is stopped (SIGSTOP: its calls wait
    # for their deadline). The node may hold a bounded amount of them; then it must stop
    # reading (back-pressure), as it does for replies. Before the fix it read and copied up to
    # 1,024 of them (1 GiB here; 1,024 x proto-max-bulk-len in general) while they waited.
    key, = slow_home.keys_at(2, 1, prefix="stopped")
    value = b"x" * (1 << 20)
    command = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(key), key.encode(), len(value), value)
    assert_bounded_while_home_stopped(slow_home, command)


def test_a_protocol_error_is_answered_after_the_replies_still_to_come(formed):
    # GET of a key homed elsewhere, PING, then a request that does not parse: the error and the
    # close come after both replies, as on a single node. Before the fix the error went
    # straight to the output while the GET's reply was still to come: the client read the
    # error first.
    key, = formed.keys_at(2, 1, prefix="protoerr")
    sock = socket.create_connection((formed[0].host, formed[0].port), timeout=30)
    try:
        sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key.encode()) +
                     b"*1\r\n$4\r\nPING\r\n" + b"*1\r\n$x\r\n")
        got = bytearray()
        sock.settimeout(10)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        assert got.startswith(b"$-1\r\n+PONG\r\n-ERR Protocol error"), bytes(got)
    finally:
        sock.close()


def test_hello_inside_a_transaction_sent_to_a_home_sets_the_protocol_of_the_commands_after_it(
        formed):
    # MULTI / GET (homed elsewhere) / HELLO 3 / GET / EXEC: the GET after HELLO answers in RESP3
    # (a null is "_"), as a single node and Redis answer. HELLO runs at this node; before the
    # fix the home ran the whole transaction in RESP2 and the second GET answered "$-1".
    key, = formed.keys_at(2, 1, prefix="txhello")
    sock = socket.create_connection((formed[0].host, formed[0].port), timeout=30)
    try:
        sock.sendall(b"MULTI\r\nGET %s\r\nHELLO 3\r\nGET %s\r\nEXEC\r\nGET %s\r\n" %
                     (key.encode(), key.encode(), key.encode()))
        got = bytearray()
        sock.settimeout(3)
        try:
            while not got.endswith(b"*0\r\n_\r\n_\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except socket.timeout:
            pass
        assert got.startswith(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n$-1\r\n%7\r\n"), \
            bytes(got)
        assert b"$5\r\nproto\r\n:3\r\n" in got, bytes(got)
        assert got.endswith(b"*0\r\n_\r\n_\r\n"), bytes(got)
    finally:
        sock.close()


def test_transactions_waiting_for_a_stopped_home_do_not_grow_the_node_without_bound(slow_home):
    # As above, with each 1 MiB SET in its own MULTI ... EXEC: the request that waits is the
    # whole transaction, though EXEC itself is a few bytes. Before the fix only EXEC's bytes
    # were counted and the node read and held every transaction.
    key, = slow_home.keys_at(2, 1, prefix="stoppedtx")
    value = b"x" * (1 << 20)
    command = (b"*1\r\n$5\r\nMULTI\r\n" +
               b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                   len(key), key.encode(), len(value), value) +
               b"*1\r\n$4\r\nEXEC\r\n")
    assert_bounded_while_home_stopped(slow_home, command)
