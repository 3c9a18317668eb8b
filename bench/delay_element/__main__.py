"""How exactly the lab's delay element (prober.lab.element) delays, orders and drops frames.

Run from the repository root, as root (it builds network namespaces):

    .venv/bin/python bench/delay_element [--rate 1000] [--seconds 5] [--delay 0.020]
        [--jitter 0] [--loss 0.1] [--seed 7] [--spin-margin S] [--json]

See bench/README.md for what it measures and the last numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> int:
    # Run as a directory (`python bench/delay_element`): make the package importable.
    bench = str(Path(__file__).resolve().parent.parent)
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from delay_element.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
