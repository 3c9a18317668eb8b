"""How fast `prober scan` sends, how much of the lab's `many` block it finds, and at what CPU
and memory, beside masscan, zmap, nmap and a Scapy sr() loop, in one run.

Run from the repository root, as root, with the built-in lab up (`prober lab up`):

    .venv/bin/python bench/scan_rate [--quick] [--tools prober,masscan,zmap,nmap,scapy]
        [--rates 20000,50000,100000,150000,200000] [--memory] [--json]

See bench/README.md for what it measures and the last numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> int:
    # Run as a directory (`python bench/scan_rate`): make the package importable.
    bench = str(Path(__file__).resolve().parent.parent)
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from scan_rate.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
