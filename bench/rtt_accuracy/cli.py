"""Options, the run over every tool, and the report (table or JSON)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from prober.lab.commands import find_tool

from . import tools as tl
from .lab import TARGET_PORT, Target, capture, lab_target, run_bounded
from .stats import Summary
from .wire import WireProbe, WireRun, match_handshakes, read_pcap, splice

MAX_COUNT = 50_000
MAX_RATE = 1000.0
GOAL_MEDIAN_US = 5.0
GOAL_P99_US = 30.0


@dataclass
class ToolResult:
    tool: str
    command: list[str]
    resolution: str
    returncode: int | None
    seconds: float
    timed_out: bool
    claimed_sent: int | None
    wire: WireRun
    pairing: tl.Pairing
    capture_dropped: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.wire.probes)

    @property
    def errors_us(self) -> list[float]:
        return [abs(self._signed(report, probe)) for report, probe in self.pairing.matched]

    @property
    def signed_us(self) -> list[float]:
        return [self._signed(report, probe) for report, probe in self.pairing.matched]

    @staticmethod
    def _signed(report: tl.Report, probe: WireProbe) -> float:
        assert probe.rtt_ns is not None  # only answered probes are matched
        return report.rtt_us - probe.rtt_ns / 1000

    @property
    def error(self) -> Summary:
        return Summary.of(self.errors_us)

    @property
    def bias_us(self) -> float:
        return Summary.of(self.signed_us).median_us

    @property
    def wire_rtt(self) -> Summary:
        return Summary.of([p.rtt_ns / 1000 for p in self.wire.answered if p.rtt_ns is not None])

    @property
    def wire_rate(self) -> float | None:
        probes = self.wire.probes
        if len(probes) < 2:
            return None
        return (len(probes) - 1) / ((probes[-1].syn_ns - probes[0].syn_ns) / 1e9)

    def breakdown(self) -> dict[str, Summary] | None:
        """Tool instant - wire instant, per end, for tools that expose their instants."""
        sends = [(r.sent_ns - p.syn_ns) / 1000 for r, p in self.pairing.matched
                 if r.sent_ns is not None]
        receives = [(r.received_ns - p.synack_ns) / 1000 for r, p in self.pairing.matched
                    if r.received_ns is not None and p.synack_ns is not None]
        if not sends or not receives:
            return None
        return {
            "send": Summary.of(sends),
            "send_abs": Summary.of([abs(v) for v in sends]),
            "receive": Summary.of(receives),
            "receive_abs": Summary.of([abs(v) for v in receives]),
        }

    def to_dict(self) -> dict[str, Any]:
        breakdown = self.breakdown()
        return {
            "tool": self.tool,
            "command": self.command,
            "resolution": self.resolution,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 3),
            "timed_out": self.timed_out,
            "sent_claimed": self.claimed_sent,
            "sent": self.sent,
            "answered": len(self.wire.answered),
            "wire_rate_per_s": None if self.wire_rate is None else round(self.wire_rate, 2),
            "reported": len(self.pairing.matched) + self.pairing.mispaired,
            "matched": len(self.pairing.matched),
            "mispaired": self.pairing.mispaired,
            "missed": self.pairing.missed,
            "error_us": self.error.to_dict(),
            "bias_us": _json_float(self.bias_us),
            "wire_rtt_us": self.wire_rtt.to_dict(),
            "wire_duplicate_syn_acks": sum(p.duplicates for p in self.wire.probes),
            "wire_unmatched_syn_acks": self.wire.unmatched_syn_acks,
            "capture_dropped": self.capture_dropped,
            "breakdown_us": None if breakdown is None else {
                key: value.to_dict() for key, value in breakdown.items()
            },
            "notes": self.notes + self.pairing.notes,
        }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


# --- the run ---------------------------------------------------------------------------------


def prober_binary() -> str | None:
    beside = Path(sys.executable).parent / "prober"
    return str(beside) if beside.exists() else shutil.which("prober")


def installed_tools() -> dict[str, str]:
    found: dict[str, str] = {}
    prober = prober_binary()
    if prober:
        found["prober"] = prober
    for name in ("hping3", "nping"):
        path = find_tool(name)
        if path:
            found[name] = path
    if importlib.util.find_spec("scapy") is not None:
        found["scapy"] = sys.executable
    return found


def run_tool(name: str, target: Target, args: argparse.Namespace, binaries: dict[str, str],
             workdir: Path) -> ToolResult:
    invocation = tl.invocation(
        name, address=target.address, port=TARGET_PORT, count=args.count, rate=args.rate,
        prober_bin=binaries.get("prober", "prober"), scapy_socket=args.scapy_socket,
        binaries=binaries,
    )
    timeout_s = 2 * args.count / args.rate + 30
    immediate = args.capture_mode == "immediate"
    sides = ("root", "target") if args.capture_side == "both" else (args.capture_side,)
    pcaps = {side: workdir / f"{name}-{side}.pcap" for side in sides}
    target.check_route()
    with contextlib.ExitStack() as stack:
        captures = {
            side: stack.enter_context(capture(
                target.device if side == "root" else target.target_device, pcaps[side],
                namespace=None if side == "root" else target.namespace, immediate=immediate,
            ))
            for side in sides
        }
        target.check_route()  # again, right before the first packet
        done = run_bounded(invocation.argv, timeout_s)
    if args.keep:
        (workdir / f"{name}.stdout").write_text(done.stdout)
        (workdir / f"{name}.stderr").write_text(done.stderr)
    wires = {side: match_handshakes(read_pcap(path), target.local, target.address, TARGET_PORT)
             for side, path in pcaps.items()}
    notes: list[str] = []
    if args.capture_side == "both":
        wire, missing = splice(wires["root"], wires["target"])
        if missing:
            notes.append(f"{missing} SYNs not seen at the target: their root-side stamp used")
    else:
        wire = wires[args.capture_side]
    dropped = sum(stats.dropped or 0 for stats in captures.values())
    if name == "prober":
        parsed = tl.parse_prober(done.stdout)
        pairing = tl.pair_by_port(parsed.reports, wire)
    elif name == "hping3":
        base = int(invocation.extra["base_port"])
        parsed = tl.parse_hping3(done.stdout, done.stderr, base)
        notes += tl.confirm_hping3_base(base, wire)
        pairing = tl.pair_by_port(parsed.reports, wire)
    elif name == "nping":
        parsed = tl.parse_nping(done.stdout)
        pairing = tl.pair_by_order(parsed, wire)
    else:
        parsed = tl.parse_scapy(done.stdout)
        pairing = tl.pair_by_port(parsed.reports, wire)
    notes += parsed.notes
    if done.timed_out:
        notes.append(f"killed after {timeout_s:.0f} s")
    elif done.returncode not in (0, None) and name != "hping3":
        first = (done.stderr.strip().splitlines() or [""])[0][:200]
        notes.append(f"exit status {done.returncode}: {first}")
    if dropped:
        notes.append(f"tcpdump: {dropped} packets dropped by kernel")
    return ToolResult(
        tool=name, command=invocation.argv, resolution=invocation.resolution,
        returncode=done.returncode, seconds=done.seconds, timed_out=done.timed_out,
        claimed_sent=parsed.claimed_sent, wire=wire, pairing=pairing,
        capture_dropped=dropped, notes=notes,
    )


# --- the machine -----------------------------------------------------------------------------


def system_info(binaries: dict[str, str]) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model"):
                cpu = value.strip()
                break
    versions: dict[str, str] = {}
    import prober

    versions["prober"] = prober.__version__
    for name in ("hping3", "nping", "tcpdump"):
        path = binaries.get(name) or find_tool(name)
        if not path:
            continue
        done = run_bounded([path, "--version"], 5.0)
        # "hping3 version 3.0.0-alpha-2 ($Id: ...)", "Nping version 0.7.93 ( https://...",
        # "tcpdump version 4.99.3"
        found = re.search(r"version\s+(\S+)", done.stdout + done.stderr, re.IGNORECASE)
        versions[name] = found.group(1) if found else "?"
    if "scapy" in binaries:
        import scapy

        versions["scapy"] = scapy.__version__
    uname = os.uname()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": uname.release,
        "kernel_version": uname.version,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


# --- rendering -------------------------------------------------------------------------------


def _us(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def goal_verdict(results: list[ToolResult]) -> str:
    by_tool = {result.tool: result for result in results}
    prober = by_tool.get("prober")
    if prober is None or not prober.pairing.matched:
        return "not evaluated (no prober results)"
    error = prober.error
    parts = [f"median {error.median_us:.1f} µs {'≤' if error.median_us <= GOAL_MEDIAN_US else '>'}"
             f" {GOAL_MEDIAN_US:g}",
             f"p99 {error.p99_us:.1f} µs {'≤' if error.p99_us <= GOAL_P99_US else '>'}"
             f" {GOAL_P99_US:g}"]
    met = error.median_us <= GOAL_MEDIAN_US and error.p99_us <= GOAL_P99_US
    for other in results:
        if other.tool == "prober" or not other.pairing.matched:
            continue
        better = (error.median_us < other.error.median_us and error.p99_us < other.error.p99_us)
        met = met and better
        parts.append(f"{'better' if better else 'NOT better'} than {other.tool}")
    return ("met: " if met else "missed: ") + ", ".join(parts)


def render_text(info: dict[str, Any], params: dict[str, Any], results: list[ToolResult]) -> str:
    lines = [
        f"rtt_accuracy  {info['date']}",
        f"kernel  {info['kernel']} ({info['kernel_version']})",
        f"cpu     {info['cpu']} x {info['cpus']}",
        "tools   " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"target  {params['target']}:{TARGET_PORT} via {params['device']} "
        f"(from {params['local']}); {params['count']} SYNs per tool at {params['rate']:g}/s",
        "",
        f"capture {params['capture']}; scapy socket: {params['scapy_socket']}",
        "",
        "|reported RTT - wire RTT| per probe, µs (wire: tcpdump's nanosecond stamps)",
    ]
    header = ("tool", "sent", "answered", "reported", "matched", "median", "p99", "bias",
              "mis-paired", "missed", "wire RTT", "rate/s", "resolution")
    rows = [header]
    for r in results:
        rate = r.wire_rate
        rows.append((
            r.tool, str(r.sent), str(len(r.wire.answered)),
            str(len(r.pairing.matched) + r.pairing.mispaired), str(len(r.pairing.matched)),
            _us(r.error.median_us), _us(r.error.p99_us), _us(r.bias_us, signed=True),
            str(r.pairing.mispaired), str(r.pairing.missed), _us(r.wire_rtt.median_us),
            "-" if rate is None else f"{rate:.0f}", r.resolution,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [cell.ljust(widths[i]) if i in (0, len(header) - 1) else cell.rjust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    lines += [
        "",
        "sent/answered: SYNs and answered SYNs in the capture; bias: median signed error "
        "(reported - wire);",
        "wire RTT: median on the wire; median/p99: of |error| over matched probes "
        "(p99 nearest-rank).",
    ]
    for r in results:
        breakdown = r.breakdown()
        if breakdown is None:
            continue
        lines += ["", f"{r.tool}: where the error comes from (tool instant - wire instant, µs)"]
        for end, label in (("send", "send    (tool send time - SYN on the wire)"),
                           ("receive", "receive (tool receive time - SYN/ACK on the wire)")):
            signed, absolute = breakdown[end], breakdown[f"{end}_abs"]
            lines.append(f"  {label}: median {_us(signed.median_us, True)}  "
                         f"p99(|x|) {_us(absolute.p99_us)}  min {_us(signed.min_us, True)}  "
                         f"max {_us(signed.max_us, True)}")
    notes = [(r.tool, note) for r in results for note in r.notes + r.pairing.notes]
    if notes:
        lines += ["", "notes"]
        lines += [f"  {tool}: {note}" for tool, note in notes]
    lines += ["", f"goal (prober median ≤ {GOAL_MEDIAN_US:g} µs and p99 ≤ {GOAL_P99_US:g} µs, "
              f"better than every other tool): {goal_verdict(results)}"]
    return "\n".join(lines)


# --- entry point -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rtt_accuracy",
        description="How far each tool's reported SYN RTT is from the RTT on the wire "
                    "(run as root: it builds a network namespace).",
    )
    parser.add_argument("--count", type=int, default=1000, help="SYNs per tool (default 1000)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="SYNs per second (default 100)")
    parser.add_argument("--tools", default=None,
                        help=f"comma-separated subset of {','.join(tl.TOOLS)} "
                             "(default: all installed)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--scapy-socket", choices=("fresh", "reuse"), default="reuse",
                        help="scapy: sr1() on one conf.L3socket() (reuse, default: keeps up "
                             "with 100/s) or the module-level sr1() with a socket per call "
                             "(fresh: ~35 ms per call)")
    parser.add_argument("--capture-side", choices=("root", "target", "both"), default="both",
                        help="where tcpdump runs: the root-side veth (default, where the tools "
                             "send), the target's end of it (in its namespace), or both, "
                             "the wire RTT then running from the SYN's arrival at the target "
                             "to the SYN/ACK's arrival at the root")
    parser.add_argument("--capture-mode", choices=("immediate", "buffered"),
                        default="immediate",
                        help="tcpdump with --immediate-mode -U (default) or without "
                             "(buffered: no wake-up per packet)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the captures and tool outputs (their directory is printed)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be within 1..{MAX_COUNT}")
    if not 0 < args.rate <= MAX_RATE:
        parser.error(f"--rate must be within (0, {MAX_RATE:g}]")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the context managers: full teardown


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("rtt_accuracy: needs root (network namespaces, raw sockets)", file=sys.stderr)
        return 2
    installed = installed_tools()
    wanted = ([t.strip() for t in args.tools.split(",") if t.strip()] if args.tools
              else [t for t in tl.TOOLS if t in installed])
    unknown = [t for t in wanted if t not in tl.TOOLS]
    missing = [t for t in wanted if t in tl.TOOLS and t not in installed]
    if unknown or missing:
        print(f"rtt_accuracy: unknown tools {unknown}, not installed {missing}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    info = system_info(installed)
    workdir = Path(tempfile.mkdtemp(prefix="rtt_accuracy-"))
    results: list[ToolResult] = []
    params: dict[str, Any] = {}
    try:
        with lab_target() as target:
            captured_on = {
                "root": f"on the root side ({target.device})",
                "target": f"on the target side ({target.target_device} in {target.namespace})",
                "both": f"on both sides: SYN arriving on {target.target_device} in "
                        f"{target.namespace}, SYN/ACK arriving on {target.device}",
            }[args.capture_side]
            params = {"target": target.address, "local": target.local, "device": target.device,
                      "count": args.count, "rate": args.rate,
                      "capture": f"tcpdump {captured_on}, {args.capture_mode}",
                      "scapy_socket": args.scapy_socket, "argv": sys.argv[1:]}
            for name in wanted:
                print(f"rtt_accuracy: {name} ...", file=sys.stderr, flush=True)
                result = run_tool(name, target, args, installed, workdir)
                results.append(result)
                if args.keep:
                    (workdir / f"{name}.json").write_text(json.dumps(result.to_dict()) + "\n")
    except (KeyboardInterrupt, SystemExit):
        print("rtt_accuracy: interrupted; tools and captures stopped, lab torn down",
              file=sys.stderr)
        raise
    finally:
        if args.keep:
            print(f"rtt_accuracy: captures kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"system": info, "parameters": params,
                          "results": [r.to_dict() for r in results],
                          "goal": goal_verdict(results)}, indent=1))
    else:
        print(render_text(info, params, results))
    return 0
