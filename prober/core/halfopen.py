"""Half-open connections: how long a peer keeps a request we never complete, and SYN cookies.

Two sans-IO probes in the style of ``prober.core.syn.SynProbe`` (start/receive/handle_timer/
next_deadline/segments_to_send/sent/send_kernel_stamp/send_failed/done/result), driven by
the engine. Both validate answers with an embedded ``SynProbe`` (zmap's rules: a SYN/ACK acks
ISN+1, a RST/ACK acks ISN or ISN+1, an ICMP error quotes our 4-tuple and ISN), so the first
answer is classified exactly as ``prober syn`` classifies it.

The theory, for a Linux peer (net/ipv4/inet_connection_sock.c, tcp_minisocks.c):

- A listener that answers a SYN keeps a *request* (SYN-RECEIVED) and retransmits its SYN/ACK
  until the handshake's final ACK comes: after 1 s (TCP_TIMEOUT_INIT), then at doubling
  intervals (1, 2, 4, 8, 16 s, capped at TCP_RTO_MAX = 120 s), ``tcp_synack_retries`` times
  (default 5: retransmissions at 1, 3, 7, 15 and 31 s); the request is dropped silently at the
  next expiry (63 s). Every retransmission repeats the first SYN/ACK's sequence number.
- ``HalfOpenProbe`` sends one SYN and never the ACK (the engine drops the local kernel's
  RSTs, which would otherwise free the request at once: the classic half-open scan) and
  records every SYN/ACK. After each it waits ``1.5 * expected + 0.5 s`` for the next, where
  ``expected`` is 1 s after the first SYN/ACK and twice the last interval after later ones;
  nothing by then means the peer gave up. Then it sends a RST with seq = ISN+1 (in the
  request's window: ``tcp_check_req`` drops the request) unless told to leave it open.
- With SYN cookies (RFC 4987; Linux: always with tcp_syncookies=2, on SYN-queue overflow
  with 1) the peer keeps no request, so it never retransmits: the first piece of evidence.
  The second (net/ipv4/syncookies.c, ``cookie_init_timestamp``): the cookie SYN/ACK's TSval
  carries the SYN's options in its low 6 bits, ``(wscale_ok ? snd_wscale : 0xF) | sack << 4 |
  ecn << 5``, under the peer's ms clock rounded down to a multiple of 64, plus a random
  offset (tcp_timestamps=1; observed here to differ from one connection to the next, so
  both SYNs share one 4-tuple). The offset hides one TSval, but not the difference of two.
- ``CookieCheckProbe`` sends SYN1 (window scale 7, SACK: encoding 23) and, on its SYN/ACK,
  SYN2 on the same 4-tuple with the same ISN but window scale 2 and no SACK (encoding 2).
  A peer that kept a request takes SYN2 for a retransmitted SYN and retransmits its SYN/ACK
  (``tcp_check_req``: same TSecr as before, the options SYN1 asked for, TSval advanced by
  its clock); a cookie peer computes a fresh cookie for SYN2 (TSecr = SYN2's TSval, SYN2's
  options, TSval encoding 2). With TSval1, TSval2 the two SYN/ACKs' TSvals:

      observed = (TSval1 - TSval2) mod 64
      cookies:     observed == (encoding1 - encoding2) mod 64        (= 21 by default)
      kept request: TSval2 = TSval1 + elapsed_ms (+-1 for ms ticks and path jitter), so
                   observed == (-round(elapsed_ms)) mod 64 within ``tolerance``

  where elapsed_ms is the time between the two SYN/ACKs' receive stamps. When both fit
  (elapsed_ms near 43 ms + k*64 ms with the default encodings) the check is inconclusive;
  other encodings (constructor parameters) move the cookie prediction.

``combine_cookie_evidence`` weighs the pieces: whether the peer retransmitted (from the
half-open probe), the TSval test, and which SYN the second SYN/ACK answered (TSecr and
options) into a yes/no/unknown verdict with its reasons.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from typing import Any, Final

from prober.core.packets import TcpTemplate
from prober.core.parse import parse_packet
from prober.core.states import TcpEvent, TcpState, mirrored, transition
from prober.core.syn import IcmpReply, PortState, Reason, SynProbe, TcpReply
from prober.core.timing import Clock, Rtt, Stamp
from prober.core.trace import SegmentLog, SegmentRecord
from prober.core.wire import Packet, TcpFlags, TcpSegment

__all__ = [
    "DEFAULT_FIRST_SYN",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_SECOND_SYN",
    "LINUX_RTO_MAX",
    "LINUX_SYNACK_FIRST_RTO",
    "CookieAnswer",
    "CookieCheckProbe",
    "CookieClue",
    "CookieEvidence",
    "CookieOptions",
    "CookieVerdict",
    "EndedBy",
    "HalfOpenProbe",
    "HalfOpenResult",
    "SynAckArrival",
    "SynCookieVerdict",
    "combine_cookie_evidence",
    "cookie_option_encoding",
    "cookie_timestamp",
    "judge_timestamps",
    "mod64_distance",
    "tsval_at",
]

_MASK: Final = 0xFFFFFFFF

LINUX_SYNACK_FIRST_RTO: Final = 1.0  # TCP_TIMEOUT_INIT: the first SYN/ACK retransmission
LINUX_RTO_MAX: Final = 120.0  # TCP_RTO_MAX: the longest interval between retransmissions
SILENCE_FACTOR: Final = 1.5  # wait this many expected intervals for the next SYN/ACK ...
SILENCE_SLACK: Final = 0.5  # ... plus this many seconds
# Linux's default (5 retries: last SYN/ACK at 31 s) is judged silent at 79.5 s, within this.
DEFAULT_MAX_WAIT: Final = 90.0

# syncookies.c: the low TS_BITS of a cookie SYN/ACK's TSval encode the SYN's options.
TS_BITS: Final = 6
TS_MODULUS: Final = 1 << TS_BITS
TS_OPT_WSCALE_MASK: Final = 0xF  # "no window scale option"
TS_OPT_SACK: Final = 1 << 4
TS_OPT_ECN: Final = 1 << 5
MAX_WINDOW_SCALE: Final = 14  # RFC 7323; Linux clamps larger shifts to 14


def tsval_at(now: float) -> int:
    """Our TSval at monotonic time ``now``: a millisecond clock, as Linux's."""
    return int(now * 1000) & _MASK


def cookie_option_encoding(
    window_scale: int | None, sack_permitted: bool, ecn: bool = False
) -> int:
    """The 6 bits a Linux cookie SYN/ACK's TSval carries for a SYN with these options."""
    options = TS_OPT_WSCALE_MASK if window_scale is None else min(window_scale, MAX_WINDOW_SCALE)
    if sack_permitted:
        options |= TS_OPT_SACK
    if ecn:
        options |= TS_OPT_ECN
    return options


def cookie_timestamp(ts_now: int, encoding: int) -> int:
    """``cookie_init_timestamp``: the cookie TSval before the peer's offset is added.

    ``ts_now`` is the peer's millisecond clock. The result never exceeds ``ts_now`` (later
    TSvals of the connection come from the plain clock) and ends in ``encoding``.
    """
    ts = (ts_now >> TS_BITS << TS_BITS) | encoding
    if ts > ts_now:
        ts -= TS_MODULUS
    return ts & _MASK


def mod64_distance(a: int, b: int) -> int:
    """How far apart two residues modulo 64 are, the short way round (0 to 32)."""
    d = (a - b) % TS_MODULUS
    return min(d, TS_MODULUS - d)


class EndedBy(StrEnum):
    """Why a half-open probe stopped watching."""

    SILENCE = "silence"  # no SYN/ACK when the next was due: the peer gave up
    RST = "rst"  # the peer reset the request
    MAX_WAIT = "max-wait"  # our own limit came first
    INTERRUPTED = "interrupted"
    NO_SYN_ACK = "no-syn-ack"  # RST, ICMP error, silence or a send failure before any SYN/ACK


class CookieVerdict(StrEnum):
    """What the cookie check's two SYN/ACKs show (see ``judge_timestamps``)."""

    COOKIES = "cookies"
    NO_COOKIES = "no cookies"
    INCONCLUSIVE = "inconclusive"  # both explanations fit: retry with other encodings
    UNEXPLAINED = "unexplained"  # neither fits: not Linux, or a TSval clock in other units
    NO_TIMESTAMPS = "no timestamps"  # a SYN/ACK without TS option: only retransmissions tell
    NO_ANSWER = "no answer"  # the first SYN got no SYN/ACK (RST, ICMP error or silence)
    NO_SECOND_ANSWER = "no second answer"
    INTERRUPTED = "interrupted"
    SEND_FAILED = "send failed"


class CookieAnswer(StrEnum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CookieOptions:
    """The options of one cookie-check SYN: window scale (None: no option) and SACK."""

    window_scale: int | None
    sack_permitted: bool

    def __post_init__(self) -> None:
        if self.window_scale is not None and not 0 <= self.window_scale <= MAX_WINDOW_SCALE:
            raise ValueError(f"window scale {self.window_scale}: must be 0 to {MAX_WINDOW_SCALE}")

    @property
    def encoding(self) -> int:
        return cookie_option_encoding(self.window_scale, self.sack_permitted)


DEFAULT_FIRST_SYN: Final = CookieOptions(7, True)  # encoding 7 | 16 = 23
DEFAULT_SECOND_SYN: Final = CookieOptions(2, False)  # encoding 2: expected difference 21


def judge_timestamps(
    tsval1: int,
    tsval2: int,
    encoding1: int,
    encoding2: int,
    elapsed_ms: float,
    tolerance: int = 1,
) -> tuple[CookieVerdict, str]:
    """The verdict on two SYN/ACK TSvals and one sentence explaining it.

    Args:
        tsval1, tsval2: the TSvals of the SYN/ACKs answering SYN1 and SYN2.
        encoding1, encoding2: ``cookie_option_encoding`` of SYN1's and SYN2's options.
        elapsed_ms: receive time of SYN/ACK2 minus that of SYN/ACK1, in ms.
        tolerance: how far (mod 64) the elapsed-time prediction may miss and still fit.

    Returns:
        COOKIES when only the encodings explain ``(tsval1 - tsval2) mod 64``, NO_COOKIES when
        only the elapsed time does (``(-round(elapsed_ms)) mod 64``), INCONCLUSIVE when both,
        UNEXPLAINED when neither.
    """
    observed = (tsval1 - tsval2) % TS_MODULUS
    expected = (encoding1 - encoding2) % TS_MODULUS
    predicted = (-round(elapsed_ms)) % TS_MODULUS
    cookie_fits = observed == expected
    clock_fits = mod64_distance(observed, predicted) <= tolerance
    said = f"TSval1 - TSval2 = {observed} (mod 64)"
    encodings = f"the option encodings ({encoding1} - {encoding2} = {expected})"
    clock = f"the {elapsed_ms:.1f} ms between the SYN/ACKs ({predicted})"
    if cookie_fits and not clock_fits:
        return CookieVerdict.COOKIES, (
            f"{said} matches {encodings}, not {clock}: the peer answered with Linux SYN cookies."
        )
    if clock_fits and not cookie_fits:
        return CookieVerdict.NO_COOKIES, (
            f"{said} follows {clock}, not {encodings}: the peer's clock made both TSvals, "
            "as for a request it kept."
        )
    if cookie_fits:
        return CookieVerdict.INCONCLUSIVE, (
            f"{said} fits both {encodings} and {clock}: retry with other encodings."
        )
    return CookieVerdict.UNEXPLAINED, (
        f"{said} fits neither {encodings} nor {clock}: not Linux's cookie encoding, "
        "or a TSval clock that does not tick in milliseconds."
    )


# -- results ------------------------------------------------------------------------------


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
    retransmission: bool  # repeats the current peer ISN (and is not a duplicate)
    duplicate: bool = False  # same seq and TSval as the one before: a copy made on the path
    new_isn: bool = False  # a seq other than the peer ISN so far: a new request

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
            "new_isn": self.new_isn,
        }


@dataclass(frozen=True, slots=True)
class CookieClue:
    """One piece of SYN-cookie evidence: what it points to, how strongly, and why."""

    source: str  # "retransmissions", "timestamps" or "answer"
    points_to: CookieAnswer  # YES or NO
    strong: bool  # strong clues decide; weak ones only when there is no strong one
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "points_to": self.points_to.value,
            "strong": self.strong,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class SynCookieVerdict:
    """Does the peer answer with SYN cookies? ``verdict`` is yes, no or unknown.

    ``reasons`` lists every clue's reason and what could not be judged; ``clues`` the clues.
    """

    verdict: CookieAnswer
    reasons: tuple[str, ...]
    clues: tuple[CookieClue, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "clues": [c.to_dict() for c in self.clues],
        }


@dataclass(frozen=True, slots=True)
class CookieEvidence:
    """The outcome of a ``CookieCheckProbe``.

    ``to_dict`` keys: type ("cookie-check"), verdict, explanation (one sentence), tsval1,
    tsval2 (the SYN/ACKs' TSvals; None when absent), encoding1, encoding2, expected_mod64
    ((encoding1 - encoding2) mod 64), observed_mod64 ((tsval1 - tsval2) mod 64), elapsed_ms
    (between the SYN/ACKs' receive stamps), elapsed_mod64 ((-round(elapsed_ms)) mod 64: what
    a kept request's clock predicts), tolerance, syn_ack2_answers ("syn1": SYN/ACK2 echoes
    SYN1's TSval/options, a retransmission; "syn2": a fresh answer to SYN2; None: cannot
    tell), seq1, seq2, reason (the first answer's ``Reason``), source_port, rst_sent, late,
    segments (``SegmentRecord.to_dict`` each).
    """

    verdict: CookieVerdict
    explanation: str
    encoding1: int
    encoding2: int
    expected_mod64: int
    tsval1: int | None = None
    tsval2: int | None = None
    observed_mod64: int | None = None
    elapsed_ms: float | None = None
    elapsed_mod64: int | None = None
    tolerance: int = 1
    syn_ack2_answers: str | None = None
    seq1: int | None = None
    seq2: int | None = None
    reason: Reason | None = None
    source_port: int = 0
    rst_sent: bool = False
    late: int = 0
    segments: tuple[SegmentRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "cookie-check",
            "verdict": self.verdict.value,
            "explanation": self.explanation,
            "tsval1": self.tsval1,
            "tsval2": self.tsval2,
            "encoding1": self.encoding1,
            "encoding2": self.encoding2,
            "expected_mod64": self.expected_mod64,
            "observed_mod64": self.observed_mod64,
            "elapsed_ms": None if self.elapsed_ms is None else round(self.elapsed_ms, 3),
            "elapsed_mod64": self.elapsed_mod64,
            "tolerance": self.tolerance,
            "syn_ack2_answers": self.syn_ack2_answers,
            "seq1": self.seq1,
            "seq2": self.seq2,
            "reason": None if self.reason is None else self.reason.value,
            "source_port": self.source_port,
            "rst_sent": self.rst_sent,
            "late": self.late,
            "segments": [s.to_dict() for s in self.segments],
        }


@dataclass(frozen=True, slots=True)
class HalfOpenResult:
    """The outcome of a ``HalfOpenProbe``.

    ``to_dict`` keys (stable): type ("halfopen"), probe, target, port, source, source_port,
    state and reason (of the first answer, as ``prober syn`` reports them), rtt_us and
    rtt_clock (SYN to first SYN/ACK), sent_ns (the SYN, on the RTT's clock), tcp and icmp
    (the first answer, ``TcpReply``/``IcmpReply.to_dict``), syn_acks (``SynAckArrival.to_dict``
    each), clock (of syn_acks' and segments' time_ns: "kernel" or "user"; None without
    segments), retransmissions, new_isns, ended_by (``EndedBy``), ended_after_s (SYN to the
    end, monotonic), last_syn_ack_after_us (last SYN/ACK since the first; None without any),
    rst_sent (our RST that frees the peer's request went out), leave_open, peer_state (the
    peer's inferred state at the end), late (valid answers after the end), cookies
    (``SynCookieVerdict.to_dict``), cookie_check (``CookieEvidence.to_dict`` or None),
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
    new_isns: int
    ended_by: EndedBy
    ended_after_s: float | None
    last_syn_ack_after_us: float | None
    rst_sent: bool
    leave_open: bool
    peer_state: TcpState
    late: int
    cookies: SynCookieVerdict
    cookie_check: CookieEvidence | None
    segments: tuple[SegmentRecord, ...]
    error: str | None = None

    def with_cookie_check(self, evidence: CookieEvidence | None) -> HalfOpenResult:
        """This result with a cookie check's evidence attached and the verdict recombined."""
        return replace(
            self, cookie_check=evidence, cookies=combine_cookie_evidence(self, evidence)
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
            "new_isns": self.new_isns,
            "ended_by": self.ended_by.value,
            "ended_after_s": None if self.ended_after_s is None else round(self.ended_after_s, 6),
            "last_syn_ack_after_us": (
                None
                if self.last_syn_ack_after_us is None
                else round(self.last_syn_ack_after_us, 3)
            ),
            "rst_sent": self.rst_sent,
            "leave_open": self.leave_open,
            "peer_state": self.peer_state.value,
            "late": self.late,
            "cookies": self.cookies.to_dict(),
            "cookie_check": None if self.cookie_check is None else self.cookie_check.to_dict(),
            "segments": [s.to_dict() for s in self.segments],
            "error": self.error,
        }


# -- combining the evidence -----------------------------------------------------------------


def _retransmission_clue(
    syn_acks: int, retransmissions: int, ended_by: str, state: str
) -> CookieClue | str:
    if syn_acks == 0:
        return f"no SYN/ACK came back (the port is {state}): no retransmission evidence"
    if retransmissions > 0:
        times = "time" if retransmissions == 1 else "times"
        return CookieClue(
            "retransmissions",
            CookieAnswer.NO,
            True,
            f"the peer retransmitted its SYN/ACK {retransmissions} {times}: it kept the "
            "request, which a SYN cookie does not",
        )
    if ended_by == EndedBy.SILENCE.value:
        return CookieClue(
            "retransmissions",
            CookieAnswer.YES,
            False,
            "the peer never retransmitted its SYN/ACK: a SYN cookie keeps no request to "
            "retransmit (or tcp_synack_retries is 0, or the retransmissions were lost)",
        )
    return f"the half-open probe ended ({ended_by}) before a retransmission was due"


def _answer_clue(answers: str | None) -> CookieClue | None:
    if answers == "syn1":
        return CookieClue(
            "answer",
            CookieAnswer.NO,
            True,
            "the second SYN/ACK repeated the answer to the first SYN (its TSecr or options): "
            "a retransmission from a kept request",
        )
    if answers == "syn2":
        return CookieClue(
            "answer",
            CookieAnswer.YES,
            True,
            "the second SYN/ACK answered the second SYN afresh (its TSecr or options): "
            "the peer kept no request",
        )
    return None


def _timestamp_clue(verdict: str, explanation: str) -> CookieClue | str:
    if verdict == CookieVerdict.COOKIES.value:
        return CookieClue("timestamps", CookieAnswer.YES, True, explanation)
    if verdict == CookieVerdict.NO_COOKIES.value:
        # Only Linux encodes options in TSval: other cookie implementations would look the same.
        return CookieClue("timestamps", CookieAnswer.NO, False, explanation)
    return explanation


def combine_cookie_evidence(
    halfopen: HalfOpenResult | Mapping[str, Any],
    cookie_evidence: CookieEvidence | Mapping[str, Any] | None,
) -> SynCookieVerdict:
    """Weigh the SYN-cookie evidence of a half-open probe and a cookie check (pure).

    Args:
        halfopen: a ``HalfOpenResult`` or its ``to_dict()`` (syn_acks, retransmissions,
            ended_by and state are read).
        cookie_evidence: a ``CookieEvidence`` or its ``to_dict()`` (verdict, explanation,
            syn_ack2_answers), or None if no cookie check ran.

    Returns:
        Strong clues decide (a retransmission: no; the TSval encoding: yes; which SYN the
        second SYN/ACK answered: either way); weak ones (no retransmission before silence:
        yes; TSval following the clock: no) only when no strong clue exists. Clues that
        disagree give "unknown".
    """
    if isinstance(halfopen, HalfOpenResult):
        fields = (
            len(halfopen.syn_acks),
            halfopen.retransmissions,
            halfopen.ended_by.value,
            halfopen.state.value,
        )
    else:
        fields = (
            len(halfopen.get("syn_acks") or ()),
            int(halfopen.get("retransmissions") or 0),
            str(halfopen.get("ended_by")),
            str(halfopen.get("state")),
        )
    items: list[CookieClue | str] = [_retransmission_clue(*fields)]
    if cookie_evidence is None:
        items.append("no cookie check ran")
    else:
        if isinstance(cookie_evidence, CookieEvidence):
            verdict = cookie_evidence.verdict.value
            explanation = cookie_evidence.explanation
            answers = cookie_evidence.syn_ack2_answers
        else:
            verdict = str(cookie_evidence.get("verdict"))
            explanation = str(cookie_evidence.get("explanation"))
            raw = cookie_evidence.get("syn_ack2_answers")
            answers = None if raw is None else str(raw)
        items.append(_timestamp_clue(verdict, explanation))
        answer = _answer_clue(answers)
        if answer is not None:
            items.append(answer)
    clues = tuple(item for item in items if isinstance(item, CookieClue))
    reasons = tuple(item.reason if isinstance(item, CookieClue) else item for item in items)
    deciding = [c for c in clues if c.strong] or list(clues)
    pointed = {c.points_to for c in deciding}
    if len(pointed) == 1:
        return SynCookieVerdict(pointed.pop(), reasons, clues)
    if pointed:
        reasons += ("the evidence disagrees",)
    return SynCookieVerdict(CookieAnswer.UNKNOWN, reasons, clues)


# -- the probes -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _rst_template(version: int, ttl: int = 64) -> TcpTemplate:
    """A bare RST (no options, as Linux resets carry), built once per family and TTL."""
    return TcpTemplate(version, TcpFlags.RST, ttl=ttl)


@functools.lru_cache(maxsize=64)
def _cookie_syn_template(
    version: int, ttl: int, mss: int | None, options: CookieOptions
) -> TcpTemplate:
    return TcpTemplate(
        version,
        TcpFlags.SYN,
        ttl=ttl,
        mss=mss,
        window_scale=options.window_scale,
        sack_permitted=options.sack_permitted,
        timestamps=True,
    )


class _Conversation:
    """What both probes share: the embedded SynProbe, the outbox, the segment log, our RST."""

    __slots__ = (
        "_entries",
        "_error",
        "_last_now",
        "_late",
        "_log",
        "_next_index",
        "_our_state",
        "_our_window",
        "_outbox",
        "_peer_isns",
        "_peer_state",
        "_queued",
        "_rst_index",
        "_rst_sent",
        "_rst_template",
        "_syn",
        "dport",
        "dst",
        "isn",
        "leave_open",
        "sport",
        "src",
    )

    def __init__(
        self,
        syn: SynProbe,
        rst_template: TcpTemplate | None,
        leave_open: bool,
    ) -> None:
        self._syn = syn
        self.src, self.dst = syn.src, syn.dst
        self.sport, self.dport, self.isn = syn.sport, syn.dport, syn.isn
        self.leave_open = leave_open
        self._rst_template = rst_template or _rst_template(4 if len(syn.src) == 4 else 6)
        self._log = SegmentLog(syn.isn)
        self._outbox: list[bytes] = []
        self._queued: dict[int, tuple[Packet, TcpState, TcpState, str]] = {}
        self._next_index = 0  # the engine numbers a probe's segments 0, 1, 2, ...
        self._entries = 0  # records in the log so far
        self._rst_index: int | None = None
        self._rst_sent = False
        self._error: str | None = None
        self._our_state = TcpState.CLOSED
        self._peer_state = TcpState.LISTEN  # assumed until it answers
        self._peer_isns: set[int] = set()
        self._our_window = 0
        self._late = 0
        self._last_now: float | None = None

    # -- engine callbacks shared by both probes ---------------------------------------------
    def segments_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def sent(self, index: int, stamp: Stamp) -> None:
        """The engine sent segment ``index`` at ``stamp``: log it (failed sends are not)."""
        queued = self._queued.pop(index, None)
        if queued is None:
            return
        packet, our, peer, note = queued
        self._log.sent(index, packet, our, peer, note)
        self._log.stamp_sent(index, stamp)
        self._entries += 1
        if index == 0:
            self._syn.sent(0, stamp)
        if index == self._rst_index:
            self._rst_sent = True

    def send_kernel_stamp(self, index: int, kernel_ns: int) -> None:
        self._log.kernel_stamp_sent(index, kernel_ns)
        if index == 0:
            self._syn.send_kernel_stamp(0, kernel_ns)

    def send_failed(self, index: int, error: str) -> None:
        self._queued.pop(index, None)
        if self._error is None:
            self._error = error
        if index == 0:
            self._syn.send_failed(0, error)
        self._send_failure(index, error)

    # -- helpers ------------------------------------------------------------------------------
    def _send_failure(self, index: int, error: str) -> None:
        """What a probe does when segment ``index`` could not be sent (override)."""

    def _queue(self, raw: bytes, note: str = "") -> int:
        index = self._next_index
        self._next_index += 1
        self._outbox.append(raw)
        self._queued[index] = (parse_packet(raw), self._our_state, self._peer_state, note)
        return index

    def _queue_syn(self, now: float) -> None:
        self._last_now = now
        self._syn.tsval = tsval_at(now)
        self._syn.start(now)
        self._our_state = transition(self._our_state, TcpEvent.SEND_SYN)
        for raw in self._syn.segments_to_send():
            syn = parse_packet(raw).tcp
            assert syn is not None
            self._our_window = syn.window
            self._queue(raw)

    def _queue_rst(self, note: str) -> None:
        """Our RST, seq = ISN+1: in the request's window, so the peer drops the request."""
        raw = self._rst_template.build(
            self.src, self.dst, self.sport, self.dport, (self.isn + 1) & _MASK, 0
        )
        self._our_state = transition(self._our_state, TcpEvent.SEND_RST)
        self._peer_state = transition(self._peer_state, mirrored(TcpEvent.SEND_RST))
        self._rst_index = self._queue(raw, note)

    def _log_received(self, packet: Packet, stamp: Stamp, note: str = "") -> int:
        self._log.received(packet, stamp, self._our_state, self._peer_state, note)
        self._entries += 1
        return self._entries - 1

    def _validate(self, packet: Packet, now: float, stamp: Stamp) -> bool:
        """Does ``packet`` belong to this conversation? SynProbe's rules (zmap's), and bare
        RSTs in our receive window once the peer's ISN is known."""
        valid = self._syn.receive(packet, now, stamp)
        tcp = packet.tcp
        if valid or tcp is None or tcp.flags & (TcpFlags.RST | TcpFlags.ACK) != TcpFlags.RST:
            return valid  # a RST/ACK must ack our SYN (SynProbe checked): no second chance
        if not self._peer_isns:
            return False
        if packet.src != self.dst or tcp.sport != self.dport or tcp.dport != self.sport:
            return False
        # A bare RST after a SYN/ACK (RFC 9293 §3.10.7.4): acceptable if RCV.NXT <= SEG.SEQ <
        # RCV.NXT + RCV.WND, RCV.NXT being the peer's ISN + 1 (any ISN it used), RCV.WND our
        # SYN's window.
        window = max(self._our_window, 1)
        return any((tcp.seq - isn - 1) & _MASK < window for isn in self._peer_isns)

    def _late_answer(self, packet: Packet, stamp: Stamp) -> None:
        """A valid answer after the probe ended: count and log it; free a late request."""
        self._late += 1
        tcp = packet.tcp
        if tcp is None:
            return
        if tcp.flags & TcpFlags.RST:
            self._peer_state = transition(self._peer_state, TcpEvent.SEND_RST)
            self._log_received(packet, stamp, "late")
            return
        self._peer_isns.add(tcp.seq)
        if self._log.peer_isn is None:
            self._log.peer_isn = tcp.seq
        if self._rst_index is None:
            self._peer_state = TcpState.SYN_RECEIVED
        self._log_received(packet, stamp, "late")
        if not self.leave_open and self._rst_index is None:
            self._queue_rst("frees the request of a late SYN/ACK")

    def _records(self) -> tuple[SegmentRecord, ...]:
        return self._log.records()


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
    new_isn: bool


class HalfOpenProbe(_Conversation):
    """One SYN, never the ACK: every SYN/ACK the peer sends until it gives up.

    Args:
        template: the SYN template (Linux options: ``TcpTemplate(version, TcpFlags.SYN)``).
        src, dst: packed addresses; sport, dport: ports.
        isn: our keyed ISN (``IsnKey``).
        syn_timeout: seconds to wait for the first answer (then: filtered, no-response).
        max_wait: seconds from the SYN after which the probe stops watching ("max-wait").
        first_interval: when the first retransmission is due (Linux: 1 s; some stacks: 3 s).
        leave_open: send no RST at the end; the peer keeps the request until it gives up.
        rst_template: the RST template (default: a bare IPv4/IPv6 RST, TTL 64).
        number: the probe's number within its run.

    The engine must drop the local kernel's RSTs on this 4-tuple for the whole conversation
    (``Engine.suppress_rsts``): a kernel RST frees the peer's request at the first SYN/ACK.
    Segments: 0 = the SYN, then the RST (if any).
    """

    __slots__ = (
        "_arrivals",
        "_current_isn",
        "_deadline",
        "_ended_at",
        "_ended_by",
        "_last_arrival_at",
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
        first_interval: float = LINUX_SYNACK_FIRST_RTO,
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
        self._current_isn: int | None = None
        self._deadline: float | None = None
        self._silence_at: float | None = None
        self._max_at: float | None = None
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._ended_by: EndedBy | None = None
        self._last_arrival_at: float | None = None

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
        if not self._validate(packet, now, stamp):
            return False
        tcp = packet.tcp
        if self.phase is HalfOpenPhase.WAITING:
            if not self._syn.done:
                pass  # an ICMP notice about our SYN (SynProbe keeps it): no answer yet
            elif self._syn.result().reason is Reason.SYN_ACK:
                self._syn_ack(packet, now, stamp)
            else:
                if tcp is not None:  # RST: nothing listens
                    self._our_state = transition(self._our_state, TcpEvent.RECEIVE_RST)
                    self._peer_state = TcpState.CLOSED
                    self._log_received(packet, stamp)
                self._end(EndedBy.NO_SYN_ACK, now)
        elif self.phase is HalfOpenPhase.WATCHING:
            if tcp is None:
                pass  # an ICMP error quoting our SYN after its SYN/ACK: nothing to do
            elif tcp.flags & TcpFlags.RST:
                self._our_state = transition(self._our_state, TcpEvent.RECEIVE_RST)
                self._peer_state = transition(self._peer_state, TcpEvent.SEND_RST)
                self._log_received(packet, stamp, "the peer reset its request")
                self._end(EndedBy.RST, now)
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
            retransmissions=sum(1 for a in arrivals if a.retransmission),
            new_isns=sum(1 for a in arrivals if a.new_isn),
            ended_by=self._ended_by,
            ended_after_s=ended_after,
            last_syn_ack_after_us=arrivals[-1].since_first_us if arrivals else None,
            rst_sent=self._rst_sent,
            leave_open=self.leave_open,
            peer_state=self._peer_state,
            late=self._late,
            cookies=SynCookieVerdict(CookieAnswer.UNKNOWN, ()),
            cookie_check=None,
            segments=records,
            error=self._error,
        ).with_cookie_check(None)  # the retransmission evidence alone

    # -- internals ----------------------------------------------------------------------
    def _send_failure(self, index: int, error: str) -> None:
        if index == 0:  # the SYN: SynProbe reports send-failed
            self._end(EndedBy.NO_SYN_ACK, self._last_now)

    def _syn_ack(self, packet: Packet, now: float, stamp: Stamp) -> None:
        tcp = packet.tcp
        assert tcp is not None
        first = not self._arrivals
        previous = None if first else self._arrivals[-1].segment
        duplicate = new_isn = retransmission = False
        note = ""
        if first:
            self._log.peer_isn = tcp.seq
        elif tcp.seq != self._current_isn:
            new_isn, note = True, "new ISN"
        elif (
            previous is not None
            and tcp.options.timestamp is not None
            and previous.options.timestamp == tcp.options.timestamp
            and previous.seq == tcp.seq
        ):
            duplicate, note = True, "duplicate"
        else:
            retransmission, note = True, "retransmission"
        if first or new_isn:
            self._current_isn = tcp.seq
            self._peer_isns.add(tcp.seq)
        # The peer got our SYN and answered: it holds a request (SYN-RECEIVED). We stay in
        # SYN-SENT, since the ACK that would take us to ESTABLISHED is never sent.
        self._peer_state = transition(TcpState.LISTEN, TcpEvent.RECEIVE_SYN)
        position = self._log_received(packet, stamp, note)
        self._arrivals.append(
            _Arrival(len(self._arrivals), position, tcp, retransmission, duplicate, new_isn)
        )
        if duplicate:
            return  # a copy on the path says nothing about the peer's schedule
        if retransmission and self._last_arrival_at is not None:
            interval = now - self._last_arrival_at
            expected = min(max(2 * interval, self.first_interval), LINUX_RTO_MAX)
        else:
            expected = self.first_interval  # a first answer (or a new request) starts over
        self._last_arrival_at = now
        self._silence_at = now + SILENCE_FACTOR * expected + SILENCE_SLACK
        assert self._max_at is not None
        self._deadline = min(self._silence_at, self._max_at)
        self.phase = HalfOpenPhase.WATCHING

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
                    new_isn=arrival.new_isn,
                )
            )
            previous_ns = time_ns
        return tuple(out)


class CookiePhase(Enum):
    IDLE = "idle"
    FIRST = "first"  # SYN1 sent, waiting for SYN/ACK1
    SECOND = "second"  # SYN2 sent, waiting for SYN/ACK2
    DONE = "done"


class CookieCheckProbe(_Conversation):
    """Two SYNs with one ISN and different options: do the SYN/ACKs' TSvals encode them?

    Args:
        src, dst: packed addresses; sport: a source port of its own (not the half-open
            probe's); dport: the target port.
        isn: our keyed ISN, the same in both SYNs.
        first, second: the SYNs' options; their encodings must differ modulo 64.
        syn_timeout: seconds to wait for SYN/ACK1.
        answer_timeout: seconds to wait for SYN/ACK2 after SYN2. A kept request also
            retransmits on its own after 1 s, so a lost SYN2 still gets an answer if this
            is longer than that.
        tolerance: how far (mod 64) the clock prediction may miss (ms ticks, path jitter).
        ttl, mss: of both SYNs.
        number: the probe's number within its run.

    Segments: 0 = SYN1, 1 = SYN2, then the RST (seq = ISN+1). Like the half-open probe, it
    needs the local kernel's RSTs dropped on its 4-tuple: a kernel RST after SYN/ACK1 would
    free the request, and SYN2 would open a new one.
    """

    __slots__ = (
        "_answers",
        "_deadline",
        "_elapsed_ms",
        "_explanation",
        "_first_stamp",
        "_first_tcp",
        "_second_tcp",
        "_syn2_index",
        "_syn2_template",
        "_syn2_tsval",
        "_verdict",
        "answer_timeout",
        "first",
        "phase",
        "second",
        "syn_timeout",
        "tolerance",
    )

    def __init__(
        self,
        *,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        isn: int,
        first: CookieOptions = DEFAULT_FIRST_SYN,
        second: CookieOptions = DEFAULT_SECOND_SYN,
        syn_timeout: float = 1.0,
        answer_timeout: float = 3.0,
        tolerance: int = 1,
        ttl: int = 64,
        mss: int | None = None,
        number: int = 1,
    ) -> None:
        if first.encoding % TS_MODULUS == second.encoding % TS_MODULUS:
            raise ValueError("the two SYNs' option encodings must differ")
        for name, value in (("syn_timeout", syn_timeout), ("answer_timeout", answer_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if not 0 <= tolerance < TS_MODULUS // 2:
            raise ValueError(f"tolerance must be 0 to {TS_MODULUS // 2 - 1}, not {tolerance}")
        version = 4 if len(src) == 4 else 6
        syn = SynProbe(
            number=number,
            template=_cookie_syn_template(version, ttl, mss, first),
            src=src,
            dst=dst,
            sport=sport,
            dport=dport,
            isn=isn,
            timeout=syn_timeout,
        )
        super().__init__(syn, _rst_template(version, ttl), leave_open=False)
        self.first, self.second = first, second
        self.syn_timeout = syn_timeout
        self.answer_timeout = answer_timeout
        self.tolerance = tolerance
        self.phase = CookiePhase.IDLE
        self._syn2_template = _cookie_syn_template(version, ttl, mss, second)
        self._syn2_index: int | None = None
        self._syn2_tsval: int | None = None
        self._deadline: float | None = None
        self._first_tcp: TcpSegment | None = None
        self._first_stamp: Stamp | None = None
        self._second_tcp: TcpSegment | None = None
        self._elapsed_ms: float | None = None
        self._answers: str | None = None
        self._verdict: CookieVerdict | None = None
        self._explanation = ""

    @property
    def expected_mod64(self) -> int:
        return (self.first.encoding - self.second.encoding) % TS_MODULUS

    # -- inputs -------------------------------------------------------------------------
    def start(self, now: float) -> None:
        if self.phase is not CookiePhase.IDLE:
            raise RuntimeError("probe already started")
        self._queue_syn(now)
        self._deadline = self._syn.next_deadline()
        self.phase = CookiePhase.FIRST

    def receive(self, packet: Packet, now: float, stamp: Stamp) -> bool:
        """Offer a packet routed to this 4-tuple; True if it belongs to this conversation."""
        if self.phase is CookiePhase.IDLE:
            return False
        self._last_now = now
        if self._deadline is not None and now >= self._deadline:
            self.handle_timer(now)
        if not self._validate(packet, now, stamp):
            return False
        tcp = packet.tcp
        if self.phase is CookiePhase.FIRST:
            if not self._syn.done:
                return True  # an ICMP notice about our SYN (SynProbe keeps it): no answer yet
            reason = self._syn.result().reason
            if reason is Reason.SYN_ACK:
                assert tcp is not None
                self._first_syn_ack(tcp, packet, now, stamp)
            else:
                if tcp is not None:
                    self._our_state = transition(self._our_state, TcpEvent.RECEIVE_RST)
                    self._peer_state = TcpState.CLOSED
                    self._log_received(packet, stamp)
                self._finish(
                    CookieVerdict.NO_ANSWER,
                    f"The first SYN was answered by {reason.value}, not a SYN/ACK.",
                    rst=False,
                )
        elif self.phase is CookiePhase.SECOND:
            if tcp is None:
                pass  # an ICMP error quoting our SYN: nothing to compare
            elif tcp.flags & TcpFlags.RST:
                self._our_state = transition(self._our_state, TcpEvent.RECEIVE_RST)
                self._peer_state = transition(self._peer_state, TcpEvent.SEND_RST)
                self._log_received(packet, stamp, "the peer reset its request")
                self._finish(
                    CookieVerdict.NO_SECOND_ANSWER,
                    "The peer reset the connection instead of answering the second SYN.",
                    rst=False,
                )
            else:
                self._second_syn_ack(tcp, packet, stamp)
        else:
            self._late_answer(packet, stamp)
        return True

    def handle_timer(self, now: float) -> None:
        self._last_now = now
        if self.phase is CookiePhase.FIRST:
            self._syn.handle_timer(now)
            if self._syn.done:
                self._finish(
                    CookieVerdict.NO_ANSWER,
                    f"No answer to the first SYN within {self.syn_timeout:g} s.",
                    rst=False,
                )
        elif (
            self.phase is CookiePhase.SECOND
            and self._deadline is not None
            and now >= self._deadline
        ):
            self._finish(
                CookieVerdict.NO_SECOND_ANSWER,
                f"No SYN/ACK answered the second SYN within {self.answer_timeout:g} s.",
                rst=True,
            )

    def interrupt(self, now: float | None = None) -> None:
        """Stop (Ctrl-C); after SYN/ACK1 the RST is queued: ``Engine.poke`` it."""
        if self.phase is CookiePhase.DONE:
            return
        if self.phase is CookiePhase.SECOND:
            self._finish(CookieVerdict.INTERRUPTED, "Interrupted before the second SYN/ACK.", True)
            return
        self._syn.interrupt()
        self._finish(CookieVerdict.INTERRUPTED, "Interrupted before the first SYN/ACK.", False)

    # -- outputs ------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        if self.phase is CookiePhase.FIRST or self.phase is CookiePhase.SECOND:
            return self._deadline
        return None

    @property
    def done(self) -> bool:
        return self.phase is CookiePhase.DONE

    def result(self) -> CookieEvidence:
        if self._verdict is None:
            raise RuntimeError("probe has not ended yet")
        first_syn = self._syn.result() if self._syn.done else None
        tsval1 = tsval2 = observed = predicted = None
        seq1 = seq2 = None
        if self._first_tcp is not None:
            seq1 = self._first_tcp.seq
            if self._first_tcp.options.timestamp is not None:
                tsval1 = self._first_tcp.options.timestamp[0]
        if self._second_tcp is not None:
            seq2 = self._second_tcp.seq
            if self._second_tcp.options.timestamp is not None:
                tsval2 = self._second_tcp.options.timestamp[0]
        if tsval1 is not None and tsval2 is not None:
            observed = (tsval1 - tsval2) % TS_MODULUS
        if self._elapsed_ms is not None:
            predicted = (-round(self._elapsed_ms)) % TS_MODULUS
        return CookieEvidence(
            verdict=self._verdict,
            explanation=self._explanation,
            encoding1=self.first.encoding,
            encoding2=self.second.encoding,
            expected_mod64=self.expected_mod64,
            tsval1=tsval1,
            tsval2=tsval2,
            observed_mod64=observed,
            elapsed_ms=self._elapsed_ms,
            elapsed_mod64=predicted,
            tolerance=self.tolerance,
            syn_ack2_answers=self._answers,
            seq1=seq1,
            seq2=seq2,
            reason=None if first_syn is None else first_syn.reason,
            source_port=self.sport,
            rst_sent=self._rst_sent,
            late=self._late,
            segments=self._records(),
        )

    # -- internals ----------------------------------------------------------------------
    def _send_failure(self, index: int, error: str) -> None:
        if self.phase is CookiePhase.DONE:
            return  # our RST: nothing more to do
        which = "first" if index == 0 else "second"
        # No RST: the engine sends nothing more in this batch, and this one would fail too.
        self._finish(
            CookieVerdict.SEND_FAILED, f"The {which} SYN could not be sent: {error}.", rst=False
        )

    def _first_syn_ack(self, tcp: TcpSegment, packet: Packet, now: float, stamp: Stamp) -> None:
        self._log.peer_isn = tcp.seq
        self._peer_isns.add(tcp.seq)
        self._peer_state = transition(TcpState.LISTEN, TcpEvent.RECEIVE_SYN)
        self._log_received(packet, stamp)
        self._first_tcp, self._first_stamp = tcp, stamp
        if tcp.options.timestamp is None:
            self._finish(
                CookieVerdict.NO_TIMESTAMPS,
                "The SYN/ACK carries no timestamp option (timestamps are off at the peer): "
                "only the retransmission evidence remains.",
                rst=True,
            )
            return
        # Our TSvals must differ, so that SYN/ACK2's TSecr tells which SYN it answers.
        tsval = tsval_at(now)
        if tsval == self._syn.tsval:
            tsval = (tsval + 1) & _MASK
        self._syn2_tsval = tsval
        raw = self._syn2_template.build(
            self.src, self.dst, self.sport, self.dport, self.isn, 0, tsval
        )
        self._syn2_index = self._queue(raw, "same ISN, other options")
        self._deadline = now + self.answer_timeout
        self.phase = CookiePhase.SECOND

    def _second_syn_ack(self, tcp: TcpSegment, packet: Packet, stamp: Stamp) -> None:
        first, first_stamp = self._first_tcp, self._first_stamp
        assert first is not None and first_stamp is not None and first.options.timestamp
        self._second_tcp = tcp
        self._answers = self._which_syn(first, tcp)
        if first_stamp.kernel_ns is not None and stamp.kernel_ns is not None:
            elapsed_ns = stamp.kernel_ns - first_stamp.kernel_ns
        else:
            elapsed_ns = stamp.user_ns - first_stamp.user_ns
        self._elapsed_ms = elapsed_ns / 1e6
        if tcp.options.timestamp is None:
            verdict = CookieVerdict.NO_TIMESTAMPS
            explanation = (
                "The second SYN/ACK carries no timestamp option: "
                "only the retransmission evidence remains."
            )
        else:
            verdict, explanation = judge_timestamps(
                first.options.timestamp[0],
                tcp.options.timestamp[0],
                self.first.encoding,
                self.second.encoding,
                self._elapsed_ms,
                self.tolerance,
            )
        if verdict is CookieVerdict.COOKIES or self._answers == "syn2":
            self._peer_state = TcpState.LISTEN  # a cookie: the peer keeps nothing
            note = "fresh answer (SYN cookie?)"
        elif self._answers == "syn1":
            note = "retransmission"
        else:
            note = ""
        self._log_received(packet, stamp, note)
        self._finish(verdict, explanation, rst=True)

    def _which_syn(self, first: TcpSegment, second: TcpSegment) -> str | None:
        """Which SYN SYN/ACK2 answers: "syn1" (a retransmission), "syn2" (fresh), or None.

        A retransmission echoes SYN1's TSval (tcp_check_req does not update ts_recent for a
        repeated SYN) and carries the options SYN1 asked for; a fresh answer echoes SYN2's
        TSval and carries SYN2's options. Votes that disagree give None.
        """
        votes: set[str] = set()
        timestamp = second.options.timestamp
        if timestamp is not None and self._syn2_tsval != self._syn.tsval:
            if timestamp[1] == self._syn.tsval:
                votes.add("syn1")
            elif timestamp[1] == self._syn2_tsval:
                votes.add("syn2")
        offers = (
            (
                self.first.sack_permitted,
                self.second.sack_permitted,
                first.options.sack_permitted,
                second.options.sack_permitted,
            ),
            (
                self.first.window_scale is not None,
                self.second.window_scale is not None,
                first.options.window_scale is not None,
                second.options.window_scale is not None,
            ),
        )
        for offered1, offered2, has1, has2 in offers:
            if offered1 and not offered2 and has1:
                # The peer uses the option; only an answer to SYN1 would carry it now.
                votes.add("syn1" if has2 else "syn2")
            elif offered2 and not offered1 and has2:
                votes.add("syn2")  # only an answer to SYN2 can carry it
        return votes.pop() if len(votes) == 1 else None

    def _finish(self, verdict: CookieVerdict, explanation: str, rst: bool) -> None:
        self.phase = CookiePhase.DONE
        self._deadline = None
        self._verdict = verdict
        self._explanation = explanation
        if rst:
            self._queue_rst("frees the peer's request")
