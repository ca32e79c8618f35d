"""Replay fails closed: a trace or bundle that makes any part of the sandbox fail runs nothing.

The crafted input is the one of issue #15: an attach-mode trace whose metadata
holds a hostname with a NUL byte (sethostname would fail) and a shell command
as argv that would create a marker file on the host. Before the fix, streams
replay fell back to a plain network namespace and ran it as host root. Now:
exit 1, one line on stderr, the marker absent. The same for a mistyped
``--rootfs``, for both replays, and for each field a trace supplies.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys

import pytest

from conftest import ROOT
from dr import schema
from dr.errors import ReplayError
from dr.formats.trace import Event, Payload

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]
DR = [sys.executable, "-m", "dr"]


def _sin(host: str, port: int) -> bytes:
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(host) + b"\0" * 8


def _ev(seq: int, name: str, args: list[int], ret: int, payloads: dict | None = None) -> Event:
    t = 10**9 + seq * 1000
    return Event(tid=100, nr=schema.by_name(name).nr, args=tuple(args + [0] * (6 - len(args))), ret=ret,
                 ts_enter=t, ts_exit=t + 10, tgid=100, seq=seq,
                 payloads={s: Payload(s, d) for s, d in (payloads or {}).items()})


def _attach_trace(write_trace, argv: list[str], **meta_extra) -> str:
    evs = [_ev(1, "accept4", [3], 5, {1: _sin("192.0.2.1", 41000)}),
           _ev(2, "recvfrom", [5], 4, {1: b"one\n"}),
           _ev(3, "sendto", [5], 4, {1: b"two\n"}),
           _ev(4, "close", [5], 0)]
    meta = {"mode": "attach", "pid": 4242, "argv": argv, "cwd": "/",
            "fds": [{"fd": 3, "type": "socket", "local": "127.0.0.1:9311", "state": "LISTEN"}]}
    meta.update(meta_extra)
    return str(write_trace(evs, meta))


def _dr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(DR + list(args), capture_output=True, text=True, timeout=120, cwd=ROOT)


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("dr: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def test_crafted_bundle_nul_hostname_runs_nothing(write_trace, tmp_path):
    marker = tmp_path / "marker"
    trace = _attach_trace(write_trace, ["/bin/sh", "-c", f"touch {marker}"], hostname="h\x00x")
    bundle = tmp_path / "crafted.drb"
    made = _dr("bundle", "create", trace, "-o", str(bundle), "--no-redact")
    assert made.returncode == 0, made.stderr
    line = _one_line_error(_dr("replay", str(bundle)))
    assert "hostname" in line and "nothing was run" in line
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["streams", "strict"])
def test_missing_rootfs_runs_nothing(write_trace, tmp_path, kind):
    marker = tmp_path / "marker"
    argv = ["/bin/sh", "-c", f"touch {marker}"]
    if kind == "streams":
        trace = _attach_trace(write_trace, argv)
    else:
        trace = str(write_trace([_ev(1, "execve", [0, 0, 0], 0, {0: b"/bin/sh\0"}), _ev(2, "exit_group", [0], 0)],
                                {"mode": "spawn", "pid": 100, "tids": [100], "argv": argv, "cwd": "/"}))
    line = _one_line_error(_dr("replay", trace, "--rootfs", "/nonexistent"))
    assert "/nonexistent" in line
    assert not marker.exists()


@pytest.mark.parametrize("field,value", [
    ("hostname", "h\x00x"), ("hostname", "x" * 65), ("hostname", "a/b"), ("hostname", ""),
    ("argv", ()), ("argv", ("/bin/sh\x00", "-c")), ("argv", ("",)),
    ("env", (("A=B", "c"),)), ("env", (("A", "b\x00c"),)),
    ("cwd", "relative"), ("cwd", "/a\x00b"), ("exe", "/bin/sh\x00"),
    ("uid", -1), ("uid", 1 << 20), ("gid", 70000), ("first_pid", 1), ("first_pid", 1 << 23),
    ("root", "/nonexistent"), ("root", "/a\x00b"),
])
def test_every_supplied_field_is_validated_before_anything_runs(tmp_path, field, value):
    """Sandbox.start refuses in one line before it forks (no scratch directory is made)."""
    import dataclasses
    import tempfile

    from dr.replay.sandbox import Sandbox, SandboxSpec

    marker = tmp_path / "marker"
    spec = SandboxSpec(argv=("/bin/sh", "-c", f"touch {marker}"), env=(("PATH", "/bin"),))
    spec = dataclasses.replace(spec, **{field: value})
    before = set(os.listdir(tempfile.gettempdir()))
    sb = Sandbox(spec)
    with pytest.raises(ReplayError) as ei:
        sb.start()
    assert "\n" not in ei.value.message and "nothing was run" in ei.value.message
    assert sb.stage2 == -1 and not marker.exists()
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("dr-replay-")}


def test_streams_has_no_mode_outside_the_sandbox(write_trace):
    from dr.errors import UsageError
    from dr.replay.streams import StreamsSession

    trace = _attach_trace(write_trace, ["/bin/true"])
    with pytest.raises(UsageError):
        StreamsSession(trace, mode="netns")


def test_scratch_and_logs_of_a_killed_dr_are_swept_by_the_next(tmp_path):
    """A dr killed with SIGKILL leaves dr-replay-PID-* and dr-streams-PID-*.log; the next sweeps
    them once PID is gone, and leaves a live owner's, a symlink and other names alone."""
    import subprocess
    import sys

    from dr.replay.sandbox import sweep_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getpid()
    (tmp_path / f"dr-replay-{dead.pid}-abc").mkdir()
    (tmp_path / f"dr-replay-{dead.pid}-abc" / "upper").mkdir()
    (tmp_path / f"dr-streams-{dead.pid}-xyz.log").write_text("log")
    (tmp_path / f"dr-replay-{live}-mine").mkdir()
    (tmp_path / f"dr-streams-{live}-mine.log").write_text("log")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / f"dr-replay-{dead.pid}-link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "dr-replay-notapid").mkdir()
    removed = sweep_stale(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == [f"dr-replay-{dead.pid}-abc",
                                                             f"dr-streams-{dead.pid}-xyz.log"]
    assert sorted(os.listdir(tmp_path)) == sorted([f"dr-replay-{live}-mine", f"dr-streams-{live}-mine.log",
                                                   "elsewhere", f"dr-replay-{dead.pid}-link", "dr-replay-notapid"])


def test_sigkilled_replay_leaves_nothing_after_the_next_run(write_trace, tmp_path):
    """SIGKILL dr in the middle of a streams replay; the next replay removes what it left."""
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    trace = _attach_trace(write_trace, [sys.executable, "-c", "import time; time.sleep(60)"])
    p = subprocess.Popen(DR + ["replay", trace], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    tmp = tempfile.gettempdir()

    def mine() -> list[str]:
        return [n for n in os.listdir(tmp) if n.startswith((f"dr-replay-{p.pid}-", f"dr-streams-{p.pid}-"))]

    deadline = time.monotonic() + 60
    while len(mine()) < 2 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert len(mine()) == 2, "the replay never made its scratch directory and log"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert mine()  # left behind by the killed dr
    # The next dr that starts a sandbox (here a strict replay of a two-event trace) sweeps.
    spawn = str(write_trace([_ev(1, "execve", [0, 0, 0], 0, {0: b"/bin/true\0"}), _ev(2, "exit_group", [0], 0)],
                            {"mode": "spawn", "pid": 100, "tids": [100], "argv": ["/bin/true"], "cwd": "/"}))
    _dr("replay", spawn)
    assert not mine()


@pytest.mark.parametrize("how", ["script", "executable", "flag"])
def test_capture_output_never_replaces_a_file_the_command_reads(tmp_path, how):
    """`dr capture -o run.sh -- sh run.sh` truncated the script into a trace header before
    the command started; the output must not be a file the command reads (the same
    st_dev/st_ino as its executable or a file argument): one line, nothing run or written."""
    import shutil
    script = tmp_path / "run.sh"
    marker = tmp_path / "ran"
    script.write_text(f"touch {marker}\n")
    prog = tmp_path / "prog"
    shutil.copy("/bin/true", prog)
    out, cmd = {"script": (script, ["sh", str(script)]),
                "executable": (prog, [str(prog)]),
                "flag": (script, ["sh", "-c", "true", f"--rcfile={script}"])}[how]
    before = out.read_bytes()
    line = _one_line_error(_dr("capture", "-q", "-o", str(out), "--", *cmd))
    assert line.startswith(f"dr: cannot write trace {out}: it is the input "), line
    assert out.read_bytes() == before
    assert not marker.exists()


def test_capture_output_onto_a_fifo_is_refused_at_once(tmp_path):
    """`dr capture -o FIFO` blocked forever in open() when no one read the fifo (SIGTERM and
    Ctrl-C waited for it) and never ended when someone did: one line, nothing run."""
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    marker = tmp_path / "ran"
    try:
        res = subprocess.run(DR + ["capture", "-q", "-o", str(fifo), "--", "touch", str(marker)],
                             capture_output=True, text=True, timeout=20, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("dr capture -o FIFO hung")
    line = _one_line_error(res)
    assert line.startswith(f"dr: cannot write trace {fifo}: it is a fifo"), line
    assert not marker.exists()
