"""The dr trace file: writer and reader side by side (as rr's TraceStream).

Byte-level specification: docs/trace-format.md. In short::

    header  16 bytes: MAGIC (8) | u32 LE format version | u32 LE flags
    frame*  u32 LE length N | N bytes: one zstd frame (content size + checksum)
                                       holding concatenated msgpack maps

Records are msgpack maps keyed by ``"t"``: ``meta`` (first), ``ev`` (an event
block: a verbatim span of the BPF ring buffer), ``loss``, ``summary`` (last;
marks the trace complete); readers skip any other ``t``. Every frame decodes
on its own, so a trace cut short (SIGKILL, disk full) reads up to its last
complete frame.

Writer::

    w = TraceWriter(path, meta)
    w.write_block(raw_ringbuf_span)   # hot path: no per-record Python work
    w.write_loss(cause="RINGBUF_EVENT", count=3, cpu=0)
    w.close(summary)

Reader::

    r = TraceReader(path)             # TraceError on foreign/corrupt/newer files
    r.meta, r.summary, r.truncated, r.losses, r.frames
    for ev in r.events(tids={42}, syscalls={"read"}): ev.name, ev.payload(1)

The reader never raises anything but :class:`dr.errors.TraceError` (and its
subclass :class:`dr.errors.TraceTruncated`) for a bad file, whatever its bytes.
"""

from __future__ import annotations

import os
import threading
from typing import Any, BinaryIO, Iterable, Iterator

import msgpack
import zstandard

from dr import schema
from dr.errors import OutputError
from dr.formats.trace_read import TraceReader, open_trace  # noqa: F401  (the public reader, re-exported)
from dr.formats.trace_spec import (  # noqa: F401  (re-exported: readers and tests use trace.X)
    _EV_PREFIX,
    _CLK,
    _EVD,
    _EVT,
    _LEN,
    _PAY,
    _PROC,
    _RB_LEN_MASK,
    FLAGS_MUST_UNDERSTAND,
    FORMAT_VERSION,
    FRAME_FLOOR,
    FRAME_TARGET,
    HEADER,
    MAGIC,
    MAX_BLOCK,
    MAX_FRAME,
    MAX_FRAME_RAW,
    MAX_GAP,
    MAX_GAP_PER_BLOCK,
    MAX_PAYLOAD,
    MAX_PENDING,
    MAX_RATIO,
    RB_BUSY,
    RB_DISCARD,
    RB_HDR,
    TOTAL_FLOOR,
    ClockRead,
    Event,
    FrameInfo,
    Payload,
    ProcEvent,
    _pad8,
)

__all__ = [
    "FORMAT_VERSION", "MAGIC", "HEADER", "TraceWriter", "TraceReader", "Event", "Payload",
    "ProcEvent", "ClockRead", "FrameInfo", "encode_block", "open_trace",
]
# --------------------------------------------------------------------------- encoding


def _rec(body: bytes) -> bytes:
    n = len(body)
    return _LEN.pack(n) + b"\0\0\0\0" + body + b"\0" * (_pad8(n) - n)


def encode_block(items: Iterable[Event | ProcEvent | ClockRead], *, inline: bool = False) -> bytes:
    """Encode events as the probes would: a ring-buffer span (payloads first).

    Payload data is cut into chunks of ``schema.CHUNK`` bytes. With ``inline``,
    an event's last payload that fits one chunk is written inside the event
    record (``syscall_event_data``, as the probes do for one small buffer).
    Used by tests and tools; the capture path hands raw spans to
    :meth:`TraceWriter.write_block`.
    """
    out = []
    chunk = schema.CHUNK
    for it in items:
        if isinstance(it, Event):
            pays = list(it.payloads.items())
            last = pays.pop() if inline and pays and len(pays[-1][1].data) <= chunk else None
            for slot, p in pays:
                data = p.data
                total = p.total if p.total >= 0 else len(data)
                offs = range(0, len(data), chunk) if data else (0,)
                for off in offs:
                    part = data[off:off + chunk]
                    out.append(_rec(_PAY.st.pack(_PAY.kind, slot, it.tid, it.seq, off, len(part),
                                                 total) + part))
            args = tuple(it.args) + (0,) * (6 - len(it.args))
            if last is not None:
                slot, p = last
                total = p.total if p.total >= 0 else len(p.data)
                out.append(_rec(_EVD.st.pack(_EVD.kind, it.flags, it.cpu, it.tgid, it.tid, it.seq,
                                             it.nr, *args, it.ret, it.ts_enter, it.ts_exit, slot, 0,
                                             len(p.data), total) + p.data))
                continue
            out.append(_rec(_EVT.st.pack(_EVT.kind, it.flags, it.cpu, it.tgid, it.tid,
                                         it.seq, it.nr, *args, it.ret, it.ts_enter, it.ts_exit)))
        elif isinstance(it, ProcEvent):
            out.append(_rec(_PROC.st.pack(_PROC.kind, it.what, it.cpu, it.tgid, it.tid,
                                          it.ts, it.arg0, it.arg1)))
        elif isinstance(it, ClockRead):
            out.append(_rec(_CLK.st.pack(_CLK.kind, it.source, it.cpu, it.tgid, it.tid, it.clockid, it.ret,
                                         it.ts, it.sec, it.nsec, it.mono)))
        else:
            raise TypeError(f"encode_block: not an Event, ProcEvent or ClockRead: {it!r}")
    return b"".join(out)


def _split_block(raw: memoryview) -> Iterator[memoryview]:
    """Cut an oversized span into pieces of at most MAX_BLOCK at record boundaries."""
    start = pos = 0
    n = len(raw)
    while pos < n:
        if pos + RB_HDR > n:
            break
        ln = _LEN.unpack_from(raw, pos)[0] & _RB_LEN_MASK
        nxt = pos + RB_HDR + _pad8(ln)
        if nxt - start > MAX_BLOCK and pos > start:
            yield raw[start:pos]
            start = pos
        pos = nxt
    if start < n:
        yield raw[start:]


class TraceWriter:
    """Streaming trace writer.

    ``path``: file to create (truncated if it exists) or a writable binary file
    object. ``meta``: the first record (docs/internals.md, "Metadata"); the
    writer adds ``format_version``. The metadata frame is written at once.
    Frames close when ``frame_bytes`` uncompressed bytes are pending, on
    :meth:`flush`, and on :meth:`close`. Thread-safe. Raises
    :class:`dr.errors.OutputError` when the file cannot be written; after a
    failed write the file is cut back to its last complete frame.

    Counters: ``frames``, ``bytes_written`` (file size), ``raw_bytes``
    (uncompressed record bytes).
    """

    def __init__(self, path: str | os.PathLike | BinaryIO, meta: dict[str, Any], *,
                 level: int = 3, frame_bytes: int = FRAME_TARGET) -> None:
        self.path = path if isinstance(path, (str, os.PathLike)) else getattr(path, "name", "<file>")
        self._own = isinstance(path, (str, os.PathLike))
        try:
            self._f: BinaryIO = open(path, "wb", buffering=0) if isinstance(path, (str, os.PathLike)) else path
        except OSError as e:
            raise OutputError(f"cannot create trace {os.fspath(self.path)}: {e.strerror}") from None
        self._fd = self._f.fileno() if hasattr(self._f, "fileno") and self._own else None
        self._z = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._frame_bytes = frame_bytes
        self._closed = False
        self._failed: str | None = None
        self.frames = 0
        self.raw_bytes = 0
        self.bytes_written = 0
        try:
            self._write(HEADER.pack(MAGIC, FORMAT_VERSION, 0))
            m = {"t": "meta", **meta}
            m.setdefault("format_version", FORMAT_VERSION)
            self.write_record(m)
            self.flush()
        except BaseException:
            if self._own:
                self._f.close()
            raise

    # -- records

    def write_block(self, raw: bytes | bytearray | memoryview) -> None:
        """Append a verbatim ring-buffer span (whole records, each with its 8-byte header).

        No per-record work: the span is copied once into the pending frame.
        Spans over MAX_BLOCK bytes are split at record boundaries.
        """
        n = len(raw)
        if not n:
            return
        if n > MAX_BLOCK:
            for piece in _split_block(memoryview(raw)):
                self.write_block(piece)
            return
        with self._lock:
            self._check()
            buf = self._buf
            buf += _EV_PREFIX
            buf += n.to_bytes(4, "big")
            buf += raw
            if len(buf) >= self._frame_bytes:
                self._end_frame()

    def write_events(self, items: Iterable[Event | ProcEvent | ClockRead]) -> None:
        """Encode Event/ProcEvent objects into one event block (tests, tools)."""
        self.write_block(encode_block(items))

    def write_loss(self, cause: str, count: int, cpu: int | None = None, **extra: Any) -> None:
        """Record ``count`` lost items of ``cause`` (a LOSS_CAUSES name) on ``cpu``."""
        rec = {"t": "loss", "cause": cause, "count": int(count)}
        if cpu is not None:
            rec["cpu"] = int(cpu)
        rec.update(extra)
        self.write_record(rec)

    def write_record(self, rec: dict[str, Any]) -> None:
        """Append any msgpack map with a string ``"t"`` (unknown types are skipped by readers)."""
        if not isinstance(rec, dict) or not isinstance(rec.get("t"), str):
            raise TypeError("a trace record is a dict with a string 't'")
        data = msgpack.packb(rec, use_bin_type=True)
        with self._lock:
            self._check()
            self._buf += data
            if len(self._buf) >= self._frame_bytes:
                self._end_frame()

    def flush(self) -> None:
        """End the pending frame now, so everything written so far survives a crash."""
        with self._lock:
            self._check()
            self._end_frame()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Write the summary record (in a frame of its own), marking the trace complete.

        ``summary=None`` closes without one (the trace then reads as cut short).
        """
        with self._lock:
            if self._closed:
                return
            try:
                if self._failed is None:
                    self._end_frame()
                    if summary is not None:
                        self._buf += msgpack.packb({"t": "summary", **summary}, use_bin_type=True)
                        self._end_frame()
                    if self._fd is not None:
                        try:
                            os.fsync(self._fd)
                        except OSError:
                            pass
            finally:
                self._closed = True
                if self._own:
                    self._f.close()

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(None)

    # -- internals

    def _check(self) -> None:
        if self._closed:
            raise OutputError(f"trace {os.fspath(self.path)} is already closed")
        if self._failed:
            raise OutputError(self._failed)

    def _end_frame(self) -> None:
        if not self._buf:
            return
        raw = self._buf
        self._buf = bytearray()
        z = self._z.compress(raw)
        self.raw_bytes += len(raw)
        self._write(_LEN.pack(len(z)), z)
        self.frames += 1

    def _write(self, *parts: bytes) -> None:
        good = self.bytes_written
        try:
            if self._fd is not None:
                want = sum(len(p) for p in parts)
                done = os.writev(self._fd, parts)
                if done != want:  # short write: finish the rest
                    rest = b"".join(parts)[done:]
                    while rest:
                        k = os.write(self._fd, rest)
                        rest = rest[k:]
            else:
                for p in parts:
                    self._f.write(p)
                self._f.flush()
        except OSError as e:
            # Cut the file back to its last complete frame: the trace stays readable.
            if self._fd is not None:
                try:
                    os.ftruncate(self._fd, good)
                except OSError:
                    pass
            self._failed = f"cannot write trace {os.fspath(self.path)}: {e.strerror or e}"
            raise OutputError(self._failed) from None
        self.bytes_written = good + sum(len(p) for p in parts)


def layout_table() -> str:
    """Markdown tables of the probe record layouts, as docs/trace-format.md shows them.

    Rendered from :func:`dr.schema.record` (generated from dr/schema/layout.py);
    tests/test_format.py checks the document holds exactly this text.
    """
    from dr.schema import layout

    out = []
    for rec in layout.RECORDS:
        lay = schema.record(rec.name)
        out.append(f"`struct dr_{rec.name}` — kind {rec.kind}, {lay.size} bytes"
                   + (" + data" if rec.has_data else "") + f", struct format `{lay.st.format}`")
        out.append("")
        out.append("| offset | field | C type |")
        out.append("|---:|---|---|")
        off = 0
        for name, ctype, count in rec.fields:
            out.append(f"| {off} | {name} | {ctype}{f'[{count}]' if count > 1 else ''} |")
            off += layout.CTYPES[ctype][1] * count
        if rec.has_data:
            out.append(f"| {off} | data | u8[len] |")
        out.append("")
    return "\n".join(out)
