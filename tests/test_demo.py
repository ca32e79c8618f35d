"""The README's main-job command: `bash scripts/demo.sh` runs the whole story and ends with verdicts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (eBPF capture)")
def test_make_demo_ends_with_replay_verdicts():
    r = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tail = r.stdout.strip().splitlines()[-4:]
    same = next(line for line in tail if line.startswith("verdict, same build:"))
    modified = next(line for line in tail if line.startswith("verdict, modified build:"))
    assert "IDENTICAL — 50 of 50 connection(s) identical" in same
    assert "DIFFERS — 40 of 50 connection(s) identical, 10 differ" in modified
    assert "changed responses: GET /price/" in tail[-1]
    out = ROOT / "out" / "demo"
    for name in ("incident.drt", "replay-same-build.json", "replay-modified-build.json"):
        assert (out / name).stat().st_size > 0
        assert str(out / name) in r.stdout  # the demo says where each file is
