"""The recorded run as strict replay reads it: notified events in global order,
each thread's queue of positions, and where signals were delivered."""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from dr import schema
from dr.errors import ReplayError
from dr.replay.strict.streamtail import cut_tails
from dr.replay.strict.core import CLONES, EXITS, NR_EXIT_GROUP, PASSTHROUGH, QUEUEINFO, SENDERS, SYNC_FAULTS

__all__ = ["Script", "cut_by", "load_script", "snaplen_remedy"]

NR_PRCTL = schema.by_name("prctl").nr
#: Passthrough waits a signal can interrupt while the thread sleeps natively.
NATIVE_WAITS = frozenset(schema.by_name(n).nr for n in ("futex", "futex_waitv", "futex_wait")) & PASSTHROUGH
PR_SET_PDEATHSIG = 1


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
    sync_faults: int = 0          # fault signals left to the program's own execution
    #: recorded tgid -> the signal that killed the process (it ended without exit_group)
    deaths: dict[int, int] = field(default_factory=dict)
    #: recorded tids that ended without exit/exit_group of their own (killed, group exit, exec)
    unended: set[int] = field(default_factory=set)
    owner: list[int] = field(default_factory=list)  # events[i] belongs to thread owner[i]
    outlived: set[int] = field(default_factory=set)  # tids alive when the capture ended
    #: (position, signal) -> the siginfo a recorded rt_(tg)sigqueueinfo sent with it
    siginfo: dict[tuple[int, int], bytes] = field(default_factory=dict)
    #: position -> the asynchronous signals, in order, that interrupted its thread between
    #: that call and its next one, each with the user registers where it did (signal_regs
    #: with orig_ax -1; see dr.schema.layout); delivered there (replay/strict/asyncsig.py)
    async_seq: dict[int, list[tuple[int, dict]]] = field(default_factory=dict)
    #: the ``files`` records (dr.capture.files): None when the trace has none (an older capture)
    files: list[dict] | None = None
    #: sha256 -> {offset: bytes} of the ``blob`` records (files the capture stored)
    blobs: dict[str, dict[int, bytes]] = field(default_factory=dict)
    #: position of a clone -> the recorded tid of its child, where that differs from the
    #: value clone returned (a child in a pid namespace of the program's own: clone returns
    #: its pid there, capture records the task under its host tid)
    clone_child: dict[int, int] = field(default_factory=dict)
    #: (position, signal) -> the native wait (futex) it interrupted after that call: replay
    #: sends it once the thread sleeps in that call (answer.deliver_signals), not before
    in_wait: dict[tuple[int, int], int] = field(default_factory=dict)
    #: position -> [(recorded tgid, signal)]: signals the kernel sent (a timer's) that
    #: reached a thread with no answered call pending, sent process-wide as that call is answered
    proc_signals: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    #: (tid, seq) of a write cut at the snaplen -> the rest of its bytes, as the reader of its
    #: pipe/socketpair received them (replay/strict/streamtail.py)
    cut_tails: dict[tuple[int, int], bytes] = field(default_factory=dict)


def load_script(path: str) -> Script:
    """Read a trace into a :class:`Script`. Raises TraceError for a bad trace,
    ReplayError for one strict replay cannot use (attach mode, empty)."""
    from dr.formats.trace import Event, ProcEvent, TraceReader
    sig_kind = schema.PROC_EVENTS["SIGNAL"]
    exit_kind = schema.PROC_EVENTS["EXIT"]
    exec_kind = schema.PROC_EVENTS["EXEC"]
    fork_kind = schema.PROC_EVENTS["FORK"]
    with TraceReader(path) as r:
        meta = r.meta if isinstance(r.meta, dict) else {}
        if meta.get("mode") not in (None, "spawn"):
            raise ReplayError(f"{path} was captured in {meta.get('mode')} mode; strict replay needs a "
                              "spawn-mode trace (dr capture -- CMD)")
        events: list[Event] = []
        all_events: list[Event] = []
        pos_in_all: list[int] = []
        per_tid: dict[int, deque] = {}
        signals: dict[int, list[int]] = {}
        last_pos: dict[int, int] = {}
        redacted: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
        delivered: list[tuple[int, int]] = []
        sent: set[int] = set()   # signal numbers some recorded call sent
        queued: dict[tuple[int, int], bytes] = {}   # (target tgid, sig) -> siginfo sent with it
        siginfo: dict[tuple[int, int], bytes] = {}  # (position, sig) -> siginfo to deliver
        async_at: list[tuple[int, int, dict]] = []   # (position, sig, registers) in trace order
        in_wait: dict[tuple[int, int], int] = {}
        proc_signals: dict[int, list[tuple[int, int]]] = {}
        exited: set[int] = set()         # tids with an exit/exit_group event of their own
        group_exit: set[int] = set()     # tgids some thread of which called exit_group
        last_sig: dict[int, int] = {}    # tgid -> last signal delivered to one of its threads
        died: dict[int, int] = {}        # tgid -> exit code of its EXIT with group_dead
        # A thread other than the leader that calls execve takes the leader's tid
        # (de_thread); capture records the execve and what follows under the
        # leader's tid, with an EXEC event naming the old one. Those events are
        # the exec'ing thread's: replay follows the thread, not the number.
        alias: dict[int, int] = {}       # recorded tid -> the thread whose events they are
        owner: list[int] = []            # events[i] was made by thread owner[i]
        seen: set[int] = set()           # every recorded tid
        files: list[dict] | None = None
        blobs: dict[str, dict[int, bytes]] = {}
        ended: set[int] = set()          # tids with an EXIT event
        forked: dict[int, int] = {}      # parent tid -> its last FORK's child tid (precedes the clone's event)
        clone_child: dict[int, int] = {}
        fork_recs: list[tuple[int, Any]] = []   # (events before it, FORK record): fd tables follow forks
        for rec in r.stream():
            if isinstance(rec, Event):
                all_events.append(rec)
                tid = alias.get(rec.tid, rec.tid)
                seen.add(tid)
                child = forked.pop(rec.tid, None) if rec.nr in CLONES and rec.ret > 0 else None
                if rec.nr in CLONES and 0 < rec.ret < (1 << 22):
                    if child is not None and child != rec.ret:
                        clone_child[len(events)] = child
                    # a child may be killed before its first call
                    seen.add(child if child is not None else int(rec.ret))
                if rec.nr in SENDERS and rec.ret == 0:
                    sig = int(rec.args[SENDERS[rec.nr]]) & 0xFFFFFFFF
                    sent.add(sig)
                    info = rec.payload(SENDERS[rec.nr] + 1) if rec.nr in QUEUEINFO else None
                    if info and len(info) == 128:  # the siginfo the handler will see
                        queued[(int(rec.args[0]) & 0xFFFFFFFF, sig)] = info
                elif rec.nr == NR_PRCTL and rec.ret == 0 and int(rec.args[0]) & 0xFFFFFFFF == PR_SET_PDEATHSIG:
                    # The kernel sends this signal when the parent dies: sent, not a
                    # fault of the program's own code, whatever its number (SIGILL).
                    sent.add(int(rec.args[1]) & 0xFFFFFFFF)
                elif rec.nr in EXITS:
                    exited.add(tid)
                    if rec.nr == NR_EXIT_GROUP:
                        group_exit.add(rec.tgid or rec.tid)
                if rec.nr in PASSTHROUGH:
                    continue
                pos = len(events)
                events.append(rec)
                owner.append(tid)
                pos_in_all.append(len(all_events) - 1)
                per_tid.setdefault(tid, deque()).append(pos)
                last_pos[tid] = pos
            elif isinstance(rec, dict):
                if rec.get("t") == "files" and isinstance(rec.get("files"), list):
                    files = (files or []) + [f for f in rec["files"] if isinstance(f, dict)]
                elif rec.get("t") == "blob" and isinstance(rec.get("sha256"), str) and isinstance(
                        rec.get("offset"), int) and isinstance(rec.get("data"), bytes):
                    blobs.setdefault(rec["sha256"], {})[rec["offset"]] = rec["data"]
                elif rec.get("t") == "redactions":
                    from dr.formats.redact import spans_by_slot
                    for k, v in spans_by_slot([rec]).items():
                        redacted.setdefault(k, []).extend(v)
            elif isinstance(rec, ProcEvent) and rec.what == fork_kind:
                forked[rec.tid] = int(rec.arg0)
                fork_recs.append((len(all_events), rec))
            elif isinstance(rec, ProcEvent) and rec.what == exec_kind:
                old = int(rec.arg0)
                if old != rec.tid and 0 < old < (1 << 22):
                    alias[rec.tid] = alias.get(old, old)
            elif isinstance(rec, ProcEvent) and rec.what == sig_kind:
                p = last_pos.get(alias.get(rec.tid, rec.tid))
                # p None: the thread made no answered call yet (a new thread that took a
                # pending process signal when it unblocked it, in a call that runs natively);
                # a SIGKILL/SIGSTOP there is the kernel ending or stopping that thread alone
                # (another thread's exec, its group's exit), never a signal to send again
                if ((p is not None and p < len(events) - 1 or p is None and events and int(rec.arg0)
                     not in (signal.SIGKILL, signal.SIGSTOP)) and 0 < rec.arg0 < 65
                        and int(rec.arg0) not in sent and int(rec.arg0) not in SYNC_FAULTS
                        and rec.arg0 != signal.SIGCHLD
                        and not (rec.regs and (rec.regs.get("orig_ax", 0) >= (1 << 63)
                                               or rec.regs.get("orig_ax", -1) in NATIVE_WAITS))):
                    # No call sent it and other threads' calls came between the thread's last
                    # answered call and its delivery (a timer's signal for the process, taken
                    # by whichever thread did not block it). Sent to that thread at its last
                    # call, it arrives before the program armed it (its handler not yet
                    # installed); sent process-wide at the recorded point, the kernel picks
                    # the thread that takes it now, as it did at capture: with the answer of
                    # the latest call (the next one may be the receiver's own, after it).
                    proc_signals.setdefault(len(events) - 1, []).append((rec.tgid or rec.tid, int(rec.arg0)))
                    last_sig[rec.tgid or rec.tid] = int(rec.arg0)
                    continue
                if p is not None and 0 < rec.arg0 < 65:
                    signals.setdefault(p, []).append(int(rec.arg0))
                    delivered.append((p, int(rec.arg0)))
                    if rec.regs and rec.regs.get("orig_ax", 0) >= (1 << 63):
                        async_at.append((p, int(rec.arg0), rec.regs))
                    elif rec.regs and rec.regs.get("orig_ax", -1) in NATIVE_WAITS:
                        # in a futex wait that runs natively after call p
                        in_wait[(p, int(rec.arg0))] = int(rec.regs["orig_ax"])
                    info = queued.pop((rec.tgid or rec.tid, int(rec.arg0)), None)
                    if info is not None:
                        siginfo[(p, int(rec.arg0))] = info
                if 0 < rec.arg0 < 65:
                    last_sig[rec.tgid or rec.tid] = int(rec.arg0)
            elif isinstance(rec, ProcEvent) and rec.what == exit_kind:
                ended.add(alias.get(rec.tid, rec.tid))
                if rec.arg1:  # group_dead: the process ended with this task
                    died[rec.tgid or rec.tid] = int(rec.arg0)
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
    # A fault signal (SIGSEGV, SIGBUS, ...) no recorded call sent came from the
    # program's own execution: replay runs that code natively and the kernel raises
    # it again at the same instruction; sent again by the supervisor it would arrive
    # at the wrong moment (before the handler is installed, or twice).
    sync_faults = 0
    for p, sg in delivered:
        if sg in SYNC_FAULTS and sg not in sent and sg in signals.get(p, ()):
            signals[p].remove(sg)
            sync_faults += 1
            if not signals[p]:
                del signals[p]
    # A signal that interrupted user code between syscalls is delivered at its
    # recorded state, not at a syscall boundary: out of ``signals`` (a repeat is
    # not merged there, each has its own state). A fault is left to the program.
    # SIGCHLD too stays at its call: replay's children really exit, and the kernel's
    # own SIGCHLD is timed by holding their exits to the parent's recorded delivery
    # points (answer.hold_exit); a second, supervisor-sent copy would race with it.
    async_seq: dict[int, list[tuple[int, dict]]] = {}
    for p, sg, regs in async_at:
        if sg == signal.SIGCHLD:
            continue
        if sg in signals.get(p, ()) and not (sg in SYNC_FAULTS and sg not in sent):
            signals[p].remove(sg)
            if not signals[p]:
                del signals[p]
            async_seq.setdefault(p, []).append((sg, regs))
    _spread_repeats(signals, per_tid)
    tgid_of = {t: ev.tgid or ev.tid for t, ev in zip(owner, events)}
    # How each process ended: a process that ended (group_dead) with no exit_group
    # of its own and an unknown exit code (-1: not by exit) was killed by a signal.
    deaths = {tg: last_sig.get(tg, signal.SIGKILL) for tg, code in died.items()
              if code == -1 and tg not in group_exit}
    unended = {tid for tid in seen if tid not in exited}
    # Tasks still alive when the capture ended (it follows the first process; an
    # orphan that outlives it is not recorded to its end).
    outlived = seen - ended - set(alias)
    sigchld: dict[int, list[int]] = {}
    for p, sigs in signals.items():
        if signal.SIGCHLD in sigs:
            sigchld.setdefault(tgid_of.get(owner[p], owner[p]), []).append(p)
    return Script(meta, summary, truncated, events, all_events, pos_in_all, per_tid, signals,
                  set(per_tid), redacted, losses, tgid_of, sigchld, sync_faults, deaths, unended, owner,
                  outlived, siginfo, async_seq, files, blobs, clone_child, in_wait, proc_signals,
                  cut_tails(meta, all_events, fork_recs, losses.get("TRUNCATED", 0)))


def snaplen_remedy(events: list[Any], snaplen: Any = None) -> str:
    """``--snaplen N``, N enough for the longest payload the capture cut (KiB or MiB, rounded
    up). A payload that holds fewer bytes than the capture's ``snaplen`` was not cut by it:
    its chunks were lost (loss records), and a bigger snaplen would not help."""
    keep = snaplen if isinstance(snaplen, int) and snaplen > 0 else 0
    most = max((p.total for e in events for p in e.payloads.values()
                if p.total > len(p.data) >= keep), default=0)
    if not most:
        return "capture again: those bytes were lost in capture, not cut at the snaplen (see its loss records)"
    size = f"{-(-most // (1 << 20))}M" if most >= 1 << 20 else f"{-(-most // 1024)}K"
    return f"re-capture with `--snaplen {size}`"


def cut_by(held: int, snaplen: Any) -> str:
    """Why a payload holds fewer bytes than the call moved: the snaplen, or lost chunks."""
    if isinstance(snaplen, int) and 0 < snaplen and held < snaplen:
        return "its payload's chunks were lost in capture"
    return "cut at the capture's snaplen"


def _spread_repeats(signals: dict[int, list[int]], per_tid: dict[int, deque]) -> None:
    """Move a repeated standard signal to the thread's next call.

    Standard signals (below SIGRTMIN) do not queue: the recording can show one
    delivered twice at the same point (its handler ran, returned, and the signal
    came again before the next syscall — common for SIGCHLD while a capture's
    tracer holds a fork), but two sent at once merge into one pending signal and
    the handler would run once. The repeat is delivered at the thread's next
    call instead, so the handler still runs as often as recorded.
    """
    for q in per_tid.values():
        order = list(q)
        for i, p in enumerate(order[:-1]):
            sigs = signals.get(p)
            if not sigs or len(sigs) < 2:
                continue
            keep: list[int] = []
            carry: list[int] = []
            for sg in sigs:
                (carry if sg < 32 and sg in keep else keep).append(sg)
            if carry:
                signals[p] = keep
                signals[order[i + 1]] = carry + signals.get(order[i + 1], [])
