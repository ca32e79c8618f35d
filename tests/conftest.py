"""Shared fixtures. Keep this file small; put job-specific fixtures in the test module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable  # the project venv's python (can import bcc)
DR = str(Path(sys.executable).with_name("dr"))  # the venv's dr command


def notify_supported() -> bool:
    """Whether the kernel offers seccomp user notification (what every replay needs)."""
    try:
        return "user_notif" in Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split()
    except OSError:
        return False


NEEDS_NOTIFY = pytest.mark.skipif(not notify_supported(), reason="kernel lacks seccomp user notification")


#: Marks of a module that captures and strictly replays C programs it compiles.
KERNEL_REPLAY = [
    pytest.mark.root,
    NEEDS_NOTIFY,
    pytest.mark.skipif(os.geteuid() != 0, reason="capture needs root (CAP_BPF)"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the test programs"),
]


def work_dir(prefix: str):
    """A module-scoped ``work`` fixture: a fresh directory others may search (the
    sandbox's tracee reads its programs there), removed afterwards."""
    @pytest.fixture(scope="module")
    def work():
        d = Path(tempfile.mkdtemp(prefix=prefix))
        os.chmod(d, 0o755)
        yield d
        shutil.rmtree(d, ignore_errors=True)
    return work


def build_c(work: Path, name: str, src: str, *flags: str) -> Path:
    """Compile ``src`` with gcc -O1 into ``work/name`` (``flags``: libraries, -static, ...)."""
    c = work / f"{name}.c"
    c.write_text(src)
    exe = work / name
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(c), *flags], check=True, capture_output=True,
                   timeout=60)
    return exe


@pytest.fixture
def write_trace(tmp_path):
    """Write a trace through the format API: ``write_trace(items, meta=None, summary=...)``.

    ``items`` is a list of Event/ProcEvent objects, ``dict`` records (written
    with write_record) or the string ``"flush"`` (ends the frame there).
    Returns the path. ``summary=None`` leaves the trace cut short.
    """
    from dr.formats.trace import TraceWriter

    counter = iter(range(1_000_000))

    def write(items, meta=None, summary: dict | None = {"events": 0}, name=None):  # noqa: B006
        path = tmp_path / (name or f"t{next(counter)}.drt")
        w = TraceWriter(path, meta if meta is not None else {"tool": "dr", "tids": []})
        batch = []
        for it in items:
            if isinstance(it, dict) or it == "flush":
                if batch:
                    w.write_events(batch)
                    batch = []
                if it == "flush":
                    w.flush()
                else:
                    w.write_record(it)
            else:
                batch.append(it)
        if batch:
            w.write_events(batch)
        w.close(summary)
        return path

    return write


@pytest.fixture
def run_dr(capsys):
    """Run the ``dr`` CLI in-process: ``code, out, err = run_dr("show", path)``."""
    from dr.cli import main

    def run(*argv) -> tuple[int, str, str]:
        code = 0
        try:
            main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run


def record(work: Path, name: str, *cmd: str) -> tuple[Path, bytes]:
    """``dr capture`` of ``cmd`` run in ``work``; asserts nothing was lost, returns trace and stdout."""
    trace = work / f"{name}.drt"
    r = subprocess.run([DR, "capture", "-q", "-o", str(trace), "--", *cmd], capture_output=True,
                       timeout=120, cwd=str(work))
    assert r.returncode == 0, r.stderr.decode()
    return trace, r.stdout


def replay(trace: Path, *extra: str) -> subprocess.CompletedProcess:
    """Strict replay of ``trace`` showing the program's output, every wait bounded."""
    return subprocess.run([DR, "replay", str(trace), "--show-output", "--stall-timeout", "20", *extra],
                          capture_output=True, timeout=120, cwd="/")


def faithful(work: Path, name: str, src: str, *libs: str) -> bytes:
    """Build (with -pthread), record and replay ``src``; assert the replay is faithful with the
    same stdout, and return it."""
    exe = build_c(work, name, src, "-pthread", *libs)
    trace, out = record(work, name, str(exe))
    r = replay(trace)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == out
    assert b"faithful" in r.stderr
    return out
