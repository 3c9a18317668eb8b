"""One TCP connection in user space, from SYN to CLOSED, every segment logged.

A sans-IO state machine like ``SynProbe``: the engine calls ``start``, ``receive`` and
``handle_timer`` with the current time and carries out what the connection asks
(``segments_to_send``, ``next_deadline``); it never reads a clock or touches a socket. The
local kernel knows nothing of this connection; the engine suppresses its RSTs. Probes that
hold a whole conversation (close, timewait, profile) drive it as ``CloseProbe``, a subclass
that follows the close through the hooks listed in ``TcpConnection``. As aioquic splits its
connection's spaces, ``close_send`` keeps our send space (SND.UNA/NXT/WND, our FIN, the RTO's
backoff), ``close_receive`` the receive space (RCV.NXT, the window, the reassembly) and
``tcp_log`` what the segment log records (its budgets, and which segment answers which).

1. Handshake: a SYN with Linux's options, retransmitted on RTO (doubling) until
   ``handshake_timeout``. A SYN/ACK acking ISN+1 opens the connection; a RST acking ISN+1
   means the port is closed; an ICMP error of reachability (``IcmpError.decides_verdict``)
   quoting our 4-tuple and ISN ends it as filtered (or expired, for time exceeded); other
   ICMP messages quoting it are notices; silence is no answer.
2. The options of the SYN/ACK decide the rest (RFC 7323): timestamps on every segment we
   send iff the SYN/ACK carried them (TSecr is TS.Recent); window scaling iff it carried WS
   (we always offer 7); the peer's MSS, less the option bytes, bounds our data segments.
3. Our data (``send_data``) goes out in MSS-sized segments within the peer's window, PSH on
   the last, retransmitted go-back-N from SND.UNA on RTO (doubling, ``max_retries`` at most).
4. The peer's data is reassembled in order; every data or FIN segment is answered at once
   with an ACK of RCV.NXT (no delayed ACK: ladders are deterministic). Duplicates are
   re-ACKed, out-of-order segments buffered within the window (duplicate ACK), segments
   outside it ACKed and dropped (RFC 9293 §3.10.7.4). A RST counts only exactly at RCV.NXT;
   elsewhere in the window it draws a challenge ACK (RFC 5961 §3.2), else it is ignored.
   Strays are counted (``prober.core.strays``; ICMP messages that decide nothing are
   notices), never a verdict; their ACKs are rate-limited (RFC 5961 §7), and the log records
   a bounded number of them (and of bulk data segments).
5. Closing: our FIN follows once all our data is acknowledged, in CLOSE-WAIT or, if the
   subclass closes first (``_closes_first``), in ESTABLISHED. The peer's FIN is ACKed once
   everything before it is in, a copy of it re-ACKed (in TIME-WAIT restarting the 2 MSL,
   RFC 9293 §3.10.7.4). We hold TIME-WAIT for ``2 * msl`` (or end, ``no_wait``); an
   acceptable RST cuts it short (RFC 1337: the hazard). ``drop_final_ack`` never ACKs (nor
   consumes) the peer's FIN, as if each ACK were lost; its RST may then come after that FIN.

State tracking: our side moves with ``states.transition``. The peer's side is inferred: what
we send, it receives (``states.mirrored``), and what it sends, it sent. Two inferences need
evidence from the segments themselves: a FIN that does not ack our FIN was sent before our
FIN arrived (simultaneous close: ESTABLISHED → FIN-WAIT-1 → CLOSING), and a retransmitted FIN
means our ACK of it was lost (the peer is back in the state its FIN left it in).

Times: deadlines use the monotonic ``now`` arguments; reported intervals between segments use
the segment log's stamps (kernel stamps when every segment has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from prober.core.close_receive import DEFAULT_KEEP_BYTES, Placement, Reassembly, acceptable
from prober.core.close_send import SendSpace
from prober.core.close_timeline import Handshake, Negotiated
from prober.core.packets import DEFAULT_MSS, TcpTemplate, template
from prober.core.states import TcpEvent, TcpState, mirrored, transition
from prober.core.strays import IcmpNotices, IcmpReply, Stray, StrayCounts, off_tuple_kind
from prober.core.tcp_log import STRAY_RECORDS, BudgetedLog
from prober.core.timing import Stamp
from prober.core.wire import IcmpKind, Packet, TcpFlags, TcpSegment

__all__ = ["Abort", "SequenceSpaces", "TcpConnection"]

SEQ_MASK = 0xFFFFFFFF
OUR_WINDOW_SHIFT = 7  # the window scale our SYN offers (Linux's default for a 64 KiB+ buffer)
MAX_WINDOW_SHIFT = 14  # RFC 7323 §2.3: larger shifts are treated as 14
MAX_WINDOW_FIELD = 0xFFFF
# RFC 9293 §3.7.1 (IPv4) and RFC 8200 §5 (IPv6): what to assume when the SYN/ACK has no MSS.
DEFAULT_PEER_MSS = {4: 536, 6: 1220}
TIMESTAMP_OPTION_BYTES = 12  # NOP NOP TS: data segments shrink by it (RFC 6691)
# RFC 5961 §7: challenge ACKs (and ACKs of unacceptable segments) are rate-limited, so a storm
# of spoofed segments draws no storm of answers. Linux allows one per 500 ms per socket
# (tcp_invalid_ratelimit); prober allows a few more so its ladders still show them.
INVALID_ANSWERS_PER_SECOND = 10

_F = TcpFlags
_S = TcpState
_E = TcpEvent

# Our states in which segments of ours (data, FIN, or their retransmissions) may be due.
_CAN_SEND = frozenset({_S.ESTABLISHED, _S.CLOSE_WAIT, _S.FIN_WAIT_1, _S.CLOSING, _S.LAST_ACK})


class Abort(Enum):
    """What ends a connection before its close completed (what ``_on_abort`` hears)."""

    PEER_RESET = "peer-reset"  # an acceptable RST from the peer
    MAX_WAIT = "max-wait"  # max_wait ran out (we then reset the peer)
    RETRIES_EXHAUSTED = "retries-exhausted"  # max_retries ran out (we then reset the peer)


@dataclass(frozen=True, slots=True)
class SequenceSpaces:
    """Where a connection's sequence spaces stand, in absolute numbers: what a probe needs
    to go on using the 4-tuple after the connection is over (TIME-WAIT probes, profile).

    ``snd_max`` is one past the highest sequence number we sent (our FIN included), which
    is the peer's RCV.NXT once it has everything; ``rcv_nxt`` the next one we expect of the
    peer (its FIN counted once consumed), its SND.NXT once we have everything.
    """

    isn: int
    snd_max: int
    peer_isn: int | None  # None: no SYN/ACK was accepted
    rcv_nxt: int
    timestamps: bool  # negotiated: our segments carry TSval/TSecr
    ts_recent: int  # the peer's last TSval we keep (TSecr of our next segment)
    window_field: int  # the window field our segments carry
    segments_emitted: int  # segments the connection handed to the engine (indices 0..n-1)


def _delta(a: int, b: int) -> int:
    """``a - b`` in 32-bit sequence space, as a signed number (RFC 1982 style)."""
    return ((a - b + 0x80000000) & SEQ_MASK) - 0x80000000


class TcpConnection:
    """One TCP connection opened, used and closed in user space, every segment logged.

    Args:
        version: IP version, 4 or 6.
        src, dst: packed addresses (4 or 16 bytes); sport, dport: ports.
        isn: our initial sequence number (a keyed cookie, see ``IsnKey``).
        send_data: bytes to send once the connection is open (e.g. a request).
        drop_final_ack: never acknowledge the peer's FIN, as if every ACK of it was lost.
        msl: the maximum segment lifetime; we hold TIME-WAIT for ``2 * msl`` seconds.
        no_wait: end on entering TIME-WAIT instead of holding it.
        max_wait: seconds from the SYN/ACK until we give up on the close (TIME-WAIT, which
            has its own 2 MSL timer, is not counted).
        handshake_timeout: seconds from the first SYN until we give up on a SYN/ACK.
        rto: initial retransmission timeout in seconds, doubled on each expiry.
        max_retries: retransmissions of one segment (after the handshake) before giving up.
        receive_window: the window we advertise, in bytes (scaled by 2**7 when the peer
            agrees to window scaling; at most 65535 otherwise). It also caps the
            out-of-order bytes we buffer.
        keep_received: in-order bytes of the peer's kept (``received``); later ones are
            counted and dropped, so a peer that sends without end costs no memory.
        ttl: IP TTL (hop limit) of our segments.

    Raises:
        ValueError: for an argument out of range.

    Subclasses (``CloseProbe``) override the hooks under "what a subclass may override":
    they mark events and must not send or change states. ``index`` there is the engine
    index of the segment being built; the segment being handled is ``log.next_arrival``
    until it is logged. A subclass may end the connection itself with ``_end_early``;
    ``_revision`` counts changes of anything a result reports (a cached one is stale).
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
        most = MAX_WINDOW_FIELD << OUR_WINDOW_SHIFT
        if not 0 < receive_window <= most:
            raise ValueError(f"receive_window must be 1..{most}")
        if not 0 < ttl <= 255:
            raise ValueError("ttl must be 1..255")
        if keep_received < 0:
            raise ValueError("keep_received must be >= 0")
        self.version = version
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.isn = isn
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

        self._ladder = BudgetedLog(isn)  # the log's budgets, and what answers what
        self.log = self._ladder.log
        self.our_state = _S.CLOSED
        self.peer_state = _S.LISTEN  # assumed until an answer says otherwise
        self._started = False
        self._done = False
        self._revision = 0
        self._outbox: list[bytes] = []
        self._next_index = 0  # the engine's index of the next segment we hand out
        self._failed_sends = 0
        self._invalid = StrayCounts()
        self._notices = IcmpNotices()
        self._icmp_ignored: dict[str, int] = {}  # icmp-after-answer by type and code
        self._answers_limited = 0
        self._answer_bucket_start = float("-inf")
        self._answers_in_bucket = 0
        self._notes: list[str] = []
        self._error: str | None = None

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

        # Send sequence space as offsets from ISN+1 (see close_send).
        self._tx = SendSpace(self.send_data, rto, DEFAULT_PEER_MSS[version])
        self._half_close_from: int | None = None  # stream offset of the first half-close byte

        # Receive sequence space as offsets from the peer's ISN+1: RCV.NXT, the window we
        # advertise (in bytes) and the reassembly, capped by that window.
        self._peer_isn = 0
        self._rx = Reassembly(self._window_field, keep_received)
        self._last_ack_sent = 0  # RCV.NXT in our last segment (RFC 7323 Last.ACK.sent)
        self._ts_recent = 0
        self._peer_fin_at: int | None = None  # offset of the peer's FIN, once seen
        self._peer_fin_consumed = False  # RCV.NXT has passed it (never, with drop_final_ack)
        self._peer_awaits_fin_ack = False  # our next ACK covering its FIN reaches it
        self._peer_state_after_fin = _S.CLOSED

        # Timers (monotonic seconds), None when not armed.
        self._handshake_deadline: float | None = None
        self._rto_deadline: float | None = None
        self._max_wait_deadline: float | None = None
        self._time_wait_deadline: float | None = None
        self._probe_deadline: float | None = None  # the subclass's own (see the docstring)

        # Our TIME-WAIT, and whether either side entered one.
        self._we_entered_time_wait = False
        self._peer_entered_time_wait = False
        self._time_wait_entered: float | None = None
        self._time_wait_held: float | None = None
        self._time_wait_cut_short = False
        self._prebuild_templates()

    # -- inputs ---------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Send the SYN; the handshake deadline and the SYN's RTO start now.

        Raises:
            RuntimeError: if it was started before.
        """
        if self._started:
            raise RuntimeError("probe already started")
        self._started = True
        self._handshake_deadline = now + self.handshake_timeout
        self._send_syn(now)

    def sent(self, index: int, stamp: Stamp) -> None:
        """The engine sent segment ``index`` (counted from 0 over the probe's life): log it."""
        self._ladder.sent(index, stamp)
        if index in self._syn_tsvals:
            self._syn_stamps[index] = stamp
        self._revision += 1

    def send_kernel_stamp(self, index: int, kernel_ns: int) -> None:
        """The kernel TX timestamp of segment ``index`` (it may come after the answer)."""
        self.log.kernel_stamp_sent(index, kernel_ns)
        stamp = self._syn_stamps.get(index)
        if stamp is not None:
            self._syn_stamps[index] = stamp.with_kernel(kernel_ns)
        self._revision += 1

    def send_failed(self, index: int, error: str) -> None:
        """Segment ``index`` could not be sent. A SYN that cannot be sent ends the connection
        (nothing else would work either); a later one is lost, for the timers to deal with."""
        self._error = error
        self._failed_sends += 1
        self._ladder.send_failed(index, error)
        if self._failed_sends <= STRAY_RECORDS:
            self._notes.append(f"segment {index} not sent: {error}")
        self._revision += 1
        if self.our_state is _S.SYN_SENT and index in self._syn_tsvals and not self._done:
            self._handshake = Handshake.SEND_FAILED
            self._finish()

    def receive(self, packet: Packet, now: float, stamp: Stamp) -> bool:
        """Offer a packet routed to this 4-tuple; True if it belongs to this connection."""
        if not self._started:
            return False
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            # The deadline came first (the engine's timer had not run yet): act on it before
            # the packet, as the timer would have, so no deadline is left behind ``now``.
            self.handle_timer(now)
        tcp = packet.tcp
        if tcp is not None:
            if packet.src != self.dst or tcp.sport != self.dport or tcp.dport != self.sport:
                return False
            if self._done:
                # Late (e.g. a FIN retransmitted after no_wait): log it, change nothing.
                self._log_received(packet, stamp, "after the probe ended", stray=True)
                self._revision += 1
                return True
            try:
                if self.our_state is _S.SYN_SENT:
                    return self._receive_in_syn_sent(packet, tcp, now, stamp)
                self._receive_synchronized(packet, tcp, now, stamp)
            finally:
                self._ladder.handled()
            self._revision += 1
            return True
        return self._receive_icmp(packet)

    def count_invalid(self, packet: Packet) -> None:
        """Count a packet the engine found no taker for: ``receive`` refuses only packets off
        this 4-tuple (from another address or port, ICMP quoting another 4-tuple)."""
        kind = off_tuple_kind(packet, self.src, self.dst, self.sport, self.dport)
        if kind is not None:
            self._invalid.count(kind)
            self._revision += 1

    def handle_timer(self, now: float) -> None:
        """Act on every deadline due at ``now``."""
        while not self._done:
            if self.our_state is _S.SYN_SENT:
                if self._handshake_deadline is not None and now >= self._handshake_deadline:
                    self._handshake = Handshake.NO_ANSWER
                    self._finish()
                elif self._rto_deadline is not None and now >= self._rto_deadline:
                    self._tx.rto *= 2
                    self._send_syn(now)
                else:
                    return
            elif self._time_wait_deadline is not None and now >= self._time_wait_deadline:
                self._set_ours(transition(self.our_state, _E.TIMEOUT_2MSL))
                self._time_wait_held = now - (self._time_wait_entered or now)
                self._finish()
            elif self._max_wait_deadline is not None and now >= self._max_wait_deadline:
                self._notes.append(f"max_wait ({self.max_wait:g} s) ran out in {self.our_state}")
                self._on_abort(Abort.MAX_WAIT)
                self._end_early(now, "max_wait")
            elif self._probe_deadline is not None and now >= self._probe_deadline:
                self._probe_deadline = None
                self._on_probe_deadline(now)
            elif self._rto_deadline is not None and now >= self._rto_deadline:
                self._on_rto(now)
            else:
                return
        self._revision += 1

    # -- outputs --------------------------------------------------------------------------
    def segments_to_send(self) -> list[bytes]:
        """The segments due now, in order (each counts one engine index, from 0)."""
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` is due next, or None (no timer, or the end)."""
        if self._done:
            return None
        timers = (self._handshake_deadline, self._rto_deadline, self._max_wait_deadline,
                  self._time_wait_deadline, self._probe_deadline)
        deadlines = [d for d in timers if d is not None]
        return min(deadlines) if deadlines else None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def received(self) -> bytes:
        """The peer's data delivered in order so far (its first ``keep_received`` bytes)."""
        return self._rx.kept

    def spaces(self) -> SequenceSpaces:
        """The sequence spaces as they stand now (see ``SequenceSpaces``)."""
        opened = self._negotiated is not None
        return SequenceSpaces(
            isn=self.isn,
            snd_max=self._seq(self._tx.max_sent),
            peer_isn=self._peer_isn if opened else None,
            rcv_nxt=self._rseq(self._rcv_nxt),
            timestamps=self._timestamps,
            ts_recent=self._ts_recent,
            window_field=self._window_field,
            segments_emitted=self._next_index,
        )

    # -- what a subclass may override (see the class docstring) ---------------------------
    def _closes_first(self) -> bool:
        """True: our FIN follows our data in ESTABLISHED; False: only in CLOSE-WAIT."""
        return False

    def _on_our_fin(self, index: int) -> None:
        """Our first FIN is segment ``index``."""

    def _on_ack_of_our_fin(self) -> None:
        """The segment being handled is the first to acknowledge our FIN."""

    def _on_peer_fin(self, now: float, *, acks_our_fin: bool) -> None:
        """The segment being handled carries the peer's FIN, first seen; ``acks_our_fin``:
        it acknowledges our FIN too."""

    def _on_peer_fin_copy(self, now: float) -> None:
        """The segment being handled carries a further copy of the peer's FIN."""

    def _on_our_ack_of_peer_fin(self, index: int) -> None:
        """Segment ``index`` acknowledges the peer's FIN (again after each copy of it)."""

    def _on_abort(self, cause: Abort) -> None:
        """The connection ends before its close completed (before our RST, if we send one)."""

    def _on_probe_deadline(self, now: float) -> None:
        """The subclass's own timer, ``_probe_deadline``, expired (checked after max_wait,
        before the RTO; cleared before this call, at the end and on entering TIME-WAIT)."""

    # -- internals: sequence numbers ------------------------------------------------------
    @property
    def _rcv_nxt(self) -> int:
        return self._rx.rcv_nxt

    def _seq(self, offset: int) -> int:
        return (self.isn + 1 + offset) & SEQ_MASK

    def _rseq(self, offset: int) -> int:
        return (self._peer_isn + 1 + offset) & SEQ_MASK

    def _send_offset(self, ack: int) -> int:
        """An ack number as an offset in our sequence space (relative to SND.UNA)."""
        una = self._tx.una
        return una + _delta(ack, self._seq(una))

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
        self._handshake_deadline = self._rto_deadline = self._max_wait_deadline = None
        self._time_wait_deadline = self._probe_deadline = None
        self._revision += 1

    def _end_early(self, now: float, why: str) -> None:
        """Stop before the close completed: free the peer with a RST unless it is closed."""
        if self.our_state not in (_S.CLOSED, _S.TIME_WAIT) and self.peer_state is not _S.CLOSED:
            self._send_rst(now, f"{why}: RST to free the peer's state")
        self._finish()

    # -- internals: sending ---------------------------------------------------------------
    def _template(self, flags: TcpFlags, window: int, timestamps: bool) -> TcpTemplate:
        # Shared per process (packets.template): no template build after the first.
        return template(
            self.version, flags, ttl=self.ttl, window=window, window_scale=OUR_WINDOW_SHIFT,
            timestamps=timestamps,
        )

    def _prebuild_templates(self) -> None:
        """Build (once per process) every template the conversation may need, now: a build
        must not delay the handshake's ACK."""
        windows = {self._window_field, max(1, self.receive_window >> OUR_WINDOW_SHIFT)}
        for flags in (_F.SYN, _F.ACK, _F.PSH | _F.ACK, _F.FIN | _F.ACK, _F.RST):
            for timestamps in (True, False):
                for window in windows:
                    self._template(flags, window, timestamps)

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
        bulk: bool = False,
    ) -> int:
        """Build and queue one segment, to be logged once sent; returns its engine index.
        States move first, so its record shows them after it; it answers the segment being
        handled, if any. ``bulk`` (data, a pure ACK): recorded only within the bulk budget,
        and never when it answers a segment that was not recorded."""
        if our_event is not None:
            self._set_ours(transition(self.our_state, our_event))
        if ack and self._peer_awaits_fin_ack and self._rcv_nxt > (self._peer_fin_at or 0):
            # This segment acknowledges the peer's FIN: the peer leaves the state its FIN
            # put it in (FIN-WAIT-1, CLOSING or LAST-ACK).
            self._peer_awaits_fin_ack = False
            self._set_peer(transition(self.peer_state, _E.RECEIVE_ACK_OF_FIN))
            bulk = False
            self._on_our_ack_of_peer_fin(self._next_index)
        if peer_event is None and our_event is not None:
            peer_event = mirrored(our_event)
        if peer_event is not None:
            self._set_peer(transition(self.peer_state, peer_event))
        # Until the SYN/ACK, the window field is unscaled (RFC 7323 §2.2) and the SYN always
        # offers timestamps; afterwards both follow what the peer agreed to.
        timestamps = bool(flags & _F.SYN) or self._timestamps
        segment = self._template(flags, self._window_field, timestamps)
        tsval = int(now * 1000) & SEQ_MASK  # RFC 7323: a millisecond clock, ours is `now`
        ack_number = self._rseq(self._rcv_nxt) if ack else 0
        tsecr = 0 if flags & _F.SYN else self._ts_recent  # RSTs echo TS.Recent too
        raw = segment.build(
            self.src, self.dst, self.sport, self.dport, self._seq(offset), ack_number, tsval,
            tsecr, payload,
        )
        if ack:
            self._last_ack_sent = self._rcv_nxt
        index = self._next_index
        self._next_index += 1
        self._outbox.append(raw)
        self._ladder.queue(index, raw, self.our_state, self.peer_state, note, bulk=bulk)
        return index

    def _send_syn(self, now: float) -> None:
        first = not self._syn_tsvals
        index = self._emit(
            _F.SYN, -1, now, ack=False, our_event=_E.SEND_SYN if first else None,
            note="" if first else "retransmission",
        )
        self._syn_tsvals[index] = int(now * 1000) & SEQ_MASK
        self._tx.syn_out()
        self._rto_deadline = now + self._tx.rto

    def _send_ack(self, now: float, note: str = "", *, bulk: bool = False) -> None:
        self._emit(_F.ACK, self._tx.nxt, now, note=note, bulk=bulk)

    def _answer_invalid(self, now: float, note: str) -> None:
        """ACK an unacceptable segment (RFC 9293 §3.10.7.4) or challenge one (RFC 5961),
        at most INVALID_ANSWERS_PER_SECOND times a second (RFC 5961 §7)."""
        if now - self._answer_bucket_start >= 1.0:
            self._answer_bucket_start, self._answers_in_bucket = now, 0
        if self._answers_in_bucket >= INVALID_ANSWERS_PER_SECOND:
            self._answers_limited += 1
            return
        self._answers_in_bucket += 1
        self._send_ack(now, note)

    def _send_rst(self, now: float, note: str) -> None:
        # RST carries SND.NXT and no ACK (RFC 9293 §3.10.7.1 for a connection we abort).
        # snd_max, not a go-back-N-rewound snd_nxt: the peer expects the highest we sent.
        self._emit(_F.RST, self._tx.max_sent, now, ack=False, our_event=_E.SEND_RST, note=note)

    def _pump(self, now: float, *, force: bool = False) -> None:
        """Send what is due: new (or go-back-N) data within the window, then our FIN;
        ``force`` sends at least one byte when the window is shut (a window probe)."""
        if self._done or self.our_state not in _CAN_SEND:
            return
        tx = self._tx
        for segment in tx.data_due(force=force):
            self._emit(
                _F.ACK | _F.PSH if segment.last else _F.ACK, segment.offset, now,
                payload=segment.payload, bulk=True,
                note="retransmission" if segment.retransmission else "",
            )
        if (
            not tx.fin_wanted
            and tx.all_data_acked
            and (
                (self.our_state is _S.ESTABLISHED and self._closes_first())
                or self.our_state is _S.CLOSE_WAIT
            )
        ):
            tx.fin_wanted = True
        if tx.fin_due:
            if tx.fin_sent:
                self._emit(
                    _F.FIN | _F.ACK, tx.fin_offset, now, peer_event=_E.RECEIVE_FIN,
                    note="retransmission",
                )
            else:
                self._on_our_fin(self._next_index)
                self._emit(_F.FIN | _F.ACK, tx.fin_offset, now, our_event=_E.SEND_FIN)
            tx.fin_out()
        self._arm_rto(now)

    def _arm_rto(self, now: float) -> None:
        """Run the retransmission timer while anything is outstanding (RFC 6298 5.1/5.2).
        Data held back by a shut window keeps it running: it doubles as the persist timer,
        whose expiry sends a one-byte window probe."""
        if not self._tx.outstanding:
            self._rto_deadline = None
        elif self._rto_deadline is None:
            self._rto_deadline = now + self._tx.rto

    def _on_rto(self, now: float) -> None:
        self._rto_deadline = None
        if not self._tx.back_off(self.max_retries):
            self._notes.append(f"retransmissions exhausted after {self.max_retries} retries")
            self._on_abort(Abort.RETRIES_EXHAUSTED)
            self._end_early(now, "retransmissions exhausted")
            return
        self._pump(now, force=True)

    # -- internals: receiving -------------------------------------------------------------
    def _log_received(
        self, packet: Packet, stamp: Stamp, note: str, *, bulk: bool = False, stray: bool = False
    ) -> int:
        """Log a received segment (see ``tcp_log``); what we send while handling it answers it."""
        return self._ladder.received(
            packet, stamp, self.our_state, self.peer_state, note, bulk=bulk, stray=stray
        )

    def _receive_icmp(self, packet: Packet) -> bool:
        icmp = packet.icmp
        if icmp is None:
            return False
        quoted = icmp.quoted
        if (quoted.src, quoted.dst, quoted.sport, quoted.dport) != (
            self.src, self.dst, self.sport, self.dport
        ):
            return False
        self._revision += 1
        if self.our_state is _S.SYN_SENT and not self._done:
            if quoted.seq != self.isn:
                # Quotes a segment we never sent from this 4-tuple: spoofed, or stale.
                self._invalid.count(Stray.ICMP_NOT_OURS)
                return True
            if icmp.decides_verdict:
                self._icmp = IcmpReply.of(packet)
                expired = icmp.kind is IcmpKind.TIME_EXCEEDED
                self._handshake = Handshake.EXPIRED if expired else Handshake.FILTERED
                self._finish()
                return True
        if not icmp.decides_verdict:
            # Not an error of reachability (redirect, source quench, parameter problem,
            # packet too big): news about the path, kept as a notice, never a verdict.
            self._notices.add(packet)
            return True
        # An error of reachability on the open connection (RFC 5927: a soft error): it
        # decides nothing, and is counted as a stray with its type and code in the notes.
        self._invalid.count(Stray.ICMP_AFTER_ANSWER)
        key = f"ICMPv{packet.version} type {icmp.type} code {icmp.code}"
        self._icmp_ignored[key] = self._icmp_ignored.get(key, 0) + 1
        return True

    def _receive_in_syn_sent(
        self, packet: Packet, tcp: TcpSegment, now: float, stamp: Stamp
    ) -> bool:
        flags = tcp.flags
        acks_syn = bool(flags & _F.ACK) and tcp.ack == (self.isn + 1) & SEQ_MASK
        if flags & _F.RST:
            if not acks_syn:
                # RFC 9293 §3.10.7.3: a RST without an acceptable ACK is dropped.
                self._invalid.count(Stray.WRONG_ACK)
                self._log_received(packet, stamp, "RST not acking our SYN: ignored", stray=True)
                return True
            self._set_ours(transition(self.our_state, _E.RECEIVE_RST))
            self._set_peer(transition(self.peer_state, mirrored(_E.RECEIVE_RST)))
            self._log_received(packet, stamp, "")
            self._handshake = Handshake.CLOSED
            self._finish()
            return True
        if not (flags & _F.SYN and flags & _F.ACK):
            # A bare SYN (simultaneous open), ACK, FIN or data: it answers no SYN of ours
            # (RFC 9293 §3.10.7.3 drops it), named as syn and halfopen name it.
            self._invalid.count(Stray.OTHER_SEGMENT)
            self._log_received(packet, stamp, "answers no SYN: ignored", stray=True)
            return True
        if not acks_syn:
            # An old or spoofed SYN/ACK: not for us.
            self._invalid.count(Stray.WRONG_ACK)
            self._log_received(packet, stamp, "does not ack our SYN: ignored", stray=True)
            return True
        self._open(packet, tcp, now, stamp)
        self._revision += 1
        return True

    def _open(self, packet: Packet, tcp: TcpSegment, now: float, stamp: Stamp) -> None:
        options = tcp.options
        self._handshake = Handshake.OPEN
        self._syn_ack_stamp = stamp
        self._peer_isn = tcp.seq
        self.log.peer_isn = tcp.seq
        self._timestamps = options.timestamp is not None
        if options.timestamp is not None:
            self._ts_recent = options.timestamp[0]
        # The SYN that this SYN/ACK answers: its TSecr names it, else assume the last one.
        tsecr = None if options.timestamp is None else options.timestamp[1]
        matching = [i for i, tsval in self._syn_tsvals.items() if tsecr == tsval]
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
            self._rx.reset_window(self._window_field << OUR_WINDOW_SHIFT)
        peer_mss = options.mss if options.mss else DEFAULT_PEER_MSS[self.version]
        option_bytes = TIMESTAMP_OPTION_BYTES if self._timestamps else 0
        mss = max(1, min(peer_mss, DEFAULT_MSS[self.version]) - option_bytes)
        self._negotiated = Negotiated(
            mss=peer_mss,
            window_scale=None if options.window_scale is None else self._peer_shift,
            sack_permitted=options.sack_permitted,
            timestamps=self._timestamps,
        )
        # The SYN/ACK's window is never scaled (RFC 7323 §2.2).
        self._tx.opened(tcp.window, mss)
        self._rto_deadline = self._handshake_deadline = None
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
                self._answer_invalid(now, "")
            else:
                # RFC 5961 §4: a SYN on a synchronized connection draws a challenge ACK.
                self._invalid.count(Stray.SYN_ON_OPEN)
                self._log_received(packet, stamp, "SYN in a synchronized state", stray=True)
                self._answer_invalid(now, "challenge ACK (RFC 5961)")
            return
        if not flags & _F.ACK:
            self._invalid.count(Stray.NO_ACK_FLAG)
            self._log_received(packet, stamp, "no ACK flag: dropped", stray=True)
            return

        notes: list[str] = []
        fin = bool(flags & _F.FIN)
        payload = tcp.payload
        seg_len = len(payload) + fin
        start = self._receive_offset(tcp.seq)
        end = start + seg_len
        fin_at = end - 1 if fin else None
        fin_copy = fin and self._peer_fin_at is not None and fin_at == self._peer_fin_at
        rx = self._rx
        window_end = rx.window_end

        # RFC 9293 §3.10.7.4, first check: is the segment in the receive window?
        if not acceptable(start, seg_len, rx.rcv_nxt, rx.window):
            bulk = stray = False
            if fin_copy:
                notes.append(self._peer_fin_again(now))
            elif end <= rx.rcv_nxt:
                notes.append("retransmission")
                bulk = True
            else:
                notes.append("outside the receive window: dropped")
                self._invalid.count(Stray.OUT_OF_WINDOW)
                rx.beyond_window(len(payload), whole_segment=True)
                stray = True
            self._log_received(packet, stamp, "; ".join(notes), bulk=bulk, stray=stray)
            if fin_copy:
                if not self.drop_final_ack:
                    self._send_ack(now)
            else:
                self._answer_invalid(now, "")
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
        tx = self._tx
        if acked > tx.max_sent:
            self._invalid.count(Stray.WRONG_ACK)
            note = "acknowledges data not yet sent: dropped"
            self._log_received(packet, stamp, note, stray=True)
            self._answer_invalid(now, "")
            return
        fin_acked_now = False
        if acked > tx.una:
            fin_acked_now = tx.acknowledged(acked)
            # RFC 6298 5.2/5.3: stop the timer when all is acked, else restart it.
            self._rto_deadline = now + tx.rto if tx.una < tx.max_sent else None
            if fin_acked_now:
                self._on_ack_of_our_fin()
        if acked >= tx.una:
            tx.wnd = tcp.window << self._peer_shift

        # Data and FIN, trimmed to the window.
        need_ack = False
        fin_first_seen = fin and self._peer_fin_at is None
        placement: Placement | None = None
        if seg_len:
            need_ack = True
            data, data_at = payload, start
            if data_at < rx.rcv_nxt:
                data = data[rx.rcv_nxt - data_at :]
                data_at = rx.rcv_nxt
                if payload:
                    notes.append("retransmission")
            if data_at + len(data) > window_end:
                beyond = data_at + len(data) - window_end
                data = data[: max(0, window_end - data_at)]
                rx.beyond_window(beyond, whole_segment=False)
                notes.append("trimmed to the receive window")
                if fin_at is not None and fin_at >= window_end:
                    fin, fin_first_seen, fin_copy = False, False, False
            if self._peer_fin_at is not None and data and data_at + len(data) > self._peer_fin_at:
                data = data[: max(0, self._peer_fin_at - data_at)]
                notes.append("data beyond the peer's FIN ignored")
            if data:
                if tx.fin_sent:
                    # A half-close is data the peer sent after our FIN reached it: its ACK
                    # covers our FIN. Data that crossed our FIN on the way is not one.
                    if acked > len(self.send_data):
                        notes.append("data after our FIN")
                        if start >= rx.rcv_nxt:  # new data, not a retransmission
                            first = self._half_close_from
                            self._half_close_from = (
                                data_at if first is None else min(first, data_at)
                            )
                    else:
                        notes.append("crossed our FIN")
                placement = rx.add(data_at, data)
                if placement is Placement.BUFFERED:
                    notes.append("out of order")
                elif placement is Placement.DROPPED:
                    notes.append("out of order, no room: dropped")
            if fin_first_seen:
                assert fin_at is not None
                self._peer_fin_at = fin_at
                notes.extend(self._peer_fin_first(now, acks_our_fin=acked > len(self.send_data)))
            elif fin_copy:
                notes.append(self._peer_fin_again(now))
            if self.drop_final_ack and fin and not payload and fin_at == rx.rcv_nxt:
                need_ack = False  # the FIN alone, in order: we act as if it was lost

        # Consume the peer's FIN once everything before it is in (never with drop_final_ack).
        fin_consumed_now = False
        fin_reached = self._peer_fin_at is not None and rx.rcv_nxt == self._peer_fin_at
        if fin_reached and not self.drop_final_ack and not self._peer_fin_consumed:
            rx.consume_fin()
            self._peer_fin_consumed = fin_consumed_now = True
            self._peer_awaits_fin_ack = True

        if fin_acked_now and fin_consumed_now:
            self._set_ours(transition(self.our_state, _E.RECEIVE_FIN_ACKING_FIN))
        elif fin_acked_now:
            self._set_ours(transition(self.our_state, _E.RECEIVE_ACK_OF_FIN))
        elif fin_consumed_now:
            self._set_ours(transition(self.our_state, _E.RECEIVE_FIN))
        # Plain data (no FIN, no news about our FIN) is bulk: recorded within the budget.
        bulk = bool(payload) and not (fin or fin_acked_now or fin_consumed_now)
        self._log_received(packet, stamp, "; ".join(notes), bulk=bulk)
        if need_ack:
            out_of_order = placement in (Placement.BUFFERED, Placement.DROPPED)
            self._send_ack(now, "duplicate ACK" if out_of_order else "", bulk=True)
        self._after_input(now)

    def _peer_fin_first(self, now: float, *, acks_our_fin: bool) -> list[str]:
        """The peer's FIN, first seen: the state it put the peer in."""
        if self._tx.fin_sent and not acks_our_fin:
            # Simultaneous close: it sent its FIN before ours arrived, ESTABLISHED → FIN-WAIT-1,
            # then ours (on its way) takes it to CLOSING. Our FIN's record showed CLOSE-WAIT
            # for the peer: the guess before this evidence.
            peer = transition(transition(_S.ESTABLISHED, _E.SEND_FIN), _E.RECEIVE_FIN)
        else:
            peer = transition(self.peer_state, _E.SEND_FIN)
        self._on_peer_fin(now, acks_our_fin=acks_our_fin)
        self._set_peer(peer)
        self._peer_state_after_fin = peer
        return ["not acknowledged (--drop-final-ack)"] if self.drop_final_ack else []

    def _peer_fin_again(self, now: float) -> str:
        """A further copy of the peer's FIN: re-ACK it unless dropping."""
        self._on_peer_fin_copy(now)
        if self.drop_final_ack:
            return "FIN retransmission, not acknowledged (--drop-final-ack)"
        # It never got our ACK: it is still where its FIN left it.
        self._set_peer(self._peer_state_after_fin)
        self._peer_awaits_fin_ack = True
        if self.our_state is _S.TIME_WAIT and self._time_wait_deadline is not None:
            self._time_wait_deadline = now + 2 * self.msl  # RFC 9293: restart the 2 MSL
            return "FIN retransmission, re-ACKed in TIME-WAIT"
        return "FIN retransmission, re-ACKed"

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
            self._on_abort(Abort.PEER_RESET)
            self._set_ours(transition(self.our_state, _E.RECEIVE_RST))
            self._set_peer(transition(self.peer_state, mirrored(_E.RECEIVE_RST)))
            self._log_received(packet, stamp, note)
            self._finish()
        elif self._rcv_nxt <= at < self._rx.window_end:
            # RFC 5961 §3.2: not accepted; a challenge ACK asks a genuine peer to send a RST
            # with exactly RCV.NXT. A storm of these draws at most a few answers a second.
            self._invalid.count(Stray.RST_NOT_EXACT)
            self._log_received(packet, stamp, "RST in window but not exact", stray=True)
            self._answer_invalid(now, "challenge ACK (RFC 5961)")
        else:
            self._invalid.count(Stray.RST_OUT_OF_WINDOW)
            self._log_received(packet, stamp, "RST outside the window: ignored", stray=True)

    def _after_input(self, now: float) -> None:
        """What a change of state asks for: TIME-WAIT's timer, the end, or more to send."""
        if self.our_state is _S.TIME_WAIT and self._time_wait_entered is None:
            self._time_wait_entered = now
            self._rto_deadline = self._max_wait_deadline = self._probe_deadline = None
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

