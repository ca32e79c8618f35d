"""Resource limits and CPU affinity a program sets on itself (setrlimit, prlimit64 and
sched_setaffinity on its own process).

The kernel enforces a limit where the program runs, not where its calls are answered: a
stack limit decides where a deep recursion faults, an RLIMIT_NOFILE which fds can open.
So a limit the recording shows set is set for real on the replayed process, from the
program's own arguments (compared with the recording first; the trace supplies no
value). Only what the program could do unprivileged is done: a limit that would raise a
hard limit above the process's current one (root did it at capture) is answered as
recorded and named in the report as not reproduced. The call's return value and
old_rlim are the recording's (regular answer).

CPU affinity likewise decides, where the program runs, which of its threads share a CPU:
two threads pinned to one CPU alternate at sched_yield (which runs natively), on two
CPUs they do not. The recorded mask is applied to the calling thread (or the thread it
names), limited to the CPUs the supervisor may use; a mask none of whose CPUs is here is
named in the report as not reproduced.
"""

from __future__ import annotations

import os
import resource
import struct
from typing import TYPE_CHECKING, Any

from dr import schema
from dr.replay import notify
from dr.replay.notify import Notif
from dr.replay.strict.core import Thread, s32
from dr.replay.strict.handlers import handles, regular

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

RLIM = struct.Struct("<QQ")
RLIM_INFINITY = 0xFFFFFFFFFFFFFFFF
NR_PRLIMIT64 = schema.by_name("prlimit64").nr
CPU_MASK_MAX = 1024   # bytes of a mask read (8192 CPUs)


@handles("setrlimit", "prlimit64")
def set_limit(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    prl = ev.nr == NR_PRLIMIT64
    res_arg, new_arg = (1, 2) if prl else (0, 1)
    own = not prl or s32(n.args[0]) in (0, th.rec_tgid or th.tid)
    rec = ev.payload(new_arg)
    if ev.ret == 0 and own and n.args[new_arg] and rec is not None and len(rec) == RLIM.size \
            and not (ev.args[res_arg] ^ n.args[res_arg]) & 0xFFFFFFFF:
        # The new limits as the program passes them; set only when they are the
        # recorded ones (else the regular answer below reports the divergence).
        new = notify.read_mem(n.pid, n.args[new_arg], RLIM.size)
        if new == rec:
            _apply(s, n, th, n.args[res_arg] & 0xFFFFFFFF, *RLIM.unpack(new))
    return regular(s, n, th, ev, pos)


def _apply(s: ReplaySession, n: Notif, th: Thread, which: int, soft: int, hard: int) -> None:
    who = th.rec_tgid or th.tid
    try:
        cur_hard = resource.prlimit(th.host_tgid, which)[1]
    except (OSError, ValueError):
        return  # an unknown resource: the kernel refused it at capture too, or will say so
    cur_hard = RLIM_INFINITY if cur_hard == resource.RLIM_INFINITY else cur_hard
    if hard > cur_hard or soft > hard:
        s.report.notes.append(f"resource limit {which} of process {who} raises a hard limit "
                              "(privileged at capture): not set, the program runs under the sandbox's")
        return
    s.gone_check(n)
    try:
        resource.prlimit(th.host_tgid, which, (_py(soft), _py(hard)))
    except (OSError, ValueError) as e:
        s.report.notes.append(f"resource limit {which} of process {who} not set as recorded ({e}): "
                              "the program runs under the sandbox's")


def _py(v: int) -> int:
    return resource.RLIM_INFINITY if v == RLIM_INFINITY else v


@handles("sched_setaffinity")
def set_affinity(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    target = s32(n.args[0])
    host = n.pid if target in (0, th.tid) else next(
        (t.host_tid for t in s.threads.values() if t.tid == target and not t.dead), None)
    rec = ev.payload(2)
    if ev.ret == 0 and host is not None and rec is not None and n.args[2] \
            and target == s32(ev.args[0]) and (n.args[1] & 0xFFFFFFFF) == (ev.args[1] & 0xFFFFFFFF):
        mask = notify.read_mem(n.pid, n.args[2], min(len(rec), CPU_MASK_MAX))
        if mask == rec[:len(mask)]:   # else the regular answer below reports the divergence
            want = {i for i in range(len(mask) * 8) if mask[i // 8] >> (i % 8) & 1}
            cpus = want & os.sched_getaffinity(0)
            try:
                if not cpus:
                    raise OSError("none of its CPUs is here")
                s.gone_check(n)
                os.sched_setaffinity(host, cpus)
            except OSError as e:
                s.report.notes.append(f"CPU affinity of thread {target or th.tid} not set as recorded "
                                      f"({e}): its threads may share CPUs otherwise than recorded")
    return regular(s, n, th, ev, pos)
