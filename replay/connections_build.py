"""The builder behind :func:`dr.replay.connections.reconstruct`: it follows each
process's fd table through a trace's events (accept, connect, dup, fork, close)
and turns what crossed each socket into :class:`~dr.replay.connections.Connection`
chunks. The model and its rules are described in :mod:`dr.replay.connections`."""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass, field
from typing import Any

from dr.replay.connections import IN, OUT, WAITS, Addr, Chunk, Connection, Conversations, Listener, parse_sockaddr

_READS = {"read": 1, "recvfrom": 1, "readv": 1, "recvmsg": 1, "recvmmsg": 1}
_WRITES = {"write": 1, "sendto": 1, "writev": 1, "sendmsg": 1, "sendmmsg": 1}
# Sockets only: an unknown fd used with these is a socket for sure.
_SOCKET_ONLY = {"recvfrom", "recvmsg", "recvmmsg", "sendto", "sendmsg", "sendmmsg"}
_EINPROGRESS = 115
_F_DUPFD, _F_DUPFD_CLOEXEC = 0, 1030
_SOCK_STREAM, _SOCK_DGRAM = 1, 2


@dataclass(slots=True)
class _Fd:
    family: int = 0
    type: int = 0
    local: Addr | None = None
    listening: bool = False
    conn: Connection | None = None
    dgram: dict = field(default_factory=dict)  # peer Addr -> Connection (unconnected UDP)
    since: int = 0  # ts_exit of the syscall that made this fd (0: before the capture)


def _sfd(v: int) -> int:
    """An fd argument as the kernel reads it: the low 32 bits, signed."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


class _Builder:
    def __init__(self, meta: dict) -> None:
        self.meta = meta or {}
        self.tables: dict[int, dict[int, _Fd]] = {}
        self.listeners: list[Listener] = []
        self.conns: list[Connection] = []
        self.notes: list[str] = []
        self.truncated_chunks = 0
        self.unknown_chunks = 0
        self.pid = int(self.meta.get("pid") or 0)
        self.snap: dict[int, dict] = {}
        self._seen_closed: dict[int, set[int]] = {}
        self.random: list[bytes] = []
        self.random_by_conn: dict[int, list[bytes]] = {}
        self.clock_by_conn: dict[int, list[Any]] = {}   # ClockRead records, the same way
        self._serving: dict[int, Connection] = {}  # tid -> inbound connection of its last read/write
        self._last_wait: dict[int, int] = {}  # tid -> exit time of its last readiness wait
        self.redactions: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
        self.masked_bytes = 0
        for ent in self.meta.get("fds") or []:
            try:
                self.snap[int(ent.get("fd"))] = ent
            except (TypeError, ValueError, AttributeError):
                continue
        self._snapshot_listeners()

    # -- metadata fd table

    def _snapshot_listeners(self) -> None:
        for fd, ent in sorted(self.snap.items()):
            if not _is_socket(ent):
                continue
            state = str(ent.get("state") or "").upper()
            local = Addr.parse(ent.get("local"))
            if "LISTEN" in state and local is not None:
                self._table(self.pid)[fd] = _Fd(family=_fam_int(local), type=_SOCK_STREAM,
                                                local=local, listening=True)
                self.listeners.append(Listener(local, fd, self.pid, _proto(local, ent),
                                               from_snapshot=True, ts_ns=0))

    def _from_snapshot(self, tgid: int, fd: int, syscall: str) -> _Fd | None:
        """The state of an fd open before the capture, or None when not a socket."""
        ent = self.snap.get(fd) if tgid == self.pid or not self.pid else None
        if ent is None:
            if syscall not in _SOCKET_ONLY:
                return None
            ent = {"type": "socket"}  # a socket call on an fd we never saw created
        if not _is_socket(ent):
            return None
        local, peer = Addr.parse(ent.get("local")), Addr.parse(ent.get("peer"))
        if peer is not None and peer.family != "unix" and peer.is_wildcard and not peer.port:
            peer = None  # /proc/net prints 0.0.0.0:0 for "no peer"
        proto = _proto(local or peer, ent)
        listen_ports = {(l.addr.port, l.addr.family) for l in self.listeners if l.addr.family != "unix"}
        listen_paths = {l.addr.host for l in self.listeners if l.addr.family == "unix"}
        inbound = local is not None and ((local.port, local.family) in listen_ports if local.family != "unix"
                                         else local.host in listen_paths)
        st = _Fd(family=_fam_int(local or peer), type=_SOCK_DGRAM if proto == "udp" else _SOCK_STREAM,
                 local=local)
        if proto == "udp" and peer is None:
            self._table(tgid)[fd] = st
            return st
        listener = None
        if inbound and local is not None:   # (inbound implies a local address)
            listener = next((l.addr for l in self.listeners if l.addr.port == local.port), local)
        st.conn = self._new("inbound" if inbound else ("datagram" if proto == "udp" else "outbound"),
                            proto, fd, tgid, local=local, peer=peer, listener=listener,
                            began_before_capture=True)
        self._table(tgid)[fd] = st
        return st

    # -- helpers

    def _table(self, tgid: int) -> dict[int, _Fd]:
        return self.tables.setdefault(tgid, {})

    def _new(self, kind: str, proto: str, fd: int, tgid: int, **kw: Any) -> Connection:
        c = Connection(len(self.conns) + 1, kind, proto, fd, tgid, **kw)
        self.conns.append(c)
        return c

    def _get(self, tgid: int, fd: int, syscall: str) -> _Fd | None:
        st = self._table(tgid).get(fd)
        if st is None and fd >= 0 and fd not in self._seen_closed.get(tgid, ()):
            st = self._from_snapshot(tgid, fd, syscall)
        return st

    def _close(self, tgid: int, fd: int, ts: int, entered: int | None = None) -> None:
        st = self._table(tgid).get(fd)
        if st is not None and entered is not None and st.since > entered:
            # Events are written at syscall exit: another thread's socket()/accept()
            # may reuse the fd, and exit, before this close() reaches its exit.
            # This close released the fd's previous holder, already replaced.
            return
        self._table(tgid).pop(fd, None)
        self._seen_closed.setdefault(tgid, set()).add(fd)
        if st is None:
            return
        live = {id(s.conn) for s in self._table(tgid).values() if s.conn is not None}
        if st.conn is not None and id(st.conn) not in live and st.conn.closed_ns is None:
            st.conn.closed_ns = ts
        for c in st.dgram.values():
            if c.closed_ns is None:
                c.closed_ns = ts

    def _install(self, tgid: int, fd: int, st: _Fd, ts: int) -> None:
        if fd in self._table(tgid):
            self._close(tgid, fd, ts)
        st.since = ts
        self._table(tgid)[fd] = st
        self._seen_closed.get(tgid, set()).discard(fd)

    def _chunk(self, st: _Fd, tgid: int, fd: int, ev: Any, direction: str, data: bytes,
               total: int, peer: Addr | None, eof: bool = False) -> None:
        conn = st.conn
        if conn is None:
            if peer is None:
                return
            # Unconnected datagram socket: one conversation per peer address.
            conn = st.dgram.get(peer)
            if conn is None:
                conn = st.dgram[peer] = self._new(
                    "datagram", "udp" if st.family != socket.AF_UNIX else "unix", fd, tgid,
                    local=st.local, peer=peer, opened_ns=ev.ts_exit)
        if len(data) < total:
            if ev.name == "sendfile":
                self.unknown_chunks += 1
            else:
                self.truncated_chunks += 1
        if conn.kind == "inbound":
            self._serving[ev.tid] = conn
        masked = tuple(self.redactions.get((ev.tid, getattr(ev, "seq", 0), 1), ()))
        if masked:
            self.masked_bytes += sum(n for _s, n in masked)
        woke = self._last_wait.get(ev.tid) if direction == IN else None
        conn.chunks.append(Chunk(direction, data, total, ev.ts_enter, ev.ts_exit, ev.name,
                                 ev.tid, getattr(ev, "index", -1), eof, peer, masked, woke))

    # -- events

    def clock(self, rec: Any) -> None:
        """A clock value read through the vDSO (ClockRead): kept with the inbound connection
        its thread was serving, as getrandom payloads are."""
        c = self._serving.get(rec.tid)
        if c is not None:
            self.clock_by_conn.setdefault(c.id, []).append(rec)

    def event(self, ev: Any) -> None:
        try:
            self._event(ev)
        finally:
            if ev.name in WAITS:
                self._last_wait[ev.tid] = ev.ts_exit

    def _event(self, ev: Any) -> None:
        name = ev.name
        ret = ev.ret
        tgid = ev.tgid or self.pid or ev.tid
        a = ev.args
        if name == "getrandom":
            if ret > 0:
                data = ev.payload(0)
                if data is not None and len(data) == ret:
                    self.random.append(data)
                    c = self._serving.get(ev.tid)
                    if c is not None:
                        self.random_by_conn.setdefault(c.id, []).append(data)
            return
        if name in _READS or name in _WRITES:
            if ret < 0:
                return
            fd = _sfd(a[0])
            st = self._get(tgid, fd, name)
            if st is None:
                return
            data = ev.payload(1) or b""
            peer = None
            if name == "recvfrom":
                peer = parse_sockaddr(ev.payload(4))
            elif name == "sendto":
                peer = parse_sockaddr(ev.payload(4))
            elif name in ("recvmsg", "sendmsg"):
                peer = parse_sockaddr(ev.payload(1, 1))
            if st.conn is not None:
                peer = None if st.conn.proto != "udp" else peer
            if name in _READS:
                if ret == 0:
                    if st.conn is not None and st.type != _SOCK_DGRAM:
                        self._chunk(st, tgid, fd, ev, IN, b"", 0, None, eof=True)
                    return
                self._chunk(st, tgid, fd, ev, IN, data[:ret], ret, peer)
            else:
                if ret == 0:
                    return
                self._chunk(st, tgid, fd, ev, OUT, data[:ret], ret, peer)
        elif name == "sendfile":
            if ret <= 0:
                return
            fd = _sfd(a[0])
            st = self._get(tgid, fd, name)
            if st is not None:
                self._chunk(st, tgid, fd, ev, OUT, b"", ret, None)
        elif name == "socket":
            if ret >= 0:
                self._install(tgid, ret, _Fd(family=int(a[0]) & 0xFFFF, type=int(a[1]) & 0xF), ev.ts_exit)
        elif name == "bind":
            if ret == 0:
                st = self._get(tgid, _sfd(a[0]), name)
                if st is not None:
                    st.local = parse_sockaddr(ev.payload(1)) or st.local
        elif name == "listen":
            if ret == 0:
                fd = _sfd(a[0])
                st = self._get(tgid, fd, name)
                if st is not None and not st.listening and st.local is not None:
                    st.listening = True
                    self.listeners.append(Listener(st.local, fd, tgid,
                                                   "unix" if st.family == socket.AF_UNIX else "tcp",
                                                   ts_ns=ev.ts_exit))
        elif name in ("accept", "accept4"):
            if ret < 0:
                return
            lfd = _sfd(a[0])
            lst = self._get(tgid, lfd, name)
            listener = lst.local if lst is not None else None
            if listener is None:
                ent = self.snap.get(lfd)
                listener = Addr.parse(ent.get("local")) if ent else None
            peer = parse_sockaddr(ev.payload(1))
            fam = lst.family if lst is not None else socket.AF_INET
            proto = "unix" if fam == socket.AF_UNIX else "tcp"
            local = listener
            if listener is not None and listener.is_wildcard and peer is not None and peer.family == listener.family:
                local = Addr(listener.family, peer.host, listener.port)  # a loopback peer talks to loopback
            st = _Fd(family=fam, type=_SOCK_STREAM, local=local)
            st.conn = self._new("inbound", proto, ret, tgid, local=local, peer=peer,
                                listener=listener, opened_ns=ev.ts_exit)
            self._install(tgid, ret, st, ev.ts_exit)
        elif name == "connect":
            if ret != 0 and ret != -_EINPROGRESS:
                return
            fd = _sfd(a[0])
            st = self._get(tgid, fd, name)
            if st is None:
                st = _Fd(family=socket.AF_INET, type=_SOCK_STREAM)
                self._table(tgid)[fd] = st
            peer = parse_sockaddr(ev.payload(1))
            if peer is None:
                return
            dgram = st.type == _SOCK_DGRAM
            proto = "unix" if st.family == socket.AF_UNIX else ("udp" if dgram else "tcp")
            if st.conn is not None and dgram:
                st.conn.closed_ns = ev.ts_exit  # a UDP socket re-connected to another peer
            st.conn = self._new("datagram" if dgram else "outbound", proto, fd, tgid,
                                local=st.local, peer=peer, opened_ns=ev.ts_exit, connect_ret=ret)
        elif name == "shutdown":
            st = self._get(tgid, _sfd(a[0]), name)
            if ret == 0 and st is not None and st.conn is not None:
                st.conn.shutdown.append({0: "SHUT_RD", 1: "SHUT_WR", 2: "SHUT_RDWR"}.get(int(a[1]), str(a[1])))
        elif name == "close":
            self._close(tgid, _sfd(a[0]), ev.ts_exit, ev.ts_enter)
        elif name in ("dup", "dup2", "dup3") or (name == "fcntl" and int(a[1]) in (_F_DUPFD, _F_DUPFD_CLOEXEC)):
            if ret < 0:
                return
            old = _sfd(a[0])
            st = self._get(tgid, old, name)
            if st is not None and ret != old:
                self._install(tgid, ret, dataclasses.replace(st), ev.ts_exit)  # shares conn
        elif name == "close_range":
            if ret == 0 and not int(a[2]) & 4:  # CLOSE_RANGE_CLOEXEC only marks
                lo, hi = _sfd(a[0]), int(a[1]) & 0xFFFFFFFF
                for fd in [f for f in self._table(tgid) if lo <= f <= hi]:
                    self._close(tgid, fd, ev.ts_exit)
        elif name == "exit_group":
            for fd in list(self._table(tgid)):
                self._close(tgid, fd, ev.ts_exit)

    def proc(self, pe: Any) -> None:
        kind = getattr(pe, "kind", "")
        if kind == "FORK":
            child_tgid = int(pe.arg1)
            parent = pe.tgid or self.pid
            if child_tgid and child_tgid != parent:
                self.tables[child_tgid] = dict(self._table(parent))
        elif kind == "EXIT" and pe.tgid and pe.tid == pe.tgid:
            for fd in list(self._table(pe.tgid)):
                self._close(pe.tgid, fd, pe.ts)

    def finish(self, losses: dict | None) -> Conversations:
        if self.truncated_chunks:
            self.notes.append(f"{self.truncated_chunks} payload(s) longer than the snaplen were "
                              "captured truncated; their missing bytes cannot be replayed")
        if self.unknown_chunks:
            self.notes.append(f"{self.unknown_chunks} sendfile call(s) moved bytes the trace does "
                              "not hold; those responses are compared by length only")
        if self.masked_bytes:
            self.notes.append(f"{self.masked_bytes} byte(s) of socket payloads were redacted in the trace; "
                              "they are compared as unknown, and sent to the program as the masks")
        if losses:
            lost = sum(int(v) for v in losses.values())
            if lost:
                self.notes.append(f"the capture lost {lost} record(s); conversations may miss bytes")
        return Conversations(self.listeners, self.conns, self.notes, self.meta, self.random,
                             random_by_conn=self.random_by_conn, clock_by_conn=self.clock_by_conn)


def _is_socket(ent: dict) -> bool:
    t = str(ent.get("type") or "").lower()
    return t.startswith("sock") or t in ("tcp", "tcp6", "udp", "udp6", "unix")


def _proto(addr: Addr | None, ent: dict) -> str:
    t = str(ent.get("proto") or ent.get("type") or "").lower()
    if "udp" in t or "dgram" in str(ent.get("socktype", "")).lower():
        return "udp"
    if addr is not None and addr.family == "unix":
        return "unix"
    return "tcp"


def _fam_int(addr: Addr | None) -> int:
    if addr is None:
        return socket.AF_INET
    return {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}[addr.family]
