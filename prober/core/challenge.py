"""RFC 5961 on an established connection: how the peer answers a RST in its window but not
at RCV.NXT, a RST outside its window, and a SYN, and how often it sends challenge ACKs.

STUB (interfaces only): the probe itself is being written; see the result types below.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prober.core.close_timeline import Handshake
from prober.core.trace import SegmentRecord


class ChallengeRole(StrEnum):
    """One question, on a connection of its own (a fresh source port)."""

    RST_IN_WINDOW = "rst-in-window"  # RST at RCV.NXT + 1: RFC 5961 §3.2 challenge ACK
    RST_OUT_OF_WINDOW = "rst-out-of-window"  # RST far outside the window: dropped silently
    SYN = "syn"  # a SYN in ESTABLISHED: RFC 5961 §4.2 challenge ACK (RFC 793: RST)
    RATE = "rate"  # SYNs every RATE_SPACING_S for RATE_SPAN_S: how often it answers


class ChallengeAnswer(StrEnum):
    CHALLENGE_ACK = "challenge-ack"  # an ACK of RCV.NXT, and the connection lives on
    RESET = "reset"  # the segment ended the connection (a RST answer, or dead afterwards)
    IGNORED = "ignored"  # no answer, and the connection still lives


@dataclass(frozen=True, slots=True)
class ChallengeConnection:
    """One role's connection: what it sent, what answered, every segment."""

    role: ChallengeRole
    source_port: int
    handshake: Handshake
    answer: ChallengeAnswer | None  # None: the answers do not decide (see ``evidence``)
    evidence: str
    # Indices into ``segments``: the probing segments we sent, and the peer's answers to them
    # (challenge ACKs, RSTs), and the liveness check and its answer when one was sent.
    probe_indices: tuple[int, ...]
    answer_indices: tuple[int, ...]
    # RATE only: arrival times (s, from the first probing segment) of the challenge ACKs.
    ack_times_s: tuple[float, ...]
    segments: tuple[SegmentRecord, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "source_port": self.source_port,
            "handshake": self.handshake.value,
            "answer": None if self.answer is None else self.answer.value,
            "evidence": self.evidence,
            "probe_indices": list(self.probe_indices),
            "answer_indices": list(self.answer_indices),
            "ack_times_s": list(self.ack_times_s),
            "notes": list(self.notes),
            "segments": [s.to_dict() for s in self.segments],
        }


@dataclass(frozen=True, slots=True)
class ChallengeResult:
    """The outcome of ``Prober.challenge``."""

    target: str
    port: int
    source: str
    connections: tuple[ChallengeConnection, ...]
    # RATE: the shortest interval between two challenge ACKs (None: fewer than two), how many
    # SYNs were sent and how many challenge ACKs came.
    min_interval_s: float | None
    rate_sent: int
    rate_answered: int
    interrupted: bool = False

    def connection(self, role: ChallengeRole) -> ChallengeConnection | None:
        return next((c for c in self.connections if c.role is role), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "challenge",
            "target": self.target,
            "port": self.port,
            "source": self.source,
            "min_interval_s": self.min_interval_s,
            "rate_sent": self.rate_sent,
            "rate_answered": self.rate_answered,
            "interrupted": self.interrupted,
            "connections": [c.to_dict() for c in self.connections],
        }
