"""The scan order's permutation: every element once, shards disjoint and complete, seeded."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.core.permutation import Permutation


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 3000), seed=st.binary(max_size=16))
def test_every_element_comes_exactly_once(size: int, seed: bytes) -> None:
    assert sorted(Permutation(size, seed)) == list(range(size))


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, 2000), shards=st.integers(1, 9), seed=st.binary(max_size=8))
def test_shards_are_disjoint_and_complete(size: int, shards: int, seed: bytes) -> None:
    permutation = Permutation(size, seed)
    parts = [list(permutation.positions(index, shards)) for index in range(shards)]
    together = [element for part in parts for element in part]
    assert sorted(together) == list(range(size))  # no gap, no overlap
    assert [len(part) for part in parts] == [len(range(i, size, shards)) for i in range(shards)]


def test_the_same_seed_gives_the_same_order_and_another_seed_another() -> None:
    first = list(Permutation(10_000, b"seed-1"))
    assert first == list(Permutation(10_000, b"seed-1"))
    assert first != list(Permutation(10_000, b"seed-2"))


def test_the_order_is_no_burst_of_neighbours() -> None:
    # A /24 x 1 port in order would hit one network back to back; permuted, consecutive
    # positions land far apart on average (in order: distance 1).
    order = list(Permutation(65_536, b"spread"))
    mean_step = sum(abs(b - a) for a, b in itertools.pairwise(order)) / (len(order) - 1)
    assert mean_step > 65_536 / 5


def test_large_spaces_are_indexed_lazily() -> None:
    # The whole IPv4 space on every port: 2^48 positions, nothing materialised.
    permutation = Permutation(1 << 48, b"big")
    picks = [permutation[i] for i in (0, 1, (1 << 48) - 1)]
    assert all(0 <= pick < 1 << 48 for pick in picks)
    assert len(set(picks)) == 3


@pytest.mark.parametrize(("start", "step"), [(-1, 1), (0, 0)])
def test_bad_shards_are_refused(start: int, step: int) -> None:
    with pytest.raises(ValueError):
        list(Permutation(10, b"").positions(start, step))


def test_positions_outside_are_refused() -> None:
    with pytest.raises(IndexError):
        Permutation(10, b"")[10]


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 3000), seed=st.binary(max_size=8))
def test_position_of_is_the_inverse(size: int, seed: bytes) -> None:
    permutation = Permutation(size, seed)
    assert all(permutation.position_of(permutation[p]) == p for p in range(size))


def test_position_of_refuses_an_element_outside() -> None:
    with pytest.raises(IndexError):
        Permutation(10, b"").position_of(10)
    big = Permutation(1 << 48, b"big")
    assert big.position_of(big[(1 << 47) + 3]) == (1 << 47) + 3


@pytest.mark.parametrize("size", [3 * 2**14, 2**17 - 5, 100_003])  # odd bit counts too
def test_unbalanced_halves_spread_as_well(size: int) -> None:
    order = list(Permutation(size, b"spread"))
    assert sorted(order) == list(range(size))
    mean_step = sum(abs(b - a) for a, b in itertools.pairwise(order)) / (size - 1)
    assert mean_step > size / 5  # uniform random pairs: size / 3
