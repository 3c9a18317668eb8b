"""What the monitor child counts of its samples, in constant memory (a 10-minute run at
1,000 targets/s must not grow by the figures it keeps): counts per state, reason and RTT
clock, and lateness and RTT in log-spaced histograms (percentiles within 1.2 %, the maximum
exact). Pure: no prober imports, so the report's math is unit-tested alone.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

BUCKETS_PER_DECADE = 200  # a bucket's upper edge is 1.16 % above its lower one
LOWEST_S = 1e-7  # values at or below go to bucket 0 (lateness is often exactly 0)
LATE_FRACTION = 0.10  # of the interval: a probe later than this is "late" (the bar)


@dataclass
class LogHistogram:
    """Counts of positive values in buckets of equal ratio; bucket i holds values up to
    LOWEST_S * 10 ** (i / BUCKETS_PER_DECADE)."""

    counts: Counter[int] = field(default_factory=Counter)
    total: int = 0
    maximum: float = 0.0

    def add(self, value: float) -> None:
        index = 0 if value <= LOWEST_S else math.ceil(
            math.log10(value / LOWEST_S) * BUCKETS_PER_DECADE)
        self.counts[index] += 1
        self.total += 1
        self.maximum = max(self.maximum, value)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile (0 < q <= 1) as its bucket's upper edge (at most the
        maximum); None when empty."""
        if not self.total:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                edge = 0.0 if index == 0 else LOWEST_S * 10 ** (index / BUCKETS_PER_DECADE)
                return min(edge, self.maximum)
        return self.maximum

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.total, "p50": self.quantile(0.5), "p99": self.quantile(0.99),
                "max": self.maximum if self.total else None}


@dataclass
class Tally:
    """The samples of one measuring window."""

    interval: float
    samples: int = 0
    states: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    clocks: Counter[str] = field(default_factory=Counter)  # "kernel", "user", "none"
    late: LogHistogram = field(default_factory=LogHistogram)
    rtt: LogHistogram = field(default_factory=LogHistogram)
    late_over: int = 0  # samples whose probe left more than LATE_FRACTION * interval late

    def add(self, state: str, reason: str, rtt_s: float | None, rtt_clock: str | None,
            late_s: float) -> None:
        self.samples += 1
        self.states[state] += 1
        self.reasons[reason] += 1
        self.clocks[rtt_clock or "none"] += 1
        self.late.add(max(0.0, late_s))
        if late_s > LATE_FRACTION * self.interval:
            self.late_over += 1
        if rtt_s is not None:
            self.rtt.add(rtt_s)

    def to_dict(self) -> dict[str, Any]:
        return {"interval": self.interval, "samples": self.samples,
                "states": dict(self.states), "reasons": dict(self.reasons),
                "clocks": dict(self.clocks), "late_s": self.late.to_dict(),
                "late_over": self.late_over, "rtt_s": self.rtt.to_dict()}
