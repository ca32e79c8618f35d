"""Capture under faults, as root against the real kernel and real programs.

* SIGKILL of ``dr capture`` mid-capture: the trace reads up to its last frame
  (cut short), every BPF program and map dr held is gone from the kernel, and
  the target (a python http.server) keeps serving.
* Disk full (a 1 MiB tmpfs): a clean stop, a readable trace, one clear line,
  a non-zero exit, nothing left attached.
* A target that forks 100 children, execs and exits mid-capture, and a
  64-thread target: every tid accounted for (per-thread seq contiguous from 1,
  FORK/EXIT process events for each child and thread).

How "nothing stays attached" is checked: while dr runs, its BPF objects are
read from the kernel's own per-fd records, ``/proc/PID/fdinfo/*`` (``prog_id:``
and ``map_id:`` lines of bpf-prog, bpf-map and bpf_link fds; BCC attaches
tracepoints through perf-event and raw-tracepoint fds that name their prog).
After dr is gone, ``bpftool prog show`` / ``bpftool map show`` (which walk the
kernel's id tables with BPF_PROG_GET_NEXT_ID) must no longer list any of those
ids, and ``bpftool perf`` / ``bpftool link`` must name none of them. A program
still attached to a tracepoint holds a reference, so it would stay listed.

Budget: about 60 s (each capture compiles the probes with BCC, ~5 s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dr import schema
from dr.errors import DrError
from dr.formats.trace import Event, ProcEvent, TraceReader

pytestmark = [pytest.mark.root]

DR = str(Path(sys.executable).with_name("dr"))
SYS_PY = "/usr/bin/python3"
FORK, EXEC, EXIT = (schema.PROC_EVENTS[k] for k in ("FORK", "EXEC", "EXIT"))

if os.geteuid() != 0:  # pragma: no cover
    pytest.skip("capture needs root (CAP_BPF, CAP_PERFMON)", allow_module_level=True)


# ----------------------------------------------------------------------------- helpers


def bpftool(*args: str) -> list:
    exe = shutil.which("bpftool") or "/usr/sbin/bpftool"
    r = subprocess.run([exe, "-j", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout or "[]") or []


def bpf_ids_held(pid: int) -> tuple[set[int], set[int]]:
    """(prog ids, map ids) referenced by the fds of ``pid``, from /proc/PID/fdinfo."""
    progs, maps = set(), set()
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            text = open(f"{d}/{fd}").read()
        except OSError:
            continue
        progs.update(int(x) for x in re.findall(r"^prog_id:\s*(\d+)", text, re.M))
        maps.update(int(x) for x in re.findall(r"^map_id:\s*(\d+)", text, re.M))
    return progs, maps


def still_loaded(progs: set[int], maps: set[int]) -> dict[str, set[int]]:
    """Which of these ids the kernel still lists (progs, maps, perf and link attachments)."""
    out = {
        "progs": progs & {p["id"] for p in bpftool("prog", "show")},
        "maps": maps & {m["id"] for m in bpftool("map", "show")},
        "perf": progs & {p.get("prog_id") for p in bpftool("perf")},
        "links": progs & {l.get("prog_id") for l in bpftool("link", "show")},
    }
    return {k: v for k, v in out.items() if v}


def wait_gone(progs: set[int], maps: set[int], timeout: float = 10.0) -> dict:
    """The kernel frees BPF objects after an RCU grace period: poll for a while."""
    deadline = time.monotonic() + timeout
    left = still_loaded(progs, maps)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = still_loaded(progs, maps)
    return left


def wait_trace_started(path: Path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """dr writes the metadata frame once the probes are attached and the target traced."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dr capture exited early ({proc.returncode}): "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        try:
            TraceReader(path).close()
            return
        except DrError:
            time.sleep(0.1)
    raise AssertionError("dr capture did not start in time")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 10.0) -> bytes:
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout), f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, timeout=timeout + 5)
    assert r.returncode == 0, r.stderr
    return r.stdout


def start_capture(*args: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen([DR, "capture", "-q", "-o", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_wait(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(timeout=10)


@pytest.fixture
def http_server(tmp_path):
    """A python http.server on loopback serving one known file; yields (proc, port, body)."""
    root = tmp_path / "www"
    root.mkdir()
    body = os.urandom(3000).hex().encode()
    (root / "file.txt").write_bytes(body)
    port = free_port()
    srv = subprocess.Popen([SYS_PY, "-m", "http.server", "-b", "127.0.0.1", str(port)],
                           cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.05)
    yield srv, port, body
    kill_wait(srv)


# ----------------------------------------------------------------------------- SIGKILL


@pytest.fixture(scope="module")
def killed_capture(tmp_path_factory):
    """`dr capture --pid` of a serving http.server, SIGKILLed 2.5 s after three requests.

    Returns a dict: trace path, server, port, body, the BPF ids dr held, and
    what the kernel still listed of them 10 s later at most.
    """
    tmp = tmp_path_factory.mktemp("sigkill")
    root = tmp / "www"
    root.mkdir()
    body = os.urandom(3000).hex().encode()
    (root / "file.txt").write_bytes(body)
    port = free_port()
    srv = subprocess.Popen([SYS_PY, "-m", "http.server", "-b", "127.0.0.1", str(port)],
                           cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp / "killed.drt"
    cap = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.05)
        cap = start_capture("--pid", str(srv.pid), out=out)
        wait_trace_started(out, cap)
        progs, maps = bpf_ids_held(cap.pid)
        assert progs and maps, "dr holds no BPF objects while capturing?"
        for _ in range(3):
            assert http_get(port, "/file.txt") == body
        time.sleep(2.5)  # frames are flushed at least every second (margin for a loaded CI)
        os.kill(cap.pid, signal.SIGKILL)
        cap.wait(timeout=10)
        left = wait_gone(progs, maps)
        map_names = {m["id"]: m.get("name") for m in bpftool("map", "show")}
        yield {"out": out, "srv": srv, "port": port, "body": body, "rc": cap.returncode,
               "progs": progs, "maps": maps, "left": left,
               "left_map_names": sorted(str(map_names.get(i)) for i in left.get("maps", ()))}
    finally:
        if cap is not None:
            kill_wait(cap)
        kill_wait(srv)


def test_sigkill_mid_capture_detaches_every_probe(killed_capture):
    k = killed_capture
    assert k["rc"] == -signal.SIGKILL
    left = {kind: ids for kind, ids in k["left"].items() if kind != "maps"}
    assert not left, f"BPF programs of the killed dr still loaded or attached: {left}"


def test_sigkill_mid_capture_frees_every_bpf_map(killed_capture):
    assert not killed_capture["left"].get("maps"), killed_capture["left_map_names"]


def test_sigkill_mid_capture_target_keeps_serving(killed_capture):
    k = killed_capture
    srv = k["srv"]
    assert srv.poll() is None
    state = open(f"/proc/{srv.pid}/stat").read().rsplit(")", 1)[1].split()[0]
    assert state in ("S", "R"), f"target state {state} after dr was killed"
    assert http_get(k["port"], "/file.txt") == k["body"]


def test_sigkill_mid_capture_trace_reads_to_its_last_frame(killed_capture):
    k = killed_capture
    with TraceReader(k["out"]) as r:
        assert r.truncated and r.summary is None
        assert r.meta["mode"] == "attach" and r.meta["pid"] == k["srv"].pid
        evs = list(r.events())
    sent = b"".join(ev.payload(1) or b"" for ev in evs
                    if ev.name in ("write", "sendto") and ev.ret > 0)
    recv = b"".join(ev.payload(1) or b"" for ev in evs
                    if ev.name in ("read", "recvfrom") and ev.ret > 0)
    # The three requests were served 2.5 s before the kill: their frame is on disk.
    assert recv.count(b"GET /file.txt HTTP/1.1") >= 3
    assert sent.count(k["body"]) >= 3
    # Every consumer reports the cut as such: dr show exits TRUNCATED with a notice.
    r = subprocess.run([DR, "show", str(k["out"])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 6 and "Traceback" not in r.stderr
    assert "cut short" in r.stderr and "GET /file.txt" in r.stdout


def test_sigterm_mid_capture_completes_the_trace_and_frees_everything(tmp_path):
    """The clean stop, for contrast with SIGKILL: summary written, exit 0, every program AND map freed."""
    target = subprocess.Popen(["sleep", "1000"])
    out = tmp_path / "term.drt"
    cap = start_capture("--pid", str(target.pid), out=out)
    try:
        wait_trace_started(out, cap)
        progs, maps = bpf_ids_held(cap.pid)
        cap.send_signal(signal.SIGTERM)
        _o, err = cap.communicate(timeout=60)
    finally:
        kill_wait(cap)
        kill_wait(target)
    assert cap.returncode == 0, err
    assert not wait_gone(progs, maps)
    with TraceReader(out) as r:
        assert not r.truncated and r.summary["stop_reason"] == "stopped"


# ----------------------------------------------------------------------------- disk full


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:  # pragma: no cover
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


READER = textwrap.dedent(r"""
    import os, time
    fd = os.open("/dev/urandom", os.O_RDONLY)
    for i in range(3000):          # 4 KiB of incompressible payload every 4 ms: ~1 MB/s
        os.read(fd, 4096)
        time.sleep(0.004)
""")


def test_disk_full_stops_cleanly_with_a_valid_trace_and_one_line(tmp_path, small_tmpfs):
    out = small_tmpfs / "t.drt"
    script = tmp_path / "reader.py"
    script.write_text(READER)
    # stderr to a file, not a pipe: the spawned command inherits it and outlives dr.
    errf = open(tmp_path / "stderr", "w+")
    cap = subprocess.Popen([DR, "capture", "-q", "-o", str(out), "--", SYS_PY, str(script)],
                           stdout=subprocess.DEVNULL, stderr=errf, text=True)
    target = None
    try:
        wait_trace_started(out, cap)
        progs, maps = bpf_ids_held(cap.pid)
        with TraceReader(out) as r:
            target = r.meta["pid"]
        t0 = time.monotonic()
        cap.wait(timeout=90)
        stopped_after = time.monotonic() - t0
        # dr stopped at the full disk, not at the command's end (~15 s of reads).
        try:
            state = open(f"/proc/{target}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "gone"
        command_still_running = state in ("R", "S", "D")
        err = (tmp_path / "stderr").read_text()
    finally:
        errf.close()
        kill_wait(cap)
        if target:
            try:
                os.kill(target, signal.SIGKILL)  # the command outlives a failed capture
            except ProcessLookupError:
                pass
    assert cap.returncode == 1, err  # ExitCode.ERROR
    assert command_still_running and stopped_after < 30, "dr did not stop when the disk filled"
    assert "Traceback" not in err
    dr_lines = [ln for ln in err.splitlines() if ln.startswith("dr: ")]
    assert len(dr_lines) == 1, err
    assert "No space left on device" in dr_lines[0] and str(out) in dr_lines[0]
    assert not {k: v for k, v in wait_gone(progs, maps).items() if k != "maps"}

    with TraceReader(out) as r:  # opens: valid up to its last complete frame
        assert r.truncated and r.end == r.size  # cut back to a frame boundary
        reads = [ev for ev in r.events(syscalls={"read"}) if ev.ret == 4096]
    assert reads, "the frames written before the disk filled hold no reads"
    assert all(len(ev.payload(1)) == 4096 for ev in reads)
    assert os.path.getsize(out) <= 1 << 20


# ----------------------------------------------------------------------------- fork/exec/exit


FORKER = textwrap.dedent(r"""
    import os, sys, time
    go = sys.argv[1]
    while not os.path.exists(go):
        time.sleep(0.02)
    kids = []
    for i in range(100):
        pid = os.fork()
        if pid == 0:
            os.write(1, b"child %d\n" % i)
            os._exit(i % 50)
        kids.append(pid)
    codes = {}
    for pid in kids:
        _, st = os.waitpid(pid, 0)
        codes[pid] = os.waitstatus_to_exitcode(st)
    with open(sys.argv[2], "w") as f:
        f.write(" ".join(f"{p}:{c}" for p, c in codes.items()))
    os.execv("/bin/sh", ["sh", "-c", "echo exec-done; exit 7"])
""")


def _per_tid(evs: list[Event]) -> dict[int, list[int]]:
    seqs: dict[int, list[int]] = {}
    for ev in evs:
        seqs.setdefault(ev.tid, []).append(ev.seq)
    return seqs


def _assert_contiguous(seqs: dict[int, list[int]]) -> None:
    for tid, s in seqs.items():
        assert s == list(range(s[0], s[0] + len(s))), f"tid {tid}: seq not contiguous: {s[:20]}..."
        assert s[0] == 1, f"tid {tid} starts at seq {s[0]}"


def test_target_forks_100_children_execs_and_exits_mid_capture(tmp_path):
    go, codes_file = tmp_path / "go", tmp_path / "codes"
    script = tmp_path / "forker.py"
    script.write_text(FORKER)
    target = subprocess.Popen([SYS_PY, str(script), str(go), str(codes_file)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = tmp_path / "fork.drt"
    cap = start_capture("--pid", str(target.pid), out=out)
    try:
        wait_trace_started(out, cap)
        go.touch()
        tout, _ = target.communicate(timeout=60)
        _o, err = cap.communicate(timeout=60)
    finally:
        kill_wait(cap)
        kill_wait(target)
    assert target.returncode == 7
    assert cap.returncode == 0, err  # nothing lost
    codes = {int(p): int(c) for p, c in (x.split(":") for x in codes_file.read_text().split())}
    assert len(codes) == 100

    with TraceReader(out) as r:
        assert not r.truncated and r.summary["stop_reason"] == "target exited"
        assert not any(v for k, v in r.losses.items() if k != "TRUNCATED")
        items = list(r.stream())
    evs = [it for it in items if isinstance(it, Event)]
    procs = [it for it in items if isinstance(it, ProcEvent)]

    forks = {p.arg0: p for p in procs if p.what == FORK and p.tgid == target.pid}
    assert set(codes) <= set(forks), "a child's FORK event is missing"
    exits = {p.tid: p for p in procs if p.what == EXIT}
    for child, code in codes.items():
        assert child in exits, f"child {child} has no EXIT event"
        assert exits[child].arg0 == code
        writes = [ev for ev in evs if ev.tid == child and ev.name == "write"]
        assert len(writes) == 1 and writes[0].payload(1).startswith(b"child ")
    assert any(p.what == EXEC and p.tid == target.pid for p in procs)
    assert any(ev.tid == target.pid and ev.name == "execve" and ev.ret == 0 for ev in evs)
    after_exec = [ev for ev in evs if ev.tid == target.pid and ev.name == "write"
                  and ev.payload(1) == b"exec-done\n"]
    assert after_exec, "the exec'd shell's write is missing"
    assert exits[target.pid].arg0 == 7
    assert tout.count(b"child ") == 100 and tout.endswith(b"exec-done\n")
    _assert_contiguous(_per_tid(evs))


THREADS = textwrap.dedent(r"""
    import os, sys, threading, time
    go = sys.argv[1]
    while not os.path.exists(go):
        time.sleep(0.02)
    fd = os.open("/dev/null", os.O_WRONLY)
    tids = []
    lock = threading.Lock()
    def work(i):
        with lock:
            tids.append(threading.get_native_id())
        for k in range(40):
            os.write(fd, b"t%d-%d" % (i, k))
    ts = [threading.Thread(target=work, args=(i,)) for i in range(64)]
    for t in ts: t.start()
    for t in ts: t.join()
    with open(sys.argv[2], "w") as f:
        f.write(" ".join(map(str, tids)))
""")


def test_64_thread_target_every_tid_accounted_for(tmp_path):
    go, tids_file = tmp_path / "go", tmp_path / "tids"
    script = tmp_path / "threads.py"
    script.write_text(THREADS)
    target = subprocess.Popen([SYS_PY, str(script), str(go), str(tids_file)])
    out = tmp_path / "threads.drt"
    cap = start_capture("--pid", str(target.pid), out=out)
    try:
        wait_trace_started(out, cap)
        go.touch()
        assert target.wait(timeout=60) == 0
        _o, err = cap.communicate(timeout=60)
    finally:
        kill_wait(cap)
        kill_wait(target)
    assert cap.returncode == 0, err
    tids = [int(t) for t in tids_file.read_text().split()]
    assert len(set(tids)) == 64

    with TraceReader(out) as r:
        assert not r.truncated
        items = list(r.stream())
    evs = [it for it in items if isinstance(it, Event)]
    procs = [it for it in items if isinstance(it, ProcEvent)]
    forks = {p.arg0 for p in procs if p.what == FORK}
    exits = {p.tid for p in procs if p.what == EXIT}
    for tid in tids:
        assert tid in forks and tid in exits, f"thread {tid}: FORK/EXIT event missing"
        writes = sorted(ev.payload(1) for ev in evs if ev.tid == tid and ev.name == "write")
        assert len(writes) == 40, f"thread {tid}: {len(writes)} writes of 40"
        i = writes[0].split(b"-")[0]
        assert writes == sorted(b"%s-%d" % (i, k) for k in range(40))
        assert all(ev.tgid == target.pid for ev in evs if ev.tid == tid)
    _assert_contiguous(_per_tid(evs))


def test_replay_of_a_spawn_capture_killed_mid_run_ends_incomplete(tmp_path):
    """SIGKILL of a spawn capture of a looping shell: every thread alive at the cut is "unended"
    in the trace; replay used to park the shell past its last recorded call for ever, waiting
    for a death the cut never shows. It must end where the recording ends: INCOMPLETE (7),
    saying the trace was cut short, with the output recorded up to there."""
    script = tmp_path / "loop.sh"
    script.write_text("i=0; while [ $i -lt 1000 ]; do echo $i; i=$((i+1)); sleep 0.02; done\n")
    out, trace = tmp_path / "out.txt", tmp_path / "k.drt"
    with open(out, "wb") as o:
        cap = subprocess.Popen([DR, "capture", "-q", "-o", str(trace), "--", "sh", str(script)],
                               stdout=o, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while out.stat().st_size == 0:
            assert time.monotonic() < deadline and cap.poll() is None, "the loop never started"
            time.sleep(0.1)
        time.sleep(2.5)   # frames are flushed at least every second
        os.killpg(cap.pid, signal.SIGKILL)   # dr and the shell it started
        cap.wait(timeout=10)
    finally:
        kill_wait(cap)
    r = subprocess.run([DR, "replay", "--show-output", str(trace)], capture_output=True, timeout=90)
    assert r.returncode == 7, r.stderr.decode()
    assert b"cut short" in r.stderr and b"Traceback" not in r.stderr
    assert r.stdout and out.read_bytes().startswith(r.stdout)
