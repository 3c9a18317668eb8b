"""The close probe's timeline and its classification: what kind of close it was, who is left
in TIME-WAIT, how long each step took, and the result that says so.

The state machine (``prober.core.close``) marks the events as they happen, by the segment log's
references (``Ref``); the timings are taken between those segments' stamps when the result is
built, so a late kernel TX stamp still improves them.

Who holds TIME-WAIT (RFC 9293 §3.6): the side that sent the first FIN. prober observes its own
TIME-WAIT (it holds it, for 2 MSL). The peer's it cannot observe: that the peer closed first
says TIME-WAIT is the peer's to hold, not that its kernel kept one. Linux keeps none once
``net.ipv4.tcp_max_tw_buckets`` TIME-WAIT sockets exist (it counts
``TcpExtTCPTimeWaitOverflow`` instead), and other stacks have their own limits; so the result
says whose TIME-WAIT it is (``time_wait_due``) and where to look on the peer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prober.core.close_receive import ReceiveStats
from prober.core.states import TcpState
from prober.core.strays import IcmpReply, Stray, notice_json, stray_json
from prober.core.timing import Clock, Rtt
from prober.core.trace import Ref, SegmentLog, SegmentRecord

# What to run on the peer to see whether it kept the TIME-WAIT that was its to hold.
PEER_TIME_WAIT_CHECK = "ss -tan state time-wait; nstat -az TcpExtTCPTimeWaitOverflow"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class CloseMode(StrEnum):
    WE_CLOSE = "we-close"  # we send the first FIN: the active close, we hold TIME-WAIT
    PEER_CLOSES = "peer-closes"  # we wait for the peer's FIN: the passive close


class Handshake(StrEnum):
    OPEN = "open"  # SYN/ACK acking ISN+1
    CLOSED = "closed"  # RST acking ISN+1
    FILTERED = "filtered"  # ICMP destination unreachable quoting our SYN (no other ICMP error)
    EXPIRED = "expired"  # ICMP time exceeded: the SYN died on the way
    NO_ANSWER = "no-answer"  # nothing until handshake_timeout
    SEND_FAILED = "send-failed"  # the SYN could not be sent
    INTERRUPTED = "interrupted"  # interrupt() during the handshake


class CloseKind(StrEnum):
    FOUR_WAY = "four-way"  # our FIN, its ACK, its FIN, our ACK
    THREE_WAY = "three-way"  # our FIN, its FIN that ACKs ours, our ACK
    SIMULTANEOUS = "simultaneous"  # its FIN came before it had acked ours
    PEER_FIRST = "peer-first"  # its FIN came before ours: we were the passive closer
    RESET = "reset"  # a RST from the peer ended the connection before its FIN
    INCOMPLETE = "incomplete"  # max_wait (or our retransmissions) ran out before its FIN
    INTERRUPTED = "interrupted"  # interrupt() before its FIN
    NOT_ESTABLISHED = "not-established"  # the handshake did not complete


class FinRetransmissionsEnd(StrEnum):
    """How the peer's retransmissions of an unacknowledged FIN (drop_final_ack) ended."""

    RESET = "reset"  # the peer sent a RST
    SILENCE = "silence"  # no FIN for 2.5x the last interval + 1 s: it gave up silently
    MAX_WAIT = "max-wait"  # max_wait ran out first
    INTERRUPTED = "interrupted"


class TimeWaitDue(StrEnum):
    """Whose TIME-WAIT it is, from who sent the first FIN (not whether the peer kept it)."""

    US = "us"  # we closed first: we hold it (observed: ``time_wait_held_us``)
    PEER = "peer"  # the peer closed first: it is the peer's to hold
    BOTH = "both"  # the FINs crossed: each side passes CLOSING into TIME-WAIT


@dataclass(frozen=True, slots=True)
class FinRetransmission:
    """One retransmission of the peer's FIN, timed on the segment log's clock."""

    time_since_first_us: float  # since the first copy of the FIN arrived
    interval_us: float  # since the previous copy

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_since_first_us": round(self.time_since_first_us, 3),
            "interval_us": round(self.interval_us, 3),
        }


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the SYN/ACK agreed to (our SYN always offers MSS, SACK, timestamps and WS 7)."""

    mss: int  # the peer's MSS option, or the RFC default when absent
    window_scale: int | None  # the peer's shift; None when scaling is off
    sack_permitted: bool
    timestamps: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "mss": self.mss,
            "window_scale": self.window_scale,
            "sack_permitted": self.sack_permitted,
            "timestamps": self.timestamps,
        }


@dataclass(frozen=True, slots=True)
class CloseResult:
    """The outcome of one close probe.

    ``to_dict()`` gives (keys are stable):

    - ``type``: ``"close"``; ``target``, ``port``, ``source``, ``source_port``;
      ``mode``: ``"we-close"`` | ``"peer-closes"``; ``drop_final_ack``: bool.
    - ``handshake``: ``"open"`` | ``"closed"`` | ``"filtered"`` | ``"expired"`` |
      ``"no-answer"`` | ``"send-failed"`` | ``"interrupted"``; ``handshake_rtt_us`` and
      ``handshake_rtt_clock`` (``"kernel"`` | ``"user"``) from the SYN the SYN/ACK answers
      (matched by TSecr when the SYN was retransmitted, else the last SYN);
      ``syn_retransmissions``; ``icmp``: ``{icmp_version, type, code, source, ttl}`` or None;
      ``negotiated``: ``{mss, window_scale, sack_permitted, timestamps}`` or None.
    - ``close_kind``: ``"four-way"`` | ``"three-way"`` | ``"simultaneous"`` |
      ``"peer-first"`` | ``"reset"`` | ``"incomplete"`` | ``"interrupted"`` |
      ``"not-established"`` (decided when the peer's FIN arrives, or by what ended the
      connection before it).
    - ``half_close``: the peer sent data after our FIN; ``bytes_after_our_fin``.
    - Timings in microseconds on ``clock`` (the segment log's clock: ``"kernel"`` when every
      segment has a kernel stamp, else ``"user"``), None when the events did not happen:
      ``our_fin_to_peer_ack_us`` (our first FIN → the first segment acking it),
      ``our_fin_to_peer_fin_us``, ``peer_ack_to_peer_fin_us`` (negative in a simultaneous
      close: its FIN came first), and for a peer-first close ``peer_fin_to_our_ack_us`` and
      ``our_ack_to_our_fin_us`` (its FIN → our ACK → our FIN; our FIN → its ACK is
      ``our_fin_to_peer_ack_us``).
    - ``our_fin_retransmissions``: int.
    - ``peer_fin_retransmissions``: ``[{time_since_first_us, interval_us}]``, every further
      copy of the peer's FIN; ``peer_fin_retransmissions_end``: ``"reset"`` | ``"silence"`` |
      ``"max-wait"`` | ``"interrupted"`` | None (set with drop_final_ack only).
    - ``time_wait_due``: ``"us"`` | ``"peer"`` | ``"both"`` | None: whose TIME-WAIT it is,
      from who closed first (the peer's is not observed: see ``PEER_TIME_WAIT_CHECK``);
      ``time_wait_held_us``: how long we held it (monotonic clock), None if we did not;
      ``time_wait_cut_short``: interrupted (or reset) before 2 MSL; ``time_wait_skipped``:
      ``no_wait`` ended the probe on entering it.
    - ``our_final_state``, ``peer_final_state`` (inferred): TCP state names when the probe
      ended (``"TIME-WAIT"`` when we skipped or cut it short).
    - ``bytes_sent`` (of ``send_data``), ``bytes_acked``, ``bytes_received`` (every byte
      delivered in order). The received bytes themselves (the first ``receive.kept_bytes``)
      are the ``received`` attribute, not in the dict.
    - ``receive``: ``ReceiveStats.to_dict()``: the window (the cap on buffered out-of-order
      bytes), the buffer's high-water mark, and what was dropped outside the window.
    - ``invalid``: how many packets were not part of the conversation; ``invalid_by_kind``:
      ``{stray kind: count}`` (``prober.core.strays.Stray``; the ICMP types and codes of
      ``icmp-after-answer`` are in ``notes``); ``notices``: ICMP messages quoting the
      conversation that are not errors of reachability, ``icmp_notices``: the first of them;
      ``answers_rate_limited``: challenge and out-of-window ACKs
      not sent (RFC 5961 §7); ``unrecorded_segments``: bulk data segments, their ACKs and
      strays beyond the log's limits (counted, not in ``segments``); ``failed_sends``.
    - ``interrupted``: bool; ``error``: why a segment could not be sent, or None;
      ``notes``: list of strings; ``segments``: list of ``SegmentRecord.to_dict()`` (a send
      that failed has ``send_error`` set and is not in the pcap).
    """

    target: str
    port: int
    source: str
    source_port: int
    mode: CloseMode
    drop_final_ack: bool
    handshake: Handshake
    handshake_rtt: Rtt | None
    syn_retransmissions: int
    icmp: IcmpReply | None
    negotiated: Negotiated | None
    close_kind: CloseKind
    half_close: bool
    bytes_after_our_fin: int
    clock: Clock | None
    our_fin_to_peer_ack_us: float | None
    our_fin_to_peer_fin_us: float | None
    peer_ack_to_peer_fin_us: float | None
    peer_fin_to_our_ack_us: float | None
    our_ack_to_our_fin_us: float | None
    our_fin_retransmissions: int
    peer_fin_retransmissions: tuple[FinRetransmission, ...]
    peer_fin_retransmissions_end: FinRetransmissionsEnd | None
    time_wait_due: TimeWaitDue | None
    time_wait_held_us: float | None
    time_wait_cut_short: bool
    time_wait_skipped: bool
    our_final_state: TcpState
    peer_final_state: TcpState
    bytes_sent: int
    bytes_acked: int
    received: bytes
    interrupted: bool
    error: str | None
    notes: tuple[str, ...]
    segments: tuple[SegmentRecord, ...]
    receive: ReceiveStats | None = None
    invalid_by_kind: dict[Stray, int] = field(default_factory=dict)
    answers_rate_limited: int = 0
    unrecorded_segments: int = 0
    failed_sends: int = 0
    notices: int = 0
    icmp_notices: tuple[IcmpReply, ...] = ()

    @property
    def bytes_received(self) -> int:
        """Every byte the peer delivered in order (``received`` keeps the first of them)."""
        return self.receive.delivered_bytes if self.receive is not None else len(self.received)

    @property
    def invalid(self) -> int:
        """Packets on the 4-tuple that were not part of the conversation."""
        return sum(self.invalid_by_kind.values())

    def to_dict(self) -> dict[str, Any]:
        rtt = self.handshake_rtt
        return {
            "type": "close",
            "target": self.target,
            "port": self.port,
            "source": self.source,
            "source_port": self.source_port,
            "mode": self.mode.value,
            "drop_final_ack": self.drop_final_ack,
            "handshake": self.handshake.value,
            "handshake_rtt_us": None if rtt is None else round(rtt.us, 3),
            "handshake_rtt_clock": None if rtt is None else rtt.clock.value,
            "syn_retransmissions": self.syn_retransmissions,
            "icmp": None if self.icmp is None else self.icmp.to_dict(),
            "negotiated": None if self.negotiated is None else self.negotiated.to_dict(),
            "close_kind": self.close_kind.value,
            "half_close": self.half_close,
            "bytes_after_our_fin": self.bytes_after_our_fin,
            "clock": None if self.clock is None else self.clock.value,
            "our_fin_to_peer_ack_us": _round(self.our_fin_to_peer_ack_us),
            "our_fin_to_peer_fin_us": _round(self.our_fin_to_peer_fin_us),
            "peer_ack_to_peer_fin_us": _round(self.peer_ack_to_peer_fin_us),
            "peer_fin_to_our_ack_us": _round(self.peer_fin_to_our_ack_us),
            "our_ack_to_our_fin_us": _round(self.our_ack_to_our_fin_us),
            "our_fin_retransmissions": self.our_fin_retransmissions,
            "peer_fin_retransmissions": [r.to_dict() for r in self.peer_fin_retransmissions],
            "peer_fin_retransmissions_end": (
                None
                if self.peer_fin_retransmissions_end is None
                else self.peer_fin_retransmissions_end.value
            ),
            "time_wait_due": None if self.time_wait_due is None else self.time_wait_due.value,
            "time_wait_held_us": _round(self.time_wait_held_us),
            "time_wait_cut_short": self.time_wait_cut_short,
            "time_wait_skipped": self.time_wait_skipped,
            "our_final_state": self.our_final_state.value,
            "peer_final_state": self.peer_final_state.value,
            "bytes_sent": self.bytes_sent,
            "bytes_acked": self.bytes_acked,
            "bytes_received": self.bytes_received,
            "interrupted": self.interrupted,
            "error": self.error,
            "notes": list(self.notes),
            "receive": None if self.receive is None else self.receive.to_dict(),
            **stray_json(self.invalid_by_kind),
            **notice_json(self.notices, self.icmp_notices),
            "answers_rate_limited": self.answers_rate_limited,
            "unrecorded_segments": self.unrecorded_segments,
            "failed_sends": self.failed_sends,
            "segments": [s.to_dict() for s in self.segments],
        }


def classify_peer_fin(
    *, our_fin_sent: bool, acks_our_fin: bool, acked_before: bool
) -> CloseKind:
    """The kind of close the peer's first FIN makes.

    ``acks_our_fin``: the FIN's segment acks our FIN; ``acked_before``: an earlier segment did.
    """
    if not our_fin_sent:
        return CloseKind.PEER_FIRST
    if acks_our_fin:
        return CloseKind.FOUR_WAY if acked_before else CloseKind.THREE_WAY
    return CloseKind.SIMULTANEOUS


@dataclass(frozen=True, slots=True)
class CloseTimings:
    """The result's ``*_us`` timings (see ``CloseResult``), None where an event is missing."""

    our_fin_to_peer_ack_us: float | None
    our_fin_to_peer_fin_us: float | None
    peer_ack_to_peer_fin_us: float | None
    peer_fin_to_our_ack_us: float | None
    our_ack_to_our_fin_us: float | None


@dataclass(slots=True)
class Timeline:
    """The segments the close's timings are taken between, as the probe marks them."""

    our_fin: Ref | None = None
    peer_ack_of_fin: Ref | None = None
    peer_fin: Ref | None = None
    our_ack_of_peer_fin: Ref | None = None
    peer_fin_copies: list[Ref] = field(default_factory=list)

    def timings(self, log: SegmentLog, kind: CloseKind | None) -> CloseTimings:
        """The result's ``*_us`` timings, on the log's clock."""
        between = log.elapsed_us
        peer_first = kind is CloseKind.PEER_FIRST
        return CloseTimings(
            our_fin_to_peer_ack_us=between(self.our_fin, self.peer_ack_of_fin),
            our_fin_to_peer_fin_us=None if peer_first else between(self.our_fin, self.peer_fin),
            peer_ack_to_peer_fin_us=(
                None if peer_first else between(self.peer_ack_of_fin, self.peer_fin)
            ),
            peer_fin_to_our_ack_us=(
                between(self.peer_fin, self.our_ack_of_peer_fin) if peer_first else None
            ),
            our_ack_to_our_fin_us=(
                between(self.our_ack_of_peer_fin, self.our_fin) if peer_first else None
            ),
        )

    def fin_retransmissions(self, log: SegmentLog) -> tuple[FinRetransmission, ...]:
        copies = self.peer_fin_copies
        return tuple(
            FinRetransmission(
                time_since_first_us=log.elapsed_us(copies[0], copies[i]) or 0.0,
                interval_us=log.elapsed_us(copies[i - 1], copies[i]) or 0.0,
            )
            for i in range(1, len(copies))
        )


def time_wait_due(*, we_entered: bool, peer_entered: bool) -> TimeWaitDue | None:
    """Whose TIME-WAIT it is, from the states each side passed through (the peer's inferred)."""
    if we_entered and peer_entered:
        return TimeWaitDue.BOTH
    if we_entered:
        return TimeWaitDue.US
    if peer_entered:
        return TimeWaitDue.PEER
    return None
