"""A real Prometheus (Debian's, /usr/bin/prometheus) scrapes a real `prober monitor` that
monitors the SYN topology's open, closed and filtered ports, and the test asks Prometheus's
HTTP API what it stored, as a user's dashboard or alert would (issue 10's CI test).

Two jobs, as examples/prometheus/prometheus.yml has them: `prober` scrapes /metrics, and
`prober-probe` is blackbox_exporter's multi-target pattern, relabelled onto /probe. Then the
open target goes silent (an nftables drop in its namespace) and comes back, and the success
series follows within two intervals each way.

Both processes listen on free loopback ports, keep their state in the test's temporary
directory and are ended by their PIDs, also when a test fails. Every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from prober.lab import SynTopology, route_check
from tests.unit.test_examples_monitoring import DASHBOARD, dashboard_expressions, metric_names

pytestmark = pytest.mark.integration

PROMETHEUS = "/usr/bin/prometheus"
INTERVAL_S = 1.0  # prober's --interval and Prometheus's scrape_interval
PROBE_TIMEOUT_S = 0.4  # prober's --timeout: a silent round ends well within its interval
WAIT_S = 20.0  # a bound on each wait for a condition; never an assertion about speed
VANTAGE = "pytest"
SILENCE_TABLE = "prober_test_silence"
T = TypeVar("T")


def free_loopback_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def wait_until(what: str, check: Callable[[], T | None], *, alive: Callable[[], None],
               bound_s: float = WAIT_S) -> T:
    """Poll ``check`` until it returns something other than None; fail after ``bound_s``
    or as soon as ``alive`` finds a process gone."""
    deadline = time.monotonic() + bound_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        alive()
        try:
            value = check()
        except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
            value, last_error = None, exc
        if value is not None:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {bound_s:.0f} s (last error: {last_error})")


@dataclass
class Stack:
    """The running prober monitor and Prometheus, and the topology they look at."""

    topology: SynTopology
    prober: subprocess.Popen[bytes]
    prometheus: subprocess.Popen[bytes]
    prober_url: str
    prometheus_url: str
    logs: Path

    @property
    def host(self) -> str:
        return str(self.topology.target_v4)

    def alive(self) -> None:
        for name, process in (("prober monitor", self.prober), ("prometheus", self.prometheus)):
            if process.poll() is not None:
                log = (self.logs / f"{name.split()[0]}.stderr").read_text(errors="replace")
                raise AssertionError(f"{name} exited {process.returncode}: {log[-2000:]}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (or matrix, for a range selector)."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            body = json.loads(http_get(url))
        except urllib.error.HTTPError as exc:  # 400: Prometheus says why in the body
            raise AssertionError(f"{promql}: {exc.read().decode(errors='replace')}") from None
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def by_port(self, promql: str) -> dict[int, float]:
        """An instant vector keyed by the series' port label."""
        return {int(item["metric"]["port"]): float(item["value"][1])
                for item in self.query(promql)}

    def wait_by_port(self, what: str, promql: str, expected: dict[int, float]) -> None:
        def check() -> bool | None:
            got = self.by_port(promql)
            return True if all(got.get(port) == value for port, value in expected.items()) \
                else None
        try:
            wait_until(what, check, alive=self.alive)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {promql}: {self.by_port(promql)} != {expected}") \
                from None


PORTS = {"open": SynTopology.OPEN_PORT, "closed": SynTopology.CLOSED_PORT,
         "filtered": SynTopology.DROPPED_PORT}


def prometheus_config(prober_address: str, targets: list[str]) -> dict[str, Any]:
    """The two jobs of examples/prometheus/prometheus.yml, at test speed."""
    return {
        "global": {"scrape_interval": f"{INTERVAL_S:g}s", "scrape_timeout": f"{INTERVAL_S:g}s",
                   "evaluation_interval": f"{INTERVAL_S:g}s"},
        "scrape_configs": [
            {"job_name": "prober", "metrics_path": "/metrics",
             "static_configs": [{"targets": [prober_address]}]},
            {"job_name": "prober-probe", "metrics_path": "/probe",
             "static_configs": [{"targets": targets}],
             "relabel_configs": [
                 {"source_labels": ["__address__"], "target_label": "__param_target"},
                 {"source_labels": ["__param_target"], "target_label": "instance"},
                 {"target_label": "__address__", "replacement": prober_address},
             ]},
        ],
    }


def stop(process: subprocess.Popen[bytes]) -> int:
    """End a child we started, by its PID: SIGTERM, then SIGKILL after a bound."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(syn_topology: SynTopology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    host = str(syn_topology.target_v4)
    route_check(host)  # never send beyond the lab
    work = tmp_path_factory.mktemp("prometheus")
    targets = [f"{host}:{port}" for port in PORTS.values()]
    (work / "targets.txt").write_text("# open, closed, filtered\n" + "\n".join(targets) + "\n")
    # prober listens on a port of the kernel's choosing (--listen :0) and names it in its
    # banner; Prometheus cannot say which it bound, so it gets one that was free just now.
    prometheus_address = f"127.0.0.1:{free_loopback_port()}"
    (work / "data").mkdir()
    with contextlib.ExitStack() as cleanup:
        streams = {name: cleanup.enter_context(open(work / name, "wb"))
                   for name in ("prober.stdout", "prober.stderr", "prometheus.stderr")}
        prober = subprocess.Popen(
            [sys.executable, "-m", "prober", "monitor", "-f", str(work / "targets.txt"),
             "--interval", f"{INTERVAL_S:g}", "--timeout", f"{PROBE_TIMEOUT_S:g}",
             "--listen", "127.0.0.1:0", "--vantage", VANTAGE, "--json"],
            stdin=subprocess.DEVNULL, stdout=streams["prober.stdout"],
            stderr=streams["prober.stderr"])
        prober_exit = cleanup.enter_context(contextlib.ExitStack())
        prober_exit.callback(stop, prober)

        def prober_alive() -> None:
            if prober.poll() is not None:
                log = (work / "prober.stderr").read_text(errors="replace")
                raise AssertionError(f"prober monitor exited {prober.returncode}: {log[-2000:]}")

        def banner_address() -> str | None:
            found = re.search(r"metrics on http://(127\.0\.0\.1:\d+)/metrics",
                              (work / "prober.stderr").read_text(errors="replace"))
            return None if found is None else found[1]

        prober_address = wait_until("prober monitor's banner names its port", banner_address,
                                    alive=prober_alive)
        # JSON (the YAML subset) needs no YAML writer; Prometheus reads it as YAML.
        (work / "prometheus.yml").write_text(
            json.dumps(prometheus_config(prober_address, targets), indent=2))
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address={prometheus_address}",
             "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=streams["prometheus.stderr"], cwd=work)
        cleanup.callback(stop, prometheus)
        running = Stack(syn_topology, prober, prometheus, f"http://{prober_address}",
                        f"http://{prometheus_address}", work)
        wait_until("prober monitor serves /metrics",
                   lambda: b"prober_probe_success" in http_get(f"{running.prober_url}/metrics")
                   or None, alive=running.alive)
        wait_until("prometheus is ready",
                   lambda: http_get(f"{running.prometheus_url}/-/ready") or None,
                   alive=running.alive)
        yield running
        # SIGTERM is prober monitor's normal stop: a clean exit, status 0.
        prober_exit.close()
        assert prober.returncode == 0, (work / "prober.stderr").read_text(errors="replace")


def test_success_per_target(stack: Stack) -> None:
    stack.wait_by_port("prober_probe_success for open/closed/filtered",
                       f'prober_probe_success{{job="prober", vantage="{VANTAGE}"}}',
                       {PORTS["open"]: 1, PORTS["closed"]: 0, PORTS["filtered"]: 0})
    series = stack.query(f'prober_probe_success{{job="prober", port="{PORTS["open"]}"}}')
    assert series[0]["metric"]["target"] == stack.host  # the host as given


def test_port_state_is_one_state_per_target(stack: Stack) -> None:
    for state, port in PORTS.items():
        stack.wait_by_port(f"prober_port_state {state}",
                           f'prober_port_state{{job="prober", state="{state}"}}', {port: 1})
    totals = stack.by_port('sum by (port) (prober_port_state{job="prober"})')
    assert totals == {port: 1 for port in PORTS.values()}
    states = {item["metric"]["state"] for item in stack.query('prober_port_state{job="prober"}')}
    assert states == {"open", "closed", "filtered", "unknown"}


def test_rtt_histogram_grows_for_answers_only(stack: Stack) -> None:
    count = 'prober_syn_rtt_seconds_count{job="prober"}'
    answered = (PORTS["open"], PORTS["closed"])
    first = wait_until("RTT counts for open and closed",
                       lambda: (lambda got: got if all(got.get(p, 0) > 0 for p in answered)
                                else None)(stack.by_port(count)), alive=stack.alive)
    wait_until("RTT counts grow", lambda: True if all(
        stack.by_port(count)[port] > first[port] for port in answered) else None,
        alive=stack.alive)
    assert stack.by_port(count).get(PORTS["filtered"], 0) == 0  # silence has no RTT
    # The lab answers in well under a second: the histogram and the last RTT say so.
    p50 = stack.by_port('histogram_quantile(0.5, sum by (le, port) '
                        '(prober_syn_rtt_seconds_bucket{job="prober"}))')
    assert all(0 < p50[port] < 1 for port in answered), p50
    last = stack.by_port('prober_last_rtt_seconds{job="prober"}')
    assert all(0 < last[port] < 1 for port in answered), last
    assert math.isnan(last[PORTS["filtered"]])  # NaN: the last round had no RTT
    results = {(int(item["metric"]["port"]), item["metric"]["result"])
               for item in stack.query('prober_probes_total{job="prober"} > 0')}
    assert results == {(PORTS["open"], "syn-ack"), (PORTS["closed"], "rst"),
                       (PORTS["filtered"], "no-response")}


def test_probe_multi_target_through_relabelling(stack: Stack) -> None:
    def by_instance(promql: str) -> dict[str, float]:
        return {item["metric"]["instance"]: float(item["value"][1])
                for item in stack.query(promql)}

    expected = {f"{stack.host}:{PORTS['open']}": 1.0, f"{stack.host}:{PORTS['closed']}": 0.0,
                f"{stack.host}:{PORTS['filtered']}": 0.0}
    wait_until("probe_success via /probe",
               lambda: True if by_instance('probe_success{job="prober-probe"}') == expected
               else None, alive=stack.alive)
    rtt = by_instance('probe_tcp_syn_rtt_seconds{job="prober-probe"}')
    assert 0 < rtt[f"{stack.host}:{PORTS['open']}"] < 1, rtt
    duration = by_instance('probe_duration_seconds{job="prober-probe"}')
    assert set(duration) == set(expected) and all(d > 0 for d in duration.values())
    up = by_instance('up{job="prober-probe"}')  # every scrape answered, the filtered one too
    assert up == dict.fromkeys(expected, 1.0)


def test_every_dashboard_query_has_data(stack: Stack) -> None:
    """Each of the Grafana dashboard's queries, with its variables as Grafana fills them,
    evaluates in this Prometheus and finds series (examples/grafana/prober-dashboard.json)."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {"$__rate_interval": f"{4 * INTERVAL_S:g}s", "$__range": "1m",
                 "$vantage": VANTAGE, "$target": re.escape(stack.host).replace("\\", "\\\\")}
    empty = []
    for expr in dashboard_expressions(dashboard):
        for variable, value in variables.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        if not stack.query(expr):
            empty.append(expr)
    assert not empty, empty
    names = set().union(*(metric_names(e) for e in dashboard_expressions(dashboard)))
    missing = [name for name in sorted(names)
               if not stack.query(f'count({name}{{job="prober"}})')]
    assert not missing, missing


@contextlib.contextmanager
def silenced(namespace: str, port: int) -> Iterator[None]:
    """Drop every TCP segment to ``port`` inside the target namespace, until the block ends
    (a table of the test's own: the topology's rules stay as they are)."""
    ruleset = (f"table inet {SILENCE_TABLE} {{\n chain input {{\n"
               f"  type filter hook input priority -10; policy accept;\n"
               f"  tcp dport {port} drop\n }}\n}}\n")
    nft = ["ip", "netns", "exec", namespace, "nft"]
    subprocess.run([*nft, "-f", "-"], input=ruleset, text=True, check=True, timeout=10)
    try:
        yield
    finally:
        subprocess.run([*nft, "delete", "table", "inet", SILENCE_TABLE], check=True, timeout=10)


def scrapes_until(stack: Stack, since: float, value: float) -> int:
    """How many of the open target's scraped success samples after ``since`` came before the
    first equal to ``value`` (waits, bounded, for that one)."""
    selector = f'prober_probe_success{{job="prober", port="{PORTS["open"]}"}}[60s]'

    def check() -> int | None:
        samples = [(float(t), float(v)) for t, v in stack.query(selector)[0]["values"]]
        after = [v for t, v in samples if t > since]
        return after.index(value) if value in after else None

    return wait_until(f"prober_probe_success becomes {value:g}", check, alive=stack.alive)


def test_a_target_that_goes_silent_flips_success_and_back(stack: Stack) -> None:
    success = f'prober_probe_success{{job="prober", vantage="{VANTAGE}"}}'
    stack.wait_by_port("open target up", success, {PORTS["open"]: 1})
    with silenced(stack.topology.target_namespace, PORTS["open"]):
        quiet_at = time.time()
        # Each scrape sees the last round; the first round after the drop ends silent by
        # interval + timeout, so at most two scrapes (two intervals) still see it up.
        still_up = scrapes_until(stack, quiet_at, 0.0)
        assert still_up <= 2, f"{still_up} scrapes after the silence still saw success"
        state = stack.by_port('prober_port_state{job="prober", state="filtered"}')
        assert state[PORTS["open"]] == 1
    back_at = time.time()
    still_down = scrapes_until(stack, back_at, 1.0)
    assert still_down <= 2, f"{still_down} scrapes after the answer came back still saw 0"
    changes = [json.loads(line) for line in
               (stack.logs / "prober.stdout").read_text().splitlines() if line.strip()]
    opens = [c["state"] for c in changes if c["port"] == PORTS["open"]]
    assert "filtered" in opens and opens[-1] == "open"
