"""Benchmark of strict replay (not a test; `make bench` runs it after bench/capture.py).

Three workloads, each recorded with ``dr capture -- CMD`` and replayed with the
library (:func:`dr.replay.replay_trace`) in the same run:

- ``dd if=/dev/zero of=/dev/null bs=1 count=N``: two syscalls per byte, the
  worst case for a supervisor that answers every syscall from user space;
- the HTTP case: ``curl`` fetching a 64 KiB file --requests times over one
  keep-alive connection from a python3 http.server on 127.0.0.1 that is
  stopped before the replay;
- the threaded case: /usr/bin/python3 with --threads threads, each drawing
  random bytes, reading two clocks and writing a line --rounds times, with
  short sleeps (per-thread matching of thread-local calls, GIL waits, the
  recorded global order of the writes; see docs/ordering.md).

Prints, per workload: syscalls replayed, replay wall time, syscalls per
second, the recorded duration (first to last event of the capture) and the
ratio replay/recording. The replay time excludes the sandbox start-up (trace
loading, namespaces), which is printed apart. ``us/call`` is the wall time per
notified syscall; ``user``/``sys`` the supervisor's own CPU time per notified
syscall (getrusage, Python and kernel side): unlike wall time they hardly move
with the machine's load.

    .venv/bin/python bench/replay.py [--count 100000] [--requests 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DR = str(Path(sys.executable).with_name("dr"))


def capture(out: Path, cmd: list[str]) -> float:
    t = time.monotonic()
    subprocess.run([DR, "capture", "-q", "-o", str(out), "--", *cmd], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def replay(trace: Path) -> dict:
    import resource

    from dr.replay.strict import ReplayOptions, ReplaySession, Status

    t = time.monotonic()
    s = ReplaySession(str(trace), ReplayOptions(stdout=open(os.devnull, "wb")))
    try:
        s.start()
        t_run = time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        r = s.run()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - t_run
    finally:
        s.close()
    rep = s.report
    n = max(rep.notifications, 1)
    status = {Status.EXITED: "faithful", Status.DIVERGED: "diverged"}.get(r.status, "error")
    return {"status": status, "syscalls": rep.events_replayed, "wall": wall,
            "startup": t_run - t, "recorded": rep.recorded_duration_s or 0.0,
            "notifications": rep.notifications, "us_call": wall / n * 1e6,
            "user_us": (ru1.ru_utime - ru0.ru_utime) / n * 1e6,
            "sys_us": (ru1.ru_stime - ru0.ru_stime) / n * 1e6}


def http_workload(work: Path, requests: int) -> list[str]:
    root = work / "www"
    root.mkdir()
    (root / "file").write_bytes(os.urandom(65536))

    class Quiet(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/file"
    http_workload.server = srv  # type: ignore[attr-defined]
    return ["curl", "-s", "-o", "/dev/null", *([url] * requests)]


THREADED = """
import os, sys, threading, time
def work(i, rounds):
    for k in range(rounds):
        r = os.urandom(8).hex()
        t, m = time.time(), time.monotonic()
        os.write(1, f"{i} {k} {r} {t:.6f} {m:.6f}\\n".encode())
        if k % 10 == 0:
            time.sleep(0.001)
n, rounds = int(sys.argv[1]), int(sys.argv[2])
ts = [threading.Thread(target=work, args=(i, rounds)) for i in range(n)]
for t in ts: t.start()
for t in ts: t.join()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100000, help="dd bytes (two syscalls each)")
    ap.add_argument("--requests", type=int, default=50, help="HTTP GETs of 64 KiB")
    ap.add_argument("--threads", type=int, default=8, help="threads of the threaded workload")
    ap.add_argument("--rounds", type=int, default=200, help="rounds per thread (threaded workload)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/replay.py: run as root (the capture needs CAP_BPF)")
    work = Path(tempfile.mkdtemp(prefix="dr-bench-replay-"))
    rows = []
    try:
        dd = work / "dd.drt"
        capture(dd, ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={a.count}"])
        rows.append((f"dd bs=1 count={a.count}", replay(dd)))
        cmd = http_workload(work, a.requests)
        http = work / "http.drt"
        try:
            capture(http, cmd)
        finally:
            http_workload.server.shutdown()  # type: ignore[attr-defined]
            http_workload.server.server_close()  # type: ignore[attr-defined]
        rows.append((f"curl {a.requests} x 64 KiB (server stopped)", replay(http)))
        script = work / "threaded.py"
        script.write_text(THREADED)
        thr = work / "threaded.drt"
        capture(thr, ["/usr/bin/python3", str(script), str(a.threads), str(a.rounds)])
        rows.append((f"python {a.threads} threads x {a.rounds} rounds", replay(thr)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'workload':38} {'status':9} {'syscalls':>9} {'replay s':>9} {'syscalls/s':>11} "
          f"{'recorded s':>10} {'replay/rec':>10} {'start-up s':>10} {'us/call':>8} {'user us':>8} "
          f"{'sys us':>7}")
    for name, r in rows:
        rate = r["syscalls"] / r["wall"] if r["wall"] else 0.0
        ratio = r["wall"] / r["recorded"] if r["recorded"] else float("nan")
        print(f"{name:38} {r['status']:9} {r['syscalls']:9d} {r['wall']:9.3f} {rate:11.0f} "
              f"{r['recorded']:10.3f} {ratio:9.1f}x {r['startup']:10.2f} {r['us_call']:8.1f} "
              f"{r['user_us']:8.1f} {r['sys_us']:7.1f}")


if __name__ == "__main__":
    main()
