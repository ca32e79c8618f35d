"""The clock values the recorded service read, served again in recorded order.

Attach mode records what a service read through its vDSO with uprobes on its
own libc and Go runtime (``clock_read`` records, :mod:`dr.capture.clocks`). In
a streams replay the program's vDSO is rewritten to make those reads syscalls,
so the seccomp supervisor answers each ``clock_gettime``; :class:`RecordedClock`
gives it the recorded value when there is one, and the supervisor falls back to
its approximation (:mod:`dr.replay.streams_supervisor`: the re-driven step's
recorded time) when there is none.

**Which value: per connection, in the serving thread's order.** A replayed
process is a fresh one: its threads are not the recorded ones (other tids,
other scheduling), so a recorded tid cannot name the replayed thread that
should get a value. What both sides share is the connection a thread serves:
each recorded read is kept with the inbound connection its thread last read
or wrote (:meth:`dr.replay.connections_build._Builder.clock`, as getrandom
payloads are), and a replayed thread serving that re-driven connection gets
that connection's values, per clock id, in recorded order. A handler's reads
from its read of the request to its response are therefore matched one to
one. Reads a thread makes before it touched any re-driven connection (start-up,
an accept loop) get the approximation.

For Go this is the only identity there is: goroutines move between OS threads,
so a recorded tid says nothing about which goroutine read. A goroutine stays on
its thread from its read syscall through the handler (a syscall does not move
it), which is what the per-connection order relies on.

Go's ``time.now`` reads CLOCK_REALTIME and then CLOCK_MONOTONIC (one record
holds both): after a thread got a recorded Go REALTIME value, its next
CLOCK_MONOTONIC read gets the recorded one that went with it.

**CLOCK_REALTIME only.** The values a response carries are wall-clock times
(a timestamp, a Date, ``$msec``). Recorded reads of the other clocks (libc's
CLOCK_MONOTONIC, ...) are in the trace but replay leaves them to the
approximation: they drive the program's timers, and the approximation keeps
each thread's monotonic clock one steady timeline; recorded values given out
per connection would move it back and forth (nginx reads CLOCK_MONOTONIC on
every wake-up, and its ``$msec`` came out a millisecond late).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

__all__ = ["RecordedClock"]

_GO = "GO_TIME_NOW"
REALTIME = 0   # include/uapi/linux/time.h: CLOCK_REALTIME


class RecordedClock:
    """Recorded clock reads by connection, handed out in recorded order.

    ``by_conn``: connection id -> the ClockRead records of the thread serving it
    (:attr:`dr.replay.connections.Conversations.clock_by_conn`; reads that failed,
    ret != 0, are left out). ``served``: reads answered with a recorded value.
    """

    def __init__(self, by_conn: dict[int, list[Any]]) -> None:
        self._q: dict[tuple[int, int], deque] = {}
        for cid, reads in by_conn.items():
            for r in reads:
                if r.ret == 0 and r.clockid == REALTIME:
                    self._q.setdefault((cid, int(r.clockid)), deque()).append(
                        (r.sec * 10**9 + r.nsec, r.mono if r.kind == _GO and r.mono else None))
        self._mono: dict[int, int] = {}   # tid -> the MONOTONIC ns of its last Go time.now
        self._lock = threading.Lock()
        self.served = 0

    def __bool__(self) -> bool:
        return bool(self._q)

    def take(self, conn_id: int | None, tid: int, clockid: int) -> int | None:
        """The recorded value (ns of clock ``clockid``) for a read by thread ``tid``
        serving connection ``conn_id`` (None: none), or None when there is none."""
        with self._lock:
            mono = self._mono.pop(tid, None)
            if clockid == 1 and mono is not None:
                self.served += 1
                return mono
            if conn_id is None:
                return None
            q = self._q.get((conn_id, clockid))
            if not q:
                return None
            v, mono = q.popleft()
            if mono is not None:
                self._mono[tid] = mono
            self.served += 1
            return v
