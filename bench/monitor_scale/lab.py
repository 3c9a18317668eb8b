"""The bench's own lab: one target namespace that answers a whole IPv6 block on port 80.

    root ns  <prefix>-root ==veth== <prefix>-tgt   target ns: local route for BLOCK (a /112,
                                                   65,536 addresses), listener on [::]:80,
                                                   SYN queue 65,536, no SYN cookies

The block is ``<topology /64>:2::/112``, where the built-in lab puts its `many` peer's IPv6
block (prober.lab.addresses): a test-pool topology owns one /24 and one /64, and only the /64
has room for 15,000 targets. The root namespace routes the block via the target's link
address; before anything is sent the first, a middle and the last address of the block are
checked to route over this topology's own link (prober.lab.route_check). The link's own IPv4
address is the one target of hping3, which has no IPv6.

Everything is torn down when the context manager exits (also on an error or Ctrl-C).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from prober.lab import LabError, Topology, is_lab_address, is_lab_network, route_check

TARGET_PORT = 80
BLOCK_PREFIXLEN = 112
MAX_TARGETS = 1 << (128 - BLOCK_PREFIXLEN)
# A SYN the target answers holds a request socket until our kernel's RST (it has no socket
# for the SYN/ACK) frees it; a queue of 65,536 holds several seconds of 15,000 SYNs/s. No
# SYN cookies: a full queue then drops SYNs (seen as no-response, and in ListenDrops), rather
# than answering with cookies that hide it.
TARGET_SYSCTLS = {
    "net.ipv4.tcp_max_syn_backlog": 65536,  # applies to IPv6 listeners too
    "net.core.somaxconn": 65536,
    "net.ipv4.tcp_syncookies": 0,
}


@dataclass(frozen=True)
class MonitorLab:
    namespace: str  # the target's namespace
    block: ipaddress.IPv6Network  # every address answers on port 80
    device: str  # the root namespace's end of the link
    link_v4: str  # the target's own IPv4 address on the link (hping3's one target)
    link_v6: str
    source_v6: str  # the root namespace's address on the link
    source_mac: str  # root's end of the link (nping's --source-mac)
    target_mac: str  # the target's end of the link (nping's --dest-mac)

    def targets(self, count: int) -> list[str]:
        """The first `count` addresses of the block (its ::1 onwards)."""
        if not 1 <= count <= MAX_TARGETS - 1:
            raise ValueError(f"from 1 to {MAX_TARGETS - 1} targets")
        first = int(self.block.network_address) + 1
        return [str(ipaddress.IPv6Address(first + i)) for i in range(count)]


@contextlib.contextmanager
def monitor_lab(server_seconds: float) -> Iterator[MonitorLab]:
    """Build the lab (see the module's docstring), yield it, tear it down.

    Raises:
        LabError: no free test-pool index, or a route to the block is not over our link.
    """
    with Topology.create() as topology:
        namespace = topology.add_namespace("target", TARGET_SYSCTLS)
        link = topology.add_link(None, namespace, number=0, left_label="root",
                                 right_label="tgt")
        v6_base = int(topology.addresses.v6.network_address)
        block = ipaddress.IPv6Network((v6_base + (2 << 48), BLOCK_PREFIXLEN))
        if not is_lab_network(block):
            raise LabError(f"{block} is not lab address space")
        topology.add_local_route(namespace, block)
        topology.add_route(None, block, via=link.right.v6.ip, device=link.left.device)
        topology.start_server(namespace, [TARGET_PORT], family="both", backlog=65536,
                              max_seconds=server_seconds)
        for address in (block[1], block[block.num_addresses // 2], block[-1]):
            device = route_check(address, devices=(link.left.device,))
            if device != link.left.device:
                raise LabError(f"{address} routed via {device}, not via {link.left.device}")
        link_v4 = str(link.right.v4.ip)
        if not is_lab_address(link_v4):
            raise LabError(f"{link_v4} is not a lab address")
        route_check(link_v4, devices=(link.left.device,))
        yield MonitorLab(namespace=namespace, block=block, device=link.left.device,
                         link_v4=link_v4, link_v6=str(link.right.v6.ip),
                         source_v6=str(link.left.v6.ip), source_mac=link.left.mac,
                         target_mac=link.right.mac)
