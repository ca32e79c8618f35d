"""What a sandbox runs (:class:`SandboxSpec`), checked before anything runs (:func:`check_spec`).

Everything in a spec may come from an untrusted trace or bundle (hostname,
argv, env, exe, cwd, uid/gid, pid): :func:`check_spec` refuses an invalid
value in one line before the sandbox forks. :func:`id_maps` says how the
sandbox's ids map to the host's (docs/security.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dr.errors import ReplayError
from dr.replay.cgroup import MAX_LIMIT, MAX_TASKS, MIN_LIMIT, MIN_TASKS, format_size

__all__ = ["SandboxSpec", "check_spec", "id_maps", "HOST_ID_BASE", "ID_COUNT", "PRIVATE_DIRS", "private_dir_of"]

#: Host ids the sandbox's ids 0..ID_COUNT-1 map to when dr runs as root: an
#: unprivileged range no host account uses (above the 100000.. blocks of
#: /etc/subuid and below 2^31), so uid 0 inside owns no host file and a host
#: file owned by root is "other" to it. See docs/security.md.
HOST_ID_BASE = 2_000_000_000

#: Directories that are always a private, empty tmpfs inside the sandbox: no
#: host socket, lock or scratch (another replay's included) is reachable there.
PRIVATE_DIRS = ("tmp", "run", "var/tmp", "var/run", "dev/shm")


def private_dir_of(rel: str) -> str | None:
    """The PRIVATE_DIRS entry that holds ``rel`` (a path relative to the root), if any."""
    return next((d for d in PRIVATE_DIRS if rel == d or rel.startswith(d + "/")), None)


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What to run and how.

    ``argv``/``env`` are given to execve as they are (``exe`` defaults to
    argv[0]); ``cwd`` is used when it exists inside the root, else ``/``;
    ``uid``/``gid`` are the ids inside the user namespace (mapped to the
    supervisor's own); ``first_pid`` the pid the tracee gets inside its pid
    namespace (None: whatever comes); ``stdio`` "null" (fds 0-2 on /dev/null)
    or "inherit"; ``passthrough`` the syscall numbers the filter allows;
    ``expose`` absolute paths of regular files (the executable) bound
    read-only at the same path inside, even below a private directory such as
    /tmp (``exe`` is always exposed); ``memory_limit`` the bytes the whole
    sandbox tree may use (its memory cgroup's hard limit, :mod:`dr.replay.cgroup`):
    0 for the default, None for no cgroup at all (``--no-memory-limit``);
    ``max_tasks`` the tasks (processes and threads) the tree may hold, the same
    cgroup's ``pids.max``: 0 for the default (:func:`dr.replay.cgroup.default_tasks`).
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    exe: str | None = None
    cwd: str = "/"
    root: str = "/"
    hostname: str = "dr-replay"
    uid: int = 0
    gid: int = 0
    first_pid: int | None = None
    stdio: str = "null"
    passthrough: frozenset[int] = field(default_factory=frozenset)
    expose: tuple[str, ...] = ()
    memory_limit: int | None = 0
    max_tasks: int = 0


#: Limits on what a trace supplies to execve (linux/binfmts.h MAX_ARG_STRLEN; ARG_MAX of 2 MiB).
MAX_ARG_STRLEN = 32 * 4096
MAX_ARGS_TOTAL = 2 * 1024 * 1024
#: Ids inside the sandbox: 0..ID_COUNT-1, mapped to host ids HOST_ID_BASE.. (see :func:`id_maps`).
ID_COUNT = 65536


def id_maps(spec_uid: int, spec_gid: int) -> tuple[str, str]:
    """The uid_map and gid_map lines of the sandbox's user namespace (user_namespaces(7)).

    As root: ids 0..ID_COUNT-1 inside are HOST_ID_BASE.. outside, so nothing in
    the sandbox is host root for file access, and services may setuid/setgid to
    www-data or nobody inside. Unprivileged, a process may map only its own ids:
    the recorded uid/gid inside is the caller's outside (who is not root).
    """
    if os.geteuid() == 0:
        return f"0 {HOST_ID_BASE} {ID_COUNT}\n", f"0 {HOST_ID_BASE} {ID_COUNT}\n"
    return f"{spec_uid} {os.geteuid()} 1\n", f"{spec_gid} {os.getegid()} 1\n"


def _bad(what: str, value: object) -> ReplayError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ReplayError(f"refusing to replay: the trace's {what} {shown} is not valid; nothing was run")


def _clean_str(what: str, value: object, *, limit: int = MAX_ARG_STRLEN, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _bad(what, value)
    if "\0" in value or (not value and not empty):
        raise _bad(what, value)
    try:
        n = len(value.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        raise _bad(what, value) from None
    if n > limit:
        raise _bad(what, value)
    return value


def check_spec(spec: SandboxSpec) -> None:
    """Validate everything of ``spec`` a trace or bundle may have supplied, before anything runs.

    Hostname: 1..64 bytes (HOST_NAME_MAX), printable, no '/'. argv: at least
    one string, each without NUL and under MAX_ARG_STRLEN, all under ARG_MAX.
    env: names without '=' or NUL. exe, cwd: absolute, without NUL. root: an
    existing directory. uid, gid: inside the mapped range. first_pid: 2..2^22.
    memory_limit: None, 0 (the default) or MIN_LIMIT..MAX_LIMIT bytes; max_tasks: 0 or
    MIN_TASKS..MAX_TASKS.
    Raises ReplayError (one line, exit 1).
    """
    host = _clean_str("hostname", spec.hostname, limit=64)
    if any(not c.isprintable() or c.isspace() or c == "/" for c in host):
        raise _bad("hostname", host)
    if not isinstance(spec.argv, tuple) or not spec.argv:
        raise _bad("argv", spec.argv)
    total = 0
    for a in spec.argv:
        total += len(_clean_str("argv", a, empty=True)) + 1
    if not spec.argv[0]:
        raise _bad("argv", spec.argv)
    for item in spec.env:
        if not isinstance(item, tuple) or len(item) != 2:
            raise _bad("environment entry", item)
        k, v = item
        _clean_str("environment name", k)
        _clean_str("environment value", v, empty=True)
        if "=" in k:
            raise _bad("environment name", k)
        total += len(k) + len(v) + 2
    if total > MAX_ARGS_TOTAL:
        raise ReplayError(f"refusing to replay: the trace's argv and environment hold {total} bytes "
                          f"(more than {MAX_ARGS_TOTAL}); nothing was run")
    if spec.exe is not None:
        _clean_str("executable path", spec.exe, limit=4096)
    cwd = _clean_str("working directory", spec.cwd, limit=4096)
    if not cwd.startswith("/"):
        raise _bad("working directory", cwd)
    root = spec.root
    if not isinstance(root, str) or not root or "\0" in root:
        raise ReplayError(f"--rootfs {root!r} is not a usable directory; nothing was run")
    if not os.path.isdir(root):
        raise ReplayError(f"--rootfs {root}: no such directory; nothing was run")
    for what, n in (("uid", spec.uid), ("gid", spec.gid)):
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < ID_COUNT:
            raise _bad(what, n)
    if spec.first_pid is not None and (not isinstance(spec.first_pid, int) or not 2 <= spec.first_pid < (1 << 22)):
        raise _bad("pid", spec.first_pid)
    for pth in spec.expose:
        if not _clean_str("file path", pth, limit=4096).startswith("/") or "/../" in pth + "/":
            raise _bad("file path", pth)
    lim = spec.memory_limit
    if lim is not None and (not isinstance(lim, int) or isinstance(lim, bool)
                            or not (lim == 0 or MIN_LIMIT <= lim <= MAX_LIMIT)):
        shown = format_size(lim) if isinstance(lim, int) else repr(lim)
        raise ReplayError(f"a memory limit of {shown} is not usable: give at least "
                          f"{MIN_LIMIT >> 20} MiB (dr replay --memory-limit SIZE); nothing was run")
    n = spec.max_tasks
    if not isinstance(n, int) or isinstance(n, bool) or not (n == 0 or MIN_TASKS <= n <= MAX_TASKS):
        raise ReplayError(f"a task limit of {n!r} is not usable: give {MIN_TASKS}..{MAX_TASKS}; nothing was run")
    if spec.stdio not in ("null", "inherit"):
        raise ReplayError(f"unknown stdio mode {spec.stdio!r}")
