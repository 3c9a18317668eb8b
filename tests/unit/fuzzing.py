"""What the fuzz tests share: a sans-IO harness for every probe, its invariants, and packets.

The Hypothesis tests (test_fuzz_*.py) and the long job (bench/fuzz, atheris) drive the same
harness through a ``Chooser``: Hypothesis draws each choice, atheris consumes fuzzer bytes.
The harness plays the engine on virtual time (prober/engine/engine.py ``DrivenProbe``): it
starts a probe, hands every segment it asks to send to ``sent`` (or ``send_failed``), delivers
packets at increasing times, fires ``handle_timer`` at each deadline as the one timer would,
and checks after every step:

- no exception escapes a probe;
- ``done`` is sticky, and ``next_deadline`` is None or not before now;
- times in results never go backwards (records in order, RTTs and intervals >= 0);
- every TCP state a probe reports is reachable through the transition table
  (prober/core/states.py) from where that side starts, and each change of state is a path
  in the table.

The CI sample is small (``FUZZ_SETTINGS``); ``PROBER_FUZZ_PROFILE=long`` or
``PROBER_FUZZ_EXAMPLES=N`` raises it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, TypeVar

from hypothesis import HealthCheck, settings

from prober.core.close import CloseMode, CloseProbe
from prober.core.halfopen import CookieCheckProbe, HalfOpenProbe
from prober.core.packets import TcpTemplate
from prober.core.parse import parse_packet
from prober.core.states import TRANSITIONS, TcpState
from prober.core.syn import SynProbe
from prober.core.timing import Stamp
from prober.core.wire import (
    IPPROTO_TCP,
    IcmpError,
    MalformedPacket,
    Packet,
    QuotedHeader,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    icmp_kind,
)

T = TypeVar("T")

# -- the sample size -------------------------------------------------------------------------
# Hypothesis profiles, chosen by PROBER_FUZZ_PROFILE (never loaded globally, so the other
# tests keep theirs): "ci", the default, a few seconds per test and the same sample every run
# so it never flakes; "long", for a run by hand. PROBER_FUZZ_EXAMPLES=N overrides the count.
_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}
settings.register_profile(
    "prober-fuzz-ci", max_examples=150, stateful_step_count=40, derandomize=True, **_COMMON
)
settings.register_profile(
    "prober-fuzz-long", max_examples=20_000, stateful_step_count=80, **_COMMON
)
FUZZ_PROFILE = os.environ.get("PROBER_FUZZ_PROFILE", "ci")
if FUZZ_PROFILE not in ("ci", "long"):
    raise ValueError(f"PROBER_FUZZ_PROFILE={FUZZ_PROFILE!r}: expected ci or long")
FUZZ_EXAMPLES = int(os.environ.get("PROBER_FUZZ_EXAMPLES", "0")) or None
FUZZ_SETTINGS = settings(
    settings.get_profile(f"prober-fuzz-{FUZZ_PROFILE}"),
    **({} if FUZZ_EXAMPLES is None else {"max_examples": FUZZ_EXAMPLES, "derandomize": False}),
)


class Chooser(Protocol):
    """Where a fuzzer's choices come from."""

    def integer(self, low: int, high: int) -> int: ...
    def blob(self, most: int) -> bytes: ...


def pick(chooser: Chooser, options: Sequence[T]) -> T:
    return options[chooser.integer(0, len(options) - 1)]


# -- the table's graph -------------------------------------------------------------------------
_EDGES: dict[TcpState, set[TcpState]] = {state: set() for state in TcpState}
for (_before, _event), _after in TRANSITIONS.items():
    _EDGES[_before].add(_after)


def reachable(start: TcpState) -> frozenset[TcpState]:
    """States the transition table reaches from ``start`` (``start`` included)."""
    seen = {start}
    todo = [start]
    while todo:
        for after in _EDGES[todo.pop()]:
            if after not in seen:
                seen.add(after)
                todo.append(after)
    return frozenset(seen)


REACHABLE = {state: reachable(state) for state in TcpState}
OUR_START, PEER_START = TcpState.CLOSED, TcpState.LISTEN


class InvariantBroken(AssertionError):
    """A probe broke one of the invariants above (the message says which)."""


# -- probes ------------------------------------------------------------------------------------
class ProbeKind(Enum):
    SYN = "syn"
    HALFOPEN = "halfopen"
    COOKIE_CHECK = "cookie-check"
    CLOSE_WE_CLOSE = "close-we-close"
    CLOSE_PEER_CLOSES = "close-peer-closes"


SRC = {4: bytes([198, 18, 0, 1]), 6: bytes.fromhex("20010002000000000000000000000001")}
DST = {4: bytes([198, 18, 0, 18]), 6: bytes.fromhex("20010002000000000000000000010002")}
OTHER = {4: bytes([198, 18, 0, 2]), 6: bytes.fromhex("20010002000000000000000000000002")}
SPORT, DPORT = 40000, 80
ISN = 0xFFFFFFF0  # near the wrap, where sequence arithmetic breaks first
PEER_ISN = 0x7FFFFFF8
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
_TEMPLATES: dict[int, TcpTemplate] = {}


def _template(version: int) -> TcpTemplate:
    if version not in _TEMPLATES:
        _TEMPLATES[version] = TcpTemplate(version, TcpFlags.SYN)
    return _TEMPLATES[version]


def make_probe(kind: ProbeKind, version: int) -> Any:
    """A probe of ``kind`` with short timers, so a few steps reach every deadline."""
    src, dst = SRC[version], DST[version]
    common: dict[str, Any] = {"src": src, "dst": dst, "sport": SPORT, "dport": DPORT, "isn": ISN}
    if kind is ProbeKind.SYN:
        return SynProbe(number=1, template=_template(version), timeout=1.0, **common)
    if kind is ProbeKind.HALFOPEN:
        return HalfOpenProbe(template=_template(version), max_wait=20.0, **common)
    if kind is ProbeKind.COOKIE_CHECK:
        return CookieCheckProbe(**common)
    mode = CloseMode.WE_CLOSE if kind is ProbeKind.CLOSE_WE_CLOSE else CloseMode.PEER_CLOSES
    return CloseProbe(
        version=version, mode=mode, send_data=REQUEST, msl=1.0, max_wait=10.0, **common
    )


# -- packets ------------------------------------------------------------------------------------
_PLAUSIBLE_FLAGS = ("SA", "A", "PA", "FA", "FPA", "R", "RA", "S", "F")
_FLAG_LETTERS = {"S": TcpFlags.SYN, "A": TcpFlags.ACK, "F": TcpFlags.FIN, "R": TcpFlags.RST,
                 "P": TcpFlags.PSH}


def _flags(letters: str) -> TcpFlags:
    flags = TcpFlags(0)
    for letter in letters:
        flags |= _FLAG_LETTERS[letter]
    return flags


def _options(chooser: Chooser) -> TcpOptions:
    shape = chooser.integer(0, 3)
    if shape == 0:
        return TcpOptions()
    timestamp = (chooser.integer(0, 2**32 - 1), chooser.integer(0, 2**32 - 1))
    if shape == 1:
        return TcpOptions(timestamp=timestamp, order="NNT")
    return TcpOptions(
        mss=chooser.integer(0, 65535),
        window_scale=chooser.integer(0, 255),
        sack_permitted=bool(chooser.integer(0, 1)),
        timestamp=timestamp if shape == 2 else None,
        order="MSTNW" if shape == 2 else "MSNW",
    )


def _tcp_packet(version: int, src: bytes, dst: bytes, segment: TcpSegment, ttl: int) -> Packet:
    length = (20 if version == 4 else 40) + 20 + len(segment.payload)
    return Packet(version, src, dst, ttl, 0 if version == 4 else None, length, tcp=segment,
                  raw=b"\x00" * 20)


def random_packet(chooser: Chooser, version: int) -> Packet:
    """Anything: any addresses of a few, any ports, numbers, flags, options and payload."""
    addresses = (SRC[version], DST[version], OTHER[version])
    if chooser.integer(0, 3) == 0:
        return icmp_packet(chooser, version, plausible=False)
    segment = TcpSegment(
        sport=pick(chooser, (DPORT, SPORT, chooser.integer(0, 65535))),
        dport=pick(chooser, (SPORT, DPORT, chooser.integer(0, 65535))),
        seq=chooser.integer(0, 2**32 - 1),
        ack=chooser.integer(0, 2**32 - 1),
        flags=TcpFlags(chooser.integer(0, 255)),
        window=chooser.integer(0, 65535),
        options=_options(chooser),
        payload=chooser.blob(64),
    )
    return _tcp_packet(version, pick(chooser, addresses), pick(chooser, addresses), segment,
                       chooser.integer(0, 255))


def plausible_packet(chooser: Chooser, version: int, sent_bytes: int) -> Packet:
    """What the peer could send: right addresses and ports, ack near ISN+1 (up to what we
    sent), seq near the peer's ISN, in-window data, and a plausible set of flags."""
    if chooser.integer(0, 5) == 0:
        return icmp_packet(chooser, version, plausible=True)
    flags = _flags(pick(chooser, _PLAUSIBLE_FLAGS))
    ack = (ISN + 1 + chooser.integer(-2, sent_bytes + 3)) & 0xFFFFFFFF
    seq_offset = chooser.integer(-3, 1 + 2 * len(REQUEST))
    seq = (PEER_ISN + (0 if flags & TcpFlags.SYN else 1) + seq_offset) & 0xFFFFFFFF
    payload = b"" if flags & (TcpFlags.SYN | TcpFlags.RST) else chooser.blob(40)
    segment = TcpSegment(DPORT, SPORT, seq, ack, flags, chooser.integer(0, 65535),
                         _options(chooser), payload)
    return _tcp_packet(version, DST[version], SRC[version], segment, 63)


def icmp_packet(chooser: Chooser, version: int, *, plausible: bool) -> Packet:
    """An ICMP error quoting our 4-tuple (plausible: with our ISN or a near one)."""
    types = (3, 11, 4, 5, 12) if version == 4 else (1, 3, 2, 4)
    icmp_type = pick(chooser, types) if plausible else chooser.integer(0, 255)
    if plausible:
        seq = (ISN + chooser.integer(0, 2)) & 0xFFFFFFFF
        quoted = QuotedHeader(SRC[version], DST[version], IPPROTO_TCP, SPORT, DPORT, seq)
    else:
        addresses = (SRC[version], DST[version], OTHER[version])
        quoted = QuotedHeader(
            pick(chooser, addresses), pick(chooser, addresses), pick(chooser, (6, 17, 1)),
            pick(chooser, (SPORT, DPORT, None, chooser.integer(0, 65535))),
            pick(chooser, (DPORT, SPORT, None, chooser.integer(0, 65535))),
            pick(chooser, (ISN, None, chooser.integer(0, 2**32 - 1))),
        )
    error = IcmpError(icmp_type, chooser.integer(0, 15), quoted, icmp_kind(version, icmp_type))
    source = pick(chooser, (OTHER[version], DST[version]))
    return Packet(version, source, SRC[version], 64, None, 96, icmp=error, raw=b"\x00" * 20)


# -- the harness ----------------------------------------------------------------------------------
@dataclass
class Harness:
    """One probe on virtual time, driven as the engine drives it, checked after every step."""

    kind: ProbeKind
    version: int
    now: float = 100.0
    probe: Any = None
    sent: list[bytes] = field(default_factory=list)  # every segment handed out, by index
    stamps: list[Stamp | None] = field(default_factory=list)  # None: the send failed
    fail_next: bool = False
    was_done: bool = False
    our_state: TcpState = OUR_START
    peer_state: TcpState = PEER_START
    steps: int = 0
    send_failures: bool = True  # whether ``step`` makes sends fail

    def __post_init__(self) -> None:
        self.probe = make_probe(self.kind, self.version)
        self.our_state, self.peer_state = OUR_START, PEER_START
        self.probe.start(self.now)
        self._carry_out()
        self.check()

    # -- what the engine does ----------------------------------------------------------------
    def _ns(self) -> int:
        return int(self.now * 1e9)

    def _carry_out(self) -> None:
        for segment in self.probe.segments_to_send():
            index = len(self.sent)
            self.sent.append(segment)
            if self.fail_next:
                self.fail_next = False
                self.stamps.append(None)
                self.probe.send_failed(index, "Operation not permitted")
            else:
                stamp = Stamp(self._ns() + 1_000)
                self.stamps.append(stamp)
                self.probe.sent(index, stamp)

    def advance(self, seconds: float) -> None:
        """Let time pass, firing the timer at each deadline on the way (as the engine does)."""
        end = self.now + seconds
        for _ in range(10_000):
            deadline = self.probe.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.probe.handle_timer(self.now)
            self._carry_out()
            self._check_deadline("after handle_timer")
            if self.probe.next_deadline() == deadline and not self.probe.done:
                raise InvariantBroken(f"handle_timer({self.now}) left its deadline {deadline}")
        else:
            raise InvariantBroken("the timer fired 10,000 times within one step")
        self.now = max(self.now, end)
        self.check()

    def deliver(self, packet: Packet, timer_first: bool = True) -> None:
        self.now += 1e-5  # every arrival later than anything before it
        stamp = Stamp(self._ns(), self._ns() - 500)
        deadline = self.probe.next_deadline()
        if timer_first and deadline is not None and deadline <= self.now:
            # The timer fires before the packet is read (the loop may also do the opposite).
            self.probe.handle_timer(self.now)
            self._carry_out()
        if not self.probe.receive(packet, self.now, stamp):
            count = getattr(self.probe, "count_invalid", None)
            if count is not None:
                count(packet)
        self._carry_out()
        self.check()

    def replay(self, chooser: Chooser) -> None:
        """One of our own segments, as sent (a reflection of our output) or mirrored."""
        if not self.sent:
            return
        packet = parse_packet(pick(chooser, self.sent))
        tcp = packet.tcp
        if tcp is not None and chooser.integer(0, 1):
            mirrored = TcpSegment(tcp.dport, tcp.sport, tcp.ack, (tcp.seq + 1) & 0xFFFFFFFF,
                                  tcp.flags, tcp.window, tcp.options, tcp.payload)
            packet = _tcp_packet(packet.version, packet.dst, packet.src, mirrored, packet.ttl)
        self.deliver(packet)

    def kernel_stamp(self, chooser: Chooser) -> None:
        """A TX timestamp for one of the sends (they come late, and may come twice)."""
        if not self.sent:
            return
        index = chooser.integer(0, len(self.sent) - 1)
        stamp = self.stamps[index]
        kernel_ns = self._ns() if stamp is None else stamp.user_ns + 2_000
        self.probe.send_kernel_stamp(index, kernel_ns)
        self._carry_out()
        self.check()

    def step(self, chooser: Chooser) -> None:
        """One step of any kind (the atheris driver's loop body)."""
        action = chooser.integer(0, 9)
        if action <= 1:
            self.advance(pick(chooser, (0.001, 0.1, 0.5, 1.0, 3.0, 7.0, 30.0)))
        elif action <= 4:
            packet = plausible_packet(chooser, self.version, len(REQUEST) + 1)
            timer_first = bool(chooser.integer(0, 1))
            self.deliver(packet, timer_first=timer_first)
        elif action <= 6:
            self.deliver(random_packet(chooser, self.version))
        elif action == 7:
            self.replay(chooser)
        elif action == 8:
            self.kernel_stamp(chooser)
        elif self.send_failures:
            self.fail_next = True  # the next segment the probe sends fails

    # -- invariants ------------------------------------------------------------------------------
    def _check_deadline(self, when: str) -> None:
        deadline = self.probe.next_deadline()
        if deadline is not None and deadline < self.now:
            raise InvariantBroken(f"deadline {deadline} before now {self.now} {when}")

    def check(self) -> None:
        self.steps += 1
        done = self.probe.done
        if self.was_done and not done:
            raise InvariantBroken("done went back to False")
        self.was_done = done
        self._check_deadline("after a step")
        if done:
            self.check_result(self.probe.result())
        states = self.reported_states()
        for side, (before, after) in states.items():
            self._check_state(side, before, after)

    def reported_states(self) -> dict[str, tuple[TcpState, TcpState]]:
        """The states the probe reports now (CloseProbe's attributes; the others report
        theirs in their results' records, checked in ``check_result``)."""
        probe = self.probe
        out: dict[str, tuple[TcpState, TcpState]] = {}
        if isinstance(probe, CloseProbe):
            out["our"] = (self.our_state, probe.our_state)
            out["peer"] = (self.peer_state, probe.peer_state)
            self.our_state, self.peer_state = probe.our_state, probe.peer_state
        return out

    def _check_state(self, side: str, before: TcpState, after: TcpState) -> None:
        start = OUR_START if side == "our" else PEER_START
        if not isinstance(after, TcpState):
            raise InvariantBroken(f"{side} state {after!r} is no TcpState")
        if after not in REACHABLE[start]:
            raise InvariantBroken(f"{side} state {after} is unreachable from {start}")
        if after not in REACHABLE[before]:
            raise InvariantBroken(f"{side} state went {before} -> {after}: no path in the table")

    def check_result(self, result: Any) -> None:
        rtt = getattr(result, "rtt", None)
        if rtt is not None and rtt.ns < 0:
            raise InvariantBroken(f"negative RTT {rtt}")
        records = getattr(result, "segments", ())
        cookie_check = getattr(result, "cookie_check", None)
        for series in (records, getattr(cookie_check, "segments", ())):
            self._check_records(series)
        peer_state = getattr(result, "peer_state", None)
        if peer_state is not None:
            self._check_state("peer", PEER_START, peer_state)
        times = [t for t, _ in getattr(result, "wire", ())]
        if times != sorted(times):
            raise InvariantBroken(f"pcap times go backwards: {times}")
        for arrival in getattr(result, "syn_acks", ()):
            if arrival.since_first_us < 0 or (arrival.interval_us or 0) < 0:
                raise InvariantBroken(f"SYN/ACK arrival before the previous one: {arrival}")

    def _check_records(self, records: Sequence[Any]) -> None:
        # Records come in handling order (prober/core/trace.py SegmentRecord): a segment that
        # arrived while we were sending has an earlier stamp than what we sent, so only each
        # direction's own times must never go backwards (failed sends have no time of their own).
        previous_time: dict[Any, int] = {}
        our, peer = OUR_START, PEER_START
        for record in records:
            if record.send_error is None:
                before = previous_time.get(record.direction)
                if before is not None and record.time_ns < before:
                    raise InvariantBroken(
                        f"record times go backwards: {before} then {record.time_ns}"
                        f" ({record.direction} {record.flags} {record.note!r})"
                    )
                previous_time[record.direction] = record.time_ns
            self._check_state("our", our, record.our_state)
            self._check_state("peer", peer, record.peer_state)
            our, peer = record.our_state, record.peer_state


def parse_or_malformed(data: bytes) -> Packet | None:
    """parse_packet's contract: a Packet, or MalformedPacket and nothing else."""
    try:
        packet = parse_packet(data)
    except MalformedPacket:
        return None
    if packet.version not in (4, 6):
        raise InvariantBroken(f"version {packet.version}")
    if packet.tcp is not None and packet.icmp is not None:
        raise InvariantBroken("both TCP and ICMP")
    if packet.tcp is not None and len(packet.tcp.payload) > len(data):
        raise InvariantBroken("payload longer than the packet")
    return packet


Driver = Callable[[Chooser], None]
