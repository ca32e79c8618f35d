"""Whether strict replay's "no progress" is a stall or a thread computing as it did at capture.

The supervisor stops a replay that makes no progress for --stall-timeout seconds.
A thread that runs user code for a long time between two calls (a checksum, a
spin, chew_cpu's billion iterations) makes none either, yet it is doing what the
recording shows: the recorded gap between its previous call's exit and the
awaited call's entry says how long it computed at capture. While the awaited
thread's CPU time grows, replay waits up to SLACK times that gap (plus the
timeout, for a slower or busier machine); a thread that sleeps, or computes much
longer than recorded, is still a stall, so every wait stays bounded.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

__all__ = ["Computing"]

SLACK = 3.0


def cpu_ticks(tid: int) -> int | None:
    """utime + stime of task ``tid`` (clock ticks; /proc/TID/stat fields 14 and 15), None if gone."""
    try:
        with open(f"/proc/{tid}/stat", "rb") as f:
            raw = f.read()
        fields = raw[raw.rindex(b")") + 2:].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


class Computing:
    """Tracks the awaited thread's CPU time across the supervisor's stall checks."""

    def __init__(self) -> None:
        self.key: tuple[int, int] | None = None   # (awaited position, host tid)
        self.ticks: int | None = None
        self.since = 0.0                          # the last real progress when the wait began
        self.fake = -1.0                          # the last_progress value this module set

    def still_working(self, s: ReplaySession, pos: int, ev: Any) -> bool:
        """True (and the next check pushed a second away) when the thread replay waits for at
        ``pos`` is using CPU and has not yet computed SLACK times longer than it did at capture."""
        th = next((t for t in s.threads.values() if t.tid == ev.tid and not t.dead), None)
        if th is None or th.last is None or not 0 <= th.last < len(s.script.events):
            return False
        now = time.monotonic()
        key = (pos, th.host_tid)
        if key != self.key or s.last_progress != self.fake:
            self.key, self.ticks, self.since = key, None, s.last_progress   # a new wait
        ticks = cpu_ticks(th.host_tid)
        grew = ticks is not None and self.ticks is not None and ticks > self.ticks
        first = self.ticks is None and ticks is not None
        self.ticks = ticks
        gap = max(0, ev.ts_enter - s.script.events[th.last].ts_exit) / 1e9
        if not (grew or first) or now - self.since > SLACK * gap + s.opts.stall_timeout:
            return False
        # checked again in a second; no real progress meanwhile keeps ``since``
        self.fake = s.last_progress = now - s.opts.stall_timeout + 1.0
        return True
