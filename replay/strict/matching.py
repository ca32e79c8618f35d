"""How the strict session matches a notification the recording does not show one for
one: a call the kernel restarted (clone after ERESTARTNOINTR, restart_syscall), a 32-bit
call, a time read the replay makes more or fewer of, a task that outlived or left its
recording early (and the killed tails it need not reach), exit taken for exit_group, and
the child exits held until their recorded turn."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

from dr import schema
from dr.replay.divergence import decode_event
from dr.replay.notify import Notif
from dr.replay.strict.answer import Answers
from dr.replay.strict.core import (NATIVE_BLOCKING, NO_DELIVER, NR_EXIT, NR_EXIT_GROUP, NR_RESTART_SYSCALL, PASSTHROUGH, RESTARTS, SC, SOFT, soft_key, Status, StepResult, Stop, THREAD_LOCAL, Thread)
from dr.replay.strict.procfs import nthreads, ppid, task_exists as _task_exists
from dr.replay.strict.substitute import write_outputs

__all__ = ["Matching"]




class Matching(Answers):
    """Mixed into :class:`~dr.replay.strict.session.ReplaySession` (its state)."""

    gpos: int
    held: dict[int, tuple[Notif, Thread]]
    parked: dict[int, Notif]
    children: Any       # deque of recorded child tids of replayed clones, not yet seen
    forked: dict[int, int]   # recorded child tid -> host tgid of the process that cloned it
    listener: Any
    last_progress: float
    consumed: Any       # bytearray: events[i] was replayed

    if TYPE_CHECKING:   # the session's methods; no stubs at run time to shadow them
        def _answer(self, n: Notif, th: Thread, pos: int, ev: Any) -> None: ...

    def _by_creator(self, host_tid: int, tgid: int, live: set[int]) -> int | None:
        """The recorded task a new one is, by its creator and creation rank, for a task whose
        number names no recorded tid (one born in a pid namespace of the program's own has
        other numbers there, not even those its clone returned at capture): among the
        recorded children not yet seen of the same kind (thread or process), preferring
        those its parent process cloned (a process may be reparented to the namespace's
        init before its first call, so the parent orders, never excludes), the one of its
        rank: a thread's rank counts its process's threads created before it that made no
        call yet (new threads race to their first call)."""
        thread = host_tid != tgid
        creator = tgid if thread else ppid(tgid)
        tg = self.script.tgid_of
        fits = [c for c in self.children if c not in live and (tg.get(c, c) != c) == thread]
        mine = [c for c in fits if self.forked.get(c) == creator] or fits
        rank = 0
        if thread:
            try:
                rank = sum(1 for t in os.listdir(f"/proc/{tgid}/task")
                           if int(t) < host_tid and int(t) not in self.threads)
            except (OSError, ValueError):
                rank = 0
        return mine[min(rank, len(mine) - 1)] if mine else None

    def _restarted_clone(self, n: Notif, th: Thread) -> bool:
        """The kernel restarts a clone a signal interrupted (ERESTARTNOINTR: a pending
        signal at copy_process, e.g. the SIGCHLD of a released child): the same call
        (number, arguments, instruction) notified again while the recorded child does
        not exist. It runs natively again with the same child tid and is no new event;
        anything else is the thread's next clone."""
        assert th.native_clone is not None   # the caller checked
        nr, args, ip, child = th.native_clone
        if (nr, args, ip) != (n.nr, n.args, n.ip):
            th.native_clone = None
            return False
        if _task_exists(th.host_tid, child):
            return False  # a loop of identical clones: the previous child is there
        self.report.restarts += 1
        self.sb.set_next_pid(child)  # type: ignore[union-attr]
        if self.listener.send(n.id, continue_=True):
            self.last_progress = time.monotonic()
        return True

    def _vsyscall(self, n: Notif, th: Thread) -> None:
        """A call through the legacy vsyscall page (gettimeofday, time, getcpu at
        0xffffffffff600000/400/800): the kernel emulates it at the page fault, without
        a syscall entry, so capture's raw_syscalls tracepoints never saw it and the
        trace holds nothing to answer it with. Seccomp does see it here: the kernel
        answers it natively, and the verdict cannot be "faithful" (what the program
        did with a native time was not recorded)."""
        if not any("vsyscall page" in x for x in self.report.not_compared):
            self.report.not_compared.append(
                f"thread {th.tid} called {schema.name_of(n.nr)} through the legacy vsyscall page: "
                "capture cannot see such calls (the kernel emulates them without a syscall entry), "
                "so the kernel answered them natively and their results were not compared")
        if self.listener.send(n.id, continue_=True):
            self.last_progress = time.monotonic()

    def _outlived(self, n: Notif, th: Thread) -> None:
        """The task was still running when the capture ended (an orphan outliving the
        recorded command): what it does now was never recorded, so it cannot be
        compared. Its process ends here and the verdict says so."""
        self.report.not_compared.append(
            f"thread {th.tid} (process {self.script.tgid_of.get(th.tid, th.tid)}) outlived the recording: its syscalls from "
            f"{schema.name_of(n.nr)} on (and their output) were not recorded (capture with --duration "
            "SECONDS to follow it longer)")
        try:
            os.kill(th.host_tgid, signal.SIGKILL)
        except OSError:
            pass
        for t in self.threads.values():
            if t.host_tgid == th.host_tgid:
                t.dead = True

    def _park(self, n: Notif, th: Thread) -> None:
        """The recording shows this thread killed inside this call, or after its last
        one (a signal, its group's exit_group, an exec in another thread): the call is
        never answered, and the thread waits there until that death reaches it here
        (its killer's kill is sent for real, its group's exit runs natively)."""
        self.parked[n.pid] = n
        self.last_progress = time.monotonic()

    def _skip_restarts(self, th: Thread) -> None:
        """A recorded call interrupted with -ERESTART* whose signal replay does not
        deliver (SIGSTOP, a ptrace stop) was restarted by the kernel: the same call
        again, or restart_syscall for ERESTART_RESTARTBLOCK. Without the signal the
        kernel would hand the tracee the -ERESTART* value, so the interrupted event
        is consumed and the call answered as its restart (the next event)."""
        q, evs, sigs = th.queue, self.script.events, self.script.signals
        while len(q) > 1:
            ev = evs[q[0]]
            if ev.ret not in RESTARTS or any(sg not in NO_DELIVER for sg in sigs.get(q[0], ())):
                return
            nxt = evs[q[1]]
            if nxt.nr != ev.nr and nxt.nr != NR_RESTART_SYSCALL:
                return
            th.restart_of = ev.nr if nxt.nr == NR_RESTART_SYSCALL else -1
            self._consume(q.popleft(), th)
            self.report.restarts += 1

    def _native_restart(self, n: Notif, th: Thread) -> bool:
        """restart_syscall resumes the call the kernel interrupted with
        ERESTART_RESTARTBLOCK. When that call ran natively here (a passthrough futex or
        nanosleep the supervisor never answered), its restart is the kernel's too: it
        runs natively, and the recorded restart_syscall is consumed with it. Whether the
        native call is interrupted here at all depends on signals replay does not
        reproduce exactly (an ignored SIGUSR2 still interrupted it under capture's
        ptrace), so a recorded restart the thread does not make is consumed when it
        makes its next call. True when ``n`` was continued here."""
        q = th.queue
        pos = q[0] if q else -1
        head = self.script.events[pos] if q else None
        if head is not None and head.nr == NR_RESTART_SYSCALL and self._after_native(pos):
            q.popleft()
            self._consume(pos, th)
            self.report.restarts += 1
            if n.nr != NR_RESTART_SYSCALL:
                return False
        elif n.nr != NR_RESTART_SYSCALL or (head is not None and head.nr == NR_RESTART_SYSCALL):
            return False
        # A restart of a native call the recording shows uninterrupted, or the one above.
        if self.listener.send(n.id, continue_=True):
            self.last_progress = time.monotonic()
        return True

    def _after_native(self, pos: int) -> bool:
        """Whether the recorded restart_syscall at ``pos`` restarts a passthrough call:
        the thread's latest earlier call that returned ERESTART_RESTARTBLOCK (a signal
        handler may run between it and its restart) was not notified."""
        evs, i = self.script.all_events, self.script.pos_in_all[pos]
        tid = evs[i].tid
        for j in range(i - 1, max(-1, i - 100_000), -1):
            ev = evs[j]
            if ev.tid == tid and ev.ret == -516:
                return ev.nr in PASSTHROUGH
        return False

    def _on_compat(self, n: Notif, th: Thread) -> None:
        """A 32-bit call (int 0x80): answered with the recorded return value of the
        thread's next event when that event has its number (a 64-bit capture records
        the i386 number as it is, flagged COMPAT when capture knows), nothing written
        to memory (the i386 layouts are not in the schema). Ordered within its own
        thread only. Anything else is a divergence naming the call."""
        q = th.queue
        ev = self.script.events[q[0]] if q else None
        if ev is None or ev.nr != n.nr:
            want = f"{ev.name}" if ev is not None else "nothing more"
            raise Stop(StepResult(Status.DIVERGED, divergence=self._div(
                "syscall", f"thread {th.tid} made 32-bit syscall {n.nr} (int 0x80) where the recording "
                f"has {want}", th.tid, ev.index if ev is not None else None, th=th,
                expected=decode_event(ev) if ev is not None else None)))
        pos = q[0]
        if self.reply(n, th, pos, ev.ret):
            q.popleft()
            self._consume(pos, th)

    def _soft_match(self, n: Notif, th: Thread) -> tuple[int, Any] | None:
        """Match around time reads the replay makes more or fewer of than the recording.

        The thread's next recorded calls start with a run of time reads. A call found
        in that run (same syscall, same clock) is matched there and the reads before it
        are skipped (the recording made them, the replay does not: a GIL wait that did
        not happen). A time read not in the run is an extra one and gets the thread's
        last replayed value of that clock: a skipped read is replayed as consumed, so a
        read that comes later than recorded still sees its own recorded value.
        Returns the (position, event) to answer, or None when answered here.
        """
        q, evs = th.queue, self.script.events
        key = soft_key(n.nr, n.args)
        k = 0
        while k < len(q) and evs[q[k]].nr in SOFT and soft_key(evs[q[k]].nr, evs[q[k]].args) != key:
            k += 1
        if k == len(q) and n.nr == NR_EXIT and self._early_exit(n, th):
            return None
        if k < len(q) and evs[q[k]].nr == n.nr and (
                n.nr not in SOFT or soft_key(evs[q[k]].nr, evs[q[k]].args) == key):
            for _ in range(k):
                self._consume(q.popleft(), th)
                self.report.soft_skipped += 1
            return q[0], evs[q[0]]
        if n.nr not in SOFT:
            return q[0], evs[q[0]]
        ev = th.last_soft.get(key)
        if ev is None:
            ev = next((evs[p] for p in q if soft_key(evs[p].nr, evs[p].args) == key), None)
        if ev is None:
            return q[0], evs[q[0]]
        sc = SC.get(n.nr)
        assert sc is not None
        write_outputs(self, n, th, ev, sc)  # type: ignore[arg-type]  # self is the session
        self.sb.listener.reply(n.id, ev.ret)  # type: ignore[union-attr]
        self.report.soft_extra += 1
        return None

    def _early_exit(self, n: Notif, th: Thread) -> bool:
        """A thread ends (exit(2)) where the recording shows at most time reads left.

        In the recording it was killed by another thread's exit_group before it
        ended by itself (no exit event of its own); here it got there first. Its
        remaining time reads are skipped and the exit runs natively. False (not
        handled) for the last thread of a process, whose exit must be recorded."""
        if nthreads(th.host_tgid) <= 1:
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
        tid = self.script.owner[self.gpos]
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

    def _killed_tails(self) -> set[int]:
        """Positions replay need not reach: the last calls of a thread the recording
        shows killed (by its group's exit_group, an exec, a signal) that were
        interrupted by that kill (-ERESTART*) or only seen by the thread itself (a
        sleep, a time read). Killed earlier in replay, it never makes them, and
        nothing else could observe that it did not. Likewise a thread's own ``exit``
        (and such calls before it) when replay ran its process's exit_group first:
        the group exit ends it the same way (clear-tid wake included).
        """
        evs, out, tg = self.script.events, set(), self.script.tgid_of
        grouped = {tg.get(e.tid, e.tid) for e, done in zip(evs, self.consumed) if done and e.nr == NR_EXIT_GROUP}
        for tid, q in self.script.per_tid.items():
            own_exit = tid not in self.script.unended
            if own_exit and tg.get(tid, tid) not in grouped:
                continue
            for i in reversed(q or ()):
                if self.consumed[i]:
                    break
                if own_exit and evs[i].nr == NR_EXIT and i == q[-1]:
                    out.add(i)
                    continue
                if not (evs[i].ret in RESTARTS or evs[i].nr in THREAD_LOCAL):
                    break
                out.add(i)
        return out

    def _same_exit(self, n: Notif, th: Thread, pos: int, ev: Any) -> bool:
        """exit and exit_group, with the same status, are one call for the last thread of
        a process. glibc's pthread_exit picks one by a user-space count of running threads
        (the last to leave calls exit_group), a race replay does not order: a main thread
        that left last at capture may leave first here. Accepted, as the thread's last
        recorded call, when the recorded exit_group ended only its caller (the others had
        left by their own exits before it), or when the recorded exit is the last call of
        its process (all the others' calls replayed). Answered at once: the others' exits
        may need this one gone first."""
        if {n.nr, ev.nr} != {NR_EXIT, NR_EXIT_GROUP} or (n.args[0] ^ ev.args[0]) & 0xFFFFFFFF:
            return False
        if len(th.queue) != 1 or th.queue[0] != pos:
            return False
        script, owner = self.script, self.script.owner
        mine = script.tgid_of.get(th.tid, th.tid)
        others = {t for t in script.tgid_of if t != th.tid and script.tgid_of[t] == mine}
        rest = [i for i in range(len(owner)) if owner[i] in others]
        if ev.nr == NR_EXIT_GROUP:
            return all(t not in script.unended for t in others) and all(i < pos for i in rest)
        return all(self.consumed[i] for i in rest)
