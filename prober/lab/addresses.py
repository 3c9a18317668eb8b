"""The lab's address plan.

Everything the lab configures lives in the benchmarking ranges (RFC 2544's 198.18.0.0/15 and
RFC 5180's 2001:2::/48), so a probe that leaks out of a namespace can never reach a real host.

    198.18.0.0/24       persistent pool: one topology, the built-in lab (`prober lab up`)
    198.18.1.0/24       the built-in lab's `lossy` block (one namespace answers all of it)
    198.18.2.0 - 198.18.127.255   unassigned
    198.18.128.0/17     test pool: 128 topologies, built and torn down by test sessions
    198.19.0.0/16       the built-in lab's `many` block (one namespace answers all of it)

    2001:2:0:0::/56     persistent pool (the lab is its /64 number 0: 2001:2::/64)
    2001:2:0:100::/56   test pool (topology i is 2001:2:0:1ii::/64, i = 00..7f)

The lab and test topologies never overlap, so tests run while a user's lab is up.

Each pool is cut into topologies by an index, so several can exist at once:

    topology i:   v4 <pool>.i.0/24               v6 <pool /56> + i -> one /64
    link k:       v4 <topology>.(16k)/28         v6 <topology /64>::k:0/112     (k = 0..15)
    host h:       v4 <link>.(16k + h)            v6 <topology /64>::k:h         (h = 1..14)

so host 2 on link 1 of test topology 7 is 198.18.135.18 and 2001:2:0:107::1:2. Prefixes longer
than /64 are fine for IPv6 here because nothing uses SLAAC: addresses and neighbours are static.

The built-in lab's address blocks (`LabBlocks`, see `AddressPool.lab_blocks`), beyond its links:

    lossy:  v6 <topology /64>:1::/120 (256 addresses)    v4 198.18.1.0/24 in the persistent pool
    many:   v6 <topology /64>:2::/112 (65,536)           v4 198.19.0.0/16 in the persistent pool

A lab built in the test pool (the integration tests build the whole lab there) has no room for
a /24 and a /16 of its own: its IPv4 blocks are the top of its own /24, which the lab's links
never reach (they use links 0..11, up to <topology>.191): lossy <topology>.192/27 and many
<topology>.224/27. So link 11 is the last a lab peer can have: link 12 (.192/28) would lie in
the test lab's lossy block. Links 12..15 remain free in the persistent pool only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

LAB_V4 = ipaddress.IPv4Network("198.18.0.0/15")
LAB_V6 = ipaddress.IPv6Network("2001:2::/48")

LINKS_PER_TOPOLOGY = 16
HOSTS_PER_LINK = 14  # hosts 1..14: a /28 minus its network and broadcast addresses

_TOPOLOGY_V4_PREFIXLEN = 24
_TOPOLOGY_V6_PREFIXLEN = 64
_LINK_V4_PREFIXLEN = 28
_LINK_V6_PREFIXLEN = 112


@dataclass(frozen=True)
class LinkAddresses:
    """One point-to-point (or small) link's subnets."""

    number: int
    v4: ipaddress.IPv4Network
    v6: ipaddress.IPv6Network

    def host_v4(self, host: int) -> ipaddress.IPv4Interface:
        _check_host(host)
        return ipaddress.IPv4Interface((int(self.v4.network_address) + host, self.v4.prefixlen))

    def host_v6(self, host: int) -> ipaddress.IPv6Interface:
        _check_host(host)
        return ipaddress.IPv6Interface((int(self.v6.network_address) + host, self.v6.prefixlen))


@dataclass(frozen=True)
class TopologyAddresses:
    """The /24 and /64 one topology owns."""

    index: int
    v4: ipaddress.IPv4Network
    v6: ipaddress.IPv6Network

    def link(self, number: int) -> LinkAddresses:
        if not 0 <= number < LINKS_PER_TOPOLOGY:
            raise ValueError(f"link number {number} outside 0..{LINKS_PER_TOPOLOGY - 1}")
        v4 = list(self.v4.subnets(new_prefix=_LINK_V4_PREFIXLEN))[number]
        # ::k:0/112 rather than the k-th /112, so the link number is readable in the address.
        v6_start = int(self.v6.network_address) + (number << (128 - _LINK_V6_PREFIXLEN))
        v6 = ipaddress.IPv6Network((v6_start, _LINK_V6_PREFIXLEN))
        return LinkAddresses(number=number, v4=v4, v6=v6)


@dataclass(frozen=True)
class LabBlocks:
    """Where the built-in lab's `lossy` and `many` peers answer: every address of each block
    (a local route in one namespace), not only the addresses of their links."""

    lossy_v4: ipaddress.IPv4Network
    lossy_v6: ipaddress.IPv6Network
    many_v4: ipaddress.IPv4Network
    many_v6: ipaddress.IPv6Network


@dataclass(frozen=True)
class AddressPool:
    """A range the lab hands out topologies from; `code` starts every name the pool's
    topologies create (namespaces, interfaces, state files), so leftovers are recognisable."""

    name: str
    code: str
    v4: ipaddress.IPv4Network  # a /24 per topology: /24 for one topology, /17 for 128
    v6: ipaddress.IPv6Network  # a /56: up to 256 topologies of /64
    mac_octet: int  # second octet of the locally administered MACs its veths get
    # The built-in lab's IPv4 blocks when it is built in this pool; None: the top of its /24.
    lab_lossy_v4: ipaddress.IPv4Network | None = None
    lab_many_v4: ipaddress.IPv4Network | None = None

    @property
    def topologies(self) -> int:
        """How many topologies (indices 0..topologies-1) the pool holds."""
        return min(1 << (_TOPOLOGY_V4_PREFIXLEN - self.v4.prefixlen),
                   1 << (_TOPOLOGY_V6_PREFIXLEN - self.v6.prefixlen))

    def topology(self, index: int) -> TopologyAddresses:
        self._check_index(index)
        v4_start = int(self.v4.network_address) + (index << (32 - _TOPOLOGY_V4_PREFIXLEN))
        v6_start = int(self.v6.network_address) + (index << (128 - _TOPOLOGY_V6_PREFIXLEN))
        return TopologyAddresses(
            index=index,
            v4=ipaddress.IPv4Network((v4_start, _TOPOLOGY_V4_PREFIXLEN)),
            v6=ipaddress.IPv6Network((v6_start, _TOPOLOGY_V6_PREFIXLEN)),
        )

    def prefix(self, index: int) -> str:
        """Name prefix of topology `index`, e.g. ``pt07``: 4 characters, leaving 11 of the
        kernel's 15 for an interface's own label (after a dash)."""
        self._check_index(index)
        return f"{self.code}{index:02x}"

    def lab_blocks(self, index: int) -> LabBlocks:
        """The `lossy` and `many` blocks of a built-in lab that is topology `index`."""
        topology = self.topology(index)
        v6_base = int(topology.v6.network_address)
        top_quarter = list(topology.v4.subnets(new_prefix=_TOPOLOGY_V4_PREFIXLEN + 3))
        return LabBlocks(
            lossy_v4=self.lab_lossy_v4 or top_quarter[6],
            lossy_v6=ipaddress.IPv6Network((v6_base + (1 << 48), 120)),
            many_v4=self.lab_many_v4 or top_quarter[7],
            many_v6=ipaddress.IPv6Network((v6_base + (2 << 48), 112)),
        )

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.topologies:
            raise ValueError(f"topology index {index} outside 0..{self.topologies - 1}")


PERSISTENT_POOL = AddressPool(
    name="persistent",
    code="pl",
    v4=ipaddress.IPv4Network("198.18.0.0/24"),
    v6=ipaddress.IPv6Network("2001:2::/56"),
    mac_octet=0x6C,
    lab_lossy_v4=ipaddress.IPv4Network("198.18.1.0/24"),
    lab_many_v4=ipaddress.IPv4Network("198.19.0.0/16"),
)
TEST_POOL = AddressPool(
    name="test",
    code="pt",
    v4=ipaddress.IPv4Network("198.18.128.0/17"),
    v6=ipaddress.IPv6Network("2001:2:0:100::/56"),
    mac_octet=0x74,
)
POOLS = (PERSISTENT_POOL, TEST_POOL)


def pool_named(name: str) -> AddressPool:
    for pool in POOLS:
        if pool.name == name:
            return pool
    raise ValueError(f"no address pool named {name!r}")


def _check_host(host: int) -> None:
    if not 1 <= host <= HOSTS_PER_LINK:
        raise ValueError(f"host number {host} outside 1..{HOSTS_PER_LINK}")


def parse_address(address: str | IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return address
    return ipaddress.ip_address(address)


def is_lab_address(address: str | IPAddress) -> bool:
    """True for addresses inside 198.18.0.0/15 or 2001:2::/48 (IPv4-mapped IPv6 counts as the
    IPv4 address it maps to, since that is where a socket would send). Unparsable: False."""
    try:
        parsed = parse_address(address)
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return parsed.ipv4_mapped in LAB_V4
        # A zone index ("%eth0") only appears on link-local addresses, which are not lab ones.
        return parsed.scope_id is None and parsed in LAB_V6
    return parsed in LAB_V4


def is_lab_network(network: str | IPNetwork) -> bool:
    """True for prefixes wholly inside the lab ranges."""
    try:
        parsed = ipaddress.ip_network(network, strict=True) if isinstance(network, str) else network
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv4Network):
        return parsed.subnet_of(LAB_V4)
    return parsed.subnet_of(LAB_V6)
