"""Order statistics, stated exactly so numbers can be compared between runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q % of values ≤ it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The usual median (mean of the two middle values for an even count)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True)
class Summary:
    """Distribution of one quantity, in microseconds."""

    count: int
    median_us: float
    p99_us: float
    min_us: float
    max_us: float

    @classmethod
    def of(cls, values_us: Sequence[float]) -> Summary:
        return cls(
            count=len(values_us),
            median_us=median(values_us),
            p99_us=percentile(values_us, 99),
            min_us=min(values_us, default=math.nan),
            max_us=max(values_us, default=math.nan),
        )

    def to_dict(self) -> dict[str, Any]:
        return {key: (None if isinstance(value, float) and math.isnan(value) else value)
                for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Offsets:
    """Signed differences (µs) between two instants or two RTTs, and their absolute values.

    p1 and p99 of the signed values show both tails (a distribution centred below zero has its
    long tail at p1); median and p99 of |x| say how far apart the two are, whatever the sign.
    """

    count: int
    median_us: float
    p1_us: float
    p99_us: float
    median_abs_us: float
    p99_abs_us: float
    min_us: float
    max_us: float

    @classmethod
    def of(cls, values_us: Sequence[float]) -> Offsets:
        absolute = [abs(value) for value in values_us]
        return cls(
            count=len(values_us),
            median_us=median(values_us),
            p1_us=percentile(values_us, 1),
            p99_us=percentile(values_us, 99),
            median_abs_us=median(absolute),
            p99_abs_us=percentile(absolute, 99),
            min_us=min(values_us, default=math.nan),
            max_us=max(values_us, default=math.nan),
        )

    def to_dict(self) -> dict[str, Any]:
        return {key: (None if isinstance(value, float) and math.isnan(value) else round(value, 3)
                      if isinstance(value, float) else value)
                for key, value in asdict(self).items()}
