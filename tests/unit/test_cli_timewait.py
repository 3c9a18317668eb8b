"""`prober timewait` without root: usage errors (one line, exit 2, the library never called),
the options reaching ``Prober.timewait``, its exit statuses, and the report, JSON and pcap
of a result from the model peer (tests/unit/timewait_model.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from scapy.utils import rdpcap
from typer.testing import CliRunner

import prober.api
from prober import cli
from prober.cli import Exit, app
from prober.cli_timewait import exit_of_timewait
from prober.core.close import Handshake
from prober.core.timewait_result import PeerClose, Role, TimeWaitResult, summarize
from tests.unit.timewait_model import PeerConfig, TwRun, make_probe, run_role

runner = CliRunner()


def verdicts(*runs: TwRun, max_time: float = 250.0, measure: bool = True) -> TimeWaitResult:
    return summarize(
        target="198.18.0.18", port=80, source="198.18.0.1",
        connections=[r.probe.result() for r in runs], step=1.0, max_time=max_time,
        measure_duration=measure, refin_at=None,
    )


@pytest.fixture(scope="module")
def measured() -> TimeWaitResult:
    return verdicts(run_role(PeerConfig(time_wait_s=8.0), max_time=20.0), max_time=20.0)


class Calls:
    def __init__(self) -> None:
        self.kwargs: dict[str, Any] | None = None
        self.result: TimeWaitResult | None = None


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """Patch Prober (no engine, no sockets); ``timewait`` returns ``calls.result``."""
    calls = Calls()

    async def enter(self: Any) -> Any:
        return self

    async def leave(self: Any, *args: Any) -> None:
        return None

    async def timewait(self: Any, host: str, port: int, **kwargs: Any) -> TimeWaitResult:
        calls.kwargs = {"host": host, "port": port, **kwargs}
        assert calls.result is not None
        return calls.result

    monkeypatch.setattr(prober.api.Prober, "__aenter__", enter)
    monkeypatch.setattr(prober.api.Prober, "__aexit__", leave)
    monkeypatch.setattr(prober.api.Prober, "timewait", timewait)
    monkeypatch.setattr(cli, "_stdout_is_tty", lambda: False)
    monkeypatch.setattr(cli, "_stderr_is_tty", lambda: False)
    yield calls


# -- usage errors -------------------------------------------------------------------------------
BAD = [
    (["--refin", "30", "--max", "30"], "--refin must come before --max (30 s)"),
    (["--refin", "40", "--max", "30"], "--refin must come before --max (30 s)"),
    (["--max", "1", "--step", "2"], "--max must be at least --step (2 s)"),
    (["--step", "0"], "--step"),
    (["--step", "x"], "--step"),
    (["--max", "-1"], "--max"),
    (["--close-timeout", "0"], "--close-timeout"),
    (["--send", "x", "--send-file", "/etc/hostname"], "--send and --send-file exclude each other"),
    (["-4", "-6"], "-4 and -6 exclude each other"),
    (["--ttl", "0"], "--ttl"),
]


@pytest.mark.parametrize(("args", "says"), BAD)
def test_usage_errors_exit_2_and_never_probe(
    fake: Calls, args: list[str], says: str
) -> None:
    result = runner.invoke(app, ["timewait", "198.18.0.18:80", *args])
    assert result.exit_code == Exit.USAGE, result.output
    assert fake.kwargs is None, "the library was called"
    assert result.stdout == ""
    assert says in result.stderr
    if result.stderr.startswith("prober: error: "):  # the command's own checks: one line
        assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("target", ["198.18.0.18", "198.18.0.18:0", "999.1.1.1:80", "[::1"])
def test_a_bad_target(fake: Calls, target: str) -> None:
    result = runner.invoke(app, ["timewait", target])
    assert result.exit_code == Exit.USAGE
    assert fake.kwargs is None
    assert result.stdout == ""
    assert result.stderr.startswith("prober: error: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("args", [
    ["198.18.0.18:80", "--refin", "300"],
    ["198.18.0.18:80", "--max", "1", "--step", "2"],
    ["198.18.0.18:80", "--step", "0"],
    ["198.18.0.18:80", "--send", "x", "--send-file", "/etc/hostname"],
    ["198.18.0.18"],
])
def test_the_installed_command_prints_one_error_line(args: list[str]) -> None:
    # Click's own usage errors (--step 0) are one line only through main(), not CliRunner.
    done = subprocess.run(
        [sys.executable, "-c", "from prober.cli import main; main()", "timewait", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prober: error: "), done.stderr


# -- options reach the library -------------------------------------------------------------------
def test_options_reach_the_library(fake: Calls, measured: TimeWaitResult, tmp_path: Path) -> None:
    fake.result = measured
    request = tmp_path / "request"
    request.write_bytes(b"GET / HTTP/1.0\r\n\r\n")
    result = runner.invoke(app, [
        "timewait", "198.18.0.18:8080", "--send-file", str(request), "--close-timeout", "5",
        "--step", "2", "--max", "30", "--refin", "10", "--no-reopen", "--assassinate",
        "-W", "2", "-4", "-s", "40000", "--ttl", "9",
    ])
    assert result.exit_code == 0, result.output
    assert fake.kwargs is not None
    kwargs = {k: v for k, v in fake.kwargs.items() if k not in ("stop", "progress")}
    assert kwargs == {
        "host": "198.18.0.18", "port": 8080, "send": b"GET / HTTP/1.0\r\n\r\n",
        "close_timeout": 5.0, "step": 2.0, "max_time": 30.0, "measure_duration": True,
        "refin_at": 10.0, "reopen": False, "assassinate": True, "handshake_timeout": 2.0,
        "version": 4, "source_port": 40000, "ttl": 9,
    }


def test_defaults(fake: Calls, measured: TimeWaitResult) -> None:
    fake.result = measured
    result = runner.invoke(app, ["timewait", "198.18.0.18:80", "--send", r"GET /\r\n",
                                 "--no-duration"])
    assert result.exit_code == 0, result.output
    assert fake.kwargs is not None
    assert fake.kwargs["send"] == b"GET /\r\n"
    assert (fake.kwargs["close_timeout"], fake.kwargs["step"], fake.kwargs["max_time"]) == (
        10.0, 1.0, 250.0
    )
    assert fake.kwargs["measure_duration"] is False and fake.kwargs["refin_at"] is None
    assert fake.kwargs["reopen"] is True and fake.kwargs["assassinate"] is False
    assert fake.kwargs["handshake_timeout"] == 3.0 and fake.kwargs["version"] is None
    assert "probing the peer's TIME-WAIT" not in result.stderr  # --no-duration: no wait notice


# -- output ------------------------------------------------------------------------------------
def test_report_json_and_pcap(fake: Calls, measured: TimeWaitResult, tmp_path: Path) -> None:
    fake.result = measured
    human = runner.invoke(app, ["timewait", "198.18.0.18:80"])
    assert human.exit_code == 0
    # The wait notice comes with the probing (the first progress call), which the fake
    # library never makes; test_timewait_review covers it.
    assert "The peer holds TIME-WAIT" in human.stdout
    assert "Duration: 7.5 s ± 0.5 s" in human.stdout
    pcap = tmp_path / "tw.pcap"
    machine = runner.invoke(app, ["timewait", "198.18.0.18:80", "--json", "--pcap", str(pcap)])
    assert machine.exit_code == 0
    [line] = machine.stdout.splitlines()
    record = json.loads(line)
    assert record["type"] == "timewait" and record["holds_time_wait"] is True
    assert record["duration_s"] == 7.5 and record["duration_error_s"] == 0.5
    [connection] = measured.connections
    segments = [*connection.close.segments, *connection.segments]
    assert len(rdpcap(str(pcap))) == len(segments) == sum(bool(s.raw) for s in segments)


# -- exit statuses ---------------------------------------------------------------------------
def test_exit_0_when_the_verdicts_are_given(measured: TimeWaitResult) -> None:
    assert exit_of_timewait(measured) is Exit.OPEN
    none = verdicts(run_role(PeerConfig(keeps_no_time_wait=True), max_time=10.0),
                    max_time=10.0)
    assert none.holds_time_wait is False and exit_of_timewait(none) is Exit.OPEN


def test_exit_11_when_the_peer_did_not_close_first(fake: Calls) -> None:
    result = verdicts(run_role(PeerConfig(never_closes_first=True), close_timeout=1.0))
    assert exit_of_timewait(result) is Exit.NOT_CLOSED_FIRST
    assert int(Exit.NOT_CLOSED_FIRST) == 11
    assert exit_of_timewait(replace(result, peer_close=PeerClose.INCOMPLETE)) == 11
    fake.result = result
    done = runner.invoke(app, ["timewait", "198.18.0.18:80"])
    assert done.exit_code == 11
    assert "did not close first" in done.stdout


@pytest.mark.parametrize(("handshake", "code"), [
    (Handshake.CLOSED, 4), (Handshake.FILTERED, 5), (Handshake.EXPIRED, 5),
    (Handshake.NO_ANSWER, 1), (Handshake.SEND_FAILED, 6),
])
def test_the_handshakes_codes(measured: TimeWaitResult, handshake: Handshake, code: int) -> None:
    failed = replace(measured, handshake=handshake, peer_close=PeerClose.NOT_ESTABLISHED)
    assert exit_of_timewait(failed) == code


def test_a_send_failure_of_the_syn_is_exit_6() -> None:
    result = verdicts(run_role(PeerConfig(), fail=frozenset({0})))
    assert result.handshake is Handshake.SEND_FAILED
    assert result.peer_close is PeerClose.NOT_ESTABLISHED
    assert exit_of_timewait(result) == 6


@pytest.mark.parametrize("at", [0.003, 5.5])
def test_exit_130_when_interrupted_and_the_report_still_printed(fake: Calls, at: float) -> None:
    result = verdicts(run_role(PeerConfig(), interrupt_at=at, max_time=20.0), max_time=20.0)
    assert exit_of_timewait(result) is Exit.INTERRUPTED
    assert int(Exit.INTERRUPTED) == 130
    fake.result = result
    done = runner.invoke(app, ["timewait", "198.18.0.18:80"])
    assert done.exit_code == 130
    assert done.stdout.startswith("TIMEWAIT 198.18.0.18:80")
    assert "Traceback" not in done.output


def test_exit_130_wins_over_the_rest(measured: TimeWaitResult) -> None:
    interrupted = replace(measured, interrupted=True, handshake=Handshake.NO_ANSWER)
    assert exit_of_timewait(interrupted) == 130


def test_roles_of_the_run_in_the_report(fake: Calls) -> None:
    config = PeerConfig()
    fake.result = verdicts(
        run_role(config, measure_duration=False), run_role(config, role=Role.ABOVE_ISN),
        measure=False,
    )
    done = runner.invoke(app, ["timewait", "198.18.0.18:80", "--no-duration"])
    assert done.exit_code == 0
    assert "above-isn connection, from 198.18.0.1:" in done.stdout


def test_the_progress_line(capsys: pytest.CaptureFixture[str]) -> None:
    from prober.cli_timewait import _ProgressLine

    line = _ProgressLine()
    line.clear()  # nothing shown yet: nothing to clear
    assert capsys.readouterr().err == ""
    line(make_probe(), 0.0)
    run = run_role(PeerConfig(time_wait_s=5.0), max_time=10.0)
    line(run.probe, run.now)
    line.clear()
    err = capsys.readouterr().err
    assert "closing: waiting for the peer's FIN" in err
    assert "TIME-WAIT +  5.0 s: 6 probe(s), last answer syn-ack" in err
    assert err.endswith("\r\x1b[2K")
