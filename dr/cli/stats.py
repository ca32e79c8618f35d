"""`dr stats` and `dr export pcap|perfetto|jsonl`: thin commands over dr.formats.

The work is in :mod:`dr.formats.stats`, :mod:`dr.formats.export_pcap`,
:mod:`dr.formats.export_perfetto` and :mod:`dr.formats.export_jsonl`; these
commands parse flags, open the trace, write the output and print one summary
line on stderr. A trace cut short is still reported or exported (everything up
to its last complete frame) and the command then exits with
ExitCode.TRUNCATED.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

import typer

from dr.cli import app
from dr.errors import ExitCode, OutputError

STATS_EPILOG = """\
Examples:

\b
  dr stats incident.drt                  # tables: syscalls, bytes per fd, connections, threads
  dr stats incident.drt --json | jq .connections
  dr stats incident.drt --top 10
"""

EXPORT_EPILOG = """\
Examples:

\b
  dr export pcap incident.drt -o incident.pcap      # open in Wireshark; tshark -qz follow,tcp,raw,0
  dr export perfetto incident.drt -o timeline.json  # open in ui.perfetto.dev
  dr export jsonl incident.drt | jq 'select(.type=="syscall") | .name'
"""

export_app = typer.Typer(
    name="export",
    help="Export a trace for other tools: pcap (Wireshark), perfetto (timeline), jsonl.",
    epilog=EXPORT_EPILOG,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(export_app, name="export")

_TRACE = typer.Argument(..., metavar="TRACE", help="A dr trace (.drt).", show_default=False)


def _open(trace: Path):
    from dr.formats.trace import TraceReader
    return TraceReader(trace)


def _cut_short(reader) -> None:
    """Tell the user the trace was cut short, and exit TRUNCATED."""
    typer.echo(f"dr: trace {reader.path} was cut short (no summary record); "
               "the output covers everything up to its last complete frame", err=True)
    raise typer.Exit(int(ExitCode.TRUNCATED))


@contextmanager
def _output(path: Path | None, *, binary: bool = False) -> Iterator[TextIO | str | None]:
    """A file to write, made atomically: written next to ``path`` and renamed at the end.

    ``path`` None or "-": stdout (text only). Binary outputs yield the temporary path.
    """
    if path is None or str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = os.fspath(path)
    tmp = f"{target}.part"
    try:
        f = open(tmp, "w", encoding="utf-8")
        if binary:  # the exporter writes the file itself; this only checks that it can
            f.close()
            f = None
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror}; choose another -o path") from None
    ok = False
    try:
        yield tmp if binary else f
        ok = True
    finally:
        try:
            if f is not None:
                f.close()
            if ok:
                os.replace(tmp, target)
        except OSError as e:
            ok = False
            raise OutputError(f"cannot write {target}: {e.strerror}") from None
        finally:
            if not ok:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


@app.command("stats", epilog=STATS_EPILOG)
def stats_cmd(
    trace: Path = _TRACE,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."),
    top: int = typer.Option(0, "--top", min=0, help="Show only the first N rows of each table (0: all)."),
) -> None:
    """Counts, errors by errno and latency per syscall; bytes per fd and connection; threads; losses."""
    import json

    from dr.formats.stats import compute, render

    with _open(trace) as r:
        st = compute(r)
        if json_out:
            json.dump(st.as_dict(), sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
        else:
            render(st, sys.stdout, top=top)
        if r.truncated:
            _cut_short(r)


@export_app.command("pcap")
def export_pcap_cmd(
    trace: Path = _TRACE,
    output: Path = typer.Option(..., "-o", "--output", help="pcap file to write.", show_default=False),
) -> None:
    """Socket payloads as TCP/UDP packets between the recorded endpoints (Wireshark, tshark)."""
    from dr.formats.export_pcap import export_pcap

    with _open(trace) as r:
        with _output(output, binary=True) as tmp:
            res = export_pcap(r, tmp)  # type: ignore[arg-type]
        tcp = sum(1 for s in res.streams if s.proto == "TCP")
        udp = sum(1 for s in res.streams if s.proto == "UDP")
        typer.echo(f"wrote {output}: {res.packets} packets, {tcp} TCP stream(s), {udp} UDP flow(s)", err=True)
        for note in res.notes:
            typer.echo(f"note: {note}", err=True)
        if r.truncated:
            _cut_short(r)


@export_app.command("perfetto")
def export_perfetto_cmd(
    trace: Path = _TRACE,
    output: Path = typer.Option(..., "-o", "--output", help="JSON file to write.", show_default=False),
) -> None:
    """A timeline per thread, each syscall a slice (Chrome JSON trace events; ui.perfetto.dev)."""
    from dr.formats.export_perfetto import export_perfetto

    with _open(trace) as r:
        with _output(output) as f:
            res = export_perfetto(r, f)  # type: ignore[arg-type]
        typer.echo(f"wrote {output}: {res.slices} syscall slices on {res.threads} thread(s) "
                   f"of {res.processes} process(es)", err=True)
        if r.truncated:
            _cut_short(r)


@export_app.command("jsonl")
def export_jsonl_cmd(
    trace: Path = _TRACE,
    output: Path = typer.Option(None, "-o", "--output", help="File to write (default: stdout).",
                                show_default=False),
    no_payloads: bool = typer.Option(False, "--no-payloads", help="Leave payload bytes out."),
) -> None:
    """One JSON object per record, payloads base64 (fields: docs/jsonl.md)."""
    from dr.formats.export_jsonl import export_jsonl

    with _open(trace) as r:
        with _output(output) as f:
            res = export_jsonl(r, f, payloads=not no_payloads)  # type: ignore[arg-type]
        if output is not None and str(output) != "-":
            typer.echo(f"wrote {output}: {res.lines} lines ({res.by_type.get('syscall', 0)} syscalls)",
                       err=True)
        if r.truncated:
            _cut_short(r)
