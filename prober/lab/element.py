"""A delay and loss element: a transparent layer-2 forwarder between two links of a namespace.

The kernel has neither netem nor nftables `queue`, so this process stands in for them:

    python -m prober.lab.element --left IF --right IF [--delay S] [--jitter S] [--loss P]
        [--seed N] [--max-seconds S] [--tag TEXT] [--spin-margin S] [--queue-limit N]
        [--keep-awake] [--drop-synack-retransmissions N]

Every frame received on one interface is sent unchanged on the other at its kernel receive
timestamp + delay (± jitter, uniform), or dropped with probability `loss`. Drops come from one
seeded `random.Random` per direction, so the same frame sequence gives the same drops. Frames
never overtake each other within a direction. `--drop-synack-retransmissions N` drops the
first N retransmissions of every SYN/ACK (a SYN/ACK is its 4-tuple and sequence number: the
first copy passes, the next N are dropped, later ones pass), as a path that lost them would.
Prints ``ready`` once both interfaces are bound; on SIGTERM/SIGINT or --max-seconds prints one
JSON line of counters and exits.

In a lab (the element namespace sits between two end hosts on one subnet):

    with Topology.create() as topology:
        a, b = topology.add_namespace("a"), topology.add_namespace("b")
        link = add_element_link(topology, a, b, number=0, delay=0.020, loss=0.01, seed=1)
        ...                                   # a <-> b through the element
        counters = link.element.stop()        # or let teardown stop it

Timing: asyncio/uvloop timers are millisecond-granular, so one thread sleeps in select()
(microsecond timeouts) until `spin_margin` before the next frame is due, then spins on
CLOCK_REALTIME (the clock of the kernel's timestamps) and sends. One thread serves both
directions: two Python threads would hand the GIL to each other only every switch interval
(5 ms), so one direction's spin would make the other's sends late. SCHED_FIFO (when granted)
keeps ordinary tasks from delaying the wakeup. On a VM, a vCPU with nothing to run halts, and
resuming it for our timer can take the host milliseconds; --keep-awake pins the element and
keeps its CPU busy with a SCHED_IDLE spinner, at the cost of that CPU's idle time.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import gc
import json
import math
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import netns
from .errors import LabError
from .state import Process
from .topology import LinkEnd, StartedProcess, Topology

# --- Linux constants the socket module lacks (asm-generic values: x86, arm, riscv) -------------
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
ETH_P_ALL = 0x0003
SIOCGIFADDR = 0x8915
ETH_HEADER_BYTES = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_TCP = 6
TCP_SYN_ACK = 0x12  # the SYN and ACK bits of the TCP flags byte
TCP_FLAG_BITS = 0x3F  # FIN SYN RST PSH ACK URG (ECE/CWR ignored)
SYNACK_MEMORY = 65_536  # SYN/ACKs remembered per direction for the drop rule (oldest forgotten)

_TIMESPEC = struct.Struct("qq")
_PACKET_MREQ = struct.Struct("iHH8s")
_TPACKET_STATS = struct.Struct("II")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)

FRAME_BUFFER_BYTES = 65536  # beyond any veth MTU; larger frames are counted as truncated
RECEIVE_BUFFER_BYTES = 8 << 20  # 8 MiB: seconds of backlog at lab rates while we spin
DEFAULT_QUEUE_LIMIT = 100_000  # frames per direction waiting for their due time
DEFAULT_SPIN_MARGIN_S = 0.0005  # select() wakes this long before a due time, then we spin
RECEIVE_BATCH = 64  # frames taken from one socket per turn, so sends are not held up
IDLE_WAIT_S = 1.0  # longest select() when nothing is queued (signals wake it anyway)
LATE_THRESHOLD_NS = 100_000  # a send this far past its due time counts as late
REALTIME_PRIORITY = 10  # SCHED_FIFO, below the kernel's irq threads (50)
NS_PER_S = 1_000_000_000

ELEMENT_READY_TIMEOUT_S = 5.0
ELEMENT_MAX_SECONDS = 3600.0  # an element orphaned by a killed builder still exits eventually
ELEMENT_STOP_TIMEOUT_S = 5.0
_KILL_WAIT_S = 2.0
# The lab starts `main` with -c rather than -m: `prober.lab` imports this module, and runpy
# would then execute it a second time as __main__ (with a RuntimeWarning in the log).
_LAUNCHER = "import sys; from prober.lab.element import main; sys.exit(main())"

# The element's own kernel must stay silent: no IPv6 on its links (so no link-local address,
# MLD or ND), set on `default` before the links exist and per link after.
ELEMENT_NAMESPACE_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": 1,
    "net.ipv6.conf.default.disable_ipv6": 1,
}

# End hosts send MLD reports for a few seconds after link-up. Through the element they would
# consume loss draws, so two runs with one seed would drop different frames; nothing in the lab
# needs them (neighbours are static and nobody queries), so end-host namespaces drop them.
QUIET_END_HOST_RULESET = """\
table inet prober_element_quiet {
    chain output {
        type filter hook output priority filter; policy accept;
        icmpv6 type { mld-listener-report, mld2-listener-report, mld-listener-done } drop
    }
}
"""


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ElementSettings:
    """What the element does to frames; validated on construction."""

    delay_s: float = 0.0
    jitter_s: float = 0.0  # each frame's delay is uniform in delay ± jitter, never below 0
    loss: float = 0.0  # probability of dropping a frame
    seed: int = 0
    spin_margin_s: float = DEFAULT_SPIN_MARGIN_S
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    max_seconds: float | None = None
    keep_awake: bool = False  # see `keep_cpu_awake`
    drop_synack_retransmissions: int = 0  # drop copies 2 .. N+1 of each SYN/ACK

    def __post_init__(self) -> None:
        problems = []
        for name in ("delay_s", "jitter_s", "spin_margin_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 3600):
                problems.append(f"{name} {value} outside 0..3600 s")
        if not (math.isfinite(self.loss) and 0 <= self.loss <= 1):
            problems.append(f"loss {self.loss} outside 0..1")
        if self.queue_limit < 1:
            problems.append(f"queue_limit {self.queue_limit} below 1")
        if not 0 <= self.drop_synack_retransmissions <= 255:
            problems.append(
                f"drop_synack_retransmissions {self.drop_synack_retransmissions} outside 0..255"
            )
        if self.max_seconds is not None and not (
            math.isfinite(self.max_seconds) and self.max_seconds > 0
        ):
            problems.append(f"max_seconds {self.max_seconds} not positive")
        if problems:
            raise ValueError("; ".join(problems))

    def arguments(self) -> list[str]:
        """The command-line options that reproduce these settings."""
        arguments = ["--delay", repr(self.delay_s), "--jitter", repr(self.jitter_s),
                     "--loss", repr(self.loss), "--seed", str(self.seed),
                     "--spin-margin", repr(self.spin_margin_s),
                     "--queue-limit", str(self.queue_limit)]
        if self.max_seconds is not None:
            arguments += ["--max-seconds", repr(self.max_seconds)]
        if self.keep_awake:
            arguments.append("--keep-awake")
        if self.drop_synack_retransmissions:
            arguments += ["--drop-synack-retransmissions", str(self.drop_synack_retransmissions)]
        return arguments


# --- the forwarder (runs inside the element namespace) ----------------------------------------


def open_port(interface: str) -> socket.socket:
    """A raw packet socket that receives every frame arriving on `interface` (not the ones it
    sends), with kernel receive timestamps, and sends whole frames out of it."""
    # Protocol 0 until bound: a socket created with ETH_P_ALL would queue frames from every
    # interface in the namespace until bind() narrows it.
    port = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        port.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        port.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:  # FORCE: beyond net.core.rmem_max, which root may do
            port.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
        except PermissionError:
            port.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        port.bind((interface, ETH_P_ALL))
        # Promiscuous: the frames pass between the end hosts' MACs, not to this interface's.
        membership = _PACKET_MREQ.pack(socket.if_nametoindex(interface), PACKET_MR_PROMISC, 0,
                                       b"")
        port.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, membership)
    except BaseException:
        port.close()
        raise
    return port


def interface_addresses(interface: str) -> list[str]:
    """IP addresses on `interface` (IPv4: the primary one only), which would make the element's
    kernel answer ARP or ND itself instead of staying transparent."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode())
        try:
            answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            found.append(socket.inet_ntoa(answer[20:24]))  # ifr_addr's sin_addr
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except FileNotFoundError:  # IPv6 disabled in the whole kernel
        lines = []
    for line in lines:
        columns = line.split()  # address, ifindex, prefix length, scope, flags, name
        if len(columns) == 6 and columns[5] == interface:
            found.append(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(columns[0])))
    return found


def kernel_statistics(port: socket.socket) -> dict[str, int]:
    """Frames the kernel queued to, and dropped before, `port` (reading resets them)."""
    packets, drops = _TPACKET_STATS.unpack(
        port.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
    )
    return {"packets": packets, "drops": drops}


class Direction:
    """One way through the element: frames from `source`, after their delay, out `target`."""

    __slots__ = (
        "delay_ns", "drop_synack_retransmissions", "dropped_by_loss", "dropped_by_overflow",
        "dropped_synack_retransmissions", "forwarded", "jitter_ns", "jitter_random",
        "last_due_ns", "late", "loss", "loss_random", "max_late_ns", "name", "queue",
        "queue_limit", "received", "send_errors", "source", "synack_copies", "target",
        "truncated",
    )

    def __init__(
        self, name: str, source: socket.socket, target: socket.socket, settings: ElementSettings
    ) -> None:
        self.name = name
        self.source = source
        self.target = target
        self.delay_ns = round(settings.delay_s * NS_PER_S)
        self.jitter_ns = round(settings.jitter_s * NS_PER_S)
        self.loss = settings.loss
        self.queue_limit = settings.queue_limit
        # Separate streams: the drops of a frame sequence do not depend on the jitter setting.
        # String seeds hash with SHA-512, independent of PYTHONHASHSEED.
        self.loss_random = random.Random(f"{settings.seed}/{name}/loss")
        self.jitter_random = random.Random(f"{settings.seed}/{name}/jitter")
        self.queue: deque[tuple[int, bytes]] = deque()
        self.last_due_ns = 0
        self.received = 0
        self.forwarded = 0
        self.dropped_by_loss = 0
        self.dropped_by_overflow = 0
        self.truncated = 0
        self.send_errors = 0
        self.late = 0
        self.max_late_ns = 0
        self.drop_synack_retransmissions = settings.drop_synack_retransmissions
        self.synack_copies: dict[bytes, int] = {}  # SYN/ACK key -> copies seen
        self.dropped_synack_retransmissions = 0

    def is_dropped_synack_copy(self, frame: bytes) -> bool:
        """Whether `frame` is one of the first N retransmissions of a SYN/ACK seen before."""
        key = synack_key(frame)
        if key is None:
            return False
        copies = self.synack_copies.pop(key, 0) + 1
        self.synack_copies[key] = copies  # re-inserted: the dict's order is recency
        if len(self.synack_copies) > SYNACK_MEMORY:
            del self.synack_copies[next(iter(self.synack_copies))]
        if 1 < copies <= 1 + self.drop_synack_retransmissions:
            self.dropped_synack_retransmissions += 1
            return True
        return False

    def receive(self) -> bool:
        """Take one waiting frame and queue or drop it; False when none was waiting."""
        try:
            frame, ancillary, flags, address = self.source.recvmsg(
                FRAME_BUFFER_BYTES, _ANCILLARY_BYTES, socket.MSG_DONTWAIT
            )
        except (BlockingIOError, InterruptedError):
            return False
        if address[2] == socket.PACKET_OUTGOING:
            return True  # PACKET_IGNORE_OUTGOING keeps these out; never forward one back
        self.received += 1
        received_ns = 0
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                received_ns = seconds * NS_PER_S + nanoseconds
        if not received_ns:
            received_ns = time.time_ns()  # not expected: the option is set before bind
        # Drawn for every frame, before anything else can discard it: frame k of a sequence
        # meets draw k, whatever happened to the frames before it.
        if self.loss and self.loss_random.random() < self.loss:
            self.dropped_by_loss += 1
            return True
        if flags & socket.MSG_TRUNC:
            self.truncated += 1
            return True
        if self.drop_synack_retransmissions and self.is_dropped_synack_copy(frame):
            return True
        if len(self.queue) >= self.queue_limit:
            self.dropped_by_overflow += 1
            return True
        due_ns = received_ns + self.delay_ns
        if self.jitter_ns:
            due_ns = max(received_ns,
                         due_ns + round(self.jitter_random.uniform(-1, 1) * self.jitter_ns))
        if due_ns < self.last_due_ns:
            due_ns = self.last_due_ns  # never overtake the frame before
        self.last_due_ns = due_ns
        self.queue.append((due_ns, frame))
        return True

    def send_head(self) -> None:
        """Send the first queued frame now (the caller waited for its due time)."""
        due_ns, frame = self.queue.popleft()
        try:
            self.target.send(frame)
        except OSError:
            self.send_errors += 1  # e.g. the other end went down: the frame is lost
            return
        self.forwarded += 1
        late_ns = time.time_ns() - due_ns
        if late_ns > LATE_THRESHOLD_NS:
            self.late += 1
        if late_ns > self.max_late_ns:
            self.max_late_ns = late_ns

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "forwarded": self.forwarded,
            "dropped_by_loss": self.dropped_by_loss,
            "dropped_by_overflow": self.dropped_by_overflow,
            "truncated": self.truncated,
            "send_errors": self.send_errors,
            "pending_at_exit": len(self.queue),
            "late": self.late,
            "max_late_ns": self.max_late_ns,
            "dropped_synack_retransmissions": self.dropped_synack_retransmissions,
        }


def synack_key(frame: bytes) -> bytes | None:
    """A SYN/ACK's identity in an Ethernet frame: addresses, ports and sequence number (the
    bytes as they are); None for anything else, IPv6 extension headers included."""
    if len(frame) < ETH_HEADER_BYTES + 20:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    ip = ETH_HEADER_BYTES
    if ethertype == ETHERTYPE_IPV4:
        if frame[ip + 9] != IPPROTO_TCP or int.from_bytes(frame[ip + 6:ip + 8], "big") & 0x1FFF:
            return None  # not TCP, or a fragment after the first
        addresses = frame[ip + 12:ip + 20]
        tcp = ip + (frame[ip] & 0x0F) * 4
    elif ethertype == ETHERTYPE_IPV6:
        if len(frame) < ip + 40 or frame[ip + 6] != IPPROTO_TCP:
            return None
        addresses = frame[ip + 8:ip + 40]
        tcp = ip + 40
    else:
        return None
    if len(frame) < tcp + 14 or frame[tcp + 13] & TCP_FLAG_BITS != TCP_SYN_ACK:
        return None
    return addresses + frame[tcp:tcp + 8]  # ports and sequence number


class Forwarder:
    """Both directions between two bound ports, served by one loop."""

    def __init__(
        self, left: socket.socket, right: socket.socket, settings: ElementSettings
    ) -> None:
        self.left = left
        self.right = right
        self.settings = settings
        self.left_to_right = Direction("left_to_right", left, right, settings)
        self.right_to_left = Direction("right_to_left", right, left, settings)
        self.stop_requested = False

    def run(self, wake: socket.socket) -> None:
        """Forward until `stop_requested` (set by a signal handler; a byte on `wake` cuts
        select() short) or `max_seconds`."""
        spin_margin_ns = round(self.settings.spin_margin_s * NS_PER_S)
        max_seconds = self.settings.max_seconds
        deadline_ns = (None if max_seconds is None
                       else time.monotonic_ns() + round(max_seconds * NS_PER_S))
        first, second = self.left_to_right, self.right_to_left
        readers = [wake, self.left, self.right]
        time_ns = time.time_ns
        while not self.stop_requested:
            if deadline_ns is not None and time.monotonic_ns() >= deadline_ns:
                break
            # 1. Take what has arrived, but stop as soon as a send is within the spin margin:
            # arrivals carry kernel timestamps, so reading them late costs nothing.
            try:
                _take_arrivals(first, second, spin_margin_ns)
            except OSError as exc:  # e.g. ENETDOWN: an interface was deleted under us
                print(f"prober.lab.element: stopping: {exc}", file=sys.stderr, flush=True)
                break
            # 2. Send the next frame if it is due within the margin: spin to the nanosecond.
            head = _earliest(first, second)
            if head is not None:
                due_ns = head.queue[0][0]
                remaining_ns = due_ns - time_ns()
                if remaining_ns <= spin_margin_ns:
                    while time_ns() < due_ns:
                        pass
                    head.send_head()
                    continue
                timeout_s = (remaining_ns - spin_margin_ns) / NS_PER_S
            else:
                timeout_s = IDLE_WAIT_S
            # 3. Sleep until a frame arrives, the next spin window opens, or a signal.
            if deadline_ns is not None:
                timeout_s = min(timeout_s,
                                max(0.0, (deadline_ns - time.monotonic_ns()) / NS_PER_S))
            readable = select.select(readers, [], [], min(timeout_s, IDLE_WAIT_S))[0]
            if wake in readable:
                _drain(wake)

    def counters(self, tag: str, scheduler: str, awake_cpu: int | None) -> dict[str, Any]:
        return {
            "tag": tag,
            "scheduler": scheduler,
            "awake_cpu": awake_cpu,
            "cpu_seconds": round(time.process_time(), 3),  # ours, not the companion's
            "left_to_right": self.left_to_right.counters(),
            "right_to_left": self.right_to_left.counters(),
            "kernel": {"left": kernel_statistics(self.left),
                       "right": kernel_statistics(self.right)},
        }


def _earliest(first: Direction, second: Direction) -> Direction | None:
    if not first.queue:
        return second if second.queue else None
    if not second.queue:
        return first
    return first if first.queue[0][0] <= second.queue[0][0] else second


def _take_arrivals(first: Direction, second: Direction, spin_margin_ns: int) -> None:
    """Receive up to RECEIVE_BATCH frames per direction, until a send is within the margin."""
    time_ns = time.time_ns
    for direction in (first, second):
        for _ in range(RECEIVE_BATCH):
            if not direction.receive():
                break
            head = _earliest(first, second)
            if head is not None and head.queue[0][0] - time_ns() <= spin_margin_ns:
                return


def _drain(wake: socket.socket) -> None:
    try:
        while wake.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def make_realtime() -> str:
    """SCHED_FIFO if permitted (fewer preemptions, no timer slack); the policy in effect."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except OSError:  # EPERM without CAP_SYS_NICE, or an RT budget of 0 in our cgroup
        return "other"
    return "fifo"


def keep_cpu_awake(max_seconds: float | None) -> tuple[int, int]:
    """Pin this process to its highest allowed CPU and fork a SCHED_IDLE child that spins on
    the same CPU; returns (cpu, child PID).

    A vCPU with nothing to run halts, and the host may take milliseconds to resume it for our
    timer. With the spinner it never halts; any other task, ours included, preempts a
    SCHED_IDLE task at once. The child exits when we do (it polls its parent) or after
    `max_seconds`.
    """
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    parent = os.getpid()
    child = os.fork()
    if child == 0:  # the companion
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            deadline = time.monotonic() + (max_seconds or ELEMENT_MAX_SECONDS) + 1
            while os.getppid() == parent and time.monotonic() < deadline:
                for _ in range(100_000):  # ~2 ms between checks
                    pass
        finally:
            os._exit(0)
    return cpu, child


def parse_arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, ElementSettings]:
    parser = argparse.ArgumentParser(prog="python -m prober.lab.element", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--left", required=True, help="interface on one side")
    parser.add_argument("--right", required=True, help="interface on the other side")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to each frame")
    parser.add_argument("--jitter", type=float, default=0.0,
                        help="seconds; each delay is uniform in delay ± jitter (never < 0)")
    parser.add_argument("--loss", type=float, default=0.0, help="drop probability, 0..1")
    parser.add_argument("--seed", type=int, default=0, help="seeds the loss and jitter draws")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="exit after this long even if nobody stops the element")
    parser.add_argument("--tag", default="",
                        help="free text for the command line, so a lab can recognise it")
    parser.add_argument("--spin-margin", type=float, default=DEFAULT_SPIN_MARGIN_S,
                        help="seconds before a due time to stop sleeping and spin")
    parser.add_argument("--queue-limit", type=int, default=DEFAULT_QUEUE_LIMIT,
                        help="frames waiting per direction; more are dropped and counted")
    parser.add_argument("--drop-synack-retransmissions", type=int, default=0, metavar="N",
                        help="drop the first N retransmissions of every SYN/ACK (same "
                             "4-tuple and seq as a copy seen before)")
    parser.add_argument("--keep-awake", action="store_true",
                        help="pin to one CPU and keep it from idling (a SCHED_IDLE spinner): "
                             "on VMs, waking a halted vCPU can take milliseconds")
    arguments = parser.parse_args(argv)
    if arguments.left == arguments.right:
        parser.error("--left and --right must be different interfaces")
    try:
        settings = ElementSettings(
            delay_s=arguments.delay, jitter_s=arguments.jitter, loss=arguments.loss,
            seed=arguments.seed, spin_margin_s=arguments.spin_margin,
            queue_limit=arguments.queue_limit, max_seconds=arguments.max_seconds,
            keep_awake=arguments.keep_awake,
            drop_synack_retransmissions=arguments.drop_synack_retransmissions,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return arguments, settings


def main(argv: Sequence[str] | None = None) -> int:
    arguments, settings = parse_arguments(argv)
    # Before any socket exists, so the companion holds none of them.
    awake_cpu: int | None = None
    companion: int | None = None
    if settings.keep_awake:
        awake_cpu, companion = keep_cpu_awake(settings.max_seconds)
    try:
        return _serve(arguments, settings, awake_cpu)
    finally:
        if companion is not None:
            os.kill(companion, signal.SIGKILL)  # our own child, by PID
            os.waitpid(companion, 0)


def _serve(
    arguments: argparse.Namespace, settings: ElementSettings, awake_cpu: int | None
) -> int:
    for interface in (arguments.left, arguments.right):
        try:
            addresses = interface_addresses(interface)
        except OSError as exc:
            print(f"prober.lab.element: {interface}: {exc}", file=sys.stderr)
            return 1
        if addresses:
            print(f"prober.lab.element: {interface} has addresses {', '.join(addresses)}; "
                  "the element's kernel would answer for them: remove them", file=sys.stderr)
            return 1
    ports: list[socket.socket] = []
    try:
        for interface in (arguments.left, arguments.right):
            ports.append(open_port(interface))
    except OSError as exc:
        print(f"prober.lab.element: cannot open {interface}: {exc}", file=sys.stderr)
        for port in ports:
            port.close()
        return 1
    left, right = ports
    forwarder = Forwarder(left, right, settings)
    wake_reader, wake_writer = socket.socketpair()
    wake_reader.setblocking(False)
    wake_writer.setblocking(False)
    signal.set_wakeup_fd(wake_writer.fileno())

    def request_stop(signum: int, frame: object) -> None:
        forwarder.stop_requested = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    try:
        scheduler = make_realtime()
        # Everything allocated so far is permanent; the loop makes no reference cycles, so
        # with collection off no collector pause can land on a due time.
        gc.freeze()
        gc.disable()
        print("ready", flush=True)
        forwarder.run(wake_reader)
        counters = forwarder.counters(arguments.tag, scheduler, awake_cpu)
        # A closed stdout means whoever started us stopped listening: nobody to report to.
        with contextlib.suppress(BrokenPipeError):
            print(json.dumps(counters, sort_keys=True), flush=True)
    finally:
        signal.set_wakeup_fd(-1)
        for sock in (left, right, wake_reader, wake_writer):
            sock.close()
    return 0


# --- the lab side: wiring and running the element ---------------------------------------------


@dataclass(frozen=True)
class DirectionCounters:
    received: int
    forwarded: int
    dropped_by_loss: int
    dropped_by_overflow: int
    truncated: int
    send_errors: int
    pending_at_exit: int
    late: int  # sent more than LATE_THRESHOLD_NS after the due time
    max_late_ns: int
    dropped_synack_retransmissions: int  # by --drop-synack-retransmissions

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DirectionCounters:
        return cls(**{name: int(data[name]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ElementCounters:
    """What the element printed when it exited."""

    tag: str
    scheduler: str  # "fifo" or "other": whether SCHED_FIFO was granted
    awake_cpu: int | None  # the CPU kept awake (--keep-awake), else None
    cpu_seconds: float  # the element's CPU time, start-up included
    left_to_right: DirectionCounters
    right_to_left: DirectionCounters
    kernel_left: Mapping[str, int]  # PACKET_STATISTICS: packets, drops (receive buffer full)
    kernel_right: Mapping[str, int]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ElementCounters:
        return cls(
            tag=str(data["tag"]),
            scheduler=str(data["scheduler"]),
            awake_cpu=None if data.get("awake_cpu") is None else int(data["awake_cpu"]),
            cpu_seconds=float(data["cpu_seconds"]),
            left_to_right=DirectionCounters.from_json(data["left_to_right"]),
            right_to_left=DirectionCounters.from_json(data["right_to_left"]),
            kernel_left={k: int(v) for k, v in data["kernel"]["left"].items()},
            kernel_right={k: int(v) for k, v in data["kernel"]["right"].items()},
        )

    @property
    def kernel_drops(self) -> int:
        return self.kernel_left["drops"] + self.kernel_right["drops"]


@dataclass
class ElementProcess:
    """A running element; `stop()` ends it and returns its counters."""

    process: StartedProcess
    settings: ElementSettings
    left_device: str
    right_device: str
    counters: ElementCounters | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def namespace(self) -> str:
        return self.process.namespace

    def stop(self, timeout_s: float = ELEMENT_STOP_TIMEOUT_S) -> ElementCounters:
        """SIGTERM (our child, by PID), wait, and parse the counters it printed."""
        if self.counters is not None:
            return self.counters
        popen = self.process.popen
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=_KILL_WAIT_S)
            raise LabError(f"element {self.pid} ignored SIGTERM for {timeout_s} s; killed"
                           f"{self.process.log_tail()}") from None
        text = self.process.log_text()
        for line in reversed(text.splitlines()):
            if line.startswith("{"):
                self.counters = ElementCounters.from_json(json.loads(line))
                return self.counters
        raise LabError(f"element {self.pid} exited with status {popen.returncode} without "
                       f"counters{self.process.log_tail()}")


def start_element(
    topology: Topology,
    namespace: str,
    left_device: str,
    right_device: str,
    settings: ElementSettings,
    *,
    ready_timeout_s: float = ELEMENT_READY_TIMEOUT_S,
) -> ElementProcess:
    """Run the element between two links of `namespace` (which must carry no addresses).

    Without `settings.max_seconds` it gets ELEMENT_MAX_SECONDS, so a builder killed before
    teardown does not leave it forwarding forever.
    """
    if settings.max_seconds is None:
        settings = replace(settings, max_seconds=ELEMENT_MAX_SECONDS)
    ordinal = sum(isinstance(r, Process) for r in topology.resources)
    name = f"element{ordinal}"
    argv = [sys.executable, "-c", _LAUNCHER, "--left", left_device, "--right", right_device,
            *settings.arguments(), "--tag", f"{topology.prefix}-{name}"]
    process = topology.start_process(namespace, argv, name=name,
                                     ready_timeout_s=ready_timeout_s)
    return ElementProcess(process=process, settings=settings, left_device=left_device,
                          right_device=right_device)


@dataclass(frozen=True)
class ElementLink:
    """Two end hosts on one subnet, with the element between them.

        left host ==veth== [element_left  element  element_right] ==veth== right host
    """

    number: int  # the link of the address plan both end hosts are on
    left: LinkEnd
    right: LinkEnd
    element_namespace: str
    element_left: str  # the element's interface facing the left host
    element_right: str
    element: ElementProcess

    def restart(self, topology: Topology, settings: ElementSettings) -> ElementLink:
        """Stop the element (if running) and start a fresh one, e.g. with other settings or
        to begin the same seeded drop sequence again."""
        self.element.stop()
        element = start_element(topology, self.element_namespace, self.element_left,
                                self.element_right, settings)
        return ElementLink(self.number, self.left, self.right, self.element_namespace,
                           self.element_left, self.element_right, element)


def add_element_link(
    topology: Topology,
    left_namespace: str | None,
    right_namespace: str | None,
    *,
    number: int,
    delay: float = 0.0,
    jitter: float = 0.0,
    loss: float = 0.0,
    seed: int = 0,
    element_role: str = "element",
    left_host: int = 1,
    right_host: int = 2,
    label: str | None = None,
    quiet_end_hosts: bool = True,
    spin_margin: float = DEFAULT_SPIN_MARGIN_S,
    queue_limit: int = DEFAULT_QUEUE_LIMIT,
    max_seconds: float = ELEMENT_MAX_SECONDS,
    keep_awake: bool = False,
    drop_synack_retransmissions: int = 0,
) -> ElementLink:
    """Put the two end hosts on link `number` of the address plan, with the element (in a new
    namespace ``<prefix>-<element_role>``) between them, and start it.

    Four interfaces ``<prefix>-<label>{a,l,r,b}`` (label defaults to ``el<number>``): a in the
    left host, l and r in the element namespace, b in the right host. The end hosts get
    addresses `left_host` and `right_host` of the link (v4 and v6, one subnet) and each
    other's MACs as static neighbours; the element's interfaces get no address and no IPv6.
    `quiet_end_hosts` drops the end hosts' MLD reports (see QUIET_END_HOST_RULESET; root
    namespace ends are left alone). `keep_awake` trades a CPU's idle time for fewer
    millisecond stalls on VMs (see the module's docstring). `drop_synack_retransmissions`
    drops the first N retransmissions of every SYN/ACK. Everything is recorded in the
    topology; the element is stopped at teardown or by `link.element.stop()`.
    """
    settings = ElementSettings(delay_s=delay, jitter_s=jitter, loss=loss, seed=seed,
                               spin_margin_s=spin_margin, queue_limit=queue_limit,
                               max_seconds=max_seconds, keep_awake=keep_awake,
                               drop_synack_retransmissions=drop_synack_retransmissions)
    if left_namespace == right_namespace:
        raise LabError("the element's two end hosts must be in different namespaces")
    plan = topology.addresses.link(number)
    label = label if label is not None else f"el{number}"
    element_namespace = topology.add_namespace(element_role, ELEMENT_NAMESPACE_SYSCTLS)
    left_device, element_left, element_right, right_device = (
        topology.device_name(f"{label}{side}") for side in "alrb"
    )
    left_mac, _ = topology.add_bare_veth(left_namespace, left_device, element_namespace,
                                         element_left)
    _, right_mac = topology.add_bare_veth(element_namespace, element_right, right_namespace,
                                          right_device)
    left_end = LinkEnd(left_namespace, left_device, left_mac, plan.host_v4(left_host),
                       plan.host_v6(left_host))
    right_end = LinkEnd(right_namespace, right_device, right_mac, plan.host_v4(right_host),
                        plan.host_v6(right_host))

    topology.set_sysctls(element_namespace, {
        f"net.ipv6.conf.{device}.disable_ipv6": 1 for device in (element_left, element_right)
    })
    for end in (left_end, right_end):
        if end.namespace is None:
            # Root's `default` settings are not ours to change; set this link's own.
            topology.set_sysctls(None, netns.device_ipv6_sysctls(end.device))
        elif quiet_end_hosts:
            topology.apply_nftables(end.namespace, QUIET_END_HOST_RULESET)
    for namespace, device in ((left_namespace, left_device), (element_namespace, element_left),
                              (element_namespace, element_right),
                              (right_namespace, right_device)):
        netns.disable_offloads(namespace, device)
    for end in (left_end, right_end):
        topology.add_address(end.namespace, end.device, end.v4)
        topology.add_address(end.namespace, end.device, end.v6)
    for namespace, device in ((element_namespace, element_left),
                              (element_namespace, element_right),
                              (left_namespace, left_device), (right_namespace, right_device)):
        netns.set_link_up(namespace, device)
    # After "up": taking a device down flushes its neighbour entries, permanent ones too.
    for end, peer in ((left_end, right_end), (right_end, left_end)):
        topology.add_neighbour(end.namespace, end.device, peer.v4.ip, peer.mac)
        topology.add_neighbour(end.namespace, end.device, peer.v6.ip, peer.mac)
    element = start_element(topology, element_namespace, element_left, element_right, settings)
    return ElementLink(number=number, left=left_end, right=right_end,
                       element_namespace=element_namespace, element_left=element_left,
                       element_right=element_right, element=element)


if __name__ == "__main__":
    sys.exit(main())
