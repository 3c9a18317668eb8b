"""tcpdump on the element's interfaces, and the sender's datagrams read back from the pcaps."""

from __future__ import annotations

import struct
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from pathlib import Path

from prober.lab import LabError
from prober.lab.capture import CaptureStats, tcpdump

from .sender import MAGIC, PAYLOAD

CAPTURE_LINGER_S = 0.3  # after the last frame is due, before SIGINT
SNAPSHOT_BYTES = 128  # Ethernet + IPv6 + UDP + our payload fit

_PCAP_NANO_MAGIC = 0xA1B23C4D
_PCAP_MICRO_MAGIC = 0xA1B2C3D4
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_UDP = 17


@dataclass
class Frames:
    """The sender's datagrams in one capture: sequence number -> capture time (ns), in order."""

    times_ns: dict[int, int] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    duplicates: int = 0


def capture(
    namespace: str, device: str, path: Path, bpf_filter: str
) -> ContextManager[CaptureStats]:
    """tcpdump on `device` in `namespace` into `path`, nanosecond stamps, for the block (the
    caller waits CAPTURE_LINGER_S for the last frames before leaving it)."""
    return tcpdump(device, path, bpf_filter, namespace=namespace, linger_s=0.0,
                   extra_args=("-s", str(SNAPSHOT_BYTES)))


def read_frames(path: Path) -> Frames:
    """The sender's datagrams in a pcap file (Ethernet, IPv4 or IPv6, UDP)."""
    data = path.read_bytes()
    if len(data) < 24:
        raise LabError(f"{path}: not a pcap file ({len(data)} bytes)")
    for byte_order in ("<", ">"):
        (magic,) = struct.unpack_from(byte_order + "I", data)
        if magic in (_PCAP_NANO_MAGIC, _PCAP_MICRO_MAGIC):
            break
    else:
        raise LabError(f"{path}: unknown pcap magic {data[:4].hex()}")
    fraction_ns = 1 if magic == _PCAP_NANO_MAGIC else 1000
    record = struct.Struct(byte_order + "IIII")
    frames = Frames()
    offset = 24
    while offset + record.size <= len(data):
        seconds, fraction, captured_length, _ = record.unpack_from(data, offset)
        offset += record.size
        frame = data[offset:offset + captured_length]
        offset += captured_length
        sequence = _sequence(frame)
        if sequence is None:
            continue
        if sequence in frames.times_ns:
            frames.duplicates += 1
            continue
        frames.times_ns[sequence] = seconds * 1_000_000_000 + fraction * fraction_ns
        frames.order.append(sequence)
    return frames


def _sequence(frame: bytes) -> int | None:
    if len(frame) < 14:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype == _ETHERTYPE_IPV4 and len(frame) >= 34:
        header_length = (frame[14] & 0x0F) * 4
        protocol = frame[23]
        udp = 14 + header_length
    elif ethertype == _ETHERTYPE_IPV6 and len(frame) >= 54:
        protocol = frame[20]
        udp = 54
    else:
        return None
    payload = udp + 8
    if protocol != _UDP or len(frame) < payload + PAYLOAD.size:
        return None
    magic, sequence = PAYLOAD.unpack_from(frame, payload)
    return int(sequence) if magic == MAGIC else None
