"""Real services under streams replay (issue 14): reports and messages, the command at exec,
a service that dies, traces cut short, per-thread randomness, recorded global order."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from dr.errors import ExitCode, ReplayError
from test_streams import ECHO_SVC, PY, Clock, root_only, sin  # noqa: F401  (shared trace helpers)


def _echo_events(k: Clock, port: int, dep: int, words=(b"one", b"two", b"three")) -> list:
    evs = []
    for i, word in enumerate(words):
        answer = b"R " + word.upper()
        out = b"A " + answer + b" from 192.0.2.%d\n" % (i + 1)
        evs += [k.ev("accept4", [3], 5, {1: sin(f"192.0.2.{i + 1}", 41000 + i)}),
                k.ev("recvfrom", [5], len(word) + 1, {1: word + b"\n"}),
                k.ev("socket", [2, 1], 6),
                k.ev("connect", [6], 0, {1: sin("10.9.8.7", dep)}),
                k.ev("sendto", [6], len(word) + 3, {1: b"Q " + word + b"\n"}),
                k.ev("recvfrom", [6], len(answer) + 1, {1: answer + b"\n"}),
                k.ev("close", [6], 0),
                k.ev("sendto", [5], len(out), {1: out}),
                k.ev("close", [5], 0)]
    return evs


def _meta(argv: list[str], port: int, **extra) -> dict:
    return {"mode": "attach", "pid": 4242, "argv": argv, "cwd": "/",
            "fds": [{"fd": 3, "type": "socket", "local": f"127.0.0.1:{port}", "state": "LISTEN"}], **extra}


# --------------------------------------------------------------------------- the command at exec


def test_exec_argv_survives_a_rewritten_title():
    """redis-server rewrites /proc/PID/cmdline into a title; its initial stack still tells the command."""
    from dr.capture.cmdline import exec_argv
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    from dr.demo.harness import free_port
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while b"127.0.0.1:%d" % port not in open(f"/proc/{p.pid}/cmdline", "rb").read():
            assert time.monotonic() < deadline, "redis-server never set its title"
            time.sleep(0.05)
        got = exec_argv(p.pid)
    finally:
        p.kill()
        p.wait()
    # /usr/bin/redis-server is a symlink to redis-check-rdb: the name it ran by, not the resolved exe.
    assert got["rewritten"] and got["execfn"] == shutil.which("redis-server")
    assert got["argv"] == [shutil.which("redis-server"), *argv[1:]]
    # An untouched command line is read as it is.
    p = subprocess.Popen([PY, "-c", "import time; time.sleep(30)", "x y"])
    try:
        time.sleep(0.3)
        got = exec_argv(p.pid)
    finally:
        p.kill()
        p.wait()
    assert got == {"execfn": PY, "argv": [PY, "-c", "import time; time.sleep(30)", "x y"],
                   "rewritten": False, "lost": []}


def test_recorded_command_prefers_exec_and_says_what_is_missing():
    from dr.replay.streams import recorded_command
    meta = {"argv": ["redis-server *:6379"], "exe": {"path": "/usr/bin/redis-check-rdb"},
            "exec": {"execfn": "/usr/bin/redis-server", "argv": ["/usr/bin/redis-server", "--port", "6379"],
                     "rewritten": True, "lost": []}}
    assert recorded_command(meta) == ["/usr/bin/redis-server", "--port", "6379"]
    lost = {"argv": ["nginx: master process nginx -g daemon off;"], "exe": {"path": "/usr/sbin/nginx"},
            "exec": {"execfn": "/usr/sbin/nginx", "argv": None, "rewritten": True, "lost": [1, 2]}}
    with pytest.raises(ReplayError) as e:
        recorded_command(lost)
    assert "rewrote its command line" in e.value.message and "argument(s) 1, 2" in e.value.message
    assert e.value.message.endswith("give the command with --cmd")
    assert recorded_command(lost, cmd="nginx -g 'daemon off;'") == ["nginx", "-g", "daemon off;"]
    with pytest.raises(ReplayError, match="does not exist on this host; give the command with --cmd"):
        recorded_command({"argv": ["/nonexistent/dr-svc", "-x"], "exe": {"path": "/nonexistent/dr-svc"}})


# --------------------------------------------------------------------------- reports and messages


@root_only
def test_failed_replay_writes_the_report_and_exits_1_with_one_line(write_trace, run_dr, tmp_path):
    port, dep = 9101, 9201
    trace = write_trace(_echo_events(Clock(), port, dep), _meta(["/nonexistent/dr-svc", str(port)], port))
    code, out, err = run_dr("replay", trace, "--report", tmp_path / "r.json")
    assert code == ExitCode.ERROR
    assert len(err.strip().splitlines()) == 1 and "/nonexistent/dr-svc" in err and "--cmd" in err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["verdict"] == "ERROR" and "does not exist on this host" in doc["error"]
    assert doc["recorded_connections"] == 3


@root_only
def test_trace_cut_short_replays_what_it_holds_and_says_so(write_trace):
    from dr.replay.streams import run_streams
    port, dep = 9102, 9202
    meta = _meta([PY, "-c", ECHO_SVC, str(port), str(dep)], port)
    trace = write_trace(_echo_events(Clock(), port, dep), meta, summary=None)
    res = run_streams(str(trace))
    assert res.exit_code == ExitCode.INCOMPLETE and res.report.identical == 3   # the cut part is not compared
    assert res.report.cut_short and res.report.to_dict()["cut_short"] is True
    assert "the trace was cut short: it holds 3 connection(s)" in res.report.summary()


@root_only
def test_a_service_that_dies_is_noticed_at_once_with_its_last_words(write_trace):
    from dr.replay.streams import QUIET_S, run_streams
    port, dep = 9103, 9203
    dying = ECHO_SVC.replace("    c.close()\n", "    c.close()\n    sys.stderr.write('fatal: out of cheese\\n'); "
                             "sys.stderr.flush(); import os; os._exit(3)\n")
    words = [b"w%d" % i for i in range(8)]
    trace = write_trace(_echo_events(Clock(), port, dep, words), _meta([PY, "-c", dying, str(port), str(dep)], port))
    t0 = time.monotonic()
    res = run_streams(str(trace))
    took = time.monotonic() - t0
    rep = res.report
    assert res.exit_code == ExitCode.DIVERGED and rep.identical == 1
    # The requests of connections 2 and 3 may go out while the program is still exiting
    # (a loaded machine): sent, never answered.
    assert re.match(r"the program exited with status 3 during the replay, after [123] of 8 connection", rep.notes[0])
    assert "fatal: out of cheese" in rep.notes[0]
    assert all(c.status != "identical" for c in rep.connections[1:])
    gone = [c for c in rep.connections if c.first_difference == "not replayed: the program had exited"]
    assert len(gone) >= 5 and gone[-1].id == rep.connections[-1].id
    assert took < QUIET_S + 15, took  # no per-connection waits after the death


# --------------------------------------------------------------------------- pre-forked services


def _wait_children(pid: int, n: int, timeout: float = 60.0) -> None:
    """Until process ``pid`` has ``n`` children (a pre-fork master its workers)."""
    deadline = time.monotonic() + timeout
    while len(open(f"/proc/{pid}/task/{pid}/children").read().split()) < n:
        assert time.monotonic() < deadline, f"pid {pid} never forked {n} workers"
        time.sleep(0.05)


def _wait_http(port: int, path: str = "/", timeout: float = 20.0) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                r.read()
                return
        except OSError:
            assert time.monotonic() < deadline, f"nothing answers on port {port}"
            time.sleep(0.1)


@root_only
@pytest.mark.skipif(shutil.which("gunicorn") is None or shutil.which("ab") is None,
                    reason="needs gunicorn and ab (scripts/setup.sh installs them)")
def test_gunicorn_master_pid_captures_its_workers_and_replays_identical(tmp_path):
    """`dr capture --pid MASTER` of gunicorn -w 3: the workers that accept are traced too."""
    from dr.demo.harness import Capture, free_port, stop
    from dr.formats.trace import TraceReader
    from dr.replay.streams import run_streams
    import dr.demo
    port = free_port()
    app_dir = os.path.dirname(dr.demo.__file__)
    gu = subprocess.Popen(["gunicorn", "-w", "3", "-b", f"127.0.0.1:{port}", "--chdir", app_dir,
                           "prefork_app:app"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(port)
        # One worker answering does not mean the master forked all three: on a loaded
        # machine the others come later, and the capture would attach to fewer.
        _wait_children(gu.pid, 3)
        with Capture(gu.pid, tmp_path / "g.drt", tmp_path / "cap.log") as cap:
            ab = subprocess.run(["ab", "-q", "-n", "200", "-c", "8", f"http://127.0.0.1:{port}/"],
                                capture_output=True, text=True, timeout=120)
            assert ab.returncode == 0 and "Failed requests:        0" in ab.stdout, ab.stdout + ab.stderr
            assert cap.stop(settle_s=0.5) == 0
        log = (tmp_path / "cap.log").read_text()
    finally:
        stop(gu)
    assert f"recording pid {gu.pid} (4 process(es), 4 thread(s); new children followed)" in log
    assert "attached to 4 process(es), 4 thread(s) at start" in log
    with TraceReader(tmp_path / "g.drt") as r:
        meta, summary = r.meta, r.summary
        accepting = {ev.tgid for ev in r.events() if ev.name == "accept4" and ev.ret >= 0}
    workers = {p["pid"] for p in meta["procs"]}
    assert len(workers) == 3 and all(p["ppid"] == gu.pid for p in meta["procs"])
    assert accepting and accepting <= workers  # the workers did the work
    assert summary["attached"] == {"processes": 4, "threads": 4}
    res = run_streams(str(tmp_path / "g.drt"), report=str(tmp_path / "g.json"))
    rep = res.report
    assert res.exit_code == ExitCode.OK, rep.text()
    assert rep.identical == len(rep.connections) >= 200
    assert any(n.startswith(f"the recording's connections were accepted by {len(accepting)} processes")
               for n in rep.notes)


@root_only
def test_no_follow_takes_only_the_named_process(tmp_path):
    from dr.demo.harness import Capture, stop
    from dr.formats.trace import TraceReader
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nprint('up', flush=True)\ntime.sleep(60)\n"
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"up"
        with Capture(p.pid, tmp_path / "n.drt", tmp_path / "cap.log", extra=["--no-follow"]) as cap:
            assert cap.stop() == 0
    finally:
        kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
        for k in kids:
            os.kill(int(k), 9)
        stop(p)
    assert "(1 process(es), 1 thread(s); children not followed)" in (tmp_path / "cap.log").read_text()
    with TraceReader(tmp_path / "n.drt") as r:
        assert "procs" not in r.meta or r.meta["procs"] == []


# --------------------------------------------------------------------------- randomness per thread


@root_only
def test_startup_getrandom_takes_nothing_that_belonged_to_a_request(write_trace):
    """A fresh process's start-up os.urandom(4) gets the kernel's bytes; each request its recorded ones."""
    from dr.replay.streams import run_streams
    from test_streams import CLOCK_SVC
    svc = CLOCK_SVC.replace("while True:", "seed = os.urandom(4)  # start-up: never recorded\nwhile True:", 1)
    k = Clock()
    evs = []
    rand = [bytes([9, 9, i, i]) for i in range(3)]
    for i in range(3):
        evs += [k.ev("accept4", [3], 4, {1: sin("127.0.0.1", 50100 + i)}),
                k.ev("recvfrom", [4], 3, {1: b"hi\n"}),
                k.ev("getrandom", [0, 4], 4, {0: rand[i]})]
        ts = k.t + 1000
        out = b"%d 777 %s\n" % (ts - 1000, rand[i].hex().encode())
        evs += [k.ev("sendto", [4], len(out), {1: out}), k.ev("close", [4], 0)]
    meta = {"mode": "attach", "pid": 777, "argv": [PY, "-c", svc], "cwd": "/",
            "clock_offsets": {"realtime_ns": 0, "boottime_ns": 0},
            "fds": [{"fd": 3, "type": "socket", "local": "127.0.0.1:9300", "state": "LISTEN"}]}
    res = run_streams(str(write_trace(evs, meta)))
    assert res.exit_code == ExitCode.OK, res.report.text()
    assert res.report.substituted["getrandom"] == 3


# --------------------------------------------------------------------------- explanations from evidence


def test_state_from_before_the_capture_only_where_the_recording_shows_it(write_trace):
    """A counter and a list created during the capture are not blamed on old state; a new
    build's error reply is not either. GET of a value the capture never wrote is."""
    from dr.replay import compare, connections as C
    from test_streams import META
    k = Clock()
    cmd = lambda *a: b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a)  # noqa: E731
    reqs = [cmd(b"INCR", b"ctr"), cmd(b"INCR", b"ctr"), cmd(b"LPUSH", b"l", b"a"), cmd(b"GET", b"old"),
            cmd(b"INCR", b"older")]
    reps = [b":1\r\n", b":2\r\n", b":1\r\n", b"$3\r\nyes\r\n", b":8\r\n"]
    evs = [k.ev("accept4", [3], 5, {1: sin("127.0.0.1", 40000)})]
    for q, r in zip(reqs, reps):
        evs += [k.ev("read", [5], len(q), {1: q}), k.ev("write", [5], len(r), {1: r})]
    meta = dict(META, fds=[{"fd": 3, "type": "socket", "local": "127.0.0.1:6379", "state": "LISTEN"}])
    conv = C.reconstruct(write_trace(evs, meta))

    class Rep:  # another build: counts from 2, refuses LPUSH, has no old state
        conn = conv.connections[0]
        data = b":2\r\n:3\r\n-ERR unknown command\r\n$-1\r\n-ERR no\r\n"
        error = None
        opened_ns = sent_ns = done_ns = 1
        peer_bound = True

    rep = compare.compare(conv, [Rep()])
    (res,) = rep.connections
    assert [d["command"] for d in res.pre_capture] == ["GET old"]
    assert [d["command"] for d in res.other] == ["INCR ctr", "INCR ctr", "LPUSH l a", "INCR older"]


# --------------------------------------------------------------------------- recorded global order


@root_only
@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="needs redis-server and redis-tools")
def test_redis_50_clients_on_shared_keys_replay_identical(tmp_path):
    """INCR/LPUSH of 50 concurrent clients on shared keys: requests re-sent in the recorded
    global order, so every reply (counter values, list lengths) comes out as recorded."""
    from dr.demo.harness import Capture, free_port, stop
    from dr.replay.streams import run_streams
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        with Capture(redis.pid, tmp_path / "r.drt", tmp_path / "cap.log") as cap:
            bench = subprocess.run(["redis-benchmark", "-p", str(port), "-n", "2000", "-c", "50",
                                    "-t", "set,get,incr,lpush", "-q"], capture_output=True, text=True, timeout=120)
            assert bench.returncode == 0, bench.stderr
            assert cap.stop(settle_s=0.5) == 0
    finally:
        stop(redis)
    res = run_streams(str(tmp_path / "r.drt"), report=str(tmp_path / "r.json"))
    rep = res.report
    assert res.exit_code == ExitCode.OK, rep.text()
    assert rep.identical == len(rep.connections) >= 200
    incr = [c for c in rep.connections if c.request.startswith("INCR counter")]
    assert len(incr) >= 50 and all(c.status == "identical" and c.note is None for c in incr)


# --------------------------------------------------------------------------- nginx: master + workers


def _nginx_capture(tmp_path, requests=200, **site):
    """nginx (make_site) captured by its master's pid under ab -n REQUESTS -c 8 on / (plus
    /msec and /big.txt); (trace, site dir, argv, meta)."""
    from dr.demo.harness import Capture, free_port, stop
    from dr.demo.nginx_site import make_site
    from dr.formats.trace import TraceReader
    port = free_port()
    d = make_site(port, **site)
    argv = ["nginx", "-c", f"{d}/nginx.conf", "-g", "daemon off;"]
    ng = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(port)
        deadline = time.monotonic() + 10
        while len(open(f"/proc/{ng.pid}/task/{ng.pid}/children").read().split()) < (site.get("workers") or 2):
            assert time.monotonic() < deadline, "nginx started no workers"
            time.sleep(0.05)
        with Capture(ng.pid, tmp_path / "n.drt", tmp_path / "cap.log") as cap:
            for n, c, path in ((requests, 8, "/"), (60, 4, "/msec"), (20, 2, "/big.txt")):
                ab = subprocess.run(["ab", "-q", "-n", str(n), "-c", str(c), f"http://127.0.0.1:{port}{path}"],
                                    capture_output=True, text=True, timeout=120)
                assert ab.returncode == 0 and "Failed requests:        0" in ab.stdout, ab.stdout + ab.stderr
            assert cap.stop(settle_s=0.5) == 0
    finally:
        stop(ng)
    with TraceReader(tmp_path / "n.drt") as r:
        meta = r.meta
    return tmp_path / "n.drt", d, argv, meta


def _replay_nginx(trace, cmd, report=None):
    """run_streams, or xfail naming the sandbox's refusal when nginx cannot change the owner
    of its host directories or drop privileges in it (the uid/gid map is issue 15's)."""
    from dr.replay.streams import run_streams
    try:
        return run_streams(str(trace), cmd=cmd, report=report)
    except ReplayError as e:
        if "chown(" in e.message or "setgid(" in e.message or "setuid(" in e.message:
            pytest.xfail(f"the replay sandbox's uid/gid map does not let nginx set up (issue 15): {e.message}")
        raise


needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("ab") is None,
                                 reason="needs nginx and ab (scripts/setup.sh installs them)")


@root_only
@needs_nginx
def test_nginx_master_and_workers_sendfile_and_msec_replay_identical(tmp_path):
    """nginx, master + 2 workers, sendfile on, a $msec location: `--pid MASTER` under ab -n 2000 -c 8
    (and /msec, /big.txt), replay identical;
    a build that adds one header differs by that header in every response and nothing else.

    Runs the workers as root with logs under /tmp: the sandbox maps only root (see the next test)."""
    from dr.demo.nginx_site import remove_site
    from dr.replay.streams import run_streams
    trace, d, argv, meta = _nginx_capture(tmp_path, requests=2000, workers=2, user="root", logs="/tmp")
    try:
        assert len(meta["procs"]) == 2
        with pytest.raises(ReplayError, match="rewrote its command line .* give the command with --cmd"):
            run_streams(str(trace))  # nginx's title keeps no arguments
        res = _replay_nginx(trace, argv, str(tmp_path / "n.json"))
        rep = res.report
        assert res.exit_code == ExitCode.OK, rep.text()
        assert rep.identical == len(rep.connections) >= 2080
        msec = [c for c in rep.connections if c.request == "GET /msec"]
        big = [c for c in rep.connections if c.request == "GET /big.txt"]
        assert len(msec) >= 60 and len(big) >= 20
        assert all("compared by length only" in (c.note or "") for c in big)  # sendfile's bytes
        site2 = (d / "site.conf").read_text().replace("\tindex index.html;\n",
                                                      "\tindex index.html;\n\tadd_header X-Build v2 always;\n")
        (d / "site2.conf").write_text(site2)
        (d / "nginx2.conf").write_text((d / "nginx.conf").read_text().replace(f"{d}/site.conf", f"{d}/site2.conf"))
        res = run_streams(str(trace), cmd=["nginx", "-c", f"{d}/nginx2.conf", "-g", "daemon off;"], report=str(tmp_path / "n2.json"))
        rep = res.report
        answered = [c for c in rep.connections if c.recorded_bytes]  # ab also opens idle connections
        assert res.exit_code == ExitCode.DIVERGED and len(answered) >= 2080
        assert all(c.status == "differs" for c in answered)
        assert {c.first_difference for c in answered} == {"header x-build: '(absent)' -> 'v2'"}
    finally:
        remove_site(d)


@root_only
@needs_nginx
def test_nginx_distribution_config_by_master_pid(tmp_path):
    """Debian's nginx.conf as installed (user www-data, worker_processes auto): the master's pid
    takes in every worker; the replay needs the sandbox to map www-data (issue 15)."""
    from dr.demo.nginx_site import remove_site
    trace, d, argv, meta = _nginx_capture(tmp_path)
    try:
        assert len(meta["procs"]) == (os.cpu_count() or 1)
        res = _replay_nginx(trace, argv, str(tmp_path / "n.json"))
        assert res.exit_code == ExitCode.OK, res.report.text()
        assert res.report.identical == len(res.report.connections) >= 280
    finally:
        remove_site(d)


# --------------------------------------------------------------------------- containers


@root_only
@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("nsenter") is None
                    or shutil.which("redis-benchmark") is None, reason="needs util-linux and redis-tools")
def test_service_in_its_own_mount_pid_net_namespaces_and_root(tmp_path):
    """redis-server in a minimal root (its binary and libraries copied in), its own mount, pid
    and net namespaces: captured from the host by host pid, replayed on that root, identical."""
    from dr.demo.harness import Capture, free_port, stop
    from dr.demo.nginx_site import BASE
    from dr.formats.trace import TraceReader
    from dr.replay.streams import run_streams
    import tempfile
    os.makedirs(BASE, exist_ok=True)
    root = tempfile.mkdtemp(prefix="root-", dir=BASE)
    os.chmod(root, 0o755)  # the sandbox's root need not be the host's root
    try:
        real = os.path.realpath(shutil.which("redis-server"))
        for d in ("opt/svc", "lib64", "usr/lib", "proc", "tmp"):
            os.makedirs(f"{root}/{d}")
        shutil.copy(real, f"{root}/opt/svc/")
        # Only this root has /opt/svc/redis-server: the replay cannot use the host's by mistake.
        os.symlink(os.path.basename(real), f"{root}/opt/svc/redis-server")
        ldd = subprocess.run(["ldd", real], capture_output=True, text=True, check=True).stdout
        for lib in [w for w in ldd.split() if w.startswith("/")]:
            dst = f"{root}/{os.path.dirname(lib).lstrip('/')}"
            os.makedirs(dst, exist_ok=True)
            shutil.copy(lib, dst)
        port = free_port()
        box = subprocess.Popen(["unshare", "-m", "-p", "-n", "-f", "--kill-child", "--propagation", "private", "sh", "-c",
                                f"mount -t proc proc {root}/proc && ip link set lo up && exec chroot {root} "
                                f"/opt/svc/redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            pid = None
            while pid is None:
                kids = open(f"/proc/{box.pid}/task/{box.pid}/children").read().split()
                if kids and os.path.realpath(f"/proc/{kids[0]}/exe").endswith("redis-check-rdb"):
                    pid = int(kids[0])
                assert time.monotonic() < deadline, "the contained redis-server did not start"
                time.sleep(0.05)
            ns = ["nsenter", "-t", str(pid), "-n"]
            while subprocess.run([*ns, "redis-cli", "-p", str(port), "PING"], capture_output=True,
                                 text=True).stdout.strip() != "PONG":
                assert time.monotonic() < deadline + 10, "the contained redis-server does not answer"
                time.sleep(0.05)
            with Capture(pid, tmp_path / "c.drt", tmp_path / "cap.log") as cap:
                bench = subprocess.run([*ns, "redis-benchmark", "-p", str(port), "-n", "200", "-c", "10",
                                        "-t", "set,get,incr,lpush", "-q"], capture_output=True, text=True, timeout=120)
                assert bench.returncode == 0, bench.stderr
                assert cap.stop(settle_s=0.5) == 0
        finally:
            stop(box)
        with TraceReader(tmp_path / "c.drt") as r:
            meta = r.meta
        assert meta["root"]["path"] == root and not meta["root"]["same"]
        assert meta["nspid"] == [pid, 1]  # host pid, then the pid it saw in its own namespace
        assert meta["exec"]["argv"][0] == "/opt/svc/redis-server"  # as the process saw it
        res = run_streams(str(tmp_path / "c.drt"))
        rep = res.report
        assert res.exit_code == ExitCode.OK, rep.text()
        assert rep.identical == len(rep.connections) >= 40
        assert f"ran on the root filesystem {root} (the recorded process's own: it ran in a container)" in rep.notes
    finally:
        shutil.rmtree(root, ignore_errors=True)


@root_only
def test_a_request_left_unread_says_the_order_was_not_held(write_trace):
    """A build that never reads the first connection's request: the next connection's request
    goes out once the program is idle, and the first connection says the order was not held."""
    from dr.replay.streams import run_streams
    port, dep = 9104, 9204
    stuck = ECHO_SVC.replace("def handle(c):\n", "first = []\ndef handle(c):\n    first.append(1)\n"
                             "    if len(first) == 1:\n        threading.Event().wait()\n")
    trace = write_trace(_echo_events(Clock(), port, dep), _meta([PY, "-c", stuck, str(port), str(dep)], port))
    res = run_streams(str(trace))
    rep = res.report
    assert res.exit_code == ExitCode.DIVERGED
    assert [c.status for c in rep.connections] == ["differs", "identical", "identical"]
    assert "left 4 request byte(s) unread when the next connection's request was due" in rep.connections[0].note
    assert all(c.note is None for c in rep.connections[1:])
