"""ppoll and pselect6 on no fds with a signal mask: the program's sigsuspend.

The call swaps in its mask only while it waits: a signal the program blocks elsewhere (a
SIGCHLD it wants handled only there) is delivered inside the call and its handler runs
before the call returns -EINTR. Answered from the recording, the call never swaps the
mask, so the signal replay makes pending at that point stays blocked and the handler
never runs. When the recording shows the call interrupted and replay delivers the
signal there, a call that watches no fd runs natively: the kernel swaps the mask, the
pending signal interrupts it at once, the handler runs, and the program gets -EINTR as
recorded. A call with fds stays answered (natively it could report the replay's own fds
ready instead, an answer nothing would compare).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from dr import schema
from dr.replay.notify import Notif
from dr.replay.strict.core import SC, Thread
from dr.replay.strict.handlers import handles, regular
from dr.replay.strict.substitute import compare_inputs

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

ERESTARTNOHAND = 514
NR_PPOLL = schema.by_name("ppoll").nr


@handles("ppoll", "pselect6")
def masked_wait(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    a = n.args
    if ev.nr == NR_PPOLL:
        no_fds, mask = (a[1] & 0xFFFFFFFF) == 0, a[3]
    else:
        no_fds, mask = (a[0] & 0xFFFFFFFF) == 0 or not (a[1] or a[2] or a[3]), a[5]
    if (ev.ret in (-errno.EINTR, -ERESTARTNOHAND) and no_fds and mask
            and s.script.signals.get(pos)):
        compare_inputs(s, n, th, ev, SC[ev.nr])
        return s.cont(n, th, pos)   # delivers the recorded signals, then the call runs
    return regular(s, n, th, ev, pos)
