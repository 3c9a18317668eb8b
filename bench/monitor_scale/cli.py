"""`Prober.monitor` at N targets, 1 s interval, in a child process, each N for a window after
a warm-up; the peers at the same rate; a long run for memory; the report.

    root ns  <prefix>-root ==veth== <prefix>-tgt   target ns: the block 2001:2:0:1ii:2::/112
                                                   (local route), listener on port 80
    (--family 4: the built-in lab's `many` peer, 198.19.0.0/16, behind its router)

Per N: samples/s, SYNs/s on the link, share open, no-response count (the target answers every
address: each one is a miss), share of RTTs on the kernel clock, lateness p50/p99/max and how
many probes left more than 10 % of the interval late, CPU per probe (the child's user + system
over the window / the SYNs the link carried in it), the child's peak RSS (VmHWM), the engine's
counters over the window. Then the highest N that holds. Reported, never asserted: the exit
status is 0 whatever the numbers (2 for bad options, 3 when the lab cannot be built).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
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

from scan_rate.lab import target_counters
from scan_rate.syncount import SynCounter

from prober.lab import LabError

from . import peers as peer_tools
from . import report
from .lab import MAX_TARGETS, MonitorLab, many_lab, monitor_lab
from .profiling import profile_lines
from .scale import REPO, MonitorSettings, monitor_run

DEFAULT_TARGETS = (1000, 5000, 10000, 15000)
EXIT_LAB = 3


def counts(text: str) -> tuple[int, ...]:
    if text.strip().lower() == "none":
        return ()
    try:
        values = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected counts like 1000,5000") from None
    if not values or not all(1 <= value < MAX_TARGETS for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: counts from 1 to {MAX_TARGETS - 1}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/monitor_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=counts, default=DEFAULT_TARGETS,
                        help="target counts, each a run (default 1000,5000,10000,15000; none)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds measured per run, after the warm-up (default 30)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds before the window (default 2: every target's first round)")
    parser.add_argument("--family", type=int, choices=(4, 6), default=6,
                        help="6 (default): the bench's own lab, an IPv6 /112; 4: the built-in "
                             "lab's many peer, 198.19.0.0/16 (needs `prober lab up`)")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--memory", type=float, default=0.0, metavar="MINUTES",
                        help="also a run of --memory-targets for this long, RSS every 10 s")
    parser.add_argument("--memory-targets", type=int, default=1000)
    parser.add_argument("--peers", default="auto",
                        help="nping,hping3,blackbox (default: those installed; none)")
    parser.add_argument("--peer-targets", type=counts, default=None,
                        help="N for nping and hping3 (default: --targets)")
    parser.add_argument("--blackbox-targets", type=counts, default=(1000,),
                        help="N for blackbox_exporter, scraped by a Python client (default 1000)")
    parser.add_argument("--blackbox-connections", type=int, default=64,
                        help="the scraper's keep-alive connections (default 64)")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="also one run under cProfile (over its window), stats to FILE")
    parser.add_argument("--profile-targets", type=int, default=5000)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="pause between runs (default 2 s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    parser.add_argument("--json-file", type=Path, help="also write the JSON here")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="only print the report of an earlier run's --json-file (no lab)")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 3600 or not 0 <= args.warmup <= 60:
        parser.error("--duration must be 1-3600 s and --warmup 0-60 s")
    if not 0.01 <= args.interval <= 60 or not 0 < args.timeout <= args.interval:
        parser.error("--interval must be 0.01-60 s and --timeout above 0, at most the interval")
    if not 0 <= args.memory <= 240:
        parser.error("--memory is minutes, 0-240")
    for name in ("memory_targets", "profile_targets"):
        if not 1 <= getattr(args, name) < MAX_TARGETS:
            parser.error(f"--{name.replace('_', '-')} must be from 1 to {MAX_TARGETS - 1}")
    if not 1 <= args.blackbox_connections <= 1024:
        parser.error("--blackbox-connections must be 1-1024")
    if not 0 <= args.settle <= 60:
        parser.error("--settle must be 0-60 s")
    if args.peers == "auto":
        args.peers = [tool for tool in peer_tools.PEER_TOOLS
                      if not peer_tools.missing_tools([tool])]
    elif args.peers.strip().lower() == "none":
        args.peers = []
    else:
        args.peers = [tool.strip() for tool in args.peers.split(",") if tool.strip()]
        unknown = [tool for tool in args.peers if tool not in peer_tools.PEER_TOOLS]
        if unknown:
            parser.error(f"unknown peers: {', '.join(unknown)} "
                         f"(known: {', '.join(peer_tools.PEER_TOOLS)})")
        missing = peer_tools.missing_tools(args.peers)
        if missing:
            packages = " ".join(peer_tools.PACKAGES[tool] for tool in missing)
            parser.error(f"not installed: {', '.join(missing)} (apt-get install {packages})")
    if args.peer_targets is None:
        args.peer_targets = args.targets
    if os.geteuid() != 0 and args.report is None:
        parser.error("run as root: the bench builds a network namespace and sends raw packets")
    return args


def version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return next((line.strip() for line in text if line.strip()), "?")[:100]


def machine(tools: list[str]) -> dict[str, Any]:
    versions = {
        "prober": ["git", "-C", str(REPO), "log", "-1", "--format=%h %s"],
        "nping": ["nping", "--version"],
        "hping3": ["hping3", "--version"],
        "blackbox": ["prometheus-blackbox-exporter", "--version"],
    }
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(), "cpus": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), "?"),
        "python": platform.python_version(),
        "versions": {tool: version_of(versions[tool])
                     for tool in ["prober", *tools] if tool in versions},
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def planned_seconds(args: argparse.Namespace) -> float:
    per_run = args.warmup + args.duration + args.settle + 15
    runs = len(args.targets) + len(args.peer_targets) * len(
        [p for p in args.peers if p != "blackbox"]) + len(args.blackbox_targets) + 1
    return runs * per_run + args.memory * 60


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        try:
            document = json.loads(args.report.read_text())
        except (OSError, ValueError) as error:
            print(f"bench/monitor_scale: error: {args.report}: {error}", file=sys.stderr)
            return 2
        args.json_file = None
        emit(args, document)
        return 0

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, interrupted)
    settings = MonitorSettings(args.interval, args.timeout, args.warmup, args.duration)
    info = machine(args.peers)
    workdir = Path(tempfile.mkdtemp(prefix="monitor_scale-"))
    document: dict[str, Any] = {"machine": info, "settings": settings.__dict__, "scale": [],
                                "peers": [], "profile": None, "memory": None}
    rounds = max(1, round(args.duration / args.interval))

    def step(what: str, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        print(f"[{datetime.datetime.now():%H:%M:%S}] {what}", file=sys.stderr, flush=True)
        entry = action()
        time.sleep(args.settle)
        return entry

    try:
        with (contextlib.nullcontext(many_lab()) if args.family == 4
              else monitor_lab(server_seconds=planned_seconds(args) * 2 + 600)) as lab:
            counter = SynCounter(lab.device, lab.tap_expression())
            document["lab"] = {"namespace": lab.namespace, "block": str(lab.block),
                               "device": lab.device, "hping3_target": lab.hping3_target,
                               "own": lab.own}
            try:
                run_all(args, lab, counter, settings, workdir, document, rounds, step)
            finally:
                counter.close()
    except LabError as error:
        print(f"bench/monitor_scale: error: {error}", file=sys.stderr)
        return EXIT_LAB
    except KeyboardInterrupt:
        print("bench/monitor_scale: interrupted; reporting the runs done", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    emit(args, document)
    return 0


def run_all(args: argparse.Namespace, lab: MonitorLab, counter: SynCounter,
            settings: MonitorSettings, workdir: Path, document: dict[str, Any], rounds: int,
            step: Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]) -> None:
    """Every run in order, each N's prober run followed by the peers at that N (so a busy
    moment of the machine hits them alike), then blackbox, the profile, memory."""

    def with_counters(action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        before = target_counters(lab.namespace)
        entry = action()
        after = target_counters(lab.namespace)
        entry["target_counters"] = {key: after[key] - before.get(key, 0) for key in after}
        return entry

    peer_counts = list(args.peer_targets)
    for count in sorted(set(args.targets) | set(peer_counts)):
        if count in args.targets:
            document["scale"].append(step(
                f"prober monitor: {count:,} targets for {args.duration:g} s",
                lambda count=count: with_counters(
                    lambda: monitor_run(lab, counter, count, settings, workdir))))
        if count in peer_counts:
            for tool, runner in (("nping", peer_tools.run_nping),
                                 ("hping3", peer_tools.run_hping3)):
                if tool not in args.peers:
                    continue
                if tool == "nping" and count > peer_tools.NPING_MAX_RATE:
                    document.setdefault("skipped", []).append(
                        f"nping at {count:,}: {peer_tools.NPING_LIMITS}")
                    continue
                document["peers"].append(step(
                    f"{tool} at {count:,} SYN/s for {rounds} s",
                    lambda runner=runner, count=count: runner(lab, counter, count, rounds)))
    if "blackbox" in args.peers:
        for count in args.blackbox_targets:
            document["peers"].append(step(
                f"blackbox_exporter tcp module: {count:,} targets scraped once a second",
                lambda count=count: peer_tools.run_blackbox(
                    lab, counter, count, args.warmup, args.duration, args.timeout, workdir,
                    args.blackbox_connections)))
    if args.profile is not None:
        profile = args.profile.resolve()
        entry = step(f"prober monitor under cProfile: {args.profile_targets:,} targets",
                     lambda: monitor_run(lab, counter, args.profile_targets, settings, workdir,
                                         profile=profile, label="profile"))
        document["profile"] = {"file": str(profile), "run": entry}
    if args.memory:
        memory = MonitorSettings(settings.interval, settings.timeout, settings.warmup,
                                 args.memory * 60)
        document["memory"] = step(
            f"prober monitor: memory, {args.memory_targets:,} targets for {args.memory:g} min",
            lambda: monitor_run(lab, counter, args.memory_targets, memory, workdir,
                                rss_every_s=10.0, label="memory"))


def emit(args: argparse.Namespace, document: dict[str, Any]) -> None:
    """The figures (added to `document`), then the JSON or the text report."""
    settings = document["settings"]
    rows = [report.scale_figures(result) for result in document["scale"]]
    document["figures"] = {
        "scale": rows,
        "highest_holding": (report.highest_holding(rows) or {}).get("count"),
        "peers": [report.peer_figures(peer, rows) for peer in document["peers"]],
        "memory": None if document["memory"] is None
        else report.memory_figures(document["memory"], settings["interval"]),
    }
    if document["profile"] is not None:
        document["figures"]["profile"] = report.scale_figures(document["profile"]["run"])
    if args.json_file is not None:
        args.json_file.write_text(json.dumps(document, indent=1) + "\n")
    if args.json:
        print(json.dumps(document))
        return
    info = document["machine"]
    print(f"{info['date']}, kernel {info['kernel']}, {info['cpus']} x {info['cpu']}, "
          f"python {info['python']}, load {' '.join(info['loadavg'])} -> "
          f"{' '.join(info.get('loadavg_after', []))}")
    for tool, version in info["versions"].items():
        print(f"  {tool}: {version}")
    lab = document.get("lab", {})
    print(f"targets: {lab.get('block')} port 80 in {lab.get('namespace')} via "
          f"{lab.get('device')}; interval {settings['interval']:g} s, timeout "
          f"{settings['timeout']:g} s, warm-up {settings['warmup']:g} s, window "
          f"{settings['duration']:g} s")
    if rows:
        print("\n".join(report.scale_table(rows)))
        print("sent/s: SYNs on the link over the window; µs/probe: the child's CPU (user+sys) "
              "over the window / those SYNs; CPU %: that CPU / the window (below 100 % while "
              "behind its schedule: the child was not on a CPU all the time); late: how late "
              "each probe left against its schedule; >10 %: probes later than 10 % of the "
              "interval; other: answers neither SYN/ACK nor RST nor no-response")
        for result, row in zip(document["scale"], rows, strict=True):
            counters = result.get("target_counters", {})
            noted = {k: v for k, v in counters.items()
                     if v and k in ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop",
                                    "SyncookiesSent", "softnet_dropped")}
            if noted:
                print(f"  {row['count']:,}: target's counters over the run: {noted}")
    if document["figures"]["peers"]:
        print("peers (CPU per probe; ÷ prober: over prober's µs/probe at that N):")
        print("\n".join(report.peer_table(document["figures"]["peers"])))
        for peer in document["peers"]:
            print(f"  {peer['tool']} at {peer['count']:,}: {peer.get('note', '')}")
    for skipped in dict.fromkeys(document.get("skipped", [])):
        print(f"  skipped: {skipped}")
    if document["profile"] is not None:
        run = document["profile"]["run"]
        figures = document["figures"]["profile"]
        print(f"profiled run: {figures['count']:,} targets, "
              f"{figures['cpu_us_per_probe'] or 0:.1f} µs/probe under the profiler")
        path = Path(document["profile"]["file"])
        if path.exists() and not run.get("error"):
            print("\n".join(profile_lines(path, figures["probes"])))
            print(f"profile: {path} (python -m pstats {path})")
    if document["figures"]["memory"] is not None:
        minutes = document["memory"]["settings"]["duration"] / 60
        print("\n".join(report.memory_lines(document["figures"]["memory"], minutes)))
