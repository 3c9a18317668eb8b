"""Send and receive times of one segment, and the RTT between two of them.

Kernel timestamps (SO_TIMESTAMPING on send, the capture socket's receive stamp) and user-space
reads of the same wall clock are kept apart: an RTT is computed from two kernel stamps or two
user-space stamps, never a mix, and says which it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Clock(StrEnum):
    KERNEL = "kernel"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Stamp:
    """When a segment left or arrived, in CLOCK_REALTIME nanoseconds."""

    user_ns: int
    kernel_ns: int | None = None

    def with_kernel(self, kernel_ns: int) -> Stamp:
        return Stamp(self.user_ns, kernel_ns)

    @property
    def best_ns(self) -> int:
        return self.kernel_ns if self.kernel_ns is not None else self.user_ns


@dataclass(frozen=True, slots=True)
class Rtt:
    ns: int
    clock: Clock

    @property
    def us(self) -> float:
        return self.ns / 1000.0

    @property
    def ms(self) -> float:
        return self.ns / 1_000_000.0


def rtt_between(sent: Stamp, received: Stamp) -> Rtt:
    """The RTT from two stamps on one clock: kernel if both have it, else user space."""
    if sent.kernel_ns is not None and received.kernel_ns is not None:
        return Rtt(received.kernel_ns - sent.kernel_ns, Clock.KERNEL)
    return Rtt(received.user_ns - sent.user_ns, Clock.USER)
