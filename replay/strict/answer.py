"""How the strict session answers a notification and reports a divergence:
the helpers handlers call (reply, continue natively, add an fd, deliver the
recorded signals, hold a child's exit) and the divergence builders."""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import stat as stat_mod
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from dr.errors import ReplayError
from dr.replay import notify
from dr.replay.divergence import Divergence, decode_call, decode_event
from dr.replay.notify import MemoryFault, Notif
from dr.replay.strict.core import (AT_FDCWD, NO_DELIVER, PASSTHROUGH, SC, Gone, Status, StepResult, Stop, Thread,
                                   s32)
from dr.replay.strict.races import race_hint
from dr.replay.strict.procfs import (child_by_nspid, default_action, is_virtual, mem_task, pending, ppid,
                                     sigchld_pending)
from dr.replay.strict.substitute import capacity
from dr.schema import Kind, Rule

if TYPE_CHECKING:
    from dr.replay.divergence import ReplayReport
    from dr.replay.sandbox import Sandbox
    from dr.replay.strict.core import ReplayOptions
    from dr.replay.strict.files import FileModel
    from dr.replay.strict.script import Script

# Kernel devices whose behaviour is the same on every host and owes nothing to the
# recording: the tracee gets the real device (its I/O native), so MAP_SHARED of
# /dev/zero is anonymous shared memory as at capture, not a stand-in that cannot map.
KERNEL_DEVICES = frozenset({"/dev/zero", "/dev/null", "/dev/full"})
_PROC_EXE = re.compile(r"/proc/(self|thread-self|\d+)(/task/\d+)?/exe")
#: Divergences a data race between threads can cause (a different call, arguments or bytes).
RACY = frozenset({"syscall", "argument", "payload"})
#: Divergences a signal delivered earlier than recorded can cause (also a different exit).
EARLY_SIGNAL_VISIBLE = RACY | {"exit", "ended", "extra"}
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_OPEN_HOW = struct.Struct("<QQQ")

#: Signals whose default action ends the process (signal(7): Term and Core).
FATAL_BY_DEFAULT = frozenset({
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGILL, signal.SIGTRAP, signal.SIGABRT,
    signal.SIGBUS, signal.SIGFPE, signal.SIGKILL, signal.SIGUSR1, signal.SIGSEGV, signal.SIGUSR2,
    signal.SIGPIPE, signal.SIGALRM, signal.SIGTERM, signal.SIGSTKFLT, signal.SIGXCPU,
    signal.SIGXFSZ, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR, signal.SIGSYS,
    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1)})


class Answers:
    """Mixed into :class:`~dr.replay.strict.session.ReplaySession`: its state
    (``sb``, ``script``, ``report``, ``threads``, ...) is the session's."""

    # The session's state these helpers use, declared for the type checker
    # (ReplaySession.__init__ sets each; see its comments for what they hold).
    opts: ReplayOptions
    script: Script
    report: ReplayReport
    sb: Sandbox | None
    threads: dict[int, Thread]
    rekey: dict[int, tuple[Thread, int]]
    exe: dict[int, str]
    vforked: set[int]
    cwd: dict[int, str]
    dirpaths: dict[tuple[int, int], str]
    files: FileModel
    devnull: int
    rootfd: int
    console: dict[int, dict[int, int]]
    pidfd_target: dict[tuple[int, int], int]
    held_exits: dict[int, list[tuple[Notif, int]]]
    owned: dict[int, set[int]]
    out: BinaryIO
    err: BinaryIO

    if TYPE_CHECKING:   # the session's method; no stub at run time to shadow it
        def _consume(self, pos: int, th: Thread) -> None: ...

    # -------------------------------------------------------------- divergences
    def _div(self, kind: str, message: str, tid: int | None, index: int | None, *,
             expected: str | None = None, actual: str | None = None, th: Thread | None = None,
             diff: list[str] | None = None) -> Divergence:
        hist: list[str] = []
        if th is None and tid is not None:
            th = next((t for t in self.threads.values() if t.tid == tid), None)
        if th is not None:
            hist = self._history(th)
        race = None
        if kind in RACY and tid is not None and index is not None:
            start = self.script.pos_in_all[th.last] if th is not None and th.last >= 0 else -1
            race = race_hint(self.script.all_events, start, tid, index)
        early = th.early_signal if th is not None and kind in EARLY_SIGNAL_VISIBLE else ""
        return Divergence(kind, message, tid, index, expected, actual, hist, diff or [], race,
                          early + "; this divergence likely comes from there" if early else None,
                          lost_line(self.script.losses))

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

    def diverge(self, kind: str, message: str, th: Thread, ev: Any, n: Notif,
                 diff: list[str] | None = None, actual: str | None = None) -> None:
        # What we read may be another task's memory if this one died meanwhile.
        self.gone_check(n)
        d = self._div(kind, message, th.tid, ev.index, expected=decode_event(ev),
                      actual=actual or self._decode_actual(n, th), th=th, diff=diff)
        if self.opts.keep_going and kind in ("payload", "argument"):
            self.report.divergences.append(d)
            return
        raise Stop(StepResult(Status.DIVERGED, d.message, d))

    def _decode_actual(self, n: Notif, th: Thread) -> str:
        sc = SC.get(n.nr)
        pay: dict[int, bytes] = {}
        if sc is not None:
            for i, a in enumerate(sc.args[:6]):
                try:
                    if a.kind in (Kind.PATH, Kind.STR) and n.args[i]:
                        pay[i] = notify.read_cstr(n.pid, n.args[i], 256)
                    elif a.kind == Kind.BUF_IN and a.rule in (Rule.RET, Rule.ARG) and n.args[i]:
                        cnt = capacity(sc, i, n.args) or 0
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
            raise Gone()

    def deliver_signals(self, th: Thread, pos: int) -> None:
        """Deliver the signals the recording shows arriving before the call at ``pos``."""
        for tg, sig in self.script.proc_signals.get(pos, ()):
            host = next((t.host_tgid for t in self.threads.values() if t.rec_tgid == tg and not t.dead), None)
            if host is not None:
                try:
                    os.kill(host, sig)   # process-wide: the kernel picks the thread (script.proc_signals)
                    self.report.signals_delivered += 1
                except OSError:
                    pass
        sigs = self.script.signals.get(pos)
        if not sigs:
            return
        for sig in sigs:
            if sig in NO_DELIVER:
                continue
            if sig == signal.SIGCHLD:
                self.release_exits(th.host_tgid)
            wait_nr = self.script.in_wait.get((pos, sig))
            if wait_nr is not None and sig != signal.SIGCHLD:
                self._send_in_wait(th, pos, sig, wait_nr)
                continue
            if pending(th.host_tid, sig):
                # Already queued by the kernel (a released child's SIGCHLD): a
                # thread-directed copy would not merge with it and run the handler twice.
                continue
            if (sig in FATAL_BY_DEFAULT and self.script.deaths.get(th.rec_tgid) != sig
                    and self._still_default(th.host_tid, sig)):
                # Recorded, unhandled, and the process lived on: the kernel did not let it act
                # (a pid namespace's init is immune to signals it does not handle, sent from
                # inside its namespace). Delivered here it would kill a process that lived.
                continue
            try:
                info = self.script.siginfo.get((pos, sig))
                if info is not None:
                    notify.tgsigqueueinfo(th.host_tgid, th.host_tid, sig, info)
                else:
                    notify.tgkill(th.host_tgid, th.host_tid, sig)
                self.report.signals_delivered += 1
            except OSError:
                pass

    def signal_process(self, th: Thread, pos: int) -> None:
        """Signals recorded at a call the thread never returns from (killed in it): it
        waits in that notification for ever, so a signal sent to it would never run its
        handler. Sent process-wide, the kernel gives it to a thread that takes it (one
        that does not block it, maybe made later), as at capture the handler ran."""
        for sig in self.script.signals.get(pos, ()):
            if sig in NO_DELIVER or sig in (signal.SIGCHLD, signal.SIGKILL) or self._still_default(th.host_tid, sig):
                continue
            try:
                os.kill(th.host_tgid, sig)
                self.report.signals_delivered += 1
            except OSError:
                pass

    @staticmethod
    def _still_default(tid: int, sig: int) -> bool:
        """Whether ``sig`` still has its default action in ``tid``'s process after a short
        wait: a call ordered by its own thread (a clock_nanosleep) can be answered before
        another thread's native sigaction that came first in the recording installs the
        handler (sigprocmask_ensure_delivery); 50 ms bounds the wait where none comes."""
        end = time.monotonic() + 0.05
        while default_action(tid, sig):
            if time.monotonic() >= end:
                return True
            time.sleep(0.002)
        return False

    def _send_in_wait(self, th: Thread, pos: int, sig: int, wait_nr: int) -> None:
        """A signal recorded interrupting a futex wait the thread makes natively after the
        call at ``pos``: sent once the thread sleeps in that wait (/proc/TID/syscall), so
        the user code between the call and the wait runs first, as recorded (sent with
        the answer, the handler ran before it). Sent anyway when the thread makes another
        call first, leaves, or the stall timeout passes."""
        info = self.script.siginfo.get((pos, sig))
        tgid, tid, limit = th.host_tgid, th.host_tid, self.opts.stall_timeout

        def word() -> str | None:
            try:
                with open(f"/proc/{tid}/syscall") as f:
                    return f.read().split(" ", 1)[0]
            except OSError:
                return None   # the thread is gone

        first = word()   # still in the call at pos, about to be answered

        def watch() -> None:
            end = time.monotonic() + limit
            left = False
            while time.monotonic() < end:
                w = word()
                if w is None:
                    return
                left = left or w != first
                if left and w.isdigit() and (int(w) == wait_nr or int(w) not in PASSTHROUGH):
                    break
                time.sleep(0.0002)
            try:
                if info is not None:
                    notify.tgsigqueueinfo(tgid, tid, sig, info)
                else:
                    notify.tgkill(tgid, tid, sig)
                self.report.signals_delivered += 1
            except OSError:
                pass

        threading.Thread(target=watch, name="dr-signal-in-wait", daemon=True).start()

    def hold_exit(self, n: Notif, th: Thread) -> bool:
        """Hold a child process's exit when its parent handles SIGCHLD (the recording
        shows deliveries), until the parent's next recorded delivery point or its end.

        The kernel sends SIGCHLD when the child really dies; released at the
        parent's recorded delivery point, the signal is pending there (the parent
        waits in a killable notification) and its handler runs where it ran. Let
        go at any other moment, it would interrupt a notification the supervisor
        has not received yet: the call fails with EINTR (no SA_RESTART) where it
        succeeded natively. A vfork child is never held (its parent waits for it).
        """
        parent = ppid(th.host_tgid)
        pt = next((t for t in self.threads.values() if t.host_tgid == parent), None)
        if pt is None or th.rec_tgid in self.vforked:
            return False
        if not self.script.sigchld.get(pt.rec_tgid):
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
                    select.select([pfd], [], [], min(2.0, self.opts.stall_timeout))
                    os.close(pfd)
            if held:
                # The pidfd wakes us just before the kernel queues SIGCHLD
                # (kernel/signal.c do_notify_parent): wait until it is pending,
                # or a signal we send now would be a second one.
                deadline = time.monotonic() + 0.2
                while not sigchld_pending(k) and time.monotonic() < deadline:
                    time.sleep(0.0005)

    def kill_process(self, rec_tgid: int, sig: int) -> None:
        """End process ``rec_tgid`` (recorded tgid) with ``sig`` for real, as the
        recording shows it ended: its calls still in flight are consumed (they
        never returned there either) and its threads are gone."""
        victims = [t for t in self.threads.values() if t.rec_tgid == rec_tgid and not t.dead]
        if not victims:
            return
        try:
            os.kill(victims[0].host_tgid, sig)
        except OSError:
            return
        for t in victims:
            while t.queue:
                self._consume(t.queue.popleft(), t)
            t.dead = True
        self.report.notes.append(f"process {rec_tgid} was killed by signal {sig} where the recording shows it")

    def exec_from_thread(self, th: Thread) -> None:
        """A thread other than the leader exec'd (de_thread): the kernel killed the
        other threads of its process and gave it the leader's tid. Their calls in
        flight never return (consumed, as recorded); its notifications now come
        from the leader's host tid."""
        for t in list(self.threads.values()):
            if t.host_tgid == th.host_tgid and t is not th and not t.dead:
                while t.queue:
                    self._consume(t.queue.popleft(), t)
                t.dead = True
        # The exec completes once the kernel killed the others: until the thread's
        # old tid is gone, a notification from the leader's tid is the old leader's.
        self.rekey[th.host_tgid] = (th, th.host_tid)

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
        m = self.console.setdefault(th.fdt, {})
        if which is None:
            m.pop(fd, None)
        else:
            m[fd] = which
        own = self.owned.get(th.host_tgid)
        if own:
            own.discard(fd)

    def is_owned(self, th: Thread, fd: int) -> bool:
        own = self.owned.get(th.host_tgid)
        return own is not None and fd in own

    def show(self, fd: int, data: bytes) -> None:
        if not self.opts.show_output or fd not in (1, 2) or not data:
            return
        stream = self.out if fd == 1 else self.err
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):
            pass

    def _mem_file(self, th: Thread, p: str, flags: int) -> int | None:
        """/proc/PID/mem of a process this replay runs (the program's own, a child's): the
        real file of that replayed process, its I/O native (open_ marks the fd owned), so a
        write through it changes that memory as it did at capture. The program could open
        it itself in the sandbox; any other process's (the host's) is never opened."""
        def host_of(tid: int) -> int | None:
            t = next((t for t in self.threads.values() if t.tid == tid and not t.dead), None)
            if t is not None:
                return t.host_tid
            # A child forked but not yet seen (its first call still to come): found among
            # the children of the replayed tasks by its pid in the sandbox's namespace.
            return child_by_nspid(((t.host_tgid, t.host_tid) for t in self.threads.values()
                                   if not t.dead), tid)
        host = mem_task(p, (th.host_tgid, th.host_tid), host_of)
        if host is None:
            return None
        try:
            return os.open(f"/proc/{host}/mem", (flags & 0o3) | os.O_CLOEXEC)
        except OSError:
            return None

    def open_source(self, th: Thread, dirfd: int, path: bytes, flags: int) -> int:
        """The supervisor-side object behind a recorded open: a real read-only file of
        the sandbox root when it exists there, else an empty memfd. Caller closes it."""
        p = path.decode(errors="surrogateescape")
        if not p.startswith("/"):
            if s32(dirfd) != AT_FDCWD:
                base = self.dirpaths.get((th.host_tgid, s32(dirfd)))
                p = os.path.join(base, p) if base else ""
            else:
                p = os.path.join(self.cwd.get(th.host_tgid, "/"), p)
        p = os.path.normpath(p) if p else p
        self.last_open_native = False
        mem = self._mem_file(th, p, flags) if p.startswith("/proc/") else None
        if mem is not None:
            self.last_open_path = p
            self.last_open_native = True
            return mem
        if p in KERNEL_DEVICES:
            self.last_open_path = p
            self.last_open_native = True
            return os.open(p, min(flags & 0o3, os.O_RDWR) | os.O_CLOEXEC | os.O_NOCTTY)
        if p and _PROC_EXE.fullmatch(p) and self.exe.get(th.host_tgid):
            # The program opening its own executable (fexecve, checksums): the file
            # it was started from, inside the sandbox root.
            p = self.exe[th.host_tgid]
        self.last_open_path = p
        if p and not is_virtual(p):
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
                if stat_mod.S_ISDIR(mode) and not is_virtual(real):
                    return fd
                if stat_mod.S_ISREG(mode) and not is_virtual(real):
                    # Only the recording's bytes: see dr.replay.strict.files.
                    return self.files.vet(p, fd, flags)
                os.close(fd)
            elif p in self.files.records:
                return self.files.vet(p, -1, flags)
        if flags & 0o3:  # written to: a memfd, so mmap of it works as on a file
            return os.memfd_create("dr-replay", os.MFD_CLOEXEC)
        return os.dup(self.devnull)


def lost_counts(losses: dict[str, int]) -> str | None:
    """"N events or payloads (CAUSE n, ...)" for what the capture lost, or None. Payloads
    cut at the snaplen (TRUNCATED) are counted where they are compared, not here."""
    lost = {k: v for k, v in losses.items() if k != "TRUNCATED" and v}
    if not lost:
        return None
    causes = ", ".join(f"{k} {v:,}" for k, v in sorted(lost.items()))
    return f"{sum(lost.values()):,} events or payloads ({causes})"


def lost_line(losses: dict[str, int]) -> str | None:
    """The line a divergence carries when the capture lost events: what those events did is
    not in the recording, so replay may depart from it for that reason alone."""
    counts = lost_counts(losses)
    if counts is None:
        return None
    return (f"the capture lost {counts}: what they did is missing from the recording, so this "
            "divergence may come from them; capture again (dr capture's summary says why they "
            "were lost)")
