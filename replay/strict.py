"""Strict replay: a spawn-mode trace replayed syscall by syscall.

::

    s = ReplaySession("run.drt", ReplayOptions(show_output=True))
    s.start()
    while (r := s.step()).status is Status.CONTINUE:
        pass
    s.close()          # r.status: EXITED (faithful), DIVERGED, ERROR

Policy (the recording is the oracle):

- Each thread is held to its recorded sequence of notified syscalls, and all
  threads to the recorded global order (the order of event records in the
  trace, which is the order syscalls completed). A notification that is not
  yet due is held unanswered until every earlier event was replayed. Calls that
  must run natively to let others progress (clone, fork, vfork, execve) and
  calls that only read a value (time, ids, getrandom, sleeps) only wait for
  their own thread's turn.
- Recorded tids are the replay's tids: the tracee starts with the recorded pid
  and each recorded clone child gets its recorded tid (ns_last_pid, see
  :mod:`dr.replay.sandbox`); a host tid is mapped through its NSpid.
- Inputs are substituted: the recorded out-payloads (slots of dr.schema) are
  written into the tracee, each capped to the tracee's own buffer argument,
  and the recorded return value is returned. Outputs (write/send payloads,
  paths, socket addresses, scalar arguments) are compared byte for byte.
- fds are created with SECCOMP_IOCTL_NOTIF_ADDFD at the recorded numbers: a
  path that exists in the sandbox root is opened read-only (so mmap of
  libraries works), anything else is /dev/null or an empty memfd. A file the
  run creates itself (O_CREAT with O_EXCL or O_TRUNC, written to) is a memfd
  whose reads, writes, seeks and truncations run natively after comparison,
  so files shared through mmap (POSIX semaphores of multiprocessing) work.
- Blocking calls are answered at once; PASSTHROUGH calls (memory, futex,
  signal masks) run natively; exit, clone, execve and close run natively.
- A SIGNAL process event recorded after a thread's syscall is delivered with
  tgkill before that syscall is answered, so the handler runs where it ran;
  an interrupted call is answered with its recorded -ERESTART*/-EINTR and the
  kernel restarts it or not, as it did. A notification that vanished (ENOENT)
  never advances the cursor, so an SA_RESTART second notification of the same
  call is matched to the same event.
- Unsupported calls (io_uring and the like) get the recorded error when the
  recording shows one, else the replay stops naming the call.
- A child process's exit is held while its parent has a recorded SIGCHLD
  ahead, and released at that point, so the kernel's own SIGCHLD arrives where
  the recording shows it (bash's reaping handler).
- Time reads whose count depends on native scheduling (CPython's GIL waits on
  a futex with a timeout) are matched softly: an extra one gets the thread's
  last recorded value, a missing one is skipped; the report counts both.
- When the due thread cannot reach its syscall because it waits natively on a
  lock a held thread owns, the earliest held call is answered after
  ``reorder_after`` seconds (counted as "reordered"): each thread stays
  faithful to its own sequence.

Limits: futex and memory run natively, so races between threads in user
space (several threads appending to one stdio buffer) are not replayed; such
a program diverges with a clear report rather than hanging. The whole trace
is loaded into memory first (about 0.9 KiB of RSS per event, measured on dd
bs=1: 173 MiB for 200k events), which bounds the traces it can take.


The trace is untrusted: every recorded return value and payload size is
checked against the tracee's own arguments (read's count, the iovecs' lengths,
poll's nfds) and a call no genuine run could have made is refused at its
event (ReplayError, listed in the report's ``refused``) before any byte is
written; addresses are the tracee's own, paths resolve inside the sandbox root
(openat2 RESOLVE_IN_ROOT), and a bad trace raises TraceError/ReplayError.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import select
import signal
import stat as stat_mod
import struct
import sys
import time
from collections import deque
from time import monotonic as _monotonic
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, NoReturn

from dr import schema
from dr.errors import ReplayError, TraceError
from dr.replay import notify
from dr.replay.divergence import Divergence, ReplayReport, decode_call, decode_event, payload_diff
from dr.replay.notify import MemoryFault, Notif
from dr.replay.sandbox import Sandbox, SandboxSpec
from dr.schema import Class, Kind, Rule, Sub

__all__ = ["Status", "StepResult", "ReplayOptions", "ReplaySession", "load_script", "Script"]

NR = {s.name: s.nr for s in schema.all_syscalls()}
SC = {s.nr: s for s in schema.all_syscalls()}
PASSTHROUGH = frozenset(s.nr for s in schema.all_syscalls() if s.cls == Class.PASSTHROUGH)

#: Run natively; ordered only within their own thread.
CLONES = frozenset(NR[n] for n in ("clone", "clone3", "fork", "vfork"))
EXECS = frozenset({NR["execve"], NR["execveat"]})
EXITS = frozenset({NR["exit"], NR["exit_group"]})
NR_EXIT = NR["exit"]
#: Calls that only read a value (time, ids, randomness, sleeps answered at once): held to
#: their own thread's order only. A thread may make them while holding a lock another
#: thread needs (CPython's GIL wait computes its deadline under the GIL mutex), so
#: ordering them globally would deadlock where the recording did not.
UNORDERED = frozenset(NR[n] for n in (
    "clock_gettime", "gettimeofday", "time", "getcpu", "clock_getres", "getpid", "gettid",
    "getppid", "getuid", "geteuid", "getgid", "getegid", "getrandom", "uname", "sysinfo",
    "getrusage", "times", "nanosleep", "clock_nanosleep", "sched_getaffinity", "getrlimit",
    "prlimit64", "getpgrp", "getpgid", "getsid", "sched_getscheduler", "getpriority"))
#: Time reads whose number depends on native scheduling (CPython's GIL wait loops
#: on a futex with a timeout, and reads the clock once per round): an extra one is
#: answered with the thread's previous recorded value, a missing one is skipped.
SOFT = frozenset(NR[n] for n in ("clock_gettime", "gettimeofday", "time", "clock_getres", "getcpu"))
#: Passthrough calls a thread sleeps in natively (futex waits, sigsuspend).
#: Calls held only to their own thread's order (see UNORDERED, CLONES, EXECS).
OWN_ORDER = UNORDERED | CLONES | EXECS
NATIVE_BLOCKING = frozenset(NR[n] for n in ("futex", "futex_waitv", "futex_wait", "rt_sigsuspend"))
#: fd calls that run natively on a file the run created itself (see _h_open).
NATIVE_ON_OWNED = frozenset(NR[n] for n in (
    "read", "write", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev", "preadv2",
    "pwritev2", "lseek", "ftruncate", "fallocate", "fsync", "fdatasync"))
#: Calls whose success value is a new fd although the schema types it "int".
FD_RET_EXTRA = frozenset(NR[n] for n in ("eventfd", "epoll_create", "inotify_init", "inotify_init1",
                                        "fanotify_init", "pidfd_open", "memfd_secret", "userfaultfd",
                                        "perf_event_open", "signalfd"))
NO_EXIT = schema.EVENT_FLAGS["NO_EXIT"]
#: Signals never delivered by replay (job control would stop the tracee for good).
NO_DELIVER = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
#: struct_in types whose bytes are deterministic (compared); others may hold pointers.
COMPARED_STRUCTS = frozenset({"timespec", "timeval", "itimerval", "itimerspec", "rlimit",
                              "sigset", "open_how", "int", "uint", "loff_t", "socklen", "fd_set"})

#: Scalar-typed arguments that carry addresses (capget's header) and so differ run to run.
POINTER_LIKE = frozenset({"header", "dataptr", "data"})
MAX_INPUT = 64 << 20
O_TMPFILE = 0o20200000
#: open-like calls whose mode argument only counts with O_CREAT/O_TMPFILE: nr -> flags argument.
OPEN_MODE_FLAGS = {NR["open"]: 1, NR["openat"]: 2}          # most bytes read from a tracee input buffer
IOV_MAX = 1024                # UIO_MAXIOV
SOCKADDR_MAX = 128            # sizeof(struct sockaddr_storage)
AT_FDCWD = -100
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_OPEN_HOW = struct.Struct("<QQQ")
_IOVEC = struct.Struct("<QQ")
_MSGHDR = struct.Struct("<QI4xQQQQi4x")  # msghdr(3type): name, namelen, iov, iovlen, control, controllen, flags
_U32 = struct.Struct("<I")
_I32PAIR = struct.Struct("<ii")
#: Paths the supervisor never opens on the tracee's behalf (they describe the supervisor's host).
VIRTUAL_PREFIXES = ("/proc/", "/sys/", "/dev/")

VDSO_NAMES = {"clock_gettime": "__vdso_clock_gettime", "gettimeofday": "__vdso_gettimeofday",
              "time": "__vdso_time", "getcpu": "__vdso_getcpu", "clock_getres": "__vdso_clock_getres"}


class Status(enum.Enum):
    """What a step found."""

    CONTINUE = "continue"
    EXITED = "exited"       # the tracee ended; faithful unless divergences were recorded
    DIVERGED = "diverged"   # stopped at a divergence
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class StepResult:
    status: Status
    message: str = ""
    divergence: Divergence | None = None


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to replay.

    ``rootfs`` the sandbox root; ``command`` replaces the recorded argv;
    ``show_output`` copies the tracee's writes to fds 1 and 2 to ``stdout``/
    ``stderr``; ``keep_going`` records payload/argument divergences and goes
    on; ``stall_timeout`` seconds without progress before the replay is
    declared stuck.
    """

    rootfs: str = "/"
    command: tuple[str, ...] | None = None
    show_output: bool = False
    keep_going: bool = False
    stall_timeout: float = 10.0
    reorder_after: float = 0.25
    stdout: BinaryIO | None = None
    stderr: BinaryIO | None = None


# ----------------------------------------------------------------------------- script

@dataclass(slots=True)
class Script:
    """The recorded run, ready to replay: events in global order, indexes per tid."""

    meta: dict
    summary: dict | None
    truncated: bool
    events: list[Any]                   # notified Events in trace order
    all_events: list[Any]               # every Event (for history), trace order
    pos_in_all: list[int]               # events[i] is all_events[pos_in_all[i]]
    per_tid: dict[int, deque]           # recorded tid -> deque of positions in events
    signals: dict[int, list[int]]       # position -> signals to deliver before answering
    tids: set[int]
    redacted: dict[tuple[int, int, int], list[tuple[int, int]]] = field(default_factory=dict)
    losses: dict[str, int] = field(default_factory=dict)
    tgid_of: dict[int, int] = field(default_factory=dict)        # recorded tid -> tgid
    sigchld: dict[int, list[int]] = field(default_factory=dict)  # recorded tgid -> positions


def load_script(path: str) -> Script:
    """Read a trace into a :class:`Script`. Raises TraceError for a bad trace,
    ReplayError for one strict replay cannot use (attach mode, empty)."""
    from dr.formats.trace import Event, ProcEvent, TraceReader
    sig_kind = schema.PROC_EVENTS["SIGNAL"]
    with TraceReader(path) as r:
        meta = r.meta if isinstance(r.meta, dict) else {}
        if meta.get("mode") not in (None, "spawn"):
            raise ReplayError(f"{path} was captured in {meta.get('mode')} mode; strict replay needs a "
                              "spawn-mode trace (dr capture -- CMD)")
        events, all_events, pos_in_all = [], [], []
        per_tid: dict[int, deque] = {}
        signals: dict[int, list[int]] = {}
        last_pos: dict[int, int] = {}
        redacted: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
        for rec in r.stream():
            if isinstance(rec, Event):
                all_events.append(rec)
                if rec.nr in PASSTHROUGH:
                    continue
                pos = len(events)
                events.append(rec)
                pos_in_all.append(len(all_events) - 1)
                per_tid.setdefault(rec.tid, deque()).append(pos)
                last_pos[rec.tid] = pos
            elif isinstance(rec, dict):
                if rec.get("t") == "redactions":
                    from dr.formats.redact import spans_by_slot
                    for k, v in spans_by_slot([rec]).items():
                        redacted.setdefault(k, []).extend(v)
            elif isinstance(rec, ProcEvent) and rec.what == sig_kind:
                p = last_pos.get(rec.tid)
                if p is not None and 0 < rec.arg0 < 65:
                    signals.setdefault(p, []).append(int(rec.arg0))
        summary = r.summary if isinstance(r.summary, dict) else None
        truncated = bool(r.truncated)
        try:
            losses = {str(k): int(v) for k, v in dict(r.losses or {}).items() if v}
        except (TypeError, ValueError):
            losses = {}
    if not events:
        raise ReplayError(f"{path} holds no syscall events to replay")
    if (summary or {}).get("exit_status") != -signal.SIGKILL:
        # The kernel kills the other threads with SIGKILL when one calls exit_group
        # or execve, and capture records that delivery; replay's own exit_group does
        # the same. Sent at the thread's last event it would end the run early.
        # Only a process that died of SIGKILL (kill -9 at capture) gets it replayed.
        for p in [p for p, sigs in signals.items() if signal.SIGKILL in sigs]:
            sigs = [sg for sg in signals[p] if sg != signal.SIGKILL]
            if sigs:
                signals[p] = sigs
            else:
                del signals[p]
    tgid_of = {ev.tid: ev.tgid or ev.tid for ev in events}
    sigchld: dict[int, list[int]] = {}
    for p, sigs in signals.items():
        if signal.SIGCHLD in sigs:
            sigchld.setdefault(tgid_of.get(events[p].tid, events[p].tid), []).append(p)
    return Script(meta, summary, truncated, events, all_events, pos_in_all, per_tid, signals,
                  set(per_tid), redacted, losses, tgid_of, sigchld)


# ----------------------------------------------------------------------------- threads

@dataclass(slots=True)
class Thread:
    host_tid: int
    host_tgid: int
    tid: int                      # recorded tid
    queue: deque
    last: int = -1                # position of the thread's last replayed event (reports)
    last_soft: dict = field(default_factory=dict)
    dead: bool = False
    rec_tgid: int = 0


def _ns_ids(host_tid: int) -> tuple[int, int] | None:
    """(host tgid, innermost-namespace tid) of a task, from /proc/TID/status."""
    try:
        with open(f"/proc/{host_tid}/status") as f:
            tgid = nspid = None
            for line in f:
                if line.startswith("Tgid:"):
                    tgid = int(line.split()[1])
                elif line.startswith("NSpid:"):
                    nspid = int(line.split()[-1])
                    break
        if tgid is None or nspid is None:
            return None
        return tgid, nspid
    except (OSError, ValueError):
        return None


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _s64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v & (1 << 63) else v


class _Gone(Exception):
    """The notification vanished (tracee interrupted or dead): do not advance."""


# ----------------------------------------------------------------------------- session

class ReplaySession:
    """A strict replay as a step machine (see the module doc).

    Raises TraceError (bad trace), ReplayError (sandbox or supervisor failure),
    NotSupported (no seccomp user notification) from :meth:`start`; :meth:`step`
    turns failures into StepResult(ERROR) values.
    """

    def __init__(self, trace_path: str, opts: ReplayOptions | None = None) -> None:
        self.path = str(trace_path)
        self.opts = opts or ReplayOptions()
        self.script = load_script(self.path)
        self.report = ReplayReport(trace=self.path, events_total=len(self.script.events))
        s = self.script.summary or {}
        self.report.recorded_exit_status = s.get("exit_status") if isinstance(s.get("exit_status"), int) else None
        dur = s.get("duration_ns")
        self.report.recorded_duration_s = dur / 1e9 if isinstance(dur, int) else None
        self.sb: Sandbox | None = None
        self.listener: Any = None   # self.sb.listener once started (hot path)
        self.threads: dict[int, Thread] = {}
        self.consumed = bytearray(len(self.script.events))
        self.nrs = [ev.nr for ev in self.script.events]   # hot path: no attribute lookups
        self.gpos = 0
        self.held: dict[int, tuple[Notif, Thread]] = {}   # position -> held notification
        self.started = False              # the tracee's first execve went through
        self.need_vdso: set[int] = set()  # host tgids whose next notification patches the vDSO
        self.pidfds: dict[int, int] = {}
        self.cwd: dict[int, str] = {}     # host tgid -> recorded cwd
        self.dirpaths: dict[tuple[int, int], str] = {}  # (host tgid, fd) -> path of an opened directory
        self.last_open_path = ""
        self.devnull = -1
        self.rootfd = -1
        self.done: StepResult | None = None
        self.main_exited = False
        self.warned_mmsg = False
        self.console: dict[int, dict[int, int]] = {}   # host tgid -> {fd: 1|2} of the replay's stdout/stderr
        self.held_exits: dict[int, list[tuple[Notif, int]]] = {}  # parent host tgid -> exits held
        self.owned: dict[int, set[int]] = {}  # host tgid -> fds of files this run created (memfd, native I/O)
        self.children: deque = deque()   # recorded child tids of replayed clones, not yet seen
        self._poll: Any = None
        self._ready: list[tuple[int, int]] = []   # what poll() returns for "one notification"
        self._pid_unreg = False
        self.last_progress = time.monotonic()
        self.out = self.opts.stdout or sys.stdout.buffer
        self.err = self.opts.stderr or sys.stderr.buffer
        vp = self.script.meta.get("vdso_patched")
        vp = vp if isinstance(vp, list) else []
        # Capture names them "clock_gettime" or "__vdso_clock_gettime" (both are
        # dynamic symbols at the same address of the vDSO).
        names = {n[len("__vdso_"):] if n.startswith("__vdso_") else n for n in vp if isinstance(n, str)}
        self.vdso_names = {VDSO_NAMES[n]: NR[n] for n in names if n in VDSO_NAMES}
        if names and not self.vdso_names:
            self.report.notes.append(f"the trace names vDSO functions replay does not know ({sorted(names)}); "
                                     "their time reads are not substituted")
        stop = str((self.script.summary or {}).get("stop_reason") or "")
        if stop and "exit" not in stop:
            # --duration, --max-size, Ctrl-C: the recording ends while the tracee ran on.
            self.script.truncated = True
            self.report.notes.append(f"the capture stopped before the command ended ({stop}); "
                                     "replay stops where the recording ends")
        elif self.script.truncated:
            self.report.notes.append("the trace was cut short; replay stops where it ends")
        if self.script.losses:
            self.report.notes.append(f"the capture lost events ({self.script.losses}); "
                                     "a divergence may come from what was not recorded")

    # -------------------------------------------------------------- lifecycle
    def _spec(self) -> SandboxSpec:
        meta = self.script.meta
        rec_argv = meta.get("argv") or meta.get("command") or ()
        if not isinstance(rec_argv, (list, tuple)):
            raise ReplayError("the trace's metadata holds no usable argv; give the command after --")
        argv = self.opts.command or tuple(str(a) for a in rec_argv)
        if not argv:
            raise ReplayError("the trace records no command line; give one after --")
        exe = None
        if not self.opts.command:
            exe_meta = meta.get("exe")
            exe = exe_meta.get("path") if isinstance(exe_meta, dict) else None
            if not isinstance(exe, str):
                exe = None
            first = self.script.events[0]
            if first.nr == NR["execve"]:
                p = first.payload(0)
                if p:
                    exe = p.rstrip(b"\0").decode(errors="surrogateescape")
        if self.opts.command and "/" not in argv[0]:
            exe = _which_in_root(argv[0], self.opts.rootfs)
        env = meta.get("env")
        env_items: tuple[tuple[str, str], ...] = ()
        if isinstance(env, dict):
            env_items = tuple((str(k), str(v)) for k, v in env.items())
        elif isinstance(env, list):
            env_items = tuple(tuple(str(e).split("=", 1)) for e in env if "=" in str(e))  # type: ignore[misc]
        pid = meta.get("pid")
        main_tid = self.script.events[0].tid
        self.main_tid = main_tid
        return SandboxSpec(
            argv=tuple(argv), env=env_items, exe=exe,
            cwd=str(meta.get("cwd") or "/"), root=self.opts.rootfs,
            hostname=str(meta.get("hostname") or "dr-replay"),
            uid=int(meta.get("uid") or 0) if isinstance(meta.get("uid"), int) else 0,
            gid=int(meta.get("gid") or 0) if isinstance(meta.get("gid"), int) else 0,
            first_pid=main_tid if isinstance(main_tid, int) and 1 < main_tid < (1 << 22) else (
                pid if isinstance(pid, int) else None),
            stdio="null", passthrough=PASSTHROUGH)

    def start(self) -> None:
        """Start the sandboxed tracee; raises ReplayError/NotSupported."""
        if not os.path.isdir(self.opts.rootfs):
            raise ReplayError(f"--rootfs {self.opts.rootfs} is not a directory")
        spec = self._spec()
        self.devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        self.rootfd = os.open(self.opts.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.sb = Sandbox(spec)
        self.sb.start()
        self.listener = self.sb.listener
        self.report.started = time.monotonic()
        self.last_progress = time.monotonic()

    def close(self) -> None:
        self.report.wall_s = time.monotonic() - self.report.started
        if self.sb is not None:
            self.sb.kill()
            self.sb.close()
            self.sb = None
        for fd in list(self.pidfds.values()) + [self.devnull, self.rootfd]:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.pidfds.clear()
        self.devnull = self.rootfd = -1

    def run(self) -> StepResult:
        """Step until the end; returns the final result (the session stays open)."""
        while True:
            r = self.step()
            if r.status is not Status.CONTINUE:
                return r

    # -------------------------------------------------------------- stepping
    def step(self) -> StepResult:
        """Handle what the kernel has for us: one notification, or the tracee's end."""
        if self.done is not None:
            return self.done
        try:
            return self._step()
        except _Gone:
            return _CONTINUE  # the notification vanished: the kernel re-issues or the task died
        except _Stop as st:
            return self._finish(st.result)
        except (ReplayError, TraceError) as e:
            return self._finish(StepResult(Status.ERROR, e.message))
        except OSError as e:
            return self._finish(StepResult(Status.ERROR, f"replay failed: {e.strerror or e}"))
        except Exception as e:  # noqa: BLE001 - a supervisor bug must still end in one line
            return self._finish(StepResult(Status.ERROR, f"replay failed ({type(e).__name__}: {e}); "
                                           "this is a bug in dr, please report it with the trace"))

    def _step(self) -> StepResult:
        p = self._poll
        if p is not None:
            evs = p.poll(0)
            if evs == self._ready:
                # The common case, one notification and nothing else (the tracee's
                # next call is queued by the time our answer returns, with sync wake-ups).
                n = self.listener.recv()
                if n is not None:
                    self.report.notifications += 1
                    self._on_notif(n)
                    if self.held:
                        self._drain_held()
                return _CONTINUE
        sb = self.sb
        assert sb is not None and sb.listener is not None
        L = sb.listener
        if p is None:
            p = self._poll = select.poll()
            p.register(L.fd, select.POLLIN)
            p.register(sb.pidfd, select.POLLIN)
            self._ready = [(L.fd, select.POLLIN)]
        if self.main_exited and not self._pid_unreg:
            p.unregister(sb.pidfd)
            self._pid_unreg = True
        evs = p.poll(0)
        if not evs:
            now = time.monotonic()
            wait = max(0.005, self.opts.stall_timeout - (now - self.last_progress))
            if self.held:
                wait = min(wait, 0.002)
            evs = p.poll(wait * 1000)
        if not evs:
            idle = time.monotonic() - self.last_progress
            if self.held and (idle >= self.opts.reorder_after or self._due_blocked()):
                self._release_one()
            elif idle >= self.opts.stall_timeout:
                self._stalled()
            return _CONTINUE
        lmask = 0
        for fd, m in evs:
            if fd == L.fd:
                lmask = m
            elif fd == sb.pidfd:
                # The first tracee ended. Tasks it left behind (daemons) are not
                # waited for once the whole recording has been replayed.
                self.main_exited = True
                if self.gpos >= len(self.consumed):
                    return self._finish(self._ended())
        if lmask & select.POLLIN:
            n = L.recv()
            if n is not None:
                self.report.notifications += 1
                self._on_notif(n)
                if self.held:
                    self._drain_held()
            return _CONTINUE
        if lmask & (select.POLLHUP | select.POLLERR):
            return self._finish(self._ended())
        return _CONTINUE

    def _finish(self, res: StepResult) -> StepResult:
        self.done = res
        r = self.report
        r.wall_s = time.monotonic() - r.started
        r.events_replayed = sum(self.consumed)
        r.syscalls.clear()
        counts: dict[int, int] = {}
        nrs = self.nrs
        for pos, done in enumerate(self.consumed):
            if done:
                nr = nrs[pos]
                counts[nr] = counts.get(nr, 0) + 1
        for nr, c in counts.items():
            r.syscalls[schema.name_of(nr)] += c
        if res.status is Status.EXITED:
            r.verdict = "diverged" if r.divergences else "faithful"
        else:
            r.verdict = res.status.value
        if res.status is not Status.EXITED and self.sb is not None:
            self.sb.kill()
        if res.divergence is not None and res.divergence not in r.divergences:
            r.divergences.append(res.divergence)
        if res.status is Status.EXITED and r.divergences:
            res = StepResult(Status.DIVERGED, r.divergences[0].message, r.divergences[0])
            self.done = res
        return res

    def _ended(self) -> StepResult:
        """All tasks under the filter are gone: compare what is left and the exit status."""
        sb = self.sb
        assert sb is not None
        self.release_exits()
        st = sb.exit_status(timeout=5.0)
        code = os.waitstatus_to_exitcode(st) if st is not None and st >= 0 else None
        self.report.exit_status = code
        if not self.started:
            sb.exec_done()  # raises ReplayError with the launcher's own message when it sent one
            return StepResult(Status.ERROR, f"the tracee ended (exit status {code}) before its first "
                              "execve completed; the sandbox could not start the command")
        evs = self.script.events
        # A call that never returned because its thread was killed (NO_EXIT) need not replay.
        left = [i for i in range(self.gpos, len(self.consumed)) if not self.consumed[i] and not (
            evs[i].flags & NO_EXIT and evs[i].nr not in EXITS)]
        if left and not self.script.truncated:
            ev = self.script.events[left[0]]
            return StepResult(Status.DIVERGED, divergence=self._div(
                "ended", f"the replay ended before the recording: {len(left)} recorded syscalls were "
                f"not replayed, the next being {ev.name} of thread {ev.tid}", ev.tid, ev.index))
        rec = self.report.recorded_exit_status
        if rec is not None and code is not None and rec != code:
            return StepResult(Status.DIVERGED, divergence=self._div(
                "exit", f"exit status {code}, recorded {rec}", self.main_tid, None))
        return StepResult(Status.EXITED, f"exit status {code}")

    def _stalled(self) -> None:
        if self.held_exits:
            self.release_exits()
            self.last_progress = time.monotonic()
            return
        ev_pos = self.gpos
        if ev_pos >= len(self.script.events):
            return
        ev = self.script.events[ev_pos]
        held = ", ".join(f"{self.script.events[p].name} of thread {t.tid}" for p, (_n, t) in
                         sorted(self.held.items())) or "none"
        raise _Stop(StepResult(Status.DIVERGED, divergence=self._div(
            "stalled", f"no progress for {self.opts.stall_timeout:g} s: waiting for thread {ev.tid} "
            f"to call {ev.name} (held: {held})", ev.tid, ev.index)))

    # -------------------------------------------------------------- threads
    def _thread(self, n: Notif) -> Thread:
        th = self.threads.get(n.pid)
        if th is not None and not th.dead:
            return th
        ids = _ns_ids(n.pid)
        if ids is None:
            raise _GoneNotif()
        tgid, nstid = ids
        live = {t.tid for t in self.threads.values() if not t.dead}
        if not self.started:
            rec = self.main_tid
        elif nstid in self.script.tids and nstid not in live:
            rec = nstid
        elif self.children and self.children[0] not in live:
            # The recorded tid could not be given (taken in the sandbox): recorded
            # clone children are matched in creation order.
            rec = self.children.popleft()
        else:
            raise _Stop(StepResult(Status.DIVERGED, divergence=self._div(
                "syscall", f"a task the recording does not know (tid {nstid} in the sandbox) made "
                f"syscall {schema.name_of(n.nr)}", nstid, None,
                actual=decode_call(n.nr, n.args))))
        th = Thread(n.pid, tgid, rec, self.script.per_tid.get(rec, deque()),
                    rec_tgid=self.script.tgid_of.get(rec, rec))
        self.threads[n.pid] = th
        if tgid not in self.console:
            self.console[tgid] = dict(self.console.get(_ppid(tgid), {}) if self.console else {1: 1, 2: 2})
            self.owned[tgid] = set(self.owned.get(_ppid(tgid), ()))
        if rec in self.children:
            self.children.remove(rec)
        if tgid not in self.cwd:
            self.cwd[tgid] = self.cwd.get(_ppid(tgid)) or str(self.script.meta.get("cwd") or "/")
        return th

    def _pidfd(self, tgid: int) -> int | None:
        fd = self.pidfds.get(tgid)
        if fd is None:
            try:
                fd = os.pidfd_open(tgid)
            except OSError:
                return None
            self.pidfds[tgid] = fd
        return fd

    # -------------------------------------------------------------- dispatch
    def _on_notif(self, n: Notif) -> None:
        sb = self.sb
        assert sb is not None
        L = sb.listener
        assert L is not None
        if n.arch != notify.AUDIT_ARCH_X86_64:
            L.send(n.id, 0, -errno.ENOSYS)
            return
        th = self.threads.get(n.pid)
        if th is None or th.dead:
            try:
                th = self._thread(n)
            except _GoneNotif:
                return
        if not self.started:
            # The launcher between its filter and execve runs freely; the tracee
            # starts once its execve closed the CLOEXEC sync pipe. A failed execve
            # makes the launcher report through that pipe (ReplayError).
            if not sb.exec_done():
                L.send(n.id, continue_=True)
                return
            self.started = True
            self.need_vdso.add(th.host_tgid)
            if self.script.events[0].nr == NR["execve"] and th.queue and th.queue[0] == 0:
                th.queue.popleft()
                self._consume(0, th)
        if self.need_vdso and th.host_tgid in self.need_vdso:
            self.need_vdso.discard(th.host_tgid)
            if self.vdso_names:
                from dr.replay.vdso import patch_vdso
                patch_vdso(th.host_tgid, self.vdso_names)
        if not th.queue:
            if n.nr == NR_EXIT and self._early_exit(n, th):
                return
            if self.script.truncated:
                raise _Stop(StepResult(Status.EXITED, "reached the end of a cut-short trace"))
            raise _Stop(StepResult(Status.DIVERGED, divergence=self._div(
                "extra", f"thread {th.tid} called {schema.name_of(n.nr)} after its recorded syscalls "
                "ended", th.tid, None, actual=decode_call(n.nr, n.args), th=th)))
        pos = th.queue[0]
        ev = self.script.events[pos]
        if n.nr != ev.nr and (n.nr in SOFT or ev.nr in SOFT):
            soft = self._soft_match(n, th)
            if soft is None:
                return
            pos, ev = soft
        if n.nr != ev.nr:
            raise _Stop(StepResult(Status.DIVERGED, divergence=self._div(
                "syscall", f"thread {th.tid} called {schema.name_of(n.nr)} where the recording has "
                f"{ev.name}", th.tid, ev.index, expected=decode_event(ev),
                actual=self._decode_actual(n, th), th=th)))
        if pos == self.gpos or n.nr in OWN_ORDER:
            self._answer(n, th, pos, ev)
        else:
            self.held[pos] = (n, th)

    def _soft_match(self, n: Notif, th: Thread) -> tuple[int, Any] | None:
        """Match around time reads the replay makes more or fewer of than the recording.

        Returns the (position, event) to answer, or None when the notification was
        answered here (an extra time read, given the thread's last recorded value).
        """
        q = th.queue
        if n.nr not in SOFT:
            k = 0
            while k < len(q) and self.script.events[q[k]].nr in SOFT:
                k += 1
            if k == len(q) and n.nr == NR_EXIT and self._early_exit(n, th):
                return None
            if k < len(q) and self.script.events[q[k]].nr == n.nr:
                for _ in range(k):
                    self._consume(q.popleft(), th)
                    self.report.soft_skipped += 1
                return q[0], self.script.events[q[0]]
            return q[0], self.script.events[q[0]]
        ev = th.last_soft.get(n.nr)
        if ev is None:
            ev = next((self.script.events[p] for p in q if self.script.events[p].nr == n.nr), None)
        if ev is None:
            return q[0], self.script.events[q[0]]
        sc = SC.get(n.nr)
        assert sc is not None
        _write_outputs(self, n, th, ev, sc)
        self.sb.listener.reply(n.id, ev.ret)  # type: ignore[union-attr]
        self.report.soft_extra += 1
        return None

    def _early_exit(self, n: Notif, th: Thread) -> bool:
        """A thread ends (exit(2)) where the recording shows at most time reads left.

        In the recording it was killed by another thread's exit_group before it
        ended by itself (no exit event of its own); here it got there first. Its
        remaining time reads are skipped and the exit runs natively. False (not
        handled) for the last thread of a process, whose exit must be recorded."""
        if _nthreads(th.host_tgid) <= 1:
            return False
        while th.queue:
            self._consume(th.queue.popleft(), th)
            self.report.soft_skipped += 1
        if self.listener.send(n.id, continue_=True):
            th.dead = True
        return True

    def _drain_held(self) -> None:
        while self.gpos in self.held:
            n, th = self.held.pop(self.gpos)
            if not self.sb.listener.id_valid(n.id):  # type: ignore[union-attr]
                continue  # interrupted: a fresh notification of the same call will come
            self._answer(n, th, self.gpos, self.script.events[self.gpos])

    def _due_blocked(self) -> bool:
        """True when the thread whose syscall is due sleeps natively in a futex (or
        sigsuspend): it waits for a thread we hold, so waiting longer cannot help."""
        if self.gpos >= len(self.script.events):
            return False
        tid = self.script.events[self.gpos].tid
        th = next((t for t in self.threads.values() if t.tid == tid and not t.dead), None)
        if th is None:
            return False
        try:
            with open(f"/proc/{th.host_tid}/syscall") as f:
                word = f.read().split(" ", 1)[0]
        except OSError:
            return False
        if not (word.isdigit() and int(word) in NATIVE_BLOCKING):
            return False
        # Some other thread still running may wake it (a GIL handover): not stuck yet.
        for t in self.threads.values():
            if t is th or t.dead:
                continue
            try:
                with open(f"/proc/{t.host_tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state == "R":
                return False
        return True

    def _release_one(self) -> None:
        """Break a lock-order inversion: the due thread cannot reach its syscall
        (it waits natively, e.g. on a mutex a held thread owns), so answer the
        earliest held notification out of global order. Each thread stays held
        to its own recorded sequence; the report counts the reorderings."""
        pos = min(self.held)
        n, th = self.held.pop(pos)
        self.report.reordered += 1
        if self.sb.listener.id_valid(n.id):  # type: ignore[union-attr]
            self._answer(n, th, pos, self.script.events[pos])
        self.last_progress = time.monotonic()

    def _consume(self, pos: int, th: Thread) -> None:
        consumed = self.consumed
        consumed[pos] = 1
        th.last = pos
        nr = self.nrs[pos]
        if nr in SOFT:
            th.last_soft[nr] = self.script.events[pos]
        g = self.gpos
        if g == pos:
            end = len(consumed)
            g += 1
            while g < end and consumed[g]:
                g += 1
            self.gpos = g
        self.last_progress = _monotonic()

    def _answer(self, n: Notif, th: Thread, pos: int, ev: Any) -> None:
        try:
            handler = HANDLERS.get(ev.nr, _h_regular)
            ok = handler(self, n, th, ev, pos)
        except _Gone:
            ok = False
        except MemoryFault as e:
            if not self.sb.listener.id_valid(n.id):  # type: ignore[union-attr]
                return
            self._diverge("payload", f"{ev.name} of thread {th.tid}: {e.message}", th, ev, n)
            ok = self.sb.listener.reply(n.id, ev.ret)  # type: ignore[union-attr]
        if not ok and pos in self.script.signals and not self.sb.killable_wait:  # type: ignore[union-attr]
            # Before Linux 5.19 the signal we sent interrupted the notification
            # itself: the kernel answered -ERESTARTSYS as the recording shows.
            ok = True
        if ok:
            if th.queue and th.queue[0] == pos:
                th.queue.popleft()
            self._consume(pos, th)
            if n.nr in EXITS:
                if n.nr == NR["exit_group"]:
                    for t in self.threads.values():
                        if t.host_tgid == th.host_tgid:
                            t.dead = True
                th.dead = True

    # -------------------------------------------------------------- divergences
    def _div(self, kind: str, message: str, tid: int | None, index: int | None, *,
             expected: str | None = None, actual: str | None = None, th: Thread | None = None,
             diff: list[str] | None = None) -> Divergence:
        hist: list[str] = []
        if th is not None:
            hist = self._history(th)
        elif tid is not None:
            t = next((t for t in self.threads.values() if t.tid == tid), None)
            if t is not None:
                hist = self._history(t)
        return Divergence(kind, message, tid, index, expected, actual, hist, diff or [])

    def _history(self, th: Thread) -> list[str]:
        """The last 10 recorded events of the thread up to where replay is, passthrough ones included."""
        if th.last < 0:
            return []
        last_all = self.script.pos_in_all[th.last]
        out: list[str] = []
        i = last_all
        while i >= 0 and len(out) < 10:
            ev = self.script.all_events[i]
            if ev.tid == th.tid:
                out.append(f"#{ev.index} {decode_event(ev)}")
            i -= 1
        return out[::-1]

    def _diverge(self, kind: str, message: str, th: Thread, ev: Any, n: Notif,
                 diff: list[str] | None = None, actual: str | None = None) -> None:
        # What we read may be another task's memory if this one died meanwhile.
        self.gone_check(n)
        d = self._div(kind, message, th.tid, ev.index, expected=decode_event(ev),
                      actual=actual or self._decode_actual(n, th), th=th, diff=diff)
        if self.opts.keep_going and kind in ("payload", "argument"):
            self.report.divergences.append(d)
            return
        raise _Stop(StepResult(Status.DIVERGED, d.message, d))

    def _decode_actual(self, n: Notif, th: Thread) -> str:
        sc = SC.get(n.nr)
        pay: dict[int, bytes] = {}
        if sc is not None:
            for i, a in enumerate(sc.args[:6]):
                try:
                    if a.kind in (Kind.PATH, Kind.STR) and n.args[i]:
                        pay[i] = notify.read_cstr(n.pid, n.args[i], 256)
                    elif a.kind == Kind.BUF_IN and a.rule in (Rule.RET, Rule.ARG) and n.args[i]:
                        cnt = _capacity(sc, i, n.args) or 0
                        pay[i] = notify.read_mem(n.pid, n.args[i], min(cnt, 256))
                except (MemoryFault, ReplayError):
                    pass
        return decode_call(n.nr, n.args, pay)

    # -------------------------------------------------------------- helpers used by handlers
    def refuse(self, ev: Any, tid: int, reason: str, what: str) -> NoReturn:
        """Stop at a recorded call no genuine run can have: listed in the report's
        ``refused`` and raised as one line, before anything reaches the tracee."""
        self.report.refuse(ev.name, tid, ev.index, reason)
        raise ReplayError(f"the trace's syscall #{ev.index} ({ev.name} of thread {tid}) {what}; "
                          "is the trace corrupt?")

    def gone_check(self, n: Notif) -> None:
        if not self.sb.listener.id_valid(n.id):  # type: ignore[union-attr]
            raise _Gone()

    def deliver_signals(self, th: Thread, pos: int) -> None:
        sigs = self.script.signals.get(pos)
        if not sigs:
            return
        for sig in sigs:
            if sig in NO_DELIVER:
                continue
            if sig == signal.SIGCHLD:
                self.release_exits(th.host_tgid)
            if _pending(th.host_tid, sig):
                # Already queued by the kernel (a released child's SIGCHLD): a
                # thread-directed copy would not merge with it and run the handler twice.
                continue
            try:
                notify.tgkill(th.host_tgid, th.host_tid, sig)
                self.report.signals_delivered += 1
            except OSError:
                pass

    def hold_exit(self, n: Notif, th: Thread) -> bool:
        """Hold a child process's exit while its parent has a recorded SIGCHLD ahead.

        The kernel sends SIGCHLD when the child really dies; released at the
        parent's recorded delivery point, the signal is pending there (the parent
        waits in a killable notification) and its handler runs where it ran.
        """
        parent = _ppid(th.host_tgid)
        pt = next((t for t in self.threads.values() if t.host_tgid == parent), None)
        if pt is None:
            return False
        if not any(not self.consumed[p] for p in self.script.sigchld.get(pt.rec_tgid, ())):
            return False
        self.held_exits.setdefault(parent, []).append((n, th.host_tgid))
        return True

    def release_exits(self, parent: int | None = None) -> None:
        """Let held exits go (of ``parent``'s children, or all) and wait until those processes died."""
        keys = list(self.held_exits) if parent is None else [parent]
        for k in keys:
            held = self.held_exits.pop(k, ())
            for n, tgid in held:
                try:
                    pfd = os.pidfd_open(tgid)
                except OSError:
                    pfd = -1
                self.sb.listener.send(n.id, continue_=True)  # type: ignore[union-attr]
                if pfd >= 0:
                    select.select([pfd], [], [], 2.0)
                    os.close(pfd)
            if held:
                # The pidfd wakes us just before the kernel queues SIGCHLD
                # (kernel/signal.c do_notify_parent): wait until it is pending,
                # or a signal we send now would be a second one.
                deadline = time.monotonic() + 0.2
                while not _sigchld_pending(k) and time.monotonic() < deadline:
                    time.sleep(0.0005)

    def reply(self, n: Notif, th: Thread, pos: int, ret: int) -> bool:
        self.deliver_signals(th, pos)
        return self.sb.listener.reply(n.id, ret)  # type: ignore[union-attr]

    def cont(self, n: Notif, th: Thread, pos: int) -> bool:
        self.deliver_signals(th, pos)
        return self.sb.listener.send(n.id, continue_=True)  # type: ignore[union-attr]

    def addfd_reply(self, n: Notif, th: Thread, pos: int, src: int, newfd: int, cloexec: bool) -> bool:
        if not 0 <= newfd < (1 << 20):
            self.refuse(self.script.events[pos], th.tid, "absurd fd number",
                        f"holds an absurd fd number {newfd}")
        self.deliver_signals(th, pos)
        res = self.sb.listener.addfd(n.id, src, newfd, cloexec=cloexec, send=True)  # type: ignore[union-attr]
        if res is not None:
            self.set_console(th, newfd, None)
        return res is not None

    def set_console(self, th: Thread, fd: int, which: int | None) -> None:
        """Track which fds of a process are the replay's stdout (1) / stderr (2) for --show-output;
        a new object at ``fd`` also ends its being an owned file."""
        m = self.console.setdefault(th.host_tgid, {})
        if which is None:
            m.pop(fd, None)
        else:
            m[fd] = which
        own = self.owned.get(th.host_tgid)
        if own:
            own.discard(fd)

    def is_owned(self, th: Thread, fd: int) -> bool:
        own = self.owned.get(th.host_tgid)
        return bool(own) and fd in own

    def show(self, fd: int, data: bytes) -> None:
        if not self.opts.show_output or fd not in (1, 2) or not data:
            return
        stream = self.out if fd == 1 else self.err
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):
            pass

    def open_source(self, th: Thread, dirfd: int, path: bytes, flags: int) -> int:
        """The supervisor-side object behind a recorded open: a real read-only file of
        the sandbox root when it exists there, else an empty memfd. Caller closes it."""
        p = path.decode(errors="surrogateescape")
        if not p.startswith("/"):
            if _s32(dirfd) != AT_FDCWD:
                base = self.dirpaths.get((th.host_tgid, _s32(dirfd)))
                p = os.path.join(base, p) if base else ""
            else:
                p = os.path.join(self.cwd.get(th.host_tgid, "/"), p)
        p = os.path.normpath(p) if p else p
        self.last_open_path = p
        if p and not _virtual(p):
            how = _OPEN_HOW.pack(os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK, 0,
                                 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
            buf = ctypes.create_string_buffer(how, len(how))
            pbuf = ctypes.create_string_buffer(p.encode(errors="surrogateescape"))
            try:
                fd = notify.syscall(notify.NR_OPENAT2, self.rootfd, ctypes.addressof(pbuf),
                                    ctypes.addressof(buf), len(how))
            except OSError:
                fd = -1
            if fd >= 0:
                mode = os.fstat(fd).st_mode
                # A symlink inside the root may lead into /proc or /sys: the files
                # there would describe the supervisor, never the recorded host.
                try:
                    real = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    real = "/proc/"
                if (stat_mod.S_ISREG(mode) or stat_mod.S_ISDIR(mode)) and not _virtual(real):
                    return fd
                os.close(fd)
        if flags & 0o3:  # written to: a memfd, so mmap of it works as on a file
            return os.memfd_create("dr-replay", os.MFD_CLOEXEC)
        return os.dup(self.devnull)


_CONTINUE = StepResult(Status.CONTINUE)


def _which_in_root(name: str, root: str) -> str:
    """``name`` looked up in the usual PATH directories of the sandbox root (a path inside it)."""
    for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin"):
        cand = os.path.join(root, d.lstrip("/"), name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return os.path.join(d, name)
    return name


def _virtual(path: str) -> bool:
    return any(path.startswith(v) or path == v.rstrip("/") for v in VIRTUAL_PREFIXES)


class _Stop(Exception):
    def __init__(self, result: StepResult) -> None:
        super().__init__(result.message)
        self.result = result


class _GoneNotif(Exception):
    pass


# ----------------------------------------------------------------------------- buffers

_RET_SIZE_ARG: dict[tuple[int, int], int | None] = {}


def _capacity(sc: schema.Syscall, i: int, args: tuple[int, ...], pid: int | None = None) -> int | None:
    """Bytes the tracee's own arguments allow at argument ``i`` (the cap for any write)."""
    a = sc.args[i]
    if a.rule == Rule.RET:
        key = (sc.nr, i)
        j = _RET_SIZE_ARG.get(key, -1)
        if j == -1:
            j = _ret_size_arg(sc, i)
            _RET_SIZE_ARG[key] = j
        return None if j is None else (args[j] & 0xFFFFFFFF) * (a.elem or 1)
    elem = a.elem or 1
    if a.rule == Rule.CONST:
        return a.size
    if a.rule in (Rule.ARG, Rule.MIN_RET_ARG) and a.size < len(args):
        return (args[a.size] & 0xFFFFFFFF) * elem
    if a.rule == Rule.CNT and a.size < len(args):
        cnt = args[a.size] & 0xFFFFFFFF
        if a.kind in (Kind.IOV_IN, Kind.IOV_OUT, Kind.MMSG_IN, Kind.MMSG_OUT):
            cnt = min(cnt, IOV_MAX)  # the kernel refuses more (UIO_MAXIOV); poll's nfds may be larger
        return cnt * elem
    if a.rule == Rule.DEREF and a.size < len(args):
        if pid is None or not args[a.size]:
            return 0
        return _U32.unpack(notify.read_mem(pid, args[a.size], 4))[0]
    return None


def _ret_size_arg(sc: schema.Syscall, i: int) -> int | None:
    """For a RET-rule buffer, the argument holding its size: the nearest integer
    argument after it (read's count, epoll_wait's maxevents, getcwd's size), else
    before it (getgroups)."""
    order = list(range(i + 1, min(len(sc.args), 6))) + list(range(i - 1, -1, -1))
    for j in order:
        if sc.args[j].kind in (Kind.UINT, Kind.INT):
            return j
    return None


def _read_iov(pid: int, addr: int, cnt: int) -> list[tuple[int, int]]:
    cnt = min(cnt, IOV_MAX)
    if not addr or cnt <= 0:
        return []
    raw = notify.read_mem(pid, addr, cnt * _IOVEC.size)
    return [_IOVEC.unpack_from(raw, k * _IOVEC.size) for k in range(cnt)]


def _gather(pid: int, iov: list[tuple[int, int]], limit: int) -> bytes:
    out = bytearray()
    for base, ln in iov:
        if len(out) >= limit:
            break
        take = min(ln, limit - len(out))
        if take:
            out += notify.read_mem(pid, base, take)
    return bytes(out)


def _scatter(pid: int, iov: list[tuple[int, int]], data: bytes) -> int:
    off = 0
    for base, ln in iov:
        if off >= len(data):
            break
        chunk = data[off:off + ln]
        notify.write_mem(pid, base, chunk)
        off += len(chunk)
    return off


# ----------------------------------------------------------------------------- handlers

_K_BUF_IN = Kind.BUF_IN
_R_ARG = Rule.ARG
_R_RET = Rule.RET
SCALAR_KINDS = frozenset({Kind.FD, Kind.FLAGS, Kind.ENUM, Kind.SIGNAL, Kind.INT, Kind.UINT})
INPUT_KINDS = frozenset({Kind.PATH, Kind.STR, Kind.BUF_IN, Kind.IOV_IN, Kind.SOCKADDR_IN, Kind.MSG_IN})
OUTPUT_KINDS = frozenset({Kind.BUF_OUT, Kind.INOUT, Kind.SOCKADDR_OUT, Kind.IOV_OUT, Kind.MSG_OUT,
                          Kind.MMSG_IN, Kind.MMSG_OUT})
MMSGHDR = 64                  # struct mmsghdr: struct msghdr (56) + unsigned msg_len + padding


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per-syscall work list derived once from the schema (the hot path reads only this).

    ``ret_bounds``: (argument index, name) pairs whose value bounds a successful
    return value (read's count, epoll_wait's maxevents, poll's nfds): a recorded
    return value above it cannot be genuine. ``trunc_flags``: index of the flags
    argument whose MSG_TRUNC lets recv* return more than the buffer (recv(2)), or -1.
    """

    scalars: tuple[tuple[int, str], ...]
    inputs: tuple[tuple[int, Any], ...]
    outputs: tuple[tuple[int, Any], ...]
    shows: bool
    ret_bounds: tuple[tuple[int, str], ...] = ()
    trunc_flags: int = -1
    size_query: bool = False   # a zero size asks for the needed count (getgroups(2))


_PLANS: dict[int, _Plan] = {}
#: Calls returning the number of bytes they took from a BUF_IN buffer (write(2), send(2)).
BYTES_IN_COUNT = frozenset(NR[n] for n in ("write", "pwrite64", "sendto"))
#: recv* calls whose flags argument may hold MSG_TRUNC: nr -> flags argument index.
TRUNC_FLAGS = {NR["recvfrom"]: 3, NR["recvmsg"]: 2, NR["recvmmsg"]: 3}
MSG_TRUNC = 0x20
SIZE_QUERY = frozenset({NR["getgroups"]})


def _plan(sc: schema.Syscall) -> _Plan:
    p = _PLANS.get(sc.nr)
    if p is None:
        args = sc.args[:6]
        bounds: list[tuple[int, str]] = []
        for i, a in enumerate(args):
            j: int | None = None
            if a.kind in OUTPUT_KINDS and a.rule == Rule.RET:
                j = _ret_size_arg(sc, i)
            elif a.kind == Kind.BUF_IN and a.rule == Rule.ARG and sc.nr in BYTES_IN_COUNT:
                j = a.size
            elif a.rule == Rule.CNT and a.kind in (Kind.INOUT, Kind.MMSG_IN, Kind.MMSG_OUT):
                j = a.size
            if j is not None and j < len(args) and (j, args[j].name) not in bounds:
                bounds.append((j, args[j].name))
        p = _Plan(
            tuple((i, a.name) for i, a in enumerate(args)
                  if a.kind in SCALAR_KINDS and a.name not in POINTER_LIKE),
            tuple((i, a) for i, a in enumerate(args) if a.kind in INPUT_KINDS and not (
                a.kind == Kind.BUF_IN and a.rule == Rule.CONST and a.ctype not in COMPARED_STRUCTS)),
            tuple((i, a) for i, a in enumerate(args) if a.kind in OUTPUT_KINDS),
            len(args) > 1 and args[0].kind == Kind.FD and args[1].kind in (Kind.BUF_IN, Kind.IOV_IN),
            tuple(bounds), TRUNC_FLAGS.get(sc.nr, -1), sc.nr in SIZE_QUERY)
        _PLANS[sc.nr] = p
    return p


def _check_ret(s: ReplaySession, n: Notif, th: Thread, ev: Any, plan: _Plan) -> None:
    """Refuse a recorded return value the tracee's own arguments make impossible
    (read(fd, buf, 200) returning 2**40): the tracee would act on it."""
    ret = ev.ret
    if ret <= 0 or not plan.ret_bounds:
        return
    args = n.args
    if plan.trunc_flags >= 0 and args[plan.trunc_flags] & MSG_TRUNC:
        return  # recv(2): with MSG_TRUNC the real length of a longer datagram
    for j, name in plan.ret_bounds:
        bound = args[j] & 0xFFFFFFFF
        if ret > bound and not (plan.size_query and bound == 0):
            s.refuse(ev, th.tid, "return value larger than the call's size argument",
                     f"returns {ret} where the tracee's {name} argument is {bound}")


def _too_long(s: ReplaySession, th: Thread, ev: Any, a: Any, have: int, cap: int) -> None:
    s.refuse(ev, th.tid, "payload larger than the tracee's buffer",
             f"holds {have} bytes of {a.name} for the tracee's {cap}-byte buffer")


def _compare_inputs(s: ReplaySession, n: Notif, th: Thread, ev: Any, sc: schema.Syscall) -> None:
    """Compare everything the tracee hands the kernel with the recording."""
    args = n.args
    plan = _PLANS.get(sc.nr) or _plan(sc)
    rargs = ev.args
    for i, name in plan.scalars:
        if (rargs[i] ^ args[i]) & 0xFFFFFFFF:
            if name == "mode" and sc.nr in OPEN_MODE_FLAGS and not (
                    args[OPEN_MODE_FLAGS[sc.nr]] & (os.O_CREAT | O_TMPFILE)):
                continue  # open(2): mode is not passed without O_CREAT/O_TMPFILE: register garbage
            s._diverge("argument", f"{ev.name} of thread {th.tid}: argument {name} is "
                       f"{_s32(args[i])}, recorded {_s32(rargs[i])}", th, ev, n)
    if not plan.inputs:
        return
    payloads = ev.payloads
    for i, a in plan.inputs:
        k = a.kind
        cur_v = args[i]
        rec = payloads.get(i)
        if k == _K_BUF_IN:
            if rec is None or not cur_v:
                continue
            data = rec.data
            want = len(data)
            if a.rule == _R_ARG:
                cap = (args[a.size] & 0xFFFFFFFF) * (a.elem or 1)
            else:
                cap = _capacity(sc, i, args, n.pid)
                if a.rule == _R_RET and 0 <= ev.ret < want:
                    want = ev.ret
            if cap is not None and cap < want:
                want = cap
            cur_b = notify.read_mem(n.pid, cur_v, want if want < MAX_INPUT else MAX_INPUT)
            s.report.compared_bytes += len(cur_b)
            if s.script.redacted:
                spans = s.script.redacted.get((ev.tid, ev.seq, i))
                if spans:
                    cur_b = _unmask(cur_b, data, spans)
                    s.report.redacted_bytes += sum(min(ln, max(0, len(cur_b) - st)) for st, ln in spans)
            if cur_b != data:
                s._diverge("payload", f"{ev.name} of thread {th.tid}: the {a.name} bytes differ from "
                           "the recording", th, ev, n, payload_diff(data, cur_b))
            continue
        if k in (Kind.PATH, Kind.STR):
            cur = notify.read_cstr(n.pid, cur_v, 4096) if cur_v else None
            recb = rec.data.rstrip(b"\0") if rec is not None else None
            if rec is not None and cur != recb:
                s._diverge("argument", f"{ev.name} of thread {th.tid}: {a.name} differs",
                           th, ev, n, payload_diff(recb or b"", cur or b""))
            continue
        if rec is None:
            continue
        cur_b: bytes | None = None
        if k == Kind.BUF_IN and cur_v:
            cap = _capacity(sc, i, args, n.pid)
            want = len(rec.data)
            if a.rule == Rule.RET and ev.ret >= 0:
                want = min(want, ev.ret)
            cur_b = notify.read_mem(n.pid, cur_v, min(want, cap if cap is not None else want, MAX_INPUT))
        elif k == Kind.IOV_IN and cur_v:
            iov = _read_iov(n.pid, cur_v, _capacity(sc, i, args) // 16 if _capacity(sc, i, args) else 0)
            _check_iov(s, n, th, ev, a, iov, 0)
            cur_b = _gather(n.pid, iov, len(rec.data))
        elif k == Kind.SOCKADDR_IN and cur_v:
            cap = min(_capacity(sc, i, args) or 0, SOCKADDR_MAX)
            cur_b = notify.read_mem(n.pid, cur_v, cap)
        elif k == Kind.MSG_IN and cur_v:
            cur_b = _msg_in(n.pid, cur_v, ev, i, s, th, a)
            if cur_b is None:
                continue
        else:
            continue
        s.report.compared_bytes += len(cur_b)
        spans = s.script.redacted.get((ev.tid, ev.seq, i)) if s.script.redacted else None
        if spans:
            cur_b = _unmask(cur_b, rec.data, spans)
            s.report.redacted_bytes += sum(min(ln, max(0, len(cur_b) - st)) for st, ln in spans)
        same = (_sockaddr_key(cur_b) == _sockaddr_key(rec.data)) if k == Kind.SOCKADDR_IN else (
            cur_b == rec.data)
        if not same:
            s._diverge("payload", f"{ev.name} of thread {th.tid}: the {a.name} bytes differ from "
                       "the recording", th, ev, n, payload_diff(rec.data, cur_b))


def _unmask(cur: bytes, rec: bytes, spans: list[tuple[int, int]]) -> bytes:
    """``cur`` with the redacted byte ranges taken from the recording: masked bytes are
    unknown, never a divergence. Spans are clipped to both buffers."""
    out = bytearray(cur)
    for st, ln in spans:
        end = min(st + ln, len(out), len(rec))
        if st < end:
            out[st:end] = rec[st:end]
    return bytes(out)


def _sockaddr_key(b: bytes) -> bytes:
    """The meaningful bytes of a struct sockaddr (unix(7), ip(7), ipv6(7)): padding and
    the bytes after a sun_path's NUL are uninitialised memory and differ run to run."""
    if len(b) < 2:
        return b
    fam = struct.unpack_from("<H", b)[0]
    if fam == 1:  # AF_UNIX: the path up to its NUL (abstract names start with NUL: keep all)
        path = b[2:]
        if path[:1] != b"\0":
            z = path.find(b"\0")
            path = path if z < 0 else path[:z]
        return b[:2] + path
    if fam == 2:  # AF_INET: family, port, address; sin_zero is padding
        return b[:8]
    return b


def _msg_in(pid: int, addr: int, ev: Any, i: int, s: ReplaySession, th: Thread, a: Any) -> bytes | None:
    name, namelen, iov, iovlen, _c, _cl, _f = _MSGHDR.unpack(notify.read_mem(pid, addr, _MSGHDR.size))
    vec = _read_iov(pid, iov, iovlen)
    rec_name = ev.payloads.get(i | (Sub.NAME << 4))
    if rec_name is not None and name:
        cur = notify.read_mem(pid, name, min(namelen, SOCKADDR_MAX))
        if _sockaddr_key(cur) != _sockaddr_key(rec_name.data):
            return cur  # reported as a payload difference of the whole message
    rec = ev.payloads.get(i)
    if ev.ret > 0:
        room = sum(ln for _b, ln in vec)
        if ev.ret > room:
            s.refuse(ev, th.tid, "return value larger than the call's buffers",
                     f"returns {ev.ret} where the tracee's {a.name} holds {room} bytes")
    return _gather(pid, vec, len(rec.data) if rec is not None else 0)


def _write_outputs(s: ReplaySession, n: Notif, th: Thread, ev: Any, sc: schema.Syscall) -> None:
    """Write the recorded out-payloads into the tracee.

    Every size is checked against the tracee's own arguments first: a return value
    or a payload no genuine call could produce (more bytes than the buffer) is
    refused (ReplayError naming the event) before anything is written. Only
    sockaddr and msghdr name/control bytes are cut to the tracee's length, as the
    kernel itself truncates them (accept(2), recvmsg(2) MSG_CTRUNC).
    """
    args = n.args
    splan = _plan(sc)
    if ev.ret > 0 and splan.ret_bounds:
        _check_ret(s, n, th, ev, splan)
    if not splan.outputs:
        return
    plan: list[tuple[int, bytes]] = []
    iov_plan: list[tuple[list[tuple[int, int]], bytes]] = []
    for i, a in splan.outputs:
        k = a.kind
        addr = args[i]
        if k in (Kind.MMSG_IN, Kind.MMSG_OUT):
            # The trace holds the mmsghdr array as the kernel left it (Sub.HEADER):
            # give each message its recorded msg_len (sendmmsg(2), recvmmsg(2)).
            hdr = ev.payloads.get(i | (Sub.HEADER << 4))
            if hdr is not None and addr and ev.ret > 0:
                cnt = min(ev.ret, _capacity(sc, i, args) // MMSGHDR if _capacity(sc, i, args) else 0,
                          len(hdr.data) // MMSGHDR)
                for m in range(cnt):
                    plan.append((addr + m * MMSGHDR + 56, hdr.data[m * MMSGHDR + 56:m * MMSGHDR + 60]))
                if k == Kind.MMSG_OUT and cnt and not s.warned_mmsg:
                    s.warned_mmsg = True
                    s.report.notes.append("recvmmsg payloads are not in the trace: the replayed "
                                          "messages hold no recorded bytes")
            continue
        rec = ev.payloads.get(i)
        if rec is None or not addr:
            continue
        data = rec.data
        if k == Kind.IOV_OUT:
            cnt = _capacity(sc, i, args) or 0
            iov = _read_iov(n.pid, addr, cnt // 16)
            _check_iov(s, n, th, ev, a, iov, len(data))
            iov_plan.append((iov, data))
            continue
        if k == Kind.MSG_OUT:
            _plan_msg_out(s, n, th, ev, i, a, plan, iov_plan)
            continue
        cap = _capacity(sc, i, args, n.pid)
        if cap is None:
            continue
        if k == Kind.SOCKADDR_OUT:
            cap = min(cap, SOCKADDR_MAX)
        elif a.rule != Rule.DEREF and len(data) > cap:
            _too_long(s, th, ev, a, len(data), cap)
        plan.append((addr, data[:cap]))
    if not plan and not iov_plan:
        return
    s.gone_check(n)  # the task is still the one the notification names (and so were our reads)
    for addr, data in plan:
        notify.write_mem(n.pid, addr, data)
        s.report.substituted_bytes += len(data)
    for iov, data in iov_plan:
        s.report.substituted_bytes += _scatter(n.pid, iov, data)


def _check_iov(s: ReplaySession, n: Notif, th: Thread, ev: Any, a: Any, iov: list[tuple[int, int]],
               have: int) -> None:
    """Refuse a payload or a byte count larger than the tracee's iovec array holds."""
    room = sum(ln for _b, ln in iov)
    if have > room:
        _too_long(s, th, ev, a, have, room)
    tf = _plan(SC[ev.nr]).trunc_flags
    if ev.ret > room and not (tf >= 0 and n.args[tf] & MSG_TRUNC):
        s.refuse(ev, th.tid, "return value larger than the call's buffers",
                 f"returns {ev.ret} where the tracee's {a.name} holds {room} bytes")


def _plan_msg_out(s: ReplaySession, n: Notif, th: Thread, ev: Any, i: int, a: Any, plan: list,
                  iov_plan: list) -> None:
    pid, addr = n.pid, n.args[i]
    name, namelen, iov, iovlen, control, controllen, _f = _MSGHDR.unpack(
        notify.read_mem(pid, addr, _MSGHDR.size))
    data = ev.payloads.get(i)
    vec = _read_iov(pid, iov, iovlen)
    _check_iov(s, n, th, ev, a, vec, len(data.data) if data is not None else 0)
    if data is not None:
        iov_plan.append((vec, data.data))
    nm = ev.payloads.get(i | (Sub.NAME << 4))
    if nm is not None and name:
        plan.append((name, nm.data[:min(namelen, SOCKADDR_MAX)]))
    ctl = ev.payloads.get(i | (Sub.CONTROL << 4))
    if ctl is not None and control:
        plan.append((control, ctl.data[:controllen]))
    hdr = ev.payloads.get(i | (Sub.HEADER << 4))
    if hdr is not None and len(hdr.data) >= _MSGHDR.size:
        _n, rnamelen, _i, _il, _c, rcontrollen, rflags = _MSGHDR.unpack_from(hdr.data)
        plan.append((addr + 8, _U32.pack(min(rnamelen, namelen))))
        plan.append((addr + 40, struct.pack("<Q", min(rcontrollen, controllen))))
        plan.append((addr + 48, struct.pack("<i", rflags)))


def _creates_fd(sc: schema.Syscall) -> bool:
    return sc.ret == "fd" or sc.nr in FD_RET_EXTRA


CREATES_FD = frozenset(sc.nr for sc in schema.all_syscalls() if _creates_fd(sc))
UNSUPPORTED_NRS = frozenset(sc.nr for sc in schema.all_syscalls() if sc.cls == Class.UNSUPPORTED)


def _cloexec(sc: schema.Syscall, args: tuple[int, ...]) -> bool:
    name = sc.name
    if name in ("open", "openat"):
        return bool(args[2 if name == "openat" else 1] & os.O_CLOEXEC)
    if name == "creat":
        return False
    if name in ("socket", "accept4", "eventfd2", "epoll_create1", "timerfd_create", "signalfd4",
                "inotify_init1", "dup3"):
        idx = {"socket": 1, "accept4": 3, "eventfd2": 1, "epoll_create1": 0, "timerfd_create": 1,
               "signalfd4": 3, "inotify_init1": 0, "dup3": 2}[name]
        return bool(args[idx] & os.O_CLOEXEC)
    if name == "memfd_create":
        return bool(args[1] & 1)
    return False


def _h_regular(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """Table-driven: compare inputs, write recorded outputs, return the recorded value."""
    sc = SC.get(ev.nr)
    if sc is None or sc.nr in UNSUPPORTED_NRS:
        if -4095 <= ev.ret < 0:
            return s.reply(n, th, pos, ev.ret)
        s.report.refuse(schema.name_of(ev.nr), th.tid, ev.index, "unsupported syscall")
        raise _Stop(StepResult(Status.ERROR, f"replay does not support syscall "
                               f"{schema.name_of(ev.nr)} (recorded as syscall #{ev.index}, thread {th.tid})"))
    _compare_inputs(s, n, th, ev, sc)
    if s.opts.show_output:
        _show_writes(s, n, ev, sc)
    nr = sc.nr
    if nr in NATIVE_ON_OWNED:
        own = s.owned.get(th.host_tgid)
        if own and _s32(n.args[0]) in own:
            return s.cont(n, th, pos)
    _write_outputs(s, n, th, ev, sc)
    if nr in CREATES_FD and ev.ret >= 0:
        src = os.dup(s.devnull)
        try:
            return s.addfd_reply(n, th, pos, src, ev.ret, _cloexec(sc, n.args))
        finally:
            os.close(src)
    if pos in s.script.signals:
        s.deliver_signals(th, pos)
    return s.listener.reply(n.id, ev.ret)


def _show_writes(s: ReplaySession, n: Notif, ev: Any, sc: schema.Syscall) -> None:
    if not s.opts.show_output or ev.ret <= 0 or not _plan(sc).shows:
        return
    th = s.threads.get(n.pid)
    which = s.console.get(th.host_tgid, {}).get(_s32(n.args[0])) if th is not None else None
    if which is None:
        return
    fd = which
    a = sc.args[1] if len(sc.args) > 1 else None
    if a is None:
        return
    try:
        if a.kind == Kind.BUF_IN:
            s.show(fd, notify.read_mem(n.pid, n.args[1], min(ev.ret, n.args[2] & 0xFFFFFFFF, MAX_INPUT)))
        elif a.kind == Kind.IOV_IN:
            s.show(fd, _gather(n.pid, _read_iov(n.pid, n.args[1], n.args[2] & 0xFFFFFFFF), ev.ret))
    except MemoryFault:
        pass


def _h_open(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC.get(ev.nr)
    assert sc is not None
    _compare_inputs(s, n, th, ev, sc)
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    name = sc.name
    if name == "openat2":
        dirfd, path_arg = n.args[0], n.args[1]
        how = ev.payload(2) or b""
        flags = struct.unpack_from("<Q", how)[0] if len(how) >= 8 else 0
    elif name == "openat":
        dirfd, path_arg, flags = n.args[0], n.args[1], n.args[2]
    elif name == "creat":
        dirfd, path_arg, flags = AT_FDCWD, n.args[0], os.O_WRONLY
    else:
        dirfd, path_arg, flags = AT_FDCWD, n.args[0], n.args[1]
    path = notify.read_cstr(n.pid, path_arg) if path_arg else b""
    s.gone_check(n)
    created = bool(flags & os.O_CREAT) and bool(flags & (os.O_EXCL | os.O_TRUNC)) and bool(flags & 3)
    if created:
        # The run makes this file's whole content: back it with a memfd and let
        # its I/O run natively, so mmap sharing works (POSIX semaphores).
        src = os.memfd_create("dr-replay-file", os.MFD_CLOEXEC)
        s.last_open_path = ""
    else:
        src = s.open_source(th, dirfd, path, flags & 0xFFFFFFFF)
    try:
        ok = s.addfd_reply(n, th, pos, src, ev.ret, bool(flags & os.O_CLOEXEC))
        if ok and created:
            s.owned.setdefault(th.host_tgid, set()).add(ev.ret)
        if ok and s.last_open_path and stat_mod.S_ISDIR(os.fstat(src).st_mode):
            s.dirpaths[(th.host_tgid, ev.ret)] = s.last_open_path  # for later openat(dirfd, ...)
        return ok
    finally:
        os.close(src)


def _h_memfd(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC.get(ev.nr)
    assert sc is not None
    _compare_inputs(s, n, th, ev, sc)
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    src = os.memfd_create("dr-replay", os.MFD_CLOEXEC)
    try:
        return s.addfd_reply(n, th, pos, src, ev.ret, bool(n.args[1] & 1))
    finally:
        os.close(src)


def _h_pipe(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """pipe, pipe2, socketpair: two fds at the recorded numbers, written into the tracee."""
    sc = SC.get(ev.nr)
    assert sc is not None
    _compare_inputs(s, n, th, ev, sc)
    arg = 3 if sc.name == "socketpair" else 0
    rec = ev.payload(arg)
    if ev.ret < 0 or rec is None or len(rec) < 8:
        return s.reply(n, th, pos, ev.ret)
    if len(rec) > 8:
        _too_long(s, th, ev, sc.args[arg], len(rec), 8)
    fds = _I32PAIR.unpack_from(rec)
    flags = n.args[1] if sc.name == "pipe2" else (n.args[1] if sc.name == "socketpair" else 0)
    cloexec = bool(flags & os.O_CLOEXEC)
    s.gone_check(n)
    for fd in fds:
        if not 0 <= fd < (1 << 20):
            s.refuse(ev, th.tid, "absurd fd number", f"holds an absurd fd number {fd}")
        if s.sb.listener.addfd(n.id, s.devnull, fd, cloexec=cloexec) is None:  # type: ignore[union-attr]
            return False
        s.set_console(th, fd, None)
    notify.write_mem(n.pid, n.args[arg], rec[:8])
    s.report.substituted_bytes += 8
    return s.reply(n, th, pos, ev.ret)


def _h_dup(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """dup, dup2, dup3, fcntl(F_DUPFD*): the tracee's own object at the recorded number."""
    sc = SC.get(ev.nr)
    assert sc is not None
    if sc.name == "fcntl" and (n.args[1] & 0xFFFFFFFF) not in (0, 1030):
        return _h_regular(s, n, th, ev, pos)
    _compare_inputs(s, n, th, ev, sc)
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    old = _s32(n.args[0])
    if sc.name in ("dup2", "dup3") and old == ev.ret:
        return s.reply(n, th, pos, ev.ret)
    src = None
    pfd = s._pidfd(th.host_tgid)
    if pfd is not None and old >= 0:
        try:
            src = notify.pidfd_getfd(pfd, old)
        except OSError:
            src = None
    if src is None:
        src = os.dup(s.devnull)
    try:
        cloexec = (sc.name == "dup3" and bool(n.args[2] & os.O_CLOEXEC)) or (
            sc.name == "fcntl" and (n.args[1] & 0xFFFFFFFF) == 1030)
        owned = s.is_owned(th, old)
        ok = s.addfd_reply(n, th, pos, src, ev.ret, cloexec)
        if ok:
            s.set_console(th, ev.ret, s.console.get(th.host_tgid, {}).get(old))
            if owned:
                s.owned.setdefault(th.host_tgid, set()).add(ev.ret)
        return ok
    finally:
        os.close(src)


def _h_close(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC.get(ev.nr)
    assert sc is not None
    _compare_inputs(s, n, th, ev, sc)
    fd = _s32(n.args[0])
    if ev.ret == 0:
        s.set_console(th, fd, None)
    if ev.ret == 0 and fd >= 0 and os.path.lexists(f"/proc/{th.host_tid}/fd/{fd}"):
        return s.cont(n, th, pos)  # really close it, so fd numbers stay as recorded
    return s.reply(n, th, pos, ev.ret)


def _h_close_range(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    if ev.ret == 0 and (n.args[2] & 0xFFFFFFFF) in (0, 4):
        return s.cont(n, th, pos)
    return s.reply(n, th, pos, ev.ret)


def _h_clone(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """clone, clone3, fork, vfork run natively; the child gets the recorded tid."""
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    if ev.ret > 0:
        s.sb.set_next_pid(ev.ret)  # type: ignore[union-attr]
        s.children.append(ev.ret)
    return s.cont(n, th, pos)


def _h_execve(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC.get(ev.nr)
    assert sc is not None
    if sc.name == "execve":
        rec = ev.payload(0)
        cur = notify.read_cstr(n.pid, n.args[0]) if n.args[0] else b""
        if rec is not None and cur != rec.rstrip(b"\0"):
            s._diverge("argument", f"execve of thread {th.tid}: the path differs", th, ev, n,
                       payload_diff(rec.rstrip(b"\0"), cur))
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    s.need_vdso.add(th.host_tgid)
    return s.cont(n, th, pos)


def _h_exit(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC.get(ev.nr)
    assert sc is not None
    _compare_inputs(s, n, th, ev, sc)
    whole = ev.nr == NR["exit_group"] or _nthreads(th.host_tgid) <= 1
    if whole:
        s.release_exits(th.host_tgid)  # its own children: the parent no longer waits
        if th.host_tgid != s.sb.pid and s.hold_exit(n, th):  # type: ignore[union-attr]
            s.deliver_signals(th, pos)
            return True
    return s.cont(n, th, pos)


def _pending(tid: int, sig: int) -> bool:
    """True when ``sig`` is pending for thread ``tid`` or its process (SigPnd/ShdPnd, proc(5))."""
    bit = 1 << (sig - 1)
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
                    return True
    except (OSError, ValueError):
        return False
    return False


def _sigchld_pending(tgid: int) -> bool:
    """True when SIGCHLD is pending for process ``tgid`` (or it is gone)."""
    if not os.path.exists(f"/proc/{tgid}"):
        return True
    return _pending(tgid, signal.SIGCHLD)


def _ppid(tgid: int) -> int:
    try:
        with open(f"/proc/{tgid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


def _nthreads(tgid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{tgid}/task"))
    except OSError:
        return 1


def _h_chdir(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    ok = _h_regular(s, n, th, ev, pos)
    if ok and ev.ret == 0:
        p = ev.payload(0)
        if p:
            path = p.rstrip(b"\0").decode(errors="surrogateescape")
            s.cwd[th.host_tgid] = os.path.normpath(os.path.join(s.cwd.get(th.host_tgid, "/"), path))
    return ok


def _h_ioctl(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    cmd = n.args[1] & 0xFFFFFFFF
    if (ev.args[1] ^ n.args[1]) & 0xFFFFFFFF or (ev.args[0] ^ n.args[0]) & 0xFFFFFFFF:
        s._diverge("argument", f"ioctl of thread {th.tid}: fd/request differ", th, ev, n)
    rec = ev.payload(2)
    if rec is not None and n.args[2] and ev.ret >= 0:
        kind = schema.IOCTL_BUFFERS.get(cmd)
        if kind is not None:
            cap = kind[1] if kind[0] == "out" else 0
        else:
            # _IOC_READ requests carry their size in bits 16-29 (include/uapi/asm-generic/ioctl.h).
            cap = (cmd >> 16) & 0x3FFF if (cmd >> 30) & 2 else 0
        if cap:
            if len(rec) > cap:
                _too_long(s, th, ev, SC[ev.nr].args[2], len(rec), cap)
            s.gone_check(n)
            data = rec[:cap]
            notify.write_mem(n.pid, n.args[2], data)
            s.report.substituted_bytes += len(data)
    return s.reply(n, th, pos, ev.ret)


def _h_unsupported_uring(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    if -4095 <= ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    s.report.refuse(ev.name, th.tid, ev.index, "unsupported syscall (io_uring)")
    raise _Stop(StepResult(Status.ERROR, f"replay does not support {ev.name} (io_uring), recorded at "
                           f"syscall #{ev.index}; the recording shows it succeeded"))


Handler = Callable[[ReplaySession, Notif, Thread, Any, int], bool]
HANDLERS: dict[int, Handler] = {}
for _n in ("open", "openat", "openat2", "creat"):
    HANDLERS[NR[_n]] = _h_open
for _n in ("pipe", "pipe2", "socketpair"):
    HANDLERS[NR[_n]] = _h_pipe
for _n in ("dup", "dup2", "dup3", "fcntl"):
    HANDLERS[NR[_n]] = _h_dup
for _n in CLONES:
    HANDLERS[_n] = _h_clone
for _n in EXECS:
    HANDLERS[_n] = _h_execve
for _n in EXITS:
    HANDLERS[_n] = _h_exit
for _n in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
    HANDLERS[NR[_n]] = _h_unsupported_uring
HANDLERS[NR["close"]] = _h_close
HANDLERS[NR["close_range"]] = _h_close_range
HANDLERS[NR["memfd_create"]] = _h_memfd
HANDLERS[NR["chdir"]] = _h_chdir
HANDLERS[NR["ioctl"]] = _h_ioctl
