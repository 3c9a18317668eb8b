"""pcap files of what prober sent and received, with its kernel timestamps.

Classic libpcap format with nanosecond timestamps (magic 0xa1b23c4d) and link type
LINKTYPE_RAW (101): each record is an IPv4 or IPv6 packet, as tshark and Wireshark read it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

PCAP_MAGIC_NANOSECONDS = 0xA1B23C4D
LINKTYPE_RAW = 101
SNAPLEN = 262144

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")


def write_pcap(path: Path | str, packets: Iterable[tuple[int, bytes]]) -> int:
    """Write ``(time_ns, ip_packet)`` pairs in time order; returns how many were written."""
    ordered = sorted(packets, key=lambda item: item[0])
    with open(path, "wb") as out:
        out.write(_FILE_HEADER.pack(PCAP_MAGIC_NANOSECONDS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW))
        for time_ns, data in ordered:
            seconds, nanoseconds = divmod(time_ns, 1_000_000_000)
            captured = data[:SNAPLEN]
            out.write(_RECORD_HEADER.pack(seconds, nanoseconds, len(captured), len(data)))
            out.write(captured)
    return len(ordered)
