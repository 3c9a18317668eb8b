"""The SYN-cookie check: two SYNs with one ISN and different options, and their TSvals.

With SYN cookies (RFC 4987; Linux: always with tcp_syncookies=2, on SYN-queue overflow with 1)
the peer keeps no request. Linux then carries the SYN's options in the cookie SYN/ACK's TSval
(net/ipv4/syncookies.c, ``cookie_init_timestamp``): its low 6 bits are ``(wscale_ok ?
snd_wscale : 0xF) | sack << 4 | ecn << 5``, under the peer's ms clock rounded down to a
multiple of 64, plus a random offset (tcp_timestamps=1; it differs from one connection to
the next, so both SYNs share one 4-tuple). The offset hides one TSval, but not the difference
of two.

``CookieCheckProbe`` sends SYN1 (window scale 7, SACK: encoding 23) and, on its SYN/ACK, SYN2
on the same 4-tuple with the same ISN but window scale 2 and no SACK (encoding 2). A peer that
kept a request takes SYN2 for a retransmitted SYN and retransmits its SYN/ACK
(``tcp_check_req``: same TSecr as before, the options SYN1 asked for, TSval advanced by its
clock); a cookie peer computes a fresh cookie for SYN2 (TSecr = SYN2's TSval, SYN2's options,
TSval encoding 2). With TSval1, TSval2 the two SYN/ACKs' TSvals:

    observed = (TSval1 - TSval2) mod 64
    cookies:      observed == (encoding1 - encoding2) mod 64        (= 21 by default)
    kept request: TSval2 = TSval1 + elapsed_ms (+-1 for ms ticks and path jitter), so
                  observed == (-round(elapsed_ms)) mod 64 within ``tolerance``

where elapsed_ms is the time between the two SYN/ACKs' receive stamps. When both fit
(elapsed_ms near 43 ms + k*64 ms with the default encodings) the check is inconclusive;
other encodings (constructor parameters) move the cookie prediction. How this evidence is
weighed with the half-open watch's: ``prober.core.cookie_verdict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Final

from prober.core.handshake_conversation import MASK as _MASK
from prober.core.handshake_conversation import HandshakeConversation, bare_rst_template, tsval_at
from prober.core.packets import TcpTemplate, template
from prober.core.states import TcpEvent, TcpState, transition
from prober.core.strays import IcmpReply, Stray, notice_json, stray_json
from prober.core.syn import Reason, SynProbe
from prober.core.timing import Stamp
from prober.core.trace import SegmentRecord
from prober.core.wire import Packet, TcpFlags, TcpSegment

__all__ = [
    "DEFAULT_FIRST_SYN",
    "DEFAULT_SECOND_SYN",
    "CookieCheckProbe",
    "CookieEvidence",
    "CookieOptions",
    "CookieVerdict",
    "cookie_option_encoding",
    "cookie_timestamp",
    "judge_timestamps",
    "mod64_distance",
]

# syncookies.c: the low TS_BITS of a cookie SYN/ACK's TSval encode the SYN's options.
TS_BITS: Final = 6
TS_MODULUS: Final = 1 << TS_BITS
TS_OPT_WSCALE_MASK: Final = 0xF  # "no window scale option"
TS_OPT_SACK: Final = 1 << 4
TS_OPT_ECN: Final = 1 << 5
MAX_WINDOW_SCALE: Final = 14  # RFC 7323; Linux clamps larger shifts to 14


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
    invalid and invalid_by_kind, notices and icmp_notices (as the half-open result's, for
    this conversation), segments (``SegmentRecord.to_dict`` each).
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
    invalid_by_kind: dict[Stray, int] = field(default_factory=dict)
    notices: int = 0
    icmp_notices: tuple[IcmpReply, ...] = ()

    @property
    def invalid(self) -> int:
        """Packets on the check's 4-tuple that proved nothing (see ``Stray``)."""
        return sum(self.invalid_by_kind.values())

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
            **stray_json(self.invalid_by_kind),
            **notice_json(self.notices, self.icmp_notices),
            "segments": [s.to_dict() for s in self.segments],
        }



def _cookie_syn_template(
    version: int, ttl: int, mss: int | None, options: CookieOptions
) -> TcpTemplate:
    return template(
        version,
        TcpFlags.SYN,
        ttl=ttl,
        mss=mss,
        window_scale=options.window_scale,
        sack_permitted=options.sack_permitted,
        timestamps=True,
    )



class CookiePhase(Enum):
    IDLE = "idle"
    FIRST = "first"  # SYN1 sent, waiting for SYN/ACK1
    SECOND = "second"  # SYN2 sent, waiting for SYN/ACK2
    DONE = "done"


class CookieCheckProbe(HandshakeConversation):
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
        super().__init__(syn, bare_rst_template(version, ttl), leave_open=False)
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
        if self._take_notice(packet):
            return True
        if not self._validate(packet, now, stamp):
            return False
        tcp = packet.tcp
        if self.phase is CookiePhase.FIRST:
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
            invalid_by_kind=self.strays(),
            notices=self._notices.count,
            icmp_notices=self._notices.kept(),
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
            # A cookie: the peer kept no request (states.py: COOKIE_SHOWN).
            self._peer_state = transition(self._peer_state, TcpEvent.COOKIE_SHOWN)
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

