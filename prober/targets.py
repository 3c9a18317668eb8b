"""Parsing of targets as users write them: ``host:port``, ``[v6]:port``, and a scan's CIDR
blocks, port lists and targets files (streamed). Pure, no I/O."""

from __future__ import annotations

import codecs
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prober.errors import UsageError


@dataclass(frozen=True, slots=True)
class Target:
    host: str  # a name or an address literal, without brackets
    port: int

    @property
    def literal(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an address, or None when it is a name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()):  # not "+80", nor digits of other scripts
        raise UsageError(f"invalid port {text!r}: expected a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"invalid port {port}: expected a number from 1 to 65535")
    return port


def parse_target(text: str) -> Target:
    """Parse ``HOST:PORT``; an IPv6 literal goes in brackets: ``[2001:2::2]:80``.

    Raises:
        UsageError: with a one-line explanation of what is wrong.
    """
    text = text.strip()
    if not text:
        raise UsageError("empty target: expected HOST:PORT")
    if text.startswith("["):
        host, rest = _split_brackets(text)
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"invalid target {text!r}: {host!r} is not an IPv6 address") from None
        if address.scope_id is not None:
            # The engine sends on the interface the route picks; a zone would need its own.
            raise UsageError(
                f"invalid target {text!r}: addresses with a zone (%{address.scope_id}) "
                "are not supported"
            )
        if not rest.startswith(":") or len(rest) == 1:
            raise UsageError(f"invalid target {text!r}: a port is required, e.g. [{host}]:80")
        check_peer_address(address, text)
        return Target(host, parse_port(rest[1:]))
    if text.count(":") > 1:
        try:
            bare = ipaddress.IPv6Address(text)
        except ValueError:
            pass
        else:  # (with a zone, "fe80::1%eth0:80" reads as the zone "eth0:80")
            if bare.scope_id is None:
                raise UsageError(
                    f"invalid target {text!r}: a port is required, e.g. [{text}]:80"
                )
        raise UsageError(
            f"invalid target {text!r}: put an IPv6 address in brackets, e.g. [2001:2::2]:80"
        )
    host, sep, port = text.rpartition(":")
    if not sep:
        check_host(text, text)
        raise UsageError(f"invalid target {text!r}: a port is required, e.g. {text}:80")
    if not host:
        raise UsageError(f"invalid target {text!r}: the host is missing")
    check_host(host, text)
    target = Target(host, parse_port(port))
    if target.literal is not None:
        check_peer_address(target.literal, text)
    return target


def peer_address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why no single TCP peer answers from ``address``, or None: the unspecified address
    (0.0.0.0, ::, which Linux delivers to the local host), multicast, and IPv4's limited
    broadcast. A SYN there reaches no host, every host, or this one; none of them is the
    target meant (an ad-blocking resolver answers 0.0.0.0 for a name it hides)."""
    if address.is_unspecified:
        return "the unspecified address, not a host"
    if address.is_multicast:
        return "a multicast address (TCP needs one host)"
    if address == _LIMITED_BROADCAST:
        return "the broadcast address (TCP needs one host)"
    return None


def check_peer_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                       text: str | None = None) -> None:
    """Refuse an address ``peer_address_problem`` finds a problem with.

    Raises:
        UsageError: with a one-line explanation.
    """
    problem = peer_address_problem(address)
    if problem is not None:
        what = "" if text is None else f"invalid target {text!r}: "
        raise UsageError(f"{what}{address} is {problem}")


def _split_brackets(text: str) -> tuple[str, str]:
    """``[HOST]REST`` as (HOST, REST), for targets that start with '['."""
    close = text.find("]")
    if close < 0:
        raise UsageError(f"invalid target {text!r}: missing ']' after the IPv6 address")
    return text[1:close], text[close + 1 :]


# A host name's labels (RFC 1123 letters, digits, hyphens; underscores and non-ASCII letters
# pass too, for SRV-style names and IDNA, which the resolver encodes).
_MAX_NAME = 253
_MAX_LABEL = 63
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")  # a part of an address, as inet_aton reads it


def check_host(host: str, text: str | None = None) -> None:
    """An IPv4 literal must be a whole one; anything else must be a well-formed name.
    ``text`` is the target as the user wrote it, for the message.

    A name whose last label is all digits is an IPv4 address mistyped, never a name (no
    top-level domain is numeric, RFC 3696 section 2): ``999.1.1.1``, ``1.2.3`` and
    ``1.2.3.4.5`` are refused here instead of going to the resolver, which would send
    ``999.1.1.1`` to DNS and read ``1.2.3`` as 1.2.0.3 (inet_aton's shorthand) or ``0x7f.1``
    as 127.0.0.1.

    Raises:
        UsageError: with a one-line explanation of what is wrong.
    """
    what = "" if text is None else f"invalid target {text!r}: "
    labels = host.removesuffix(".").split(".")
    if _NUMBER.fullmatch(next((label for label in reversed(labels) if label), "")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise UsageError(
                f"{what}{host!r} is not an IPv4 address "
                "(four numbers from 0 to 255, e.g. 198.18.0.18)"
            ) from None
        return
    bad = next((c for c in host if not (c.isalnum() or c in "-._")), None)
    if bad is not None:
        raise UsageError(f"{what}{bad!r} cannot be part of a host name or IPv4 address")
    encoded = host
    if not host.isascii():
        try:  # as the resolver will encode it (socket.getaddrinfo's IDNA codec)
            encoded = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise UsageError(f"{what}{host!r} is not a host name") from None
        labels = encoded.removesuffix(".").split(".")
    if len(encoded) > _MAX_NAME or any(
        not 1 <= len(label) <= _MAX_LABEL or label.startswith("-") or label.endswith("-")
        for label in labels
    ):
        raise UsageError(
            f"{what}{host!r} is not a host name (labels of 1 to "
            f"{_MAX_LABEL} characters between dots, not beginning or ending with '-', "
            f"{_MAX_NAME} characters in all)"
        )


def parse_escaped(text: str) -> bytes:
    r"""Bytes from text with C-style escapes: \r\n, \t, \x00, \\.

    Characters outside Latin-1 are taken as UTF-8.

    Raises:
        UsageError: a malformed escape.
    """
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    try:
        decoded: bytes = codecs.escape_decode(raw)[0]
    except ValueError as exc:
        raise UsageError(f"invalid escape in {text!r}: {exc}") from None
    return decoded


# -- scan targets ------------------------------------------------------------------------------
# `prober scan` takes what people write for a batch: `host:port`, `[v6]:port`, `host` (with
# -p), CIDR blocks (`198.18.0.0/24:80`, `[2001:2::/120]:80`), and port lists and ranges
# (`host:22,80,8000-8100`). A block is never expanded: a spec is indexed, so a /8 on every port
# costs no more memory than one address (issue 8).
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class PortRanges:
    """Ports as inclusive ranges in the order written, e.g. ``22,80,8000-8100``."""

    ranges: tuple[tuple[int, int], ...]

    @property
    def size(self) -> int:
        return sum(high - low + 1 for low, high in self.ranges)

    def __getitem__(self, index: int) -> int:
        for low, high in self.ranges:
            width = high - low + 1
            if index < width:
                return low + index
            index -= width
        raise IndexError("port index out of range")


def parse_ports(text: str) -> PortRanges:
    """Parse a port list: numbers and ``LOW-HIGH`` ranges separated by commas.

    Raises:
        UsageError: with a one-line explanation of what is wrong.
    """
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        low_text, dash, high_text = part.strip().partition("-")
        low = parse_port(low_text)
        high = parse_port(high_text) if dash else low
        if high < low:
            raise UsageError(f"invalid port range {part.strip()!r}: {high} is below {low}")
        ranges.append((low, high))
    return PortRanges(tuple(ranges))


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One line of targets: a name, or a block of addresses (one address is a /32 or /128),
    on some ports. Indexed lazily: element ``i`` is (address, port), ports varying fastest."""

    ports: PortRanges
    network: Network | None = None
    name: str | None = None  # a host name, resolved when it is probed

    @property
    def size(self) -> int:
        addresses = 1 if self.network is None else self.network.num_addresses
        return addresses * self.ports.size

    def address_and_port(self, index: int) -> tuple[str, int]:
        """The host (an address literal, or the name) and port of element ``index``."""
        if not 0 <= index < self.size:
            raise IndexError(f"element {index} outside 0..{self.size - 1}")
        address_index, port_index = divmod(index, self.ports.size)
        port = self.ports[port_index]
        if self.network is None:
            assert self.name is not None
            return self.name, port
        return str(self.network.network_address + address_index), port


def parse_target_spec(text: str, default_ports: PortRanges | None = None) -> TargetSpec:
    """Parse one scan target: ``HOST[:PORTS]``, ``[V6[/LEN]][:PORTS]``, ``V4/LEN[:PORTS]``.

    ``default_ports`` (``-p``) serves a target written without ports.

    Raises:
        UsageError: with a one-line explanation of what is wrong.
    """
    text = text.strip()
    if not text:
        raise UsageError("empty target: expected HOST:PORTS, a CIDR block or HOST with -p")
    if text.startswith("["):
        host, rest = _split_brackets(text)
        if rest and not rest.startswith(":"):
            raise UsageError(f"invalid target {text!r}: expected ':PORTS' after ']'")
        ports_text = rest[1:] if rest else None
        network = _parse_network(host, text, version=6)
    elif text.count(":") > 1:
        raise UsageError(
            f"invalid target {text!r}: put an IPv6 address in brackets, e.g. [2001:2::2]:80"
        )
    else:
        host, sep, ports_text_or_empty = text.partition(":")
        ports_text = ports_text_or_empty if sep else None
        if not host:
            raise UsageError(f"invalid target {text!r}: the host is missing")
        if "/" in host or _NUMBER.fullmatch(host.rsplit(".", 1)[-1] or "x"):
            network = _parse_network(host, text, version=4)
        else:
            check_host(host, text)
            network = None
    if ports_text is not None:
        if not ports_text:
            raise UsageError(f"invalid target {text!r}: ports are missing after ':'")
        try:
            ports = parse_ports(ports_text)
        except UsageError as exc:
            raise UsageError(f"invalid target {text!r}: {exc}") from None
    elif default_ports is not None:
        ports = default_ports
    else:
        raise UsageError(f"invalid target {text!r}: no port (write {text}:80, or give -p)")
    if network is None:
        return TargetSpec(ports, name=host)
    return TargetSpec(ports, network=network)


def _parse_network(host: str, text: str, version: int) -> Network:
    if version == 4:
        check_host(host.partition("/")[0], text)
    try:
        network = ipaddress.ip_network(host, strict=True)
    except ValueError as exc:
        raise UsageError(f"invalid target {text!r}: {exc}") from None
    if network.version != version:
        raise UsageError(f"invalid target {text!r}: {host!r} is not an IPv{version} address")
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.scope_id:
        raise UsageError(f"invalid target {text!r}: addresses with a zone are not supported")
    return network


def iter_target_lines(
    lines: Iterable[str],
    source: str,
    default_ports: PortRanges | None = None,
    on_bad: Callable[[str], None] | None = None,
) -> Iterator[TargetSpec]:
    """The targets of a file or stream, one per line, read lazily (nothing is kept).

    Blank lines and ``#`` comments (whole lines or after a target) are skipped. A bad line
    raises ``UsageError("SOURCE:LINE: ...")``, or, with ``on_bad``, is passed to it in that
    form and skipped (``--skip-bad``).
    """
    for number, line in enumerate(lines, start=1):
        text = line.partition("#")[0].strip()
        if not text:
            continue
        try:
            yield parse_target_spec(text, default_ports)
        except UsageError as exc:
            message = f"{source}:{number}: {exc}"
            if on_bad is None:
                raise UsageError(message) from None
            on_bad(message)


# The commonest line of a big targets file, `A.B.C.D:PORT`, read without ipaddress (which
# costs ~11 us a line): one regular expression and four int() calls.
_PLAIN_IPV4 = re.compile(
    r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})(?::([0-9]{1,5}))?"
)


def parse_plain_ipv4(text: str) -> tuple[int, int] | None:
    """The fast path of parse_target_spec for ``A.B.C.D:PORT`` and ``A.B.C.D``.

    Returns:
        ``(address as an int, port)``, the port 0 when none is written; None for any
        other text, or one this path does not decide (leading zeros, numbers out of range):
        parse_target_spec then reads it, or explains what is wrong.
    """
    match = _PLAIN_IPV4.fullmatch(text)
    if match is None:
        return None
    a, b, c, d, port_text = match.groups()
    if (a[0] == "0" and len(a) > 1) or (b[0] == "0" and len(b) > 1) or (
        (c[0] == "0" and len(c) > 1) or (d[0] == "0" and len(d) > 1)
    ):
        return None  # ipaddress refuses leading zeros (octal or decimal?): let it explain
    ia, ib, ic, id_ = int(a), int(b), int(c), int(d)
    if ia > 255 or ib > 255 or ic > 255 or id_ > 255:
        return None
    address = (ia << 24) | (ib << 16) | (ic << 8) | id_
    if port_text is None:
        return address, 0
    port = int(port_text)
    if not 1 <= port <= 65535:
        return None
    return address, port
