"""parse_packet against packets built with Scapy, and against garbage."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.packet import Packet as ScapyPacket

from prober.core.parse import parse_packet
from prober.core.wire import MalformedPacket, Packet, TcpFlags, TcpSegment

F = TcpFlags
A4, B4, R4 = "192.0.2.1", "198.51.100.7", "203.0.113.254"
A6, B6, R6 = "2001:db8::1", "2001:db8:1::7", "2001:db8:ff::fe"
LINUX_SYN_OPTIONS = [
    ("MSS", 1460),
    ("SAckOK", b""),
    ("Timestamp", (123, 0)),
    ("NOP", None),
    ("WScale", 7),
]


def ip4(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, text)


def ip6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def syn(**kw: object) -> TCP:
    fields: dict[str, object] = {
        "sport": 40000,
        "dport": 80,
        "seq": 0xDEADBEEF,
        "flags": "S",
        "options": LINUX_SYN_OPTIONS,
    }
    fields.update(kw)
    return TCP(**fields)


def tcp_of(p: Packet) -> TcpSegment:
    assert p.tcp is not None
    return p.tcp


# --- TCP ------------------------------------------------------------------------------------


def test_ipv4_syn_ack() -> None:
    options = [("MSS", 1400), ("SAckOK", b""), ("Timestamp", (7, 8)), ("NOP", None), ("WScale", 10)]
    tcp = TCP(sport=80, dport=40000, seq=1, ack=0xDEADBEF0, flags="SA", window=65160)
    tcp.options = options
    raw = bytes(IP(src=B4, dst=A4, ttl=57, id=4321) / tcp)
    p = parse_packet(raw)
    assert (p.version, p.src, p.dst, p.ttl, p.ip_id) == (4, ip4(B4), ip4(A4), 57, 4321)
    assert p.length == 60
    assert p.icmp is None
    t = tcp_of(p)
    assert (t.sport, t.dport, t.seq, t.ack, t.window) == (80, 40000, 1, 0xDEADBEF0, 65160)
    assert t.flags == F.SYN | F.ACK
    assert t.flags.compact() == "S."
    assert t.options.order == "MSTNW"
    assert (t.options.mss, t.options.window_scale, t.options.timestamp) == (1400, 10, (7, 8))
    assert t.options.sack_permitted
    assert t.payload == b""


def test_ipv4_options_and_payload() -> None:
    raw = bytes(
        IP(src=A4, dst=B4, options=[IPOption_RR(), IPOption_NOP()])
        / TCP(flags="PA", options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
        / b"GET / HTTP/1.1\r\n"
    )
    assert raw[0] & 0x0F > 5
    p = parse_packet(raw)
    t = tcp_of(p)
    assert t.payload == b"GET / HTTP/1.1\r\n"
    assert isinstance(t.payload, bytes)
    assert t.options.order == "NNT"
    assert t.options.timestamp == (1, 2)
    assert t.flags == F.PSH | F.ACK
    assert p.length == len(raw)


def test_memoryview_input() -> None:
    raw = bytes(IP(src=A4, dst=B4) / syn() / b"data")
    p = parse_packet(memoryview(raw))
    assert p == parse_packet(raw)
    assert isinstance(p.src, bytes)
    assert isinstance(tcp_of(p).payload, bytes)


def test_all_tcp_option_kinds() -> None:
    raw = bytes(
        IP(src=A4, dst=B4)
        / TCP(
            options=[
                ("NOP", None),
                ("SAck", (1, 2, 3, 4)),
                (30, b"\x00\x01"),  # MPTCP, unknown to us
                ("MSS", 536),
                ("WScale", 14),
                ("SAckOK", b""),
                ("EOL", None),
            ]
        )
    )
    o = tcp_of(parse_packet(raw)).options
    assert o.order == "NK?30MWSE"
    assert (o.mss, o.window_scale, o.sack_permitted, o.timestamp) == (536, 14, True, None)


u32 = st.integers(0, 0xFFFFFFFF)


# (Scapy option, size, letter) for random option lists
@st.composite
def tcp_option(draw: st.DrawFn) -> tuple[tuple[object, object], int, str]:
    kind = draw(st.sampled_from("MWSTNKU"))
    if kind == "M":
        return ("MSS", draw(st.integers(0, 0xFFFF))), 4, "M"
    if kind == "W":
        return ("WScale", draw(st.integers(0, 255))), 3, "W"
    if kind == "S":
        return ("SAckOK", b""), 2, "S"
    if kind == "T":
        return ("Timestamp", (draw(u32), draw(u32))), 10, "T"
    if kind == "N":
        return ("NOP", None), 1, "N"
    if kind == "K":
        blocks = draw(st.lists(u32, min_size=2, max_size=8).filter(lambda b: len(b) % 2 == 0))
        return ("SAck", tuple(blocks)), 2 + 4 * len(blocks), "K"
    unknown = draw(st.sampled_from([6, 7, 19, 29, 30, 34, 253, 254]))
    data = draw(st.binary(max_size=6))
    return (unknown, data), 2 + len(data), f"?{unknown}"


@settings(max_examples=200, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    options=st.lists(tcp_option(), max_size=10),
    sport=st.integers(0, 0xFFFF),
    seq=u32,
    ack=u32,
    flags=st.integers(0, 255),
    window=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=20),
)
def test_tcp_round_trip(
    version: int,
    options: list[tuple[tuple[object, object], int, str]],
    sport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: bytes,
) -> None:
    kept, size = [], 0
    for option in options:
        if size + option[1] <= 40:
            kept.append(option)
            size += option[1]
    order = "".join(letter for _, _, letter in kept) + ("E" if size % 4 else "")
    tcp = TCP(sport=sport, dport=443, seq=seq, ack=ack, flags=flags, window=window)
    tcp.options = [scapy for scapy, _, _ in kept]
    ip = IP(src=A4, dst=B4) if version == 4 else IPv6(src=A6, dst=B6)
    t = tcp_of(parse_packet(bytes(ip / tcp / payload)))
    assert (t.sport, t.dport, t.seq, t.ack, t.window) == (sport, 443, seq, ack, window)
    assert t.flags == flags
    assert t.payload == payload
    assert t.options.order == order
    values = {letter: value for (_, value), _, letter in kept}
    assert t.options.mss == values.get("M")
    assert t.options.window_scale == values.get("W")
    assert t.options.timestamp == values.get("T")
    assert t.options.sack_permitted == ("S" in values)


def test_wrong_length_known_option_is_unknown() -> None:
    # MSS with length 3, then padding: recorded as ?2, value ignored (as Linux does).
    raw = bytes(IP(src=A4, dst=B4) / TCP(options=[(2, b"\x05")]))
    o = tcp_of(parse_packet(raw)).options
    assert o.order.startswith("?2")
    assert o.mss is None


def test_options_stop_at_eol() -> None:
    raw = bytes(IP(src=A4, dst=B4) / TCP(options=[("EOL", None), ("MSS", 1)]))
    assert tcp_of(parse_packet(raw)).options.order == "E"


def test_no_options() -> None:
    raw = bytes(IP(src=A4, dst=B4) / TCP(flags="R"))
    t = tcp_of(parse_packet(raw))
    assert t.options.order == ""
    assert t.flags == F.RST


def test_ipv6_tcp_through_extension_headers() -> None:
    raw = bytes(
        IPv6(src=A6, dst=B6, hlim=3)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrFragment(offset=0, m=1)
        / AH(nh=6, payloadlen=4, spi=1, seq=2, icv=bytes(12))  # (4 + 2) * 4 = 24 bytes
        / syn()
        / b"xyz"
    )
    p = parse_packet(raw)
    assert (p.version, p.src, p.dst, p.ttl, p.ip_id) == (6, ip6(A6), ip6(B6), 3, None)
    assert p.length == len(raw)
    t = tcp_of(p)
    assert (t.sport, t.dport, t.seq) == (40000, 80, 0xDEADBEEF)
    assert t.options.order == "MSTNW"
    assert t.payload == b"xyz"


def test_ipv6_later_fragment_has_no_transport() -> None:
    raw = bytes(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=8, nh=6) / bytes(24))
    p = parse_packet(raw)
    assert p.tcp is None and p.icmp is None


def test_ipv4_later_fragment_has_no_transport() -> None:
    raw = bytes(IP(src=A4, dst=B4, proto=6, frag=3) / (b"\0" * 24))
    p = parse_packet(raw)
    assert p.tcp is None and p.icmp is None


def test_other_protocols() -> None:
    for raw in (
        bytes(IP(src=A4, dst=B4) / UDP(sport=1, dport=53)),
        bytes(IPv6(src=A6, dst=B6) / UDP(sport=1, dport=53)),
        bytes(IPv6(src=A6, dst=B6, nh=59)),  # no next header
    ):
        p = parse_packet(raw)
        assert p.tcp is None and p.icmp is None


def test_truncated_capture_and_padding() -> None:
    raw = bytes(IP(src=A4, dst=B4) / syn() / b"0123456789")
    # Snap length cut the payload: keep what is there, report the on-wire length.
    p = parse_packet(raw[:-4])
    assert tcp_of(p).payload == b"012345"
    assert p.length == len(raw)
    # Ethernet padding after the IP packet is not payload.
    assert tcp_of(parse_packet(raw + bytes(6))).payload == b"0123456789"
    raw6 = bytes(IPv6(src=A6, dst=B6) / syn() / b"ab")
    assert tcp_of(parse_packet(raw6 + b"pad")).payload == b"ab"
    assert tcp_of(parse_packet(raw6[:-1])).payload == b"a"


# --- ICMP errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(("icmp_type", "code"), [(3, 3), (3, 13), (4, 0), (5, 1), (11, 0), (12, 0)])
def test_icmpv4_errors_quote_syn(icmp_type: int, code: int) -> None:
    raw = bytes(
        IP(src=R4, dst=A4) / ICMP(type=icmp_type, code=code) / IP(src=A4, dst=B4, ttl=1) / syn()
    )
    p = parse_packet(raw)
    assert p.tcp is None
    assert p.icmp is not None
    assert (p.icmp.type, p.icmp.code) == (icmp_type, code)
    q = p.icmp.quoted
    assert (q.src, q.dst, q.protocol) == (ip4(A4), ip4(B4), 6)
    assert (q.sport, q.dport, q.seq) == (40000, 80, 0xDEADBEEF)


def test_icmpv4_quote_with_ip_options() -> None:
    inner = IP(src=A4, dst=B4, options=[IPOption_RR()]) / syn()
    raw = bytes(IP(src=R4, dst=A4) / ICMP(type=11) / inner)
    q = parse_packet(raw).icmp
    assert q is not None
    assert (q.quoted.sport, q.quoted.dport, q.quoted.seq) == (40000, 80, 0xDEADBEEF)


@pytest.mark.parametrize(
    ("quoted_transport", "sport", "seq"),
    [(8, 40000, 0xDEADBEEF), (7, 40000, None), (4, 40000, None), (3, None, None), (0, None, None)],
)
def test_icmpv4_short_quotes(quoted_transport: int, sport: int | None, seq: int | None) -> None:
    quote = bytes(IP(src=A4, dst=B4) / syn())[: 20 + quoted_transport]
    raw = bytes(IP(src=R4, dst=A4) / ICMP(type=11) / quote)
    p = parse_packet(raw)
    assert p.icmp is not None
    assert (p.icmp.quoted.sport, p.icmp.quoted.seq) == (sport, seq)
    assert p.icmp.quoted.dport == (80 if sport else None)


def test_icmpv4_incomplete_inner_header_is_not_an_error() -> None:
    quote = bytes(IP(src=A4, dst=B4) / syn())[:19]
    assert parse_packet(bytes(IP(src=R4, dst=A4) / ICMP(type=3) / quote)).icmp is None
    # Inner IHL claims options that were not quoted.
    quote = bytes(IP(src=A4, dst=B4, options=[IPOption_RR()]) / syn())[:22]
    assert parse_packet(bytes(IP(src=R4, dst=A4) / ICMP(type=3) / quote)).icmp is None
    # Not an IPv4 header at all.
    assert parse_packet(bytes(IP(src=R4, dst=A4) / ICMP(type=3) / bytes(28))).icmp is None


def test_icmpv4_quote_of_udp_and_of_later_fragment() -> None:
    udp = IP(src=A4, dst=B4) / UDP(sport=5, dport=53)
    raw = bytes(IP(src=R4, dst=A4) / ICMP(type=3, code=3) / udp)
    p = parse_packet(raw)
    assert p.icmp is not None
    assert (p.icmp.quoted.protocol, p.icmp.quoted.sport, p.icmp.quoted.dport) == (17, 5, 53)
    assert p.icmp.quoted.seq is None
    inner = bytes(IP(src=A4, dst=B4, proto=6, frag=5) / bytes(8))
    p = parse_packet(bytes(IP(src=R4, dst=A4) / ICMP(type=11) / inner))
    assert p.icmp is not None
    assert (p.icmp.quoted.protocol, p.icmp.quoted.sport) == (6, None)


def test_icmp_non_errors() -> None:
    assert parse_packet(bytes(IP(src=R4, dst=A4) / ICMP(type=8) / b"ping")).icmp is None
    assert parse_packet(bytes(IP(src=R4, dst=A4) / ICMP(type=0))).icmp is None
    assert parse_packet(bytes(IPv6(src=R6, dst=A6) / ICMPv6EchoRequest())).icmp is None


@pytest.mark.parametrize(
    ("layer", "icmp_type"),
    [
        (ICMPv6DestUnreach(code=1), 1),
        (ICMPv6PacketTooBig(mtu=1280), 2),
        (ICMPv6TimeExceeded(), 3),
        (ICMPv6ParamProblem(ptr=6), 4),
    ],
)
def test_icmpv6_errors_quote_syn(layer: ScapyPacket, icmp_type: int) -> None:
    raw = bytes(IPv6(src=R6, dst=A6) / layer / IPv6(src=A6, dst=B6, hlim=1) / syn())
    p = parse_packet(raw)
    assert p.icmp is not None and p.tcp is None
    assert p.icmp.type == icmp_type
    q = p.icmp.quoted
    assert (q.src, q.dst, q.protocol) == (ip6(A6), ip6(B6), 6)
    assert (q.sport, q.dport, q.seq) == (40000, 80, 0xDEADBEEF)


def test_icmpv6_quote_with_extension_headers() -> None:
    inner = (
        IPv6(src=A6, dst=B6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrFragment(m=1)
        / syn()
    )
    p = parse_packet(bytes(IPv6(src=R6, dst=A6) / ICMPv6TimeExceeded() / inner))
    assert p.icmp is not None
    q = p.icmp.quoted
    assert (q.protocol, q.sport, q.dport, q.seq) == (6, 40000, 80, 0xDEADBEEF)
    # Quote cut inside the extension headers: addresses still known, no ports.
    cut = bytes(inner)[:44]
    p = parse_packet(bytes(IPv6(src=R6, dst=A6) / ICMPv6TimeExceeded() / cut))
    assert p.icmp is not None
    assert (p.icmp.quoted.src, p.icmp.quoted.sport) == (ip6(A6), None)
    # Quote cut inside the IPv6 header: no error object.
    cut = bytes(inner)[:39]
    assert parse_packet(bytes(IPv6(src=R6, dst=A6) / ICMPv6TimeExceeded() / cut)).icmp is None


def test_icmpv6_quote_of_later_fragment() -> None:
    inner = bytes(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=10, nh=6) / bytes(16))
    p = parse_packet(bytes(IPv6(src=R6, dst=A6) / ICMPv6DestUnreach() / inner))
    assert p.icmp is not None
    assert (p.icmp.quoted.protocol, p.icmp.quoted.sport) == (6, None)


# --- malformed ------------------------------------------------------------------------------


def _set(raw: bytes, offset: int, fmt: str, *values: int) -> bytes:
    buf = bytearray(raw)
    struct.pack_into(fmt, buf, offset, *values)
    return bytes(buf)


SYN4 = bytes(IP(src=A4, dst=B4) / syn())
SYN6 = bytes(IPv6(src=A6, dst=B6) / syn())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x45",
        SYN4[:19],
        SYN6[:39],
        _set(SYN4, 0, "!B", 0x55),  # version 5
        _set(SYN4, 0, "!B", 0x05),  # version 0
        _set(SYN4, 0, "!B", 0x44),  # IHL 4
        _set(SYN4, 0, "!B", 0x4F),  # IHL 15 > packet
        _set(SYN4, 2, "!H", 19),  # total length < header
        _set(SYN4, 2, "!H", 30),  # total length cuts the TCP header
        SYN4[:39],  # capture cuts the TCP header
        _set(SYN4, 32, "!B", 0x40),  # TCP data offset 4
        _set(SYN4, 32, "!B", 0xF0),  # TCP data offset beyond the data
        _set(SYN4, 41, "!B", 1),  # MSS option length 1
        _set(SYN4, 41, "!B", 0),  # MSS option length 0
        _set(SYN4, 41, "!B", 30),  # MSS option runs past the header
        _set(SYN4, 56, "!H", 0x0101),  # NOP, NOP, then window scale with length 7
        SYN4[:40] + b"\x01" * 19 + b"\x02",  # options end in a kind without its length
        _set(SYN6, 4, "!H", 10),  # payload length cuts the TCP header
        bytes(IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop(len=3) / syn())[:60],  # ext hdr cut
        bytes(IP(src=R4, dst=A4) / ICMP(type=3))[:26],  # ICMP error header cut
        bytes(IP(src=R4, dst=A4) / ICMP(type=8))[:23],  # ICMP header cut
    ],
)
def test_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse_packet(raw)


# --- fuzz -----------------------------------------------------------------------------------

VALID = [
    SYN4,
    SYN6,
    bytes(IP(src=A4, dst=B4, options=[IPOption_RR()]) / syn() / b"payload"),
    bytes(IP(src=B4, dst=A4) / TCP(flags="RA")),
    bytes(IP(src=R4, dst=A4) / ICMP(type=11) / IP(src=A4, dst=B4) / syn()),
    bytes(IP(src=R4, dst=A4) / ICMP(type=3) / IP(src=A4, dst=B4) / UDP()),
    bytes(IP(src=R4, dst=A4) / ICMP(type=8) / b"ping"),
    bytes(IPv6(src=R6, dst=A6) / ICMPv6TimeExceeded() / IPv6(src=A6, dst=B6) / syn()),
    bytes(
        IPv6(src=R6, dst=A6)
        / ICMPv6DestUnreach()
        / IPv6(src=A6, dst=B6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrFragment()
        / syn()
    ),
    bytes(
        IPv6(src=A6, dst=B6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting()
        / AH(nh=6, payloadlen=4, icv=bytes(12))
        / syn()
        / b"data"
    ),
    bytes(IPv6(src=A6, dst=B6) / UDP()),
]


def _parse_or_malformed(raw: bytes) -> None:
    try:
        p = parse_packet(raw)
    except MalformedPacket:
        return
    assert isinstance(p, Packet)
    assert p.tcp is None or p.icmp is None


def test_valid_corpus_parses() -> None:
    for raw in VALID:
        assert isinstance(parse_packet(raw), Packet)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _parse_or_malformed(raw)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(range(len(VALID))),
    st.integers(0, 200),
    st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)), max_size=4),
)
def test_fuzz_truncated_and_mutated(which: int, cut: int, flips: list[tuple[int, int]]) -> None:
    buf = bytearray(VALID[which][:cut])
    for offset, value in flips:
        if offset < len(buf):
            buf[offset] = value
    _parse_or_malformed(bytes(buf))
    _parse_or_malformed(bytes(buf[: len(buf) // 2]))


def test_every_truncation_of_valid_packets() -> None:
    for raw in VALID:
        for cut in range(len(raw)):
            _parse_or_malformed(raw[:cut])
            _parse_or_malformed(bytes([raw[0]]) + bytes(cut))
