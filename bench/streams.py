"""Benchmark of streams replay (not a test): real services captured by pid, then replayed.

Two workloads, each captured with ``dr capture --pid`` and replayed with the
library (:func:`dr.replay.streams.run_streams`) after the service stopped:

- nginx, master + 2 workers, sendfile on, the site of :mod:`dr.demo.nginx_site`
  (workers as root: the replay sandbox maps only root), under
  ``ab -n N -c 8`` on ``/`` plus ``/msec`` and ``/big.txt``;
- redis-server under ``redis-benchmark -n N -c 50 -t set,get,incr,lpush``
  (shared keys: the recorded global order must hold).

Prints, per workload: connections, verdict, the recorded duration (first to
last event of the trace), the replay's driving time (connections re-sent and
answered; start-up excluded) and start-up, wall time per connection and the
ratio replay/recording.

    .venv/bin/python bench/streams.py [--requests 2000] [--only redis] [--out DIR]
    .venv/bin/python bench/streams.py --replay DIR/redis.drt   # replay a kept trace again
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def recorded_s(trace: Path) -> float:
    from dr.formats.trace import TraceReader
    lo = hi = None
    with TraceReader(trace) as r:
        for ev in r.events():
            lo = ev.ts_exit if lo is None else min(lo, ev.ts_exit)  # a wait may have entered long before
            hi = ev.ts_exit if hi is None else max(hi, ev.ts_exit)
    return ((hi or 0) - (lo or 0)) / 1e9


def replay(name: str, trace: Path, cmd: list[str] | None) -> None:
    from dr.replay.streams import run_streams
    t0 = time.monotonic()
    res = run_streams(str(trace), cmd=cmd)
    total = time.monotonic() - t0
    rep = res.report
    n = len(rep.connections)
    rec = recorded_s(trace)
    print(f"{name:8} {n:6d} conns  {rep.verdict():9} recorded {rec:6.2f} s  replay {rep.wall_s:6.2f} s "
          f"(+{total - rep.wall_s:.2f} s start-up and compare)  {rep.wall_s / max(n, 1) * 1e3:6.2f} ms/conn  "
          f"{rep.wall_s / rec if rec else 0:5.1f}x")


def wait_port(port: int) -> None:
    import socket
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def bench_nginx(n: int, out: Path) -> None:
    from dr.demo.harness import Capture, free_port, stop
    from dr.demo.nginx_site import make_site, remove_site
    port = free_port()
    d = make_site(port, workers=2, user="root", logs="/tmp")
    argv = ["nginx", "-c", f"{d}/nginx.conf", "-g", "daemon off;"]
    ng = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(0.3)
        with Capture(ng.pid, out / "nginx.drt", out / "nginx.log") as cap:
            for k, c, path in ((n, 8, "/"), (n // 10, 4, "/msec"), (n // 20, 2, "/big.txt")):
                subprocess.run(["ab", "-q", "-n", str(k), "-c", str(c), f"http://127.0.0.1:{port}{path}"],
                               capture_output=True, check=True, timeout=600)
            cap.stop(settle_s=0.5)
    finally:
        stop(ng)
    try:
        replay("nginx", out / "nginx.drt", argv)
    finally:
        remove_site(d)


def bench_redis(n: int, out: Path) -> None:
    from dr.demo.harness import Capture, free_port, stop
    port = free_port()
    rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        with Capture(rs.pid, out / "redis.drt", out / "redis.log") as cap:
            subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(n), "-c", "50",
                            "-t", "set,get,incr,lpush", "-q"], capture_output=True, check=True, timeout=600)
            cap.stop(settle_s=0.5)
    finally:
        stop(rs)
    replay("redis", out / "redis.drt", None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--only", choices=("nginx", "redis"), help="one workload")
    ap.add_argument("--out", help="keep the traces in this directory")
    ap.add_argument("--replay", metavar="TRACE", help="only replay a trace kept with --out")
    a = ap.parse_args()
    if a.replay:
        # redis is replayed with its recorded command; nginx's keeps no arguments (site removed): redis only.
        replay(Path(a.replay).stem, Path(a.replay), None)
        return
    with tempfile.TemporaryDirectory(prefix="dr-bench-streams-") as tmp:
        out = Path(a.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        if a.only == "redis":
            pass
        elif shutil.which("nginx") and shutil.which("ab"):
            bench_nginx(a.requests, out)
        else:
            print("nginx: skipped (needs nginx and ab)", file=sys.stderr)
        if a.only == "nginx":
            pass
        elif shutil.which("redis-benchmark"):
            bench_redis(a.requests, out)
        else:
            print("redis: skipped (needs redis-server and redis-tools)", file=sys.stderr)


if __name__ == "__main__":
    main()
