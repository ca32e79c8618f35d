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

Limits (documented, not hidden): detection runs per payload buffer, so a
secret split across two system calls (two ``write`` calls, or two reads of a
socket) is only found when each part matches on its own.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import hashlib
import os
import re
import struct
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from dr.errors import DrError

__all__ = [
    "MASK", "REDACTIONS_RECORD", "BUILTIN_RULES", "Rule", "Policy", "Redactor",
    "load_policy", "luhn_ok", "redact_block", "redactions_record", "spans_by_slot",
]

#: The byte every redacted byte becomes.
MASK = 0x2A  # "*"
#: Value of ``"t"`` of the trace record that carries redacted spans.
REDACTIONS_RECORD = "redactions"

# Ring-buffer framing of event blocks (docs/internals.md "Probe records";
# kernel include/uapi/linux/bpf.h BPF_RINGBUF_BUSY_BIT/DISCARD_BIT, struct
# bpf_ringbuf_hdr {u32 len; u32 pg_off;}), and the payload record header of
# dr/schema/layout.py: <HHIQIIQ kind slot tid seq offset len total.
_RB_HDR = struct.Struct("<II")
_RB_BUSY = 1 << 31
_RB_DISCARD = 1 << 30
_RB_LEN_MASK = ~(_RB_BUSY | _RB_DISCARD) & 0xFFFFFFFF
_PAYLOAD_KIND = 2
_PAYLOAD_HDR = struct.Struct("<HHIQIIQ")
# syscall_event_data (kind 4): a syscall event with one payload inline after a
# 120-byte header: tid at 12, seq at 16, slot at 104, data length at 108.
_EVENT_DATA_KIND = 4
_EVENT_DATA_SIZE = 120
_EVENT_DATA_KEYS = struct.Struct("<IQ")      # tid, seq at offset 12
_EVENT_DATA_SLOT = struct.Struct("<HHI")     # slot, pad, len at offset 104
#: Joins payload buffers for one detection pass: no built-in rule matches across it.
_SEP = b"\n\0\n"


def luhn_ok(digits: bytes) -> bool:
    """True when the ASCII ``digits`` pass the Luhn check (ISO/IEC 7812-1)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ch - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_ok(m: bytes) -> bool:
    digits = bytes(c for c in m if 48 <= c <= 57)
    # 0000 0000 0000 0 passes Luhn; so does any run of one digit.
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits)


def _basic_ok(m: bytes) -> bool:
    # "basic" followed by a word is ordinary prose; a Basic credential is
    # base64 of "user:password".
    try:
        return b":" in base64.b64decode(m + b"=" * (-len(m) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False


def _secret_looking(m: bytes) -> bool:
    # A bare 40-character base64 run is an AWS secret only if it looks random:
    # upper, lower, digits and a / or + (a path or an id rarely has all four).
    return (any(65 <= c <= 90 for c in m) and any(97 <= c <= 122 for c in m)
            and any(48 <= c <= 57 for c in m) and (b"/" in m or b"+" in m))


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector.

    ``name`` is what reports count under (several rules may share a name;
    overlapping matches of one name count once). ``pattern`` is a bytes regex;
    the bytes masked are those of named group ``v`` when it took part, else
    group ``n``, else the whole match. ``check`` rejects matches (Luhn).
    ``inner`` narrows the mask to its group-1 matches inside the value
    (cookie values, not cookie names). ``hint``: lowercase byte strings of
    which one must occur in the lowercased buffer for the rule to run;
    ``gate``: a cheaper test that must pass first. ``finder`` replaces
    ``pattern`` where a regex would scan every byte (capture's hot path).
    """

    name: str
    pattern: re.Pattern[bytes] | None
    check: Callable[[bytes], bool] | None = None
    inner: re.Pattern[bytes] | None = None
    hint: tuple[bytes, ...] = ()
    finder: Callable[[bytes], Iterable[tuple[int, int]]] | None = None
    gate: Callable[[bytes], bool] | None = None

    def find(self, data: bytes, lowered: bytes) -> list[tuple[int, int]]:
        """Half-open byte ranges ``(start, end)`` of ``data`` to mask."""
        if self.hint and not any(h in lowered for h in self.hint):
            return []
        return self.scan(data)

    def scan(self, data: bytes) -> list[tuple[int, int]]:
        """Like :meth:`find`, hints already known to be present."""
        if self.gate is not None and not self.gate(data):
            return []
        out: list[tuple[int, int]] = []
        if self.finder is not None:
            for start, end in self.finder(data):
                if self.check is None or self.check(data[start:end]):
                    out.append((start, end))
            return out
        assert self.pattern is not None
        for m in self.pattern.finditer(data):
            gi = m.re.groupindex
            g: int | str = 0
            for name in ("v", "n"):
                if name in gi and m.start(name) >= 0:
                    g = name
                    break
            start, end = m.span(g)
            if end <= start:
                continue
            if self.check is not None and not self.check(data[start:end]):
                continue
            if self.inner is not None:
                for im in self.inner.finditer(data, start, end):
                    if im.end(1) > im.start(1):
                        out.append(im.span(1))
            else:
                out.append((start, end))
        return out


def _r(p: bytes, flags: int = 0) -> re.Pattern[bytes]:
    return re.compile(p, flags)


_HDR_START = rb"(?<![A-Za-z0-9-])"

# Finders that avoid a regex attempt at every byte offset (a leading
# lookbehind defeats re's literal-prefix scan): ~1 ms per MiB instead of ~20.
_EMAIL_DOMAIN = re.compile(rb"@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}")
_EMAIL_LOCAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")


def _find_emails(data: bytes) -> Iterable[tuple[int, int]]:
    for m in _EMAIL_DOMAIN.finditer(data):
        at = m.start()
        j = at
        while j > 0 and at - j < 64 and data[j - 1] in _EMAIL_LOCAL:
            j -= 1
        if j < at:
            yield j, m.end()


_B64_CLASS = bytes(0x61 if (48 <= i <= 57 or 65 <= i <= 90 or 97 <= i <= 122 or i in b"/+=") else 0x20
                   for i in range(256))
_A40 = b"a" * 40
_RUN = re.compile(rb"a+")


def _find_b64_40(data: bytes) -> Iterable[tuple[int, int]]:
    # Runs of exactly 40 characters of [A-Za-z0-9/+=] (AWS secret keys).
    tr = data.translate(_B64_CLASS)
    pos = 0
    while True:
        i = tr.find(_A40, pos)
        if i < 0:
            return
        m = _RUN.match(tr, i)
        end = m.end() if m else i + 40
        if end - i == 40 and b"=" not in data[i:end]:
            yield i, end
        pos = end


# Digits -> "0", space and dash -> "-", the rest -> " ": runs of "0"/"-" are
# scanned with a literal-led regex, then the card pattern runs inside each run.
_CARD_CLASS = bytes(0x30 if 48 <= i <= 57 else 0x2D if i in (0x20, 0x2D) else 0x20 for i in range(256))
_CARD_RUN = re.compile(rb"0[0-]{12,}")
_CARD = re.compile(rb"[2-6](?<![0-9][2-6])(?:[ -]?[0-9]){12,18}(?![0-9])")


def _find_cards(data: bytes) -> Iterable[tuple[int, int]]:
    # 13-19 digits, optionally grouped by spaces or dashes, issuer digit 2-6
    # (Mastercard 2/5, Amex/JCB/Diners 3, Visa 4, Discover/UnionPay 6).
    tr = data.translate(_CARD_CLASS)
    for run in _CARD_RUN.finditer(tr):
        for m in _CARD.finditer(data, run.start(), run.end()):
            yield m.span()

#: Built-in detectors, in report order.
BUILTIN_RULES: tuple[Rule, ...] = (
    Rule("email", None, finder=_find_emails, hint=(b"@",)),
    # Luhn-checked; see _find_cards for the shape.
    Rule("card_number", None, finder=_find_cards, check=_card_ok),
    Rule("authorization", _r(
        _HDR_START + rb"(?:proxy-)?authorization[ \t]*:[ \t]*"
        rb"(?:(?:bearer|basic|digest|negotiate|token|ntlm|aws4-hmac-sha256)[ \t]+)?"
        rb"(?P<v>[^\r\n]+)", re.I), hint=(b"authorization",)),
    Rule("authorization", _r(rb"(?<![A-Za-z0-9])bearer[ \t]+(?P<v>[A-Za-z0-9._~+/=-]{8,})", re.I),
         hint=(b"bearer",)),
    Rule("authorization", _r(rb"(?<![A-Za-z0-9])basic[ \t]+(?P<v>[A-Za-z0-9+/]{8,}={0,2})", re.I),
         check=_basic_ok, hint=(b"basic",)),
    Rule("cookie", _r(_HDR_START + rb"(?:set-)?cookie[ \t]*:[ \t]*(?P<v>[^\r\n]*)", re.I),
         inner=_r(rb"=[ \t]*([^;\r\n]*)"), hint=(b"cookie",)),
    Rule("jwt", _r(rb"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
         hint=(b"eyj",)),
    Rule("aws_access_key_id", _r(
        rb"A(?<![A-Z0-9]A)(?:KIA|SIA|IDA|ROA|IPA|NPA|NVA|GPA|BIA|CCA)[A-Z0-9]{16}(?![A-Z0-9])")),
    Rule("aws_secret_key", _r(
        rb"(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?[ \t]*[:=][ \t]*[\"']?"
        rb"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])", re.I), hint=(b"secret",)),
    Rule("aws_secret_key", None, finder=_find_b64_40, check=_secret_looking),
    # user:password in a URL (http://user:pw@host/): the whole userinfo.
    Rule("url_credentials", _r(rb"[A-Za-z][A-Za-z0-9+.-]{1,15}://(?P<v>[^/\s:@]{1,256}:[^/\s@]{1,256})@"),
         hint=(b"://",)),
    Rule("private_key", _r(
        rb"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?P<v>[^\0]*?)"
        rb"(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|(?=\0)|\Z)"), hint=(b"private key",)),
)


@dataclass(frozen=True)
class Policy:
    """An ordered set of rules and the name recorded in manifests and metadata.

    ``name`` is ``builtin`` or ``builtin+<rules file name>``; ``rules_sha256``
    is the sha256 of the rules file (None for the built-ins alone).
    """

    name: str
    rules: tuple[Rule, ...]
    rules_sha256: str | None = None

    @property
    def rule_names(self) -> list[str]:
        """Distinct rule names, in order."""
        return list(dict.fromkeys(r.name for r in self.rules))

    def describe(self) -> dict[str, Any]:
        """JSON-able description (names only, never patterns' matches)."""
        return {"name": self.name, "rules": self.rule_names, "rules_sha256": self.rules_sha256}

    @functools.cached_property
    def _hints(self) -> tuple[bytes, ...]:
        return tuple(sorted({h for r in self.rules for h in r.hint}))

    def find(self, data: bytes) -> list[tuple[int, int, str]]:
        """Ranges ``(start, end, rule)`` to mask in ``data``, merged per rule.

        Detection runs on the original bytes for every rule, so nested
        secrets (a JWT inside an Authorization header) are each counted.
        """
        if len(data) < 6:
            return []
        # Which hints occur, once per buffer; rules whose hints are all absent
        # are skipped without a call each (the capture's hot path).
        lowered = data.lower()
        hits = {h for h in self._hints if h in lowered}
        out: list[tuple[int, int, str]] = []
        per: dict[str, list[tuple[int, int]]] = {}
        for rule in self.rules:
            if rule.hint and hits.isdisjoint(rule.hint):
                continue
            found = rule.scan(data)
            if found:
                per.setdefault(rule.name, []).extend(found)
        for name, ranges in per.items():
            for s, e in _merge(ranges):
                out.append((s, e, name))
        out.sort()
        return out


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for s, e in sorted(ranges):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def load_policy(rules_path: str | os.PathLike[str] | None = None) -> Policy:
    """The built-in policy, plus the user rules of TOML file ``rules_path``.

    The file may hold (all optional)::

        headers = ["X-Api-Key"]          # HTTP header names: values masked
        json_keys = ["password", "ssn"]  # JSON keys: string/number values masked
        disable = ["aws_secret_key"]     # built-in rule names to turn off

        [[regex]]
        name = "order_id"
        pattern = 'ORD-[0-9]{6}'         # Python re syntax, applied to bytes
        ignore_case = false

    A named group ``v`` in a pattern narrows the mask to that group.
    Raises :class:`dr.errors.DrError` (one line naming the file and rule)
    for an unreadable file, bad TOML, an unknown key or a bad regex.
    """
    if rules_path is None:
        return Policy("builtin", BUILTIN_RULES)
    path = os.fspath(rules_path)
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
    except OSError as e:
        raise DrError(f"cannot read redaction rules {path}: {e.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DrError(f"redaction rules {path}: not valid TOML ({e})") from None
    known = {"headers", "json_keys", "disable", "regex"}
    extra = set(doc) - known
    if extra:
        raise DrError(f"redaction rules {path}: unknown key {sorted(extra)[0]!r} "
                         f"(expected {', '.join(sorted(known))})")

    def str_list(key: str) -> list[str]:
        v = doc.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise DrError(f"redaction rules {path}: {key} must be a list of non-empty strings")
        return v

    disable = set(str_list("disable"))
    unknown = disable - {r.name for r in BUILTIN_RULES}
    if unknown:
        raise DrError(f"redaction rules {path}: disable names unknown rule {sorted(unknown)[0]!r}")
    rules = [r for r in BUILTIN_RULES if r.name not in disable]
    for h in str_list("headers"):
        rules.append(Rule(f"header:{h.lower()}", _r(
            _HDR_START + re.escape(h.encode()) + rb"[ \t]*:[ \t]*(?P<v>[^\r\n]*)", re.I),
            hint=(h.lower().encode(),)))
    for k in str_list("json_keys"):
        rules.append(Rule(f"json:{k}", _r(
            rb'"' + re.escape(k.encode()) + rb'"[ \t\r\n]*:[ \t\r\n]*'
            rb'(?:"(?P<v>(?:[^"\\\0]|\\.)*)"|(?P<n>-?[0-9][0-9.eE+-]*|true|false))'),
            hint=(k.lower().encode(),)))
    regexes = doc.get("regex", [])
    if not isinstance(regexes, list):
        raise DrError(f"redaction rules {path}: regex must be an array of tables ([[regex]])")
    for i, item in enumerate(regexes):
        if not isinstance(item, dict) or not isinstance(item.get("pattern"), str):
            raise DrError(f"redaction rules {path}: [[regex]] #{i + 1} needs a pattern string")
        name = item.get("name", f"regex{i + 1}")
        if not isinstance(name, str) or not name:
            raise DrError(f"redaction rules {path}: [[regex]] #{i + 1} name must be a string")
        try:
            pat = re.compile(item["pattern"].encode(), re.I if item.get("ignore_case") else 0)
        except re.error as e:
            raise DrError(f"redaction rules {path}: rule {name!r}: bad regex ({e})") from None
        if pat.match(b""):
            raise DrError(f"redaction rules {path}: rule {name!r}: pattern matches the empty string")
        rules.append(Rule(name, pat))
    return Policy(f"builtin+{os.path.basename(path)}", tuple(rules),
                  hashlib.sha256(raw).hexdigest())


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
        results: list[tuple[bytes, list[list[Any]]]] = [(d, []) for _k, d in items]
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
        while pos + 8 <= n:
            hlen, _pg = _RB_HDR.unpack_from(raw, pos)
            rlen = hlen & _RB_LEN_MASK
            rec = pos + 8
            if rec + rlen > n:
                break
            if (not hlen & (_RB_DISCARD | _RB_BUSY) and rlen >= _PAYLOAD_HDR.size
                    and raw[rec] | raw[rec + 1] << 8 == _PAYLOAD_KIND):
                _k, slot, tid, seq, off, dlen, _total = _PAYLOAD_HDR.unpack_from(raw, rec)
                dstart = rec + _PAYLOAD_HDR.size
                dlen = min(dlen, rlen - _PAYLOAD_HDR.size)
                chunks.setdefault((tid, seq, slot), []).append((off, dstart, dlen))
            elif (not hlen & (_RB_DISCARD | _RB_BUSY) and rlen >= _EVENT_DATA_SIZE
                    and raw[rec] | raw[rec + 1] << 8 == _EVENT_DATA_KIND):
                tid, seq = _EVENT_DATA_KEYS.unpack_from(raw, rec + 12)
                slot, _pad, dlen = _EVENT_DATA_SLOT.unpack_from(raw, rec + 104)
                dlen = min(dlen, rlen - _EVENT_DATA_SIZE)
                chunks.setdefault((tid, seq, slot), []).append((0, rec + _EVENT_DATA_SIZE, dlen))
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
