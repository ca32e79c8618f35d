"""Counting complete protocol messages (HTTP/1.x, RESP) in a response stream.

A replayed response may have another length than the recorded one; the schedule
waits for the same number of messages, not bytes.
"""

from __future__ import annotations

from dr.replay.connections import Connection

__all__ = ["Units", "http_end", "prefix", "proto_of"]


class Units:
    """Counts complete responses in a growing byte stream.

    ``proto``: "resp" (each RESP reply, redis.io protocol spec), "http" (each
    HTTP/1.x message with a Content-Length or chunked body, RFC 9112 §6), or
    "bytes" (each byte). Waiting in responses rather than bytes keeps the
    schedule when a replayed reply has another length than the recorded one.
    """

    def __init__(self, proto: str) -> None:
        self.proto = proto
        self.buf = b""
        self.n = 0

    def feed(self, data: bytes) -> int:
        if self.proto == "bytes":
            self.n += len(data)
            return self.n
        self.buf += data
        while self.buf:
            try:
                end = self._end()
            except ValueError:
                self.proto = "bytes"  # not the protocol it looked like: count bytes from here
                self.n += len(self.buf)
                self.buf = b""
                break
            if end < 0:
                break
            self.n += 1
            self.buf = self.buf[end:]
        return self.n

    def _end(self) -> int:
        from dr.replay.compare_proto import _resp_value_end
        if self.proto == "resp":
            return _resp_value_end(self.buf, 0)
        return http_end(self.buf)


def http_end(buf: bytes) -> int:
    """End offset of the first HTTP/1.x message in ``buf``; -1 when incomplete or
    when its body runs to the end of the connection (RFC 9112 §6.3)."""
    head = buf.find(b"\r\n\r\n")
    if head < 0:
        return -1
    if not buf.startswith(b"HTTP/1."):
        raise ValueError("not an HTTP response")
    lines = buf[:head].split(b"\r\n")
    status = lines[0].split(b" ")[1] if len(lines[0].split(b" ")) > 1 else b""
    hdr = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        hdr[k.strip().lower()] = v.strip()
    p = head + 4
    if status[:1] == b"1" or status in (b"204", b"304"):
        return p
    if b"chunked" in hdr.get(b"transfer-encoding", b"").lower():
        while True:
            le = buf.find(b"\r\n", p)
            if le < 0:
                return -1
            n = int(buf[p:le].split(b";")[0], 16)
            p = le + 2
            if n == 0:
                end = buf.find(b"\r\n\r\n", p - 2)
                return -1 if end < 0 else end + 4
            p += n + 2
            if p > len(buf):
                return -1
    cl = hdr.get(b"content-length")
    if cl is None or not cl.isdigit():
        return -1
    end = p + int(cl)
    return end if end <= len(buf) else -1


def prefix(head: bytes, data: bytes, wild: frozenset[int] | None) -> bool:
    """``data`` starts with ``head``, where offsets in ``wild`` (redacted) match any byte."""
    if len(data) < len(head):
        return False
    if not wild:
        return data.startswith(head)
    return all(i in wild or data[i] == b for i, b in enumerate(head))


def proto_of(c: Connection) -> str:
    rsp = c.response_bytes[:8]
    if rsp.startswith(b"HTTP/1."):
        return "http"
    if rsp[:1] in (b"+", b"-", b":", b"$", b"*", b"%", b"_", b"#") and c.request_bytes[:1] in (b"*", b""):
        return "resp"
    return "bytes"

