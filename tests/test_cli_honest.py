"""What the CLI says about real captures a new user makes: a trace cut short, a
process tree's threads and fds, what a bundle holds (issues 14 and 16).

Every trace here comes from ``dr capture`` (BCC) on a real program; the
cut-short traces are those files cut by hand, as a capture killed with
SIGKILL or a full disk leaves them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dr.errors import ExitCode
from dr.formats.trace import TraceReader
from tests.conftest import ROOT

PY = sys.executable
DR = [PY, "-m", "dr"]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (eBPF)")


def dr(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(DR + [str(a) for a in args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


@pytest.fixture(scope="module")
def service_trace(tmp_path_factory):
    """The demo HTTP service captured with --pid under 10 requests (both services stopped after)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (eBPF capture)")
    from dr.demo import load
    from dr.demo.harness import Capture, free_port, start_line_server, stop
    out = tmp_path_factory.mktemp("svc")
    kv_port, svc_port = free_port(), free_port()
    kv = start_line_server([PY, "-m", "dr.demo.kv", "--port", str(kv_port)], out / "kv.log")
    svc = start_line_server([PY, "-m", "dr.demo.service", "--port", str(svc_port),
                             "--kv", f"127.0.0.1:{kv_port}"], out / "svc.log")
    cap = Capture(svc.pid, out / "t.drt", out / "capture.log")
    try:
        cap.start()
        load.run(svc_port, 10, 2, pause_s=0.01)
        rc = cap.stop(settle_s=1.0)
    finally:
        cap.stop()
        stop(kv)
        stop(svc)
    assert rc == 0, (out / "capture.log").read_text()
    return out / "t.drt"


def cut(trace: Path, dest: Path, at: int) -> Path:
    dest.write_bytes(trace.read_bytes()[:at])
    return dest


# --------------------------------------------------------------------------- 1. replay of a trace cut short


@root_only
def test_replay_of_a_trace_cut_before_its_connections_says_where(service_trace, tmp_path):
    with TraceReader(service_trace) as r:
        meta_end = r.frames[0].offset + 4 + r.frames[0].length   # the metadata frame survives
    short = cut(service_trace, tmp_path / "short.drt", meta_end + 40)
    res = dr("replay", short)
    assert res.returncode == ExitCode.INCOMPLETE, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert f"the trace was cut short at byte {meta_end:,} of {meta_end + 40:,}" in res.stderr
    assert "end of frame 1, the last complete one" in res.stderr
    assert "idle" not in res.stderr and "nothing was replayed or compared" in res.stderr


@root_only
def test_replay_of_a_trace_cut_after_its_connections_compares_what_it_holds(service_trace, tmp_path):
    with TraceReader(service_trace) as r:
        last = r.frames[-1]     # the closing record's frame: every connection is before it
    short = cut(service_trace, tmp_path / "short.drt", last.offset + 10)
    report = tmp_path / "r.json"
    res = dr("replay", short, "--report", report)
    assert res.returncode == ExitCode.INCOMPLETE, res.stdout + res.stderr
    assert f"not compared: the trace was cut short at byte {last.offset:,} of {last.offset + 10:,}" in res.stdout
    assert "only the 10 connection(s) it holds were replayed and compared" in res.stdout
    assert "INCOMPLETE: 10 of 10 connection(s) identical" in res.stdout
    assert "dr replay: incomplete: every compared response matched" in res.stderr
    doc = json.loads(report.read_text())
    assert doc["verdict"] == "INCOMPLETE" and doc["cut_short"] is True and doc["identical"] == 10
    # the whole trace still replays faithfully: the difference is the cut alone
    assert dr("replay", service_trace).returncode == ExitCode.OK


# --------------------------------------------------------------------------- 2. dr stats

CHILD = r'''
import sys, threading, time
def tick():
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
        f.write("ticker")
    print("ready", flush=True)
    while True:
        sys.stderr.write("tick\n"); sys.stderr.flush(); time.sleep(0.02)
threading.Thread(target=tick, daemon=True).start()
while True:
    time.sleep(0.02)
'''


@pytest.fixture(scope="module")
def tree_trace(tmp_path_factory):
    """``dr capture --pid`` of a shell that only waits for its child, which writes to stderr
    (a file) from a thread named "ticker": the work is in a descendant attached at start."""
    if os.geteuid() != 0:
        pytest.skip("needs root (eBPF capture)")
    out = tmp_path_factory.mktemp("tree")
    err = out / "child.err"
    sh = subprocess.Popen(["sh", "-c", f'"$0" -c "$1" 2>{err} & wait', PY, CHILD],
                          stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert sh.stdout is not None and sh.stdout.readline() == b"ready\n"
        r = dr("capture", "-q", "--pid", sh.pid, "--duration", "1", "-o", out / "t.drt")
        assert r.returncode == 0, r.stderr
    finally:
        os.killpg(sh.pid, 9)
        sh.wait()
    return out / "t.drt", err


@root_only
def test_stats_names_a_descendants_threads_and_stderr(tree_trace):
    trace, err = tree_trace
    with TraceReader(trace) as r:
        (child,) = r.meta["procs"]
    st = json.loads(dr("stats", trace, "--json").stdout)
    names = {t["tid"]: t["name"] for t in st["threads"] if t["tgid"] == child["pid"]}
    assert "ticker" in names.values(), names                     # its comm, from the snapshot
    writer = next(t for t in st["threads"] if t["name"] == "ticker")
    assert writer["tid"] != child["pid"] and writer["bytes_out"] >= 5
    rows = {g["label"]: g for g in st["file_groups"]}
    assert str(err) in rows and rows[str(err)]["fds"] == [f"{child['pid']}:2"], rows
    assert rows[str(err)]["bytes_out"] == writer["bytes_out"]
    text = dr("stats", trace).stdout
    assert "unknown" not in text and str(err) in text and "ticker" in text


@root_only
def test_stats_of_a_trace_cut_short_says_where_not_no_losses(tree_trace, tmp_path):
    trace, _ = tree_trace
    size = trace.stat().st_size
    short = cut(trace, tmp_path / "short.drt", size - 3)
    with TraceReader(short) as r:
        end = r.end
    res = dr("stats", short)
    assert res.returncode == ExitCode.TRUNCATED
    where = f"cut short at byte {end:,} of {size - 3:,}"
    assert "losses: none" not in res.stdout
    assert f"losses: trace {where}" in res.stdout
    assert res.stderr.count("\n") == 1 and where in res.stderr
    assert json.loads(dr("stats", short, "--json").stdout)["cut_short"].startswith(where)
