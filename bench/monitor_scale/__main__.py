"""How many targets `Prober.monitor` holds at a 1 s interval, at what CPU per probe and memory,
beside nping, hping3 and blackbox_exporter's tcp module, in one run.

Run from the repository root, as root (it builds a network namespace):

    .venv/bin/python bench/monitor_scale [--targets 1000,5000,10000,15000] [--duration 30]
        [--memory MINUTES] [--peers nping,hping3,blackbox] [--profile FILE] [--json]

See bench/README.md for what it measures and the last numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> int:
    # Run as a directory (`python bench/monitor_scale`): make the bench packages importable.
    bench = str(Path(__file__).resolve().parent.parent)
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from monitor_scale.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
