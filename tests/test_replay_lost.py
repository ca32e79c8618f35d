"""What strict replay says about a recording with holes: events the capture lost (the
ring refused them) versus payload bytes cut at the snaplen. A user told "re-capture with a
bigger --snaplen" for bytes that were lost, or shown a data-race guess without the losses,
chases the wrong cause (a new user saw both on a 743-loss capture of a shell pipeline)."""

from __future__ import annotations

from types import SimpleNamespace

from dr.replay.divergence import Divergence
from dr.replay.strict.answer import lost_line
from dr.replay.strict.script import cut_by, snaplen_remedy


def _ev(total: int, held: int) -> SimpleNamespace:
    return SimpleNamespace(payloads={1: SimpleNamespace(total=total, data=b"x" * held)})


def test_a_divergence_names_the_capture_losses_first():
    line = lost_line({"RINGBUF_EVENT": 626, "RINGBUF_PAYLOAD": 112, "TRUNCATED": 9})
    assert line is not None and "lost 738 events or payloads" in line
    assert "RINGBUF_EVENT 626" in line and "TRUNCATED" not in line   # cut payloads are counted apart
    d = Divergence("syscall", "thread 1 called read where the recording has write", 1, 5,
                   race="possibly a user-space data race: ...", lost=line)
    text = d.text().splitlines()
    assert text[1].strip() == line and d.to_dict()["lost"] == line
    assert lost_line({"TRUNCATED": 3}) is None and lost_line({}) is None


def test_bytes_lost_in_capture_are_not_blamed_on_the_snaplen():
    snaplen = 256 * 1024
    lost_chunks = [_ev(8192, 4096)]            # fewer bytes than the snaplen: chunks lost
    cut = [_ev(2 * 1024 * 1024, snaplen)]      # exactly the snaplen kept: cut by it
    assert "--snaplen" not in snaplen_remedy(lost_chunks, snaplen)
    assert "lost in capture" in snaplen_remedy(lost_chunks, snaplen)
    assert snaplen_remedy(cut, snaplen) == "re-capture with `--snaplen 2M`"
    assert cut_by(4096, snaplen) == "its payload's chunks were lost in capture"
    assert cut_by(snaplen, snaplen) == "cut at the capture's snaplen"
