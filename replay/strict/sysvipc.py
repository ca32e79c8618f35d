"""SysV IPC ids as recorded: msgget, shmget and semget run natively in the sandbox's
own IPC namespace (so messages, shared memory and semaphores behave as the kernel's),
but a fresh namespace numbers its first object 0 where the recording's host, with
history, gave another id -- which the program prints, passes on and compares. Before
the call runs, the namespace's {msg,shm,sem}_next_id (a checkpoint/restore sysctl,
ipc namespace-wide) is set to the recorded id, so the kernel hands out that very one.
A recorded failure is answered as recorded (the object was not made then either)."""

from __future__ import annotations

import ctypes
import os
import threading
from typing import TYPE_CHECKING, Any

from dr.replay.notify import Notif
from dr.replay.strict.core import Thread
from dr.replay.strict.handlers import handles
from dr.replay.strict.substitute import compare_inputs
from dr.replay.strict.core import SC

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

_SYSCTL = {"msgget": "msg_next_id", "shmget": "shm_next_id", "semget": "sem_next_id"}
#: Largest id a next_id can name (INT_MAX; the kernel refuses more).
CLONE_NEWIPC = 0x08000000
_MAX_ID = (1 << 31) - 1
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()   # setns moves this thread only; one move at a time


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWIPC) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def set_next_id(host_tid: int, sysctl: str, value: int) -> bool:
    """Write ``value`` to /proc/sys/kernel/``sysctl`` of the IPC namespace of ``host_tid``.
    The sysctl belongs to the writer's namespace, so this thread joins the tracee's for
    the write and returns to its own. False when that could not be done."""
    with _lock:
        try:
            own = os.open("/proc/thread-self/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            target = os.open(f"/proc/{host_tid}/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(own)
            return False
        try:
            _setns(target)
            try:
                with open(f"/proc/sys/kernel/{sysctl}", "w") as f:
                    f.write(str(value))
                return True
            finally:
                _setns(own)
        except OSError:
            return False
        finally:
            os.close(target)
            os.close(own)


@handles("msgget", "shmget", "semget")
def ipc_get(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC[ev.nr]
    compare_inputs(s, n, th, ev, sc)
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    if ev.ret > _MAX_ID:
        s.refuse(ev, th.tid, "absurd IPC id", f"returns an absurd IPC id {ev.ret}")
    # An existing key (no IPC_CREAT|IPC_EXCL) is found again without a new id; the
    # sysctl is consumed only by a creation, so setting it is harmless then.
    set_next_id(th.host_tid, _SYSCTL[sc.name], ev.ret)
    return s.cont(n, th, pos)
