"""A running scan: the library's async iterator of ScanResult (``Prober.scan``).

INTERFACE STUB (issue 8): the engine behind it is being written; the shape below is fixed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from prober.core.scan_result import ScanResult, ScanSummary
from prober.scan_plan import ScanPlan


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """A snapshot for the live progress line."""

    targets: int | None  # planned probes (None while stdin is still being read)
    sent: int  # SYNs sent, retries included
    done: int  # targets with a record
    answered: int  # of which answered (open, closed, ICMP)
    rate_pps: float  # SYNs/s over the last second
    eta_s: float | None
    kernel_drops: int
    invalid: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class ScanOptions:
    rate: float = 1000.0  # SYNs per second, token bucket
    retries: int = 0  # re-sends of an unanswered SYN
    wait: float = 2.0  # seconds to wait for an answer after each SYN (and after the last)
    pcap: Path | None = None  # write sent and received packets here


class ScanRun:
    """``async for result in run`` yields one ScanResult per target and port, in the order
    verdicts are reached; ``summary`` is set once the iteration ends (also after ``stop``).

    Raises (from the iteration): UsageError for a bad stdin line (without skip_bad),
    RawSocketsNotPermitted, FirewallUnavailable is never raised (scans need no firewall).
    """

    def __init__(
        self,
        plan: ScanPlan,
        options: ScanOptions,
        on_bad: Callable[[str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.options = options
        self.on_bad = on_bad  # gets "SOURCE:LINE: ..." for each line skipped (plan.skip_bad)
        self.summary: ScanSummary | None = None

    def __aiter__(self) -> AsyncIterator[ScanResult]:
        return self._results()

    async def _results(self) -> AsyncIterator[ScanResult]:
        raise NotImplementedError("the scan engine is not merged yet")
        yield  # pragma: no cover

    def progress(self) -> ScanProgress:
        raise NotImplementedError

    def stop(self) -> None:
        """End early (Ctrl-C): unsent targets are dropped (counted in the summary), probes
        in flight get an ``interrupted`` record, and the iteration ends."""
        raise NotImplementedError
