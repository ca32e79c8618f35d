"""`dr stats` and the fd map: counts, errors, latency, bytes per fd and connection.

The traces here are written through the format API (TraceWriter.write_events)
with known durations and payloads, so every number is checked exactly; the
real-capture checks are in test_export.py.
"""

from __future__ import annotations

import json
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr import schema
from dr.errors import ExitCode
from dr.formats import stats as S
from dr.formats import stats_render as R
from dr.formats.fdmap import FdMap, parse_sockaddr, transfers
from dr.formats.trace import Event, Payload, ProcEvent, TraceReader

NO_EXIT = schema.EVENT_FLAGS["NO_EXIT"]
AT_FDCWD = 2**64 - 100
O_CLOEXEC = 0o2000000

REQ = b"GET /file HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: test\r\n\r\n"
BODY = bytes(range(256)) * 600  # 150 KiB: more than one 64 KiB segment
RESP = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY


def sin(host: str, port: int) -> bytes:
    """struct sockaddr_in (ip(7)) or sockaddr_in6 (ipv6(7)) bytes."""
    if ":" in host:
        return (struct.pack("<H", 10) + struct.pack(">HI", port, 0)
                + socket.inet_pton(socket.AF_INET6, host) + b"\0" * 4)
    return struct.pack("<H", 2) + struct.pack(">H", port) + socket.inet_aton(host) + b"\0" * 8


class Script:
    """Builds Events with known times: each call lasts ``dur`` ns, 500 ns apart."""

    def __init__(self, t0: int = 5_000_000_000) -> None:
        self.t = t0
        self.items: list = []
        self.seq: dict[int, int] = {}

    def __call__(self, tid: int, name: str, args=(), ret: int = 0, pay=None, dur: int = 1000,
                 flags: int = 0, tgid: int = 100) -> Event:
        self.seq[tid] = self.seq.get(tid, 0) + 1
        t0 = self.t
        self.t += dur + 500
        ev = Event(tid, schema.by_name(name).nr, tuple(args) + (0,) * (6 - len(args)), ret,
                   t0, 0 if flags & NO_EXIT else t0 + dur, tgid, self.seq[tid], flags, 0,
                   {slot: Payload(slot, d) for slot, d in (pay or {}).items()})
        self.items.append(ev)
        return ev

    def proc(self, what: str, tid: int, tgid: int, arg0: int = 0, arg1: int = 0) -> None:
        self.items.append(ProcEvent(schema.PROC_EVENTS[what], tid, tgid, self.t, arg0, arg1))


def http_client_script(host: str = "127.0.0.1", lport: int = 45678, sport: int = 8000) -> Script:
    """curl-like: connect (non-blocking), getsockname, send the request, receive
    the response in three reads, EOF, close; a second thread reads /etc/hosts."""
    s = Script()
    fam = 10 if ":" in host else 2
    s(100, "socket", (fam, 1 | O_CLOEXEC | 0o4000, 6), 3)
    s(100, "connect", (3, 0x1000, 16), -115, {1: sin(host, sport)})          # EINPROGRESS
    s(100, "getsockname", (3, 0x1000, 0x2000), 0, {1: sin(host, lport)})
    s(100, "sendto", (3, 0x3000, len(REQ), 0x4000), len(REQ), {1: REQ}, dur=2000)
    s.proc("FORK", 100, 100, 101, 100)                                       # a thread
    s(101, "openat", (AT_FDCWD, 0x6000, O_CLOEXEC), 4, {1: b"/etc/hosts\0"})
    s(101, "read", (4, 0x7000, 4096), 12, {1: b"127.0.0.1 lh"}, dur=3000)
    s(101, "read", (4, 0x7000, 4096), -11)                                    # EAGAIN
    s(101, "close", (4,), 0)
    s(101, "openat", (AT_FDCWD, 0x6000, 0), -2, {1: b"/nope\0"})              # ENOENT
    parts = [RESP[:70000], RESP[70000:100000], RESP[100000:]]
    for i, p in enumerate(parts):
        s(100, "recvfrom", (3, 0x5000, 102400), len(p), {1: p}, dur=10_000 * (i + 1))
    s(100, "recvfrom", (3, 0x5000, 102400), 0)                                # EOF
    s(100, "close", (3,), 0)
    s(100, "write", (1, 0x8000, 6), 6, {1: b"hello\n"})
    s(100, "exit_group", (0,), 0, flags=NO_EXIT)
    return s


META = {"tool": "dr", "mode": "spawn", "pid": 100, "tids": [100], "cwd": "/tmp",
        "argv": ["curl", "-s", "http://127.0.0.1:8000/file"],
        "clock_offsets": {"realtime_ns": 1_700_000_000_000_000_000, "boottime_ns": 0},
        "fds": [{"fd": 0, "type": "chr", "path": "/dev/null"},
                {"fd": 1, "type": "pipe", "path": "pipe:[77]"},
                {"fd": 2, "type": "chr", "path": "/dev/pts/0"}]}


@pytest.fixture
def http_trace(write_trace):
    s = http_client_script()
    items = s.items + [{"t": "loss", "cause": "RINGBUF_EVENT", "count": 2, "cpu": 1}]
    return write_trace(items, meta=META, summary={"events": 15})


def test_stats_counts_errors_latency_bytes(http_trace):
    with TraceReader(http_trace) as r:
        st = S.compute(r)
    counts = st.counts()
    assert counts == {"socket": 1, "connect": 1, "getsockname": 1, "sendto": 1, "openat": 2,
                      "read": 2, "close": 2, "recvfrom": 4, "write": 1, "exit_group": 1}
    assert st.events == 16
    by = {s.name: s for s in st.syscalls}
    assert by["openat"].errors == {"ENOENT": 1}
    assert by["read"].errors == {"EAGAIN": 1}
    assert by["connect"].errors == {"EINPROGRESS": 1}
    assert by["exit_group"].errors == {} and by["exit_group"].max_ns == 0  # never returned
    # recvfrom took 10, 20, 30 and 1 µs: nearest-rank p50 = 10 µs, p99 = max = 30 µs.
    assert (by["recvfrom"].p50_ns, by["recvfrom"].p99_ns, by["recvfrom"].max_ns) == (10_000, 30_000, 30_000)
    assert by["read"].total_ns == 4000
    conn, = st.connections
    assert (conn.proto, conn.local, conn.peer) == ("TCP", "127.0.0.1:45678", "127.0.0.1:8000")
    assert (conn.bytes_in, conn.bytes_out) == (len(RESP), len(REQ))
    assert (conn.captured_in, conn.captured_out) == (len(RESP), len(REQ))
    files = {f.label: f for f in st.files}
    assert files["/etc/hosts"].bytes_in == 12 and files["/etc/hosts"].fds == ["100:4"]
    assert files["pipe:[77]"].bytes_out == 6
    th = {t.tid: t for t in st.threads}
    assert (th[100].syscalls, th[101].syscalls) == (11, 5)
    assert th[101].errors == 2 and th[100].bytes_in == len(RESP)
    assert th[100].name == "curl"
    assert st.losses == {"RINGBUF_EVENT": 2} and st.lost == 2
    assert st.flagged == {"NO_EXIT": 1}
    assert st.proc_events == {"FORK": 1}


def test_stats_cli_json_matches_library(http_trace, run_dr):
    code, out, err = run_dr("stats", http_trace, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert {s["name"]: s["count"] for s in d["syscalls"]}["recvfrom"] == 4
    c, = d["connections"]
    assert (c["local"], c["peer"], c["bytes_in"], c["bytes_out"]) == (
        "127.0.0.1:45678", "127.0.0.1:8000", len(RESP), len(REQ))
    assert d["losses"] == {"RINGBUF_EVENT": 2} and d["complete"] is True
    assert {s["name"]: s for s in d["syscalls"]}["openat"]["errors"] == {"ENOENT": 1}


def test_stats_cli_plain_text(http_trace, run_dr):
    code, out, err = run_dr("stats", http_trace)
    assert code == 0, err
    assert "\x1b[" not in out  # not a terminal: no colour codes, no box drawing
    assert "─" not in out
    line = next(ln for ln in out.splitlines() if ln.startswith("TCP "))
    assert line.split()[:5] == ["TCP", "127.0.0.1:45678", "127.0.0.1:8000", f"{len(RESP):,}", f"{len(REQ):,}"]
    row = next(ln for ln in out.splitlines() if ln.startswith("openat "))
    assert "ENOENT 1" in row
    assert "losses: RINGBUF_EVENT 2" in out


def test_stats_rich_tables_on_terminal(http_trace):
    import io

    buf = io.StringIO()
    with TraceReader(http_trace) as r:
        R.render(S.compute(r), buf, rich_output=True)
    assert "connections" in buf.getvalue() and "127.0.0.1:8000" in buf.getvalue()


def test_stats_on_cut_short_trace(write_trace, run_dr):
    s = http_client_script()
    path = write_trace(s.items, meta=META, summary=None)
    code, out, err = run_dr("stats", path, "--json")
    assert code == ExitCode.TRUNCATED
    assert json.loads(out)["events"] == 16 and json.loads(out)["complete"] is False
    assert err.count("\n") == 1 and "cut short" in err


def test_stats_bad_input_is_one_line(tmp_path, run_dr):
    bad = tmp_path / "x.drt"
    bad.write_bytes(b"not a trace at all")
    code, out, err = run_dr("stats", bad)
    assert code == ExitCode.ERROR and err.startswith("dr: ") and err.count("\n") == 1
    code, _, err = run_dr("stats", tmp_path / "missing.drt")
    assert code == ExitCode.ERROR and "No such file" in err and "Traceback" not in err


# --------------------------------------------------------------------------- fd map


def test_fdmap_follows_dup_fork_close_and_exec():
    s = Script()
    s(100, "socket", (2, 1, 0), 3)
    s(100, "bind", (3, 0x1, 16), 0, {1: sin("0.0.0.0", 8080)})
    s(100, "listen", (3, 128), 0)
    s(100, "accept4", (3, 0x1, 0x2, O_CLOEXEC), 5, {1: sin("127.0.0.1", 50000)})
    s(100, "dup2", (5, 9), 9)
    s(100, "pipe2", (0x1, O_CLOEXEC), 0, {0: struct.pack("<ii", 6, 7)})
    s(100, "socketpair", (1, 1, 0, 0x1), 0, {3: struct.pack("<ii", 10, 11)})
    s(100, "openat", (AT_FDCWD, 0x1, 0), 8, {1: b"data/x.txt\0"})
    s(100, "fcntl", (8, 1030, 20), 20)
    s.proc("FORK", 100, 100, 200, 200)
    s(200, "close", (5,), 0, tgid=200)
    s(200, "execve", (0x1, 0x2, 0x3), 0, {0: b"/bin/true\0"}, tgid=200)
    fdm = FdMap({"pid": 100, "cwd": "/srv"})
    for it in s.items:
        fdm.apply(it)
    assert fdm.describe(100, 3) == "TCP:[0.0.0.0:8080]"
    # accepted on a wildcard listener from loopback: the local end is loopback too
    assert fdm.describe(100, 5) == "TCP:[127.0.0.1:8080->127.0.0.1:50000]"
    assert fdm.lookup(100, 9) is fdm.lookup(100, 5)
    assert fdm.describe(100, 6) == fdm.describe(100, 7) == "pipe:[1]"
    assert fdm.describe(100, 10).startswith("UNIX-STREAM:")
    assert fdm.describe(100, 8) == "/srv/data/x.txt" and fdm.lookup(100, 20) is fdm.lookup(100, 8)
    # the child shares open files with the parent; its close and exec change only its table
    assert fdm.lookup(200, 5) is None and fdm.lookup(200, 9) is fdm.lookup(100, 9)
    assert fdm.lookup(200, 6) is None and fdm.lookup(200, 20) is None  # O_CLOEXEC / F_DUPFD_CLOEXEC
    assert fdm.lookup(200, 8) is not None
    assert fdm.lookup(100, 5).refs == 3  # 100:5, 100:9, 200:9


def test_fdmap_seeds_from_metadata_and_ipv6():
    # the shape capture/snapshot.py writes (from /proc/PID/fd and /proc/PID/net)
    meta = {"pid": 7, "fds": [
        {"fd": 3, "type": "socket", "path": "socket:[11]", "proto": "tcp6", "local": "[::1]:8000",
         "peer": "[::1]:41000", "state": "ESTABLISHED"},
        {"fd": 4, "type": "socket", "path": "socket:[12]", "proto": "tcp", "local": "0.0.0.0:9000",
         "peer": "0.0.0.0:0", "state": "LISTEN"},
        {"fd": 5, "type": "socket", "path": "socket:[13]", "proto": "unix", "local": "/run/app.sock",
         "peer": "", "state": "LISTEN"},
        {"fd": 6, "type": "file", "path": "/var/log/app.log", "offset": 10, "flags": 0o2001},
        {"fd": 8, "type": "socket", "path": "socket:[14]", "proto": "udp", "local": "127.0.0.1:53",
         "peer": "0.0.0.0:0", "state": "UNCONN"}]}
    fdm = FdMap(meta)
    assert fdm.describe(7, 3) == "TCPv6:[[::1]:8000->[::1]:41000]"
    assert fdm.lookup(7, 4).listening and fdm.describe(7, 4) == "TCP:[0.0.0.0:9000]"
    assert fdm.describe(7, 8) == "UDP:[127.0.0.1:53]"
    assert fdm.describe(7, 5) == "UNIX-STREAM:[/run/app.sock]"
    assert fdm.describe(7, 6) == "/var/log/app.log"
    assert parse_sockaddr(b"\x01\x00\x00abstract\x00") .path == "@abstract"


def test_transfers_of_mmsg_and_sendfile():
    s = Script()
    hdr = b"".join(b"\0" * 56 + struct.pack("<I", n) + b"\0" * 4 for n in (3, 5))
    ev = s(100, "sendmmsg", (3, 0x1, 2, 0), 2, {1: b"abcdefgh", 1 | 3 << 4: hdr})
    t, = transfers(ev)
    assert (t.direction, t.nbytes, t.messages, t.data) == ("out", 8, (3, 5), b"abcdefgh")
    ev = s(100, "sendfile", (4, 5, 0, 1000), 1000)
    a, b = transfers(ev)
    assert (a.fd, a.direction, b.fd, b.direction, b.data) == (5, "in", 4, "out", None)
    assert transfers(s(100, "recvfrom", (3, 0x1, 10, 0x2), 4, {1: b"GET "})) == []  # MSG_PEEK
    assert transfers(s(100, "recvfrom", (3, 0x1, 10, 0x40), 4, {1: b"GET "}))[0].data == b"GET "


U64 = 2**64 - 1
_names = ["read", "write", "recvfrom", "sendto", "connect", "accept4", "close", "dup2", "openat",
          "socket", "getsockname", "recvmmsg", "sendmsg", "close_range", "pipe2", "execve", "fcntl"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.builds(
    lambda name, args, ret, t, flags, pay: Event(
        100, schema.by_name(name).nr, args, ret, t, t + 10, 100, 1, flags, 0,
        {slot: Payload(slot, d) for slot, d in pay.items()}),
    st.sampled_from(_names), st.tuples(*[st.integers(0, 8) | st.integers(0, U64)] * 6),
    st.integers(-5, 300) | st.integers(-(1 << 63), (1 << 63) - 1), st.integers(0, U64 - 10), st.integers(0, 31),
    st.dictionaries(st.integers(0, 0x4F), st.binary(max_size=40) | st.sampled_from(
        [sin("127.0.0.1", 80), sin("::1", 443), b"\x01\x00/s\x00", struct.pack("<ii", 3, 4)]),
        max_size=3)), max_size=25))
def test_stats_and_exports_never_crash_on_odd_events(tmp_path_factory, events):
    """Arbitrary arguments, return values, times and payloads (a damaged or hostile
    trace): stats and every export finish, with the right event count."""
    import io

    from dr.formats.export_jsonl import export_jsonl
    from dr.formats.export_pcap import export_pcap
    from dr.formats.export_perfetto import export_perfetto
    from dr.formats.trace import TraceWriter

    d = tmp_path_factory.mktemp("h")
    w = TraceWriter(d / "t.drt", {"pid": 100})
    w.write_events(events)
    w.close({"events": len(events)})
    with TraceReader(d / "t.drt") as r:
        assert S.compute(r).events == len(events)
        assert export_perfetto(r, io.StringIO()).slices == len(events)
        assert export_jsonl(r, io.StringIO()).by_type.get("syscall", 0) == len(events)
        export_pcap(r, d / "t.pcap")


def test_stats_groups_files_names_threads_and_limits_rows(write_trace, run_dr):
    """34 opens of index.html are one row; threads carry their comm; --top says what it left out."""
    s = Script()
    for _ in range(34):
        s(100, "openat", (AT_FDCWD, 0x6000, O_CLOEXEC), 5, {1: b"/srv/index.html\0"})
        s(100, "read", (5, 0x7000, 4096), 10, {1: b"<html></h>"})
        s(100, "close", (5,), 0)
    s.proc("FORK", 100, 100, 101, 100)        # a worker thread: inherits "web"
    s(101, "write", (1, 0x8000, 3), 3, {1: b"ok\n"}, tgid=100)
    s.proc("FORK", 100, 100, 200, 200)        # a child process that execs a helper
    s(200, "execve", (0x1000, 0x2000, 0x3000), 0, {0: b"/usr/bin/gzip\0"}, tgid=200)
    for i in range(25):                       # 25 distinct files: more than the default --top
        s(200, "openat", (AT_FDCWD, 0x6000, 0), 6, {1: b"/tmp/f%d\0" % i}, tgid=200)
        s(200, "read", (6, 0x7000, 4096), 1, {1: b"x"}, tgid=200)
        s(200, "close", (6,), 0, tgid=200)
    meta = {**META, "mode": "attach", "threads": [{"tid": 100, "name": "web"}]}
    path = write_trace(s.items, meta=meta)
    with TraceReader(path) as r:
        st = S.compute(r)
    groups = S.file_groups(st)
    index = next(g for g in groups if g.label == "/srv/index.html")
    assert (index.opens, index.bytes_in, index.calls_in) == (34, 340, 34)
    assert len(groups) == 1 + 25 + 1  # index.html, the 25 files, stdout
    assert {t.tid: t.name for t in st.threads} == {100: "web", 101: "web", 200: "gzip"}
    code, out, _ = run_dr("stats", path)
    assert code == 0
    rows = [ln for ln in out.splitlines() if ln.startswith("/srv/index.html")]
    assert len(rows) == 1 and rows[0].split()[1:3] == ["34", "340"]
    assert f"... and {len(groups) - R.DEFAULT_TOP} more (--top 0 shows all)" in out
    code, out, _ = run_dr("stats", path, "--top", "0")
    assert "more (--top 0" not in out and sum(ln.startswith("/tmp/f") for ln in out.splitlines()) == 25
    doc = json.loads(run_dr("stats", path, "--json")[1])
    assert len(doc["file_groups"]) == len(groups) and doc["threads"][2]["name"] == "gzip"
