"""Lab topologies for integration tests (gated in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prober.lab import SynTopology, Topology, build_syn_topology, sweep_stale


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_lab() -> None:
    """Remove what killed earlier runs left behind (their recorded owner PID is dead)."""
    sweep_stale()


@pytest.fixture(scope="session")
def syn_topology(_sweep_stale_lab: None) -> Iterator[SynTopology]:
    """root ns —veth— router (forwarding; 84 admin-prohibited) —veth— target (80 open,
    81 closed, 82 dropped, 83 port-unreachable); see prober.lab.topologies."""
    with Topology.create() as topology:
        yield build_syn_topology(topology)
