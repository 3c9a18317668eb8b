"""What the captures saw: a minimal pcap reader, SYN → SYN/ACK matching, and the SYN's
arrival on the peer's end of the veth joined to the capture on ours.

There is no wire in this lab (a veth joins two namespaces of one kernel): every stamp is
tcpdump's, taken at one end of the veth or the other.

Only classic pcap files (what `tcpdump -w` writes), microsecond or nanosecond magic, either byte
order; Ethernet, Linux cooked (v1 and v2) and raw-IP link types; IPv4 and IPv6 (without
extension headers) carrying TCP. Timestamps are kept as integer nanoseconds of CLOCK_REALTIME,
exactly as tcpdump wrote them: never through a float.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_LINKTYPE_ETHERNET = 1
_LINKTYPE_RAW = 101
_LINKTYPE_LINUX_SLL = 113
_LINKTYPE_IPV4 = 228
_LINKTYPE_IPV6 = 229
_LINKTYPE_LINUX_SLL2 = 276
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = (0x8100, 0x88A8)
_MAX_RECORDS = 10_000_000  # bounds the read loop whatever the file says

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10


@dataclass(frozen=True, slots=True)
class Segment:
    """One captured TCP segment."""

    ns: int
    src: str
    dst: str
    sport: int
    dport: int
    flags: int
    seq: int
    ack: int

    @property
    def is_syn(self) -> bool:
        return self.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN

    @property
    def is_syn_ack(self) -> bool:
        return self.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK


@dataclass(slots=True)
class WireProbe:
    """A SYN in a capture and, if any, the SYN/ACK that answers it.

    `syn_ns` and `synack_ns` are stamps of the capture this probe was read from; `peer_syn_ns`
    is the same SYN's stamp on the peer's end of the veth, when `join_peer_side` found it.
    """

    number: int  # 0-based, in capture order
    syn_ns: int
    sport: int
    seq: int
    synack_ns: int | None = None
    duplicates: int = 0  # further SYN/ACKs for this SYN (retransmissions)
    peer_syn_ns: int | None = None

    @property
    def rtt_ns(self) -> int | None:
        """SYN → SYN/ACK, both stamped by this capture."""
        return None if self.synack_ns is None else self.synack_ns - self.syn_ns

    @property
    def peer_rtt_ns(self) -> int | None:
        """The SYN's arrival on the peer's end → the SYN/ACK's stamp in this capture."""
        if self.synack_ns is None or self.peer_syn_ns is None:
            return None
        return self.synack_ns - self.peer_syn_ns


@dataclass
class WireRun:
    """Every SYN from `local` to `remote:port` in a capture, with its answer."""

    probes: list[WireProbe] = field(default_factory=list)
    unmatched_syn_acks: int = 0  # SYN/ACKs whose ack fits no earlier SYN

    @property
    def answered(self) -> list[WireProbe]:
        return [probe for probe in self.probes if probe.synack_ns is not None]

    def by_sport(self) -> dict[int, list[WireProbe]]:
        table: dict[int, list[WireProbe]] = {}
        for probe in self.probes:
            table.setdefault(probe.sport, []).append(probe)
        return table


def read_pcap(path: Path) -> Iterator[Segment]:
    """Yield every TCP segment of a classic pcap file, in file order."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    for endian in ("<", ">"):
        (magic,) = struct.unpack_from(endian + "I", data, 0)
        if magic in (_MAGIC_US, _MAGIC_NS):
            break
    else:
        raise ValueError(f"{path}: not a classic pcap file (magic {data[:4].hex()})")
    scale = 1 if magic == _MAGIC_NS else 1000
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    offset = 24
    for _ in range(_MAX_RECORDS):
        if offset + record.size > len(data):
            return
        seconds, fraction, captured, _original = record.unpack_from(data, offset)
        offset += record.size
        frame = data[offset : offset + captured]
        offset += captured
        if len(frame) < captured:
            return  # truncated last record (capture stopped mid-write)
        segment = _parse_frame(seconds * 1_000_000_000 + fraction * scale, frame, linktype)
        if segment is not None:
            yield segment


def _parse_frame(ns: int, frame: bytes, linktype: int) -> Segment | None:
    if linktype == _LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        start = 14
        while ethertype in _ETHERTYPE_VLAN and len(frame) >= start + 4:
            ethertype = struct.unpack_from("!H", frame, start + 2)[0]
            start += 4
        return _parse_ip(ns, frame[start:], ethertype)
    if linktype == _LINKTYPE_LINUX_SLL and len(frame) >= 16:
        return _parse_ip(ns, frame[16:], struct.unpack_from("!H", frame, 14)[0])
    if linktype == _LINKTYPE_LINUX_SLL2 and len(frame) >= 20:
        return _parse_ip(ns, frame[20:], struct.unpack_from("!H", frame, 0)[0])
    if linktype in (_LINKTYPE_RAW, _LINKTYPE_IPV4, _LINKTYPE_IPV6) and frame:
        version = frame[0] >> 4
        return _parse_ip(ns, frame, _ETHERTYPE_IPV4 if version == 4 else _ETHERTYPE_IPV6)
    return None


def _parse_ip(ns: int, packet: bytes, ethertype: int) -> Segment | None:
    if ethertype == _ETHERTYPE_IPV4:
        if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 6:
            return None
        if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:
            return None  # a non-first fragment: no TCP header
        header = (packet[0] & 0x0F) * 4
        src = str(ipaddress.IPv4Address(packet[12:16]))
        dst = str(ipaddress.IPv4Address(packet[16:20]))
    elif ethertype == _ETHERTYPE_IPV6:
        if len(packet) < 40 or packet[0] >> 4 != 6 or packet[6] != 6:
            return None  # not TCP, or behind extension headers (none of our tools sends them)
        header = 40
        src = str(ipaddress.IPv6Address(packet[8:24]))
        dst = str(ipaddress.IPv6Address(packet[24:40]))
    else:
        return None
    if len(packet) < header + 14:
        return None
    sport, dport, seq, ack = struct.unpack_from("!HHII", packet, header)
    flags = packet[header + 13]
    return Segment(ns=ns, src=src, dst=dst, sport=sport, dport=dport, flags=flags, seq=seq,
                   ack=ack)


def match_handshakes(segments: Iterator[Segment], local: str, remote: str, port: int) -> WireRun:
    """Pair each SYN local → remote:port with the SYN/ACK that answers it.

    A SYN/ACK answers a SYN on the same ports with ack == seq + 1. When several SYNs share
    ports and sequence number (nping repeats one SYN), the SYN/ACK is credited to the latest
    such SYN sent before it; if that one is already answered, it counts as a duplicate.
    """
    run = WireRun()
    latest: dict[tuple[int, int], WireProbe] = {}
    for segment in segments:
        if segment.is_syn and (segment.src, segment.dst, segment.dport) == (local, remote, port):
            probe = WireProbe(number=len(run.probes), syn_ns=segment.ns, sport=segment.sport,
                              seq=segment.seq)
            run.probes.append(probe)
            latest[(segment.sport, segment.seq)] = probe
        elif segment.is_syn_ack and (segment.src, segment.dst, segment.sport) == (
            remote,
            local,
            port,
        ):
            answered = latest.get((segment.dport, (segment.ack - 1) & 0xFFFFFFFF))
            if answered is None:
                run.unmatched_syn_acks += 1
            elif answered.synack_ns is None:
                answered.synack_ns = segment.ns
            else:
                answered.duplicates += 1
    return run


def join_peer_side(own: WireRun, peer: WireRun) -> int:
    """Give each SYN of our end's capture its arrival stamp on the peer's end (in place).

    Our end's capture stamps an outgoing SYN when the kernel hands copies to the packet taps,
    before the driver (and before the tap has copied it); the peer's end stamps it where it
    arrives. SYNs are paired in order per (source port, sequence number). Returns how many of
    our SYNs the peer's capture did not have (their `peer_syn_ns` stays None).
    """
    arrivals: dict[tuple[int, int], list[WireProbe]] = {}
    for probe in peer.probes:
        arrivals.setdefault((probe.sport, probe.seq), []).append(probe)
    missing = 0
    for probe in own.probes:
        queue = arrivals.get((probe.sport, probe.seq))
        if queue:
            probe.peer_syn_ns = queue.pop(0).syn_ns
        else:
            missing += 1
    return missing
