"""Decoded packets: what the parser returns and what the probes' state machines consume.

Addresses stay as packed bytes (4 or 16) because replies are routed on them; `ipaddress`
objects are made only where a human or JSON needs them.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from enum import Enum, IntFlag

IPPROTO_TCP = 6
IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58


class TcpFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80

    def compact(self) -> str:
        """Flags as tcpdump letters, e.g. ``S.`` for SYN/ACK, ``R`` for RST, ``F.`` for FIN/ACK."""
        return _compact(int(self))


_FLAG_LETTERS = (
    (TcpFlags.SYN, "S"),
    (TcpFlags.FIN, "F"),
    (TcpFlags.RST, "R"),
    (TcpFlags.PSH, "P"),
    (TcpFlags.URG, "U"),
    (TcpFlags.ECE, "E"),
    (TcpFlags.CWR, "W"),
)


@functools.cache
def _compact(value: int) -> str:
    # Cached: 256 values at most, and enum arithmetic costs ~2 µs per flag (every reply's
    # flags are rendered once per result).
    letters = "".join(letter for flag, letter in _FLAG_LETTERS if value & flag)
    if value & TcpFlags.ACK:
        letters += "."
    return letters or "none"


class MalformedPacket(ValueError):
    """The bytes are not a well-formed IPv4/IPv6 packet (truncated, bad lengths or offsets)."""


@dataclass(frozen=True, slots=True)
class TcpOptions:
    """The TCP options of a segment, decoded.

    ``order`` lists the options as they appear, one letter each: M (MSS), S (SACK permitted),
    K (SACK blocks), T (timestamps), N (NOP), W (window scale), E (end of list), and ``?<kind>``
    for any other kind. Linux's SYN/ACK reads ``MSTNW`` when all are on.
    """

    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    timestamp: tuple[int, int] | None = None  # (TSval, TSecr)
    order: str = ""


@dataclass(frozen=True, slots=True)
class TcpSegment:
    sport: int
    dport: int
    seq: int
    ack: int
    flags: TcpFlags
    window: int
    options: TcpOptions
    payload: bytes


@dataclass(frozen=True, slots=True)
class QuotedHeader:
    """The start of the original packet that an ICMP error quotes (RFC 792, RFC 4443)."""

    src: bytes
    dst: bytes
    protocol: int
    sport: int | None  # None when fewer than 4 transport bytes are quoted
    dport: int | None
    seq: int | None  # TCP sequence number, None when fewer than 8 bytes are quoted


class IcmpKind(Enum):
    """What an ICMP(v6) error can say about a probe.

    Only the two errors of reachability may decide a verdict (RFC 1122 3.2.2.1 and 4.2.3.9,
    RFC 4443 3.1 and 3.3): the packet cannot reach its port (destination unreachable), or died
    on the way (time exceeded). Every other error quoting our segment (source quench, redirect,
    parameter problem, packet too big) says the path had something to say, not that the port
    is filtered; probes count and show those.
    """

    UNREACHABLE = "unreachable"
    TIME_EXCEEDED = "time-exceeded"
    OTHER = "other"


ICMP_UNREACHABLE_V4 = 3
ICMP_TIME_EXCEEDED_V4 = 11
ICMP_UNREACHABLE_V6 = 1
ICMP_TIME_EXCEEDED_V6 = 3


def icmp_kind(version: int, icmp_type: int) -> IcmpKind:
    """The kind of an ICMP (``version`` 4) or ICMPv6 (6) error of type ``icmp_type``."""
    if version == 4:
        unreachable, expired = ICMP_UNREACHABLE_V4, ICMP_TIME_EXCEEDED_V4
    else:
        unreachable, expired = ICMP_UNREACHABLE_V6, ICMP_TIME_EXCEEDED_V6
    if icmp_type == unreachable:
        return IcmpKind.UNREACHABLE
    if icmp_type == expired:
        return IcmpKind.TIME_EXCEEDED
    return IcmpKind.OTHER


# Names of the ICMP(v6) errors the parser decodes (RFC 792, 1812, 4443), for people to read.
_ICMP_NAMES: dict[tuple[int, int], str] = {
    (4, ICMP_UNREACHABLE_V4): "destination-unreachable",
    (4, 4): "source-quench",
    (4, 5): "redirect",
    (4, ICMP_TIME_EXCEEDED_V4): "time-exceeded",
    (4, 12): "parameter-problem",
    (6, ICMP_UNREACHABLE_V6): "destination-unreachable",
    (6, 2): "packet-too-big",
    (6, ICMP_TIME_EXCEEDED_V6): "time-exceeded",
    (6, 4): "parameter-problem",
}


def icmp_name(version: int, icmp_type: int) -> str:
    """A short name of an ICMP (``version`` 4) or ICMPv6 (6) error type, e.g. ``redirect``."""
    return _ICMP_NAMES.get((version, icmp_type), f"type-{icmp_type}")


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP or ICMPv6 error message: destination unreachable, time exceeded, and the like."""

    type: int
    code: int
    quoted: QuotedHeader
    kind: IcmpKind = IcmpKind.OTHER  # set by the parser from the IP version and type

    @property
    def decides_verdict(self) -> bool:
        """Whether this error may decide a probe's verdict (see IcmpKind)."""
        return self.kind is not IcmpKind.OTHER


@dataclass(frozen=True, slots=True)
class Packet:
    """One IP packet as captured, starting at the network header.

    Exactly one of ``tcp`` and ``icmp`` is set for packets prober cares about; both are None
    for other protocols and for ICMP messages that are not errors.
    """

    version: int  # 4 or 6
    src: bytes
    dst: bytes
    ttl: int  # hop limit for IPv6
    ip_id: int | None  # None for IPv6
    length: int  # total length on the wire, IP header included
    tcp: TcpSegment | None = None
    icmp: IcmpError | None = None
    # The captured bytes, kept for pcap output (a reference, not a copy, for bytes input).
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def src_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.src)

    @property
    def dst_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.dst)
