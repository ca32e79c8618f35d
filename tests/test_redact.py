"""Redaction detectors, policies and the in-place masking of raw event blocks."""

from __future__ import annotations

import base64
import json
import struct

import pytest
from hypothesis import given, settings, strategies as st

from dr.errors import DrError
from dr.formats.redact import (
    MASK, Redactor, load_policy, luhn_ok, redact_block, redactions_record, spans_by_slot,
)
from dr.formats.trace import Event, Payload, encode_block
from dr import schema

POLICY = load_policy()
JWT = (b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
       b"SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")


def masked(data: bytes, policy=POLICY) -> tuple[bytes, Redactor]:
    r = Redactor(policy)
    out, _ = r.bytes_(data)
    assert len(out) == len(data)
    return out, r


@pytest.mark.parametrize("secret,rule", [
    (b"alice.smith@example.com", "email"),
    (b"4111111111111111", "card_number"),
    (b"4111 1111 1111 1111", "card_number"),
    (b"5500-0000-0000-0004", "card_number"),
    (b"378282246310005", "card_number"),
    (JWT, "jwt"),
    (b"AKIAZ3MPLQ7RT5VX2WQA", "aws_access_key_id"),
    (b"ASIAZ3MPLQ7RT5VX2WQB", "aws_access_key_id"),
])
def test_builtin_detector_masks_whole_value(secret, rule):
    data = b"before " + secret + b" after"
    out, r = masked(data)
    assert out == b"before " + b"*" * len(secret) + b" after"
    assert r.matches[rule] == 1


def test_url_credentials():
    out, r = masked(b"GET http://ops:hunter2@db.internal:5432/x and https://example.org/a@b")
    assert out.startswith(b"GET http://***********") and out.endswith(b" and https://example.org/a@b")
    assert r.matches["url_credentials"] == 1


def test_luhn():
    assert luhn_ok(b"4111111111111111") and luhn_ok(b"79927398713")
    assert not luhn_ok(b"4111111111111112")


def test_non_cards_are_kept():
    # Luhn-invalid card, a ns timestamp (issuer digit 1), a run of zeros, a phone number.
    data = b"4111111111111112 1764492671000000000 0000000000000000 +1 555 123 4567"
    out, r = masked(data)
    assert out == data and not r.matches


def test_http_headers_keep_names_and_mask_values():
    basic = base64.b64encode(b"ops:hunter2")
    data = (b"GET / HTTP/1.1\r\nHost: example.org\r\nAuthorization: Basic " + basic +
            b"\r\nProxy-Authorization: Bearer tok-123456789\r\nCookie: sid=abc123; theme=dark\r\n"
            b"Set-Cookie: session=s3cr3t; Path=/\r\n\r\n")
    out, r = masked(data)
    assert b"Authorization: Basic " + b"*" * len(basic) + b"\r\n" in out
    assert b"Proxy-Authorization: Bearer " + b"*" * 13 + b"\r\n" in out
    assert b"Cookie: sid=******; theme=****\r\n" in out
    assert b"Set-Cookie: session=******; Path=*\r\n" in out
    assert b"Host: example.org" in out
    assert r.matches["authorization"] == 2 and r.matches["cookie"] == 4


def test_basic_in_prose_is_kept():
    data = b"some basic information about the thing"
    assert masked(data)[0] == data


def test_aws_secret_by_keyword_and_by_shape():
    secret = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz9SECRET1"
    assert len(secret) == 40
    for data in (b"aws_secret_access_key = " + secret, b'{"SecretAccessKey": "' + secret + b'"}',
                 b"token " + secret + b" end"):
        out, r = masked(data)
        assert secret not in out and r.matches["aws_secret_key"] == 1
    # A 40-char hex digest (a git sha) is not a secret.
    sha = b"0123456789abcdef0123456789abcdef01234567"
    assert masked(b"commit " + sha)[0] == b"commit " + sha


def test_private_key_block_body_masked_even_without_end():
    body = b"\nMIIEowIBAAKCAQEA7x\nq2w3e4r5t6y7u8\n"
    data = b"-----BEGIN RSA PRIVATE KEY-----" + body + b"-----END RSA PRIVATE KEY-----\n"
    out, r = masked(data)
    assert out == data.replace(body, b"*" * len(body)) and r.matches["private_key"] == 1
    cut = b"x -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
    out, _ = masked(cut)
    assert out.endswith(b"-----BEGIN PRIVATE KEY-----" + b"*" * 33)


def test_nested_secrets_counted_once_each():
    data = b"Authorization: Bearer " + JWT + b"\r\n"
    out, r = masked(data)
    assert JWT not in out and r.matches["authorization"] == 1 and r.matches["jwt"] == 1


def test_user_rules(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('headers = ["X-Api-Key"]\njson_keys = ["password", "pin"]\n'
                     'disable = ["email"]\n\n[[regex]]\nname = "order_id"\npattern = \'ORD-[0-9]{6}\'\n')
    pol = load_policy(rules)
    assert pol.name == "builtin+rules.toml" and len(pol.rules_sha256) == 64
    data = (b'X-Api-Key: k-9f8e7d\r\n{"password": "p\\"w d", "pin": 1234, "user": "a@b.example"} '
            b"ORD-123456")
    out, r = masked(data, pol)
    assert out == (b'X-Api-Key: ********\r\n{"password": "******", "pin": ****, "user": "a@b.example"} '
                   b"**********")
    assert dict(r.matches) == {"header:x-api-key": 1, "json:password": 1, "json:pin": 1, "order_id": 1}


@pytest.mark.parametrize("text,msg", [
    ("headers = 3", "headers must be a list"),
    ("[[regex]]\nname = 'x'\npattern = '('\n", "rule 'x': bad regex"),
    ("[[regex]]\npattern = 'a*'\n", "matches the empty string"),
    ("colour = 1", "unknown key 'colour'"),
    ("disable = ['nope']", "unknown rule 'nope'"),
    ("headers = [", "not valid TOML"),
])
def test_bad_rules_one_line(tmp_path, text, msg):
    rules = tmp_path / "r.toml"
    rules.write_text(text)
    with pytest.raises(DrError) as ei:
        load_policy(rules)
    assert msg in str(ei.value) and str(rules) in str(ei.value) and "\n" not in str(ei.value)


def test_missing_rules_file(tmp_path):
    with pytest.raises(DrError, match="cannot read redaction rules"):
        load_policy(tmp_path / "absent.toml")


def test_meta_argv_env_list_and_dict():
    r = Redactor(POLICY)
    meta = {"argv": ["curl", "-u", "ops@example.com:pw", "-H", "Authorization: Bearer abcdefgh123"],
            "env": ["HOME=/root", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz9SECRET1",
                    "NAME=Zoë é@ex.com"], "cwd": "/home/bob@example.com",
            "command": ["curl", "-u", "ops@example.com:pw"]}
    out = r.meta(meta)
    assert out["argv"][2] == "***************:pw"
    assert out["argv"][4] == "Authorization: Bearer " + "*" * 11
    assert out["env"][1] == "AWS_SECRET_ACCESS_KEY=" + "*" * 40
    assert out["env"][0] == "HOME=/root" and out["cwd"] == "/home/" + "*" * 15
    # Masks cover whole UTF-8 characters: the string still encodes, bytes keep their length.
    assert len(out["env"][2].encode()) == len(meta["env"][2].encode())
    assert out["redaction"]["applied"] and out["redaction"]["name"] == "builtin"
    assert [2, 0, 15] in out["redaction"]["meta_spans"]["argv"]
    assert out["command"][2] == "***************:pw" and out["redaction"]["meta_spans"]["command"]
    envd = r.meta({"env": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz9SECRET1",
                           "X": "1"}})["env"]
    assert envd == {"AWS_SECRET_ACCESS_KEY": "*" * 40, "X": "1"}
    assert meta["argv"][2] == "ops@example.com:pw"  # the input is not modified


def test_report_has_counts_never_values():
    r = Redactor(POLICY)
    secret = b"alice.smith@example.com 4111111111111111"
    r.bytes_(secret)
    text = json.dumps(r.report())
    assert "alice" not in text and "4111" not in text
    assert r.report()["matches"]["email"] == 1 and r.report()["matches"]["jwt"] == 0


def _ev(tid, seq, data, slot=1):
    return Event(tid, schema.by_name("write").nr, (1, 0, len(data), 0, 0, 0), len(data), 1, 2, tid, seq,
                 payloads={slot: Payload(slot, data)})


def test_redact_block_in_place_across_chunks():
    chunk = schema.CHUNK
    card = b"4111 1111 1111 1111"
    # The card straddles the 16 KiB chunk boundary of the payload records.
    big = b"a" * (chunk - 7) + card + b"b" * 100
    raw = encode_block([_ev(7, 1, b"mail alice@example.com"), _ev(7, 2, big),
                        _ev(8, 1, b"nothing here")])
    out, spans = redact_block(raw, POLICY)
    assert len(out) == len(raw)
    assert card not in out and b"alice@example.com" not in out
    # Only payload bytes change: every other byte (headers, events) is identical.
    diff = [i for i in range(len(raw)) if raw[i] != out[i]]
    assert len(diff) == len("alice@example.com") + len(card)
    assert sorted(s[:5] for s in spans) == [[7, 1, 1, 5, 17], [7, 2, 1, chunk - 7, len(card)]]
    idx = spans_by_slot([redactions_record(spans), {"t": "loss"}, object()])
    assert idx == {(7, 1, 1): [(5, 17)], (7, 2, 1): [(chunk - 7, len(card))]}


def test_redact_block_skips_discarded_and_malformed():
    raw = bytearray(encode_block([_ev(7, 1, b"alice@example.com")]))
    struct.pack_into("<I", raw, 0, struct.unpack_from("<I", raw, 0)[0] | (1 << 30))  # DISCARD
    out, spans = redact_block(bytes(raw), POLICY)
    assert out == bytes(raw) and spans == []
    out, spans = redact_block(bytes(raw[:20]), POLICY)  # cut inside a record
    assert out == bytes(raw[:20]) and spans == []


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([b"", b"bob@example.com", b"4111111111111111",
                                                  b"Authorization: Bearer zzzzzzzz12\r\n"]))
def test_masking_keeps_length_and_is_idempotent(data, secret):
    buf = data[:len(data) // 2] + secret + data[len(data) // 2:]
    out, _ = masked(buf)
    assert len(out) == len(buf)
    assert all(a == b or b == MASK for a, b in zip(buf, out))
    assert masked(out)[0] == out


PIECES = [b"alice@example.com", b"4111 1111 1111 1111", b"Authorization: Bearer abcdefgh1234",
          b"Cookie: a=1; b=2", JWT, b"AKIAZ3MPLQ7RT5VX2WQA", b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz9SECRET1",
          b"-----BEGIN PRIVATE KEY-----\nMIIE", b"-----END PRIVATE KEY-----", b"http://u:p@h/",
          b"\n", b"\0", b" ", b"x", b"@", b"-", b"7", b"eyJ"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES) | st.binary(max_size=8), max_size=8).map(b"".join),
                min_size=1, max_size=6))
def test_batched_detection_equals_one_by_one(bufs):
    items = [((1, i + 1, 1), b) for i, b in enumerate(bufs)]
    one = [Redactor(POLICY).payload(*k, d) for k, d in items]
    many = Redactor(POLICY).payloads(items)
    assert many == one


@pytest.mark.parametrize("data", [
    # marshal in a .pyc: type code "z", then the length byte 64 ("@"), then a name
    b"\x00r8\x00\x00\x00z@DistutilsMetaFinder.pip_imported_during_build.<locals>.<genexpr>\x9d",
    b"\x07a@example.com",           # one letter after binary data: a type code
    b"see ...@example.com here",    # a local part never starts or ends with a dot
    b"user@host-.example.com",      # a label never ends with "-"
    b"call obj@module.attr_name()",  # "attr" followed by "_" is no TLD
])
def test_email_rule_ignores_what_is_not_an_address(data):
    assert masked(data)[0] == data


@pytest.mark.parametrize("data,addr", [
    (b"\x11alice@example.com\x00", b"alice@example.com"),   # a length-prefixed string
    (b"To: <Bob.Ops+x@Mail.Example.ORG>\r\n", b"Bob.Ops+x@Mail.Example.ORG"),
    (b'{"u":"a@b.io"}', b"a@b.io"),
])
def test_email_rule_masks_real_addresses(data, addr):
    out, r = masked(data)
    assert out == data.replace(addr, b"*" * len(addr)) and r.matches["email"] == 1


def _pyc(body: bytes) -> bytes:
    import importlib.util
    return importlib.util.MAGIC_NUMBER + b"\0" * 12 + body


def test_code_payloads_are_not_masked_but_others_in_the_batch_are():
    # A module's docstring holds its author's address; the module is the program's
    # code (masking it changes what runs), a request payload beside it is data.
    pyc = _pyc(b"z\x1aby Guido <guido@python.org>\x00")
    elf = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"ops@example.com"
    req = b"POST / HTTP/1.1\r\n\r\nemail=alice@example.com"
    r = Redactor(POLICY)
    res = r.payloads([((1, 1, 1), pyc), ((1, 2, 1), req), ((1, 3, 1), elf)])
    assert res[0] == (pyc, []) and res[2] == (elf, [])
    assert res[1][0] == req.replace(b"alice@example.com", b"*" * 17)
    assert res[1][1] == [[1, 2, 1, req.index(b"alice"), 17, "email"]]
    assert r.matches["email"] == 1 and r.payloads_touched == 1
    # A binary message that only looks like a .pyc header (no CPython magic) is scanned.
    other = b"\x00\x00\r\n" + b"\0" * 12 + b" ops@example.com"
    assert Redactor(POLICY).payloads([((1, 4, 1), other)])[0][1] != []


def test_python_bundle_replays_faithful_with_default_redaction(tmp_path):
    # python3 reads its .pyc modules with read(); a bundle masked bytes of one
    # ("z@DistutilsMetaFinder.pip_...") and the replay diverged at its error message.
    import subprocess
    import sys
    from pathlib import Path
    dr = str(Path(sys.executable).with_name("dr"))
    t, b = tmp_path / "p.drt", tmp_path / "p.drb"
    run = lambda *a: subprocess.run([dr, *a], capture_output=True, text=True, timeout=120)  # noqa: E731
    cap = run("capture", "-q", "-o", str(t), "--", "/usr/bin/python3",
              "-c", "print(1)")
    assert cap.returncode == 0 and cap.stdout == "1\n", cap.stderr
    made = run("bundle", "create", str(t), "-o", str(b))
    assert made.returncode == 0 and "redacted (builtin)" in made.stdout, made.stderr
    rep = run("replay", str(b))
    assert rep.returncode == 0 and "faithful" in rep.stdout + rep.stderr, rep.stdout + rep.stderr
