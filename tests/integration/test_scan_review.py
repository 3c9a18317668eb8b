"""The scan engine against the SYN topology (tests/integration/conftest.py): cases found in
review, each with the records it must give (one per target and port, whatever happens)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

import pytest
import uvloop

from prober import Prober
from prober.core.scan_result import ScanResult
from prober.engine.scan.run import ScanRun
from prober.lab import SynTopology, route_check

pytestmark = pytest.mark.integration


def _endpoints(topo: SynTopology, *ports: int) -> list[str]:
    route_check(ipaddress.ip_address(topo.target_v4))  # never send beyond the lab
    return [f"{topo.target_v4}:{port}" for port in ports]


def _records(run: ScanRun) -> list[ScanResult]:
    async def collect() -> list[ScanResult]:
        return [result async for result in run]

    return uvloop.run(collect())


def test_a_stop_before_the_iteration_ends_it_at_once(syn_topology: SynTopology) -> None:
    run = Prober().scan(_endpoints(syn_topology, SynTopology.OPEN_PORT), wait=0.2)
    run.stop()
    assert _records(run) == []
    assert run.summary is not None
    assert (run.summary.interrupted, run.summary.sent) == (True, 0)


def test_retries_give_one_record_per_target(syn_topology: SynTopology) -> None:
    ports = (SynTopology.OPEN_PORT, SynTopology.CLOSED_PORT, SynTopology.DROPPED_PORT,
             SynTopology.ADMIN_PROHIBITED_PORT)
    run = Prober().scan(_endpoints(syn_topology, *ports), retries=2, wait=0.2)
    by_port = {}
    for result in _records(run):
        assert result.port not in by_port
        by_port[result.port] = (result.reason.value, result.attempt)
    assert by_port == {
        SynTopology.OPEN_PORT: ("syn-ack", 1),
        SynTopology.CLOSED_PORT: ("rst", 1),
        SynTopology.DROPPED_PORT: ("no-response", 3),
        SynTopology.ADMIN_PROHIBITED_PORT: ("icmp-unreachable", 1),
    }
    assert run.summary is not None and run.summary.sent == 6


def test_a_bad_stdin_line_ends_the_scan_after_the_records_before_it(
    syn_topology: SynTopology,
) -> None:
    good = _endpoints(syn_topology, SynTopology.OPEN_PORT, SynTopology.CLOSED_PORT)
    lines = [*good, "not a target!", *_endpoints(syn_topology, 82)]
    done = subprocess.run(
        [sys.executable, "-m", "prober", "scan", "-f", "-", "--wait", "0.2"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted((r["port"], r["reason"]) for r in records) == [(80, "syn-ack"), (81, "rst")]
    assert "<stdin>:3: invalid target" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
