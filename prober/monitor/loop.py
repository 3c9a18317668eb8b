"""``Prober.monitor``: every target probed once per interval, for as long as the caller reads.

One SYN per target per round, each target at its own phase of the interval (a hash of its
name: ``prober.core.monitor_stats.phase_of``), so a round is spread over the interval, not
a burst, and one slow or silent target never moves another's schedule: each probe ends by
its own timeout (at most the interval), and the schedule is a heap of due times, not a
loop that waits on answers.

A name is resolved before its first round and again every ``resolve_every`` seconds in the
background; a name that does not resolve (any more) gives a sample with reason
``UNRESOLVED`` (nothing sent) until it does again, and the last good address is not used
meanwhile (it may be wrong). A send that fails (the interface is down, no route) gives
``SEND_FAILED``. Both are states of the sample, never exceptions out of the iterator.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import ipaddress
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prober.core.monitor_stats import DEFAULT_WINDOW, RollingStats, TargetStats, phase_of
from prober.core.packets import template
from prober.core.syn import PortState, Reason, SynProbe, SynProbeResult
from prober.core.wire import TcpFlags
from prober.errors import ResolutionError, UsageError

if TYPE_CHECKING:
    from prober.api import Address, Prober
    from prober.engine.engine import Flight

# Samples waiting for a slow reader before the oldest are dropped (and counted).
MAX_QUEUED_SAMPLES = 100_000


@dataclass(frozen=True, slots=True)
class MonitorSample:
    """One target's outcome in one round, with its rolling statistics.

    ``to_dict()`` is the CLI's JSON line (keys stable).
    """

    target: str  # as given: host:port
    host: str
    port: int
    address: str | None  # None: the name did not resolve
    round: int  # 1-based, per target
    at: float  # CLOCK_REALTIME seconds of the send (or of the round, when nothing was sent)
    state: PortState
    reason: Reason
    rtt_s: float | None
    rtt_clock: str | None  # "kernel" | "user"
    late_s: float  # how late the probe left against its schedule
    error: str | None
    stats: RollingStats

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "monitor",
            "target": self.target,
            "host": self.host,
            "port": self.port,
            "address": self.address,
            "round": self.round,
            "at": self.at,
            "state": self.state.value,
            "reason": self.reason.value,
            "rtt_s": self.rtt_s,
            "rtt_clock": self.rtt_clock,
            "late_s": self.late_s,
            "error": self.error,
            "stats": self.stats.to_dict(),
        }


@dataclass(slots=True)
class _Target:
    host: str
    port: int
    literal: bool
    stats: TargetStats
    address: Address | None = None
    source: Address | None = None
    resolve_error: str | None = None
    rounds: int = 0

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


async def _resolve(target: _Target, version: int | None) -> None:
    from prober.api import resolve, source_address_for

    try:
        address = await resolve(target.host, version)
        source = source_address_for(address)
    except (ResolutionError, UsageError) as exc:
        target.address = target.source = None
        target.resolve_error = str(exc)
        return
    target.address, target.source, target.resolve_error = address, source, None


async def monitor(
    prober: Prober,
    targets: Sequence[tuple[str, int]],
    *,
    interval: float,
    timeout: float,
    resolve_every: float,
    window: int = DEFAULT_WINDOW,
    version: int | None = None,
    ttl: int = 64,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[MonitorSample]:
    """The samples of every target, round after round, until ``stop`` is set (or the
    iterator is closed). See ``Prober.monitor``."""
    if not targets:
        raise UsageError("monitor needs at least one target")
    if not 0 < timeout <= interval:
        raise UsageError("timeout must be > 0 and at most the interval")
    engine = prober.engine
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    state: list[_Target] = []
    for host, port in targets:
        try:
            ipaddress.ip_address(host)
            literal = True
        except ValueError:
            literal = False
        state.append(_Target(host, port, literal, TargetStats(window=window)))
    await asyncio.gather(*(_resolve(t, version) for t in state))
    queue: deque[MonitorSample] = deque()
    dropped = 0
    ready = asyncio.Event()
    ports = engine.ports
    in_flight: set[Flight] = set()  # launched, no outcome yet
    settled: deque[tuple[float, Flight]] = deque()
    numbers = itertools.count(1)
    start = loop.time()
    due: list[tuple[float, int, int]] = [
        (start + phase_of(t.name, interval), i, 0) for i, t in enumerate(state)
    ]
    heapq.heapify(due)

    def emit(sample: MonitorSample) -> None:
        nonlocal dropped
        if len(queue) >= MAX_QUEUED_SAMPLES:
            queue.popleft()
            dropped += 1
        queue.append(sample)
        ready.set()

    def sample_of(target: _Target, at: float, late: float, result: SynProbeResult | None,
                  reason: Reason, error: str | None) -> MonitorSample:
        target.rounds += 1
        rtt = None if result is None or result.rtt is None else result.rtt
        state_ = PortState.UNKNOWN if result is None else result.state
        rtt_s = None if rtt is None else rtt.ns / 1e9
        stats = target.stats.update(state_, reason, rtt_s, at)
        return MonitorSample(
            target=target.name, host=target.host, port=target.port,
            address=None if target.address is None else str(target.address),
            round=target.rounds, at=at, state=state_, reason=reason, rtt_s=rtt_s,
            rtt_clock=None if rtt is None else rtt.clock.value, late_s=late,
            error=error, stats=stats,
        )

    def launch(target: _Target, late: float) -> None:
        at = time.time()
        if target.address is None or target.source is None:
            emit(sample_of(target, at, late, None, Reason.UNRESOLVED, target.resolve_error))
            return
        address, source = target.address, target.source
        sport = ports.acquire(share=True)
        number = next(numbers)
        src, dst = source.packed, address.packed
        probe = SynProbe(
            number=number,
            template=template(address.version, TcpFlags.SYN, ttl=ttl),
            src=src, dst=dst, sport=sport, dport=target.port,
            isn=prober._isn_key.isn(src, dst, sport, target.port, number),
            timeout=timeout,
            tsval=time.monotonic_ns() // 1_000_000 & 0xFFFFFFFF,
        )

        def on_done(flight: Flight) -> None:  # may run inside engine.launch (a failed send)
            in_flight.discard(flight)
            settled.append((loop.time(), flight))
            result = probe.result()
            emit(sample_of(target, at, late, result, result.reason, result.error))

        flight = engine.launch(probe, address.version, str(address), (dst, target.port, sport),
                               on_done)
        if not flight.reported:
            in_flight.add(flight)

    def retire_settled(now: float) -> None:
        while settled and settled[0][0] + timeout <= now:
            flight = settled.popleft()[1]
            engine.retire(flight)
            ports.release(flight.key[2])

    async def resolver() -> None:
        names = [t for t in state if not t.literal]
        while names:
            await asyncio.sleep(resolve_every)
            await asyncio.gather(*(_resolve(t, version) for t in names))

    resolving = asyncio.ensure_future(resolver())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            now = loop.time()
            while due and due[0][0] <= now:
                when, index, round_ = heapq.heappop(due)
                launch(state[index], now - when)
                heapq.heappush(due, (start + phase_of(state[index].name, interval)
                                     + (round_ + 1) * interval, index, round_ + 1))
            retire_settled(now)
            while queue:
                yield queue.popleft()
                if stop.is_set():
                    break
            if stop.is_set():
                break
            ready.clear()
            wait = max(0.0, due[0][0] - loop.time()) if due else interval
            waiter = asyncio.ensure_future(ready.wait())
            await asyncio.wait((waiter, stopping), timeout=wait,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
    finally:
        resolving.cancel()
        stopping.cancel()
        for flight in list(in_flight):
            engine.retire(flight)
            ports.release(flight.key[2])
        for _, flight in settled:
            engine.retire(flight)
            ports.release(flight.key[2])
        in_flight.clear()
        settled.clear()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(resolving, stopping, return_exceptions=True)
