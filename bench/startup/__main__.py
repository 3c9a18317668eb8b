"""CPU time (user + sys) of one SYN with prober, nping and hping3, to an answering lab peer.

Run from the repository root, as root (it builds network namespaces):

    .venv/bin/python bench/startup [--runs 11] [--tools prober,nping,hping3] [--json]

See bench/README.md for what it measures and the last numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> int:
    # Run as a directory (`python bench/startup`): make the package importable.
    bench = str(Path(__file__).resolve().parent.parent)
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from startup.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
