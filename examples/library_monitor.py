"""The library's monitor: every target probed once per interval, one typed sample per target
per round, with its rolling statistics (what `prober monitor` exports to Prometheus).

    sudo .venv/bin/python examples/library_monitor.py 198.18.0.18:80 198.18.0.18:81 198.18.0.34:80
    sudo .venv/bin/python examples/library_monitor.py 198.18.0.130:80 --rounds 5 --interval 0.5
    sudo .venv/bin/python examples/library_monitor.py '[2001:2::1:2]:80' --json

(The built-in lab's peers, `sudo prober lab up`: 198.18.0.18:80 open, :81 closed, 198.18.0.34:80
filtered (dropped), 198.18.0.130:80 far, behind a 20 ms delay.) One line per sample:

    round 1 198.18.0.18:80  open     syn-ack     rtt 0.071ms  ewma 0.071ms  p99 0.071ms  loss 0%
    round 1 198.18.0.18:81  closed   rst         rtt 0.041ms  ewma 0.041ms  p99 0.041ms  loss 0%
    round 1 198.18.0.34:80  filtered no-response rtt -        ewma -        p99 -        loss 100%

Exit status 0: every target's last round was open; 1: some were not; 2: bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable

import uvloop
from _args import OneLineParser

from prober import PortState, Prober, ProberError, UsageError
from prober.monitor.loop import MonitorSample
from prober.targets import parse_target


async def main(targets: list[tuple[str, int]], rounds: int, interval: float,
               as_json: bool) -> int:
    last: dict[str, MonitorSample] = {}
    stop = asyncio.Event()
    async with Prober() as prober:
        # Samples come as answers (or timeouts) do, each target at its own phase of the
        # interval; the iterator ends once `stop` is set.
        async for sample in prober.monitor(targets, interval=interval,
                                           timeout=min(1.0, interval), stop=stop):
            if sample.round > rounds:  # a target early in the interval is a round ahead
                continue
            print(json.dumps(sample.to_dict()) if as_json else line(sample), flush=True)
            last[sample.target] = sample
            if len(last) == len(targets) and all(s.round == rounds for s in last.values()):
                stop.set()
    return 0 if all(s.state is PortState.OPEN for s in last.values()) else 1


def line(sample: MonitorSample) -> str:
    stats = sample.stats
    loss = "-" if stats.loss is None else f"{stats.loss:.0%}"
    return (f"round {sample.round} {sample.target:<15} {sample.state:<8} {sample.reason:<11} "
            f"rtt {ms(sample.rtt_s):<8} ewma {ms(stats.ewma_rtt_s):<8} "
            f"p99 {ms(stats.p99_rtt_s):<8} loss {loss}")


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}ms"


def target(text: str) -> tuple[str, int]:
    try:
        parsed = parse_target(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return parsed.host, parsed.port


def number(kind: Callable[[str], float], low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:  # NaN fails too
            raise argparse.ArgumentTypeError(f"{text!r} is not a number from {low:g} to {high:g}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="library_monitor.py",
        description="Monitor TCP targets with prober's library for a few rounds, one SYN per "
                    "target per interval, and print one line per sample (needs root or "
                    "CAP_NET_RAW). Exit status 0 all open in the last round, 1 not, 2 bad usage.",
    )
    parser.add_argument("targets", nargs="+", type=target, metavar="HOST:PORT",
                        help="e.g. 198.18.0.18:80 or '[2001:2::1:2]:80'")
    parser.add_argument("--rounds", type=number(int, 1, 1000), default=3, metavar="N",
                        help="rounds per target, 1-1000 (default 3)")
    parser.add_argument("--interval", type=number(float, 0.05, 60), default=1.0, metavar="S",
                        help="seconds between one target's probes, 0.05-60 (default 1)")
    parser.add_argument("--json", action="store_true",
                        help="print each sample's to_dict() as a JSON line (prober monitor --json)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    unique = list(dict.fromkeys(args.targets))  # a target named twice is one target
    try:
        sys.exit(uvloop.run(main(unique, int(args.rounds), args.interval, args.json)))
    except ProberError as error:  # a name that does not resolve, raw sockets not allowed, ...
        print(f"library_monitor.py: error: {error}", file=sys.stderr)
        sys.exit(2)
