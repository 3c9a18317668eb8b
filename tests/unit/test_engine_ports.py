"""The engine's source-port block (prober/engine/ports.py): reserved once, O(1) to take and
give back, shared only when full, and the capture filter's ranges. Binds local TCP sockets
only (never listening), so it runs without root."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from prober.engine.ports import PortPool, merge_ranges
from prober.engine.sockets import MAX_FILTER_RANGES, capture_filter
from prober.errors import PortsExhausted, SourcePortInUse


@pytest.fixture
def pool() -> Iterator[PortPool]:
    ports = PortPool(max_ports=8, rng=random.Random(1))
    try:
        yield ports
    finally:
        ports.close()


def test_ports_are_distinct_and_no_local_socket_can_take_them(pool: PortPool) -> None:
    taken = [pool.acquire() for _ in range(8)]
    assert len(set(taken)) == 8
    for port in taken:
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("0.0.0.0", port))
        with socket.socket(socket.AF_INET6) as other, pytest.raises(OSError):
            other.bind(("::", port))


def test_a_full_block_is_shared_when_allowed_and_refused_otherwise(pool: PortPool) -> None:
    taken = [pool.acquire() for _ in range(8)]
    with pytest.raises(PortsExhausted, match="no free source port"):
        pool.acquire()
    shared = pool.acquire(share=True)
    assert shared in taken and pool.in_use(shared) == 2
    pool.release(shared)
    assert pool.in_use(shared) == 1


def test_released_ports_are_handed_out_again_and_stay_bound(pool: PortPool) -> None:
    first = pool.acquire()
    pool.release(first)
    generation = pool.generation
    again = [pool.acquire() for _ in range(8)]
    assert first in again
    assert pool.generation == generation  # the filter need not change
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("0.0.0.0", first))


def test_ports_in_use_on_the_host_are_skipped() -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        taken = busy.getsockname()[1]
        ports = PortPool(max_ports=4, port_range=(taken - 1, taken + 3))
        try:
            got = {ports.acquire() for _ in range(4)}
        finally:
            ports.close()
    assert taken not in got


def test_a_chosen_port_is_reserved_once(pool: PortPool) -> None:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        free = probe.getsockname()[1]
    assert pool.reserve(free) == free
    with pytest.raises(SourcePortInUse, match="another probe"):
        pool.reserve(free)
    pool.release(free)
    with socket.socket() as other:
        other.bind(("0.0.0.0", free))  # given back to the system
        with pytest.raises(SourcePortInUse, match="in use on this host"):
            pool.reserve(free)


def test_filter_ranges_cover_exactly_the_block(pool: PortPool) -> None:
    taken = {pool.acquire() for _ in range(8)}
    covered = {p for low, high in pool.ranges() for p in range(low, high + 1)}
    assert taken <= covered
    assert len(covered) <= 8 + 1  # contiguous unless a port was in use (or wrapped)


def test_many_ranges_are_merged_across_the_smallest_gaps() -> None:
    ports = list(range(1000, 1000 + 3 * 200, 3))  # 200 single ports, gaps of 2
    ranges = merge_ranges(ports, limit=10)
    assert len(ranges) == 10
    assert all(any(low <= p <= high for low, high in ranges) for p in ports)
    assert merge_ranges([5, 6, 7, 9]) == [(5, 7), (9, 9)]
    assert merge_ranges([]) == []


def test_the_bpf_program_fits_for_every_range_count() -> None:
    for count in (0, 1, 2, MAX_FILTER_RANGES):
        ranges = [(1000 + 10 * i, 1000 + 10 * i + 5) for i in range(count)]
        program = capture_filter(ranges)
        assert all(0 <= jt <= 255 and 0 <= jf <= 255 for _, jt, jf, _ in program)
    with pytest.raises(ValueError):
        capture_filter([(p, p) for p in range(1, 2 * MAX_FILTER_RANGES + 2, 2)])


def test_a_conversations_port_rests_before_it_is_handed_out_again() -> None:
    now = [0.0]
    ports = PortPool(max_ports=2, clock=lambda: now[0])
    try:
        first, second = ports.acquire(), ports.acquire()
        ports.release(first, rest_s=120.0)  # maybe in the peer's TIME-WAIT
        with pytest.raises(PortsExhausted):
            ports.acquire()
        assert ports.acquire(share=True) == second  # a resting port is not shared either
        now[0] = 120.0
        assert ports.acquire() == first
    finally:
        ports.close()


def test_no_descriptors_left_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from prober.engine import ports as ports_module

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    monkeypatch.setattr(ports_module.resource, "getrlimit", lambda _which: (64, hard))
    pool = PortPool(max_ports=8)
    try:
        with pytest.raises(PortsExhausted) as raised:
            pool.acquire()
    finally:
        pool.close()
    message = str(raised.value)
    assert "open files limit 64" in message and "ulimit -n" in message and "\n" not in message
