"""The syscall schema's own rules, and the generated files being up to date."""

from __future__ import annotations

import subprocess

import pytest

from dr import schema
from dr.schema import Class, Kind, Rule, gen, layout
from dr.schema.syscalls import SYSCALLS

from conftest import ROOT

# Issue 2's list: these must be declared with full argument and buffer rules.
COVERED = """read write pread64 pwrite64 readv writev preadv pwritev recvfrom sendto recvmsg sendmsg
recvmmsg sendmmsg getrandom clock_gettime gettimeofday time clock_nanosleep nanosleep open openat
close newfstatat fstat statx lseek getdents64 readlink readlinkat getcwd uname sysinfo getpid gettid
getppid socket socketpair connect accept accept4 bind listen getsockname getpeername getsockopt
setsockopt shutdown pipe pipe2 dup dup2 dup3 fcntl ioctl poll ppoll select pselect6 epoll_create1
epoll_ctl epoll_wait epoll_pwait eventfd2 timerfd_create timerfd_settime signalfd4 wait4 clone
clone3 fork vfork execve exit exit_group kill tgkill rt_sigaction rt_sigprocmask mmap munmap
mprotect brk futex sendfile splice""".split()
#: Pointer arguments replay never needs the bytes of (the kernel writes tids there, or
#: the pointer is a futex word / optional argument the supervisor reads itself).
OPAQUE_OK = {("clone", "parent_tidptr"), ("clone", "child_tidptr"), ("futex", "utime"),
             ("pselect6", "sig")}
BUFFER_KINDS = set(Kind) - {Kind.INT, Kind.UINT, Kind.HEX, Kind.FD, Kind.FLAGS, Kind.ENUM,
                            Kind.PTR, Kind.SIGNAL}


def test_generated_files_are_up_to_date():
    for rel, text in gen.outputs().items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: run python -m dr.schema.gen"


def test_names_and_numbers_unique():
    names = [s.name for s in SYSCALLS]
    assert len(names) == len(set(names))
    nrs = [s.nr for s in SYSCALLS]
    assert len(nrs) == len(set(nrs))
    a64 = [s.nr_aarch64 for s in SYSCALLS if s.nr_aarch64 is not None]
    assert len(a64) == len(set(a64))
    assert len(set(layout.LOSS_CAUSES.values())) == len(layout.LOSS_CAUSES)
    assert len({r.kind for r in layout.RECORDS}) == len(layout.RECORDS)


@pytest.mark.parametrize("name", COVERED)
def test_covered_syscall_declared_with_rules(name):
    sc = schema.by_name(name)
    assert sc.cls != Class.UNSUPPORTED, name
    for i, a in enumerate(sc.args):
        if a.kind == Kind.PTR:
            assert (name, a.name) in OPAQUE_OK, f"{name}: argument {a.name} has no kind"
        if a.kind in BUFFER_KINDS:
            assert a.rule != Rule.NONE, f"{name}: buffer {a.name} has no size rule"
            if a.rule in (Rule.ARG, Rule.DEREF, Rule.CNT, Rule.MIN_RET_ARG):
                assert 0 <= a.size < len(sc.args) and a.size != i, f"{name}: {a.name} size arg"
            if a.rule == Rule.CONST:
                assert a.size > 0, f"{name}: {a.name} constant size"
        if a.kind in (Kind.FLAGS, Kind.ENUM):
            table = schema.FLAGS if a.kind == Kind.FLAGS else schema.ENUMS
            assert a.ctype in table, f"{name}: {a.name} names unknown set {a.ctype!r}"


def test_ioctl_requests_named():
    for req in ("TCGETS", "FIONREAD", "FIONBIO"):
        assert req in schema.ENUMS["ioctl"].values()


def test_io_uring_setup_is_unsupported_and_named():
    sc = schema.by_name("io_uring_setup")
    assert sc.cls == Class.UNSUPPORTED and sc.nr == 425
    assert schema.name_of(425) == "io_uring_setup"


def test_rules_point_at_declared_syscalls_and_args():
    for nr, _i, arg, _kind, rule, param, _elem, _size in schema.RULES:
        sc = schema.by_nr(nr)
        assert sc is not None and arg < len(sc.args), (nr, arg)
        if Rule(rule) in (Rule.ARG, Rule.DEREF, Rule.CNT, Rule.MIN_RET_ARG):
            assert param < len(sc.args), (sc.name, arg)


C_PROG = r"""
#include <stdio.h>
#include <stddef.h>
typedef unsigned char u8; typedef unsigned short u16; typedef unsigned int u32;
typedef int s32; typedef unsigned long long u64; typedef long long s64;
#include "dr_schema.h"
int main(void) {
%s
    return 0;
}
"""


def test_record_layouts_match_c_struct_sizes_and_offsets(tmp_path):
    lines, want = [], []
    for rec in layout.RECORDS:
        lines.append(f'    printf("%zu\\n", sizeof(struct dr_{rec.name}));')
        want.append(schema.record(rec.name).size)
        off = 0
        for name, ctype, count in rec.fields:
            lines.append(f'    printf("%zu\\n", offsetof(struct dr_{rec.name}, {name}));')
            want.append(off)
            off += layout.CTYPES[ctype][1] * count
    src = tmp_path / "sizes.c"
    src.write_text(C_PROG % "\n".join(lines))
    exe = tmp_path / "sizes"
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(ROOT / "bpf"), "-o", str(exe), str(src)],
                   check=True, capture_output=True, timeout=60)
    got = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True,
                                          check=True).stdout.split()]
    assert got == want
    # Natural alignment: every field sits at a multiple of its own size, so the
    # packed C struct and an unpacked one agree.
    for rec in layout.RECORDS:
        off = 0
        for name, ctype, count in rec.fields:
            assert off % layout.CTYPES[ctype][1] == 0, (rec.name, name)
            off += layout.CTYPES[ctype][1] * count
        assert off % 8 == 0, rec.name


def test_irregular_calls_are_the_registered_replay_handlers():
    """Adding an irregular syscall is one schema line plus one named handler."""
    from dr.replay.strict.handlers import HANDLERS
    irregular = {s.name for s in schema.all_syscalls() if s.cls == Class.IRREGULAR}
    assert irregular == set(HANDLERS)


def test_every_handler_is_the_one_replay_dispatches_to():
    """A handler registered after the dispatch table was built was never called (kill's)."""
    from dr.replay.strict.handlers import HANDLERS, handler_for
    for name, f in HANDLERS.items():
        assert handler_for(schema.by_name(name).nr) is f, name


def test_behaviour_is_declared_in_the_schema():
    from dr.schema import Beh, FdEffect, Order
    assert schema.by_name("clock_gettime").order == Order.TIME
    assert schema.by_name("clone").order == Order.LIFECYCLE
    assert schema.by_name("write").order == Order.SHARED
    for name in ("open", "openat", "socket", "accept4", "eventfd2", "memfd_create", "pidfd_open"):
        assert schema.by_name(name).fd_effect == FdEffect.NEW, name
    assert schema.by_name("pipe2").fd_effect == FdEffect.PAIR
    assert schema.by_name("fcntl").fd_effect == FdEffect.DUP_CMD
    assert schema.by_name("write").has(Beh.COUNTS_IN | Beh.FILE_IO | Beh.STREAM)
    assert schema.by_name("sendfile").beh.moves == (1, 0)


@pytest.mark.parametrize("name,args,payload,want", [
    ("openat", (0, 0, 0o2000000, 0), None, True),
    ("openat", (0, 0, 0o1, 0), None, False),
    ("openat2", (0, 0, 0, 24), (0o2000000).to_bytes(8, "little") + bytes(16), True),
    ("socket", (2, 1 | 0o2000000, 0), None, True),
    ("memfd_create", (0, 1), None, True),
    ("epoll_create1", (0,), None, False),
    ("creat", (0, 0o644), None, False),
    ("pidfd_getfd", (3, 4, 0), None, True),
    ("dup3", (3, 4, 0o2000000), None, True),
])
def test_cloexec_flag_located_by_the_schema(name, args, payload, want):
    assert schema.cloexec_of(schema.by_name(name), args, payload) is want
