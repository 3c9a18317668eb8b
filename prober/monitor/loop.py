"""``Prober.monitor``: every target probed once per interval, for as long as the caller reads.

One SYN per target per round, each target at its own phase of the interval (a hash of its
name: ``prober.core.monitor_stats.phase_of``), so a round is spread over the interval, not
a burst, and one slow or silent target never moves another's schedule: each probe ends by
its own timeout (at most the interval), and the schedule is a heap of due times served by a
timer callback, not by the reader: a caller that is slow to read delays no probe (its
samples wait in a bounded queue; the oldest are dropped and counted beyond it).

Probes due within one tick (``TICK_S``, at most a hundredth of the interval) leave together:
at 10,000 probes a second that is 50 sends per wake-up instead of one, and their answers are
read in one wake-up too. A probe leaves at most a tick late when the process keeps up; each
sample says how late it left (``late_s``), so a process that does not keep up shows it.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prober.core.monitor_stats import DEFAULT_WINDOW, RollingStats, TargetStats, phase_of
from prober.core.packets import template
from prober.core.syn import STATE_OF_REASON, PortState, Reason, SynProbe
from prober.core.wire import TcpFlags
from prober.engine.engine import fewer_full_collections
from prober.errors import PortsExhausted, ResolutionError, UsageError

if TYPE_CHECKING:
    from prober.api import Address, Prober
    from prober.engine.engine import Engine, Flight

# Samples waiting for a slow reader before the oldest are dropped (and counted).
MAX_QUEUED_SAMPLES = 100_000
# Probes due within this long of each other leave in one batch (and never more than a
# hundredth of the interval late for it).
TICK_S = 0.005
# A target without an address is resolved again after this long (or an interval, if longer).
RETRY_UNRESOLVED_S = 5.0
# The largest window of rounds: its RTTs are kept sorted, an O(window) insert per round.
MAX_WINDOW = 10_000


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


# One round's outcome until its sample is made: (at, late, state, reason, rtt_s, rtt_clock,
# error), the arguments of Monitor._sample after the target.
_Outcome = tuple[float, float, PortState, Reason, float | None, str | None, str | None]
# The answers whose RTT is the target's: an ICMP error's is a router's (or the host's ICMP's),
# which the samples, the statistics and the metrics leave out.
_RTT_REASONS = frozenset({Reason.SYN_ACK, Reason.RST})


@dataclass(eq=False, slots=True)
class _Target:
    host: str
    port: int
    literal: bool
    stats: TargetStats
    address: Address | None = None
    address_text: str | None = None  # str(address), once: ipaddress's __str__ is slow
    source: Address | None = None
    resolve_error: str | None = None
    rounds: int = 0  # samples given so far: also the 0-based number of the next one due
    launched: int = 0  # rounds started so far (each takes the next number)
    # Outcomes of rounds that ended before an earlier round of the same target, by number:
    # with a timeout close to the interval, round k+1's quick answer can come before round
    # k's timeout, and its sample must still follow round k's (None: nothing held).
    held: dict[int, _Outcome] | None = None
    removed: bool = False  # set_targets dropped it: its heap entry and answer are ignored

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(eq=False, slots=True)
class _Round:
    """One probe's context until its outcome: one object, not a closure and its cells."""

    monitor: Monitor
    target: _Target
    probe: SynProbe
    at: float
    late: float
    number: int  # the target's 0-based round number (Monitor._settle orders by it)

    def __call__(self, flight: Flight) -> None:  # may run inside engine.launch (failed send)
        self.monitor._done(flight, self.target, self.probe, self.at, self.late, self.number)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Monitor:
    """The running monitor that ``Prober.monitor`` returns: an async iterator of
    ``MonitorSample``, one per target per round, until ``stop`` is set or ``aclose()``.

    It starts on the first ``__anext__`` (which resolves the names first). ``set_targets``
    replaces the list while it runs.
    """

    def __init__(
        self,
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
    ) -> None:
        self._prober = prober
        self._interval = interval
        self._timeout = timeout
        self._resolve_every = resolve_every
        self._window = window
        self._version = version
        self._ttl = ttl
        self._stop = stop
        self._targets: dict[tuple[str, int], _Target] = {}
        self._pending: list[tuple[str, int]] | None = list(dict.fromkeys(targets))
        self._queue: deque[MonitorSample] = deque()
        self._dropped = 0
        self._waiter: asyncio.Future[None] | None = None
        self._started = False
        self._closed = False
        self._due: list[tuple[float, int, _Target, int]] = []  # (when, tiebreak, target, round)
        self._tiebreak = itertools.count()
        self._numbers = itertools.count(1)
        self._in_flight: set[Flight] = set()
        self._settled: deque[tuple[float, Flight]] = deque()
        self._tick: asyncio.TimerHandle | None = None
        self._tick_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start = 0.0
        self._skipped = 0
        self._scope = contextlib.ExitStack()  # what the run holds until aclose
        self._failure: BaseException | None = None

    # -- the public face -------------------------------------------------------------------
    @property
    def targets(self) -> tuple[tuple[str, int], ...]:
        """The (host, port) pairs being monitored, in the order given."""
        if self._pending is not None:
            return tuple(self._pending)
        return tuple(self._targets)

    @property
    def dropped(self) -> int:
        """Samples dropped because the reader lagged more than MAX_QUEUED_SAMPLES behind."""
        return self._dropped

    @property
    def skipped(self) -> int:
        """Rounds not sent because the process stalled for longer than an interval (each
        target resumes at its next phase instead of catching up in a burst)."""
        return self._skipped

    def set_targets(self, targets: Iterable[tuple[str, int]]) -> None:
        """Monitor ``targets`` from now on: a (host, port) kept keeps its statistics and
        phase, one removed gives no more samples (not even for a probe in flight), a new
        one is resolved and starts at its phase.

        Raises:
            UsageError: an empty list, or a port out of range.
        """
        wanted = list(dict.fromkeys(targets))
        if not wanted:
            raise UsageError("monitor needs at least one target")
        for _host, port in wanted:
            if not 1 <= port <= 65535:
                raise UsageError(f"invalid port {port}: expected a number from 1 to 65535")
        if not self._started:
            self._pending = wanted
            return
        keep = set(wanted)
        for key, target in list(self._targets.items()):
            if key not in keep:
                target.removed = True
                del self._targets[key]
        added = [self._new_target(host, port) for host, port in wanted
                 if (host, port) not in self._targets]
        # Insertion order follows the new list (kept targets first, then the new ones).
        ordered = {key: self._targets.get(key) for key in wanted}
        for target in added:
            ordered[(target.host, target.port)] = target
        self._targets = {key: t for key, t in ordered.items() if t is not None}
        if added:
            self._spawn(self._begin(added))

    def __aiter__(self) -> Monitor:
        return self

    async def __aenter__(self) -> Monitor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def __anext__(self) -> MonitorSample:
        if not self._started:
            await self._first_start()
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                await self.aclose()
                raise failure
            if self._closed or (self._stop is not None and self._stop.is_set()):
                await self.aclose()
                raise StopAsyncIteration
            loop = self._loop
            assert loop is not None
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def aclose(self) -> None:
        """Stop probing; probes in flight are abandoned (their rounds give no sample)."""
        if self._closed and not self._tasks and not self._in_flight and not self._settled:
            return
        self._closed = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for task in list(self._tasks):
            task.cancel()
        engine = self._engine
        if engine is not None:
            for flight in list(self._in_flight):
                engine.retire(flight)
                engine.ports.release(flight.key[2])
            for _, flight in self._settled:
                engine.retire(flight)
                engine.ports.release(flight.key[2])
        self._in_flight.clear()
        self._settled.clear()
        self._scope.close()
        tasks = list(self._tasks)
        if tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
        self._wake()

    # -- starting, resolving ---------------------------------------------------------------
    async def _first_start(self) -> None:
        pending = self._pending or []
        if not pending:
            raise UsageError("monitor needs at least one target")
        if not 0 < self._timeout <= self._interval:
            raise UsageError("timeout must be > 0 and at most the interval")
        self._loop = asyncio.get_running_loop()
        self._engine = self._prober.engine
        self._started = True
        self._pending = None
        self._start = self._loop.time()
        # Each round's objects outlive young collections (a probe waits up to its timeout),
        # so full collections would come every few seconds and walk every target's state:
        # pauses of tens of ms at 10,000 targets, each one making a batch of probes late.
        self._scope.enter_context(fewer_full_collections())
        targets = [self._new_target(host, port) for host, port in pending]
        self._targets = {(t.host, t.port): t for t in targets}
        await self._begin(targets)
        self._spawn(self._resolver())
        if self._stop is not None:
            self._spawn(self._watch_stop(self._stop))

    def _new_target(self, host: str, port: int) -> _Target:
        return _Target(host, port, _is_literal(host), TargetStats(window=self._window))

    async def _begin(self, targets: list[_Target]) -> None:
        """Resolve new targets, then put each on the schedule at its next phase."""
        await asyncio.gather(*(self._resolve(t) for t in targets))
        assert self._loop is not None
        now = self._loop.time()
        interval = self._interval
        for target in targets:
            if target.removed:
                continue
            phase = self._start + phase_of(target.name, interval)
            rounds = max(0, -(-(now - phase) // interval))  # the first phase not yet past
            self._push(phase + rounds * interval, target, 0)
        self._arm()

    async def _resolve(self, target: _Target) -> None:
        from prober.api import resolve, source_address_for

        try:
            address = await resolve(target.host, self._version)
            source = source_address_for(address)
        except (ResolutionError, UsageError) as exc:
            target.address = target.source = target.address_text = None
            target.resolve_error = str(exc)
            return
        target.address, target.source, target.resolve_error = address, source, None
        target.address_text = str(address)

    async def _resolver(self) -> None:
        # Every name again each resolve_every; a target without an address (a name that did
        # not resolve, an address that had no route) sooner, so one DNS hiccup costs a few
        # rounds, not resolve_every's worth.
        assert self._loop is not None
        loop, every = self._loop, self._resolve_every
        retry = min(every, max(self._interval, RETRY_UNRESOLVED_S))
        everything_at = loop.time() + every
        while True:
            await asyncio.sleep(min(retry, max(0.0, everything_at - loop.time())))
            if loop.time() >= everything_at:
                everything_at += every
                # Names, and addresses that had no route: a literal needs no DNS, but its
                # route may come up after the start (an interface not up yet).
                again = [t for t in self._targets.values()
                         if not t.literal or t.address is None]
            else:
                again = [t for t in self._targets.values() if t.address is None]
            await asyncio.gather(*(self._resolve(t) for t in again))

    async def _watch_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake()

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug, not a state of a target: raised to the reader rather than hidden.
            self._failure = task.exception()
            self._wake()

    # -- the schedule ----------------------------------------------------------------------
    def _push(self, when: float, target: _Target, round_: int) -> None:
        heapq.heappush(self._due, (when, next(self._tiebreak), target, round_))

    def _arm(self) -> None:
        if self._closed or not self._due:
            return
        assert self._loop is not None
        when = self._due[0][0]
        if self._tick_at is not None and self._tick_at <= when:
            return
        if self._tick is not None:
            self._tick.cancel()
        self._tick_at = when
        self._tick = self._loop.call_at(when, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = self._tick_at = None
        if self._closed or (self._stop is not None and self._stop.is_set()):
            return
        try:
            self._serve_due()
        except Exception as exc:  # a bug: raised to the reader, not lost in the loop's log
            self._failure = exc
            self._wake()

    def _serve_due(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        due, interval = self._due, self._interval
        batch_end = now + min(TICK_S, interval / 100)
        while due and due[0][0] <= batch_end:
            when, _, target, round_ = heapq.heappop(due)
            if target.removed:
                continue
            self._launch(target, max(0.0, now - when))
            following = when + interval
            if following <= now:
                # The process stalled for more than an interval: the rounds it missed are
                # counted, not sent in a burst to catch up; the phase stays.
                missed = int((now - following) // interval) + 1
                self._skipped += missed
                following += missed * interval
            self._push(following, target, round_ + 1)
        self._retire_settled(now)
        if due:
            # Not sooner than a tick from now: what falls due meanwhile leaves together.
            next_at = max(due[0][0], now + min(TICK_S, interval / 100))
            self._tick_at = next_at
            self._tick = self._loop.call_at(next_at, self._on_tick)

    def _retire_settled(self, now: float) -> None:
        engine, settled, timeout = self._engine, self._settled, self._timeout
        assert engine is not None
        while settled and settled[0][0] + timeout <= now:
            flight = settled.popleft()[1]
            engine.retire(flight)
            engine.ports.release(flight.key[2])

    # -- one probe -------------------------------------------------------------------------
    def _launch(self, target: _Target, late: float) -> None:
        at = time.time()
        round_number = target.launched
        target.launched += 1
        address, source, address_text = target.address, target.source, target.address_text
        if address is None or source is None or address_text is None:
            self._settle(target, round_number, (at, late, PortState.UNKNOWN, Reason.UNRESOLVED,
                                                None, None, target.resolve_error))
            return
        engine, loop = self._engine, self._loop
        assert engine is not None and loop is not None
        try:
            sport = engine.ports.acquire(share=True)
        except PortsExhausted as exc:
            # No source port (the ephemeral range or the descriptors ran out): nothing sent,
            # a state of this round. Raised here, in the timer, it stopped every target's
            # schedule for good, with a traceback on stderr and no sample.
            self._settle(target, round_number, (at, late, PortState.UNKNOWN,
                                                Reason.SEND_FAILED, None, None, str(exc)))
            return
        number = next(self._numbers)
        src, dst = source.packed, address.packed
        probe = SynProbe(
            number=number,
            template=template(address.version, TcpFlags.SYN, ttl=self._ttl),
            src=src, dst=dst, sport=sport, dport=target.port,
            isn=self._prober._isn_key.isn(src, dst, sport, target.port, number),
            timeout=self._timeout,
            tsval=time.monotonic_ns() // 1_000_000 & 0xFFFFFFFF,
        )
        flight = engine.launch(probe, address.version, address_text,
                               (dst, target.port, sport),
                               _Round(self, target, probe, at, late, round_number))
        if not flight.reported:
            self._in_flight.add(flight)

    def _done(self, flight: Flight, target: _Target, probe: SynProbe, at: float,
              late: float, round_number: int) -> None:
        assert self._loop is not None
        self._in_flight.discard(flight)
        self._settled.append((self._loop.time(), flight))
        if target.removed:
            return
        reason, rtt, error = probe.outcome()
        if reason not in _RTT_REASONS:
            rtt = None
        self._settle(target, round_number, (
            at, late, STATE_OF_REASON[reason], reason,
            None if rtt is None else rtt.ns / 1e9,
            None if rtt is None else rtt.clock.value, error,
        ))

    def _settle(self, target: _Target, round_number: int, outcome: _Outcome) -> None:
        """Give the sample of a round that ended, in the order the target's rounds were
        sent: one that ended before an earlier round waits for it (a few ms at most, as
        the earlier one's timeout is due), so the state, the statistics and the round
        numbers follow the sends, not the order the probes happened to end."""
        if round_number != target.rounds:
            if target.held is None:
                target.held = {}
            target.held[round_number] = outcome
            return
        self._emit(self._sample(target, *outcome))
        held = target.held
        if held is not None:
            while target.rounds in held:
                self._emit(self._sample(target, *held.pop(target.rounds)))
            if not held:
                target.held = None

    def _sample(self, target: _Target, at: float, late: float, state: PortState,
                reason: Reason, rtt_s: float | None, rtt_clock: str | None,
                error: str | None) -> MonitorSample:
        target.rounds += 1
        stats = target.stats.update(state, reason, rtt_s, at)
        return MonitorSample(
            target=target.name, host=target.host, port=target.port,
            address=target.address_text,
            round=target.rounds, at=at, state=state, reason=reason, rtt_s=rtt_s,
            rtt_clock=rtt_clock, late_s=late, error=error, stats=stats,
        )

    def _emit(self, sample: MonitorSample) -> None:
        queue = self._queue
        if len(queue) >= MAX_QUEUED_SAMPLES:
            queue.popleft()
            self._dropped += 1
        queue.append(sample)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
