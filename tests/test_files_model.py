"""The file model of strict replay (dr.replay.strict.files): files the run makes
persist by identity across opens, renames, links, unlinks and truncates; mmap,
sendfile and exec see the bytes the program wrote; files that existed before the
run reach the tracee only with the recording's bytes.

Recorded with the real capture, replayed under the real seccomp supervisor.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import DR, NEEDS_NOTIFY, build_c, record, replay

from dr.errors import ReplayError
from dr.replay.strict.files import FileModel




@pytest.fixture()
def work():
    d = Path(tempfile.mkdtemp(prefix="dr-test-files-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


LIFECYCLE = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    char buf[64];
    int fd = open("config.lock", O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0 || write(fd, "key=value\n", 10) != 10) return 1;
    close(fd);
    if (rename("config.lock", "config")) return 2;
    fd = open("config", O_RDWR);
    ssize_t n = read(fd, buf, sizeof buf);
    printf("reopened: %zd bytes: %.*s", n, (int)n, buf);
    if (ftruncate(fd, 4096)) return 3;
    char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 4;
    printf("mapped: %.9s\n", m);
    memcpy(m + 10, "mapped=yes\n", 11);
    munmap(m, 4096);
    if (ftruncate(fd, 21)) return 5;
    close(fd);
    int a = open("config", O_RDONLY), b = open("config", O_RDONLY);
    n = read(a, buf, 4);
    printf("two opens, own offsets: %.*s/", (int)n, buf);
    n = read(b, buf, 3);
    printf("%.*s\n", (int)n, buf);
    close(b);
    fflush(stdout);
    off_t off = 0;
    if (sendfile(1, a, &off, 21) != 21) return 6;
    close(a);
    if (link("config", "config.bak") || unlink("config")) return 7;
    fd = open("config.bak", O_RDONLY);
    n = read(fd, buf, sizeof buf);
    printf("after link+unlink: %zd bytes\n", n);
    close(fd);
    fd = open("hello.sh", O_WRONLY | O_CREAT | O_TRUNC, 0755);
    dprintf(fd, "#!/bin/sh\necho from the written script\n");
    close(fd);
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) { execl("./hello.sh", "hello.sh", (char *)NULL); _exit(127); }
    int st;
    waitpid(p, &st, 0);
    printf("script exit %d\n", WEXITSTATUS(st));
    unlink("hello.sh");
    unlink("config.bak");
    return 0;
}
"""


@pytest.mark.root
@NEEDS_NOTIFY
@pytest.mark.skipif(os.geteuid() != 0, reason="capture needs root (CAP_BPF)")
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the test programs")
def test_written_renamed_reopened_mapped_sent_and_execd_file_replays_faithfully(work):
    exe = build_c(work, "lifecycle", LIFECYCLE)
    trace, out = record(work, "lifecycle", str(exe))
    assert b"mapped=yes" in out and b"from the written script" in out
    r = replay(trace)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == out     # sendfile's bytes and the exec'd script's output included
    assert b"faithful" in r.stderr


READER = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    char buf[64];
    int fd = open("data.txt", O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf);
    printf("read: %.*s", (int)n, buf);
    char *m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    printf("mapped: %.*s", (int)n, m);
    return 0;
}
"""


@pytest.mark.root
@NEEDS_NOTIFY
@pytest.mark.skipif(os.geteuid() != 0, reason="capture needs root (CAP_BPF)")
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the test programs")
def test_changed_root_only_host_file_never_reaches_the_tracee(work):
    data = work / "data.txt"
    data.write_text("recorded content\n")
    exe = build_c(work, "reader", READER)
    trace, out = record(work, "reader", str(exe))
    assert out == b"read: recorded content\nmapped: recorded content\n"
    data.write_text("HOST-SECRET changed!\n")
    os.chmod(data, 0o600)
    r = replay(trace)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == out      # the mapped bytes are the trace's stored copy
    assert b"HOST-SECRET" not in r.stdout + r.stderr


def _model(tmp: Path, content: bytes, blob: bytes | None) -> tuple[FileModel, int]:
    f = tmp / "lib.so"
    f.write_bytes(content)
    sha = hashlib.sha256(b"recorded").hexdigest()
    rec = {"path": str(f), "how": ["map"], "sha256": sha, "size": 8}
    blobs = {sha: {0: blob}} if blob is not None else {}
    return FileModel([rec], blobs), os.open(f, os.O_RDONLY)


def test_mapped_file_changed_on_host_is_served_from_the_trace(tmp_path):
    fm, host = _model(tmp_path, b"changed!", b"recorded")
    fd = fm.vet(str(tmp_path / "lib.so"), host, os.O_RDONLY)
    try:
        assert os.pread(fd, 64, 0) == b"recorded"
    finally:
        os.close(fd)
        fm.close()


def test_mapped_file_with_no_recorded_bytes_stops_naming_it(tmp_path):
    for blob in (None, b"forged!!"):   # absent, or not matching its sha256
        fm, host = _model(tmp_path, b"changed!", blob)
        with pytest.raises(ReplayError, match="lib.so"):
            fm.vet(str(tmp_path / "lib.so"), host, os.O_RDONLY)
        fm.close()


def test_host_file_matching_the_recording_is_used(tmp_path):
    fm, host = _model(tmp_path, b"recorded", None)
    assert fm.vet(str(tmp_path / "lib.so"), host, os.O_RDONLY) == host
    os.close(host)
    fm.close()


def test_file_only_read_gets_no_host_bytes(tmp_path):
    fm = FileModel([], {})
    f = tmp_path / "secret"
    f.write_bytes(b"root only")
    fd = fm.vet(str(f), os.open(f, os.O_RDONLY), os.O_RDONLY)
    assert os.pread(fd, 64, 0) == b""
    os.close(fd)


TOOLS = {
    "git": """set -e
git init -q .
git config user.email dr@example.org
git config user.name dr
echo hello > a.txt
git add a.txt
GIT_AUTHOR_DATE=2020-01-01T00:00:00Z GIT_COMMITTER_DATE=2020-01-01T00:00:00Z git commit -q -m first
git log --format='%H %s'
""",
    "sqlite3": """set -e
sqlite3 db.sqlite 'PRAGMA journal_mode=WAL; CREATE TABLE t(k TEXT, v INT); INSERT INTO t VALUES ("a", 1);'
sqlite3 db.sqlite 'INSERT INTO t VALUES ("b", 2); SELECT k, v FROM t ORDER BY k; PRAGMA journal_mode;'
""",
}


@pytest.mark.root
@NEEDS_NOTIFY
@pytest.mark.skipif(os.geteuid() != 0, reason="capture needs root (CAP_BPF)")
@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_tool_replays_faithfully_after_its_files_are_deleted(work, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    d = work / "repo"
    d.mkdir()
    (d / "run.sh").write_text(TOOLS[tool])
    trace = work / f"{tool}.drt"
    r = subprocess.run([DR, "capture", "-q", "-o", str(trace), "--", "sh", "run.sh"], capture_output=True,
                       timeout=120, cwd=str(d))
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.strip()
    shutil.rmtree(d)     # the repository / database and the script exist only in the trace now
    rp = replay(trace)
    assert rp.returncode == 0, rp.stderr.decode()
    assert rp.stdout == r.stdout
    assert b"faithful" in rp.stderr


SELF_EXEC = r"""
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1) { printf("again %s\n", argv[1]); return 0; }
    printf("first\n");
    fflush(stdout);
    execl("/proc/self/exe", argv[0], "second", (char *)0);
    return 1;
}
"""


def test_exec_of_proc_self_exe_replays(work):
    """/proc/self/exe is the process's own image (checked at its own exec), not a
    host file to look up: re-executing oneself through it replays faithfully."""
    exe = build_c(work, "selfexec", SELF_EXEC)
    trace, out = record(work, "selfexec", str(exe))
    assert out == b"first\nagain second\n"
    r = replay(trace)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == out


COPY_SELF = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct stat st;
    stat("/proc/self/exe", &st);
    if (argc > 1) { printf("the copy runs, %ld bytes\n", (long)st.st_size); return 0; }
    int src = open("/proc/self/exe", O_RDONLY), dst = open("the_copy", O_WRONLY | O_CREAT | O_TRUNC, 0700);
    off_t off = 0;
    printf("sent %zd of %ld\n", sendfile(dst, src, &off, st.st_size), (long)st.st_size);
    fflush(stdout);
    close(src);
    close(dst);
    execl("./the_copy", "the_copy", "copy", (char *)0);
    return 1;
}
"""


def test_a_copy_of_proc_self_exe_made_with_sendfile_is_executed(work):
    """mount_ns_exec's pattern: capture used to record /proc/self/exe's bytes as read at
    its end (dr's own python); replay moves them from the executable it handed the program
    (the recorded one, sha256-checked), so the copy it executes is the program."""
    exe = build_c(work, "copyself", COPY_SELF)
    size = exe.stat().st_size
    trace, out = record(work, "copyself", str(exe))
    assert out == f"sent {size} of {size}\nthe copy runs, {size} bytes\n".encode()
    (work / "the_copy").unlink()
    r = replay(trace)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == out
