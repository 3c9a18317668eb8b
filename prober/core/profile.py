"""What `prober profile` reports: one property per question about the peer's TCP stack, each
with its value, the evidence it rests on (which segments of which ladder), and how it was
obtained. Pure data; the inference that fills it is ``prober.core.profile_infer``, the stack
table it is matched against ``prober.core.stack_defaults``.

A value is only as strong as its evidence. ``Basis`` says how a value was obtained:
MEASURED (read off the segments: an option the SYN/ACK carried, an interval between two
arrivals), INFERRED (a conclusion that rests on an assumption, named in ``rests_on``: the
initial TTL from the observed one assumes fewer than 32 hops), UNKNOWN (the probe ran but
its answers do not decide; ``evidence`` says why), NOT_MEASURED (the probe did not run:
``--quick``, or the handshake failed). UNKNOWN and NOT_MEASURED always carry ``value`` None.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prober.core.syn import Reason
from prober.core.trace import SegmentRecord

# A property's value in JSON: a number, a string of a closed set, a flag, or None (unknown).
Value = bool | int | float | str | None


class ProbeKind(StrEnum):
    """One probe of the profile; each draws one ladder (its segments in order)."""

    SYN = "syn"  # plain SYNs: RTT, the options the SYN/ACK offers, TTL
    ECN = "ecn"  # a SYN with ECE and CWR (RFC 3168 §6.1.1)
    HALFOPEN = "halfopen"  # SYN, no final ACK: the SYN/ACK retransmissions
    COOKIE_CHECK = "cookie-check"  # the second SYN of the SYN-cookie check
    CLOSE = "close"  # we close first: the peer's ACK and FIN
    FIN_RETRANSMIT = "fin-retransmit"  # we close first and never ACK the peer's FIN
    TIMEWAIT = "timewait"  # the peer closes first: its TIME-WAIT (duration, re-FIN)
    TIMEWAIT_ABOVE_ISN = "timewait-above-isn"  # a SYN above the old sequence space
    TIMEWAIT_NEWER_TSVAL = "timewait-newer-tsval"  # a SYN with a newer TSval
    TIMEWAIT_RST = "timewait-rst"  # RSTs into the peer's TIME-WAIT (RFC 1337)
    TIMEWAIT_REFIN = "timewait-refin"  # our FIN again into the peer's TIME-WAIT
    # RFC 5961, each on an established connection of its own:
    CHALLENGE = "challenge"  # a RST in the window, not at RCV.NXT
    CHALLENGE_RST_OUT = "challenge-rst-out-of-window"  # a RST outside the window
    CHALLENGE_SYN = "challenge-syn"  # a SYN
    CHALLENGE_RATE = "challenge-rate"  # SYNs every 50 ms: how often challenge ACKs come


class Basis(StrEnum):
    MEASURED = "measured"
    INFERRED = "inferred"
    UNKNOWN = "unknown"
    NOT_MEASURED = "not-measured"


class PropertyName(StrEnum):
    """Every property, in the order the report shows them (also the JSON field names)."""

    HANDSHAKE_RTT_MS = "handshake_rtt_ms"  # min SYN -> SYN/ACK
    MSS = "mss"  # the SYN/ACK's MSS option (False: none)
    WINDOW = "window"  # the SYN/ACK's window field (unscaled, RFC 7323 §2.2)
    WINDOW_SCALE = "window_scale"  # its shift (False: not offered)
    SACK = "sack"  # SACK-permitted offered
    TIMESTAMPS = "timestamps"  # timestamps offered
    OPTION_ORDER = "option_order"  # the SYN/ACK's option kinds in order, e.g. "MSTNW"
    ECN = "ecn"  # an ECN-setup SYN/ACK (ECE, no CWR) to an ECN-setup SYN
    INITIAL_TTL = "initial_ttl"  # the TTL / hop limit the peer starts from
    INITIAL_RTO_S = "initial_rto_s"  # first SYN/ACK -> its first retransmission
    SYNACK_BACKOFF = "synack_backoff"  # ratio of successive retransmission intervals
    SYNACK_RETRIES = "synack_retries"  # SYN/ACK retransmissions before it gave up
    SYNACK_GIVE_UP_S = "synack_give_up_s"  # first SYN/ACK -> the last one
    SYN_COOKIES = "syn_cookies"  # CookieMode
    CLOSE_KIND = "close_kind"  # prober.core.close_timeline.CloseKind, we closing first
    CLOSE_FIN_DELAY_MS = "close_fin_delay_ms"  # our FIN -> the peer's FIN
    FIN_RTO_S = "fin_rto_s"  # the peer's FIN -> its first retransmission
    FIN_BACKOFF = "fin_backoff"
    FIN_RETRIES = "fin_retries"  # retransmissions of its FIN before it gave up
    FIN_GIVE_UP = "fin_give_up"  # FinGiveUp
    TIME_WAIT = "time_wait"  # the peer holds TIME-WAIT after closing first
    TIME_WAIT_S = "time_wait_s"  # its length (``error`` = ± the step)
    TIME_WAIT_REFIN = "time_wait_refin"  # a repeated FIN is re-ACKed (and restarts 2 MSL)
    TIME_WAIT_REOPEN_ABOVE_ISN = "time_wait_reopen_above_isn"  # SYN above the old space
    TIME_WAIT_REOPEN_NEWER_TSVAL = "time_wait_reopen_newer_tsval"  # SYN with newer TSval
    RFC1337 = "rfc1337"  # a RST at exactly RCV.NXT leaves TIME-WAIT in place
    CHALLENGE_RST = "challenge_rst"  # ChallengeAnswer to a RST in window, not at RCV.NXT
    RST_OUT_OF_WINDOW = "rst_out_of_window"  # ChallengeAnswer to a RST outside the window
    CHALLENGE_SYN = "challenge_syn"  # ChallengeAnswer to a SYN in an established connection
    CHALLENGE_ACK_INTERVAL_S = "challenge_ack_interval_s"  # shortest spacing of challenge ACKs


class CookieMode(StrEnum):
    ALWAYS = "always"  # a cookie answers every SYN (Linux tcp_syncookies=2)
    # The peer kept state for a lone SYN: cookies only when the SYN queue overflows, or
    # never. Telling these apart needs a flood, which profile never sends.
    NOT_FOR_A_LONE_SYN = "not-for-a-lone-syn"


class FinGiveUp(StrEnum):
    RST = "rst"  # it reset the connection after its last FIN
    SILENCE = "silence"  # its FINs stopped
    NEVER = "never"  # still retransmitting when the watch ended


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """Segments of one ladder: indices into ``Ladder.records``."""

    ladder: ProbeKind
    indices: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"ladder": self.ladder.value, "indices": list(self.indices)}


@dataclass(frozen=True, slots=True)
class Property:
    """One answer of the profile.

    ``display`` is the value for people ("1 s", "yes", "not offered"); ``evidence`` names the
    segments and what they show; ``rests_on`` (INFERRED only) the assumption the value needs;
    ``meaning`` what the value usually means ("Linux default"); ``error`` a ± on a measured
    number (TIME-WAIT's step, for one).
    """

    name: PropertyName
    value: Value
    display: str
    basis: Basis
    evidence: str
    segments: tuple[SegmentRef, ...] = ()
    unit: str | None = None
    error: float | None = None
    rests_on: str | None = None
    meaning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "error": self.error,
            "basis": self.basis.value,
            "evidence": self.evidence,
            "segments": [ref.to_dict() for ref in self.segments],
            "rests_on": self.rests_on,
            "meaning": self.meaning,
            "display": self.display,
        }


@dataclass(frozen=True, slots=True)
class Ladder:
    """One probe's segments as a sequence diagram shows them (SVG in --html)."""

    probe: ProbeKind
    title: str  # e.g. "Half-open: SYN, no final ACK"
    source_port: int
    records: tuple[SegmentRecord, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe.value,
            "title": self.title,
            "source_port": self.source_port,
            "notes": list(self.notes),
            "segments": [record.to_dict() for record in self.records],
        }


@dataclass(frozen=True, slots=True)
class StackMatch:
    """Which known stack's defaults the peer's properties match (docs/stack-defaults.md).

    ``stack`` is None ("unknown") when no stack agrees on every compared property, or too
    few properties were measured to tell. ``agree``/``disagree`` list property names
    compared against that stack (or, for unknown, the closest one: ``closest``).
    """

    stack: str | None
    closest: str | None
    agree: tuple[PropertyName, ...]
    disagree: tuple[PropertyName, ...]
    explanation: str
    candidates: tuple[str, ...] = ()  # every stack that agrees on all compared properties

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "closest": self.closest,
            "agree": [name.value for name in self.agree],
            "disagree": [name.value for name in self.disagree],
            "candidates": list(self.candidates),
            "explanation": self.explanation,
        }


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """The outcome of ``prober profile`` (``Prober.profile``).

    ``to_dict()`` (docs/json.md): ``type`` "profile"; ``host``, ``target``, ``port``,
    ``source``; ``quick``; ``started_ns``, ``elapsed_s``; ``reason`` (how the port answered
    the plain SYNs: ``syn-ack`` when the profile ran); one field per property (its name, e.g.
    ``synack_retries``) holding ``Property.to_dict()``; ``properties`` (their names, in
    order); ``match``; ``ladders``; ``notes``; ``interrupted``.
    """

    host: str
    target: str
    port: int
    source: str
    quick: bool
    started_ns: int
    elapsed_s: float
    properties: tuple[Property, ...]
    match: StackMatch
    ladders: tuple[Ladder, ...]
    notes: tuple[str, ...] = ()
    interrupted: bool = False
    # How the port answered the plain SYNs (SYN_ACK: the profile ran; None: nothing sent).
    reason: Reason | None = None

    def packets(self) -> list[tuple[int, bytes]]:
        """Every segment of every ladder as (CLOCK_REALTIME ns, IP packet), in time order
        (for --pcap); failed sends are left out."""
        out = [(r.time_ns, r.raw) for ladder in self.ladders for r in ladder.records if r.raw]
        out.sort(key=lambda item: item[0])
        return out

    def get(self, name: PropertyName) -> Property:
        for prop in self.properties:
            if prop.name is name:
                return prop
        raise KeyError(name)

    def value(self, name: PropertyName) -> Value:
        return self.get(name).value

    def ladder(self, probe: ProbeKind) -> Ladder | None:
        return next((ladder for ladder in self.ladders if ladder.probe is probe), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "profile",
            "host": self.host,
            "target": self.target,
            "port": self.port,
            "source": self.source,
            "quick": self.quick,
            "started_ns": self.started_ns,
            "elapsed_s": self.elapsed_s,
            "interrupted": self.interrupted,
            "reason": None if self.reason is None else self.reason.value,
            "properties": [prop.name.value for prop in self.properties],
        }
        for prop in self.properties:
            out[prop.name.value] = prop.to_dict()
        out["match"] = self.match.to_dict()
        out["notes"] = list(self.notes)
        out["ladders"] = [ladder.to_dict() for ladder in self.ladders]
        return out
