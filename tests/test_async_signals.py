"""Asynchronous signals delivered at the recorded point (issue #13), without
hardware counters: capture records the user registers where a signal interrupted
its thread between syscalls; replay runs the thread to that state (a hardware
breakpoint at the recorded ip, registers compared on each pass) and delivers
there (replay/strict/asyncsig.py).

The programs interrupt a loop whose every pass runs 1024 dependent multiply-adds
(about a microsecond), so the recorded state is reached after a few thousand
passes: each pass is one ptrace stop in replay. Budget: a few seconds per test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import DR, NEEDS_NOTIFY, build_c




pytestmark = [
    pytest.mark.root,
    NEEDS_NOTIFY,
    pytest.mark.skipif(os.geteuid() != 0, reason="capture needs root (CAP_BPF)"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the programs"),
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="debug registers of x86_64"),
]

#: One pass of work: 1024 dependent multiply-adds the compiler cannot fold.
CHAIN = r"""
#include <stdio.h>
#include <signal.h>
#include <sys/time.h>
#define M(x) x = x * 6364136223846793005UL + 1442695040888963407UL; __asm__ volatile("" : "+r"(x));
#define M4(x) M(x) M(x) M(x) M(x)
#define M16(x) M4(x) M4(x) M4(x) M4(x)
#define M64(x) M16(x) M16(x) M16(x) M16(x)
#define M256(x) M64(x) M64(x) M64(x) M64(x)
#define M1024(x) M256(x) M256(x) M256(x) M256(x)
"""

ALARM_COUNT = CHAIN + r"""
static volatile sig_atomic_t stop;
static void on_alarm(int s) { (void)s; stop = 1; }
int main(void) {
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 0}, {0, 3000}};
    setitimer(ITIMER_REAL, &it, 0);
    unsigned long count = 0, x = 1;
    while (!stop) { M1024(x) count++; }
    printf("count %lu x %lu\n", count, x);
    return 0;
}
"""

ITIMER_VALUES = CHAIN + r"""
#define N 4
static volatile unsigned long cur, count;
static unsigned long vals[N], counts[N];
static volatile sig_atomic_t n;
static void on_alarm(int s) { (void)s; if (n < N) { vals[n] = cur; counts[n] = count; n++; } }
int main(void) {
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, 0);
    unsigned long x = 1;
    while (n < N) { M1024(x) cur = x; count++; }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, 0);
    for (int i = 0; i < N; i++) printf("signal %d at pass %lu value %lu\n", i, counts[i], vals[i]);
    return 0;
}
"""

# The loop mixes the time-stamp counter (read without a syscall) into its state:
# the recorded registers never come back, and the loop ends by itself.
UNREACHABLE = CHAIN + r"""
#include <x86intrin.h>
static volatile sig_atomic_t stop;
static void on_alarm(int s) { (void)s; stop = 1; }
int main(void) {
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 0}, {0, 2000}};
    setitimer(ITIMER_REAL, &it, 0);
    unsigned long i, x = 1;
    for (i = 0; i < 8000 && !stop; i++) { x ^= __rdtsc(); M1024(x) }
    printf("stopped %d\n", (int)stop);
    return 0;
}
"""


@pytest.fixture(scope="module")
def work():
    d = Path(tempfile.mkdtemp(prefix="dr-test-async-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def record(trace: Path, *cmd: str) -> bytes:
    r = subprocess.run([DR, "capture", "-q", "-o", str(trace), "--", *cmd], capture_output=True,
                       timeout=120, cwd=str(trace.parent))
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def replay(trace: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([DR, "replay", str(trace), "--show-output", "--stall-timeout", "20", *extra],
                          capture_output=True, timeout=120, cwd="/")


def async_signals(trace: Path) -> list[dict]:
    from dr.formats.trace import ProcEvent, TraceReader
    with TraceReader(trace) as r:
        return [p.regs for p in r.stream() if isinstance(p, ProcEvent) and p.kind == "SIGNAL"
                and p.regs and p.regs["orig_ax"] == (1 << 64) - 1]


def assert_same_numbers(work: Path, trace: Path, recorded: bytes, runs: int) -> None:
    for i in range(runs):
        report = work / f"{trace.stem}-{i}.json"
        r = replay(trace, "--report", str(report))
        assert r.stdout == recorded, f"run {i + 1} of {runs}: {r.stderr.decode()}"
        assert r.returncode == 0 and b"faithful" in r.stderr, f"run {i + 1} of {runs}: {r.stderr.decode()}"
        rep = json.loads(report.read_text())
        assert rep["signals_delivered_early"] == 0 and not rep["notes"]


def test_count_until_sigalrm_replays_the_recorded_count(work):
    """The loop counts until the timer's SIGALRM sets the flag: the replay's
    SIGALRM is delivered at the recorded pass, so it prints the recorded count."""
    exe = build_c(work, "alarm_count", ALARM_COUNT)
    trace = work / "alarm_count.drt"
    out = record(trace, str(exe))
    count = int(out.split()[1])
    assert count > 0
    assert len(async_signals(trace)) == 1
    assert_same_numbers(work, trace, out, 10)


def test_repeated_itimer_interrupts_replay_each_interrupted_value(work):
    """A periodic ITIMER_REAL interrupts the computation 4 times; the handler
    keeps the value and pass it interrupted: the replay prints the same four."""
    exe = build_c(work, "itimer_values", ITIMER_VALUES)
    trace = work / "itimer_values.drt"
    out = record(trace, str(exe))
    assert out.count(b"signal ") == 4
    assert len(async_signals(trace)) >= 4
    assert_same_numbers(work, trace, out, 10)


def test_state_never_reached_is_said_at_that_signal(work):
    """The recorded registers hold a time-stamp counter value that never comes
    back: the thread reaches its next syscall first; replay says so at that
    signal (never a silent delivery elsewhere) and the divergence names it."""
    exe = build_c(work, "unreachable", UNREACHABLE)
    trace = work / "unreachable.drt"
    out = record(trace, str(exe))
    if out != b"stopped 1\n":
        pytest.skip("the loop ended before the 2 ms timer fired (a very slow machine)")
    regs = async_signals(trace)
    assert len(regs) == 1
    report = work / "unreachable.json"
    r = replay(trace, "--report", str(report))
    rep = json.loads(report.read_text())
    assert rep["signals_delivered_early"] == 1
    note = next(n for n in rep["notes"] if n.startswith("SIGALRM interrupted thread"))
    assert f"at ip {regs[0]['ip']:#x}" in note and "could not deliver it there" in note
    assert "made its next syscall (newfstatat) first, after 8000 passes" in note
    # Delivered as the write returns, the flag is still 0 when printed: a divergence naming the signal.
    assert r.returncode != 0
    d = rep["divergences"][0]
    assert d["signal"].startswith("SIGALRM interrupted thread") and d["expected"].startswith("write(1")
