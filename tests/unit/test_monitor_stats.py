"""Rolling statistics of a monitored target, against a brute-force reference (Hypothesis),
and the phases that spread targets over the interval."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.core.monitor_stats import TargetStats, phase_of
from prober.core.syn import PortState, Reason

OUTCOMES = {
    Reason.SYN_ACK: PortState.OPEN,
    Reason.RST: PortState.CLOSED,
    Reason.NO_RESPONSE: PortState.FILTERED,
    Reason.ICMP_UNREACHABLE: PortState.FILTERED,
    Reason.SEND_FAILED: PortState.UNKNOWN,
    Reason.UNRESOLVED: PortState.UNKNOWN,
}
ANSWERS_WITH_RTT = {Reason.SYN_ACK, Reason.RST}

rounds = st.lists(
    st.tuples(st.sampled_from(sorted(OUTCOMES)), st.floats(min_value=1e-6, max_value=10.0)),
    min_size=1, max_size=300,
)


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]


@settings(max_examples=150, deadline=None)
@given(rounds, st.integers(min_value=1, max_value=50))
def test_window_statistics_equal_a_brute_force_reference(
    outcomes: list[tuple[Reason, float]], window: int
) -> None:
    stats = TargetStats(window=window, ewma_weight=0.25)
    ewma: float | None = None
    for number, (reason, rtt) in enumerate(outcomes, start=1):
        rtt_s = rtt if reason in ANSWERS_WITH_RTT else None
        got = stats.update(OUTCOMES[reason], reason, rtt_s, at=float(number))
        recent = outcomes[max(0, number - window):number]
        rtts = [r for reason_, r in recent if reason_ in ANSWERS_WITH_RTT]
        sent = [reason_ for reason_, _ in recent
                if reason_ not in (Reason.SEND_FAILED, Reason.UNRESOLVED)]
        if rtt_s is not None:
            ewma = rtt_s if ewma is None else 0.75 * ewma + 0.25 * rtt_s
        assert got.rounds == number and got.window_rounds == len(recent)
        assert got.last_rtt_s == rtt_s
        assert got.ewma_rtt_s == pytest.approx(ewma) if ewma is not None else got.ewma_rtt_s is None
        if rtts:
            assert (got.min_rtt_s, got.max_rtt_s) == (min(rtts), max(rtts))
            assert got.p50_rtt_s == nearest_rank(rtts, 0.5)
            assert got.p99_rtt_s == nearest_rank(rtts, 0.99)
        else:
            assert got.min_rtt_s is got.p50_rtt_s is got.p99_rtt_s is None
        lost = sum(reason_ is Reason.NO_RESPONSE for reason_ in sent)
        assert got.loss == (lost / len(sent) if sent else None)
        assert got.unsent == len(recent) - len(sent)


def test_state_changes_are_kept_with_their_times() -> None:
    stats = TargetStats()
    stats.update(PortState.OPEN, Reason.SYN_ACK, 0.001, at=10.0)
    stats.update(PortState.OPEN, Reason.SYN_ACK, 0.001, at=11.0)
    stats.update(PortState.FILTERED, Reason.NO_RESPONSE, None, at=12.0)
    got = stats.update(PortState.OPEN, Reason.SYN_ACK, 0.002, at=13.0)
    changes = [(c.at, c.before, c.after) for c in got.state_changes]
    assert changes == [(10.0, None, PortState.OPEN), (12.0, PortState.OPEN, PortState.FILTERED),
                       (13.0, PortState.FILTERED, PortState.OPEN)]
    assert got.loss == pytest.approx(1 / 4)
    assert got.to_dict()["state_changes"][1] == {"at": 12.0, "before": "open",
                                                 "after": "filtered"}


def test_unsent_rounds_are_no_loss_of_the_path() -> None:
    stats = TargetStats()
    got = stats.update(PortState.UNKNOWN, Reason.UNRESOLVED, None, at=0.0)
    assert got.loss is None and got.unsent == 1


@pytest.mark.parametrize("window, weight", [(0, 0.5), (10, 0.0), (10, 1.5)])
def test_bad_arguments(window: int, weight: float) -> None:
    with pytest.raises(ValueError):
        TargetStats(window=window, ewma_weight=weight)


def test_phases_are_stable_and_spread_over_the_interval() -> None:
    keys = [f"198.18.{i // 256}.{i % 256}:80" for i in range(10_000)]
    phases = [phase_of(key, 5.0) for key in keys]
    assert phases == [phase_of(key, 5.0) for key in keys]  # the same on every call
    assert all(0 <= phase < 5.0 for phase in phases)
    # Uniform: each of 10 slots of 0.5 s holds 10 % of the targets, within 2 points.
    counts = [0] * 10
    for phase in phases:
        counts[int(phase / 0.5)] += 1
    assert all(800 <= count <= 1200 for count in counts), counts
    assert statistics.pstdev(phases) == pytest.approx(5.0 / math.sqrt(12), rel=0.05)
