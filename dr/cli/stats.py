"""`dr stats` and `dr export pcap|perfetto|jsonl`: thin commands over dr.formats.

The work is in :mod:`dr.formats.stats`, :mod:`dr.formats.export_pcap`,
:mod:`dr.formats.export_perfetto` and :mod:`dr.formats.export_jsonl`; these
commands parse flags, open the trace, write the output and print one summary
line on stderr. A trace cut short is still reported or exported (everything up
to its last complete frame) and the command then exits with
ExitCode.TRUNCATED.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Optional

import typer

from dr.cli import app
from dr.cli.progress import reading
from dr.errors import ExitCode, OutputError

STATS_EPILOG = """\
Examples:

\b
  dr stats incident.drt                  # tables: syscalls, bytes per fd, connections, threads
  dr stats incident.drt --json | jq .connections
  dr stats incident.drt --top 10
  dr stats incident.drb                  # a bundle: verified, then its first trace
"""

EXPORT_EPILOG = """\
Examples:

\b
  dr export pcap incident.drt -o incident.pcap      # open in Wireshark; tshark -qz follow,tcp,raw,0
  dr export perfetto incident.drt -o timeline.json  # open in ui.perfetto.dev
  dr export jsonl incident.drt | jq 'select(.type=="syscall") | .name'
  dr export pcap incident.drb -o incident.pcap      # a bundle's first trace (--trace NAME: another)
"""

PCAP_EPILOG = """\
Examples:

\b
  dr export pcap incident.drt -o incident.pcap
  tshark -r incident.pcap -qz conv,tcp                      # who talked to whom, bytes each way
  dr export pcap incident.drt -o - | tshark -r - -qz io,stat,0  # through a pipe
  tshark -r incident.pcap -qz follow,tcp,ascii,0            # the first TCP stream as text
  dr export pcap incident.drb --trace worker.drt -o w.pcap  # one trace of a bundle
"""

PERFETTO_EPILOG = """\
Examples:

\b
  dr export perfetto incident.drt -o timeline.json   # then open it in ui.perfetto.dev
  dr export perfetto incident.drb -o timeline.json   # a bundle's first trace
  dr export perfetto run.drt -o - | jq '.traceEvents | length'
"""

JSONL_EPILOG = """\
Examples:

\b
  dr export jsonl incident.drt -o incident.jsonl
  dr export jsonl incident.drt --no-payloads | jq -c 'select(.type=="syscall") | [.tid, .name, .ret]'
  dr export jsonl incident.drb --trace worker.drt | head
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

_TRACE = typer.Argument(..., metavar="TRACE", help="A dr trace (.drt) or bundle (.drb).",
                        show_default=False)
_TRACE_NAME = typer.Option(None, "--trace", metavar="NAME",
                           help="With a bundle: which trace (default: its first; "
                                "dr bundle info lists them).")


def _open(trace: Path, name: str | None = None):
    """A TraceReader context on a trace or on a (verified, extracted) bundle's trace."""
    from dr.formats.bundle import open_trace_or_bundle
    return open_trace_or_bundle(trace, name)


def _bar(label: str, trace: Path, output: Path | None):
    """A progress bar, unless the export itself is drawn on the terminal (-o -)."""
    from contextlib import nullcontext
    if (output is None or str(output) == "-") and sys.stdout.isatty():
        return nullcontext()
    return reading(label, trace)


def _cut_short(reader) -> None:
    """Tell the user the trace was cut short, and exit TRUNCATED."""
    typer.echo(f"dr: trace {reader.path} was cut short {reader.cut_where()}; "
               "the output covers everything up to there", err=True)
    raise typer.Exit(int(ExitCode.TRUNCATED))


#: -o names for the command's own standard output.
_STDOUT_NAMES = frozenset({"-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})


@contextmanager
def _output(path: Path | None, inputs: tuple[Path, ...] = (), *,
            binary: bool = False) -> Iterator[IO | str | None]:
    """Where an exporter writes ``path`` (rules: :mod:`dr.formats.output`).

    ``path`` None or "-": stdout (text exporters). Binary exporters, which
    open the file themselves, get a path (a temporary file next to the
    target, or the target itself for a character device or fifo; for "-"
    or /dev/stdout on a pipe, /dev/stdout).
    """
    from dr.formats.output import open_output, output_path

    if binary:
        if path is None:
            raise OutputError("this export writes a binary file; give it a file name with -o")
        if str(path) in _STDOUT_NAMES:
            # /dev/stdout on a pipe resolves to "/proc/N/fd/pipe:[...]", which
            # output_path cannot stat: a pipe or device is written in place by
            # its /dev/stdout name; a regular file by output_path's rules.
            import os
            import stat
            mode = os.fstat(sys.stdout.fileno()).st_mode
            if sys.stdout.isatty():
                raise OutputError("this export writes a binary file; not to a terminal: "
                                  "give it a file name with -o, or a pipe")
            if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
                sys.stdout.flush()
                yield "/dev/stdout"
                return
            path = Path("/dev/stdout")
        with output_path(path, inputs) as p:
            yield p
        return
    with open_output(path, inputs) as f:
        yield f


@app.command("stats", epilog=STATS_EPILOG)
def stats_cmd(
    trace: Path = _TRACE,
    trace_name: Optional[str] = _TRACE_NAME,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."),
    top: int = typer.Option(20, "--top", min=0, help="Rows per table; the rest is counted "
                                                      "(0: all rows; --json always has all)."),
) -> None:
    """Counts, errors by errno and latency per syscall; bytes per fd and connection; threads; losses."""
    import json

    from dr.cli.progress import reading
    from dr.formats.stats import compute
    from dr.formats.stats_render import render

    with _open(trace, trace_name) as r:
        with reading("dr stats: reading", trace):
            st = compute(r)
        if json_out:
            json.dump(st.as_dict(), sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
        else:
            render(st, sys.stdout, top=top)
        if r.truncated:
            _cut_short(r)


@export_app.command("pcap", epilog=PCAP_EPILOG,
                    short_help="Socket payloads as a pcap (Wireshark, tshark).")
def export_pcap_cmd(
    trace: Path = _TRACE,
    trace_name: Optional[str] = _TRACE_NAME,
    output: Path = typer.Option(..., "-o", "--output", help="pcap file to write (- or /dev/stdout: standard output, a pipe).",
                                show_default=False),
) -> None:
    """Socket payloads as TCP/UDP packets between the recorded endpoints (Wireshark, tshark)."""
    from dr.formats.export_pcap import export_pcap
    from dr.formats.stats import plural

    with _open(trace, trace_name) as r:
        with _output(output, (trace,), binary=True) as tmp:
            with reading("dr export pcap: reading", trace):
                res = export_pcap(r, tmp)  # type: ignore[arg-type]
        tcp = sum(1 for s in res.streams if s.proto == "TCP")
        udp = sum(1 for s in res.streams if s.proto == "UDP")
        typer.echo(f"wrote {output}: {plural(res.packets, 'packet')}, {plural(tcp, 'TCP stream')}, "
                   f"{plural(udp, 'UDP flow')}", err=True)
        for note in res.notes:
            typer.echo(f"note: {note}", err=True)
        if r.truncated:
            _cut_short(r)


@export_app.command("perfetto", epilog=PERFETTO_EPILOG,
                    short_help="Per-thread syscall timeline (ui.perfetto.dev).")
def export_perfetto_cmd(
    trace: Path = _TRACE,
    trace_name: Optional[str] = _TRACE_NAME,
    output: Path = typer.Option(..., "-o", "--output", help="JSON file to write.", show_default=False),
) -> None:
    """A timeline per thread, each syscall a slice (Chrome JSON trace events; ui.perfetto.dev)."""
    from dr.formats.export_perfetto import export_perfetto
    from dr.formats.stats import plural

    with _open(trace, trace_name) as r:
        with _output(output, (trace,)) as f:
            with _bar("dr export perfetto: reading", trace, output):
                res = export_perfetto(r, f)  # type: ignore[arg-type]
        typer.echo(f"wrote {output}: {plural(res.slices, 'syscall slice')} and "
                   f"{plural(res.instants, 'process event')} on "
                   f"{plural(res.threads, 'thread')} of {plural(res.processes, 'process', 'processes')}",
                   err=True)
        if r.truncated:
            _cut_short(r)


@export_app.command("jsonl", epilog=JSONL_EPILOG,
                    short_help="One JSON object per record (docs/jsonl.md).")
def export_jsonl_cmd(
    trace: Path = _TRACE,
    trace_name: Optional[str] = _TRACE_NAME,
    output: Path = typer.Option(None, "-o", "--output", help="File to write (default: stdout).",
                                show_default=False),
    no_payloads: bool = typer.Option(False, "--no-payloads", help="Leave payload bytes out."),
) -> None:
    """One JSON object per record, payloads base64 (fields: docs/jsonl.md)."""
    from dr.formats.export_jsonl import export_jsonl
    from dr.formats.stats import plural

    with _open(trace, trace_name) as r:
        with _output(output, (trace,)) as f:
            with _bar("dr export jsonl: reading", trace, output):
                res = export_jsonl(r, f, payloads=not no_payloads)  # type: ignore[arg-type]
        if output is not None and str(output) != "-":
            typer.echo(f"wrote {output}: {plural(res.lines, 'line')} "
                       f"({plural(res.by_type.get('syscall', 0), 'syscall')})", err=True)
        if r.truncated:
            _cut_short(r)
