"""strace-style text for trace events (what ``dr show`` prints).

Every argument is decoded through the schema (:mod:`dr.schema`: argument
kinds, FLAGS/ENUMS tables); the conventions are strace's (strace(1)):

    write(1, "hello\\n", 6) = 6
    openat(AT_FDCWD, "/nope", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)
    [pid  4243] read(3, "GET / HTTP/1.1\\r\\nHost: 127.0.0.1"..., 8192) = 78

Data buffers are quoted and escaped as strace does and cut at ``strsize``
bytes (``-s``, default 32) with ``...``; paths and other NUL-terminated
strings are printed in full, as strace does. ``xflag`` 1 prints strings
holding non-printable bytes in hex, 2 prints every string in hex (``-x``/``-xx``).
Structures are decoded where cheap (stat, statx, timespec, timeval, rusage,
sockaddr in/in6/un, pollfd, epoll_event, fd pairs, utsname, wait status,
capabilities); other pointers print as addresses. Kernel structure layouts
are x86_64 and cite their uapi header.

``decode_fds`` 1 / 2 (strace ``-y`` / ``-yy``) decorates fds with what they
are, tracked through the trace by :class:`dr.formats.fdmap.FdMap`:
``3</etc/hosts>``, ``AT_FDCWD</tmp>``, ``4<pipe:[1]>``, ``5<anon_inode:[eventfd]>``;
sockets are ``3<socket:[7]>`` with -y and ``3<TCP:[127.0.0.1:45678->127.0.0.1:8000]>``
with -yy. A trace holds no inode numbers: the N in ``pipe:[N]``/``socket:[N]``
numbers dr's open files, it is not the kernel's inode. ``acolumn`` pads the
`` = result`` to that column (strace ``-a``, 40 in ``dr show``; 0 here, for
library users that want one-line text without padding). ``since_ns`` /
``until_ns`` keep events whose entry time (CLOCK_MONOTONIC ns) lies in that
window; :func:`parse_time_bound` turns ``--since`` text into such a bound.

The code is in four modules: this one lists a trace (filters, ``-c``,
notices); :mod:`dr.formats.strace_format` formats one event
(:class:`ShowOptions`, :class:`Formatter`); :mod:`dr.formats.strace_decode`
decodes values and structures; :mod:`dr.formats.strace_calls` holds the
per-syscall layouts. The names users need are re-exported here.

Library use::

    opts = ShowOptions(strsize=64, timestamps=2, decode_fds=2)
    for line in show_lines(reader, opts): print(line)
    for note in end_notices(reader): print(note, file=sys.stderr)
"""

from __future__ import annotations

from typing import Iterable, Iterator

from dr import schema
from dr.errors import UsageError
from dr.formats.stats import plural
from dr.formats.strace_decode import decode_sockaddr, format_flags, quote
from dr.formats.strace_format import (_ENTRY_LOST, _NO_EXIT, Formatter, ShowOptions, is_failed,
                                      is_successful)
from dr.formats.trace import ClockRead, Event, ProcEvent, TraceReader
from dr.schema.classes import TRACE_CLASSES

__all__ = ["ShowOptions", "Formatter", "show_lines", "summary_lines", "end_notices", "parse_trace_expr",
           "is_failed", "is_successful", "parse_time_bound", "quote", "format_flags", "decode_sockaddr",
           "cut_short_text"]


def parse_trace_expr(exprs: Iterable[str]) -> frozenset[int] | None:
    """Parse strace ``-e`` expressions (``trace=read,write``, ``read``, ``trace=!close``,
    ``trace=%network,%file``: strace's classes, :data:`dr.schema.classes.TRACE_CLASSES`).

    Returns the x86_64 syscall numbers to show, or None for all. Raises
    :class:`dr.errors.UsageError` for an unknown syscall or qualifier.
    """
    chosen: set[int] | None = None
    for expr in exprs:
        q, eq, rest = expr.partition("=")
        if not eq:
            q, rest = "trace", expr
        if q != "trace":
            raise UsageError(f"-e {q}=... is not supported (only trace=NAME,...)")
        neg = rest.startswith("!")
        names = [n for n in rest.lstrip("!").split(",") if n]
        nrs: set[int] = set()
        for n in names:
            if n == "all":
                nrs.update(s.nr for s in schema.all_syscalls())
                continue
            if n.startswith("%"):
                members = TRACE_CLASSES.get(n[1:])
                if members is None:
                    raise UsageError(f"invalid syscall class {n!r} in -e {expr} (classes: "
                                     + ", ".join("%" + c for c in TRACE_CLASSES) + ")")
                nrs.update(schema.by_name(m).nr for m in members)
                continue
            if n.startswith("syscall_") and n[8:].isdigit():
                nrs.add(int(n[8:]))
                continue
            try:
                nrs.add(schema.by_name(n).nr)
            except KeyError:
                raise UsageError(f"invalid system call {n!r} in -e {expr}") from None
        if neg:
            base = chosen if chosen is not None else {s.nr for s in schema.all_syscalls()}
            chosen = base - nrs
        else:
            chosen = (chosen or set()) | nrs
    return None if chosen is None else frozenset(chosen)


def parse_time_bound(text: str, meta: dict, option: str = "--since",
                     first_ts: int | None = None) -> int:
    """A ``--since``/``--until`` value as a CLOCK_MONOTONIC ns bound.

    Accepts seconds from the trace start (``2.5``, ``+2.5``, ``2.5s``), an
    absolute wall-clock time (``2026-11-30T09:10:00[.ffffff][Z|+01:00]``;
    local time when no zone is given, as ``-t`` prints it) or a time of day
    on the day the capture started (``09:10:00[.ffffff]``). The trace start is
    ``meta["started_ns"]`` (else ``first_ts``, the first record's time, else 0);
    wall-clock times need ``meta["clock_offsets"]["realtime_ns"]``.
    Raises :class:`dr.errors.UsageError` for text that is none of these, or a
    wall-clock time on a trace without a realtime offset.
    """
    import datetime as _dt

    t = text.strip()
    start = meta.get("started_ns")
    if not isinstance(start, int):
        start = first_ts if isinstance(first_ts, int) else 0
    try:
        secs = float(t[:-1] if t.endswith("s") else t)
    except ValueError:
        secs = None
    if secs is not None:
        if secs != secs or abs(secs) > 1e10:  # NaN or beyond any trace
            raise UsageError(f"{option} {text!r}: seconds out of range")
        return start + int(round(secs * 1e9))
    clocks = meta.get("clock_offsets") or meta.get("clock") or {}
    off = clocks.get("realtime_ns") if isinstance(clocks, dict) else None
    try:
        if "T" in t or "-" in t[:5]:
            when = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
        else:
            tod = _dt.time.fromisoformat(t)
            if not isinstance(off, int):
                raise UsageError(f"{option} {text!r}: the trace has no realtime clock offset; "
                                 "give seconds from the trace start instead")
            day = _dt.datetime.fromtimestamp((start + off) / 1e9).date()
            when = _dt.datetime.combine(day, tod)
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected seconds from the trace start (2.5), "
                         "a wall-clock time (2026-11-30T09:10:00) or a time of day (09:10:00)"
                         ) from None
    if not isinstance(off, int):
        raise UsageError(f"{option} {text!r}: the trace has no realtime clock offset; "
                         "give seconds from the trace start instead")
    wall = when.timestamp()  # naive: local time, as -t prints
    return int(round(wall * 1e6)) * 1000 - off


def _shown(rec, opts: ShowOptions) -> bool:
    """Whether ``rec`` passes the -e/--tid/--since/--until filters."""
    if isinstance(rec, Event):
        if opts.tids is not None and rec.tid not in opts.tids:
            return False
        if opts.pids is not None and rec.tgid not in opts.pids:
            return False
        if opts.syscalls is not None and rec.nr not in opts.syscalls:
            return False
        if opts.status == "successful" and not is_successful(rec):
            return False
        if opts.status == "failed" and not is_failed(rec):
            return False
        ts = rec.ts_enter
    else:
        ts = rec.ts  # exits are shown whatever -e, -z, -Z say, as strace does
    if opts.since_ns is not None and ts < opts.since_ns:
        return False
    return opts.until_ns is None or ts <= opts.until_ns


def show_lines(reader: TraceReader, opts: ShowOptions) -> Iterator[str]:
    """strace-style lines for the reader's events, in capture order.

    Raises :class:`dr.errors.TraceError` when a frame further on is corrupt
    (lines before it have been yielded).
    """
    fmt = Formatter(opts, reader.meta)
    window = opts.since_ns is not None or opts.until_ns is not None
    if fmt.fdmap is None and not window:
        # Nothing to track across hidden calls: let the reader drop other syscalls
        # undecoded. Threads are filtered here: every thread still counts for the
        # `[pid N]` prefix, and a process event of a hidden thread for its state.
        for item in reader.stream(syscalls=opts.syscalls):
            if isinstance(item, Event):
                if _shown(item, opts):
                    yield fmt.line(item)
                else:
                    fmt.feed(item)
            elif isinstance(item, ProcEvent):
                s = fmt.proc_line(item)
                if s is not None:
                    yield s
            elif isinstance(item, ClockRead):
                s = fmt.clock_line(item)
                if s is not None:
                    yield s
        return
    # fds opened by hidden calls must still be known; signals before the window still kill.
    for item in reader.stream():
        if isinstance(item, Event):
            if _shown(item, opts):
                yield fmt.line(item)
            else:
                fmt.feed(item)
        elif isinstance(item, ProcEvent):
            if _shown(item, opts):
                s = fmt.proc_line(item)
                if s is not None:
                    yield s
            else:
                fmt.feed(item)
        elif isinstance(item, ClockRead) and _shown(item, opts):
            s = fmt.clock_line(item)
            if s is not None:
                yield s
        if opts.until_ns is not None and not isinstance(item, dict) and \
                getattr(item, "ts_enter", getattr(item, "ts", 0)) > opts.until_ns + 10**10:
            return  # well past the window (capture order is time order within a few ms)


def end_notices(reader: TraceReader) -> list[str]:
    """Lines for stderr after the listing: losses and a trace cut short."""
    out = []
    losses = {k: v for k, v in reader.losses.items() if v}
    cut = losses.pop("TRUNCATED", 0)  # bytes beyond the snaplen: kept short, not lost
    if cut:
        out.append(f"{plural(cut, 'payload')} longer than the snaplen "
                   f"{'was' if cut == 1 else 'were'} truncated")
    if losses:
        total = sum(losses.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(losses.items()))
        out.append(f"{total} lost during capture ({detail})")
    # Only payloads whose thread went on to another syscall lost their event.
    # A payload of a call still running when the capture stopped
    # (reader.unfinished_payloads) is the capture's boundary, not a loss.
    if reader.orphan_payloads:
        n = reader.orphan_payloads
        out.append(f"{plural(n, 'payload')} whose syscall "
                   f"{'event was' if n == 1 else 'events were'} lost")
    if reader.truncated:
        out.append(cut_short_text(reader))
    return out


def cut_short_text(reader: TraceReader) -> str:
    """Why a trace is incomplete, in words: a partial frame at the end, or no end record."""
    if reader.end < reader.size:
        return (f"trace cut short: its last {plural(reader.size - reader.end, 'byte')} are an "
                "incomplete frame; shown up to the last complete one")
    return ("trace cut short: it ends without the capture's closing record (dr capture was "
            "killed or ran out of space); everything it holds is shown")


def summary_lines(reader: TraceReader, opts: ShowOptions) -> list[str]:
    """strace ``-c``: calls, errors and time inside each syscall, as strace prints the table.

    Counts every syscall event the filters keep (-e, --tid, -p, -z/-Z, --since,
    --until), so without filters they are ``dr stats``' counts, including calls
    that never return (exit_group), which strace -c leaves out. ``seconds`` is
    the time between entry and exit (strace -c -w); sorted by it, then by name.
    Raises :class:`dr.errors.TraceError` for a corrupt frame.
    """
    calls: dict[int, list[int]] = {}  # nr -> [calls, errors, ns]
    for ev in reader.events(syscalls=opts.syscalls):
        if not _shown(ev, opts):
            continue
        row = calls.get(ev.nr)
        if row is None:
            row = calls[ev.nr] = [0, 0, 0]
        row[0] += 1
        if is_failed(ev):
            row[1] += 1
        if not ev.flags & (_NO_EXIT | _ENTRY_LOST) and ev.ts_enter and ev.ts_exit >= ev.ts_enter:
            row[2] += ev.ts_exit - ev.ts_enter
    total_ns = sum(r[2] for r in calls.values())
    rows = sorted(calls.items(), key=lambda kv: (-kv[1][2], -kv[1][0], schema.name_of(kv[0])))
    dash = "------ ----------- ----------- --------- --------- ----------------"
    out = ["% time     seconds  usecs/call     calls    errors syscall", dash]

    def line(pct: float, ns: int, n: int, errs: int, name: str) -> str:
        return (f"{pct:6.2f} {ns / 1e9:11.6f} {ns // 1000 // n if n else 0:11d} {n:9d} "
                f"{errs if errs else '':>9} {name}")

    for nr, (n, errs, ns) in rows:
        out.append(line(100.0 * ns / total_ns if total_ns else 0.0, ns, n, errs, schema.name_of(nr)))
    out.append(dash)
    out.append(line(100.0, total_ns, sum(r[0] for r in calls.values()),
                    sum(r[1] for r in calls.values()), "total"))
    return out
