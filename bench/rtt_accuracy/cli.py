"""Options, the runs over every tool, and the entry point."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from prober.lab.commands import find_tool

from . import tools as tl
from .lab import TARGET_PORT, Target, capture, lab_target, run_bounded
from .report import render_json, render_text
from .results import ToolResult
from .wire import join_peer_side, match_handshakes, read_pcap

MAX_COUNT = 50_000
MAX_RATE = 1000.0
MAX_RUNS = 20

# Where tcpdump runs: our end of the veth (the root namespace, where the tools send) and the
# peer's end (in the target's namespace).
OWN_SIDE = "own"
PEER_SIDE = "peer"


# --- the run ---------------------------------------------------------------------------------


def prober_binary() -> str | None:
    beside = Path(sys.executable).parent / "prober"
    return str(beside) if beside.exists() else shutil.which("prober")


def installed_tools() -> dict[str, str]:
    found: dict[str, str] = {}
    prober = prober_binary()
    if prober:
        found["prober"] = prober
    for name in ("hping3", "nping"):
        path = find_tool(name)
        if path:
            found[name] = path
    if importlib.util.find_spec("scapy") is not None:
        found["scapy"] = sys.executable
    return found


def run_tool(run: int, name: str, target: Target, args: argparse.Namespace,
             binaries: dict[str, str], workdir: Path) -> ToolResult:
    """One tool, `args.count` SYNs, captured by tcpdump on both ends of the veth."""
    invocation = tl.invocation(
        name, address=target.address, port=TARGET_PORT, count=args.count, rate=args.rate,
        prober_bin=binaries.get("prober", "prober"), scapy_socket=args.scapy_socket,
        binaries=binaries,
    )
    timeout_s = 2 * args.count / args.rate + 30
    immediate = args.capture_mode == "immediate"
    pcaps = {side: workdir / f"run{run}-{name}-{side}.pcap" for side in (OWN_SIDE, PEER_SIDE)}
    target.check_route()
    with contextlib.ExitStack() as stack:
        captures = [
            stack.enter_context(capture(target.device, pcaps[OWN_SIDE], immediate=immediate)),
            stack.enter_context(capture(target.target_device, pcaps[PEER_SIDE],
                                        namespace=target.namespace, immediate=immediate)),
        ]
        target.check_route()  # again, right before the first packet
        done = run_bounded(invocation.argv, timeout_s)
    if args.keep:
        (workdir / f"run{run}-{name}.stdout").write_text(done.stdout)
        (workdir / f"run{run}-{name}.stderr").write_text(done.stderr)
    wire, peer = (match_handshakes(read_pcap(pcaps[side]), target.local, target.address,
                                   TARGET_PORT)
                  for side in (OWN_SIDE, PEER_SIDE))
    notes: list[str] = []
    not_at_peer = join_peer_side(wire, peer)
    if not_at_peer:
        notes.append(f"{not_at_peer} SYNs not in the peer's capture: left out of the send "
                     "end and of reference A")
    dropped = sum(stats.dropped or 0 for stats in captures)
    if name == "prober":
        parsed = tl.parse_prober(done.stdout)
        pairing = tl.pair_by_port(parsed.reports, wire)
    elif name == "hping3":
        base = int(invocation.extra["base_port"])
        parsed = tl.parse_hping3(done.stdout, done.stderr, base)
        notes += tl.confirm_hping3_base(base, wire)
        pairing = tl.pair_by_port(parsed.reports, wire)
    elif name == "nping":
        parsed = tl.parse_nping(done.stdout)
        pairing = tl.pair_by_order(parsed, wire)
    else:
        parsed = tl.parse_scapy(done.stdout)
        pairing = tl.pair_by_port(parsed.reports, wire)
    notes += parsed.notes
    if done.timed_out:
        notes.append(f"killed after {timeout_s:.0f} s")
    elif done.returncode not in (0, None) and name != "hping3":
        first = (done.stderr.strip().splitlines() or [""])[0][:200]
        notes.append(f"exit status {done.returncode}: {first}")
    if dropped:
        notes.append(f"tcpdump: {dropped} packets dropped by kernel")
    return ToolResult(
        run=run, tool=name, command=invocation.argv, resolution=invocation.resolution,
        returncode=done.returncode, seconds=done.seconds, timed_out=done.timed_out,
        claimed_sent=parsed.claimed_sent, wire=wire, pairing=pairing,
        capture_dropped=dropped, not_at_peer=not_at_peer, notes=notes,
    )


# --- the machine -----------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_average() -> str:
    """The first three fields of /proc/loadavg (1, 5 and 15 minute averages)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def system_info(binaries: dict[str, str]) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model"):
                cpu = value.strip()
                break
    versions: dict[str, str] = {}
    import prober

    versions["prober"] = prober.__version__
    for name in ("hping3", "nping", "tcpdump"):
        path = binaries.get(name) or find_tool(name)
        if not path:
            continue
        done = run_bounded([path, "--version"], 5.0)
        # "hping3 version 3.0.0-alpha-2 ($Id: ...)", "Nping version 0.7.93 ( https://...",
        # "tcpdump version 4.99.3"
        found = re.search(r"version\s+(\S+)", done.stdout + done.stderr, re.IGNORECASE)
        versions[name] = found.group(1) if found else "?"
    if "scapy" in binaries:
        import scapy

        versions["scapy"] = scapy.__version__
    uname = os.uname()
    return {
        "date": _now(),
        "kernel": uname.release,
        "kernel_version": uname.version,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


# --- entry point -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rtt_accuracy",
        description="How far each tool's send and receive instants, and its SYN RTT, are "
                    "from tcpdump's stamps on both ends of a veth (run as root: it builds a "
                    "network namespace).",
    )
    parser.add_argument("--runs", type=int, default=3,
                        help="runs, each tool in turn in each (default 3); every figure is "
                             "given over all runs with its spread between runs")
    parser.add_argument("--count", type=int, default=1000,
                        help="SYNs per tool and run (default 1000)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="SYNs per second (default 100)")
    parser.add_argument("--tools", default=None,
                        help=f"comma-separated subset of {','.join(tl.TOOLS)} "
                             "(default: all installed)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--json-file", type=Path, default=None,
                        help="also write the JSON report to this file")
    parser.add_argument("--scapy-socket", choices=("fresh", "reuse"), default="reuse",
                        help="scapy: sr1() on one conf.L3socket() (reuse, default: keeps up "
                             "with 100/s) or the module-level sr1() with a socket per call "
                             "(fresh: ~35 ms per call)")
    parser.add_argument("--capture-mode", choices=("immediate", "buffered"),
                        default="immediate",
                        help="tcpdump with --immediate-mode -U (default) or without "
                             "(buffered: no wake-up per packet)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the captures and tool outputs (their directory is printed)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= MAX_RUNS:
        parser.error(f"--runs must be within 1..{MAX_RUNS}")
    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be within 1..{MAX_COUNT}")
    if not 0 < args.rate <= MAX_RATE:
        parser.error(f"--rate must be within (0, {MAX_RATE:g}]")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the context managers: full teardown


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("rtt_accuracy: needs root (network namespaces, raw sockets)", file=sys.stderr)
        return 2
    installed = installed_tools()
    wanted = ([t.strip() for t in args.tools.split(",") if t.strip()] if args.tools
              else [t for t in tl.TOOLS if t in installed])
    unknown = [t for t in wanted if t not in tl.TOOLS]
    missing = [t for t in wanted if t in tl.TOOLS and t not in installed]
    if unknown or missing or not wanted:
        print(f"rtt_accuracy: unknown tools {unknown}, not installed {missing}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    info = system_info(installed)
    given = sys.argv[1:] if argv is None else argv
    info["command"] = shlex.join([".venv/bin/python", "bench/rtt_accuracy", *given])
    workdir = Path(tempfile.mkdtemp(prefix="rtt_accuracy-"))
    results: list[ToolResult] = []
    runs: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    try:
        with lab_target() as target:
            params = {"target": target.address, "local": target.local,
                      "device": target.device, "namespace": target.namespace,
                      "peer_device": target.target_device, "runs": args.runs,
                      "count": args.count, "rate": args.rate, "tools": wanted,
                      "capture_mode": args.capture_mode, "scapy_socket": args.scapy_socket}
            for run in range(1, args.runs + 1):
                record: dict[str, Any] = {"run": run, "started": _now(),
                                          "load_before": load_average()}
                for name in wanted:
                    print(f"rtt_accuracy: run {run}/{args.runs}: {name} ...", file=sys.stderr,
                          flush=True)
                    result = run_tool(run, name, target, args, installed, workdir)
                    results.append(result)
                    if args.keep:
                        (workdir / f"run{run}-{name}.json").write_text(
                            json.dumps(result.to_dict()) + "\n")
                record["load_after"] = load_average()
                runs.append(record)
    except (KeyboardInterrupt, SystemExit):
        print("rtt_accuracy: interrupted; tools and captures stopped, lab torn down",
              file=sys.stderr)
        raise
    finally:
        if args.keep:
            print(f"rtt_accuracy: captures kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    render = render_json if args.json else render_text
    print(render(info, params, runs, results))
    if args.json_file is not None:
        try:
            args.json_file.write_text(render_json(info, params, runs, results) + "\n")
        except OSError as error:
            print(f"rtt_accuracy: cannot write {args.json_file}: {error.strerror}",
                  file=sys.stderr)
            return 2
    return 0
