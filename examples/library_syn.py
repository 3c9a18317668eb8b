"""The library API: probe a port from asyncio code and use the typed results.

    sudo .venv/bin/python examples/library_syn.py 127.0.0.1 22
    sudo .venv/bin/python examples/library_syn.py 198.18.0.18 80 --count 5   # the lab's open peer
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import uvloop
from _args import OneLineParser

from prober import PortState, Prober, ProberError


async def main(host: str, port: int, count: int) -> int:
    async with Prober() as prober:
        run = await prober.syn(host, port, count=count, interval=0.1, timeout=1.0)
    for probe in run.probes:
        rtt = "-" if probe.rtt is None else f"{probe.rtt.us:.1f} µs ({probe.rtt.clock})"
        print(f"probe {probe.probe}: {probe.state} ({probe.reason}) rtt {rtt}")
    print(run.to_dict())
    return 0 if run.state is PortState.OPEN else 1


def number(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number from {low} to {high}")
        return int(text)

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="library_syn.py",
        description="Send SYNs to HOST PORT with prober's library and print the typed results "
                    "(needs root or CAP_NET_RAW). Exit status 0 open, 1 not open, 2 bad usage.",
    )
    parser.add_argument("host", help="an address or a name, e.g. 127.0.0.1 or 2001:2::1:2")
    parser.add_argument("port", type=number(1, 65535), help="TCP port, 1-65535")
    parser.add_argument("--count", type=number(1, 100), default=3, metavar="N",
                        help="probes to send, 1-100 (default 3)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    try:
        sys.exit(uvloop.run(main(args.host, args.port, args.count)))
    except ProberError as error:  # a name that does not resolve, raw sockets not allowed, ...
        print(f"library_syn.py: error: {error}", file=sys.stderr)
        sys.exit(2)
