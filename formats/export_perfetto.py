"""``dr export perfetto``: a trace as a timeline for ui.perfetto.dev / chrome://tracing.

Output is the Chrome JSON trace event format (the "Trace Event Format"
document by Google, JSON object form): ``{"traceEvents": [...],
"displayTimeUnit": "ns", "otherData": {...}}``. Each syscall is one complete
event (``"ph": "X"``) on its thread's track: ``pid`` = tgid, ``tid`` = tid,
``name`` = syscall name, ``ts``/``dur`` in µs (floats with ns precision,
CLOCK_MONOTONIC), ``args`` = {fd, file, bytes, result, ret, errno, call, ...} where
``call`` is the strace-style line of ``dr show``.
Process events are instant events (``"ph": "i"``, ``"s": "t"``) on the
thread they happened to: ``fork`` (args child tid and tgid), ``exec``,
``exit`` (code), ``signal SIGTERM`` (signo, handler). Threads and processes are
named with metadata events (``"ph": "M"``, ``thread_name`` / ``process_name``):
each task's comm as the trace knows it (the capture's snapshot, inherited
through fork, renamed by execve; :class:`dr.formats.stats.Comms`). Only
syscalls are slices, so the number of slices equals the number of syscalls;
process events are also listed in ``otherData`` with the losses.

Calls that never returned (exit_group, NO_EXIT) and events whose entry was
lost are zero-length slices at the time known.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from typing import Any, TextIO

from dr import schema
from dr.formats.fdmap import FdMap
from dr.formats.stats import Comms, _ret_is_error, errno_name, process_name
from dr.formats.trace import Event, ProcEvent, TraceReader
from dr.formats.transfers import transfers
from dr.schema import s32 as _s32

__all__ = ["export_perfetto", "PerfettoResult"]

_NO_EXIT = schema.EVENT_FLAGS["NO_EXIT"]


@dataclass(frozen=True, slots=True)
class PerfettoResult:
    """What :func:`export_perfetto` wrote: ``slices`` (= syscalls), ``instants``
    (process events), threads, processes."""

    slices: int
    threads: int
    processes: int
    truncated: bool
    instants: int = 0


def _us(ns: int) -> float:
    # 3 decimals keep ns precision; CLOCK_MONOTONIC values stay well inside a double's 15 digits.
    return round(ns / 1000.0, 3)


_FD_ARG: dict[int, int | None] = {}


def _fd_arg(ev: Event) -> int | None:
    """Index of the first fd argument of ``ev``'s syscall (cached per number)."""
    try:
        return _FD_ARG[ev.nr]
    except KeyError:
        pass
    sc = schema.by_nr(ev.nr) if -1 < ev.nr < 1 << 20 else None
    fa = next((i for i, a in enumerate(sc.args) if a.kind == schema.Kind.FD), None) if sc else None
    if len(_FD_ARG) < 4096:
        _FD_ARG[ev.nr] = fa
    return fa


def _strace_line(meta: dict[str, Any]):
    """``ev -> "openat(AT_FDCWD, "/x", O_RDONLY) = 3"`` through dr show's decoders (no tid prefix)."""
    from dr.formats.strace import Formatter, ShowOptions

    # One tid in the filter: the formatter then never prefixes "[pid N]".
    fmt = Formatter(ShowOptions(strsize=64, prefix=False), meta)

    def line(ev: Event) -> str | None:
        try:
            return fmt.line(ev)
        except Exception:  # a decoder's trouble with an odd event must not stop the export
            return None

    return line


def export_perfetto(reader: TraceReader, out: TextIO) -> PerfettoResult:
    """Write ``reader`` as Chrome JSON trace events to ``out``. Raises TraceError (corrupt frame).

    Events are streamed out one per line; the document is valid JSON as a whole.
    """
    meta = reader.meta
    comms = Comms(meta)
    pname = process_name(meta)
    fdm = FdMap(meta)
    call = _strace_line(meta)
    threads: dict[int, int] = {}   # tid -> tgid
    final: dict[int, str] = {}     # tid -> its last name
    proc: list[dict[str, Any]] = []
    instants = 0
    slices = 0
    out.write('{"displayTimeUnit":"ns","traceEvents":[\n')
    first = True
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

    def emit(o: dict[str, Any]) -> None:
        nonlocal first
        if not first:
            out.write(",\n")
        out.write(dumps(o))
        first = False

    for rec in reader.stream():
        comms.feed(rec)
        if rec.__class__ is Event:
            ev: Event = rec  # type: ignore[assignment]
            threads.setdefault(ev.tid, ev.tgid)
            final[ev.tid] = comms.get(ev.tid)
            args: dict[str, Any] = {}
            fa = _fd_arg(ev)
            fd = _s32(ev.args[fa]) if fa is not None else -1
            if fd >= 0:  # AT_FDCWD and the like are not fds
                args["fd"] = fd
                label = fdm.describe(ev.tgid, fd)
                if label:
                    args["file"] = label
            moved = transfers(ev)
            if moved:
                args["bytes"] = sum(t.nbytes for t in moved)
            noexit = bool(ev.flags & _NO_EXIT)
            if noexit:
                args["result"] = "?"
            elif _ret_is_error(ev):
                args["result"] = f"-1 {errno_name(-ev.ret)}"
                args["errno"] = errno_name(-ev.ret)
            else:
                args["result"] = ev.ret
            args["ret"] = ev.ret
            args["seq"] = ev.seq
            line = call(ev)
            if line:
                args["call"] = line
            if ev.flags:
                args["flags"] = [n for n, b in schema.EVENT_FLAGS.items() if ev.flags & b]
            t0 = ev.ts_enter or ev.ts_exit
            t1 = ev.ts_exit if ev.ts_exit >= t0 and not noexit else t0
            name = ev.name
            emit({"name": name, "cat": "syscall", "ph": "X", "ts": _us(t0), "dur": _us(t1 - t0),
                  "pid": ev.tgid, "tid": ev.tid, "args": args})
            slices += 1
            fdm.apply(ev)
        elif rec.__class__ is ProcEvent:
            pe: ProcEvent = rec  # type: ignore[assignment]
            proc.append({"what": pe.kind, "tid": pe.tid, "tgid": pe.tgid, "ts_us": _us(pe.ts),
                         "arg0": pe.arg0, "arg1": pe.arg1})
            tgid = pe.tgid or threads.get(pe.tid, pe.tid)
            threads.setdefault(pe.tid, tgid)
            final[pe.tid] = comms.get(pe.tid)
            emit(_instant(pe, tgid))
            instants += 1
            fdm.apply(pe)

    tgids = sorted(set(threads.values()))
    for tgid in tgids:
        nm = final.get(tgid) or (pname if tgid == meta.get("pid") else "") or str(tgid)
        emit({"name": "process_name", "ph": "M", "pid": tgid, "tid": tgid, "args": {"name": nm}})
    for tid, tgid in sorted(threads.items()):
        nm = final.get(tid) or (pname if tid == meta.get("pid") else "") or f"thread {tid}"
        emit({"name": "thread_name", "ph": "M", "pid": tgid, "tid": tid, "args": {"name": nm}})
    other = {"tool": "dr", "trace": reader.path, "clock": "CLOCK_MONOTONIC",
             "complete": not reader.truncated, "syscalls": slices,
             "losses": {k: v for k, v in reader.losses.items()},
             "proc_events": proc, "argv": meta.get("argv"), "mode": meta.get("mode")}
    out.write("\n],\n")
    out.write('"otherData":' + dumps(other) + "}\n")
    return PerfettoResult(slices, len(threads), len(tgids), reader.truncated, instants)


def _instant(pe: ProcEvent, tgid: int) -> dict[str, Any]:
    """A process event as a thread-scoped instant event (a marker on the thread's track)."""
    args: dict[str, Any] = {}
    if pe.kind == "FORK":
        name = "fork"
        args = {"child_tid": pe.arg0, "child_tgid": pe.arg1}
    elif pe.kind == "EXEC":
        name = "exec"
    elif pe.kind == "EXIT":
        name = "exit"
        args = {"code": pe.arg0} if pe.arg0 >= 0 else {"code": None, "died_in_syscall": True}
    elif pe.kind == "SIGNAL":
        signo = _s32(pe.arg0)
        try:
            sig = signal.Signals(signo).name
        except ValueError:
            sig = str(signo)
        name = f"signal {sig}"
        args = {"signo": signo, "handler": {0: "SIG_DFL", 1: "SIG_IGN"}.get(pe.arg1, hex(pe.arg1))}
    else:
        name = pe.kind.lower()
        args = {"arg0": pe.arg0, "arg1": pe.arg1}
    return {"name": name, "cat": "process", "ph": "i", "s": "t", "ts": _us(pe.ts),
            "pid": tgid, "tid": pe.tid, "args": args}
