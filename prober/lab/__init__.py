"""Test peers in network namespaces: address plan, recorded builder, servers, safety checks.

Everything is created inside namespaces the lab owns, addressed from the benchmarking ranges
198.18.0.0/15 and 2001:2::/48, and recorded in a state file that suffices for teardown.
"""

from __future__ import annotations

from .addresses import (
    LAB_V4,
    LAB_V6,
    PERSISTENT_POOL,
    TEST_POOL,
    AddressPool,
    LinkAddresses,
    TopologyAddresses,
    is_lab_address,
    is_lab_network,
)
from .errors import LabError
from .hosts import hosts_entry
from .safety import route_check
from .state import LabState, default_state_dir
from .topologies import SynTopology, build_syn_topology
from .topology import Link, LinkEnd, Topology, sweep_stale, teardown

__all__ = [
    "LAB_V4",
    "LAB_V6",
    "PERSISTENT_POOL",
    "TEST_POOL",
    "AddressPool",
    "LabError",
    "LabState",
    "Link",
    "LinkAddresses",
    "LinkEnd",
    "SynTopology",
    "Topology",
    "TopologyAddresses",
    "build_syn_topology",
    "default_state_dir",
    "hosts_entry",
    "is_lab_address",
    "is_lab_network",
    "route_check",
    "sweep_stale",
    "teardown",
]
