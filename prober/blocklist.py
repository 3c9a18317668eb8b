"""Addresses a scan does not probe: the built-in blocklist of special-purpose addresses, and
sets of address ranges fast enough to test every element of a block against (issue 8).

The blocklist is the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and its
updates), every entry, plus what those registries leave to other tables: multicast
(224.0.0.0/4, ff00::/8), the reserved 240.0.0.0/4 and the limited broadcast address. zmap's
default ``conf/blocklist.conf`` is the model; as there, it applies only when a block of many
addresses is expanded: a single address the user wrote is always probed.

Membership is a bisect over sorted disjoint integer ranges, never an ``ipaddress`` object per
address: a scan tests hundreds of thousands of elements a second. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import itertools
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from prober.errors import UsageError


@dataclass(frozen=True, slots=True)
class SpecialBlock:
    """One entry of the blocklist, as the registry names it."""

    network: str
    name: str
    rfc: str


# The IANA IPv4 Special-Purpose Address Registry (iana-ipv4-special-registry), every entry.
IPV4_SPECIAL: Final = (
    SpecialBlock("0.0.0.0/8", "This network", "RFC 791"),
    SpecialBlock("0.0.0.0/32", "This host on this network", "RFC 1122"),
    SpecialBlock("10.0.0.0/8", "Private-Use", "RFC 1918"),
    SpecialBlock("100.64.0.0/10", "Shared Address Space", "RFC 6598"),
    SpecialBlock("127.0.0.0/8", "Loopback", "RFC 1122"),
    SpecialBlock("169.254.0.0/16", "Link Local", "RFC 3927"),
    SpecialBlock("172.16.0.0/12", "Private-Use", "RFC 1918"),
    SpecialBlock("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890"),
    SpecialBlock("192.0.0.0/29", "IPv4 Service Continuity Prefix", "RFC 7335"),
    SpecialBlock("192.0.0.8/32", "IPv4 dummy address", "RFC 7600"),
    SpecialBlock("192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723"),
    SpecialBlock("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155"),
    SpecialBlock("192.0.0.170/31", "NAT64/DNS64 Discovery", "RFC 8880"),
    SpecialBlock("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737"),
    SpecialBlock("192.31.196.0/24", "AS112-v4", "RFC 7535"),
    SpecialBlock("192.52.193.0/24", "AMT", "RFC 7450"),
    SpecialBlock("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526"),
    SpecialBlock("192.88.99.2/32", "6a44-relay anycast address", "RFC 6751"),
    SpecialBlock("192.168.0.0/16", "Private-Use", "RFC 1918"),
    SpecialBlock("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534"),
    SpecialBlock("198.18.0.0/15", "Benchmarking", "RFC 2544"),
    SpecialBlock("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737"),
    SpecialBlock("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737"),
    SpecialBlock("240.0.0.0/4", "Reserved", "RFC 1112"),
    SpecialBlock("255.255.255.255/32", "Limited Broadcast", "RFC 919"),
    # Not special-purpose entries, but never a scan's business (zmap's default blocks them too).
    SpecialBlock("224.0.0.0/4", "Multicast", "RFC 5771"),
)

# The IANA IPv6 Special-Purpose Address Registry (iana-ipv6-special-registry), every entry.
IPV6_SPECIAL: Final = (
    SpecialBlock("::1/128", "Loopback Address", "RFC 4291"),
    SpecialBlock("::/128", "Unspecified Address", "RFC 4291"),
    SpecialBlock("::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291"),
    SpecialBlock("64:ff9b::/96", "IPv4-IPv6 Translat.", "RFC 6052"),
    SpecialBlock("64:ff9b:1::/48", "IPv4-IPv6 Translat.", "RFC 8215"),
    SpecialBlock("100::/64", "Discard-Only Address Block", "RFC 6666"),
    SpecialBlock("100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780"),
    SpecialBlock("2001::/23", "IETF Protocol Assignments", "RFC 2928"),
    SpecialBlock("2001::/32", "TEREDO", "RFC 4380"),
    SpecialBlock("2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723"),
    SpecialBlock("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "RFC 8155"),
    SpecialBlock("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "RFC 9665"),
    SpecialBlock("2001:2::/48", "Benchmarking", "RFC 5180"),
    SpecialBlock("2001:3::/32", "AMT", "RFC 7450"),
    SpecialBlock("2001:4:112::/48", "AS112-v6", "RFC 7535"),
    SpecialBlock("2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843"),
    SpecialBlock("2001:20::/28", "ORCHIDv2", "RFC 7343"),
    SpecialBlock("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374"),
    SpecialBlock("2001:db8::/32", "Documentation", "RFC 3849"),
    SpecialBlock("2002::/16", "6to4", "RFC 3056"),
    SpecialBlock("2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534"),
    SpecialBlock("3fff::/20", "Documentation", "RFC 9637"),
    SpecialBlock("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602"),
    SpecialBlock("fc00::/7", "Unique-Local", "RFC 4193"),
    SpecialBlock("fe80::/10", "Link-Local Unicast", "RFC 4291"),
    SpecialBlock("ff00::/8", "Multicast", "RFC 4291"),  # outside the registry, as 224/4
)


class AddressSet:
    """Integers as sorted, disjoint, non-adjacent half-open ranges ``[start, end)``, each
    optionally labelled (the blocklist entry it comes from). ``x in s`` is one bisect."""

    __slots__ = ("ends", "labels", "starts")

    def __init__(
        self,
        starts: list[int] | None = None,
        ends: list[int] | None = None,
        labels: list[str] | None = None,
    ) -> None:
        # Already normalised (use from_ranges otherwise).
        self.starts: list[int] = starts if starts is not None else []
        self.ends: list[int] = ends if ends is not None else []
        self.labels = labels

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int]]) -> AddressSet:
        """The union of ``[start, end)`` ranges in any order, overlapping or not."""
        starts: list[int] = []
        ends: list[int] = []
        for start, end in sorted(ranges):
            if start >= end:
                continue
            if ends and start <= ends[-1]:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        return cls(starts, ends)

    def __contains__(self, value: int) -> bool:
        index = bisect_right(self.starts, value) - 1
        return index >= 0 and value < self.ends[index]

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AddressSet)
            and self.starts == other.starts
            and self.ends == other.ends
        )

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside

    def __repr__(self) -> str:
        return f"AddressSet({list(self.ranges())})"

    @property
    def size(self) -> int:
        """How many integers (exact, also beyond sys.maxsize for IPv6)."""
        return sum(end - start for start, end in zip(self.starts, self.ends, strict=True))

    def ranges(self) -> Iterator[tuple[int, int]]:
        return zip(self.starts, self.ends, strict=True)

    def label_of(self, value: int) -> str | None:
        """The label of the range holding ``value`` (None: outside, or no labels)."""
        index = bisect_right(self.starts, value) - 1
        if index < 0 or value >= self.ends[index] or self.labels is None:
            return None
        return self.labels[index]

    def clip(self, low: int, high: int) -> AddressSet:
        """The part inside ``[low, high)``, labels kept; O(log n + ranges kept)."""
        first = max(bisect_right(self.ends, low), 0)
        last = bisect_left(self.starts, high)
        starts = self.starts[first:last]
        ends = self.ends[first:last]
        if starts:
            starts[0] = max(starts[0], low)
            ends[-1] = min(ends[-1], high)
        labels = None if self.labels is None else self.labels[first:last]
        return AddressSet(starts, ends, labels)

    def __or__(self, other: AddressSet) -> AddressSet:
        return AddressSet.from_ranges([*self.ranges(), *other.ranges()])

    def __and__(self, other: AddressSet) -> AddressSet:
        """The intersection; this set's labels kept."""
        starts: list[int] = []
        ends: list[int] = []
        labels: list[str] | None = None if self.labels is None else []
        i = j = 0
        while i < len(self.starts) and j < len(other.starts):
            low = max(self.starts[i], other.starts[j])
            high = min(self.ends[i], other.ends[j])
            if low < high:
                starts.append(low)
                ends.append(high)
                if labels is not None and self.labels is not None:
                    labels.append(self.labels[i])
            if self.ends[i] < other.ends[j]:
                i += 1
            else:
                j += 1
        return AddressSet(starts, ends, labels)

    def sizes_by_label(self) -> Counter[str]:
        """How many integers each label covers (all under '' when unlabelled)."""
        sizes: Counter[str] = Counter()
        labels = self.labels if self.labels is not None else [""] * len(self.starts)
        for start, end, label in zip(self.starts, self.ends, labels, strict=True):
            sizes[label] += end - start
        return sizes

    def __sub__(self, other: AddressSet) -> AddressSet:
        """The difference; labels kept (a range cut in two keeps its label on both)."""
        starts: list[int] = []
        ends: list[int] = []
        labels: list[str] | None = None if self.labels is None else []
        j = 0
        for index, (start, end) in enumerate(self.ranges()):
            while j < len(other.starts) and other.ends[j] <= start:
                j += 1
            k = j
            cursor = start
            while k < len(other.starts) and other.starts[k] < end:
                if other.starts[k] > cursor:
                    starts.append(cursor)
                    ends.append(other.starts[k])
                    if labels is not None and self.labels is not None:
                        labels.append(self.labels[index])
                cursor = max(cursor, other.ends[k])
                k += 1
            if cursor < end:
                starts.append(cursor)
                ends.append(end)
                if labels is not None and self.labels is not None:
                    labels.append(self.labels[index])
        return AddressSet(starts, ends, labels)


def network_range(text: str) -> tuple[int, int, int]:
    """``(version, start, end)`` of a network written as ``ADDRESS[/LEN]`` (host bits allowed).

    Raises:
        UsageError: not a network.
    """
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise UsageError(f"invalid network {text!r}: {exc}") from None
    start = int(network.network_address)
    return network.version, start, start + network.num_addresses


def _labelled(blocks: Iterable[SpecialBlock]) -> AddressSet:
    """The union of ``blocks`` as disjoint ranges, each labelled with its most specific entry
    (192.0.0.8/32 is 'IPv4 dummy address', not 'IETF Protocol Assignments')."""
    spans = [(*network_range(block.network)[1:], block.name) for block in blocks]
    cuts = sorted({point for start, end, _name in spans for point in (start, end)})
    starts: list[int] = []
    ends: list[int] = []
    labels: list[str] = []
    for low, high in itertools.pairwise(cuts):
        covering = [(end - start, name) for start, end, name in spans if start <= low < end]
        if not covering:
            continue
        name = min(covering)[1]  # the smallest covering block
        if ends and ends[-1] == low and labels[-1] == name:
            ends[-1] = high
        else:
            starts.append(low)
            ends.append(high)
            labels.append(name)
    return AddressSet(starts, ends, labels)


_SPECIAL: Final = {4: _labelled(IPV4_SPECIAL), 6: _labelled(IPV6_SPECIAL)}


class Blocklist:
    """The special-purpose addresses of each family, minus the ``exempt`` networks.

    Args:
        exempt: networks the blocklist spares (``ADDRESS/LEN``), e.g. a lab's own prefixes.

    Raises:
        UsageError: an exempt entry that is not a network.
    """

    __slots__ = ("sets",)

    def __init__(self, exempt: Iterable[str] = ()) -> None:
        spared: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for text in exempt:
            version, start, end = network_range(text)
            spared[version].append((start, end))
        self.sets: dict[int, AddressSet] = {
            version: _SPECIAL[version] - AddressSet.from_ranges(spared[version])
            for version in (4, 6)
        }

    def within(self, version: int, start: int, end: int) -> AddressSet:
        """The blocked addresses in ``[start, end)``, labelled with their entry names."""
        return self.sets[version].clip(start, end)

    def __contains__(self, address: tuple[int, int]) -> bool:
        """``(version, address as int) in blocklist``."""
        version, value = address
        return value in self.sets[version]

    def entry_name(self, version: int, value: int) -> str | None:
        """The name of the most specific entry holding the address, None when none does."""
        return self.sets[version].label_of(value)


_NO_INTERVALS: Final = memoryview(bytes(4 * 65536)).cast("I")  # every port: interval 0


class Exclusions:
    """``--exclude``: addresses on every port, and addresses on some ports.

    Args:
        entries: ``(version, start, end, port ranges)`` for ``[start, end)``; port ranges
            (inclusive) None or covering 1-65535 mean every port.

    Ports are cut into elementary intervals (no entry's port range starts or ends inside
    one), each with the union of the addresses excluded on it, and a table of 65,536 maps a
    port to its interval: a test is one table read and one bisect.
    """

    __slots__ = ("all_ports", "bounds", "by_interval", "port_interval")

    def __init__(
        self, entries: Iterable[tuple[int, int, int, tuple[tuple[int, int], ...] | None]] = ()
    ) -> None:
        every: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        some: list[tuple[int, int, int, tuple[tuple[int, int], ...]]] = []
        for version, start, end, ports in entries:
            if ports is None or _covers_all(ports):
                every[version].append((start, end))
            else:
                some.append((version, start, end, ports))
        self.all_ports = {v: AddressSet.from_ranges(r) for v, r in every.items()}
        cuts = sorted(
            {p for *_, ports in some for low, high in ports for p in (low, high + 1)}
        )
        self.bounds = cuts  # interval k is ports [cuts[k-1], cuts[k]) for k >= 1
        pieces: list[dict[int, list[tuple[int, int]]]] = [
            {4: [], 6: []} for _ in range(len(cuts) + 1)
        ]
        for version, start, end, ports in some:
            for low, high in ports:
                for k in range(bisect_right(cuts, low), bisect_right(cuts, high) + 1):
                    pieces[k][version].append((start, end))
        # Interval ids are 1-based (0: no exclusion on that port).
        self.by_interval: list[dict[int, AddressSet]] = [
            {v: AddressSet.from_ranges(r) for v, r in piece.items()} for piece in pieces
        ]
        if not some:  # the common case: one shared table of zeros, read only
            self.port_interval = _NO_INTERVALS
            return
        self.port_interval = memoryview(bytearray(4 * 65536)).cast("I")
        for k in range(1, len(cuts)):
            if any(self.by_interval[k].values()):
                for port in range(cuts[k - 1], cuts[k]):
                    self.port_interval[port] = k

    def __bool__(self) -> bool:
        return any(self.all_ports.values()) or len(self.bounds) > 0

    def contains(self, version: int, address: int, port: int) -> bool:
        """Whether ``address`` (an int) on ``port`` is excluded."""
        if address in self.all_ports[version]:
            return True
        k = self.port_interval[port]
        return k != 0 and address in self.by_interval[k][version]

    def intervals_of(self, ports: tuple[tuple[int, int], ...]) -> dict[int, int]:
        """For ports (inclusive ranges, repeats counted), how many fall in each interval id
        that excludes something: ``{interval id: number of ports}``."""
        cuts = self.bounds
        found: dict[int, int] = {}
        for low, high in ports:
            for k in range(bisect_right(cuts, low), bisect_right(cuts, high) + 1):
                if 1 <= k < len(cuts):
                    overlap = min(high + 1, cuts[k]) - max(low, cuts[k - 1])
                    if overlap > 0 and self.port_interval[cuts[k - 1]] == k:
                        found[k] = found.get(k, 0) + overlap
        return found


def _covers_all(ports: tuple[tuple[int, int], ...]) -> bool:
    covered = AddressSet.from_ranges((low, high + 1) for low, high in ports)
    return covered.starts == [1] and covered.ends == [65536]


def explain_hits(hits: Counter[str] | dict[str, int]) -> list[str]:
    """For a summary: one line per blocklist entry that was hit, most hits first, e.g.
    ``"Private-Use (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16; RFC 1918): 65536"``."""
    lines = []
    for name, count in sorted(hits.items(), key=lambda item: (-item[1], item[0])):
        entries = [entry for entry in (*IPV4_SPECIAL, *IPV6_SPECIAL) if entry.name == name]
        networks = ", ".join(entry.network for entry in entries)
        rfcs = ", ".join(dict.fromkeys(entry.rfc for entry in entries))
        lines.append(f"{name} ({networks}; {rfcs}): {count}")
    return lines
