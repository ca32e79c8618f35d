"""The report of a streams replay: the comparison and what the session knows beside it.

:func:`session_report` sets each replayed response stream beside the recorded one
(:mod:`dr.replay.compare`) and adds the session's evidence: how the program ended,
which processes accepted the recorded connections, the root it ran on, what the
supervisor substituted and what the sandbox refused. :func:`failure_report` is the
report of a replay that could not run (verdict ERROR).
"""

from __future__ import annotations

import shlex
from typing import Any

from dr.errors import DrError
from dr.replay.connections import Conversations

__all__ = ["session_report", "failure_report"]


def session_report(self: Any) -> Any:
    """The comparison report of a finished :class:`dr.replay.streams.StreamsSession`."""
    from dr.replay import compare
    rep = compare.compare(self.conversations, list(self.replayed.values()), self.ignore,
                          misses=self.misses, skipped=self.skipped)
    rep.command = shlex.join(self.argv)
    rep.new_build = self.new_build
    rep.wall_s = self.wall_ns / 1e9
    rep.output_log = None
    if not rep.all_identical or self.died:
        # The program's last words may explain a difference (a traceback behind a 500).
        rep.output_tail = self.output_tail()
    oom = self.oom_message()
    if oom and not (self.died or "").startswith(oom):
        rep.notes.insert(0, oom)  # a task killed at the memory limit, seen after the plan's end
    if self.died:
        rep.notes.insert(0, self.died)
        for r in rep.connections:
            if r.status != "identical" and not r.first_difference:
                r.first_difference = "not answered: the program had exited"
    rep.mode = self.mode_used
    by_proc: dict[int, int] = {}
    for c in self.inbound:
        by_proc[c.tgid] = by_proc.get(c.tgid, 0) + 1
    if len(by_proc) > 1:
        # Pre-forked workers: the kernel chose the accepting process, in production as here.
        each = ", ".join(f"{n} by pid {p}" for p, n in sorted(by_proc.items()))
        rep.notes.append(f"the recording's connections were accepted by {len(by_proc)} processes ({each}) "
                         "sharing the listening socket; each was delivered to the replayed service as a "
                         "whole, since which worker accepts is the kernel's choice; a response that "
                         "depended on the worker would show here as a difference")
    if self.rootfs != "/":
        rep.notes.append(f"ran on the root filesystem {self.rootfs}"
                         + (" (the recorded process's own: it ran in a container)"
                            if isinstance(self.meta.get("root"), dict) and not self.meta["root"].get("same", True)
                            else ""))
    if self.cut_where is not None:
        # Not compared: what the recording held after the cut (strict replay's not_compared).
        rep.notes.insert(0, f"not compared: the trace was cut short {self.cut_where}; only the "
                            f"{len(self.inbound)} connection(s) it holds were replayed and compared, "
                            "and whatever the recording held after the cut was not")
    rep.listening = [{"recorded": r, "replayed": p} for r, p in self.listen_map]
    if self.mode_note:
        rep.notes.append(self.mode_note)
    if self.supervisor is not None:
        sub = {k: v for k, v in self.supervisor.counts.items() if k != "continued"}
        rep.substituted = sub
        rep.notes = [n for n in rep.notes if not n.startswith("time, randomness and pids")]
        what = ", ".join(f"{k} {v}" for k, v in sorted(sub.items())) or "none"
        if self.supervisor.vdso_patched:
            rep.notes.append(f"the program saw the incident's clock and recorded randomness "
                             f"(substituted: {what}); pid {self.first_pid or 'unset'} as recorded")
        else:
            rep.notes.append(f"the vDSO could not be rewritten: time was the host's (substituted: {what})")
        if self.supervisor.error:
            rep.notes.append(f"the supervisor stopped early: {self.supervisor.error}")
        rep.refused = [r.to_dict() for r in self.supervisor.refused]
        if rep.refused:
            shown = "; ".join(f"{r['syscall']} {r['target']} ({r['errno']})" for r in rep.refused[:8])
            more = f"; and {len(rep.refused) - 8} more" if len(rep.refused) > 8 else ""
            rep.notes.append(f"the sandbox refused {len(rep.refused)} attempt(s) to reach the host: "
                             f"{shown}{more}")
    return rep

# -- teardown


def failure_report(sess: Any, conv: Conversations | None, err: DrError) -> Any:
    """The report of a replay that could not run: verdict ERROR, the one-line reason."""
    from dr.replay import compare
    rep = compare.Report([], error=err.message)
    if conv is not None:
        rep.notes = list(conv.notes)
        rep.recorded_connections = len(conv.inbound())
        rep.cut_short = conv.cut_short
    if sess is not None:
        rep.command = shlex.join(sess.argv)
        rep.new_build = sess.new_build
        rep.output_tail = sess.output_tail()
    return rep

