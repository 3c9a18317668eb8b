"""Paced UDP sender for the delay-element bench; runs inside the left end host's namespace.

    python bench/delay_element/sender.py --destination IP --port P --count N --rate R

Datagram k (k = 0..N-1) carries MAGIC and k, and leaves at start + k / rate: sleep() until
200 µs before, then a spin on the clock (a longer spin would keep a CPU busy at 1,000/s and
compete with the element). Prints one JSON line: how many were sent, and the latest send's
lateness.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
import sys
import time
from collections.abc import Sequence

MAGIC = b"PDLY"
PAYLOAD = struct.Struct("!4sI")  # magic, sequence number
SOURCE_PORT = 40000
MAX_COUNT = 1_000_000
SLEEP_MARGIN_NS = 200_000  # sleep() until this long before a send, then spin
NS_PER_S = 1_000_000_000
_LAB_NETWORKS = (ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:2::/48"))


def send(destination: str, port: int, count: int, rate: float, size: int) -> dict[str, int]:
    address = ipaddress.ip_address(destination)
    if not any(address in network for network in _LAB_NETWORKS if network.version
               == address.version):
        raise SystemExit(f"sender: {destination} is not a lab address")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    padding = b"\0" * max(0, size - PAYLOAD.size)
    interval_ns = round(NS_PER_S / rate)
    latest_late_ns = 0
    sent = 0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", SOURCE_PORT))
        start_ns = time.time_ns() + 10_000_000  # 10 ms to settle
        for sequence in range(count):
            due_ns = start_ns + sequence * interval_ns
            ahead_ns = due_ns - time.time_ns()
            if ahead_ns > SLEEP_MARGIN_NS:
                time.sleep((ahead_ns - SLEEP_MARGIN_NS) / NS_PER_S)
            while time.time_ns() < due_ns:
                pass
            sock.sendto(PAYLOAD.pack(MAGIC, sequence) + padding, (destination, port))
            latest_late_ns = max(latest_late_ns, time.time_ns() - due_ns)
            sent += 1
    return {"sent": sent, "max_late_ns": latest_late_ns}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--destination", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="datagrams per second")
    parser.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    arguments = parser.parse_args(argv)
    if not 0 < arguments.count <= MAX_COUNT or not 0 < arguments.rate <= 1_000_000:
        parser.error("count must be 1..1000000 and rate 0..1000000")
    result = send(arguments.destination, arguments.port, arguments.count, arguments.rate,
                  arguments.size)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
