"""The measured process: `Prober.monitor` over the targets, counted over one window.

    python bench/monitor_scale/child.py CONFIG_JSON

CONFIG_JSON: {"targets_file", "port", "interval", "timeout", "warmup", "duration",
"profile" (a path or null)}. The monitor runs `warmup` seconds first (every target's first
round, the engine's sockets and port block opened), then the window: `duration` seconds
between two timer callbacks, each of which takes the process's rusage, the engine's
counters and the Monitor's `dropped` and `skipped` (when it has them), and prints one line
(``begin`` / ``end``, flushed) so the parent reads the link's SYN counter at the same
moments. Samples are counted while the window is open. The last stdout line is the result,
one JSON object. With "profile", cProfile runs over the window
only and its stats are written there.

Written against ``async for sample in prober.monitor(...)``, which both the first loop (an
async generator) and the Monitor object support; ``stop`` ends either, and ``aclose()`` is
awaited when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

# The bench directory instead of this one (whose module names must not shadow the stdlib).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from monitor_scale.stats import Tally  # noqa: E402
from prober import Prober  # noqa: E402

# After the window: at most this long for the monitor to stop once `stop` is set.
STOP_GRACE_S = 10.0


def cpu_s() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def engine_counters(prober: Prober) -> dict[str, int]:
    engine = prober.engine
    engine.take_kernel_drops()  # folds the socket's count into the stats
    return {key: value for key, value in dataclasses.asdict(engine.stats).items()
            if isinstance(value, int)}


async def run(config: dict[str, Any]) -> dict[str, Any]:
    addresses = Path(config["targets_file"]).read_text().split()
    targets = [(address, int(config["port"])) for address in addresses]
    interval, timeout = float(config["interval"]), float(config["timeout"])
    warmup, duration = float(config["warmup"]), float(config["duration"])
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    tally = Tally(interval)
    window: dict[str, Any] = {}
    measuring = False
    profiler = cProfile.Profile() if config.get("profile") else None

    async with Prober() as prober:
        try:
            monitor = prober.monitor(targets, interval=interval, timeout=timeout, stop=stop)
        except TypeError:  # a Monitor without `stop`: the loop below breaks out instead
            monitor = prober.monitor(targets, interval=interval, timeout=timeout)

        def begin() -> None:
            nonlocal measuring
            measuring = True
            window["begin"] = {"loop_s": loop.time(), "late_s": loop.time() - begin_at,
                               "cpu": cpu_s(), "engine": engine_counters(prober),
                               "skipped": getattr(monitor, "skipped", None)}
            print("begin", flush=True)
            if profiler is not None:
                profiler.enable()

        def end() -> None:
            nonlocal measuring
            if profiler is not None:
                profiler.disable()
            measuring = False
            window["end"] = {"loop_s": loop.time(), "late_s": loop.time() - end_at,
                             "cpu": cpu_s(), "engine": engine_counters(prober),
                             "rss_kib": proc_status_kib("VmRSS"),
                             "dropped": getattr(monitor, "dropped", None),
                             "skipped": getattr(monitor, "skipped", None)}
            print("end", flush=True)
            stop.set()

        started = loop.time()
        begin_at, end_at = started + warmup, started + warmup + duration
        loop.call_at(begin_at, begin)
        loop.call_at(end_at, end)
        loop.call_at(end_at + STOP_GRACE_S, stop.set)  # if `end` never ran (it always does)
        samples_before = 0
        async for sample in monitor:
            if measuring:
                tally.add(sample.state.value, sample.reason.value, sample.rtt_s,
                          sample.rtt_clock, sample.late_s)
            elif "begin" not in window:
                samples_before += 1
            if stop.is_set():
                break
        closing = getattr(monitor, "aclose", None)
        if closing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closing(), STOP_GRACE_S)
    if profiler is not None:
        profiler.dump_stats(config["profile"])
    begin_w, end_w = window.get("begin"), window.get("end")
    result: dict[str, Any] = {"targets": len(targets), "tally": tally.to_dict(),
                              "warmup_samples": samples_before,
                              "hwm_kib": proc_status_kib("VmHWM")}
    if begin_w and end_w:
        result.update(
            window_s=end_w["loop_s"] - begin_w["loop_s"],
            cpu_user_s=end_w["cpu"][0] - begin_w["cpu"][0],
            cpu_sys_s=end_w["cpu"][1] - begin_w["cpu"][1],
            engine={key: end_w["engine"][key] - begin_w["engine"].get(key, 0)
                    for key in end_w["engine"]},
            timer_late_s=[begin_w["late_s"], end_w["late_s"]],
            rss_kib=end_w["rss_kib"], dropped=end_w["dropped"],
            skipped=None if end_w["skipped"] is None or begin_w["skipped"] is None
            else end_w["skipped"] - begin_w["skipped"])
    return result


def main() -> int:
    config = json.loads(sys.argv[1])
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # the library runs on asyncio's own loop too
        runner = asyncio.run
    started = time.monotonic()
    result = runner(run(config))
    result["child_wall_s"] = time.monotonic() - started
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
