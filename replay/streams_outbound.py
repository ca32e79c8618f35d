"""Stand-ins for the recorded dependencies of a streams replay.

For every address the recording shows the service talking to, dr listens on that
address inside the sandbox and plays the recorded peer: each request the program
sends is matched to a recorded request by order and content and answered with the
recorded response. A request with no recorded match is a miss, never guessed.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from dr.replay.connections import IN, OUT, Addr, Connection
from dr.replay.streams_units import prefix as _prefix
from dr.replay.streams_watch import QUIET_S

__all__ = ["OutboundMiss", "Outbound"]


@dataclass(frozen=True, slots=True)
class OutboundMiss:
    """A request the replayed program sent to a dependency with no recorded match."""

    peer: str
    request: bytes
    reason: str


class Outbound:
    """Plays back the recorded peers at one address for the replayed program."""

    def __init__(self, session: Any, addr: Addr, convs: list[Connection]) -> None:
        self.s = session
        self.addr = addr
        self.convs = convs
        self.used: set[int] = set()  # conversations whose banner was served
        self.used_dgrams: set[tuple[int, int]] = set()  # (conversation, datagram) answered
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None

    def start(self) -> None:
        fam = socket.AF_INET6 if self.addr.family == "inet6" else socket.AF_INET
        stream = self.convs[0].proto != "udp"

        sk = self.s.ns.socket(fam, socket.SOCK_STREAM if stream else socket.SOCK_DGRAM)
        try:
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sk.bind((self.addr.host, self.addr.port))
            if stream:
                sk.listen(128)
        except OSError:
            sk.close()
            raise
        self.sock = sk
        target = self._accept_loop if stream else self._udp_loop
        threading.Thread(target=target, name=f"dr-peer-{self.addr}", daemon=True).start()

    # -- TCP

    def _accept_loop(self) -> None:
        assert self.sock is not None
        while not self.s.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _pool(self) -> None:
        """Every recorded request at this address, in recorded order: the exchange pool."""
        if hasattr(self, "_ex"):
            return
        self._ex: list[tuple[Connection, int, bytes, Any]] = []
        self._wild: dict[tuple[int, int], frozenset[int]] = {}
        self._used: set[tuple[int, int]] = set()
        for c in sorted(self.convs, key=lambda c: (c.first_ts or 0, c.id)):
            for i, ex in enumerate(c.exchanges()):
                if ex.request is not None:  # a response to a request from before the capture has none
                    self._ex.append((c, i, ex.request.data, ex.response))
                    masked = ex.request.masked
                    if masked:  # redacted request bytes match anything
                        self._wild[(c.id, i)] = frozenset(o for a, n in masked for o in range(a, a + n))

    def _match(self, conv: Connection | None, pos: int, pending: bytes) -> tuple[Any, bool]:
        """(exchange, still possible) for the bytes ``pending`` of a live connection.

        The next recorded exchange of the connection's conversation comes first;
        then the first unused exchange with the same request anywhere at this
        address (a fresh connection may carry requests that a pooled connection,
        opened before the capture, carried in the recording).
        """
        with self.lock:
            self._pool()
            maybe = False
            order = [e for e in self._ex if conv is not None and e[0] is conv and e[1] >= pos]
            order += [e for e in self._ex if e not in order]
            for e in order:
                key = (e[0].id, e[1])
                if key in self._used:
                    continue
                req = e[2]
                wild = self._wild.get(key)
                if req and _prefix(req, pending, wild):
                    self._used.add(key)
                    return e, True
                if _prefix(pending, req, wild):
                    maybe = True
            return None, maybe

    def _greeting(self) -> Connection | None:
        """A conversation opened during the capture whose peer spoke first (a banner)."""
        with self.lock:
            self._pool()
            for c in self.convs:
                if c.began_before_capture or c.id in self.used:
                    continue
                ex = c.exchanges()
                if ex and ex[0].request is None and ex[0].response is not None:
                    self.used.add(c.id)
                    return c
        return None

    def _send_msg(self, sk: socket.socket, msg: Any) -> None:
        for ch in msg.chunks:
            if ch.data:
                sk.sendall(ch.data)

    def _serve(self, sk: socket.socket) -> None:
        sk.settimeout(QUIET_S)
        conv = self._greeting()
        pos = 0
        if conv is not None:
            self._send_msg(sk, conv.exchanges()[0].response)
            pos = 1
        pending = b""
        try:
            while True:
                if conv is not None and pos >= len(conv.exchanges()) and not pending:
                    if any(ch.eof for ch in conv.chunks) or conv.closed_ns is not None:
                        break  # the recorded peer hung up (or the program did) here
                try:
                    data = sk.recv(65536)
                except socket.timeout:
                    if pending and self.s.idle_ns() >= QUIET_S * 1e9:
                        self._miss(conv, pending, "the request stopped short of any recorded request")
                        break
                    continue  # no request yet, or the program is still at work on the rest of it
                if not data:
                    if pending:
                        self._miss(conv, pending, "the connection closed mid-request")
                    break
                pending += data
                while pending:
                    ex, maybe = self._match(conv, pos, pending)
                    if ex is None:
                        if not maybe:
                            where = f" (after request {pos} of recorded conversation #{conv.id})" if conv else ""
                            self._miss(conv, pending, f"no recorded request to this address matches{where}")
                            return
                        break
                    c, i, req, resp = ex
                    if c is not conv:
                        self.s.served.append((self.addr, c.id))
                    conv, pos = c, i + 1
                    pending = pending[len(req):]
                    if resp is not None:
                        self._send_msg(sk, resp)
        except OSError:
            pass
        finally:
            try:
                sk.close()
            except OSError:
                pass

    def _miss(self, conv: Connection | None, data: bytes, reason: str) -> None:
        self.s.misses.append(OutboundMiss(str(self.addr), bytes(data[:4096]), reason))

    # -- UDP (DNS and other datagrams)

    def _udp_loop(self) -> None:
        assert self.sock is not None
        while not self.s.stopping:
            try:
                data, src = self.sock.recvfrom(65536)
            except OSError:
                return
            answer = self._udp_answer(data)
            if answer is None:
                self._miss(None, data, "no recorded datagram to this address matches")
                continue
            try:
                self.sock.sendto(answer, src)
            except OSError:
                pass

    def _udp_answer(self, q: bytes) -> bytes | None:
        dns = self.addr.port == 53
        with self.lock:
            for c in self.convs:
                msgs = [ch for ch in c.chunks if not ch.eof]
                for i, ch in enumerate(msgs):
                    if ch.dir != OUT or (c.id, i) in self.used_dgrams:
                        continue
                    same = ch.data[2:] == q[2:] if dns else ch.data == q
                    if not same:
                        continue
                    for ans in msgs[i + 1:]:
                        if ans.dir == IN and (not dns or ans.data[:2] == ch.data[:2]):
                            self.used_dgrams.add((c.id, i))
                            return q[:2] + ans.data[2:] if dns else ans.data
        return None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
