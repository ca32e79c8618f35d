"""Shared vocabulary of strict replay: results, options, threads, the syscall
sets it reads off the schema's behaviour, and the exceptions steps raise."""

from __future__ import annotations

import enum
import signal
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import BinaryIO

from dr import schema
from dr.replay.divergence import Divergence
from dr.schema import Beh, Class, FdEffect, Kind, Order
from dr.schema import s32, s64  # noqa: F401  (re-exported: the handlers import them from here)

NR = {s.name: s.nr for s in schema.all_syscalls()}
SC = {s.nr: s for s in schema.all_syscalls()}
PASSTHROUGH = frozenset(s.nr for s in schema.all_syscalls() if s.cls == Class.PASSTHROUGH)
UNSUPPORTED_NRS = frozenset(s.nr for s in schema.all_syscalls() if s.cls == Class.UNSUPPORTED)

#: Run natively; ordered only within their own thread (clone, fork, execve).
LIFECYCLE = schema.with_order(Order.LIFECYCLE)
CLONES = frozenset(nr for nr in LIFECYCLE if SC[nr].fd_effect != FdEffect.EXEC)
EXITS = schema.with_order(Order.EXIT)
NR_EXIT = NR["exit"]
NR_EXIT_GROUP = NR["exit_group"]
NR_EXECVE = NR["execve"]
NR_RESTART_SYSCALL = NR["restart_syscall"]
#: -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK (include/linux/errno.h):
#: never seen by a program; the kernel restarts the call or turns them into -EINTR.
RESTARTS = frozenset({-512, -513, -514, -516})
#: Time reads whose number depends on native scheduling (CPython's GIL wait loops
#: on a futex with a timeout, and reads the clock once per round): an extra one is
#: answered with the thread's previous recorded value, a missing one is skipped.
SOFT = schema.with_order(Order.TIME)
#: TIME calls whose value depends on a clock-id argument: nr -> its index. Soft
#: matching tells a CLOCK_MONOTONIC read (a GIL wait's deadline) from a
#: CLOCK_REALTIME one (the program's time.time()).
_CLOCK_ARG = {nr: next(i for i, a in enumerate(SC[nr].args) if a.ctype == "clock")
              for nr in SOFT if any(a.ctype == "clock" for a in SC[nr].args)}


def soft_key(nr: int, args: tuple | list) -> int | tuple[int, int]:
    """What makes two time reads interchangeable: the syscall, and its clock id if it has one."""
    i = _CLOCK_ARG.get(nr)
    return nr if i is None else (nr, args[i] & 0xFFFFFFFF)

#: Calls held only to their own thread's order: a thread may make them while holding
#: a lock another thread needs (CPython's GIL wait computes its deadline under the GIL
#: mutex), so ordering them globally would deadlock where the recording did not.
OWN_ORDER = schema.with_order(Order.THREAD, Order.TIME, Order.LIFECYCLE)
#: Calls whose result only their own thread sees (ids, randomness, sleeps, time reads).
THREAD_LOCAL = schema.with_order(Order.THREAD, Order.TIME)
#: Passthrough calls a thread sleeps in natively (futex waits, sigsuspend).
NATIVE_BLOCKING = schema.with_order(Order.WAIT)
#: fd calls that run natively on a file the run created itself (see handlers.open).
NATIVE_ON_OWNED = schema.with_flag(Beh.FILE_IO)
#: Calls whose success value is a new fd.
CREATES_FD = schema.with_fd_effect(FdEffect.NEW)
NO_EXIT = schema.EVENT_FLAGS["NO_EXIT"]
#: Signals the CPU raises on the program's own instructions (a fault, int3, ud2).
# SIGSYS is a seccomp filter's SECCOMP_RET_TRAP: the program's own filters are installed
# natively in replay (handlers.seccomp_), so the kernel raises it again at the same call.
SYNC_FAULTS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGTRAP,
                         signal.SIGSYS})
#: Calls sending a signal (schema Order.SIGNAL): nr -> index of the signal argument.
SENDERS = {nr: next((i for i, a in enumerate(SC[nr].args) if a.kind == Kind.SIGNAL), 1)
           for nr in schema.with_order(Order.SIGNAL)}
#: Senders whose siginfo follows the signal argument (the receiver's handler sees it).
QUEUEINFO = frozenset({NR["rt_sigqueueinfo"], NR["rt_tgsigqueueinfo"]})
#: Signals never delivered by replay (job control would stop the tracee for good).
NO_DELIVER = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
MAX_INPUT = 64 << 20          # most bytes read from a tracee input buffer
O_TMPFILE = 0o20200000
IOV_MAX = 1024                # UIO_MAXIOV
SOCKADDR_MAX = 128            # sizeof(struct sockaddr_storage)
AT_FDCWD = -100
#: The legacy vsyscall page's page number (0xffffffffff600000 >> 12, x86_64's fixed
#: VSYSCALL_ADDR): a notification from there is a call the kernel emulates (matching._vsyscall).
VSYSCALL_PAGE = 0xffffffffff600000 >> 12
I32PAIR = struct.Struct("<ii")

VDSO_NAMES = {"clock_gettime": "__vdso_clock_gettime", "gettimeofday": "__vdso_gettimeofday",
              "time": "__vdso_time", "getcpu": "__vdso_getcpu", "clock_getres": "__vdso_clock_getres"}


class Status(enum.Enum):
    """What a step found."""

    CONTINUE = "continue"
    EXITED = "exited"       # the tracee ended; faithful unless divergences were recorded
    DIVERGED = "diverged"   # stopped at a divergence
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class StepResult:
    status: Status
    message: str = ""
    divergence: Divergence | None = None


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to replay.

    ``rootfs`` the sandbox root; ``command`` replaces the recorded argv;
    ``show_output`` copies the tracee's writes to fds 1 and 2 to ``stdout``/
    ``stderr``; ``keep_going`` records payload/argument divergences and goes
    on; ``stall_timeout`` seconds without progress before the replay is
    declared stuck; ``memory_limit`` the sandbox's memory bound
    (:attr:`dr.replay.sandbox.SandboxSpec.memory_limit`: 0 default, None none).
    """

    rootfs: str = "/"
    command: tuple[str, ...] | None = None
    show_output: bool = False
    keep_going: bool = False
    stall_timeout: float = 10.0
    reorder_after: float = 0.25
    stdout: BinaryIO | None = None
    stderr: BinaryIO | None = None
    memory_limit: int | None = 0


@dataclass(slots=True)
class Thread:
    host_tid: int
    host_tgid: int
    tid: int                      # recorded tid
    queue: deque
    last: int = -1                # position of the thread's last replayed event (reports)
    last_soft: dict = field(default_factory=dict)
    dead: bool = False
    rec_tgid: int = 0
    #: The last clone this thread ran natively: (nr, args, ip, recorded child tid). The
    #: kernel restarts a clone a signal interrupted (ERESTARTNOINTR) with a second
    #: notification of the same call, which is not a new event.
    native_clone: tuple | None = None
    #: The call whose recorded restart_syscall is the thread's next event (see session._skip_restarts).
    restart_of: int = -1
    #: Set when an asynchronous signal was delivered to this thread earlier than recorded (answer.early_signal).
    early_signal: str = ""
    #: Minus the host tid of a thread that unshared its fd table (unshare CLONE_FILES); 0: it
    #: shares its process's (the console map is per fd table: ``fdt`` names it).
    own_fdt: int = 0

    @property
    def fdt(self) -> int:
        return self.own_fdt or self.host_tgid



class Gone(Exception):
    """The notification vanished (tracee interrupted or dead): do not advance."""


class Stop(Exception):
    """End the replay with ``result`` (a divergence, an error, the end of a cut-short trace)."""

    def __init__(self, result: StepResult) -> None:
        super().__init__(result.message)
        self.result = result


class GoneNotif(Exception):
    """The task behind a notification is gone before it could be identified."""


CONTINUE = StepResult(Status.CONTINUE)
