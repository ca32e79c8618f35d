"""The one-line messages a new user meets: each says what happened, in the user's words."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from dr import schema
from dr.formats.trace import Event, Payload
from tests.conftest import ROOT

DR = [sys.executable, "-m", "dr"]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (BPF)")


def dr(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(DR + [str(a) for a in args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def ev(tid, name, args, ret, pays=None, seq=0, t=1000):
    return Event(tid, schema.by_name(name).nr, tuple(args) + (0,) * (6 - len(args)), ret, t, t + 500,
                 tid, seq, 0, 0, {s: Payload(s, d) for s, d in (pays or {}).items()})


def sin(ip: str, port: int) -> bytes:
    return struct.pack("<H", 2) + struct.pack(">H", port) + socket.inet_aton(ip) + b"\0" * 8


def test_kernel_thread_is_named_as_such():
    r = dr("capture", "--pid", "2", "-o", "/nonexistent/k.drt")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--pid 2 is a kernel thread" in r.stderr and "exited while" not in r.stderr


def test_idle_wrapper_names_its_children():
    from dr.cli.capture import idle_hint
    p = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while "sleep" not in idle_hint(p.pid, 2.0) and time.monotonic() < deadline:
            time.sleep(0.05)
        text = idle_hint(p.pid, 2.0)
        kid = int(re.search(r"dr capture --pid (\d+)", text).group(1))
        assert f"process {p.pid} made no syscalls in these 2.0 s" in text
        assert f"{kid} (sleep)" in text and kid != p.pid
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


@pytest.fixture
def net_trace(write_trace):
    """A server that listened at start and made 25 outbound connections."""
    items = []
    for i in range(25):
        items.append(ev(10, "connect", (3 + i, 0x1000, 16), 0, {1: sin("10.9.0.%d" % (i + 1), 5432)},
                        seq=i + 1, t=1000 * (i + 1)))
    meta = {"tool": "dr", "tids": [10], "pid": 10, "mode": "attach", "argv": ["srv"],
            "fds": [{"fd": 3, "type": "socket", "proto": "tcp", "local": "127.0.0.1:18080",
                     "peer": "0.0.0.0:0", "state": "LISTEN"}]}
    return write_trace(items, meta=meta, summary={"events": 25})


def test_bundle_readme_counts_what_it_leaves_out_and_shows_listeners(net_trace, tmp_path):
    out = tmp_path / "b.drb"
    r = dr("bundle", "create", net_trace, "-o", out)
    assert r.returncode == 0, r.stderr
    text = dr("bundle", "info", out).stdout
    assert text.count("- outbound 10.9.0.") == 20
    assert "- ... and 5 more (dr stats lists them all)" in text
    assert "- open at start: fd 3 listening on 127.0.0.1:18080" in text
    assert "0.0.0.0:0" not in text


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_bundle_cut_short_says_so(net_trace, tmp_path, keep):
    out = tmp_path / "b.drb"
    assert dr("bundle", "create", net_trace, "-o", out).returncode == 0
    data = out.read_bytes()
    cut = tmp_path / "cut.drb"
    cut.write_bytes(data[:int(len(data) * keep)])
    for cmd in (["bundle", "verify", cut], ["show", cut], ["stats", cut]):
        r = dr(*cmd)
        assert r.returncode != 0 and r.stdout == "" and r.stderr.count("\n") == 1, (cmd, r.stderr)
        assert "cut short" in r.stderr and "not a tar" not in r.stderr and "Traceback" not in r.stderr


def test_another_build_only_for_other_bytes(tmp_path):
    from dr.replay.streams import other_build
    exe = os.path.realpath(shutil.which("python3") or sys.executable)
    digest = hashlib.sha256(open(exe, "rb").read()).hexdigest()
    app = tmp_path / "app.py"
    app.write_text("print(1)\n")
    meta = {"exe": {"path": exe, "sha256": digest}, "argv": [exe, "app.py"], "cwd": str(tmp_path)}
    assert not other_build(meta, [exe, "app.py"])           # --cmd naming the same binary
    copy = tmp_path / "same.py"
    copy.write_bytes(app.read_bytes())
    assert not other_build(meta, [exe, str(copy)])          # another path, the same bytes
    v2 = tmp_path / "v2.py"
    v2.write_text("print(2)\n")
    assert other_build(meta, [exe, str(v2)])                # other code
    assert other_build(meta, ["/bin/sh", "app.py"])         # another executable
    assert other_build(meta, [exe, "app.py", "--extra"])    # other arguments


@needs_root
@pytest.mark.root
def test_capture_and_replay_count_the_same_syscalls(tmp_path):
    trace = tmp_path / "t.drt"
    r = dr("capture", "-o", trace, "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    # not a terminal: one line per record, however long
    assert "drains" not in r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("  syscalls "))
    assert len(line) > 80 and "payload" in line and line.rstrip().endswith(")")
    # a short run's trace is mostly the bytes of the files it mapped: said, never "0.3x smaller"
    assert "file(s)" in line and "x smaller" not in line
    m = re.search(r"^  syscalls ([\d,]+) \(", r.stderr, re.M)
    recorded = int(m.group(1).replace(",", ""))
    assert recorded == json.loads(dr("stats", trace, "--json").stdout)["events"]
    r = dr("replay", trace)
    assert r.returncode == 0, r.stderr
    m = re.search(r"faithful: ([\d,]+) recorded syscalls, ([\d,]+) answered from the trace; "
                  r"([\d,]+) run natively", r.stderr)
    assert m, r.stderr
    total, answered, native = (int(g.replace(",", "")) for g in m.groups())
    assert total == recorded and answered + native == recorded and answered > 0


@pytest.mark.parametrize("argv,what", [
    (["show"], "trace"), (["stats"], "trace"), (["export", "jsonl"], "trace"),
    (["bundle", "create", "-o", "{d}/b.drb"], "trace"), (["bundle", "verify"], "bundle"),
    (["bundle", "info"], "bundle"), (["replay"], "trace"),
])
def test_a_missing_file_is_worded_the_same_by_every_command(run_dr, tmp_path, argv, what):
    missing = tmp_path / "nope.drt"
    args = [a.format(d=tmp_path) for a in argv]
    args = args[:2] + [str(missing)] + args[2:] if argv[0] == "bundle" else args + [str(missing)]
    code, out, err = run_dr(*args)
    assert (code, out) == (1, "")
    assert err == f"dr: cannot read {what} {missing}: No such file or directory\n"
