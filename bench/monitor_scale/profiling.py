"""Where the monitor child's time went over its window: cProfile's own time per part of
prober, per probe, and the functions with the most own time."""

from __future__ import annotations

import pstats
from pathlib import Path

GROUPS = (  # (substring of "file:function", group), first match wins
    ("sendmsg", "kernel: sendmsg (the SYN; on a veth the peer's stack runs in this call)"),
    ("sendto", "kernel: sendmsg (the SYN; on a veth the peer's stack runs in this call)"),
    ("recvmsg", "kernel: recvmsg (answers and TX stamps)"),
    ("recv_into", "kernel: recvmsg (answers and TX stamps)"),
    ("prober/monitor/", "prober/monitor (schedule, launch, samples)"),
    ("prober/core/monitor_stats", "prober/core/monitor_stats (rolling statistics)"),
    ("prober/engine", "prober/engine (launch, dispatch, timer, TX stamps)"),
    ("prober/core/syn.py", "prober/core/syn.py (probe, classify, result)"),
    ("prober/core/parse.py", "prober/core/parse.py and wire.py"),
    ("prober/core/wire.py", "prober/core/parse.py and wire.py"),
    ("prober/core", "prober/core (templates, ISN, timing)"),
    ("prober/api.py", "prober/api.py"),
    ("monitor_scale", "the bench's own counting (child.py, stats.py)"),
    ("asyncio", "event loop"),
    ("uvloop", "event loop"),
    ("heapq", "heapq (the schedule, the timer)"),
    ("<string>:__init__", "dataclass __init__s"),
)


def profile_lines(path: Path, probes: int, top: int = 12) -> list[str]:
    stats = pstats.Stats(str(path))
    entries = stats.stats.items()  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    functions: list[tuple[float, int, str]] = []
    for (filename, line, name), (_cc, calls, own, _cum, _callers) in entries:
        label = f"{filename}:{name}"
        group = next((g for key, g in GROUPS if key in label), "other (built-ins)")
        totals[group] = totals.get(group, 0.0) + own
        short = "/".join(filename.split("/")[-2:])
        functions.append((own, calls, f"{short}:{line}({name})"))
    whole = sum(totals.values()) or 1.0
    per = max(1, probes)
    lines = [f"where the time went (cProfile over the window, {probes:,} probes; own time; "
             "profiling inflates Python calls):"]
    for group, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        lines.append(f"  {seconds:7.3f} s {seconds / whole:6.1%} "
                     f"{seconds / per * 1e6:7.1f} µs/probe  {group}")
    lines.append(f"  top {top} functions by own time:")
    for own, calls, label in sorted(functions, reverse=True)[:top]:
        lines.append(f"  {own:7.3f} s {own / per * 1e6:7.1f} µs/probe {calls:>9,} calls  "
                     f"{label}")
    return lines
