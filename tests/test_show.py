"""`dr show`: exact strace-style text for traces written through the format API."""

from __future__ import annotations

import os
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
    nr = (NR.get(name) or schema.by_name(name).nr) if isinstance(name, str) else name
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
brk(NULL)                               = 0x55d4c000
openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3
fstat(3, {st_mode=S_IFREG|0644, st_size=20863, ...}) = 0
mmap(NULL, 20863, PROT_READ, MAP_PRIVATE, 3, 0) = 0x7f1234560000
close(3)                                = 0
openat(AT_FDCWD, "/nope", O_WRONLY|O_CREAT, 0644) = -1 ENOENT (No such file or directory)
read(0, "\0\1\377abc\"\\\tyyyyyyyyyyyyyyyyyyyyyyy"..., 4096) = 40
write(1, "hello\n", 6)                  = 6
write(2, "\0001\n", 3)                  = 3
clock_gettime(CLOCK_MONOTONIC, {tv_sec=12, tv_nsec=345}) = 0
socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_IP) = 4
connect(4, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}, 16) = -1 ECONNREFUSED (Connection refused)
connect(5, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0
connect(6, {sa_family=AF_UNIX, sun_path="/run/x.sock"}, 14) = 0
poll([{fd=4, events=POLLIN|POLLOUT}], 1, 1000) = 1 ([{fd=4, revents=POLLOUT}])
pipe2([7, 8], O_CLOEXEC)                = 0
accept4(3, {sa_family=AF_INET, sin_port=htons(40000), sin_addr=inet_addr("10.0.0.2")}, [128 => 16], SOCK_CLOEXEC) = 9
syscall_999(0x1, 0x2, 0x3, 0x4, 0x5, 0x6) = 0
[pid   101] read(7, 0xe000, 1)          = ? ERESTARTSYS (To be restarted if SA_RESTART is set)
[pid   100] exit_group(0)               = ?
[pid   100] +++ exited with 0 +++
'''

META = {"tool": "dr", "tids": [100], "clock_offsets": {"realtime_ns": NOW, "boottime_ns": 0},
        "started_ns": 0}


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
    assert out == ('read(0, "\\x00\\x01\\xff\\x61"..., 4096)    = 40\n'
                   'write(1, "hell"..., 6)                  = 6\n'
                   'write(2, "\\x00\\x31\\x0a", 3)             = 3\n'
                   # thread 101 appeared in between: from there on, prefixes (strace -f)
                   '[pid   100] +++ exited with 0 +++\n')
    code, out, _ = run_dr("show", trace, "-e", "write", "-xx", "-s", "2")
    assert out == 'write(1, "\\x68\\x65"..., 6)              = 6\n' \
                  'write(2, "\\x00\\x31"..., 3)              = 3\n' \
                  '+++ exited with 0 +++\n'  # thread 101 has no fork record and no write
    code, out, _ = run_dr("show", trace, "-e", "trace=!read,write,execve", "--tid", "101")
    assert out == ""


def test_show_timestamps(trace, run_dr, monkeypatch):
    import time
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        code, out, _ = run_dr("show", trace, "-e", "trace=brk,openat", "-tt")
        assert out.splitlines() == [
            "22:13:20.000002 brk(NULL)               = 0x55d4c000",
            '22:13:20.000003 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3',
            '22:13:20.000007 openat(AT_FDCWD, "/nope", O_WRONLY|O_CREAT, 0644) = '
            "-1 ENOENT (No such file or directory)",
            "22:13:20.000022 +++ exited with 0 +++",  # strace shows exits whatever -e says
        ]
        code, out, _ = run_dr("show", trace, "-e", "trace=brk", "-ttt")
        assert out == "1700000000.000002 brk(NULL)             = 0x55d4c000\n1700000000.000022 +++ exited with 0 +++\n"
        code, out, _ = run_dr("show", trace, "-e", "trace=brk", "-t")
        assert out == "22:13:20 brk(NULL)                      = 0x55d4c000\n22:13:20 +++ exited with 0 +++\n"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    code, out, _ = run_dr("show", trace, "-e", "trace=close,write", "-r")
    assert out.splitlines()[:3] == [
        "     0.000000 close(3)                  = 0",
        '     0.000003 write(1, "hello\\n", 6)    = 6',
        '     0.000001 write(2, "\\0001\\n", 3)    = 3',
    ]


def test_show_reports_losses_and_cut_short_trace(write_trace, run_dr):
    items = [ev(5, "write", (1, 1, 3), 3, {1: b"ab\n"}, seq=1),
             {"t": "loss", "cause": "RINGBUF_EVENT", "count": 7, "cpu": 1}, "flush",
             ev(5, "write", (1, 1, 3), 3, {1: b"cd\n"}, seq=2)]
    path = write_trace(items, summary=None)
    code, out, err = run_dr("show", path)
    assert code == 6
    assert out == 'write(1, "ab\\n", 3)                     = 3\n' \
                  'write(1, "cd\\n", 3)                     = 3\n'
    assert err.splitlines() == [
        "dr: 7 lost during capture (RINGBUF_EVENT 7)",
        "dr: trace cut short: it ends without the capture's closing record (dr capture was "
        "killed or ran out of space); everything it holds is shown",
    ]
    # Cut inside the last frame: the first frame's lines, then the notice.
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    code, out, err = run_dr("show", path)
    assert code == 6 and out == 'write(1, "ab\\n", 3)                     = 3\n'
    assert "dr: trace cut short: its last " in err and \
        "bytes are an incomplete frame; shown up to the last complete one\n" in err


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
@given(fuzz_events, st.integers(0, 3), st.integers(0, 2), st.booleans(), st.integers(0, 2))
def test_formatter_never_fails_on_hostile_events(e, ts, xflag, rel, yflag):
    f = Formatter(ShowOptions(strsize=16, xflag=xflag, timestamps=ts, relative=rel,
                              decode_fds=yflag, acolumn=40),
                  {"tids": [1, 2], "clock_offsets": {"realtime_ns": 2**63}, "pid": 1,
                   "fds": [{"fd": 3, "type": "socket", "local": "1.2.3.4:5"}]})
    line = f.line(e)
    assert "\n" not in line and "(" in line
    line = f.line(e)  # again, with whatever the first one did to the fd state
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
        opts = ShowOptions(timestamps=2, decode_fds=d.draw(st.integers(0, 2)),
                           since_ns=d.draw(st.none() | st.integers(0, 30_000)))
        lines = list(show_lines(r, opts))
        end_notices(r)
        assert all("\n" not in x for x in lines)
    except TraceError:
        pass


# --------------------------------------------------------------------------- -y / -yy

FD_META = {"tool": "dr", "pid": 100, "tids": [100], "cwd": "/srv", "started_ns": 0,
           "clock_offsets": {"realtime_ns": NOW},
           "fds": [{"fd": 0, "type": "file", "path": "/dev/null"},
                   {"fd": 1, "type": "pipe", "path": "pipe:[4242]"}]}
FD_EVENTS = [
    ev(100, "openat", ((1 << 64) - 100, 0x1000, 0), 3, {1: b"hosts\0"}, t=1_000, seq=1),
    ev(100, "read", (3, 0x2000, 16), 5, {1: b"127.0"}, t=2_000, seq=2),
    ev(100, "write", (1, 0x2000, 1), 1, {1: b"x"}, t=3_000, seq=3),
    ev(100, "close", (3,), 0, t=4_000, seq=4),
    ev(100, "socket", (socket.AF_INET, socket.SOCK_STREAM | SOCK_CLOEXEC, 6), 3, t=5_000, seq=5),
    ev(100, "connect", (3, 0x3000, 16), 0, {1: sin(8000, "127.0.0.1")}, t=6_000, seq=6),
    ev(100, "getsockname", (3, 0x3000, 0x4000), 0,
       {1: sin(45678, "127.0.0.1"), 2 | ENTRY: struct.pack("<I", 16), 2: struct.pack("<I", 16)},
       t=7_000, seq=7),
    ev(100, "sendto", (3, 0x5000, 3, 0, 0, 0), 3, {1: b"GET"}, t=8_000, seq=8),
    ev(100, "pipe2", (0xB000, O_CLOEXEC), 0, {0: struct.pack("<ii", 4, 5)}, t=9_000, seq=9),
    ev(100, "write", (5, 0x2000, 1), 1, {1: b"y"}, t=9_500, seq=10),
    ev(100, "eventfd2", (0, O_CLOEXEC), 6, t=10_000, seq=10),
    ev(100, "close", (6,), 0, t=11_000, seq=11),
    ev(100, "epoll_create1", (O_CLOEXEC,), 6, t=12_000, seq=12),
    ev(100, "epoll_ctl", (6, 1, 4, 0x6000), 0, {3: struct.pack("<IQ", 1, 4)}, t=13_000, seq=13),
    ev(100, "poll", (0xA000, 1, (1 << 32) - 1), 1,
       {ENTRY: struct.pack("<ihh", 4, 1, 0), 0: struct.pack("<ihh", 4, 1, 1)}, t=14_000, seq=14),
]


def test_show_y_decorates_fds_with_paths(write_trace, run_dr):
    path = write_trace(FD_EVENTS, meta=FD_META)
    code, out, err = run_dr("show", path, "-y", "-a", "0")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        'openat(AT_FDCWD</srv>, "hosts", O_RDONLY) = 3</srv/hosts>',
        'read(3</srv/hosts>, "127.0", 16) = 5',
        'write(1<pipe:[4242]>, "x", 1) = 1',
        "close(3</srv/hosts>) = 0",
        "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_TCP) = 3<socket:[4]>",
        'connect(3<socket:[4]>, {sa_family=AF_INET, sin_port=htons(8000), '
        'sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        'getsockname(3<socket:[4]>, {sa_family=AF_INET, sin_port=htons(45678), '
        'sin_addr=inet_addr("127.0.0.1")}, [16]) = 0',
        'sendto(3<socket:[4]>, "GET", 3, 0, NULL, 0) = 3',
        "pipe2([4<pipe:[1]>, 5<pipe:[1]>], O_CLOEXEC) = 0",
        'write(5<pipe:[1]>, "y", 1) = 1',
        "eventfd2(0, EFD_CLOEXEC) = 6<anon_inode:[eventfd]>",
        "close(6<anon_inode:[eventfd]>) = 0",
        "epoll_create1(EPOLL_CLOEXEC) = 6<anon_inode:[eventpoll]>",
        "epoll_ctl(6<anon_inode:[eventpoll]>, EPOLL_CTL_ADD, 4<pipe:[1]>, "
        "{events=EPOLLIN, data={u32=4, u64=4}}) = 0",
        "poll([{fd=4<pipe:[1]>, events=POLLIN}], 1, -1) = 1 ([{fd=4, revents=POLLIN}])",
    ]


def test_show_yy_decorates_sockets_with_addresses(write_trace, run_dr):
    path = write_trace(FD_EVENTS, meta=FD_META)
    code, out, _ = run_dr("show", path, "-yy", "-e", "trace=socket,connect,sendto,read")
    assert out.splitlines() == [
        'read(3</srv/hosts>, "127.0", 16)        = 5',  # fds opened by hidden calls are known
        "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_TCP) = 3<TCP:[4]>",
        'connect(3<TCP:[4]>, {sa_family=AF_INET, sin_port=htons(8000), '
        'sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        'sendto(3<TCP:[127.0.0.1:45678->127.0.0.1:8000]>, "GET", 3, 0, NULL, 0) = 3',
    ]


# --------------------------------------------------------------------------- --since / --until


def test_show_since_until_relative_and_wall_clock(trace, run_dr, monkeypatch):
    want = ["mmap(NULL, 20863, PROT_READ, MAP_PRIVATE, 3, 0) = 0x7f1234560000",
            "close(3) = 0"]
    code, out, err = run_dr("show", trace, "-a", "0", "--since", "0.000005", "--until", "6e-6")
    assert (code, err, out.splitlines()) == (0, "", want)
    # Absolute: the metadata's realtime offset maps wall clock to the capture clock.
    code, out, _ = run_dr("show", trace, "-a", "0", "--since", "2023-11-14T22:13:20.000005Z",
                          "--until", "2023-11-14T23:13:20.000006+01:00")
    assert out.splitlines() == want
    import time
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        code, out, _ = run_dr("show", trace, "-a", "0", "--since", "22:13:20.000021")
        # thread 101 ran before the window: the trace has two threads, so prefixes
        assert out.splitlines() == ["[pid   100] exit_group(0) = ?", "[pid   100] +++ exited with 0 +++"]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    code, out, err = run_dr("show", trace, "--since", "yesterday")
    assert code == 2 and out == "" and err.count("\n") == 1 and "--since 'yesterday'" in err
    code, out, err = run_dr("show", trace, "--since", "2", "--until", "1")
    assert code == 2 and err == "dr: --until 1 is before --since 2\n"


# --------------------------------------------------------------------------- strace conventions


def lines_of(items, meta=None, **opts):
    f = Formatter(ShowOptions(**opts), meta or {"tids": [100]})
    out = []
    for it in items:
        s = f.line(it) if isinstance(it, Event) else f.proc_line(it)
        if s is not None:
            out.append(s)
    return out


def rusage(utime_us: int) -> bytes:
    return struct.pack("<qqqq", 0, utime_us, 0, 0) + bytes(144 - 32)


SIG = schema.PROC_EVENTS["SIGNAL"]
EXIT = schema.PROC_EVENTS["EXIT"]
LONG = b"/usr/lib/locale/C.utf8/LC_MESSAGES/SYS_LC_MESSAGES"


def test_strace_conventions_for_common_calls():
    F = (1 << 64) - 100
    caps = struct.pack("<6I", 0x21, 0x21, 0, 0x100, 0x100, 0)
    items = [
        ev(100, "openat", (F, 1, 0o2000000), 3, {1: LONG + b"\0"}),
        ev(100, "openat", (F, 1, 0o4000 | 0o2000000 | 0o200000 | 0o400 | 0o400000), 3, {1: b"/\0"}),
        ev(100, "openat", (F, 1, 0o1 | 0o100 | 0o200 | 0o1000 | 0o2000 | 0o4010000, 0o600), -17,
           {1: b"/f\0"}),
        ev(100, "access", (1, 0), -2, {0: b"/etc/selinux/config\0"}),
        ev(100, "faccessat2", (F, 1, 7, 0x200), 0, {1: b"/\0"}),
        ev(100, "arch_prctl", (0x1002, 0x7F0000001000), 0),
        ev(100, "arch_prctl", (0x1011, 0), 1),
        ev(100, "futex", (0x7F00, 129, 2147483647, 0, 3, 0), 0),
        ev(100, "futex", (0x7F00, 9 | 128 | 256, 1, 0, 0, 0xFFFFFFFF), -11),
        ev(100, "futex", (0x7F00, 0, 1, 0x7E00, 0, 0), -110),
        ev(100, "futex", (0x7F00, 4 | 128, 1, 2, 0x7F10, 0), 0),
        ev(100, "socket", (socket.AF_INET6, socket.SOCK_DGRAM | SOCK_CLOEXEC | 0o4000, 0), 3),
        ev(100, "socket", (socket.AF_UNIX, socket.SOCK_STREAM, 0), 4),
        ev(100, "tkill", (100, 12), 0),
        ev(100, "kill", (101, 0), 0),
        ev(100, "wait4", (101, 0x9000, 0, 0xA000), 101, {1: struct.pack("<i", 3 << 8), 3: rusage(614)}),
        ev(100, "wait4", (102, 0x9000, 1, 0), 102, {1: struct.pack("<i", 9)}),
        ev(100, "capget", (0x1000, 0x2000), 0,
           {0 | ENTRY: struct.pack("<Ii", 0x20080522, 0), 0: struct.pack("<Ii", 0x20080522, 0), 1: caps}),
        ev(100, "prlimit64", (0, 3, 0, 0x3000), 0, {3: struct.pack("<QQ", 8192 * 1024, 2**64 - 1)}),
        ev(100, "rseq", (0x7F20, 32, 0, 0x53053053), 0),
        ev(100, "statx", (F, 0x1000, 0x800, 0x2), 0, {1: b"/\0", 4: struct.pack(
            "<IIQIIIH2xQQ", 0x7FF, 4096, 0x2000, 1, 0, 0, 0o40755, 2, 4096) + bytes(200)}),
        ev(100, "getdents64", (3, 0x8000, 32768), 48,
           {1: b"".join(struct.pack("<QqHB", 1, 0, 24, 4) + b"ab\0\0\0" for _ in range(2))}),
        ev(100, "getrandom", (0x9000, 4, 1), 4, {0: b"\xf9\xaeM\x01"}),
        ev(100, "madvise", (0x7F50, 40960, 4), 0),
        ev(100, "setsockopt", (3, 6, 1, 0x1000, 4), 0, {3: struct.pack("<i", 1)}),
        ev(100, "fcntl", (3, 1, 0), 1),
        ev(100, "fcntl", (3, 4, 0o4002), 0),
        ev(100, "ioctl", (3, 0x5451, 0), 0),
        ev(100, "getcwd", (0x9000, 4096), 8, {0: b"/tmp/sx\0"}),
        ev(100, "clone", (0x1200000 | 17, 0, 0, 0x7F30, 0), 101),
        ev(100, "rt_sigaction", (13, 0x1000, 0x2000, 8), 0,
           {1: struct.pack("<QQQQ", 1, 0x0C000000, 0x7F40, 1 << 16), 2: bytes(32)}),
        ev(100, "setitimer", (0, 0x1000, 0), 0, {1: struct.pack("<4q", 0, 0, 0, 10000)}),
        ProcEvent(what=SIG, tid=100, tgid=100, arg0=14, arg1=0x401000),
        ProcEvent(what=SIG, tid=100, tgid=100, arg0=15, arg1=0),
        ProcEvent(what=EXIT, tid=100, tgid=100, arg0=-1),
    ]
    assert lines_of(items) == [
        f'openat(AT_FDCWD, "{LONG.decode()}", O_RDONLY|O_CLOEXEC) = 3',  # paths never cut at -s
        'openat(AT_FDCWD, "/", O_RDONLY|O_NOCTTY|O_NONBLOCK|O_NOFOLLOW|O_CLOEXEC|O_DIRECTORY) = 3',
        'openat(AT_FDCWD, "/f", O_WRONLY|O_CREAT|O_EXCL|O_TRUNC|O_APPEND|O_SYNC, 0600) = '
        "-1 EEXIST (File exists)",
        'access("/etc/selinux/config", F_OK) = -1 ENOENT (No such file or directory)',
        'faccessat2(AT_FDCWD, "/", R_OK|W_OK|X_OK, AT_REMOVEDIR) = 0',
        "arch_prctl(ARCH_SET_FS, 0x7f0000001000) = 0",
        "arch_prctl(ARCH_GET_CPUID) = 1",
        "futex(0x7f00, FUTEX_WAKE_PRIVATE, 2147483647) = 0",
        "futex(0x7f00, FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME, 1, NULL, "
        "FUTEX_BITSET_MATCH_ANY) = -1 EAGAIN (Resource temporarily unavailable)",
        "futex(0x7f00, FUTEX_WAIT, 1, 0x7e00) = -1 ETIMEDOUT (Connection timed out)",
        "futex(0x7f00, FUTEX_CMP_REQUEUE_PRIVATE, 1, 2, 0x7f10, 0) = 0",
        "socket(AF_INET6, SOCK_DGRAM|SOCK_CLOEXEC|SOCK_NONBLOCK, IPPROTO_IP) = 3",
        "socket(AF_UNIX, SOCK_STREAM, 0) = 4",
        "tkill(100, SIGUSR2) = 0",
        "kill(101, 0) = 0",
        "wait4(101, [{WIFEXITED(s) && WEXITSTATUS(s) == 3}], 0, "
        "{ru_utime={tv_sec=0, tv_usec=614}, ru_stime={tv_sec=0, tv_usec=0}, ...}) = 101",
        "wait4(102, [{WIFSIGNALED(s) && WTERMSIG(s) == SIGKILL}], WNOHANG, NULL) = 102",
        "capget({version=_LINUX_CAPABILITY_VERSION_3, pid=0}, "
        "{effective=1<<CAP_CHOWN|1<<CAP_KILL|1<<CAP_CHECKPOINT_RESTORE, "
        "permitted=1<<CAP_CHOWN|1<<CAP_KILL|1<<CAP_CHECKPOINT_RESTORE, inheritable=0}) = 0",
        "prlimit64(0, RLIMIT_STACK, NULL, {rlim_cur=8192*1024, rlim_max=RLIM64_INFINITY}) = 0",
        "rseq(0x7f20, 0x20, 0, 0x53053053) = 0",
        'statx(AT_FDCWD, "/", AT_STATX_SYNC_AS_STAT|AT_NO_AUTOMOUNT, STATX_MODE, '
        "{stx_mask=STATX_BASIC_STATS, stx_attributes=STATX_ATTR_MOUNT_ROOT, "
        "stx_mode=S_IFDIR|0755, stx_size=4096, ...}) = 0",
        "getdents64(3, 0x8000 /* 2 entries */, 32768) = 48",
        'getrandom("\\xf9\\xae\\x4d\\x01", 4, GRND_NONBLOCK) = 4',
        "madvise(0x7f50, 40960, MADV_DONTNEED) = 0",
        "setsockopt(3, SOL_TCP, TCP_NODELAY, [1], 4) = 0",
        "fcntl(3, F_GETFD) = 0x1 (flags FD_CLOEXEC)",
        "fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0",
        "ioctl(3, FIOCLEX) = 0",
        'getcwd("/tmp/sx", 4096) = 8',
        "clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, "
        "child_tidptr=0x7f30) = 101",
        "rt_sigaction(SIGPIPE, {sa_handler=SIG_IGN, sa_mask=[CHLD], sa_flags=SA_RESTORER|SA_ONSTACK, "
        "sa_restorer=0x7f40}, {sa_handler=SIG_DFL, sa_mask=[], sa_flags=0}, 8) = 0",
        "setitimer(ITIMER_REAL, {it_interval={tv_sec=0, tv_usec=0}, "
        "it_value={tv_sec=0, tv_usec=10000}}, NULL) = 0",
        "--- SIGALRM {si_signo=SIGALRM} ---",
        "--- SIGTERM {si_signo=SIGTERM} ---",
        "+++ killed by SIGTERM +++",
    ]
    # The other threads of a process that calls exit_group end with its status.
    assert lines_of([ev(100, "exit_group", (3,), 0, flags=schema.EVENT_FLAGS["NO_EXIT"]),
                     ProcEvent(what=EXIT, tid=101, tgid=100, arg0=-1),
                     ProcEvent(what=EXIT, tid=100, tgid=100, arg0=3)], tids=frozenset({100})) == [
        "exit_group(3) = ?", "[pid   100] +++ exited with 3 +++"]  # two threads: prefixes
    # A worker thread's exit says it is a thread's, not the process's.
    assert lines_of([ev(100, "exit_group", (3,), 0, flags=schema.EVENT_FLAGS["NO_EXIT"]),
                     ProcEvent(what=EXIT, tid=101, tgid=100, arg0=-1)]) == [
        "exit_group(3) = ?", "[pid   101] +++ thread exited with 3 +++"]
    # SIGKILL is never seen delivered, only its end.
    assert lines_of([ProcEvent(what=SIG, tid=7, tgid=7, arg0=9, arg1=0),
                     ProcEvent(what=EXIT, tid=7, tgid=7, arg0=-1)]) == ["+++ killed by SIGKILL +++"]


# --------------------------------------------------------------------------- against real strace


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (CAP_BPF)")
def test_show_matches_real_strace_on_ls(tmp_path):
    """`dr show` of a captured `/bin/ls /` is strace's text, line for line, once the values
    that differ between two runs (addresses, the pid, random bytes) are masked."""
    import re
    import shutil
    import subprocess
    import sys

    strace = shutil.which("strace")
    assert strace, "strace is installed by scripts/setup.sh"
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}
    drt, st = tmp_path / "ls.drt", tmp_path / "ls.strace"
    r = subprocess.run([sys.executable, "-m", "dr", "capture", "-o", drt, "--", "/bin/ls", "/"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    subprocess.run([strace, "-o", st, "/bin/ls", "/"], stdout=subprocess.DEVNULL, env=env,
                   check=True, timeout=60)
    r = subprocess.run([sys.executable, "-m", "dr", "show", drt], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr

    def masked(text: str) -> list[str]:
        text = re.sub(r"0x[0-9a-f]{5,}", "ADDR", text)
        text = re.sub(r'getrandom\("[^"]*"', 'getrandom("RANDOM"', text)
        text = re.sub(r"(set_tid_address\(ADDR\)\s*= )\d+", r"\1PID", text)
        return text.splitlines()

    ours, theirs = masked(r.stdout), masked(st.read_text())
    assert ours == theirs


def test_trace_classes_are_declared_syscalls_and_parse():
    from dr.errors import UsageError
    from dr.formats.strace import parse_trace_expr
    from dr.schema.classes import TRACE_CLASSES

    declared = {s.name for s in schema.all_syscalls()}
    for cls, members in TRACE_CLASSES.items():
        assert members and members <= declared, cls
    net = parse_trace_expr(["trace=%network"])
    assert schema.by_name("connect").nr in net and schema.by_name("read").nr not in net
    both = parse_trace_expr(["trace=%network,%clock"])
    assert schema.by_name("clock_gettime").nr in both and net < both
    assert schema.by_name("connect").nr not in parse_trace_expr(["trace=!%network"])
    with pytest.raises(UsageError, match="invalid syscall class '%nope'"):
        parse_trace_expr(["trace=%nope"])
