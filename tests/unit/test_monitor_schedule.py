"""`Monitor`'s schedule and target set on a fake engine: no root, no sockets.

The fake engine fails every send at once (a ``send-failed`` sample), which is all the
schedule needs: when each target's rounds come, which targets give samples after
``set_targets``, what a stalled process skips, and that closing lets go of everything."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from prober.core.cookies import IsnKey
from prober.core.syn import Reason, SynProbe
from prober.engine.engine import Flight, RouteKey
from prober.errors import PortsExhausted, UsageError
from prober.monitor.loop import Monitor, MonitorSample


class FakePorts:
    def __init__(self) -> None:
        self.held: Counter[int] = Counter()

    def acquire(self, *, share: bool = False) -> int:
        port = 40000 + len(self.held)
        self.held[port] += 1
        return port

    def release(self, port: int, *, rest_s: float = 0.0) -> None:
        self.held[port] -= 1
        if not self.held[port]:
            del self.held[port]


class FakeEngine:
    def __init__(self) -> None:
        self.ports = FakePorts()
        self.live: set[Flight] = set()
        self.sends: list[float] = []

    def launch(self, probe: SynProbe, version: int, destination: str, key: RouteKey,
               on_done: Callable[[Flight], None]) -> Flight:
        flight = Flight(probe, version, destination, key, on_done)
        self.live.add(flight)
        probe.start(asyncio.get_running_loop().time())
        probe.segments_to_send()
        self.sends.append(time.monotonic())
        probe.send_failed(0, "fake: no network")
        flight.reported = True
        on_done(flight)
        return flight

    def retire(self, flight: Flight) -> None:
        self.live.discard(flight)


class FakeProber:
    def __init__(self) -> None:
        self.engine = FakeEngine()
        self._isn_key = IsnKey(b"0123456789abcdef")


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 20))


A, B, C = ("198.18.0.18", 80), ("198.18.0.18", 81), ("198.18.0.34", 80)


def monitor(targets: list[tuple[str, int]], interval: float = 0.1) -> tuple[Monitor, FakeProber]:
    prober = FakeProber()
    return Monitor(prober, targets, interval=interval, timeout=interval / 2,  # type: ignore[arg-type]
                   resolve_every=60.0), prober


def test_every_target_once_per_interval_at_its_own_phase() -> None:
    async def go() -> list[MonitorSample]:
        mon, _ = monitor([A, B, C])
        seen = []
        async for sample in mon:
            seen.append(sample)
            if len(seen) == 12:
                await mon.aclose()
        return seen

    seen = run(go())
    by_target: dict[str, list[MonitorSample]] = {}
    for sample in seen:
        by_target.setdefault(sample.target, []).append(sample)
    assert set(by_target) == {"198.18.0.18:80", "198.18.0.18:81", "198.18.0.34:80"}
    for samples in by_target.values():
        assert [s.round for s in samples] == list(range(1, len(samples) + 1))
        assert {s.reason for s in samples} == {Reason.SEND_FAILED}
        assert all(s.error == "fake: no network" for s in samples)
        gaps = [b.at - a.at for a, b in itertools.pairwise(samples)]
        assert all(abs(gap - 0.1) < 0.03 for gap in gaps), gaps


def test_set_targets_keeps_stats_stops_removed_and_starts_new() -> None:
    async def go() -> tuple[list[MonitorSample], Monitor]:
        mon, _ = monitor([A, B])
        seen: list[MonitorSample] = []
        switched = False
        async for sample in mon:
            seen.append(sample)
            if not switched and sum(s.target == "198.18.0.18:80" for s in seen) == 3:
                mon.set_targets([A, C])
                switched = True
                cut = len(seen)
            if switched and sum(s.target == "198.18.0.34:80" for s in seen[cut:]) == 3:
                break
        await mon.aclose()
        return seen[cut:], mon

    after, mon = run(go())
    assert mon.targets == (A, C)
    assert "198.18.0.18:81" not in {s.target for s in after}
    kept = [s for s in after if s.target == "198.18.0.18:80"]
    assert kept and kept[0].round == 4  # its count (and statistics) go on
    assert kept[0].stats.rounds == 4
    new = [s for s in after if s.target == "198.18.0.34:80"]
    assert [s.round for s in new] == [1, 2, 3]


def test_a_stalled_process_skips_rounds_instead_of_bursting() -> None:
    async def go() -> tuple[list[MonitorSample], Monitor, FakeProber]:
        mon, prober = monitor([A], interval=0.05)
        seen: list[MonitorSample] = []
        async for sample in mon:
            seen.append(sample)
            if len(seen) == 2:
                time.sleep(0.3)  # the whole loop stalls: about 6 rounds pass unsent
            if len(seen) == 5:
                break
        await mon.aclose()
        return seen, mon, prober

    seen, mon, prober = run(go())
    assert mon.skipped >= 4
    sends = prober.engine.sends
    # After the stall, one late probe, then the schedule resumes one interval apart.
    assert all(b - a > 0.03 for a, b in itertools.pairwise(sends[2:])), sends
    assert seen[2].late_s > 0.2


def test_aclose_lets_go_of_every_port_and_route() -> None:
    async def go() -> FakeProber:
        mon, prober = monitor([A, B, C])
        async with mon:
            async for sample in mon:
                if sample.round == 3:
                    break
        return prober

    prober = run(go())
    assert not prober.engine.live and not prober.engine.ports.held


def test_stop_ends_the_iteration() -> None:
    async def go() -> int:
        stop = asyncio.Event()
        prober = FakeProber()
        mon = Monitor(prober, [A], interval=0.05, timeout=0.02,  # type: ignore[arg-type]
                      resolve_every=60.0, stop=stop)
        count = 0
        async for _ in mon:
            count += 1
            if count == 3:
                asyncio.get_running_loop().call_later(0.01, stop.set)
        return count

    assert 3 <= run(go()) <= 5


@pytest.mark.parametrize("targets", [[], [("198.18.0.18", 0)]])
def test_set_targets_refuses_what_the_call_refuses(targets: list[tuple[str, int]]) -> None:
    mon, _ = monitor([A])
    with pytest.raises(UsageError):
        mon.set_targets(targets)


class FirstSilentEngine(FakeEngine):
    """A target's first probe draws nothing and ends a little after its deadline (as a
    busy loop's timer runs late); every later one fails at once."""

    def launch(self, probe: SynProbe, version: int, destination: str, key: RouteKey,
               on_done: Callable[[Flight], None]) -> Flight:
        if self.sends:
            return super().launch(probe, version, destination, key, on_done)
        loop = asyncio.get_running_loop()
        flight = Flight(probe, version, destination, key, on_done)
        self.live.add(flight)
        probe.start(loop.time())
        probe.segments_to_send()
        self.sends.append(time.monotonic())

        def time_out() -> None:
            probe.handle_timer(loop.time())
            flight.reported = True
            on_done(flight)

        deadline = probe.next_deadline()
        assert deadline is not None
        loop.call_at(deadline + 0.03, time_out)
        return flight


def test_a_round_that_ends_first_waits_for_the_earlier_round() -> None:
    # timeout == interval: round 2 fails (ends) before round 1's timeout has run. Its sample
    # must still come second, or round 1's silence would be the target's "current" state.
    async def go() -> list[MonitorSample]:
        prober = FakeProber()
        prober.engine = FirstSilentEngine()
        mon = Monitor(prober, [A], interval=0.1, timeout=0.1,  # type: ignore[arg-type]
                      resolve_every=60.0)
        seen = []
        async for sample in mon:
            seen.append(sample)
            if len(seen) == 3:
                break
        await mon.aclose()
        return seen

    seen = run(go())
    assert [s.reason for s in seen] == [Reason.NO_RESPONSE, Reason.SEND_FAILED,
                                        Reason.SEND_FAILED]
    assert [s.round for s in seen] == [1, 2, 3]
    assert seen[0].at < seen[1].at < seen[2].at
    assert seen[-1].stats.state_changes[-1].after is seen[-1].state


def test_an_address_without_a_route_at_the_start_is_tried_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A literal needs no DNS, so it was resolved once: without a route at the start (an
    # interface not up yet), it stayed `unresolved` for as long as the monitor ran.
    import prober.api

    real = prober.api.source_address_for
    routes = {"up": False}

    def source_address_for(address: Any) -> Any:
        if not routes["up"]:
            raise UsageError(f"no route to {address}: Network is unreachable")
        return real(address)

    monkeypatch.setattr(prober.api, "source_address_for", source_address_for)

    async def go() -> list[MonitorSample]:
        prober_ = FakeProber()
        mon = Monitor(prober_, [("127.0.0.1", 80)], interval=0.05,  # type: ignore[arg-type]
                      timeout=0.02, resolve_every=0.1)
        seen: list[MonitorSample] = []
        async for sample in mon:
            seen.append(sample)
            if len(seen) == 2:
                routes["up"] = True
            if sample.reason is not Reason.UNRESOLVED or len(seen) == 40:
                break
        await mon.aclose()
        return seen

    seen = run(go())
    assert seen[0].reason is Reason.UNRESOLVED and "no route" in (seen[0].error or "")
    assert seen[-1].reason is Reason.SEND_FAILED  # sent again (the fake engine fails it)
    assert seen[-1].address == "127.0.0.1"


def test_no_source_port_is_a_send_failed_round_not_a_dead_schedule() -> None:
    class NoPortsAtFirst(FakePorts):
        def __init__(self) -> None:
            super().__init__()
            self.refusals = 2

        def acquire(self, *, share: bool = False) -> int:
            if self.refusals:
                self.refusals -= 1
                raise PortsExhausted("no source port can be reserved")
            return super().acquire(share=share)

    async def go() -> list[MonitorSample]:
        mon, prober_ = monitor([A])
        prober_.engine.ports = NoPortsAtFirst()
        seen = []
        async for sample in mon:
            seen.append(sample)
            if len(seen) == 4:
                break
        await mon.aclose()
        return seen

    seen = run(go())
    assert [s.reason for s in seen] == [Reason.SEND_FAILED] * 4
    assert [s.error for s in seen[:2]] == ["no source port can be reserved"] * 2
    assert seen[2].error == "fake: no network"  # the schedule went on


def test_a_bug_in_the_schedule_reaches_the_reader() -> None:
    async def go() -> None:
        mon, prober = monitor([A])

        def broken(*args: object, **kwargs: object) -> None:
            raise ZeroDivisionError("a bug")

        prober.engine.launch = broken  # type: ignore[method-assign,assignment]
        async for _ in mon:
            pass

    with pytest.raises(ZeroDivisionError):
        run(go())


def test_a_target_without_an_address_is_resolved_again_soon() -> None:
    async def go() -> list[MonitorSample]:
        mon, _ = monitor([("no-such-name.invalid", 80)], interval=0.05)
        calls = 0

        async def fake_resolve(target: Any) -> None:
            nonlocal calls
            calls += 1
            target.address = None if calls < 3 else __import__("ipaddress").ip_address(
                "198.18.0.18")
            target.source = target.address
            target.address_text = None if target.address is None else str(target.address)
            target.resolve_error = "does not resolve" if target.address is None else None

        mon._resolve = fake_resolve  # type: ignore[method-assign]
        seen: list[MonitorSample] = []
        async for sample in mon:
            seen.append(sample)
            if sample.reason is not Reason.UNRESOLVED:
                break
        await mon.aclose()
        return seen

    import prober.monitor.loop as loop_module

    saved = loop_module.RETRY_UNRESOLVED_S
    loop_module.RETRY_UNRESOLVED_S = 0.1
    try:
        seen = run(go())
    finally:
        loop_module.RETRY_UNRESOLVED_S = saved
    # Retried every 0.1 s (not resolve_every, 60 s): the name resolves within a second.
    assert seen[0].reason is Reason.UNRESOLVED
    assert seen[-1].reason is Reason.SEND_FAILED  # resolved: the fake engine's send fails
    assert seen[-1].at - seen[0].at < 1.0
