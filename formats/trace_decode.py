"""Decoding a trace's frames and event blocks within budget: msgpack records capped in
values and nesting, payload chunks joined with bounded gaps, zstd frame headers
checked. Used by :mod:`dr.formats.trace_read`; raises only :class:`dr.errors.TraceError`."""

from __future__ import annotations

from typing import Any

import msgpack
import zstandard

from dr.errors import TraceError
from dr.formats.trace_spec import MAX_GAP, MAX_GAP_PER_BLOCK, MAX_PENDING, Payload

#: Deepest list/map nesting a record may have. dr writes at most a few levels (the meta's
#: fd table); msgpack itself allows 1024, and a meta nested ~1000 deep made every
#: recursive consumer (json.dumps in exports, stats, bundle redaction) raise RecursionError.
MAX_NESTING = 32


def too_deep(rec: Any) -> bool:
    """Whether ``rec`` nests lists/maps more than MAX_NESTING deep (no recursion here)."""
    stack = [(rec, 1)]
    while stack:
        v, depth = stack.pop()
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if items is None:
            continue
        if depth > MAX_NESTING:
            return True
        stack.extend((x, depth + 1) for x in items if isinstance(x, (dict, list)))
    return False


#: Most values (list items, map keys and values, records) one frame may decode to.
#: dr's frames carry event bytes as bin blocks, so a 1 MiB frame holds well under a
#: million values; the byte budgets (trace_spec) do not bound this: a 10 KB trace whose
#: 60 MB frame held 60 million one-byte empty lists took 6.5 GB and minutes to decode,
#: 20 million two-byte strings 3 GB. Real frames hold under 10,000 values (the largest
#: of 100 traces on a test machine); at this cap a frame decodes to some 150 MB at most.
MAX_VALUES = 1 << 21


class _TooMany(Exception):
    pass


def _unpack_records(data: bytes, frame_off: int) -> list[Any]:
    left = MAX_VALUES

    def count(obj: Any) -> Any:  # msgpack calls it for each list and map, once decoded
        nonlocal left
        left -= 1 + len(obj) * (2 if isinstance(obj, dict) else 1)
        if left < 0:
            raise _TooMany
        return obj

    recs: list[Any] = []
    try:
        # The hooks run once a container is complete: its own length is capped up front.
        up = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True, list_hook=count,
                              object_hook=count, max_buffer_size=max(len(data), 1),
                              max_array_len=MAX_VALUES, max_map_len=MAX_VALUES // 2)
        up.feed(data)
        for rec in up:
            left -= 1
            if left < 0:
                raise _TooMany
            recs.append(rec)
    except ValueError as e:
        if "exceeds max_" not in str(e):  # msgpack's words for a list or map past the caps
            raise TraceError("corrupt records in frame (ValueError)", offset=frame_off) from None
        raise TraceError(f"corrupt records in frame (more than {MAX_VALUES} values)",
                         offset=frame_off) from None
    except _TooMany:
        raise TraceError(f"corrupt records in frame (more than {MAX_VALUES} values)",
                         offset=frame_off) from None
    except Exception as e:  # msgpack raises many types on hostile input
        raise TraceError(f"corrupt records in frame ({type(e).__name__})", offset=frame_off) from None
    if any(too_deep(r) for r in recs):
        raise TraceError(f"corrupt records in frame (lists or maps nested more than {MAX_NESTING} deep)",
                         offset=frame_off)
    return recs


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
