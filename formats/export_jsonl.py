"""``dr export jsonl``: a trace as JSON lines, one object per record.

Field names and their meaning are documented in docs/jsonl.md; the first line
is the metadata (``"type": "meta"``), then one line per syscall event
(``"type": "syscall"``), process event (``"proc"``), loss record (``"loss"``)
and any other record the trace holds, in capture order, and last the summary
(``"summary"``) when the trace is complete. Payload bytes are base64
(RFC 4648, standard alphabet, padded).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Iterator, TextIO

from dr import schema
from dr.schema import Sub
from dr.formats.stats import errno_name, _ret_is_error
from dr.formats.trace import Event, ProcEvent, TraceReader

__all__ = ["export_jsonl", "records", "event_obj", "JsonlResult"]

_SUB_NAMES = {int(s): s.name for s in Sub}
_FLAG_BITS = sorted((bit, name) for name, bit in schema.EVENT_FLAGS.items())


@dataclass(frozen=True, slots=True)
class JsonlResult:
    """What :func:`export_jsonl` wrote: lines by ``type`` and the total."""

    lines: int
    by_type: dict[str, int]
    truncated: bool


def _default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(o)).decode("ascii")
    return str(o)


def event_obj(ev: Event, *, payloads: bool = True) -> dict[str, Any]:
    """One syscall event as the JSON object docs/jsonl.md describes."""
    err = ev.errno if _ret_is_error(ev) and not ev.flags & schema.EVENT_FLAGS["NO_EXIT"] else None
    o: dict[str, Any] = {
        "type": "syscall", "index": ev.index, "tid": ev.tid, "tgid": ev.tgid, "seq": ev.seq,
        "cpu": ev.cpu, "nr": ev.nr, "name": ev.name, "args": list(ev.args), "ret": ev.ret,
        "errno": errno_name(err) if err is not None else None,
        "ts_enter": ev.ts_enter, "ts_exit": ev.ts_exit, "duration_ns": ev.duration_ns,
        "flags": [name for bit, name in _FLAG_BITS if ev.flags & bit],
    }
    if payloads:
        o["payloads"] = [
            {"slot": p.slot, "arg": p.arg, "sub": _SUB_NAMES.get(p.sub, str(p.sub)),
             "size": len(p.data), "total": p.total, "truncated": p.truncated,
             "data": base64.b64encode(p.data).decode("ascii")}
            for _slot, p in sorted(ev.payloads.items())]
    return o


def _proc_obj(pe: ProcEvent) -> dict[str, Any]:
    return {"type": "proc", "what": pe.kind, "tid": pe.tid, "tgid": pe.tgid, "ts": pe.ts,
            "arg0": pe.arg0, "arg1": pe.arg1, "cpu": pe.cpu}


def _typed(t: str, rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` with ``"type": t`` first (its own "t"/"type" keys dropped)."""
    return {"type": t, **{k: v for k, v in rec.items() if k not in ("t", "type")}}


def records(reader: TraceReader, *, payloads: bool = True) -> Iterator[dict[str, Any]]:
    """The JSON objects of :func:`export_jsonl`, in file order."""
    yield _typed("meta", reader.meta)
    for rec in reader.stream():
        if rec.__class__ is Event:
            yield event_obj(rec, payloads=payloads)  # type: ignore[arg-type]
        elif rec.__class__ is ProcEvent:
            yield _proc_obj(rec)  # type: ignore[arg-type]
        elif isinstance(rec, dict):
            yield _typed(str(rec.get("t")), rec)
    if reader.summary is not None:
        yield _typed("summary", reader.summary)


def export_jsonl(reader: TraceReader, out: TextIO, *, payloads: bool = True) -> JsonlResult:
    """Write ``reader``'s records to ``out`` as JSON lines. Raises TraceError (corrupt frame)."""
    by_type: dict[str, int] = {}
    n = 0
    dumps = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":")).encode
    for o in records(reader, payloads=payloads):
        out.write(dumps(o))
        out.write("\n")
        t = o["type"]
        by_type[t] = by_type.get(t, 0) + 1
        n += 1
    return JsonlResult(n, by_type, reader.truncated)
