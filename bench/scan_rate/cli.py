"""Each scanner in turn over the lab's `many` block, in one run, and the report.

    root ns  --pl00-rtr-->  lab router  -->  many ns: 198.19.0.0/16 and 2001:2::2:0:0/112
                                              (every address; port 80 open, others RST)

The lab must be up (`prober lab up`); the bench neither starts nor stops it. Before anything
is sent it checks that the lab is healthy and that the block (first, middle and last
address, both families) routes over the lab's own link; every tool is given only addresses
of that block, and masscan and zmap that link as their interface.

Default (full) run: the /16 on 16 ports (80 open, 81-95 closed), 1,048,576 probes per tool
and rate, so the rate is sustained over more than 10^6 SYNs; nmap over the first /18 of it
(262,144 probes) and Scapy over the first /20 on port 80 (4,096): they are 10 and 100 times
slower. `--quick`: the /16 on port 80 only. `--memory`: prober alone, its peak RSS over
16,384 probes (the first /22 on the 16 ports) and 1,048,576 (the /16 on them), and with
`--memory-large` 10,485,760 (the /16 on 160 ports). Reported, never asserted: the exit
status is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import ipaddress
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from prober.lab import LabError
from prober.lab.commands import command_env, find_tool

from . import report
from .lab import ManyPeer, find_many
from .syncount import SynCounter, syn_filter
from .targets import CLOSED_PORTS, OPEN_PORT, TargetSet
from .tools import (
    PEER_TOOLS,
    REPO,
    RUNNERS,
    TOOLS,
    Context,
    ToolRun,
    measure_tool,
    run_prober,
    run_scapy,
)

DEFAULT_RATES = {
    "prober": (20_000, 50_000, 100_000, 150_000, 200_000),
    "masscan": (100_000,),
    "zmap": (150_000,),
    "nmap": (50_000,),  # its --min-rate; it reaches what it reaches
}
MEMORY_SMALL_PREFIX = 22  # 1,024 addresses x the 16 ports: 16,384 probes, the 10^4 point
MEMORY_LARGE_PORTS = tuple(range(OPEN_PORT, OPEN_PORT + 160))  # the /16 on 160: 10^7 probes


def rates(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected rates like 20000,50000") from None
    if not values or not all(100 <= value <= 5_000_000 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: rates from 100 to 5,000,000 SYN/s")
    return values


def prefix_length(text: str) -> int:
    if not (text.isdigit() and 16 <= int(text) <= 30):
        raise argparse.ArgumentTypeError(f"{text!r}: a prefix length from 16 to 30")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/scan_rate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="the /16 on port 80 only (65,536 probes per tool and rate)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated, run in this order (default {','.join(TOOLS)})")
    parser.add_argument("--rates", type=rates, default=DEFAULT_RATES["prober"],
                        help="prober's rates, stepped (default 20000,50000,100000,150000,200000)")
    parser.add_argument("--masscan-rates", type=rates, default=DEFAULT_RATES["masscan"])
    parser.add_argument("--zmap-rates", type=rates, default=DEFAULT_RATES["zmap"])
    parser.add_argument("--nmap-rates", type=rates, default=DEFAULT_RATES["nmap"],
                        help="nmap's --min-rate (default 50000)")
    parser.add_argument("--nmap-prefix", type=prefix_length, default=18,
                        help="nmap scans the first /N of the block (default 18)")
    parser.add_argument("--scapy-prefix", type=prefix_length, default=20,
                        help="Scapy's sr() gets the first /N of the block on port 80 (default 20)")
    parser.add_argument("--ipv6", action="store_true",
                        help="also prober over the block's IPv6 /112 at each rate")
    parser.add_argument("--memory", action="store_true",
                        help="only prober's peak RSS over 10^4 and 10^6 probes")
    parser.add_argument("--memory-rate", type=int, default=50_000,
                        help="prober's rate in --memory (default 50000)")
    parser.add_argument("--memory-large", action="store_true",
                        help="--memory also over 10^7 probes (the /16 on 160 ports)")
    parser.add_argument("--wait", type=float, default=2.0,
                        help="every tool's wait after its last SYN (default 2 s)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="pause between runs, so the target's SYN queue empties (default 2 s)")
    parser.add_argument("--seed", type=int, default=1, help="prober's --seed")
    parser.add_argument("--threshold", type=float, default=99.9,
                        help="open hosts found, %%, for a rate to pass (default 99.9)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--json-file", type=Path, help="also write the JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the tools' outputs")
    args = parser.parse_args(argv)
    args.tools = [tool.strip() for tool in args.tools.split(",") if tool.strip()]
    unknown = [tool for tool in args.tools if tool not in TOOLS]
    if unknown:
        parser.error(f"unknown tools: {', '.join(unknown)} (known: {', '.join(TOOLS)})")
    missing = [tool for tool in args.tools if tool in PEER_TOOLS and tool != "scapy"
               and not find_tool(tool)]
    if missing:
        parser.error(f"not installed: {', '.join(missing)} (apt-get install {' '.join(missing)})")
    if not 0 <= args.wait <= 30 or not 0 <= args.settle <= 60:
        parser.error("--wait must be 0-30 s and --settle 0-60 s")
    if not 0 < args.threshold <= 100:
        parser.error("--threshold is a percentage, above 0 and at most 100")
    if os.geteuid() != 0:
        parser.error("run as root: the tools send raw packets")
    return args


def version_of(argv: list[str], marker: str) -> str:
    try:
        text = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                              env=command_env()).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return next((line.strip() for line in text.splitlines() if marker in line), "?")


def machine(tools: list[str]) -> dict[str, Any]:
    versions = {
        "masscan": lambda: version_of([find_tool("masscan") or "masscan", "--version"],
                                      "version"),
        "zmap": lambda: version_of([find_tool("zmap") or "zmap", "--version"], "zmap"),
        "nmap": lambda: version_of([find_tool("nmap") or "nmap", "--version"], "Nmap"),
        "scapy": lambda: version_of([sys.executable, "-c", "import scapy; print(scapy.VERSION)"],
                                    "."),
        "prober": lambda: version_of(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"], ""),
    }
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(), "cpus": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), "?"),
        "python": platform.python_version(),
        "versions": {tool: versions[tool]()[:100] for tool in tools if tool in versions},
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def sets(peer: ManyPeer, args: argparse.Namespace) -> dict[str, TargetSet]:
    ports = (OPEN_PORT,) if args.quick else (OPEN_PORT, *CLOSED_PORTS)
    full = TargetSet(peer.block_v4, ports)
    first = peer.block_v4.network_address
    return {
        "full": full,
        "nmap": TargetSet(ipaddress.IPv4Network(f"{first}/{args.nmap_prefix}"), ports),
        "scapy": TargetSet(ipaddress.IPv4Network(f"{first}/{args.scapy_prefix}"), (OPEN_PORT,)),
        "v6": TargetSet(peer.block_v6, ports),
    }


def plan(ctx: Context, args: argparse.Namespace, peer: ManyPeer
         ) -> list[tuple[str, Callable[[], ToolRun]]]:
    """(what, run it) for every run, in order: the tools in the order asked, rates rising."""
    targets = sets(peer, args)
    steps: list[tuple[str, Callable[[], ToolRun]]] = []
    if args.memory:
        ports = (OPEN_PORT, *CLOSED_PORTS)
        small = ipaddress.IPv4Network(f"{peer.block_v4.network_address}/{MEMORY_SMALL_PREFIX}")
        memory_sets = [TargetSet(small, ports), TargetSet(peer.block_v4, ports)]
        if args.memory_large:
            memory_sets.append(TargetSet(peer.block_v4, MEMORY_LARGE_PORTS))
        for memory_set in memory_sets:
            steps.append((f"prober memory over {memory_set.describe()}",
                          functools.partial(run_prober, ctx, memory_set, args.memory_rate)))
        return steps
    per_tool_rates = {"prober": args.rates, "masscan": args.masscan_rates,
                      "zmap": args.zmap_rates, "nmap": args.nmap_rates}
    for tool in args.tools:
        if tool == "scapy":
            steps.append(("scapy", lambda: run_scapy(ctx, targets["scapy"], None)))
            continue
        chosen = targets["nmap"] if tool == "nmap" else targets["full"]
        for rate in per_tool_rates[tool]:
            steps.append((f"{tool} at {rate:,}/s over {chosen.describe()}",
                          functools.partial(RUNNERS[tool], ctx, chosen, rate)))
        if tool == "prober" and args.ipv6:
            for rate in args.rates:
                steps.append((f"prober at {rate:,}/s over {targets['v6'].describe()}",
                              functools.partial(run_prober, ctx, targets["v6"], rate,
                                                label="prober6")))
    return steps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, interrupted)
    try:
        peer = find_many()
    except LabError as error:
        print(f"bench/scan_rate: error: {error}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="scan_rate-"))
    counter = SynCounter(peer.device, syn_filter(peer.source_v4, peer.block_v4, peer.block_v6))
    ctx = Context(peer=peer, workdir=workdir, wait_s=args.wait, seed=args.seed, counter=counter)
    info = machine(args.tools)
    runs: list[ToolRun] = []
    try:
        for index, (what, step) in enumerate(plan(ctx, args, peer)):
            if index:
                time.sleep(args.settle)
            print(f"[{datetime.datetime.now():%H:%M:%S}] {what}", file=sys.stderr, flush=True)
            runs.append(measure_tool(ctx, step))
    except KeyboardInterrupt:
        print("bench/scan_rate: interrupted; reporting the runs done", file=sys.stderr)
    finally:
        counter.close()
        if args.keep:
            print(f"outputs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    threshold = args.threshold / 100
    document = {"machine": info, "mode": "memory" if args.memory else
                "quick" if args.quick else "full", "threshold": threshold,
                "runs": [run.to_dict() for run in runs]}
    if args.json_file is not None:
        args.json_file.write_text(json.dumps(document, indent=1) + "\n")
    if args.json:
        print(json.dumps(document))
        return 0
    print(f"{info['date']}, kernel {info['kernel']}, {info['cpus']} x {info['cpu']}, "
          f"python {info['python']}, load {' '.join(info['loadavg'])} -> "
          f"{' '.join(info['loadavg_after'])}")
    for tool, version in info["versions"].items():
        print(f"  {tool}: {version}")
    print(f"target: the lab's many peer ({peer.namespace}), {peer.block_v4} and {peer.block_v6}"
          f" via {peer.device}; wait {args.wait:g} s after each tool's last SYN")
    if args.memory:
        print("\n".join(report.memory_table(runs)))
    else:
        print("\n".join(report.table(runs, threshold)))
        print("SYN/s sent: probes / the link's sending window; µs/probe: CPU (user+sys) per "
              "probe; RSS: the largest VmHWM of its processes; tree: their summed RSS (both "
              "sampled); ÷m: ratio to masscan; target's counters after - before: ovfl "
              "ListenOverflows, ldrop ListenDrops, cookie SyncookiesSent, qdrop "
              "TCPReqQFullDrop, retr RetransSegs, sndrop softnet drops (whole machine)")
        print("\n".join(report.summary(runs, threshold)))
    print("notes:")
    print("\n".join(report.notes(runs)))
    return 0
