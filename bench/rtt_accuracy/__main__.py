"""How far each tool's SYN send and receive instants, and its RTT, are from tcpdump's stamps
of the same packets on both ends of a veth.

Run from the repository root, as root (it builds a network namespace):

    .venv/bin/python bench/rtt_accuracy [--runs 3] [--count 1000] [--rate 100]
        [--tools prober,hping3,nping,scapy] [--json] [--json-file FILE]
        [--scapy-socket reuse|fresh] [--capture-mode immediate|buffered] [--keep]

See bench/README.md for what it measures and the last numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> int:
    # Run as a directory (`python bench/rtt_accuracy`): make the package importable.
    bench = str(Path(__file__).resolve().parent.parent)
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from rtt_accuracy.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
