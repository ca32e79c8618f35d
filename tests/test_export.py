"""`dr export pcap|perfetto|jsonl`: other tools read back exactly what the trace holds.

- pcap: tshark (Wireshark's CLI) follows each TCP stream / UDP flow and yields
  exactly the recorded bytes, both directions, IPv4 and IPv6.
- perfetto: the Chrome JSON trace passes a strict JSON-schema check of the
  trace event format and has one slice per syscall. trace_processor (the
  `perfetto` package) is used as well when its trace_processor_shell binary
  is at hand (DR_TRACE_PROCESSOR_SHELL): the package downloads that binary at
  run time, and no package registry ships it, so offline the schema check is
  what runs.
- jsonl: event counts per syscall equal `dr stats` counts.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess

import pytest

from dr.formats.export_pcap import export_pcap
from dr.formats.trace import TraceReader

from test_stats import META, O_CLOEXEC, REQ, RESP, Script, http_client_script, sin

# Installed by scripts/setup.sh (PKGS): a missing tshark is a set-up failure, not a skip.
TSHARK = shutil.which("tshark") or "tshark"


def tshark_follow_all(pcap, proto: str, streams) -> list[tuple[list[str], bytes, bytes]]:
    """``tshark -qz follow,PROTO,raw,N`` for each N, in one tshark run:
    per stream (node addresses, bytes from node 0, bytes from node 1).

    In tshark's raw follow output, lines from node 1 are indented with a tab.
    """
    cmd = [TSHARK, "-r", str(pcap), "-q"]
    for n in streams:
        cmd += ["-z", f"follow,{proto},raw,{n}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    blocks, cur, body = [], None, False
    for line in out.splitlines():
        if line.startswith("Follow: "):
            cur = ([], [], [])
            blocks.append(cur)
            body = False
        elif cur is None:
            continue
        elif line.startswith("Node "):
            cur[0].append(line.split(": ", 1)[1])
            body = line.startswith("Node 1")
        elif line.startswith("====="):
            body = False
        elif body and line.strip():
            (cur[2] if line.startswith("\t") else cur[1]).append(line.strip())
    return [(nodes, bytes.fromhex("".join(a)), bytes.fromhex("".join(b))) for nodes, a, b in blocks]


def tshark_follow(pcap, proto: str = "tcp", stream: int = 0) -> tuple[list[str], bytes, bytes]:
    """One stream of :func:`tshark_follow_all`."""
    return tshark_follow_all(pcap, proto, [stream])[0]


@pytest.fixture
def http_trace(write_trace):
    return write_trace(http_client_script().items, meta=META, summary={"events": 16})


# --------------------------------------------------------------------------- pcap


def test_pcap_tcp_stream_follows_to_the_recorded_bytes(http_trace, tmp_path):
    out = tmp_path / "out.pcap"
    with TraceReader(http_trace) as r:
        res = export_pcap(r, out)
    assert res.notes == []
    s, = res.streams
    assert (s.client, s.server, s.bytes_to_server, s.bytes_to_client) == (
        "127.0.0.1:45678", "127.0.0.1:8000", len(REQ), len(RESP))
    nodes, c2s, s2c = tshark_follow(out)
    assert nodes == ["127.0.0.1:45678", "127.0.0.1:8000"]
    assert c2s == REQ and s2c == RESP
    # handshake first, FIN both ways; the 150 KiB response was cut into segments of <= 65000 bytes
    flags = subprocess.run([TSHARK, "-r", str(out), "-T", "fields", "-e", "tcp.flags.str", "-e", "tcp.len",
                            "-e", "frame.time_epoch"], capture_output=True, text=True, check=True).stdout
    rows = [ln.split("\t") for ln in flags.splitlines()]
    assert [r[0].replace("\u00b7", "") for r in rows[:3]] == ["S", "AS", "A"]
    assert sum(1 for r in rows if "F" in r[0]) == 2
    assert max(int(r[1]) for r in rows) <= 65000
    # timestamps: CLOCK_MONOTONIC + the metadata's realtime offset (ns pcap)
    assert rows[0][2].startswith("1700000005.000001500")
    expert = subprocess.run([TSHARK, "-r", str(out), "-qz", "expert,warn"], capture_output=True,
                            text=True, check=True).stdout
    assert "previous segment" not in expert.lower() and "retransmission" not in expert.lower()


def test_pcap_ipv6_and_cli(write_trace, tmp_path, run_dr):
    path = write_trace(http_client_script("::1").items, meta=META)
    out = tmp_path / "v6.pcap"
    code, _, err = run_dr("export", "pcap", path, "-o", out)
    assert code == 0, err
    assert "1 TCP stream" in err
    nodes, c2s, s2c = tshark_follow(out)
    assert nodes == ["[::1]:45678", "[::1]:8000"]
    assert (c2s, s2c) == (REQ, RESP)


def server_script(write_trace, *, truncate: bool = False):
    """An HTTP server's side: wildcard listener, accept, recv, writev, close; plus a
    unix-domain socket and a UDP exchange (sendto/recvfrom)."""
    s = Script()
    s(100, "socket", (2, 1, 0), 3)
    s(100, "bind", (3, 0x1, 16), 0, {1: sin("0.0.0.0", 8000)})
    s(100, "listen", (3, 5), 0)
    s(100, "accept4", (3, 0x1, 0x2, O_CLOEXEC), 4, {1: sin("127.0.0.1", 51000)})
    s(100, "recvfrom", (4, 0x1, 65536), len(REQ), {1: REQ})
    head, body = RESP[:40], RESP[40:]
    sent = body[:1000] if truncate else body
    s(100, "write", (4, 0x1, 40), 40, {1: head})
    s(100, "writev", (4, 0x1, 2), len(body), {1: sent})
    s(100, "close", (4,), 0)
    s(100, "socket", (1, 1, 0), 5)
    s(100, "connect", (5, 0x1, 20), 0, {1: b"\x01\x00/run/x.sock\x00"})
    s(100, "write", (5, 0x1, 5), 5, {1: b"hello"})
    s(100, "socket", (2, 2, 0), 6)
    s(100, "bind", (6, 0x1, 16), 0, {1: sin("127.0.0.1", 5353)})
    s(100, "recvfrom", (6, 0x1, 512, 0, 0x2, 0x3), 7, {1: b"query-1", 4: sin("127.0.0.1", 40000)})
    s(100, "sendto", (6, 0x1, 8, 0, 0x2, 16), 8, {1: b"answer-1", 4: sin("127.0.0.1", 40000)})
    return write_trace(s.items, meta={"pid": 100})


def test_pcap_server_side_udp_and_unix_note(write_trace, tmp_path):
    path = server_script(write_trace)
    out = tmp_path / "srv.pcap"
    with TraceReader(path) as r:
        res = export_pcap(r, out)
    tcp, udp = res.streams
    assert (tcp.client, tcp.server) == ("127.0.0.1:51000", "127.0.0.1:8000")  # the peer sent the SYN
    assert any("unix-domain" in n and "5 bytes" in n for n in res.notes)
    nodes, c2s, s2c = tshark_follow(out)
    assert nodes == ["127.0.0.1:51000", "127.0.0.1:8000"] and (c2s, s2c) == (REQ, RESP)
    nodes, a, b = tshark_follow(out, "udp")
    assert nodes == ["127.0.0.1:40000", "127.0.0.1:5353"] and (a, b) == (b"query-1", b"answer-1")


def test_pcap_truncated_payload_is_a_gap_not_wrong_bytes(write_trace, tmp_path):
    path = server_script(write_trace, truncate=True)
    out = tmp_path / "gap.pcap"
    with TraceReader(path) as r:
        res = export_pcap(r, out)
    assert res.streams[0].missing_bytes == len(RESP) - 40 - 1000
    assert any("not in the trace" in n for n in res.notes)
    _nodes, c2s, s2c = tshark_follow(out)
    assert c2s == REQ
    assert s2c.startswith(RESP[:1040]) and RESP[1040:] not in s2c


def test_pcap_connection_seen_from_both_ends_is_exported_once(write_trace, tmp_path):
    s = http_client_script()
    srv = Script(t0=s.t)
    srv(200, "socket", (2, 1, 0), 3, tgid=200)
    srv(200, "bind", (3, 0x1, 16), 0, {1: sin("127.0.0.1", 8000)}, tgid=200)
    srv(200, "accept", (3, 0x1, 0x2), 4, {1: sin("127.0.0.1", 45678)}, tgid=200)
    srv(200, "recvfrom", (4, 0x1, 65536), len(REQ), {1: REQ}, tgid=200)
    path = write_trace(s.items + srv.items, meta=META)
    with TraceReader(path) as r:
        res = export_pcap(r, tmp_path / "x.pcap")
    assert len(res.streams) == 1 and any("both ends" in n for n in res.notes)


def test_pcap_pairs_a_client_without_getsockname_with_its_server(write_trace, tmp_path):
    """One loopback connection, both ends traced, the client never asks its own port:
    the server's accept names it, so Wireshark sees one stream, not two."""
    s = Script()
    s(100, "socket", (2, 1, 0), 3)
    s(100, "bind", (3, 0x1, 16), 0, {1: sin("127.0.0.1", 8000)})
    s(100, "listen", (3, 5), 0)
    s(100, "socket", (2, 1, 0), 4)
    s(100, "connect", (4, 0x1, 16), 0, {1: sin("127.0.0.1", 8000)})      # no getsockname
    s(100, "accept4", (3, 0x1, 0x2, 0), 5, {1: sin("127.0.0.1", 51234)})
    s(100, "sendto", (4, 0x3000, len(REQ), 0), len(REQ), {1: REQ})
    s(100, "recvfrom", (5, 0x5000, 65536, 0), len(REQ), {1: REQ})
    s(100, "sendto", (5, 0x3000, 6, 0), 6, {1: b"pong\r\n"})
    s(100, "recvfrom", (4, 0x5000, 65536, 0), 6, {1: b"pong\r\n"})
    s(100, "close", (4,), 0)
    s(100, "close", (5,), 0)
    path = write_trace(s.items, meta=META)
    out = tmp_path / "lo.pcap"
    with TraceReader(path) as r:
        res = export_pcap(r, out)
    assert [(x.client, x.server) for x in res.streams] == [("127.0.0.1:51234", "127.0.0.1:8000")]
    assert not any("no getsockname" in n for n in res.notes)  # nothing synthesised
    if shutil.which(TSHARK):
        nodes, c2s, s2c = tshark_follow(out)
        assert nodes == ["127.0.0.1:51234", "127.0.0.1:8000"] and (c2s, s2c) == (REQ, b"pong\r\n")


# --------------------------------------------------------------------------- perfetto

# The Chrome trace event format, JSON object form (Trace Event Format, Google):
# strict for the phases dr writes ("X" complete events, "i" thread-scoped instant
# events, "M" metadata events).
CHROME_TRACE_SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "additionalProperties": False,
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
        "traceEvents": {"type": "array", "items": {"oneOf": [
            {"type": "object", "additionalProperties": False,
             "required": ["name", "ph", "ts", "dur", "pid", "tid"],
             "properties": {
                 "name": {"type": "string", "minLength": 1}, "cat": {"type": "string"},
                 "ph": {"const": "X"}, "ts": {"type": "number", "minimum": 0},
                 "dur": {"type": "number", "minimum": 0},
                 "pid": {"type": "integer", "minimum": 0}, "tid": {"type": "integer", "minimum": 0},
                 "args": {"type": "object"}}},
            {"type": "object", "additionalProperties": False,
             "required": ["name", "ph", "ts", "s", "pid", "tid"],
             "properties": {
                 "name": {"type": "string", "minLength": 1}, "cat": {"type": "string"},
                 "ph": {"const": "i"}, "s": {"const": "t"}, "ts": {"type": "number", "minimum": 0},
                 "pid": {"type": "integer", "minimum": 0}, "tid": {"type": "integer", "minimum": 0},
                 "args": {"type": "object"}}},
            {"type": "object", "additionalProperties": False,
             "required": ["name", "ph", "pid", "args"],
             "properties": {
                 "name": {"enum": ["process_name", "thread_name", "process_sort_index",
                                   "thread_sort_index", "process_labels"]},
                 "ph": {"const": "M"}, "pid": {"type": "integer"}, "tid": {"type": "integer"},
                 "args": {"type": "object", "required": ["name"],
                          "properties": {"name": {"type": "string", "minLength": 1}}}}},
        ]}},
    },
}


def _trace_processor_slices(path) -> int | None:
    """Slices counted by trace_processor, when its shell binary is available offline."""
    shell = os.environ.get("DR_TRACE_PROCESSOR_SHELL")
    if not shell or not os.path.exists(shell):
        return None
    from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig

    tp = TraceProcessor(trace=str(path), config=TraceProcessorConfig(bin_path=shell))
    try:
        return next(iter(tp.query("select count(*) as n from slice"))).n
    finally:
        tp.close()


def test_perfetto_export_is_valid_and_has_one_slice_per_syscall(http_trace, tmp_path, run_dr):
    import jsonschema
    out = tmp_path / "t.json"
    code, _, err = run_dr("export", "perfetto", http_trace, "-o", out)
    assert code == 0, err
    doc = json.loads(out.read_text())
    jsonschema.Draft202012Validator(CHROME_TRACE_SCHEMA).validate(doc)
    with TraceReader(http_trace) as r:
        n_syscalls = sum(1 for _ in r.events())
    slices = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == n_syscalls == 16
    names = {(e["tid"], e["args"]["name"]) for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert names == {(100, "curl"), (101, "curl")}  # the thread inherits its creator's comm
    [fork] = [e for e in doc["traceEvents"] if e["ph"] == "i"]  # the trace's one process event
    assert (fork["name"], fork["tid"], fork["pid"], fork["args"]) == \
        ("fork", 100, 100, {"child_tid": 101, "child_tgid": 100})
    rd = next(e for e in slices if e["name"] == "recvfrom")
    assert rd["args"]["fd"] == 3 and rd["args"]["bytes"] == 70000 and rd["args"]["result"] == 70000
    assert rd["args"]["file"] == "TCP:[127.0.0.1:45678->127.0.0.1:8000]"
    assert rd["dur"] == 10.0 and rd["pid"] == 100
    bad = next(e for e in slices if e["name"] == "openat" and e["args"].get("errno"))
    assert bad["args"]["result"] == "-1 ENOENT"
    # within one thread, slices never overlap (trace_processor requires proper nesting)
    for tid in (100, 101):
        xs = sorted((e["ts"], e["ts"] + e["dur"]) for e in slices if e["tid"] == tid)
        assert all(a[1] <= b[0] for a, b in zip(xs, xs[1:]))
    tp = _trace_processor_slices(out)
    if tp is not None:
        assert tp == n_syscalls


# --------------------------------------------------------------------------- jsonl


def test_jsonl_counts_equal_stats_counts(http_trace, tmp_path, run_dr):
    out = tmp_path / "t.jsonl"
    code, _, err = run_dr("export", "jsonl", http_trace, "-o", out)
    assert code == 0, err
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert lines[0]["type"] == "meta" and lines[0]["pid"] == 100 and lines[-1]["type"] == "summary"
    counts: dict[str, int] = {}
    for o in lines:
        if o["type"] == "syscall":
            counts[o["name"]] = counts.get(o["name"], 0) + 1
    code, sout, _ = run_dr("stats", http_trace, "--json")
    assert counts == {s["name"]: s["count"] for s in json.loads(sout)["syscalls"]}
    got = b"".join(base64.b64decode(p["data"]) for o in lines if o["type"] == "syscall"
                   and o["name"] == "recvfrom" for p in o["payloads"])
    assert got == RESP
    bad = next(o for o in lines if o.get("errno") == "ENOENT")
    assert bad["name"] == "openat" and bad["ret"] == -2
    assert [o["what"] for o in lines if o["type"] == "proc"] == ["FORK"]
    ex = next(o for o in lines if o.get("name") == "exit_group")
    assert ex["flags"] == ["NO_EXIT"] and ex["errno"] is None


def test_jsonl_to_stdout_without_payloads(http_trace, run_dr):
    code, out, _ = run_dr("export", "jsonl", http_trace, "--no-payloads")
    assert code == 0
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert sum(o["type"] == "syscall" for o in lines) == 16
    assert all("payloads" not in o for o in lines if o["type"] == "syscall")


def test_export_bad_output_path_is_one_line(http_trace, run_dr, tmp_path):
    code, _, err = run_dr("export", "perfetto", http_trace, "-o", tmp_path / "no" / "dir.json")
    assert code == 1 and err.startswith("dr: cannot write") and err.count("\n") == 1
    assert not (tmp_path / "no").exists()


# --------------------------------------------------------------------------- real capture


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def curl_capture(tmp_path_factory):
    """`dr capture -- curl` fetching a 200 KB file from a python http.server on loopback."""
    import socket
    import sys
    import time

    d = tmp_path_factory.mktemp("cap")
    www = d / "www"
    www.mkdir()
    content = os.urandom(150_000) + b"end of file\n"
    (www / "file").write_bytes(content)
    port = _free_port()
    srv = subprocess.Popen(["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", str(port),
                            "-d", str(www)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        trace = d / "curl.drt"
        got = d / "got"
        dr = [sys.executable, "-m", "dr"]
        p = subprocess.run(dr + ["capture", "-q", "-o", str(trace), "--", "curl", "-s", "-o", str(got),
                                 f"http://127.0.0.1:{port}/file"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert got.read_bytes() == content
        yield trace, content, port
    finally:
        srv.kill()
        srv.wait()


def _recorded_socket_bytes(trace, port: int) -> tuple[bytes, bytes, int]:
    """The bytes the trace holds for curl's socket, gathered without dr's fd map:
    the fd of the connect() to ``port``, then every send/recv-like call on it.
    Also the wall-clock ns of the first send (ts_enter + the realtime offset)."""
    sent, received = [], []
    fd = None
    first_send = 0
    with TraceReader(trace) as r:
        off = r.meta["clock_offsets"]["realtime_ns"]
        for ev in r.events():
            if ev.name == "connect" and (ev.payload(1) or b"")[2:4] == struct.pack(">H", port):
                fd = ev.args[0]
            elif fd is not None and ev.args[0] == fd and ev.ret > 0:
                if ev.name in ("write", "sendto", "sendmsg", "writev"):
                    first_send = first_send or ev.ts_enter + off
                    sent.append(ev.payload(1)[:ev.ret])
                elif ev.name in ("read", "recvfrom", "recvmsg", "readv"):
                    received.append(ev.payload(1)[:ev.ret])
            if ev.name == "close" and fd is not None and ev.args[0] == fd:
                fd = None
    return b"".join(sent), b"".join(received), first_send


def test_pcap_of_real_curl_capture_follows_to_the_recorded_bytes(curl_capture, tmp_path, run_dr):
    trace, content, port = curl_capture
    sent, received, first_send = _recorded_socket_bytes(trace, port)
    assert sent.startswith(b"GET /file HTTP/1.1\r\n") and received.endswith(content)
    out = tmp_path / "curl.pcap"
    code, _, err = run_dr("export", "pcap", trace, "-o", out)
    assert code == 0, err
    nodes, c2s, s2c = tshark_follow(out)
    assert nodes[1] == f"127.0.0.1:{port}"
    assert c2s == sent and s2c == received
    # the request's packet carries the send's recorded time (CLOCK_MONOTONIC + realtime offset)
    t = subprocess.run([TSHARK, "-r", str(out), "-Y", "tcp.len > 0", "-T", "fields", "-e",
                        "frame.time_epoch"], capture_output=True, text=True, check=True).stdout.split()[0]
    sec, _, frac = t.partition(".")
    assert int(sec) * 10**9 + int(frac.ljust(9, "0")[:9]) == first_send


def test_real_capture_perfetto_slices_and_jsonl_counts(curl_capture, tmp_path, run_dr):
    import jsonschema

    trace, _content, _port = curl_capture
    code, out, err = run_dr("stats", trace, "--json")
    assert code == 0, err
    stats = {s["name"]: s["count"] for s in json.loads(out)["syscalls"]}
    code, out, err = run_dr("export", "jsonl", trace)
    assert code == 0, err
    counts: dict[str, int] = {}
    for ln in out.splitlines():
        o = json.loads(ln)
        if o["type"] == "syscall":
            counts[o["name"]] = counts.get(o["name"], 0) + 1
    assert counts == stats and sum(counts.values()) > 50
    pf = tmp_path / "curl.json"
    code, _, err = run_dr("export", "perfetto", trace, "-o", pf)
    assert code == 0, err
    doc = json.loads(pf.read_text())
    jsonschema.Draft202012Validator(CHROME_TRACE_SCHEMA).validate(doc)
    assert sum(1 for e in doc["traceEvents"] if e["ph"] == "X") == sum(stats.values())
    # curl exits: its end is a marker on its own thread; every track is named
    exits = [e for e in doc["traceEvents"] if e["ph"] == "i" and e["name"] == "exit"]
    assert exits and all(e["tid"] in {t["tid"] for t in doc["traceEvents"] if t["ph"] == "X"}
                         for e in exits)
    named = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert "curl" in named.values()
    tp = _trace_processor_slices(pf)
    if tp is not None:
        assert tp == sum(stats.values())


def _accepted_connections(trace) -> dict[int, tuple[bytes, bytes]]:
    """Per accepted connection (keyed by the client's port, from accept's sockaddr):
    (bytes received, bytes sent) as the trace holds them, gathered without dr's fd map."""
    conns: dict[int, tuple[list, list]] = {}
    live: dict[tuple[int, int], int] = {}  # (tgid, fd) -> client port
    with TraceReader(trace) as r:
        for ev in r.events():
            key = (ev.tgid, ev.args[0])
            if ev.name in ("accept", "accept4") and ev.ret >= 0:
                port = struct.unpack(">H", ev.payload(1)[2:4])[0]
                live[(ev.tgid, ev.ret)] = port
                conns[port] = ([], [])
            elif key in live and ev.ret > 0 and ev.name in ("recvfrom", "read", "recvmsg", "readv"):
                conns[live[key]][0].append(ev.payload(1)[:ev.ret])
            elif key in live and ev.ret > 0 and ev.name in ("sendto", "write", "sendmsg", "writev"):
                conns[live[key]][1].append(ev.payload(1)[:ev.ret])
            elif ev.name == "close" and key in live:
                del live[key]
    return {p: (b"".join(a), b"".join(b)) for p, (a, b) in conns.items()}


@pytest.mark.slow
def test_pcap_of_attach_mode_server_capture(tmp_path, run_dr):
    """`dr capture --pid` on a python http.server listening on 0.0.0.0 while the test
    fetches a file every 0.3 s: every accepted connection in the trace becomes a TCP
    stream whose bytes, both ways, are exactly the recorded ones."""
    import socket
    import sys
    import time
    import urllib.request

    www = tmp_path / "www"
    www.mkdir()
    content = os.urandom(70_000)
    (www / "f").write_bytes(content)
    port = _free_port()
    srv = subprocess.Popen(["/usr/bin/python3", "-m", "http.server", "--bind", "0.0.0.0", str(port),
                            "-d", str(www)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trace = tmp_path / "srv.drt"
    cap = None
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        cap = subprocess.Popen([sys.executable, "-m", "dr", "capture", "-q", "--pid", str(srv.pid),
                                "--duration", "9", "-o", str(trace)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and cap.poll() is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/f", timeout=5) as resp:
                assert resp.read() == content
            time.sleep(0.3)
        assert cap.wait(timeout=60) == 0, cap.stderr.read()
    finally:
        if cap is not None and cap.poll() is None:
            cap.kill()
            cap.wait()
        srv.kill()
        srv.wait()
    recorded = _accepted_connections(trace)
    complete = {p: c for p, c in recorded.items() if c[1].endswith(content)}
    assert len(complete) >= 3, f"only {len(complete)} complete connections were captured"
    out = tmp_path / "srv.pcap"
    code, _, err = run_dr("export", "pcap", trace, "-o", out)
    assert code == 0, err
    n = int(re.search(r"(\d+) TCP stream", err).group(1))
    assert n == len(recorded)
    follows = tshark_follow_all(out, "tcp", range(n))
    assert len(follows) == n
    for nodes, c2s, s2c in follows:
        client_port = int(nodes[0].rsplit(":", 1)[1])
        assert nodes[1] == f"127.0.0.1:{port}"  # the wildcard listener's address as the client saw it
        assert (c2s, s2c) == recorded[client_port]
