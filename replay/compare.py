"""Compare replayed responses with the recorded ones, connection by connection.

For every inbound connection a streams replay re-drove, the bytes the program
sent back are set beside the bytes it sent in the recording:

- **HTTP/1.x** (the recorded response begins ``HTTP/1.``) is decoded into
  messages — status line, headers, body (Content-Length, chunked, or up to the
  close; RFC 9112) — and compared field by field; JSON bodies are compared as
  JSON and pretty-printed in the diff.
- **Redis** (RESP, the serialization protocol of redis.io/docs/reference/protocol-spec)
  is split into commands and replies, paired in order. A differing reply to a
  command whose keys held state from before the capture (read before anything
  in the capture wrote them) is counted apart, and the report says so in words:
  a fresh server cannot know that state.
- Anything else is compared as bytes.

Expected noise is declared in a TOML file (``--ignore FILE``)::

    [http]
    headers = ["Date", "Server"]      # header names, any case
    [json]
    keys = ["request_id", "now"]      # JSON object keys, at any depth
    [bytes]
    ranges = [[0, 8]]                 # [start, end) offsets in each response stream

Exit status of the CLI: 0 when every response matches (``Report.all_identical``),
:data:`dr.errors.ExitCode.DIVERGED` otherwise.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from dr.errors import UsageError
from dr.replay.connections import Connection, Conversations, masked_ranges

__all__ = ["Ignore", "load_ignore", "ConnResult", "Report", "compare", "write_json",
           "side_by_side", "parse_http", "parse_resp_commands", "parse_resp_replies"]


# --------------------------------------------------------------------------- ignore rules


@dataclass(frozen=True, slots=True)
class Ignore:
    """Expected noise: HTTP header names (lower case), JSON keys, byte ranges [start, end)."""

    headers: frozenset[str] = frozenset()
    json_keys: frozenset[str] = frozenset()
    byte_ranges: tuple[tuple[int, int], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.headers or self.json_keys or self.byte_ranges)

    def describe(self) -> str:
        parts = []
        if self.headers:
            parts.append("headers " + ", ".join(sorted(self.headers)))
        if self.json_keys:
            parts.append("JSON keys " + ", ".join(sorted(self.json_keys)))
        if self.byte_ranges:
            parts.append("bytes " + ", ".join(f"[{a}, {b})" for a, b in self.byte_ranges))
        return "; ".join(parts)


def load_ignore(source: Any) -> Ignore:
    """An :class:`Ignore` from a TOML file path (None: nothing ignored), or a dict.

    Raises :class:`dr.errors.UsageError` (one line) for an unreadable file,
    bad TOML, unknown tables or keys, or values of the wrong type.
    """
    import tomllib

    if source is None:
        return Ignore()
    if isinstance(source, Ignore):
        return source
    if isinstance(source, dict):
        doc = source
        where = "ignore rules"
    else:
        where = str(source)
        try:
            with open(source, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise UsageError(f"cannot read the ignore file {where}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"the ignore file {where} is not valid TOML: {e}") from None
    allowed = {"http": {"headers"}, "json": {"keys"}, "bytes": {"ranges"}}
    for table, body in doc.items():
        if table not in allowed or not isinstance(body, dict):
            raise UsageError(f"{where}: unknown table [{table}]; use [http] headers, [json] keys, [bytes] ranges")
        for k in body:
            if k not in allowed[table]:
                raise UsageError(f"{where}: unknown key {k!r} in [{table}]; expected {sorted(allowed[table])[0]!r}")

    def strs(table: str, key: str) -> list[str]:
        v = doc.get(table, {}).get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise UsageError(f"{where}: [{table}] {key} must be a list of strings")
        return v

    ranges = doc.get("bytes", {}).get("ranges", [])
    ok = isinstance(ranges, list) and all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and x >= 0 for x in r) and r[0] < r[1]
        for r in ranges)
    if not ok:
        raise UsageError(f"{where}: [bytes] ranges must be a list of [start, end] pairs with 0 <= start < end")
    return Ignore(frozenset(h.lower() for h in strs("http", "headers")),
                  frozenset(strs("json", "keys")),
                  tuple((int(a), int(b)) for a, b in ranges))


def _mask(data: bytes, ranges: Iterable[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for a, z in ranges:
        for i in range(a, min(z, len(b))):
            b[i] = 0x2A  # '*' on both sides, so the range compares equal
    return bytes(b)


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


# --------------------------------------------------------------------------- rendering


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


def side_by_side(left: list[str], right: list[str], width: int = 48, context: int = 3,
                 titles: tuple[str, str] = ("recorded", "replayed")) -> str:
    """Two columns, ``|`` marking changed lines, ``<``/``>`` lines on one side only.

    Runs of more than 2*context equal lines are folded to ``...``.
    """
    def cell(s: str) -> str:
        s = s.replace("\t", "    ")
        return s if len(s) <= width else s[:width - 1] + "…"

    rows = [f"  {titles[0]:<{width}}   {titles[1]}", f"  {'-' * width}   {'-' * width}"]
    sm = difflib.SequenceMatcher(None, left, right, autojunk=False)
    ops = sm.get_opcodes()
    for k, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag == "equal":
            n = i2 - i1
            keep_head = context if k > 0 else min(1, context)  # the first line anchors the reader
            keep_tail = context if k < len(ops) - 1 else 0
            if n > keep_head + keep_tail + 1:
                for t in range(keep_head):
                    rows.append(f"  {cell(left[i1 + t]):<{width}}   {cell(right[j1 + t])}")
                rows.append(f"  {'...':<{width}}   ...")
                for t in range(n - keep_tail, n):
                    rows.append(f"  {cell(left[i1 + t]):<{width}}   {cell(right[j1 + t])}")
            else:
                for t in range(n):
                    rows.append(f"  {cell(left[i1 + t]):<{width}}   {cell(right[j1 + t])}")
        else:
            a, b = left[i1:i2], right[j1:j2]
            for t in range(max(len(a), len(b))):
                la = a[t] if t < len(a) else None
                lb = b[t] if t < len(b) else None
                mark = "|" if la is not None and lb is not None else ("<" if lb is None else ">")
                rows.append(f"{mark} {cell(la or ''):<{width}} {mark} {cell(lb or '')}")
    return "\n".join(rows)


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class ConnResult:
    """The verdict on one connection. ``status``: "identical", "differs" or
    "not replayed"; ``cause`` for redis: "state before capture" when every
    difference is explained by it; latencies in ms (None when unknown)."""

    id: int
    label: str
    request: str
    protocol: str
    status: str
    first_difference: str | None = None
    diff: str | None = None
    recorded_latency_ms: float | None = None
    replayed_latency_ms: float | None = None
    recorded_bytes: int = 0
    replayed_bytes: int = 0
    began_before_capture: bool = False
    peer_presented: bool = False
    cause: str | None = None
    pre_capture: list[dict] = field(default_factory=list)
    other: list[dict] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class Report:
    """All verdicts of one streams replay (``connections`` in recorded order)."""

    connections: list[ConnResult]
    misses: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ignore: str = ""
    command: str = ""
    new_build: bool = False
    wall_s: float = 0.0
    output_log: str | None = None
    redis_pre_capture: int = 0
    redis_other: int = 0
    redis_pre_keys: list[str] = field(default_factory=list)
    mode: str = ""
    substituted: dict = field(default_factory=dict)
    listening: list[dict] = field(default_factory=list)
    output_tail: list[str] = field(default_factory=list)
    #: Attempts to reach the host the sandbox refused (dr.replay.containment.Refusal.to_dict()).
    refused: list[dict] = field(default_factory=list)
    error: str | None = None   # why the replay could not run (verdict ERROR)
    cut_short: bool = False    # the trace ends without its summary record
    recorded_connections: int | None = None   # inbound connections the recording shows

    @property
    def identical(self) -> int:
        return sum(1 for c in self.connections if c.status == "identical")

    @property
    def differs(self) -> list[ConnResult]:
        return [c for c in self.connections if c.status != "identical"]

    @property
    def all_identical(self) -> bool:
        return bool(self.connections) and not self.differs and not self.misses

    def summary(self) -> str:
        if self.error:
            return f"the replay could not run: {self.error}"
        n = len(self.connections)
        s = f"{self.identical} of {n} connection(s) identical"
        d = self.differs
        if d:
            s += f", {len(d)} differ"
        if self.redis_pre_capture or self.redis_other:
            s += (f" ({self.redis_pre_capture} response(s) differ because of state from before the capture, "
                  f"{self.redis_other} for other reasons)")
        if self.misses:
            s += f"; {len(self.misses)} request(s) to dependencies had no recorded match"
        if self.ignore:
            s += f"; ignored: {self.ignore}"
        if self.cut_short:
            s += (f"; the trace was cut short: it holds {n} connection(s)"
                  + (f" of the {self.recorded_connections} the recording had"
                     if self.recorded_connections and self.recorded_connections > n
                     else "; how many more the recording had is not in it"))
        return s

    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        if not self.all_identical:
            return "DIFFERS"
        return "INCOMPLETE" if self.cut_short else "IDENTICAL"   # the cut-off part was not compared

    def explain(self) -> list[str]:
        """The redis separation in words (empty for other protocols)."""
        out = []
        if self.redis_pre_capture:
            keys = ", ".join(self.redis_pre_keys[:8]) + (" …" if len(self.redis_pre_keys) > 8 else "")
            out.append(f"{self.redis_pre_capture} response(s) differ because of state from before the capture: "
                       f"the commands read keys ({keys}) whose values were set before the capture started and "
                       "were not written during it, so a fresh server answers them differently. These are "
                       "expected; they do not show a change in the program.")
        if self.redis_other:
            out.append(f"{self.redis_other} response(s) differ for other reasons (not explained by state from "
                       "before the capture); see the connections marked below.")
        elif self.redis_pre_capture:
            out.append("No response differs for any other reason.")
        return out

    def text(self, verbose: bool = False, limit: int = 20) -> str:
        """The human report: differing connections with their diffs, then the summary."""
        out = []
        if self.command:
            out.append(f"replayed: {self.command}" + ("  (another build)" if self.new_build else ""))
        for c in self.connections:
            lat = ""
            if c.recorded_latency_ms is not None and c.replayed_latency_ms is not None:
                lat = f"  [{c.recorded_latency_ms:.1f} ms recorded, {c.replayed_latency_ms:.1f} ms replayed]"
            if c.status == "identical":
                if verbose:
                    out.append(f"  identical  {c.label}  {c.request}{lat}")
                continue
        shown = 0
        for c in self.connections:
            if c.status == "identical":
                continue
            shown += 1
            if shown > limit:
                out.append(f"... and {len(self.differs) - limit} more differing connection(s) (see --report)")
                break
            lat = ""
            if c.recorded_latency_ms is not None and c.replayed_latency_ms is not None:
                lat = f"  [{c.recorded_latency_ms:.1f} ms recorded, {c.replayed_latency_ms:.1f} ms replayed]"
            tag = f" ({c.cause})" if c.cause else ""
            out.append(f"DIFFERS{tag}  {c.label}  {c.request}{lat}")
            if c.note:
                out.append(f"  note: {c.note}")
            if c.first_difference:
                out.append(f"  first difference: {c.first_difference}")
            if c.diff:
                out.append("\n".join("  " + ln for ln in c.diff.splitlines()))
        for m in self.misses:
            out.append(f"NO MATCH  request to {m['peer']}: {m['reason']}: {m['request'][:80]!r}")
        out += self.explain()
        for n in self.notes:
            out.append(f"note: {n}")
        if self.output_log:
            out.append(f"the replayed program's output: {self.output_log}")
        if self.output_tail and any(ln.strip() for ln in self.output_tail[1:]):
            out.append("the replayed program's last output lines:")
            out += [f"  | {ln}" for ln in self.output_tail[-10:]]
        out.append(f"{self.verdict()}: {self.summary()}")
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict(), "summary": self.summary(), "command": self.command,
            "new_build": self.new_build, "wall_s": round(self.wall_s, 3),
            "identical": self.identical, "connections_total": len(self.connections),
            "ignore": self.ignore, "notes": self.notes, "misses": self.misses,
            "redis": {"pre_capture_state": self.redis_pre_capture, "other": self.redis_other,
                      "pre_capture_keys": self.redis_pre_keys, "explanation": self.explain()},
            "connections": [c.to_dict() for c in self.connections],
            "output_log": self.output_log, "mode": self.mode, "substituted": self.substituted,
            "listening": self.listening, "output_tail": self.output_tail, "refused": self.refused,
            "error": self.error, "cut_short": self.cut_short,
            "recorded_connections": self.recorded_connections,
        }


def write_json(rep: Report, path: str) -> None:
    """Write ``rep.to_dict()`` as JSON to ``path``; raises OutputError."""
    from dr.formats.output import open_output
    with open_output(path, what="the report") as f:
        json.dump(rep.to_dict(), f, indent=2)
        f.write("\n")


def _body_spans(data: bytes) -> list[tuple[int, int]] | None:
    """[start, end) of each HTTP/1.x message body with a Content-Length; None when the
    stream is not such messages (RFC 9112 §6.3)."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0 or not data.startswith(b"HTTP/1.", pos):
            return out or None
        m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", data[pos:end])
        if m is None:
            return out or None
        start = end + 4
        out.append((start, start + int(m.group(1))))
        pos = start + int(m.group(1))
    return out


def _gaps_in(rep: bytes, rec: bytes, gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``gaps`` (spans of the recorded stream) moved to the replayed stream: body-relative
    when both are HTTP messages with lengths (headers may differ in length), else as they are."""
    a, b = _body_spans(rec), _body_spans(rep)
    if not a or not b:
        return gaps
    out = []
    for g0, g1 in gaps:
        for i, (s0, s1) in enumerate(a):
            if s0 <= g0 < s1 and i < len(b):
                out.append((b[i][0] + g0 - s0, b[i][0] + min(g1, s1) - s0))
                break
        else:
            out.append((g0, g1))
    return out


def _with_gaps(c: Connection) -> tuple[bytes, list[tuple[int, int]]]:
    """The recorded response stream with a placeholder for every byte a syscall
    moved that the trace does not hold, and those [start, end) spans."""
    out, gaps, pos = [], [], 0
    for ch in c.chunks:
        if ch.dir != c.response_dir:
            continue
        out.append(ch.data)
        pos += len(ch.data)
        missing = max(0, ch.total - len(ch.data))
        if missing:
            out.append(b"*" * missing)
            gaps.append((pos, pos + missing))
            pos += missing
    return b"".join(out), gaps


def _latency(conn: Connection) -> float | None:
    ins = [c.ts_exit for c in conn.chunks if c.dir == conn.request_dir and not c.eof]
    outs = [c.ts_exit for c in conn.chunks if c.dir == conn.response_dir]
    if not ins or not outs:
        return None
    return (outs[-1] - ins[0]) / 1e6


def _request_summary(conn: Connection, proto: str) -> str:
    req = conn.request_bytes
    if proto == "http":
        line = req.split(b"\r\n", 1)[0].decode("latin-1")
        return line.rsplit(" HTTP/", 1)[0]
    if proto == "redis":
        cmds = parse_resp_commands(req) or []
        if not cmds:
            return ""
        names = [c[0].decode("latin-1").upper() for c in cmds if c]
        head = _cmd_text(cmds[0], 40)
        return head if len(cmds) == 1 else f"{head} (+{len(cmds) - 1} more: {', '.join(sorted(set(names)))})"
    return f"{len(req)} request byte(s)"


def compare(conv: Conversations, replayed: list[Any], ignore: Ignore | None = None,
            misses: list[Any] | None = None, skipped: list[Connection] | None = None) -> Report:
    """Compare each replayed connection (``ReplayedConn``) with its recording.

    ``misses``: outbound requests with no recorded match (``OutboundMiss``).
    Returns a :class:`Report`; never raises for differing data.
    """
    ign = ignore or Ignore()
    results: list[ConnResult] = []
    redis_conns = [r for r in replayed if _looks_resp(r.conn)]
    pre = _redis_taint([r.conn for r in redis_conns]) if redis_conns else {}
    pre_keys: set[str] = set()
    n_pre = n_other = 0
    for r in replayed:
        c: Connection = r.conn
        rec, gaps = _with_gaps(c)
        rep = r.data
        if ign.byte_ranges:
            rec, rep = _mask(rec, ign.byte_ranges), _mask(rep, ign.byte_ranges)
        if gaps:
            # Bytes the trace does not hold (sendfile's, or past the snaplen): their
            # places and count are known, their values not; both sides masked there
            # (in an HTTP stream, at the same place of the same message's body).
            rec, rep = _mask(rec, gaps), _mask(rep, _gaps_in(rep, rec, gaps))
        redacted = masked_ranges(ch for ch in c.chunks if ch.dir == c.response_dir)
        if redacted:
            # Redacted bytes were never recorded: unknown on both sides, not a divergence.
            spans = [(a, a + n) for a, n in redacted]
            rec, rep = _mask(rec, spans), _mask(rep, spans)
        proto = "http" if rec.startswith(b"HTTP/1.") or c.request_bytes[:16].split(b" ")[0] in (
            b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"PATCH", b"OPTIONS") else (
            "redis" if r in redis_conns else "bytes")
        res = ConnResult(c.id, c.label(), _request_summary(c, proto), proto, "identical",
                         recorded_latency_ms=_latency(c), recorded_bytes=len(c.response_bytes),
                         replayed_bytes=len(r.data), began_before_capture=c.began_before_capture,
                         peer_presented=r.peer_bound)
        if r.sent_ns and r.done_ns:
            res.replayed_latency_ms = (r.done_ns - r.sent_ns) / 1e6
        if c.began_before_capture:
            res.note = "the connection began before the capture; its beginning was not recorded"
        if redacted:
            res.note = (f"{sum(n for _a, n in redacted)} redacted response byte(s) compared as unknown"
                        + (f"; {res.note}" if res.note else ""))
        order_note = getattr(r, "order_note", None)
        if order_note:
            res.note = order_note + (f"; {res.note}" if res.note else "")
        if r.error and not rep and not rec and r.opened_ns:
            # Nothing was answered in the recording, nothing in the replay: the responses match;
            # how the empty connection ended (a reset when the program stopped) is noted.
            res.note = f"no response either way; the replayed connection ended with: {r.error}"
        elif r.error and not rep:
            res.status = "not replayed" if not r.opened_ns else "differs"
            res.first_difference = r.error
        elif proto == "http":
            eq, first, la, lb = _compare_http(rec, rep, ign)
            if not eq:
                res.status, res.first_difference = "differs", first
                res.diff = side_by_side(la, lb)
        elif proto == "redis":
            diffs = _compare_redis(c, rec, rep, pre)
            if diffs:
                res.status = "differs"
                res.pre_capture = [d for d in diffs if d["pre_capture"]]
                res.other = [d for d in diffs if not d["pre_capture"]]
                n_pre += len(res.pre_capture)
                n_other += len(res.other)
                for d in res.pre_capture:
                    pre_keys.update(d["keys"])
                if not res.other:
                    res.cause = "state before capture"
                d0 = (res.other or res.pre_capture)[0]
                res.first_difference = (f"reply {d0['n']} to {d0['command']}: "
                                        f"{d0['recorded']} -> {d0['replayed']}")
                la = [f"{d['command']}  => {d['recorded']}" for d in diffs[:30]]
                lb = [f"{d['command']}  => {d['replayed']}" for d in diffs[:30]]
                res.diff = side_by_side(la, lb, width=56, context=0)
        else:
            if rec != rep:
                res.status = "differs"
                res.first_difference = _first_byte_diff(rec, rep)
                res.diff = side_by_side(_text_lines(rec), _text_lines(rep))
        if res.status == "identical" and gaps:
            n_gap = sum(z - a for a, z in gaps)
            res.note = (f"{n_gap} response byte(s) the trace does not hold (sendfile, snaplen) were "
                        "compared by length only" + (f"; {res.note}" if res.note else ""))
        results.append(res)
    for c in skipped or []:
        results.append(ConnResult(c.id, c.label(), "", c.proto, "not replayed",
                                  first_difference=f"{c.proto} connections are not re-driven yet"))
    results.sort(key=lambda x: x.id)
    notes = list(conv.notes)
    notes.append("time, randomness and pids were the replay host's own (not substituted in this fidelity)")
    return Report(results, [{"peer": m.peer, "request": m.request.decode("utf-8", "replace"),
                             "reason": m.reason} for m in (misses or [])],
                  notes, ign.describe(), redis_pre_capture=n_pre, redis_other=n_other,
                  redis_pre_keys=sorted(pre_keys), cut_short=getattr(conv, "cut_short", False),
                  recorded_connections=len(conv.inbound()))


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
