"""ChallengeProbe on virtual time against a model peer: no root, no sockets.

``Peer`` plays an established server by Linux's rules (net/ipv4/tcp_input.c,
tcp_validate_incoming: a RST at exactly RCV.NXT resets, one elsewhere in the window draws a
challenge ACK, a SYN draws one, an old segment a duplicate ACK; the last three share one
rate limit per socket, tcp_invalid_ratelimit), or by RFC 793's (knob ``rfc5961``). Its
segments are built with TcpTemplate and reach the probe through parse_packet. What is checked
is what a user reads: each role's answer, the evidence, the segments, the RATE interval.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, IPerror, TCPerror

from prober.core.challenge import (
    MIN_GAP_S,
    OUT_OF_WINDOW_OFFSET,
    PROBE_AT_S,
    RATE_COUNT,
    RATE_SPACING_S,
    ChallengeAnswer,
    ChallengeConnection,
    ChallengeProbe,
    ChallengeRole,
    StepKind,
    min_interval,
    script_for,
    summarize,
)
from prober.core.close import Handshake
from prober.core.packets import TcpTemplate
from prober.core.parse import parse_packet
from prober.core.timing import Stamp
from prober.core.trace import Direction
from prober.core.wire import TcpFlags, TcpSegment

MASK = 0xFFFFFFFF
F = TcpFlags
R = ChallengeRole
A = ChallengeAnswer
ADDRESSES = {4: ("198.18.0.1", "198.18.0.18"), 6: ("2001:2::1", "2001:2::18")}
SPORT, DPORT = 40001, 80
ISN = 0xFFFF_FF00  # our sequence space wraps: arithmetic must be modular
PEER_ISN = 0x1234_5678
START = 1000.0
PEER_WINDOW = 65535


@dataclass(frozen=True)
class PeerConfig:
    version: int = 4
    timestamps: bool = True
    rfc5961: bool = True  # False: RFC 793 (a RST in window resets, a SYN draws a RST)
    rate_limit_s: float = 0.5  # tcp_invalid_ratelimit
    answers_handshake: bool = True
    refuses: bool = False  # RST to our SYN (a closed port)
    silent_after_open: bool = False  # a firewall drops every answer once established
    lose_answers: frozenset[int] = frozenset()  # its answers once established (1-based)
    one_way_s: float = 0.001


class Peer:
    def __init__(self, config: PeerConfig) -> None:
        self.config = config
        src, dst = ADDRESSES[config.version]
        self.me = ipaddress.ip_address(dst).packed
        self.probe_addr = ipaddress.ip_address(src).packed
        self.state = "LISTEN"
        self.snd_nxt = (PEER_ISN + 1) & MASK
        self.rcv_nxt = 0
        self.timestamps = False
        self.ts_recent = 0
        self.last_oow: float | None = None
        self.answers = 0
        self.freed_by_exact_rst = False
        self.now = 0.0

    def build(self, flags: TcpFlags, seq: int, ack: int) -> bytes:
        ts = self.timestamps and not flags & F.RST
        window = 0 if flags & F.RST else 502
        return TcpTemplate(self.config.version, flags, window=window, timestamps=ts).build(
            self.me, self.probe_addr, DPORT, SPORT, seq & MASK, ack & MASK,
            round(self.now * 1000) & MASK, self.ts_recent,
        )

    def limited(self) -> bool:
        # __tcp_oow_rate_limited: one answer per rate_limit_s per socket
        if self.last_oow is not None and self.now - self.last_oow < self.config.rate_limit_s:
            return True
        self.last_oow = self.now
        return False

    def dupack(self) -> list[bytes]:
        return [] if self.limited() else [self.build(F.ACK, self.snd_nxt, self.rcv_nxt)]

    def receive(self, tcp: TcpSegment, now: float) -> list[bytes]:
        self.now = now
        if self.state in ("LISTEN", "SYN_RECEIVED"):
            return self._handshake(tcp)
        out = self._established(tcp) if self.state == "ESTABLISHED" else self._gone(tcp)
        kept = []
        for raw in out:
            self.answers += 1
            if self.config.silent_after_open or self.answers in self.config.lose_answers:
                continue
            kept.append(raw)
        return kept

    def _handshake(self, tcp: TcpSegment) -> list[bytes]:
        config = self.config
        if tcp.flags == F.SYN and self.state == "LISTEN":
            if not config.answers_handshake:
                return []
            if config.refuses:
                return [self.build(F.RST | F.ACK, 0, tcp.seq + 1)]
            self.rcv_nxt = (tcp.seq + 1) & MASK
            timestamp = tcp.options.timestamp
            self.timestamps = config.timestamps and timestamp is not None
            if timestamp is not None:
                self.ts_recent = timestamp[0]
            self.state = "SYN_RECEIVED"
            return [self.build(F.SYN | F.ACK, PEER_ISN, self.rcv_nxt)]
        if tcp.flags & F.ACK and tcp.ack == self.snd_nxt and self.state == "SYN_RECEIVED":
            self.state = "ESTABLISHED"
        return []

    def _established(self, tcp: TcpSegment) -> list[bytes]:
        flags, seq = tcp.flags, tcp.seq
        offset = (seq - self.rcv_nxt) & MASK
        in_window = offset < PEER_WINDOW
        if flags & F.RST:
            if offset == 0:
                self.state, self.freed_by_exact_rst = "GONE", True
                return []
            if not in_window:
                return []
            if self.config.rfc5961:
                return self.dupack()  # the challenge ACK
            self.state = "GONE"
            return []
        if flags & F.SYN:
            if self.config.rfc5961:
                return self.dupack()
            if in_window:
                self.state = "GONE"
                return [self.build(F.RST | F.ACK, 0, seq + 1)]
            return self.dupack()
        if offset >= 0x8000_0000:  # old: unacceptable, a duplicate ACK
            return self.dupack()
        if tcp.payload and offset == 0:
            self.rcv_nxt = (self.rcv_nxt + len(tcp.payload)) & MASK
            return [self.build(F.ACK, self.snd_nxt, self.rcv_nxt)]
        return []

    def _gone(self, tcp: TcpSegment) -> list[bytes]:
        # The listener: an ACK draws a RST at its ack number.
        if tcp.flags & F.RST:
            return []
        if tcp.flags & F.ACK:
            return [self.build(F.RST, tcp.ack, 0)]
        return [self.build(F.RST | F.ACK, 0, tcp.seq + 1)]


@dataclass
class Handed:
    at: float
    tcp: TcpSegment


@dataclass
class Run:
    probe: ChallengeProbe
    peer: Peer
    fail: frozenset[int] = frozenset()
    now: float = START
    handed: list[Handed] = field(default_factory=list)
    _flight: list[tuple[float, int, bool, bytes]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def _flush(self) -> None:
        for raw in self.probe.segments_to_send():
            index = len(self.handed)
            tcp = parse_packet(raw).tcp
            assert tcp is not None
            self.handed.append(Handed(self.now, tcp))
            if index in self.fail:
                self.probe.send_failed(index, "No buffer space available")
                continue
            ns = round(self.now * 1e9)
            self.probe.sent(index, Stamp(ns + 1000))
            self.probe.send_kernel_stamp(index, ns)
            self.push(self.now + self.peer.config.one_way_s, True, raw)

    def push(self, at: float, to_peer: bool, raw: bytes) -> None:
        heapq.heappush(self._flight, (at, next(self._order), to_peer, raw))

    def _deliver(self) -> None:
        at, _, to_peer, raw = heapq.heappop(self._flight)
        self.now = max(self.now, at)
        if to_peer:
            tcp = parse_packet(raw).tcp
            assert tcp is not None
            for answer in self.peer.receive(tcp, self.now):
                self.push(self.now + self.peer.config.one_way_s, False, answer)
        elif not self.probe.done:
            ns = round(self.now * 1e9)
            self.probe.receive(parse_packet(raw), self.now, Stamp(ns + 1000, ns))

    def run(self, *, interrupt_at: float | None = None, max_steps: int = 10_000) -> None:
        self.probe.start(self.now)
        self._flush()
        for _ in range(max_steps):
            if self.probe.done:
                break
            deadline = self.probe.next_deadline()
            arrival = self._flight[0][0] if self._flight else None
            times = [t for t in (deadline, arrival) if t is not None]
            assert times, "nothing to wait for, yet not done"
            t = min(times)
            assert t <= START + 30.0, "virtual time ran past 30 s"
            if interrupt_at is not None and t >= START + interrupt_at:
                self.now = START + interrupt_at
                self.probe.interrupt(self.now)
            elif arrival is not None and arrival <= t:
                self._deliver()
            else:
                self.now = max(self.now, t)
                self.probe.handle_timer(self.now)
            self._flush()
            later = self.probe.next_deadline()
            assert later is None or later > self.now or self.probe.done, "a deadline lags"
        else:
            raise AssertionError("the probe did not end")
        while self._flight:  # what is still on its way reaches the peer
            self._deliver()

    @property
    def result(self) -> ChallengeConnection:
        return self.probe.result()


def make_probe(role: ChallengeRole, version: int = 4, **options: object) -> ChallengeProbe:
    src, dst = ADDRESSES[version]
    return ChallengeProbe(
        role=role, version=version, src=ipaddress.ip_address(src).packed,
        dst=ipaddress.ip_address(dst).packed, sport=SPORT, dport=DPORT, isn=ISN,
        **options,  # type: ignore[arg-type]
    )


def run_role(
    role: ChallengeRole, config: PeerConfig | None = None, *, fail: frozenset[int] = frozenset(),
    interrupt_at: float | None = None, **options: object,
) -> Run:
    config = config or PeerConfig()
    run = Run(make_probe(role, config.version, **options), Peer(config), fail)
    run.run(interrupt_at=interrupt_at)
    return run


OUR_SND_NXT = (ISN + 1) & MASK
PEER_SND_NXT = (PEER_ISN + 1) & MASK


# -- what each role sends ---------------------------------------------------------------------
@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("role", list(ChallengeRole))
def test_every_segment_after_the_handshake_is_the_design(role: ChallengeRole, version: int) -> None:
    run = run_role(role, PeerConfig(version=version))
    after = run.handed[2:]  # SYN, ACK of the SYN/ACK
    probing = after[:-2]
    liveness, free = after[-2], after[-1]
    t0 = run.handed[1].at
    expected = {
        R.RST_IN_WINDOW: (F.RST, OUR_SND_NXT + 1),
        R.RST_OUT_OF_WINDOW: (F.RST, OUR_SND_NXT + OUT_OF_WINDOW_OFFSET),
        R.SYN: (F.SYN, OUR_SND_NXT),
        R.RATE: (F.SYN, OUR_SND_NXT),
    }[role]
    assert len(probing) == (RATE_COUNT if role is R.RATE else 1)
    for number, handed in enumerate(probing):
        assert (handed.tcp.flags, handed.tcp.seq) == (expected[0], expected[1] & MASK)
        spacing = RATE_SPACING_S if role is R.RATE else 0.0
        assert handed.at - t0 == pytest.approx(PROBE_AT_S + number * spacing)
        assert handed.tcp.options.timestamp is not None  # negotiated
        if handed.tcp.flags == F.SYN:
            assert handed.tcp.options.mss is not None and handed.tcp.options.window_scale == 7
    # The liveness check: an old pure ACK, beyond the rate limit after the last probe.
    assert liveness.tcp.flags == F.ACK and not liveness.tcp.payload
    assert (liveness.tcp.seq, liveness.tcp.ack) == ((OUR_SND_NXT - 1) & MASK, PEER_SND_NXT)
    assert liveness.at - probing[-1].at == pytest.approx(MIN_GAP_S)
    # The freeing RST: exactly at the peer's RCV.NXT, and it frees it.
    assert (free.tcp.flags, free.tcp.seq) == (F.RST, OUR_SND_NXT)
    if run.result.answer is not A.RESET:
        assert run.peer.freed_by_exact_rst
    # Every segment is logged, and the indices name the right records.
    connection = run.result
    sent = [s for s in connection.segments if s.direction is Direction.SENT]
    assert len(sent) == len(run.handed)
    assert [connection.segments[i].seq for i in connection.probe_indices] == [
        h.tcp.seq for h in after[:-1]
    ]
    for i in connection.answer_indices:
        assert connection.segments[i].direction is Direction.RECEIVED


def test_the_script_spaces_what_may_be_rate_limited() -> None:
    for role in ChallengeRole:
        steps = script_for(role, gap=2.0)
        assert steps[0].at == PROBE_AT_S and steps[-1].kind is StepKind.LIVENESS
        assert steps[-1].at - steps[-2].at == 2.0
    assert len(script_for(R.RATE)) == RATE_COUNT + 1


# -- the verdicts -------------------------------------------------------------------------
@pytest.mark.parametrize("version", [4, 6])
def test_linux_challenges_a_rst_in_window_and_a_syn_and_ignores_one_outside(
    version: int,
) -> None:
    config = PeerConfig(version=version)
    in_window = run_role(R.RST_IN_WINDOW, config).result
    assert in_window.handshake is Handshake.OPEN
    assert in_window.answer is A.CHALLENGE_ACK
    assert "challenge ACK (RFC 5961 §3.2)" in in_window.evidence
    assert "lives on" in in_window.evidence
    challenge = in_window.segments[in_window.answer_indices[0]]
    assert (challenge.flags, challenge.seq, challenge.ack) == (".", PEER_SND_NXT, OUR_SND_NXT)
    assert f"segment {in_window.answer_indices[0]}," in in_window.evidence

    outside = run_role(R.RST_OUT_OF_WINDOW, config).result
    assert outside.answer is A.IGNORED
    assert "drew no answer" in outside.evidence and "lives on" in outside.evidence
    assert len(outside.answer_indices) == 1  # only the liveness check's ACK

    syn = run_role(R.SYN, config).result
    assert syn.answer is A.CHALLENGE_ACK and "§4.2" in syn.evidence


def test_an_rfc793_peer_is_reset_by_both_and_says_so() -> None:
    config = PeerConfig(rfc5961=False)
    in_window = run_role(R.RST_IN_WINDOW, config)
    result = in_window.result
    assert result.answer is A.RESET
    assert "drew no answer" in result.evidence
    assert "a RST (the connection is gone)" in result.evidence
    # The connection is gone already: no freeing RST after the liveness check's answer.
    assert in_window.handed[-1].tcp.flags == F.ACK

    syn = run_role(R.SYN, config)
    assert syn.result.answer is A.RESET
    assert "a RST" in syn.result.evidence and "RFC 793" in syn.result.evidence
    assert syn.handed[-1].tcp.flags == F.SYN  # no liveness check, no freeing RST needed
    assert run_role(R.RST_OUT_OF_WINDOW, config).result.answer is A.IGNORED


def test_silence_after_the_handshake_decides_nothing() -> None:
    for role in ChallengeRole:
        result = run_role(role, PeerConfig(silent_after_open=True)).result
        assert result.answer is None
        assert "lost answers" in result.evidence
        assert result.answer_indices == ()


def test_a_lost_challenge_ack_and_a_lost_liveness_answer_leave_it_open() -> None:
    # The peer's first answer (the challenge ACK) and second (the liveness ACK) are lost.
    result = run_role(R.RST_IN_WINDOW, PeerConfig(lose_answers=frozenset({1, 2}))).result
    assert result.answer is None and "drew no answer either" in result.evidence


def test_a_lost_liveness_answer_does_not_undo_a_challenge_ack() -> None:
    result = run_role(R.SYN, PeerConfig(lose_answers=frozenset({2}))).result
    assert result.answer is A.CHALLENGE_ACK and "drew no answer either" in result.evidence


def test_a_rate_limit_longer_than_the_gap_would_hide_the_liveness_answer() -> None:
    # tcp_invalid_ratelimit 2 s: the liveness check comes 1.1 s after the challenge ACK.
    result = run_role(R.RST_OUT_OF_WINDOW, PeerConfig(rate_limit_s=2.0)).result
    assert result.answer is A.IGNORED  # nothing limited it: the RST drew no answer
    limited = run_role(R.RST_IN_WINDOW, PeerConfig(rate_limit_s=2.0)).result
    assert limited.answer is A.CHALLENGE_ACK and "drew no answer either" in limited.evidence


# -- the rate ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("limit", "low", "high"), [(0.5, 0.5, 0.55), (1.0, 1.0, 1.05)])
def test_rate_measures_the_per_socket_limit(limit: float, low: float, high: float) -> None:
    run = run_role(R.RATE, PeerConfig(rate_limit_s=limit))
    result = run.result
    assert result.answer is A.CHALLENGE_ACK
    shortest = min_interval(result.ack_times_s)
    assert shortest is not None and low - 1e-6 <= shortest <= high + 1e-6
    assert f"resolution {RATE_SPACING_S:g} s" in result.evidence
    run_result = summarize(target="198.18.0.18", port=80, source="198.18.0.1",
                           connections=[result])
    assert run_result.rate_sent == RATE_COUNT
    assert run_result.rate_answered == len(result.ack_times_s) >= 2
    assert run_result.min_interval_s == pytest.approx(shortest)
    assert run_result.to_dict()["connections"][0]["ack_times_s"] == list(result.ack_times_s)


@settings(max_examples=30, deadline=None)
@given(
    limit=st.floats(min_value=0.06, max_value=0.9),
    one_way=st.floats(min_value=0.0001, max_value=0.02),
)
def test_any_rate_limit_is_measured_to_the_spacing(limit: float, one_way: float) -> None:
    result = run_role(R.RATE, PeerConfig(rate_limit_s=limit, one_way_s=one_way)).result
    shortest = min_interval(result.ack_times_s)
    assert shortest is not None
    assert limit - 1e-6 <= shortest <= limit + RATE_SPACING_S + 1e-6


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=30))
def test_min_interval_is_the_closest_pair(times: list[float]) -> None:
    brute = [abs(a - b) for i, a in enumerate(times) for b in times[i + 1 :]]
    expected = min(brute) if brute else None
    got = min_interval(times)
    assert got == expected if expected is None else got == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=0, max_size=12))
def test_any_arrival_times_give_the_right_min_interval(delays: list[float]) -> None:
    """Challenge ACKs crafted by hand, arriving whenever: the recorded times are theirs."""
    probe = make_probe(R.RATE)
    peer = Peer(PeerConfig())
    run = Run(probe, peer)
    probe.start(START)
    run._flush()
    # The handshake by hand: the SYN/ACK, then our ACK.
    syn = run.handed[0].tcp
    for raw in peer.receive(syn, START):
        probe.receive(parse_packet(raw), START + 0.002, Stamp(2))
    run._flush()
    t0 = START + 0.002
    first_syn = t0 + PROBE_AT_S
    window_end = t0 + PROBE_AT_S + (RATE_COUNT - 1) * RATE_SPACING_S + MIN_GAP_S
    arrivals = sorted(first_syn + 0.001 + d for d in delays)
    arrivals = [a for a in arrivals if a < window_end]
    challenge = peer.build(F.ACK, PEER_SND_NXT, OUR_SND_NXT)
    now = t0
    for at in [*arrivals, None]:
        while True:
            deadline = probe.next_deadline()
            if deadline is None or (at is not None and deadline > at):
                break
            now = deadline
            probe.handle_timer(now)
            for raw in probe.segments_to_send():
                index = len(run.handed)
                run.handed.append(Handed(now, parse_packet(raw).tcp))  # type: ignore[arg-type]
                probe.sent(index, Stamp(round(now * 1e9)))
        if at is None:
            break
        now = at
        probe.receive(parse_packet(challenge), at, Stamp(round(at * 1e9)))
    assert probe.done
    result = probe.result()
    assert len(result.ack_times_s) == len(arrivals)
    expected = [round(a - first_syn, 6) for a in arrivals]
    assert list(result.ack_times_s) == pytest.approx(expected, abs=2e-6)
    got = min_interval(result.ack_times_s)
    want = min_interval(expected)
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert got == pytest.approx(want, abs=4e-6)


# -- the edges ----------------------------------------------------------------------------------
def test_interrupt_frees_the_peer_with_a_rst_at_rcv_nxt() -> None:
    run = run_role(R.RATE, interrupt_at=1.0)
    last = run.handed[-1].tcp
    assert (last.flags, last.seq) == (F.RST, OUR_SND_NXT)
    assert run.peer.freed_by_exact_rst
    result = run.result
    assert "interrupted" in result.evidence
    assert result.answer is A.CHALLENGE_ACK  # what came before the interrupt stands


def test_interrupt_during_the_handshake_sends_nothing_more() -> None:
    run = run_role(R.SYN, PeerConfig(answers_handshake=False), interrupt_at=0.5)
    assert [h.tcp.flags for h in run.handed] == [F.SYN]
    assert run.result.handshake is Handshake.INTERRUPTED and run.result.answer is None


@pytest.mark.parametrize(
    ("config", "handshake"),
    [
        (PeerConfig(answers_handshake=False), Handshake.NO_ANSWER),
        (PeerConfig(refuses=True), Handshake.CLOSED),
    ],
)
def test_a_failed_handshake_says_so(config: PeerConfig, handshake: Handshake) -> None:
    result = run_role(R.RST_IN_WINDOW, config, handshake_timeout=2.0).result
    assert result.handshake is handshake and result.answer is None
    assert handshake.value in result.evidence
    assert result.probe_indices == () and result.ack_times_s == ()


def test_a_probe_that_cannot_be_sent_decides_nothing() -> None:
    run = run_role(R.RST_IN_WINDOW, fail=frozenset({2}))
    result = run.result
    assert result.answer is None and "not sent: No buffer space" in result.evidence
    assert result.segments[result.probe_indices[0]].send_error is not None


def test_an_icmp_error_for_the_probe_is_not_the_peer_speaking() -> None:
    probe = make_probe(R.RST_IN_WINDOW)
    run = Run(probe, Peer(PeerConfig(silent_after_open=True)))
    probe.start(START)
    run._flush()
    peer = run.peer
    for raw in peer.receive(run.handed[0].tcp, START):
        probe.receive(parse_packet(raw), START + 0.002, Stamp(2))
    run._flush()
    now = probe.next_deadline()
    assert now is not None
    probe.handle_timer(now)
    run._flush()
    rst = run.handed[-1].tcp
    icmp = bytes(
        IP(src="198.18.0.254", dst=ADDRESSES[4][0]) / ICMP(type=3, code=13)
        / IPerror(src=ADDRESSES[4][0], dst=ADDRESSES[4][1])
        / TCPerror(sport=SPORT, dport=DPORT, seq=rst.seq, flags="R")
    )
    assert probe.receive(parse_packet(icmp), now + 0.01, Stamp(3))
    for _ in range(10):
        deadline = probe.next_deadline()
        if deadline is None:
            break
        probe.handle_timer(deadline)
    assert probe.done
    result = probe.result()
    assert result.answer is None and "ICMPv4 type 3 code 13" in result.evidence


def test_data_is_acknowledged_before_the_probe() -> None:
    run = run_role(R.RST_IN_WINDOW, send_data=b"GET / HTTP/1.1\r\n")
    result = run.result
    assert result.answer is A.CHALLENGE_ACK
    rst = run.handed[3].tcp  # SYN, ACK, the data, then the RST
    assert rst.flags == F.RST and rst.seq == (OUR_SND_NXT + 16 + 1) & MASK


@settings(max_examples=60, deadline=None)
@given(
    role=st.sampled_from(list(ChallengeRole)),
    rfc5961=st.booleans(),
    noise=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=6.0),  # when, after the SYN
            st.sampled_from(["R", "S", ".", "F.", "P.", "R.", "S.", "FP."]),
            st.integers(min_value=-3, max_value=3),  # seq around the peer's SND.NXT
            st.integers(min_value=-3, max_value=3),  # ack around ours
            st.binary(max_size=8),
        ),
        max_size=12,
    ),
)
def test_any_segments_from_the_peer_leave_a_sound_result(
    role: ChallengeRole, rfc5961: bool, noise: list[tuple[float, str, int, int, bytes]]
) -> None:
    """Strays, repeats, data, FINs and RSTs from the peer at any time: the probe ends within
    its bounds, its deadlines never lag, and its indices name the records they claim to."""
    flags = {"R": F.RST, "S": F.SYN, ".": F.ACK, "F.": F.FIN | F.ACK, "P.": F.PSH | F.ACK,
             "R.": F.RST | F.ACK, "S.": F.SYN | F.ACK, "FP.": F.FIN | F.PSH | F.ACK}
    run = Run(make_probe(role), Peer(PeerConfig(rfc5961=rfc5961)))
    for at, letters, dseq, dack, payload in noise:
        peer = run.peer
        raw = TcpTemplate(4, flags[letters], window=502).build(
            peer.me, peer.probe_addr, DPORT, SPORT, (PEER_SND_NXT + dseq) & MASK,
            (OUR_SND_NXT + dack) & MASK, 0, 0, payload if letters != "R" else b"",
        )
        run.push(START + at, False, raw)
    run.run()
    result = run.result
    assert result.answer is None or result.answer in set(ChallengeAnswer)
    assert result.evidence
    for i in result.probe_indices:
        assert result.segments[i].direction is Direction.SENT
    for i in result.answer_indices:
        assert result.segments[i].direction is Direction.RECEIVED
    times = [s.time_ns for s in result.segments]
    assert times == sorted(times)
    assert list(result.ack_times_s) == sorted(result.ack_times_s)
    assert all(t >= 0 for t in result.ack_times_s)
