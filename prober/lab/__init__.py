"""Test peers in network namespaces: address plan, recorded builder, servers, safety checks,
and the built-in lab (`lab_up`, `lab_down`, `lab_status`; `prober lab up|down|status`).

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
    LabBlocks,
    LinkAddresses,
    TopologyAddresses,
    is_lab_address,
    is_lab_network,
)
from .builtin import (
    PEER_NAMES,
    LabDownResult,
    LabEntry,
    LabStatus,
    LabUpResult,
    lab_down,
    lab_prefixes,
    lab_status,
    lab_up,
)
from .errors import LabError, LabNotPermitted, LabRefused
from .hosts import hosts_entry
from .options import LabOptions
from .safety import route_check
from .state import LabState, default_state_dir
from .topologies import SynTopology, build_syn_topology
from .topology import Link, LinkEnd, Topology, sweep_stale, teardown

__all__ = [
    "LAB_V4",
    "LAB_V6",
    "PEER_NAMES",
    "PERSISTENT_POOL",
    "TEST_POOL",
    "AddressPool",
    "LabBlocks",
    "LabDownResult",
    "LabEntry",
    "LabError",
    "LabNotPermitted",
    "LabOptions",
    "LabRefused",
    "LabState",
    "LabStatus",
    "LabUpResult",
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
    "lab_down",
    "lab_prefixes",
    "lab_status",
    "lab_up",
    "route_check",
    "sweep_stale",
    "teardown",
]
