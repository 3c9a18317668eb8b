"""Half-open connections: how long a peer keeps a request we never complete.

A sans-IO probe in the style of ``prober.core.syn.SynProbe`` (start/receive/handle_timer/
next_deadline/segments_to_send/sent/send_kernel_stamp/send_failed/done/result), driven by
the engine; what it shares with the cookie check (the embedded SynProbe, the segment log, our
RST, the rules for stray packets) is in ``prober.core.handshake_conversation``.

The theory, for a Linux peer (net/ipv4/inet_connection_sock.c, tcp_minisocks.c):

- A listener that answers a SYN keeps a *request* (SYN-RECEIVED) and retransmits its SYN/ACK
  until the handshake's final ACK comes: after 1 s (TCP_TIMEOUT_INIT), then at doubling
  intervals (1, 2, 4, 8, 16 s, capped at TCP_RTO_MAX = 120 s), ``tcp_synack_retries`` times
  (default 5: retransmissions at 1, 3, 7, 15 and 31 s); the request is dropped silently at the
  next expiry (63 s). Every retransmission repeats the first SYN/ACK's sequence number. Other
  stacks start at 3 s or 6 s and cap at 64 s (``prober.core.synack_schedules``).
- ``HalfOpenProbe`` sends one SYN and never the ACK (the engine drops the local kernel's
  RSTs, which would otherwise free the request at once: the classic half-open scan) and
  records every SYN/ACK with the first one's sequence number. After each it waits for the
  silence no known schedule explains (``silence_needed``: 9.5 s after the first SYN/ACK, then
  1.5 x twice the last interval + 0.5 s); nothing by then means the peer gave up. A watch
  that ``max_wait`` or an interrupt ends earlier says why no conclusion was safe (``caveat``)
  and leaves "the peer gave up" unknown. Then it sends a RST with seq = ISN+1 (in the
  request's window: ``tcp_check_req`` drops the request) unless told to leave it open.
- A SYN/ACK with another sequence number (a flood, a spoofed copy) is no retransmission: it
  is counted as invalid with every other stray packet, and never moves the schedule.
- With SYN cookies (RFC 4987) the peer keeps no request, so it never retransmits; that alone
  is weak evidence. ``prober.core.cookie_check`` has the TSval test and
  ``prober.core.cookie_verdict`` the rules that weigh both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from typing import Any, Final

# Re-exported: the public names of the half-open command live here for api, cli, output, tests.
from prober.core.cookie_check import (
    DEFAULT_FIRST_SYN,
    DEFAULT_SECOND_SYN,
    CookieCheckProbe,
    CookieEvidence,
    CookieOptions,
    CookieVerdict,
    cookie_option_encoding,
    cookie_timestamp,
    judge_timestamps,
    mod64_distance,
)
from prober.core.cookie_verdict import (
    KERNEL_RST_COOKIE_VERDICT,
    CookieAnswer,
    CookieClue,
    SynCookieVerdict,
    combine_cookie_evidence,
    judge_cookies,
)
from prober.core.handshake_conversation import HandshakeConversation, tsval_at
from prober.core.packets import TcpTemplate
from prober.core.states import TcpEvent, TcpState, transition
from prober.core.strays import STRAY_DESCRIPTIONS, IcmpReply, Stray, notice_json, stray_json
from prober.core.syn import PortState, Reason, SynProbe, TcpReply
from prober.core.synack_schedules import (
    DEFAULT_MAX_WAIT,
    KNOWN_STACKS,
    LARGEST_FIRST_S,
    SynAckSchedule,
    silence_needed,
    unsafe_caveat,
)
from prober.core.timing import Clock, Rtt, Stamp
from prober.core.trace import SegmentRecord
from prober.core.wire import Packet, TcpFlags, TcpSegment

__all__ = [
    "DEFAULT_FIRST_SYN",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_SECOND_SYN",
    "KERNEL_RST_COOKIE_VERDICT",
    "KNOWN_STACKS",
    "LARGEST_FIRST_S",
    "STRAY_DESCRIPTIONS",
    "CookieAnswer",
    "CookieCheckProbe",
    "CookieClue",
    "CookieEvidence",
    "CookieOptions",
    "CookieVerdict",
    "EndedBy",
    "HalfOpenProbe",
    "HalfOpenResult",
    "Stray",
    "SynAckArrival",
    "SynAckSchedule",
    "SynCookieVerdict",
    "combine_cookie_evidence",
    "cookie_option_encoding",
    "cookie_timestamp",
    "judge_cookies",
    "judge_timestamps",
    "mod64_distance",
    "tsval_at",
]

# Linux's tcp_synack_retries accepts up to 255; with path duplicates, more copies than this
# are a replay, counted but not kept.
MAX_ARRIVALS: Final = 300


class EndedBy(StrEnum):
    """Why a half-open probe stopped watching."""

    SILENCE = "silence"  # no SYN/ACK when the next was due: the peer gave up
    RST = "rst"  # the peer reset the request
    MAX_WAIT = "max-wait"  # our own limit came first
    INTERRUPTED = "interrupted"
    NO_SYN_ACK = "no-syn-ack"  # RST, ICMP error, silence or a send failure before any SYN/ACK



@dataclass(frozen=True, slots=True)
class SynAckArrival:
    """One SYN/ACK of a half-open conversation; times are on the segment log's clock."""

    number: int  # 0 = the original, then 1, 2, ... in order of arrival
    time_ns: int  # CLOCK_REALTIME of the arrival (kernel stamp when the log has them all)
    since_first_us: float
    interval_us: float | None  # since the previous SYN/ACK; None for the first
    seq: int
    tsval: int | None
    window: int
    options: str  # TcpOptions.order, e.g. "MSTNW"
    retransmission: bool  # repeats the first SYN/ACK's seq (and is not a duplicate)
    duplicate: bool = False  # same seq and TSval as the one before: a copy made on the path

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "time_ns": self.time_ns,
            "since_first_us": round(self.since_first_us, 3),
            "interval_us": None if self.interval_us is None else round(self.interval_us, 3),
            "seq": self.seq,
            "tsval": self.tsval,
            "window": self.window,
            "options": self.options,
            "retransmission": self.retransmission,
            "duplicate": self.duplicate,
        }

@dataclass(frozen=True, slots=True)
class HalfOpenResult:
    """The outcome of a ``HalfOpenProbe``.

    ``to_dict`` keys (stable): type ("halfopen"), probe, target, port, source, source_port,
    state and reason (of the first answer, as ``prober syn`` reports them), rtt_us and
    rtt_clock (SYN to first SYN/ACK), sent_ns (the SYN, on the RTT's clock), tcp and icmp
    (the first answer, ``TcpReply``/``IcmpReply.to_dict``), syn_acks (``SynAckArrival.to_dict``
    each), clock (of syn_acks' and segments' time_ns: "kernel" or "user"; None without
    segments), retransmissions, ended_by (``EndedBy``), ended_after_s (SYN to the end,
    monotonic), last_syn_ack_after_us (last SYN/ACK since the first; None without any),
    peer_gave_up ("yes": silence past the rule or a RST; "unknown": the watch ended before a
    conclusion was safe; None without a SYN/ACK), caveat (why it was not safe, or None),
    silence_needed_s (the silence after the last SYN/ACK the rule asks for; None without a
    SYN/ACK), invalid (packets that proved nothing) and invalid_by_kind (``Stray`` value:
    count), notices and icmp_notices (ICMP messages quoting our segments that decide nothing,
    and the first of them; ``prober.core.strays``), rst_sent (our RST that frees the peer's
    request went out), leave_open,
    peer_state (the peer's inferred state at the end), late (valid answers after the end),
    cookies (``SynCookieVerdict.to_dict``), cookie_check (``CookieEvidence.to_dict`` or None),
    segments (``SegmentRecord.to_dict`` each), error (why a segment could not be sent).
    """

    probe: int
    target: str
    port: int
    source: str
    source_port: int
    state: PortState
    reason: Reason
    rtt: Rtt | None
    sent_ns: int | None
    tcp: TcpReply | None
    icmp: IcmpReply | None
    syn_acks: tuple[SynAckArrival, ...]
    clock: Clock | None
    retransmissions: int
    ended_by: EndedBy
    ended_after_s: float | None
    last_syn_ack_after_us: float | None
    peer_gave_up: CookieAnswer | None
    caveat: str | None
    silence_needed_s: float | None
    invalid_by_kind: dict[Stray, int]
    rst_sent: bool
    leave_open: bool
    peer_state: TcpState
    late: int
    cookies: SynCookieVerdict
    cookie_check: CookieEvidence | None
    segments: tuple[SegmentRecord, ...]
    error: str | None = None
    notices: int = 0
    icmp_notices: tuple[IcmpReply, ...] = ()

    @property
    def invalid(self) -> int:
        """Packets on the conversation's 4-tuple that proved nothing (see ``Stray``)."""
        return sum(self.invalid_by_kind.values())

    def with_cookie_check(
        self, evidence: CookieEvidence | None, *, kernel_rst: bool = False
    ) -> HalfOpenResult:
        """This result with a cookie check's evidence attached and the verdict recombined
        (``judge_cookies``; with ``kernel_rst`` nothing is judged)."""
        return replace(
            self,
            cookie_check=evidence,
            cookies=judge_cookies(self, evidence, kernel_rst=kernel_rst),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "halfopen",
            "probe": self.probe,
            "target": self.target,
            "port": self.port,
            "source": self.source,
            "source_port": self.source_port,
            "state": self.state.value,
            "reason": self.reason.value,
            "rtt_us": None if self.rtt is None else round(self.rtt.us, 3),
            "rtt_clock": None if self.rtt is None else self.rtt.clock.value,
            "sent_ns": self.sent_ns,
            "tcp": None if self.tcp is None else self.tcp.to_dict(),
            "icmp": None if self.icmp is None else self.icmp.to_dict(),
            "syn_acks": [a.to_dict() for a in self.syn_acks],
            "clock": None if self.clock is None else self.clock.value,
            "retransmissions": self.retransmissions,
            "ended_by": self.ended_by.value,
            "ended_after_s": None if self.ended_after_s is None else round(self.ended_after_s, 6),
            "last_syn_ack_after_us": (
                None
                if self.last_syn_ack_after_us is None
                else round(self.last_syn_ack_after_us, 3)
            ),
            "peer_gave_up": None if self.peer_gave_up is None else self.peer_gave_up.value,
            "caveat": self.caveat,
            "silence_needed_s": (
                None if self.silence_needed_s is None else round(self.silence_needed_s, 6)
            ),
            **stray_json(self.invalid_by_kind),
            **notice_json(self.notices, self.icmp_notices),
            "rst_sent": self.rst_sent,
            "leave_open": self.leave_open,
            "peer_state": self.peer_state.value,
            "late": self.late,
            "cookies": self.cookies.to_dict(),
            "cookie_check": None if self.cookie_check is None else self.cookie_check.to_dict(),
            "segments": [s.to_dict() for s in self.segments],
            "error": self.error,
        }


class HalfOpenPhase(Enum):
    IDLE = "idle"
    WAITING = "waiting"  # for the first answer
    WATCHING = "watching"  # SYN/ACKs, until the peer gives up
    DONE = "done"


@dataclass(slots=True)
class _Arrival:
    number: int
    position: int  # in the segment log
    segment: TcpSegment
    retransmission: bool
    duplicate: bool


class HalfOpenProbe(HandshakeConversation):
    """One SYN, never the ACK: every SYN/ACK the peer sends until it gives up.

    Args:
        template: the SYN template (Linux options: ``TcpTemplate(version, TcpFlags.SYN)``).
        src, dst: packed addresses; sport, dport: ports.
        isn: our keyed ISN (``IsnKey``).
        syn_timeout: seconds to wait for the first answer (then: filtered, no-response).
        max_wait: seconds from the SYN after which the probe stops watching ("max-wait").
        first_interval: the latest first retransmission to allow for before concluding that
            the peer gave up (default: the largest of ``KNOWN_STACKS``, 6 s; pass 1.0 only
            for a peer known to follow Linux's or RFC 6298's schedule).
        leave_open: send no RST at the end; the peer keeps the request until it gives up.
        rst_template: the RST template (default: a bare IPv4/IPv6 RST, TTL 64).
        number: the probe's number within its run.

    The engine must drop the local kernel's RSTs on this 4-tuple for the whole conversation
    (``Engine.suppress_rsts``): a kernel RST frees the peer's request at the first SYN/ACK.
    Segments: 0 = the SYN, then the RST (if any).
    """

    __slots__ = (
        "_arrivals",
        "_deadline",
        "_ended_at",
        "_ended_by",
        "_last_arrival_at",
        "_last_interval",
        "_max_at",
        "_silence_at",
        "_started_at",
        "first_interval",
        "max_wait",
        "phase",
        "syn_timeout",
    )

    def __init__(
        self,
        *,
        template: TcpTemplate,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        isn: int,
        syn_timeout: float = 1.0,
        max_wait: float = DEFAULT_MAX_WAIT,
        first_interval: float = LARGEST_FIRST_S,
        leave_open: bool = False,
        rst_template: TcpTemplate | None = None,
        number: int = 1,
    ) -> None:
        for name, value in (
            ("syn_timeout", syn_timeout),
            ("max_wait", max_wait),
            ("first_interval", first_interval),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value}")
        syn = SynProbe(
            number=number,
            template=template,
            src=src,
            dst=dst,
            sport=sport,
            dport=dport,
            isn=isn,
            timeout=min(syn_timeout, max_wait),
        )
        super().__init__(syn, rst_template, leave_open)
        self.syn_timeout = syn_timeout
        self.max_wait = max_wait
        self.first_interval = first_interval
        self.phase = HalfOpenPhase.IDLE
        self._arrivals: list[_Arrival] = []
        self._deadline: float | None = None
        self._silence_at: float | None = None
        self._max_at: float | None = None
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._ended_by: EndedBy | None = None
        self._last_arrival_at: float | None = None
        self._last_interval: float | None = None  # between the last two SYN/ACKs

    # -- inputs -------------------------------------------------------------------------
    def start(self, now: float) -> None:
        if self.phase is not HalfOpenPhase.IDLE:
            raise RuntimeError("probe already started")
        self._started_at = now
        self._max_at = now + self.max_wait
        self._queue_syn(now)
        self._deadline = self._syn.next_deadline()
        self.phase = HalfOpenPhase.WAITING

    def receive(self, packet: Packet, now: float, stamp: Stamp) -> bool:
        """Offer a packet routed to this 4-tuple; True if it belongs to this conversation."""
        if self.phase is HalfOpenPhase.IDLE:
            return False
        self._last_now = now
        if self._deadline is not None and now >= self._deadline:
            self.handle_timer(now)  # the deadline came first: this packet is late
        if self._take_notice(packet):
            return True
        if not self._validate(packet, now, stamp):
            return False
        tcp = packet.tcp
        if self.phase is HalfOpenPhase.WAITING:
            if self._syn.result().reason is Reason.SYN_ACK:
                self._syn_ack(packet, now, stamp)
            else:
                if tcp is not None:  # RST: nothing listens
                    self._our_state = transition(self._our_state, TcpEvent.RECEIVE_RST)
                    self._peer_state = TcpState.CLOSED
                    self._log_received(packet, stamp)
                self._end(EndedBy.NO_SYN_ACK, now)
        elif self.phase is HalfOpenPhase.WATCHING:
            if tcp is None:
                pass  # not reached: ICMP after the SYN/ACK is a stray (_validate)
            elif tcp.flags & TcpFlags.RST:
                self._our_state = transition(self._our_state, TcpEvent.RECEIVE_RST)
                self._peer_state = transition(self._peer_state, TcpEvent.SEND_RST)
                self._log_received(packet, stamp, "the peer reset its request")
                self._end(EndedBy.RST, now)
            elif len(self._arrivals) >= MAX_ARRIVALS:
                return self._stray(Stray.TOO_MANY, packet, stamp)
            else:
                self._syn_ack(packet, now, stamp)
        else:
            self._late_answer(packet, stamp)
        return True

    def handle_timer(self, now: float) -> None:
        self._last_now = now
        if self.phase is HalfOpenPhase.WAITING:
            self._syn.handle_timer(now)
            if self._syn.done:
                self._end(EndedBy.NO_SYN_ACK, now)
        elif self.phase is HalfOpenPhase.WATCHING:
            assert self._silence_at is not None and self._max_at is not None
            if now >= self._silence_at and self._silence_at <= self._max_at:
                self._end(EndedBy.SILENCE, now)
            elif now >= self._max_at:
                self._end(EndedBy.MAX_WAIT, now)

    def interrupt(self, now: float | None = None) -> None:
        """Stop watching (Ctrl-C); after a SYN/ACK the RST is queued: ``Engine.poke`` it."""
        if self.phase is HalfOpenPhase.DONE:
            return
        if self.phase is not HalfOpenPhase.WATCHING:
            self._syn.interrupt()
        self._end(EndedBy.INTERRUPTED, self._last_now if now is None else now)

    # -- outputs ------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        if self.phase is HalfOpenPhase.WAITING or self.phase is HalfOpenPhase.WATCHING:
            return self._deadline
        return None

    @property
    def done(self) -> bool:
        return self.phase is HalfOpenPhase.DONE

    @property
    def ended_by(self) -> EndedBy | None:
        return self._ended_by

    def arrivals(self) -> tuple[SynAckArrival, ...]:
        """The SYN/ACKs so far (for live output); times on the log's clock as of now."""
        return self._arrival_results(self._records())

    def result(self) -> HalfOpenResult:
        """The outcome; take it again after late TX timestamps to get kernel times."""
        if self._ended_by is None:
            raise RuntimeError("probe has not ended yet")
        first = self._syn.result()
        records = self._records()
        arrivals = self._arrival_results(records)
        ended_after = (
            None
            if self._ended_at is None or self._started_at is None
            else self._ended_at - self._started_at
        )
        retransmissions = sum(1 for a in arrivals if a.retransmission)
        gave_up, caveat, needed = self._gave_up(retransmissions)
        return HalfOpenResult(
            probe=first.probe,
            target=first.target,
            port=first.port,
            source=first.source,
            source_port=first.source_port,
            state=first.state,
            reason=first.reason,
            rtt=first.rtt,
            sent_ns=first.sent_ns,
            tcp=first.tcp,
            icmp=first.icmp,
            syn_acks=arrivals,
            clock=records[0].clock if records else None,
            retransmissions=retransmissions,
            ended_by=self._ended_by,
            ended_after_s=ended_after,
            last_syn_ack_after_us=arrivals[-1].since_first_us if arrivals else None,
            peer_gave_up=gave_up,
            caveat=caveat,
            silence_needed_s=needed,
            invalid_by_kind=self.strays(),
            rst_sent=self._rst_sent,
            leave_open=self.leave_open,
            peer_state=self._peer_state,
            late=self._late,
            cookies=SynCookieVerdict(CookieAnswer.UNKNOWN, ()),
            cookie_check=None,
            segments=records,
            error=self._error,
            notices=self._notices.count,
            icmp_notices=self._notices.kept(),
        ).with_cookie_check(None)  # the retransmission evidence alone

    def _gave_up(
        self, retransmissions: int
    ) -> tuple[CookieAnswer | None, str | None, float | None]:
        """Did the peer give up, why the answer is unknown, and the silence the rule needs."""
        if not self._arrivals:
            return None, None, None
        needed = self._silence_needed()
        if self._ended_by is EndedBy.SILENCE or self._ended_by is EndedBy.RST:
            return CookieAnswer.YES, None, needed
        waited = 0.0
        if self._ended_at is not None and self._last_arrival_at is not None:
            waited = max(0.0, self._ended_at - self._last_arrival_at)
        caveat = unsafe_caveat(waited, retransmissions, self._last_interval, needed)
        return CookieAnswer.UNKNOWN, caveat, needed

    # -- internals ----------------------------------------------------------------------
    def _send_failure(self, index: int, error: str) -> None:
        if index == 0:  # the SYN: SynProbe reports send-failed
            self._end(EndedBy.NO_SYN_ACK, self._last_now)

    def _accepts_syn_ack(self, tcp: TcpSegment) -> bool:
        # Every retransmission of the request repeats the first SYN/ACK's seq; another seq
        # (a flood, a spoofed copy) is not the request's and must not move the schedule.
        return self._log.peer_isn is None or tcp.seq == self._log.peer_isn

    def _syn_ack(self, packet: Packet, now: float, stamp: Stamp) -> None:
        tcp = packet.tcp
        assert tcp is not None
        first = not self._arrivals
        previous = None if first else self._arrivals[-1].segment
        duplicate = retransmission = False
        note = ""
        if first:
            self._log.peer_isn = tcp.seq
            self._peer_isns.add(tcp.seq)
        elif (
            previous is not None
            and tcp.options.timestamp is not None
            and previous.options.timestamp == tcp.options.timestamp
        ):
            duplicate, note = True, "duplicate"
        else:
            retransmission, note = True, "retransmission"
        # The peer got our SYN and answered: it holds a request (SYN-RECEIVED). We stay in
        # SYN-SENT, since the ACK that would take us to ESTABLISHED is never sent.
        self._peer_state = transition(TcpState.LISTEN, TcpEvent.RECEIVE_SYN)
        position = self._log_received(packet, stamp, note)
        self._arrivals.append(
            _Arrival(len(self._arrivals), position, tcp, retransmission, duplicate)
        )
        if duplicate:
            return  # a copy on the path says nothing about the peer's schedule
        if retransmission:
            assert self._last_arrival_at is not None
            self._last_interval = now - self._last_arrival_at
        self._last_arrival_at = now
        self._silence_at = now + self._silence_needed()
        assert self._max_at is not None
        self._deadline = min(self._silence_at, self._max_at)
        self.phase = HalfOpenPhase.WATCHING

    def _silence_needed(self) -> float:
        return silence_needed(self._last_interval, self.first_interval)

    def _end(self, ended_by: EndedBy, now: float | None) -> None:
        self.phase = HalfOpenPhase.DONE
        self._deadline = None
        self._ended_by = ended_by
        self._ended_at = now
        if ended_by is EndedBy.SILENCE:
            self._peer_state = TcpState.CLOSED  # it dropped the request
        if (
            self._arrivals
            and not self.leave_open
            and ended_by in (EndedBy.SILENCE, EndedBy.MAX_WAIT, EndedBy.INTERRUPTED)
        ):
            self._queue_rst("frees the peer's request")

    def _arrival_results(self, records: tuple[SegmentRecord, ...]) -> tuple[SynAckArrival, ...]:
        out: list[SynAckArrival] = []
        first_ns = previous_ns = None
        for arrival in self._arrivals:
            time_ns = records[arrival.position].time_ns
            if first_ns is None:
                first_ns = time_ns
            segment = arrival.segment
            timestamp = segment.options.timestamp
            out.append(
                SynAckArrival(
                    number=arrival.number,
                    time_ns=time_ns,
                    since_first_us=(time_ns - first_ns) / 1000.0,
                    interval_us=None if previous_ns is None else (time_ns - previous_ns) / 1000.0,
                    seq=segment.seq,
                    tsval=None if timestamp is None else timestamp[0],
                    window=segment.window,
                    options=segment.options.order,
                    retransmission=arrival.retransmission,
                    duplicate=arrival.duplicate,
                )
            )
            previous_ns = time_ns
        return tuple(out)

