"""The library API: does a server hold TIME-WAIT after it closes, and for how long?

    sudo .venv/bin/python examples/library_timewait.py 198.18.0.18 80          # the lab's open peer
    sudo .venv/bin/python examples/library_timewait.py 198.18.0.114 80 --quick # no-timewait
"""

from __future__ import annotations

import argparse
import sys

import uvloop
from _args import OneLineParser

from prober import DurationEnd, Prober, ProberError, TimeWaitResult

REQUEST = b"GET / HTTP/1.0\r\n\r\n"  # an HTTP/1.0 server answers, then closes first


async def main(host: str, port: int, quick: bool) -> int:
    async with Prober() as prober:
        result: TimeWaitResult = await prober.timewait(
            host, port, send=REQUEST, measure_duration=not quick
        )
    print(f"holds TIME-WAIT: {result.holds_time_wait} ({result.holds_evidence})")
    if result.duration_end is DurationEnd.MEASURED:
        print(f"for {result.duration_s} s ± {result.duration_error_s} s")
    for probe in result.reuse:
        print(f"  {probe.role}: {probe.kind} at +{probe.at_s:.1f} s -> {probe.answer}")
    print(f"a SYN above the old sequence space reopens it: {result.above_isn_accepted}")
    return 0 if result.holds_time_wait is not None else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="library_timewait.py",
        description="Make HOST PORT (an HTTP/1.0 server) close first, then observe its "
                    "TIME-WAIT with prober's library (needs root). Exit status 0 answered, "
                    "1 unknown (e.g. the server did not close first), 2 bad usage.",
    )
    parser.add_argument("host", help="an address or a name, e.g. 198.18.0.18")
    parser.add_argument("port", type=_port, help="TCP port, 1-65535")
    parser.add_argument("--quick", action="store_true",
                        help="only ask whether TIME-WAIT is held (no 60 s duration)")
    return parser.parse_args(argv)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 65535")
    return int(text)


if __name__ == "__main__":
    args = parse_args()
    try:
        sys.exit(uvloop.run(main(args.host, args.port, args.quick)))
    except ProberError as error:  # a name that does not resolve, raw sockets not allowed, ...
        print(f"library_timewait.py: error: {error}", file=sys.stderr)
        sys.exit(2)
