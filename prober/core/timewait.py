"""The TIME-WAIT probe: make the peer the active closer, then ask its 4-tuple what it holds.

Who holds TIME-WAIT (RFC 9293 §3.6): the side that sends the first FIN. It stays there 2 MSL
so that a lost final ACK can be repeated and old duplicates die out, and it answers what
arrives on the 4-tuple meanwhile. How long depends on the stack, never on this machine:
Linux holds 60 s (TCP_TIMEWAIT_LEN, not tunable), FreeBSD 2 x net.inet.tcp.msl (60 s by
default), Windows TcpTimedWaitDelay (120 s, up to 240), lwIP 2 x TCP_MSL (120 s), small
user-space stacks a few seconds or none. So the probe measures; it assumes no length.

One ``TimeWaitProbe`` is one connection with one ``Role``:

1. Phase one is a ``CloseProbe`` in ``PEER_CLOSES`` mode: handshake, our data (a request the
   server answers and closes on), the peer's FIN, our ACK of it, our FIN, its ACK. The peer
   is then the one in TIME-WAIT (``PeerClose.FIN``); the moment its ACK of our FIN arrives
   is ``t0``, the start of its TIME-WAIT as far as we can see it. A peer that resets our FIN
   (Linux with ``tcp_max_tw_buckets=0`` keeps no FIN-WAIT-2 state either) or closes with a
   RST holds none, and one that does not close within ``close_timeout`` is not measured.
2. Phase two sends the role's script of segments on the same 4-tuple (``ReuseKind``) and
   records each answer (``ReuseAnswer``). What a peer in TIME-WAIT does with them
   (RFC 9293 §3.10.7.4, "TIME-WAIT STATE"; Linux: tcp_timewait_state_process):

   - ``SYN_BELOW``: a SYN whose ISN lies below the old connection's sequence space, with no
     timestamp option. It is not acceptable, so the peer answers with an ACK of the old
     connection (seq = its old SND.NXT, ack = our old SND.NXT): ``TIME_WAIT_ACK``. A peer
     without TIME-WAIT answers as a listener: SYN/ACK, or RST where nothing listens. This
     probe does not disturb what it measures: Linux restarts the TIME-WAIT timer on a
     segment with ACK set or one PAWS rejects, and this one is neither.
   - ``SYN_ABOVE`` (an ISN above the old space) and ``SYN_NEWER_TSVAL`` (below, but with a
     TSval newer than the old connection's): RFC 1122 §4.2.2.13 and RFC 6191 let the peer
     reopen the connection from TIME-WAIT. Linux does, with ISN = old SND.NXT + 65537
     (tw_snd_nxt + 65535 + 2), and the TIME-WAIT is gone.
   - ``FIN_AGAIN``: our FIN once more, as if the peer's final ACK had been lost. The peer
     ACKs it again and restarts 2 MSL (RFC 9293; Linux: inet_twsk_reschedule), which is
     the textbook's "waits 2MSL anew" made visible by the duration that follows.
   - ``RST_OFFSET`` then ``RST_EXACT``: a RST at RCV.NXT + 1 is ignored; one at exactly
     RCV.NXT is accepted by RFC 9293 and kills the TIME-WAIT ("TIME-WAIT assassination",
     RFC 1337), unless the stack protects it (Linux ``tcp_rfc1337=1``).

   The roles: ``DURATION`` repeats ``SYN_BELOW`` every ``step`` seconds until the answer
   stops being a TIME-WAIT ACK (or ``max_time``), with ``FIN_AGAIN`` at ``refin_at`` if
   asked; ``ABOVE_ISN``, ``NEWER_TSVAL`` and ``ASSASSINATE`` each end the TIME-WAIT they
   touch, so each runs on a connection of its own (a fresh source port) and the duration
   on one nobody touched.

Linux answers a TIME-WAIT's unacceptable segments at most once per 500 ms
(tcp_invalid_ratelimit), SYNs included: the scripts space their SYNs beyond that, and the
duration's step should be too (a shorter one may draw silences). A TIME-WAIT ACK is the same
segment whichever probe drew it, so it is credited to the probe whose answer window is open
(from its send until the next probe's); SYN/ACKs and RSTs name their probe by their ack.

Sans-IO like every probe: time is the ``now`` argument; segments out, records and a
``TimeWaitConnection`` (``prober.core.timewait_result``) as the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from prober.core import packets
from prober.core.close import (
    CloseKind,
    CloseMode,
    CloseProbe,
    CloseResult,
    Handshake,
    SequenceSpaces,
)
from prober.core.handshake_conversation import tsval_at
from prober.core.parse import parse_packet
from prober.core.states import TcpState
from prober.core.timewait_result import (
    PeerClose,
    ReuseAnswer,
    ReuseKind,
    ReuseProbe,
    Role,
    TimeWaitConnection,
    linux_time_wait_isn,
    path_rtt_s,
)
from prober.core.timing import Stamp, rtt_between
from prober.core.trace import Direction, SegmentLog
from prober.core.wire import Packet, TcpFlags

__all__ = ["TimeWaitProbe", "script_for"]

MASK = 0xFFFFFFFF
# Below-ISN SYNs start 16 MiB below our old ISN, each a further 4 KiB below the one before,
# so that a SYN/ACK or RST (which acks ISN + 1) names the probe it answers. All stay far
# within 2^31 of the old space, so they are "below" it in 32-bit sequence arithmetic.
BELOW_OFFSET = 0x0100_0000
BELOW_STRIDE = 0x1000
MAX_BELOW_PROBES = 0x4000  # BELOW_OFFSET + MAX_BELOW_PROBES * BELOW_STRIDE < 2^31 / 4
ABOVE_OFFSET = 0x0100_0000  # the above-ISN SYN: 16 MiB past our old SND.NXT
# The short scripts: first SYN 0.5 s after t0, each later segment SCRIPT_SPACING_S after the
# one before. SYNs are then two spacings (1.2 s) apart, beyond Linux's 500 ms rate limit.
SCRIPT_START_S = 0.5
SCRIPT_SPACING_S = 0.6
# The last probe's answer window, when nothing follows it (raised to 4 RTTs on long paths).
LAST_ANSWER_WAIT_S = 1.0
# A FIN_AGAIN this close to a SYN_BELOW would share its answer window: that SYN is skipped.
REFIN_CLEARANCE_S = 0.5
SYN_WINDOW = 64240  # the window field of our reuse SYNs (Linux's, unscaled in a SYN)
# Answers the ladder keeps beyond those it credits to a probe (strays, repeats).
MAX_OTHER_RECORDS = 64

_F = TcpFlags
_S = TcpState


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """One segment of a role's script: when (seconds after t0) and what."""

    at: float
    kind: ReuseKind


def script_for(
    role: Role,
    *,
    step: float,
    max_time: float,
    measure_duration: bool,
    refin_at: float | None,
) -> list[ScriptStep]:
    """The segments a role sends after t0, in time order.

    ``DURATION`` with ``measure_duration``: a ``SYN_BELOW`` every ``step`` up to
    ``max_time`` (at most ``MAX_BELOW_PROBES``; with a step of 1 s or more, one more at
    min(0.5 s, step / 4)), ``FIN_AGAIN`` at ``refin_at``; without:
    one ``SYN_BELOW``, and around ``refin_at`` the FIN and a SYN after it.
    """
    s0 = SCRIPT_START_S
    s1, s2 = s0 + SCRIPT_SPACING_S, s0 + 2 * SCRIPT_SPACING_S
    if role is Role.ABOVE_ISN:
        return [ScriptStep(s0, ReuseKind.SYN_BELOW), ScriptStep(s1, ReuseKind.SYN_ABOVE)]
    if role is Role.NEWER_TSVAL:
        return [ScriptStep(s0, ReuseKind.SYN_BELOW), ScriptStep(s1, ReuseKind.SYN_NEWER_TSVAL)]
    if role is Role.ASSASSINATE:
        return [
            ScriptStep(s0, ReuseKind.SYN_BELOW),
            ScriptStep(s1, ReuseKind.RST_OFFSET),
            ScriptStep(s2, ReuseKind.SYN_BELOW),
            ScriptStep(s2 + SCRIPT_SPACING_S, ReuseKind.RST_EXACT),
            ScriptStep(s2 + 2 * SCRIPT_SPACING_S, ReuseKind.SYN_BELOW),
        ]
    steps: list[ScriptStep] = []
    if measure_duration:
        if step >= 1.0:
            # One early probe, so that a TIME-WAIT shorter than the step is seen at all (not
            # read as none held); still 0.75 step or more before the next (the rate limit).
            steps.append(ScriptStep(min(SCRIPT_START_S, step / 4), ReuseKind.SYN_BELOW))
        count = min(int(max_time / step + 1e-9), MAX_BELOW_PROBES)
        for i in range(1, count + 1):
            at = i * step
            if refin_at is not None and abs(at - refin_at) < REFIN_CLEARANCE_S:
                continue
            steps.append(ScriptStep(at, ReuseKind.SYN_BELOW))
    else:
        # Not at the FIN's time: the two would share an answer window (an empty one for the
        # SYN), and the SYN after the FIN then asks instead.
        if refin_at is None or abs(s0 - refin_at) >= REFIN_CLEARANCE_S:
            steps.append(ScriptStep(s0, ReuseKind.SYN_BELOW))
        if refin_at is not None:
            steps.append(ScriptStep(refin_at + SCRIPT_SPACING_S, ReuseKind.SYN_BELOW))
    if refin_at is not None:
        steps.append(ScriptStep(refin_at, ReuseKind.FIN_AGAIN))
    steps.sort(key=lambda s: s.at)
    return steps


@dataclass(slots=True)
class _Sent:
    """A script step once sent, and what answered it."""

    step: ScriptStep
    seq: int
    index: int
    sent_at: float  # monotonic
    window_end: float  # the answer window closes here (the next step's send, or a wait)
    stamp: Stamp | None = None  # when it left (kernel stamp once known)
    answer: ReuseAnswer | None = None
    answer_stamp: Stamp | None = None
    answer_at: float | None = None
    answer_seq: int | None = None
    note: str = ""


class TimeWaitProbe:
    """One connection on which the peer closes first, then its 4-tuple probed (see module).

    Args:
        role: what the connection is for (``Role``).
        version, src, dst, sport, dport, isn: as for ``CloseProbe``.
        send_data: bytes to send once connected (a request the server answers and closes on).
        close_timeout: seconds after the handshake for the peer to close first.
        handshake_timeout, ttl: as for ``CloseProbe``.
        step: seconds between the duration's probes; max_time: when the duration stops.
        measure_duration: probe until TIME-WAIT ends (``DURATION`` only).
        refin_at: seconds after t0 to send our FIN again (``DURATION`` only), or None.

    Raises:
        ValueError: for an argument out of range.
    """

    def __init__(
        self,
        *,
        role: Role,
        version: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        isn: int,
        send_data: bytes = b"",
        close_timeout: float = 10.0,
        handshake_timeout: float = 3.0,
        ttl: int = 64,
        step: float = 1.0,
        max_time: float = 250.0,
        measure_duration: bool = True,
        refin_at: float | None = None,
    ) -> None:
        if step <= 0 or max_time <= 0 or close_timeout <= 0:
            raise ValueError("step, max_time and close_timeout must be > 0")
        if refin_at is not None and not 0 < refin_at < max_time:
            raise ValueError("refin_at must lie between 0 and max_time")
        self.role = role
        self.connection = CloseProbe(
            version=version,
            src=src,
            dst=dst,
            sport=sport,
            dport=dport,
            isn=isn,
            mode=CloseMode.PEER_CLOSES,
            send_data=send_data,
            msl=0.0,
            no_wait=True,
            max_wait=close_timeout,
            handshake_timeout=handshake_timeout,
            ttl=ttl,
        )
        self._script = script_for(
            role,
            step=step,
            max_time=max_time,
            measure_duration=measure_duration and role is Role.DURATION,
            refin_at=refin_at if role is Role.DURATION else None,
        )
        self._version = version
        self._src, self._dst, self._sport, self._dport = src, dst, sport, dport
        self._ttl = ttl
        self.log = SegmentLog(isn)
        # Phase two, once the connection is over.
        self._t0: float | None = None
        self._old: SequenceSpaces | None = None
        self._peer_close: PeerClose | None = None
        self._base_index = 0  # engine index of our first phase-two segment
        self._next_index = 0
        self._outbox: list[bytes] = []
        # Our phase-two segments until the engine reports them: packet, states, note, answers.
        self._queued: dict[int, tuple[Packet, TcpState, TcpState, str, int | None]] = {}
        self._next_step = 0
        self._sent: list[_Sent] = []
        self._sent_by_index: dict[int, _Sent] = {}
        # Every step before this one has its answer: answers are only ever set, and windows
        # close in the order the steps were sent, so the undecided ones are a short tail.
        self._first_undecided = 0
        self._below_count = 0
        self._answer_wait = LAST_ANSWER_WAIT_S
        self._peer_state = _S.TIME_WAIT
        self._other_records = 0
        self._notes: list[str] = []
        self._interrupted = False
        self._done = False
        self._ended_early = False  # the script stopped: the TIME-WAIT is gone (or never was)

    # -- the engine's interface (DrivenProbe) ---------------------------------------------
    def start(self, now: float) -> None:
        self.connection.start(now)
        self._after_phase_one(now)

    @property
    def done(self) -> bool:
        return self._done

    def segments_to_send(self) -> list[bytes]:
        out = self.connection.segments_to_send()
        out += self._outbox
        self._outbox = []
        return out

    def next_deadline(self) -> float | None:
        if self._done:
            return None
        if self._t0 is None:
            return self.connection.next_deadline()
        deadlines = [s.window_end for s in self._undecided()]
        if self._next_step < len(self._script):
            deadlines.append(self._t0 + self._script[self._next_step].at)
        return min(deadlines) if deadlines else self._t0

    def sent(self, index: int, stamp: Stamp) -> None:
        if self._t0 is None or index < self._base_index:
            self.connection.sent(index, stamp)
            return
        queued = self._queued.pop(index, None)
        if queued is not None:
            packet, our, peer, note, answers = queued
            self.log.sent(index, packet, our, peer, note, answers=answers)
            self.log.stamp_sent(index, stamp)
        sent = self._sent_by_index.get(index)
        if sent is not None:
            sent.stamp = stamp

    def send_kernel_stamp(self, index: int, kernel_ns: int) -> None:
        if self._t0 is None or index < self._base_index:
            self.connection.send_kernel_stamp(index, kernel_ns)
            return
        self.log.kernel_stamp_sent(index, kernel_ns)
        sent = self._sent_by_index.get(index)
        if sent is not None and sent.stamp is not None:
            sent.stamp = sent.stamp.with_kernel(kernel_ns)

    def send_failed(self, index: int, error: str) -> None:
        if self._t0 is None or index < self._base_index:
            self.connection.send_failed(index, error)
            self._after_phase_one(None)
            return
        queued = self._queued.pop(index, None)
        if queued is not None:
            packet, our, peer, note, answers = queued
            self.log.send_failed(index, packet, our, peer, note, error, answers=answers)
        sent = self._sent_by_index.get(index)
        if sent is not None and sent.answer is None:
            sent.answer, sent.note = ReuseAnswer.NOT_SENT, error
        self._notes.append(f"segment {index} not sent: {error}")

    def count_invalid(self, packet: Packet) -> None:
        self.connection.count_invalid(packet)

    def receive(self, packet: Packet, now: float, stamp: Stamp) -> bool:
        if self._t0 is None:
            taken = self.connection.receive(packet, now, stamp)
            self._after_phase_one(now)
            return taken
        tcp = packet.tcp
        if tcp is None:
            return self._receive_icmp(packet, now)
        if packet.src != self._dst or tcp.sport != self._dport or tcp.dport != self._sport:
            return False
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            self.handle_timer(now)
        self._receive_tcp(packet, now, stamp)
        return True

    def handle_timer(self, now: float) -> None:
        if self._done:
            return
        if self._t0 is None:
            self.connection.handle_timer(now)
            self._after_phase_one(now)
            return
        t0 = self._t0
        while not self._done:
            for sent in self._undecided():
                if now >= sent.window_end:
                    sent.answer = ReuseAnswer.NONE
            if self._next_step < len(self._script) and not self._ended_early:
                step = self._script[self._next_step]
                if now >= t0 + step.at:
                    self._next_step += 1
                    self._send_step(step, now)
                    continue
            if not self._undecided() and (
                self._ended_early or self._next_step >= len(self._script)
            ):
                self._done = True
            return

    def interrupt(self, now: float) -> None:
        """Stop now (Ctrl-C): during the close the connection sends its RST; afterwards the
        peer's TIME-WAIT is left to run out (prober must not end what it measures)."""
        if self._done:
            return
        self._interrupted = True
        if self._t0 is None:
            self.connection.interrupt(now)
            self._after_phase_one(now)
        for sent in self._undecided():
            sent.answer = ReuseAnswer.NONE
            sent.note = "interrupted"
        self._done = True

    # -- progress and result ----------------------------------------------------------------
    def elapsed(self, now: float) -> float | None:
        """Seconds since the peer's TIME-WAIT began (None before it)."""
        return None if self._t0 is None else now - self._t0

    @property
    def probes_sent(self) -> int:
        """Segments sent after the close so far (the progress line's count)."""
        return len(self._sent)

    def last_answer(self) -> ReuseAnswer | None:
        """The latest answer decided so far (a probe whose window is open has none yet)."""
        return next((s.answer for s in reversed(self._sent) if s.answer is not None), None)

    def probes(self) -> list[ReuseProbe]:
        """What was sent after the close, and each answer, so far."""
        t0 = self._t0 or 0.0
        old = self._old
        linux_isn = None if old is None else linux_time_wait_isn(old.rcv_nxt)
        probes: list[ReuseProbe] = []
        for sent in self._sent:
            answer_seq = sent.answer_seq
            after_ms: float | None = None
            if sent.stamp is not None and sent.answer_stamp is not None:
                after_ms = round(rtt_between(sent.stamp, sent.answer_stamp).ms, 3)
            probes.append(
                ReuseProbe(
                    role=self.role,
                    kind=sent.step.kind,
                    at_s=round(sent.sent_at - t0, 6),
                    seq=sent.seq,
                    answer=sent.answer or ReuseAnswer.NONE,
                    answer_after_ms=after_ms,
                    answer_seq=answer_seq,
                    linux_isn=(
                        None if answer_seq is None or sent.answer is not ReuseAnswer.SYN_ACK
                        else answer_seq == linux_isn
                    ),
                    note=sent.note,
                )
            )
        return probes

    def result(self) -> TimeWaitConnection:
        """The connection's outcome, once ``done``.

        Raises:
            RuntimeError: if the probe has not ended yet.
        """
        if not self._done:
            raise RuntimeError("probe has no result yet")
        # Built now, not at the close: the kernel's TX stamps of its last segments come after.
        close = self.connection.result()
        return TimeWaitConnection(
            role=self.role,
            source_port=self._sport,
            peer_close=self._peer_close or PeerClose.INTERRUPTED,
            close=close,
            old_snd_max=None if self._old is None else self._old.snd_max,
            old_rcv_nxt=None if self._old is None else self._old.rcv_nxt,
            timestamps=None if self._old is None else self._old.timestamps,
            probes=tuple(self.probes()),
            segments=self.log.records(),
            notes=tuple(self._notes),
            interrupted=self._interrupted,
        )

    # -- phase one to phase two --------------------------------------------------------------
    def _after_phase_one(self, now: float | None) -> None:
        """Once the connection is over: how the peer closed, and what follows."""
        connection = self.connection
        if self._t0 is not None or not connection.done:
            return
        close = connection.result()
        self._peer_close = peer_close_of(close)
        spaces = connection.spaces()
        self._old = spaces
        self.log.peer_isn = spaces.peer_isn
        if now is None or self._peer_close not in (PeerClose.FIN, PeerClose.FIN_THEN_RST) or (
            self.role is not Role.DURATION and self._peer_close is not PeerClose.FIN
        ):
            # Nothing on the peer to probe for this role (the duration's connection still asks
            # the 4-tuple once when the peer reset our FIN: its answer is the evidence).
            self._done = True
            return
        if self.role is Role.NEWER_TSVAL and not spaces.timestamps:
            self._notes.append(
                "the connection negotiated no timestamps: a newer TSval means nothing to the "
                "peer (RFC 6191 needs them), so only the below-ISN SYN was sent"
            )
            self._script = [s for s in self._script if s.kind is not ReuseKind.SYN_NEWER_TSVAL]
        if self._peer_close is PeerClose.FIN_THEN_RST:
            # It reset our FIN: one SYN asks whether it kept anything at all.
            first = next(s for s in self._script if s.kind is ReuseKind.SYN_BELOW)
            self._script = [first]
        rtt = path_rtt_s(close)
        if rtt is not None:
            self._answer_wait = max(LAST_ANSWER_WAIT_S, 4 * rtt)
        self._t0 = now
        self._base_index = self._next_index = spaces.segments_emitted

    # -- phase two: sending ----------------------------------------------------------------
    def _send_step(self, step: ScriptStep, now: float) -> None:
        old = self._old
        assert old is not None and self._t0 is not None
        kind = step.kind
        timestamps = False
        tsval = tsecr = ack = 0
        if kind is ReuseKind.SYN_BELOW or kind is ReuseKind.SYN_NEWER_TSVAL:
            seq = (old.isn - BELOW_OFFSET - self._below_count * BELOW_STRIDE) & MASK
            self._below_count += 1
            flags = _F.SYN
            timestamps = kind is ReuseKind.SYN_NEWER_TSVAL
            tsval = tsval_at(now)
            note = (
                "SYN below the old ISN, with a newer TSval" if timestamps
                else "SYN below the old ISN, no timestamps"
            )
        elif kind is ReuseKind.SYN_ABOVE:
            seq = (old.snd_max + ABOVE_OFFSET) & MASK
            flags = _F.SYN
            note = "SYN above the old sequence space, no timestamps"
        elif kind is ReuseKind.FIN_AGAIN:
            seq = (old.snd_max - 1) & MASK
            flags = _F.FIN | _F.ACK
            ack = old.rcv_nxt
            timestamps = old.timestamps
            tsval, tsecr = tsval_at(now), old.ts_recent
            note = "our FIN again, as if the peer's last ACK was lost"
        else:
            offset = kind is ReuseKind.RST_OFFSET
            seq = (old.snd_max + offset) & MASK
            flags = _F.RST
            timestamps = old.timestamps
            tsval, tsecr = tsval_at(now), old.ts_recent
            note = (
                "RST at the peer's RCV.NXT + 1" if offset
                else "RST at exactly the peer's RCV.NXT"
            )
        our = _S.SYN_SENT if flags & _F.SYN else _S.CLOSED
        index = self._emit(flags, seq, ack, tsval, tsecr, timestamps, our, note, None)
        upcoming = self._script[self._next_step].at + self._t0 if (
            self._next_step < len(self._script)
        ) else None
        window_end = upcoming if upcoming is not None else now + self._answer_wait
        sent = _Sent(step, seq, index, now, max(window_end, now))
        self._sent.append(sent)
        self._sent_by_index[index] = sent

    def _emit(
        self,
        flags: TcpFlags,
        seq: int,
        ack: int,
        tsval: int,
        tsecr: int,
        timestamps: bool,
        our: TcpState,
        note: str,
        answers: int | None,
    ) -> int:
        old = self._old
        assert old is not None
        window = 0 if flags & _F.RST else SYN_WINDOW if flags & _F.SYN else old.window_field
        template = packets.template(
            self._version, flags, ttl=self._ttl, window=window, timestamps=timestamps
        )
        raw = template.build(
            self._src, self._dst, self._sport, self._dport, seq, ack, tsval & MASK, tsecr
        )
        index = self._next_index
        self._next_index += 1
        self._outbox.append(raw)
        self._queued[index] = (parse_packet(raw), our, self._peer_state, note, answers)
        return index

    # -- phase two: receiving --------------------------------------------------------------
    def _receive_tcp(self, packet: Packet, now: float, stamp: Stamp) -> None:
        tcp = packet.tcp
        old = self._old
        assert tcp is not None and old is not None
        flags = tcp.flags
        credited: _Sent | None = None
        answer: ReuseAnswer
        if flags & _F.SYN and flags & _F.ACK:
            credited = self._syn_answered_by(tcp.ack)
            answer = ReuseAnswer.SYN_ACK
        elif flags & _F.RST:
            # A RST that acks names its SYN; one without an ACK answers our FIN or RST.
            credited = self._syn_answered_by(tcp.ack) if flags & _F.ACK else None
            if credited is None:
                window = self._open_window(now)
                if window is not None and not window.step.kind.is_syn:
                    credited = window
            answer = ReuseAnswer.RST
        elif (
            flags & _F.ACK
            and not flags & (_F.SYN | _F.FIN)
            and not tcp.payload
            and tcp.seq == old.rcv_nxt
            and tcp.ack == old.snd_max
        ):
            credited = self._open_window(now)
            answer = ReuseAnswer.TIME_WAIT_ACK
        else:
            answer = ReuseAnswer.OTHER
        note = _ANSWER_NOTES[answer]
        if answer is ReuseAnswer.SYN_ACK:
            expected = linux_time_wait_isn(old.rcv_nxt)
            if tcp.seq == expected:
                note += f"; ISN {tcp.seq} = old SND.NXT + 65537 (Linux's reopen from TIME-WAIT)"
            else:
                note += f"; ISN {tcp.seq}"
        if credited is None:
            if answer is not ReuseAnswer.SYN_ACK and self._other_records >= MAX_OTHER_RECORDS:
                return
            self._other_records += 1
            note += "; answers no open probe"
        else:
            late = credited.answer is ReuseAnswer.NONE
            credited.answer, credited.answer_at, credited.answer_seq = answer, now, tcp.seq
            credited.answer_stamp = stamp
            if late:
                credited.note = "late: after its answer window closed"
        if answer is ReuseAnswer.SYN_ACK:
            self._peer_state = _S.SYN_RECEIVED
        arrival = self.log.received(packet, stamp, _S.CLOSED, self._peer_state, note)
        if answer is ReuseAnswer.SYN_ACK:
            # A new connection on the peer: free it at once (our kernel's RST is suppressed).
            seq = tcp.ack
            self._peer_state = _S.LISTEN
            self._emit(
                _F.RST, seq, 0, 0, 0, False, _S.CLOSED, "RST frees the peer's new connection",
                arrival,
            )
        elif answer is ReuseAnswer.RST and credited is not None:
            self._peer_state = _S.LISTEN
        if (
            credited is not None
            and answer in (ReuseAnswer.SYN_ACK, ReuseAnswer.RST)
            and credited.step.kind.is_syn
        ):
            # The TIME-WAIT is gone (or was never there): nothing further to learn here.
            self._ended_early = True
        self.handle_timer(now)

    def _syn_answered_by(self, ack: int) -> _Sent | None:
        for sent in reversed(self._sent):
            if sent.step.kind.is_syn and (sent.seq + 1) & MASK == ack:
                return sent
        return None

    def _open_window(self, now: float) -> _Sent | None:
        """The probe whose answer window is open (windows never overlap), if any."""
        for sent in self._undecided():
            if sent.sent_at <= now < sent.window_end:
                return sent
        return None

    def _undecided(self) -> list[_Sent]:
        """The steps sent whose answer is not decided yet (their windows are open)."""
        sent = self._sent
        first = self._first_undecided
        while first < len(sent) and sent[first].answer is not None:
            first += 1
        self._first_undecided = first
        return [s for s in sent[first:] if s.answer is None]

    def _receive_icmp(self, packet: Packet, now: float) -> bool:
        icmp = packet.icmp
        if icmp is None:
            return False
        quoted = icmp.quoted
        if (
            quoted.src != self._src
            or quoted.dst != self._dst
            or quoted.sport != self._sport
            or quoted.dport != self._dport
        ):
            return False
        for sent in reversed(self._sent):
            if sent.seq == quoted.seq and sent.answer in (None, ReuseAnswer.NONE):
                sent.answer, sent.answer_at = ReuseAnswer.ICMP, now
                sent.note = f"ICMPv{packet.version} type {icmp.type} code {icmp.code}"
                break
        return True


_ANSWER_NOTES = {
    ReuseAnswer.TIME_WAIT_ACK: "ACK of the old connection: TIME-WAIT",
    ReuseAnswer.SYN_ACK: "SYN/ACK: a new connection",
    ReuseAnswer.RST: "RST",
    ReuseAnswer.OTHER: "not an answer to a probe",
}


def peer_close_of(close: CloseResult) -> PeerClose:
    """How the peer ended the connection of phase one (see ``PeerClose``)."""
    if close.handshake is not Handshake.OPEN:
        return PeerClose.NOT_ESTABLISHED
    received = [s.flags for s in close.segments if s.direction is Direction.RECEIVED]
    peer_fin = any("F" in flags for flags in received)
    peer_rst = any("R" in flags for flags in received)
    if close.interrupted:
        return PeerClose.INTERRUPTED
    if close.close_kind is CloseKind.PEER_FIRST:
        if peer_rst:
            return PeerClose.FIN_THEN_RST
        # CLOSED is also where our own RST leaves us when close_timeout runs out in LAST-ACK:
        # only the peer's ACK of our FIN puts it in TIME-WAIT (and that RST, at exactly its
        # RCV.NXT, would have ended it).
        if close.our_final_state is TcpState.CLOSED and close.our_fin_to_peer_ack_us is not None:
            return PeerClose.FIN
        return PeerClose.INCOMPLETE
    if close.close_kind is CloseKind.RESET:
        return PeerClose.RST
    if not peer_fin:
        return PeerClose.DID_NOT_CLOSE
    return PeerClose.INCOMPLETE
