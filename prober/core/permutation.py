"""A keyed pseudo-random permutation of ``range(size)``, for the order a scan probes in.

A scan walks the (address x port) index space of its CIDR and range targets in an order no
network can predict or see as a burst, reproducible from a seed, and splittable across
machines with no overlap and no gap (``--shard I/N`` takes every Nth position). zmap walks a
cyclic multiplicative group modulo a prime for this (src/cyclic.c); here a small Feistel
network does the same job for any size, with no prime search: a balanced Feistel network is a
bijection on ``2 ** bits`` values whatever its round function, and cycle-walking (encrypt
again while the value is ``>= size``) restricts it to ``range(size)`` while keeping it a
bijection (Black and Rogaway, "Ciphers with Arbitrary Finite Domains", CT-RSA 2002). The
domain is under twice ``size``, so a position costs under two encryptions on average.

The round function is a keyed integer mix, not a cryptographic hash: the order must look
random to a network and be cheap per probe, not resist an adversary who sees many positions.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Final

ROUNDS: Final = 4
_MIX: Final = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, odd: multiplication mod 2^64 mixes


class Permutation:
    """A bijection of ``range(size)`` onto itself chosen by ``seed``.

    Args:
        size: how many elements (at least 0).
        seed: any bytes; the same seed and size give the same order.

    ``permutation[i]`` is the element at position ``i``; iterating yields them in order.
    """

    __slots__ = ("_right_bits", "_right_mask", "_rounds", "size")

    def __init__(self, size: int, seed: bytes) -> None:
        if size < 0:
            raise ValueError(f"size must be at least 0, not {size}")
        self.size = size
        bits = max(2, (size - 1).bit_length()) if size > 1 else 2
        # Halves of bits // 2 and the rest: an unbalanced network when ``bits`` is odd keeps
        # the domain under twice ``size``, so cycle-walking costs under two encryptions.
        left_bits = bits // 2
        self._right_bits = bits - left_bits
        self._right_mask = (1 << self._right_bits) - 1
        digest = hashlib.blake2b(
            seed, digest_size=8 * ROUNDS, person=b"prober-permute"
        ).digest()
        # Each round writes the half that is on the left as it starts: left, right, left, ...
        # (ROUNDS is even, so the halves end where they began).
        masks = ((1 << left_bits) - 1, self._right_mask)
        self._rounds = tuple(
            (int.from_bytes(digest[8 * r : 8 * r + 8], "little"), masks[r % 2])
            for r in range(ROUNDS)
        )

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, position: int) -> int:
        if not 0 <= position < self.size:
            raise IndexError(f"position {position} outside 0..{self.size - 1}")
        value = self._encrypt(position)
        while value >= self.size:  # cycle-walking: stays inside range(size), still a bijection
            value = self._encrypt(value)
        return value

    def __iter__(self) -> Iterator[int]:
        return self.positions(0, 1)

    def positions(self, start: int, step: int) -> Iterator[int]:
        """The elements at positions ``start, start + step, ...``: shard ``start`` of ``step``
        (``--shard I/N`` is ``positions(I, N)``; the N shards are disjoint and complete)."""
        if step < 1 or start < 0:
            raise ValueError(f"bad shard: start {start}, step {step}")
        for position in range(start, self.size, step):
            yield self[position]

    def position_of(self, element: int) -> int:
        """The position of ``element``: the inverse, ``p[p.position_of(e)] == e``.

        Raises:
            IndexError: ``element`` outside ``range(size)``.
        """
        if not 0 <= element < self.size:
            raise IndexError(f"element {element} outside 0..{self.size - 1}")
        value = self._decrypt(element)
        while value >= self.size:  # walk back along the same cycle
            value = self._decrypt(value)
        return value

    def _decrypt(self, value: int) -> int:
        left, right = value >> self._right_bits, value & self._right_mask
        for key, mask in reversed(self._rounds):
            left, right = right ^ ((((left ^ key) * _MIX) >> 32) & mask), left
        return (left << self._right_bits) | right

    def _encrypt(self, value: int) -> int:
        left, right = value >> self._right_bits, value & self._right_mask
        for key, mask in self._rounds:
            # The product's middle bits depend on every bit of ``right`` and the key.
            left, right = right, left ^ ((((right ^ key) * _MIX) >> 32) & mask)
        return (left << self._right_bits) | right
