"""Fuzz the trace and bundle readers for longer than the suite does (not a test).

Runs the hypothesis properties of tests/test_hostile.py (structured hostile
traces through every reader iterator, dr show/stats/exports as libraries,
byte flips and cuts of a real trace, garbage after a valid header, mutated and
crafted bundles) in random batches until the time budget is spent. The only
acceptable outcome of each example is a decoded trace or a dr.errors.DrError.

    .venv/bin/python bench/fuzz.py                 # one minute
    .venv/bin/python bench/fuzz.py --seconds 600 --batch 500
    .venv/bin/python bench/fuzz.py --only structured

Prints examples run per property and every failure (hypothesis shows the
shrunk falsifying input); exits 1 when any property failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class _TmpFactory:
    """Stand-in for pytest's tmp_path_factory."""

    def __init__(self, base: str) -> None:
        self.base = Path(base)
        self.n = 0

    def mktemp(self, name: str) -> Path:
        self.n += 1
        p = self.base / f"{name}{self.n}"
        p.mkdir()
        return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="total time budget (default 60)")
    ap.add_argument("--batch", type=int, default=200, help="examples per property per round")
    ap.add_argument("--only", default="", help="run only properties whose name contains this")
    a = ap.parse_args()

    os.environ["DR_FUZZ_EXAMPLES"] = str(a.batch)  # read by test_hostile at import: random, no database
    sys.path.insert(0, str(ROOT / "tests"))
    import test_hostile as H  # noqa: E402

    with tempfile.TemporaryDirectory(prefix="dr-fuzz-") as base:
        fac = _TmpFactory(base)
        bundle_blob = None
        try:
            from dr.formats import bundle  # noqa: F401
            d = fac.mktemp("real")
            (d / "t.drt").write_bytes(H.REAL)
            bundle.create([str(d / "t.drt")], str(d / "b.drb"), redact=False)
            bundle_blob = (d / "b.drb").read_bytes()
        except ImportError:
            print("fuzz: dr.formats.bundle not present; bundle properties skipped")

        props = {
            "structured-reader": (H.test_structured_hostile_traces_read_or_raise_dr_error, {}),
            "structured-tools": (H.test_show_stats_exports_survive_structured_hostile_traces, {}),
            "mutated-real-trace": (H.test_mutated_real_trace_reads_or_raises_dr_error, {}),
            "garbage-after-header": (H.test_garbage_after_a_valid_header, {}),
        }
        if bundle_blob is not None:
            props["mutated-bundle"] = (H.test_mutated_bundles_give_dr_errors_only,
                                       {"tmp_path_factory": fac, "real_bundle": bundle_blob})
            props["crafted-tar-bundle"] = (H.test_crafted_tar_bundles_give_dr_errors_only,
                                           {"tmp_path_factory": fac})
        props = {k: v for k, v in props.items() if a.only in k}
        runs = {k: 0 for k in props}
        failed: dict[str, str] = {}
        t0 = time.monotonic()
        while time.monotonic() - t0 < a.seconds and len(failed) < len(props):
            for name, (fn, kw) in props.items():
                if name in failed or time.monotonic() - t0 >= a.seconds:
                    continue
                try:
                    fn(**kw)
                    runs[name] += a.batch
                except Exception:
                    failed[name] = traceback.format_exc(limit=-8)
                    print(f"fuzz: FAILED {name}\n{failed[name]}", flush=True)
        wall = time.monotonic() - t0
    print(f"fuzz: {wall:.0f} s")
    for name in props:
        state = "FAILED" if name in failed else "ok"
        print(f"  {name:22s} {runs[name]:8,d} examples  {state}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
