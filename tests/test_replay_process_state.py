"""State the kernel keeps for a replayed process and enforces where it runs (resource
limits): strict replay must set it for real, or the program faults elsewhere. Small C
programs, recorded with the real capture and replayed under the real supervisor."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import DR, KERNEL_REPLAY, build_c, work_dir
from test_replay_kernel import faithful, record, replay

pytestmark = KERNEL_REPLAY
work = work_dir("dr-test-state-")


STACK_LIMIT = r"""
#include <stdio.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
static volatile int *depth;
static int recurse(void) {
    volatile char pad[256];
    pad[0] = (char)++*depth;
    return recurse() + pad[0];
}
int main(void) {
    depth = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t child = fork();
    if (child == 0) {
        struct rlimit r = { 1 << 20, 1 << 20 };
        setrlimit(RLIMIT_STACK, &r);
        return recurse();
    }
    int status;
    waitpid(child, &status, 0);
    printf("signal=%d under_2MiB=%d depth=%d\n", WIFSIGNALED(status) ? WTERMSIG(status) : 0,
           *depth * 256 < (2 << 20), *depth);
    return 0;
}
"""


def test_stack_limit_the_program_sets_is_set_for_real(work):
    """setrlimit(RLIMIT_STACK) in a child: the recursion faults at the recorded depth (the
    limit was only answered before, so the replayed child recursed 8 times deeper)."""
    out = faithful(work, "stacklimit", STACK_LIMIT)
    assert out.startswith(b"signal=11 under_2MiB=1 depth="), out


PROC_MEM = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/wait.h>
static volatile int mine = 1, childs = 1;
int main(void) {
    int p[2];
    char c, path[64];
    pipe(p);
    pid_t child = fork();
    if (child == 0) {
        read(p[0], &c, 1);
        printf("child sees %d\n", childs);
        fflush(stdout);
        return 0;
    }
    int two = 2, three = 3;
    int self = open("/proc/self/mem", O_RDWR);
    pwrite(self, &two, sizeof two, (off_t)(uintptr_t)&mine);
    snprintf(path, sizeof path, "/proc/%d/mem", child);
    int other = open(path, O_RDWR);
    pwrite(other, &three, sizeof three, (off_t)(uintptr_t)&childs);
    write(p[1], "x", 1);
    waitpid(child, NULL, 0);
    printf("parent sees %d\n", mine);
    return 0;
}
"""


def test_writes_through_proc_pid_mem_change_that_memory(work):
    """/proc/self/mem and a child's /proc/PID/mem (opened before the child's first call):
    writes through them change that memory in replay as at capture (they were only
    answered, so the program read its old values)."""
    out = faithful(work, "procmem", PROC_MEM)
    assert out == b"child sees 3\nparent sees 2\n", out


SIGPENDING = r"""
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigprocmask(SIG_BLOCK, &m, NULL);
    kill(getpid(), SIGUSR1);
    sigemptyset(&m);
    sigpending(&m);
    printf("usr1 pending=%d\n", sigismember(&m, SIGUSR1));
    return 0;
}
"""


def test_sigpending_answers_what_was_pending_at_capture(work):
    """A blocked signal the program sent itself is pending: sigpending answers the recorded
    set (run natively, it saw none, since replay answers the kill without sending it)."""
    out = faithful(work, "sigpending", SIGPENDING)
    assert out == b"usr1 pending=1\n", out


PPOLL_SIGSUSPEND = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
static volatile int handled;
static void on_chld(int sig) { handled = sig; }
int main(void) {
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGCHLD);
    sigprocmask(SIG_BLOCK, &m, NULL);
    pid_t child = fork();
    if (child == 0) return 7;
    struct timespec ten_ms = { 0, 10000000 };
    nanosleep(&ten_ms, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sigaction(SIGCHLD, &sa, NULL);
    sigemptyset(&m);
    int r = ppoll(NULL, 0, NULL, &m);
    int e = errno, status;
    waitpid(child, &status, 0);
    printf("ppoll=%d eintr=%d handled=%d status=%d\n", r, e == EINTR, handled, WEXITSTATUS(status));
    return 0;
}
"""


def test_ppoll_on_no_fds_unblocks_a_signal_as_sigsuspend(work):
    """ppoll(NULL, 0, NULL, &empty) with SIGCHLD blocked elsewhere: its handler runs inside
    the call, which returns EINTR (answered only, the mask never swapped and the handler
    never ran)."""
    out = faithful(work, "ppollmask", PPOLL_SIGSUSPEND)
    assert out == b"ppoll=-1 eintr=1 handled=17 status=7\n", out


KILLED_CHILD = r"""
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    volatile long *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t child = fork();
    if (child == 0) {
        for (long i = 0; i < 100000000; i++)   /* no syscall: nothing orders this */
            ++*shared;
        *(volatile int *)0 = 1;                /* SIGSEGV: the child ends without a call */
        return 0;
    }
    int status;
    waitpid(child, &status, 0);
    printf("signal=%d shared=%ld\n", WTERMSIG(status), *shared);
    return 0;
}
"""


def test_wait_for_a_child_killed_by_a_signal_waits_for_its_death(work):
    """waitpid reaping a child that faulted: answered only once the child is dead, so the
    parent reads all the child wrote (it read a count still growing, or 0)."""
    out = faithful(work, "killedchild", KILLED_CHILD)
    assert out == b"signal=11 shared=100000000\n", out


PDEATHSIG = r"""
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
static int to_main[2];
static void on_ill(int sig) {
    char line[32];
    int n = snprintf(line, sizeof line, "grandchild got %d\n", sig);
    write(1, line, n);
    write(to_main[1], "x", 1);
    _exit(0);
}
int main(void) {
    int ready[2];
    char c;
    pipe(to_main);
    pipe(ready);
    if (fork() == 0) {
        if (fork() == 0) {
            signal(SIGILL, on_ill);
            prctl(PR_SET_PDEATHSIG, SIGILL);
            write(ready[1], "r", 1);
            for (;;) pause();
        }
        read(ready[0], &c, 1);
        return 0;   /* the grandchild's parent dies: the kernel sends it SIGILL */
    }
    read(to_main[0], &c, 1);
    wait(NULL);
    printf("main done\n");
    return 0;
}
"""


def test_parent_death_signal_is_delivered_not_left_as_a_fault(work):
    """PR_SET_PDEATHSIG(SIGILL): the kernel sends SIGILL when the parent dies. Replay delivers
    it where recorded (it was taken for a fault of the program's own code and left to it,
    so the grandchild slept on)."""
    out = faithful(work, "pdeathsig", PDEATHSIG)
    assert out == b"grandchild got 4\nmain done\n", out


SIGNAL_IN_FUTEX = r"""
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
static volatile int stored;
static void on_usr1(int sig) {
    char line[48];
    int n = snprintf(line, sizeof line, "handler sees stored=%d\n", stored != 0);
    write(1, line, n);
    _exit(0);
}
int main(void) {
    signal(SIGUSR1, on_usr1);
    pid_t parent = getpid();
    int *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pid_t child = fork();
    if (child == 0) {
        struct timespec t = { 0, 50000000 };
        nanosleep(&t, NULL);
        kill(parent, SIGUSR1);   /* the parent sleeps in its futex wait by now */
        return 0;
    }
    stored = child;              /* user code between the fork and the wait */
    syscall(SYS_futex, word, FUTEX_WAIT, 0, NULL, NULL, 0);
    return 1;
}
"""


def test_signal_that_interrupted_a_native_futex_wait_is_sent_in_it(work):
    """A signal recorded interrupting a futex wait (which runs natively) is sent once the
    thread sleeps in it: the handler sees what the code before the wait stored (sent with
    the previous call's answer, it ran right after fork and saw 0)."""
    out = faithful(work, "sigfutex", SIGNAL_IN_FUTEX)
    assert out == b"handler sees stored=1\n", out


VSYSCALL = r"""
#include <stdio.h>
#include <sys/time.h>
int main(void) {
    struct timeval tv = {0, 0};
    long r;
    /* gettimeofday through the legacy vsyscall page: no syscall entry at capture */
    __asm__ volatile ("movq $0xffffffffff600000, %%rax\n\tcallq *%%rax"
                      : "=a"(r) : "D"(&tv), "S"(0) : "cc", "memory", "rcx", "r11");
    printf("r=%ld set=%d\n", r, tv.tv_sec != 0);
    return 0;
}
"""


def test_call_through_the_vsyscall_page_makes_the_replay_incomplete(work):
    """The kernel emulates a vsyscall without a syscall entry: capture never sees it, so
    replay lets the kernel answer it and says "incomplete" (exit 7), never "faithful"."""
    if "[vsyscall]" not in open("/proc/self/maps").read():
        pytest.skip("this kernel maps no vsyscall page")
    exe = build_c(work, "vsys", VSYSCALL)
    trace, out = record(work, "vsys", str(exe))
    assert out == b"r=0 set=1\n"
    r = replay(trace)
    assert r.returncode == 7, r.stderr.decode()
    assert r.stdout == out
    assert b"incomplete" in r.stderr and b"vsyscall page" in r.stderr


BIG_READ = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
static unsigned char b[100000];
int main(void) {
    int fd = open("/dev/urandom", O_RDONLY);
    unsigned long sum = 0;
    ssize_t n = read(fd, b, sizeof b);
    for (ssize_t i = 0; i < n; i++) sum = sum * 31 + b[i];
    printf("read %zd sum %lu\n", n, sum);
    return 0;
}
"""


def test_a_read_cut_at_the_snaplen_stops_replay_and_names_the_snaplen_that_holds_it(work):
    """The program saw 100,000 bytes, the trace holds 16 KiB: replay used to hand it the
    rest of its buffer as it was (a later "bytes differ" of a checksum, or a faithful
    verdict where the program ignored them)."""
    exe = build_c(work, "bigread", BIG_READ)
    runs = []
    for snaplen in ("16K", "98K"):
        trace = work / f"bigread-{snaplen}.drt"
        c = subprocess.run([DR, "capture", "-q", "--snaplen", snaplen, "-o", str(trace), "--", str(exe)],
                           capture_output=True, timeout=120)
        assert c.returncode == 0 and c.stdout.startswith(b"read 100000 sum "), c.stderr.decode()
        runs.append((c.stdout, subprocess.run([DR, "replay", "--show-output", str(trace)],
                                              capture_output=True, timeout=120)))
    (_, cut), (out, whole) = runs
    assert cut.returncode == 7 and cut.stdout == b"", cut.stderr.decode()
    assert cut.stderr.decode().rstrip().endswith(
        "read 100000 bytes and the trace holds the first 16384 (cut at the capture's snaplen): "
        "replay stops there; re-capture with `--snaplen 98K`")
    assert whole.returncode == 0 and whole.stdout == out, whole.stderr.decode()   # the remedy works


PINNED = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
int main(void) {
    cpu_set_t s;
    int off = 0;
    CPU_ZERO(&s);
    CPU_SET(1, &s);
    sched_setaffinity(0, sizeof s, &s);
    for (int i = 0; i < 5000000; i++) off += sched_getcpu() != 1;   /* rseq's cpu_id: no syscall */
    printf("off the pinned cpu %d times\n", off);
    return 0;
}
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or 1 not in os.sched_getaffinity(0),
                    reason="needs CPU 1")
def test_cpu_affinity_the_program_sets_is_set_for_real(work):
    """sched_setaffinity was answered from the recording only: the replayed program ran on
    whichever CPU, and printed another count half the time."""
    exe = build_c(work, "pinned", PINNED)
    trace, out = record(work, "pinned", str(exe))
    assert out == b"off the pinned cpu 0 times\n"
    for _ in range(3):
        r = replay(trace)
        assert r.returncode == 0 and r.stdout == out, r.stderr.decode()


GROUP_EXIT_RACE = r"""
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
static int *word;
static void *waiter(void *p) { syscall(SYS_futex, word, FUTEX_WAIT, 0, 0, 0, 0); return p; }
int main(void) {
    word = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (fork() == 0) {
        pthread_t t[20];
        for (int i = 0; i < 20; i++) pthread_create(&t[i], 0, waiter, 0);
        for (int i = 0; i < 40; i++) sched_yield();
        syscall(SYS_futex, word, FUTEX_WAKE, 21, 0, 0, 0);
        syscall(SYS_exit_group, 10);   /* races with the woken threads' own exits */
    }
    printf("waiting\n");
    fflush(stdout);
    _exit((int)syscall(SYS_futex, word, FUTEX_WAIT, 0, 0, 0, 0) != 0);
}
"""


def test_a_thread_exit_the_group_exit_overtakes_in_replay_is_not_required(work):
    """futex_exit_race's pattern: a woken thread exited on its own when recorded, and the
    replayed exit_group killed it first (same end, clear-tid wake included); replay used to
    say "ended before the recording" about that exit, one replay in three."""
    exe = build_c(work, "grouprace", GROUP_EXIT_RACE, "-pthread")
    trace, out = record(work, "grouprace", str(exe))
    for _ in range(5):
        r = replay(trace)
        assert r.returncode == 0 and r.stdout == out == b"waiting\n", r.stderr.decode()
