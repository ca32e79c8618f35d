"""dr export pcap -o /dev/stdout (or -o -) writes to a pipe: it said "is a symlink to
/proc/N/fd/pipe:[...], which does not exist" and -o - was refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import make_trace, write_ev  # noqa: E402

DR = str(Path(sys.executable).with_name("dr"))


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pcap")
    return make_trace(d / "api.drt", [write_ev(i, b"hello\n") for i in range(3)])


@pytest.mark.parametrize("name", ["/dev/stdout", "-"])
def test_pcap_into_a_pipe_is_the_file_s_bytes(trace, tmp_path, name):
    f = tmp_path / "t.pcap"
    assert subprocess.run([DR, "export", "pcap", str(trace), "-o", str(f)], capture_output=True,
                          timeout=60).returncode == 0
    r = subprocess.run([DR, "export", "pcap", str(trace), "-o", name], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f.read_bytes() and r.stdout[:4] == b"\x4d\x3c\xb2\xa1"  # nanosecond pcap


def test_pcap_into_a_file_by_its_stdout_name(trace, tmp_path):
    f = tmp_path / "out.pcap"
    with open(f, "wb") as out:
        r = subprocess.run([DR, "export", "pcap", str(trace), "-o", "-"], stdout=out,
                           stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0 and f.read_bytes()[:4] == b"\x4d\x3c\xb2\xa1"


def test_pcap_into_a_pipe_whose_reader_went_away_is_success(trace):
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([DR, "export", "pcap", str(trace), "-o", "/dev/stdout"], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr


def test_pcap_is_not_written_to_a_terminal(trace):
    import pty
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(DR, [DR, "export", "pcap", str(trace), "-o", "-"])
    import select
    import time
    out, deadline = b"", time.monotonic() + 60
    while time.monotonic() < deadline:  # bounded: a hung dr fails the test, never hangs it
        if not select.select([fd], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    assert b"not to a terminal" in out and b"\xa1" not in out


@pytest.mark.parametrize("argv", [["show"], ["export", "jsonl"], ["export", "perfetto"]])
def test_text_outputs_into_a_pipe_by_dev_stdout(trace, argv):
    plain = subprocess.run([DR, *argv, str(trace), "-o", "-"], capture_output=True, timeout=60)
    r = subprocess.run([DR, *argv, str(trace), "-o", "/dev/stdout"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == plain.stdout and r.stdout
