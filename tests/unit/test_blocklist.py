"""The built-in blocklist and the address sets behind it and --exclude."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.blocklist import (
    IPV4_SPECIAL,
    IPV6_SPECIAL,
    AddressSet,
    Blocklist,
    Exclusions,
    network_range,
)
from prober.errors import UsageError


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def v6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


def test_every_registry_entry_is_a_network_with_a_name_and_an_rfc() -> None:
    for entries, version in ((IPV4_SPECIAL, 4), (IPV6_SPECIAL, 6)):
        for entry in entries:
            assert ipaddress.ip_network(entry.network).version == version  # strict: no host bits
            assert entry.name and entry.rfc.startswith("RFC ")
    networks = {entry.network for entry in IPV4_SPECIAL + IPV6_SPECIAL}
    # zmap's default blocklist.conf, and what the issue names.
    for must in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
                 "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24",
                 "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
                 "240.0.0.0/4", "255.255.255.255/32", "224.0.0.0/4", "ff00::/8", "fe80::/10",
                 "fc00::/7", "2001:db8::/32", "2001:2::/48", "::1/128"):
        assert must in networks


@pytest.mark.parametrize(
    ("version", "address", "name"),
    [
        (4, "10.1.2.3", "Private-Use"),
        (4, "192.0.0.8", "IPv4 dummy address"),  # the most specific entry names it
        (4, "192.0.0.100", "IETF Protocol Assignments"),
        (4, "224.0.0.1", "Multicast"),
        (4, "239.255.255.255", "Multicast"),
        (4, "255.255.255.255", "Limited Broadcast"),
        (4, "250.1.1.1", "Reserved"),
        (4, "198.19.255.255", "Benchmarking"),
        (4, "8.8.8.8", None),
        (4, "198.20.0.0", None),
        (6, "ff02::1", "Multicast"),
        (6, "2001:2::5", "Benchmarking"),
        (6, "2001:1ff::1", "IETF Protocol Assignments"),
        (6, "2606:4700::1111", None),
    ],
)
def test_entries_are_found_by_address(version: int, address: str, name: str | None) -> None:
    value = v4(address) if version == 4 else v6(address)
    blocklist = Blocklist()
    assert blocklist.entry_name(version, value) == name
    assert ((version, value) in blocklist) == (name is not None)


def test_exempt_networks_are_spared_and_the_rest_of_their_entries_kept() -> None:
    blocklist = Blocklist(["198.18.0.0/15", "2001:2::/48"])
    assert (4, v4("198.18.0.18")) not in blocklist
    assert (6, v6("2001:2::2")) not in blocklist
    assert (6, v6("2001:3::1")) in blocklist  # still AMT
    assert (6, v6("2001:1::1")) in blocklist  # the /23 around the lab's /48 still blocked
    partial = Blocklist(["192.0.0.0/30"])
    assert (4, v4("192.0.0.2")) not in partial
    assert partial.entry_name(4, v4("192.0.0.5")) == "IPv4 Service Continuity Prefix"


def test_a_bad_exempt_network_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="invalid network"):
        Blocklist(["nonsense"])
    assert network_range("198.18.0.1/24") == (4, v4("198.18.0.0"), v4("198.18.1.0"))


def test_within_clips_with_labels() -> None:
    within = Blocklist().within(4, v4("192.0.0.0"), v4("192.0.0.16"))
    assert within.starts[0] == v4("192.0.0.0") and within.ends[-1] == v4("192.0.0.16")
    assert within.label_of(v4("192.0.0.9")) == "Port Control Protocol Anycast"
    assert within.label_of(v4("192.0.0.12")) == "IETF Protocol Assignments"
    assert not Blocklist().within(4, v4("8.8.8.0"), v4("8.8.9.0"))


ranges = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=8,
)


def members(ranges_: list[tuple[int, int]]) -> set[int]:
    return {x for start, end in ranges_ for x in range(start, end)}


@settings(max_examples=200, deadline=None)
@given(a=ranges, b=ranges, low=st.integers(0, 250), width=st.integers(0, 100))
def test_address_set_operations_agree_with_python_sets(
    a: list[tuple[int, int]], b: list[tuple[int, int]], low: int, width: int
) -> None:
    sa, sb = AddressSet.from_ranges(a), AddressSet.from_ranges(b)
    ma, mb = members(a), members(b)
    assert members(list(sa.ranges())) == ma and sa.size == len(ma)
    assert all((x in sa) == (x in ma) for x in range(-1, 260))
    assert members(list((sa | sb).ranges())) == ma | mb
    assert members(list((sa & sb).ranges())) == ma & mb
    assert members(list((sa - sb).ranges())) == ma - mb
    clipped = sa.clip(low, low + width)
    assert members(list(clipped.ranges())) == {x for x in ma if low <= x < low + width}
    # Normalised: sorted, disjoint, not even touching.
    assert all(e < s for e, s in zip(sa.ends, sa.starts[1:], strict=False))


def test_exclusions_by_address_and_by_port() -> None:
    exclusions = Exclusions([
        (4, v4("198.18.0.0"), v4("198.18.1.0"), None),  # every port
        (4, v4("198.18.5.5"), v4("198.18.5.6"), ((80, 80), (8000, 8010))),
        (4, v4("198.18.5.0"), v4("198.18.6.0"), ((8005, 8020),)),
        (6, v6("2001:2::"), v6("2001:2::10"), ((1, 65535),)),  # all ports, written out
    ])
    assert exclusions
    assert exclusions.contains(4, v4("198.18.0.7"), 12345)
    assert exclusions.contains(4, v4("198.18.5.5"), 80)
    assert not exclusions.contains(4, v4("198.18.5.5"), 81)
    assert exclusions.contains(4, v4("198.18.5.5"), 8001)
    assert not exclusions.contains(4, v4("198.18.5.6"), 8001)
    assert exclusions.contains(4, v4("198.18.5.6"), 8005)
    assert exclusions.contains(4, v4("198.18.5.200"), 8020)
    assert not exclusions.contains(4, v4("198.18.5.200"), 8021)
    assert exclusions.contains(6, v6("2001:2::f"), 1)
    assert not exclusions.contains(6, v6("2001:2::10"), 1)
    counts = exclusions.intervals_of(((80, 80), (8000, 8100)))
    assert sum(counts.values()) == 1 + 21  # 80, and 8000..8020


def test_no_exclusions_is_false() -> None:
    assert not Exclusions()
    assert not Exclusions().contains(4, 1, 80)
