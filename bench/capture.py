"""Benchmark of `dr capture` against strace and perf trace (not a test; `make bench`).

Two workloads, all in one run on the same machine:

- ``dd if=/dev/zero of=/dev/null bs=1 count=N``: two syscalls per byte. The
  time is dd's own ("copied, X s"), so tracer start-up is not counted.
  strace and perf trace are ~100x slower here, so they run a smaller count
  (--peer-count) and their ratio is against untraced dd of that count.
- a loopback HTTP load: python3 -m http.server on 127.0.0.1 and a client
  making --requests sequential GETs of a 4 KiB file; each tracer attaches to
  the server's pid. The time is the client's.

Prints, per tracer: slowdown vs untraced, events per second, drops, trace
bytes per event; for dr, the seconds from dd's exit to dr capture's exit (the
end-of-capture passes a user waits for). Peers that are not installed are skipped and named.

    .venv/bin/python bench/capture.py [--count 1048576] [--peer-count 50000] [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PY = sys.executable
SYS_PY = "/usr/bin/python3"


def dd_cmd(count: int) -> list[str]:
    return ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={count}"]


def dd_seconds(stderr: bytes) -> float:
    m = re.search(rb"copied, ([\d.]+) s", stderr)
    if not m:
        raise RuntimeError("dd did not report its time: " + stderr.decode(errors="replace")[-200:])
    return float(m.group(1))


def trace_summary(path: str) -> dict:
    from dr.formats.trace import TraceReader

    r = TraceReader(path)
    s = r.summary or {}
    lost = sum(v for k, v in (s.get("losses") or r.losses).items() if k != "TRUNCATED")
    return {"events": s.get("events", 0), "lost": lost, "bytes": os.path.getsize(path),
            "walk": f"{s.get('ring_walks', 0)} walks, {s.get('ring_walk_ns', 0) / 1e6:.1f} ms"}


def end_seconds(path: str, done_ns: int) -> float:
    """Seconds from the traced program's last recorded event to dr capture's exit
    (``done_ns``, CLOCK_MONOTONIC as the trace's times): the wait at the end of a capture."""
    from dr.formats.trace import Event, ProcEvent, TraceReader

    r = TraceReader(path)
    last, back = 0, 4
    while not last and back < 2 * len(r.frames):   # the last frames hold files and blobs
        for rec in r.stream(start_frame=max(len(r.frames) - back, 0)):
            if isinstance(rec, Event):
                last = max(last, rec.ts_exit or rec.ts_enter)
            elif isinstance(rec, ProcEvent):
                last = max(last, rec.ts)
        back *= 2
    return (done_ns - last) / 1e9


def lines_of(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def perf_lost(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            m = re.search(rb"LOST (\d+) events", line)
            if m:
                n += int(m.group(1))
    return n


# --------------------------------------------------------------------- dd


def bench_dd(count: int, peer_count: int, tmp: str, runs: int = 10) -> list[dict]:
    rows = []

    def untraced(n: int) -> float:
        best = min(dd_seconds(subprocess.run(dd_cmd(n), capture_output=True).stderr) for _ in range(3))
        return best

    base = untraced(count)
    rows.append({"tracer": "untraced", "n": count, "secs": base, "ratio": 1.0,
                 "events": 2 * count, "lost": 0, "bytes": 0})

    rows.extend(bench_floors(count, base))   # the two floors, in this same run

    best = None
    drops: list[int] = []
    ends: list[float] = []
    for _ in range(runs):  # the best time of `runs`, as for untraced: this machine is shared
        out = os.path.join(tmp, "dd.drt")
        p = subprocess.run([PY, "-m", "dr", "capture", "-q", "-o", out, "--", *dd_cmd(count)],
                           capture_output=True)
        ends.append(round(end_seconds(out, time.clock_gettime_ns(time.CLOCK_MONOTONIC)), 2))
        secs = dd_seconds(p.stderr)
        summ = trace_summary(out)
        drops.append(summ["lost"])
        if best is None or secs < best["secs"]:
            best = {"tracer": "dr capture", "n": count, "secs": secs, "ratio": secs / base, **summ}
    best["drops_per_run"] = drops
    best["end_per_run"] = ends
    rows.append(best)

    peer_base = untraced(peer_count)
    if shutil.which("strace"):
        out = os.path.join(tmp, "dd.strace")
        p = subprocess.run(["strace", "-f", "-o", out, *dd_cmd(peer_count)], capture_output=True)
        secs = dd_seconds(p.stderr)
        rows.append({"tracer": "strace -f -o", "n": peer_count, "secs": secs, "ratio": secs / peer_base,
                     "events": lines_of(out), "lost": 0, "bytes": os.path.getsize(out)})
    else:
        rows.append({"tracer": "strace (not installed)", "skip": True})
    if shutil.which("perf"):
        out = os.path.join(tmp, "dd.perf")
        p = subprocess.run(["perf", "trace", "-o", out, "--", *dd_cmd(peer_count)], capture_output=True)
        try:
            secs = dd_seconds(p.stderr)
            rows.append({"tracer": "perf trace", "n": peer_count, "secs": secs, "ratio": secs / peer_base,
                         "events": lines_of(out), "lost": perf_lost(out), "bytes": os.path.getsize(out)})
        except RuntimeError:
            rows.append({"tracer": "perf trace (failed to run)", "skip": True})
    else:
        rows.append({"tracer": "perf trace (not installed)", "skip": True})
    return rows


# --------------------------------------------------------------------- floors

FLOOR_C = r"""
BPF_HASH(pids, u32, u8, 64);
#ifdef RECORD
struct rec { u64 w[11]; };            /* 88 bytes: one minimal fixed-size record */
BPF_RINGBUF_OUTPUT(rb, 16384);
#endif
RAW_TRACEPOINT_PROBE(sys_enter)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!pids.lookup(&tgid))
        return 0;
    return 0;
}
RAW_TRACEPOINT_PROBE(sys_exit)
{
    u64 pt = bpf_get_current_pid_tgid();
    u32 tgid = pt >> 32;
    if (!pids.lookup(&tgid))
        return 0;
#ifdef RECORD
    struct rec *r = rb.ringbuf_reserve(sizeof(struct rec));
    if (!r)
        return 0;
    r->w[0] = pt;
    r->w[1] = ctx->args[1];
    r->w[2] = bpf_ktime_get_ns();
    rb.ringbuf_submit(r, 1);    /* BPF_RB_NO_WAKEUP: drained by polling, as dr does */
#endif
    return 0;
}
"""


def floor_run(count: int, record: bool) -> None:
    """dd's time under a floor tracer: two raw tracepoint programs that only test the
    tgid; with ``record`` also one 88-byte ring-buffer record per syscall at exit,
    drained by mmap as dr drains (dr.capture.ringbuf)."""
    import ctypes as ct
    import threading

    from bcc import BPF

    from dr.capture.ringbuf import RingBuffer

    b = BPF(text=FLOOR_C.encode(), cflags=["-DRECORD"] if record else [])
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(go_r, 1)
        os.execvp("dd", dd_cmd(count))
    b["pids"][ct.c_uint32(pid)] = ct.c_uint8(1)
    stop = threading.Event()
    drainer = None
    if record:
        ring = RingBuffer(b["rb"].map_fd, 16384 * os.sysconf("SC_PAGE_SIZE"), lambda: True)

        def drain():
            while not stop.is_set():
                ring.drain(lambda span: None)
                time.sleep(0.02)
        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
    os.write(go_w, b"g")   # dd writes its time on its stderr, inherited from ours
    os.waitpid(pid, 0)
    stop.set()
    if drainer:
        drainer.join()
    b.cleanup()


def bench_floors(count: int, base: float) -> list[dict]:
    rows = []
    for name, record in (("floor: tgid test only", False), ("floor: + 88 B record/exit", True)):
        best = None
        for _ in range(3):
            secs = _floor_secs(count, record)
            best = secs if best is None else min(best, secs)
        rows.append({"tracer": name, "n": count, "secs": best, "ratio": best / base,
                     "events": 2 * count, "lost": 0, "bytes": 0})
    return rows


def _floor_secs(count: int, record: bool) -> float:
    """Run floor_run in a child process (BCC state stays out of this one); dd's own time."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import capture as c; c._floor_child({count}, {record})")
    p = subprocess.run([PY, "-c", code], capture_output=True)
    return dd_seconds(p.stderr)


def _floor_child(count: int, record: bool) -> None:
    """In a child: load the floor, run dd with stderr inherited (its time line goes to our stderr)."""
    floor_run(count, record)


# --------------------------------------------------------------------- HTTP

CLIENT = r"""
import sys, time, http.client
port, n = int(sys.argv[1]), int(sys.argv[2])
t0 = time.perf_counter()
for _ in range(n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/f4k.bin")
    r = c.getresponse()
    assert r.status == 200 and len(r.read()) == 4096
    c.close()
print(time.perf_counter() - t0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("http.server did not start")


def bench_http(requests: int, tmp: str) -> list[dict]:
    www = os.path.join(tmp, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "f4k.bin"), "wb") as f:
        f.write(os.urandom(4096))
    rows = []

    def run(tracer: str, start_tracer) -> None:
        port = _free_port()
        server = subprocess.Popen([SYS_PY, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                                   "--directory", www], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        tr = None
        try:
            _wait_port(port)
            tr, finish = start_tracer(server.pid) if start_tracer else (None, None)
            c = subprocess.run([SYS_PY, "-c", CLIENT, str(port), str(requests)], capture_output=True,
                               check=True)
            secs = float(c.stdout)
            extra = finish() if finish else {"events": 0, "lost": 0, "bytes": 0}
        finally:
            if tr is not None and tr.poll() is None:
                tr.kill()
            server.kill()
            server.wait()
        rows.append({"tracer": tracer, "n": requests, "secs": secs, **extra})

    run("untraced", None)  # warm-up: the first server start pays for cold caches
    rows.clear()
    run("untraced", None)

    def start_dr(pid):
        out = os.path.join(tmp, "http.drt")
        if os.path.exists(out):
            os.unlink(out)
        p = subprocess.Popen([PY, "-m", "dr", "capture", "-q", "--pid", str(pid), "-o", out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(600):
            if os.path.exists(out) and os.path.getsize(out) > 16:
                break
            if p.poll() is not None:
                raise RuntimeError(p.stderr.read().decode())
            time.sleep(0.05)

        def finish():
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
            return trace_summary(out)
        return p, finish

    run("dr capture --pid", start_dr)

    def start_peer(argv, out, lost_fn):
        def start(pid):
            p = subprocess.Popen([*argv, str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)  # let it attach

            def finish():
                p.send_signal(signal.SIGINT)
                p.wait(timeout=60)
                return {"events": lines_of(out), "lost": lost_fn(out), "bytes": os.path.getsize(out)}
            return p, finish
        return start

    if shutil.which("strace"):
        out = os.path.join(tmp, "http.strace")
        run("strace -f -o", start_peer(["strace", "-f", "-o", out, "-p"], out, lambda _p: 0))
    else:
        rows.append({"tracer": "strace (not installed)", "skip": True})
    if shutil.which("perf"):
        out = os.path.join(tmp, "http.perf")
        run("perf trace -p (*)", start_peer(["perf", "trace", "-o", out, "-p"], out, perf_lost))
    else:
        rows.append({"tracer": "perf trace (not installed)", "skip": True})
    base = rows[0]["secs"]
    for r in rows:
        if not r.get("skip"):
            r["ratio"] = r["secs"] / base
    return rows


def show(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"  {'tracer':<22} {'n':>9} {'seconds':>9} {'slowdown':>9} {'events':>10} {'events/s':>10} "
          f"{'drops':>7} {'bytes/event':>12}")
    for r in rows:
        if r.get("skip"):
            print(f"  {r['tracer']:<22} skipped")
            continue
        ev = r["events"]
        bpe = f"{r['bytes'] / ev:.1f}" if r["bytes"] and ev else "-"
        print(f"  {r['tracer']:<22} {r['n']:>9,} {r['secs']:>9.3f} {r['ratio']:>8.2f}x {ev:>10,} "
              f"{ev / r['secs'] if r['secs'] else 0:>10,.0f} {r['lost']:>7,} {bpe:>12}"
              + (f"   ring drain: {r['walk']}" if r.get("walk") else "")
              + (f"   drops per run: {r['drops_per_run']}" if r.get("drops_per_run") else "")
              + (f"\n  {'':<22} seconds from dd's exit to dr's, per run: {r['end_per_run']}"
                 if r.get("end_per_run") else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1 << 20, help="dd bytes (syscalls / 2) for untraced and dr")
    ap.add_argument("--peer-count", type=int, default=50_000, help="dd bytes under strace / perf trace")
    ap.add_argument("--requests", type=int, default=300, help="HTTP requests per run")
    ap.add_argument("--runs", type=int, default=10, help="dr capture runs of dd (drops counted in each)")
    ap.add_argument("--no-http", action="store_true", help="only the dd workload")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/capture.py needs root (dr capture loads BPF programs)", file=sys.stderr)
        return 1
    print(f"dr capture benchmark on {os.uname().release}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="dr-bench-") as tmp:
        show(f"dd if=/dev/zero of=/dev/null bs=1 (time reported by dd; peers at count={a.peer_count:,})",
             bench_dd(a.count, a.peer_count, tmp, a.runs))
        if a.no_http:
            return 0
        show(f"loopback HTTP: {a.requests} sequential GETs of 4 KiB from python3 -m http.server "
             "(tracers attached to the server)", bench_http(a.requests, tmp))
        print("  (*) perf trace -p follows only the threads that exist when it attaches; "
              "http.server starts a thread per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
