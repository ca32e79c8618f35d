"""The README's main-job command: `bash scripts/demo.sh` runs the whole story and ends with verdicts."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (eBPF capture)")
def test_make_demo_ends_with_replay_verdicts():
    # A fresh directory per run, kept when the run fails: its reports say why.
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    out = ROOT / "out" / "demo-test" / f"{stamp}-{os.getpid()}"
    env = {**os.environ, "DR_DEMO_OUT": str(out)}
    r = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    where = f"\n(this run's trace, reports and logs: {out})"
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + where
    tail = r.stdout.strip().splitlines()[-4:]
    same = next(line for line in tail if line.startswith("verdict, same build:"))
    modified = next(line for line in tail if line.startswith("verdict, modified build:"))
    assert "IDENTICAL — 50 of 50 connection(s) identical" in same, same + where
    assert "DIFFERS — 40 of 50 connection(s) identical, 10 differ" in modified, modified + where
    assert "changed responses: GET /price/" in tail[-1]
    for name in ("incident.drt", "replay-same-build.json", "replay-modified-build.json"):
        assert (out / name).stat().st_size > 0
        assert str(out / name) in r.stdout  # the demo says where each file is
    shutil.rmtree(out)  # kept only when the run failed
