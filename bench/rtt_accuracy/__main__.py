"""How far each tool's reported SYN RTT is from the RTT on the wire.

Run from the repository root, as root (it builds a network namespace):

    .venv/bin/python bench/rtt_accuracy [--count 1000] [--rate 100]
        [--tools prober,hping3,nping,scapy] [--json] [--scapy-socket reuse|fresh] [--keep]

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
