"""bench/rtt_accuracy's arithmetic: which stamps each figure subtracts, and its spread over runs.

The bench itself runs by hand (it needs root and the other tools); these tests pin what its
figures compare, on made-up stamps, so a figure cannot silently change meaning.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from rtt_accuracy import tools as tl
from rtt_accuracy.results import Figure, Spread, ToolResult
from rtt_accuracy.stats import Offsets
from rtt_accuracy.wire import WireProbe, WireRun, join_peer_side


def own_side_run(*probes: tuple[int, int, int, int | None]) -> WireRun:
    """(sport, seq, SYN stamp, SYN/ACK stamp) as our end's capture saw them."""
    return WireRun(probes=[WireProbe(number=n, syn_ns=syn, sport=sport, seq=seq, synack_ns=ack)
                           for n, (sport, seq, syn, ack) in enumerate(probes)])


def test_each_syn_gets_its_own_arrival_on_the_peer_side() -> None:
    own = own_side_run((1000, 7, 100, 900), (1000, 7, 5100, 5900), (1001, 8, 9100, None))
    peer = own_side_run((1000, 7, 104, None), (1000, 7, 5106, None))  # port 1001 never arrived
    missing = join_peer_side(own, peer)
    assert [p.peer_syn_ns for p in own.probes] == [104, 5106, None]
    assert missing == 1
    assert own.probes[0].peer_rtt_ns == 900 - 104
    assert own.probes[0].rtt_ns == 900 - 100
    assert own.probes[2].peer_rtt_ns is None


def result(run: int, sent_ns: int, received_ns: int) -> ToolResult:
    # Our end's tcpdump stamps the SYN at 1,000 ns (before the driver), the peer's end at
    # 4,000 ns; the SYN/ACK reaches our end's tcpdump at 50,000 ns.
    wire = own_side_run((40000, 1, 1000, 50000))
    join_peer_side(wire, own_side_run((40000, 1, 4000, None)))
    report = tl.Report(rtt_us=(received_ns - sent_ns) / 1000, sport=40000, sent_ns=sent_ns,
                       received_ns=received_ns)
    return ToolResult(run=run, tool="prober", command=[], resolution="", returncode=0,
                      seconds=1.0, timed_out=False, claimed_sent=1, wire=wire,
                      pairing=tl.pair_by_port([report], wire), capture_dropped=0,
                      not_at_peer=0)


def test_per_end_offsets_use_the_peer_side_syn_and_our_side_syn_ack() -> None:
    measured = result(1, sent_ns=2000, received_ns=48000)
    value = {figure: measured.values(figure) for figure in Figure}
    assert value[Figure.SEND] == [pytest.approx(-2.0)]  # 2,000 - 4,000 ns
    assert value[Figure.RECEIVE] == [pytest.approx(-2.0)]  # 48,000 - 50,000 ns
    assert value[Figure.SEND_OWN_SIDE] == [pytest.approx(+1.0)]  # 2,000 - 1,000 ns
    # Reference A: 46 µs - (50,000 - 4,000) ns. The two ends' -2 µs cancel: the RTT error
    # is receive - send, which is why the per-end figures are reported.
    assert value[Figure.RTT_ERROR_PEER_SIDE] == [pytest.approx(0.0)]
    # Reference B: 46 µs - (50,000 - 1,000) ns: our end's tcpdump stamped the SYN early.
    assert value[Figure.RTT_ERROR_OWN_SIDE] == [pytest.approx(-3.0)]


def test_a_tool_without_instants_has_rtt_errors_only() -> None:
    wire = own_side_run((40000, 1, 1000, 50000))
    join_peer_side(wire, own_side_run((40000, 1, 4000, None)))
    pairing = tl.pair_by_port([tl.Report(rtt_us=146.0, sport=40000)], wire)
    hping = ToolResult(run=1, tool="hping3", command=[], resolution="", returncode=0,
                       seconds=1.0, timed_out=False, claimed_sent=1, wire=wire,
                       pairing=pairing, capture_dropped=0, not_at_peer=0)
    assert not hping.has_instants
    assert hping.values(Figure.SEND) == [] and hping.values(Figure.RECEIVE) == []
    assert hping.values(Figure.RTT_ERROR_PEER_SIDE) == [pytest.approx(100.0)]


def test_offsets_give_both_tails_and_the_size() -> None:
    offsets = Offsets.of([-3.0, -2.0, -1.0, 1.0])
    assert offsets.median_us == -1.5
    assert offsets.p1_us == -3.0 and offsets.p99_us == 1.0
    assert offsets.median_abs_us == 1.5 and offsets.p99_abs_us == 3.0
    empty = Offsets.of([])
    assert empty.count == 0 and math.isnan(empty.median_us)


def test_spread_pools_every_run_and_keeps_each_runs_range() -> None:
    runs = [result(1, sent_ns=2000, received_ns=48000), result(2, sent_ns=3000, received_ns=48000)]
    spread = Spread.of(runs, Figure.SEND)
    assert spread.pooled.count == 2
    assert spread.range_of("median_us") == (pytest.approx(-2.0), pytest.approx(-1.0))
    assert spread.to_dict()["per_run_range"]["median_us"] == [-2.0, -1.0]
