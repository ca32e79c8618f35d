"""Streams replay of attach-mode traces (issue 5): reconstruction, re-driving, comparison.

Part 1 writes traces through the format API (TraceWriter.write_events) and
checks what replay/connections.py rebuilds from them, and re-drives a small
real service from such a trace. Part 2 captures real services with
``dr capture --pid`` (BCC) and replays them: the demo HTTP service with its
dependency stopped, the same trace against a changed build, and redis-server
under redis-benchmark.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dr import schema
from dr.errors import ExitCode, UsageError
from dr.formats.trace import Event, Payload, ProcEvent
from dr.replay import compare, connections as C

PY = sys.executable
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace, eBPF)")


def sin(host: str, port: int) -> bytes:
    """struct sockaddr_in (netinet/in.h) as the kernel copies it out."""
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(host) + b"\0" * 8


class Clock:
    def __init__(self) -> None:
        self.t = 10**9
        self.seq = 0

    def ev(self, name: str, args: list[int], ret: int, payloads: dict | None = None,
           tid: int = 100, tgid: int = 100) -> Event:
        self.t += 1000
        self.seq += 1
        a = tuple(list(args) + [0] * (6 - len(args)))
        return Event(tid=tid, nr=schema.by_name(name).nr, args=a, ret=ret, ts_enter=self.t,
                     ts_exit=self.t + 10, tgid=tgid, seq=self.seq,
                     payloads={s: Payload(s, d) for s, d in (payloads or {}).items()})


META = {"mode": "attach", "pid": 100, "argv": ["svc"],
        "fds": [{"fd": 3, "type": "socket", "local": "127.0.0.1:8080", "state": "LISTEN"},
                {"fd": 9, "type": "socket", "local": "127.0.0.1:8080", "peer": "127.0.0.1:39999",
                 "state": "ESTABLISHED"},
                {"fd": 1, "type": "file", "path": "/dev/null"}]}


# --------------------------------------------------------------------------- reconstruction


def test_inbound_outbound_and_fd_reuse(write_trace):
    k = Clock()
    evs = [
        k.ev("accept4", [3], 5, {1: sin("127.0.0.1", 40000)}),
        k.ev("recvfrom", [5], 9, {1: b"GET /a\r\n"[:9]}),
        k.ev("socket", [2, 1 | 0x80000], 6),
        k.ev("connect", [6], -115, {1: sin("10.1.2.3", 6379)}),  # EINPROGRESS: still a connection
        k.ev("sendto", [6], 4, {1: b"PING"}),
        k.ev("recvfrom", [6], -11),                                # EAGAIN: no chunk
        k.ev("recvfrom", [6], 7, {1: b"+PONG\r\n"}),
        k.ev("close", [6], 0),
        k.ev("writev", [5], 8, {1: b"HTTP/1.0"}),
        k.ev("write", [5], 4, {1: b" 200"}),
        k.ev("close", [5], 0),
        # fd 5 reused by the next accept: a new conversation, not a continuation
        k.ev("accept4", [3], 5, {1: sin("127.0.0.1", 40001)}),
        k.ev("read", [5], 3, {1: b"abc"}),
        k.ev("read", [5], 0),
        k.ev("dup", [5], 7),
        k.ev("sendmsg", [7], 3, {1: b"xyz"}),
        k.ev("close", [5], 0),
        k.ev("close", [7], 0),
        k.ev("write", [1], 5, {1: b"log!\n"}),                     # a file: not a conversation
    ]
    conv = C.reconstruct(write_trace(evs, META))
    assert [(str(l.addr), l.from_snapshot) for l in conv.listeners] == [("127.0.0.1:8080", True)]
    first, dep, second = conv.connections
    assert (first.kind, str(first.peer), str(first.listener)) == ("inbound", "127.0.0.1:40000", "127.0.0.1:8080")
    assert first.request_bytes == b"GET /a\r\n"[:9] and first.response_bytes == b"HTTP/1.0 200"
    assert [c.syscall for c in first.chunks] == ["recvfrom", "writev", "write"]  # boundaries kept
    assert first.closed_ns is not None and not first.began_before_capture
    assert (dep.kind, str(dep.peer)) == ("outbound", "10.1.2.3:6379")
    assert [(e.request.data, e.response.data) for e in dep.exchanges()] == [(b"PING", b"+PONG\r\n")]
    assert str(second.peer) == "127.0.0.1:40001"
    assert second.request_bytes == b"abc" and second.response_bytes == b"xyz"
    assert second.chunks[1].eof  # the client shut down its side
    assert second.closed_ns == second.chunks[-1].ts_exit + 2000  # closed when the last alias went


def test_close_written_after_the_fd_was_reused(write_trace):
    """Events are written at syscall exit: thread 2's socket() may reuse fd 5 and exit
    before thread 1's close(5), which released it, reaches its exit."""
    k = Clock()
    accept = k.ev("accept4", [3], 5, {1: sin("127.0.0.1", 40000)}, tid=101)
    close = k.ev("close", [5], 0, tid=101)           # enters first ...
    sock = k.ev("socket", [2, 1], 5, tid=102)
    sock.ts_enter = sock.ts_exit = close.ts_enter + 5   # ... reuse in between ...
    close.ts_exit = sock.ts_exit + 50                    # ... exits last
    conn = k.ev("connect", [5], 0, {1: sin("127.0.0.1", 7301)}, tid=102)
    send = k.ev("sendto", [5], 4, {1: b"PING"}, tid=102)
    recv = k.ev("recvfrom", [5], 4, {1: b"PONG"}, tid=102)
    conv = C.reconstruct(write_trace([accept, sock, close, conn, send, recv], META))
    inbound, dep = conv.connections
    assert inbound.closed_ns is not None and inbound.chunks == []
    assert dep.request_bytes == b"PING" and dep.response_bytes == b"PONG" and dep.closed_ns is None


def test_connection_open_before_capture(write_trace):
    k = Clock()
    evs = [k.ev("recvfrom", [9], 5, {1: b"hello"}), k.ev("sendto", [9], 2, {1: b"hi"}),
           k.ev("close", [9], 0), k.ev("read", [1], 1, {1: b"x"})]
    conv = C.reconstruct(write_trace(evs, META))
    (c,) = conv.connections
    assert c.began_before_capture and c.kind == "inbound"
    assert (str(c.local), str(c.peer)) == ("127.0.0.1:8080", "127.0.0.1:39999")
    assert c.request_bytes == b"hello" and c.response_bytes == b"hi"


def test_dns_over_udp_and_fork(write_trace):
    k = Clock()
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03api\x07example\x00\x00\x01\x00\x01"
    a = b"\x12\x34\x81\x80" + q[4:] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x00\x00\x07"
    evs = [
        k.ev("socket", [2, 2], 4),
        k.ev("sendto", [4], len(q), {1: q, 4: sin("10.0.0.2", 53)}),
        k.ev("recvfrom", [4], len(a), {1: a, 4: sin("10.0.0.2", 53)}),
        k.ev("close", [4], 0),
        k.ev("accept4", [3], 5, {1: sin("127.0.0.1", 40000)}),
        ProcEvent(schema.PROC_EVENTS["FORK"], 100, 100, k.t + 1, 200, 200),
        k.ev("recvfrom", [5], 2, {1: b"hi"}, tid=200, tgid=200),  # the child reads the inherited fd
    ]
    conv = C.reconstruct(write_trace(evs, META))
    dns, inbound = conv.connections
    assert dns.is_dns and dns.kind == "datagram" and str(dns.peer) == "10.0.0.2:53"
    assert [m.data for m in dns.messages()] == [q, a]
    assert inbound.request_bytes == b"hi"


def test_truncated_payload_is_noted(write_trace):
    k = Clock()
    ev = k.ev("accept4", [3], 5, {1: sin("127.0.0.1", 40000)})
    big = k.ev("recvfrom", [5], 300000)
    big.payloads[1] = Payload(1, b"x" * 1000, 300000)
    conv = C.reconstruct(write_trace([ev, big], META))
    assert not conv.connections[0].complete
    assert any("snaplen" in n for n in conv.notes)


# --------------------------------------------------------------------------- comparison


def _http(status: str, body: bytes, date: str = "Mon, 30 Nov 2026 08:00:00 GMT", ctype="application/json") -> bytes:
    return (f"HTTP/1.0 {status}\r\nServer: shop/1.4\r\nDate: {date}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_http_compare_ignores_noise_and_names_the_first_difference():
    ign = compare.load_ignore({"http": {"headers": ["date"]}, "json": {"keys": ["request_id"]}})
    a = _http("200 OK", b'{"id": 4, "request_id": "aa", "total_cents": 597}\n')
    b = _http("200 OK", b'{"id": 4, "request_id": "bbbb", "total_cents": 597}\n', date="Tue, 01 Dec 2026 09:00:00 GMT")
    eq, first, _, _ = compare._compare_http(a, b, ign)
    assert eq and first is None
    c = _http("200 OK", b'{"id": 4, "request_id": "aa", "total_cents": 537}\n')
    eq, first, la, lb = compare._compare_http(a, c, ign)
    assert not eq and first == "JSON total_cents: 597 -> 537"
    diff = compare.side_by_side(la, lb)
    assert "|" in diff and '"total_cents": 597' in diff and '"total_cents": 537' in diff
    eq, first, _, _ = compare._compare_http(a, _http("500 Internal Server Error", b""), ign)
    assert first == "status line 'HTTP/1.0 200 OK' -> 'HTTP/1.0 500 Internal Server Error'"
    eq, first, _, _ = compare._compare_http(a, b"", ign)
    assert first == "no response in the replay"


def test_byte_ranges_and_chunked():
    ign = compare.load_ignore({"bytes": {"ranges": [[0, 4]]}})
    assert compare._mask(b"abcdef", ign.byte_ranges) == compare._mask(b"zzzzef", ign.byte_ranges)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    (m,), rest = compare.parse_http(chunked)
    assert m.body == b"hello world" and rest == b""


def test_ignore_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "ignore.toml"
    bad.write_text("[http]\nheader = ['Date']\n")
    with pytest.raises(UsageError) as e:
        compare.load_ignore(str(bad))
    assert "unknown key 'header'" in str(e.value) and "\n" not in str(e.value)
    bad.write_text("[http\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        compare.load_ignore(str(bad))
    with pytest.raises(UsageError, match="cannot read"):
        compare.load_ignore(str(tmp_path / "missing.toml"))


def test_redis_state_from_before_capture_is_separated(write_trace):
    k = Clock()
    cmd = lambda *a: b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a)  # noqa: E731
    reqs = [cmd(b"SET", b"k1", b"v"), cmd(b"GET", b"k1"), cmd(b"GET", b"old"), cmd(b"INCR", b"ctr"), cmd(b"TIME")]
    reps = [b"+OK\r\n", b"$1\r\nv\r\n", b"$3\r\nyes\r\n", b":41\r\n", b"*2\r\n$1\r\n1\r\n$1\r\n2\r\n"]
    evs = [k.ev("accept4", [3], 5, {1: sin("127.0.0.1", 40000)})]
    for q, r in zip(reqs, reps):
        evs += [k.ev("read", [5], len(q), {1: q}), k.ev("write", [5], len(r), {1: r})]
    meta = dict(META, fds=[{"fd": 3, "type": "socket", "local": "127.0.0.1:6379", "state": "LISTEN"}])
    conv = C.reconstruct(write_trace(evs, meta))

    class Rep:  # what a fresh server answers
        conn = conv.connections[0]
        data = b"+OK\r\n$1\r\nv\r\n$-1\r\n:1\r\n*2\r\n$1\r\n9\r\n$1\r\n9\r\n"
        error = None
        opened_ns = sent_ns = done_ns = 1
        peer_bound = True

    rep = compare.compare(conv, [Rep()])
    (res,) = rep.connections
    assert [d["command"] for d in res.pre_capture] == ["GET old", "INCR ctr"]
    assert [d["command"] for d in res.other] == ["TIME"]
    assert rep.redis_pre_capture == 2 and rep.redis_other == 1
    words = " ".join(rep.explain())
    assert "state from before the capture" in words and "old" in words and "ctr" in words
    assert "1 response(s) differ for other reasons" in words


# --------------------------------------------------------------------------- re-driving (synthetic trace)

ECHO_SVC = r'''
import socket, sys, threading
port, dep, prefix = int(sys.argv[1]), int(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "A")
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(16)
def handle(c):
    line = c.makefile("rb").readline().strip()
    d = socket.create_connection(("10.9.8.7", dep))
    d.sendall(b"Q " + line + b"\n")
    rep = d.makefile("rb").readline().strip()
    d.close()
    c.sendall(prefix.encode() + b" " + rep + b" from " + c.getpeername()[0].encode() + b"\n")
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
'''


@pytest.fixture
def echo_trace(tmp_path, write_trace):
    """A hand-written trace of a line service that asks a dependency at 10.9.8.7 (which does not exist)."""
    k = Clock()
    port, dep = 9100, 9200
    evs = []
    for i, word in enumerate([b"one", b"two", b"three"]):
        answer = b"R " + word.upper()
        out = b"A " + answer + b" from 192.0.2.%d\n" % (i + 1)
        evs += [k.ev("accept4", [3], 5, {1: sin(f"192.0.2.{i + 1}", 41000 + i)}),
                k.ev("recvfrom", [5], len(word) + 1, {1: word + b"\n"}),
                k.ev("socket", [2, 1], 6),
                k.ev("connect", [6], 0, {1: sin("10.9.8.7", dep)}),
                k.ev("sendto", [6], len(word) + 3, {1: b"Q " + word + b"\n"}),
                k.ev("recvfrom", [6], len(answer) + 1, {1: answer + b"\n"}),
                k.ev("close", [6], 0),
                k.ev("sendto", [5], len(out), {1: out}),
                k.ev("close", [5], 0)]
    # `python -c`: the sandbox's /tmp is a fresh tmpfs, so the program travels in argv.
    meta = {"mode": "attach", "pid": 4242, "argv": [PY, "-c", ECHO_SVC, str(port), str(dep)], "cwd": "/",
            "fds": [{"fd": 3, "type": "socket", "local": f"127.0.0.1:{port}", "state": "LISTEN"}]}
    return write_trace(evs, meta), port, dep


@root_only
def test_redrive_identical_and_changed_build(echo_trace):
    from dr.replay.streams import run_streams
    trace, port, dep = echo_trace
    same = run_streams(str(trace))
    assert same.exit_code == ExitCode.OK, same.report.text()
    assert same.report.identical == 3 and not same.report.misses
    # the recorded client addresses (192.0.2.x) were presented to the program
    assert all(c.peer_presented for c in same.report.connections)

    other = run_streams(str(trace), cmd=[PY, "-c", ECHO_SVC, str(port), str(dep), "B"])
    assert other.exit_code == ExitCode.DIVERGED
    assert [c.status for c in other.report.connections] == ["differs"] * 3
    assert other.report.connections[0].first_difference.startswith("byte 0: recorded b'A R ONE")


@root_only
def test_a_build_that_never_answers_ends_once_idle(echo_trace):
    """A handler that sleeps instead of answering: dr stops waiting once the program is idle."""
    from dr.replay.streams import QUIET_S, run_streams
    trace, port, dep = echo_trace
    # Blocks without a timeout (a sleep would read the incident's clock, whose time lies in the past).
    silent = ECHO_SVC.replace("    c.sendall(prefix", "    threading.Event().wait()\n    c.sendall(prefix")
    t0 = time.monotonic()
    res = run_streams(str(trace), cmd=[PY, "-c", silent, str(port), str(dep)])
    took = time.monotonic() - t0
    assert res.exit_code == ExitCode.DIVERGED
    assert [c.replayed_bytes for c in res.report.connections] == [0, 0, 0]
    assert all(c.first_difference.startswith("byte 0: the replay stops") for c in res.report.connections)
    assert not res.report.misses  # the dependency was asked and answered as recorded
    assert took < 6 * QUIET_S + 10, took  # idle waits end after QUIET_S, not at the 60 s patience


@root_only
def test_unmatched_dependency_request_is_reported(echo_trace, tmp_path):
    from dr.replay.streams import run_streams
    trace, port, dep = echo_trace
    changed = ECHO_SVC.replace('b"Q " + line', 'b"Q2 " + line')
    res = run_streams(str(trace), cmd=[PY, "-c", changed, str(port), str(dep)])
    assert res.exit_code == ExitCode.DIVERGED
    assert len(res.report.misses) == 3
    assert all(m["peer"] == f"10.9.8.7:{dep}" and m["request"].startswith("Q2 ") for m in res.report.misses)


def test_handler_clock_stays_in_the_recorded_date_second():
    """A response write that entered just after a second boundary still gets the Date it recorded."""
    from dr.replay.streams_supervisor import _within_date
    off = 1_700_000_000 * 10**9
    head = b"HTTP/1.0 200 OK\r\nServer: shop/1.4\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n\r\n"  # 1700000000 s
    entered = 10**9 + 40_000  # the write entered 40 us after the boundary; the clock was read before it
    assert _within_date(entered, head, off) == 10**9 - 1000
    assert _within_date(500_000_000, head, off) == 500_000_000  # inside the second: unchanged
    assert _within_date(entered, b"HTTP/1.0 200 OK\r\n\r\n", off) == entered  # no Date header
    assert _within_date(entered, b"+OK\r\n", off) == entered


CLOCK_SVC = r'''
import os, socket, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 9300)); srv.listen(4)
while True:
    c, _ = srv.accept()
    c.recv(100)
    c.sendall(b"%d %d %s\n" % (time.time_ns(), os.getpid(), os.urandom(4).hex().encode()))
    c.close()
'''


@root_only
def test_program_sees_the_incidents_clock_pid_and_randomness(write_trace):
    """Replayed time.time_ns(), getpid() and os.urandom() are the recording's, to the ns."""
    from dr.replay.streams import run_streams
    k = Clock()
    realtime_off = 1_700_000_000 * 10**9
    evs = []
    rand = [bytes([7, 7, 7, i]) for i in range(2)]
    for i in range(2):
        evs += [k.ev("accept4", [3], 4, {1: sin("127.0.0.1", 50000 + i)}),
                k.ev("recvfrom", [4], 3, {1: b"hi\n"}),
                k.ev("getrandom", [0, 4], 4, {0: rand[i]})]
        ts = k.t + 1000  # ts_enter of the next event: the write
        out = b"%d 777 %s\n" % (ts - 1000 + realtime_off, rand[i].hex().encode())
        evs += [k.ev("sendto", [4], len(out), {1: out}), k.ev("close", [4], 0)]
    meta = {"mode": "attach", "pid": 777, "argv": [PY, "-c", CLOCK_SVC], "cwd": "/",
            "clock_offsets": {"realtime_ns": realtime_off, "boottime_ns": 0},
            "fds": [{"fd": 3, "type": "socket", "local": "127.0.0.1:9300", "state": "LISTEN"}]}
    res = run_streams(str(write_trace(evs, meta)))
    assert res.report.mode == "sandbox"
    assert res.exit_code == ExitCode.OK, res.report.text()
    assert res.report.substituted["getrandom"] == 2 and res.report.substituted["clock_gettime"] > 0


# --------------------------------------------------------------------------- real captures (BCC)


@pytest.fixture(scope="module")
def demo_capture(tmp_path_factory):
    """The demo service and its key-value dependency, captured with --pid under 50 requests.

    Both are stopped before the fixture returns: replay runs without the dependency.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root (eBPF capture)")
    from dr.demo import load
    from dr.demo.harness import Capture, free_port, start_line_server, stop
    out = tmp_path_factory.mktemp("demo")
    kv_port, svc_port = free_port(), free_port()
    kv = start_line_server([PY, "-m", "dr.demo.kv", "--port", str(kv_port)], out / "kv.log")
    svc = start_line_server([PY, "-m", "dr.demo.service", "--port", str(svc_port),
                             "--kv", f"127.0.0.1:{kv_port}"], out / "svc.log")
    cap = Capture(svc.pid, out / "t.drt", out / "capture.log")
    try:
        cap.start()
        results = load.run(svc_port, 50, 4, pause_s=0.01)
        rc = cap.stop(settle_s=1.2)
    finally:
        cap.stop()
        stop(kv)
        stop(svc)
    assert rc == 0, (out / "capture.log").read_text()
    assert all(status in (200, 201, 404) for _, status, _ in results)
    return {"trace": out / "t.drt", "svc_port": svc_port, "kv_port": kv_port, "results": results}


@root_only
def test_http_service_replays_identical_without_its_dependency(demo_capture):
    from dr.replay.streams import run_streams
    conv = C.reconstruct(demo_capture["trace"])
    assert len(conv.inbound()) == 50 and len(conv.outbound()) == 34  # 34 requests need the store
    # what the load generator got is what the trace says the service sent
    by_req = {c.request_bytes.split(b"\r\n")[0]: c.response_bytes for c in conv.inbound()}
    for req, status, body in demo_capture["results"]:
        sent = by_req[f"{req.method} {req.path} HTTP/1.1".encode()]
        assert sent.endswith(body) and sent.startswith(b"HTTP/1.0 %d" % status)
    res = run_streams(str(demo_capture["trace"]))  # no ignore rules: the Date headers match too
    rep = res.report
    assert rep.mode == "sandbox"
    assert (rep.identical, len(rep.connections)) == (50, 50), rep.text()
    assert res.exit_code == ExitCode.OK and not rep.misses
    assert rep.summary().startswith("50 of 50 connection(s) identical")


@root_only
def test_changed_handler_reports_exactly_the_changed_responses(demo_capture, tmp_path):
    from dr.demo import load
    from dr.replay.streams import run_streams
    v2 = [PY, "-m", "dr.demo.service_v2", "--port", str(demo_capture["svc_port"]),
          "--kv", f"127.0.0.1:{demo_capture['kv_port']}"]
    report = tmp_path / "r.json"
    res = run_streams(str(demo_capture["trace"]), cmd=v2, report=str(report))
    assert res.exit_code == ExitCode.DIVERGED
    expected = sorted(f"GET {r.path}" for r in load.plan(50)
                      if r.path.startswith("/price/") and int(r.path.split("qty=")[1]) >= 3)
    differs = res.report.differs
    assert sorted(c.request for c in differs) == expected
    for c in differs:
        qty = int(c.request.split("qty=")[1])
        assert c.first_difference.startswith("JSON total_cents: ")
        old, new = (int(x) for x in c.first_difference.split(": ", 1)[1].split(" -> "))
        assert new == old * 9 // 10 and qty >= 3
        assert '|   "total_cents": %d,' % old in c.diff and '"total_cents": %d,' % new in c.diff
    doc = json.loads(report.read_text())
    assert doc["verdict"] == "DIFFERS" and doc["identical"] == 50 - len(expected)
    assert sum(1 for c in doc["connections"] if c["status"] == "differs") == len(expected)


@root_only
def test_redis_replay_separates_state_from_before_the_capture(tmp_path):
    """redis-server under redis-benchmark, replayed against a fresh redis-server."""
    from dr.demo.harness import Capture, free_port, stop
    from dr.replay.streams import run_streams
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cli(*a: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *a], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        deadline = time.monotonic() + 10
        while cli("PING") != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        # State from before the capture: a key, a counter, a list.
        assert cli("SET", "before:capture", "hello") == "OK"
        assert cli("INCRBY", "counter:__rand_int__", "100") == "100"
        assert cli("RPUSH", "mylist", "a", "b") == "2"
        with Capture(redis.pid, tmp_path / "r.drt", tmp_path / "capture.log") as cap:
            bench = subprocess.run(["redis-benchmark", "-p", str(port), "-n", "100", "-c", "4",
                                    "-t", "set,get,incr,lpush", "-q"], capture_output=True, text=True, timeout=60)
            assert bench.returncode == 0, bench.stderr
            assert cli("GET", "before:capture") == "hello"
            assert cli("SET", "during", "x") == "OK" and cli("GET", "during") == "x"
            assert cli("CLIENT", "ID").isdigit()  # counts connections since start: not key state
            assert cap.stop(settle_s=1.2) == 0
    finally:
        stop(redis)
    # /proc shows redis's rewritten title; the capture read the command it was started with.
    res = run_streams(str(tmp_path / "r.drt"), report=str(tmp_path / "r.json"))
    assert res.report.command == shlex.join([shutil.which("redis-server"), *argv[1:]])
    rep = res.report
    assert res.exit_code == ExitCode.DIVERGED
    pre = [d for c in rep.connections for d in c.pre_capture]
    other = [d for c in rep.connections for d in c.other]
    pre_cmds = {d["command"].split(" ")[0] for d in pre}
    assert pre_cmds == {"GET", "INCR", "LPUSH"}
    assert any(d["command"] == "GET before:capture" and d["replayed"] == "$-1 (nil)" for d in pre)
    assert [d["command"] for d in other] == ["CLIENT ID"]
    # SET/GET traffic of the capture itself replays identically
    assert all(c.status == "identical" for c in rep.connections if c.request.startswith(("SET", "GET during")))
    words = " ".join(rep.explain())
    assert f"{len(pre)} response(s) differ because of state from before the capture" in words
    assert "before:capture" in words and "1 response(s) differ for other reasons" in words
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["redis"]["pre_capture_state"] == len(pre) and doc["redis"]["other"] == 1


@root_only
def test_cli_dispatches_attach_traces_to_streams(echo_trace, run_dr, tmp_path, write_trace):
    trace, port, dep = echo_trace
    code, out, err = run_dr("replay", trace, "--report", tmp_path / "r.json")
    assert code == 0 and out.strip().splitlines()[-2] == "IDENTICAL: 3 of 3 connection(s) identical"
    assert json.loads((tmp_path / "r.json").read_text())["verdict"] == "IDENTICAL"
    code, out, err = run_dr("replay", trace, "--cmd", f"{PY} -c '{ECHO_SVC}' {port} {dep} B")
    assert code == ExitCode.DIVERGED and "DIFFERS: 0 of 3 connection(s) identical, 3 differ" in out
    bad = tmp_path / "noise.toml"
    bad.write_text("[http]\nheader = ['Date']\n")
    code, out, err = run_dr("replay", trace, "--ignore", bad)
    assert code == ExitCode.USAGE and err.strip().splitlines() == [
        f"dr: {bad}: unknown key 'header' in [http]; expected 'headers'"]
    spawn = write_trace([], {"mode": "spawn", "argv": ["true"]})
    code, out, err = run_dr("replay", spawn, "--cmd", "false")
    assert code == ExitCode.USAGE and "--cmd and --ignore are for traces recorded with --pid" in err


def _userns_for_nobody() -> str | None:
    """Why an unprivileged user cannot make a user namespace here, or None when it can."""
    for path, bad in (("/proc/sys/kernel/unprivileged_userns_clone", "0"), ("/proc/sys/user/max_user_namespaces", "0")):
        try:
            if Path(path).read_text().strip() == bad:
                return f"{path} is {bad}: no unprivileged user namespaces"
        except OSError:
            continue
    return None


@root_only
@pytest.mark.skipif(shutil.which("runuser") is None, reason="needs runuser (util-linux)")
def test_streams_replay_runs_unprivileged(echo_trace, tmp_path):
    """`dr replay` of an attach-mode trace as nobody: the sandbox's user namespace, no traceback."""
    why = _userns_for_nobody()
    if why:
        pytest.skip(f"kernel setting: {why}")
    import tempfile
    trace, _port, _dep = echo_trace
    with tempfile.TemporaryDirectory(prefix="dr-nobody-") as d:
        os.chmod(d, 0o777)
        mine = Path(d) / "incident.drt"
        shutil.copyfile(trace, mine)
        os.chmod(mine, 0o644)
        dr = str(Path(PY).with_name("dr"))
        # nobody may make no memory cgroup: fail closed in one line, unless told (docs/security.md)
        r = subprocess.run(["runuser", "-u", "nobody", "--", dr, "replay", str(mine)],
                           cwd=d, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stderr.startswith("dr: cannot bound the replay's memory: "), r.stderr
        r = subprocess.run(["runuser", "-u", "nobody", "--", dr, "replay", str(mine), "--report", f"{d}/r.json",
                            "--no-memory-limit"], cwd=d, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in r.stderr, r.stderr
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.strip().splitlines()[-2] == "IDENTICAL: 3 of 3 connection(s) identical"
        doc = json.loads(Path(d, "r.json").read_text())
        assert doc["mode"] == "sandbox" and doc["identical"] == 3
        assert all(c["peer_presented"] for c in doc["connections"])  # recorded client addresses, as root gets


POOL_SVC = r'''
import os, socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 9400)); srv.listen(4)
q, pool = bytes.fromhex(sys.argv[1]), None
while True:
    c, _ = srv.accept()
    key = c.recv(100).strip()
    if pool is None:  # in production this connection was opened long before the capture
        pool = socket.create_connection(("10.5.5.5", 6379))
    pool.sendall(b"GET " + key + b"\n")
    val = pool.recv(100).strip()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    qid = os.urandom(2)
    u.sendto(qid + q[2:], ("10.0.0.2", 53))
    ans, _ = u.recvfrom(512)
    u.close()
    ok = b"id-ok" if ans[:2] == qid else b"id-bad"
    c.sendall(val + b" " + socket.inet_ntoa(ans[-4:]).encode() + b" " + ok + b"\n")
    c.close()
'''


@root_only
def test_pooled_dependency_and_dns_are_served_from_the_recording(write_trace):
    """A dependency connection opened before the capture, and DNS over UDP."""
    from dr.replay.streams import run_streams
    k = Clock()
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03api\x07example\x00\x00\x01\x00\x01"
    evs = []
    for n, ip in ((1, b"\x0a\x00\x00\x07"), (2, b"\x0a\x00\x00\x08")):
        a = b"\x12\x34\x81\x80" + q[4:] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + ip
        out = b"v%d 10.0.0.%d id-ok\n" % (n, 6 + n)
        evs += [k.ev("accept4", [3], 5, {1: sin("127.0.0.1", 40000 + n)}),
                k.ev("recvfrom", [5], 3, {1: b"k%d\n" % n}),
                k.ev("sendto", [8], 7, {1: b"GET k%d\n" % n}),
                k.ev("recvfrom", [8], 3, {1: b"v%d\n" % n}),
                k.ev("socket", [2, 2], 6),
                k.ev("sendto", [6], len(q), {1: q, 4: sin("10.0.0.2", 53)}),
                k.ev("recvfrom", [6], len(a), {1: a, 4: sin("10.0.0.2", 53)}),
                k.ev("close", [6], 0),
                k.ev("sendto", [5], len(out), {1: out}),
                k.ev("close", [5], 0)]
    meta = {"mode": "attach", "pid": 100, "argv": [PY, "-c", POOL_SVC, q.hex()], "cwd": "/",
            "fds": [{"fd": 3, "type": "socket", "proto": "tcp", "local": "127.0.0.1:9400", "peer": "0.0.0.0:0",
                     "state": "LISTEN"},
                    {"fd": 8, "type": "socket", "proto": "tcp", "local": "192.168.7.2:50123",
                     "peer": "10.5.5.5:6379", "state": "ESTABLISHED"}]}
    trace = write_trace(evs, meta)
    conv = C.reconstruct(trace)
    pooled = [c for c in conv.outbound() if c.began_before_capture]
    assert len(pooled) == 1 and str(pooled[0].peer) == "10.5.5.5:6379"
    assert len([c for c in conv.outbound() if c.is_dns]) == 2
    res = run_streams(str(trace))
    assert res.exit_code == ExitCode.OK, res.report.text()
    assert res.report.identical == 2 and not res.report.misses


@root_only
def test_redacted_bytes_are_unknown_not_divergent(write_trace):
    """A trace redacted by dr (bundle, --redact): masked request bytes still match the
    dependency's recorded requests, masked response bytes are compared as unknown."""
    from dr.replay.streams import run_streams
    svc = ECHO_SVC.replace('b"Q " + line + b"\\n"', 'b"Q " + line + b" token=s3cr3t\\n"').replace(
        'c.getpeername()[0].encode() + b"\\n"', 'c.getpeername()[0].encode() + b" key=s3cr3t\\n"')
    assert svc.count("s3cr3t") == 2
    k = Clock()
    evs, spans = [], []
    for i, word in enumerate([b"one", b"two"]):
        q = b"Q " + word + b" token=******\n"
        out = b"A R " + word.upper() + b" from 192.0.2.%d key=******\n" % (i + 1)
        evs += [k.ev("accept4", [3], 5, {1: sin(f"192.0.2.{i + 1}", 41000 + i)}),
                k.ev("recvfrom", [5], len(word) + 1, {1: word + b"\n"}),
                k.ev("socket", [2, 1], 6),
                k.ev("connect", [6], 0, {1: sin("10.9.8.7", 9200)})]
        send = k.ev("sendto", [6], len(q), {1: q})
        spans.append([send.tid, send.seq, 1, q.index(b"*"), 6, "user:token"])
        evs += [send, k.ev("recvfrom", [6], len(word) + 3, {1: b"R " + word.upper() + b"\n"}),
                k.ev("close", [6], 0)]
        reply = k.ev("sendto", [5], len(out), {1: out})
        spans.append([reply.tid, reply.seq, 1, out.index(b"*"), 6, "user:key"])
        evs += [reply, k.ev("close", [5], 0)]
    meta = {"mode": "attach", "pid": 4242, "argv": [PY, "-c", svc, "9100", "9200"], "cwd": "/",
            "fds": [{"fd": 3, "type": "socket", "local": "127.0.0.1:9100", "state": "LISTEN"}]}
    trace = write_trace([{"t": "redactions", "spans": spans}] + evs, meta)
    res = run_streams(str(trace))
    assert res.exit_code == ExitCode.OK, res.report.text()
    assert not res.report.misses and res.report.identical == 2
    assert all(c.note.startswith("6 redacted response byte(s) compared as unknown") for c in res.report.connections)
    assert any("24 byte(s) of socket payloads were redacted" in n for n in res.report.notes)
