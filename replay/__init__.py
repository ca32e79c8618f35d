"""Replay: the sandbox, the seccomp notification supervisor, substitution, divergence reports.

Only this package touches seccomp; it never imports bcc. Entry points::

    from dr.replay import replay_trace, verify
    res = replay_trace("run.drt", show_output=True)   # ReplayResult
    res.ok, res.exit_code, res.report.to_dict()

Building blocks for other replay policies (streams replay): :mod:`dr.replay.sandbox`
(namespaces, root, filter), :mod:`dr.replay.notify` (seccomp_unotify primitives,
tracee memory), :mod:`dr.vdso` (time functions through syscalls, shared with capture).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from dataclasses import dataclass
from typing import Any

from dr.errors import DrError, ExitCode

__all__ = ["ReplayResult", "replay_trace", "verify"]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Outcome of one replay: ``status`` "faithful" | "incomplete" | "diverged" | "error".

    "incomplete": everything compared matched, but not every output could be
    compared (``report.not_compared`` says what); never exit status 0."""

    status: str
    message: str
    report: Any  # dr.replay.divergence.ReplayReport

    @property
    def ok(self) -> bool:
        return self.status == "faithful"

    @property
    def exit_code(self) -> ExitCode:
        return {"faithful": ExitCode.OK, "diverged": ExitCode.DIVERGED,
                "incomplete": ExitCode.INCOMPLETE,
                "interrupted": ExitCode.INTERRUPTED}.get(self.status, ExitCode.ERROR)


def replay_trace(trace_path: str, *, rootfs: str = "/", command: tuple[str, ...] | None = None,
                 show_output: bool = False, keep_going: bool = False,
                 report_path: str | None = None, stall_timeout: float = 10.0,
                 stdout: Any = None, stderr: Any = None, memory_limit: int | None = 0) -> ReplayResult:
    """Strict replay of a spawn-mode trace; never raises for a divergence.

    Raises TraceError for a bad trace, ReplayError/NotSupported when the
    sandbox cannot run, OutputError when the report cannot be written.
    """
    from dr.replay.strict import ReplayOptions, ReplaySession, Status

    opts = ReplayOptions(rootfs=rootfs, command=command, show_output=show_output,
                         keep_going=keep_going, stall_timeout=stall_timeout,
                         stdout=stdout, stderr=stderr, memory_limit=memory_limit)
    s = None
    try:
        with _interruptible():
            s = ReplaySession(trace_path, opts)   # TraceError/ReplayError: no report to write yet
            s.start()
            r = s.run()
    except _Interrupted as e:
        if s is None:
            raise DrError(f"interrupted by {signal.Signals(e.signum).name} while reading the trace",
                          exit_code=ExitCode.INTERRUPTED) from None
        # SIGINT/SIGTERM: the tracee is killed and the scratch removed (close), and
        # the report says how far the replay got.
        s.close()
        s.report.verdict = "interrupted"
        s.report.error = f"interrupted by {signal.Signals(e.signum).name}"
        s.report.events_replayed = sum(s.consumed)
        if report_path:
            _write_report(s.report, report_path)
        return ReplayResult("interrupted", s.report.error, s.report)
    except DrError as e:
        if s is None:
            raise
        s.close()
        s.report.verdict = "error"
        s.report.error = e.message
        if report_path:
            _write_report(s.report, report_path)
        raise
    finally:
        if s is not None:
            s.close()
    status = {Status.EXITED: "faithful", Status.DIVERGED: "diverged"}.get(r.status, "error")
    if status == "faithful" and s.report.not_compared:
        status = "incomplete"
    s.report.verdict = status
    if status == "error":
        s.report.error = r.message
    if report_path:
        _write_report(s.report, report_path)
    return ReplayResult(status, r.message, s.report)


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (BaseException: the session's own error handling
    must not turn it into a replay error)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _interruptible():
    """Turn SIGINT/SIGTERM into :class:`_Interrupted` while replaying (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_(signum: int, _frame: Any) -> None:
        raise _Interrupted(signum)

    old = {sig: signal.signal(sig, raise_) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _write_report(report: Any, path: str) -> None:
    """Write ``report.to_dict()`` as JSON; raises OutputError."""
    from dr.formats.output import open_output
    with open_output(path, what="the report") as f:
        json.dump(report.to_dict(), f, indent=2)
        f.write("\n")


def verify(trace_path: str, **kw: Any) -> ReplayResult:
    """Replay ``trace_path`` at once (for ``dr capture --verify``): faithful or not."""
    return replay_trace(trace_path, **kw)
