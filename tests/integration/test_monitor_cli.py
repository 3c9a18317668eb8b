"""`prober monitor` as a service runs it, against the SYN topology's real target: /metrics and
/probe scraped over HTTP for an open, a closed and a dropped port; SIGHUP reloads (a good file,
and a bad line that keeps the old list); a taken --listen port; --json lines; SIGTERM exit 0."""

from __future__ import annotations

import contextlib
import json
import math
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prober.lab import SynTopology, route_check

pytestmark = pytest.mark.integration

PROBER = [sys.executable, "-m", "prober"]
WAIT_S = 20.0  # a bound on every wait here; never an assertion about speed
INTERVAL = ["-i", "0.3", "-W", "0.25"]

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Service:
    """A `prober monitor` child process, its stdout and stderr read line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        for stream, lines in ((process.stdout, self.stdout), (process.stderr, self.stderr)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _read(stream: IO[str] | None, lines: queue.Queue[str]) -> None:
        assert stream is not None
        for line in stream:
            lines.put(line.rstrip("\n"))

    @staticmethod
    def line(lines: queue.Queue[str], matching: Callable[[str], bool] = lambda _: True) -> str:
        deadline = time.monotonic() + WAIT_S
        while True:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if matching(line):
                return line

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=WAIT_S)


@contextlib.contextmanager
def service(*args: str) -> Iterator[Service]:
    process = subprocess.Popen([*PROBER, "monitor", *args], text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        yield Service(process)
    finally:
        if process.poll() is None:
            process.kill()  # by PID: the one this test started
        process.wait(timeout=WAIT_S)


def targets_file(tmp_path: Path, topo: SynTopology, *ports: int, extra: str = "") -> Path:
    route_check(str(topo.target_v4))  # never send beyond the lab
    path = tmp_path / "targets.txt"
    path.write_text("".join(f"{topo.target_v4}:{port}\n" for port in ports) + extra)
    return path


def scrape(url: str) -> Series:
    with urllib.request.urlopen(url, timeout=WAIT_S) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def per_port(series: Series, name: str) -> dict[int, float]:
    return {int(dict(labels)["port"]): value for (metric, labels), value in series.items()
            if metric == name}


def total(series: Series, name: str) -> float:
    return sum(value for (metric, _), value in series.items() if metric == name)


def scrape_until(url: str, done: Callable[[Series], bool]) -> Series:
    deadline = time.monotonic() + WAIT_S
    while True:
        got = scrape(url)
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def metrics_url(banner: str) -> str:
    assert banner.startswith("prober: monitoring "), banner
    return banner.rsplit(" ", 1)[1]


def test_metrics_probe_reload_and_sigterm(syn_topology: SynTopology, tmp_path: Path) -> None:
    topo = syn_topology
    path = targets_file(tmp_path, topo, SynTopology.OPEN_PORT, SynTopology.CLOSED_PORT,
                        SynTopology.DROPPED_PORT)
    with service("-f", str(path), *INTERVAL, "--listen", "127.0.0.1:0",
                 "--vantage", "lab-1") as run:
        url = metrics_url(run.line(run.stdout))
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        ports = {SynTopology.OPEN_PORT, SynTopology.CLOSED_PORT, SynTopology.DROPPED_PORT}
        got = scrape_until(url, lambda s: set(per_port(s, "prober_probe_success")) == ports
                           and per_port(s, "prober_syn_rtt_seconds_count").get(80, 0) >= 2)
        assert per_port(got, "prober_probe_success") == {80: 1, 81: 0, 82: 0}
        states = {(int(dict(labels)["port"]), dict(labels)["state"])
                  for (name, labels), value in got.items()
                  if name == "prober_port_state" and value == 1}
        assert states == {(80, "open"), (81, "closed"), (82, "filtered")}
        assert all(dict(labels)["vantage"] == "lab-1" and dict(labels)["target"]
                   == str(topo.target_v4) for (name, labels) in got if name.startswith(
                       "prober_probe_success"))
        last = per_port(got, "prober_last_rtt_seconds")
        assert 0 < last[80] < 0.25 and 0 < last[81] < 0.25 and math.isnan(last[82])
        assert per_port(got, "prober_syn_rtt_seconds_count")[82] == 0
        results = {(int(dict(labels)["port"]), dict(labels)["result"])
                   for (name, labels), value in got.items()
                   if name == "prober_probes_total" and value > 0}
        assert results == {(80, "syn-ack"), (81, "rst"), (82, "no-response")}
        # The state changes on stdout: each target's first state.
        changes = sorted(run.line(run.stdout) for _ in ports)
        assert [line.split(" ", 2)[2].split(" (")[0] for line in changes] == [
            f"{topo.target_v4}:80 new -> open", f"{topo.target_v4}:81 new -> closed",
            f"{topo.target_v4}:82 new -> filtered"]

        # /probe: one SYN on request, blackbox's names.
        base = url.removesuffix("/metrics")
        probe = scrape(f"{base}/probe?target={topo.target_v4}:80")
        assert probe[("probe_success", ())] == 1
        assert 0 < probe[("probe_tcp_syn_rtt_seconds", ())] < 0.25
        probe = scrape(f"{base}/probe?target=[{topo.target_v6}]:81")
        assert probe[("probe_success", ())] == 0
        assert probe[("probe_port_state", (("state", "closed"),))] == 1
        probe = scrape(f"{base}/probe?target={topo.target_v4}:82&timeout=0.3")
        assert probe[("probe_success", ())] == 0 and ("probe_tcp_syn_rtt_seconds", ()) not in probe

        # SIGHUP with a good file: 81 goes, 83 (port unreachable) comes, 80 keeps its counts.
        open_key = ("prober_probes_total", (("port", "80"), ("result", "syn-ack"),
                                            ("target", str(topo.target_v4)), ("vantage", "lab-1")))
        answered = scrape(url)[open_key]
        targets_file(tmp_path, topo, SynTopology.OPEN_PORT, SynTopology.DROPPED_PORT,
                     SynTopology.PORT_UNREACHABLE_PORT)
        run.process.send_signal(signal.SIGHUP)
        assert run.line(run.stderr) == "prober: reloaded: 3 targets (+1, -1)"
        got = scrape_until(url, lambda s: set(per_port(s, "prober_probe_success")) == {80, 82, 83})
        assert set(per_port(got, "prober_probe_success")) == {80, 82, 83}
        assert got[("prober_targets", (("vantage", "lab-1"),))] == 3
        assert got[open_key] >= answered

        # SIGHUP with a bad line: one line naming FILE:LINE, the old list kept.
        targets_file(tmp_path, topo, SynTopology.OPEN_PORT, extra="198.18.0.18:http\n")
        run.process.send_signal(signal.SIGHUP)
        refused = run.line(run.stderr)
        assert refused == (f"prober: reload refused: {path}:2: invalid port 'http': expected "
                           "a number from 1 to 65535 (still monitoring the previous 3 targets)")
        before = total(scrape(url), "prober_probes_total")
        time.sleep(0.7)
        after = scrape(url)
        assert set(per_port(after, "prober_probe_success")) == {80, 82, 83}
        assert total(after, "prober_probes_total") > before  # the old list still probed

        assert run.stop(signal.SIGTERM) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)  # the endpoint closed with the process


def test_json_lines_and_sigterm(syn_topology: SynTopology, tmp_path: Path) -> None:
    path = targets_file(tmp_path, syn_topology, SynTopology.OPEN_PORT,
                        extra=f"[{syn_topology.target_v6}]:{SynTopology.CLOSED_PORT}\n")
    with service("-f", str(path), *INTERVAL, "--json", "--no-listen") as run:
        assert "no metrics endpoint" in run.line(run.stderr)
        samples = [json.loads(run.line(run.stdout)) for _ in range(6)]
        assert {s["type"] for s in samples} == {"monitor"}
        by_target = {s["target"]: (s["state"], s["reason"]) for s in samples}
        assert by_target == {f"{syn_topology.target_v4}:80": ("open", "syn-ack"),
                             f"[{syn_topology.target_v6}]:81": ("closed", "rst")}
        assert all(s["rtt_s"] > 0 and s["rtt_clock"] == "kernel" for s in samples)
        assert run.stop(signal.SIGTERM) == 0


def test_ctrl_c_exits_130(syn_topology: SynTopology, tmp_path: Path) -> None:
    path = targets_file(tmp_path, syn_topology, SynTopology.OPEN_PORT)
    with service("-f", str(path), *INTERVAL, "--listen", "127.0.0.1:0") as run:
        run.line(run.stdout)  # the banner
        run.line(run.stdout)  # the first state
        assert run.stop(signal.SIGINT) == 130


def test_a_taken_listen_port_is_one_line_and_exit_12(syn_topology: SynTopology,
                                                      tmp_path: Path) -> None:
    path = targets_file(tmp_path, syn_topology, SynTopology.OPEN_PORT)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*PROBER, "monitor", "-f", str(path), "--listen",
                               f"127.0.0.1:{port}"], capture_output=True, text=True,
                              timeout=WAIT_S)
    assert done.returncode == 12
    assert done.stdout == ""
    assert done.stderr == (f"prober: error: cannot listen on 127.0.0.1:{port}: "
                           "Address already in use\n")


def test_a_reader_that_leaves_ends_the_run_with_141(syn_topology: SynTopology,
                                                    tmp_path: Path) -> None:
    path = targets_file(tmp_path, syn_topology, SynTopology.OPEN_PORT)
    process = subprocess.Popen([*PROBER, "monitor", "-f", str(path), *INTERVAL, "--json",
                                "--no-listen"], text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["type"] == "monitor"
        process.stdout.close()  # as `| head -1` does
        assert process.wait(timeout=WAIT_S) == 141
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT_S)


def test_sigterm_before_the_first_sample_is_exit_0(syn_topology: SynTopology,
                                                   tmp_path: Path) -> None:
    # --json writes nothing until a sample: the last flush then opened stdout's writer off
    # the event loop, a traceback and exit 1 instead of a clean stop.
    path = targets_file(tmp_path, syn_topology, SynTopology.OPEN_PORT)
    with service("-f", str(path), "-i", "3600", "--json", "--no-listen") as run:
        assert "monitoring 1 target" in run.line(run.stderr)
        assert run.stop(signal.SIGTERM) == 0
        assert run.process.stderr is not None
        time.sleep(0.2)  # the reader thread takes what is left
        left = []
        while not run.stderr.empty():
            left.append(run.stderr.get())
        assert not any("Traceback" in line for line in left), left


def test_without_raw_sockets_it_is_one_line_and_exit_3(syn_topology: SynTopology,
                                                      tmp_path: Path) -> None:
    # The targets on stdin: pytest's directory is root's alone. Nothing is sent (no raw
    # socket), but the address is the lab's all the same.
    path = targets_file(tmp_path, syn_topology, SynTopology.OPEN_PORT)
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *PROBER, "monitor", "-f", "-", "--listen", "127.0.0.1:0"],
                          input=path.read_text(), capture_output=True, text=True,
                          timeout=WAIT_S)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("prober: error: raw sockets are not allowed")
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""
