"""Decompression bombs inside a trace are refused from the frame headers (issue #15).

The bomb of the issue: a valid metadata frame, then 40 zstd frames that each
declare 256 MiB of zeros (a ~330 KB file that inflates to 10 GiB). Every
reader (show, stats, bundle verify, bundle create, replay) must refuse it in
one line, in under a second of CPU and under 100 MB of peak RSS, measured on
the dr process itself (os.wait4). Budget rules: dr/formats/trace_spec.py
(MAX_FRAME_RAW, MAX_RATIO, FRAME_FLOOR, TOTAL_FLOOR).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile

import pytest
import zstandard

from conftest import ROOT
from dr.errors import TraceError
from dr.formats import trace as T

MIB = 1 << 20


def _zero_frame(size: int, level: int = 3) -> bytes:
    """One zstd frame declaring ``size`` bytes of zeros (content size + checksum), built in 1 MiB steps."""
    c = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True).compressobj(size=size)
    chunk = bytes(MIB)
    out = [c.compress(chunk[:min(MIB, size - i)]) for i in range(0, size, MIB)]
    out.append(c.flush())
    z = b"".join(out)
    return struct.pack("<I", len(z)) + z


def _bomb(path, frames: int, frame: bytes) -> str:
    w = T.TraceWriter(path, {"tool": "dr", "mode": "spawn", "tids": [1], "argv": ["/bin/true"]})
    w.close(None)  # metadata only: the trace is cut short, as a real bomb may be
    with open(path, "ab") as f:
        for _ in range(frames):
            f.write(frame)
    return str(path)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    d = tmp_path_factory.mktemp("bomb")
    return _bomb(d / "bomb.drt", 40, _zero_frame(256 * MIB))


def test_the_bomb_is_what_the_issue_describes(bomb):
    size = os.path.getsize(bomb)
    assert 100_000 < size < 600_000  # ~8 KB per 256 MiB frame
    declared = 0
    with open(bomb, "rb") as f:
        f.seek(T.HEADER.size)
        while h := f.read(4):
            n = struct.unpack("<I", h)[0]
            declared += max(zstandard.frame_content_size(f.read(n)), 0)
    assert declared >= 40 * 256 * MIB


def _bundle_with(tmp_path, trace: str) -> str:
    """A bundle whose manifest and hashes are right, with ``trace`` as its trace member."""
    from dr.formats import bundle as B
    plain = tmp_path / "plain.drt"
    w = T.TraceWriter(plain, {"tool": "dr", "mode": "spawn", "tids": [1], "argv": ["/bin/true"]})
    w.close({"events": 0})
    made = tmp_path / "plain.drb"
    B.create([str(plain)], str(made), redact=False)
    with tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().stream_reader(open(made, "rb")).read()),
                      mode="r:") as tar:
        members = {ti.name: tar.extractfile(ti).read() for ti in tar.getmembers()}
    manifest = json.loads(members[B.MANIFEST])
    name = next(m for m in members if m.startswith("traces/"))
    data = open(trace, "rb").read()
    manifest["members"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    mb = json.dumps(manifest, indent=2).encode() + b"\n"
    src = tmp_path / "member.drt"
    src.write_bytes(data)
    out = tmp_path / "bomb.drb"
    B._write_tar(str(out), [(B.MANIFEST, mb),
                            (B.MANIFEST_SHA, f"{hashlib.sha256(mb).hexdigest()}  {B.MANIFEST}\n".encode()),
                            (B.README, members[B.README]), (B.REPORT, members[B.REPORT])],
                 [(name, str(src), len(data))], 0, 3)
    return str(out)


#: Runs dr as its own child and prints that child's rusage: a process exec'd straight from
#: pytest inherits pytest's peak RSS in ru_maxrss (exec records the old mm's high-water mark,
#: and subprocess vforks), so the figure would grow with the tests run before this one.
_RUSAGE = ("import os, sys\n"
           "pid = os.fork()\n"
           "if pid == 0:\n"
           "    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)\n"
           "    os.execv(sys.executable, [sys.executable, '-m', 'dr', *sys.argv[1:]])\n"
           "_, st, ru = os.wait4(pid, 0)\n"
           "print(os.waitstatus_to_exitcode(st), ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024)\n")


def _measure(args: list[str]) -> tuple[int, str, float, int]:
    """Run dr; (exit code, stderr, CPU seconds, peak RSS in bytes) of that process alone."""
    p = subprocess.run([sys.executable, "-c", _RUSAGE, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=ROOT, timeout=300)
    code, cpu, rss = p.stdout.decode().split()
    return int(code), p.stderr.decode(), float(cpu), int(rss)


def _cpu_and_rss_of_dr_doing_nothing() -> tuple[float, int]:
    _, _, cpu, rss = _measure(["--version"])
    return cpu, rss


@pytest.mark.parametrize("cmd", ["show", "stats", "bundle verify", "bundle create", "replay"])
def test_forty_frame_bomb_refused_fast_and_small(bomb, tmp_path, cmd):
    target = _bundle_with(tmp_path, bomb) if cmd == "bundle verify" else bomb
    args = cmd.split() + [target] + (["-o", str(tmp_path / "out.drb")] if cmd == "bundle create" else [])
    code, err, cpu, rss = _measure(args)
    base_cpu, _ = _cpu_and_rss_of_dr_doing_nothing()
    assert code != 0 and "decompression bomb" in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    # Under a second of work beyond dr's own start-up, and under 100 MB peak RSS.
    assert cpu - base_cpu < 1.0, (cpu, base_cpu)
    assert rss < 100 * MIB, rss
    assert not (tmp_path / "out.drb").exists()


def test_frames_under_the_cap_but_too_compressible_are_refused(tmp_path):
    """64 MiB of zeros per frame is under MAX_FRAME_RAW but ~32000x: over MAX_RATIO."""
    p = _bomb(tmp_path / "ratio.drt", 2, _zero_frame(64 * MIB))
    with pytest.raises(TraceError, match="decompression bomb"):
        T.TraceReader(p)


def test_many_small_frames_hit_the_whole_trace_budget(tmp_path):
    """Each frame under FRAME_FLOOR; together past TOTAL_FLOOR + MAX_RATIO x the file size."""
    p = _bomb(tmp_path / "many.drt", 200, _zero_frame(T.FRAME_FLOOR))
    with pytest.raises(TraceError, match="more than .* bytes"):
        T.TraceReader(p)


def test_a_real_trace_of_zeros_is_within_budget(tmp_path):
    """Events carrying a snaplen of zeros each (dd from /dev/zero) read back fine."""
    from dr import schema
    from dr.formats.trace import Event, Payload
    w = T.TraceWriter(tmp_path / "z.drt", {"tool": "dr", "tids": [1]})
    evs = [Event(tid=1, nr=schema.by_name("read").nr, args=(0, 0, 256 << 10, 0, 0, 0), ret=256 << 10,
                 ts_enter=1000 * i, ts_exit=1000 * i + 7, tgid=1, seq=i,
                 payloads={1: Payload(1, bytes(256 << 10))}) for i in range(600)]
    for i in range(0, len(evs), 50):
        w.write_events(evs[i:i + 50])
    w.close({"events": len(evs)})
    r = T.TraceReader(tmp_path / "z.drt")
    assert sum(1 for _ in r.events()) == 600
