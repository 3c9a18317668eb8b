"""One SYN per run, N runs per tool: the CPU each run cost its process, and where prober's goes.

The peer is the SYN topology the integration tests probe (`prober.lab.build_syn_topology`:
root -> router -> target, a listener on port 80), built in the test pool with
`Topology.create()` and torn down when the bench ends, also on Ctrl-C, SIGTERM or an error.
Every tool sends to the target's address only, after a `route_check` that it is a lab address
routed over the topology's own link.

CPU is the child's own user + system time as `wait4()` reports it, so a tool's waiting (nping
and hping3 each sit out about a second after their probe) costs nothing, and neither does
this process's bookkeeping. Runs go round-robin over the tools after one unmeasured warm-up
run each (page cache, Python's bytecode cache: written as for any user, whatever
PYTHONDONTWRITEBYTECODE says here), so machine load that comes and goes touches every tool
alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from prober.lab import LabError, SynTopology, Topology, build_syn_topology, route_check
from prober.lab.commands import command_env, find_tool

PORT = SynTopology.OPEN_PORT
GOAL_CPU_S = 0.25
RUN_TIMEOUT_S = 30.0
MAX_RUNS = 200
TOOLS = ("prober", "nping", "hping3")
BREAKDOWN_MIN_MS = 3.0  # top-level imports below this are summed as "the rest"


def prober_path() -> str:
    """The installed `prober` command beside this interpreter (the virtualenv's)."""
    return str(Path(sys.executable).with_name("prober"))


def tool_argv(tool: str, path: str, address: str, device: str) -> list[str]:
    # hping3 is told its interface: it looks for the one holding the route's source address
    # in a fixed-size SIOCGIFCONF list, which misses new interfaces on a host with many
    # (other test topologies), and then listens on the wrong one.
    return {
        "prober": [path, "syn", f"{address}:{PORT}", "-c", "1"],
        "nping": [path, "--tcp", "-p", str(PORT), "--flags", "syn", "-c", "1", address],
        "hping3": [path, "-S", "-p", str(PORT), "-c", "1", "-I", device, address],
    }[tool]


# Each tool's own words for "the SYN was answered" (a run that was not answered measured
# something else: a timeout path).
ANSWERED: dict[str, Callable[[int | None, str], bool]] = {
    "prober": lambda code, output: code == 0 and " open " in output,
    "nping": lambda code, output: re.search(r"Rcvd: 1 ", output) is not None,
    "hping3": lambda code, output: "1 packets received" in output,
}


@dataclass(frozen=True)
class Run:
    returncode: int | None
    user_s: float
    sys_s: float
    wall_s: float
    output: str
    timed_out: bool

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def tool_env() -> dict[str, str]:
    """The tools' environment: a user's, where Python caches bytecode (this session may have
    PYTHONDONTWRITEBYTECODE set, which would recompile prober's modules on every run)."""
    env = command_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_measured(argv: list[str], timeout_s: float = RUN_TIMEOUT_S) -> Run:
    """Run `argv` to completion and reap it with wait4(), which reports its CPU times; on
    timeout or interruption it is killed (by PID) and reaped."""
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=tool_env(),
                                   start_new_session=True)
        timed_out = False
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() - started > timeout_s:
                    timed_out = True
                    os.kill(process.pid, signal.SIGKILL)
                    _, status, usage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.002)
        except BaseException:
            os.kill(process.pid, signal.SIGKILL)
            os.wait4(process.pid, 0)
            process.returncode = -signal.SIGKILL
            raise
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        output = out.read().decode(errors="replace")
    return Run(returncode=process.returncode, user_s=usage.ru_utime, sys_s=usage.ru_stime,
               wall_s=wall, output=output, timed_out=timed_out)


@dataclass
class ToolResult:
    tool: str
    argv: list[str]
    runs: list[Run] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(ANSWERED[self.tool](run.returncode, run.output) for run in self.runs)

    def median(self, value: Callable[[Run], float]) -> float:
        return statistics.median(value(run) for run in self.runs)

    def to_dict(self) -> dict[str, Any]:
        cpu = [run.cpu_s for run in self.runs]
        return {
            "tool": self.tool,
            "argv": self.argv,
            "runs": len(self.runs),
            "answered": self.answered,
            "cpu_s": {"median": round(statistics.median(cpu), 4), "min": round(min(cpu), 4),
                      "max": round(max(cpu), 4), "all": [round(c, 4) for c in cpu]},
            "user_s_median": round(self.median(lambda r: r.user_s), 4),
            "sys_s_median": round(self.median(lambda r: r.sys_s), 4),
            "wall_s_median": round(self.median(lambda r: r.wall_s), 4),
            "timed_out": sum(run.timed_out for run in self.runs),
        }


def import_breakdown(argv: list[str]) -> list[tuple[str, float]]:
    """prober's run once under `python -X importtime`: each top-level import's cumulative
    time in ms (wall time, as importtime reports it), largest first, and the rest summed."""
    run = run_measured([sys.executable, "-X", "importtime", *argv])
    top: list[tuple[str, float]] = []
    for line in run.output.splitlines():
        # "import time:   self [us] | cumulative | imported package"; top level: one space.
        parts = line.split("|")
        if len(parts) != 3 or not line.startswith("import time:"):
            continue
        name = parts[2]
        if name.startswith(" ") and not name.startswith("  ") and parts[1].strip().isdigit():
            top.append((name.strip(), int(parts[1]) / 1000))
    top.sort(key=lambda item: item[1], reverse=True)
    shown = [(name, ms) for name, ms in top if ms >= BREAKDOWN_MIN_MS]
    rest = sum(ms for _, ms in top if ms < BREAKDOWN_MIN_MS)
    return [*shown, (f"{len(top) - len(shown)} other top-level imports", rest)]


def system_info(tools: dict[str, str]) -> dict[str, Any]:
    versions: dict[str, str] = {}
    for tool, path in tools.items():
        run = run_measured([path, "--version"], 5.0)
        # "prober 0.1.0", "Nping version 0.7.93 ( https://...", "hping3 version 3.0.0-alpha-2"
        found = re.search(r"(?:version|prober)\s+(\S+)", run.output, re.IGNORECASE)
        versions[tool] = found.group(1) if found else "?"
    uname = platform.uname()
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": uname.release,
        "cpu": f"{cpu} x {os.cpu_count()}",
        "python": platform.python_version(),
        "versions": versions,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def render_text(info: dict[str, Any], address: str, results: list[ToolResult],
                breakdown: list[tuple[str, float]] | None, prober_cpu: float | None) -> str:
    lines = [
        f"date    {info['date']}; load average {info['load_average']}",
        f"kernel  {info['kernel']}, {info['cpu']}, Python {info['python']}",
        "tools   " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"peer    {address}:{PORT} (SYN topology in the test pool), one SYN per run",
        "",
        f"{'tool':8} {'runs':>5} {'answered':>9} {'cpu med s':>10} {'min':>7} {'max':>7} "
        f"{'user':>7} {'sys':>7} {'wall s':>7} {'prober/x':>9}",
    ]
    for result in results:
        cpu = [run.cpu_s for run in result.runs]
        median = statistics.median(cpu)
        ratio = "" if prober_cpu is None or median == 0 else f"{prober_cpu / median:.1f}"
        lines.append(
            f"{result.tool:8} {len(result.runs):>5} {result.answered:>9} {median:>10.3f} "
            f"{min(cpu):>7.3f} {max(cpu):>7.3f} {result.median(lambda r: r.user_s):>7.3f} "
            f"{result.median(lambda r: r.sys_s):>7.3f} {result.median(lambda r: r.wall_s):>7.2f} "
            f"{ratio:>9}"
        )
    for result in results:
        lines.append(f"  {result.tool}: {' '.join(result.argv)}")
    for result in results:
        unanswered = [run for run in result.runs if not ANSWERED[result.tool](run.returncode,
                                                                              run.output)]
        if unanswered:
            lines.append(f"  {result.tool}: {len(unanswered)} runs not answered; the first "
                         f"(exit {unanswered[0].returncode}) said: "
                         + " | ".join(unanswered[0].output.strip().splitlines()[-4:]))
    if breakdown is not None:
        lines += ["", "prober's imports (python -X importtime, one run; wall ms, cumulative):"]
        lines += [f"  {ms:7.1f}  {name}" for name, ms in breakdown]
    if prober_cpu is not None:
        met = "met" if prober_cpu < GOAL_CPU_S else "NOT met"
        lines += ["", f"goal: prober's median CPU below {GOAL_CPU_S} s: {met} "
                      f"({prober_cpu:.3f} s)"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/startup",
        description="CPU of one `prober syn -c 1` beside nping and hping3 (see bench/README.md)",
    )
    parser.add_argument("--runs", type=int, default=11, help="measured runs per tool (default 11)")
    parser.add_argument("--tools", default=None,
                        help=f"comma-separated, from {','.join(TOOLS)} (default: all installed)")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the run of prober under python -X importtime")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= MAX_RUNS:
        parser.error(f"--runs must be from 1 to {MAX_RUNS}")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the topology's `with`: full teardown


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("startup: needs root (network namespaces, raw sockets)", file=sys.stderr)
        return 2
    installed = {"prober": prober_path(), **{t: p for t in TOOLS[1:] if (p := find_tool(t))}}
    wanted = ([t.strip() for t in args.tools.split(",") if t.strip()] if args.tools
              else [t for t in TOOLS if t in installed])
    unknown = [t for t in wanted if t not in TOOLS]
    missing = [t for t in wanted if t in TOOLS and t not in installed]
    if unknown or missing:
        print(f"startup: unknown tools {unknown}, not installed {missing} "
              "(apt-get install nmap hping3)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    info = system_info({t: installed[t] for t in wanted})
    results = {t: ToolResult(t, []) for t in wanted}
    breakdown: list[tuple[str, float]] | None = None
    try:
        with Topology.create() as topology:
            peer = build_syn_topology(topology)
            address = str(peer.target_v4)
            device = route_check(address, devices=topology.root_devices)
            if device != peer.root_interface:
                raise LabError(f"{address} routed via {device}, not via {peer.root_interface}")
            for tool in wanted:
                results[tool].argv = tool_argv(tool, installed[tool], address, device)
                run_measured(results[tool].argv)  # warm-up, not counted
            for number in range(args.runs):
                print(f"startup: round {number + 1}/{args.runs}", file=sys.stderr, flush=True)
                for tool in wanted:
                    results[tool].runs.append(run_measured(results[tool].argv))
            if "prober" in wanted and not args.no_breakdown:
                breakdown = import_breakdown(results["prober"].argv)
    except (KeyboardInterrupt, SystemExit):
        print("startup: interrupted; runs stopped, topology torn down", file=sys.stderr)
        raise
    ordered = [results[t] for t in wanted]
    prober_cpu = (statistics.median(r.cpu_s for r in results["prober"].runs)
                  if "prober" in results else None)
    if args.json:
        print(json.dumps({
            "system": info, "peer": f"{address}:{PORT}", "runs": args.runs,
            "results": [r.to_dict() for r in ordered],
            "ratios": {f"prober/{r.tool}": round(prober_cpu / r.median(lambda x: x.cpu_s), 2)
                       for r in ordered if prober_cpu is not None and r.tool != "prober"
                       and r.median(lambda x: x.cpu_s) > 0},
            "prober_imports_ms": breakdown,
            "goal": {"cpu_s": GOAL_CPU_S, "met": prober_cpu is not None
                     and prober_cpu < GOAL_CPU_S},
        }, indent=1))
    else:
        print(render_text(info, address, ordered, breakdown, prober_cpu))
    return 0
