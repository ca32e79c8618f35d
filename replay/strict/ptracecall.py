"""Strict replay of ptrace(2): a replayed tracer's calls are answered from the recording.

A tracer and its tracee are both replayed processes. Each runs its own recorded
syscalls under the supervisor; the tracer's ptrace calls are not run (the
tracee is not ptraced in the sandbox), and what the kernel answered them --
return values, and the out-data PEEK*/GETREGS/GETFPREGS/GETREGSET/GETSIGINFO/
GETEVENTMSG/GETSIGMASK wrote (dr/schema/flagsets.PTRACE_BUFFERS, recorded by
capture) -- is written back. The tracee's stops, as the tracer sees them
through wait4/waitid, come from the recording too. Why not run ptrace natively
between the two replayed processes: the tracee's execution under a tracer
depends on what the tracer changes (POKEDATA, SETREGS, a breakpoint, a signal
it suppresses), and in replay the tracee's syscalls are answered from the
trace while the supervisor itself holds it with seccomp notifications and, for
asynchronous signals, its own PTRACE_SEIZE (replay/strict/asyncsig.py): a
native tracer would see stops the recording never had. A tracer that changes
its tracee's execution (SETREGS of another rip, POKETEXT of code the tracee
then runs, SYSEMU, single-step) replays faithfully as far as the tracee's own
recorded syscalls match what it does untraced; where they do not, replay
diverges with a report naming the call.

This module writes back the out-data of a request whose buffer is one struct
iovec (PTRACE_GETREGSET, direction "iov" in flagsets): the recorded bytes at
the tracee's iov_base and their count in its iov_len, as the kernel does.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from dr.replay import notify
from dr.replay.strict.memio import too_long

if TYPE_CHECKING:
    from dr.replay.notify import Notif
    from dr.replay.strict.session import ReplaySession, Thread


def plan_iovec(s: ReplaySession, n: Notif, th: Thread, ev: Any, arg: Any, ba: int, cap: int,
               plan: list[tuple[int, bytes]]) -> None:
    """Plan the recorded bytes through the tracee's struct iovec, argument ``ba``."""
    rec = ev.payloads.get(ba)
    if rec is None:
        return
    iov_addr = n.args[ba]
    base, room = struct.unpack("<QQ", notify.read_mem(n.pid, iov_addr, 16))
    if len(rec.data) > min(room, cap):
        too_long(s, th, ev, arg, len(rec.data), min(room, cap))
    plan.append((base, rec.data))
    plan.append((iov_addr + 8, struct.pack("<Q", len(rec.data))))


__all__ = ["plan_iovec"]
