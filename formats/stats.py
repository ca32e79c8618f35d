"""``dr stats``: what a trace holds, in numbers.

:func:`compute` reads a trace once (streaming; memory grows with the number
of distinct syscalls, fds and threads, plus 8 bytes per event for latencies)
and returns a :class:`Stats` value: per-syscall counts, errors by errno and
latency percentiles; bytes in and out per open file and per connection (with
addresses, from :mod:`dr.formats.fdmap`); per-thread activity; losses.
:meth:`Stats.as_dict` is the ``--json`` shape; :func:`render` prints tables.

Units: times are ns of CLOCK_MONOTONIC (``latency_ns``); the tables show µs.
Latency is ``ts_exit - ts_enter`` of events that returned (calls that never
return, such as exit_group, and events whose entry was lost are counted but
have no latency).
"""

from __future__ import annotations

import errno as _errno
import math
import os
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from dr import schema
from dr.formats.fdmap import FdMap, OpenFile
from dr.formats.trace import Event, ProcEvent, TraceReader
from dr.formats.transfers import transfers

__all__ = ["Stats", "SyscallStats", "FileStats", "FileGroup", "ThreadStats", "compute",
           "file_groups", "pair_loopback_ends", "Comms",
           "errno_name", "percentile"]

_NO_EXIT = schema.EVENT_FLAGS["NO_EXIT"]
_ENTRY_LOST = schema.EVENT_FLAGS["ENTRY_LOST"]


def errno_name(n: int) -> str:
    """``ENOENT`` for 2; ``E<n>`` for numbers Linux does not name."""
    return _errno.errorcode.get(n, f"E{n}")


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word`` in agreement: "1 thread", "2 threads", "1,024 syscalls".

    ``many`` is the plural when adding "s" is wrong ("process", "processes").
    """
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def percentile(sorted_values: Any, p: float) -> int:
    """Nearest-rank percentile of an ascending sequence (``p`` in 0..100); 0 when empty."""
    n = len(sorted_values)
    if not n:
        return 0
    k = max(1, math.ceil(p / 100.0 * n))
    return int(sorted_values[k - 1])


@dataclass(slots=True)
class SyscallStats:
    """One syscall: ``count`` calls, ``errors`` {errno name: count}; latencies in ns."""

    name: str
    count: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    total_ns: int = 0
    p50_ns: int = 0
    p99_ns: int = 0
    max_ns: int = 0
    _lat: array = field(default_factory=lambda: array("q"), repr=False)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "errors": dict(self.errors),
                "error_count": self.error_count, "total_ns": self.total_ns,
                "latency_ns": {"p50": self.p50_ns, "p99": self.p99_ns, "max": self.max_ns}}


@dataclass(slots=True)
class FileStats:
    """Bytes across one open file description (all fds that referred to it).

    ``fds``: "tgid:fd" names it had; ``label``: strace -yy text; sockets add
    ``proto``, ``local`` and ``peer`` (text, "" when unknown). ``bytes_in`` /
    ``bytes_out`` are true counts (from return values), ``captured_in`` /
    ``captured_out`` the payload bytes the trace holds for them.
    """

    id: int
    kind: str
    label: str
    fds: list[str]
    proto: str = ""
    local: str = ""
    peer: str = ""
    calls_in: int = 0
    calls_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    captured_in: int = 0
    captured_out: int = 0
    peers: dict[str, list[int]] = field(default_factory=dict)  # datagram address -> [in, out]

    def as_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "kind": self.kind, "label": self.label, "fds": self.fds,
             "calls_in": self.calls_in, "calls_out": self.calls_out,
             "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
             "captured_in": self.captured_in, "captured_out": self.captured_out}
        if self.kind == "socket":
            d.update(proto=self.proto, local=self.local, peer=self.peer)
            if self.peers:
                d["peers"] = {a: {"bytes_in": v[0], "bytes_out": v[1]} for a, v in self.peers.items()}
        return d


@dataclass(slots=True)
class ThreadStats:
    """One thread: syscalls made, errors, ns spent inside syscalls, first/last ns."""

    tid: int
    tgid: int
    name: str = ""
    syscalls: int = 0
    errors: int = 0
    time_in_syscalls_ns: int = 0
    first_ns: int = 0
    last_ns: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    by_name: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        top = sorted(self.by_name.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        return {"tid": self.tid, "tgid": self.tgid, "name": self.name, "syscalls": self.syscalls,
                "errors": self.errors, "time_in_syscalls_ns": self.time_in_syscalls_ns,
                "first_ns": self.first_ns, "last_ns": self.last_ns,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "top": [{"name": n, "count": c} for n, c in top]}


@dataclass(slots=True)
class Stats:
    """Everything ``dr stats`` reports about one trace (see :meth:`as_dict`)."""

    path: str
    events: int = 0
    errors: int = 0
    first_ns: int = 0
    last_ns: int = 0
    syscalls: list[SyscallStats] = field(default_factory=list)
    files: list[FileStats] = field(default_factory=list)
    threads: list[ThreadStats] = field(default_factory=list)
    proc_events: dict[str, int] = field(default_factory=dict)
    losses: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)  # events by EVENT_FLAGS name
    truncated: bool = False
    complete: bool = True
    cut_where: str = ""   # a trace cut short: where it ends (TraceReader.cut_where)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def connections(self) -> list[FileStats]:
        """Sockets with a known address, or that moved bytes."""
        return [f for f in self.files if f.kind == "socket" and (f.peer or f.local or f.peers
                                                                 or f.bytes_in or f.bytes_out)]

    @property
    def lost(self) -> int:
        return sum(self.losses.values())

    def counts(self) -> dict[str, int]:
        """{syscall name: count}."""
        return {s.name: s.count for s in self.syscalls}

    def as_dict(self) -> dict[str, Any]:
        """The ``dr stats --json`` document (docs/jsonl.md names the same fields)."""
        m = self.meta
        return {
            "trace": self.path,
            "complete": self.complete,
            "cut_short": ("cut short " + self.cut_where) if self.truncated else None,
            "mode": m.get("mode"), "pid": m.get("pid"), "argv": m.get("argv"),
            "events": self.events, "errors": self.errors,
            "duration_ns": max(0, self.last_ns - self.first_ns),
            "syscalls": [s.as_dict() for s in self.syscalls],
            "files": [f.as_dict() for f in self.files if f.calls_in or f.calls_out],
            "file_groups": [g.as_dict() for g in file_groups(self)],
            "connections": [f.as_dict() for f in self.connections],
            "threads": [t.as_dict() for t in self.threads],
            "proc_events": dict(self.proc_events),
            "losses": dict(self.losses), "lost": self.lost,
            "flagged_events": dict(self.flagged),
        }


def _thread_names(meta: dict[str, Any]) -> dict[int, str]:
    """tid -> comm from the snapshot: the target's ``threads`` and, in attach mode,
    each descendant's (``procs``); a descendant recorded without names is named
    after the file it executed, as the kernel names a task at exec."""
    names: dict[int, str] = {}

    def add(th: Any) -> None:
        if isinstance(th, list):
            for t in th:
                if isinstance(t, dict) and isinstance(t.get("tid"), int):
                    names[t["tid"]] = str(t.get("name") or t.get("comm") or "")
        elif isinstance(th, dict):
            for k, v in th.items():
                try:
                    names[int(k)] = str(v.get("name") if isinstance(v, dict) else v)
                except (TypeError, ValueError):
                    pass

    procs = meta.get("procs")
    for p in procs if isinstance(procs, list) else ():
        if not isinstance(p, dict):
            continue
        ex = p.get("exec")
        ex = ex if isinstance(ex, dict) else {}
        argv = ex.get("argv") if isinstance(ex.get("argv"), list) else []
        file = ex.get("execfn") or (argv[0] if argv else None)
        if isinstance(file, str) and file and isinstance(p.get("tids"), list):
            for tid in p["tids"]:
                if isinstance(tid, int):
                    names[tid] = os.path.basename(file)[:15]
        add(p.get("threads"))
    add(meta.get("threads"))
    return names


class Comms:
    """Each task's name (comm) through a trace: the capture's snapshot names
    (meta ``threads``), a new task inherits its creator's (FORK), and a
    successful execve renames it after the file, cut to 15 bytes as the kernel does.
    Feed every record in capture order; :meth:`get` is the name at that point.
    """

    _EXECS = {schema.by_name("execve").nr: 0, schema.by_name("execveat").nr: 1}

    def __init__(self, meta: dict[str, Any]) -> None:
        self.names = _thread_names(meta)
        pid = meta.get("pid")
        if isinstance(pid, int) and not self.names.get(pid) and process_name(meta):
            self.names[pid] = process_name(meta)[:15]  # a trace without thread names

    def feed(self, rec: Any) -> None:
        if rec.__class__ is Event:
            slot = self._EXECS.get(rec.nr)
            if slot is not None and rec.ret == 0:
                p = rec.payloads.get(slot)
                if p is not None and p.data:
                    self.names[rec.tid] = os.path.basename(
                        p.data.split(b"\0", 1)[0].decode("utf-8", "replace"))[:15]
        elif rec.__class__ is ProcEvent and rec.kind == "FORK":
            if rec.arg0 not in self.names and rec.tid in self.names:
                self.names[rec.arg0] = self.names[rec.tid]

    def get(self, tid: int, default: str = "") -> str:
        return self.names.get(tid) or default


def process_name(meta: dict[str, Any]) -> str:
    """A short name for the traced process: comm, else the exe's or argv[0]'s basename."""
    for key in ("comm", "name"):
        if isinstance(meta.get(key), str) and meta[key]:
            return meta[key]
    exe = meta.get("exe")
    if isinstance(exe, dict) and isinstance(exe.get("path"), str):
        return os.path.basename(exe["path"])
    argv = meta.get("argv")
    if isinstance(argv, list) and argv and isinstance(argv[0], str):
        return os.path.basename(argv[0])
    return ""


def compute(reader: TraceReader) -> Stats:
    """Read every record of ``reader`` once and count. Raises TraceError for a corrupt frame."""
    st = Stats(path=reader.path, meta=dict(reader.meta))
    fdm = FdMap(reader.meta)
    sysc: dict[int, SyscallStats] = {}
    threads: dict[int, ThreadStats] = {}
    files: dict[int, FileStats] = {}
    pname = process_name(reader.meta)
    flag_names = [(bit, name) for name, bit in schema.EVENT_FLAGS.items()]
    first = last = 0
    comms = Comms(reader.meta)
    for rec in reader.stream():
        comms.feed(rec)
        if rec.__class__ is Event:
            ev: Event = rec  # type: ignore[assignment]
            st.events += 1
            s = sysc.get(ev.nr)
            if s is None:
                s = sysc[ev.nr] = SyscallStats(ev.name)
            s.count += 1
            th = threads.get(ev.tid)
            if th is None:
                th = threads[ev.tid] = ThreadStats(ev.tid, ev.tgid, comms.get(ev.tid))
            th.syscalls += 1
            th.by_name[s.name] = th.by_name.get(s.name, 0) + 1
            t0 = ev.ts_enter or ev.ts_exit
            t1 = ev.ts_exit or ev.ts_enter
            if t0 and (not first or t0 < first):
                first = t0
            if t1 > last:
                last = t1
            if t0 and (not th.first_ns or t0 < th.first_ns):
                th.first_ns = t0
            if t1 > th.last_ns:
                th.last_ns = t1
            if ev.flags:
                for bit, fname in flag_names:
                    if ev.flags & bit:
                        st.flagged[fname] = st.flagged.get(fname, 0) + 1
            returned = not ev.flags & (_NO_EXIT | _ENTRY_LOST) and ev.ts_enter and ev.ts_exit >= ev.ts_enter
            if returned:
                d = ev.ts_exit - ev.ts_enter
                s._lat.append(d)
                s.total_ns += d
                th.time_in_syscalls_ns += d
            e = ev.errno if not ev.flags & _NO_EXIT and _ret_is_error(ev) else None
            if e is not None:
                en = errno_name(e)
                s.errors[en] = s.errors.get(en, 0) + 1
                th.errors += 1
                st.errors += 1
            for t in transfers(ev):
                f = fdm.get(ev.tgid, t.fd)
                fs = files.get(f.id)
                if fs is None:
                    fs = files[f.id] = FileStats(f.id, f.kind, "", [])
                got = len(t.data) if t.data is not None else 0
                if t.direction == "in":
                    fs.calls_in += 1
                    fs.bytes_in += t.nbytes
                    fs.captured_in += min(got, t.nbytes)
                    th.bytes_in += t.nbytes
                else:
                    fs.calls_out += 1
                    fs.bytes_out += t.nbytes
                    fs.captured_out += min(got, t.nbytes)
                    th.bytes_out += t.nbytes
                if t.addr is not None and (f.peer is None or t.addr != f.peer):
                    io = fs.peers.setdefault(str(t.addr), [0, 0])
                    io[0 if t.direction == "in" else 1] += t.nbytes
            fdm.apply(ev)
        elif rec.__class__ is ProcEvent:
            pe: ProcEvent = rec  # type: ignore[assignment]
            st.proc_events[pe.kind] = st.proc_events.get(pe.kind, 0) + 1
            fdm.apply(pe)
    st.first_ns, st.last_ns = first, last
    for s in sysc.values():
        lat = sorted(s._lat)
        s.p50_ns, s.p99_ns = percentile(lat, 50), percentile(lat, 99)
        s.max_ns = lat[-1] if lat else 0
        s._lat = array("q")
    st.syscalls = sorted(sysc.values(), key=lambda s: (-s.count, s.name))
    byid: dict[int, OpenFile] = {f.id: f for f in fdm.files}
    pair_loopback_ends(byid.values(), None)  # the unambiguous pairs: no connect times here
    for fs in files.values():
        f = byid[fs.id]
        fs.kind = f.kind
        fs.label = f.label()
        fs.fds = sorted({f"{tg}:{fd}" for tg, fd in f.fds})
        if not fs.label and f.kind == "unknown" and f.fds:
            # Neither a snapshot nor a recorded open names it: say that, not "unknown".
            tg, fd = min(f.fds)
            fs.label = f"fd {fd} of pid {tg} (opened before the capture; not in its snapshot)"
        if f.is_socket:
            fs.proto = f.proto
            fs.local = str(f.local) if f.local else ""
            fs.peer = str(f.peer) if f.peer else ""
            if not fs.peer and len(fs.peers) == 1:
                fs.peer = next(iter(fs.peers))
                fs.peers = {}
    st.files = sorted(files.values(), key=lambda f: (-(f.bytes_in + f.bytes_out), f.id))
    for th in threads.values():
        th.name = comms.get(th.tid)
        if not th.name and th.tid == th.tgid:
            th.name = pname if th.tgid == reader.meta.get("pid") else ""
    st.threads = sorted(threads.values(), key=lambda t: (t.tgid, t.tid))
    st.losses = dict(reader.losses)
    st.truncated = reader.truncated
    st.complete = not reader.truncated
    st.cut_where = reader.cut_where() if reader.truncated else ""
    return st


def _same_end(a: Any, b: Any) -> bool:
    """``a`` and ``b`` name one TCP endpoint (a wildcard host matches any, as a bind to 0.0.0.0 does)."""
    return a.port == b.port and (a.host == b.host or a.unspecified or b.unspecified)


def pair_loopback_ends(files: Iterable[OpenFile], opened: Callable[[OpenFile], int] | None) -> None:
    """Give a client socket whose local port the trace never names (no getsockname)
    the address its server saw: when both ends of a connection are in the trace,
    the accepted socket's peer is the client's local address. Each accepted socket
    pairs with one client: the earliest-opened client (``opened``: ns of its
    connect and accept) whose peer is the accepted socket's local address and
    which opened before it. Without ``opened`` only unambiguous pairs are made
    (one client and one accepted socket for that address). Sets ``local`` on the
    client sockets it pairs.
    """
    files = list(files)
    servers = [f for f in files if f.is_socket and f.accepted and f.local is not None
               and f.peer is not None and f.peer.is_inet and f.peer.port]
    if not servers:
        return
    clients = [f for f in files if f.is_socket and not f.accepted and f.peer is not None
               and f.peer.is_inet and (f.local is None or not f.local.port)]
    if opened is None:
        for c in clients:
            match = [a for a in servers if _same_end(a.local, c.peer)]
            rivals = [o for o in clients if o.peer is not None and _same_end(o.peer, c.peer)]
            if len(match) == 1 and len(rivals) == 1:
                c.local = match[0].peer
        return
    taken: set[int] = set()
    for c in sorted(clients, key=opened):
        t = opened(c)
        best = None
        for a in servers:
            if a.id in taken or not _same_end(a.local, c.peer) or opened(a) < t:
                continue
            if best is None or opened(a) < opened(best):
                best = a
        if best is not None:
            taken.add(best.id)
            c.local = best.peer


def _ret_is_error(ev: Event) -> bool:
    sc = schema.by_nr(ev.nr)
    if sc is not None and sc.ret == "none":
        return False
    return -4095 <= ev.ret < 0


@dataclass(slots=True)
class FileGroup:
    """Every open of one path (or one socket peer): ``opens`` open file descriptions."""

    label: str
    opens: int = 0
    fds: list[str] = field(default_factory=list)
    calls_in: int = 0
    calls_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "opens": self.opens, "fds": self.fds,
                "calls_in": self.calls_in, "calls_out": self.calls_out,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}


def file_groups(st: Stats) -> list[FileGroup]:
    """Files that moved bytes, one row per path (a file opened 34 times is one row
    with opens 34) and per socket peer; most bytes first."""
    groups: dict[str, FileGroup] = {}
    labels: dict[str, str] = {}
    for f in st.files:
        if not (f.calls_in or f.calls_out):
            continue
        key = f.label or f.kind
        if f.kind == "socket" and f.peer:  # many connections to one server: one row
            key = f"{f.proto or 'socket'}:[->{f.peer}]"
        g = groups.get(key)
        if g is None:
            g = groups[key] = FileGroup(key)
            labels[key] = f.label or f.kind
        elif labels[key] != (f.label or f.kind):
            labels[key] = key
        g.opens += 1
        g.fds.extend(x for x in f.fds if x not in g.fds)
        g.calls_in += f.calls_in
        g.calls_out += f.calls_out
        g.bytes_in += f.bytes_in
        g.bytes_out += f.bytes_out
    for key, g in groups.items():
        g.label = labels[key]  # one connection keeps its whole -yy label
    return sorted(groups.values(), key=lambda g: (-(g.bytes_in + g.bytes_out), g.label))
