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
    IRREGULAR    a hand-written capture/replay pair exists (named after the syscall).
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
