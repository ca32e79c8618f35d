"""dr show's strace flags against real strace on the same program.

One program (threads, a loopback connection, a failed open, a signal, a child
process, a clock read) is recorded once with ``dr capture`` and run once per
flag under ``strace -f``; each test compares what the two select. The program
is deterministic in the names it calls, not in counts (Python's start-up
varies a little), so the tests compare sets of syscall names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DR = [sys.executable, "-m", "dr"]
PYTHON = "/usr/bin/python3"  # the same interpreter under both tracers

PROGRAM = r"""
import ctypes, os, signal, socket, threading
def worker():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
    c = socket.create_connection(s.getsockname()); a, _ = s.accept()
    c.sendall(b"hello"); a.recv(5); c.close(); a.close(); s.close()
t = threading.Thread(target=worker); t.start(); t.join()
try:
    open("/nonexistent/x")
except OSError:
    pass
# adjtimex with modes 0 only reads the clock: a %clock call the vDSO does not answer
ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.create_string_buffer(256))
signal.signal(signal.SIGUSR1, lambda *a: None); os.kill(os.getpid(), signal.SIGUSR1)
if os.fork() == 0:
    os._exit(3)
os.wait()
print("done")
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (BPF)")
needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
pytestmark = [pytest.mark.root, needs_root, needs_strace]


def dr(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(DR + list(args), capture_output=True, text=True, cwd=ROOT, timeout=120, **kw)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path]:
    """(trace of the program, the program's path)."""
    d = tmp_path_factory.mktemp("flags")
    prog = d / "prog.py"
    prog.write_text(PROGRAM)
    trace = d / "t.drt"
    r = dr("capture", "-q", "-o", str(trace), "--", PYTHON, str(prog))
    assert r.returncode == 0, r.stderr
    return trace, prog


_NAME = re.compile(r"^(?:\[pid +\d+\] |\d+ +)?([a-z_0-9]+)\(")


def names(text: str) -> set[str]:
    """Syscall names of strace-style lines (with or without `[pid N]` / `-f -o` pid columns)."""
    return {m.group(1) for line in text.splitlines() if (m := _NAME.match(line))}


def strace_names(prog: Path, tmp: Path, *flags: str) -> set[str]:
    out = tmp / "strace.txt"
    subprocess.run(["strace", "-f", "-qq", "-o", str(out), *flags, PYTHON, str(prog)],
                   capture_output=True, timeout=120, check=True)
    return names(out.read_text())


def vdso_names(trace: Path) -> set[str]:
    """Calls the vDSO answers without entering the kernel: strace never sees them;
    dr's spawn mode makes them real syscalls (meta vdso_patched)."""
    from dr.formats.trace import TraceReader
    with TraceReader(trace) as r:
        return {n.removeprefix("__vdso_") for n in r.meta.get("vdso_patched") or []}


@pytest.mark.parametrize("cls", ["file", "network", "process", "signal", "ipc", "desc",
                                 "memory", "creds", "clock"])
def test_classes_select_what_strace_selects(recorded, tmp_path, cls):
    trace, prog = recorded
    want = strace_names(prog, tmp_path, "-e", f"trace=%{cls}")
    r = dr("show", str(trace), "-e", f"trace=%{cls}")
    assert r.returncode == 0, r.stderr
    got = names(r.stdout) - (vdso_names(trace) - want)
    assert got == want
    if cls in ("network", "file", "process", "desc", "memory", "signal", "clock"):
        assert got, f"the program makes %{cls} calls: a test of nothing otherwise"


def test_failed_only_and_successful_only_match_strace(recorded, tmp_path):
    trace, prog = recorded
    # Narrowed to classes whose errors do not depend on timing (futex's EAGAIN does).
    expr = "trace=%file,%network,%process"
    want = strace_names(prog, tmp_path, "-Z", "-e", expr)
    got = names(dr("show", str(trace), "-Z", "-e", expr).stdout)
    assert got == want and "openat" in got  # open("/nonexistent/x") failed
    want = strace_names(prog, tmp_path, "-z", "-e", expr)
    r = dr("show", str(trace), "-z", "-e", expr)
    assert names(r.stdout) == want
    assert "exit_group" not in names(r.stdout)  # never returns: neither success nor failure
    assert "+++ exited with 0 +++" in r.stdout  # process events stay, as in strace
    assert not re.search(r"= -1 E", r.stdout)
    assert all(re.search(r"= -1 E|= \? ERESTART", line) for line in
               dr("show", str(trace), "-Z").stdout.splitlines() if _NAME.match(line))
    r = dr("show", str(trace), "-z", "-Z")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_syscall_times_like_strace(recorded, tmp_path):
    trace, prog = recorded
    out = tmp_path / "strace.txt"
    subprocess.run(["strace", "-f", "-qq", "-T", "-o", str(out), PYTHON, str(prog)],
                   capture_output=True, timeout=120, check=True)
    timed = re.compile(r" = .* <\d+\.\d{6}>$")
    for text in (out.read_text(), dr("show", str(trace), "-T").stdout):
        # strace -f splits a call another thread interrupts ("<unfinished ...>", then
        # "<... read resumed>" with the time); dr prints each call whole.
        calls = [ln for ln in text.splitlines() if _NAME.match(ln) and "<unfinished" not in ln]
        untimed = [ln for ln in calls if not timed.search(ln)]
        # only the calls that never return have no time (exit, exit_group)
        assert calls and {names(ln).pop() for ln in untimed} <= {"exit", "exit_group"}


def test_summary_counts_equal_dr_stats_and_look_like_strace(recorded, tmp_path):
    trace, prog = recorded
    r = dr("show", str(trace), "-c")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    out = tmp_path / "c.txt"
    subprocess.run(["strace", "-f", "-c", "-o", str(out), PYTHON, str(prog)],
                   capture_output=True, timeout=120, check=True)
    ref = out.read_text().splitlines()
    assert lines[:2] == ref[:2]  # the same header and rule
    assert lines[-2] == ref[-2] and lines[-1].endswith(" total")
    rows = {ln.split()[-1]: ln.split() for ln in lines[2:-2]}
    calls = {name: int(cols[3]) for name, cols in rows.items()}
    st = json.loads(dr("stats", str(trace), "--json").stdout)
    assert calls == {s["name"]: s["count"] for s in st["syscalls"]}
    errors = {name: int(cols[4]) for name, cols in rows.items() if len(cols) == 6}
    assert errors == {s["name"]: s["error_count"] for s in st["syscalls"] if s["error_count"]}
    assert int(lines[-1].split()[3]) == st["events"]
    # Filters apply to the table as to the listing.
    r = dr("show", str(trace), "-c", "-e", "trace=%network")
    assert {ln.split()[-1] for ln in r.stdout.splitlines()[2:-2]} == \
        names(dr("show", str(trace), "-e", "trace=%network").stdout)


def test_pid_filter_output_file_and_thread_prefixes(recorded, tmp_path):
    trace, _ = recorded
    from dr.formats.trace import ProcEvent, TraceReader
    with TraceReader(trace) as r:
        leader = r.meta["pid"]
        forks = [p for p in r.stream() if isinstance(p, ProcEvent) and p.kind == "FORK"]
    child = next(p.arg1 for p in forks if p.arg1 != leader)  # the forked process (tgid)
    r = dr("show", str(trace), "-p", str(child))
    lines = r.stdout.splitlines()
    assert lines and all(ln.startswith(f"[pid {child:5d}] ") for ln in lines)
    assert lines[-1].endswith("+++ exited with 3 +++")
    # -o FILE: the same text as stdout, never colour
    out = tmp_path / "listing.txt"
    r2 = dr("show", str(trace), "-p", str(child), "-o", str(out))
    assert r2.returncode == 0 and r2.stdout == "" and out.read_text() == r.stdout
    # The program had a second thread: a filter keeps the prefixes, and the
    # worker's end is labelled as a thread's.
    r = dr("show", str(trace), "-e", "trace=sendto,recvfrom")
    assert r.stdout and all(ln.startswith("[pid ") for ln in r.stdout.splitlines())
    assert "+++ thread exited with 0 +++" in r.stdout
    assert r.stdout.count("+++ exited with 0 +++") == 1  # the process's own end, once


def test_a_filter_matching_nothing_says_so(recorded):
    """An empty listing from a mistyped pid looks like a quiet process: dr says which
    filters matched nothing (exit 0, as strace's), and a match prints no such line."""
    trace, _ = recorded
    r = dr("show", str(trace), "-p", "999999", "-Z")
    assert r.returncode == 0 and r.stdout == ""
    assert "dr show: no syscall matched -p 999999 -Z;" in r.stderr
    r = dr("show", str(trace), "-e", "trace=openat")
    assert r.stdout and "no syscall matched" not in r.stderr


def test_show_into_a_closed_pipe_exits_zero(recorded):
    trace, _ = recorded
    r = subprocess.run(f"{sys.executable} -m dr show {trace} | head -1", shell=True, cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       executable="/bin/bash", env={**os.environ, "SHELLOPTS": "pipefail"})
    assert r.returncode == 0 and r.stderr == "" and r.stdout.startswith("execve(")


def test_colour_on_a_terminal_only(recorded):
    trace, _ = recorded
    import pty

    def on_tty(env: dict) -> str:
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(ROOT)
            os.execve(sys.executable, DR + ["show", str(trace), "-e", "trace=openat,kill"], env)
        chunks = []
        while True:
            try:
                b = os.read(fd, 65536)
            except OSError:
                break
            if not b:
                break
            chunks.append(b)
        os.waitpid(pid, 0)
        return b"".join(chunks).decode()

    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm"
    text = on_tty(env)
    red = "\x1b[31m"
    err = [ln for ln in text.splitlines() if "ENOENT" in ln]
    assert err and all(red in ln for ln in err)
    assert any("\x1b[33m--- SIGUSR1" in ln for ln in text.splitlines())
    assert "\x1b[" not in on_tty({**env, "NO_COLOR": "1"})
    assert "\x1b[" not in dr("show", str(trace)).stdout  # a pipe: no colour
