"""The SYN probe: one SYN out, one validated answer (or silence) back.

A sans-IO state machine in the style of h11 and aioquic: the engine calls ``start``,
``receive``, ``handle_timer`` with the current time and carries out what the probe asks
(``segments_to_send``, ``next_deadline``); the probe never reads a clock or touches a socket.

Which answers count (after zmap's validate.c):
- SYN/ACK whose ack is ISN+1: the port is open;
- RST whose ack is ISN or ISN+1 (Linux sends RST/ACK, seq 0, ack ISN+1): closed;
- an ICMP error quoting our 4-tuple and our ISN: destination unreachable means filtered,
  time exceeded means the probe expired on the way. Other ICMP errors quoting the SYN
  (redirect, source quench, parameter problem, packet too big) are not errors of reachability
  (``IcmpError.decides_verdict``): they are kept as notices and the probe goes on waiting.
Anything else on the probe's port proves nothing: it is counted as invalid, by kind
(``prober.core.strays``: the kinds, notices and JSON every probe kind shares), and never
decides or changes a verdict. The ISN is a keyed hash per probe, so a
late answer to an earlier probe is never credited to a later one, and an off-path forger has
one chance in 2^31 per packet to hit an acceptable ack.
"""

from __future__ import annotations

import functools
import ipaddress
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from prober.core.packets import TcpTemplate

# Re-exported: IcmpReply and Stray are the syn result's vocabulary as much as any probe's.
from prober.core.strays import (
    IcmpNotices,
    IcmpReply,
    Stray,
    StrayCounts,
    added_up,
    kinds_json,
    notice_json,
    off_tuple_kind,
    stray_json,
)
from prober.core.timing import Clock, Rtt, Stamp, rtt_between
from prober.core.wire import IcmpKind, Packet, TcpFlags

__all__ = [
    "KEPT_PER_KIND",
    "REASON_RANK",
    "STATE_OF_REASON",
    "IcmpReply",
    "PortState",
    "Reason",
    "RttSummary",
    "Stray",
    "SynPhase",
    "SynProbe",
    "SynProbeResult",
    "SynRun",
    "TcpReply",
    "summarize",
]


class PortState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    FILTERED = "filtered"
    UNKNOWN = "unknown"  # not sent, interrupted, or expired in transit


class Reason(StrEnum):
    SYN_ACK = "syn-ack"
    RST = "rst"
    ICMP_UNREACHABLE = "icmp-unreachable"
    ICMP_TIME_EXCEEDED = "icmp-time-exceeded"
    NO_RESPONSE = "no-response"
    SEND_FAILED = "send-failed"
    INTERRUPTED = "interrupted"
    UNRESOLVED = "unresolved"  # scan: a target name that did not resolve (nothing sent)


# The best answer seen decides a run's verdict (and the CLI's exit status): an open port
# beats a closed one, a closed one any ICMP error, and any answer silence.
REASON_RANK: dict[Reason, int] = {
    Reason.SYN_ACK: 0,
    Reason.RST: 1,
    Reason.ICMP_UNREACHABLE: 2,
    Reason.ICMP_TIME_EXCEEDED: 3,
    Reason.NO_RESPONSE: 4,
    Reason.INTERRUPTED: 5,
    Reason.SEND_FAILED: 6,
    Reason.UNRESOLVED: 7,
}

STATE_OF_REASON: dict[Reason, PortState] = {
    Reason.SYN_ACK: PortState.OPEN,
    Reason.RST: PortState.CLOSED,
    Reason.ICMP_UNREACHABLE: PortState.FILTERED,
    Reason.ICMP_TIME_EXCEEDED: PortState.UNKNOWN,
    Reason.NO_RESPONSE: PortState.FILTERED,
    Reason.INTERRUPTED: PortState.UNKNOWN,
    Reason.SEND_FAILED: PortState.UNKNOWN,
    Reason.UNRESOLVED: PortState.UNKNOWN,
}


# A probe keeps this many packets of each kind for pcap output; a flood is counted, not kept.
KEPT_PER_KIND = 16


_RST, _ACK, _SYN = int(TcpFlags.RST), int(TcpFlags.ACK), int(TcpFlags.SYN)


@functools.lru_cache(maxsize=1024)
def _address(packed: bytes) -> str:
    # Cached: a run renders the same few addresses into every result.
    return str(ipaddress.ip_address(packed))


@dataclass(frozen=True, slots=True)
class TcpReply:
    """What the target's TCP answered: the fields hping3 and nping print, and the options."""

    flags: str
    seq: int
    ack: int
    ttl: int
    window: int
    ip_id: int | None
    length: int
    mss: int | None
    window_scale: int | None
    sack_permitted: bool
    tsval: int | None
    tsecr: int | None
    options: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "flags": self.flags,
            "seq": self.seq,
            "ack": self.ack,
            "ttl": self.ttl,
            "window": self.window,
            "ip_id": self.ip_id,
            "length": self.length,
            "mss": self.mss,
            "window_scale": self.window_scale,
            "sack_permitted": self.sack_permitted,
            "tsval": self.tsval,
            "tsecr": self.tsecr,
            "options": self.options,
        }


@dataclass(frozen=True, slots=True)
class SynProbeResult:
    """The outcome of one SYN."""

    probe: int  # 1-based number within the run, like ping's icmp_seq
    target: str
    port: int
    source: str
    source_port: int
    state: PortState
    reason: Reason
    rtt: Rtt | None
    sent_ns: int | None  # CLOCK_REALTIME of the send, on the RTT's clock
    received_ns: int | None
    tcp: TcpReply | None = None
    icmp: IcmpReply | None = None
    duplicates: int = 0  # further valid copies of the answer (e.g. SYN/ACK retransmissions)
    late: int = 0  # valid answers that came after the probe gave up waiting
    error: str | None = None  # why the SYN could not be sent
    # ICMP errors quoting the SYN that are not errors of reachability, and their first few.
    notices: int = 0
    icmp_notices: tuple[IcmpReply, ...] = ()
    # Packets on the probe's port that proved nothing, by kind (non-zero, in Stray's order).
    invalid_by_kind: Mapping[Stray, int] = field(default_factory=dict)
    # (time_ns, IP packet) of the SYN and of every valid answer, for pcap output.
    wire: tuple[tuple[int, bytes], ...] = field(default=(), repr=False, compare=False)
    # The clock of sent_ns/received_ns: the RTT's, or the send's own when nothing answered.
    clock: Clock | None = None

    @property
    def answered(self) -> bool:
        return self.reason not in (
            Reason.NO_RESPONSE, Reason.SEND_FAILED, Reason.INTERRUPTED, Reason.UNRESOLVED
        )

    @property
    def invalid(self) -> int:
        """Packets to the probe's port that proved nothing (``invalid_by_kind`` added up)."""
        return sum(self.invalid_by_kind.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "probe",
            "probe": self.probe,
            "target": self.target,
            "port": self.port,
            "source": self.source,
            "source_port": self.source_port,
            "state": self.state.value,
            "reason": self.reason.value,
            "rtt_us": None if self.rtt is None else round(self.rtt.us, 3),
            "clock": None if self.clock is None else self.clock.value,
            "sent_ns": self.sent_ns,
            "received_ns": self.received_ns,
            "tcp": None if self.tcp is None else self.tcp.to_dict(),
            "icmp": None if self.icmp is None else self.icmp.to_dict(),
            "duplicates": self.duplicates,
            "late": self.late,
            **notice_json(self.notices, self.icmp_notices),
            **stray_json(self.invalid_by_kind),
            "error": self.error,
        }


class SynPhase(Enum):
    IDLE = "idle"
    SENT = "sent"
    DONE = "done"


@dataclass(slots=True)
class SynProbe:
    """One SYN to one target, validated by its ISN.

    Args:
        number: the probe's 1-based number within its run.
        template: the SYN template (family, TTL, options) to build from.
        src, dst: packed addresses; sport, dport: ports.
        isn: the keyed initial sequence number (see ``IsnKey``).
        timeout: seconds to wait for an answer after the send.
        tsval: the TSval to carry, when the template has timestamps.
    """

    number: int
    template: TcpTemplate
    src: bytes
    dst: bytes
    sport: int
    dport: int
    isn: int
    timeout: float
    tsval: int = 0
    phase: SynPhase = SynPhase.IDLE
    _outbox: list[bytes] = field(default_factory=list)
    _deadline: float | None = None
    _sent: Stamp | None = None
    _received: Stamp | None = None
    _reason: Reason | None = None
    _reply: Packet | None = None
    _duplicates: int = 0
    _late: int = 0
    _syn: bytes = b""
    _answers: list[tuple[Stamp, bytes]] = field(default_factory=list)
    _kept: Counter[str] = field(default_factory=Counter)  # packets kept in _answers, by kind
    _notices: IcmpNotices = field(default_factory=IcmpNotices)
    _invalid: StrayCounts = field(default_factory=StrayCounts)
    _error: str | None = None
    _result: SynProbeResult | None = None

    # -- inputs -------------------------------------------------------------------------
    def start(self, now: float) -> None:
        if self.phase is not SynPhase.IDLE:
            raise RuntimeError("probe already started")
        self._syn = self.template.build(
            self.src, self.dst, self.sport, self.dport, self.isn, 0, self.tsval
        )
        self._outbox.append(self._syn)
        self._deadline = now + self.timeout
        self.phase = SynPhase.SENT

    def sent(self, index: int, stamp: Stamp) -> None:
        """The engine sent segment ``index`` (always 0 here) at ``stamp``."""
        self._sent = stamp

    def send_kernel_stamp(self, index: int, kernel_ns: int) -> None:
        """The kernel TX timestamp of segment ``index`` arrived (it may follow the answer)."""
        if self._sent is not None:
            self._sent = self._sent.with_kernel(kernel_ns)
            self._result = None

    def send_failed(self, index: int, error: str) -> None:
        self._error = error
        self._finish(Reason.SEND_FAILED)

    def receive(self, packet: Packet, now: float, stamp: Stamp) -> bool:
        """Offer a packet routed to this probe's 4-tuple; True if it answers this probe.

        A packet refused here may belong to another probe on the same 4-tuple (a fixed
        source port): the engine offers it to each, and calls ``count_invalid`` on one
        if none takes it.
        """
        if self.phase is SynPhase.IDLE:
            return False  # nothing sent: nothing can answer it
        if (self._deadline is not None and now >= self._deadline
                and not self._arrived_in_time(stamp)):
            # The timeout came first (the engine's timer had not run yet): the answer is
            # late, whichever of the two the event loop happened to take first.
            self.handle_timer(now)
        icmp = packet.icmp
        if icmp is not None and not icmp.decides_verdict and self._quotes_our_syn(packet):
            self._notice(packet, stamp)
            return True
        reason = self._classify(packet)
        if reason is None:
            return False
        if self._reason is Reason.NO_RESPONSE or self._reason is Reason.INTERRUPTED:
            # Late: the probe already gave up. Count it, never rewrite the verdict.
            self._late += 1
            self._keep("late", stamp, packet)
            return True
        if self._reason is not None:
            if self._reason is not reason:
                # Proven, but contradicting the first answer (an on-path forger, or a
                # middlebox answering for the host): the first answer stands, and this one
                # is refused, so it is counted as invalid (``Stray.CONFLICTING``).
                return False
            # A second valid answer: the peer retransmitted (or the path duplicated) it.
            self._duplicates += 1
            self._keep("duplicate", stamp, packet)
            return True
        self._keep("answer", stamp, packet)
        self._reply = packet
        self._received = stamp
        self._finish(reason)
        return True

    def count_invalid(self, packet: Packet) -> None:
        """Count a packet on this probe's port that proved nothing (the engine calls this
        for packets that no probe on the 4-tuple took, and for strays to this local port).
        """
        self._invalid.count(self._stray_kind(packet))
        self._result = None

    def _arrived_in_time(self, stamp: Stamp) -> bool:
        """Whether a packet read after the deadline had arrived before it: its arrival stamp
        within ``timeout`` of the send, both on CLOCK_REALTIME (the kernel's stamps when
        there are, else the user-space ones, which can only make the gap longer). A loop
        that fell behind reads answers late; it must not turn them into silence."""
        sent = self._sent
        if sent is None or self.phase is not SynPhase.SENT:
            return False
        gap = stamp.best_ns - sent.best_ns
        return 0 <= gap <= self.timeout * 1e9

    def handle_timer(self, now: float) -> None:
        if self.phase is SynPhase.SENT and self._deadline is not None and now >= self._deadline:
            self._finish(Reason.NO_RESPONSE)

    def interrupt(self) -> None:
        """Stop waiting (Ctrl-C): an unanswered probe is reported as interrupted, not lost."""
        if self.phase is not SynPhase.DONE:
            self._finish(Reason.INTERRUPTED)

    # -- outputs ------------------------------------------------------------------------
    def segments_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self) -> float | None:
        return self._deadline if self.phase is SynPhase.SENT else None

    @property
    def done(self) -> bool:
        return self.phase is SynPhase.DONE

    def result(self) -> SynProbeResult:
        if self._reason is None:
            raise RuntimeError("probe has no result yet")
        if self._result is None:
            self._result = self._build_result(self._reason)
        return self._result

    def outcome(self) -> tuple[Reason, Rtt | None, str | None]:
        """The verdict, the RTT and the send error without building the full result (the
        monitor needs only these, 10,000 times a second)."""
        if self._reason is None:
            raise RuntimeError("probe has no result yet")
        if self._result is not None:
            return self._reason, self._result.rtt, self._error
        rtt = None
        if self._sent is not None and self._received is not None:
            rtt = rtt_between(self._sent, self._received)
        return self._reason, rtt, self._error

    # -- internals ----------------------------------------------------------------------
    def _finish(self, reason: Reason) -> None:
        self._reason = reason
        self._deadline = None
        self.phase = SynPhase.DONE

    def _keep(self, kind: str, stamp: Stamp, packet: Packet) -> None:
        """Keep a packet for pcap output, at most ``KEPT_PER_KIND`` of each kind."""
        self._result = None
        if self._kept[kind] < KEPT_PER_KIND:
            self._kept[kind] += 1
            self._answers.append((stamp, packet.raw))

    def _notice(self, packet: Packet, stamp: Stamp) -> None:
        self._notices.add(packet)
        self._keep("notice", stamp, packet)

    def _classify(self, packet: Packet) -> Reason | None:
        """The answer a packet proves, or None if it proves nothing (``_stray_kind`` says
        why). An ICMP error that may not decide a verdict is never an answer."""
        tcp = packet.tcp
        if tcp is not None:
            if packet.src != self.dst or tcp.sport != self.dport or tcp.dport != self.sport:
                return None
            flags = int(tcp.flags)  # int arithmetic: IntFlag's costs ~2 µs per operation
            if flags & _RST:
                if flags & _ACK and tcp.ack in (self.isn, (self.isn + 1) & 0xFFFFFFFF):
                    return Reason.RST
                return None
            if flags & _SYN and flags & _ACK:
                return Reason.SYN_ACK if tcp.ack == (self.isn + 1) & 0xFFFFFFFF else None
            return None
        icmp = packet.icmp
        if icmp is None or not icmp.decides_verdict or not self._quotes_our_syn(packet):
            return None
        if icmp.kind is IcmpKind.UNREACHABLE:
            return Reason.ICMP_UNREACHABLE
        return Reason.ICMP_TIME_EXCEEDED

    def _quotes_our_syn(self, packet: Packet) -> bool:
        assert packet.icmp is not None
        quoted = packet.icmp.quoted
        return (
            quoted.dst == self.dst
            and quoted.src == self.src
            and quoted.sport == self.sport
            and quoted.dport == self.dport
            and quoted.seq == self.isn
        )

    def _stray_kind(self, packet: Packet) -> Stray:
        """Why ``receive`` refused a packet."""
        if self._reason is not None and self._classify(packet) is not None:
            return Stray.CONFLICTING
        off_tuple = off_tuple_kind(packet, self.src, self.dst, self.sport, self.dport)
        if off_tuple is not None:
            return off_tuple
        tcp = packet.tcp
        if tcp is None:
            return Stray.ICMP_NOT_OURS  # quoting our 4-tuple, but not our SYN's ISN
        syn_ack = TcpFlags.SYN | TcpFlags.ACK
        if tcp.flags & TcpFlags.RST or tcp.flags & syn_ack == syn_ack:
            return Stray.WRONG_ACK
        return Stray.OTHER_SEGMENT

    def _build_result(self, reason: Reason) -> SynProbeResult:
        rtt: Rtt | None = None
        sent_ns = received_ns = None
        clock: Clock | None = None
        if self._sent is not None and self._received is not None:
            rtt = rtt_between(self._sent, self._received)
            clock = rtt.clock
            kernel = rtt.clock is Clock.KERNEL
            sent_ns = self._sent.kernel_ns if kernel else self._sent.user_ns
            received_ns = self._received.kernel_ns if kernel else self._received.user_ns
        elif self._sent is not None:
            sent_ns = self._sent.best_ns
            clock = Clock.USER if self._sent.kernel_ns is None else Clock.KERNEL
        tcp_reply = icmp_reply = None
        packet = self._reply
        if packet is not None and packet.tcp is not None:
            seg = packet.tcp
            opts = seg.options
            tcp_reply = TcpReply(
                flags=seg.flags.compact(),
                seq=seg.seq,
                ack=seg.ack,
                ttl=packet.ttl,
                window=seg.window,
                ip_id=packet.ip_id,
                length=packet.length,
                mss=opts.mss,
                window_scale=opts.window_scale,
                sack_permitted=opts.sack_permitted,
                tsval=None if opts.timestamp is None else opts.timestamp[0],
                tsecr=None if opts.timestamp is None else opts.timestamp[1],
                options=opts.order,
            )
        elif packet is not None and packet.icmp is not None:
            icmp_reply = IcmpReply.of(packet)
        return SynProbeResult(
            probe=self.number,
            target=_address(self.dst),
            port=self.dport,
            source=_address(self.src),
            source_port=self.sport,
            state=STATE_OF_REASON[reason],
            reason=reason,
            rtt=rtt,
            sent_ns=sent_ns,
            received_ns=received_ns,
            tcp=tcp_reply,
            icmp=icmp_reply,
            duplicates=self._duplicates,
            late=self._late,
            error=self._error,
            notices=self._notices.count,
            icmp_notices=self._notices.kept(),
            invalid_by_kind=self._invalid.by_kind(),
            wire=self._wire(),
            clock=clock,
        )

    def _wire(self) -> tuple[tuple[int, bytes], ...]:
        if self._sent is None:
            return ()
        answers = [(stamp.best_ns, raw) for stamp, raw in self._answers if raw]
        return ((self._sent.best_ns, self._syn), *answers)


@dataclass(frozen=True, slots=True)
class RttSummary:
    """min/avg/max/mdev as ping prints them (mdev is the population standard deviation)."""

    count: int
    min_us: float
    avg_us: float
    max_us: float
    mdev_us: float
    clock: Clock | None  # None when the RTTs came from both clocks

    @classmethod
    def of(cls, rtts: Sequence[Rtt]) -> RttSummary | None:
        if not rtts:
            return None
        values = [r.us for r in rtts]
        clocks = {r.clock for r in rtts}
        return cls(
            count=len(values),
            min_us=min(values),
            avg_us=statistics.fmean(values),
            max_us=max(values),
            mdev_us=statistics.pstdev(values),
            clock=clocks.pop() if len(clocks) == 1 else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "min_us": round(self.min_us, 3),
            "avg_us": round(self.avg_us, 3),
            "max_us": round(self.max_us, 3),
            "mdev_us": round(self.mdev_us, 3),
            "clock": None if self.clock is None else self.clock.value,
        }


@dataclass(frozen=True, slots=True)
class SynRun:
    """A run of SYN probes to one target and its verdict: what ``prober syn`` summarises."""

    host: str  # as the user wrote it
    target: str  # the address probed
    port: int
    probes: tuple[SynProbeResult, ...]
    invalid: int  # packets on the probes' ports that proved nothing (the engine's count)
    kernel_drops: int  # frames the kernel dropped from the capture socket's queue during the run

    @property
    def sent(self) -> int:
        return sum(1 for p in self.probes if p.reason is not Reason.SEND_FAILED)

    @property
    def unsent(self) -> int:
        return sum(1 for p in self.probes if p.reason is Reason.SEND_FAILED)

    @property
    def answered(self) -> int:
        return sum(1 for p in self.probes if p.answered)

    @property
    def interrupted(self) -> int:
        return sum(1 for p in self.probes if p.reason is Reason.INTERRUPTED)

    @property
    def lost(self) -> int:
        return sum(1 for p in self.probes if p.reason is Reason.NO_RESPONSE)

    @property
    def invalid_by_kind(self) -> dict[Stray, int]:
        """The probes' invalid packets by kind (they add up to ``invalid``)."""
        return added_up(probe.invalid_by_kind for probe in self.probes)

    @property
    def notices(self) -> int:
        """ICMP errors that quoted a SYN but may not decide a verdict (see ``IcmpKind``)."""
        return sum(p.notices for p in self.probes)

    @property
    def duplicates(self) -> int:
        return sum(p.duplicates for p in self.probes)

    @property
    def late(self) -> int:
        return sum(p.late for p in self.probes)

    @property
    def best(self) -> SynProbeResult | None:
        """The probe whose answer decides the verdict (best answer wins), or None if no probe."""
        if not self.probes:
            return None
        return min(self.probes, key=lambda p: (REASON_RANK[p.reason], p.probe))

    @property
    def reason(self) -> Reason | None:
        best = self.best
        return None if best is None else best.reason

    @property
    def state(self) -> PortState:
        best = self.best
        return PortState.UNKNOWN if best is None else best.state

    @property
    def rtt(self) -> RttSummary | None:
        return RttSummary.of([p.rtt for p in self.probes if p.rtt is not None])

    def wire(self) -> list[tuple[int, bytes]]:
        """Every SYN sent and every valid answer, as (time_ns, IP packet), for pcap output."""
        return [item for probe in self.probes for item in probe.wire]

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        rtt = self.rtt
        return {
            "type": "summary",
            "host": self.host,
            "target": self.target,
            "port": self.port,
            "state": self.state.value,
            "reason": None if self.reason is None else self.reason.value,
            "icmp": None if best is None or best.icmp is None else best.icmp.to_dict(),
            "sent": self.sent,
            "answered": self.answered,
            "lost": self.lost,
            "unsent": self.unsent,
            "interrupted": self.interrupted,
            "invalid": self.invalid,
            "invalid_by_kind": kinds_json(self.invalid_by_kind),
            "duplicates": self.duplicates,
            "late": self.late,
            "notices": self.notices,
            "kernel_drops": self.kernel_drops,
            "rtt": None if rtt is None else rtt.to_dict(),
        }


def summarize(
    host: str,
    target: str,
    port: int,
    probes: Iterable[SynProbeResult],
    invalid: int = 0,
    kernel_drops: int = 0,
) -> SynRun:
    return SynRun(host, target, port, tuple(probes), invalid, kernel_drops)
