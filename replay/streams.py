"""Streams replay: re-drive an attach-mode trace's connections against a fresh process.

``dr capture --pid`` starts mid-flight, so the service's memory before the
capture is unknown and a syscall-exact replay is impossible. A streams replay
instead starts the recorded command (or another build, ``cmd``) fresh and
replays what crossed its sockets:

1. **Start-up.** The command runs natively in the strict replay's sandbox
   (:mod:`dr.replay.sandbox`: user, mount, pid, net, uts, ipc namespaces; the
   root read-only under a scratch overlay; loopback only; the recorded pid and
   hostname), supervised by :mod:`dr.replay.streams_supervisor`, which lets its
   syscalls run but answers time and getrandom from the recording. Recorded peer
   and dependency addresses are added to the sandbox's ``lo``, so nothing can
   reach a real network. dr waits until the program listens on every recorded
   listening address (matched by address and port through ``/proc/PID/net/tcp``).
   When any part of the sandbox cannot be set up, the replay stops with one
   line naming it; there is no fallback (docs/security.md).
2. **Outbound.** For every address the recording shows the service talking to,
   dr listens on that address inside the sandbox and plays the recorded peer:
   each request the program sends is matched to a recorded request by order and
   content — the next one of the same conversation first, then the first unused
   one at that address (pooled connections opened before the capture are served
   this way) — and answered with the recorded response chunks. A request with no
   recorded match is reported (``misses``) and its connection closed: nothing is
   guessed. Recorded DNS answers (UDP port 53) are served the same way, with the
   query id rewritten.
3. **Inbound.** Each recorded accepted connection is opened again — a real TCP
   connection inside the sandbox's network namespace, so the program's own
   ``accept`` returns it, from the recorded client address when it can be bound
   — and its request chunks are sent with their recorded boundaries, in recorded
   order: before a chunk goes, dr waits until every response the program had
   written before it read that chunk (in recorded time) has arrived, counted in
   protocol messages (HTTP/1.x, RESP) so that answers of another length do not
   stall the schedule. Connections that overlapped in the recording overlap in
   the replay.
4. **Compare.** :mod:`dr.replay.compare` sets each replayed response stream
   beside the recorded one.

The session is a step machine (:meth:`StreamsSession.step`); :func:`run_streams`
loops it, :func:`cli_streams` is what ``dr replay`` runs for an attach trace.
Payloads the capture truncated at its snaplen are sent as far as captured.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dr.errors import DrError, ExitCode, ReplayError, UsageError
from dr.replay.connections import IN, OUT, Addr, Chunk, Connection, Conversations, reconstruct

__all__ = ["StreamsSession", "Step", "ReplayedConn", "OutboundMiss", "StreamsResult",
           "run_streams", "recorded_command", "recorded_root", "is_attach_trace", "attach_mode", "cli_streams"]

#: Longest wait for connect(2) to the replayed program.
WAIT_S = 5.0
#: How long a connection that owes responses may stay quiet — no bytes on it while
#: the program and dr's helpers are idle (see :class:`_Activity`) — before dr
#: stops waiting for it. Idle time only: a program slowed by CPU load is not quiet.
QUIET_S = 2.0
#: The least a connection may stay quiet before dr stops waiting for a response
#: the recorded program gave quickly (see StreamsSession._quiet_ns).
QUIET_MIN_S = 0.5
#: Longest wait for owed responses while the program keeps working (a program
#: that spins without answering ends each wait here).
PATIENCE_S = 60.0
#: How long the program may take to open its recorded listening sockets.
STARTUP_S = 20.0


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
class OutboundMiss:
    """A request the replayed program sent to a dependency with no recorded match."""

    peer: str
    request: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Step:
    """One step's result: ``kind`` ("started", "opened", "sent", "shutdown",
    "finished", "done") and a line of text; ``report`` set on "done"."""

    kind: str
    text: str
    report: Any = None


@dataclass(slots=True)
class StreamsResult:
    """What :func:`run_streams` returns: the comparison report and the exit code."""

    report: Any
    exit_code: int


def recorded_root(meta: dict, rootfs: str = "/") -> str:
    """The root filesystem to run the program on.

    ``rootfs`` when given (not "/"). A process captured in a container (its root
    not the capture host's: metadata ``root``) runs on that root: the directory
    the capture host saw it at, or the live ``/proc/PID/root``, whichever is
    still the same directory (device and inode). Raises ReplayError asking for
    ``--rootfs`` when neither is.
    """
    r = meta.get("root")
    if rootfs != "/" and not os.path.isdir(rootfs):
        raise ReplayError(f"--rootfs {rootfs}: no such directory; give the root filesystem the program ran on")
    if rootfs != "/" or not isinstance(r, dict) or r.get("same", True):
        return rootfs
    for cand in (str(r.get("path") or ""), f"/proc/{meta.get('pid')}/root"):
        if not cand or cand == "/":
            continue
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (r.get("dev"), r.get("ino")):
            return cand
    raise ReplayError(f"the recorded process ran in another root filesystem (a container; "
                      f"{r.get('path')!r} on the capture host), which is not here; give it with --rootfs DIR")


def _inside_root(meta: dict, path: str) -> str:
    """A path the capture host read through /proc (cwd) as the process saw it in its root."""
    r = meta.get("root")
    base = str(r.get("path") or "/") if isinstance(r, dict) and not r.get("same", True) else "/"
    if base != "/" and (path == base or path.startswith(base.rstrip("/") + "/")):
        return path[len(base.rstrip("/")):] or "/"
    return path


def recorded_command(meta: dict, cmd: str | list[str] | None = None, root: str = "/") -> list[str]:
    """The argv to start: the command line the process was started with, or ``cmd``.

    The recorded command is the metadata's ``exec`` argv (capture/cmdline.py:
    read from the process's initial stack, as it was at exec), else ``argv``
    (what /proc showed). ``cmd``: a shell-quoted string or a list. One word
    naming an existing file replaces the recorded executable and keeps the
    recorded arguments; several words are the whole command line.

    Raises ReplayError naming what is missing and suggesting ``--cmd`` when the
    command cannot be rebuilt (the program rewrote its command line and the
    original arguments are gone, or its executable does not exist here).
    """
    shown = [str(a) for a in (meta.get("argv") or [])]
    ex = meta.get("exec") if isinstance(meta.get("exec"), dict) else {}
    at_exec = ex.get("argv") if isinstance(ex.get("argv"), list) and ex.get("argv") else None
    argv = [str(a) for a in at_exec] if at_exec else shown
    if cmd:
        words = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
        if len(words) == 1 and os.path.isfile(words[0]) and argv and not (ex.get("rewritten") and not at_exec):
            return [words[0], *argv[1:]]
        return words
    if not argv:
        raise ReplayError("the trace records no command line (argv); give the command with --cmd")
    if ex.get("rewritten") and not at_exec:
        lost = ", ".join(str(i) for i in ex.get("lost") or []) or "all"
        raise ReplayError(f"the recorded process rewrote its command line (/proc showed "
                          f"{shlex.join(shown)!r}) and argument(s) {lost} of the command it was started "
                          "with are gone from its memory; give the command with --cmd")
    exe = (meta.get("exe") or {}).get("path") if isinstance(meta.get("exe"), dict) else meta.get("exe")
    execfn = ex.get("execfn")
    exe = _inside_root(meta, str(exe)) if exe else exe

    def isfile(p: str) -> bool:  # inside the root the program runs on
        return os.path.isfile(os.path.join(root, p.lstrip("/"))) if root != "/" else os.path.isfile(p)

    found = isfile(argv[0]) if "/" in argv[0] else (bool(_which(argv[0])) if root == "/" else True)
    if not found:
        # The name it was run by (a multi-call binary's symlink) before the resolved executable.
        for alt in (execfn, exe):
            if alt and os.path.isabs(str(alt)) and isfile(str(alt)):
                argv[0] = str(alt)
                found = True
                break
    if not found:
        what = "its executable " + (f"{exe} " if exe else "") + f"(run as {argv[0]!r})"
        raise ReplayError(f"cannot rebuild the recorded command: {what} does not exist on this "
                          "host; give the command with --cmd")
    return argv


def other_build(meta: dict, argv: list[str]) -> bool:
    """Whether ``argv`` runs other code than the recording: another executable
    (sha256 of the file, or its build-id, against ``meta["exe"]``) or other
    arguments, unless each differing argument names a file with the same bytes
    as the recorded one. ``--cmd`` naming the recorded binary is not another build.
    """
    import hashlib

    def digest(path: str) -> str | None:
        # Paths come from the trace: a regular file only, opened without blocking and
        # read to its size at open (a fifo blocked, /dev/zero was hashed forever).
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except (OSError, ValueError):
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            h, left = hashlib.sha256(), st.st_size
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                h.update(chunk)
                left -= len(chunk)
            return h.hexdigest()
        except OSError:
            return None
        finally:
            os.close(fd)

    if not argv:
        return True
    exe = meta.get("exe") if isinstance(meta.get("exe"), dict) else {}
    path = argv[0] if "/" in argv[0] else (_which(argv[0]) or argv[0])
    want = exe.get("sha256")
    if want:
        if digest(path) != want:
            return True
    else:
        from dr.formats.elf import build_id
        try:
            if not exe.get("build_id") or build_id(path) != exe.get("build_id"):
                return True
        except OSError:
            return True
    recorded = [str(a) for a in (meta.get("argv") or [])]
    if len(recorded) != len(argv):
        return True
    cwd = str(meta.get("cwd") or "")
    for old, new in zip(recorded[1:], argv[1:]):
        if old != new:
            a, b = digest(os.path.join(cwd, old)), digest(new)
            if a is None or a != b:
                return True
    return False


def _which(name: str) -> str | None:
    import shutil
    return shutil.which(name)


def _env(meta: dict) -> dict[str, str]:
    env = meta.get("env")
    if isinstance(env, dict) and env:
        return {str(k): str(v) for k, v in env.items()}
    if isinstance(env, list) and env:
        out = {}
        for kv in env:
            k, _, v = str(kv).partition("=")
            out[k] = v
        return out
    return dict(os.environ)


def _listening(pid: int) -> set[tuple[str, int]]:
    """(host, port) of every TCP socket in LISTEN state in ``pid``'s network namespace."""
    out: set[tuple[str, int]] = set()
    for name, fam in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 4 or parts[3] != "0A":
                        continue
                    hexaddr, hexport = parts[1].split(":")
                    raw = bytes.fromhex(hexaddr)
                    # /proc/net/tcp prints each 32-bit word in host (little endian) order.
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                    out.add((socket.inet_ntop(fam, raw), int(hexport, 16)))
        except OSError:
            continue
    return out


def _listen_matches(rec: Addr, live: set[tuple[str, int]]) -> bool:
    for host, port in live:
        if port != rec.port:
            continue
        if host in ("0.0.0.0", "::") or rec.is_wildcard or host == rec.host:
            return True
        if host.startswith("::ffff:") and host[7:] == rec.host:
            return True
    return False


class _Units:
    """Counts complete responses in a growing byte stream.

    ``proto``: "resp" (each RESP reply, redis.io protocol spec), "http" (each
    HTTP/1.x message with a Content-Length or chunked body, RFC 9112 §6), or
    "bytes" (each byte). Waiting in responses rather than bytes keeps the
    schedule when a replayed reply has another length than the recorded one.
    """

    def __init__(self, proto: str) -> None:
        self.proto = proto
        self.buf = b""
        self.n = 0

    def feed(self, data: bytes) -> int:
        if self.proto == "bytes":
            self.n += len(data)
            return self.n
        self.buf += data
        while self.buf:
            try:
                end = self._end()
            except ValueError:
                self.proto = "bytes"  # not the protocol it looked like: count bytes from here
                self.n += len(self.buf)
                self.buf = b""
                break
            if end < 0:
                break
            self.n += 1
            self.buf = self.buf[end:]
        return self.n

    def _end(self) -> int:
        from dr.replay.compare import _resp_value_end
        if self.proto == "resp":
            return _resp_value_end(self.buf, 0)
        return _http_end(self.buf)


def _http_end(buf: bytes) -> int:
    """End offset of the first HTTP/1.x message in ``buf``; -1 when incomplete or
    when its body runs to the end of the connection (RFC 9112 §6.3)."""
    head = buf.find(b"\r\n\r\n")
    if head < 0:
        return -1
    if not buf.startswith(b"HTTP/1."):
        raise ValueError("not an HTTP response")
    lines = buf[:head].split(b"\r\n")
    status = lines[0].split(b" ")[1] if len(lines[0].split(b" ")) > 1 else b""
    hdr = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        hdr[k.strip().lower()] = v.strip()
    p = head + 4
    if status[:1] == b"1" or status in (b"204", b"304"):
        return p
    if b"chunked" in hdr.get(b"transfer-encoding", b"").lower():
        while True:
            le = buf.find(b"\r\n", p)
            if le < 0:
                return -1
            n = int(buf[p:le].split(b";")[0], 16)
            p = le + 2
            if n == 0:
                end = buf.find(b"\r\n\r\n", p - 2)
                return -1 if end < 0 else end + 4
            p += n + 2
            if p > len(buf):
                return -1
    cl = hdr.get(b"content-length")
    if cl is None or not cl.isdigit():
        return -1
    end = p + int(cl)
    return end if end <= len(buf) else -1


def _prefix(head: bytes, data: bytes, wild: frozenset[int] | None) -> bool:
    """``data`` starts with ``head``, where offsets in ``wild`` (redacted) match any byte."""
    if len(data) < len(head):
        return False
    if not wild:
        return data.startswith(head)
    return all(i in wild or data[i] == b for i, b in enumerate(head))


def _proto_of(c: Connection) -> str:
    rsp = c.response_bytes[:8]
    if rsp.startswith(b"HTTP/1."):
        return "http"
    if rsp[:1] in (b"+", b"-", b":", b"$", b"*", b"%", b"_", b"#") and c.request_bytes[:1] in (b"*", b""):
        return "resp"
    return "bytes"


def _task_states(pid: int) -> list[str]:
    """The scheduler state letter (proc(5), /proc/PID/task/TID/stat field 3) of every
    thread of ``pid`` and of its descendants; [] once it is gone."""
    out: list[str] = []
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/stat", "rb") as f:
                    st = f.read()
                out.append(chr(st[st.rindex(b")") + 2]))
                with open(f"/proc/{p}/task/{tid}/children", "rb") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError, IndexError):
                continue
    return out


class _Activity:
    """Is the replay still making progress? For telling "slow" from "not answering".

    Busy when a thread of the replayed program (and its descendants) or one of
    dr's own helper threads (the seccomp supervisor, the stand-ins for the
    dependencies, the connection readers) is running or runnable (state R) or in
    uninterruptible sleep (D). A response in progress always has one such thread:
    the handler computing it, waiting for CPU, or waiting on dr (whose helper is
    then runnable). Idle — every thread asleep — is when waiting for a response
    may end after QUIET_S; on a loaded machine the wall time it takes does not
    matter. ``last_busy_ns``: CLOCK_MONOTONIC of the last busy sample.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.last_busy_ns = time.monotonic_ns()
        self._sampled_ns = 0

    def sample(self, every_ns: int = 10_000_000) -> int:
        """Look again (at most every ``every_ns``); ns the replay has been idle."""
        now = time.monotonic_ns()
        if now - self._sampled_ns >= every_ns:
            self._sampled_ns = now
            if self._busy():
                self.last_busy_ns = time.monotonic_ns()
        return max(0, time.monotonic_ns() - self.last_busy_ns)

    def _busy(self) -> bool:
        me = threading.get_native_id()
        for tid in os.listdir("/proc/self/task"):
            if int(tid) == me:
                continue
            try:
                with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                    st = f.read()
            except OSError:
                continue
            if st[st.rindex(b")") + 2:st.rindex(b")") + 3] in (b"R", b"D"):
                return True
        return any(s in "RD" for s in _task_states(self.pid)) if self.pid > 0 else False


class _Outbound:
    """Plays back the recorded peers at one address for the replayed program."""

    def __init__(self, session: "StreamsSession", addr: Addr, convs: list[Connection]) -> None:
        self.s = session
        self.addr = addr
        self.convs = convs
        self.used: set[int] = set()
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
                    if ch.dir != OUT or (c.id, i) in self.used:
                        continue
                    same = ch.data[2:] == q[2:] if dns else ch.data == q
                    if not same:
                        continue
                    for ans in msgs[i + 1:]:
                        if ans.dir == IN and (not dns or ans.data[:2] == ch.data[:2]):
                            self.used.add((c.id, i))
                            return q[:2] + ans.data[2:] if dns else ans.data
        return None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass


class StreamsSession:
    """A streams replay of one attach-mode trace, run one :meth:`step` at a time.

    ``trace``: path or TraceReader. ``cmd``: another build (see
    :func:`recorded_command`). ``ignore``: an :class:`dr.replay.compare.Ignore`
    or a TOML path. ``show_output``: let the program's stdout/stderr through.
    Raises ReplayError (start-up failed, no listening socket), UsageError.
    """

    def __init__(self, trace: Any, cmd: str | list[str] | None = None, ignore: Any = None,
                 show_output: bool = False, startup_timeout: float = STARTUP_S,
                 mode: str = "auto", rootfs: str = "/") -> None:
        if mode not in ("auto", "sandbox"):
            # There is no way to run a trace's command outside the sandbox (issue #15).
            raise UsageError(f"unknown streams mode {mode!r}; streams replay runs only in the sandbox")
        self.mode = mode
        from dr.replay import compare
        self.conversations: Conversations = trace if isinstance(trace, Conversations) else reconstruct(trace)
        self.meta = self.conversations.meta
        self.rootfs = recorded_root(self.meta, rootfs)
        self.argv = recorded_command(self.meta, cmd, root=self.rootfs)
        self.new_build = bool(cmd) and other_build(self.meta, self.argv)
        self.ignore = compare.load_ignore(ignore) if not isinstance(ignore, compare.Ignore) else ignore
        self.show_output = show_output
        self.startup_timeout = startup_timeout
        self.inbound = [c for c in self.conversations.inbound() if c.proto in ("tcp",)]
        self.skipped = [c for c in self.conversations.inbound() if c.proto not in ("tcp",)]
        self.replayed: dict[int, ReplayedConn] = {c.id: ReplayedConn(c) for c in self.inbound}
        self.misses: list[OutboundMiss] = []
        self.served: list[tuple[Addr, int]] = []
        self.listen_map: list[tuple[str, str]] = []
        self.stopping = False
        self.ns: Any = None
        self.proc: subprocess.Popen | None = None
        self.sandbox: Any = None
        self.supervisor: Any = None
        self.clock: Any = None
        self.wake_clock: Any = None
        self.first_pid: int | None = None
        self.pid = -1
        self.mode_used = ""
        self.mode_note: str | None = None
        self.outputs: list[_Outbound] = []
        self._socks: dict[int, socket.socket] = {}
        self._by_local: dict[int, Connection] = {}  # dr's client port -> connection
        self._pending: dict[int, int] = {}  # connection id -> recorded ts_enter of the next write owed
        self._last_io: dict[int, int] = {}  # connection id -> monotonic ns dr last sent or received
        self._cv = threading.Condition()
        self._activity: _Activity | None = None
        self._plan: list[tuple[int, int, str, Connection, Chunk | None]] = []
        self._i = 0
        self._state = "new"
        self._t0 = 0
        self._log: Any = None
        self.log_path: str | None = None
        self._keep_log = False
        self.wall_ns = 0
        self._last_item: dict[int, int] = {}  # connection id -> index of its last plan item
        self.died: str | None = None  # how the program ended mid-replay, with its last output
        self._last_sent: Connection | None = None  # connection of the last request chunk sent
        self._diag: Any = None  # SockDiag in the program's network namespace, made on first use

    def connections_done(self) -> int:
        """Connections whose every recorded request has been sent (for progress)."""
        return sum(1 for last in self._last_item.values() if last < self._i)

    def output_tail(self, n: int = 20) -> list[str]:
        """The replayed program's last ``n`` output lines (stdout and stderr), [] when unknown."""
        if not self.log_path:
            return []
        try:
            if self._log is not None:
                self._log.flush()
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 4096))
                return f.read().decode("utf-8", "replace").splitlines()[-n:]
        except (OSError, ValueError):
            return []

    def _check_alive(self) -> bool:
        """False once the program exited during the replay (then ``died`` says how)."""
        if self.died is not None:
            return False
        if self.stopping or self._t0 == 0:
            return True
        status = self._exited()
        if status is None:
            return True
        tail = [ln for ln in self.output_tail(5) if ln.strip()]
        how = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
        self.died = (f"the program {how} during the replay, after {self.connections_done()} of "
                     f"{len(self.inbound)} connection(s)"
                     + (f"; its last output: {' | '.join(tail[-3:])}" if tail else ""))
        return False

    # -- the step machine

    def step(self) -> Step:
        """Advance the replay by one action; ``kind == "done"`` carries the report."""
        try:
            if self._state == "new":
                self._state = "running"
                return self._start()
            if self._state == "running":
                if self._i < len(self._plan) and self._check_alive():
                    return self._do(self._plan[self._i])
                self._state = "finishing"
                return self._finish()
            if self._state == "finishing":
                self._state = "closed"
                return Step("done", "compared", self._compare())
            raise ReplayError("the streams replay is over")
        except DrError:
            self.close()
            raise

    def run(self) -> Any:
        """Step to the end; the comparison report."""
        try:
            while True:
                st = self.step()
                if st.kind == "done":
                    return st.report
        finally:
            self.close()

    # -- start-up

    def _start(self) -> Step:
        if not self.inbound:
            raise ReplayError("the trace shows no accepted TCP connection to replay; was the "
                              "service idle during the capture?")
        self._build_plan()
        # Only ever inside the full sandbox: if any part of it cannot be set up the
        # replay stops here with the sandbox's one line, and nothing has run.
        self._start_sandbox()
        self._await_listeners()
        self._activity = _Activity(self.pid)
        self._t0 = time.monotonic_ns()
        deps = ", ".join(str(o.addr) for o in self.outputs) or "none"
        where = "the replay sandbox (seccomp supervisor; the incident's clock)"
        return Step("started", f"started {shlex.join(self.argv)} (pid {self.pid}) in {where}; "
                               f"listening on {', '.join(r for _, r in self.listen_map)}; "
                               f"dependencies served from the trace: {deps}")

    def _prepare_namespace(self) -> None:
        """Recorded addresses on lo, and dr's stand-ins for the dependencies."""
        for c in self.conversations.connections:
            for a in (c.peer, c.local, c.listener):
                if a is not None and a.family != "unix":
                    self.ns.add_address(a.host)
        by_addr: dict[tuple[str, Addr], list[Connection]] = {}
        listen = {(l.addr.host, l.addr.port) for l in self.conversations.listeners}
        for c in self.conversations.outbound():
            if c.peer is None or c.peer.family == "unix":
                continue
            if (c.peer.host, c.peer.port) in listen:
                continue
            by_addr.setdefault((c.proto, c.peer), []).append(c)
        for (_proto, addr), convs in by_addr.items():
            ob = _Outbound(self, addr, convs)
            try:
                ob.start()
            except OSError as e:
                raise ReplayError(f"cannot stand in for the dependency at {addr}: {e.strerror or e}") from None
            self.outputs.append(ob)

    def _start_sandbox(self) -> None:
        from dr import schema
        from dr.replay.netns import NetNS
        from dr.replay.sandbox import Sandbox, SandboxSpec
        from dr.replay.streams_supervisor import (UNOBSERVED, ConnClock, RecordedRandom, StreamsSupervisor,
                                                  VirtualClock, WakeClock)
        exe = self.argv[0] if "/" in self.argv[0] else (_which(self.argv[0]) or self.argv[0])
        cwd = _inside_root(self.meta, str(self.meta.get("cwd") or "/"))
        pid = self.meta.get("pid")
        nspid = self.meta.get("nspid")
        if isinstance(nspid, list) and nspid and isinstance(nspid[-1], int):
            pid = nspid[-1]  # the pid the program saw, in its own pid namespace
        # The sandbox's init is pid 1: a container's init (pid 1) gets the next free one.
        self.first_pid = int(pid) if isinstance(pid, int) and pid > 2 else None
        spec = SandboxSpec(
            argv=tuple(self.argv), env=tuple(_env(self.meta).items()), exe=exe, cwd=cwd, root=self.rootfs,
            hostname=str(self.meta.get("hostname") or self.meta.get("host") or "dr-replay"),
            first_pid=self.first_pid,
            stdio="inherit" if self.show_output else "null",
            passthrough=frozenset(s.nr for s in schema.all_syscalls()
                                  if s.cls == schema.Class.PASSTHROUGH or s.name in UNOBSERVED))
        self.sandbox = Sandbox(spec)
        saved = None
        if not self.show_output:
            # The sandbox's stdio is inherited or /dev/null: lend it a log file for
            # the fork, so a program that fails at start-up can say why.
            fd, self.log_path = tempfile.mkstemp(prefix=f"dr-streams-{os.getpid()}-", suffix=".log")
            self._log = os.fdopen(fd, "wb")
            saved = (os.dup(1), os.dup(2))
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            spec = dataclasses.replace(spec, stdio="inherit")
            self.sandbox = Sandbox(spec)
        try:
            self.sandbox.start()
        finally:
            if saved is not None:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
        # The tracee waits at its first notified syscall (execve) until the supervisor runs.
        self.pid = self.sandbox.pid
        self.ns = NetNS.of_process(self.pid)
        self._prepare_namespace()
        first = self._plan[0][0] if self._plan else 0
        self.clock = VirtualClock(first, self.meta.get("clock_offsets") or self.meta.get("clock"),
                                  limit=self._clock_limit)
        self.wake_clock = WakeClock()
        self.supervisor = StreamsSupervisor(self.sandbox, self.clock, RecordedRandom(self.conversations.random_by_conn),
                                            ConnClock(self._by_local, frozenset(
                                                a.port for c in self.inbound for a in (c.listener or c.local,) if a),
                                                realtime_off=self.clock.realtime_off),
                                            wake_clock=self.wake_clock)
        self.supervisor.start()
        self.mode_used = "sandbox"

    def _exited(self) -> int | None:
        """The program's exit status once it ended, else None."""
        if self.proc is not None:
            return self.proc.poll()
        if self.sandbox is not None:
            st = self.sandbox.exit_status(0)
            return None if st is None else (os.waitstatus_to_exitcode(st) if st >= 0 else st)
        return None

    def _await_listeners(self) -> None:
        wanted = {}
        for c in self.inbound:
            if c.listener is not None:
                wanted[(c.listener.host, c.listener.port)] = c.listener
            elif c.local is not None:
                wanted[(c.local.host, c.local.port)] = c.local
        deadline = time.monotonic() + self.startup_timeout
        while True:
            live = _listening(self.pid)
            missing = [a for a in wanted.values() if not _listen_matches(a, live)]
            if not missing:
                break
            if (status := self._exited()) is not None:
                raise ReplayError(f"{shlex.join(self.argv)} exited with status {status} "
                                  f"before listening on {missing[0]}{self._log_hint()}")
            if time.monotonic() > deadline:
                raise ReplayError(f"the replayed program never listened on {missing[0]} (a recorded "
                                  f"listening socket) within {self.startup_timeout:.0f} s{self._log_hint()}")
            time.sleep(0.02)
        self.listen_map = []
        for a in wanted.values():
            live_match = sorted(f"{'[' + h + ']' if ':' in h else h}:{p}" for h, p in live
                                if _listen_matches(a, {(h, p)}))
            self.listen_map.append((str(a), live_match[0] if live_match else str(a)))

    def _log_hint(self) -> str:
        if self.log_path:
            try:
                if self._log:
                    self._log.flush()
                tail = open(self.log_path, "rb").read()[-300:].decode("utf-8", "replace").strip()
                if tail:
                    return f"; its last output: {tail.splitlines()[-1]}"
            except OSError:
                pass
        return ""

    def _build_plan(self) -> None:
        plan = []
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
        self._out_enters: dict[int, list[int]] = {}
        self._out_gaps: dict[int, list[int]] = {}
        self._units: dict[int, _Units] = {}
        for c in self.inbound:
            proto = _proto_of(c)
            u, marks, enters, gaps = _Units(proto), [], [], []
            last_in = c.opened_ns or (c.chunks[0].ts_enter if c.chunks else 0)
            for ch in c.chunks:
                if ch.dir == OUT:
                    marks.append((ch.ts_exit, u.feed(ch.data) if ch.complete else u.n + ch.total))
                    enters.append(ch.ts_enter)
                    gaps.append(max(0, ch.ts_exit - last_in))
                else:
                    last_in = ch.ts_exit
            self._out_marks[c.id] = marks
            self._out_enters[c.id] = enters
            self._out_gaps[c.id] = gaps
            self._units[c.id] = _Units(proto if u.proto == proto else "bytes")

    # -- driving

    def _connect(self, c: Connection) -> socket.socket:
        tgt = c.listener or c.local
        assert tgt is not None
        host = tgt.host
        if tgt.is_wildcard:
            host = c.local.host if c.local and not c.local.is_wildcard else (
                "::1" if tgt.family == "inet6" else "127.0.0.1")
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        rc = self.replayed[c.id]

        # Made in the namespace; bound and connected here (a socket keeps its namespace).
        sk = self.ns.socket(fam, socket.SOCK_STREAM)
        try:
            if c.peer is not None and c.peer.family == tgt.family and c.peer.port:
                # Present the recorded client address to the program when it is free.
                try:
                    sk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sk.bind((c.peer.host, c.peer.port))
                    rc.peer_bound = True
                except OSError:
                    sk.close()
                    sk = self.ns.socket(fam, socket.SOCK_STREAM)
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

    def _reader(self, c: Connection, sk: socket.socket) -> None:
        rc = self.replayed[c.id]
        while True:
            try:
                data = sk.recv(65536)
            except OSError as e:
                with self._cv:
                    rc.error = rc.error or f"receive failed: {e.strerror or e}"
                    rc.eof = True
                    self._pending.pop(c.id, None)
                    self._cv.notify_all()
                return
            now = time.monotonic_ns()
            with self._cv:
                if not data:
                    rc.eof = True
                    self._pending.pop(c.id, None)
                else:
                    rc.received.append((now - self._t0, data))
                    rc.done_ns = now
                    self._units[c.id].feed(data)
                    self._update_pending(c.id)
                    self._last_io[c.id] = now
                self._cv.notify_all()
            if not data:
                return

    def _update_pending(self, cid: int) -> None:
        """Recorded entry time of the next write the program owes on ``cid`` (caller holds _cv).

        The incident's clock never passes it while the connection is open, so a
        handler still at work never reads a time later than its recorded answer.
        """
        rc = self.replayed[cid]
        n = self._units[cid].n
        nxt = None
        if not rc.eof:
            for (_ts, cum), enter in zip(self._out_marks[cid], self._out_enters[cid]):
                if cum > n:
                    nxt = enter
                    break
        if nxt is None:
            self._pending.pop(cid, None)
        else:
            self._pending[cid] = nxt

    def _clock_limit(self) -> int | None:
        vals = list(self._pending.values())  # one C-level copy: safe against the readers' updates
        return min(vals) if vals else None

    def _need(self, cid: int, t: int | None) -> int:
        need = 0
        for ts, n in self._out_marks[cid]:
            if t is not None and ts >= t:
                break
            need = n
        return need

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
        for (_ts, cum), gap in zip(self._out_marks[cid], self._out_gaps[cid]):
            if cum > n:
                return min(QUIET_S * 1e9, QUIET_MIN_S * 1e9 + 2 * gap)
        return QUIET_S * 1e9

    def _wait_before(self, t: int) -> None:
        """Wait until each open connection got the responses recorded before ``t``."""
        deadline = time.monotonic() + PATIENCE_S
        with self._cv:
            while any(self._behind(cid, t) for cid in self._socks):
                left = deadline - time.monotonic()
                if left <= 0 or not self._check_alive():
                    return
                self._cv.wait(min(left, 0.02))

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
            n = self._unread(prev)
            if not n:
                return  # read (or the socket is gone: nothing left to order)
            quiet = min(time.monotonic_ns() - since, self.idle_ns())
            if quiet >= QUIET_MIN_S * 1e9 or time.monotonic() > deadline or not self._check_alive():
                rc.order_note = (rc.order_note or f"the program left {n} request byte(s) unread when "
                                 "the next connection's request was due: the recorded order across "
                                 "connections was not held from here")
                return
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def _do(self, item: tuple[int, int, str, Connection, Chunk | None]) -> Step:
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
                if self._check_alive() and tgt is not None and not _listen_matches(tgt, _listening(self.pid)):
                    rc.error += f" (the program no longer listens on {tgt})"
                return Step("opened", f"#{c.id}: {rc.error}")
            rc.opened_ns = time.monotonic_ns()
            with self._cv:
                self._socks[c.id] = sk
                self._update_pending(c.id)
            threading.Thread(target=self._reader, args=(c, sk), daemon=True).start()
            return Step("opened", f"#{c.id} opened ({c.peer} -> {c.listener or c.local})")
        sk = self._socks.get(c.id)
        if sk is None:
            return Step(kind, f"#{c.id}: not open, skipped")
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

    def _finish(self) -> Step:
        """Let every connection deliver its responses, then close what is left."""
        if not self._check_alive():
            for rc in self.replayed.values():
                if not rc.opened_ns and rc.error is None:
                    rc.error = "not replayed: the program had exited"
        deadline = time.monotonic() + PATIENCE_S
        with self._cv:
            while time.monotonic() < deadline:
                waiting = [cid for cid in self._socks if self._behind(cid, None)]
                # A program that closed connections in the recording gets a moment to close them.
                closing = [cid for cid in self._socks
                           if not self.replayed[cid].eof and self.replayed[cid].conn.closed_ns is not None
                           and not any(ch.eof for ch in self.replayed[cid].conn.chunks)
                           and min(time.monotonic_ns() - self._last_io.get(cid, 0), self.idle_ns())
                           < QUIET_S * 1e9 / 4]
                if (not waiting and not closing) or not self._check_alive():
                    break
                self._cv.wait(0.02)
        for sk in self._socks.values():
            try:
                sk.close()
            except OSError:
                pass
        self.wall_ns = time.monotonic_ns() - self._t0
        self._stop_program()
        return Step("finished", f"replayed {len(self.inbound)} connection(s) in {self.wall_ns / 1e9:.2f} s")

    def _compare(self) -> Any:
        from dr.replay import compare
        rep = compare.compare(self.conversations, list(self.replayed.values()), self.ignore,
                              misses=self.misses, skipped=self.skipped)
        rep.command = shlex.join(self.argv)
        rep.new_build = self.new_build
        rep.wall_s = self.wall_ns / 1e9
        rep.output_log = None
        if not rep.all_identical or self.died:
            # The program's last words may explain a difference (a traceback behind a 500).
            rep.output_tail = self.output_tail()
        if self.died:
            rep.notes.insert(0, self.died)
            for r in rep.connections:
                if r.status != "identical" and not r.first_difference:
                    r.first_difference = "not answered: the program had exited"
        rep.mode = self.mode_used
        by_proc: dict[int, int] = {}
        for c in self.inbound:
            by_proc[c.tgid] = by_proc.get(c.tgid, 0) + 1
        if len(by_proc) > 1:
            # Pre-forked workers: the kernel chose the accepting process, in production as here.
            each = ", ".join(f"{n} by pid {p}" for p, n in sorted(by_proc.items()))
            rep.notes.append(f"the recording's connections were accepted by {len(by_proc)} processes ({each}) "
                             "sharing the listening socket; each was delivered to the replayed service as a "
                             "whole, since which worker accepts is the kernel's choice; a response that "
                             "depended on the worker would show here as a difference")
        if self.rootfs != "/":
            rep.notes.append(f"ran on the root filesystem {self.rootfs}"
                             + (" (the recorded process's own: it ran in a container)"
                                if isinstance(self.meta.get("root"), dict) and not self.meta["root"].get("same", True)
                                else ""))
        rep.listening = [{"recorded": r, "replayed": p} for r, p in self.listen_map]
        if self.mode_note:
            rep.notes.append(self.mode_note)
        if self.supervisor is not None:
            sub = {k: v for k, v in self.supervisor.counts.items() if k != "continued"}
            rep.substituted = sub
            rep.notes = [n for n in rep.notes if not n.startswith("time, randomness and pids")]
            what = ", ".join(f"{k} {v}" for k, v in sorted(sub.items())) or "none"
            if self.supervisor.vdso_patched:
                rep.notes.append(f"the program saw the incident's clock and recorded randomness "
                                 f"(substituted: {what}); pid {self.first_pid or 'unset'} as recorded")
            else:
                rep.notes.append(f"the vDSO could not be rewritten: time was the host's (substituted: {what})")
            if self.supervisor.error:
                rep.notes.append(f"the supervisor stopped early: {self.supervisor.error}")
            rep.refused = [r.to_dict() for r in self.supervisor.refused]
            if rep.refused:
                shown = "; ".join(f"{r['syscall']} {r['target']} ({r['errno']})" for r in rep.refused[:8])
                more = f"; and {len(rep.refused) - 8} more" if len(rep.refused) > 8 else ""
                rep.notes.append(f"the sandbox refused {len(rep.refused)} attempt(s) to reach the host: "
                                 f"{shown}{more}")
        return rep

    # -- teardown

    def _stop_program(self) -> None:
        self.stopping = True
        if self.sandbox is not None:
            self.sandbox.kill()
            if self.supervisor is not None:
                self.supervisor.stop()
            self.sandbox.close()
            self.sandbox = None
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for o in self.outputs:
            o.close()

    def close(self) -> None:
        """Stop the program, dr's stand-ins and the namespace (idempotent)."""
        if self._diag is not None:
            self._diag.close()
            self._diag = None
        for sk in list(self._socks.values()):
            try:
                sk.close()
            except OSError:
                pass
        self._stop_program()
        if self.ns is not None:
            self.ns.close()
            self.ns = None
        if self._log is not None:
            self._log.close()
            self._log = None
            try:
                if self.log_path and (not self._keep_log or os.path.getsize(self.log_path) == 0):
                    os.unlink(self.log_path)  # kept only when it may explain a failure
                    self.log_path = None
            except OSError:
                pass


def run_streams(trace: Any, cmd: str | list[str] | None = None, ignore: Any = None,
                report: str | None = None, show_output: bool = False,
                echo: Any = None, rootfs: str = "/", mode: str = "auto",
                progress: Any = None) -> StreamsResult:
    """The CLI's streams replay: run the session, write ``report`` (JSON), return the verdict.

    ``echo``: a callable taking one line for progress (None: quiet);
    ``progress``: a callable taking (connections done, total). Exit code OK
    when every response matches, DIVERGED otherwise. On a DrError the report
    (verdict ERROR, the error's line) is written before the error propagates.
    """
    from dr.replay import compare
    sess = None
    failed_conv = None
    try:
        conv = trace if isinstance(trace, Conversations) else reconstruct(trace)
        failed_conv = conv
        sess = StreamsSession(conv, cmd=cmd, ignore=ignore, show_output=show_output, rootfs=rootfs, mode=mode)
        while True:
            st = sess.step()
            if progress is not None and st.kind in ("opened", "sent", "shutdown"):
                progress(sess.connections_done(), len(sess.inbound))
            if echo is not None and st.kind in ("started", "finished"):
                echo(st.text)
            if st.kind == "done":
                rep = st.report
                break
    except DrError as e:
        if report:
            # A replay that could not run still leaves its report: what failed, and what was known.
            compare.write_json(_failure_report(sess, failed_conv, e), report)
        raise
    finally:
        if sess is not None:
            sess.close()
    if report:
        compare.write_json(rep, report)
    return StreamsResult(rep, int(ExitCode.OK if rep.all_identical else ExitCode.DIVERGED))


def _failure_report(sess: "StreamsSession | None", conv: Conversations | None, err: DrError) -> Any:
    """The report of a replay that could not run: verdict ERROR, the one-line reason."""
    from dr.replay import compare
    rep = compare.Report([], error=err.message)
    if conv is not None:
        rep.notes = list(conv.notes)
        rep.recorded_connections = len(conv.inbound())
        rep.cut_short = conv.cut_short
    if sess is not None:
        rep.command = shlex.join(sess.argv)
        rep.new_build = sess.new_build
        rep.output_tail = sess.output_tail()
    return rep


def is_attach_trace(meta: dict) -> bool:
    """True when the trace was recorded with ``--pid`` (mode "attach"): replay it with streams."""
    return str((meta or {}).get("mode", "")).lower() == "attach"


def attach_mode(path: str) -> bool:
    """True when ``path`` is a trace whose metadata says mode "attach".

    False for spawn-mode traces and for anything unreadable as a trace (a
    bundle, a corrupt file): the caller's own path then handles or reports it.
    """
    from dr.formats.trace import TraceReader
    try:
        with TraceReader(path) as r:
            return is_attach_trace(r.meta)
    except (DrError, OSError):
        return False


def cli_streams(trace: str, cmd: str | list[str] | None = None, ignore: str | None = None,
                report: str | None = None, show_output: bool = False, verbose: bool = False,
                rootfs: str = "/") -> int:
    """``dr replay TRACE`` for an attach-mode trace: print progress and the report; the exit code.

    For the CLI's dispatch (dr/cli/replay.py). Raises DrError subclasses for
    bad input; returns ExitCode.OK or ExitCode.DIVERGED.
    """
    import sys

    tty = sys.stderr.isatty()
    shown = [0.0, False]  # last progress line (monotonic s), a line is open

    def echo(line: str) -> None:
        if shown[1]:
            sys.stderr.write("\n")
            shown[1] = False
        sys.stderr.write(f"dr: {line}\n")

    def progress(done: int, total: int) -> None:
        # On a terminal only, at most 10 times a second: connections done of total.
        now = time.monotonic()
        if now - shown[0] >= 0.1 or done == total:
            shown[0], shown[1] = now, True
            sys.stderr.write(f"\rdr: replaying: {done} of {total} connection(s) done")
            sys.stderr.flush()

    try:
        res = run_streams(trace, cmd=cmd, ignore=ignore, report=report, show_output=show_output, echo=echo,
                          rootfs=rootfs, progress=progress if tty else None)
    finally:
        if shown[1]:
            sys.stderr.write("\n")
    sys.stdout.write(res.report.text(verbose=verbose) + "\n")
    if report:
        sys.stdout.write(f"report: {report}\n")
    return res.exit_code
