"""`prober monitor` without root: every usage error is one line and its exit status, before
anything is probed; with a fake Prober, what stdout shows (state changes, or every sample as
JSON) and that SIGTERM ends the service with exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import prober.api
from prober.cli import Exit, app
from prober.cli_monitor import DEFAULT_LISTEN
from prober.monitor import exporter
from prober.monitor.loop import MonitorSample
from tests.unit.test_monitor_exporter import CLOSED, OPEN, SILENT, sample

runner = CliRunner()


@pytest.fixture
def targets(tmp_path: Path) -> Path:
    path = tmp_path / "targets.txt"
    path.write_text("198.18.0.18:80\n198.18.0.18:81\n")
    return path


@pytest.fixture
def never_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def enter(self: Any) -> Any:
        raise AssertionError("a usage error must stop the command before it probes")

    monkeypatch.setattr(prober.api.Prober, "__aenter__", enter)


def run(*args: str) -> Any:
    return runner.invoke(app, ["monitor", *args])


def one_line_error(result: Any, code: Exit, text: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("prober: error: ") and text in lines[0]
    assert result.stdout == ""


@pytest.mark.usefixtures("never_probed")
@pytest.mark.parametrize(("extra", "text"), [
    (["-4", "-6"], "-4 and -6 exclude each other"),
    (["-i", "1", "-W", "2"], "--timeout (2 s) must be at most --interval (1 s)"),
    (["--no-listen"], "--no-listen needs --json"),
    (["--json", "--no-listen", "--listen", "[::1]:9108"],
     "--listen and --no-listen exclude each other"),
    (["--listen", "9108"], "invalid --listen '9108': expected HOST:PORT"),
    (["--listen", "::1:9108"], "brackets"),
    (["--vantage", " "], "--vantage must not be empty"),
])
def test_usage_errors(targets: Path, extra: list[str], text: str) -> None:
    one_line_error(run("-f", str(targets), *extra), Exit.USAGE, text)


@pytest.mark.usefixtures("never_probed")
def test_a_bad_line_in_the_file_is_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("198.18.0.18:80\n\n198.18.0.18:http\n")
    one_line_error(run("-f", str(path)), Exit.USAGE, f"{path}:3: invalid port 'http'")
    path.write_text("# nothing\n")
    one_line_error(run("-f", str(path)), Exit.USAGE, f"{path}: no targets")
    one_line_error(run("-f", str(tmp_path / "missing")), Exit.USAGE, "cannot read")


@pytest.mark.usefixtures("never_probed")
@pytest.mark.parametrize("interval", ["inf", "86401", "nan"])
def test_an_interval_past_a_day_is_usage(targets: Path, interval: str) -> None:
    # inf was a traceback (NaN phases); 1e12 ran with its first round centuries away.
    result = run("-f", str(targets), "--interval", interval)
    assert result.exit_code == Exit.USAGE, result.output
    assert "Traceback" not in result.output and "'--interval'" in result.output


@pytest.mark.usefixtures("never_probed")
def test_missing_file_option_is_usage() -> None:
    result = run()
    assert result.exit_code == Exit.USAGE and "'-f' / '--file'" in result.output


@pytest.mark.usefixtures("never_probed")
def test_a_taken_listen_port_is_exit_12(targets: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("-f", str(targets), "--listen", f"127.0.0.1:{port}")
    one_line_error(result, Exit.LISTEN_FAILED,
                   f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert int(Exit.LISTEN_FAILED) == 12


def test_help_documents_the_endpoint_and_exit_codes() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for text in ("/metrics", "/probe?target=HOST:PORT", "prober_probe_success", "SIGHUP",
                 "SIGTERM", "12 cannot listen", "vantage", DEFAULT_LISTEN):
        assert text in " ".join(result.output.split())  # as wrapped at any width
    assert DEFAULT_LISTEN == exporter.DEFAULT_LISTEN


# -- a run with a fake Prober ---------------------------------------------------------------------
def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # as a service manager stops the service


@dataclass
class FakeRun:
    samples: list[MonitorSample] = field(default_factory=list)
    targets: list[tuple[str, int]] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    # The samples the monitor yields and what happens then, step by step; a step after the
    # first starts when set_targets is called (default: the samples above, then SIGTERM).
    script: list[tuple[list[MonitorSample], Callable[[], None]]] = field(default_factory=list)
    set_targets: list[list[tuple[str, int]]] = field(default_factory=list)
    closed: bool = False
    pending: object = None  # a task a script step started (kept from the collector)


class FakeEngine:
    def take_kernel_drops(self) -> int:
        return 0


class FakeMonitor:
    """Monitor's interface over ``FakeRun.script``."""

    def __init__(self, fake: FakeRun, stop: asyncio.Event) -> None:
        self.fake, self.stop = fake, stop
        self.dropped = self.skipped = 0
        self._next = asyncio.Event()
        self._steps = self._run()

    def set_targets(self, targets: Any) -> None:
        self.fake.set_targets.append(list(targets))
        self._next.set()

    def __aiter__(self) -> FakeMonitor:
        return self

    async def __anext__(self) -> MonitorSample:
        return await self._steps.__anext__()

    async def aclose(self) -> None:
        self.fake.closed = True
        await self._steps.aclose()

    async def _run(self) -> AsyncIterator[MonitorSample]:
        for samples, then in self.fake.script or [(self.fake.samples, sigterm)]:
            for each in samples:
                yield each
            self._next.clear()
            then()
            waiters = [asyncio.ensure_future(event.wait()) for event in (self._next, self.stop)]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if self.stop.is_set():
                return


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRun]:
    """Prober without an engine: ``monitor`` plays ``fake.script``."""
    fake = FakeRun()

    async def enter(self: Any) -> Any:
        return self

    async def leave(self: Any, *args: Any) -> None:
        return None

    def monitor(self: Any, targets: Any, **kwargs: Any) -> FakeMonitor:
        fake.targets, fake.kwargs = list(targets), kwargs
        return FakeMonitor(fake, kwargs["stop"])

    monkeypatch.setattr(prober.api.Prober, "__aenter__", enter)
    monkeypatch.setattr(prober.api.Prober, "__aexit__", leave)
    monkeypatch.setattr(prober.api.Prober, "monitor", monitor)
    monkeypatch.setattr(prober.api.Prober, "engine", property(lambda self: FakeEngine()))
    yield fake


def test_state_changes_then_sigterm_exits_0(fake: FakeRun, targets: Path) -> None:
    fake.samples = [
        sample("198.18.0.18", 80, OPEN, 0.000123, round_=1),
        sample("198.18.0.18", 81, CLOSED, 0.0001, round_=1),
        sample("198.18.0.18", 80, OPEN, 0.0002, round_=2),  # no change: no line
        sample("198.18.0.18", 80, SILENT, round_=3),
    ]
    result = run("-f", str(targets), "--listen", "127.0.0.1:0", "-i", "2", "-W", "0.5",
                 "--vantage", "lab-1", "--ttl", "9", "--window", "7", "-6")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("prober: monitoring 2 targets every 2 s (timeout 0.5 s) from "
                               "vantage 'lab-1'; metrics on http://127.0.0.1:")
    assert lines[0].endswith("/metrics")
    assert [line.split(" ", 2)[2] for line in lines[1:]] == [
        "198.18.0.18:80 new -> open (syn-ack, rtt 0.123 ms)",
        "198.18.0.18:81 new -> closed (rst, rtt 0.100 ms)",
        "198.18.0.18:80 open -> filtered (no-response)",
    ]
    assert fake.targets == [("198.18.0.18", 80), ("198.18.0.18", 81)]
    assert {k: v for k, v in fake.kwargs.items() if k != "stop"} == {
        "interval": 2.0, "timeout": 0.5, "resolve_every": 300.0, "window": 7, "version": 6,
        "ttl": 9}
    assert result.stderr == ""


def test_json_lines_are_the_samples(fake: FakeRun, targets: Path) -> None:
    fake.samples = [sample("198.18.0.18", 80, OPEN, 0.000123),
                    sample("198.18.0.18", 81, SILENT)]
    result = run("-f", str(targets), "--json", "--no-listen")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        s.to_dict() for s in fake.samples]
    assert "no metrics endpoint" in result.stderr  # the banner, off stdout


def test_sighup_reloads_the_file(fake: FakeRun, targets: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from prober import cli_monitor

    answered: list[object] = []
    reloaded = cli_monitor._Session._reloaded

    def counted(self: Any, future: Any) -> None:
        reloaded(self, future)
        answered.append(future)

    monkeypatch.setattr(cli_monitor._Session, "_reloaded", counted)

    async def reload_with(text: str) -> None:
        """Edit the file, SIGHUP, and wait for the reload's answer (at most 5 s)."""
        waited_for = len(answered) + 1
        targets.write_text(text)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(500):
            if len(answered) == waited_for:
                return
            await asyncio.sleep(0.01)

    def bad_then_good() -> None:
        async def steps() -> None:
            await reload_with("198.18.0.18:80\n198.18.0.18:bad\n")  # refused: goes on
            await reload_with("198.18.0.18:80\n[2001:2::18]:443\n")  # taken

        fake.pending = asyncio.ensure_future(steps())

    fake.script = [([sample("198.18.0.18", 80, OPEN, 0.0001)], bad_then_good),
                   ([sample("2001:2::18", 443, CLOSED, 0.0002)], sigterm)]
    result = run("-f", str(targets), "--listen", "127.0.0.1:0")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"prober: reload refused: {targets}:2: invalid port 'bad': expected a number from 1 "
        "to 65535 (still monitoring the previous 2 targets)",
        "prober: reloaded: 2 targets (+1, -1)",
    ]
    assert fake.targets == [("198.18.0.18", 80), ("198.18.0.18", 81)]
    assert fake.set_targets == [[("198.18.0.18", 80), ("2001:2::18", 443)]]  # once: the good
    assert fake.closed
    assert [line.split(" ", 2)[2] for line in result.stdout.splitlines()[1:]] == [
        "198.18.0.18:80 new -> open (syn-ack, rtt 0.100 ms)",
        "[2001:2::18]:443 new -> closed (rst, rtt 0.200 ms)",
    ]


def test_a_sighup_during_a_reload_reads_the_file_again(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # The second SIGHUP came while the first reload was reading the file (as it was before
    # the edit) and was dropped: the edit was never taken.
    from prober import cli_monitor
    from prober.monitor import targets_file
    from prober.monitor.metrics import MonitorCollector
    from prober.output.monitor import StateChanges

    path = tmp_path / "targets.txt"
    path.write_text("198.18.0.18:80\n")
    first_read_may_end = threading.Event()
    real = targets_file.read_targets_file
    reads: list[object] = []

    def slow_read(name: str, stdin: Any = None) -> Any:
        got = real(name)
        reads.append(got)
        if len(reads) == 1:
            first_read_may_end.wait(5)
        return got

    monkeypatch.setattr(targets_file, "read_targets_file", slow_read)
    both = (("198.18.0.18", 80), ("198.18.0.18", 81))

    async def go() -> Any:
        session = cli_monitor._Session(str(path), (("198.18.0.34", 80),), MonitorCollector("v"),
                                       None, StateChanges(), {})  # type: ignore[arg-type]
        session.on_hangup()
        for _ in range(500):
            if reads:
                break
            await asyncio.sleep(0.01)
        path.write_text("198.18.0.18:80\n198.18.0.18:81\n")
        session.on_hangup()  # while the first reload still runs
        first_read_may_end.set()
        for _ in range(500):
            if session.targets == both:
                break
            await asyncio.sleep(0.01)
        return session

    session = asyncio.run(asyncio.wait_for(go(), 20))
    assert session.targets == both
    assert len(reads) == 2


@pytest.mark.parametrize("endpoint", [True, False])
def test_a_stuck_stdout_does_not_hold_the_metrics(fake: FakeRun, targets: Path, endpoint: bool,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # --json beside /metrics: a reader of stdout that stopped reading made the session wait
    # for it, so no sample reached the metrics, which went on serving the last values.
    from prober import cli_monitor
    from prober.api import Prober
    from prober.monitor.metrics import MonitorCollector

    class StuckSink:
        backlog = cli_monitor.SINK_BACKLOG_BYTES + 1

        def __init__(self) -> None:
            self.lines: list[str] = []

        def write(self, text: str) -> None:
            self.lines.append(text)

        def flush(self, final: bool = False) -> None:
            pass

        async def drained(self) -> None:
            await asyncio.sleep(3600)  # the reader never comes back

    collector = MonitorCollector("v", [("198.18.0.18", 80)])
    sink = StuckSink()
    session = cli_monitor._Session(str(targets), (("198.18.0.18", 80),), collector,
                                   sink, None, {},  # type: ignore[arg-type]
                                   endpoint=endpoint)

    async def go() -> None:
        stop = asyncio.Event()
        fake.script = [([sample("198.18.0.18", 80, OPEN, 0.0001, round_=n)
                         for n in range(1, 6)], stop.set)]
        await session.run(Prober(), stop)

    if not endpoint:  # stdout is the only output: it is waited for (the monitor counts)
        with pytest.raises(TimeoutError):
            asyncio.run(asyncio.wait_for(go(), 1))
        return
    asyncio.run(asyncio.wait_for(go(), 10))
    assert 'prober_probes_total{target="198.18.0.18",port="80",vantage="v",result="syn-ack"} 5' \
        in collector.render()
    assert sink.lines == []
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("prober: stdout fell 8 MiB behind: lines are left out")
    assert err[1] == "prober: stdout: 5 lines were left out while it lagged"


def test_without_an_endpoint_what_is_lost_goes_to_stderr(
        fake: FakeRun, targets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --json --no-listen: samples dropped, rounds skipped and kernel drops were counted only
    # for a /metrics that does not exist: lost without a word.
    from prober import cli_monitor

    monkeypatch.setattr(cli_monitor, "COUNTS_EVERY_S", 0.01)
    monkeypatch.setattr(FakeEngine, "take_kernel_drops", lambda self: 3)
    monitors: list[FakeMonitor] = []
    real_init = FakeMonitor.__init__

    def remembered(self: FakeMonitor, fake_run: FakeRun, stop: asyncio.Event) -> None:
        real_init(self, fake_run, stop)
        monitors.append(self)

    monkeypatch.setattr(FakeMonitor, "__init__", remembered)

    def lose_then_stop() -> None:
        monitors[0].dropped, monitors[0].skipped = 7, 1
        asyncio.get_running_loop().call_later(0.3, sigterm)

    fake.script = [([sample("198.18.0.18", 80, OPEN, 0.0001)], lose_then_stop)]
    result = run("-f", str(targets), "--json", "--no-listen")
    assert result.exit_code == 0, result.output
    assert ("prober: lost so far: 7 samples dropped (the reader of stdout fell behind), 1 "
            "round skipped (the process stalled), 3 captured frames dropped by the kernel"
            ) in result.stderr.splitlines()
    with_endpoint = run("-f", str(targets), "--json", "--listen", "127.0.0.1:0")
    assert "lost so far" not in with_endpoint.stderr  # /metrics has them


def test_lines_for_a_person() -> None:
    from dataclasses import replace

    from prober.core.syn import PortState, Reason
    from prober.output.monitor import StateChanges, banner, reloaded

    assert banner(1, 5.0, 1.0, "fra1", None) == (
        "prober: monitoring 1 target every 5 s (timeout 1 s) from vantage 'fra1'; "
        "no metrics endpoint")
    assert reloaded(12_000, 3, 0) == "prober: reloaded: 12,000 targets (+3, -0)"
    changes = StateChanges()
    first = sample("db.test", 5432, OPEN, 0.0015)
    assert changes.line(first).endswith(" db.test:5432 new -> open (syn-ack, rtt 1.500 ms)")
    gone = replace(first, state=PortState.UNKNOWN, reason=Reason.UNRESOLVED, rtt_s=None,
                   address=None, error="db.test does not resolve")
    assert changes.line(gone).endswith(
        " db.test:5432 open -> unknown (unresolved: db.test does not resolve)")
    assert changes.line(gone) is None  # held: no line
    changes.keep_only([])
    assert changes.line(gone).endswith(" db.test:5432 new -> unknown (unresolved: db.test "
                                       "does not resolve)")


def test_the_window_cap_is_the_library_s() -> None:
    from prober import cli_monitor
    from prober.monitor import loop

    assert cli_monitor.MAX_WINDOW == loop.MAX_WINDOW
    assert cli_monitor.DEFAULT_LISTEN == __import__(
        "prober.monitor.exporter", fromlist=["DEFAULT_LISTEN"]).DEFAULT_LISTEN
