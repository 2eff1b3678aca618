"""End to end: `floe import`, the command-line tool that imports a CSV into a frame on a running
node and shows the job's progress (docs/frame.md, "floe import")."""
import gzip
import signal
import subprocess
import time

import pytest

from conftest import FLOE_BIN


def floe_import(node, *args, **kw):
    return subprocess.run([FLOE_BIN, "import", "-p", str(node.port), *args],
                          capture_output=True, text=True, timeout=120, **kw)


def test_imports_a_file_and_reports_its_rows(floe_server, r, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("id,name,score\n" + "".join(f"{i},n{i % 7},{i * 0.5}\n" for i in range(5000)))
    out = floe_import(floe_server, "people", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("people: ") and "5000 rows" in out.stdout, out.stdout
    assert "%" in out.stderr  # progress, a line per tenth when stderr is not a terminal
    info = r.execute_command("FRAME.INFO", "people")
    assert info[info.index("rows") + 1] == 5000
    # The same name again is refused by the node, and said so; --replace replaces it.
    again = floe_import(floe_server, "people", str(path))
    assert again.returncode == 2 and "exists" in again.stderr.lower(), again.stderr
    replaced = floe_import(floe_server, "people", str(path), "--replace", "--quiet")
    assert replaced.returncode == 0 and replaced.stderr == "", replaced.stderr
    # FRAME.IMPORT's options pass through.
    semi = tmp_path / "semi.csv"
    semi.write_text("1;x\n2;-\n3;y\n")
    out = floe_import(floe_server, "semi", str(semi), "--sep", ";", "--header", "no",
                      "--na", "-", "-q")
    assert out.returncode == 0, out.stderr
    assert r.execute_command("FRAME.HEAD", "semi", 3)[1:] == [["1", "x"], ["2", None],
                                                              ["3", "y"]]


def test_failures_say_why_with_their_exit_codes(floe_server, make_floe, tmp_path):
    # A file that fails while it is read: the job fails (1), with the node's reason.
    whole = gzip.compress(b"".join(b"%d,%d\n" % (i, i * i) for i in range(100000)))
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(whole[:len(whole) // 2])
    out = floe_import(floe_server, "bad", str(bad))
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "failed" in out.stderr and "truncated" in out.stderr, out.stderr
    # Refused by the node before any job (2): outside --import-dir.
    out = floe_import(floe_server, "x", "/etc/passwd")
    assert out.returncode == 2 and "import-dir" in out.stderr, out.stderr
    # No node there (2).
    dead = subprocess.run([FLOE_BIN, "import", "-p", "1", "x", "y.csv"], capture_output=True,
                          text=True, timeout=30)
    assert dead.returncode == 2 and "refused" in dead.stderr.lower(), dead.stderr
    # A node with a password: refused without it, imports with it (flag or environment).
    locked = make_floe("--requirepass", "sesame")
    ok = tmp_path / "ok.csv"
    ok.write_text("a\n1\n2\n")
    out = floe_import(locked, "f", str(ok))
    assert out.returncode == 2 and "NOAUTH" in out.stderr, out.stderr
    assert floe_import(locked, "f", str(ok), "-a", "sesame").returncode == 0
    env = {"FLOE_REQUIREPASS": "sesame", "PATH": "/usr/bin:/bin"}
    assert floe_import(locked, "g", str(ok), env=env).returncode == 0
    # Bad flags are the tool's own (CLI11's code for a value out of range).
    out = floe_import(floe_server, "x", "y", "--port", "70000")
    assert out.returncode != 0 and "--port" in out.stderr, out.stderr


def test_ctrl_c_cancels_the_job(floe_server, r, tmp_path):
    path = tmp_path / "big.csv"
    block = "".join(f"{i},{i * 3},{i % 97}.25,label{i % 13}\n" for i in range(20000)).encode()
    with open(path, "wb") as f:
        f.write(b"a,b,c,d\n")
        for _ in range(200):  # about 130 MB: seconds to import here
            f.write(block)
    tool = subprocess.Popen([FLOE_BIN, "import", "-p", str(floe_server.port), "big", str(path)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = tool.stderr.readline()  # the first progress line: the job runs
        assert "%" in first, first
        tool.send_signal(signal.SIGINT)
        _, err = tool.communicate(timeout=60)
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
    assert tool.returncode == 1, err
    assert "cancelling" in err and "cancelled" in err, err
    assert r.exists("big") == 0
