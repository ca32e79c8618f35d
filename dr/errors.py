"""The one exception tree of dr, and its exit codes.

Every error a user can cause (bad input, missing permission, corrupt trace,
missing kernel feature) is a :class:`DrError` carrying the single line the user
sees and the process exit code. The CLI prints ``dr: <message>`` and exits with
``exit_code``; it never shows a traceback for a DrError.

This module imports nothing from the rest of the package, so every module may
import it.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of the ``dr`` command, named in one place.

    OK
        Success: capture lost nothing, replay was faithful, verify passed.
    ERROR
        An operational error (bad input, no permission, corrupt file).
    USAGE
        Wrong flags or arguments (typer/click also uses 2).
    LOSS
        Capture finished but events were lost (counted in the trace).
    DIVERGED
        Replay departed from the recording (or responses differ).
    MISMATCH
        ``dr bundle verify`` found a hash mismatch or an incomplete trace.
    TRUNCATED
        A trace was cut short; what was read is valid up to the last frame.
    INCOMPLETE
        Replay matched everything it compared, but not every output was compared
        (payloads cut at snaplen, a trace cut short, lost events, a task that
        outlived the recording); the report says what.
    INTERRUPTED
        Stopped by SIGINT (conventional 128 + 2).
    """

    OK = 0
    ERROR = 1
    USAGE = 2
    LOSS = 3
    DIVERGED = 4
    MISMATCH = 5
    TRUNCATED = 6
    INCOMPLETE = 7
    INTERRUPTED = 130


class DrError(Exception):
    """Base of every error dr reports to a user.

    ``str(err)`` is one line: what is wrong and what to do about it.
    """

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class UsageError(DrError):
    """Wrong combination of flags or arguments."""

    exit_code = ExitCode.USAGE


class PermissionDenied(DrError):
    """Not root / missing capability (CAP_BPF, CAP_SYS_ADMIN, CAP_PERFMON)."""


class NotSupported(DrError):
    """The kernel or the system lacks a feature (kprobes, BTF, seccomp notify, ...)."""


class MissingDependency(DrError):
    """BCC, kernel headers or another system package is not installed."""


class TargetError(DrError):
    """The target process does not exist, exited, or cannot be started."""


class TraceError(DrError):
    """A trace file is corrupt, foreign, or of a newer format version.

    ``offset`` is the byte offset in the file where the problem was found,
    or None when it does not apply.
    """

    def __init__(self, message: str, *, offset: int | None = None,
                 exit_code: ExitCode | None = None) -> None:
        if offset is not None:
            message = f"{message} (at byte {offset})"
        super().__init__(message, exit_code=exit_code)
        self.offset = offset


class TraceTruncated(TraceError):
    """A trace ends before its summary record: it was cut short.

    Everything up to ``offset`` (the end of the last complete frame) is valid.
    """

    exit_code = ExitCode.TRUNCATED


class BundleError(DrError):
    """A bundle is malformed, hostile, or fails verification."""

    exit_code = ExitCode.MISMATCH


class ReplayError(DrError):
    """Replay could not run (sandbox set-up failed, unsupported call, bad trace)."""


class Divergence(DrError):
    """Replay departed from the recording; ``report`` holds the details."""

    exit_code = ExitCode.DIVERGED

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class OutputError(DrError):
    """An output file cannot be written (permission, disk full)."""
