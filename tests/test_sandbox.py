"""Sandbox escape attempts from inside the replay sandbox (dr.replay.sandbox).

A static C program (compiled with gcc at test time, so it needs nothing from
the root it runs in) is started in a :class:`dr.replay.sandbox.Sandbox` whose
root is a directory holding only that program. It tries, one after another:

* to connect to a TCP server the test runs on the host's 127.0.0.1;
* to create and write a host path (the test's own temporary directory);
* to read host files outside the replay root (/etc/shadow, a secret file the
  test wrote, the old root, /proc/1/root, a `..` walk);
* to see host pids (/proc) and signal a host process and the supervisor;
* to mount a tmpfs (and to detach the root);
* to load a BPF program and create a BPF map;
* to ptrace the supervisor.

The supervisor used here is the WORST case: it answers every seccomp
notification with SECCOMP_USER_NOTIF_FLAG_CONTINUE, i.e. the kernel runs each
call natively inside the sandbox. So what these tests show is the namespace
layer alone (user, mount, pid, net, uts, ipc namespaces, pivot_root, no-new-
privs): even a supervisor that let everything through leaks nothing. Strict
replay adds the seccomp layer on top: connect, open and read are answered from
the trace and never run, and mount is refused outright, which
test_strict_replay_of_an_attack_touches_nothing_on_the_host shows. Crafted
traces (absurd sizes, addresses, payload slots, fd numbers) are the last part.

The effects are checked on the host side (server saw no connection, file not
created, host process alive, host mount table and BPF program list unchanged,
supervisor not traced), not only the return codes the program prints.

Budget: about 45 s (two captures, eleven replays).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.root]

ATTACK_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void say(const char *what, long ret, const char *extra) {
    printf("%s %ld %s %s\n", what, ret, ret < 0 ? strerrorname_np(errno) : "OK", extra ? extra : "");
    fflush(stdout);
}

static long try_read(const char *path, char *buf, size_t n) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    long k = read(fd, buf, n - 1);
    int e = errno; close(fd); errno = e;
    if (k >= 0) buf[k] = 0;
    return k;
}

int main(int argc, char **argv) {
    /* attack PORT HOST_WRITE_PATH HOST_SECRET_PATH HOST_PID SUPERVISOR_PID */
    int port = atoi(argv[1]);
    pid_t hostpid = atoi(argv[4]), sup = atoi(argv[5]);
    char buf[4096];
    long r;

    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    r = connect(s, (struct sockaddr *)&a, sizeof a);
    if (r == 0) write(s, "ESCAPED\n", 8);
    say("connect_host_loopback", r, NULL);

    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    r = fd;
    if (fd >= 0) r = write(fd, "ESCAPED\n", 8);
    say("write_host_path", r, NULL);

    const char *reads[] = { "/etc/shadow", argv[3], "/.dr-oldroot/etc/hostname", "/proc/1/root/etc/shadow",
                            "../../../../etc/shadow", "/proc/self/root/../../etc/shadow" };
    for (unsigned i = 0; i < sizeof reads / sizeof *reads; i++) {
        r = try_read(reads[i], buf, sizeof buf);
        say("read_host_file", r, reads[i]);
    }

    int npids = 0;
    DIR *d = opendir("/proc");
    if (d) { struct dirent *e; while ((e = readdir(d))) if (e->d_name[0] >= '0' && e->d_name[0] <= '9') npids++; closedir(d); }
    snprintf(buf, sizeof buf, "%d", npids);
    say("see_pids", d ? 0 : -1, buf);
    snprintf(buf, sizeof buf, "/proc/%d/cmdline", hostpid);
    say("see_host_pid", access(buf, F_OK), buf);
    say("kill_host_pid", kill(hostpid, SIGKILL), NULL);
    say("kill_supervisor", kill(sup, SIGKILL), NULL);

    mkdir("/mnt", 0755);
    say("mount_tmpfs", mount("none", "/mnt", "tmpfs", 0, NULL), NULL);
    say("mount_proc_sys_rw", mount("sysfs", "/mnt", "sysfs", 0, NULL), NULL);
    say("umount_root", umount2("/", MNT_DETACH), NULL);

    struct bpf_insn prog[2] = {
        { .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
        { .code = BPF_JMP | BPF_EXIT },
    };
    union bpf_attr at;
    memset(&at, 0, sizeof at);
    at.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    at.insns = (unsigned long)prog;
    at.insn_cnt = 2;
    at.license = (unsigned long)"GPL";
    strcpy(at.prog_name, "drescape");
    say("bpf_prog_load", syscall(SYS_bpf, BPF_PROG_LOAD, &at, sizeof at), NULL);
    memset(&at, 0, sizeof at);
    at.map_type = BPF_MAP_TYPE_ARRAY; at.key_size = 4; at.value_size = 4; at.max_entries = 1;
    say("bpf_map_create", syscall(SYS_bpf, BPF_MAP_CREATE, &at, sizeof at), NULL);

    say("ptrace_supervisor", ptrace(PTRACE_ATTACH, sup, 0, 0), NULL);
    say("ptrace_seize_supervisor", ptrace(PTRACE_SEIZE, sup, 0, 0), NULL);
    return 0;
}
"""

SUPERVISOR = textwrap.dedent(r"""
    # The worst-case supervisor: every notification continues natively.
    import json, os, select, sys
    from collections import Counter
    from dr import schema
    from dr.replay.sandbox import Sandbox, SandboxSpec
    root, argv = sys.argv[1], sys.argv[2:]
    argv = [a.replace("SUPERVISOR", str(os.getpid())) for a in argv]
    sb = Sandbox(SandboxSpec(argv=tuple(argv), root=root, stdio="inherit"))
    sb.start()
    seen = Counter()
    try:
        while True:
            st = sb.exit_status(0)
            if st is not None:
                break
            r, _, _ = select.select([sb.listener.fd, sb.pidfd], [], [], 1.0)
            if sb.listener.fd in r:
                n = sb.listener.recv()
                if n is not None:
                    seen[schema.name_of(n.nr)] += 1
                    sb.listener.send(n.id, continue_=True)
            elif sb.pidfd in r:
                st = sb.exit_status(5)
                break
    finally:
        sb.kill()
        sb.close()
    status = open(f"/proc/{os.getpid()}/status").read()
    tracer = [l for l in status.splitlines() if l.startswith("TracerPid:")][0].split()[1]
    print("SUPERVISOR " + json.dumps({"exit": st, "notified": seen, "tracer": int(tracer)}), flush=True)
""")


def _bpf_prog_names() -> set[str]:
    exe = shutil.which("bpftool") or "/usr/sbin/bpftool"
    r = subprocess.run([exe, "-j", "prog", "show"], capture_output=True, text=True, timeout=30)
    return {p.get("name", "") for p in json.loads(r.stdout or "[]") or []}


@pytest.fixture(scope="module")
def attack_binary(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.fail("gcc is missing (scripts/setup.sh installs it)")
    d = tmp_path_factory.mktemp("attack")
    exe = d / "attack"
    r = subprocess.run(["gcc", "-O1", "-static", "-o", str(exe), "-x", "c", "-"], input=ATTACK_C.encode(),
                       capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return exe


class _Server:
    """A TCP server on the host's loopback that counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[bytes] = []
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(1)
            try:
                self.accepted.append(c.recv(100))
            except OSError:
                self.accepted.append(b"")
            c.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def escape_run(attack_binary, tmp_path_factory):
    """Run the attack program in the sandbox once; return its report lines and host-side facts."""
    from dr.replay import notify

    try:
        notify.check_support()
    except Exception as e:  # NotSupported: the kernel lacks seccomp user notification
        pytest.skip(f"kernel lacks a replay feature: {e}")
    tmp = tmp_path_factory.mktemp("escape")
    root = tmp / "root"
    root.mkdir()
    shutil.copy(attack_binary, root / "attack")
    host_write = tmp / "pwned"
    secret = tmp / "secret"
    secret.write_text("TOP-SECRET-HOST-BYTES\n")
    victim = subprocess.Popen(["sleep", "60"])
    srv = _Server()
    mounts_before = open("/proc/self/mountinfo").read().count("\n")
    try:
        r = subprocess.run([sys.executable, "-c", SUPERVISOR, str(root), "/attack", str(srv.port),
                            str(host_write), str(secret), str(victim.pid), "SUPERVISOR"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        time.sleep(0.2)
        facts = {
            "stdout": r.stdout, "stderr": r.stderr, "rc": r.returncode,
            "server_accepted": list(srv.accepted),
            "host_file_exists": host_write.exists(),
            "victim_alive": victim.poll() is None,
            "mounts_delta": open("/proc/self/mountinfo").read().count("\n") - mounts_before,
            "bpf_names": _bpf_prog_names(),
        }
    finally:
        srv.close()
        victim.kill()
        victim.wait()
    lines: dict[str, list[tuple[int, str, str]]] = {}
    sup = None
    for ln in facts["stdout"].splitlines():
        if ln.startswith("SUPERVISOR "):
            sup = json.loads(ln[len("SUPERVISOR "):])
            continue
        parts = ln.split(" ", 3)
        if len(parts) >= 3:
            lines.setdefault(parts[0], []).append((int(parts[1]), parts[2], parts[3] if len(parts) > 3 else ""))
    assert sup is not None, facts["stdout"] + facts["stderr"]
    facts["lines"], facts["supervisor"] = lines, sup
    return facts


def _results(run, name):
    got = run["lines"].get(name)
    assert got, f"the attack program did not report {name}: {run['stdout']}\n{run['stderr']}"
    return got


def test_attack_ran_to_the_end_and_every_call_was_notified(escape_run):
    sup = escape_run["supervisor"]
    assert sup["exit"] == 0, escape_run
    for name in ("connect", "openat", "kill", "mount", "bpf", "ptrace"):
        assert sup["notified"].get(name), f"{name} never reached the supervisor: {sup['notified']}"


def test_connect_to_host_loopback_fails(escape_run):
    [(ret, err, _)] = _results(escape_run, "connect_host_loopback")
    assert ret < 0 and err == "ECONNREFUSED"  # the sandbox's own loopback, nothing listens
    assert escape_run["server_accepted"] == []


def test_write_host_path_fails(escape_run):
    [(ret, err, _)] = _results(escape_run, "write_host_path")
    assert ret < 0 and err == "ENOENT"
    assert not escape_run["host_file_exists"]


def test_read_host_files_outside_the_root_fails(escape_run):
    res = _results(escape_run, "read_host_file")
    assert len(res) == 6
    for ret, err, path in res:
        assert ret < 0 and err in ("ENOENT", "EACCES"), (path, ret, err)
    assert "TOP-SECRET" not in escape_run["stdout"]


def test_host_pids_are_invisible_and_unsignalable(escape_run):
    [(_, _, n)] = _results(escape_run, "see_pids")
    assert int(n) <= 3  # init, the tracee (and nothing of the host)
    [(ret, _, _)] = _results(escape_run, "see_host_pid")
    assert ret < 0
    for name in ("kill_host_pid", "kill_supervisor"):
        [(ret, err, _)] = _results(escape_run, name)
        assert ret < 0 and err == "ESRCH", (name, err)
    assert escape_run["victim_alive"]
    assert escape_run["supervisor"]["exit"] == 0  # the supervisor survived to report


def test_mount_stays_inside_the_sandbox(escape_run):
    # Root of its own user namespace, the tracee may mount a tmpfs in its own
    # mount namespace; the host's mount table must not change, and sysfs
    # (owned by the host's network namespace) and detaching / must fail.
    [(ret, err, _)] = _results(escape_run, "mount_proc_sys_rw")
    assert ret < 0, err
    assert escape_run["mounts_delta"] == 0


def test_bpf_load_fails(escape_run):
    for name in ("bpf_prog_load", "bpf_map_create"):
        [(ret, err, _)] = _results(escape_run, name)
        assert ret < 0 and err == "EPERM", (name, err)
    assert "drescape" not in escape_run["bpf_names"]


def test_ptrace_of_the_supervisor_fails(escape_run):
    for name in ("ptrace_supervisor", "ptrace_seize_supervisor"):
        [(ret, err, _)] = _results(escape_run, name)
        assert ret < 0 and err == "ESRCH", (name, err)
    assert escape_run["supervisor"]["tracer"] == 0


# ----------------------------------------------------------------------------- crafted traces

REPLAY = textwrap.dedent(r"""
    import sys
    from dr.errors import DrError
    from dr.replay.strict import ReplayOptions, ReplaySession, Status
    try:
        s = ReplaySession(sys.argv[1], ReplayOptions(stall_timeout=5.0))
        try:
            s.start()
            while (r := s.step()).status is Status.CONTINUE:
                pass
        finally:
            s.close()
        print("OUTCOME", r.status.name, r.message.replace("\n", " ")[:300])
    except DrError as e:
        print("DRERROR", type(e).__name__, e.message)
""")


@pytest.fixture(scope="module")
def head_trace(tmp_path_factory):
    """`head -c 200 FILE` recorded in spawn mode: openat, read(3, buf, 200) = 14, write(1, ...)."""
    d = tmp_path_factory.mktemp("crafted")
    src = d / "in.txt"
    src.write_text("hello sandbox\n")
    out = d / "head.drt"
    r = subprocess.run([str(Path(sys.executable).with_name("dr")), "capture", "-q", "-o", str(out), "--",
                        "/usr/bin/head", "-c", "200", str(src)], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out, str(src)


def _rewrite(src: Path, dst: Path, fix) -> int:
    """Copy a trace, passing each syscall Event through ``fix`` (returns the number changed)."""
    from dr.formats.trace import Event, ProcEvent, TraceReader, TraceWriter

    changed = 0
    with TraceReader(src) as r:
        w = TraceWriter(dst, r.meta)
        batch = []
        for it in r.stream():
            if isinstance(it, Event):
                if fix(it):
                    changed += 1
                batch.append(it)
            elif isinstance(it, ProcEvent):
                batch.append(it)
            else:
                w.write_events(batch)
                batch = []
                w.write_record(it)
        w.write_events(batch)
        w.close(r.summary)
    return changed


def _is_input_read(path):
    def match(ev):
        return ev.name == "read" and ev.args[0] == 3 and ev.payload(1) == b"hello sandbox\n"
    return match


CRAFTS = {
    # read(3, buf, 200) recorded as returning 2**40 bytes
    "absurd_return_size": lambda ev: _set(ev, ret=1 << 40),
    # a 1 MiB payload for a 200-byte buffer (and the matching return value)
    "payload_larger_than_buffer": lambda ev: _set(ev, ret=1 << 20, data=b"A" * (1 << 20)),
}
#: Crafts that replay must IGNORE: the supervisor writes only to the tracee's own
#: argument addresses and only the slots the schema declares, so the replay stays faithful.
IGNORED_CRAFTS = {
    # the buffer address recorded far outside any mapping
    "absurd_buffer_address": lambda ev: _set(ev, args=(3, 0xFFFF_FFFF_FFFF_0000, 200)),
    # a payload slot for an argument read(2) does not have
    "payload_for_missing_argument": lambda ev: _set(ev, slot=5),
}
FD_CRAFTS = {
    "absurd_fd_number": 1 << 30,
    "negative_fd_number": -(1 << 31) + 7,
    "fd_past_rlimit": 1_048_576 + 5,
}


def _set(ev, ret=None, data=None, args=None, slot=None):
    from dr.formats.trace import Payload

    if ret is not None:
        ev.ret = ret
    if data is not None:
        ev.payloads[1] = Payload(1, data, len(data))
    if args is not None:
        ev.args = tuple(args) + tuple(ev.args[len(args):])
    if slot is not None:
        ev.payloads[slot] = Payload(slot, b"\xff" * 4096, 4096)
    return True


def _replay(trace: Path) -> str:
    r = subprocess.run([sys.executable, "-c", REPLAY, str(trace)], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("OUTCOME", "DRERROR"))]
    assert len(lines) == 1, (r.stdout[-1000:], r.stderr[-1000:])
    return lines[0]


def test_unaltered_trace_replays_faithfully(head_trace):
    trace, _ = head_trace
    assert _replay(trace).startswith("OUTCOME EXITED")


@pytest.mark.parametrize("name", sorted(CRAFTS))
def test_crafted_sizes_and_addresses_are_refused(head_trace, tmp_path, name):
    trace, src = head_trace
    out = tmp_path / f"{name}.drt"
    fix = CRAFTS[name]
    match = _is_input_read(src)
    assert _rewrite(trace, out, lambda ev: match(ev) and fix(ev)) == 1
    outcome = _replay(out)
    # The project's own outcome: a ReplayError/TraceError, a divergence, or a replay
    # error status; never a crash of the supervisor, never a faithful verdict.
    assert outcome.startswith(("DRERROR", "OUTCOME DIVERGED", "OUTCOME ERROR")), outcome


@pytest.mark.parametrize("name", sorted(IGNORED_CRAFTS))
def test_crafted_addresses_and_slots_are_never_used(head_trace, tmp_path, name):
    trace, src = head_trace
    out = tmp_path / f"{name}.drt"
    match = _is_input_read(src)
    assert _rewrite(trace, out, lambda ev: match(ev) and IGNORED_CRAFTS[name](ev)) == 1
    assert _replay(out).startswith("OUTCOME EXITED")


@pytest.mark.parametrize("name", sorted(FD_CRAFTS))
def test_crafted_fd_numbers_are_refused(head_trace, tmp_path, name):
    trace, src = head_trace
    out = tmp_path / f"{name}.drt"
    fd = FD_CRAFTS[name]

    def fix(ev):
        if ev.name == "openat" and ev.payload(1, 0) and src.encode() in ev.payload(1):
            ev.ret = fd
            return True
        return False

    assert _rewrite(trace, out, fix) == 1
    outcome = _replay(out)
    assert outcome.startswith(("DRERROR", "OUTCOME DIVERGED", "OUTCOME ERROR")), outcome


@pytest.mark.parametrize("name", sorted(CRAFTS))
def test_crafted_sizes_are_refused_at_the_event(head_trace, tmp_path, name):
    """A return value above the call's own count can never be genuine: refuse it there."""
    trace, src = head_trace
    out = tmp_path / f"{name}.drt"
    match = _is_input_read(src)
    assert _rewrite(trace, out, lambda ev: match(ev) and CRAFTS[name](ev)) == 1
    assert _replay(out).startswith(("DRERROR", "OUTCOME ERROR"))


# ----------------------------------------------------------------------------- strict replay of an attack

STRICT_ATTACK_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

/* sattack PORT WRITE_PATH READ_PATH MOUNT_DIR: each step is harmless on the host at
 * capture time (the test owns every target) and must have no effect at replay. */
int main(int argc, char **argv) {
    char buf[256];
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int c = connect(s, (struct sockaddr *)&a, sizeof a);
    if (c == 0) write(s, "HELLO-FROM-TRACEE\n", 18);
    close(s);
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) { write(fd, "WRITTEN-BY-TRACEE\n", 18); close(fd); }
    fd = open(argv[3], O_RDONLY);
    long n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (n > 0) { buf[n] = 0; } else { strcpy(buf, "-"); }
    printf("connect=%d open=%d read=%s\n", c, fd, buf);
    fflush(stdout);
    int m = mount("none", argv[4], "tmpfs", 0, NULL);
    printf("mount=%d\n", m);
    fflush(stdout);
    if (m == 0) umount2(argv[4], MNT_DETACH);
    return 0;
}
"""


@pytest.fixture(scope="module")
def attack_trace(tmp_path_factory):
    """Record the strict attack, check it acted at capture time, then reset the host.

    Yields a dict: trace, server (counting afresh), written path (deleted),
    secret (now holding other bytes), the host's mount table at reset.
    """
    tmp = tmp_path_factory.mktemp("sattack")
    # The replay root's /tmp is a fresh tmpfs: the program lives under /var/tmp.
    bindir = Path(__import__("tempfile").mkdtemp(prefix="dr-test-", dir="/var/tmp"))
    srv = _Server()
    try:
        exe = bindir / "sattack"
        r = subprocess.run(["gcc", "-O1", "-o", str(exe), "-x", "c", "-"], input=STRICT_ATTACK_C.encode(),
                           capture_output=True)
        assert r.returncode == 0, r.stderr.decode()
        written, secret, mnt = tmp / "written", tmp / "secret", tmp / "mnt"
        secret.write_text("recorded-v1")
        mnt.mkdir()
        trace = tmp / "attack.drt"
        cap = subprocess.run([str(Path(sys.executable).with_name("dr")), "capture", "-q", "-o", str(trace),
                              "--", str(exe), str(srv.port), str(written), str(secret), str(mnt)],
                             capture_output=True, text=True, timeout=120)
        assert cap.returncode == 0, cap.stderr
        assert cap.stdout == "connect=0 open=3 read=recorded-v1\nmount=0\n"
        deadline = time.monotonic() + 5
        while not srv.accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.accepted == [b"HELLO-FROM-TRACEE\n"]
        # Reset the host: what a replay does must not show up here.
        srv.accepted.clear()
        written.unlink()
        secret.write_text("HOST-SECRET-v2")
        yield {"trace": trace, "server": srv, "written": written,
               "mounts": open("/proc/self/mountinfo").read()}
    finally:
        srv.close()
        shutil.rmtree(bindir, ignore_errors=True)


def test_strict_replay_of_an_attack_touches_nothing_on_the_host(attack_trace):
    """Recorded: connect to a host server, write a host file, read a host file, mount.

    Replayed after the host was reset (file deleted, secret changed, the
    server counting afresh): the replay prints what was recorded, the server
    sees no connection, the file does not come back; the report counts these
    calls as answered from the trace. mount and umount2 are answered from the
    recording too: the program sees its recorded success, the host mount table
    does not change.
    """
    import io

    from dr.replay.strict import ReplayOptions, ReplaySession, Status

    a = attack_trace
    out = io.BytesIO()
    s = ReplaySession(str(a["trace"]), ReplayOptions(show_output=True, stdout=out, stderr=out))
    try:
        s.start()
        while (res := s.step()).status is Status.CONTINUE:
            pass
    finally:
        s.close()
    time.sleep(0.3)
    assert res.status is Status.EXITED, res
    assert out.getvalue() == b"connect=0 open=3 read=recorded-v1\nmount=0\n"
    assert a["server"].accepted == []
    assert not a["written"].exists()
    assert open("/proc/self/mountinfo").read() == a["mounts"]
    for name in ("connect", "openat", "read", "mount", "umount2"):
        assert s.report.syscalls.get(name), f"{name} missing from the replay report: {s.report.syscalls}"


def test_dr_replay_command_answers_the_mount_from_the_recording(attack_trace, tmp_path):
    """The same through `dr replay --show-output --report`: faithful, a JSON report, no mount."""
    a = attack_trace
    rep = tmp_path / "report.json"
    r = subprocess.run([str(Path(sys.executable).with_name("dr")), "replay", str(a["trace"]),
                        "--show-output", "--report", str(rep)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == "connect=0 open=3 read=recorded-v1\nmount=0\n"
    assert a["server"].accepted == [] and not a["written"].exists()
    assert open("/proc/self/mountinfo").read() == a["mounts"]
    report = json.loads(rep.read_text())
    text = json.dumps(report)
    for name in ("connect", "openat", "read", "mount"):
        assert f'"{name}"' in text, f"{name} not in the report: {text[:800]}"
    assert report["verdict"] == "faithful"


@pytest.mark.parametrize("name", ["absurd_fd_number", "fd_past_rlimit"])
def test_dr_replay_command_refuses_crafted_fds_in_one_line(head_trace, tmp_path, name):
    trace, src = head_trace
    out = tmp_path / f"{name}.drt"
    fd = FD_CRAFTS[name]

    def fix(ev):
        if ev.name == "openat" and ev.payload(1, 0) and src.encode() in ev.payload(1):
            ev.ret = fd
            return True
        return False

    assert _rewrite(trace, out, fix) == 1
    r = subprocess.run([str(Path(sys.executable).with_name("dr")), "replay", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("dr: ")]
    assert len(errs) == 1 and f"absurd fd number {fd}" in errs[0], r.stderr


@pytest.mark.parametrize("blob", [b"", b"not a trace", b"DRTRACE\x00\x63\x00\x00\x00\x00\x00\x00\x00",
                                  b"DRTRACE\x00\x01\x00\x00\x00\x00\x00\x00\x00" + b"\xff" * 40])
def test_dr_replay_command_on_garbage_one_line(tmp_path, blob):
    p = tmp_path / "g.drt"
    p.write_bytes(blob)
    r = subprocess.run([str(Path(sys.executable).with_name("dr")), "replay", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("dr: "), r.stderr
