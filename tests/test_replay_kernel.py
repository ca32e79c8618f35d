"""Strict replay answers like the kernel: small C programs written for these
tests, each exercising one class of kernel behaviour, recorded with the real
capture and replayed under the real seccomp supervisor. Each must replay
faithfully and print what it printed when recorded.

Budget: a few seconds per program.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DR = str(Path(sys.executable).with_name("dr"))


def _notify_supported() -> bool:
    try:
        return "user_notif" in Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split()
    except OSError:
        return False


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not _notify_supported(), reason="kernel lacks seccomp user notification"),
    pytest.mark.skipif(os.geteuid() != 0, reason="capture needs root (CAP_BPF)"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the test programs"),
]


@pytest.fixture(scope="module")
def work():
    d = Path(tempfile.mkdtemp(prefix="dr-test-kernel-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def build(work: Path, name: str, src: str, *libs: str) -> Path:
    c = work / f"{name}.c"
    c.write_text(src)
    exe = work / name
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(c), *libs], check=True, capture_output=True,
                   timeout=60)
    return exe


def record(work: Path, name: str, *cmd: str) -> tuple[Path, bytes]:
    trace = work / f"{name}.drt"
    r = subprocess.run([DR, "capture", "-q", "-o", str(trace), "--", *cmd], capture_output=True,
                       timeout=120, cwd=str(work))
    assert r.returncode == 0, r.stderr.decode()
    return trace, r.stdout


def replay(trace: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([DR, "replay", str(trace), "--show-output", "--stall-timeout", "20", *extra],
                          capture_output=True, timeout=120, cwd="/")


def faithful(work: Path, name: str, src: str, *libs: str) -> bytes:
    """Build, record and replay ``src``; assert the replay is faithful with the same stdout."""
    exe = build(work, name, src, *libs)
    trace, out = record(work, name, str(exe))
    r = replay(trace)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == out
    assert b"faithful" in r.stderr
    return out


# ----------------------------------------------------------------------------- syscall numbers

INVALID = r"""
#include <stdio.h>
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    long r = syscall(-1);
    printf("syscall(-1) = %ld errno %d\n", r, errno);
    errno = 0;
    r = syscall(0x40000000 | 39);   /* an x32 getpid: this kernel has no x32 */
    printf("x32 = %ld errno %d\n", r, errno);
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(20) : "memory");   /* i386 getpid */
    printf("int 0x80 getpid == getpid: %d\n", ret == getpid());
    return 0;
}
"""


def test_invalid_numbers_and_int80_answered_as_recorded(work):
    out = faithful(work, "invalid", INVALID)
    assert b"syscall(-1) = -1 errno 38" in out


# ----------------------------------------------------------------------------- restarts

SIGCHLD_LOOP = r"""
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
static volatile sig_atomic_t got;
static void on_chld(int s) { (void)s; got++; }
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;          /* no SA_RESTART: an interrupted clone is restarted */
    sigaction(SIGCHLD, &sa, NULL);
    int n = 0, reaped = 0;
    for (int i = 0; i < 30; i++) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (p > 0) n++;
        close(open("/dev/null", O_RDONLY));
    }
    for (;;) {
        pid_t w = wait(NULL);
        if (w > 0) reaped++;
        else if (errno != EINTR) break;
    }
    printf("forked %d reaped %d handler ran %d\n", n, reaped, (int)got);
    return 0;
}
"""

STOP_CONT = r"""
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
int main(void) {
    int p[2];
    pipe(p);
    pid_t c = fork();
    if (c == 0) {
        struct pollfd fd = {p[0], POLLIN, 0};
        int r = poll(&fd, 1, 1500);     /* SIGSTOP/SIGCONT: back through restart_syscall */
        printf("child poll = %d revents %d\n", r, fd.revents);
        return 0;
    }
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    kill(c, SIGSTOP);
    nanosleep(&ts, NULL);
    kill(c, SIGCONT);
    int st;
    waitpid(c, &st, 0);
    printf("parent: child exited %d\n", WEXITSTATUS(st));
    return 0;
}
"""


def test_sigchld_without_sa_restart_fork_loop_faithful_every_time(work):
    """SIGCHLD (no SA_RESTART) at a native clone: the kernel restarts the clone
    (ERESTARTNOINTR), which replay must not count as a second clone."""
    exe = build(work, "chldloop", SIGCHLD_LOOP)
    for i in range(5):
        trace, out = record(work, f"chldloop{i}", str(exe))
        r = replay(trace)
        assert r.returncode == 0, (i, r.stderr.decode())
        assert r.stdout == out and out.startswith(b"forked 30 reaped 30")


def test_poll_interrupted_by_sigstop_sigcont(work):
    out = faithful(work, "stopcont", STOP_CONT)
    assert b"child poll = 0" in out


# ----------------------------------------------------------------------------- synchronous faults

SEGV_LONGJMP = r"""
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
static sigjmp_buf env;
static void on_segv(int s) { (void)s; siglongjmp(env, 1); }
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    int recovered = 0;
    for (int i = 0; i < 3; i++) {
        if (sigsetjmp(env, 1) == 0) {
            printf("round %d: touching NULL\n", i);
            fflush(stdout);
            *(volatile int *)0 = i;
        } else {
            recovered++;
        }
    }
    printf("recovered %d times\n", recovered);
    return 0;
}
"""


def test_sigsegv_handler_recovering_with_siglongjmp(work):
    """The program's own faults are raised by its own execution in replay, never re-sent."""
    out = faithful(work, "segv", SEGV_LONGJMP)
    assert out.endswith(b"recovered 3 times\n")


# ----------------------------------------------------------------------------- lifecycle

KILL_CHILD = r"""
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
int main(void) {
    int p[2];
    pipe(p);
    pid_t c = fork();
    if (c == 0) {                      /* writes and sleeps until its parent kills it */
        close(p[0]);
        for (;;) {
            char b = 'x';
            write(p[1], &b, 1);
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    close(p[1]);
    char buf[1];
    for (int i = 0; i < 5; i++) read(p[0], buf, 1);
    kill(c, SIGKILL);
    int st;
    waitpid(c, &st, 0);
    printf("child killed by signal %d\n", WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    return 0;
}
"""

EXEC_FROM_THREAD = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static char *self;
static void *run(void *a) {
    (void)a;
    char *argv[] = {self, "again", NULL};
    execv(self, argv);                 /* from a second thread: it takes the leader's tid */
    return NULL;
}
int main(int argc, char **argv) {
    if (argc > 1) {
        printf("after exec: pid == tid: %d\n", getpid() == gettid());
        return 0;
    }
    self = argv[0];
    printf("before exec\n");
    fflush(stdout);
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    for (;;) pause();
}
"""

ORPHAN = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    printf("parent starts\n");
    fflush(stdout);
    if (fork() == 0) {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
        printf("orphan writes after its parent exited\n");
        return 0;
    }
    return 0;
}
"""


def test_child_killed_by_its_parent_mid_loop(work):
    out = faithful(work, "killchild", KILL_CHILD)
    assert out == b"child killed by signal 9\n"


def test_exec_from_a_second_thread(work):
    out = faithful(work, "execthr", EXEC_FROM_THREAD, "-lpthread")
    assert out == b"before exec\nafter exec: pid == tid: 1\n"


def test_orphan_outliving_the_recording_is_never_called_faithful(work):
    """The capture ends with the first process; an orphan's later output was not
    recorded, so replay cannot compare it and must not say faithful."""
    exe = build(work, "orphan", ORPHAN)
    trace, _out = record(work, "orphan", str(exe))
    r = replay(trace)
    assert r.returncode == 7, r.stderr.decode()
    assert b"outlived the recording" in r.stderr and b"faithful" not in r.stderr


# ----------------------------------------------------------------------------- verdicts

BIG_WRITE = r"""
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    size_t n = 1 << 20, off = 0;
    char *b = malloc(n);
    for (size_t i = 0; i < n; i++) b[i] = 'a' + i % 26;
    while (off < n) { ssize_t w = write(1, b + off, n - off); if (w <= 0) return 1; off += w; }
    return 0;
}
"""


def test_write_truncated_at_snaplen_is_not_faithful(work):
    exe = build(work, "bigwrite", BIG_WRITE)
    trace = work / "bigwrite.drt"
    r = subprocess.run([DR, "capture", "-q", "--snaplen", "64K", "-o", str(trace), "--", str(exe)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0 and len(r.stdout) == 1 << 20, r.stderr.decode()
    rp = subprocess.run([DR, "replay", str(trace)], capture_output=True, timeout=120)
    assert rp.returncode == 7, rp.stderr.decode()
    err = rp.stderr.decode()
    assert err.count("\n") == 1 and "faithful" not in err
    assert f"{(1 << 20) - (64 << 10)} bytes the program wrote were cut" in err
