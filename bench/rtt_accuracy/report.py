"""The report: what each figure compares, the figures over all runs with their spread, and
the counts behind them (text table or JSON)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from .results import PER_END, RTT_ERRORS, Figure, Spread, ToolResult

GOAL_MEDIAN_US = 5.0
GOAL_P99_US = 30.0

# Why a tool without instants has no per-end rows.
NO_INSTANTS = {
    "hping3": "prints RTTs only (rtt=X.Y ms): no instants to compare",
    "nping": "prints seconds since its own start (4 decimals), not instants on tcpdump's clock",
}

_COLUMNS = (("median", "median_us", True), ("p1", "p1_us", True), ("p99", "p99_us", True),
            ("median |x|", "median_abs_us", False), ("p99 |x|", "p99_abs_us", False))


def by_tool(results: Sequence[ToolResult]) -> dict[str, list[ToolResult]]:
    grouped: dict[str, list[ToolResult]] = {}
    for result in results:
        grouped.setdefault(result.tool, []).append(result)
    return grouped


def _us(value: float, signed: bool) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _cell(spread: Spread, statistic: str, signed: bool) -> str:
    pooled = _us(getattr(spread.pooled, statistic), signed)
    if len(spread.per_run) < 2 or pooled == "-":
        return pooled
    low, high = spread.range_of(statistic)
    return f"{pooled} [{_us(low, signed)}, {_us(high, signed)}]"


def _table(rows: list[tuple[str, ...]], left: int = 2, last_left: bool = False) -> list[str]:
    """Columns padded to their widest cell; the first `left` columns (and the last, with
    `last_left`) left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    last = len(widths) - 1
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) if i < left or (last_left and i == last)
                 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def goal_verdict(results: Sequence[ToolResult]) -> str:
    grouped = by_tool(results)
    prober = grouped.get("prober")
    if not prober or not any(r.pairing.matched for r in prober):
        return "not evaluated (no prober results)"
    peer = Spread.of(prober, Figure.RTT_ERROR_PEER_SIDE).pooled
    parts = [
        f"|RTT error| against A: median {peer.median_abs_us:.1f} µs "
        f"{'≤' if peer.median_abs_us <= GOAL_MEDIAN_US else '>'} {GOAL_MEDIAN_US:g}, "
        f"p99 {peer.p99_abs_us:.1f} µs {'≤' if peer.p99_abs_us <= GOAL_P99_US else '>'} "
        f"{GOAL_P99_US:g}"
    ]
    met = peer.median_abs_us <= GOAL_MEDIAN_US and peer.p99_abs_us <= GOAL_P99_US
    for figure in PER_END:
        end = Spread.of(prober, figure).pooled
        ok = end.p99_abs_us <= GOAL_P99_US
        met = met and ok
        parts.append(f"{figure.value} end p99 |x| {end.p99_abs_us:.1f} µs "
                     f"{'≤' if ok else '>'} {GOAL_P99_US:g}")
    for tool, others in grouped.items():
        if tool == "prober" or not any(r.pairing.matched for r in others):
            continue
        other = Spread.of(others, Figure.RTT_ERROR_PEER_SIDE).pooled
        better = peer.median_abs_us < other.median_abs_us and peer.p99_abs_us < other.p99_abs_us
        met = met and better
        parts.append(f"{'below' if better else 'NOT below'} {tool}'s")
    return ("met: " if met else "missed: ") + "; ".join(parts)


def render_text(info: dict[str, Any], params: dict[str, Any], runs: list[dict[str, Any]],
                results: Sequence[ToolResult]) -> str:
    grouped = by_tool(results)
    own, peer, namespace = params["device"], params["peer_device"], params["namespace"]
    capture = ("--immediate-mode -U" if params["capture_mode"] == "immediate"
               else "buffered (no --immediate-mode)")
    count = len(runs)
    lines = [
        f"rtt_accuracy  {info['date']}  {info['command']}",
        f"machine  kernel {info['kernel']} ({info['kernel_version']}); {info['cpu']} x "
        f"{info['cpus']} CPUs; Python {info['python']}",
        "tools    " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"lab      {params['target']}:80 (prober.lab.server) in namespace {namespace}, over "
        f"the veth {own} == {peer}: one kernel, no wire;",
        f"         the tools run in the root namespace, from {params['local']}; "
        f"scapy socket: {params['scapy_socket']}",
        f"runs     {count} x (each tool in turn: {params['count']} SYNs at "
        f"{params['rate']:g}/s); tcpdump --time-stamp-precision=nano {capture} on both",
        "         ends of the veth in every run",
        "load     /proc/loadavg (1, 5, 15 min), before -> after each run:",
    ]
    lines += [f"           run {r['run']} ({r['started']}): {r['load_before']} -> "
              f"{r['load_after']}" for r in runs]
    spread_note = (f", then [lowest, highest] of the {count} per-run values" if count > 1
                   else "")
    lines += [
        "",
        f"Figures in µs. Each cell: all runs' probes pooled{spread_note}.",
        "p1, p99: nearest-rank percentiles of the signed values; |x|: of the absolute values.",
        "",
        "PER-END AGREEMENT: the tool's own instant - tcpdump's stamp of the same packet",
        f"  send     tool's send instant - the SYN's stamp where it arrives on the peer's end "
        f"({peer} in {namespace})",
        f"  receive  tool's receive instant - the SYN/ACK's stamp where it arrives on our end "
        f"({own})",
        "  negative: the tool's instant is the earlier one",
        "",
    ]
    rows: list[tuple[str, ...]] = [("tool", "end", "probes", *(c[0] for c in _COLUMNS))]
    without = []
    for tool, tool_results in grouped.items():
        if not any(r.has_instants for r in tool_results):
            without.append(f"  {tool}: no per-end figures: "
                           f"{NO_INSTANTS.get(tool, 'exposes no instants')}")
            continue
        for figure in PER_END:
            spread = Spread.of(tool_results, figure)
            rows.append((tool, figure.value, str(spread.pooled.count),
                         *(_cell(spread, key, signed) for _, key, signed in _COLUMNS)))
    lines += (_table(rows) if len(rows) > 1 else []) + without
    lines += [
        "",
        "RTT ERROR: the tool's reported RTT - the RTT between tcpdump's stamps of the same SYN "
        "and SYN/ACK",
        f"  A  SYN stamped where it arrives on the peer's end ({peer}), SYN/ACK where it arrives "
        f"on ours ({own})",
        f"  B  both stamped by tcpdump on our end ({own}), as a capture on the prober's own host "
        "shows them",
        "",
    ]
    rows = [("tool", "ref", "matched", *(c[0] for c in _COLUMNS))]
    for tool, tool_results in grouped.items():
        answered = sum(len(r.wire.answered) for r in tool_results)
        for figure, name in zip(RTT_ERRORS, ("A", "B"), strict=True):
            spread = Spread.of(tool_results, figure)
            rows.append((tool, name, f"{spread.pooled.count}/{answered}",
                         *(_cell(spread, key, signed) for _, key, signed in _COLUMNS)))
    lines += _table(rows)
    lines += ["", "WHY A AND B DIFFER", *_why(grouped)]
    lines += ["", "COUNTS PER RUN (SYNs from our end's capture; RTT A/B: median capture RTT, "
              "µs)"]
    rows = [("run", "tool", "sent", "answered", "not at peer", "reported", "matched",
             "mis-paired", "missed", "rate/s", "RTT A", "RTT B", "resolution")]
    for r in results:
        rate = r.rate
        rows.append((
            str(r.run), r.tool, str(r.sent), str(len(r.wire.answered)), str(r.not_at_peer),
            str(len(r.pairing.matched) + r.pairing.mispaired), str(len(r.pairing.matched)),
            str(r.pairing.mispaired), str(r.pairing.missed),
            "-" if rate is None else f"{rate:.0f}",
            _us(r.capture_rtt_peer_side.median_us, False),
            _us(r.capture_rtt_own_side.median_us, False), r.resolution,
        ))
    lines += _table(rows, last_left=True)
    lines += ["  sent/answered: SYNs and answered SYNs in our end's capture; not at peer: of "
              "those, missing from the peer's;",
              "  mis-paired: reports tied to no answered SYN; missed: answered SYNs the tool "
              "reported nothing for"]
    notes = [(r.run, r.tool, note) for r in results for note in r.notes + r.pairing.notes]
    if notes:
        lines += ["", "NOTES"]
        lines += [f"  run {run} {tool}: {note}" for run, tool, note in notes]
    lines += ["", f"goal (prober's |RTT error| against A median ≤ {GOAL_MEDIAN_US:g} µs and "
              f"p99 ≤ {GOAL_P99_US:g} µs and below every other tool's, each end's p99 |x| ≤ "
              f"{GOAL_P99_US:g} µs):", f"  {goal_verdict(results)}"]
    return "\n".join(lines)


def _why(grouped: dict[str, list[ToolResult]]) -> list[str]:
    lines = [
        "  On our end tcpdump stamps an outgoing SYN when the kernel hands copies to the packet "
        "taps",
        "  (dev_queue_xmit_nit), before the driver takes the software TX stamp prober uses "
        "(skb_tx_timestamp",
        "  in veth_xmit), and handing tcpdump its copy takes time. So B's SYN stamp is early, "
        "its RTT long,",
        "  and every tool's error against B is lower than against A by that much. "
        "The SYN/ACK is stamped",
        "  where it arrives in both references.",
    ]
    prober = grouped.get("prober")
    if prober:
        spread = Spread.of(prober, Figure.SEND_OWN_SIDE)
        if spread.pooled.count:
            lines += [
                "  In these runs, prober's TX stamp - tcpdump's stamp of the same outgoing SYN "
                "on our end:",
                f"    median {_cell(spread, 'median_us', True)}, p1 "
                f"{_cell(spread, 'p1_us', True)}, p99 {_cell(spread, 'p99_us', True)} µs",
            ]
    for tool, tool_results in grouped.items():
        if not any(r.has_instants for r in tool_results):
            continue
        send = Spread.of(tool_results, Figure.SEND).pooled
        receive = Spread.of(tool_results, Figure.RECEIVE).pooled
        error = Spread.of(tool_results, Figure.RTT_ERROR_PEER_SIDE).pooled
        same_sign = send.median_us * receive.median_us > 0
        lines += [
            f"  {tool}: its RTT error against A is receive - send: medians "
            f"{_us(receive.median_us, True)} - ({_us(send.median_us, True)}) -> "
            f"{_us(error.median_us, True)} µs;",
            "    " + ("offsets of one sign cancel in it, so it understates each end's "
                      "disagreement: quote the per-end figures" if same_sign
                      else "offsets of opposite signs add up in it"),
        ]
    return lines


def render_json(info: dict[str, Any], params: dict[str, Any], runs: list[dict[str, Any]],
                results: Sequence[ToolResult]) -> str:
    figures = {
        tool: {figure.value: Spread.of(tool_results, figure).to_dict() for figure in Figure}
        for tool, tool_results in by_tool(results).items()
    }
    return json.dumps({
        "system": info,
        "parameters": params,
        "runs": runs,
        "figures_us": figures,
        "results": [r.to_dict() for r in results],
        "goal": goal_verdict(results),
    }, indent=1)
