"""Skipping runs of unwanted syscall records without decoding them (a filtered read).

A reader filtering by syscall number (``TraceReader.stream(syscalls=...)``) still
has to walk every ring-buffer record of an event block, since records have
variable lengths. Per record in Python that is about 0.5 us: the end of a
capture that read back a 20-million-event trace (rr's ``timer``: one gettid per
loop) for the handful of mmap/open/execve calls it needs spent minutes there.

Busy programs repeat themselves, so their records come in runs of one size and
one kind (gettid after gettid: 112 bytes apart; dd's 1-byte reads and writes:
one inline-payload size). :class:`RunSkipper` takes such a run with strided
memoryviews, in C: header words, kinds and syscall numbers of the whole run are
compared or searched at once, and the records up to the first wanted one are
passed over, with what the reader keeps for every event (the event index, each
thread's last seq, payload chunks waiting for these events) updated as if it
had decoded them. Field offsets come from the schema's record layouts
(dr/schema/layout.py). Anything it is not sure of (a different size, a flag
bit, a bad inline length, a wanted number) is left to the reader's decoding
loop, which checks and raises as before.
"""

from __future__ import annotations

import re
import struct

from dr import schema
from dr.formats.trace_spec import _RB_LEN_MASK, RB_HDR, _EVD, _EVT

__all__ = ["RunSkipper", "field_offset"]


def field_offset(layout: schema.RecordLayout, name: str) -> int:
    """Byte offset of field ``name`` in a record of ``layout`` (from its struct format)."""
    items = [c for n, c in re.findall(r"(\d*)([a-zA-Z])", layout.st.format) for c in c * int(n or 1)]
    i = layout.fields.index(name)
    return struct.calcsize("<" + "".join(items[:i]))


_NR = field_offset(_EVT, "nr")
_TID = field_offset(_EVT, "tid")
_SEQ = field_offset(_EVT, "seq")
_DLEN = field_offset(_EVD, "len")
assert (_NR, _TID, _SEQ) == (field_offset(_EVD, "nr"), field_offset(_EVD, "tid"), field_offset(_EVD, "seq"))
assert _NR % 8 == 0 and _SEQ % 8 == 0 and _TID % 4 == 0 and _DLEN % 4 == 0

_Q = struct.Struct("<q").unpack_from
_H = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
#: Records looked at by the first strided pass; doubled while the run goes on (a run
#: broken early costs little, a long one is taken in few passes).
_FIRST = 16
_MOST = 1 << 16


def _prefix(a: bytes, b: bytes, w: int) -> int:
    """How many leading ``w``-byte items ``a`` and ``b`` (same length) have in common."""
    if a == b:
        return len(a) // w
    lo, hi = 0, len(a) // w   # a[:lo*w] == b[:lo*w]; a[:hi*w] != b[:hi*w]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid * w] == b[:mid * w]:
            lo = mid
        else:
            hi = mid
    return lo


class RunSkipper:
    """Passes over runs of same-size syscall records whose number is not in ``nrset``.

    ``chunks``/``last_seq``: the reader's pending payload chunks, keyed (tid, seq),
    and last seq per tid (dr.formats.trace_decode._Pending), updated for the skipped.
    """

    __slots__ = ("nrset", "chunks", "last_seq")

    def __init__(self, nrset: frozenset[int], chunks: dict, last_seq: dict) -> None:
        self.nrset = nrset
        self.chunks = chunks
        self.last_seq = last_seq

    def __call__(self, blk: bytes, pos: int, word: int) -> tuple[int, int]:
        """Skip from the record at ``pos`` (header ``word``, no flag bits): (records
        skipped, position after them); (0, pos) leaves the record to the decoder."""
        n = len(blk)
        ln = word & _RB_LEN_MASK
        stride = RB_HDR + ((ln + 7) & ~7)
        # A lone record (the next differs) or a wanted one: the decoder's one unpack is cheaper.
        nxt = pos + stride
        if nxt + RB_HDR + ln > n or blk[pos:pos + 4] != blk[nxt:nxt + 4] or \
                _Q(blk, pos + RB_HDR + _NR)[0] in self.nrset:
            return 0, pos
        kind = _H(blk, pos + RB_HDR)[0]
        if kind == _EVT.kind:
            if ln < _EVT.size:
                return 0, pos
            dmax = -1
        elif kind == _EVD.kind and ln >= _EVD.size:
            dmax = ln - _EVD.size
        else:
            return 0, pos
        mv = memoryview(blk)
        hdr, kb = blk[pos:pos + 4], blk[pos + RB_HDR:pos + RB_HDR + 2]
        s4, s8 = stride // 4, stride // 8
        total, p, want = 0, pos, _FIRST
        nrset, last_seq, chunks = self.nrset, self.last_seq, self.chunks
        while True:
            fit = (n - p - RB_HDR - ln) // stride + 1   # whole records from p on
            m = min(want, fit)
            if m <= 0:
                break
            span = (m - 1) * stride
            run = _prefix(mv[p:p + span + 4].cast("I")[::s4].tobytes(), hdr * m, 4)
            b = p + RB_HDR
            run = min(run, _prefix(mv[b:b + span + 2].cast("H")[::stride // 2].tobytes(), kb * m, 2))
            if run <= 0:
                break
            rspan = (run - 1) * stride
            nrb = mv[b + _NR:b + _NR + rspan + 8].cast("q")[::s8].tobytes()
            if nrb == nrb[:8] * run:   # one number throughout: a memcmp decides
                take = 0 if _Q(nrb)[0] in nrset else run
            else:
                nrs = struct.unpack(f"<{run}q", nrb)
                hit = nrset.intersection(nrs)
                take = min(nrs.index(x) for x in hit) if hit else run
            if dmax >= 0 and take:
                dlb = mv[b + _DLEN:b + _DLEN + rspan + 4].cast("I")[::s4].tobytes()
                if dlb != dlb[:4] * run or _U32(dlb)[0] > dmax:
                    dl = struct.unpack(f"<{run}I", dlb)
                    if max(dl[:take]) > dmax:   # an inline length overruns: the decoder raises
                        take = next(i for i, d in enumerate(dl) if d > dmax)
            if take <= 0:
                break
            tspan = (take - 1) * stride
            tidb = mv[b + _TID:b + _TID + tspan + 4].cast("I")[::s4].tobytes()
            seqs = mv[b + _SEQ:b + _SEQ + tspan + 8].cast("Q")[::s8]
            if chunks:   # payload chunks of skipped events go with them, as the decoder pops them
                keys = set(zip(struct.unpack(f"<{take}I", tidb), seqs.tolist()))
                for k in chunks.keys() & keys:
                    del chunks[k]
            if tidb == tidb[:4] * take:   # one thread: its last seq
                last_seq[_U32(tidb)[0]] = seqs[take - 1]
            else:   # the last seq per tid wins: per-thread seqs only grow
                last_seq.update(zip(struct.unpack(f"<{take}I", tidb), seqs.tolist()))
            total += take
            p += take * stride
            if take < m or m == fit:
                break
            want = min(want * 2, _MOST)
        return total, p
