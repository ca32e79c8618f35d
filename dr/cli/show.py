"""`dr show`: strace-style listing of a trace (library: dr.formats.strace)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from dr.cli import app

SHOW_EPILOG = """\
Examples:

\b
  dr show run.drt                        # every syscall, strace style
  dr show run.drt -e trace=read,write -s 200
  dr show run.drt --tid 4243 -tt         # one thread, wall-clock times in microseconds
  dr show run.drt -r -x                  # relative times, binary strings in hex
  dr show run.drt -yy                    # fds with paths and socket addresses
  dr show run.drt --since 1.5 --until 2  # seconds from the trace start
  dr show run.drt --since 2026-11-30T09:10:00 -tt   # wall-clock window (local time)
  dr show incident.drb --trace worker.drt            # a bundle's trace (default: its first)
  dr show run.drt -e trace=%network -yy -T           # strace's classes; time inside each call
  dr show run.drt -Z -p 4242                         # failed calls of one process
  dr show run.drt -c                                 # strace -c's table (counts as dr stats)
  dr show run.drt -o run.txt                         # to a file (no colour)
  dr show run.drt --index | grep '^#412 '            # the call a divergence names: syscall #412
"""


@app.command(epilog=SHOW_EPILOG)
def show(
    trace: Path = typer.Argument(..., metavar="TRACE", help="Trace (.drt) or bundle (.drb) to list.",
                                show_default=False),
    trace_name: Optional[str] = typer.Option(None, "--trace", metavar="NAME",
                                             help="With a bundle: the trace to list (default: "
                                                  "its first; dr bundle info lists them)."),
    expr: List[str] = typer.Option([], "-e", "--expr", metavar="trace=NAME,...",
                                   help="Only these syscalls (strace -e trace=read,write; "
                                        "'!' negates; classes %file %network %process %signal "
                                        "%ipc %desc %memory %creds %clock)."),
    tid: List[int] = typer.Option([], "--tid", metavar="TID", help="Only this thread (repeatable)."),
    pid: List[int] = typer.Option([], "-p", "--pid", metavar="PID",
                                  help="Only the threads of this process (repeatable)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="FILE",
                                          help="Write the listing to FILE (strace -o)."),
    summary: bool = typer.Option(False, "-c", "--summary-only",
                                 help="A table of calls, errors and time per syscall instead "
                                      "of the listing (strace -c; counts as dr stats)."),
    syscall_times: bool = typer.Option(False, "-T", "--syscall-times",
                                       help="Time spent inside each call, <seconds> (strace -T)."),
    successful: bool = typer.Option(False, "-z", "--successful-only",
                                    help="Only calls that returned without an error (strace -z)."),
    failed: bool = typer.Option(False, "-Z", "--failed-only",
                                help="Only calls that returned an error (strace -Z)."),
    index: bool = typer.Option(False, "--index",
                               help="Start each syscall with its number in the trace, #N "
                                    "(from 0: dr replay's 'syscall #N of the trace')."),
    strsize: int = typer.Option(32, "-s", "--string-limit", min=0, metavar="N",
                                help="Bytes of each data buffer to show before '...' "
                                     "(paths are shown whole, as strace does)."),
    xflag: int = typer.Option(0, "-x", count=True, show_default=False,
                              help="Non-printable strings in hex (-xx: every string)."),
    abstime: int = typer.Option(0, "-t", count=True, show_default=False,
                                help="Wall-clock time of day (-tt: with microseconds, -ttt: epoch)."),
    relative: bool = typer.Option(False, "-r", help="Time since the previous syscall."),
    decode_fds: int = typer.Option(0, "-y", count=True, show_default=False,
                                   help="fds with their paths (-yy: and socket addresses)."),
    since: Optional[str] = typer.Option(None, "--since", metavar="WHEN",
                                        help="Only events from WHEN: seconds from the trace "
                                             "start (1.5) or a wall-clock time "
                                             "(2026-11-30T09:10:00, 09:10:00)."),
    until: Optional[str] = typer.Option(None, "--until", metavar="WHEN",
                                        help="Only events up to WHEN (as --since)."),
    acolumn: int = typer.Option(40, "-a", "--columns", min=0, metavar="COLUMN",
                                help="Align ' = result' at this column (0: no padding)."),
) -> None:
    """Print a trace's syscalls as strace does: write(1, "hello\\n", 6) = 6.

    TRACE may be a bundle: it is verified and its first trace (or --trace
    NAME) is listed. Losses and a trace cut short are reported on stderr at
    the end; a trace cut short exits with status 6 after printing what was
    readable. On a terminal, errors are red, signals yellow and process
    events bold (none with -o, through a pipe, or with NO_COLOR set).
    """
    import os
    import sys

    from dr.cli.progress import reading
    from dr.errors import ExitCode, UsageError
    from dr.formats.bundle import open_trace_or_bundle
    from dr.formats.strace import (ShowOptions, end_notices, parse_time_bound, parse_trace_expr,
                                   show_lines, summary_lines)

    if successful and failed:
        raise UsageError("-z shows only successful calls and -Z only failed ones: give one")
    syscalls = parse_trace_expr(expr) if expr else None
    with open_trace_or_bundle(trace, trace_name) as reader, _listing(output, trace) as out:
        color = out.isatty() and not os.environ.get("NO_COLOR") and \
            os.environ.get("TERM", "") != "dumb"
        first = None
        if (since or until) and not isinstance(reader.meta.get("started_ns"), int):
            first = next((getattr(r, "ts_enter", getattr(r, "ts", None)) for r in reader.stream()
                          if not isinstance(r, dict)), None)  # a trace without its start time
        lo = parse_time_bound(since, reader.meta, "--since", first) if since is not None else None
        hi = parse_time_bound(until, reader.meta, "--until", first) if until is not None else None
        if lo is not None and hi is not None and hi < lo:
            raise UsageError(f"--until {until} is before --since {since}")
        opts = ShowOptions(strsize=strsize, xflag=min(xflag, 2), timestamps=min(abstime, 3),
                           relative=relative, tids=frozenset(tid) if tid else None,
                           syscalls=syscalls, decode_fds=min(decode_fds, 2), acolumn=acolumn,
                           since_ns=lo, until_ns=hi, pids=frozenset(pid) if pid else None,
                           status="successful" if successful else "failed" if failed else None,
                           syscall_times=syscall_times, color=color, index=index)
        # A bar only while the listing is not drawn on the same terminal.
        bar = reading("dr show: reading", trace) if summary or not out.isatty() else _nothing()
        try:
            if summary:
                with bar:  # the table is printed once the bar is gone
                    table = summary_lines(reader, opts)
                out.write("\n".join(table) + "\n")
                out.flush()
            else:
                with bar:
                    shown = _write_lines(out, show_lines(reader, opts))
                given = _filters_given(pid=pid, tid=tid, expr=expr, since=since, until=until,
                                       successful=successful, failed=failed)
                if shown == 0 and given:
                    # An empty listing is otherwise indistinguishable from a mistyped filter.
                    sys.stderr.write(f"dr show: no syscall matched {given}; `dr stats` lists the "
                                     "trace's processes, threads and time span\n")
        except BrokenPipeError:
            from dr.cli import reader_gone
            raise reader_gone() from None
        if output is not None:
            sys.stderr.write(f"dr show: wrote {output}\n")
        notices = end_notices(reader)
        for note in notices:
            sys.stderr.write(f"dr: {note}\n")
        if reader.truncated:
            raise typer.Exit(int(ExitCode.TRUNCATED))


def _filters_given(**given) -> str:
    """The filters of the command line, as typed (e.g. "-p 4242 --since 1.5"), or ""."""
    flag = {"pid": "-p", "tid": "--tid", "expr": "-e", "since": "--since", "until": "--until",
            "successful": "-z", "failed": "-Z"}
    out = []
    for name, v in given.items():
        if v in (None, False, [], ""):
            continue
        if v is True:
            out.append(flag[name])
        else:
            out.extend(f"{flag[name]} {x}" for x in (v if isinstance(v, list) else [v]))
    return " ".join(out)


def _write_lines(out, lines) -> int:
    """Write the listing in batches; the number of lines written."""
    batch: list[str] = []
    n = 0
    try:
        for line in lines:
            n += 1
            batch.append(line)
            if len(batch) >= 512:
                out.write("\n".join(batch) + "\n")
                batch.clear()
    finally:
        if batch:  # what was decoded before a corrupt frame is still shown
            out.write("\n".join(batch) + "\n")
        out.flush()
    return n


@contextmanager
def _nothing():
    yield


def _listing(path: Optional[Path], trace: Path):
    """Where the listing goes: stdout, or ``-o FILE`` (strace -o), written by
    the rules every dr output follows (:mod:`dr.formats.output`): atomically,
    never over a device, a symlink or the trace itself."""
    from dr.formats.output import open_output

    return open_output(path, (trace,), "listing")
