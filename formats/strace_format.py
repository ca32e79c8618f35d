"""The line formatter of ``dr show``: :class:`ShowOptions` and :class:`Formatter`.

A :class:`Formatter` turns syscall and process events into strace's lines,
keeping strace's state (fds for ``-y``, fatal signals, thread prefixes); the
per-syscall argument layouts strace uses are here too. Values are decoded by
:mod:`dr.formats.strace_decode`; listing a whole trace is :mod:`dr.formats.strace`.
"""

from __future__ import annotations

import errno as _errno
import os
import signal as _signal
import struct
import time
from dataclasses import dataclass

from dr import schema
from dr.formats.strace_calls import SPECIAL as _SPECIAL
from dr.formats.strace_calls import _ret_fcntl
from dr.formats.strace_decode import STRUCTS as _STRUCTS
from dr.formats.strace_decode import (
    _dec_epoll,
    _dec_pollfds,
    _enum,
    _ptr,
    _sig,
    decode_sockaddr,
    format_flags,
    quote,
)
from dr.formats.trace import ClockRead, Event, ProcEvent
from dr.schema import Kind, Rule, Sub
from dr.schema import s32 as _s32
from dr.schema import s64 as _s64
from dr.schema.classes import TRACE_CLASSES

_NR_CLOCK_GETTIME = schema.by_name("clock_gettime").nr

__all__ = ["ShowOptions", "Formatter", "is_failed", "is_successful"]

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
_NR_EXIT_GROUP = schema.by_name("exit_group").nr
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
    index       start each syscall line with its position in the trace, ``#412 ``
                (from 0; the number replay's divergences and jsonl's ``index`` use)
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
    index: bool = False


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

    def clock_line(self, cr: ClockRead) -> str | None:
        """A clock value read through the vDSO, recorded by a uprobe in attach mode
        (strace shows nothing for those: no syscall), as the call that read it."""
        o = self.opts
        if (o.tids is not None and cr.tid not in o.tids) or (o.pids is not None and cr.tgid not in o.pids):
            return None
        if o.syscalls is not None and _NR_CLOCK_GETTIME not in o.syscalls:
            return None
        # -z/-Z as for a call: a read returned 0 (or a Go time.now(), which cannot fail)
        # or -1; any other value is not known to be either, as a call that never returned.
        ok = cr.kind == "GO_TIME_NOW" or cr.ret == 0
        if (o.status == "successful" and not ok) or \
                (o.status == "failed" and (ok or cr.ret != -1)):
            return None
        head = self._head(cr.tid, cr.ts)
        if cr.kind == "GO_TIME_NOW":
            mono = f", mono={cr.mono}" if cr.mono else ""
            return (head + f"time.now() = {{sec={cr.sec}, nsec={cr.nsec}{mono}}} "
                    "/* vDSO, seen by a uprobe on the Go runtime */")
        name = schema.ENUMS.get("clock", {}).get(cr.clockid, str(cr.clockid))
        val = f"{{tv_sec={cr.sec}, tv_nsec={cr.nsec}}}" if cr.ret == 0 else "<unknown>"
        return head + f"clock_gettime({name}, {val}) = {cr.ret if cr.ret in (0, -1) else '?'} " \
            "/* vDSO, seen by a uprobe on libc */"

    # -- syscalls

    def line(self, ev: Event) -> str:
        """One syscall as ``name(args) = ret``."""
        head = self._head(ev.tid, ev.ts_enter)
        if self.opts.index:
            head = f"#{ev.index} " + head
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
        """strace's ``= 1 ([{fd=3, revents=POLLIN}])`` for poll-like calls; the bytes
        sendfile/splice/tee/copy_file_range moved, when capture read them from the
        source file: ``= 5 (moved "hello")``."""
        if sc is None:
            return ""
        for slot, p in ev.payloads.items():
            if slot >> 4 == Sub.MOVED:
                return f" (moved {quote(p.data, self.opts.strsize, self.opts.xflag, p.truncated)})"
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
        text = dec(data) if dec else None
        return text if text is not None else _ptr(v)
