"""The strict replay session: a step machine over seccomp notifications.

See :mod:`dr.replay.strict` for the policy.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections import deque
from time import monotonic as _monotonic
from typing import Any

from dr import schema
from dr.errors import ReplayError, TraceError
from dr.replay import notify
from dr.replay.divergence import ReplayReport, decode_call, decode_event
from dr.replay.notify import MemoryFault, Notif
from dr.replay.sandbox import Sandbox, SandboxSpec
from dr.replay.strict.answer import lost_counts
from dr.replay.strict.matching import Matching
from dr.replay.strict.asyncsig import AsyncDelivery
from dr.replay.strict.core import (CLONES, CONTINUE, EXITS, NO_EXIT, NR,
                                   NR_EXECVE, NR_EXIT, NR_EXIT_GROUP, NR_RESTART_SYSCALL, OWN_ORDER,
                                   PASSTHROUGH, RESTARTS, SOFT, VDSO_NAMES, soft_key, Gone, GoneNotif,
                                   ReplayOptions, Status, StepResult, Stop, Thread, VSYSCALL_PAGE)
from dr.replay.strict.files import FileModel
from dr.replay.strict.handlers import handler_for
from dr.replay.strict.procfs import ns_ids, ppid, which_in_root
from dr.replay.strict.rights import drop_held
from dr.replay.strict.stall import Computing
from dr.replay.strict.script import load_script, snaplen_remedy

__all__ = ["ReplaySession"]


class ReplaySession(Matching):
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
        self.rekey: dict[int, tuple[Thread, int]] = {}  # host tgid -> (thread exec'ing, its old host tid)
        self.forked: dict[int, int] = {}
        self.exe: dict[int, str] = {}    # host tgid -> path of its executable (for /proc/self/exe)
        self.first_exe = ""  # recorded child tid -> host tgid of the process that cloned it
        self.vforked: set[int] = set()   # recorded tids of vfork children that have not exec'd yet
        self.parked: dict[int, Notif] = {}  # host tid -> call never answered (the thread dies in it)
        self.started = False              # the tracee's first execve went through
        self.need_vdso: set[int] = set()  # host tgids whose next notification patches the vDSO
        self.pidfds: dict[int, int] = {}
        self.cwd: dict[int, str] = {}     # host tgid -> recorded cwd
        self.dirpaths: dict[tuple[int, int], str] = {}  # (host tgid, fd) -> path of an opened directory
        self.last_open_path = ""
        self.last_open_native = False   # open_source handed out a real file whose I/O runs natively
        self.devnull = -1
        self.rootfd = -1
        self.done: StepResult | None = None
        self.main_exited = False
        self.warned_mmsg = False
        self.console: dict[int, dict[int, int]] = {}   # host tgid -> {fd: 1|2} of the replay's stdout/stderr
        self.pidfd_target: dict[tuple[int, int], int] = {}   # (host tgid, pidfd) -> its process's host tgid
        self.held_exits: dict[int, list[tuple[Notif, int]]] = {}  # parent host tgid -> exits held
        self.held_fds: deque = deque()   # duplicates of owned fds in flight over SCM_RIGHTS (rights.py)
        self.owned: dict[int, set[int]] = {}  # host tgid -> fds of files this run created (memfd, native I/O)
        self.files = FileModel(self.script.files, self.script.blobs)   # the recording's view of files
        self.children: deque = deque()   # recorded child tids of replayed clones, not yet seen
        self._poll: Any = None
        self._ready: list[tuple[int, int]] = []   # what poll() returns for "one notification"
        self._pid_unreg = False
        self.last_progress = time.monotonic()
        self.asig = AsyncDelivery(self)
        self.computing = Computing()
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
            self.report.not_compared.append(f"the capture stopped before the command ended ({stop}); "
                                            "replay stops where the recording ends")
        elif self.script.truncated:
            self.report.not_compared.append("the trace was cut short; replay stops where it ends")
        # Payloads cut at snaplen are counted as loss cause TRUNCATED; the bytes they
        # miss are counted where they are compared (report.uncompared_bytes).
        lost = lost_counts(self.script.losses)
        if lost:
            self.report.not_compared.append(f"the capture lost {lost}; what they did was not compared")

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
            if first.nr == NR_EXECVE:
                p = first.payload(0)
                if p:
                    exe = p.rstrip(b"\0").decode(errors="surrogateescape")
        if self.opts.command and "/" not in argv[0]:
            exe = which_in_root(argv[0], self.opts.rootfs)
        cwd = meta.get("cwd")
        expose: tuple[str, ...] = ()
        if exe and not exe.startswith("/") and isinstance(cwd, str) and cwd.startswith("/"):
            # A command started as ./prog: the sandbox exposes the executable by its
            # absolute path (its directory may be private there, /tmp), and the tracee
            # execs it as recorded, from the recorded working directory: a script's
            # interpreter then opens the path the recording shows ("./run.sh").
            expose = (os.path.normpath(os.path.join(cwd, exe)),)
        self.first_exe = os.path.normpath(os.path.join(str(meta.get("cwd") or "/"), exe or argv[0]))
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
            stdio="null", passthrough=PASSTHROUGH, memory_limit=self.opts.memory_limit, expose=expose)

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
        drop_held(self)
        self.files.close()
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
        except Gone:
            return CONTINUE  # the notification vanished: the kernel re-issues or the task died
        except Stop as st:
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
                return CONTINUE
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
        elif self.main_exited and self.gpos >= len(self.consumed):
            # The first tracee ended before the rest of the recording was replayed, and now all
            # of it is: tasks still here were parked where the recording shows them killed by a
            # death replay does not reproduce (their pid namespace's init), or are daemons.
            return self._finish(self._ended())
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
            return CONTINUE
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
            return CONTINUE
        if lmask & (select.POLLHUP | select.POLLERR):
            return self._finish(self._ended())
        return CONTINUE

    def _finish(self, res: StepResult) -> StepResult:
        oom = self.sb.oom_message() if self.sb is not None else ""
        if oom:  # whatever else went wrong, the memory limit is why: one line, an error
            res = StepResult(Status.ERROR, oom)
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
        out = sorted(self.script.outlived)
        if out and not self.script.truncated and not any("outlived" in x for x in r.not_compared):
            procs = sorted({self.script.tgid_of.get(t, t) for t in out})
            r.not_compared.append(f"process(es) {', '.join(map(str, procs[:5]))} outlived the recorded "
                                  "command and were still running when the capture ended: what they did "
                                  "after was not recorded (capture with --duration SECONDS to follow "
                                  "them longer)")
        if r.uncompared_bytes and not any("snaplen" in x for x in r.not_compared):
            r.not_compared.append(f"{r.uncompared_bytes} bytes the program wrote were cut at the "
                                  f"capture's snaplen and not compared; "
                                  f"{snaplen_remedy(self.script.all_events, self.script.meta.get('snaplen'))}")
        if res.status is Status.EXITED:
            r.verdict = "diverged" if r.divergences else ("incomplete" if r.not_compared else "faithful")
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
        killed = self._killed_tails()
        left = [i for i in range(self.gpos, len(self.consumed)) if not self.consumed[i] and not (
            evs[i].flags & NO_EXIT and evs[i].nr not in EXITS) and i not in killed]
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
        if self._cut_short_end():   # parked threads wait for deaths the cut trace never shows
            raise Stop(StepResult(Status.EXITED, "reached the end of a cut-short trace"))
        if ev_pos >= len(self.script.events):
            return
        ev = self.script.events[ev_pos]
        if self.computing.still_working(self, ev_pos, ev):
            return   # computing between two calls, as long as it did at capture
        held = ", ".join(f"{self.script.events[p].name} of thread {t.tid}" for p, (_n, t) in
                         sorted(self.held.items())) or "none"
        raise Stop(StepResult(Status.DIVERGED, divergence=self._div(
            "stalled", f"no progress for {self.opts.stall_timeout:g} s: waiting for thread {ev.tid} "
            f"to call {ev.name} (held: {held})", ev.tid, ev.index)))

    def _cut_short_end(self) -> bool:
        """Whether every event of a cut-short trace was replayed: a thread past its last
        recorded call is then where the recording ends, not waiting for a recorded death
        (in a cut trace every live thread is "unended")."""
        return self.script.truncated and self.gpos >= len(self.script.events)

    # -------------------------------------------------------------- threads
    def _thread(self, n: Notif) -> Thread:
        th = self.threads.get(n.pid)
        if th is not None and not th.dead:
            return th
        ids = ns_ids(n.pid)
        if ids is None:
            raise GoneNotif()
        tgid, nstid = ids
        live = {t.tid for t in self.threads.values() if not t.dead}
        if not self.started:
            rec = self.main_tid
        elif nstid in self.script.tids and nstid not in live:
            rec = nstid
        elif self.children and (rec := self._by_creator(n.pid, tgid, live)) is not None:
            pass
        elif self.children and self.children[0] not in live:
            # The recorded tid could not be given (taken in the sandbox): recorded
            # clone children are matched in creation order.
            rec = self.children.popleft()
        else:
            raise Stop(StepResult(Status.DIVERGED, divergence=self._div(
                "syscall", f"a task the recording does not know (tid {nstid} in the sandbox) made "
                f"syscall {schema.name_of(n.nr)}", nstid, None,
                actual=decode_call(n.nr, n.args))))
        th = Thread(n.pid, tgid, rec, self.script.per_tid.get(rec, deque()),
                    rec_tgid=self.script.tgid_of.get(rec, rec))
        self.threads[n.pid] = th
        # A new process inherits its parent's state as it was at the clone (the
        # parent may be gone by now: an orphan's parent is init).
        parent = self.forked.pop(rec, None)
        parent = parent if parent is not None else ppid(tgid)
        if tgid not in self.console:
            self.console[tgid] = dict(self.console.get(parent, {}) if self.console else {1: 1, 2: 2})
            self.owned[tgid] = set(self.owned.get(parent, ()))
        if rec in self.children:
            self.children.remove(rec)
        if tgid not in self.cwd:
            self.cwd[tgid] = self.cwd.get(parent) or str(self.script.meta.get("cwd") or "/")
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
        if self.rekey and n.pid in self.rekey:
            new, old_tid = self.rekey[n.pid]
            if os.path.exists(f"/proc/{n.pid}/task/{old_tid}"):
                self.parked[n.pid] = n   # the old leader, dying in de_thread
                return
            del self.rekey[n.pid]
            self.threads.pop(old_tid, None)
            new.host_tid = n.pid
            self.threads[n.pid] = new
        th = self.threads.get(n.pid)
        if th is None or th.dead:
            try:
                th = self._thread(n)
            except GoneNotif:
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
            self.exe[th.host_tgid] = self.first_exe
            if self.script.events[0].nr == NR_EXECVE and th.queue and th.queue[0] == 0:
                th.queue.popleft()
                self._consume(0, th)
        if self.need_vdso and th.host_tgid in self.need_vdso and n.pid == th.host_tgid:
            # Only the leader patches: after an exec it is the only thread; a
            # notification from another thread comes from the old image, dying.
            self.need_vdso.discard(th.host_tgid)
            if self.vdso_names:
                from dr.vdso import patch_vdso
                patch_vdso(th.host_tgid, self.vdso_names)
        if n.arch != notify.AUDIT_ARCH_X86_64:
            self._on_compat(n, th)
            return
        if n.ip >> 12 == VSYSCALL_PAGE:
            return self._vsyscall(n, th)
        if th.native_clone is not None and n.nr in CLONES and self._restarted_clone(n, th):
            return
        if (n.nr == NR_RESTART_SYSCALL or th.queue and self.nrs[th.queue[0]] == NR_RESTART_SYSCALL) and \
                self._native_restart(n, th):
            return
        if not th.queue:
            if n.nr == NR_EXIT and self._early_exit(n, th):
                return
            if th.tid in self.script.outlived and not self.script.truncated:
                return self._outlived(n, th)
            if th.tid in self.script.unended and not self._cut_short_end():
                return self._park(n, th)
            if self.script.truncated:
                raise Stop(StepResult(Status.EXITED, "reached the end of a cut-short trace"))
            raise Stop(StepResult(Status.DIVERGED, divergence=self._div(
                "extra", f"thread {th.tid} called {schema.name_of(n.nr)} after its recorded syscalls "
                "ended", th.tid, None, actual=decode_call(n.nr, n.args), th=th)))
        if self.script.events[th.queue[0]].ret in RESTARTS:
            self._skip_restarts(th)
        pos = th.queue[0]
        ev = self.script.events[pos]
        if ev.nr == NR_RESTART_SYSCALL and th.restart_of == n.nr:
            n = n._replace(nr=ev.nr)  # the interrupted call itself, answered as its restart
        if (n.nr in SOFT or ev.nr in SOFT) and soft_key(n.nr, n.args) != soft_key(ev.nr, ev.args):
            soft = self._soft_match(n, th)
            if soft is None:
                return
            pos, ev = soft
        if n.nr != ev.nr and self._same_exit(n, th, pos, ev):
            return self._answer(n, th, pos, ev)
        if n.nr != ev.nr:
            self.gone_check(n)  # a task killed meanwhile made no call replay must match
            raise Stop(StepResult(Status.DIVERGED, divergence=self._div(
                "syscall", f"thread {th.tid} called {schema.name_of(n.nr)} where the recording has "
                f"{ev.name}", th.tid, ev.index, expected=decode_event(ev),
                actual=self._decode_actual(n, th), th=th)))
        if len(th.queue) == 1 and th.tid in self.script.unended and n.nr not in EXITS and (
                ev.flags & NO_EXIT or ev.ret in RESTARTS):
            self._consume(th.queue.popleft(), th)
            self.signal_process(th, pos)   # its signals: the parked thread takes none
            return self._park(n, th)
        # A call that delivers recorded signals waits for its global turn even when its
        # thread alone orders it: its signals meet the other threads as recorded (their
        # handlers installed, their masks set), not earlier.
        if pos == self.gpos or (n.nr in OWN_ORDER and pos not in self.script.signals):
            self._answer(n, th, pos, ev)
        else:
            self.held[pos] = (n, th)

    def _consume(self, pos: int, th: Thread) -> None:
        consumed = self.consumed
        consumed[pos] = 1
        th.last = pos
        nr = self.nrs[pos]
        if nr in SOFT:
            ev = self.script.events[pos]
            th.last_soft[soft_key(nr, ev.args)] = ev
        g = self.gpos
        if g == pos:
            end = len(consumed)
            g += 1
            while g < end and consumed[g]:
                g += 1
            self.gpos = g
        self.last_progress = _monotonic()

    def _answer(self, n: Notif, th: Thread, pos: int, ev: Any) -> None:
        if pos in self.script.async_seq:
            self.asig.arm(th, pos)   # signals to deliver at recorded states after this call
        try:
            handler = handler_for(ev.nr)
            ok = handler(self, n, th, ev, pos)
            if self.asig.armed:
                self.asig.run(th)
        except Gone:
            ok = False
        except MemoryFault as e:
            if not self.sb.listener.id_valid(n.id):  # type: ignore[union-attr]
                return
            self.diverge("payload", f"{ev.name} of thread {th.tid}: {e.message}", th, ev, n)
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
                if n.nr == NR_EXIT_GROUP:
                    for t in self.threads.values():
                        if t.host_tgid == th.host_tgid:
                            t.dead = True
                th.dead = True
