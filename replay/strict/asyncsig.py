"""Asynchronous signals delivered at the recorded point, without hardware counters.

Capture records where a signal interrupted its thread between syscalls (the
``signal_regs`` record: struct pt_regs at ``signal:signal_deliver``, ``orig_ax``
-1). Strict replay answers the thread's previous call, then lets the thread
run natively until it is in that same user state again, and delivers there:

- the supervisor PTRACE_SEIZEs the thread while it waits in the notification it
  answers (seccomp notifications keep working under ptrace) and PTRACE_INTERRUPTs
  it, so it stops as that call returns, before any user instruction;
- an x86 hardware execution breakpoint (debug register 0, per thread, so the
  other threads running the same code are not stopped) is put at the recorded
  ``ip``; on each hit the general registers are compared with the recorded
  ones (``flags`` without RF/TF, which the debug exception itself sets);
- at the hit whose registers match, the signal is injected at that very stop
  (PTRACE_SETSIGINFO, then PTRACE_CONT/DETACH with the signal): its handler
  runs where it ran when recorded. Several signals recorded before the
  thread's next notified call are reached one after the other.

Without branch counters the breakpoint is hit once per pass over ``ip`` before
the recorded state (one ptrace stop each, some microseconds), so the run is
bounded by a budget of hits (:data:`HIT_BUDGET`) and the session's
``--stall-timeout``. When the state is not reached -- the thread makes its next
notified syscall first, blocks, ends, or the budget runs out -- or when it is
ambiguous (the registers at ``ip`` repeated across passes, so they do not
identify one pass), replay says so at that signal (a note, and the thread's
later divergence names it), and delivers it where the thread is then.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import struct
import time
from typing import Any

from dr.replay import notify
from dr.replay.strict.core import PASSTHROUGH, Thread
from dr.schema.layout import SIGNAL_REGS

__all__ = ["AsyncDelivery", "HIT_BUDGET"]

#: Most breakpoint hits spent reaching one recorded state (a pass costs one ptrace stop).
HIT_BUDGET = 2_000_000

_PTRACE_CONT = 7
_PTRACE_GETREGS = 12
_PTRACE_SETREGS = 13
_PTRACE_POKEUSER = 6
_PTRACE_DETACH = 17
_PTRACE_SETSIGINFO = 0x4203
_PTRACE_SEIZE = 0x4206
_PTRACE_INTERRUPT = 0x4207
_PTRACE_EVENT_STOP = 128
_WALL = 0x40000000
#: offsetof(struct user, u_debugreg) on x86_64 (sys/user.h)
_DEBUGREG = 848
#: DR7: local enable of DR0, R/W 00 (instruction execution), LEN 00 (required for execution)
_DR7_EXEC0 = 0x1
_SI_KERNEL = 0x80
_EFLAGS_RF = 1 << 16                       # resume flag: set by the debug exception
_EFLAGS_IGNORED = _EFLAGS_RF | (1 << 8)    # RF, TF
_NREGS = 27                                # struct user_regs_struct, u64 each
_CMP = tuple(i for i, name in enumerate(SIGNAL_REGS) if name != "orig_ax")
_FLAGS = SIGNAL_REGS.index("flags")
_IP = SIGNAL_REGS.index("ip")
_SIGSET = ctypes.c_ulong * 16
_SFD_NONBLOCK_CLOEXEC = 0o4000 | 0o2000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_libc.signalfd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]


def _ptrace(req: int, tid: int, addr: int = 0, data: Any = 0) -> int:
    ctypes.set_errno(0)
    r = _libc.ptrace(req, tid, ctypes.c_void_p(addr), data if isinstance(data, ctypes.c_void_p)
                     else ctypes.c_void_p(data))
    if r == -1 and ctypes.get_errno():
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(r)


def _regs(tid: int) -> tuple[int, ...]:
    buf = (ctypes.c_uint64 * _NREGS)()
    _ptrace(_PTRACE_GETREGS, tid, 0, ctypes.c_void_p(ctypes.addressof(buf)))
    return tuple(buf)


def _clear_rf(tid: int) -> None:
    buf = (ctypes.c_uint64 * _NREGS)(*_regs(tid))
    buf[_FLAGS] &= ~_EFLAGS_RF
    _ptrace(_PTRACE_SETREGS, tid, 0, ctypes.c_void_p(ctypes.addressof(buf)))


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _siginfo(sig: int, recorded: bytes | None) -> bytes:
    """What the handler sees: the siginfo a recorded rt_sigqueueinfo sent, else
    the kernel's own (SI_KERNEL: alarm, setitimer, the timer signals of a process)."""
    if recorded is not None and len(recorded) == 128:
        return recorded
    return struct.pack("<iii", sig, 0, _SI_KERNEL).ljust(128, b"\0")


class _Wake:
    """Wakes the supervisor when a traced thread stops (the tracer gets SIGCHLD),
    without spinning: a signalfd on SIGCHLD, blocked
    in this thread while a thread is traced. A SIGCHLD another thread of the
    supervisor takes is made up for by a short poll period."""

    PERIOD = 0.002

    def __init__(self) -> None:
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        mask = _SIGSET()
        mask[(signal.SIGCHLD - 1) // 64] = 1 << ((signal.SIGCHLD - 1) % 64)
        self.fd = _libc.signalfd(-1, ctypes.addressof(mask), _SFD_NONBLOCK_CLOEXEC)

    def wait(self) -> None:
        if self.fd < 0:
            time.sleep(self.PERIOD)
            return
        ready, _, _ = select.select([self.fd], [], [], self.PERIOD)
        if ready:
            try:
                os.read(self.fd, 128 * 16)
            except OSError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if signal.SIGCHLD not in self.old:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


class _Gone(Exception):
    """The traced thread ended (its process exited or was killed)."""


class AsyncDelivery:
    """Per session: the threads armed for delivery at a recorded state.

    :meth:`arm` is called before the session answers a call after which the
    recording shows asynchronous signals; :meth:`run` after it answered."""

    def __init__(self, session: Any) -> None:
        self.s = session
        self.armed: dict[int, tuple[Thread, int]] = {}   # host tid -> (thread, position)
        self.hit_budget = int(getattr(session.opts, "signal_hits", 0) or HIT_BUDGET)

    # ------------------------------------------------------------------ hooks
    def arm(self, th: Thread, pos: int) -> None:
        """Seize and interrupt the thread while it waits in its notification: it
        stops as the call returns, before running any user instruction."""
        seq = self.s.script.async_seq.get(pos)
        if not seq:
            return
        if not getattr(self.s.sb, "killable_wait", True):
            # Before Linux 5.19 the interrupt would end the notification itself.
            self._fallback(th, pos, seq, "the kernel's seccomp wait is not killable (Linux < 5.19)")
            return
        try:
            _ptrace(_PTRACE_SEIZE, th.host_tid)
            _ptrace(_PTRACE_INTERRUPT, th.host_tid)
        except OSError as e:
            self._fallback(th, pos, seq, f"the thread cannot be traced ({e.strerror})")
            return
        self.armed[th.host_tid] = (th, pos)

    def run(self, th: Thread) -> None:
        """The call was answered: run the thread to each recorded state and deliver there."""
        got = self.armed.pop(th.host_tid, None)
        if got is None:
            return
        pos = got[1]
        seq = list(self.s.script.async_seq.get(pos, ()))
        tid = th.host_tid
        wake = _Wake()
        try:
            deadline = time.monotonic() + self.s.opts.stall_timeout
            if self._stop(tid, wake, deadline) is None:
                self._fallback(th, pos, seq, "the thread did not stop as its call returned")
                self._detach(tid, 0)
                return
            inject = 0   # the signal delivered at the stop the thread is in
            while seq:
                sig, regs = seq[0]
                why = self._reach(tid, regs, wake, inject)
                inject = 0
                if why is None:
                    seq.pop(0)
                    info = _siginfo(sig, self.s.script.siginfo.get((pos, sig)))
                    buf = ctypes.create_string_buffer(info, 128)
                    _ptrace(_PTRACE_SETSIGINFO, tid, 0, ctypes.c_void_p(ctypes.addressof(buf)))
                    self.s.report.signals_delivered += 1
                    if seq:
                        # The next state may be this one again (the signal came again as
                        # the handler returned): without RF in the saved flags, sigreturn
                        # comes back to ip with the breakpoint armed.
                        _clear_rf(tid)
                        inject = sig
                        continue
                    self._detach(tid, sig)
                    return
                # Not reached: say so at this signal and at those after it, deliver them here.
                self._fallback(th, pos, seq, why)
                self._detach(tid, 0)
                return
        except _Gone:
            self._fallback(th, pos, seq, "the thread ended before reaching it")
        except OSError as e:
            if e.errno != errno.ESRCH:
                self._fallback(th, pos, seq, f"tracing the thread failed ({e.strerror})")
            else:
                self._fallback(th, pos, seq, "the thread ended before reaching it")
        finally:
            wake.close()

    # ------------------------------------------------------------------ mechanism
    def _stop(self, tid: int, wake: _Wake, deadline: float) -> int | None:
        """Wait for the next stop of ``tid``: its status, None at the deadline.
        Raises _Gone when the thread ended."""
        while True:
            try:
                pid, status = os.waitpid(tid, os.WNOHANG | _WALL)
            except ChildProcessError:
                raise _Gone() from None
            if pid == tid:
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    raise _Gone()
                return status
            if time.monotonic() >= deadline:
                return None
            wake.wait()

    def _reach(self, tid: int, regs: dict, wake: _Wake, sig: int) -> str | None:
        """Run the stopped thread (delivering ``sig`` at this stop) until its
        registers are ``regs``; return None there (it is left in the breakpoint's
        SIGTRAP stop, breakpoint off), or why not (it is left stopped, breakpoint off)."""
        want = tuple(int(regs.get(name, 0)) for name in SIGNAL_REGS)
        ip = want[_IP]
        _ptrace(_PTRACE_POKEUSER, tid, _DEBUGREG, ip)
        _ptrace(_PTRACE_POKEUSER, tid, _DEBUGREG + 7 * 8, _DR7_EXEC0)
        hits = 0
        seen: set[int] = set()
        repeated = False
        deadline = time.monotonic() + self.s.opts.stall_timeout
        in_call = ""
        since = 0.0
        while True:
            _ptrace(_PTRACE_CONT, tid, 0, sig)
            sig = 0
            while True:
                try:
                    pid, status = os.waitpid(tid, os.WNOHANG | _WALL)
                except ChildProcessError:
                    raise _Gone() from None
                if pid == tid:
                    break
                now = time.monotonic()
                # In a syscall on two looks with no stop between (a stop that came
                # after waitpid would show the syscall it returned from).
                call = self._in_syscall(tid)
                if call is not None:
                    nr, name = call
                    if name != in_call:
                        in_call, since = name, now
                    elif nr not in PASSTHROUGH:
                        return self._give_up(tid, wake, f"the thread made its next syscall ({name}) "
                                             f"first, after {hits} passes over ip {ip:#x}")
                    elif now - since > 0.2:
                        return self._give_up(tid, wake, f"the thread blocked in {name} after {hits} "
                                             f"passes over ip {ip:#x}")
                else:
                    in_call = ""
                if now >= deadline:
                    return self._give_up(tid, wake, f"not reached within --stall-timeout "
                                         f"({hits} passes over ip {ip:#x})")
                wake.wait()
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                raise _Gone()
            stopsig = os.WSTOPSIG(status)
            if status >> 16:
                continue   # an event or group stop: nothing to deliver
            if stopsig != signal.SIGTRAP:
                sig = stopsig   # a real signal meanwhile: pass it on
                continue
            got = _regs(tid)
            if got[_IP] != ip:
                sig = signal.SIGTRAP   # not our breakpoint: the program's own trap
                continue
            hits += 1
            if all(got[i] == want[i] for i in _CMP if i != _FLAGS) and \
                    (got[_FLAGS] | _EFLAGS_IGNORED) == (want[_FLAGS] | _EFLAGS_IGNORED):
                _ptrace(_PTRACE_POKEUSER, tid, _DEBUGREG + 7 * 8, 0)
                if repeated:
                    self.s.report.notes.append(
                        f"the registers at ip {ip:#x} repeated across passes of thread {self._rec(tid)}: "
                        f"a signal was delivered at the first pass matching its recorded state "
                        f"(after {hits}), which may not be the recorded one")
                return None
            h = hash(got[:21])
            if h in seen:
                repeated = True
            seen.add(h)
            if hits >= self.hit_budget:
                _ptrace(_PTRACE_POKEUSER, tid, _DEBUGREG + 7 * 8, 0)
                return f"not reached within {hits} passes over ip {ip:#x} (the budget)"
            if time.monotonic() >= deadline:
                _ptrace(_PTRACE_POKEUSER, tid, _DEBUGREG + 7 * 8, 0)
                return f"not reached within --stall-timeout ({hits} passes over ip {ip:#x})"

    def _give_up(self, tid: int, wake: _Wake, why: str) -> str:
        """Stop the running thread (a syscall it sleeps in restarts transparently)
        and take the breakpoint off; the thread is left stopped."""
        _ptrace(_PTRACE_INTERRUPT, tid)
        deadline = time.monotonic() + self.s.opts.stall_timeout
        status = self._stop(tid, wake, deadline)
        if status is None:
            raise _Gone()
        _ptrace(_PTRACE_POKEUSER, tid, _DEBUGREG + 7 * 8, 0)
        # The breakpoint may have fired as the interrupt came: its SIGTRAP is then
        # queued behind the interrupt's stop, and delivered untraced after detach it
        # would kill the program (SIGTRAP's default action). Let the thread dequeue
        # it (no user instruction runs before pending signals) and stop on it; the
        # detach without a signal drops it.
        if not self._stopped_on_trap(status) and self._trap_pending(tid):
            _ptrace(_PTRACE_CONT, tid, 0, 0)
            if self._stop(tid, wake, deadline) is None:
                raise _Gone()
        return why

    @staticmethod
    def _stopped_on_trap(status: int) -> bool:
        return os.WIFSTOPPED(status) and status >> 16 == 0 and os.WSTOPSIG(status) == signal.SIGTRAP

    @staticmethod
    def _trap_pending(tid: int) -> bool:
        """SIGTRAP in the thread's own pending set (a debug exception is sent to the thread)."""
        try:
            with open(f"/proc/{tid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("SigPnd:"):
                        return bool(int(line.split()[1], 16) & (1 << (signal.SIGTRAP - 1)))
        except OSError:
            pass
        return False

    @staticmethod
    def _in_syscall(tid: int) -> tuple[int, str] | None:
        try:
            with open(f"/proc/{tid}/syscall") as f:
                word = f.read().split(" ", 1)[0]
        except OSError:
            return None
        if not word.isdigit():
            return None   # running, or stopped outside a syscall
        nr = int(word)
        sc = notify_name(nr)
        return nr, sc

    def _detach(self, tid: int, sig: int) -> None:
        try:
            _ptrace(_PTRACE_POKEUSER, tid, _DEBUGREG + 7 * 8, 0)
        except OSError:
            pass
        try:
            _ptrace(_PTRACE_DETACH, tid, 0, sig)
        except OSError:
            pass

    def _rec(self, host_tid: int) -> int:
        th = self.s.threads.get(host_tid)
        return th.tid if th is not None else host_tid

    def _fallback(self, th: Thread, pos: int, seq: list, why: str) -> None:
        """The recorded state of these signals was not reached: say so at each, and
        queue it now (it runs as the thread next returns to user code)."""
        ev = self.s.script.events[pos]
        for sig, regs in seq:
            text = (f"{_signame(sig)} interrupted thread {th.tid} between syscalls in the recording (at ip "
                    f"{int(regs.get('ip', 0)):#x}, after event #{ev.index} {ev.name}); replay could not "
                    f"deliver it there: {why}; delivered later than recorded")
            self.s.report.signals_early += 1
            self.s.report.notes.append(text)
            th.early_signal = text
            try:
                info = self.s.script.siginfo.get((pos, sig))
                if info is not None:
                    notify.tgsigqueueinfo(th.host_tgid, th.host_tid, sig, info)
                else:
                    notify.tgkill(th.host_tgid, th.host_tid, sig)
                self.s.report.signals_delivered += 1
            except OSError:
                pass
        seq.clear()


def notify_name(nr: int) -> str:
    from dr.replay.strict.core import SC
    sc = SC.get(nr)
    return sc.name if sc is not None else f"syscall {nr}"
