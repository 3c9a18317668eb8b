"""`Prober.monitor`'s argument checks: usage errors, before any socket is opened."""

from __future__ import annotations

import asyncio

import pytest

from prober import Prober, UsageError


@pytest.mark.parametrize(
    ("targets", "options"),
    [
        ([("198.18.0.18", 0)], {}),
        ([("198.18.0.18", 80)], {"interval": 0.0}),
        ([("198.18.0.18", 80)], {"interval": float("inf")}),
        ([("198.18.0.18", 80)], {"interval": float("nan")}),
        ([("198.18.0.18", 80)], {"interval": 86_401.0}),
        ([("198.18.0.18", 80)], {"resolve_every": float("nan")}),
        ([("198.18.0.18", 80)], {"resolve_every": 0.5}),
        ([("198.18.0.18", 80)], {"window": 0}),
        ([("198.18.0.18", 80)], {"window": 10_001}),
    ],
)
def test_bad_arguments_at_the_call(targets: list[tuple[str, int]], options: dict[str, float]
                                   ) -> None:
    with pytest.raises(UsageError):
        Prober().monitor(targets, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("targets", "timeout"), [([], 1.0), ([("198.18.0.18", 80)], 6.0)]
)
def test_bad_arguments_at_the_first_step(targets: list[tuple[str, int]], timeout: float
                                         ) -> None:
    async def first() -> None:
        await Prober().monitor(targets, interval=5.0, timeout=timeout).__anext__()

    with pytest.raises(UsageError):
        asyncio.run(first())
