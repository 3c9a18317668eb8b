"""`prober scan` above the engine: options, formats, the summary and exit statuses, with a
fake ScanRun in place of the engine (no root, no packets)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import prober.api
import prober.cli as cli
from prober.cli import Exit, ScanFormat, app, parse_shard, scan_format
from prober.core.scan_result import SCAN_FIELDS, ScanResult, ScanSummary
from prober.core.strays import Stray
from prober.core.syn import PortState, Reason
from prober.core.timing import Clock
from prober.engine.scan.run import ScanProgress
from prober.errors import RawSocketsNotPermitted, UsageError
from prober.output import scan as render

REPOSITORY = Path(__file__).resolve().parents[2]
runner = CliRunner()

SOURCE = {"source": "198.18.0.1", "source_port": 40001, "attempt": 1}
RESULTS = [
    ScanResult("198.18.0.18", 80, PortState.OPEN, Reason.SYN_ACK, rtt_us=66.5, clock=Clock.KERNEL,
               ttl=63, window=65160, options="MSTNW", received_ns=1_700_000_000_000_000_000,
               **SOURCE),
    ScanResult("198.18.0.18", 81, PortState.CLOSED, Reason.RST, rtt_us=40.25, clock=Clock.KERNEL,
               ttl=63, window=0, options="", **SOURCE),
    ScanResult("198.18.0.34", 80, PortState.FILTERED, Reason.NO_RESPONSE, **SOURCE),
    ScanResult("198.18.0.34", 81, PortState.FILTERED, Reason.ICMP_UNREACHABLE, rtt_us=70.0,
               clock=Clock.KERNEL, ttl=64, icmp_type=3, icmp_code=13, icmp_from="198.18.0.33",
               **SOURCE),
    ScanResult("2001:2::1:2", 80, PortState.OPEN, Reason.SYN_ACK, rtt_us=51.0, clock=Clock.USER,
               ttl=63, window=64800, options="MSTNW", name="open.lab, \"quoted\"",
               source="2001:2::1", source_port=40002, attempt=2),
]


def summary_of(results: list[ScanResult], **changes: Any) -> ScanSummary:
    by_state: dict[PortState, int] = {}
    by_reason: dict[Reason, int] = {}
    for result in results:
        by_state[result.state] = by_state.get(result.state, 0) + 1
        by_reason[result.reason] = by_reason.get(result.reason, 0) + 1
    fields: dict[str, Any] = dict(
        targets=len(results), sent=len(results), send_failed=0, results=len(results),
        by_state=by_state, by_reason=by_reason, duration_s=2.5, rate_pps=1000.0,
        kernel_drops=0, duplicates=0, late=0, excluded=3, blocklisted=256, bad_lines=0,
        kernel_rsts=2, own_rsts=0,
    )
    fields.update(changes)
    return ScanSummary(**fields)


class FakeRun:
    """A ScanRun's shape: yields ``results`` (or ``error`` after them), then sets summary."""

    def __init__(self, results: Iterable[ScanResult], summary: ScanSummary,
                 error: Exception | None = None, on_bad: Any = None,
                 bad: Iterable[str] = ()) -> None:
        self.results = results
        self.final = summary
        self.error = error
        self.on_bad = on_bad
        self.bad = list(bad)
        self.summary: ScanSummary | None = None
        self.stopped = False

    def __aiter__(self) -> AsyncIterator[ScanResult]:
        return self._results()

    async def _results(self) -> AsyncIterator[ScanResult]:
        for message in self.bad:
            assert self.on_bad is not None, "--skip-bad passes a callback"
            self.on_bad(message)
        for result in self.results:
            if self.stopped:
                break
            yield result
            await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        self.summary = replace(self.final, interrupted=self.stopped)

    def progress(self) -> ScanProgress:
        return ScanProgress(targets=10, sent=4, done=3, answered=2, rate_pps=999.6, eta_s=7.2,
                            kernel_drops=0, invalid=1, elapsed_s=3.0)

    def stop(self) -> None:
        self.stopped = True


class Calls:
    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.targets: tuple[str, ...] = ()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Patch Prober.scan; returns a function that sets what the next scan yields."""
    calls = Calls()
    plan: dict[str, Any] = {"results": RESULTS, "summary": summary_of(RESULTS)}

    def scan(self: Any, targets: Iterable[str] = (), **kwargs: Any) -> FakeRun:
        calls.targets = tuple(targets)
        calls.kwargs = kwargs
        if "raise" in plan:
            raise plan["raise"]
        return FakeRun(plan["results"], plan["summary"], plan.get("error"),
                       kwargs.get("skip_bad"), plan.get("bad", ()))

    monkeypatch.setattr(prober.api.Prober, "scan", scan)
    monkeypatch.setattr(cli, "_stdout_is_tty", lambda: False)
    monkeypatch.setattr(cli, "_stderr_is_tty", lambda: False)

    def set_plan(**changes: Any) -> Calls:
        plan.update(changes)
        return calls

    yield set_plan


# --- options -----------------------------------------------------------------------------


def test_options_reach_the_library(fake: Any, tmp_path: Path) -> None:
    exclude = tmp_path / "ex.txt"
    exclude.write_text("198.18.0.99\n")
    calls = fake()
    result = runner.invoke(app, [
        "scan", "198.18.0.0/24:80", "198.18.1.1", "-p", "22,80", "-f", "-", "--exclude",
        str(exclude), "--exclude", str(exclude), "--no-blocklist", "--skip-bad", "--rate",
        "5000", "--retries", "2", "--wait", "0.5", "--seed", "42", "--shard", "2/4", "-6",
        "--pcap", str(tmp_path / "x.pcap"),
    ])
    assert result.exit_code == 0, result.output
    assert calls.targets == ("198.18.0.0/24:80", "198.18.1.1")
    kwargs = calls.kwargs
    assert kwargs["file"] == "-" and kwargs["ports"] == "22,80"
    assert list(kwargs["exclude"]) == [exclude, exclude]
    assert kwargs["blocklist"] is False and callable(kwargs["skip_bad"])
    assert (kwargs["rate"], kwargs["retries"], kwargs["wait"]) == (5000.0, 2, 0.5)
    assert (kwargs["seed"], kwargs["shard"], kwargs["version"]) == (42, (1, 4), 6)
    assert kwargs["pcap"] == tmp_path / "x.pcap"


def test_defaults(fake: Any) -> None:
    calls = fake()
    assert runner.invoke(app, ["scan", "198.18.0.18:80"]).exit_code == 0
    kwargs = calls.kwargs
    assert kwargs["file"] is None and kwargs["skip_bad"] is None and kwargs["blocklist"]
    assert (kwargs["rate"], kwargs["retries"], kwargs["wait"]) == (1000.0, 0, 2.0)
    assert (kwargs["seed"], kwargs["shard"], kwargs["version"]) == (None, (0, 1), None)


@pytest.mark.parametrize(("text", "expected"), [("1/1", (0, 1)), ("2/4", (1, 4)),
                                                ("4/4", (3, 4)), ("10/16", (9, 16))])
def test_shard_is_one_based(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "2", "2/", "/4", "a/b", "-1/4", "1/4/2",
                                  " 1/4", "1.0/4", ""])
def test_bad_shards(text: str) -> None:
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)


@pytest.mark.parametrize("args", [
    ["scan"],  # no targets, no -f
    ["scan", "198.18.0.18:80", "--shard", "5/4"],
    ["scan", "198.18.0.18:80", "--shard", "x"],
    ["scan", "198.18.0.18:80", "-4", "-6"],
    ["scan", "198.18.0.18:80", "--format", "xml"],
    ["scan", "198.18.0.18:80", "--rate", "fast"],
    ["scan", "198.18.0.18:80", "-o", "/nonexistent/dir/out"],
])
def test_usage_errors_exit_2_and_never_scan(fake: Any, args: list[str]) -> None:
    calls = fake()
    result = runner.invoke(app, args)
    assert result.exit_code == Exit.USAGE, result.output
    assert calls.kwargs == {}, "the library was called"


def test_a_bad_target_is_one_line_exit_2_and_nothing_on_stdout(fake: Any) -> None:
    fake(error=None, **{"raise": UsageError("targets.txt:3: bad port 'x'")})
    result = runner.invoke(app, ["scan", "-f", "targets.txt"])
    assert result.exit_code == Exit.USAGE
    assert result.stdout == ""
    assert result.stderr == "prober: error: targets.txt:3: bad port 'x'\n"


@pytest.mark.parametrize("output_format", ["jsonl", "csv", "table"])
def test_a_bad_line_found_while_iterating_writes_nothing(fake: Any, output_format: str) -> None:
    """The file's first pass fails before the first record: no CSV header, no table head."""
    fake(results=[], error=UsageError("-:2: bad target '1.2.3'"))
    result = runner.invoke(app, ["scan", "-f", "-", "--format", output_format])
    assert result.exit_code == Exit.USAGE
    assert result.stdout == ""
    assert result.stderr == "prober: error: -:2: bad target '1.2.3'\n"


def test_a_bad_stdin_line_after_records_keeps_them(fake: Any) -> None:
    fake(results=RESULTS[:2], error=UsageError("-:9: bad target '1.2.3'"))
    result = runner.invoke(app, ["scan", "-f", "-"])
    assert result.exit_code == Exit.USAGE
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        r.to_dict() for r in RESULTS[:2]]
    assert result.stderr.splitlines() == ["prober: error: -:9: bad target '1.2.3'"]


def test_skip_bad_reports_each_line(fake: Any) -> None:
    fake(bad=["t.txt:2: bad port '99999'", "t.txt:5: bad target 'x:'"])
    result = runner.invoke(app, ["scan", "-f", "t.txt", "--skip-bad"])
    assert result.exit_code == 0
    assert result.stderr.splitlines()[:2] == [
        "prober: skipped t.txt:2: bad port '99999'", "prober: skipped t.txt:5: bad target 'x:'"]


def test_raw_sockets_not_permitted(fake: Any) -> None:
    fake(results=[], error=RawSocketsNotPermitted("raw sockets need root or CAP_NET_RAW"))
    result = runner.invoke(app, ["scan", "198.18.0.18:80"])
    assert result.exit_code == Exit.NOT_PERMITTED
    assert result.stderr == "prober: error: raw sockets need root or CAP_NET_RAW\n"


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(("chosen", "to_file", "tty", "expected"), [
    (None, False, False, ScanFormat.JSONL),
    (None, False, True, ScanFormat.TABLE),
    (None, True, True, ScanFormat.JSONL),
    (ScanFormat.CSV, False, True, ScanFormat.CSV),
    (ScanFormat.TABLE, True, False, ScanFormat.TABLE),
])
def test_format_selection(chosen: ScanFormat | None, to_file: bool, tty: bool,
                          expected: ScanFormat) -> None:
    assert scan_format(chosen, to_file, tty) is expected


def test_jsonl_lines_are_to_dict(fake: Any) -> None:
    fake()
    result = runner.invoke(app, ["scan", "198.18.0.0/24:80,81"])
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records == [r.to_dict() for r in RESULTS]
    assert all(list(record) == list(SCAN_FIELDS) for record in records)
    assert "summary" not in result.stdout  # the summary goes to stderr: `cat` merges shards


def test_csv_header_and_rows(fake: Any) -> None:
    fake()
    result = runner.invoke(app, ["scan", "198.18.0.0/24:80,81", "--format", "csv"])
    assert result.exit_code == 0
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert tuple(rows[0]) == SCAN_FIELDS
    assert len(rows) == 1 + len(RESULTS)
    for row, record in zip(rows[1:], RESULTS, strict=True):
        expected = ["" if v is None else str(v) for v in record.to_dict().values()]
        assert row == expected
    assert rows[5][SCAN_FIELDS.index("name")] == 'open.lab, "quoted"'  # quoted by csv


def test_csv_without_records_is_a_header(fake: Any) -> None:
    fake(results=[])
    result = runner.invoke(app, ["scan", "198.18.0.18:80", "--format", "csv"])
    assert result.exit_code == 0
    assert result.stdout == ",".join(SCAN_FIELDS) + "\n"


def test_table_on_a_terminal(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake()
    monkeypatch.setattr(cli, "_stdout_is_tty", lambda: True)
    result = runner.invoke(app, ["scan", "198.18.0.0/24:80,81"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == render.TABLE_HEADER
    assert lines[1].split() == ["198.18.0.18", "80", "open", "syn-ack", "0.067", "63", "MSTNW"]
    assert lines[3].split() == ["198.18.0.34", "80", "filtered", "no-response", "-", "-", "-"]
    assert "ICMP 3/13 from 198.18.0.33" in lines[4]
    assert lines[5].startswith("2001:2::1:2") and "attempt 2" in lines[5]
    assert "user clock" in lines[5]


def test_output_file(fake: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake()
    monkeypatch.setattr(cli, "_stdout_is_tty", lambda: True)  # a file is never a table
    out = tmp_path / "out.jsonl"
    out.write_text("old content that must go\n" * 100)
    result = runner.invoke(app, ["scan", "198.18.0.0/24:80", "-o", str(out)])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        r.to_dict() for r in RESULTS]


def test_a_refused_scan_leaves_the_output_file_alone(fake: Any, tmp_path: Path) -> None:
    fake(results=[], error=UsageError("t:1: bad"))
    out = tmp_path / "out.jsonl"
    out.write_text("yesterday's scan\n")
    assert runner.invoke(app, ["scan", "-f", "t", "-o", str(out)]).exit_code == Exit.USAGE
    assert out.read_text() == "yesterday's scan\n"


def test_many_records_are_flushed_in_batches(fake: Any) -> None:
    many = [replace(RESULTS[0], port=port) for port in range(1, 3001)]
    fake(results=many, summary=summary_of(many))
    result = runner.invoke(app, ["scan", "198.18.0.18:1-3000"])
    assert result.exit_code == 0
    assert [json.loads(line)["port"] for line in result.stdout.splitlines()] == list(
        range(1, 3001))


@pytest.mark.parametrize("output_format", ["jsonl", "csv", "table"])
def test_open_only(fake: Any, output_format: str) -> None:
    fake()
    result = runner.invoke(app, ["scan", "198.18.0.0/24:80", "--open-only", "--format",
                                 output_format])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()[1 if output_format != "jsonl" else 0:]
    assert len(lines) == 2
    assert all(("open" in line) and ("closed" not in line) for line in lines)
    assert "5 results" in result.stderr  # the summary counts every record


# --- summary and exit statuses --------------------------------------------------------------


def test_summary_on_stderr(fake: Any) -> None:
    fake()
    result = runner.invoke(app, ["scan", "198.18.0.0/24:80"])
    text = result.stderr
    assert "5 results for 5 targets in 2.50 s" in text
    assert "states: 2 open, 1 closed, 2 filtered" in text
    assert "reasons: 2 syn-ack, 1 rst, 1 icmp-unreachable, 1 no-response" in text
    assert "sent 5 SYNs at 1,000/s" in text
    assert "3 excluded, 256 blocklisted, 0 bad lines skipped" in text
    assert "2 by the local kernel, 0 by prober" in text
    assert "kernel drops 0, invalid 0, duplicates 0, late 0, ICMP notices 0" in text
    assert "INCOMPLETE" not in text


def test_kernel_drops_make_it_incomplete(fake: Any) -> None:
    fake(summary=summary_of(RESULTS, kernel_drops=1234, rate_pps=153_000.0))
    result = runner.invoke(app, ["scan", "198.19.0.0/16:80"])
    assert result.exit_code == Exit.INCOMPLETE == 10
    assert "INCOMPLETE: the kernel dropped 1,234 captured frames" in result.stderr
    assert "--rate 76000" in result.stderr


def test_send_failures_make_it_incomplete(fake: Any) -> None:
    fake(summary=summary_of(RESULTS, send_failed=2))
    result = runner.invoke(app, ["scan", "198.19.0.0/16:80"])
    assert result.exit_code == Exit.INCOMPLETE
    assert "2 SYNs could not be sent" in result.stderr


def test_invalid_kinds_in_summary() -> None:
    lines = render.summary_lines(summary_of(RESULTS, invalid_by_kind={Stray.WRONG_ACK: 4}))
    assert "Ignored 4 packet(s) that prove nothing:" in lines


@pytest.mark.parametrize(("rate", "expected"), [(153_000.0, 76_000), (1000.0, 500),
                                                (3.0, 1), (1.0, 1), (99_999.0, 49_000)])
def test_suggested_rate(rate: float, expected: int) -> None:
    assert render.suggested_rate(rate) == expected


def test_progress_line_on_a_terminal(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """rich draws it on stderr and erases it before the summary (transient)."""
    slow = [replace(RESULTS[0], port=port) for port in range(1, 4)]

    async def slow_results(self: FakeRun) -> AsyncIterator[ScanResult]:
        for result in slow:
            yield result
            await asyncio.sleep(0.3)
        self.summary = self.final

    fake(results=slow, summary=summary_of(slow))
    monkeypatch.setattr(FakeRun, "_results", slow_results)
    monkeypatch.setattr(cli, "_stderr_is_tty", lambda: True)
    monkeypatch.setattr(cli, "_stdout_is_tty", lambda: True)
    result = runner.invoke(app, ["scan", "198.18.0.18:1-3"])
    assert result.exit_code == 0, result.output
    assert "30.0% 3/10  1,000 SYN/s  ETA 0:07  drops 0  invalid 1  sent 4  answered 2" in (
        result.stderr)
    assert "\x1b[2K--- prober scan:" in result.stderr  # the line was erased before it
    assert result.stdout.splitlines()[0] == render.TABLE_HEADER
    assert len(result.stdout.splitlines()) == 4


def test_progress_text_while_reading_stdin() -> None:
    text = render.progress_text(ScanProgress(None, 7, 5, 1, 0.0, None, 3, 0, 3725.0))
    assert text == ("5 done (reading targets)  0 SYN/s  ETA -  drops 3  invalid 0  sent 7"
                    "  answered 1  [1:02:05]")


# --- Ctrl-C and a reader that leaves (a real process: signals and pipes) ------------------

FAKE_MAIN = textwrap.dedent("""
    import asyncio, sys
    from dataclasses import replace
    sys.path[:0] = [{repository!r}, {tests!r}]
    import prober.api
    from prober.cli import main
    from unit.test_cli_scan import RESULTS, FakeRun, summary_of

    def endless():
        port = 0
        while True:
            port += 1
            yield replace(RESULTS[0], port=port % 65536)

    class Endless(FakeRun):
        async def _results(self):
            for n, result in enumerate(endless()):
                if self.stopped:
                    break
                yield result
                if n % 64 == 0:
                    await asyncio.sleep(0.001)
            self.summary = replace(self.final, interrupted=self.stopped)

    prober.api.Prober.scan = lambda self, *a, **k: Endless((), summary_of(RESULTS))
    sys.argv = ["prober", "scan", "198.19.0.0/16:1-65535"]
    main()
""")


def fake_scan_script(tmp_path: Path) -> Path:
    script = tmp_path / "fake_scan.py"
    script.write_text(FAKE_MAIN.format(repository=str(REPOSITORY),
                                       tests=str(REPOSITORY / "tests")))
    return script


def test_head_1_exits_141_quietly(tmp_path: Path) -> None:
    done = subprocess.run(
        f"{sys.executable} {fake_scan_script(tmp_path)} | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == Exit.STDOUT_CLOSED, done.stderr
    assert json.loads(done.stdout)["port"] == 1
    assert done.stderr == ""


def test_ctrl_c_stops_prints_the_summary_and_exits_130(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, str(fake_scan_script(tmp_path))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()  # running
    process.send_signal(signal.SIGINT)
    drained = process.stdout.read()  # what was flushed after
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == Exit.INTERRUPTED, stderr
    text = stderr.decode()
    assert "Traceback" not in text
    assert "INTERRUPTED:" in text and "--- prober scan:" in text
    for line in drained.decode().splitlines()[:-1]:
        json.loads(line)  # whole lines only


# --- lazy imports -----------------------------------------------------------------------------


def test_syn_does_not_import_the_scan() -> None:
    """`prober syn` imports what it runs: not the scan's renderers, engine or plan, nor rich."""
    code = (
        "import sys, prober.cli, prober.api, prober.output.human, prober.output.jsonl;"
        "from typer.testing import CliRunner;"
        "CliRunner().invoke(prober.cli.app, ['syn', '198.18.0.2']);"  # a usage error
        "bad = [m for m in sys.modules if m.startswith(('prober.output.scan', 'prober.engine.scan',"
        " 'prober.scan_plan', 'prober.core.scan_result', 'rich'))];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPOSITORY,
                   env={**os.environ, "COLUMNS": "80"})


@pytest.mark.parametrize("args", [
    ["scan"],
    ["scan", "198.18.0.18:80", "--shard", "0/4"],
    ["scan", "198.18.0.18:80", "--shard", "2-4"],
    ["scan", "198.18.0.18:80", "--format", "xml"],
    ["scan", "198.18.0.18:80", "--retries", "x"],
    ["scan", "198.18.0.18:80", "-4", "-6"],
])
def test_the_installed_command_prints_one_error_line(args: list[str]) -> None:
    """Checked before the library is called: no root, no engine, one line, exit 2."""
    done = subprocess.run([sys.executable, "-c", "from prober.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPOSITORY)
    assert done.returncode == Exit.USAGE
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prober: error: "), done.stderr
