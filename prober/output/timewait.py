"""Human output of `prober timewait`: each connection's ladder (its close, then the probes on
its 4-tuple, repeats collapsed), then the verdicts with their evidence.

Reads result objects only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from prober.core.timewait_result import (
    DurationEnd,
    PeerClose,
    ReuseAnswer,
    ReuseKind,
    Role,
    TimeWaitConnection,
    TimeWaitResult,
)
from prober.core.trace import Direction, SegmentRecord
from prober.output.conversation import _ascii_only, _endpoint, close_verdict
from prober.output.ladder import ladder

# Runs of identical rounds (probe and answer) longer than this are collapsed to their first
# and last, with one line for those between (at least two of them).
KEEP_REPEATS = 3

_KIND_TEXT = {
    ReuseKind.SYN_BELOW: "SYN below the old ISN",
    ReuseKind.SYN_ABOVE: "SYN above the old sequence space",
    ReuseKind.SYN_NEWER_TSVAL: "SYN with a newer TSval",
    ReuseKind.FIN_AGAIN: "our FIN again",
    ReuseKind.RST_OFFSET: "RST at RCV.NXT + 1",
    ReuseKind.RST_EXACT: "RST at exactly RCV.NXT",
}
_ANSWER_TEXT = {
    ReuseAnswer.TIME_WAIT_ACK: "an ACK of the old connection (TIME-WAIT)",
    ReuseAnswer.SYN_ACK: "SYN/ACK (a new connection)",
    ReuseAnswer.RST: "RST",
    ReuseAnswer.ICMP: "an ICMP error",
    ReuseAnswer.NONE: "no answer",
    ReuseAnswer.NOT_SENT: "not sent",
    ReuseAnswer.OTHER: "something else",
}
_PEER_CLOSE_TEXT = {
    PeerClose.DID_NOT_CLOSE: "The peer did not close first within --close-timeout: it waits for "
    "the client to close, so the TIME-WAIT would be ours, not its. Nothing to observe; with "
    "--send, give a request the server answers and then closes on (HTTP/1.0 does).",
    PeerClose.INCOMPLETE: "The close did not complete (our FIN was never acknowledged): "
    "whether the peer holds TIME-WAIT is unknown.",
    PeerClose.INTERRUPTED: "Interrupted before the close completed.",
}


_NOT_PROBED = {
    PeerClose.DID_NOT_CLOSE: "the peer did not close first",
    PeerClose.INCOMPLETE: "the close did not complete",
    PeerClose.INTERRUPTED: "interrupted",
    PeerClose.RST: "the peer closed with a RST",
    PeerClose.NOT_ESTABLISHED: "no connection",
}


def _rounds(records: Sequence[SegmentRecord]) -> list[list[int]]:
    """Indices of the probes' records, one list per probe: our segment and what followed it
    (the answers, our RST that frees a new connection) until our next probe. Arrivals before
    the first probe (a late ACK of our FIN) belong to no round: round n is probe n."""
    rounds: list[list[int]] = []
    for index, record in enumerate(records):
        if record.direction is Direction.SENT and record.answers is None:
            rounds.append([])
        if rounds:  # an arrival before the first probe is no probe's round: never collapsed
            rounds[-1].append(index)
    return rounds


def _omitted(connection: TimeWaitConnection, offset: int) -> dict[int, str]:
    """Records of repeated rounds to leave out of the ladder, each run with its one line."""
    records = connection.segments
    rounds = _rounds(records)
    probes = connection.probes
    omit: dict[int, str] = {}

    def signature(number: int) -> tuple[object, ...]:
        kinds = tuple((records[i].direction, records[i].flags) for i in rounds[number])
        probe = probes[number] if number < len(probes) else None
        return (kinds, None if probe is None else (probe.kind, probe.answer))

    start = 0
    while start < len(rounds):
        end = start
        while end + 1 < len(rounds) and signature(end + 1) == signature(start):
            end += 1
        if end - start + 1 > KEEP_REPEATS and end < len(probes):
            middle = range(start + 1, end)
            first, last = probes[start + 1], probes[end - 1]
            text = (
                f"{len(middle)} more the same: {_KIND_TEXT[first.kind]} → "
                f"{_ANSWER_TEXT[first.answer]}, +{first.at_s:.1f} s … +{last.at_s:.1f} s"
            )
            for number in middle:
                for index in rounds[number]:
                    omit[offset + index] = text
        start = end + 1
    return omit


def _connection_ladder(connection: TimeWaitConnection, *, with_close: bool) -> list[str]:
    close = connection.close
    us = _endpoint(close.source, close.source_port)
    peer = _endpoint(close.target, close.port)
    records: list[SegmentRecord] = list(close.segments) if with_close else []
    offset = len(records)
    omit = _omitted(connection, offset)
    # A phase-two record's ``answers`` counts within its own records: shift it past the close's.
    records += [
        record if record.answers is None else replace(record, answers=record.answers + offset)
        for record in connection.segments
    ]
    return ladder(records, us, peer, ascii_only=_ascii_only(), omit=omit)


def _s(seconds: float | None) -> str:
    """Seconds to the millisecond the verdicts carry, at least one decimal: a --step 0.3
    gives ± 0.15 s, which one decimal would understate as ± 0.1 s."""
    text = f"{seconds or 0.0:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _yes_no(value: bool | None, yes: str, no: str, unknown: str) -> str:
    return unknown if value is None else yes if value else no


def timewait_verdicts(result: TimeWaitResult) -> list[str]:
    """The verdict lines, each with what it rests on."""
    lines: list[str] = []
    holds = result.holds_time_wait
    duration = result.connection(Role.DURATION)
    if duration is not None and duration.peer_close in _PEER_CLOSE_TEXT:
        lines.append(_PEER_CLOSE_TEXT[duration.peer_close])
    if holds is True:
        lines.append(f"The peer holds TIME-WAIT: {result.holds_evidence}.")
    elif holds is False:
        lines.append(f"The peer keeps no TIME-WAIT: {result.holds_evidence}.")
    elif duration is None or duration.peer_close not in _PEER_CLOSE_TEXT:
        lines.append(f"Whether the peer holds TIME-WAIT is unknown: {result.holds_evidence}.")
    end = result.duration_end
    if end is DurationEnd.MEASURED:
        lines.append(
            f"Duration: {_s(result.duration_s)} s ± {_s(result.duration_error_s)} s from the "
            f"peer's ACK of our FIN (still TIME-WAIT at +{_s(result.duration_low_s)} s, gone "
            f"at +{_s(result.duration_high_s)} s; a probe every {result.step_s:g} s)."
        )
    elif end is DurationEnd.STILL_HELD:
        lines.append(
            f"Duration: at least {_s(result.duration_low_s)} s (still TIME-WAIT when --max "
            f"{result.max_s:g} s ran out)."
        )
    elif end is DurationEnd.UNKNOWN and holds is not False and result.reuse:
        if result.interrupted and result.duration_low_s is not None:
            lines.append(
                f"Duration: at least {_s(result.duration_low_s)} s (interrupted before it "
                "ended; the peer's TIME-WAIT is left to run out)."
            )
        else:
            lines.append("Duration: unknown (the probes' answers do not show its end).")
    if result.refin_at_s is not None and holds is not False:
        if result.refin_acked:
            after = result.duration_after_refin_s
            restart = (
                f"; TIME-WAIT then lasted {after:.1f} s from it: the peer restarted its 2 MSL "
                "(RFC 9293)" if after is not None else ""
            )
            lines.append(
                f"Our FIN again at +{result.refin_at_s:g} s (as if the peer's last ACK was "
                f"lost): ACKed again{restart}."
            )
        elif duration is not None and duration.first(ReuseKind.FIN_AGAIN) is None:
            lines.append(
                f"Our FIN again at +{result.refin_at_s:g} s: not sent (the probing had "
                "ended before it)."
            )
        else:
            lines.append(
                f"Our FIN again at +{result.refin_at_s:g} s: "
                + _yes_no(result.refin_acked, "", "not ACKed", "its answer is unknown")
                + "."
            )
    reopen = []
    for role, name, accepted, linux in (
        (Role.ABOVE_ISN, "a SYN above the old sequence space", result.above_isn_accepted,
         result.above_isn_linux_isn),
        (Role.NEWER_TSVAL, "a SYN with a newer TSval", result.newer_tsval_accepted,
         result.newer_tsval_linux_isn),
    ):
        if accepted is None:
            # Asked for, and a TIME-WAIT to test: say it gave no verdict, never drop it.
            if holds is True and result.connection(role) is not None:
                reopen.append(f"{name} drew no clear answer")
            continue
        isn = " with ISN = old SND.NXT + 65537 (Linux's choice)" if linux else ""
        reopen.append(f"{name} was {'accepted' + isn if accepted else 'refused'}")
    if reopen:
        lines.append("Reopening from TIME-WAIT (RFC 1122 4.2.2.13, RFC 6191): "
                     + "; ".join(reopen) + ".")
    asked = holds is True and result.connection(Role.ASSASSINATE) is not None
    if asked or result.assassinated is not None or result.offset_rst_ignored is not None:
        offset = _yes_no(result.offset_rst_ignored, "was ignored", "ended it",
                         "drew no clear answer")
        exact = _yes_no(
            result.assassinated,
            "ended the TIME-WAIT: the peer does not protect it (RFC 1337; Linux "
            "tcp_rfc1337=0)",
            "was ignored: the peer protects TIME-WAIT (RFC 1337; Linux tcp_rfc1337=1)",
            "drew no clear answer",
        )
        lines.append(f"Assassination: a RST at RCV.NXT + 1 {offset}; one at exactly RCV.NXT "
                     f"{exact}.")
    lines += list(result.notes)
    for connection in result.connections:
        lines += [f"({connection.role.value}) {note}" for note in connection.notes]
    return lines


def timewait_report(result: TimeWaitResult) -> list[str]:
    peer = _endpoint(result.target, result.port)
    lines = [f"TIMEWAIT {peer}: the peer closes first, then its 4-tuple is probed", ""]
    for number, connection in enumerate(result.connections):
        close = connection.close
        us = _endpoint(close.source, close.source_port)
        first = number == 0
        lines.append(f"{connection.role.value} connection, from {us}:")
        if first:
            lines += _connection_ladder(connection, with_close=True)
            if connection.peer_close not in _PEER_CLOSE_TEXT:  # else the verdict says it
                lines += ["", close_verdict(close, time_wait=False)]
        elif not connection.segments:
            why = _NOT_PROBED.get(connection.peer_close, f"its close: {close.close_kind.value}")
            lines.append(f"({why}; nothing probed)")
        else:
            lines.append(f"(its close: {close.close_kind.value}, as above; then)")
            lines += _connection_ladder(connection, with_close=False)
        lines.append("")
    return lines + timewait_verdicts(result)
