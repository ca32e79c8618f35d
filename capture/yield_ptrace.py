"""Spawn mode steps aside when the program wants to ptrace (issue 12).

The spawn tracer (:mod:`capture.spawn`) ptraces the whole tree to prepare each
new image, and a task has one tracer: a program's own ``PTRACE_TRACEME``, or
its ``PTRACE_ATTACH``/``PTRACE_SEIZE`` of a task of the tree, would get EPERM.
So the tracer lets go of exactly the task the program wants to trace, at the
moment it asks:

- Before its execve the command's process installs a seccomp filter (inherited
  by every descendant) that returns ``SECCOMP_RET_TRACE`` with :data:`FILTER_DATA`
  for ``ptrace`` whose request is TRACEME, ATTACH or SEIZE (the request is
  checked in the filter, all 64 bits), and allows every other call. The tracer
  sets ``PTRACE_O_TRACESECCOMP``, so such a call stops the caller at syscall
  entry (before the probes' sys_enter: the call is recorded once).
- At that stop (:func:`seccomp_stop`) the tracer detaches the task to be
  traced: the caller itself for TRACEME; for ATTACH/SEIZE the target, seen
  through the caller's pid namespace, stopped with ``PTRACE_INTERRUPT`` (its
  pending stop -- an exec, a fork, a signal -- handled as the tracer would
  have, the signal delivered by the detach) and detached at that stop, a
  job-control stop left stopped. Then it continues the caller: the kernel
  runs the filter again, which now allows the call (``__seccomp_filter``:
  ``recheck_after_trace``), and the call proceeds natively with its real
  result (EPERM where the kernel would refuse it anyway).
- A program's own filter that returns ``SECCOMP_RET_TRACE`` also stops its
  task at the tracer now; untraced, the kernel would fail that call with
  ENOSYS without running it, so the tracer does exactly that (syscall number
  -1, return value -ENOSYS). The most recently installed filter's data wins
  among equal actions, so a program filter that traces ptrace itself is
  recognised too.

Why not another mechanism: a ``SECCOMP_RET_USER_NOTIF`` filter needs no
ptrace option but takes the tree's one notification listener (a program's own
listener filter would then fail with EBUSY); ``SECCOMP_RET_TRAP`` skips the
call, which would then have to be re-issued. PTRACE_O_TRACESECCOMP needs
nothing the tracer does not have already.

What the traced program observes: ``Seccomp: 2`` and one more
``Seccomp_filters`` in /proc/PID/status; ``prctl(PR_GET_SECCOMP)`` returns 2 where
it would return 0 (rr's seccomp_null asserts 0 and fails under capture). The
tracer cannot hide that: a call it skips with the native answer is skipped before
the syscall-entry tracepoint and would be missing from the trace, and a result
changed at syscall exit comes after the exit tracepoint recorded the real one;
either way replay would disagree with what the program saw. Entering strict mode
(SECCOMP_MODE_STRICT) fails with EINVAL, as for any task with a filter;
the filter is installed with ``SECCOMP_FILTER_FLAG_SPEC_ALLOW`` so that, unlike
a plain seccomp filter, it does not turn on the speculative-store-bypass
mitigation (a slowdown, and a ``Speculation_Store_Bypass`` line, that the
program would not have natively). A task that called TRACEME, or that a
program attached to, is no longer followed by dr: images it execs later are
not prepared (counted in ``released``, as tasks let go at a job-control stop).
One difference remains: a task that carries the filter but that dr no longer
ptraces (let go at a job-control stop, a CLONE_UNTRACED child, a process that
outlives the capture's follow, a task the program itself traces) and then calls
ptrace TRACEME/ATTACH/SEIZE gets ENOSYS instead of its native result, since the
kernel fails a traced call that no tracer with PTRACE_O_TRACESECCOMP receives; the
call, skipped before the syscall-entry tracepoint, is missing from the trace too
(rr's ptrace_traceme, whose tracee asserts that a second TRACEME fails, then
diverges at replay). A user-notification filter would not have this gap while dr
runs, but see above for why it is not used. replay installs its own filter and answers ptrace from the
recording, so the capture's filter is not part of a replay.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dr.capture.spawn import SpawnTree

PTRACE_TRACEME, PTRACE_ATTACH, PTRACE_SEIZE = 0, 16, 0x4206
PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_CONT, PTRACE_DETACH = 12, 13, 7, 17
PTRACE_GETEVENTMSG, PTRACE_INTERRUPT = 0x4201, 0x4207
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE, PTRACE_EVENT_EXEC = 1, 2, 3, 4
PTRACE_EVENT_SECCOMP = 7
NR_PTRACE = 101
AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_ALLOW, SECCOMP_RET_TRACE = 0x7FFF0000, 0x7FF00000
#: SECCOMP_RET_DATA of dr's filter: tells its stops from those of a program's own filter.
FILTER_DATA = 0x0D12
#: How long the tracer waits for the task to be traced to stop once interrupted.
INTERRUPT_TIMEOUT = 2.0
WALL = 0x40000000

_NR_SECCOMP = 317
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2

# struct user_regs_struct (arch/x86/include/asm/user_64.h): word indexes of the fields used
_RAX, _RDI, _RSI, _ORIG_RAX = 10, 14, 13, 15


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06


def _program() -> list[tuple[int, int, int, int]]:
    """The filter: (code, jt, jf, k) rows, jumps relative to the next row; offsets are
    struct seccomp_data's (nr 0, arch 4, args[0] 16, its high half 20 on x86_64)."""
    return [
        (_LD_W_ABS, 0, 0, 4),                    # 0: arch
        (_JEQ_K, 0, 9, AUDIT_ARCH_X86_64),       # 1: else allow (11)
        (_LD_W_ABS, 0, 0, 0),                    # 2: nr (an x32 number has bit 30: allowed)
        (_JEQ_K, 0, 7, NR_PTRACE),               # 3: else allow
        (_LD_W_ABS, 0, 0, 20),                   # 4: request, high half
        (_JEQ_K, 0, 5, 0),                       # 5: else allow
        (_LD_W_ABS, 0, 0, 16),                   # 6: request, low half
        (_JEQ_K, 2, 0, PTRACE_TRACEME),          # 7: trace (10)
        (_JEQ_K, 1, 0, PTRACE_ATTACH),           # 8: trace
        (_JEQ_K, 0, 1, PTRACE_SEIZE),            # 9: trace, else allow
        (_RET_K, 0, 0, SECCOMP_RET_TRACE | FILTER_DATA),   # 10
        (_RET_K, 0, 0, SECCOMP_RET_ALLOW),       # 11
    ]


class Filter:
    """dr's filter, built before the fork so that the child only makes system calls."""

    def __init__(self) -> None:
        rows = _program()
        self._rows = (_SockFilter * len(rows))(*[_SockFilter(*r) for r in rows])
        self.prog = _SockFprog(len(rows), ctypes.cast(self._rows, ctypes.POINTER(_SockFilter)))
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def install(self) -> bool:
        """Install it in the calling process (the command's, before its execve). Root's
        CAP_SYS_ADMIN makes no_new_privs unnecessary (it would break setuid programs)."""
        libc, ref = self._libc, ctypes.byref(self.prog)
        if libc.syscall(ctypes.c_long(_NR_SECCOMP), ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
                        ctypes.c_long(_SECCOMP_FILTER_FLAG_SPEC_ALLOW), ref) == 0:
            return True
        return libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ref, 0, 0) == 0


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


def _ptrace(req: int, pid: int, addr: int = 0, data: int = 0) -> int:
    return _libc.ptrace(req, pid, ctypes.c_void_p(addr), ctypes.c_void_p(data))


def _regs(pid: int) -> ctypes.Array | None:
    regs = (ctypes.c_ulonglong * 27)()
    return regs if _ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(regs)) == 0 else None


def _event_msg(pid: int) -> int | None:
    msg = ctypes.c_ulong(0)
    return msg.value if _ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(msg)) == 0 else None


def _fail_enosys(pid: int) -> None:
    """Skip the stopped call with -ENOSYS: what the kernel does for a traced call no tracer takes."""
    regs = _regs(pid)
    if regs is None:
        return
    regs[_ORIG_RAX] = (1 << 64) - 1
    regs[_RAX] = (1 << 64) - errno.ENOSYS
    _ptrace(PTRACE_SETREGS, pid, 0, ctypes.addressof(regs))


def seccomp_stop(tree: SpawnTree, pid: int) -> None:
    """``pid`` stopped at a seccomp filter's SECCOMP_RET_TRACE (module doc): let go of the
    task it wants to trace, then let its call proceed; or fail a program filter's call."""
    if _event_msg(pid) != FILTER_DATA:
        _fail_enosys(pid)
        tree.resume(pid)
        return
    regs = _regs(pid)
    if regs is None:   # gone (killed meanwhile)
        return
    request, vpid = regs[_RDI], ctypes.c_int(regs[_RSI] & 0xFFFFFFFF).value
    if request == PTRACE_TRACEME:
        tree.let_go(pid)   # detached at this stop: the kernel re-runs the filter, the call proceeds
        return
    target = _global_tid(tree, pid, vpid)
    # Not only the tasks seen: a child whose first stop is not reaped yet is traced too
    # (PTRACE_INTERRUPT fails for a task dr does not trace, which is then left alone).
    if target is not None and _tgid(target) != _tgid(pid):
        let_go_running(tree, target)
    tree.resume(pid)


def let_go_running(tree: SpawnTree, tid: int) -> None:
    """Detach ``tid``, which runs or sleeps, at a stop of its own (module doc). Bounded:
    a task that does not stop within INTERRUPT_TIMEOUT stays traced (the caller then gets
    EPERM, as without this module)."""
    if tree.unhold(tid):
        tree.let_go(tid)
        return
    if _ptrace(PTRACE_INTERRUPT, tid) != 0:
        return
    deadline = time.monotonic() + INTERRUPT_TIMEOUT
    while True:
        try:
            got, status = os.waitpid(tid, os.WNOHANG | WALL)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if got == 0:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.0005)
            continue
        if not os.WIFSTOPPED(status):   # it ended meanwhile: the tracer's loop reaps it
            tree.defer(got, status)
            return
        _release_at(tree, tid, status)
        return


def _release_at(tree: SpawnTree, tid: int, status: int) -> None:
    """Detach ``tid`` at the stop it reported, having done what the tracer does there: an
    image prepared, a new task noted, a signal delivered (by the detach), a program
    filter's traced call failed; a job-control stop stays stopped."""
    event, inject = (status >> 16) & 0xFF, 0
    if event == PTRACE_EVENT_EXEC:
        tree.exec_stop(tid)
    elif event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
        child = _event_msg(tid)
        if child:
            tree.born(child, tid)
    elif event == PTRACE_EVENT_SECCOMP and _event_msg(tid) != FILTER_DATA:
        _fail_enosys(tid)
    elif event == 0:
        inject = os.WSTOPSIG(status)
    tree.let_go(tid, inject)


def status_fields(pid: int) -> dict[str, str]:
    """/proc/PID/status as name -> value ({} once the task is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def _tgid(tid: int) -> str:
    return status_fields(tid).get("Tgid", "").strip()


def _global_tid(tree: SpawnTree, caller: int, vpid: int) -> int | None:
    """The task of the tree (its tid in dr's pid namespace) that ``caller`` names ``vpid``
    in its own pid namespace (a program may run in a pid namespace of its own)."""
    if vpid <= 0:
        return None
    depth = len(status_fields(caller).get("NSpid", "").split())
    if depth <= 1:
        return vpid
    for task in tree.tasks():
        ns = status_fields(task).get("NSpid", "").split()
        if len(ns) >= depth and ns[depth - 1] == str(vpid):
            return task
    return None


__all__ = ["Filter", "seccomp_stop", "PTRACE_O_TRACESECCOMP", "PTRACE_EVENT_SECCOMP", "FILTER_DATA"]
