"""The SYN test topology answers each port the way the SYN tests expect, and the lab leaves
nothing behind: not after a normal teardown, and not after its builder was killed half-way."""

from __future__ import annotations

import errno
import ipaddress
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import prober.lab
from prober.lab import (
    TEST_POOL,
    LabError,
    SynTopology,
    Topology,
    build_syn_topology,
    default_state_dir,
    hosts_entry,
    is_lab_address,
    route_check,
    sweep_stale,
    teardown,
)
from tests.integration.conftest import system_leftovers

pytestmark = pytest.mark.integration

SOURCE_ROOT = Path(prober.lab.__file__).resolve().parents[2]
ICMP_WAIT_S = 1.5

IcmpError = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, int]  # source, type, code
ReadLine = Callable[[], str]
StartBuilder = Callable[[str], tuple[subprocess.Popen[str], ReadLine]]


@pytest.fixture(params=[4, 6], ids=["v4", "v6"])
def family(request: pytest.FixtureRequest) -> int:
    version: int = request.param
    return version


def target(topology: SynTopology, version: int) -> str:
    return str(topology.target_v4 if version == 4 else topology.target_v6)


def connect(address: str, port: int, timeout_s: float) -> int:
    """Kernel TCP connect from the root namespace: 0 if it connected, else the errno."""
    route_check(address)  # the safety net before any packet leaves
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((address, port))
        except TimeoutError:  # an OSError too, but no errno: the caller expects it
            raise
        except OSError as exc:
            assert exc.errno is not None
            return exc.errno
    return 0


def icmp_errors_during(version: int, port: int, action: Callable[[], object]) -> set[IcmpError]:
    """(source, type, code) of every ICMP error about a segment to `port` that the root
    namespace receives while `action` runs (a receive-only raw socket: it sends nothing)."""
    if version == 4:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    seen: set[IcmpError] = set()
    with sock:
        sock.setblocking(False)
        action()
        deadline = time.monotonic() + ICMP_WAIT_S
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            for _ in range(200):
                # The error is queued by the time `action` returns: once one has been seen,
                # only wait briefly for stragglers.
                remaining = deadline - time.monotonic()
                wait_s = min(remaining, 0.2) if seen else remaining
                if remaining <= 0 or not selector.select(wait_s):
                    break
                data, (source, *_rest) = sock.recvfrom(2048)
                if version == 4:
                    icmp = data[(data[0] & 0x0F) * 4 :]
                    inner = icmp[8:]
                    transport = inner[(inner[0] & 0x0F) * 4 :]
                else:
                    icmp = data  # IPv6 raw sockets deliver no IP header
                    transport = icmp[8 + 40 :]
                if len(transport) >= 4 and int.from_bytes(transport[2:4], "big") == port:
                    seen.add((ipaddress.ip_address(source), icmp[0], icmp[1]))
    return seen


# --- ports ---------------------------------------------------------------------------------


def test_open_port_accepts(syn_topology: SynTopology, family: int) -> None:
    assert connect(target(syn_topology, family), SynTopology.OPEN_PORT, 2.0) == 0


def test_closed_port_refuses(syn_topology: SynTopology, family: int) -> None:
    outcome = connect(target(syn_topology, family), SynTopology.CLOSED_PORT, 2.0)
    assert outcome == errno.ECONNREFUSED


def test_dropped_port_is_silent(syn_topology: SynTopology, family: int) -> None:
    with pytest.raises(TimeoutError):
        connect(target(syn_topology, family), SynTopology.DROPPED_PORT, 1.0)


# connect() learns of these ICMP errors at once for IPv4, but for IPv6 only on the SYN's
# first retransmission (~1 s): over veths the whole path runs inside connect() while it holds
# the socket lock, and tcp_v6_err then drops the error (TcpExtLockDroppedIcmps). Hence 3 s.
ICMP_CONNECT_TIMEOUT_S = 3.0


def test_port_unreachable_refuses(syn_topology: SynTopology, family: int) -> None:
    address = target(syn_topology, family)
    port = SynTopology.PORT_UNREACHABLE_PORT
    outcomes: list[int] = []
    seen = icmp_errors_during(
        family, port, lambda: outcomes.append(connect(address, port, ICMP_CONNECT_TIMEOUT_S))
    )
    assert outcomes == [errno.ECONNREFUSED]
    # Type 3 code 3 / type 1 code 4: port unreachable, from the target itself.
    expected = (3, 3) if family == 4 else (1, 4)
    assert (ipaddress.ip_address(address), *expected) in seen


def test_admin_prohibited_comes_from_router(syn_topology: SynTopology, family: int) -> None:
    address = target(syn_topology, family)
    port = SynTopology.ADMIN_PROHIBITED_PORT
    outcomes: list[int] = []
    seen = icmp_errors_during(
        family, port, lambda: outcomes.append(connect(address, port, ICMP_CONNECT_TIMEOUT_S))
    )
    # Linux maps ICMP "communication administratively prohibited" (3/13) to EHOSTUNREACH
    # and ICMPv6 "administratively prohibited" (1/1) to EACCES.
    assert outcomes == [errno.EHOSTUNREACH if family == 4 else errno.EACCES]
    router = syn_topology.router_v4 if family == 4 else syn_topology.router_v6
    expected = (3, 13) if family == 4 else (1, 1)
    assert (router, *expected) in seen


# --- safety checks and helpers --------------------------------------------------------------


def test_route_check(syn_topology: SynTopology) -> None:
    for address in (syn_topology.target_v4, syn_topology.target_v6):
        assert route_check(address) == syn_topology.root_interface
    assert route_check(syn_topology.root_v4) == "lo"  # our own end of the link
    assert route_check("127.0.0.1") == "lo"
    with pytest.raises(LabError, match="neither a lab nor a loopback"):
        route_check("192.0.2.1")
    unused = TEST_POOL.topology(TEST_POOL.topologies - 1).link(15).host_v4(14).ip  # not routed
    with pytest.raises(LabError, match="not over a lab link"):
        route_check(unused, devices=[syn_topology.root_interface])


def test_address_plan() -> None:
    topology = TEST_POOL.topology(7)
    assert str(topology.v4) == "198.18.135.0/24" and str(topology.v6) == "2001:2:0:107::/64"
    link = topology.link(1)
    assert str(link.host_v4(2)) == "198.18.135.18/28"
    assert str(link.host_v6(2)) == "2001:2:0:107::1:2/112"
    assert TEST_POOL.prefix(7) == "pt07"
    assert all(is_lab_address(a) for a in ("198.18.0.1", "198.19.255.254", "2001:2:0:ffff::1"))
    assert not any(is_lab_address(a) for a in ("198.20.0.1", "2001:3::1", "::1", "junk"))
    assert is_lab_address("::ffff:198.19.0.1")


def test_hosts_entry_resolves_and_is_removed(syn_topology: SynTopology) -> None:
    name = f"prober-lab-target-{os.getpid()}.test"
    before = Path("/etc/hosts").read_text()
    with hosts_entry(name, syn_topology.target_v4) as line:
        assert line in Path("/etc/hosts").read_text()
        resolved = {info[4][0] for info in socket.getaddrinfo(name, 80, socket.AF_INET)}
        assert resolved == {str(syn_topology.target_v4)}
    assert Path("/etc/hosts").read_text() == before


def test_hosts_entry_removed_on_failure(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    with pytest.raises(RuntimeError), hosts_entry("x.test", "198.19.0.1", hosts_path=hosts):
        raise RuntimeError("test failed inside the block")
    assert hosts.read_text() == "127.0.0.1 localhost\n"


# --- teardown ------------------------------------------------------------------------------


def leftovers(prefix: str) -> list[str]:
    """Anything of topology `prefix` still present, found independently of the lab's code."""
    found = system_leftovers(prefix)
    state = default_state_dir() / f"{prefix}.json"
    if state.exists():
        found.append(f"state file {state}")
    found += [f"half-written state {path}" for path in state.parent.glob(f".{state.name}.*.tmp")]
    return found


def test_teardown_leaves_nothing() -> None:
    with Topology.create() as topology:
        built = build_syn_topology(topology)
        topology.hosts_entry(f"{built.prefix}-target.test", built.target_v6)
        assert len(leftovers(built.prefix)) >= 9  # the check does see a live topology
        assert route_check(built.target_v6) == built.root_interface
    assert leftovers(built.prefix) == []
    teardown(built.state_path)  # idempotent: nothing recorded is left, no file either
    topology.teardown()


BUILDER = """
import sys, time
from prober.lab import Topology, build_syn_topology
topology = Topology.create()
print(topology.state_path, flush=True)
if sys.argv[1] == "halfway":
    router = topology.add_namespace("router")
    up = topology.add_link(None, router, number=0, left_label="rtr", right_label="root")
    far = topology.addresses.link(1)
    topology.add_route(None, far.v4, via=up.right.v4.ip, device=up.left.device)
    topology.add_route(None, far.v6, via=up.right.v6.ip, device=up.left.device)
    topology.start_server(router, [80])
    topology.hosts_entry(topology.prefix + "-router.test", up.right.v4.ip)
    print("halfway", flush=True)
else:
    build_syn_topology(topology)
    print("built", flush=True)
time.sleep(30)
"""


@pytest.fixture
def builder() -> Iterator[StartBuilder]:
    """Runs BUILDER in a child process; kills and reaps it afterwards whatever happens."""
    children: list[subprocess.Popen[str]] = []

    def start(mode: str) -> tuple[subprocess.Popen[str], ReadLine]:
        env = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT)}
        child = subprocess.Popen([sys.executable, "-c", BUILDER, mode], stdout=subprocess.PIPE,
                                 text=True, env=env)
        children.append(child)
        selector = selectors.DefaultSelector()
        assert child.stdout is not None
        selector.register(child.stdout, selectors.EVENT_READ)

        def read_line() -> str:
            assert child.stdout is not None
            assert selector.select(10.0), "builder said nothing for 10 s"
            return child.stdout.readline().strip()

        return child, read_line

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=5)
        if child.stdout:
            child.stdout.close()


def test_teardown_from_state_file_after_kill_9_halfway(builder: StartBuilder) -> None:
    child, read_line = builder("halfway")
    state_path = Path(read_line())
    prefix = state_path.stem
    try:
        assert read_line() == "halfway"
        before_kill = leftovers(prefix)
        assert any(item.startswith("process") for item in before_kill)
        assert any(item.startswith("/etc/hosts") for item in before_kill)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=5)
        teardown(state_path)
        assert leftovers(prefix) == []
    finally:
        teardown(state_path)


@pytest.mark.parametrize("delay_s", [0.05, 0.25])
def test_sweep_after_kill_9_mid_build(builder: StartBuilder, delay_s: float) -> None:
    """Killed at an arbitrary point of the build: the session-start sweep cleans up."""
    child, read_line = builder("full")
    state_path = Path(read_line())
    prefix = state_path.stem
    try:
        time.sleep(delay_s)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=5)
        assert prefix in sweep_stale()
        assert leftovers(prefix) == []
    finally:
        teardown(state_path)


def test_sweep_spares_live_owners(syn_topology: SynTopology) -> None:
    assert syn_topology.prefix not in sweep_stale()
    assert connect(str(syn_topology.target_v4), SynTopology.OPEN_PORT, 2.0) == 0
