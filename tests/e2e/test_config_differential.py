"""CONFIG and COMMAND against Debian's redis-server: the same commands, byte-identical replies.
The settings changed here are set back at the end, since both servers are shared."""
import pytest

from conftest import RawConn

COMMANDS = [
    ("CONFIG", "SET", "hz", "0"), ("CONFIG", "GET", "hz"), ("CONFIG", "SET", "hz", "1000"),
    ("CONFIG", "GET", "hz"), ("CONFIG", "SET", "hz", "-1"), ("CONFIG", "SET", "hz", "x"),
    ("CONFIG", "SET", "hz", "10"), ("CONFIG", "SET", "timeout", "-1"),
    ("CONFIG", "SET", "timeout", "2147483648"), ("CONFIG", "SET", "timeout", "01"),
    ("CONFIG", "SET", "maxclients", "0"), ("CONFIG", "SET", "maxclients", "4294967296"),
    ("CONFIG", "GET", "MAXMEMORY"), ("CONFIG", "GET", "MaxMemory", "maxmemory"),
    ("CONFIG", "GET", "nosuch"), ("CONFIG", "SET", "maxmemory", "-1"),
    ("CONFIG", "SET", "maxmemory", "1.5gb"), ("CONFIG", "SET", "proto-max-bulk-len", "x"),
    ("CONFIG", "SET", "client-output-buffer-limit", "normal 0 1000 9223372036854775807"),
    ("CONFIG", "SET", "client-output-buffer-limit", "normal 0 1000 2147483648"),
    ("CONFIG", "SET", "client-output-buffer-limit", "normal -1 0 0"),
    ("CONFIG", "SET", "client-output-buffer-limit", "normal 1 2"),
    ("CONFIG", "SET", "client-output-buffer-limit", "bogus 0 0 0"),
    ("CONFIG", "SET", "databases", "1"), ("CONFIG", "SET", "timeout", "1", "timeout", "2"),
    ("COMMAND", "INFO", "nosuch"), ("COMMAND", "INFO", "config|nosuch"),
    ("COMMAND", "GETKEYS", "get", "k"), ("COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"),
    ("COMMAND", "GETKEYS", "del", "a", "b", "c"), ("COMMAND", "GETKEYS", "rename", "a", "b"),
    ("COMMAND", "GETKEYS", "object", "encoding", "k"), ("COMMAND", "GETKEYS", "nosuch", "k"),
    ("COMMAND", "GETKEYS", "object", "nosuch", "k"), ("COMMAND", "GETKEYS", "GET", "k", "x"),
    ("COMMAND", "GETKEYS", "ping", "x"), ("COMMAND", "GETKEYS", "config", "get", "x"),
    ("COMMAND", "GETKEYS", "get"), ("COMMAND", "GETKEYS"),
]


def run(port, resp3):
    conn = RawConn(port)
    if resp3:
        conn.call("HELLO", "3")
    replies = [(c, conn.call(*c)) for c in COMMANDS]
    conn.close()
    return replies


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_config_and_command_replies_match_redis(floe_server, redis_server, resp3):
    ours = run(floe_server.port, resp3)
    theirs = run(redis_server, resp3)
    mismatches = [(args, o, t) for (args, o), (_, t) in zip(ours, theirs) if o != t]
    assert not mismatches, "\n".join(
        f"{' '.join(a)}\n  floe:  {o!r}\n  redis: {t!r}" for a, o, t in mismatches)
