"""pcap files of what prober sent and received, with its kernel timestamps (the format is
prober.core.pcap_format)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prober.core.pcap_format import PCAP_MAGIC_NANOSECONDS, file_header, record

__all__ = ["PCAP_MAGIC_NANOSECONDS", "write_pcap"]


def write_pcap(path: Path | str, packets: Iterable[tuple[int, bytes]]) -> int:
    """Write ``(time_ns, ip_packet)`` pairs in time order; returns how many were written."""
    ordered = sorted(packets, key=lambda item: item[0])
    with open(path, "wb") as out:
        out.write(file_header())
        for time_ns, data in ordered:
            out.write(record(time_ns, data))
    return len(ordered)
