"""The `prober` process as a shell runs it: a reader that leaves its pipe, a second Ctrl-C,
and a command that never imports Scapy or the lab, against the SYN topology's real target."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prober.lab import SynTopology, route_check
from prober.output.pcap import PCAP_MAGIC_NANOSECONDS

pytestmark = pytest.mark.integration

PROBER = [sys.executable, "-m", "prober"]
WAIT_S = 30.0  # a bound on every wait here; never an assertion about speed


def target(topo: SynTopology, port: int = SynTopology.OPEN_PORT) -> str:
    route_check(str(topo.target_v4))  # never send beyond the lab
    return f"{topo.target_v4}:{port}"


@contextlib.contextmanager
def started(args: list[str], **popen: object) -> Iterator[subprocess.Popen[str]]:
    """`prober ARGS` as a child process; killed (by PID) and reaped if a test leaves it."""
    process = subprocess.Popen([*PROBER, *args], text=True, **popen)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT_S)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def pcap_records(path: Path) -> int:
    data = path.read_bytes()
    assert int.from_bytes(data[:4], "little") == PCAP_MAGIC_NANOSECONDS
    count, offset = 0, 24
    while offset < len(data):
        captured = int.from_bytes(data[offset + 8 : offset + 12], "little")
        offset += 16 + captured
        count += 1
    return count


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                          check=True, timeout=10).stdout


def wait_for_table(table: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while table not in nft_tables():
        assert time.monotonic() < deadline, f"{table} never appeared"
        time.sleep(0.05)


# --- a reader that leaves: `prober syn ... | head -1` ------------------------------------------


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_a_closed_stdout_ends_the_run_quietly_and_keeps_the_pcap(
    syn_topology: SynTopology, tmp_path: Path, json_output: bool
) -> None:
    pcap = tmp_path / "run.pcap"
    args = ["syn", target(syn_topology), "-c", "50", "-i", "0.05", "--pcap", str(pcap)]
    with started([*args, *(["--json"] if json_output else [])], stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()  # what `head -1` reads, then it exits
        process.stdout.close()
        code = process.wait(timeout=WAIT_S)
        stderr = process.stderr.read()
    assert ("open" in first) or ('"state": "open"' in first), first
    assert code == 141, stderr
    assert stderr == ""  # no traceback, no message: the reader chose to leave
    # The run stopped early (not 50 probes) and the pcap has the answered probe's SYN and
    # SYN/ACK, and those of each probe sent since.
    records = pcap_records(pcap)
    assert 2 <= records < 100


# --- a second Ctrl-C quits at once ---------------------------------------------------------------


def send_two_signals_at_once(process: subprocess.Popen[str]) -> None:
    """SIGINT and SIGTERM delivered together: the process is stopped while both are sent, so
    it handles them back to back, as if the second Ctrl-C came before the first had ended
    the run (two SIGINTs would merge into one while pending)."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        os.kill(process.pid, signal.SIGINT)
        os.kill(process.pid, signal.SIGTERM)
    finally:
        os.kill(process.pid, signal.SIGCONT)


@pytest.mark.parametrize("command", ["halfopen", "close"])
def test_a_second_signal_quits_at_once_and_removes_the_table(
    syn_topology: SynTopology, command: str
) -> None:
    args = [command, target(syn_topology)]  # close: then 60 s of TIME-WAIT (--msl 30)
    with started(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        table = f"prober_{process.pid}"
        wait_for_table(table)
        time.sleep(0.3)  # into the watch
        send_two_signals_at_once(process)
        code = process.wait(timeout=WAIT_S)
        assert process.stdout is not None and process.stderr is not None
        stdout, stderr = process.stdout.read(), process.stderr.read()
    assert code == 130, (stdout, stderr)
    assert stdout == ""  # no report: it quit
    assert stderr.strip().splitlines()[-1] == "prober: interrupted"
    assert "Traceback" not in stderr
    assert table not in nft_tables()


def test_one_signal_still_ends_the_run_with_its_report(syn_topology: SynTopology) -> None:
    with started(["halfopen", target(syn_topology)], stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE) as process:
        table = f"prober_{process.pid}"
        wait_for_table(table)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=WAIT_S)
        assert process.stdout is not None
        stdout = process.stdout.read()
    assert code == 0
    assert stdout.startswith("HALF-OPEN ")
    assert table not in nft_tables()


# --- what a one-probe command imports --------------------------------------------------------


def test_syn_imports_neither_scapy_nor_the_lab(syn_topology: SynTopology) -> None:
    """Start-up cost: `prober syn` builds its templates with struct (Scapy is the tests'
    oracle only) and leaves the lab alone (bench/startup measures the CPU)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "prober", "syn", target(syn_topology),
         "-c", "1"],
        capture_output=True, text=True, timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "prober.api" in imported  # the list is real
    heavy = {name for name in imported
             if name.split(".")[0] == "scapy" or name.startswith(("prober.lab", "rich"))}
    assert not heavy
