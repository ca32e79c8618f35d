"""Trace format throughput: encode/write and decode rates (benchmark, not a test).

    .venv/bin/python bench/trace_decode.py [EVENTS]

Writes EVENTS syscall events (default 1,000,000; half carry a 64-byte payload,
like read/write traffic) through TraceWriter.write_block in 256 KiB spans, as
the capture drains the ring buffer, then reads them back with TraceReader.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from dr.formats.trace import Event, Payload, TraceReader, TraceWriter, encode_block


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    evs = []
    for i in range(n):
        pays = {1: Payload(1, os.urandom(16) * 4)} if i % 2 else {}
        evs.append(Event(tid=1000 + i % 8, nr=i % 2, args=(3, 0x7ffd0000, 64, 0, 0, 0), ret=64,
                         ts_enter=i * 1000, ts_exit=i * 1000 + 500, tgid=1000, seq=i // 8 + 1,
                         payloads=pays))
    raw = encode_block(evs)
    spans = []
    pos, step = 0, 256 << 10
    while pos < len(raw):  # cut at record boundaries, as a ring-buffer drain does
        end = min(pos + step, len(raw))
        q = pos
        while q < end:
            ln = int.from_bytes(raw[q:q + 4], "little") & 0x3FFFFFFF
            nq = q + 8 + ((ln + 7) & ~7)
            if nq > end and q > pos:
                break
            q = nq
        spans.append(raw[pos:q])
        pos = q
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.drt")
        t = time.perf_counter()
        w = TraceWriter(path, {"tool": "bench"})
        for s in spans:
            w.write_block(s)
        w.close({"events": n})
        tw = time.perf_counter() - t
        size = os.path.getsize(path)
        r = TraceReader(path)
        t = time.perf_counter()
        got = sum(1 for _ in r.events())
        tr = time.perf_counter() - t
        t = time.perf_counter()
        few = sum(1 for _ in r.events(tids=[1000]))
        tf = time.perf_counter() - t
    assert got == n
    print(f"events            {n}")
    print(f"raw ring bytes    {len(raw)} ({len(raw) / n:.1f} B/event)")
    print(f"trace bytes       {size} ({size / n:.1f} B/event, ratio {len(raw) / size:.1f}x)")
    print(f"write_block       {n / tw:,.0f} events/s ({len(raw) / tw / 1e6:.0f} MB/s raw)")
    print(f"decode (all)      {n / tr:,.0f} events/s")
    print(f"decode (1 tid/8)  {n / tf:,.0f} events/s scanned ({few} kept)")


if __name__ == "__main__":
    main()
