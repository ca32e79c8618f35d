"""``dr export pcap``: the socket payloads of a trace as packets Wireshark follows.

Each TCP socket of the trace (IPv4 or IPv6) becomes one TCP stream between
its recorded endpoints: a handshake (SYN, SYN-ACK, ACK) before the first
byte, one segment per send/recv (split at :data:`SEGMENT` bytes), sequence
and acknowledgement numbers consistent in both directions, and FIN/ACK where
the trace shows the stream end (close or shutdown(SHUT_WR) by the tracee; a
recv returning 0 for the peer). UDP sockets give one datagram per send/recv
between the socket's address and the datagram's. Packets are raw IP
(LINKTYPE_RAW, 101) with ns timestamps: the syscall's CLOCK_MONOTONIC time
plus the metadata's realtime offset (a send at its entry, a recv at its exit).
Packets are built with scapy.

Endpoints come from what the trace shows (connect, accept, bind,
getsockname, getpeername, sendto/recvfrom addresses) and else from the
metadata's fd snapshot. When both ends of a loopback connection are in the
trace, a client that never called getsockname gets the port its server's
accept recorded, so the connection is one stream. An endpoint the trace never
names otherwise (a client's ephemeral port) is synthesised and listed in the notes.
Unix-domain sockets have no IP endpoints: they are skipped with a note.
A connection seen from both ends (both processes traced) is exported once.
Bytes the trace lacks (payload truncated at snaplen, sendfile/splice) leave a
gap in the sequence space, so Wireshark shows them as not captured.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from dr.errors import OutputError
from dr.formats.fdmap import (AF_INET6, AF_UNIX, SOCK_DGRAM, FdMap, OpenFile, SockAddr,
                              transfers)
from dr.formats.stats import pair_loopback_ends
from dr.formats.trace import Event, ProcEvent, TraceReader

__all__ = ["export_pcap", "PcapResult", "StreamInfo", "realtime_offset_ns", "SEGMENT"]

#: Largest TCP payload per packet: an IP packet holds at most 65535 bytes.
SEGMENT = 65000
#: LINKTYPE_RAW: packets begin with the IPv4 or IPv6 header (tcpdump.org/linktypes.html).
LINKTYPE_RAW = 101


def realtime_offset_ns(meta: dict[str, Any]) -> int:
    """ns to add to CLOCK_MONOTONIC for CLOCK_REALTIME, from the trace metadata (0 if absent)."""
    for key in ("clock_offsets", "clocks", "clock", "offsets"):
        v = meta.get(key)
        if isinstance(v, dict):
            for k in ("realtime_ns", "realtime", "REALTIME"):
                if isinstance(v.get(k), int):
                    return v[k]
    for k in ("realtime_offset_ns", "realtime_ns"):
        if isinstance(meta.get(k), int):
            return meta[k]
    return 0


@dataclass(slots=True)
class StreamInfo:
    """One exported stream: ``proto`` TCP/UDP, endpoints as text, bytes each way."""

    proto: str
    client: str
    server: str
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    missing_bytes: int = 0
    packets: int = 0
    synthesized: bool = False
    first_ns: int = 0


@dataclass(slots=True)
class PcapResult:
    """What :func:`export_pcap` wrote: packets, streams (in tshark's stream order), notes."""

    path: str
    packets: int = 0
    streams: list[StreamInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    truncated: bool = False


@dataclass(slots=True)
class _Op:
    ts: int
    kind: str            # "out", "in", "eof", "fin", "open"
    data: bytes | None = None
    nbytes: int = 0
    addr: SockAddr | None = None
    messages: tuple[int, ...] = ()


def _collect(reader: TraceReader) -> tuple[FdMap, dict[int, list[_Op]]]:
    fdm = FdMap(reader.meta)
    ops: dict[int, list[_Op]] = {}
    for rec in reader.stream():
        if rec.__class__ is Event:
            ev: Event = rec  # type: ignore[assignment]
            name = ev.name
            if name in ("connect", "accept", "accept4") and (ev.ret >= 0 or ev.ret == -115):
                fdm.apply(ev)
                fd = ev.args[0] & 0xFFFFFFFF if name == "connect" else ev.ret
                f = fdm.lookup(ev.tgid, fd)
                if f is not None:
                    t_open = ev.ts_enter if name == "connect" else ev.ts_exit
                    ops.setdefault(f.id, []).append(_Op(t_open or ev.ts_exit, "open"))
                continue
            for t in transfers(ev):
                f = fdm.get(ev.tgid, t.fd)
                if f.kind not in ("socket", "unknown"):
                    continue
                ts = (ev.ts_enter or ev.ts_exit) if t.direction == "out" else ev.ts_exit
                ops.setdefault(f.id, []).append(
                    _Op(ts, t.direction, t.data, t.nbytes, t.addr, t.messages))
            # A receive returning 0 is the peer's FIN (unless it asked for 0 bytes).
            if ev.ret == 0 and (name in ("recvmsg", "readv") or (
                    name in ("read", "recvfrom") and ev.args[2] & 0xFFFFFFFF)):
                f = fdm.lookup(ev.tgid, ev.args[0] & 0xFFFFFFFF)
                if f is not None and f.is_socket:
                    ops.setdefault(f.id, []).append(_Op(ev.ts_exit, "eof"))
            if name == "shutdown" and ev.ret == 0 and (ev.args[1] & 0xFFFFFFFF) in (1, 2):
                f = fdm.lookup(ev.tgid, ev.args[0] & 0xFFFFFFFF)
                if f is not None:
                    ops.setdefault(f.id, []).append(_Op(ev.ts_exit, "fin"))
            if name in ("close", "dup2", "dup3"):
                # The stream ends when the last fd of its socket goes away.
                f = fdm.lookup(ev.tgid, ev.args[1 if name != "close" else 0] & 0xFFFFFFFF)
                fdm.apply(ev)
                if f is not None and f.refs <= 0 and f.id in ops:
                    ops[f.id].append(_Op(ev.ts_exit, "fin"))
                continue
            if name in ("close_range", "execve"):
                before = {f.id: f for t in fdm.tables.values() for f in t.values()}
                fdm.apply(ev)
                for fid, f in before.items():
                    if f.refs <= 0 and fid in ops:
                        ops[fid].append(_Op(ev.ts_exit, "fin"))
                continue
            fdm.apply(ev)
        elif rec.__class__ is ProcEvent:
            fdm.apply(rec)
    return fdm, ops


class _Builder:
    """Makes scapy packets with ns timestamps and writes them in time order."""

    def __init__(self) -> None:
        from scapy.layers.inet import IP, TCP, UDP
        from scapy.layers.inet6 import IPv6
        from scapy.packet import Raw
        self.IP, self.IPv6, self.TCP, self.UDP, self.Raw = IP, IPv6, TCP, UDP, Raw
        self.pkts: list[tuple[int, int, Any]] = []  # (ts, order, packet)

    def ip(self, src: SockAddr, dst: SockAddr) -> Any:
        if src.family == AF_INET6 or dst.family == AF_INET6:
            return self.IPv6(src=_v6(src.host), dst=_v6(dst.host))
        return self.IP(src=src.host, dst=dst.host)

    def add(self, ts: int, pkt: Any) -> None:
        self.pkts.append((ts, len(self.pkts), pkt))

    def tcp(self, ts: int, src: SockAddr, dst: SockAddr, flags: str, seq: int, ack: int,
            data: bytes = b"") -> None:
        p = self.ip(src, dst) / self.TCP(sport=src.port, dport=dst.port, flags=flags,
                                         seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, window=65535)
        if data:
            p = p / self.Raw(load=data)
        self.add(ts, p)

    def udp(self, ts: int, src: SockAddr, dst: SockAddr, data: bytes) -> None:
        self.add(ts, self.ip(src, dst) / self.UDP(sport=src.port, dport=dst.port) / self.Raw(load=data))

    def write(self, path: str, offset_ns: int) -> int:
        from scapy.utils import PcapWriter
        self.pkts.sort(key=lambda x: (x[0], x[1]))
        try:
            w = PcapWriter(path, linktype=LINKTYPE_RAW, nano=True, sync=False, snaplen=262144)
            try:
                w.write_header(None)
                for ts, _o, p in self.pkts:
                    # pcap holds u32 seconds: clamp the odd times of a damaged trace.
                    t = min(max(ts + offset_ns, 0), 0xFFFFFFFF * 1_000_000_000)
                    raw = bytes(p)
                    # Bytes, not the Packet: the linktype is fixed (raw IP) for v4 and v6 alike.
                    w.write_packet(raw, sec=t // 1_000_000_000, usec=t % 1_000_000_000,
                                   caplen=len(raw), wirelen=len(raw))
            finally:
                w.close()
        except BrokenPipeError:
            raise  # a reader of `-o /dev/stdout` went away: the caller's to judge (the CLI: success)
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        return len(self.pkts)


def _v6(host: str) -> str:
    ip = ipaddress.ip_address(host)
    return str(ip) if ip.version == 6 else f"::ffff:{ip}"


def _fill_local(f: OpenFile, peer: SockAddr, notes: list[str], what: str) -> tuple[SockAddr, bool]:
    """The socket's local address, synthesised when the trace never names it."""
    loc = f.local
    if loc is not None and loc.is_inet and not loc.unspecified and loc.port:
        return loc, False
    fam = peer.family
    if loc is not None and loc.is_inet and not loc.unspecified:
        host = loc.host
    else:
        try:
            lb = ipaddress.ip_address(peer.host).is_loopback or peer.host.startswith("::ffff:127.")
        except ValueError:
            lb = False
        if fam == AF_INET6:
            host = peer.host if lb else "::"
        else:
            host = "127.0.0.1" if lb else "0.0.0.0"
    port = loc.port if loc is not None and loc.port else 49152 + f.id % 16384
    a = SockAddr(fam, host, port)
    notes.append(f"{what}: local address not (fully) in the trace (no getsockname); using {a}")
    return a, True


def export_pcap(reader: TraceReader, path: str | os.PathLike) -> PcapResult:
    """Write the socket traffic of ``reader`` to the pcap file ``path``.

    Raises :class:`dr.errors.OutputError` when ``path`` cannot be written and
    TraceError for a corrupt trace. Returns what was exported and the notes
    (skipped unix sockets, synthesised endpoints, missing bytes).
    """
    res = PcapResult(os.fspath(path), truncated=reader.truncated)
    fdm, ops = _collect(reader)
    b = _Builder()
    files = {f.id: f for f in fdm.files}
    pair_loopback_ends(files.values(), lambda f: min(
        (o.ts for o in ops.get(f.id, ()) if o.kind == "open"), default=0))
    seen: set[tuple] = set()
    unix_socks = unix_bytes = 0
    for fid in sorted(ops):
        f = files[fid]
        lst = ops[fid]
        moved = sum(o.nbytes for o in lst if o.kind in ("in", "out"))
        if f.family == AF_UNIX or (f.local and f.local.family == AF_UNIX) or (
                f.peer and f.peer.family == AF_UNIX):
            if moved:
                unix_socks += 1
                unix_bytes += moved
            continue
        if not moved:
            continue
        if f.sock_type == SOCK_DGRAM:
            _udp(b, f, lst, res)
            continue
        peer = f.peer
        if peer is None or not peer.is_inet:
            what = "socket" if f.is_socket else "fd (opened before the trace, type unknown)"
            res.notes.append(f"{what} {_fds(f)}: {moved} bytes skipped, its peer address is not in the trace")
            continue
        local, synth = _fill_local(f, peer, res.notes, f"socket {_fds(f)}")
        key = (local.host, local.port, peer.host, peer.port)
        if (peer.host, peer.port, local.host, local.port) in seen or key in seen:
            res.notes.append(f"connection {local} <-> {peer} is in the trace from both ends; exported once")
            continue
        seen.add(key)
        res.streams.append(_tcp(b, f, local, peer, lst, synth))
    if unix_socks:
        res.notes.append(f"{unix_socks} unix-domain socket(s) with {unix_bytes} bytes skipped: "
                         "pcap has no IP endpoints for them")
    # tshark numbers streams in order of their first packet: list them the same way.
    res.streams.sort(key=lambda s: (s.proto != "TCP", s.first_ns))
    missing = sum(s.missing_bytes for s in res.streams)
    if missing:
        res.notes.append(f"{missing} bytes are not in the trace (snaplen or sendfile); "
                         "they show as gaps in the sequence space")
    res.packets = b.write(res.path, realtime_offset_ns(reader.meta))
    return res


def _fds(f: OpenFile) -> str:
    return ",".join(f"{tg}:{fd}" for tg, fd in sorted(f.fds)) or f"#{f.id}"


def _tcp(b: _Builder, f: OpenFile, local: SockAddr, peer: SockAddr, ops: list[_Op],
         synth: bool) -> StreamInfo:
    # The client sends the SYN: the peer for an accepted socket, else the tracee
    # (for a socket from the fd snapshot, the side with the higher port).
    client_is_local = not f.accepted and not (f.origin == "meta" and local.port < peer.port)
    cli, srv = (local, peer) if client_is_local else (peer, local)
    info = StreamInfo("TCP", str(cli), str(srv), synthesized=synth)
    n0 = len(b.pkts)
    # Initial sequence numbers: fixed per stream, so exports are reproducible.
    seq = {True: 1000 + f.id * 7919 % 100000, False: 5000 + f.id * 104729 % 100000}  # key: from local?
    t0 = min(o.ts for o in ops)
    start = min((o.ts for o in ops if o.kind == "open"), default=t0)
    t = min(start, t0)
    info.first_ns = t
    a_src, a_dst = (local, peer) if client_is_local else (peer, local)
    s_cli, s_srv = (seq[True], seq[False]) if client_is_local else (seq[False], seq[True])
    b.tcp(t, a_src, a_dst, "S", s_cli, 0)
    b.tcp(t, a_dst, a_src, "SA", s_srv, s_cli + 1)
    b.tcp(t, a_src, a_dst, "A", s_cli + 1, s_srv + 1)
    seq[True] += 1
    seq[False] += 1
    fin = {True: False, False: False}
    last = t
    for o in sorted(ops, key=lambda o: o.ts):  # stable: capture order among equal times
        ts = max(o.ts, last)
        last = ts
        if o.kind in ("in", "out"):
            out = o.kind == "out"
            if fin[out]:
                continue
            src, dst = (local, peer) if out else (peer, local)
            data = o.data[:o.nbytes] if o.data is not None else b""
            for i in range(0, len(data), SEGMENT):
                part = data[i:i + SEGMENT]
                b.tcp(ts, src, dst, "PA", seq[out], seq[not out], part)
                seq[out] += len(part)
            gap = o.nbytes - len(data)
            seq[out] += gap
            info.missing_bytes += gap
            if out == client_is_local:
                info.bytes_to_server += o.nbytes
            else:
                info.bytes_to_client += o.nbytes
        elif o.kind in ("fin", "eof"):
            out = o.kind == "fin"
            if fin[out]:
                continue
            src, dst = (local, peer) if out else (peer, local)
            b.tcp(ts, src, dst, "FA", seq[out], seq[not out])
            seq[out] += 1
            fin[out] = True
            b.tcp(ts, dst, src, "A", seq[not out], seq[out])
    info.packets = len(b.pkts) - n0
    return info


def _udp(b: _Builder, f: OpenFile, ops: list[_Op], res: PcapResult) -> None:
    n0 = len(b.pkts)
    streams: dict[tuple, StreamInfo] = {}
    for o in ops:
        if o.kind not in ("in", "out"):
            continue
        other = o.addr if o.addr is not None and o.addr.is_inet else f.peer
        if other is None or not other.is_inet:
            res.notes.append(f"UDP socket {_fds(f)}: a datagram of {o.nbytes} bytes without an address skipped")
            continue
        local = f.local
        if local is None or local.unspecified or not local.port:
            local, _ = _fill_local(f, other, [], "")
            f.local = local
        data = o.data or b""
        lens = o.messages or (o.nbytes,)
        pos = 0
        for n in lens:
            part = data[pos:pos + n][:65507]
            pos += n
            if o.kind == "out":
                b.udp(o.ts, local, other, part)
            else:
                b.udp(o.ts, other, local, part)
        key = (str(local), str(other))
        si = streams.get(key)
        if si is None:
            si = streams[key] = StreamInfo("UDP", str(local), str(other), first_ns=o.ts)
            res.streams.append(si)
        if o.kind == "out":
            si.bytes_to_server += o.nbytes
        else:
            si.bytes_to_client += o.nbytes
        si.missing_bytes += max(0, o.nbytes - len(data))
    for si in streams.values():
        si.packets = len(b.pkts) - n0
