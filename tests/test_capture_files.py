"""Files the traced programs map or execute, identified and stored (issue 11). Needs root."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from conftest import build_c

PY = sys.executable

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (CAP_BPF)"),
]

SCRIPT = """\
import mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    print(m[:8].decode())
"""


def test_mapped_data_file_and_script_interpreter_identified_bytes_kept(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"original content of a mapped file\n")
    script = tmp_path / "m.py"
    script.write_text(SCRIPT)
    out = tmp_path / "m.drt"
    p = subprocess.run([PY, "-m", "dr", "capture", "-q", "-o", str(out), "--", "/usr/bin/python3",
                        str(script), str(data)], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    data.write_bytes(b"changed after the capture\n")
    from dr.formats.trace import TraceReader

    r = TraceReader(out)
    files = {f["path"]: f for f in r.file_records}
    d = files[str(data)]
    assert d["how"] == ["map"] and d["stored"] and not d.get("package")
    assert r.blob(d["sha256"]) == b"original content of a mapped file\n"
    exe = files["/usr/bin/python3"]
    assert exe["how"] == ["exec"] and exe["package"].startswith("python3")
    assert exe["package_unmodified"] and not exe["stored"]        # found again from the package
    assert exe["sha256"] == hashlib.sha256(open("/usr/bin/python3", "rb").read()).hexdigest()
    libc = [f for p_, f in files.items() if os.path.basename(p_) == "libc.so.6"]
    assert libc and "map-exec" in libc[0]["how"]
    assert any(os.path.basename(p_).startswith("ld-linux") for p_ in files)   # the kernel mapped it
    # a bundle carries the package files' bytes too
    bundle = tmp_path / "b.drb"
    b = subprocess.run([PY, "-m", "dr", "bundle", "create", "-o", str(bundle), str(out)],
                       capture_output=True, timeout=120)
    assert b.returncode == 0, b.stderr.decode()
    from dr.formats.bundle import open_bundle

    with open_bundle(bundle) as ob:
        tr = TraceReader(ob.traces[0])
        assert tr.blob(exe["sha256"]) is not None


DEV_ZERO = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
int main(void) {
    int fd = open("/dev/zero", O_RDWR);
    char *p = mmap(NULL, 1 << 21, PROT_READ, MAP_PRIVATE, fd, 0);
    char *s = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED || s == MAP_FAILED) return 1;
    s[0] = 7;
    printf("zero %d %d\n", p[4096], s[0]);
    return 0;
}
"""


def test_a_mapped_device_is_listed_never_read(tmp_path):
    """Mapping /dev/zero: the capture ends at once and names the device; it used to
    hash /dev/zero's endless bytes until the OOM killer took dr."""
    exe = build_c(tmp_path, "devzero", DEV_ZERO)
    out = tmp_path / "z.drt"
    p = subprocess.run([PY, "-m", "dr", "capture", "-q", "-o", str(out), "--", str(exe)],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == b"zero 0 7\n"
    from dr.formats.trace import TraceReader

    r = TraceReader(out)
    files = {f["path"]: f for f in r.file_records}
    z = files["/dev/zero"]
    assert z["how"] == ["map"] and "character device" in z["unavailable"] and "sha256" not in z
    assert r.summary["files"]["stored_bytes"] < 1 << 20


def test_a_file_above_the_store_limit_is_hashed_in_chunks_and_said_not_stored(tmp_path):
    """Files were read whole into memory: a multi-GiB mapped file could cost dr the OOM
    killer. Above the limit only the hash is kept (read in chunks), and the entry says so."""
    from dr.capture.files import BLOB_CHUNK, FileUse, identify

    big = tmp_path / "big.bin"
    body = os.urandom(BLOB_CHUNK) * 2 + b"tail"
    big.write_bytes(body)
    rec, data = identify(FileUse(str(big), {"map"}), {}, store_max=BLOB_CHUNK)
    assert data is None and rec["stored"] is False and "hash only" in rec["not_stored"]
    assert rec["sha256"] == hashlib.sha256(body).hexdigest() and rec["size"] == len(body)
    small, kept = identify(FileUse(str(big), {"map"}), {}, store_max=len(body))
    assert kept == body and small["stored"] and "not_stored" not in small
