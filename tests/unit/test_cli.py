"""The command line's contract without root: usage errors are one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from prober.cli import EXIT_OF_REASON, Exit, app
from prober.core.syn import Reason

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["syn", "198.18.0.2"],
        ["syn", "198.18.0.2:0"],
        ["syn", "2001:2::2"],
        ["syn", "[2001:2::2]:80", "-4"],
        ["syn", "198.18.0.2:80", "-4", "-6"],
        ["syn", "198.18.0.2:80", "--ttl", "0"],
        ["syn", "198.18.0.2:80", "-c", "-1"],
        ["syn", "198.18.0.2:80", "-W", "0"],
    ],
)
def test_bad_input_exits_2_before_any_socket(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == Exit.USAGE, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["syn", "198.18.0.2"],
        ["syn", "198.18.0.2:80", "--bogus"],
        ["syn"],
        [],
        ["frobnicate"],
    ],
)
def test_the_installed_command_prints_one_error_line(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from prober.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prober: error: "), done.stderr


def test_every_reason_has_a_documented_exit_status() -> None:
    assert set(EXIT_OF_REASON) >= set(Reason)
    assert EXIT_OF_REASON[Reason.SYN_ACK] == 0
    assert EXIT_OF_REASON[Reason.NO_RESPONSE] == 1
    assert EXIT_OF_REASON[Reason.RST] == 4
    assert EXIT_OF_REASON[Reason.ICMP_UNREACHABLE] == 5
