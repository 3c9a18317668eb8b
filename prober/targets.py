"""Parsing of targets as users write them: ``host:port``, ``[v6]:port``. Pure, no I/O."""

from __future__ import annotations

import codecs
import ipaddress
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


def parse_port(text: str) -> int:
    if not text.isdigit():
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
        close = text.find("]")
        if close < 0:
            raise UsageError(f"invalid target {text!r}: missing ']' after the IPv6 address")
        host = text[1:close]
        rest = text[close + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"invalid target {text!r}: {host!r} is not an IPv6 address") from None
        if not rest.startswith(":") or len(rest) == 1:
            raise UsageError(f"invalid target {text!r}: a port is required, e.g. [{host}]:80")
        return Target(host, parse_port(rest[1:]))
    if text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            pass
        else:
            raise UsageError(f"invalid target {text!r}: a port is required, e.g. [{text}]:80")
        raise UsageError(
            f"invalid target {text!r}: put an IPv6 address in brackets, e.g. [2001:2::2]:80"
        )
    host, sep, port = text.rpartition(":")
    if not sep:
        raise UsageError(f"invalid target {text!r}: a port is required, e.g. {text}:80")
    if not host:
        raise UsageError(f"invalid target {text!r}: the host is missing")
    return Target(host, parse_port(port))


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
