"""A private network namespace for a streams replay: loopback only.

dr makes the namespace from a helper thread (``unshare(CLONE_NEWNET)`` acts on
the calling thread only) and keeps a handle to it (an fd of
``/proc/thread-self/ns/net``). Inside it: ``lo`` up, plus any recorded peer or
dependency address added to ``lo`` as a /32 (/128) so the replayed program can
reach it and dr can serve it — no other interface exists, so nothing the
replayed program does can reach a real network. dr's own sockets for the
namespace are created by a thread that joined it with ``setns(2)``; a socket
keeps its namespace whichever thread uses it later.

Needs CAP_SYS_ADMIN (root); raises :class:`dr.errors.PermissionDenied` otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
import threading
from typing import Any, Callable, TypeVar

from dr.errors import NotSupported, PermissionDenied

__all__ = ["NetNS"]

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
T = TypeVar("T")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class NetNS:
    """A fresh network namespace with loopback up. ``fd``: its nsfs handle.

    Use :meth:`run` to create sockets inside it, :meth:`preexec` (in
    ``subprocess.Popen(preexec_fn=...)``) to start a program inside it,
    :meth:`add_address` for extra local addresses, :meth:`close` to drop it.
    """

    def __init__(self) -> None:
        box: dict[str, Any] = {}

        def make() -> None:
            try:
                if _libc.unshare(CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    box["err"] = OSError(e, os.strerror(e))
                    return
                box["fd"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                from pyroute2 import IPRoute
                with IPRoute() as ipr:
                    lo = ipr.link_lookup(ifname="lo")[0]
                    ipr.link("set", index=lo, state="up")
                    box["lo"] = lo
            except BaseException as e:  # reported in the caller's thread
                box["err"] = e

        t = threading.Thread(target=make, name="dr-netns")
        t.start()
        t.join()
        err = box.get("err")
        if err is not None:
            if "fd" in box:
                os.close(box["fd"])
            if isinstance(err, PermissionError) or getattr(err, "errno", 0) == 1:
                raise PermissionDenied("a streams replay needs root (CAP_SYS_ADMIN) to make its "
                                       "private network namespace; run dr replay as root")
            raise NotSupported(f"cannot make a network namespace for the replay: {err}")
        self.fd: int = box["fd"]
        self._lo: int = box["lo"]
        self.addresses: set[str] = set()

    @classmethod
    def of_process(cls, pid: int) -> "NetNS":
        """The network namespace process ``pid`` lives in (e.g. a replay sandbox's)."""
        self = cls.__new__(cls)
        self.fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.addresses = set()

        def lo() -> int:
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=idx, state="up")
                return idx

        self._lo = self.run(lo)
        return self

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` in a thread that joined the namespace; its result or error."""
        box: dict[str, Any] = {}

        def inner() -> None:
            try:
                _setns(self.fd)
                box["r"] = fn(*args)
            except BaseException as e:
                box["e"] = e

        t = threading.Thread(target=inner, name="dr-netns-call")
        t.start()
        t.join()
        if "e" in box:
            raise box["e"]
        return box["r"]

    def add_address(self, host: str) -> bool:
        """Make ``host`` a local address of the namespace (on lo). False when not an IP."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        if ip.is_loopback or ip.is_unspecified or str(ip) in self.addresses:
            return True

        def add() -> None:
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                ipr.addr("add", index=self._lo, address=str(ip),
                         prefixlen=32 if ip.version == 4 else 128)

        self.run(add)
        self.addresses.add(str(ip))
        return True

    def preexec(self) -> None:
        """For ``Popen(preexec_fn=...)``: join the namespace; die with dr (PR_SET_PDEATHSIG)."""
        _setns(self.fd)
        _libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "NetNS":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
