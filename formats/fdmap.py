"""What each fd of a traced process refers to, over the course of a trace.

:class:`FdMap` replays the fd-changing syscalls of a trace (open/openat,
socket, connect, accept, bind, getsockname/getpeername, dup*, fcntl(F_DUPFD),
close, close_range, pipe, socketpair, execve's close-on-exec, fork) on a model
of each process's fd table, seeded from the metadata's fd snapshot. The table
maps an fd to an :class:`OpenFile`, one per open file description: dup'd fds
and fds inherited over fork share the same object, as in the kernel. Used by
``dr stats`` (bytes per fd and per connection), ``dr export pcap`` (connection
endpoints) and ``dr show -yy`` (strace's fd decoding).

Use it in capture order, looking up *before* applying each event::

    fdm = FdMap(reader.meta)
    for rec in reader.stream():
        if isinstance(rec, Event):
            f = fdm.lookup(rec.tgid, fd)        # state before the call
            text = fdm.describe(rec.tgid, fd)   # "3</etc/hosts>" style text, or ""
        fdm.apply(rec)                          # Event, ProcEvent or dict (ignored)

:func:`dr.formats.transfers.transfers` says which bytes an event moved across which fd
(re-exported here, with the address model of :mod:`dr.formats.sockaddr`).

Layouts: struct sockaddr_in / sockaddr_in6 / sockaddr_un (include/uapi/linux/in.h,
in6.h, un.h; ip(7), ipv6(7), unix(7)); struct mmsghdr (recvmmsg(2)).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable

from dr import schema
from dr.formats.sockaddr import SockAddr, parse_addr_text, parse_sockaddr
from dr.formats.transfers import Transfer, transfers
from dr.schema import s32 as _s32

__all__ = ["SockAddr", "OpenFile", "FdMap", "Transfer", "transfers", "parse_sockaddr",
           "parse_addr_text", "sock_label", "handled_syscalls"]

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET = 1, 2, 5
_SOCK_TYPE_MASK = 0xF
O_CLOEXEC = 0o2000000
AT_FDCWD = -100
F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030
CLOSE_RANGE_CLOEXEC = 4
EINTR, EINPROGRESS = 4, 115


def _cstr(b: bytes | None) -> str | None:
    if b is None:
        return None
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- open files


@dataclass(eq=False, slots=True)
class OpenFile:
    """One open file description (shared by dup'd and inherited fds).

    ``kind``: "file", "dir", "socket", "pipe", "eventfd", "epoll", "timerfd",
    "signalfd", "inotify", "memfd", "pidfd", "tty", "anon" or "unknown" (an fd
    the trace used before anything said what it is). ``id`` is unique within
    one :class:`FdMap`, in order of first appearance. Sockets carry ``family``
    (AF_*), ``sock_type`` (SOCK_STREAM, ...), ``local`` and ``peer``
    (:class:`SockAddr`, None when unknown), ``listening``, ``accepted``
    (created by accept) and ``shut_wr``/``shut_rd``. ``created_ns`` /
    ``closed_ns`` are CLOCK_MONOTONIC ns (None when outside the trace);
    ``origin`` names what created it ("openat", "accept4", "meta", ...).
    """

    id: int
    kind: str
    path: str | None = None
    family: int | None = None
    sock_type: int | None = None
    local: SockAddr | None = None
    peer: SockAddr | None = None
    listening: bool = False
    accepted: bool = False
    shut_rd: bool = False
    shut_wr: bool = False
    origin: str = ""
    created_ns: int | None = None
    closed_ns: int | None = None
    refs: int = 0
    fds: set[tuple[int, int]] = field(default_factory=set)  # every (tgid, fd) it was seen as

    @property
    def is_socket(self) -> bool:
        return self.kind == "socket"

    @property
    def proto(self) -> str:
        """"TCP", "UDP", "UNIX-STREAM", "UNIX-DGRAM", "UNIX-SEQPACKET", or "" for non-sockets."""
        if not self.is_socket:
            return ""
        fam = self.family or (self.local or self.peer or SockAddr(0)).family
        st = self.sock_type
        if fam in (AF_INET, AF_INET6):
            v6 = "v6" if fam == AF_INET6 else ""
            return ("UDP" if st == SOCK_DGRAM else "TCP") + v6
        if fam == AF_UNIX:
            return {SOCK_DGRAM: "UNIX-DGRAM", SOCK_SEQPACKET: "UNIX-SEQPACKET"}.get(st or 1, "UNIX-STREAM")
        return "SOCKET"

    def label(self) -> str:
        """strace ``-yy`` text for this file: a path, ``TCP:[a:p->b:q]``, ``pipe:[N]``, ..."""
        if self.is_socket:
            return sock_label(self)
        if self.kind == "pipe":
            p = self.path or str(self.id)
            return p if p.startswith("pipe:") else f"pipe:[{p}]"
        if self.path:
            return self.path
        if self.kind in ("eventfd", "epoll", "timerfd", "signalfd", "inotify", "pidfd"):
            return f"anon_inode:[{self.kind}]"
        return ""


def sock_label(f: OpenFile) -> str:
    """``TCP:[127.0.0.1:41234->127.0.0.1:8000]`` (strace -yy), ``UNIX-STREAM:[/run/x]``."""
    proto = f.proto
    if f.family == AF_UNIX or proto.startswith("UNIX"):
        a = (f.local.path if f.local else "") or (f.peer.path if f.peer else "")
        if not a and f.path and f.path.startswith(("/", "@")):
            a = f.path
        return f"{proto}:[{a}]"
    loc = str(f.local) if f.local else ""
    if f.peer:
        return f"{proto}:[{loc}->{f.peer}]"
    return f"{proto}:[{loc}]"


# --------------------------------------------------------------------------- the map


class FdMap:
    """The fd tables of every traced process, updated event by event.

    ``meta`` is the trace metadata; its ``fds`` snapshot (``[{fd, type, path,
    local, peer, state, ...}]``) seeds the table of ``meta["pid"]``, each
    ``procs`` entry's ``fds`` that of its ``pid``. Threads
    share their process's table (keyed by tgid); a fork copies it (the copies
    share :class:`OpenFile` objects). All methods are total: odd or missing
    data leaves the table as it was, never raises.
    """

    def __init__(self, meta: dict[str, Any] | None = None) -> None:
        self._next = itertools.count(1)
        self._pipe_no = itertools.count(1)
        self.tables: dict[int, dict[int, OpenFile]] = {}
        self._cloexec: dict[int, set[int]] = {}
        self._cwd: dict[int, str] = {}
        self.files: list[OpenFile] = []  # every OpenFile ever made, in order of id
        meta = meta or {}
        pid = meta.get("pid")
        self._cwd_default = meta.get("cwd") if isinstance(meta.get("cwd"), str) else None
        if isinstance(pid, int):
            self._seed(pid, meta.get("fds"))
        procs = meta.get("procs")
        for p in procs if isinstance(procs, list) else ():
            # attach mode: each descendant attached at start has its own snapshot
            if isinstance(p, dict) and isinstance(p.get("pid"), int) and p["pid"] != pid:
                self._seed(p["pid"], p.get("fds"))

    # -- queries

    def lookup(self, tgid: int, fd: int) -> OpenFile | None:
        """The open file behind ``fd`` of process ``tgid`` now, or None when unknown."""
        t = self.tables.get(tgid)
        return t.get(fd) if t else None

    def get(self, tgid: int, fd: int, ts: int | None = None) -> OpenFile:
        """Like :meth:`lookup`, but makes an ``unknown`` entry for an fd never seen
        (attach mode: opened before the capture), so later events share it."""
        f = self.lookup(tgid, fd)
        if f is None:
            f = self._new("unknown", origin="before trace")
            self._install(tgid, fd, f)
        return f

    def describe(self, tgid: int, fd: int) -> str:
        """strace ``-yy`` text for ``fd`` ("" when unknown): ``/etc/hosts``,
        ``TCP:[127.0.0.1:41234->127.0.0.1:8000]``, ``pipe:[3]``."""
        f = self.lookup(tgid, fd)
        return f.label() if f else ""

    def cwd(self, tgid: int) -> str | None:
        return self._cwd.get(tgid, self._cwd_default)

    # -- updates

    def apply(self, rec: Any) -> None:
        """Update the tables with one record of the trace (Event, ProcEvent; dicts ignored)."""
        what = getattr(rec, "what", None)
        if what is not None:
            if what == schema.PROC_EVENTS["FORK"]:
                self._fork(rec.tgid, int(rec.arg1) or int(rec.arg0))
            return
        if not hasattr(rec, "nr"):
            return
        handler = _handler(rec.nr)
        if handler is not None:
            try:
                handler(self, rec)
            except (struct.error, ValueError, TypeError, IndexError):
                pass  # odd payloads of a hostile or damaged trace: leave the table as it was

    def feed(self, records: Iterable[Any]) -> None:
        for r in records:
            self.apply(r)

    # -- internals

    def _new(self, kind: str, *, origin: str, ts: int | None = None, **kw: Any) -> OpenFile:
        f = OpenFile(next(self._next), kind, origin=origin, created_ns=ts, **kw)
        self.files.append(f)
        return f

    def _table(self, tgid: int) -> dict[int, OpenFile]:
        t = self.tables.get(tgid)
        if t is None:
            t = self.tables[tgid] = {}
        return t

    def _install(self, tgid: int, fd: int, f: OpenFile, cloexec: bool = False,
                 ts: int | None = None) -> None:
        if fd < 0:
            return
        self._close(tgid, fd, ts)
        self._table(tgid)[fd] = f
        f.refs += 1
        f.fds.add((tgid, fd))
        ce = self._cloexec.setdefault(tgid, set())
        if cloexec:
            ce.add(fd)
        else:
            ce.discard(fd)

    def _close(self, tgid: int, fd: int, ts: int | None) -> None:
        t = self.tables.get(tgid)
        f = t.pop(fd, None) if t else None
        self._cloexec.get(tgid, set()).discard(fd)
        if f is not None:
            f.refs -= 1
            if f.refs <= 0 and ts is not None:
                f.closed_ns = ts

    def _fork(self, parent: int, child: int) -> None:
        if child == parent or child in self.tables or parent not in self.tables:
            return
        t = dict(self.tables[parent])
        self.tables[child] = t
        for fd, f in t.items():
            f.refs += 1
            f.fds.add((child, fd))
        self._cloexec[child] = set(self._cloexec.get(parent, ()))
        if parent in self._cwd:
            self._cwd[child] = self._cwd[parent]

    def _seed(self, pid: int, fds: Any) -> None:
        if not isinstance(fds, list):
            return
        for e in fds:
            if not isinstance(e, dict) or not isinstance(e.get("fd"), int):
                continue
            typ = str(e.get("type") or "unknown")
            kind = {"file": "file", "reg": "file", "dir": "dir", "socket": "socket", "sock": "socket",
                    "pipe": "pipe", "fifo": "pipe", "chr": "tty", "tty": "tty",
                    "anon": "anon", "anon_inode": "anon"}.get(typ, typ)
            path = e.get("path") if isinstance(e.get("path"), str) else None
            f = self._new(kind, origin="meta", path=path)
            if kind == "socket":
                f.local = parse_addr_text(e.get("local"))
                f.peer = parse_addr_text(e.get("peer"))
                if f.peer is not None and f.peer.unspecified and not f.peer.port:
                    f.peer = None  # /proc/net/tcp shows 0.0.0.0:0 for "no peer"
                fam = e.get("family")
                f.family = (fam if isinstance(fam, int) else
                            {"inet": AF_INET, "inet6": AF_INET6, "unix": AF_UNIX,
                             "AF_INET": AF_INET, "AF_INET6": AF_INET6, "AF_UNIX": AF_UNIX}.get(str(fam))
                            or (f.local or f.peer or SockAddr(0)).family or None)
                st = e.get("sock_type", e.get("proto"))
                if isinstance(st, int):
                    f.sock_type = st
                elif isinstance(st, str):
                    f.sock_type = SOCK_DGRAM if st.lower() in ("udp", "udp6", "dgram") else SOCK_STREAM
                else:
                    f.sock_type = SOCK_STREAM
                f.listening = str(e.get("state", "")).upper() in ("LISTEN", "LISTENING")
                if f.family is None and (e.get("proto") == "unix" or (path or "").startswith(("/", "@"))):
                    f.family = AF_UNIX
            self._install(pid, e["fd"], f)

    def _resolve(self, tgid: int, dfd: int, path: str) -> str:
        if path.startswith("/"):
            return path
        base = None
        if dfd == AT_FDCWD:
            base = self.cwd(tgid)
        else:
            f = self.lookup(tgid, dfd)
            base = f.path if f and f.path and f.path.startswith("/") else None
        return os.path.normpath(os.path.join(base, path)) if base else path


def _ok(ev: Any) -> bool:
    return ev.ret >= 0 and not (ev.flags & schema.EVENT_FLAGS["NO_EXIT"])


def _cloexec(ev: Any) -> bool:
    """Whether the fd ``ev`` made is close-on-exec, where the schema says the flag lives."""
    sc = schema.by_nr(ev.nr)
    if sc is None:
        return False
    arg = sc.beh.cloexec[0]
    return schema.cloexec_of(sc, ev.args, ev.payload(arg) if arg >= 0 else None)


def _open_like(m: FdMap, ev: Any, path_arg: int, dfd_arg: int | None, flags: int | None) -> None:
    if not _ok(ev):
        return
    path = _cstr(ev.payload(path_arg)) or ""
    if dfd_arg is not None:
        path = m._resolve(ev.tgid, _s32(ev.args[dfd_arg]), path) if path else path
    elif path:
        path = m._resolve(ev.tgid, AT_FDCWD, path)
    kind = "dir" if flags is not None and flags & 0o200000 else "file"
    if path.startswith("/dev/pts/") or path in ("/dev/tty", "/dev/console"):
        kind = "tty"
    f = m._new(kind, origin=ev.name, ts=ev.ts_exit, path=path or None)
    m._install(ev.tgid, _s32(ev.ret), f, _cloexec(ev), ev.ts_exit)


def _h_open(m: FdMap, ev: Any) -> None:
    _open_like(m, ev, 0, None, ev.args[1])


def _h_creat(m: FdMap, ev: Any) -> None:
    _open_like(m, ev, 0, None, 0)


def _h_openat(m: FdMap, ev: Any) -> None:
    _open_like(m, ev, 1, 0, ev.args[2])


def _h_openat2(m: FdMap, ev: Any) -> None:
    how = ev.payload(2)
    flags = struct.unpack_from("<Q", how)[0] if how and len(how) >= 8 else 0
    _open_like(m, ev, 1, 0, flags)


def _h_socket(m: FdMap, ev: Any) -> None:
    if not _ok(ev):
        return
    typ = ev.args[1]
    f = m._new("socket", origin=ev.name, ts=ev.ts_exit, family=_s32(ev.args[0]),
               sock_type=typ & _SOCK_TYPE_MASK)
    m._install(ev.tgid, _s32(ev.ret), f, _cloexec(ev), ev.ts_exit)


def _h_pair(m: FdMap, ev: Any) -> None:
    """pipe, pipe2, socketpair (FdEffect.PAIR): two fds written into the out-argument."""
    sc = schema.by_nr(ev.nr)
    out = next((i for i, a in enumerate(sc.args) if a.kind == schema.Kind.BUF_OUT), None) if sc else None
    raw = ev.payload(out) if out is not None else None
    if sc is None or not _ok(ev) or not raw or len(raw) < 8:
        return
    kind, cloexec = sc.beh.fd_kind, _cloexec(ev)
    a, b = struct.unpack_from("<ii", raw)
    if kind == "pipe":
        no = next(m._pipe_no)
        fa = m._new("pipe", origin=ev.name, ts=ev.ts_exit, path=str(no))
        fb = m._new("pipe", origin=ev.name, ts=ev.ts_exit, path=str(no))
    else:
        fam, st = _s32(ev.args[0]), ev.args[1] & _SOCK_TYPE_MASK
        fa = m._new("socket", origin=ev.name, ts=ev.ts_exit, family=fam, sock_type=st)
        fb = m._new("socket", origin=ev.name, ts=ev.ts_exit, family=fam, sock_type=st)
        if fam == AF_UNIX:
            fa.local = fa.peer = fb.local = fb.peer = SockAddr(AF_UNIX)
    m._install(ev.tgid, a, fa, cloexec, ev.ts_exit)
    m._install(ev.tgid, b, fb, cloexec, ev.ts_exit)


def _sock(m: FdMap, ev: Any, fd: int) -> OpenFile:
    f = m.get(ev.tgid, fd)
    if f.kind == "unknown":
        f.kind = "socket"
    return f


def _fill_family(f: OpenFile, a: SockAddr) -> None:
    if f.family is None:
        f.family = a.family
    if f.sock_type is None and a.is_inet:
        f.sock_type = SOCK_STREAM


def _h_connect(m: FdMap, ev: Any) -> None:
    # A non-blocking connect answers EINPROGRESS and completes later: the peer is set all the same.
    if ev.ret != 0 and ev.ret != -EINPROGRESS:
        return
    a = parse_sockaddr(ev.payload(1))
    if a is None:
        return
    f = _sock(m, ev, _s32(ev.args[0]))
    _fill_family(f, a)
    if a.family == 0:  # AF_UNSPEC: dissolves a UDP association
        f.peer = None
        return
    f.peer = a
    if f.created_ns is None:
        f.created_ns = ev.ts_enter


def _h_bind(m: FdMap, ev: Any) -> None:
    if ev.ret != 0:
        return
    a = parse_sockaddr(ev.payload(1))
    if a is not None:
        f = _sock(m, ev, _s32(ev.args[0]))
        _fill_family(f, a)
        f.local = a


def _h_listen(m: FdMap, ev: Any) -> None:
    if ev.ret == 0:
        _sock(m, ev, _s32(ev.args[0])).listening = True


def _h_accept(m: FdMap, ev: Any) -> None:
    if not _ok(ev):
        return
    lst = _sock(m, ev, _s32(ev.args[0]))
    lst.listening = True
    peer = parse_sockaddr(ev.payload(1))
    f = m._new("socket", origin=ev.name, ts=ev.ts_exit, family=lst.family or (peer.family if peer else None),
               sock_type=lst.sock_type or SOCK_STREAM, peer=peer, accepted=True)
    if lst.local is not None and not lst.local.unspecified:
        f.local = lst.local
    elif lst.local is not None:
        # A wildcard listener: the connection's local address is where the peer
        # connected to. On loopback (the common case in a trace) that is the peer's
        # host; otherwise the host stays unspecified (a later getsockname tells it).
        host = lst.local.host
        if peer is not None and peer.is_inet and (ipaddress.ip_address(peer.host).is_loopback
                                                  or peer.host.startswith("::ffff:127.")):
            host = peer.host
        f.local = SockAddr(lst.local.family, host, lst.local.port)
    m._install(ev.tgid, _s32(ev.ret), f, _cloexec(ev), ev.ts_exit)


def _h_sockname(m: FdMap, ev: Any, field: str) -> None:
    """getsockname/getpeername: the address the kernel wrote names one end of the socket."""
    if ev.ret != 0:
        return
    a = parse_sockaddr(ev.payload(1))
    if a is not None:
        f = _sock(m, ev, _s32(ev.args[0]))
        _fill_family(f, a)
        setattr(f, field, a)


def _h_getsockname(m: FdMap, ev: Any) -> None:
    _h_sockname(m, ev, "local")


def _h_getpeername(m: FdMap, ev: Any) -> None:
    _h_sockname(m, ev, "peer")


def _h_shutdown(m: FdMap, ev: Any) -> None:
    if ev.ret != 0:
        return
    f = m.lookup(ev.tgid, _s32(ev.args[0]))
    if f is not None:
        how = _s32(ev.args[1])
        f.shut_rd = f.shut_rd or how in (0, 2)
        f.shut_wr = f.shut_wr or how in (1, 2)


def _h_close(m: FdMap, ev: Any) -> None:
    # close(2): the fd is released even when close reports EINTR or EIO; only EBADF keeps it.
    if ev.ret == 0 or ev.ret in (-EINTR, -5):
        m._close(ev.tgid, _s32(ev.args[0]), ev.ts_exit)


def _h_close_range(m: FdMap, ev: Any) -> None:
    if ev.ret != 0:
        return
    lo, hi, flags = ev.args[0] & 0xFFFFFFFF, ev.args[1] & 0xFFFFFFFF, ev.args[2]
    t = m.tables.get(ev.tgid, {})
    for fd in [fd for fd in t if lo <= fd <= hi]:
        if flags & CLOSE_RANGE_CLOEXEC:
            m._cloexec.setdefault(ev.tgid, set()).add(fd)
        else:
            m._close(ev.tgid, fd, ev.ts_exit)


def _h_dup(m: FdMap, ev: Any) -> None:
    """dup, dup2, dup3 (FdEffect.DUP); dup2(fd, fd) changes nothing."""
    if _ok(ev) and _s32(ev.ret) != _s32(ev.args[0]):
        m._install(ev.tgid, _s32(ev.ret), m.get(ev.tgid, _s32(ev.args[0])), _cloexec(ev), ev.ts_exit)


def _h_fcntl(m: FdMap, ev: Any) -> None:
    cmd = _s32(ev.args[1])
    if _ok(ev) and cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        m._install(ev.tgid, _s32(ev.ret), m.get(ev.tgid, _s32(ev.args[0])),
                   cmd == F_DUPFD_CLOEXEC, ev.ts_exit)
    elif ev.ret == 0 and cmd == 2:  # F_SETFD
        ce = m._cloexec.setdefault(ev.tgid, set())
        (ce.add if ev.args[2] & 1 else ce.discard)(_s32(ev.args[0]))


def _h_new(m: FdMap, ev: Any) -> None:
    """Any other call the schema says returns a new fd (FdEffect.NEW): its kind
    (eventfd, epoll, memfd, ...) and close-on-exec flag come from the schema."""
    if not _ok(ev):
        return
    sc = schema.by_nr(ev.nr)
    kind = sc.beh.fd_kind if sc is not None else "anon"
    path = f"/memfd:{_cstr(ev.payload(0)) or ''}" if kind == "memfd" else None
    m._install(ev.tgid, _s32(ev.ret), m._new(kind, origin=ev.name, ts=ev.ts_exit, path=path),
               _cloexec(ev), ev.ts_exit)


def _h_execve(m: FdMap, ev: Any) -> None:
    if ev.ret == 0:
        for fd in list(m._cloexec.get(ev.tgid, ())):
            m._close(ev.tgid, fd, ev.ts_exit)


def _h_chdir(m: FdMap, ev: Any) -> None:
    if ev.ret == 0:
        p = _cstr(ev.payload(0))
        if p:
            m._cwd[ev.tgid] = m._resolve(ev.tgid, AT_FDCWD, p)


def _h_fchdir(m: FdMap, ev: Any) -> None:
    if ev.ret == 0:
        f = m.lookup(ev.tgid, _s32(ev.args[0]))
        if f and f.path:
            m._cwd[ev.tgid] = f.path


#: Calls whose effect on the table needs more than the schema's behaviour says
#: (paths, socket addresses, the cwd), by name.
_HANDLERS = {
    "open": _h_open, "creat": _h_creat, "openat": _h_openat, "openat2": _h_openat2,
    "socket": _h_socket, "connect": _h_connect, "bind": _h_bind, "listen": _h_listen,
    "accept": _h_accept, "accept4": _h_accept,
    "getsockname": _h_getsockname, "getpeername": _h_getpeername, "shutdown": _h_shutdown,
    "chdir": _h_chdir, "fchdir": _h_fchdir,
}
#: Every other call, by its effect on the fd table (dr.schema.FdEffect).
_BY_EFFECT = {
    schema.FdEffect.NEW: _h_new, schema.FdEffect.PAIR: _h_pair, schema.FdEffect.DUP: _h_dup,
    schema.FdEffect.DUP_CMD: _h_fcntl, schema.FdEffect.CLOSE: _h_close,
    schema.FdEffect.CLOSE_RANGE: _h_close_range, schema.FdEffect.EXEC: _h_execve,
}


_BY_NR: dict[int, Any] = {}


def _handler(nr: int):
    """The fd-table handler of syscall ``nr`` (cached: this runs once per event)."""
    try:
        return _BY_NR[nr]
    except KeyError:
        sc = schema.by_nr(nr) if -1 < nr < 1 << 20 else None
        h = None if sc is None else _HANDLERS.get(sc.name) or _BY_EFFECT.get(sc.fd_effect)
        if len(_BY_NR) < 4096:  # a hostile trace's random numbers must not grow it without bound
            _BY_NR[nr] = h
        return h


def handled_syscalls() -> frozenset[int]:
    """x86_64 numbers of the calls that can change an :class:`FdMap` (the schema's fd
    effects and the calls above): a reader may feed it only these, and process events."""
    return frozenset(sc.nr for sc in schema.all_syscalls() if _handler(sc.nr) is not None)
