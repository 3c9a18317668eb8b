"""Human output of `prober profile`: one screen, one line per property (its value, the segments
of which ladder it rests on, what the value usually means), then the stack match.

The full evidence of each property is in --json and --html; here the segments it rests on
stand for it, numbered from 1 as the --html ladders number their arrows.
"""

from __future__ import annotations

from collections.abc import Sequence

from prober.core.profile import Basis, ProfileResult, Property, SegmentRef

_COLUMNS = ("PROPERTY", "VALUE", "EVIDENCE", "MEANING")
# The why of an unknown value, cut to fit beside the others (the whole of it is in --json).
WHY_WIDTH = 70


def numbers(indices: Sequence[int]) -> str:
    """0-based indices as 1-based numbers with runs joined: (0, 1, 2, 5) -> "1-3,6"."""
    parts: list[str] = []
    run: list[int] = []
    for number in sorted({i + 1 for i in indices}):
        if run and number == run[-1] + 1:
            run.append(number)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [number]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def evidence_text(refs: Sequence[SegmentRef]) -> str:
    return "; ".join(f"{ref.ladder.value} {numbers(ref.indices)}" if ref.indices
                     else ref.ladder.value for ref in refs)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _row(prop: Property) -> tuple[str, str, str, str]:
    value = prop.display
    if prop.basis is Basis.INFERRED:
        value += " (inferred)"
    if prop.basis in (Basis.UNKNOWN, Basis.NOT_MEASURED):
        # The why is what a reader needs of an unknown value.
        about = _cut(prop.evidence, WHY_WIDTH)
    else:
        about = prop.meaning or ""
    return (prop.name.value, value, evidence_text(prop.segments) or "-", about)


def profile_report(result: ProfileResult) -> list[str]:
    """The report's lines."""
    run = "quick run" if result.quick else "full run"
    if result.interrupted:
        run += ", interrupted: what was seen so far"
    host = f"[{result.host}]" if ":" in result.host else result.host
    lines = [f"PROFILE {host}:{result.port} ({result.target} from "
             f"{result.source}), {run}, {result.elapsed_s:.1f} s"]
    rows = [_COLUMNS, *(_row(prop) for prop in result.properties)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        lines.append("  ".join([*cells, row[3]]).rstrip())
    match = result.match
    lines.append("")
    if match.stack is not None:
        lines.append(f"stack: matches {match.stack}'s defaults ({len(match.agree)} properties "
                     "agree, none disagrees)")
    else:
        lines.append("stack: unknown")
    lines.append(f"  {match.explanation}")
    measured = sum(p.basis is Basis.MEASURED for p in result.properties)
    inferred = sum(p.basis is Basis.INFERRED for p in result.properties)
    unknown = sum(p.basis is Basis.UNKNOWN for p in result.properties)
    skipped = sum(p.basis is Basis.NOT_MEASURED for p in result.properties)
    lines.append(f"{measured} measured, {inferred} inferred, {unknown} unknown, {skipped} not "
                 "measured. EVIDENCE names segments of a ladder (1 = its first); --html draws "
                 "the ladders, --json has each property's evidence and every segment.")
    lines += [f"note: {note}" for note in result.notes]
    return lines
