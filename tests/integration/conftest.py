"""Lab topologies for integration tests (gated in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from prober.lab import TEST_POOL, SynTopology, Topology, build_syn_topology, sweep_stale
from prober.lab.scan_topology import ScanTopology, scan_topology
from prober.lab.state import Owner, default_state_dir
from prober.lab.topology import teardown

# Built-in labs built by tests live in the test pool, each under a state directory of its own
# (so `lab down` and `lab status` there see that lab only, never a user's): LAB_TESTS_DIR /
# "<pid>-<start time>-<label>" of the session that made it.
LAB_TESTS_DIR = default_state_dir() / "lab-tests"


def new_lab_state_dir(label: str) -> Path:
    """A fresh state directory for one test lab, named after this session's process."""
    owner = Owner.current()
    directory = LAB_TESTS_DIR / f"{owner.pid}-{owner.start_time}-{label}"
    remove_lab_state_dir(directory)  # a leftover of an earlier test of this session
    directory.mkdir(parents=True)
    return directory


def remove_lab_state_dir(directory: Path) -> None:
    """Tear down whatever the directory's state files record, then the directory."""
    for path in sorted(directory.glob("*.json")):
        teardown(path)
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):  # still in use by another session: theirs to remove
        LAB_TESTS_DIR.rmdir()


def sweep_dead_sessions_labs() -> None:
    """Remove the test labs of sessions that were killed before their fixtures ran."""
    for directory in sorted(LAB_TESTS_DIR.glob("*-*-*")):
        pid, start_time, _label = directory.name.split("-", 2)
        if not (pid.isdigit() and start_time.isdigit()):
            continue
        if not Owner(int(pid), int(start_time)).is_alive():
            remove_lab_state_dir(directory)


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_lab() -> None:
    """Remove what killed earlier runs left behind (their recorded owner PID is dead)."""
    sweep_stale()
    sweep_dead_sessions_labs()


@pytest.fixture(scope="session")
def syn_topology(_sweep_stale_lab: None) -> Iterator[SynTopology]:
    """root ns —veth— router (forwarding; 84 admin-prohibited) —veth— target (80 open,
    81 closed, 82 dropped, 83 port-unreachable); see prober.lab.topologies."""
    with Topology.create() as topology:
        yield build_syn_topology(topology)


@pytest.fixture(scope="session")
def scan_topo(_sweep_stale_lab: None) -> Iterator[ScanTopology]:
    """root ns —veth— router —veth— block (a /24 and a /120: 80 open, 81 closed, 82 dropped,
    83 port-unreachable; default SYN/ACK retries) and —[loss element]— lossy (a /24 and a
    /120, 80 open); see prober.lab.scan_topology."""
    with scan_topology() as topology:
        yield topology


def system_leftovers(prefix: str) -> list[str]:
    """Anything of test-pool topology or lab `prefix` still on this host, found with the
    system's own tools rather than the lab's code: namespaces, links, routes into its
    networks, its servers and elements, root nft tables and /etc/hosts lines of the lab."""
    plan = TEST_POOL.topology(int(prefix[2:], 16))
    networks = (plan.v4, plan.v6)
    found = [f"netns {path.name}" for path in Path("/run/netns").glob(f"{prefix}-*")]
    found += [f"link {name}" for name in os.listdir("/sys/class/net")
              if name.startswith(f"{prefix}-")]
    for version in ("-4", "-6"):
        shown = subprocess.run(["ip", version, "-j", "route", "show", "table", "all"],
                               capture_output=True, text=True, check=True, timeout=10)
        for route in json.loads(shown.stdout or "[]"):
            dst = route.get("dst", "default")
            network = None if dst == "default" else ipaddress.ip_network(dst, strict=False)
            ours = network is not None and any(
                network.version == mine.version and network.overlaps(mine)
                for mine in networks
            )
            if ours or str(route.get("dev", "")).startswith(f"{prefix}-"):
                found.append(f"route {dst} dev {route.get('dev')}")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if f"{prefix}-server".encode() in cmdline or f"{prefix}-element".encode() in cmdline:
            found.append(f"process {entry}: {os.fsdecode(cmdline).replace(chr(0), ' ')}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                            check=True, timeout=10).stdout
    found += [f"root nft {line}" for line in tables.splitlines()
              if "prober_lab" in line or "prober_element" in line]
    for line in Path("/etc/hosts").read_text().splitlines():
        fields = line.split()
        if "# prober-lab" in line and fields and any(
            ipaddress.ip_address(fields[0]) in network for network in networks
        ):
            found.append(f"/etc/hosts line {line!r}")
    return found
