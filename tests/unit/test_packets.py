"""TcpTemplate and internet_checksum against Scapy, the specification; IsnKey."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.utils import checksum as scapy_checksum

from prober.core.cookies import IsnKey
from prober.core.packets import TcpTemplate, internet_checksum, linux_option_order
from prober.core.parse import parse_packet
from prober.core.wire import TcpFlags

F = TcpFlags

# Linux's layouts, written out by hand (checked against a 6.x kernel on loopback).
LINUX_SYN = ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
LINUX_SYN_NO_TS = ["MSS", "NOP", "NOP", "SAckOK", "NOP", "WScale"]
LINUX_TS_ONLY = ["NOP", "NOP", "Timestamp"]
OPTION_SIZES = {"M": 4, "S": 2, "T": 10, "N": 1, "W": 3, "E": 1}

# (flags, template keywords, expected Scapy option names)
CASES: list[tuple[TcpFlags, dict[str, bool], list[str]]] = [
    (F.SYN, {}, LINUX_SYN),
    (F.SYN, {"timestamps": False}, LINUX_SYN_NO_TS),
    (F.SYN | F.ECE | F.CWR, {}, LINUX_SYN),
    (F.SYN | F.ACK, {}, LINUX_SYN),
    (F.ACK, {}, LINUX_TS_ONLY),
    (F.ACK, {"timestamps": False}, []),
    (F.ACK | F.PSH, {}, LINUX_TS_ONLY),
    (F.FIN | F.ACK, {}, LINUX_TS_ONLY),
    (F.FIN | F.ACK, {"timestamps": False}, []),
    (F.RST, {}, []),
    (F.RST | F.ACK, {}, []),
    (F.RST | F.ACK, {"timestamps": True}, LINUX_TS_ONLY),
]


@cache
def template(version: int, flags: TcpFlags, kw: tuple[tuple[str, Any], ...]) -> TcpTemplate:
    return TcpTemplate(version, flags, **dict(kw))


def scapy_options(
    names: list[str], mss: int, wscale: int, tsval: int, tsecr: int
) -> list[tuple[str, object]]:
    values: dict[str, object] = {
        "MSS": mss,
        "SAckOK": b"",
        "Timestamp": (tsval, tsecr),
        "NOP": None,
        "WScale": wscale,
        "EOL": None,
    }
    return [(name, values[name]) for name in names]


addresses4 = st.binary(min_size=4, max_size=4)
addresses6 = st.binary(min_size=16, max_size=16)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@dataclass(frozen=True)
class Probe:
    version: int
    case: int
    ttl: int
    window: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    tsval: int
    tsecr: int
    payload: bytes


@st.composite
def probes(draw: st.DrawFn) -> Probe:
    version = draw(st.sampled_from([4, 6]))
    addrs = addresses4 if version == 4 else addresses6
    return Probe(
        version=version,
        case=draw(st.integers(0, len(CASES) - 1)),
        ttl=draw(st.sampled_from([1, 64, 128, 255])),
        window=draw(st.sampled_from([0, 1024, 64240, 65535])),
        src=draw(addrs),
        dst=draw(addrs),
        sport=draw(u16),
        dport=draw(u16),
        seq=draw(u32),
        ack=draw(u32),
        tsval=draw(u32),
        tsecr=draw(u32),
        payload=draw(st.one_of(st.just(b""), st.binary(max_size=64))),
    )


def scapy_packet(p: Probe, options: list[tuple[str, object]], flags: int) -> bytes:
    family = socket.AF_INET if p.version == 4 else socket.AF_INET6
    src = socket.inet_ntop(family, p.src)
    dst = socket.inet_ntop(family, p.dst)
    tcp = TCP(
        sport=p.sport,
        dport=p.dport,
        seq=p.seq,
        ack=p.ack,
        flags=flags,
        window=p.window,
        options=options,
    )
    if p.version == 4:
        ip = IP(src=src, dst=dst, ttl=p.ttl, id=0, flags="DF")
        return bytes(ip / tcp / p.payload)
    return bytes(IPv6(src=src, dst=dst, hlim=p.ttl) / tcp / p.payload)


@settings(max_examples=200, deadline=None)
@given(probes())
def test_build_equals_scapy(p: Probe) -> None:
    flags, kw, names = CASES[p.case]
    t = template(p.version, flags, (("ttl", p.ttl), ("window", p.window), *sorted(kw.items())))
    mss = 1460 if p.version == 4 else 1440
    options = scapy_options(names, mss, 7, p.tsval, p.tsecr)
    expected = scapy_packet(p, options, int(flags))
    built = t.build(
        p.src, p.dst, p.sport, p.dport, p.seq, p.ack, p.tsval, p.tsecr, p.payload
    )
    assert built == expected
    if not p.payload:  # the zero-payload fast path and the payload path agree
        assert t.build(p.src, p.dst, p.sport, p.dport, p.seq, p.ack, p.tsval, p.tsecr) == built


@settings(max_examples=100, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    mss=u16,
    wscale=st.integers(0, 14),
    sack=st.booleans(),
    ts=st.booleans(),
    ws_on=st.booleans(),
    df=st.booleans(),
    ip_id=u16,
    seq=u32,
    tsval=u32,
)
def test_syn_option_variants_equal_scapy(
    version: int,
    mss: int,
    wscale: int,
    sack: bool,
    ts: bool,
    ws_on: bool,
    df: bool,
    ip_id: int,
    seq: int,
    tsval: int,
) -> None:
    t = TcpTemplate(
        version,
        F.SYN,
        mss=mss,
        window_scale=wscale if ws_on else None,
        sack_permitted=sack,
        timestamps=ts,
        ip_id=ip_id,
        dont_fragment=df,
    )
    names = ["MSS"]
    if ts:
        names += ["SAckOK", "Timestamp"] if sack else ["NOP", "NOP", "Timestamp"]
    elif sack:
        names += ["NOP", "NOP", "SAckOK"]
    if ws_on:
        names += ["NOP", "WScale"]
    tcp = TCP(
        sport=1234,
        dport=80,
        seq=seq,
        flags="S",
        window=64240,
        options=scapy_options(names, mss, wscale, tsval, 0),
    )
    if version == 4:
        src, dst = b"\xc0\x00\x02\x01", b"\xc6\x33\x64\x07"
        ip = IP(src="192.0.2.1", dst="198.51.100.7", id=ip_id, flags="DF" if df else 0)
        expected = bytes(ip / tcp)
    else:
        src, dst = socket.inet_pton(socket.AF_INET6, "2001:db8::1"), bytes(15) + b"\x01"
        expected = bytes(IPv6(src="2001:db8::1", dst="::1") / tcp)
    assert t.build(src, dst, 1234, 80, seq, 0, tsval) == expected
    assert t.options_length == len(expected) - (20 if version == 4 else 40) - 20
    assert t.options_length % 4 == 0


def linux_option_names(flags: int, *, ws: bool, sack: bool, ts: bool) -> list[str]:
    """Linux's layout (tcp_options_write), written out again here as Scapy option names."""
    if not flags & F.SYN:
        return LINUX_TS_ONLY if ts else []
    names = ["MSS"]
    if ts:
        names += ["SAckOK", "Timestamp"] if sack else ["NOP", "NOP", "Timestamp"]
    elif sack:
        names += ["NOP", "NOP", "SAckOK"]
    return [*names, "NOP", "WScale"] if ws else names


@settings(max_examples=400, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    flags=st.integers(0, 0xFF),
    ttl=st.integers(1, 255),
    window=u16,
    mss=u16,
    wscale=st.one_of(st.none(), st.integers(0, 14)),
    sack=st.booleans(),
    ts=st.one_of(st.none(), st.booleans()),
    ip_id=u16,
    df=st.booleans(),
    fields=st.tuples(u16, u16, u32, u32, u32, u32),
    payload=st.one_of(st.just(b""), st.binary(max_size=300)),
)
def test_any_template_equals_scapy(
    version: int,
    flags: int,
    ttl: int,
    window: int,
    mss: int,
    wscale: int | None,
    sack: bool,
    ts: bool | None,
    ip_id: int,
    df: bool,
    fields: tuple[int, int, int, int, int, int],
    payload: bytes,
) -> None:
    """Every flag byte, IP field, option choice and payload: the struct-packed template and
    its per-packet patches give the bytes Scapy builds for the same fields."""
    sport, dport, seq, ack, tsval, tsecr = fields
    t = TcpTemplate(
        version, F(flags), ttl=ttl, window=window, mss=mss, window_scale=wscale,
        sack_permitted=sack, timestamps=ts, ip_id=ip_id, dont_fragment=df,
    )
    timestamps = not flags & F.RST if ts is None else ts
    names = linux_option_names(flags, ws=wscale is not None, sack=sack, ts=timestamps)
    tcp = TCP(
        sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=window,
        options=scapy_options(names, mss, wscale or 0, tsval, tsecr),
    )
    if version == 4:
        src, dst = b"\xc6\x12\x00\x01", b"\xc6\x12\x00\x12"
        ip = IP(src="198.18.0.1", dst="198.18.0.18", ttl=ttl, id=ip_id, flags="DF" if df else 0)
        expected = bytes(ip / tcp / payload)
    else:
        src = socket.inet_pton(socket.AF_INET6, "2001:2::1")
        dst = socket.inet_pton(socket.AF_INET6, "2001:2::1:2")
        expected = bytes(IPv6(src="2001:2::1", dst="2001:2::1:2", hlim=ttl) / tcp / payload)
    assert t.build(src, dst, sport, dport, seq, ack, tsval, tsecr, payload) == expected
    assert t.header_length == len(expected) - len(payload) - (20 if version == 4 else 40)


def test_linux_syn_defaults() -> None:
    t4 = TcpTemplate(4, F.SYN)
    assert t4.options_order == "MSTNW"
    assert (t4.options_length, t4.header_length) == (20, 40)
    t6 = TcpTemplate(6, F.SYN)
    seg = parse_packet(t6.build(bytes(16), bytes(16), 1, 2, 3, tsval=9)).tcp
    assert seg is not None
    assert seg.options.mss == 1440
    assert seg.options.window_scale == 7
    assert seg.options.timestamp == (9, 0)
    assert TcpTemplate(4, F.SYN, timestamps=False).options_order == "MNNSNW"
    assert TcpTemplate(4, F.SYN, timestamps=False).options_length == 12
    assert TcpTemplate(4, F.ACK).options_order == "NNT"
    assert TcpTemplate(4, F.RST).options_length == 0
    assert TcpTemplate(4, F.RST).header_length == 20


def test_linux_option_order() -> None:
    order = linux_option_order
    assert order(F.SYN, window_scale=True, sack_permitted=True, timestamps=True) == "MSTNW"
    assert order(F.SYN, window_scale=True, sack_permitted=False, timestamps=True) == "MNNTNW"
    assert order(F.SYN, window_scale=False, sack_permitted=True, timestamps=True) == "MST"
    assert order(F.SYN, window_scale=True, sack_permitted=False, timestamps=False) == "MNW"
    assert order(F.ACK, window_scale=True, sack_permitted=True, timestamps=True) == "NNT"


@pytest.mark.parametrize("order", ["", "M", "MNW", "NNT", "TNNMSW", "WNNSMTE", "EEEE"])
def test_explicit_option_orders_equal_scapy(order: str) -> None:
    names = {"M": "MSS", "S": "SAckOK", "T": "Timestamp", "N": "NOP", "W": "WScale", "E": "EOL"}
    t = TcpTemplate(4, F.SYN, options=order, mss=536, window_scale=3)
    ip = IP(src="10.0.0.1", dst="10.0.0.2", id=0, flags="DF")
    opts = scapy_options([names[c] for c in order], 536, 3, 77, 88)
    tcp = TCP(sport=5, dport=6, seq=7, flags="S", window=64240, options=opts)
    built = t.build(b"\n\0\0\1", b"\n\0\0\2", 5, 6, 7, 0, 77, 88)
    assert built == bytes(ip / tcp)
    seg = parse_packet(built).tcp
    assert seg is not None
    # Scapy pads to whole words with EOL, and a parser stops at the first EOL.
    size = sum(OPTION_SIZES[c] for c in order)
    wire = order + "E" if size % 4 else order
    wire = wire[: wire.index("E") + 1] if "E" in wire else wire
    assert t.options_order.startswith(order)
    assert seg.options.order == wire


@st.composite
def option_orders(draw: st.DrawFn) -> str:
    letters = draw(st.lists(st.sampled_from("MSTNWE"), max_size=12))
    order = ""
    for c in letters:
        if c == "T" and "T" in order:
            continue
        if sum(OPTION_SIZES[x] for x in order + c) <= 40:
            order += c
    return order


@settings(max_examples=200, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    order=option_orders(),
    tsval=u32,
    tsecr=u32,
    seq=u32,
    payload=st.binary(max_size=9),
)
def test_explicit_random_orders_equal_scapy(
    version: int, order: str, tsval: int, tsecr: int, seq: int, payload: bytes
) -> None:
    """Any layout, including timestamps at odd offsets, which straddle checksum words."""
    names = {"M": "MSS", "S": "SAckOK", "T": "Timestamp", "N": "NOP", "W": "WScale", "E": "EOL"}
    t = template(version, F.ACK, (("options", order), ("mss", 1400), ("window_scale", 9)))
    opts = scapy_options([names[c] for c in order], 1400, 9, tsval, tsecr)
    tcp = TCP(sport=5, dport=6, seq=seq, ack=1, flags="A", window=64240, options=opts)
    if version == 4:
        ip = IP(src="10.0.0.1", dst="10.0.0.2", id=0, flags="DF")
        src, dst = b"\n\0\0\1", b"\n\0\0\2"
    else:
        ip = IPv6(src="fe80::1", dst="fe80::2")
        src, dst = b"\xfe\x80" + bytes(13) + b"\1", b"\xfe\x80" + bytes(13) + b"\2"
    built = t.build(src, dst, 5, 6, seq, 1, tsval, tsecr, payload)
    assert built == bytes(ip / tcp / payload)


def test_build_round_trips_through_parser() -> None:
    t = TcpTemplate(4, F.ACK | F.PSH, ttl=33, window=1000)
    raw = t.build(b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 40000, 443, 10, 20, 30, 40, b"hello")
    p = parse_packet(raw)
    assert (p.version, p.ttl, p.length) == (4, 33, len(raw))
    assert p.tcp is not None
    assert (p.tcp.sport, p.tcp.dport, p.tcp.seq, p.tcp.ack) == (40000, 443, 10, 20)
    assert p.tcp.flags == F.ACK | F.PSH
    assert p.tcp.options.timestamp == (30, 40)
    assert p.tcp.payload == b"hello"


def test_build_rejects_bad_input() -> None:
    t = TcpTemplate(4, F.SYN)
    with pytest.raises(ValueError):
        t.build(bytes(16), bytes(16), 1, 2, 3)
    with pytest.raises(ValueError):
        t.build(bytes(4), bytes(4), 1, 2, 3, payload=bytes(65536 - 60))
    assert len(t.build(bytes(4), bytes(4), 1, 2, 3, payload=bytes(65535 - 60))) == 65535
    with pytest.raises(ValueError):
        TcpTemplate(5, F.SYN)
    with pytest.raises(ValueError):
        TcpTemplate(4, F.SYN, options="MX")
    with pytest.raises(ValueError):
        TcpTemplate(4, F.SYN, options="TTTTT")
    with pytest.raises(ValueError):
        TcpTemplate(4, F.SYN, options="N" * 41)
    for bad in ({"ttl": 256}, {"window": 65536}, {"mss": -1}, {"window_scale": 256}):
        with pytest.raises(ValueError, match="out of range"):
            TcpTemplate(4, F.SYN, **bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_internet_checksum_equals_scapy(data: bytes) -> None:
    assert internet_checksum(data) == scapy_checksum(data)


@pytest.mark.parametrize("data", [b"", b"\0", bytes(40), b"\xff\xff", b"\xff\xff\xff\xff", b"\x01"])
def test_internet_checksum_edge_cases(data: bytes) -> None:
    assert internet_checksum(data) == scapy_checksum(data)


def test_isn_key() -> None:
    key = IsnKey(b"k" * 16)
    a, b = bytes(4), b"\x01\x02\x03\x04"
    isn = key.isn(a, b, 1000, 80, 0)
    assert 0 <= isn < 2**32
    assert isn == IsnKey(b"k" * 16).isn(a, b, 1000, 80, 0)
    assert isn != IsnKey(b"j" * 16).isn(a, b, 1000, 80, 0)
    others = {key.isn(a, b, 1000, 80, n) for n in range(1, 50)}
    others |= {key.isn(a, b, port, 80, 0) for port in range(1001, 1050)}
    assert isn not in others
    assert len(others) > 90  # 32-bit digests: collisions among 98 are very unlikely
    assert len({IsnKey.random().isn(a, b, 1, 2, 3) for _ in range(4)}) > 1


def test_core_imports_and_builds_without_scapy() -> None:
    """Scapy is the tests' oracle only: building every kind of template never imports it."""
    code = (
        "import sys, prober.core.packets, prober.core.parse, prober.core.cookies;"
        "from prober.core.packets import TcpTemplate; from prober.core.wire import TcpFlags;"
        "[TcpTemplate(v, f) for v in (4, 6) for f in TcpFlags];"
        "TcpTemplate(4, TcpFlags.SYN, options='WNNSMTE', window_scale=3);"
        "assert 'scapy' not in sys.modules, 'scapy imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
