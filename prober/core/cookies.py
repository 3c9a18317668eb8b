"""Keyed initial sequence numbers: the cookie that ties a reply to the probe it answers.

Each probe's ISN is a keyed hash of its 4-tuple and probe number, so no two probes look
alike and a reply can be checked without per-probe state lookups by sequence number: a
SYN/ACK must acknowledge ISN+1, a RST acknowledges ISN or ISN+1, and an ICMP error quotes
the probe's header with sequence number ISN. Off-path or stale packets do not match.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Final

_PORTS_PROBE: Final = struct.Struct("!HHQ")


class IsnKey:
    """A secret from which probe ISNs are derived (BLAKE2b keyed, 32-bit digest)."""

    __slots__ = ("_hash",)

    def __init__(self, secret: bytes) -> None:
        # Keyed once; each ISN copies the keyed state instead of re-keying.
        self._hash = hashlib.blake2b(key=secret, digest_size=4)

    @classmethod
    def random(cls) -> IsnKey:
        """A key from 16 bytes of ``os.urandom`` (a fresh secret per run)."""
        return cls(os.urandom(16))

    def isn(self, src: bytes, dst: bytes, sport: int, dport: int, probe: int) -> int:
        """The 32-bit ISN for probe number ``probe`` from ``src:sport`` to ``dst:dport``."""
        h = self._hash.copy()
        # Address lengths are fixed per family (4 or 16), so the encoding is unambiguous.
        h.update(src)
        h.update(dst)
        h.update(_PORTS_PROBE.pack(sport, dport, probe))
        return int.from_bytes(h.digest(), "big")
