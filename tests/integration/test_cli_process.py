"""The `prober` process as a shell runs it: a reader that leaves its pipe, a second Ctrl-C,
and a command that never imports Scapy or the lab, against the SYN topology's real target."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prober.cli import STILL_STOPPING_HINT
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


DNS_DROP = """\
table inet prober_test_dns {
    chain input {
        type filter hook input priority filter; policy accept;
        udp dport 53 drop
        tcp dport 53 drop
    }
}
"""


@pytest.fixture
def silent_resolver(syn_topology: SynTopology, tmp_path: Path) -> Iterator[Path]:
    """A resolv.conf whose only nameserver is the topology's target, which drops DNS: a
    lookup there waits 5 x 30 s, as behind a dead or unreachable server (far past WAIT_S,
    so a process that waits for it fails the test instead of passing slowly)."""
    route_check(str(syn_topology.target_v4))
    namespace = ["ip", "netns", "exec", syn_topology.target_namespace]
    subprocess.run([*namespace, "nft", "-f", "-"], input=DNS_DROP, text=True, check=True,
                   timeout=10)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {syn_topology.target_v4}\noptions timeout:30 attempts:5\n")
    try:
        yield resolv
    finally:
        subprocess.run([*namespace, "nft", "delete", "table", "inet", "prober_test_dns"],
                       check=True, timeout=10)


def test_a_second_ctrl_c_quits_a_run_that_cannot_stop(silent_resolver: Path) -> None:
    """The first Ctrl-C cannot end a run that waits for the resolver; after half a second
    prober says how to quit, and the second Ctrl-C quits at once (before: it was ignored,
    and the run waited out the resolver's timeout)."""
    # The nameserver is swapped in a mount namespace of the child's own: the host's
    # /etc/resolv.conf is never touched.
    swap = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", swap, "sh",
            str(silent_resolver), *PROBER, "halfopen", "slow.prober.test:80"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line.rstrip("\n"))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()

    def next_line() -> str:
        return lines.get(timeout=WAIT_S)

    try:
        assert next_line().startswith("prober: watching for up to")  # then it resolves
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        assert next_line() == STILL_STOPPING_HINT
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT_S)
        reader.join(timeout=WAIT_S)
    assert code == 130
    assert next_line() == "prober: interrupted"
    assert lines.empty()  # no "cannot resolve", no traceback
    assert process.stdout is not None and process.stdout.read() == ""
    process.stdout.close()


# --- what a one-probe command imports --------------------------------------------------------


def test_syn_imports_no_scapy_lab_or_conversation_probe(syn_topology: SynTopology) -> None:
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
    # The conversation probes are imported by the commands that run them (api.py imports
    # them in halfopen() and close()), not by every command.
    conversations = {name for name in imported if name.startswith(
        ("prober.core.close", "prober.core.halfopen", "prober.core.cookie_check",
         "prober.core.handshake_conversation", "prober.output.conversation"))}
    assert not conversations
