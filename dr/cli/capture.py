"""`dr capture`: record a process's syscalls and payloads (library: dr.capture.session)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from dr.cli import app

if TYPE_CHECKING:   # rich loads only when the status line shows
    from rich.text import Text

CAPTURE_EPILOG = """\
Examples:

\b
  dr capture --pid 1234 -o incident.drt            # attach to a running process (all threads)
  dr capture --pid 1234 -o i.drt --duration 30     # ... for 30 seconds
  dr capture --tid 1240 -o one-thread.drt          # one thread only
  dr capture -o run.drt -- python3 app.py --port 8080   # run a command from its first syscall
  dr capture -o big.drt --snaplen 1M --max-size 2G --pid 1234
  dr capture --redact --pid 1234 -o i.drt          # mask secrets and personal data before writing
  dr capture --redact-rules ours.toml --pid 1234   # ... with rules of our own added

\b
Exit status: 0 when nothing was lost, 3 when events or payloads were lost
(counted in the trace), the command's own status in spawn mode.
"""

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'256K' -> 262144. Suffixes K, M, G, T (powers of 1024), optional 'B' / 'iB'."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    num = t[: len(t) - len(unit)] if unit else t
    try:
        value = float(num) * _UNITS[unit]
    except ValueError:
        raise typer.BadParameter(f"not a size: {text!r} (examples: 4096, 256K, 64M, 2G)") from None
    if value < 0:
        raise typer.BadParameter(f"a size cannot be negative: {text!r}")
    return int(value)


@app.command(
    epilog=CAPTURE_EPILOG,
    context_settings={"allow_interspersed_args": False},
)
def capture(
    command: Optional[List[str]] = typer.Argument(None, metavar="[-- CMD ARGS...]",
                                                  help="Command to run and record from its first syscall.",
                                                  show_default=False),
    pid: Optional[int] = typer.Option(None, "--pid", "-p", help="Attach to this process (all its threads); records until "
                                           "Ctrl-C, --duration or its exit."),
    tid: Optional[int] = typer.Option(None, "--tid", help="Attach to this one thread."),
    output: Path = typer.Option(Path("capture.drt"), "-o", "--output", help="Trace file to write."),
    snaplen: str = typer.Option("256K", "--snaplen",
                                help="Bytes kept per buffer; longer payloads are truncated "
                                     "and marked with their true length."),
    duration: Optional[float] = typer.Option(None, "--duration", min=0, help="Stop after SECONDS."),
    max_size: Optional[str] = typer.Option(None, "--max-size", help="Stop when the trace reaches BYTES."),
    no_follow: bool = typer.Option(False, "--no-follow", help="Only the named process (all its threads): not its existing descendants, nor children made by fork/clone."),
    ringbuf_size: str = typer.Option("64M", "--ringbuf-size", help="BPF ring buffer size (a power of two)."),
    no_clock_probes: bool = typer.Option(False, "--no-clock-probes",
                                         help="Attach mode: no uprobes on the target's libc clock_gettime "
                                              "and Go time.now (each read then costs no breakpoint; "
                                              "streams replay approximates the time it read)."),
    first_image_only: bool = typer.Option(False, "--first-image-only",
                                          help="Spawn mode: prepare only the command's own image and do not "
                                               "ptrace its tree; time that programs it execs read through "
                                               "the vDSO is then not recorded, and the capture ends with "
                                               "the command's first process."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No status line and no summary."),
    verify: bool = typer.Option(False, "--verify",
                                help="After a spawn-mode capture, replay it at once and say "
                                     "whether the replay was faithful."),
    redact: bool = typer.Option(False, "--redact",
                                help="Mask emails, card numbers, Authorization headers, cookies, "
                                     "JWTs, keys in payloads and metadata before anything reaches disk "
                                     "(same-length masks, spans recorded)."),
    redact_rules: Optional[Path] = typer.Option(None, "--redact-rules", metavar="RULES",
                                                help="TOML redaction rules added to the built-in "
                                                     "ones (implies --redact)."),
    ebpf: bool = typer.Option(False, "--ebpf", hidden=True, help="Print the BPF program and exit."),
) -> None:
    """Record every syscall, with arguments, results, times and payloads, of a process.

    Stops on Ctrl-C or SIGTERM, --duration, --max-size, or when the target
    exits; the trace is complete (and readable by `dr show`) in every case.
    """
    import signal
    import sys

    from dr.errors import ExitCode, UsageError

    if ebpf:
        from dr.capture.probes import program_text

        sys.stdout.write(program_text())
        return
    opts_cmd = tuple(command) if command else None
    if sum(x is not None for x in (pid, tid, opts_cmd)) != 1:
        raise UsageError("give exactly one target: --pid PID, --tid TID, or -- CMD ARGS...")
    if verify and not opts_cmd:
        raise UsageError("--verify needs spawn mode: dr capture --verify -o t.drt -- CMD ARGS...")

    for target, what in ((pid, "--pid"), (tid, "--tid")):
        if target is not None and kernel_thread(target):
            raise UsageError(f"{what} {target} is a kernel thread ({_comm(target)}): it makes no "
                             "syscalls of its own to record; give a user-space process")

    from dr.capture.session import CaptureOptions, CaptureSession, Status

    if duration is not None and duration <= 0:
        raise typer.BadParameter("must be more than 0 seconds", param_hint="--duration")
    if max_size is not None and parse_size(max_size) <= 0:
        raise typer.BadParameter("must be more than 0 bytes", param_hint="--max-size")
    rb = parse_size(ringbuf_size)
    if rb < 4096 or rb & (rb - 1) or rb > 1 << 30:
        # The kernel wants a power-of-two multiple of the page size for a BPF
        # ring buffer; past 1 GiB the memory is locked for nothing useful.
        raise typer.BadParameter(f"{ringbuf_size!r} is not a power of two between 4K and 1G",
                                 param_hint="--ringbuf-size")
    from dr.formats.output import check_output
    # The trace is written in place as it grows (a capture cut short stays readable),
    # so only refuse what must never be written: a directory, socket, block device.
    # Nor a file the command reads: `-o run.sh -- sh run.sh` truncated the script
    # before the command started (the executable itself only failed with ETXTBSY).
    kind, target_path = check_output(output, _command_files(opts_cmd, pid if pid is not None else tid), "trace")
    if kind == "inplace" and _is_fifo(target_path):
        # Opening a fifo no one reads blocked dr forever (SIGTERM and Ctrl-C wait for the
        # open), and with a reader the capture never ended: the trace is read back at its end.
        from dr.errors import OutputError
        raise OutputError(f"cannot write trace {output}: it is a fifo; dr capture writes a file it can "
                          "read back (give a file, then dr show FILE)")
    opts = CaptureOptions(output=str(output), pid=pid, tid=tid, command=opts_cmd,
                          snaplen=parse_size(snaplen), duration=duration,
                          max_size=parse_size(max_size) if max_size else None,
                          follow=not no_follow, ringbuf_size=parse_size(ringbuf_size),
                          redact=redact or redact_rules is not None,
                          redact_rules=str(redact_rules) if redact_rules else None,
                          ptrace_tree=not first_image_only, clock_probes=not no_clock_probes)
    session = CaptureSession(opts)

    stop_signal: list[int] = []

    def on_signal(signum, _frame):
        stop_signal.append(signum)

    old_term = signal.signal(signal.SIGTERM, on_signal)
    old_int = signal.signal(signal.SIGINT, on_signal)
    try:
        # Compiling the probes takes seconds (tens on a loaded host): say so first.
        session.start(loading=None if quiet else
                      lambda: typer.echo("dr capture: loading probes...", err=True))
        if not quiet:
            # Loading the probes takes seconds: say when recording really begins.
            what = f"pid {pid}" if pid else (f"tid {tid}" if tid else "the command")
            if pid:
                what += (f" ({session.attached_procs} process(es), {session.attached_threads} thread(s)"
                         + ("; new children followed)" if not no_follow else "; children not followed)"))
            typer.echo(f"dr capture: recording {what} into {output} (Ctrl-C to stop)", err=True)
        live = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            live = Live(console=Console(stderr=True), refresh_per_second=4, transient=True)
            live.start()
        try:
            while True:
                r = session.step()
                if live is not None:
                    live.update(_status_line(r))
                if stop_signal:
                    status = Status.STOPPED
                    break
                if r.status is not Status.RUNNING:
                    status = r.status
                    break
        finally:
            if live is not None:
                live.stop()
        summary = session.stop(status)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)

    if not quiet:
        _print_summary(summary, str(output), pid)
    if opts_cmd and session.child is not None and not summary.error:
        # --duration / --max-size end the capture, not the command.
        typer.echo(f"dr: the command (pid {session.child}) keeps running untraced; "
                   "dr exits without waiting for it", err=True)
    if summary.outlived:
        # dr.capture.spawn: the rest of the tree is followed while busy, then runs on untraced.
        pids = ", ".join(map(str, summary.outlived[:10])) + (" ..." if len(summary.outlived) > 10 else "")
        typer.echo(f"dr: {len(summary.outlived)} process(es) of the command's tree outlived it "
                   f"(pid {pids}) and keep running untraced: what they do from now on is not in the "
                   "trace, so its replay will say \"incomplete\"; to record more of them, capture "
                   "with --duration SECONDS (the tree is then followed until that time)", err=True)
    if summary.error:
        typer.echo(f"dr: {summary.error}; the trace keeps everything up to its last complete frame",
                   err=True)
        raise typer.Exit(int(ExitCode.ERROR))
    code = int(ExitCode.OK)
    if summary.lost:
        typer.echo(f"dr: {summary.lost} events or payloads were lost (see the loss records)", err=True)
        for line in summary.advice():
            typer.echo(f"dr: {line}", err=True)
        code = int(ExitCode.LOSS)
    for why in summary.incomplete:
        if not why.endswith("were lost"):
            typer.echo(f"dr: the trace is incomplete: {why}", err=True)
            code = int(ExitCode.LOSS)
    if verify:
        code = _verify(str(output)) or code
    if opts_cmd and summary.exit_status:
        # Spawn mode exits with the command's status (a command that succeeded while
        # events were lost still exits with LOSS). A status can be one of dr's own codes
        # (3 is LOSS too), and exit 134 alone reads as dr itself aborting, so the line
        # says whose it is, -q or not.
        st = summary.exit_status
        if verify:
            how = f"ended with status {st}" if st > 0 else f"was killed by {_signame(-st)}"
            typer.echo(f"dr: the command {how}; dr exits with the verify result", err=True)
        elif st > 0:
            code = st
            typer.echo(f"dr: the command ended with status {st}; dr exits with {code}, the command's", err=True)
        else:
            code = 128 - st
            typer.echo(f"dr: the command was killed by {_signame(-st)}; dr exits {code} as a shell would "
                       "(the capture itself ended normally)", err=True)
    raise typer.Exit(code)


def _signame(sig: int) -> str:
    import signal

    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _status_line(r) -> Text:
    from rich.text import Text

    return Text(f"dr capture: {r.events:,} syscalls  {_human(r.payload_bytes)} payload  "
                f"{_human(r.trace_bytes)} trace  {r.lost:,} lost  {r.elapsed:6.1f} s",
                style="bold red" if r.lost else "")


def _size_note(s) -> str:
    """What the trace's size is made of: the compression of the recorded events, and
    the bytes of files the programs mapped or executed that capture stored beside them
    (those can make a short run's trace larger than its events)."""
    files = s.files or {}
    stored, stored_bytes = int(files.get("stored") or 0), int(files.get("stored_bytes") or 0)
    if stored:
        return (f" (events {_human(s.raw_bytes)} before compression, and the bytes of {stored} mapped "
                f"or executed file(s), {_human(stored_bytes)})")
    if s.raw_bytes and s.compression_ratio >= 1:
        return f" ({s.compression_ratio:.1f}x smaller than the {_human(s.raw_bytes)} recorded)"
    return ""


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _print_summary(s, output: str, pid: int | None = None) -> None:
    """The capture's numbers on stderr: rich on a terminal, plain unwrapped lines otherwise."""
    import sys

    from rich.console import Console
    from rich.table import Table

    tty = sys.stderr.isatty()
    # Not a terminal (a log file, CI): one record per line, never wrapped mid-line.
    con = Console(stderr=True, highlight=False, soft_wrap=not tty, no_color=not tty)
    dur = s.duration_ns / 1e9
    con.print(f"dr capture: {s.stop_reason} after {dur:.2f} s; wrote {output}")
    if s.attached:
        con.print(f"  attached to {s.attached['processes']} process(es), {s.attached['threads']} thread(s) "
                  f"at start; process events during the capture (fork, exec, exit): {s.proc_events:,}")
    con.print(f"  syscalls {s.events:,} ({s.events / dur if dur else 0:,.0f}/s), "
              f"process events {s.proc_events:,} (fork, exec, exit, signals), "
              f"payload {_human(s.payload_bytes)}, trace {_human(s.trace_bytes)}"
              + _size_note(s))
    if s.redaction is not None:
        found = {k: v for k, v in s.redaction.get("matches", {}).items() if v}
        con.print("  redacted: " + (", ".join(f"{k} {v:,}" for k, v in found.items())
                                    if found else "nothing matched"))
    lost = {k: v for k, v in s.losses.items() if v}
    con.print("  lost: " + (", ".join(f"{k} {v:,}" for k, v in lost.items()) if lost else "nothing"))
    if s.ring_fill_at_loss:
        f = s.ring_fill_at_loss
        con.print(f"  the ring buffer refused records while holding {_human(f['min'])}"
                  f"..{_human(f['max'])} of its {_human(f['ring_bytes'])}")
    if s.exit_status is not None:
        con.print(f"  command exit status {s.exit_status}")
    if pid is not None and s.events == 0:
        con.print(idle_hint(pid, dur))
    if s.syscalls:
        t = Table(show_header=True, header_style="bold" if tty else "", box=None, pad_edge=False)
        t.add_column("syscall")
        t.add_column("count", justify="right")
        for name, n in list(s.syscalls.items())[:15]:
            t.add_row(name, f"{n:,}")
        if len(s.syscalls) > 15:
            t.add_row(f"... {len(s.syscalls) - 15} more (dr stats)", "")
        con.print(t)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of the process's children (proc(5): /proc/PID/task/TID/children)."""
    kids: list[tuple[int, str]] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for c in f.read().split():
                    try:
                        with open(f"/proc/{c}/comm") as g:
                            kids.append((int(c), g.read().strip()))
                    except OSError:
                        kids.append((int(c), "?"))
        except OSError:
            pass
    return kids


def idle_hint(pid: int, seconds: float) -> str:
    """What to tell a user whose --pid made no syscalls: a wrapper that only waits."""
    kids = _children(pid)
    text = f"  process {pid} made no syscalls in these {seconds:.1f} s"
    if not kids:
        return text + " (it was idle, or blocked in one call the whole time)"
    names = ", ".join(f"{c} ({n})" for c, n in kids[:8]) + (f" and {len(kids) - 8} more"
                                                            if len(kids) > 8 else "")
    return (text + f"; it may be a wrapper waiting for its children: {names}. "
            f"Capture one of them: dr capture --pid {kids[0][0]}")


def kernel_thread(pid: int) -> bool:
    """Whether ``pid`` is a kernel thread (PF_KTHREAD in /proc/PID/stat's flags, proc(5))."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return bool(int(fields[6]) & 0x00200000)  # field 9: flags; include/linux/sched.h
    except (OSError, IndexError, ValueError):
        return False


def _verify(path: str) -> int:
    """Replay the trace just written (dr.replay.verify) and say whether it was faithful."""
    from dr.errors import ExitCode

    try:
        from dr.replay import verify
    except ImportError:
        typer.echo("dr: --verify needs dr replay, which is not installed", err=True)
        return int(ExitCode.ERROR)
    res = verify(path)
    if res.ok:
        typer.echo("dr: verify: the replay was faithful", err=True)
        return 0
    divs = getattr(res.report, "divergences", None) or []
    why = (res.message or "").strip() or (divs[0].message.strip() if divs else "") or \
        f"it ended {res.status}; dr replay {path} prints the full report"
    typer.echo(f"dr: verify: the replay was NOT faithful: {why}", err=True)
    return int(res.exit_code)


def _command_files(command: tuple[str, ...] | None, target: int | None) -> list[str]:
    """Regular files the capture's target reads that -o must not replace: the command's
    executable (found as execvp would) and each argument naming an existing regular
    file (also after a ``--flag=`` prefix), or the attached process's executable."""
    import os
    import shutil
    import stat

    if command is None:
        return [f"/proc/{target}/exe"] if target is not None else []
    words = [shutil.which(command[0]) or command[0], *command[1:]]
    words += [w.partition("=")[2] for w in command[1:] if "=" in w]
    out = []
    for w in words:
        try:
            if w and "\0" not in w and stat.S_ISREG(os.stat(w).st_mode):
                out.append(w)
        except (OSError, ValueError):
            pass
    return out


def _is_fifo(path: str) -> bool:
    import os
    import stat

    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False
