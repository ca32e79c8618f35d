"""``python -m dr.demo`` (``make demo``): dr's main job, end to end, on the built-in demo.

1. start the key-value store (the dependency) and the service on 127.0.0.1;
2. ``dr capture --pid`` the service while the load generator sends N requests;
3. stop the dependency (and the live service);
4. ``dr replay`` the trace against the same build: every response identical;
5. replay it against the modified build (:mod:`dr.demo.service_v2`): the
   changed responses are reported, each with a diff;
6. ``dr bundle create`` the trace when the bundle command exists.

Prints where each file is and ends with the verdicts. Exit status 0 when both
verdicts are the expected ones. Needs root (capture loads eBPF programs).

Files go to ``--out`` (default ``$DR_DEMO_OUT``, else ``out/demo``); the
previous run's directory is kept beside it as ``OUT.prev``, so a surprising
verdict can still be read after the next run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dr.demo.harness import Capture, free_port, start_line_server, stop

def _say(line: str) -> None:
    print(f"demo: {line}", flush=True)


def _dr() -> list[str]:
    return [sys.executable, "-m", "dr"]


def _has_bundle() -> bool:
    r = subprocess.run(_dr() + ["bundle", "create", "--help"], capture_output=True)
    return r.returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dr.demo", description="dr's main job on the built-in demo")
    ap.add_argument("--out", default=os.environ.get("DR_DEMO_OUT") or "out/demo",
                    help="output directory (default $DR_DEMO_OUT, else ./out/demo); the previous "
                         "run's is kept as OUT.prev")
    ap.add_argument("-n", "--requests", type=int, default=50)
    ap.add_argument("-c", "--concurrency", type=int, default=4)
    ap.add_argument("--attach-timeout", type=float, default=90.0,
                    help="seconds to wait for dr capture to attach")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: dr capture loads eBPF programs; run the demo as root (sudo make demo)", file=sys.stderr)
        return 1
    from dr.demo import load
    from dr.replay.streams import run_streams

    out = Path(args.out).resolve()
    if out.is_dir() and any(out.iterdir()):
        prev = out.with_name(out.name + ".prev")
        shutil.rmtree(prev, ignore_errors=True)
        out.rename(prev)
    out.mkdir(parents=True, exist_ok=True)
    trace = out / "incident.drt"
    kv_port, svc_port = free_port(), free_port()
    kv = svc = None
    cap: Capture | None = None
    try:
        kv = start_line_server([sys.executable, "-m", "dr.demo.kv", "--port", str(kv_port)], out / "kv.log")
        svc = start_line_server([sys.executable, "-m", "dr.demo.service", "--port", str(svc_port),
                                 "--kv", f"127.0.0.1:{kv_port}"], out / "service.log")
        _say(f"key-value store (the dependency) on 127.0.0.1:{kv_port}, pid {kv.pid}")
        _say(f"service on 127.0.0.1:{svc_port}, pid {svc.pid}")
        _say(f"dr capture --pid {svc.pid} -o {trace}")
        cap = Capture(svc.pid, trace, out / "capture.log", attach_timeout=args.attach_timeout)
        try:
            cap.start()
        except RuntimeError as e:
            _say(str(e))
            return 1
        _say(f"capture attached; sending {args.requests} requests from {args.concurrency} clients")
        t0 = time.monotonic()
        results = load.run(svc_port, args.requests, args.concurrency, pause_s=0.02)
        ok = sum(1 for _, s, _ in results if s)
        _say(f"{ok} of {len(results)} requests answered in {time.monotonic() - t0:.2f} s")
        rc = cap.stop(settle_s=1.2)  # one more frame flush: the trace holds the last responses
        _say(f"capture stopped (exit status {rc}); trace {trace} ({trace.stat().st_size} bytes)")
    finally:
        if cap is not None:
            cap.stop()
        stop(kv)
        stop(svc)
    _say("dependency and live service stopped; replaying offline")

    # What `dr replay` runs for an attach-mode trace (dr.replay.streams), called in-process.
    same_report = out / "replay-same-build.json"
    _say(f"dr replay {trace} --report {same_report}")
    same = run_streams(str(trace), report=str(same_report))
    print(same.report.text())
    modified_cmd = [sys.executable, "-m", "dr.demo.service_v2", "--port", str(svc_port),
                    "--kv", f"127.0.0.1:{kv_port}"]
    mod_report = out / "replay-modified-build.json"
    _say(f"dr replay {trace} --cmd {shlex.quote(shlex.join(modified_cmd))} --report {mod_report}")
    mod = run_streams(str(trace), cmd=modified_cmd, report=str(mod_report))
    print(mod.report.text(limit=3))

    bundle = out / "incident.drb"
    if _has_bundle():
        r = subprocess.run(_dr() + ["bundle", "create", str(trace), "-o", str(bundle),
                                    "--note", "dr demo"], capture_output=True, text=True)
        _say(f"dr bundle create {trace} -o {bundle}")
        if r.returncode != 0:
            _say(f"dr bundle create failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    files = [("trace", trace), ("bundle", bundle),
             ("report, same build", out / "replay-same-build.json"),
             ("report, modified build", out / "replay-modified-build.json"),
             ("capture log", out / "capture.log"), ("service log", out / "service.log")]
    print()
    for what, path in files:
        if path.exists():
            print(f"  {what + ':':<24} {path}")
    changed = [c for c in mod.report.connections if c.status != "identical"]
    print()
    print(f"verdict, same build:     {same.report.verdict()} — {same.report.summary()}")
    print(f"verdict, modified build: {mod.report.verdict()} — {mod.report.summary()} "
          "(expected: dr.demo.service_v2 changed the /price handler)")
    if changed:
        reqs = sorted({c.request for c in changed})
        print(f"  changed responses: {', '.join(reqs[:6])}{' …' if len(reqs) > 6 else ''}")
    good = same.report.all_identical and bool(changed)
    return 0 if good else 4


if __name__ == "__main__":
    sys.exit(main())
