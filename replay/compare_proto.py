"""Protocol-aware comparison of one response stream: HTTP/1.x messages field by
field (JSON bodies as JSON) and Redis (RESP) replies paired with their commands,
with state from before the capture told apart (see :mod:`dr.replay.compare`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dr.replay.compare_ignore import Ignore
from dr.replay.connections import Connection


def _text_lines(b: bytes) -> list[str]:
    if not b:
        return []
    printable = sum(1 for x in b[:4096] if 32 <= x < 127 or x in (9, 10, 13))
    if printable >= 0.9 * min(len(b), 4096):
        return b.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    return [f"{i:06x}  {b[i:i + 16].hex(' ')}" for i in range(0, len(b), 16)]


def _first_byte_diff(a: bytes, b: bytes, where: str = "") -> str:
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if n == len(a) == len(b):
        return f"{where}identical"
    if n >= len(a):
        return f"{where}byte {n}: the replay has {len(b) - n} more byte(s): {b[n:n + 24]!r}"
    if n >= len(b):
        return f"{where}byte {n}: the replay stops; recorded {len(a) - n} more byte(s): {a[n:n + 24]!r}"
    return f"{where}byte {n}: recorded {a[n:n + 24]!r}, replayed {b[n:n + 24]!r}"


# --------------------------------------------------------------------------- HTTP


@dataclass(slots=True)
class HttpMsg:
    """One HTTP/1.x message: ``start`` line, ``headers`` [(name, value)], ``body``
    (de-chunked), ``complete`` (False when the stream ended early)."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool = True

    def header(self, name: str) -> str | None:
        n = name.lower()
        return next((v for k, v in self.headers if k.lower() == n), None)


def parse_http(data: bytes, requests: bool = False) -> tuple[list[HttpMsg], bytes]:
    """Split a byte stream into HTTP/1.x messages (RFC 9112 §6: body length).

    Returns (messages, leftover bytes that do not parse). A response without
    Content-Length or chunked encoding runs to the end of the stream; a request
    without them has no body.
    """
    msgs: list[HttpMsg] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        head = data[pos:end].decode("latin-1")
        lines = head.split("\r\n")
        start = lines[0]
        if not (start.startswith("HTTP/1.") or re.match(r"^[A-Z]+ \S+ HTTP/1\.\d$", start)):
            break
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers.append((k.strip(), v.strip()))
        msg = HttpMsg(start, headers, b"")
        p = end + 4
        te = (msg.header("Transfer-Encoding") or "").lower()
        cl = msg.header("Content-Length")
        status = start.split(" ", 2)[1] if start.startswith("HTTP/") and " " in start else ""
        if status[:1] == "1" or status in ("204", "304"):
            pass
        elif "chunked" in te:
            body = bytearray()
            while True:
                le = data.find(b"\r\n", p)
                if le < 0:
                    msg.complete = False
                    p = len(data)
                    break
                try:
                    n = int(data[p:le].split(b";")[0], 16)
                except ValueError:
                    msg.complete = False
                    p = len(data)
                    break
                p = le + 2
                if n == 0:
                    te_end = data.find(b"\r\n\r\n", p - 2)
                    p = te_end + 4 if te_end >= 0 else len(data)
                    break
                body += data[p:p + n]
                if p + n > len(data):
                    msg.complete = False
                p += n + 2
            msg.body = bytes(body)
        elif cl is not None and cl.strip().isdigit():
            n = int(cl)
            msg.body = data[p:p + n]
            msg.complete = len(msg.body) == n
            p += n
        elif not requests:
            msg.body = data[p:]
            p = len(data)
        msgs.append(msg)
        pos = p
    return msgs, data[pos:]


def _strip_keys(obj: Any, keys: frozenset[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_strip_keys(v, keys) for v in obj]
    return obj


def _json(body: bytes) -> tuple[bool, Any]:
    s = body.strip()
    if not s or s[:1] not in (b"{", b"["):
        return False, None
    try:
        return True, json.loads(s)
    except ValueError:
        return False, None


def _json_first_diff(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            p = f"{path}.{k}" if path else str(k)
            if k not in b:
                return f"JSON key {p} missing in the replay"
            if k not in a:
                return f"JSON key {p} only in the replay"
            d = _json_first_diff(a[k], b[k], p)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _json_first_diff(x, y, f"{path}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            return f"JSON array {path or '(top)'} has {len(a)} items recorded, {len(b)} replayed"
        return None
    if a != b or type(a) is not type(b):
        return f"JSON {path or 'value'}: {json.dumps(a)} -> {json.dumps(b)}"
    return None


def _http_lines(m: HttpMsg | None, ign: Ignore) -> list[str]:
    if m is None:
        return ["(no response)"]
    out = [m.start]
    out += [f"{k}: {v}" + ("   (ignored)" if k.lower() in ign.headers else "") for k, v in m.headers]
    out.append("")
    is_json, obj = _json(m.body)
    if is_json:
        out += json.dumps(obj, indent=2, ensure_ascii=False).splitlines()
    else:
        out += _text_lines(m.body)
    if not m.complete:
        out.append("(cut short)")
    return out


def _compare_http(rec: bytes, rep: bytes, ign: Ignore) -> tuple[bool, str | None, list[str], list[str]]:
    """(equal, first difference, recorded lines, replayed lines) for two HTTP streams."""
    ra, rest_a = parse_http(rec)
    rb, rest_b = parse_http(rep)
    first = None
    for i in range(max(len(ra), len(rb))):
        a = ra[i] if i < len(ra) else None
        b = rb[i] if i < len(rb) else None
        where = f"response {i + 1}: " if max(len(ra), len(rb)) > 1 else ""
        if a is None or b is None:
            first = where + ("an extra response in the replay" if a is None
                             else "no response in the replay" if not rep else "missing in the replay")
            break
        if a.start != b.start:
            first = f"{where}status line {a.start!r} -> {b.start!r}"
            break
        ja, oa = _json(a.body)
        jb, ob = _json(b.body)
        bodies_equal_json = False
        body_diff = None
        if ja and jb:
            sa, sb = _strip_keys(oa, ign.json_keys), _strip_keys(ob, ign.json_keys)
            body_diff = _json_first_diff(sa, sb)
            bodies_equal_json = body_diff is None
        elif a.body != b.body:
            body_diff = _first_byte_diff(a.body, b.body, "body ")
        ha = [(k.lower(), v) for k, v in a.headers if k.lower() not in ign.headers]
        hb = [(k.lower(), v) for k, v in b.headers if k.lower() not in ign.headers]
        if bodies_equal_json and ign.json_keys:
            # Ignored JSON values may change the body's length, not its meaning.
            ha = [h for h in ha if h[0] != "content-length"]
            hb = [h for h in hb if h[0] != "content-length"]
        if ha != hb:
            da, db = dict(ha), dict(hb)
            for k in list(da) + [k for k in db if k not in da]:
                if da.get(k) != db.get(k):
                    first = (f"{where}header {k}: {da.get(k, '(absent)')!r} -> {db.get(k, '(absent)')!r}")
                    break
            else:
                first = f"{where}headers in another order"
            break
        if body_diff:
            first = where + body_diff
            break
        if a.complete != b.complete:
            first = where + ("the replayed response is cut short" if a.complete else "the recorded response was cut short")
            break
    if first is None and rest_a != rest_b:
        first = _first_byte_diff(rest_a, rest_b, "after the last response, ")
    la: list[str] = []
    lb: list[str] = []
    for i in range(max(len(ra), len(rb))):
        if i:
            la.append("")
            lb.append("")
        la += _http_lines(ra[i] if i < len(ra) else None, ign)
        lb += _http_lines(rb[i] if i < len(rb) else None, ign)
    if rest_a or rest_b:
        la += _text_lines(rest_a)
        lb += _text_lines(rest_b)
    return first is None, first, la, lb


# --------------------------------------------------------------------------- RESP (redis)


def _resp_value_end(data: bytes, p: int) -> int:
    """End offset of the RESP value starting at ``p``; -1 when incomplete."""
    if p >= len(data):
        return -1
    t = data[p:p + 1]
    le = data.find(b"\r\n", p)
    if le < 0:
        return -1
    if t in (b"+", b"-", b":", b",", b"#", b"_", b"("):
        return le + 2
    if t in (b"$", b"!", b"="):
        n = int(data[p + 1:le])
        if n < 0:
            return le + 2
        end = le + 2 + n + 2
        return end if end <= len(data) else -1
    if t in (b"*", b"%", b"~", b">", b"|"):
        n = int(data[p + 1:le])
        if t in (b"%", b"|"):
            n *= 2
        q = le + 2
        for _ in range(max(n, 0)):
            q = _resp_value_end(data, q)
            if q < 0:
                return -1
        return q
    raise ValueError("not RESP")


def parse_resp_replies(data: bytes) -> list[bytes] | None:
    """Split a reply stream into the raw bytes of each reply; None when not RESP."""
    out, p = [], 0
    try:
        while p < len(data):
            q = _resp_value_end(data, p)
            if q < 0:
                out.append(data[p:])
                break
            out.append(data[p:q])
            p = q
    except ValueError:
        return None
    return out


def parse_resp_commands(data: bytes) -> list[list[bytes]] | None:
    """Split a request stream into commands (arrays of bulk strings, or inline); None when not RESP."""
    out: list[list[bytes]] = []
    p = 0
    try:
        while p < len(data):
            if data[p:p + 1] == b"*":
                le = data.index(b"\r\n", p)
                n = int(data[p + 1:le])
                p = le + 2
                args = []
                for _ in range(n):
                    if data[p:p + 1] != b"$":
                        return None
                    le = data.index(b"\r\n", p)
                    ln = int(data[p + 1:le])
                    args.append(data[le + 2:le + 2 + ln])
                    p = le + 2 + ln + 2
                out.append(args)
            else:
                le = data.find(b"\n", p)
                line = data[p:] if le < 0 else data[p:le]
                p = len(data) if le < 0 else le + 1
                words = line.strip().split()
                if words:
                    out.append(words)
    except ValueError:
        return None
    return out


def _looks_resp(conn: Connection) -> bool:
    req = conn.request_bytes[:64]
    rsp = conn.response_bytes[:1]
    return (req[:1] == b"*" and rsp[:1] in (b"+", b"-", b":", b"$", b"*", b"%", b"_", b"#")) or (
        conn.listener is not None and conn.listener.port == 6379 and bool(req))


_OVERWRITE = {"SET", "SETEX", "PSETEX", "MSET", "DEL", "UNLINK"}
_ALL_KEYS = {"MGET", "DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH"}
_PAIRS = {"MSET", "MSETNX"}
_NO_KEY = {"PING", "ECHO", "CONFIG", "CLIENT", "SELECT", "HELLO", "AUTH", "QUIT", "COMMAND", "TIME",
           "INFO", "MULTI", "EXEC", "DISCARD", "SUBSCRIBE", "PUBLISH", "RESET", "READONLY", "LASTSAVE"}
_DB_WIDE = {"DBSIZE", "KEYS", "SCAN", "RANDOMKEY"}


def _keys(cmd: list[bytes]) -> list[bytes]:
    name = cmd[0].upper().decode("latin-1") if cmd else ""
    if name in _NO_KEY or name in _DB_WIDE or len(cmd) < 2:
        return []
    if name in _PAIRS:
        return cmd[1::2]
    if name in _ALL_KEYS:
        return cmd[1:]
    return [cmd[1]]


def _is_overwrite(cmd: list[bytes]) -> bool:
    name = cmd[0].upper().decode("latin-1") if cmd else ""
    if name == "SET":
        opts = {a.upper() for a in cmd[3:]}
        return not opts & {b"NX", b"XX", b"GET", b"KEEPTTL"}
    return name in _OVERWRITE


def _cmd_text(cmd: list[bytes], limit: int = 60) -> str:
    s = " ".join(a.decode("utf-8", "replace") for a in cmd)
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _reply_text(r: bytes | None) -> str:
    if r is None:
        return "(no reply)"
    s = r.decode("utf-8", "replace").replace("\r\n", " ").strip()
    if r.startswith(b"$-1") or r.startswith(b"*-1") or r.startswith(b"_"):
        s += " (nil)"
    return s if len(s) <= 60 else s[:59] + "…"


def _redis_taint(conns: list[Connection]) -> dict[tuple[int, int], tuple[bool, list[str]]]:
    """(conn id, command index) -> (reads state from before the capture, its keys).

    Commands of every connection are ordered by the recorded time of the read
    that completed them. A key's value is known from the capture once a pure
    overwrite (SET, DEL, ...) of it was seen. A command on a key not yet known
    reads state from before the capture only where its recorded reply shows the
    key existed then (:func:`_existed`: GET answered a value, INCR answered
    more than 1, LPUSH a longer list than it pushed); a reply that shows the
    key was new (nil, :1) makes the key known from then on, and a reply that
    shows neither blames nothing: explanations only from evidence.
    """
    timeline: list[tuple[int, int, int, list[bytes]]] = []
    replies: dict[int, list[bytes]] = {}
    for c in conns:
        replies[c.id] = parse_resp_replies(c.response_bytes) or []
        buf = b""
        idx = 0
        for ch in c.chunks:
            if ch.dir != c.request_dir or ch.eof:
                continue
            buf += ch.data
            # Only complete commands count; keep a partial tail for the next chunk.
            complete, tail = _split_complete(buf)
            for cmd in parse_resp_commands(complete) or []:
                timeline.append((ch.ts_exit, c.id, idx, cmd))
                idx += 1
            buf = tail
    timeline.sort(key=lambda t: (t[0], t[1], t[2]))
    defined: set[bytes] = set()   # written from scratch during the capture (SET, DEL, ...)
    tainted: set[bytes] = set()   # first met by a command that reads or builds on its old value
    flushed = False
    out: dict[tuple[int, int], tuple[bool, list[str]]] = {}
    for _ts, cid, idx, cmd in timeline:
        name = cmd[0].upper().decode("latin-1") if cmd else ""
        keys = _keys(cmd)
        if name in ("FLUSHALL", "FLUSHDB"):
            flushed = True
            defined.clear()
            tainted.clear()
            out[(cid, idx)] = (False, [])
            continue
        if _is_overwrite(cmd):
            defined.update(keys)
            tainted.difference_update(keys)
            out[(cid, idx)] = (False, [])
            continue
        rl = replies.get(cid, [])
        existed = _existed(cmd, rl[idx]) if idx < len(rl) else None
        fresh = [k for k in keys if k not in tainted and k not in defined and not flushed]
        if existed is False or (existed is None and len(fresh) > 0):
            defined.update(fresh)  # new during the capture, or no evidence it was not: not blamed
            fresh = []
        old = [k for k in keys if k in tainted] + fresh
        tainted.update(old)
        reads_old = bool(old)
        out[(cid, idx)] = (reads_old, [k.decode("utf-8", "replace") for k in old])
    return out


_NIL = (b"$-1\r\n", b"*-1\r\n", b"_\r\n")
_READS_VALUE = {"GET", "HGET", "HGETALL", "LRANGE", "LINDEX", "LPOP", "RPOP", "SMEMBERS", "SPOP",
                "ZRANGE", "GETRANGE", "HKEYS", "HVALS", "GETDEL", "GETEX", "SRANDMEMBER"}
_COUNTS = {"STRLEN", "LLEN", "SCARD", "HLEN", "ZCARD", "EXISTS"}


def _existed(cmd: list[bytes], reply: bytes) -> bool | None:
    """Did the key of ``cmd`` hold a value before it, going by the recorded ``reply``?

    True or False where the reply tells (GET: a value or nil; INCR/INCRBY: the
    increment itself means a new key; LPUSH/RPUSH: a list as long as what was
    pushed is new; counts: 0); None where it does not.
    """
    name = cmd[0].upper().decode("latin-1") if cmd else ""
    r = reply.strip()
    if reply.startswith(b"-"):
        return None
    if name in _READS_VALUE:
        return not (reply in _NIL or r in (b"*0", b"$0") and name not in ("GET", "GETRANGE"))
    if name in _COUNTS:
        return r != b":0"
    if name == "TYPE":
        return r != b"+none"
    if name in ("TTL", "PTTL"):
        return r != b":-2"
    if name in ("INCR", "DECR", "INCRBY", "DECRBY") and r.startswith(b":"):
        step = {"INCR": b"1", "DECR": b"-1"}.get(name) or (
            cmd[2] if name == "INCRBY" and len(cmd) > 2 else b"-" + cmd[2] if len(cmd) > 2 else b"")
        return r[1:] != step
    if name in ("LPUSH", "RPUSH", "APPEND") and r.startswith(b":") and len(cmd) > 2:
        added = len(cmd) - 2 if name != "APPEND" else len(cmd[2])
        return r[1:] != str(added).encode()
    return None


def _split_complete(buf: bytes) -> tuple[bytes, bytes]:
    """(complete RESP commands, incomplete tail) of a request buffer."""
    p = 0
    while p < len(buf):
        if buf[p:p + 1] == b"*":
            try:
                q = _resp_value_end(buf, p)
            except ValueError:
                return buf, b""
            if q < 0:
                break
            p = q
        else:
            le = buf.find(b"\n", p)
            if le < 0:
                break
            p = le + 1
    return buf[:p], buf[p:]


def _compare_redis(c: Connection, rec: bytes, rep: bytes, taint: dict) -> list[dict]:
    cmds = parse_resp_commands(_split_complete(c.request_bytes)[0]) or []
    ra = parse_resp_replies(rec) or []
    rb = parse_resp_replies(rep) or []
    diffs = []
    for i in range(max(len(cmds), len(ra), len(rb))):
        a = ra[i] if i < len(ra) else None
        b = rb[i] if i < len(rb) else None
        if a == b:
            continue
        cmd = cmds[i] if i < len(cmds) else [b"?"]
        reads_old, keys = taint.get((c.id, i), (False, []))
        if b is not None and b.startswith(b"-") and not (a or b"").startswith(b"-"):
            reads_old, keys = False, []  # the replayed program refused it: no old state explains that
        diffs.append({"n": i + 1, "command": _cmd_text(cmd), "recorded": _reply_text(a),
                      "replayed": _reply_text(b), "pre_capture": reads_old, "keys": keys})
    return diffs
