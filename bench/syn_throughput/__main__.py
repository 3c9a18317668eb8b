"""How fast `prober syn -c N -i 0` runs, and at what CPU per probe, next to hping3 and nping.

Run from the repository root, as root (it builds a network namespace):

    .venv/bin/python bench/syn_throughput [--count 20000] [--tools prober,hping3,nping]
        [--runs 3] [--profile FILE] [--json]

See bench/README.md for what it measures and the last numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> int:
    # Run as a directory (`python bench/syn_throughput`): make the package importable.
    bench = str(Path(__file__).resolve().parent.parent)
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from syn_throughput.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
