"""The engine on both event loops, over loopback: every send gets its kernel TX timestamp and
every reply is read (uvloop stops reading a socket whose error queue holds TX timestamps, so
the engine must never register its send sockets; this test would hang or lose replies if it did).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import uvloop

from prober import PortState, Prober, Reason
from prober.core.parse import parse_packet
from prober.core.syn import SynProbeResult
from prober.core.timing import Clock
from prober.core.wire import Packet
from prober.engine import engine as engine_module
from prober.engine.engine import Engine

pytestmark = [pytest.mark.integration, pytest.mark.kernel_clock]

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


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_the_capture_filter_passes_probers_ports_only(
    loop_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's own TCP traffic (here a loopback connection on ephemeral ports, as any
    busy host has) never reaches prober's reader while probes are in flight. Frames that
    other programs on this shared host send to prober's ports are not this test's concern:
    it looks for the connection's own ports among the frames the reader parsed."""
    parsed_ports: set[int] = set()

    def recording_parse(data: bytes) -> Packet:
        packet = parse_packet(data)
        if packet.tcp is not None:
            parsed_ports.update((packet.tcp.sport, packet.tcp.dport))
        return packet

    monkeypatch.setattr(engine_module, "parse_packet", recording_parse)

    async def chatter(port: int, stop: asyncio.Event, ports: list[int]) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ports.append(writer.get_extra_info("sockname")[1])
        exchanged = 0
        while not stop.is_set() and exchanged < 2000:
            writer.write(b"x" * 100)
            await writer.drain()
            await reader.readexactly(100)
            exchanged += 1
        writer.close()
        return exchanged

    async def run() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while True:
                    writer.write(await reader.readexactly(100))
                    await writer.drain()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        echo_port = server.sockets[0].getsockname()[1]
        chatter_ports = [echo_port]
        with listener(socket.AF_INET, "127.0.0.1") as port:
            async with Prober() as prober:
                stop = asyncio.Event()
                talk = asyncio.ensure_future(chatter(echo_port, stop, chatter_ports))
                result = await prober.syn("127.0.0.1", port, count=200, interval=0.002)
                stop.set()
                exchanged = await talk
        server.close()
        await server.wait_closed()
        assert exchanged > 0 and len(chatter_ports) == 2
        assert result.answered == 200
        assert {p.source_port for p in result.probes} <= parsed_ports  # the reader did read
        assert not parsed_ports & set(chatter_ports)

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(run())


MANY_IN_FLIGHT = """
import asyncio, json, resource, socket
import uvloop
from prober import Prober

# A low hard limit the engine cannot raise past: 300 descriptors for 3,000 probes at once.
resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))

async def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    async with Prober() as prober:
        run = await prober.syn("127.0.0.1", listener.getsockname()[1], count=3000,
                               interval=0, timeout=2.0)
        print(json.dumps({"answered": run.answered, "ports": prober.engine.ports.size,
                          "errors": sorted({p.error for p in run.probes if p.error})}))

uvloop.run(main())
"""


def test_more_probes_in_flight_than_file_descriptors() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", MANY_IN_FLIGHT], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report == {"answered": 3000, "ports": report["ports"], "errors": []}
    assert 0 < report["ports"] <= 300


class CallbackFailed(Exception):
    pass


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_raising_callback_surfaces_from_syn_and_the_engine_stays_whole(
    loop_name: str,
) -> None:
    seen: list[int] = []
    loop_errors: list[dict[str, object]] = []

    def on_probe(result: SynProbeResult) -> None:
        seen.append(result.probe)
        if len(seen) == 3:
            raise CallbackFailed("the user's callback failed")

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        with listener(socket.AF_INET, "127.0.0.1") as port:
            async with Prober() as prober:
                engine = prober.engine
                with pytest.raises(CallbackFailed, match="callback failed"):
                    await prober.syn("127.0.0.1", port, count=500, interval=0, on_probe=on_probe)
                assert not engine._routes  # every flight retired
                assert engine.ports.size > 0
                assert all(engine.ports.in_use(p) == 0 for p in range(1, 65536))
                # The engine still reads: the next run on it is whole.
                again = await prober.syn("127.0.0.1", port, count=20, interval=0.001)
                assert again.answered == 20 and again.invalid == 0

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(run())
    assert len(seen) == 3  # never called again after it raised
    assert loop_errors == []  # nothing escaped into the loop's reader or timer
