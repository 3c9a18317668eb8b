"""Human-readable lines, one per probe and a summary, in the spirit of ping and hping3."""

from __future__ import annotations

from prober.core.syn import Reason, SynProbeResult, SynRun
from prober.output.strays import icmp_text, invalid_lines, kinds_text, notice_lines


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def syn_header(host: str, target: str, port: int, source: str | None = None) -> str:
    shown = target if host == target else f"{host} ({target})"
    return f"SYN {shown} port {port}"


def syn_probe_line(result: SynProbeResult) -> str:
    """One line per probe: what came back, its TCP fields and options, and the RTT."""
    head = (
        f"probe={result.probe} {_endpoint(result.target, result.port)} sport={result.source_port}"
    )
    reason = result.reason
    rtt = "" if result.rtt is None else f" rtt={_ms(result.rtt.us)} ms"
    extras = ""
    if result.duplicates:
        extras += f" (+{result.duplicates} dup)"
    if result.late:
        extras += f" (+{result.late} late)"
    if result.invalid:
        extras += f" (+{result.invalid} invalid: {kinds_text(result.invalid_by_kind)})"
    if result.notices:
        plural = "s, the first" if result.notices > 1 else ":"
        extras += f" (+{result.notices} ICMP notice{plural} {icmp_text(result.icmp_notices[0])})"
    if result.tcp is not None:
        tcp = result.tcp
        options = []
        if tcp.mss is not None:
            options.append(f"mss={tcp.mss}")
        if tcp.window_scale is not None:
            options.append(f"wscale={tcp.window_scale}")
        if tcp.sack_permitted:
            options.append("sackOK")
        if tcp.tsval is not None:
            options.append(f"ts={tcp.tsval}/{tcp.tsecr}")
        option_text = f" opts={tcp.options or '-'}" + "".join(f" {o}" for o in options)
        return (
            f"{head} {result.state.value} flags={tcp.flags} seq={tcp.seq} ack={tcp.ack}"
            f" ttl={tcp.ttl} win={tcp.window}{option_text}{rtt}{extras}"
        )
    if result.icmp is not None:
        icmp = result.icmp
        kind = "ICMPv6" if icmp.version == 6 else "ICMP"
        return (
            f"{head} {result.state.value} {reason.value} {kind} type={icmp.type} code={icmp.code}"
            f" from={icmp.source} ttl={icmp.ttl}{rtt}{extras}"
        )
    if reason is Reason.SEND_FAILED:
        return f"{head} not sent: {result.error}"
    if reason is Reason.INTERRUPTED:
        return f"{head} interrupted before an answer{extras}"
    return f"{head} no answer{extras}"


def syn_summary(run: SynRun) -> str:
    lines = [f"--- {_endpoint(run.target, run.port)} prober syn statistics ---"]
    loss = 100.0 * run.lost / run.sent if run.sent else 0.0
    counts = f"{run.sent} sent, {run.answered} answered, {run.lost} lost ({loss:.1f}% loss)"
    for label, value in (
        ("not sent", run.unsent),
        ("interrupted", run.interrupted),
        ("invalid", run.invalid),
        ("duplicate", run.duplicates),
        ("late", run.late),
        ("ICMP notices", run.notices),
        ("dropped by the kernel", run.kernel_drops),
    ):
        if value:
            counts += f", {value} {label}"
    lines.append(counts)
    lines += invalid_lines(run.invalid_by_kind)
    lines += notice_lines(run.notices, [n for p in run.probes for n in p.icmp_notices])
    reason = "" if run.reason is None else f" ({run.reason.value}"
    best = run.best
    if best is not None and best.icmp is not None:
        reason += f" type={best.icmp.type} code={best.icmp.code} from {best.icmp.source}"
    if reason:
        reason += ")"
    lines.append(f"port {run.port}: {run.state.value}{reason}")
    rtt = run.rtt
    if rtt is not None:
        clock = "mixed clocks" if rtt.clock is None else f"{rtt.clock.value} timestamps"
        lines.append(
            f"rtt min/avg/max/mdev = {_ms(rtt.min_us)}/{_ms(rtt.avg_us)}/{_ms(rtt.max_us)}"
            f"/{_ms(rtt.mdev_us)} ms ({clock})"
        )
    return "\n".join(lines)
