"""Attempts of a natively running replay to reach the host: refused, and listed.

A streams replay lets the program's system calls run in the sandbox (they are
held by the namespaces, the id mapping and the private directories of
:mod:`dr.replay.sandbox`). Those hold on their own; this module only makes the
attempts visible: before a call is let through, :func:`check` looks at the
calls through which a program reaches for something outside itself and, when
the sandbox would refuse anyway, answers that error itself and says why, so
the report lists each refused attempt (``refused``) instead of a silent
ECONNREFUSED or EACCES in the program's own log.

- ``ptrace``: EPERM (a replayed program traces nothing).
- ``kill``/``tkill``/``tgkill``/``rt_sigqueueinfo``/``rt_tgsigqueueinfo``/
  ``pidfd_open``/``process_vm_readv``/``process_vm_writev`` naming a pid that is
  not a process of the sandbox (host pids do not exist in its pid namespace): ESRCH.
- ``connect``/``sendto`` to a Unix socket path that is the host's own socket
  (same device and inode as seen through the sandbox's overlay): ECONNREFUSED.
- ``open``/``openat``/``creat`` of a host-owned file the sandbox's ids may not
  read or write, or creating a file in a host-owned directory they may not
  write: EACCES.

Every path is resolved the way the tracee would resolve it: beneath its root
(``/proc/TID/root``, openat2 RESOLVE_IN_ROOT), from its cwd when relative.
The check reads tracee memory; what it reads may change before the kernel
runs the call (another thread), but then the kernel's own refusal still holds
— this is the report, the namespaces are the wall.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
import struct
from dataclasses import dataclass
from typing import Any

from dr import schema
from dr.errors import DrError
from dr.replay import notify
from dr.schema import s32 as _s32

__all__ = ["Refusal", "check", "host_owned"]

_NR = {s.name: s.nr for s in schema.all_syscalls()}
_PID_ARG = {"kill": 0, "tkill": 0, "tgkill": 0, "rt_sigqueueinfo": 0, "rt_tgsigqueueinfo": 0,
            "pidfd_open": 0, "process_vm_readv": 0, "process_vm_writev": 0}
_BY_NR = {_NR[n]: n for n in [*_PID_ARG, "ptrace", "connect", "sendto", "open", "openat", "creat"] if n in _NR}

AF_UNIX = 1
O_ACCMODE = 3
O_CREAT = 0o100
O_TRUNC = 0o1000
O_PATH = 0o10000000
AT_FDCWD = -100
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_OPEN_HOW = struct.Struct("<QQQ")


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused attempt: the call, the pid it came from, what it reached for, errno."""

    syscall: str
    tid: int
    target: str
    errno: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"syscall": self.syscall, "tid": self.tid, "target": self.target,
                "errno": errno.errorcode.get(self.errno, str(self.errno)), "reason": self.reason}


def host_owned(st: os.stat_result) -> bool:
    """True when the file's owner is no id of the sandbox (a host file seen through the overlay)."""
    from dr.replay.sandbox import HOST_ID_BASE, ID_COUNT
    if os.geteuid() != 0:
        return False  # unprivileged dr maps one id; the kernel alone decides then
    inside = range(HOST_ID_BASE, HOST_ID_BASE + ID_COUNT)
    return st.st_uid not in inside and st.st_gid not in inside


def _open_in(tid: int, path: bytes, dirfd_arg: int, flags: int) -> int:
    """An O_PATH fd of ``path`` resolved as tracee ``tid`` would (beneath its root)."""
    root = os.open(f"/proc/{tid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if path.startswith(b"/"):
            base, rel = root, path.lstrip(b"/") or b"."
        else:
            where = f"/proc/{tid}/cwd" if _s32(dirfd_arg) == AT_FDCWD else f"/proc/{tid}/fd/{_s32(dirfd_arg)}"
            base = os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            rel = path or b"."
        try:
            how = _OPEN_HOW.pack(O_PATH | os.O_CLOEXEC | flags, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
            fd = notify._syscall(ctypes.c_long(notify.NR_OPENAT2), ctypes.c_long(base), ctypes.c_char_p(rel),
                                 ctypes.c_char_p(how), ctypes.c_long(len(how)))
            if fd < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            return fd
        finally:
            if base != root:
                os.close(base)
    finally:
        os.close(root)


def _stat_in(tid: int, path: bytes, dirfd_arg: int = AT_FDCWD) -> os.stat_result | None:
    try:
        fd = _open_in(tid, path, dirfd_arg, 0)
    except OSError:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _ids(tid: int) -> tuple[int, int]:
    """The tracee's effective uid and gid as the host sees them (/proc/TID/status)."""
    uid = gid = -1
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    uid = int(line.split()[2])
                elif line.startswith("Gid:"):
                    gid = int(line.split()[2])
    except (OSError, ValueError, IndexError):
        pass
    return uid, gid


def _may(st: os.stat_result, uid: int, gid: int, want: int) -> bool:
    """POSIX mode bits for a host-owned file: ``want`` a mask of 4 (r), 2 (w), 1 (x)."""
    if st.st_uid == uid:
        bits = st.st_mode >> 6
    elif st.st_gid == gid:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return (bits & want) == want


def check(n: notify.Notif) -> Refusal | None:
    """The refusal for notification ``n``, or None to let the call run.

    Raises nothing: a tracee address that cannot be read, or a path that
    does not resolve, means the kernel decides (None).
    """
    name = _BY_NR.get(n.nr)
    if name is None:
        return None
    try:
        if name == "ptrace":
            return Refusal(name, n.pid, f"pid {_s32(n.args[1])}", errno.EPERM,
                           "tracing is not allowed in a replay")
        if name in _PID_ARG:
            pid = _s32(n.args[_PID_ARG[name]])
            if pid <= 0 or os.path.exists(f"/proc/{n.pid}/root/proc/{pid}"):
                return None
            what = f"pid {pid}"
            if name in ("kill", "tkill", "tgkill"):
                sig = _s32(n.args[2 if name == "tgkill" else 1])
                what += f" ({signal.Signals(sig).name if sig in signal.valid_signals() else sig})" if sig else ""
            return Refusal(name, n.pid, what, errno.ESRCH,
                           "no such process in the sandbox (host processes are not reachable)")
        if name in ("connect", "sendto"):
            addr, alen = (n.args[1], n.args[2]) if name == "connect" else (n.args[4], n.args[5])
            alen &= 0xFFFFFFFF
            if not addr or alen < 3 or alen > 110:
                return None
            raw = notify.read_mem(n.pid, addr, alen)
            if struct.unpack_from("<H", raw)[0] != AF_UNIX or raw[2] == 0:
                return None  # not a pathname Unix socket (abstract ones are per network namespace)
            path = raw[2:].split(b"\0", 1)[0]
            inside = _stat_in(n.pid, path)
            if inside is None or not stat.S_ISSOCK(inside.st_mode) or not host_owned(inside):
                return None
            return Refusal(name, n.pid, f"unix:{path.decode(errors='replace')}", errno.ECONNREFUSED,
                           "a host Unix socket (replays reach none)")
        # open, openat, creat
        if name == "openat":
            dirfd, paddr, flags = n.args[0], n.args[1], n.args[2]
        elif name == "open":
            dirfd, paddr, flags = AT_FDCWD, n.args[0], n.args[1]
        else:
            dirfd, paddr, flags = AT_FDCWD, n.args[0], os.O_WRONLY | O_CREAT | O_TRUNC
        flags &= 0xFFFFFFFF
        if flags & O_PATH:
            return None
        path = notify.read_cstr(n.pid, paddr)
        if not path:
            return None
        uid, gid = _ids(n.pid)
        st = _stat_in(n.pid, path, dirfd)
        acc = flags & O_ACCMODE
        want = 4 if acc == os.O_RDONLY else 2 if acc == os.O_WRONLY else 6
        if flags & O_TRUNC:
            want |= 2
        shown = path.decode(errors="replace")
        if st is not None:
            if stat.S_ISREG(st.st_mode) and host_owned(st) and not _may(st, uid, gid, want):
                return Refusal(name, n.pid, shown, errno.EACCES,
                               "a host file the sandbox's ids may not " + ("read" if want == 4 else "write"))
            return None
        if flags & O_CREAT:
            parent = path.rsplit(b"/", 1)[0] if b"/" in path.rstrip(b"/") else b"."
            pst = _stat_in(n.pid, parent or b"/", dirfd)
            if pst is not None and stat.S_ISDIR(pst.st_mode) and host_owned(pst) and not _may(pst, uid, gid, 3):
                return Refusal(name, n.pid, shown, errno.EACCES,
                               "creating a file in a host directory the sandbox may not write")
        return None
    except (OSError, DrError, ValueError, struct.error):
        return None
