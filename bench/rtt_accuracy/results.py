"""What one tool's run measured, and the figures over several runs.

Every figure is a difference between a tool's number and tcpdump's for the same packet:

send                tool's send instant - the SYN's stamp where it arrives on the peer's end
receive             tool's receive instant - the SYN/ACK's stamp where it arrives on our end
send_own_side       tool's send instant - the SYN's stamp by tcpdump on our end (outgoing)
rtt_error_peer_side reported RTT - (SYN/ACK on our end - SYN on the peer's end)   "reference A"
rtt_error_own_side  reported RTT - (SYN/ACK on our end - SYN on our end)          "reference B"

For a tool whose RTT is its receive instant minus its send instant, the RTT error against A
is exactly receive - send: offsets that the two ends share cancel in it, which is why the
per-end figures are reported and not the RTT error alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from . import tools as tl
from .stats import Offsets, Summary
from .wire import WireProbe, WireRun


class Figure(Enum):
    """The differences the bench reports; the value is the key in its JSON."""

    SEND = "send"
    RECEIVE = "receive"
    SEND_OWN_SIDE = "send_own_side"
    RTT_ERROR_PEER_SIDE = "rtt_error_peer_side"
    RTT_ERROR_OWN_SIDE = "rtt_error_own_side"


PER_END = (Figure.SEND, Figure.RECEIVE)
RTT_ERRORS = (Figure.RTT_ERROR_PEER_SIDE, Figure.RTT_ERROR_OWN_SIDE)


def _send(report: tl.Report, probe: WireProbe) -> float | None:
    if report.sent_ns is None or probe.peer_syn_ns is None:
        return None
    return (report.sent_ns - probe.peer_syn_ns) / 1000


def _receive(report: tl.Report, probe: WireProbe) -> float | None:
    if report.received_ns is None or probe.synack_ns is None:
        return None
    return (report.received_ns - probe.synack_ns) / 1000


def _send_own_side(report: tl.Report, probe: WireProbe) -> float | None:
    return None if report.sent_ns is None else (report.sent_ns - probe.syn_ns) / 1000


def _rtt_error_peer_side(report: tl.Report, probe: WireProbe) -> float | None:
    rtt_ns = probe.peer_rtt_ns
    return None if rtt_ns is None else report.rtt_us - rtt_ns / 1000


def _rtt_error_own_side(report: tl.Report, probe: WireProbe) -> float | None:
    rtt_ns = probe.rtt_ns
    return None if rtt_ns is None else report.rtt_us - rtt_ns / 1000


_DIFFERENCE: dict[Figure, Callable[[tl.Report, WireProbe], float | None]] = {
    Figure.SEND: _send,
    Figure.RECEIVE: _receive,
    Figure.SEND_OWN_SIDE: _send_own_side,
    Figure.RTT_ERROR_PEER_SIDE: _rtt_error_peer_side,
    Figure.RTT_ERROR_OWN_SIDE: _rtt_error_own_side,
}


@dataclass
class ToolResult:
    """One tool's part of one run: its reports tied to our end's capture, which carries each
    SYN's arrival stamp on the peer's end as well (`WireProbe.peer_syn_ns`)."""

    run: int
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
    not_at_peer: int  # SYNs of our end's capture that the peer's capture did not have
    notes: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.wire.probes)

    def values(self, figure: Figure) -> list[float]:
        """The figure's difference for every matched probe that has both numbers, in µs."""
        difference = _DIFFERENCE[figure]
        found = (difference(report, probe) for report, probe in self.pairing.matched)
        return [value for value in found if value is not None]

    def offsets(self, figure: Figure) -> Offsets:
        return Offsets.of(self.values(figure))

    @property
    def capture_rtt_peer_side(self) -> Summary:
        return Summary.of([p.peer_rtt_ns / 1000 for p in self.wire.answered
                           if p.peer_rtt_ns is not None])

    @property
    def capture_rtt_own_side(self) -> Summary:
        return Summary.of([p.rtt_ns / 1000 for p in self.wire.answered if p.rtt_ns is not None])

    @property
    def rate(self) -> float | None:
        """SYNs per second on our end's capture, first to last."""
        probes = self.wire.probes
        if len(probes) < 2 or probes[-1].syn_ns == probes[0].syn_ns:
            return None
        return (len(probes) - 1) / ((probes[-1].syn_ns - probes[0].syn_ns) / 1e9)

    @property
    def has_instants(self) -> bool:
        return any(report.sent_ns is not None for report, _ in self.pairing.matched)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "tool": self.tool,
            "command": self.command,
            "resolution": self.resolution,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 3),
            "timed_out": self.timed_out,
            "sent_claimed": self.claimed_sent,
            "sent": self.sent,
            "answered": len(self.wire.answered),
            "syns_not_at_peer": self.not_at_peer,
            "rate_per_s": None if self.rate is None else round(self.rate, 2),
            "reported": len(self.pairing.matched) + self.pairing.mispaired,
            "matched": len(self.pairing.matched),
            "mispaired": self.pairing.mispaired,
            "missed": self.pairing.missed,
            "figures_us": {figure.value: self.offsets(figure).to_dict() for figure in Figure},
            "capture_rtt_peer_side_us": self.capture_rtt_peer_side.to_dict(),
            "capture_rtt_own_side_us": self.capture_rtt_own_side.to_dict(),
            "capture_duplicate_syn_acks": sum(p.duplicates for p in self.wire.probes),
            "capture_unmatched_syn_acks": self.wire.unmatched_syn_acks,
            "capture_dropped": self.capture_dropped,
            "notes": self.notes + self.pairing.notes,
        }


@dataclass(frozen=True)
class Spread:
    """One figure over several runs: every run's probes pooled, and each run on its own."""

    pooled: Offsets
    per_run: tuple[Offsets, ...]

    @classmethod
    def of(cls, results: Sequence[ToolResult], figure: Figure) -> Spread:
        pooled = [value for result in results for value in result.values(figure)]
        return cls(Offsets.of(pooled), tuple(result.offsets(figure) for result in results))

    def range_of(self, statistic: str) -> tuple[float, float]:
        """Lowest and highest per-run value of one Offsets field (runs without data skipped)."""
        found = [getattr(offsets, statistic) for offsets in self.per_run if offsets.count]
        found = [value for value in found if not math.isnan(value)]
        if not found:
            return math.nan, math.nan
        return min(found), max(found)

    def to_dict(self) -> dict[str, Any]:
        statistics = ("median_us", "p1_us", "p99_us", "median_abs_us", "p99_abs_us")
        return {
            "pooled": self.pooled.to_dict(),
            "per_run_range": {name: [_round(value) for value in self.range_of(name)]
                              for name in statistics},
            "per_run": [offsets.to_dict() for offsets in self.per_run],
        }


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)
