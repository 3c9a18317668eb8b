"""Each tool's command line against the `many` block, and how its output is read.

- prober: `python -m prober scan BLOCK:PORTS --rate R --wait W --seed S --format jsonl
  -o FILE`; found from each JSON line's `state`.
- masscan: `masscan BLOCK -pPORTS --rate R --adapter DEV --adapter-ip SRC --router-mac MAC
  --wait W --show closed -oL FILE`; its `open tcp PORT ADDR` and `closed ...` lines.
- zmap: `zmap -p PORT BLOCK -r R -i DEV -S SRC -G MAC --cooldown-time W -b EMPTY
  -f saddr,sport,classification --output-filter 'repeat = 0' -o FILE`, one run per port
  (zmap 2.1 takes one); its `synack` and `rst` rows.
- nmap: `nmap -sS -n -Pn -pPORTS --min-rate R --max-retries 0 SUBBLOCK -oG FILE`; the
  `PORT/open/tcp` entries of its grepable output.
- scapy: `sr(IP(dst=SUBBLOCK)/TCP(dport=80, flags="S"), timeout=W, inter=0)` in a subprocess
  (scapy_sr.py); its answered list.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prober.lab.commands import command_env, find_tool

from .lab import ManyPeer, nudge, target_counters
from .measure import Measured, run_measured
from .syncount import SynCounter
from .targets import OPEN_PORT, Tally, TargetSet

REPO = Path(__file__).resolve().parents[2]
PEER_TOOLS = ("masscan", "zmap", "nmap", "scapy")
TOOLS = (*PEER_TOOLS, "prober")
STARTUP_ALLOWANCE_S = 30.0  # beyond probes/rate + wait, before a run counts as hung
# What every tool reaches at least, whatever it was asked: its time limit assumes this rate.
# (On this lab each SYN's whole path, the router and the target's stack included, runs in
# softirq on the sender's own CPU, so tools send well below the rate asked.)
SLOWEST_RATE = 5_000


@dataclass(frozen=True)
class Context:
    peer: ManyPeer
    workdir: Path
    wait_s: float
    seed: int
    counter: SynCounter



@dataclass
class ToolRun:
    """One tool at one rate over one target set: what it cost and what it found."""

    tool: str
    rate_asked: int | None
    targets: TargetSet
    measured: Measured
    runs: int  # processes started (zmap: one per port)
    open_found: int
    closed_found: int | None  # None: the tool was not asked to report closed ports
    repeats: int
    outside: int
    counters: dict[str, int]  # the target's counters, after - before
    reported: dict[str, Any] = field(default_factory=dict)  # what the tool said of itself
    notes: list[str] = field(default_factory=list)
    shard: str | None = None  # "I/N" (1-based) when the run was one shard of the set
    planned: int | None = None  # probes of that shard; None: the whole set

    @property
    def probes(self) -> int:
        return self.targets.probes if self.planned is None else self.planned

    @property
    def syn_rate(self) -> float | None:
        window = self.measured.send_window_s
        return self.probes / window if window else None

    @property
    def open_fraction(self) -> float | None:
        expected = self.targets.open_expected
        return self.open_found / expected if expected else None

    @property
    def closed_fraction(self) -> float | None:
        expected = self.targets.closed_expected
        if not expected or self.closed_found is None:
            return None
        return self.closed_found / expected

    def to_dict(self) -> dict[str, Any]:
        measured = self.measured
        return {
            "tool": self.tool, "rate_asked": self.rate_asked,
            "targets": {"block": str(self.targets.block), "ports": self.targets.ports_text(),
                        "probes": self.targets.probes},
            "shard": self.shard, "planned": self.probes,
            "syn_per_s": None if self.syn_rate is None else round(self.syn_rate, 1),
            "send_window_s": measured.send_window_s, "wall_s": round(measured.wall_s, 3),
            "cpu_s": round(measured.cpu_s, 3), "user_s": round(measured.user_s, 3),
            "sys_s": round(measured.sys_s, 3), "maxrss_kib": measured.maxrss_kib,
            "ru_maxrss_kib": measured.ru_maxrss_kib,
            "hwm_by_process_kib": measured.hwm_by_process,
            "tree_rss_peak_kib": measured.tree_rss_peak_kib, "syns_seen": measured.syns_seen,
            "open_found": self.open_found, "open_expected": self.targets.open_expected,
            "closed_found": self.closed_found, "closed_expected": self.targets.closed_expected,
            "repeats": self.repeats, "outside": self.outside, "runs": self.runs,
            "returncode": measured.returncode, "killed": measured.killed,
            "nudged": measured.nudged, "background_pps": round(measured.background_pps),
            "argv": measured.argv, "target_counters": self.counters,
            "reported": self.reported, "notes": self.notes,
        }


def counters_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after}


def combine(runs: list[Measured]) -> Measured:
    """Several processes one after the other (zmap's one per port) as one measurement."""
    windows = [run.send_window_s for run in runs if run.send_window_s is not None]
    return replace(
        runs[0], argv=runs[0].argv, returncode=max((r.returncode or 0) for r in runs)
        if all(r.returncode is not None for r in runs) else None,
        wall_s=sum(r.wall_s for r in runs), user_s=sum(r.user_s for r in runs),
        sys_s=sum(r.sys_s for r in runs), maxrss_kib=max(r.maxrss_kib for r in runs),
        ru_maxrss_kib=max(r.ru_maxrss_kib for r in runs),
        hwm_by_process={k: v for r in runs for k, v in r.hwm_by_process.items()},
        tree_rss_peak_kib=max(r.tree_rss_peak_kib for r in runs),
        send_window_s=sum(windows) if windows else None,
        syns_seen=sum(r.syns_seen for r in runs), killed=any(r.killed for r in runs),
        nudged=any(r.nudged for r in runs),
        background_pps=max(r.background_pps for r in runs), output=runs[-1].output)


def time_budget(targets: TargetSet, rate: float, wait_s: float) -> float:
    return targets.probes / min(rate, SLOWEST_RATE) + wait_s + STARTUP_ALLOWANCE_S


def run_masscan(ctx: Context, targets: TargetSet, rate: int) -> ToolRun:
    peer = ctx.peer
    out = ctx.workdir / f"masscan-{rate}.txt"
    out.unlink(missing_ok=True)
    argv = [find_tool("masscan") or "masscan", str(targets.block), f"-p{targets.ports_text()}",
            "--rate", str(rate), "--adapter", peer.device, "--adapter-ip", peer.source_v4,
            "--router-mac", peer.router_mac, "--wait", f"{ctx.wait_s:g}", "--show", "closed",
            "-oL", str(out)]
    expected_s = targets.probes / rate + ctx.wait_s
    # masscan 1.3.2 hangs at the end of its wait until a frame arrives (lab.nudge); nudged
    # from 1 s after the end it would reach at the rate asked, once a second (harmless while
    # it still sends), and killed at the time limit if that does not end it.
    measured = run_measured(
        argv, counter=ctx.counter, output=ctx.workdir / f"masscan-{rate}.log",
        timeout_s=time_budget(targets, rate, ctx.wait_s), env=command_env(),
        nudge_after_s=expected_s + 1.0,
        nudge=lambda: nudge(peer.gateway_v4, peer.device))
    tally = Tally(targets)
    if out.exists():
        for line in out.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] in ("open", "closed") and fields[2].isdigit():
                tally.add(fields[3], int(fields[2]), fields[0])
    found = re.findall(r"found=(\d+)", measured.output)
    reported: dict[str, Any] = {"found": int(found[-1])} if found else {}
    # Its status line's rate while sending (the zero ones are its wait).
    own = [float(r) for r in re.findall(r"rate:\s*([\d.]+)-kpps", measured.output) if float(r)]
    if own:
        reported["own_rate"] = round(sum(own) / len(own) * 1000)
    run = tool_run("masscan", rate, targets, measured, 1, tally, closed=True, reported=reported)
    if measured.killed:
        run.notes.append("killed after its wait (masscan 1.3.2 hang); counted what it wrote")
    return run


def run_zmap(ctx: Context, targets: TargetSet, rate: int) -> ToolRun:
    """zmap 2.1 scans one port per run: one run per port of the set, back to back."""
    peer = ctx.peer
    empty = ctx.workdir / "zmap-blocklist-empty.conf"
    empty.write_text("")  # its default blocklist holds 198.18.0.0/15, the lab's own range
    tally = Tally(targets)
    measured: list[Measured] = []
    reported: dict[str, Any] = {"sent": 0, "drops": []}
    sending_s = 0.0  # by its own account: each run's sent / its average rate
    single = TargetSet(targets.block, (OPEN_PORT,))
    for port in targets.ports:
        out = ctx.workdir / f"zmap-{rate}-{port}.csv"
        argv = [find_tool("zmap") or "zmap", "-p", str(port), str(targets.block), "-r", str(rate),
                "-i", peer.device, "-S", peer.source_v4, "-G", peer.router_mac,
                "--cooldown-time", f"{ctx.wait_s:g}", "-b", str(empty),
                "-f", "saddr,sport,classification", "--output-filter", "repeat = 0",
                "-o", str(out)]
        log = ctx.workdir / f"zmap-{rate}-{port}.log"
        one = run_measured(argv, counter=ctx.counter, output=log,
                           timeout_s=time_budget(single, rate, ctx.wait_s), env=command_env())
        measured.append(one)
        if out.exists():
            for line in out.read_text(errors="replace").splitlines()[1:]:
                fields = line.split(",")
                if len(fields) >= 3 and fields[1].isdigit():
                    state = {"synack": "open", "rst": "closed"}.get(fields[2], fields[2])
                    tally.add(fields[0], int(fields[1]), state)
        sent = re.findall(r"send: (\d+) done", one.output)
        drops = re.findall(r"drops: \d+ p/s \((\d+) p/s avg\)", one.output)
        reported["sent"] += int(sent[-1]) if sent else 0
        avg = re.findall(r"send: (\d+) done \(([\d.]+) Kp/s avg\)", one.output)
        if avg and float(avg[-1][1]):
            sending_s += int(avg[-1][0]) / (float(avg[-1][1]) * 1000)
        if drops:
            reported["drops"].append(int(drops[-1]))
    if sending_s:
        reported["own_rate"] = round(reported["sent"] / sending_s)
    run = tool_run("zmap", rate, targets, combine(measured), len(measured), tally, closed=True,
                   reported=reported)
    if targets.closed_expected and not tally.closed:
        run.notes.append("no RSTs reported: zmap 2.1.1's synscan module reported none here, "
                         "whatever the output filter (they are on the wire)")
    if len(measured) > 1:
        run.notes.append(f"{len(measured)} runs, one per port (zmap 2.1 scans one port per run);"
                         " SYN/s over the sum of their sending windows")
    return run


def parse_nmap(path: Path, tally: Tally) -> None:
    entry = re.compile(r"(\d+)/(open|closed|filtered)/tcp")
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("Host: ") or "Ports: " not in line:
            continue
        address = line.split()[1]
        for port, state in entry.findall(line):
            tally.add(address, int(port), state)


def run_nmap(ctx: Context, targets: TargetSet, rate: int) -> ToolRun:
    out = ctx.workdir / f"nmap-{rate}.gnmap"
    argv = [find_tool("nmap") or "nmap", "-sS", "-n", "-Pn", f"-p{targets.ports_text()}",
            "--min-rate", str(rate), "--max-retries", "0", str(targets.block), "-oG", str(out)]
    measured = run_measured(argv, counter=ctx.counter, output=ctx.workdir / f"nmap-{rate}.log",
                            timeout_s=time_budget(targets, rate, ctx.wait_s), env=command_env())
    tally = Tally(targets)
    if out.exists():
        parse_nmap(out, tally)
    ignored = re.findall(r"Ignored State: closed \((\d+)\)",
                         out.read_text(errors="replace") if out.exists() else "")
    scanned = re.findall(r"scanned in ([\d.]+) seconds", measured.output)
    reported: dict[str, Any] = {}
    if scanned and float(scanned[-1]):  # its whole scan, its final wait included
        reported["own_rate"] = round(targets.probes / float(scanned[-1]))
    run = tool_run("nmap", rate, targets, measured, 1, tally, closed=True, reported=reported)
    if ignored:
        run.notes.append(f"{sum(map(int, ignored))} closed ports summarised as 'Ignored State'")
    return run


def run_scapy(ctx: Context, targets: TargetSet, rate: int | None) -> ToolRun:
    script = Path(__file__).with_name("scapy_sr.py")
    argv = [sys.executable, str(script), str(targets.block), str(OPEN_PORT), f"{ctx.wait_s:g}"]
    measured = run_measured(argv, counter=ctx.counter, output=ctx.workdir / "scapy.log",
                            timeout_s=time_budget(targets, 300, ctx.wait_s), env=command_env())
    tally = Tally(targets)
    reported: dict[str, Any] = {}
    try:  # its last line: the whole log, as the address lists outgrow the output's tail
        log = (ctx.workdir / "scapy.log").read_text(errors="replace")
        result = json.loads(log.strip().splitlines()[-1])
        for address in result["open"]:
            tally.add(address, OPEN_PORT, "open")
        for address in result["closed"]:
            tally.add(address, OPEN_PORT, "closed")
        reported = {"sent": result["sent"], "answered": result["answered"]}
    except (ValueError, IndexError, KeyError):
        pass
    return tool_run("scapy", rate, targets, measured, 1, tally, closed=False, reported=reported)


@functools.cache
def has_scan_command() -> bool:
    """Whether this checkout's CLI has `prober scan` yet (the engine came first)."""
    done = subprocess.run([sys.executable, "-m", "prober", "scan", "--help"], cwd=REPO,
                          capture_output=True, env=command_env(), timeout=60, check=False)
    return done.returncode == 0


LIBRARY_SCAN = REPO / "examples" / "library_scan.py"


def prober_argv(targets: TargetSet, rate: int, wait_s: float, seed: int, out: Path,
                shard: str | None = None) -> tuple[list[str], bool]:
    """(argv, whether it writes its JSON lines to `out`; else to its stdout): the command, or
    while it is missing the library through examples/library_scan.py."""
    block = str(targets.block)
    target = f"{block}:{targets.ports_text()}" if targets.block.version == 4 else (
        f"[{block}]:{targets.ports_text()}")
    common = [target, "--rate", str(rate), "--wait", f"{wait_s:g}", "--seed", str(seed),
              *(["--shard", shard] if shard else [])]
    if has_scan_command():
        return [sys.executable, "-m", "prober", "scan", *common, "--format", "jsonl", "-o",
                str(out)], True
    return [sys.executable, str(LIBRARY_SCAN), *common], False


def read_prober_output(path: Path, tally: Tally) -> dict[str, Any]:
    """Count its records; returns its summary record, when the file has one."""
    summary: dict[str, Any] = {}
    if not path.exists():
        return summary
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if record.get("type") == "summary":
                summary = record
            elif isinstance(record.get("port"), int) and isinstance(record.get("target"), str):
                tally.add(record["target"], record["port"], str(record.get("state")))
    return summary


SUMMARY_KEYS = ("sent", "rate_pps", "kernel_drops", "duplicates", "late", "kernel_rsts",
                "own_rsts", "complete")


def run_prober(ctx: Context, targets: TargetSet, rate: int, *, shard: str | None = None,
               label: str = "prober") -> ToolRun:
    tag = f"{label}-{rate}" + (f"-shard{shard.replace('/', 'of')}" if shard else "")
    out = ctx.workdir / f"{tag}.jsonl"
    out.unlink(missing_ok=True)
    argv, to_file = prober_argv(targets, rate, ctx.wait_s, ctx.seed, out, shard)
    log = ctx.workdir / f"{tag}.log"
    # From the repository root, so `import prober` is this checkout's code.
    measured = run_measured(argv, counter=ctx.counter, output=log,
                            timeout_s=time_budget(targets, rate, ctx.wait_s), cwd=REPO,
                            env=command_env())
    tally = Tally(targets)
    summary = read_prober_output(out if to_file else log, tally)
    reported: dict[str, Any] = {key: summary[key] for key in SUMMARY_KEYS if key in summary}
    if "rate_pps" in summary:
        reported["own_rate"] = round(summary["rate_pps"])
    elif to_file:  # the command's summary on stderr
        sent = re.findall(r"sent ([\d,]+) SYNs at ([\d,]+)/s", measured.output)
        drops = re.findall(r"kernel drops ([\d,]+)", measured.output)
        if sent:
            reported.update(sent=int(sent[-1][0].replace(",", "")),
                            own_rate=int(sent[-1][1].replace(",", "")))
        if drops:
            reported["kernel_drops"] = int(drops[-1].replace(",", ""))
    else:  # library_scan.py's summary line on stderr
        line = re.findall(r"in ([\d.]+) s, ([\d,]+) SYN/s; kernel drops (\d+)", measured.output)
        if line:
            reported.update(own_rate=int(line[-1][1].replace(",", "")),
                            kernel_drops=int(line[-1][2]))
    run = tool_run(label, rate, targets, measured, 1, tally, closed=True, reported=reported)
    if shard:
        index, count = (int(n) for n in shard.split("/"))
        run.shard = shard
        run.planned = (targets.probes - (index - 1) + count - 1) // count
    commit = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h"],
                            capture_output=True, text=True, check=False).stdout.strip()
    run.notes.append(f"prober at {commit or '?'}")  # the checkout may move between runs
    if not to_file:
        run.notes.append("through examples/library_scan.py: this checkout has no `prober scan`")
    if measured.returncode not in (0, None) or not (out.exists() or not to_file):
        tail = measured.output.strip().splitlines()[-1:] or ["(no output)"]
        run.notes.append(f"exit {measured.returncode}: {tail[0][:200]}")
    else:
        run.notes.extend(line[:200] for line in measured.output.strip().splitlines()
                         if line.startswith("states:") or "incomplete" in line.lower()
                         or (not to_file and not line.startswith("{")))
    return run


def tool_run(tool: str, rate: int | None, targets: TargetSet, measured: Measured, runs: int,
             tally: Tally, *, closed: bool, reported: dict[str, Any] | None = None) -> ToolRun:
    return ToolRun(tool=tool, rate_asked=rate, targets=targets, measured=measured, runs=runs,
                   open_found=tally.open, closed_found=tally.closed if closed else None,
                   repeats=tally.repeats, outside=tally.outside, counters={},
                   reported=reported or {})


Runner = Callable[[Context, TargetSet, int], ToolRun]
RUNNERS: dict[str, Runner] = {"masscan": run_masscan, "zmap": run_zmap, "nmap": run_nmap,
                              "scapy": run_scapy, "prober": run_prober}


def measure_tool(ctx: Context, runner: Callable[[], ToolRun]) -> ToolRun:
    """Run one tool between two readings of the target's counters."""
    before = target_counters(ctx.peer.namespace)
    run = runner()
    run.counters = counters_delta(before, target_counters(ctx.peer.namespace))
    return run
