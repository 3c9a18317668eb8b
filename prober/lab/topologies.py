"""Ready-made topologies.

SYN topology (what the SYN integration tests probe)::

    root ns   pNN-rtr ==link 0== pNN-root  router  pNN-tgt ==link 1== pNN-gw   target
              .1 / ::1             .2 / ::2  (fwd)   .17 / ::1:1        .18 / ::1:2

    (pNN: the topology's prefix, e.g. pt07; addresses relative to its /24 and /64)

    target:80  open        a real listener (prober.lab.server)
    target:81  closed      nothing listens: the target's kernel answers RST
    target:82  filtered    dropped by nftables in the target: silence
    target:83  unreachable rejected in the target: ICMP / ICMPv6 port unreachable
    target:84  prohibited  rejected in the router's forward chain: ICMP / ICMPv6
                           administratively prohibited, sent from the router's address
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .topology import Topology

# Beyond these, ICMP errors are rate limited per destination (1/s for v4 unreachables)
# and globally (1000/s); probes sent in bursts must see every reject.
_NO_ICMP_RATE_LIMITS = {
    "net.ipv4.icmp_ratelimit": 0,
    "net.ipv6.icmp.ratelimit": 0,
    "net.ipv4.icmp_msgs_per_sec": 1_000_000,
    "net.ipv4.icmp_msgs_burst": 1_000_000,
}

_TARGET_RULESET = """\
table inet prober_lab {
    chain input {
        type filter hook input priority filter; policy accept;
        tcp dport 82 drop
        meta nfproto ipv4 tcp dport 83 reject with icmp type port-unreachable
        meta nfproto ipv6 tcp dport 83 reject with icmpv6 type port-unreachable
    }
}
"""

_ROUTER_RULESET = """\
table inet prober_lab {
    chain forward {
        type filter hook forward priority filter; policy accept;
        meta nfproto ipv4 tcp dport 84 reject with icmp type admin-prohibited
        meta nfproto ipv6 tcp dport 84 reject with icmpv6 type admin-prohibited
    }
}
"""


@dataclass(frozen=True)
class SynTopology:
    """Addresses and names of a built SYN topology."""

    OPEN_PORT: ClassVar[int] = 80
    CLOSED_PORT: ClassVar[int] = 81
    DROPPED_PORT: ClassVar[int] = 82
    PORT_UNREACHABLE_PORT: ClassVar[int] = 83
    ADMIN_PROHIBITED_PORT: ClassVar[int] = 84

    target_v4: ipaddress.IPv4Address
    target_v6: ipaddress.IPv6Address
    router_v4: ipaddress.IPv4Address  # on the link facing root: the admin-prohibited source
    router_v6: ipaddress.IPv6Address
    root_v4: ipaddress.IPv4Address  # root's own address on that link: the probes' source
    root_v6: ipaddress.IPv6Address
    router_namespace: str
    target_namespace: str
    root_interface: str  # root's end of the link to the router: capture here
    server_pid: int
    prefix: str
    state_path: Path


def build_syn_topology(topology: Topology) -> SynTopology:
    router = topology.add_namespace(
        "router",
        {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, **_NO_ICMP_RATE_LIMITS},
    )
    target = topology.add_namespace("target", _NO_ICMP_RATE_LIMITS)
    uplink = topology.add_link(None, router, number=0, left_label="rtr", right_label="root",
                               left_host=1, right_host=2)
    downlink = topology.add_link(router, target, number=1, left_label="tgt", right_label="gw",
                                 left_host=1, right_host=2)
    root, router_up = uplink.left, uplink.right
    router_down, target_end = downlink.left, downlink.right

    # Root reaches the target's link through the router; the target answers root the same way.
    for network, gateway in ((target_end.v4.network, router_up.v4.ip),
                             (target_end.v6.network, router_up.v6.ip)):
        topology.add_route(None, network, via=gateway, device=root.device)
    for network, gateway in ((root.v4.network, router_down.v4.ip),
                             (root.v6.network, router_down.v6.ip)):
        topology.add_route(target, network, via=gateway, device=target_end.device)

    topology.apply_nftables(target, _TARGET_RULESET)
    topology.apply_nftables(router, _ROUTER_RULESET)
    server_pid = topology.start_server(target, [SynTopology.OPEN_PORT], family="both")
    return SynTopology(
        target_v4=target_end.v4.ip,
        target_v6=target_end.v6.ip,
        router_v4=router_up.v4.ip,
        router_v6=router_up.v6.ip,
        root_v4=root.v4.ip,
        root_v6=root.v6.ip,
        router_namespace=router,
        target_namespace=target,
        root_interface=root.device,
        server_pid=server_pid,
        prefix=topology.prefix,
        state_path=topology.state_path,
    )
