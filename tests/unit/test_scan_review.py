"""Review of the stateless scan path, without root: each test is a bug found in review (the
reply check's ring lookup, the sender's ring writes, its signals and its lifetime)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP

from prober.api import Prober
from prober.core.parse import parse_packet
from prober.core.scan_cookie import MASK32, ScanKey
from prober.core.strays import Stray
from prober.core.syn import Reason
from prober.engine.scan.replies import ReplyChecker
from prober.engine.scan.sender import Sender, SenderConfig
from prober.engine.scan.shared import RING_MASK, RING_SIZE, ScanShared
from prober.errors import UsageError
from prober.scan_plan import ScanPlan

PORTS = tuple(range(40000, 40256))
OURS = socket.inet_aton("198.18.0.1")
FIRST = socket.inet_aton("198.19.0.7")
SECOND = socket.inet_aton("198.19.0.8")
KEY = ScanKey(b"k" * 16, PORTS)


@pytest.fixture
def shared() -> Iterator[ScanShared]:
    segment = ScanShared.create(1000)
    yield segment
    segment.close()


class _Socket:
    """Stands in for the raw send socket: takes every packet."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, packet: bytes, _address: Any) -> int:
        self.sent.append(packet)
        return len(packet)

    def recvmsg(self, *_args: Any) -> Any:
        raise BlockingIOError

    def close(self) -> None:
        pass


@pytest.fixture
def sender(shared: ScanShared) -> Iterator[Sender]:
    events_read, events_write = os.pipe()
    config = SenderConfig(
        plan=ScanPlan(targets=("198.19.0.7:80",)).to_json(), secret=(b"k" * 16).hex(),
        ports=PORTS, rate=1000.0, retries=0, wait=1.0, shared_fd=os.dup(shared.fd),
        bitmap_bits=shared.bitmap_bits, events_fd=events_write, pcap=None,
    )
    made = Sender(config)
    made._sockets[4] = _Socket()  # type: ignore[assignment]
    yield made
    made.shared.close()
    os.close(events_read)
    os.close(events_write)


def _send(sender: Sender, k: int, position: int, address: bytes) -> int:
    """Send index k to ``address``:80 from position ``position``; returns its ISN."""
    sender.sent = k
    assert sender.send(position, 4, OURS, address, 80, 0, None)
    return KEY.isn(KEY.cookie(OURS, address, 80), k)


def _answer(address: bytes, ack: int, flags: str = "SA") -> bytes:
    sport = KEY.source_port(KEY.cookie(OURS, address, 80), 0)
    return bytes(IP(src=socket.inet_ntoa(address), dst="198.18.0.1")
                 / TCP(sport=80, dport=sport, flags=flags, ack=ack & MASK32))


def test_an_ack_naming_another_targets_send_is_not_that_targets_answer(
    shared: ScanShared, sender: Sender
) -> None:
    # Sends 5 and 6 go to two targets. A SYN/ACK from the first that acks one past its ISN
    # names send 6 by its index, but send 6 went to the second target: it proves nothing.
    isn = _send(sender, 5, position=3, address=FIRST)
    _send(sender, 6, position=4, address=SECOND)
    checker = ReplyChecker(KEY, shared)
    assert checker.check(parse_packet(_answer(FIRST, isn + 2)), 1, 1) is None
    assert checker.invalid == {Stray.WRONG_ACK: 1}
    assert not shared.is_concluded(4) and not shared.is_concluded(3)


def test_a_rst_that_acks_the_isn_itself_is_closed(shared: ScanShared, sender: Sender) -> None:
    # docs/scan.md (as prober syn): a RST with ACK and ack in {ISN, ISN + 1} means closed.
    _send(sender, 4, position=2, address=SECOND)
    isn = _send(sender, 5, position=3, address=FIRST)
    checker = ReplyChecker(KEY, shared)
    answer = checker.check(parse_packet(_answer(FIRST, isn, "RA")), 1, 1)
    assert answer is not None and answer.reason is Reason.RST
    assert (answer.position, answer.target) == (3, FIRST)
    assert not shared.is_concluded(2)


class _Spy:
    """A ring array whose writes call ``after`` (a reader running between two writes)."""

    def __init__(self, array: memoryview, after: Callable[[], None]) -> None:
        self._array = array
        self._after = after

    def __getitem__(self, index: int) -> int:
        return int(self._array[index])

    def __setitem__(self, index: int, value: int) -> None:
        self._array[index] = value
        self._after()


def test_a_reader_between_the_senders_ring_writes_never_mixes_two_sends(
    shared: ScanShared, sender: Sender
) -> None:
    # The slot of send 5 is reused by send 5 + RING_SIZE. An answer to send 5 read while
    # the new entry is half written must not get the new send's position.
    isn = _send(sender, 5, position=3, address=FIRST)
    checker = ReplyChecker(KEY, shared)
    seen: list[int | None] = []

    def reader() -> None:
        answer = checker.check(parse_packet(_answer(FIRST, isn + 1)), 1, 1)
        seen.append(None if answer is None else answer.position)

    real = sender.shared.ring_position
    sender.shared.ring_position = _Spy(real, reader)  # type: ignore[assignment]
    try:
        _send(sender, 5 + RING_SIZE, position=9, address=SECOND)
    finally:
        sender.shared.ring_position = real
    assert (5 + RING_SIZE) & RING_MASK == 5
    assert 9 not in seen


def test_retries_beyond_what_the_ring_can_number_are_refused() -> None:
    # The ring keeps a send's attempt in 6 bits: attempt 64 would read as attempt 0.
    Prober().scan(["198.19.0.7:80"], retries=63)
    with pytest.raises(UsageError, match="retries"):
        Prober().scan(["198.19.0.7:80"], retries=64)
