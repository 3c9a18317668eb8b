"""How fast `prober syn -c N -i 0` runs, and at what CPU per probe, next to hping3 and nping.

Run from the repository root, as root (it builds a network namespace):

    .venv/bin/python bench/syn_throughput [--count 20000] [--runs 3] [--profile FILE]
        [--tools prober,prober-library,hping3,nping] [--json]

See bench/README.md for what it measures and the last numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a directory (`python bench/syn_throughput`): its parent makes it importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from syn_throughput.cli import main

    sys.exit(main())
