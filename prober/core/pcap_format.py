"""The classic libpcap file format, as bytes: nanosecond timestamps (magic 0xa1b23c4d) and
link type LINKTYPE_RAW (101), each record one IPv4 or IPv6 packet, as tshark and Wireshark
read it."""

from __future__ import annotations

import struct
from typing import Final

PCAP_MAGIC_NANOSECONDS: Final = 0xA1B23C4D
LINKTYPE_RAW: Final = 101
SNAPLEN: Final = 262144

_FILE_HEADER: Final = struct.Struct("<IHHiIII")
_RECORD_HEADER: Final = struct.Struct("<IIII")
RECORD_HEADER_SIZE: Final = _RECORD_HEADER.size


def file_header() -> bytes:
    return _FILE_HEADER.pack(PCAP_MAGIC_NANOSECONDS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW)


def record(time_ns: int, data: bytes) -> bytes:
    """One packet's record: its header (time, captured and original length), then the bytes."""
    seconds, nanoseconds = divmod(time_ns, 1_000_000_000)
    captured = data[:SNAPLEN]
    return _RECORD_HEADER.pack(seconds, nanoseconds, len(captured), len(data)) + captured


def record_time(header: bytes) -> int:
    """The time (ns) in a record header."""
    seconds, nanoseconds, _captured, _length = _RECORD_HEADER.unpack(header)
    return int(seconds) * 1_000_000_000 + int(nanoseconds)


def record_length(header: bytes) -> int:
    return int(_RECORD_HEADER.unpack(header)[2])
