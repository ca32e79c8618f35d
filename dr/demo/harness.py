"""Helpers the demo and the tests share: start the demo's processes, capture a pid.

:class:`Capture` runs ``dr capture --pid PID -o TRACE`` as a child process and
waits until the trace holds a first syscall event (the probes are attached
then; a service's idle poll/epoll timeouts give that event without traffic).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["free_port", "start_line_server", "stop", "Capture", "trace_has_events"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_line_server(argv: list[str], log: Path, timeout: float = 20.0) -> subprocess.Popen:
    """Start a server that prints one line when it listens; return once it did.

    stderr goes to ``log``. Raises RuntimeError when it exits or says nothing.
    """
    f = open(log, "wb")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=f, stdin=subprocess.DEVNULL)
    f.close()
    first = p.stdout.readline().decode().strip() if p.stdout else ""
    if not first:
        p.kill()
        p.wait()
        raise RuntimeError(f"{' '.join(argv)} did not start; see {log}")
    return p


def stop(p: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Signal a child we started and wait for it (SIGKILL after ``timeout``)."""
    if p is None:
        return None
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p.stdout:
        p.stdout.close()
    return p.returncode


def trace_has_events(path: Path) -> bool:
    """True once a (possibly still growing) trace holds a syscall event."""
    from dr.errors import DrError
    from dr.formats.trace import TraceReader
    if not Path(path).exists():
        return False
    try:
        with TraceReader(path) as r:
            for _ in r.events():
                return True
    except (DrError, OSError):
        return False
    return False


class Capture:
    """``dr capture --pid PID -o TRACE`` in the background, as a context manager.

    ``start()`` returns once attached (raises RuntimeError naming the log when
    capture exits or does not attach within ``attach_timeout`` s); ``stop()``
    sends SIGINT and returns capture's exit status.
    """

    def __init__(self, pid: int, trace: Path, log: Path, attach_timeout: float = 90.0,
                 extra: list[str] | None = None) -> None:
        self.pid, self.trace, self.log = pid, Path(trace), Path(log)
        self.attach_timeout = attach_timeout
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Capture":
        if self.trace.exists():
            self.trace.unlink()
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dr", "capture", "--pid", str(self.pid), "-o", str(self.trace), *self.extra],
                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.attach_timeout
        # Attached once the trace holds an event, or capture said it records (an
        # idle pre-fork master and its workers blocked in accept make no event).
        while not (trace_has_events(self.trace) or b"dr capture: recording" in self.log.read_bytes()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"dr capture exited with status {self.proc.returncode}: "
                                   f"{self.log.read_text(errors='replace').strip()[-400:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dr capture did not attach within {self.attach_timeout:.0f} s; see {self.log}")
            time.sleep(0.1)
        return self

    def stop(self, settle_s: float = 0.0) -> int | None:
        if settle_s:
            time.sleep(settle_s)
        return stop(self.proc, signal.SIGINT, timeout=30.0)

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
