"""The tools under test: how each is run, how its output is read, how its RTTs meet the capture.

Every tool sends `count` SYNs to target:port at `rate` per second from the root namespace.
What each reports, and how a report is tied to a SYN in the capture:

prober   JSON lines; each probe has its own source port, `rtt_us`, and the two kernel
         instants `sent_ns` / `received_ns` it subtracted. Paired by source port.
hping3   `... seq=K ... rtt=X ms` (0.1 ms resolution). hping3 sends probe K from base + K;
         the base is fixed with `-s` and confirmed from the capture. Paired by source port.
nping    one source port, identical SYNs; `SENT (t)` / `RCVD (t)` lines with elapsed seconds
         to 4 decimals (100 µs). nping credits an answer to the latest probe sent to that
         port (NpingTarget::setProbeRecvTCP), so each RCVD line is paired with the SENT line
         before it, and the k-th SENT line with the k-th SYN in the capture: reported RTT =
         RCVD - SENT of that pair.
scapy    a subprocess looping over `sr1()`; RTT = reply.time - sent.sent_time (Scapy's own
         fields: the capture socket's kernel stamp, and time.time() just before send()).
         Paired by source port (the reply's destination port), the SYN nearest in time
         when RandShort() repeated a port.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from .wire import WireProbe, WireRun

SCAPY_LOOP = Path(__file__).resolve().parent / "scapy_loop.py"
TOOLS = ("prober", "hping3", "nping", "scapy")


@dataclass(frozen=True)
class Report:
    """One RTT as a tool reported it."""

    rtt_us: float
    sport: int | None = None  # the source port of the SYN it answers, when the tool says
    sent_ns: int | None = None  # the tool's own instants, when it exposes them
    received_ns: int | None = None


@dataclass
class Pairing:
    """Reports tied to the SYNs of our end's capture."""

    matched: list[tuple[Report, WireProbe]] = field(default_factory=list)
    mispaired: int = 0  # reports tied to no answered SYN, or a second report for one SYN
    missed: int = 0  # answered SYNs the tool reported no RTT for
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    resolution: str
    extra: dict[str, Any] = field(default_factory=dict)


# --- command lines ---------------------------------------------------------------------------


def invocation(
    tool: str,
    *,
    address: str,
    port: int,
    count: int,
    rate: float,
    prober_bin: str,
    scapy_socket: str,
    binaries: dict[str, str],
) -> Invocation:
    interval_s = 1.0 / rate
    if tool == "prober":
        return Invocation(
            [prober_bin, "syn", f"{address}:{port}", "-c", str(count), "-i", f"{interval_s:g}",
             "--json"],
            "1 ns (kernel TX and RX timestamps)",
        )
    if tool == "hping3":
        # A base that leaves room for every probe below 65536, so ports never wrap.
        base = random.randrange(10_000, 65_536 - count)
        return Invocation(
            [binaries["hping3"], "-S", "-p", str(port), "-c", str(count), "-i",
             f"u{round(interval_s * 1e6)}", "-s", str(base), address],
            "100 µs (rtt=X.Y ms)",
            {"base_port": base},
        )
    if tool == "nping":
        return Invocation(
            [binaries["nping"], "--tcp", "-p", str(port), "--flags", "syn", "-c", str(count),
             "--delay", f"{interval_s * 1000:g}ms", address],
            "100 µs (SENT/RCVD elapsed s, 4 decimals)",
        )
    if tool == "scapy":
        return Invocation(
            [sys.executable, str(SCAPY_LOOP), "--dst", address, "--port", str(port),
             "--count", str(count), "--rate", f"{rate:g}", "--socket", scapy_socket,
             "--max-seconds", f"{2 * count / rate + 30:g}"],
            "~0.2 µs (float seconds since 1970)",
        )
    raise ValueError(f"unknown tool {tool!r}")


# --- reading outputs -------------------------------------------------------------------------


@dataclass
class Parsed:
    reports: list[Report] = field(default_factory=list)
    claimed_sent: int | None = None
    notes: list[str] = field(default_factory=list)
    # nping only: per SENT line, the RTTs of the RCVD lines nping credits to it
    by_order: list[list[float]] | None = None
    orphans: int = 0  # nping only: RCVD lines before any SENT line


def parse_prober(stdout: str) -> Parsed:
    parsed = Parsed()
    clocks: set[str] = set()
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if item.get("type") == "summary":
            parsed.claimed_sent = int(item["sent"])
            if item.get("kernel_drops"):
                parsed.notes.append(f"prober's capture socket dropped {item['kernel_drops']}")
            if item.get("invalid"):
                parsed.notes.append(f"prober counted {item['invalid']} invalid segments")
            continue
        if item.get("type") != "probe" or item.get("rtt_us") is None:
            continue
        clocks.add(str(item.get("clock")))
        parsed.reports.append(Report(
            rtt_us=float(item["rtt_us"]),
            sport=int(item["source_port"]),
            sent_ns=item.get("sent_ns"),
            received_ns=item.get("received_ns"),
        ))
    if clocks - {"kernel"}:
        parsed.notes.append(f"prober clocks used: {', '.join(sorted(clocks))}")
    return parsed


_HPING_REPLY = re.compile(r"\bseq=(\d+)\b.*\brtt=([0-9.]+) ms")
_HPING_SENT = re.compile(r"(\d+) packets transmitted")


def parse_hping3(stdout: str, stderr: str, base_port: int) -> Parsed:
    parsed = Parsed()
    for line in stdout.splitlines():
        match = _HPING_REPLY.search(line)
        if match and "flags=" in line:
            sequence = int(match.group(1))
            # The reply's destination port minus the base is what hping3 prints as seq.
            parsed.reports.append(
                Report(rtt_us=float(Decimal(match.group(2)) * 1000),
                       sport=(base_port + sequence) & 0xFFFF)
            )
    sent = _HPING_SENT.search(stdout + stderr)
    if sent:
        parsed.claimed_sent = int(sent.group(1))
    return parsed


_NPING_LINE = re.compile(r"^(SENT|RCVD) \((\d+\.\d+)s\) (\S+) (.*)$")
_NPING_SENT = re.compile(r"Raw packets sent: (\d+)")
_NPING_RTT = re.compile(r"Max rtt: ([0-9.]+)ms \| Min rtt: ([0-9.]+)ms \| Avg rtt: ([0-9.]+)ms")


def parse_nping(stdout: str) -> Parsed:
    parsed = Parsed(by_order=[])
    assert parsed.by_order is not None
    last_sent_us: Decimal | None = None
    for line in stdout.splitlines():
        match = _NPING_LINE.match(line.strip())
        if not match:
            continue
        kind, seconds = match.group(1), Decimal(match.group(2)) * 1_000_000
        if kind == "SENT":
            last_sent_us = seconds
            parsed.by_order.append([])
        elif last_sent_us is None:
            parsed.orphans += 1
        else:
            parsed.by_order[-1].append(float(seconds - last_sent_us))
    sent = _NPING_SENT.search(stdout)
    if sent:
        parsed.claimed_sent = int(sent.group(1))
    rtts = _NPING_RTT.search(stdout)
    if rtts:
        parsed.notes.append(
            "nping's own summary (µs clock, whole run only): max/min/avg "
            f"{float(rtts.group(1)) * 1000:.0f}/{float(rtts.group(2)) * 1000:.0f}/"
            f"{float(rtts.group(3)) * 1000:.0f} µs"
        )
    return parsed


def parse_scapy(stdout: str) -> Parsed:
    parsed = Parsed()
    sent = 0
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if item.get("type") == "summary":
            parsed.claimed_sent = int(item["sent"])
            parsed.notes.append(
                f"scapy loop: {item['sent']} sr1() calls in {item['seconds']:.1f} s "
                f"({item['sent'] / max(item['seconds'], 1e-9):.0f}/s, socket {item['socket']})"
            )
            continue
        sent += 1
        if item.get("reply_time") is None or item.get("sent_time") is None:
            continue
        parsed.reports.append(Report(
            rtt_us=(item["reply_time"] - item["sent_time"]) * 1e6,
            sport=int(item["sport"]),
            sent_ns=round(item["sent_time"] * 1e9),
            received_ns=round(item["reply_time"] * 1e9),
        ))
    if parsed.claimed_sent is None:
        parsed.claimed_sent = sent
    return parsed


# --- pairing with the capture ----------------------------------------------------------------


def pair_by_port(reports: Sequence[Report], wire: WireRun) -> Pairing:
    """Tie each report to the SYN from its source port (nearest in time if several)."""
    pairing = Pairing()
    by_sport = wire.by_sport()
    used: set[int] = set()
    for report in reports:
        candidates = [p for p in by_sport.get(report.sport or -1, []) if p.number not in used]
        if not candidates:
            pairing.mispaired += 1
            continue
        if report.sent_ns is not None and len(candidates) > 1:
            sent_ns = report.sent_ns
            probe = min(candidates, key=lambda p: abs(p.syn_ns - sent_ns))
        else:
            probe = candidates[0]
        if probe.synack_ns is None:
            pairing.mispaired += 1  # the tool reports an answer the capture never saw
            continue
        used.add(probe.number)
        pairing.matched.append((report, probe))
    pairing.missed = sum(1 for p in wire.answered if p.number not in used)
    return pairing


def pair_by_order(parsed: Parsed, wire: WireRun) -> Pairing:
    """nping: the k-th SENT line is the k-th SYN on the wire; its RCVD lines are its answers."""
    pairing = Pairing()
    by_order = parsed.by_order or []
    pairing.mispaired += parsed.orphans
    if len(by_order) != len(wire.probes):
        pairing.notes.append(
            f"{len(by_order)} SENT lines but {len(wire.probes)} SYNs on the wire: paired the "
            f"first {min(len(by_order), len(wire.probes))} in order"
        )
    for number, rtts in enumerate(by_order):
        probe = wire.probes[number] if number < len(wire.probes) else None
        if probe is None or probe.synack_ns is None:
            pairing.mispaired += len(rtts)
            continue
        if not rtts:
            pairing.missed += 1
            continue
        pairing.matched.append((Report(rtt_us=rtts[0]), probe))
        pairing.mispaired += len(rtts) - 1
    pairing.missed += sum(1 for p in wire.probes[len(by_order):] if p.synack_ns is not None)
    pairing.notes.append("paired by order (one source port, identical SYNs)")
    return pairing


def confirm_hping3_base(base_port: int, wire: WireRun) -> list[str]:
    """hping3 should send probe K from base + K: check against the capture."""
    if not wire.probes:
        return []
    first = wire.probes[0].sport
    off = sum(1 for p in wire.probes if p.sport != (base_port + p.number) & 0xFFFF)
    if first != base_port or off:
        return [f"capture disagrees with the port mapping: first SYN from {first} "
                f"(asked {base_port}), {off} SYNs off base + K"]
    last = base_port + len(wire.probes) - 1
    return [f"source ports {base_port}..{last} confirmed in the capture"]
