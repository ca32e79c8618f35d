"""A reader of dr's standard output going away is success for every command, as
for dr show (docs/security.md): `dr stats t.drt | head -1` and
`dr export jsonl t.drt | head -1` exited 1 with no message (rich and click each
turned the broken pipe into exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import make_trace, write_ev  # noqa: E402

DR = str(Path(sys.executable).with_name("dr"))


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gone")
    t = make_trace(d / "api.drt", [write_ev(i, b"x" * 64) for i in range(3000)])
    return t


def _into_closed_pipe(*argv: str) -> subprocess.CompletedProcess:
    """Run dr with its stdout on a pipe whose reader has already gone: every write fails."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([DR, *argv], stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)


@pytest.mark.parametrize("argv", [
    ["stats", "{t}"], ["stats", "--json", "{t}"], ["show", "{t}"], ["show", "-c", "{t}"],
    ["export", "jsonl", "{t}"], ["export", "perfetto", "{t}", "-o", "-"],
])
def test_a_reader_gone_is_success(trace, argv):
    p = _into_closed_pipe(*[a.format(t=trace) for a in argv])
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "Broken pipe" not in p.stderr
