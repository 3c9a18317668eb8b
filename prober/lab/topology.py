"""A recorded, reversible builder for lab topologies.

    with Topology.create() as topology:              # claims a free index, writes its state file
        router = topology.add_namespace("router")
        link = topology.add_link(None, router, number=0, left_label="rtr", right_label="root")
        ...
    # torn down here, also on failure

Every resource is written to the state file before it is created, so `teardown(state_path)`
can undo a topology whose builder was killed half-way, from the file alone.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from . import netns
from .addresses import (
    TEST_POOL,
    AddressPool,
    IPAddress,
    IPInterface,
    IPNetwork,
    TopologyAddresses,
    is_lab_address,
    is_lab_network,
    parse_address,
)
from .commands import command_env, in_namespace
from .errors import LabError, one_line
from .hosts import HOSTS_PATH, append_hosts_line, hosts_line, remove_hosts_line
from .safety import route_check
from .state import (
    Address,
    HostsLine,
    LabState,
    LocalRoute,
    Namespace,
    Neighbour,
    NftRuleset,
    Owner,
    Process,
    Resource,
    Route,
    Sysctl,
    Veth,
    default_state_dir,
    process_start_time,
    remove_orphaned_temporaries,
    state_dir_lock,
    state_path,
    state_paths,
)

PROCESS_READY_TIMEOUT_S = 5.0
SERVER_READY_TIMEOUT_S = PROCESS_READY_TIMEOUT_S
SERVER_MAX_SECONDS = 3600.0  # a server orphaned by a killed builder still exits eventually
_STOP_GRACE_S = 2.0
_KILL_WAIT_S = 2.0
_POLL_S = 0.02
_READY_POLL_S = 0.01
_ROLE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_SERVER_SCRIPT = Path(__file__).resolve().with_name("server.py")
# Where `prober` is importable from, for Python processes started inside a namespace.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LinkEnd:
    namespace: str | None
    device: str
    mac: str
    v4: ipaddress.IPv4Interface
    v6: ipaddress.IPv6Interface


@dataclass(frozen=True)
class Link:
    number: int
    left: LinkEnd
    right: LinkEnd


@dataclass
class StartedProcess:
    """A process `Topology.start_process` started and recorded; stdout and stderr go to
    `log_path`."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    namespace: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        """Everything it has written so far ("" before the log file exists)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self) -> str:
        """The log's last lines as one line, prefixed ``": "``, for appending to an error
        message; "" if there is nothing to quote."""
        try:
            text = self.log_text()
        except OSError:
            return ""
        tail = one_line("\n".join(text.strip().splitlines()[-5:]))
        return f": {tail}" if tail else ""


class Topology:
    """Builds one topology and records it; use `Topology.create()` as a context manager."""

    def __init__(self, state: LabState, path: Path) -> None:
        self._state = state
        self._path = path
        self._processes: dict[int, subprocess.Popen[bytes]] = {}  # started here; reaped at teardown

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        pool: AddressPool = TEST_POOL,
        index: int | None = None,
        state_dir: Path | None = None,
        persistent: bool = False,
        description: dict[str, Any] | None = None,
    ) -> Topology:
        """Claim a free index of `pool` (or exactly `index`) and write an empty state file.

        A test topology records this process as its owner: once the owner is dead, the topology
        is stale and `sweep_stale` removes it. A persistent one outlives its creator.
        Topologies that may coexist must share `state_dir`, which is where indices are claimed.
        `description` goes into the very first version of the file (see `describe`).
        """
        directory = state_dir or default_state_dir()
        owner = None if persistent else Owner.current()
        with state_dir_lock(directory):
            claimed = {path.stem for path in state_paths(directory, pool)}
            in_use = netns.list_namespaces() | set(os.listdir("/sys/class/net"))
            # From a random start: an index just released is unlikely to be re-used at once,
            # so checks that a torn-down topology left nothing do not see a newcomer.
            start = random.randrange(pool.topologies)
            candidates = (
                [(start + offset) % pool.topologies for offset in range(pool.topologies)]
                if index is None
                else [index]
            )
            for candidate in candidates:
                prefix = pool.prefix(candidate)
                if prefix in claimed or any(name.startswith(f"{prefix}-") for name in in_use):
                    continue
                state = LabState(pool=pool, index=candidate, owner=owner,
                                 description=description)
                path = state_path(directory, prefix)
                state.save(path)
                return cls(state, path)
        wanted = "every index" if index is None else f"index {index}"
        raise LabError(f"{wanted} of the {pool.name} address pool is in use (see {directory})")

    @classmethod
    def load(cls, path: Path) -> Topology:
        """Attach to a recorded topology, e.g. to extend or inspect it from another process."""
        return cls(LabState.load(path), path)

    def __enter__(self) -> Topology:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.teardown()

    def teardown(self) -> None:
        """Undo everything recorded and delete the state file; safe to call more than once."""
        try:
            teardown(self._path)
        finally:
            for process in self._processes.values():
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=_KILL_WAIT_S)  # reap: teardown() only signalled it
            self._processes.clear()

    # --- what it is --------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """Starts every name this topology creates, e.g. ``pt07``."""
        return self._state.prefix

    @property
    def index(self) -> int:
        return self._state.index

    @property
    def pool(self) -> AddressPool:
        return self._state.pool

    @property
    def addresses(self) -> TopologyAddresses:
        return self._state.pool.topology(self._state.index)

    @property
    def state_path(self) -> Path:
        return self._path

    @property
    def resources(self) -> tuple[Resource, ...]:
        return tuple(self._state.resources)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(r.name for r in self._state.resources if isinstance(r, Namespace))

    @property
    def root_devices(self) -> tuple[str, ...]:
        """This topology's interfaces in the root namespace."""
        devices = []
        for resource in self._state.resources:
            if isinstance(resource, Veth):
                if resource.namespace is None:
                    devices.append(resource.name)
                if resource.peer_namespace is None:
                    devices.append(resource.peer_name)
        return tuple(devices)

    def namespace_name(self, role: str) -> str:
        if not _ROLE.match(role):
            raise LabError(f"invalid namespace role {role!r} (lowercase, digits, dashes; ≤ 20)")
        return f"{self.prefix}-{role}"

    def device_name(self, label: str) -> str:
        name = f"{self.prefix}-{label}"
        if not _LABEL.match(label) or len(name) > netns.MAX_INTERFACE_NAME:
            room = netns.MAX_INTERFACE_NAME - len(self.prefix) - 1
            raise LabError(f"invalid interface label {label!r} (letters, digits, dashes; ≤ {room})")
        return name

    # --- building ----------------------------------------------------------------------------

    def add_namespace(self, role: str, sysctls: Mapping[str, str | int] | None = None) -> str:
        """Create namespace ``<prefix>-<role>`` with loopback up, IPv6 DAD and RA off, plus
        `sysctls`; returns its name."""
        name = self.namespace_name(role)
        self._record(Namespace(name))
        netns.add_namespace(name)
        self.set_sysctls(name, {**netns.NAMESPACE_IPV6_SYSCTLS, **(sysctls or {})})
        return name

    def add_link(
        self,
        left: str | None,
        right: str | None,
        *,
        number: int,
        left_label: str,
        right_label: str,
        left_host: int = 1,
        right_host: int = 2,
    ) -> Link:
        """A ready point-to-point link: veth pair (offloads off), IPv4 and IPv6 addresses from
        link `number` of the plan, both ends up, static neighbour entries on both ends."""
        plan = self.addresses.link(number)
        left_device, right_device = self.device_name(left_label), self.device_name(right_label)
        left_v4, left_v6 = plan.host_v4(left_host), plan.host_v6(left_host)
        right_v4, right_v6 = plan.host_v4(right_host), plan.host_v6(right_host)
        left_mac, right_mac = self.add_bare_veth(left, left_device, right, right_device)
        left_end = LinkEnd(left, left_device, left_mac, left_v4, left_v6)
        right_end = LinkEnd(right, right_device, right_mac, right_v4, right_v6)
        for end in (left_end, right_end):
            if end.namespace is None:
                # Root's `default` settings are not ours to change; set this link's own.
                self.set_sysctls(None, netns.device_ipv6_sysctls(end.device))
            netns.disable_offloads(end.namespace, end.device)
            self.add_address(end.namespace, end.device, end.v4)
            self.add_address(end.namespace, end.device, end.v6)
        for end in (left_end, right_end):
            netns.set_link_up(end.namespace, end.device)
        # After "up": taking a device down flushes its neighbour entries, permanent ones too.
        for end, peer in ((left_end, right_end), (right_end, left_end)):
            self.add_neighbour(end.namespace, end.device, peer.v4.ip, peer.mac)
            self.add_neighbour(end.namespace, end.device, peer.v6.ip, peer.mac)
        return Link(number=number, left=left_end, right=right_end)

    def add_bare_veth(
        self,
        namespace: str | None,
        device: str,
        peer_namespace: str | None,
        peer_device: str,
    ) -> tuple[str, str]:
        """A recorded veth pair with no addresses, not yet up (`add_link` is the ready-made
        kind); returns the MACs of `device` and `peer_device`."""
        ordinal = sum(isinstance(r, Veth) for r in self._state.resources)
        if ordinal > 0xFF:
            raise LabError("a topology holds at most 256 veth pairs")
        mac, peer_mac = self._mac(ordinal, 1), self._mac(ordinal, 2)
        self._record(Veth(namespace, device, peer_namespace, peer_device, mac, peer_mac))
        netns.add_veth(device, namespace, mac, peer_device, peer_namespace, peer_mac)
        return mac, peer_mac

    def add_address(self, namespace: str | None, device: str, interface: IPInterface) -> None:
        self._check_device(namespace, device)
        self._record(Address(namespace, device, str(interface)))
        netns.add_address(namespace, device, interface)

    def add_route(
        self,
        namespace: str | None,
        prefix: str | IPNetwork,
        *,
        via: str | IPAddress,
        device: str,
    ) -> None:
        """A route to a lab prefix via a lab gateway; in the root namespace only over this
        topology's own links, and never a default route."""
        network = ipaddress.ip_network(prefix) if isinstance(prefix, str) else prefix
        gateway = parse_address(via)
        if network.prefixlen == 0 or not is_lab_network(network) or not is_lab_address(gateway):
            raise LabError(f"refusing route {network} via {gateway}: not inside the lab ranges")
        self._check_device(namespace, device)
        self._record(Route(namespace, str(network), str(gateway), device))
        netns.add_route(namespace, str(network), str(gateway), device)

    def add_local_route(self, namespace: str, prefix: str | IPNetwork) -> None:
        """Make a lab namespace answer every address of a lab `prefix` (``ip route add local
        PREFIX dev lo``): a listener on the wildcard address then accepts for all of them."""
        network = ipaddress.ip_network(prefix) if isinstance(prefix, str) else prefix
        if not is_lab_network(network):
            raise LabError(f"refusing local route {network}: not inside the lab ranges")
        self._check_namespace(namespace)
        self._record(LocalRoute(namespace, str(network)))
        netns.add_local_route(namespace, str(network))

    def add_neighbour(
        self, namespace: str | None, device: str, address: str | IPAddress, lladdr: str
    ) -> None:
        self._check_device(namespace, device)
        self._record(Neighbour(namespace, device, str(address), lladdr))
        netns.replace_neighbour(namespace, device, str(address), lladdr)

    def set_sysctls(self, namespace: str | None, settings: Mapping[str, str | int]) -> None:
        """Per-namespace sysctls; in the root namespace only per-device keys of our links."""
        values = {key: str(value) for key, value in settings.items()}
        if namespace is None:
            for key in values:
                parts = key.split(".")
                if len(parts) < 5 or parts[2] != "conf" or parts[3] not in self.root_devices:
                    raise LabError(f"refusing root-namespace sysctl {key}: not one of our links")
        self._record(*(Sysctl(namespace, key, value) for key, value in values.items()))
        netns.set_sysctls(namespace, values)

    def apply_nftables(self, namespace: str, ruleset: str) -> None:
        """Load an nft ruleset inside a lab namespace (it goes away with the namespace)."""
        self._check_namespace(namespace)
        self._record(NftRuleset(namespace, ruleset))
        netns.apply_nftables(namespace, ruleset)

    def start_server(
        self,
        namespace: str,
        ports: Sequence[int],
        *,
        family: str = "both",
        backlog: int = 128,
        behaviour: str = "close",
        ready_timeout_s: float = SERVER_READY_TIMEOUT_S,
        max_seconds: float | None = SERVER_MAX_SECONDS,
    ) -> int:
        """Start `prober.lab.server` inside `namespace`, wait for its ``ready`` line, return
        its PID. `max_seconds=None` serves until teardown (the persistent lab's servers)."""
        self._check_namespace(namespace)
        if not ports:
            raise LabError("a server needs at least one port")
        ordinal = sum(isinstance(r, Process) for r in self._state.resources)
        # The file, not `-m prober.lab.server`: the server needs only the standard library, and
        # importing the `prober` package on the way (asyncio, the engine) triples its start-up
        # time and memory. -I keeps the script's own directory (prober/lab) off sys.path.
        argv: list[str] = [sys.executable, "-I", str(_SERVER_SCRIPT)]
        for port in ports:
            argv += ["--port", str(port)]
        argv += ["--family", family, "--backlog", str(backlog), "--behaviour", behaviour]
        if max_seconds is not None:
            argv += ["--max-seconds", str(max_seconds)]
        argv += ["--tag", f"{self.prefix}-server{ordinal}"]
        # Its log gets the ``ready`` line too: the server prints it, flushed, then points its
        # stdout at /dev/null.
        return self.start_process(namespace, argv, name=f"server{ordinal}",
                                  ready_timeout_s=ready_timeout_s).pid

    def start_process(
        self,
        namespace: str,
        argv: Sequence[str],
        *,
        name: str,
        ready_line: str = "ready",
        ready_timeout_s: float = PROCESS_READY_TIMEOUT_S,
    ) -> StartedProcess:
        """Start `argv` inside lab `namespace`, recorded (so teardown stops it by PID), and
        wait until it prints `ready_line` on a line of its own. `name` names its log file,
        ``<prefix>-<name>.log`` next to the state file.

        stdout and stderr go to that log file rather than a pipe, so the process may print
        (e.g. counters at exit) after the builder stops reading. Python children find
        `prober` on their PYTHONPATH and run unbuffered (unless started with -I).
        """
        self._check_namespace(namespace)
        argv = tuple(argv)
        log_path = self._path.with_name(f"{self.prefix}-{name}.log")
        # Recorded before it exists: a builder killed right after the spawn leaves a process
        # that teardown still finds, by its unique command line.
        record = Process(namespace, argv, None, None, str(log_path))
        self._record(record)
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                in_namespace(namespace, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_process_env(),
                start_new_session=True,  # not killed by the terminal's Ctrl-C; teardown stops it
            )
        self._processes[popen.pid] = popen  # teardown reaps it
        self._replace(record, replace(record, pid=popen.pid,
                                      start_time=process_start_time(popen.pid)))
        started = StartedProcess(popen=popen, log_path=log_path, namespace=namespace)
        _wait_for_line(started, ready_line, ready_timeout_s)
        return started

    @property
    def description(self) -> dict[str, Any] | None:
        return self._state.description

    def describe(self, description: dict[str, Any]) -> None:
        """Record what the builder wants readers of the state file to know (JSON values)."""
        self._state.description = description
        self._state.save(self._path)

    def hosts_entry(self, name: str, address: str | IPAddress) -> str:
        """Add a marked /etc/hosts line, removed at teardown; returns the line."""
        line = hosts_line(name, address)
        self._record(HostsLine(str(HOSTS_PATH), line))
        append_hosts_line(line, HOSTS_PATH)
        return line

    def route_check(self, address: str | IPAddress) -> str:
        """`route_check` limited to this topology's links in the root namespace."""
        return route_check(address, devices=self.root_devices)

    # --- internals ---------------------------------------------------------------------------

    def _record(self, *resources: Resource) -> None:
        self._state.resources.extend(resources)
        self._state.save(self._path)

    def _replace(self, old: Resource, new: Resource) -> None:
        position = self._state.resources.index(old)
        self._state.resources[position] = new
        self._state.save(self._path)

    def _mac(self, ordinal: int, side: int) -> str:
        # Locally administered, unicast, and readable: pool, topology index, veth, end.
        return f"02:{self.pool.mac_octet:02x}:{self.index:02x}:{ordinal:02x}:00:{side:02x}"

    def _check_namespace(self, namespace: str) -> None:
        if namespace not in self.namespaces:
            raise LabError(f"namespace {namespace!r} does not belong to topology {self.prefix}")

    def _check_device(self, namespace: str | None, device: str) -> None:
        if namespace is None:
            if device not in self.root_devices:
                raise LabError(f"refusing to configure root-namespace link {device}: not ours")
        else:
            self._check_namespace(namespace)


def _process_env() -> dict[str, str]:
    env = command_env()
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(_SOURCE_ROOT), env.get("PYTHONPATH", "")) if part
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_for_line(started: StartedProcess, line: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if line in started.log_text().splitlines():
            return
        if started.popen.poll() is not None:
            raise LabError(f"{started.log_path.stem} (PID {started.pid}) exited with status "
                           f"{started.popen.returncode} before {line!r}{started.log_tail()}")
        if time.monotonic() > deadline:
            raise LabError(f"{started.log_path.stem} (PID {started.pid}) did not print "
                           f"{line!r} within {timeout_s} s{started.log_tail()}")
        time.sleep(_READY_POLL_S)


# --- teardown ------------------------------------------------------------------------------


def teardown(path: Path) -> None:
    """Remove everything a state file records, then the file. Needs nothing but the file.

    Order: processes (they would keep namespaces alive), /etc/hosts lines, root-namespace
    routes and veths, then namespaces (which take their links, addresses, routes and nft
    tables with them). Already-gone resources and a missing file are fine; other failures
    are collected, the state file is kept for a retry, and one LabError names them all.
    """
    remove_orphaned_temporaries(path.parent, path.name)
    try:
        state = LabState.load(path)
    except FileNotFoundError:
        return
    problems = teardown_resources(state.resources)
    if problems:
        raise LabError(f"teardown of {state.prefix} incomplete: " + "; ".join(problems))
    path.unlink(missing_ok=True)


def teardown_resources(resources: Sequence[Resource]) -> list[str]:
    problems: list[str] = []
    newest_first = list(reversed(resources))

    def attempt(action: str, resource: Resource) -> None:
        try:
            _undo(resource)
        except (LabError, OSError) as exc:
            problems.append(f"{action}: {exc}")

    for resource in newest_first:
        if isinstance(resource, Process):
            attempt("stop process", resource)
    for resource in newest_first:
        if isinstance(resource, HostsLine) or (
            isinstance(resource, Route | Veth) and resource.namespace is None
        ) or (isinstance(resource, Veth) and resource.peer_namespace is None):
            attempt(f"remove {resource.kind}", resource)
    for resource in newest_first:
        if isinstance(resource, Namespace):
            attempt("delete namespace", resource)
    return problems


def _undo(resource: Resource) -> None:
    if isinstance(resource, Process):
        stop_process(resource)
        if resource.log_path:
            Path(resource.log_path).unlink(missing_ok=True)
    elif isinstance(resource, HostsLine):
        remove_hosts_line(resource.line, Path(resource.path))
    elif isinstance(resource, Route):
        netns.delete_route(None, resource.prefix, resource.via, resource.device)
    elif isinstance(resource, Veth):
        # Deleting either end removes the pair; the root end is the one we can name here.
        root_end = resource.name if resource.namespace is None else resource.peer_name
        netns.delete_link(root_end)
    elif isinstance(resource, Namespace):
        netns.delete_namespace(resource.name)


def _is_recorded_process(pid: int, process: Process) -> bool:
    if process.start_time is not None and process_start_time(pid) != process.start_time:
        return False  # gone, a zombie, or the PID now belongs to someone else
    cmdline = netns.process_cmdline(pid)
    if cmdline is None:
        return False
    if cmdline == process.argv:
        return True
    # Killed between fork and exec: still `ip netns exec NS argv...`.
    return cmdline[1:4] == ("netns", "exec", process.namespace) and cmdline[4:] == process.argv


def stop_process(process: Process) -> None:
    """SIGTERM, then SIGKILL, the recorded server, only if /proc shows it is still ours."""
    if process.pid is not None:
        candidates = [process.pid]
    else:  # recorded but the builder died before it could note the PID: find it by argv
        candidates = [pid for pid in _all_pids() if _is_recorded_process(pid, process)]
    for pid in candidates:
        start_time = process_start_time(pid)
        if start_time is None or not _is_recorded_process(pid, process):
            continue
        for signum, wait_s in ((signal.SIGTERM, _STOP_GRACE_S), (signal.SIGKILL, _KILL_WAIT_S)):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                break
            if _wait_gone(pid, start_time, wait_s):
                break
        else:
            raise LabError(f"process {pid} ({' '.join(process.argv[:3])} ...) survived SIGKILL")


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _wait_gone(pid: int, start_time: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process_start_time(pid) != start_time:  # None once exited (zombies included)
            return True
        time.sleep(_POLL_S)
    return process_start_time(pid) != start_time


def sweep_stale(state_dir: Path | None = None, pool: AddressPool = TEST_POOL) -> list[str]:
    """Tear down `pool`'s topologies whose owner process is dead (killed test runs); returns
    their prefixes. Persistent topologies (no owner) and live owners' ones are left alone."""
    directory = state_dir or default_state_dir()
    swept: list[str] = []
    problems: list[str] = []
    with state_dir_lock(directory):
        for path in state_paths(directory, pool):
            try:
                state = LabState.load(path)
            except FileNotFoundError:
                continue
            except LabError as exc:
                problems.append(str(exc))
                continue
            if state.owner is None or state.owner.is_alive():
                continue
            try:
                teardown(path)
            except LabError as exc:
                problems.append(str(exc))
                continue
            swept.append(state.prefix)
        remove_orphaned_temporaries(directory, f"{pool.code}[0-9a-f][0-9a-f].json")
    if problems:
        raise LabError("sweeping stale lab topologies: " + "; ".join(problems))
    return swept


__all__ = [
    "Link",
    "LinkEnd",
    "StartedProcess",
    "Topology",
    "stop_process",
    "sweep_stale",
    "teardown",
    "teardown_resources",
]
