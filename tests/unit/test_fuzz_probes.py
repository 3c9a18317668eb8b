"""Hypothesis stateful tests of every probe's state machine, through its sans-IO interface.

Each machine is driven as the engine drives it (tests/unit/fuzzing.py ``Harness``) with
segments that are random, plausible (right ports, ack near our ISN+1, seq near the peer's
ISN), or replays of what the probe sent; the harness checks the invariants after every step.
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from prober.core.close import CloseProbe
from prober.core.halfopen import CookieCheckProbe, HalfOpenProbe
from prober.core.states import TcpState
from prober.core.wire import (
    IPPROTO_TCP,
    IcmpError,
    IcmpKind,
    Packet,
    QuotedHeader,
    TcpFlags,
    TcpOptions,
    TcpSegment,
)
from tests.unit.fuzzing import (
    DPORT,
    DST,
    FUZZ_SETTINGS,
    ISN,
    OTHER,
    PEER_ISN,
    REQUEST,
    SPORT,
    SRC,
    Harness,
    ProbeKind,
    plausible_packet,
    random_packet,
)


class DataChooser:
    """Hypothesis draws every choice the harness makes."""

    def __init__(self, data: st.DataObject) -> None:
        self._data = data

    def integer(self, low: int, high: int) -> int:
        return self._data.draw(st.integers(low, high))

    def blob(self, most: int) -> bytes:
        return self._data.draw(st.binary(max_size=most))


class ProbeMachine(RuleBasedStateMachine):
    """One probe of ``KIND``; rules are the engine's calls, invariants in the harness."""

    KIND = ProbeKind.SYN

    harness: Harness

    @initialize(version=st.sampled_from([4, 6]))
    def start(self, version: int) -> None:
        self.harness = Harness(self.KIND, version)

    @rule(seconds=st.sampled_from([0.001, 0.1, 0.5, 1.0, 1.5, 3.0, 7.0, 30.0]))
    def time_passes(self, seconds: float) -> None:
        self.harness.advance(seconds)

    @rule(data=st.data(), timer_first=st.booleans())
    def plausible_segment(self, data: st.DataObject, timer_first: bool) -> None:
        packet = plausible_packet(DataChooser(data), self.harness.version, len(REQUEST) + 1)
        self.harness.deliver(packet, timer_first=timer_first)

    @rule(data=st.data())
    def random_segment(self, data: st.DataObject) -> None:
        self.harness.deliver(random_packet(DataChooser(data), self.harness.version))

    @rule(data=st.data())
    def replayed_segment(self, data: st.DataObject) -> None:
        self.harness.replay(DataChooser(data))

    @rule(data=st.data())
    def kernel_tx_stamp(self, data: st.DataObject) -> None:
        self.harness.kernel_stamp(DataChooser(data))

    @rule()
    def next_send_fails(self) -> None:
        self.harness.fail_next = True


class SynMachine(ProbeMachine):
    KIND = ProbeKind.SYN


class HalfOpenMachine(ProbeMachine):
    KIND = ProbeKind.HALFOPEN


class CookieCheckMachine(ProbeMachine):
    KIND = ProbeKind.COOKIE_CHECK


class CloseWeCloseMachine(ProbeMachine):
    KIND = ProbeKind.CLOSE_WE_CLOSE


class ClosePeerClosesMachine(ProbeMachine):
    KIND = ProbeKind.CLOSE_PEER_CLOSES


TestSynProbe = SynMachine.TestCase
TestHalfOpenProbe = HalfOpenMachine.TestCase
TestCookieCheckProbe = CookieCheckMachine.TestCase
TestCloseProbeWeClose = CloseWeCloseMachine.TestCase
TestCloseProbePeerCloses = ClosePeerClosesMachine.TestCase
for _case in (TestSynProbe, TestHalfOpenProbe, TestCookieCheckProbe, TestCloseProbeWeClose,
              TestCloseProbePeerCloses):
    _case.settings = FUZZ_SETTINGS
del _case  # a TestCase under any name is collected: run each machine once


# -- what the fuzzer found, kept as plain tests ------------------------------------------------


def icmp_about_our_syn(version: int, icmp_type: int, code: int = 0) -> Packet:
    quoted = QuotedHeader(SRC[version], DST[version], IPPROTO_TCP, SPORT, DPORT, ISN)
    error = IcmpError(icmp_type, code, quoted, IcmpKind.OTHER)
    return Packet(version, OTHER[version], SRC[version], 64, None, 96, icmp=error)


@pytest.mark.parametrize("kind", [ProbeKind.HALFOPEN, ProbeKind.COOKIE_CHECK])
@pytest.mark.parametrize(("version", "icmp_type"), [(4, 5), (4, 4), (6, 2)])
def test_an_icmp_notice_before_the_syn_ack_keeps_halfopen_waiting(
    kind: ProbeKind, version: int, icmp_type: int
) -> None:
    # Found by HalfOpenMachine once SynProbe kept redirects as notices: halfopen asked its
    # SynProbe for a result it did not have yet (RuntimeError).
    harness = Harness(kind, version)
    harness.deliver(icmp_about_our_syn(version, icmp_type))
    probe = harness.probe
    assert isinstance(probe, HalfOpenProbe | CookieCheckProbe)
    assert not probe.done
    harness.advance(5.0)  # no SYN/ACK either: it ends for want of one, with no error
    assert probe.done


def test_close_failed_send_keeps_time_in_order() -> None:
    harness = Harness(ProbeKind.CLOSE_WE_CLOSE, 4)
    harness.fail_next = True
    harness.advance(1.0)  # the SYN's retransmission fails
    harness.check_result(harness.probe.result())


@pytest.mark.parametrize(("version", "icmp_type"), [(4, 5), (6, 2)])
def test_close_handshake_is_not_decided_by_an_icmp_notice(version: int, icmp_type: int) -> None:
    harness = Harness(ProbeKind.CLOSE_WE_CLOSE, version)
    harness.deliver(icmp_about_our_syn(version, icmp_type))
    probe = harness.probe
    assert isinstance(probe, CloseProbe)
    assert not probe.done


def syn_ack(version: int, *, sack: bool, tsval: int) -> Packet:
    options = TcpOptions(mss=1460, window_scale=7, sack_permitted=sack, timestamp=(tsval, 0),
                         order="MSTNW" if sack else "MTNW")
    segment = TcpSegment(DPORT, SPORT, PEER_ISN, (ISN + 1) & 0xFFFFFFFF,
                         TcpFlags.SYN | TcpFlags.ACK, 65160, options, b"")
    return Packet(version, DST[version], SRC[version], 63, None, 60, tcp=segment)


def test_cookie_check_peer_state_follows_the_table() -> None:
    # Found by bench/fuzz (issue 7): the cookie check set the peer from SYN-RECEIVED back to
    # LISTEN with no such transition in states.py's table (now COOKIE_SHOWN, documented).
    harness = Harness(ProbeKind.COOKIE_CHECK, 4)
    harness.deliver(syn_ack(4, sack=True, tsval=1000))  # SYN2 goes out
    harness.advance(0.1)
    harness.deliver(syn_ack(4, sack=False, tsval=1100))  # only SYN2 offered no SACK
    probe = harness.probe
    assert isinstance(probe, CookieCheckProbe) and probe.done
    [*_, fresh, _rst] = probe.result().segments
    assert fresh.note == "fresh answer (SYN cookie?)" and fresh.peer_state is TcpState.LISTEN


@pytest.mark.parametrize("kind", [ProbeKind.CLOSE_WE_CLOSE, ProbeKind.CLOSE_PEER_CLOSES])
def test_close_deadline_never_lags_behind_a_packet(kind: ProbeKind) -> None:
    # Found by bench/fuzz (issue 7): a packet read before the engine's timer ran left the
    # passed deadline behind now; receive now acts on it first, as SynProbe does.
    harness = Harness(kind, 4)
    harness.advance(0.999995)  # the SYN's retransmission is due at 1 s
    stray = TcpSegment(DPORT, SPORT, PEER_ISN, 1, TcpFlags.ACK, 1000, TcpOptions(), b"")
    harness.deliver(Packet(4, DST[4], SRC[4], 63, 0, 40, tcp=stray), timer_first=False)
    probe = harness.probe
    assert isinstance(probe, CloseProbe)
    assert not probe.done and len(harness.sent) == 2  # the SYN's retransmission went first
