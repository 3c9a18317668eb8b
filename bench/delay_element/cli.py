"""Build a --- element --- b, send a paced UDP stream a -> b, compare the element's two captures.

    ns a  ==veth==  [ el0l   element ns   el0r ]  ==veth==  ns b
    .1 / ::1          no addresses, no IPv6                 .2 / ::2   (one subnet)

tcpdump runs on both of the element's interfaces, inside its namespace: the frame's time on
the left interface is the kernel receive timestamp the element schedules from, its time on
the right one is when the element's send reached the device. Per frame, added error =
(out - in) - configured delay.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prober.lab import LabError, Topology, is_lab_address, route_check
from prober.lab.commands import command_env, in_namespace
from prober.lab.element import (
    DEFAULT_SPIN_MARGIN_S,
    ElementCounters,
    ElementLink,
    ElementSettings,
    add_element_link,
)

from .capture import CAPTURE_LINGER_S, CaptureStats, Frames, capture, read_frames

PORT = 9000
SENDER = Path(__file__).resolve().parent / "sender.py"
SENDER_SLACK_S = 10.0  # beyond count / rate before the sender is killed
NS_PER_US = 1000

# B has no listener: without this its kernel would answer every datagram with an ICMP port
# unreachable, sent back through the element.
_SINK_RULESET = f"""\
table inet prober_bench_sink {{
    chain input {{
        type filter hook input priority filter; policy accept;
        udp dport {PORT} drop
    }}
}}
"""


@dataclass
class Run:
    """One stream through the element."""

    sent: int
    frames_in: Frames  # on the element's left interface
    frames_out: Frames  # on its right interface
    captures: tuple[CaptureStats, CaptureStats]
    counters: ElementCounters

    def added_errors_ns(self, delay_ns: int) -> list[int]:
        return sorted(self.frames_out.times_ns[sequence] - self.frames_in.times_ns[sequence]
                      - delay_ns
                      for sequence in self.frames_out.times_ns
                      if sequence in self.frames_in.times_ns)

    @property
    def reorderings(self) -> int:
        order = self.frames_out.order
        return sum(1 for before, after in itertools.pairwise(order) if after < before)

    @property
    def dropped(self) -> set[int]:
        return set(self.frames_in.times_ns) - set(self.frames_out.times_ns)


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def stream(link: ElementLink, count: int, rate: float, directory: Path, label: str) -> Run:
    """Send `count` datagrams at `rate` from the left host to the right one, captured on both
    of the element's interfaces; stops the element and collects its counters."""
    destination = str(link.right.v4.ip)
    assert link.left.namespace is not None
    # The safety net before anything is sent: a lab address, routed over our link only.
    if not is_lab_address(destination):
        raise LabError(f"{destination} is not a lab address")
    device = route_check(destination, namespace=link.left.namespace,
                         devices=(link.left.device,))
    if device != link.left.device:
        raise LabError(f"{destination} is routed via {device}, not {link.left.device}")
    bpf_filter = f"udp and dst port {PORT}"
    in_path, out_path = directory / f"{label}-in.pcap", directory / f"{label}-out.pcap"
    namespace = link.element_namespace
    with capture(namespace, link.element_left, in_path, bpf_filter) as in_stats, \
            capture(namespace, link.element_right, out_path, bpf_filter) as out_stats:
        sent = _run_sender(link.left.namespace, destination, count, rate)
        time.sleep(link.element.settings.delay_s + link.element.settings.jitter_s
                   + CAPTURE_LINGER_S)
    counters = link.element.stop()
    return Run(sent=sent, frames_in=read_frames(in_path), frames_out=read_frames(out_path),
               captures=(in_stats, out_stats), counters=counters)


def _run_sender(namespace: str, destination: str, count: int, rate: float) -> int:
    argv = in_namespace(namespace, [sys.executable, str(SENDER), "--destination", destination,
                                    "--port", str(PORT), "--count", str(count),
                                    "--rate", str(rate)])
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=command_env(), start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=count / rate + SENDER_SLACK_S)
    except BaseException:
        process.kill()  # our child, by PID
        process.communicate(timeout=5)
        raise
    if process.returncode != 0:
        raise LabError(f"sender exited with {process.returncode}: {stderr.decode().strip()}")
    sent: int = json.loads(stdout)["sent"]
    return sent


def timing_summary(run: Run, delay_ns: int) -> dict[str, Any]:
    errors = run.added_errors_ns(delay_ns)
    if not errors:
        raise LabError("no frame was captured on both sides of the element")
    counters = run.counters.left_to_right
    return {
        "sent": run.sent,
        "captured_in": len(run.frames_in.times_ns),
        "captured_out": len(run.frames_out.times_ns),
        "added_error_us": {
            "min": errors[0] / NS_PER_US,
            "p50": percentile(errors, 0.50) / NS_PER_US,
            "p99": percentile(errors, 0.99) / NS_PER_US,
            "max": errors[-1] / NS_PER_US,
        },
        "reorderings": run.reorderings,
        "element_received": counters.received,
        "element_late_over_100us": counters.late,
        "element_max_late_us": counters.max_late_ns / NS_PER_US,
        "kernel_drops": run.counters.kernel_drops,
        "capture_drops": sum(stats.dropped or 0 for stats in run.captures),
        "scheduler": run.counters.scheduler,
        "element_cpu_s": run.counters.cpu_seconds,
    }


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/delay_element", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="packets per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each stream")
    parser.add_argument("--delay", type=float, default=0.020, help="element delay, seconds")
    parser.add_argument("--jitter", type=float, default=0.0, help="element jitter, seconds")
    parser.add_argument("--loss", type=float, default=0.1, help="loss for the two loss runs")
    parser.add_argument("--seed", type=int, default=7, help="seed for the two loss runs")
    parser.add_argument("--spin-margin", type=float, default=DEFAULT_SPIN_MARGIN_S,
                        help="element's spin margin, seconds")
    parser.add_argument("--keep-awake", action="store_true",
                        help="run the element with --keep-awake (pinned, CPU kept from idling)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    arguments = parser.parse_args(argv)
    if not 0 < arguments.rate <= 20_000 or not 0 < arguments.seconds <= 60:
        parser.error("rate must be in 0..20000 and seconds in 0..60")
    return arguments


def _terminate(signum: int, frame: object) -> None:
    # An exception unwinds the `with` blocks: captures, sender and topology are torn down.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    signal.signal(signal.SIGTERM, _terminate)
    count = round(arguments.rate * arguments.seconds)
    delay_ns = round(arguments.delay * 1e9)
    timing_settings = ElementSettings(delay_s=arguments.delay, jitter_s=arguments.jitter,
                                      spin_margin_s=arguments.spin_margin,
                                      keep_awake=arguments.keep_awake)
    loss_settings = replace(timing_settings, loss=arguments.loss, seed=arguments.seed)
    with tempfile.TemporaryDirectory(prefix="delay-element-") as temporary, \
            Topology.create() as topology:
        directory = Path(temporary)
        left = topology.add_namespace("a")
        right = topology.add_namespace("b")
        topology.apply_nftables(right, _SINK_RULESET)
        link = add_element_link(topology, left, right, number=0, delay=arguments.delay,
                                jitter=arguments.jitter, spin_margin=arguments.spin_margin,
                                keep_awake=arguments.keep_awake)
        timing = stream(link, count, arguments.rate, directory, "timing")
        link = link.restart(topology, loss_settings)
        first = stream(link, count, arguments.rate, directory, "loss1")
        link = link.restart(topology, loss_settings)
        second = stream(link, count, arguments.rate, directory, "loss2")
    result = {
        "settings": {"rate": arguments.rate, "count": count, "delay_s": arguments.delay,
                     "jitter_s": arguments.jitter, "spin_margin_s": timing_settings.spin_margin_s,
                     "keep_awake": arguments.keep_awake, "loss": arguments.loss,
                     "seed": arguments.seed},
        "timing": timing_summary(timing, delay_ns),
        "loss_runs": [
            {**timing_summary(run, delay_ns), "dropped": len(run.dropped),
             "loss_rate": len(run.dropped) / max(1, len(run.frames_in.times_ns)),
             "element_dropped_by_loss": run.counters.left_to_right.dropped_by_loss}
            for run in (first, second)
        ],
        "same_drops": first.dropped == second.dropped,
    }
    if arguments.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
    return 0


def print_table(result: dict[str, Any]) -> None:
    settings = result["settings"]
    print(f"delay element: delay {settings['delay_s'] * 1e3:g} ms, jitter "
          f"{settings['jitter_s'] * 1e3:g} ms, {settings['rate']:g} packets/s, "
          f"{settings['count']} packets per run, spin margin "
          f"{settings['spin_margin_s'] * 1e6:g} µs, keep-awake "
          f"{'on' if settings['keep_awake'] else 'off'}")
    print()
    print(f"{'run':<12} {'sent':>6} {'in':>6} {'out':>6} {'min µs':>8} {'p50 µs':>8} "
          f"{'p99 µs':>8} {'max µs':>8} {'reorder':>8} {'late':>5} {'kdrop':>6} {'sched':>6} "
          f"{'cpu s':>6}")
    rows = [("delay", result["timing"])]
    rows += [(f"loss run {n}", run) for n, run in enumerate(result["loss_runs"], 1)]
    for name, row in rows:
        errors = row["added_error_us"]
        print(f"{name:<12} {row['sent']:>6} {row['captured_in']:>6} {row['captured_out']:>6} "
              f"{errors['min']:>8.1f} {errors['p50']:>8.1f} {errors['p99']:>8.1f} "
              f"{errors['max']:>8.1f} "
              f"{row['reorderings']:>8} {row['element_late_over_100us']:>5} "
              f"{row['kernel_drops'] + row['capture_drops']:>6} {row['scheduler']:>6} "
              f"{row['element_cpu_s']:>6.2f}")
    print()
    for n, run in enumerate(result["loss_runs"], 1):
        print(f"loss run {n}: loss {settings['loss']:g}, seed {settings['seed']}: dropped "
              f"{run['dropped']} of {run['captured_in']} ({run['loss_rate'] * 100:.2f} %; "
              f"element counted {run['element_dropped_by_loss']})")
    print(f"same sequence numbers dropped in both runs: {'yes' if result['same_drops'] else 'NO'}")
