"""TimeWaitProbe on virtual time against a model peer (tests/unit/timewait_model.py) that
holds TIME-WAIT by Linux's rules, with the knobs of other stacks: what a user would check
in the verdicts, and every segment sent after the close against the numbers of the design."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prober.core.timewait import ABOVE_OFFSET, BELOW_OFFSET, BELOW_STRIDE
from prober.core.timewait_result import (
    DurationEnd,
    PeerClose,
    ReuseAnswer,
    ReuseKind,
    Role,
    TimeWaitConnection,
    TimeWaitResult,
    linux_time_wait_isn,
    summarize,
)
from prober.core.trace import Direction
from prober.core.wire import TcpFlags
from prober.output.timewait import timewait_report
from tests.unit.timewait_model import (
    START,
    After,
    PeerConfig,
    Reopen,
    TwRun,
    run_role,
)

F = TcpFlags
ONE_WAY = PeerConfig().one_way_s


def verdicts(
    *runs: TwRun, step: float = 1.0, max_time: float = 250.0, measure: bool = True,
    refin_at: float | None = None,
) -> TimeWaitResult:
    return summarize(
        target="198.18.0.18", port=80, source="198.18.0.1",
        connections=[r.probe.result() for r in runs], step=step, max_time=max_time,
        measure_duration=measure, refin_at=refin_at,
    )


def quick_duration(config: PeerConfig | None = None) -> TwRun:
    """The duration's connection without the duration: one SYN at +0.5 s."""
    return run_role(config, measure_duration=False)


def check_after_close(run: TwRun) -> None:
    """Every segment handed out after the close, against the design's numbers."""
    connection = run.probe.result()
    old = run.probe.connection.spaces()
    assert connection.old_snd_max == old.snd_max and connection.old_rcv_nxt == old.rcv_nxt
    probes = list(connection.probes)
    below = 0
    number = -1
    for handed in run.after_close():
        tcp = handed.tcp
        assert (tcp.sport, tcp.dport) == (40001, 80)
        timestamp = tcp.options.timestamp
        if tcp.flags == F.RST and any(
            p.answer is ReuseAnswer.SYN_ACK and tcp.seq == (p.seq + 1) & 0xFFFFFFFF
            for p in probes[: number + 1]
        ):
            assert timestamp is None  # our RST freeing the peer's new connection
            continue
        number += 1
        probe = probes[number]
        assert tcp.seq == probe.seq
        assert run.probe.elapsed(handed.at) == pytest.approx(probe.at_s, abs=1e-6)
        kind = probe.kind
        if kind in (ReuseKind.SYN_BELOW, ReuseKind.SYN_NEWER_TSVAL):
            assert tcp.flags == F.SYN and tcp.ack == 0
            assert tcp.seq == (old.isn - BELOW_OFFSET - below * BELOW_STRIDE) & 0xFFFFFFFF
            below += 1
            if kind is ReuseKind.SYN_BELOW:
                assert timestamp is None
            else:
                assert timestamp is not None and timestamp[0] == int(handed.at * 1000)
        elif kind is ReuseKind.SYN_ABOVE:
            assert tcp.flags == F.SYN and timestamp is None
            assert tcp.seq == (old.snd_max + ABOVE_OFFSET) & 0xFFFFFFFF
        elif kind is ReuseKind.FIN_AGAIN:
            assert tcp.flags == F.FIN | F.ACK
            assert (tcp.seq, tcp.ack) == ((old.snd_max - 1) & 0xFFFFFFFF, old.rcv_nxt)
            assert (timestamp is not None) == old.timestamps
            if timestamp is not None:
                assert timestamp == (int(handed.at * 1000), old.ts_recent)
        else:
            assert tcp.flags == F.RST  # no ACK flag
            offset = kind is ReuseKind.RST_OFFSET
            assert tcp.seq == (old.snd_max + offset) & 0xFFFFFFFF
            assert (timestamp is not None) == old.timestamps
    assert number == len(probes) - 1, "a probe without its segment"


def check_indices(run: TwRun) -> None:
    """Every handed-out segment is logged once, at its index's place; the pcap has all."""
    connection = run.probe.result()
    ours = [
        r for r in (*connection.close.segments, *connection.segments)
        if r.direction is Direction.SENT
    ]
    assert len(ours) == len(run.handed)
    for record, handed in zip(ours, run.handed, strict=True):
        if handed.failed:
            assert record.send_error is not None and record.raw == b""
        else:
            assert record.send_error is None and record.raw == handed.raw
    pcap = [r.raw for r in (*connection.close.segments, *connection.segments) if r.raw]
    received = sum(r.direction is Direction.RECEIVED for r in
                   (*connection.close.segments, *connection.segments))
    assert len(pcap) == sum(not h.failed for h in run.handed) + received


# -- the duration ----------------------------------------------------------------------------
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    length=st.floats(min_value=1.0, max_value=240.0),
    step=st.one_of(st.sampled_from([0.5, 1.0, 5.0]), st.floats(min_value=0.5, max_value=5.0)),
    isn=st.integers(min_value=0, max_value=0xFFFFFFFF),
)
def test_the_duration_brackets_the_true_length(length: float, step: float, isn: int) -> None:
    # A first probe after the TIME-WAIT ended would read as "none held" (see the xfail below).
    length = max(length, step + 0.01)
    max_time = length + 2 * step + 1
    run = run_role(PeerConfig(time_wait_s=length), step=step, max_time=max_time, isn=isn)
    result = verdicts(run, step=step, max_time=max_time)
    assert result.holds_time_wait is True
    assert result.duration_end is DurationEnd.MEASURED
    low, high = result.duration_low_s, result.duration_high_s
    assert low is not None and high is not None and result.duration_s is not None
    # A probe at +x reaches the peer 2 one-way delays after its TIME-WAIT began.
    assert low <= length <= high + 2 * ONE_WAY + 1e-6
    assert high - low == pytest.approx(step, abs=1e-6)
    assert result.duration_error_s == pytest.approx((high - low) / 2, abs=1e-3)
    assert result.duration_s == pytest.approx((high + low) / 2, abs=1e-3)
    assert run.peer.restarts == 0
    assert run.probe.connection.spaces().isn == isn
    check_after_close(run)


@settings(max_examples=25, deadline=None)
@given(
    max_time=st.floats(min_value=3.0, max_value=150.0),
    beyond=st.floats(min_value=0.5, max_value=100.0),
    step=st.sampled_from([0.5, 1.0, 2.5, 5.0]),
)
def test_a_time_wait_beyond_max_is_still_held(max_time: float, beyond: float, step: float) -> None:
    max_time = max(max_time, step)
    run = run_role(PeerConfig(time_wait_s=max_time + beyond), step=step, max_time=max_time)
    result = verdicts(run, step=step, max_time=max_time)
    assert result.holds_time_wait is True
    assert result.duration_end is DurationEnd.STILL_HELD
    assert result.duration_low_s is not None
    assert max_time - step - 1e-6 <= result.duration_low_s <= max_time + 1e-6
    assert result.duration_high_s is None and result.duration_s is None


@pytest.mark.parametrize("version", [4, 6])
def test_a_windows_like_240_s_time_wait_beyond_max_is_still_held(version: int) -> None:
    run = run_role(PeerConfig(version=version, time_wait_s=240.0), step=2.0, max_time=100.0)
    result = verdicts(run, step=2.0, max_time=100.0)
    assert result.duration_end is DurationEnd.STILL_HELD
    assert result.duration_low_s is not None and 98.0 <= result.duration_low_s <= 100.0
    assert result.duration_s is None and result.duration_error_s is None
    check_after_close(run)


def test_below_isn_syns_never_restart_the_timer() -> None:
    run = run_role(PeerConfig(timestamps=True), step=1.0, max_time=70.0)
    assert run.peer.restarts == 0
    assert run.peer.tw_entered is not None and run.peer.tw_ended is not None
    assert run.peer.tw_ended - run.peer.tw_entered == pytest.approx(60.0)
    assert len(run.probe.probes()) == 61  # the early one at +0.25 s, then one a second
    check_after_close(run)


@pytest.mark.parametrize("timestamps", [True, False])
def test_fin_again_restarts_the_time_wait(timestamps: bool) -> None:
    run = run_role(PeerConfig(timestamps=timestamps), step=1.0, max_time=120.0, refin_at=20.0)
    result = verdicts(run, step=1.0, max_time=120.0, refin_at=20.0)
    assert run.peer.restarts == 1
    assert result.refin_acked is True
    assert result.duration_s is not None and 79.0 <= result.duration_s <= 81.0
    assert result.duration_after_refin_s is not None
    assert result.duration_after_refin_s == pytest.approx(60.0, abs=1.0)
    refin = run.probe.result().first(ReuseKind.FIN_AGAIN)
    assert refin is not None and refin.at_s == 20.0
    assert refin.answer is ReuseAnswer.TIME_WAIT_ACK
    assert all(abs(p.at_s - 20.0) >= 0.5 for p in run.probe.probes()
               if p.kind is ReuseKind.SYN_BELOW)
    check_after_close(run)


# -- no TIME-WAIT ------------------------------------------------------------------------------
def test_a_peer_that_keeps_no_time_wait() -> None:
    run = run_role(PeerConfig(keeps_no_time_wait=True), step=1.0, max_time=30.0)
    result = verdicts(run, step=1.0, max_time=30.0)
    assert result.peer_close is PeerClose.FIN
    assert result.holds_time_wait is False
    assert "SYN/ACK" in result.holds_evidence and "kept no TIME-WAIT" in result.holds_evidence
    assert result.duration_end is DurationEnd.NO_TIME_WAIT
    assert [p.answer for p in run.probe.probes()] == [ReuseAnswer.SYN_ACK]
    assert run.peer.freed == 1  # our RST freed the connection its SYN/ACK opened
    check_after_close(run)


@pytest.mark.parametrize("version", [4, 6])
def test_a_peer_that_resets_our_fin(version: int) -> None:
    run = run_role(PeerConfig(version=version, resets_our_fin=True), step=1.0, max_time=30.0)
    result = verdicts(run, step=1.0, max_time=30.0)
    assert result.peer_close is PeerClose.FIN_THEN_RST
    assert result.holds_time_wait is False and "reset our FIN" in result.holds_evidence
    [probe] = run.probe.probes()
    assert probe.kind is ReuseKind.SYN_BELOW and probe.answer is ReuseAnswer.SYN_ACK
    check_after_close(run)


def test_the_other_roles_send_nothing_after_a_reset_fin() -> None:
    run = run_role(PeerConfig(resets_our_fin=True), role=Role.ABOVE_ISN)
    assert run.probe.probes() == [] and run.after_close() == []


# -- reopening -------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [4, 6])
def test_an_above_isn_syn_reopens_with_linuxs_isn(version: int) -> None:
    config = PeerConfig(version=version)
    above = run_role(config, role=Role.ABOVE_ISN)
    newer = run_role(config, role=Role.NEWER_TSVAL)
    result = verdicts(quick_duration(config), above, newer, measure=False)
    assert result.above_isn_accepted is True and result.above_isn_linux_isn is True
    assert result.newer_tsval_accepted is True and result.newer_tsval_linux_isn is True
    probe = above.probe.result().first(ReuseKind.SYN_ABOVE)
    assert probe is not None and probe.answer is ReuseAnswer.SYN_ACK
    assert probe.answer_seq == linux_time_wait_isn(above.probe.connection.spaces().rcv_nxt)
    assert above.peer.freed == newer.peer.freed == 1
    for run in (above, newer):
        check_after_close(run)


def test_a_reopen_with_another_isn() -> None:
    config = PeerConfig(reopen=Reopen.OTHER_ISN)
    result = verdicts(
        quick_duration(config), run_role(config, role=Role.ABOVE_ISN),
        run_role(config, role=Role.NEWER_TSVAL), measure=False,
    )
    assert result.above_isn_accepted is True and result.above_isn_linux_isn is False
    assert result.newer_tsval_accepted is True and result.newer_tsval_linux_isn is False


def test_a_peer_that_never_reopens_answers_with_the_time_wait_ack() -> None:
    config = PeerConfig(reopen=Reopen.REFUSE)
    above = run_role(config, role=Role.ABOVE_ISN)
    result = verdicts(quick_duration(config), above, run_role(config, role=Role.NEWER_TSVAL),
                      measure=False)
    assert result.above_isn_accepted is False and result.above_isn_linux_isn is None
    assert result.newer_tsval_accepted is False
    assert [p.answer for p in above.probe.probes()] == [ReuseAnswer.TIME_WAIT_ACK] * 2


def test_no_newer_tsval_syn_without_timestamps() -> None:
    config = PeerConfig(timestamps=False)
    newer = run_role(config, role=Role.NEWER_TSVAL)
    connection = newer.probe.result()
    assert connection.timestamps is False
    assert [p.kind for p in connection.probes] == [ReuseKind.SYN_BELOW]
    assert all(h.tcp.options.timestamp is None for h in newer.after_close())
    assert any("no timestamps" in note for note in connection.notes)
    result = verdicts(quick_duration(config), run_role(config, role=Role.ABOVE_ISN), newer,
                      measure=False)
    assert result.newer_tsval_accepted is None and result.newer_tsval_linux_isn is None
    assert result.above_isn_accepted is True
    check_after_close(newer)


# -- assassination ---------------------------------------------------------------------------
@pytest.mark.parametrize("timestamps", [True, False])
@pytest.mark.parametrize(("rfc1337", "assassinated"), [(False, True), (True, False)])
def test_assassination(rfc1337: bool, assassinated: bool, timestamps: bool) -> None:
    config = PeerConfig(rfc1337=rfc1337, timestamps=timestamps)
    run = run_role(config, role=Role.ASSASSINATE)
    result = verdicts(quick_duration(config), run, measure=False)
    assert result.offset_rst_ignored is True
    assert result.assassinated is assassinated
    assert run.peer.tw_killed_by_rst is assassinated
    kinds = [p.kind for p in run.probe.probes()]
    assert kinds == [ReuseKind.SYN_BELOW, ReuseKind.RST_OFFSET, ReuseKind.SYN_BELOW,
                     ReuseKind.RST_EXACT, ReuseKind.SYN_BELOW]
    last = ReuseAnswer.SYN_ACK if assassinated else ReuseAnswer.TIME_WAIT_ACK
    assert run.probe.probes()[-1].answer is last
    check_after_close(run)


# -- a peer that does not close first -------------------------------------------------------
def test_a_peer_that_never_closes_first() -> None:
    run = run_role(PeerConfig(never_closes_first=True), close_timeout=2.0)
    connection = run.probe.result()
    assert connection.peer_close is PeerClose.DID_NOT_CLOSE
    assert run.handed[-1].tcp.flags & F.RST and run.peer.reset_by_us
    assert run.handed[-1].at - START == pytest.approx(2.0, abs=0.01)  # close_timeout
    assert connection.holds_time_wait()[0] is None
    result = verdicts(run)
    assert result.holds_time_wait is None
    assert run.after_close() == [] and connection.probes == ()
    assert any("did not close first" in line for line in timewait_report(result))
    check_indices(run)


# -- lost answers, late answers, failed sends ------------------------------------------------
def test_a_lost_answer_does_not_end_the_duration() -> None:
    run = run_role(PeerConfig(time_wait_s=10.0, lose_answers=frozenset({3, 5})), max_time=20.0)
    result = verdicts(run, max_time=20.0)
    answers = [p.answer for p in run.probe.probes()]
    assert answers[2] is ReuseAnswer.NONE and answers[4] is ReuseAnswer.NONE
    assert result.duration_end is DurationEnd.MEASURED
    assert (result.duration_low_s, result.duration_high_s) == (9.0, 10.0)


def test_a_late_syn_ack_still_ends_the_duration() -> None:
    run = run_role(PeerConfig(time_wait_s=10.0, listener_delay_s=1.5), max_time=20.0)
    result = verdicts(run, max_time=20.0)
    assert result.duration_end is DurationEnd.MEASURED
    assert (result.duration_low_s, result.duration_high_s) == (9.0, 10.0)
    gone = next(p for p in run.probe.probes() if p.answer is ReuseAnswer.SYN_ACK)
    assert gone.at_s == 10.0 and "late" in gone.note
    check_after_close(run)


def test_a_send_failure_marks_the_probe_not_sent() -> None:
    base = run_role(PeerConfig(time_wait_s=5.0), max_time=10.0).probe.connection.spaces()
    run = run_role(PeerConfig(time_wait_s=5.0), max_time=10.0,
                   fail=frozenset({base.segments_emitted + 1}))
    connection = run.probe.result()
    answers = [p.answer for p in connection.probes]
    assert answers[1] is ReuseAnswer.NOT_SENT
    assert any("not sent" in note for note in connection.notes)
    result = verdicts(run, max_time=10.0)
    assert result.duration_end is DurationEnd.MEASURED
    check_indices(run)


# -- interrupted -------------------------------------------------------------------------------
@pytest.mark.parametrize(("at", "peer_close"), [
    (0.0015, PeerClose.NOT_ESTABLISHED),  # before the SYN/ACK
    (0.003, PeerClose.INTERRUPTED),  # before the peer's FIN
    (10.5, PeerClose.FIN),  # in phase two
])
def test_interrupt(at: float, peer_close: PeerClose) -> None:
    run = run_role(PeerConfig(), interrupt_at=at, max_time=60.0)
    connection = run.probe.result()
    assert connection.interrupted
    assert connection.peer_close is peer_close
    result = verdicts(run, max_time=60.0)
    assert result.interrupted
    assert result.duration_end is not DurationEnd.MEASURED
    assert timewait_report(result)
    json.dumps(result.to_dict())
    check_indices(run)
    if connection.probes:
        check_after_close(run)


# -- indices ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("config", "role", "max_time", "refin_at"), [
    (PeerConfig(), Role.DURATION, 70.0, 20.0),
    (PeerConfig(version=6, timestamps=False), Role.DURATION, 70.0, None),
    (PeerConfig(keeps_no_time_wait=True), Role.DURATION, 250.0, None),
    (PeerConfig(resets_our_fin=True), Role.DURATION, 250.0, None),
    (PeerConfig(), Role.ASSASSINATE, 250.0, None),
    (PeerConfig(version=6), Role.ABOVE_ISN, 250.0, None),
    (PeerConfig(), Role.NEWER_TSVAL, 250.0, None),
])
def test_every_segment_is_logged_once(
    config: PeerConfig, role: Role, max_time: float, refin_at: float | None
) -> None:
    run = run_role(config, role=role, max_time=max_time, refin_at=refin_at)
    check_indices(run)
    check_after_close(run)
    connection: TimeWaitConnection = run.probe.result()
    json.dumps(connection.to_dict())


# -- more peers --------------------------------------------------------------------------------
def test_a_lost_ack_of_our_fin_restarts_the_time_wait_and_t0_follows() -> None:
    # Our FIN goes again after the RTO; the peer, in TIME-WAIT, ACKs it and restarts 2 MSL.
    run = run_role(PeerConfig(time_wait_s=30.0, lose_fin_ack=True), max_time=40.0)
    result = verdicts(run, max_time=40.0)
    assert run.peer.restarts == 1
    assert result.holds_time_wait is True
    assert (result.duration_low_s, result.duration_high_s) == (29.0, 30.0)
    fins = [h for h in run.handed if h.tcp.flags & F.FIN]
    assert len(fins) == 2 and fins[1].at - fins[0].at == pytest.approx(1.0, abs=0.01)
    check_after_close(run)
    check_indices(run)


@pytest.mark.parametrize("version", [4, 6])
def test_a_fin_on_the_response(version: int) -> None:
    run = run_role(PeerConfig(version=version, fin_with_response=True), max_time=70.0)
    result = verdicts(run, max_time=70.0)
    assert result.peer_close is PeerClose.FIN
    assert result.duration_end is DurationEnd.MEASURED
    assert result.duration_s == 59.5
    check_after_close(run)


def test_nothing_listening_after_the_time_wait_ends_it_with_a_rst() -> None:
    run = run_role(PeerConfig(time_wait_s=10.0, listening=False), max_time=20.0)
    result = verdicts(run, max_time=20.0)
    assert run.probe.probes()[-1].answer is ReuseAnswer.RST
    assert result.duration_end is DurationEnd.MEASURED and result.duration_s == 9.5
    none = verdicts(run_role(PeerConfig(keeps_no_time_wait=True, listening=False)))
    assert none.holds_time_wait is False and "a RST" in none.holds_evidence


def test_no_duration_asks_once() -> None:
    run = run_role(PeerConfig(), measure_duration=False)
    [probe] = run.probe.probes()
    assert probe.at_s == 0.5 and probe.answer is ReuseAnswer.TIME_WAIT_ACK
    result = verdicts(run, measure=False)
    assert result.holds_time_wait is True
    assert result.duration_end is DurationEnd.NOT_MEASURED and result.max_s is None


def test_a_time_wait_shorter_than_the_step_is_not_read_as_none() -> None:
    # The duration's early probe (+0.5 s with a 5 s step) sees it; the next shows its end.
    run = run_role(PeerConfig(time_wait_s=2.0), step=5.0, max_time=30.0)
    result = verdicts(run, step=5.0, max_time=30.0)
    assert result.holds_time_wait is True
    assert result.duration_end is DurationEnd.MEASURED
    assert result.duration_low_s is not None and result.duration_high_s is not None
    assert result.duration_low_s <= 2.0 <= result.duration_high_s


@pytest.mark.parametrize("after", [After.SILENT, After.ICMP])
def test_answers_that_change_to_silence_or_icmp_are_not_still_held(after: After) -> None:
    run = run_role(PeerConfig(time_wait_s=10.0, after_time_wait=after), max_time=30.0)
    answers = [p.answer for p in run.probe.probes()]
    # answers[0] is the early probe (+0.25 s); answers[k] the one at +k s.
    assert len(answers) == 31 and answers[9] is ReuseAnswer.TIME_WAIT_ACK
    assert set(answers[10:]) == {ReuseAnswer.NONE if after is After.SILENT else ReuseAnswer.ICMP}
    result = verdicts(run, max_time=30.0)
    assert result.holds_time_wait is True
    assert result.duration_end is DurationEnd.UNKNOWN  # not "still TIME-WAIT at --max"
    assert result.duration_low_s == 9.0 and result.duration_s is None
    assert any("TIME-WAIT ACKs until +9 s" in note for note in result.notes)
    assert not any("still" in line for line in timewait_report(result) if "Duration" in line)


def test_a_lost_answer_at_max_is_still_held() -> None:
    # Answer 1 is the early probe's (+0.25 s), answer k + 1 the one at +k s.
    run = run_role(PeerConfig(time_wait_s=60.0, lose_answers=frozenset({21})), max_time=20.0)
    assert run.probe.probes()[-1].answer is ReuseAnswer.NONE
    result = verdicts(run, max_time=20.0)
    assert result.duration_end is DurationEnd.STILL_HELD and result.duration_low_s == 19.0


def test_an_abortive_close_holds_no_time_wait() -> None:
    run = run_role(PeerConfig(aborts=True))
    connection = run.probe.result()
    assert connection.peer_close is PeerClose.RST
    assert connection.probes == () and run.after_close() == []
    result = verdicts(run)
    assert result.holds_time_wait is False and "abortive" in result.holds_evidence
    assert result.duration_end is DurationEnd.NO_TIME_WAIT
    check_indices(run)


def test_a_lost_first_answer_is_no_evidence_against_time_wait() -> None:
    # The early probe's answer and the +1 s one's are lost: +2 s is the first answered.
    run = run_role(PeerConfig(time_wait_s=10.0, lose_answers=frozenset({1, 2})), max_time=30.0)
    assert run.probe.probes()[0].answer is ReuseAnswer.NONE
    result = verdicts(run, max_time=30.0)
    assert result.holds_time_wait is True
    assert "2.00 s after the peer's last ACK" in result.holds_evidence
    assert result.duration_end is DurationEnd.MEASURED and result.duration_s == 9.5


def test_a_path_longer_than_the_step_still_shows_the_time_wait() -> None:
    # Round trip 0.7 s, a probe every 0.5 s: each TIME-WAIT ACK lands in the next window.
    run = run_role(PeerConfig(time_wait_s=10.0, one_way_s=0.35), step=0.5, max_time=30.0)
    result = verdicts(run, step=0.5, max_time=30.0)
    assert result.holds_time_wait is True
    assert result.duration_low_s is not None and result.duration_high_s is not None
    assert result.duration_low_s <= 10.0 - 0.7 <= result.duration_high_s


@pytest.mark.parametrize("lost", [frozenset({1}), frozenset({1, 2})])
def test_an_assassination_after_lost_answers_is_not_read_as_no_time_wait(
    lost: frozenset[int],
) -> None:
    config = PeerConfig(lose_answers=lost)
    run = run_role(config, role=Role.ASSASSINATE)
    holds, _ = run.probe.result().holds_time_wait()
    # Only the SYN before the RSTs may say there was none; the one after them may not.
    assert holds is (True if lost == frozenset({1}) else None)


@settings(max_examples=30, deadline=None)
@given(
    length=st.floats(min_value=5.0, max_value=120.0),
    refin_fraction=st.floats(min_value=0.05, max_value=0.9),
    step=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_fin_again_anywhere_restarts_the_whole_length(
    length: float, refin_fraction: float, step: float
) -> None:
    refin = round(max(refin_fraction * length, 0.1), 3)
    max_time = refin + length + 3 * step + 1
    run = run_role(PeerConfig(time_wait_s=length), step=step, max_time=max_time, refin_at=refin)
    result = verdicts(run, step=step, max_time=max_time, refin_at=refin)
    assert run.peer.restarts == 1 and result.refin_acked is True
    low, high = result.duration_low_s, result.duration_high_s
    assert low is not None and high is not None
    # The SYN next to the FIN is skipped, so the bracket may be up to two steps wide.
    assert low <= refin + length <= high + 2 * ONE_WAY + 1e-6
    assert high - low <= 2 * step + 1e-6
    assert result.duration_after_refin_s is not None
    assert abs(result.duration_after_refin_s - length) <= step + 1e-3
    check_after_close(run)
