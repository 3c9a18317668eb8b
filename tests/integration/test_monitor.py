"""`Prober.monitor` against a real Linux stack: each target's state every round, on its own
schedule, and a name that stops resolving is a state, not an exception (issue 10, first
part: the library loop)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import subprocess
import time
from collections import defaultdict

import pytest
import uvloop

from prober import Prober
from prober.core.syn import PortState, Reason
from prober.lab import SynTopology, Topology, hosts_entry
from prober.lab.topologies import build_syn_topology
from prober.monitor.loop import MonitorSample

pytestmark = pytest.mark.integration

INTERVAL = 0.3


def collect(targets: list[tuple[str, int]], rounds: int) -> dict[str, list[MonitorSample]]:
    """Samples by target until each has ``rounds`` (bounded by time as well)."""
    async def run() -> dict[str, list[MonitorSample]]:
        by_target: dict[str, list[MonitorSample]] = defaultdict(list)
        stop = asyncio.Event()
        deadline = time.monotonic() + 4 * rounds * INTERVAL + 5
        async with Prober() as prober:
            async for sample in prober.monitor(targets, interval=INTERVAL, timeout=0.25,
                                               stop=stop):
                by_target[sample.target].append(sample)
                done = len(by_target) == len(targets) and all(
                    len(s) >= rounds for s in by_target.values())
                if done or time.monotonic() > deadline:
                    stop.set()
        return by_target

    return uvloop.run(run())


@pytest.mark.parametrize("version", [4, 6])
def test_every_target_every_round(syn_topology: SynTopology, version: int) -> None:
    host = str(syn_topology.target_v4 if version == 4 else syn_topology.target_v6)
    ports = {SynTopology.OPEN_PORT: (PortState.OPEN, Reason.SYN_ACK),
             SynTopology.CLOSED_PORT: (PortState.CLOSED, Reason.RST),
             SynTopology.DROPPED_PORT: (PortState.FILTERED, Reason.NO_RESPONSE),
             SynTopology.PORT_UNREACHABLE_PORT: (PortState.FILTERED, Reason.ICMP_UNREACHABLE)}
    samples = collect([(host, port) for port in ports], rounds=4)
    for port, (state, reason) in ports.items():
        name = f"[{host}]:{port}" if version == 6 else f"{host}:{port}"
        got = samples[name][:4]
        assert [s.round for s in got] == [1, 2, 3, 4]
        assert {(s.state, s.reason) for s in got} == {(state, reason)}
        # On its own schedule: one interval apart, none late by more than 10 % of it.
        gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
        assert all(abs(gap - INTERVAL) < 0.1 * INTERVAL for gap in gaps), gaps
        assert all(s.late_s < 0.1 * INTERVAL for s in got)
        stats = got[-1].stats
        if reason in (Reason.SYN_ACK, Reason.RST):
            assert all(s.rtt_s is not None and s.rtt_clock == "kernel" for s in got)
            assert stats.loss == 0.0 and stats.p50_rtt_s is not None
        if reason is Reason.NO_RESPONSE:
            assert stats.loss == 1.0 and stats.p50_rtt_s is None
        if reason is Reason.ICMP_UNREACHABLE:
            # A router's (or the host's ICMP's) time, not the target's TCP: no RTT, as the
            # JSON's documentation and RollingStats say, and none in the target's statistics.
            assert all(s.rtt_s is None and s.rtt_clock is None for s in got)
            assert stats.loss == 0.0 and stats.min_rtt_s is None and stats.ewma_rtt_s is None
        assert got[-1].to_dict()["stats"]["rounds"] == 4


def test_a_name_that_stops_resolving_is_a_state(syn_topology: SynTopology) -> None:
    name = f"prober-monitor-{os.getpid()}.test"
    target = (name, SynTopology.OPEN_PORT)

    async def run() -> list[MonitorSample]:
        seen: list[MonitorSample] = []
        stop = asyncio.Event()
        deadline = time.monotonic() + 10
        with contextlib.ExitStack() as hosts:
            hosts.enter_context(hosts_entry(name, syn_topology.target_v4))
            async with Prober() as prober:
                async for sample in prober.monitor([target], interval=INTERVAL, timeout=0.25,
                                                   resolve_every=1.0, stop=stop):
                    seen.append(sample)
                    if len(seen) == 2:
                        hosts.close()  # the name is gone; the next re-resolution sees it
                    if sample.reason is Reason.UNRESOLVED or time.monotonic() > deadline:
                        stop.set()
        return seen

    seen = uvloop.run(run())
    assert seen[0].state is PortState.OPEN and seen[0].address == str(syn_topology.target_v4)
    assert seen[-1].reason is Reason.UNRESOLVED and seen[-1].address is None
    assert seen[-1].error and name in seen[-1].error
    assert [s.round for s in seen] == list(range(1, len(seen) + 1))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def test_our_interface_going_down_and_up_is_a_state(_sweep_stale_lab: None) -> None:
    # A private topology: its root-side link goes down mid-run. Down, the kernel drops the
    # routes over it; an `unreachable` route of the same prefix (higher metric) keeps the
    # probes from taking the machine's default route meanwhile, so a send fails at once
    # (no route to host) instead of leaving the lab.
    with Topology.create() as topology:
        topo = build_syn_topology(topology)
        # The route to the target is its link's /28 (prober.lab.addresses: links are /28).
        network = ipaddress.ip_network(f"{topo.target_v4}/28", strict=False)
        gateway, device = str(topo.router_v4), topo.root_interface
        _ip("route", "add", "unreachable", str(network), "metric", "30000")
        try:
            seen = _monitor_through_link_flap(topo, str(network), gateway, device)
        finally:
            _ip("link", "set", device, "up")
            subprocess.run(["ip", "route", "del", "unreachable", str(network), "metric",
                            "30000"], capture_output=True, timeout=10)
    reasons = [s.reason for s in seen]
    first_failed = reasons.index(Reason.SEND_FAILED)
    assert set(reasons[:first_failed]) == {Reason.SYN_ACK}
    failed = [s for s in seen if s.reason is Reason.SEND_FAILED]
    assert all(s.state is PortState.UNKNOWN and s.error for s in failed)
    assert reasons[-1] is Reason.SYN_ACK  # back once the link is
    assert [s.round for s in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].stats.unsent >= 1 and seen[-1].stats.loss == 0.0  # unsent is no loss


def _monitor_through_link_flap(topo: SynTopology, network: str, gateway: str,
                               device: str) -> list[MonitorSample]:
    async def run() -> list[MonitorSample]:
        seen: list[MonitorSample] = []
        stop = asyncio.Event()
        deadline = time.monotonic() + 10
        phase = "up"
        async with Prober() as prober:
            async for sample in prober.monitor([(str(topo.target_v4), SynTopology.OPEN_PORT)],
                                               interval=INTERVAL, timeout=0.25, stop=stop):
                seen.append(sample)
                if phase == "up" and len(seen) == 3:
                    _ip("link", "set", device, "down")
                    phase = "down"
                elif phase == "down" and sample.reason is Reason.SEND_FAILED:
                    _ip("link", "set", device, "up")
                    # Up again, the link's own prefix returns; the route through it does not.
                    _ip("route", "replace", network, "via", gateway, "dev", device)
                    phase = "back"
                elif phase == "back" and sample.reason is Reason.SYN_ACK:
                    stop.set()
                if time.monotonic() > deadline:
                    stop.set()
        return seen

    return uvloop.run(run())
