"""What a person sees on a terminal: the progress bar and colour, read from a real
tmux pane (send-keys to type, capture-pane to read the screen).

The bar test is made deterministic without timing assumptions: ``dr show -o``
writes into a FIFO the test does not read, so dr blocks part-way through the
trace with the bar on screen; the test reads the pane, then drains the FIFO
and sees the bar go away and the closing line. Each screen read is saved next
to the test's temporary files (``screens.txt``) as the artefact.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
import uuid

import pytest

from dr import schema
from dr.formats.trace import Event, Payload, ProcEvent, TraceWriter, encode_block
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (scripts/setup.sh installs it)")

WAIT_S = 60  # bound on every wait for the screen: never a hang, and no speed assumed


def _events(n: int, t0: int) -> list:
    nr = schema.by_name
    out = []
    for i in range(n):
        t = t0 + i * 2000
        if i % 50 == 0:
            out.append(Event(100, nr("openat").nr, (2**64 - 100, 0x1000, 0, 0, 0, 0), -2, t, t + 900,
                             100, i, 0, 0, {1: Payload(1, b"/etc/missing.conf\0")}))
        else:
            out.append(Event(100, nr("write").nr, (1, 0x2000, 24, 0, 0, 0), 24, t, t + 900, 100, i, 0, 0,
                             {1: Payload(1, b"line %08d of the log\n" % i)}))
    return out


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("term")
    small = d / "small.drt"
    w = TraceWriter(small, {"tool": "dr", "tids": [100], "pid": 100, "started_ns": 10**9})
    w.write_events(_events(60, 10**9) + [ProcEvent(schema.PROC_EVENTS["SIGNAL"], 100, 100, 10**9 + 200_000, 15, 0x4000),
                                         ProcEvent(schema.PROC_EVENTS["EXIT"], 100, 100, 10**9 + 300_000, 0, 0)])
    w.close({"events": 60})
    big = d / "big.drt"
    block = encode_block(_events(4000, 10**9))
    w = TraceWriter(big, {"tool": "dr", "tids": [100], "pid": 100, "started_ns": 10**9})
    for _ in range(40):  # 160,000 events in 40 frames
        w.write_block(block)
        w.flush()
    w.close({"events": 160_000})
    return d, small, big


class Pane:
    """One tmux session on its own server socket, 120x30."""

    def __init__(self, workdir) -> None:
        self.sock = f"dr-test-{uuid.uuid4().hex[:8]}"
        self.log = workdir / "screens.txt"
        env = {**os.environ, "TERM": "xterm-256color"}
        env.pop("NO_COLOR", None)
        env["PATH"] = f"{os.path.dirname(sys.executable)}:{env.get('PATH', '')}"
        subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", "new-session", "-d", "-x", "120",
                        "-y", "30", "-c", str(ROOT)], env=env, check=True, timeout=WAIT_S)

    def type(self, line: str) -> None:
        subprocess.run(["tmux", "-L", self.sock, "send-keys", line, "Enter"], check=True, timeout=WAIT_S)

    def screen(self, escapes: bool = False) -> str:
        args = ["tmux", "-L", self.sock, "capture-pane", "-p"] + (["-e"] if escapes else [])
        text = subprocess.run(args, capture_output=True, text=True, check=True, timeout=WAIT_S).stdout
        with open(self.log, "a") as f:
            f.write(f"----- screen{' (with escapes)' if escapes else ''}\n{text}")
        return text

    def wait_for(self, needle: str, escapes: bool = False) -> str:
        deadline = time.monotonic() + WAIT_S
        while True:
            text = self.screen(escapes)
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never appeared; the screen:\n{text}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, timeout=WAIT_S)


@pytest.fixture
def pane(traces):
    p = Pane(traces[0])
    try:
        yield p
    finally:
        p.close()


def dr_cmd() -> str:
    return f"{sys.executable} -m dr"


def test_colour_in_a_terminal(traces, pane):
    _, small, _ = traces
    pane.type(f"{dr_cmd()} show {small} -e trace=openat,exit_group; echo DONE-$?")
    text = pane.wait_for("DONE-0", escapes=True)
    errors = [ln for ln in text.splitlines() if "ENOENT" in ln]
    assert errors and all("\x1b[31m" in ln for ln in errors)            # errors red
    assert any("\x1b[33m--- SIGTERM" in ln for ln in text.splitlines())  # signals yellow
    # process events bold cyan (tmux writes bold and colour as two sequences)
    assert any("\x1b[1m" in ln and "\x1b[36m+++ exited with 0 +++" in ln for ln in text.splitlines())
    pane.type(f"NO_COLOR=1 {dr_cmd()} show {small} -e trace=openat; echo DONE2-$?")
    text = pane.wait_for("DONE2-0", escapes=True)
    tail = text[text.index("NO_COLOR=1"):]
    assert "ENOENT" in tail and "\x1b[31m" not in tail


def test_progress_bar_while_reading_then_gone(traces, pane, tmp_path):
    _, _, big = traces
    fifo = tmp_path / "listing.fifo"
    os.mkfifo(fifo)
    pane.type(f"{dr_cmd()} show {big} -o {fifo}; echo DONE-$?")
    # Open the reading end without reading: dr fills the pipe and waits, mid-trace.
    deadline = time.monotonic() + WAIT_S
    fd = None
    while fd is None:
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        text = pane.wait_for("dr show: reading big.drt")
        bar = next(ln for ln in text.splitlines() if "dr show: reading big.drt" in ln)
        assert "━" in bar and "/" in bar and ("MB" in bar or "kB" in bar)  # a bar of bytes of total
        os.set_blocking(fd, True)
        got = 0
        while chunk := os.read(fd, 1 << 20):  # drain: dr goes on to the end
            got += len(chunk)
    finally:
        os.close(fd)
    text = pane.wait_for("DONE-0")
    assert "dr show: reading" not in text  # transient: the bar is gone once the work is done
    assert f"dr show: wrote {fifo}" in text
    assert got > 160_000 * 20
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_no_bar_when_not_a_terminal(traces, tmp_path):
    _, _, big = traces
    r = subprocess.run([sys.executable, "-m", "dr", "show", str(big), "-c"], capture_output=True,
                       text=True, cwd=ROOT, timeout=WAIT_S * 4)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.splitlines()[-1].split()[3] == "160000"
