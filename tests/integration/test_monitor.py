"""`Prober.monitor` against a real Linux stack: each target's state every round, on its own
schedule, and a name that stops resolving is a state, not an exception (issue 10, first
part: the library loop)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import defaultdict

import pytest
import uvloop

from prober import Prober
from prober.core.syn import PortState, Reason
from prober.lab import SynTopology, hosts_entry
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
