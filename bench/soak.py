"""Soak: dr capture at the highest syscall rate the machine makes, for minutes (not a test).

A C program compiled at run time (gcc) starts N threads (default: one per
CPU) that call getpid(2) through syscall(2) in a tight loop for SECONDS and
count their calls. ``dr capture --pid`` records it from before the storm to
its exit. Reported:

* syscall rate untraced (a short calibration run) and under capture;
* events in the trace, loss records by cause, the summary's losses;
* getpid calls the program made vs getpid events in the trace;
* per-thread seq gaps (the probes number each thread's syscalls 1, 2, 3...;
  a gap is an event that never reached the trace);
* dr's CPU use while capturing (utime+stime from /proc/PID/stat, clock ticks),
  as a share of one CPU and per event.

The verdict line checks the promise that loss is never silent: every missing
event (seq gaps, and getpid calls not in the trace) must be covered by the
counted losses. Exit status 0 when no drop went unreported, 1 otherwise.

    .venv/bin/python bench/soak.py                  # two minutes
    .venv/bin/python bench/soak.py --seconds 20 --threads 1 --ringbuf-size 1M
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STORM_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;
static long counts[256];
static pid_t tids[256];

static void *work(void *arg) {
    long i = (long)arg, n = 0;
    tids[i] = (pid_t)syscall(SYS_gettid);
    while (!stop) { syscall(SYS_getpid); n++; }
    counts[i] = n;
    return NULL;
}

int main(int argc, char **argv) {
    /* storm SECONDS THREADS GOFILE OUTFILE: wait for GOFILE, storm, write "tid count" lines */
    double secs = atof(argv[1]);
    int nt = atoi(argv[2]);
    if (nt < 1 || nt > 256) return 2;
    while (access(argv[3], F_OK) != 0) usleep(20000);
    pthread_t th[256];
    for (long i = 0; i < nt; i++) pthread_create(&th[i], NULL, work, (void *)i);
    struct timespec ts = { (time_t)secs, (long)((secs - (time_t)secs) * 1e9) };
    nanosleep(&ts, NULL);
    stop = 1;
    for (int i = 0; i < nt; i++) pthread_join(th[i], NULL);
    FILE *f = fopen(argv[4], "w");
    for (int i = 0; i < nt; i++) fprintf(f, "%d %ld\n", tids[i], counts[i]);
    fclose(f);
    return 0;
}
"""


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks (proc(5): fields 14 and 15), None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def run_storm(exe: str, secs: float, threads: int, work: Path, tag: str) -> tuple[subprocess.Popen, Path, Path]:
    go, out = work / f"go-{tag}", work / f"counts-{tag}"
    p = subprocess.Popen([exe, str(secs), str(threads), str(go), str(out)])
    return p, go, out


def read_counts(path: Path) -> dict[int, int]:
    return {int(t): int(n) for t, n in (ln.split() for ln in path.read_text().splitlines() if ln.strip())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="storm length under capture (default 120)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--ringbuf-size", default="64M")
    ap.add_argument("--keep", action="store_true", help="keep the trace (printed path)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("soak: needs root (dr capture)", file=sys.stderr)
        return 2
    if not shutil.which("gcc"):
        print("soak: needs gcc (scripts/setup.sh installs it)", file=sys.stderr)
        return 2

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dr import schema
    from dr.formats.trace import TraceReader

    dr = str(Path(sys.executable).with_name("dr"))
    work = Path(tempfile.mkdtemp(prefix="dr-soak-"))
    exe = str(work / "storm")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", exe, "-x", "c", "-"], input=STORM_C.encode(), check=True)

    # Calibration: the untraced rate.
    cal = min(3.0, a.seconds)
    p, go, out = run_storm(exe, cal, a.threads, work, "cal")
    go.touch()
    p.wait()
    untraced = sum(read_counts(out).values()) / cal

    p, go, out = run_storm(exe, a.seconds, a.threads, work, "soak")
    trace = work / "soak.drt"
    cap = subprocess.Popen([dr, "capture", "-q", "--ringbuf-size", a.ringbuf_size, "--pid", str(p.pid),
                            "-o", str(trace)], stderr=subprocess.PIPE, text=True)
    while True:  # the metadata frame appears once the probes are attached
        try:
            TraceReader(trace).close()
            break
        except Exception:
            if cap.poll() is not None:
                print("soak: dr capture failed:", cap.stderr.read(), file=sys.stderr)
                return 2
            time.sleep(0.1)
    t_start = cpu_ticks(cap.pid) or 0
    w0 = time.monotonic()
    go.touch()
    last = t_start
    while p.poll() is None:
        time.sleep(0.25)
        t = cpu_ticks(cap.pid)
        if t is not None:
            last = t
    storm_wall = time.monotonic() - w0
    err = cap.communicate(timeout=600)[1]
    hz = os.sysconf("SC_CLK_TCK")
    dr_cpu_s = (last - t_start) / hz
    made = read_counts(out)

    getpid = schema.by_name("getpid").nr
    events = 0
    seen_getpid: dict[int, int] = {}
    last_seq: dict[int, int] = {}
    gaps = 0
    t0 = time.monotonic()
    with TraceReader(trace) as r:
        for ev in r.events():
            events += 1
            prev = last_seq.get(ev.tid)
            if prev is not None and ev.seq > prev + 1:
                gaps += ev.seq - prev - 1
            last_seq[ev.tid] = ev.seq
            if ev.nr == getpid:
                seen_getpid[ev.tid] = seen_getpid.get(ev.tid, 0) + 1
        losses = r.losses
        summary = r.summary or {}
        size = r.size
    read_s = time.monotonic() - t0

    lost_events = sum(v for k, v in losses.items() if k in ("RINGBUF_EVENT", "ENTRY_MAP_FULL"))
    missing_getpid = sum(made.values()) - sum(seen_getpid.get(t, 0) for t in made)
    unreported = max(0, gaps - lost_events, missing_getpid - lost_events)
    rate = events / storm_wall if storm_wall else 0

    print(f"soak: {a.threads} thread(s) of getpid for {a.seconds:.0f} s, ring buffer {a.ringbuf_size}")
    print(f"  untraced rate        {untraced:14,.0f} syscalls/s")
    print(f"  captured rate        {rate:14,.0f} events/s ({sum(made.values()) / storm_wall:,.0f} getpid/s made)")
    print(f"  events in trace      {events:14,d}   trace {size / 1e6:,.1f} MB "
          f"({size / max(events, 1):.1f} B/event), read back in {read_s:.1f} s")
    print(f"  getpid made / seen   {sum(made.values()):14,d} / {sum(seen_getpid.values()):,d}")
    print("  losses by cause      " + (", ".join(f"{k} {v:,}" for k, v in sorted(losses.items()) if v) or "none"))
    print(f"  summary losses       {summary.get('losses')}")
    print(f"  seq gaps             {gaps:14,d}")
    print(f"  dr CPU               {dr_cpu_s:10.1f} s = {100 * dr_cpu_s / storm_wall:.0f}% of one CPU, "
          f"{1e9 * dr_cpu_s / max(events, 1):.0f} ns/event")
    print(f"  dr exit status       {cap.returncode}" + (f" ({err.strip().splitlines()[-1]})" if err.strip() else ""))
    verdict = "OK: every drop was counted" if unreported == 0 else f"FAIL: {unreported:,} drops not reported"
    print(f"  verdict              {verdict}")
    if a.keep:
        print(f"  trace                {trace}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if unreported == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
