"""The delay and loss element (prober.lab.element) delays by what it is told, never reorders,
drops the same frames for the same seed at the configured rate, and leaves nothing behind.

    ns a  ==veth==  [ el0l   element ns   el0r ]  ==veth==  ns b      (a and b: one subnet)

Timing is measured by tcpdump on the element's two interfaces, inside its namespace: the
in-capture stamp is the kernel receive timestamp the element schedules from.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from prober.lab import LabError, Topology, is_lab_address, route_check
from prober.lab.commands import command_env, find_tool, in_namespace
from prober.lab.element import ElementLink, ElementSettings, add_element_link
from prober.lab.state import process_start_time

pytestmark = pytest.mark.integration

DELAY_S = 0.020
DELAY_NS = round(DELAY_S * 1e9)
# Not a timing assertion: on a busy VM (2 vCPUs, a kernel without preemption) any process
# can stall for milliseconds now and then, so up to 5 % stragglers are allowed; early frames
# and reordering never are.
DELAY_SLACK_NS = 2_000_000
DELAY_COUNT = 200
STRAGGLERS_ALLOWED = DELAY_COUNT // 20
LOSS = 0.2
LOSS_COUNT = 1000
LOSS_SEED = 11
PORT = 9000
MAGIC = b"PDLT"
_PAYLOAD = struct.Struct("!4sI")  # magic, sequence number
_CAPTURE_TIMEOUT_S = 10.0
_CAPTURE_LINGER_S = 0.3
_STOP_TIMEOUT_S = 5.0

# Runs inside ns a: sends datagram k = 0..count-1 carrying MAGIC and k, paced by sleep().
_SENDER = """\
import socket, struct, sys, time
destination, port, count, rate, magic = sys.argv[1:6]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    start = time.monotonic()
    for k in range(int(count)):
        pause = start + k / float(rate) - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        sock.sendto(struct.pack("!4sI", magic.encode(), k), (destination, int(port)))
"""

# b has no listener: its kernel would answer each datagram with ICMP back through the element.
_SINK_RULESET = f"""\
table inet prober_test_sink {{
    chain input {{
        type filter hook input priority filter; policy accept;
        udp dport {PORT} drop
    }}
}}
"""


@dataclass
class ElementLab:
    topology: Topology
    link: ElementLink


@pytest.fixture(scope="module")
def element_lab() -> Iterator[ElementLab]:
    if find_tool("tcpdump") is None:
        pytest.skip("tcpdump not installed: the element's timing is measured from captures")
    with Topology.create() as topology:
        left = topology.add_namespace("a")
        right = topology.add_namespace("b")
        topology.apply_nftables(right, _SINK_RULESET)
        # keep_awake: on VMs a halted vCPU can wake milliseconds late (see the element).
        link = add_element_link(topology, left, right, number=0, delay=DELAY_S,
                                keep_awake=True)
        lab = ElementLab(topology, link)
        yield lab
        lab.link.element.stop()


# --- helpers ---------------------------------------------------------------------------------


def send_stream(link: ElementLink, count: int, rate: float) -> None:
    """`count` numbered datagrams from the left host to the right one, via the element."""
    destination = str(link.right.v4.ip)
    assert link.left.namespace is not None
    # The safety net before any packet leaves: a lab address, routed over our link only.
    assert is_lab_address(destination) and is_lab_address(link.left.v4.ip)
    assert route_check(destination, namespace=link.left.namespace,
                       devices=(link.left.device,)) == link.left.device
    argv = in_namespace(link.left.namespace, [sys.executable, "-c", _SENDER, destination,
                                              str(PORT), str(count), str(rate),
                                              MAGIC.decode()])
    completed = subprocess.run(argv, capture_output=True, text=True, env=command_env(),
                               timeout=count / rate + 10, check=False)
    assert completed.returncode == 0, completed.stderr


@contextlib.contextmanager
def capture(namespace: str, device: str, path: Path) -> Iterator[None]:
    """tcpdump (nanosecond stamps) on `device` for the block; SIGINT by PID afterwards."""
    tcpdump = find_tool("tcpdump")
    assert tcpdump is not None
    argv = in_namespace(namespace, [tcpdump, "-i", device, "-n", "-s", "128", "-w", str(path),
                                    "--immediate-mode", "-U", "--time-stamp-precision=nano",
                                    f"udp and dst port {PORT}"])
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=command_env(),
                               start_new_session=True)
    assert process.stderr is not None
    try:
        received = b""
        deadline = time.monotonic() + _CAPTURE_TIMEOUT_S
        while b"listening on" not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"tcpdump not ready after {_CAPTURE_TIMEOUT_S} s: {received!r}")
            if not select.select([process.stderr], [], [], remaining)[0]:
                continue
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                raise LabError(f"tcpdump exited: {received!r}")
            received += chunk
        yield
        time.sleep(_CAPTURE_LINGER_S)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
        try:
            process.communicate(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=_STOP_TIMEOUT_S)


def read_capture(path: Path) -> list[tuple[int, int]]:
    """(sequence number, capture time in ns) of our datagrams, in capture order (IPv4)."""
    data = path.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0xA1B23C4D  # pcap, nanosecond, little-endian
    frames = []
    offset = 24
    while offset + 16 <= len(data):
        seconds, nanoseconds, length, _ = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        udp = 14 + (frame[14] & 0x0F) * 4
        if len(frame) >= udp + 8 + _PAYLOAD.size:
            magic, sequence = _PAYLOAD.unpack_from(frame, udp + 8)
            if magic == MAGIC:
                frames.append((sequence, seconds * 1_000_000_000 + nanoseconds))
    return frames


def captured_stream(
    link: ElementLink, count: int, rate: float, directory: Path
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Send a stream and return what the element received and what it sent."""
    namespace = link.element_namespace
    in_path, out_path = directory / "in.pcap", directory / "out.pcap"
    with capture(namespace, link.element_left, in_path), \
            capture(namespace, link.element_right, out_path):
        send_stream(link, count, rate)
        time.sleep(link.element.settings.delay_s)
    return read_capture(in_path), read_capture(out_path)


def dropped_sequences(link: ElementLink, directory: Path) -> set[int]:
    frames_in, frames_out = captured_stream(link, LOSS_COUNT, 5000, directory)
    counters = link.element.stop()
    assert [sequence for sequence, _ in frames_in] == list(range(LOSS_COUNT))
    # Nothing but our stream went through, so the draws met the same frames both times.
    assert counters.left_to_right.received == LOSS_COUNT
    dropped = set(range(LOSS_COUNT)) - {sequence for sequence, _ in frames_out}
    assert counters.left_to_right.dropped_by_loss == len(dropped)
    return dropped


# --- tests -----------------------------------------------------------------------------------


def test_delay_is_added_and_order_kept(element_lab: ElementLab, tmp_path: Path) -> None:
    frames_in, frames_out = captured_stream(element_lab.link, DELAY_COUNT, 500, tmp_path)
    assert [sequence for sequence, _ in frames_in] == list(range(DELAY_COUNT))
    assert [sequence for sequence, _ in frames_out] == list(range(DELAY_COUNT))  # in order
    received = dict(frames_in)
    added = [sent - received[sequence] - DELAY_NS for sequence, sent in frames_out]
    assert min(added) >= 0, f"a frame left {-min(added)} ns before its delay was up"
    stragglers = sorted(extra for extra in added if extra > DELAY_SLACK_NS)
    assert len(stragglers) <= STRAGGLERS_ALLOWED, f"late by (ns): {stragglers}"
    assert sorted(added)[len(added) // 2] <= DELAY_SLACK_NS


def test_seeded_loss_is_repeatable_and_binomial(element_lab: ElementLab, tmp_path: Path) -> None:
    settings = ElementSettings(loss=LOSS, seed=LOSS_SEED, keep_awake=True)
    lab = element_lab
    drops = []
    for run in range(2):
        lab.link = lab.link.restart(lab.topology, settings)  # the draws start over
        directory = tmp_path / f"run{run}"
        directory.mkdir()
        drops.append(dropped_sequences(lab.link, directory))
    assert drops[0] == drops[1]
    mean = LOSS_COUNT * LOSS
    sigma = math.sqrt(LOSS_COUNT * LOSS * (1 - LOSS))
    assert abs(len(drops[0]) - mean) <= 4 * sigma, f"{len(drops[0])} dropped, expected ~{mean}"
    # Another seed drops other frames (the chance of equal sets is negligible).
    lab.link = lab.link.restart(lab.topology, ElementSettings(loss=LOSS, seed=LOSS_SEED + 1,
                                                               keep_awake=True))
    directory = tmp_path / "other-seed"
    directory.mkdir()
    assert dropped_sequences(lab.link, directory) != drops[0]


def test_element_is_gone_after_teardown() -> None:
    with Topology.create() as topology:
        left = topology.add_namespace("a")
        right = topology.add_namespace("b")
        link = add_element_link(topology, left, right, number=0, delay=DELAY_S,
                                keep_awake=True)
        pid = link.element.pid
        children = [int(child) for child in
                    Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        processes = {process: process_start_time(process) for process in [pid, *children]}
        assert len(processes) == 2  # the element and its keep-awake companion
        assert all(start is not None for start in processes.values())
        namespaces = topology.namespaces
        state_path = topology.state_path
    for process, start in processes.items():
        assert process_start_time(process) != start, f"process {process} survived teardown"
    assert not any(Path("/run/netns", name).exists() for name in namespaces)
    assert not state_path.exists()
