"""dr replay --trace NAME picks a bundle's trace as show/stats/export do: a 2-trace
bundle silently replayed its first trace and --trace was "No such option"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DR = str(Path(sys.executable).with_name("dr"))


def dr(*argv, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([DR, *map(str, argv)], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("replay-trace")
    for word in ("stop", "go"):
        assert dr("capture", "-q", "-o", f"{word}.drt", "--", "/bin/echo", word, cwd=d).returncode == 0
    r = dr("bundle", "create", "stop.drt", "go.drt", "-o", "b.drb", cwd=d)
    assert r.returncode == 0
    # each trace's files named by its trace (two alike read as one line said twice)
    assert "(with stop.drt: " in r.stdout + r.stderr and "; go.drt: " in r.stdout + r.stderr
    return d


def test_trace_names_the_replayed_trace(bundle):
    r = dr("replay", "--show-output", "b.drb", "--trace", "go.drt", cwd=bundle)
    assert (r.returncode, r.stdout) == (0, "go\n"), r.stderr
    assert "holds 2 traces" not in r.stderr


def test_without_trace_the_first_is_replayed_and_named(bundle):
    r = dr("replay", "--show-output", "b.drb", cwd=bundle)
    assert (r.returncode, r.stdout) == (0, "stop\n"), r.stderr
    assert "dr replay: the bundle holds 2 traces (stop.drt, go.drt); replaying stop.drt " \
           "(--trace NAME: another)" in r.stderr


def test_trace_errors_are_show_s(bundle):
    for argv in (["b.drb", "--trace", "nope.drt"], ["go.drt", "--trace", "go.drt"]):
        shown, replayed = dr("show", *argv, cwd=bundle), dr("replay", *argv, cwd=bundle)
        assert replayed.returncode == shown.returncode == 2
        assert replayed.stderr == shown.stderr and replayed.stderr.count("\n") == 1
