"""The engine on both event loops, over loopback: every send gets its kernel TX timestamp and
every reply is read (uvloop stops reading a socket whose error queue holds TX timestamps, so
the engine must never register its send sockets; this test would hang or lose replies if it did).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import pytest
import uvloop

from prober import PortState, Prober, Reason
from prober.core.timing import Clock
from prober.engine.engine import Engine

pytestmark = pytest.mark.integration

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
PROBES = 300


@contextlib.contextmanager
def listener(family: socket.AddressFamily, host: str) -> Iterator[int]:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(4096)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_every_send_is_stamped_and_every_reply_read(
    loop_name: str, family: socket.AddressFamily, host: str
) -> None:
    async def run() -> None:
        with listener(family, host) as port:
            async with Prober() as prober:
                engine = prober.engine
                stamps_before = engine.stats.tx_stamps
                result = await prober.syn(host, port, count=PROBES, interval=0.0005, timeout=2.0)
                assert engine.stats.tx_stamps - stamps_before == PROBES
                assert engine.stats.tx_stamps_unmatched == 0
        assert result.sent == PROBES
        assert result.answered == PROBES, result.to_dict()
        assert result.state is PortState.OPEN
        assert all(p.reason is Reason.SYN_ACK for p in result.probes)
        assert all(p.rtt is not None and p.rtt.clock is Clock.KERNEL for p in result.probes)
        assert result.invalid == 0 and result.kernel_drops == 0

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(run())


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_two_probers_in_one_process_share_one_engine(loop_name: str) -> None:
    async def run() -> None:
        with listener(socket.AF_INET, "127.0.0.1") as port:
            async with Prober() as first, Prober() as second:
                assert first.engine is second.engine
                one, two = await asyncio.gather(
                    first.syn("127.0.0.1", port, count=20, interval=0.001),
                    second.syn("127.0.0.1", port, count=20, interval=0.001),
                )
            assert one.answered == two.answered == 20
            assert one.invalid == two.invalid == 0
        assert not Engine._per_loop  # the last user closed it

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(run())


def test_closed_loopback_port_answers_rst() -> None:
    async def run() -> None:
        with listener(socket.AF_INET, "127.0.0.1") as port:
            pass  # bound then closed: nothing listens there now
        async with Prober() as prober:
            result = await prober.syn("127.0.0.1", port, count=3, interval=0.01)
        assert result.state is PortState.CLOSED and result.answered == 3

    uvloop.run(run())
