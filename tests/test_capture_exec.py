"""What capture records of the programs a traced tree executes (issue 11). Needs root.

execve/execveat path, argv and envp are read from the new image's initial
stack (never from untouched pages of the old image); failed execs are
recorded as the kernel answered; spawn mode prepares every image of the
tree (vDSO time entry points, ASLR off).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dr import schema

PY = sys.executable

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (CAP_BPF)"),
]

FORKEXEC_C = r"""
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            execl("/bin/echo", "/bin/echo", "arg-one", "arg-two", "arg-three", (char *)0);
            _exit(127);
        }
        int st;
        waitpid(p, &st, 0);
    }
    return 0;
}
"""

BADEXEC_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
static void try(const char *p) {
    pid_t c = fork();
    if (c == 0) {
        char *av[] = {(char *)p, "x", NULL};
        execv(p, av);
        _exit(100);
    }
    int st;
    waitpid(c, &st, 0);
}
int main(int argc, char **argv) {
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/noexec.txt", argv[1]);
    snprintf(b, sizeof b, "%s/garbage", argv[1]);
    try("/nonexistent/prog");
    try(a);
    try(b);
    pid_t c = fork();
    if (c == 0) {
        int fd = open("/bin/true", O_RDONLY);
        char *av[] = {"true-by-fd", "second", NULL};
        char *ev[] = {"K=V", "L=W", NULL};
        syscall(SYS_execveat, fd, "", av, ev, AT_EMPTY_PATH);
        _exit(101);
    }
    int st;
    waitpid(c, &st, 0);
    return 0;
}
"""


def cc(tmp_path, name: str, src: str) -> str:
    c = tmp_path / f"{name}.c"
    c.write_text(src)
    exe = tmp_path / name
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(c)], check=True, capture_output=True)
    return str(exe)


def dr(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "dr", *map(str, args)], capture_output=True, timeout=timeout)


def events_of(path):
    from dr.formats.trace import TraceReader

    r = TraceReader(path)
    items = list(r.stream())
    return r, [e for e in items if hasattr(e, "payloads")]


def test_fork_exec_100_records_every_path_and_argv(tmp_path):
    exe = cc(tmp_path, "forkexec", FORKEXEC_C)
    out = tmp_path / "fe.drt"
    p = dr("capture", "-q", "-o", out, "--", exe, "100")
    assert p.returncode == 0, p.stderr.decode()
    r, events = events_of(out)
    lost = {k: v for k, v in r.summary["losses"].items() if k != "TRUNCATED" and v}
    assert lost == {}
    execs = [e for e in events if e.nr == schema.by_name("execve").nr]
    assert len(execs) == 101
    for e in execs[1:]:
        assert e.ret == 0
        assert e.payload(0) == b"/bin/echo"
        assert e.payload(1) == b"/bin/echo\0arg-one\0arg-two\0arg-three\0"
        env = e.payload(2).split(b"\0")
        assert b"PATH=" + os.environ["PATH"].encode() in env
    shown = dr("show", out).stdout.decode()
    line = 'execve("/bin/echo", ["/bin/echo", "arg-one", "arg-two", "arg-three"]'
    assert shown.count(line) == 100


def test_failed_and_fd_execs_recorded_as_the_kernel_answered(tmp_path):
    exe = cc(tmp_path, "badexec", BADEXEC_C)
    d = tmp_path / "d"
    d.mkdir()
    (d / "noexec.txt").write_text("not a program\n")
    (d / "garbage").write_bytes(b"\x01\x02 not an executable format")
    (d / "garbage").chmod(0o755)
    out = tmp_path / "bad.drt"
    p = dr("capture", "-q", "-o", out, "--", exe, d)
    assert p.returncode == 0, p.stderr.decode()
    _, events = events_of(out)
    execve = schema.by_name("execve").nr
    got = [(e.payload(0), e.ret) for e in events if e.nr == execve][1:]
    assert got == [(b"/nonexistent/prog", -2), (str(d / "noexec.txt").encode(), -13),
                   (str(d / "garbage").encode(), -8)]
    at = [e for e in events if e.nr == schema.by_name("execveat").nr]
    assert len(at) == 1 and at[0].ret == 0
    # the name the kernel gave the executed file, the argv and envp it received
    assert at[0].payload(1).startswith(b"/dev/fd/")
    assert at[0].payload(2) == b"true-by-fd\0second\0"
    assert at[0].payload(3) == b"K=V\0L=W\0"
    # what the fd executed is identified (the file behind fd 3, not dr's own fd 3)
    r, _ = events_of(out)
    assert "exec" in {f["path"]: f for f in r.file_records}["/bin/true"]["how"]


ADDR_C = r"""
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    int local = 0;
    void *heap = malloc(64);
    printf("%p %p %p\n", (void *)&local, heap, (void *)&printf);
    return 0;
}
"""


def _realtime(ev) -> int:
    sec, nsec = __import__("struct").unpack("<qq", ev.payload(1))
    return sec * 1_000_000_000 + nsec


def test_time_read_by_an_execd_program_is_in_the_trace(tmp_path):
    out = tmp_path / "date.drt"
    p = dr("capture", "-q", "-o", out, "--", "sh", "-c", "date +%s.%N; echo done")
    assert p.returncode == 0, p.stderr.decode()
    printed = p.stdout.decode().split()[0]
    sec, frac = printed.split(".")
    r, events = events_of(out)
    assert r.meta["aslr"] is False and r.meta["vdso_every_exec"] is True
    execs = [e for e in events if e.nr == schema.by_name("execve").nr]
    date_tid = next(e.tid for e in execs if e.payload(0).endswith(b"/date"))
    reads = [e for e in events if e.tid == date_tid and e.nr == schema.by_name("clock_gettime").nr
             and e.args[0] == 0]   # CLOCK_REALTIME
    assert int(sec) * 1_000_000_000 + int(frac) in [_realtime(e) for e in reads]


def test_python_through_env_in_a_script_time_and_random_recorded(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\nexec env /usr/bin/python3 -c "
                      "'import time,os; print(repr(time.time()), os.urandom(4).hex())'\n")
    script.chmod(0o755)
    out = tmp_path / "py.drt"
    p = dr("capture", "-q", "-o", out, "--", str(script))
    assert p.returncode == 0, p.stderr.decode()
    t, rnd = p.stdout.decode().split()
    _, events = events_of(out)
    ns = [_realtime(e) for e in events if e.nr == schema.by_name("clock_gettime").nr and e.args[0] == 0]
    assert any(abs(n / 1e9 - float(t)) < 1e-6 for n in ns)   # time.time() is a float of that read
    got = [e.payload(0) for e in events if e.nr == schema.by_name("getrandom").nr and e.ret == 4]
    assert bytes.fromhex(rnd) in got


def test_aslr_off_for_the_whole_tree(tmp_path):
    exe = cc(tmp_path, "addr", ADDR_C)
    outs = []
    for i in range(2):
        p = dr("capture", "-q", "-o", tmp_path / f"a{i}.drt", "--", "sh", "-c", exe)
        assert p.returncode == 0, p.stderr.decode()
        outs.append(p.stdout.decode())
    assert outs[0] == outs[1]   # the same layout each run: what replay (ASLR off too) sees


JOBSTOP_C = r"""
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>
static int released(pid_t c) {   /* stopped, and no tracer any more */
    char path[64], line[256];
    int stopped = 0, tracer = -1;
    snprintf(path, sizeof path, "/proc/%d/status", c);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "State:", 6)) stopped = strchr(line, 'T') != NULL;
        if (!strncmp(line, "TracerPid:", 10)) sscanf(line + 10, "%d", &tracer);
    }
    fclose(f);
    return stopped && tracer == 0;
}
int main(void) {
    pid_t c = fork();
    if (c == 0) {
        raise(SIGSTOP);
        _exit(7);
    }
    for (int i = 0; i < 1000 && !released(c); i++) usleep(10000);
    long r = ptrace(PTRACE_SEIZE, c, 0, 0);
    printf("seize %ld\n", r);
    fflush(stdout);
    ptrace(PTRACE_DETACH, c, 0, 0);
    kill(c, SIGCONT);
    int st;
    waitpid(c, &st, 0);
    printf("child %d\n", WEXITSTATUS(st));
    return 0;
}
"""


def test_job_control_stop_lets_the_task_go_so_its_parent_can_ptrace_it(tmp_path):
    exe = cc(tmp_path, "jobstop", JOBSTOP_C)
    out = tmp_path / "j.drt"
    p = dr("capture", "-q", "-o", out, "--", exe, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().split("\n")[:2] == ["seize 0", "child 7"]
    r, _ = events_of(out)
    assert r.summary["spawn_released"] == 1


SEIZE_RUNNING_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
int main(void) {
    int p[2], st;
    char c;
    pipe(p);
    pid_t child = fork();
    if (child == 0) { read(p[0], &c, 1); _exit(7); }
    long r = ptrace(PTRACE_SEIZE, child, NULL, NULL);   /* a running child: no stop first */
    printf("seize %s\n", r == 0 ? "ok" : strerror(errno));
    if (r == 0) {
        ptrace(PTRACE_INTERRUPT, child, NULL, NULL);
        waitpid(child, &st, 0);
        printf("stopped %d\n", WIFSTOPPED(st));
        ptrace(PTRACE_DETACH, child, NULL, NULL);
    }
    write(p[1], "x", 1);
    waitpid(child, &st, 0);
    printf("child exit %d\n", WEXITSTATUS(st));
    return 0;
}
"""


def test_a_program_ptraces_its_running_child_in_both_modes(tmp_path):
    """The spawn tracer holds the tree but lets go of the child the program seizes
    (capture/yield_ptrace.py); --first-image-only prepares the first image and lets
    the tree go: in both the program runs (and replays) as it does untraced."""
    exe = cc(tmp_path, "seize", SEIZE_RUNNING_C)
    native = subprocess.run([exe], capture_output=True, timeout=30).stdout
    assert native == b"seize ok\nstopped 1\nchild exit 7\n"
    held = dr("capture", "-q", "-o", tmp_path / "a.drt", "--", exe, timeout=60)
    assert held.returncode == 0 and held.stdout == native, held.stderr.decode()
    out = tmp_path / "b.drt"
    p = dr("capture", "-q", "--first-image-only", "-o", out, "--", exe, timeout=60)
    assert p.returncode == 0 and p.stdout == native, p.stderr.decode()
    r, _ = events_of(out)
    assert r.meta["vdso_every_exec"] is False
    rep = dr("replay", "--show-output", out, timeout=60)
    assert rep.returncode == 0 and rep.stdout == native, rep.stderr.decode()
