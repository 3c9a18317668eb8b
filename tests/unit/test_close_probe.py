"""The close probe's state machine on virtual time, against a scripted peer: no root, no sockets.

The peer is a few lines of test code that builds its segments with TcpTemplate (proved equal
to Scapy in test_packets.py) and feeds them to the probe through parse_packet. Sequence
numbers in the script are offsets: the peer's ``seq=0`` is its first byte after the SYN
(PEER_ISN + 1), and ``ack=0`` acknowledges our SYN (ISN + 1). Every segment the probe hands
out is stamped at the virtual ``now`` (kernel stamp = now in ns, user stamp 1 µs later), so
timings in results are exact.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from dataclasses import dataclass, field
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCPerror
from scapy.layers.inet import IPerror as IPerror4

from prober.core.close import (
    CloseKind,
    CloseMode,
    CloseProbe,
    CloseResult,
    FinRetransmissionsEnd,
    Handshake,
    SequenceSpaces,
    Stray,
    TimeWaitDue,
)
from prober.core.packets import TcpTemplate, template
from prober.core.parse import parse_packet
from prober.core.states import TcpState
from prober.core.timing import Clock, Stamp
from prober.core.trace import Direction, SegmentRecord
from prober.core.wire import TcpFlags, TcpSegment

S = TcpState
SRC4, DST4 = "198.19.0.1", "198.19.1.2"
SRC6, DST6 = "2001:2:0:100::1", "2001:2:0:101::2"
SPORT, DPORT = 40000, 80
ISN = 0xFFFFFF00  # close to the wrap: sequence arithmetic must be modular
PEER_ISN = 0xFFFFFFF0
MASK = 0xFFFFFFFF
PEER_TS_OFFSET = 7_000_000  # the peer's TSval clock runs elsewhere

_LETTERS = {"S": TcpFlags.SYN, "A": TcpFlags.ACK, "F": TcpFlags.FIN, "R": TcpFlags.RST,
            "P": TcpFlags.PSH}


def flags_of(letters: str) -> TcpFlags:
    flags = TcpFlags(0)
    for letter in letters:
        flags |= _LETTERS[letter]
    return flags


def ours(offset: int) -> int:
    """Our sequence number at ``offset`` bytes after our SYN."""
    return (ISN + 1 + offset) & MASK


def theirs(offset: int) -> int:
    return (PEER_ISN + 1 + offset) & MASK


@cache
def peer_template(
    version: int, flags: TcpFlags, timestamps: bool, window: int, mss: int,
    shift: int | None,
) -> TcpTemplate:
    return TcpTemplate(
        version, flags, window=window, mss=mss, window_scale=shift, timestamps=timestamps
    )


@dataclass
class Run:
    """One probe and the scripted peer talking to it, on virtual time."""

    probe: CloseProbe
    peer_timestamps: bool = True
    peer_shift: int | None = 7
    peer_mss: int = 1460
    peer_window: int = 502  # window field of the peer's segments after the SYN/ACK
    syn_ack_window: int = 65160
    kernel: bool = True
    now: float = 0.0
    sent: int = 0
    our_last_tsval: int = 0
    history: list[TcpSegment] = field(default_factory=list)

    @property
    def version(self) -> int:
        return self.probe.version

    def out(self) -> list[TcpSegment]:
        """What the probe asks to send now, stamped as the engine would."""
        segments = []
        for raw in self.probe.segments_to_send():
            ns = round(self.now * 1e9)
            self.probe.sent(self.sent, Stamp(ns + 1000))
            if self.kernel:
                self.probe.send_kernel_stamp(self.sent, ns)
            self.sent += 1
            tcp = parse_packet(raw).tcp
            assert tcp is not None
            assert (tcp.sport, tcp.dport) == (SPORT, DPORT)
            if tcp.options.timestamp is not None:
                self.our_last_tsval = tcp.options.timestamp[0]
            segments.append(tcp)
        self.history += segments
        return segments

    def peer_tsval(self) -> int:
        return (round(self.now * 1000) + PEER_TS_OFFSET) & MASK

    def build(
        self, letters: str, seq: int, ack: int = 0, payload: bytes = b"",
        window: int | None = None, tsval: int | None = None,
    ) -> bytes:
        flags = flags_of(letters)
        syn = bool(flags & TcpFlags.SYN)
        timestamps = self.peer_timestamps and not flags & TcpFlags.RST
        template = peer_template(
            self.version, flags, timestamps,
            (self.syn_ack_window if syn else self.peer_window) if window is None else window,
            self.peer_mss, self.peer_shift,
        )
        src, dst = (DST4, SRC4) if self.version == 4 else (DST6, SRC6)
        return template.build(
            ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed, DPORT, SPORT,
            theirs(seq), ours(ack) if flags & TcpFlags.ACK else 0,
            self.peer_tsval() if tsval is None else tsval, self.our_last_tsval, payload,
        )

    def feed(
        self, letters: str, seq: int, ack: int = 0, payload: bytes = b"", *,
        at: float | None = None, window: int | None = None, tsval: int | None = None,
    ) -> list[TcpSegment]:
        if at is not None:
            self.now = at
        raw = self.build(letters, seq, ack, payload, window, tsval)
        ns = round(self.now * 1e9)
        stamp = Stamp(ns + 1000, ns if self.kernel else None)
        assert self.probe.receive(parse_packet(raw), self.now, stamp)
        return self.out()

    def tick(self, at: float) -> list[TcpSegment]:
        self.now = at
        self.probe.handle_timer(at)
        return self.out()

    def start(self) -> TcpSegment:
        self.probe.start(self.now)
        [syn] = self.out()
        return syn

    def open(self, at: float = 0.01) -> list[TcpSegment]:
        """SYN at ``now``, the peer's SYN/ACK at ``at``; returns what the probe sent then."""
        self.start()
        return self.feed("SA", -1, 0, at=at)

    def records(self) -> tuple[SegmentRecord, ...]:
        return self.probe.log.records()

    def ladder(self) -> list[tuple[str, str, TcpState, TcpState]]:
        """(direction, flags, our state, peer state) per logged segment."""
        return [
            ("<" if r.direction is Direction.RECEIVED else ">", r.flags, r.our_state,
             r.peer_state)
            for r in self.records()
        ]


def make(version: int = 4, **options: object) -> CloseProbe:
    src, dst = (SRC4, DST4) if version == 4 else (SRC6, DST6)
    return CloseProbe(
        version=version,
        src=ipaddress.ip_address(src).packed,
        dst=ipaddress.ip_address(dst).packed,
        sport=SPORT,
        dport=DPORT,
        isn=ISN,
        **options,  # type: ignore[arg-type]
    )


def run(version: int = 4, peer: dict[str, object] | None = None, **options: object) -> Run:
    return Run(make(version, **options), **(peer or {}))  # type: ignore[arg-type]


def our_state(r: Run) -> TcpState:
    return r.probe.our_state


def peer_state(r: Run) -> TcpState:
    return r.probe.peer_state


def fl(segments: list[TcpSegment]) -> list[str]:
    return [s.flags.compact() for s in segments]


# -- the handshake ---------------------------------------------------------------------------
def test_syn_carries_linux_options_and_is_retransmitted_until_the_handshake_timeout() -> None:
    r = run(handshake_timeout=3.0)
    syn = r.start()
    assert syn.flags == TcpFlags.SYN and syn.seq == ISN and syn.ack == 0
    assert syn.options.order == "MSTNW" and syn.options.window_scale == 7
    assert syn.options.timestamp == (0, 0)
    assert our_state(r) is S.SYN_SENT and r.probe.next_deadline() == 1.0
    assert r.tick(0.999) == []
    [again] = r.tick(1.0)
    assert again.flags == TcpFlags.SYN and again.seq == ISN
    assert again.options.timestamp == (1000, 0)  # TSval = now in ms
    assert r.probe.next_deadline() == 3.0  # the doubled RTO meets the handshake timeout
    assert r.tick(3.0) == []  # the timeout wins: no third SYN
    result = r.probe.result()
    assert result.handshake is Handshake.NO_ANSWER
    assert result.close_kind is CloseKind.NOT_ESTABLISHED
    assert result.syn_retransmissions == 1 and result.handshake_rtt is None
    assert [rec.note for rec in result.segments] == ["", "retransmission"]
    assert r.probe.next_deadline() is None


def test_syn_retransmissions_double_like_linux() -> None:
    r = run(handshake_timeout=10.0)
    r.start()
    for t in (1.0, 3.0, 7.0):
        assert r.probe.next_deadline() == t
        assert len(r.tick(t)) == 1
    assert r.probe.next_deadline() == 10.0
    r.tick(10.0)
    assert r.probe.result().syn_retransmissions == 3


def test_rst_acking_isn_plus_one_means_closed() -> None:
    r = run()
    r.start()
    wrong = r.build("RA", 0, ack=5)
    # Counted as invalid by the probe (not a verdict), so it says it took the packet.
    assert r.probe.receive(parse_packet(wrong), 0.01, Stamp(1))
    assert not r.probe.done
    assert r.feed("RA", 0, ack=0, at=0.02) == []
    result = r.probe.result()
    assert result.invalid_by_kind == {Stray.WRONG_ACK: 1}
    assert result.handshake is Handshake.CLOSED
    assert result.close_kind is CloseKind.NOT_ESTABLISHED
    assert r.ladder()[-1] == ("<", "R.", S.CLOSED, S.CLOSED)


def test_syn_ack_with_a_wrong_ack_or_from_elsewhere_is_not_ours() -> None:
    r = run()
    r.start()
    assert r.probe.receive(parse_packet(r.build("SA", -1, ack=1)), 0.01, Stamp(1))
    assert r.out() == []  # no answer to a SYN/ACK that does not ack our SYN
    other = IP(src="198.19.9.9", dst=SRC4)
    assert not r.probe.receive(parse_packet(bytes(other)), 0.01, Stamp(1))
    assert not r.probe.done and our_state(r) is S.SYN_SENT
    r.tick(10.0)
    assert r.probe.result().invalid_by_kind == {Stray.WRONG_ACK: 1}


@pytest.mark.parametrize(
    ("icmp_type", "outcome"), [(3, Handshake.FILTERED), (11, Handshake.EXPIRED)]
)
def test_icmp_error_quoting_our_syn_ends_the_handshake(icmp_type: int, outcome: Handshake) -> None:
    r = run()
    r.start()

    def icmp(seq: int) -> bytes:
        return bytes(
            IP(src="198.19.0.254", dst=SRC4) / ICMP(type=icmp_type, code=1)
            / IPerror4(src=SRC4, dst=DST4) / TCPerror(sport=SPORT, dport=DPORT, seq=seq)
        )

    # Quoting a segment we never sent: counted, not a verdict.
    assert r.probe.receive(parse_packet(icmp(ISN + 1)), 0.01, Stamp(1))
    assert not r.probe.done
    assert r.probe.receive(parse_packet(icmp(ISN)), 0.01, Stamp(1))
    result = r.probe.result()
    assert result.invalid_by_kind == {Stray.ICMP_NOT_OURS: 1}
    assert result.handshake is outcome
    assert result.icmp is not None and result.icmp.type == icmp_type
    assert result.icmp.source == "198.19.0.254"
    assert result.to_dict()["icmp"]["code"] == 1


def test_a_syn_that_cannot_be_sent_ends_the_probe() -> None:
    r = run()
    r.probe.start(0.0)
    r.probe.segments_to_send()
    r.probe.send_failed(0, "Operation not permitted")
    result = r.probe.result()
    assert result.handshake is Handshake.SEND_FAILED
    assert result.error == "Operation not permitted"


def test_syn_ack_opens_with_the_ack_and_negotiated_options() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    [ack] = r.open(at=0.01)
    assert ack.flags == TcpFlags.ACK
    assert (ack.seq, ack.ack) == (ours(0), theirs(0))
    assert ack.options.order == "NNT"
    assert ack.options.timestamp == (10, (10 + PEER_TS_OFFSET) & MASK)
    assert ack.window == 65535 >> 7
    assert r.probe.log.peer_isn == PEER_ISN
    assert r.ladder() == [
        (">", "S", S.SYN_SENT, S.SYN_RECEIVED),
        ("<", "S.", S.ESTABLISHED, S.SYN_RECEIVED),
        (">", ".", S.ESTABLISHED, S.ESTABLISHED),
    ]


def test_handshake_rtt_uses_the_syn_the_syn_ack_names_in_tsecr() -> None:
    r = run(handshake_timeout=10.0)
    r.start()
    r.tick(1.0)  # a second SYN, TSval 1000
    # The peer answers the first SYN (TSecr 0): the RTT is 1.2 s, not 0.2 s.
    first = peer_template(4, flags_of("SA"), True, 65160, 1460, 7)
    raw = first.build(
        ipaddress.ip_address(DST4).packed, ipaddress.ip_address(SRC4).packed, DPORT, SPORT,
        PEER_ISN, ours(0), 5, 0,
    )
    assert r.probe.receive(parse_packet(raw), 1.2, Stamp(1_200_001_000, 1_200_000_000))
    r.out()
    r.probe.interrupt(1.3)
    rtt = r.probe.result().handshake_rtt
    assert rtt is not None and rtt.clock is Clock.KERNEL and rtt.ns == 1_200_000_000


def test_handshake_rtt_without_timestamps_uses_the_last_syn_and_says_so() -> None:
    r = run(peer={"peer_timestamps": False}, handshake_timeout=10.0)
    r.start()
    r.tick(1.0)
    r.feed("SA", -1, 0, at=1.2)
    r.probe.interrupt(1.3)
    result = r.probe.result()
    assert result.handshake_rtt is not None
    assert result.handshake_rtt.ns == pytest.approx(200_000_000, abs=10)
    assert any("RTT ambiguous" in note for note in result.notes)


def test_user_clock_when_kernel_stamps_are_missing() -> None:
    r = run(peer={"kernel": False})
    r.open()
    r.feed("A", 0, 1, at=0.02)
    r.feed("FA", 0, 1, at=0.03)
    r.probe.interrupt(0.5)
    result = r.probe.result()
    assert result.clock is Clock.USER
    assert result.handshake_rtt is not None and result.handshake_rtt.clock is Clock.USER
    assert result.our_fin_to_peer_ack_us == pytest.approx(10_000)


# -- closing -----------------------------------------------------------------------------------
def test_four_way_close_and_time_wait() -> None:
    r = run(msl=30.0)
    ack, fin = r.open(at=0.01)
    assert (fl([ack, fin]), fin.seq, fin.ack) == ([".", "F."], ours(0), theirs(0))
    assert r.feed("A", 0, 1, at=0.03) == []
    assert our_state(r) is S.FIN_WAIT_2
    [last] = r.feed("FA", 0, 1, at=0.05)
    assert (last.flags, last.seq, last.ack) == (TcpFlags.ACK, ours(1), theirs(1))
    assert our_state(r) is S.TIME_WAIT and not r.probe.done
    assert r.probe.next_deadline() == pytest.approx(60.05)
    assert r.ladder() == [
        (">", "S", S.SYN_SENT, S.SYN_RECEIVED),
        ("<", "S.", S.ESTABLISHED, S.SYN_RECEIVED),
        (">", ".", S.ESTABLISHED, S.ESTABLISHED),
        (">", "F.", S.FIN_WAIT_1, S.CLOSE_WAIT),
        ("<", ".", S.FIN_WAIT_2, S.CLOSE_WAIT),
        ("<", "F.", S.TIME_WAIT, S.LAST_ACK),
        (">", ".", S.TIME_WAIT, S.CLOSED),
    ]
    assert r.tick(60.0) == [] and not r.probe.done
    assert r.tick(60.05) == []
    result = r.probe.result()
    assert result.handshake is Handshake.OPEN
    assert result.handshake_rtt is not None and result.handshake_rtt.ns == 10_000_000
    assert result.close_kind is CloseKind.FOUR_WAY
    assert result.clock is Clock.KERNEL
    assert result.our_fin_to_peer_ack_us == 20_000
    assert result.our_fin_to_peer_fin_us == 40_000
    assert result.peer_ack_to_peer_fin_us == 20_000
    assert result.peer_fin_to_our_ack_us is None and result.our_ack_to_our_fin_us is None
    assert result.time_wait_due is TimeWaitDue.US
    assert result.time_wait_held_us == pytest.approx(60e6)
    assert not result.time_wait_cut_short and not result.time_wait_skipped
    assert (result.our_final_state, result.peer_final_state) == (S.CLOSED, S.CLOSED)
    assert not result.half_close and result.peer_fin_retransmissions == ()
    assert len(result.segments) == 7


def test_three_way_close_its_fin_acks_ours() -> None:
    r = run()
    r.open(at=0.01)
    [ack] = r.feed("FA", 0, 1, at=0.03)
    assert ack.ack == theirs(1)
    assert r.ladder()[-2:] == [
        ("<", "F.", S.TIME_WAIT, S.LAST_ACK),
        (">", ".", S.TIME_WAIT, S.CLOSED),
    ]
    r.probe.interrupt(1.03)
    result = r.probe.result()
    assert result.close_kind is CloseKind.THREE_WAY
    assert result.our_fin_to_peer_ack_us == result.our_fin_to_peer_fin_us == 20_000
    assert result.peer_ack_to_peer_fin_us == 0
    assert result.time_wait_cut_short and result.time_wait_held_us == pytest.approx(1e6)
    assert result.our_final_state is S.TIME_WAIT


def test_simultaneous_close_both_sides_pass_closing_and_hold_time_wait() -> None:
    r = run()
    r.open(at=0.01)
    # Its FIN acks only our SYN: it was sent before our FIN arrived.
    [ack] = r.feed("FA", 0, 0, at=0.02)
    assert (ack.seq, ack.ack) == (ours(1), theirs(1))
    assert our_state(r) is S.CLOSING
    assert r.feed("A", 1, 1, at=0.03) == []
    assert our_state(r) is S.TIME_WAIT
    assert r.ladder()[3:] == [
        (">", "F.", S.FIN_WAIT_1, S.CLOSE_WAIT),  # the guess before the evidence
        ("<", "F.", S.CLOSING, S.CLOSING),
        (">", ".", S.CLOSING, S.TIME_WAIT),
        ("<", ".", S.TIME_WAIT, S.TIME_WAIT),
    ]
    r.tick(60.03)
    result = r.probe.result()
    assert result.close_kind is CloseKind.SIMULTANEOUS
    assert result.time_wait_due is TimeWaitDue.BOTH
    assert result.our_fin_to_peer_fin_us == 10_000
    assert result.our_fin_to_peer_ack_us == 20_000
    assert result.peer_ack_to_peer_fin_us == -10_000


def test_peer_first_close_when_the_peer_closes() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    assert fl(r.open(at=0.01)) == ["."]
    assert r.probe.next_deadline() == pytest.approx(120.01)  # max_wait from the SYN/ACK
    ack, fin = r.feed("FA", 0, 0, at=0.05)
    assert (fl([ack, fin]), ack.ack, fin.ack, fin.seq) == (
        [".", "F."], theirs(1), theirs(1), ours(0)
    )
    assert our_state(r) is S.LAST_ACK
    assert r.feed("A", 1, 1, at=0.07) == []
    assert r.probe.done
    assert r.ladder()[3:] == [
        ("<", "F.", S.CLOSE_WAIT, S.FIN_WAIT_1),
        (">", ".", S.CLOSE_WAIT, S.FIN_WAIT_2),
        (">", "F.", S.LAST_ACK, S.TIME_WAIT),
        ("<", ".", S.CLOSED, S.TIME_WAIT),
    ]
    result = r.probe.result()
    assert result.close_kind is CloseKind.PEER_FIRST
    assert result.time_wait_due is TimeWaitDue.PEER
    assert result.time_wait_held_us is None
    assert result.peer_fin_to_our_ack_us == 0 and result.our_ack_to_our_fin_us == 0
    assert result.our_fin_to_peer_ack_us == 20_000
    assert result.our_fin_to_peer_fin_us is None and result.peer_ack_to_peer_fin_us is None
    assert (result.our_final_state, result.peer_final_state) == (S.CLOSED, S.TIME_WAIT)


def test_peer_first_close_in_we_close_mode_while_our_data_is_unacked() -> None:
    r = run(send_data=b"hello")
    _ack, data = r.open(at=0.01)
    assert data.payload == b"hello" and data.flags == TcpFlags.PSH | TcpFlags.ACK
    [ack_of_fin] = r.feed("FA", 0, 0, at=0.02)  # its FIN before it acks our data
    assert ack_of_fin.ack == theirs(1) and our_state(r) is S.CLOSE_WAIT
    [fin] = r.feed("A", 1, 5, at=0.03)  # our data acked: now our FIN
    assert fin.flags == TcpFlags.FIN | TcpFlags.ACK and fin.seq == ours(5)
    assert r.feed("A", 1, 6, at=0.04) == []
    result = r.probe.result()
    assert result.close_kind is CloseKind.PEER_FIRST
    assert result.bytes_acked == 5 and result.bytes_sent == 5
    assert result.peer_fin_to_our_ack_us == 0 and result.our_ack_to_our_fin_us == 10_000


def test_half_close_data_after_our_fin_is_acked_in_order() -> None:
    r = run()
    r.open(at=0.01)
    r.feed("A", 0, 1, at=0.02)
    [a1] = r.feed("PA", 0, 1, b"abc", at=0.03)
    [a2] = r.feed("PA", 3, 1, b"def", at=0.04)
    [a3] = r.feed("FA", 6, 1, at=0.05)
    assert [a.ack for a in (a1, a2, a3)] == [theirs(3), theirs(6), theirs(7)]
    notes = [rec.note for rec in r.records() if rec.direction is Direction.RECEIVED]
    assert notes.count("data after our FIN") == 2
    r.probe.interrupt(0.06)
    result = r.probe.result()
    assert result.close_kind is CloseKind.FOUR_WAY
    assert result.half_close and result.bytes_after_our_fin == 6
    assert result.received == b"abcdef" and result.bytes_received == 6


def test_data_that_crossed_our_fin_is_not_a_half_close() -> None:
    # Sent before our FIN reached the peer (its ack does not cover our FIN), as over a long
    # path: it arrives after our FIN left, yet the peer never saw a half-closed connection.
    r = run()
    r.open(at=0.01)
    r.feed("PA", 0, 0, b"abc", at=0.02)
    r.feed("FA", 3, 0, at=0.03)
    notes = [rec.note for rec in r.records() if rec.direction is Direction.RECEIVED]
    assert "crossed our FIN" in notes[-2]
    r.probe.interrupt(0.06)
    result = r.probe.result()
    assert not result.half_close and result.bytes_after_our_fin == 0
    assert result.close_kind is CloseKind.SIMULTANEOUS


def test_data_before_our_fin_is_not_a_half_close() -> None:
    r = run(send_data=b"GET / HTTP/1.0\r\n\r\n")
    r.open(at=0.01)
    # The answer acks our request: we ACK it, then (all our data acked) send our FIN.
    ack, fin = r.feed("PA", 0, 18, b"HTTP/1.0 200 OK\r\n\r\n", at=0.02)
    assert ack.ack == fin.ack == theirs(19) and fin.flags & TcpFlags.FIN
    r.feed("FA", 19, 19, at=0.03)
    r.probe.interrupt(0.04)
    result = r.probe.result()
    assert not result.half_close and result.received == b"HTTP/1.0 200 OK\r\n\r\n"
    assert result.close_kind is CloseKind.THREE_WAY


def test_a_retransmitted_fin_in_time_wait_is_re_acked_and_restarts_2msl() -> None:
    r = run(msl=1.0)
    r.open(at=0.01)
    r.feed("A", 0, 1, at=0.02)
    r.feed("FA", 0, 1, at=0.03)
    assert r.probe.next_deadline() == pytest.approx(2.03)
    [again] = r.feed("FA", 0, 1, at=0.5)
    assert (again.flags, again.ack) == (TcpFlags.ACK, theirs(1))
    assert r.probe.next_deadline() == pytest.approx(2.5)
    records = r.records()
    assert records[-2].note == "FIN retransmission, re-ACKed in TIME-WAIT"
    assert (records[-2].our_state, records[-2].peer_state) == (S.TIME_WAIT, S.LAST_ACK)
    assert (records[-1].our_state, records[-1].peer_state) == (S.TIME_WAIT, S.CLOSED)
    r.tick(2.5)
    result = r.probe.result()
    assert result.our_final_state is S.CLOSED
    assert result.time_wait_held_us == pytest.approx(2.47e6)
    assert [x.time_since_first_us for x in result.peer_fin_retransmissions] == [470_000]
    assert result.peer_fin_retransmissions_end is None


def test_no_wait_ends_on_entering_time_wait() -> None:
    r = run(no_wait=True)
    r.open(at=0.01)
    r.feed("A", 0, 1, at=0.02)
    [ack] = r.feed("FA", 0, 1, at=0.03)
    assert ack.flags == TcpFlags.ACK and r.probe.done and r.probe.next_deadline() is None
    result = r.probe.result()
    assert result.time_wait_skipped and result.time_wait_held_us is None
    assert result.our_final_state is S.TIME_WAIT
    # A late copy of its FIN is logged, not answered.
    assert r.feed("FA", 0, 1, at=0.5) == []
    assert r.probe.result().segments[-1].note == "after the probe ended"


# -- drop_final_ack -------------------------------------------------------------------------------
def _drop_run(mode: CloseMode) -> Run:
    r = run(mode=mode, drop_final_ack=True)
    r.open(at=0.01)
    if mode is CloseMode.WE_CLOSE:
        r.feed("A", 0, 1, at=0.02)
    ack = 1 if mode is CloseMode.WE_CLOSE else 0
    assert r.feed("FA", 0, ack, at=0.05) == []  # not acknowledged
    for t in (0.25, 0.65, 1.45):  # the peer backs off: 0.2, 0.4, 0.8 s
        assert r.feed("FA", 0, ack, at=t) == []
    return r


def test_drop_final_ack_records_fin_retransmissions_until_silence() -> None:
    r = _drop_run(CloseMode.WE_CLOSE)
    notes = [rec.note for rec in r.records() if rec.direction is Direction.RECEIVED]
    assert notes[-4] == "not acknowledged (--drop-final-ack)"
    assert notes[-3:] == ["FIN retransmission, not acknowledged (--drop-final-ack)"] * 3
    assert our_state(r) is S.FIN_WAIT_2 and peer_state(r) is S.LAST_ACK
    assert r.probe.next_deadline() == pytest.approx(1.45 + 2.5 * 0.8 + 1.0)
    assert r.tick(4.44) == []
    [rst] = r.tick(4.45)
    assert (rst.flags, rst.seq, rst.ack) == (TcpFlags.RST, ours(1), 0)
    # Every segment carries timestamps once they are on; TSecr is the last FIN's TSval.
    assert rst.options.timestamp == (4450, 1450 + PEER_TS_OFFSET)
    result = r.probe.result()
    assert result.close_kind is CloseKind.FOUR_WAY
    assert [(x.time_since_first_us, x.interval_us) for x in result.peer_fin_retransmissions] == [
        (200_000, 200_000),
        (600_000, 400_000),
        (1_400_000, 800_000),
    ]
    assert result.peer_fin_retransmissions_end is FinRetransmissionsEnd.SILENCE
    assert (result.our_final_state, result.peer_final_state) == (S.CLOSED, S.CLOSED)
    assert result.time_wait_due is None
    assert result.to_dict()["peer_fin_retransmissions"][0] == {
        "time_since_first_us": 200_000,
        "interval_us": 200_000,
    }


def test_drop_final_ack_peer_gives_up_with_a_rst() -> None:
    r = _drop_run(CloseMode.WE_CLOSE)
    # Its RST carries the sequence number after its (unacknowledged) FIN.
    assert r.feed("R", 1, at=2.0) == []
    result = r.probe.result()
    assert result.peer_fin_retransmissions_end is FinRetransmissionsEnd.RESET
    assert result.close_kind is CloseKind.FOUR_WAY
    assert r.ladder()[-1] == ("<", "R", S.CLOSED, S.CLOSED)


def test_drop_final_ack_when_the_peer_closes_first() -> None:
    r = _drop_run(CloseMode.PEER_CLOSES)
    assert our_state(r) is S.ESTABLISHED and peer_state(r) is S.FIN_WAIT_1
    [rst] = r.tick(10.0)
    assert rst.flags == TcpFlags.RST and rst.seq == ours(0)
    result = r.probe.result()
    assert result.close_kind is CloseKind.PEER_FIRST
    assert len(result.peer_fin_retransmissions) == 3
    assert result.peer_fin_retransmissions_end is FinRetransmissionsEnd.SILENCE


def test_drop_final_ack_silence_is_bounded_by_max_wait() -> None:
    r = run(drop_final_ack=True, max_wait=2.0)
    r.open(at=0.01)
    r.feed("FA", 0, 1, at=0.05)
    assert r.probe.next_deadline() == pytest.approx(2.01)
    [rst] = r.tick(2.01)
    assert rst.flags == TcpFlags.RST
    assert r.probe.result().peer_fin_retransmissions_end is FinRetransmissionsEnd.MAX_WAIT


def test_drop_final_ack_still_acks_data_that_comes_with_the_fin() -> None:
    r = run(mode=CloseMode.PEER_CLOSES, drop_final_ack=True)
    r.open(at=0.01)
    [ack] = r.feed("FPA", 0, 0, b"bye", at=0.02)
    assert ack.ack == theirs(3)  # the data, not the FIN
    assert r.feed("FA", 3, 0, at=0.3) == []
    assert r.probe.received == b"bye"


def test_interrupt_while_counting_fin_retransmissions() -> None:
    r = _drop_run(CloseMode.WE_CLOSE)
    r.probe.interrupt(2.0)
    [rst] = r.out()
    assert rst.flags == TcpFlags.RST
    result = r.probe.result()
    assert result.interrupted and result.close_kind is CloseKind.FOUR_WAY
    assert result.peer_fin_retransmissions_end is FinRetransmissionsEnd.INTERRUPTED


def test_a_fin_retransmitted_before_our_fin_is_acked_is_re_acked() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    r.feed("FA", 0, 0, at=0.05)  # we ACK it and send our FIN; both are lost
    [again] = r.feed("FA", 0, 0, at=0.3)
    assert (again.flags, again.ack) == (TcpFlags.ACK, theirs(1))
    assert r.ladder()[-2:] == [
        ("<", "F.", S.LAST_ACK, S.FIN_WAIT_1),  # it never got our ACK
        (">", ".", S.LAST_ACK, S.FIN_WAIT_2),
    ]
    assert r.records()[-2].note == "FIN retransmission, re-ACKed"
    [fin] = r.tick(1.05)  # our FIN's RTO
    assert fin.flags == TcpFlags.FIN | TcpFlags.ACK
    assert r.ladder()[-1] == (">", "F.", S.LAST_ACK, S.TIME_WAIT)
    r.feed("A", 1, 1, at=1.1)
    result = r.probe.result()
    assert result.our_final_state is S.CLOSED and result.our_fin_retransmissions == 1


# -- receiving -------------------------------------------------------------------------------------
def test_out_of_order_and_duplicate_segments_are_reassembled() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    [dup] = r.feed("PA", 3, 0, b"def", at=0.02)
    assert dup.ack == theirs(0)
    [a] = r.feed("PA", 0, 0, b"abc", at=0.03)
    assert a.ack == theirs(6)
    [b] = r.feed("PA", 0, 0, b"abc", at=0.04)
    assert b.ack == theirs(6)
    [c] = r.feed("PA", 4, 0, b"efgh", at=0.05)  # overlaps: only "gh" is new
    assert c.ack == theirs(8)
    notes = [rec.note for rec in r.records() if rec.direction is Direction.RECEIVED][1:]
    assert notes == ["out of order", "", "retransmission", "retransmission"]
    sent_notes = [rec.note for rec in r.records() if rec.direction is Direction.SENT]
    assert sent_notes[2] == "duplicate ACK"
    assert r.probe.received == b"abcdefgh"


def test_out_of_order_fin_waits_for_the_gap() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    [dup] = r.feed("FA", 3, 0, at=0.02)
    assert dup.ack == theirs(0) and our_state(r) is S.ESTABLISHED
    ack, fin = r.feed("PA", 0, 0, b"abc", at=0.03)
    assert ack.ack == theirs(4) and fin.flags & TcpFlags.FIN
    assert our_state(r) is S.LAST_ACK and r.probe.received == b"abc"


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_split_in_any_order_with_duplicates_is_reassembled_exactly(
    data: st.DataObject,
) -> None:
    message = data.draw(st.binary(min_size=1, max_size=2000), label="message")
    cuts = data.draw(
        st.sets(st.integers(1, len(message) - 1), max_size=12) if len(message) > 1
        else st.just(set[int]()),
        label="cuts",
    )
    bounds = [0, *sorted(cuts), len(message)]
    pieces = list(itertools.pairwise(bounds))
    order = list(data.draw(st.permutations(range(len(pieces))), label="order"))
    for extra in data.draw(st.lists(st.integers(0, len(pieces) - 1), max_size=6), label="dups"):
        order.insert(data.draw(st.integers(0, len(order)), label="at"), extra)

    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    covered = [False] * len(message)
    for step, i in enumerate(order):
        start, end = pieces[i]
        [ack] = r.feed("PA", start, 0, message[start:end], at=0.02 + step * 0.001)
        covered[start:end] = [True] * (end - start)
        expected = covered.index(False) if False in covered else len(message)
        assert ack.flags == TcpFlags.ACK and ack.ack == theirs(expected)
    assert r.probe.received == message
    ack, _fin = r.feed("FA", len(message), 0, at=1.0)
    assert ack.ack == theirs(len(message) + 1)
    r.feed("A", len(message) + 1, 1, at=1.01)
    assert r.probe.result().received == message


def test_segments_outside_the_window_are_noted_acked_and_dropped() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    window = (65535 >> 7) << 7
    [ack] = r.feed("PA", window + 10, 0, b"far", at=0.02)
    assert ack.ack == theirs(0)
    assert r.records()[-2].note == "outside the receive window: dropped"
    assert r.probe.received == b""


def test_data_beyond_the_window_is_trimmed() -> None:
    r = run(mode=CloseMode.PEER_CLOSES, receive_window=1000)
    [ack] = r.open(at=0.01)
    assert ack.window == 1000 >> 7  # 7 << 7 = 896 bytes
    [ack] = r.feed("PA", 0, 0, bytes(1000), at=0.02)
    assert ack.ack == theirs(896) and len(r.probe.received) == 896
    assert r.records()[-2].note == "trimmed to the receive window"


def test_icmp_errors_after_the_handshake_are_noted_and_ignored() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    icmp = bytes(
        IP(src="198.19.0.254", dst=SRC4) / ICMP(type=3, code=4)
        / IPerror4(src=SRC4, dst=DST4) / TCPerror(sport=SPORT, dport=DPORT, seq=ours(0))
    )
    assert r.probe.receive(parse_packet(icmp), 0.02, Stamp(1))
    assert not r.probe.done
    r.probe.interrupt(0.1)
    result = r.probe.result()
    assert result.invalid_by_kind == {Stray.ICMP_AFTER_ANSWER: 1}
    assert any("ICMPv4 type 3 code 4 (1x) ignored" in note for note in result.notes)


def test_a_window_scale_above_14_is_treated_as_14() -> None:
    r = run(mode=CloseMode.PEER_CLOSES, peer={"peer_shift": 15})
    r.open(at=0.01)
    r.probe.interrupt(0.1)
    result = r.probe.result()
    assert result.negotiated is not None and result.negotiated.window_scale == 14
    assert any("treated as 14" in note for note in result.notes)


def test_a_segment_acking_what_we_never_sent_is_acked_and_dropped() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    [ack] = r.feed("PA", 0, 50, b"x", at=0.02)
    assert ack.ack == theirs(0) and r.probe.received == b""
    assert "not yet sent" in r.records()[-2].note


def test_syn_ack_retransmission_is_acked_again_and_a_new_syn_challenged() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    [ack] = r.feed("SA", -1, 0, at=1.0)
    assert (ack.flags, ack.ack) == (TcpFlags.ACK, theirs(0))
    assert r.records()[-2].note == "SYN/ACK retransmission"
    [challenge] = r.feed("S", 500, at=1.1)
    assert challenge.flags == TcpFlags.ACK
    assert r.records()[-1].note == "challenge ACK (RFC 5961)"


def test_a_segment_without_ack_is_dropped() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    assert r.feed("P", 0, 0, b"x", at=0.02) == []
    assert r.probe.received == b""


# -- RSTs (RFC 5961) ----------------------------------------------------------------------------
def test_rst_with_the_exact_sequence_number_resets() -> None:
    r = run()
    r.open(at=0.01)
    r.feed("A", 0, 1, at=0.02)
    assert r.feed("R", 0, at=0.03) == []
    result = r.probe.result()
    assert result.close_kind is CloseKind.RESET
    assert (result.our_final_state, result.peer_final_state) == (S.CLOSED, S.CLOSED)


def test_rst_in_the_window_but_not_exact_draws_a_challenge_ack() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    [challenge] = r.feed("R", 100, at=0.02)
    assert (challenge.flags, challenge.seq, challenge.ack) == (TcpFlags.ACK, ours(0), theirs(0))
    assert r.records()[-2].note == "RST in window but not exact"
    assert not r.probe.done


@pytest.mark.parametrize("seq", [-1, -1000, 70_000])
def test_rst_outside_the_window_is_ignored(seq: int) -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    assert r.feed("R", seq, at=0.02) == []
    assert r.records()[-1].note == "RST outside the window: ignored"
    assert not r.probe.done and our_state(r) is S.ESTABLISHED


def test_rst_in_time_wait_ends_it() -> None:
    r = run()
    r.open(at=0.01)
    r.feed("FA", 0, 1, at=0.02)
    r.feed("R", 1, at=1.02)
    result = r.probe.result()
    assert result.time_wait_cut_short and result.time_wait_held_us == pytest.approx(1e6)
    assert result.close_kind is CloseKind.THREE_WAY


# -- our data ------------------------------------------------------------------------------------
def test_data_goes_out_in_mss_sized_segments_psh_on_the_last() -> None:
    r = run(peer={"peer_mss": 100}, send_data=bytes(range(256)) * 2)
    _ack, *data = r.open(at=0.01)
    # MSS 100 less 12 bytes of timestamp option: 88 bytes a segment.
    assert [len(s.payload) for s in data] == [88] * 5 + [72]
    assert [s.seq for s in data] == [ours(88 * i) for i in range(6)]
    assert fl(data) == ["."] * 5 + ["P."]
    assert b"".join(s.payload for s in data) == bytes(range(256)) * 2


def test_lost_data_is_resent_go_back_n_on_rto_with_backoff() -> None:
    r = run(peer={"peer_mss": 100}, send_data=bytes(512), rto=1.0)
    r.open(at=0.01)
    assert r.probe.next_deadline() == pytest.approx(1.01)
    assert r.feed("A", 0, 176, at=0.05) == []  # two segments arrived, the rest is lost
    assert r.probe.next_deadline() == pytest.approx(1.05)  # restarted by the new ACK
    again = r.tick(1.05)
    assert [s.seq for s in again] == [ours(o) for o in (176, 264, 352, 440)]
    assert {rec.note for rec in r.records()[-4:]} == {"retransmission"}
    assert r.probe.next_deadline() == pytest.approx(3.05)  # doubled
    [fin] = r.feed("A", 0, 512, at=1.1)
    assert fin.flags == TcpFlags.FIN | TcpFlags.ACK and fin.seq == ours(512)
    # Our FIN is retransmitted too, with the RTO reset by the last new ACK.
    assert r.probe.next_deadline() == pytest.approx(2.1)
    [fin_again] = r.tick(2.1)
    assert fin_again.seq == ours(512) and r.records()[-1].note == "retransmission"
    r.feed("FA", 0, 513, at=2.2)
    r.probe.interrupt(2.3)
    result = r.probe.result()
    assert result.bytes_acked == 512 and result.our_fin_retransmissions == 1
    assert result.close_kind is CloseKind.THREE_WAY


def test_retries_are_bounded_then_the_peer_is_reset() -> None:
    r = run(send_data=b"x" * 10, max_retries=2)
    r.open(at=0.01)
    assert len(r.tick(1.01)) == 1
    assert len(r.tick(3.01)) == 1
    [rst] = r.tick(7.01)
    assert rst.flags == TcpFlags.RST and rst.seq == ours(10)
    result = r.probe.result()
    assert result.close_kind is CloseKind.INCOMPLETE
    assert any("retransmissions exhausted" in note for note in result.notes)


def test_data_respects_the_peers_window_unscaled() -> None:
    r = run(
        peer={"peer_shift": None, "peer_mss": 100, "peer_timestamps": False,
              "syn_ack_window": 200, "peer_window": 200},
        send_data=bytes(500),
    )
    ack, *data = r.open(at=0.01)
    assert ack.window == 65535  # no scaling: our field is the real window
    assert [len(s.payload) for s in data] == [100, 100]
    more = r.feed("A", 0, 100, at=0.02)
    assert [(s.seq, len(s.payload)) for s in more] == [(ours(200), 100)]


def test_window_scaling_scales_both_directions() -> None:
    r = run(
        peer={"peer_shift": 2, "syn_ack_window": 100, "peer_window": 50},
        send_data=bytes(1000), receive_window=1_000_000,
    )
    ack, *data = r.open(at=0.01)
    assert ack.window == 1_000_000 >> 7  # our field, scaled by our shift of 7
    # The SYN/ACK's window is never scaled: 100 bytes.
    assert [len(s.payload) for s in data] == [100]
    more = r.feed("A", 0, 100, at=0.02)  # 50 << 2 = 200 bytes from 100
    assert [(s.seq, len(s.payload)) for s in more] == [(ours(100), 200)]
    r.probe.interrupt(0.5)
    negotiated = r.probe.result().negotiated
    assert negotiated is not None and negotiated.window_scale == 2


def test_a_shut_window_is_probed_with_one_byte() -> None:
    r = run(peer={"syn_ack_window": 0}, send_data=b"xy")
    assert fl(r.open(at=0.01)) == ["."]  # nothing fits a shut window
    assert r.probe.next_deadline() == pytest.approx(1.01)
    [probe] = r.tick(1.01)
    assert probe.payload == b"x"


# -- timestamps --------------------------------------------------------------------------------
def test_every_segment_carries_timestamps_echoing_the_latest_in_order_tsval() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    [a] = r.feed("PA", 0, 0, b"abc", at=0.5, tsval=8_000_111)
    assert a.options.timestamp == (500, 8_000_111)
    [b] = r.feed("PA", 10, 0, b"zzz", at=0.6, tsval=8_000_222)  # out of order: no TS.Recent
    assert b.options.timestamp == (600, 8_000_111)
    [c] = r.feed("PA", 3, 0, b"defghij", at=0.7, tsval=8_000_333)  # fills the gap, in order
    assert c.options.timestamp == (700, 8_000_333) and c.ack == theirs(13)
    sent = [rec for rec in r.records() if rec.direction is Direction.SENT]
    assert all(rec.tsval is not None for rec in sent)
    assert [rec.options for rec in sent][1:] == ["NNT"] * (len(sent) - 1)


def test_no_timestamps_when_the_syn_ack_has_none() -> None:
    r = run(peer={"peer_timestamps": False})
    r.open(at=0.01)
    r.feed("FA", 0, 1, at=0.02)
    r.probe.interrupt(0.5)
    result = r.probe.result()
    sent = [rec for rec in result.segments if rec.direction is Direction.SENT]
    assert sent[0].options == "MSTNW"  # our SYN still offers them
    assert all(rec.tsval is None and rec.options == "" for rec in sent[1:])
    assert result.negotiated is not None and not result.negotiated.timestamps


# -- the sequence spaces (what timewait and profile go on from) -------------------------------
def test_spaces_before_the_syn_ack_have_no_peer_isn() -> None:
    r = run()
    assert r.probe.spaces() == SequenceSpaces(
        isn=ISN, snd_max=ISN, peer_isn=None, rcv_nxt=1, timestamps=False, ts_recent=0,
        window_field=65535, segments_emitted=0,
    )
    r.start()
    r.tick(1.0)  # the SYN again
    spaces = r.probe.spaces()
    assert (spaces.snd_max, spaces.peer_isn) == (ours(0), None)  # the SYN took ISN
    assert spaces.segments_emitted == 2 == r.sent
    assert not spaces.timestamps  # offered, not yet agreed to


def test_spaces_after_the_handshake() -> None:
    r = run(mode=CloseMode.PEER_CLOSES, send_data=b"hello")
    ack, data = r.open(at=0.01)
    assert data.payload == b"hello"
    spaces = r.probe.spaces()
    assert spaces.isn == ISN and spaces.peer_isn == PEER_ISN
    assert spaces.snd_max == ours(5) and spaces.rcv_nxt == theirs(0)
    assert spaces.timestamps and spaces.ts_recent == (10 + PEER_TS_OFFSET) & MASK
    assert spaces.window_field == 65535 >> 7 == ack.window
    assert spaces.segments_emitted == 3 == r.sent


def test_spaces_after_a_peer_closes_close_count_both_fins() -> None:
    request, response = b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n"
    r = run(mode=CloseMode.PEER_CLOSES, send_data=request)
    r.open(at=0.01)
    r.feed("PA", 0, len(request), response, at=0.02)
    ack, fin = r.feed("FA", len(response), len(request), at=0.03)
    assert fl([ack, fin]) == [".", "F."]
    assert r.feed("A", len(response) + 1, len(request) + 1, at=0.04) == []
    assert r.probe.done
    spaces = r.probe.spaces()
    assert spaces.snd_max == (ISN + 1 + len(request) + 1) & MASK
    # The peer's 19 bytes and its FIN carry its sequence numbers across 2**32.
    assert spaces.rcv_nxt == (PEER_ISN + 1 + len(response) + 1) & MASK < PEER_ISN
    # SYN, ACK, the request, the ACK of the response, the ACK of its FIN, our FIN.
    assert spaces.segments_emitted == r.sent == len(r.history) == 6
    assert spaces.ts_recent == (40 + PEER_TS_OFFSET) & MASK


def test_spaces_with_drop_final_ack_leave_the_peers_fin_unconsumed() -> None:
    r = run(mode=CloseMode.PEER_CLOSES, drop_final_ack=True)
    r.open(at=0.01)
    r.feed("FPA", 0, 0, b"bye", at=0.02)
    assert r.probe.spaces().rcv_nxt == theirs(3)  # its FIN never acknowledged


def test_the_connection_takes_its_templates_from_the_shared_cache() -> None:
    probe = make()
    probe.start(0.0)
    [syn] = probe.segments_to_send()
    shared = template(4, TcpFlags.SYN, ttl=64, window=65535, window_scale=7, timestamps=True)
    raw = shared.build(
        ipaddress.ip_address(SRC4).packed, ipaddress.ip_address(DST4).packed, SPORT, DPORT,
        ISN, 0, 0, 0,
    )
    assert syn == raw
    assert template(4, TcpFlags.RST) is template(4, TcpFlags.RST)


# -- ending ------------------------------------------------------------------------------------
def test_max_wait_ends_a_close_that_never_comes_with_a_rst() -> None:
    r = run(mode=CloseMode.PEER_CLOSES, max_wait=5.0)
    r.open(at=0.01)
    assert r.probe.next_deadline() == pytest.approx(5.01)
    [rst] = r.tick(5.01)
    assert rst.flags == TcpFlags.RST and rst.seq == ours(0)
    result = r.probe.result()
    assert result.close_kind is CloseKind.INCOMPLETE
    assert (result.our_final_state, result.peer_final_state) == (S.CLOSED, S.CLOSED)


def test_interrupt_sends_a_rst_outside_time_wait() -> None:
    r = run()
    r.open(at=0.01)
    r.feed("A", 0, 1, at=0.02)
    r.probe.interrupt(0.5)
    [rst] = r.out()
    assert rst.flags == TcpFlags.RST and rst.seq == ours(1)
    result = r.probe.result()
    assert result.interrupted and result.close_kind is CloseKind.INTERRUPTED


def test_interrupt_during_the_handshake_sends_nothing() -> None:
    r = run()
    r.start()
    r.probe.interrupt(0.5)
    assert r.out() == []
    result = r.probe.result()
    assert result.handshake is Handshake.INTERRUPTED and result.interrupted


def test_result_before_the_end_is_an_error() -> None:
    r = run()
    with pytest.raises(RuntimeError):
        r.probe.result()
    r.start()
    with pytest.raises(RuntimeError):
        r.probe.result()
    with pytest.raises(RuntimeError):
        r.probe.start(1.0)


def test_ipv6_four_way_close() -> None:
    r = run(version=6, no_wait=True)
    _ack, fin = r.open(at=0.01)
    assert fin.seq == ours(0)
    r.feed("A", 0, 1, at=0.02)
    r.feed("FA", 0, 1, at=0.03)
    result = r.probe.result()
    assert result.close_kind is CloseKind.FOUR_WAY and result.target == DST6


@pytest.mark.parametrize(
    "options",
    [
        {"version": 5},
        {"sport": 0},
        {"isn": -1},
        {"rto": 0},
        {"max_wait": 0},
        {"max_retries": -1},
        {"receive_window": 0},
        {"receive_window": (0xFFFF << 7) + 1},
        {"ttl": 0},
    ],
)
def test_bad_arguments_are_refused(options: dict[str, object]) -> None:
    base: dict[str, object] = {
        "version": 4, "src": bytes(4), "dst": bytes(4), "sport": 1, "dport": 2, "isn": 0,
    }
    with pytest.raises(ValueError):
        CloseProbe(**{**base, **options})  # type: ignore[arg-type]


def test_to_dict_schema() -> None:
    r = run(send_data=b"hi")
    r.open(at=0.01)
    r.feed("PA", 0, 2, b"ok", at=0.02)
    r.out()
    r.feed("FA", 2, 3, at=0.03)
    r.probe.interrupt(0.04)
    result = r.probe.result()
    assert isinstance(result, CloseResult)
    d = result.to_dict()
    assert list(d) == [
        "type", "target", "port", "source", "source_port", "mode", "drop_final_ack",
        "handshake", "handshake_rtt_us", "handshake_rtt_clock", "syn_retransmissions",
        "icmp", "negotiated", "close_kind", "half_close", "bytes_after_our_fin", "clock",
        "our_fin_to_peer_ack_us", "our_fin_to_peer_fin_us", "peer_ack_to_peer_fin_us",
        "peer_fin_to_our_ack_us", "our_ack_to_our_fin_us", "our_fin_retransmissions",
        "peer_fin_retransmissions", "peer_fin_retransmissions_end", "time_wait_due",
        "time_wait_held_us", "time_wait_cut_short", "time_wait_skipped", "our_final_state",
        "peer_final_state", "bytes_sent", "bytes_acked", "bytes_received", "interrupted",
        "error", "notes", "receive", "invalid", "invalid_by_kind", "notices", "icmp_notices",
        "answers_rate_limited", "unrecorded_segments", "failed_sends", "segments",
    ]
    assert d["type"] == "close" and d["mode"] == "we-close" and d["handshake"] == "open"
    assert d["negotiated"] == {
        "mss": 1460, "window_scale": 7, "sack_permitted": True, "timestamps": True,
    }
    assert d["bytes_received"] == 2 and "received" not in d
    assert d["segments"][0]["flags"] == "S" and d["segments"][0]["our_state"] == "SYN-SENT"
    json.dumps(d)
