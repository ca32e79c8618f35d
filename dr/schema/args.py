"""The argument constructors :mod:`dr.schema.syscalls` declares its table with: one per
kind of argument (an fd, a path, a struct the kernel fills, an iovec array, ...), each
fixing the kind, size rule and element size the generator turns into copy rules."""

from __future__ import annotations

from dr.schema.types import Arg, Class, Kind, Rule, Syscall

__all__ = ["int_", "uint", "hex_", "oct_", "fd", "ptr", "signal", "flags", "enum", "path", "str_", "argv", "out", "inb", "struct_out", "struct_in", "struct_io", "array_out", "array_ret", "array_in", "fdset", "iov_in", "iov_out", "msg_in", "msg_out", "mmsg_in", "mmsg_out", "sockaddr_in", "sockaddr_out", "S"]


def int_(name: str) -> Arg:
    return Arg(name, Kind.INT)


def uint(name: str) -> Arg:
    return Arg(name, Kind.UINT)


def hex_(name: str) -> Arg:
    return Arg(name, Kind.HEX)


def oct_(name: str) -> Arg:
    return Arg(name, Kind.UINT, ctype="octal")


def fd(name: str) -> Arg:
    return Arg(name, Kind.FD)


def ptr(name: str) -> Arg:
    return Arg(name, Kind.PTR)


def signal(name: str) -> Arg:
    return Arg(name, Kind.SIGNAL)


def flags(name: str, flagset: str) -> Arg:
    return Arg(name, Kind.FLAGS, ctype=flagset)


def enum(name: str, enumset: str) -> Arg:
    return Arg(name, Kind.ENUM, ctype=enumset)


def path(name: str) -> Arg:
    return Arg(name, Kind.PATH, Rule.NUL)


def str_(name: str) -> Arg:
    return Arg(name, Kind.STR, Rule.NUL)


def argv(name: str) -> Arg:
    return Arg(name, Kind.ARGV, Rule.NUL)


def out(name: str, rule: Rule, size: int = 0, ctype: str = "", elem: int = 0) -> Arg:
    """Bytes the kernel writes; ``size`` is the argument index for ARG/DEREF."""
    return Arg(name, Kind.BUF_OUT, rule, size, ctype, elem)


def inb(name: str, rule: Rule, size: int = 0) -> Arg:
    """Bytes the tracee hands in; RET means "as many as the call consumed"."""
    return Arg(name, Kind.BUF_IN, rule, size)


def struct_out(name: str, size: int, ctype: str) -> Arg:
    return Arg(name, Kind.BUF_OUT, Rule.CONST, size, ctype)


def struct_in(name: str, size: int, ctype: str) -> Arg:
    return Arg(name, Kind.BUF_IN, Rule.CONST, size, ctype)


def struct_io(name: str, size: int, ctype: str) -> Arg:
    """Value-result structure: copied at entry (Sub.ENTRY) and at exit."""
    return Arg(name, Kind.INOUT, Rule.CONST, size, ctype)


def array_out(name: str, cnt_arg: int, elem: int, ctype: str) -> Arg:
    """Value-result array whose element count is argument ``cnt_arg`` (poll)."""
    return Arg(name, Kind.INOUT, Rule.CNT, cnt_arg, ctype, elem)


def array_ret(name: str, elem: int, ctype: str) -> Arg:
    """Array the kernel fills with as many elements as the call returns (epoll_wait)."""
    return Arg(name, Kind.BUF_OUT, Rule.RET, 0, ctype, elem)


def array_in(name: str, cnt_arg: int, elem: int, ctype: str) -> Arg:
    """Array the tracee hands in, of as many elements as argument ``cnt_arg`` (process_vm_readv's
    remote iovecs: addresses, not data)."""
    return Arg(name, Kind.BUF_IN, Rule.CNT, cnt_arg, ctype, elem)


def fdset(name: str, n_arg: int) -> Arg:
    """select's fd_set: value-result bit set of as many bits as argument ``n_arg`` (any n, > 1024 too)."""
    return Arg(name, Kind.INOUT, Rule.BITS, n_arg, "fd_set")


def iov_in(name: str, cnt_arg: int) -> Arg:
    return Arg(name, Kind.IOV_IN, Rule.CNT, cnt_arg, "iovec", 16)


def iov_out(name: str, cnt_arg: int) -> Arg:
    return Arg(name, Kind.IOV_OUT, Rule.CNT, cnt_arg, "iovec", 16)


def msg_in(name: str) -> Arg:
    return Arg(name, Kind.MSG_IN, Rule.CONST, 56, "msghdr")


def msg_out(name: str) -> Arg:
    return Arg(name, Kind.MSG_OUT, Rule.CONST, 56, "msghdr")


def mmsg_in(name: str, cnt_arg: int) -> Arg:
    return Arg(name, Kind.MMSG_IN, Rule.CNT, cnt_arg, "mmsghdr", 64)


def mmsg_out(name: str, cnt_arg: int) -> Arg:
    return Arg(name, Kind.MMSG_OUT, Rule.CNT, cnt_arg, "mmsghdr", 64)


def sockaddr_in(name: str, len_arg: int) -> Arg:
    return Arg(name, Kind.SOCKADDR_IN, Rule.ARG, len_arg, "sockaddr")


def sockaddr_out(name: str, lenptr_arg: int) -> Arg:
    return Arg(name, Kind.SOCKADDR_OUT, Rule.DEREF, lenptr_arg, "sockaddr")


def S(name: str, nr: int, nr_aarch64: int | None, cls: Class, *args: Arg,
      ret: str = "int", note: str = "") -> Syscall:
    return Syscall(name, nr, nr_aarch64, cls, tuple(args), ret, note)
