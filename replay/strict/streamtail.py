"""The bytes of a write the capture cut at the snaplen, from the reader that received them.

Capture keeps at most snaplen bytes of each payload, so a 1 MiB write to a pipe
or a socketpair is recorded with its first 256 KiB only and replay cannot compare
the rest with what it wrote. When the other end of that pipe or socket is read
inside the traced tree, the kernel handed the same bytes to the reader's reads,
which capture recorded too, each of them whole when each read was short enough.
This module lines the two up: per stream (a pipe, one direction of an AF_UNIX
SOCK_STREAM socketpair) the writes' and the reads' byte offsets, and for each cut
write the bytes past its payload as the reads received them (`cut_tails`).

Only streams where the order of bytes is certain: one writing thread and one
reading thread (each thread's calls are in its own order, so offsets add up),
and the reads covering the range all recorded whole. Anything else gives no
tail: the bytes stay "not compared", as before. The trace is untrusted, so the
offsets are only arithmetic on recorded return values; a tail is handed to the
comparison, never to the tracee.
"""

from __future__ import annotations

from typing import Any

from dr import schema
from dr.formats.fdmap import AF_UNIX, SOCK_STREAM, FdMap, OpenFile
from dr.formats.transfers import transfers
from dr.schema import s32

__all__ = ["cut_tails"]

#: The most tail bytes kept for the whole trace: beyond it the rest stays "not compared".
MAX_TAIL_BYTES = 256 << 20
_PAIR = frozenset(s.nr for s in schema.all_syscalls() if s.name in ("pipe", "pipe2", "socketpair"))


class _Stream:
    __slots__ = ("writers", "readers", "wrote", "read", "cut", "reads")

    def __init__(self) -> None:
        self.writers: set[int] = set()
        self.readers: set[int] = set()
        self.wrote = 0     # bytes written so far (stream offset of the next write)
        self.read = 0      # bytes read so far
        self.cut: list[tuple[tuple[int, int], int, int]] = []   # ((tid, seq), first missing offset, end)
        self.reads: list[tuple[int, bytes | None, int]] = []    # (offset, data if whole else None, n)


def _is_stream(f: OpenFile | None) -> bool:
    if f is None:
        return False
    if f.kind == "pipe":
        return True
    return f.kind == "socket" and f.origin == "socketpair" and f.family == AF_UNIX and f.sock_type == SOCK_STREAM


def cut_tails(meta: dict, events: list[Any], forks: list[tuple[int, Any]],
              truncated: int) -> dict[tuple[int, int], bytes]:
    """(tid, seq) of a write cut at the snaplen -> the bytes past its payload, as the
    reader at the other end of its pipe/socketpair received them at capture. ``forks``:
    the FORK records, each with the count of events before it (children inherit fds);
    ``truncated``: the capture's count of payloads cut at the snaplen (loss cause
    TRUNCATED; a trace that does not say has none compared this way)."""
    if not truncated:
        return {}   # the capture cut no payload (the common case: no pass over the events)
    fdm = FdMap(meta)
    peer: dict[int, OpenFile] = {}   # socketpair end id -> the other end
    streams: dict[tuple[str, int | str], _Stream] = {}

    def key(f: OpenFile, out: bool) -> tuple[str, int | str] | None:
        if f.kind == "pipe":
            return ("pipe", f.path or f.id)
        if out:
            return ("sock", f.id)        # bytes written into f go to its peer
        p = peer.get(f.id)
        return ("sock", p.id) if p is not None else None

    fi = 0
    for at, ev in enumerate(events):
        while fi < len(forks) and forks[fi][0] <= at:
            fdm.apply(forks[fi][1])
            fi += 1
        if ev.ret > 0:
            for t in transfers(ev):
                if t.messages or t.direction not in ("in", "out"):
                    continue   # datagram-like messages: no byte stream
                f = fdm.lookup(ev.tgid, t.fd)
                if not _is_stream(f):
                    continue
                assert f is not None
                k = key(f, t.direction == "out")
                if k is None:
                    continue
                st = streams.setdefault(k, _Stream())
                if t.direction == "out":
                    st.writers.add(ev.tid)
                    if t.data is not None and len(t.data) < t.nbytes:
                        st.cut.append(((ev.tid, ev.seq), st.wrote + len(t.data), st.wrote + t.nbytes))
                    st.wrote += t.nbytes
                else:
                    st.readers.add(ev.tid)
                    whole = t.data if t.data is not None and len(t.data) == t.nbytes else None
                    st.reads.append((st.read, whole, t.nbytes))
                    st.read += t.nbytes
        fdm.apply(ev)
        if ev.nr in _PAIR and ev.ret == 0:
            _pair_peers(fdm, ev, peer)
    out: dict[tuple[int, int], bytes] = {}
    budget = MAX_TAIL_BYTES
    for st in streams.values():
        if not st.cut or len(st.writers) != 1 or len(st.readers) != 1:
            continue
        for ident, lo, hi in st.cut:
            tail = _span(st.reads, lo, hi)
            if tail is not None and len(tail) <= budget:
                out[ident] = tail
                budget -= len(tail)
    return out


def _pair_peers(fdm: FdMap, ev: Any, peer: dict[int, OpenFile]) -> None:
    sc = schema.by_nr(ev.nr)
    raw = ev.payload(3) if sc is not None and sc.name == "socketpair" else None
    if not raw or len(raw) < 8:
        return
    a = fdm.lookup(ev.tgid, s32(int.from_bytes(raw[0:4], "little")))
    b = fdm.lookup(ev.tgid, s32(int.from_bytes(raw[4:8], "little")))
    if a is not None and b is not None and a is not b:
        peer[a.id], peer[b.id] = b, a


def _span(reads: list[tuple[int, bytes | None, int]], lo: int, hi: int) -> bytes | None:
    """The stream bytes [lo, hi) from whole recorded reads; None when any is missing."""
    got = bytearray()
    at = lo
    for off, data, n in reads:
        if off + n <= at:
            continue
        if off > at or at >= hi:
            break
        if data is None:
            return None
        take = data[at - off:min(n, hi - off)]
        got += take
        at += len(take)
        if at >= hi:
            break
    return bytes(got) if at == hi else None
