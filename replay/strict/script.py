"""The recorded run as strict replay reads it: notified events in global order,
each thread's queue of positions, and where signals were delivered."""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from dr import schema
from dr.errors import ReplayError
from dr.replay.strict.core import PASSTHROUGH, SENDERS, SYNC_FAULTS

__all__ = ["Script", "load_script"]


@dataclass(slots=True)
class Script:
    """The recorded run, ready to replay: events in global order, indexes per tid."""

    meta: dict
    summary: dict | None
    truncated: bool
    events: list[Any]                   # notified Events in trace order
    all_events: list[Any]               # every Event (for history), trace order
    pos_in_all: list[int]               # events[i] is all_events[pos_in_all[i]]
    per_tid: dict[int, deque]           # recorded tid -> deque of positions in events
    signals: dict[int, list[int]]       # position -> signals to deliver before answering
    tids: set[int]
    redacted: dict[tuple[int, int, int], list[tuple[int, int]]] = field(default_factory=dict)
    losses: dict[str, int] = field(default_factory=dict)
    tgid_of: dict[int, int] = field(default_factory=dict)        # recorded tid -> tgid
    sigchld: dict[int, list[int]] = field(default_factory=dict)  # recorded tgid -> positions
    sync_faults: int = 0          # fault signals left to the program's own execution


def load_script(path: str) -> Script:
    """Read a trace into a :class:`Script`. Raises TraceError for a bad trace,
    ReplayError for one strict replay cannot use (attach mode, empty)."""
    from dr.formats.trace import Event, ProcEvent, TraceReader
    sig_kind = schema.PROC_EVENTS["SIGNAL"]
    with TraceReader(path) as r:
        meta = r.meta if isinstance(r.meta, dict) else {}
        if meta.get("mode") not in (None, "spawn"):
            raise ReplayError(f"{path} was captured in {meta.get('mode')} mode; strict replay needs a "
                              "spawn-mode trace (dr capture -- CMD)")
        events, all_events, pos_in_all = [], [], []
        per_tid: dict[int, deque] = {}
        signals: dict[int, list[int]] = {}
        last_pos: dict[int, int] = {}
        redacted: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
        delivered: list[tuple[int, int]] = []
        sent: set[int] = set()   # signal numbers some recorded call sent
        for rec in r.stream():
            if isinstance(rec, Event):
                all_events.append(rec)
                if rec.nr in SENDERS and rec.ret == 0:
                    sent.add(int(rec.args[SENDERS[rec.nr]]) & 0xFFFFFFFF)
                if rec.nr in PASSTHROUGH:
                    continue
                pos = len(events)
                events.append(rec)
                pos_in_all.append(len(all_events) - 1)
                per_tid.setdefault(rec.tid, deque()).append(pos)
                last_pos[rec.tid] = pos
            elif isinstance(rec, dict):
                if rec.get("t") == "redactions":
                    from dr.formats.redact import spans_by_slot
                    for k, v in spans_by_slot([rec]).items():
                        redacted.setdefault(k, []).extend(v)
            elif isinstance(rec, ProcEvent) and rec.what == sig_kind:
                p = last_pos.get(rec.tid)
                if p is not None and 0 < rec.arg0 < 65:
                    signals.setdefault(p, []).append(int(rec.arg0))
                    delivered.append((p, int(rec.arg0)))
        summary = r.summary if isinstance(r.summary, dict) else None
        truncated = bool(r.truncated)
        try:
            losses = {str(k): int(v) for k, v in dict(r.losses or {}).items() if v}
        except (TypeError, ValueError):
            losses = {}
    if not events:
        raise ReplayError(f"{path} holds no syscall events to replay")
    if (summary or {}).get("exit_status") != -signal.SIGKILL:
        # The kernel kills the other threads with SIGKILL when one calls exit_group
        # or execve, and capture records that delivery; replay's own exit_group does
        # the same. Sent at the thread's last event it would end the run early.
        # Only a process that died of SIGKILL (kill -9 at capture) gets it replayed.
        for p in [p for p, sigs in signals.items() if signal.SIGKILL in sigs]:
            sigs = [sg for sg in signals[p] if sg != signal.SIGKILL]
            if sigs:
                signals[p] = sigs
            else:
                del signals[p]
    # A fault signal (SIGSEGV, SIGBUS, ...) no recorded call sent came from the
    # program's own execution: replay runs that code natively and the kernel raises
    # it again at the same instruction; sent again by the supervisor it would arrive
    # at the wrong moment (before the handler is installed, or twice).
    sync_faults = 0
    for p, sg in delivered:
        if sg in SYNC_FAULTS and sg not in sent and sg in signals.get(p, ()):
            signals[p].remove(sg)
            sync_faults += 1
            if not signals[p]:
                del signals[p]
    tgid_of = {ev.tid: ev.tgid or ev.tid for ev in events}
    sigchld: dict[int, list[int]] = {}
    for p, sigs in signals.items():
        if signal.SIGCHLD in sigs:
            sigchld.setdefault(tgid_of.get(events[p].tid, events[p].tid), []).append(p)
    return Script(meta, summary, truncated, events, all_events, pos_in_all, per_tid, signals,
                  set(per_tid), redacted, losses, tgid_of, sigchld, sync_faults)
