"""The SYN probe's state machine on virtual time: no root, no sockets, no clock."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, IPerror, TCPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    IPerror6,
    IPv6,
)
from scapy.layers.inet6 import TCPerror as TCPerror6

from prober.cli import EXIT_OF_REASON
from prober.core.cookies import IsnKey
from prober.core.packets import TcpTemplate
from prober.core.parse import parse_packet
from prober.core.syn import (
    KEPT_PER_KIND,
    PortState,
    Reason,
    Stray,
    SynPhase,
    SynProbe,
    summarize,
)
from prober.core.timing import Clock, Stamp
from prober.core.wire import TcpFlags
from prober.output import human

SRC4, DST4, ROUTER4 = "198.19.0.1", "198.19.1.2", "198.19.0.2"
SRC6, DST6 = "2001:2:0:100::1", "2001:2:0:101::2"
SPORT, DPORT = 40000, 80
KEY = IsnKey(b"0123456789abcdef")


def make_probe(version: int = 4, number: int = 1, timeout: float = 1.0) -> SynProbe:
    src, dst = (SRC4, DST4) if version == 4 else (SRC6, DST6)
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    return SynProbe(
        number=number,
        template=TcpTemplate(version, TcpFlags.SYN),
        src=s,
        dst=d,
        sport=SPORT,
        dport=DPORT,
        isn=KEY.isn(s, d, SPORT, DPORT, number),
        timeout=timeout,
    )


def reply(probe: SynProbe, flags: str, ack: int, **tcp: int) -> bytes:
    ip = IP(src=DST4, dst=SRC4) if len(probe.dst) == 4 else IPv6(src=DST6, dst=SRC6)
    return bytes(ip / TCP(sport=DPORT, dport=SPORT, flags=flags, ack=ack, **tcp))


def sent_probe(version: int = 4, now: float = 100.0) -> SynProbe:
    probe = make_probe(version)
    probe.start(now)
    [segment] = probe.segments_to_send()
    assert parse_packet(segment).tcp is not None
    probe.sent(0, Stamp(user_ns=1_000_000_000, kernel_ns=1_000_000_500))
    return probe


def test_start_emits_one_syn_with_the_keyed_isn() -> None:
    probe = make_probe()
    probe.start(10.0)
    [segment] = probe.segments_to_send()
    tcp = parse_packet(segment).tcp
    assert tcp is not None
    assert tcp.flags == TcpFlags.SYN
    assert (tcp.sport, tcp.dport, tcp.seq) == (SPORT, DPORT, probe.isn)
    assert tcp.options.order == "MSTNW"
    assert probe.next_deadline() == 11.0
    assert probe.segments_to_send() == []


@pytest.mark.parametrize("version", [4, 6])
def test_syn_ack_with_right_ack_means_open_with_kernel_rtt(version: int) -> None:
    probe = sent_probe(version)
    packet = parse_packet(reply(probe, "SA", probe.isn + 1, seq=7, window=1000))
    assert probe.receive(packet, 100.0001, Stamp(user_ns=1_000_200_000, kernel_ns=1_000_042_500))
    assert probe.done and probe.next_deadline() is None
    result = probe.result()
    assert (result.state, result.reason) == (PortState.OPEN, Reason.SYN_ACK)
    assert result.rtt is not None
    assert result.rtt.clock is Clock.KERNEL and result.rtt.ns == 42_000
    assert result.tcp is not None and result.tcp.flags == "S." and result.tcp.seq == 7


def test_user_clock_is_used_when_a_kernel_stamp_is_missing() -> None:
    probe = make_probe()
    probe.start(0.0)
    probe.segments_to_send()
    probe.sent(0, Stamp(user_ns=5_000))  # no TX timestamp came back
    probe.receive(parse_packet(reply(probe, "SA", probe.isn + 1)), 0.1, Stamp(9_000, 7_000))
    rtt = probe.result().rtt
    assert rtt is not None and (rtt.clock, rtt.ns) == (Clock.USER, 4_000)


def test_kernel_tx_stamp_arriving_after_the_answer_is_used() -> None:
    probe = make_probe()
    probe.start(0.0)
    probe.segments_to_send()
    probe.sent(0, Stamp(user_ns=5_000))
    probe.receive(parse_packet(reply(probe, "SA", probe.isn + 1)), 0.1, Stamp(9_000, 7_000))
    probe.send_kernel_stamp(0, 6_000)
    rtt = probe.result().rtt
    assert rtt is not None and (rtt.clock, rtt.ns) == (Clock.KERNEL, 1_000)


@pytest.mark.parametrize("offset", [0, 1])
def test_rst_acking_isn_or_isn_plus_one_means_closed(offset: int) -> None:
    probe = sent_probe()
    assert probe.receive(parse_packet(reply(probe, "RA", probe.isn + offset)), 100.1, Stamp(2))
    assert probe.result().state is PortState.CLOSED


@given(ack=st.integers(0, 2**32 - 1), flags=st.sampled_from(["SA", "RA", "R", "A", "S", "FA"]))
def test_only_an_ack_that_proves_the_isn_is_accepted(ack: int, flags: str) -> None:
    probe = sent_probe()
    accepted = probe.receive(parse_packet(reply(probe, flags, ack)), 100.1, Stamp(2))
    right = {"SA": {probe.isn + 1}, "RA": {probe.isn, probe.isn + 1}}.get(flags, set())
    assert accepted == (ack in {a & 0xFFFFFFFF for a in right})
    assert probe.done == accepted


def test_wrong_ports_or_address_are_not_accepted() -> None:
    probe = sent_probe()
    good = probe.isn + 1
    for packet in (
        IP(src=DST4, dst=SRC4) / TCP(sport=DPORT + 1, dport=SPORT, flags="SA", ack=good),
        IP(src=DST4, dst=SRC4) / TCP(sport=DPORT, dport=SPORT + 1, flags="SA", ack=good),
        IP(src=ROUTER4, dst=SRC4) / TCP(sport=DPORT, dport=SPORT, flags="SA", ack=good),
    ):
        assert not probe.receive(parse_packet(bytes(packet)), 100.1, Stamp(2))
    assert not probe.done


def test_silence_until_the_deadline_means_filtered_no_response() -> None:
    probe = sent_probe(now=50.0)
    probe.handle_timer(50.999)
    assert not probe.done
    probe.handle_timer(51.0)
    result = probe.result()
    assert (result.state, result.reason, result.rtt) == (
        PortState.FILTERED,
        Reason.NO_RESPONSE,
        None,
    )


def test_late_answer_is_counted_but_never_changes_the_verdict() -> None:
    probe = sent_probe(now=0.0)
    probe.handle_timer(1.0)
    assert probe.receive(parse_packet(reply(probe, "SA", probe.isn + 1)), 1.5, Stamp(3))
    result = probe.result()
    assert result.reason is Reason.NO_RESPONSE and result.late == 1


def test_retransmitted_syn_ack_is_a_duplicate() -> None:
    probe = sent_probe()
    packet = parse_packet(reply(probe, "SA", probe.isn + 1))
    probe.receive(packet, 100.1, Stamp(2))
    probe.receive(packet, 101.1, Stamp(3))
    assert probe.result().duplicates == 1


def icmp_about(probe: SynProbe, seq: int, icmp_type: int = 3, code: int = 13) -> bytes:
    quoted = IPerror(src=SRC4, dst=DST4) / TCPerror(sport=SPORT, dport=DPORT, seq=seq, flags="S")
    return bytes(IP(src=ROUTER4, dst=SRC4) / ICMP(type=icmp_type, code=code) / quoted)


def test_icmp_unreachable_quoting_our_isn_means_filtered_with_its_source() -> None:
    probe = sent_probe()
    assert probe.receive(parse_packet(icmp_about(probe, probe.isn)), 100.1, Stamp(2))
    result = probe.result()
    assert (result.state, result.reason) == (PortState.FILTERED, Reason.ICMP_UNREACHABLE)
    assert result.icmp is not None
    assert (result.icmp.type, result.icmp.code, result.icmp.source) == (3, 13, ROUTER4)


def test_icmp_quoting_another_isn_is_refused() -> None:
    probe = sent_probe()
    assert not probe.receive(parse_packet(icmp_about(probe, probe.isn ^ 1)), 100.1, Stamp(2))


def test_icmpv6_unreachable_is_matched() -> None:
    probe = sent_probe(6)
    quoted = IPerror6(src=SRC6, dst=DST6) / TCPerror6(sport=SPORT, dport=DPORT, seq=probe.isn)
    packet = IPv6(src=DST6, dst=SRC6) / ICMPv6DestUnreach(code=4) / quoted
    assert probe.receive(parse_packet(bytes(packet)), 100.1, Stamp(2))
    assert probe.result().reason is Reason.ICMP_UNREACHABLE


def test_time_exceeded_means_expired_not_filtered() -> None:
    probe = sent_probe()
    probe.receive(parse_packet(icmp_about(probe, probe.isn, icmp_type=11, code=0)), 100.1, Stamp(2))
    assert probe.result().reason is Reason.ICMP_TIME_EXCEEDED
    assert probe.result().state is PortState.UNKNOWN


def test_send_failure_is_reported_not_lost() -> None:
    probe = make_probe()
    probe.start(0.0)
    probe.segments_to_send()
    probe.send_failed(0, "Operation not permitted")
    result = probe.result()
    assert result.reason is Reason.SEND_FAILED and result.error == "Operation not permitted"
    assert probe.next_deadline() is None


def test_interrupt_ends_a_waiting_probe_only() -> None:
    waiting, answered = sent_probe(), sent_probe()
    answered.receive(parse_packet(reply(answered, "SA", answered.isn + 1)), 100.1, Stamp(2))
    waiting.interrupt()
    answered.interrupt()
    assert waiting.result().reason is Reason.INTERRUPTED
    assert answered.result().reason is Reason.SYN_ACK
    assert waiting.phase is SynPhase.DONE


def test_probes_of_one_run_have_distinct_isns() -> None:
    isns = {make_probe(number=n).isn for n in range(1, 1001)}
    assert len(isns) == 1000


def test_run_verdict_is_the_best_answer_and_rtt_stats_like_ping() -> None:
    silent = sent_probe(now=0.0)
    silent.handle_timer(1.0)
    closed = sent_probe()
    closed.receive(
        parse_packet(reply(closed, "RA", closed.isn + 1)),
        100.1,
        Stamp(1_000_000_000 + 30_000, 1_000_000_500 + 30_000),
    )
    opened = sent_probe()
    opened.receive(
        parse_packet(reply(opened, "SA", opened.isn + 1)),
        100.1,
        Stamp(1_000_000_000 + 10_000, 1_000_000_500 + 10_000),
    )
    run = summarize("t", DST4, DPORT, [silent.result(), closed.result(), opened.result()])
    assert run.state is PortState.OPEN and run.reason is Reason.SYN_ACK
    assert (run.sent, run.answered, run.lost) == (3, 2, 1)
    rtt = run.rtt
    assert rtt is not None
    assert (rtt.min_us, rtt.avg_us, rtt.max_us, rtt.mdev_us) == (10.0, 20.0, 30.0, 10.0)
    summary = run.to_dict()
    assert summary["state"] == "open" and summary["rtt"]["clock"] == "kernel"


# -- ICMP that is not an error of reachability ------------------------------------------------


def deliver(probe: SynProbe, packet: bytes, now: float = 100.1) -> bool:
    """What the engine does with a packet routed to the probe: offer it, else count it."""
    parsed = parse_packet(packet)
    if probe.receive(parsed, now, Stamp(2)):
        return True
    probe.count_invalid(parsed)
    return False


@pytest.mark.parametrize(
    ("icmp_type", "code", "name"),
    [(4, 0, "source-quench"), (5, 1, "redirect"), (12, 0, "parameter-problem")],
)
def test_icmp_that_is_no_error_of_reachability_is_a_notice_not_a_verdict(
    icmp_type: int, code: int, name: str
) -> None:
    probe = sent_probe()
    assert deliver(probe, icmp_about(probe, probe.isn, icmp_type=icmp_type, code=code))
    assert not probe.done  # still waiting for the answer
    probe.handle_timer(101.0)
    result = probe.result()
    assert (result.state, result.reason) == (PortState.FILTERED, Reason.NO_RESPONSE)
    assert result.notices == 1 and result.invalid_by_kind == {}
    [notice] = result.icmp_notices
    assert (notice.type, notice.code, notice.source) == (icmp_type, code, ROUTER4)
    assert notice.name == name
    assert result.to_dict()["icmp_notices"][0]["kind"] == "other"


def test_redirect_then_syn_ack_is_open_with_the_notice_shown() -> None:
    probe = sent_probe()
    deliver(probe, icmp_about(probe, probe.isn, icmp_type=5, code=1))
    assert deliver(probe, reply(probe, "SA", probe.isn + 1))
    result = probe.result()
    assert result.reason is Reason.SYN_ACK and result.notices == 1
    assert "(+1 ICMP notice: ICMP redirect type=5 code=1" in human.syn_probe_line(result)


@pytest.mark.parametrize("icmp6", [ICMPv6PacketTooBig(mtu=1280), ICMPv6ParamProblem(code=0)])
def test_icmpv6_packet_too_big_and_parameter_problem_do_not_decide(icmp6: object) -> None:
    probe = sent_probe(6)
    quoted = IPerror6(src=SRC6, dst=DST6) / TCPerror6(sport=SPORT, dport=DPORT, seq=probe.isn)
    assert deliver(probe, bytes(IPv6(src=DST6, dst=SRC6) / icmp6 / quoted))
    assert not probe.done and probe.next_deadline() == 101.0
    probe.handle_timer(101.0)
    assert probe.result().reason is Reason.NO_RESPONSE and probe.result().notices == 1


def test_the_exit_table_has_no_reason_for_icmp_that_decides_nothing() -> None:
    assert set(EXIT_OF_REASON) == {*Reason, None}
    assert "icmp-other" not in {reason.value for reason in Reason}


# -- spoofed and stray packets: counted, never a verdict ---------------------------------------


def test_syn_ack_with_a_wrong_ack_is_counted_and_the_real_answer_still_decides() -> None:
    probe = sent_probe()
    for ack in (probe.isn, probe.isn + 2, 0, 2**32 - 1):
        assert not deliver(probe, reply(probe, "SA", ack))
    assert not probe.done
    assert deliver(probe, reply(probe, "SA", probe.isn + 1))
    result = probe.result()
    assert result.reason is Reason.SYN_ACK and result.invalid_by_kind == {Stray.WRONG_ACK: 4}
    assert result.to_dict()["invalid_by_kind"] == {"wrong-ack": 4}


def test_a_rst_storm_with_guessed_acks_never_closes_a_filtered_port() -> None:
    probe = sent_probe(now=0.0)
    guesses = [(probe.isn + 2 + 7919 * i) & 0xFFFFFFFF for i in range(500)]
    for i, ack in enumerate(guesses):
        deliver(probe, reply(probe, "RA" if i % 2 else "R", ack), now=0.001 * i)
    probe.handle_timer(1.0)
    result = probe.result()
    assert (result.state, result.reason) == (PortState.FILTERED, Reason.NO_RESPONSE)
    assert result.invalid_by_kind == {Stray.WRONG_ACK: 500}


def test_a_syn_ack_flood_from_a_host_probed_once_is_counted_and_not_kept() -> None:
    probe = sent_probe()
    good = reply(probe, "SA", probe.isn + 1)
    for _ in range(1000):
        assert deliver(probe, good)
    for i in range(1000):
        deliver(probe, reply(probe, "SA", probe.isn + 2 + i))
    result = probe.result()
    assert result.reason is Reason.SYN_ACK and result.duplicates == 999
    assert result.invalid_by_kind == {Stray.WRONG_ACK: 1000}
    # The pcap keeps the SYN, the answer and a bounded sample of the flood.
    assert len(result.wire) == 1 + 1 + KEPT_PER_KIND


def test_a_proven_rst_after_the_syn_ack_conflicts_and_never_flips_open_to_closed() -> None:
    probe = sent_probe()
    deliver(probe, reply(probe, "SA", probe.isn + 1))
    assert not deliver(probe, reply(probe, "RA", probe.isn + 1))
    result = probe.result()
    assert result.state is PortState.OPEN and result.invalid_by_kind == {Stray.CONFLICTING: 1}


def test_stray_kinds_wrong_source_wrong_port_and_not_an_answer() -> None:
    probe = sent_probe()
    good = probe.isn + 1
    strays = [
        IP(src=ROUTER4, dst=SRC4) / TCP(sport=DPORT, dport=SPORT, flags="SA", ack=good),
        IP(src=DST4, dst=SRC4) / TCP(sport=DPORT + 1, dport=SPORT, flags="SA", ack=good),
        IP(src=DST4, dst=SRC4) / TCP(sport=DPORT, dport=SPORT, flags="A", ack=good),
        IP(src=DST4, dst=SRC4) / TCP(sport=DPORT, dport=SPORT, flags="FA", ack=good),
        IP(src=DST4, dst=SRC4) / TCP(sport=DPORT, dport=SPORT, flags="S", seq=1),
    ]
    for packet in strays:
        assert not deliver(probe, bytes(packet))
    assert not probe.done
    probe.handle_timer(101.0)
    assert probe.result().invalid_by_kind == {
        Stray.WRONG_SOURCE: 1,
        Stray.WRONG_PORTS: 1,
        Stray.OTHER_SEGMENT: 3,
    }


@pytest.mark.parametrize(
    "quote",
    [
        {"seq": 12345},  # another ISN
        {"sport": SPORT + 1},  # another probe's port
        {"dport": DPORT + 1},
    ],
)
def test_icmp_quoting_another_probe_or_isn_is_counted_not_filtered(quote: dict[str, int]) -> None:
    probe = sent_probe()
    fields = {"sport": SPORT, "dport": DPORT, "seq": probe.isn, **quote}
    inner = IPerror(src=SRC4, dst=DST4) / TCPerror(flags="S", **fields)
    assert not deliver(probe, bytes(IP(src=ROUTER4, dst=SRC4) / ICMP(type=3, code=13) / inner))
    probe.handle_timer(101.0)
    result = probe.result()
    assert result.reason is Reason.NO_RESPONSE
    assert result.invalid_by_kind == {Stray.ICMP_NOT_OURS: 1}


def test_run_summary_shows_invalid_by_kind_and_notices() -> None:
    probe = sent_probe()
    deliver(probe, reply(probe, "SA", probe.isn + 5))
    deliver(probe, icmp_about(probe, probe.isn, icmp_type=5, code=1))
    deliver(probe, reply(probe, "SA", probe.isn + 1))
    run = summarize("t", DST4, DPORT, [probe.result()], invalid=1)
    summary = run.to_dict()
    assert (summary["invalid"], summary["invalid_by_kind"], summary["notices"]) == (
        1,
        {"wrong-ack": 1},
        1,
    )
    text = human.syn_summary(run)
    assert "1 invalid" in text and "1 wrong-ack" in text
    assert "ICMP notices: 1 quoted a SYN" in text and "redirect type=5 code=1" in text
    assert "port 80: open (syn-ack)" in text


def test_an_answer_read_after_the_deadline_is_late_whichever_ran_first() -> None:
    # Found by bench/fuzz: the event loop may read a packet before it runs the due timer;
    # the verdict must not depend on that order (and the deadline must not stay behind).
    probe = sent_probe(now=0.0)
    assert probe.receive(parse_packet(reply(probe, "SA", probe.isn + 1)), 1.00001, Stamp(3))
    result = probe.result()
    assert (result.reason, result.late) == (Reason.NO_RESPONSE, 1)
    assert probe.next_deadline() is None


@pytest.mark.parametrize(
    ("arrived_ns", "reason", "late"),
    [
        (1_000_000_500 + 999_000_000, Reason.SYN_ACK, 0),  # in time, read late: an answer
        (1_000_000_500 + 1_000_000_000, Reason.SYN_ACK, 0),  # exactly the timeout
        (1_000_000_500 + 1_000_000_001, Reason.NO_RESPONSE, 1),  # arrived after it: late
        (999_999_000, Reason.NO_RESPONSE, 1),  # before the send (a clock step): not trusted
    ],
)
def test_an_answer_read_after_the_deadline_is_judged_by_when_it_arrived(
    arrived_ns: int, reason: Reason, late: int
) -> None:
    # A loop that fell behind reads answers after their deadline; their kernel RX stamps
    # (CLOCK_REALTIME, as the TX stamp) say whether they came within the timeout.
    probe = sent_probe(now=0.0)
    answer = parse_packet(reply(probe, "SA", probe.isn + 1))
    assert probe.receive(answer, 1.5, Stamp(user_ns=arrived_ns + 10**8, kernel_ns=arrived_ns))
    result = probe.result()
    assert (result.reason, result.late) == (reason, late)
    assert probe.next_deadline() is None
    outcome_reason, rtt, error = probe.outcome()
    assert outcome_reason is reason and error is None
    assert (rtt is not None) == (reason is Reason.SYN_ACK)
    if rtt is not None:
        assert rtt.clock is Clock.KERNEL and rtt.ns == arrived_ns - 1_000_000_500
