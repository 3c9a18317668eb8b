"""The bench's lab: one target namespace, a tcpdump capture, and bounded tool runs.

    root ns   <prefix>-root ==veth, link 0== <prefix>-tgt   target ns
              .1 / ::1                           .2 / ::2     listener on port 80

The topology comes from `prober.lab.Topology.create()`: it claims a free index of the test
pool under the lab's state-directory lock (the one the integration tests use, so neither can
take the other's addresses), records every resource before creating it, names this process
as owner (a killed bench is swept by the next test session) and tears everything down when
the `with` block ends, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prober.lab import LabError, Topology, is_lab_address, route_check
from prober.lab.commands import command_env, in_namespace, tool

TARGET_PORT = 80
CAPTURE_READY_TIMEOUT_S = 10.0
CAPTURE_LINGER_S = 0.3  # after the tool exits, before SIGINT: the last answers still arrive
# Without --immediate-mode libpcap reads TPACKET_V3 blocks, which the kernel hands over when
# full or after tcpdump's 1 s timeout; SIGINT earlier loses the last, partly filled block.
BUFFERED_LINGER_S = 1.5
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Target:
    address: str  # the target's address, in the lab range
    local: str  # root's address on the link: the SYNs' source
    device: str  # root's end of the veth: the tools send over it, capture here by default
    namespace: str  # the target's namespace
    target_device: str  # its end of the veth (the other place a capture can sit)
    topology: Topology

    def check_route(self) -> str:
        """The safety net before anything is sent: a lab address, routed over our link only."""
        if not is_lab_address(self.address):
            raise LabError(f"{self.address} is not a lab address")
        device = route_check(self.address, devices=self.topology.root_devices)
        if device != self.device:
            raise LabError(f"{self.address} routed via {device}, not via {self.device}")
        return device


@contextlib.contextmanager
def lab_target() -> Iterator[Target]:
    with Topology.create() as topology:
        namespace = topology.add_namespace("target")
        link = topology.add_link(None, namespace, number=0, left_label="root",
                                 right_label="tgt")
        topology.start_server(namespace, [TARGET_PORT], family="both")
        yield Target(address=str(link.right.v4.ip), local=str(link.left.v4.ip),
                     device=link.left.device, namespace=namespace,
                     target_device=link.right.device, topology=topology)


@dataclass
class CaptureStats:
    argv: list[str] = field(default_factory=list)
    captured: int | None = None
    dropped: int | None = None
    stderr: str = ""


@contextlib.contextmanager
def capture(
    device: str,
    path: Path,
    *,
    namespace: str | None = None,
    immediate: bool = True,
    port: int = TARGET_PORT,
) -> Iterator[CaptureStats]:
    """tcpdump on `device` (in `namespace`) into `path`, nanosecond stamps, for the block.

    Ready once tcpdump says 'listening on'; stopped with SIGINT (by PID: `ip netns exec`
    execs tcpdump in place) CAPTURE_LINGER_S (buffered: BUFFERED_LINGER_S) after the block,
    then SIGKILL if it lingers.
    `immediate=False` drops --immediate-mode and -U: libpcap then uses TPACKET_V3 blocks
    and the kernel no longer wakes tcpdump for every packet.
    """
    stats = CaptureStats()
    argv = [tool("tcpdump"), "-i", device, "-n", "-w", str(path)]
    if immediate:
        argv += ["--immediate-mode", "-U"]
    argv += ["--time-stamp-precision=nano", f"tcp port {port}"]
    stats.argv = in_namespace(namespace, argv)
    process = subprocess.Popen(stats.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=command_env(),
                               start_new_session=True)
    assert process.stderr is not None
    received = b""
    try:
        received = _read_until(process, b"listening on", CAPTURE_READY_TIMEOUT_S)
        yield stats
        time.sleep(CAPTURE_LINGER_S if immediate else BUFFERED_LINGER_S)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
        try:
            rest = process.communicate(timeout=STOP_TIMEOUT_S)[1]
        except subprocess.TimeoutExpired:
            process.kill()
            rest = process.communicate(timeout=STOP_TIMEOUT_S)[1]
        stats.stderr = (received + (rest or b"")).decode(errors="replace")
    for name, pattern in (("captured", r"(\d+) packets? captured"),
                          ("dropped", r"(\d+) packets? dropped by kernel")):
        match = re.search(pattern, stats.stderr)
        if match:
            setattr(stats, name, int(match.group(1)))


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout_s: float) -> bytes:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout_s
    received = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while marker not in received and len(received) < 65536:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"tcpdump not listening after {timeout_s} s: {received!r}")
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                raise LabError(f"tcpdump exited with {process.wait(timeout=STOP_TIMEOUT_S)}: "
                               f"{received.decode(errors='replace').strip()}")
            received += chunk
    return received


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


def run_bounded(argv: list[str], timeout_s: float) -> Completed:
    """Run one tool to completion; on timeout or interruption kill it (by PID) and reap it."""
    started = time.monotonic()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=command_env(),
                               start_new_session=True)
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        process.kill()
        stdout, stderr = process.communicate(timeout=STOP_TIMEOUT_S)
    except BaseException:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
        raise
    return Completed(argv=argv, returncode=process.returncode,
                     stdout=stdout.decode(errors="replace"),
                     stderr=stderr.decode(errors="replace"),
                     seconds=time.monotonic() - started, timed_out=timed_out)
