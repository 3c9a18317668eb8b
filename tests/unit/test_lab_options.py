"""`prober lab up` options: text to seconds and fractions, and one-line usage errors (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from prober.cli import Exit, app
from prober.errors import UsageError
from prober.lab.options import (
    LabOptions,
    format_duration,
    format_loss,
    parse_duration,
    parse_loss,
    parse_seed,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20ms", 0.020),
        ("1ms", 0.001),
        ("0.5s", 0.5),
        ("2s", 2.0),
        ("250us", 0.000250),
        ("250µs", 0.000250),
        (".5ms", 0.0005),
        ("0ms", 0.0),
        (" 20ms ", 0.020),
        ("10s", 10.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("20", "expected a number with a unit"),  # seconds or milliseconds? refuse to guess
        ("-5ms", "expected a number with a unit"),
        ("20 minutes", "expected a number with a unit"),
        ("ms", "expected a number with a unit"),
        ("1e3ms", "expected a number with a unit"),
        ("", "expected a number with a unit"),
        ("11s", "at most 10s"),
    ],
)
def test_bad_durations(text: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_duration(text, name="delay")


@pytest.mark.parametrize(
    ("text", "fraction"),
    [("1%", 0.01), ("0.5%", 0.005), ("100%", 1.0), ("0%", 0.0), ("0.01", 0.01), ("1", 1.0),
     ("25 %", 0.25)],
)
def test_loss(text: str, fraction: float) -> None:
    assert parse_loss(text) == pytest.approx(fraction)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [("101%", "at most 100%"), ("2", "at most 100%"), ("-1%", "expected a percentage"),
     ("one percent", "expected a percentage"), ("1%%", "expected a percentage")],
)
def test_bad_loss(text: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_loss(text)


def test_seed_range() -> None:
    assert parse_seed(None) is None
    assert parse_seed(0) == 0 and parse_seed(2**32 - 1) == 2**32 - 1
    for bad in (-1, 2**32):
        with pytest.raises(UsageError, match="invalid seed"):
            parse_seed(bad)


def test_options_from_text() -> None:
    options = LabOptions.parse("50ms", "2ms", "3%", 9)
    assert (options.delay_s, options.jitter_s, options.loss) == pytest.approx((0.05, 0.002, 0.03))
    assert options.seed == 9
    assert LabOptions.parse() == LabOptions()  # the defaults are the documented 20ms, 1ms, 1%
    with pytest.raises(UsageError, match="larger than the delay"):
        LabOptions.parse("1ms", "2ms")


def test_options_round_trip_and_text() -> None:
    options = LabOptions.parse("20ms", "1ms", "1%", 7)
    assert LabOptions.from_dict(options.to_dict()) == options
    assert options.summary() == "delay 20ms ± 1ms, loss 1%, seed 7"
    assert options.flags() == "--delay 20ms --jitter 1ms --loss 1% --seed 7"
    delay, jitter, loss, seed = options.flags().split()[1::2]
    assert LabOptions.parse(delay, jitter, loss, int(seed)) == options  # the flags give it back
    assert [format_duration(s) for s in (0, 0.0005, 0.02, 1.5)] == ["0ms", "500us", "20ms",
                                                                     "1.5s"]
    assert format_loss(0.005) == "0.5%"


def test_same_impairments() -> None:
    up = LabOptions(seed=7)
    assert up.same_impairments(LabOptions(seed=None))  # no --seed: any recorded seed will do
    assert up.same_impairments(LabOptions(seed=7))
    assert not up.same_impairments(LabOptions(seed=8))
    assert not up.same_impairments(LabOptions(delay_s=0.05, seed=7))
    assert not up.same_impairments(LabOptions(loss=0.02))


BAD_LAB_USAGE = [
    ["lab", "up", "--delay", "20"],
    ["lab", "up", "--jitter", "5ms", "--delay", "1ms"],
    ["lab", "up", "--loss", "150%"],
    ["lab", "up", "--seed", "-3"],
    ["lab", "up", "--seed", "x"],
    ["lab", "status", "--bogus"],
    ["lab", "sideways"],
    ["lab"],
]


@pytest.mark.parametrize("args", BAD_LAB_USAGE)
def test_bad_lab_usage_exits_2_before_touching_anything(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == Exit.USAGE, result.output


@pytest.mark.parametrize("args", [BAD_LAB_USAGE[0], BAD_LAB_USAGE[-1]])
def test_bad_lab_usage_is_one_line(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from prober.cli import main; main()", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prober: error: "), done.stderr
