"""prober's source ports: one block reserved once, handed out in O(1), and the capture filter.

A probe's source port must be one that no local socket can be given while the probe runs, or a
connection of this host could share its 4-tuple (and its answers). prober binds a TCP socket
(never listening, never connected) to each of its ports: the kernel then gives that port to no
other bind and skips it when it picks a port for connect(), while a SYN/ACK arriving for it
finds no socket and the kernel answers RST, as a half-open scan wants. One dual-stack socket
(``[::]``, IPV6_V6ONLY off) holds a port for IPv4 and IPv6 alike.

Binding a socket per probe (what prober did first) costs a socket, a bind and a file descriptor
for each, and makes the capture filter follow every port in use. Instead the engine reserves a
block of ports from the kernel's ephemeral range (``ip_local_port_range``) once, starting at a
random offset and contiguous where it can be, skipping ports in use, and grows it in chunks on
demand up to ``MAX_PORTS``. The capture filter is that block (a few ranges; see sockets.py),
recomputed only when the block grows, so a busy host's own traffic on other ports is dropped in
the kernel. Taking and returning a port is a deque operation.

A conversation's port (halfopen, close) rests for ``CONVERSATION_REST_S`` when released: its
4-tuple may be in the peer's TIME-WAIT (60 s on Linux), where a new SYN could be answered with
the old connection's ACK. When every port of the block is held, ``acquire(share=True)`` hands
out a port again (round-robin), for probes that are told apart by their ISN rather than their
port (syn); conversations (halfopen, close) take their port exclusively and get
``PortsExhausted`` instead.

File descriptors: the engine raises RLIMIT_NOFILE's soft limit to the hard limit (always
allowed) and sizes the block to what is left, so the limit is never a traceback mid-run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import resource
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from prober.engine.sockets import MAX_FILTER_RANGES, PortRange
from prober.errors import PortsExhausted, SourcePortInUse

MAX_PORTS = 4096
CONVERSATION_REST_S = 120.0  # twice Linux's 60 s TIME-WAIT
CHUNK = 256
FD_MARGIN = 64  # descriptors left for everything else the process opens
DEFAULT_RANGE = (32768, 60999)  # Linux's default ip_local_port_range
_PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ip_local_port_range (inclusive), or Linux's default if unreadable."""
    try:
        low, high = (int(field) for field in _PORT_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_RANGE
    return (low, high) if 1 <= low <= high <= 65535 else DEFAULT_RANGE


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit (allowed without privilege);
    return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def merge_ranges(ports: list[int], limit: int = MAX_FILTER_RANGES) -> list[PortRange]:
    """Sorted disjoint inclusive ranges covering ``ports``; past ``limit`` ranges the smallest
    gaps are closed (a few foreign ports pass the filter and are dropped in user space)."""
    if not ports:
        return []
    ordered = sorted(set(ports))
    ranges: list[list[int]] = [[ordered[0], ordered[0]]]
    for port in ordered[1:]:
        if port == ranges[-1][1] + 1:
            ranges[-1][1] = port
        else:
            ranges.append([port, port])
    while len(ranges) > limit:
        gaps = [(ranges[i + 1][0] - ranges[i][1], i) for i in range(len(ranges) - 1)]
        _, i = min(gaps)
        ranges[i][1] = ranges[i + 1][1]
        del ranges[i + 1]
    return [(low, high) for low, high in ranges]


class PortPool:
    """The engine's source ports (see the module docstring)."""

    def __init__(
        self,
        *,
        max_ports: int = MAX_PORTS,
        port_range: tuple[int, int] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._range = port_range or ephemeral_range()
        low, high = self._range
        self._next_candidate = (rng or random.SystemRandom()).randint(low, high)
        self._max_ports = max_ports
        self._sockets: dict[int, socket.socket] = {}  # every port we hold
        self._block: list[int] = []  # the block's ports, in the order reserved
        self._in_block: set[int] = set()
        self._free: deque[int] = deque()
        self._users: dict[int, int] = {}  # port -> probes holding it now
        self._share_next = 0
        self._exhausted = False  # the range or the descriptors ran out: stop trying to grow
        self._others_descriptors: int | None = None
        # Released with a rest: (monotonic time it ends, port), in release order. A port
        # resting is neither free nor shared.
        self._resting: deque[tuple[float, int]] = deque()
        self._resting_ports: set[int] = set()
        self._clock = clock or time.monotonic
        self.generation = 0  # bumped whenever the set of held ports changes

    # -- handing out ------------------------------------------------------------------------
    def acquire(self, *, share: bool = False) -> int:
        """A port of the block: a free one, else a new one, else (``share``) one in use.

        Raises:
            PortsExhausted: no port is free and none can be reserved (and not ``share``).
        """
        if self._resting:
            self._end_rests(self._clock())
        if not self._free:
            self._grow()
        if self._free:
            port = self._free.popleft()
            self._users[port] = 1
            return port
        shareable = len(self._block) - len(self._resting_ports)
        if share and shareable > 0:
            while True:
                port = self._block[self._share_next % len(self._block)]
                self._share_next += 1
                if port not in self._resting_ports:
                    break
            self._users[port] = self._users.get(port, 0) + 1
            return port
        raise PortsExhausted(self._exhausted_message())

    def reserve(self, port: int) -> int:
        """Hold ``port`` itself, exclusively (a user's --source-port).

        Raises:
            SourcePortInUse: another socket of this host, or another probe, holds it.
        """
        if port in self._sockets:
            if self._users.get(port, 0) > 0:
                raise SourcePortInUse(f"source port {port} is in use by another probe")
            with contextlib.suppress(ValueError):
                self._free.remove(port)  # O(block), only for a user-chosen port
            # A user may choose a resting port: the rest protects the pool's own choices.
            if port in self._resting_ports:
                self._resting_ports.discard(port)
                self._resting = deque(item for item in self._resting if item[1] != port)
            self._users[port] = 1
            return port
        sock = self._bind(port)
        if sock is None:
            raise SourcePortInUse(f"source port {port} is in use on this host")
        self._sockets[port] = sock
        self._users[port] = 1
        self.generation += 1
        return port

    def release(self, port: int, *, rest_s: float = 0.0) -> None:
        """A probe is done with ``port``. ``rest_s``: hand it out again only after that long
        (a conversation's 4-tuple may sit in the peer's TIME-WAIT, where a new SYN from it
        could be answered with the old connection's ACK instead of a SYN/ACK)."""
        users = self._users.get(port, 0) - 1
        if users > 0:
            self._users[port] = users
            return
        self._users.pop(port, None)
        if port in self._in_block:  # a block port goes back to the free list, kept bound
            if rest_s > 0:
                self._resting.append((self._clock() + rest_s, port))
                self._resting_ports.add(port)
            else:
                self._free.append(port)
        else:  # a user-chosen port outside the block is given back to the system
            sock = self._sockets.pop(port, None)
            if sock is not None:
                sock.close()
                self.generation += 1

    def ranges(self) -> list[PortRange]:
        """The ports held, as capture-filter ranges."""
        return merge_ranges(list(self._sockets))

    @property
    def size(self) -> int:
        return len(self._sockets)

    def in_use(self, port: int) -> int:
        return self._users.get(port, 0)

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._block.clear()
        self._in_block.clear()
        self._free.clear()
        self._resting.clear()
        self._resting_ports.clear()
        self._users.clear()

    # -- internals ------------------------------------------------------------------------
    def _end_rests(self, now: float) -> None:
        resting = self._resting
        while resting and resting[0][0] <= now:
            _, port = resting.popleft()
            self._resting_ports.discard(port)
            self._free.append(port)

    def _grow(self) -> None:
        if self._exhausted:
            return
        limit = min(self._max_ports, self._fd_budget() + len(self._sockets))
        wanted = min(CHUNK, limit - len(self._block))
        low, high = self._range
        span = high - low + 1
        tried = 0
        while wanted > 0 and tried < span:
            port = self._next_candidate
            self._next_candidate = low if port >= high else port + 1
            tried += 1
            if port in self._sockets:
                continue
            try:
                sock = self._bind(port)
            except PortsExhausted:
                break  # out of descriptors: the block stays as it is
            if sock is None:
                continue  # in use by someone else: skip it, the block gets a hole
            self._sockets[port] = sock
            self._block.append(port)
            self._in_block.add(port)
            self._free.append(port)
            wanted -= 1
        if wanted > 0 or len(self._block) >= limit:
            self._exhausted = True
        self.generation += 1

    def _fd_budget(self) -> int:
        """Descriptors the block may still take. Others' are counted once, at the first
        growth (listing /proc/self/fd costs ~15 µs per thousand open)."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self._max_ports
        if self._others_descriptors is None:
            self._others_descriptors = _open_descriptors() - len(self._sockets)
        return max(0, soft - self._others_descriptors - len(self._sockets) - FD_MARGIN)

    def _bind(self, port: int) -> socket.socket | None:
        """A socket bound to ``port`` for IPv4 and IPv6, or None if the port is taken.

        Raises:
            PortsExhausted: the process or the system is out of file descriptors.
        """
        for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._exhausted = True
                    raise PortsExhausted(self._exhausted_message()) from None
                continue  # no IPv6 in this kernel: IPv4 alone
            try:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind((address, port))
            except OSError:
                sock.close()
                return None
            return sock
        return None

    def _exhausted_message(self) -> str:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        low, high = self._range
        return (
            f"no free source port: prober holds {len(self._block)} ports of {low}-{high} "
            f"(ip_local_port_range), all in use, and can reserve no more "
            f"(open files limit {soft}; raise it with ulimit -n)"
        )
