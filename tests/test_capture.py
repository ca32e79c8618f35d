"""dr capture against real programs, real eBPF (issue 3). Needs root.

Each test runs ``python -m dr capture`` as a child process (signals, spawn
mode and exit statuses are part of what is tested) and reads the trace back
through dr.formats.trace.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from dr import schema
from dr.errors import ExitCode

PY = sys.executable
SYS_PY = "/usr/bin/python3"  # a real interpreter, not a pyenv shim script

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (CAP_BPF)"),
]

NR = {n: schema.by_name(n).nr for n in (
    "read", "write", "openat", "accept4", "accept", "recvfrom", "sendto", "sendfile", "writev",
    "sendmsg", "recvmsg", "clock_gettime", "execve", "close", "poll")}


def dr_capture(*args, timeout=60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "dr", "capture", *map(str, args)], capture_output=True,
                          timeout=timeout, **kw)


def read_trace(path):
    from dr.formats.trace import TraceReader

    r = TraceReader(path)
    items = list(r.stream())
    return r, [e for e in items if hasattr(e, "payloads")], [e for e in items if hasattr(e, "what")]


def assert_contiguous(events):
    """Every tid's events are in order with seq 1, 2, 3... (or contiguous from the first seen)."""
    by_tid = defaultdict(list)
    for e in events:
        by_tid[e.tid].append(e.seq)
    for tid, seqs in by_tid.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"tid {tid}: gaps or disorder"
    return by_tid


def test_spawn_urandom_time_and_write(tmp_path):
    out = tmp_path / "spawn.drt"
    script = ("import os, time\n"
              "fd = os.open('/dev/urandom', os.O_RDONLY)\n"
              "b = os.read(fd, 16)\n"
              "t = time.time()\n"
              "print(b.hex(), repr(t), flush=True)\n")
    p = dr_capture("-q", "-o", out, "--", SYS_PY, "-c", script)
    assert p.returncode == 0, p.stderr.decode()
    hexbytes, tstr = p.stdout.decode().split()
    r, events, procs = read_trace(out)
    assert r.summary is not None and r.meta["mode"] == "spawn"
    assert not any(v for k, v in r.losses.items() if k != "TRUNCATED")
    # the very first syscall is the command's execve
    first = events[0]
    assert first.nr == NR["execve"] and first.seq == 1 and first.ret == 0
    assert first.payload(0) == SYS_PY.encode()
    # the urandom bytes, as read(2) returned them
    ur = [e for e in events if e.nr == NR["openat"] and e.payload(1) == b"/dev/urandom"]
    assert len(ur) == 1
    fd = ur[0].ret
    reads = [e for e in events if e.nr == NR["read"] and e.args[0] == fd and e.index > ur[0].index]
    assert reads[0].payload(1) == bytes.fromhex(hexbytes)
    # the CLOCK_REALTIME reading behind time.time() (the vDSO made to enter the kernel)
    t = float(tstr)
    clocks = []
    for e in events:
        if e.nr == NR["clock_gettime"] and e.args[0] == 0 and e.payload(1):
            sec, nsec = struct.unpack("<qq", e.payload(1))
            clocks.append(sec + nsec * 1e-9)
    assert any(abs(c - t) < 1e-6 for c in clocks), (t, clocks[-3:])
    # the write of the printed line
    line = p.stdout
    writes = b"".join(e.payload(1) or b"" for e in events if e.nr == NR["write"] and e.args[0] == 1)
    assert writes == line
    assert r.summary["exit_status"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, deadline: float = 10.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start")


def _wait_attached(path, proc, deadline: float = 30.0) -> None:
    """The trace gets its metadata frame once the probes trace the target."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        if path.exists() and path.stat().st_size > 16:
            return
        time.sleep(0.05)
    raise AssertionError("capture did not start")


def test_attach_http_server_request_and_file_bytes(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    body = os.urandom(70_000) + b"end of the known file\n"
    (www / "known.bin").write_bytes(body)
    port = _free_port()
    server = subprocess.Popen([SYS_PY, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                               "--directory", str(www)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    out = tmp_path / "http.drt"
    cap = None
    try:
        _wait_listening(port)
        cap = subprocess.Popen([PY, "-m", "dr", "capture", "-q", "--pid", str(server.pid), "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_attached(out, cap)
        got = subprocess.run(["curl", "-s", "-o", "-", f"http://127.0.0.1:{port}/known.bin"],
                             capture_output=True, timeout=20).stdout
        assert got == body
        time.sleep(0.2)
        cap.send_signal(signal.SIGTERM)
        cap.wait(timeout=30)
        assert cap.returncode == 0, cap.stderr.read().decode()
    finally:
        if cap and cap.poll() is None:
            cap.kill()
        server.kill()
        server.wait()
    r, events, _ = read_trace(out)
    assert r.summary is not None and r.meta["mode"] == "attach" and r.meta["pid"] == server.pid
    assert any(f["type"] == "socket" and f.get("state") == "LISTEN" for f in r.meta["fds"])
    acc = [e for e in events if e.nr in (NR["accept4"], NR["accept"]) and e.ret >= 0]
    assert acc, "no accept recorded"
    conn = acc[0].ret
    family, cport, addr = struct.unpack_from("<HH4s", acc[0].payload(1))
    assert family == socket.AF_INET and socket.inet_ntoa(addr) == "127.0.0.1" and cport != port
    received = b"".join(e.payload(1) or b"" for e in events
                        if e.nr in (NR["read"], NR["recvfrom"]) and e.args[0] == conn and e.ret > 0)
    assert received.startswith(b"GET /known.bin HTTP/1.1\r\n")
    sent = b"".join(e.payload(1) or b"" for e in events
                    if e.nr in (NR["write"], NR["sendto"]) and e.args[0] == conn and e.ret > 0)
    headers, _, sent_body = sent.partition(b"\r\n\r\n")
    assert headers.startswith(b"HTTP/1.0 200") and sent_body == body


THREADS = r"""
import os, threading
def work():
    for _ in range(200):
        os.getppid()
    os.write(1, b"%d\n" % threading.get_native_id())
ts = [threading.Thread(target=work) for _ in range(8)]
for t in ts: t.start()
for t in ts: t.join()
"""


def test_eight_threads_every_tid_in_order(tmp_path):
    out = tmp_path / "threads.drt"
    p = dr_capture("-q", "-o", out, "--", SYS_PY, "-c", THREADS)
    assert p.returncode == 0, p.stderr.decode()
    tids = {int(x) for x in p.stdout.split()}
    assert len(tids) == 8
    r, events, procs = read_trace(out)
    assert sum(r.losses.values()) == 0 and r.summary["losses"]["RINGBUF_EVENT"] == 0
    by_tid = assert_contiguous(events)
    getppid = schema.by_name("getppid").nr
    for tid in tids:
        assert by_tid[tid][0] == 1
        assert sum(1 for e in events if e.tid == tid and e.nr == getppid) == 200
    forks = {pe.arg0 for pe in procs if pe.what == schema.PROC_EVENTS["FORK"]}
    assert tids <= forks


def test_forking_pipeline_every_process(tmp_path):
    out = tmp_path / "pipe.drt"
    p = dr_capture("-q", "-o", out, "--", "/bin/sh", "-c", "seq 1 3000 | sort -rn | head -n 3")
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == b"3000\n2999\n2998\n"
    r, events, procs = read_trace(out)
    assert sum(r.losses.values()) == 0
    by_tid = assert_contiguous(events)
    children = {pe.arg0 for pe in procs if pe.what == schema.PROC_EVENTS["FORK"]}
    assert len(children) >= 3
    for tid in children:
        assert by_tid[tid][0] == 1, f"child {tid} misses its first syscalls"
    execs = [e.payload(0) for e in events if e.nr == NR["execve"] and e.ret == 0]
    assert {b"seq", b"sort", b"head"} <= {os.path.basename(x) for x in execs if x}
    seq_out = b"".join(e.payload(1) for e in events if e.nr == NR["write"] and e.args[0] == 1
                       and e.tgid in children and e.payload(1) and e.payload(1).startswith(b"1\n"))
    assert seq_out.startswith(b"1\n2\n3\n")
    head_out = [e.payload(1) for e in events if e.nr == NR["write"] and e.payload(1) == p.stdout]
    assert head_out


def test_forced_loss_is_counted_and_reported(tmp_path):
    out = tmp_path / "loss.drt"
    p = dr_capture("-o", out, "--ringbuf-size", "4096", "--",
                   "dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=100000")
    assert p.returncode == ExitCode.LOSS, p.stderr.decode()
    err = p.stderr.decode()
    assert "lost" in err and re.search(r"RINGBUF_\w+ [\d,]+", err)
    r, events, _ = read_trace(out)
    lost = sum(v for k, v in r.losses.items() if k.startswith("RINGBUF"))
    assert lost > 0 and r.summary["losses"]
    assert sum(v for k, v in r.summary["losses"].items() if k.startswith("RINGBUF")) == lost


def test_no_such_pid_one_line():
    p = dr_capture("--pid", "999999999", "-o", "/tmp/never.drt")
    assert p.returncode == ExitCode.ERROR
    err = p.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "no process with pid 999999999" in err[0]


def test_unwritable_output_one_line(tmp_path):
    p = dr_capture("-o", tmp_path / "no" / "such" / "dir.drt", "--", "true")
    assert p.returncode == ExitCode.ERROR
    err = p.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "cannot write trace" in err[0] and "Traceback" not in p.stderr.decode()


def test_usage_and_ebpf_text():
    p = dr_capture("-o", "/tmp/x.drt")
    assert p.returncode == ExitCode.USAGE and b"give exactly one target" in p.stderr
    p = dr_capture("--ebpf")
    assert p.returncode == 0 and b"RAW_TRACEPOINT_PROBE(sys_enter)" in p.stdout


def test_disk_full_stops_cleanly_with_a_valid_trace(tmp_path):
    from dr.formats.trace import TraceReader

    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = small / "t.drt"
        p = dr_capture("-q", "-o", out, "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=300000")
        text = p.stderr.decode()
        err = [ln for ln in text.splitlines() if ln.startswith("dr:")]  # dd writes there too
        assert p.returncode == ExitCode.ERROR
        assert len(err) == 1 and "No space left on device" in err[0] and "Traceback" not in text
        r = TraceReader(out)
        assert r.truncated and r.meta["mode"] == "spawn"
        assert sum(1 for _ in r.events()) > 1000
    finally:
        subprocess.run(["umount", "-l", str(small)])


def test_not_root_one_line():
    if not shutil.which("su"):
        pytest.skip("su is not installed")
    p = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c",
                        f"{PY} -m dr capture --pid {os.getpid()} -o /tmp/dr-nobody-never.drt"],
                       capture_output=True, timeout=60)
    err = p.stderr.decode().strip().splitlines()
    assert p.returncode == ExitCode.ERROR and len(err) == 1 and "needs root" in err[0]


TWO_THREADS = r"""
import os, threading, time, sys
def spin():
    while True:
        os.getppid(); time.sleep(0.001)
threading.Thread(target=spin, daemon=True).start()
time.sleep(0.2)
print(" ".join(os.listdir(f"/proc/{os.getpid()}/task")), flush=True)
while True:
    os.getuid(); time.sleep(0.001)
"""


def test_tid_traces_one_thread(tmp_path):
    proc = subprocess.Popen([SYS_PY, "-c", TWO_THREADS], stdout=subprocess.PIPE)
    try:
        tids = [int(t) for t in proc.stdout.readline().split()]
        other = next(t for t in tids if t != proc.pid)
        out = tmp_path / "tid.drt"
        p = dr_capture("-q", "--tid", other, "--duration", "1", "-o", out)
        assert p.returncode == 0, p.stderr.decode()
    finally:
        proc.kill()
        proc.wait()
    _, events, _ = read_trace(out)
    assert events and {e.tid for e in events} == {other}
    assert any(e.nr == schema.by_name("getppid").nr for e in events)


def _all_frames(path) -> bytes:
    """Every frame of a trace decompressed and joined (the header too), to search for bytes."""
    import zstandard

    data = open(path, "rb").read()
    out, pos = [data[:16]], 16
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "little")
        out.append(zstandard.ZstdDecompressor().decompress(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return b"".join(out)


def test_redact_keeps_secrets_off_disk(tmp_path):
    """`dr capture --redact`: a curl request's bearer token and email never reach the trace file."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.txt").write_bytes(b"hello\n")
    port = _free_port()
    server = subprocess.Popen([SYS_PY, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                               "--directory", str(www)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    token, email = b"dXNlcjpTM2NyZXRQYXNzdzByZA9xQ7", b"alice.smith@example.org"
    out = tmp_path / "red.drt"
    try:
        _wait_listening(port)
        p = dr_capture("-q", "--redact", "-o", out, "--", "curl", "-s",
                       "-H", f"Authorization: Bearer {token.decode()}", "-H", f"X-Contact: {email.decode()}",
                       f"http://127.0.0.1:{port}/f.txt")
    finally:
        server.kill()
        server.wait()
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == b"hello\n"
    everything = _all_frames(out)
    assert token not in everything and email not in everything
    r, events, _ = read_trace(out)
    sent = b"".join(e.payload(1) or b"" for e in events if e.nr in (NR["sendto"], NR["write"]) and e.ret > 0)
    assert b"GET /f.txt HTTP/1.1\r\n" in sent and b"Authorization: Bearer " + b"*" * len(token) in sent
    assert r.meta["redaction"]["applied"] is True
    assert r.summary["redaction"]["matches"]["authorization"] >= 1
    assert r.summary["redaction"]["matches"]["email"] >= 1
    spans = [s for rec in r.stream() if isinstance(rec, dict) and rec.get("t") == "redactions"
             for s in rec["spans"]]
    assert any(s[5] == "authorization" for s in spans)


def test_long_iovec_argv_default_signals_and_no_follow(tmp_path):
    """The probes' bounded copy loop covers 60 argv entries at entry and a 60-segment writev;
    the command starts with default signal dispositions and an empty mask,
    though dr's Python ignores SIGPIPE and SIGXFSZ; --no-follow leaves the shell's grep out."""
    out = tmp_path / "iov.drt"
    args = [f"arg{i:02d}" for i in range(60)]
    script = "import os\nn = os.writev(1, [b'seg%02d;' % i for i in range(60)])\nassert n == 360\n"
    shell = f'grep -E "^Sig(Ign|Blk):" /proc/self/status; exec {SYS_PY} -c "$0" "$@"'
    p = dr_capture("-q", "--no-follow", "-o", out, "--", "/bin/sh", "-c", shell, script, *args)
    assert p.returncode == 0, p.stderr.decode()
    text, _, written = p.stdout.decode().partition("seg00")
    fields = dict(line.split(":\t") for line in text.splitlines())
    assert fields == {"SigIgn": "0000000000000000", "SigBlk": "0000000000000000"}, fields
    r, events, procs = read_trace(out)
    assert not any(v for k, v in r.losses.items() if k != "TRUNCATED")
    assert {e.tgid for e in events} == {events[0].tgid}      # not grep's
    assert not [pe for pe in procs if pe.what == schema.PROC_EVENTS["FORK"]]
    ex = [e for e in events if e.nr == NR["execve"] and e.payload(0) == SYS_PY.encode()]
    argv = ex[0].payload(1).split(b"\0")
    assert argv[:3] == [SYS_PY.encode(), b"-c", script.encode()]
    assert [a.decode() for a in argv[3:63]] == args
    wv = [e for e in events if e.nr == NR["writev"] and e.args[0] == 1]
    assert wv and wv[0].payload(1) == b"".join(b"seg%02d;" % i for i in range(60))


def test_inline_event_records_round_trip_and_redact(tmp_path):
    """syscall_event_data (an event with its payload inline) reads back and is redacted like payload records."""
    from dr.formats.redact import Redactor, load_policy
    from dr.formats.trace import Event, Payload, TraceWriter, encode_block

    evs = [Event(tid=7, nr=NR["write"], args=(1, 0, 20, 0, 0, 0), ret=20, seq=1, tgid=7,
                 payloads={1: Payload(1, b"mail bob@example.com")}),
           Event(tid=7, nr=NR["read"], args=(0, 0, 9, 0, 0, 0), ret=9, seq=2, tgid=7,
                 payloads={1: Payload(1, b"x" * 9, 100)})]
    raw = encode_block(evs, inline=True)
    assert raw[8] == schema.record("syscall_event_data").kind
    masked, spans = Redactor(load_policy(None)).block(raw)
    assert len(masked) == len(raw) and b"bob@example.com" not in masked
    assert spans == [[7, 1, 1, 5, 15, "email"]]
    out = tmp_path / "inline.drt"
    with TraceWriter(str(out), {"argv": []}) as w:
        w.write_block(raw)
    r, got, _ = read_trace(out)
    assert [(e.seq, e.payload(1), e.payloads[1].total) for e in got] == [
        (1, b"mail bob@example.com", 20), (2, b"x" * 9, 100)]


def test_probes_load_with_the_most_copier_steps(tmp_path):
    """A large --snaplen asks for the most copier steps; the verifier's budget caps them
    (capture/probes.py MAX_COPIER_STEPS). At the cap the probes must still load, and a
    3 MiB write is kept whole up to what the steps allow, the rest counted, never silent."""
    from dr.capture.probes import MAX_COPIER_STEPS, ProbeConfig

    assert ProbeConfig(snaplen=64 << 20).copier_steps() == MAX_COPIER_STEPS
    out = tmp_path / "big.drt"
    r = dr_capture("-q", "--snaplen", "64M", "-o", out, "--", PY, "-c",
                   "import os; os.write(1, b'x' * (3 << 20))", timeout=120)
    assert "refused the capture probes" not in r.stderr.decode(), r.stderr.decode()
    reader, events, _ = read_trace(out)
    big = [e for e in events if e.name == "write" and e.ret == 3 << 20]
    assert len(big) == 1
    kept = len(big[0].payload(1) or b"")
    assert kept >= 1 << 20
    if kept < 3 << 20:   # cut by the steps: counted as a loss, and capture says so
        assert r.returncode == 3 and reader.losses
