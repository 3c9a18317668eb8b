"""What the TIME-WAIT probe found, and the rules that turn its answers into verdicts.

The vocabulary (roles, probe kinds, answers), one connection's record
(``TimeWaitConnection``) and the run's result (``TimeWaitResult``, built by ``summarize``).
A verdict is only as strong as its evidence: each is True, False, or None with the reason
in ``evidence`` or ``notes`` (no answer, nothing to test, not asked for).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prober.core.close_timeline import CloseResult, Handshake
from prober.core.trace import SegmentRecord

MASK = 0xFFFFFFFF


def linux_time_wait_isn(old_snd_nxt: int) -> int:
    """The ISN Linux picks when it reopens a 4-tuple from TIME-WAIT: its old SND.NXT + 65537
    (tcp_timewait_state_process: ``tw_snd_nxt + 65535 + 2``, and never 0)."""
    isn = (old_snd_nxt + 65537) & MASK
    return isn or 1


def path_rtt_s(close: CloseResult) -> float | None:
    """The path's round trip in seconds, as the close measured it: the shorter of the
    handshake's and our FIN's to the peer's ACK (the handshake's alone counts a lost SYN/ACK
    that the peer repeated a second later)."""
    rtts = [] if close.handshake_rtt is None else [close.handshake_rtt.ns / 1e9]
    if close.our_fin_to_peer_ack_us is not None and close.our_fin_to_peer_ack_us >= 0:
        rtts.append(close.our_fin_to_peer_ack_us / 1e6)
    return min(rtts) if rtts else None


class Role(StrEnum):
    """What one connection of the run is for (each on its own source port)."""

    DURATION = "duration"  # how long TIME-WAIT lasts (and --refin); nobody else touches it
    ABOVE_ISN = "above-isn"  # is a SYN above the old sequence space accepted?
    NEWER_TSVAL = "newer-tsval"  # is a SYN with a newer TSval accepted?
    ASSASSINATE = "assassinate"  # does a RST at exactly RCV.NXT end it (RFC 1337)?


class ReuseKind(StrEnum):
    """A segment sent on the old 4-tuple after the close."""

    SYN_BELOW = "syn-below-isn"  # ISN below the old space, no timestamps: must not reopen
    SYN_ABOVE = "syn-above-isn"  # ISN above the old space, no timestamps: may reopen
    SYN_NEWER_TSVAL = "syn-newer-tsval"  # ISN below, TSval newer than the old one's: may reopen
    FIN_AGAIN = "fin-again"  # our FIN again: the peer's final ACK "was lost"
    RST_OFFSET = "rst-offset"  # RST at the peer's RCV.NXT + 1: must be ignored
    RST_EXACT = "rst-exact"  # RST at exactly RCV.NXT: assassinates unless protected

    @property
    def is_syn(self) -> bool:
        return self in (ReuseKind.SYN_BELOW, ReuseKind.SYN_ABOVE, ReuseKind.SYN_NEWER_TSVAL)


class ReuseAnswer(StrEnum):
    TIME_WAIT_ACK = "time-wait-ack"  # an ACK of the old connection (seq its old SND.NXT)
    SYN_ACK = "syn-ack"  # a new connection: no TIME-WAIT (any more) on the 4-tuple
    RST = "rst"  # nothing listens, and no TIME-WAIT
    ICMP = "icmp"  # an ICMP error quoting the probe
    NONE = "none"  # nothing within its answer window
    NOT_SENT = "not-sent"  # the send failed
    OTHER = "other"  # used only for arrivals that answer no probe


# Answers that show no TIME-WAIT (any more) on the 4-tuple: a listener's SYN/ACK, or a RST.
_GONE = (ReuseAnswer.SYN_ACK, ReuseAnswer.RST)


class PeerClose(StrEnum):
    """How the connection before the probes ended."""

    FIN = "fin"  # the peer closed first and acknowledged our FIN: TIME-WAIT is its to hold
    FIN_THEN_RST = "fin-then-rst"  # it closed first, then reset our FIN: it kept no state
    RST = "rst"  # it closed with a RST (abortive close: no TIME-WAIT)
    DID_NOT_CLOSE = "did-not-close"  # no FIN within close_timeout: it waits for us to close
    INCOMPLETE = "incomplete"  # our FIN was never acknowledged
    NOT_ESTABLISHED = "not-established"  # the handshake failed (see ``close.handshake``)
    INTERRUPTED = "interrupted"


class DurationEnd(StrEnum):
    """How the duration estimate ended."""

    MEASURED = "measured"  # the answer changed from TIME-WAIT ACK to SYN/ACK or RST
    STILL_HELD = "still-held"  # still a TIME-WAIT ACK at --max: at least that long
    NO_TIME_WAIT = "no-time-wait"  # there was none to time
    UNKNOWN = "unknown"  # the answers do not tell (silence, interrupted, nothing sent)
    NOT_MEASURED = "not-measured"  # --no-duration


# Probes after which a below-ISN SYN's SYN/ACK may be their doing, not the peer's habit.
_MAY_END_TIME_WAIT = (
    ReuseKind.SYN_ABOVE, ReuseKind.SYN_NEWER_TSVAL, ReuseKind.RST_OFFSET, ReuseKind.RST_EXACT
)


@dataclass(frozen=True, slots=True)
class ReuseProbe:
    """One segment sent on the old 4-tuple and its answer; times from the peer's TIME-WAIT
    start (t0: the arrival of its ACK of our FIN)."""

    role: Role
    kind: ReuseKind
    at_s: float
    seq: int
    answer: ReuseAnswer
    answer_after_ms: float | None  # from our send to the answer's arrival
    answer_seq: int | None  # the answer's sequence number (a SYN/ACK's: its ISN)
    linux_isn: bool | None  # a SYN/ACK whose ISN is old SND.NXT + 65537 (None: no SYN/ACK)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "connection": self.role.value,
            "kind": self.kind.value,
            "at_s": self.at_s,
            "seq": self.seq,
            "answer": self.answer.value,
            "answer_after_ms": self.answer_after_ms,
            "answer_seq": self.answer_seq,
            "linux_isn": self.linux_isn,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class TimeWaitConnection:
    """One connection of the run: its close (phase one) and the probes after it."""

    role: Role
    source_port: int
    peer_close: PeerClose
    close: CloseResult
    old_snd_max: int | None  # our old SND.NXT (the peer's RCV.NXT in TIME-WAIT)
    old_rcv_nxt: int | None  # the peer's old SND.NXT
    timestamps: bool | None  # the connection negotiated timestamps
    probes: tuple[ReuseProbe, ...]
    segments: tuple[SegmentRecord, ...]  # phase two's segments (the close's are in ``close``)
    notes: tuple[str, ...] = ()
    interrupted: bool = False

    def first(self, kind: ReuseKind) -> ReuseProbe | None:
        return next((p for p in self.probes if p.kind is kind), None)

    def _first_answered_below(self) -> ReuseProbe | None:
        """The first below-ISN SYN that drew an answer (a lost one is no evidence): a
        TIME-WAIT ACK whenever it came, a SYN/ACK or RST only before anything that may end
        a TIME-WAIT (then it may be that probe's doing). Else the first one."""
        disturbed = False
        for probe in self.probes:
            disturbed = disturbed or probe.kind in _MAY_END_TIME_WAIT
            if probe.kind is not ReuseKind.SYN_BELOW:
                continue
            if probe.answer is ReuseAnswer.TIME_WAIT_ACK:
                return probe
            if probe.answer in _GONE:
                if not disturbed:
                    return probe
                break
        return self.first(ReuseKind.SYN_BELOW)

    def holds_time_wait(self) -> tuple[bool | None, str]:
        """Whether this connection shows the peer in TIME-WAIT, and on what evidence."""
        below = self._first_answered_below()
        if below is not None and below.answer is ReuseAnswer.TIME_WAIT_ACK:
            return True, (
                f"a SYN below the old sequence space, {below.at_s:.2f} s after the peer's "
                f"last ACK, drew an ACK of the old connection (seq {self.old_rcv_nxt} = its "
                f"old SND.NXT, ack {self.old_snd_max} = ours)"
            )
        if below is not None and below.answer in _GONE:
            how = "a SYN/ACK (a new connection)" if below.answer is ReuseAnswer.SYN_ACK else "a RST"
            before = {
                PeerClose.FIN_THEN_RST: "the peer reset our FIN (it had dropped the connection "
                "after its FIN), and ",
            }.get(self.peer_close, "")
            return False, (
                f"{before}a SYN below the old sequence space, {below.at_s:.2f} s after the "
                f"close, drew {how}: the peer kept no TIME-WAIT for the 4-tuple (none that "
                f"lasted {below.at_s:.2f} s)"
            )
        if self.peer_close is PeerClose.RST:
            return False, "the peer closed with a RST (an abortive close holds no TIME-WAIT)"
        if self.peer_close is PeerClose.FIN_THEN_RST:
            return False, "the peer reset our FIN: it kept no state after its FIN"
        if self.peer_close is PeerClose.DID_NOT_CLOSE:
            return None, "the peer did not close first: it waits for the client to close"
        if self.peer_close is PeerClose.NOT_ESTABLISHED:
            return None, f"no connection: the handshake ended {self.close.handshake.value}"
        if self.peer_close in (PeerClose.INCOMPLETE, PeerClose.INTERRUPTED):
            return None, f"the close did not complete ({self.peer_close.value})"
        if below is None:
            return None, "no probe was sent after the close"
        return None, f"the SYN after the close drew {below.answer.value}: nothing to go on"

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "source_port": self.source_port,
            "peer_close": self.peer_close.value,
            "old_snd_max": self.old_snd_max,
            "old_rcv_nxt": self.old_rcv_nxt,
            "timestamps": self.timestamps,
            "notes": list(self.notes),
            "interrupted": self.interrupted,
            "close": self.close.to_dict(),
            "segments": [s.to_dict() for s in self.segments],
        }


@dataclass(frozen=True, slots=True)
class TimeWaitResult:
    """The outcome of ``prober timewait`` (``Prober.timewait``).

    ``to_dict()`` gives (keys are stable; docs/json.md):
    ``type`` ``"timewait"``; ``target``, ``port``, ``source``; ``handshake`` and ``peer_close``
    of the duration's connection; ``holds_time_wait`` (true | false | null) and
    ``holds_evidence``; ``duration_end``, ``duration_s``, ``duration_error_s``,
    ``duration_low_s``, ``duration_high_s`` (seconds from the peer's last ACK; the
    TIME-WAIT ended between low and high); ``step_s``, ``max_s``; ``refin_at_s``,
    ``refin_acked``, ``duration_after_refin_s``; ``above_isn_accepted``,
    ``above_isn_linux_isn``, ``newer_tsval_accepted``, ``newer_tsval_linux_isn``;
    ``offset_rst_ignored``, ``assassinated``; ``reuse``: every probe
    (``ReuseProbe.to_dict``); ``connections``; ``notes``; ``interrupted``.
    """

    target: str
    port: int
    source: str
    handshake: Handshake
    peer_close: PeerClose
    holds_time_wait: bool | None
    holds_evidence: str
    duration_end: DurationEnd
    duration_s: float | None
    duration_error_s: float | None
    duration_low_s: float | None
    duration_high_s: float | None
    step_s: float
    max_s: float | None
    refin_at_s: float | None
    refin_acked: bool | None
    duration_after_refin_s: float | None
    above_isn_accepted: bool | None
    above_isn_linux_isn: bool | None
    newer_tsval_accepted: bool | None
    newer_tsval_linux_isn: bool | None
    offset_rst_ignored: bool | None
    assassinated: bool | None
    connections: tuple[TimeWaitConnection, ...]
    notes: tuple[str, ...] = ()
    interrupted: bool = False

    @property
    def reuse(self) -> tuple[ReuseProbe, ...]:
        return tuple(p for c in self.connections for p in c.probes)

    def connection(self, role: Role) -> TimeWaitConnection | None:
        return next((c for c in self.connections if c.role is role), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "timewait",
            "target": self.target,
            "port": self.port,
            "source": self.source,
            "handshake": self.handshake.value,
            "peer_close": self.peer_close.value,
            "holds_time_wait": self.holds_time_wait,
            "holds_evidence": self.holds_evidence,
            "duration_end": self.duration_end.value,
            "duration_s": self.duration_s,
            "duration_error_s": self.duration_error_s,
            "duration_low_s": self.duration_low_s,
            "duration_high_s": self.duration_high_s,
            "step_s": self.step_s,
            "max_s": self.max_s,
            "refin_at_s": self.refin_at_s,
            "refin_acked": self.refin_acked,
            "duration_after_refin_s": self.duration_after_refin_s,
            "above_isn_accepted": self.above_isn_accepted,
            "above_isn_linux_isn": self.above_isn_linux_isn,
            "newer_tsval_accepted": self.newer_tsval_accepted,
            "newer_tsval_linux_isn": self.newer_tsval_linux_isn,
            "offset_rst_ignored": self.offset_rst_ignored,
            "assassinated": self.assassinated,
            "reuse": [p.to_dict() for p in self.reuse],
            "connections": [c.to_dict() for c in self.connections],
            "notes": list(self.notes),
            "interrupted": self.interrupted,
        }


# Unanswered probes after the last TIME-WAIT ACK that --max may still call "still held".
MAX_SILENCES_AT_MAX = 2


def _duration(
    connection: TimeWaitConnection, holds: bool | None, measure: bool, step: float
) -> tuple[DurationEnd, float | None, float | None]:
    """How the duration ended, and the last probe still in TIME-WAIT / the first beyond it."""
    if not measure:
        return DurationEnd.NOT_MEASURED, None, None
    if holds is False:
        return DurationEnd.NO_TIME_WAIT, None, None
    low: float | None = None
    after_low: list[ReuseAnswer] = []  # the answers since the last TIME-WAIT ACK
    last: float | None = None
    for probe in connection.probes:
        if probe.kind is not ReuseKind.SYN_BELOW:
            continue
        last = probe.at_s
        if probe.answer is ReuseAnswer.TIME_WAIT_ACK:
            low, after_low = probe.at_s, []
        elif probe.answer in _GONE and low is not None:
            return DurationEnd.MEASURED, low, probe.at_s
        else:
            after_low.append(probe.answer)
    # Still held only if the TIME-WAIT ACKs lasted to the end: a few silences are lost
    # answers, more (or ICMP errors) mean the answers changed without saying to what.
    held_to_the_end = len(after_low) <= MAX_SILENCES_AT_MAX and all(
        answer in (ReuseAnswer.NONE, ReuseAnswer.NOT_SENT) for answer in after_low
    )
    # Nor after a silence longer than a lost answer or two (or Linux's 500 ms limit).
    silent = last is not None and low is not None and last - low > silence_s(step)
    if low is not None and not connection.interrupted and held_to_the_end and not silent:
        return DurationEnd.STILL_HELD, low, None
    return DurationEnd.UNKNOWN, low, None


def silence_s(step: float) -> float:
    """Unanswered probes after the last TIME-WAIT ACK longer than this end in ``UNKNOWN``."""
    return max(2.5 * step, 1.5)


def _accepted(
    connection: TimeWaitConnection | None, kind: ReuseKind, gone_by: float | None
) -> tuple[bool | None, bool | None]:
    """Whether a reopening SYN of ``kind`` was accepted from TIME-WAIT, and with Linux's ISN.

    None unless the connection first showed the peer in TIME-WAIT (nothing to test), and
    unless the answer tells: a TIME-WAIT ACK refuses, a SYN/ACK accepts, but not one sent
    after ``gone_by`` (when the duration saw the TIME-WAIT over: a listener's SYN/ACK then)
    unless its ISN is Linux's reopening one. A RST (no listener and no TIME-WAIT: Linux's
    TIME-WAIT answers a SYN it would accept, with no listener, with its ACK), an ICMP error
    or anything else says nothing about the TIME-WAIT's choice."""
    if connection is None or connection.holds_time_wait()[0] is not True:
        return None, None
    probe = connection.first(kind)
    if probe is None:
        return None, None
    if probe.answer is ReuseAnswer.TIME_WAIT_ACK:
        return False, None
    if probe.answer is not ReuseAnswer.SYN_ACK:
        return None, None
    if gone_by is not None and probe.at_s >= gone_by and probe.linux_isn is not True:
        return None, None
    return True, probe.linux_isn


def _assassination(
    connection: TimeWaitConnection | None, gone_by: float | None
) -> tuple[bool | None, bool | None]:
    """(offset RST ignored, exact RST assassinated) from the assassination's script:
    SYN, RST+1, SYN, RST, SYN. A TIME-WAIT found gone by a SYN sent after ``gone_by`` (the
    duration saw it end by then) may have run out by itself: that SYN decides nothing."""
    if connection is None or connection.holds_time_wait()[0] is not True:
        return None, None
    syns = [p for p in connection.probes if p.kind is ReuseKind.SYN_BELOW]

    def ran_out(probe: ReuseProbe) -> bool:
        return probe.answer in _GONE and gone_by is not None and probe.at_s >= gone_by

    if len(syns) < 2 or syns[1].answer not in (ReuseAnswer.TIME_WAIT_ACK, *_GONE):
        return None, None
    if ran_out(syns[1]):
        return None, None
    if syns[1].answer in _GONE:
        return False, True  # even the offset RST ended it
    if len(syns) < 3 or syns[2].answer not in (ReuseAnswer.TIME_WAIT_ACK, *_GONE):
        return True, None
    if ran_out(syns[2]):
        return True, None
    return True, syns[2].answer in _GONE


def summarize(
    *,
    target: str,
    port: int,
    source: str,
    connections: Sequence[TimeWaitConnection],
    step: float,
    max_time: float,
    measure_duration: bool,
    refin_at: float | None,
) -> TimeWaitResult:
    """The run's verdicts from its connections (the first is the duration's)."""
    duration_connection = connections[0]
    by_role = {c.role: c for c in connections}
    holds, evidence = duration_connection.holds_time_wait()
    for other in connections[1:]:
        # The others ask earlier (+0.5 s): a TIME-WAIT one of them saw outweighs a duration
        # connection that found none at its first probe (it had ended by then).
        other_holds, other_evidence = other.holds_time_wait()
        if (holds is None and other_holds is not None) or (holds is False and other_holds):
            holds = other_holds
            evidence = f"on the {other.role.value} connection: {other_evidence}"
        if holds is True:
            break
    end, low, high = _duration(duration_connection, holds, measure_duration, step)
    unheld_note = ""
    if end is DurationEnd.UNKNOWN and low is None and holds is True:
        # Gone by the duration's first probe, yet seen earlier on another connection.
        first = duration_connection.first(ReuseKind.SYN_BELOW)
        seen = [
            p.at_s for c in connections[1:] for p in c.probes
            if p.kind is ReuseKind.SYN_BELOW and p.answer is ReuseAnswer.TIME_WAIT_ACK
        ]
        # ...unless another connection's TIME-WAIT outlived that probe: then the duration's
        # 4-tuple was simply never held (a full bucket table), and timed nothing.
        alive_after = first is not None and any(
            p.at_s >= first.at_s and (
                p.answer is ReuseAnswer.TIME_WAIT_ACK
                or (p.answer is ReuseAnswer.SYN_ACK and p.linux_isn is True)
            )
            for c in connections[1:] for p in c.probes
        )
        if first is not None and first.answer in _GONE and seen and min(seen) < first.at_s:
            if alive_after:
                unheld_note = (
                    f"the duration's connection found no TIME-WAIT at +{first.at_s:g} s while "
                    "another connection's lasted beyond it: the peer kept one for some "
                    "4-tuples only (e.g. tcp_max_tw_buckets), so the duration is unknown"
                )
            else:
                end, low, high = DurationEnd.MEASURED, min(seen), first.at_s
    notes: list[str] = []
    if unheld_note:
        notes.append(unheld_note)
    if end is DurationEnd.UNKNOWN and low is not None and not duration_connection.interrupted:
        notes.append(
            f"the below-ISN SYNs after +{low:g} s drew no answer at all (neither the "
            "TIME-WAIT's ACK nor a new connection's SYN/ACK): the path or the peer went "
            "silent, so when the TIME-WAIT ended is unknown"
        )
    duration = error = None
    if end is DurationEnd.MEASURED and low is not None and high is not None:
        duration, error = round((low + high) / 2, 3), round((high - low) / 2, 3)
    elif end is DurationEnd.UNKNOWN and low is not None and not duration_connection.interrupted:
        notes.append(
            f"TIME-WAIT ACKs until +{low:g} s, then no SYN/ACK or RST, only silence or ICMP "
            "errors: the TIME-WAIT lasted at least that long, its end is not seen"
        )
    refin = duration_connection.first(ReuseKind.FIN_AGAIN)
    refin_acked: bool | None = None
    if refin is not None and holds is True:
        if refin.answer is ReuseAnswer.TIME_WAIT_ACK:
            refin_acked = True
        elif refin.answer in _GONE:
            refin_acked = False
        elif refin.answer is ReuseAnswer.NONE:
            # Silence is no refusal: the FIN or its ACK may have been lost on the way.
            notes.append(
                "our FIN again drew no answer (it or the ACK may have been lost): whether "
                "the peer ACKs a repeated FIN is unknown"
            )
    # The other connections' tests assume a TIME-WAIT still there; the duration says when
    # it no longer was (its own 4-tuple, closed at about the same moment).
    gone_by = high if end is DurationEnd.MEASURED else None
    above, above_linux = _accepted(by_role.get(Role.ABOVE_ISN), ReuseKind.SYN_ABOVE, gone_by)
    newer, newer_linux = _accepted(
        by_role.get(Role.NEWER_TSVAL), ReuseKind.SYN_NEWER_TSVAL, gone_by
    )
    offset_ignored, assassinated = _assassination(by_role.get(Role.ASSASSINATE), gone_by)
    if measure_duration and step < 0.5:
        notes.append(
            "--step under 0.5 s: Linux answers a TIME-WAIT at most once per 500 ms "
            "(tcp_invalid_ratelimit), so some probes may draw silence"
        )
    close = duration_connection.close
    rtt = path_rtt_s(close)
    if measure_duration and rtt is not None and rtt > step / 2:
        notes.append(
            f"the RTT ({rtt * 1000:.0f} ms) exceeds half the --step: an answer may be credited "
            "to the next probe, so the duration may be one step off"
        )
    return TimeWaitResult(
        target=target,
        port=port,
        source=source,
        handshake=close.handshake,
        peer_close=duration_connection.peer_close,
        holds_time_wait=holds,
        holds_evidence=evidence,
        duration_end=end,
        duration_s=duration,
        duration_error_s=error,
        duration_low_s=low,
        duration_high_s=high,
        step_s=step,
        max_s=max_time if measure_duration else None,
        refin_at_s=refin_at,
        refin_acked=refin_acked,
        duration_after_refin_s=(
            None if duration is None or refin_at is None or not refin_acked
            else round(duration - refin_at, 3)
        ),
        above_isn_accepted=above,
        above_isn_linux_isn=above_linux,
        newer_tsval_accepted=newer,
        newer_tsval_linux_isn=newer_linux,
        offset_rst_ignored=offset_ignored,
        assassinated=assassinated,
        connections=tuple(connections),
        notes=tuple(notes),
        interrupted=any(c.interrupted for c in connections),
    )
