"""Files the traced programs mapped or executed: identified, and stored when needed.

Replay maps and executes files; if it takes them from the replay host's disk,
a file changed or deleted since the capture changes the replay. So at the end
of a capture :func:`collect` walks the trace once (the fd model of
:class:`dr.formats.fdmap.FdMap` names the file behind each ``mmap`` fd) and
lists every file that was

- executed (a successful execve/execveat, and the ELF interpreter the kernel
  mapped for it -- no syscall of the program maps that one), or
- mapped from an fd (``mmap`` without MAP_ANONYMOUS: libraries, .pyc files,
  sqlite's -shm, git's pack files, any data file),

and :func:`identify` records each one: path, device/inode, size, mtime and the
sha256 of its content (``files`` record). Its bytes are stored once per hash
(``blob`` records, in chunks) unless the file is an unmodified file of an
installed Debian package (its md5 matches /var/lib/dpkg/info/*.md5sums) and
was not written during the capture; a file that vanished is recorded as
unavailable. The content is read when the capture ends: a file rewritten
during the capture is marked ``written`` (the trace holds the writes).
Only regular files are read, in chunks: a mapped device or fifo is listed as
unavailable, and a file above :data:`STORE_MAX` is hashed but not stored
(``not_stored``), so dr's memory stays bounded whatever the programs map.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
import struct
from dataclasses import dataclass, field

from dr import schema

__all__ = ["FileUse", "collect", "needed_syscalls", "identify", "package_index", "write_files", "BLOB_CHUNK"]

MAP_ANONYMOUS = 0x20
PROT_EXEC = 0x4
O_ACCMODE, O_CREAT, O_TRUNC = 0o3, 0o100, 0o1000
PT_INTERP = 3
#: Bytes of file content per blob record (frames stay small for readers with a budget).
BLOB_CHUNK = 1 << 20
#: Largest file whose bytes are stored (they are held in memory until written); a larger
#: one is identified (its hash read in chunks) but not stored, and its entry says so.
STORE_MAX = 256 << 20
DPKG_INFO = "/var/lib/dpkg/info"

_NR = {n: schema.by_name(n).nr for n in (
    "mmap", "execve", "execveat", "openat", "open", "creat", "truncate", "rename", "renameat",
    "renameat2", "openat2")}


def needed_syscalls() -> frozenset[int]:
    """The calls :func:`collect` reads: its own (above) and every call that changes the fd
    model (from the schema, through FdMap): the reader passes over the rest undecoded."""
    from dr.formats.fdmap import handled_syscalls

    return handled_syscalls() | frozenset(_NR.values())


@dataclass
class FileUse:
    """How the traced programs used one path: ``how`` ⊆ {exec, map, map-exec}; ``written``."""

    path: str
    how: set[str] = field(default_factory=set)
    written: bool = False


def _interp(path: str) -> str | None:
    """PT_INTERP of an ELF64 little-endian executable (its dynamic loader), or None."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):   # replaced by a fifo or device since
            return None
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            for i in range(min(phnum, 64)):
                f.seek(phoff + i * phentsize)
                ph = f.read(56)
                if len(ph) < 56:
                    return None
                p_type, _fl, p_off, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", ph)
                if p_type == PT_INTERP and 0 < p_filesz < 4096:
                    f.seek(p_off)
                    return f.read(p_filesz).split(b"\0", 1)[0].decode(errors="surrogateescape")
    except OSError:
        return None
    return None


def collect(trace_path: str) -> dict[str, FileUse]:
    """Every file the trace shows executed or mapped, by absolute path (one pass)."""
    from dr.errors import TraceError
    from dr.formats.fdmap import FdMap
    from dr.formats.trace import Event, TraceReader

    uses: dict[str, FileUse] = {}

    def use(path: str | None, how: str) -> None:
        if path and path.startswith("/"):
            uses.setdefault(path, FileUse(path)).how.add(how)

    written: set[str] = set()
    try:
        r = TraceReader(trace_path)
    except TraceError:
        return uses
    fdmap = FdMap(r.meta)
    try:
        # Only the calls it needs (a busy program's millions of others are skipped in C):
        # the end of a capture takes time in proportion to them, not to the trace.
        for rec in r.stream(syscalls=needed_syscalls()):
            if not isinstance(rec, Event):
                fdmap.apply(rec)
                continue
            ev, nr = rec, rec.nr
            if nr == _NR["mmap"] and 0 <= ev.ret < (1 << 63) and not ev.args[3] & MAP_ANONYMOUS:
                fd = ev.args[4] & 0xFFFFFFFF
                if fd < 1 << 31:
                    f = fdmap.lookup(ev.tgid, fd)
                    if f is not None and f.kind in ("file", "unknown") and f.path:
                        use(f.path, "map-exec" if ev.args[2] & PROT_EXEC else "map")
            elif nr in (_NR["execve"], _NR["execveat"]) and ev.ret == 0:
                p = ev.payload(0 if nr == _NR["execve"] else 1)
                if p:
                    path = p.split(b"\0", 1)[0].decode(errors="surrogateescape")
                    m = re.match(r"/(?:dev|proc/self)/fd/(\d+)(/.*)?$", path)
                    if m:   # fexecve/execveat of an fd: the file behind it in the caller
                        f = fdmap.lookup(ev.tgid, int(m.group(1)))
                        path = (f.path or "") + (m.group(2) or "") if f is not None else ""
                    elif not path.startswith("/"):
                        path = os.path.normpath(os.path.join(fdmap.cwd(ev.tgid) or "/", path))
                    use(path, "exec")
            fdmap.apply(ev)
            if ev.ret >= 0 and nr in (_NR["openat"], _NR["open"], _NR["creat"], _NR["openat2"]):
                fl = ev.args[2 if nr in (_NR["openat"],) else 1] if nr != _NR["openat2"] else 0
                if nr == _NR["creat"] or fl & O_ACCMODE or fl & (O_CREAT | O_TRUNC):
                    f = fdmap.lookup(ev.tgid, ev.ret)
                    if f is not None and f.path:
                        written.add(f.path)
            elif ev.ret == 0 and nr in (_NR["truncate"], _NR["rename"], _NR["renameat"], _NR["renameat2"]):
                slot = {_NR["truncate"]: 0, _NR["rename"]: 1}.get(nr, 3)
                p = ev.payload(slot)
                if p:
                    path = p.split(b"\0", 1)[0].decode(errors="surrogateescape")
                    written.add(os.path.normpath(os.path.join(fdmap.cwd(ev.tgid) or "/", path)))
    except TraceError:
        pass   # a cut-short trace: what was read is still true
    for path in [p for p, u in uses.items() if "exec" in u.how]:
        interp = _interp(path)
        if interp:
            use(interp, "map-exec")
    for path, u in uses.items():
        u.written = path in written
    return uses


def package_index() -> dict[str, tuple[str, str]]:
    """Installed Debian package files: absolute path -> (package, md5 hex). {} without dpkg."""
    out: dict[str, tuple[str, str]] = {}
    for f in glob.glob(os.path.join(DPKG_INFO, "*.md5sums")):
        pkg = os.path.basename(f)[:-len(".md5sums")]
        try:
            with open(f, "rb") as fh:
                for line in fh:
                    md5, _, rel = line.rstrip(b"\n").partition(b"  ")
                    if rel:
                        out["/" + rel.decode(errors="surrogateescape")] = (pkg, md5.decode())
        except OSError:
            continue
    return out


def _package_of(path: str, index: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The (package, md5) listing ``path`` under any of its names (merged /usr: /lib == /usr/lib)."""
    real = os.path.realpath(path)
    for p in dict.fromkeys((path, real)):
        for cand in (p, p[4:] if p.startswith("/usr/") else "/usr" + p):
            hit = index.get(cand)
            if hit:
                return hit
    return None


class _NotRegular(Exception):
    """The path names a device, fifo, socket or directory (the message says which)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


@dataclass
class _Content:
    st: os.stat_result
    size: int               # bytes read (the size at open, unless the file shrank)
    sha256: str
    md5: str | None         # with want_md5 only
    data: bytes | None      # None when larger than keep_max


def _read_regular(path: str, keep_max: int, want_md5: bool) -> _Content:
    """The regular file ``path``, read in chunks to its size at open: hashes, and its bytes
    when there are at most ``keep_max`` of them (memory stays bounded for any file).

    A program may map a device (``/dev/zero``: reading it never ends, and a capture
    that hashed it grew until the OOM killer took it) or a fifo (opening it blocks).
    Opening a device can also act on it (a watchdog arms, a tape rewinds), and
    capture must not change the host: only a path that stats as a regular file is
    opened, without blocking, and the open file is checked again.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _NotRegular(_kind(st.st_mode))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):   # replaced since the stat
            raise _NotRegular(_kind(st.st_mode))
        h, m = hashlib.sha256(), (hashlib.md5() if want_md5 else None)
        parts: list[bytes] | None = [] if st.st_size <= keep_max else None
        left = st.st_size
        while left > 0 and (chunk := os.read(fd, min(left, BLOB_CHUNK))):
            h.update(chunk)
            if m is not None:
                m.update(chunk)
            if parts is not None:
                parts.append(chunk)
            left -= len(chunk)
        return _Content(st, st.st_size - left, h.hexdigest(), m.hexdigest() if m else None,
                        b"".join(parts) if parts is not None else None)
    finally:
        os.close(fd)


def identify(use: FileUse, index: dict[str, tuple[str, str]],
             store_max: int = STORE_MAX) -> tuple[dict, bytes | None]:
    """The ``files`` entry of one file and its bytes when they must be stored (else None)."""
    rec: dict = {"path": use.path, "how": sorted(use.how), "written": use.written}
    if use.path.startswith("/memfd:"):
        rec["unavailable"] = "a memfd: its bytes are the writes the trace holds"
        return rec, None
    pkg = _package_of(use.path, index)
    try:
        c = _read_regular(use.path, store_max, want_md5=pkg is not None)
    except OSError as e:
        rec["unavailable"] = e.strerror or str(e)
        return rec, None
    except _NotRegular as e:
        rec["unavailable"] = f"not a regular file ({e}): no bytes to store"
        return rec, None
    rec.update({"dev": c.st.st_dev, "ino": c.st.st_ino, "size": c.size, "mtime_ns": c.st.st_mtime_ns,
                "sha256": c.sha256})
    unmodified = pkg is not None and c.md5 == pkg[1]
    if pkg is not None:
        rec["package"] = pkg[0]
        rec["package_unmodified"] = unmodified
    keep = use.written or not unmodified
    if keep and c.data is None:
        keep = False
        rec["not_stored"] = f"larger than {store_max / (1 << 20):g} MiB: identified by its hash only"
    rec["stored"] = keep
    return rec, (c.data if keep else None)


def write_files(writer, trace_path: str) -> dict:
    """Identify the trace's mapped/executed files and append ``files`` and ``blob`` records.

    ``writer``: the open :class:`dr.formats.trace.TraceWriter` of ``trace_path``
    (flushed first, so the trace reads back). Returns {files, stored, stored_bytes}.
    """
    writer.flush()
    uses = collect(trace_path)
    index = package_index() if uses else {}
    entries, stored, nbytes = [], set(), 0
    for path in sorted(uses):
        rec, data = identify(uses[path], index)
        entries.append(rec)
        if data is not None and rec["sha256"] not in stored:
            stored.add(rec["sha256"])
            nbytes += len(data)
            for off in range(0, max(len(data), 1), BLOB_CHUNK):
                writer.write_record({"t": "blob", "sha256": rec["sha256"], "offset": off,
                                     "size": len(data), "data": data[off:off + BLOB_CHUNK]})
                writer.flush()
    writer.write_record({"t": "files", "files": entries})
    return {"files": len(entries), "stored": len(stored), "stored_bytes": nbytes}
