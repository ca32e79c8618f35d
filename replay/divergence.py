"""Divergence reports: where a replay departed from its recording, in words and bytes.

A :class:`Divergence` names the thread (recorded tid), the event index in the
trace, the expected syscall (decoded like ``dr show``) and the actual one, the
last events of that thread, and for payloads a text or hex diff (difflib).
:class:`ReplayReport` gathers what ``dr replay --report FILE.json`` writes.
"""

from __future__ import annotations

import difflib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dr import schema

__all__ = ["Divergence", "ReplayReport", "payload_diff", "decode_event", "decode_call"]

HEX_WIDTH = 16
MAX_DIFF_LINES = 40


@dataclass(slots=True)
class Divergence:
    """One mismatch between the recording and the replay.

    ``kind``: "syscall" (another call than recorded), "argument", "payload",
    "exit" (exit status), "ended" (the replay ended early), "extra" (a call
    after the recording ended), "stalled", "unsupported".
    """

    kind: str
    message: str
    tid: int | None = None
    index: int | None = None
    expected: str | None = None
    actual: str | None = None
    history: list[str] = field(default_factory=list)
    diff: list[str] = field(default_factory=list)
    #: Set when the departure may be a user-space data race (see dr.replay.strict.races).
    race: str | None = None
    #: Set when an asynchronous signal reached this thread earlier than recorded before it departed.
    signal: str | None = None
    #: Set when the capture lost events: what they did is missing, so the departure may come from them.
    lost: str | None = None

    def text(self) -> str:
        """The multi-line human report."""
        out = [f"divergence: {self.message}"]
        if self.lost:   # first: the likeliest cause, before any guess from the program's own state
            out.append(f"  {self.lost}")
        where = ([f"thread {self.tid}"] if self.tid is not None else []) + \
            ([f"syscall #{self.index} of the trace (dr show --index)"] if self.index is not None else [])
        if where:  # #N counts the trace's syscalls from 0, as dr capture and dr show -c count them
            out.append("  " + ", ".join(where))
        if self.expected is not None:
            out.append(f"  expected: {self.expected}")
        if self.actual is not None:
            out.append(f"  actual:   {self.actual}")
        if self.race:
            out.append(f"  {self.race}")
        if self.signal:
            out.append(f"  {self.signal}")
        if self.history:
            out.append(f"  last {len(self.history)} syscalls of thread {self.tid}:")
            out.extend(f"    {h}" for h in self.history)
        if self.diff:
            out.append("  payload diff (--- recorded, +++ replayed):")
            out.extend(f"    {d}" for d in self.diff)
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "tid": self.tid, "index": self.index,
                "expected": self.expected, "actual": self.actual, "history": self.history,
                "diff": self.diff, "race": self.race,
                "signal": self.signal, "lost": self.lost}


def _printable(b: bytes) -> bool:
    if not b:
        return True
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\n\t\r" for c in s)


def _hexlines(b: bytes) -> list[str]:
    return [f"{i:08x}  {b[i:i + HEX_WIDTH].hex(' ')}" for i in range(0, len(b), HEX_WIDTH)]


def payload_diff(recorded: bytes, replayed: bytes) -> list[str]:
    """A unified diff of two payloads: by lines when both are text, else by hex rows.

    Also names the first differing byte offset. At most MAX_DIFF_LINES lines.
    """
    first = next((i for i, (a, b) in enumerate(zip(recorded, replayed)) if a != b),
                 min(len(recorded), len(replayed)))
    head = [f"first difference at byte {first} (recorded {len(recorded)} bytes, "
            f"replayed {len(replayed)} bytes)"]
    if _printable(recorded) and _printable(replayed):
        a = recorded.decode().splitlines(keepends=True)
        b = replayed.decode().splitlines(keepends=True)
    else:
        a, b = _hexlines(recorded), _hexlines(replayed)
    lines = [ln.rstrip("\n") for ln in difflib.unified_diff(a, b, "recorded", "replayed", n=1, lineterm="")]
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... {len(lines) - MAX_DIFF_LINES} more lines"]
    return head + lines


_formatter = None


def decode_event(ev: Any, meta: dict | None = None) -> str:
    """One event as ``dr show`` prints it (falls back to name(args) = ret)."""
    global _formatter
    try:
        from dr.formats.strace import Formatter, ShowOptions
        if _formatter is None:
            _formatter = Formatter(ShowOptions(strsize=48, prefix=False), {"tids": []})
        return _formatter.line(ev).strip()
    except Exception:  # noqa: BLE001 - a report must never fail on a decode
        args = ", ".join(hex(a) for a in ev.args)
        return f"{schema.name_of(ev.nr)}({args}) = {ev.ret}"


def decode_call(nr: int, args: tuple[int, ...], payloads: dict[int, bytes] | None = None) -> str:
    """The replayed call (no result yet) decoded like ``dr show``: ``write(1, "hi", 2)``."""
    from dr.formats.trace import Event, Payload
    ev = Event(tid=0, nr=nr, args=tuple(args), ret=0)
    for slot, data in (payloads or {}).items():
        ev.payloads[slot] = Payload(slot, data)
    line = decode_event(ev)
    cut = line.rfind(" = ")
    return line[:cut] if cut > 0 else line


@dataclass(slots=True)
class ReplayReport:
    """What a replay did: counts per syscall, bytes substituted and compared, divergences."""

    trace: str
    started: float = field(default_factory=time.monotonic)
    wall_s: float = 0.0
    events_total: int = 0
    events_replayed: int = 0
    syscalls: Counter = field(default_factory=Counter)
    substituted_bytes: int = 0
    compared_bytes: int = 0
    signals_delivered: int = 0
    #: Asynchronous signals (recorded between syscalls) delivered at the previous call's return.
    signals_early: int = 0
    reordered: int = 0
    soft_extra: int = 0
    redacted_bytes: int = 0
    soft_skipped: int = 0
    notifications: int = 0
    #: Calls the kernel restarted inside replay (a signal during a native clone): not new events.
    restarts: int = 0
    #: What was not compared (each one line); non-empty makes a clean replay "incomplete".
    not_compared: list[str] = field(default_factory=list)
    #: Output bytes the trace does not hold (payloads cut at the capture's snaplen).
    uncompared_bytes: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    exit_status: int | None = None
    recorded_exit_status: int | None = None
    recorded_duration_s: float | None = None
    verdict: str = "running"
    notes: list[str] = field(default_factory=list)
    #: Recorded calls replay would not run or fake, each {"syscall", "tid", "index", "reason"}:
    #: unsupported syscalls, sizes or fd numbers no genuine call can have (a corrupt or crafted trace).
    refused: list[dict[str, Any]] = field(default_factory=list)
    #: The one-line error that ended the replay (verdict "error"), else None.
    error: str | None = None

    def refuse(self, syscall: str, tid: int | None, index: int | None, reason: str) -> None:
        """Record a refused call (see ``refused``)."""
        self.refused.append({"syscall": syscall, "tid": tid, "index": index, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace, "verdict": self.verdict, "wall_s": round(self.wall_s, 6),
            "recorded_duration_s": self.recorded_duration_s,
            "events_total": self.events_total, "events_replayed": self.events_replayed,
            "notifications": self.notifications,
            "syscalls": dict(sorted(self.syscalls.items())),
            "substituted_bytes": self.substituted_bytes, "compared_bytes": self.compared_bytes,
            "signals_delivered": self.signals_delivered,
            "signals_delivered_early": self.signals_early, "reordered": self.reordered,
            "kernel_restarts": self.restarts,
            "not_compared": list(self.not_compared), "uncompared_bytes": self.uncompared_bytes,
            "redacted_bytes_masked": self.redacted_bytes,
            "time_reads_extra": self.soft_extra, "time_reads_skipped": self.soft_skipped,
            "exit_status": self.exit_status, "recorded_exit_status": self.recorded_exit_status,
            "divergences": [d.to_dict() for d in self.divergences], "notes": self.notes,
            "error": self.error, "refused": list(self.refused),
        }
