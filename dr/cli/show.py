"""`dr show`: strace-style listing of a trace (library: dr.formats.strace)."""

from __future__ import annotations

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
                                        "'!' negates)."),
    tid: List[int] = typer.Option([], "--tid", metavar="TID", help="Only this thread (repeatable)."),
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
    readable.
    """
    import sys

    from dr.errors import ExitCode, UsageError
    from dr.formats.bundle import open_trace_or_bundle
    from dr.formats.strace import (ShowOptions, end_notices, parse_time_bound, parse_trace_expr,
                                   show_lines)

    syscalls = parse_trace_expr(expr) if expr else None
    out = sys.stdout
    with open_trace_or_bundle(trace, trace_name) as reader:
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
                           since_ns=lo, until_ns=hi)
        batch: list[str] = []
        try:
            for line in show_lines(reader, opts):
                batch.append(line)
                if len(batch) >= 512:
                    out.write("\n".join(batch) + "\n")
                    batch.clear()
        finally:
            if batch:  # what was decoded before a corrupt frame is still shown
                out.write("\n".join(batch) + "\n")
            out.flush()
        notices = end_notices(reader)
        for note in notices:
            sys.stderr.write(f"dr: {note}\n")
        if reader.truncated:
            raise typer.Exit(int(ExitCode.TRUNCATED))
