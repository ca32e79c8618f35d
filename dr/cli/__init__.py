"""The ``dr`` command: a thin typer layer over the library.

Each command lives in its own module under :mod:`dr.cli` and imports the
library it drives lazily, inside the command function, so ``dr --help`` and
``dr show`` stay fast and never import BCC. Errors are :class:`dr.errors.DrError`
values: :func:`main` prints their one line and exits with their code.
"""

from __future__ import annotations

import errno
import functools
import os
import sys

import typer

from dr import __version__
from dr.errors import DrError, ExitCode

EPILOG = """\
Examples:

\b
  dr capture --pid 1234 -o incident.drt        # attach to a running service
  dr capture -o run.drt -- python3 app.py      # record a command from its first syscall
  dr show incident.drt -e trace=read,write     # strace-style listing
  dr replay run.drt                            # replay in an isolated sandbox
  dr bundle create incident.drt -o incident.drb
  dr stats incident.drt
  dr export pcap incident.drt -o incident.pcap  # also: perfetto, jsonl
"""

app = typer.Typer(
    name="dr",
    help="Capture what a Linux process does at the syscall boundary with eBPF, and replay it deterministically.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dr {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """dr: eBPF capture and deterministic replay."""


# Command modules register themselves on `app`; they import only typer at
# module level. Order here is the order in --help.
from dr.cli import show as _show  # noqa: E402,F401
from dr.cli import capture as _capture  # noqa: E402,F401
from dr.cli import replay as _replay  # noqa: E402,F401
from dr.cli import bundle as _bundle  # noqa: E402,F401
from dr.cli import stats as _stats  # noqa: E402,F401

#: The one line each command shows in `dr --help` (click would cut the first
#: sentence of the docstring at ~45 characters). A command module may set its
#: own short_help; this table fills in the ones that do not.
SHORT_HELP = {
    "show": "List a trace's syscalls, strace style.",
    "capture": "Record a process's syscalls and payloads (eBPF) into a trace.",
    "replay": "Replay a trace deterministically in a sandbox.",
    "stats": "Syscall counts, latencies, bytes per fd and connection, threads.",
    "bundle": "Create, verify and describe incident bundles (.drb).",
    "export": "Export a trace as pcap, Perfetto timeline or JSON lines.",
}
for _info in app.registered_commands:
    _name = _info.name or (_info.callback.__name__ if _info.callback else "")
    if _info.short_help is None and _name in SHORT_HELP:
        _info.short_help = SHORT_HELP[_name]
for _group in app.registered_groups:  # typer.Typer settings default to a placeholder, not None
    if not isinstance(_group.short_help, str) and _group.name in SHORT_HELP:
        _group.short_help = SHORT_HELP[_group.name]


def _reader_gone_is_success(callback):
    """Wrap a command so that a reader of stdout going away ends it with exit 0.

    click (inside typer) turns a broken pipe into exit 1 with no message, so
    `dr stats t.drt | head -1` failed where `dr show` succeeded: every command
    gets the same rule here instead of each catching it (docs/security.md).
    Standard output is flushed before the command returns, so a broken pipe
    met by the last buffered lines is seen here too, not at the interpreter's exit.
    """

    @functools.wraps(callback)
    def run(*args, **kwargs):
        try:
            try:
                rv = callback(*args, **kwargs)
            finally:
                sys.stdout.flush()
        except BrokenPipeError:
            raise reader_gone() from None
        return rv

    return run


def _wrap_commands(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.callback is not None and not hasattr(info.callback, "__wrapped__"):
            info.callback = _reader_gone_is_success(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _wrap_commands(group.typer_instance)


_wrap_commands(app)


def fail(message: str, code: int = ExitCode.ERROR) -> "typer.Exit":
    """Print ``dr: message`` on stderr and return the Exit to raise."""
    typer.echo(f"dr: {message}", err=True)
    return typer.Exit(int(code))


def reader_gone() -> "typer.Exit":
    """The reader of stdout went away (``dr show t.drt | head -1``): not an error.

    click turns a broken pipe into exit status 1, so commands that write to
    stdout catch BrokenPipeError and raise what this returns: exit 0, with
    stdout pointed at /dev/null so the interpreter's final flush stays quiet.
    """
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass
    return typer.Exit(0)


#: errnos of a failed write to an output (not of reading an input).
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS})


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning DrError into one line + exit code."""
    try:
        app(args=argv, prog_name="dr", standalone_mode=True)
    except DrError as err:
        sys.stderr.write(f"dr: {err.message}\n")
        sys.exit(int(err.exit_code))
    except KeyboardInterrupt:
        sys.stderr.write("dr: interrupted\n")
        sys.exit(int(ExitCode.INTERRUPTED))
    except BrokenPipeError:
        # `dr show trace | head`: the reader went away; that is not an error.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        sys.exit(0)
    except OSError as e:
        # Standard output on a full disk or /dev/full (stats and bundle info print straight
        # to it): one line. Any other OSError is a bug and keeps its traceback.
        if e.errno not in _WRITE_ERRNOS:
            raise
        sys.stderr.write(f"dr: cannot write output: {e.strerror}\n")
        reader_gone()  # stdout onto /dev/null, so the interpreter's final flush stays quiet
        sys.exit(int(ExitCode.ERROR))
