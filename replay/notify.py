"""seccomp user notification primitives and tracee memory access.

The supervisor side of ``SECCOMP_RET_USER_NOTIF`` (seccomp_unotify(2)): receive a
notification, answer it with a value, an error or ``FLAG_CONTINUE``, check that
its id is still valid after every read of tracee memory, and inject fds with
``SECCOMP_IOCTL_NOTIF_ADDFD``. Independent of any replay policy: strict replay
(:mod:`dr.replay.strict`) and streams replay both build on it.

Layouts: include/uapi/linux/seccomp.h (struct seccomp_notif, seccomp_notif_resp,
seccomp_notif_addfd, seccomp_data; the ioctl numbers below are ``_IOWR('!', n,
struct)`` spelled out). Memory access goes through process_vm_readv(2) and
process_vm_writev(2), which honour the tracee's page protections (unlike
/proc/TID/mem, whose writes use FOLL_FORCE): a write outside the tracee's
writable mappings fails with EFAULT instead of landing in its code.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from typing import NamedTuple

from dr.errors import NotSupported, ReplayError

__all__ = [
    "Notif", "Listener", "MemoryFault", "read_mem", "write_mem", "read_cstr",
    "pidfd_open", "pidfd_getfd", "tgkill", "syscall", "USER_SPACE_END",
]

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# x86_64 syscall numbers used by the supervisor itself (arch/x86/entry/syscalls/syscall_64.tbl).
NR_TGKILL = 234
NR_RT_TGSIGQUEUEINFO = 297
NR_PROCESS_VM_READV = 310
NR_PROCESS_VM_WRITEV = 311
NR_SECCOMP = 317
NR_PIDFD_OPEN = 434
NR_PIDFD_GETFD = 438
NR_OPENAT2 = 437

# struct seccomp_notif { u64 id; u32 pid; u32 flags; struct seccomp_data data; }
# struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }
_NOTIF = struct.Struct("<QIIiIQ6Q")            # 80 bytes
_RESP = struct.Struct("<QqiI")                 # id, val, error, flags: 24 bytes
_ADDFD = struct.Struct("<QIIII")               # id, flags, srcfd, newfd, newfd_flags: 24 bytes
_U64 = struct.Struct("<Q")
_ZERO_NOTIF = bytes(_NOTIF.size)

IOC_NOTIF_RECV = 0xC0502100      # _IOWR('!', 0, struct seccomp_notif)
IOC_NOTIF_SEND = 0xC0182101      # _IOWR('!', 1, struct seccomp_notif_resp)
IOC_NOTIF_ID_VALID = 0x40082102  # _IOW('!', 2, __u64)
IOC_NOTIF_ADDFD = 0x40182103     # _IOW('!', 3, struct seccomp_notif_addfd)
IOC_NOTIF_SET_FLAGS = 0x40082104  # _IOW('!', 4, __u64)

FLAG_CONTINUE = 1                # SECCOMP_USER_NOTIF_FLAG_CONTINUE
ADDFD_FLAG_SETFD = 1             # SECCOMP_ADDFD_FLAG_SETFD
ADDFD_FLAG_SEND = 2              # SECCOMP_ADDFD_FLAG_SEND
FD_SYNC_WAKE_UP = 1              # SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6)

AUDIT_ARCH_X86_64 = 0xC000003E
#: Highest user-space address + 1 with 5-level paging; addresses at or above it
#: are never tracee memory, so they are refused before any system call.
USER_SPACE_END = 1 << 56


class MemoryFault(ReplayError):
    """Tracee memory could not be read or written (bad address, tracee gone)."""


def syscall(nr: int, *args: int) -> int:
    """Raw syscall(2) returning its result; raises OSError with errno on failure."""
    res = _syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    if res == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return res


class Notif(NamedTuple):
    """One seccomp notification: ``pid`` is the tid in the supervisor's pid namespace.

    A named tuple (not a dataclass): one is made per syscall on the hot path.
    """

    id: int
    pid: int
    nr: int
    arch: int
    ip: int
    args: tuple[int, int, int, int, int, int]


class Listener:
    """A seccomp notification fd held by the supervisor.

    Every method that answers returns False (or None) when the kernel says
    ENOENT: the tracee's syscall was interrupted by a signal or the tracee died,
    and the notification no longer exists. Any other failure raises ReplayError.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray(_NOTIF.size)
        self.sync_wakeup = False

    def enable_sync_wakeup(self) -> bool:
        """Ask for synchronous wake-ups (Linux >= 6.6); False when unavailable."""
        try:
            # The flags travel in the ioctl argument itself, not behind a pointer
            # (kernel/seccomp.c: seccomp_notify_set_flags).
            fcntl.ioctl(self.fd, IOC_NOTIF_SET_FLAGS, FD_SYNC_WAKE_UP)
        except OSError:
            return False
        self.sync_wakeup = True
        return True

    def recv(self) -> Notif | None:
        """Receive one notification (blocks); None when it vanished before we got it."""
        buf = self._buf
        buf[:] = _ZERO_NOTIF  # the kernel refuses a buffer that is not zeroed
        try:
            fcntl.ioctl(self.fd, IOC_NOTIF_RECV, buf, True)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINTR):
                return None
            raise ReplayError(f"seccomp NOTIF_RECV failed: {e.strerror}") from None
        v = _NOTIF.unpack(buf)
        return Notif(v[0], v[1], v[3], v[4], v[5], v[6:])  # type: ignore[arg-type]

    def id_valid(self, nid: int) -> bool:
        """True while notification ``nid`` is still pending (tracee alive, call not interrupted)."""
        try:
            fcntl.ioctl(self.fd, IOC_NOTIF_ID_VALID, _U64.pack(nid))
        except OSError:
            return False
        return True

    def send(self, nid: int, val: int = 0, error: int = 0, *, continue_: bool = False) -> bool:
        """Answer ``nid``: return ``val``, or fail with ``error`` (negative errno),
        or (``continue_``) let the kernel run the syscall. False on ENOENT."""
        resp = _RESP.pack(nid, val, error, FLAG_CONTINUE if continue_ else 0)
        try:
            fcntl.ioctl(self.fd, IOC_NOTIF_SEND, resp)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise ReplayError(f"seccomp NOTIF_SEND failed: {e.strerror}") from None
        return True

    def reply(self, nid: int, ret: int) -> bool:
        """Answer with a recorded return value: -4095..-1 is an error, else a value."""
        if -4095 <= ret < 0:
            return self.send(nid, 0, ret)
        return self.send(nid, ret, 0)

    def addfd(self, nid: int, srcfd: int, newfd: int | None = None, *, cloexec: bool = False,
              send: bool = False) -> int | None:
        """Install the supervisor's ``srcfd`` in the tracee (at ``newfd`` when given).

        With ``send`` the syscall is answered atomically with the new fd number.
        Returns the tracee's fd number, or None on ENOENT (call interrupted).
        """
        flags = (ADDFD_FLAG_SETFD if newfd is not None else 0) | (ADDFD_FLAG_SEND if send else 0)
        arg = _ADDFD.pack(nid, flags, srcfd, newfd or 0, os.O_CLOEXEC if cloexec else 0)
        try:
            return _ioctl_ret(self.fd, IOC_NOTIF_ADDFD, arg)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise ReplayError(f"seccomp NOTIF_ADDFD of fd {newfd} failed: {e.strerror}") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_ioctl = _libc.ioctl
_ioctl.restype = ctypes.c_int


def _ioctl_ret(fd: int, req: int, arg: bytes) -> int:
    # fcntl.ioctl drops the ioctl's return value; ADDFD returns the new fd in it.
    buf = ctypes.create_string_buffer(arg, len(arg))
    res = _ioctl(fd, ctypes.c_ulong(req), buf)
    if res < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return res


# ----------------------------------------------------------------- tracee memory

class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_PAGE = 4096


def _check_range(addr: int, n: int) -> None:
    if addr <= 0 or n < 0 or addr + n > USER_SPACE_END:
        raise MemoryFault(f"address 0x{addr:x} (+{n}) is outside user space")


class _IoVecOut(ctypes.Structure):
    # A c_char_p base takes a bytes object as is (no copy, no cast): write_mem's source.
    _fields_ = [("base", ctypes.c_char_p), ("len", ctypes.c_size_t)]


# No argtypes: every argument below is a ctypes object or a small int, and ctypes'
# per-call conversion through argtypes costs more than the system call itself
# (about 1.5 us of the supervisor's per-syscall budget, see bench/replay.py).
_pvr = _libc.process_vm_readv
_pvw = _libc.process_vm_writev
_pvr.restype = _pvw.restype = ctypes.c_ssize_t
# iovecs reused by every call: the supervisor is single-threaded.
_READ_BUF = 1 << 16
_rbuf = ctypes.create_string_buffer(_READ_BUF)
_rbuf_addr = ctypes.addressof(_rbuf)
_local = _IoVec(_rbuf_addr, 0)
_local_out = _IoVecOut()
_remote = _IoVec()
_plocal = ctypes.c_void_p(ctypes.addressof(_local))
_plocal_out = ctypes.c_void_p(ctypes.addressof(_local_out))
_premote = ctypes.c_void_p(ctypes.addressof(_remote))
_string_at = ctypes.string_at


def read_mem(pid: int, addr: int, n: int) -> bytes:
    """Read ``n`` bytes at ``addr`` of task ``pid``; MemoryFault when any byte is unmapped."""
    if n <= 0 or addr <= 0 or addr + n > USER_SPACE_END:
        if n == 0:
            return b""
        _check_range(addr, n)
    if n <= _READ_BUF:
        local, base = _local, _rbuf_addr
        local.len = n
    else:
        buf = ctypes.create_string_buffer(n)
        base = ctypes.addressof(buf)
        local = _IoVec(base, n)
    remote = _remote
    remote.base = addr
    remote.len = n
    res = _pvr(pid, _plocal if local is _local else ctypes.byref(local), 1, _premote, 1, 0)
    if res != n:
        e = ctypes.get_errno() if res < 0 else errno.EFAULT
        raise MemoryFault(f"cannot read {n} bytes at 0x{addr:x} of tid {pid}: {os.strerror(e)}")
    return _string_at(base, n)


def write_mem(pid: int, addr: int, data: bytes) -> None:
    """Write ``data`` at ``addr`` of task ``pid``; MemoryFault when not all of it is writable.

    The caller caps ``len(data)`` to the tracee's own buffer argument; the kernel
    refuses addresses outside writable mappings (EFAULT).
    """
    n = len(data)
    if n == 0:
        return
    if addr <= 0 or addr + n > USER_SPACE_END:
        _check_range(addr, n)
    local = _local_out
    local.base = data if type(data) is bytes else bytes(data)
    local.len = n
    remote = _remote
    remote.base = addr
    remote.len = n
    res = _pvw(pid, _plocal_out, 1, _premote, 1, 0)
    local.base = None  # drop the reference to data
    if res != n:
        e = ctypes.get_errno() if res < 0 else errno.EFAULT
        raise MemoryFault(f"cannot write {n} bytes at 0x{addr:x} of tid {pid}: {os.strerror(e)}")


def read_cstr(pid: int, addr: int, maxlen: int = 4096) -> bytes:
    """Read a NUL-terminated string (without its NUL), page by page, at most ``maxlen`` bytes."""
    out = bytearray()
    while len(out) < maxlen:
        chunk = min(_PAGE - (addr % _PAGE), maxlen - len(out))
        data = read_mem(pid, addr, chunk)
        z = data.find(b"\0")
        if z >= 0:
            out += data[:z]
            return bytes(out)
        out += data
        addr += chunk
    return bytes(out)


# ----------------------------------------------------------------- process handles

def pidfd_open(pid: int) -> int:
    """A pidfd for ``pid`` (pidfd_open(2)); OSError when it does not exist."""
    return os.pidfd_open(pid)


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """Duplicate fd ``targetfd`` of the process behind ``pidfd`` into the supervisor."""
    return syscall(NR_PIDFD_GETFD, pidfd, targetfd, 0)


def tgkill(tgid: int, tid: int, sig: int) -> None:
    """Send ``sig`` to thread ``tid`` of ``tgid`` (tgkill(2)); ids in the supervisor's pid namespace."""
    syscall(NR_TGKILL, tgid, tid, sig)


def tgsigqueueinfo(tgid: int, tid: int, sig: int, info: bytes) -> None:
    """rt_tgsigqueueinfo(2): send ``sig`` with a recorded siginfo (128 bytes) the
    handler sees as it saw it (si_value of sigqueue); raises OSError."""
    buf = ctypes.create_string_buffer(bytes(info[:128]).ljust(128, b"\0"), 128)
    syscall(NR_RT_TGSIGQUEUEINFO, tgid, tid, sig, ctypes.addressof(buf))


def check_support() -> None:
    """Raise NotSupported when the kernel lacks seccomp user notification."""
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            acts = f.read().split()
    except OSError:
        raise NotSupported("this kernel has no seccomp filters (CONFIG_SECCOMP_FILTER); "
                           "replay needs Linux >= 5.9") from None
    if "user_notif" not in acts:
        raise NotSupported("this kernel lacks seccomp user notification (SECCOMP_RET_USER_NOTIF); "
                           "replay needs Linux >= 5.9")
