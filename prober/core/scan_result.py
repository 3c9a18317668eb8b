"""What a scan reports: one ``ScanResult`` per target and port, one ``ScanSummary`` per run.

A scan's record is flat (no nested objects), so the JSON line and the CSV row carry the same
fields under the same names (``SCAN_FIELDS``, in that order); docs/json.md documents them.
States and reasons are the SYN probe's (``prober.core.syn``): a SYN/ACK means open, a RST
closed, an ICMP destination-unreachable or silence filtered, time-exceeded unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prober.core.strays import Stray
from prober.core.syn import PortState, Reason
from prober.core.timing import Clock

SCAN_FIELDS: Final = (
    "target",
    "port",
    "name",
    "state",
    "reason",
    "rtt_us",
    "clock",
    "ttl",
    "window",
    "options",
    "attempt",
    "source",
    "source_port",
    "icmp_type",
    "icmp_code",
    "icmp_from",
    "received_ns",
    "error",
)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """One target and port's verdict.

    ``attempt`` is the 1-based number of the SYN that was answered (1 unless ``--retries``
    re-sent it), or for silence the number of SYNs sent. ``rtt_us`` is the answered SYN's
    send (kernel TX stamp) to the answer's capture (kernel RX stamp) on ``clock`` "kernel";
    "user" when the kernel gave no TX stamp in time, so both ends were timed in user space;
    None without an answer. ``ttl``, ``window`` and ``options`` (TcpOptions.order letters)
    describe the answer's TCP segment (the ICMP's IP header for ICMP: ttl only).
    ``name`` is the host name the target was given as (None for addresses and blocks).
    ``received_ns`` is the answer's CLOCK_REALTIME, or when silence was concluded.
    """

    target: str
    port: int
    state: PortState
    reason: Reason
    attempt: int
    source: str
    source_port: int
    name: str | None = None
    rtt_us: float | None = None
    clock: Clock | None = None  # None without an answer
    ttl: int | None = None
    window: int | None = None
    options: str | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_from: str | None = None  # who sent the ICMP error (a router, or the target)
    received_ns: int | None = None
    error: str | None = None  # why the SYN could not be sent, or the name not resolved

    def to_dict(self) -> dict[str, Any]:
        """The JSON line's fields (``SCAN_FIELDS`` order), enums as their values."""
        return {
            "target": self.target,
            "port": self.port,
            "name": self.name,
            "state": self.state.value,
            "reason": self.reason.value,
            "rtt_us": self.rtt_us,
            "clock": None if self.clock is None else self.clock.value,
            "ttl": self.ttl,
            "window": self.window,
            "options": self.options,
            "attempt": self.attempt,
            "source": self.source,
            "source_port": self.source_port,
            "icmp_type": self.icmp_type,
            "icmp_code": self.icmp_code,
            "icmp_from": self.icmp_from,
            "received_ns": self.received_ns,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """A scan's totals, for the final summary line and JSON's ``{"type": "summary"}``.

    ``complete`` is False when something the user asked for may be missing: frames the
    kernel dropped before prober read them (``kernel_drops``), SYNs that could not be sent
    (``send_failed``; each still has a record), or a run stopped early (``interrupted``).
    """

    targets: int  # probes planned in this shard (after exclusions and the blocklist)
    sent: int  # SYNs sent, retries included
    send_failed: int
    results: int  # records yielded
    by_state: Mapping[PortState, int]
    by_reason: Mapping[Reason, int]
    duration_s: float
    rate_pps: float  # SYNs sent per second of the sending phase
    kernel_drops: int  # frames the capture socket's queue overflowed with
    duplicates: int  # further valid answers for a target that already had its record
    late: int  # valid answers after the target's verdict was silence, or beyond the send ring
    excluded: int  # targets removed by --exclude
    blocklisted: int  # addresses of CIDR blocks skipped by the special-purpose blocklist
    bad_lines: int  # lines skipped with --skip-bad
    kernel_rsts: int  # RSTs the local kernel sent for SYN/ACKs (seen on the capture)
    own_rsts: int  # RSTs prober sent where the kernel's were missing
    interrupted: bool = False
    invalid_by_kind: Mapping[Stray, int] = field(default_factory=dict)
    notices: int = 0  # ICMP messages quoting a probe that are not reachability errors
    # Seconds the sender paused because the records' consumer (a pipe, a disk) was slower.
    paused_s: float = 0.0
    # Blocklisted elements by registry entry (prober.blocklist), most first.
    blocklist_hits: Mapping[str, int] = field(default_factory=dict)

    @property
    def invalid(self) -> int:
        return sum(self.invalid_by_kind.values())

    @property
    def complete(self) -> bool:
        return not (self.kernel_drops or self.send_failed or self.interrupted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "summary",
            "targets": self.targets,
            "sent": self.sent,
            "send_failed": self.send_failed,
            "results": self.results,
            "by_state": {state.value: n for state, n in self.by_state.items()},
            "by_reason": {reason.value: n for reason, n in self.by_reason.items()},
            "duration_s": round(self.duration_s, 3),
            "rate_pps": round(self.rate_pps, 1),
            "kernel_drops": self.kernel_drops,
            "duplicates": self.duplicates,
            "late": self.late,
            "excluded": self.excluded,
            "blocklisted": self.blocklisted,
            "bad_lines": self.bad_lines,
            "kernel_rsts": self.kernel_rsts,
            "own_rsts": self.own_rsts,
            "interrupted": self.interrupted,
            "invalid": self.invalid,
            "invalid_by_kind": {kind.value: n for kind, n in self.invalid_by_kind.items()},
            "notices": self.notices,
            "paused_s": round(self.paused_s, 3),
            "blocklist_hits": dict(self.blocklist_hits),
            "complete": self.complete,
        }
