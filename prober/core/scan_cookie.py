"""The scan's stateless reply check: source port and ISN from one keyed hash of the target.

zmap's model (src/validate.c, module_tcp_synscan.c): nothing is stored per target to know
whether a reply answers one of our probes. The sender derives the probe's source port and
initial sequence number from a keyed hash of (our address, target address, target port); the
receiver recomputes the hash from the reply's addresses and ports and checks the reply
against it:

- a SYN/ACK or a RST/ACK acknowledges ISN + 1 (RFC 9293 3.10.7.2: a closed port's RST to a
  SYN has ACK set and acknowledges SEG.SEQ + SEG.LEN);
- an ICMP error quotes our header, whose sequence number is the ISN itself.

One change from zmap: the ISN is the hash *plus the send index* k (the sender's count of
SYNs sent so far), so the reply also tells which send it answers. The receiver recovers
k = ack - 1 - hash (mod 2**32) and looks it up in the send ring (engine/scan/shared.py),
which holds, for each of the last 2**20 sends, its k, the target's position, the attempt
and the send time. The ring entry must hold this very k for this very hash: a forged or
stale reply matches only if it guesses a 32-bit number consistent with both, and the ring
entry gives the position (for dedupe and retries) and the TX time (for the RTT) with no
per-target state. The source port adds the attempt, so a retry leaves from another port
and its answers cannot be confused with the first try's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Final

MASK32: Final = 0xFFFFFFFF


class ScanKey:
    """A scan's secret and its source ports."""

    __slots__ = ("_count", "_hash", "ports")

    def __init__(self, secret: bytes, ports: Sequence[int]) -> None:
        if not ports:
            raise ValueError("a scan needs at least one source port")
        # Keyed once; each cookie copies the keyed state (cheaper than re-keying).
        self._hash = hashlib.blake2b(key=secret, digest_size=8)
        self.ports = tuple(ports)
        self._count = len(self.ports)

    @classmethod
    def random(cls, ports: Sequence[int]) -> ScanKey:
        return cls(os.urandom(16), ports)

    def cookie(self, src: bytes, dst: bytes, dport: int) -> int:
        """The 64-bit keyed hash of our address ``src``, the target ``dst`` and its port."""
        h = self._hash.copy()
        # Address lengths are fixed per family (4 or 16), so the encoding is unambiguous.
        h.update(src + dst + dport.to_bytes(2, "big"))
        return int.from_bytes(h.digest(), "big")

    def source_port(self, cookie: int, attempt: int) -> int:
        """The source port of attempt ``attempt`` (0-based) to the target of ``cookie``."""
        return self.ports[((cookie >> 32) + attempt) % self._count]

    @staticmethod
    def isn(cookie: int, send_index: int) -> int:
        return (cookie + send_index) & MASK32

    @staticmethod
    def send_index(cookie: int, isn: int) -> int:
        """The send index (mod 2**32) that ``isn`` encodes for the target of ``cookie``."""
        return (isn - cookie) & MASK32
