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
