"""The text report: one row per tool and rate, the best passing rate per tool, ratios to masscan,
the target's counters per run, and the memory table."""

from __future__ import annotations

from collections.abc import Sequence

from .tools import ToolRun

MIB = 1024.0
COUNTER_COLUMNS = (  # (column, counter key): the target's, after - before each run
    ("ovfl", "ListenOverflows"), ("ldrop", "ListenDrops"), ("cookie", "SyncookiesSent"),
    ("qdrop", "TCPReqQFullDrop"), ("retr", "TcpRetransSegs"), ("sndrop", "softnet_dropped"),
)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.3f}"


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def passing(runs: Sequence[ToolRun], tool: str, threshold: float) -> ToolRun | None:
    """The tool's run at the highest rate asked with at least `threshold` of open hosts."""
    good = [run for run in runs if run.tool == tool and (run.open_fraction or 0) >= threshold
            and run.rate_asked is not None]
    return max(good, key=lambda run: (run.rate_asked or 0), default=None)


def reference(runs: Sequence[ToolRun], threshold: float) -> ToolRun | None:
    """masscan's run the ratios are taken to: its best passing one, else its first."""
    return passing(runs, "masscan", threshold) or next(
        (run for run in runs if run.tool == "masscan"), None)


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}"


def cpu_per_probe(run: ToolRun) -> float:
    return run.measured.cpu_s / run.probes


def table(runs: Sequence[ToolRun], threshold: float) -> list[str]:
    base = reference(runs, threshold)
    header = (f"{'tool':8} {'rate asked':>10} {'SYN/s sent':>11} {'own SYN/s':>9} {'probes':>9} "
              f"{'open found':>11} "
              f"{'open %':>8} {'closed %':>8} {'CPU s':>6} {'µs/probe':>8} {'RSS MiB':>7} "
              f"{'tree MiB':>8} {'wall s':>6} {'SYN/s÷m':>7} {'CPU/pr÷m':>8} "
              + " ".join(f"{name:>6}" for name, _ in COUNTER_COLUMNS))
    lines = [header]
    for run in runs:
        m = run.measured
        lines.append(
            f"{run.tool:8} {number(run.rate_asked):>10} {number(run.syn_rate):>11} "
            f"{number(run.reported.get('own_rate')):>9} "
            f"{run.probes:>9,} {run.open_found:>11,} {percent(run.open_fraction):>8} "
            f"{percent(run.closed_fraction):>8} {m.cpu_s:>6.2f} {cpu_per_probe(run) * 1e6:>8.2f} "
            f"{m.maxrss_kib / MIB:>7.1f} {m.tree_rss_peak_kib / MIB:>8.1f} {m.wall_s:>6.1f} "
            f"{ratio(run.syn_rate, base.syn_rate if base else None):>7} "
            f"{ratio(cpu_per_probe(run), cpu_per_probe(base) if base else None):>8} "
            + " ".join(f"{run.counters.get(key, 0):>6}" for _, key in COUNTER_COLUMNS))
    return lines


def notes(runs: Sequence[ToolRun]) -> list[str]:
    lines = []
    for run in runs:
        details = []
        if run.reported:
            details.append("reported " + ", ".join(f"{k}={v}" for k, v in run.reported.items()))
        if run.repeats or run.outside:
            details.append(f"{run.repeats} repeated, {run.outside} outside the set")
        if run.measured.killed:
            details.append("killed")
        elif run.measured.returncode not in (0, None):
            details.append(f"exit {run.measured.returncode}")
        if run.measured.nudged:
            details.append("nudged")
        details.append(f"{run.measured.syns_seen:,} SYNs to the block seen, window "
                       f"{number(run.measured.send_window_s, 2)} s, link at "
                       f"{run.measured.background_pps:,.0f} SYN/s before it started")
        extra = run.measured.syns_seen - run.probes
        if extra > max(100, run.probes // 100):
            details.append(f"WARNING: {extra:,} SYNs more than its probes: someone else was "
                           "scanning the block too (its SYN/s and found % are suspect)")
        details.extend(run.notes)
        lines.append(f"  {run.tool} @{number(run.rate_asked)}: " + "; ".join(details))
    return lines


def summary(runs: Sequence[ToolRun], threshold: float) -> list[str]:
    lines = [f"highest rate asked with >= {threshold * 100:g} % of the open hosts found:"]
    tools = list(dict.fromkeys(run.tool for run in runs))
    best = {tool: passing(runs, tool, threshold) for tool in tools}
    for tool in tools:
        run = best[tool]
        if run is None:
            lines.append(f"  {tool:8} none of its runs")
        else:
            lines.append(f"  {tool:8} {number(run.rate_asked)} asked, {number(run.syn_rate)} SYN/s "
                         f"sent, {percent(run.open_fraction)} % open found, "
                         f"{run.measured.cpu_s:.2f} s CPU, "
                         f"{run.measured.maxrss_kib / MIB:.1f} MiB peak RSS")
    ours, masscan, zmap = best.get("prober"), best.get("masscan"), best.get("zmap")
    if "prober" in tools:
        def beats(other: ToolRun | None) -> str:
            if ours is None or ours.syn_rate is None:
                return "not met (no passing prober run)"
            if other is None or other.syn_rate is None:
                return "not measured in this run"
            verdict = "met" if ours.syn_rate >= other.syn_rate else "not met"
            return f"{verdict} ({ours.syn_rate:,.0f} vs {other.syn_rate:,.0f} SYN/s sent)"
        lines.append(f"goal: prober's best >= masscan's: {beats(masscan)}")
        lines.append(f"stretch: prober's best > zmap's: {beats(zmap)}")
    return lines


def memory_table(runs: Sequence[ToolRun]) -> list[str]:
    lines = [f"{'probes':>10} {'shard':>7} {'rate':>8} {'SYN/s sent':>11} {'open+closed %':>13} "
             f"{'RSS MiB':>8} {'tree MiB':>8} {'CPU s':>6} {'wall s':>6}"]
    for run in runs:
        found = run.open_found + (run.closed_found or 0)
        shard, planned = run.shard or "-", run.probes
        lines.append(
            f"{planned:>10,} {shard:>7} {number(run.rate_asked):>8} {number(run.syn_rate):>11} "
            f"{percent(found / planned if planned else None):>13} "
            f"{run.measured.maxrss_kib / MIB:>8.1f} {run.measured.tree_rss_peak_kib / MIB:>8.1f} "
            f"{run.measured.cpu_s:>6.2f} {run.measured.wall_s:>6.1f}")
    for run in runs:
        each = ", ".join(f"{name.split(' ', 1)[1]} {kib / MIB:.1f}" for name, kib in
                         sorted(run.measured.hwm_by_process.items(), key=lambda i: -i[1]))
        lines.append(f"  {run.probes:,} probes, VmHWM MiB per process: {each}")
    if len(runs) >= 2:
        small, large = runs[0], runs[-1]
        lines.append(f"peak RSS at {large.probes:,} probes / at {small.probes:,}: "
                     f"{ratio(large.measured.maxrss_kib, small.measured.maxrss_kib)} "
                     f"(largest process), "
                     f"{ratio(large.measured.tree_rss_peak_kib, small.measured.tree_rss_peak_kib)}"
                     " (tree)")
    return lines
