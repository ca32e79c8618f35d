"""Hostile input: traces and bundles built by an attacker, read by every consumer.

The only acceptable outcomes of reading any file are a decoded trace or a
:class:`dr.errors.DrError` (through the CLI: one ``dr: ...`` line on stderr,
a non-zero exit, no traceback). Three kinds of hostile trace:

* structure-aware: valid header and zstd frames holding hostile msgpack
  records (metadata of the wrong shapes, event blocks whose probe records have
  random kinds, lengths, flags and fields, payloads of random bytes on every
  syscall the schema decodes, loss/summary records of the wrong types);
* mutated: a real trace with bytes flipped, cut or spliced;
* garbage: arbitrary bytes behind a valid or invalid header.

Every consumer runs on each: TraceReader (meta, summary, losses, frames,
events() with and without filters, stream() from every frame, verify()),
``dr show`` (several flag sets), ``dr stats`` (tables and --json) and
``dr export jsonl``. Budgets are fixed and derandomized (no example database)
so CI is deterministic; bench/fuzz.py runs the same properties for longer.
Suite budget: about 15 s.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr import schema
from dr.errors import DrError
from dr.formats import trace as T
from dr.formats.trace import Event, Payload, ProcEvent, TraceReader

from conftest import ROOT

#: Examples per property in the suite; bench/fuzz.py overrides through DR_FUZZ_EXAMPLES.
EXAMPLES = int(os.environ.get("DR_FUZZ_EXAMPLES", "0")) or None


def fuzz_settings(n: int):
    """Deterministic, bounded hypothesis settings (bench/fuzz.py raises the count)."""
    return settings(max_examples=EXAMPLES or n, deadline=None, derandomize=not EXAMPLES,
                    database=None, suppress_health_check=list(HealthCheck))


U16, U32, U64 = (1 << 16) - 1, (1 << 32) - 1, (1 << 64) - 1
_EVT = schema.record("syscall_event")
_PAY = schema.record("payload")
_PROC = schema.record("proc_event")
_ZC = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True)
_NRS = [s.nr for s in schema.all_syscalls()]

# ----------------------------------------------------------------------------- strategies

ints = (st.integers(-(1 << 63), U64) | st.sampled_from([0, 1, -1, 2, 3, 0x7FFFFFFF, U32, U64, -(1 << 63)]))
scalars = st.none() | st.booleans() | ints | st.floats(allow_nan=True) | st.text(max_size=20) \
    | st.binary(max_size=40)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | ints, c, max_size=4), max_leaves=12)

# Metadata fields that readers and tools look at, each given a plausible or a wrong shape.
fd_entry = st.fixed_dictionaries({}, optional={
    "fd": values | st.integers(-5, 1 << 40), "type": values | st.sampled_from(
        ["file", "socket", "pipe", "anon", "tty"]), "path": values, "offset": values,
    "flags": values, "local": values | st.sampled_from(["127.0.0.1:80", "[::1]:1", "/tmp/s", ""]),
    "peer": values | st.sampled_from(["127.0.0.1:5", "x:y:z", ":"]), "state": values,
    "family": values, "proto": values})
meta_fields = {
    "tool": values, "version": values, "pid": values | st.integers(0, 1 << 33),
    "tids": values | st.lists(ints, max_size=5), "mode": values | st.sampled_from(["spawn", "attach"]),
    "clock_offsets": values | st.fixed_dictionaries({}, optional={"realtime_ns": values | ints,
                                                                  "boottime_ns": values | ints}),
    "clock": values, "argv": values | st.lists(st.text(max_size=10), max_size=3),
    "command": values, "env": values, "cwd": values, "exe": values, "hostname": values,
    "fds": values | st.lists(fd_entry, max_size=4), "threads": values, "maps": values,
    "snaplen": values, "started_ns": values, "redaction": values, "filters": values,
    "comm": values, "name": values, "arch": values, "kernel": values,
}
metas = st.fixed_dictionaries({"t": st.just("meta")}, optional=meta_fields)


@st.composite
def hostile_events(draw):
    """A syscall event of any declared syscall with random args and payload bytes."""
    nr = draw(st.sampled_from(_NRS) | st.integers(-(1 << 63), (1 << 63) - 1))
    sc = schema.by_nr(nr)
    nargs = len(sc.args) if sc else 6
    slots = [i | (sub << 4) for i in range(max(nargs, 1)) for sub in (0, 1, 2, 3, 4)]
    pays = draw(st.dictionaries(st.sampled_from(slots) | st.integers(0, U16),
                                st.tuples(st.binary(max_size=200), st.integers(-2, 1 << 20)),
                                max_size=3))
    small = st.integers(-3, 70) | st.integers(0, U64)  # fds, sizes, flags
    return Event(tid=draw(st.integers(0, 6) | st.integers(0, U32)), nr=nr,
                 args=tuple(a & U64 for a in draw(st.lists(small, min_size=6, max_size=6))),
                 ret=draw(st.integers(-4200, 300) | st.integers(-(1 << 63), (1 << 63) - 1)),
                 ts_enter=draw(st.integers(0, U64)), ts_exit=draw(st.integers(0, U64)),
                 tgid=draw(st.integers(0, 6) | st.integers(0, U32)), seq=draw(st.integers(0, 8) | st.integers(0, U64)),
                 flags=draw(st.integers(0, U16)), cpu=draw(st.integers(0, 3)),
                 payloads={s: Payload(s, d, max(t, -1) if t != -2 else len(d) + 5)
                           for s, (d, t) in pays.items()})


proc_events = st.builds(ProcEvent, what=st.integers(0, 6) | st.integers(0, U16),
                        tid=st.integers(0, 6) | st.integers(0, U32), tgid=st.integers(0, 6),
                        ts=st.integers(0, U64), arg0=st.integers(-(1 << 63), (1 << 63) - 1),
                        arg1=st.integers(-(1 << 63), (1 << 63) - 1), cpu=st.integers(0, 3))


def _rb(body: bytes, flags: int = 0, ln: int | None = None) -> bytes:
    n = len(body) if ln is None else ln
    return struct.pack("<II", (n & 0x3FFFFFFF) | flags, 0) + body + b"\0" * (((len(body) + 7) & ~7) - len(body))


@st.composite
def raw_probe_records(draw):
    """One ring-buffer record with a hostile header or body (kinds, lengths, flag bits)."""
    kind = draw(st.sampled_from([_EVT.kind, _PAY.kind, _PROC.kind, 0, 99]) | st.integers(0, U16))
    size = {_EVT.kind: _EVT.size, _PAY.kind: _PAY.size, _PROC.kind: _PROC.size}.get(kind, 16)
    body = bytearray(draw(st.binary(min_size=size, max_size=size + 64)))
    body[0:2] = struct.pack("<H", kind)
    if kind == _PAY.kind and draw(st.booleans()):  # plausible payload header, hostile numbers
        k, slot, tid, seq = _PAY.kind, draw(st.integers(0, U16)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
        off, plen, total = (draw(st.integers(0, U32)) for _ in range(3))
        hdr = _PAY.st.pack(k, slot, tid, seq, off if draw(st.booleans()) else off % 4096,
                           plen if draw(st.booleans()) else len(body) - _PAY.size, total)
        body[:_PAY.size] = hdr
    cut = draw(st.integers(0, len(body)))
    body = bytes(body[:cut]) if draw(st.integers(0, 9)) == 0 else bytes(body)
    flags = draw(st.sampled_from([0, 0, 0, T.RB_DISCARD, T.RB_BUSY]))
    ln = draw(st.none() | st.none() | st.integers(0, 0x3FFFFFFF))
    return _rb(body, flags, ln)


blocks = st.one_of(
    st.lists(hostile_events() | proc_events, max_size=6).map(T.encode_block),
    st.lists(raw_probe_records(), max_size=5).map(b"".join),
    st.tuples(st.lists(hostile_events(), max_size=3).map(T.encode_block),
              raw_probe_records()).map(b"".join),
    st.binary(max_size=120),
)
records = st.one_of(
    st.builds(lambda d: {"t": "ev", "d": d}, blocks),
    st.builds(lambda d: {"t": "ev", "d": d}, values),
    st.fixed_dictionaries({"t": st.just("loss")}, optional={"cause": values | st.sampled_from(
        list(schema.LOSS_CAUSES)), "count": values | st.integers(-5, U64), "cpu": values}),
    st.fixed_dictionaries({"t": st.just("summary")}, optional={
        "events": values, "losses": values, "syscalls": values, "exit_status": values,
        "duration_ns": values, "stop_reason": values}),
    st.fixed_dictionaries({"t": st.just("redactions")}, optional={"spans": values}),
    metas,
    st.dictionaries(st.just("t") | st.text(max_size=3), values, max_size=3),
    values,
)


def frame(recs: list) -> bytes:
    raw = b"".join(msgpack.packb(r, use_bin_type=True) for r in recs)
    z = _ZC.compress(raw)
    return struct.pack("<I", len(z)) + z


@st.composite
def hostile_traces(draw) -> bytes:
    """A well-framed trace whose records are hostile."""
    head = T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, draw(st.sampled_from([0, 0, 1 << 16, 1])))
    first = [draw(metas | records)] + draw(st.lists(records, max_size=3))
    frames = [first] + draw(st.lists(st.lists(records, min_size=0, max_size=5), max_size=4))
    data = head + b"".join(frame(f) for f in frames)
    if draw(st.integers(0, 4)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return data


# ----------------------------------------------------------------------------- consumers


def consume_reader(data: bytes) -> None:
    """Use every part of the TraceReader API; DrError is the only failure allowed."""
    try:
        r = TraceReader(io.BytesIO(data))
    except DrError:
        return
    with r:
        _ = (r.meta, r.summary, r.truncated, r.version, r.size, r.end, list(r.frames))
        for it in (lambda: r.losses, lambda: r.loss_records, r.verify,
                   lambda: list(r.stream()),
                   lambda: list(r.events(tids={0, 1, 2}, syscalls={"read", "write", 0, 257})),
                   lambda: list(r.stream(tids=[1])),
                   lambda: [(ev.name, ev.errno, ev.duration_ns, ev.payload(1)) for ev in r.events()],
                   *[(lambda k=k: list(r.stream(k))) for k in range(len(r.frames) + 1)],
                   *[(lambda k=k: list(r.events(start_frame=k))) for k in range(len(r.frames) + 1)]):
            try:
                it()
            except DrError:
                pass


def consume_tools(data: bytes) -> None:
    """dr show (several option sets), dr stats and the jsonl/perfetto exports as libraries."""
    from dr.formats import stats as S
    from dr.formats import stats_render
    from dr.formats.export_jsonl import export_jsonl
    from dr.formats.export_perfetto import export_perfetto
    from dr.formats.strace import ShowOptions, end_notices, show_lines

    for opts in (ShowOptions(), ShowOptions(strsize=0, xflag=2, timestamps=3, relative=True),
                 ShowOptions(xflag=1, timestamps=1, tids=frozenset({1, 2}))):
        _try(lambda o=opts: _show(data, o, show_lines, end_notices))
    _try(lambda: _with(data, lambda r: (stats_render.render(S.compute(r), io.StringIO(), rich_output=False),
                                        json.dumps(S.compute(r).as_dict(), default=str))))
    _try(lambda: _with(data, lambda r: export_jsonl(r, io.StringIO())))
    _try(lambda: _with(data, lambda r: export_perfetto(r, io.StringIO())))


def _show(data, opts, show_lines, end_notices):
    with TraceReader(io.BytesIO(data)) as r:
        for _ in show_lines(r, opts):
            pass
        end_notices(r)


def _with(data, fn):
    with TraceReader(io.BytesIO(data)) as r:
        fn(r)


def _try(fn) -> None:
    try:
        fn()
    except DrError:
        pass


# ----------------------------------------------------------------------------- properties


@fuzz_settings(100)
@given(hostile_traces())
def test_structured_hostile_traces_read_or_raise_dr_error(data):
    consume_reader(data)


@fuzz_settings(50)
@given(hostile_traces())
def test_show_stats_exports_survive_structured_hostile_traces(data):
    consume_tools(data)


def _real_trace() -> bytes:
    """A small valid trace with every record kind, many syscalls and payloads, 3 frames."""
    buf = io.BytesIO()
    meta = {"tool": "dr", "pid": 10, "tids": [10, 11], "mode": "spawn", "argv": ["x"],
            "clock_offsets": {"realtime_ns": 10**18, "boottime_ns": 5},
            "fds": [{"fd": 0, "type": "tty", "path": "/dev/pts/0"},
                    {"fd": 3, "type": "socket", "local": "127.0.0.1:80", "peer": "127.0.0.1:5000",
                     "family": "AF_INET", "proto": "tcp"}]}
    w = T.TraceWriter(buf, meta)
    seq = 0
    items = []
    for name, args, ret, pays in [
        ("read", (3, 0x1000, 100), 5, {1: b"hello"}), ("write", (1, 0x2000, 6), 6, {1: b"world\n"}),
        ("openat", (U64 - 99, 0x3000, 0), 4, {1: b"/etc/hosts\0"}), ("close", (4,), 0, {}),
        ("accept4", (3, 0x10, 0x20, 0), 5, {1: bytes.fromhex("02001f907f0000010000000000000000"),
                                            2: b"\x10\0\0\0"}),
        ("recvfrom", (5, 0x40, 64, 0, 0, 0), 3, {1: b"GET"}), ("sendto", (5, 0x50, 2, 0, 0, 0), 2, {1: b"OK"}),
        ("newfstatat", (U64 - 99, 0x60, 0x70, 0), 0, {2: bytes(144)}),
        ("clock_gettime", (1, 0x80), 0, {1: struct.pack("<qq", 5, 6)}),
        ("getrandom", (0x90, 8, 0), 8, {0: os.urandom(8)}), ("epoll_wait", (7, 0xa0, 4, -1 & U64), 1,
                                                            {1: bytes(12)}),
        ("openat", (U64 - 99, 0xb0, 0), -2, {1: b"/nope\0"}), ("exit_group", (0,), 0, {}),
    ]:
        sc = schema.by_name(name)
        seq += 1
        items.append(Event(tid=10 + seq % 2, tgid=10, nr=sc.nr, args=tuple(args) + (0,) * (6 - len(args)),
                           ret=ret, ts_enter=1000 * seq, ts_exit=1000 * seq + 50, seq=seq,
                           payloads={s: Payload(s, d) for s, d in pays.items()}))
        if seq % 5 == 0:
            w.write_events(items)
            items = []
            w.write_loss(cause="RINGBUF_EVENT", count=1, cpu=0)
            w.flush()
    items.append(ProcEvent(schema.PROC_EVENTS["FORK"], 10, 10, 99, 12, 10))
    items.append(ProcEvent(schema.PROC_EVENTS["EXIT"], 11, 10, 100, 0, 0))
    w.write_events(items)
    w.close({"events": seq, "losses": {"RINGBUF_EVENT": 2}, "syscalls": {"read": 1}})
    return buf.getvalue()


REAL = _real_trace()


@fuzz_settings(250)
@given(st.lists(st.tuples(st.integers(0, len(REAL) - 1), st.integers(1, 255)), min_size=1, max_size=6),
       st.integers(0, len(REAL)))
def test_mutated_real_trace_reads_or_raises_dr_error(flips, cut):
    data = bytearray(REAL)
    for off, x in flips:
        data[off] ^= x
    data = bytes(data[:cut]) if cut > T.HEADER.size else bytes(data)
    consume_reader(data)
    consume_tools(data)


@fuzz_settings(120)
@given(st.binary(max_size=400), st.booleans())
def test_garbage_after_a_valid_header(tail, framed):
    head = T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0)
    body = struct.pack("<I", len(tail) + 4) + b"\x28\xb5\x2f\xfd" + tail if framed else tail
    consume_reader(head + body)
    consume_tools(head + body)


def test_reader_survives_a_frame_decoding_to_every_msgpack_type():
    """Each frame holds one non-map value: a clear error, never AttributeError."""
    head = T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0)
    metaf = frame([{"t": "meta"}])
    for v in (None, 1, -1, 1.5, "x", b"x", [], [1], {}, {1: 2}, {"t": 3}, {"t": None},
              msgpack.ExtType(1, b"x"), True):
        for data in (head + frame([v]), head + metaf + frame([v]), head + metaf + frame([{"t": "ev", "d": v}])):
            consume_reader(data)
            consume_tools(data)


HUGE_OFFSETS = """
import io, resource, struct, sys
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
from dr import schema
from dr.errors import DrError
from dr.formats import trace as T
sys.path.insert(0, sys.argv[1])
from test_hostile import _rb, frame, _EVT, _PAY
ladder = sys.argv[2] == "ladder"
recs = []
for seq in range(8):
    if ladder:  # 15 one-byte chunks, each just within any per-gap limit of 16 MiB
        for k in range(1, 16):
            recs.append(_rb(_PAY.st.pack(_PAY.kind, 1, 1, seq, k * (16 << 20) - 1, 1, 1) + b"x"))
    else:       # one one-byte chunk at 256 MiB - 1
        recs.append(_rb(_PAY.st.pack(_PAY.kind, 1, 1, seq, T.MAX_PAYLOAD - 1, 1, 1) + b"x"))
    recs.append(_rb(_EVT.st.pack(_EVT.kind, 0, 0, 1, 1, seq, 0, 3, 0, 1, 0, 0, 0, 1, 1, 2)))
data = (T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0) + frame([{"t": "meta", "snaplen": 4096}])
        + frame([{"t": "ev", "d": b"".join(recs)}]))
print(len(data), "bytes", flush=True)
try:
    with T.TraceReader(io.BytesIO(data)) as r:
        n = sum(len(ev.payload(1) or b"") for ev in r.events())
except DrError as e:
    print("refused:", e)
else:
    print("decoded", n)
"""


@pytest.mark.parametrize("shape", [
    "one_chunk",
    "ladder",
])
def test_hostile_payload_offsets_do_not_exhaust_memory(shape):
    """Payload chunks at huge offsets (a trace under 2 KiB) read within 1.5 GiB of address space.

    Found by this suite: the reader padded the gap before a chunk with zeros
    and decodes a whole event block before yielding, so 64 one-byte chunks at
    256 MiB cost 16 GiB and three minutes. The trace claims snaplen 4096; the
    reader should refuse or clamp, not allocate.
    """
    r = subprocess.run([sys.executable, "-c", HUGE_OFFSETS, str(ROOT / "tests"), shape],
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr[-600:]
    assert r.returncode == 0 and ("refused:" in r.stdout or "decoded" in r.stdout), r.stdout


# ----------------------------------------------------------------------------- through the CLI

GARBAGE = {
    "empty": b"",
    "text": b"hello, I am not a trace\n",
    "elf": open(sys.executable, "rb").read(4096),
    "zstd-stream": zstandard.ZstdCompressor().compress(b"x" * 1000),
    "magic-only": T.MAGIC,
    "newer-version": T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION + 1, 0) + b"\0" * 16,
    "unknown-flags": T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 1),
    "huge-frame-length": T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0) + struct.pack("<I", U32) + b"\x28\xb5\x2f\xfd",
    "meta-not-a-map": T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0) + frame([[1, 2, 3]]),
    "meta-wrong-shapes": T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0) + frame([{
        "t": "meta", "pid": "x", "tids": 5, "clock_offsets": "soon", "fds": {"a": 1},
        "argv": 7, "env": [1], "exe": 3, "threads": "t"}]) + frame([{"t": "ev", "d": REAL[40:200]}]),
    "bad-block": T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0) + frame([{"t": "meta"}])
    + frame([{"t": "ev", "d": b"\xff" * 64}]),
    "cut-real": REAL[:len(REAL) // 2],
    "flipped-real": REAL[:100] + bytes([REAL[100] ^ 0xFF]) + REAL[101:],
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
@pytest.mark.parametrize("cmd", [["show"], ["show", "-xx", "-ttt", "-r"], ["stats"], ["stats", "--json"],
                                 ["export", "jsonl"], ["export", "perfetto", "-o", "OUT"],
                                 ["export", "pcap", "-o", "OUT"]])
def test_cli_on_hostile_files_in_process(tmp_path, run_dr, name, cmd):
    p = tmp_path / f"{name}.drt"
    p.write_bytes(GARBAGE[name])
    cmd = [str(tmp_path / "out") if c == "OUT" else c for c in cmd]
    code, out, err = run_dr(*cmd, p)
    assert "Traceback" not in err
    if name in ("cut-real",):
        assert code == 6 and "cut short" in err
        return
    if code == 0:
        return  # the file happened to decode (meta-wrong-shapes may): the output is a listing
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("dr: ") for ln in lines), err
    assert code in (1, 6), (code, err)


@pytest.mark.parametrize("name", ["text", "newer-version", "huge-frame-length", "bad-block", "cut-real"])
def test_cli_subprocess_one_line_no_traceback(tmp_path, name):
    """The installed `dr` command: one stderr line, non-zero exit, no traceback."""
    p = tmp_path / "x.drt"
    p.write_bytes(GARBAGE[name])
    for cmd in (["show"], ["stats"]):
        r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dr"), *cmd, str(p)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "Traceback" not in r.stderr
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert err and err[-1].startswith("dr: "), r.stderr
        if name != "cut-real":
            assert len(err) == 1, r.stderr


def test_cli_on_a_directory_and_a_missing_file(tmp_path, run_dr):
    for target in (tmp_path, tmp_path / "missing.drt"):
        for cmd in (["show"], ["stats"]):
            code, _out, err = run_dr(*cmd, target)
            assert code == 1 and "Traceback" not in err
            assert err.startswith("dr: cannot read trace ") and len(err.strip().splitlines()) == 1, err


# ----------------------------------------------------------------------------- bundles


def _bundle_mod():
    try:
        from dr.formats import bundle
    except ImportError:  # pragma: no cover - the bundle reader is part of the tree
        pytest.skip("dr.formats.bundle is not in this tree")
    return bundle


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory):
    bundle = _bundle_mod()
    d = tmp_path_factory.mktemp("bundle")
    tr = d / "t.drt"
    tr.write_bytes(REAL)
    out = d / "b.drb"
    bundle.create([str(tr)], str(out), note="hostile", redact=False)
    return out.read_bytes()


def consume_bundle(tmp_path, data: bytes) -> None:
    bundle = _bundle_mod()
    p = tmp_path / "x.drb"
    p.write_bytes(data)
    for fn in (bundle.is_bundle, bundle.info, bundle.verify):
        try:
            fn(str(p))
        except DrError:
            pass
    try:
        with bundle.open_bundle(str(p), dir=str(tmp_path)) as ob:
            bundle.check_binaries(ob, strict=False)
            for t in ob.traces:
                consume_reader(open(t, "rb").read())
    except DrError:
        pass


@fuzz_settings(60)
@given(data=st.data())
def test_mutated_bundles_give_dr_errors_only(tmp_path_factory, real_bundle, data):
    tmp = tmp_path_factory.mktemp("mb")
    blob = bytearray(real_bundle)
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(blob)))
    consume_bundle(tmp, bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob))


@fuzz_settings(60)
@given(members=st.lists(st.tuples(
    st.sampled_from(["manifest.json", "manifest.sha256", "README.md", "redaction-report.json",
                     "traces/t.drt", "binaries/ab", "../x", "/etc/x", "traces/../../y", "a" * 300]),
    st.binary(max_size=200) | st.sampled_from([b"{}", b"[]", b'{"bundle_format_version": 1}',
                                              b'{"bundle_format_version": 99}', REAL[:300]]),
    st.sampled_from(["file", "file", "symlink", "dir", "fifo"])), max_size=6))
def test_crafted_tar_bundles_give_dr_errors_only(tmp_path_factory, members):
    import tarfile

    tmp = tmp_path_factory.mktemp("cb")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body, kind in members:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = len(body)
                tar.addfile(ti, io.BytesIO(body))
            else:
                ti.type = {"symlink": tarfile.SYMTYPE, "dir": tarfile.DIRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
                ti.linkname = "/etc/passwd"
                tar.addfile(ti)
    consume_bundle(tmp, zstandard.ZstdCompressor().compress(raw.getvalue()))
    # nothing was written outside the extraction directory
    assert not (tmp.parent / "x").exists() and not (tmp.parent / "y").exists()


def test_bundle_cli_on_garbage(tmp_path, run_dr):
    _bundle_mod()
    for name in ("empty", "text", "zstd-stream", "elf"):
        p = tmp_path / f"{name}.drb"
        p.write_bytes(GARBAGE[name])
        for cmd in (["bundle", "verify"], ["bundle", "info"]):
            code, _out, err = run_dr(*cmd, p)
            assert code != 0 and "Traceback" not in err
            assert err.startswith("dr: ") and len(err.strip().splitlines()) == 1, err


def test_fuzz_bench_imports_these_properties():
    """bench/fuzz.py drives the same properties; keep its entry points importable."""
    assert (ROOT / "bench" / "fuzz.py").exists()


def _raw_frame(raw: bytes) -> bytes:
    z = _ZC.compress(raw)
    return struct.pack("<I", len(z)) + z


@pytest.mark.parametrize("shape", ["list", "map"])
@pytest.mark.parametrize("cmd", [["stats"], ["stats", "--json"], ["export", "jsonl", "-o", "OUT"],
                                 ["export", "perfetto", "-o", "OUT"], ["bundle", "create", "-o", "OUT"]])
def test_deeply_nested_metadata_is_one_line(tmp_path, run_dr, shape, cmd):
    """A meta whose argv nests 1000 deep (msgpack allows 1024) made json.dumps, stats and
    bundle redaction raise RecursionError: a traceback. The reader refuses it at its frame."""
    nest = b"\x91" * 1000 + b"\xa1x" if shape == "list" else b"\x81\xa1x" * 1000 + b"\xa1x"
    p = tmp_path / "deep.drt"
    p.write_bytes(T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0)
                  + _raw_frame(b"\x83\xa1t\xa4meta\xa4tids\x90\xa4argv" + nest)
                  + frame([{"t": "summary", "events": 0}]))
    code, _out, err = run_dr(*[str(tmp_path / "out") if c == "OUT" else c for c in cmd], p)
    assert code == 1 and "Traceback" not in err, err
    assert err.strip().splitlines() == [
        "dr: " + (f"trace {p}: " if cmd[0] == "bundle" else "")
        + "corrupt records in frame (lists or maps nested more than 32 deep) (at byte 16)"], err


@pytest.mark.parametrize("cmd", [["bundle", "info"], ["bundle", "verify"], ["show"], ["stats"]])
def test_deeply_nested_bundle_manifest_is_one_line(tmp_path, run_dr, cmd):
    """A bundle whose manifest.json is 100000 '[': json.loads raised RecursionError."""
    import tarfile
    body = b"[" * 100000 + b"]" * 100000
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ti = tarfile.TarInfo("manifest.json")
        ti.size = len(body)
        tar.addfile(ti, io.BytesIO(body))
    p = tmp_path / "deep.drb"
    p.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    code, _out, err = run_dr(*cmd, p)
    assert code != 0 and "Traceback" not in err, err
    assert err.strip().splitlines() == [f"dr: bundle {p}: member manifest.json is not valid JSON"], err


OBJECT_BOMB = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from dr.cli import main
main(["stats", sys.argv[1]])
"""


@pytest.mark.parametrize("elem, count", [(b"\x90", 60_000_000), (b"\xa2ab", 19_000_000)])
def test_a_frame_of_millions_of_tiny_values_is_refused_small(tmp_path, elem, count):
    """A 13 KB trace within every byte budget (8 KB of random bytes keep the frame under
    16384x) whose 60 MB frame is 60 million empty lists or 19 million two-byte strings:
    decoding took 3-6.5 GB and minutes. Refused at MAX_VALUES, in well under 1 GiB."""
    from dr.formats.trace_read import MAX_VALUES
    meta = (b"\x84\xa1t\xa4meta\xa4tids\x90\xa3pad\xc5\x20\x00" + os.urandom(8192)
            + b"\xa1x\xdd" + struct.pack(">I", count) + elem * count)
    p = tmp_path / "objects.drt"
    p.write_bytes(T.HEADER.pack(T.MAGIC, T.FORMAT_VERSION, 0) + _raw_frame(meta))
    assert p.stat().st_size < 64 << 10
    r = subprocess.run([sys.executable, "-c", OBJECT_BOMB, str(p)], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"dr: corrupt records in frame (more than {MAX_VALUES} values) (at byte 16)"], r.stderr
