"""Watching the replayed program: its listening sockets and whether anything is at work.

dr never ends a wait because the program is slow, only because it is quiet (see
:class:`Activity`): every thread of the program, of the seccomp supervisor and of
dr's helpers asleep. The limits below are the only waits of a streams replay.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from dr.replay.connections import Addr
from dr.replay.strict.procfs import ended

__all__ = ["WAIT_S", "QUIET_S", "QUIET_MIN_S", "PATIENCE_S", "Activity", "listening", "listen_matches", "ended",
           "task_states"]

#: Longest wait for connect(2) to the replayed program.
WAIT_S = 5.0
#: How long a connection that owes responses may stay quiet — no bytes on it while
#: the program and dr's helpers are idle (see :class:`_Activity`) — before dr
#: stops waiting for it. Idle time only: a program slowed by CPU load is not quiet.
QUIET_S = 2.0
#: The least a connection may stay quiet before dr stops waiting for a response
#: the recorded program gave quickly (see StreamsSession._quiet_ns).
QUIET_MIN_S = 0.5
#: Longest wait for owed responses while the program keeps working (a program
#: that spins without answering ends each wait here).
PATIENCE_S = 60.0


def listening(pid: int) -> set[tuple[str, int]]:
    """(host, port) of every TCP socket in LISTEN state in ``pid``'s network namespace."""
    out: set[tuple[str, int]] = set()
    for name, fam in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 4 or parts[3] != "0A":
                        continue
                    hexaddr, hexport = parts[1].split(":")
                    raw = bytes.fromhex(hexaddr)
                    # /proc/net/tcp prints each 32-bit word in host (little endian) order.
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                    out.add((socket.inet_ntop(fam, raw), int(hexport, 16)))
        except OSError:
            continue
    return out


def listen_matches(rec: Addr, live: set[tuple[str, int]]) -> bool:
    for host, port in live:
        if port != rec.port:
            continue
        if host in ("0.0.0.0", "::") or rec.is_wildcard or host == rec.host:
            return True
        if host.startswith("::ffff:") and host[7:] == rec.host:
            return True
    return False



def task_states(pid: int) -> list[str]:
    """The scheduler state letter (proc(5), /proc/PID/task/TID/stat field 3) of every
    thread of ``pid`` and of its descendants; [] once it is gone."""
    out: list[str] = []
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/stat", "rb") as f:
                    st = f.read()
                out.append(chr(st[st.rindex(b")") + 2]))
                with open(f"/proc/{p}/task/{tid}/children", "rb") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError, IndexError):
                continue
    return out


class Activity:
    """Is the replay still making progress? For telling "slow" from "not answering".

    Busy when a thread of the replayed program (and its descendants) or one of
    dr's own helper threads (the seccomp supervisor, the stand-ins for the
    dependencies, the connection readers) is running or runnable (state R) or in
    uninterruptible sleep (D). A response in progress always has one such thread:
    the handler computing it, waiting for CPU, or waiting on dr (whose helper is
    then runnable). Idle — every thread asleep — is when waiting for a response
    may end after QUIET_S; on a loaded machine the wall time it takes does not
    matter. ``last_busy_ns``: CLOCK_MONOTONIC of the last busy sample.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.last_busy_ns = time.monotonic_ns()
        self._sampled_ns = 0

    def sample(self, every_ns: int = 10_000_000) -> int:
        """Look again (at most every ``every_ns``); ns the replay has been idle."""
        now = time.monotonic_ns()
        if now - self._sampled_ns >= every_ns:
            self._sampled_ns = now
            if self._busy():
                self.last_busy_ns = time.monotonic_ns()
        return max(0, time.monotonic_ns() - self.last_busy_ns)

    def _busy(self) -> bool:
        me = threading.get_native_id()
        for tid in os.listdir("/proc/self/task"):
            if int(tid) == me:
                continue
            try:
                with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                    st = f.read()
            except OSError:
                continue
            if st[st.rindex(b")") + 2:st.rindex(b")") + 3] in (b"R", b"D"):
                return True
        return any(s in "RD" for s in task_states(self.pid)) if self.pid > 0 else False
