"""Delivering the recorded inbound connections to the replayed program, in recorded order.

The part of :class:`dr.replay.streams.StreamsSession` that drives traffic: the
plan (every connection's open, request chunks and shutdown in recorded time), the
connections dr opens from the recorded client addresses, the readers of their
responses, and the waits that hold the recorded order: before a chunk goes out,
each open connection has received the responses the recording shows before it
(counted in protocol messages), and the program has read the last request sent on
another connection (its receive queue, :mod:`dr.replay.sockdiag`).
"""

from __future__ import annotations

import bisect
import errno
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dr.replay.connections import IN, OUT, Chunk, Connection, Conversations
from dr.replay.streams_units import Units, proto_of
from dr.replay.streams_watch import PATIENCE_S, QUIET_MIN_S, QUIET_S, WAIT_S, Activity, listen_matches, listening

__all__ = ["ReplayedConn", "Step", "Delivery", "PlanItem"]

#: Sockets made in the sandbox's network namespace per join (see Delivery._ns_socket).
SOCKET_BATCH = 64

#: One step of the plan: (recorded time, chunk index, "open"|"send"|"shutdown", connection, chunk).
PlanItem = tuple[int, int, str, Connection, Chunk | None]


@dataclass(slots=True)
class ReplayedConn:
    """What happened on one re-driven inbound connection.

    ``received``: response chunks as (ns since the replay's start, bytes).
    ``sent_ns``/``done_ns``: first byte sent, last byte received (ns, monotonic).
    ``eof``: the program closed its side. ``error``: why dr could not drive it.
    """

    conn: Connection
    received: list[tuple[int, bytes]] = field(default_factory=list)
    sent_bytes: int = 0
    opened_ns: int = 0
    sent_ns: int = 0
    done_ns: int = 0
    eof: bool = False
    error: str | None = None
    peer_bound: bool = False
    client_port: int = 0          # dr's end of the connection (the program sees it as the peer port)
    order_note: str | None = None  # where the recorded order across connections could not be held

    @property
    def data(self) -> bytes:
        return b"".join(d for _, d in self.received)

    @property
    def nbytes(self) -> int:
        return sum(len(d) for _, d in self.received)



@dataclass(frozen=True, slots=True)
class Step:
    """One step's result: ``kind`` ("started", "opened", "sent", "shutdown",
    "finished", "done") and a line of text; ``report`` set on "done"."""

    kind: str
    text: str
    report: Any = None




class Delivery:
    """Mixin of :class:`dr.replay.streams.StreamsSession`: the traffic it re-drives."""

    # Set by the session (see StreamsSession.__init__).
    conversations: Conversations
    inbound: list[Connection]
    replayed: dict[int, ReplayedConn]
    ns: Any
    pid: int
    clock: Any
    wake_clock: Any
    _socks: dict[int, socket.socket]
    _by_local: dict[int, Connection]
    _pending: dict[int, int]
    _last_io: dict[int, int]
    _cv: threading.Condition
    _read_cv: threading.Condition
    _read_gen: int
    _activity: Activity | None
    _plan: list[PlanItem]
    _i: int
    _t0: int
    _last_item: dict[int, int]
    _last_sent: Connection | None
    _diag: Any
    _ep: select.epoll | None
    _ep_socks: dict[int, tuple[Connection, socket.socket]]
    stopping: bool
    _sock_pool: dict[int, list[socket.socket]]
    _sock_batch: bool

    def _check_alive(self) -> bool:
        raise NotImplementedError

    def _build_plan(self) -> None:
        plan: list[PlanItem] = []
        for c in self.inbound:
            t_open = c.opened_ns if c.opened_ns is not None else (c.chunks[0].ts_exit - 1 if c.chunks else 0)
            plan.append((t_open, -1, "open", c, None))
            for ch in c.chunks:
                if ch.dir == IN:
                    plan.append((ch.ts_exit, ch.index, "shutdown" if ch.eof else "send", c, ch))
        plan.sort(key=lambda p: (p[0], p[1], p[3].id))
        self._plan = plan
        self._last_item = {p[3].id: i for i, p in enumerate(plan)}
        # Per connection, recorded responses by time: (ts_exit, cumulative units), and
        # how long the recorded program took for each (ns since the read before it).
        self._out_marks: dict[int, list[tuple[int, int]]] = {}
        self._out_ts: dict[int, list[int]] = {}
        self._out_cum: dict[int, list[int]] = {}
        everyone: list[tuple[int, int, int]] = []
        self._out_enters: dict[int, list[int]] = {}
        self._out_gaps: dict[int, list[int]] = {}
        self._units: dict[int, Units] = {}
        for c in self.inbound:
            proto = proto_of(c)
            u, marks, enters, gaps = Units(proto), [], [], []
            last_in = c.opened_ns or (c.chunks[0].ts_enter if c.chunks else 0)
            for ch in c.chunks:
                if ch.dir == OUT:
                    marks.append((ch.ts_exit, u.feed(ch.data) if ch.complete else u.n + ch.total))
                    enters.append(ch.ts_enter)
                    gaps.append(max(0, ch.ts_exit - last_in))
                else:
                    last_in = ch.ts_exit
            self._out_marks[c.id] = marks
            self._out_ts[c.id] = [ts for ts, _ in marks]
            self._out_cum[c.id] = [cum for _, cum in marks]
            self._out_enters[c.id] = enters
            self._out_gaps[c.id] = gaps
            self._units[c.id] = Units(proto if u.proto == proto else "bytes")
            everyone.extend((ts, c.id, cum) for ts, cum in marks)
        # Every connection's recorded responses in recorded time: as the plan advances
        # to time t, those before t become required (see _wait_before). Kept as a
        # pointer and a set of unmet connections, so a step costs what changed, not
        # every open connection's history.
        everyone.sort()
        self._marks_all = everyone
        self._marks_i = 0
        self._required: dict[int, int] = {}
        self._unmet: set[int] = set()

    # -- driving

    def _connect(self, c: Connection) -> socket.socket:
        tgt = c.listener or c.local
        if tgt is None:
            # Accepted on a socket the trace never names (opened before the capture
            # and absent from its fd snapshot): nothing to connect to; reported per
            # connection like any other failed open, never a traceback.
            raise OSError(errno.EDESTADDRREQ, "the trace does not say which address it was accepted on "
                          "(its listening socket predates the capture and is not in its fd snapshot)")
        host = tgt.host
        if tgt.is_wildcard:
            host = c.local.host if c.local and not c.local.is_wildcard else (
                "::1" if tgt.family == "inet6" else "127.0.0.1")
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        rc = self.replayed[c.id]

        # Made in the namespace; bound and connected here (a socket keeps its namespace).
        sk = self._ns_socket(fam)
        try:
            if c.peer is not None and c.peer.family == tgt.family and c.peer.port:
                # Present the recorded client address to the program when it is free.
                try:
                    sk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sk.bind((c.peer.host, c.peer.port))
                    rc.peer_bound = True
                except OSError:
                    sk.close()
                    sk = self._ns_socket(fam)
            if not rc.peer_bound:
                sk.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", 0))
            # Known before connect, so the supervisor can tell the program's fd for c.
            rc.client_port = sk.getsockname()[1]
            self._by_local[rc.client_port] = c
            sk.settimeout(WAIT_S)
            sk.connect((host, tgt.port))
            sk.settimeout(None)
        except OSError:
            sk.close()
            raise
        return sk

    def _ns_socket(self, fam: int) -> socket.socket:
        """A TCP socket in the sandbox's network namespace, from a pool made in batches.

        Joining the namespace costs a thread per call (:meth:`NetNS.run`); one
        call makes SOCKET_BATCH sockets. Through the unprivileged helper (where
        run cannot join), one at a time.
        """
        pool = self._sock_pool.setdefault(fam, [])
        if not pool and self._sock_batch:
            n = min(SOCKET_BATCH, max(1, len(self.inbound)))
            try:
                pool.extend(self.ns.run(lambda: [socket.socket(fam, socket.SOCK_STREAM) for _ in range(n)]))
            except (OSError, AttributeError):
                self._sock_batch = False
        if pool:
            return pool.pop()
        return self.ns.socket(fam, socket.SOCK_STREAM)

    def _watch(self, c: Connection, sk: socket.socket) -> None:
        """Hand ``sk`` to the one reader thread (made on first use)."""
        if self._ep is None:
            self._ep = select.epoll()
            self._ep_socks = {}
            threading.Thread(target=self._reader, name="dr-streams-reader", daemon=True).start()
        self._ep_socks[sk.fileno()] = (c, sk)
        self._ep.register(sk.fileno(), select.EPOLLIN | select.EPOLLRDHUP)

    def _reader(self) -> None:
        """Receive every re-driven connection's responses as they come.

        One thread for all of them: a thread per connection costs a start-up and
        a share of the interpreter's lock per response, which the seccomp
        supervisor (same process) needs for every notification of the program.
        """
        ep = self._ep
        assert ep is not None
        while not self.stopping:
            try:
                ready = ep.poll(0.1)
            except (OSError, ValueError):
                return  # closed by close()
            for fd, _ev in ready:
                entry = self._ep_socks.get(fd)
                if entry is not None:
                    self._receive(fd, *entry)

    def _receive(self, fd: int, c: Connection, sk: socket.socket) -> bool:
        """Read once what ``sk`` holds; whether bytes came (more may follow)."""
        rc = self.replayed[c.id]
        with self._cv:  # held while receiving: _finish closes the sockets under it
            if self._ep_socks.get(fd) is None:
                return False
            try:
                data: bytes | None = sk.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            except OSError as e:
                data = None
                rc.error = rc.error or f"receive failed: {e.strerror or e}"
            now = time.monotonic_ns()
            if data:
                rc.received.append((now - self._t0, data))
                rc.done_ns = now
                self._units[c.id].feed(data)
                self._update_pending(c.id)
                self._last_io[c.id] = now
            else:
                rc.eof = True
                self._pending.pop(c.id, None)
                self._unwatch(fd)
            self._cv.notify_all()
            return bool(data)

    def drain(self) -> None:
        """Read what every watched socket already holds (caller holds _cv): a program
        that ended, or is about to be stopped, may have sent it after the reader's
        last look."""
        for fd, (c, sk) in list(self._ep_socks.items()):
            while self._receive(fd, c, sk):
                pass

    def _unwatch(self, fd: int) -> None:
        """Stop reading ``fd`` (caller holds _cv)."""
        self._ep_socks.pop(fd, None)
        try:
            if self._ep is not None:
                self._ep.unregister(fd)
        except (OSError, ValueError):
            pass

    def _update_pending(self, cid: int) -> None:
        """Recorded entry time of the next write the program owes on ``cid`` (caller holds _cv).

        The incident's clock never passes it while the connection is open, so a
        handler still at work never reads a time later than its recorded answer.
        """
        rc = self.replayed[cid]
        nxt = None
        if not rc.eof:
            k = bisect.bisect_right(self._out_cum[cid], self._units[cid].n)  # first write not yet answered
            if k < len(self._out_enters[cid]):
                nxt = self._out_enters[cid][k]
        if nxt is None:
            self._pending.pop(cid, None)
        else:
            self._pending[cid] = nxt

    def _clock_limit(self) -> int | None:
        vals = list(self._pending.values())  # one C-level copy: safe against the readers' updates
        return min(vals) if vals else None

    def _need(self, cid: int, t: int | None) -> int:
        """Units the recording shows on ``cid`` before ``t`` (all of them for None)."""
        cum = self._out_cum[cid]
        k = len(cum) if t is None else bisect.bisect_left(self._out_ts[cid], t)
        return cum[k - 1] if k else 0

    def idle_ns(self) -> int:
        """ns the program and dr's helpers have been idle (0 before the start)."""
        return self._activity.sample() if self._activity is not None else 0

    def _behind(self, cid: int, t: int | None) -> bool:
        """Connection ``cid`` still owes responses the recording shows before ``t``.

        A connection that stayed quiet for QUIET_S — no bytes since dr last
        sent or received on it, and the program idle all that time — owes
        nothing more: the program answers differently, and the comparison will
        say so. Idle, not merely late: under CPU load a response takes longer
        but still comes, and dr waits for it (up to PATIENCE_S).
        """
        rc = self.replayed[cid]
        n = self._units[cid].n
        if rc.eof or n >= self._need(cid, t):
            return False
        now = time.monotonic_ns()
        since_io = now - self._last_io.get(cid, rc.opened_ns)
        return min(since_io, self.idle_ns()) < self._quiet_ns(cid, n)

    def _quiet_ns(self, cid: int, n: int) -> float:
        """How long ``cid`` may stay quiet while it owes the response after unit ``n``.

        The recording shows how long the program took to write it: idle for
        twice that plus QUIET_MIN_S, it will not come (capped at QUIET_S). So a
        build that stopped answering costs a fraction of a second per
        connection, not QUIET_S each, and the replay stays near the recorded
        duration.
        """
        k = bisect.bisect_right(self._out_cum[cid], n)
        if k < len(self._out_gaps[cid]):
            return min(QUIET_S * 1e9, QUIET_MIN_S * 1e9 + 2 * self._out_gaps[cid][k])
        return QUIET_S * 1e9

    def _wait_before(self, t: int) -> None:
        """Wait until each open connection got the responses recorded before ``t``."""
        deadline = time.monotonic() + PATIENCE_S
        with self._cv:
            # The plan's times only grow: responses recorded before t become required.
            marks, i = self._marks_all, self._marks_i
            while i < len(marks) and marks[i][0] < t:
                _ts, cid, cum = marks[i]
                self._required[cid] = cum
                self._unmet.add(cid)
                i += 1
            self._marks_i = i
            while any([self._behind(cid, t) for cid in self._still_unmet()]):
                left = deadline - time.monotonic()
                if left <= 0 or not self._check_alive():
                    return
                self._cv.wait(min(left, 0.02))

    def _still_unmet(self) -> list[int]:
        """Open connections still short of their required responses (caller holds _cv)."""
        for cid in list(self._unmet):
            rc = self.replayed[cid]
            if cid not in self._socks or rc.eof or self._units[cid].n >= self._required[cid]:
                self._unmet.discard(cid)
        return list(self._unmet)

    def _unread(self, c: Connection) -> int | None:
        """Bytes dr sent on ``c`` that the program has not read yet (the receive
        queue of its end, :mod:`dr.replay.sockdiag`); None when not found."""
        rc = self.replayed[c.id]
        sk = self._socks.get(c.id)
        if sk is None or rc.eof:
            return None
        try:
            if self._diag is None:
                from dr.replay.sockdiag import SockDiag
                self._diag = SockDiag(self.ns.socket)
            mine, theirs = sk.getsockname()[:2], sk.getpeername()[:2]
            n = self._diag.rqueue(theirs, mine)
            if n is None and sk.family == socket.AF_INET:  # a dual-stack listener's v4-mapped end
                n = self._diag.rqueue(("::ffff:" + theirs[0], theirs[1]), ("::ffff:" + mine[0], mine[1]))
            return n
        except OSError:
            return None

    def _wait_read(self, prev: Connection) -> None:
        """Hold the recorded order across connections: before a request goes out on
        another connection, the program must have read the last one sent on ``prev``.

        Sending both at once would let the program pick which to read first (an
        epoll ready list does not keep arrival order), and commands on shared
        state (INCR, LPUSH) would run in another order than recorded. Gives up
        when the program stays idle without reading (it answers differently), and
        says so on ``prev``.
        """
        rc = self.replayed[prev.id]
        deadline = time.monotonic() + PATIENCE_S
        since = time.monotonic_ns()
        pause = 0.00005
        while not rc.eof and rc.error is None:
            gen = self._read_gen
            n = self._unread(prev)
            if not n:
                return  # read (or the socket is gone: nothing left to order)
            quiet = min(time.monotonic_ns() - since, self.idle_ns())
            if quiet >= QUIET_MIN_S * 1e9 or time.monotonic() > deadline or not self._check_alive():
                rc.order_note = (rc.order_note or f"the program left {n} request byte(s) unread when "
                                 "the next connection's request was due: the recorded order across "
                                 "connections was not held from here")
                return
            # The supervisor wakes us as soon as the program has read from one of dr's
            # connections (program_read); the pause only bounds a missed wake-up.
            with self._read_cv:
                if self._read_gen == gen:
                    self._read_cv.wait(pause)
            pause = min(pause * 2, 0.005)

    def program_read(self, cid: int) -> None:
        """The supervisor's hook: the program just read from connection ``cid``."""
        with self._read_cv:
            self._read_gen += 1
            self._read_cv.notify_all()

    def _do(self, item: PlanItem) -> Step:
        self._i += 1
        t, _idx, kind, c, ch = item
        rc = self.replayed[c.id]
        self._wait_before(t)
        if kind == "send" and self._last_sent is not None and self._last_sent is not c:
            self._wait_read(self._last_sent)
        if self.clock is not None:
            nxt = self._plan[self._i][0] if self._i < len(self._plan) else None
            self.clock.at(t, nxt)
        if kind == "open":
            try:
                sk = self._connect(c)
            except OSError as e:
                rc.error = f"connect to the program failed: {e.strerror or e}"
                tgt = c.listener or c.local
                if self._check_alive() and tgt is not None and not listen_matches(tgt, listening(self.pid)):
                    rc.error += f" (the program no longer listens on {tgt})"
                return Step("opened", f"#{c.id}: {rc.error}")
            rc.opened_ns = time.monotonic_ns()
            with self._cv:
                self._socks[c.id] = sk
                self._update_pending(c.id)
            self._watch(c, sk)
            return Step("opened", f"#{c.id} opened ({c.peer} -> {c.listener or c.local})")
        live = self._socks.get(c.id)
        if live is None:
            return Step(kind, f"#{c.id}: not open, skipped")
        sk = live
        try:
            if kind == "shutdown":
                sk.shutdown(socket.SHUT_WR)
                return Step("shutdown", f"#{c.id} closed by the client")
            assert ch is not None
            if not rc.sent_ns:
                rc.sent_ns = time.monotonic_ns()
            if self.wake_clock is not None:
                self.wake_clock.sent(ch.woke_ns)
            sk.sendall(ch.data)
            self._last_sent = c
            rc.sent_bytes += len(ch.data)
            self._last_io[c.id] = time.monotonic_ns()
            return Step("sent", f"#{c.id} sent {len(ch.data)} bytes")
        except OSError as e:
            rc.error = rc.error or f"send failed: {e.strerror or e}"
            return Step(kind, f"#{c.id}: {rc.error}")
