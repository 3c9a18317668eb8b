"""How fast the scan's probe sequence is built (prober.scan_plan, issue 8): probes/s that
iter_probes yields for blocks and for file lines, and check_plan's time. Pure: no sockets.

    PYTHONPATH=. .venv/bin/python bench/scan_plan [--lines N] [--runs R]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prober.scan_plan import ScanPlan, check_plan, iter_probes

LAB = ("198.18.0.0/15", "2001:2::/48")


def resolve(name: str, version: int | None) -> tuple[int, bytes]:
    return 4, bytes([198, 18, 0, 1])


def best(runs: int, work: Callable[[], int]) -> tuple[int, float]:
    """(items, best items/s) over ``runs`` runs."""
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        items = work()
        rates.append(items / (time.perf_counter() - start))
    return items, max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n = args.lines

    def probes(plan: ScanPlan, text: str | None = None) -> Callable[[], int]:
        def work() -> int:
            stdin = None if text is None else io.StringIO(text)
            return sum(1 for _ in iter_probes(plan, resolve, stdin=stdin))

        return work

    cases: list[tuple[str, Callable[[], int]]] = [
        ("block 198.16.0.0/12:80, no blocklist",
         probes(ScanPlan(targets=("198.16.0.0/12:80",), blocklist=False))),
        ("block /12:80 with the blocklist (198.18/15 skipped)",
         probes(ScanPlan(targets=("198.16.0.0/12:80",)))),
        ("blocks /16 x 16 ports + [v6]/112, shard 2/2",
         probes(ScanPlan(targets=("198.19.0.0/16:80-95", "[2001:2::2:0:0/112]:80"),
                         exempt=LAB, shard=1, shards=2))),
    ]
    plain = "".join(f"198.{18 + (i >> 16) % 2}.{(i >> 8) & 255}.{i & 255}:80\n" for i in range(n))
    v6 = "".join(f"[2001:2::{i >> 16:x}:{i & 0xFFFF:x}]:80\n" for i in range(n // 4))
    cases += [
        ("stdin lines a.b.c.d:port", probes(ScanPlan(file="-"), plain)),
        ("stdin lines [v6]:port", probes(ScanPlan(file="-"), v6)),
    ]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "targets.txt"
        path.write_text(plain)
        cases.append(("file lines a.b.c.d:port", probes(ScanPlan(file=str(path)))))
        for name, work in cases:
            items, rate = best(args.runs, work)
            print(f"{name:55} {items:>10,} probes  {rate:>12,.0f} probes/s")
        start = time.perf_counter()
        counts = check_plan(ScanPlan(file=str(path)))
        assert counts is not None
        print(f"{'check_plan, file of ' + format(n, ',') + ' lines':55} "
              f"{counts.targets:>10,} targets {time.perf_counter() - start:>10.2f} s")
    start = time.perf_counter()
    counts = check_plan(ScanPlan(targets=("0.0.0.0/0:1-65535",)))
    assert counts is not None
    print(f"{'check_plan, 0.0.0.0/0 on every port':55} {counts.targets:>10,} targets "
          f"{time.perf_counter() - start:>10.4f} s")


if __name__ == "__main__":
    main()
