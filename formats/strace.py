"""strace-style text for trace events (what ``dr show`` prints).

Every argument is decoded through the schema (:mod:`dr.schema`: argument
kinds, FLAGS/ENUMS tables); the conventions are strace's (strace(1)):

    write(1, "hello\\n", 6) = 6
    openat(AT_FDCWD, "/nope", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)
    [pid  4243] read(3, "GET / HTTP/1.1\\r\\nHost: 127.0.0.1"..., 8192) = 78

Data buffers are quoted and escaped as strace does and cut at ``strsize``
bytes (``-s``, default 32) with ``...``; paths and other NUL-terminated
strings are printed in full, as strace does. ``xflag`` 1 prints strings
holding non-printable bytes in hex, 2 prints every string in hex (``-x``/``-xx``).
Structures are decoded where cheap (stat, statx, timespec, timeval, rusage,
sockaddr in/in6/un, pollfd, epoll_event, fd pairs, utsname, wait status,
capabilities); other pointers print as addresses. Kernel structure layouts
are x86_64 and cite their uapi header.

``decode_fds`` 1 / 2 (strace ``-y`` / ``-yy``) decorates fds with what they
are, tracked through the trace by :class:`dr.formats.fdmap.FdMap`:
``3</etc/hosts>``, ``AT_FDCWD</tmp>``, ``4<pipe:[1]>``, ``5<anon_inode:[eventfd]>``;
sockets are ``3<socket:[7]>`` with -y and ``3<TCP:[127.0.0.1:45678->127.0.0.1:8000]>``
with -yy. A trace holds no inode numbers: the N in ``pipe:[N]``/``socket:[N]``
numbers dr's open files, it is not the kernel's inode. ``acolumn`` pads the
`` = result`` to that column (strace ``-a``, 40 in ``dr show``; 0 here, for
library users that want one-line text without padding). ``since_ns`` /
``until_ns`` keep events whose entry time (CLOCK_MONOTONIC ns) lies in that
window; :func:`parse_time_bound` turns ``--since`` text into such a bound.

Library use::

    opts = ShowOptions(strsize=64, timestamps=2, decode_fds=2)
    for line in show_lines(reader, opts): print(line)
    for note in end_notices(reader): print(note, file=sys.stderr)
"""

from __future__ import annotations

import errno as _errno
import os
import signal as _signal
import struct
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from dr import schema
from dr.errors import UsageError
from dr.formats.stats import plural
from dr.formats.trace import Event, ProcEvent, TraceReader
from dr.schema import Kind, Rule, Sub
from dr.schema.classes import TRACE_CLASSES

__all__ = ["ShowOptions", "Formatter", "show_lines", "summary_lines", "end_notices", "parse_trace_expr",
           "is_failed", "is_successful",
           "parse_time_bound", "quote", "format_flags"]

_RESTART = schema.ENUMS["errno_restart"]
_RESTART_MSG = {  # include/linux/errno.h comments, as strace prints them
    "ERESTARTSYS": "To be restarted if SA_RESTART is set",
    "ERESTARTNOINTR": "To be restarted",
    "ERESTARTNOHAND": "To be restarted if no handler",
    "ERESTART_RESTARTBLOCK": "Interrupted by signal",
}
_AT_FDCWD = -100  # include/uapi/linux/fcntl.h
_NO_EXIT = schema.EVENT_FLAGS["NO_EXIT"]
_ENTRY_LOST = schema.EVENT_FLAGS["ENTRY_LOST"]
#: Syscalls whose open-flags argument carries an access mode.
_ACCMODE = frozenset({"open", "openat"})
#: HEX arguments that are addresses (printed NULL when 0).
_ADDR_ARGS = frozenset({"addr", "brk", "start", "new_addr", "uaddr", "uaddr2", "newsp", "tls"})
_OPEN_NAMES = {v: k for k, v in schema.FLAGS["open"].items()}
#: INT arguments that are 64-bit (off_t, loff_t, size_t, long) in the kernel's prototypes.
_LONG_INT_ARGS = frozenset({"offset", "pos", "pos_l", "pos_h", "len", "length", "nbytes",
                            "msgtyp", "size", "off"})
_O_CREAT, _O_TMPFILE = _OPEN_NAMES["O_CREAT"], _OPEN_NAMES["O_TMPFILE"]
#: Syscalls whose fd-pair out-argument holds new fds (decorated after the call with -y).
_FD_PAIR_CALLS = frozenset(s.name for s in schema.all_syscalls() if s.fd_effect == schema.FdEffect.PAIR)
_AF_INET, _AF_INET6 = 2, 10
_NR_EXIT_GROUP = schema.by_name("exit_group").nr
_FUTEX_PRIVATE, _FUTEX_CLOCK_REALTIME = 128, 256
#: futex(2) commands -> the arguments after (uaddr, op) strace prints for them
#: (kernel/futex/syscalls.c; strace futex.c): val, utime/val2, uaddr2, val3.
_FUTEX_ARGS = {
    "FUTEX_WAIT": ("val", "utime"), "FUTEX_WAKE": ("val",), "FUTEX_FD": ("val",),
    "FUTEX_REQUEUE": ("val", "val2", "uaddr2"),
    "FUTEX_CMP_REQUEUE": ("val", "val2", "uaddr2", "val3"),
    "FUTEX_CMP_REQUEUE_PI": ("val", "val2", "uaddr2", "val3"),
    "FUTEX_WAKE_OP": ("val", "val2", "uaddr2", "val3"),
    "FUTEX_LOCK_PI": ("utime",), "FUTEX_LOCK_PI2": ("utime",),
    "FUTEX_UNLOCK_PI": (), "FUTEX_TRYLOCK_PI": (),
    "FUTEX_WAIT_BITSET": ("val", "utime", "bitset"), "FUTEX_WAKE_BITSET": ("val", "bitset"),
    "FUTEX_WAIT_REQUEUE_PI": ("val", "utime", "uaddr2"),
}
#: Signals whose default action ends the process (signal(7)): a task that dies
#: inside a call after one of these was delivered with SIG_DFL was killed by it.
_FATAL_DEFAULT = frozenset(int(s) for s in (
    _signal.SIGHUP, _signal.SIGINT, _signal.SIGQUIT, _signal.SIGILL, _signal.SIGTRAP,
    _signal.SIGABRT, _signal.SIGBUS, _signal.SIGFPE, _signal.SIGKILL, _signal.SIGUSR1,
    _signal.SIGSEGV, _signal.SIGUSR2, _signal.SIGPIPE, _signal.SIGALRM, _signal.SIGTERM,
    _signal.SIGXCPU, _signal.SIGXFSZ, _signal.SIGVTALRM, _signal.SIGPROF, _signal.SIGIO,
    _signal.SIGSYS))


@dataclass(slots=True)
class ShowOptions:
    """What ``dr show`` prints.

    strsize     bytes of each string shown before ``...`` (strace -s)
    xflag       0: escapes; 1: hex for non-printable strings; 2: all hex (-x, -xx)
    timestamps  0 none; 1 HH:MM:SS; 2 with microseconds; 3 epoch seconds (-t, -tt, -ttt)
    relative    prefix the time since the previous shown syscall (strace -r)
    tids        only these tids (None: all)
    syscalls    only these syscall numbers (None: all)
    decode_fds  0 plain fds; 1 with paths (strace -y); 2 also socket addresses (-yy)
    acolumn     pad `` = result`` to this column (strace -a; 0: no padding)
    since_ns    only events at or after this CLOCK_MONOTONIC ns (None: from the start)
    until_ns    only events at or before this CLOCK_MONOTONIC ns (None: to the end)
    pids        only threads of these processes (tgids; strace -p; None: all)
    status      None: every call; "successful" / "failed": only calls that returned
                without / with an error (strace -z / -Z)
    syscall_times  append the time spent inside each call, `` <0.000012>`` (strace -T)
    color       ANSI colours (errors red, signals yellow, process events bold)
    prefix      ``[pid N]`` prefixes: None as strace -f (once the trace has a second
                thread), False never (one call decoded on its own, as replay reports do)
    """

    strsize: int = 32
    xflag: int = 0
    timestamps: int = 0
    relative: bool = False
    tids: frozenset[int] | None = None
    syscalls: frozenset[int] | None = None
    decode_fds: int = 0
    acolumn: int = 0
    since_ns: int | None = None
    until_ns: int | None = None
    pids: frozenset[int] | None = None
    status: str | None = None
    syscall_times: bool = False
    color: bool = False
    prefix: bool | None = None


def parse_trace_expr(exprs: Iterable[str]) -> frozenset[int] | None:
    """Parse strace ``-e`` expressions (``trace=read,write``, ``read``, ``trace=!close``,
    ``trace=%network,%file``: strace's classes, :data:`dr.schema.classes.TRACE_CLASSES`).

    Returns the x86_64 syscall numbers to show, or None for all. Raises
    :class:`dr.errors.UsageError` for an unknown syscall or qualifier.
    """
    chosen: set[int] | None = None
    for expr in exprs:
        q, eq, rest = expr.partition("=")
        if not eq:
            q, rest = "trace", expr
        if q != "trace":
            raise UsageError(f"-e {q}=... is not supported (only trace=NAME,...)")
        neg = rest.startswith("!")
        names = [n for n in rest.lstrip("!").split(",") if n]
        nrs = set()
        for n in names:
            if n == "all":
                nrs.update(s.nr for s in schema.all_syscalls())
                continue
            if n.startswith("%"):
                members = TRACE_CLASSES.get(n[1:])
                if members is None:
                    raise UsageError(f"invalid syscall class {n!r} in -e {expr} (classes: "
                                     + ", ".join("%" + c for c in TRACE_CLASSES) + ")")
                nrs.update(schema.by_name(m).nr for m in members)
                continue
            if n.startswith("syscall_") and n[8:].isdigit():
                nrs.add(int(n[8:]))
                continue
            try:
                nrs.add(schema.by_name(n).nr)
            except KeyError:
                raise UsageError(f"invalid system call {n!r} in -e {expr}") from None
        if neg:
            base = chosen if chosen is not None else {s.nr for s in schema.all_syscalls()}
            chosen = base - nrs
        else:
            chosen = (chosen or set()) | nrs
    return None if chosen is None else frozenset(chosen)


def parse_time_bound(text: str, meta: dict, option: str = "--since",
                     first_ts: int | None = None) -> int:
    """A ``--since``/``--until`` value as a CLOCK_MONOTONIC ns bound.

    Accepts seconds from the trace start (``2.5``, ``+2.5``, ``2.5s``), an
    absolute wall-clock time (``2026-11-30T09:10:00[.ffffff][Z|+01:00]``;
    local time when no zone is given, as ``-t`` prints it) or a time of day
    on the day the capture started (``09:10:00[.ffffff]``). The trace start is
    ``meta["started_ns"]`` (else ``first_ts``, the first record's time, else 0);
    wall-clock times need ``meta["clock_offsets"]["realtime_ns"]``.
    Raises :class:`dr.errors.UsageError` for text that is none of these, or a
    wall-clock time on a trace without a realtime offset.
    """
    import datetime as _dt

    t = text.strip()
    start = meta.get("started_ns")
    if not isinstance(start, int):
        start = first_ts if isinstance(first_ts, int) else 0
    try:
        secs = float(t[:-1] if t.endswith("s") else t)
    except ValueError:
        secs = None
    if secs is not None:
        if secs != secs or abs(secs) > 1e10:  # NaN or beyond any trace
            raise UsageError(f"{option} {text!r}: seconds out of range")
        return start + int(round(secs * 1e9))
    clocks = meta.get("clock_offsets") or meta.get("clock") or {}
    off = clocks.get("realtime_ns") if isinstance(clocks, dict) else None
    try:
        if "T" in t or "-" in t[:5]:
            when = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
        else:
            tod = _dt.time.fromisoformat(t)
            if not isinstance(off, int):
                raise UsageError(f"{option} {text!r}: the trace has no realtime clock offset; "
                                 "give seconds from the trace start instead")
            day = _dt.datetime.fromtimestamp((start + off) / 1e9).date()
            when = _dt.datetime.combine(day, tod)
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected seconds from the trace start (2.5), "
                         "a wall-clock time (2026-11-30T09:10:00) or a time of day (09:10:00)"
                         ) from None
    if not isinstance(off, int):
        raise UsageError(f"{option} {text!r}: the trace has no realtime clock offset; "
                         "give seconds from the trace start instead")
    wall = when.timestamp()  # naive: local time, as -t prints
    return int(round(wall * 1e6)) * 1000 - off


def _ansi(style: str) -> tuple[str, str]:
    """The escape sequences that open and close ``style`` (rich's names), 8 colours."""
    from rich.color import ColorSystem
    from rich.style import Style

    a, _, b = Style.parse(style).render("\0", color_system=ColorSystem.STANDARD).partition("\0")
    return a, b


#: -> (start, end) ANSI sequences, made once when a formatter first wants colour.
_COLORS: dict[str, tuple[str, str]] = {}
#: Syscalls that make, replace or end tasks: their names are bold with colour on.
_PROC_CALLS = TRACE_CLASSES["process"] - TRACE_CLASSES["signal"]


def is_failed(ev: Event) -> bool:
    """The call returned an error (``-1 ENOENT``, ``? ERESTARTSYS``); strace -Z shows these."""
    if ev.flags & _NO_EXIT:
        return False
    sc = schema.by_nr(ev.nr)
    if sc is not None and sc.ret == "none":
        return False
    return -4095 <= ev.ret < 0


def is_successful(ev: Event) -> bool:
    """The call returned without an error; strace -z shows these (not calls that never return)."""
    if ev.flags & _NO_EXIT:
        return False
    sc = schema.by_nr(ev.nr)
    if sc is not None and sc.ret == "none" and sc.name != "rt_sigreturn":
        return False
    return not -4095 <= ev.ret < 0


# --------------------------------------------------------------------------- strings


def quote(data: bytes, strsize: int, xflag: int = 0, more: bool = False) -> str:
    """``data`` as a strace string literal, cut at ``strsize`` bytes.

    ``more``: the bytes continue beyond ``data`` (a truncated capture), so
    ``...`` follows even when nothing was cut here.
    """
    cut = len(data) > strsize
    if cut:
        data = data[:strsize]
    usehex = xflag > 1
    if xflag == 1:
        for c in data:
            if c > 0x7E or (c < 0x20 and not 9 <= c <= 13):
                usehex = True
                break
    if usehex:
        body = "".join(f"\\x{c:02x}" for c in data)
    else:
        out = []
        n = len(data)
        for i, c in enumerate(data):
            if c == 0x22:
                out.append('\\"')
            elif c == 0x5C:
                out.append("\\\\")
            elif 0x20 <= c <= 0x7E:
                out.append(chr(c))
            elif c == 10:
                out.append("\\n")
            elif c == 9:
                out.append("\\t")
            elif c == 13:
                out.append("\\r")
            elif c == 12:
                out.append("\\f")
            elif c == 11:
                out.append("\\v")
            elif i + 1 < n and 0x30 <= data[i + 1] <= 0x37:
                out.append(f"\\{c:03o}")  # a following octal digit forces three digits
            else:
                out.append(f"\\{c:o}")
        body = "".join(out)
    return f'"{body}"' + ("..." if cut or more else "")


def format_flags(value: int, setname: str, accmode: bool = False) -> str:
    """Bit flags by name (``O_RDWR|O_CREAT``) in the set's order; unknown bits in hex.

    A value of 0 prints the set's name for 0 when it has one (``F_OK``), else
    ``0``. A multi-bit name (O_SYNC, STATX_BASIC_STATS) stands for all its bits
    and hides the names of its parts. ``accmode``: the value is open(2) flags,
    whose low two bits are the access mode (O_RDONLY is 0 and is printed).
    """
    table = schema.FLAGS.get(setname, {})
    parts = []
    rest = value
    if accmode:
        acc = value & 3
        name = table.get(acc)
        if name:
            parts.append(name)
            rest &= ~3
    elif setname == "sock_type":  # the low nibble is the socket type, an enum
        base = value & 0xF
        name = schema.ENUMS["sock_type_base"].get(base)
        if name:
            parts.append(name)
            rest &= ~0xF
    elif value == 0:
        return table.get(0, "0")
    hits = [(bit, name) for bit, name in table.items() if bit and rest & bit == bit]
    covered = 0
    for bit, name in hits:
        if any(b != bit and b & bit == bit for b, _ in hits):
            continue  # part of a larger name that matched (O_DSYNC within O_SYNC)
        parts.append(name)
        covered |= bit
    rest &= ~covered
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) if parts else "0"


def _enum(value: int, setname: str) -> str:
    name = schema.ENUMS.get(setname, {}).get(value)
    if name:
        return name
    return hex(value) if setname == "ioctl" else str(value)


def _s64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v & (1 << 63) else v


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & (1 << 31) else v


def _sig(v: int) -> str:
    try:
        return _signal.Signals(v).name
    except ValueError:
        return str(v)


def _ptr(v: int) -> str:
    return "NULL" if v == 0 else hex(v)


# --------------------------------------------------------------------------- structures
# Layouts: x86_64 kernel uapi headers named at each decoder.

_STAT = struct.Struct("<QQQIII4xQq")  # asm/stat.h struct stat: dev ino nlink mode uid gid rdev size
_STATX = struct.Struct("<IIQIIIH2xQQ")  # linux/stat.h struct statx: mask blksize attrs nlink uid gid mode ino size
_TS = struct.Struct("<qq")
_SOCKADDR_IN = struct.Struct("!H4s")  # linux/in.h: port and address in network order
_EPOLL = struct.Struct("<IQ")  # linux/eventpoll.h: packed on x86_64, 12 bytes
_POLLFD = struct.Struct("<ihh")  # asm-generic/poll.h


def _mode(m: int) -> str:
    fmt = schema.ENUMS["s_ifmt"].get(m & 0o170000)
    perm = f"0{m & 0o7777:03o}"
    return f"{fmt}|{perm}" if fmt else perm


def _makedev(dev: int) -> str:
    # glibc's gnu_dev_major/minor encoding (sys/sysmacros.h)
    major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF & 0xFFFFFFFF)
    minor = (dev & 0xFF) | ((dev >> 12) & ~0xFF & 0xFFFFFFFF)
    return f"makedev(0x{major:x}, 0x{minor:x})"


def _dec_stat(b: bytes) -> str | None:
    if len(b) < _STAT.size:
        return None
    _dev, _ino, _nlink, mode, _uid, _gid, rdev, size = _STAT.unpack_from(b)
    if mode & 0o170000 in (0o020000, 0o060000):
        return f"{{st_mode={_mode(mode)}, st_rdev={_makedev(rdev)}, ...}}"
    return f"{{st_mode={_mode(mode)}, st_size={size}, ...}}"


def _dec_statx(b: bytes) -> str | None:
    if len(b) < _STATX.size:
        return None
    mask, _bs, attr, _nlink, _uid, _gid, mode, _ino, size = _STATX.unpack_from(b)
    return (f"{{stx_mask={format_flags(mask, 'statx_mask')}, "
            f"stx_attributes={format_flags(attr, 'statx_attr')}, "
            f"stx_mode={_mode(mode)}, stx_size={size}, ...}}")


def _dec_timespec(b: bytes) -> str | None:
    if len(b) < 16:
        return None
    s, ns = _TS.unpack_from(b)
    return f"{{tv_sec={s}, tv_nsec={ns}}}"


def _dec_timeval(b: bytes) -> str | None:
    if len(b) < 16:
        return None
    s, us = _TS.unpack_from(b)
    return f"{{tv_sec={s}, tv_usec={us}}}"


def _dec_int(b: bytes) -> str | None:
    return f"[{struct.unpack_from('<i', b)[0]}]" if len(b) >= 4 else None


def _dec_uint(b: bytes) -> str | None:
    return f"[{struct.unpack_from('<I', b)[0]}]" if len(b) >= 4 else None


def _dec_i64(b: bytes) -> str | None:
    return f"[{struct.unpack_from('<q', b)[0]}]" if len(b) >= 8 else None


def _rlim(v: int) -> str:
    # strace's print_rlim64_t: multiples of 1024 as N*1024
    if v == (1 << 64) - 1:
        return "RLIM64_INFINITY"
    return f"{v // 1024}*1024" if v > 1024 and v % 1024 == 0 else str(v)


def _dec_rlimit(b: bytes) -> str | None:
    if len(b) < 16:  # linux/resource.h struct rlimit64
        return None
    cur, mx = struct.unpack_from("<QQ", b)
    return f"{{rlim_cur={_rlim(cur)}, rlim_max={_rlim(mx)}}}"


def _dec_wait_status(b: bytes) -> str | None:
    """wait4's int status as strace prints it (the W* macros of sys/wait.h)."""
    if len(b) < 4:
        return None
    st = struct.unpack_from("<i", b)[0] & 0xFFFFFFFF
    sig = st & 0x7F
    if sig == 0:
        s = f"WIFEXITED(s) && WEXITSTATUS(s) == {(st >> 8) & 0xFF}"
    elif st == 0xFFFF:
        s = "WIFCONTINUED(s)"
    elif sig == 0x7F:
        s = f"WIFSTOPPED(s) && WSTOPSIG(s) == {_sig((st >> 8) & 0xFF)}"
        if st >> 16:
            s += f" && (s >> 16) == {st >> 16}"
    else:
        s = f"WIFSIGNALED(s) && WTERMSIG(s) == {_sig(sig)}"
        if st & 0x80:
            s += " && WCOREDUMP(s)"
    return f"[{{{s}}}]"


def _dec_rusage(b: bytes) -> str | None:
    if len(b) < 32:  # linux/resource.h struct rusage: ru_utime, ru_stime (timeval) first
        return None
    us, uu, ss, su = struct.unpack_from("<qqqq", b)
    return (f"{{ru_utime={{tv_sec={us}, tv_usec={uu}}}, "
            f"ru_stime={{tv_sec={ss}, tv_usec={su}}}, ...}}")


def _dec_cap_header(b: bytes) -> str | None:
    if len(b) < 8:  # linux/capability.h struct __user_cap_header_struct: u32 version, int pid
        return None
    ver, pid = struct.unpack_from("<Ii", b)
    return f"{{version={schema.ENUMS['cap_version'].get(ver, hex(ver))}, pid={pid}}}"


def _caps(mask: int) -> str:
    if not mask:
        return "0"
    names = schema.ENUMS["cap"]
    parts = [f"1<<{names[i]}" for i in range(64) if mask >> i & 1 and i in names]
    rest = mask & ~sum(1 << i for i in names)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts)


def _dec_cap_data(b: bytes) -> str | None:
    """struct __user_cap_data_struct[2] (version 3): 32-bit halves of each set."""
    if len(b) < 24:
        return None
    e0, p0, i0, e1, p1, i1 = struct.unpack_from("<6I", b)
    return (f"{{effective={_caps(e0 | e1 << 32)}, permitted={_caps(p0 | p1 << 32)}, "
            f"inheritable={_caps(i0 | i1 << 32)}}}")


def _dec_fd_pair(b: bytes) -> str | None:
    if len(b) < 8:
        return None
    a, c = struct.unpack_from("<ii", b)
    return f"[{a}, {c}]"


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _dec_utsname(b: bytes) -> str | None:
    if len(b) < 130:  # linux/utsname.h: six fields of 65 bytes
        return None
    sysname, nodename = _cstr(b[0:65]), _cstr(b[65:130])
    return f'{{sysname="{sysname}", nodename="{nodename}", ...}}'


def decode_sockaddr(b: bytes, strsize: int = 108) -> str:
    """A struct sockaddr as strace prints it (linux/in.h, linux/in6.h, linux/un.h)."""
    if len(b) < 2:
        return "{...}"
    fam = struct.unpack_from("<H", b)[0]
    fname = schema.ENUMS["af"].get(fam, str(fam))
    if fname == "AF_INET" and len(b) >= 8:
        port, addr = _SOCKADDR_IN.unpack_from(b, 2)
        return (f"{{sa_family=AF_INET, sin_port=htons({port}), "
                f'sin_addr=inet_addr("{".".join(str(x) for x in addr)}")}}')
    if fname == "AF_INET6" and len(b) >= 28:
        import ipaddress
        port, flow = struct.unpack_from("!HI", b, 2)
        addr = ipaddress.IPv6Address(b[8:24])
        scope = struct.unpack_from("<I", b, 24)[0]
        return (f"{{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl({flow}), "
                f'inet_pton(AF_INET6, "{addr}", &sin6_addr), sin6_scope_id={scope}}}')
    if fname == "AF_UNIX":
        path = b[2:]
        if not path:
            return "{sa_family=AF_UNIX}"
        if path[0] == 0:  # abstract socket: the name may hold NULs
            return f"{{sa_family=AF_UNIX, sun_path=@{quote(path[1:].rstrip(bytes(1)), strsize)}}}"
        return f"{{sa_family=AF_UNIX, sun_path={quote(path.split(bytes(1), 1)[0], strsize)}}}"
    return f"{{sa_family={fname}, ...}}"


def _dec_pollfds(b: bytes, revents: bool, fdtext=str) -> str:
    out = []
    for i in range(0, len(b) - _POLLFD.size + 1, _POLLFD.size):
        fd, ev, rev = _POLLFD.unpack_from(b, i)
        if revents:
            if rev:
                out.append(f"{{fd={fd}, revents={format_flags(rev & 0xFFFF, 'poll')}}}")
        else:
            out.append(f"{{fd={fdtext(fd) if fd >= 0 else fd}, "
                       f"events={format_flags(ev & 0xFFFF, 'poll')}}}")
    return "[" + ", ".join(out) + "]"


def _dec_epoll(b: bytes) -> str:
    out = []
    for i in range(0, len(b) - _EPOLL.size + 1, _EPOLL.size):
        ev, data = _EPOLL.unpack_from(b, i)
        out.append(f"{{events={format_flags(ev, 'epoll_events')}, "
                   f"data={{u32={data & 0xFFFFFFFF}, u64={data}}}}}")
    return "[" + ", ".join(out) + "]"


def _signame_short(n: int) -> str:
    """A signal in a sigset as strace prints it: ``CHLD``, ``RTMIN``, ``RT_3``."""
    if n == 32:
        return "RTMIN"
    if n > 32:
        return f"RT_{n - 32}"
    s = _sig(n)
    return s[3:] if s.startswith("SIG") else s


def _sigset(mask: int, nbits: int = 64) -> str:
    """A kernel sigset_t (bit n-1 is signal n): ``[INT CHLD]``, or ``~[...]`` when most are set."""
    sigs = [n for n in range(1, nbits + 1) if mask >> (n - 1) & 1]
    if len(sigs) > nbits // 2:
        rest = [n for n in range(1, nbits + 1) if not mask >> (n - 1) & 1]
        return "~[" + " ".join(_signame_short(n) for n in rest) + "]"
    return "[" + " ".join(_signame_short(n) for n in sigs) + "]"


def _dec_sigset(b: bytes) -> str | None:
    return _sigset(struct.unpack_from("<Q", b)[0]) if len(b) >= 8 else None


def _dec_sigaction(b: bytes) -> str | None:
    """Kernel struct sigaction on x86_64 (arch/x86/include/asm/signal.h: handler, flags,
    restorer, mask) as strace prints it."""
    if len(b) < 32:
        return None
    handler, fl, restorer, mask = struct.unpack_from("<QQQQ", b)
    h = {0: "SIG_DFL", 1: "SIG_IGN"}.get(handler, hex(handler))
    s = f"{{sa_handler={h}, sa_mask={_sigset(mask)}, sa_flags={format_flags(fl & 0xFFFFFFFF, 'sa_flags')}"
    if fl & 0x04000000:
        s += f", sa_restorer={_ptr(restorer)}"
    return s + "}"


def _dec_itimerval(b: bytes) -> str | None:
    if len(b) < 32:  # linux/time.h struct itimerval: two timevals
        return None
    i = _dec_timeval(b[:16])
    v = _dec_timeval(b[16:32])
    return f"{{it_interval={i}, it_value={v}}}"


def _dec_sysinfo(b: bytes) -> str | None:
    if len(b) < 108:  # linux/sysinfo.h struct sysinfo, x86_64 offsets
        return None
    up, l1, l2, l3, tot, free, shared, buf, tswap, fswap = struct.unpack_from("<q9Q", b)
    procs = struct.unpack_from("<H", b, 80)[0]
    thigh, fhigh = struct.unpack_from("<QQ", b, 88)
    unit = struct.unpack_from("<I", b, 104)[0]
    return (f"{{uptime={up}, loads=[{l1}, {l2}, {l3}], totalram={tot}, freeram={free}, "
            f"sharedram={shared}, bufferram={buf}, totalswap={tswap}, freeswap={fswap}, "
            f"procs={procs}, totalhigh={thigh}, freehigh={fhigh}, mem_unit={unit}}}")


def _clone_flags(fl: int) -> str:
    """clone(2) flags; the low byte is the exit signal (strace: ``...|SIGCHLD``)."""
    sig = fl & 0xFF
    parts = []
    rest = fl & ~0xFF
    if rest:
        parts.append(format_flags(rest, "clone"))
    if sig:
        parts.append(_sig(sig))
    return "|".join(parts) if parts else "0"


def _dec_clone_args(b: bytes) -> str | None:
    """linux/sched.h struct clone_args: eleven u64 (88 bytes, CLONE_ARGS_SIZE_VER2)."""
    if len(b) < 64:
        return None
    v = list(struct.unpack_from(f"<{min(len(b), 88) // 8}Q", b)) + [0] * 11
    fl, pidfd, ctid, ptid, esig, stack, ssize, tls, set_tid, set_tid_size, cgroup = v[:11]
    parts = [f"flags={format_flags(fl, 'clone')}"]
    if fl & 0x1000:  # CLONE_PIDFD
        parts.append(f"pidfd={_ptr(pidfd)}")
    if fl & (0x1000000 | 0x200000):  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
        parts.append(f"child_tid={_ptr(ctid)}")
    if fl & 0x100000:  # CLONE_PARENT_SETTID
        parts.append(f"parent_tid={_ptr(ptid)}")
    parts.append(f"exit_signal={_sig(esig) if esig else 0}")
    parts.append(f"stack={_ptr(stack)}")
    parts.append(f"stack_size={hex(ssize)}")
    if fl & 0x80000:  # CLONE_SETTLS
        parts.append(f"tls={_ptr(tls)}")
    if set_tid_size:
        parts.append(f"set_tid={_ptr(set_tid)}, set_tid_size={set_tid_size}")
    if cgroup:
        parts.append(f"cgroup={cgroup}")
    return "{" + ", ".join(parts) + "}"


def _dec_fd_set(b: bytes) -> str | None:
    """select's fd_set (a bit per fd, any length): ``[3 2000]`` as strace prints it."""
    fds = [i * 8 + k for i, byte in enumerate(b) for k in range(8) if byte >> k & 1]
    return "[" + " ".join(map(str, fds)) + "]"


def _dec_itimerspec(b: bytes) -> str | None:
    if len(b) < 32:  # include/uapi/linux/time.h struct itimerspec: two timespecs
        return None
    return f"{{it_interval={_dec_timespec(b[:16])}, it_value={_dec_timespec(b[16:32])}}}"


_LOCK_TYPES = {0: "F_RDLCK", 1: "F_WRLCK", 2: "F_UNLCK"}


def _dec_flock(b: bytes) -> str | None:
    """struct flock (include/uapi/asm-generic/fcntl.h, x86_64: short, short, off_t, off_t, pid_t)."""
    if len(b) < 32:
        return None
    typ, whence, start, length, pid = struct.unpack_from("<hhxxxxqqi", b)
    return (f"{{l_type={_LOCK_TYPES.get(typ, typ)}, l_whence={_enum(whence, 'whence')}, "
            f"l_start={start}, l_len={length}, l_pid={pid}}}")


def _dec_f_owner_ex(b: bytes) -> str | None:
    if len(b) < 8:  # struct f_owner_ex: int type, pid_t pid
        return None
    typ, pid = struct.unpack_from("<ii", b)
    name = {0: "F_OWNER_TID", 1: "F_OWNER_PID", 2: "F_OWNER_PGRP"}.get(typ, str(typ))
    return f"{{type={name}, pid={pid}}}"


def _dec_siginfo(b: bytes) -> str | None:
    """siginfo_t's common head (include/uapi/asm-generic/siginfo.h): signo, errno, code,
    and for SIGCHLD-like codes pid, uid, status."""
    if len(b) < 28:
        return None
    signo, errno_, code, pid, uid, status = struct.unpack_from("<iiixxxxiIi", b)
    if signo == 0:
        return "{}"
    return (f"{{si_signo={_sig(signo)}, si_code={code}, si_errno={errno_}, si_pid={pid}, "
            f"si_uid={uid}, si_status={status}}}")


def _dec_winsize(b: bytes) -> str | None:
    if len(b) < 8:
        return None
    row, col, xp, yp = struct.unpack_from("<HHHH", b)
    return f"{{ws_row={row}, ws_col={col}, ws_xpixel={xp}, ws_ypixel={yp}}}"


def _dec_termios(b: bytes) -> str | None:
    if len(b) < 17:  # struct termios: 4 tcflag_t then c_line
        return None
    i, o, c, l_ = struct.unpack_from("<IIII", b)
    return f"{{c_iflag={i:#o}, c_oflag={o:#o}, c_cflag={c:#o}, c_lflag={l_:#o}, ...}}"


def _dec_ifreq(b: bytes) -> str | None:
    """struct ifreq (include/uapi/linux/if.h): the name, then the union as int and bytes."""
    if len(b) < 20:
        return None
    name = b[:16].split(b"\0", 1)[0]
    val = struct.unpack_from("<i", b, 16)[0]
    return f"{{ifr_name={quote(name, 16)}, ifr_ifru=[{val}] {quote(b[16:40], 24, 1)}}}"


def _dec_cstr16(b: bytes) -> str | None:
    data = b.split(b"\0", 1)[0]
    return quote(data, len(data))


_STRUCTS = {
    "stat": _dec_stat, "statx": _dec_statx, "timespec": _dec_timespec,
    "timeval": _dec_timeval, "int": _dec_int, "uint": _dec_uint, "socklen": _dec_uint,
    "loff_t": _dec_i64, "time_t": _dec_i64, "fd_pair": _dec_fd_pair, "utsname": _dec_utsname, "rlimit": _dec_rlimit,
    "wait_status": _dec_wait_status, "rusage": _dec_rusage, "cap_user_header": _dec_cap_header,
    "cap_user_data": _dec_cap_data, "sigset": _dec_sigset, "sigaction": _dec_sigaction,
    "itimerval": _dec_itimerval, "sysinfo": _dec_sysinfo, "clone_args": _dec_clone_args,
    "fd_set": _dec_fd_set, "itimerspec": _dec_itimerspec, "siginfo": _dec_siginfo,
}

#: Buffers sized by a request (ioctl, fcntl, prctl: Rule.REQ) -> their decoder, by request name.
_REQUEST_DECODERS = {
    "F_GETLK": _dec_flock, "F_SETLK": _dec_flock, "F_SETLKW": _dec_flock, "F_OFD_GETLK": _dec_flock,
    "F_OFD_SETLK": _dec_flock, "F_OFD_SETLKW": _dec_flock, "F_GETOWN_EX": _dec_f_owner_ex,
    "F_SETOWN_EX": _dec_f_owner_ex, "F_GET_RW_HINT": _dec_i64, "F_SET_RW_HINT": _dec_i64,
    "PR_GET_NAME": _dec_cstr16, "PR_SET_NAME": _dec_cstr16, "PR_GET_TID_ADDRESS": lambda b: (
        f"[{_ptr(struct.unpack_from('<Q', b)[0])}]" if len(b) >= 8 else None),
    "TIOCGWINSZ": _dec_winsize, "TIOCSWINSZ": _dec_winsize, "TCGETS": _dec_termios,
    "TCSETS": _dec_termios, "TCSETSW": _dec_termios, "TCSETSF": _dec_termios, "TCGETS2": _dec_termios,
    **{name: _dec_ifreq for name in ("SIOCGIFNAME", "SIOCGIFFLAGS", "SIOCGIFADDR", "SIOCGIFBRDADDR",
                                     "SIOCGIFNETMASK", "SIOCGIFMTU", "SIOCGIFHWADDR", "SIOCGIFINDEX")},
}


def _request_arg(ev: Event, req: str, slot: int) -> str | None:
    """The buffer of a request-sized argument, ``before => after`` for value-result ones."""
    dec = _REQUEST_DECODERS.get(req, _dec_int)
    p = ev.payloads.get(slot)
    entry = ev.payloads.get(slot | Sub.ENTRY << 4)
    before = dec(entry.data) if entry is not None else None
    after = dec(p.data) if p is not None else None
    if before and after and before != after:
        return f"{before} => {after}"
    return before or after


# --------------------------------------------------------------------------- events


class Formatter:
    """Turns events into strace-style lines; keeps the state strace keeps.

    ``meta``: the trace metadata (clock offsets for ``-t``, tids for the
    ``[pid N]`` prefix, the fd snapshot that seeds ``-y``). With
    ``opts.decode_fds`` the formatter follows every fd through the trace: feed
    it every record in capture order, printed or not (:meth:`line`,
    :meth:`proc_line`, or :meth:`feed` for the ones not shown).
    """

    def __init__(self, opts: ShowOptions, meta: dict | None = None) -> None:
        self.opts = opts
        meta = meta or {}
        clocks = meta.get("clock_offsets") or meta.get("clock") or {}
        off = clocks.get("realtime_ns") if isinstance(clocks, dict) else None
        self.realtime_ns = off if isinstance(off, int) else None
        # `[pid N]` prefixes: whenever the trace has more than one thread, whatever
        # the filters show: from the start when the target had several threads at
        # capture start; else, as strace -f does, from the second thread on (seen
        # in any record, shown or not, or announced by a fork).
        tids = meta.get("tids")
        self.prefix = isinstance(tids, list) and len(tids) > 1
        self.never_prefix = opts.prefix is False
        self.seen: set[int] = set()
        self.last_ts: int | None = None
        self.fdmap = None
        if opts.decode_fds:
            from dr.formats.fdmap import FdMap
            self.fdmap = FdMap(meta)
        self._fatal: dict[int, int] = {}  # tid -> fatal signal delivered with SIG_DFL
        self._group_exit: dict[int, int] = {}  # tgid -> exit_group status (its threads end with it)
        self._applied = False  # the event being formatted is already in the fd state
        if opts.color and not _COLORS:
            _COLORS.update(error=_ansi("red"), signal=_ansi("yellow"), proc=_ansi("bold cyan"))
        self._colors = _COLORS if opts.color else None

    def feed(self, rec) -> None:
        """Update the state (fds, fatal signals, threads) with a record that is not printed."""
        if self.fdmap is not None:
            self.fdmap.apply(rec)
        self.note_thread(rec)
        if isinstance(rec, Event) and rec.nr == _NR_EXIT_GROUP:
            self._group_exit[rec.tgid] = rec.args[0] & 0xFF
        elif isinstance(rec, ProcEvent) and rec.kind == "SIGNAL":
            sig = _s32(rec.arg0)
            if rec.arg1 == 0 and sig in _FATAL_DEFAULT:  # SIG_DFL: the task dies of it
                self._fatal[rec.tid] = sig

    def note_thread(self, rec) -> None:
        """Turn the ``[pid N]`` prefix on once the trace shows a second thread."""
        if self.prefix or isinstance(rec, dict):
            return
        if isinstance(rec, ProcEvent) and rec.kind == "FORK":
            self.prefix = True
            return
        self.seen.add(rec.tid)
        self.prefix = len(self.seen) > 1

    # -- line prefix

    def _head(self, tid: int, ts: int) -> str:
        if not self.prefix:
            self.seen.add(tid)
            self.prefix = len(self.seen) > 1
        h = f"[pid {tid:5d}] " if self.prefix and not self.never_prefix else ""
        o = self.opts
        if o.timestamps:
            wall = ts + self.realtime_ns if self.realtime_ns is not None else ts
            sec, ns = divmod(wall, 1_000_000_000)
            if o.timestamps >= 3:
                h += f"{sec}.{ns // 1000:06d} "
            else:
                try:
                    h += time.strftime("%H:%M:%S", time.localtime(sec))
                except (OverflowError, OSError, ValueError):  # a time no calendar holds
                    h += str(sec)
                h += f".{ns // 1000:06d} " if o.timestamps == 2 else " "
        if o.relative:
            d = 0 if self.last_ts is None else max(ts - self.last_ts, 0)
            self.last_ts = ts
            s, ns = divmod(d, 1_000_000_000)
            h += f"{s:6d}.{ns // 1000:06d} "
        return h

    # -- process events

    def proc_line(self, pe: ProcEvent) -> str | None:
        """strace's ``+++ exited with N +++``, ``+++ killed by SIGX +++`` and
        ``--- SIGX {si_signo=SIGX} ---`` lines; None for fork/exec."""
        self.feed(pe)
        o = self.opts
        if o.tids is not None and pe.tid not in o.tids:
            return None
        if o.pids is not None and pe.tgid not in o.pids:
            return None
        c = self._colors
        if pe.kind == "EXIT":  # arg0: exit code, or -1 when the task died inside a call
            head = self._head(pe.tid, pe.ts)
            sig = self._fatal.pop(pe.tid, None)
            # A worker thread's end is not the process's: say so (strace prints the
            # same "+++ exited +++" for both, which reads as if the service ended).
            who = "thread " if pe.tgid and pe.tid != pe.tgid else ""
            if pe.arg0 < 0 and sig is not None:
                text = f"+++ {who}killed by {_sig(sig)} +++"
            else:
                code = pe.arg0 if pe.arg0 >= 0 else self._group_exit.get(pe.tgid, "?")
                text = f"+++ {who}exited with {code} +++"
            return head + (c["proc"][0] + text + c["proc"][1] if c else text)
        if pe.kind == "SIGNAL":
            if _s32(pe.arg0) == int(_signal.SIGKILL):
                return None  # strace never sees SIGKILL delivered: only "killed by"
            name = _sig(_s32(pe.arg0))
            text = f"--- {name} {{si_signo={name}}} ---"
            return self._head(pe.tid, pe.ts) + (c["signal"][0] + text + c["signal"][1] if c else text)
        return None

    # -- syscalls

    def line(self, ev: Event) -> str:
        """One syscall as ``name(args) = ret``."""
        head = self._head(ev.tid, ev.ts_enter)
        sc = schema.by_nr(ev.nr)
        self._applied = False
        if ev.flags & _ENTRY_LOST:
            args = "<arguments unknown>"
        elif sc is None:
            args = ", ".join(hex(a) for a in ev.args)
        else:
            args = ", ".join(self._args(ev, sc))
        name = sc.name if sc else f"syscall_{ev.nr}"
        if not self._applied:  # results (a new fd) are decorated with the state after the call
            self.feed(ev)
            self._applied = True
        text = f"{head}{name}({args}) "
        pad = self.opts.acolumn - len(text)  # strace: ") ", pad to the column, "= "
        ret = self._ret(ev, sc)
        if self.opts.syscall_times and not ev.flags & (_NO_EXIT | _ENTRY_LOST) \
                and ev.ts_enter and ev.ts_exit >= ev.ts_enter and ret != "?":
            # strace -T: seconds inside the call; none for calls that never returned
            d = (ev.ts_exit - ev.ts_enter) // 1000
            ret += f" <{d // 1_000_000}.{d % 1_000_000:06d}>"
        c = self._colors
        if c and is_failed(ev):
            ret = c["error"][0] + ret + c["error"][1]
        elif c and sc is not None and sc.name in _PROC_CALLS:  # fork, exec, exit: bold
            text = f"{head}{c['proc'][0]}{name}{c['proc'][1]}({args}) "
        return f"{text}{' ' * pad if pad > 0 else ''}= {ret}"

    def _fd(self, ev: Event, fd: int) -> str:
        """An fd as strace -y/-yy prints it: ``3</etc/hosts>``; plain when unknown."""
        m = self.fdmap
        if m is None:
            return str(fd)
        if fd == _AT_FDCWD:
            cwd = m.cwd(ev.tgid)
            return f"AT_FDCWD<{cwd}>" if cwd else "AT_FDCWD"
        f = m.lookup(ev.tgid, fd)
        if f is None:
            return str(fd)
        if f.is_socket and (self.opts.decode_fds < 2 or f.label().endswith(":[]")):
            label = f"socket:[{f.id}]" if self.opts.decode_fds < 2 else f"{f.proto}:[{f.id}]"
        else:
            label = f.label()
            if f.kind == "epoll":
                label = "anon_inode:[eventpoll]"  # the kernel's name for it (fs/eventpoll.c)
        return f"{fd}<{label}>" if label else str(fd)

    def _ret(self, ev: Event, sc) -> str:
        if ev.flags & _NO_EXIT:
            return "?"
        if sc is not None and sc.ret == "none" and sc.name != "rt_sigreturn":
            return "?"  # rt_sigreturn "returns" the interrupted code's register, as strace shows
        ret = ev.ret
        if -4095 <= ret < 0:
            e = -ret
            rname = _RESTART.get(e)
            if rname:
                return f"? {rname} ({_RESTART_MSG[rname]})"
            ename = _errno.errorcode.get(e, f"E{e}")
            return f"-1 {ename} ({os.strerror(e)})"
        tail = self._ret_detail(ev, sc)
        if sc is not None and sc.ret == "hex":
            return hex(ret & 0xFFFFFFFFFFFFFFFF) + tail
        if sc is not None and sc.ret == "fd" and self.fdmap is not None and 0 <= ret < 1 << 31:
            return self._fd(ev, ret) + tail
        if sc is not None and sc.name == "fcntl":
            fd_cmd = _enum(ev.args[1] & 0xFFFFFFFF, "fcntl") in ("F_DUPFD", "F_DUPFD_CLOEXEC")
            if fd_cmd and self.fdmap is not None and 0 <= ret < 1 << 31:
                return self._fd(ev, ret)
            return _ret_fcntl(ev) or str(ret)
        return str(ret) + tail

    def _ret_detail(self, ev: Event, sc) -> str:
        """strace's ``= 1 ([{fd=3, revents=POLLIN}])`` for poll-like calls."""
        if sc is None:
            return ""
        for i, a in enumerate(sc.args):
            if a.kind == Kind.INOUT and a.ctype == "pollfd":
                b = ev.payload(i)
                if b is not None and ev.ret > 0:
                    return f" ({_dec_pollfds(b, True)})"
        return ""

    def _args(self, ev: Event, sc) -> list[str]:
        special = _SPECIAL.get(sc.name)
        if special is not None:
            out = special(self, ev, sc)
            if out is not None:
                return out
        out = []
        args = ev.args
        skip_mode = False
        if sc.name in ("open", "openat"):
            fl = args[1 if sc.name == "open" else 2]
            # mode only means something with O_CREAT or O_TMPFILE (whose bits include O_DIRECTORY)
            skip_mode = not (fl & _O_CREAT or fl & _O_TMPFILE == _O_TMPFILE)
        for i, a in enumerate(sc.args):
            if skip_mode and a.name == "mode":
                continue
            out.append(self._arg(ev, sc, i, a))
        return out

    def _arg(self, ev: Event, sc, i: int, a) -> str:
        v = ev.args[i] if i < len(ev.args) else 0
        k = a.kind
        o = self.opts
        if k == Kind.INT:
            # C int arguments are 32 bits wide (poll(..., -1) arrives as 0xffffffff);
            # offsets and lengths are long/loff_t.
            return str(_s64(v) if a.name in _LONG_INT_ARGS else _s32(v))
        if k == Kind.UINT:
            if a.ctype == "octal":
                return f"0{v & 0o7777777:03o}" if v else "000"
            return str(v & 0xFFFFFFFFFFFFFFFF)
        if k == Kind.HEX:
            if v == 0:  # strace: NULL for addresses, 0 for offsets and masks
                return "NULL" if a.name in _ADDR_ARGS else "0"
            return hex(v)
        if k == Kind.FD:
            f = _s32(v)
            if f == _AT_FDCWD and "dfd" in a.name:
                return self._fd(ev, f) if self.fdmap is not None else "AT_FDCWD"
            return self._fd(ev, f) if f >= 0 else str(f)
        if k == Kind.FLAGS:
            return format_flags(v & 0xFFFFFFFF, a.ctype, a.ctype == "open" and sc.name in _ACCMODE)
        if k == Kind.ENUM:
            return _enum(v & 0xFFFFFFFF, a.ctype)
        if k == Kind.SIGNAL:
            return _sig(_s32(v))
        if k == Kind.PTR:
            return _ptr(v)
        p = ev.payloads.get(i)
        if v == 0 and p is None:
            return "NULL"
        if k in (Kind.PATH, Kind.STR):
            if p is None:
                return _ptr(v)
            data = p.data.split(b"\0", 1)[0]  # strace prints paths whole: no -s cut
            return quote(data, len(data), o.xflag, p.truncated)
        if k == Kind.ARGV:
            if p is None:
                return _ptr(v)
            items = p.data.split(b"\0")
            if items and items[-1] == b"":
                items.pop()
            if a.name == "envp":
                return f"{_ptr(v)} /* {len(items)} vars */"
            return "[" + ", ".join(quote(s, o.strsize, o.xflag) for s in items) + "]"
        if k in (Kind.BUF_IN, Kind.BUF_OUT):
            if p is None:
                if a.rule in (Rule.RET, Rule.MIN_RET_ARG) and ev.ret == 0 and not a.ctype:
                    return '""'  # nothing crossed: strace prints the empty string
                return _ptr(v)
            if a.ctype:
                return self._struct(a.ctype, p.data, v, a, ev, sc)
            return quote(p.data, o.strsize, o.xflag, p.truncated)
        if k in (Kind.IOV_IN, Kind.IOV_OUT):
            if p is None:
                return _ptr(v)
            vlen = ev.args[a.size] if a.size < 6 else 0
            s = quote(p.data, o.strsize, o.xflag, p.truncated)
            if vlen == 1:
                return f"[{{iov_base={s}, iov_len={p.total}}}]"
            return f"[/* {vlen} iovecs, {p.total} bytes */ {s}]"
        if k in (Kind.MSG_IN, Kind.MSG_OUT, Kind.MMSG_IN, Kind.MMSG_OUT):
            parts = []
            name = ev.payloads.get(i | Sub.NAME << 4)
            if name is not None and name.data:
                parts.append(f"msg_name={decode_sockaddr(name.data)}")
            if p is not None:
                parts.append(f"msg_iov={quote(p.data, o.strsize, o.xflag, p.truncated)}")
            ctl = ev.payloads.get(i | Sub.CONTROL << 4)
            if ctl is not None and ctl.data:
                parts.append(f"msg_controllen={len(ctl.data)}")
            if not parts:
                return _ptr(v)
            body = "{" + ", ".join(parts) + "}"
            return f"[{body}]" if k in (Kind.MMSG_IN, Kind.MMSG_OUT) else body
        if k in (Kind.SOCKADDR_IN, Kind.SOCKADDR_OUT):
            if p is None:
                return _ptr(v)
            return decode_sockaddr(p.data)
        if k == Kind.INOUT:
            entry = ev.payloads.get(i | Sub.ENTRY << 4)
            if a.ctype == "pollfd":
                b = entry.data if entry is not None else (p.data if p is not None else None)
                return (_dec_pollfds(b, False, lambda fd: self._fd(ev, fd))
                        if b is not None else _ptr(v))
            dec = _STRUCTS.get(a.ctype)
            before = dec(entry.data) if dec and entry is not None else None
            after = dec(p.data) if dec and p is not None else None
            if before and after and before != after:
                if before.startswith("[") and after.startswith("["):
                    return f"[{before[1:-1]} => {after[1:-1]}]"
                return f"{before} => {after}"
            return before or after or _ptr(v)
        return _ptr(v)

    def _struct(self, ctype: str, data: bytes, v: int, a, ev: Event, sc) -> str:
        if ctype == "epoll_event":
            s = _dec_epoll(data)
            return s[1:-1] if sc.name == "epoll_ctl" and s != "[]" else s  # one struct there
        if ctype == "sockaddr":
            return decode_sockaddr(data)
        if ctype == "fd_pair" and self.fdmap is not None and sc.name in _FD_PAIR_CALLS \
                and len(data) >= 8 and ev.ret == 0:
            a_, b_ = struct.unpack_from("<ii", data)  # new fds: the state after the call
            if not self._applied:
                self.feed(ev)
                self._applied = True
            return f"[{self._fd(ev, a_)}, {self._fd(ev, b_)}]"
        dec = _STRUCTS.get(ctype)
        s = dec(data) if dec else None
        return s if s is not None else _ptr(v)


# --------------------------------------------------------------------------- per-syscall layouts
# Calls whose printed arguments depend on other arguments (strace's own decoders).


def _sp_futex(f: Formatter, ev: Event, sc) -> list[str] | None:
    a = ev.args
    op = a[1] & 0xFFFFFFFF
    cmd = schema.ENUMS["futex_op"].get(op & 0x7F)
    if cmd is None:
        return None  # unknown command: every argument as declared
    name = cmd + ("_PRIVATE" if op & _FUTEX_PRIVATE else "")
    if op & _FUTEX_CLOCK_REALTIME:
        name += "|FUTEX_CLOCK_REALTIME"
    if op & ~(0x7F | _FUTEX_PRIVATE | _FUTEX_CLOCK_REALTIME):
        name += f"|{hex(op & ~(0x7F | _FUTEX_PRIVATE | _FUTEX_CLOCK_REALTIME))}"
    out = [_ptr(a[0]), name]
    for what in _FUTEX_ARGS[cmd]:
        if what == "val":
            out.append(str(_s32(a[2])))
        elif what == "utime":
            out.append(_ptr(a[3]))
        elif what == "val2":
            out.append(str(a[3] & 0xFFFFFFFF))
        elif what == "uaddr2":
            out.append(_ptr(a[4]))
        elif what == "val3":
            out.append(str(_s32(a[5])))
        elif what == "bitset":
            b = a[5] & 0xFFFFFFFF
            out.append("FUTEX_BITSET_MATCH_ANY" if b == 0xFFFFFFFF else hex(b))
    return out


def _sp_arch_prctl(f: Formatter, ev: Event, sc) -> list[str]:
    opt = _enum(ev.args[0] & 0xFFFFFFFF, "arch_prctl")
    if opt == "ARCH_GET_CPUID":  # takes no second argument
        return [opt]
    return [opt, _ptr(ev.args[1])]


def _sp_socket(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    if len(out) > 2 and _s32(ev.args[0]) in (_AF_INET, _AF_INET6):
        out[2] = _enum(ev.args[2] & 0xFFFFFFFF, "ipproto")  # 0 is IPPROTO_IP there
    return out


def _sp_rseq(f: Formatter, ev: Event, sc) -> list[str]:
    a = ev.args  # strace prints rseq_len and the signature in hex
    return [_ptr(a[0]), hex(a[1] & 0xFFFFFFFF), str(_s32(a[2])), hex(a[3] & 0xFFFFFFFF)]


def _sp_getrandom(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    p = ev.payloads.get(0)
    if p is not None:  # random bytes: strace prints them in hex
        out[0] = quote(p.data, f.opts.strsize, 2, p.truncated)
    return out


def _sp_getdents(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    p = ev.payloads.get(1)
    if ev.ret >= 0 and (p is not None or ev.ret == 0):
        n, off, data = 0, 0, p.data if p is not None else b""
        while off + 19 <= len(data):  # struct linux_dirent64: d_reclen (u16) at offset 16
            rl = struct.unpack_from("<H", data, off + 16)[0]
            if rl < 19:
                break
            n += 1
            off += rl
        more = "+" if p is not None and p.truncated else ""
        out[1] = f"{_ptr(ev.args[1])} /* {n}{more} entries */"
    return out


def _sp_statx(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    fl = ev.args[2] & 0xFFFFFFFF
    if not fl & 0x6000:  # AT_STATX_SYNC_TYPE == 0: the default, named by strace
        rest = format_flags(fl, "at")
        out[2] = "AT_STATX_SYNC_AS_STAT" + ("" if rest == "0" else "|" + rest)
    return out


#: fcntl(2) commands that take no third argument (strace prints two).
_FCNTL_NOARG = frozenset({"F_GETFD", "F_GETFL", "F_GETOWN", "F_GETSIG", "F_GETLEASE",
                          "F_GETPIPE_SZ", "F_GET_SEALS"})


def _sp_fcntl(f: Formatter, ev: Event, sc) -> list[str]:
    cmd = _enum(ev.args[1] & 0xFFFFFFFF, "fcntl")
    out = [f._arg(ev, sc, 0, sc.args[0]), cmd]
    v = ev.args[2]
    if cmd in _FCNTL_NOARG:
        return out
    if cmd == "F_SETFD":
        out.append(format_flags(v & 0xFFFFFFFF, "fd_flags"))
    elif cmd == "F_SETFL":
        out.append(format_flags(v & 0xFFFFFFFF, "open", True))
    elif cmd in ("F_DUPFD", "F_DUPFD_CLOEXEC", "F_SETOWN", "F_SETSIG", "F_SETPIPE_SZ"):
        out.append(str(_s32(v)))
    else:
        out.append(_request_arg(ev, cmd, 2) or _ptr(v))
    return out


def _ret_fcntl(ev: Event) -> str | None:
    """fcntl's decoded results: ``0x1 (flags FD_CLOEXEC)``, ``0x8002 (flags O_RDWR|O_LARGEFILE)``."""
    cmd = _enum(ev.args[1] & 0xFFFFFFFF, "fcntl")
    if ev.ret <= 0 or cmd not in ("F_GETFD", "F_GETFL"):
        return None
    names = format_flags(ev.ret, "fd_flags") if cmd == "F_GETFD" else format_flags(ev.ret, "open", True)
    return f"{hex(ev.ret)} (flags {names})"


def _sp_ioctl(f: Formatter, ev: Event, sc) -> list[str] | None:
    req = _enum(ev.args[1] & 0xFFFFFFFF, "ioctl")
    if req in ("FIOCLEX", "FIONCLEX"):  # no argument
        return [f._arg(ev, sc, 0, sc.args[0]), req]
    shown = _request_arg(ev, req, 2)
    if shown is None:
        return None
    return [f._arg(ev, sc, 0, sc.args[0]), req, shown]


def _sp_prctl(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    shown = _request_arg(ev, out[0], 1) if 1 in ev.payloads else None
    if shown is not None:
        out[1] = shown
    return out


def _sp_getcwd(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    p = ev.payloads.get(0)
    if p is not None:  # a path: whole, without its NUL
        data = p.data.split(b"\0", 1)[0]
        out[0] = quote(data, len(data), f.opts.xflag)
    return out


def _sp_clone(f: Formatter, ev: Event, sc) -> list[str]:
    a = ev.args  # x86_64 order: flags, newsp, parent_tidptr, child_tidptr, tls
    fl = a[0]
    out = [f"child_stack={_ptr(a[1])}", f"flags={_clone_flags(fl)}"]
    if fl & (0x100000 | 0x1000):  # CLONE_PARENT_SETTID | CLONE_PIDFD
        out.append(f"parent_tid={_ptr(a[2])}")
    if fl & (0x1000000 | 0x200000):  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
        out.append(f"child_tidptr={_ptr(a[3])}")
    if fl & 0x80000:  # CLONE_SETTLS
        out.append(f"tls={_ptr(a[4])}")
    return out


def _sp_clone3(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    p = ev.payloads.get(0)
    if p is not None and len(p.data) >= 8 and ev.ret > 0 \
            and struct.unpack_from("<Q", p.data)[0] & 0x100000:  # the kernel wrote parent_tid
        out[0] += f" => {{parent_tid=[{ev.ret}]}}"
    return out


def _sp_itimer(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    out[0] = _enum(ev.args[0] & 0xFFFFFFFF, "itimer")
    return out


def _sp_madvise(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    out[2] = _enum(ev.args[2] & 0xFFFFFFFF, "madvise")
    return out


_SOCKOPT_SETS = {1: "so_opt", 6: "tcp_opt"}  # SOL_SOCKET, SOL_TCP


def _sp_sockopt(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    level = ev.args[1] & 0xFFFFFFFF
    if level in _SOCKOPT_SETS:
        out[2] = _enum(ev.args[2] & 0xFFFFFFFF, _SOCKOPT_SETS[level])
    p = ev.payloads.get(3)
    if p is not None and len(p.data) == 4:  # an int option, as strace prints it
        out[3] = f"[{struct.unpack('<i', p.data)[0]}]"
    return out


def _sp_close_range(f: Formatter, ev: Event, sc) -> list[str]:
    a = ev.args  # strace prints the bounds as plain unsigned numbers, never decorated
    return [str(a[0] & 0xFFFFFFFF), str(a[1] & 0xFFFFFFFF), format_flags(a[2] & 0xFFFFFFFF, "close_range")]


_SPECIAL = {
    "futex": _sp_futex, "arch_prctl": _sp_arch_prctl, "socket": _sp_socket,
    "socketpair": _sp_socket, "rseq": _sp_rseq, "getrandom": _sp_getrandom,
    "getdents64": _sp_getdents, "statx": _sp_statx, "fcntl": _sp_fcntl, "ioctl": _sp_ioctl,
    "getcwd": _sp_getcwd, "clone": _sp_clone, "clone3": _sp_clone3, "setitimer": _sp_itimer,
    "getitimer": _sp_itimer, "madvise": _sp_madvise, "setsockopt": _sp_sockopt,
    "getsockopt": _sp_sockopt, "close_range": _sp_close_range, "prctl": _sp_prctl,
}


def _shown(rec, opts: ShowOptions) -> bool:
    """Whether ``rec`` passes the -e/--tid/--since/--until filters."""
    if isinstance(rec, Event):
        if opts.tids is not None and rec.tid not in opts.tids:
            return False
        if opts.pids is not None and rec.tgid not in opts.pids:
            return False
        if opts.syscalls is not None and rec.nr not in opts.syscalls:
            return False
        if opts.status == "successful" and not is_successful(rec):
            return False
        if opts.status == "failed" and not is_failed(rec):
            return False
        ts = rec.ts_enter
    else:
        ts = rec.ts  # exits are shown whatever -e, -z, -Z say, as strace does
    if opts.since_ns is not None and ts < opts.since_ns:
        return False
    return opts.until_ns is None or ts <= opts.until_ns


def show_lines(reader: TraceReader, opts: ShowOptions) -> Iterator[str]:
    """strace-style lines for the reader's events, in capture order.

    Raises :class:`dr.errors.TraceError` when a frame further on is corrupt
    (lines before it have been yielded).
    """
    fmt = Formatter(opts, reader.meta)
    window = opts.since_ns is not None or opts.until_ns is not None
    if fmt.fdmap is None and not window:
        # Nothing to track across hidden calls: let the reader drop other syscalls
        # undecoded. Threads are filtered here: every thread still counts for the
        # `[pid N]` prefix, and a process event of a hidden thread for its state.
        for item in reader.stream(syscalls=opts.syscalls):
            if isinstance(item, Event):
                if _shown(item, opts):
                    yield fmt.line(item)
                else:
                    fmt.feed(item)
            elif isinstance(item, ProcEvent):
                s = fmt.proc_line(item)
                if s is not None:
                    yield s
        return
    # fds opened by hidden calls must still be known; signals before the window still kill.
    for item in reader.stream():
        if isinstance(item, Event):
            if _shown(item, opts):
                yield fmt.line(item)
            else:
                fmt.feed(item)
        elif isinstance(item, ProcEvent):
            if _shown(item, opts):
                s = fmt.proc_line(item)
                if s is not None:
                    yield s
            else:
                fmt.feed(item)
        if opts.until_ns is not None and not isinstance(item, dict) and \
                getattr(item, "ts_enter", getattr(item, "ts", 0)) > opts.until_ns + 10**10:
            return  # well past the window (capture order is time order within a few ms)


def end_notices(reader: TraceReader) -> list[str]:
    """Lines for stderr after the listing: losses and a trace cut short."""
    out = []
    losses = {k: v for k, v in reader.losses.items() if v}
    cut = losses.pop("TRUNCATED", 0)  # bytes beyond the snaplen: kept short, not lost
    if cut:
        out.append(f"{plural(cut, 'payload')} longer than the snaplen "
                   f"{'was' if cut == 1 else 'were'} truncated")
    if losses:
        total = sum(losses.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(losses.items()))
        out.append(f"{total} lost during capture ({detail})")
    # Only payloads whose thread went on to another syscall lost their event.
    # A payload of a call still running when the capture stopped
    # (reader.unfinished_payloads) is the capture's boundary, not a loss.
    if reader.orphan_payloads:
        n = reader.orphan_payloads
        out.append(f"{plural(n, 'payload')} whose syscall "
                   f"{'event was' if n == 1 else 'events were'} lost")
    if reader.truncated:
        out.append(cut_short_text(reader))
    return out


def cut_short_text(reader: TraceReader) -> str:
    """Why a trace is incomplete, in words: a partial frame at the end, or no end record."""
    if reader.end < reader.size:
        return (f"trace cut short: its last {plural(reader.size - reader.end, 'byte')} are an "
                "incomplete frame; shown up to the last complete one")
    return ("trace cut short: it ends without the capture's closing record (dr capture was "
            "killed or ran out of space); everything it holds is shown")


def summary_lines(reader: TraceReader, opts: ShowOptions) -> list[str]:
    """strace ``-c``: calls, errors and time inside each syscall, as strace prints the table.

    Counts every syscall event the filters keep (-e, --tid, -p, -z/-Z, --since,
    --until), so without filters they are ``dr stats``' counts, including calls
    that never return (exit_group), which strace -c leaves out. ``seconds`` is
    the time between entry and exit (strace -c -w); sorted by it, then by name.
    Raises :class:`dr.errors.TraceError` for a corrupt frame.
    """
    calls: dict[int, list[int]] = {}  # nr -> [calls, errors, ns]
    for ev in reader.events(syscalls=opts.syscalls):
        if not _shown(ev, opts):
            continue
        row = calls.get(ev.nr)
        if row is None:
            row = calls[ev.nr] = [0, 0, 0]
        row[0] += 1
        if is_failed(ev):
            row[1] += 1
        if not ev.flags & (_NO_EXIT | _ENTRY_LOST) and ev.ts_enter and ev.ts_exit >= ev.ts_enter:
            row[2] += ev.ts_exit - ev.ts_enter
    total_ns = sum(r[2] for r in calls.values())
    rows = sorted(calls.items(), key=lambda kv: (-kv[1][2], -kv[1][0], schema.name_of(kv[0])))
    dash = "------ ----------- ----------- --------- --------- ----------------"
    out = ["% time     seconds  usecs/call     calls    errors syscall", dash]

    def line(pct: float, ns: int, n: int, errs: int, name: str) -> str:
        return (f"{pct:6.2f} {ns / 1e9:11.6f} {ns // 1000 // n if n else 0:11d} {n:9d} "
                f"{errs if errs else '':>9} {name}")

    for nr, (n, errs, ns) in rows:
        out.append(line(100.0 * ns / total_ns if total_ns else 0.0, ns, n, errs, schema.name_of(nr)))
    out.append(dash)
    out.append(line(100.0, total_ns, sum(r[0] for r in calls.values()),
                    sum(r[1] for r in calls.values()), "total"))
    return out
