"""The README's first command (``./demo`` as root, which installs prober first) runs this tour.

It brings the built-in lab up (network namespaces on this machine, each a real Linux TCP stack,
addressed from 198.18.0.0/15 and 2001:2::/48 only), runs `prober syn` against an open, a
filtered, a router-rejected and a far-away peer, `prober scan` over the 65,536 addresses of
its `many` block, and leaves the lab up for you to go on.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from _args import OneLineParser

from prober.lab import LabError, LabNotPermitted, LabOptions, LabRefused, lab_up


def show(*args: str) -> None:
    print(f"\n$ sudo prober {shlex.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "prober", *args], check=False)
    print(f"(exit status {done.returncode})", flush=True)


def endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def main() -> int:
    print("$ sudo prober lab up", flush=True)
    result = lab_up(LabOptions.parse("20ms", "1ms", "1%", None))
    print(result.message)
    status = result.status
    open_v4 = status.address_of("open", 4)
    filtered_v4 = status.address_of("filtered", 4)
    filtered_v6 = status.address_of("filtered", 6)
    far_v4 = status.address_of("far", 4)
    show("syn", endpoint(open_v4, 80), "-c", "3", "-i", "0.2")
    show("syn", endpoint(filtered_v4, 80), "-c", "1", "-W", "0.5")
    show("syn", endpoint(filtered_v6, 81), "-c", "1")
    show("syn", endpoint(far_v4, 80), "-c", "3", "-i", "0.2")
    # The whole `many` block (65,536 addresses), open ports' records to a file, the summary
    # on stderr.
    records = Path(tempfile.gettempdir()) / "prober-demo-open.jsonl"
    show("scan", f"{status.address_of('many', 4)}:80", "--rate", "20000", "--open-only",
         "-o", str(records))
    print(
        "\nThe lab stays up. Go on with (as root):\n"
        "  .venv/bin/prober lab status             every peer, and the command that shows it\n"
        f"  .venv/bin/prober halfopen {endpoint(status.address_of('impatient', 4), 80)}\n"
        f"  .venv/bin/prober close {endpoint(open_v4, 80)}"
        " --send 'GET / HTTP/1.0\\r\\n\\r\\n'\n"
        f"  head -3 {records}   the scan's records (JSON lines)\n"
        "  .venv/bin/python -m pytest              the tests\n"
        "Take it down with:  .venv/bin/prober lab down"
    )
    return 0


def parse_args(argv: list[str] | None = None) -> None:
    parser = OneLineParser(
        prog="demo.py",
        description="Bring the built-in lab up (as root), run prober syn against four of its "
                    "peers and prober scan over its many block; the lab stays up. Takes no "
                    "arguments. Exit status as `prober lab up`: 0 done, 3 not root, 7 the lab "
                    "failed, 8 it refused.",
    )
    parser.parse_args(argv)


# `prober lab up`'s exit status for each refusal (prober/cli.py); any other LabError is 7.
EXIT_OF_LAB_ERROR: dict[type[LabError], int] = {LabNotPermitted: 3, LabRefused: 8}


if __name__ == "__main__":
    parse_args()
    try:
        sys.exit(main())
    except LabError as error:  # one line, with `prober lab up`'s exit status
        print(f"demo.py: error: {error}", file=sys.stderr)
        sys.exit(EXIT_OF_LAB_ERROR.get(type(error), 7))
