"""Real services under streams replay (issue 14): reports and messages, the command at exec,
a service that dies, traces cut short, per-thread randomness, recorded global order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from dr.errors import ExitCode, ReplayError
from test_streams import ECHO_SVC, PY, Clock, root_only, sin  # noqa: F401  (shared trace helpers)


def _echo_events(k: Clock, port: int, dep: int, words=(b"one", b"two", b"three")) -> list:
    evs = []
    for i, word in enumerate(words):
        answer = b"R " + word.upper()
        out = b"A " + answer + b" from 192.0.2.%d\n" % (i + 1)
        evs += [k.ev("accept4", [3], 5, {1: sin(f"192.0.2.{i + 1}", 41000 + i)}),
                k.ev("recvfrom", [5], len(word) + 1, {1: word + b"\n"}),
                k.ev("socket", [2, 1], 6),
                k.ev("connect", [6], 0, {1: sin("10.9.8.7", dep)}),
                k.ev("sendto", [6], len(word) + 3, {1: b"Q " + word + b"\n"}),
                k.ev("recvfrom", [6], len(answer) + 1, {1: answer + b"\n"}),
                k.ev("close", [6], 0),
                k.ev("sendto", [5], len(out), {1: out}),
                k.ev("close", [5], 0)]
    return evs


def _meta(argv: list[str], port: int, **extra) -> dict:
    return {"mode": "attach", "pid": 4242, "argv": argv, "cwd": "/",
            "fds": [{"fd": 3, "type": "socket", "local": f"127.0.0.1:{port}", "state": "LISTEN"}], **extra}


# --------------------------------------------------------------------------- the command at exec


def test_exec_argv_survives_a_rewritten_title():
    """redis-server rewrites /proc/PID/cmdline into a title; its initial stack still tells the command."""
    from dr.capture.cmdline import exec_argv
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    from dr.demo.harness import free_port
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while b"127.0.0.1:%d" % port not in open(f"/proc/{p.pid}/cmdline", "rb").read():
            assert time.monotonic() < deadline, "redis-server never set its title"
            time.sleep(0.05)
        got = exec_argv(p.pid)
    finally:
        p.kill()
        p.wait()
    # /usr/bin/redis-server is a symlink to redis-check-rdb: the name it ran by, not the resolved exe.
    assert got["rewritten"] and got["execfn"] == shutil.which("redis-server")
    assert got["argv"] == [shutil.which("redis-server"), *argv[1:]]
    # An untouched command line is read as it is.
    p = subprocess.Popen([PY, "-c", "import time; time.sleep(30)", "x y"])
    try:
        time.sleep(0.3)
        got = exec_argv(p.pid)
    finally:
        p.kill()
        p.wait()
    assert got == {"execfn": PY, "argv": [PY, "-c", "import time; time.sleep(30)", "x y"],
                   "rewritten": False, "lost": []}


def test_recorded_command_prefers_exec_and_says_what_is_missing():
    from dr.replay.streams import recorded_command
    meta = {"argv": ["redis-server *:6379"], "exe": {"path": "/usr/bin/redis-check-rdb"},
            "exec": {"execfn": "/usr/bin/redis-server", "argv": ["/usr/bin/redis-server", "--port", "6379"],
                     "rewritten": True, "lost": []}}
    assert recorded_command(meta) == ["/usr/bin/redis-server", "--port", "6379"]
    lost = {"argv": ["nginx: master process nginx -g daemon off;"], "exe": {"path": "/usr/sbin/nginx"},
            "exec": {"execfn": "/usr/sbin/nginx", "argv": None, "rewritten": True, "lost": [1, 2]}}
    with pytest.raises(ReplayError) as e:
        recorded_command(lost)
    assert "rewrote its command line" in e.value.message and "argument(s) 1, 2" in e.value.message
    assert e.value.message.endswith("give the command with --cmd")
    assert recorded_command(lost, cmd="nginx -g 'daemon off;'") == ["nginx", "-g", "daemon off;"]
    with pytest.raises(ReplayError, match="does not exist on this host; give the command with --cmd"):
        recorded_command({"argv": ["/nonexistent/dr-svc", "-x"], "exe": {"path": "/nonexistent/dr-svc"}})


# --------------------------------------------------------------------------- reports and messages


@root_only
def test_failed_replay_writes_the_report_and_exits_1_with_one_line(write_trace, run_dr, tmp_path):
    port, dep = 9101, 9201
    trace = write_trace(_echo_events(Clock(), port, dep), _meta(["/nonexistent/dr-svc", str(port)], port))
    code, out, err = run_dr("replay", trace, "--report", tmp_path / "r.json")
    assert code == ExitCode.ERROR
    assert len(err.strip().splitlines()) == 1 and "/nonexistent/dr-svc" in err and "--cmd" in err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["verdict"] == "ERROR" and "does not exist on this host" in doc["error"]
    assert doc["recorded_connections"] == 3


@root_only
def test_trace_cut_short_replays_what_it_holds_and_says_so(write_trace):
    from dr.replay.streams import run_streams
    port, dep = 9102, 9202
    meta = _meta([PY, "-c", ECHO_SVC, str(port), str(dep)], port)
    trace = write_trace(_echo_events(Clock(), port, dep), meta, summary=None)
    res = run_streams(str(trace))
    assert res.exit_code == ExitCode.OK and res.report.identical == 3
    assert res.report.cut_short and res.report.to_dict()["cut_short"] is True
    assert "the trace was cut short: it holds 3 connection(s)" in res.report.summary()


@root_only
def test_a_service_that_dies_is_noticed_at_once_with_its_last_words(write_trace):
    from dr.replay.streams import QUIET_S, run_streams
    port, dep = 9103, 9203
    dying = ECHO_SVC.replace("    c.close()\n", "    c.close()\n    sys.stderr.write('fatal: out of cheese\\n'); "
                             "sys.stderr.flush(); import os; os._exit(3)\n")
    words = [b"w%d" % i for i in range(8)]
    trace = write_trace(_echo_events(Clock(), port, dep, words), _meta([PY, "-c", dying, str(port), str(dep)], port))
    t0 = time.monotonic()
    res = run_streams(str(trace))
    took = time.monotonic() - t0
    rep = res.report
    assert res.exit_code == ExitCode.DIVERGED and rep.identical == 1
    assert rep.notes[0].startswith("the program exited with status 3 during the replay, after 1 of 8")
    assert "fatal: out of cheese" in rep.notes[0]
    assert [c.first_difference for c in rep.connections[2:]] == ["not replayed: the program had exited"] * 6
    assert took < QUIET_S + 15, took  # no per-connection waits after the death
