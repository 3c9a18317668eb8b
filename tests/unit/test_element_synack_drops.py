"""The delay/loss element's SYN/ACK retransmission drop rule, on frames Scapy builds."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from prober.lab.element import Direction, ElementSettings, synack_key


def frame(seq: int, flags: str = "SA", sport: int = 80, v6: bool = False) -> bytes:
    ip = IPv6(src="2001:2::2", dst="2001:2::1") if v6 else IP(src="198.18.0.2", dst="198.18.0.1")
    return bytes(Ether() / ip / TCP(sport=sport, dport=40000, flags=flags, seq=seq, ack=7))


@pytest.fixture
def direction() -> Iterator[Direction]:
    left, right = socket.socketpair()
    with left, right:
        yield Direction("right_to_left", left, right,
                        ElementSettings(drop_synack_retransmissions=2))


def test_only_syn_acks_have_a_key() -> None:
    assert synack_key(frame(1)) is not None and synack_key(frame(1, v6=True)) is not None
    assert synack_key(frame(1, "S")) is None and synack_key(frame(1, "A")) is None
    assert synack_key(frame(1, "R")) is None and synack_key(b"\x00" * 20) is None
    assert synack_key(frame(1)) != synack_key(frame(2)) != synack_key(frame(1, sport=81))


@pytest.mark.parametrize("v6", [False, True])
def test_the_first_copy_passes_the_next_n_are_dropped_then_copies_pass(
    direction: Direction, v6: bool
) -> None:
    copies = [direction.is_dropped_synack_copy(frame(5, v6=v6)) for _ in range(5)]
    assert copies == [False, True, True, False, False]
    # Another connection (other seq, other port) has its own count; other segments pass.
    assert not direction.is_dropped_synack_copy(frame(6, v6=v6))
    assert direction.is_dropped_synack_copy(frame(6, v6=v6))
    assert not direction.is_dropped_synack_copy(frame(5, "A", v6=v6))
    assert direction.counters()["dropped_synack_retransmissions"] == 3


def test_the_setting_is_bounded_and_reproduced_on_the_command_line() -> None:
    settings = ElementSettings(drop_synack_retransmissions=2)
    assert settings.arguments()[-2:] == ["--drop-synack-retransmissions", "2"]
    assert "--drop-synack-retransmissions" not in ElementSettings().arguments()
    with pytest.raises(ValueError, match="drop_synack_retransmissions"):
        ElementSettings(drop_synack_retransmissions=-1)
