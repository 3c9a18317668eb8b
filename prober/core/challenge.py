"""The RFC 5961 probe: how the peer answers, on an established connection, a RST in its window
but not at RCV.NXT, a RST far outside its window, and a SYN, and how often it answers.

What RFC 9293 (§3.10.7.4) with RFC 5961 asks of a synchronized connection, and what RFC 793
did before: a blind attacker who guesses the 4-tuple needs only a sequence number somewhere
in the receive window to reset a connection under RFC 793, so RFC 5961 narrows it:

- A RST is accepted only at exactly RCV.NXT. One elsewhere in the window is not: the peer
  sends a *challenge ACK* (an ACK of RCV.NXT, seq = its SND.NXT), which a genuine sender
  answers with a RST at exactly RCV.NXT (§3.2). RFC 793 accepted it: the connection is reset,
  silently. A RST outside the window is dropped silently by both.
- A SYN on a synchronized connection draws a challenge ACK, whatever its sequence number
  (§4.2). RFC 793 answered a SYN in the window with a RST and aborted the connection.
- Challenge ACKs are rate-limited (§7), so that a storm of spoofed segments draws no storm of
  answers. Linux (net/ipv4/tcp_input.c, tcp_send_challenge_ack): since 4.0 at most one per
  socket per net.ipv4.tcp_invalid_ratelimit (500 ms by default; __tcp_oow_rate_limited on
  the socket's last_oow_ack_time, which the ACKs of unacceptable segments share), and
  tcp_challenge_ack_limit a second (100 from 3.6; 1000 and randomised since 4.7, after
  CVE-2016-5696 showed the global counter to be an off-path side channel; per netns and
  INT_MAX, i.e. off, since 6.0). Linux answers so since 3.6; earlier kernels as RFC 793.

One ``ChallengeProbe`` is one connection with one ``ChallengeRole`` (a fresh source port):

1. Phase one is a ``CloseProbe`` that ends as soon as the connection is ESTABLISHED and our
   data (``send_data``, optional) is acknowledged: no FIN, the connection stays open. That
   moment is ``t0``; our SND.NXT is then the peer's RCV.NXT, its SND.NXT ours.
2. Phase two sends the role's script on the same 4-tuple (``script_for``; times from t0):

   - ``RST_IN_WINDOW``: a RST at RCV.NXT + 1 at 0.2 s; ``RST_OUT_OF_WINDOW``: a RST at
     RCV.NXT + 2^30 (outside any window, scaled or not); ``SYN``: a SYN at RCV.NXT with our
     options. Then the liveness check: a pure ACK at SND.NXT - 1, an old (unacceptable)
     segment, which a live connection answers with an ACK (RFC 9293 §3.10.7.4) and a peer
     without the connection with a RST.
   - ``RATE``: SYNs as in ``SYN`` every ``RATE_SPACING_S`` for ``RATE_SPAN_S``; the arrival
     times of the challenge ACKs give the shortest interval between two (its resolution is
     the spacing), then the liveness check.

   Each segment that may draw a rate-limited answer (probes and the liveness check) goes
   ``gap`` = max(1.1 s, 4 RTTs) after the one before: Linux's 500 ms per-socket limit covers
   both, and an answer limited away would read as silence. An answer is credited to the
   segment whose answer window is open (from its send to the next one's, or ``gap`` for
   the last): an ACK of RCV.NXT (seq = the peer's SND.NXT, ack = our SND.NXT, no data) is a
   challenge ACK (or, to the liveness check, "alive"), a RST a reset (or "dead").
3. The verdict (``ChallengeAnswer``): a challenge ACK is ``CHALLENGE_ACK``; a RST answer, or
   silence then a dead connection, ``RESET``; silence then a live one ``IGNORED``; anything
   else (both silent: lost answers, a rate limit, a firewall; ICMP; a send that failed)
   leaves it None, and ``evidence`` names the segments and says why.
4. At the end a RST at exactly RCV.NXT frees the peer's connection (also on ``interrupt``),
   unless it is already reset.

Sans-IO like every probe: time is the ``now`` argument; segments out, records and a
``ChallengeConnection`` as the result (``summarize`` makes the run's ``ChallengeResult``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prober.core import packets
from prober.core.close import CloseMode, CloseProbe, Handshake, SequenceSpaces
from prober.core.handshake_conversation import tsval_at
from prober.core.parse import parse_packet
from prober.core.states import TcpState
from prober.core.timewait_result import path_rtt_s
from prober.core.timing import Stamp, rtt_between
from prober.core.trace import SegmentRecord
from prober.core.wire import Packet, TcpFlags


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


__all__ = [
    "ChallengeAnswer",
    "ChallengeConnection",
    "ChallengeProbe",
    "ChallengeResult",
    "ChallengeRole",
    "StepKind",
    "min_interval",
    "script_for",
    "summarize",
]

MASK = 0xFFFFFFFF
PROBE_AT_S = 0.2  # the first probing segment, after t0 (the handshake's ACK is in by then)
# Between two segments that may draw a rate-limited answer: beyond Linux's 500 ms per socket
# (tcp_invalid_ratelimit), with room for jitter; raised to 4 RTTs on long paths.
MIN_GAP_S = 1.1
RATE_SPACING_S = 0.05
RATE_SPAN_S = 2.0
RATE_COUNT = round(RATE_SPAN_S / RATE_SPACING_S)  # SYNs of the RATE role
OUT_OF_WINDOW_OFFSET = 1 << 30  # beyond any window: the largest is 65535 << 14 (RFC 7323)
SYN_WINDOW = 64240  # the window field of our SYNs (Linux's, unscaled in a SYN)
DATA_TIMEOUT_S = 10.0  # phase one: for our data to be acknowledged
MAX_OTHER_RECORDS = 64  # segments logged beyond the answers (strays, repeats)

_F = TcpFlags
_S = TcpState


class StepKind(StrEnum):
    """One segment of a role's script."""

    RST_IN_WINDOW = "rst-in-window"  # RST at RCV.NXT + 1
    RST_OUT_OF_WINDOW = "rst-out-of-window"  # RST at RCV.NXT + 2^30
    SYN = "syn"  # SYN at RCV.NXT, our options
    LIVENESS = "liveness"  # pure ACK at SND.NXT - 1: an old segment, which a live one ACKs

    @property
    def probing(self) -> bool:
        return self is not StepKind.LIVENESS


_STEP_NOTES = {
    StepKind.RST_IN_WINDOW: "RST at the peer's RCV.NXT + 1, in its window",
    StepKind.RST_OUT_OF_WINDOW: "RST at the peer's RCV.NXT + 2^30, outside its window",
    StepKind.SYN: "SYN at the peer's RCV.NXT on the established connection",
    StepKind.LIVENESS: "liveness check: ACK at SND.NXT - 1, an old segment",
}
_ROLE_STEP = {
    ChallengeRole.RST_IN_WINDOW: StepKind.RST_IN_WINDOW,
    ChallengeRole.RST_OUT_OF_WINDOW: StepKind.RST_OUT_OF_WINDOW,
    ChallengeRole.SYN: StepKind.SYN,
    ChallengeRole.RATE: StepKind.SYN,
}


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """One segment of a role's script: when (seconds after t0) and what."""

    at: float
    kind: StepKind


def script_for(role: ChallengeRole, gap: float = MIN_GAP_S) -> list[ScriptStep]:
    """The segments a role sends after t0, in time order (the freeing RST not included).

    Args:
        role: the connection's role.
        gap: seconds between segments that may draw a rate-limited answer (>= MIN_GAP_S).

    Returns:
        The probing segment(s) from PROBE_AT_S on, then the liveness check ``gap`` after
        the last of them.
    """
    kind = _ROLE_STEP[role]
    if role is ChallengeRole.RATE:
        steps = [ScriptStep(PROBE_AT_S + i * RATE_SPACING_S, kind) for i in range(RATE_COUNT)]
    else:
        steps = [ScriptStep(PROBE_AT_S, kind)]
    steps.append(ScriptStep(steps[-1].at + gap, StepKind.LIVENESS))
    return steps


class Reply(StrEnum):
    """What one of our segments drew."""

    ACK = "ack"  # an ACK of RCV.NXT: a challenge ACK, or (liveness) "alive"
    RST = "rst"
    ICMP = "icmp"


@dataclass(slots=True)
class _Sent:
    """A script step once handed out, and what answered it."""

    step: ScriptStep
    index: int  # the engine's
    seq: int
    sent_at: float
    window_end: float
    position: int | None = None  # in the segment log, once sent (or failed)
    stamp: Stamp | None = None
    error: str | None = None
    replies: list[tuple[Reply, int | None, float, Stamp | None]] = field(default_factory=list)
    icmp: str = ""

    def first(self, reply: Reply) -> tuple[Reply, int | None, float, Stamp | None] | None:
        return next((r for r in self.replies if r[0] is reply), None)


class _Opening(CloseProbe):
    """The connection of phase one: it ends once ESTABLISHED with our data acknowledged."""

    def _pump(self, now: float, *, force: bool = False) -> None:
        super()._pump(now, force=force)
        if not self._done and self.our_state is _S.ESTABLISHED and self._tx.all_data_acked:
            self._finish()


class ChallengeProbe:
    """One established connection and one RFC 5961 question asked on it (see module).

    Args:
        role: what the connection is for (``ChallengeRole``).
        version, src, dst, sport, dport, isn: as for ``CloseProbe``.
        send_data: bytes to send once connected, acknowledged before phase two (a request
            the server does not answer by closing).
        handshake_timeout, ttl: as for ``CloseProbe``.
        data_timeout: seconds after the handshake for ``send_data`` to be acknowledged.

    Raises:
        ValueError: for an argument out of range.
    """

    def __init__(
        self,
        *,
        role: ChallengeRole,
        version: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        isn: int,
        send_data: bytes = b"",
        handshake_timeout: float = 3.0,
        ttl: int = 64,
        data_timeout: float = DATA_TIMEOUT_S,
    ) -> None:
        if data_timeout <= 0:
            raise ValueError("data_timeout must be > 0")
        self.role = ChallengeRole(role)
        self.connection = _Opening(
            version=version, src=src, dst=dst, sport=sport, dport=dport, isn=isn,
            mode=CloseMode.PEER_CLOSES, send_data=send_data, msl=0.0, no_wait=True,
            max_wait=data_timeout, handshake_timeout=handshake_timeout, ttl=ttl,
        )
        self._version = version
        self._src, self._dst, self._sport, self._dport = src, dst, sport, dport
        self._ttl = ttl
        self.log = self.connection.log  # one log, one clock: phase two goes on in it
        self._script: list[ScriptStep] = []
        self._t0: float | None = None
        self._spaces: SequenceSpaces | None = None
        self._snd_nxt = 0
        self._rcv_nxt = 0
        self._ts_recent = 0
        self._gap = MIN_GAP_S
        self._base_index = 0
        self._next_index = 0
        self._outbox: list[bytes] = []
        self._queued: dict[int, tuple[Packet, TcpState, TcpState, str, int | None]] = {}
        self._next_step = 0
        self._sent: list[_Sent] = []
        self._by_index: dict[int, _Sent] = {}
        self._peer_state = _S.ESTABLISHED
        self._reset = False  # the peer's connection is gone (a RST from it, or our own)
        self._free_index: int | None = None
        self._other_records = 0
        self._notes: list[str] = []
        self._why_not: str | None = None  # phase two never ran: why
        self._interrupted = False
        self._done = False

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
        if self._next_step < len(self._script) and not self._reset:
            return self._t0 + self._script[self._next_step].at
        return self._sent[-1].window_end if self._sent else self._t0

    def sent(self, index: int, stamp: Stamp) -> None:
        if self._t0 is None or index < self._base_index:
            self.connection.sent(index, stamp)
            return
        queued = self._queued.pop(index, None)
        position = len(self.log)
        if queued is not None:
            packet, our, peer, note, answers = queued
            self.log.sent(index, packet, our, peer, note, answers=answers)
            self.log.stamp_sent(index, stamp)
        sent = self._by_index.get(index)
        if sent is not None:
            sent.position, sent.stamp = position, stamp

    def send_kernel_stamp(self, index: int, kernel_ns: int) -> None:
        if self._t0 is None or index < self._base_index:
            self.connection.send_kernel_stamp(index, kernel_ns)
            return
        self.log.kernel_stamp_sent(index, kernel_ns)
        sent = self._by_index.get(index)
        if sent is not None and sent.stamp is not None:
            sent.stamp = sent.stamp.with_kernel(kernel_ns)

    def send_failed(self, index: int, error: str) -> None:
        if self._t0 is None or index < self._base_index:
            self.connection.send_failed(index, error)
            self._after_phase_one(None)
            return
        queued = self._queued.pop(index, None)
        position = len(self.log)
        if queued is not None:
            packet, our, peer, note, answers = queued
            self.log.send_failed(index, packet, our, peer, note, error, answers=answers)
        sent = self._by_index.get(index)
        if sent is not None:
            sent.position, sent.error = position, error
        self._notes.append(f"segment {position} not sent: {error}")

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
        if self._done:
            if self._other_records < MAX_OTHER_RECORDS:
                self._other_records += 1
                self.log.received(packet, stamp, _S.CLOSED, self._peer_state,
                                  "after the probe ended")
            return True
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
            if self._next_step < len(self._script) and not self._reset:
                step = self._script[self._next_step]
                if now < t0 + step.at:
                    return
                self._next_step += 1
                self._send_step(step, now)
                continue
            if self._sent and now < self._sent[-1].window_end and not self._reset:
                return
            self._finish(now)

    def interrupt(self, now: float) -> None:
        """Stop now (Ctrl-C): a RST at exactly RCV.NXT frees the peer's connection (during
        the handshake, the connection's own interrupt decides)."""
        if self._done:
            return
        self._interrupted = True
        if self._t0 is None:
            self.connection.interrupt(now)
            self._after_phase_one(now)
            self._done = True
            return
        self._finish(now)

    # -- the result ---------------------------------------------------------------------------
    def result(self) -> ChallengeConnection:
        """The connection's outcome, once ``done``.

        Raises:
            RuntimeError: if the probe has not ended yet.
        """
        if not self._done:
            raise RuntimeError("probe has no result yet")
        close = self.connection.result()
        notes = [*close.notes, *self._notes]
        if self._why_not is not None or self._t0 is None:
            return ChallengeConnection(
                role=self.role, source_port=self._sport, handshake=close.handshake,
                answer=None, evidence=self._why_not or "the probe ended before phase two",
                probe_indices=(), answer_indices=(), ack_times_s=(),
                segments=self.log.records(), notes=tuple(notes),
            )
        answer, evidence = self._verdict()
        probe_indices: list[int] = []
        answer_indices: list[int] = []
        for sent in self._sent:
            if sent.position is not None:
                probe_indices.append(sent.position)
            answer_indices += [p for _, p, _, _ in sent.replies if p is not None]
        return ChallengeConnection(
            role=self.role,
            source_port=self._sport,
            handshake=close.handshake,
            answer=answer,
            evidence=evidence,
            probe_indices=tuple(probe_indices),
            answer_indices=tuple(sorted(answer_indices)),
            ack_times_s=self._ack_times() if self.role is ChallengeRole.RATE else (),
            segments=self.log.records(),
            notes=tuple(notes),
        )

    @property
    def probes_sent(self) -> int:
        """Probing segments handed out so far (the liveness check not counted)."""
        return sum(1 for s in self._sent if s.step.kind.probing and s.error is None)

    def _probes(self) -> list[_Sent]:
        return [s for s in self._sent if s.step.kind.probing]

    def _liveness(self) -> _Sent | None:
        return next((s for s in self._sent if s.step.kind is StepKind.LIVENESS), None)

    def _ack_times(self) -> tuple[float, ...]:
        probes = self._probes()
        if not probes:
            return ()
        first = probes[0]
        times = []
        for sent in probes:
            for reply, _, at, stamp in sent.replies:
                if reply is not Reply.ACK:
                    continue
                if first.stamp is not None and stamp is not None:
                    times.append(round(rtt_between(first.stamp, stamp).ns / 1e9, 6))
                else:
                    times.append(round(at - first.sent_at, 6))
        return tuple(sorted(times))

    def _verdict(self) -> tuple[ChallengeAnswer | None, str]:
        """The answer and the evidence: which segments showed what (see module, 3.)."""
        probes = self._probes()
        what = _STEP_NOTES[_ROLE_STEP[self.role]]
        failed = [s for s in probes if s.error is not None]
        if not probes or len(failed) == len(probes):
            why = failed[0].error if failed else "interrupted"
            return None, f"the probing segment ({what}) was not sent: {why}"
        first = next(s for s in probes if s.error is None)
        if self.role is ChallengeRole.RATE:
            count = len(probes) - len(failed)
            name = (
                f"{count} SYNs (segments {first.position} to {probes[-1].position}, every "
                f"{RATE_SPACING_S:g} s)" if count > 1 else f"the SYN (segment {first.position})"
            )
        else:
            name = f"segment {first.position} ({what})"
        rsts = [(s, r) for s in probes for r in s.replies if r[0] is Reply.RST]
        acks = [(s, r) for s in probes for r in s.replies if r[0] is Reply.ACK]
        icmps = [s for s in probes if s.icmp]
        live = self._liveness()
        live_text, alive = self._liveness_text(live)
        if rsts:
            sent, reply = rsts[0]
            position = reply[1]
            after = self._after_ms(sent, reply)
            return ChallengeAnswer.RESET, (
                f"{name} drew segment {position}, a RST{after}: the peer reset the connection"
                + (" (RFC 793 behaviour)" if sent.step.kind is StepKind.SYN else "")
            )
        if acks:
            sent, reply = acks[0]
            after = self._after_ms(sent, reply)
            if self.role is ChallengeRole.RATE:
                times = self._ack_times()
                shortest = min_interval(times)
                rate = (
                    f"; shortest interval between two {shortest:.3f} s (resolution "
                    f"{RATE_SPACING_S:g} s, the SYNs' spacing)" if shortest is not None
                    else "; fewer than two, so no interval"
                )
                text = (
                    f"{name} drew {len(acks)} challenge ACKs (first: segment {reply[1]}"
                    f"{after}){rate}"
                )
            else:
                rfc = "§4.2" if sent.step.kind is StepKind.SYN else "§3.2"
                text = (
                    f"{name} drew segment {reply[1]}, an ACK of RCV.NXT{after}: a challenge "
                    f"ACK (RFC 5961 {rfc})"
                )
            if alive is False:
                return None, (
                    f"{text}; but {live_text}: something else ended the connection"
                )
            return ChallengeAnswer.CHALLENGE_ACK, f"{text}; {live_text}"
        if icmps:
            return None, (
                f"{name} drew {icmps[0].icmp} (a router or firewall on the path answered, "
                f"not the peer); {live_text}"
            )
        silence = f"{name} drew no answer"
        if alive is True:
            return ChallengeAnswer.IGNORED, f"{silence}; {live_text}: the segment was ignored"
        if alive is False:
            return ChallengeAnswer.RESET, (
                f"{silence}; {live_text}: the segment reset the connection silently "
                f"(RFC 793 behaviour)"
            )
        return None, (
            f"{silence}; {live_text}: lost answers, a rate limit or a firewall, not told apart"
        )

    def _liveness_text(self, live: _Sent | None) -> tuple[str, bool | None]:
        """What the liveness check showed, and whether the connection lives (None: unknown)."""
        if live is None:
            if self._interrupted:
                return "no liveness check (interrupted)", None
            return "no liveness check (the probe ended first)", None
        name = f"the liveness check (segment {live.position})"
        if live.error is not None:
            return f"{name} was not sent: {live.error}", None
        ack, rst = live.first(Reply.ACK), live.first(Reply.RST)
        if rst is not None:
            return f"{name} drew segment {rst[1]}, a RST (the connection is gone)", False
        if ack is not None:
            return f"{name} drew segment {ack[1]}, an ACK (the connection lives on)", True
        if live.icmp:
            return f"{name} drew {live.icmp}", None
        return f"{name} drew no answer either", None

    @staticmethod
    def _after_ms(sent: _Sent, reply: tuple[Reply, int | None, float, Stamp | None]) -> str:
        _, _, at, stamp = reply
        if sent.stamp is not None and stamp is not None:
            return f" {rtt_between(sent.stamp, stamp).ns / 1e6:.3f} ms later"
        return f" {(at - sent.sent_at) * 1000:.3f} ms later"

    # -- phase one to phase two --------------------------------------------------------------
    def _after_phase_one(self, now: float | None) -> None:
        connection = self.connection
        if self._t0 is not None or self._done or not connection.done:
            return
        close = connection.result()
        if close.handshake is not Handshake.OPEN:
            self._why_not = f"no connection: the handshake ended {close.handshake.value}"
            self._done = True
            return
        if now is None or close.interrupted or connection.our_state is not _S.ESTABLISHED:
            if close.interrupted:
                why = "interrupted before the connection was ready"
            elif connection.our_state is _S.ESTABLISHED:
                why = "a segment of phase one could not be sent"
            else:
                why = (
                    f"the connection left ESTABLISHED before the probe "
                    f"({close.close_kind.value}; ours {connection.our_state.value})"
                )
            self._why_not = why
            self._done = True
            return
        spaces = connection.spaces()
        self._spaces = spaces
        self._snd_nxt, self._rcv_nxt = spaces.snd_max, spaces.rcv_nxt
        self._ts_recent = spaces.ts_recent
        rtt = path_rtt_s(close)
        if rtt is not None:
            self._gap = max(MIN_GAP_S, 4 * rtt)
        self._script = script_for(self.role, self._gap)
        self._t0 = now
        self._base_index = self._next_index = spaces.segments_emitted

    # -- phase two: sending ----------------------------------------------------------------
    def _send_step(self, step: ScriptStep, now: float) -> None:
        kind = step.kind
        ack = 0
        if kind is StepKind.RST_IN_WINDOW:
            flags, seq = _F.RST, self._snd_nxt + 1
        elif kind is StepKind.RST_OUT_OF_WINDOW:
            flags, seq = _F.RST, self._snd_nxt + OUT_OF_WINDOW_OFFSET
        elif kind is StepKind.SYN:
            flags, seq = _F.SYN, self._snd_nxt
        else:
            flags, seq, ack = _F.ACK, self._snd_nxt - 1, self._rcv_nxt
        seq &= MASK
        index = self._emit(flags, seq, ack, now, _S.ESTABLISHED, _STEP_NOTES[kind], None)
        upcoming = (
            self._script[self._next_step].at + (self._t0 or 0.0)
            if self._next_step < len(self._script) else now + self._gap
        )
        sent = _Sent(step, index, seq, now, max(upcoming, now))
        self._sent.append(sent)
        self._by_index[index] = sent

    def _emit(
        self, flags: TcpFlags, seq: int, ack: int, now: float, our: TcpState, note: str,
        answers: int | None,
    ) -> int:
        spaces = self._spaces
        assert spaces is not None
        timestamps = spaces.timestamps
        # A SYN carries our SYN options (MSS, SACK, WS; TS as negotiated), the rest TS only.
        window = SYN_WINDOW if flags & _F.SYN else 0 if flags & _F.RST else spaces.window_field
        segment = packets.template(
            self._version, flags, ttl=self._ttl, window=window, timestamps=timestamps
        )
        tsecr = self._ts_recent if timestamps else 0
        raw = segment.build(
            self._src, self._dst, self._sport, self._dport, seq, ack,
            tsval_at(now) if timestamps else 0, tsecr,
        )
        index = self._next_index
        self._next_index += 1
        self._outbox.append(raw)
        self._queued[index] = (parse_packet(raw), our, self._peer_state, note, answers)
        return index

    def _finish(self, now: float) -> None:
        """The end: free the peer's connection with a RST at exactly RCV.NXT, unless gone."""
        if not self._reset:
            self._peer_state = _S.CLOSED
            note = "RST at exactly RCV.NXT frees the peer's connection"
            if self._interrupted:
                note = "interrupted: " + note
            self._free_index = self._emit(
                _F.RST, self._snd_nxt & MASK, 0, now, _S.CLOSED, note, None
            )
            self._reset = True
        self._done = True

    # -- phase two: receiving --------------------------------------------------------------
    def _open_window(self, now: float) -> _Sent | None:
        """The segment whose answer window is open (windows never overlap), if any."""
        for sent in reversed(self._sent):
            if sent.sent_at <= now < sent.window_end:
                return sent
            if now >= sent.window_end:
                break
        return None

    def _receive_tcp(self, packet: Packet, now: float, stamp: Stamp) -> None:
        tcp = packet.tcp
        assert tcp is not None
        flags = tcp.flags
        window = self._open_window(now)
        timestamp = tcp.options.timestamp
        if timestamp is not None and tcp.seq == self._rcv_nxt:
            self._ts_recent = timestamp[0]
        reply: Reply | None = None
        if flags & _F.RST:
            reply = Reply.RST
            self._reset = True
            self._peer_state = _S.CLOSED
            note = "RST: the peer's connection is gone"
        elif (
            flags & _F.ACK
            and not flags & (_F.SYN | _F.FIN)
            and not tcp.payload
            and tcp.seq == self._rcv_nxt
            and tcp.ack == self._snd_nxt
        ):
            reply = Reply.ACK
            if window is not None and window.step.kind is StepKind.LIVENESS:
                note = "ACK of RCV.NXT: the connection lives"
            else:
                note = "ACK of RCV.NXT: a challenge ACK"
        elif (tcp.payload or flags & _F.FIN) and flags & _F.ACK and tcp.seq == self._rcv_nxt:
            # The peer's data (say, a late response) or its FIN: taken in order and ACKed, so
            # that RCV.NXT stays what its challenge ACKs carry.
            self._rcv_nxt = (self._rcv_nxt + len(tcp.payload) + bool(flags & _F.FIN)) & MASK
            note = "the peer's data, ACKed" if tcp.payload else "the peer's FIN, ACKed"
            if flags & _F.FIN:
                self._peer_state = _S.FIN_WAIT_1
                self._notes.append("the peer closed its side during the probe")
            arrival = self.log.received(packet, stamp, _S.ESTABLISHED, self._peer_state, note)
            self._emit(_F.ACK, self._snd_nxt, self._rcv_nxt, now, _S.ESTABLISHED,
                       "ACK of the peer's segment", arrival)
            return
        else:
            note = "not an answer to a probe"
        if reply is None or window is None:
            if self._other_records >= MAX_OTHER_RECORDS:
                return
            self._other_records += 1
            if reply is not None:
                note += "; outside every answer window"
        position = len(self.log)
        self.log.received(packet, stamp, _S.CLOSED if self._reset else _S.ESTABLISHED,
                          self._peer_state, note)
        if reply is not None and window is not None:
            window.replies.append((reply, position, now, stamp))
        if self._reset:
            self.handle_timer(now)

    def _receive_icmp(self, packet: Packet, now: float) -> bool:
        icmp = packet.icmp
        if icmp is None:
            return False
        quoted = icmp.quoted
        if (quoted.src, quoted.dst, quoted.sport, quoted.dport) != (
            self._src, self._dst, self._sport, self._dport
        ):
            return False
        for sent in reversed(self._sent):
            if sent.seq == quoted.seq and not sent.icmp:
                sent.icmp = f"ICMPv{packet.version} type {icmp.type} code {icmp.code}"
                sent.replies.append((Reply.ICMP, None, now, None))
                break
        else:
            self._notes.append(
                f"ICMPv{packet.version} type {icmp.type} code {icmp.code} quoting no segment "
                f"of ours: ignored"
            )
        return True


def min_interval(times: tuple[float, ...] | list[float]) -> float | None:
    """The shortest interval between two consecutive arrival times (None: fewer than two).

    Args:
        times: arrival times in seconds, in any order.

    Returns:
        The smallest difference between neighbours once sorted, or None.
    """
    ordered = sorted(times)
    if len(ordered) < 2:
        return None
    return min(b - a for a, b in itertools.pairwise(ordered))


def summarize(
    *,
    target: str,
    port: int,
    source: str,
    connections: list[ChallengeConnection] | tuple[ChallengeConnection, ...],
    interrupted: bool = False,
) -> ChallengeResult:
    """The run's result: the connections, and the RATE connection's numbers.

    Args:
        target, port, source: the peer and our address.
        connections: one per role, in the order they ran.
        interrupted: the run was stopped.

    Returns:
        The ``ChallengeResult`` (``rate_sent`` counts the RATE connection's SYNs that left,
        ``rate_answered`` its challenge ACKs).
    """
    rate = next((c for c in connections if c.role is ChallengeRole.RATE), None)
    sent = answered = 0
    shortest: float | None = None
    if rate is not None:
        sent = sum(
            1 for i in rate.probe_indices
            if rate.segments[i].flags == "S" and rate.segments[i].send_error is None
        )
        answered = len(rate.ack_times_s)
        shortest = min_interval(rate.ack_times_s)
        if shortest is not None:
            shortest = round(shortest, 6)
    return ChallengeResult(
        target=target, port=port, source=source, connections=tuple(connections),
        min_interval_s=shortest, rate_sent=sent, rate_answered=answered,
        interrupted=interrupted,
    )
