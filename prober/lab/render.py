"""Text and JSON for `prober lab status` (and what `up` and `down` print)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from .builtin import LabEntry, LabStatus

DOWN = "lab is down"
_COLUMNS = ("ADDRESS", "PORT", "PEER", "BEHAVIOUR", "SHOW IT WITH")


def status_text(status: LabStatus | None) -> str:
    """The status table, or "lab is down"."""
    if status is None:
        return DOWN
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.created_at))
    lines = [f"lab is up: {status.prefix} since {since}; {status.options.summary()}"]
    if not status.complete:
        lines[0] = (f"lab is half-built: {status.prefix} since {since} (a `prober lab up` is "
                    "running, or was interrupted: `sudo prober lab down` removes it)")
    lines += table(status.entries)
    if status.problems:
        lines.append("lab is broken: " + "; ".join(status.problems)
                     + " (`sudo prober lab down`, then `sudo prober lab up`)")
    return "\n".join(lines)


def table(entries: Sequence[LabEntry]) -> list[str]:
    rows = [_COLUMNS]
    previous: LabEntry | None = None
    for entry in entries:
        # The IPv6 row of a port says the same as the IPv4 row above it: show it once.
        same = (
            previous is not None
            and entry.family == 6
            and (previous.peer, previous.port, previous.behaviour)
            == (entry.peer, entry.port, entry.behaviour)
        )
        address = f"[{entry.address}]" if entry.family == 6 and "/" not in entry.address \
            else entry.address
        rows.append((
            address,
            str(entry.port),
            "" if same else entry.peer,
            "  (same, over IPv6)" if same else entry.behaviour,
            entry.command,
        ))
        previous = entry
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def status_json(status: LabStatus | None) -> str:
    return json.dumps({"up": False} if status is None else status.to_dict())
