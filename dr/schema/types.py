"""Vocabulary of the syscall schema: argument kinds, size rules, classes.

These types are what :mod:`dr.schema.syscalls` declares with and what the
generator (:mod:`dr.schema.gen`) turns into the BPF header ``bpf/dr_schema.h``
and the Python tables ``dr/schema/_tables.py``. Integer values of the enums are
shared with C through the generated header: never renumber one, only append.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Class(enum.IntEnum):
    """How capture and replay treat a syscall.

    REGULAR      handled entirely from the table: payloads copied by the rules,
                 replay writes recorded out-buffers and returns the recorded value.
    IRREGULAR    strict replay has a handler of its own, registered under the
                 syscall's name (a test checks the two sets are equal); capture
                 treats it like REGULAR unless its probe names it.
    PASSTHROUGH  runs natively during replay (memory management, futex, ...).
    UNSUPPORTED  declared so messages can name it; replay answers ENOSYS or stops.
    """

    REGULAR = 0
    IRREGULAR = 1
    PASSTHROUGH = 2
    UNSUPPORTED = 3


class Kind(enum.IntEnum):
    """What an argument is, for decoding (``dr show``) and copying (capture).

    Pointer kinds that carry bytes name a :class:`Size` rule; a capture copies
    ``*_IN`` buffers from the tracee (at entry for strings, at exit otherwise)
    and ``*_OUT`` buffers the kernel filled (at exit, only when the call succeeded).
    """

    INT = 0          # signed integer, decimal
    UINT = 1         # unsigned integer, decimal
    HEX = 2          # unsigned integer, hex (addresses, masks)
    FD = 3           # file descriptor (int)
    FLAGS = 4        # bit flags, decoded with the named flag set
    ENUM = 5         # one value of a named set (lseek whence, socket domain, ...)
    PTR = 6          # opaque user pointer, never copied
    PATH = 7         # NUL-terminated path, copied at entry
    STR = 8          # NUL-terminated string, copied at entry
    BUF_IN = 9       # bytes the tracee hands the kernel (write, send)
    BUF_OUT = 10     # bytes the kernel hands the tracee (read, recv, stat, ...)
    IOV_IN = 11      # struct iovec[cnt] the tracee hands the kernel (writev)
    IOV_OUT = 12     # struct iovec[cnt] the kernel fills (readv)
    MSG_IN = 13      # struct msghdr * for sendmsg (name, iov data, control)
    MSG_OUT = 14     # struct msghdr * for recvmsg (name, iov data, control)
    SOCKADDR_IN = 15  # struct sockaddr * with its length in another argument
    SOCKADDR_OUT = 16  # struct sockaddr * with a socklen_t * value-result argument
    ARGV = 17        # NULL-terminated array of strings (execve argv/envp)
    SIGNAL = 18      # signal number
    MMSG_IN = 19     # struct mmsghdr[vlen] for sendmmsg
    MMSG_OUT = 20    # struct mmsghdr[vlen] for recvmmsg
    INOUT = 21       # value-result struct: copied at entry and at exit


class Rule(enum.IntEnum):
    """How the length of a buffer argument is found (shared with C)."""

    NONE = 0     # not a buffer
    CONST = 1    # a constant number of bytes (struct stat: 144)
    ARG = 2      # the value of another argument (write's count)
    RET = 3      # the syscall's return value (read's result)
    DEREF = 4    # the u32 another argument points to, read at exit (socklen_t *)
    CNT = 5      # iovec/mmsghdr arrays: another argument holds the element count
    NUL = 6      # NUL-terminated string, at most PATH_MAX bytes
    MIN_RET_ARG = 7  # min(return value, another argument)
    BITS = 8     # a bit set of as many bits as another argument says: (n + 63) / 64 * 8 bytes (fd_set)
    REQ = 9      # size and direction come with the request argument (ioctl, fcntl, prctl):
                 # flagsets.REQUEST_BUFFERS; ``size`` is the index of the request argument


class Sub(enum.IntEnum):
    """Part of an argument a payload record holds: ``slot = arg | sub << 4``."""

    DATA = 0     # the buffer itself (iovec arrays: the concatenated bytes)
    NAME = 1     # msghdr.msg_name (a sockaddr)
    CONTROL = 2  # msghdr.msg_control (ancillary data)
    HEADER = 3   # the msghdr / mmsghdr structure as the kernel left it
    ENTRY = 4    # INOUT kinds: the value the tracee passed in at entry
    MOVED = 5    # bytes a call moved between two fds (sendfile, splice, tee, copy_file_range),
                 # on the source fd's slot: read from the source file (dr.capture.moved)
    POINTED = 6  # the array the kernel wrote where the (in-)buffer points (flagsets.SOCKOPT_POINTED)
    MESSAGE = 7  # recvmmsg/sendmmsg: one message's iovec bytes (msg_len of them); the message's
                 # index in the mmsghdr array is in the slot's bits 8-15 (``message_slot``)


def message_slot(arg: int, m: int) -> int:
    """The payload slot of message ``m`` of an mmsghdr array at argument ``arg``."""
    return arg | Sub.MESSAGE << 4 | m << 8


class Order(enum.IntEnum):
    """How replay orders a syscall against other threads' calls (its observers).

    SHARED     threads or processes may observe it (fds, files, sockets): held to
               the recorded global order of all threads.
    THREAD     reads a value only its own thread observes (ids, randomness,
               sleeps answered at once): held to its own thread's order only, so a
               thread waiting on a lock another thread holds cannot deadlock replay.
    TIME       a THREAD time read whose count depends on native scheduling
               (CPython's GIL waits): matched softly (an extra one gets the
               thread's last recorded value, a missing one is skipped).
    LIFECYCLE  creates or replaces a task (clone, fork, execve): runs natively,
               held to its own thread's order (the child must exist to go on).
    EXIT       ends a task or its whole process (exit, exit_group): global order.
    SIGNAL     sends a signal another task observes (kill, tgkill): global order.
    WAIT       a PASSTHROUGH call that sleeps natively (futex, sigsuspend): a
               thread in it may wait on a thread replay holds.
    """

    SHARED = 0
    THREAD = 1
    TIME = 2
    LIFECYCLE = 3
    EXIT = 4
    SIGNAL = 5
    WAIT = 6


class FdEffect(enum.IntEnum):
    """What a successful call does to its process's fd table.

    NEW          the return value is a new fd (open, socket, eventfd2, accept4).
    PAIR         two new fds are written into an out-argument (pipe2, socketpair).
    DUP          the return value refers to fd argument 0's open file (dup, dup2, dup3).
    DUP_CMD      DUP when the command argument (1) is F_DUPFD or F_DUPFD_CLOEXEC (fcntl).
    CLOSE        fd argument 0 is closed (close).
    CLOSE_RANGE  the fds from argument 0 to argument 1 are closed, or marked
                 close-on-exec with CLOSE_RANGE_CLOEXEC (close_range).
    EXEC         the close-on-exec fds are closed (a successful execve).
    """

    NONE = 0
    NEW = 1
    PAIR = 2
    DUP = 3
    DUP_CMD = 4
    CLOSE = 5
    CLOSE_RANGE = 6
    EXEC = 7


class Beh(enum.IntFlag):
    """Behaviour flags of a syscall (falco's event flags are the model).

    FILE_IO     moves bytes or the position of the file at fd argument 0 (read,
                write, lseek, ftruncate): replay runs it natively on a file the
                run itself created.
    COUNTS_IN   the success value counts the bytes taken from its BUF_IN buffer
                (write, pwrite64, sendto), so it is bounded by the size argument.
    SIZE_QUERY  a zero size argument asks for the needed count (getgroups(2), the xattr
                getters and listers).
    STREAM      its payload is the data stream of its fd (read, send, recvmsg,
                ...), not a structure or a name.
    """

    NONE = 0
    FILE_IO = 1
    COUNTS_IN = 2
    SIZE_QUERY = 4
    STREAM = 8


@dataclass(frozen=True, slots=True)
class Behaviour:
    """A syscall's behaviour beyond its argument layout (see :class:`Order`,
    :class:`FdEffect`, :class:`Beh`).

    ``fd_kind`` names what a NEW/PAIR fd refers to ("file", "socket", "pipe",
    "eventfd", "epoll", "timerfd", "signalfd", "inotify", "pidfd", "memfd", ...).
    ``cloexec`` is where the new fd's close-on-exec flag lives: (argument index,
    bit mask); index -1 when it never is set (creat, pipe), -2 when it always
    is (pidfd_getfd); the mask of a BUF_IN
    argument applies to the structure's first u64 (openat2's struct open_how).
    ``moves`` (source fd argument, target fd argument) for calls that move
    bytes between two fds without a user buffer (sendfile, splice, tee).
    """

    order: Order = Order.SHARED
    fd: FdEffect = FdEffect.NONE
    fd_kind: str = ""
    cloexec: tuple[int, int] = (-1, 0)
    flags: Beh = Beh.NONE
    moves: tuple[int, int] | None = None

    def as_row(self) -> tuple:
        return (int(self.order), int(self.fd), self.fd_kind, self.cloexec, int(self.flags), self.moves)

    @classmethod
    def from_row(cls, row: tuple) -> "Behaviour":
        order, fd, kind, cloexec, flags, moves = row
        return cls(Order(order), FdEffect(fd), kind, tuple(cloexec), Beh(flags),
                   tuple(moves) if moves is not None else None)


NO_BEHAVIOUR = Behaviour()


@dataclass(frozen=True, slots=True)
class Arg:
    """One syscall argument: its name, kind, and for buffers the size rule.

    ``size`` is the constant byte count for CONST, the argument index for
    ARG/DEREF/CNT/MIN_RET_ARG, and 0 otherwise. ``ctype`` names the decoded
    structure (``stat``, ``timespec``, ...) or the flag set for FLAGS/ENUM.
    """

    name: str
    kind: Kind = Kind.INT
    rule: Rule = Rule.NONE
    size: int = 0
    ctype: str = ""
    elem: int = 0  # CNT rule: bytes per element (struct pollfd: 8, struct iovec: 16)


@dataclass(frozen=True, slots=True)
class Syscall:
    """One declared syscall.

    ``nr`` is the x86_64 number and ``nr_aarch64`` the aarch64 one (None when
    the call does not exist there). ``ret`` names how the result is decoded:
    ``int`` (or -errno), ``fd``, ``hex`` (addresses) or ``none`` (never returns).
    """

    name: str
    nr: int
    nr_aarch64: int | None
    cls: Class
    args: tuple[Arg, ...] = field(default_factory=tuple)
    ret: str = "int"
    note: str = ""
    beh: Behaviour = NO_BEHAVIOUR

    @property
    def order(self) -> Order:
        return self.beh.order

    @property
    def fd_effect(self) -> FdEffect:
        return self.beh.fd

    def has(self, flag: Beh) -> bool:
        return bool(self.beh.flags & flag)
