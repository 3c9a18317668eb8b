"""From the results of the profile's probes to its properties and ladders (pure).

Each property is read off one probe's result and names the segments it rests on. The rules:

- Options, window and TTL come from the first SYN/ACK of the plain SYNs (our SYN offers MSS,
  SACK-permitted, timestamps and window scale 7, so a peer that leaves one out does not
  offer it, RFC 7323 §1.3 and RFC 2018). ECN: an ECN-setup SYN (ECE and CWR) answered by a
  SYN/ACK with ECE and without CWR (RFC 3168 §6.1.1).
- The initial TTL is inferred: the smallest of 32, 64, 128 and 255 at or above the TTL seen
  (a router on the way lowers it by one per hop). It rests on the path being shorter than the
  gap to the next value down.
- The SYN/ACK schedule (halfopen): the initial RTO is the gap from the first SYN/ACK to its
  first retransmission; the backoff the median ratio of successive gaps; the retry count the
  retransmissions seen when the peer gave up (silence when the next one was due, or a RST);
  a watch that ended first gives "at least N" and no value.
- The FIN schedule: the same rules, on the peer's FIN that we never acknowledge.
- TIME-WAIT, its reuse rules and RFC 1337 are the timewait probe's verdicts; the repeated FIN
  runs on a connection of its own so that the duration is not restarted by it.
- RFC 5961: the challenge probe's verdicts.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prober.core.challenge import ChallengeConnection, ChallengeResult, ChallengeRole
from prober.core.close_timeline import CloseKind, CloseResult, FinRetransmissionsEnd
from prober.core.cookie_verdict import CookieAnswer
from prober.core.halfopen import EndedBy, HalfOpenResult
from prober.core.parse import parse_packet
from prober.core.profile import (
    Basis,
    CookieMode,
    FinGiveUp,
    Ladder,
    ProbeKind,
    Property,
    PropertyName,
    SegmentRef,
    Value,
)
from prober.core.states import TcpState
from prober.core.syn import Reason, SynProbeResult, SynRun
from prober.core.timewait_result import (
    DurationEnd,
    ReuseKind,
    Role,
    TimeWaitConnection,
    TimeWaitResult,
)
from prober.core.timing import Clock
from prober.core.trace import Direction, SegmentRecord
from prober.core.wire import MalformedPacket

__all__ = ["ProbeResults", "infer", "initial_ttl"]

P = PropertyName
COMMON_INITIAL_TTLS = (32, 64, 128, 255)


@dataclass(frozen=True)
class ProbeResults:
    """What each probe of the profile returned (None: it did not run; ``skipped`` says why)."""

    syn: SynRun | None = None
    ecn: SynRun | None = None
    halfopen: HalfOpenResult | None = None
    close: CloseResult | None = None
    fin: CloseResult | None = None
    timewait: TimeWaitResult | None = None
    refin: TimeWaitResult | None = None
    challenge: ChallengeResult | None = None
    skipped: dict[ProbeKind, str] = field(default_factory=dict)


def initial_ttl(observed: int) -> tuple[int, int]:
    """The common initial TTL at or above ``observed`` and the hops it implies."""
    start = next(value for value in COMMON_INITIAL_TTLS if value >= observed)
    return start, start - observed


# --- helpers --------------------------------------------------------------------------------


def _prop(
    name: PropertyName,
    value: Value,
    display: str,
    evidence: str,
    *,
    basis: Basis = Basis.MEASURED,
    refs: Iterable[SegmentRef] = (),
    unit: str | None = None,
    error: float | None = None,
    rests_on: str | None = None,
) -> Property:
    return Property(name=name, value=value, display=display, basis=basis, evidence=evidence,
                    segments=tuple(refs), unit=unit, error=error, rests_on=rests_on)


def _unknown(name: PropertyName, evidence: str, *, display: str = "unknown",
             refs: Iterable[SegmentRef] = ()) -> Property:
    return _prop(name, None, display, evidence, basis=Basis.UNKNOWN, refs=refs)


def _not_measured(name: PropertyName, why: str) -> Property:
    return _prop(name, None, "not measured", why, basis=Basis.NOT_MEASURED)


def _seconds(value: float) -> str:
    if value >= 0.9995:  # 0.9996 s is "1 s", not "1e+03 ms"
        return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"
    return f"{value * 1000:.3g} ms"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _ref(kind: ProbeKind, indices: Iterable[int]) -> SegmentRef:
    return SegmentRef(kind, tuple(indices))


def _indices(records: Sequence[SegmentRecord],
             keep: Callable[[SegmentRecord], bool]) -> list[int]:
    return [i for i, record in enumerate(records) if keep(record)]


def _ratios(intervals: Sequence[float]) -> list[float]:
    return [b / a for a, b in itertools.pairwise(intervals) if a > 0]


# --- the plain SYNs and the ECN SYN -----------------------------------------------------


def _syn_ladder(kind: ProbeKind, title: str, probe: SynProbeResult) -> Ladder:
    """A SYN probe's packets as ladder records (the probe keeps bytes, not a segment log)."""
    records: list[SegmentRecord] = []
    our_isn: int | None = None
    peer_isn: int | None = None
    for time_ns, raw in probe.wire:
        try:
            packet = parse_packet(raw)
        except MalformedPacket:
            continue
        tcp = packet.tcp
        if tcp is None:
            continue
        ours = tcp.sport == probe.source_port and tcp.dport == probe.port
        if ours and our_isn is None:
            our_isn = tcp.seq
        if not ours and tcp.flags & 0x12 == 0x12 and peer_isn is None:
            peer_isn = tcp.seq
        sender_isn = our_isn if ours else peer_isn
        receiver_isn = peer_isn if ours else our_isn
        flags = tcp.flags.compact()
        syn_ack = "S" in flags and "." in flags
        records.append(SegmentRecord(
            direction=Direction.SENT if ours else Direction.RECEIVED,
            flags=flags,
            seq=tcp.seq,
            ack=tcp.ack,
            relative_seq=(tcp.seq - (sender_isn or tcp.seq)) & 0xFFFFFFFF,
            relative_ack=((tcp.ack - (receiver_isn or 0)) & 0xFFFFFFFF) if tcp.flags & 0x10
            else 0,
            length=len(tcp.payload),
            window=tcp.window,
            options=tcp.options.order,
            tsval=None if tcp.options.timestamp is None else tcp.options.timestamp[0],
            tsecr=None if tcp.options.timestamp is None else tcp.options.timestamp[1],
            time_ns=time_ns,
            clock=probe.clock or Clock.USER,
            our_state=TcpState.SYN_SENT,
            peer_state=TcpState.SYN_RECEIVED if syn_ack else TcpState.LISTEN,
            raw=raw,
        ))
    records.sort(key=lambda r: r.time_ns)
    return Ladder(kind, title, probe.source_port, tuple(records))


def _answered(run: SynRun | None) -> list[SynProbeResult]:
    if run is None:
        return []
    return [p for p in run.probes if p.reason is Reason.SYN_ACK and p.tcp is not None]


def _syn_properties(
    run: SynRun | None, skipped: str | None
) -> tuple[list[Property], Ladder | None]:
    names = (P.HANDSHAKE_RTT_MS, P.MSS, P.WINDOW, P.WINDOW_SCALE, P.SACK, P.TIMESTAMPS,
             P.OPTION_ORDER, P.INITIAL_TTL)
    answered = _answered(run)
    if run is None or not answered:
        why = skipped or (
            "no SYN/ACK to the plain SYNs" + (f" ({run.probes[0].reason.value})"
                                              if run is not None and run.probes else "")
        )
        return [_unknown(name, why) for name in names], (
            None if run is None or not run.probes
            else _syn_ladder(ProbeKind.SYN, "SYN: the handshake's first two segments",
                             run.probes[0]))
    first = answered[0]
    ladder = _syn_ladder(ProbeKind.SYN, "SYN → SYN/ACK (the SYN/ACK's options and TTL)", first)
    answer_index = _indices(ladder.records, lambda r: r.direction is Direction.RECEIVED)[:1]
    sent_index = _indices(ladder.records, lambda r: r.direction is Direction.SENT)[:1]
    refs = [_ref(ProbeKind.SYN, sent_index + answer_index)]
    reply = first.tcp
    assert reply is not None
    seen = f"the SYN/ACK (flags {reply.flags}, options {reply.options or 'none'})"
    out: list[Property] = []
    rtts = [p.rtt.ms for p in answered if p.rtt is not None]
    clocks = {p.rtt.clock.value for p in answered if p.rtt is not None}
    if rtts:
        out.append(_prop(
            P.HANDSHAKE_RTT_MS, round(min(rtts), 3), f"{min(rtts):.3f} ms",
            f"the shortest of {len(rtts)} SYN → SYN/ACK round trips "
            f"({', '.join(f'{r:.3f}' for r in rtts)} ms; {'/'.join(sorted(clocks))} clock)",
            refs=refs, unit="ms"))
    else:
        out.append(_unknown(P.HANDSHAKE_RTT_MS, "no RTT could be taken", refs=refs))
    if reply.mss is None:
        out.append(_prop(P.MSS, False, "none", f"{seen} carries no MSS option", refs=refs))
    else:
        out.append(_prop(P.MSS, reply.mss, str(reply.mss), f"{seen}: MSS {reply.mss}",
                         refs=refs, unit="bytes"))
    out.append(_prop(P.WINDOW, reply.window, str(reply.window),
                     f"{seen}: window field {reply.window} (unscaled in a SYN/ACK)", refs=refs,
                     unit="bytes"))
    if reply.window_scale is None:
        out.append(_prop(P.WINDOW_SCALE, False, "not offered",
                         f"{seen} has no window-scale option though our SYN offered one",
                         refs=refs))
    else:
        out.append(_prop(P.WINDOW_SCALE, reply.window_scale, f"shift {reply.window_scale}",
                         f"{seen}: window scale {reply.window_scale} "
                         f"(x{1 << min(reply.window_scale, 14)})", refs=refs))
    out.append(_prop(P.SACK, reply.sack_permitted, _yes(reply.sack_permitted),
                     f"{seen} {'carries' if reply.sack_permitted else 'lacks'} "
                     "SACK-permitted; our SYN offered it", refs=refs))
    has_ts = reply.tsval is not None
    out.append(_prop(P.TIMESTAMPS, has_ts, _yes(has_ts),
                     f"{seen} {'carries' if has_ts else 'lacks'} the timestamp option; "
                     "our SYN offered it", refs=refs))
    order = reply.options.rstrip("E") or ""
    out.append(_prop(P.OPTION_ORDER, order, order or "none",
                     f"{seen}: the options in the order sent (M MSS, S SACK-permitted, "
                     "T timestamps, N NOP, W window scale)", refs=refs))
    ttls = sorted({p.tcp.ttl for p in answered if p.tcp is not None})
    start, hops = initial_ttl(max(ttls))
    out.append(_prop(
        P.INITIAL_TTL, start, str(start),
        f"the SYN/ACK arrived with TTL {'/'.join(map(str, ttls))}: {hops} hop"
        f"{'' if hops == 1 else 's'} below {start}",
        basis=Basis.INFERRED, refs=refs,
        rests_on="the peer starts from one of the common initial TTLs (32, 64, 128, 255) "
        "and the path has fewer hops than the gap to the next one down"))
    return out, ladder


def _ecn_property(run: SynRun | None, skipped: str | None) -> tuple[Property, Ladder | None]:
    answered = _answered(run)
    if run is None or not answered:
        why = skipped or "no SYN/ACK to the ECN-setup SYN"
        return _unknown(P.ECN, why), None
    first = answered[0]
    ladder = _syn_ladder(ProbeKind.ECN, "ECN-setup SYN (ECE, CWR) → SYN/ACK", first)
    refs = [_ref(ProbeKind.ECN, range(len(ladder.records[:2])))]
    reply = first.tcp
    assert reply is not None
    ece, cwr = "E" in reply.flags, "W" in reply.flags
    if ece and not cwr:
        return _prop(P.ECN, True, "yes", f"the SYN/ACK to our ECE+CWR SYN has ECE and no CWR "
                     f"(flags {reply.flags}): an ECN-setup SYN/ACK (RFC 3168 §6.1.1)",
                     refs=refs), ladder
    if ece and cwr:
        return _unknown(P.ECN, f"the SYN/ACK echoes ECE and CWR (flags {reply.flags}): not an "
                        "RFC 3168 ECN-setup SYN/ACK (a reflector, or AccECN, RFC 9768)",
                        refs=refs), ladder
    return _prop(P.ECN, False, "no", f"the SYN/ACK to our ECE+CWR SYN has no ECE (flags "
                 f"{reply.flags}): the peer declines ECN", refs=refs), ladder


# --- retransmission schedules -----------------------------------------------------------


def _schedule(
    names: tuple[PropertyName, PropertyName, PropertyName],
    intervals_s: Sequence[float],
    what: str,
    gave_up: bool,
    how_ended: str,
    refs: list[SegmentRef],
) -> list[Property]:
    """RTO, backoff and retry count from the gaps between a segment's copies."""
    rto_name, backoff_name, retries_name = names
    out: list[Property] = []
    gaps = ", ".join(f"{g:.3f}" for g in intervals_s)
    if intervals_s:
        out.append(_prop(rto_name, round(intervals_s[0], 3), _seconds(intervals_s[0]),
                         f"the first {what} to its first retransmission: "
                         f"{intervals_s[0]:.3f} s", refs=refs, unit="s"))
    else:
        out.append(_unknown(rto_name, f"no retransmission of the {what} ({how_ended})",
                            refs=refs))
    ratios = _ratios(intervals_s)
    if ratios:
        backoff = round(statistics.median(ratios), 2)
        out.append(_prop(backoff_name, backoff, f"x{backoff:g}",
                         f"the median ratio of successive gaps between copies ({gaps} s)",
                         refs=refs))
    else:
        out.append(_unknown(backoff_name, f"fewer than two gaps between copies ({gaps or 'none'}"
                            f"{' s' if gaps else ''}): no ratio", refs=refs))
    count = len(intervals_s)
    if gave_up:
        out.append(_prop(retries_name, count, str(count),
                         f"{count} retransmission{'' if count == 1 else 's'} of the {what}, "
                         f"then {how_ended}", refs=refs))
    else:
        out.append(_unknown(retries_name, f"{count} retransmission{'' if count == 1 else 's'} "
                            f"of the {what} seen, then {how_ended}: it had not given up",
                            display=f"≥ {count}", refs=refs))
    return out


def _halfopen_properties(result: HalfOpenResult | None, skipped: str | None
                         ) -> tuple[list[Property], list[Ladder]]:
    names = (P.INITIAL_RTO_S, P.SYNACK_BACKOFF, P.SYNACK_RETRIES, P.SYNACK_GIVE_UP_S,
             P.SYN_COOKIES)
    if result is None:
        return [_not_measured(name, skipped or "the half-open probe did not run")
                for name in names], []
    ladders = [Ladder(ProbeKind.HALFOPEN, "Half-open: a SYN, no final ACK; the SYN/ACK "
                      "retransmissions", result.source_port, result.segments)]
    check = result.cookie_check
    if check is not None and check.segments:
        ladders.append(Ladder(ProbeKind.COOKIE_CHECK, "SYN-cookie check: a second SYN",
                              check.source_port, check.segments))
    arrivals = [a for a in result.syn_acks if not a.duplicate]
    synack_indices = _indices(result.segments, lambda r: r.direction is Direction.RECEIVED
                              and r.flags.startswith("S") and "." in r.flags)
    refs = [_ref(ProbeKind.HALFOPEN, synack_indices)]
    out: list[Property] = []
    cookies = result.cookies.verdict
    cookie_refs = list(refs)
    if check is not None and check.segments:
        cookie_refs.append(_ref(ProbeKind.COOKIE_CHECK, range(len(check.segments))))
    cookie_evidence = "; ".join(result.cookies.reasons) or "no clue"
    if not arrivals:
        why = f"no SYN/ACK ({result.reason.value})"
        out += [_unknown(name, why) for name in names[:4]]
    elif cookies is CookieAnswer.YES:
        why = ("the SYN/ACK was a SYN cookie: the peer kept no request to retransmit, so its "
               "retransmission schedule cannot be seen")
        out += [_unknown(name, why, refs=refs) for name in names[:4]]
    else:
        times = [a.since_first_us / 1e6 for a in arrivals]
        intervals = [b - a for a, b in itertools.pairwise(times)]
        gave_up = result.ended_by in (EndedBy.SILENCE, EndedBy.RST)
        how = {
            EndedBy.SILENCE: "silence when the next was due "
            f"(watched {result.ended_after_s or 0:.1f} s)",
            EndedBy.RST: "a RST",
            EndedBy.MAX_WAIT: f"the watch ended at {result.ended_after_s or 0:.1f} s",
            EndedBy.INTERRUPTED: "the run was interrupted",
        }.get(result.ended_by, result.ended_by.value)
        out += _schedule(names[:3], intervals, "SYN/ACK", gave_up, how, refs)
        if gave_up:
            last = times[-1]
            out.append(_prop(P.SYNACK_GIVE_UP_S, round(last, 3), _seconds(last),
                             f"the last SYN/ACK came {last:.3f} s after the first; then "
                             f"{how}", refs=refs, unit="s"))
        else:
            out.append(_unknown(P.SYNACK_GIVE_UP_S, f"still retransmitting: {how}",
                                display=f"> {times[-1]:.3g} s", refs=refs))
        if result.caveat:
            out[-1] = _with_note(out[-1], result.caveat)
    if cookies is CookieAnswer.YES:
        out.append(_prop(P.SYN_COOKIES, CookieMode.ALWAYS.value, "always",
                         cookie_evidence, refs=cookie_refs))
    elif cookies is CookieAnswer.NO:
        out.append(_prop(P.SYN_COOKIES, CookieMode.NOT_FOR_A_LONE_SYN.value,
                         "not for a lone SYN", cookie_evidence, refs=cookie_refs))
    else:
        out.append(_unknown(P.SYN_COOKIES, cookie_evidence, refs=cookie_refs))
    return out, ladders


def _with_note(prop: Property, note: str) -> Property:
    return Property(name=prop.name, value=prop.value, display=prop.display, basis=prop.basis,
                    evidence=f"{prop.evidence} ({note})", segments=prop.segments,
                    unit=prop.unit, error=prop.error, rests_on=prop.rests_on,
                    meaning=prop.meaning)


# --- the close and the FIN's retransmissions --------------------------------------------


def _fin_indices(records: Sequence[SegmentRecord]) -> tuple[list[int], list[int], list[int]]:
    ours = _indices(records, lambda r: r.direction is Direction.SENT and "F" in r.flags)
    peer_fins = _indices(records, lambda r: r.direction is Direction.RECEIVED and "F" in r.flags)
    peer_acks = _indices(records, lambda r: r.direction is Direction.RECEIVED
                         and r.flags == "." and r.length == 0)
    return ours, peer_acks, peer_fins


def _close_properties(result: CloseResult | None, skipped: str | None
                      ) -> tuple[list[Property], Ladder | None]:
    if result is None:
        why = skipped or "the close probe did not run"
        return [_not_measured(P.CLOSE_KIND, why), _not_measured(P.CLOSE_FIN_DELAY_MS, why)], None
    ladder = Ladder(ProbeKind.CLOSE, "Close: we send the first FIN", result.source_port,
                    result.segments)
    ours, acks, fins = _fin_indices(result.segments)
    after_our_fin = sorted(i for i in acks + fins if ours and i > ours[0])
    refs = [_ref(ProbeKind.CLOSE, ours[:1] + after_our_fin[:2])]
    kind = result.close_kind
    told = {
        CloseKind.FOUR_WAY: "the peer ACKed our FIN, then sent its own FIN in a later segment",
        CloseKind.THREE_WAY: "the peer's FIN carried the ACK of ours (ACK and FIN merged)",
        CloseKind.SIMULTANEOUS: "the peer's FIN came before it had ACKed ours",
        CloseKind.PEER_FIRST: "the peer's FIN came before ours",
        CloseKind.RESET: "the peer answered our FIN with a RST",
    }
    out: list[Property] = []
    if kind in told:
        out.append(_prop(P.CLOSE_KIND, kind.value, kind.value, told[kind], refs=refs))
    else:
        out.append(_unknown(P.CLOSE_KIND, f"the close did not complete ({kind.value})",
                            refs=refs))
    delay = result.our_fin_to_peer_fin_us
    clock = result.clock.value if result.clock else "user"
    if delay is not None and kind in told:
        out.append(_prop(P.CLOSE_FIN_DELAY_MS, round(delay / 1000, 3), f"{delay / 1000:.3f} ms",
                         f"from our FIN to the peer's FIN ({clock} clock)", refs=refs,
                         unit="ms"))
    else:
        out.append(_unknown(P.CLOSE_FIN_DELAY_MS, "no FIN of the peer's after ours", refs=refs))
    return out, ladder


def _fin_properties(result: CloseResult | None, skipped: str | None
                    ) -> tuple[list[Property], Ladder | None]:
    names = (P.FIN_RTO_S, P.FIN_BACKOFF, P.FIN_RETRIES, P.FIN_GIVE_UP)
    if result is None:
        return [_not_measured(n, skipped or "the FIN watch did not run") for n in names], None
    ladder = Ladder(ProbeKind.FIN_RETRANSMIT, "FIN retransmissions: we never ACK the peer's FIN",
                    result.source_port, result.segments)
    _ours, _acks, fins = _fin_indices(result.segments)
    rsts = _indices(result.segments, lambda r: r.direction is Direction.RECEIVED and "R" in r.flags)
    refs = [_ref(ProbeKind.FIN_RETRANSMIT, fins + rsts)]
    if not fins:
        why = f"the peer sent no FIN ({result.close_kind.value})"
        return [_unknown(n, why, refs=refs) for n in names], ladder
    end = result.peer_fin_retransmissions_end
    intervals = [r.interval_us / 1e6 for r in result.peer_fin_retransmissions]
    gave_up = end in (FinRetransmissionsEnd.RESET, FinRetransmissionsEnd.SILENCE)
    how = {
        FinRetransmissionsEnd.RESET: "a RST",
        FinRetransmissionsEnd.SILENCE: "silence (no FIN for 2.5 times the last gap + 1 s)",
        FinRetransmissionsEnd.MAX_WAIT: "the watch ended",
        FinRetransmissionsEnd.INTERRUPTED: "the run was interrupted",
    }.get(end, "no end seen") if end is not None else "no end seen"
    out = _schedule(names[:3], intervals, "FIN", gave_up, how, refs)
    if len(intervals) >= 3 and intervals[1] < 0.95 * intervals[0]:
        # A gap shorter than the one before it is no RTO backoff: the first copy was a tail
        # loss probe (RFC 8985; Linux sends the FIN again one probe timeout after it, about
        # 200 ms on a short path), so the RTO schedule starts at the second copy.
        tlp = intervals[0]
        rto, backoff, _retries = _schedule(names[:3], intervals[1:], "FIN", gave_up, how, refs)
        note = (f"the first copy came {tlp:.3f} s after the FIN, sooner than the RTO schedule "
                "that followed: a tail loss probe (RFC 8985), left out of the RTO and backoff")
        out[0], out[1] = _with_note(rto, note), _with_note(backoff, note)
        out[2] = _with_note(out[2], "counting the tail loss probe")
    if end is FinRetransmissionsEnd.RESET:
        out.append(_prop(P.FIN_GIVE_UP, FinGiveUp.RST.value, "RST",
                         f"after {len(intervals)} retransmissions the peer sent a RST",
                         refs=refs))
    elif end is FinRetransmissionsEnd.SILENCE:
        out.append(_prop(P.FIN_GIVE_UP, FinGiveUp.SILENCE.value, "silence",
                         f"after {len(intervals)} retransmissions its FINs stopped, no RST",
                         refs=refs))
    else:
        out.append(_unknown(P.FIN_GIVE_UP, f"still retransmitting: {how}", refs=refs))
    return out, ladder


# --- TIME-WAIT --------------------------------------------------------------------------


_TW_KINDS = {
    Role.DURATION: (ProbeKind.TIMEWAIT, "TIME-WAIT: the peer closes first; SYNs below the old "
                    "sequence space until it ends"),
    Role.ABOVE_ISN: (ProbeKind.TIMEWAIT_ABOVE_ISN, "TIME-WAIT: a SYN above the old sequence "
                     "space"),
    Role.NEWER_TSVAL: (ProbeKind.TIMEWAIT_NEWER_TSVAL, "TIME-WAIT: a SYN with a newer TSval"),
    Role.ASSASSINATE: (ProbeKind.TIMEWAIT_RST, "TIME-WAIT: a RST at RCV.NXT + 1, then one at "
                       "RCV.NXT (RFC 1337)"),
}


def _tw_ladder(connection: TimeWaitConnection, kind: ProbeKind, title: str) -> Ladder:
    return Ladder(kind, title, connection.source_port,
                  connection.close.segments + connection.segments, connection.notes)


def _reuse_refs(connection: TimeWaitConnection | None, kind: ProbeKind,
                reuse: Iterable[ReuseKind]) -> list[SegmentRef]:
    """The probes of these kinds in the ladder, and the segment after each (its answer)."""
    if connection is None:
        return []
    wanted = {p.seq for p in connection.probes if p.kind in set(reuse)}
    records = connection.close.segments + connection.segments
    start = len(connection.close.segments)
    hits: list[int] = []
    for i in range(start, len(records)):
        record = records[i]
        if record.direction is Direction.SENT and record.seq in wanted:
            hits.append(i)
            if i + 1 < len(records) and records[i + 1].direction is Direction.RECEIVED:
                hits.append(i + 1)
    return [_ref(kind, hits)] if hits else []


def _timewait_properties(result: TimeWaitResult | None, refin: TimeWaitResult | None,
                         quick: bool, skipped: str | None
                         ) -> tuple[list[Property], list[Ladder]]:
    names = (P.TIME_WAIT, P.TIME_WAIT_S, P.TIME_WAIT_REOPEN_ABOVE_ISN,
             P.TIME_WAIT_REOPEN_NEWER_TSVAL, P.RFC1337)
    out: list[Property] = []
    ladders: list[Ladder] = []
    if result is None:
        out += [_not_measured(n, skipped or "the TIME-WAIT probe did not run") for n in names]
    else:
        for connection in result.connections:
            kind, title = _TW_KINDS[connection.role]
            ladders.append(_tw_ladder(connection, kind, title))
        duration = result.connection(Role.DURATION)
        below = _reuse_refs(duration, ProbeKind.TIMEWAIT, [ReuseKind.SYN_BELOW])
        if result.holds_time_wait is None:
            out.append(_unknown(P.TIME_WAIT, result.holds_evidence, refs=below))
        else:
            out.append(_prop(P.TIME_WAIT, result.holds_time_wait, _yes(result.holds_time_wait),
                             result.holds_evidence, refs=below))
        out.append(_duration_property(result, quick, below))
        above = result.connection(Role.ABOVE_ISN)
        out.append(_flag(P.TIME_WAIT_REOPEN_ABOVE_ISN, result.above_isn_accepted,
                         "a SYN above the old sequence space drew a SYN/ACK: it reopens the "
                         "4-tuple (RFC 1122 §4.2.2.13)",
                         "a SYN above the old sequence space drew the TIME-WAIT's ACK: it does "
                         "not reopen",
                         _reuse_refs(above, ProbeKind.TIMEWAIT_ABOVE_ISN,
                                     [ReuseKind.SYN_ABOVE]), result.holds_time_wait))
        newer = result.connection(Role.NEWER_TSVAL)
        if newer is not None and newer.timestamps is False:
            out.append(_unknown(P.TIME_WAIT_REOPEN_NEWER_TSVAL, "the connection negotiated no "
                                "timestamps: there is no TSval to be newer (RFC 6191)"))
        else:
            out.append(_flag(P.TIME_WAIT_REOPEN_NEWER_TSVAL, result.newer_tsval_accepted,
                             "a SYN below the old space but with a newer TSval drew a SYN/ACK "
                             "(RFC 6191)",
                             "a SYN with a newer TSval drew the TIME-WAIT's ACK: it does not "
                             "reopen on timestamps",
                             _reuse_refs(newer, ProbeKind.TIMEWAIT_NEWER_TSVAL,
                                         [ReuseKind.SYN_NEWER_TSVAL]), result.holds_time_wait))
        rst = result.connection(Role.ASSASSINATE)
        refs = _reuse_refs(rst, ProbeKind.TIMEWAIT_RST, [ReuseKind.RST_EXACT,
                                                         ReuseKind.RST_OFFSET,
                                                         ReuseKind.SYN_BELOW])
        protected = None if result.assassinated is None else not result.assassinated
        out.append(_flag(P.RFC1337, protected,
                         "after a RST at exactly RCV.NXT the next SYN still drew the "
                         "TIME-WAIT's ACK: the RST was ignored (RFC 1337 protection)",
                         "after a RST at exactly RCV.NXT the next SYN drew a new connection's "
                         "answer: the RST ended the TIME-WAIT (assassination, RFC 1337 "
                         "hazard)", refs, result.holds_time_wait))
    out.append(_refin_property(refin, skipped))
    refin_connection = None if refin is None else refin.connection(Role.DURATION)
    if refin_connection is not None:
        ladders.append(_tw_ladder(refin_connection, ProbeKind.TIMEWAIT_REFIN,
                                  "TIME-WAIT: our FIN again, as if its ACK were lost"))
    # In the report's order.
    order = {name: i for i, name in enumerate(PropertyName)}
    out.sort(key=lambda p: order[p.name])
    return out, ladders


def _flag(name: PropertyName, value: bool | None, if_true: str, if_false: str,
          refs: list[SegmentRef], holds: bool | None) -> Property:
    if value is None:
        why = ("no TIME-WAIT to test" if holds is False
               else "the answers do not decide (lost, or the TIME-WAIT was gone already)")
        return _unknown(name, why, refs=refs)
    return _prop(name, value, _yes(value), if_true if value else if_false, refs=refs)


def _duration_property(result: TimeWaitResult, quick: bool,
                       refs: list[SegmentRef]) -> Property:
    end = result.duration_end
    if end is DurationEnd.NOT_MEASURED:
        return _not_measured(P.TIME_WAIT_S, "--quick: timing a TIME-WAIT takes 2 MSL (a minute "
                             "or more)" if quick else "the duration was not measured")
    if end is DurationEnd.MEASURED and result.duration_s is not None:
        low, high = result.duration_low_s, result.duration_high_s
        return _prop(P.TIME_WAIT_S, result.duration_s, f"{result.duration_s:g} s "
                     f"± {result.duration_error_s or 0:g}",
                     f"the TIME-WAIT's ACK answered a below-ISN SYN at +{low:g} s, a new "
                     f"connection's answer came at +{high:g} s (times from the peer's ACK of "
                     f"our FIN; probes every {result.step_s:g} s)", refs=refs, unit="s",
                     error=result.duration_error_s)
    if end is DurationEnd.NO_TIME_WAIT:
        return _prop(P.TIME_WAIT_S, 0, "none", result.holds_evidence, refs=refs, unit="s")
    if end is DurationEnd.STILL_HELD:
        return _unknown(P.TIME_WAIT_S, f"still held at +{result.max_s:g} s, when the probes "
                        "stopped", display=f"≥ {result.max_s:g} s", refs=refs)
    return _unknown(P.TIME_WAIT_S, "; ".join(result.notes) or "the answers do not tell when it "
                    "ended", refs=refs)


def _refin_property(refin: TimeWaitResult | None, skipped: str | None) -> Property:
    if refin is None:
        return _not_measured(P.TIME_WAIT_REFIN, skipped or "the repeated-FIN probe did not run")
    connection = refin.connection(Role.DURATION)
    refs = _reuse_refs(connection, ProbeKind.TIMEWAIT_REFIN, [ReuseKind.FIN_AGAIN])
    if refin.refin_acked is None:
        why = ("no TIME-WAIT to test (" + refin.holds_evidence + ")" if refin.holds_time_wait
               is not True else "; ".join(refin.notes) or "the FIN drew no decisive answer")
        return _unknown(P.TIME_WAIT_REFIN, why, refs=refs)
    if refin.refin_acked:
        return _prop(P.TIME_WAIT_REFIN, True, "yes", f"our FIN again, {refin.refin_at_s:g} s "
                     "into its TIME-WAIT, drew an ACK of the old connection (RFC 9293 "
                     "§3.10.7.4: re-ACK, restart 2 MSL)", refs=refs)
    return _prop(P.TIME_WAIT_REFIN, False, "no", "our FIN again drew a new connection's answer "
                 "(SYN/ACK or RST), not the TIME-WAIT's ACK", refs=refs)


# --- RFC 5961 ---------------------------------------------------------------------------


_CHALLENGE_KINDS = {
    ChallengeRole.RST_IN_WINDOW: (ProbeKind.CHALLENGE, P.CHALLENGE_RST,
                                  "RFC 5961: a RST in the window, not at RCV.NXT"),
    ChallengeRole.RST_OUT_OF_WINDOW: (ProbeKind.CHALLENGE_RST_OUT, P.RST_OUT_OF_WINDOW,
                                      "RFC 5961: a RST outside the window"),
    ChallengeRole.SYN: (ProbeKind.CHALLENGE_SYN, P.CHALLENGE_SYN,
                        "RFC 5961: a SYN on an established connection"),
    ChallengeRole.RATE: (ProbeKind.CHALLENGE_RATE, P.CHALLENGE_ACK_INTERVAL_S,
                         "RFC 5961 §7: SYNs every 50 ms; how often challenge ACKs come"),
}


def _challenge_properties(result: ChallengeResult | None, skipped: str | None
                          ) -> tuple[list[Property], list[Ladder]]:
    names = (P.CHALLENGE_RST, P.RST_OUT_OF_WINDOW, P.CHALLENGE_SYN, P.CHALLENGE_ACK_INTERVAL_S)
    if result is None:
        return [_not_measured(n, skipped or "the challenge probe did not run")
                for n in names], []
    out: list[Property] = []
    ladders: list[Ladder] = []
    for role, (kind, name, title) in _CHALLENGE_KINDS.items():
        connection = result.connection(role)
        if connection is None:
            out.append(_not_measured(name, f"the {role.value} connection did not run"))
            continue
        ladders.append(Ladder(kind, title, connection.source_port, connection.segments,
                              connection.notes))
        refs = [_ref(kind, sorted(connection.probe_indices + connection.answer_indices))]
        if role is ChallengeRole.RATE:
            out.append(_rate_property(result, connection, refs))
        elif connection.answer is None:
            out.append(_unknown(name, connection.evidence, refs=refs))
        else:
            out.append(_prop(name, connection.answer.value, connection.answer.value,
                             connection.evidence, refs=refs))
    return out, ladders


def _rate_property(result: ChallengeResult, connection: ChallengeConnection,
                   refs: list[SegmentRef]) -> Property:
    name = P.CHALLENGE_ACK_INTERVAL_S
    if result.min_interval_s is None:
        return _unknown(name, f"{result.rate_answered} challenge ACK(s) to {result.rate_sent} "
                        f"SYNs: no interval to measure ({connection.evidence})", refs=refs)
    interval = result.min_interval_s
    return _prop(name, round(interval, 3), _seconds(interval),
                 f"{result.rate_answered} challenge ACKs to {result.rate_sent} SYNs sent every "
                 f"50 ms; the shortest gap between two was {interval:.3f} s", refs=refs,
                 unit="s", error=0.05)


# --- all of it --------------------------------------------------------------------------


def infer(results: ProbeResults, *, quick: bool) -> tuple[tuple[Property, ...],
                                                          tuple[Ladder, ...]]:
    """Every property (in ``PropertyName`` order) and every ladder, from the probes' results.

    ``meaning`` is left empty: ``prober.core.stack_defaults.meaning`` fills it.
    """
    skip = results.skipped.get
    properties: list[Property] = []
    ladders: list[Ladder] = []
    syn_props, syn_ladder = _syn_properties(results.syn, skip(ProbeKind.SYN))
    properties += syn_props
    ecn, ecn_ladder = _ecn_property(results.ecn, skip(ProbeKind.ECN))
    properties.append(ecn)
    ladders += [ladder for ladder in (syn_ladder, ecn_ladder) if ladder is not None]
    half, half_ladders = _halfopen_properties(results.halfopen, skip(ProbeKind.HALFOPEN))
    properties += half
    ladders += half_ladders
    close, close_ladder = _close_properties(results.close, skip(ProbeKind.CLOSE))
    fin, fin_ladder = _fin_properties(results.fin, skip(ProbeKind.FIN_RETRANSMIT))
    properties += close + fin
    ladders += [ladder for ladder in (close_ladder, fin_ladder) if ladder is not None]
    tw, tw_ladders = _timewait_properties(results.timewait, results.refin, quick,
                                          skip(ProbeKind.TIMEWAIT))
    properties += tw
    ladders += tw_ladders
    challenge, challenge_ladders = _challenge_properties(results.challenge,
                                                         skip(ProbeKind.CHALLENGE))
    properties += challenge
    ladders += challenge_ladders
    order = {name: i for i, name in enumerate(PropertyName)}
    properties.sort(key=lambda p: order[p.name])
    assert [p.name for p in properties] == list(PropertyName), "a property is missing"
    return tuple(properties), tuple(ladders)
