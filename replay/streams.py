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
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from dr.errors import DrError, ExitCode, ReplayError, UsageError
from dr.replay.connections import Addr, Connection, Conversations, reconstruct
from dr.replay.streams_command import inside_root, other_build, recorded_command, recorded_env, recorded_root, which
from dr.replay.streams_delivery import Delivery, PlanItem, ReplayedConn, Step
from dr.replay.streams_outbound import Outbound, OutboundMiss
from dr.replay.streams_report import failure_report, session_report
from dr.replay.streams_watch import (PATIENCE_S, QUIET_MIN_S, QUIET_S, WAIT_S, Activity, ended, listen_matches,
    listening)

__all__ = ["StreamsSession", "Step", "ReplayedConn", "OutboundMiss", "StreamsResult", "run_streams",
           "recorded_command", "recorded_root", "other_build", "is_attach_trace", "attach_mode", "cli_streams",
           "WAIT_S", "QUIET_S", "QUIET_MIN_S", "PATIENCE_S", "STARTUP_S"]

#: How long the program may take to open its recorded listening sockets.
STARTUP_S = 20.0
#: Longest wait for the exit status of a program the kernel shows ended (a zombie).
EXIT_STATUS_WAIT_S = 5.0


@dataclass(slots=True)
class StreamsResult:
    """What :func:`run_streams` returns: the comparison report and the exit code."""

    report: Any
    exit_code: int


class StreamsSession(Delivery):
    """A streams replay of one attach-mode trace, run one :meth:`step` at a time.

    ``trace``: path or TraceReader. ``cmd``: another build (see
    :func:`recorded_command`). ``ignore``: an :class:`dr.replay.compare.Ignore`
    or a TOML path. ``show_output``: let the program's stdout/stderr through.
    Raises ReplayError (start-up failed, no listening socket), UsageError.
    """

    def __init__(self, trace: Any, cmd: str | list[str] | None = None, ignore: Any = None,
                 show_output: bool = False, startup_timeout: float = STARTUP_S,
                 mode: str = "auto", rootfs: str = "/", memory_limit: int | None = 0) -> None:
        if mode not in ("auto", "sandbox"):
            # There is no way to run a trace's command outside the sandbox (issue #15).
            raise UsageError(f"unknown streams mode {mode!r}; streams replay runs only in the sandbox")
        self.mode = mode
        self.memory_limit = memory_limit  # SandboxSpec.memory_limit: 0 default, None none
        self.oom = ""  # the sandbox's OOM line, kept when it is closed (oom_message)
        from dr.replay import compare
        self.conversations: Conversations = trace if isinstance(trace, Conversations) else reconstruct(trace)
        self.meta = self.conversations.meta
        #: Where a trace cut short ends ("at byte N of M ..."), None for a complete trace.
        self.cut_where: str | None = cut_where(trace) if self.conversations.cut_short else None
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
        self.outputs: list[Outbound] = []
        self._socks: dict[int, socket.socket] = {}
        self._by_local: dict[int, Connection] = {}  # dr's client port -> connection
        self._pending: dict[int, int] = {}  # connection id -> recorded ts_enter of the next write owed
        self._last_io: dict[int, int] = {}  # connection id -> monotonic ns dr last sent or received
        self._cv = threading.Condition()
        self._read_cv = threading.Condition()  # the program read from a connection (see program_read)
        self._read_gen = 0
        self._sock_pool: dict[int, list[socket.socket]] = {}  # sockets made in the namespace, unused yet
        self._sock_batch = True
        self._activity: Activity | None = None
        self._plan: list[PlanItem] = []
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
        self._ep: Any = None  # the reader thread's epoll over dr's client sockets, made on first use
        self._ep_socks: dict[int, tuple[Connection, socket.socket]] = {}

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
        oom = self.oom_message()
        self.died = ((oom or f"the program {how} during the replay") + f", after {self.connections_done()} of "
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
            if self.cut_where is not None:
                # Not an idle service: the recording's connections may be in the part that is gone.
                raise ReplayError(f"the trace was cut short {self.cut_where}; the part it holds shows no "
                                  "accepted TCP connection, so nothing was replayed or compared",
                                  exit_code=ExitCode.INCOMPLETE)
            raise ReplayError("the trace shows no accepted TCP connection to replay; was the "
                              "service idle during the capture?")
        self._build_plan()
        # Only ever inside the full sandbox: if any part of it cannot be set up the
        # replay stops here with the sandbox's one line, and nothing has run.
        self._start_sandbox()
        self._await_listeners()
        self._activity = Activity(self.pid)
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
            ob = Outbound(self, addr, convs)
            try:
                ob.start()
            except OSError as e:
                raise ReplayError(f"cannot stand in for the dependency at {addr}: {e.strerror or e}") from None
            self.outputs.append(ob)

    def _start_sandbox(self) -> None:
        from dr import schema
        from dr.replay.netns import NetNS
        from dr.replay.sandbox import Sandbox, SandboxSpec
        from dr.replay.streams_clock import RecordedClock
        from dr.replay.streams_supervisor import (UNOBSERVED, ConnClock, RecordedRandom, StreamsSupervisor,
                                                  VirtualClock, WakeClock)
        exe = self.argv[0] if "/" in self.argv[0] else (which(self.argv[0]) or self.argv[0])
        cwd = inside_root(self.meta, str(self.meta.get("cwd") or "/"))
        pid = self.meta.get("pid")
        nspid = self.meta.get("nspid")
        if isinstance(nspid, list) and nspid and isinstance(nspid[-1], int):
            pid = nspid[-1]  # the pid the program saw, in its own pid namespace
        # The sandbox's init is pid 1: a container's init (pid 1) gets the next free one.
        self.first_pid = int(pid) if isinstance(pid, int) and pid > 2 else None
        spec = SandboxSpec(
            argv=tuple(self.argv), env=tuple(recorded_env(self.meta).items()), exe=exe, cwd=cwd, root=self.rootfs,
            hostname=str(self.meta.get("hostname") or self.meta.get("host") or "dr-replay"),
            first_pid=self.first_pid, memory_limit=self.memory_limit,
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
                                            wake_clock=self.wake_clock, on_read=self.program_read,
                                            recorded=RecordedClock(self.conversations.clock_by_conn))
        self.supervisor.start()
        self.mode_used = "sandbox"

    def _exited(self) -> int | None:
        """The program's exit status once it ended, else None."""
        if self.proc is not None:
            return self.proc.poll()
        if self.sandbox is not None:
            st = self.sandbox.exit_status(0)
            if st is None and ended(self.pid):
                # The kernel says it ended; its status comes once the sandbox's stage 2
                # has reaped it, which a loaded machine may delay: wait for it (bounded),
                # or a death would go unnoticed until the plan ran out.
                st = self.sandbox.exit_status(EXIT_STATUS_WAIT_S)
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
            live = listening(self.pid)
            missing = [a for a in wanted.values() if not listen_matches(a, live)]
            if not missing:
                break
            if (status := self._exited()) is not None:
                if oom := self.oom_message():  # killed at the sandbox's memory limit
                    raise ReplayError(f"{oom}, before it listened on {missing[0]}")
                hint = self.sandbox.unreachable_hint() if self.sandbox is not None and status in (126, 127) else ""
                raise ReplayError(f"{shlex.join(self.argv)} exited with status {status} "
                                  f"before listening on {missing[0]}{hint}{self._log_hint()}")
            if time.monotonic() > deadline:
                raise ReplayError(f"the replayed program never listened on {missing[0]} (a recorded "
                                  f"listening socket) within {self.startup_timeout:.0f} s{self._log_hint()}")
            time.sleep(0.02)
        self.listen_map = []
        for a in wanted.values():
            live_match = sorted(f"{'[' + h + ']' if ':' in h else h}:{p}" for h, p in live
                                if listen_matches(a, {(h, p)}))
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
        with self._cv:
            self.drain()
            for sk in self._socks.values():
                self._unwatch(sk.fileno())
                try:
                    sk.close()
                except OSError:
                    pass
        self.wall_ns = time.monotonic_ns() - self._t0
        self._stop_program()
        return Step("finished", f"replayed {len(self.inbound)} connection(s) in {self.wall_ns / 1e9:.2f} s")

    def _compare(self) -> Any:
        return session_report(self)

    def oom_message(self) -> str:
        """The one line when the cgroup's OOM killer killed a task of the sandbox, else ""."""
        return self.sandbox.oom_message() if self.sandbox is not None else self.oom

    def _stop_program(self) -> None:
        self.stopping = True
        if self.sandbox is not None:
            self.sandbox.kill()
            if self.supervisor is not None:
                self.supervisor.stop()
            self.sandbox.close()
            self.oom = self.sandbox.oom_message()
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
        for sk in list(self._socks.values()) + [k for pool in self._sock_pool.values() for k in pool]:
            try:
                sk.close()
            except OSError:
                pass
        self._stop_program()
        if self._ep is not None:
            self._ep.close()  # the reader thread sees it within its poll's 0.1 s and ends
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
                progress: Any = None, memory_limit: int | None = 0) -> StreamsResult:
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
        sess = StreamsSession(conv, cmd=cmd, ignore=ignore, show_output=show_output, rootfs=rootfs, mode=mode,
                              memory_limit=memory_limit)
        if conv.cut_short and conv is not trace:
            sess.cut_where = cut_where(trace)   # the file itself says where it ends
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
            compare.write_json(failure_report(sess, failed_conv, e), report)
        raise
    finally:
        if sess is not None:
            sess.close()
    if report:
        compare.write_json(rep, report)
    # A task killed at the sandbox's memory limit is never a faithful replay.
    killed = sess is not None and bool(sess.oom_message())
    if not rep.all_identical or killed:
        return StreamsResult(rep, int(ExitCode.DIVERGED))
    # Every compared response matched; a trace cut short leaves the rest of the
    # recording uncompared (as strict replay: exit INCOMPLETE, not OK).
    return StreamsResult(rep, int(ExitCode.INCOMPLETE if rep.cut_short else ExitCode.OK))


def cut_where(trace: Any) -> str:
    """Where ``trace`` (a path or TraceReader) was cut short, in words (TraceReader.cut_where)."""
    from dr.formats.trace import TraceReader
    try:
        if isinstance(trace, TraceReader):
            return trace.cut_where()
        if isinstance(trace, (str, os.PathLike)):
            with TraceReader(trace) as r:
                return r.cut_where()
    except DrError:
        pass
    return "after its last complete frame"   # reconstructed conversations: the file is not at hand



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
                rootfs: str = "/", memory_limit: int | None = 0) -> int:
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
                          rootfs=rootfs, progress=progress if tty else None, memory_limit=memory_limit)
    finally:
        if shown[1]:
            sys.stderr.write("\n")
    sys.stdout.write(res.report.text(verbose=verbose) + "\n")
    if report:
        sys.stdout.write(f"report: {report}\n")
    if res.exit_code == ExitCode.INCOMPLETE:
        # Strict replay's wording for the same status (dr/cli/replay.py).
        sys.stderr.write(f"dr replay: incomplete: every compared response matched, but not everything was "
                         f"compared: the trace was cut short {cut_where(trace)}; only the "
                         f"{len(res.report.connections)} connection(s) it holds were replayed\n")
    return res.exit_code
