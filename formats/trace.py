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

import dataclasses

import io
import os
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable, Iterator

import msgpack
import zstandard

from dr import schema
from dr.errors import OutputError, TraceError, TraceTruncated, UsageError
from dr.schema import Sub

__all__ = [
    "FORMAT_VERSION", "MAGIC", "HEADER", "TraceWriter", "TraceReader", "Event", "Payload",
    "ProcEvent", "FrameInfo", "encode_block", "open_trace",
]

#: One integer for the whole format. Bump it on ANY change of the header, the
#: frame framing, a record's meaning, or a probe record layout (dr/schema/layout.py).
#: Adding a new record type ("t") that old readers may skip does not need a bump.
#: Checklist question for every change to this file or layout.py: did you bump FORMAT_VERSION?
#: 3: execve argv/envp from the new image's stack, request-sized and Sub.MOVED payloads,
#:    files/blob records, loss cause COPY_STEPS, metadata key names of formats/meta.py.
#:    Versions 1-2 still read (formats.meta.normalize renames their keys).
FORMAT_VERSION = 3
#: First 8 bytes of every trace.
MAGIC = b"DRTRACE\x00"
#: magic, u32 version, u32 flags (all little-endian).
HEADER = struct.Struct("<8sII")
#: Header flag bits 0-15 must be understood by a reader (it refuses unknown ones);
#: bits 16-31 are informational and ignored. No bit is defined in version 1.
FLAGS_MUST_UNDERSTAND = 0xFFFF

_LEN = struct.Struct("<I")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: A frame is closed once this many uncompressed bytes are pending.
FRAME_TARGET = 1 << 20
#: Largest event block written in one record; larger spans are split at record boundaries.
MAX_BLOCK = 64 << 20
#: Largest uncompressed frame a reader accepts: the most a writer makes (a pending
#: frame just under FRAME_TARGET plus one MAX_BLOCK span) and a MiB of record framing.
MAX_FRAME_RAW = FRAME_TARGET + MAX_BLOCK + (1 << 20)
#: Decompression budget (issue #15), checked from the frame headers when a trace
#: is opened, before anything is decompressed: a frame may declare at most
#: max(FRAME_FLOOR, MAX_RATIO x its compressed length) bytes, and the trace as a
#: whole at most TOTAL_FLOOR + MAX_RATIO x its file size. zstd turns a run of
#: zeros into 4 bytes per 128 KiB block (32768x); real traces, even of programs
#: moving zeros with a 256 KiB snaplen, stay under about 10000x, because each
#: event record breaks the run.
MAX_RATIO = 16384
FRAME_FLOOR = 8 << 20
TOTAL_FLOOR = 256 << 20
#: Largest compressed frame a reader accepts.
MAX_FRAME = MAX_FRAME_RAW + (1 << 20)
#: Largest reassembled payload (offset + length) a reader accepts.
MAX_PAYLOAD = 256 << 20
#: Largest run of zeros a reader fills in for payload chunks that were lost
#: (a hostile trace could otherwise ask for MAX_PAYLOAD of zeros per chunk).
MAX_GAP = 16 << 20
#: Most zeros filled in across one event block (the block's events are held
#: at once, so gaps must be bounded per block, not only per chunk).
MAX_GAP_PER_BLOCK = 64 << 20
#: Most syscalls with payload chunks waiting for their event across frames.
MAX_PENDING = 1 << 16

# Ring-buffer record header (include/uapi/linux/bpf.h: BPF_RINGBUF_*_BIT,
# kernel/bpf/ringbuf.c: struct bpf_ringbuf_hdr { u32 len; u32 pg_off; }).
RB_HDR = 8
RB_BUSY = 1 << 31
RB_DISCARD = 1 << 30
_RB_LEN_MASK = ~(RB_BUSY | RB_DISCARD) & 0xFFFFFFFF

# msgpack prefix of {"t": "ev", "d": <bin32>}: written by hand so that
# write_block costs two buffer appends whatever the span holds.
_EV_PREFIX = b"\x82\xa1t\xa2ev\xa1d\xc6"

_EVT = schema.record("syscall_event")
_EVD = schema.record("syscall_event_data")
_PAY = schema.record("payload")
_PROC = schema.record("proc_event")
_PROC_NAMES = {v: k for k, v in schema.PROC_EVENTS.items()}
_SREG = schema.record("signal_regs")
_SIGNAL = schema.PROC_EVENTS["SIGNAL"]


def _pad8(n: int) -> int:
    return (n + 7) & ~7


# --------------------------------------------------------------------------- values


@dataclass(slots=True)
class Payload:
    """Bytes behind a pointer argument of one syscall.

    ``slot`` is ``arg_index | Sub << 4``; ``data`` the bytes captured (at most
    snaplen); ``total`` the true length in bytes (> len(data): truncated).
    """

    slot: int
    data: bytes
    total: int = -1

    def __post_init__(self) -> None:
        if self.total < 0:
            self.total = len(self.data)

    @property
    def arg(self) -> int:
        return self.slot & 0xF

    @property
    def sub(self) -> int:
        return self.slot >> 4

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)


@dataclass(slots=True)
class Event:
    """One completed syscall (struct dr_syscall_event, dr/schema/layout.py).

    Times are ns of CLOCK_MONOTONIC; ``args`` the six raw register values
    (unsigned 64-bit); ``ret`` the signed return value (-errno on failure);
    ``payloads`` maps slot -> :class:`Payload`; ``index`` is the event's
    position among all syscall events of the trace (from 0; -1 before writing).
    """

    tid: int
    nr: int
    args: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    ret: int = 0
    ts_enter: int = 0
    ts_exit: int = 0
    tgid: int = 0
    seq: int = 0
    flags: int = 0
    cpu: int = 0
    payloads: dict[int, Payload] = field(default_factory=dict)
    index: int = field(default=-1, compare=False)

    @property
    def name(self) -> str:
        """Syscall name from the schema (``syscall_<nr>`` when unknown)."""
        return schema.name_of(self.nr)

    def payload(self, arg: int, sub: int = Sub.DATA) -> bytes | None:
        """Bytes of argument ``arg`` (part ``sub``), or None when not captured."""
        p = self.payloads.get(arg | (int(sub) << 4))
        return None if p is None else p.data

    @property
    def errno(self) -> int | None:
        """The errno when the call failed (-4095 <= ret < 0), else None."""
        return -self.ret if -4095 <= self.ret < 0 else None

    @property
    def duration_ns(self) -> int:
        return self.ts_exit - self.ts_enter if self.ts_exit else 0


@dataclass(frozen=True, slots=True)
class ProcEvent:
    """Fork, exec, exit of a traced task or a signal (struct dr_proc_event).

    ``what`` is a PROC_EVENTS value; FORK: arg0 child tid, arg1 child tgid;
    EXIT: arg0 exit code; SIGNAL: arg0 signal number. ``ts`` in ns, CLOCK_MONOTONIC.
    ``regs`` (SIGNAL only, when the probe recorded them): the thread's user
    registers where the signal interrupted it, a dict named as
    dr.schema.layout.SIGNAL_REGS (struct pt_regs); ``orig_ax`` -1 means between
    syscalls (an asynchronous signal interrupting user code).
    """

    what: int
    tid: int
    tgid: int = 0
    ts: int = 0
    arg0: int = 0
    arg1: int = 0
    cpu: int = 0
    regs: dict | None = None

    @property
    def kind(self) -> str:
        return _PROC_NAMES.get(self.what, f"PROC_{self.what}")


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """One complete frame: ``offset`` of its length prefix, ``length`` of the zstd frame."""

    index: int
    offset: int
    length: int


def _attach_regs(out: list, tid: int, sig: int, regs: tuple) -> None:
    """Give the registers to their signal's process event, written just before
    (records of other CPUs may come between; a record without one is dropped)."""
    from dr.schema.layout import SIGNAL_REGS
    for i in range(len(out) - 1, max(len(out) - 65, -1), -1):
        p = out[i]
        if isinstance(p, ProcEvent) and p.what == _SIGNAL and p.tid == tid:
            if p.regs is None and p.arg0 == sig:
                out[i] = dataclasses.replace(p, regs=dict(zip(SIGNAL_REGS, regs)))
            return


# --------------------------------------------------------------------------- encoding


def _rec(body: bytes) -> bytes:
    n = len(body)
    return _LEN.pack(n) + b"\0\0\0\0" + body + b"\0" * (_pad8(n) - n)


def encode_block(items: Iterable[Event | ProcEvent], *, inline: bool = False) -> bytes:
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
        else:
            raise TypeError(f"encode_block: not an Event or ProcEvent: {it!r}")
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

    def write_events(self, items: Iterable[Event | ProcEvent]) -> None:
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


# --------------------------------------------------------------------------- decoding


def _unpack_records(data: bytes, frame_off: int) -> list[Any]:
    try:
        up = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True,
                              max_buffer_size=max(len(data), 1))
        up.feed(data)
        return list(up)
    except Exception as e:  # msgpack raises many types on hostile input
        raise TraceError(f"corrupt records in frame ({type(e).__name__})", offset=frame_off) from None


class _Pending:
    """Payload chunks waiting for their event: (tid, seq) -> [(slot, offset, total, bytes)]."""

    __slots__ = ("chunks", "last_seq", "orphans")

    def __init__(self) -> None:
        self.chunks: dict[tuple[int, int], list[tuple[int, int, int, bytes]]] = {}
        self.last_seq: dict[int, int] = {}
        self.orphans = 0

    def sweep(self) -> None:
        """Drop chunks whose thread has since completed a later syscall (its event was lost)."""
        last = self.last_seq
        dead = [k for k in self.chunks if k[1] < last.get(k[0], -1)]
        # A hostile trace could hold payloads of tids that never complete a call:
        # keep at most MAX_PENDING keys, dropping the oldest.
        over = len(self.chunks) - len(dead) - MAX_PENDING
        if over > 0:
            gone = set(dead)
            oldest = (k for k in self.chunks if k not in gone)  # dicts keep insertion order
            dead.extend(k for k, _ in zip(oldest, range(over)))
        for k in dead:
            del self.chunks[k]
        self.orphans += len(dead)


def _assemble(parts: list[tuple[int, int, int, bytes]], budget: list[int]) -> dict[int, Payload]:
    """Join the chunks of one syscall's payloads by slot and offset.

    ``budget[0]`` is how many zero bytes may still be filled in for lost chunks
    in this event block; TraceError when a hostile trace asks for more.
    """
    by_slot: dict[int, list] = {}
    for slot, off, total, data in parts:
        e = by_slot.get(slot)
        if e is None:
            by_slot[slot] = [total, [(off, data)]]
        else:
            e[0] = max(e[0], total)
            e[1].append((off, data))
    out = {}
    for slot, (total, chunks) in by_slot.items():
        if len(chunks) == 1 and chunks[0][0] == 0:
            out[slot] = Payload(slot, chunks[0][1], total)
            continue
        chunks.sort(key=lambda c: c[0])
        buf = bytearray()
        for o, b in chunks:
            if o > len(buf):
                if o - len(buf) > MAX_GAP:
                    raise TraceError(f"payload chunk at offset {o} leaves a gap of "
                                     f"{o - len(buf)} bytes (more than {MAX_GAP})")
                budget[0] -= o - len(buf)
                if budget[0] < 0:
                    raise TraceError(f"payload chunks leave more than {MAX_GAP_PER_BLOCK} bytes "
                                     "of gaps in one event block")
                buf += bytes(o - len(buf))  # a chunk was lost: its bytes read as zeros
            buf[o:o + len(b)] = b
        out[slot] = Payload(slot, bytes(buf), total)
    return out


#: Longest zstd frame header (RFC 8878 section 3.1.1.1: magic 4, descriptor 1,
#: window 1, dictionary id up to 4, content size up to 8).
_ZSTD_HEADER_MAX = 18


def _declared_size(head: bytes, off: int) -> int:
    """The content size a zstd frame header declares; TraceError when it declares none."""
    try:
        size = zstandard.frame_content_size(head)
    except zstandard.ZstdError:
        raise TraceError("corrupt frame header", offset=off + 4) from None
    if size < 0:
        raise TraceError("frame declares no content size (dr always writes it)", offset=off + 4)
    return size


class TraceReader:
    """Streaming trace reader.

    ``source``: a path or a seekable binary file object. Opening reads the
    header, indexes the frames (``frames``: list of :class:`FrameInfo`, the
    seek index) and decodes the first frame (``meta``) and the last
    (``summary``); event blocks are decoded lazily while iterating.

    Attributes: ``version``, ``flags``, ``meta`` (dict), ``summary`` (dict, or
    None when cut short), ``truncated`` (bool), ``size`` and ``end`` (bytes:
    file size, end of the last complete frame).
    Raises :class:`dr.errors.TraceError` naming the problem and byte offset for
    a foreign, corrupt or newer-version file; :class:`dr.errors.TraceTruncated`
    when not even the metadata frame is complete. Iteration may raise
    TraceError for a corrupt frame further on; never any other exception.
    """

    def __init__(self, source: str | os.PathLike | BinaryIO) -> None:
        self._own = isinstance(source, (str, os.PathLike))
        self.path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<trace>")
        try:
            self._f: BinaryIO = open(source, "rb") if isinstance(source, (str, os.PathLike)) else source
            self._f.seek(0, io.SEEK_END)
            self.size = self._f.tell()
            self._f.seek(0)
        except OSError as e:
            raise TraceError(f"cannot read trace {self.path}: {e.strerror or e}") from None
        except Exception as e:  # a file object that cannot seek (a pipe, a stream)
            raise TraceError(f"cannot read trace {self.path}: {e}") from None
        self._dctx = zstandard.ZstdDecompressor()
        self._losses: list[dict] | None = None
        self._counts: dict[int, int] = {}  # frame index -> syscall events in it
        # Set by iteration: payloads whose thread went on to complete a later
        # syscall (their event was lost), and payloads of a syscall still in
        # progress at the end (capture stopped or the trace was cut short).
        self.orphan_payloads = 0
        self.unfinished_payloads = 0
        self.skipped_records = 0
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- opening

    def _read_at(self, off: int, n: int) -> bytes:
        try:
            self._f.seek(off)
            return self._f.read(n)
        except OSError as e:
            raise TraceError(f"cannot read trace {self.path}: {e.strerror or e}", offset=off) from None
        except Exception as e:  # file objects of archives raise their own errors
            raise TraceError(f"cannot read trace {self.path}: {e}", offset=off) from None

    def _open(self) -> None:
        head = self._read_at(0, HEADER.size)
        if len(head) < HEADER.size:
            if MAGIC.startswith(head[:len(MAGIC)]):
                raise TraceTruncated(f"trace {self.path} was cut short inside its header; "
                                     "nothing is readable", offset=len(head))
            raise TraceError(f"{self.path} is not a dr trace (bad magic)", offset=0)
        magic, self.version, self.flags = HEADER.unpack(head)
        if magic != MAGIC:
            raise TraceError(f"{self.path} is not a dr trace (bad magic)", offset=0)
        if self.version > FORMAT_VERSION:
            raise TraceError(f"trace format version {self.version} is newer than this dr reads "
                             f"({FORMAT_VERSION}); upgrade dr", offset=8)
        if self.version < 1:
            raise TraceError(f"unknown trace format version {self.version}", offset=8)
        if self.flags & FLAGS_MUST_UNDERSTAND:
            raise TraceError(f"trace header has unknown flags 0x{self.flags:x}; upgrade dr", offset=12)
        self.frames: list[FrameInfo] = []
        off = HEADER.size
        cut = False
        total = 0
        budget = TOTAL_FLOOR + MAX_RATIO * self.size
        while off < self.size:
            h = self._read_at(off, 4 + _ZSTD_HEADER_MAX)
            if len(h) < 8:
                cut = True
                break
            n = _LEN.unpack_from(h)[0]
            if n < 4 or n > MAX_FRAME:
                raise TraceError(f"corrupt frame length {n}", offset=off)
            if h[4:8] != _ZSTD_MAGIC:
                raise TraceError("corrupt frame (no zstd frame magic)", offset=off + 4)
            if off + 4 + n > self.size:
                cut = True
                break
            size = _declared_size(h[4:4 + n], off)
            if size > MAX_FRAME_RAW or size > max(FRAME_FLOOR, MAX_RATIO * n):
                raise TraceError(f"frame content size {size} out of range ({n} compressed bytes; "
                                 f"at most {MAX_FRAME_RAW} and {MAX_RATIO}x): refused as a decompression bomb",
                                 offset=off + 4)
            total += size
            if total > budget:
                raise TraceError(f"frames decompress to more than {budget} bytes ({MAX_RATIO}x the "
                                 f"{self.size}-byte file): refused as a decompression bomb", offset=off + 4)
            self.frames.append(FrameInfo(len(self.frames), off, n))
            off += 4 + n
        self.end = off
        if not self.frames:
            raise TraceTruncated(f"trace {self.path} was cut short before its metadata; "
                                 "nothing is readable", offset=off)
        first = self._records(0)
        if not first or first[0].get("t") != "meta":
            raise TraceError("first record is not the trace metadata", offset=self.frames[0].offset)
        from dr.formats.meta import normalize

        # today's key names (formats/meta.py), whatever version wrote the trace
        self.meta: dict[str, Any] = normalize({k: v for k, v in first[0].items() if k != "t"})
        self.summary: dict[str, Any] | None = None
        last = first if len(self.frames) == 1 else self._records(len(self.frames) - 1)
        if last[-1].get("t") == "summary":
            if cut:
                raise TraceError("unexpected bytes after the summary record", offset=off)
            self.summary = {k: v for k, v in last[-1].items() if k != "t"}
        self.truncated = self.summary is None

    # -- frames

    def _frame_bytes(self, i: int) -> bytes:
        fr = self.frames[i]
        z = self._read_at(fr.offset + 4, fr.length)
        if len(z) != fr.length:
            raise TraceError("trace file shrank while reading", offset=fr.offset)
        try:
            size = zstandard.frame_content_size(z)
        except zstandard.ZstdError:
            raise TraceError("corrupt frame header", offset=fr.offset + 4) from None
        if size < 0 or size > MAX_FRAME_RAW:
            raise TraceError(f"frame content size {size} out of range", offset=fr.offset + 4)
        try:
            d = self._dctx.decompressobj()
            data = d.decompress(z)
        except zstandard.ZstdError as e:
            raise TraceError(f"corrupt frame ({e})", offset=fr.offset + 4) from None
        if not d.eof or d.unused_data or len(data) != size:
            raise TraceError("frame length does not match its zstd frame", offset=fr.offset)
        return data

    def _records(self, i: int) -> list[dict]:
        off = self.frames[i].offset
        recs = _unpack_records(self._frame_bytes(i), off)
        for r in recs:
            if not isinstance(r, dict):
                raise TraceError("record is not a map", offset=off)
        if not recs:
            raise TraceError("empty frame", offset=off)
        return recs

    # -- iteration

    def stream(self, start_frame: int = 0, *, tids: Iterable[int] | None = None,
               syscalls: Iterable[str | int] | None = None) -> Iterator[Event | ProcEvent | dict]:
        """Every record in capture order: Event, ProcEvent, and dicts (loss and others).

        The metadata and summary records are not yielded (see ``meta``/``summary``).
        ``start_frame`` seeks to that frame (index into ``frames``); the payload
        chunks left pending by the frame before are picked up too. ``tids`` and
        ``syscalls`` (names or x86_64 numbers) filter syscall events; ``tids``
        filters process events too. Raises TraceError on a corrupt frame.
        """
        return self._iter(start_frame, tids, syscalls, False)

    def events(self, tids: Iterable[int] | None = None,
               syscalls: Iterable[str | int] | None = None,
               start_frame: int = 0) -> Iterator[Event]:
        """Syscall events in capture order with their payloads attached (see :meth:`stream`)."""
        return self._iter(start_frame, tids, syscalls, True)  # type: ignore[return-value]

    def _iter(self, start_frame: int, tids, syscalls, events_only: bool) -> Iterator[Any]:
        if not 0 <= start_frame <= len(self.frames):
            raise UsageError(f"frame {start_frame} out of range (0..{len(self.frames) - 1})")
        tidset = None if tids is None else frozenset(int(t) for t in tids)
        nrset = None if syscalls is None else frozenset(_nr(s) for s in syscalls)
        pend = _Pending()
        index = sum(self._count(i) for i in range(start_frame))
        losses: list[dict] | None = [] if start_frame == 0 else None
        if start_frame > 0:
            prev = self.frames[start_frame - 1]
            for rec in self._records(start_frame - 1):
                if rec.get("t") == "ev":
                    self._decode_block(rec, pend, tidset, nrset, 0, prev.offset, [], True, True)
        for i in range(start_frame, len(self.frames)):
            fr = self.frames[i]
            first_index = index
            for rec in self._records(i):
                t = rec.get("t")
                if t == "ev":
                    out: list[Any] = []
                    index = self._decode_block(rec, pend, tidset, nrset, index, fr.offset, out,
                                               events_only, False)
                    yield from out
                elif t == "meta" or t == "summary":
                    continue
                else:
                    if t == "loss" and losses is not None:
                        losses.append(rec)
                    if not events_only:
                        yield rec
            self._counts[i] = index - first_index
            pend.sweep()
        self.orphan_payloads = pend.orphans
        self.unfinished_payloads = len(pend.chunks)
        if losses is not None:
            self._losses = losses

    def _count(self, i: int) -> int:
        if i not in self._counts:
            n = 0
            for rec in self._records(i):
                if rec.get("t") == "ev":
                    n = self._decode_block(rec, _Pending(), frozenset(), None, n,
                                           self.frames[i].offset, [], True, True)
            self._counts[i] = n
        return self._counts[i]

    def _decode_block(self, rec: dict, pend: _Pending, tidset, nrset, index: int, foff: int,
                      out: list, events_only: bool, prime: bool) -> int:
        """Decode one event block into ``out``; return the event index after it.

        The hot loop of the reader: locals only, one ``unpack_from`` per record.
        """
        blk = rec.get("d")
        if not isinstance(blk, bytes):
            raise TraceError("event block without bytes", offset=foff)
        n = len(blk)
        pos = 0
        u32 = _LEN.unpack_from
        evt_unpack, evt_size = _EVT.st.unpack_from, _EVT.size
        pay_unpack, pay_size = _PAY.st.unpack_from, _PAY.size
        proc_unpack, proc_size = _PROC.st.unpack_from, _PROC.size
        k_evt, k_pay, k_proc = _EVT.kind, _PAY.kind, _PROC.kind
        evd_unpack, evd_size, k_evd = _EVD.st.unpack_from, _EVD.size, _EVD.kind
        k_sreg = _SREG.kind
        chunks = pend.chunks
        last_seq = pend.last_seq
        append = out.append
        flag_mask = RB_BUSY | RB_DISCARD
        Ev, Pay = Event, Payload
        filtered = prime or tidset is not None or nrset is not None
        lim = n - RB_HDR - 2
        gap_budget = [MAX_GAP_PER_BLOCK]
        while pos <= lim:
            word = u32(blk, pos)[0]
            ln = word & _RB_LEN_MASK
            body = pos + RB_HDR
            pos = body + ((ln + 7) & ~7)
            if word & flag_mask or body + ln > n or ln < 2:
                if body + ln > n:
                    raise TraceError(f"probe record length {ln} overruns its event block",
                                     offset=foff)
                if word & flag_mask:
                    self.skipped_records += 1
                    continue
                raise TraceError(f"probe record of {ln} bytes", offset=foff)
            kind = blk[body]  # low byte of the u16 kind; the unpacked kind is checked below
            if kind == k_evt:
                if ln < evt_size:
                    raise TraceError(f"syscall event record of {ln} bytes (< {evt_size})", offset=foff)
                r = evt_unpack(blk, body)
                if r[0] != k_evt:
                    self.skipped_records += 1
                    continue
                tid = r[4]
                seq = r[5]
                last_seq[tid] = seq
                index += 1
                pl = chunks.pop((tid, seq), None) if chunks else None
                if filtered and (prime or (tidset is not None and tid not in tidset) or (
                        nrset is not None and r[6] not in nrset)):
                    continue
                if pl is None:
                    pays = {}
                elif len(pl) == 1 and pl[0][1] == 0:
                    s, _o, tot, d = pl[0]
                    pays = {s: Pay(s, d, tot)}
                else:
                    pays = _assemble(pl, gap_budget)
                append(Ev(tid, r[6], r[7:13], r[13], r[14], r[15], r[3], seq, r[1], r[2], pays,
                          index - 1))
            elif kind == k_evd:
                if ln < evd_size:
                    raise TraceError(f"syscall event record of {ln} bytes (< {evd_size})", offset=foff)
                r = evd_unpack(blk, body)
                if r[0] != k_evd:
                    self.skipped_records += 1
                    continue
                dlen = r[18]
                if evd_size + dlen > ln:
                    raise TraceError(f"inline payload of {dlen} bytes overruns its record", offset=foff)
                tid = r[4]
                seq = r[5]
                last_seq[tid] = seq
                index += 1
                pl = chunks.pop((tid, seq), None) if chunks else None
                if filtered and (prime or (tidset is not None and tid not in tidset) or (
                        nrset is not None and r[6] not in nrset)):
                    continue
                start = body + evd_size
                dslot = r[16]
                item = (dslot, 0, r[19], blk[start:start + dlen])
                if pl is None:
                    pays = {dslot: Pay(dslot, item[3], r[19])}
                else:
                    pl.append(item)
                    pays = _assemble(pl, gap_budget)
                append(Ev(tid, r[6], r[7:13], r[13], r[14], r[15], r[3], seq, r[1], r[2], pays,
                          index - 1))
            elif kind == k_pay:
                if ln < pay_size:
                    raise TraceError(f"payload record of {ln} bytes (< {pay_size})", offset=foff)
                k, slot, tid, seq, off, plen, total = pay_unpack(blk, body)
                if k != k_pay:
                    self.skipped_records += 1
                    continue
                start = body + pay_size
                if pay_size + plen > ln:
                    raise TraceError(f"payload chunk of {plen} bytes overruns its record", offset=foff)
                if off + plen > MAX_PAYLOAD:
                    raise TraceError(f"payload chunk at offset {off} exceeds {MAX_PAYLOAD} bytes",
                                     offset=foff)
                if tidset is None or tid in tidset:
                    key = (tid, seq)
                    pl = chunks.get(key)
                    item = (slot, off, total, blk[start:start + plen])
                    if pl is None:
                        chunks[key] = [item]
                    else:
                        pl.append(item)
            elif kind == k_proc:
                if ln < proc_size:
                    raise TraceError(f"process event record of {ln} bytes (< {proc_size})", offset=foff)
                k, what, cpu, tgid, tid, ts, a0, a1 = proc_unpack(blk, body)
                if k != k_proc:
                    self.skipped_records += 1
                elif not events_only and not prime and (tidset is None or tid in tidset):
                    append(ProcEvent(what, tid, tgid, ts, a0, a1, cpu))
            elif kind == k_sreg:
                if ln < _SREG.size:
                    raise TraceError(f"signal registers record of {ln} bytes (< {_SREG.size})", offset=foff)
                r = _SREG.st.unpack_from(blk, body)
                if r[0] != k_sreg:
                    self.skipped_records += 1
                elif not events_only and not prime and (tidset is None or r[4] in tidset):
                    _attach_regs(out, r[4], r[1], r[5:])
            else:
                self.skipped_records += 1  # a record kind from a newer probe: skip it
        if pos < n:
            raise TraceError("event block ends inside a record header", offset=foff)
        return index

    # -- summaries

    @property
    def loss_records(self) -> list[dict]:
        """Every loss record in order (scans the trace once when not yet iterated)."""
        if self._losses is None:
            losses: list[dict] = []
            for i in range(len(self.frames)):
                losses.extend(r for r in self._records(i) if r.get("t") == "loss")
            self._losses = losses
        return self._losses

    @property
    def file_records(self) -> list[dict]:
        """Files the traced programs mapped or executed (``files`` records, dr.capture.files):
        dicts with path, how, dev, ino, size, mtime_ns, sha256, package, stored, written,
        or ``unavailable``. Scans the trace."""
        out: list[dict] = []
        for i in range(len(self.frames)):
            for r in self._records(i):
                if r.get("t") == "files" and isinstance(r.get("files"), list):
                    out.extend(f for f in r["files"] if isinstance(f, dict))
        return out

    def blob(self, sha256: str) -> bytes | None:
        """The stored content with this sha256 (``blob`` chunks joined and checked), or None."""
        import hashlib

        parts: dict[int, bytes] = {}
        size = None
        for i in range(len(self.frames)):
            for r in self._records(i):
                if r.get("t") == "blob" and r.get("sha256") == sha256 and isinstance(r.get("data"), bytes) \
                        and isinstance(r.get("offset"), int):
                    parts[r["offset"]] = r["data"]
                    size = r.get("size")
        data = b"".join(parts[k] for k in sorted(parts))
        if not parts or len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            return None
        return data

    @property
    def losses(self) -> dict[str, int]:
        """Lost items by cause, summed over the loss records: {cause: count}."""
        out: dict[str, int] = {}
        for r in self.loss_records:
            c = str(r.get("cause", "UNKNOWN"))
            cnt = r.get("count", 0)
            out[c] = out.get(c, 0) + (cnt if isinstance(cnt, int) else 0)
        return out

    def verify(self) -> int:
        """Decode every frame and block; return the number of syscall events. Raises TraceError."""
        return sum(1 for _ in self.events())

    def close(self) -> None:
        if self._own:
            try:
                self._f.close()
            except Exception:
                pass

    def __enter__(self) -> "TraceReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def cut_where(self) -> str:
        """Where a trace cut short ends, in words: "cut short" + this, in every command's message.

        A partial frame at the end (capture killed mid-write, file cut by hand):
        the byte where the readable part ends and the file's size. A file that
        ends on a frame boundary: the byte, and that the closing record is missing.
        """
        n = len(self.frames)
        if self.end < self.size:
            return (f"at byte {self.end:,} of {self.size:,} (the last {self.size - self.end:,} bytes are an "
                    f"incomplete frame; it reads up to the end of frame {n}, the last complete one)")
        return (f"at byte {self.end:,}, the end of frame {n}, without the capture's closing record "
                "(dr capture was killed or ran out of space)")


def _nr(s: str | int) -> int:
    if isinstance(s, int):
        return s
    if s.startswith("syscall_") and s[8:].isdigit():
        return int(s[8:])
    try:
        return schema.by_name(s).nr
    except KeyError:
        raise UsageError(f"unknown syscall {s!r}") from None


def open_trace(source: str | os.PathLike | BinaryIO) -> TraceReader:
    """Open a trace for reading (same as :class:`TraceReader`)."""
    return TraceReader(source)


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
