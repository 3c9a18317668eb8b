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
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from prober.lab import LabError, Topology, is_lab_address, route_check
from prober.lab.capture import CaptureStats, tcpdump
from prober.lab.commands import command_env

TARGET_PORT = 80
CAPTURE_LINGER_S = 0.3  # after the tool exits, before SIGINT: the last answers still arrive
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


def capture(
    device: str,
    path: Path,
    *,
    namespace: str | None = None,
    immediate: bool = True,
    port: int = TARGET_PORT,
) -> AbstractContextManager[CaptureStats]:
    """tcpdump on `device` (in `namespace`) into `path`, nanosecond stamps, for the block;
    stopped CAPTURE_LINGER_S after it (see prober.lab.capture.tcpdump).

    `immediate=False` drops --immediate-mode and -U: libpcap then uses TPACKET_V3 blocks
    and the kernel no longer wakes tcpdump for every packet.
    """
    return tcpdump(device, path, f"tcp port {port}", namespace=namespace, immediate=immediate,
                   linger_s=CAPTURE_LINGER_S)


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
