"""Decode captured packets (starting at the IP header) into ``prober.core.wire`` objects.

This is the receive hot path: precompiled ``struct.Struct`` objects, addresses kept as bytes,
no ``ipaddress`` objects. Checksums are never checked: captures on veth and loopback carry
unfinished (offloaded) checksums.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from prober.core.wire import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IcmpError,
    MalformedPacket,
    Packet,
    QuotedHeader,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    icmp_kind,
)

__all__ = ["parse_packet"]

# version/IHL, total length, id, flags/fragment offset, ttl, protocol, (checksum), src, dst
_IPV4: Final = struct.Struct("!BxHHHBB2x4s4s")
# payload length, next header, hop limit, src, dst (after the 4 version/class/label bytes)
_IPV6: Final = struct.Struct("!4xHBB16s16s")
# ports, seq, ack, data offset byte, flags byte, window
_TCP: Final = struct.Struct("!HHIIBBH")
_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")
_PORTS: Final = struct.Struct("!HH")
_PORTS_SEQ: Final = struct.Struct("!HHI")
_TWO_U32: Final = struct.Struct("!II")
# Fast paths for the layouts Linux sends most: SYN/ACK "MSTNW" (20 bytes), then "NNT" (12).
_MSTNW: Final = struct.Struct("!HHIIII")  # 0x0204, MSS, 0x0402080A, TSval, TSecr, 0x010303WS
_NNT: Final = struct.Struct("!III")  # 0x0101080A, TSval, TSecr

_IPV6_HOP_BY_HOP: Final = 0
_IPV6_ROUTING: Final = 43
_IPV6_FRAGMENT: Final = 44
_IPV6_AH: Final = 51
_IPV6_DEST_OPTIONS: Final = 60
_IPV6_EXTENSIONS: Final = frozenset(
    {_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_FRAGMENT, _IPV6_AH, _IPV6_DEST_OPTIONS}
)

_ICMP_ERRORS: Final = frozenset({3, 4, 5, 11, 12})  # unreach, quench, redirect, time, param
_ICMPV6_ERRORS: Final = frozenset({1, 2, 3, 4})  # unreach, too big, time, param
# Transport protocols whose header starts with source and destination ports:
# TCP, UDP, DCCP, SCTP, UDP-Lite.
_PORTED: Final = frozenset({IPPROTO_TCP, 17, 33, 132, 136})

_FLAGS: Final = tuple(TcpFlags(i) for i in range(256))  # IntFlag() is slow per packet
_NO_OPTIONS: Final = TcpOptions()
_SACK_LENGTHS: Final = frozenset({10, 18, 26, 34})  # 1 to 4 blocks


def parse_packet(data: bytes | memoryview) -> Packet:
    """Decode one IPv4 or IPv6 packet; raise ``MalformedPacket`` if it is truncated or broken.

    Protocols other than TCP and ICMP give a Packet with ``tcp`` and ``icmp`` None, as do
    ICMP messages that are not errors and non-first fragments.
    """
    try:
        if not data:
            raise MalformedPacket("empty packet")
        version = data[0] >> 4
        if version == 4:
            return _parse_ipv4(data)
        if version == 6:
            return _parse_ipv6(data)
        raise MalformedPacket(f"IP version {version}")
    except (struct.error, IndexError) as exc:  # belt and braces: explicit checks come first
        raise MalformedPacket(str(exc)) from exc


def _parse_ipv4(data: bytes | memoryview) -> Packet:
    if len(data) < 20:
        raise MalformedPacket("truncated IPv4 header")
    vihl, total, ip_id, frag, ttl, proto, src, dst = _IPV4.unpack_from(data)
    ihl = (vihl & 0x0F) << 2
    if ihl < 20 or ihl > len(data):
        raise MalformedPacket(f"bad IPv4 header length {ihl}")
    if total < ihl:
        raise MalformedPacket(f"IPv4 total length {total} < header length {ihl}")
    end = min(total, len(data))  # captures may be truncated, Ethernet may pad
    tcp = icmp = None
    if not frag & 0x1FFF:  # later fragments carry no transport header
        if proto == IPPROTO_TCP:
            tcp = _parse_tcp(data, ihl, end)
        elif proto == IPPROTO_ICMP:
            icmp = _parse_icmp(data, ihl, end, _ICMP_ERRORS, _quote_ipv4, 4)
    return Packet(4, src, dst, ttl, ip_id, total, tcp, icmp, bytes(data))


def _parse_ipv6(data: bytes | memoryview) -> Packet:
    if len(data) < 40:
        raise MalformedPacket("truncated IPv6 header")
    plen, nh, hlim, src, dst = _IPV6.unpack_from(data)
    end = min(40 + plen, len(data))
    off = 40
    first = True  # later fragments carry no transport header
    if nh in _IPV6_EXTENSIONS:
        off, nh, first = _skip_ipv6_extensions(data, off, end, nh, strict=True)
    tcp = icmp = None
    if nh == IPPROTO_TCP and first:
        tcp = _parse_tcp(data, off, end)
    elif nh == IPPROTO_ICMPV6 and first:
        icmp = _parse_icmp(data, off, end, _ICMPV6_ERRORS, _quote_ipv6, 6)
    return Packet(6, src, dst, hlim, None, 40 + plen, tcp, icmp, bytes(data))


def _skip_ipv6_extensions(
    data: bytes | memoryview, off: int, end: int, nh: int, *, strict: bool
) -> tuple[int, int, bool]:
    """Walk IPv6 extension headers from ``off``: (offset, protocol, transport follows).

    The walk stops without a transport header at a non-first fragment and, unless
    ``strict`` (which raises), at a truncated header (in a quote): protocol is then the
    header it stopped at.
    """
    while nh in _IPV6_EXTENSIONS:
        if nh == _IPV6_FRAGMENT:
            size = 8
            if off + 8 <= end and _U16.unpack_from(data, off + 2)[0] & 0xFFF8:
                return off, data[off], False  # offset != 0: not the first fragment
        elif nh == _IPV6_AH:
            size = 8 if off + 2 > end else (data[off + 1] + 2) << 2  # in 4-byte units
        else:  # hop-by-hop, routing, destination options: length in 8-byte units
            size = 8 if off + 2 > end else (data[off + 1] + 1) << 3
        if off + size > end:
            if strict:
                raise MalformedPacket(f"truncated IPv6 extension header {nh}")
            return off, nh, False
        nh = data[off]
        off += size
    return off, nh, True


def _parse_tcp(data: bytes | memoryview, off: int, end: int) -> TcpSegment:
    if off + 20 > end:
        raise MalformedPacket("truncated TCP header")
    sport, dport, seq, ack, doff, flags, window = _TCP.unpack_from(data, off)
    doff = (doff >> 4) << 2
    if doff < 20 or off + doff > end:
        raise MalformedPacket(f"bad TCP data offset {doff}")
    options = _parse_options(data, off + 20, off + doff) if doff > 20 else _NO_OPTIONS
    return TcpSegment(
        sport, dport, seq, ack, _FLAGS[flags], window, options, bytes(data[off + doff : end])
    )


def _parse_options(data: bytes | memoryview, i: int, end: int) -> TcpOptions:
    """Decode TCP options in ``data[i:end]``.

    A known kind with the wrong length is recorded as ``?<kind>`` and its value ignored,
    as Linux's ``tcp_parse_options`` ignores it.
    """
    size = end - i
    if size == 20:
        head, mss, mid, tsval, tsecr, tail = _MSTNW.unpack_from(data, i)
        if head == 0x0204 and mid == 0x0402080A and tail >> 8 == 0x010303:
            return TcpOptions(mss, tail & 0xFF, True, (tsval, tsecr), "MSTNW")
    elif size == 12:
        head, tsval, tsecr = _NNT.unpack_from(data, i)
        if head == 0x0101080A:
            return TcpOptions(None, None, False, (tsval, tsecr), "NNT")
    mss = wscale = timestamp = None
    sack_permitted = False
    order = ""
    while i < end:
        kind = data[i]
        if kind == 1:
            order += "N"
            i += 1
            continue
        if kind == 0:
            order += "E"
            break  # the rest is padding
        if i + 2 > end:
            raise MalformedPacket(f"TCP option {kind} has no length")
        size = data[i + 1]
        if size < 2 or i + size > end:
            raise MalformedPacket(f"TCP option {kind} has bad length {size}")
        if kind == 2 and size == 4:
            mss = _U16.unpack_from(data, i + 2)[0]
            order += "M"
        elif kind == 8 and size == 10:
            timestamp = _TWO_U32.unpack_from(data, i + 2)
            order += "T"
        elif kind == 4 and size == 2:
            sack_permitted = True
            order += "S"
        elif kind == 3 and size == 3:
            wscale = data[i + 2]
            order += "W"
        elif kind == 5 and size in _SACK_LENGTHS:
            order += "K"
        else:
            order += f"?{kind}"
        i += size
    return TcpOptions(mss, wscale, sack_permitted, timestamp, order)


def _parse_icmp(
    data: bytes | memoryview,
    off: int,
    end: int,
    errors: frozenset[int],
    quote: Callable[[bytes | memoryview, int, int], QuotedHeader | None],
    version: int,
) -> IcmpError | None:
    """An ICMP(v6) error with its quote, or None for other messages and unreadable quotes."""
    if off + 4 > end:  # type, code, checksum: every ICMP(v6) message has them
        raise MalformedPacket("truncated ICMP header")
    icmp_type = data[off]
    if icmp_type not in errors:
        return None
    if off + 8 > end:  # errors have 4 more bytes (unused, MTU or pointer) before the quote
        raise MalformedPacket("truncated ICMP error header")
    quoted = quote(data, off + 8, end)
    if quoted is None:
        return None
    return IcmpError(icmp_type, data[off + 1], quoted, icmp_kind(version, icmp_type))


def _quote_ipv4(data: bytes | memoryview, q: int, end: int) -> QuotedHeader | None:
    """The IPv4 header quoted at ``q``; None when even that is incomplete (not an error)."""
    if q + 20 > end:
        return None
    vihl, _total, _id, frag, _ttl, proto, src, dst = _IPV4.unpack_from(data, q)
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20 or q + ihl > end:
        return None
    if frag & 0x1FFF:
        return QuotedHeader(src, dst, proto, None, None, None)
    # The quoted total length is the original packet's, not the quote's: ignore it.
    return _quoted_transport(data, q + ihl, end, proto, src, dst)


def _quote_ipv6(data: bytes | memoryview, q: int, end: int) -> QuotedHeader | None:
    """The IPv6 header quoted at ``q``, extension headers walked as far as quoted."""
    if q + 40 > end:
        return None
    if data[q] >> 4 != 6:
        return None
    _plen, nh, _hlim, src, dst = _IPV6.unpack_from(data, q)
    off, proto, transport = _skip_ipv6_extensions(data, q + 40, end, nh, strict=False)
    if not transport:
        return QuotedHeader(src, dst, proto, None, None, None)
    return _quoted_transport(data, off, end, proto, src, dst)


def _quoted_transport(
    data: bytes | memoryview, t: int, end: int, proto: int, src: bytes, dst: bytes
) -> QuotedHeader:
    """Ports (4 bytes) and TCP sequence number (8 bytes) of a quote, when quoted."""
    if proto not in _PORTED or t + 4 > end:
        return QuotedHeader(src, dst, proto, None, None, None)
    if proto == IPPROTO_TCP and t + 8 <= end:
        sport, dport, seq = _PORTS_SEQ.unpack_from(data, t)
        return QuotedHeader(src, dst, proto, sport, dport, seq)
    sport, dport = _PORTS.unpack_from(data, t)
    return QuotedHeader(src, dst, proto, sport, dport, None)
