"""The report math of bench/monitor_scale: histograms, the row of a run, "holds", memory
growth and the peers' ratios (no lab, no packets)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from monitor_scale import report
from monitor_scale.stats import LogHistogram, Tally


def test_histogram_quantiles_are_within_a_bucket_of_the_exact_ones() -> None:
    histogram = LogHistogram()
    values = [i * 1e-4 for i in range(1, 1001)]  # 0.1 ms .. 100 ms
    for value in values:
        histogram.add(value)
    assert histogram.quantile(0.5) == pytest.approx(0.05, rel=0.012)
    assert histogram.quantile(0.99) == pytest.approx(0.099, rel=0.012)
    assert histogram.maximum == pytest.approx(0.1)
    assert histogram.quantile(1.0) == pytest.approx(0.1)


def test_histogram_counts_zero_and_is_empty_without_values() -> None:
    histogram = LogHistogram()
    assert histogram.quantile(0.5) is None
    histogram.add(0.0)
    assert histogram.quantile(0.99) == 0.0


def test_tally_counts_late_probes_over_a_tenth_of_the_interval() -> None:
    tally = Tally(interval=1.0)
    tally.add("open", "syn-ack", 1e-5, "kernel", 0.001)
    tally.add("open", "syn-ack", 1e-5, "kernel", 0.15)
    tally.add("filtered", "no-response", None, None, 0.0)
    assert tally.late_over == 1
    assert tally.to_dict()["clocks"] == {"kernel": 2, "none": 1}


def run_record(count: int, *, samples: int, no_response: int = 0, late_over: int = 0,
               user: float = 0.8, sys_s: float = 0.2, wire: int | None = None) -> dict[str, Any]:
    answered = samples - no_response
    return {
        "count": count, "window_s": 10.0, "cpu_user_s": user, "cpu_sys_s": sys_s,
        "hwm_kib": 40960, "engine": {"kernel_drops": 0, "invalid": 0, "unrouted": 0},
        "tally": {"samples": samples, "states": {"open": answered, "filtered": no_response},
                  "reasons": {"syn-ack": answered, "no-response": no_response},
                  "clocks": {"kernel": answered, "none": no_response},
                  "late_s": {"p50": 0.001, "p99": 0.01, "max": 0.02}, "late_over": late_over},
        "outside": {"window_s": 10.0, "window_syns": samples if wire is None else wire},
    }


def test_a_clean_run_holds_and_its_cpu_is_per_probe_on_the_link() -> None:
    row = report.scale_figures(run_record(1000, samples=10_000, wire=10_000))
    assert row["samples_per_s"] == 1000
    assert row["cpu_us_per_probe"] == pytest.approx(100.0)
    assert row["kernel_share"] == 1.0
    assert report.holds(row)


@pytest.mark.parametrize("record", [
    run_record(1000, samples=10_000, no_response=1),
    run_record(1000, samples=10_000, late_over=3),
    run_record(1000, samples=9_000),  # the loop fell behind: 900 samples/s for 1,000
])
def test_a_miss_a_late_probe_or_a_short_rate_does_not_hold(record: dict[str, Any]) -> None:
    assert not report.holds(report.scale_figures(record))


def test_the_highest_holding_count_is_reported() -> None:
    rows = [report.scale_figures(run_record(1000, samples=10_000)),
            report.scale_figures(run_record(5000, samples=50_000)),
            report.scale_figures(run_record(10_000, samples=80_000, no_response=5))]
    best = report.highest_holding(rows)
    assert best is not None and best["count"] == 5000
    assert "5,000 targets" in report.scale_table(rows)[-1]


def test_memory_growth_is_from_the_first_minute_to_the_end() -> None:
    record = {"count": 1000, "hwm_kib": 60_000, "outside": {
        "begin_s": 3.0, "end_s": 603.0,
        "rss_samples": [[t, 40_000 if t < 60 else 50_000 + int(t)] for t in range(0, 610, 10)]}}
    figures = report.memory_figures(record)
    assert figures["first_kib"] == 50_070  # the first sample >= 63 s: at 70 s
    assert figures["last_kib"] == 50_600  # the last one <= 603 s: at 600 s
    assert figures["growth"] == pytest.approx(530 / 50_070)


def test_a_peer_is_compared_with_prober_at_the_nearest_count() -> None:
    rows = [report.scale_figures(run_record(1000, samples=10_000)),
            report.scale_figures(run_record(5000, samples=50_000))]
    peer = {"tool": "hping3", "count": 4000, "syns": 40_000, "cpu_s": 2.0, "window_s": 10.0}
    figures = report.peer_figures(peer, rows)
    assert figures["prober_count"] == 5000
    assert figures["cpu_us_per_probe"] == pytest.approx(50.0)
    assert figures["ratio_to_prober"] == pytest.approx(50.0 / 20.0)


def test_memory_growth_is_also_given_once_the_statistics_windows_are_full() -> None:
    # Rising while each target's 100-round window fills, flat afterwards.
    rss = [[t, 40_000 + min(t, 100) * 50] for t in range(0, 610, 10)]
    figures = report.memory_figures({"count": 1000, "outside": {
        "begin_s": 0.0, "end_s": 600.0, "rss_samples": rss}}, interval=1.0)
    assert figures["growth"] == pytest.approx(2000 / 43_000)  # 60 s -> 600 s
    assert figures["growth_full_window"] == 0.0  # 100 s -> 600 s
    assert figures["full_window_at_s"] == 100.0
