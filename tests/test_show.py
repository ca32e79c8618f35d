"""`dr show`: exact strace-style text for traces written through the format API."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dr import schema
from dr.formats.strace import Formatter, ShowOptions, quote
from dr.formats.trace import Event, Payload, ProcEvent
from dr.schema import Sub

NR = {n: schema.by_name(n).nr for n in (
    "execve", "brk", "openat", "fstat", "mmap", "close", "read", "write", "clock_gettime",
    "socket", "connect", "poll", "pipe2", "accept4", "exit_group", "newfstatat", "getrandom")}
O_CLOEXEC = 0o2000000
SOCK_CLOEXEC = 0o2000000
NOW = 1_700_000_000_000_000_000  # REALTIME - MONOTONIC offset in the metadata (2023-11-14 22:13:20 UTC)


def ev(tid, name, args, ret, pays=None, t=0, seq=0, flags=0):
    a = tuple(args) + (0,) * (6 - len(args))
    nr = NR[name] if isinstance(name, str) else name
    return Event(tid=tid, nr=nr, args=a, ret=ret, ts_enter=t, ts_exit=t + 500, tgid=100,
                 seq=seq, flags=flags,
                 payloads={s: Payload(s, d) for s, d in (pays or {}).items()})


def stat_buf(mode: int, size: int) -> bytes:
    b = bytearray(144)  # x86_64 struct stat (asm/stat.h)
    struct.pack_into("<QQQIII4xQq", b, 0, 2049, 1234, 1, mode, 0, 0, 0, size)
    return bytes(b)


def sin(port: int, ip: str) -> bytes:
    return struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip) + bytes(8)


def sin6(port: int, ip: str) -> bytes:
    return (struct.pack("<H", socket.AF_INET6) + struct.pack("!HI", port, 0)
            + socket.inet_pton(socket.AF_INET6, ip) + struct.pack("<I", 0))


def sun(path: bytes) -> bytes:
    return struct.pack("<H", socket.AF_UNIX) + path + b"\0"


ENTRY = Sub.ENTRY << 4
READ_DATA = b"\x00\x01\xffabc\"\\\t" + b"y" * 31

EVENTS = [
    ev(100, "execve", (0x1000, 0x2000, 0x3000), 0,
       {0: b"/bin/echo\0", 1: b"echo\0hi\0", 2: b"A=1\0B=2\0C=3\0"}, t=1_000, seq=1),
    ev(100, "brk", (0,), 0x55D4C000, t=2_000, seq=2),
    ev(100, "openat", ((1 << 64) - 100, 0x4000, O_CLOEXEC), 3, {1: b"/etc/ld.so.cache\0"}, t=3_000, seq=3),
    ev(100, "fstat", (3, 0x5000), 0, {1: stat_buf(0o100644, 20863)}, t=4_000, seq=4),
    ev(100, "mmap", (0, 20863, 1, 2, 3, 0), 0x7F1234560000, t=5_000, seq=5),
    ev(100, "close", (3,), 0, t=6_000, seq=6),
    ev(100, "openat", ((1 << 64) - 100, 0x4100, 0o101, 0o644), -2, {1: b"/nope\0"}, t=7_000, seq=7),
    ev(100, "read", (0, 0x6000, 4096), 40, {1: READ_DATA}, t=8_000, seq=8),
    ev(100, "write", (1, 0x7000, 6), 6, {1: b"hello\n"}, t=9_000, seq=9),
    ev(100, "write", (2, 0x7000, 3), 3, {1: b"\x001\n"}, t=10_000, seq=10),
    ev(100, "clock_gettime", (1, 0x8000), 0, {1: struct.pack("<qq", 12, 345)}, t=11_000, seq=11),
    ev(100, "socket", (socket.AF_INET, socket.SOCK_STREAM | SOCK_CLOEXEC, 0), 4, t=12_000, seq=12),
    ev(100, "connect", (4, 0x9000, 16), -111, {1: sin(8080, "127.0.0.1")}, t=13_000, seq=13),
    ev(100, "connect", (5, 0x9000, 28), 0, {1: sin6(443, "::1")}, t=14_000, seq=14),
    ev(100, "connect", (6, 0x9000, 14), 0, {1: sun(b"/run/x.sock")}, t=15_000, seq=15),
    ev(100, "poll", (0xA000, 1, 1000), 1,
       {ENTRY: struct.pack("<ihh", 4, 5, 0), 0: struct.pack("<ihh", 4, 5, 4)}, t=16_000, seq=16),
    ev(100, "pipe2", (0xB000, O_CLOEXEC), 0, {0: struct.pack("<ii", 7, 8)}, t=17_000, seq=17),
    ev(100, "accept4", (3, 0xC000, 0xD000, SOCK_CLOEXEC), 9,
       {1: sin(40000, "10.0.0.2"), 2 | ENTRY: struct.pack("<I", 128), 2: struct.pack("<I", 16)},
       t=18_000, seq=18),
    ev(100, 999, (1, 2, 3, 4, 5, 6), 0, t=19_000, seq=19),
    ev(101, "read", (7, 0xE000, 1), -512, t=20_000, seq=1),
    ev(100, "exit_group", (0,), 0, t=21_000, seq=20, flags=schema.EVENT_FLAGS["NO_EXIT"]),
    ProcEvent(what=schema.PROC_EVENTS["EXIT"], tid=100, tgid=100, ts=22_000, arg0=0),
]

EXPECTED = r'''execve("/bin/echo", ["echo", "hi"], 0x3000 /* 3 vars */) = 0
brk(NULL) = 0x55d4c000
openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3
fstat(3, {st_mode=S_IFREG|0644, st_size=20863, ...}) = 0
mmap(NULL, 20863, PROT_READ, MAP_PRIVATE, 3, 0) = 0x7f1234560000
close(3) = 0
openat(AT_FDCWD, "/nope", O_WRONLY|O_CREAT, 0644) = -1 ENOENT (No such file or directory)
read(0, "\0\1\377abc\"\\\tyyyyyyyyyyyyyyyyyyyyyyy"..., 4096) = 40
write(1, "hello\n", 6) = 6
write(2, "\0001\n", 3) = 3
clock_gettime(CLOCK_MONOTONIC, {tv_sec=12, tv_nsec=345}) = 0
socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0) = 4
connect(4, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}, 16) = -1 ECONNREFUSED (Connection refused)
connect(5, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0
connect(6, {sa_family=AF_UNIX, sun_path="/run/x.sock"}, 14) = 0
poll([{fd=4, events=POLLIN|POLLOUT}], 1, 1000) = 1 ([{fd=4, revents=POLLOUT}])
pipe2([7, 8], O_CLOEXEC) = 0
accept4(3, {sa_family=AF_INET, sin_port=htons(40000), sin_addr=inet_addr("10.0.0.2")}, [128 => 16], SOCK_CLOEXEC) = 9
syscall_999(0x1, 0x2, 0x3, 0x4, 0x5, 0x6) = 0
[pid   101] read(7, 0xe000, 1) = ? ERESTARTSYS (To be restarted if SA_RESTART is set)
[pid   100] exit_group(0) = ?
[pid   100] +++ exited with 0 +++
'''

META = {"tool": "dr", "tids": [100], "clock_offsets": {"realtime_ns": NOW, "boottime_ns": 0}}


@pytest.fixture
def trace(write_trace):
    return write_trace(EVENTS[:8] + ["flush"] + EVENTS[8:], meta=META)


def test_show_prints_exact_strace_lines(trace, run_dr):
    code, out, err = run_dr("show", trace)
    assert (code, err) == (0, "")
    assert out == EXPECTED


def test_show_filters_string_limit_and_hex(trace, run_dr):
    code, out, _ = run_dr("show", trace, "-e", "trace=read,write", "-s", "4", "-x", "--tid", "100")
    assert code == 0
    assert out == ('read(0, "\\x00\\x01\\xff\\x61"..., 4096) = 40\n'
                   'write(1, "hell"..., 6) = 6\n'
                   'write(2, "\\x00\\x31\\x0a", 3) = 3\n'
                   '+++ exited with 0 +++\n')
    code, out, _ = run_dr("show", trace, "-e", "write", "-xx", "-s", "2")
    assert out == 'write(1, "\\x68\\x65"..., 6) = 6\nwrite(2, "\\x00\\x31"..., 3) = 3\n' \
                  '+++ exited with 0 +++\n'
    code, out, _ = run_dr("show", trace, "-e", "trace=!read,write,execve", "--tid", "101")
    assert out == ""


def test_show_timestamps(trace, run_dr, monkeypatch):
    import time
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        code, out, _ = run_dr("show", trace, "-e", "trace=brk,openat", "-tt")
        assert out.splitlines() == [
            "22:13:20.000002 brk(NULL) = 0x55d4c000",
            '22:13:20.000003 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3',
            '22:13:20.000007 openat(AT_FDCWD, "/nope", O_WRONLY|O_CREAT, 0644) = '
            "-1 ENOENT (No such file or directory)",
            "22:13:20.000022 +++ exited with 0 +++",  # strace shows exits whatever -e says
        ]
        code, out, _ = run_dr("show", trace, "-e", "trace=brk", "-ttt")
        assert out == "1700000000.000002 brk(NULL) = 0x55d4c000\n1700000000.000022 +++ exited with 0 +++\n"
        code, out, _ = run_dr("show", trace, "-e", "trace=brk", "-t")
        assert out == "22:13:20 brk(NULL) = 0x55d4c000\n22:13:20 +++ exited with 0 +++\n"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    code, out, _ = run_dr("show", trace, "-e", "trace=close,write", "-r")
    assert out.splitlines()[:3] == [
        "     0.000000 close(3) = 0",
        '     0.000003 write(1, "hello\\n", 6) = 6',
        '     0.000001 write(2, "\\0001\\n", 3) = 3',
    ]


def test_show_reports_losses_and_cut_short_trace(write_trace, run_dr):
    items = [ev(5, "write", (1, 1, 3), 3, {1: b"ab\n"}, seq=1),
             {"t": "loss", "cause": "RINGBUF_EVENT", "count": 7, "cpu": 1}, "flush",
             ev(5, "write", (1, 1, 3), 3, {1: b"cd\n"}, seq=2)]
    path = write_trace(items, summary=None)
    code, out, err = run_dr("show", path)
    assert code == 6
    assert out == 'write(1, "ab\\n", 3) = 3\nwrite(1, "cd\\n", 3) = 3\n'
    assert err.splitlines() == [
        "dr: 7 lost during capture (RINGBUF_EVENT 7)",
        f"dr: trace cut short at byte {path.stat().st_size} of {path.stat().st_size}: "
        "shown up to its last complete frame",
    ]
    # Cut inside the last frame: the first frame's lines, then the notice.
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    code, out, err = run_dr("show", path)
    assert code == 6 and out == 'write(1, "ab\\n", 3) = 3\n'
    assert err.endswith(f"of {len(data) - 5}: shown up to its last complete frame\n")


def test_show_bad_input_gives_one_line(tmp_path, trace, run_dr):
    foreign = tmp_path / "foreign.drt"
    foreign.write_bytes(b"GIF89a" + bytes(100))
    assert run_dr("show", foreign) == (1, "", f"dr: {foreign} is not a dr trace (bad magic) (at byte 0)\n")
    code, out, err = run_dr("show", tmp_path / "missing.drt")
    assert code == 1 and err.startswith("dr: cannot read trace") and "\n" not in err[:-1]
    code, out, err = run_dr("show", trace, "-e", "trace=nosuchcall")
    assert code == 2 and err == "dr: invalid system call 'nosuchcall' in -e trace=nosuchcall\n"
    # A corrupt frame further on: the readable lines first, then one line and exit 1.
    data = bytearray(trace.read_bytes())
    from dr.formats.trace import TraceReader
    fr = TraceReader(trace).frames[2]
    data[fr.offset + 20] ^= 0xFF
    bad = tmp_path / "bad.drt"
    bad.write_bytes(bytes(data))
    code, out, err = run_dr("show", bad)
    assert code == 1 and out == "\n".join(EXPECTED.splitlines()[:8]) + "\n"
    assert err.startswith("dr: corrupt frame") and err.count("\n") == 1


@pytest.mark.parametrize("data, want", [
    (b"plain", '"plain"'),
    (b"a\x00b", '"a\\0b"'),
    (b"\x007", '"\\0007"'),
    (b"\x08\x7f\x80", '"\\10\\177\\200"'),
    (b"\r\n\t\v\f", '"\\r\\n\\t\\v\\f"'),
    (b"x" * 40, '"' + "x" * 32 + '"...'),
])
def test_quote_like_strace(data, want):
    assert quote(data, 32) == want


known = st.sampled_from([s.nr for s in schema.all_syscalls()])
fuzz_events = st.builds(
    Event, tid=st.integers(0, 2**32 - 1), nr=known | st.integers(-(2**63), 2**63 - 1),
    args=st.tuples(*[st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**64 - 100])] * 6),
    ret=st.integers(-(2**63), 2**63 - 1) | st.integers(-600, 10),
    ts_enter=st.integers(0, 2**64 - 1), flags=st.integers(0, 2**16 - 1),
    payloads=st.dictionaries(st.integers(0, 0x4F), st.binary(max_size=300)).map(
        lambda d: {s: Payload(s, b) for s, b in d.items()}))


@settings(max_examples=300, deadline=None)
@given(fuzz_events, st.integers(0, 3), st.integers(0, 2), st.booleans())
def test_formatter_never_fails_on_hostile_events(e, ts, xflag, rel):
    f = Formatter(ShowOptions(strsize=16, xflag=xflag, timestamps=ts, relative=rel),
                  {"tids": [1, 2], "clock_offsets": {"realtime_ns": 2**63}})
    line = f.line(e)
    assert "\n" not in line and "(" in line


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_show_on_damaged_trace_prints_or_raises_trace_error(d):
    from dr.errors import TraceError
    from dr.formats.strace import end_notices, show_lines
    from dr.formats.trace import TraceReader, TraceWriter
    import io

    buf = io.BytesIO()
    w = TraceWriter(buf, META)
    w.write_events(EVENTS[:10])
    w.flush()
    w.write_events(EVENTS[10:])
    w.close({"events": len(EVENTS)})
    data = bytearray(buf.getvalue())
    for _ in range(d.draw(st.integers(1, 3))):
        data[d.draw(st.integers(0, len(data) - 1))] ^= d.draw(st.integers(1, 255))
    if d.draw(st.booleans()):
        data = data[:d.draw(st.integers(0, len(data)))]
    try:
        r = TraceReader(io.BytesIO(bytes(data)))
        lines = list(show_lines(r, ShowOptions(timestamps=2)))
        end_notices(r)
        assert all("\n" not in x for x in lines)
    except TraceError:
        pass
