"""Rolling statistics of one monitored target, and where in the interval each target is probed.

Sans-IO groundwork for ``Prober.monitor`` (issue 10): a ``TargetStats`` takes one round's
outcome at a time (state, reason, RTT, the time) and gives a frozen ``RollingStats``: the last
RTT, an EWMA, min and max, p50 and p99 and the loss over a window of rounds, and the state
changes with their times. ``phase_of`` spreads targets over the interval by a hash of their
name, so a round is not a burst and a reloaded targets file keeps each target's phase.

What counts as loss: a round whose probe was sent and drew no answer (``NO_RESPONSE``). A
round that could not be sent, or whose name did not resolve, is no loss of the path's: it is
counted apart (``unsent``), and it is a state of its own in the samples.
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prober.core.syn import PortState, Reason

DEFAULT_WINDOW = 100  # rounds the percentiles and the loss look back over
DEFAULT_EWMA_WEIGHT = 0.125  # RFC 6298's alpha: the weight of the newest RTT
MAX_STATE_CHANGES = 16  # the latest state changes kept per target
_NONE = float("nan")  # a round without an RTT, in the window's history
_UNSENT = frozenset({Reason.SEND_FAILED, Reason.UNRESOLVED, Reason.INTERRUPTED})


def phase_of(key: str, interval: float) -> float:
    """Seconds into each interval at which target ``key`` is probed: uniform over targets,
    stable across runs and reloads (a hash of the name, unkeyed, not the order in the file)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * interval


def _percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil(n * fraction), at least 1
    return ordered[int(rank) - 1]


@dataclass(frozen=True, slots=True)
class StateChange:
    at: float  # the caller's clock (monitor: wall time of the round)
    before: PortState | None  # None: the first round
    after: PortState

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "before": None if self.before is None else self.before.value,
            "after": self.after.value,
        }


@dataclass(frozen=True, slots=True)
class RollingStats:
    """A target's statistics after a round (RTTs in seconds; None: no RTT in the window)."""

    rounds: int  # since the start
    window_rounds: int  # rounds in the window
    last_rtt_s: float | None  # this round's (None when it drew no SYN/ACK or RST)
    ewma_rtt_s: float | None
    min_rtt_s: float | None  # over the window
    max_rtt_s: float | None
    p50_rtt_s: float | None
    p99_rtt_s: float | None
    loss: float | None  # unanswered / sent rounds in the window; None when none was sent
    unsent: int  # rounds in the window that could not be sent (or resolved)
    state: PortState
    state_changes: tuple[StateChange, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "window_rounds": self.window_rounds,
            "last_rtt_s": self.last_rtt_s,
            "ewma_rtt_s": self.ewma_rtt_s,
            "min_rtt_s": self.min_rtt_s,
            "max_rtt_s": self.max_rtt_s,
            "p50_rtt_s": self.p50_rtt_s,
            "p99_rtt_s": self.p99_rtt_s,
            "loss": self.loss,
            "unsent": self.unsent,
            "state": self.state.value,
            "state_changes": [change.to_dict() for change in self.state_changes],
        }


class TargetStats:
    """The rolling statistics of one target, updated once per round in O(window).

    Args:
        window: rounds the percentiles, min/max and loss cover (at least 1).
        ewma_weight: weight of the newest RTT in the EWMA, in (0, 1].

    Raises:
        ValueError: for an argument out of range.
    """

    def __init__(self, *, window: int = DEFAULT_WINDOW,
                 ewma_weight: float = DEFAULT_EWMA_WEIGHT) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if not 0 < ewma_weight <= 1:
            raise ValueError("ewma_weight must lie in (0, 1]")
        self.window = window
        self.ewma_weight = ewma_weight
        self._rounds = 0
        # Per round in the window, in rings allocated whole now (so memory does not grow as
        # the windows fill): its RTT (NaN: none) and whether it was sent (bit 0) and answered
        # (bit 1). Unboxed doubles and bytes: at 10,000 targets the windows hold a million
        # rounds, which as Python objects would cost ~30 bytes more each and be walked by
        # every full collection of the cyclic GC.
        self._rtts = array("d", [_NONE]) * window
        self._flags = bytearray(window)
        self._next = 0  # the ring slot the next round goes to
        self._filled = 0  # rounds in the window
        self._sorted = array("d")  # the window's RTTs, sorted
        self._sent = 0
        self._answered = 0
        self._ewma: float | None = None
        self._state: PortState | None = None
        self._changes: deque[StateChange] = deque(maxlen=MAX_STATE_CHANGES)

    def update(self, state: PortState, reason: Reason, rtt_s: float | None,
               at: float) -> RollingStats:
        """Add one round's outcome; returns the statistics after it."""
        if rtt_s is not None and rtt_s < 0:
            raise ValueError("rtt_s must be >= 0")
        self._rounds += 1
        sent = reason not in _UNSENT
        answered = sent and reason is not Reason.NO_RESPONSE
        slot = self._next
        if self._filled == self.window:  # the oldest round leaves the window
            old_rtt, old_flags = self._rtts[slot], self._flags[slot]
            self._sent -= old_flags & 1
            self._answered -= old_flags >> 1
            if old_rtt == old_rtt:  # not NaN
                del self._sorted[bisect.bisect_left(self._sorted, old_rtt)]
        else:
            self._filled += 1
        self._rtts[slot] = _NONE if rtt_s is None else rtt_s
        self._flags[slot] = sent | answered << 1
        self._next = (slot + 1) % self.window
        self._sent += sent
        self._answered += answered
        if rtt_s is not None:
            bisect.insort(self._sorted, rtt_s)
            weight = self.ewma_weight
            self._ewma = rtt_s if self._ewma is None else (
                (1 - weight) * self._ewma + weight * rtt_s
            )
        if state is not self._state:
            self._changes.append(StateChange(at, self._state, state))
            self._state = state
        ordered = self._sorted
        return RollingStats(
            rounds=self._rounds,
            window_rounds=self._filled,
            last_rtt_s=rtt_s,
            ewma_rtt_s=self._ewma,
            min_rtt_s=ordered[0] if ordered else None,
            max_rtt_s=ordered[-1] if ordered else None,
            p50_rtt_s=_percentile(ordered, 0.50),
            p99_rtt_s=_percentile(ordered, 0.99),
            loss=None if not self._sent else (self._sent - self._answered) / self._sent,
            unsent=self._filled - self._sent,
            state=state,
            state_changes=tuple(self._changes),
        )
