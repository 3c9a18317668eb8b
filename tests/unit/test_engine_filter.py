"""The capture filter (prober/engine/sockets.py capture_filter), run on packets Scapy builds
by a small classic-BPF interpreter with the kernel's semantics for the opcodes it uses
(net/core/filter.c; a load past the end returns 0). No root, no sockets."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, IPOption_NOP, TCPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, IPerror6, IPv6
from scapy.layers.inet6 import TCPerror as TCPerror6
from scapy.packet import Packet

from prober.engine.sockets import (
    ETH_P_IP,
    ETH_P_IPV6,
    PACKET_OUTGOING,
    capture_filter,
)

BLOCK = [(40000, 40255), (40300, 40300)]
PACKET_HOST = 0


def run_bpf(program: list[tuple[int, int, int, int]], frame: bytes, protocol: int,
            pkttype: int = PACKET_HOST) -> int:
    a = x = 0
    pc = 0
    ancillary = {0xFFFFF000: protocol, 0xFFFFF004: pkttype}

    def load(offset: int, size: int) -> int | None:
        if offset + size > len(frame) or offset < 0:
            return None
        return int.from_bytes(frame[offset:offset + size], "big")

    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x20:  # ld w abs (ancillary here)
            a = ancillary[k]
        elif code in (0x28, 0x30, 0x48, 0x50):  # ld h/b abs/ind
            size = 2 if code in (0x28, 0x48) else 1
            value = load(k + (x if code in (0x48, 0x50) else 0), size)
            if value is None:
                return 0
            a = value
        elif code == 0xB1:  # ldx 4*([k]&0xf)
            value = load(k, 1)
            if value is None:
                return 0
            x = (value & 0x0F) * 4
        elif code == 0x54:
            a &= k
        elif code == 0x64:
            a = (a << k) & 0xFFFFFFFF
        elif code == 0x04:
            a = (a + k) & 0xFFFFFFFF
        elif code == 0x0C:
            a = (a + x) & 0xFFFFFFFF
        elif code == 0x07:
            x = a
        elif code == 0x05:
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):
            taken = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: bool(a & k)}[code]
            pc += jt if taken else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"opcode {code:#x} not modelled")


def passes(packet: Packet, pkttype: int = PACKET_HOST) -> bool:
    frame = bytes(packet)
    protocol = ETH_P_IP if frame[0] >> 4 == 4 else ETH_P_IPV6
    return run_bpf(capture_filter(BLOCK), frame, protocol, pkttype) > 0


V4 = IP(src="198.18.0.2", dst="198.18.0.1")
V6 = IPv6(src="2001:2::2", dst="2001:2::1")
OUR_SYN4 = IPerror(src="198.18.0.1", dst="198.18.0.2") / TCPerror(sport=40010, dport=80)
WITH_OPTIONS = IPerror(src="198.18.0.1", dst="198.18.0.2", options=[IPOption_NOP()] * 4)
THEIR_SYN4 = IPerror(src="198.18.0.1", dst="198.18.0.2") / TCPerror(sport=50000, dport=80)


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (V4 / TCP(sport=80, dport=40010, flags="SA"), True),
        (V4 / TCP(sport=80, dport=40255, flags="SA"), True),
        (V4 / TCP(sport=80, dport=40300, flags="R"), True),
        (V4 / TCP(sport=80, dport=40256, flags="SA"), False),  # in the gap between ranges
        (V4 / TCP(sport=80, dport=39999, flags="SA"), False),
        (V4 / TCP(sport=80, dport=22), False),  # the host's own traffic
        (V4 / UDP(sport=53, dport=40010), False),
        (V4 / ICMP(type=3, code=3) / OUR_SYN4, True),
        (V4 / ICMP(type=11, code=0) / OUR_SYN4, True),
        (V4 / ICMP(type=3, code=3) / THEIR_SYN4, False),  # another program's probe
        (V4 / ICMP(type=3, code=3) / WITH_OPTIONS / TCPerror(sport=40010, dport=80), True),
        (V4 / ICMP(type=3, code=3) / IPerror(src="198.18.0.1", dst="198.18.0.2")
         / UDP(sport=40010, dport=53), False),  # quotes UDP
        (V4 / ICMP(type=8), False),  # echo: quotes nothing
        (V6 / TCP(sport=80, dport=40010, flags="SA"), True),
        (V6 / TCP(sport=80, dport=22), False),
        (V6 / ICMPv6DestUnreach(code=1) / IPerror6(src="2001:2::1", dst="2001:2::2")
         / TCPerror6(sport=40010, dport=80), True),
        (V6 / ICMPv6DestUnreach(code=1) / IPerror6(src="2001:2::1", dst="2001:2::2")
         / TCPerror6(sport=50000, dport=80), False),
        (V6 / ICMPv6EchoRequest(), False),
    ],
)
def test_the_filter_passes_what_answers_prober_only(packet: Packet, expected: bool) -> None:
    assert passes(packet) is expected


def test_outgoing_copies_and_later_fragments_are_dropped() -> None:
    assert not passes(V4 / TCP(sport=80, dport=40010), pkttype=PACKET_OUTGOING)
    fragment = bytearray(bytes(V4 / TCP(sport=80, dport=40010)))
    struct.pack_into("!H", fragment, 6, 185)  # fragment offset 185 * 8
    assert run_bpf(capture_filter(BLOCK), bytes(fragment), ETH_P_IP) == 0


def test_a_truncated_icmp_error_is_dropped() -> None:
    frame = bytes(V4 / ICMP(type=3, code=3) / OUR_SYN4)[:20 + 8 + 20]
    assert run_bpf(capture_filter(BLOCK), frame, ETH_P_IP) == 0


def test_no_ranges_pass_nothing() -> None:
    program = capture_filter([])
    frame = bytes(V4 / TCP(sport=80, dport=40010))
    assert run_bpf(program, frame, ETH_P_IP) == 0
    assert run_bpf(program, bytes(V4 / ICMP(type=3, code=3) / OUR_SYN4), ETH_P_IP) == 0
