"""The close probe against a hostile or unlucky peer, on virtual time: data outside the window
and holes never filled (the receive space's cap), sends that fail, ICMP that decides nothing,
RST storms, and the ladder's order. The scripted peer is test_close_probe's."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCPerror
from scapy.layers.inet import IPerror as IPerror4
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPerror6, IPv6
from scapy.layers.inet6 import TCPerror as TCPerror6

from prober.core.close import (
    BULK_RECORDS,
    INVALID_ANSWERS_PER_SECOND,
    STRAY_RECORDS,
    CloseKind,
    CloseMode,
    Handshake,
    Stray,
    TimeWaitDue,
)
from prober.core.close_receive import MAX_PIECES, Placement, Reassembly
from prober.core.parse import parse_packet
from prober.core.timing import Clock, Stamp
from prober.core.trace import Direction
from prober.output.conversation import close_verdict, halfopen_report
from prober.output.ladder import ladder
from tests.unit.test_close_probe import (
    DPORT,
    DST4,
    DST6,
    ISN,
    SPORT,
    SRC4,
    SRC6,
    S,
    run,
)
from tests.unit.test_halfopen_probe import Peer, Sim, halfopen

WINDOW = 511 << 7  # what the probe advertises with window scaling on


# -- the receive space -------------------------------------------------------------------------
def test_out_of_window_data_and_a_hole_never_filled_stay_within_the_window() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    t = 0.02
    # Byte 0 never comes: everything after it waits. The peer overruns the window, repeats
    # and overlaps its segments, and sends far beyond the window's right edge.
    for round_ in range(3):
        for at in range(1000, WINDOW + 20_000, 1000):
            t += 0.001
            r.feed("A", at, 0, bytes(1400), at=t)
        t += 0.001
        r.feed("A", 10 * WINDOW + round_, 0, bytes(500), at=t)
    result_before = r.probe  # still open: no verdict from any of it
    assert not result_before.done and r.probe.our_state is S.ESTABLISHED
    r.probe.interrupt(t + 0.01)
    result = r.probe.result()
    stats = result.receive
    assert stats is not None and stats.window_bytes == WINDOW
    assert 0 < stats.buffered_high_water_bytes <= WINDOW
    assert stats.delivered_bytes == 0 and result.bytes_received == 0
    # Wholly beyond the window: the three far segments, and those starting past its end.
    starts_beyond = len(range(WINDOW, WINDOW + 20_000, 1000))
    assert stats.out_of_window_segments == 3 * (starts_beyond + 1)
    assert result.invalid_by_kind[Stray.OUT_OF_WINDOW] == stats.out_of_window_segments
    trimmed = 1000 * (WINDOW // 1000) + 1400 - WINDOW  # the tail of the segment on the edge
    assert stats.out_of_window_bytes == 3 * (starts_beyond * 1400 + 500 + trimmed)
    # Every ACK we sent still asks for byte 0.
    sent = [s for s in result.segments if s.direction is Direction.SENT]
    assert {s.relative_ack for s in sent[1:]} == {1}


def test_the_hole_filled_delivers_the_buffered_bytes_in_order() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    r.feed("A", 3, 0, b"defgh", at=0.02)
    r.feed("A", 2, 0, b"cdef", at=0.03)  # overlaps what is held
    [dup] = r.feed("A", 10, 0, b"k", at=0.04)
    assert dup.ack == (0xFFFFFFF0 + 1) & 0xFFFFFFFF  # still RCV.NXT 0
    [ack] = r.feed("A", 0, 0, b"ab", at=0.05)
    assert ack.ack == (0xFFFFFFF0 + 1 + 8) & 0xFFFFFFFF  # the hole filled: up to h
    assert r.probe.received == b"abcdefgh"
    r.feed("A", 8, 0, b"ij", at=0.06)
    assert r.probe.received == b"abcdefghijk"
    r.probe.interrupt(0.1)
    stats = r.probe.result().receive
    assert stats is not None and stats.buffered_high_water_bytes == 7  # cdefgh + k
    assert stats.out_of_order_segments == 3


def test_reassembly_holds_no_more_pieces_than_its_limit() -> None:
    reassembly = Reassembly(window=WINDOW)
    placements = [reassembly.add(at, b"x") for at in range(2, 2 + 8 * MAX_PIECES, 2)]
    assert placements.count(Placement.BUFFERED) == MAX_PIECES
    assert placements.count(Placement.DROPPED) == 3 * MAX_PIECES
    assert reassembly.pieces == MAX_PIECES and reassembly.buffered == MAX_PIECES
    assert reassembly.dropped_no_room_segments == 3 * MAX_PIECES
    assert reassembly.add(2, b"x") is Placement.DUPLICATE


def test_in_order_bytes_beyond_keep_are_counted_not_kept() -> None:
    r = run(mode=CloseMode.PEER_CLOSES, keep_received=1000)
    r.open(at=0.01)
    t = 0.01
    for k in range(2 * BULK_RECORDS):
        t += 0.001
        r.feed("A", k * 1000, 0, bytes([k % 256]) * 1000, at=t)
    r.probe.interrupt(t + 0.01)
    result = r.probe.result()
    assert result.bytes_received == 2 * BULK_RECORDS * 1000
    assert result.received == bytes(1000)
    assert result.receive is not None and result.receive.kept_bytes == 1000
    # The log holds the bulk budget's worth; the rest (the data and our ACKs) is counted.
    assert result.unrecorded_segments > 0
    assert len(result.segments) <= BULK_RECORDS + 4


# -- sends that fail ---------------------------------------------------------------------------
def test_a_failed_send_is_marked_failed_and_leaves_the_clock_and_pcap_alone() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.now = 1.0
    r.probe.start(1.0)
    r.out()
    r.now = 1.01
    raw = r.build("SA", -1, 0)
    stamp = Stamp(1_010_001_000, 1_010_000_000)
    assert r.probe.receive(parse_packet(raw), 1.01, stamp)
    [_ack] = r.probe.segments_to_send()
    r.probe.send_failed(1, "Operation not permitted")  # our ACK of the SYN/ACK
    r.sent = 2
    r.now = 1.5
    r.probe.interrupt(1.5)
    r.out()
    result = r.probe.result()
    assert result.clock is Clock.KERNEL  # the failed send has no stamp to lack
    assert result.failed_sends == 1 and result.error == "Operation not permitted"
    failed = [s for s in result.segments if not s.sent_ok]
    assert len(failed) == 1 and failed[0].flags == "."
    assert failed[0].send_error == "Operation not permitted" and failed[0].raw == b""
    assert all(s.time_ns >= 1_000_000_000 for s in result.segments)  # no 1970 record
    assert failed[0].time_ns == 1_010_000_000  # drawn where it was tried: after the SYN/ACK
    # What the CLI writes to the pcap: segments with bytes, i.e. not the failed one.
    assert [s.flags for s in result.segments if s.raw] == ["S", "S.", "R"]
    assert result.to_dict()["segments"][2]["send_error"] == "Operation not permitted"
    lines = ladder(result.segments, "us", "peer", ascii_only=True)
    assert "NOT SENT: Operation not permitted" in lines[3]


# -- ICMP that decides nothing, and strays ---------------------------------------------------------
def test_icmp_that_is_not_an_error_of_reachability_does_not_end_the_handshake() -> None:
    r = run()
    r.start()
    for icmp_type in (4, 5, 12):  # source quench, redirect, parameter problem
        icmp = bytes(
            IP(src="198.19.0.254", dst=SRC4) / ICMP(type=icmp_type, code=0)
            / IPerror4(src=SRC4, dst=DST4) / TCPerror(sport=SPORT, dport=DPORT, seq=ISN)
        )
        assert r.probe.receive(parse_packet(icmp), 0.005, Stamp(1))
        assert not r.probe.done
    r.feed("SA", -1, 0, at=0.01)
    r.probe.interrupt(0.1)
    result = r.probe.result()
    assert result.handshake is Handshake.OPEN and result.icmp is None
    # Notices about the path, not strays (prober.core.strays): each with its type and code.
    assert result.invalid_by_kind == {} and result.notices == 3
    for icmp_type in (4, 5, 12):
        assert any((n.type, n.code) == (icmp_type, 0) for n in result.icmp_notices)


def test_icmpv6_packet_too_big_does_not_end_the_handshake() -> None:
    r = run(6)
    r.start()
    icmp = bytes(
        IPv6(src="2001:2:0:100::fe", dst=SRC6) / ICMPv6PacketTooBig(mtu=1280)
        / IPerror6(src=SRC6, dst=DST6) / TCPerror6(sport=SPORT, dport=DPORT, seq=ISN)
    )
    assert r.probe.receive(parse_packet(icmp), 0.005, Stamp(1))
    assert not r.probe.done
    r.tick(10.0)
    result = r.probe.result()
    assert result.handshake is Handshake.NO_ANSWER
    assert result.invalid_by_kind == {} and result.notices == 1
    assert any((n.version, n.type, n.code) == (6, 2, 0) for n in result.icmp_notices)


def test_a_rst_storm_is_counted_draws_few_challenge_acks_and_decides_nothing() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    answers = 0
    for k in range(1000):  # in the window, never exactly RCV.NXT: 1000 in 0.1 s
        answers += len(r.feed("R", 1 + k, at=0.02 + k * 0.0001))
    for k in range(100):  # outside the window: ignored
        answers += len(r.feed("R", 10 * WINDOW + k, at=0.2))
    assert not r.probe.done and r.probe.our_state is S.ESTABLISHED
    assert answers == INVALID_ANSWERS_PER_SECOND
    r.feed("FA", 0, 0, at=0.3)  # the genuine close still goes through
    result_probe = r.probe
    assert result_probe.our_state is S.LAST_ACK
    r.feed("A", 1, 1, at=0.31)
    result = r.probe.result()
    assert result.close_kind is CloseKind.PEER_FIRST
    assert result.invalid_by_kind == {Stray.RST_NOT_EXACT: 1000, Stray.RST_OUT_OF_WINDOW: 100}
    assert result.invalid == 1100
    assert result.answers_rate_limited == 1000 - INVALID_ANSWERS_PER_SECOND
    received = [s for s in result.segments if s.direction is Direction.RECEIVED]
    assert sum("R" in s.flags for s in received) == STRAY_RECORDS


def test_a_syn_ack_flood_with_wrong_acks_is_counted_and_not_answered() -> None:
    r = run()
    r.start()
    for k in range(500):
        assert r.feed("SA", -1, 1 + k, at=0.001 + k * 1e-5) == []
    assert r.feed("SA", -1, 0, at=0.01)  # the real one
    r.probe.interrupt(0.1)
    result = r.probe.result()
    assert result.handshake is Handshake.OPEN and result.invalid_by_kind == {Stray.WRONG_ACK: 500}
    assert len(result.segments) < STRAY_RECORDS + 10


# -- the ladder's order ------------------------------------------------------------------------
def test_ladder_rows_run_in_time_order_and_say_what_they_answer() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.001)
    # The response arrives at 2.000 ms; our ACK leaves at 2.200 ms; the FIN had arrived at
    # 2.100 ms but is handled only after that ACK went out.
    r.now = 0.002
    data = r.build("PA", 0, 0, b"x" * 100)
    assert r.probe.receive(parse_packet(data), 0.002, Stamp(2_001_000, 2_000_000))
    for raw in r.probe.segments_to_send():
        r.probe.sent(r.sent, Stamp(2_201_000))
        r.probe.send_kernel_stamp(r.sent, 2_200_000)
        r.sent += 1
        assert parse_packet(raw).tcp is not None
    fin = r.build("FA", 100, 0)
    r.now = 0.0023
    assert r.probe.receive(parse_packet(fin), 0.0023, Stamp(2_101_000, 2_100_000))
    r.out()
    r.feed("A", 101, 1, at=0.003)
    result = r.probe.result()
    lines = ladder(result.segments, "us", "peer", ascii_only=True)
    rows = lines[1:-1]
    times = [float(row.split()[1]) for row in rows]
    assert times == sorted(times)
    data_row = next(i for i, row in enumerate(rows, start=1) if "len=100" in row)
    fin_row = next(row for row in rows if "F. seq=101" in row)
    ack_row = next(row for row in rows if "seq=1 ack=101 " in row)
    assert rows.index(fin_row) < rows.index(ack_row)  # 2.100 before 2.200
    assert f"answers #{data_row} after 0.200 ms" in ack_row


def test_halfopen_ladders_still_draw_through_the_shared_renderer() -> None:
    probe = halfopen()
    Sim(Peer(synack_retries=1)).launch(probe).run()
    report = halfopen_report(probe.result())
    rows = [line for line in report if line[:3].strip().isdigit()]
    flags = [next(w for w in row.split()[3:] if w.strip("─►◄")) for row in rows]
    assert flags == ["S", "S.", "S.", "R"]
    times = [float(row.split()[1]) for row in rows]
    assert times == sorted(times)
    assert any("kernel timestamps; rows in time order" in line for line in report)


# -- what the report claims about TIME-WAIT ---------------------------------------------------
def test_the_report_says_the_peers_time_wait_is_due_not_held() -> None:
    r = run(mode=CloseMode.PEER_CLOSES)
    r.open(at=0.01)
    r.feed("FA", 0, 0, at=0.05)
    r.feed("A", 1, 1, at=0.07)
    verdict = close_verdict(r.probe.result())
    assert "holds TIME-WAIT" not in verdict
    assert "the peer closed first, so TIME-WAIT is its to hold" in verdict
    assert "ss -tan state time-wait" in verdict
    assert "nstat -az TcpExtTCPTimeWaitOverflow" in verdict


def test_after_a_simultaneous_close_only_our_time_wait_is_claimed_as_held() -> None:
    r = run(msl=1.0)
    r.open(at=0.01)
    r.feed("FA", 0, 0, at=0.02)
    r.feed("A", 1, 1, at=0.03)
    r.tick(2.03)
    result = r.probe.result()
    assert result.time_wait_due is TimeWaitDue.BOTH
    verdict = close_verdict(result)
    assert "both sides hold" not in verdict
    assert "we held TIME-WAIT for 2.000 s" in verdict
    assert "the peer's TIME-WAIT is due as well, not observed here" in verdict
    assert result.to_dict()["time_wait_due"] == "both"
