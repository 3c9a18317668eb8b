"""The bench's own lab: one target namespace that answers a whole IPv6 block on port 80.

    root ns  <prefix>-root ==veth== <prefix>-tgt   target ns: local route for BLOCK (a /112,
                                                   65,536 addresses), listener on [::]:80,
                                                   SYN queue 65,536, no SYN cookies

With ``--family 4`` the bench uses the built-in lab's `many` peer instead (`prober lab up`;
its 198.19.0.0/16, port 80 open, SYN cookies on, tcp_synack_retries 0; see
prober/lab/builtin.py), as bench/scan_rate does: a test-pool topology has no IPv4 block
larger than a /27.

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
from pathlib import Path

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
    block: ipaddress.IPv4Network | ipaddress.IPv6Network  # every address answers on port 80
    device: str  # the root namespace's end of the link
    source: str  # the root namespace's address on it (the probes' source)
    source_mac: str  # root's end of the link (nping's --source-mac)
    next_hop_mac: str  # the other end (nping's --dest-mac)
    hping3_target: str  # an IPv4 address (hping3 has no IPv6)
    own: bool  # built by this bench (else the built-in lab's `many` peer)

    def targets(self, count: int) -> list[str]:
        """The first `count` addresses of the block (from its network address + 1)."""
        if not 1 <= count <= MAX_TARGETS - 1:
            raise ValueError(f"from 1 to {MAX_TARGETS - 1} targets")
        first = int(self.block.network_address) + 1
        address = ipaddress.ip_address
        return [str(address(first + i)) for i in range(count)]

    def tap_expression(self) -> str:
        """SYNs without ACK from us to the block, or to hping3's target (IPv6: the TCP header
        right after the fixed one)."""
        syn = "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"
        hping3 = f"(ip and dst host {self.hping3_target} and {syn})"
        if self.block.version == 6:
            return (f"(ip6 and dst net {self.block} and ip6[6] == 6 and ip6[53] & 0x12 == 0x02)"
                    f" or {hping3}")
        return f"(ip and src host {self.source} and dst net {self.block} and {syn}) or {hping3}"


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
                         source=str(link.left.v6.ip), source_mac=link.left.mac,
                         next_hop_mac=link.right.mac, hping3_target=link_v4, own=True)


def many_lab() -> MonitorLab:
    """The built-in lab's `many` peer's IPv4 /16 (198.19.0.0/16, port 80), after
    scan_rate.lab.find_many's checks (lab up and healthy, the block routed over the lab's
    link). Nothing is built or torn down: the lab is left as it was found.

    Raises:
        LabError: the lab is down or unhealthy, or a route is not the lab's.
    """
    from scan_rate.lab import find_many

    peer = find_many()
    source_mac = Path(f"/sys/class/net/{peer.device}/address").read_text().strip()
    return MonitorLab(namespace=peer.namespace, block=peer.block_v4, device=peer.device,
                      source=peer.source_v4, source_mac=source_mac,
                      next_hop_mac=peer.router_mac, hping3_target=str(peer.block_v4[1]),
                      own=False)
