"""Lab topologies for integration tests (gated in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from prober.lab import SynTopology, Topology, build_syn_topology, sweep_stale
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
