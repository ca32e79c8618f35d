"""Issue #15's "Must show": what a replayed program reaches for on the host, it does not get.

A streams replay (the program runs natively in the sandbox) and a strict replay
(every call answered from the trace) of a program that tries, on the host:

* to connect to a host Unix socket the test listens on (one in a host
  directory, one in the host's /tmp);
* to create a file on a writable tmpfs the test mounted under a host directory;
* to read a root-only host file the recording never read (/etc/shadow-like);
* to signal and to ptrace a host process;
* to open a TCP connection to a host loopback port.

Each attempt is checked on the host side (listener accepted nothing, file
absent, victim got no signal and is not traced, TCP server accepted nothing),
and the streams report lists the attempts the sandbox refused.

Budget: a few seconds (one streams replay; one capture and one strict replay).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dr import schema
from dr.formats.trace import Event, Payload

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, namespaces)")]
PY = sys.executable


class _Listener:
    """A host listener (TCP on 127.0.0.1 or a Unix socket path) that counts connections."""

    def __init__(self, unix_path: str | None = None) -> None:
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(unix_path)
            os.chmod(unix_path, 0o777)  # permissions are not what stops the sandbox
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            c.close()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


VICTIM = r"""
import signal, sys, time
n = 0
def h(*_):
    global n
    n += 1
    sys.stdout.write(f"{n}\n"); sys.stdout.flush()
signal.signal(signal.SIGUSR1, h)
sys.stdout.write("ready\n"); sys.stdout.flush()
while True:
    time.sleep(1)
"""


class _Host:
    """Everything on the host side of the attacks, and what it saw."""

    def __init__(self) -> None:
        # Host directories outside the sandbox's private ones (/tmp, /run, ...), so
        # that they are seen through the overlay.
        self.dir = Path(tempfile.mkdtemp(prefix="dr-test-contain-", dir="/var/lib"))
        os.chmod(self.dir, 0o755)
        self.mntdir = Path(tempfile.mkdtemp(prefix="dr-test-contain-", dir="/srv"))
        os.chmod(self.mntdir, 0o755)
        self.mnt = self.mntdir / "mnt"
        self.mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777,size=1m", "tmpfs", str(self.mnt)], check=True)
        self.unix = _Listener(str(self.dir / "host.sock"))
        self.tmp_sock_path = tempfile.mktemp(prefix="dr-test-contain-", suffix=".sock", dir="/tmp")
        self.tmp_unix = _Listener(self.tmp_sock_path)
        self.tcp = _Listener()
        self.secret = self.dir / "secret"
        self.secret.write_text("HOST-ROOT-ONLY\n")
        os.chmod(self.secret, 0o600)
        self.victim = subprocess.Popen([PY, "-c", VICTIM], stdout=subprocess.PIPE)
        assert self.victim.stdout.readline().strip() == b"ready"
        self.victim_out = self.victim.stdout.fileno()
        self.pwned = self.mnt / "pwned"

    def signals_seen(self) -> int:
        """SIGUSR1s the victim counted so far (it prints a line per signal)."""
        import select
        data = b""
        while select.select([self.victim_out], [], [], 0)[0]:
            chunk = os.read(self.victim_out, 4096)
            if not chunk:
                break
            data += chunk
        return len(data.split())

    def traced(self) -> bool:
        status = open(f"/proc/{self.victim.pid}/status").read()
        return [ln for ln in status.splitlines() if ln.startswith("TracerPid:")][0].split()[1] != "0"

    def args(self) -> list[str]:
        return [str(self.dir / "host.sock"), self.tmp_sock_path, str(self.pwned), str(self.secret),
                str(self.victim.pid), str(self.tcp.port)]

    def close(self) -> None:
        for x in (self.unix, self.tmp_unix, self.tcp):
            x.close()
        self.victim.kill()
        self.victim.wait()
        subprocess.run(["umount", "-l", str(self.mnt)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.mntdir, ignore_errors=True)
        try:
            os.unlink(self.tmp_sock_path)
        except OSError:
            pass


@pytest.fixture
def host():
    h = _Host()
    try:
        yield h
    finally:
        h.close()


def _assert_host_saw_nothing(h: _Host) -> None:
    time.sleep(0.2)
    assert h.unix.accepted == 0 and h.tmp_unix.accepted == 0, "a host Unix socket was reached"
    assert h.tcp.accepted == 0, "the host's loopback was reached"
    assert not h.pwned.exists() and os.listdir(h.mnt) == [], "a file landed on the host's tmpfs"
    assert h.victim.poll() is None and h.signals_seen() == 0 and not h.traced()


# ----------------------------------------------------------------------------- streams

ATTACK_SVC = r'''
import ctypes, json, os, signal, socket, sys
unix, tmp_unix, pwned, secret, victim, port, listen = sys.argv[1:8]
res = {}
def attempt(name, fn):
    try:
        fn(); res[name] = "OK"
    except OSError as e:
        res[name] = f"{type(e).__name__}:{e.errno}"
def unix_connect(p):
    s = socket.socket(socket.AF_UNIX); s.connect(p)
attempt("unix_host_dir", lambda: unix_connect(unix))
attempt("unix_host_tmp", lambda: unix_connect(tmp_unix))
attempt("create_on_host_tmpfs", lambda: open(pwned, "w").write("ESCAPED"))
attempt("read_root_only", lambda: open(secret).read())
attempt("read_shadow", lambda: open("/etc/shadow").read())
attempt("kill_host_pid", lambda: os.kill(int(victim), signal.SIGUSR1))
libc = ctypes.CDLL(None, use_errno=True)
def ptrace():
    if libc.ptrace(0x4206, int(victim), 0, 0) != 0:  # PTRACE_SEIZE
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
attempt("ptrace_host_pid", ptrace)
attempt("tcp_host_loopback", lambda: socket.create_connection(("127.0.0.1", int(port)), timeout=2))
out = (json.dumps(res) + "\n").encode()
print("RESULTS " + json.dumps(res), flush=True)
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(listen))); srv.listen(4)
while True:
    c, _ = srv.accept()
    c.recv(100); c.sendall(out); c.close()
'''


def _sin(host: str, port: int) -> bytes:
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(host) + b"\0" * 8


def _ev(seq: int, name: str, args: list[int], ret: int, payloads: dict | None = None) -> Event:
    t = 10**9 + seq * 1000
    return Event(tid=100, nr=schema.by_name(name).nr, args=tuple(args + [0] * (6 - len(args))), ret=ret,
                 ts_enter=t, ts_exit=t + 10, tgid=100, seq=seq,
                 payloads={s: Payload(s, d) for s, d in (payloads or {}).items()})


def test_streams_replay_attacks_reach_nothing_and_are_listed(host, write_trace, tmp_path):
    from dr.replay.streams import run_streams

    listen = 9317
    evs = [_ev(1, "accept4", [3], 5, {1: _sin("192.0.2.1", 41000)}),
           _ev(2, "recvfrom", [5], 4, {1: b"GET\n"}),
           _ev(3, "sendto", [5], 3, {1: b"ok\n"}),
           _ev(4, "close", [5], 0)]
    meta = {"mode": "attach", "pid": 4242, "argv": [PY, "-c", ATTACK_SVC, *host.args(), str(listen)], "cwd": "/",
            "fds": [{"fd": 3, "type": "socket", "local": f"127.0.0.1:{listen}", "state": "LISTEN"}]}
    trace = write_trace(evs, meta)
    report = tmp_path / "r.json"
    res = run_streams(str(trace), report=str(report))
    _assert_host_saw_nothing(host)
    # Its scratch directory and output log are gone once it returned.
    me = (f"dr-replay-{os.getpid()}-", f"dr-streams-{os.getpid()}-")
    assert [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(me)] == []
    rep = json.loads(report.read_text())
    # The program's own view (it printed its results; the report keeps the output's tail).
    line = [ln for ln in rep["output_tail"] if ln.startswith("RESULTS ")]
    assert line, rep
    got = json.loads(line[0][len("RESULTS "):])
    assert got == {
        "unix_host_dir": "ConnectionRefusedError:111", "unix_host_tmp": "FileNotFoundError:2",
        "create_on_host_tmpfs": "OK",  # landed in the sandbox's scratch overlay: the host saw nothing
        "read_root_only": "PermissionError:13", "read_shadow": "PermissionError:13",
        "kill_host_pid": "ProcessLookupError:3", "ptrace_host_pid": "PermissionError:1",
        "tcp_host_loopback": "ConnectionRefusedError:111"}, got
    # The report lists what the sandbox refused.
    refused = {(r["syscall"], r["errno"]) for r in rep["refused"]}
    assert {("connect", "ECONNREFUSED"), ("openat", "EACCES"), ("kill", "ESRCH"), ("ptrace", "EPERM")} <= refused
    targets = " ".join(r["target"] for r in rep["refused"])
    assert str(host.secret) in targets and "/etc/shadow" in targets and "host.sock" in targets
    assert any("refused" in n and "attempt" in n for n in rep["notes"])
    assert res.exit_code != 0  # the response differs from the recorded "ok"


# ----------------------------------------------------------------------------- strict

STRICT_ATTACK_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void say(const char *what, long r) { printf("%s=%s ", what, r < 0 ? strerrorname_np(errno) : "OK"); }

static long unix_connect(const char *p) {
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, p, sizeof a.sun_path - 1);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    long r = connect(s, (struct sockaddr *)&a, sizeof a);
    close(s);
    return r;
}

int main(int argc, char **argv) {
    /* attack UNIX TMP_UNIX PWNED SECRET VICTIM PORT */
    char buf[64];
    say("unix_host_dir", unix_connect(argv[1]));
    say("unix_host_tmp", unix_connect(argv[2]));
    int fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    say("create_on_host_tmpfs", fd < 0 ? -1 : write(fd, "ESCAPED\n", 8));
    fd = open(argv[4], O_RDONLY);
    long n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    say("read_root_only", n);
    say("kill_host_pid", kill(atoi(argv[5]), SIGUSR1));
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[6])) };
    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    say("tcp_host_loopback", connect(s, (struct sockaddr *)&in, sizeof in));
    printf("\n");
    return 0;
}
"""


def test_strict_replay_attacks_reach_nothing(host, tmp_path):
    """Recorded on the host (where every attempt succeeds), then replayed after a reset.

    The strict replay answers each of these calls from the trace: the program
    prints what it printed at capture time, and the host sees nothing at all.
    """
    if not shutil.which("gcc"):
        pytest.fail("gcc is missing (scripts/setup.sh installs it)")
    exe = host.dir / "sattack"
    r = subprocess.run(["gcc", "-O1", "-o", str(exe), "-x", "c", "-"], input=STRICT_ATTACK_C.encode(),
                       capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    trace = tmp_path / "attack.drt"
    dr = str(Path(sys.executable).with_name("dr"))
    cap = subprocess.run([dr, "capture", "-q", "-o", str(trace), "--", str(exe), *host.args()],
                         capture_output=True, text=True, timeout=120)
    assert cap.returncode == 0, cap.stderr
    recorded = cap.stdout
    assert recorded.split() == ["unix_host_dir=OK", "unix_host_tmp=OK", "create_on_host_tmpfs=OK",
                                "read_root_only=OK", "kill_host_pid=OK", "tcp_host_loopback=OK"], recorded
    # At capture time the attacks did reach the host; reset it, then replay.
    deadline = time.monotonic() + 5
    while host.signals_seen() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    host.unix.accepted = host.tmp_unix.accepted = host.tcp.accepted = 0
    host.pwned.unlink()
    host.secret.write_text("CHANGED-AFTER-CAPTURE\n")
    os.chmod(host.secret, 0o600)
    report = tmp_path / "r.json"
    rep = subprocess.run([dr, "replay", str(trace), "--show-output", "--report", str(report)],
                         capture_output=True, text=True, timeout=120)
    _assert_host_saw_nothing(host)
    assert "Traceback" not in rep.stderr
    # Every answer came from the trace: the program printed what it printed at capture.
    assert rep.stdout == recorded, (rep.stdout, rep.stderr)
    assert rep.returncode == 0, rep.stderr


# ----------------------------------------------------------------------------- the view

def _run_in_sandbox(argv: tuple[str, ...]) -> tuple[int, str]:
    """Run ``argv`` in a Sandbox whose supervisor lets every call run; (status, stdout)."""
    import select

    from dr.replay.sandbox import Sandbox, SandboxSpec

    r, w = os.pipe()
    saved = os.dup(1)
    os.dup2(w, 1)
    try:
        sb = Sandbox(SandboxSpec(argv=argv, stdio="inherit"))
        sb.start()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(w)
    try:
        while True:
            ready, _, _ = select.select([sb.listener.fd, sb.pidfd], [], [], 30)
            assert ready, "the tracee hung"
            if sb.pidfd in ready:
                break
            n = sb.listener.recv()
            if n is not None:
                sb.listener.send(n.id, continue_=True)
        status = sb.exit_status(5)
    finally:
        sb.kill()
        sb.close()
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    return status, out.decode()


def test_the_sandbox_view_of_host_state_directories(host):
    """uid 0 inside: /var/log is its own (host tree, no host files); a 0700 host directory under
    /var/lib is an empty one it owns; the command line's directory is writable into the scratch;
    /etc/shadow unreadable; nothing of it reaches the host."""
    locked = host.dir / "locked"
    locked.mkdir(mode=0o700)
    (locked / "inside").write_text("HOST-ONLY\n")
    conf = host.dir / "app.conf"
    conf.write_text("conf\n")
    logs_before = sorted(os.listdir("/var/log"))
    # Another replay's scratch and a host socket in /tmp: neither is visible inside.
    canary = Path(tempfile.gettempdir()) / f"dr-replay-{os.getpid()}-canary"
    canary.mkdir(exist_ok=True)
    (canary / "upper").mkdir(exist_ok=True)
    script = (f"find /tmp /run /var/tmp /dev/shm -mindepth 1 | wc -l; id -u; ls -A /var/log | head -100 | wc -l; find /var/log -type f | wc -l; "
              f"echo x > /var/log/dr-test.log && echo log-ok; "
              f"ls -A {locked} | wc -l; touch {locked}/mine && chown 33:33 {locked}/mine && echo locked-ok; "
              f"echo 1 > {host.dir}/app.pid && echo pid-ok; cat {conf}; "
              f"cat /etc/shadow >/dev/null 2>&1 || echo shadow-denied")
    try:
        status, out = _run_in_sandbox(("/bin/sh", "-c", script, "sh", "--conf", str(conf)))
    finally:
        shutil.rmtree(canary, ignore_errors=True)
    private, *lines = out.split()
    assert status == 0, out
    assert private == "0", out                               # /tmp, /run, /var/tmp, /dev/shm empty
    assert lines[0] == "0"                                  # root of the namespace
    assert int(lines[1]) == len([n for n in logs_before if os.path.isdir(f"/var/log/{n}")])
    assert lines[2] == "0"                                   # no host log file visible
    assert lines[3:] == ["log-ok", "0", "locked-ok", "pid-ok", "conf", "shadow-denied"], out
    # The host: unchanged.
    assert sorted(os.listdir("/var/log")) == logs_before and not os.path.exists("/var/log/dr-test.log")
    assert os.listdir(locked) == ["inside"] and not (host.dir / "app.pid").exists()
