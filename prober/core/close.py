"""The close probe: one TCP connection from SYN to CLOSED, and what kind of close it was.

The connection itself (handshake, options, both sequence spaces, retransmission, reassembly,
RST, SYN and ICMP handling, our TIME-WAIT, the segment log) is ``TcpConnection``
(``prober.core.tcp_connection``); ``CloseProbe`` drives it and watches the close through the
hooks it offers. What the close probe adds, with ``close_timeline`` (the classification,
timings and result):

- Who sends the first FIN (``mode``), which decides who holds TIME-WAIT (see
  ``prober.core.states``):
  - ``WE_CLOSE``: our FIN follows as soon as all our data is acknowledged. The peer may ACK
    it and send its FIN later (four-way), ACK it with its FIN (three-way), send its FIN
    before it has seen ours (simultaneous: both sides pass CLOSING and hold TIME-WAIT),
    send data first (half-close) or reset. We ACK its FIN and hold TIME-WAIT for 2 MSL,
    re-ACKing a retransmitted FIN (RFC 9293 §3.10.7.4, TIME-WAIT: and restarting 2 MSL).
  - ``PEER_CLOSES``: we wait for the peer's FIN, ACK it (CLOSE-WAIT), send ours (LAST-ACK)
    and are CLOSED at its ACK; the peer holds TIME-WAIT.
- The classification: the peer's first FIN decides the kind of close (``classify_peer_fin``);
  a RST, max_wait, our retransmissions running out or an interrupt decide it when that FIN
  never came. The segments the timings are taken between are marked as they pass.
- ``drop_final_ack``: the peer's FIN is never acknowledged: we behave as if it was lost.
  Each retransmission of that FIN is recorded until the peer gives up (a RST, or silence
  for 2.5 times its last retransmission interval plus 1 s, never beyond ``max_wait``);
  then our RST frees its state, unless it reset first.

The result's vocabulary (``close_timeline``), ``SequenceSpaces`` and the connection's limits
stay importable from here, as they were before the connection had a module of its own.
"""

from __future__ import annotations

import ipaddress

from prober.core.close_receive import DEFAULT_KEEP_BYTES
from prober.core.close_timeline import (
    PEER_TIME_WAIT_CHECK,
    CloseKind,
    CloseMode,
    CloseResult,
    FinRetransmission,
    FinRetransmissionsEnd,
    Handshake,
    Negotiated,
    Timeline,
    TimeWaitDue,
    classify_peer_fin,
    time_wait_due,
)
from prober.core.states import TcpState
from prober.core.strays import STRAY_DESCRIPTIONS, Stray
from prober.core.tcp_connection import DEFAULT_PEER_MSS as DEFAULT_PEER_MSS
from prober.core.tcp_connection import INVALID_ANSWERS_PER_SECOND as INVALID_ANSWERS_PER_SECOND
from prober.core.tcp_connection import MAX_WINDOW_FIELD as MAX_WINDOW_FIELD
from prober.core.tcp_connection import MAX_WINDOW_SHIFT as MAX_WINDOW_SHIFT
from prober.core.tcp_connection import OUR_WINDOW_SHIFT as OUR_WINDOW_SHIFT
from prober.core.tcp_connection import SEQ_MASK as SEQ_MASK
from prober.core.tcp_connection import TIMESTAMP_OPTION_BYTES as TIMESTAMP_OPTION_BYTES
from prober.core.tcp_connection import Abort, SequenceSpaces, TcpConnection
from prober.core.tcp_log import BULK_RECORDS as BULK_RECORDS
from prober.core.tcp_log import STRAY_RECORDS as STRAY_RECORDS
from prober.core.timing import Rtt, rtt_between
from prober.core.trace import Direction

__all__ = [
    "PEER_TIME_WAIT_CHECK",
    "STRAY_DESCRIPTIONS",
    "CloseKind",
    "CloseMode",
    "CloseProbe",
    "CloseResult",
    "FinRetransmission",
    "FinRetransmissionsEnd",
    "Handshake",
    "Negotiated",
    "SequenceSpaces",
    "Stray",
    "TimeWaitDue",
]

# Give-up by silence under drop_final_ack: no FIN for SILENCE_FACTOR times the last
# retransmission interval plus SILENCE_SLACK seconds. Retransmission timers double, so the
# next FIN would come after twice the last interval; 2.5 times leaves room for jitter.
SILENCE_FACTOR = 2.5
SILENCE_SLACK = 1.0
# Copies of the peer's FIN timed in the result; a peer that repeats it without end is not
# followed further (real stacks give up after tcp_orphan_retries, 8 at most by default).
MAX_FIN_COPIES = 64

_S = TcpState

# How the close ends when the connection is aborted before the peer's FIN decided it.
_ABORTED: dict[Abort, tuple[CloseKind, FinRetransmissionsEnd | None]] = {
    Abort.PEER_RESET: (CloseKind.RESET, FinRetransmissionsEnd.RESET),
    Abort.MAX_WAIT: (CloseKind.INCOMPLETE, FinRetransmissionsEnd.MAX_WAIT),
    Abort.RETRIES_EXHAUSTED: (CloseKind.INCOMPLETE, None),
}


def _address(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


class CloseProbe(TcpConnection):
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
            agrees to window scaling; at most 65535 otherwise). It also caps the
            out-of-order bytes we buffer.
        keep_received: in-order bytes of the peer's kept for the result; later ones are
            counted and dropped, so a peer that sends without end costs no memory.
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
        keep_received: int = DEFAULT_KEEP_BYTES,
        ttl: int = 64,
    ) -> None:
        super().__init__(
            version=version, src=src, dst=dst, sport=sport, dport=dport, isn=isn,
            send_data=send_data, drop_final_ack=drop_final_ack, msl=msl, no_wait=no_wait,
            max_wait=max_wait, handshake_timeout=handshake_timeout, rto=rto,
            max_retries=max_retries, receive_window=receive_window,
            keep_received=keep_received, ttl=ttl,
        )
        self.mode = CloseMode(mode)
        self._interrupted = False
        self._result: CloseResult | None = None
        self._result_revision = -1  # the connection's _revision the cached result is of

        # The close's classification, and the segments its timings are taken between.
        self._close_kind: CloseKind | None = None  # the first decision stands
        self._timeline = Timeline()
        # drop_final_ack: how the peer's retransmissions of its FIN ended, and when the
        # last copy came (the silence rule's interval is taken from it).
        self._fin_end: FinRetransmissionsEnd | None = None
        self._last_peer_fin_now: float | None = None

    # -- inputs beyond the connection's ---------------------------------------------------
    def interrupt(self, now: float) -> None:
        """End the probe now (Ctrl-C).

        In TIME-WAIT this cuts the wait short (how long it was held is recorded). Before the
        handshake completes nothing is sent. Anywhere else a RST frees the peer's state and
        the result is marked interrupted.
        """
        if self._done:
            return
        self._interrupted = True
        self._revision += 1
        if not self._started or self.our_state is _S.SYN_SENT:
            self._handshake = Handshake.INTERRUPTED
            self._finish()
        elif self.our_state is _S.TIME_WAIT:
            self._time_wait_held = now - (self._time_wait_entered or now)
            self._time_wait_cut_short = True
            self._finish()
        else:
            self._ends_as(CloseKind.INTERRUPTED, FinRetransmissionsEnd.INTERRUPTED)
            self._end_early(now, "interrupted")

    def result(self) -> CloseResult:
        """The outcome, once ``done``.

        Raises:
            RuntimeError: if the probe has not ended yet.
        """
        if not self._done:
            raise RuntimeError("probe has no result yet")
        if self._result is None or self._result_revision != self._revision:
            self._result = self._build_result()
            self._result_revision = self._revision
        return self._result

    # -- the close, as the connection's hooks report it -----------------------------------
    def _closes_first(self) -> bool:
        return self.mode is CloseMode.WE_CLOSE

    def _on_our_fin(self, index: int) -> None:
        self._timeline.our_fin = (Direction.SENT, index)

    def _on_ack_of_our_fin(self) -> None:
        self._timeline.peer_ack_of_fin = (Direction.RECEIVED, self.log.next_arrival)

    def _on_our_ack_of_peer_fin(self, index: int) -> None:
        if self._timeline.our_ack_of_peer_fin is None:
            self._timeline.our_ack_of_peer_fin = (Direction.SENT, index)

    def _on_peer_fin(self, now: float, *, acks_our_fin: bool) -> None:
        """The peer's FIN, first seen: how the close goes."""
        this = (Direction.RECEIVED, self.log.next_arrival)
        self._timeline.peer_fin = this
        self._timeline.peer_fin_copies.append(this)
        self._last_peer_fin_now = now
        # Acked before this segment: four segments; acked by the FIN itself: three.
        acked_before = self._tx.fin_acked and self._timeline.peer_ack_of_fin != this
        kind = classify_peer_fin(
            our_fin_sent=self._tx.fin_sent, acks_our_fin=acks_our_fin, acked_before=acked_before
        )
        if self._close_kind is None:
            self._close_kind = kind
        if self.drop_final_ack:
            self._arm_silence(now, self.rto)

    def _on_peer_fin_copy(self, now: float) -> None:
        """A further copy of the peer's FIN: time it (and, dropping, re-arm the silence)."""
        if len(self._timeline.peer_fin_copies) < MAX_FIN_COPIES:
            self._timeline.peer_fin_copies.append((Direction.RECEIVED, self.log.next_arrival))
        previous = self._last_peer_fin_now
        self._last_peer_fin_now = now
        interval = now - previous if previous is not None else self.rto
        if self.drop_final_ack:
            self._arm_silence(now, interval)

    def _on_abort(self, cause: Abort) -> None:
        self._ends_as(*_ABORTED[cause])

    def _on_probe_deadline(self, now: float) -> None:
        # The only timer of the close probe's own: the silence rule of drop_final_ack.
        self._fin_end = FinRetransmissionsEnd.SILENCE
        self._notes.append("the peer stopped retransmitting its FIN")
        self._ends_as(CloseKind.INCOMPLETE, None)
        self._end_early(now, "peer gave up (silence)")

    def _arm_silence(self, now: float, interval: float) -> None:
        deadline = now + SILENCE_FACTOR * interval + SILENCE_SLACK
        if self._max_wait_deadline is not None:
            deadline = min(deadline, self._max_wait_deadline)
        self._probe_deadline = deadline

    def _ends_as(self, kind: CloseKind, fin_end: FinRetransmissionsEnd | None) -> None:
        """What ended the close before the peer's FIN decided it (the first decision stands;
        ``fin_end`` says how the FIN's retransmissions ended, under drop_final_ack)."""
        if self._close_kind is None:
            self._close_kind = kind
        if self.drop_final_ack and self._peer_fin_at is not None and self._fin_end is None:
            self._fin_end = fin_end

    # -- the result -----------------------------------------------------------------------
    def _handshake_rtt(self) -> Rtt | None:
        """From the SYN the SYN/ACK answers to the SYN/ACK, None if either stamp is missing."""
        if self._answered_syn is None or self._syn_ack_stamp is None:
            return None
        syn_stamp = self._syn_stamps.get(self._answered_syn)
        return None if syn_stamp is None else rtt_between(syn_stamp, self._syn_ack_stamp)

    def _result_notes(self) -> list[str]:
        """The notes in order, then the ICMP errors ignored and the sends that failed."""
        notes = list(self._notes)
        notes += [
            f"{key} ({count}x) ignored: the connection was already open (RFC 5927)"
            for key, count in self._icmp_ignored.items()
        ]
        if self._failed_sends > STRAY_RECORDS:
            notes.append(f"{self._failed_sends} segments in all could not be sent")
        return notes

    def _kind(self) -> CloseKind:
        """The kind of close: none began before the handshake completed."""
        if self._handshake is not Handshake.OPEN:
            return CloseKind.NOT_ESTABLISHED
        return self._close_kind or CloseKind.INCOMPLETE

    def _build_result(self) -> CloseResult:
        records = self.log.records()
        clock = records[0].clock if records else None
        kind = self._kind()
        timings = self._timeline.timings(self.log, kind)
        stats = self._rx.stats()
        return CloseResult(
            target=_address(self.dst),
            port=self.dport,
            source=_address(self.src),
            source_port=self.sport,
            mode=self.mode,
            drop_final_ack=self.drop_final_ack,
            handshake=self._handshake or Handshake.INTERRUPTED,
            handshake_rtt=self._handshake_rtt(),
            syn_retransmissions=max(0, len(self._syn_tsvals) - 1),
            icmp=self._icmp,
            negotiated=self._negotiated,
            close_kind=kind,
            half_close=self._half_close_from is not None,
            bytes_after_our_fin=(
                0
                if self._half_close_from is None
                else max(0, stats.delivered_bytes - self._half_close_from)
            ),
            clock=clock,
            our_fin_to_peer_ack_us=timings.our_fin_to_peer_ack_us,
            our_fin_to_peer_fin_us=timings.our_fin_to_peer_fin_us,
            peer_ack_to_peer_fin_us=timings.peer_ack_to_peer_fin_us,
            peer_fin_to_our_ack_us=timings.peer_fin_to_our_ack_us,
            our_ack_to_our_fin_us=timings.our_ack_to_our_fin_us,
            our_fin_retransmissions=self._tx.fin_retransmissions,
            peer_fin_retransmissions=self._timeline.fin_retransmissions(self.log),
            peer_fin_retransmissions_end=self._fin_end,
            time_wait_due=time_wait_due(
                we_entered=self._we_entered_time_wait, peer_entered=self._peer_entered_time_wait
            ),
            time_wait_held_us=(
                None if self._time_wait_held is None else self._time_wait_held * 1e6
            ),
            time_wait_cut_short=self._time_wait_cut_short,
            time_wait_skipped=self._we_entered_time_wait and self.no_wait,
            our_final_state=self.our_state,
            peer_final_state=self.peer_state,
            bytes_sent=len(self.send_data),
            bytes_acked=self._tx.acked_bytes,
            received=self._rx.kept,
            interrupted=self._interrupted,
            error=self._error,
            notes=tuple(self._result_notes()),
            segments=records,
            receive=stats,
            invalid_by_kind=self._invalid.by_kind(),
            notices=self._notices.count,
            icmp_notices=self._notices.kept(),
            answers_rate_limited=self._answers_limited,
            unrecorded_segments=self._ladder.unrecorded,
            failed_sends=self._failed_sends,
        )
