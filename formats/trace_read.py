"""Reading a trace: :class:`TraceReader`, which never raises anything but
:class:`dr.errors.TraceError` for a bad file, whatever its bytes (see :mod:`dr.formats.trace`)."""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO, Iterable, Iterator

import zstandard

from dr import schema
from dr.errors import TraceError, TraceTruncated, UsageError
from dr.formats.trace_spec import (
    _EVD,
    _EVT,
    _LEN,
    _PAY,
    _PROC,
    _RB_LEN_MASK,
    _CLK,
    _SREG,
    _ZSTD_MAGIC,
    FLAGS_MUST_UNDERSTAND,
    FORMAT_VERSION,
    FRAME_FLOOR,
    HEADER,
    MAGIC,
    MAX_FRAME,
    MAX_FRAME_RAW,
    MAX_GAP_PER_BLOCK,
    MAX_PAYLOAD,
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
    _attach_regs,
)
from dr.formats.trace_decode import (  # noqa: F401  (MAX_NESTING, too_deep, MAX_VALUES: imported from here)
    _ZSTD_HEADER_MAX,
    MAX_NESTING,
    MAX_VALUES,
    _assemble,
    _declared_size,
    _Pending,
    _unpack_records,
    too_deep,
)
from dr.formats.trace_skip import RunSkipper


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
        k_clk = _CLK.kind
        chunks = pend.chunks
        last_seq = pend.last_seq
        append = out.append
        flag_mask = RB_BUSY | RB_DISCARD
        Ev, Pay = Event, Payload
        filtered = prime or tidset is not None or nrset is not None
        lim = n - RB_HDR - 2
        gap_budget = [MAX_GAP_PER_BLOCK]
        # filtered by number only: runs of unwanted records are passed over in C (trace_skip)
        skip = RunSkipper(nrset, chunks, last_seq) if nrset is not None and tidset is None \
            and not prime else None
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
            if skip is not None and (kind == k_evt or kind == k_evd):
                skipped, after = skip(blk, body - RB_HDR, word)
                if skipped:
                    index += skipped
                    pos = after
                    continue
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
            elif kind == k_clk:
                if ln < _CLK.size:
                    raise TraceError(f"clock read record of {ln} bytes (< {_CLK.size})", offset=foff)
                r = _CLK.st.unpack_from(blk, body)
                if r[0] != k_clk:
                    self.skipped_records += 1
                elif not events_only and not prime and (tidset is None or r[4] in tidset):
                    # kind, source, cpu, tgid, tid, clockid, ret, ts, sec, nsec, mono
                    append(ClockRead(r[1], r[4], r[3], r[7], r[5], r[6], r[8], r[9], r[10], r[2]))
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
