"""The scan's stateless pieces without root: the keyed cookie, the sender's events, the shared
ring, the reply check against Scapy-built answers, and the outgoing-RST filter."""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, IPerror, TCPerror
from scapy.layers.inet6 import IPv6

from prober.core.parse import parse_packet
from prober.core.scan_cookie import MASK32, ScanKey
from prober.core.strays import Stray
from prober.core.syn import PortState, Reason
from prober.engine.scan.events import EventKind, EventReader, encode_note, encode_unanswered
from prober.engine.scan.replies import ReplyChecker
from prober.engine.scan.rsts import _rst_key
from prober.engine.scan.shared import KERNEL_TIME, RING_MASK, RING_SIZE, ScanShared
from prober.engine.sockets import ETH_P_IP, ETH_P_IPV6, PACKET_OUTGOING, outgoing_rst_filter
from tests.unit.test_engine_filter import PACKET_HOST, run_bpf

PORTS = tuple(range(40000, 40256))
OURS = socket.inet_aton("198.18.0.1")
TARGET = socket.inet_aton("198.19.0.7")


@given(st.binary(min_size=4, max_size=4), st.integers(1, 65535), st.integers(0, 2**40),
       st.integers(0, 40))
def test_the_send_index_comes_back_from_the_isn(dst: bytes, port: int, k: int,
                                                attempt: int) -> None:
    key = ScanKey(b"k" * 16, PORTS)
    cookie = key.cookie(OURS, dst, port)
    assert key.send_index(cookie, key.isn(cookie, k)) == k & MASK32
    assert key.source_port(cookie, attempt) in PORTS


def test_cookies_depend_on_key_target_and_port() -> None:
    a, b = ScanKey(b"a" * 16, PORTS), ScanKey(b"b" * 16, PORTS)
    assert a.cookie(OURS, TARGET, 80) != b.cookie(OURS, TARGET, 80)
    assert a.cookie(OURS, TARGET, 80) != a.cookie(OURS, TARGET, 81)
    assert a.cookie(OURS, TARGET, 80) == a.cookie(OURS, TARGET, 80)


def test_events_round_trip_across_partial_reads() -> None:
    read, write = os.pipe()
    os.set_blocking(read, False)
    frames = (
        encode_unanswered(EventKind.UNANSWERED, 7, 4, OURS, TARGET, 80, 2, None)
        + encode_note("done", sent=3)
        + encode_unanswered(EventKind.INTERRUPTED, 2**40, 6, bytes(16), bytes(15) + b"\1",
                            443, 1, "example.test")
    )
    reader = EventReader(read)
    os.write(write, frames[:5])
    assert list(reader.read()) == []
    os.write(write, frames[5:])
    os.close(write)
    first, note, third = list(reader.read())
    assert (first.position, first.port, first.attempts, first.address) == (7, 80, 2, TARGET)
    assert note == {"note": "done", "sent": 3}
    assert (third.kind, third.position, third.name) == (EventKind.INTERRUPTED, 2**40,
                                                        "example.test")
    list(reader.read())
    assert reader.closed
    os.close(read)


@pytest.fixture
def shared() -> ScanShared:
    segment = ScanShared.create(1000)
    yield segment
    segment.close()


def _send(shared: ScanShared, key: ScanKey, k: int, position: int, attempt: int,
          kernel: bool = True) -> int:
    """What the sender writes for send k; returns the SYN's ISN."""
    slot = k & RING_MASK
    shared.ring_position[slot] = position
    shared.ring_meta[slot] = attempt | (KERNEL_TIME if kernel else 0)
    shared.ring_time[slot] = 1_000
    shared.ring_tag[slot] = key.cookie(OURS, TARGET, 80) & MASK32
    shared.ring_k[slot] = k
    shared.counters[0] = k + 1
    return key.isn(key.cookie(OURS, TARGET, 80), k)


def _answer(isn: int, flags: str, key: ScanKey, attempt: int = 0, ack_delta: int = 1) -> bytes:
    sport = key.source_port(key.cookie(OURS, TARGET, 80), attempt)
    return bytes(IP(src="198.19.0.7", dst="198.18.0.1", ttl=61)
                 / TCP(sport=80, dport=sport, flags=flags, ack=(isn + ack_delta) & MASK32))


def test_a_synack_is_matched_to_its_send_once(shared: ScanShared) -> None:
    key = ScanKey(b"k" * 16, PORTS)
    checker = ReplyChecker(key, shared)
    isn = _send(shared, key, 5, position=3, attempt=1)
    answer = checker.check(parse_packet(_answer(isn, "SA", key, attempt=1)), 2_000, 2_000)
    assert answer is not None and answer.first
    assert (answer.position, answer.attempt, answer.state, answer.reason) == (
        3, 1, PortState.OPEN, Reason.SYN_ACK)
    assert checker.send_time(answer) == (1_000, True)
    again = checker.check(parse_packet(_answer(isn, "SA", key, attempt=1)), 3_000, 3_000)
    assert again is not None and not again.first and checker.duplicates == 1


def test_forgeries_and_strays_are_counted_not_answers(shared: ScanShared) -> None:
    key = ScanKey(b"k" * 16, PORTS)
    checker = ReplyChecker(key, shared)
    isn = _send(shared, key, 5, position=3, attempt=0)
    for packet in (
        _answer(isn, "SA", key, ack_delta=2),  # acks something never sent
        _answer(isn, "SA", key, attempt=1),  # the right ack, from the wrong attempt's port
        _answer(isn, "R", key),  # a RST without ACK cannot be tied to a send
        _answer(isn, "A", key),  # answers no SYN
    ):
        assert checker.check(parse_packet(packet), 1, 1) is None
    assert checker.invalid == {Stray.WRONG_ACK: 1, Stray.WRONG_PORTS: 1, Stray.STRAY_RST: 1,
                               Stray.OTHER_SEGMENT: 1}


def test_a_reused_ring_slot_makes_an_old_answer_late(shared: ScanShared) -> None:
    key = ScanKey(b"k" * 16, PORTS)
    checker = ReplyChecker(key, shared)
    isn = _send(shared, key, 5, position=3, attempt=0)
    _send(shared, key, 5 + RING_SIZE, position=9, attempt=0)  # the slot's next owner
    assert checker.check(parse_packet(_answer(isn, "SA", key)), 1, 1) is None
    assert checker.late == 1 and not checker.invalid


def test_rst_and_icmp_answers(shared: ScanShared) -> None:
    key = ScanKey(b"k" * 16, PORTS)
    checker = ReplyChecker(key, shared)
    isn = _send(shared, key, 1, position=0, attempt=0)
    closed = checker.check(parse_packet(_answer(isn, "RA", key)), 1, 1)
    assert closed is not None and closed.reason is Reason.RST
    isn = _send(shared, key, 3, position=2, attempt=0)
    at_isn = checker.check(parse_packet(_answer(isn, "RA", key, ack_delta=0)), 1, 1)
    assert at_isn is not None and at_isn.position == 2  # a RST acking the ISN itself
    isn = _send(shared, key, 2, position=1, attempt=0)
    sport = key.source_port(key.cookie(OURS, TARGET, 80), 0)
    icmp = IP(src="198.18.0.2", dst="198.18.0.1") / ICMP(type=3, code=13) / IPerror(
        src="198.18.0.1", dst="198.19.0.7") / TCPerror(sport=sport, dport=80, seq=isn)
    filtered = checker.check(parse_packet(bytes(icmp)), 1, 1)
    assert filtered is not None and filtered.reason is Reason.ICMP_UNREACHABLE
    assert filtered.state is PortState.FILTERED and filtered.position == 1
    redirect = IP(src="198.18.0.2", dst="198.18.0.1") / ICMP(type=5, code=1) / IPerror(
        src="198.18.0.1", dst="198.19.0.7") / TCPerror(sport=sport, dport=80, seq=isn)
    assert checker.check(parse_packet(bytes(redirect)), 1, 1) is None
    assert checker.notices == 1


@pytest.mark.parametrize(
    ("packet", "pkttype", "expected"),
    [
        (IP(src="198.18.0.1", dst="198.19.0.7") / TCP(sport=40001, dport=80, flags="R"),
         PACKET_OUTGOING, True),
        (IP(src="198.18.0.1", dst="198.19.0.7") / TCP(sport=40001, dport=80, flags="RA"),
         PACKET_OUTGOING, True),
        (IP(src="198.18.0.1", dst="198.19.0.7") / TCP(sport=40001, dport=80, flags="S"),
         PACKET_OUTGOING, False),
        (IP(src="198.19.0.7", dst="198.18.0.1") / TCP(sport=80, dport=40001, flags="R"),
         PACKET_HOST, False),
        (IPv6(src="2001:2::1", dst="2001:2::2") / TCP(sport=40001, dport=80, flags="R"),
         PACKET_OUTGOING, True),
        (IPv6(src="2001:2::1", dst="2001:2::2") / TCP(sport=40001, dport=80, flags="SA"),
         PACKET_OUTGOING, False),
    ],
)
def test_the_outgoing_rst_filter(packet: IP, pkttype: int, expected: bool) -> None:
    frame = bytes(packet)
    protocol = ETH_P_IP if frame[0] >> 4 == 4 else ETH_P_IPV6
    assert (run_bpf(outgoing_rst_filter(), frame, protocol, pkttype) > 0) is expected
    if expected:
        key = _rst_key(frame)
        assert key is not None and key[1:] == (80, 40001)
