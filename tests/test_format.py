"""The trace format: round trips, truncation at every byte, corruption, hostile sizes."""

from __future__ import annotations

import io
import struct
import subprocess
import textwrap

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr import schema
from dr.errors import OutputError, TraceError, TraceTruncated
from dr.formats import trace as T
from dr.formats.trace import Event, Payload, ProcEvent, TraceReader, TraceWriter

from conftest import PY, ROOT

U16, U32, U64 = (1 << 16) - 1, (1 << 32) - 1, (1 << 64) - 1
S64 = st.integers(-(1 << 63), (1 << 63) - 1)

payloads = st.dictionaries(
    st.integers(0, U16),
    st.tuples(st.binary(max_size=300) | st.sampled_from([b"", b"x" * (schema.CHUNK * 2 + 5)]),
              st.integers(0, 1000)),
    max_size=3,
).map(lambda d: {s: Payload(s, data, len(data) + extra) for s, (data, extra) in d.items()})

events = st.builds(
    Event, tid=st.integers(0, U32), nr=S64,
    args=st.tuples(*[st.integers(0, U64)] * 6), ret=S64,
    ts_enter=st.integers(0, U64), ts_exit=st.integers(0, U64), tgid=st.integers(0, U32),
    seq=st.integers(0, U64), flags=st.integers(0, U16), cpu=st.integers(0, U32),
    payloads=payloads)
proc_events = st.builds(
    ProcEvent, what=st.integers(0, U16), tid=st.integers(0, U32), tgid=st.integers(0, U32),
    ts=st.integers(0, U64), arg0=S64, arg1=S64, cpu=st.integers(0, U32))
items = st.lists(events | proc_events | st.just("flush")
                 | st.builds(lambda c: {"t": "loss", "cause": "COPY_FAULT", "count": c},
                             st.integers(0, 100))
                 | st.builds(lambda x: {"t": "future-record", "x": x}, S64),
                 max_size=25)


def _write(buf: io.BytesIO, seq: list, meta=None, summary={"events": 1}, frame_bytes=T.FRAME_TARGET):  # noqa: B006
    w = TraceWriter(buf, meta or {"tool": "dr", "argv": ["a", "b"]}, frame_bytes=frame_bytes)
    batch = []
    for it in seq:
        if isinstance(it, (Event, ProcEvent)):
            batch.append(it)
            continue
        if batch:
            w.write_events(batch)
            batch = []
        if it == "flush":
            w.flush()
        else:
            w.write_record(it)
    if batch:
        w.write_events(batch)
    w.close(summary)
    return buf.getvalue()


def _read_all(data: bytes) -> tuple[TraceReader, list]:
    r = TraceReader(io.BytesIO(data))
    return r, list(r.stream())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items)
def test_round_trip_arbitrary_streams(seq):
    data = _write(io.BytesIO(), seq, summary={"events": 7, "syscalls": {"read": 3}})
    r, got = _read_all(data)
    want = [it for it in seq if it != "flush"]
    assert got == want
    assert [e.index for e in got if isinstance(e, Event)] == list(range(sum(isinstance(e, Event) for e in want)))
    assert r.meta["argv"] == ["a", "b"] and r.meta["format_version"] == T.FORMAT_VERSION
    assert r.summary == {"events": 7, "syscalls": {"read": 3}} and not r.truncated
    assert r.losses.get("COPY_FAULT", 0) == sum(it["count"] for it in want if isinstance(it, dict) and it["t"] == "loss")


def test_filters_and_seek_by_frame():
    seq = []
    for i in range(60):
        seq.append(Event(tid=100 + i % 3, nr=i % 2, seq=i, payloads={1: Payload(1, b"p%d" % i)}))
        if i % 10 == 9:
            seq.append("flush")
    r, allev = _read_all(_write(io.BytesIO(), seq))
    assert len(r.frames) == 1 + 6 + 1  # meta, six event frames, summary
    assert [e.index for e in r.events(tids=[101])] == list(range(1, 60, 3))
    assert all(e.name == "write" for e in r.events(syscalls=["write"]))
    assert [e.seq for e in r.events(tids={100}, syscalls={0})] == [i for i in range(60) if i % 3 == 0 and i % 2 == 0]
    # Seeking to frame k gives the tail of the full listing, with the same indexes and payloads.
    for k in range(len(r.frames)):
        tail = list(r.events(start_frame=k))
        assert tail == allev[len(allev) - len(tail):]
        assert [e.index for e in tail] == [e.index for e in allev[len(allev) - len(tail):]]
    assert allev[7].payload(1) == b"p7"


def test_payload_chunks_reassembled_across_blocks_and_frames(tmp_path):
    big = bytes(range(256)) * 200  # 51200 bytes: four chunks
    ev = Event(tid=7, nr=0, args=(3, 0, len(big), 0, 0, 0), ret=len(big), seq=5,
               payloads={1: Payload(1, big, len(big) + 99)})
    block = T.encode_block([ev])
    # Split the span after the second payload record: the event lands in the next frame.
    pos, cuts = 0, []
    while pos < len(block):
        ln = struct.unpack_from("<I", block, pos)[0]
        pos += 8 + ((ln + 7) & ~7)
        cuts.append(pos)
    w = TraceWriter(tmp_path / "c.drt", {})
    w.write_block(block[:cuts[1]])
    w.flush()
    w.write_block(block[cuts[1]:])
    w.close({})
    r = TraceReader(tmp_path / "c.drt")
    (got,) = list(r.events())
    assert got.payload(1) == big and got.payloads[1].total == len(big) + 99
    assert got.payloads[1].truncated
    (seeked,) = list(r.events(start_frame=2))
    assert seeked.payload(1) == big


def test_discarded_and_unknown_records_are_skipped(tmp_path):
    a = Event(tid=1, nr=0, seq=1)
    b = Event(tid=1, nr=1, seq=2)
    blk = bytearray(T.encode_block([a]))
    struct.pack_into("<I", blk, 0, struct.unpack_from("<I", blk, 0)[0] | T.RB_DISCARD)
    unknown = struct.pack("<HH", 77, 0) + b"future"
    blk += struct.pack("<II", len(unknown), 0) + unknown + bytes(-len(unknown) % 8)
    blk += T.encode_block([b])
    w = TraceWriter(tmp_path / "d.drt", {})
    w.write_block(blk)
    w.write_record({"t": "from-the-future", "v": [1, 2]})
    w.close({})
    r = TraceReader(tmp_path / "d.drt")
    assert list(r.events()) == [b]
    assert r.skipped_records == 2
    assert [x for x in r.stream() if isinstance(x, dict)] == [{"t": "from-the-future", "v": [1, 2]}]


def _small_trace() -> tuple[bytes, list[Event], list[int]]:
    """A trace of several small frames; returns bytes, its events, frame ends."""
    seq = []
    for i in range(6):
        seq.append(Event(tid=5, nr=1, args=(1, 0, 3, 0, 0, 0), ret=3, seq=i + 1,
                         payloads={1: Payload(1, b"ab%d" % i)}))
        if i % 2:
            seq.append("flush")
    seq.append({"t": "loss", "cause": "RINGBUF_EVENT", "count": 2})
    data = _write(io.BytesIO(), seq)
    r = TraceReader(io.BytesIO(data))
    ends = [f.offset + 4 + f.length for f in r.frames]
    return data, [x for x in seq if isinstance(x, Event)], ends


def test_truncation_at_every_byte_offset():
    data, evs, ends = _small_trace()
    full_events = evs
    # events complete by the end of each frame: meta, 2, 2, 2, loss, summary
    per_frame_end = {}
    r = TraceReader(io.BytesIO(data))
    for f in r.frames:
        per_frame_end[f.offset + 4 + f.length] = sum(r._count(i) for i in range(f.index + 1))
    assert len(data) < 2000
    for cut in range(len(data) + 1):
        part = data[:cut]
        try:
            r = TraceReader(io.BytesIO(part))
        except TraceTruncated as e:
            assert cut < ends[0], cut  # only a trace without its metadata frame fails to open
            assert e.exit_code == 6
            continue
        got = list(r.events())
        done = max([e for e in ends if e <= cut])
        assert got == full_events[:per_frame_end[done]], cut
        assert r.truncated == (cut != len(data)), cut
        assert r.end == done
        assert (r.summary is None) == r.truncated
        assert r.meta["argv"] == ["a", "b"]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_byte_flips_give_trace_or_trace_error(d):
    data, _evs, _ends = _small_trace()
    buf = bytearray(data)
    for _ in range(d.draw(st.integers(1, 4))):
        i = d.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= d.draw(st.integers(1, 255))
    try:
        r = TraceReader(io.BytesIO(bytes(buf)))
        list(r.stream())
        assert isinstance(r.losses, dict)
    except TraceError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_header(tail):
    try:
        r = TraceReader(io.BytesIO(T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0) + tail))
        list(r.stream())
    except TraceError:
        pass


def _frame(records: list, content_size: bool = True) -> bytes:
    raw = b"".join(msgpack.packb(r, use_bin_type=True) for r in records)
    z = zstandard.ZstdCompressor(write_checksum=True, write_content_size=content_size).compress(raw)
    return struct.pack("<I", len(z)) + z


HEAD = T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0)


@pytest.mark.parametrize("blob, words, offset", [
    (b"\x7fELF" + bytes(60), "not a dr trace", 0),
    (T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION + 1, 0), "newer", 8),
    (T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 1), "unknown flags", 12),
    (HEAD + struct.pack("<I", 0xFFFFFFF0) + b"\x28\xb5\x2f\xfd", "frame length", 16),
    (HEAD + struct.pack("<I", 8) + b"notzstd!", "zstd", 20),
    (HEAD + _frame([{"t": "ev", "d": b""}]), "metadata", 16),
    (HEAD + _frame([[1, 2]]), "not a map", 16),
    (HEAD + _frame([{"t": "meta"}], content_size=False), "content size", 20),
])
def test_foreign_corrupt_and_newer_files_name_problem_and_offset(blob, words, offset):
    with pytest.raises(TraceError) as ei:
        TraceReader(io.BytesIO(blob))
    assert words in str(ei.value) and ei.value.offset == offset
    assert f"(at byte {offset})" in str(ei.value)


def test_hostile_sizes_are_refused_without_allocating():
    # A payload chunk at offset 4 GiB - 1 (would make the reader allocate 4 GiB).
    pay = T._PAY.st.pack(T._PAY.kind, 1, 1, 1, U32 - 1, 1, 1) + b"x"
    blk = struct.pack("<II", len(pay), 0) + pay + bytes(-len(pay) % 8)
    r = TraceReader(io.BytesIO(HEAD + _frame([{"t": "meta"}]) + _frame([{"t": "ev", "d": blk}])))
    with pytest.raises(TraceError, match="exceeds"):
        list(r.events())
    overrun = struct.pack("<II", 1 << 20, 0) + bytes(16)
    r = TraceReader(io.BytesIO(HEAD + _frame([{"t": "meta"}]) + _frame([{"t": "ev", "d": overrun}])))
    with pytest.raises(TraceError, match="overruns"):
        list(r.events())
    # A frame header claiming more content than MAX_FRAME_RAW.
    big = zstandard.ZstdCompressor(write_content_size=True)
    cobj = big.compressobj(size=T.MAX_FRAME_RAW + 1)
    z = cobj.compress(b"\0" * 1024) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    blob = HEAD + _frame([{"t": "meta"}]) + struct.pack("<I", len(z)) + z
    with pytest.raises(TraceError, match="out of range"):  # refused from the header, at open
        TraceReader(io.BytesIO(blob + _frame([{"t": "summary"}])))


def test_writer_reports_disk_full():
    with pytest.raises(OutputError, match="No space left"):
        TraceWriter("/dev/full", {"tool": "dr"})


def test_writer_refuses_to_create_in_missing_dir(tmp_path):
    with pytest.raises(OutputError, match="cannot create trace"):
        TraceWriter(tmp_path / "no" / "such" / "dir.drt", {})


def test_writer_close_without_summary_reads_as_cut_short(tmp_path):
    w = TraceWriter(tmp_path / "x.drt", {"pid": 1})
    w.write_events([Event(tid=1, nr=39, ret=1, seq=1)])
    w.close(None)
    r = TraceReader(tmp_path / "x.drt")
    assert r.truncated and r.summary is None and [e.name for e in r.events()] == ["getpid"]


def test_import_without_bcc_or_seccomp(tmp_path, write_trace):
    path = write_trace([Event(tid=1, nr=1, args=(1, 0, 3, 0, 0, 0), ret=3, seq=1,
                              payloads={1: Payload(1, b"hi\n")})])
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("bcc", "seccomp", "pyseccomp"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import dr.formats, dr.formats.trace, dr.formats.strace
        from dr.cli import main
        assert not any(m.split(".")[0] in ("bcc", "seccomp") for m in sys.modules), sys.modules
        sys.argv = ["dr", "show", {str(path)!r}]
        main()
    """)
    p = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == 'write(1, "hi\\n", 3)                     = 3\n'  # strace's -a 40


def test_spec_shows_the_generated_record_layouts():
    doc = (ROOT / "docs" / "trace-format.md").read_text()
    body = doc.split("<!-- layout-table:start -->\n")[1].split("<!-- layout-table:end -->")[0]
    assert body.strip() == T.layout_table().strip()
    assert f"FORMAT_VERSION = {T.FORMAT_VERSION}" in doc and "did you bump FORMAT_VERSION?" in doc


def test_oversized_spans_split_at_record_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "MAX_BLOCK", 4096)
    evs = [Event(tid=3, nr=0, ret=100, seq=i + 1, payloads={1: Payload(1, bytes([i]) * 100)})
           for i in range(200)]
    w = TraceWriter(tmp_path / "s.drt", {})
    w.write_block(T.encode_block(evs))
    w.close({})
    r = TraceReader(tmp_path / "s.drt")
    assert list(r.events()) == evs
    blocks = [rec for i in range(len(r.frames)) for rec in r._records(i) if rec["t"] == "ev"]
    assert len(blocks) > 5 and all(len(b["d"]) <= 4096 for b in blocks)


def test_write_failure_leaves_a_readable_cut_short_trace(tmp_path):
    """The file-size limit (RLIMIT_FSIZE) makes write(2) fail mid-capture, like a full disk."""
    path = tmp_path / "full.drt"
    code = textwrap.dedent(f"""
        import os, resource, signal
        from dr.errors import OutputError
        from dr.formats.trace import TraceWriter, Event, Payload
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        w = TraceWriter({str(path)!r}, {{"tool": "dr"}})
        n = 0
        try:
            while True:
                n += 1
                w.write_events([Event(tid=1, nr=1, ret=3000, seq=n,
                                      payloads={{1: Payload(1, os.urandom(3000))}})])
                w.flush()
        except OutputError as e:
            print(n - 1, e)
    """)
    p = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    written, msg = p.stdout.split(" ", 1)
    assert "File too large" in msg
    r = TraceReader(path)
    assert r.truncated and r.end == r.size == path.stat().st_size
    assert [e.seq for e in r.events()] == list(range(1, int(written) + 1))
