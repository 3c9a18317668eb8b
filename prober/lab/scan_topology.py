"""A ready-made topology for `prober scan` tests: whole blocks of hosts behind one router.

    root ns  pNN-rtr ==link 0== pNN-root  router  pNN-blk ==link 1== pNN-blk-gw  block
                                          (fwd)   pNN-lossa ==link 2 [loss element]== lossy

    block  answers every address of block_v4 (a /24) and block_v6 (a /120): a local route
           for each block and one listener on the wildcard address, with Linux's default
           SYN/ACK retries (tcp_synack_retries=5), so a SYN/ACK nobody answers is
           retransmitted after 1 s and shows in its counters (TcpExtTCPSynRetrans)
             80  open        the listener
             81  closed      nothing listens: the kernel answers RST
             82  filtered    dropped by nftables in `block`: silence
             83  unreachable rejected in `block`: ICMP / ICMPv6 port unreachable
    lossy  the same for lossy_v4 (a /24) and lossy_v6 (a /120), port 80 only, behind the loss
           element (prober.lab.element): each frame dropped with probability `loss`, in each
           direction, from a seeded sequence (`ScanTopology.restart_loss` starts it again)

A test topology owns one /24 and one /64 of the test pool, and its links take up the /24, so
the two /24 blocks are the /24s of two more test-pool topologies this builder claims and leaves
empty (as an index claim, the way tests/integration/test_lab.py holds one): nothing else in the
test pool uses their addresses while they are claimed, and teardown releases them. Each block's
/120 is ``::1:0/120`` of the same claim's /64.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .element import ElementCounters, ElementLink, ElementSettings, add_element_link
from .topology import Topology

# Beyond these, ICMP errors are rate limited per destination (1/s for v4 unreachables) and
# globally (1000/s): a scan's burst of probes to port 83 must see every reject.
_NO_ICMP_RATE_LIMITS = {
    "net.ipv4.icmp_ratelimit": 0,
    "net.ipv6.icmp.ratelimit": 0,
    "net.ipv4.icmp_msgs_per_sec": 1_000_000,
    "net.ipv4.icmp_msgs_burst": 1_000_000,
}

# Linux's defaults, set all the same so the host's own tuning cannot change what the
# half-open tests measure: an unanswered SYN/ACK is retransmitted (1 s, 3 s, 7 s, ...), and a
# full SYN queue answers with cookies (counted as TcpExtSyncookiesSent).
_DEFAULT_SYNACK_SYSCTLS = {
    "net.ipv4.tcp_synack_retries": 5,
    "net.ipv4.tcp_syncookies": 1,
}

# A SYN queue far beyond what a scan of the /24 keeps in flight, so a slow RST never shows as
# SYN cookies: only SYN/ACKs nobody answers do, as retransmissions.
BLOCK_BACKLOG = 1024

# The lossy peer answers a retried SYN (same ISN) for a connection still in SYN-RECV with its
# SYN/ACK again, but Linux limits those to one per tcp_invalid_ratelimit (500 ms) per
# connection; a scan's retries may come sooner. Off, so every try that reaches the peer is
# answered and each try is an independent draw of the element's loss.
_LOSSY_SYSCTLS = {**_DEFAULT_SYNACK_SYSCTLS, "net.ipv4.tcp_invalid_ratelimit": 0}

DEFAULT_LOSS = 0.03
DEFAULT_LOSS_SEED = 1

_BLOCK_V6_OFFSET = 1 << 16  # ::1:0 in the claim's /64
_BLOCK_V6_PREFIXLEN = 120


def _block_ruleset() -> str:
    return f"""\
table inet prober_lab {{
    chain input {{
        type filter hook input priority filter; policy accept;
        tcp dport {ScanTopology.DROPPED_PORT} drop
        meta nfproto ipv4 tcp dport {ScanTopology.UNREACHABLE_PORT} \
reject with icmp type port-unreachable
        meta nfproto ipv6 tcp dport {ScanTopology.UNREACHABLE_PORT} \
reject with icmpv6 type port-unreachable
    }}
}}
"""


@dataclass
class ScanTopology:
    """Addresses and names of a built scan topology (see the module's docstring)."""

    OPEN_PORT: ClassVar[int] = 80
    CLOSED_PORT: ClassVar[int] = 81
    DROPPED_PORT: ClassVar[int] = 82
    UNREACHABLE_PORT: ClassVar[int] = 83

    block_v4: ipaddress.IPv4Network  # a /24, every address answers
    block_v6: ipaddress.IPv6Network  # a /120
    lossy_v4: ipaddress.IPv4Network  # a /24 behind the loss element
    lossy_v6: ipaddress.IPv6Network  # a /120 behind the loss element
    root_v4: ipaddress.IPv4Address  # root's address on its link to the router: the source
    root_v6: ipaddress.IPv6Address
    # `block`'s own address on its link: the source of its ICMPv6 errors (a block address
    # is local by route, not configured, so ICMPv6 picks a configured one; ICMP for IPv4
    # answers from the probed address)
    block_peer_v4: ipaddress.IPv4Address
    block_peer_v6: ipaddress.IPv6Address
    router_namespace: str
    block_namespace: str
    lossy_namespace: str
    element_namespace: str
    root_interface: str  # root's end of the link to the router: capture here
    block_server_pid: int
    lossy_server_pid: int
    prefix: str
    state_path: Path
    topology: Topology = field(repr=False)
    loss_link: ElementLink = field(repr=False)

    def block(self, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The open block of IP `version` (4 or 6)."""
        return self.block_v4 if version == 4 else self.block_v6

    def lossy(self, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The block behind the loss element of IP `version` (4 or 6)."""
        return self.lossy_v4 if version == 4 else self.lossy_v6

    @property
    def loss(self) -> float:
        """The loss element's drop probability per frame and direction, now."""
        return self.loss_link.element.settings.loss

    def restart_loss(self, loss: float, seed: int) -> ElementCounters:
        """Restart the loss element with `loss` per frame and direction from the seeded drop
        sequence `seed`'s start; returns the counters of the element it replaced.

        Raises:
            LabError: the old element did not stop, or the new one did not start.
        """
        old = self.loss_link.element
        counters = old.stop()
        settings = ElementSettings(
            loss=loss, seed=seed, spin_margin_s=old.settings.spin_margin_s,
            queue_limit=old.settings.queue_limit, max_seconds=old.settings.max_seconds,
        )
        self.loss_link = self.loss_link.restart(self.topology, settings)
        return counters


def _claim_block(claim: Topology) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    """The /24 of an empty test-pool claim, and ``::1:0/120`` of its /64."""
    addresses = claim.addresses
    v6 = ipaddress.IPv6Network(
        (int(addresses.v6.network_address) + _BLOCK_V6_OFFSET, _BLOCK_V6_PREFIXLEN)
    )
    return addresses.v4, v6


def build_scan_topology(
    topology: Topology,
    block_claim: Topology,
    lossy_claim: Topology,
    *,
    loss: float = DEFAULT_LOSS,
    seed: int = DEFAULT_LOSS_SEED,
) -> ScanTopology:
    """Build the scan topology into an empty `topology`; the blocks are the addresses of
    `block_claim` and `lossy_claim` (two more empty topologies of the same pool, which this
    leaves empty: they only hold the addresses).

    Args:
        topology: where the namespaces, links, routes and processes go (and are recorded).
        block_claim: its /24 and a /120 of its /64 become the open block.
        lossy_claim: its /24 and a /120 of its /64 become the block behind the loss element.
        loss: the element's drop probability per frame and direction.
        seed: the element's drop sequence.

    Returns:
        The built topology's addresses and names.

    Raises:
        LabError: a command failed (what was built is recorded in `topology`'s state).
    """
    block_v4, block_v6 = _claim_block(block_claim)
    lossy_v4, lossy_v6 = _claim_block(lossy_claim)
    router = topology.add_namespace(
        "router",
        {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, **_NO_ICMP_RATE_LIMITS},
    )
    block = topology.add_namespace("block", {**_DEFAULT_SYNACK_SYSCTLS, **_NO_ICMP_RATE_LIMITS})
    lossy = topology.add_namespace("lossy", _LOSSY_SYSCTLS)
    uplink = topology.add_link(None, router, number=0, left_label="rtr", right_label="root",
                               left_host=1, right_host=2)
    block_link = topology.add_link(router, block, number=1, left_label="blk",
                                   right_label="blk-gw", left_host=1, right_host=2)
    loss_link = add_element_link(topology, router, lossy, number=2, loss=loss, seed=seed,
                                 element_role="loss", label="loss")
    root, router_up = uplink.left, uplink.right

    # Root reaches both blocks through the router, which hands each to its peer.
    for network in (block_v4, block_v6, lossy_v4, lossy_v6):
        gateway = router_up.v4.ip if network.version == 4 else router_up.v6.ip
        topology.add_route(None, network, via=gateway, device=root.device)
    for peer, link_left, link_right, networks in (
        (block, block_link.left, block_link.right, (block_v4, block_v6)),
        (lossy, loss_link.left, loss_link.right, (lossy_v4, lossy_v6)),
    ):
        for network in networks:
            gateway = link_right.v4.ip if network.version == 4 else link_right.v6.ip
            topology.add_route(router, network, via=gateway, device=link_left.device)
            topology.add_local_route(peer, network)
        # The peer answers root through the router.
        topology.add_route(peer, root.v4.network, via=link_left.v4.ip, device=link_right.device)
        topology.add_route(peer, root.v6.network, via=link_left.v6.ip, device=link_right.device)

    topology.apply_nftables(block, _block_ruleset())
    block_server = topology.start_server(block, [ScanTopology.OPEN_PORT], family="both",
                                         backlog=BLOCK_BACKLOG)
    lossy_server = topology.start_server(lossy, [ScanTopology.OPEN_PORT], family="both",
                                         backlog=BLOCK_BACKLOG)
    return ScanTopology(
        block_v4=block_v4,
        block_v6=block_v6,
        lossy_v4=lossy_v4,
        lossy_v6=lossy_v6,
        root_v4=root.v4.ip,
        root_v6=root.v6.ip,
        block_peer_v4=block_link.right.v4.ip,
        block_peer_v6=block_link.right.v6.ip,
        router_namespace=router,
        block_namespace=block,
        lossy_namespace=lossy,
        element_namespace=loss_link.element_namespace,
        root_interface=root.device,
        block_server_pid=block_server,
        lossy_server_pid=lossy_server,
        prefix=topology.prefix,
        state_path=topology.state_path,
        topology=topology,
        loss_link=loss_link,
    )


@contextlib.contextmanager
def scan_topology(
    *, loss: float = DEFAULT_LOSS, seed: int = DEFAULT_LOSS_SEED
) -> Iterator[ScanTopology]:
    """Claim three test-pool topologies (one built, two holding the blocks' addresses),
    build the scan topology, and tear all three down afterwards, also on failure.

    Args:
        loss: the loss element's drop probability per frame and direction.
        seed: its drop sequence.

    Yields:
        The built topology.

    Raises:
        LabError: no free topology in the test pool, or a command failed.
    """
    with contextlib.ExitStack() as stack:
        block_claim = stack.enter_context(Topology.create())
        lossy_claim = stack.enter_context(Topology.create())
        topology = stack.enter_context(Topology.create())
        yield build_scan_topology(topology, block_claim, lossy_claim, loss=loss, seed=seed)


__all__ = [
    "BLOCK_BACKLOG",
    "DEFAULT_LOSS",
    "DEFAULT_LOSS_SEED",
    "ScanTopology",
    "build_scan_topology",
    "scan_topology",
]
