"""tcpdump on the element's interfaces, and the sender's datagrams read back from the pcaps."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prober.lab import LabError
from prober.lab.commands import command_env, in_namespace, tool

from .sender import MAGIC, PAYLOAD

CAPTURE_READY_TIMEOUT_S = 10.0
CAPTURE_LINGER_S = 0.3  # after the last frame is due, before SIGINT
STOP_TIMEOUT_S = 5.0
SNAPSHOT_BYTES = 128  # Ethernet + IPv6 + UDP + our payload fit

_PCAP_NANO_MAGIC = 0xA1B23C4D
_PCAP_MICRO_MAGIC = 0xA1B2C3D4
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_UDP = 17


@dataclass
class CaptureStats:
    captured: int | None = None
    dropped: int | None = None
    stderr: str = ""


@dataclass
class Frames:
    """The sender's datagrams in one capture: sequence number -> capture time (ns), in order."""

    times_ns: dict[int, int] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    duplicates: int = 0


@contextlib.contextmanager
def capture(namespace: str, device: str, path: Path, bpf_filter: str) -> Iterator[CaptureStats]:
    """tcpdump on `device` in `namespace` into `path`, nanosecond stamps, for the block.

    Ready once tcpdump says 'listening on'; stopped with SIGINT by PID (`ip netns exec`
    execs tcpdump in place) after the block, then SIGKILL if it lingers.
    """
    stats = CaptureStats()
    argv = in_namespace(namespace, [
        tool("tcpdump"), "-i", device, "-n", "-s", str(SNAPSHOT_BYTES), "-w", str(path),
        "--immediate-mode", "-U", "--time-stamp-precision=nano", bpf_filter,
    ])
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=command_env(),
                               start_new_session=True)
    received = b""
    try:
        received = _read_until(process, b"listening on", CAPTURE_READY_TIMEOUT_S)
        yield stats
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
        try:
            rest = process.communicate(timeout=STOP_TIMEOUT_S)[1]
        except subprocess.TimeoutExpired:
            process.kill()
            rest = process.communicate(timeout=STOP_TIMEOUT_S)[1]
        stats.stderr = (received + (rest or b"")).decode(errors="replace")
    for name, pattern in (("captured", r"(\d+) packets? captured"),
                          ("dropped", r"(\d+) packets? dropped by kernel")):
        match = re.search(pattern, stats.stderr)
        if match:
            setattr(stats, name, int(match.group(1)))


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout_s: float) -> bytes:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout_s
    received = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while marker not in received and len(received) < 65536:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"tcpdump not listening after {timeout_s} s: {received!r}")
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                raise LabError(f"tcpdump exited with {process.wait(timeout=STOP_TIMEOUT_S)}: "
                               f"{received.decode(errors='replace').strip()}")
            received += chunk
    return received


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
