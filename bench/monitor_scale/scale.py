"""One monitor run: the child (child.py) over N targets of the lab's block, measured from
outside (runner.py), and what it counted of itself, as one record for the report."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scan_rate.syncount import SynCounter

from prober.lab.commands import command_env

from .lab import TARGET_PORT, MonitorLab
from .runner import ChildRun, run_child

CHILD = Path(__file__).with_name("child.py")
REPO = Path(__file__).resolve().parents[2]
START_ALLOWANCE_S = 60.0  # imports, the engine's sockets, resolving N literals, the stop


@dataclass(frozen=True)
class MonitorSettings:
    interval: float
    timeout: float
    warmup: float
    duration: float


def monitor_run(lab: MonitorLab, counter: SynCounter, count: int, settings: MonitorSettings,
                workdir: Path, *, profile: Path | None = None, rss_every_s: float = 0.5,
                label: str = "scale") -> dict[str, Any]:
    """Run the monitor child over the first `count` addresses of the block; returns its own
    result (child.py) with the outside measurements under "outside"."""
    targets_file = workdir / f"targets-{count}.txt"
    targets_file.write_text("\n".join(lab.targets(count)) + "\n")
    config = {"targets_file": str(targets_file), "port": TARGET_PORT,
              "interval": settings.interval, "timeout": settings.timeout,
              "warmup": settings.warmup, "duration": settings.duration,
              "profile": None if profile is None else str(profile)}
    argv = [sys.executable, str(CHILD), json.dumps(config)]
    run = run_child(argv, counter=counter, rss_every_s=rss_every_s, env=command_env(),
                    cwd=REPO, timeout_s=settings.warmup + settings.duration + START_ALLOWANCE_S)
    result = parse_result(run)
    result.update(label=label, count=count, settings=settings.__dict__, outside=outside(run))
    return result


def parse_result(run: ChildRun) -> dict[str, Any]:
    for line in reversed(run.stdout):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {"error": f"no result (exit {run.returncode}): "
                     f"{(run.stderr.strip().splitlines() or ['no output'])[-1][:300]}"}


def outside(run: ChildRun) -> dict[str, Any]:
    window = run.window_syns()
    return {"argv": [*run.argv[:2], "CONFIG"], "returncode": run.returncode,
            "wall_s": round(run.wall_s, 3), "user_s": run.user_s, "sys_s": run.sys_s,
            "hwm_kib": run.hwm_kib, "syns": run.syns,
            "window_s": None if window is None else window[0],
            "window_syns": None if window is None else window[1],
            "begin_s": run.marks["begin"][0] if "begin" in run.marks else None,
            "end_s": run.marks["end"][0] if "end" in run.marks else None,
            "rss_samples": [[round(t, 1), kib] for t, kib in run.rss_samples],
            "stderr": run.stderr[-1000:]}
