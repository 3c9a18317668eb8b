"""The library's scan: typed results from ``async for``, each ``to_dict()`` a JSON line.

    sudo .venv/bin/python examples/library_scan.py 198.19.0.0/24:80,81 --rate 5000
    sudo .venv/bin/python examples/library_scan.py 198.19.0.0/16 -p 80 --rate 50000 --open-only
    sudo .venv/bin/python examples/library_scan.py '[2001:2::2:0:0/120]:80' --seed 7 --shard 1/4

(198.19.0.0/16 and 2001:2::2:0:0/112 are the built-in lab's `many` peer: `prober lab up`.)
Prints one JSON line per target and port, as `prober scan` does, then the summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import uvloop
from _args import OneLineParser

from prober import PortState, Prober, ProberError


async def main(targets: list[str], ports: str | None, rate: float, wait: float,
               seed: int | None, shard: tuple[int, int], open_only: bool) -> int:
    states: Counter[PortState] = Counter()
    async with Prober() as prober:
        run = prober.scan(targets, ports=ports, rate=rate, wait=wait, seed=seed, shard=shard)
        async for result in run:  # one ScanResult per target and port, as verdicts come
            states[result.state] += 1
            if open_only and result.state is not PortState.OPEN:
                continue
            print(json.dumps(result.to_dict()))
    summary = run.summary
    counts = ", ".join(f"{n} {state.value}" for state, n in states.most_common())
    if summary is not None:
        print(f"{summary.results} results ({counts or 'none'}) in {summary.duration_s:.1f} s, "
              f"{summary.rate_pps:,.0f} SYN/s; kernel drops {summary.kernel_drops}"
              + ("" if summary.complete else "; INCOMPLETE: try a lower --rate"),
              file=sys.stderr)
    return 0 if summary is None or summary.complete else 1


Number = TypeVar("Number", int, float)


def number(kind: Callable[[str], Number], low: Number, high: Number
           ) -> Callable[[str], Number]:
    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not from {low:,.10g} to {high:,.10g}")
        return value

    return parse


def shard(text: str) -> tuple[int, int]:
    """``I/N`` on the command line (1-based, as `prober scan --shard`) -> (I-1, N)."""
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 1 <= I <= N, e.g. 1/4")
    return int(match[1]) - 1, int(match[2])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="library_scan.py",
        description="SYN-scan TARGETs with prober's library and print a JSON line per target "
                    "and port (needs root or CAP_NET_RAW). Exit status 0 complete, 1 "
                    "incomplete (kernel drops), 2 bad usage.",
    )
    parser.add_argument("targets", nargs="+", metavar="TARGET",
                        help="HOST:PORTS, [V6]:PORTS, a CIDR block (198.19.0.0/24:80), or HOST "
                             "with -p")
    parser.add_argument("-p", "--ports",
                        help="ports for targets given without, e.g. 22,80,8000-8100")
    parser.add_argument("--rate", type=number(float, 1, 10_000_000), default=1000.0,
                        metavar="PPS", help="SYNs per second (default 1000)")
    parser.add_argument("--wait", type=number(float, 0, 60), default=2.0, metavar="S",
                        help="seconds to wait for answers after each SYN (default 2)")
    parser.add_argument("--seed", type=number(int, 0, 2**64 - 1), metavar="N",
                        help="keys the probe order (default random); shards need one seed")
    parser.add_argument("--shard", type=shard, default=(0, 1), metavar="I/N",
                        help="this machine's share of the scan, 1/4 .. 4/4 (default 1/1); "
                             "every shard with the same --seed")
    parser.add_argument("--open-only", action="store_true", help="print open ports only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    try:
        sys.exit(uvloop.run(main(args.targets, args.ports, args.rate, args.wait, args.seed,
                                 args.shard, args.open_only)))
    except ProberError as error:  # a bad target line, raw sockets not allowed, ...
        print(f"library_scan.py: error: {error}", file=sys.stderr)
        sys.exit(2)
