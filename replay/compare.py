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
from typing import Any

from dr.replay.compare_ignore import Ignore, _mask, load_ignore
from dr.replay.compare_proto import (
    _cmd_text,
    _compare_http,
    _compare_redis,
    _first_byte_diff,
    _looks_resp,
    _redis_taint,
    _text_lines,
    parse_http,
    parse_resp_commands,
    parse_resp_replies,
)
from dr.replay.connections import Connection, Conversations, masked_ranges

__all__ = ["Ignore", "load_ignore", "ConnResult", "Report", "compare", "write_json",
           "side_by_side", "parse_http", "parse_resp_commands", "parse_resp_replies"]


# --------------------------------------------------------------------------- rendering


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
