"""Stateless primitives over `ip`, `ethtool`, `sysctl` and `nft`; `Topology` records and calls them.

`namespace=None` means the root namespace. Deleting functions accept resources that are already
gone, so a teardown can be re-run or run over a half-built topology.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .addresses import IPInterface
from .commands import in_namespace, ip_command, run, tool
from .errors import LabError

MAX_INTERFACE_NAME = 15  # IFNAMSIZ - 1

# Off on every veth end: with them on, captures show 40 KB "segments" (TSO/GSO/GRO) and
# checksums the stack never filled in (TX checksum offload); probes must see wire packets.
OFFLOAD_FEATURES = ("tso", "gso", "gro", "tx", "rx")

# New links in a lab namespace inherit `default`; addresses must be usable at once (no DAD),
# and nothing should autoconfigure or solicit routers behind the lab's back.
NAMESPACE_IPV6_SYSCTLS = {
    f"net.ipv6.conf.{scope}.{key}": value
    for scope in ("all", "default")
    for key, value in (("accept_dad", "0"), ("dad_transmits", "0"), ("accept_ra", "0"),
                       ("router_solicitations", "0"))
}


def device_ipv6_sysctls(device: str) -> dict[str, str]:
    """The same, for one link in the root namespace (whose defaults are not ours to change)."""
    return {
        f"net.ipv6.conf.{device}.{key}": value
        for key, value in (("accept_dad", "0"), ("dad_transmits", "0"), ("accept_ra", "0"),
                           ("router_solicitations", "0"))
    }


def check_interface_name(name: str) -> None:
    if not 0 < len(name) <= MAX_INTERFACE_NAME or "/" in name or any(c.isspace() for c in name):
        raise LabError(f"invalid interface name {name!r} (1..{MAX_INTERFACE_NAME} characters)")


# --- namespaces ----------------------------------------------------------------------------


def list_namespaces() -> set[str]:
    # `ip netns list` prints "name (id: N)" once a namespace has an id; keep the name only.
    output = run([tool("ip"), "netns", "list"])
    return {line.split()[0] for line in output.splitlines() if line.strip()}


def namespace_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def add_namespace(name: str) -> None:
    run([tool("ip"), "netns", "add", name])
    run(ip_command(name, "link", "set", "lo", "up"))


def delete_namespace(name: str) -> None:
    if not namespace_exists(name):
        return
    try:
        run([tool("ip"), "netns", "delete", name])
    except LabError:
        if namespace_exists(name):
            raise


# --- links ---------------------------------------------------------------------------------


def link_exists(name: str, namespace: str | None = None) -> bool:
    if namespace is None:
        return Path("/sys/class/net", name).exists()
    try:
        run(ip_command(namespace, "link", "show", "dev", name))
    except LabError:
        return False
    return True


def add_veth(
    name: str,
    namespace: str | None,
    mac: str,
    peer_name: str,
    peer_namespace: str | None,
    peer_mac: str,
) -> None:
    """Create both ends directly in their namespaces: they then inherit that namespace's
    defaults (no DAD), and no end ever sits in the root namespace under a name it must not."""
    check_interface_name(name)
    check_interface_name(peer_name)
    argv = [tool("ip"), "link", "add", name]
    if namespace is not None:
        argv += ["netns", namespace]
    argv += ["address", mac, "type", "veth", "peer", "name", peer_name]
    if peer_namespace is not None:
        argv += ["netns", peer_namespace]
    argv += ["address", peer_mac]
    run(argv)


def delete_link(name: str, namespace: str | None = None) -> None:
    if not link_exists(name, namespace):
        return
    try:
        run(ip_command(namespace, "link", "delete", "dev", name))
    except LabError:
        if link_exists(name, namespace):
            raise


def set_link_up(namespace: str | None, device: str) -> None:
    run(ip_command(namespace, "link", "set", "dev", device, "up"))


def disable_offloads(namespace: str | None, device: str) -> None:
    argv = [tool("ethtool"), "-K", device]
    for feature in OFFLOAD_FEATURES:
        argv += [feature, "off"]
    run(in_namespace(namespace, argv))


# --- addresses, routes, neighbours ---------------------------------------------------------


def add_address(namespace: str | None, device: str, interface: IPInterface) -> None:
    argv = ip_command(namespace, "address", "add", str(interface), "dev", device)
    if interface.version == 6:
        argv.append("nodad")  # usable at once instead of "tentative" for a second
    run(argv)


def add_route(namespace: str | None, prefix: str, via: str, device: str) -> None:
    # `add`, never `replace`: an existing route for the prefix belongs to someone else.
    run(ip_command(namespace, "route", "add", prefix, "via", via, "dev", device))


def route_exists(namespace: str | None, prefix: str, via: str, device: str) -> bool:
    family = "-6" if ":" in prefix else "-4"
    try:
        output = run(ip_command(namespace, family, "-j", "route", "show", "exact", prefix,
                                "via", via, "dev", device))
    except LabError:
        return False  # typically "Cannot find device": the route went with its link
    return bool(json.loads(output or "[]"))


def delete_route(namespace: str | None, prefix: str, via: str, device: str) -> None:
    # Naming via and dev means only our route goes, even if another one has the same prefix.
    if not route_exists(namespace, prefix, via, device):
        return
    try:
        run(ip_command(namespace, "route", "delete", prefix, "via", via, "dev", device))
    except LabError:
        if route_exists(namespace, prefix, via, device):
            raise


def add_local_route(namespace: str, prefix: str) -> None:
    run(ip_command(namespace, "route", "add", "local", prefix, "dev", "lo"))


def replace_neighbour(namespace: str | None, device: str, address: str, lladdr: str) -> None:
    # Static entries: no ARP/ND exchanges in captures, no first-packet resolution delay.
    run(ip_command(namespace, "neigh", "replace", address, "lladdr", lladdr, "dev", device,
                   "nud", "permanent"))


def route_get(address: str, namespace: str | None = None) -> dict[str, Any]:
    output = run(ip_command(namespace, "-j", "route", "get", address))
    routes = json.loads(output or "[]")
    if not routes or not isinstance(routes[0], dict):
        raise LabError(f"`ip route get {address}` returned no route")
    route: dict[str, Any] = routes[0]
    return route


# --- sysctls and nftables ------------------------------------------------------------------


def set_sysctls(namespace: str | None, settings: Mapping[str, str]) -> None:
    if not settings:
        return
    argv = [tool("sysctl"), "-q", "-w", *(f"{key}={value}" for key, value in settings.items())]
    run(in_namespace(namespace, argv))


def apply_nftables(namespace: str, ruleset: str) -> None:
    run(in_namespace(namespace, [tool("nft"), "-f", "-"]), input_text=ruleset)


# --- processes -----------------------------------------------------------------------------


def process_cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return tuple(os.fsdecode(part) for part in raw.split(b"\0")[:-1])


def pids_with_cmdline(argv: tuple[str, ...]) -> list[int]:
    """Processes running exactly `argv` (one pass over /proc, so bounded)."""
    matches = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and process_cmdline(int(entry)) == argv:
            matches.append(int(entry))
    return matches
