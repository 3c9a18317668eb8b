"""Human output of the conversation probes (halfopen, close): a ladder, then the verdict.

Reads result objects only.
"""

from __future__ import annotations

import sys

from prober.core import close as close_probe
from prober.core.close import CloseKind, CloseResult, Handshake
from prober.core.halfopen import EndedBy, HalfOpenResult
from prober.output.ladder import ladder
from prober.output.strays import invalid_lines, notice_lines


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _ascii_only() -> bool:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "─►◄".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return True
    return False


def _ms(us: float | None) -> str:
    return "?" if us is None else f"{us / 1000:.3f} ms"


def _s(us: float) -> str:
    return f"{us / 1_000_000:.3f} s"


def halfopen_report(result: HalfOpenResult) -> list[str]:
    us = _endpoint(result.source, result.source_port)
    peer = _endpoint(result.target, result.port)
    lines = [f"HALF-OPEN {peer} from {us} (the final ACK is never sent)", ""]
    lines += ladder(result.segments, us, peer, ascii_only=_ascii_only())
    lines.append("")
    if not result.syn_acks:
        what = {
            "rst": "it answered RST: the port is closed",
            "icmp-unreachable": "an ICMP error came back",
            "no-response": "no answer",
        }.get(result.reason.value, result.reason.value)
        lines.append(f"No SYN/ACK: {what} ({result.state.value}).")
        return lines + _decided_nothing(result)
    rtt = "" if result.rtt is None else f", {_ms(result.rtt.us)} after our SYN"
    count = result.retransmissions
    retransmitted = "no retransmission" if count == 0 else f"{count} retransmission(s):"
    lines.append(f"SYN/ACK at +0.000 s{rtt}; {retransmitted}")
    for arrival in result.syn_acks[1:]:
        kind = "retransmission" if arrival.retransmission else "duplicate"
        interval = "" if arrival.interval_us is None else f" (interval {_s(arrival.interval_us)})"
        lines.append(f"  #{arrival.number:<2} +{_s(arrival.since_first_us)}{interval}  {kind}")
    lines.append(_watch_ended(result) + ".")
    lines += _decided_nothing(result)
    if result.rst_sent:
        lines.append("We sent a RST to free the peer's half-open request.")
    elif result.leave_open:
        lines.append("No RST sent (--leave-open).")
    cookies = result.cookies
    lines.append(f"SYN cookies: {cookies.verdict.value}")
    lines += [f"  - {reason}" for reason in cookies.reasons]
    return lines


def _watch_ended(result: HalfOpenResult) -> str:
    """How the watch ended and whether that shows the peer gave up."""
    last = result.last_syn_ack_after_us or 0.0
    needed = result.silence_needed_s or 0.0
    not_safe = f" before a conclusion was safe: {result.caveat}" if result.caveat else ""
    unknown = "; whether the peer gave up is unknown"
    if result.ended_by is EndedBy.SILENCE:
        if result.retransmissions:
            return (
                f"The peer went silent after its last SYN/ACK at +{_s(last)}: it gave up "
                f"(no copy in the {needed:.1f} s that any known schedule allows)"
            )
        return (
            f"The peer never retransmitted its SYN/ACK and stayed silent for {needed:.1f} s, "
            "longer than any known stack's first retransmission: it kept no request, or "
            "gave up at once"
        )
    if result.ended_by is EndedBy.RST:
        return "The peer gave up with a RST"
    if result.ended_by is EndedBy.MAX_WAIT:
        return f"--max-wait ended the watch{not_safe}{unknown}"
    if result.ended_by is EndedBy.INTERRUPTED:
        return f"Interrupted{not_safe}{unknown}"
    return "No SYN/ACK"


def _decided_nothing(result: HalfOpenResult) -> list[str]:
    """The packets that proved nothing, by kind, and the ICMP notices, of both
    conversations (never part of a verdict)."""
    lines = invalid_lines(result.invalid_by_kind)
    lines += notice_lines(result.notices, result.icmp_notices)
    check = result.cookie_check
    if check is not None:
        where = " on the cookie check's port"
        lines += invalid_lines(check.invalid_by_kind, where)
        lines += notice_lines(check.notices, check.icmp_notices, where)
    return lines


def close_report(result: CloseResult) -> list[str]:
    us = _endpoint(result.source, result.source_port)
    peer = _endpoint(result.target, result.port)
    lines = [f"CLOSE {peer} from {us} ({result.mode.value})", ""]
    lines += ladder(result.segments, us, peer, ascii_only=_ascii_only())
    lines += ["", close_verdict(result)]
    lines += close_anomalies(result)
    return lines


def close_verdict(result: CloseResult, *, time_wait: bool = True) -> str:
    """One paragraph: what kind of close, in which order, with which timings; with
    ``time_wait``, what it showed (or could not) about TIME-WAIT."""
    if result.handshake is not Handshake.OPEN:
        return f"No connection: the handshake ended {result.handshake.value}."
    kind = result.close_kind
    parts: list[str] = []
    if kind is CloseKind.FOUR_WAY:
        parts.append(
            f"Four-way close: the peer ACKed our FIN after {_ms(result.our_fin_to_peer_ack_us)}"
            f" and sent its own FIN {_ms(result.peer_ack_to_peer_fin_us)} later"
        )
    elif kind is CloseKind.THREE_WAY:
        parts.append(
            "Three-way close: the peer's FIN carried the ACK of our FIN, "
            f"{_ms(result.our_fin_to_peer_fin_us)} after it"
        )
    elif kind is CloseKind.SIMULTANEOUS:
        parts.append("Simultaneous close: both FINs crossed (each side went through CLOSING)")
    elif kind is CloseKind.PEER_FIRST:
        parts.append(
            "Passive close: we ACKed the peer's FIN after "
            f"{_ms(result.peer_fin_to_our_ack_us)} and sent ours"
            f" {_ms(result.our_ack_to_our_fin_us)} later"
        )
    elif kind is CloseKind.RESET:
        parts.append("The connection ended with a RST")
    else:
        parts.append(f"The close is {kind.value}")
    if result.half_close:
        parts.append(
            f"the peer sent {result.bytes_after_our_fin} bytes after our FIN (a half-close)"
        )
    if result.peer_fin_retransmissions:
        intervals = ", ".join(
            _s(r.interval_us) for r in result.peer_fin_retransmissions if r.interval_us
        )
        end = result.peer_fin_retransmissions_end
        parts.append(
            f"the peer retransmitted its FIN {len(result.peer_fin_retransmissions)} time(s)"
            + (f" (intervals {intervals})" if intervals else "")
            + (f", then {end.value}" if end is not None else "")
        )
    if time_wait:
        parts += _time_wait(result)
    received = result.bytes_received
    if received:
        parts.append(f"{received} bytes received in all")
    return "; ".join(parts) + "."


def _time_wait(result: CloseResult) -> list[str]:
    """What was observed about TIME-WAIT. Ours we hold and time; the peer's we can only
    say is due (it closed first), not that its kernel kept it."""
    due = result.time_wait_due
    if due is None:
        return []
    ours: list[str] = []
    if result.time_wait_skipped:
        ours.append("we would hold TIME-WAIT (skipped: --no-wait)")
    elif result.time_wait_held_us is not None:
        cut = " (cut short)" if result.time_wait_cut_short else ""
        ours.append(f"we held TIME-WAIT for {_s(result.time_wait_held_us)}{cut}")
    check = (
        f"`prober timewait {_endpoint(result.target, result.port)}`"
        + (" with the same --send" if result.bytes_sent else "")
        + f" checks whether it keeps one; on the peer: {close_probe.PEER_TIME_WAIT_CHECK}"
    )
    if due is close_probe.TimeWaitDue.US:
        return ours
    if due is close_probe.TimeWaitDue.PEER:
        return [
            "the peer closed first, so TIME-WAIT is its to hold; this run cannot tell "
            f"whether it keeps one ({check})"
        ]
    return [*ours, f"the peer's TIME-WAIT is due as well, not observed here ({check})"]


def close_anomalies(result: CloseResult) -> list[str]:
    """Lines for what was not part of the conversation: strays, ICMP that decided nothing,
    data dropped outside the window, segments not recorded, sends that failed."""
    lines: list[str] = []
    lines += invalid_lines(result.invalid_by_kind)
    lines += notice_lines(result.notices, result.icmp_notices)
    if result.answers_rate_limited:
        lines.append(
            f"{result.answers_rate_limited} challenge or out-of-window ACK(s) not sent "
            "(at most 10 a second, RFC 5961 §7)."
        )
    stats = result.receive
    if stats is not None and (
        stats.out_of_order_segments or stats.out_of_window_bytes or stats.dropped_no_room_segments
    ):
        lines.append(
            f"Receive window {stats.window_bytes} bytes: out of order "
            f"{stats.out_of_order_segments} segment(s), at most "
            f"{stats.buffered_high_water_bytes} bytes buffered; dropped outside the window "
            f"{stats.out_of_window_segments} segment(s), {stats.out_of_window_bytes} bytes"
            + (
                f"; dropped for want of room {stats.dropped_no_room_segments} segment(s)"
                if stats.dropped_no_room_segments
                else ""
            )
            + "."
        )
    if stats is not None and stats.kept_bytes < stats.delivered_bytes:
        lines.append(
            f"Kept the first {stats.kept_bytes} of {stats.delivered_bytes} bytes received."
        )
    if result.unrecorded_segments:
        lines.append(
            f"{result.unrecorded_segments} segments (bulk data and its ACKs, strays) are "
            "counted but not in the ladder, JSON or pcap."
        )
    if result.failed_sends:
        lines.append(
            f"{result.failed_sends} segment(s) could not be sent ({result.error}); the ladder "
            "marks them, and the pcap leaves them out."
        )
    return lines
