"""A private network namespace for a streams replay: loopback only.

dr makes the namespace from a helper thread (``unshare(CLONE_NEWNET)`` acts on
the calling thread only) and keeps a handle to it (an fd of
``/proc/thread-self/ns/net``). Inside it: ``lo`` up, plus any recorded peer or
dependency address added to ``lo`` as a /32 (/128) so the replayed program can
reach it and dr can serve it — no other interface exists, so nothing the
replayed program does can reach a real network. dr's own sockets for the
namespace are created by a thread that joined it with ``setns(2)``; a socket
keeps its namespace whichever thread uses it later.

A fresh namespace (:class:`NetNS`) needs CAP_SYS_ADMIN (root); raises
:class:`dr.errors.PermissionDenied` otherwise. Joining a replay sandbox's
namespace (:meth:`NetNS.of_process`) works unprivileged too: the sandbox's
network namespace belongs to its user namespace, which an unprivileged dr may
enter — but setns(2) into a user namespace refuses a multithreaded caller, so
dr then starts a single-threaded helper process (``python -m dr.replay.netns``)
that joins the user and network namespaces and hands back the sockets dr asks
for over a unix socket (SCM_RIGHTS; man 7 unix). Either way a socket keeps the
namespace it was made in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any, Callable, TypeVar

from dr.errors import NotSupported, PermissionDenied

__all__ = ["NetNS"]

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
T = TypeVar("T")


def _setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


#: Longest wait for the unprivileged helper to join the namespaces and answer.
HELPER_S = 20.0


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
                raise PermissionDenied("streams replay of an attach-mode trace needs root (CAP_SYS_ADMIN "
                                       "to make its private network namespace); run it with sudo")
            raise NotSupported(f"cannot make a network namespace for the replay: {err}")
        self.fd: int = box["fd"]
        self._lo: int = box["lo"]
        self.addresses: set[str] = set()
        self._helper: subprocess.Popen | None = None
        self._chan: socket.socket | None = None
        self._chan_lock = threading.Lock()

    @classmethod
    def of_process(cls, pid: int) -> "NetNS":
        """The network namespace process ``pid`` lives in (e.g. a replay sandbox's)."""
        self = cls.__new__(cls)
        self.fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.addresses = set()
        self._helper = None
        self._chan = None
        self._chan_lock = threading.Lock()
        try:
            self._lo = self.run(_lo_up)
        except OSError as e:
            if e.errno != 1:  # EPERM: not root in the namespace's owner; go through the helper
                self.close()
                raise NotSupported(f"cannot join the replay's network namespace: {e.strerror or e}") from None
            try:
                self._start_helper(pid)
                self._lo = int(self._ask({"op": "lo"})["lo"])
            except BaseException:
                self.close()
                raise
        return self

    # -- the unprivileged helper

    def _start_helper(self, pid: int) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._helper = subprocess.Popen(
                [sys.executable, "-m", "dr.replay.netns", str(pid), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, close_fds=True)
        except OSError as e:
            mine.close()
            raise NotSupported(f"cannot start dr's network namespace helper: {e.strerror or e}") from None
        finally:
            theirs.close()
        self._chan = mine
        mine.settimeout(HELPER_S)
        self._ask(None)  # its greeting: it joined the namespaces

    def _ask(self, req: dict | None) -> dict:
        """One request to the helper (None: read its greeting); the reply, fds in ``"fds"``."""
        assert self._chan is not None
        with self._chan_lock:
            try:
                if req is not None:
                    self._chan.send(json.dumps(req).encode())
                msg, fds, _flags, _addr = socket.recv_fds(self._chan, 4096, 1)
            except OSError as e:
                raise NotSupported(f"dr's network namespace helper stopped answering: {e.strerror or e}") from None
        if not msg:
            raise NotSupported("dr's network namespace helper exited before it joined the replay's namespaces")
        rep = json.loads(msg)
        if "errno" in rep:
            for fd in fds:
                os.close(fd)
            if rep.get("where") == "join":
                raise PermissionDenied(f"cannot join the replay sandbox's namespaces: {rep['error']}")
            raise OSError(int(rep["errno"]), rep["error"])
        rep["fds"] = fds
        return rep

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,  # noqa: A002
               proto: int = 0) -> socket.socket:
        """A new socket in the namespace (bind, listen, connect it from any thread).

        Raises OSError as socket(2) does.
        """
        if self._chan is None:
            return self.run(socket.socket, family, type, proto)
        rep = self._ask({"op": "socket", "family": int(family), "type": int(type), "proto": int(proto)})
        return socket.socket(fileno=rep["fds"][0])

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

        if self._chan is not None:
            self._ask({"op": "addr", "lo": self._lo, "address": str(ip)})
        else:
            self.run(_add_addr, self._lo, str(ip))
        self.addresses.add(str(ip))
        return True

    def preexec(self) -> None:
        """For ``Popen(preexec_fn=...)``: join the namespace; die with dr (PR_SET_PDEATHSIG)."""
        _setns(self.fd)
        _libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL

    def close(self) -> None:
        if self._chan is not None:
            self._chan.close()  # the helper reads EOF and exits
            self._chan = None
        if self._helper is not None:
            try:
                self._helper.wait(2)
            except subprocess.TimeoutExpired:
                self._helper.kill()
                self._helper.wait()
            self._helper = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "NetNS":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lo_up() -> int:
    """Bring ``lo`` up in the calling thread's network namespace; its ifindex."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=idx, state="up")
        return idx


def _add_addr(lo: int, address: str) -> None:
    """Add ``address`` to ``lo`` as a /32 (/128) in the calling thread's network namespace."""
    from pyroute2 import IPRoute
    ip = ipaddress.ip_address(address)
    with IPRoute() as ipr:
        ipr.addr("add", index=lo, address=str(ip), prefixlen=32 if ip.version == 4 else 128)


def _helper_main(pid: int, chan_fd: int) -> int:
    """``python -m dr.replay.netns PID FD``: join PID's user and network namespaces, then
    answer dr's requests on the SOCK_SEQPACKET socket FD until EOF.

    Requests and replies are JSON; a reply to ``{"op": "socket"}`` carries the
    new socket's fd (SCM_RIGHTS). Still single-threaded when it calls setns(2),
    which a user namespace requires (man 2 setns).
    """
    _libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL: never outlive dr
    chan = socket.socket(fileno=chan_fd)

    def reply(obj: dict, fds: tuple[int, ...] = ()) -> None:
        socket.send_fds(chan, [json.dumps(obj).encode()], list(fds)) if fds else chan.send(json.dumps(obj).encode())

    try:
        for ns, kind in (("user", CLONE_NEWUSER), ("net", CLONE_NEWNET)):
            fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, kind)
            finally:
                os.close(fd)
    except OSError as e:
        reply({"errno": e.errno or 1, "error": f"{e.strerror or e}", "where": "join"})
        return 1
    reply({"ok": True})
    while True:
        try:
            msg = chan.recv(4096)
        except OSError:
            return 0
        if not msg:
            return 0
        req = json.loads(msg)
        try:
            if req["op"] == "socket":
                sk = socket.socket(req["family"], req["type"], req["proto"])
                reply({"ok": True}, (sk.fileno(),))
                sk.close()
            elif req["op"] == "lo":
                reply({"ok": True, "lo": _lo_up()})
            elif req["op"] == "addr":
                _add_addr(int(req["lo"]), str(req["address"]))
                reply({"ok": True})
            else:
                reply({"errno": 22, "error": f"unknown request {req['op']!r}"})
        except OSError as e:
            reply({"errno": e.errno or 5, "error": f"{e.strerror or e}"})
        except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError and the like: one line back
            reply({"errno": getattr(e, "code", 0) or 5, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    sys.exit(_helper_main(int(sys.argv[1]), int(sys.argv[2])))
