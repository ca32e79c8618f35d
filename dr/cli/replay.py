"""`dr replay`: replay a trace or bundle in an isolated sandbox (library: :mod:`dr.replay`).

Spawn-mode traces get the strict replay (:mod:`dr.replay.strict`); attach-mode
traces (``dr capture --pid``) the streams replay (:mod:`dr.replay.streams`);
a bundle is verified and opened first.
"""

from __future__ import annotations

from typing import List, Optional

import typer

from dr.cli import app

REPLAY_EPILOG = """\
Examples:

\b
  dr replay run.drt                         # strict replay, exit 0 when faithful
  dr replay run.drt --show-output           # print the tracee's stdout/stderr as it replays
  dr replay run.drt --report replay.json    # counts, substituted bytes, divergences
  dr replay run.drt --rootfs /srv/oldroot   # another root filesystem (read-only)
  dr replay incident.drt --cmd ./new-build  # attach-mode trace against another build
  dr replay incident.drt --ignore noise.toml --report r.json   # expected noise: Date, ids
  dr replay incident.drb                    # a bundle, checked against this host's binaries
  dr replay incident.drb --trace worker.drt # another trace of the bundle (default: its first)

Exit status: 0 faithful (attach mode: every response identical and every
dependency request matched), 7 incomplete (what was compared matched, but not
every output could be: snaplen, a cut-short trace, losses; the message says
what), 4 diverged or a response differs, 1 error.
"""


@app.command("replay", epilog=REPLAY_EPILOG)
def replay_cmd(
    trace: str = typer.Argument(..., metavar="TRACE", help="Trace (.drt) or bundle (.drb) recorded with dr capture."),
    command: Optional[List[str]] = typer.Argument(None, metavar="[-- CMD ARGS...]", help="Command to run instead of the recorded one (after --)."),
    trace_name: Optional[str] = typer.Option(None, "--trace", metavar="NAME",
                                             help="With a bundle: which trace (default: its first; "
                                                  "dr bundle info lists them)."),
    rootfs: str = typer.Option("/", "--rootfs", metavar="DIR", help="Root filesystem of the sandbox (mounted read-only)."),
    show_output: bool = typer.Option(False, "--show-output", help="Print the tracee's stdout and stderr."),
    report: Optional[str] = typer.Option(None, "--report", metavar="FILE.json", help="Write a JSON report to this file."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Record payload divergences and go on."),
    stall_timeout: float = typer.Option(10.0, "--stall-timeout", metavar="SECONDS", help="Seconds without progress before giving up."),
    cmd: Optional[str] = typer.Option(None, "--cmd", metavar="CMD", help="Attach-mode traces: run this build instead. One word naming a file replaces the recorded executable and keeps the recorded arguments; several words (shell-quoted) are the whole command line. The command after -- follows the same rule."),
    ignore: Optional[str] = typer.Option(None, "--ignore", metavar="FILE.toml", help="Attach-mode traces: TOML file of expected noise."),
    strict_binaries: bool = typer.Option(False, "--strict-binaries",
                                         help="Bundles: refuse when this host's binaries differ."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail in the report."),
    memory_limit: Optional[str] = typer.Option(None, "--memory-limit", metavar="SIZE",
                                               help="Memory the replayed program may use (64M, 2G; default: "
                                                    "min(4G, half of RAM)); tmpfs writes count."),
    no_memory_limit: bool = typer.Option(False, "--no-memory-limit",
                                         help="DANGEROUS: no cgroup (no memory or task limit); the program may exhaust the host."),
) -> None:
    """Replay a trace or bundle in an isolated sandbox: no network, recorded time and ids.

    A trace recorded from a command's start (dr capture -- CMD) replays syscall by
    syscall (strict): every input comes from the trace, every output is compared,
    and the first departure is reported as a divergence.

    A trace recorded with dr capture --pid (attach mode) started mid-flight, so dr
    starts the recorded command (or another build: --cmd, or after --) fresh in the
    sandbox, plays back the recorded dependencies (matched by order and content),
    re-sends every recorded inbound connection's requests in recorded order, and
    compares each response with the recorded one; time and getrandom come from the
    recording. Details: docs/streams.md.
    """
    import os
    import sys

    from dr.errors import DrError, UsageError

    limit = _memory_limit(memory_limit, no_memory_limit)
    if not os.path.exists(trace):
        raise DrError(f"cannot read trace {trace}: No such file or directory")
    if report and report != "-":
        from dr.formats.output import check_output
        check_output(report, (trace,), "the report")  # refused before anything runs
    bundle = None
    from dr.formats.bundle import is_bundle
    from dr.formats.bundle_read import pick_trace, refuse_trace_name
    if is_bundle(trace):
        from dr.formats.bundle import check_binaries, open_bundle
        entries = None
        bundle = open_bundle(trace)
        try:
            entries = bundle.manifest["traces"]
            chosen = pick_trace(trace, entries, trace_name)  # show/stats/export's --trace rule
            for w in check_binaries(bundle, strict=strict_binaries):
                sys.stderr.write(f"dr: warning: {w}\n")
        except BaseException:
            bundle.close()
            raise
        if trace_name is None and len(entries) > 1:
            # show/stats/export read the first trace too; a replay runs a program,
            # so it says which one.
            names = ", ".join(t["member"][7:] for t in entries)
            sys.stderr.write(f"dr replay: the bundle holds {len(entries)} traces ({names}); replaying "
                             f"{chosen['member'][7:]} (--trace NAME: another)\n")
        trace = str(bundle.dir / chosen["member"])
    else:
        refuse_trace_name(trace, trace_name)
    try:
        from dr.replay.streams import attach_mode, cli_streams
    except ImportError:  # streams replay not installed
        attach_mode = None  # type: ignore[assignment]
    try:
        if attach_mode is not None and attach_mode(trace):
            if command and cmd:
                raise UsageError("give the other build either with --cmd or after --, not both")
            code = cli_streams(trace, cmd=list(command) if command else cmd, ignore=ignore, report=report,
                               show_output=show_output, verbose=verbose, rootfs=rootfs, memory_limit=limit)
            raise typer.Exit(int(code))
        if cmd or ignore:
            raise UsageError("--cmd and --ignore are for traces recorded with --pid (streams replay); "
                             "for a spawn-mode trace give the command after --")
        _strict(trace, rootfs, command, show_output, keep_going, report, stall_timeout, limit)
    finally:
        if bundle is not None:
            bundle.close()


def _strict(trace: str, rootfs: str, command: Optional[List[str]], show_output: bool,
            keep_going: bool, report: Optional[str], stall_timeout: float, memory_limit: int | None) -> None:
    import sys

    from dr.replay import replay_trace

    from contextlib import nullcontext

    from dr.cli.progress import reading

    # The tracee's own output (--show-output) owns the terminal: no bar then.
    with nullcontext() if show_output else reading("dr replay: reading", trace):
        res = replay_trace(trace, rootfs=rootfs, command=tuple(command) if command else None,
                           show_output=show_output, keep_going=keep_going, report_path=report,
                           stall_timeout=stall_timeout, memory_limit=memory_limit)
    rep = res.report
    for note in rep.notes:
        sys.stderr.write(f"dr replay: note: {note}\n")
    for d in rep.divergences:
        sys.stderr.write(d.text() + "\n")
    # One numbering: the trace's syscalls, as dr capture, dr show -c and dr stats
    # count them. Strict replay answers most from the trace; memory management,
    # futex and signal masks run natively (passthrough), so they are named apart.
    recorded = _recorded_syscalls(trace)
    native = recorded - rep.events_total if recorded is not None and recorded >= rep.events_total else 0
    natively = f"; {native:,} run natively: memory, futex, signal masks" if native else ""
    total = f"{recorded:,}" if recorded is not None else f"{rep.events_total:,}"
    if res.ok:
        sys.stderr.write(f"dr replay: faithful: {total} recorded syscalls, {rep.events_replayed:,} "
                         f"answered from the trace{natively} ({rep.wall_s:.2f} s)\n")
    elif res.status == "incomplete":
        sys.stderr.write(f"dr replay: incomplete: every compared output matched ({total} recorded "
                         f"syscalls, {rep.events_replayed:,} answered from the trace), but not everything "
                         "was compared: " + "; ".join(rep.not_compared) + "\n")
    elif res.status == "interrupted":
        sys.stderr.write(f"dr replay: {res.message} after {rep.events_replayed:,} of {rep.events_total:,} "
                         "syscalls; the tracee was killed" + (f", report in {report}" if report else "") + "\n")
    elif res.status == "error":
        sys.stderr.write(f"dr: {res.message}\n")
    else:
        sys.stderr.write(f"dr replay: diverged after {rep.events_replayed:,} of the {rep.events_total:,} "
                         f"syscalls answered from the trace ({total} recorded{natively})\n")
    raise typer.Exit(int(res.exit_code))


def _memory_limit(size: Optional[str], unbounded: bool) -> int | None:
    """SandboxSpec.memory_limit from the flags: bytes, 0 (the default) or None (no cgroup)."""
    import sys

    from dr.errors import UsageError

    if unbounded:
        if size is not None:
            raise UsageError("give either --memory-limit or --no-memory-limit, not both")
        sys.stderr.write("dr: warning: --no-memory-limit: the replayed program runs without a cgroup "
                         "and may exhaust this host's memory and pids\n")
        return None
    if size is None:
        return 0
    from dr.cli.capture import parse_size
    value = parse_size(size)
    if value <= 0:  # 0 would mean "the default" to the sandbox
        raise UsageError(f"--memory-limit {size}: give a size such as 256M or 2G")
    return value


def _recorded_syscalls(trace: str) -> int | None:
    """The trace's syscall count from its closing record (None when cut short or unreadable)."""
    try:
        from dr.formats.trace import TraceReader
        with TraceReader(trace) as r:
            n = (r.summary or {}).get("events")
        return n if isinstance(n, int) and n >= 0 else None
    except Exception:  # noqa: BLE001 - a count for a message; replay already read the trace
        return None
