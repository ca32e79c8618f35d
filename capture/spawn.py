"""Spawn mode's process tree: start the command, prepare every image it execs.

:class:`SpawnTree` forks the command's process, which waits on a pipe before
its execve so that the probes trace it from its first syscall. Before the
exec it turns ASLR off for itself (``personality(ADDR_NO_RANDOMIZE)``,
inherited by every descendant, as replay's launcher does), so capture and
replay lay out each program's memory the same way.

With ``trace_execs`` a tracer thread attaches to the child with
``PTRACE_SEIZE`` and the options TRACEEXEC|TRACEFORK|TRACEVFORK|TRACECLONE:
the whole tree is followed, and each task stops only at its fork/clone/exec
events (plus the kernel's one stop of a newly attached task). At each exec
stop -- the new image is loaded, none of its instructions ran -- the tracer
makes its vDSO time functions enter the kernel (:func:`dr.vdso.patch_vdso`,
through /proc/PID/mem), then continues it at once; signals are passed on
unchanged and group-stops are left to the job control that caused them
What the traced program can observe: ``TracerPid`` in /proc/PID/status is
dr. A task that stops for job control (SIGSTOP, SIGTSTP, ...) is let go
(detached, still stopped), so its parent or a debugger can then ptrace it as
it would untraced; images it execs later are not prepared (the summary counts
such tasks). A program's own PTRACE_TRACEME, or PTRACE_ATTACH/SEIZE of a task
of the tree, stops at a seccomp filter the command's process installs before
its execve, and the tracer lets go of the task to be traced first, so the call
works as untraced (:mod:`capture.yield_ptrace`, which says what else the
program can observe); a debugger from outside the tree still cannot attach.

All ptrace requests come from the tracer thread (the kernel ties a tracee to
the thread that attached it); that thread also reaps the tree, so the exit
status of the command is known from :attr:`SpawnTree.exit_status` once
:attr:`SpawnTree.command_exited` is set (:attr:`SpawnTree.exited`: the thread is done). Without ``trace_execs`` the thread only
waits for the command.

After the command exited, the rest of the tree is followed while it is busy:
until it made no syscall for :data:`OUTLIVE_IDLE` seconds (``activity()``,
a hook the session sets, counts what the probes recorded; ``traced()`` lists
the processes the probes still follow, which include the tree's tasks this
thread does not ptrace: CLONE_UNTRACED children, tasks let go at a stop), and at most
:data:`OUTLIVE_MAX` seconds, or with ``--duration`` until the capture's end
(a shell's last pipeline, a child finishing its
work, a parent reaping). A daemon the command started, or a child it left
blocked, would otherwise hold the capture open for ever. Then the tracer
thread ends; its exit detaches every task it still traces (the kernel's exit_ptrace:
no stop, no signal), so those tasks run on untraced, as they would without
dr; :attr:`SpawnTree.outlived` lists their processes.

Scheduling between a creator and its new task stays as it is untraced, where
the creator returns from fork/clone without a context switch while its new
task is still being woken: the new task's first stop is held until the
creator, continued from its fork/clone event stop, was scheduled again (its
``se.exec_start`` in /proc/TID/sched moved). A program that yields to a new
lower-priority thread asserts the creator ran first; continuing whichever
stop the tracer reaped first let the child win 3 times in 5. A new task is
held at most :data:`HOLD_TIMEOUT` seconds (its creator killed, or not
scheduled).

One thing tracing changes that the tracer undoes: the init of a pid
namespace that faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE with no handler) dies
of it untraced, but the kernel keeps a *traced* init unkillable, so the
signal passed on is dropped and the instruction faults again, for ever. Such
a task is detached at that stop, without the signal: it faults once more,
untraced, and dies as it would have.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Callable

from dr.capture import yield_ptrace
# The ptrace primitives (libc's ptrace, the requests and events both modules use, /proc
# status) are declared once, in the module that steps aside for the program's ptrace.
from dr.capture.yield_ptrace import (PTRACE_CONT, PTRACE_DETACH, PTRACE_EVENT_CLONE, PTRACE_EVENT_EXEC,
                                     PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_GETEVENTMSG,
                                     PTRACE_SEIZE, WALL, _libc, _ptrace, status_fields)
from dr.errors import TargetError

PTRACE_GETSIGINFO = 0x4202
PTRACE_SETOPTIONS = 0x4200
PTRACE_O_TRACEFORK = 0x02
PTRACE_O_TRACEVFORK = 0x04
PTRACE_O_TRACECLONE = 0x08
PTRACE_O_TRACEEXEC = 0x10
PTRACE_EVENT_STOP = 128
ADDR_NO_RANDOMIZE = 0x0040000
GROUP_STOPS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
#: How long to wait for the command's first exec stop (it execs right after "go").
FIRST_EXEC_TIMEOUT = 60.0
#: After the command exited, the rest of the tree is followed until it made no syscall for
#: this long (then it runs on untraced) ...
OUTLIVE_IDLE = 2.0
#: ... and at most this long (a busy daemon would otherwise hold the capture open).
OUTLIVE_MAX = 30.0
#: Seconds a new task waits for its creator to run on before it is continued anyway.
HOLD_TIMEOUT = 0.05
#: Faults that re-execute the faulting instruction when the signal is dropped.
REFAULTS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE})



class SpawnTree:
    """The command's process and, with ``trace_execs``, its prepared descendants.

    ``on_first_exec(pid)`` runs in the tracer thread at the command's exec
    stop (before any of its instructions) and returns the process facts;
    ``patch(pid)`` runs at every exec stop of the tree and returns the
    patched symbols. Errors of ``patch`` on later images are counted in
    :attr:`patch_errors`, never fatal: the program keeps running.
    """

    def __init__(self, path: str, argv: list[str], env: dict[str, str], *, trace_execs: bool,
                 no_aslr: bool = True, whole_tree: bool = True) -> None:
        self.path, self.argv, self.env = path, argv, env
        self.trace_execs = trace_execs
        self.no_aslr = no_aslr
        self.pid: int | None = None
        self.exit_status: int | None = None
        self.exited = threading.Event()           # the tracer thread is done
        self.command_exited = threading.Event()   # the command was reaped: exit_status is known
        self.images = 0            # exec stops handled (images prepared)
        self.patch_errors: list[str] = []
        self.released: list[int] = []   # tasks let go at a job-control stop (see _stopped)
        self.outlived: list[int] = []   # processes still running when the tree ended (class doc)
        self.faulted_inits: list[int] = []   # pid-namespace inits let go to die of a fault
        self._tasks: set[int] = set()   # traced tasks seen alive
        #: new task -> (its creator, the creator's se.exec_start when continued) (class doc)
        self._born: dict[int, tuple[int, str]] = {}
        self._held: dict[int, float] = {}   # new tasks held at their first stop -> since when
        self.patched: dict[str, int] = {}
        self._first = threading.Event()
        self._facts: dict | None = None
        self._first_error: str | None = None
        self._detach = False
        self._finish = False    # end the follow after the command's exit now (finish())
        self._thread: threading.Thread | None = None
        self._go = self._ready = -1
        # Only while the tree is ptraced (not --first-image-only): capture/yield_ptrace.py
        self._filter = yield_ptrace.Filter() if trace_execs and whole_tree else None
        self._deferred: list[tuple[int, int]] = []   # wait statuses reaped outside _loop
        # The hooks of the class doc, set by the session (attributes, not methods, so they can be).
        self.on_first_exec: Callable[[int], dict] = lambda pid: {}
        self.patch: Callable[[int], dict[str, int]] = lambda pid: {}
        self.activity: Callable[[], int] = lambda: 0   # grows while the tree makes syscalls
        self.traced: Callable[[], list[int]] = lambda: []   # processes the probes still follow
        #: the follow after the command's exit (class doc; follow())
        self.idle_limit, self.follow_limit = OUTLIVE_IDLE, OUTLIVE_MAX

    # -- the child

    def fork(self) -> int:
        """Fork the child; it stops before execve until :meth:`release`. Returns its pid."""
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        rd_r, rd_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # child: only async-signal-safe-ish work until execve
            try:
                os.close(go_w)
                os.close(rd_r)
                # The command starts as a shell would start it: Python ignores
                # SIGPIPE and SIGXFSZ (inherited across execve), dr handles
                # SIGINT/SIGTERM, and the signal mask must be empty.
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, ())
                if self.no_aslr:
                    cur = _libc.personality(0xFFFFFFFF)
                    if cur != -1:
                        _libc.personality(cur | ADDR_NO_RANDOMIZE)
                if self._filter is not None:   # dr steps aside for the program's ptrace
                    self._filter.install()
                os.write(rd_w, b"r")
                if os.read(go_r, 1) != b"g":
                    os._exit(126)
                os.execve(self.path, self.argv, self.env)
            except BaseException:
                pass
            os._exit(127)
        os.close(go_r)
        os.close(rd_w)
        self.pid = pid
        self._go, self._ready = go_w, rd_r
        return pid

    def release(self) -> dict | None:
        """Let the child exec; with ``trace_execs`` wait for its first exec stop.

        Returns the facts ``on_first_exec`` produced (None without
        ``trace_execs``). Raises TargetError when the command could not start.
        """
        try:
            if os.read(self._ready, 1) != b"r":
                raise TargetError("the command's process died before it could start")
        finally:
            os.close(self._ready)
            self._ready = -1
        self._thread = threading.Thread(target=self._run, name="dr-spawn-tracer", daemon=True)
        self._thread.start()
        if not self.trace_execs:
            return None
        if not self._first.wait(FIRST_EXEC_TIMEOUT):
            raise TargetError(f"the command did not reach its execve within {FIRST_EXEC_TIMEOUT:.0f} s")
        if self._first_error:
            raise TargetError(self._first_error)
        return self._facts

    def detach(self) -> None:
        """Stop preparing images: each tracee is let go at its next stop."""
        self._detach = True

    def follow(self, activity: Callable[[], int], traced: Callable[[], list[int]],
               duration: float | None) -> None:
        """Set how the rest of the tree is followed after the command exits (class doc):
        ``activity()`` grows while it makes syscalls, ``traced()`` lists the processes the
        probes still follow; with ``duration`` (asked for) it is followed until then."""
        self.activity, self.traced = activity, traced
        if duration is not None:
            self.idle_limit = self.follow_limit = float(duration)

    def finish(self) -> None:
        """End the follow of the rest of the tree (the command exited) at the next poll."""
        self._finish = True

    def kill(self) -> None:
        """SIGKILL the command (start failed); the tracer thread reaps it."""
        if self._go >= 0:
            os.close(self._go)
            self._go = -1
        if self.pid is not None and not self.exited.is_set():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
            if self._thread is None:
                try:
                    os.waitpid(self.pid, 0)
                except OSError:
                    pass
                self.exited.set()

    # -- the tracer thread

    def _say_go(self) -> None:
        os.write(self._go, b"g")
        os.close(self._go)
        self._go = -1

    def _run(self) -> None:
        root = self.pid
        assert root is not None
        try:
            if self.trace_execs:
                opts = (PTRACE_O_TRACEEXEC | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE
                        | yield_ptrace.PTRACE_O_TRACESECCOMP)
                if _ptrace(PTRACE_SEIZE, root, 0, opts) != 0:
                    err = ctypes.get_errno()
                    self._first_error = (f"cannot follow the command's execs (ptrace: {os.strerror(err)}); "
                                         "capture it with --first-image-only")
                    self._first.set()
                    os.kill(root, signal.SIGKILL)
            self._say_go()
            self._loop(root)
        except BaseException as e:   # never leave the session waiting
            if not self._first.is_set():
                self._first_error = f"spawn tracer failed: {e}"
                self._first.set()
        finally:
            self.command_exited.set()
            self.exited.set()

    def _loop(self, root: int) -> None:
        flags = WALL if self.trace_execs else 0
        self._tasks.add(root)
        ended: float | None = None    # when the command exited (class doc)
        busy_at, seen = 0.0, -1       # the rest of the tree's last sign of activity
        while True:
            poll = ended is not None or bool(self._held)
            try:
                pid, status = self._deferred.pop(0) if self._deferred else os.waitpid(-1 if self.trace_execs else root,
                                         flags | os.WNOHANG if poll else flags)
            except ChildProcessError:
                if ended is None or not self.trace_execs or not self._untraced_alive():
                    return
                pid = 0   # none ptraced, but the probes still follow some (CLONE_UNTRACED, released)
            except InterruptedError:
                continue
            if pid == 0:   # WNOHANG: nothing happened
                now = time.monotonic()
                self._release_held(now)
                if ended is not None:
                    act = self.activity()
                    if act != seen:
                        seen, busy_at = act, now
                    if (self._finish or now - busy_at >= self.idle_limit
                            or now - ended >= self.follow_limit):
                        self.outlived = sorted(set(_processes(self._tasks)) | set(self._untraced_alive()))
                        return   # the thread's exit detaches what it still traces
                time.sleep(0.0002 if self._held else 0.01)
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self._tasks.discard(pid)
                self._held.pop(pid, None)
                self._born.pop(pid, None)
                if pid == root:
                    ended = busy_at = time.monotonic()
                    self.exit_status = os.waitstatus_to_exitcode(status)
                    self.command_exited.set()   # its pid may be reused from now on
                    if not self._first.is_set():
                        self._first_error = (f"cannot execute {self.argv[0]} "
                                             f"(exit status {self.exit_status})")
                        self._first.set()
                    if not self.trace_execs:
                        return
                continue
            if not os.WIFSTOPPED(status):
                continue
            new = pid not in self._tasks
            self._tasks.add(pid)
            self._stopped(pid, status, new)

    def _untraced_alive(self) -> list[int]:
        """Processes of the tree the probes still follow and this thread does not ptrace."""
        return [p for p in self.traced() if p not in self._tasks and os.path.exists(f"/proc/{p}")]

    def _release_held(self, now: float) -> None:
        """Continue the new tasks whose creator ran on (class doc), or that waited too long."""
        for pid, since in list(self._held.items()):
            creator, start = self._born.get(pid, (0, ""))
            if now - since >= HOLD_TIMEOUT or (creator and _exec_start(creator) != start):
                del self._held[pid]
                self._born.pop(pid, None)
                _ptrace(PTRACE_DETACH if self._detach else PTRACE_CONT, pid, 0, 0)

    def _stopped(self, pid: int, status: int, new: bool = False) -> None:
        sig = os.WSTOPSIG(status)
        event = (status >> 16) & 0xFF
        inject = 0
        if event == PTRACE_EVENT_EXEC:
            self._exec_stop(pid)
        elif event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
            # The creator goes on first, then its new task (class doc).
            msg = ctypes.c_ulong(0)
            child = msg.value if _ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(msg)) == 0 else 0
            if child:
                self.born(child, pid)
            _ptrace(PTRACE_DETACH if self._detach else PTRACE_CONT, pid, 0, 0)
            return
        elif event == yield_ptrace.PTRACE_EVENT_SECCOMP:
            yield_ptrace.seccomp_stop(self, pid)   # the program wants to ptrace
            return
        elif event == PTRACE_EVENT_STOP:
            if sig in GROUP_STOPS:
                # A job-control stop (SIGSTOP, SIGTSTP...): let this task go, so that
                # it stays stopped as it would untraced and its parent or a debugger
                # can ptrace it (a program that stops a child to attach to it would
                # else get EPERM). Its later execs are no longer prepared: counted.
                self.released.append(pid)
                self._tasks.discard(pid)
                self._born.pop(pid, None)
                _ptrace(PTRACE_DETACH, pid, 0, 0)
                return
            if new:
                self._held[pid] = time.monotonic()   # until its creator ran on (class doc)
                self._release_held(self._held[pid])
                return
        elif event == 0:
            inject = sig      # a signal on its way to the tracee: deliver it unchanged
            if sig in REFAULTS and _kernel_sent(pid) and _unkillable_init(pid, sig):
                # (class doc) detached without the signal: it faults again, untraced, and dies
                self.faulted_inits.append(pid)
                self._tasks.discard(pid)
                _ptrace(PTRACE_DETACH, pid, 0, 0)
                return
        _ptrace(PTRACE_DETACH if self._detach else PTRACE_CONT, pid, 0, inject)

    # -- for capture/yield_ptrace.py (at a stop of the program's ptrace call)

    def tasks(self) -> set[int]:
        return self._tasks

    def resume(self, pid: int) -> None:
        _ptrace(PTRACE_DETACH if self._detach else PTRACE_CONT, pid, 0, 0)

    def let_go(self, pid: int, sig: int = 0) -> None:
        """Detach ``pid`` at its stop for good (counted in :attr:`released`)."""
        self.released.append(pid)
        self._tasks.discard(pid)
        self._born.pop(pid, None)
        self._held.pop(pid, None)
        _ptrace(PTRACE_DETACH, pid, 0, sig)

    def unhold(self, pid: int) -> bool:
        """Whether ``pid`` was held at its first stop (it is no longer)."""
        return self._held.pop(pid, None) is not None

    def born(self, child: int, creator: int) -> None:
        self._born[child] = (creator, _exec_start(creator))

    def defer(self, pid: int, status: int) -> None:
        """A wait status reaped outside the loop, for the loop to handle next."""
        self._deferred.append((pid, status))

    def exec_stop(self, pid: int) -> None:
        self._exec_stop(pid)

    def _exec_stop(self, pid: int) -> None:
        self.images += 1
        if not self._first.is_set():
            try:
                self._facts = self.on_first_exec(pid)
            except Exception as e:   # the snapshot failed: say so, kill the command
                self._first_error = str(getattr(e, "message", e))
                os.kill(pid, signal.SIGKILL)
            finally:
                self._first.set()
            return
        try:
            self.patched.update(self.patch(pid))
        except Exception as e:
            self.patch_errors.append(f"pid {pid}: {getattr(e, 'message', e)}")


def _exec_start(tid: int) -> str:
    """When ``tid`` was last put on a CPU (``se.exec_start``, as text); "" once it is gone."""
    try:
        with open(f"/proc/{tid}/sched", "rb") as f:
            head = f.read(256)
    except OSError:
        return ""
    at = head.find(b"se.exec_start")
    return head[at:head.find(b"\n", at)].decode() if at >= 0 else ""


def _kernel_sent(pid: int) -> bool:
    """Whether the signal of ``pid``'s signal-delivery-stop was raised by the kernel (a
    fault: si_code > 0), not sent by a process."""
    info = ctypes.create_string_buffer(128)
    if _ptrace(PTRACE_GETSIGINFO, pid, 0, ctypes.addressof(info)) != 0:
        return False
    return int.from_bytes(info.raw[8:12], "little", signed=True) > 0


def _unkillable_init(pid: int, sig: int) -> bool:
    """Whether ``pid`` is the init of a pid namespace below dr's and does not catch ``sig``."""
    st = status_fields(pid)
    nspid = st.get("NSpid", "").split()
    try:
        caught = int(st.get("SigCgt", "0"), 16) >> (sig - 1) & 1
    except ValueError:
        return False
    return len(nspid) > 1 and nspid[-1] == "1" and not caught


def _processes(tids: set[int]) -> list[int]:
    """The processes (tgids) of the tasks in ``tids`` that are still alive."""
    out = set()
    for tid in tids:
        tgid = status_fields(tid).get("Tgid", "").strip()
        if tgid.isdigit():
            out.add(int(tgid))
    return sorted(out)


__all__ = ["SpawnTree", "ADDR_NO_RANDOMIZE", "OUTLIVE_IDLE", "OUTLIVE_MAX"]
