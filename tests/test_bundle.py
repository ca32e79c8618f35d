"""dr bundle: create/verify/info, redaction of planted secrets, hostile archives."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from dr import schema
from dr.errors import BundleError, ExitCode
from dr.formats import bundle as B
from dr.formats.redact import spans_by_slot
from dr.formats.trace import HEADER, Event, Payload, TraceReader, TraceWriter

DR = [str(Path(sys.executable).with_name("dr"))]

# The planted secrets: every one must be gone from a redacted bundle.
EMAILS = [b"alice.smith@example.com", b"bob+ops@mail.example.org"]
CARDS = [b"4111111111111111", b"5500 0000 0000 0004", b"378282246310005"]
JWT = (b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInJvbGUiOiJhZG1pbiJ9."
       b"kq3cW6dK1aHqVt0bYxU8mQ2rL9sN4pT7vZ1wX3yA5bC")
AWS_ID = b"AKIAZ3MPLQ7RT5VX2WQA"
AWS_SECRET = b"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"
BASIC = base64.b64encode(b"ops:hunter2-very-secret")
BEARER = b"sk-live-Zq8Wm3Nx4Vb7"
SECRETS = EMAILS + CARDS + [JWT, AWS_ID, AWS_SECRET, BASIC, BEARER] + JWT.split(b".")


def _sa(port: int) -> bytes:
    return struct.pack("<HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton("127.0.0.1"))


def http_trace(path: Path) -> Path:
    """A curl-like HTTP exchange carrying the planted secrets in payloads, argv and env."""
    nr = lambda n: schema.by_name(n).nr  # noqa: E731
    req = (b"POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\n"
           b"Authorization: Bearer " + BEARER + b"\r\nCookie: session=" + JWT + b"; lang=en\r\n"
           b"Content-Type: application/json\r\n\r\n"
           b'{"email": "' + EMAILS[0] + b'", "card": "' + CARDS[1] + b'"}')
    body = (b'{"customer": "' + EMAILS[1] + b'", "cards": ["' + CARDS[0] + b'", "' + CARDS[2] + b'"], '
            b'"aws": {"AccessKeyId": "' + AWS_ID + b'", "SecretAccessKey": "' + AWS_SECRET + b'"}}')
    # A large response with a card straddling the 16 KiB payload chunk boundary.
    pad = b"x" * (schema.CHUNK - 300 - 8)
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: sid=" + BASIC +
            b"; Path=/\r\n\r\n" + pad + b" " + CARDS[0] + b" " + body)
    meta = {
        "tool": "dr", "version": "0.1.0", "host": "prod-7", "hostname": "prod-7", "kernel": "6.18.0",
        "arch": "x86_64", "mode": "spawn", "pid": 4242, "tids": [4242],
        "exe": {"path": shutil.which("curl") or "/usr/bin/curl", "build_id": None, "sha256": None},
        "argv": ["curl", "-u", "ops:hunter2", "-H", "Authorization: Basic " + BASIC.decode(),
                 "-H", "X-Token: " + JWT.decode(), "--data", "email=" + EMAILS[0].decode(),
                 "http://127.0.0.1:8080/api/orders"],
        "env": ["HOME=/root", "AWS_ACCESS_KEY_ID=" + AWS_ID.decode(),
                "AWS_SECRET_ACCESS_KEY=" + AWS_SECRET.decode(), "OWNER=" + EMAILS[1].decode()],
        "command": ["curl", "-u", "ops:hunter2", "-H", "Authorization: Basic " + BASIC.decode()],
        "cwd": "/srv", "uid": 0, "gid": 0, "snaplen": 262144, "started_ns": 5_000_000_000,
        "clock": {"realtime_ns": 1_764_490_000_000_000_000, "boottime_ns": 0},
        "maps": [{"path": "/usr/lib/x86_64-linux-gnu/libc.so.6", "build_id": None, "sha256": None}],
        "fds": [],
    }
    t = 5_000_000_000
    evs = [
        Event(4242, nr("socket"), (2, 1, 6, 0, 0, 0), 5, t, t + 1000, 4242, 1),
        Event(4242, nr("connect"), (5, 0, 16, 0, 0, 0), 0, t + 2000, t + 9000, 4242, 2,
              payloads={1: Payload(1, _sa(8080))}),
        Event(4242, nr("sendto"), (5, 0, len(req), 0, 0, 0), len(req), t + 10000, t + 12000, 4242, 3,
              payloads={1: Payload(1, req)}),
        Event(4242, nr("recvfrom"), (5, 0, 65536, 0, 0, 0), len(resp), t + 20000, t + 900000, 4242, 4,
              payloads={1: Payload(1, resp)}),
        Event(4242, nr("close"), (5, 0, 0, 0, 0, 0), 0, t + 910000, t + 911000, 4242, 5),
    ]
    w = TraceWriter(path, meta)
    w.write_events(evs[:2])
    w.write_loss(cause="RINGBUF_EVENT", count=0, cpu=0)
    w.write_events(evs[2:])
    w.close({"events": 5, "payload_bytes": len(req) + len(resp) + 16, "losses": {},
             "duration_ns": 911000, "stop_reason": "exit", "exit_status": 0,
             "syscalls": {"socket": 1, "connect": 1, "sendto": 1, "recvfrom": 1, "close": 1}})
    return path


def members(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Every member of a (trusted, test-made) bundle, decompressed."""
    with open(bundle, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    out = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for ti in tar.getmembers():
            f = tar.extractfile(ti)
            out.append((ti, f.read() if f else b""))
    return out


def trace_frames(data: bytes) -> list[bytes]:
    """Every frame of a trace, decompressed (docs/trace-format.md: header, then u32 len + zstd frame)."""
    pos, out = HEADER.size, []
    while pos + 4 <= len(data):
        n = struct.unpack_from("<I", data, pos)[0]
        out.append(zstandard.ZstdDecompressor().decompress(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    assert pos == len(data)
    return out


def every_decompressed_byte(bundle: Path) -> list[bytes]:
    with open(bundle, "rb") as f:
        whole = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    blobs = [whole]
    for ti, data in members(bundle):
        if ti.name.startswith("traces/"):
            blobs += trace_frames(data)
    return blobs


def rebuild(bundle: Path, out: Path, items: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in items:
            tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    out.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return out


def reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    return ti, data


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    trace = http_trace(d / "incident.drt")
    res = B.create([trace], d / "incident.drb", note="p99 spike, reported by " + EMAILS[0].decode(),
                   ticket="OPS-4711", include_binaries=True)
    return d, trace, res


def test_planted_secrets_gone_from_every_decompressed_byte(made):
    d, trace, res = made
    raw_trace = trace.read_bytes()
    blobs = every_decompressed_byte(d / "incident.drb")
    assert len(blobs) > 3
    for s in SECRETS:
        # Positive control: the source trace (decompressed) holds it...
        assert any(s in f for f in trace_frames(raw_trace)), s
        for blob in blobs:  # ...the bundle nowhere.
            assert s not in blob, s
    # Cards are gone in their digits-only spelling too.
    for blob in blobs:
        assert b"5500000000000004" not in blob


def test_redaction_report_counts_each_rule(made):
    d, _trace, res = made
    report = json.loads(dict((ti.name, b) for ti, b in members(d / "incident.drb"))["redaction-report.json"])
    m = report["matches"]
    # payloads: 2 emails + 1 (request body); argv: 1; env: 1; note: 1
    assert m["email"] == 5
    assert m["card_number"] == 4            # request 1, response 3
    assert m["jwt"] == 2                    # cookie value, argv X-Token
    assert m["aws_access_key_id"] == 2      # response, env
    assert m["aws_secret_key"] == 2         # response, env
    assert m["authorization"] == 3          # request Bearer, argv and command Basic
    assert m["cookie"] == 4                 # session, lang, sid, Path
    assert report["matches_by_place"]["argv"] == 3 and report["matches_by_place"]["env"] == 3
    assert report["matches_by_place"]["command"] == 1
    text = json.dumps(report)
    assert not any(s.decode() in text for s in SECRETS)
    man = res.manifest
    assert man["redaction"] == {"applied": True, "policy": report["policy"], "report": "redaction-report.json"}


def test_redacted_trace_keeps_layout_and_records_spans(made):
    d, trace, _res = made
    with B.open_bundle(d / "incident.drb") as ob:
        with TraceReader(trace) as a, TraceReader(ob.traces[0]) as b:
            ea, eb = list(a.events()), list(b.events())
            assert [(e.name, e.ret, e.seq) for e in ea] == [(e.name, e.ret, e.seq) for e in eb]
            assert b.summary == a.summary and b.losses == a.losses
            assert b.meta["redaction"]["applied"] is True
            idx = spans_by_slot(b.stream())
            for x, y in zip(ea, eb):
                for slot, p in x.payloads.items():
                    q = y.payloads[slot]
                    assert len(q.data) == len(p.data) and q.total == p.total
                    # Differences are exactly the recorded spans, filled with the mask.
                    diff = {i for i in range(len(p.data)) if p.data[i] != q.data[i]}
                    spans = idx.get((x.tid, x.seq, slot), [])
                    covered = {i for s, n in spans for i in range(s, s + n)}
                    assert diff <= covered and all(q.data[i] == 0x2A for i in covered)
            assert (4242, 4, 1) in idx and (4242, 1, 1) not in idx


def test_manifest_facts(made):
    d, _trace, res = made
    man = res.manifest
    assert man["bundle_format_version"] == B.BUNDLE_FORMAT_VERSION and man["ticket"] == "OPS-4711"
    assert man["host"]["kernel"] == os.uname().release and man["host"]["cpu"]["flags"]
    t = man["traces"][0]
    assert t["member"] == "traces/incident.drt" and t["complete"] and t["events"] == 5
    assert t["summary"]["syscalls"]["recvfrom"] == 1
    assert {"direction": "outbound", "address": "127.0.0.1:8080", "count": 1} in t["connections"]
    exe = man["binaries"][0]
    assert exe["role"] == "exe" and exe["build_id"] == B.elf_build_id(exe["path"])
    assert exe["member"] == "binaries/" + hashlib.sha256(Path(exe["path"]).read_bytes()).hexdigest()
    names = [ti.name for ti, _ in members(d / "incident.drb")]
    assert names[:4] == ["manifest.json", "manifest.sha256", "README.md", "redaction-report.json"]
    assert set(names[4:]) == set(man["members"]) - {"README.md", "redaction-report.json"}


def test_tar_zstd_lists_it(made):
    if not shutil.which("zstd"):
        pytest.skip("zstd program absent (scripts/setup.sh installs it)")
    d, _trace, res = made
    out = subprocess.run(["tar", "--zstd", "-tf", str(d / "incident.drb")], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "manifest.json" and "traces/incident.drt" in out


def test_verify_ok_and_cli(made):
    d, _trace, _res = made
    res = B.verify(d / "incident.drb")
    assert res.events == {"traces/incident.drt": 5}
    p = subprocess.run(DR + ["bundle", "verify", str(d / "incident.drb")], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("ok: "), p.stderr


def test_verify_detects_a_flipped_byte_in_every_member(made, tmp_path):
    d, _trace, _res = made
    items = members(d / "incident.drb")
    for i, (ti, data) in enumerate(items):
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x01
        bad = rebuild(d / "incident.drb", tmp_path / f"bad{i}.drb",
                      items[:i] + [(ti, bytes(flipped))] + items[i + 1:])
        with pytest.raises(BundleError) as ei:
            B.verify(bad)
        msg = str(ei.value)
        named = "manifest.json" if ti.name == "manifest.sha256" else ti.name
        assert named in msg and "\n" not in msg, msg
        assert ei.value.exit_code == ExitCode.MISMATCH
    # The CLI: one line naming the member, exit code MISMATCH, no traceback.
    p = subprocess.run(DR + ["bundle", "verify", str(tmp_path / "bad4.drb")], capture_output=True,
                       text=True)
    assert p.returncode == ExitCode.MISMATCH
    assert p.stderr.count("\n") == 1 and items[4][0].name in p.stderr and "Traceback" not in p.stderr


def test_verify_detects_corrupt_compressed_stream(made, tmp_path):
    d, _trace, _res = made
    data = bytearray((d / "incident.drb").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "c.drb").write_bytes(data)
    with pytest.raises(BundleError, match="corrupt|does not match|cut short"):
        B.verify(tmp_path / "c.drb")


def test_verify_names_a_missing_member(made, tmp_path):
    d, _trace, _res = made
    items = [it for it in members(d / "incident.drb") if not it[0].name.startswith("binaries/")]
    with pytest.raises(BundleError, match=r"member binaries/[0-9a-f]{64} is listed .* missing"):
        B.verify(rebuild(d / "incident.drb", tmp_path / "m.drb", items))


def test_info_prints_without_extracting(made, tmp_path):
    d, _trace, _res = made
    work, tmp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    p = subprocess.run(DR + ["bundle", "info", str(d / "incident.drb")], cwd=work, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "Ticket: OPS-4711" in p.stdout and "| recvfrom | 1 |" in p.stdout
    assert "outbound 127.0.0.1:8080" in p.stdout and "traces/incident.drt" in p.stdout
    assert "How long: 0.001 s; 5 syscalls; complete" in p.stdout
    assert list(work.iterdir()) == [] and list(tmp.iterdir()) == []


def test_info_reads_only_the_head(made, tmp_path):
    # A bundle whose trace member is corrupt still gives its info (nothing past the head is read).
    d, _trace, _res = made
    items = members(d / "incident.drb")
    items[4] = (items[4][0], b"\0" * len(items[4][1]))
    bi = B.info(rebuild(d / "incident.drb", tmp_path / "h.drb", items))
    assert bi.manifest["ticket"] == "OPS-4711" and "Top syscalls" in bi.readme


def test_no_redact_is_recorded_and_keeps_secrets(tmp_path):
    trace = http_trace(tmp_path / "t.drt")
    res = B.create([trace], tmp_path / "raw.drb", redact=False)
    assert res.manifest["redaction"]["applied"] is False
    assert res.manifest["redaction"]["reason"] == "--no-redact"
    assert any(AWS_SECRET in blob for blob in every_decompressed_byte(tmp_path / "raw.drb"))
    assert "NOT applied" in B.info(tmp_path / "raw.drb").readme
    p = subprocess.run(DR + ["bundle", "create", str(trace), "-o", str(tmp_path / "x.drb"), "--no-redact",
                             "--rules", str(tmp_path / "r.toml")], capture_output=True, text=True)
    assert p.returncode == ExitCode.USAGE and "contradict" in p.stderr


def test_cli_create_with_rules(tmp_path):
    trace = http_trace(tmp_path / "t.drt")
    rules = tmp_path / "rules.toml"
    rules.write_text('headers = ["User-Agent"]\n')
    p = subprocess.run(DR + ["bundle", "create", str(trace), "-o", str(tmp_path / "r.drb"), "--rules",
                             str(rules), "--ticket", "T-1"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "redacted (builtin+rules.toml)" in p.stdout and "header:user-agent 1" in p.stdout
    assert not any(b"curl/7.88.1" in b for b in every_decompressed_byte(tmp_path / "r.drb"))


def test_two_traces_and_a_truncated_one(tmp_path):
    a = http_trace(tmp_path / "a.drt")
    b = tmp_path / "sub"
    b.mkdir()
    b = http_trace(b / "a.drt")
    # Cut the second trace before its summary frame.
    data = b.read_bytes()
    frames_end = HEADER.size
    offs = []
    while frames_end < len(data):
        offs.append(frames_end)
        frames_end += 4 + struct.unpack_from("<I", data, frames_end)[0]
    b.write_bytes(data[:offs[-1]])
    res = B.create([a, b], tmp_path / "two.drb")
    assert [t["member"] for t in res.manifest["traces"]] == ["traces/a.drt", "traces/a-2.drt"]
    assert [t["complete"] for t in res.manifest["traces"]] == [True, False]
    assert any("cut short" in w for w in res.warnings)
    v = B.verify(tmp_path / "two.drb")
    assert v.events == {"traces/a.drt": 5, "traces/a-2.drt": 5} and "already cut short" in v.notes[0]


def test_open_bundle_and_check_binaries(made, tmp_path):
    d, _trace, _res = made
    with B.open_bundle(d / "incident.drb", dir=str(tmp_path)) as ob:
        root = ob.dir
        assert ob.traces[0].is_file() and ob.traces[0].parent == root / "traces"
        assert B.check_binaries(ob) == []
        exe = ob.binaries[0]
        assert exe["file"].read_bytes() == Path(exe["path"]).read_bytes()
        exe["build_id"] = "00" * 20
        warns = B.check_binaries(ob)
        assert len(warns) == 1 and "build-id differs" in warns[0]
        with pytest.raises(BundleError, match="--strict-binaries"):
            B.check_binaries(ob, strict=True)
        ob.binaries.append({"path": "/nonexistent/libgone.so", "build_id": "ab", "role": "library"})
        assert "missing on this host" in B.check_binaries(ob)[-1]
    assert not root.exists()


def test_is_bundle(made):
    d, trace, _res = made
    assert B.is_bundle(d / "incident.drb") and not B.is_bundle(trace)
    with pytest.raises(BundleError, match="is a trace, not a bundle"):
        B.verify(trace)


# --------------------------------------------------------------------------- hostile archives


def hostile(made, tmp_path, extra, *, at_end=True) -> Path:
    d, _trace, _res = made
    items = members(d / "incident.drb")
    items = items + extra if at_end else extra + items
    return rebuild(d / "incident.drb", tmp_path / "hostile.drb", items)


def _all_readers(path: Path, tmp_path: Path, match: str) -> None:
    for fn in (B.verify, lambda p: B.open_bundle(p, dir=str(tmp_path / "x"))):
        (tmp_path / "x").mkdir(exist_ok=True)
        with pytest.raises(BundleError, match=match) as ei:
            fn(path)
        assert "\n" not in str(ei.value)
        assert list((tmp_path / "x").iterdir()) == []  # nothing left behind


@pytest.mark.parametrize("name", ["../../../tmp/dr-evil", "traces/../../dr-evil", "/tmp/dr-evil-abs"])
def test_escaping_names_refused(made, tmp_path, name):
    path = hostile(made, tmp_path, [reg(name, b"pwned")])
    _all_readers(path, tmp_path, r"escapes the bundle \(\.\./\)|absolute path")
    assert not Path("/tmp/dr-evil").exists() and not Path("/tmp/dr-evil-abs").exists()
    # First in the archive: refused even by info.
    path = hostile(made, tmp_path, [reg(name, b"pwned")], at_end=False)
    with pytest.raises(BundleError, match=r"dr-evil"):
        B.info(path)


def test_link_and_device_members_refused(made, tmp_path):
    sym = tarfile.TarInfo("traces/evil.drt")
    sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/shadow"
    _all_readers(hostile(made, tmp_path, [(sym, b"")]), tmp_path, r"traces/evil\.drt' is a link")
    hard = tarfile.TarInfo("traces/hard.drt")
    hard.type, hard.linkname = tarfile.LNKTYPE, "manifest.json"
    _all_readers(hostile(made, tmp_path, [(hard, b"")]), tmp_path, "is a link")
    dev = tarfile.TarInfo("traces/dev.drt")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    _all_readers(hostile(made, tmp_path, [(dev, b"")]), tmp_path, "is a device or fifo")


def test_duplicate_unlisted_and_unexpected_members_refused(made, tmp_path):
    d, _trace, _res = made
    items = members(d / "incident.drb")
    trace_item = next(it for it in items if it[0].name.startswith("traces/"))
    _all_readers(hostile(made, tmp_path, [trace_item]), tmp_path, "appears twice")
    _all_readers(hostile(made, tmp_path, [reg("traces/extra.drt", b"x")]), tmp_path,
                 "not listed in manifest.json")
    _all_readers(hostile(made, tmp_path, [reg("etc/cron.d/x", b"x")]), tmp_path, "unexpected member")


def test_decompression_bomb_refused(made, tmp_path):
    # 512 MiB of zeros compresses to a few KiB. With a manifest that agrees on the size,
    # the ratio cap trips after 16 MiB; with the genuine manifest, the size check first.
    d, _trace, _res = made
    head = members(d / "incident.drb")[:4]
    big = 512 << 20
    man = json.loads(head[0][1])
    man["members"]["traces/incident.drt"]["size"] = big
    mb = json.dumps(man).encode()
    lying = [reg("manifest.json", mb),
             reg("manifest.sha256", f"{hashlib.sha256(mb).hexdigest()}  manifest.json\n".encode())]

    class Zeros(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, b):
            b[:] = bytes(len(b))
            return len(b)

    for name, items, match in (
            ("bomb.drb", lying + head[2:], r"member traces/incident\.drt decompresses more than 100x"),
            ("bomb2.drb", head, r"member traces/incident\.drt is 536870912 bytes, the manifest says")):
        path = tmp_path / name
        with open(path, "wb") as f:
            with zstandard.ZstdCompressor(level=1).stream_writer(f, closefd=False) as zw:
                with tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for ti, data in items:
                        tar.addfile(ti, io.BytesIO(data))
                    ti = tarfile.TarInfo("traces/incident.drt")
                    ti.size = big
                    tar.addfile(ti, io.BufferedReader(Zeros()))
        assert path.stat().st_size < (1 << 20)
        _all_readers(path, tmp_path, match)


def test_oversized_member_refused_before_reading(made, tmp_path, monkeypatch):
    from dr.formats import bundle_read
    monkeypatch.setattr(bundle_read, "MAX_MEMBER_BYTES", 1 << 20)
    d, _trace, _res = made
    path = tmp_path / "big.drb"
    items = members(d / "incident.drb")[:4]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in items:
            tar.addfile(ti, io.BytesIO(data))
    hdr = tarfile.TarInfo("traces/incident.drt")
    hdr.size = 2 << 20
    raw = buf.getvalue().rstrip(b"\0")
    raw += b"\0" * (-len(raw) % 512) + hdr.tobuf(tarfile.PAX_FORMAT) + b"\0" * 4096  # header, no data
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    with pytest.raises(BundleError, match=r"member traces/incident\.drt is 2097152 bytes, more than"):
        B.verify(path)


@pytest.mark.parametrize("blob,match", [
    (b"", "not a dr bundle"),
    (b"PK\x03\x04 zip", "not a dr bundle"),
    (zstandard.ZstdCompressor().compress(b"not a tar at all" * 100), "not a dr bundle"),
    (zstandard.ZstdCompressor().compress(b"\0" * 10240), "not a dr bundle .*not manifest.json"),
])
def test_garbage_refused(tmp_path, blob, match):
    # Not a bundle at all: the wrong kind of file (ERROR), not a failed verification (MISMATCH).
    (tmp_path / "g.drb").write_bytes(blob)
    with pytest.raises(BundleError, match=match) as ei:
        B.info(tmp_path / "g.drb")
    assert ei.value.exit_code == ExitCode.ERROR


def test_newer_bundle_version_refused(made, tmp_path):
    d, _trace, _res = made
    items = members(d / "incident.drb")
    man = json.loads(items[0][1])
    man["bundle_format_version"] = B.BUNDLE_FORMAT_VERSION + 1
    mb = json.dumps(man).encode()
    items[0] = reg("manifest.json", mb)
    items[1] = reg("manifest.sha256", f"{hashlib.sha256(mb).hexdigest()}  manifest.json\n".encode())
    with pytest.raises(BundleError, match="newer than this dr reads"):
        B.info(rebuild(d / "incident.drb", tmp_path / "v.drb", items))


def test_mutated_bundles_only_raise_dr_errors(made, tmp_path):
    # Bounded fuzz: random byte edits of the decompressed tar (headers included) and of
    # the compressed file; the only outcomes are a verified bundle or a DrError.
    from hypothesis import HealthCheck, given, settings, strategies as st

    from dr.errors import DrError

    d, _trace, _res = made
    items = [it for it in members(d / "incident.drb") if not it[0].name.startswith("binaries/")]
    man = json.loads(items[0][1])
    man["members"] = {k: v for k, v in man["members"].items() if not k.startswith("binaries/")}
    mb = json.dumps(man).encode()
    items[:2] = [reg("manifest.json", mb),
                 reg("manifest.sha256", f"{hashlib.sha256(mb).hexdigest()}  manifest.json\n".encode())]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in items:
            tar.addfile(ti, io.BytesIO(data))
    plain = buf.getvalue()
    B.verify(rebuild(d / "incident.drb", tmp_path / "base.drb", items))  # the base is valid

    @settings(max_examples=int(os.environ.get("DR_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.integers(0, len(plain) - 1), st.integers(0, 255)), min_size=1,
                    max_size=4), st.booleans())
    def run(edits, compressed):
        data = bytearray(plain)
        for pos, val in edits:
            data[pos] = val
        blob = zstandard.ZstdCompressor(level=1).compress(bytes(data))
        if compressed:
            blob = bytearray(zstandard.ZstdCompressor(level=1).compress(plain))
            for pos, val in edits:
                blob[pos % len(blob)] = val
        p = tmp_path / "fuzz.drb"
        p.write_bytes(bytes(blob))
        for fn in (B.verify, B.info):
            try:
                fn(p)
            except DrError as e:
                assert "\n" not in str(e)

    run()


# --------------------------------------------------------------------------- end to end (real capture)

SERVER = r'''
import http.server, sys
BODY = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "sid=" + sys.argv[2] + "; Path=/")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.handle_request()
'''


def _capture_available() -> str | None:
    if os.geteuid() != 0:
        return "dr capture needs root (CAP_BPF)"
    try:
        import dr.capture.session  # noqa: F401
    except ImportError as e:
        return f"dr capture is not available ({e})"
    if not shutil.which("curl"):
        return "curl is not installed (scripts/setup.sh installs it)"
    return None


@pytest.mark.root
@pytest.mark.slow
def test_real_capture_of_curl_bundle_has_no_secrets(tmp_path):
    why = _capture_available()
    if why:
        pytest.skip(why)
    cookie = "s3cr3tSess10nZZ"
    body = (b'{"customer": "' + EMAILS[1] + b'", "cards": ["' + CARDS[0] + b'", "' + CARDS[2] +
            b'"], "aws": {"AccessKeyId": "' + AWS_ID + b'", "SecretAccessKey": "' + AWS_SECRET + b'"}}')
    srv = subprocess.Popen([sys.executable, "-c", SERVER, body.decode(), cookie], stdout=subprocess.PIPE,
                           text=True)
    try:
        port = int(srv.stdout.readline())
        data = b'{"email": "' + EMAILS[0] + b'", "card": "' + CARDS[1] + b'"}'
        env = {**os.environ, "AWS_ACCESS_KEY_ID": AWS_ID.decode(),
               "AWS_SECRET_ACCESS_KEY": AWS_SECRET.decode()}
        trace = tmp_path / "curl.drt"
        p = subprocess.run([sys.executable, "-m", "dr", "capture", "-o", str(trace), "--",
                            "curl", "-s", "-H", "Authorization: Bearer " + BEARER.decode(),
                            "-H", "X-Id-Token: " + JWT.decode(), "--data", data.decode(),
                            f"http://127.0.0.1:{port}/api/orders"],
                           env=env, capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr.decode()
        assert p.stdout == body  # curl printed what the server sent
    finally:
        srv.kill()
        srv.wait()
    planted = [EMAILS[0], EMAILS[1], CARDS[0], CARDS[1], CARDS[2], JWT, AWS_ID, AWS_SECRET, BEARER,
               cookie.encode()] + JWT.split(b".")
    frames = trace_frames(trace.read_bytes())
    missing = [s for s in planted if not any(s in f for f in frames)]
    assert not missing, f"the capture itself lacks {missing}"  # positive control
    out = tmp_path / "incident.drb"
    p = subprocess.run(DR + ["bundle", "create", str(trace), "-o", str(out), "--ticket", "E2E-1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for blob in every_decompressed_byte(out):
        for s in planted:
            assert s not in blob, s
    report = B.info(out).report
    m = report["matches"]
    assert m["email"] >= 2 and m["card_number"] >= 3 and m["jwt"] >= 1
    assert m["authorization"] >= 1 and m["aws_access_key_id"] >= 1 and m["aws_secret_key"] >= 1
    assert m["cookie"] >= 1
    v = B.verify(out)
    assert v.events["traces/curl.drt"] > 50
    assert f"outbound 127.0.0.1:{port}" in B.info(out).readme
    with B.open_bundle(out) as ob:
        assert B.check_binaries(ob) == []
        with TraceReader(ob.traces[0]) as r:
            sends = [e for e in r.events(syscalls=["sendto", "write", "writev", "sendmsg"])
                     if e.payload(1) and b"POST /api/orders" in e.payload(1)]
            assert sends and b"Authorization: Bearer " + b"*" * len(BEARER) in sends[0].payload(1)
            assert (sends[0].tid, sends[0].seq, 1) in spans_by_slot(r.stream())


def test_create_refuses_a_corrupt_trace_and_leaves_nothing(tmp_path):
    from dr.errors import TraceError

    trace = http_trace(tmp_path / "t.drt")
    data = bytearray(trace.read_bytes())
    data[-40] ^= 0xFF  # inside the last frame (the summary)
    trace.write_bytes(data)
    with pytest.raises(TraceError, match=str(trace)):
        B.create([trace], tmp_path / "x.drb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.drt"]


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.95])
def test_bundle_cut_short_inside_a_member_is_one_line(made, tmp_path, keep):
    """A bundle cut inside a member's data (an interrupted upload) gives one line and
    exit 5 from verify and from every reader, never a tar traceback, and leaves no
    extraction directory behind."""
    d, _trace, _res = made
    data = (d / "incident.drb").read_bytes()
    cut = tmp_path / "cut.drb"
    cut.write_bytes(data[: int(len(data) * keep)])
    pids = []
    for cmd in (["bundle", "verify"], ["show"], ["stats"]):
        proc = subprocess.Popen(DR + cmd + [str(cut)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _out, stderr = proc.communicate()
        pids.append(proc.pid)
        err = stderr.strip().splitlines()
        assert proc.returncode != 0 and "Traceback" not in stderr, stderr[-800:]
        assert len(err) == 1 and err[0].startswith("dr: ") and "cut short" in err[0], err
    # Ours only (an extraction is named dr-bundle-PID-*): /tmp is shared with other dr runs.
    leaked = [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(tuple(f"dr-bundle-{p}-" for p in pids))]
    assert not leaked
