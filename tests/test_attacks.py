"""Attacks on what a trace's newer metadata makes dr do on the host (issue #15, charter).

A trace's ``files`` records (capture/files.py) and its ``exe``/``maps`` name
host paths that ``dr bundle create`` reads to complete the bundle. The trace
is untrusted and dr runs as root: a path it names must never make dr read a
private file into a bundle that is then sent to someone, nor read a device
forever. Each test is an attack first found by hand; the test keeps it fixed.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys

import pytest

from conftest import ROOT
from dr.formats.bundle import open_bundle
from dr.formats.trace import TraceReader

DR = [sys.executable, "-m", "dr"]
root_only = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def _meta(**extra) -> dict:
    return {"tool": "dr", "tids": [], "mode": "attach", "pid": 4242, "argv": ["/bin/true"], "cwd": "/",
            **extra}


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _bundle(trace, out, *extra) -> subprocess.CompletedProcess:
    def cap() -> None:  # /dev/zero read into memory would otherwise take the machine down
        resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))
    return subprocess.run(DR + ["bundle", "create", str(trace), "-o", str(out), "--no-redact", *extra],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, preexec_fn=cap)


def _everything_bundled(path) -> bytes:
    """Every member and every blob record of every trace in bundle ``path``, joined."""
    out = []
    with open_bundle(path) as ob:
        for f in sorted(ob.dir.rglob("*")):
            if f.is_file():
                out.append(f.read_bytes())
        for t in ob.traces:
            with TraceReader(t) as r:
                out += [rec["data"] for rec in r.stream()
                        if isinstance(rec, dict) and rec.get("t") == "blob" and isinstance(rec.get("data"), bytes)]
    return b"".join(out)


@pytest.fixture
def secret(tmp_path):
    """A root-only host file (0600) in a world-searchable directory, and a world-readable
    file in a 0700 directory: neither may be bundled on a trace's say-so."""
    p = tmp_path / "secret.key"
    p.write_bytes(b"-----BEGIN PRIVATE KEY----- dr-attack-secret\n")
    os.chmod(p, 0o600)
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    q = hidden / "readable.txt"
    q.write_bytes(b"dr-attack-hidden-but-0644\n")
    os.chmod(q, 0o644)
    os.chmod(tmp_path, 0o755)
    return p, q


@pytest.mark.parametrize("how", ["files-record", "maps", "exe"])
def test_bundle_never_carries_a_private_host_file_a_trace_names(write_trace, tmp_path, secret, how):
    """A trace claiming the program mapped /etc/shadow-like files (with their right hash, or no
    hash at all) gets no byte of them into the bundle, with or without --include-binaries."""
    p, q = secret
    if how == "files-record":
        recs = [{"t": "files", "files": [{"path": str(x), "sha256": _sha(x), "how": "mmap"} for x in (p, q)]}]
        trace = write_trace(recs, _meta())
    elif how == "maps":
        trace = write_trace([], _meta(maps=[{"path": str(p)}, {"path": str(q)}]))
    else:
        trace = write_trace([], _meta(exe={"path": str(p)}, maps=[{"path": str(q)}]))
    out = tmp_path / "b.drb"
    res = _bundle(trace, out, "--include-binaries")
    assert res.returncode == 0, res.stderr
    data = _everything_bundled(out)
    assert b"dr-attack-secret" not in data and b"dr-attack-hidden" not in data
    if how != "files-record":
        assert "not readable by every user" in res.stderr or "not every user may search" in res.stderr


def test_bundle_still_carries_a_public_file_a_trace_names(write_trace, tmp_path):
    """The control: a world-readable installed file with its recorded hash is bundled, as
    docs/trace-format.md promises (so the fix is a rule, not a switch-off)."""
    lib = "/bin/true"
    trace = write_trace([{"t": "files", "files": [{"path": lib, "sha256": _sha(lib), "how": "exec"}]}],
                        _meta(maps=[{"path": lib, "sha256": _sha(lib)}]))
    out = tmp_path / "b.drb"
    res = _bundle(trace, out, "--include-binaries")
    assert res.returncode == 0, res.stderr
    with open_bundle(out) as ob:
        with TraceReader(ob.traces[0]) as r:
            assert r.blob(_sha(lib)) == open(lib, "rb").read()
        assert [b["member"] for b in ob.binaries] == [f"binaries/{_sha(lib)}"]


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/urandom", "fifo"])
def test_bundle_never_reads_a_device_or_fifo_a_trace_names(write_trace, tmp_path, path):
    """Before the fix, a files record naming /dev/zero made bundle create read it into memory
    until MemoryError (the whole machine's memory without a limit); a fifo blocked forever."""
    if path == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    trace = write_trace([{"t": "files", "files": [{"path": path, "sha256": "0" * 64}]}],
                        _meta(maps=[{"path": path}]))
    res = _bundle(trace, tmp_path / "b.drb", "--include-binaries")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "not a regular file" in res.stderr


@pytest.mark.parametrize("recorded", ["/dev/zero", "fifo"])
def test_new_build_check_never_reads_a_device_or_fifo_a_trace_names(tmp_path, recorded):
    """`dr replay --cmd "prog other-args"` compares each differing recorded argument's file with
    the new one (replay/streams.py other_build). A recorded argument naming /dev/zero was hashed
    forever, a fifo blocked forever; now neither is a file with the same bytes: a new build."""
    if recorded == "fifo":
        os.mkfifo(tmp_path / "fifo")
    meta = {"exe": {"path": "/bin/sleep", "sha256": _sha("/bin/sleep")}, "argv": ["/bin/sleep", recorded],
            "cwd": str(tmp_path)}
    code = f"from dr.replay.streams import other_build; print(other_build({meta!r}, ['/bin/sleep', '1']))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.strip() == "True", res.stderr


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_bundle_extracted_by_a_killed_replay_is_swept_by_the_next(write_trace, tmp_path):
    """`dr replay b.drb` extracts the bundle (up to MAX_TOTAL_BYTES) into /tmp; killed with
    SIGKILL, it left that copy forever (dr-bundle-XXXX, no owner). Now the name carries dr's pid
    and the next replay removes it with the rest of a killed dr's scratch."""
    import signal
    import tempfile
    import time

    from test_failclosed import _attach_trace, _ev

    trace = _attach_trace(write_trace, [sys.executable, "-c", "import time; time.sleep(60)"])
    bundle = tmp_path / "b.drb"
    assert _bundle(trace, bundle).returncode == 0
    p = subprocess.Popen(DR + ["replay", str(bundle)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         cwd=ROOT)
    tmp = tempfile.gettempdir()

    def mine() -> list[str]:
        return [n for n in os.listdir(tmp) if n.startswith((f"dr-bundle-{p.pid}-", f"dr-replay-{p.pid}-"))]

    deadline = time.monotonic() + 60
    while len(mine()) < 2 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert len(mine()) == 2, "the replay never extracted the bundle and made its scratch"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert any(n.startswith("dr-bundle-") for n in mine())  # left behind by the killed dr
    spawn = write_trace([_ev(1, "execve", [0, 0, 0], 0, {0: b"/bin/true\0"}), _ev(2, "exit_group", [0], 0)],
                        {"mode": "spawn", "pid": 100, "tids": [100], "argv": ["/bin/true"], "cwd": "/"})
    subprocess.run(DR + ["replay", str(spawn)], capture_output=True, timeout=120, cwd=ROOT)
    assert not mine()


#: Starts up to argv[1] threads that sleep; prints how many started and why it stopped.
THREAD_BOMB_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void *idle(void *a) { (void)a; for (;;) pause(); return 0; }
int main(int argc, char **argv) {
    int want = atoi(argv[1]), n = 0, err = 0;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 64 << 10);
    for (; n < want; n++) {
        pthread_t t;
        if ((err = pthread_create(&t, &at, idle, 0)) != 0) break;
    }
    printf("threads %d %s\n", n, err ? strerrorname_np(err) : "OK");
    fflush(stdout);
    _exit(0);
}
"""

#: The program in a Sandbox under a supervisor that lets every call run (argv: tasks, program...).
PASSTHROUGH = r"""
import os, select, sys
from dr.replay.sandbox import Sandbox, SandboxSpec
sb = Sandbox(SandboxSpec(argv=tuple(sys.argv[2:]), exe=sys.argv[2], stdio="inherit",
                         memory_limit=256 << 20, max_tasks=int(sys.argv[1])))
sb.start()
paths = [os.path.dirname(p) for p in sb.cgroup.all_procs]
try:
    while sb.exit_status(0) is None:
        r, _, _ = select.select([sb.listener.fd, sb.pidfd], [], [], 1.0)
        if sb.listener.fd in r:
            n = sb.listener.recv()
            if n is not None:
                sb.listener.send(n.id, continue_=True)
        elif sb.pidfd in r:
            break
finally:
    sb.kill()
    sb.close()
print("CGROUPS", sum(os.path.exists(p) for p in paths), flush=True)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.parametrize("tasks", [64, 0])
def test_a_thread_bomb_stops_at_the_sandbox_task_limit(tmp_path, tasks):
    """A replayed program that starts threads without end gets EAGAIN at the sandbox's
    task limit (the cgroup's pids.max), not once the host's kernel.pid_max (32768 on
    many machines, for every user) is gone; 0 is the default, a quarter of pid_max at most."""
    import shutil
    from conftest import build_c
    from dr.replay.cgroup import default_tasks
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the test program")
    bomb = build_c(tmp_path, "bomb", THREAD_BOMB_C, "-static", "-pthread")
    limit = tasks or default_tasks()
    assert limit <= int(open("/proc/sys/kernel/pid_max").read()) // 4
    r = subprocess.run([sys.executable, "-c", PASSTHROUGH, str(tasks), str(bomb), str(limit + 500)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    [started] = [ln.split() for ln in lines if ln.startswith("threads ")]
    # Stage 2, init and the main thread are in the cgroup too.
    assert started[2] == "EAGAIN" and limit - 10 <= int(started[1]) <= limit - 3, r.stdout
    assert lines[-1] == "CGROUPS 0", r.stdout


@pytest.mark.parametrize("how", ["exe", "maps", "files-record"])
def test_bundle_never_carries_a_kernel_file_whose_bytes_depend_on_the_reader(write_trace, tmp_path, how):
    """/proc/kallsyms is 0444, yet root reads the kernel's addresses where other users read
    zeros; /proc/self/status and mountinfo describe dr and the host. A trace naming them got
    their root's-eye bytes into the bundle with --include-binaries (5 MB of kallsyms)."""
    paths = ["/proc/kallsyms", "/proc/self/status", "/proc/self/mountinfo", "/sys/kernel/notes"]
    if how == "files-record":
        recs = [{"t": "files", "files": [{"path": p, "sha256": _sha(p), "how": "mmap"} for p in paths]}]
        trace = write_trace(recs, _meta())
    elif how == "maps":
        trace = write_trace([], _meta(maps=[{"path": p} for p in paths]))
    else:
        trace = write_trace([], _meta(exe={"path": paths[0]}, maps=[{"path": p} for p in paths[1:]]))
    out = tmp_path / "b.drb"
    res = _bundle(trace, out, "--include-binaries")
    assert res.returncode == 0, res.stderr
    data = _everything_bundled(out)
    for marker in (b"_stext", b"CapPrm", b" - proc proc "):
        assert marker not in data, marker
    if how != "files-record":
        assert "on proc, whose content depends on who reads it" in res.stderr
        assert "on sysfs, whose content depends on who reads it" in res.stderr
