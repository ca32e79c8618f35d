"""Redaction rules: the built-in detectors (email addresses, payment cards checked
with Luhn, Authorization headers, cookies, JWTs, AWS-style keys, private-key blocks),
user rules from a TOML file, and the :class:`Policy` that orders them. How they are
applied to traces is :mod:`dr.formats.redact`."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from dr.errors import DrError


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
# The domain: labels that neither start nor end with "-", at least one dot, and a
# last label of letters that ends the name (not followed by a name byte: in
# "z@DistutilsMetaFinder.pip_imported..." of a .pyc, "pip" is no TLD).
_EMAIL_DOMAIN = re.compile(rb"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
                           rb"[A-Za-z]{2,24}(?![A-Za-z0-9_-])")
_EMAIL_LOCAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
# Bytes that may stand right before an address in text: whitespace and the
# punctuation that quotes or lists one ("<a@b.io>", "to: a@b.io", "x=a@b.io").
_EMAIL_TEXT_BEFORE = frozenset(b" \t\r\n<>\"'`(),;:=[]{}/|*&!?#$^~\\")
# A local part right after a byte of binary data must be at least this long: one
# letter there is most often a type code (marshal's "z", a short string whose
# length byte 64 is "@"), not a mailbox.
_EMAIL_MIN_LOCAL_AFTER_BINARY = 2


def _find_emails(data: bytes) -> Iterable[tuple[int, int]]:
    for m in _EMAIL_DOMAIN.finditer(data):
        at = m.start()
        j = at
        while j > 0 and at - j < 64 and data[j - 1] in _EMAIL_LOCAL:
            j -= 1
        # A local part never starts or ends with a dot ("...@x.io" is not one).
        while j < at and data[j] == 0x2E:
            j += 1
        if j >= at or data[at - 1] == 0x2E:
            continue
        if j > 0 and at - j == 64 and data[j - 1] in _EMAIL_LOCAL:
            continue  # a run longer than any local part: an identifier, not a mailbox
        before = data[j - 1] if j > 0 else None
        if before is not None and before not in _EMAIL_TEXT_BEFORE and at - j < _EMAIL_MIN_LOCAL_AFTER_BINARY:
            continue
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
