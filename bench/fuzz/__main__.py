"""The long fuzz job, run by hand: 10^6 inputs in all, coverage-guided (atheris/libFuzzer).

Run from the repository root (no root needed: nothing is sent):

    .venv/bin/pip install atheris          # once; not a dependency of prober
    .venv/bin/python bench/fuzz [--inputs 1000000] [--only parse,syn]

Half the inputs go to the parser, the rest in equal shares to each probe state machine
(tests/unit/fuzzing.py: the same harness and invariants as the Hypothesis tests in CI).
Each target runs in its own process; a finding stops that target and leaves its input
under the output directory. See bench/README.md for the last numbers.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TARGET = Path(__file__).resolve().parent / "target.py"
PROBES = ("syn", "halfopen", "cookie-check", "close-we-close", "close-peer-closes")


@dataclass(frozen=True)
class Outcome:
    target: str
    inputs: int
    seconds: float
    coverage: int | None
    features: int | None
    finding: str | None  # the first line of what went wrong, or None


def seed_parse_corpus(corpus: Path) -> None:
    """Start the parser's search from the unit tests' valid packets (IPv4/IPv6, options,
    extension headers, ICMP quotes), so mutations begin past the first length checks."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.unit.test_parse import VALID

    for number, packet in enumerate(VALID):
        (corpus / f"seed-{number}").write_bytes(packet)


def run_target(name: str, inputs: int, out: Path) -> Outcome:
    corpus = out / f"corpus-{name}"
    corpus.mkdir(parents=True, exist_ok=True)
    if name == "parse":
        seed_parse_corpus(corpus)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(TARGET), name, f"-runs={inputs}", "-seed=1", "-timeout=20",
         "-max_len=4096", f"-artifact_prefix={out}/{name}-", "-print_final_stats=1",
         str(corpus)],
        capture_output=True, text=True, check=False,
    )
    seconds = time.monotonic() - started
    log = done.stdout + done.stderr
    (out / f"{name}.log").write_text(log)
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", log)
    finding = None
    if done.returncode != 0:
        lines = log.splitlines()
        marker = "=== Uncaught Python exception: ==="
        after = [lines[i + 1] for i, line in enumerate(lines[:-1]) if marker in line]
        finding = after[0].strip() if after else f"exit status {done.returncode}"
    return Outcome(
        target=name,
        inputs=int(runs.group(1)) if runs else 0,
        seconds=seconds,
        coverage=int(coverage[-1][0]) if coverage else None,
        features=int(coverage[-1][1]) if coverage else None,
        finding=finding,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs in all")
    parser.add_argument("--only", help="comma-separated targets: parse," + ",".join(PROBES))
    parser.add_argument("--out", type=Path, help="output directory (default: a new temp dir)")
    args = parser.parse_args()
    names = ["parse", *PROBES]
    if args.only:
        names = [name for name in args.only.split(",") if name]
        unknown = set(names) - {"parse", *PROBES}
        if unknown:
            parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    probe_names = [name for name in names if name != "parse"]
    shares = {name: args.inputs // len(names) for name in names}
    if "parse" in names and probe_names:
        shares = {"parse": args.inputs // 2}
        shares.update({name: args.inputs // 2 // len(probe_names) for name in probe_names})
    out = args.out or Path(tempfile.mkdtemp(prefix="prober-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"{'target':34} {'inputs':>9} {'seconds':>8} {'inputs/s':>9} {'cov':>6} {'ft':>6}"
          "  finding", flush=True)
    outcomes = []
    for name in names:
        outcome = run_target(name, shares[name], out)
        outcomes.append(outcome)
        rate = outcome.inputs / outcome.seconds if outcome.seconds else 0.0
        print(f"{name:34} {outcome.inputs:>9} {outcome.seconds:>8.1f} {rate:>9.0f}"
              f" {outcome.coverage or '-':>6} {outcome.features or '-':>6}"
              f"  {outcome.finding or 'none'}", flush=True)
    total = sum(o.inputs for o in outcomes)
    print(f"{'all':34} {total:>9} {sum(o.seconds for o in outcomes):>8.1f}"
          f"   logs, corpora and findings: {out}")
    return 1 if any(o.finding for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
