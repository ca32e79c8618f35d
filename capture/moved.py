"""Bytes moved between fds by sendfile, splice, tee and copy_file_range.

These calls move bytes inside the kernel: no user buffer holds them, so no
probe can copy them. When the source is a regular file the bytes can still be
known: they are the file's bytes at the call's offset. At the end of a capture
that saw such calls, :func:`add_moved_bytes` rewrites the trace once and gives
each one whose source was a regular file the bytes ``[offset, offset + ret)``
read from that file (at most snaplen of them; the payload's total keeps
``ret``), as the payload of slot ``in_fd_arg | Sub.MOVED << 4``. ``dr show``,
the pcap export and stats (through :func:`dr.formats.fdmap.transfers`) then
see them.

The offset is the call's own (the loff_t it was given: its entry value) or,
with a NULL offset pointer, the fd's position followed through the trace
(open: 0; read/write/readv/writev/sendfile/splice/copy_file_range advance it,
lseek sets it). Never guessed: a call whose position is unknown (an fd opened
before the trace), whose file the traced programs wrote after the call, or
whose file is gone or shorter now, gets no bytes (it stays as before). Pipe
sources (splice/tee from a pipe) are not files, nor are /proc's views of a
process (/proc/self/exe read at the end would be dr's own): their bytes stay
unknown (strict replay moves an executable's from the file it hands the program).
"""

from __future__ import annotations

import os
import struct

from dr import schema
from dr.schema import Sub

__all__ = ["MOVERS", "add_moved_bytes"]

#: Calls that move bytes between fds: name -> (source fd arg, source offset-pointer arg or None).
MOVERS = {"sendfile": (1, 2), "splice": (0, 1), "copy_file_range": (0, 1), "tee": (0, None)}
_MOVERS = {schema.by_name(n).nr: v for n, v in MOVERS.items()}
_ADVANCE = {schema.by_name(n).nr: 0 for n in ("read", "write", "readv", "writev")}
_LSEEK = schema.by_name("lseek").nr
_OPENS = {schema.by_name(n).nr for n in ("open", "openat", "openat2", "creat")}
_WRITES = {schema.by_name(n).nr: 0 for n in ("write", "writev", "pwrite64", "pwritev", "pwritev2",
                                              "ftruncate", "fallocate")}
_FILE_DST = {schema.by_name("copy_file_range").nr: 2, schema.by_name("splice").nr: 2}


def _plan(trace_path: str) -> tuple[dict[tuple[int, int], tuple[str, int, int]], int]:
    """(tid, seq) -> (path, offset, count) of moves from regular files whose bytes are known."""
    from dr.errors import TraceError
    from dr.formats.fdmap import FdMap
    from dr.formats.trace import Event, TraceReader

    r = TraceReader(trace_path)
    fdmap = FdMap(r.meta)
    pos: dict[int, int] = {}            # OpenFile.id -> file position, when known
    last_write: dict[str, int] = {}     # path -> index of the last event that wrote it
    moves: list[tuple[int, tuple[int, int], str, int, int]] = []
    i = 0
    try:
        for rec in r.stream():
            if not isinstance(rec, Event):
                fdmap.apply(rec)
                continue
            ev, nr, i = rec, rec.nr, i + 1
            ok = 0 <= ev.ret < (1 << 62) and not ev.flags & schema.EVENT_FLAGS["NO_EXIT"]
            mv = _MOVERS.get(nr)
            if mv is not None and ok and ev.ret > 0:
                src = fdmap.lookup(ev.tgid, ev.args[mv[0]] & 0xFFFFFFFF)
                off = None
                if mv[1] is not None and ev.args[mv[1]]:
                    p = ev.payload(mv[1], Sub.ENTRY)
                    if p is not None and len(p) >= 8:
                        off = struct.unpack_from("<q", p)[0]
                elif src is not None:
                    off = pos.get(src.id)
                    pos[src.id] = off + ev.ret if off is not None else None  # type: ignore[assignment]
                # /proc paths are views of a process: read now they would describe dr
                # (/proc/self/exe is dr's python), so their bytes stay unknown.
                if src is not None and src.kind == "file" and src.path and off is not None and off >= 0 \
                        and not src.path.startswith("/proc/"):
                    moves.append((i, (ev.tid, ev.seq), src.path, off, ev.ret))
                dst_arg = _FILE_DST.get(nr)
                dst = fdmap.lookup(ev.tgid, ev.args[dst_arg] & 0xFFFFFFFF) if dst_arg is not None else None
                if dst is not None and dst.kind == "file" and dst.path:
                    last_write[dst.path] = i
            elif nr in _ADVANCE and ok:
                f = fdmap.lookup(ev.tgid, ev.args[0] & 0xFFFFFFFF)
                if f is not None and pos.get(f.id) is not None:
                    pos[f.id] += ev.ret
            elif nr == _LSEEK and ok:
                f = fdmap.lookup(ev.tgid, ev.args[0] & 0xFFFFFFFF)
                if f is not None:
                    pos[f.id] = ev.ret
            if nr in _WRITES and ok:
                f = fdmap.lookup(ev.tgid, ev.args[0] & 0xFFFFFFFF)
                if f is not None and f.kind == "file" and f.path:
                    last_write[f.path] = i
            fdmap.apply(ev)
            if nr in _OPENS and ok:
                f = fdmap.lookup(ev.tgid, ev.ret)
                if f is not None:
                    pos[f.id] = 0
                    fl = ev.args[1] if nr in (_OPENS - {schema.by_name("openat").nr}) else ev.args[2]
                    if f.path and fl & 0o1000:   # O_TRUNC: written
                        last_write[f.path] = i
    except TraceError:
        pass
    finally:
        r.close()
    plan = {key: (path, off, n) for (idx, key, path, off, n) in moves if last_write.get(path, 0) < idx}
    return plan, len(moves)


def add_moved_bytes(writer, trace_path: str, snaplen: int):
    """Rewrite the trace at ``trace_path`` (open in ``writer``, closed here without a
    summary) with the moved bytes; returns (new writer positioned at its end, stats dict).
    """
    from dr.formats.trace import Event, Payload, TraceReader, TraceWriter

    writer.flush()
    plan, seen = _plan(trace_path)
    stats = {"calls": seen, "with_bytes": 0, "bytes": 0}
    if not plan:
        return writer, stats
    writer.close(None)
    tmp = f"{trace_path}.moved.tmp"
    r = TraceReader(trace_path)
    w = TraceWriter(tmp, {k: v for k, v in r.meta.items() if k != "format_version"})
    files: dict[str, object] = {}
    try:
        batch: list = []
        for rec in r.stream():
            if isinstance(rec, dict):
                if batch:
                    w.write_events(batch)
                    batch = []
                w.write_record(rec)
                continue
            if isinstance(rec, Event) and (rec.tid, rec.seq) in plan:
                path, off, n = plan[(rec.tid, rec.seq)]
                try:
                    fh = files.get(path) or open(path, "rb")
                    files[path] = fh
                    data = os.pread(fh.fileno(), min(n, snaplen), off)   # type: ignore[attr-defined]
                except OSError:
                    data = b""
                if len(data) == min(n, snaplen):
                    slot = _MOVERS[rec.nr][0] | int(Sub.MOVED) << 4
                    rec.payloads[slot] = Payload(slot, data, n)
                    if n > len(data):
                        rec.flags |= schema.EVENT_FLAGS["TRUNCATED"]
                    stats["with_bytes"] += 1
                    stats["bytes"] += len(data)
            batch.append(rec)
            if len(batch) >= 4096:
                w.write_events(batch)
                batch = []
        if batch:
            w.write_events(batch)
        w.flush()
    except BaseException:
        w.close(None)
        os.unlink(tmp)
        raise
    finally:
        r.close()
        for fh in files.values():
            fh.close()   # type: ignore[attr-defined]
    os.replace(tmp, trace_path)
    return w, stats
