"""The replay sandbox's seccomp filter, a classic BPF program (:func:`build_filter`).

Hand-made and installed with seccomp(2) by :mod:`dr.replay.sandbox`, not
libseccomp: Debian 12's libseccomp 2.5.4 cannot set
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, and the program is twenty lines we can
read: the schema's PASSTHROUGH syscalls are allowed, every other syscall
(32-bit and x32 calls and unknown numbers too) is notified.
"""

from __future__ import annotations

import struct
from typing import Iterable

from dr.errors import ReplayError
from dr.replay import notify

__all__ = ["build_filter", "SECCOMP_FLAGS", "SECCOMP_SET_MODE_FILTER", "SECCOMP_FILTER_FLAG_NEW_LISTENER",
           "INSN_SIZE"]

# seccomp(2): include/uapi/linux/seccomp.h
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
X32_SYSCALL_BIT = 0x40000000

# Classic BPF opcodes: include/uapi/linux/filter.h, bpf_common.h.
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_RET_K = 0x06
_INSN = struct.Struct("<HBBI")
INSN_SIZE = _INSN.size

SECCOMP_FLAGS = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV


def build_filter(passthrough: Iterable[int]) -> bytes:
    """The classic BPF program (struct sock_filter[]) of the replay filter.

    ``passthrough`` x86_64 numbers are SECCOMP_RET_ALLOW; everything else
    (other ``seccomp_data.arch`` values and x32 numbers included) is
    SECCOMP_RET_USER_NOTIF.
    """
    nrs = sorted(set(int(n) for n in passthrough))
    if len(nrs) > 250:
        raise ReplayError("too many passthrough syscalls for one BPF jump table")
    # A 32-bit call (int 0x80: another seccomp_data.arch), an x32 number or one the
    # kernel does not know (syscall(-1)) is notified, never killed: the program ran
    # natively, so the supervisor answers what the recording shows (ENOSYS mostly).
    prog = [
        (BPF_LD_W_ABS, 0, 0, 4),                          # A = seccomp_data.arch
        (BPF_JEQ_K, 1, 0, notify.AUDIT_ARCH_X86_64),
        (BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
        (BPF_LD_W_ABS, 0, 0, 0),                          # A = seccomp_data.nr
        (BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        (BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
    ]
    n = len(nrs)
    for j, nr in enumerate(nrs):
        prog.append((BPF_JEQ_K, n - j, 0, nr))
    prog.append((BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF))
    prog.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return b"".join(_INSN.pack(*i) for i in prog)
