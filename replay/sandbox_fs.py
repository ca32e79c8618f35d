"""The tracee's view of the host: a root rebuilt in a scratch tmpfs (docs/security.md).

Runs in stage 2 of :mod:`dr.replay.sandbox`, inside the new user and mount
namespaces, as root of the namespace (a host id of the unprivileged range).
Each top-level directory of the chosen root is an overlay whose upper layer is
the scratch tmpfs; directories overlay refuses are split further, and at the
end bound read-only down to every submount (mount_setattr AT_RECURSIVE);
PRIVATE_DIRS are empty directories of the scratch tmpfs. The scratch has a
``size=`` and ``nr_inodes=`` bound (:func:`dr.replay.cgroup.tmpfs_budget`)
that every writable place of the sandbox shares: each is carved out of it
(:func:`_carve`), never a tmpfs of its own, so one budget covers them all.
Also: the sweep of scratch directories and logs a killed dr left behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import tempfile

from dr.replay import notify
from dr.replay.sandbox_spec import PRIVATE_DIRS, SandboxSpec, private_dir_of

__all__ = ["make_root", "open_exposed", "own_dirs", "mount_setattr_recursive", "sweep_stale", "mount", "cerr",
           "SCRATCH_PREFIX", "LOG_PREFIX"]

_libc = ctypes.CDLL(None, use_errno=True)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
# mount_setattr(2): include/uapi/linux/mount.h, fcntl.h.
NR_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
NR_PIVOT_ROOT = 155
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
#: Bounds of the sandbox's /dev tmpfs: it holds the nodes above (bound from the host).
DEV_SIZE = 1 << 20
DEV_INODES = 1024
#: The scratch's directory of :func:`_carve`'s directories.
CARVED = "carved"


def cerr(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None
    if _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise cerr(f"mount {fstype or src} on {target}")


def make_root(scratch: str, root: str, exposed: dict[str, int], cwd: str = "/", ids: tuple[int, int] = (0, 0),
              own: tuple[str, ...] = (), budget: tuple[int, int] = (1 << 30, 1 << 17)) -> None:
    """Build the tracee's root under the scratch tmpfs and pivot into it.

    An overlay of the whole root fails in a user namespace when the root
    has locked submounts (clone_private_mount refuses them), so each
    top-level directory gets its own overlay (lower: the chosen root's
    directory, upper: the scratch tmpfs), and one that cannot be overlaid
    is built the same way one level down (:func:`_overlay_tree`). Writes
    land in the scratch tmpfs, never on the host; a host submount is never
    reached through an overlay (overlay does not cross mounts), and a host
    Unix socket seen through one refuses connect(2) (the overlay inode is
    not the bound inode). /proc is mounted by init, /dev holds a few nodes,
    the directories of PRIVATE_DIRS and the top level are scratch tmpfs,
    ``budget`` (bytes, inodes) bounds it all.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    size, inodes = budget
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0755,size={size},nr_inodes={inodes}")
    upper, work, new, carved = (os.path.join(scratch, d) for d in ("upper", "work", "root", CARVED))
    for d in (upper, work, new, carved):
        os.mkdir(d)
    _overlay_tree(root, new, upper, work, top=True, own=own)
    dev = os.path.join(new, "dev")
    if not os.path.isdir(dev):
        os.mkdir(dev)
    # Its own small tmpfs (noexec, unlike the scratch): a few nodes and what a program adds.
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, f"mode=0755,size={DEV_SIZE},nr_inodes={DEV_INODES}")
    for n in DEV_NODES:
        host = f"/dev/{n}"
        if not os.path.exists(host):
            continue
        target = os.path.join(dev, n)
        open(target, "w").close()
        try:
            mount(host, target, None, MS_BIND)
        except OSError:
            os.unlink(target)
    for d in ("proc", "tmp", "run"):
        if not os.path.isdir(os.path.join(new, d)):
            os.mkdir(os.path.join(new, d))
    for d in PRIVATE_DIRS:
        _private_tmpfs(new, d)
    for d in SKELETON_DIRS:
        _skeleton_tmpfs(new, d)
    for d in STATE_DIRS:
        _own_unsearchable(new, d, STATE_DEPTH)
    for rel, fd in exposed.items():
        _expose_file(new, rel, fd)
    _make_cwd(new, cwd, ids)
    old = os.path.join(new, ".dr-oldroot")
    os.mkdir(old)
    mount(new, new, None, MS_BIND | MS_REC)  # pivot_root wants a mount point
    if notify._syscall(ctypes.c_long(NR_PIVOT_ROOT), ctypes.c_char_p(new.encode()),
                       ctypes.c_char_p(old.encode())) != 0:
        raise cerr("pivot_root")
    os.chdir("/")
    # The old root stays until init has mounted /proc: the kernel lets a
    # user namespace mount proc only while a full proc mount is visible.


#: How deep :func:`_overlay_tree` splits a directory with locked submounts
#: before it binds the rest read-only (recursively, every submount).
OVERLAY_DEPTH = 4
_SKIP_TOP = ("proc", "sys", "dev", "tmp", "run")


def _own_in_upper(src: str, u: str, here: str, own: tuple[str, ...]) -> None:
    """Make the directories of ``own`` below ``here`` (paths relative to the root) in the
    upper layer ``u`` before its overlay is mounted: the merged directory then belongs
    to the sandbox's root (overlay takes a merged directory's owner and mode from the
    upper one), so a service may create files there, which land in the scratch. Only
    along directories the sandbox may search: this grants writing, never seeing more."""
    for o in own:
        if not (o + "/").startswith(here + "/"):
            continue
        parts = [p for p in o[len(here):].split("/") if p]
        lo, up = src, u
        for part in parts:
            lo, up = os.path.join(lo, part), os.path.join(up, part)
            if os.path.islink(lo) or not os.path.isdir(lo) or not os.access(lo, os.X_OK):
                break
            if not os.path.isdir(up):
                os.mkdir(up, stat.S_IMODE(os.stat(lo).st_mode))


def _overlay_tree(src: str, dst: str, upper: str, work: str, top: bool = False, depth: int = 0,
                  here: str = "", own: tuple[str, ...] = ()) -> None:
    """Fill the existing directory ``dst`` with ``src``'s entries, each overlaid.

    Symlinks are copied; regular files bound read-only; sockets, fifos and
    devices left out; directories overlaid (upper and work dirs numbered in
    ``upper``/``work``) or, when overlay refuses (locked submounts below),
    split one level further; at OVERLAY_DEPTH bound read-only with
    mount_setattr(AT_RECURSIVE), so no submount stays writable.
    """
    for name in sorted(os.listdir(src)):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if os.path.islink(s):
            os.symlink(os.readlink(s), d)
        elif os.path.isdir(s):
            os.mkdir(d)
            if top and name in _SKIP_TOP:
                continue
            n = str(len(os.listdir(upper)))
            u, w = os.path.join(upper, n), os.path.join(work, n)
            os.mkdir(u)
            os.mkdir(w)
            _own_in_upper(s, u, f"{here}/{name}", own)
            try:
                mount("overlay", d, "overlay", 0,
                       f"lowerdir={_ovl_escape(s)},upperdir={u},workdir={w},userxattr")
                continue
            except OSError:
                pass
            if depth < OVERLAY_DEPTH:
                try:
                    _overlay_tree(s, d, upper, work, depth=depth + 1, here=f"{here}/{name}", own=own)
                except PermissionError:
                    pass  # unreadable to the sandbox's ids: left empty
                continue
            try:
                _bind_ro(s, d, rec=True)
            except OSError:
                # Left empty: a bind that is not read-only down to every submount is undone.
                _libc.umount2(d.encode(), MNT_DETACH)
        elif os.path.isfile(s) and not (top and name in _SKIP_TOP):
            open(d, "w").close()
            try:
                _bind_ro(s, d)
            except OSError:
                os.unlink(d)


def _bind_ro(src: str, dst: str, rec: bool = False) -> None:
    """Bind ``src`` on ``dst`` read-only, nosuid, nodev; with ``rec``, every submount too.

    A remount with MS_RDONLY changes the top mount only: the submounts of a
    recursive bind would stay writable. mount_setattr(2) with AT_RECURSIVE sets
    the flags on the whole tree; raises OSError when it cannot.
    """
    mount(src, dst, None, MS_BIND | (MS_REC if rec else 0))
    if not rec:
        mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)
        return
    mount_setattr_recursive(dst, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr_recursive(path: str, attr_set: int) -> None:
    """mount_setattr(AT_FDCWD, path, AT_RECURSIVE, {attr_set}) (Linux >= 5.12); OSError on failure."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    res = notify._syscall(ctypes.c_long(NR_MOUNT_SETATTR), ctypes.c_long(AT_FDCWD),
                          ctypes.c_char_p(path.encode()), ctypes.c_long(AT_RECURSIVE),
                          ctypes.byref(attr), ctypes.c_long(ctypes.sizeof(attr)))
    if res != 0:
        raise cerr(f"mount_setattr of {path}")


def _private_tmpfs(new: str, rel: str) -> None:
    """An empty scratch directory on ``new/rel`` (when that is a directory, not a symlink such as /var/run)."""
    d = os.path.join(new, rel)
    if os.path.islink(d):
        return
    if not os.path.isdir(d):
        if not os.path.isdir(os.path.dirname(d)):
            return
        os.mkdir(d)
    _carve(new, d, 0o1777 if rel != "run" else 0o755)


def _carve(new: str, target: str, mode: int) -> None:
    """Cover ``target`` with a fresh empty directory of the scratch tmpfs (bound there).

    What a program writes in it counts against the scratch's size and inode
    bounds, shared with the overlays' upper layer and every other carved place:
    a tmpfs of its own each would multiply the budget. The bind keeps the
    scratch's nosuid and nodev.
    """
    carved = os.path.join(os.path.dirname(new), CARVED)
    d = os.path.join(carved, str(len(os.listdir(carved))))
    os.mkdir(d)
    os.chmod(d, mode)  # not masked by the umask, and keeps the sticky bit
    mount(d, target, None, MS_BIND)


def open_exposed(rootfd: int, spec: SandboxSpec) -> dict[str, int]:
    """O_PATH fds of the files to expose (see SandboxSpec.expose), by path relative to the root.

    Only files that a private directory would hide (PRIVATE_DIRS), that are
    regular, and that others may execute (the executable a recording ran from
    /tmp): these are opened with the caller's ids, since the directory holding
    them may be closed to the sandbox's. Resolved beneath the root
    (openat2 RESOLVE_IN_ROOT semantics are approximated by refusing '..' and
    symlinks in the path).
    """
    out: dict[str, int] = {}
    base = os.readlink(f"/proc/self/fd/{rootfd}")
    for path in {*spec.expose, *([spec.exe] if spec.exe and spec.exe.startswith("/") else [])}:
        rel = os.path.normpath(path).lstrip("/")
        if ".." in rel.split("/") or private_dir_of(rel) is None:
            continue
        try:
            fd = os.open(rel, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=rootfd)
        except OSError:
            continue
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IXOTH
                or os.readlink(f"/proc/self/fd/{fd}") != os.path.join(base, rel)):
            os.close(fd)  # not a plain executable file at exactly that path (no symlink on the way)
            continue
        out[rel] = fd
    return out


def _expose_file(new: str, rel: str, fd: int) -> None:
    """Bind the file held by ``fd`` read-only at ``new/rel``, making its directories."""
    dst = os.path.join(new, rel)
    parent = os.path.dirname(dst)
    probe = parent
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if os.path.islink(probe) or not os.path.realpath(probe).startswith(new):
        return  # a symlink in the way (/var/run -> /run): never follow it out of the new root
    if os.path.lexists(dst):
        return
    os.makedirs(parent, exist_ok=True)
    open(dst, "w").close()
    _bind_ro(f"/proc/self/fd/{fd}", dst)


#: Host directories whose tree of subdirectories (no files) the sandbox gets as its
#: own writable (scratch) directory: a service writes its logs and cache where it always does, and
#: nothing of the host's is read or written.
SKELETON_DIRS = ("var/log", "var/cache")
SKELETON_DEPTH = 3
#: Under these, a host directory the sandbox's ids cannot search (nothing of it is
#: visible anyway; /var/lib/nginx/body is root's, 0700) becomes an empty scratch directory the
#: sandbox's root owns with the same mode, so a service as root inside may use and
#: chown it as it does on its own host.
STATE_DIRS = ("var/lib",)
STATE_DEPTH = 3


def own_dirs(argv: tuple[str, ...], cwd: str) -> tuple[str, ...]:
    """Directories a service writes its own files in, by convention: its working directory
    and the directories of the absolute paths on its command line (``-c /srv/app/nginx.conf``
    puts the pid file beside it). Absolute, normalised, without the root itself; at most 16."""
    out: list[str] = []
    for a in (cwd, *argv):
        if not isinstance(a, str) or not a.startswith("/") or "\0" in a or len(a) > 4096:
            continue
        p = os.path.normpath(a)
        d = p if os.path.isdir(p) and a == cwd else os.path.dirname(p)
        if d != "/" and d not in out and ".." not in d.split("/"):
            out.append(d)
    return tuple(out[:16])


def _skeleton_tmpfs(new: str, rel: str) -> None:
    """An empty scratch directory on ``new/rel`` holding the host's directory tree below it (dirs only)."""
    top = os.path.join(new, rel)
    if os.path.islink(top) or not os.path.isdir(top):
        return
    dirs: list[tuple[str, int]] = []
    try:
        for path, subdirs, _files in os.walk(top):
            depth = path[len(top):].count("/")
            if depth >= SKELETON_DEPTH:
                subdirs[:] = []
            for d in subdirs:
                full = os.path.join(path, d)
                if not os.path.islink(full):
                    dirs.append((os.path.relpath(full, top), stat.S_IMODE(os.lstat(full).st_mode)))
    except OSError:
        pass
    mode = stat.S_IMODE(os.stat(top).st_mode)
    _carve(new, top, mode)
    for d, m in dirs:
        try:
            os.mkdir(os.path.join(top, d), m)
            os.chmod(os.path.join(top, d), m)
        except OSError:
            pass


def _own_unsearchable(new: str, rel: str, depth: int) -> None:
    """Cover each directory below ``new/rel`` the sandbox cannot search with an empty scratch directory."""
    top = os.path.join(new, rel)
    if os.path.islink(top) or not os.path.isdir(top):
        return
    todo = [(top, 0)]
    while todo:
        path, level = todo.pop()
        try:
            names = os.listdir(path)
        except OSError:
            continue
        for name in names:
            full = os.path.join(path, name)
            if os.path.islink(full) or not os.path.isdir(full):
                continue
            if not os.access(full, os.X_OK):
                try:
                    mode = stat.S_IMODE(os.stat(full).st_mode)
                    _carve(new, full, mode)
                except OSError:
                    pass
            elif level + 1 < depth:
                todo.append((full, level + 1))


def _make_cwd(new: str, cwd: str, ids: tuple[int, int]) -> None:
    """Make the recorded working directory enterable, without exposing anything of the host.

    It may lie in a private directory (a program run from /tmp/x) or below a
    host directory the sandbox's ids may not search (mkdtemp's 0700): missing
    components are made in the scratch, and a component the sandbox cannot
    search (nothing of it is visible anyway) is covered with an empty scratch directory.
    When neither works (the path does not exist on this host under a host
    directory), the tracee starts in / as before. The leaf belongs to ``ids``.
    """
    parts = [p for p in os.path.normpath(cwd).split("/") if p]
    if ".." in parts:
        return
    cur = new
    try:
        for i, part in enumerate(parts):
            nxt = os.path.join(cur, part)
            if os.path.islink(nxt):
                return  # never follow a link out of the new root
            if not os.path.isdir(nxt):
                os.mkdir(nxt, 0o755)
                if i == len(parts) - 1:
                    os.chown(nxt, *ids)
            elif not os.access(nxt, os.X_OK):
                _carve(new, nxt, 0o755)
                if i == len(parts) - 1:
                    os.chown(nxt, *ids)
            cur = nxt
    except OSError:
        return


def _ovl_escape(path: str) -> str:
    # overlay's option parser splits on ',' and ':' (fs/overlayfs/params.c).
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


#: Names of dr's per-replay files in the temporary directory; the owner's pid follows.
SCRATCH_PREFIX = "dr-replay-"
LOG_PREFIX = "dr-streams-"
BUNDLE_PREFIX = "dr-bundle-"   # a bundle extracted for reading (formats/bundle.py open_bundle)


def sweep_stale(tmpdir: str | None = None) -> list[str]:
    """Remove scratch directories and streams logs that a killed dr left behind.

    Names carry the owning dr's pid (``dr-replay-PID-*``, ``dr-streams-PID-*.log``,
    ``dr-bundle-PID-*``: a bundle extracted for a replay);
    an entry is removed only when that pid is gone, the entry belongs to us
    (same owner uid) and is what we made (a directory, a regular log file; never
    a symlink). Returns the removed paths. Never raises.
    """
    tmpdir = tmpdir or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(tmpdir)
    except OSError:
        return removed
    for name in names:
        for prefix, want_dir in ((SCRATCH_PREFIX, True), (LOG_PREFIX, False), (BUNDLE_PREFIX, True)):
            if not name.startswith(prefix):
                continue
            pid_s = name[len(prefix):].split("-", 1)[0]
            if not pid_s.isdigit() or _alive(int(pid_s)):
                continue
            path = os.path.join(tmpdir, name)
            try:
                st = os.lstat(path)
                if st.st_uid != os.geteuid():
                    continue
                if want_dir and stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(path)
                elif not want_dir and stat.S_ISREG(st.st_mode) and name.endswith(".log"):
                    os.unlink(path)
                else:
                    continue
                removed.append(path)
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a name we made: leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
