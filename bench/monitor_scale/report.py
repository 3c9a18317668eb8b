"""The figures derived from the runs' records, and the text report. Pure (dicts in, dicts and
lines out), so tests/unit/test_bench_monitor_scale.py checks the math alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ANSWERED_REASONS = ("syn-ack", "rst")  # the peer's TCP answered (open or closed)
RATE_HOLDS = 0.99  # samples/s at least this share of N: the loop kept up
MIB = 1024.0
MEMORY_FIRST_AFTER_S = 60.0  # the memory run's first RSS figure: a minute into the window
# Prober.monitor's default window: each target's rolling statistics keep this many rounds, so
# the RSS rises until WINDOW_ROUNDS intervals have passed; growth is also given from there.
WINDOW_ROUNDS = 100


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def scale_figures(result: dict[str, Any]) -> dict[str, Any]:
    """One monitor run's row: rates, shares, lateness, CPU per probe, memory, counters."""
    count = int(result.get("count") or result.get("targets") or 0)
    tally = result.get("tally") or {}
    samples = int(tally.get("samples", 0))
    window = float(result.get("window_s") or 0.0)
    outside = result.get("outside") or {}
    wire_window = outside.get("window_s")
    wire_syns = outside.get("window_syns")
    reasons: dict[str, int] = tally.get("reasons", {})
    states: dict[str, int] = tally.get("states", {})
    clocks: dict[str, int] = tally.get("clocks", {})
    answered = sum(reasons.get(reason, 0) for reason in ANSWERED_REASONS)
    # Probes: the SYNs the tap saw between the child's two marks (what really left), else
    # the samples (each is one probe's outcome).
    probes = int(wire_syns) if wire_syns else samples
    cpu = float(result.get("cpu_user_s", 0.0)) + float(result.get("cpu_sys_s", 0.0))
    late = tally.get("late_s", {})
    engine = result.get("engine") or {}
    return {
        "count": count,
        "error": result.get("error"),
        "window_s": window,
        "samples": samples,
        "samples_per_s": samples / window if window else None,
        "probes": probes,
        "sent_per_s": (wire_syns / wire_window) if wire_syns and wire_window else None,
        "open_share": _share(states.get("open", 0), samples),
        "no_response": reasons.get("no-response", 0),
        "not_answered": samples - answered,
        "kernel_share": _share(clocks.get("kernel", 0), answered),
        "late_p50_s": late.get("p50"),
        "late_p99_s": late.get("p99"),
        "late_max_s": late.get("max"),
        "late_over": int(tally.get("late_over", 0)),
        "cpu_s": cpu,
        "cpu_share": cpu / window if window else None,
        "cpu_us_per_probe": cpu / probes * 1e6 if probes else None,
        "hwm_kib": int(result.get("hwm_kib") or outside.get("hwm_kib") or 0),
        "kernel_drops": engine.get("kernel_drops"),
        "invalid": engine.get("invalid"),
        "unrouted": engine.get("unrouted"),
        "dropped": result.get("dropped"),
        "skipped": result.get("skipped"),
        "rtt_p50_s": (tally.get("rtt_s") or {}).get("p50"),
    }


def holds(row: dict[str, Any]) -> bool:
    """Every probe answered, none late by more than 10 % of the interval, every RTT on the
    kernel clock, no round skipped, and the samples came at (nearly) N per second."""
    rate = row["samples_per_s"]
    return bool(
        row["error"] is None and row["samples"] and row["not_answered"] == 0
        and row["late_over"] == 0 and row["kernel_share"] == 1.0
        and rate is not None and rate >= RATE_HOLDS * row["count"]
        and not row.get("skipped")
    )


def highest_holding(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    good = [row for row in rows if holds(row)]
    return max(good, key=lambda row: row["count"], default=None)


def memory_figures(result: dict[str, Any], interval: float = 1.0) -> dict[str, Any]:
    """RSS over the memory run's window: the first sample a minute in, the last, the growth
    between them; and the growth from the first sample once every target's statistics
    window is full (WINDOW_ROUNDS intervals in)."""
    outside = result.get("outside") or {}
    samples = [(float(t), int(kib)) for t, kib in outside.get("rss_samples", [])]
    begin = outside.get("begin_s")
    end = outside.get("end_s")
    if begin is None:
        begin = samples[0][0] if samples else 0.0

    def from_(offset: float) -> list[tuple[float, int]]:
        return [(t, kib) for t, kib in samples
                if t >= begin + offset and (end is None or t <= end)]

    def growth(points: list[tuple[float, int]]) -> float | None:
        if not points or not points[0][1]:
            return None
        return (points[-1][1] - points[0][1]) / points[0][1]

    inside = from_(MEMORY_FIRST_AFTER_S)
    full = from_(WINDOW_ROUNDS * interval)
    first = inside[0] if inside else None
    last = inside[-1] if inside else None
    return {"count": result.get("count"), "samples": len(inside),
            "first_kib": first[1] if first else None, "first_at_s": first[0] if first else None,
            "last_kib": last[1] if last else None, "last_at_s": last[0] if last else None,
            "growth": growth(inside), "max_kib": max((kib for _, kib in inside), default=None),
            "full_window_kib": full[0][1] if full else None,
            "full_window_at_s": full[0][0] - begin if full else None,
            "growth_full_window": growth(full), "hwm_kib": result.get("hwm_kib")}


def peer_figures(peer: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A peer's row: CPU per probe and its ratio to prober's at the same N (else the
    nearest N measured)."""
    probes = peer.get("syns") or peer.get("probes") or 0
    cpu = float(peer.get("cpu_s") or 0.0)
    per_probe = cpu / probes * 1e6 if probes else None
    window = float(peer.get("window_s") or 0.0)
    measured = [row for row in rows if row.get("cpu_us_per_probe")]
    base = min(measured, key=lambda row: abs(row["count"] - peer["count"]), default=None)
    ratio = (per_probe / base["cpu_us_per_probe"]) if per_probe and base else None
    return {"tool": peer["tool"], "count": peer["count"], "probes": probes,
            "answered": peer.get("answered"), "cpu_s": cpu, "cpu_us_per_probe": per_probe,
            "per_s": probes / window if window else None, "hwm_kib": peer.get("hwm_kib"),
            "ratio_to_prober": ratio, "prober_count": base["count"] if base else None,
            "returncode": peer.get("returncode")}


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.1f}"


def scale_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [f"{'targets':>8} {'samples/s':>9} {'sent/s':>8} {'open %':>7} {'no-resp':>7} "
             f"{'other':>5} {'kernel %':>8} {'late p50':>8} {'p99 ms':>7} {'max ms':>7} "
             f"{'>10 %':>6} {'CPU %':>5} {'µs/probe':>8} {'RSS MiB':>7} {'kdrops':>6} "
             f"{'invalid':>7} {'unrouted':>8} {'dropped':>7} {'skipped':>7}  holds"]
    for row in rows:
        if row["error"]:
            lines.append(f"{row['count']:>8,} error: {row['error']}")
            continue
        open_share, kernel = row["open_share"], row["kernel_share"]
        lines.append(
            f"{row['count']:>8,} {_num(row['samples_per_s'], ',.0f'):>9} "
            f"{_num(row['sent_per_s'], ',.0f'):>8} "
            f"{_num(None if open_share is None else open_share * 100, '.2f'):>7} "
            f"{row['no_response']:>7,} {row['not_answered'] - row['no_response']:>5,} "
            f"{_num(None if kernel is None else kernel * 100, '.2f'):>8} "
            f"{_ms(row['late_p50_s']):>8} {_ms(row['late_p99_s']):>7} "
            f"{_ms(row['late_max_s']):>7} {row['late_over']:>6,} "
            f"{_num(None if row['cpu_share'] is None else row['cpu_share'] * 100, '.0f'):>5} "
            f"{_num(row['cpu_us_per_probe'], '.1f'):>8} {row['hwm_kib'] / MIB:>7.1f} "
            f"{_num(row['kernel_drops'], ',d'):>6} {_num(row['invalid'], ',d'):>7} "
            f"{_num(row['unrouted'], ',d'):>8} {_num(row['dropped'], ',d'):>7} "
            f"{_num(row.get('skipped'), ',d'):>7}  "
            f"{'yes' if holds(row) else 'no'}")
    best = highest_holding(rows)
    lines.append("highest N that holds (every probe answered, none late > 10 % of the interval, "
                 "all RTTs kernel, no round skipped, samples/s >= 99 % of N): "
                 + ("none of the runs" if best is None else
                    f"{best['count']:,} targets, {best['cpu_us_per_probe']:.1f} µs CPU per "
                    f"probe, {best['hwm_kib'] / MIB:.1f} MiB peak RSS"))
    return lines


def memory_lines(figures: dict[str, Any], minutes: float) -> list[str]:
    def mib(kib: int | None) -> str:
        return "-" if kib is None else f"{kib / MIB:.1f} MiB"

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:+.2f} %"

    growth, full = figures["growth"], figures["growth_full_window"]
    at = figures["full_window_at_s"]
    return [f"memory: {figures['count']:,} targets at 1 s for {minutes:g} min: RSS "
            f"{mib(figures['first_kib'])} a minute in, {mib(figures['last_kib'])} at the end "
            f"({figures['samples']} samples, highest {mib(figures['max_kib'])}, VmHWM "
            f"{mib(figures['hwm_kib'])}): growth {percent(growth)} (goal < 5 %: "
            + ("met" if growth is not None and growth < 0.05 else "not met") + ")",
            f"  from {mib(figures['full_window_kib'])} at "
            + ("-" if at is None else f"{at:.0f} s")
            + f", once every target's statistics window ({WINDOW_ROUNDS} rounds) is full: "
            f"{percent(full)}"]


def peer_table(peers: Sequence[dict[str, Any]]) -> list[str]:
    lines = [f"{'tool':9} {'N':>7} {'probes':>8} {'answered':>8} {'per s':>8} {'CPU s':>7} "
             f"{'µs/probe':>8} {'RSS MiB':>7} {'÷ prober':>8} {'(at N)':>7}"]
    for peer in peers:
        lines.append(
            f"{peer['tool']:9} {peer['count']:>7,} {peer['probes']:>8,} "
            f"{_num(peer['answered'], ',d'):>8} {_num(peer['per_s'], ',.0f'):>8} "
            f"{peer['cpu_s']:>7.2f} {_num(peer['cpu_us_per_probe'], '.1f'):>8} "
            f"{_num(None if peer['hwm_kib'] is None else peer['hwm_kib'] / MIB, '.1f'):>7} "
            f"{_num(peer['ratio_to_prober'], '.2f'):>8} "
            f"{_num(peer['prober_count'], ',d'):>7}")
    return lines
