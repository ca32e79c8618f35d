"""Bytes moved by sendfile/splice/tee/copy_file_range, read from their source file (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PY = sys.executable

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (CAP_BPF)"),
]

SENDFILE_C = r"""
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    bind(l, (void *)&sin, sizeof sin); listen(l, 1);
    socklen_t sl = sizeof sin; getsockname(l, (void *)&sin, &sl);
    pid_t c = fork();
    if (c == 0) {   /* the peer: reads everything, prints the count */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        connect(s, (void *)&sin, sizeof sin);
        static char buf[65536]; long tot = 0, n;
        while ((n = read(s, buf, sizeof buf)) > 0) tot += n;
        printf("peer got %ld\n", tot);
        _exit(0);
    }
    int a = accept(l, NULL, NULL);
    int fd = open(argv[1], O_RDONLY);
    long left = 1 << 20;
    while (left > 0) {
        ssize_t n = sendfile(a, fd, NULL, left);   /* NULL offset: the file position */
        if (n <= 0) break;
        left -= n;
    }
    close(a);
    waitpid(c, NULL, 0);
    return 0;
}
"""

COPY_PY = """\
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY)
dst = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
print(os.copy_file_range(src, dst, 3, 5), os.sendfile(dst, src, 10, 4))
"""


def dr(*args):
    return subprocess.run([PY, "-m", "dr", *map(str, args)], capture_output=True, timeout=120)


def test_sendfile_of_a_mib_to_a_loopback_peer_in_show_and_pcap(tmp_path):
    c = tmp_path / "sendf.c"
    c.write_text(SENDFILE_C)
    exe = tmp_path / "sendf"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(c)], check=True, capture_output=True)
    data = os.urandom(1 << 20)
    (tmp_path / "mib.bin").write_bytes(data)
    out = tmp_path / "sf.drt"
    p = dr("capture", "-q", "--snaplen", "2000000", "-o", out, "--", exe, tmp_path / "mib.bin")
    assert p.returncode == 0, p.stderr.decode()
    from dr.formats.trace import TraceReader
    from dr.schema import Sub

    r = TraceReader(out)
    moved = b"".join(e.payload(1, Sub.MOVED) or b"" for e in r.events() if e.name == "sendfile")
    assert moved == data
    assert r.summary["moved"]["with_bytes"] >= 1
    shown = dr("show", "-x", "-s", "2000000", out).stdout.decode()
    line = next(ln for ln in shown.splitlines() if "sendfile(" in ln and "moved" in ln)
    assert data[:64].hex() in line.replace("\\x", "") and data[-64:].hex() in line.replace("\\x", "")
    pcap = tmp_path / "sf.pcap"
    assert dr("export", "pcap", out, "-o", pcap).returncode == 0
    raw = pcap.read_bytes()
    assert all(data[i:i + 1400] in raw for i in range(0, len(data) - 1400, 65536))


def test_copy_file_range_and_sendfile_with_offsets(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes(b"0123456789abcdefghij")
    script = tmp_path / "c.py"
    script.write_text(COPY_PY)
    out = tmp_path / "c.drt"
    p = dr("capture", "-q", "-o", out, "--", "/usr/bin/python3", script, src, tmp_path / "dst.txt")
    assert p.returncode == 0 and p.stdout == b"3 4\n", p.stderr.decode()
    shown = dr("show", out).stdout.decode()
    assert '= 3 (moved "567")' in shown and '= 4 (moved "abcd")' in shown
