"""The file model of strict replay: the recording's view of the file system.

Two kinds of files reach the tracee, and neither is the replay host's file as
it is now unless the recording vouches for it:

- **Files the run makes** (an open with O_CREAT that creates or truncates,
  O_TMPFILE): each is a :class:`Node`, one memfd the supervisor owns, found
  by the names the recording gives it. rename/link/unlink/truncate (answered
  from the recording) move names or change the node, never copy data, so a
  file written as ``config.lock``, renamed to ``config`` and opened again is
  the same bytes. Every open of a node hands the tracee a new open file
  description of that memfd (its own offset and O_APPEND, as open(2) gives),
  and its I/O runs natively (handlers' NATIVE_ON_OWNED): later reads, mmap,
  sendfile and exec see what the program wrote, as the kernel would show it.
- **Files that existed before the capture**: their reads are answered from the
  trace, so the tracee needs no content -- it gets an empty memfd. Only a file
  the recording mapped or executed (the capture's ``files`` records) gets
  bytes, and only the recording's: the trace's stored copy (``blob``), or the
  host file when its sha256 matches the record. Otherwise replay stops with
  one line naming the file. A root-only host file the recording merely read
  never reaches the tracee, nor the report.

Paths are keys of a dict, never opened on the host from here; the trace's
stored bytes are checked against their sha256 before use.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat as stat_mod
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dr import schema
from dr.errors import ReplayError
from dr.replay import notify
from dr.replay.strict.core import AT_FDCWD, s32
from dr.replay.strict.procfs import is_virtual

if TYPE_CHECKING:
    from dr.replay.strict.core import Thread
    from dr.replay.strict.session import ReplaySession

__all__ = ["FileModel", "Node", "PATH_CALLS", "MOVE_NRS", "O_TMPFILE_FULL", "move", "open_in_root", "exists_in_root"]

O_TMPFILE_FULL = 0o20200000            # __O_TMPFILE | O_DIRECTORY (include/uapi/asm-generic/fcntl.h)
AT_EMPTY_PATH = 0x1000
AT_REMOVEDIR = 0x200
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
RESOLVE_NO_MAGICLINKS, RESOLVE_IN_ROOT = 0x02, 0x10
_OPEN_HOW = struct.Struct("<QQQ")
F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1, 2, 4, 8

#: Calls that change names or sizes, answered from the recording and mirrored in the
#: model when they succeeded: syscall nr -> (kind, the path/fd argument indexes).
PATH_CALLS: dict[int, tuple[str, tuple[int, ...]]] = {
    schema.by_name("rename").nr: ("rename", (-1, 0, -1, 1)),
    schema.by_name("renameat").nr: ("rename", (0, 1, 2, 3)),
    schema.by_name("renameat2").nr: ("rename", (0, 1, 2, 3)),
    schema.by_name("link").nr: ("link", (-1, 0, -1, 1)),
    schema.by_name("linkat").nr: ("link", (0, 1, 2, 3)),
    schema.by_name("unlink").nr: ("unlink", (-1, 0)),
    schema.by_name("unlinkat").nr: ("unlink", (0, 1)),
    schema.by_name("truncate").nr: ("truncate", (-1, 0)),
}


@dataclass(eq=False)
class Node:
    """One file the run made: its bytes (a memfd the supervisor owns) and its names."""

    fd: int
    names: set[str] = field(default_factory=set)


class FileModel:
    """The supervisor's file system view (see the module doc).

    ``records``: the trace's ``files`` records (None for a trace without them:
    host files are then handed read-only, as before the model existed);
    ``blobs``: sha256 -> {offset: chunk} of the stored contents.
    """

    def __init__(self, records: list[dict] | None, blobs: dict[str, dict[int, bytes]]) -> None:
        self.names: dict[str, Node] = {}
        self.by_ino: dict[tuple[int, int], Node] = {}
        self.legacy = records is None
        self.records: dict[str, dict] = {}
        for r in records or ():
            p = r.get("path")
            if isinstance(p, str) and p.startswith("/"):
                self.records[os.path.normpath(p)] = r
        self.blobs = blobs
        self._blob_fd: dict[str, int] = {}     # sha256 -> sealed memfd with those bytes
        self._host_ok: dict[str, bool] = {}    # path -> the host file matches its record
        #: (st_dev, st_ino) of the files vet() handed with the recording's bytes (sha256-checked)
        self.recorded_bytes: set[tuple[int, int]] = set()
        self.created = 0
        self.renamed = 0

    def close(self) -> None:
        for n in set(self.by_ino.values()):
            _close(n.fd)
        for fd in self._blob_fd.values():
            _close(fd)
        self.names.clear()
        self.by_ino.clear()
        self._blob_fd.clear()

    # -------------------------------------------------------------- names
    @staticmethod
    def resolve(s: ReplaySession, th: Thread, dirfd: int, raw: bytes | str) -> str:
        """The absolute, normalised path a call names (``dirfd`` as in openat(2)); "" when
        it is relative to a directory fd replay does not know."""
        p = raw if isinstance(raw, str) else raw.split(b"\0", 1)[0].decode(errors="surrogateescape")
        if not p:
            return ""
        if not p.startswith("/"):
            if s32(dirfd) != AT_FDCWD:
                base = s.dirpaths.get((th.host_tgid, s32(dirfd)))
                if not base:
                    return ""
                p = os.path.join(base, p)
            else:
                p = os.path.join(s.cwd.get(th.host_tgid, "/"), p)
        return os.path.normpath(p)

    def lookup(self, path: str) -> Node | None:
        return self.names.get(path) if path else None

    def may_model(self, path: str) -> bool:
        """Whether a file at ``path`` can be a node (POSIX shm lives in /dev/shm; other
        /dev, /proc, /sys files are devices or kernel views, never the run's data)."""
        return bool(path) and (path.startswith("/dev/shm/") or not is_virtual(path))

    def create(self, path: str) -> Node:
        """A new empty file named ``path`` (an existing name now points at it)."""
        node = self._new()
        if path:
            self._unname(path)
            node.names.add(path)
            self.names[path] = node
        return node

    def _new(self) -> Node:
        fd = os.memfd_create("dr-file", os.MFD_CLOEXEC)
        st = os.fstat(fd)
        node = Node(fd)
        self.by_ino[(st.st_dev, st.st_ino)] = node
        self.created += 1
        return node

    def _unname(self, path: str) -> None:
        old = self.names.pop(path, None)
        if old is not None:
            old.names.discard(path)

    def open_fd(self, node: Node, flags: int) -> int:
        """A new open file description of ``node`` for the tracee (its own offset;
        access mode and O_APPEND as the tracee asked). Caller closes it."""
        acc = flags & os.O_ACCMODE
        acc = os.O_RDWR if acc == os.O_ACCMODE else acc
        if flags & os.O_TRUNC and acc != os.O_RDONLY:
            os.ftruncate(node.fd, 0)
        return os.open(f"/proc/self/fd/{node.fd}", acc | (flags & os.O_APPEND) | os.O_CLOEXEC)

    def node_of(self, fd: int) -> Node | None:
        """The node behind a (supervisor-side) fd, by the memfd's identity."""
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        return self.by_ino.get((st.st_dev, st.st_ino))

    def on_path_call(self, s: ReplaySession, th: Thread, ev: Any) -> None:
        """Mirror a successful rename/link/unlink/truncate of the recording (its
        recorded paths, which the tracee's were compared with) in the model."""
        kind, idx = PATH_CALLS[ev.nr]
        args = ev.args

        def path(k: int) -> str:
            raw = ev.payload(idx[k])
            d = AT_FDCWD if idx[k - 1] < 0 else int(args[idx[k - 1]])
            return self.resolve(s, th, d, raw) if raw else ""

        if kind == "unlink":
            p = path(1)
            if p and not (ev.nr == schema.by_name("unlinkat").nr and args[2] & AT_REMOVEDIR):
                self._unname(p)
            return
        if kind == "truncate":
            node = self.lookup(path(1))
            if node is not None:
                os.ftruncate(node.fd, max(0, min(int(args[1]), 1 << 40)))
            return
        new = path(3)
        if kind == "link":
            flags = int(args[4]) if ev.nr == schema.by_name("linkat").nr else 0
            node = None
            if flags & AT_EMPTY_PATH and s.is_owned(th, s32(args[0])):
                node = self._node_of_tracee_fd(s, th, s32(args[0]))   # an O_TMPFILE given a name
            else:
                node = self.lookup(path(1))
            if node is not None and new:
                self._unname(new)
                node.names.add(new)
                self.names[new] = node
            return
        old = path(1)
        flags = int(args[4]) if ev.nr == schema.by_name("renameat2").nr else 0
        if not old or not new or old == new:
            return
        if flags & RENAME_EXCHANGE:
            a, b = self.names.pop(old, None), self.names.pop(new, None)
            for node, was, now in ((a, old, new), (b, new, old)):
                if node is not None:
                    node.names.discard(was)
                    node.names.add(now)
                    self.names[now] = node
            return
        # rename(2) moves a file, or a directory with everything under it.
        moved = [(p, n) for p, n in self.names.items() if p == old or p.startswith(old + "/")]
        if moved:
            self._unname(new)
        for p, node in moved:
            to = new + p[len(old):]
            del self.names[p]
            node.names.discard(p)
            self._unname(to)
            node.names.add(to)
            self.names[to] = node
        self.renamed += bool(moved)

    def _node_of_tracee_fd(self, s: ReplaySession, th: Thread, fd: int) -> Node | None:
        pfd = s._pidfd(th.host_tgid)
        if pfd is None:
            return None
        try:
            dup = notify.pidfd_getfd(pfd, fd)
        except OSError:
            return None
        try:
            return self.node_of(dup)
        finally:
            os.close(dup)

    # -------------------------------------------------------------- files that existed
    def vet(self, path: str, host: int, flags: int) -> int:
        """What the tracee gets for ``path`` that existed before the run: ``host`` is the
        sandbox root's file opened read-only (or -1 when it is not there). Consumes
        ``host``; returns an fd the caller closes. Raises ReplayError naming the file
        when the recording mapped or executed it and its recorded bytes are not at hand."""
        rec = self.records.get(path)
        if self.legacy and host >= 0:
            return host
        if rec is None or not ({"map", "exec", "map-exec"} & set(rec.get("how") or ())):
            # Reads are answered from the trace: the tracee needs no bytes of it, and
            # the host file as it is now (maybe root-only, maybe changed) never reaches it.
            _close(host)
            return _empty(flags)
        sha = rec.get("sha256")
        if isinstance(sha, str):
            fd = host if host >= 0 and self._host_matches(path, host, sha, rec) else -1
            blob = self._blob(sha) if fd < 0 else None
            if blob is not None:
                _close(host)
                fd = os.open(f"/proc/self/fd/{blob}", os.O_RDONLY | os.O_CLOEXEC)
            if fd >= 0:
                st = os.fstat(fd)
                self.recorded_bytes.add((st.st_dev, st.st_ino))
                return fd
        _close(host)
        if rec.get("written") or rec.get("unavailable"):
            # The run (or a program before it) wrote it: its bytes come from the
            # run's own writes, as the tracee makes them.
            return _empty(flags)
        why = "is not on this host" if host < 0 else "differs on this host from the recording"
        raise ReplayError(f"the recording mapped or executed {path}, which {why}, and the trace "
                          "does not hold its bytes; replay it with a bundle that carries the file")

    def _host_matches(self, path: str, fd: int, sha: str, rec: dict) -> bool:
        ok = self._host_ok.get(path)
        if ok is None:
            try:
                st = os.fstat(fd)
                ok = st.st_size == rec.get("size") and _sha256_fd(fd) == sha
            except OSError:
                ok = False
            self._host_ok[path] = ok
        return ok

    def _blob(self, sha: str) -> int | None:
        fd = self._blob_fd.get(sha)
        if fd is not None:
            return fd
        parts = self.blobs.get(sha)
        if not parts:
            return None
        data = b"".join(parts[k] for k in sorted(parts))
        if hashlib.sha256(data).hexdigest() != sha:
            return None   # a damaged or forged blob: never handed to the tracee
        fd = os.memfd_create("dr-blob", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        _fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
        self._blob_fd[sha] = fd
        return fd

    def exec_check(self, path: str, rootfd: int) -> None:
        """Before a recorded execve of a host file runs natively: the file must be the
        one the recording executed (same sha256), else replay stops naming it."""
        rec = self.records.get(path)
        sha = rec.get("sha256") if rec is not None else None
        if self.legacy or not isinstance(sha, str) or rec is None:
            return
        if path.startswith("/proc/"):
            # /proc/self/exe and its kin: the kernel resolves the magic link to the
            # process's own image, which was checked when it was executed.
            return
        fd = open_in_root(rootfd, path)
        if fd < 0:
            raise ReplayError(f"the recording executed {path}, which is not on this host")
        try:
            if not self._host_matches(path, fd, sha, rec):
                raise ReplayError(f"the recording executed {path}, which differs on this host from "
                                  "the recording")
        finally:
            os.close(fd)

    # -------------------------------------------------------------- exec of a node
    def materialize(self, node: Node, path: str, host_tgid: int) -> None:
        """Make ``path`` inside the tracee's own root hold ``node``'s bytes, executable,
        so an execve of a file the run wrote runs natively. Directories the recording
        made (answered from the trace) are created; resolution stays inside the
        tracee's root. Raises ReplayError when the sandbox cannot hold it there."""
        root = os.open(f"/proc/{host_tgid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # The sandbox's file systems belong to its user namespace, where host root is
        # not mapped (EOVERFLOW): write as the tracee's own file system ids, so the copy
        # is the tracee's file, made with no more rights than the tracee has.
        ids = _fs_ids(host_tgid)
        old_uid = old_gid = -1
        try:
            if ids is not None:
                old_gid = _libc.setfsgid(ids[1])
                old_uid = _libc.setfsuid(ids[0])
            parts = [c for c in path.split("/") if c]
            d = os.dup(root)
            try:
                for comp in parts[:-1]:
                    nd = _openat2(d, comp, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
                    if nd < 0:
                        os.mkdir(comp, 0o755, dir_fd=d)
                        nd = _openat2(d, comp, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
                        if nd < 0:
                            raise OSError(errno.ENOENT, comp)
                    os.close(d)
                    d = nd
                tmp = f".dr-exec-{os.getpid()}"
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                              0o755, dir_fd=d)
                try:
                    size = os.fstat(node.fd).st_size
                    off = 0
                    while off < size:
                        n = os.sendfile(out, node.fd, off, size - off)
                        if n <= 0:
                            break
                        off += n
                    os.fchmod(out, 0o755)
                finally:
                    os.close(out)
                os.rename(tmp, parts[-1], src_dir_fd=d, dst_dir_fd=d)
            finally:
                os.close(d)
        except OSError as e:
            raise ReplayError(f"cannot execute {path}, a file the run wrote: the sandbox cannot hold "
                              f"a copy there ({e.strerror or e})") from None
        finally:
            if old_uid >= 0:
                _libc.setfsuid(old_uid)
            if old_gid >= 0:
                _libc.setfsgid(old_gid)
            os.close(root)


_libc = ctypes.CDLL(None, use_errno=True)


def _fs_ids(tgid: int) -> tuple[int, int] | None:
    """The file-system uid and gid of process ``tgid`` as the host sees them (proc(5) status)."""
    uid = gid = None
    try:
        with open(f"/proc/{tgid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    uid = int(line.split()[4])
                elif line.startswith("Gid:"):
                    gid = int(line.split()[4])
    except (OSError, ValueError, IndexError):
        return None
    return (uid, gid) if uid is not None and gid is not None else None


_FSTAT = {schema.by_name("fstat").nr: 1, schema.by_name("newfstatat").nr: 2}
_READS = frozenset(schema.by_name(k).nr for k in ("read", "pread64", "readv", "preadv", "preadv2"))
_LOOKAHEAD = 32


def fresh_in_recording(s: ReplaySession, th: Thread, fd: int) -> bool:
    """Whether an open with O_CREAT (neither O_EXCL nor O_TRUNC) made a new empty file
    in the recording (the replay host's file, if any, is not that evidence): the thread's next calls on
    ``fd`` say so -- an fstat showing st_size > 0, or a read returning bytes, before
    any write means the file had content before the run (its reads then come from the
    trace, as for any file that existed)."""
    evs = s.script.events
    q = th.queue
    for k in range(1, min(len(q), _LOOKAHEAD)):
        ev = evs[q[k]]
        if not ev.args or s32(ev.args[0]) != fd:
            continue
        slot = _FSTAT.get(ev.nr)
        if slot is not None and ev.ret == 0:
            st = ev.payload(slot)
            if st is not None and len(st) >= 56:
                return struct.unpack_from("<q", st, 48)[0] == 0   # struct stat's st_size (x86_64)
            continue
        if ev.nr in _READS:
            return ev.ret <= 0
        return True   # written, truncated, mapped or closed first: the run's own content
    return True


def open_in_root(rootfd: int, path: str) -> int:
    """``path`` opened read-only inside the root ``rootfd`` (symlinks resolved in it), or -1."""
    return _openat2(rootfd, path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK,
                    RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)


def exists_in_root(rootfd: int, path: str) -> bool:
    fd = _openat2(rootfd, path, os.O_PATH | os.O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    if fd < 0:
        return False
    os.close(fd)
    return True


def _openat2(dirfd: int, path: str, flags: int, resolve: int = RESOLVE_IN_ROOT) -> int:
    how = _OPEN_HOW.pack(flags, 0, resolve)
    buf = ctypes.create_string_buffer(how, len(how))
    pbuf = ctypes.create_string_buffer(path.encode(errors="surrogateescape"))
    try:
        return notify.syscall(notify.NR_OPENAT2, dirfd, ctypes.addressof(pbuf), ctypes.addressof(buf), len(how))
    except OSError:
        return -1


def _empty(flags: int) -> int:
    return os.memfd_create("dr-replay", os.MFD_CLOEXEC)


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    off = 0
    while True:
        b = os.pread(fd, 1 << 20, off)
        if not b:
            return h.hexdigest()
        h.update(b)
        off += len(b)


def _fcntl(fd: int, cmd: int, arg: int) -> None:
    import fcntl
    fcntl.fcntl(fd, cmd, arg)


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def is_regular(fd: int) -> bool:
    try:
        return stat_mod.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


# ----------------------------------------------------------------------------- moves
#: Calls moving bytes between fds inside the kernel: name -> (source offset-pointer
#: argument, target offset-pointer argument), -1 when the call has none.
_MOVE_OFFSETS = {"sendfile": (2, -1), "splice": (1, 3), "copy_file_range": (1, 3)}
_U64 = struct.Struct("<Q")
#: Their numbers, for the hot path of the table-driven handler.
MOVE_NRS = frozenset(schema.by_name(k).nr for k in _MOVE_OFFSETS)


def move(s: ReplaySession, n: Any, th: Thread, ev: Any, pos: int) -> bool | None:
    """sendfile/splice/copy_file_range as the kernel would move the bytes, when one end
    is a file the run made (a node): read from the node at the call's offset, written
    into the node, or shown when the target is the replay's stdout/stderr; offsets
    advance as the kernel advances them. A move into a node from elsewhere takes the
    bytes capture recorded (Sub.MOVED). Returns None when neither end is a node (the
    table answers it; its recorded bytes are shown on the console), else whether the
    notification was answered."""
    sc = schema.by_nr(ev.nr)
    name = schema.name_of(ev.nr)
    offs = _MOVE_OFFSETS.get(name)
    if sc is None or offs is None or sc.beh.moves is None or ev.ret <= 0:
        return None
    src_arg, dst_arg = sc.beh.moves
    sfd, dfd = s32(n.args[src_arg]), s32(n.args[dst_arg])
    s_own, d_own = s.is_owned(th, sfd), s.is_owned(th, dfd)
    console = s.console.get(th.fdt, {}).get(dfd)
    rec = ev.payload(src_arg, schema.Sub.MOVED)
    count = int(ev.ret)
    if not s_own and not d_own:
        if console and rec:
            s.show(console, rec[:count])
        return None
    if s_own and d_own:
        return s.cont(n, th, pos)   # both files are the run's own: the kernel moves them
    soff, doff = (n.args[offs[0]], n.args[offs[1]] if offs[1] >= 0 else 0)
    if s_own or _holds_recorded_bytes(s, th, sfd):
        # A node, or a file handed with the recording's bytes (one the recording mapped or
        # executed, /proc/self/exe): the kernel's bytes are the ones the recording moved.
        with _tracee_fd(s, th, sfd) as src:
            at = _U64.unpack(notify.read_mem(n.pid, soff, 8))[0] if soff else os.lseek(src, 0, os.SEEK_CUR)
            data = os.pread(src, count, at)
            if len(data) < count or (rec is not None and data[:len(rec)] != rec):
                from dr.replay.divergence import payload_diff
                s.diverge("payload", f"{name} of thread {th.tid}: the file holds other bytes than the "
                          "recording moved", th, ev, n, payload_diff(rec or b"", data))
            s.gone_check(n)
            if soff:
                notify.write_mem(n.pid, soff, _U64.pack(at + count))
            else:
                os.lseek(src, at + count, os.SEEK_SET)
    else:
        if rec is None or len(rec) < count:
            raise ReplayError(f"the trace's syscall #{ev.index} ({name} of thread {th.tid}) moved "
                              f"{count} bytes into a file the run made, and the trace does not hold "
                              "them (their source was not a regular file at capture)")
        data = rec[:count]
    if d_own:
        with _tracee_fd(s, th, dfd) as dst:
            if doff:
                at = _U64.unpack(notify.read_mem(n.pid, doff, 8))[0]
                os.pwrite(dst, data, at)
                s.gone_check(n)
                notify.write_mem(n.pid, doff, _U64.pack(at + count))
            else:
                os.write(dst, data)
    elif console:
        s.show(console, data)
    s.report.substituted_bytes += count
    return s.reply(n, th, pos, ev.ret)


def _holds_recorded_bytes(s: ReplaySession, th: Thread, fd: int) -> bool:
    try:
        with _tracee_fd(s, th, fd) as mine:
            st = os.fstat(mine)
    except (OSError, ReplayError):
        return False
    return (st.st_dev, st.st_ino) in s.files.recorded_bytes


class _tracee_fd:
    """The tracee's fd as a supervisor fd (same open file description), closed on exit."""

    def __init__(self, s: ReplaySession, th: Thread, fd: int) -> None:
        pfd = s._pidfd(th.host_tgid)
        if pfd is None:
            raise ReplayError(f"cannot reach process {th.tid}'s fd {fd}")
        self.fd = notify.pidfd_getfd(pfd, fd)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
