"""wait4/waitid that reap a child killed by a signal: answered once it is really dead.

A child killed by a signal (a fault, SIGKILL) makes no call at its end: nothing in the
replay's global order stands for its death, so the parent's wait was answered as soon as
its turn came, while the child still ran natively -- and the parent read, in memory they
share, what the child had not written yet. The recorded answer says the child was dead;
replay waits (bounded by the stall timeout) until the kernel says so too (a zombie, or
gone), then answers. A child that called exit/exit_group is ordered by that call.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Any

from dr import schema
from dr.replay.notify import Notif
from dr.replay.strict.core import Thread
from dr.replay.strict.handlers import handles, regular
from dr.replay.strict.procfs import child_by_nspid, ended

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

NR_WAIT4 = schema.by_name("wait4").nr
CLD_KILLED, CLD_DUMPED = 2, 3


@handles("wait4", "waitid")
def reap(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    pid = _killed_child(ev)
    if pid > 0:
        host = next((t.host_tgid for t in s.threads.values() if (t.rec_tgid or t.tid) == pid), None)
        if host is None:
            host = child_by_nspid(((t.host_tgid, t.host_tid) for t in s.threads.values() if not t.dead), pid)
        if host is not None:
            _await_death(host, s.opts.stall_timeout)
    return regular(s, n, th, ev, pos)


def _killed_child(ev: Any) -> int:
    """The recorded pid of the child this call reaped when a signal killed it, else 0."""
    if ev.nr == NR_WAIT4:
        st = ev.payload(1)
        if ev.ret > 0 and st is not None and len(st) >= 4:
            status = struct.unpack_from("<i", st)[0]
            if (status & 0x7F) not in (0, 0x7F):
                return int(ev.ret)
        return 0
    info = ev.payload(2)
    if ev.ret == 0 and info is not None and len(info) >= 20:
        code, pid = struct.unpack_from("<i", info, 8)[0], struct.unpack_from("<i", info, 16)[0]
        if code in (CLD_KILLED, CLD_DUMPED):
            return pid
    return 0


def _await_death(host: int, limit: float) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if ended(host):   # a zombie, or gone (reaped by the kernel)
            return
        time.sleep(0.0005)
