"""The engine: one per event loop, shared by every Prober in the process.

It owns the raw send sockets and the capture socket, one timer, and the routing table from a
reply's 4-tuple to the probe that waits for it (aioquic's asyncio/protocol.py is the model:
one socket, one reader, a dict to route, one timer re-armed only when the earliest deadline
changes).

Under uvloop a raw socket cannot go through create_datagram_endpoint and sock_recvfrom is not
implemented, so the capture socket is registered with ``loop.add_reader`` and drained until
EAGAIN. The send sockets are never registered: their error queues fill with TX timestamps
and uvloop silently stops calling the reader of a socket in POLLERR. They are drained by hand
after each send batch, on every capture wake-up and on every timer tick, and each stamp is
paired with its send as txstamps.py explains (per-send ids on 6.13+, the socket's counter
before).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prober.core.parse import parse_packet
from prober.core.timing import Stamp
from prober.core.wire import MalformedPacket, Packet
from prober.engine import sockets
from prober.engine.firewall import Conversation, RstSuppression
from prober.engine.ports import PortPool, raise_fd_limit
from prober.engine.txstamps import TxStampId, TxStampPairing, forced_method

# Frames read per wake-up before yielding to the loop, so one busy socket cannot starve it.
READ_BATCH = 512

RouteKey = tuple[bytes, int, int]  # (remote address, remote port, local port)


class DrivenProbe(Protocol):
    """What the engine needs of a sans-IO probe (see prober.core.syn.SynProbe)."""

    def start(self, now: float) -> None: ...
    def receive(self, packet: Packet, now: float, stamp: Stamp) -> bool: ...
    def handle_timer(self, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...
    def segments_to_send(self) -> list[bytes]: ...
    def sent(self, index: int, stamp: Stamp) -> None: ...
    def send_kernel_stamp(self, index: int, kernel_ns: int) -> None: ...
    def send_failed(self, index: int, error: str) -> None: ...

    @property
    def done(self) -> bool: ...


@dataclass(eq=False, slots=True)
class Flight:
    """A probe in the engine's care: where its segments go and who to tell when it is done."""

    probe: DrivenProbe
    version: int
    destination: str
    key: RouteKey
    on_done: Callable[[Flight], None] | None
    segments_sent: int = 0
    scheduled_for: float | None = None  # the deadline this flight has in the timer heap
    reported: bool = False
    closed: bool = False
    invalid: int = 0  # packets routed to this flight that no probe on its 4-tuple accepted
    stamps_pending: int = 0  # sends of this flight whose TX stamp has not come (or expired)


@dataclass(slots=True)
class EngineStats:
    frames: int = 0
    malformed: int = 0
    unrouted: int = 0
    invalid: int = 0
    kernel_drops: int = 0
    tx_stamps: int = 0
    tx_stamps_unmatched: int = 0  # stamps paired with no send, or refused (see txstamps.py)
    tx_stamps_expired: int = 0  # sends whose stamp never came


@dataclass(slots=True)
class _Timer:
    heap: list[tuple[float, int, Flight]] = field(default_factory=list)
    handle: asyncio.TimerHandle | None = None
    armed_for: float | None = None


class Engine:
    """Raw sockets, kernel timestamps, one timer, source ports and reply dispatch for one
    event loop.

    Use ``Engine.acquire()``/``release()`` (Prober does): the first user opens the sockets,
    the last one closes them. Launching and retiring a probe costs O(1): the capture filter
    passes the engine's port block (ports.py) and changes only when the block grows.
    """

    _per_loop: dict[asyncio.AbstractEventLoop, Engine] = {}  # noqa: RUF012

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._users = 0
        self._capture: socket.socket | None = None
        self._send: dict[int, socket.socket] = {}
        self._tx: dict[int, TxStampPairing[Flight]] = {}  # per IP version, like the sockets
        self._forced_method = forced_method()
        self._drain_scheduled = False
        self._routes: dict[RouteKey, list[Flight]] = {}
        # By local port, to count strays (wrong source or remote port) against their probe.
        self._by_local_port: dict[int, list[Flight]] = {}
        self.ports = PortPool()
        self._filter_generation = -1
        self._timer = _Timer()
        self._firewall: RstSuppression | None = None
        self._tiebreak = itertools.count()
        self._stats = EngineStats()

    # -- lifetime -------------------------------------------------------------------------
    @classmethod
    def acquire(cls) -> Engine:
        """The running loop's engine, opened on first use.

        Raises:
            RawSocketsNotPermitted; InvalidTxStampId (PROBER_TX_STAMP_ID has a bad value).
        """
        loop = asyncio.get_running_loop()
        engine = cls._per_loop.get(loop)
        if engine is None:
            engine = cls(loop)
            engine._open()
            cls._per_loop[loop] = engine
        engine._users += 1
        return engine

    @classmethod
    def running(cls) -> Engine:
        """The running loop's engine, which a user (a Prober) has opened."""
        engine = cls._per_loop.get(asyncio.get_running_loop())
        if engine is None:
            raise RuntimeError("no engine on this loop: use Prober inside 'async with'")
        return engine

    def release(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self._close()
            self._per_loop.pop(self._loop, None)

    def _open(self) -> None:
        raise_fd_limit()
        self._capture = sockets.open_capture_socket()
        self._loop.add_reader(self._capture.fileno(), self._on_readable)

    def _close(self) -> None:
        if self._timer.handle is not None:
            self._timer.handle.cancel()
            self._timer.handle = None
        if self._capture is not None:
            self._loop.remove_reader(self._capture.fileno())
            self._capture.close()
            self._capture = None
        for sock in self._send.values():
            sock.close()
        self._send.clear()
        self._tx.clear()
        self.ports.close()
        if self._firewall is not None:
            self._firewall.close()
            self._firewall = None

    def send_socket(self, version: int) -> socket.socket:
        """The raw send socket for an IP version, opened on first use; the kernel is asked
        then, once, how it numbers TX stamps (unless PROBER_TX_STAMP_ID says)."""
        sock = self._send.get(version)
        if sock is None:
            sock = sockets.open_send_socket(version)
            method = self._forced_method
            if method is None:
                method = (
                    TxStampId.PER_SEND
                    if sockets.per_send_ids_supported(sock, version)
                    else TxStampId.PER_SOCKET
                )
            self._send[version] = sock
            self._tx[version] = TxStampPairing(method)
        return sock

    def tx_stamp_method(self, version: int) -> TxStampId:
        """How TX stamps are paired with sends on ``version``'s socket."""
        self.send_socket(version)
        return self._tx[version].method

    def tx_stamps_waiting(self) -> int:
        """Sends still waiting for their TX stamp (bounded: they expire)."""
        return sum(len(pairing) for pairing in self._tx.values())

    # -- probes ---------------------------------------------------------------------------
    def launch(
        self,
        probe: DrivenProbe,
        version: int,
        destination: str,
        key: RouteKey,
        on_done: Callable[[Flight], None] | None = None,
    ) -> Flight:
        """Route replies for ``key`` to ``probe``, start it, and send what it asks for.

        The flight stays routed after the probe is done (so late and duplicate answers are
        counted, not misread) until ``retire`` is called. ``key``'s local port should come
        from ``ports`` (the capture filter passes those only).
        """
        flight = Flight(probe, version, destination, key, on_done)
        flights = self._routes.get(key)
        if flights is None:
            self._routes[key] = [flight]
        else:
            flights.append(flight)
        on_port = self._by_local_port.get(key[2])
        if on_port is None:
            self._by_local_port[key[2]] = [flight]
        else:
            on_port.append(flight)
        if self.ports.generation != self._filter_generation:
            self._update_filter()
        probe.start(self._loop.time())
        self._service(flight)
        self._drain_soon()
        return flight

    def _drain_soon(self) -> None:
        # Once per loop iteration, not per launch: the stamps of a whole batch of sends are
        # read with one EAGAIN at the end. A reply is never handled before its stamp is
        # known: the reader and the timer drain first, and a probe done drains before it
        # reports.
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain_scheduled_stamps)

    def _drain_scheduled_stamps(self) -> None:
        self._drain_scheduled = False
        self._drain_tx_stamps()

    def retire(self, flight: Flight) -> None:
        """Stop routing replies to ``flight``."""
        if flight.closed:
            return
        flight.closed = True
        flights = self._routes.get(flight.key)
        if flights is not None:
            flights.remove(flight)  # a short list: the flights sharing this 4-tuple
            if not flights:
                del self._routes[flight.key]
        on_port = self._by_local_port.get(flight.key[2])
        if on_port is not None:
            on_port.remove(flight)  # short too: a port is shared only when all are held
            if not on_port:
                del self._by_local_port[flight.key[2]]

    def suppress_rsts(self, conversation: Conversation) -> None:
        """Drop the local kernel's RSTs on ``conversation`` (see firewall.py) until
        ``allow_rsts``; the table is created on first use and dies with the process."""
        if self._firewall is None:
            firewall = RstSuppression()
            firewall.open()
            self._firewall = firewall
        self._firewall.add(conversation)

    def allow_rsts(self, conversation: Conversation) -> None:
        if self._firewall is not None:
            self._firewall.remove(conversation)

    def poke(self, flight: Flight) -> None:
        """Carry out what a probe asks after its owner changed it (e.g. interrupted it)."""
        self._service(flight)

    def take_kernel_drops(self) -> int:
        """Frames the kernel dropped from the capture queue so far (cumulative)."""
        if self._capture is not None:
            self._stats.kernel_drops += sockets.kernel_drops(self._capture)
        return self._stats.kernel_drops

    # -- internals: sending -----------------------------------------------------------------
    def _service(self, flight: Flight) -> None:
        probe = flight.probe
        for segment in probe.segments_to_send():
            self._send_segment(flight, segment)
        deadline = probe.next_deadline()
        if deadline is None:
            flight.scheduled_for = None  # its heap entry, if any, is stale now
        elif deadline != flight.scheduled_for and not flight.closed:
            # Older heap entries of this flight become stale and are skipped when popped.
            flight.scheduled_for = deadline
            heapq.heappush(self._timer.heap, (deadline, next(self._tiebreak), flight))
            self._arm_timer()
        if probe.done and not flight.reported:
            # The last segment's kernel TX stamp first, so the reported result has it.
            if flight.stamps_pending:
                self._drain_tx_stamps()
            flight.reported = True
            if flight.on_done is not None:
                flight.on_done(flight)

    def _send_segment(self, flight: Flight, segment: bytes) -> None:
        index = flight.segments_sent
        flight.segments_sent += 1
        try:
            sock = self.send_socket(flight.version)
        except OSError as exc:
            flight.probe.send_failed(index, exc.strerror or str(exc))
            return
        pairing = self._tx[flight.version]
        send_id = pairing.next_id() if pairing.method is TxStampId.PER_SEND else None
        user_ns = time.time_ns()
        try:
            sockets.send_with_id(sock, segment, (flight.destination, 0), send_id)
        except OSError as exc:
            pairing.failed(exc.errno or 0)
            flight.probe.send_failed(index, exc.strerror or str(exc))
            return
        pairing.sent(flight, index, user_ns, self._loop.time())
        flight.stamps_pending += 1
        flight.probe.sent(index, Stamp(user_ns))

    def _drain_tx_stamps(self) -> None:
        now = -1.0
        for version, sock in self._send.items():
            pairing = self._tx[version]
            if not pairing:
                continue
            for send_id, kernel_ns in sockets.read_tx_stamps(sock):
                paired = pairing.stamped(send_id, kernel_ns)
                if paired is not None:
                    flight, index, usable = paired
                    flight.stamps_pending -= 1
                    if usable:
                        flight.probe.send_kernel_stamp(index, kernel_ns)
            if now < 0:
                now = self._loop.time()
            for flight in pairing.expire(now):
                flight.stamps_pending -= 1

    @property
    def stats(self) -> EngineStats:
        """The engine's counters so far; the TX-stamp ones summed over the send sockets."""
        tx = [pairing.stats for pairing in self._tx.values()]
        self._stats.tx_stamps = sum(t.stamps for t in tx)
        self._stats.tx_stamps_unmatched = sum(t.unmatched + t.refused for t in tx)
        self._stats.tx_stamps_expired = sum(t.expired for t in tx)
        return self._stats

    # -- internals: receiving ---------------------------------------------------------------
    def _on_readable(self) -> None:
        capture = self._capture
        if capture is None:
            return
        # TX stamps first: a reply must find its probe's send time already known.
        self._drain_tx_stamps()
        now = self._loop.time()
        user_ns = time.time_ns()
        routes = self._routes
        for data, kernel_ns in sockets.read_frames(capture, READ_BATCH):
            self._stats.frames += 1
            try:
                packet = parse_packet(data)
            except MalformedPacket:
                self._stats.malformed += 1
                continue
            key = _route_key(packet)
            if key is None:
                continue
            flights = routes.get(key)
            if not flights:
                # To a probe's port from elsewhere: never offered as an answer, only counted.
                strays = self._by_local_port.get(key[2])
                if strays:
                    _count_invalid(strays[0], packet)
                    self._stats.invalid += 1
                else:
                    self._stats.unrouted += 1
                continue
            stamp = Stamp(user_ns, kernel_ns)
            # Newest first: flights that share a 4-tuple (syn reuses ports when all are
            # held) are told apart by their ISN, and the newest is the one being answered.
            for flight in reversed(flights):
                if flight.probe.receive(packet, now, stamp):
                    # At once, not after the batch: an ACK goes out before the next
                    # segment is even parsed, and the ladder keeps causal order.
                    self._service(flight)
                    break
            else:
                self._stats.invalid += 1
                _count_invalid(flights[0], packet)

    # -- internals: the one timer -----------------------------------------------------------
    def _arm_timer(self) -> None:
        timer = self._timer
        if not timer.heap:
            return
        earliest = timer.heap[0][0]
        if timer.armed_for is not None and timer.armed_for <= earliest:
            return
        if timer.handle is not None:
            timer.handle.cancel()
        timer.armed_for = earliest
        timer.handle = self._loop.call_at(earliest, self._on_timer)

    def _on_timer(self) -> None:
        timer = self._timer
        timer.handle = None
        timer.armed_for = None
        # The capture first (it drains the TX stamps too): an answer that arrived before a
        # deadline is taken before the timeout is declared, even when the loop is behind.
        self._on_readable()
        now = self._loop.time()
        due: list[Flight] = []
        while timer.heap and timer.heap[0][0] <= now:
            deadline, _, flight = heapq.heappop(timer.heap)
            if flight.closed or flight.scheduled_for != deadline:
                continue  # stale: the flight moved on to another deadline, or left
            flight.scheduled_for = None
            due.append(flight)
        for flight in due:
            flight.probe.handle_timer(now)
            self._service(flight)
        self._arm_timer()

    def _update_filter(self) -> None:
        self._filter_generation = self.ports.generation
        if self._capture is not None:
            sockets.attach_filter(self._capture, sockets.capture_filter(self.ports.ranges()))


# Full collections of the cyclic GC while runs are in progress: a run keeps every probe and
# result until it ends, so each full collection walks all of them again (CPython starts one
# after 10 younger ones once the long-lived set grew by a quarter). At 20,000 probes that was
# 5 collections, 0.3 s, 15 µs per probe. While a run is active the oldest generation waits
# for 100 younger collections instead; the threshold is restored when the last run ends.
_FULL_COLLECTION_EVERY = 100
_gc_holds = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_full_collections() -> Iterator[None]:
    """Within this block (nestable, process-wide) full GC collections are rarer."""
    global _gc_holds, _gc_saved
    if _gc_holds == 0:
        _gc_saved = gc.get_threshold()
        young, middle, old = _gc_saved
        gc.set_threshold(young, middle, max(old, _FULL_COLLECTION_EVERY))
    _gc_holds += 1
    try:
        yield
    finally:
        _gc_holds -= 1
        if _gc_holds == 0 and _gc_saved is not None:
            gc.set_threshold(*_gc_saved)
            _gc_saved = None


def _count_invalid(flight: Flight, packet: Packet) -> None:
    """Count a packet that no probe took against ``flight``, and by kind in its probe if the
    probe keeps such counts (``SynProbe.count_invalid``)."""
    flight.invalid += 1
    count = getattr(flight.probe, "count_invalid", None)
    if count is not None:
        count(packet)


def _route_key(packet: Packet) -> RouteKey | None:
    """The (remote address, remote port, local port) a reply belongs to."""
    tcp = packet.tcp
    if tcp is not None:
        return (packet.src, tcp.sport, tcp.dport)
    icmp = packet.icmp
    if icmp is not None:
        quoted = icmp.quoted
        if quoted.dport is None or quoted.sport is None:
            return None
        return (quoted.dst, quoted.dport, quoted.sport)
    return None
