"""Outputs never replace what they should not (issue #15; rules in dr/formats/output.py).

Every user-named output (export pcap/jsonl/perfetto, bundle create, replay
--report) goes through one helper. As root, an output path that names a
character device, a fifo or a symlink must never become a regular file, and an
output equal to an input must never replace it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import threading

import pytest

from test_stats import META, http_client_script

EXPORTS = [("export", "jsonl"), ("export", "perfetto"), ("export", "pcap"), ("bundle", "create")]


@pytest.fixture
def trace(write_trace):
    return write_trace(http_client_script().items, meta=META, summary={"events": 16})


def _args(cmd: tuple[str, str], trace, out) -> list:
    extra = ["--no-redact"] if cmd == ("bundle", "create") else []
    return [*cmd, trace, "-o", out, *extra]


def _digest(p) -> str:
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def _one_line(code: int, err: str) -> str:
    assert code == 1 and err.count("\n") == 1 and err.startswith("dr: "), (code, err)
    return err


@pytest.mark.parametrize("cmd", EXPORTS, ids="-".join)
def test_regular_file_is_replaced_atomically_keeping_its_mode(trace, tmp_path, run_dr, cmd):
    out = tmp_path / "out"
    out.write_bytes(b"old")
    os.chmod(out, 0o640)
    code, _, err = run_dr(*_args(cmd, trace, out))
    assert code == 0, err
    assert out.read_bytes() != b"old" and stat.S_IMODE(out.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "t0.drt"]  # no .part left


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
@pytest.mark.parametrize("cmd", EXPORTS, ids="-".join)
def test_character_device_is_written_in_place(trace, tmp_path, run_dr, cmd):
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null
    code, _, err = run_dr(*_args(cmd, trace, dev))
    assert code == 0, err
    assert stat.S_ISCHR(os.lstat(dev).st_mode) and os.lstat(dev).st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "t0.drt"]


@pytest.mark.parametrize("cmd", EXPORTS, ids="-".join)
def test_fifo_is_written_in_place(trace, tmp_path, run_dr, cmd):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = bytearray()

    def reader() -> None:
        with open(fifo, "rb") as f:
            got.extend(f.read())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    code, _, err = run_dr(*_args(cmd, trace, fifo))
    t.join(30)
    assert code == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and len(got) > 0


@pytest.mark.parametrize("cmd", EXPORTS, ids="-".join)
def test_symlink_is_followed_not_replaced(trace, tmp_path, run_dr, cmd):
    real = tmp_path / "real"
    real.write_bytes(b"old")
    link = tmp_path / "link"
    link.symlink_to(real)
    code, _, err = run_dr(*_args(cmd, trace, link))
    assert code == 0, err
    assert os.path.islink(link) and os.readlink(link) == str(real)
    assert real.read_bytes() != b"old" and len(real.read_bytes()) > 0


@pytest.mark.parametrize("cmd", EXPORTS, ids="-".join)
def test_output_equal_to_the_input_is_refused(trace, tmp_path, run_dr, cmd):
    before = _digest(trace)
    hard = tmp_path / "hardlink.drt"
    os.link(trace, hard)
    for out in (trace, hard):
        code, _, err = run_dr(*_args(cmd, trace, out))
        assert "is the input" in _one_line(code, err)
    assert _digest(trace) == before


@pytest.mark.parametrize("kind", ["dir", "socket", "dangling"])
def test_directory_socket_and_dangling_symlink_are_refused(trace, tmp_path, run_dr, kind):
    out = tmp_path / "o"
    if kind == "dir":
        out.mkdir()
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(out))
    else:
        out.symlink_to(tmp_path / "missing")
    mode = os.lstat(out).st_mode
    for cmd in EXPORTS:
        _one_line(*run_dr(*_args(cmd, trace, out))[::2])
    assert os.lstat(out).st_mode == mode and not (tmp_path / "missing").exists()


def test_replay_report_onto_the_trace_is_refused_before_running(trace, run_dr):
    before = _digest(trace)
    code, _, err = run_dr("replay", trace, "--report", trace)
    assert "is the input" in _one_line(code, err)
    assert _digest(trace) == before


def test_jsonl_dash_is_stdout(trace, run_dr):
    code, out, _ = run_dr("export", "jsonl", trace, "-o", "-")
    assert code == 0 and out.count("\n") > 5


def _subprocess_one_line(args: list, stdout) -> str:
    import subprocess
    import sys

    from conftest import ROOT
    res = subprocess.run([sys.executable, "-m", "dr", *map(str, args)], stdout=stdout, stderr=subprocess.PIPE,
                         text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 1 and "Traceback" not in res.stderr, (args, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("dr: ") and "No space left" in lines[0], (args, res.stderr)
    return lines[0]


@pytest.mark.parametrize("cmd", [*EXPORTS, ("show", "")], ids="-".join)
def test_a_full_output_device_is_one_line_not_a_traceback(trace, cmd):
    """/dev/full (a full disk written in place): before, show/jsonl/perfetto tracebacked."""
    args = [c for c in cmd if c] + [trace, "-o", "/dev/full"] + (["--no-redact"] if cmd[0] == "bundle" else [])
    assert "/dev/full" in _subprocess_one_line(args, None)


@pytest.mark.parametrize("args", [["show"], ["stats"], ["stats", "--json"], ["export", "jsonl"]], ids=" ".join)
def test_standard_output_on_a_full_device_is_one_line(trace, args):
    with open("/dev/full", "w") as full:
        _subprocess_one_line([*args, trace], full)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_a_full_filesystem_leaves_no_part_file_and_the_old_output(trace, tmp_path):
    """A regular output on a full filesystem: one line, the old file intact, no .part left."""
    import subprocess
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(small)], check=True)
    try:
        out = small / "out.jsonl"
        out.write_bytes(b"old")
        _subprocess_one_line(["export", "jsonl", trace, "-o", out], None)
        assert out.read_bytes() == b"old" and os.listdir(small) == ["out.jsonl"]
    finally:
        subprocess.run(["umount", str(small)], check=True)
