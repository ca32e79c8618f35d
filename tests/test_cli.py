"""The dr command's edges: bad inputs, bundles given to show/stats/export, exit codes, help.

Every bad input gives one ``dr:`` line on stderr, no traceback, and the exit
code dr.errors.ExitCode documents: a missing file, a directory or a file of
the wrong kind is ERROR (1); only a bundle that fails its hashes is MISMATCH
(5); wrong flags are USAGE (2) with click's usage line. Most runs are
in-process (conftest's run_dr goes through dr.cli.main, the console entry
point); one test runs the installed ``dr`` to see real stderr.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dr import schema
from dr.errors import ExitCode
from dr.formats import bundle as B
from dr.formats.trace import Event, Payload, TraceWriter, encode_block

DR = str(Path(sys.executable).with_name("dr"))
WRITE = schema.by_name("write").nr
READ = schema.by_name("read").nr
T0 = 5_000_000_000


def write_ev(seq: int, data: bytes, tid: int = 4242) -> Event:
    return Event(tid, WRITE, (1, 0x1000, len(data), 0, 0, 0), len(data), T0 + seq * 1000,
                 T0 + seq * 1000 + 500, 4242, seq, payloads={1: Payload(1, data)})


def lone_payload(ev: Event) -> bytes:
    """The payload records of ``ev`` without its event record: as if the event never came."""
    bare = Event(ev.tid, ev.nr, ev.args, ev.ret, ev.ts_enter, ev.ts_exit, ev.tgid, ev.seq)
    return encode_block([ev])[:-len(encode_block([bare]))]


def make_trace(path: Path, events: list[Event], tail: bytes = b"") -> Path:
    meta = {"tool": "dr", "version": "0.1.0", "mode": "attach", "pid": 4242, "tids": [4242],
            "argv": ["python3", "-m", "http.server"], "started_ns": T0}
    with TraceWriter(path, meta) as w:
        w.write_events(events)
        if tail:
            w.write_block(tail)
        w.close({"events": len(events)})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    make_trace(d / "api.drt", [write_ev(1, b"hello\n"), write_ev(2, b"world\n")])
    make_trace(d / "worker.drt", [write_ev(1, b"from the worker\n", tid=4243)])
    B.create([d / "api.drt", d / "worker.drt"], d / "incident.drb", redact=False)
    (d / "notes.txt").write_text("not a trace\n" * 10)
    (d / "dir").mkdir()
    return d


BAD = {  # name -> (path under the fixture dir, the words the one line must hold)
    "missing": ("nope.drt", "No such file"),
    "text file": ("notes.txt", "not a dr"),
    "directory": ("dir", "directory"),
}
COMMANDS = {  # command -> argv before/after the input path
    "show": (["show"], []),
    "stats": (["stats"], []),
    "export pcap": (["export", "pcap"], ["-o", "{d}/out.pcap"]),
    "export perfetto": (["export", "perfetto"], ["-o", "{d}/out.json"]),
    "export jsonl": (["export", "jsonl"], ["-o", "{d}/out.jsonl"]),
    "bundle create": (["bundle", "create"], ["-o", "{d}/out.drb"]),
    "bundle verify": (["bundle", "verify"], []),
    "bundle info": (["bundle", "info"], []),
}


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dr: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("cmd", COMMANDS)
def test_bad_input_is_one_line_and_exit_error(files, run_dr, cmd, bad):
    before, after = COMMANDS[cmd]
    name, words = BAD[bad]
    code, out, err = run_dr(*before, files / name, *[a.format(d=files) for a in after])
    line = one_line(err)
    assert code == ExitCode.ERROR, (code, line)
    assert words in line and name in line, line
    assert out == ""
    assert not list(files.glob("out.*")), "no output file is left behind"


@pytest.mark.parametrize("cmd", ["verify", "info"])
def test_bundle_commands_given_a_trace_say_so_with_exit_error(files, run_dr, cmd):
    code, _out, err = run_dr("bundle", cmd, files / "api.drt")
    assert code == ExitCode.ERROR
    assert "is a trace, not a bundle" in one_line(err)


def test_bundle_that_fails_its_hashes_is_mismatch(files, run_dr, tmp_path):
    data = bytearray((files / "incident.drb").read_bytes())
    data[len(data) // 2] ^= 0x40
    (tmp_path / "bad.drb").write_bytes(data)
    code, _out, err = run_dr("bundle", "verify", tmp_path / "bad.drb")
    assert code == ExitCode.MISMATCH
    one_line(err)


@pytest.mark.parametrize("cmd", [["show"], ["stats", "--json"], ["export", "jsonl"]])
def test_bundle_reads_as_its_first_trace(files, run_dr, cmd):
    code, direct, err = run_dr(*cmd, files / "api.drt")
    assert code == 0 and err == ""
    code, via_bundle, err = run_dr(*cmd, files / "incident.drb")
    assert code == 0 and err == "", err
    if cmd[0] == "stats":  # the path differs; every number is the same
        direct = direct.replace(str(files / "api.drt"), "P")
        via_bundle = via_bundle.replace(f"{files / 'incident.drb'}:traces/api.drt", "P")
    if cmd[0] == "export":  # the bundled metadata also records the redaction decision
        direct, via_bundle = (s.split("\n", 1)[1] for s in (direct, via_bundle))
    assert via_bundle == direct
    if cmd == ["show"]:
        assert via_bundle.splitlines()[0].startswith('write(1, "hello\\n", 6)')


def test_bundle_trace_option_picks_a_trace_or_lists_them(files, run_dr):
    code, out, _err = run_dr("show", files / "incident.drb", "--trace", "worker.drt")
    assert code == 0 and '"from the worker\\n"' in out and "hello" not in out
    code, out, err = run_dr("stats", files / "incident.drb", "--trace", "nope.drt")
    assert code == ExitCode.USAGE
    assert "api.drt, worker.drt" in one_line(err)
    code, _out, err = run_dr("show", files / "api.drt", "--trace", "worker.drt")
    assert code == ExitCode.USAGE and "not a bundle" in one_line(err)


def test_payload_of_a_call_in_progress_at_the_end_is_not_a_loss(run_dr, tmp_path):
    # Attach mode stops while poll() waits: its entry payload is in the trace, its event never
    # comes. That is the capture's boundary, not a lost event.
    path = make_trace(tmp_path / "stop.drt", [write_ev(1, b"a\n")], tail=lone_payload(write_ev(2, b"b\n")))
    code, out, err = run_dr("show", path)
    assert code == 0 and err == "" and out.count("\n") == 1


def test_payload_whose_event_was_lost_is_reported_in_english(run_dr, tmp_path):
    # seq 2's payload, then the thread completes seq 3: seq 2's event was lost.
    path = make_trace(tmp_path / "lost.drt", [write_ev(1, b"a\n")], tail=lone_payload(write_ev(2, b"b\n"))
                      + encode_block([write_ev(3, b"c\n")]))
    code, out, err = run_dr("show", path)
    assert code == 0 and out.count("\n") == 2
    assert one_line(err) == "dr: 1 payload whose syscall event was lost"


def test_stats_header_counts_in_english(files, run_dr):
    code, out, _err = run_dr("stats", files / "api.drt")
    assert code == 0
    assert ": 2 syscalls, 0 errors, " in out and " s, 1 thread, mode attach" in out


def test_usage_errors_print_the_usage_line_and_exit_2(run_dr):
    for argv in (["show", "--bogus", "x.drt"], ["show"], ["export", "pcap", "x.drt"], ["bogus"]):
        code, _out, err = run_dr(*argv)
        assert code == ExitCode.USAGE, argv
        assert err.startswith("Usage: dr") and "Error:" in err and "Traceback" not in err, err


def test_help_lists_every_command_and_leaves_have_examples(run_dr):
    code, out, _err = run_dr("--help")
    assert code == 0
    listed = out.split("Commands:")[1].split("Examples:")[0]
    rows = [ln.split(None, 1) for ln in listed.strip().splitlines()]
    assert [r[0] for r in rows] == ["show", "capture", "replay", "stats", "bundle", "export"]
    assert all(len(r) == 2 and not r[1].endswith("...") for r in rows), rows
    for leaf in (["show"], ["stats"], ["export", "pcap"], ["export", "perfetto"], ["export", "jsonl"],
                 ["bundle", "create"], ["bundle", "verify"], ["bundle", "info"]):
        code, out, _err = run_dr(*leaf, "--help")
        assert code == 0 and re.search(r"Examples:\n\n +dr ", out), leaf


def test_installed_command_has_no_traceback(files):
    # The console script, not main() in-process: what a user's terminal shows.
    for argv, want in ((["show", files / "nope.drt"], ExitCode.ERROR),
                       (["bundle", "info", files / "api.drt"], ExitCode.ERROR),
                       (["show", files / "incident.drb"], ExitCode.OK)):
        p = subprocess.run([DR, *map(str, argv)], capture_output=True, text=True, timeout=30)
        assert p.returncode == want, (argv, p.stderr)
        assert "Traceback" not in p.stderr and p.stderr.count("\n") == (0 if want == 0 else 1), p.stderr


def test_bundle_create_missing_rules_file_is_exit_error(files, run_dr):
    code, _out, err = run_dr("bundle", "create", files / "api.drt", "--rules", files / "nope.toml",
                             "-o", files / "out.drb")
    assert code == ExitCode.ERROR and "nope.toml: No such file or directory" in one_line(err)
    assert not (files / "out.drb").exists()
