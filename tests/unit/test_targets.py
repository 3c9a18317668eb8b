"""parse_target: what a user types as a target, and what is refused before any packet."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prober.api import resolve
from prober.errors import ResolutionError, UsageError
from prober.targets import Target, parse_target


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.18.0.2:80", Target("198.18.0.2", 80)),
        ("[2001:2::2]:443", Target("2001:2::2", 443)),
        ("lab-open.test:8080", Target("lab-open.test", 8080)),
        (" 198.18.0.2:1 ", Target("198.18.0.2", 1)),
        # Names pass to the resolver as they are: a trailing dot, underscores, IDNA.
        ("lab-open.test.:80", Target("lab-open.test.", 80)),
        ("_http._tcp.lab.test:80", Target("_http._tcp.lab.test", 80)),
        ("bücher.test:80", Target("bücher.test", 80)),
        ("1e3.test:80", Target("1e3.test", 80)),
        ("198.18.0.2:080", Target("198.18.0.2", 80)),
        ("[::ffff:198.18.0.2]:80", Target("::ffff:198.18.0.2", 80)),
    ],
)
def test_valid_targets(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty target"),
        ("198.18.0.2", "a port is required"),
        ("198.18.0.2:", "invalid port"),
        ("198.18.0.2:0", "invalid port 0"),
        ("198.18.0.2:65536", "invalid port 65536"),
        ("198.18.0.2:http", "invalid port 'http'"),
        (":80", "the host is missing"),
        ("2001:2::2", "a port is required, e.g. [2001:2::2]:80"),
        ("2001:zz::2:80", "put an IPv6 address in brackets"),
        ("[2001:2::2]", "a port is required"),
        ("[2001:2::2]80", "a port is required"),
        ("[2001:2::2:80", "missing ']'"),
        ("[198.18.0.2]:80", "is not an IPv6 address"),
        # Near-addresses are invalid addresses, never names for the resolver (which would ask
        # DNS about 999.1.1.1, and read 1.2.3 as 1.2.0.3 and 0x7f.1 as 127.0.0.1).
        ("999.1.1.1:80", "'999.1.1.1' is not an IPv4 address"),
        ("999.1.1.1", "'999.1.1.1' is not an IPv4 address"),
        ("1.2.3:80", "'1.2.3' is not an IPv4 address"),
        ("1.2.3.4.5:80", "'1.2.3.4.5' is not an IPv4 address"),
        ("198.18.0.256:80", "is not an IPv4 address"),
        ("01.2.3.4:80", "is not an IPv4 address"),
        ("1.2.3.4.:80", "is not an IPv4 address"),
        ("0x7f.1:80", "'0x7f.1' is not an IPv4 address"),
        ("4294967295:80", "is not an IPv4 address"),
        ("[::1", "missing ']'"),
        ("[::1]:", "a port is required"),
        ("[]:80", "'' is not an IPv6 address"),
        ("[fe80::1%eth0]:80", "addresses with a zone (%eth0) are not supported"),
        ("fe80::1%eth0:80", "put an IPv6 address in brackets"),
        ("198.18.0.2:+80", "invalid port '+80'"),
        ("198.18.0.2:\u0668\u0660", "invalid port"),  # Arabic-Indic "80"
        ("198.18.0.0/24:80", "'/' cannot be part of a host name"),
        ("lab open:80", "' ' cannot be part of a host name"),
        ("lab..test:80", "is not a host name"),
        ("-lab.test:80", "is not a host name"),
        ("x" * 64 + ".test:80", "is not a host name"),
        ("a." * 127 + "test:80", "is not a host name"),
    ],
)
def test_invalid_targets_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=None) as info:
        parse_target(text)
    assert complaint in str(info.value)
    assert "\n" not in str(info.value)


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_usage_error(text: str) -> None:
    try:
        target = parse_target(text)
    except UsageError:
        return
    assert 1 <= target.port <= 65535 and target.host


@given(st.from_regex(r"[0-9.]{0,8}[0-9][0-9.]{0,8}", fullmatch=True))
def test_digits_and_dots_are_an_ipv4_address_or_refused(host: str) -> None:
    """Never a name to resolve: whatever the resolver would make of it."""
    try:
        target = parse_target(f"{host}:80")
    except UsageError as error:
        assert "is not an IPv4 address" in str(error) or "the host is missing" in str(error)
        return
    assert isinstance(target.literal, ipaddress.IPv4Address)
    assert str(target.literal) == host


@given(st.ip_addresses())
def test_every_address_parses_back(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    text = f"[{address}]:80" if address.version == 6 else f"{address}:80"
    if address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255":
        with pytest.raises(UsageError):  # no single peer answers from there
            parse_target(text)
        return
    assert parse_target(text).literal == address


@pytest.mark.parametrize("host", ["999.1.1.1", "1.2.3", "0x7f.1", "lab..test"])
def test_the_library_refuses_near_addresses_without_asking_the_resolver(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_resolver(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the resolver was asked about {args[0]!r}")

    monkeypatch.setattr(socket, "getaddrinfo", no_resolver)
    with pytest.raises(ResolutionError, match="is not"):
        asyncio.run(resolve(host))


@pytest.mark.parametrize("text", ["0.0.0.0:80", "[::]:80", "224.0.0.1:80", "[ff02::1]:80",
                                  "255.255.255.255:80"])
def test_an_address_no_single_peer_answers_from_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match=r"unspecified|multicast|broadcast"):
        parse_target(text)


def test_a_name_that_resolves_to_the_unspecified_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An ad-blocking resolver answers 0.0.0.0; Linux would deliver the SYN to this host.
    import asyncio
    import socket

    from prober.api import resolve
    from prober.errors import ResolutionError

    def hidden(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("0.0.0.0", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", hidden)
    with pytest.raises(ResolutionError, match=r"'ads\.example' resolves to 0\.0\.0\.0, the "
                       r"unspecified address"):
        asyncio.run(resolve("ads.example"))
