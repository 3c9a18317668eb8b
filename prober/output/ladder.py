"""Ladder diagrams in the terminal: two columns (us, the peer), one arrow per segment.

Drawn from the SegmentRecords a probe logs: flags, relative seq/ack, length, the time since
the first segment, and the TCP state each side is in after the segment (the peer's inferred
from what it sent).

Rows are in the order of their timestamps, so time never runs backwards down the ladder. That
is not always the order prober handled the segments in (a segment can arrive while prober is
still answering the one before), so each segment of ours that answers one of the peer's says
which row it answers and after how long: our reaction time, from that segment's arrival to
our answer's departure. A segment that could not be sent is drawn without a time and noted
"NOT SENT".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prober.core.trace import Direction, SegmentRecord

ARROW_WIDTH = 40
STATE_WIDTH = 12


def _signed(relative: int) -> int:
    """A relative number as a signed 32-bit one: a probe below the ISN (timewait's reuse
    SYNs) shows as negative, not as 4 billion-odd (no conversation moves 2 GiB)."""
    return relative - (1 << 32) if relative >= 1 << 31 else relative


def _label(record: SegmentRecord) -> str:
    parts = [record.flags, f"seq={_signed(record.relative_seq)}"]
    if "." in record.flags:
        parts.append(f"ack={_signed(record.relative_ack)}")
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
    omit: Mapping[int, str] | None = None,
) -> list[str]:
    """The diagram's lines; ``us`` and ``peer`` label the two columns (e.g. address:port).

    ``omit`` maps indices of ``records`` to leave out to a line that stands in for them: a
    run of omitted rows prints the first one's text once (rows keep their numbers).
    """
    omit = omit or {}
    if not records:
        return [f"(no segments between {us} and {peer})"]
    # Stable: segments with equal stamps keep the order prober handled them in.
    order = sorted(range(len(records)), key=lambda index: records[index].time_ns)
    row_of = {index: row for row, index in enumerate(order, start=1)}
    stamped = [r for r in records if r.sent_ok]
    start = stamped[0].time_ns if stamped else 0
    clock = records[0].clock.value
    header = (
        f"{'#':>3} {'ms':>10}  {'us: ' + us:<{STATE_WIDTH + ARROW_WIDTH + 4}}peer: {peer}"
    )
    lines = [header]
    omitting = False
    for row, index in enumerate(order, start=1):
        record = records[index]
        if index in omit:
            if not omitting:
                lines.append(f"{'...':>3} {'':>10}  {omit[index]}")
            omitting = True
            continue
        omitting = False
        rightwards = record.direction is Direction.SENT
        notes = [record.note] if record.note else []
        if record.answers is not None and record.reaction_ns is not None:
            notes.append(
                f"answers #{row_of[record.answers]} after {record.reaction_ns / 1e6:.3f} ms"
            )
        if record.sent_ok:
            elapsed = f"{(record.time_ns - start) / 1_000_000:>10.3f}"
        else:
            elapsed = f"{'-':>10}"  # it never left: no time of its own
            notes.append(f"NOT SENT: {record.send_error}")
        arrow = _arrow(_label(record), rightwards, ascii_only)
        note = f"  ({'; '.join(notes)})" if notes else ""
        lines.append(
            f"{row:>3} {elapsed}  {record.our_state.value:<{STATE_WIDTH}}  {arrow}  "
            f"{record.peer_state.value:<{STATE_WIDTH}}{note}"
        )
    lines.append(
        f"{'':>14}(times since the first segment, {clock} timestamps; rows in time order)"
    )
    return lines
