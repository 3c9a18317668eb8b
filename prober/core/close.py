"""The close probe: one TCP connection in user space, from SYN to CLOSED, every segment logged.

A sans-IO state machine like ``SynProbe``: the engine calls ``start``, ``receive`` and
``handle_timer`` with the current time and carries out what the probe asks
(``segments_to_send``, ``next_deadline``); the probe never reads a clock or touches a socket.
The local kernel knows nothing of this connection; the engine suppresses its RSTs.

What one run does:

1. Handshake: a SYN with Linux's options, retransmitted on RTO (doubling) until
   ``handshake_timeout``. A SYN/ACK acking ISN+1 opens the connection; a RST acking ISN+1
   means the port is closed; an ICMP error quoting our 4-tuple and ISN ends it as filtered
   (or expired, for time exceeded); silence is no answer.
2. The options of the SYN/ACK decide the rest (RFC 7323): timestamps on every segment we
   send iff the SYN/ACK carried them (TSecr is TS.Recent); window scaling iff it carried WS
   (we always offer 7); the peer's MSS, less the option bytes, bounds our data segments.
3. Our data (``send_data``) goes out in MSS-sized segments within the peer's window, PSH on
   the last, retransmitted go-back-N from SND.UNA on RTO (doubling, ``max_retries`` at most).
4. The peer's data is reassembled in order; every data or FIN segment is answered at once
   with an ACK of RCV.NXT (no delayed ACK, so ladders are deterministic). Duplicates are
   re-ACKed, out-of-order segments buffered and answered with a duplicate ACK, segments
   outside the window ACKed and dropped (RFC 9293 §3.10.7.4). A RST counts only when its
   sequence number is exactly RCV.NXT; one elsewhere in the window draws a challenge ACK
   (RFC 5961 §3.2), any other is ignored.
5. Closing. Who sends the first FIN decides who holds TIME-WAIT (see ``prober.core.states``):
   - ``WE_CLOSE``: our FIN follows as soon as all our data is acknowledged. The peer may ACK
     it and send its FIN later (four-way), ACK it with its FIN (three-way), send its FIN
     before it has seen ours (simultaneous: both sides pass CLOSING and hold TIME-WAIT),
     send data first (half-close) or reset. We ACK its FIN and hold TIME-WAIT for 2 MSL,
     re-ACKing a retransmitted FIN (RFC 9293 §3.10.7.4, TIME-WAIT: and restarting 2 MSL).
   - ``PEER_CLOSES``: we wait for the peer's FIN, ACK it (CLOSE-WAIT), send ours (LAST-ACK)
     and are CLOSED at its ACK; the peer holds TIME-WAIT.
   - ``drop_final_ack``: the peer's FIN is never acknowledged: we behave as if it was lost.
     Each retransmission of that FIN is recorded until the peer gives up (a RST, or silence
     for 2.5 times its last retransmission interval plus 1 s, never beyond ``max_wait``);
     then our RST frees its state, unless it reset first.

State tracking: our side moves with ``states.transition``. The peer's side is inferred: what
we send, it receives (``states.mirrored``), and what it sends, it sent. Two inferences need
evidence from the segments themselves: a FIN that does not ack our FIN was sent before our
FIN arrived (simultaneous close: ESTABLISHED → FIN-WAIT-1 → CLOSING), and a retransmitted FIN
means our ACK of it was lost (the peer is back in the state its FIN left it in).

Times: deadlines use the monotonic ``now`` arguments; reported intervals between segments use
the segment log's stamps (kernel stamps when every segment has one).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from prober.core.packets import DEFAULT_MSS, TcpTemplate
from prober.core.parse import parse_packet
from prober.core.states import TcpEvent, TcpState, mirrored, transition
from prober.core.syn import IcmpReply
from prober.core.timing import Clock, Rtt, Stamp, rtt_between
from prober.core.trace import SegmentLog, SegmentRecord
from prober.core.wire import (
    ICMP_TIME_EXCEEDED_V4,
    ICMP_TIME_EXCEEDED_V6,
    ICMP_UNREACHABLE_V4,
    ICMP_UNREACHABLE_V6,
    Packet,
    TcpFlags,
    TcpSegment,
)

SEQ_MASK = 0xFFFFFFFF
OUR_WINDOW_SHIFT = 7  # the window scale our SYN offers (Linux's default for a 64 KiB+ buffer)
MAX_WINDOW_SHIFT = 14  # RFC 7323 §2.3: larger shifts are treated as 14
MAX_WINDOW_FIELD = 0xFFFF
# RFC 9293 §3.7.1 (IPv4) and RFC 8200 §5 (IPv6): what to assume when the SYN/ACK has no MSS.
DEFAULT_PEER_MSS = {4: 536, 6: 1220}
TIMESTAMP_OPTION_BYTES = 12  # NOP NOP TS: data segments shrink by it (RFC 6691)
# Give-up by silence under drop_final_ack: no FIN for SILENCE_FACTOR times the last
# retransmission interval plus SILENCE_SLACK seconds. Retransmission timers double, so the
# next FIN would come after twice the last interval; 2.5 times leaves room for jitter.
SILENCE_FACTOR = 2.5
SILENCE_SLACK = 1.0

_F = TcpFlags
_S = TcpState
_E = TcpEvent

# Our states in which segments of ours (data, FIN, or their retransmissions) may be due.
_CAN_SEND = frozenset({_S.ESTABLISHED, _S.CLOSE_WAIT, _S.FIN_WAIT_1, _S.CLOSING, _S.LAST_ACK})


class CloseMode(StrEnum):
    WE_CLOSE = "we-close"  # we send the first FIN: the active close, we hold TIME-WAIT
    PEER_CLOSES = "peer-closes"  # we wait for the peer's FIN: the passive close


class Handshake(StrEnum):
    OPEN = "open"  # SYN/ACK acking ISN+1
    CLOSED = "closed"  # RST acking ISN+1
    FILTERED = "filtered"  # ICMP destination unreachable (or another ICMP error)
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


class TimeWaitHolder(StrEnum):
    US = "us"
    PEER = "peer"
    BOTH = "both"  # simultaneous close: both sides pass CLOSING into TIME-WAIT


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


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


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
    - ``time_wait_holder``: ``"us"`` | ``"peer"`` | ``"both"`` | None;
      ``time_wait_held_us``: how long we held it (monotonic clock), None if we did not;
      ``time_wait_cut_short``: interrupted (or reset) before 2 MSL; ``time_wait_skipped``:
      ``no_wait`` ended the probe on entering it.
    - ``our_final_state``, ``peer_final_state`` (inferred): TCP state names when the probe
      ended (``"TIME-WAIT"`` when we skipped or cut it short).
    - ``bytes_sent`` (of ``send_data``), ``bytes_acked``, ``bytes_received``. The received
      bytes themselves are the ``received`` attribute, not in the dict.
    - ``interrupted``: bool; ``error``: why a segment could not be sent, or None;
      ``notes``: list of strings; ``segments``: list of ``SegmentRecord.to_dict()``.
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
    time_wait_holder: TimeWaitHolder | None
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

    @property
    def bytes_received(self) -> int:
        return len(self.received)

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
            "time_wait_holder": (
                None if self.time_wait_holder is None else self.time_wait_holder.value
            ),
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
            "segments": [s.to_dict() for s in self.segments],
        }


@lru_cache(maxsize=256)
def _template(
    version: int, flags: TcpFlags, ttl: int, window: int, timestamps: bool
) -> TcpTemplate:
    # Templates are immutable once built, and a probe needs the same handful each time:
    # share them, so a probe costs no Scapy build after the first of its kind.
    return TcpTemplate(
        version,
        flags,
        ttl=ttl,
        window=window,
        window_scale=OUR_WINDOW_SHIFT,
        timestamps=timestamps,
    )


def _delta(a: int, b: int) -> int:
    """``a - b`` in 32-bit sequence space, as a signed number (RFC 1982 style)."""
    return ((a - b + 0x80000000) & SEQ_MASK) - 0x80000000


def _address(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


class CloseProbe:
    """One TCP connection opened, used and closed in user space, every segment logged.

    Args:
        version: IP version, 4 or 6.
        src, dst: packed addresses (4 or 16 bytes); sport, dport: ports.
        isn: our initial sequence number (a keyed cookie, see ``IsnKey``).
        mode: who sends the first FIN.
        send_data: bytes to send once the connection is open (e.g. a request).
        drop_final_ack: never acknowledge the peer's FIN; record its retransmissions.
        msl: the maximum segment lifetime; we hold TIME-WAIT for ``2 * msl`` seconds.
        no_wait: end the probe on entering TIME-WAIT instead of holding it.
        max_wait: seconds from the SYN/ACK until we give up on the close (TIME-WAIT, which
            has its own 2 MSL timer, is not counted).
        handshake_timeout: seconds from the first SYN until we give up on a SYN/ACK.
        rto: initial retransmission timeout in seconds, doubled on each expiry.
        max_retries: retransmissions of one segment (after the handshake) before giving up.
        receive_window: the window we advertise, in bytes (scaled by 2**7 when the peer
            agrees to window scaling; at most 65535 otherwise).
        ttl: IP TTL (hop limit) of our segments.

    Raises:
        ValueError: for an argument out of range.
    """

    def __init__(
        self,
        *,
        version: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        isn: int,
        mode: CloseMode = CloseMode.WE_CLOSE,
        send_data: bytes = b"",
        drop_final_ack: bool = False,
        msl: float = 30.0,
        no_wait: bool = False,
        max_wait: float = 120.0,
        handshake_timeout: float = 3.0,
        rto: float = 1.0,
        max_retries: int = 6,
        receive_window: int = 65535,
        ttl: int = 64,
    ) -> None:
        if version not in (4, 6):
            raise ValueError(f"IP version must be 4 or 6, not {version}")
        size = 4 if version == 4 else 16
        if len(src) != size or len(dst) != size:
            raise ValueError(f"addresses must be IPv{version} bytes")
        for name, port in (("sport", sport), ("dport", dport)):
            if not 0 < port <= 0xFFFF:
                raise ValueError(f"{name} must be 1..65535, not {port}")
        if not 0 <= isn <= SEQ_MASK:
            raise ValueError("isn must be a 32-bit number")
        if msl < 0 or max_wait <= 0 or handshake_timeout <= 0 or rto <= 0:
            raise ValueError("msl must be >= 0; max_wait, handshake_timeout and rto > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not 0 < receive_window <= MAX_WINDOW_FIELD << OUR_WINDOW_SHIFT:
            raise ValueError(
                f"receive_window must be 1..{MAX_WINDOW_FIELD << OUR_WINDOW_SHIFT}"
            )
        if not 0 < ttl <= 255:
            raise ValueError("ttl must be 1..255")
        self.version = version
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.isn = isn
        self.mode = CloseMode(mode)
        self.send_data = bytes(send_data)
        self.drop_final_ack = drop_final_ack
        self.msl = msl
        self.no_wait = no_wait
        self.max_wait = max_wait
        self.handshake_timeout = handshake_timeout
        self.rto = rto
        self.max_retries = max_retries
        self.receive_window = receive_window
        self.ttl = ttl

        self.log = SegmentLog(isn)
        self.our_state = _S.CLOSED
        self.peer_state = _S.LISTEN  # assumed until an answer says otherwise
        self._started = False
        self._done = False
        self._outbox: list[bytes] = []
        self._next_index = 0  # the engine's index of the next segment we hand out
        self._logged = 0  # entries in self.log: the position of the next one
        self._notes: list[str] = []
        self._error: str | None = None
        self._interrupted = False
        self._result: CloseResult | None = None

        # Handshake.
        self._syn_tsvals: dict[int, int] = {}  # segment index -> TSval of each SYN sent
        self._syn_stamps: dict[int, Stamp] = {}
        self._answered_syn: int | None = None  # index of the SYN the SYN/ACK answers
        self._syn_ack_stamp: Stamp | None = None
        self._handshake: Handshake | None = None
        self._icmp: IcmpReply | None = None
        self._negotiated: Negotiated | None = None

        # What the SYN/ACK decided (until then: the SYN's view).
        self._timestamps = False
        self._peer_shift = 0
        self._window_field = min(receive_window, MAX_WINDOW_FIELD)
        self._rcv_wnd = self._window_field  # the window we advertise, in bytes
        self._mss = DEFAULT_PEER_MSS[version]  # payload bytes per data segment

        # Send sequence space as offsets from ISN+1 (no wrap-around to think about):
        # our data occupies 0 .. len(send_data)-1 and our FIN len(send_data).
        self._snd_una = -1  # the SYN is offset -1
        self._snd_nxt = -1
        self._snd_max = -1  # highest offset sent + 1 (go-back-N rewinds snd_nxt only)
        self._snd_wnd = 0
        self._fin_wanted = False
        self._our_fin_sent = False
        self._our_fin_acked = False
        self._half_close_from: int | None = None  # stream offset of the first half-close byte

        # Receive sequence space as offsets from the peer's ISN+1.
        self._peer_isn = 0
        self._rcv_nxt = 0
        self._last_ack_sent = 0  # RCV.NXT in our last segment (RFC 7323 Last.ACK.sent)
        self._ts_recent = 0
        self._out_of_order: dict[int, bytes] = {}  # offset -> bytes beyond RCV.NXT
        self._received = bytearray()
        self._peer_fin_at: int | None = None  # offset of the peer's FIN, once seen
        self._peer_fin_consumed = False  # RCV.NXT has passed it (never, with drop_final_ack)
        self._peer_awaits_fin_ack = False  # our next ACK covering its FIN reaches it
        self._peer_state_after_fin = _S.CLOSED

        # Timers (monotonic seconds), None when not armed.
        self._handshake_deadline: float | None = None
        self._rto_deadline: float | None = None
        self._max_wait_deadline: float | None = None
        self._time_wait_deadline: float | None = None
        self._silence_deadline: float | None = None
        self._rto_current = rto
        self._retries = 0
        self._last_peer_fin_now: float | None = None
        self._prebuild_templates()
        self._last_peer_fin_interval: float | None = None

        # Close bookkeeping: log positions of the events the timings are taken between.
        self._close_kind: CloseKind | None = None
        self._fin_end: FinRetransmissionsEnd | None = None
        self._pos_our_fin: int | None = None
        self._pos_peer_ack_of_fin: int | None = None
        self._pos_peer_fin: int | None = None
        self._pos_our_ack_of_peer_fin: int | None = None
        self._pos_peer_fin_copies: list[int] = []
        self._our_fin_retransmissions = 0
        self._we_entered_time_wait = False
        self._peer_entered_time_wait = False
        self._time_wait_entered: float | None = None
        self._time_wait_held: float | None = None
        self._time_wait_cut_short = False

    # -- inputs ---------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Send the SYN; the handshake deadline and the SYN's RTO start now."""
        if self._started:
            raise RuntimeError("probe already started")
        self._started = True
        self._handshake_deadline = now + self.handshake_timeout
        self._send_syn(now)

    def sent(self, index: int, stamp: Stamp) -> None:
        """The engine sent segment ``index`` (counted from 0 over the probe's life)."""
        self.log.stamp_sent(index, stamp)
        if index in self._syn_tsvals:
            self._syn_stamps[index] = stamp
        self._result = None

    def send_kernel_stamp(self, index: int, kernel_ns: int) -> None:
        """The kernel TX timestamp of segment ``index`` (it may come after the answer)."""
        self.log.kernel_stamp_sent(index, kernel_ns)
        stamp = self._syn_stamps.get(index)
        if stamp is not None:
            self._syn_stamps[index] = stamp.with_kernel(kernel_ns)
        self._result = None

    def send_failed(self, index: int, error: str) -> None:
        """Segment ``index`` could not be sent.

        A SYN that cannot be sent ends the probe (nothing else would work either); a later
        segment counts as lost, and the retransmission timers deal with it.
        """
        self._error = error
        self._notes.append(f"segment {index} not sent: {error}")
        self._result = None
        if self.our_state is _S.SYN_SENT and index in self._syn_tsvals and not self._done:
            self._handshake = Handshake.SEND_FAILED
            self._close_kind = CloseKind.NOT_ESTABLISHED
            self._finish()

    def receive(self, packet: Packet, now: float, stamp: Stamp) -> bool:
        """Offer a packet routed to this probe's 4-tuple; True if it belongs to this probe."""
        if not self._started:
            return False
        tcp = packet.tcp
        if tcp is not None:
            if packet.src != self.dst or tcp.sport != self.dport or tcp.dport != self.sport:
                return False
            if self._done:
                # Late (e.g. a FIN retransmitted after no_wait): log it, change nothing.
                self._log_received(packet, stamp, "after the probe ended")
                self._result = None
                return True
            if self.our_state is _S.SYN_SENT:
                return self._receive_in_syn_sent(packet, tcp, now, stamp)
            self._receive_synchronized(packet, tcp, now, stamp)
            self._result = None
            return True
        return self._receive_icmp(packet)

    def handle_timer(self, now: float) -> None:
        """Act on every deadline due at ``now``."""
        while not self._done:
            if self.our_state is _S.SYN_SENT:
                if self._handshake_deadline is not None and now >= self._handshake_deadline:
                    self._handshake = Handshake.NO_ANSWER
                    self._close_kind = CloseKind.NOT_ESTABLISHED
                    self._finish()
                elif self._rto_deadline is not None and now >= self._rto_deadline:
                    self._rto_current *= 2
                    self._send_syn(now)
                else:
                    return
            elif self._time_wait_deadline is not None and now >= self._time_wait_deadline:
                self._set_ours(transition(self.our_state, _E.TIMEOUT_2MSL))
                self._time_wait_held = now - (self._time_wait_entered or now)
                self._finish()
            elif self._max_wait_deadline is not None and now >= self._max_wait_deadline:
                self._notes.append(f"max_wait ({self.max_wait:g} s) ran out in {self.our_state}")
                self._end_early(
                    now, CloseKind.INCOMPLETE, FinRetransmissionsEnd.MAX_WAIT, "max_wait"
                )
            elif self._silence_deadline is not None and now >= self._silence_deadline:
                self._fin_end = FinRetransmissionsEnd.SILENCE
                self._notes.append("the peer stopped retransmitting its FIN")
                self._end_early(now, CloseKind.INCOMPLETE, None, "peer gave up (silence)")
            elif self._rto_deadline is not None and now >= self._rto_deadline:
                self._on_rto(now)
            else:
                return
        self._result = None

    def _prebuild_templates(self) -> None:
        """Build (once per process) every template the conversation may need, now: a Scapy
        build costs about a millisecond, which must not delay the handshake's ACK."""
        windows = {self._window_field, max(1, self.receive_window >> OUR_WINDOW_SHIFT)}
        for flags in (_F.SYN, _F.ACK, _F.PSH | _F.ACK, _F.FIN | _F.ACK, _F.RST):
            for timestamps in (True, False):
                for window in windows:
                    _template(self.version, flags, self.ttl, window, timestamps)

    def interrupt(self, now: float) -> None:
        """End the probe now (Ctrl-C).

        In TIME-WAIT this cuts the wait short (how long it was held is recorded). Before the
        handshake completes nothing is sent. Anywhere else a RST frees the peer's state and
        the result is marked interrupted.
        """
        if self._done:
            return
        self._interrupted = True
        self._result = None
        if not self._started or self.our_state is _S.SYN_SENT:
            self._handshake = Handshake.INTERRUPTED
            self._close_kind = CloseKind.NOT_ESTABLISHED
            self._finish()
        elif self.our_state is _S.TIME_WAIT:
            self._time_wait_held = now - (self._time_wait_entered or now)
            self._time_wait_cut_short = True
            self._finish()
        else:
            self._end_early(
                now, CloseKind.INTERRUPTED, FinRetransmissionsEnd.INTERRUPTED, "interrupted"
            )

    # -- outputs --------------------------------------------------------------------------
    def segments_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self) -> float | None:
        if self._done:
            return None
        deadlines = [
            d
            for d in (
                self._handshake_deadline,
                self._rto_deadline,
                self._max_wait_deadline,
                self._time_wait_deadline,
                self._silence_deadline,
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def received(self) -> bytes:
        """The peer's data delivered in order so far."""
        return bytes(self._received)

    def result(self) -> CloseResult:
        """The outcome, once ``done``.

        Raises:
            RuntimeError: if the probe has not ended yet.
        """
        if not self._done:
            raise RuntimeError("probe has no result yet")
        if self._result is None:
            self._result = self._build_result()
        return self._result

    # -- internals: sequence numbers ------------------------------------------------------
    def _seq(self, offset: int) -> int:
        return (self.isn + 1 + offset) & SEQ_MASK

    def _rseq(self, offset: int) -> int:
        return (self._peer_isn + 1 + offset) & SEQ_MASK

    def _send_offset(self, ack: int) -> int:
        """An ack number as an offset in our sequence space (relative to SND.UNA)."""
        return self._snd_una + _delta(ack, self._seq(self._snd_una))

    def _receive_offset(self, seq: int) -> int:
        """A sequence number of the peer's as an offset (relative to RCV.NXT)."""
        return self._rcv_nxt + _delta(seq, self._rseq(self._rcv_nxt))

    # -- internals: states ----------------------------------------------------------------
    def _set_ours(self, state: TcpState) -> None:
        self.our_state = state
        if state is _S.TIME_WAIT:
            self._we_entered_time_wait = True

    def _set_peer(self, state: TcpState) -> None:
        self.peer_state = state
        if state is _S.TIME_WAIT:
            self._peer_entered_time_wait = True

    def _finish(self) -> None:
        self._done = True
        self._handshake_deadline = None
        self._rto_deadline = None
        self._max_wait_deadline = None
        self._time_wait_deadline = None
        self._silence_deadline = None
        self._result = None

    # -- internals: sending ---------------------------------------------------------------
    def _emit(
        self,
        flags: TcpFlags,
        offset: int,
        now: float,
        *,
        payload: bytes = b"",
        ack: bool = True,
        our_event: TcpEvent | None = None,
        peer_event: TcpEvent | None = None,
        note: str = "",
    ) -> int:
        """Build, queue and log one segment; returns its engine index.

        States move before the segment is logged, so its record shows them after it.
        """
        if our_event is not None:
            self._set_ours(transition(self.our_state, our_event))
        if ack and self._peer_awaits_fin_ack and self._rcv_nxt > (self._peer_fin_at or 0):
            # This segment acknowledges the peer's FIN: the peer leaves the state its FIN
            # put it in (FIN-WAIT-1, CLOSING or LAST-ACK).
            self._peer_awaits_fin_ack = False
            self._set_peer(transition(self.peer_state, _E.RECEIVE_ACK_OF_FIN))
            if self._pos_our_ack_of_peer_fin is None:
                self._pos_our_ack_of_peer_fin = self._logged
        if peer_event is None and our_event is not None:
            peer_event = mirrored(our_event)
        if peer_event is not None:
            self._set_peer(transition(self.peer_state, peer_event))
        # Until the SYN/ACK, the window field is unscaled (RFC 7323 §2.2) and the SYN always
        # offers timestamps; afterwards both follow what the peer agreed to.
        timestamps = bool(flags & _F.SYN) or self._timestamps
        template = _template(self.version, flags, self.ttl, self._window_field, timestamps)
        tsval = int(now * 1000) & SEQ_MASK  # RFC 7323: a millisecond clock, ours is `now`
        ack_number = self._rseq(self._rcv_nxt) if ack else 0
        raw = template.build(
            self.src,
            self.dst,
            self.sport,
            self.dport,
            self._seq(offset),
            ack_number,
            tsval,
            0 if flags & _F.SYN else self._ts_recent,  # RSTs echo TS.Recent too
            payload,
        )
        if ack:
            self._last_ack_sent = self._rcv_nxt
        index = self._next_index
        self._next_index += 1
        self._outbox.append(raw)
        self.log.sent(index, parse_packet(raw), self.our_state, self.peer_state, note)
        self._logged += 1
        return index

    def _send_syn(self, now: float) -> None:
        first = not self._syn_tsvals
        index = self._emit(
            _F.SYN,
            -1,
            now,
            ack=False,
            our_event=_E.SEND_SYN if first else None,
            note="" if first else "retransmission",
        )
        self._syn_tsvals[index] = int(now * 1000) & SEQ_MASK
        self._snd_nxt = self._snd_max = 0
        self._rto_deadline = now + self._rto_current

    def _send_ack(self, now: float, note: str = "") -> None:
        self._emit(_F.ACK, self._snd_nxt, now, note=note)

    def _send_rst(self, now: float, note: str) -> None:
        # RST carries SND.NXT and no ACK (RFC 9293 §3.10.7.1 for a connection we abort).
        # snd_max, not a go-back-N-rewound snd_nxt: the peer expects the highest we sent.
        self._emit(_F.RST, self._snd_max, now, ack=False, our_event=_E.SEND_RST, note=note)

    def _pump(self, now: float, *, force: bool = False) -> None:
        """Send what is due: new (or go-back-N) data within the window, then our FIN.

        ``force`` sends at least one byte when the window is shut (a window probe).
        """
        if self._done or self.our_state not in _CAN_SEND:
            return
        data_len = len(self.send_data)
        while self._snd_nxt < data_len:
            room = self._snd_una + self._snd_wnd - self._snd_nxt
            if force:
                room = max(room, 1)
                force = False
            size = min(self._mss, data_len - self._snd_nxt, room)
            if size <= 0:
                break
            start = self._snd_nxt
            flags = _F.ACK | _F.PSH if start + size == data_len else _F.ACK
            self._emit(
                flags,
                start,
                now,
                payload=self.send_data[start : start + size],
                note="retransmission" if start < self._snd_max else "",
            )
            self._snd_nxt = start + size
            self._snd_max = max(self._snd_max, self._snd_nxt)
        if (
            not self._fin_wanted
            and self._snd_una == data_len
            and (
                (self.mode is CloseMode.WE_CLOSE and self.our_state is _S.ESTABLISHED)
                or self.our_state is _S.CLOSE_WAIT
            )
        ):
            self._fin_wanted = True
        if self._fin_wanted and self._snd_nxt == data_len:
            if self._our_fin_sent:
                self._our_fin_retransmissions += 1
                self._emit(
                    _F.FIN | _F.ACK,
                    data_len,
                    now,
                    peer_event=_E.RECEIVE_FIN,
                    note="retransmission",
                )
            else:
                self._pos_our_fin = self._logged
                self._our_fin_sent = True
                self._emit(_F.FIN | _F.ACK, data_len, now, our_event=_E.SEND_FIN)
            self._snd_nxt = data_len + 1
            self._snd_max = max(self._snd_max, self._snd_nxt)
        self._arm_rto(now)

    def _arm_rto(self, now: float) -> None:
        """Run the retransmission timer while anything is outstanding (RFC 6298 5.1/5.2).

        Data held back by a shut window keeps it running too: it doubles as the persist
        timer, whose expiry sends a one-byte window probe.
        """
        waiting = self._snd_una < self._snd_max or self._snd_nxt < len(self.send_data)
        if not waiting:
            self._rto_deadline = None
        elif self._rto_deadline is None:
            self._rto_deadline = now + self._rto_current

    def _on_rto(self, now: float) -> None:
        self._rto_deadline = None
        self._retries += 1
        if self._retries > self.max_retries:
            self._notes.append(f"retransmissions exhausted after {self.max_retries} retries")
            self._end_early(now, CloseKind.INCOMPLETE, None, "retransmissions exhausted")
            return
        self._rto_current *= 2  # RFC 6298 5.5: back off
        # Go-back-N: everything from SND.UNA again (RFC 6298 5.4 asks for the first segment
        # at least; resending the whole flight keeps the ladder simple and deterministic).
        self._snd_nxt = self._snd_una
        self._pump(now, force=True)

    def _end_early(
        self,
        now: float,
        kind: CloseKind,
        fin_end: FinRetransmissionsEnd | None,
        why: str,
    ) -> None:
        """Stop before the close completed: free the peer with a RST unless it is closed."""
        if self._close_kind is None:
            self._close_kind = kind
        if self.drop_final_ack and self._peer_fin_at is not None and self._fin_end is None:
            self._fin_end = fin_end
        if self.our_state not in (_S.CLOSED, _S.TIME_WAIT) and self.peer_state is not _S.CLOSED:
            self._send_rst(now, f"{why}: RST to free the peer's state")
        self._finish()

    # -- internals: receiving -------------------------------------------------------------
    def _log_received(self, packet: Packet, stamp: Stamp, note: str) -> None:
        self.log.received(packet, stamp, self.our_state, self.peer_state, note)
        self._logged += 1

    def _receive_icmp(self, packet: Packet) -> bool:
        icmp = packet.icmp
        if icmp is None:
            return False
        quoted = icmp.quoted
        if (
            quoted.src != self.src
            or quoted.dst != self.dst
            or quoted.sport != self.sport
            or quoted.dport != self.dport
        ):
            return False
        reply = IcmpReply(packet.version, icmp.type, icmp.code, _address(packet.src), packet.ttl)
        if self.our_state is _S.SYN_SENT and not self._done:
            if quoted.seq != self.isn:
                return False
            unreachable, expired = (
                (ICMP_UNREACHABLE_V4, ICMP_TIME_EXCEEDED_V4)
                if packet.version == 4
                else (ICMP_UNREACHABLE_V6, ICMP_TIME_EXCEEDED_V6)
            )
            self._icmp = reply
            self._handshake = Handshake.EXPIRED if icmp.type == expired else Handshake.FILTERED
            if icmp.type not in (unreachable, expired):
                self._notes.append(f"ICMP type {icmp.type} code {icmp.code} answered the SYN")
            self._close_kind = CloseKind.NOT_ESTABLISHED
            self._finish()
            return True
        # RFC 5927: ICMP errors on an established connection are soft errors; note them.
        self._notes.append(
            f"ICMP type {icmp.type} code {icmp.code} from {reply.source} in {self.our_state}"
            " (ignored)"
        )
        self._result = None
        return True

    def _receive_in_syn_sent(
        self, packet: Packet, tcp: TcpSegment, now: float, stamp: Stamp
    ) -> bool:
        flags = tcp.flags
        acks_syn = bool(flags & _F.ACK) and tcp.ack == (self.isn + 1) & SEQ_MASK
        if flags & _F.RST:
            if not acks_syn:
                return False  # RFC 9293 §3.10.7.3: a RST without an acceptable ACK
            self._set_ours(transition(self.our_state, _E.RECEIVE_RST))
            self._set_peer(transition(self.peer_state, mirrored(_E.RECEIVE_RST)))
            self._log_received(packet, stamp, "")
            self._handshake = Handshake.CLOSED
            self._close_kind = CloseKind.NOT_ESTABLISHED
            self._finish()
            return True
        if not (flags & _F.SYN and acks_syn):
            return False  # an old SYN/ACK, a bare SYN (simultaneous open): not for us
        self._open(packet, tcp, now, stamp)
        self._result = None
        return True

    def _open(self, packet: Packet, tcp: TcpSegment, now: float, stamp: Stamp) -> None:
        options = tcp.options
        self._handshake = Handshake.OPEN
        self._syn_ack_stamp = stamp
        self._peer_isn = tcp.seq
        self.log.peer_isn = tcp.seq
        self._rcv_nxt = 0
        self._timestamps = options.timestamp is not None
        if options.timestamp is not None:
            self._ts_recent = options.timestamp[0]
        # The SYN that this SYN/ACK answers: its TSecr names it, else assume the last one.
        matching = [
            i
            for i, tsval in self._syn_tsvals.items()
            if options.timestamp is not None and options.timestamp[1] == tsval
        ]
        self._answered_syn = max(matching) if matching else max(self._syn_tsvals)
        if len(self._syn_tsvals) > 1 and not matching:
            self._notes.append("SYN retransmitted and the SYN/ACK has no TSecr: RTT ambiguous")
        if options.window_scale is not None:
            shift = options.window_scale
            if shift > MAX_WINDOW_SHIFT:
                self._notes.append(f"peer window scale {shift} treated as {MAX_WINDOW_SHIFT}")
                shift = MAX_WINDOW_SHIFT
            self._peer_shift = shift
            # At least 1: a window under 128 bytes would otherwise scale down to nothing.
            self._window_field = max(1, self.receive_window >> OUR_WINDOW_SHIFT)
            self._rcv_wnd = self._window_field << OUR_WINDOW_SHIFT
        peer_mss = options.mss if options.mss else DEFAULT_PEER_MSS[self.version]
        self._mss = max(
            1,
            min(peer_mss, DEFAULT_MSS[self.version])
            - (TIMESTAMP_OPTION_BYTES if self._timestamps else 0),
        )
        self._negotiated = Negotiated(
            mss=peer_mss,
            window_scale=None if options.window_scale is None else self._peer_shift,
            sack_permitted=options.sack_permitted,
            timestamps=self._timestamps,
        )
        # The SYN/ACK's window is never scaled (RFC 7323 §2.2).
        self._snd_wnd = tcp.window
        self._snd_una = self._snd_nxt = self._snd_max = 0
        self._rto_current = self.rto
        self._retries = 0
        self._rto_deadline = None
        self._handshake_deadline = None
        self._max_wait_deadline = now + self.max_wait
        self._set_ours(transition(self.our_state, _E.RECEIVE_SYN_ACK))
        self._log_received(packet, stamp, "data on the SYN/ACK ignored" if tcp.payload else "")
        self._emit(_F.ACK, 0, now, peer_event=_E.RECEIVE_ACK_OF_SYN)
        self._pump(now)

    def _receive_synchronized(
        self, packet: Packet, tcp: TcpSegment, now: float, stamp: Stamp
    ) -> None:
        flags = tcp.flags
        if flags & _F.RST:
            self._receive_rst(packet, tcp, now, stamp)
            return
        if flags & _F.SYN:
            if tcp.seq == self._peer_isn and flags & _F.ACK:
                # Our ACK of the SYN/ACK was lost: ACK it again.
                self._log_received(packet, stamp, "SYN/ACK retransmission")
                self._send_ack(now)
            else:
                # RFC 5961 §4: a SYN on a synchronized connection draws a challenge ACK.
                self._log_received(packet, stamp, "SYN in a synchronized state")
                self._send_ack(now, "challenge ACK (RFC 5961)")
            return
        if not flags & _F.ACK:
            self._log_received(packet, stamp, "no ACK flag: dropped")
            return

        notes: list[str] = []
        fin = bool(flags & _F.FIN)
        payload = tcp.payload
        seg_len = len(payload) + fin
        start = self._receive_offset(tcp.seq)
        end = start + seg_len
        fin_at = end - 1 if fin else None
        fin_copy = fin and self._peer_fin_at is not None and fin_at == self._peer_fin_at
        window_end = self._rcv_nxt + self._rcv_wnd

        # RFC 9293 §3.10.7.4, first check: is the segment in the receive window?
        if seg_len == 0:
            acceptable = self._rcv_nxt <= start < window_end
        else:
            acceptable = (self._rcv_nxt <= start < window_end) or (
                self._rcv_nxt <= end - 1 < window_end
            )
        if not acceptable:
            if fin_copy:
                notes.append(self._peer_fin_again(now))
            elif end <= self._rcv_nxt:
                notes.append("retransmission")
            else:
                notes.append("outside the receive window")
            self._log_received(packet, stamp, "; ".join(notes))
            if not (fin_copy and self.drop_final_ack):
                self._send_ack(now)
            return

        # RFC 7323 §4.3: TS.Recent follows segments at or before the last ACK we sent.
        timestamp = tcp.options.timestamp
        if (
            self._timestamps
            and timestamp is not None
            and start <= self._last_ack_sent
            and _delta(timestamp[0], self._ts_recent) >= 0
        ):
            self._ts_recent = timestamp[0]

        # Fifth check: the ACK field.
        acked = self._send_offset(tcp.ack)
        if acked > self._snd_max:
            self._log_received(packet, stamp, "acknowledges data not yet sent: dropped")
            self._send_ack(now)
            return
        fin_acked_now = False
        if acked > self._snd_una:
            self._snd_una = acked
            self._snd_nxt = max(self._snd_nxt, acked)
            self._retries = 0
            self._rto_current = self.rto
            # RFC 6298 5.2/5.3: stop the timer when all is acked, else restart it.
            self._rto_deadline = now + self.rto if self._snd_una < self._snd_max else None
            if self._our_fin_sent and acked > len(self.send_data) and not self._our_fin_acked:
                self._our_fin_acked = fin_acked_now = True
                self._pos_peer_ack_of_fin = self._logged
        if acked >= self._snd_una:
            self._snd_wnd = tcp.window << self._peer_shift

        # Data and FIN, trimmed to the window.
        need_ack = False
        fin_first_seen = fin and self._peer_fin_at is None
        if seg_len:
            need_ack = True
            data, data_at = payload, start
            if data_at < self._rcv_nxt:
                data = data[self._rcv_nxt - data_at :]
                data_at = self._rcv_nxt
                if payload:
                    notes.append("retransmission")
            if data_at + len(data) > window_end:
                data = data[: max(0, window_end - data_at)]
                notes.append("trimmed to the receive window")
                if fin_at is not None and fin_at >= window_end:
                    fin, fin_first_seen, fin_copy = False, False, False
            if self._peer_fin_at is not None and data and data_at + len(data) > self._peer_fin_at:
                data = data[: max(0, self._peer_fin_at - data_at)]
                notes.append("data beyond the peer's FIN ignored")
            if data:
                if self._our_fin_sent:
                    # A half-close is data the peer sent after our FIN reached it: its ACK
                    # covers our FIN. Data that crossed our FIN on the way is not one.
                    if acked > len(self.send_data):
                        notes.append("data after our FIN")
                        if start >= self._rcv_nxt:  # new data, not a retransmission
                            first = self._half_close_from
                            self._half_close_from = (
                                data_at if first is None else min(first, data_at)
                            )
                    else:
                        notes.append("crossed our FIN")
                if data_at == self._rcv_nxt:
                    self._received += data
                    self._rcv_nxt += len(data)
                    self._deliver_buffered()
                else:
                    self._out_of_order[data_at] = max(
                        data, self._out_of_order.get(data_at, b""), key=len
                    )
                    notes.append("out of order")
            if fin_first_seen:
                assert fin_at is not None
                self._peer_fin_at = fin_at
                notes.extend(self._peer_fin_first(now, acks_our_fin=acked > len(self.send_data)))
            elif fin_copy:
                notes.append(self._peer_fin_again(now))
            if self.drop_final_ack and fin and not payload and fin_at == self._rcv_nxt:
                need_ack = False  # the FIN alone, in order: we act as if it was lost

        # Consume the peer's FIN once everything before it is in (never with drop_final_ack).
        fin_consumed_now = False
        if (
            not self.drop_final_ack
            and not self._peer_fin_consumed
            and self._peer_fin_at is not None
            and self._rcv_nxt == self._peer_fin_at
        ):
            self._rcv_nxt += 1
            self._peer_fin_consumed = fin_consumed_now = True
            self._peer_awaits_fin_ack = True

        if fin_acked_now and fin_consumed_now:
            self._set_ours(transition(self.our_state, _E.RECEIVE_FIN_ACKING_FIN))
        elif fin_acked_now:
            self._set_ours(transition(self.our_state, _E.RECEIVE_ACK_OF_FIN))
        elif fin_consumed_now:
            self._set_ours(transition(self.our_state, _E.RECEIVE_FIN))
        self._log_received(packet, stamp, "; ".join(notes))
        if need_ack:
            self._send_ack(now, "duplicate ACK" if "out of order" in notes else "")
        self._after_input(now)

    def _deliver_buffered(self) -> None:
        """Move buffered out-of-order bytes that RCV.NXT has reached into the stream."""
        while self._out_of_order:
            ready = [at for at in self._out_of_order if at <= self._rcv_nxt]
            if not ready:
                return
            for at in sorted(ready):
                chunk = self._out_of_order.pop(at)
                if at + len(chunk) > self._rcv_nxt:
                    self._received += chunk[self._rcv_nxt - at :]
                    self._rcv_nxt = at + len(chunk)

    def _peer_fin_first(self, now: float, *, acks_our_fin: bool) -> list[str]:
        """The peer's FIN, first seen: how the close goes and what state it put the peer in."""
        self._pos_peer_fin = self._logged
        self._pos_peer_fin_copies.append(self._logged)
        self._last_peer_fin_now = now
        if not self._our_fin_sent:
            kind = CloseKind.PEER_FIRST
            peer = transition(self.peer_state, _E.SEND_FIN)
        elif acks_our_fin:
            # Acked before this segment: four segments; acked by the FIN itself: three.
            acked_before = self._our_fin_acked and self._pos_peer_ack_of_fin != self._logged
            kind = CloseKind.FOUR_WAY if acked_before else CloseKind.THREE_WAY
            peer = transition(self.peer_state, _E.SEND_FIN)
        else:
            # It sent its FIN before ours arrived: ESTABLISHED → FIN-WAIT-1, then ours
            # (already on its way) takes it to CLOSING. The peer column of our FIN's record
            # showed CLOSE-WAIT; that was the guess before this evidence.
            kind = CloseKind.SIMULTANEOUS
            peer = transition(transition(_S.ESTABLISHED, _E.SEND_FIN), _E.RECEIVE_FIN)
        if self._close_kind is None:
            self._close_kind = kind
        self._set_peer(peer)
        self._peer_state_after_fin = peer
        notes: list[str] = []
        if self.drop_final_ack:
            notes.append("not acknowledged (--drop-final-ack)")
            self._arm_silence(now, self.rto)
        return notes

    def _peer_fin_again(self, now: float) -> str:
        """A further copy of the peer's FIN: record it, and re-ACK it unless dropping."""
        self._pos_peer_fin_copies.append(self._logged)
        previous = self._last_peer_fin_now
        self._last_peer_fin_now = now
        interval = now - previous if previous is not None else self.rto
        if self.drop_final_ack:
            self._arm_silence(now, interval)
            return "FIN retransmission, not acknowledged (--drop-final-ack)"
        # It never got our ACK: it is still where its FIN left it.
        self._set_peer(self._peer_state_after_fin)
        self._peer_awaits_fin_ack = True
        if self.our_state is _S.TIME_WAIT and self._time_wait_deadline is not None:
            self._time_wait_deadline = now + 2 * self.msl  # RFC 9293: restart the 2 MSL
            return "FIN retransmission, re-ACKed in TIME-WAIT"
        return "FIN retransmission, re-ACKed"

    def _arm_silence(self, now: float, interval: float) -> None:
        deadline = now + SILENCE_FACTOR * interval + SILENCE_SLACK
        if self._max_wait_deadline is not None:
            deadline = min(deadline, self._max_wait_deadline)
        self._silence_deadline = deadline

    def _receive_rst(self, packet: Packet, tcp: TcpSegment, now: float, stamp: Stamp) -> None:
        at = self._receive_offset(tcp.seq)
        exact = at == self._rcv_nxt
        if self.drop_final_ack and self._peer_fin_at is not None and not self._peer_fin_consumed:
            # We hold its FIN unacknowledged; its RST carries the sequence after that FIN.
            exact = exact or at == self._peer_fin_at + 1
        if exact:
            if self.our_state is _S.TIME_WAIT:
                # RFC 9293 accepts it; RFC 1337 explains why that cuts TIME-WAIT short.
                self._time_wait_held = now - (self._time_wait_entered or now)
                self._time_wait_cut_short = True
                note = "RST in TIME-WAIT ends it"
            else:
                note = ""
            if self._close_kind is None:
                self._close_kind = CloseKind.RESET
            if self.drop_final_ack and self._peer_fin_at is not None and self._fin_end is None:
                self._fin_end = FinRetransmissionsEnd.RESET
            self._set_ours(transition(self.our_state, _E.RECEIVE_RST))
            self._set_peer(transition(self.peer_state, mirrored(_E.RECEIVE_RST)))
            self._log_received(packet, stamp, note)
            self._finish()
        elif self._rcv_nxt <= at < self._rcv_nxt + self._rcv_wnd:
            self._log_received(packet, stamp, "RST in window but not exact")
            self._send_ack(now, "challenge ACK (RFC 5961)")
        else:
            self._log_received(packet, stamp, "RST outside the window: ignored")

    def _after_input(self, now: float) -> None:
        """What a change of state asks for: TIME-WAIT's timer, the end, or more to send."""
        if self.our_state is _S.TIME_WAIT and self._time_wait_entered is None:
            self._time_wait_entered = now
            self._rto_deadline = self._max_wait_deadline = self._silence_deadline = None
            if self.no_wait:
                self._notes.append("TIME-WAIT not held (no_wait)")
                self._finish()
            else:
                self._time_wait_deadline = now + 2 * self.msl
            return
        if self.our_state is _S.CLOSED:
            self._finish()
            return
        self._pump(now)

    # -- internals: the result ------------------------------------------------------------
    def _build_result(self) -> CloseResult:
        records = self.log.records()
        clock = records[0].clock if records else None

        def between(first: int | None, second: int | None) -> float | None:
            if first is None or second is None:
                return None
            return (records[second].time_ns - records[first].time_ns) / 1000.0

        rtt: Rtt | None = None
        if self._answered_syn is not None and self._syn_ack_stamp is not None:
            syn_stamp = self._syn_stamps.get(self._answered_syn)
            if syn_stamp is not None:
                rtt = rtt_between(syn_stamp, self._syn_ack_stamp)

        copies = self._pos_peer_fin_copies
        retransmissions = tuple(
            FinRetransmission(
                time_since_first_us=between(copies[0], copies[i]) or 0.0,
                interval_us=between(copies[i - 1], copies[i]) or 0.0,
            )
            for i in range(1, len(copies))
        )
        peer_first = self._close_kind is CloseKind.PEER_FIRST
        holder: TimeWaitHolder | None = None
        if self._we_entered_time_wait and self._peer_entered_time_wait:
            holder = TimeWaitHolder.BOTH
        elif self._we_entered_time_wait:
            holder = TimeWaitHolder.US
        elif self._peer_entered_time_wait:
            holder = TimeWaitHolder.PEER
        acked = max(0, min(self._snd_una, len(self.send_data)))
        return CloseResult(
            target=_address(self.dst),
            port=self.dport,
            source=_address(self.src),
            source_port=self.sport,
            mode=self.mode,
            drop_final_ack=self.drop_final_ack,
            handshake=self._handshake or Handshake.INTERRUPTED,
            handshake_rtt=rtt,
            syn_retransmissions=max(0, len(self._syn_tsvals) - 1),
            icmp=self._icmp,
            negotiated=self._negotiated,
            close_kind=self._close_kind or CloseKind.INCOMPLETE,
            half_close=self._half_close_from is not None,
            bytes_after_our_fin=(
                0
                if self._half_close_from is None
                else max(0, len(self._received) - self._half_close_from)
            ),
            clock=clock,
            our_fin_to_peer_ack_us=between(self._pos_our_fin, self._pos_peer_ack_of_fin),
            our_fin_to_peer_fin_us=(
                None if peer_first else between(self._pos_our_fin, self._pos_peer_fin)
            ),
            peer_ack_to_peer_fin_us=(
                None if peer_first else between(self._pos_peer_ack_of_fin, self._pos_peer_fin)
            ),
            peer_fin_to_our_ack_us=(
                between(self._pos_peer_fin, self._pos_our_ack_of_peer_fin) if peer_first else None
            ),
            our_ack_to_our_fin_us=(
                between(self._pos_our_ack_of_peer_fin, self._pos_our_fin) if peer_first else None
            ),
            our_fin_retransmissions=self._our_fin_retransmissions,
            peer_fin_retransmissions=retransmissions,
            peer_fin_retransmissions_end=self._fin_end,
            time_wait_holder=holder,
            time_wait_held_us=(
                None if self._time_wait_held is None else self._time_wait_held * 1e6
            ),
            time_wait_cut_short=self._time_wait_cut_short,
            time_wait_skipped=self._we_entered_time_wait and self.no_wait,
            our_final_state=self.our_state,
            peer_final_state=self.peer_state,
            bytes_sent=len(self.send_data),
            bytes_acked=acked,
            received=bytes(self._received),
            interrupted=self._interrupted,
            error=self._error,
            notes=tuple(self._notes),
            segments=records,
        )
