"""One target namespace, each tool sends N SYNs as fast as it can, and the report.

    root ns   <prefix>-root ==veth== <prefix>-tgt   target ns: listener on port 80
                                                    (SYN queue 65,536, no SYN cookies)

For every tool and run: wall time from exec to exit, the child's CPU (user + system, from
wait4's rusage), how many SYNs it says it sent and how many answers it says it read, and for
prober the answers the kernel dropped from its capture queue. Rates are N / wall time, so
they include each tool's start-up (prober's is measured alone, with -c 1, and reported too),
except `prober-library`: Prober.syn timed around the call in its own process (no start-up,
no output lines). Ratios compare each tool's rate and CPU per probe with the `prober`
command's from the same runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from prober.lab import LabError, Topology, is_lab_address, route_check
from prober.lab.commands import command_env, find_tool

TARGET_PORT = 80
MAX_COUNT = 100_000
RUN_TIMEOUT_S = 120.0
REPO = Path(__file__).resolve().parents[2]
TARGET_SYSCTLS = {
    "net.ipv4.tcp_max_syn_backlog": 65536,
    "net.core.somaxconn": 65536,
    "net.ipv4.tcp_syncookies": 0,
}


@dataclass(frozen=True)
class Run:
    tool: str
    argv: list[str]
    returncode: int
    wall_s: float
    cpu_s: float
    sent: int | None
    answered: int | None
    kernel_drops: int | None

    def rate(self, count: int) -> float:
        return count / self.wall_s

    def cpu_us_per_probe(self, count: int) -> float:
        return self.cpu_s / count * 1e6


@contextlib.contextmanager
def lab_target() -> Iterator[tuple[str, str]]:
    """(target address, root's device) of a fresh test-pool namespace with a listener."""
    with Topology.create() as topology:
        namespace = topology.add_namespace("target", TARGET_SYSCTLS)
        link = topology.add_link(None, namespace, number=0, left_label="root",
                                 right_label="tgt")
        topology.start_server(namespace, [TARGET_PORT], family="4", backlog=65536)
        address = str(link.right.v4.ip)
        if not is_lab_address(address):
            raise LabError(f"{address} is not a lab address")
        device = route_check(address, devices=topology.root_devices)
        if device != link.left.device:
            raise LabError(f"{address} routed via {device}, not via {link.left.device}")
        yield address, device


def measured(tool: str, argv: list[str]) -> tuple[int, float, float, str]:
    """Run ``argv`` to completion: (exit status, wall s, CPU s of the child, its output)."""
    started = time.monotonic()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=command_env(),
                               start_new_session=True)
    assert process.stdout is not None
    try:
        # Read all output first (a full pipe would stall the tool), then reap it with wait4,
        # which gives exactly this child's rusage.
        output = process.stdout.read().decode(errors="replace")
        _pid, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        process.kill()
        process.wait(timeout=5)
        raise
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    return process.returncode, wall, usage.ru_utime + usage.ru_stime, output


def run_prober(address: str, count: int) -> Run:
    argv = [str(REPO / ".venv/bin/prober"), "syn", f"{address}:{TARGET_PORT}", "-c",
            str(count), "-i", "0"]
    code, wall, cpu, output = measured("prober", argv)
    counts = re.search(r"(\d+) sent, (\d+) answered", output)
    drops = re.search(r"(\d+) dropped by the kernel", output)
    return Run("prober", argv, code, wall, cpu,
               int(counts[1]) if counts else None, int(counts[2]) if counts else None,
               int(drops[1]) if drops else 0 if counts else None)


HPING3_INTERVAL_US = 30  # hping3's shortest -i here that still reads every answer (see README)


def run_hping3(address: str, count: int, interval_us: int = HPING3_INTERVAL_US) -> Run:
    argv = [find_tool("hping3") or "hping3", "-S", "-p", str(TARGET_PORT), "-c", str(count),
            "-i", f"u{interval_us}", address]
    code, wall, cpu, output = measured("hping3", argv)
    counts = re.search(r"(\d+) packets transmitted, (\d+) packets received", output)
    return Run("hping3", argv, code, wall, cpu, int(counts[1]) if counts else None,
               int(counts[2]) if counts else None, None)


def run_nping(address: str, count: int) -> Run:
    argv = [find_tool("nping") or "nping", "--tcp", "-p", str(TARGET_PORT), "--flags", "syn",
            "-c", str(count), "--rate", "1000000", "-q", address]
    code, wall, cpu, output = measured("nping", argv)
    counts = re.search(r"Raw packets sent: (\d+) .*?Rcvd: (\d+)", output)
    return Run("nping", argv, code, wall, cpu, int(counts[1]) if counts else None,
               int(counts[2]) if counts else None, None)


# Prober.syn alone, timed around the call (no start-up, no output): what the engine and
# core cost per probe. Its own wall time and CPU (getrusage) replace the process's.
LIBRARY_RUN = """
import json, resource, sys, time
import uvloop
from prober import Prober

async def main(address, count):
    async with Prober() as prober:
        await prober.syn(address, 80, count=10, interval=0)  # sockets and port block opened
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        run = await prober.syn(address, 80, count=count, interval=0)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(json.dumps({"wall": wall, "cpu": cpu, "sent": run.sent, "answered": run.answered,
                      "kernel_drops": run.kernel_drops}))

uvloop.run(main(sys.argv[1], int(sys.argv[2])))
"""


def run_prober_library(address: str, count: int) -> Run:
    argv = [str(REPO / ".venv/bin/python"), "-c", LIBRARY_RUN, address, str(count)]
    code, _wall, _cpu, output = measured("prober-library", argv)
    try:
        own = json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Run("prober-library", argv, code or 1, float("inf"), 0.0, None, None, None)
    return Run("prober-library", argv, code, own["wall"], own["cpu"], own["sent"],
               own["answered"], own["kernel_drops"])


RUNNERS: dict[str, Callable[[str, int], Run]] = {
    "prober": run_prober, "prober-library": run_prober_library, "hping3": run_hping3,
    "nping": run_nping,
}


def profile_prober(address: str, count: int, path: Path) -> None:
    """The same run under cProfile, in this process (python -m cProfile on the CLI)."""
    argv = [str(REPO / ".venv/bin/python"), "-m", "cProfile", "-o", str(path), "-m", "prober",
            "syn", f"{address}:{TARGET_PORT}", "-c", str(count), "-i", "0"]
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False,
                   env=command_env(), timeout=RUN_TIMEOUT_S)


PROFILE_GROUPS = (  # (substring of the file or function, group), first match wins
    ("sendmsg", "kernel: sendmsg (the SYN; on a veth the peer's stack runs in this call)"),
    ("recvmsg", "kernel: recvmsg (answers and TX stamps)"),
    ("prober/engine", "prober/engine (launch, dispatch, timer, TX stamps)"),
    ("prober/api.py", "prober/api.py (the syn loop, probe objects)"),
    ("prober/core/syn.py", "prober/core/syn.py (classify, results)"),
    ("prober/core/parse.py", "prober/core/parse.py and wire.py"),
    ("prober/core/wire.py", "prober/core/parse.py and wire.py"),
    ("prober/core", "prober/core (templates, ISN, timing)"),
    ("prober/output", "prober/cli.py and output (a line per probe)"),
    ("prober/cli.py", "prober/cli.py and output (a line per probe)"),
    ("scapy", "start-up (imports, Scapy templates, Typer)"),
    ("<frozen", "start-up (imports, Scapy templates, Typer)"),
    ("typer", "start-up (imports, Scapy templates, Typer)"),
    ("asyncio", "event loop"),
    ("uvloop", "event loop"),
    ("<string>:__init__", "dataclass __init__s (probes, flights, stamps, results)"),
    ("compile", "start-up (imports, Scapy templates, Typer)"),
    ("marshal", "start-up (imports, Scapy templates, Typer)"),
    ("~:<built-in method builtins.exec>", "start-up (imports, Scapy templates, Typer)"),
)


def profile_groups(path: Path, count: int) -> list[str]:
    """Where one prober run's time went: cProfile's own time per group, per probe."""
    import pstats

    totals: dict[str, float] = {}
    others: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, own, _cum, _callers) in (
        pstats.Stats(str(path)).stats.items()  # type: ignore[attr-defined]
    ):
        label = f"{filename}:{name}"
        group = next((g for key, g in PROFILE_GROUPS if key in label), "other")
        totals[group] = totals.get(group, 0.0) + own
        if group == "other":
            others[label] = others.get(label, 0.0) + own
    largest = sorted(others.items(), key=lambda item: -item[1])[:4]
    if largest:
        totals["other: " + ", ".join(label.rsplit("/", 1)[-1] for label, _ in largest)] = (
            totals.pop("other", 0.0))
    whole = sum(totals.values())
    lines = [f"where the time went (cProfile, one run of {count}; own time; profiling inflates "
             "Python calls):"]
    for group, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        lines.append(f"  {seconds:6.3f} s {seconds / whole:6.1%} "
                     f"{seconds / count * 1e6:6.1f} µs/probe  {group}")
    return lines


def median_run(runs: list[Run], count: int) -> Run:
    return sorted(runs, key=lambda r: r.rate(count))[len(runs) // 2]


def report(results: dict[str, list[Run]], count: int, startup: Run | None) -> list[str]:
    lines = [
        f"kernel {platform.release()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
        f", {count} SYNs per run, median of {len(next(iter(results.values())))} runs",
        f"{'tool':15} {'probes/s':>10} {'wall s':>8} {'CPU s':>7} {'CPU µs/probe':>13} "
        f"{'sent':>7} {'answered':>9} {'kdrops':>7} {'rate vs prober':>15} "
        f"{'CPU/probe vs prober':>20}",
    ]
    base = median_run(results["prober"], count) if "prober" in results else None
    for tool, runs in results.items():
        run = median_run(runs, count)
        rate_ratio = cpu_ratio = "-"
        if base is not None:
            rate_ratio = f"{run.rate(count) / base.rate(count):.2f}"
            cpu_ratio = f"{run.cpu_us_per_probe(count) / base.cpu_us_per_probe(count):.2f}"
        lines.append(
            f"{tool:15} {run.rate(count):>10.0f} {run.wall_s:>8.2f} {run.cpu_s:>7.2f} "
            f"{run.cpu_us_per_probe(count):>13.1f} {run.sent!s:>7} {run.answered!s:>9} "
            f"{'-' if run.kernel_drops is None else run.kernel_drops:>7} {rate_ratio:>15} "
            f"{cpu_ratio:>20}"
        )
        rates = ", ".join(f"{r.rate(count):.0f}" for r in runs)
        lines.append(f"{'':15} every run (probes/s): {rates}")
    if startup is not None:
        lines.append(f"prober start-up alone (-c 1): {startup.wall_s:.2f} s wall, "
                     f"{startup.cpu_s:.2f} s CPU; without it prober's rate is "
                     f"{count / max(1e-9, base.wall_s - startup.wall_s) if base else 0:.0f}/s")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/syn_throughput", description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tools", default="prober,prober-library,hping3,nping")
    parser.add_argument("--profile", type=Path, help="also write a cProfile of one prober run")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--hping3-interval-us", type=int, default=HPING3_INTERVAL_US,
                        help="hping3's -i uN (below ~30 it stops reading answers)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be from 1 to {MAX_COUNT}")
    if not 1 <= args.runs <= 10:
        parser.error("--runs must be from 1 to 10")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in RUNNERS]
    if unknown:
        parser.error(f"unknown tools: {', '.join(unknown)}")
    missing = [t for t in tools
               if not t.startswith("prober") and not (find_tool(t) or shutil.which(t))]
    if missing:
        parser.error(f"not installed: {', '.join(missing)} (apt-get install hping3 nmap)")
    if os.geteuid() != 0:
        parser.error("run as root: the bench builds a network namespace")

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, interrupted)
    results: dict[str, list[Run]] = {tool: [] for tool in tools}
    startup = None
    with lab_target() as (address, _device):
        if "prober" in tools:
            startup = run_prober(address, 1)
        for _ in range(args.runs):
            for tool in tools:  # interleaved, so a busy moment hits every tool alike
                if tool == "hping3":
                    run = run_hping3(address, args.count, max(1, args.hping3_interval_us))
                else:
                    run = RUNNERS[tool](address, args.count)
                results[tool].append(run)
        if args.profile is not None:
            profile_prober(address, args.count, args.profile)
    if args.json:
        print(json.dumps({tool: [asdict(r) for r in runs] for tool, runs in results.items()}))
    else:
        print("\n".join(report(results, args.count, startup)))
        if args.profile is not None:
            print("\n".join(profile_groups(args.profile, args.count)))
            print(f"profile: {args.profile} (python -m pstats {args.profile})")
    failed = [r for runs in results.values() for r in runs if r.returncode not in (0, 1)]
    for run in failed:
        print(f"{run.tool} exited {run.returncode}: {' '.join(run.argv)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
