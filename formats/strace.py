"""strace-style text for trace events (what ``dr show`` prints).

Every argument is decoded through the schema (:mod:`dr.schema`: argument
kinds, FLAGS/ENUMS tables); the conventions are strace's (strace(1)):

    write(1, "hello\\n", 6) = 6
    openat(AT_FDCWD, "/nope", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)
    [pid  4243] read(3, "GET / HTTP/1.1\\r\\nHost: 127.0.0.1"..., 8192) = 78

Strings are quoted and escaped as strace does and cut at ``strsize`` bytes
(``-s``, default 32) with ``...``; ``xflag`` 1 prints strings holding
non-printable bytes in hex, 2 prints every string in hex (``-x``/``-xx``).
Structures are decoded where cheap (stat, statx, timespec, timeval, sockaddr
in/in6/un, pollfd, epoll_event, fd pairs, utsname); other pointers print as
addresses. Kernel structure layouts are x86_64 and cite their uapi header.

Library use::

    opts = ShowOptions(strsize=64, timestamps=2)
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
from dr.formats.trace import Event, ProcEvent, TraceReader
from dr.schema import Kind, Rule, Sub

__all__ = ["ShowOptions", "Formatter", "show_lines", "end_notices", "parse_trace_expr",
           "quote", "format_flags"]

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


@dataclass(slots=True)
class ShowOptions:
    """What ``dr show`` prints.

    strsize     bytes of each string shown before ``...`` (strace -s)
    xflag       0: escapes; 1: hex for non-printable strings; 2: all hex (-x, -xx)
    timestamps  0 none; 1 HH:MM:SS; 2 with microseconds; 3 epoch seconds (-t, -tt, -ttt)
    relative    prefix the time since the previous shown syscall (strace -r)
    tids        only these tids (None: all)
    syscalls    only these syscall numbers (None: all)
    """

    strsize: int = 32
    xflag: int = 0
    timestamps: int = 0
    relative: bool = False
    tids: frozenset[int] | None = None
    syscalls: frozenset[int] | None = None


def parse_trace_expr(exprs: Iterable[str]) -> frozenset[int] | None:
    """Parse strace ``-e`` expressions (``trace=read,write``, ``read``, ``trace=!close``).

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
    """Bit flags by name (``O_RDWR|O_CREAT``); unknown bits in hex; 0 as ``0``.

    ``accmode``: the value is open(2) flags, whose low two bits are the access
    mode (O_RDONLY is 0 and is printed).
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
    # Multi-bit values (O_SYNC includes O_DSYNC) are matched first.
    for bit, name in sorted(table.items(), key=lambda kv: -bin(kv[0]).count("1")):
        if bit and rest & bit == bit:
            parts.append(name)
            rest &= ~bit
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
    _mask, _bs, _attr, _nlink, _uid, _gid, mode, _ino, size = _STATX.unpack_from(b)
    return f"{{stx_mode={_mode(mode)}, stx_size={size}, ...}}"


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


def _dec_rlimit(b: bytes) -> str | None:
    if len(b) < 16:  # linux/resource.h struct rlimit64
        return None
    cur, mx = struct.unpack_from("<QQ", b)
    inf = (1 << 64) - 1
    return (f"{{rlim_cur={'RLIM64_INFINITY' if cur == inf else cur}, "
            f"rlim_max={'RLIM64_INFINITY' if mx == inf else mx}}}")


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


def _dec_pollfds(b: bytes, revents: bool) -> str:
    out = []
    for i in range(0, len(b) - _POLLFD.size + 1, _POLLFD.size):
        fd, ev, rev = _POLLFD.unpack_from(b, i)
        if revents:
            if rev:
                out.append(f"{{fd={fd}, revents={format_flags(rev & 0xFFFF, 'poll')}}}")
        else:
            out.append(f"{{fd={fd}, events={format_flags(ev & 0xFFFF, 'poll')}}}")
    return "[" + ", ".join(out) + "]"


def _dec_epoll(b: bytes) -> str:
    out = []
    for i in range(0, len(b) - _EPOLL.size + 1, _EPOLL.size):
        ev, data = _EPOLL.unpack_from(b, i)
        out.append(f"{{events={format_flags(ev, 'epoll_events')}, "
                   f"data={{u32={data & 0xFFFFFFFF}, u64={data}}}}}")
    return "[" + ", ".join(out) + "]"


_STRUCTS = {
    "stat": _dec_stat, "statx": _dec_statx, "timespec": _dec_timespec,
    "timeval": _dec_timeval, "int": _dec_int, "uint": _dec_uint, "socklen": _dec_uint,
    "loff_t": _dec_i64, "time_t": _dec_i64, "fd_pair": _dec_fd_pair, "utsname": _dec_utsname, "rlimit": _dec_rlimit,
}


# --------------------------------------------------------------------------- events


class Formatter:
    """Turns events into strace-style lines; keeps the state strace keeps.

    ``meta``: the trace metadata (clock offsets for ``-t``, tids for the
    ``[pid N]`` prefix).
    """

    def __init__(self, opts: ShowOptions, meta: dict | None = None) -> None:
        self.opts = opts
        meta = meta or {}
        clocks = meta.get("clock_offsets") or meta.get("clock") or {}
        off = clocks.get("realtime_ns") if isinstance(clocks, dict) else None
        self.realtime_ns = off if isinstance(off, int) else None
        # `[pid N]` prefixes: never when one tid is selected; from the start when
        # the target had several threads at capture start; else, as strace -f
        # does, from the second thread seen on.
        self.multi = opts.tids is None or len(opts.tids) > 1
        tids = meta.get("tids")
        self.prefix = self.multi and isinstance(tids, list) and len(tids) > 1
        self.seen: set[int] = set()
        self.last_ts: int | None = None

    # -- line prefix

    def _head(self, tid: int, ts: int) -> str:
        if not self.prefix and self.multi:
            self.seen.add(tid)
            self.prefix = len(self.seen) > 1
        h = f"[pid {tid:5d}] " if self.prefix else ""
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
        """strace's ``+++ exited with N +++`` / ``--- SIGX ---`` lines; None for fork/exec."""
        if self.opts.tids is not None and pe.tid not in self.opts.tids:
            return None
        if pe.kind == "EXIT":  # arg0: exit code, or -1 when the task died inside a call
            code = pe.arg0 if pe.arg0 >= 0 else "?"
            return f"{self._head(pe.tid, pe.ts)}+++ exited with {code} +++"
        if pe.kind == "SIGNAL":
            return f"{self._head(pe.tid, pe.ts)}--- {_sig(pe.arg0)} ---"
        return None

    # -- syscalls

    def line(self, ev: Event) -> str:
        """One syscall as ``name(args) = ret``."""
        head = self._head(ev.tid, ev.ts_enter)
        sc = schema.by_nr(ev.nr)
        if ev.flags & _ENTRY_LOST:
            args = "<arguments unknown>"
        elif sc is None:
            args = ", ".join(hex(a) for a in ev.args)
        else:
            args = ", ".join(self._args(ev, sc))
        name = sc.name if sc else f"syscall_{ev.nr}"
        return f"{head}{name}({args}) = {self._ret(ev, sc)}"

    def _ret(self, ev: Event, sc) -> str:
        if ev.flags & _NO_EXIT or (sc is not None and sc.ret == "none"):
            return "?"
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
        out = []
        args = ev.args
        skip_mode = False
        if sc.name in ("open", "openat"):
            fl = args[1 if sc.name == "open" else 2]
            creat = 0
            for n in ("O_CREAT", "O_TMPFILE"):
                creat |= _OPEN_NAMES.get(n, 0)
            skip_mode = not fl & creat
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
            return str(_s64(v))
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
            return "AT_FDCWD" if f == _AT_FDCWD and "dfd" in a.name else str(f)
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
            data = p.data.split(b"\0", 1)[0]
            return quote(data, o.strsize, o.xflag, p.truncated)
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
                return self._struct(a.ctype, p.data, v, a)
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
                parts.append(f"msg_name={decode_sockaddr(name.data, o.strsize)}")
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
            return decode_sockaddr(p.data, o.strsize)
        if k == Kind.INOUT:
            entry = ev.payloads.get(i | Sub.ENTRY << 4)
            if a.ctype == "pollfd":
                b = entry.data if entry is not None else (p.data if p is not None else None)
                return _dec_pollfds(b, False) if b is not None else _ptr(v)
            dec = _STRUCTS.get(a.ctype)
            before = dec(entry.data) if dec and entry is not None else None
            after = dec(p.data) if dec and p is not None else None
            if before and after and before != after:
                if before.startswith("[") and after.startswith("["):
                    return f"[{before[1:-1]} => {after[1:-1]}]"
                return f"{before} => {after}"
            return before or after or _ptr(v)
        return _ptr(v)

    def _struct(self, ctype: str, data: bytes, v: int, a) -> str:
        if ctype == "epoll_event":
            return _dec_epoll(data)
        if ctype == "sockaddr":
            return decode_sockaddr(data, self.opts.strsize)
        dec = _STRUCTS.get(ctype)
        s = dec(data) if dec else None
        return s if s is not None else _ptr(v)


def show_lines(reader: TraceReader, opts: ShowOptions) -> Iterator[str]:
    """strace-style lines for the reader's events, in capture order.

    Raises :class:`dr.errors.TraceError` when a frame further on is corrupt
    (lines before it have been yielded).
    """
    fmt = Formatter(opts, reader.meta)
    for item in reader.stream(tids=opts.tids, syscalls=opts.syscalls):
        if isinstance(item, Event):
            yield fmt.line(item)
        elif isinstance(item, ProcEvent):
            s = fmt.proc_line(item)
            if s is not None:
                yield s


def end_notices(reader: TraceReader) -> list[str]:
    """Lines for stderr after the listing: losses and a trace cut short."""
    out = []
    losses = {k: v for k, v in reader.losses.items() if v}
    cut = losses.pop("TRUNCATED", 0)  # bytes beyond the snaplen: kept short, not lost
    if cut:
        out.append(f"{cut} payloads longer than the snaplen were truncated")
    if losses:
        total = sum(losses.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(losses.items()))
        out.append(f"{total} lost during capture ({detail})")
    if reader.orphan_payloads:
        out.append(f"{reader.orphan_payloads} payloads without their syscall event")
    if reader.truncated:
        out.append(f"trace cut short at byte {reader.end} of {reader.size}: "
                   "shown up to its last complete frame")
    return out
