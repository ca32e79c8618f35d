"""Every user-named output file of dr goes through here (``-o``, ``--report``).

dr runs as root, so an output path must never replace what it names with a
new regular file unless what it names is a regular file (issue #15):

- a regular file (or a new name) is written atomically: a temporary file in
  the same directory, renamed over the target at the end, removed on failure;
  an existing file keeps its permission bits;
- a character device or a fifo (``-o /dev/null``, ``-o >(gzip)``) is written
  in place, never replaced;
- a symlink is followed: its target is written by the rules above, the link
  stays a link; a dangling symlink is refused;
- a directory, a socket or a block device is refused;
- an output that is one of the command's inputs (same st_dev and st_ino, so
  hard links and symlinks count too) is refused;
- ``-`` is stdout where the caller allows it.

Each refusal is an :class:`dr.errors.OutputError`: one line, exit 1.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from contextlib import contextmanager
from typing import IO, Iterable, Iterator

from dr.errors import OutputError

__all__ = ["output_path", "open_output", "check_output"]

STDOUT = "-"


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_output(path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = (),
                 what: str = "output") -> tuple[str, str]:
    """Decide how ``path`` is written: ``(kind, target)``.

    ``kind`` is "atomic" (a regular file or a new name: write a temporary file,
    rename it over ``target``) or "inplace" (a character device or fifo: open
    ``target`` and write). ``target`` is ``path`` with symlinks resolved.
    Raises OutputError for a directory, socket, block device, dangling
    symlink, missing directory, or an output equal to one of ``inputs``.
    """
    name = os.fspath(path)
    if not name or "\0" in name:
        raise OutputError(f"cannot write {what} {name!r}: not a usable file name")
    target = os.path.realpath(name) if os.path.islink(name) else os.path.abspath(name)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"cannot write {what} {name}: {e.strerror}") from None
    if st is None and os.path.islink(name):
        # A /proc/N/fd link (-o /dev/stdout on a pipe) names its pipe "pipe:[ino]", which
        # realpath cannot follow but open() can: a pipe or device is written in place.
        try:
            lst = os.stat(name)
        except OSError:
            lst = None
        if lst is not None and (stat.S_ISFIFO(lst.st_mode) or stat.S_ISCHR(lst.st_mode)):
            return "inplace", name
    if st is None:
        if os.path.islink(name):
            raise OutputError(f"cannot write {what} {name}: it is a symlink to {target}, which does not exist")
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            raise OutputError(f"cannot write {what} {name}: directory {parent} does not exist")
        return "atomic", target
    for i in inputs:
        try:
            ist = os.stat(i)
        except OSError:
            continue
        if _same_file(st, ist):
            raise OutputError(f"cannot write {what} {name}: it is the input {os.fspath(i)}; "
                              "give another output path")
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return "atomic", target
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "inplace", target
    kind = ("a directory" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a block device" if stat.S_ISBLK(mode) else "not a regular file")
    raise OutputError(f"cannot write {what} {name}: it is {kind}; give a file name")


@contextmanager
def output_path(path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = (),
                what: str = "output") -> Iterator[str]:
    """The path a writer should write to, for ``path`` (see the module doc).

    For a regular file it is a temporary file next to the target, renamed over
    it when the block ends without an exception (and removed otherwise); for a
    character device or fifo it is the target itself.
    """
    kind, target = check_output(path, inputs, what)
    if kind == "inplace":
        yield target
        return
    parent, base = os.path.split(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=parent)
    except OSError as e:
        raise OutputError(f"cannot write {what} {os.fspath(path)}: {e.strerror}; choose another path") from None
    os.close(fd)
    ok = False
    try:
        yield tmp
        try:
            try:
                os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
            except FileNotFoundError:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
            # The target may have turned into something else while we wrote: check again.
            if check_output(path, inputs, what) != ("atomic", target):
                raise OutputError(f"cannot write {what} {os.fspath(path)}: it changed while dr wrote it")
            os.replace(tmp, target)
        except OSError as e:
            raise OutputError(f"cannot write {what} {os.fspath(path)}: {e.strerror or e}") from None
        ok = True
    finally:
        if not ok:
            try:
                os.unlink(tmp)
            except OSError:
                pass


class _Guarded:
    """A file object whose write errors (a full disk, ``/dev/full``, EIO) are an
    OutputError naming the output: one line, never a traceback. A broken pipe
    stays BrokenPipeError (the CLI treats a reader that went away as success)."""

    def __init__(self, f: IO, name: str) -> None:
        self._f, self._name = f, name

    def _fail(self, e: OSError) -> OutputError:
        return OutputError(f"cannot write {self._name}: {e.strerror or e}")

    def write(self, data):  # type: ignore[no-untyped-def]
        try:
            return self._f.write(data)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise self._fail(e) from None

    def writelines(self, lines):  # type: ignore[no-untyped-def]
        for ln in lines:
            self.write(ln)

    def flush(self) -> None:
        try:
            self._f.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise self._fail(e) from None

    def __getattr__(self, attr: str):  # type: ignore[no-untyped-def]
        return getattr(self._f, attr)


@contextmanager
def open_output(path: str | os.PathLike[str] | None, inputs: Iterable[str | os.PathLike[str]] = (),
                what: str = "output", *, binary: bool = False, stdout_ok: bool = True) -> Iterator[IO]:
    """A file object on ``path`` written by :func:`output_path`'s rules; ``-``/None: stdout."""
    if path is None or os.fspath(path) == STDOUT:
        if not stdout_ok:
            raise OutputError(f"cannot write {what} to stdout; give a file name")
        out = _Guarded(sys.stdout.buffer if binary else sys.stdout, f"{what} to standard output")
        yield out  # type: ignore[misc]
        out.flush()
        return
    with output_path(path, inputs, what) as p:
        try:
            f: IO = open(p, "wb") if binary else open(p, "w", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"cannot write {what} {os.fspath(path)}: {e.strerror}") from None
        g = _Guarded(f, f"{what} {os.fspath(path)}")
        try:
            yield g  # type: ignore[misc]
            g.flush()
        finally:
            try:
                f.close()
            except OSError:
                pass  # the flush above said it; after an error the buffer is lost anyway
