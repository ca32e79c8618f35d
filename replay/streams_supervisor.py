"""The seccomp side of a streams replay: the program sees the incident's clock.

A streams replay runs the program in the strict replay's sandbox
(:class:`dr.replay.sandbox.Sandbox`: user, mount, pid, net, uts and ipc
namespaces, read-only root under a scratch overlay, the recorded hostname and
pid). Every syscall the schema does not class as passthrough reaches this
supervisor as a seccomp notification. Unlike strict replay it lets almost all of
them run (``SECCOMP_USER_NOTIF_FLAG_CONTINUE``): the program's start-up is
native, and its sockets are real ones that dr drives from inside the sandbox's
network namespace. It answers from the recording only where the calls match:

- **time** — clock_gettime (REALTIME, MONOTONIC, BOOTTIME and their COARSE/RAW
  variants), gettimeofday and time return :class:`VirtualClock`, which follows
  the recorded schedule: while dr re-drives the step recorded at CLOCK_MONOTONIC
  ``T``, the program reads ``T`` plus the real time elapsed since, capped at
  the next step's recorded time, so it never runs ahead of the recording and
  never goes back. REALTIME/BOOTTIME add the offsets of the metadata's
  ``clock``. The vDSO entry points are rewritten to real syscalls after execve
  (:func:`dr.vdso.patch_vdso`), or time would never reach seccomp.
- **randomness** — a thread serving a re-driven connection gets the getrandom
  payloads the recorded thread read while serving it, in its order
  (:class:`RecordedRandom`); other calls (start-up) get the kernel's.
- **pids** — the sandbox gives the program the recorded pid (ns_last_pid).

Layouts: struct timespec and struct timeval (two signed 64-bit fields on
x86_64; man 2 clock_gettime, man 2 gettimeofday).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from collections import Counter
from typing import Any

from dr import schema
from dr.errors import DrError
from dr.replay import containment, notify
from dr.replay.connections import WAITS

__all__ = ["UNOBSERVED", "VirtualClock", "WakeClock", "RecordedRandom", "ConnClock", "StreamsSupervisor"]

_TS = struct.Struct("<qq")
#: pidfd_open(2) flag for a pidfd of one thread, not a thread group (= O_EXCL).
_PIDFD_THREAD = os.O_EXCL
_NR = {n: schema.by_name(n).nr for n in ("clock_gettime", "gettimeofday", "time", "getrandom",
                                          "execve", "execveat", "close")}
_TIME_NRS = frozenset(_NR[n] for n in ("clock_gettime", "gettimeofday", "time"))
_WAIT_NRS = frozenset(s.nr for s in schema.all_syscalls() if s.name in WAITS)
_READ_NRS = frozenset(schema.by_name(n).nr for n in ("read", "recvfrom", "readv", "recvmsg"))
_WRITE_NRS = frozenset(schema.by_name(n).nr for n in ("write", "sendto", "writev", "sendmsg", "sendfile"))
# clock ids (include/uapi/linux/time.h) -> which recorded clock they read
_CLOCKS = {0: "realtime", 5: "realtime", 11: "realtime",   # REALTIME, REALTIME_COARSE, TAI
           1: "monotonic", 4: "monotonic", 6: "monotonic",  # MONOTONIC, _RAW, _COARSE
           7: "boottime"}                                   # BOOTTIME


#: Hot calls the streams supervisor neither answers nor observes: run in the kernel
#: without a notification (a round trip each), like the schema's passthrough class.
#: Not among them: time, getrandom, exec (answered); reads, writes, close, readiness
#: waits (observed for the clocks); and calls that reach outside the program (open,
#: connect, kill, ...), which the sandbox's checks see.
UNOBSERVED = frozenset({"epoll_ctl", "fstat", "newfstatat", "statx", "lseek", "fcntl", "ioctl",
                        "setsockopt", "getsockopt", "getsockname", "getpeername", "accept", "accept4",
                        "sched_yield", "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid",
                        "getegid", "pread64", "pwrite64", "fsync", "fdatasync", "fchmod", "umask"})


class WakeClock:
    """The time an event loop read when it woke for the request dr just sent.

    nginx and redis read the clock once per loop iteration, right after their
    readiness wait (epoll_wait, poll, ...) returns, and use that value for the
    whole iteration ($msec, TIME). The recording holds the exit time of the
    wait the serving thread returned from before it read each request
    (:attr:`dr.replay.connections.Chunk.woke_ns`); the vDSO read came a few
    µs after. When dr sends a request it sets that time (:meth:`sent`); a
    thread's first clock read after it returned from a wait gets it.
    """

    def __init__(self) -> None:
        self.hint: int | None = None
        self._waited: dict[int, bool] = {}
        self._lock = threading.Lock()

    def sent(self, woke_ns: int | None) -> None:
        self.hint = woke_ns

    def on_syscall(self, tid: int, nr: int) -> None:
        """Every notified call that is not a time read: a wait arms the thread."""
        self._waited[tid] = nr in _WAIT_NRS

    def read(self, tid: int) -> int | None:
        with self._lock:
            if not self._waited.get(tid) or self.hint is None:
                return None
            self._waited[tid] = False
            return self.hint + 1000


class VirtualClock:
    """The incident's clock, moved forward by the replay's steps.

    ``first_ns``: CLOCK_MONOTONIC of the first recorded step; ``offsets``:
    ``{realtime_ns, boottime_ns}`` from the metadata; ``limit``: a callable
    giving a time the clock must stay below for now (the recorded time of a
    response still owed), or None. Before the first step the clock starts one
    second earlier (start-up) and runs up to ``first_ns``. Never goes back.
    """

    def __init__(self, first_ns: int, offsets: dict | None, limit: Any = None) -> None:
        offsets = offsets or {}
        self._limit = limit  # () -> ns the clock must not pass now (a write still owed), or None
        self.realtime_off = int(offsets.get("realtime_ns") or 0)
        self.boottime_off = int(offsets.get("boottime_ns") or 0)
        self._base = first_ns - 1_000_000_000
        self._cap = first_ns
        self._real = time.monotonic_ns()
        self._last = self._base
        self._lock = threading.Lock()

    def at(self, t_ns: int, next_ns: int | None) -> None:
        """The replay reached the step recorded at ``t_ns``; the next is at ``next_ns``."""
        with self._lock:
            self._base = max(t_ns, self._last)
            self._cap = max(self._base, next_ns if next_ns is not None else self._base + 10**12)
            self._real = time.monotonic_ns()

    def monotonic(self) -> int:
        lim = self._limit() if self._limit is not None else None
        with self._lock:
            v = min(self._base + (time.monotonic_ns() - self._real), self._cap)
            if lim is not None:
                v = min(v, lim - 1000)
            v = max(v, self._last)
            self._last = v
            return v

    def read(self, which: str) -> int:
        m = self.monotonic()
        if which == "realtime":
            return m + self.realtime_off
        if which == "boottime":
            return m + self.boottime_off
        return m


class RecordedRandom:
    """Recorded getrandom payloads, handed out per connection in recorded order.

    ``by_conn``: connection id -> the payloads the thread serving it read, in
    order (:attr:`dr.replay.connections.Conversations.random_by_conn`). A
    thread serving a re-driven connection gets that connection's next payload:
    the recorded thread's order, not the first payload of the same size, so a
    fresh process's start-up getrandom (never recorded: the capture began
    mid-flight) takes nothing that belonged to a request. A call from a thread
    serving no connection, or past the recorded ones, gets the kernel's bytes.
    ``mismatched``: calls whose size differed from the next recorded payload's.
    """

    def __init__(self, by_conn: dict[int, list[bytes]]) -> None:
        self._left = {cid: list(ps) for cid, ps in by_conn.items()}
        self._lock = threading.Lock()
        self.mismatched = 0

    def take(self, n: int, conn_id: int | None) -> bytes | None:
        if conn_id is None:
            return None
        with self._lock:
            left = self._left.get(conn_id)
            if not left:
                return None
            p = left.pop(0)
            if len(p) != n:
                self.mismatched += 1  # the program asks differently: the kernel's bytes
                return None
            return p


class ConnClock:
    """Per-thread time while a thread serves a re-driven connection.

    A handler thread reads the clock between reading a request and writing its
    response (an HTTP Date header, a log line). While thread ``tid`` serves
    connection ``c`` it reads the recorded entry time of the next write the
    recording shows on ``c``, less 1 µs: the moment the recorded thread was
    about to answer. The connection behind an fd is found through the socket's
    inode (/proc/TID/fd, /proc/TID/net/tcp{,6}): its remote end is the client
    socket dr opened for ``c`` (``by_local``: dr's local port -> Connection).

    The recorded thread read the clock a little before that write (how much
    before, no syscall records: the vDSO answered). When the write holds an HTTP
    ``Date`` header (RFC 9110 §6.6.1, one-second resolution) the true time lay in
    that second, so the time given is kept inside it (``realtime_off``: the
    metadata's REALTIME - MONOTONIC offset, ns) — else a write that entered just
    after a second boundary would put the next second in the replayed header.
    """

    def __init__(self, by_local: dict, listen_ports: frozenset[int] = frozenset(),
                 realtime_off: int = 0) -> None:
        self.by_local = by_local
        self.listen_ports = listen_ports  # the program's listening ports: accepted sockets have one
        self.realtime_off = realtime_off
        self._hint: dict[tuple[int, int], int] = {}  # (connection id, write index) -> CLOCK_MONOTONIC ns
        self._fd: dict[int, Any] = {}          # fd -> Connection (None: not one of dr's)
        self._tid: dict[int, Any] = {}         # tid -> Connection it serves
        self._writes: dict[int, int] = {}      # connection id -> writes seen
        self._last: dict[int, int] = {}        # tid -> last value (per-thread monotonic)
        self._lock = threading.Lock()

    def _lookup(self, tid: int, fd: int) -> Any:
        try:
            link = os.readlink(f"/proc/{tid}/fd/{fd}")
        except OSError:
            return None
        if not link.startswith("socket:["):
            return None
        try:
            family, local_port, peer_port = _socket_ends(tid, fd)
        except OSError:
            pass  # no pidfd_getfd here: look the inode up in /proc/TID/net/tcp{,6} below
        else:
            if family not in (socket.AF_INET, socket.AF_INET6):
                return False
            if self.listen_ports and local_port not in self.listen_ports:
                return False  # a connection the program made, not one dr opened
            return self.by_local.get(peer_port, False) if peer_port else False
        # Slow: the tables list every socket of the namespace (TIME_WAIT too), so a
        # scan costs more with every connection replayed.
        inode = link[8:-1]
        for name in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{tid}/net/{name}") as f:
                    next(f, None)
                    for line in f:
                        p = line.split()
                        if len(p) > 9 and p[9] == inode:
                            if self.listen_ports and _proc_addr(p[1])[1] not in self.listen_ports:
                                return False  # a connection the program made, not one dr opened
                            _host, port = _proc_addr(p[2])
                            return self.by_local.get(port, False)
            except OSError:
                continue
        return None

    def on_io(self, tid: int, fd: int, write: bool) -> Any:
        """Thread ``tid`` reads or writes ``fd``; the re-driven connection behind it, or None."""
        with self._lock:
            c = self._fd.get(fd)
            if c is None:
                c = self._lookup(tid, fd)  # False: a socket that is not dr's; None: unknown yet
                if c is not None:
                    self._fd[fd] = c
            if not c:
                return None
            self._tid[tid] = c
            if write:
                self._writes[c.id] = self._writes.get(c.id, 0) + 1
            return c

    def on_close(self, fd: int) -> None:
        with self._lock:
            self._fd.pop(fd, None)

    def serving(self, tid: int) -> int | None:
        """Id of the re-driven connection ``tid`` last read or wrote, or None."""
        with self._lock:
            c = self._tid.get(tid)
            return c.id if c else None

    def read(self, tid: int) -> int | None:
        """CLOCK_MONOTONIC ns for ``tid``, or None when it serves no re-driven connection."""
        with self._lock:
            c = self._tid.get(tid)
            if c is None:
                return None
            k = self._writes.get(c.id, 0)
            v = self._hint.get((c.id, k))
            if v is None:
                outs = [ch for ch in c.chunks if ch.dir == "out"]
                if not outs:
                    return None
                k = min(k, len(outs) - 1)
                v = _within_date(outs[k].ts_enter - 1000, outs[k].data, self.realtime_off)
                self._hint[(c.id, k)] = v
            v = max(v, self._last.get(tid, 0))
            self._last[tid] = v
            return v


def _socket_ends(tid: int, fd: int) -> tuple[int, int, int]:
    """(family, local port, peer port or 0) of socket ``fd`` of thread ``tid``: a
    copy of it taken with pidfd_getfd(2), asked and closed. OSError when it cannot be."""
    from dr.replay import notify
    pidfd = os.pidfd_open(tid, _PIDFD_THREAD)
    try:
        dup = notify.pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)
    try:
        sk = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        raise
    try:
        if sk.family not in (socket.AF_INET, socket.AF_INET6):
            return sk.family, 0, 0
        local = sk.getsockname()[1]
        try:
            peer = sk.getpeername()[1]
        except OSError:
            peer = 0  # listening, or not connected
        return sk.family, local, peer
    finally:
        sk.close()  # our copy only: the program's fd stays open


def _within_date(mono_ns: int, data: bytes, realtime_off: int) -> int:
    """``mono_ns`` moved into the second of the HTTP ``Date`` header that ``data``
    (a recorded response write) carries; unchanged without one."""
    import email.utils
    head = data[:data.find(b"\r\n\r\n")] if data.startswith(b"HTTP/1.") else b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"date":
            continue
        try:
            sec = int(email.utils.parsedate_to_datetime(value.strip().decode("ascii")).timestamp())
        except (ValueError, TypeError, UnicodeDecodeError, OverflowError):
            return mono_ns
        lo = sec * 10**9 - realtime_off
        return min(max(mono_ns, lo), lo + 10**9 - 1000)
    return mono_ns


def _proc_addr(hexaddr: str) -> tuple[str, int]:
    """(host, port) of a /proc/net address; a v4-mapped IPv6 host as its IPv4 form."""
    from dr.formats.sockaddr import proc_net

    a = proc_net(hexaddr)
    host = a.host
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, a.port


class StreamsSupervisor:
    """Answers the sandboxed program's seccomp notifications on a thread.

    ``counts``: Counter of substituted calls by name plus ``"continued"``.
    ``vdso_patched``: the symbols rewritten. ``error``: why the loop stopped
    early (None when it ran until :meth:`stop` or the tracee's end).
    """

    def __init__(self, sandbox: Any, clock: VirtualClock, randomness: RecordedRandom,
                 conn_clock: ConnClock | None = None, wake_clock: WakeClock | None = None,
                 on_read: Any = None, recorded: Any = None) -> None:
        #: Called with a connection's id after the program read from one of dr's connections.
        self.on_read = on_read
        #: The values the recorded process read (dr.replay.streams_clock.RecordedClock), or None.
        self.recorded = recorded if recorded else None
        self.sb = sandbox
        self.wake_clock = wake_clock
        self.clock = clock
        self.conn_clock = conn_clock
        self.random = randomness
        self.counts: Counter = Counter()
        self.vdso_patched: dict[str, int] = {}
        self._last: dict[int, int] = {}
        self.error: str | None = None
        #: Attempts to reach the host, refused (:mod:`dr.replay.containment`).
        self.refused: list = []
        self._need_patch = True
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._loop, name="dr-streams-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        self._thread.join(5)
        for fd in (self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- the loop

    def _loop(self) -> None:
        lst = self.sb.listener
        poller = select.poll()  # registered once: a notification per program syscall comes here
        for fd in (lst.fd, self._stop_r, self.sb.pidfd):
            poller.register(fd, select.POLLIN)
        try:
            while True:
                r = {fd for fd, _ev in poller.poll()}
                if self._stop_r in r:
                    return
                if lst.fd not in r:
                    return  # the tracee is gone
                n = lst.recv()
                if n is None:
                    continue
                self._handle(lst, n)
        except DrError as e:
            self.error = e.message
        except OSError as e:
            self.error = f"supervisor: {e.strerror or e}"

    def _patch(self, pid: int) -> None:
        from dr.vdso import patch_vdso
        try:
            if self.sb.exec_done():
                self.vdso_patched = patch_vdso(pid) or self.vdso_patched
                self._need_patch = False
        except DrError:
            self._need_patch = False  # time then stays the host's; the report says so

    def _handle(self, lst: notify.Listener, n: notify.Notif) -> None:
        nr = n.nr
        if n.arch != notify.AUDIT_ARCH_X86_64:  # a 32-bit call: its numbers are not these
            lst.send(n.id, continue_=True)
            return
        if self._need_patch:
            self._patch(n.pid)
        ref = containment.check(n)
        if ref is not None:
            self.refused.append(ref)
            lst.send(n.id, 0, -ref.errno)
            return
        cc = self.conn_clock
        conn = None
        if cc is not None and (nr in _READ_NRS or nr in _WRITE_NRS):
            conn = cc.on_io(n.pid, _fd(n.args[0]), nr in _WRITE_NRS)
        elif cc is not None and nr == _NR["close"]:
            cc.on_close(_fd(n.args[0]))
        if self.wake_clock is not None and nr not in _TIME_NRS:
            self.wake_clock.on_syscall(n.pid, nr)
        if nr == _NR["execve"] or nr == _NR["execveat"]:
            self._need_patch = True
        elif nr == _NR["clock_gettime"]:
            clockid = n.args[0] & 0xFFFFFFFF
            which = _CLOCKS.get(clockid)
            if which is not None and n.args[1]:
                v = self._recorded(n.pid, clockid, which)
                if v is None:
                    v = self._now(n.pid, which)
                if self._write(lst, n, n.args[1], _TS.pack(v // 10**9, v % 10**9)):
                    self.counts["clock_gettime"] += 1
                    lst.send(n.id, 0)
                return
        elif nr == _NR["gettimeofday"]:
            if n.args[0]:
                v = self._now(n.pid, "realtime")
                if self._write(lst, n, n.args[0], _TS.pack(v // 10**9, (v % 10**9) // 1000)):
                    self.counts["gettimeofday"] += 1
                    lst.send(n.id, 0)
                return
        elif nr == _NR["time"]:
            s = self._now(n.pid, "realtime") // 10**9
            if n.args[0] and not self._write(lst, n, n.args[0], struct.pack("<q", s)):
                return
            self.counts["time"] += 1
            lst.send(n.id, s)
            return
        elif nr == _NR["getrandom"]:
            size = n.args[1] & 0xFFFFFFFF
            conn = self.conn_clock.serving(n.pid) if self.conn_clock is not None else None
            data = self.random.take(size, conn) if 0 < size <= 1 << 20 else None
            if data is not None:
                if self._write(lst, n, n.args[0], data):
                    self.counts["getrandom"] += 1
                    lst.send(n.id, len(data))
                return
        self.counts["continued"] += 1
        lst.send(n.id, continue_=True)
        if conn is not None and nr in _READ_NRS and self.on_read is not None:
            # Sent (with the listener's synchronous wake-up the read has run by now):
            # dr may hold its next request on another connection only this long.
            self.on_read(conn.id)

    def _recorded(self, tid: int, clockid: int, which: str) -> int | None:
        """The value the recorded thread serving the same connection read here
        (dr.replay.streams_clock), or None."""
        rc = self.recorded
        if rc is None:
            return None
        v = rc.take(self.conn_clock.serving(tid) if self.conn_clock is not None else None, tid, clockid)
        if v is not None:
            self.counts["clock_gettime (recorded value)"] += 1
            if which == "monotonic":   # Go's time.now: its later approximations never go back before it
                self._last[tid] = max(self._last.get(tid, 0), v)
        return v

    def _now(self, tid: int, which: str) -> int:
        v = self.wake_clock.read(tid) if self.wake_clock is not None else None
        if v is None and self.conn_clock is not None:
            v = self.conn_clock.read(tid)
        if v is None:
            v = self.clock.monotonic()
        v = max(v, self._last.get(tid, 0))  # never backwards for one thread
        self._last[tid] = v
        if which == "realtime":
            return v + self.clock.realtime_off
        if which == "boottime":
            return v + self.clock.boottime_off
        return v

    def _write(self, lst: notify.Listener, n: notify.Notif, addr: int, data: bytes) -> bool:
        """Write into the tracee; on a bad address answer EFAULT, like the kernel would."""
        try:
            notify.write_mem(n.pid, addr, data)
        except notify.MemoryFault:
            lst.send(n.id, 0, -14)
            return False
        if not lst.id_valid(n.id):
            return False
        return True


def _fd(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v
