"""A probe's ladder as an SVG sequence diagram: the textbook's handshake and close figures,
drawn from the segments the probe really sent and received.

Two lifelines, prober on the left and the peer on the right; one slanted arrow per segment,
in the order of the segments' timestamps, labelled with its tcpdump flags, relative seq/ack,
length, window, options and TCP timestamps; the time since the first segment in the left
margin; each side's TCP state written beside its lifeline where it changes (the peer's is
inferred from what it sent and received); a record's note in a muted style; a send that
failed as a dashed arrow that stops halfway, with the error.

Vertical scale. One ladder holds gaps from 50 µs (SYN -> SYN/ACK on loopback) to 60 s (a
TIME-WAIT series, SYN/ACK retransmissions 1, 2, 4 ... 32 s apart). A linear time axis shows
either the microseconds or the minute, never both, so every segment gets a fixed row (its
labels stay legible) and time is told in text: each arrow's time in the margin, and a gap of
100 ms or more between two rows gets a break marker with the time that passed. The marker's
height grows with the log of the gap (16 px at 100 ms, 28 px at 1 s, 40 px at 10 s), so a
long wait also looks longer, monotonic but not to scale; the figure says so in its footer.
The arrows' slant shows that a segment travels, not how long it took.

Long ladders. A run of identical exchanges (the same flags, lengths, options, states and
notes, repeated with a period of 1 to 4 segments, at a steady pace: a TIME-WAIT probe
series, a rate test; never a backoff, whose growing intervals are the point) of
``MIN_REPEATS`` or more is drawn as its first two exchanges and its last, with one row
between them that says how many exchanges and segments it stands for, their record numbers,
how far apart they came and over which times, and whether their seq/ack differ from the
drawn ones. Segments a caller marks (evidence a report cites) are never collapsed.

Well-formed XML; every text escaped; no external fonts, images or scripts; black on white.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from itertools import pairwise
from statistics import median

from prober.core.profile import Ladder
from prober.core.trace import Direction, SegmentRecord

SVG_NS = "http://www.w3.org/2000/svg"
EN_DASH = "\N{EN DASH}"  # in ranges of record numbers
TIMES = "\N{MULTIPLICATION SIGN}"  # "x 57 more the same"

# Geometry (px). Columns, left to right: record number, time, our state, our lifeline, the
# arrows, the peer's lifeline, its state, the marks of the report rows that cite a segment.
WIDTH = 920
X_NUMBER = 6
X_TIME = 100  # right edge of the time column
X_US = 240  # our lifeline
X_PEER = 640  # the peer's lifeline
X_MARK = X_PEER + 116
HEAD_H = 58  # the lifelines' name boxes
ROW_H = 60
SLANT = 12  # how far an arrow drops from its sender to its receiver
FOOT_H = 44
COLLAPSE_H = 50

GAP_MARK_NS = 100_000_000  # a gap this long or longer gets a break marker
MIN_REPEATS = 6  # a run of at least this many identical exchanges is collapsed
MAX_PERIOD = 4  # the longest exchange (in segments) a run is made of

_STYLE = """
svg.ladder { background: #fff; }
svg.ladder text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: 12px; fill: #000; paint-order: stroke fill; stroke: #fff; stroke-width: 3px;
  stroke-linejoin: round; }
svg.ladder .head-box { fill: none; stroke: #000; stroke-width: 1.2; }
svg.ladder .head { font-size: 13px; font-weight: bold; }
svg.ladder .head-sub { font-size: 11.5px; }
svg.ladder .life { stroke: #000; stroke-width: 1; }
svg.ladder .life-gap { stroke: #000; stroke-width: 1; stroke-dasharray: 2 4; }
svg.ladder .arrow { stroke: #000; stroke-width: 1.4; fill: none; }
svg.ladder .head-tip { fill: #000; stroke: none; }
svg.ladder .rst .arrow { stroke-width: 2.4; }
svg.ladder .failed .arrow { stroke-dasharray: 6 4; }
svg.ladder .failed .cross { stroke: #000; stroke-width: 2; }
svg.ladder .label { font-weight: bold; }
svg.ladder .detail { font-size: 11px; }
svg.ladder .note { font-size: 11px; font-style: italic; fill: #555; }
svg.ladder .error { font-size: 11px; font-weight: bold; }
svg.ladder .num { font-size: 10.5px; fill: #666; }
svg.ladder .time { font-size: 11.5px; }
svg.ladder .state { font-size: 11px; font-family: sans-serif; font-weight: bold; }
svg.ladder .state-bg { fill: #fff; }
svg.ladder .mark { font-size: 10.5px; fill: #333; }
svg.ladder .gap text, svg.ladder .collapsed text { font-size: 11.5px; font-style: italic;
  fill: #333; }
svg.ladder .gap-line { stroke: #555; stroke-width: 1; stroke-dasharray: 1 3; }
svg.ladder .break { stroke: #000; stroke-width: 1.2; fill: none; }
svg.ladder .collapse-box { fill: #fff; stroke: #555; stroke-width: 1; stroke-dasharray: 4 3; }
svg.ladder .foot { font-size: 10.5px; fill: #555; font-family: sans-serif; stroke: none; }
svg.ladder .placeholder { font-size: 13px; font-style: italic; fill: #555; }
svg.ladder .seg:target .arrow, svg.ladder .seg:target .cross { stroke: #b00000;
  stroke-width: 3.2; }
svg.ladder .seg:target .head-tip { fill: #b00000; }
svg.ladder .seg:target .label, svg.ladder .seg:target .mark { fill: #b00000; }
svg.ladder .seg:target .hit { fill: #fde8e8; }
svg.ladder .hit { fill: transparent; }
"""


def _signed(relative: int) -> int:
    """A relative number as a signed 32-bit one: a probe below the ISN shows as negative,
    not as 4 billion-odd (no conversation moves 2 GiB)."""
    return relative - (1 << 32) if relative >= 1 << 31 else relative


def format_duration(ns: int) -> str:
    """A duration in sensible units: "48 µs", "1.23 ms", "204.1 ms", "1.000 s", "63.00 s".

    Args:
        ns: the duration in nanoseconds (negative durations keep their sign).

    Returns:
        The text, three or four significant digits.
    """
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    # (upper bound, divisor, unit, decimals); a value that rounds up to the bound moves on
    # to the next tier ("1.000 s", never "1000.0 ms").
    tiers = (
        (1e6, 1e3, "µs", 0), (1e7, 1e6, "ms", 2), (1e9, 1e6, "ms", 1), (1e10, 1e9, "s", 3),
        (1e11, 1e9, "s", 2),
    )
    for bound, divisor, unit, decimals in tiers:
        if round(ns / divisor, decimals) < bound / divisor:
            return f"{sign}{ns / divisor:.{decimals}f} {unit}"
    return f"{sign}{ns / 1e9:.1f} s"


def segment_label(record: SegmentRecord) -> str:
    """The arrow's main label: flags, relative seq (and ack when ACK is set), length.

    Args:
        record: the segment.

    Returns:
        e.g. "S. seq 0 ack 1", "P. seq 1 ack 1 len 18".
    """
    parts = [record.flags, f"seq {_signed(record.relative_seq)}"]
    if "." in record.flags:
        parts.append(f"ack {_signed(record.relative_ack)}")
    if record.length > 0:
        parts.append(f"len {record.length}")
    return " ".join(parts)


def _detail(record: SegmentRecord) -> str:
    parts = [f"win {record.window}"]
    if record.options:
        parts.append(f"<{record.options}>")
    if record.tsval is not None:
        parts.append(f"TS {record.tsval}/{record.tsecr if record.tsecr is not None else '-'}")
    return " · ".join(parts)


@dataclass(frozen=True, slots=True)
class Collapsed:
    """A run of identical exchanges drawn as one row: ``indices`` are the records left out."""

    indices: tuple[int, ...]
    exchanges: int
    period: int
    text: str


# One item of the drawing, in time order: a record's index, or a collapsed run.
Item = int | Collapsed


def _signature(record: SegmentRecord) -> tuple[object, ...]:
    # What makes two segments "the same" for collapsing: all that the arrow says except
    # seq/ack (which a probe series may step) and the time. Seq/ack differences are stated.
    return (
        record.direction, record.flags, record.length, record.options, record.our_state,
        record.peer_state, record.note, record.send_error, record.window,
    )


def _interval_text(starts: Sequence[int]) -> str:
    steps = [b - a for a, b in pairwise(starts)]
    if not steps:
        return ""
    mid = median(steps)
    low, high = min(steps), max(steps)
    if high - low <= 0.1 * mid:
        return f"every {format_duration(int(mid))}"
    return f"{format_duration(low)} … {format_duration(high)} apart"


def _steady(
    records: Sequence[SegmentRecord], order: Sequence[int], position: int, period: int,
    repeats: int,
) -> bool:
    """Whether block ``repeats`` of a run came as far after the one before as the second
    came after the first (±25 %): a series at a steady pace collapses, a backoff (1, 2, 4 s
    apart: the point of the figure) never does."""
    if repeats < 2:
        return True

    def begin(block: int) -> int:
        return records[order[position + block * period]].time_ns

    first = begin(1) - begin(0)
    step = begin(repeats) - begin(repeats - 1)
    return abs(step - first) <= 0.25 * max(first, 1)


def layout(
    records: Sequence[SegmentRecord], keep: frozenset[int] = frozenset()
) -> list[Item]:
    """The drawing's rows: record indices in time order, runs of repeats collapsed.

    Args:
        records: the ladder's records, in the order prober handled them.
        keep: indices never to collapse (segments a report cites as evidence).

    Returns:
        Record indices (sorted by ``time_ns``, stable) and ``Collapsed`` runs in their place.
    """
    order = sorted(range(len(records)), key=lambda index: records[index].time_ns)
    start = next((records[i].time_ns for i in order if records[i].sent_ok), 0)
    # A kept record's signature is unique to it, so no run can swallow it.
    sigs: list[object] = [
        ("keep", index) if index in keep else _signature(records[index]) for index in order
    ]
    items: list[Item] = []
    position = 0
    while position < len(order):
        best_period, best_repeats = 0, 0
        for period in range(1, MAX_PERIOD + 1):
            block = sigs[position:position + period]
            if len(block) < period:
                break
            repeats = 1
            while (
                sigs[position + repeats * period:position + (repeats + 1) * period] == block
                and _steady(records, order, position, period, repeats)
            ):
                repeats += 1
            if repeats >= MIN_REPEATS and repeats * period > best_repeats * best_period:
                best_period, best_repeats = period, repeats
        if not best_period:
            items.append(order[position])
            position += 1
            continue
        period, repeats = best_period, best_repeats
        run = order[position:position + repeats * period]
        blocks = [run[b * period:(b + 1) * period] for b in range(repeats)]
        shown_head, hidden, shown_tail = blocks[:2], blocks[2:-1], blocks[-1]
        items.extend(index for block in shown_head for index in block)
        hidden_indices = tuple(index for block in hidden for index in block)
        starts = [records[block[0]].time_ns for block in blocks[1:]]
        pattern = ", ".join(
            f"{records[i].flags} {'→' if records[i].direction is Direction.SENT else '←'}"
            for i in blocks[0]
        )
        numbers = ([(_signed(records[i].relative_seq), _signed(records[i].relative_ack))
                    for i in block] for block in blocks)
        first_numbers = next(numbers)
        same_numbers = all(other == first_numbers for other in numbers)
        first_time = records[hidden[0][0]].time_ns - start
        last_time = records[hidden[-1][0]].time_ns - start
        text = (
            f"{TIMES} {len(hidden)} more the same exchange ({pattern}), "
            f"{_interval_text(starts)}, +{format_duration(first_time)} … "
            f"+{format_duration(last_time)}; "
            f"{'seq/ack as drawn' if same_numbers else 'seq/ack differ from those drawn'}"
        )
        items.append(Collapsed(hidden_indices, len(hidden), period, text))
        items.extend(shown_tail)
        position += repeats * period
    return items


def _arrow_head(x1: float, y1: float, x2: float, y2: float) -> str:
    length = math.hypot(x2 - x1, y2 - y1) or 1.0
    dx, dy = (x2 - x1) / length, (y2 - y1) / length
    back_x, back_y = x2 - 9 * dx, y2 - 9 * dy
    points = [
        (x2, y2), (back_x - 4 * dy, back_y + 4 * dx), (back_x + 4 * dy, back_y - 4 * dx)
    ]
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _text(x: float, y: float, content: str, cls: str, anchor: str = "start") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">'
        f"{escape(content)}</text>"
    )


def _state(x: float, y: float, content: str, anchor: str) -> str:
    # A white box under the state keeps it readable where it crosses nothing but paper.
    width = 7.2 * len(content) + 6
    left = x - width if anchor == "end" else x
    return (
        f'<rect class="state-bg" x="{left:.1f}" y="{y - 11:.1f}" width="{width:.1f}" '
        f'height="15"/>' + _text(x - 3 if anchor == "end" else x + 3, y, content, "state", anchor)
    )


def _gap_height(gap_ns: int) -> float:
    return min(16.0 + 12.0 * math.log10(max(gap_ns, GAP_MARK_NS) / GAP_MARK_NS), 52.0)


def ladder_svg(
    ladder: Ladder,
    *,
    title_id: str,
    us: str | None = None,
    peer: str | None = None,
    id_prefix: str | None = None,
    marks: Mapping[int, str] | None = None,
) -> str:
    """The ladder as a standalone SVG document (also valid inline in HTML5).

    Args:
        ladder: the probe's ladder.
        title_id: the id of the SVG's <title> (``aria-labelledby``); unique in the page.
        us: our lifeline's label, e.g. "prober 198.18.0.1:40001" (default: the port only).
        peer: the peer's lifeline's label, e.g. "peer 198.18.0.18:80".
        id_prefix: prefix of each arrow's id, ``{id_prefix}-s{index}`` with ``index`` the
            record's index in ``ladder.records`` (default: ``title_id``).
        marks: short texts by record index, written at the right margin of the arrow (the
            report rows that cite it); marked records are never collapsed.

    Returns:
        The SVG as text: one ``<g class="seg">`` per drawn record, one
        ``<g class="collapsed" data-collapsed="N">`` per collapsed run of N records.
    """
    marks = marks or {}
    prefix = id_prefix or title_id
    records = ladder.records
    us_label = us or f"prober :{ladder.source_port}"
    peer_label = peer or "peer"
    items = layout(records, frozenset(index for index in marks if 0 <= index < len(records)))

    body: list[str] = []
    y = float(HEAD_H + 14)
    life_solid: list[tuple[float, float]] = []  # lifeline spans drawn solid
    life_gap: list[tuple[float, float]] = []  # and dotted (gaps, collapsed runs)
    stamped = [r for r in records if r.sent_ok]
    start = min((r.time_ns for r in stamped), default=0)
    previous_time: int | None = None
    shown_states: tuple[str, str] | None = None  # (ours, the peer's) as last written
    drawn = 0
    collapsed_total = 0

    if not records:
        body.append(_text((X_US + X_PEER) / 2, y + 26, "(no segments: the probe sent and "
                          "received nothing)", "placeholder", "middle"))
        life_gap.append((y, y + 48))
        y += 48

    for item in items:
        if isinstance(item, Collapsed):
            collapsed_total += len(item.indices)
            top = y + 6
            body.append(
                f'<g class="collapsed" data-collapsed="{len(item.indices)}" '
                f'data-exchanges="{item.exchanges}" data-first="{min(item.indices)}" '
                f'data-last="{max(item.indices)}">'
                f'<rect class="collapse-box" x="{X_US - 120}" y="{top:.1f}" '
                f'width="{X_PEER - X_US + 240}" height="{COLLAPSE_H - 12}"/>'
                + _text((X_US + X_PEER) / 2, top + 15, item.text.split("; ")[0], "",
                        "middle")
                + _text(
                    (X_US + X_PEER) / 2, top + 30,
                    f"{len(item.indices)} segments not drawn (records "
                    f"{_ranges(sorted(item.indices))}); {item.text.split('; ')[-1]}",
                    "", "middle",
                )
                + "</g>"
            )
            life_gap.append((y, y + COLLAPSE_H))
            y += COLLAPSE_H
            # The next row (the run's last exchange) is as far from the last one left out
            # as the drawn ones are from each other: its gap is marked the same way.
            hidden_times = [records[i].time_ns for i in item.indices if records[i].sent_ok]
            previous_time = max(hidden_times) if hidden_times else None
            continue
        index = item
        record = records[index]
        if previous_time is not None and record.sent_ok:
            gap = record.time_ns - previous_time
            if gap >= GAP_MARK_NS:
                height = _gap_height(gap)
                mid = y + height / 2
                body.append(
                    '<g class="gap">'
                    f'<line class="gap-line" x1="{X_US}" y1="{mid:.1f}" x2="{X_PEER}" '
                    f'y2="{mid:.1f}"/>'
                    + "".join(
                        f'<path class="break" d="M{x - 7},{mid + 1:.1f} l14,-6 '
                        f'M{x - 7},{mid + 6:.1f} l14,-6"/>'
                        for x in (X_US, X_PEER)
                    )
                    + f'<rect class="state-bg" x="{(X_US + X_PEER) / 2 - 70}" '
                    f'y="{mid - 9:.1f}" width="140" height="14"/>'
                    + _text((X_US + X_PEER) / 2, mid + 3, f"{format_duration(gap)} later",
                            "", "middle")
                    + "</g>"
                )
                life_gap.append((y, y + height))
                y += height
        if record.sent_ok:
            previous_time = record.time_ns
        sent = record.direction is Direction.SENT
        x1, x2 = (X_US, X_PEER) if sent else (X_PEER, X_US)
        y1, y2 = y + 19, y + 19 + SLANT
        classes = ["seg", "sent" if sent else "received"]
        if "R" in record.flags:
            classes.append("rst")
        if not record.sent_ok:
            classes.append("failed")
        if index in marks:
            classes.append("ref")
        parts = [
            f'<g class="{" ".join(classes)}" id="{escape(prefix)}-s{index}" '
            f'data-index="{index}">',
            f'<rect class="hit" x="{X_NUMBER}" y="{y + 2:.1f}" width="{WIDTH - 2 * X_NUMBER}" '
            f'height="{ROW_H - 4}"/>',
            # Numbered from 1, as the terminal report cites segments (ids stay 0-based).
            _text(X_NUMBER, (y1 if sent else y2) + 4, f"#{index + 1}", "num"),
        ]
        mid_x = (X_US + X_PEER) / 2
        our_y, peer_y = (y1, y2) if sent else (y2, y1)
        if record.sent_ok:
            # Our timestamps are taken on our side: the time sits where the arrow meets our
            # lifeline (a departure, or an arrival).
            parts.append(_text(X_TIME, our_y + 4, "+" + format_duration(record.time_ns - start)
                               if record.time_ns != start else "0", "time", "end"))
            parts.append(
                f'<line class="arrow" x1="{x1}" y1="{y1:.1f}" x2="{x2}" y2="{y2:.1f}"/>'
                f'<polygon class="head-tip" points="{_arrow_head(x1, y1, x2, y2)}"/>'
            )
            parts.append(_text(mid_x, y + 13, segment_label(record), "label", "middle"))
            detail = _detail(record)
            second = [f'<tspan class="detail">{escape(detail)}</tspan>']
            if record.note:
                second.append(f'<tspan class="note"> — {escape(record.note)}</tspan>')
            parts.append(
                f'<text x="{mid_x:.1f}" y="{y + 46:.1f}" text-anchor="middle">'
                + "".join(second) + "</text>"
            )
        else:
            # It never left: no time of its own, an arrow that stops before the peer.
            stop_x = x1 + (x2 - x1) * 0.55
            stop_y = y1 + SLANT * 0.55
            parts.append(_text(X_TIME, our_y + 4, "—", "time", "end"))
            parts.append(
                f'<line class="arrow" x1="{x1}" y1="{y1:.1f}" x2="{stop_x:.1f}" '
                f'y2="{stop_y:.1f}"/>'
                f'<path class="cross" d="M{stop_x - 6:.1f},{stop_y - 6:.1f} l12,12 '
                f'M{stop_x - 6:.1f},{stop_y + 6:.1f} l12,-12"/>'
            )
            parts.append(_text(mid_x, y + 13, segment_label(record) + " — NOT SENT",
                               "label", "middle"))
            error = f"error: {record.send_error}"
            if record.note:
                error += f" ({record.note})"
            parts.append(_text(mid_x, y + 46, error, "error", "middle"))
        states = (record.our_state.value, record.peer_state.value)
        if shown_states is None or states[0] != shown_states[0]:
            parts.append(_state(X_US - 6, our_y + 4, states[0], "end"))
        if shown_states is None or states[1] != shown_states[1]:
            parts.append(_state(X_PEER + 6, peer_y + 4, states[1], "start"))
        shown_states = states
        if index in marks:
            parts.append(_text(X_MARK, y1 + 8, marks[index], "mark"))
        parts.append("</g>")
        body.append("".join(parts))
        life_solid.append((y, y + ROW_H))
        y += ROW_H
        drawn += 1

    height = y + FOOT_H
    clock = records[0].clock.value if records else "no"
    footer = (
        f"{drawn} of {len(records)} segments drawn"
        + (f", {collapsed_total} in collapsed runs" if collapsed_total else "")
        + f"; times since the first segment ({clock} timestamps)."
    )
    footer_2 = (
        "One row per segment, in time order; breaks mark gaps of 100 ms or more "
        "(heights grow with the gap, not to scale)."
    )
    description = (
        f"Sequence diagram of {ladder.title}: {len(records)} segments between "
        f"{us_label} and {peer_label}."
    )
    head = [
        f'<svg xmlns="{SVG_NS}" class="ladder" role="img" '
        f'aria-labelledby="{escape(title_id)} {escape(title_id)}-desc" '
        f'width="{WIDTH}" height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" '
        f'data-segments="{len(records)}" data-drawn="{drawn}" '
        f'data-collapsed="{collapsed_total}">',
        f'<title id="{escape(title_id)}">{escape(ladder.title)}</title>',
        f'<desc id="{escape(title_id)}-desc">{escape(description)}</desc>',
        f"<style>{_STYLE}</style>",
    ]
    for x, name in ((X_US, us_label), (X_PEER, peer_label)):
        first, _, rest = name.partition(" ")  # "prober" over "198.18.0.1:40001"
        head.append(
            f'<rect class="head-box" x="{x - 110}" y="8" width="220" height="{HEAD_H - 16}" '
            f'rx="4"/>'
            + _text(x, 26 if rest else 34, first, "head", "middle")
            + (_text(x, 43, rest, "head-sub", "middle") if rest else "")
        )
    lines = []
    for x in (X_US, X_PEER):
        lines.append(f'<line class="life" x1="{x}" y1="{HEAD_H - 8}" x2="{x}" '
                     f'y2="{HEAD_H + 14}"/>')
        lines.extend(
            f'<line class="life" x1="{x}" y1="{top:.1f}" x2="{x}" y2="{bottom:.1f}"/>'
            for top, bottom in life_solid
        )
        lines.extend(
            f'<line class="life-gap" x1="{x}" y1="{top:.1f}" x2="{x}" y2="{bottom:.1f}"/>'
            for top, bottom in life_gap
        )
    tail = [
        _text(X_NUMBER, height - 24, footer, "foot"),
        _text(X_NUMBER, height - 10, footer_2, "foot"),
        "</svg>",
    ]
    return "".join(head + lines + body + tail)


def _ranges(indices: Sequence[int]) -> str:
    """Sorted indices as "#3-#9, #12" with an en dash (runs of consecutive numbers
    joined)."""
    spans: list[tuple[int, int]] = []
    for index in indices:
        if spans and index == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], index)
        else:
            spans.append((index, index))
    return ", ".join(f"#{a + 1}" if a == b else f"#{a + 1}{EN_DASH}#{b + 1}"
                     for a, b in spans)
