"""The command a streams replay starts, and the root it runs on.

From the trace's metadata: the argv as it was at exec (before the program rewrote
its command line), the executable, the environment, the root filesystem of a
process captured in a container; or another build given with ``--cmd``. When the
command cannot be rebuilt, one line says what is missing and suggests ``--cmd``.
"""

from __future__ import annotations

import os
import shlex
import stat

from dr.errors import ReplayError

__all__ = ["recorded_root", "recorded_command", "other_build", "inside_root", "which", "recorded_env"]


def recorded_root(meta: dict, rootfs: str = "/") -> str:
    """The root filesystem to run the program on.

    ``rootfs`` when given (not "/"). A process captured in a container (its root
    not the capture host's: metadata ``root``) runs on that root: the directory
    the capture host saw it at, or the live ``/proc/PID/root``, whichever is
    still the same directory (device and inode). Raises ReplayError asking for
    ``--rootfs`` when neither is.
    """
    r = meta.get("root")
    if rootfs != "/" and not os.path.isdir(rootfs):
        raise ReplayError(f"--rootfs {rootfs}: no such directory; give the root filesystem the program ran on")
    if rootfs != "/" or not isinstance(r, dict) or r.get("same", True):
        return rootfs
    for cand in (str(r.get("path") or ""), f"/proc/{meta.get('pid')}/root"):
        if not cand or cand == "/":
            continue
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (r.get("dev"), r.get("ino")):
            return cand
    raise ReplayError(f"the recorded process ran in another root filesystem (a container; "
                      f"{r.get('path')!r} on the capture host), which is not here; give it with --rootfs DIR")


def inside_root(meta: dict, path: str) -> str:
    """A path the capture host read through /proc (cwd) as the process saw it in its root."""
    r = meta.get("root")
    base = str(r.get("path") or "/") if isinstance(r, dict) and not r.get("same", True) else "/"
    if base != "/" and (path == base or path.startswith(base.rstrip("/") + "/")):
        return path[len(base.rstrip("/")):] or "/"
    return path


def recorded_command(meta: dict, cmd: str | list[str] | None = None, root: str = "/") -> list[str]:
    """The argv to start: the command line the process was started with, or ``cmd``.

    The recorded command is the metadata's ``exec`` argv (capture/cmdline.py:
    read from the process's initial stack, as it was at exec), else ``argv``
    (what /proc showed). ``cmd``: a shell-quoted string or a list. One word
    naming an existing file replaces the recorded executable and keeps the
    recorded arguments; several words are the whole command line.

    Raises ReplayError naming what is missing and suggesting ``--cmd`` when the
    command cannot be rebuilt (the program rewrote its command line and the
    original arguments are gone, or its executable does not exist here).
    """
    shown = [str(a) for a in (meta.get("argv") or [])]
    ex: dict = meta["exec"] if isinstance(meta.get("exec"), dict) else {}
    at_exec = ex.get("argv") if isinstance(ex.get("argv"), list) and ex.get("argv") else None
    argv = [str(a) for a in at_exec] if at_exec else shown
    if cmd:
        words = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
        if len(words) == 1 and os.path.isfile(words[0]) and argv and not (ex.get("rewritten") and not at_exec):
            return [words[0], *argv[1:]]
        return words
    if not argv:
        raise ReplayError("the trace records no command line (argv); give the command with --cmd")
    if ex.get("rewritten") and not at_exec:
        lost = ", ".join(str(i) for i in ex.get("lost") or []) or "all"
        raise ReplayError(f"the recorded process rewrote its command line (/proc showed "
                          f"{shlex.join(shown)!r}) and argument(s) {lost} of the command it was started "
                          "with are gone from its memory; give the command with --cmd")
    exe = (meta.get("exe") or {}).get("path") if isinstance(meta.get("exe"), dict) else meta.get("exe")
    execfn = ex.get("execfn")
    exe = inside_root(meta, str(exe)) if exe else exe

    def isfile(p: str) -> bool:  # inside the root the program runs on
        return os.path.isfile(os.path.join(root, p.lstrip("/"))) if root != "/" else os.path.isfile(p)

    found = isfile(argv[0]) if "/" in argv[0] else (bool(which(argv[0])) if root == "/" else True)
    if not found:
        # The name it was run by (a multi-call binary's symlink) before the resolved executable.
        for alt in (execfn, exe):
            if alt and os.path.isabs(str(alt)) and isfile(str(alt)):
                argv[0] = str(alt)
                found = True
                break
    if not found:
        what = "its executable " + (f"{exe} " if exe else "") + f"(run as {argv[0]!r})"
        raise ReplayError(f"cannot rebuild the recorded command: {what} does not exist on this "
                          "host; give the command with --cmd")
    return argv


def other_build(meta: dict, argv: list[str]) -> bool:
    """Whether ``argv`` runs other code than the recording: another executable
    (sha256 of the file, or its build-id, against ``meta["exe"]``) or other
    arguments, unless each differing argument names a file with the same bytes
    as the recorded one. ``--cmd`` naming the recorded binary is not another build.
    """
    import hashlib

    def digest(path: str) -> str | None:
        # Paths come from the trace: a regular file only, opened without blocking and
        # read to its size at open (a fifo blocked, /dev/zero was hashed forever).
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except (OSError, ValueError):
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            h, left = hashlib.sha256(), st.st_size
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                h.update(chunk)
                left -= len(chunk)
            return h.hexdigest()
        except OSError:
            return None
        finally:
            os.close(fd)

    if not argv:
        return True
    exe: dict = meta["exe"] if isinstance(meta.get("exe"), dict) else {}
    path = argv[0] if "/" in argv[0] else (which(argv[0]) or argv[0])
    want = exe.get("sha256")
    if want:
        if digest(path) != want:
            return True
    else:
        from dr.formats.elf import build_id
        try:
            if not exe.get("build_id") or build_id(path) != exe.get("build_id"):
                return True
        except OSError:
            return True
    recorded = [str(a) for a in (meta.get("argv") or [])]
    if len(recorded) != len(argv):
        return True
    cwd = str(meta.get("cwd") or "")
    for old, new in zip(recorded[1:], argv[1:]):
        if old != new:
            a, b = digest(os.path.join(cwd, old)), digest(new)
            if a is None or a != b:
                return True
    return False


def which(name: str) -> str | None:
    import shutil
    return shutil.which(name)


def recorded_env(meta: dict) -> dict[str, str]:
    env = meta.get("env")
    if isinstance(env, dict) and env:
        return {str(k): str(v) for k, v in env.items()}
    if isinstance(env, list) and env:
        out = {}
        for kv in env:
            k, _, v = str(kv).partition("=")
            out[k] = v
        return out
    return dict(os.environ)

