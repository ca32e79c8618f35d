"""A progress bar for long reads of a trace, on a terminal only.

Commands that read a whole trace (show -o, show -c, stats, export, bundle
create, replay) wrap their work in :func:`reading`. The bar measures how far
this process has read the trace file: a thread looks at the file offsets of
the process's own open descriptors (``/proc/self/fdinfo``, proc(5)) a few
times a second, so no library has to report its progress and the bar never
slows the read itself. Nothing is drawn when stderr is not a terminal, when
TERM is ``dumb``, or for work done within half a second (the bar is transient
and appears only after that).
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["reading", "enabled"]

#: Files whose read position stands for the command's progress.
_SUFFIXES = (".drt", ".drb")
_DELAY_S = 0.5
_POLL_S = 0.2


def enabled() -> bool:
    """Whether a bar may be drawn: stderr is a terminal that can redraw a line."""
    try:
        return sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


def _positions(paths: set[str]) -> tuple[int, int, str] | None:
    """(read offset, size, name) of the biggest trace file this process has open for reading."""
    best = None
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if not (target in paths or target.endswith(_SUFFIXES)):
                continue
            with open(f"/proc/self/fdinfo/{fd}") as f:
                info = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
            if int(info.get("flags", "0").strip(), 8) & 3:  # written, not read: not our input
                continue
            pos = int(info.get("pos", "0"))
            size = os.stat(f"/proc/self/fd/{fd}").st_size
        except (OSError, ValueError):
            continue
        if size and (best is None or size > best[1]):
            best = (min(pos, size), size, os.path.basename(target))
    return best


@contextmanager
def reading(label: str, *paths: str | os.PathLike) -> Iterator[None]:
    """Show ``label`` with a bar of bytes read from the trace while the block runs."""
    if not enabled():
        yield
        return
    stop = threading.Event()
    wanted = {os.path.realpath(p) for p in paths}

    def run() -> None:
        if stop.wait(_DELAY_S):
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                       TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                       console=Console(file=sys.stderr), transient=True,
                       redirect_stdout=False, redirect_stderr=False)
        task = bar.add_task(label, total=None)
        with bar:
            while not stop.is_set():
                got = _positions(wanted)
                if got is not None:
                    pos, size, name = got
                    bar.update(task, completed=pos, total=size, description=f"{label} {name}")
                stop.wait(_POLL_S)

    th = threading.Thread(target=run, name="dr-progress", daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join(timeout=2)
