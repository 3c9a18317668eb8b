"""The peer tools, each doing "probe N endpoints once a second" as far as it can:

- nping: ``nping -6 --tcp -p 80 --flags syn --rate N -c ROUNDS -q -e DEV --send-eth
  --source-mac M --dest-mac M -S SRC ADDR...``: one process, every round one SYN to each
  target, N SYNs/s. Its statistics give sent and received.
- hping3: one target per process (no target list, no IPv6), so ``hping3 -S -p 80 -I DEV
  -i uI -c N*ROUNDS ADDR`` at the same rate to the link's IPv4 address: the same SYNs/s, not
  the same targets (N processes would cost N start-ups and N capture sockets).
- blackbox_exporter (``prometheus-blackbox-exporter``, Debian): the real peer, its tcp
  module (a full connect, then close) scraped on /probe for N targets once a second by
  scraper.py; its CPU is read from /proc over the scraper's window, so neither its start-up
  nor the scraper counts.

For each: CPU (user + system) per probe, the SYNs it put on the link (the counting tap), and
what it reports of its answers.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from scan_rate.syncount import SynCounter

from prober.lab.commands import command_env, find_tool

from .lab import TARGET_PORT, MonitorLab
from .runner import ChildRun, cpu_ticks_s, run_child, status_kib

SCRAPER = Path(__file__).with_name("scraper.py")
PEER_TOOLS = ("nping", "hping3", "blackbox")
EXECUTABLES = {"nping": "nping", "hping3": "hping3", "blackbox": "prometheus-blackbox-exporter"}
PACKAGES = {"nping": "nmap", "hping3": "hping3", "blackbox": "prometheus-blackbox-exporter"}
ALLOWANCE_S = 30.0
# nping 0.7.93 probes at most 1,024 targets (more are ignored: 2 rounds over 2,000 sent 2,048)
# and paces in whole milliseconds (a delay of 1000 / rate ms): from 1,001/s up the delay is 0
# and it sends as fast as it can (1,024/s asked sent 20,000/s here). So it runs at N <= 1,000.
NPING_MAX_RATE = 1000
NPING_LIMITS = ("nping takes at most 1,024 targets and paces in whole milliseconds, so above "
                "1,000/s it does not pace: not run")
BLACKBOX_CONFIG = """\
modules:
  tcp_connect:
    prober: tcp
    timeout: {timeout}s
    tcp:
      preferred_ip_protocol: ip{family}
      ip_protocol_fallback: false
"""


def missing_tools(tools: list[str]) -> list[str]:
    return [tool for tool in tools if find_tool(EXECUTABLES[tool]) is None]


def record(tool: str, count: int, run: ChildRun, probes: int | None, answered: int | None,
           cpu_s: float, window_s: float, syns: int | None, **extra: Any) -> dict[str, Any]:
    return {"tool": tool, "count": count, "argv": run.argv[:12]
            + (["..."] if len(run.argv) > 12 else []), "returncode": run.returncode,
            "wall_s": round(run.wall_s, 3), "cpu_s": cpu_s, "window_s": window_s,
            "probes": probes, "answered": answered, "syns": syns, "hwm_kib": run.hwm_kib,
            "stderr": run.stderr[-500:], **extra}


def run_nping(lab: MonitorLab, counter: SynCounter, count: int, rounds: int) -> dict[str, Any]:
    # The interface, both MACs and the source given: left to itself, nping -6 sent nothing
    # over the lab link here (its own route and neighbour lookup), and a raw sender must not
    # pick an interface of its own.
    argv = [find_tool("nping") or "nping", *(["-6"] if lab.block.version == 6 else []),
            "--tcp", "-p", str(TARGET_PORT), "--flags", "syn", "--rate", str(count), "-c",
            str(rounds), "-q", "-e", lab.device, "--send-eth", "--source-mac", lab.source_mac,
            "--dest-mac", lab.next_hop_mac, "-S", lab.source, *lab.targets(count)]
    run = run_child(argv, counter=counter, timeout_s=rounds + ALLOWANCE_S, env=command_env())
    text = "\n".join(run.stdout)
    counts = re.search(r"Raw packets sent: (\d+) .*?Rcvd: (\d+)", text)
    rtt = re.search(r"Avg rtt: ([\d.]+)ms", text)
    return record("nping", count, run, int(counts[1]) if counts else None,
                  int(counts[2]) if counts else None, run.cpu_s, run.wall_s, run.syns,
                  avg_rtt_ms=float(rtt[1]) if rtt else None,
                  note="one process, N targets; window = its whole run (start-up included)")


def run_hping3(lab: MonitorLab, counter: SynCounter, count: int, rounds: int) -> dict[str, Any]:
    interval_us = max(1, round(1e6 / count))
    argv = [find_tool("hping3") or "hping3", "-S", "-p", str(TARGET_PORT), "-I", lab.device,
            "-i", f"u{interval_us}", "-c", str(count * rounds), lab.hping3_target]
    run = run_child(argv, counter=counter, timeout_s=rounds * 2 + ALLOWANCE_S,
                    env=command_env())
    text = "\n".join(run.stdout) + run.stderr
    counts = re.search(r"(\d+) packets transmitted, (\d+) packets received", text)
    return record("hping3", count, run, int(counts[1]) if counts else None,
                  int(counts[2]) if counts else None, run.cpu_s, run.wall_s, run.syns,
                  interval_us=interval_us,
                  note=f"one target ({lab.hping3_target}) at N SYNs/s: hping3 takes one "
                       "target and no IPv6")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run_blackbox(lab: MonitorLab, counter: SynCounter, count: int, warmup: float,
                 duration: float, timeout: float, workdir: Path,
                 connections: int) -> dict[str, Any]:
    config = workdir / "blackbox.yml"
    config.write_text(BLACKBOX_CONFIG.format(timeout=timeout, family=lab.block.version))
    targets_file = workdir / f"blackbox-targets-{count}.txt"
    targets_file.write_text("\n".join(lab.targets(count)) + "\n")
    port = free_port()
    argv = [find_tool("prometheus-blackbox-exporter") or "prometheus-blackbox-exporter",
            f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=error"]
    log = workdir / "blackbox.log"
    with open(log, "wb") as sink:
        exporter = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                    env=command_env(), start_new_session=True)
    cpu_at: dict[str, float] = {}
    try:
        wait_ready(port)
        scrape = {"port": port, "targets_file": str(targets_file), "target_port": TARGET_PORT,
                  "interval": 1.0, "warmup": warmup, "duration": duration,
                  "connections": connections, "module": "tcp_connect"}

        def on_mark(mark: str) -> None:
            cpu_at[mark] = cpu_ticks_s(exporter.pid)

        run = run_child([sys.executable, str(SCRAPER), json.dumps(scrape)], counter=counter,
                        timeout_s=warmup + duration + ALLOWANCE_S, env=command_env(),
                        on_mark=on_mark)
        exporter_hwm = status_kib(exporter.pid)[1]
    finally:
        exporter.terminate()  # by its PID: the one we started
        try:
            exporter.wait(timeout=10)
        except subprocess.TimeoutExpired:
            exporter.kill()
            exporter.wait(timeout=10)
    result: dict[str, Any] = {}
    for line in reversed(run.stdout):
        try:
            result = json.loads(line)
            break
        except ValueError:
            continue
    window = run.window_syns()
    cpu = cpu_at.get("end", 0.0) - cpu_at.get("begin", 0.0)
    entry = record("blackbox", count, run, result.get("answered"), result.get("success"), cpu,
                   window[0] if window else result.get("window_s", 0.0),
                   window[1] if window else None, scraper=result,
                   scraper_cpu_s=run.cpu_s, exporter_argv=argv,
                   note="tcp module (connect + close) on /probe, N targets once a second; "
                        "CPU of the exporter over the scraper's window (the scraper's own "
                        "is scraper_cpu_s)")
    entry["hwm_kib"] = exporter_hwm
    return entry

