"""The replay sandbox is bounded: a memory cgroup with a hard limit over the whole
sandbox tree, and size-bounded tmpfs (dr.replay.cgroup, dr.replay.sandbox_fs).

Small C programs built here are recorded with the real capture and replayed
with the real strict replay (`dr capture -- PROG`, `dr replay`), on the real
kernel's memory cgroup; one runs straight in a Sandbox under a supervisor that
lets every call run natively, to show the tmpfs bound itself.

Budget: a few seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import DR, NEEDS_NOTIFY, build_c

from conftest import ROOT




def _cgroup_parent() -> str | None:
    from dr.replay.cgroup import CgroupUnavailable, find_parent
    try:
        return find_parent()[0]
    except CgroupUnavailable:
        return None


pytestmark = [
    pytest.mark.root,
    NEEDS_NOTIFY,
    pytest.mark.skipif(os.geteuid() != 0, reason="capture needs root (CAP_BPF)"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the test programs"),
    pytest.mark.skipif(_cgroup_parent() is None, reason="no memory cgroup (v1 or v2) to put the sandbox in"),
]

#: mallocs and touches argv[1] MiB, one MiB at a time.
HOG_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    size_t mib = strtoul(argv[1], 0, 10);
    for (size_t i = 0; i < mib; i++) {
        char *p = malloc(1 << 20);
        if (!p) { printf("malloc failed at %zu MiB\n", i); return 3; }
        memset(p, 1, 1 << 20);
    }
    printf("touched %zu MiB\n", mib);
    return 0;
}
"""

#: Writes up to argv[2] MiB into each file argv[3..]; prints how much went in and why it stopped.
FILL_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static char buf[1 << 20];
int main(int argc, char **argv) {
    int mib = atoi(argv[1]);
    memset(buf, 'x', sizeof buf);
    for (int a = 2; a < argc; a++) {
        int fd = open(argv[a], O_CREAT | O_TRUNC | O_WRONLY, 0600);
        if (fd < 0) { printf("%s open %s\n", argv[a], strerrorname_np(errno)); continue; }
        long total = 0;
        const char *why = "OK";
        for (int i = 0; i < mib; i++) {
            ssize_t n = write(fd, buf, sizeof buf);
            if (n < 0) { why = strerrorname_np(errno); break; }
            total += n;
            if (n < (ssize_t)sizeof buf) { why = "short"; break; }
        }
        printf("%s %ld %s\n", argv[a], total >> 20, why);
        fflush(stdout);
        close(fd);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def work():
    d = Path(tempfile.mkdtemp(prefix="dr-test-limits-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def record(work: Path, name: str, *cmd: str) -> Path:
    trace = work / f"{name}.drt"
    r = subprocess.run([DR, "capture", "-q", "-o", str(trace), "--", *cmd], capture_output=True,
                       timeout=120, cwd=str(work))
    assert r.returncode == 0, r.stderr.decode()
    return trace


def replay(trace: Path, *extra: str) -> tuple[subprocess.CompletedProcess, int]:
    """`dr replay` of ``trace``; also the replaying dr's pid (its cgroups are named after it)."""
    p = subprocess.Popen([DR, "replay", str(trace), "--stall-timeout", "20", *extra], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd="/")
    out, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), p.pid


def leftover_cgroups(pid: int) -> list[str]:
    parent = _cgroup_parent()
    assert parent is not None
    return [n for n in os.listdir(parent) if n.startswith(f"dr-replay-{pid}-")]


def running(exe: Path) -> list[int]:
    """Pids of processes running ``exe`` (the host must hold none after a replay)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/exe") == str(exe):
                    out.append(int(p))
            except OSError:
                pass
    return out


def test_malloc_past_the_limit_ends_with_one_oom_line(work):
    hog = build_c(work, "hog", HOG_C)
    trace = record(work, "hog192", str(hog), "192")   # 3x the limit below
    r, pid = replay(trace, "--memory-limit", "64M")
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert err.splitlines() == ["dr: the program was killed: the sandbox's memory limit (64 MiB) was reached "
                                "(raise it with dr replay --memory-limit SIZE)"]
    assert running(hog) == []
    assert leftover_cgroups(pid) == []


def test_the_same_program_under_a_larger_limit_is_faithful(work):
    hog = build_c(work, "hog", HOG_C)
    trace = record(work, "hog192b", str(hog), "192")
    r, pid = replay(trace, "--memory-limit", "512M")
    assert r.returncode == 0, r.stderr.decode()
    assert b"faithful" in r.stderr
    assert leftover_cgroups(pid) == []


def test_ordinary_replay_is_faithful_under_the_default_limit(work):
    hog = build_c(work, "hog", HOG_C)
    trace = record(work, "hog8", str(hog), "8")
    r, pid = replay(trace)
    assert r.returncode == 0, r.stderr.decode()
    assert b"faithful" in r.stderr
    assert leftover_cgroups(pid) == []


def test_a_200_mib_file_in_tmp_under_strict_replay_is_stopped_by_the_limit(work):
    # Strict replay keeps a file the run creates in a memfd (replay/strict/files.py)
    # that the tracee writes natively: its pages are charged to the sandbox's cgroup,
    # so 200 MiB under a 64 MiB limit is an OOM kill, reported as such.
    fill = build_c(work, "fill", FILL_C)
    trace = record(work, "fill", str(fill), "200", "/tmp/dr-test-limits-fill")
    os.unlink("/tmp/dr-test-limits-fill")
    r, pid = replay(trace, "--memory-limit", "64M")
    assert r.returncode == 1, r.stderr.decode()
    assert b"the sandbox's memory limit (64 MiB) was reached" in r.stderr
    assert running(fill) == []
    assert leftover_cgroups(pid) == []


SUPERVISOR = textwrap.dedent(r"""
    # Every notification continues natively: the program's writes reach the sandbox's tmpfs.
    import os, select, sys
    from dr.replay.sandbox import Sandbox, SandboxSpec
    sb = Sandbox(SandboxSpec(argv=tuple(sys.argv[2:]), exe=sys.argv[2], stdio="inherit",
                             memory_limit=int(sys.argv[1])))
    sb.start()
    path = sb.cgroup.path
    try:
        while sb.exit_status(0) is None:
            r, _, _ = select.select([sb.listener.fd, sb.pidfd], [], [], 1.0)
            if sb.listener.fd in r:
                n = sb.listener.recv()
                if n is not None:
                    sb.listener.send(n.id, continue_=True)
            elif sb.pidfd in r:
                sb.exit_status(5)
                break
    finally:
        sb.kill()
        sb.close()
    print("OOM", bool(sb.oom_message()), "CGROUP", os.path.exists(path), flush=True)
""")


def test_private_dirs_share_the_scratch_budget_and_fill_with_enospc(work):
    """/tmp, /dev/shm and /var/tmp are carved out of one scratch tmpfs of half the limit:
    a file in /tmp gets ENOSPC at that budget, and then the others have no room either."""
    from dr.replay.cgroup import tmpfs_budget
    fill = build_c(work, "fill-static", FILL_C, "-static")
    limit = 96 << 20
    budget = tmpfs_budget(limit)[0] >> 20
    r = subprocess.run([sys.executable, "-c", SUPERVISOR, str(limit), str(fill), "200", "/tmp/a", "/dev/shm/b",
                        "/var/tmp/c"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    got = {ln.split()[0]: ln.split()[1:] for ln in r.stdout.splitlines()}
    assert got["/tmp/a"][1] == "ENOSPC", r.stdout
    assert budget - 2 <= int(got["/tmp/a"][0]) <= budget, r.stdout
    assert got["/dev/shm/b"] == ["0", "ENOSPC"], r.stdout
    assert got["/var/tmp/c"] == ["0", "ENOSPC"], r.stdout
    assert got["OOM"] == ["False", "CGROUP", "False"], r.stdout


def test_no_memory_limit_warns_and_a_too_small_limit_is_one_line(work):
    hog = build_c(work, "hog", HOG_C)
    trace = record(work, "hog1", str(hog), "1")
    r, _ = replay(trace, "--no-memory-limit")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr.decode().splitlines()[0].startswith("dr: warning: --no-memory-limit:")
    r, _ = replay(trace, "--memory-limit", "4M")
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        "dr: a memory limit of 4 MiB is not usable: give at least 32 MiB (dr replay --memory-limit SIZE); "
        "nothing was run"]


def test_streams_replay_names_the_limit_when_the_service_is_killed(write_trace):
    """Attach-mode (streams) replay: a service that touches 3x the limit as it starts is
    OOM-killed before it listens; the replay's one line says it was the memory limit.
    (Killed mid-replay instead, the report's first note says the same: StreamsSession.died.)"""
    from test_services import _echo_events, _meta
    from test_streams import ECHO_SVC, PY, Clock

    from dr.errors import ReplayError
    from dr.replay.streams import run_streams
    port, dep = 9113, 9213
    hog = "hog = b'x' * (192 << 20)\n" + ECHO_SVC
    trace = write_trace(_echo_events(Clock(), port, dep, [b"w1"]), _meta([PY, "-c", hog, str(port), str(dep)], port))
    with pytest.raises(ReplayError) as e:
        run_streams(str(trace), memory_limit=64 << 20)
    assert e.value.message == ("the program was killed: the sandbox's memory limit (64 MiB) was reached (raise it "
                               f"with dr replay --memory-limit SIZE), before it listened on 127.0.0.1:{port}")
    assert leftover_cgroups(os.getpid()) == []


def test_a_cgroup_left_by_a_killed_dr_is_swept_by_the_next_replay(work):
    parent = _cgroup_parent()
    assert parent is not None
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = os.path.join(parent, f"dr-replay-{gone.pid}-7")     # its dr is dead: swept
    live = os.path.join(parent, f"dr-replay-{os.getpid()}-7")  # ours is alive: kept
    os.mkdir(stale)
    os.mkdir(live)
    try:
        hog = build_c(work, "hog", HOG_C)
        r, _ = replay(record(work, "hog1s", str(hog), "1"))
        assert r.returncode == 0, r.stderr.decode()
        assert not os.path.exists(stale)
        assert os.path.isdir(live)
    finally:
        for d in (stale, live):
            if os.path.isdir(d):
                os.rmdir(d)
