"""The built-in lab's `many` peer as the bench uses it: its block, the route to it (checked),
the router's MAC for masscan and zmap, and the counters read before and after each tool.

Nothing here brings the lab up or down: the bench runs against the lab as it is and leaves it
as it found it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from prober.lab import LabError, is_lab_address, is_lab_network, lab_status, route_check
from prober.lab.commands import command_env, find_tool
from prober.lab.netns import route_get

# The target's TCP counters worth a column: a listen queue that overflowed or dropped, SYN
# cookies sent (its SYN queue was full), retransmitted SYN/ACKs: each means the target, not
# the tool, lost or changed answers.
TCP_EXT_COUNTERS = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPReqQFullDrop",
                    "TCPReqQFullDoCookies")
TCP_COUNTERS = ("InSegs", "OutSegs", "RetransSegs", "OutRsts", "InErrs")
NUDGE_PORT = 9  # closed on the router: each connect() there is answered by a RST


@dataclass(frozen=True)
class ManyPeer:
    """Where the `many` block is and how the root namespace reaches it."""

    namespace: str  # the peer's namespace, e.g. pl00-many
    block_v4: ipaddress.IPv4Network  # 198.19.0.0/16
    block_v6: ipaddress.IPv6Network  # 2001:2::2:0:0/112
    device: str  # the root namespace's link to the lab router, e.g. pl00-rtr
    source_v4: str  # the root namespace's address on it (the scanners' source)
    gateway_v4: str  # the lab router
    router_mac: str  # for masscan's --router-mac and zmap's -G


def find_many() -> ManyPeer:
    """The running lab's `many` peer, after checking that its whole block is lab address
    space routed over the lab's own link (so nothing the bench sends leaves the machine).

    Raises:
        LabError: the lab is down or unhealthy, or a route is not the lab's.
    """
    status = lab_status()
    if status is None:
        raise LabError("the built-in lab is down: bring it up with `prober lab up`")
    if not status.healthy:
        raise LabError(f"the lab is not healthy: {'; '.join(status.problems) or 'incomplete'}"
                       " (`prober lab down` and `prober lab up`)")
    block_v4 = ipaddress.IPv4Network(status.address_of("many", 4))
    block_v6 = ipaddress.IPv6Network(status.address_of("many", 6))
    if not (is_lab_network(block_v4) and is_lab_network(block_v6)):
        raise LabError(f"the many block {block_v4} / {block_v6} is not lab address space")
    device = f"{status.prefix}-rtr"
    # The first, a middle and the last address of each block: one route covers the block,
    # but a more specific route elsewhere inside it would show on one of them.
    for block in (block_v4, block_v6):
        for address in (block[0], block[block.num_addresses // 2], block[-1]):
            route_check(address, devices=(device,))
    route = route_get(str(block_v4[1]))
    gateway, source = route.get("gateway"), route.get("prefsrc")
    if not (isinstance(gateway, str) and isinstance(source, str)
            and is_lab_address(gateway) and is_lab_address(source)):
        raise LabError(f"no lab gateway and source address in the route to {block_v4}: {route}")
    return ManyPeer(namespace=status.namespace_of("many"), block_v4=block_v4,
                    block_v6=block_v6, device=device, source_v4=source, gateway_v4=gateway,
                    router_mac=neighbour_mac(device, gateway))


def neighbour_mac(device: str, address: str) -> str:
    output = subprocess.run([find_tool("ip") or "ip", "-j", "neigh", "show", "dev", device],
                            capture_output=True, text=True, check=True, env=command_env()).stdout
    for entry in json.loads(output or "[]"):
        if entry.get("dst") == address and isinstance(entry.get("lladdr"), str):
            return str(entry["lladdr"])
    raise LabError(f"no neighbour entry for the lab router {address} on {device}")


def target_counters(namespace: str) -> dict[str, int]:
    """The target namespace's TCP counters (its own /proc/net/netstat and snmp, read inside
    it; not `nstat`, whose history file other users of the lab may rely on)."""
    argv = [find_tool("ip") or "ip", "netns", "exec", namespace, "cat", "/proc/net/netstat",
            "/proc/net/snmp"]
    text = subprocess.run(argv, capture_output=True, text=True, check=True,
                          env=command_env()).stdout
    tables: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        name, _, keys = header.partition(":")
        _, _, numbers = values.partition(":")
        tables[name] = dict(zip(keys.split(), (int(n) for n in numbers.split()), strict=False))
    counters = {key: tables.get("TcpExt", {}).get(key, 0) for key in TCP_EXT_COUNTERS}
    counters.update({f"Tcp{key}": tables.get("Tcp", {}).get(key, 0) for key in TCP_COUNTERS})
    counters["softnet_dropped"] = softnet_dropped()
    return counters


def softnet_dropped() -> int:
    """Frames every CPU's backlog dropped (/proc/net/softnet_stat's second column): one
    kernel for all namespaces, so the whole machine's count."""
    total = 0
    for line in Path("/proc/net/softnet_stat").read_text().splitlines():
        fields = line.split()
        if len(fields) > 1:
            total += int(fields[1], 16)
    return total


def nudge(gateway: str, device: str, count: int = 5) -> None:
    """A few connection attempts to a closed port of the lab router: each brings a RST back
    over `device`. masscan 1.3.2's receive thread only notices the end of its --wait when a
    frame arrives; on an idle link it never exits (it prints "waiting -N-secs" forever)."""
    route_check(gateway, devices=(device,))
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.2)
            with contextlib.suppress(OSError):  # refused, as expected
                probe.connect((gateway, NUDGE_PORT))
