"""TX timestamps paired with their sends both ways a kernel numbers them (per-send ids on
6.13+, the socket's counter before; prober/engine/txstamps.py), also when sends fail between
them, and sends whose stamp never comes expire instead of piling up.

Each case runs prober inside a namespace of its own (loopback only: nothing leaves it), where
an nftables rule drops prober's SYNs to port 9 (the send fails with EPERM after it took a
counter key) and 198.18.255.1 / 2001:2:ffff::1 have no route (ENETUNREACH, before any key),
interleaved with probes of a listener on 127.0.0.1 / ::1: their every RTT must be on the
kernel clock, every stamp paired (an engine that miscounts the socket's keys leaves the last
probes without a stamp).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from prober.lab import Topology

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROBES = 120
DROP_PORT = 9
# prober's own SYNs to port 9 are dropped in the output hook: sendmsg fails with EPERM.
DROP_RULESET = f"""
table inet prober_test_drop {{
    chain output {{
        type filter hook output priority 0; policy accept;
        tcp dport {DROP_PORT} tcp flags syn drop
    }}
}}
"""
LOOPBACK = {4: "127.0.0.1", 6: "::1"}
UNROUTABLE = {4: "198.18.255.1", 6: "2001:2:ffff::1"}  # no route in the namespace

# What both scripts start with: imports, and a listener on loopback whose port is `port`.
PREAMBLE = textwrap.dedent(
    """
    import asyncio, ipaddress, json, socket
    import uvloop
    from prober import Prober
    from prober.core.packets import TcpTemplate
    from prober.core.syn import SynProbe
    from prober.core.wire import TcpFlags
    from prober.engine import sockets

    listener = socket.socket(socket.AF_INET6)  # dual-stack: 127.0.0.1 and ::1
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    """
)

MIXED_RUNS = PREAMBLE + textwrap.dedent(
    """
    VERSION, LOOPBACK, UNROUTABLE, DROP_PORT, PROBES = @ARGUMENTS@

    async def main():
        template = TcpTemplate(VERSION, TcpFlags.SYN)
        src = ipaddress.ip_address(LOOPBACK).packed
        async with Prober() as prober:
            engine = prober.engine
            flights = {"good": [], "dropped": [], "unroutable": []}
            done = asyncio.Event()
            answered = []

            def finished(flight):
                answered.append(flight)
                if len(answered) == PROBES:
                    done.set()

            def launch(kind, destination, dport, number):
                dst = ipaddress.ip_address(destination).packed
                sport = engine.ports.acquire()
                probe = SynProbe(number=number, template=template, src=src, dst=dst,
                                 sport=sport, dport=dport, isn=number * 7919, timeout=1.0)
                on_done = finished if kind == "good" else None
                flights[kind].append(engine.launch(probe, VERSION, destination,
                                                   (dst, dport, sport), on_done))

            # Every good send has a failed one of each kind between it and the next.
            for number in range(1, PROBES + 1):
                launch("good", LOOPBACK, port, number)
                launch("dropped", LOOPBACK, DROP_PORT, number)
                launch("unroutable", UNROUTABLE, port, number)
                await asyncio.sleep(0.0005)
            await asyncio.wait_for(done.wait(), 10)
            results = [flight.probe.result() for flight in flights["good"]]
            report = {
                "method": engine.tx_stamp_method(VERSION).value,
                "clocks": [r.rtt.clock.value if r.rtt else None for r in results],
                "answered": sum(1 for r in results if r.answered),
                "dropped_errors": sorted({f.probe.result().error for f in flights["dropped"]}),
                "unroutable_errors": sorted(
                    {f.probe.result().error for f in flights["unroutable"]}
                ),
                "unmatched": engine.stats.tx_stamps_unmatched,
                "stamps": engine.stats.tx_stamps,
            }
            for kind in flights.values():
                for flight in kind:
                    engine.retire(flight)
                    engine.ports.release(flight.key[2])
        print(json.dumps(report))

    uvloop.run(main())
    """
)


def mixed_runs(version: int) -> str:
    arguments = (version, LOOPBACK[version], UNROUTABLE[version], DROP_PORT, PROBES)
    return MIXED_RUNS.replace("@ARGUMENTS@", repr(arguments))


NO_STAMPS = PREAMBLE + textwrap.dedent(
    f"""
    async def main():
        async with Prober() as prober:
            engine = prober.engine
            # As a driver without software TX stamps: the kernel never stamps these sends.
            sockets.disable_tx_timestamps(engine.send_socket(4))
            engine._tx[4].wait_s = 0.3
            run = await prober.syn("127.0.0.1", port, count={PROBES}, interval=0.001,
                                   timeout=0.5)
            waiting_after_run = engine.tx_stamps_waiting()
            await asyncio.sleep(0.4)
            # One more probe: the engine drains (and expires) on its next send.
            await prober.syn("127.0.0.1", port, count=1, timeout=0.5)
            report = {{
                "clocks": sorted({{p.rtt.clock.value for p in run.probes if p.rtt}}),
                "answered": run.answered,
                "waiting_after_run": waiting_after_run,
                "waiting_at_end": engine.tx_stamps_waiting(),
                "expired": engine.stats.tx_stamps_expired,
            }}
        print(json.dumps(report))

    uvloop.run(main())
    """
)


@pytest.fixture
def namespace() -> Iterator[str]:
    with Topology.create() as topology:
        name = topology.add_namespace("tx")
        topology.apply_nftables(name, DROP_RULESET)
        yield name


def run_in(namespace: str, script: str, method: str | None) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if key != "PROBER_TX_STAMP_ID"}
    if method is not None:
        env["PROBER_TX_STAMP_ID"] = method
    completed = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("method", ["per-socket", "per-send"])
def test_every_rtt_is_on_the_kernel_clock_though_sends_fail_between(
    namespace: str, method: str, version: int
) -> None:
    report = run_in(namespace, mixed_runs(version), method)
    assert report["method"] == method
    assert report["answered"] == PROBES
    assert report["clocks"] == ["kernel"] * PROBES
    assert report["dropped_errors"] == ["Operation not permitted"]
    assert report["unroutable_errors"] == ["Network is unreachable"]
    assert report["unmatched"] == 0
    assert report["stamps"] == PROBES


def test_the_kernel_is_probed_when_nothing_is_forced(namespace: str) -> None:
    report = run_in(namespace, mixed_runs(4), None)
    release = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    assert report["method"] == ("per-send" if release >= (6, 13) else "per-socket")
    assert report["clocks"] == ["kernel"] * PROBES


def test_sends_whose_stamp_never_comes_expire(namespace: str) -> None:
    report = run_in(namespace, NO_STAMPS, "per-socket")
    assert report["answered"] == PROBES
    assert report["clocks"] == ["user"]  # said, never passed off as kernel time
    assert report["waiting_after_run"] > 0
    assert report["waiting_at_end"] <= 1  # only the last probe's own send
    assert report["expired"] >= PROBES
