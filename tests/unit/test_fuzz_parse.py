"""Hypothesis tests of the parser with structure: nothing but MalformedPacket escapes.

Random bytes rarely get past the first length check, so these build what a parser meets
off the happy path: IPv6 extension-header chains of any shape and length, ICMP errors whose
quotes are cut anywhere or lie about their own headers, and valid packets whose length
fields were rewritten. The sample is FUZZ_SETTINGS (tests/unit/fuzzing.py).
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from prober.core.parse import parse_packet
from prober.core.wire import IcmpKind, icmp_kind
from tests.unit.fuzzing import FUZZ_SETTINGS, parse_or_malformed
from tests.unit.test_parse import VALID

EXTENSIONS = (0, 43, 44, 51, 60)  # hop-by-hop, routing, fragment, AH, destination options
TRANSPORTS = (6, 58, 17, 59, 255)  # TCP, ICMPv6, UDP, no next header, reserved
SRC6, DST6 = bytes(15) + b"\x01", bytes(15) + b"\x02"
SRC4, DST4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])


def ipv6(next_header: int, payload: bytes, *, claimed: int | None = None) -> bytes:
    length = len(payload) if claimed is None else claimed
    return struct.pack("!IHBB16s16s", 0x60000000, length & 0xFFFF, next_header, 64, SRC6,
                       DST6) + payload


def ipv4(protocol: int, payload: bytes, *, ihl: int = 5, total: int | None = None,
         frag: int = 0) -> bytes:
    size = 20 + len(payload) if total is None else total
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl & 0xF, 0, size & 0xFFFF, 1, frag, 64,
                       protocol, 0, SRC4, DST4)
    return head + bytes(max(0, (ihl - 5) * 4)) + payload


@st.composite
def tcp_header(draw: st.DrawFn) -> bytes:
    offset = draw(st.integers(0, 15))
    options = draw(st.binary(max_size=max(0, offset * 4 - 20)))
    head = struct.pack("!HHIIBBHHH", 40000, 80, draw(st.integers(0, 2**32 - 1)), 0,
                       offset << 4, draw(st.integers(0, 255)), 65535, 0, 0)
    return head + options + draw(st.binary(max_size=16))


@st.composite
def extension_chain(draw: st.DrawFn, last: bytes) -> tuple[int, bytes]:
    """(first next-header value, bytes) of a chain of 0-5 extension headers before ``last``;
    lengths may lie and fragments may be later ones."""
    kinds = draw(st.lists(st.sampled_from(EXTENSIONS), max_size=5))
    final = draw(st.sampled_from(TRANSPORTS))
    body = last
    next_header = final
    for kind in reversed(kinds):
        if kind == 44:
            offset = draw(st.sampled_from([0, 0, 8, 0xFFF8]))
            header = struct.pack("!BBHI", next_header, 0, offset, 1)
        else:
            units = draw(st.integers(0, 3))
            size = (units + 2) * 4 if kind == 51 else (units + 1) * 8
            claimed = draw(st.sampled_from([units, units, draw(st.integers(0, 255))]))
            header = bytes([next_header, claimed]) + draw(
                st.binary(min_size=size - 2, max_size=size - 2)
            )
        body = header + body
        next_header = kind
    return next_header, body


@st.composite
def ipv6_packets(draw: st.DrawFn) -> bytes:
    first, chain = draw(extension_chain(draw(tcp_header())))
    claimed = draw(st.sampled_from([None, None, draw(st.integers(0, 0xFFFF))]))
    packet = ipv6(first, chain, claimed=claimed)
    return packet[: draw(st.integers(0, len(packet)))] if draw(st.booleans()) else packet


@st.composite
def icmp_errors(draw: st.DrawFn) -> bytes:
    """ICMP(v6) errors (and a few non-errors) quoting a packet that may be cut or lie."""
    if draw(st.booleans()):
        inner = ipv4(6, draw(tcp_header()), ihl=draw(st.integers(0, 15)),
                     frag=draw(st.sampled_from([0, 0, 1, 0x2000])))
        inner = inner[: draw(st.integers(0, len(inner)))]
        icmp_type = draw(st.sampled_from([3, 4, 5, 11, 12, 0, 8, 9]))
        return ipv4(1, bytes([icmp_type, draw(st.integers(0, 15))]) + bytes(6) + inner)
    first, chain = draw(extension_chain(draw(tcp_header())))
    inner = ipv6(first, chain)
    inner = inner[: draw(st.integers(0, len(inner)))]
    icmp_type = draw(st.sampled_from([1, 2, 3, 4, 128, 129, 134, 135]))
    return ipv6(58, bytes([icmp_type, draw(st.integers(0, 15))]) + bytes(6) + inner)


@st.composite
def rewritten_lengths(draw: st.DrawFn) -> bytes:
    """A valid packet with one length field (IHL, total, payload, data offset) rewritten."""
    raw = bytearray(draw(st.sampled_from(VALID)))
    field = draw(st.sampled_from(["ihl", "total", "tcp-offset", "any"]))
    if raw[0] >> 4 == 4 and field == "ihl":
        raw[0] = 0x40 | draw(st.integers(0, 15))
    elif field == "total":
        at = 2 if raw[0] >> 4 == 4 else 4
        raw[at : at + 2] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
    elif field == "tcp-offset":
        start = (raw[0] & 0xF) * 4 if raw[0] >> 4 == 4 else 40
        if start + 12 < len(raw):
            raw[start + 12] = draw(st.integers(0, 255))
    else:
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] = draw(st.integers(0, 255))
    return bytes(raw)


@FUZZ_SETTINGS
@given(ipv6_packets())
def test_ipv6_extension_chains_parse_or_are_malformed(raw: bytes) -> None:
    parse_or_malformed(raw)
    parse_or_malformed(memoryview(raw))  # the engine hands the parser views too


@FUZZ_SETTINGS
@given(icmp_errors())
def test_icmp_quotes_cut_anywhere_parse_or_are_malformed(raw: bytes) -> None:
    packet = parse_or_malformed(raw)
    if packet is None or packet.icmp is None:
        return
    icmp = packet.icmp
    # The parser's classification: errors of reachability decide, nothing else does.
    assert icmp.kind is icmp_kind(packet.version, icmp.type)
    assert icmp.decides_verdict == (icmp.kind is not IcmpKind.OTHER)
    assert icmp.type in ((3, 4, 5, 11, 12) if packet.version == 4 else (1, 2, 3, 4))


@FUZZ_SETTINGS
@given(rewritten_lengths())
def test_rewritten_length_fields_parse_or_are_malformed(raw: bytes) -> None:
    parse_or_malformed(raw)
    for cut in (len(raw) // 3, len(raw) // 2, len(raw) - 1):
        parse_or_malformed(raw[:cut])


@FUZZ_SETTINGS
@given(st.integers(4, 6), st.binary(max_size=200))
def test_any_bytes_behind_a_version_nibble_parse_or_are_malformed(
    version: int, tail: bytes
) -> None:
    parse_or_malformed(bytes([version << 4 | 5]) + tail)
    parse_or_malformed(bytes([version << 4]) + tail)


def test_informational_icmp_is_never_an_error() -> None:
    echo = ipv4(1, bytes([8, 0]) + bytes(6) + ipv4(6, bytes(20)))
    advert = ipv6(58, bytes([134, 0]) + bytes(14))
    assert parse_packet(echo).icmp is None and parse_packet(advert).icmp is None
