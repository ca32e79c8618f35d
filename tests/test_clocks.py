"""Attach mode records the clock values a process read through its vDSO (issue 14):
uprobes on its libc's clock_gettime and Go's time.now (dr.capture.clocks,
bpf/dr_clock.c), the target left as it was; the records are in the trace, `dr show`
lists them, they survive a rewrite of the trace (bundle), and streams replay serves
them (dr.replay.streams_clock): a Go and a C server stamping the time in ns replay
identical."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import build_c
from test_services import _wait_http  # the same wait the service tests use

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="capture needs root (CAP_BPF)")]

#: Reads CLOCK_REALTIME through libc (the vDSO: no syscall) and prints it, 50 times a second.
STAMPER = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < 3000; i++) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        printf("%lld.%09ld\n", (long long)t.tv_sec, t.tv_nsec);
        usleep(20000);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def stamped(tmp_path_factory):
    """(trace path, lines the program printed) of a C program captured by pid for ~1 s."""
    from dr.demo.harness import Capture, stop
    work = tmp_path_factory.mktemp("clocks")
    exe = build_c(work, "stamper", STAMPER)
    out = open(work / "out.txt", "wb")
    proc = subprocess.Popen([str(exe)], stdout=out, stderr=subprocess.DEVNULL)
    try:
        with Capture(proc.pid, work / "c.drt", work / "cap.log") as cap:
            time.sleep(1.0)
            assert cap.stop() == 0
        time.sleep(0.1)
        assert proc.poll() is None, "the target must run on unchanged after the capture"
    finally:
        stop(proc)
        out.close()
    return work / "c.drt", (work / "out.txt").read_text().split()


def test_libc_clock_gettime_values_are_recorded_as_the_program_read_them(stamped):
    from dr.formats.trace import ClockRead, Event, TraceReader
    trace, _printed = stamped
    with TraceReader(trace) as r:
        recs = list(r.stream())
        meta = r.meta
    assert meta["clock_probes"]["libc"] == [meta["pid"]], meta["clock_probes"]
    reads = [x for x in recs if isinstance(x, ClockRead)]
    assert reads
    # every value the program printed once the uprobes were attached (the syscall
    # probes come first) is a recorded one
    writes = [x.payload(1) for x in recs if isinstance(x, Event) and x.name == "write" and x.payload(1)
              and x.ts_enter > reads[0].ts]
    assert len(writes) >= 10
    got = {f"{c.sec}.{c.nsec:09d}".encode() + b"\n" for c in reads
           if c.kind == "LIBC_CLOCK_GETTIME" and c.clockid == 0 and c.ret == 0}
    assert set(writes) <= got, (writes[:3], sorted(got)[:3])
    # no uretprobe: nothing of the probes shows up as a syscall of the target
    assert not any(isinstance(x, Event) and x.name == "uretprobe" for x in recs)


def test_dr_show_lists_the_clock_reads_and_a_rewritten_trace_keeps_them(stamped, tmp_path):
    trace, _printed = stamped
    show = subprocess.run([sys.executable, "-m", "dr", "show", str(trace)], capture_output=True, text=True,
                          timeout=60)
    assert show.returncode == 0, show.stderr
    lines = [ln for ln in show.stdout.splitlines() if "seen by a uprobe on libc" in ln]
    assert len(lines) >= 10
    assert re.search(r"clock_gettime\(CLOCK_REALTIME, \{tv_sec=\d+, tv_nsec=\d+\}\) = 0", lines[0]), lines[0]
    only = subprocess.run([sys.executable, "-m", "dr", "show", str(trace), "-e", "trace=write"],
                          capture_output=True, text=True, timeout=60)
    assert "uprobe" not in only.stdout   # not a write: filtered as clock_gettime would be
    bundle = tmp_path / "c.drb"
    made = subprocess.run([sys.executable, "-m", "dr", "bundle", "create", str(trace), "-o", str(bundle)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    again = subprocess.run([sys.executable, "-m", "dr", "show", str(bundle)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0, again.stderr
    assert [ln for ln in again.stdout.splitlines() if "seen by a uprobe on libc" in ln] == lines


# --------------------------------------------------------------------------- served by streams replay

GO_STAMP = r"""
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "now=%d rand=%s\n", time.Now().UnixNano(), hex.EncodeToString(b))
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
"""

#: One HTTP/1.0 answer per connection: the CLOCK_REALTIME ns libc's clock_gettime gave.
C_STAMP = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (void *)&a, sizeof a) || listen(s, 16))
        return 1;
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            continue;
        char buf[4096], body[64], out[256];
        ssize_t n = read(c, buf, sizeof buf);
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        int bl = snprintf(body, sizeof body, "now=%lld%09ld\n", (long long)t.tv_sec, t.tv_nsec);
        int ol = snprintf(out, sizeof out, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", bl, body);
        if (n > 0 && write(c, out, ol) < 0)
            return 1;
        close(c);
    }
}
"""


def _capture_and_replay(exe, work, n: int) -> tuple:
    """Start ``exe PORT``, capture it by pid under ``n`` HTTP requests, stop it, replay the
    trace: (bodies the client got, replayed responses, report, trace, recorded pid)."""
    import urllib.request

    from dr.demo.harness import Capture, free_port, stop
    from dr.replay.streams import StreamsSession
    port = free_port()
    srv = subprocess.Popen([str(exe), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bodies = []
    try:
        _wait_http(port)
        with Capture(srv.pid, work / "t.drt", work / "cap.log") as cap:
            for _ in range(n):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                    bodies.append(r.read())
            assert cap.stop(settle_s=0.5) == 0
    finally:
        stop(srv)
    sess = StreamsSession(str(work / "t.drt"))
    rep = sess.run()
    replayed = [rc.data for rc in sorted(sess.replayed.values(), key=lambda rc: rc.conn.id)]
    return bodies, [d for d in replayed if d], rep, work / "t.drt", srv.pid


@pytest.fixture(scope="module")
def go_stamp(tmp_path_factory):
    """A Go HTTP server answering time.Now() in ns and 16 getrandom bytes, captured by pid
    under 20 requests and replayed."""
    if shutil.which("go") is None:
        pytest.skip("needs the Go toolchain (scripts/setup.sh installs golang-go)")
    work = tmp_path_factory.mktemp("gostamp")
    (work / "main.go").write_text(GO_STAMP)
    env = dict(os.environ, CGO_ENABLED="0", GO111MODULE="off")
    env.setdefault("GOCACHE", os.path.join(os.environ.get("HOME") or "/root", ".cache", "go-build"))
    subprocess.run(["go", "build", "-o", str(work / "stamp"), str(work / "main.go")], check=True, timeout=300,
                   env=env, cwd=str(work), capture_output=True)
    return _capture_and_replay(work / "stamp", work, 20)


def _stamp(body: bytes) -> tuple[int, bytes]:
    m = re.search(rb"now=(\d+) rand=([0-9a-f]{32})", body)
    assert m, body
    return int(m.group(1)), m.group(2)


def test_go_server_time_now_ns_and_random_bytes_replay_identical(go_stamp):
    bodies, replayed, rep, _trace, _pid = go_stamp
    assert [_stamp(b) for b in replayed] == [_stamp(b) for b in bodies]
    assert rep.all_identical and rep.identical == len(rep.connections) == 20 and not rep.misses, \
        [(c.id, c.first_difference) for c in rep.connections if c.status != "identical"]


def test_go_capture_records_the_time_now_each_response_carries(go_stamp):
    """The uprobe at time.now's RET recorded what the handler got, in the handler's thread
    and connection (what replay serves)."""
    from dr.formats.trace import ClockRead, TraceReader
    from dr.replay.connections import reconstruct
    bodies, _replayed, _rep, trace, pid = go_stamp
    with TraceReader(trace) as r:
        assert r.meta["clock_probes"]["go"] == [pid]
        reads = [x for x in r.stream() if isinstance(x, ClockRead)]
    assert reads and all(x.kind == "GO_TIME_NOW" and x.clockid == 0 and x.tgid == pid for x in reads)
    assert {_stamp(b)[0] for b in bodies} <= {x.value_ns for x in reads}
    conv = reconstruct(str(trace))
    by_conn = {c.id: {x.value_ns for x in conv.clock_by_conn.get(c.id, [])} for c in conv.inbound()}
    assert [_stamp(b)[0] in by_conn[c.id] for b, c in zip(bodies, conv.inbound())] == [True] * 20


def test_go_without_recorded_clock_values_replay_falls_back_within_a_millisecond(go_stamp):
    """A trace without clock_read records (an older one, a process not probed) gets the
    approximation: the write's recorded entry time, so only the last digits differ."""
    from dr.replay.connections import reconstruct
    from dr.replay.streams import StreamsSession
    bodies, _replayed, _rep, trace, _pid = go_stamp
    conv = reconstruct(str(trace))
    conv.clock_by_conn = {}
    sess = StreamsSession(conv)
    rep = sess.run()
    replayed = [rc.data for rc in sorted(sess.replayed.values(), key=lambda rc: rc.conn.id) if rc.data]
    assert len(replayed) == len(bodies) == 20 and not rep.misses
    deltas = []
    for want, got in zip(bodies, replayed):
        (t0, r0), (t1, r1) = _stamp(want), _stamp(got)
        assert r1 == r0
        deltas.append(abs(t1 - t0))
    assert max(deltas) < 1_000_000 and not rep.all_identical, deltas


def test_c_server_clock_gettime_ns_replay_identical(tmp_path_factory):
    """libc's clock_gettime (the vDSO) in a C server: recorded by the uprobes, served again."""
    work = tmp_path_factory.mktemp("cstamp")
    exe = build_c(work, "cstamp", C_STAMP)
    bodies, replayed, rep, _trace, _pid = _capture_and_replay(exe, work, 10)
    assert rep.all_identical and rep.identical == len(rep.connections) == 10, [c.first_difference
                                                                               for c in rep.connections]
    assert [re.findall(rb"now=\d+", b) for b in replayed] == [re.findall(rb"now=\d+", b) for b in bodies]


# --------------------------------------------------------------------------- probe points, hostile records


def test_probe_points_sit_on_branches_that_only_the_watched_path_reaches():
    """The kernel emulates a probed branch and single-steps anything else (tens of µs in a
    VM): the system libc's two points are its jcc before and after the vDSO call."""
    from dr.capture import clocks
    libc = next((p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6")
                 if os.path.exists(p)), None)
    if libc is None or shutil.which("objdump") is None:
        pytest.skip("needs glibc on x86_64 and objdump")
    (entry, after), why = clocks.libc_probe_points(libc)
    assert why is None
    insns = dict(clocks._disassemble(libc, clocks.LIBC_SYMBOL)[0])
    call = next(o for o, t in insns.items() if clocks._INDIRECT_CALL.match(t))
    assert entry < call < after
    assert clocks._JCC.match(insns[entry]) and clocks._JCC.match(insns[after]), (insns[entry], insns[after])


def test_a_clock_read_record_cut_short_is_one_line_not_a_traceback(tmp_path):
    from dr.formats.trace import TraceWriter
    from dr.formats.trace_spec import _CLK
    body = _CLK.st.pack(_CLK.kind, 1, 0, 1, 1, 0, 0, 5, 6, 7, 0)[:20]   # 20 of its 56 bytes
    t = tmp_path / "bad.drt"
    w = TraceWriter(str(t), {"mode": "attach", "pid": 1})
    w.write_block(len(body).to_bytes(4, "little") + b"\0" * 4 + body + b"\0" * (-len(body) % 8))
    w.close({"t": "summary"})
    p = subprocess.run([sys.executable, "-m", "dr", "show", str(t)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "clock read record of 20 bytes" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
