"""A reader filtered by syscall number passes over runs of other records undecoded
(formats/trace_skip.py) and yields exactly what a full read filtered afterwards yields;
the end of a capture reads only the calls it needs (capture/files.py)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr import schema
from dr.errors import TraceError
from dr.formats.trace import Event, Payload, ProcEvent, TraceReader, TraceWriter

from conftest import build_c

PY = sys.executable

# Few numbers, tids and payload sizes: the streams are made of runs, broken anywhere.
_NRS = [0, 1, 39, 257, 9]
events = st.builds(
    lambda nr, tid, seq, pay, ret: Event(
        tid=tid, nr=nr, seq=seq, ret=ret, tgid=1, args=(3, 0, 1, 0, 0, 0),
        payloads={} if pay is None else {1: Payload(1, pay, len(pay))}),
    st.sampled_from(_NRS), st.sampled_from([1, 2]), st.integers(1, 50),
    st.sampled_from([None, b"x", b"yz", b"w" * 300, b"v" * (schema.CHUNK + 3)]), st.integers(-5, 5))
runs = st.lists(st.tuples(events, st.integers(1, 40)), max_size=12)
others = st.builds(ProcEvent, what=st.sampled_from([1, 3]), tid=st.sampled_from([1, 2]), tgid=st.just(1))


def _trace(parts: list) -> bytes:
    buf = io.BytesIO()
    w = TraceWriter(buf, {"tool": "dr", "argv": ["t"]}, frame_bytes=4096)
    for it in parts:
        w.write_events(it)
    w.close({"events": 1})
    return buf.getvalue()


def _same(data: bytes, wanted: set[int]) -> None:
    full = TraceReader(io.BytesIO(data))
    want = [r for r in full.stream() if not isinstance(r, Event) or r.nr in wanted]
    fast = TraceReader(io.BytesIO(data))
    got = list(fast.stream(syscalls=wanted))
    assert got == want
    assert [e.index for e in got if isinstance(e, Event)] == [e.index for e in want if isinstance(e, Event)]
    assert (fast.orphan_payloads, fast.unfinished_payloads) == (full.orphan_payloads, full.unfinished_payloads)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs, st.lists(others, max_size=3), st.sets(st.sampled_from(_NRS), max_size=3))
def test_filtered_read_equals_full_read_filtered(rs, procs, wanted):
    items: list = []
    seq = {1: 0, 2: 0}
    for ev, k in rs:
        for _ in range(k):
            seq[ev.tid] += 1
            items.append(Event(ev.tid, ev.nr, ev.args, ev.ret, tgid=1, seq=seq[ev.tid], payloads=ev.payloads))
    for i, p in enumerate(procs):
        items.insert(len(items) * (i + 1) // (len(procs) + 1), p)
    # one block, and the same split over several blocks and frames
    _same(_trace([items]), wanted)
    _same(_trace([items[i:i + 7] for i in range(0, len(items), 7)]), wanted)


def test_payload_chunks_of_skipped_events_are_dropped_with_them():
    # chunks of a skipped call, then a long run of calls of the same size: none is left pending
    big = Event(tid=1, nr=1, seq=1, tgid=1, payloads={1: Payload(1, b"b" * (schema.CHUNK * 2))})
    run = [Event(tid=1, nr=39, seq=s, tgid=1) for s in range(2, 500)]
    run.insert(250, Event(tid=1, nr=257, seq=9999, tgid=1, ret=3, payloads={1: Payload(1, b"/etc/x\0")}))
    data = _trace([[big] + run])
    _same(data, {257})
    got = list(TraceReader(io.BytesIO(data)).events(syscalls={257}))
    assert [(e.index, e.payload(1)) for e in got] == [(251, b"/etc/x\0")]


def _evd_block(n: int, bad: int, nr: int = 39) -> bytes:
    """``n`` inline-payload records (as the probe writes dd's 1-byte reads); record ``bad``
    says its inline payload is 200 bytes long, more than the record holds."""
    evd = schema.record("syscall_event_data")
    out = b""
    for i in range(n):
        body = evd.st.pack(evd.kind, 0, 0, 1, 1, i + 1, nr, 0, 0, 1, 0, 0, 0, 1, 5, 6, 1, 0,
                           200 if i == bad else 1, 1) + b"a"
        out += struct.pack("<II", len(body), 0) + body + bytes(-len(body) % 8)
    return out


def test_a_bad_inline_length_in_a_run_is_refused_as_before():
    blk = _evd_block(100, 60)
    buf = io.BytesIO()
    w = TraceWriter(buf, {"tool": "dr"})
    w.write_block(blk)
    w.close({"events": 1})
    for syscalls in (None, {257}):
        with pytest.raises(TraceError, match="inline payload of 200 bytes"):
            list(TraceReader(io.BytesIO(buf.getvalue())).stream(syscalls=syscalls))


def test_collect_reads_every_call_that_changes_the_fd_model():
    from dr.capture.files import _NR, needed_syscalls
    from dr.formats.fdmap import _HANDLERS, handled_syscalls

    need = needed_syscalls()
    assert set(_NR.values()) <= need
    # every call the schema gives an fd effect, and the ones FdMap reads paths/addresses from
    effects = [e for e in schema.FdEffect if e is not schema.FdEffect.NONE]
    assert handled_syscalls() == schema.with_fd_effect(*effects) | {schema.by_name(n).nr for n in _HANDLERS}
    for name in ("openat", "close", "dup2", "fcntl", "socket", "pipe2", "execve", "mmap", "accept4",
                 "close_range", "chdir", "memfd_create"):
        assert schema.by_name(name).nr in need, name
    assert schema.by_name("gettid").nr not in need and schema.by_name("read").nr not in need


LOOP = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 0; i < 300000; i++) syscall(SYS_gettid);
    int fd = open(argv[1], O_RDONLY);
    int d = dup(fd);
    close(fd);
    char *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, d, 0);
    for (int i = 0; i < 300000; i++) syscall(SYS_gettid);
    printf("%c\n", p == MAP_FAILED ? '?' : p[0]);
    return 0;
}
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (CAP_BPF)")
def test_capture_of_a_busy_program_finds_its_mapped_file_in_a_fraction_of_a_full_read(tmp_path):
    exe = build_c(tmp_path, "loop", LOOP)
    data = tmp_path / "data.bin"
    data.write_bytes(b"Z" * 4096)
    out = tmp_path / "t.drt"
    p = subprocess.run([PY, "-m", "dr", "capture", "-q", "-o", str(out), "--", str(exe), str(data)],
                       capture_output=True, timeout=120)
    assert p.returncode == 0 and p.stdout == b"Z\n", p.stderr.decode()
    r = TraceReader(out)
    files = {f["path"]: f for f in r.file_records}
    assert files[str(data)]["how"] == ["map"] and files[str(exe)]["how"] == ["exec"]
    from dr.capture.files import collect

    t0 = time.monotonic()
    uses = collect(str(out))
    fast = time.monotonic() - t0
    t0 = time.monotonic()
    n = sum(1 for _ in TraceReader(out).events())
    full = time.monotonic() - t0
    assert n > 600_000 and {str(data), str(exe)} <= set(uses)
    print(f"collect {fast:.2f} s, full read {full:.2f} s")
    assert fast < full / 3, (fast, full)


_RUN_BLOCK = _evd_block(64, -1) + b"".join(
    struct.pack("<II", 104, 0) + schema.record("syscall_event").st.pack(
        1, 0, 0, 1, 2, s, 186, 0, 0, 0, 0, 0, 0, 2, 3, 4) for s in range(1, 65))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_RUN_BLOCK) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_damaged_runs_read_the_same_filtered_or_raise_trace_error(flips):
    blk = bytearray(_RUN_BLOCK)
    for at, v in flips:
        blk[at] = v
    buf = io.BytesIO()
    w = TraceWriter(buf, {"tool": "dr"})
    w.write_block(bytes(blk))
    w.close({"events": 1})
    data = buf.getvalue()
    for wanted in ({39}, {186}, {0}):   # the inline-payload run skipped, the plain one, both
        try:
            want = [r for r in TraceReader(io.BytesIO(data)).stream()
                    if not isinstance(r, Event) or r.nr in wanted]
        except TraceError:
            with pytest.raises(TraceError):
                list(TraceReader(io.BytesIO(data)).stream(syscalls=wanted))
            continue
        assert list(TraceReader(io.BytesIO(data)).stream(syscalls=wanted)) == want
