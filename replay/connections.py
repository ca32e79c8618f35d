"""Reconstruct a traced service's conversations from the syscalls of a trace.

An attach-mode trace holds what crossed the service's sockets as syscalls:
``accept4`` with the peer's address, then ``recvfrom``/``read`` of request bytes
and ``sendto``/``write`` of response bytes on the accepted fd, ``connect`` to a
dependency, and so on. This module turns those events back into the things a
streams replay re-drives and compares:

- :class:`Listener` — a listening socket (from ``bind``+``listen``, or from the
  metadata fd table when it was listening before the capture started);
- :class:`Connection` — one conversation: ``inbound`` (accepted), ``outbound``
  (the service called ``connect``) or ``datagram`` (UDP, DNS included), with its
  ordered :class:`Chunk` list — every read and every write as the service saw
  it, so each chunk is a recorded message boundary.

Direction is from the service's side: ``IN`` chunks are bytes it read, ``OUT``
chunks bytes it wrote. For an inbound connection the requests are IN and the
responses OUT; for an outbound one the requests are OUT and the responses IN.

fd numbers are per process (tgid) and reused after ``close``; the fd table is
copied on fork, and ``dup``/``dup2``/``dup3``/``fcntl(F_DUPFD)`` alias a
connection. An fd in use when the capture began is found in the metadata fd
table (docs/internals.md, "Metadata") and its connection is marked
``began_before_capture``.

Sockaddr layouts: ``struct sockaddr_in``/``sockaddr_in6``/``sockaddr_un``
(netinet/in.h, sys/un.h; man 7 ip, ipv6, unix). Family and port as the kernel
stores them: family in host byte order (little endian here), port big endian.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from dr.errors import TraceError
from dr.formats import sockaddr as _sockaddr

__all__ = [
    "IN", "OUT", "Addr", "Chunk", "Message", "Exchange", "Connection", "Listener",
    "Conversations", "reconstruct", "parse_sockaddr",
]

IN = "in"    # bytes the service read (recv, read, readv, recvmsg, recvfrom)
OUT = "out"  # bytes the service wrote (send, write, writev, sendmsg, sendto, sendfile)

#: Readiness waits: an event loop's thread blocks here, then reads the clock once it
#: wakes (nginx, redis cache the time per loop iteration).
WAITS = frozenset({"epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6"})


@dataclass(frozen=True, slots=True)
class Addr:
    """A socket address: ``family`` ("inet", "inet6", "unix"), ``host``, ``port``.

    For "unix" ``host`` is the path (``@name`` for the abstract namespace) and
    ``port`` is 0. ``str()`` gives ``127.0.0.1:8080``, ``[::1]:8080`` or
    ``unix:/run/x.sock``.
    """

    family: str
    host: str
    port: int = 0

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.host}"
        if self.family == "inet6":
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def is_wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::", "")

    @classmethod
    def parse(cls, obj: Any) -> "Addr | None":
        """An Addr from the metadata's spelling: ``"h:p"``, ``"[h]:p"``, ``[h, p]``,
        ``{"host", "port"}`` (``{"path"}`` for unix), a path; None when absent."""
        if obj is None or obj == "" or isinstance(obj, Addr):
            return obj or None
        if isinstance(obj, dict):
            if obj.get("path"):
                return cls("unix", str(obj["path"]))
            host = str(obj.get("host", obj.get("addr", obj.get("ip", ""))))
            fam = obj.get("family") or ("inet6" if ":" in host else "inet")
            return cls(_family_name(fam), host, int(obj.get("port", 0)))
        if isinstance(obj, (list, tuple)) and len(obj) >= 2:
            host = str(obj[0])
            return cls("inet6" if ":" in host else "inet", host, int(obj[1]))
        if isinstance(obj, (bytes, bytearray)):
            return parse_sockaddr(bytes(obj))
        s = str(obj)
        if s.startswith("unix:"):
            return cls("unix", s[5:])
        if s.startswith("/") or s.startswith("@"):
            return cls("unix", s)
        if s.startswith("["):
            host, _, port = s[1:].partition("]:")
            return cls("inet6", host, int(port or 0))
        host, _, port = s.rpartition(":")
        if host and port.isdigit():
            return cls("inet6" if ":" in host else "inet", host, int(port))
        return None


def _family_name(fam: Any) -> str:
    if isinstance(fam, int):
        names: dict[int, str] = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix"}
        return names.get(fam, "inet")
    f = str(fam).lower().replace("af_", "")
    return {"inet": "inet", "inet6": "inet6", "unix": "unix", "local": "unix", "tcp": "inet",
            "tcp6": "inet6", "udp": "inet", "udp6": "inet6"}.get(f, "inet")


def parse_sockaddr(raw: bytes | None) -> Addr | None:
    """Decode a ``struct sockaddr`` (see :mod:`dr.formats.sockaddr`); None when absent/short.

    A v4-mapped IPv6 address is the same peer as its AF_INET form.
    """
    a = _sockaddr.decode(raw)
    if a is None:
        return None
    if a.family == _sockaddr.AF_INET:
        return Addr("inet", a.host, a.port)
    if a.family == _sockaddr.AF_INET6:
        if a.host.startswith("::ffff:") and "." in a.host:
            return Addr("inet", a.host[7:], a.port)
        return Addr("inet6", a.host, a.port)
    if a.family == _sockaddr.AF_UNIX:
        return Addr("unix", a.host)
    return None


@dataclass(slots=True)
class Chunk:
    """One read or write on a connection, as the service saw it.

    ``dir``: IN (the service read it) or OUT (it wrote it). ``data``: the bytes
    captured; ``total``: the syscall's byte count (> len(data) when the payload
    was truncated by the snaplen, or unknown as for sendfile). ``eof``: a read
    that returned 0 (the peer shut down its side). Times in ns, CLOCK_MONOTONIC.
    ``index``: the event's index in the trace; ``peer``: the datagram's peer.
    ``masked``: (start, length) ranges of ``data`` that redaction replaced with
    masks (formats/redact.py): unknown bytes, not recorded ones.
    """

    dir: str
    data: bytes
    total: int
    ts_enter: int
    ts_exit: int
    syscall: str
    tid: int
    index: int = -1
    eof: bool = False
    peer: Addr | None = None
    masked: tuple[tuple[int, int], ...] = ()
    woke_ns: int | None = None  # IN: exit time of the last wait the reading thread returned from

    @property
    def complete(self) -> bool:
        """True when ``data`` holds every byte the syscall moved."""
        return len(self.data) == self.total


@dataclass(slots=True)
class Message:
    """Consecutive chunks of one direction: one request or one response."""

    dir: str
    chunks: list[Chunk]

    @property
    def data(self) -> bytes:
        return b"".join(c.data for c in self.chunks)

    @property
    def ts_first(self) -> int:
        return self.chunks[0].ts_exit

    @property
    def masked(self) -> list[tuple[int, int]]:
        """Redacted (start, length) ranges within :attr:`data`."""
        return masked_ranges(self.chunks)

    @property
    def ts_last(self) -> int:
        return self.chunks[-1].ts_exit


def masked_ranges(chunks: Iterable[Chunk]) -> list[tuple[int, int]]:
    """Redacted (start, length) ranges within the concatenated ``data`` of ``chunks``."""
    out, off = [], 0
    for c in chunks:
        for start, length in c.masked:
            lo, hi = max(0, start), min(len(c.data), start + length)
            if hi > lo:
                out.append((off + lo, hi - lo))
        off += len(c.data)
    return out


@dataclass(slots=True)
class Exchange:
    """A request and the response that followed it (either may be None)."""

    request: Message | None
    response: Message | None


@dataclass(slots=True)
class Listener:
    """A listening socket: ``addr``, the fd and tgid that held it, ``proto``
    ("tcp" or "unix"), whether it came from the metadata fd table."""

    addr: Addr
    fd: int
    tgid: int
    proto: str = "tcp"
    from_snapshot: bool = False
    ts_ns: int = 0


@dataclass(slots=True)
class Connection:
    """One conversation of the service with a peer.

    ``kind``: "inbound" (accepted on ``listener``), "outbound" (the service
    connected to ``peer``) or "datagram" (UDP; ``is_dns`` when port 53).
    ``proto``: "tcp", "udp" or "unix". ``chunks`` in capture order.
    ``opened_ns``/``closed_ns``: accept or connect exit, close exit (None when
    before/after the capture). ``began_before_capture``: the fd was open when
    the capture started, so the conversation's beginning is missing.
    """

    id: int
    kind: str
    proto: str
    fd: int
    tgid: int
    local: Addr | None = None
    peer: Addr | None = None
    listener: Addr | None = None
    opened_ns: int | None = None
    closed_ns: int | None = None
    began_before_capture: bool = False
    connect_ret: int = 0
    shutdown: list[str] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def request_dir(self) -> str:
        return IN if self.kind == "inbound" else OUT

    @property
    def response_dir(self) -> str:
        return OUT if self.kind == "inbound" else IN

    @property
    def is_dns(self) -> bool:
        return self.proto == "udp" and self.peer is not None and self.peer.port == 53

    def data(self, direction: str) -> bytes:
        """All bytes of one direction, concatenated."""
        return b"".join(c.data for c in self.chunks if c.dir == direction)

    @property
    def request_bytes(self) -> bytes:
        return self.data(self.request_dir)

    @property
    def response_bytes(self) -> bytes:
        return self.data(self.response_dir)

    @property
    def complete(self) -> bool:
        """Every chunk's payload complete (none truncated, none unknown)."""
        return all(c.complete for c in self.chunks)

    def messages(self) -> list[Message]:
        """Chunks grouped into runs of one direction (EOF marks are left out)."""
        out: list[Message] = []
        for c in self.chunks:
            if c.eof:
                continue
            if out and out[-1].dir == c.dir and self.proto != "udp":
                out[-1].chunks.append(c)
            else:
                out.append(Message(c.dir, [c]))
        return out

    def exchanges(self) -> list[Exchange]:
        """Request/response pairs in order (a response with no request first,
        as on a connection that began before the capture, has request None)."""
        out: list[Exchange] = []
        for m in self.messages():
            if m.dir == self.request_dir:
                out.append(Exchange(m, None))
            elif out and out[-1].response is None:
                out[-1].response = m
            else:
                out.append(Exchange(None, m))
        return out

    @property
    def first_ts(self) -> int | None:
        if self.opened_ns is not None:
            return self.opened_ns
        return self.chunks[0].ts_exit if self.chunks else None

    def label(self) -> str:
        arrow = "<-" if self.kind == "inbound" else "->"
        return f"#{self.id} {self.kind} {self.local or '?'} {arrow} {self.peer or '?'}"


@dataclass(slots=True)
class Conversations:
    """Everything :func:`reconstruct` found: listeners, connections, notes.

    ``notes``: one line per thing the reconstruction could not do exactly
    (truncated payloads, sendfile bytes not captured, losses in the trace).
    """

    listeners: list[Listener]
    connections: list[Connection]
    notes: list[str]
    meta: dict
    random: list[bytes] = field(default_factory=list)  # getrandom payloads, recorded order
    cut_short: bool = False  # the trace ends without its summary record (crash, SIGKILL, cut file)
    #: getrandom payloads by the inbound connection their thread was serving (its last
    #: read or write before the call), in that thread's order; a thread serves one
    #: connection at a time, so this is the per-thread order, keyed so replay can find it.
    random_by_conn: dict[int, list[bytes]] = field(default_factory=dict)
    #: clock values read through the vDSO (ClockRead records of attach mode) by the inbound
    #: connection their thread was serving, as random_by_conn
    clock_by_conn: dict[int, list] = field(default_factory=dict)

    def inbound(self) -> list[Connection]:
        return [c for c in self.connections if c.kind == "inbound"]

    def outbound(self) -> list[Connection]:
        return [c for c in self.connections if c.kind in ("outbound", "datagram")]


def reconstruct(trace: Any) -> Conversations:
    """Rebuild listeners and conversations from a trace.

    ``trace``: a path or an open :class:`dr.formats.trace.TraceReader` (or any
    object with ``meta`` and ``stream()`` yielding Event/ProcEvent/dict, for
    tests). Connections come out in the order they began (inbound in accept
    order). Raises :class:`dr.errors.TraceError` for an unreadable trace.
    """
    from dr.formats.trace import TraceReader

    own = isinstance(trace, (str, os.PathLike))
    reader = TraceReader(trace) if own else trace
    try:
        from dr.replay.connections_build import _Builder  # here: it builds this module's values
        b = _Builder(dict(reader.meta or {}))
        for rec in reader.stream():
            if hasattr(rec, "nr") and hasattr(rec, "args"):
                b.event(rec)
            elif hasattr(rec, "what"):
                b.proc(rec)
            elif hasattr(rec, "clockid"):
                b.clock(rec)
            elif isinstance(rec, dict) and rec.get("t") == "redactions":
                from dr.formats.redact import spans_by_slot
                for key, spans in spans_by_slot([rec]).items():
                    b.redactions.setdefault(key, []).extend(spans)
        losses = None
        try:
            losses = getattr(reader, "losses", None)   # a TraceReader property; a method on test readers
            if callable(losses):
                losses = losses()
        except (TraceError, AttributeError, TypeError):
            losses = None
        conv = b.finish(losses if isinstance(losses, dict) else None)
        conv.cut_short = bool(getattr(reader, "truncated", False))
        return conv
    finally:
        if own:
            reader.close()


def iter_chunks(conns: Iterable[Connection]) -> Iterator[tuple[Connection, Chunk]]:
    """Every chunk of ``conns`` in recorded time order (exit time, then trace index)."""
    allc = [(c, ch) for c in conns for ch in c.chunks]
    allc.sort(key=lambda p: (p[1].ts_exit, p[1].index))
    return iter(allc)
