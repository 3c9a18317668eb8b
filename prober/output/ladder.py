"""Ladder diagrams in the terminal: two columns (us, the peer), one arrow per segment.

Drawn from the SegmentRecords a probe logs: flags, relative seq/ack, length, the time since
the first segment, and the TCP state each side is in after the segment (the peer's inferred
from what it sent).
"""

from __future__ import annotations

from collections.abc import Sequence

from prober.core.trace import Direction, SegmentRecord

ARROW_WIDTH = 40
STATE_WIDTH = 12


def _label(record: SegmentRecord) -> str:
    parts = [record.flags, f"seq={record.relative_seq}"]
    if "." in record.flags:
        parts.append(f"ack={record.relative_ack}")
    if record.length:
        parts.append(f"len={record.length}")
    return " ".join(parts)


def _arrow(label: str, rightwards: bool, ascii_only: bool) -> str:
    line, right, left = ("-", ">", "<") if ascii_only else ("─", "►", "◄")
    body = f" {label} "
    fill = max(ARROW_WIDTH - len(body) - 1, 4)
    if rightwards:
        return line * 2 + body + line * (fill - 2) + right
    return left + line * (fill - 2) + body + line * 2


def ladder(
    records: Sequence[SegmentRecord],
    us: str,
    peer: str,
    *,
    ascii_only: bool = False,
) -> list[str]:
    """The diagram's lines; ``us`` and ``peer`` label the two columns (e.g. address:port)."""
    if not records:
        return [f"(no segments between {us} and {peer})"]
    start = records[0].time_ns
    clock = records[0].clock.value
    header = f"{'ms':>10}  {'us: ' + us:<{STATE_WIDTH + ARROW_WIDTH + 4}}peer: {peer}"
    lines = [header]
    for record in records:
        elapsed = (record.time_ns - start) / 1_000_000
        rightwards = record.direction is Direction.SENT
        arrow = _arrow(_label(record), rightwards, ascii_only)
        note = f"  ({record.note})" if record.note else ""
        lines.append(
            f"{elapsed:>10.3f}  {record.our_state.value:<{STATE_WIDTH}}  {arrow}  "
            f"{record.peer_state.value:<{STATE_WIDTH}}{note}"
        )
    lines.append(f"{'':>10}  (times since the first segment, {clock} timestamps)")
    return lines
