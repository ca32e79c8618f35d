"""Redaction of personal data and secrets in traces: detectors, policies, masks.

A :class:`Policy` is an ordered set of :class:`Rule` detectors: the built-in
ones (email addresses, payment card numbers checked with Luhn, Authorization
headers, cookies, JWTs, AWS-style access keys and secrets, private-key blocks)
plus user rules from a TOML file (regexes, HTTP header names, JSON keys).

Redaction keeps lengths: every matched byte is replaced by ``MASK`` (``*``), so
a payload, a packed event block or a string keeps its size and layout. Each
masked range is recorded as a span ``(tid, seq, slot, start, length, rule)``
relative to the payload buffer of syscall ``(tid, seq)`` at ``slot`` (the
slot numbering of :mod:`dr.schema`, ``arg | Sub << 4``), and written into the
trace as a ``{"t": "redactions"}`` record *before* the events it covers, so
replay treats those bytes as unknown rather than as a divergence (see
docs/internals.md, "Redaction"). Reports count matches per rule and never
hold a matched value.

Entry points:

- :func:`load_policy` (``None`` -> built-ins; a path -> built-ins + user rules)
- :class:`Redactor` (``bytes_``, ``payload``, ``block``, ``meta``, ``report``)
- :func:`redact_block` for ``dr capture --redact``: a raw ring-buffer span in,
  the same span masked in place plus its spans out.
- :func:`spans_by_slot` for replay: the ``redactions`` records of a trace as
  ``{(tid, seq, slot): [(start, length), ...]}``.

Payload buffers that begin like compiled code (:func:`is_code`: ELF, .pyc, Java
class, WebAssembly) are not scanned: they are the program's own code, and
masking them changes what it runs.

Limits (documented, not hidden): detection runs per payload buffer, so a
secret split across two system calls (two ``write`` calls, or two reads of a
socket) is only found when each part matches on its own.
"""

from __future__ import annotations

import bisect
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from dr.formats.redact_rules import BUILTIN_RULES, Policy, Rule, load_policy, luhn_ok
from dr.formats.trace_spec import _EVD, _PAY, _RB_LEN_MASK, RB_BUSY, RB_DISCARD, RB_HDR

__all__ = [
    "MASK", "REDACTIONS_RECORD", "BUILTIN_RULES", "Rule", "Policy", "Redactor",
    "is_code", "load_policy", "luhn_ok", "redact_block", "redactions_record", "spans_by_slot",
]

#: The byte every redacted byte becomes.
MASK = 0x2A  # "*"
#: Value of ``"t"`` of the trace record that carries redacted spans.
REDACTIONS_RECORD = "redactions"

# Ring-buffer framing of event blocks and the probe record layouts, declared once
# (formats/trace_spec.py, dr/schema/layout.py): a payload record (kind 2) carries one
# chunk of a buffer; syscall_event_data (kind 4) one whole buffer inline after its header.
_PAY_SLOT, _PAY_TID, _PAY_SEQ, _PAY_OFF, _PAY_LEN = (_PAY.fields.index(f) for f in ("slot", "tid", "seq", "offset", "len"))
_EVD_TID, _EVD_SEQ, _EVD_SLOT, _EVD_LEN = (_EVD.fields.index(f) for f in ("tid", "seq", "slot", "len"))
_RB_WORD = struct.Struct("<I")
#: Joins payload buffers for one detection pass: no built-in rule matches across it.
_SEP = b"\n\0\n"


def is_code(data: bytes) -> bool:
    """True when ``data`` begins like a compiled program or module (ELF, CPython
    .pyc, Java class, WebAssembly).

    Such a buffer is the program's own code read from disk (an interpreter reads
    a whole .pyc in one read), not a secret: its docstrings hold authors' e-mail
    addresses and its marshal bytes look like addresses ("z@Name.attr"), and
    masking them changes what the program runs, so its replay diverges.
    """
    head = data[:16]
    if head.startswith((b"\x7fELF", b"\xca\xfe\xba\xbe", b"\x00asm")):
        return True
    # .pyc (PEP 552): a 2-byte magic (CPython 3.0 is 3000-3131, 3.13 is 3571:
    # 2900-4999 leaves room), "\r\n", then a 32-bit flags word of 0-3.
    return (len(head) == 16 and head[2:4] == b"\r\n"
            and 2900 <= int.from_bytes(head[:2], "little") < 5000
            and int.from_bytes(head[4:8], "little") <= 3)


def _mask(buf: bytearray, start: int, end: int) -> None:
    buf[start:end] = bytes((MASK,)) * (end - start)


def _utf8_widen(data: bytes, start: int, end: int) -> tuple[int, int]:
    # Mask whole UTF-8 characters so a masked str still decodes (msgpack
    # stores str as strict UTF-8).
    while start > 0 and 0x80 <= data[start] < 0xC0:
        start -= 1
    while end < len(data) and 0x80 <= data[end] < 0xC0:
        end += 1
    return start, end


@dataclass
class Redactor:
    """Applies a :class:`Policy` and keeps the counts of the redaction report.

    One Redactor serves one trace (or one bundle): ``matches`` counts matches
    per rule, ``masked_bytes`` bytes masked per rule, ``places`` matches per
    place (``payload``, ``argv``, ``env``, ``note``...).
    """

    policy: Policy
    matches: Counter[str] = field(default_factory=Counter)
    masked_bytes: Counter[str] = field(default_factory=Counter)
    places: Counter[str] = field(default_factory=Counter)
    payloads_touched: int = 0

    def bytes_(self, data: bytes, place: str = "payload", *, utf8: bool = False
               ) -> tuple[bytes, list[tuple[int, int, str]]]:
        """``data`` with every match masked, and the ranges ``(start, length, rule)``.

        The result has the length of ``data``. ``utf8`` widens masks to whole
        UTF-8 characters.
        """
        found = self.policy.find(data)
        if not found:
            return data, []
        buf = bytearray(data)
        spans: list[tuple[int, int, str]] = []
        for s, e, name in found:
            if utf8:
                s, e = _utf8_widen(data, s, e)
            _mask(buf, s, e)
            self.matches[name] += 1
            self.masked_bytes[name] += e - s
            self.places[place] += 1
            spans.append((s, e - s, name))
        return bytes(buf), spans

    def text(self, value: Any, place: str) -> Any:
        """A str or bytes value with matches masked (same byte length); others unchanged."""
        if isinstance(value, str):
            raw = value.encode("utf-8", "surrogateescape")
            out, spans = self.bytes_(raw, place, utf8=True)
            return out.decode("utf-8", "surrogateescape") if spans else value
        if isinstance(value, (bytes, bytearray)):
            return self.bytes_(bytes(value), place)[0]
        return value

    def payload(self, tid: int, seq: int, slot: int, data: bytes
                ) -> tuple[bytes, list[list[Any]]]:
        """A payload buffer masked, and its spans ``[tid, seq, slot, start, length, rule]``."""
        return self.payloads([((tid, seq, slot), data)])[0]

    def payloads(self, items: list[tuple[tuple[int, int, int], bytes]]
                 ) -> list[tuple[bytes, list[list[Any]]]]:
        """Mask many payload buffers at once: ``[((tid, seq, slot), data)]`` in, per item
        ``(masked, spans)`` out, as :meth:`payload` would give.

        The buffers are joined with ``_SEP`` (no built-in pattern crosses it)
        and scanned once, so the per-rule cost is paid per batch, not per
        syscall; a user regex that crosses a separator is clipped to each buffer.
        """
        results: list[tuple[bytes, list[list[Any]]]] = [(d, []) for _k, d in items]
        scan = [i for i, (_k, d) in enumerate(items) if not is_code(d)]
        if len(scan) < len(items):
            sub = self.payloads([items[i] for i in scan])
            for i, r in zip(scan, sub):
                results[i] = r
            return results
        if not items:
            return []
        if len(items) == 1:
            joined = items[0][1]
            starts = [0]
        else:
            starts = []
            pos = 0
            for _k, d in items:
                starts.append(pos)
                pos += len(d) + len(_SEP)
            joined = _SEP.join(d for _k, d in items)
        found = self.policy.find(joined)
        if not found:
            return results
        bufs: dict[int, bytearray] = {}
        for s, e, name in found:
            i = bisect.bisect_right(starts, s) - 1
            counted = False
            while i < len(items) and starts[i] < e:
                key, data = items[i]
                lo, hi = max(s, starts[i]) - starts[i], min(e, starts[i] + len(data)) - starts[i]
                if hi > lo:
                    buf = bufs.get(i)
                    if buf is None:
                        buf = bufs[i] = bytearray(data)
                        self.payloads_touched += 1
                    _mask(buf, lo, hi)
                    results[i][1].append([key[0], key[1], key[2], lo, hi - lo, name])
                    self.masked_bytes[name] += hi - lo
                    if not counted:
                        self.matches[name] += 1
                        self.places["payload"] += 1
                        counted = True
                i += 1
        for i, buf in bufs.items():
            results[i] = (bytes(buf), results[i][1])
        return results

    def block(self, raw: bytes) -> tuple[bytes, list[list[Any]]]:
        """Mask the payload data inside a raw ring-buffer span, in place.

        ``raw`` is a sequence of records each preceded by ``struct
        bpf_ringbuf_hdr`` and padded to 8 bytes (docs/internals.md). Payload
        chunks of one (tid, seq, slot) are joined by their ``offset`` before
        detection, so a secret crossing a 16 KiB chunk boundary is found.
        Returns bytes of the same length and the spans (offsets in the whole
        payload buffer). A malformed span (a length past the end) ends the
        walk: what follows is left as it was and the trace reader reports it.
        """
        chunks: dict[tuple[int, int, int], list[tuple[int, int, int]]] = {}
        pos, n = 0, len(raw)
        pay_size, evd_size = _PAY.size, _EVD.size
        while pos + RB_HDR <= n:
            hlen = _RB_WORD.unpack_from(raw, pos)[0]
            rlen = hlen & _RB_LEN_MASK
            rec = pos + RB_HDR
            if rec + rlen > n:
                break
            kind = raw[rec] | raw[rec + 1] << 8 if rlen >= 2 else -1
            if hlen & (RB_DISCARD | RB_BUSY):
                pass
            elif kind == _PAY.kind and rlen >= pay_size:
                h = _PAY.st.unpack_from(raw, rec)
                dlen = min(h[_PAY_LEN], rlen - pay_size)
                chunks.setdefault((h[_PAY_TID], h[_PAY_SEQ], h[_PAY_SLOT]), []).append(
                    (h[_PAY_OFF], rec + pay_size, dlen))
            elif kind == _EVD.kind and rlen >= evd_size:
                h = _EVD.st.unpack_from(raw, rec)
                dlen = min(h[_EVD_LEN], rlen - evd_size)
                chunks.setdefault((h[_EVD_TID], h[_EVD_SEQ], h[_EVD_SLOT]), []).append((0, rec + evd_size, dlen))
            pos = rec + ((rlen + 7) & ~7)
        if not chunks:
            return raw, []
        # Contiguous chunks of one payload form a run; runs are detected in one batch.
        runs: list[tuple[tuple[int, int, int], list[tuple[int, int, int]]]] = []
        for key, parts in chunks.items():
            parts.sort()
            run: list[tuple[int, int, int]] = []
            for part in parts:
                if run and part[0] != run[-1][0] + run[-1][2]:
                    runs.append((key, run))
                    run = []
                run.append(part)
            runs.append((key, run))
        results = self.payloads([(key, b"".join(raw[d:d + ln] for _o, d, ln in run))
                                 for key, run in runs])
        out: bytearray | None = None
        spans: list[list[Any]] = []
        for (_key, run), (masked, sp) in zip(runs, results):
            if not sp:
                continue
            if out is None:
                out = bytearray(raw)
            cur = 0
            for _off, d, ln in run:
                out[d:d + ln] = masked[cur:cur + ln]
                cur += ln
            base = run[0][0]
            for x in sp:
                x[3] += base
            spans += sp
        return (bytes(out) if out is not None else raw), spans

    def meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        """A copy of trace metadata with argv, command, env and cwd masked.

        ``env`` may be a list of ``KEY=VALUE`` strings or a dict; dict entries
        are redacted as ``KEY=VALUE`` so keyword rules see the key. Adds
        ``meta["redaction"] = {"applied": True, "policy": ..., "rules": [...],
        "meta_spans": {"argv": [[index, start, length]], "env": [[key, start, length]]}}``
        (byte offsets in the UTF-8 string; for dict env, in ``KEY=VALUE``).
        """
        m = dict(meta)
        meta_spans: dict[str, list[list[Any]]] = {"argv": [], "env": []}

        def one(value: Any, place: str, key: Any) -> Any:
            if isinstance(value, str):
                raw = value.encode("utf-8", "surrogateescape")
                out, found = self.bytes_(raw, place, utf8=True)
                meta_spans[place].extend([key, s, n] for s, n, _ in found)
                return out.decode("utf-8", "surrogateescape") if found else value
            if isinstance(value, (bytes, bytearray)):
                out, found = self.bytes_(bytes(value), place)
                meta_spans[place].extend([key, s, n] for s, n, _ in found)
                return out
            return value

        for key in ("argv", "command"):  # command: what `dr capture -- CMD` was given
            if isinstance(m.get(key), list):
                meta_spans.setdefault(key, [])
                m[key] = [one(a, key, i) for i, a in enumerate(m[key])]
        ex = m.get("exec")  # the command line at exec (capture/cmdline.py): masked like argv
        if isinstance(ex, dict) and isinstance(ex.get("argv"), list):
            meta_spans.setdefault("exec_argv", [])
            m["exec"] = {**ex, "argv": [one(a, "exec_argv", i) for i, a in enumerate(ex["argv"])]}
        env = m.get("env")
        if isinstance(env, list):
            m["env"] = [one(e, "env", i) for i, e in enumerate(env)]
        elif isinstance(env, dict):
            new: dict[Any, Any] = {}
            for k, v in env.items():
                if isinstance(k, str) and isinstance(v, str):
                    joined = one(f"{k}={v}", "env", k)
                    new[k] = joined.encode("utf-8", "surrogateescape")[len(k.encode("utf-8", "surrogateescape")) + 1:] \
                        .decode("utf-8", "surrogateescape")
                else:
                    new[k] = one(v, "env", k)
            m["env"] = new
        if "cwd" in m:
            m["cwd"] = self.text(m["cwd"], "cwd")
        prior = m.get("redaction")
        m["redaction"] = {"applied": True, **self.policy.describe(), "meta_spans": meta_spans}
        if prior:
            m["redaction"]["prior"] = prior
        return m

    def report(self) -> dict[str, Any]:
        """The redaction report: counts per rule (zeros included), never values."""
        names = self.policy.rule_names
        return {
            "applied": True,
            "policy": self.policy.describe(),
            "matches": {n: self.matches.get(n, 0) for n in names},
            "masked_bytes": {n: self.masked_bytes.get(n, 0) for n in names},
            "matches_by_place": dict(sorted(self.places.items())),
            "payloads_redacted": self.payloads_touched,
        }


def redact_block(raw: bytes, policy: Policy | Redactor) -> tuple[bytes, list[list[Any]]]:
    """Mask secrets in a raw ring-buffer span before it reaches disk.

    For ``dr capture --redact``: ``raw`` is what ``TraceWriter.write_block``
    takes; returns ``(masked, spans)`` with ``len(masked) == len(raw)``. When
    ``spans`` is non-empty the caller writes ``redactions_record(spans)``
    *before* the block. Pass a :class:`Redactor` (not a Policy) to accumulate
    the counts of one capture.
    """
    red = policy if isinstance(policy, Redactor) else Redactor(policy)
    return red.block(raw)


def redactions_record(spans: list[list[Any]]) -> dict[str, Any]:
    """The trace record carrying ``spans`` ``[tid, seq, slot, start, length, rule]``."""
    return {"t": REDACTIONS_RECORD, "spans": spans}


def spans_by_slot(records: Iterable[Any]) -> dict[tuple[int, int, int], list[tuple[int, int]]]:
    """Index the ``redactions`` records among ``records`` (e.g. ``TraceReader.stream()``).

    Returns ``{(tid, seq, slot): [(start, length), ...]}``: byte ranges of
    the payload buffer that hold masks, not recorded bytes. Malformed entries
    are skipped; replay must still clip each range to the buffer it has.
    """
    index: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for rec in records:
        if not isinstance(rec, dict) or rec.get("t") != REDACTIONS_RECORD:
            continue
        for sp in rec.get("spans", ()):
            if (isinstance(sp, (list, tuple)) and len(sp) >= 5
                    and all(isinstance(x, int) and x >= 0 for x in sp[:5])):
                index.setdefault((sp[0], sp[1], sp[2]), []).append((sp[3], sp[4]))
    return index
